"""The vitals twin on a stream of readings: each event's vital signs (a patient's readings of
one time, any subset of the six channels) folded into that patient's UKF as one masked
update, batched over patients.

Events come from `smoother_events` (a patient's readings of one arrival and time, each
channel at most once, in processing order). The k-th vital events of all patients in a batch
go through one batched `vitals_filter_step`, so the loop runs over the most vital events any
one patient has in the batch, never over readings; the result depends only on each
patient's sequence of events, not on how packets were batched.

- The filter starts at a patient's first vital event: the model's baseline at that time of
  day, with every state that event measures set from its reading (SpO2 through the inverse
  saturation curve, systolic and diastolic pressure through MAP and pulse pressure) at the
  spread of the measurement; the event then updates it (its innovations are NaN: nothing
  was predicted). A gap longer than `MAX_VITALS_GAP_MIN` starts it afresh.
- An event older than the filter's time is late: it updates nothing.
- Time of day is UTC (`time_ms` modulo one day): the rhythm's phase is that of a site on
  UTC; a site elsewhere shifts it by its offset.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from medtwin.estimation._smoother import NO_TIME
from medtwin.estimation._vitals_twin import (
    N_VITALS_CHANNELS,
    VitalsFilterState,
    VitalsNoise,
    vitals_filter_init,
    vitals_filter_step,
    vitals_forecast,
)
from medtwin.physiology import (
    VITALS_OBSERVED_CHANNELS,
    VITALS_STATE_MAX,
    VITALS_STATE_MIN,
    VitalsModelParams,
    VitalsModelState,
    pao2_for_saturation,
    vitals_observation,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: A gap in a patient's vital signs longer than this (min) restarts their filter.
MAX_VITALS_GAP_MIN = 240.0
_MS_PER_MIN = 60_000.0
_MS_PER_DAY = 86_400_000
#: Channel index → position in `VITALS_OBSERVED_CHANNELS` (-1: not a vital sign).
_POSITION = np.full(max(int(c) for c in VITALS_OBSERVED_CHANNELS) + 1, -1, np.intp)
_POSITION[[int(c) for c in VITALS_OBSERVED_CHANNELS]] = np.arange(N_VITALS_CHANNELS)
_HR, _SPO2, _RR, _SBP, _DBP, _TEMP = range(N_VITALS_CHANNELS)


def time_of_day_min(time_ms: IntArray) -> FloatArray:
    """Minutes after UTC midnight of epoch-millisecond times."""
    return np.asarray((time_ms % _MS_PER_DAY) / _MS_PER_MIN, dtype=np.float64)


class VitalsRows(NamedTuple):
    """Vitals twin rows of n patients: the filter's Gaussian (`mean` (n, d), `cov`
    (n, d, d)) and its time `time_ms` (n,) (`NO_TIME` before the first vital sign)."""

    mean: FloatArray
    cov: FloatArray
    time_ms: IntArray

    def take(self, rows: npt.NDArray[np.intp] | slice) -> VitalsRows:
        """Copies of some rows."""
        return VitalsRows(self.mean[rows].copy(), self.cov[rows].copy(),
                          self.time_ms[rows].copy())

    def put(self, rows: npt.NDArray[np.intp], new: VitalsRows) -> None:
        """Overwrite some rows with `new` (in place)."""
        self.mean[rows], self.cov[rows], self.time_ms[rows] = new.mean, new.cov, new.time_ms


def vitals_rows(params: VitalsModelParams, n: int) -> VitalsRows:
    """n patients that have seen no vital sign yet."""
    prior = vitals_filter_init(params, n)
    return VitalsRows(prior.mean, prior.cov, np.full(n, NO_TIME, np.int64))


def take_vitals_params(params: VitalsModelParams, rows: npt.NDArray[np.intp]
                       ) -> VitalsModelParams:
    """The parameter rows of some patients."""
    return VitalsModelParams(*(np.asarray(f)[rows] for f in params))


class VitalsReadings(NamedTuple):
    """What the vitals twin made of each reading (the batch's order; NaN where the reading is
    not a vital sign it used): the channel's `estimate` right after it (the model's value of
    the posterior mean), the `innovation` and its variance `innovation_var`."""

    estimate: FloatArray
    innovation: FloatArray
    innovation_var: FloatArray


class VitalsEvents(NamedTuple):
    """A batch folded into the vitals twin: the patients' `rows` after it, and per reading
    what the twin made of it."""

    rows: VitalsRows
    readings: VitalsReadings


def _start(params: VitalsModelParams, noise: VitalsNoise, measured: FloatArray,
           tod: FloatArray) -> VitalsFilterState:
    """The prior of patients at their first vital event: the baseline, with the states the
    event measures set from it at the measurement's spread."""
    n = measured.shape[0]
    state = vitals_filter_init(params, n, tod)
    mean, cov = state.mean, state.cov
    sd = np.broadcast_to(np.asarray(noise.measurement_std, dtype=np.float64),
                         (n, N_VITALS_CHANNELS))
    seen = np.isfinite(measured)

    def pin(state_index: int, value: FloatArray, spread: FloatArray, where: npt.NDArray[np.bool_]
            ) -> None:
        mean[where, state_index] = value[where]
        cov[where, state_index, :] = 0.0
        cov[where, :, state_index] = 0.0
        cov[where, state_index, state_index] = spread[where] ** 2

    pin(VitalsModelState.HEART_RATE, measured[:, _HR], sd[:, _HR], seen[:, _HR])
    pin(VitalsModelState.RESP_RATE, measured[:, _RR], sd[:, _RR], seen[:, _RR])
    pin(VitalsModelState.TEMPERATURE, measured[:, _TEMP], sd[:, _TEMP], seen[:, _TEMP])
    spo2 = np.where(seen[:, _SPO2], measured[:, _SPO2], 97.0)
    pao2 = pao2_for_saturation(spo2)
    slope = pao2_for_saturation(spo2 + 0.5) - pao2_for_saturation(spo2 - 0.5)  # mmHg per %
    pin(VitalsModelState.PAO2, pao2, np.abs(slope) * sd[:, _SPO2], seen[:, _SPO2])
    both = seen[:, _SBP] & seen[:, _DBP]
    sbp, dbp = measured[:, _SBP], measured[:, _DBP]
    pin(VitalsModelState.MAP, (sbp + 2.0 * dbp) / 3.0, sd[:, _SBP], both)
    pin(VitalsModelState.PULSE_PRESSURE, sbp - dbp, sd[:, _SBP], both)
    return VitalsFilterState(np.clip(mean, VITALS_STATE_MIN, VITALS_STATE_MAX), cov)


def vitals_events(
    params: VitalsModelParams,
    noise: VitalsNoise,
    rows: VitalsRows,
    event_row: npt.NDArray[np.intp],
    reading_event: npt.NDArray[np.intp],
    channel: npt.NDArray[np.int8],
    value: FloatArray,
    time_ms: IntArray,
) -> VitalsEvents:
    """Fold a batch's vital signs into the vitals twin rows; pure (see the module docstring).

    `event_row` (n_events,) is each event's patient row in `rows` and `params`, events in
    processing order, each patient's together; `reading_event` (n_readings,) each reading's
    event. Readings of other channels are ignored.
    """
    n_readings = value.shape[0]
    est, innov, innov_var = (np.full(n_readings, np.nan) for _ in range(3))
    state = rows.take(slice(None))
    position = np.full(n_readings, -1, np.intp)
    in_table = channel.astype(np.intp) < _POSITION.size
    position[in_table] = _POSITION[channel[in_table].astype(np.intp)]
    vital = np.flatnonzero(position >= 0)
    if vital.size == 0:
        return VitalsEvents(state, VitalsReadings(est, innov, innov_var))
    events, local = np.unique(reading_event[vital], return_inverse=True)
    measured = np.full((events.size, N_VITALS_CHANNELS), np.nan)
    measured[local, position[vital]] = value[vital]
    when = np.zeros(events.size, np.int64)
    when[local] = time_ms[vital]
    patient = event_row[events]
    first = np.searchsorted(patient, patient, side="left")   # events are grouped by patient
    rank = np.arange(events.size) - first
    after = np.full((events.size, N_VITALS_CHANNELS), np.nan)
    got_innov, got_var = np.full_like(after, np.nan), np.full_like(after, np.nan)
    for k in range(int(rank.max()) + 1):
        ev = np.flatnonzero(rank == k)
        r, t, y = patient[ev], when[ev], measured[ev]
        p = take_vitals_params(params, r)
        tod = time_of_day_min(t)
        gap = (state.time_ms[r] != NO_TIME) & (
            (t - state.time_ms[r]) / _MS_PER_MIN > MAX_VITALS_GAP_MIN)
        fresh = (state.time_ms[r] == NO_TIME) | gap
        late = ~fresh & (t < state.time_ms[r])
        if fresh.any():
            f = np.flatnonzero(fresh)
            start = _start(take_vitals_params(p, f), noise, y[f], tod[f])
            state.mean[r[f]], state.cov[r[f]] = start.mean, start.cov
            state.time_ms[r[f]] = t[f]
        go = np.flatnonzero(~late)
        if go.size == 0:
            continue
        rg = r[go]
        dt = (t[go] - state.time_ms[rg]) / _MS_PER_MIN
        step = vitals_filter_step(take_vitals_params(p, go), noise,
                                  VitalsFilterState(state.mean[rg], state.cov[rg]), dt,
                                  tod[go], y[go], np.isfinite(y[go]))
        state.mean[rg], state.cov[rg] = step.state.mean, step.state.cov
        state.time_ms[rg] = t[go]
        after[ev[go]] = vitals_observation(step.state.mean, take_vitals_params(p, go))
        started = ~fresh[go][:, np.newaxis]
        got_innov[ev[go]] = np.where(started, step.innovation, np.nan)
        got_var[ev[go]] = np.where(started, step.innovation_var, np.nan)
    est[vital] = after[local, position[vital]]
    innov[vital] = got_innov[local, position[vital]]
    innov_var[vital] = got_var[local, position[vital]]
    return VitalsEvents(state, VitalsReadings(est, innov, innov_var))


def vitals_forecast_now(params: VitalsModelParams, noise: VitalsNoise, rows: VitalsRows,
                        horizons_min: tuple[float, ...]
                        ) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Each vital channel `horizons_min` after each patient's filter time: mean, low and high
    95 % bounds, each (n, h, 6) in `VITALS_OBSERVED_CHANNELS` order; NaN for patients with no
    vital signs yet."""
    mean, low, high = vitals_forecast(params, VitalsFilterState(rows.mean, rows.cov),
                                      time_of_day_min(rows.time_ms), horizons_min,
                                      noise=noise)
    unknown = (rows.time_ms == NO_TIME)[:, np.newaxis, np.newaxis]
    return (np.where(unknown, np.nan, mean), np.where(unknown, np.nan, low),
            np.where(unknown, np.nan, high))
