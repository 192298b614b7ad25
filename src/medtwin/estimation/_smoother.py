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


def plan_rounds(row: npt.NDArray[np.intp], channel: npt.NDArray[np.int8],
                time_ms: npt.NDArray[np.int64],
                arrival: npt.NDArray[np.int64] | None = None) -> list[npt.NDArray[np.intp]]:
    """Split a batch into rounds of events: round k holds the k-th event of every patient.

    A patient's events are their readings in order of `arrival` (e.g. the packet's position)
    then time; readings with the same arrival and time form one event, unless they repeat a
    channel (two doses at one time are two events). Each round therefore holds at most one
    reading per (patient, channel), and rounds are array operations over patients: the loop
    runs over events per patient, not over readings.
    """
    n = row.shape[0]
    if n == 0:
        return []
    arrived = np.zeros(n, np.int64) if arrival is None else arrival.astype(np.int64)
    by_channel = np.lexsort((channel, time_ms, arrived, row))
    same_channel_key = np.stack([row[by_channel], arrived[by_channel], time_ms[by_channel],
                                 channel[by_channel]], axis=1)
    new_key = np.ones(n, dtype=bool)
    new_key[1:] = (same_channel_key[1:] != same_channel_key[:-1]).any(axis=1)
    repeat = np.empty(n, np.int64)
    repeat[by_channel] = _rank_within_groups(np.cumsum(new_key))
    order = np.lexsort((channel, repeat, time_ms, arrived, row))
    event_key = np.stack([arrived[order], time_ms[order], repeat[order]], axis=1)
    patient = row[order]
    new_patient = np.ones(n, dtype=bool)
    new_patient[1:] = patient[1:] != patient[:-1]
    new_event = new_patient.copy()
    new_event[1:] |= (event_key[1:] != event_key[:-1]).any(axis=1)
    event_number = np.cumsum(new_event)
    first_event = np.maximum.accumulate(np.where(new_patient, event_number, 0))
    round_of = event_number - first_event
    by_round = np.argsort(round_of, kind="stable")
    bounds = np.flatnonzero(np.diff(round_of[by_round])) + 1
    return [order[chunk] for chunk in np.split(by_round, bounds)]


def smoother_update(params: SmootherParams, state: TwinArrays, row: npt.NDArray[np.intp],
                    channel: npt.NDArray[np.int8], value: FloatArray,
                    time_ms: npt.NDArray[np.int64]) -> StepResult:
    """Apply readings with at most one per (row, channel) to the state rows; pure.

    Exponential smoothing with irregular steps: alpha = 1 - exp(-dt / tau). The first reading
    of a channel sets its estimate; a reading older than the channel's latest value leaves the
    state as it is.
    """
    last_value, last_time, estimate = (
        state.last_value.copy(), state.last_time_ms.copy(), state.estimate.copy())
    r, c = row, channel.astype(np.intp)
    prev_t = last_time[r, c]
    fresh = time_ms >= prev_t
    never = prev_t == NO_TIME
    dt_s = np.maximum(np.where(never, 0.0, (time_ms - np.where(never, time_ms, prev_t)) / 1000.0),
                      0.0)
    tau = params.tau_s[c]
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.where((tau > 0) & ~never, -np.expm1(-dt_s / np.where(tau > 0, tau, 1.0)), 1.0)
    prev_est = estimate[r, c]
    new_est = np.where(never | np.isnan(prev_est), value, prev_est + alpha * (value - prev_est))
    new_est = np.where(fresh, new_est, prev_est)
    estimate[r, c] = new_est
    last_value[r, c] = np.where(fresh, value, last_value[r, c])
    last_time[r, c] = np.where(fresh, time_ms, prev_t)
    return StepResult(TwinArrays(last_value, last_time, estimate), new_est)


def smoother_step(params: SmootherParams, state: TwinArrays, row: npt.NDArray[np.intp],
                  channel: npt.NDArray[np.int8], value: FloatArray,
                  time_ms: npt.NDArray[np.int64],
                  arrival: npt.NDArray[np.int64] | None = None) -> StepResult:
    """Fold a batch of readings into the state rows; pure: `state` is not modified.

    `row` indexes each reading's patient in `state` (shape (n_readings,)). Readings are applied
    in the rounds of `plan_rounds` (per patient in order of `arrival`, then time), so the
    result does not depend on how packets were grouped into batches.
    """
    out = np.full(value.shape, np.nan)
    for idx in plan_rounds(row, channel, time_ms, arrival):
        state, out[idx] = smoother_update(params, state, row[idx], channel[idx], value[idx],
                                          time_ms[idx])
    return StepResult(state, out)
