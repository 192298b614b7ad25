"""NEWS2 band edges of the RCP 2017 chart, missing parameters and risk bands."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medtwin.clinical import (
    NEWS2_PARAMETERS,
    RISK_NAMES,
    news2_risk,
    news2_score,
)

NORMAL = {"respiration_rate": 16.0, "spo2": 97.0, "systolic_bp": 120.0, "pulse": 72.0,
          "temperature": 37.0}

BANDS = {
    "respiration_rate": [(8, 3), (9, 1), (11, 1), (12, 0), (20, 0), (21, 2), (24, 2), (25, 3),
                         (4, 3), (40, 3)],
    "spo2": [(91, 3), (92, 2), (93, 2), (94, 1), (95, 1), (96, 0), (100, 0), (85, 3)],
    "systolic_bp": [(90, 3), (91, 2), (100, 2), (101, 1), (110, 1), (111, 0), (219, 0),
                    (220, 3), (60, 3)],
    "pulse": [(40, 3), (41, 1), (50, 1), (51, 0), (90, 0), (91, 1), (110, 1), (111, 2),
              (130, 2), (131, 3), (180, 3)],
    "temperature": [(35.0, 3), (35.1, 1), (36.0, 1), (36.1, 0), (38.0, 0), (38.1, 1),
                    (39.0, 1), (39.1, 2), (41.0, 2), (33.0, 3)],
}
CASES = [(p, v, pts) for p, rows in BANDS.items() for v, pts in rows]


def score_of(**values: float) -> tuple[int, list[int], bool, int]:
    """(total, parts, complete, risk) of one patient; unspecified parameters are normal."""
    v = {**NORMAL, **values}
    score = news2_score(*(np.array([v[name]]) for name in NEWS2_PARAMETERS))
    return (int(score.total[0]), score.parts[0].tolist(), bool(score.complete[0]),
            int(news2_risk(score)[0]))


@pytest.mark.parametrize(("parameter", "value", "points"), CASES,
                         ids=[f"{p}={v}" for p, v, _ in CASES])
def test_band_edges(parameter: str, value: float, points: int) -> None:
    total, parts, complete, _ = score_of(**{parameter: value})
    assert parts[NEWS2_PARAMETERS.index(parameter)] == points
    assert total == points and complete


def test_bands_vectorized_in_one_call() -> None:
    """All edge cases of one parameter at once give the same points as one by one."""
    for parameter, rows in BANDS.items():
        n = len(rows)
        columns = {name: np.full(n, NORMAL[name]) for name in NEWS2_PARAMETERS}
        columns[parameter] = np.array([v for v, _ in rows], dtype=float)
        score = news2_score(*(columns[name] for name in NEWS2_PARAMETERS))
        assert score.parts.shape == (n, 5)
        assert score.parts[:, NEWS2_PARAMETERS.index(parameter)].tolist() == [p for _, p in rows]


def test_values_are_rounded_to_chart_precision() -> None:
    assert score_of(pulse=90.4)[0] == 0
    assert score_of(pulse=90.6)[0] == 1
    assert score_of(temperature=38.04)[0] == 0
    assert score_of(temperature=38.06)[0] == 1
    assert score_of(temperature=35.0999999)[0] == 1  # float noise does not cross an edge


@pytest.mark.parametrize("parameter", NEWS2_PARAMETERS)
def test_missing_parameter_scores_zero_and_is_incomplete(parameter: str) -> None:
    total, parts, complete, _ = score_of(**{parameter: math.nan})
    assert parts == [0] * 5 and total == 0 and not complete


def test_nothing_observed() -> None:
    nan = np.array([math.nan])
    score = news2_score(nan, nan, nan, nan, nan)
    assert int(score.total[0]) == 0 and not score.complete[0]
    assert int(news2_risk(score)[0]) == 0


@pytest.mark.parametrize(("values", "total", "risk"), [
    ({}, 0, "low"),
    ({"pulse": 95, "respiration_rate": 10}, 2, "low"),
    ({"pulse": 95, "respiration_rate": 10, "temperature": 38.5, "spo2": 95}, 4, "low"),
    ({"spo2": 91}, 3, "low-medium"),                              # a single 3
    ({"spo2": 91, "pulse": 95}, 4, "low-medium"),
    ({"pulse": 120, "respiration_rate": 22, "temperature": 38.5}, 5, "medium"),
    ({"spo2": 91, "respiration_rate": 22}, 5, "medium"),           # medium outranks a 3
    ({"pulse": 120, "respiration_rate": 22, "temperature": 39.5}, 6, "medium"),
    ({"pulse": 120, "respiration_rate": 22, "temperature": 39.5, "systolic_bp": 105}, 7,
     "high"),
    ({"pulse": 140, "respiration_rate": 28, "spo2": 90, "systolic_bp": 88,
      "temperature": 39.5}, 14, "high"),
])
def test_risk_bands(values: dict[str, float], total: int, risk: str) -> None:
    got_total, _, _, got_risk = score_of(**values)
    assert (got_total, RISK_NAMES[got_risk]) == (total, risk)
