"""`medtwin whatif`: identify each patient's glucose twin from a FHIR history, then simulate a
future of meals and insulin and write the predicted glucose as FHIR.

    (0) read HISTORY: CGM glucose, carbohydrate Observations and insulin
        MedicationAdministrations (other resources and channels are ignored)
    (1) grid it on a 5-min grid for all chosen patients together (`grid_glucose_history`)
    (2) identify each patient's parameters (`identify_glucose_params`, batched)
    (3) run the twin's filter over the history, one batched step per grid step
    (4) read SCENARIO: carbohydrate Observations and insulin MedicationAdministrations, all
        after the end of HISTORY
    (5) simulate the scenario from the twin's state at the end of HISTORY (`glucose_whatif`)
    (6) write one `simulation_observation` per patient and 5-min point, validated

Scenario insulin is taken as doses *on top of* the patient's usual basal, which goes on as
delivered in the history (the median hourly delivery over its last 24 h), unless
`usual_basal=False` says the scenario lists every dose, basal included.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from medtwin.domain import POSSIBLE_MAX, POSSIBLE_MIN, Channel
from medtwin.errors import FhirError, NotFoundError
from medtwin.estimation import (
    GlucoseFilterState,
    GlucoseHistory,
    GlucoseNoise,
    Personalization,
    glucose_filter_init,
    glucose_filter_step,
    glucose_whatif,
    grid_glucose_history,
    identify_history,
    insulin_above_basal,
)
from medtwin.fhir import (
    ImportBatch,
    read_ndjson_file,
    simulation_observation,
    validate_resource,
    write_ndjson,
)
from medtwin.physiology import GlucoseParams

FloatArray = npt.NDArray[np.float64]
Progress = Callable[[Sequence[int]], Iterable[int]]

#: Grid step of the history and of the simulated trajectory (min).
STEP_MIN = 5.0
#: Default simulated time after the scenario's last input (h).
DEFAULT_TAIL_HOURS = 4.0
#: Patients identified per batch (one progress tick each); the result does not depend on it.
IDENTIFY_BATCH = 16
#: Window over which the usual basal is taken, and the length of its pieces (min).
USUAL_BASAL_WINDOW_MIN = 24 * 60.0
USUAL_BASAL_PIECE_MIN = 60.0
#: Time in range (mg/dL) reported in the summary.
RANGE_MG_DL = (70.0, 180.0)
_STEP_MS = round(STEP_MIN * 60_000)
_INPUTS = (Channel.CARBS, Channel.INSULIN)


@dataclass(frozen=True, slots=True)
class PatientWhatif:
    """One patient's identified twin and the summary of their simulated trajectory."""

    patient_id: str
    params: dict[str, float]
    uncertainty: dict[str, float]
    min_mg_dl: float
    max_mg_dl: float
    time_in_range: float


@dataclass(frozen=True, slots=True)
class WhatifSummary:
    """What `whatif` identified, simulated and wrote."""

    patients: tuple[PatientWhatif, ...]
    history_end_ms: int
    steps: int
    written: int
    skipped_rows: int


class _Rows:
    """The glucose-twin rows of an `ImportBatch`: channel values and plausibility checked."""

    def __init__(self, batch: ImportBatch) -> None:
        channel = np.full(len(batch), -1, dtype=np.int64)
        for c in (Channel.GLUCOSE, *_INPUTS):
            channel[(batch.codes == c.code) & (batch.units == c.ucum)] = int(c)
        known = channel >= 0
        plausible = known.copy()
        plausible[known] = ((batch.values[known] >= POSSIBLE_MIN[channel[known]])
                            & (batch.values[known] <= POSSIBLE_MAX[channel[known]]))
        self.skipped = int(np.count_nonzero(known & ~plausible))
        self.batch = batch
        self.channel = channel
        self.keep = plausible


def whatif(history_path: Path, scenario_path: Path, out_dir: Path,
           patients: Sequence[str] = (), tail_hours: float = DEFAULT_TAIL_HOURS,
           usual_basal: bool = True, validate: bool = True,
           progress: Progress | None = None) -> WhatifSummary:
    """Identify the twins of HISTORY, simulate SCENARIO after it, write DIR/Observation.ndjson.

    `patients`: the ids to simulate (default: every patient of HISTORY with CGM).
    Raises `FhirError` for an unreadable scenario line, a scenario input at or before the
    end of HISTORY or a history without CGM, `NotFoundError` for an unknown patient.
    """
    # (0): read HISTORY
    history_rows = _Rows(read_ndjson_file(history_path))
    h = history_rows.batch
    keep = history_rows.keep
    if not keep.any():
        raise FhirError("history: no glucose, carbohydrate or insulin readings")
    cgm_patients = set(h.patient_ids[keep & (history_rows.channel == Channel.GLUCOSE)].tolist())
    if not cgm_patients:
        raise FhirError("history: no CGM glucose readings")
    chosen = sorted(set(patients)) if patients else sorted(cgm_patients)
    for pid in chosen:
        if pid not in set(h.patient_ids[keep].tolist()):
            raise NotFoundError(f"whatif: unknown patient {pid}: the history has no readings "
                                "of them")
        if pid not in cgm_patients:
            raise FhirError(f"history: no CGM glucose readings of patient {pid}")
    keep = keep & np.isin(h.patient_ids, chosen)
    last_ms = int(h.time_ms[keep].max())

    # (1): grid, all chosen patients on one grid ending at the history's last reading
    grid = grid_glucose_history(h.patient_ids[keep], h.time_ms[keep],
                                history_rows.channel[keep], h.values[keep], STEP_MIN,
                                end_ms=last_ms)
    n = len(grid.patient_ids)

    # (2): identify
    identified = _identify(grid, progress)
    params = identified.params

    # (3): filter over the history
    state = _filter(params, grid)

    # (4): SCENARIO
    carbs, insulin, sources, times = _scenario(scenario_path, grid, last_ms)
    steps = max(1, -(-(max([grid.end_ms, *times]) - grid.end_ms
                       + round(tail_hours * 3_600_000)) // _STEP_MS))
    future_carbs = np.zeros((n, steps))
    future_insulin = np.zeros((n, steps))
    for i, pid in enumerate(grid.patient_ids):
        for k, grams in carbs.get(pid, ()):
            future_carbs[i, k] += grams
        for k, units in insulin.get(pid, ()):
            future_insulin[i, k] += units
    future_carbs[:, 0] += grid.pending_carbs_g
    # Insulin on top of the model's basal, negative where less was delivered (the twin takes
    # it so: a lowered basal shows).
    future_insulin[:, 0] += insulin_above_basal(grid.pending_insulin_u[:, np.newaxis], params,
                                                STEP_MIN)[:, 0]
    if usual_basal:
        future_insulin += insulin_above_basal(_usual_basal(grid), params, STEP_MIN)
    else:
        # Every dose is listed: re-express them on top of the model's own basal infusion.
        future_insulin = insulin_above_basal(future_insulin, params, STEP_MIN)

    # (5): simulate
    mean, low, high = glucose_whatif(params, state, STEP_MIN, future_carbs, future_insulin,
                                     interstitial=True)

    # (6): write
    resources = list(_observations(grid, h, keep, history_rows.channel, sources, mean, low, high))
    if validate:
        for resource in resources:
            validate_resource(resource)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = write_ndjson(out_dir / "Observation.ndjson", resources)
    lo, hi = RANGE_MG_DL
    return WhatifSummary(
        tuple(
            PatientWhatif(
                pid,
                {name: float(np.asarray(getattr(params, name))[i]) for name in identified.names},
                {name: float(identified.uncertainty[i, j])
                 for j, name in enumerate(identified.names)},
                float(mean[i].min()), float(mean[i].max()),
                float(np.mean((mean[i] >= lo) & (mean[i] <= hi))),
            )
            for i, pid in enumerate(grid.patient_ids)
        ),
        grid.end_ms, steps, written, history_rows.skipped,
    )


def _identify(grid: GlucoseHistory, progress: Progress | None) -> Personalization:
    """`identify_history` in batches of `IDENTIFY_BATCH` patients (one tick each)."""
    starts = list(range(0, len(grid.patient_ids), IDENTIFY_BATCH))
    parts = [identify_history(grid.select(slice(s, s + IDENTIFY_BATCH)))
             for s in (progress(starts) if progress is not None and len(starts) > 1
                       else starts)]
    return Personalization(
        GlucoseParams(*(np.concatenate([np.asarray(getattr(p.params, name)) for p in parts])
                        for name in GlucoseParams._fields)),
        np.concatenate([p.loss for p in parts]),
        np.concatenate([p.uncertainty for p in parts]),
        parts[0].names,
    )


def _filter(params: GlucoseParams, grid: GlucoseHistory) -> GlucoseFilterState:
    """The twin's state at the end of the grid: one batched filter step per grid step."""
    n = len(grid.patient_ids)
    noise = GlucoseNoise()
    dt = np.full(n, STEP_MIN)
    extra = insulin_above_basal(grid.insulin_u, params, STEP_MIN)
    state = glucose_filter_init(params, n)
    for k in range(grid.n_steps):
        y = grid.cgm[:, k]
        state = glucose_filter_step(params, noise, state, dt, grid.carbs_g[:, k], extra[:, k],
                                    y, np.isfinite(y)).state
    return state


def _usual_basal(grid: GlucoseHistory) -> FloatArray:
    """Each patient's usual insulin delivery per grid step (n, 1): the median of the hourly
    deliveries over the history's last 24 h (boluses fall in few hours; the median skips them)."""
    per_piece = round(USUAL_BASAL_PIECE_MIN / STEP_MIN)
    pieces = max(1, min(grid.n_steps, round(USUAL_BASAL_WINDOW_MIN / STEP_MIN)) // per_piece)
    if grid.n_steps < per_piece:
        rate = grid.insulin_u.sum(axis=1) / grid.n_steps
    else:
        recent = grid.insulin_u[:, grid.n_steps - pieces * per_piece:]
        rate = np.median(recent.reshape(-1, pieces, per_piece).sum(axis=2), axis=1) / per_piece
    return np.asarray(rate[:, np.newaxis], dtype=np.float64)


def _scenario(
    path: Path, grid: GlucoseHistory, last_ms: int,
) -> tuple[dict[str, list[tuple[int, float]]], dict[str, list[tuple[int, float]]],
           dict[str, list[tuple[int, str]]], list[int]]:
    """Scenario inputs per patient as (step, amount), Observation sources as (time, ref), and
    every input time; a `FhirError` naming the line for anything that cannot be simulated."""
    rows = _Rows(read_ndjson_file(path))
    batch = rows.batch
    if batch.issues:
        raise batch.issues[0].error()
    carbs: dict[str, list[tuple[int, float]]] = {}
    insulin: dict[str, list[tuple[int, float]]] = {}
    sources: dict[str, list[tuple[int, str]]] = {}
    times: list[int] = []
    for j in range(len(batch)):
        line, source = int(batch.lines[j]), str(batch.sources[j])
        if rows.channel[j] not in _INPUTS:
            raise FhirError(f"scenario: {source}: only carbohydrate Observations (g) and "
                            "insulin MedicationAdministrations ([IU]) can be simulated", line)
        if not rows.keep[j]:
            raise FhirError(f"scenario: {source}: the amount is outside what is possible", line)
        pid, t = str(batch.patient_ids[j]), int(batch.time_ms[j])
        if pid not in grid.patient_ids:
            continue
        if t <= last_ms:
            raise FhirError(f"scenario: {source} is at or before the end of the history", line)
        step = -(-(t - grid.end_ms) // _STEP_MS) if t > grid.end_ms else 0
        target = carbs if rows.channel[j] == Channel.CARBS else insulin
        target.setdefault(pid, []).append((step, float(batch.values[j])))
        if source.startswith("Observation/"):
            sources.setdefault(pid, []).append((t, source))
        times.append(t)
    return carbs, insulin, sources, times


def _observations(grid: GlucoseHistory, history: ImportBatch, keep: npt.NDArray[np.bool_],
                  channel: npt.NDArray[np.int64], sources: dict[str, list[tuple[int, str]]],
                  mean: FloatArray, low: FloatArray, high: FloatArray
                  ) -> Iterable[dict[str, Any]]:
    """One `simulation_observation` per patient and step, citing the patient's last CGM
    Observation and the scenario Observations eaten by then."""
    for i, pid in enumerate(grid.patient_ids):
        mine = keep & (history.patient_ids == pid)
        issued = int(history.time_ms[mine].max())
        cgm = np.flatnonzero(mine & (channel == Channel.GLUCOSE))
        last_cgm = str(history.sources[cgm[np.argmax(history.time_ms[cgm])]])
        base = [last_cgm] if last_cgm.startswith("Observation/") else []
        inputs = sorted(sources.get(pid, []))
        for k in range(mean.shape[1]):
            target = grid.end_ms + (k + 1) * _STEP_MS
            cited = base + [ref for t, ref in inputs if t <= target]
            yield simulation_observation(
                pid, float(mean[i, k]), float(low[i, k]), float(high[i, k]), issued, target,
                (k + 1) * STEP_MIN, list(dict.fromkeys(cited)), f"whatif-{i}-{k}")
