"""Guard findings as FHIR DetectedIssues: valid R4 for any finding, and every field findable."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from medtwin.domain import Channel, Finding, FindingCode, canonical_json
from medtwin.errors import FhirError
from medtwin.fhir import (
    EVIDENCE_SYSTEM,
    GUARD_EXTENSION,
    GUARD_HIGH_CONFIDENCE,
    GUARD_MODERATE_CONFIDENCE,
    GUARD_SYSTEM,
    finding_detected_issue,
    validate_resource,
)

T = 1_767_225_600_000  # 2026-01-01T00:00:00Z
FINDING = Finding(
    patient_id="pt-0001", device_id="cgm-0001", code=FindingCode.SPOOFING_SUSPECTED,
    channel=Channel.GLUCOSE, confidence=0.8, time_ms=T, since_ms=T - 30 * 60_000,
    detector="residual-cusum", summary="Glucose reads about 40 mg/dL above the twin's estimate",
    evidence={"expected": 121.5, "observed": 161.0, "statistic": 14.2, "threshold": 8.0,
              "channels": ["99504-3"], "would_clear": "a reading within 20 mg/dL"},
)

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(-1e15, 1e15) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=8)
_printable = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80)
_ids = st.from_regex(r"[A-Za-z0-9\-.]{1,64}", fullmatch=True)
_keys = st.from_regex(r"[a-z_]{1,12}", fullmatch=True)
findings = st.builds(
    Finding,
    patient_id=_ids, device_id=_printable, code=st.sampled_from(FindingCode),
    channel=st.none() | st.sampled_from(Channel),
    confidence=st.floats(0.0, 1.0), time_ms=st.integers(0, 4_102_444_800_000),
    since_ms=st.integers(0, 4_102_444_800_000), detector=_printable, summary=_printable,
    evidence=st.dictionaries(_keys, _json, max_size=6), quarantined=st.booleans(),
)


def _extensions(resource: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for ext in resource["extension"]:
        assert ext["url"].startswith(GUARD_EXTENSION)
        (value_key,) = (k for k in ext if k.startswith("value"))
        out[ext["url"].removeprefix(GUARD_EXTENSION)] = ext[value_key]
    return out


@given(findings, st.lists(_ids.map(lambda i: f"Observation/{i}"), max_size=4))
def test_any_finding_is_a_valid_r4_detected_issue(finding: Finding,
                                                  implicated: list[str]) -> None:
    resource = finding_detected_issue(finding, "guard-1", implicated)
    validate_resource(resource)
    assert json.loads(json.dumps(resource, allow_nan=False)) == resource
    assert resource["code"]["coding"] == [{"system": GUARD_SYSTEM, "code": finding.code.value}]
    assert resource["patient"] == {"reference": f"Patient/{finding.patient_id}"}
    assert [r["reference"] for r in resource.get("implicated", [])] == implicated
    decoded = {e["code"][0]["coding"][0]["code"]: json.loads(e["code"][0]["text"])
               for e in resource.get("evidence", [])}
    assert canonical_json(decoded) == canonical_json(finding.evidence)  # lossless
    assert _extensions(resource)["confidence"] == finding.confidence


def test_finding_content() -> None:
    res = finding_detected_issue(FINDING, "guard-7", ["Observation/a", "Observation/b"])
    validate_resource(res)
    assert res["status"] == "preliminary"
    assert res["code"] == {"coding": [{"system": GUARD_SYSTEM, "code": "spoofing-suspected"}],
                           "text": "spoofing-suspected"}
    assert res["identifiedDateTime"] == "2026-01-01T00:00:00.000Z"
    assert res["implicated"] == [{"reference": "Observation/a"}, {"reference": "Observation/b"}]
    assert res["detail"] == FINDING.summary
    assert [e["code"][0]["coding"][0]["system"] for e in res["evidence"]] == (
        [EVIDENCE_SYSTEM] * len(FINDING.evidence))
    assert [e["code"][0]["coding"][0]["code"] for e in res["evidence"]] == sorted(
        FINDING.evidence)
    ext = _extensions(res)
    assert ext["confidence"] == 0.8
    assert ext["since"] == "2025-12-31T23:30:00.000Z"
    assert ext["detector"] == "residual-cusum"
    assert ext["device"] == "cgm-0001"
    assert ext["quarantined"] is False
    assert ext["channel"]["coding"][0]["code"] == Channel.GLUCOSE.code


def test_device_behaviour_finding_has_no_channel_and_no_empty_fields() -> None:
    finding = Finding("pt-0002", "rogue-0001", FindingCode.DEVICE_BEHAVIOUR, None, 0.97, T, T,
                      "behaviour", "", {})
    res = finding_detected_issue(finding, "guard-2", [])
    validate_resource(res)
    assert "channel" not in _extensions(res)
    assert not {"implicated", "detail", "evidence"} & set(res)


@pytest.mark.parametrize(("confidence", "quarantined", "severity"), [
    (GUARD_HIGH_CONFIDENCE, False, "high"),
    (0.1, True, "high"),
    (GUARD_HIGH_CONFIDENCE - 0.01, False, "moderate"),
    (GUARD_MODERATE_CONFIDENCE, False, "moderate"),
    (GUARD_MODERATE_CONFIDENCE - 0.01, False, "low"),
])
def test_severity_follows_confidence_and_quarantine(confidence: float, quarantined: bool,
                                                    severity: str) -> None:
    finding = Finding("p", "d", FindingCode.SENSOR_FAULT, Channel.HEART_RATE, confidence, T, T,
                      "freeze", "stuck", quarantined=quarantined)
    assert finding_detected_issue(finding, "g", [])["severity"] == severity


@pytest.mark.parametrize(("change", "message"), [
    ({"confidence": 1.5}, r"extension\[confidence\]: not a number in \[0, 1\]"),
    ({"confidence": float("nan")}, r"extension\[confidence\]"),
    ({"patient_id": "pt 1"}, r"DetectedIssue\.patient: patient id is not a valid FHIR id"),
    ({"evidence": {"observed": float("inf")}}, r"evidence 'observed' is not finite JSON"),
    ({"evidence": {"two  spaces": 1}}, r"DetectedIssue\.evidence\.code: not a valid FHIR code"),
])
def test_invalid_findings_raise_fhir_error_without_values(change: dict[str, Any],
                                                          message: str) -> None:
    fields = {f: getattr(FINDING, f) for f in FINDING.__slots__}  # type: ignore[attr-defined]
    with pytest.raises(FhirError, match=message):
        finding_detected_issue(Finding(**(fields | change)), "g", [])


def test_implicated_must_be_relative_references() -> None:
    with pytest.raises(FhirError, match=r"implicated\[0\]: not a relative reference"):
        finding_detected_issue(FINDING, "g", ["not a reference"])
    with pytest.raises(FhirError, match=r"DetectedIssue\.id: not a valid FHIR id"):
        finding_detected_issue(FINDING, "bad id", [])
