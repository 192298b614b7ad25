"""The gate: every deliberately bad packet is refused with its reason, nothing of it is stored,
the refusal is recorded without patient values, and good packets beside bad ones still pass."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from medtwin.config import MAX_PACKET_READINGS, Settings
from medtwin.domain import (
    Channel,
    Device,
    DeviceStatus,
    Provenance,
    Reading,
    RejectReason,
)
from medtwin.errors import GateRejection
from medtwin.ingest import (
    Admitted,
    Gate,
    ImportSubmission,
    Refused,
    SignedSubmission,
    Submission,
)
from medtwin.pipeline import Accepted, Pipeline, Rejected, verify_store

if TYPE_CHECKING:
    from conftest import DeviceSim, FakeClock

#: A heart rate no test uses by accident; it must never appear in a rejection.
MARK = 77.123457
MARK_TEXT = "77.123457"

BadPacket = Callable[["DeviceSim", "FakeClock"], Any]


def _hr(clock: FakeClock, value: float = MARK, dt_s: float = 0) -> list[Reading]:
    return [Reading(Channel.SPO2, 97.0, clock()),
            Reading(Channel.HEART_RATE, value, clock() + int(dt_s * 1000))]


def _with(dev: DeviceSim, clock: FakeClock, edit: Callable[[dict[str, Any]], None],
          sign_after: bool = True) -> dict[str, Any]:
    """A packet edited by `edit`, signed after the edit (or before it, to model tampering)."""
    wire = dev.wire(_hr(clock))
    if sign_after:
        edit(wire)
        return dev.sign(wire)
    envelope = dev.sign(wire)
    edit(envelope["packet"])
    return envelope


def _reading(key: str, value: object) -> Callable[[dict[str, Any]], None]:
    def edit(wire: dict[str, Any]) -> None:
        wire["readings"][1][key] = value
    return edit


def _drop(envelope: dict[str, Any], *path: str) -> dict[str, Any]:
    target = envelope
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return envelope


def _set(envelope: dict[str, Any], value: object, *path: str) -> dict[str, Any]:
    target = envelope
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return envelope


FORGER = hashlib.sha256(b"someone else").digest()  # an Ed25519 private key, not registered

# name: (builder of a raw envelope, reason, pattern the detail must match)
CASES: dict[str, tuple[BadPacket, RejectReason, str]] = {
    "forged signature": (
        lambda d, c: d.envelope(_hr(c), key=FORGER),
        RejectReason.BAD_SIGNATURE,
        r"^signature does not verify with the registered key of device 'vit-1'$"),
    "value changed after signing": (
        lambda d, c: _with(d, c, _reading("value", MARK + 1), sign_after=False),
        RejectReason.BAD_SIGNATURE, r"signature does not verify"),
    "non-base64 signature": (
        lambda d, c: _set(d.envelope(_hr(c)), "not base64 !!", "signature"),
        RejectReason.BAD_SIGNATURE, r"signature does not verify"),
    "truncated signature": (
        lambda d, c: _set(d.envelope(_hr(c)), "AAAA", "signature"),
        RejectReason.BAD_SIGNATURE, r"signature does not verify"),
    "unknown device": (
        lambda d, c: dataclasses.replace(d, device_id="ghost-7").envelope(_hr(c)),
        RejectReason.UNKNOWN_DEVICE, r"^device 'ghost-7' is not registered"),
    "unsupported suite": (
        lambda d, c: _set(d.envelope(_hr(c)), "rsa-pss", "suite"),
        RejectReason.UNSUPPORTED_SUITE,
        r"^signature suite must be one of ecdsa-p256, ed25519, ml-dsa-65$"),
    "wrong unit": (
        lambda d, c: _with(d, c, _reading("unit", "bpm")),
        RejectReason.WRONG_UNIT, r"^reading 1: unit must be '/min' for 8867-4$"),
    "impossible value": (
        lambda d, c: _with(d, c, _reading("value", 977.123457)),
        RejectReason.IMPOSSIBLE_VALUE,
        r"^reading 1: value for 8867-4 is outside the possible range 20–300 /min$"),
    "negative heart rate": (
        lambda d, c: _with(d, c, _reading("value", -MARK)),
        RejectReason.IMPOSSIBLE_VALUE, r"outside the possible range"),
    "unknown channel code": (
        lambda d, c: _with(d, c, _reading("code", "12345-6")),
        RejectReason.UNKNOWN_CHANNEL,
        r"^reading 1: code '12345-6' is not a channel medtwin knows$"),
    "send time behind the clock": (
        lambda d, c: d.envelope(_hr(c), sent_at_ms=c() - 301_000),
        RejectReason.CLOCK_SKEW, r"^send time is 301 s from the site clock \(limit 300 s\)$"),
    "send time ahead of the clock": (
        lambda d, c: d.envelope(_hr(c), sent_at_ms=c() + 3_600_000),
        RejectReason.CLOCK_SKEW, r"^send time is 3600 s from the site clock"),
    "reading time in the future": (
        lambda d, c: d.envelope(_hr(c, dt_s=301)),
        RejectReason.CLOCK_SKEW, r"^reading 1: time is in the future or older than the buffering"),
    "reading older than the buffering limit": (
        lambda d, c: d.envelope(_hr(c, dt_s=-25 * 3600)),
        RejectReason.CLOCK_SKEW, r"^reading 1: time is in the future or older"),
    "missing signature": (
        lambda d, c: _drop(d.envelope(_hr(c)), "signature"),
        RejectReason.MALFORMED, r"^envelope does not match the protocol \(signature: missing\)$"),
    "missing sequence": (
        lambda d, c: _drop(d.envelope(_hr(c)), "packet", "seq"),
        RejectReason.MALFORMED, r"\(packet\.seq: missing\)$"),
    "missing reading value": (
        lambda d, c: _with(d, c, lambda w: w["readings"][1].pop("value")),
        RejectReason.MALFORMED, r"\(packet\.readings\.1\.value: missing\)$"),
    "sequence as a string": (
        lambda d, c: _with(d, c, lambda w: w.update(seq="1")),
        RejectReason.MALFORMED, r"packet\.seq: int_type"),
    "negative sequence": (
        lambda d, c: _with(d, c, lambda w: w.update(seq=-1)),
        RejectReason.MALFORMED, r"packet\.seq: greater_than_equal"),
    "value as a string": (
        lambda d, c: _with(d, c, _reading("value", MARK_TEXT)),
        RejectReason.MALFORMED, r"packet\.readings\.1\.value"),
    "value as a boolean": (
        lambda d, c: _with(d, c, _reading("value", True)),
        RejectReason.MALFORMED, r"packet\.readings\.1\.value"),
    "no readings": (
        lambda d, c: _with(d, c, lambda w: w.update(readings=[])),
        RejectReason.MALFORMED, r"packet\.readings: too_short"),
    "too many readings": (
        lambda d, c: d.envelope([Reading(Channel.HEART_RATE, MARK, c())]
                                * (MAX_PACKET_READINGS + 1)),
        RejectReason.MALFORMED, r"^envelope does not match the protocol \(packet\.readings: "
                                r"too_long\)$"),
    "device id with spaces": (
        lambda d, c: _with(d, c, lambda w: w.update(device_id="vit 1")),
        RejectReason.MALFORMED, r"packet\.device_id: string_pattern_mismatch"),
    "envelope is a list": (
        lambda d, c: [d.envelope(_hr(c))], RejectReason.MALFORMED, r"protocol"),
    "envelope is null": (lambda d, c: None, RejectReason.MALFORMED, r"protocol"),
    "packet is a string": (
        lambda d, c: _set(d.envelope(_hr(c)), MARK_TEXT, "packet"),
        RejectReason.MALFORMED, r"\(packet: "),
}


def _check_rejection(error: GateRejection, reason: RejectReason, pattern: str) -> None:
    assert error.reason is reason
    assert re.search(pattern, error.detail), error.detail
    assert str(error) == f"gate: {reason.value}: {error.detail}"
    with pytest.raises(GateRejection, match=rf"^gate: {re.escape(reason.value)}: "):
        raise error
    assert MARK_TEXT not in str(error) and "77.12" not in str(error)


@pytest.mark.parametrize("case", list(CASES))
def test_pipeline_rejects_and_records_without_storing(
        case: str, pipeline: Pipeline, device: DeviceSim, clock: FakeClock) -> None:
    build, reason, pattern = CASES[case]
    before = pipeline.store.counts()
    tree_before = pipeline.tree_size()
    (outcome,) = pipeline.process([SignedSubmission(build(device, clock))])
    assert isinstance(outcome, Rejected)
    _check_rejection(outcome.error, reason, pattern)
    after = pipeline.store.counts()
    assert after["packets"] == before["packets"] and after["readings"] == before["readings"]
    assert after["rejections"] == before["rejections"] + 1
    assert pipeline.tree_size() == tree_before + 1 == outcome.leaf_index + 1
    (record,) = pipeline.store.rejections(limit=1)
    assert (record.leaf_index, record.reason, record.detail) == (
        outcome.leaf_index, reason.value, outcome.error.detail)
    assert MARK_TEXT not in record.commit_bytes().decode()
    assert pipeline.twin_state("pt-1").channels == ()
    verify_store(pipeline.store, pipeline.keys.log_key_history)


def test_rejection_names_the_claimed_device(pipeline: Pipeline, device: DeviceSim,
                                            clock: FakeClock) -> None:
    pipeline.process([SignedSubmission(CASES["unknown device"][0](device, clock)),
                      SignedSubmission(CASES["forged signature"][0](device, clock)),
                      SignedSubmission(None)])
    assert [r.device_id for r in pipeline.store.rejections()] == [None, "vit-1", "ghost-7"]


def test_quarantined_device_is_stored_but_held(pipeline: Pipeline, device: DeviceSim,
                                              clock: FakeClock) -> None:
    pipeline.set_device_status("vit-1", DeviceStatus.QUARANTINED, "test")
    (outcome,) = pipeline.process([device.submit(_hr(clock))])
    assert isinstance(outcome, Accepted) and outcome.held.all()
    assert np.isnan(outcome.estimates).all()
    assert pipeline.store.counts()["packets"] == 1
    assert not pipeline.twin_state("pt-1").channels        # it moved nothing
    pipeline.release_device("vit-1", "device checked")
    clock.advance(60)
    (outcome,) = pipeline.process([device.submit(_hr(clock))])
    assert isinstance(outcome, Accepted) and not outcome.held.any()
    assert pipeline.twin_state("pt-1").channels


def test_replay_in_a_later_batch(pipeline: Pipeline, device: DeviceSim,
                                 clock: FakeClock) -> None:
    envelope = device.envelope(_hr(clock))
    (first,) = pipeline.process([SignedSubmission(envelope)])
    assert isinstance(first, Accepted)
    (again,) = pipeline.process([SignedSubmission(envelope)])
    assert isinstance(again, Rejected)
    _check_rejection(again.error, RejectReason.REPLAYED_SEQUENCE,
                     r"^sequence 0 is not above 0, the last accepted from this device$")
    assert pipeline.store.counts()["packets"] == 1
    assert pipeline.store.counts()["readings"] == 2


def test_replay_within_one_batch(pipeline: Pipeline, device: DeviceSim,
                                 clock: FakeClock) -> None:
    envelope = device.envelope(_hr(clock))
    older = device.envelope(_hr(clock), seq=0)
    outcomes = pipeline.process([SignedSubmission(envelope), SignedSubmission(envelope),
                                 SignedSubmission(older)])
    assert [type(o) for o in outcomes] == [Accepted, Rejected, Rejected]
    for outcome in outcomes[1:]:
        assert isinstance(outcome, Rejected)
        _check_rejection(outcome.error, RejectReason.REPLAYED_SEQUENCE, r"^sequence 0 ")
    assert pipeline.store.counts()["packets"] == 1


def test_sequence_numbers_may_skip_but_not_go_back(pipeline: Pipeline, device: DeviceSim,
                                                   clock: FakeClock) -> None:
    outcomes = pipeline.process([device.submit(_hr(clock), seq=10),
                                 device.submit(_hr(clock), seq=9),
                                 device.submit(_hr(clock), seq=11)])
    assert [type(o) for o in outcomes] == [Accepted, Rejected, Accepted]
    assert {d.device_id: d.last_seq for d in pipeline.devices()} == {"vit-1": 11}


def test_good_packets_pass_beside_bad_ones(pipeline: Pipeline, device: DeviceSim,
                                           clock: FakeClock) -> None:
    good_1 = device.envelope(device.vitals(hr=80.0))
    bad = [CASES[name][0](device, clock) for name in
           ("forged signature", "impossible value", "wrong unit", "missing signature")]
    clock.advance(60)                    # a second value for the same time would be held
    good_2 = device.envelope(device.vitals(hr=90.0))
    batch = [SignedSubmission(e) for e in [bad[0], good_1, bad[1], good_1, bad[2], good_2,
                                           bad[3]]]
    outcomes = pipeline.process(batch)
    assert [type(o).__name__ for o in outcomes] == [
        "Rejected", "Accepted", "Rejected", "Rejected", "Rejected", "Accepted", "Rejected"]
    assert [o.leaf_index for o in outcomes] == list(range(1, 8))  # #0: the registration
    reasons = [o.error.reason for o in outcomes if isinstance(o, Rejected)]
    assert reasons == [RejectReason.BAD_SIGNATURE, RejectReason.IMPOSSIBLE_VALUE,
                       RejectReason.REPLAYED_SEQUENCE, RejectReason.WRONG_UNIT,
                       RejectReason.MALFORMED]
    counts = pipeline.store.counts()
    assert (counts["packets"], counts["readings"], counts["rejections"]) == (2, 10, 5)
    hr = {c.channel: c for c in pipeline.twin_state("pt-1").channels}[Channel.HEART_RATE]
    assert hr.value == 90.0


def test_packet_with_one_bad_reading_is_refused_whole(pipeline: Pipeline, device: DeviceSim,
                                                      clock: FakeClock) -> None:
    readings = [*device.vitals(hr=MARK), Reading(Channel.GLUCOSE, 5.0, clock())]
    (outcome,) = pipeline.process([device.submit(readings)])
    assert isinstance(outcome, Rejected)
    _check_rejection(outcome.error, RejectReason.IMPOSSIBLE_VALUE, r"^reading 5: value for 99504-3")
    assert pipeline.twin_state("pt-1").channels == ()


@pytest.mark.parametrize("huge", [10**400, -(10**400)])
def test_huge_integer_value_is_refused_not_raised(pipeline: Pipeline, device: DeviceSim,
                                                  clock: FakeClock, huge: int) -> None:
    """A JSON integer beyond float64's exact range is refused, not overflowed or rounded.

    No device can sign it (canonical JSON covers integers to 2**53 - 1), so it is sent as a
    hand-made body, as an attacker would."""
    envelope = _with(device, clock, _reading("value", huge), sign_after=False)
    outcomes = pipeline.process([SignedSubmission(envelope), device.submit(_hr(clock))])
    assert [type(o) for o in outcomes] == [Rejected, Accepted]
    assert isinstance(outcomes[0], Rejected)
    _check_rejection(outcomes[0].error, RejectReason.MALFORMED,
                     r"packet\.readings\.1\.value\.constrained-int: (less|greater)_than_equal")


@pytest.mark.parametrize("large", [2**31, 2**52, 2**53 - 1])
def test_large_integer_value_fails_the_range_check(pipeline: Pipeline, device: DeviceSim,
                                                   clock: FakeClock, large: int) -> None:
    (outcome,) = pipeline.process([SignedSubmission(_with(device, clock,
                                                          _reading("value", large)))])
    assert isinstance(outcome, Rejected)
    assert outcome.error.reason is RejectReason.IMPOSSIBLE_VALUE


@pytest.mark.parametrize("unsafe", [2**53, 2**53 + 1, 2**70])
def test_integers_beyond_canonical_json_are_malformed(pipeline: Pipeline, device: DeviceSim,
                                                      clock: FakeClock, unsafe: int) -> None:
    envelope = _with(device, clock, _reading("value", unsafe), sign_after=False)
    (outcome,) = pipeline.process([SignedSubmission(envelope)])
    assert isinstance(outcome, Rejected)
    assert outcome.error.reason is RejectReason.MALFORMED


# Imports ---------------------------------------------------------------------------------------

def _import(patient_id: str, clock: FakeClock, unit: str = "mg/dL") -> ImportSubmission:
    return ImportSubmission(patient_id, "cgm.ndjson", 1, ["99504-3", "99504-3"], [unit, unit],
                            np.array([110.0, MARK]), np.array([clock() - 60_000, clock()]))


def test_import_for_unknown_patient_is_refused(pipeline: Pipeline, patient_id: str,
                                               clock: FakeClock) -> None:
    (outcome,) = pipeline.process([_import("pt-404", clock)])
    assert isinstance(outcome, Rejected)
    _check_rejection(outcome.error, RejectReason.UNKNOWN_PATIENT,
                     r"^the import names a patient that is not registered$")
    assert "pt-404" not in outcome.error.detail
    assert pipeline.store.counts()["packets"] == 0
    assert pipeline.store.rejections()[0].device_id == "import:cgm.ndjson"


def test_import_for_known_patient_is_accepted(pipeline: Pipeline, patient_id: str,
                                              clock: FakeClock) -> None:
    (outcome,) = pipeline.process([_import(patient_id, clock)])
    assert isinstance(outcome, Accepted) and outcome.n_readings == 2
    (record,) = pipeline.store.packets()
    assert record.provenance == Provenance.TRUSTED_IMPORT.value and record.signature is None


def test_import_readings_are_checked(pipeline: Pipeline, patient_id: str,
                                     clock: FakeClock) -> None:
    (outcome,) = pipeline.process([_import(patient_id, clock, unit="mmol/L")])
    assert isinstance(outcome, Rejected)
    _check_rejection(outcome.error, RejectReason.WRONG_UNIT,
                     r"^reading 0: unit must be 'mg/dL' for 99504-3$")


# The gate on its own ---------------------------------------------------------------------------

@pytest.fixture
def gate(settings: Settings) -> Gate:
    return Gate(settings)


@pytest.fixture
def sim(make_device: Callable[..., DeviceSim]) -> DeviceSim:
    return make_device("vit-1", "pt-1", seed="gate device")


def _check(gate: Gate, sim: DeviceSim, clock: FakeClock, subs: list[Submission],
           device: Device | None = None) -> list[Admitted | Refused]:
    devices = {"vit-1": device or sim.device}
    return gate.check(subs, clock(), devices, {"pt-1": object()})


@pytest.mark.parametrize("case", [c for c in CASES if c != "unknown device"])
def test_gate_check_refuses(case: str, gate: Gate, sim: DeviceSim, clock: FakeClock) -> None:
    build, reason, pattern = CASES[case]
    (verdict,) = _check(gate, sim, clock, [SignedSubmission(build(sim, clock))])
    assert isinstance(verdict, Refused)
    _check_rejection(verdict.rejection, reason, pattern)


def test_gate_check_refuses_unknown_devices(gate: Gate, sim: DeviceSim, clock: FakeClock) -> None:
    (verdict,) = gate.check([sim.submit(_hr(clock))], clock(), {}, {})
    assert isinstance(verdict, Refused) and verdict.device_id == "vit-1"
    assert verdict.rejection.reason is RejectReason.UNKNOWN_DEVICE


def test_gate_check_admits_a_good_packet(gate: Gate, sim: DeviceSim, clock: FakeClock) -> None:
    readings = sim.vitals(hr=MARK)
    (verdict,) = _check(gate, sim, clock, [sim.submit(readings, seq=4)])
    assert isinstance(verdict, Admitted)
    packet = verdict.packet
    assert (packet.device_id, packet.patient_id, packet.seq, packet.sent_at_ms) == (
        "vit-1", "pt-1", 4, clock())
    assert packet.provenance is Provenance.DEVICE_SIGNED
    assert packet.readings.readings() == readings
    assert verdict.signature is not None and len(verdict.signature) == 64


def test_gate_check_uses_the_devices_last_sequence(gate: Gate, sim: DeviceSim,
                                                   clock: FakeClock) -> None:
    seen = Device("vit-1", "pt-1", "ed25519", sim.public_key, last_seq=5)
    verdicts = _check(gate, sim, clock, [sim.submit(_hr(clock), seq=5),
                                         sim.submit(_hr(clock), seq=6)], seen)
    assert [type(v) for v in verdicts] == [Refused, Admitted]


def test_gate_check_keeps_no_state(gate: Gate, sim: DeviceSim, clock: FakeClock) -> None:
    envelope = sim.envelope(_hr(clock))
    for _ in range(2):
        (verdict,) = _check(gate, sim, clock, [SignedSubmission(envelope)])
        assert isinstance(verdict, Admitted)


def test_gate_honours_the_configured_skew(settings: Settings, sim: DeviceSim,
                                          clock: FakeClock) -> None:
    strict = Gate(settings.with_(max_clock_skew_s=10.0))
    verdicts = _check(strict, sim, clock, [sim.submit(_hr(clock), sent_at_ms=clock() - 9_000),
                                           sim.submit(_hr(clock), sent_at_ms=clock() - 11_000)])
    assert [type(v) for v in verdicts] == [Admitted, Refused]
