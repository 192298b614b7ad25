"""Builders: every resource validates as R4 and says what medtwin means, nothing more."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

import medtwin.fhir
from medtwin.domain import LOINC, SNOMED, Alert, Channel, Reading, RejectReason, Severity
from medtwin.errors import FhirError
from medtwin.fhir import (
    ACTIVITY_SYSTEM,
    EVIDENCE_SYSTEM,
    FINDING_SYSTEM,
    GATE_SYSTEM,
    METHOD_SYSTEM,
    UCUM,
    alert_detected_issue,
    estimate_observation,
    insulin_administration,
    provenance,
    reading_observation,
    rejection_detected_issue,
    validate_resource,
    write_ndjson,
)

T = 1_714_550_400_123  # 2024-05-01T08:00:00.123Z
T_ISO = "2024-05-01T08:00:00.123Z"
ALERT = Alert(
    patient_id="pat-001",
    rule="predicted-hypoglycaemia",
    severity=Severity.HIGH,
    time_ms=T,
    summary="Glucose predicted below 70 mg/dL within 30 min",
    evidence={"predicted_mgdl": 61.5, "horizon_min": 30, "inputs": ["cgm", "insulin"],
              "model": {"name": "ukf", "version": 2}},
)


def all_built() -> list[dict[str, Any]]:
    """One of every resource the builders make, in each variant."""
    out: list[dict[str, Any]] = []
    for ch in Channel:
        reading = Reading(ch, 4.25, T)
        if ch is Channel.INSULIN:
            out.append(insulin_administration("pat-001", reading, f"in-{ch.value}"))
        else:
            out.append(reading_observation("pat-001", reading, f"in-{ch.value}"))
        out.append(estimate_observation("pat-001", ch, 4.25, T, [f"Observation/in-{ch.value}"],
                                        f"est-{ch.value}"))
    out.append(estimate_observation("pat-001", Channel.GLUCOSE, 90.0, T, [], "est-bare",
                                    method_code="forecast-30min"))
    for sev in Severity:
        alert = Alert("pat-001", "news2", sev, T, "NEWS2 score 7", {"score": 7})
        out.append(alert_detected_issue(alert, f"alert-{sev.value}", ["Observation/est-1"]))
    out.append(alert_detected_issue(ALERT, "alert-final", [], status="final"))
    out.append(alert_detected_issue(Alert("pat-001", "r", Severity.LOW, T, ""), "alert-bare", []))
    for i, reason in enumerate(RejectReason):
        out.append(rejection_detected_issue(reason, "line 3: unit is not the channel's", "p1", T,
                                            ["Observation/line-3"], f"rej-{i}"))
    out.append(rejection_detected_issue(RejectReason.MALFORMED, "", None, T, [], "rej-bare"))
    out.append(provenance(["Observation/a", "MedicationAdministration/b"], T, "in.ndjson"))
    out.append(provenance(["Observation/a"], T, "sim", activity="simulation", resource_id="pv"))
    return out


def _label(resource: dict[str, Any]) -> str:
    return f"{resource['resourceType']}-{resource.get('id')}"


@pytest.mark.parametrize("resource", all_built(), ids=_label)
def test_every_builder_output_validates_as_r4(resource: dict[str, Any]) -> None:
    validate_resource(resource)
    # plain JSON: survives a JSON round trip unchanged, no empty values anywhere
    assert json.loads(json.dumps(resource, allow_nan=False)) == resource


def test_estimate_observation_content() -> None:
    res = estimate_observation("pat-001", Channel.HEART_RATE, 71.5, T,
                               ["Observation/a", "Observation/b"], "est-1")
    assert res["status"] == "preliminary"
    assert res["category"][0]["coding"][0]["code"] == "vital-signs"
    assert res["code"]["coding"] == [{"system": LOINC, "code": "8867-4", "display": "Heart rate"}]
    assert res["subject"] == {"reference": "Patient/pat-001"}
    assert res["effectiveDateTime"] == T_ISO
    assert res["valueQuantity"] == {"value": 71.5, "unit": "beats/min", "system": UCUM,
                                    "code": "/min"}
    assert res["derivedFrom"] == [{"reference": "Observation/a"}, {"reference": "Observation/b"}]
    assert res["method"] == {"coding": [{"system": METHOD_SYSTEM, "code": "twin-estimate"}]}
    glucose = estimate_observation("p", Channel.GLUCOSE, 100.0, T, [], "g")
    assert glucose["category"][0]["coding"][0]["code"] == "laboratory"
    assert "derivedFrom" not in glucose


def test_reading_and_insulin_inputs() -> None:
    obs = reading_observation("p", Reading(Channel.TEMPERATURE, 37.0, T), "t")
    assert obs["status"] == "final" and "method" not in obs
    assert obs["valueQuantity"] == {"value": 37.0, "unit": "°C", "system": UCUM, "code": "Cel"}
    med = insulin_administration("p", Reading(Channel.INSULIN, 3.0, T), "m")
    assert med["status"] == "completed"
    assert med["medicationCodeableConcept"]["coding"][0] == {
        "system": SNOMED, "code": "67866001", "display": "Insulin"}
    assert med["dosage"]["dose"] == {"value": 3.0, "unit": "U", "system": UCUM, "code": "[IU]"}
    assert med["effectiveDateTime"] == T_ISO
    with pytest.raises(ValueError, match="use insulin_administration"):
        reading_observation("p", Reading(Channel.INSULIN, 3.0, T), "x")
    with pytest.raises(ValueError, match=r"needs a Channel\.INSULIN reading"):
        insulin_administration("p", Reading(Channel.GLUCOSE, 3.0, T), "x")


def test_alert_detected_issue_content_and_evidence_round_trip() -> None:
    res = alert_detected_issue(ALERT, "a1", ["Observation/est-9"])
    assert res["status"] == "preliminary"
    assert res["code"]["coding"] == [{"system": FINDING_SYSTEM, "code": ALERT.rule}]
    assert res["severity"] == "high"
    assert res["patient"] == {"reference": "Patient/pat-001"}
    assert res["identifiedDateTime"] == T_ISO
    assert res["implicated"] == [{"reference": "Observation/est-9"}]
    assert res["detail"] == ALERT.summary
    decoded = {}
    for entry in res["evidence"]:
        (concept,) = entry["code"]
        (coding,) = concept["coding"]
        assert coding["system"] == EVIDENCE_SYSTEM
        decoded[coding["code"]] = json.loads(concept["text"])
    assert decoded == ALERT.evidence
    assert [e["code"][0]["coding"][0]["code"] for e in res["evidence"]] == sorted(ALERT.evidence)


@pytest.mark.parametrize(
    ("severity", "fhir"), [(Severity.HIGH, "high"), (Severity.MEDIUM, "moderate"),
                           (Severity.LOW, "low")])
def test_severity_mapping(severity: Severity, fhir: str) -> None:
    alert = Alert("p", "r", severity, T, "s")
    assert alert_detected_issue(alert, "a", [])["severity"] == fhir


def test_rejection_detected_issue_content() -> None:
    res = rejection_detected_issue(RejectReason.IMPOSSIBLE_VALUE, "line 7: outside the channel's "
                                   "possible range", "pat-001", T, ["Observation/line-7"], "rej-7")
    assert res["status"] == "final"
    assert res["code"]["coding"] == [{"system": GATE_SYSTEM, "code": "impossible-value"}]
    assert res["patient"] == {"reference": "Patient/pat-001"}
    assert res["identifiedDateTime"] == T_ISO
    assert res["implicated"] == [{"reference": "Observation/line-7"}]
    assert res["detail"] == "line 7: outside the channel's possible range"
    bare = rejection_detected_issue(RejectReason.MALFORMED, "", None, T, [], "rej-0")
    assert not {"patient", "implicated", "detail"} & bare.keys()


def test_provenance_says_trusted_import_without_signatures() -> None:
    res = provenance(["Observation/a"], T, "in.ndjson")
    assert res["target"] == [{"reference": "Observation/a"}]
    assert res["recorded"] == T_ISO
    assert res["activity"]["coding"] == [{"system": ACTIVITY_SYSTEM, "code": "trusted-import"}]
    assert res["entity"] == [{"role": "source", "what": {"display": "in.ndjson"}}]
    assert "signature" not in res and "id" not in res


SECRET_VALUE = 98765.4321


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: reading_observation("pat 1", Reading(Channel.HEART_RATE, 1.0, T), "x"),
         r"^fhir: Observation.subject: patient id is not a valid FHIR id$"),
        (lambda: reading_observation("p", Reading(Channel.HEART_RATE, math.nan, T), "x"),
         r"^fhir: Observation.valueQuantity.value: not a finite number$"),
        (lambda: estimate_observation("p", Channel.SPO2, math.inf, T, [], "x"),
         r"^fhir: Observation.valueQuantity.value: not a finite number$"),
        (lambda: insulin_administration("p", Reading(Channel.INSULIN, -math.inf, T), "x"),
         r"^fhir: MedicationAdministration.dosage.dose.value: not a finite number$"),
        (lambda: estimate_observation("p", Channel.SPO2, 1.0, T, ["Patient/a b"], "x"),
         r"^fhir: Observation.derivedFrom\[0\]: not a relative reference Type/id$"),
        (lambda: estimate_observation("p", Channel.SPO2, 1.0, T, [], "x", method_code=" a"),
         r"^fhir: Observation.method: not a valid FHIR code$"),
        (lambda: estimate_observation("p", Channel.SPO2, 1.0, T, [], "x/y"),
         r"^fhir: Observation.id: not a valid FHIR id$"),
        (lambda: reading_observation("p", Reading(Channel.SPO2, 1.0, 10**15), "x"),
         r"^fhir: Observation.effectiveDateTime: time is outside the years 0001-9999$"),
        (lambda: alert_detected_issue(Alert("p", "r", Severity.LOW, T, "s",
                                            {"level": math.nan}), "x", []),
         r"^fhir: DetectedIssue.evidence: evidence 'level' is not finite JSON$"),
        (lambda: alert_detected_issue(Alert("p", "r r  r", Severity.LOW, T, "s"), "x", []),
         r"^fhir: DetectedIssue.code: not a valid FHIR code$"),
        (lambda: rejection_detected_issue(RejectReason.MALFORMED, "", "p", T, ["line-3"], "x"),
         r"^fhir: DetectedIssue.implicated\[0\]: not a relative reference Type/id$"),
        (lambda: provenance([], T, "in.ndjson"),
         r"^fhir: Provenance.target: at least one target is required$"),
        (lambda: provenance(["Observation/a"], T, " "),
         r"^fhir: Provenance.entity: source name is empty$"),
    ],
)
def test_builder_errors_name_the_field(build: Any, message: str) -> None:
    with pytest.raises(FhirError, match=message):
        build()


def test_builder_errors_contain_no_values() -> None:
    with pytest.raises(FhirError) as exc:
        reading_observation("S3CRET 7", Reading(Channel.GLUCOSE, SECRET_VALUE, T), "x")
    assert "S3CRET" not in str(exc.value)
    with pytest.raises(FhirError) as exc:
        alert_detected_issue(Alert("p", "r", Severity.LOW, T, "s", {"k": [SECRET_VALUE, math.inf]}),
                             "x", [])
    assert str(SECRET_VALUE) not in str(exc.value)


def test_references_must_be_a_sequence_not_one_string() -> None:
    with pytest.raises(TypeError, match="not one str"):
        estimate_observation("p", Channel.SPO2, 1.0, T, "Observation/a", "x")


def test_validate_resource_reports_locations_not_values() -> None:
    bad = reading_observation("p", Reading(Channel.GLUCOSE, 100.0, T), "o")
    bad["valueQuantity"]["value"] = f"S3CRET{SECRET_VALUE}"
    bad["subject"] = {"reference": 42}
    del bad["status"]
    with pytest.raises(FhirError, match=r"^fhir: validate: Observation is not valid R4: ") as exc:
        validate_resource(bad)
    message = str(exc.value)
    assert "valueQuantity.value (" in message
    assert "subject.reference (" in message
    assert "S3CRET" not in message and str(SECRET_VALUE) not in message and "42" not in message
    del bad["valueQuantity"], bad["subject"]
    with pytest.raises(FhirError, match=r"R4: status \(model_field_validation.missing\)$"):
        validate_resource(bad)


@pytest.mark.parametrize(
    ("resource", "message"),
    [
        ({"status": "final"}, r"^fhir: validate: resourceType is missing"),
        ({"resourceType": "Nope"}, r"^fhir: validate: Nope is not an R4 resource type$"),
        ({"resourceType": "Quantity", "value": 1}, r"Quantity is not an R4 resource type$"),
        ({"resourceType": "Provenance", "recorded": T_ISO},
         r"^fhir: validate: Provenance is not valid R4: agent \(missing\); target \(missing\)$"),
        ({"resourceType": "DetectedIssue", "id": "d", "status": "final", "implicated": []},
         r"^fhir: validate: DetectedIssue is not valid R4: implicated \(empty\)$"),
        ({"resourceType": "DetectedIssue", "status": "final", "detail": "",
          "code": {"coding": [{"code": None}]}},
         r"^fhir: validate: DetectedIssue is not valid R4: detail \(empty\); "
         r"code.coding.0.code \(empty\)$"),
        ({"resourceType": "Observation", "id": "o", "status": "final", "code": {"text": "x"},
          "favourite": "S3CRET"},
         r"^fhir: validate: Observation is not valid R4: favourite \(extra_forbidden\)$"),
    ],
)
def test_validate_resource_refuses(resource: dict[str, Any], message: str) -> None:
    with pytest.raises(FhirError, match=message):
        validate_resource(resource)


def test_validate_resource_caps_the_error_list() -> None:
    bad = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
           **{f"extra{i}": 1 for i in range(15)}}
    with pytest.raises(FhirError, match=r"extra9 \(extra_forbidden\); and 5 more$"):
        validate_resource(bad)


def test_write_ndjson_writes_compact_utf8_lines(tmp_path: Path) -> None:
    resources = all_built()
    path = tmp_path / "Observation.ndjson"
    assert write_ndjson(path, iter(resources)) == len(resources)
    raw = path.read_bytes()
    assert "°C".encode() in raw  # UTF-8, not \u escapes
    text = raw.decode("utf-8").split("\n")
    assert text[-1] == "" and len(text) == len(resources) + 1
    for line, resource in zip(text, resources, strict=False):
        assert line == json.dumps(resource, ensure_ascii=False, separators=(",", ":"))
    assert list(tmp_path.iterdir()) == [path]
    assert path.stat().st_mode & 0o777 == 0o600  # patient data: owner only
    assert write_ndjson(tmp_path / "empty.ndjson", []) == 0
    assert (tmp_path / "empty.ndjson").read_bytes() == b""


def test_write_ndjson_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "DetectedIssue.ndjson"
    path.write_text("previous\n")

    def failing() -> Any:
        yield {"resourceType": "Basic"}
        raise RuntimeError("source failed")

    with pytest.raises(RuntimeError, match="source failed"):
        write_ndjson(path, failing())
    with pytest.raises(FhirError, match=r"^fhir: write: resource 2 is not finite JSON$"):
        write_ndjson(path, [{"resourceType": "Basic"}, {"value": math.nan}])
    assert path.read_text() == "previous\n"
    assert list(tmp_path.iterdir()) == [path]


def test_exported_names_are_exactly_the_public_ones() -> None:
    public = {n for n in vars(medtwin.fhir) if not n.startswith("_")}
    assert set(medtwin.fhir.__all__) == public
    assert medtwin.fhir.__all__ == sorted(
        medtwin.fhir.__all__, key=lambda n: (not n.isupper(), not n[0].isupper(), n))
