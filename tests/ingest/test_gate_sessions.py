"""Session packets at the gate: admitted beside signed ones, refused with a clear reason when
replayed, reordered, altered, expired, of an unknown session or of a device that changed,
with one sequence number per device across both kinds."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from medtwin.config import Settings
from medtwin.crypto import seal_frame, sign_packet
from medtwin.domain import Channel, Device, DeviceStatus, Provenance, Reading, RejectReason
from medtwin.errors import GateRejection
from medtwin.ingest import (
    Admitted,
    Gate,
    Refused,
    SessionSubmission,
    SignedSubmission,
    Verdict,
)
from medtwin.ingest._gate import MAX_SESSIONS_PER_DEVICE
from medtwin.sim import SessionDevice

T = 1_767_225_600_000
#: A heart rate no test uses by accident; it must never appear in a rejection.
MARK = 77.123457


def _readings(t: int = T, hr: float = MARK) -> list[Reading]:
    return [Reading(Channel.HEART_RATE, hr, t), Reading(Channel.SPO2, 97.0, t)]


@pytest.fixture
def gate(tmp_path: Path) -> Gate:
    return Gate(Settings(data_dir=tmp_path, clock=lambda: T), sessions=True)


@pytest.fixture
def dev(gate: Gate) -> SessionDevice:
    device = SessionDevice("ecg-1", "pt-1")
    gate.open_session(device.handshake(gate.session_public_key, T), T, _devices(device))
    return device


def _devices(*devs: SessionDevice, **changes: Any) -> dict[str, Device]:
    return {d.device_id: dataclasses.replace(Device(d.device_id, d.patient_id, d.suite,
                                                    d.public_key), **changes) for d in devs}


def _check(gate: Gate, frames: list[bytes | dict[str, Any]], devices: dict[str, Device],
           now: int = T, erased: frozenset[str] = frozenset()) -> list[Verdict]:
    subs = [SessionSubmission(f) if isinstance(f, bytes) else SignedSubmission(f)
            for f in frames]
    return gate.check(subs, now, devices, {"pt-1": object()}, erased)


def _reasons(verdicts: list[Verdict]) -> list[str]:
    return ["ok" if isinstance(v, Admitted) else v.rejection.reason.value for v in verdicts]


def _refusal(verdict: Verdict) -> GateRejection:
    assert isinstance(verdict, Refused)
    assert "77.12" not in verdict.rejection.detail
    return verdict.rejection


def test_session_packets_are_admitted_with_their_packet_bytes(gate: Gate,
                                                              dev: SessionDevice) -> None:
    verdicts = _check(gate, [dev.frame(_readings(), T), dev.frame(_readings(), T)],
                      _devices(dev))
    assert _reasons(verdicts) == ["ok", "ok"]
    first = verdicts[0]
    assert isinstance(first, Admitted) and dev.session is not None
    assert (first.packet.device_id, first.packet.patient_id, first.packet.seq) == ("ecg-1",
                                                                                   "pt-1", 0)
    assert first.packet.provenance is Provenance.DEVICE_SIGNED
    assert first.signature is None and first.session_id == dev.session.session_id
    assert first.signed is not None and b'"device_id":"ecg-1"' in first.signed
    assert list(first.packet.readings.value) == [MARK, 97.0]


def test_a_replayed_or_reordered_frame_is_refused(gate: Gate, dev: SessionDevice) -> None:
    frames = [dev.frame(_readings(), T) for _ in range(3)]
    assert _reasons(_check(gate, [frames[0], frames[2]], _devices(dev))) == ["ok", "ok"]
    verdicts = _check(gate, [frames[2], frames[1], frames[0]], _devices(dev))
    assert _reasons(verdicts) == ["replayed-sequence"] * 3
    assert "sequence 1 is not above 2" in _refusal(verdicts[1]).detail


def test_a_frame_sent_twice_in_one_batch_passes_once(gate: Gate, dev: SessionDevice) -> None:
    frame = dev.frame(_readings(), T)
    assert _reasons(_check(gate, [frame, frame], _devices(dev))) == ["ok", "replayed-sequence"]


def test_signed_and_session_packets_share_the_devices_sequence(gate: Gate,
                                                               dev: SessionDevice) -> None:
    signed = dev.packet(_readings(), T)            # seq 0, signed
    frame = dev.frame(_readings(), T)              # seq 1, in the session
    late_signed = sign_packet({**signed["packet"], "seq": 1}, dev._private_key)
    verdicts = _check(gate, [signed, frame, late_signed], _devices(dev))
    assert _reasons(verdicts) == ["ok", "ok", "replayed-sequence"]
    # the site's persisted last sequence number refuses a frame from before a restart
    old = dev.frame(_readings(), T)                # seq 2
    assert _reasons(_check(gate, [old], _devices(dev, last_seq=2))) == ["replayed-sequence"]


def test_a_restarted_site_knows_no_session(gate: Gate, dev: SessionDevice,
                                           tmp_path: Path) -> None:
    frame = dev.frame(_readings(), T)
    restarted = Gate(Settings(data_dir=tmp_path, clock=lambda: T), sessions=True)
    verdict = _check(restarted, [frame], _devices(dev))[0]
    assert "open a new session" in _refusal(verdict).detail
    assert _refusal(verdict).reason is RejectReason.UNKNOWN_SESSION


def test_a_session_expires_after_its_lifetime(tmp_path: Path) -> None:
    gate = Gate(Settings(data_dir=tmp_path, clock=lambda: T), sessions=True,
                session_lifetime_ms=60_000)
    dev = SessionDevice("ecg-1", "pt-1")
    opened = gate.open_session(dev.handshake(gate.session_public_key, T), T, _devices(dev))
    assert opened.expires_at_ms == T + 60_000
    later = T + 60_000
    verdict = _check(gate, [dev.frame(_readings(later), later)], _devices(dev), now=later)[0]
    assert _refusal(verdict).reason is RejectReason.SESSION_EXPIRED
    assert gate.live_sessions == 0


def test_a_session_expires_after_its_packet_limit(tmp_path: Path) -> None:
    gate = Gate(Settings(data_dir=tmp_path, clock=lambda: T), sessions=True, max_session_packets=2)
    dev = SessionDevice("ecg-1", "pt-1")
    gate.open_session(dev.handshake(gate.session_public_key, T), T, _devices(dev))
    frames = [dev.frame(_readings(), T) for _ in range(3)]
    assert _reasons(_check(gate, frames, _devices(dev))) == ["ok", "ok", "session-expired"]


def test_a_device_whose_key_changed_loses_its_sessions(gate: Gate, dev: SessionDevice) -> None:
    frame = dev.frame(_readings(), T)
    rekeyed = _devices(dev, public_key=bytes(32))
    verdict = _check(gate, [frame], rekeyed)[0]
    assert _refusal(verdict).reason is RejectReason.UNKNOWN_SESSION
    assert "another key" in _refusal(verdict).detail
    assert _reasons(_check(gate, [frame], _devices(dev))) == ["unknown-session"]


def test_quarantined_erased_and_removed_devices_are_treated_as_when_signing(
        gate: Gate, dev: SessionDevice) -> None:
    quarantined = _check(gate, [dev.frame(_readings(), T)],
                         _devices(dev, status=DeviceStatus.QUARANTINED))
    assert _reasons(quarantined) == ["ok"]            # stored; the guard holds its readings
    erased = _check(gate, [dev.frame(_readings(), T)], _devices(dev), erased=frozenset({"pt-1"}))
    assert _reasons(erased) == ["unknown-patient"]
    assert _reasons(_check(gate, [dev.frame(_readings(), T)], {})) == ["unknown-device"]


def test_refused_readings_use_up_the_sequence_number(gate: Gate, dev: SessionDevice) -> None:
    verdict = _check(gate, [dev.frame(_readings(hr=-5.0), T)], _devices(dev))[0]
    assert isinstance(verdict, Refused) and verdict.seq == 0
    assert verdict.rejection.reason is RejectReason.IMPOSSIBLE_VALUE


def test_a_body_of_another_device_or_sequence_is_refused(gate: Gate, dev: SessionDevice) -> None:
    assert dev.session is not None
    wire = {"device_id": "ecg-2", "seq": 0, "sent_at": T,
            "readings": [{"code": "8867-4", "unit": "/min", "value": 70, "time": T}]}
    other_seq = {**wire, "device_id": "ecg-1", "seq": 5}
    frames = [dev.session.seal(wire), seal_frame(dev.session.keys, 6, b"x"),
              seal_frame(dev.session.keys, 7, b"[]")]
    frames.append(seal_frame(dev.session.keys, 8, json.dumps(other_seq).encode()))
    verdicts = _check(gate, frames, _devices(dev))
    assert _reasons(verdicts) == ["malformed"] * 4
    assert "session's device and the frame's sequence" in _refusal(verdicts[0]).detail


def test_clock_skew_of_a_session_packet(gate: Gate, dev: SessionDevice) -> None:
    verdict = _check(gate, [dev.frame(_readings(), T - 3_600_000)], _devices(dev))[0]
    assert _refusal(verdict).reason is RejectReason.CLOCK_SKEW


def test_oversized_and_foreign_frames_are_refused(gate: Gate) -> None:
    verdicts = gate.check([SessionSubmission(b"", 10**6), SessionSubmission(b"MT\x01\x01"),
                           SessionSubmission(b"MS\x01\x01" + bytes(60))], T, {}, {})
    assert _reasons(verdicts) == ["too-large", "malformed", "unknown-session"]


@hyp_settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_altered_or_truncated_frame_is_admitted(tmp_path: Path, data: st.DataObject) -> None:
    gate = Gate(Settings(data_dir=tmp_path, clock=lambda: T), sessions=True)
    dev = SessionDevice("ecg-1", "pt-1")
    gate.open_session(dev.handshake(gate.session_public_key, T), T, _devices(dev))
    frame = bytearray(dev.frame(_readings(), T))
    if data.draw(st.booleans()):
        bit = data.draw(st.integers(0, len(frame) * 8 - 1))
        frame[bit // 8] ^= 1 << (bit % 8)
        bad = bytes(frame)
    else:
        bad = bytes(frame[:data.draw(st.integers(0, len(frame) - 1))])
    (verdict,) = _check(gate, [bad], _devices(dev))
    assert _refusal(verdict).reason in {RejectReason.MALFORMED, RejectReason.UNKNOWN_SESSION,
                                        RejectReason.BAD_SESSION_TAG}
    # the untouched frame still passes: a forgery burns nothing
    assert _reasons(_check(gate, [bytes(dev.frame(_readings(), T))], _devices(dev))) == ["ok"]


# --- handshakes -------------------------------------------------------------------------------


def _open(gate: Gate, envelope: Any, devices: dict[str, Device], now: int = T,
          erased: frozenset[str] = frozenset(), size: int = 0) -> GateRejection:
    with pytest.raises(GateRejection) as caught:
        gate.open_session(envelope, now, devices, erased, size)
    return caught.value


@pytest.mark.parametrize("suite", ["ed25519", "ecdsa-p256", "ml-dsa-65"])
@pytest.mark.parametrize("aead", ["aes-256-gcm", "chacha20-poly1305"])
def test_every_signature_and_aead_suite_opens_a_session(gate: Gate, suite: str,
                                                        aead: str) -> None:
    dev = SessionDevice("ecg-1", "pt-1", suite, aead)
    opened = gate.open_session(dev.handshake(gate.session_public_key, T), T, _devices(dev))
    assert dev.session is not None and opened.session_id == dev.session.session_id
    assert _reasons(_check(gate, [dev.frame(_readings(), T)], _devices(dev))) == ["ok"]


def test_a_handshake_is_refused_with_its_reason(gate: Gate) -> None:
    dev = SessionDevice("ecg-1", "pt-1")
    good = dev.handshake(gate.session_public_key, T)
    devices = _devices(dev)
    stranger = SessionDevice("ecg-1", "pt-1").handshake(gate.session_public_key, T)
    assert _open(gate, stranger, devices).reason is RejectReason.BAD_SIGNATURE
    assert _open(gate, good, {}).reason is RejectReason.UNKNOWN_DEVICE
    assert _open(gate, good, devices, size=10**6).reason is RejectReason.TOO_LARGE
    assert _open(gate, {"handshake": {}}, devices).reason is RejectReason.MALFORMED
    assert _open(gate, {**good, "suite": "rsa"}, devices).reason is RejectReason.UNSUPPORTED_SUITE
    assert _open(gate, good, devices, erased=frozenset({"pt-1"})).reason is (
        RejectReason.UNKNOWN_PATIENT)
    skew = _open(gate, good, devices, now=T + 3_600_000)
    assert skew.reason is RejectReason.CLOCK_SKEW and "from the site clock" in skew.detail
    gate.open_session(good, T, devices)
    replayed = _open(gate, good, devices)
    assert replayed.reason is RejectReason.REPLAYED_SEQUENCE and "already used" in replayed.detail


def test_a_handshake_for_a_previous_site_key_says_to_fetch_the_new_one(gate: Gate,
                                                                      tmp_path: Path) -> None:
    dev = SessionDevice("ecg-1", "pt-1")
    stale = dev.handshake(Gate(Settings(data_dir=tmp_path), sessions=True).session_public_key, T)
    refused = _open(gate, stale, _devices(dev))
    assert refused.reason is RejectReason.UNKNOWN_SESSION
    assert "fetch the current session key" in refused.detail
    assert gate.session_key["site_key"] != stale["handshake"]["site_key"]


def test_a_device_holds_at_most_two_sessions(gate: Gate) -> None:
    dev = SessionDevice("ecg-1", "pt-1")
    senders = []
    for _ in range(MAX_SESSIONS_PER_DEVICE + 1):
        gate.open_session(dev.handshake(gate.session_public_key, T), T, _devices(dev))
        senders.append(dev.session)
    assert gate.live_sessions == MAX_SESSIONS_PER_DEVICE
    dev.session = senders[0]
    assert _reasons(_check(gate, [dev.frame(_readings(), T)], _devices(dev))) == [
        "unknown-session"]
    dev.session = senders[-1]
    assert _reasons(_check(gate, [dev.frame(_readings(), T)], _devices(dev))) == ["ok"]


def test_the_packet_cpu_bench_measures_every_suite_through_the_gate() -> None:
    from medtwin.cli._bench import bench_packet_cpu, packet_cpu_table
    from medtwin.crypto import AEAD_SUITES, SIGNATURE_SUITES

    rows, handshake_s = bench_packet_cpu(60)
    assert [r.kind for r in rows] == ([f"signed, {s}" for s in SIGNATURE_SUITES]
                                      + [f"session, {a}" for a in AEAD_SUITES])
    assert all(r.us_per_packet > 0 for r in rows) and handshake_s > 0
    table = packet_cpu_table(quick=True)
    assert table.row_count == len(rows)
    assert next(iter(table.columns[3].cells)) == "1.0×"          # signed ed25519 vs itself


def test_a_gate_without_sessions_refuses_them_so_nothing_unverifiable_is_stored(
        tmp_path: Path) -> None:
    """The pipeline's gate keeps sessions off until its log verification knows session
    packets (today it requires a device signature on every stored device packet)."""
    plain = Gate(Settings(data_dir=tmp_path, clock=lambda: T))
    dev = SessionDevice("ecg-1", "pt-1")
    refused = _open(plain, dev.handshake(plain.session_public_key, T), _devices(dev))
    assert refused.reason is RejectReason.UNSUPPORTED_SUITE and "send signed" in refused.detail
    verdicts = _check(plain, [dev.frame(_readings(), T), dev.packet(_readings(), T)],
                      _devices(dev))
    assert _reasons(verdicts) == ["unsupported-suite", "ok"]
