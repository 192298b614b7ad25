"""Pure value types that travel the reading's path: readings, packets, patients, devices, alerts."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import rfc8785

from medtwin.domain._channels import Channel

#: Domain-separation prefix of every device packet signature.
PACKET_SIGNING_CONTEXT = b"medtwin/packet/v1\n"


class Provenance(enum.StrEnum):
    """How a packet reached the twin."""

    DEVICE_SIGNED = "device-signed"
    TRUSTED_IMPORT = "trusted-import"


class DeviceStatus(enum.StrEnum):
    ACTIVE = "active"
    QUARANTINED = "quarantined"


class Severity(enum.StrEnum):
    """Clinical urgency of an alert, in increasing order."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


@dataclass(frozen=True, slots=True)
class Reading:
    """One value of one channel at one time (epoch milliseconds, UTC)."""

    channel: Channel
    value: float
    time_ms: int


@dataclass(frozen=True, slots=True)
class ReadingBatch:
    """Readings as columns, so checks and twin updates run as array operations.

    `channel`, `value`, `time_ms` have shape (n_readings,); `patient` holds the row index of
    each reading's patient in the twin (or -1 before the pipeline resolves it).
    """

    channel: npt.NDArray[np.int8]
    value: npt.NDArray[np.float64]
    time_ms: npt.NDArray[np.int64]

    @classmethod
    def from_readings(cls, readings: Sequence[Reading]) -> ReadingBatch:
        """Columns from a sequence of `Reading`s."""
        return cls(
            channel=np.fromiter((r.channel for r in readings), np.int8, len(readings)),
            value=np.fromiter((r.value for r in readings), np.float64, len(readings)),
            time_ms=np.fromiter((r.time_ms for r in readings), np.int64, len(readings)),
        )

    def __len__(self) -> int:
        return int(self.value.shape[0])

    def readings(self) -> list[Reading]:
        """The batch as `Reading` objects (for output, not for the hot path)."""
        return [
            Reading(Channel(int(c)), float(v), int(t))
            for c, v, t in zip(self.channel, self.value, self.time_ms, strict=True)
        ]


@dataclass(frozen=True, slots=True)
class Packet:
    """A batch of one patient's readings from one device, as the gate accepted it."""

    device_id: str
    patient_id: str
    seq: int
    sent_at_ms: int
    readings: ReadingBatch
    provenance: Provenance = Provenance.DEVICE_SIGNED


@dataclass(frozen=True, slots=True)
class Patient:
    """A monitored patient, known to medtwin by a pseudonymous id."""

    patient_id: str
    created_at_ms: int


@dataclass(frozen=True, slots=True)
class Device:
    """A sensor or pump registered to exactly one patient, holding one signing key."""

    device_id: str
    patient_id: str
    suite: str
    public_key: bytes
    status: DeviceStatus = DeviceStatus.ACTIVE
    last_seq: int = -1


@dataclass(frozen=True, slots=True)
class Alert:
    """A clinical finding with the evidence a clinician needs to judge it in seconds."""

    patient_id: str
    rule: str
    severity: Severity
    time_ms: int
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)


class FindingCode(enum.StrEnum):
    """What the guard concluded about a stream or a device (`Finding.code`)."""

    #: readings that look manipulated: they mask what the twin and the other sensors show
    SPOOFING_SUSPECTED = "spoofing-suspected"
    #: a failing sensor: stuck, noisy, or jumping faster than any physiology
    SENSOR_FAULT = "sensor-fault"
    #: an earlier stretch of the stream sent again as if new
    REPLAY = "replay"
    #: the device (or a sender using its name) behaves unlike itself: flood, jitter,
    #: sequence games, clock jumps
    DEVICE_BEHAVIOUR = "device-behaviour"


#: Codes that say a device may be compromised; a confident one quarantines the device.
COMPROMISE_CODES = frozenset({FindingCode.SPOOFING_SUSPECTED, FindingCode.REPLAY,
                              FindingCode.DEVICE_BEHAVIOUR})


@dataclass(frozen=True, slots=True)
class Finding:
    """A guard finding with the evidence an analyst or clinician needs to judge it in seconds.

    `time_ms` is the data time of the reading (or packet) that raised it, `since_ms` when the
    suspect pattern began; `confidence` in [0, 1]. `evidence` holds what was expected and
    observed, the statistic and its threshold, the channels that disagreed and what would
    have had to be different for no finding. `quarantined`: this finding quarantined the
    device.
    """

    patient_id: str
    device_id: str
    code: FindingCode
    channel: Channel | None
    confidence: float
    time_ms: int
    since_ms: int
    detector: str
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    quarantined: bool = False


def iso_second(time_ms: int) -> str:
    """A data time (epoch ms) as ISO 8601 UTC to the second, for explanations."""
    return str(np.datetime64(int(time_ms), "ms").astype("datetime64[s]")) + "Z"


def canonical_json(obj: Any) -> bytes:
    """The one byte encoding that signatures and hashes cover: the JSON Canonicalization
    Scheme (RFC 8785), which any language can reproduce (sorted keys, no spaces, UTF-8,
    ECMAScript number form, so 72.0 and 72 encode alike). Integers beyond ±2**53 and
    non-finite numbers raise ValueError."""
    try:
        return bytes(rfc8785.dumps(obj))
    except rfc8785.CanonicalizationError as exc:
        raise ValueError(f"canonical JSON: {exc}") from exc


def packet_wire(
    device_id: str, seq: int, sent_at_ms: int, readings: Sequence[Reading]
) -> dict[str, Any]:
    """The JSON form a device sends (and signs) for a packet of readings."""
    return {
        "device_id": device_id,
        "seq": seq,
        "sent_at": sent_at_ms,
        "readings": [
            {"code": r.channel.code, "unit": r.channel.ucum, "value": r.value, "time": r.time_ms}
            for r in readings
        ],
    }


def packet_signing_message(wire: dict[str, Any]) -> bytes:
    """The exact bytes a device signs for the packet `wire`."""
    return PACKET_SIGNING_CONTEXT + canonical_json(wire)


class RejectReason(enum.StrEnum):
    """Why the gate refused a packet; recorded with the rejection, never with patient values."""

    MALFORMED = "malformed"
    TOO_LARGE = "too-large"
    UNSUPPORTED_SUITE = "unsupported-suite"
    UNKNOWN_DEVICE = "unknown-device"
    QUARANTINED_DEVICE = "quarantined-device"
    BAD_SIGNATURE = "bad-signature"
    REPLAYED_SEQUENCE = "replayed-sequence"
    CLOCK_SKEW = "clock-skew"
    UNKNOWN_CHANNEL = "unknown-channel"
    WRONG_UNIT = "wrong-unit"
    IMPOSSIBLE_VALUE = "impossible-value"
    UNKNOWN_PATIENT = "unknown-patient"
    #: A session packet names no live session of this site (never opened, evicted, or the
    #: site restarted): the device opens a new session.
    UNKNOWN_SESSION = "unknown-session"
    #: The session is past its time or packet limit: the device opens a new session.
    SESSION_EXPIRED = "session-expired"
    #: A session packet's AEAD tag does not verify under its session key (altered or forged).
    BAD_SESSION_TAG = "bad-session-tag"


@dataclass(frozen=True, slots=True)
class ChannelState:
    """What the twin holds for one channel: the latest value, its age and the estimate, with
    the twin's 95 % interval now (`low`..`high`, NaN where the twin has none; it widens while
    no reading moves the twin), and `held`: the latest reading was kept from the twin by the
    guard (a suspect reading, or a quarantined device), so the estimate does not follow it."""

    channel: Channel
    value: float
    estimate: float
    age_s: float
    low: float = float("nan")
    high: float = float("nan")
    held: bool = False


@dataclass(frozen=True, slots=True)
class Forecast:
    """The twin's prediction of a channel at `target_ms`, made at `issued_ms` (the time of
    the latest reading it used): the mean and its 95 % interval `low`..`high`."""

    channel: Channel
    issued_ms: int
    target_ms: int
    mean: float
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class TwinState:
    """A patient's twin at one time: channel states, NEWS2, the rules that are active and
    the twin's forecasts."""

    patient_id: str
    time_ms: int
    channels: tuple[ChannelState, ...]
    news2: int
    news2_complete: bool
    news2_risk: str
    active_rules: tuple[str, ...]
    forecasts: tuple[Forecast, ...] = ()
