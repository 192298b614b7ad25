"""Virtual devices that sign their packets like real ones, and the bad envelopes attackers send."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, NamedTuple

from medtwin.crypto import sign_packet, signature_suite
from medtwin.domain import Reading, packet_wire


class DeviceRegistration(NamedTuple):
    """What a site must know to accept a device's packets."""

    device_id: str
    patient_id: str
    suite: str
    public_key: bytes


class VirtualDevice:
    """A sensor or pump of one patient, with its own signing key and packet counter.

    `seq` is the sequence number the next packet will carry: 0, 1, 2, … strictly increasing.
    """

    def __init__(self, device_id: str, patient_id: str, suite: str = "ed25519") -> None:
        self.device_id = device_id
        self.patient_id = patient_id
        self.suite = suite
        self._private_key, self.public_key = signature_suite(suite).generate()
        self.seq = 0

    def __repr__(self) -> str:
        return f"VirtualDevice({self.device_id!r}, {self.patient_id!r}, seq={self.seq})"

    @property
    def registration(self) -> DeviceRegistration:
        return DeviceRegistration(self.device_id, self.patient_id, self.suite, self.public_key)

    def packet(self, readings: Sequence[Reading], sent_at_ms: int) -> dict[str, Any]:
        """The signed envelope of the next packet carrying `readings`."""
        wire = packet_wire(self.device_id, self.seq, sent_at_ms, readings)
        self.seq += 1
        return sign_packet(wire, self._private_key, self.suite)


def forged_envelope(device: VirtualDevice, readings: Sequence[Reading],
                    sent_at_ms: int) -> dict[str, Any]:
    """A packet claiming to come from `device` with its next `seq`, signed by another key.

    The device's own counter is untouched: the forger only guesses it.
    """
    attacker_key, _ = signature_suite(device.suite).generate()
    wire = packet_wire(device.device_id, device.seq, sent_at_ms, readings)
    return sign_packet(wire, attacker_key, device.suite)


def replayed_envelope(envelope: dict[str, Any]) -> dict[str, Any]:
    """An earlier envelope sent again unchanged (a copy, so neither can alter the other)."""
    return copy.deepcopy(envelope)


def tampered_envelope(envelope: dict[str, Any], delta: float = 50.0) -> dict[str, Any]:
    """The envelope with its first reading's value shifted by `delta`, signature kept."""
    tampered = copy.deepcopy(envelope)
    readings = tampered["packet"]["readings"]
    if not readings:
        raise ValueError("sim: cannot tamper with a packet without readings")
    readings[0]["value"] = readings[0]["value"] + delta
    return tampered
