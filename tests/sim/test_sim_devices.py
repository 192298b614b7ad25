"""Virtual devices sign verifiable packets; forged and tampered packets do not verify."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from medtwin.crypto import verify_signature
from medtwin.domain import Channel, Reading, packet_signing_message
from medtwin.errors import SignatureError
from medtwin.sim import (
    DeviceRegistration,
    VirtualDevice,
    forged_envelope,
    replayed_envelope,
    tampered_envelope,
)

T0 = 1_709_532_000_000
READINGS = [Reading(Channel.HEART_RATE, 72.0, T0), Reading(Channel.SPO2, 97.0, T0)]


def verify(envelope: dict[str, Any], public_key: bytes) -> None:
    """What the gate does: raise SignatureError unless the device's key signed the packet."""
    verify_signature(envelope["suite"], public_key, packet_signing_message(envelope["packet"]),
                     base64.b64decode(envelope["signature"]))


def test_packets_verify_and_carry_the_readings() -> None:
    device = VirtualDevice("vit-0001", "pt-0001")
    envelope = device.packet(READINGS, T0 + 500)
    verify(envelope, device.public_key)
    assert envelope["suite"] == "ed25519"
    assert envelope["packet"] == {
        "device_id": "vit-0001", "seq": 0, "sent_at": T0 + 500,
        "readings": [{"code": "8867-4", "unit": "/min", "value": 72.0, "time": T0},
                     {"code": "59408-5", "unit": "%", "value": 97.0, "time": T0}],
    }


def test_seq_strictly_increases_from_zero() -> None:
    device = VirtualDevice("cgm-0001", "pt-0001")
    assert [device.packet(READINGS, T0)["packet"]["seq"] for _ in range(4)] == [0, 1, 2, 3]
    assert device.seq == 4


def test_registration_names_device_patient_suite_and_key() -> None:
    device = VirtualDevice("bp-0002", "pt-0002")
    device_id, patient_id, suite, public_key = device.registration
    assert (device_id, patient_id, suite) == ("bp-0002", "pt-0002", "ed25519")
    assert public_key == device.public_key and len(public_key) == 32
    assert isinstance(device.registration, DeviceRegistration)
    assert VirtualDevice("bp-0002", "pt-0002").public_key != public_key  # own key each
    assert "private" not in repr(device) and base64.b64encode(public_key).decode() not in repr(
        device)


def test_other_devices_key_does_not_verify() -> None:
    device, other = VirtualDevice("a", "pt-0001"), VirtualDevice("b", "pt-0001")
    with pytest.raises(SignatureError, match="crypto: ed25519 signature does not verify"):
        verify(device.packet(READINGS, T0), other.public_key)


def test_forged_envelope_fails_and_leaves_the_device_counter() -> None:
    device = VirtualDevice("pump-0003", "pt-0003")
    device.packet(READINGS, T0)
    forged = forged_envelope(device, [Reading(Channel.INSULIN, 25.0, T0 + 1)], T0 + 1)
    assert forged["packet"]["device_id"] == "pump-0003"
    assert forged["packet"]["seq"] == 1 and device.seq == 1  # guesses the next seq
    with pytest.raises(SignatureError, match="does not verify"):
        verify(forged, device.public_key)


def test_replayed_envelope_is_an_unchanged_copy_that_still_verifies() -> None:
    device = VirtualDevice("vit-0004", "pt-0004")
    original = device.packet(READINGS, T0)
    replay = replayed_envelope(original)
    assert replay == original and replay is not original
    verify(replay, device.public_key)  # only the seq check can stop a replay
    replay["packet"]["readings"][0]["value"] = 1.0
    assert original["packet"]["readings"][0]["value"] == 72.0


def test_tampered_envelope_fails() -> None:
    device = VirtualDevice("vit-0005", "pt-0005")
    original = device.packet(READINGS, T0)
    tampered = tampered_envelope(original, delta=30.0)
    assert tampered["packet"]["readings"][0]["value"] == 102.0
    assert original["packet"]["readings"][0]["value"] == 72.0
    with pytest.raises(SignatureError):
        verify(tampered, device.public_key)
    with pytest.raises(ValueError, match="sim: cannot tamper with a packet without readings"):
        tampered_envelope(device.packet([], T0))
