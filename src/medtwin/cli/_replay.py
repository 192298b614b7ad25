"""`medtwin replay`: run FHIR R4 NDJSON through the pipeline as a trusted import, write FHIR out.

Observation.ndjson holds the twin's estimate after every measurement and, after every CGM
value, its glucose forecasts (interstitial, the channel's quantity) at 30 and 60 minutes
(`forecast_observation`).

Inputs are grouped into packets of one patient and one time window, and each window of all
patients goes through the pipeline as one batch. A packet the gate refuses because of one
reading is retried without that reading, so one bad line never hides its neighbours.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from medtwin.clinical import RULES
from medtwin.config import Settings
from medtwin.domain import Channel, Finding, Reading, RejectReason
from medtwin.errors import InvalidInputError
from medtwin.estimation import FORECAST_HORIZONS_MIN
from medtwin.fhir import (
    ImportBatch,
    alert_detected_issue,
    estimate_observation,
    finding_detected_issue,
    forecast_observation,
    provenance,
    read_ndjson_file,
    rejection_detected_issue,
    validate_resource,
    write_ndjson,
)
from medtwin.ingest import ImportSubmission
from medtwin.pipeline import Accepted, Pipeline, Rejected

#: Width of the time window whose readings of one patient form one import packet.
WINDOW_MS = 5 * 60 * 1000


@dataclass
class ReplaySummary:
    """Counts of what a replay read, accepted, refused and wrote."""

    lines: int = 0
    readings: int = 0
    accepted: int = 0
    rejected: int = 0
    unreadable: int = 0
    alerts: int = 0
    findings: int = 0
    written: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Pending:
    """An import packet with the input references of its readings."""

    submission: ImportSubmission
    sources: tuple[str, ...]


def replay(input_path: Path, out_dir: Path, settings: Settings, validate: bool = True,
           progress: Any = None) -> ReplaySummary:
    """Replay `input_path` through a pipeline on `settings`; write FHIR NDJSON to `out_dir`."""
    batch = read_ndjson_file(input_path)
    summary = ReplaySummary(lines=batch.n_lines, readings=len(batch.values),
                            unreadable=len(batch.issues))
    issues: list[dict[str, Any]] = [
        rejection_detected_issue(RejectReason.MALFORMED, f"line {issue.line}: {issue.reason}",
                                 None, settings.clock(), [issue.source] if issue.source else [],
                                 f"unreadable-{k}")
        for k, issue in enumerate(batch.issues)
    ]
    observations: list[dict[str, Any]] = []
    pipeline = Pipeline.open(settings)
    try:
        for patient_id in sorted(set(batch.patient_ids.tolist()) - set(pipeline.patients())):
            pipeline.add_patient(patient_id)
        windows = list(_windows(batch, input_path.name))
        for pending in (progress(windows) if progress else windows):
            while pending:
                outcomes = pipeline.process([p.submission for p in pending])
                retry: list[_Pending] = []
                for p, outcome in zip(pending, outcomes, strict=True):
                    if isinstance(outcome, Accepted):
                        summary.accepted += outcome.n_readings
                        observations.extend(_estimates(p, outcome, len(observations)))
                        summary.alerts += len(outcome.alerts)
                        issues.extend(
                            alert_detected_issue(a, f"alert-{outcome.leaf_index}-{i}",
                                                 _evidence_sources(p, a.rule))
                            for i, a in enumerate(outcome.alerts))
                        summary.findings += len(outcome.findings)
                        issues.extend(
                            finding_detected_issue(f, f"guard-{outcome.leaf_index}-{i}",
                                                   _implicated(p, f))
                            for i, f in enumerate(outcome.findings))
                    else:
                        retry.extend(_refused(p, outcome, issues, summary))
                pending = retry
        resources = {
            "Observation.ndjson": observations,
            "DetectedIssue.ndjson": issues,
            "Provenance.ndjson": [provenance(
                [f"Observation/{o['id']}" for o in observations] or ["Observation/none"],
                pipeline.clock(), input_path.name)],
        }
        if validate:
            for resource in itertools.chain.from_iterable(resources.values()):
                validate_resource(resource)
        out_dir.mkdir(parents=True, exist_ok=True)
        summary.written = {name: write_ndjson(out_dir / name, items)
                           for name, items in resources.items()}
    finally:
        pipeline.close()
    return summary


def _windows(batch: ImportBatch, source: str) -> Iterator[list[_Pending]]:
    """Import packets grouped by time window, in time order, all patients of a window together."""
    order = np.lexsort((batch.time_ms, batch.patient_ids, batch.time_ms // WINDOW_MS))
    window = batch.time_ms[order] // WINDOW_MS
    seq = itertools.count()
    for w in np.unique(window):
        idx = order[window == w]
        pending: list[_Pending] = []
        for patient_id in np.unique(batch.patient_ids[idx]):
            rows = idx[batch.patient_ids[idx] == patient_id]
            pending.append(_Pending(
                ImportSubmission(str(patient_id), source, next(seq), batch.codes[rows].tolist(),
                                 batch.units[rows].tolist(), batch.values[rows],
                                 batch.time_ms[rows]),
                tuple(batch.sources[rows].tolist())))
        yield pending


def _evidence_sources(p: _Pending, rule_name: str) -> list[str]:
    """The inputs of a packet that are evidence for a rule (its channels only)."""
    codes = {c.code for c in next(r for r in RULES if r.name == rule_name).channels}
    return [src for src, code in zip(p.sources, p.submission.codes, strict=True)
            if code in codes]


def _implicated(p: _Pending, finding: Finding) -> list[str]:
    """The inputs of a packet a guard finding is about: its channel's readings from when the
    suspect pattern began to when it was raised; all inputs for a finding on the device."""
    sub = p.submission
    if finding.channel is None:
        return list(p.sources)
    times = sub.time_ms
    on_channel = np.asarray(sub.codes, dtype=str) == finding.channel.code
    window = (times >= min(finding.since_ms, finding.time_ms)) & (times <= finding.time_ms)
    chosen = np.flatnonzero(on_channel & window)
    if chosen.size == 0:
        chosen = np.flatnonzero(on_channel)
    return [p.sources[i] for i in chosen.tolist()] if chosen.size else list(p.sources)


def _estimates(p: _Pending, outcome: Accepted, start: int) -> Iterator[dict[str, Any]]:
    """The twin's estimate after each accepted measurement (inputs and readings the guard held
    have none), and after each CGM value the twin used, its glucose forecast at every
    horizon."""
    sub = p.submission
    g = outcome.glucose
    for i, code in enumerate(sub.codes):
        channel = Channel.from_code(code)
        if channel.is_input or not np.isfinite(outcome.estimates[i]):
            continue  # inputs have no estimate; readings the guard held moved nothing
        yield estimate_observation(sub.patient_id, channel, float(outcome.estimates[i]),
                                   int(sub.time_ms[i]), [p.sources[i]],
                                   f"est-{start + i}-{outcome.leaf_index}")
        if not np.isfinite(g.estimate[i]):
            continue
        issued = int(g.filter_time_ms[i])
        for j, horizon in enumerate(FORECAST_HORIZONS_MIN):
            yield forecast_observation(
                sub.patient_id, float(g.forecast[i, j]), float(g.forecast_low[i, j]),
                float(g.forecast_high[i, j]), issued, issued + round(horizon * 60_000),
                horizon, [p.sources[i]], f"fc-{start + i}-{outcome.leaf_index}-{horizon:g}")


def _refused(p: _Pending, outcome: Rejected, issues: list[dict[str, Any]],
             summary: ReplaySummary) -> Sequence[_Pending]:
    """Record a refusal; if one reading caused it, return the packet without that reading."""
    error = outcome.error
    sub = p.submission
    position = error.reading
    implicated = [p.sources[position]] if position is not None else list(p.sources)
    time_ms = int(sub.time_ms[position]) if position is not None else int(sub.time_ms.max())
    issues.append(rejection_detected_issue(error.reason, error.detail, sub.patient_id, time_ms,
                                           implicated, f"gate-{outcome.leaf_index}"))
    if position is None:
        summary.rejected += len(sub.codes)
        return ()
    summary.rejected += 1
    keep = [i for i in range(len(sub.codes)) if i != position]
    if not keep:
        return ()
    rest = ImportSubmission(sub.patient_id, sub.source, sub.seq, [sub.codes[i] for i in keep],
                            [sub.units[i] for i in keep], sub.values[keep], sub.time_ms[keep])
    return (_Pending(rest, tuple(p.sources[i] for i in keep)),)


@dataclass(frozen=True, slots=True)
class FileAttack:
    """A data attack written into a simulated file: `kind` (one of `ATTACK_DATA_KINDS`) on
    `channel` of `patient_id` (None: the ward's first patient), from `start_h` hours after the
    first reading (None: half way) to the end, of `size` in the units of `ATTACK_DEFAULT_SIZE`
    (None: its default)."""

    kind: str
    channel: Channel = Channel.GLUCOSE
    start_h: float | None = None
    size: float | None = None
    patient_id: str | None = None


def truth_path(out: Path) -> Path:
    """Where `simulate_ndjson` writes the ground truth of an attacked file: beside it."""
    return out.with_name(out.name + ".truth.json")


def simulate_ndjson(out: Path, patients: int, hours: float, seed: int, start_ms: int,
                    deteriorating: float = 0.25, attack: FileAttack | None = None) -> int:
    """Write the readings of a virtual ward as FHIR R4 NDJSON (input for `replay`); return how
    many resources.

    With an `attack`, one patient's channel stream is attacked (`medtwin.sim.attack_rows`), and
    the ground truth (the attack and the references of the resources it changed or removed)
    goes to `truth_path(out)` as JSON, so a replay's guard findings can be scored against it.
    """
    from medtwin.fhir import insulin_administration, reading_observation
    from medtwin.sim import Ward

    ward = Ward(patients, start_ms - start_ms % 60_000, seed=seed, deteriorating=deteriorating)
    patient_of: list[str] = []
    channels: list[Channel] = []
    values: list[float] = []
    times: list[int] = []
    ids: list[str] = []
    for envelope in ward.advance(ward.start_ms + int(hours * 3_600_000)):
        packet = envelope["packet"]
        patient_id = _patient_of(ward, packet["device_id"])
        for k, r in enumerate(packet["readings"]):
            patient_of.append(patient_id)
            channels.append(Channel.from_code(r["code"]))
            values.append(float(r["value"]))
            times.append(int(r["time"]))
            ids.append(f"{packet['device_id']}-{packet['seq']}-{k}")
    time_col = np.asarray(times, dtype=np.int64)
    value_col = np.asarray(values, dtype=np.float64)
    keep = np.ones(time_col.shape, dtype=np.bool_)
    if attack is not None:
        time_col, value_col, keep = _attack_file(ward, attack, hours, seed, patient_of, channels,
                                                 time_col, value_col, ids, out)
    resources: list[dict[str, Any]] = []
    for i in np.flatnonzero(keep).tolist():
        reading = Reading(channels[i], float(value_col[i]), int(time_col[i]))
        build = insulin_administration if reading.channel is Channel.INSULIN else (
            reading_observation)
        resources.append(build(patient_of[i], reading, ids[i]))
    return write_ndjson(out, resources)


def _attack_file(ward: Any, attack: FileAttack, hours: float, seed: int, patient_of: list[str],
                 channels: list[Channel], time_ms: npt.NDArray[np.int64],
                 value: npt.NDArray[np.float64], ids: list[str], out: Path
                 ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64],
                            npt.NDArray[np.bool_]]:
    """Apply `attack` to the rows of its stream; write the ground truth beside `out`."""
    from medtwin.sim import ATTACK_DATA_KINDS, attack_of, attack_rows

    if attack.kind not in ATTACK_DATA_KINDS:
        raise InvalidInputError(f"simulate: --attack {attack.kind!r} does not change a file; "
                                f"choose one of {', '.join(ATTACK_DATA_KINDS)}")
    patient_ids = [p.patient_id for p in ward.patients]
    patient_id = attack.patient_id or patient_ids[0]
    if patient_id not in patient_ids:
        raise InvalidInputError(f"simulate: no patient {patient_id!r} in the ward; choose one "
                                f"of {patient_ids[0]} to {patient_ids[-1]}")
    start_h = hours / 2 if attack.start_h is None else attack.start_h
    if not 0 <= start_h < hours:
        raise InvalidInputError(f"simulate: the attack must start within the {hours:g} "
                                "simulated hours (--attack-start-h)")
    start_ms = ward.start_ms + round(start_h * 3_600_000)
    stream = (np.asarray(patient_of) == patient_id) & (
        np.asarray([c.value for c in channels], dtype=np.int64) == attack.channel.value)
    try:
        spec = attack_of(attack.kind, attack.channel, start_ms, attack.size)
        rows = attack_rows(spec, stream, time_ms, value, np.random.default_rng(seed))
    except ValueError as exc:
        raise InvalidInputError(f"simulate: {exc}") from None
    resource = ("MedicationAdministration" if attack.channel is Channel.INSULIN
                else "Observation")
    truth = {
        "attack": {"kind": attack.kind, "channel": attack.channel.code,
                   "patient_id": patient_id, "start_ms": start_ms,
                   "start": datetime.fromtimestamp(start_ms / 1000, UTC).isoformat(),
                   "size": spec.size, "size_unit": _size_unit(attack.kind, attack.channel)},
        "removed": attack.kind == "dropout",
        "affected": [f"{resource}/{ids[i]}" for i in np.flatnonzero(rows.affected).tolist()],
    }
    truth_path(out).write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")
    return rows.time_ms, rows.value, rows.keep


def _size_unit(kind: str, channel: Channel) -> str | None:
    """The UCUM unit of an `Attack.size` of `kind` on `channel` (None: the kind has no size)."""
    if kind in ("freeze", "dropout"):
        return None
    if kind in ("time-shift", "replay"):
        return "ms"
    return f"{channel.spec.ucum}/min" if kind == "ramp" else channel.spec.ucum


def _patient_of(ward: Any, device_id: str) -> str:
    return str(ward.device(device_id).patient_id)
