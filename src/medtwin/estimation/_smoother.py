"""The twin's channels: per patient and channel, the latest value, its time, and a lightly
smoothed value (exponential smoothing with irregular time steps), all batched over patients;
and the events a batch is folded in by (which the glucose and vitals twins follow too).

State is a `TwinArrays` of arrays shaped (n_patients, n_channels); `smoother_step` is a pure
function from the state rows of the patients in a batch to their new rows.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from medtwin.domain import N_CHANNELS, Channel
from medtwin.estimation._scan import linear_recurrence, segment_starts, segmented_cummax

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


class EventResult(NamedTuple):
    """A batch folded in event by event.

    `state`: the rows after the batch; `estimate`: per reading (input order), the estimate
    right after it. Events are a patient's readings with the same arrival and time, in
    order; per event (shape (n_events,) or (n_events, n_channels)): its row, the index of its
    patient's first event, and every channel's estimate and latest time right after it.
    """

    state: TwinArrays
    estimate: FloatArray
    event_row: npt.NDArray[np.intp]
    event_start: npt.NDArray[np.intp]
    event_estimate: FloatArray
    event_time_ms: npt.NDArray[np.int64]
    reading_event: npt.NDArray[np.intp]


def smoother_events(params: SmootherParams, state: TwinArrays, row: npt.NDArray[np.intp],
                    channel: npt.NDArray[np.int8], value: FloatArray,
                    time_ms: npt.NDArray[np.int64],
                    arrival: npt.NDArray[np.int64] | None = None) -> EventResult:
    """Fold a batch of readings into the state rows, keeping the twin after every event; pure.

    `row` indexes each reading's patient in `state` (shape (n_readings,)). A patient's
    readings apply in order of `arrival` (e.g. the packet's position), then time; a reading
    older than its channel's latest value leaves the state as it is, so the result does not
    depend on how packets were grouped into batches. Smoothing with irregular steps:
    estimate += alpha * (value - estimate), alpha = 1 - exp(-dt / tau); the first reading of a
    channel sets it. The recurrences run as segmented scans: log2(readings per patient)
    array passes, no loop over readings.
    """
    n = value.shape[0]
    if n == 0:
        none = np.zeros(0, np.intp)
        return EventResult(state, np.zeros(0), none, none, np.zeros((0, N_CHANNELS)),
                           np.zeros((0, N_CHANNELS), np.int64), none)
    ch = channel.astype(np.intp)
    arrived = np.zeros(n, np.int64) if arrival is None else arrival.astype(np.int64)
    # Events: readings of a patient with equal (arrival, time); a repeated channel starts a
    # new event, so an event holds each channel at most once.
    by_key = np.lexsort((ch, time_ms, arrived, row))
    key = np.stack([row[by_key], arrived[by_key], time_ms[by_key], ch[by_key]], axis=1)
    new_key = np.ones(n, dtype=bool)
    new_key[1:] = (key[1:] != key[:-1]).any(axis=1)
    repeat = np.empty(n, np.int64)
    repeat[by_key] = np.arange(n) - segment_starts(np.cumsum(new_key))
    by_event = np.lexsort((ch, repeat, time_ms, arrived, row))
    event_key = np.stack([row[by_event], arrived[by_event], time_ms[by_event],
                          repeat[by_event]], axis=1)
    new_event = np.ones(n, dtype=bool)
    new_event[1:] = (event_key[1:] != event_key[:-1]).any(axis=1)
    event_of = np.empty(n, np.intp)
    event_of[by_event] = np.cumsum(new_event) - 1
    n_events = int(new_event.sum())
    event_row = row[by_event][new_event].astype(np.intp)
    event_start = segment_starts(event_row.astype(np.int64))

    # Per (patient, channel): the smoothing recurrence over its readings in event order.
    order = np.lexsort((event_of, ch, row))
    r, c, t, v = row[order], ch[order], time_ms[order], value[order]
    start = segment_starts(r.astype(np.int64) * N_CHANNELS + c)
    first_time = state.last_time_ms[r, c]
    newest = segmented_cummax(t, start)
    before = np.where(np.arange(n) > start, np.roll(newest, 1), NO_TIME)
    prev_t = np.maximum(first_time, before)
    fresh = t >= prev_t
    never = prev_t == NO_TIME
    dt_s = np.maximum(np.where(never, 0.0, (t - np.where(never, t, prev_t)) / 1000.0), 0.0)
    tau = params.tau_s[c]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        alpha = np.where((tau > 0) & ~never, -np.expm1(-dt_s / np.where(tau > 0, tau, 1.0)), 1.0)
    a = np.where(fresh, 1.0 - alpha, 1.0)
    b = np.where(fresh, alpha * v, 0.0)
    smoothed = linear_recurrence(a, b, state.estimate[r, c], start)
    latest_time = np.maximum(first_time, newest)
    last_fresh = np.maximum.accumulate(np.where(fresh, np.arange(n), -1))
    latest_value = np.where(last_fresh >= start, v[np.maximum(last_fresh, 0)],
                            state.last_value[r, c])

    estimate = np.empty(n)
    estimate[order] = smoothed
    last = np.ones(n, dtype=bool)
    last[:-1] = start[1:] != start[:-1]
    new_state = TwinArrays(state.last_value.copy(), state.last_time_ms.copy(),
                           state.estimate.copy())
    new_state.last_value[r[last], c[last]] = latest_value[last]
    new_state.last_time_ms[r[last], c[last]] = latest_time[last]
    new_state.estimate[r[last], c[last]] = smoothed[last]

    # Per event: every channel of its patient, carried forward from the patient's last event
    # that updated it (or from the state before the batch).
    e = event_of[order]
    updated = np.full((n_events, N_CHANNELS), -1, np.intp)
    event_est = np.empty((n_events, N_CHANNELS))
    event_time = np.empty((n_events, N_CHANNELS), np.int64)
    updated[e, c] = e
    event_est[e, c] = smoothed
    event_time[e, c] = latest_time
    carried = np.maximum.accumulate(updated, axis=0)
    has = carried >= event_start[:, np.newaxis]
    columns = np.arange(N_CHANNELS)
    source = np.maximum(carried, 0)
    event_est = np.where(has, event_est[source, columns],
                         state.estimate[event_row[:, np.newaxis], columns])
    event_time = np.where(has, event_time[source, columns],
                          state.last_time_ms[event_row[:, np.newaxis], columns])
    return EventResult(new_state, estimate, event_row, event_start, event_est, event_time,
                       event_of)


def smoother_step(params: SmootherParams, state: TwinArrays, row: npt.NDArray[np.intp],
                  channel: npt.NDArray[np.int8], value: FloatArray,
                  time_ms: npt.NDArray[np.int64],
                  arrival: npt.NDArray[np.int64] | None = None) -> StepResult:
    """Fold a batch of readings into the state rows (see `smoother_events`); pure."""
    result = smoother_events(params, state, row, channel, value, time_ms, arrival)
    return StepResult(result.state, result.estimate)
