"""Plaintext encodings of what the store keeps sealed: a packet's readings, an alert, a finding.

A packet payload starts with a tag: 0x01 readings as fixed-width columns (trusted imports),
0x02 the exact bytes a device signed (so its signature can be checked again at any time).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from medtwin.domain import (
    Alert,
    Channel,
    Finding,
    FindingCode,
    ReadingBatch,
    Severity,
    canonical_json,
)
from medtwin.ingest import signed_packet_readings

_READINGS_HEADER = struct.Struct(">BI")  # version, number of readings
_READINGS_VERSION = 1


def encode_readings(batch: ReadingBatch) -> bytes:
    """Readings as fixed-width columns: exact values, compact, fast to seal and open."""
    return (_READINGS_HEADER.pack(_READINGS_VERSION, len(batch))
            + batch.channel.astype(">i1").tobytes() + batch.value.astype(">f8").tobytes()
            + batch.time_ms.astype(">i8").tobytes())


SIGNED_PACKET_TAG = b"\x02"
#: Where a signed packet's record keeps its signature, a session packet's keeps this mark and
#: the 16-byte id of the logged session whose key authenticated it.
SESSION_MARK = b"session:"


def encode_signed_packet(signed: bytes) -> bytes:
    """The payload of a device packet: the bytes its signature covers."""
    return SIGNED_PACKET_TAG + signed


def signed_bytes(payload: bytes) -> bytes | None:
    """The signed bytes inside a device packet's payload; None for an import's."""
    return payload[1:] if payload[:1] == SIGNED_PACKET_TAG else None


def decode_payload(payload: bytes) -> ReadingBatch:
    """The readings of a stored packet payload, whichever its encoding."""
    signed = signed_bytes(payload)
    return signed_packet_readings(signed) if signed is not None else decode_readings(payload)


def decode_readings(data: bytes) -> ReadingBatch:
    version, n = _READINGS_HEADER.unpack_from(data)
    if version != _READINGS_VERSION or len(data) != _READINGS_HEADER.size + 17 * n:
        raise ValueError("readings: unknown encoding version or truncated data")
    at = _READINGS_HEADER.size
    channel = np.frombuffer(data, ">i1", n, at).astype(np.int8)
    value = np.frombuffer(data, ">f8", n, at + n).astype(np.float64)
    time_ms = np.frombuffer(data, ">i8", n, at + 9 * n).astype(np.int64)
    return ReadingBatch(channel, value, time_ms)


def packet_aad(leaf_index: int, patient_id: str) -> bytes:
    """Binds a packet's ciphertext to its record, so it cannot be moved to another."""
    return f"medtwin/packet/{leaf_index}/{patient_id}".encode()


def alert_aad(leaf_index: int, patient_id: str) -> bytes:
    return f"medtwin/alert/{leaf_index}/{patient_id}".encode()


def encode_alert(alert: Alert) -> bytes:
    return canonical_json({"summary": alert.summary, "evidence": alert.evidence})


def decode_alert(data: bytes, patient_id: str, rule: str, severity: str, time_ms: int) -> Alert:
    body: dict[str, Any] = json.loads(data)
    return Alert(patient_id, rule, Severity(severity), time_ms, body["summary"], body["evidence"])


def twin_params_aad(leaf_index: int, patient_id: str) -> bytes:
    return f"medtwin/twin-params/{leaf_index}/{patient_id}".encode()


def encode_params(names: Sequence[str], values: Sequence[float]) -> bytes:
    """Named model parameters as canonical JSON (floats round-trip exactly)."""
    return canonical_json({name: float(v) for name, v in zip(names, values, strict=True)})


def decode_params(data: bytes) -> dict[str, float]:
    body: dict[str, float] = json.loads(data)
    return {name: float(v) for name, v in body.items()}


def finding_aad(leaf_index: int, patient_id: str) -> bytes:
    return f"medtwin/finding/{leaf_index}/{patient_id}".encode()


def encode_finding(finding: Finding) -> bytes:
    """The sealed part of a finding: everything but what its record holds in the clear."""
    return canonical_json({
        "channel": None if finding.channel is None else finding.channel.code,
        "confidence": finding.confidence, "since_ms": finding.since_ms,
        "detector": finding.detector, "summary": finding.summary,
        "evidence": finding.evidence, "quarantined": finding.quarantined})


def decode_finding(data: bytes, patient_id: str, device_id: str, code: str,
                   time_ms: int) -> Finding:
    body = json.loads(data)
    channel = None if body["channel"] is None else Channel.from_code(body["channel"])
    return Finding(patient_id, device_id, FindingCode(code), channel,
                   float(body["confidence"]), time_ms, int(body["since_ms"]),
                   body["detector"], body["summary"], body["evidence"],
                   bool(body["quarantined"]))
