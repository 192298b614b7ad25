"""Properties: readings -> resources -> NDJSON -> read_ndjson gives the same rows back, and no
input line, however mangled, stops the reader or yields more than one outcome."""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medtwin.domain import Channel, Reading
from medtwin.fhir import (
    ImportRow,
    insulin_administration,
    read_ndjson,
    read_ndjson_file,
    reading_observation,
    validate_resource,
    write_ndjson,
)
from medtwin.fhir._time import MAX_TIME_MS, MIN_TIME_MS

fhir_ids = st.from_regex(r"[A-Za-z0-9\-.]{1,64}", fullmatch=True)
readings = st.builds(
    Reading,
    channel=st.sampled_from(Channel),
    value=st.floats(allow_nan=False, allow_infinity=False),
    time_ms=st.integers(MIN_TIME_MS, MAX_TIME_MS),
)


def resource_of(patient_id: str, reading: Reading, resource_id: str) -> dict[str, Any]:
    if reading.channel is Channel.INSULIN:
        return insulin_administration(patient_id, reading, resource_id)
    return reading_observation(patient_id, reading, resource_id)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(fhir_ids, readings, fhir_ids), max_size=12))
def test_readings_round_trip_through_ndjson(items: list[tuple[str, Reading, str]]) -> None:
    resources = [resource_of(p, r, rid) for p, r, rid in items]
    for resource in resources:
        validate_resource(resource)
    expected = [
        ImportRow(p, r.channel.code, r.channel.ucum, r.value, r.time_ms,
                  f"{res['resourceType']}/{rid}", line)
        for line, ((p, r, rid), res) in enumerate(zip(items, resources, strict=True), start=1)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.ndjson"
        assert write_ndjson(path, resources) == len(resources)
        from_file = read_ndjson_file(path)
        from_lines = read_ndjson(path.read_text(encoding="utf-8").splitlines(keepends=True))
    for batch in (from_file, from_lines):
        assert batch.issues == () and dict(batch.skipped) == {}
        assert batch.rows() == expected
        # same float bits, not merely equal (-0.0 stays -0.0)
        assert [v.hex() for v in batch.values.tolist()] == [r.value.hex() for _, r, _ in items]


json_scalars = (st.none() | st.booleans() | st.integers() | st.text(max_size=12)
                | st.floats(allow_nan=False, allow_infinity=False))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=8,
)
PATHS: list[tuple[str | int, ...]] = [
    ("resourceType",), ("id",), ("status",), ("subject",), ("subject", "reference"),
    ("code",), ("code", "coding"), ("code", "coding", 0), ("code", "coding", 0, "code"),
    ("code", "coding", 0, "system"), ("effectiveDateTime",), ("effectivePeriod",),
    ("effectiveInstant",), ("valueQuantity",), ("valueQuantity", "value"),
    ("valueQuantity", "unit"), ("valueQuantity", "code"), ("valueQuantity", "comparator"),
    ("component",), ("medicationCodeableConcept",), ("medicationCodeableConcept", "coding"),
    ("medicationCodeableConcept", "text"), ("medicationReference",), ("dosage",),
    ("dosage", "dose"), ("dosage", "dose", "value"), ("dosage", "dose", "unit"),
]


def mangle(resource: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(resource)
    node: Any = out
    for key in path[:-1]:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return out
    fits_list = isinstance(node, list) and isinstance(path[-1], int) and path[-1] < len(node)
    if isinstance(node, dict) or fits_list:
        node[path[-1]] = value
    return out


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(readings, st.sampled_from(PATHS), json_values, st.booleans()),
        min_size=1, max_size=8,
    )
)
def test_mangled_lines_never_stop_the_reader(
    cases: list[tuple[Reading, tuple[str | int, ...], Any, bool]],
) -> None:
    lines = []
    for reading, path, value, delete in cases:
        resource = resource_of("p1", reading, "r1")
        if delete and path[-1] in resource:
            del resource[path[-1]]
        else:
            resource = mangle(resource, path, value)
        lines.append(json.dumps(resource))
    batch = read_ndjson(lines)
    issue_lines = [i.line for i in batch.issues]
    row_lines = set(batch.lines.tolist())
    # every line has exactly one outcome: rows, an issue, or a skip
    assert not row_lines & set(issue_lines)
    assert len(issue_lines) == len(set(issue_lines))
    assert len(row_lines) + len(issue_lines) + batch.n_skipped == len(lines)
    assert all(len(c) <= 64 for c in batch.codes.tolist() + batch.units.tolist())
