"""Irregular glucose, carbohydrate and insulin rows -> the regular grid the glucose twin needs.

One grid for every patient (step `step_min`, from `start_ms`), with the conventions of
`identify_glucose_params` and `glucose_filter_step`: step k runs from t_k = start + k step to
t_{k+1}; a CGM reading at time t in (t_k, t_{k+1}] is read at the *end* of step k (the
latest one if several, the last given if they share a time); carbohydrate and insulin
reported at t in (t_{k-1}, t_k] are given at the *start* of step k (summed), as a device
reports what happened during the step at its end.
Inputs reported during the last step are due at the start of the step after the grid: they
are kept apart in `pending_carbs_g` / `pending_insulin_u` (for a forecast or what-if that
continues from the grid's end).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from medtwin.domain import Channel
from medtwin.estimation._personalize import (
    Personalization,
    identify_glucose_params,
    insulin_above_basal,
)
from medtwin.physiology import GlucoseParams, default_glucose_params

FloatArray = npt.NDArray[np.float64]
_MINUTE_MS = 60_000


class GlucoseHistory(NamedTuple):
    """Histories of n patients on one regular grid of T steps.

    `patient_ids` (n,) sorted; `start_ms` the grid's start (epoch ms); `step_min` its step
    (min); `cgm` (n, T) mg/dL read at the end of each step, NaN where none; `carbs_g` (n, T)
    eaten and `insulin_u` (n, T) delivered (U, as reported: basal and boluses) at the start of
    each step; `pending_carbs_g`, `pending_insulin_u` (n,) reported in the last step, due at
    the start of the next one.
    """

    patient_ids: tuple[str, ...]
    start_ms: int
    step_min: float
    cgm: FloatArray
    carbs_g: FloatArray
    insulin_u: FloatArray
    pending_carbs_g: FloatArray
    pending_insulin_u: FloatArray

    @property
    def n_steps(self) -> int:
        """T, the number of grid steps."""
        return int(self.cgm.shape[1])

    def select(self, patients: slice) -> GlucoseHistory:
        """The histories of some patients (a slice of `patient_ids`) on the same grid."""
        return GlucoseHistory(self.patient_ids[patients], self.start_ms, self.step_min,
                              self.cgm[patients], self.carbs_g[patients],
                              self.insulin_u[patients], self.pending_carbs_g[patients],
                              self.pending_insulin_u[patients])

    @property
    def end_ms(self) -> int:
        """The end of the grid's last step (epoch ms): the time a filter run over it reaches."""
        return self.start_ms + self.n_steps * round(self.step_min * _MINUTE_MS)


def grid_glucose_history(
    patient_ids: Sequence[str] | npt.NDArray[np.str_],
    time_ms: npt.ArrayLike,
    channel: npt.ArrayLike,
    values: npt.ArrayLike,
    step_min: float = 5.0,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> GlucoseHistory:
    """Grid rows (each (n_rows,): patient id, epoch ms, `Channel` value, value in the channel's
    unit) of glucose (CGM), carbohydrates and insulin; other channels are ignored.

    The grid starts at `start_ms` (default: the last multiple of the step since the epoch
    before the first row) and has the fewest steps reaching `end_ms` (default: the last row),
    at least one. CGM readings in (start, end] and inputs in [start, end] are kept, others
    dropped. Pure: rows may come in any order.
    """
    pids = np.asarray(patient_ids, dtype=np.str_)
    t = np.asarray(time_ms, dtype=np.int64)
    ch = np.asarray(channel, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    if not pids.shape == t.shape == ch.shape == v.shape or t.ndim != 1:
        raise ValueError("estimation: patient_ids, time_ms, channel and values must all have "
                         "shape (n_rows,)")
    if not math.isfinite(step_min) or step_min <= 0:
        raise ValueError("estimation: step_min must be a positive number of minutes")
    step_ms = round(step_min * _MINUTE_MS)
    if step_ms < 1:
        raise ValueError("estimation: step_min must be at least a millisecond")
    used = np.isin(ch, [Channel.GLUCOSE, Channel.CARBS, Channel.INSULIN]) & np.isfinite(v)
    pids, t, ch, v = pids[used], t[used], ch[used], v[used]
    if t.size == 0 and (start_ms is None or end_ms is None):
        raise ValueError("estimation: no glucose, carbohydrate or insulin rows, and no "
                         "start_ms and end_ms to grid")
    start = int(start_ms) if start_ms is not None else int((int(t.min()) - 1) // step_ms
                                                           * step_ms)
    end = int(end_ms) if end_ms is not None else int(t.max())
    if end < start:
        raise ValueError("estimation: end_ms is before start_ms")
    n_steps = max(1, -(-(end - start) // step_ms))

    ids, patient = np.unique(pids, return_inverse=True)
    n = ids.size
    cgm = np.full((n, n_steps), np.nan)
    inputs = {c: np.zeros((n, n_steps + 1)) for c in (Channel.CARBS, Channel.INSULIN)}
    after = t - start
    slot = -(-after // step_ms)  # ceil: the step whose end is at or after the row
    inside = (t >= start) & (t <= end)

    is_cgm = inside & (ch == Channel.GLUCOSE) & (slot >= 1)
    if is_cgm.any():
        rows = np.flatnonzero(is_cgm)
        # Latest reading of each (patient, step): sort by key then time; keep each group's last.
        order = rows[np.lexsort((rows, t[rows], slot[rows] - 1, patient[rows]))]
        key = patient[order] * n_steps + (slot[order] - 1)
        last = np.r_[key[1:] != key[:-1], True]
        cgm.reshape(-1)[key[last]] = v[order][last]
    for c, grid in inputs.items():
        rows = inside & (ch == c)
        np.add.at(grid, (patient[rows], slot[rows]), v[rows])
    carbs, insulin = inputs[Channel.CARBS], inputs[Channel.INSULIN]
    return GlucoseHistory(
        tuple(str(p) for p in ids), start, step_ms / _MINUTE_MS, cgm,
        carbs[:, :n_steps].copy(), insulin[:, :n_steps].copy(),
        carbs[:, n_steps].copy(), insulin[:, n_steps].copy(),
    )


def identify_history(history: GlucoseHistory, prior: GlucoseParams | None = None
                     ) -> Personalization:
    """Identify each patient's glucose-model parameters from a gridded history (see
    `identify_glucose_params`): the delivered insulin is re-expressed on top of the prior's
    basal, and the delivery before the first step (unknown) is taken as the next step's."""
    n = len(history.patient_ids)
    p = default_glucose_params(n) if prior is None else prior
    extra = insulin_above_basal(history.insulin_u, p, history.step_min)
    if history.n_steps > 1:
        extra[:, 0] = np.where(history.insulin_u[:, 0] == 0.0, extra[:, 1], extra[:, 0])
    return identify_glucose_params(history.step_min, history.cgm, history.carbs_g, extra, p)
