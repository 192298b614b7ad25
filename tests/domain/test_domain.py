"""Channels carry the codes and units of the specification; canonical JSON is one encoding."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medtwin.domain import (
    LOINC,
    N_CHANNELS,
    PACKET_SIGNING_CONTEXT,
    POSSIBLE_MAX,
    POSSIBLE_MIN,
    SNOMED,
    VITAL_CHANNELS,
    Channel,
    Reading,
    ReadingBatch,
    canonical_json,
    packet_signing_message,
    packet_wire,
)

SPEC = [
    (Channel.GLUCOSE, "99504-3", LOINC, "mg/dL", False),
    (Channel.HEART_RATE, "8867-4", LOINC, "/min", False),
    (Channel.SPO2, "59408-5", LOINC, "%", False),
    (Channel.RESP_RATE, "9279-1", LOINC, "/min", False),
    (Channel.SYSTOLIC_BP, "8480-6", LOINC, "mm[Hg]", False),
    (Channel.DIASTOLIC_BP, "8462-4", LOINC, "mm[Hg]", False),
    (Channel.TEMPERATURE, "8310-5", LOINC, "Cel", False),
    (Channel.CARBS, "9059-7", LOINC, "g", True),
    (Channel.INSULIN, "67866001", SNOMED, "[IU]", True),
]


@pytest.mark.parametrize(("channel", "code", "system", "ucum", "is_input"), SPEC)
def test_channel_coding(channel: Channel, code: str, system: str, ucum: str,
                        is_input: bool) -> None:
    assert (channel.code, channel.spec.system, channel.ucum, channel.is_input) == (
        code, system, ucum, is_input)
    assert Channel.from_code(code) is channel


def test_every_channel_is_specified_once() -> None:
    assert [row[0] for row in SPEC] == list(Channel)
    assert len(SPEC) == N_CHANNELS
    assert tuple(row[0] for row in SPEC if not row[4]) == VITAL_CHANNELS


def test_unknown_code_raises_key_error() -> None:
    with pytest.raises(KeyError):
        Channel.from_code("0000-0")


def test_possible_limits_are_ordered_and_indexed_by_channel() -> None:
    assert POSSIBLE_MIN.shape == POSSIBLE_MAX.shape == (N_CHANNELS,)
    assert np.all(POSSIBLE_MIN < POSSIBLE_MAX)
    for channel in Channel:
        assert POSSIBLE_MIN[channel] == channel.spec.possible_min
        assert POSSIBLE_MAX[channel] == channel.spec.possible_max


def test_canonical_json_is_sorted_compact_utf8() -> None:
    assert canonical_json({"b": 1, "a": [1, 2.5], "c": {"z": None, "y": "°C"}}) == (
        '{"a":[1,2.5],"b":1,"c":{"y":"°C","z":null}}'.encode())


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 2**53 + 1])
def test_canonical_json_refuses_non_finite_numbers(bad: float) -> None:
    with pytest.raises(ValueError, match=r"^canonical JSON: "):
        canonical_json({"value": bad})


def test_canonical_json_is_rfc_8785() -> None:
    # ECMAScript number forms (RFC 8785 §3.2.2.3): what a JavaScript or C device produces.
    assert canonical_json({"v": [72.0, 1e-7, 1e21, 0.1, -0.0]}) == b'{"v":[72,1e-7,1e+21,0.1,0]}'
    assert canonical_json({"\u00e9": 1, "z": 2, "a": 3}) == '{"a":3,"z":2,"é":1}'.encode()


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.text(max_size=5),
                       st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=5)
                       | st.floats(-(2.0**53) + 1, 2.0**53 - 1),
                       max_size=6))
def test_canonical_json_round_trips_and_ignores_insertion_order(obj: dict[str, object]) -> None:
    encoded = canonical_json(obj)
    assert json.loads(encoded) == obj
    assert canonical_json(dict(reversed(list(obj.items())))) == encoded
    assert encoded == canonical_json(json.loads(encoded))


def test_packet_wire_and_signing_message() -> None:
    readings = [Reading(Channel.HEART_RATE, 72.5, 1000), Reading(Channel.INSULIN, 2, 2000)]
    wire = packet_wire("dev-1", 7, 3000, readings)
    assert wire == {"device_id": "dev-1", "seq": 7, "sent_at": 3000, "readings": [
        {"code": "8867-4", "unit": "/min", "value": 72.5, "time": 1000},
        {"code": "67866001", "unit": "[IU]", "value": 2, "time": 2000}]}
    assert packet_signing_message(wire) == PACKET_SIGNING_CONTEXT + canonical_json(wire)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(list(Channel)),
                          st.floats(allow_nan=False, allow_infinity=False),
                          st.integers(min_value=0, max_value=2**62)), max_size=20))
def test_reading_batch_round_trip(rows: list[tuple[Channel, float, int]]) -> None:
    readings = [Reading(c, v, t) for c, v, t in rows]
    batch = ReadingBatch.from_readings(readings)
    assert len(batch) == len(readings)
    assert batch.channel.dtype == np.int8 and batch.value.dtype == np.float64
    assert batch.time_ms.dtype == np.int64
    assert batch.readings() == readings
