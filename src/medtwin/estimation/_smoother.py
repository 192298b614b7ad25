"""The first-version twin: per patient and channel, the latest value, its time, and a smoothed
estimate (exponential smoothing with irregular time steps), all batched over patients.

State is a `TwinArrays` of arrays shaped (n_patients, n_channels); `smoother_step` is a pure
function from the state rows of the patients in a batch to their new rows, so a filter with the
same signature (the physiological UKF) can replace it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from medtwin.domain import N_CHANNELS, Channel

FloatArray = npt.NDArray[np.float64]
NO_TIME = np.iinfo(np.int64).min


class SmootherParams(NamedTuple):
    """Smoothing time constant per channel, seconds (shape (n_channels,)); 0 means no smoothing.

    Vitals: 2–5 min, enough to damp motion artefacts but not hide a change within a NEWS2
    observation interval; glucose: 6 min, about two CGM samples. Inputs are events: not smoothed.
    """

    tau_s: FloatArray


def default_smoother_params() -> SmootherParams:
    """Time constants for every channel."""
    tau = np.zeros(N_CHANNELS)
    tau[Channel.GLUCOSE] = 360.0
    tau[Channel.HEART_RATE] = 120.0
    tau[Channel.SPO2] = 120.0
    tau[Channel.RESP_RATE] = 180.0
    tau[Channel.SYSTOLIC_BP] = 300.0
    tau[Channel.DIASTOLIC_BP] = 300.0
    tau[Channel.TEMPERATURE] = 300.0
    return SmootherParams(tau)


class TwinArrays(NamedTuple):
    """Twin state rows: latest value, its time (epoch ms, NO_TIME if never) and the estimate."""

    last_value: FloatArray
    last_time_ms: npt.NDArray[np.int64]
    estimate: FloatArray

    def take(self, rows: npt.NDArray[np.intp]) -> TwinArrays:
        """Copies of some rows."""
        return TwinArrays(self.last_value[rows], self.last_time_ms[rows], self.estimate[rows])


def empty_twin(n_patients: int) -> TwinArrays:
    """State of `n_patients` patients with nothing observed yet."""
    shape = (n_patients, N_CHANNELS)
    return TwinArrays(np.full(shape, np.nan), np.full(shape, NO_TIME, np.int64),
                      np.full(shape, np.nan))


class StepResult(NamedTuple):
    """New state rows and, per reading (in the batch's order), the estimate right after it."""

    state: TwinArrays
    estimate: FloatArray


def _rank_within_groups(group: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Position of each element among equal `group` values, for an array sorted by group."""
    n = group.shape[0]
    starts = np.ones(n, dtype=bool)
    starts[1:] = group[1:] != group[:-1]
    start_index = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    return np.arange(n) - start_index


def smoother_step(params: SmootherParams, state: TwinArrays, row: npt.NDArray[np.intp],
                  channel: npt.NDArray[np.int8], value: FloatArray,
                  time_ms: npt.NDArray[np.int64],
                  arrival: npt.NDArray[np.int64] | None = None) -> StepResult:
    """Fold a batch of readings into the state rows; pure: `state` is not modified.

    `row` indexes each reading's patient in `state` (shape (n_readings,)). Readings of the same
    patient and channel are applied in order of `arrival` (e.g. the packet's position; default:
    all equal), then time, round by round: round k applies the k-th reading of every
    (patient, channel) at once, so the work is array operations over patients. A reading older
    than the channel's latest value leaves the state as it is, so the result does not depend on
    how packets were grouped into batches.
    """
    last_value, last_time, estimate = (
        state.last_value.copy(), state.last_time_ms.copy(), state.estimate.copy())
    out = np.full(value.shape, np.nan)
    if value.size == 0:
        return StepResult(TwinArrays(last_value, last_time, estimate), out)
    ch = channel.astype(np.intp)
    arrived = np.zeros(value.shape, np.int64) if arrival is None else arrival
    order = np.lexsort((time_ms, arrived, ch, row))
    group = row[order].astype(np.int64) * N_CHANNELS + ch[order]
    rank = _rank_within_groups(group)
    tau_s = params.tau_s
    for k in range(int(rank.max()) + 1):
        idx = order[rank == k]
        r, c, v, t = row[idx], ch[idx], value[idx], time_ms[idx]
        prev_t = last_time[r, c]
        fresh = t >= prev_t
        never = prev_t == NO_TIME
        dt_s = np.maximum(np.where(never, 0.0, (t - np.where(never, t, prev_t)) / 1000.0), 0.0)
        tau = tau_s[c]
        with np.errstate(divide="ignore", invalid="ignore"):
            alpha = np.where((tau > 0) & ~never, -np.expm1(-dt_s / np.where(tau > 0, tau, 1.0)),
                             1.0)
        prev_est = estimate[r, c]
        new_est = np.where(never | np.isnan(prev_est), v, prev_est + alpha * (v - prev_est))
        new_est = np.where(fresh, new_est, prev_est)
        estimate[r, c] = new_est
        last_value[r, c] = np.where(fresh, v, last_value[r, c])
        last_time[r, c] = np.where(fresh, t, prev_t)
        out[idx] = new_est
    return StepResult(TwinArrays(last_value, last_time, estimate), out)
