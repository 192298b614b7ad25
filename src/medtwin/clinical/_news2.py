"""NEWS2 (Royal College of Physicians, National Early Warning Score 2, 2017), vectorized.

Scores respiration rate, SpO2 (scale 1), systolic BP, pulse and temperature from sensors.
Consciousness and supplemental oxygen are not sensed: they score 0 (alert, on air), which is
stated in every explanation. Values are rounded to the precision NEWS2 charts use (integers;
temperature to 0.1 °C) before scoring, so the band edges are exactly the chart's.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Lower band edges (value >= edge moves to the next band) and the points of each band.
_RR_EDGES, _RR_POINTS = np.array([9, 12, 21, 25]), np.array([3, 1, 0, 2, 3])
_SPO2_EDGES, _SPO2_POINTS = np.array([92, 94, 96]), np.array([3, 2, 1, 0])
_SBP_EDGES, _SBP_POINTS = np.array([91, 101, 111, 220]), np.array([3, 2, 1, 0, 3])
_HR_EDGES, _HR_POINTS = np.array([41, 51, 91, 111, 131]), np.array([3, 1, 0, 1, 2, 3])
_TEMP_EDGES, _TEMP_POINTS = np.array([35.1, 36.1, 38.1, 39.1]), np.array([3, 1, 0, 1, 2])

#: Parameter names in the order of `News2.parts` columns.
NEWS2_PARAMETERS = ("respiration_rate", "spo2", "systolic_bp", "pulse", "temperature")


class News2(NamedTuple):
    """NEWS2 per patient: `total` (n,), `parts` (n, 5) per parameter, `complete` (n,) bool.

    A missing parameter (NaN) scores 0 and makes `complete` False.
    """

    total: IntArray
    parts: IntArray
    complete: npt.NDArray[np.bool_]


def _points(values: FloatArray, edges: npt.NDArray[np.floating], points: IntArray,
            decimals: int) -> IntArray:
    scale = 10.0**decimals
    rounded = np.round(np.nan_to_num(values) * scale)
    scored = points[np.searchsorted(np.round(edges * scale), rounded, side="right")]
    return np.where(np.isnan(values), 0, scored).astype(np.int64)


def news2_score(resp_rate: FloatArray, spo2: FloatArray, systolic_bp: FloatArray,
                heart_rate: FloatArray, temperature: FloatArray) -> News2:
    """NEWS2 for arrays of shape (n_patients,); NaN marks a parameter not yet observed."""
    parts = np.stack([
        _points(resp_rate, _RR_EDGES, _RR_POINTS, 0),
        _points(spo2, _SPO2_EDGES, _SPO2_POINTS, 0),
        _points(systolic_bp, _SBP_EDGES, _SBP_POINTS, 0),
        _points(heart_rate, _HR_EDGES, _HR_POINTS, 0),
        _points(temperature, _TEMP_EDGES, _TEMP_POINTS, 1),
    ], axis=1)
    observed = ~np.isnan(np.stack([resp_rate, spo2, systolic_bp, heart_rate, temperature], 1))
    return News2(parts.sum(axis=1), parts, np.asarray(observed.all(axis=1)))


def news2_risk(score: News2) -> npt.NDArray[np.int8]:
    """Clinical risk per patient: 0 low, 1 low-medium (a single 3), 2 medium (5–6), 3 high (≥7)."""
    risk = np.zeros(score.total.shape, dtype=np.int8)
    risk[(score.parts == 3).any(axis=1)] = 1
    risk[score.total >= 5] = 2
    risk[score.total >= 7] = 3
    return risk
