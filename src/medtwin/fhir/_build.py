"""Builders of the FHIR R4 resources medtwin writes, as plain JSON dicts.

Every builder checks the ids and references it is given and that numbers are finite, and
raises `FhirError` (naming the field, never its value) rather than emit an invalid resource.
Empty lists are left out, as FHIR JSON forbids them.

Alert evidence has no typed home in R4, so it is carried losslessly in `DetectedIssue.evidence`:
one entry per key, sorted, each with `code = [{coding: [{system: EVIDENCE_SYSTEM, code: key}],
text: canonical JSON of the value}]`.  References among the evidence go in `implicated`.

Predicted glucose (`forecast_observation`, `simulation_observation`) is an Observation of the
CGM glucose code with `method` `forecast` or `simulation`; its 95 % prediction interval and
horizon are `component`s coded in `PREDICTION_SYSTEM` (`lower-95`, `upper-95` in mg/dL,
`horizon` in min), not a `referenceRange`, which readers show as a normal range.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from medtwin.domain import (
    SNOMED,
    Alert,
    Channel,
    Finding,
    Reading,
    RejectReason,
    Severity,
    canonical_json,
)
from medtwin.domain import Provenance as ProvenanceKind
from medtwin.errors import FhirError
from medtwin.fhir._codes import (
    ACTIVITY_SYSTEM,
    CODE,
    EVIDENCE_SYSTEM,
    FINDING_SYSTEM,
    GATE_SYSTEM,
    GUARD_EXTENSION,
    GUARD_SYSTEM,
    ID,
    METHOD_SYSTEM,
    OBSERVATION_CATEGORY,
    PARTICIPANT_TYPE,
    PREDICTION_SYSTEM,
    REFERENCE,
    UCUM,
)
from medtwin.fhir._time import format_time_ms

#: DetectedIssue.severity (required binding: high | moderate | low) of each alert severity.
DETECTED_ISSUE_SEVERITY: dict[Severity, str] = {
    Severity.HIGH: "high",
    Severity.MEDIUM: "moderate",
    Severity.LOW: "low",
}
#: Confidence from which a guard finding's DetectedIssue is `high` severity (a finding that
#: quarantined its device is `high` whatever its confidence) ...
GUARD_HIGH_CONFIDENCE = 0.9
#: ... and from which it is `moderate`; below it `low`.
GUARD_MODERATE_CONFIDENCE = 0.5
#: Observation category of each channel (glucose is a laboratory value, meals are reported).
_CATEGORY: dict[Channel, tuple[str, str]] = {
    **{c: ("vital-signs", "Vital Signs") for c in Channel},
    Channel.GLUCOSE: ("laboratory", "Laboratory"),
    Channel.CARBS: ("survey", "Survey"),
    Channel.INSULIN: ("therapy", "Therapy"),
}


def estimate_observation(
    patient_id: str,
    channel: Channel,
    value: float,
    time_ms: int,
    derived_from: Sequence[str],
    resource_id: str,
    method_code: str = "twin-estimate",
) -> dict[str, Any]:
    """A preliminary Observation of a value the twin estimated, citing the inputs it used."""
    resource = _observation(patient_id, channel, value, time_ms, resource_id, "preliminary")
    if derived_from:
        resource["derivedFrom"] = _references(derived_from, "Observation.derivedFrom")
    resource["method"] = {
        "coding": [{"system": METHOD_SYSTEM, "code": _code(method_code, "Observation.method")}]
    }
    return resource


def forecast_observation(
    patient_id: str,
    mean_mg_dl: float,
    low_mg_dl: float,
    high_mg_dl: float,
    issued_ms: int,
    target_ms: int,
    horizon_min: float,
    derived_from: Sequence[str],
    resource_id: str,
) -> dict[str, Any]:
    """A preliminary Observation of glucose forecast for `target_ms` with its 95 % interval.

    `issued` is the time of the latest input the forecast used, `effectiveDateTime` the
    target time, `valueQuantity` the mean (mg/dL); components `lower-95`, `upper-95` (mg/dL)
    and `horizon` (min) in `PREDICTION_SYSTEM`; `method` is `forecast` in `METHOD_SYSTEM`.
    Status `preliminary`: it is not a measurement, so a consumer listing final results never
    shows it as one (as `estimate_observation`).
    """
    return _prediction("forecast", patient_id, mean_mg_dl, low_mg_dl, high_mg_dl, issued_ms,
                       target_ms, horizon_min, derived_from, resource_id)


def simulation_observation(
    patient_id: str,
    mean_mg_dl: float,
    low_mg_dl: float,
    high_mg_dl: float,
    issued_ms: int,
    target_ms: int,
    horizon_min: float,
    derived_from: Sequence[str],
    resource_id: str,
) -> dict[str, Any]:
    """A preliminary Observation of one point of a what-if glucose trajectory (glucose under a
    hypothetical future of meals and insulin): as `forecast_observation`, `method` coded
    `simulation`; `horizon` counts from the end of the history the twin was run on."""
    return _prediction("simulation", patient_id, mean_mg_dl, low_mg_dl, high_mg_dl, issued_ms,
                       target_ms, horizon_min, derived_from, resource_id)


def reading_observation(patient_id: str, reading: Reading, resource_id: str) -> dict[str, Any]:
    """A final Observation of a measured reading (input NDJSON for tests and simulators)."""
    if reading.channel is Channel.INSULIN:
        raise ValueError("insulin doses are MedicationAdministrations: use insulin_administration")
    return _observation(
        patient_id, reading.channel, reading.value, reading.time_ms, resource_id, "final"
    )


def insulin_administration(
    patient_id: str, reading: Reading, resource_id: str
) -> dict[str, Any]:
    """A completed MedicationAdministration of an insulin dose (input NDJSON)."""
    if reading.channel is not Channel.INSULIN:
        raise ValueError("insulin_administration needs a Channel.INSULIN reading")
    spec = Channel.INSULIN.spec
    return {
        "resourceType": "MedicationAdministration",
        "id": _id(resource_id, "MedicationAdministration.id"),
        "status": "completed",
        "medicationCodeableConcept": {
            "coding": [{"system": SNOMED, "code": spec.code, "display": spec.display}],
            "text": spec.display,
        },
        "subject": _patient(patient_id, "MedicationAdministration.subject"),
        "effectiveDateTime": _time(reading.time_ms, "MedicationAdministration.effectiveDateTime"),
        "dosage": {
            "dose": _quantity(reading.value, Channel.INSULIN,
                              "MedicationAdministration.dosage.dose"),
        },
    }


def alert_detected_issue(
    alert: Alert,
    resource_id: str,
    implicated: Sequence[str],
    status: Literal["preliminary", "final"] = "preliminary",
) -> dict[str, Any]:
    """A DetectedIssue of a clinical alert: rule, severity, summary and its evidence."""
    resource: dict[str, Any] = {
        "resourceType": "DetectedIssue",
        "id": _id(resource_id, "DetectedIssue.id"),
        "status": status,
        "code": {
            "coding": [{"system": FINDING_SYSTEM, "code": _code(alert.rule, "DetectedIssue.code")}],
            "text": alert.rule,
        },
        "severity": DETECTED_ISSUE_SEVERITY[alert.severity],
        "patient": _patient(alert.patient_id, "DetectedIssue.patient"),
        "identifiedDateTime": _time(alert.time_ms, "DetectedIssue.identifiedDateTime"),
    }
    if implicated:
        resource["implicated"] = _references(implicated, "DetectedIssue.implicated")
    if alert.summary:
        resource["detail"] = alert.summary
    if alert.evidence:
        resource["evidence"] = _evidence(alert.evidence)
    return resource


def finding_detected_issue(
    finding: Finding, resource_id: str, implicated: Sequence[str]
) -> dict[str, Any]:
    """A preliminary DetectedIssue of a guard finding: its code in `GUARD_SYSTEM`, the readings
    it implicates, the summary and its evidence (as `alert_detected_issue`).

    Severity is `high` for a finding that quarantined its device or whose confidence reaches
    `GUARD_HIGH_CONFIDENCE`, `moderate` from `GUARD_MODERATE_CONFIDENCE`, else `low`. What R4
    has no element for travels in extensions `GUARD_EXTENSION` + `confidence` (decimal),
    `detector`, `device` (string), `since` (dateTime), `quarantined` (boolean) and `channel`
    (the channel's code; absent for a finding on a device's behaviour).
    """
    confidence = finding.confidence
    if isinstance(confidence, bool) or not math.isfinite(confidence) or not (
            0.0 <= confidence <= 1.0):
        raise FhirError("DetectedIssue.extension[confidence]: not a number in [0, 1]")
    if finding.quarantined or confidence >= GUARD_HIGH_CONFIDENCE:
        severity = "high"
    else:
        severity = "moderate" if confidence >= GUARD_MODERATE_CONFIDENCE else "low"
    code = _code(str(finding.code.value), "DetectedIssue.code")
    extension: list[dict[str, Any]] = [
        {"url": f"{GUARD_EXTENSION}confidence", "valueDecimal": float(confidence)},
        {"url": f"{GUARD_EXTENSION}since",
         "valueDateTime": _time(finding.since_ms, "DetectedIssue.extension[since]")},
        {"url": f"{GUARD_EXTENSION}quarantined", "valueBoolean": bool(finding.quarantined)},
    ]
    for name, text in (("detector", finding.detector), ("device", finding.device_id)):
        if text.strip():
            extension.append({"url": f"{GUARD_EXTENSION}{name}", "valueString": text})
    if finding.channel is not None:
        spec = finding.channel.spec
        extension.append({"url": f"{GUARD_EXTENSION}channel", "valueCodeableConcept": {
            "coding": [{"system": spec.system, "code": spec.code, "display": spec.display}],
            "text": spec.display}})
    resource: dict[str, Any] = {
        "resourceType": "DetectedIssue",
        "id": _id(resource_id, "DetectedIssue.id"),
        "extension": extension,
        "status": "preliminary",
        "code": {"coding": [{"system": GUARD_SYSTEM, "code": code}], "text": code},
        "severity": severity,
        "patient": _patient(finding.patient_id, "DetectedIssue.patient"),
        "identifiedDateTime": _time(finding.time_ms, "DetectedIssue.identifiedDateTime"),
    }
    if implicated:
        resource["implicated"] = _references(implicated, "DetectedIssue.implicated")
    if finding.summary.strip():
        resource["detail"] = finding.summary
    if finding.evidence:
        resource["evidence"] = _evidence(finding.evidence)
    return resource


def rejection_detected_issue(
    reason: RejectReason,
    detail: str,
    patient_id: str | None,
    time_ms: int,
    implicated: Sequence[str],
    resource_id: str,
) -> dict[str, Any]:
    """A final DetectedIssue recording why the gate refused input (`detail` holds no values)."""
    resource: dict[str, Any] = {
        "resourceType": "DetectedIssue",
        "id": _id(resource_id, "DetectedIssue.id"),
        "status": "final",
        "code": {
            "coding": [{"system": GATE_SYSTEM, "code": reason.value}],
            "text": reason.value,
        },
    }
    if patient_id is not None:
        resource["patient"] = _patient(patient_id, "DetectedIssue.patient")
    resource["identifiedDateTime"] = _time(time_ms, "DetectedIssue.identifiedDateTime")
    if implicated:
        resource["implicated"] = _references(implicated, "DetectedIssue.implicated")
    if detail:
        resource["detail"] = detail
    return resource


def provenance(
    target_refs: Sequence[str],
    recorded_ms: int,
    source_name: str,
    activity: str = ProvenanceKind.TRUSTED_IMPORT.value,
    *,
    resource_id: str | None = None,
) -> dict[str, Any]:
    """A Provenance saying medtwin assembled `target_refs` from `source_name`, unsigned."""
    if not target_refs:
        raise FhirError("Provenance.target: at least one target is required")
    if not source_name.strip():
        raise FhirError("Provenance.entity: source name is empty")
    resource: dict[str, Any] = {"resourceType": "Provenance"}
    if resource_id is not None:
        resource["id"] = _id(resource_id, "Provenance.id")
    resource |= {
        "target": _references(target_refs, "Provenance.target"),
        "recorded": _time(recorded_ms, "Provenance.recorded"),
        "activity": {
            "coding": [{"system": ACTIVITY_SYSTEM, "code": _code(activity, "Provenance.activity")}]
        },
        "agent": [{
            "type": {"coding": [{"system": PARTICIPANT_TYPE, "code": "assembler",
                                 "display": "Assembler"}]},
            "who": {"display": "medtwin"},
        }],
        "entity": [{"role": "source", "what": {"display": source_name}}],
    }
    return resource


def _observation(
    patient_id: str, channel: Channel, value: float, time_ms: int, resource_id: str, status: str
) -> dict[str, Any]:
    spec = channel.spec
    category, category_display = _CATEGORY[channel]
    return {
        "resourceType": "Observation",
        "id": _id(resource_id, "Observation.id"),
        "status": status,
        "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": category,
                                  "display": category_display}]}],
        "code": {
            "coding": [{"system": spec.system, "code": spec.code, "display": spec.display}],
            "text": spec.display,
        },
        "subject": _patient(patient_id, "Observation.subject"),
        "effectiveDateTime": _time(time_ms, "Observation.effectiveDateTime"),
        "valueQuantity": _quantity(value, channel, "Observation.valueQuantity"),
    }


def _prediction(
    method_code: str,
    patient_id: str,
    mean_mg_dl: float,
    low_mg_dl: float,
    high_mg_dl: float,
    issued_ms: int,
    target_ms: int,
    horizon_min: float,
    derived_from: Sequence[str],
    resource_id: str,
) -> dict[str, Any]:
    """The Observation of a predicted glucose (see `forecast_observation`)."""
    resource = _observation(patient_id, Channel.GLUCOSE, mean_mg_dl, target_ms, resource_id,
                            "preliminary")
    low = _quantity(low_mg_dl, Channel.GLUCOSE, "Observation.component[lower-95].valueQuantity")
    high = _quantity(high_mg_dl, Channel.GLUCOSE,
                     "Observation.component[upper-95].valueQuantity")
    if not low["value"] <= resource["valueQuantity"]["value"] <= high["value"]:
        raise FhirError("Observation.component: the 95 % interval does not hold the value")
    if isinstance(horizon_min, bool) or not math.isfinite(horizon_min) or horizon_min < 0:
        raise FhirError("Observation.component[horizon].valueQuantity.value: not a finite "
                        "number of minutes >= 0")
    resource["issued"] = _time(issued_ms, "Observation.issued")
    if derived_from:
        resource["derivedFrom"] = _references(derived_from, "Observation.derivedFrom")
    resource["method"] = {
        "coding": [{"system": METHOD_SYSTEM, "code": method_code}], "text": method_code,
    }
    resource["component"] = [
        _component("lower-95", "95% prediction interval, lower bound", low),
        _component("upper-95", "95% prediction interval, upper bound", high),
        _component("horizon", "Prediction horizon", {
            "value": float(horizon_min), "unit": "min", "system": UCUM, "code": "min"}),
    ]
    return resource


def _component(code: str, display: str, quantity: dict[str, Any]) -> dict[str, Any]:
    return {
        "code": {"coding": [{"system": PREDICTION_SYSTEM, "code": code, "display": display}],
                 "text": display},
        "valueQuantity": quantity,
    }


def _quantity(value: float, channel: Channel, path: str) -> dict[str, Any]:
    if isinstance(value, bool) or not math.isfinite(value):
        raise FhirError(f"{path}.value: not a finite number")
    spec = channel.spec
    return {"value": float(value), "unit": spec.unit_display, "system": UCUM, "code": spec.ucum}


def _id(resource_id: str, path: str) -> str:
    if not ID.fullmatch(resource_id):
        raise FhirError(f"{path}: not a valid FHIR id")
    return resource_id


def _code(code: str, path: str) -> str:
    if not CODE.fullmatch(code):
        raise FhirError(f"{path}: not a valid FHIR code")
    return code


def _patient(patient_id: str, path: str) -> dict[str, str]:
    if not ID.fullmatch(patient_id):
        raise FhirError(f"{path}: patient id is not a valid FHIR id")
    return {"reference": f"Patient/{patient_id}"}


def _references(refs: Sequence[str], path: str) -> list[dict[str, str]]:
    if isinstance(refs, str):
        raise TypeError(f"{path}: references must be a sequence of str, not one str")
    for i, ref in enumerate(refs):
        if not REFERENCE.fullmatch(ref):
            raise FhirError(f"{path}[{i}]: not a relative reference Type/id")
    return [{"reference": ref} for ref in refs]


def _time(time_ms: int, path: str) -> str:
    try:
        return format_time_ms(int(time_ms))
    except ValueError as exc:
        raise FhirError(f"{path}: {exc}") from None


def _evidence(evidence: dict[str, Any]) -> list[dict[str, Any]]:
    """`DetectedIssue.evidence`: one entry per key, sorted, its value as canonical JSON."""
    return [
        {"code": [{
            "coding": [{"system": EVIDENCE_SYSTEM,
                        "code": _code(key, "DetectedIssue.evidence.code")}],
            "text": _evidence_text(key, evidence[key]),
        }]}
        for key in sorted(evidence)
    ]


def _evidence_text(key: str, value: Any) -> str:
    try:
        return canonical_json(value).decode("utf-8")
    except (TypeError, ValueError):
        raise FhirError(
            f"DetectedIssue.evidence: evidence {key!r} is not finite JSON"
        ) from None
