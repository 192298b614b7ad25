"""read_ndjson: raw rows out, broken lines reported by number, the rest still read."""

from __future__ import annotations

import calendar
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medtwin.domain import LOINC, SNOMED, Channel
from medtwin.errors import FhirError
from medtwin.fhir import MAX_LINE_BYTES, ImportRow, read_ndjson, read_ndjson_file

DATA = Path(__file__).parent / "data"
T0 = "2024-03-10T08:30:00.250+05:30"
T0_MS = calendar.timegm((2024, 3, 10, 3, 0, 0)) * 1000 + 250


def obs(
    *,
    rid: str | None = "o1",
    code: Any = "8867-4",
    system: str = LOINC,
    patient: str = "Patient/p1",
    time: str | None = T0,
    value: Any = 72.0,
    unit: str | None = "beats/min",
    ucum: str | None = "/min",
    **extra: Any,
) -> dict[str, Any]:
    """An Observation as a client would send it, with any field overridable."""
    res: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": patient},
    }
    if rid is not None:
        res["id"] = rid
    if time is not None:
        res["effectiveDateTime"] = time
    quantity = {k: v for k, v in {"value": value, "unit": unit, "code": ucum}.items()
                if v is not None}
    if ucum is not None:
        quantity["system"] = "http://unitsofmeasure.org"
    res["valueQuantity"] = quantity
    res.update(extra)
    return res


def insulin(**extra: Any) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "MedicationAdministration",
        "id": "m1",
        "status": "completed",
        "medicationCodeableConcept": {"coding": [{"system": SNOMED, "code": "67866001"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": T0,
        "dosage": {"dose": {"value": 4.0, "unit": "U", "system": "http://unitsofmeasure.org",
                            "code": "[IU]"}},
    }
    res.update(extra)
    return res


def lines(*resources: dict[str, Any] | str) -> list[str]:
    return [r if isinstance(r, str) else json.dumps(r) for r in resources]


def test_observation_row_is_raw_and_exact() -> None:
    batch = read_ndjson(lines(obs()))
    assert batch.rows() == [ImportRow("p1", "8867-4", "/min", 72.0, T0_MS, "Observation/o1", 1)]
    assert batch.issues == ()
    assert batch.n_lines == 1


def test_columns_are_arrays_the_gate_can_test() -> None:
    batch = read_ndjson(lines(obs(), obs(rid="o2", code="99504-3", ucum="mg/dL", value=110),
                              insulin()))
    assert len(batch) == 3
    assert batch.values.dtype == np.float64 and batch.time_ms.dtype == np.int64
    assert batch.codes.dtype.kind == batch.units.dtype.kind == batch.patient_ids.dtype.kind == "U"
    expected_units = np.array([Channel.from_code(str(c)).ucum for c in batch.codes])
    assert (batch.units == expected_units).all()
    assert batch.values.tolist() == [72.0, 110.0, 4.0]
    assert batch.lines.tolist() == [1, 2, 3]
    assert batch.sources.tolist() == ["Observation/o1", "Observation/o2",
                                      "MedicationAdministration/m1"]


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2024-03-10T08:30:00.250+05:30", (2024, 3, 10, 3, 0, 0, 250)),
        ("2024-03-09T23:30:00-08:00", (2024, 3, 10, 7, 30, 0, 0)),
        ("2024-01-01T00:00:00Z", (2024, 1, 1, 0, 0, 0, 0)),
        ("2024-01-01T00:00:00+00:00", (2024, 1, 1, 0, 0, 0, 0)),
        ("2024-01-01T00:00:00-00:00", (2024, 1, 1, 0, 0, 0, 0)),
        ("2024-06-01T12:00:00+14:00", (2024, 5, 31, 22, 0, 0, 0)),
        ("2024-02-29T23:15:00-12:45", (2024, 3, 1, 12, 0, 0, 0)),
        # fractions beyond milliseconds are truncated, not rounded
        ("2024-12-31T23:59:59.9999-01:00", (2025, 1, 1, 0, 59, 59, 999)),
        ("1969-12-31T23:59:59.999Z", (1969, 12, 31, 23, 59, 59, 999)),
    ],
)
def test_timezone_offsets_convert_to_utc_epoch_ms(
    text: str, utc: tuple[int, int, int, int, int, int, int]
) -> None:
    expected = calendar.timegm(utc[:6]) * 1000 + utc[6]
    batch = read_ndjson(lines(obs(time=text)))
    assert batch.issues == ()
    assert batch.time_ms.tolist() == [expected]


def test_effective_period_start_and_instant_are_times() -> None:
    batch = read_ndjson(lines(
        obs(time=None, effectivePeriod={"start": T0, "end": "2024-03-10T09:00:00+05:30"}),
        obs(time=None, effectiveInstant=T0),
        insulin(effectiveDateTime=None, effectivePeriod={"start": T0}),
    ))
    assert batch.issues == ()
    assert batch.time_ms.tolist() == [T0_MS] * 3


def test_naive_datetime_is_rejected_with_its_line_number() -> None:
    batch = read_ndjson(lines(obs(rid="a"), obs(rid="b", time="2024-03-10T08:30:00"),
                              obs(rid="c")))
    assert batch.sources.tolist() == ["Observation/a", "Observation/c"]
    (issue,) = batch.issues
    assert (issue.line, issue.source) == (2, "Observation/b")
    assert str(issue) == (
        "line 2 (Observation/b): Observation.effectiveDateTime has no timezone"
        " (naive times are ambiguous)"
    )
    with pytest.raises(FhirError, match=r"^fhir: line 2: Observation/b: .*has no timezone") as e:
        raise issue.error()
    assert e.value.line == 2


@pytest.mark.parametrize(
    ("time", "reason"),
    [
        ("2024-03-10", r"Observation.effectiveDateTime has no time of day"),
        ("2024-03", r"Observation.effectiveDateTime has no time of day"),
        ("2024-03-10T08:30+01:00", r"Observation.effectiveDateTime is not a FHIR dateTime"),
        ("10/03/2024 08:30", r"Observation.effectiveDateTime is not a FHIR dateTime"),
        ("2024-02-30T08:30:00Z", r"Observation.effectiveDateTime is not a valid date and time"),
        ("2024-03-10T08:30:00+24:00", r"is not a valid date and time"),
        ("0001-01-01T00:30:00+01:00", r"is outside the years 0001-9999"),
        (20240310, r"Observation.effectiveDateTime is not a string"),
    ],
)
def test_bad_times_are_issues(time: Any, reason: str) -> None:
    batch = read_ndjson(lines(obs(time=time)))
    assert len(batch) == 0
    (issue,) = batch.issues
    with pytest.raises(FhirError, match=reason):
        raise issue.error()


def test_bad_json_is_reported_and_following_lines_still_read() -> None:
    batch = read_ndjson(["{not json\n", json.dumps(obs(rid="after")) + "\n", "[1, 2]\n",
                         '{"resourceType": "Observation", "valueQuantity": {"value": NaN}}\n',
                         "[" * 100_000 + "\n", json.dumps(obs(rid="last"))])
    assert batch.sources.tolist() == ["Observation/after", "Observation/last"]
    assert batch.lines.tolist() == [2, 6]
    assert [(i.line, i.reason) for i in batch.issues] == [
        (1, "line is not valid JSON"),
        (3, "line is not a JSON object"),
        (4, "line is not valid JSON"),
        (5, "line is not valid JSON"),
    ]


def test_unknown_resource_types_are_skipped_and_counted() -> None:
    batch = read_ndjson(lines(
        {"resourceType": "Patient", "id": "p1"},
        obs(),
        {"resourceType": "Encounter", "id": "e1"},
        {"resourceType": "Patient", "id": "p2"},
        obs(rid="x", status="entered-in-error"),
        insulin(status="not-done"),
        insulin(medicationCodeableConcept={"text": "Metformin 500 mg"}),
        "",
        "   ",
    ))
    assert len(batch) == 1 and batch.issues == ()
    assert batch.skipped == {
        "Patient": 2,
        "Encounter": 1,
        "Observation (entered-in-error)": 1,
        "MedicationAdministration (not-done)": 1,
        "MedicationAdministration (not insulin)": 1,
    }
    assert batch.n_skipped == 6
    assert batch.n_lines == 9


def test_unknown_codes_wrong_units_and_impossible_values_pass_through_raw() -> None:
    batch = read_ndjson(lines(
        obs(rid="a", code="29463-7", ucum="kg", value=80.0),  # body weight: not a channel
        obs(rid="b", ucum="mm[Hg]", value=72.0),  # heart rate in mmHg
        obs(rid="c", value=5000),  # impossible heart rate
        obs(rid="d", ucum=None, unit="bpm"),  # no UCUM code: the unit as given
        obs(rid="e", ucum=None, unit=None),  # no unit at all
        obs(rid="f", system=SNOMED, code="364075005"),  # no LOINC coding
        obs(rid="g", value=-3.5),
    ))
    assert batch.issues == ()
    assert batch.codes.tolist() == ["29463-7", "8867-4", "8867-4", "8867-4", "8867-4", "",
                                    "8867-4"]
    assert batch.units.tolist() == ["kg", "mm[Hg]", "/min", "bpm", "", "/min", "/min"]
    assert batch.values.tolist() == [80.0, 72.0, 5000.0, 72.0, 72.0, 72.0, -3.5]


def test_channel_code_is_preferred_among_codings() -> None:
    resource = obs()
    resource["code"]["coding"] = [
        {"system": "urn:other", "code": "8480-6"},  # right code, wrong system: ignored
        {"system": LOINC, "code": "85354-9"},  # BP panel code: not a channel
        {"system": LOINC, "code": "8867-4"},
    ]
    assert read_ndjson(lines(resource)).codes.tolist() == ["8867-4"]


def test_blood_pressure_panel_gives_one_row_per_component() -> None:
    def comp(code: str, value: float) -> dict[str, Any]:
        return {"code": {"coding": [{"system": LOINC, "code": code}]},
                "valueQuantity": {"value": value, "unit": "mmHg",
                                  "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}

    panel = obs(rid="bp", code="85354-9", component=[comp("8480-6", 121), comp("8462-4", 79),
                                                     {"code": {"text": "no value"}}])
    del panel["valueQuantity"]
    batch = read_ndjson(lines(panel))
    assert [(r.code, r.value, r.source) for r in batch.rows()] == [
        ("8480-6", 121.0, "Observation/bp"), ("8462-4", 79.0, "Observation/bp")]


def test_insulin_units() -> None:
    batch = read_ndjson(lines(
        insulin(id="m1"),
        insulin(id="m2", dosage={"dose": {"value": 2, "unit": "U"}}),  # display only: [IU]
        insulin(id="m3", dosage={"dose": {"value": 2, "unit": "IU"}}),
        insulin(id="m4", dosage={"dose": {"value": 2, "code": "U"}}),  # UCUM enzyme unit
        insulin(id="m5", dosage={"dose": {"value": 2, "unit": "mL"}}),
        insulin(id="m6", medicationCodeableConcept={"text": "Insulin lispro 100 U/mL"}),
        insulin(id="m7", medicationCodeableConcept=None,
                medicationReference={"reference": "Medication/x", "display": "NovoRapid insulin"}),
    ))
    assert batch.issues == ()
    assert batch.codes.tolist() == [Channel.INSULIN.code] * 7
    assert batch.units.tolist() == ["[IU]", "[IU]", "[IU]", "U", "mL", "[IU]", "[IU]"]


@pytest.mark.parametrize(
    ("resource", "reason"),
    [
        (obs(patient="Group/g1"), r"^Observation.subject.reference is not a Patient reference$"),
        (obs(subject=None), r"^Observation.subject.reference is missing$"),
        (obs(subject="Patient/p1"), r"^Observation.subject is not an object$"),
        (obs(time=None), r"^Observation.effective\[x\] is missing$"),
        (obs(value=None), r"^Observation.valueQuantity.value is missing$"),
        (obs(value="72"), r"^Observation.valueQuantity.value is not a number$"),
        (obs(value=True), r"^Observation.valueQuantity.value is not a number$"),
        (obs(value=10**400), r"^Observation.valueQuantity.value is not a finite number$"),
        (obs(valueQuantity=None, valueString="72"), r"^Observation.valueQuantity is missing$"),
        ({**obs(), "code": None}, r"^Observation.code is missing$"),
        (obs(code=5), r"^Observation.code.coding\[0\].code is not a string$"),
        (obs(ucum="x" * 65), r"^Observation.valueQuantity.code is longer than 64 characters$"),
        (obs(status=["final"], code=7),
         r"^Observation.code.coding\[0\].code is not a string$"),
        (obs(valueQuantity={"value": 39, "comparator": "<", "code": "mg/dL"}),
         r"^Observation.valueQuantity.comparator is set"),
        (insulin(dosage={"route": {"text": "SC"}}),
         r"^MedicationAdministration.dosage.dose is missing$"),
        (insulin(medicationCodeableConcept=None),
         r"^MedicationAdministration.medication\[x\] is missing$"),
    ],
)
def test_structurally_broken_resources_are_issues(resource: dict[str, Any], reason: str) -> None:
    resource = {k: v for k, v in resource.items() if v is not None}
    batch = read_ndjson(lines(obs(rid="before"), resource))
    assert batch.sources.tolist() == ["Observation/before"]
    (issue,) = batch.issues
    assert issue.line == 2
    assert issue.source in ("Observation/o1", "MedicationAdministration/m1")
    with pytest.raises(FhirError, match=reason.replace("^", "", 1)):
        raise issue.error()
    assert re.search(reason, issue.reason)


def test_bad_id_and_resource_type_are_issues_without_source() -> None:
    batch = read_ndjson(lines(obs(rid="has space"), {"resourceType": 3}, {"id": "x"}))
    assert [(i.line, i.source, i.reason) for i in batch.issues] == [
        (1, None, "Observation.id is not a valid FHIR id"),
        (2, None, "resourceType is missing or not a FHIR resource type"),
        (3, None, "resourceType is missing or not a FHIR resource type"),
    ]


def test_resources_without_id_get_a_stable_line_id() -> None:
    text = lines(obs(rid="a"), obs(rid=None), insulin(id=None))
    text[2] = json.dumps({k: v for k, v in json.loads(text[2]).items() if k != "id"})
    first, second = read_ndjson(text), read_ndjson(text)
    assert first.sources.tolist() == ["Observation/a", "Observation/line-2",
                                      "MedicationAdministration/line-3"]
    assert second.sources.tolist() == first.sources.tolist()


def test_absolute_and_versioned_patient_references() -> None:
    batch = read_ndjson(lines(
        obs(rid="a", patient="https://ehr.example.org/fhir/Patient/p-7"),
        obs(rid="b", patient="Patient/p-8/_history/3"),
    ))
    assert batch.patient_ids.tolist() == ["p-7", "p-8"]


def test_line_over_the_size_limit_is_refused() -> None:
    padding = "x" * (MAX_LINE_BYTES + 1)
    big = json.dumps(obs(rid="big", note=[{"text": padding}]))
    fits = obs(rid="fits", note=[{"text": "é" * ((MAX_LINE_BYTES - 400) // 2)}])
    batch = read_ndjson([big, json.dumps(fits, ensure_ascii=False), json.dumps(obs(rid="z"))])
    assert batch.sources.tolist() == ["Observation/fits", "Observation/z"]
    assert [(i.line, i.source, i.reason) for i in batch.issues] == [
        (1, None, f"line is longer than {MAX_LINE_BYTES} bytes")]


def test_file_reader_bounds_lines_and_reports_bad_utf8(tmp_path: Path) -> None:
    path = tmp_path / "in.ndjson"
    with path.open("wb") as f:
        f.write(b"\xef\xbb\xbf" + json.dumps(obs(rid="a")).encode() + b"\r\n")
        f.write(b'{"resourceType": "Observation", "note": "' + b"y" * (3 * MAX_LINE_BYTES)
                + b'"}\n')
        f.write(b'{"resourceType": "Observation", "id": "\xff"}\n')
        f.write(json.dumps(obs(rid="d")).encode())  # no final newline
    batch = read_ndjson_file(path)
    assert batch.sources.tolist() == ["Observation/a", "Observation/d"]
    assert batch.lines.tolist() == [1, 4]
    assert [(i.line, i.reason) for i in batch.issues] == [
        (2, f"line is longer than {MAX_LINE_BYTES} bytes"), (3, "line is not valid UTF-8")]
    assert batch.n_lines == 4


def test_fixture_file_of_mixed_real_world_lines() -> None:
    batch = read_ndjson_file(DATA / "mixed.ndjson")
    assert [(r.line, r.code, r.unit, r.value) for r in batch.rows()] == [
        (1, "99504-3", "mg/dL", 142.0),
        (4, "8480-6", "mm[Hg]", 131.0),
        (4, "8462-4", "mm[Hg]", 84.0),
        (6, "67866001", "[IU]", 6.0),
        (9, "8310-5", "Cel", 37.2),
    ]
    assert batch.time_ms.tolist()[0] == calendar.timegm((2024, 5, 1, 6, 0, 0)) * 1000
    assert {(i.line, i.reason) for i in batch.issues} == {
        (2, "Observation.effectiveDateTime has no timezone (naive times are ambiguous)"),
        (5, "line is not valid JSON"),
        (8, "Observation.valueQuantity.comparator is set (a bound is not a reading)"),
    }
    assert batch.skipped == {"Patient": 1, "Device": 1, "MedicationAdministration (not insulin)": 1}


SECRETS = ("S3CRETPATIENT", "987.654", "2031-07-07T07:07", "zzsecretunit", "Metamucil-X")


@pytest.mark.parametrize(
    "resource",
    [
        obs(patient="Group/S3CRETPATIENT", value=987.654),
        obs(patient="Patient/S3CRETPATIENT", time="2031-07-07T07:07:07", value=987.654),
        obs(patient="Patient/S3CRETPATIENT", time="2031-07-07T07:07", unit="zzsecretunit"),
        obs(patient="Patient/S3CRETPATIENT", value="987.654"),
        obs(patient="Patient/S3CRETPATIENT", valueQuantity={"value": 987.654, "comparator": ">"}),
        obs(rid="S3CRETPATIENT 987.654"),
        obs(ucum="zzsecretunit" * 10),
        insulin(subject={"reference": "Patient/S3CRETPATIENT"},
                medicationCodeableConcept={"text": "insulin Metamucil-X"}, dosage={"dose": {}}),
        {"resourceType": "Observation", "id": "x", "valueQuantity": {"value": 987.654},
         "subject": {"reference": "Patient/S3CRETPATIENT"}, "effectiveDateTime": "2031-07-07"},
    ],
)
def test_issue_messages_contain_no_patient_values(resource: dict[str, Any]) -> None:
    batch = read_ndjson(lines(resource, '{"S3CRETPATIENT": 987.654'))
    assert len(batch.issues) == 2
    for issue in batch.issues:
        message = f"{issue} {issue.error()}"
        assert not [s for s in SECRETS if s in message], message
