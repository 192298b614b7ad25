"""The twin bank: state rows of every monitored patient, gathered and scattered by batch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from medtwin.estimation._smoother import (
    NO_TIME,
    EventResult,
    SmootherParams,
    TwinArrays,
    default_smoother_params,
    empty_twin,
    smoother_events,
)


@dataclass(frozen=True, slots=True)
class TwinUpdate:
    """What a batch would do to the bank: touched rows, their new state, per-reading estimates
    and the twin after every event (`events.event_row` indexes `rows`).

    Nothing changes until `TwinBank.apply` is called, after the batch is durable.
    """

    rows: npt.NDArray[np.intp]
    state: TwinArrays
    estimate: npt.NDArray[np.float64]
    events: EventResult

class TwinBank:
    """State of all patients' twins, one row per patient, grown as patients are added."""

    def __init__(self, params: SmootherParams | None = None, capacity: int = 64) -> None:
        self.params = params if params is not None else default_smoother_params()
        self._state = empty_twin(capacity)
        self._rows: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def row(self, patient_id: str) -> int:
        """The row of `patient_id`, adding the patient on first sight."""
        found = self._rows.get(patient_id)
        if found is not None:
            return found
        index = len(self._rows)
        if index >= self._state.estimate.shape[0]:
            grown = empty_twin(max(1, 2 * self._state.estimate.shape[0]))
            for new, old in zip(grown, self._state, strict=True):
                new[:index] = old[:index]
            self._state = grown
        self._rows[patient_id] = index
        return index

    def patient_ids(self) -> list[str]:
        return list(self._rows)

    def propose(self, row: npt.NDArray[np.intp], channel: npt.NDArray[np.int8],
                value: npt.NDArray[np.float64], time_ms: npt.NDArray[np.int64],
                arrival: npt.NDArray[np.int64] | None = None) -> TwinUpdate:
        """The update a batch of readings implies, without applying it (see
        `smoother_events`)."""
        rows, local = np.unique(row, return_inverse=True)
        result = smoother_events(self.params, self._state.take(rows), local.astype(np.intp),
                                 channel, value, time_ms, arrival)
        return TwinUpdate(rows, result.state, result.estimate, result)

    def apply(self, update: TwinUpdate) -> None:
        """Make a proposed update the current state."""
        for current, new in zip(self._state, update.state, strict=True):
            current[update.rows] = new

    def rows_state(self, rows: npt.NDArray[np.intp]) -> TwinArrays:
        """Copies of the state rows of some patients."""
        return self._state.take(rows)

    def ages_s(self, rows: npt.NDArray[np.intp], now_ms: int) -> npt.NDArray[np.float64]:
        """Age of each channel's latest value in seconds, NaN if never observed, (n, channels)."""
        times = self._state.last_time_ms[rows]
        return np.where(times == NO_TIME, np.nan, (now_ms - times) / 1000.0)

