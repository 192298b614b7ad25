"""The twin bank: state rows of every monitored patient, gathered and scattered by batch.

A patient's twin has three parts that see the same readings:

- per channel, the latest value, its time and a lightly smoothed value (`smoother_events`);
- the glucose twin, a UKF on the glucose–insulin model (`glucose_events`): its plasma
  glucose estimate replaces the smoothed glucose everywhere the twin is read (rules, API,
  stream, FHIR), and it forecasts;
- the vitals twin, a UKF on the cardiorespiratory model (`vitals_events`): it reports each
  vital sign's innovation (the guard's evidence), the latent state and forecasts. NEWS2 and
  the vitals shown keep scoring the (smoothed) observations, as the Royal College of
  Physicians defines NEWS2 on observed values: a model's pull towards a baseline must never
  make a sick patient's score look better.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from medtwin.domain import Channel
from medtwin.estimation._glucose_events import (
    GlucoseEvents,
    GlucoseRows,
    glucose_events,
    glucose_forecast_now,
    glucose_rows,
    processing_order,
    take_params,
)
from medtwin.estimation._glucose_twin import GlucoseNoise
from medtwin.estimation._smoother import (
    NO_TIME,
    EventResult,
    SmootherParams,
    TwinArrays,
    default_smoother_params,
    empty_twin,
    smoother_events,
)
from medtwin.estimation._vitals_events import (
    VitalsEvents,
    VitalsRows,
    take_vitals_params,
    vitals_events,
    vitals_forecast_now,
    vitals_rows,
)
from medtwin.estimation._vitals_twin import VitalsNoise
from medtwin.physiology import (
    GlucoseParams,
    GlucoseState,
    default_glucose_params,
    default_vitals_params,
    steady_state,
)

FloatArray = npt.NDArray[np.float64]
_G = int(Channel.GLUCOSE)


@dataclass(frozen=True, slots=True)
class TwinUpdate:
    """What a batch would do to the bank: touched rows, their new state, per-reading estimates
    and the twin after every event (`events.event_row` indexes `rows`); the glucose and
    vitals twins' new rows with what they made of each reading; and per reading the
    innovation of whichever model twin used it, with its variance (NaN where none did).

    Nothing changes until `TwinBank.apply` is called, after the batch is durable.
    """

    rows: npt.NDArray[np.intp]
    state: TwinArrays
    estimate: FloatArray
    events: EventResult
    glucose: GlucoseEvents
    vitals: VitalsEvents
    innovation: FloatArray
    innovation_var: FloatArray


class TwinBank:
    """State of all patients' twins, one row per patient, grown as patients are added."""

    def __init__(self, params: SmootherParams | None = None, capacity: int = 64,
                 glucose_noise: GlucoseNoise | None = None,
                 vitals_noise: VitalsNoise | None = None) -> None:
        self.params = params if params is not None else default_smoother_params()
        self.glucose_noise = glucose_noise if glucose_noise is not None else GlucoseNoise()
        self.vitals_noise = vitals_noise if vitals_noise is not None else VitalsNoise()
        self._state = empty_twin(capacity)
        self._glucose_params = default_glucose_params(capacity)
        self._glucose = glucose_rows(self._glucose_params, capacity)
        self._vitals_params = default_vitals_params(capacity)
        self._vitals = vitals_rows(self._vitals_params, capacity)
        self._rows: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def digest_of_new(self, patient_id: str) -> bytes:
        """The digest a patient's twin has before any reading (adds their row here)."""
        self.row(patient_id)
        return self.digest(patient_id)

    def digest(self, patient_id: str) -> bytes:
        """SHA-256 over everything the twin holds for one patient (state, model rows and
        parameters, bit for bit): two twins with equal digests are the same twin."""
        row = self._rows[patient_id]
        h = hashlib.sha256(patient_id.encode("utf-8"))
        for part in (self._state, self._glucose, self._glucose_params, self._vitals,
                     self._vitals_params):
            for array in part:
                h.update(np.ascontiguousarray(array[row]).tobytes())
        return h.digest()

    def row(self, patient_id: str) -> int:
        """The row of `patient_id`, adding the patient on first sight."""
        found = self._rows.get(patient_id)
        if found is not None:
            return found
        index = len(self._rows)
        capacity = self._state.estimate.shape[0]
        if index >= capacity:
            grown = empty_twin(max(1, 2 * capacity))
            for new, old in zip(grown, self._state, strict=True):
                new[:index] = old[:index]
            self._state = grown
            params = default_glucose_params(max(1, 2 * capacity))
            for new_p, old_p in zip(params, self._glucose_params, strict=True):
                new_p[:index] = old_p[:index]
            size, kept = max(1, 2 * capacity), np.arange(index)
            rows = glucose_rows(params, size)
            rows.put(kept, self._glucose.take(kept))
            self._glucose_params, self._glucose = params, rows
            vparams = default_vitals_params(size)
            for new_v, old_v in zip(vparams, self._vitals_params, strict=True):
                new_v[:index] = old_v[:index]
            vrows = vitals_rows(vparams, size)
            vrows.put(kept, self._vitals.take(kept))
            self._vitals_params, self._vitals = vparams, vrows
        self._rows[patient_id] = index
        return index

    def patient_ids(self) -> list[str]:
        return list(self._rows)

    def propose(self, row: npt.NDArray[np.intp], channel: npt.NDArray[np.int8],
                value: FloatArray, time_ms: npt.NDArray[np.int64],
                arrival: npt.NDArray[np.int64] | None = None) -> TwinUpdate:
        """The update a batch of readings implies, without applying it (see
        `smoother_events`, `glucose_events` and `vitals_events`)."""
        rows, local = np.unique(row, return_inverse=True)
        local = local.astype(np.intp)
        result = smoother_events(self.params, self._state.take(rows), local, channel, value,
                                 time_ms, arrival)
        arrived = np.zeros(value.shape[0], np.int64) if arrival is None else arrival
        glucose = glucose_events(take_params(self._glucose_params, rows), self.glucose_noise,
                                 self._glucose.take(rows), local, channel, value, time_ms,
                                 processing_order(local, channel, time_ms, arrived))
        vitals = vitals_events(take_vitals_params(self._vitals_params, rows), self.vitals_noise,
                               self._vitals.take(rows), result.event_row, result.reading_event,
                               channel, value, time_ms)
        g, v = glucose.readings, vitals.readings
        innovation = np.where(np.isnan(g.innovation), v.innovation, g.innovation)
        innovation_var = np.where(np.isnan(g.innovation), v.innovation_var, g.innovation_var)
        return TwinUpdate(rows, *_with_glucose(result, glucose, channel), vitals, innovation,
                          innovation_var)

    def apply(self, update: TwinUpdate) -> None:
        """Make a proposed update the current state."""
        for current, new in zip(self._state, update.state, strict=True):
            current[update.rows] = new
        self._glucose.put(update.rows, update.glucose.rows)
        self._vitals.put(update.rows, update.vitals.rows)

    def rows_state(self, rows: npt.NDArray[np.intp]) -> TwinArrays:
        """Copies of the state rows of some patients."""
        return self._state.take(rows)

    def ages_s(self, rows: npt.NDArray[np.intp], now_ms: int) -> FloatArray:
        """Age of each channel's latest value in seconds, NaN if never observed, (n, channels)."""
        times = self._state.last_time_ms[rows]
        return np.where(times == NO_TIME, np.nan, (now_ms - times) / 1000.0)

    def glucose_rows(self, rows: npt.NDArray[np.intp]) -> GlucoseRows:
        """Copies of the glucose twin rows of some patients."""
        return self._glucose.take(rows)

    def glucose_params(self, rows: npt.NDArray[np.intp]) -> GlucoseParams:
        """The glucose-model parameters of some patients."""
        return take_params(self._glucose_params, rows)

    def set_glucose_params(self, rows: npt.NDArray[np.intp], params: GlucoseParams) -> None:
        """Give some patients new glucose-model parameters (fields (len(rows),)), from their
        next step on. Their filter keeps its belief about glucose and the gut; plasma and
        subcutaneous insulin keep their deviation from basal, re-centred on the new basal."""
        old_basal = steady_state(self.glucose_params(rows))
        for field, value in zip(self._glucose_params, params, strict=True):
            field[rows] = value
        shift = steady_state(self.glucose_params(rows)) - old_basal
        insulin = [GlucoseState.I, GlucoseState.S1, GlucoseState.S2]
        self._glucose.mean[rows[:, np.newaxis], insulin] += shift[:, insulin]

    def glucose_forecast(self, rows: npt.NDArray[np.intp], horizons_min: tuple[float, ...]
                         ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Plasma glucose forecasts from each patient's latest glucose twin state: mean, low
        and high 95 % bounds, each (n, h); NaN where there is no glucose data."""
        return glucose_forecast_now(self.glucose_params(rows), self.glucose_noise,
                                    self.glucose_rows(rows), horizons_min)


    def vitals_rows(self, rows: npt.NDArray[np.intp]) -> VitalsRows:
        """Copies of the vitals twin rows of some patients."""
        return self._vitals.take(rows)

    def vitals_forecast(self, rows: npt.NDArray[np.intp], horizons_min: tuple[float, ...]
                        ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Each vital channel `horizons_min` after each patient's latest vital signs: mean,
        low and high 95 % bounds, each (n, h, 6) (`VITALS_OBSERVED_CHANNELS` order); NaN
        where there are none."""
        return vitals_forecast_now(take_vitals_params(self._vitals_params, rows),
                                   self.vitals_noise, self._vitals.take(rows), horizons_min)


def _with_glucose(result: EventResult, glucose: GlucoseEvents, channel: npt.NDArray[np.int8]
                  ) -> tuple[TwinArrays, FloatArray, EventResult, GlucoseEvents]:
    """The smoother's result with its glucose replaced by the glucose twin's estimate: in
    every event (carried forward from the patient's last CGM reading that the twin used,
    else the estimate before the batch), per reading (a CGM value the twin did not use, a
    late one, gets its event's), and in the state rows."""
    twin_glucose = glucose.readings.estimate
    used = np.flatnonzero(np.isfinite(twin_glucose))
    n_events = result.event_row.shape[0]
    event_estimate = result.event_estimate.copy()
    if used.size:
        updated = np.full(n_events, -1, np.intp)
        updated[result.reading_event[used]] = result.reading_event[used]
        value = np.full(n_events, np.nan)
        value[result.reading_event[used]] = twin_glucose[used]
        carried = np.maximum.accumulate(updated)
        has = carried >= result.event_start
        event_estimate[:, _G] = np.where(has, value[np.maximum(carried, 0)],
                                         event_estimate[:, _G])
    is_glucose = channel == Channel.GLUCOSE
    estimate = np.where(np.isfinite(twin_glucose), twin_glucose, result.estimate)
    if n_events:
        estimate = np.where(is_glucose & np.isnan(twin_glucose),
                            event_estimate[result.reading_event, _G], estimate)
    if used.size == 0:
        return result.state, estimate, result, glucose
    # The state rows: each patient's glucose after their last event.
    last = np.ones(n_events, dtype=bool)
    last[:-1] = result.event_row[1:] != result.event_row[:-1]
    state = result.state._replace(estimate=result.state.estimate.copy())
    state.estimate[result.event_row[last], _G] = event_estimate[last, _G]
    return state, estimate, result._replace(event_estimate=event_estimate), glucose
