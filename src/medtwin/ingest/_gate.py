"""The gate: the only way into the twin. It accepts a packet whole or rejects it with a reason.

A signed device packet passes these steps, in order; the first that fails rejects it:
  (0) shape: the envelope is within the size limit and well-formed JSON of the protocol;
  (1) suite: the signature suite is one medtwin knows;
  (2) device: the device is registered;
  (3) status: a quarantined device is still admitted (the guard holds its readings); a device
      of an erased patient is refused (checked once (4) passed: only its key holder learns it);
  (4) signature: the device's key signed exactly these bytes;
  (5) sequence: the sequence number is above every one accepted from this device (replay);
  (6) clock: the send time is within the configured skew of the site clock;
  (7) readings: every reading has a known channel, that channel's unit, a physiologically
      possible value and a time neither in the future nor too old.
A session packet (a binary frame, see `medtwin.crypto._session`) passes the same steps, with
the session standing in for the signature:
  (0) shape: within the size limit, a session frame header of this version;
  (1) session: a live session of this gate (not past its time or packet limit);
  (2) device: still registered, with the key and suite that signed the session's handshake;
  (4) tag: the frame opens under the session key (its header is the associated data), and
      holds a packet of the session's device with the header's sequence number;
  (3), (5), (6), (7) as above; (5) also refuses a number not above the session's highest.
A handshake (`Gate.open_session`) is checked like a signed packet: shape, suites, device,
erased patient and clock first (cheap), then the signature over the transcript and its KEM
ciphertext; a session id ever used before (`seen`) is refused before any live session is
evicted.
A trusted import (FHIR NDJSON) skips (1)–(6): it names a known, not erased, patient instead.
Step (7) runs once for all packets of a batch, as array operations.

Sessions live in this gate's memory only: a restarted site forgets them (and makes a fresh
session KEM key), so devices handshake again; nothing durable depends on a session, because
its packets carry the device's own sequence numbers, which the site keeps.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from medtwin.config import MAX_ID_LENGTH, MAX_PACKET_BYTES, Settings
from medtwin.crypto import (
    AEAD_SUITES,
    HANDSHAKE_NONCE_SIZE,
    SESSION_KEM_SUITE,
    SIGNATURE_SUITES,
    SessionKeys,
    accept_handshake,
    kem_suite,
    open_frame,
    parse_frame_header,
    site_key_id,
    verify_signature,
)
from medtwin.domain import (
    PACKET_SIGNING_CONTEXT,
    POSSIBLE_MAX,
    POSSIBLE_MIN,
    Channel,
    Device,
    Packet,
    Provenance,
    ReadingBatch,
    RejectReason,
    canonical_json,
)
from medtwin.errors import CryptoError, DecryptionError, GateRejection, SignatureError
from medtwin.ingest._wire import (
    DEVICE_ID_PATTERN,
    ENVELOPE_ADAPTER,
    HANDSHAKE_ADAPTER,
    PACKET_ADAPTER,
    decode_json,
)

_CHANNEL_BY_CODE = {c.code: int(c) for c in Channel}
_UCUM_BY_CHANNEL = np.array([c.ucum for c in Channel])

#: How long a session is good for: a fresh handshake (~0.3 ms of site CPU) an hour bounds
#: what one leaked session key exposes.
SESSION_LIFETIME_MS = 3_600_000
#: Packets one session may carry (far below AES-GCM's 2**32 per key), then a new handshake.
MAX_SESSION_PACKETS = 1_000_000
#: Live sessions per device: a new handshake beyond this evicts the device's oldest one (a
#: device rekeys with one overlap; a device cannot fill the site's memory).
MAX_SESSIONS_PER_DEVICE = 2
#: Live sessions in all: beyond this the oldest is evicted (bounds memory; prevents DoS).
MAX_SESSIONS = 200_000
_NO_SESSIONS = "this site does not take session packets; send signed packets"
#: Largest handshake body accepted (an ML-DSA-65 signature and a hybrid ciphertext fit).
MAX_HANDSHAKE_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class SignedSubmission:
    """A device envelope as decoded from JSON, not yet trusted in any way.

    `size` is the encoded size in bytes where known; an oversized body is passed as
    `envelope=None` with its size, so its rejection is recorded like any other.
    """

    envelope: Any
    size: int = 0

    @classmethod
    def from_bytes(cls, body: bytes, limit: int = MAX_PACKET_BYTES) -> SignedSubmission:
        """A submission from a request body; an oversized or non-JSON body becomes one the
        gate refuses (and records) like any other."""
        envelope = decode_json(body) if len(body) <= limit else None
        return cls(envelope, len(body))


@dataclass(frozen=True, slots=True)
class ImportSubmission:
    """Readings of one patient from a trusted import, as raw columns (codes and units unchecked).

    `source` names where they came from (e.g. the NDJSON file); `seq` orders imports.
    """

    patient_id: str
    source: str
    seq: int
    codes: Sequence[str]
    units: Sequence[str]
    values: npt.NDArray[np.float64]
    time_ms: npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class SessionSubmission:
    """A session packet frame as received, not yet trusted in any way (`size`: its length,
    for a frame refused unread because it is over the limit, then `frame` is empty)."""

    frame: bytes
    size: int = 0

    @classmethod
    def from_bytes(cls, body: bytes, limit: int = MAX_PACKET_BYTES) -> SessionSubmission:
        """A submission from a request body; an oversized one is refused (and recorded)."""
        return cls(body if len(body) <= limit else b"", len(body))


Submission = SignedSubmission | ImportSubmission | SessionSubmission


@dataclass(frozen=True, slots=True)
class SessionOpened:
    """A session the gate opened from a handshake: its id (hex), device and limits."""

    session_id: str
    device_id: str
    expires_at_ms: int
    max_packets: int


@dataclass(slots=True)
class _Session:
    """A live session: its keys, the device key that signed its handshake, its counters."""

    keys: SessionKeys
    device_id: str
    suite: str
    public_key: bytes
    expires_at_ms: int
    highest_seq: int = -1
    packets: int = 0


@dataclass(frozen=True, slots=True)
class _Candidate:
    """A submission that passed steps (0)–(6), with its readings still as raw columns."""

    device_id: str
    patient_id: str
    seq: int
    sent_at_ms: int
    provenance: Provenance
    signature: bytes | None
    signed: bytes | None
    codes: Sequence[str]
    units: Sequence[str]
    values: npt.NDArray[np.float64]
    time_ms: npt.NDArray[np.int64]
    session_id: str | None = None


@dataclass(frozen=True, slots=True)
class Admitted:
    """A packet the gate accepted, with the signature it carried and the exact bytes that
    signature covers (canonical JSON of the packet, without the context prefix); both None
    for imports. A session packet has no signature, the exact packet JSON its AEAD tag covers
    in `signed`, and the hex id of the session whose handshake the device signed in
    `session_id`."""

    packet: Packet
    signature: bytes | None
    signed: bytes | None = None
    session_id: str | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """A packet the gate rejected; `device_id` is the claimed sender, if one could be read.

    `seq` is set when the packet was authentic (its signature verified) but its readings were
    refused: the sequence number of every authentic packet is used once, whatever its fate.
    """

    rejection: GateRejection
    device_id: str | None
    seq: int | None = None


Verdict = Admitted | Refused


class Gate:
    """Checks submissions against the registered devices; its only state is its sessions and
    their KEM key, in memory (a restart forgets them: devices handshake again)."""

    def __init__(self, settings: Settings, *, sessions: bool = False,
                 session_kem: str = SESSION_KEM_SUITE,
                 session_lifetime_ms: int = SESSION_LIFETIME_MS,
                 max_session_packets: int = MAX_SESSION_PACKETS) -> None:
        self.max_skew_ms = int(settings.max_clock_skew_s * 1000)
        self.max_age_ms = int(settings.max_reading_age_s * 1000)
        #: Whether session handshakes and packets are taken. Off by default: a caller that
        #: stores packets must record session packets (no per-packet signature) in a way its
        #: log verification accepts before it turns this on.
        self.sessions = sessions
        self.session_lifetime_ms = session_lifetime_ms
        self.max_session_packets = max_session_packets
        kem = kem_suite(session_kem)
        #: The session KEM key pair, made fresh per gate: never on disk, so a stolen key file
        #: or backup opens no recorded handshake.
        self.session_kem = kem.name
        self._session_private, self.session_public_key = kem.generate()
        self._sessions: dict[bytes, _Session] = {}
        self._device_sessions: dict[str, list[bytes]] = {}
        self._sessions_lock = threading.Lock()

    @property
    def session_key(self) -> dict[str, str]:
        """What a device needs to handshake: the KEM suite, public key (base64) and its id."""
        return {"kem": self.session_kem, "site_key": site_key_id(self.session_public_key),
                "public_key": base64.b64encode(self.session_public_key).decode("ascii")}

    def open_session(self, envelope: Any, now_ms: int, devices: Mapping[str, Device],
                     erased: Collection[str] = frozenset(), size: int = 0,
                     seen: Callable[[str], bool] = lambda _: False) -> SessionOpened:
        """Open a session from a device's handshake (decoded JSON; `size` its encoded length
        where known); GateRejection with the reason otherwise. `seen(session_id)` says whether
        a session of that id was ever opened (the log knows): a replayed handshake is refused
        before it can evict any live session."""
        if not self.sessions:
            raise GateRejection(RejectReason.UNSUPPORTED_SUITE, _NO_SESSIONS)
        # (0): shape
        if size > MAX_HANDSHAKE_BYTES:
            raise GateRejection(RejectReason.TOO_LARGE, f"handshake of {size} bytes exceeds "
                                f"the limit of {MAX_HANDSHAKE_BYTES} bytes")
        try:
            env = HANDSHAKE_ADAPTER.validate_python(envelope)
            nonce = base64.b64decode(env["handshake"]["nonce"], validate=True)
        except (ValidationError, binascii.Error, ValueError):
            raise GateRejection(RejectReason.MALFORMED, "handshake does not match the "
                                "protocol (see medtwin.crypto.build_handshake)") from None
        hs = env["handshake"]
        device_id = hs["device_id"]
        if len(nonce) != HANDSHAKE_NONCE_SIZE:
            raise GateRejection(RejectReason.MALFORMED, "handshake nonce must be 16 bytes")
        # (1): suites
        if env["suite"] not in SIGNATURE_SUITES:
            raise GateRejection(RejectReason.UNSUPPORTED_SUITE, f"signature suite must be one "
                                f"of {', '.join(sorted(SIGNATURE_SUITES))}")
        if hs["kem"] != self.session_kem or hs["aead"] not in AEAD_SUITES:
            raise GateRejection(RejectReason.UNSUPPORTED_SUITE, f"session KEM must be "
                                f"{self.session_kem!r} and AEAD one of "
                                f"{', '.join(sorted(AEAD_SUITES))}")
        # (2): device
        device = devices.get(device_id)
        if device is None:
            raise GateRejection(RejectReason.UNKNOWN_DEVICE, f"device {device_id!r} is not "
                                "registered; register it with `medtwin keys add-device`")
        # cheap refusals before any signature or KEM work
        if device.patient_id in erased:
            raise GateRejection(RejectReason.UNKNOWN_PATIENT, f"device {device_id!r} belongs "
                                "to a patient who was erased: retire the device")
        if abs(hs["started_at"] - now_ms) > self.max_skew_ms:
            raise GateRejection(RejectReason.CLOCK_SKEW, f"handshake time is "
                                f"{abs(hs['started_at'] - now_ms) / 1000:.0f} s from the site "
                                f"clock (limit {self.max_skew_ms / 1000:.0f} s)")
        # (4): signature over the transcript, for this site's session key; then the KEM
        try:
            signature = base64.b64decode(env["signature"], validate=True)
            if env["suite"] != device.suite:
                raise SignatureError("suite differs from the device's registered suite")
            keys = accept_handshake(envelope["handshake"], signature, device.suite,
                                    device.public_key, self._session_private,
                                    self.session_public_key)
        except (SignatureError, binascii.Error, ValueError):
            if hs["site_key"] != site_key_id(self.session_public_key):
                raise GateRejection(RejectReason.UNKNOWN_SESSION, "handshake is for another "
                                    "session key of this site (it restarted?): fetch the "
                                    "current session key and handshake again") from None
            raise GateRejection(RejectReason.BAD_SIGNATURE, f"handshake signature does not "
                                f"verify with the registered key of device {device_id!r}"
                                ) from None
        except CryptoError:
            raise GateRejection(RejectReason.MALFORMED, "handshake KEM ciphertext cannot be "
                                f"opened; encapsulate to the {self.session_kem} key the site "
                                "publishes") from None
        if seen(keys.session_id.hex()):
            raise GateRejection(RejectReason.REPLAYED_SEQUENCE, "this handshake was already "
                                "used; make a fresh one")
        return self._register(keys, device, now_ms)

    def _check_sender(self, device: Device, seq: int, sent_at_ms: int, now_ms: int,
                      erased: Collection[str], seen_seq: Mapping[str, int],
                      floor: int = -1) -> None:
        """Steps (3), (5) and (6) of an authentic packet, signed or in a session: not an
        erased patient's device, a sequence number above every one accepted from the device
        (and `floor`, the session's highest), a send time within the clock skew."""
        device_id = device.device_id
        if device.patient_id in erased:
            raise _Rejected(RejectReason.UNKNOWN_PATIENT, f"device {device_id!r} belongs to a "
                            "patient who was erased; their data can no longer be recorded: "
                            "retire the device", device_id)
        last = max(floor, device.last_seq, seen_seq.get(device_id, -1))
        if seq <= last:
            raise _Rejected(RejectReason.REPLAYED_SEQUENCE, f"sequence {seq} is not above "
                            f"{last}, the last accepted from this device", device_id)
        skew_s = abs(sent_at_ms - now_ms) / 1000
        if skew_s * 1000 > self.max_skew_ms:
            raise _Rejected(RejectReason.CLOCK_SKEW, f"send time is {skew_s:.0f} s from the site "
                            f"clock (limit {self.max_skew_ms / 1000:.0f} s)", device_id)

    def close_device_sessions(self, device_id: str) -> None:
        """End every live session of a device (its key changed, or it was retired)."""
        with self._sessions_lock:
            for session_id in list(self._device_sessions.get(device_id, [])):
                self._forget(session_id)

    def _register(self, keys: SessionKeys, device: Device, now_ms: int) -> SessionOpened:
        """Hold a new session, evicting expired ones, the device's oldest beyond its share,
        and the site's oldest beyond MAX_SESSIONS."""
        session = _Session(keys, device.device_id, device.suite, device.public_key,
                           now_ms + self.session_lifetime_ms)
        with self._sessions_lock:
            if keys.session_id in self._sessions:
                raise GateRejection(RejectReason.REPLAYED_SEQUENCE, "this handshake was "
                                    "already used; make a fresh one")
            while self._sessions:
                oldest_id, oldest = next(iter(self._sessions.items()))
                if oldest.expires_at_ms > now_ms and len(self._sessions) < MAX_SESSIONS:
                    break
                self._forget(oldest_id)
            mine = self._device_sessions.setdefault(device.device_id, [])
            while len(mine) >= MAX_SESSIONS_PER_DEVICE:
                self._forget(mine[0])
            self._sessions[keys.session_id] = session
            mine.append(keys.session_id)
        return SessionOpened(keys.session_id.hex(), device.device_id, session.expires_at_ms,
                             self.max_session_packets)

    def session_device(self, frame: bytes) -> str | None:
        """The device whose live session a frame's header names (untrusted until the gate
        opens the frame: used to rate-limit), or None."""
        try:
            header = parse_frame_header(frame)
        except (CryptoError, ValueError):
            return None
        with self._sessions_lock:
            session = self._sessions.get(header.session_id)
            return None if session is None else session.device_id

    def close_session(self, session_id: str) -> None:
        """End a session now (hex id; unknown ids are ignored)."""
        with self._sessions_lock:
            self._forget(bytes.fromhex(session_id))

    def _forget(self, session_id: bytes) -> None:
        """Drop a session (the caller holds the sessions lock)."""
        session = self._sessions.pop(session_id, None)
        if session is not None:
            mine = self._device_sessions.get(session.device_id, [])
            if session_id in mine:
                mine.remove(session_id)
            if not mine:
                self._device_sessions.pop(session.device_id, None)

    @property
    def live_sessions(self) -> int:
        """How many sessions the gate holds (expired ones included until evicted)."""
        return len(self._sessions)

    def check(self, submissions: Sequence[Submission], now_ms: int,
              devices: Mapping[str, Device], patients: Mapping[str, object],
              erased: Collection[str] = frozenset()) -> list[Verdict]:
        """A verdict per submission, in order. Sequence numbers accepted earlier in the same
        batch count as seen, so a batch cannot replay itself."""
        verdicts: list[Verdict | None] = []
        candidates: list[tuple[int, _Candidate]] = []
        seen_seq: dict[str, int] = {}
        for i, sub in enumerate(submissions):
            try:
                if isinstance(sub, ImportSubmission):
                    cand = self._admit_import(sub, patients, erased)
                elif isinstance(sub, SessionSubmission):
                    cand = self._admit_session(sub, now_ms, devices, seen_seq, erased)
                else:
                    cand = self._admit_signed(sub, now_ms, devices, seen_seq, erased)
            except _Rejected as rejected:
                verdicts.append(Refused(rejected.error, rejected.device_id))
                continue
            verdicts.append(None)
            candidates.append((i, cand))
        self._check_readings(candidates, now_ms, verdicts)
        return [v for v in verdicts if v is not None]

    def _admit_signed(self, sub: SignedSubmission, now_ms: int, devices: Mapping[str, Device],
                      seen_seq: dict[str, int], erased: Collection[str]) -> _Candidate:
        raw = sub.envelope
        claimed = _claimed_device(raw)
        # (0): shape
        if sub.size > MAX_PACKET_BYTES:
            raise _Rejected(RejectReason.TOO_LARGE, f"packet of {sub.size} bytes exceeds the "
                            f"limit of {MAX_PACKET_BYTES} bytes", claimed)
        try:
            env = ENVELOPE_ADAPTER.validate_python(raw)
        except ValidationError as exc:
            where = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['type']}" for e in exc.errors()[:3])
            raise _Rejected(RejectReason.MALFORMED, f"envelope does not match the protocol "
                            f"({where})", claimed) from None
        try:
            signed = canonical_json(raw["packet"])
        except (ValueError, RecursionError):
            raise _Rejected(RejectReason.MALFORMED, "packet cannot be put in canonical JSON "
                            "(a number beyond ±(2**53 - 1), text that is not Unicode, or too "
                            "deep)", claimed) from None
        pkt = env["packet"]
        device_id = pkt["device_id"]
        # (1): suite
        if env["suite"] not in SIGNATURE_SUITES:
            raise _Rejected(RejectReason.UNSUPPORTED_SUITE, f"signature suite must be one of "
                            f"{', '.join(sorted(SIGNATURE_SUITES))}", device_id)
        # (2): device
        device = devices.get(device_id)
        if device is None:
            raise _Rejected(RejectReason.UNKNOWN_DEVICE, f"device {device_id!r} is not "
                            "registered; register it with `medtwin keys add-device`", device_id)
        # (3): status: a quarantined device's packets are admitted and stored (its readings
        # are evidence), but the guard keeps them from moving the twin
        # (4): signature
        try:
            signature = base64.b64decode(env["signature"], validate=True)
            if env["suite"] != device.suite:
                raise SignatureError("suite differs from the device's registered suite")
            verify_signature(device.suite, device.public_key, PACKET_SIGNING_CONTEXT + signed,
                             signature)
        except (SignatureError, binascii.Error, ValueError):
            raise _Rejected(RejectReason.BAD_SIGNATURE, f"signature does not verify with the "
                            f"registered key of device {device_id!r}", device_id) from None
        # (3), (5), (6)
        self._check_sender(device, pkt["seq"], pkt["sent_at"], now_ms, erased, seen_seq)
        seen_seq[device_id] = pkt["seq"]
        readings = pkt["readings"]
        return _Candidate(
            device_id, device.patient_id, pkt["seq"], pkt["sent_at"], Provenance.DEVICE_SIGNED,
            signature, signed, [r["code"] for r in readings], [r["unit"] for r in readings],
            np.array([r["value"] for r in readings], dtype=np.float64),
            np.array([r["time"] for r in readings], dtype=np.int64))

    def _admit_session(self, sub: SessionSubmission, now_ms: int,
                       devices: Mapping[str, Device], seen_seq: dict[str, int],
                       erased: Collection[str]) -> _Candidate:
        if not self.sessions:
            raise _Rejected(RejectReason.UNSUPPORTED_SUITE, _NO_SESSIONS, None)
        # (0): shape
        if sub.size > MAX_PACKET_BYTES or len(sub.frame) > MAX_PACKET_BYTES:
            raise _Rejected(RejectReason.TOO_LARGE, f"packet of {max(sub.size, len(sub.frame))}"
                            f" bytes exceeds the limit of {MAX_PACKET_BYTES} bytes", None)
        try:
            header = parse_frame_header(sub.frame)
        except DecryptionError:
            raise _Rejected(RejectReason.MALFORMED, "not a session packet frame of this "
                            "protocol version (see medtwin.crypto.seal_frame)", None) from None
        # (1): session
        with self._sessions_lock:
            session = self._sessions.get(header.session_id)
            if session is not None and (now_ms >= session.expires_at_ms
                                        or session.packets >= self.max_session_packets):
                self._forget(header.session_id)
                raise _Rejected(RejectReason.SESSION_EXPIRED, "the session is past its time or "
                                "packet limit: open a new session", session.device_id)
        if session is None:
            raise _Rejected(RejectReason.UNKNOWN_SESSION, "no live session has this id (never "
                            "opened, evicted, or the site restarted): open a new session", None)
        device_id = session.device_id
        # (2): device, with the key that signed the handshake
        device = devices.get(device_id)
        if device is None:
            raise _Rejected(RejectReason.UNKNOWN_DEVICE, f"device {device_id!r} is no longer "
                            "registered", device_id)
        if (device.suite, device.public_key) != (session.suite, session.public_key):
            with self._sessions_lock:
                self._forget(header.session_id)
            raise _Rejected(RejectReason.UNKNOWN_SESSION, f"device {device_id!r} has another "
                            "key than the one that opened this session: open a new session",
                            device_id)
        # (4): tag, and the packet inside
        try:
            seq, plaintext = open_frame(session.keys, sub.frame)
        except DecryptionError:
            raise _Rejected(RejectReason.BAD_SESSION_TAG, f"session packet does not verify "
                            f"under the session key of device {device_id!r}", device_id
                            ) from None
        try:
            pkt = PACKET_ADAPTER.validate_python(decode_json(plaintext))
        except ValidationError:
            raise _Rejected(RejectReason.MALFORMED, "session packet body is not a packet of "
                            "the protocol", device_id) from None
        if pkt["device_id"] != device_id or pkt["seq"] != seq:
            raise _Rejected(RejectReason.MALFORMED, "session packet body must name the "
                            "session's device and the frame's sequence number", device_id)
        # (3), (5) within the session and across the device's packets, (6)
        self._check_sender(device, seq, pkt["sent_at"], now_ms, erased, seen_seq,
                           session.highest_seq)
        with self._sessions_lock:
            session.highest_seq = max(session.highest_seq, seq)
            session.packets += 1
        seen_seq[device_id] = seq
        readings = pkt["readings"]
        return _Candidate(
            device_id, device.patient_id, seq, pkt["sent_at"], Provenance.DEVICE_SIGNED, None,
            plaintext, [r["code"] for r in readings], [r["unit"] for r in readings],
            np.array([r["value"] for r in readings], dtype=np.float64),
            np.array([r["time"] for r in readings], dtype=np.int64), session.keys.session_id.hex())

    def _admit_import(self, sub: ImportSubmission, patients: Mapping[str, object],
                      erased: Collection[str]) -> _Candidate:
        source = f"import:{sub.source}"[:MAX_ID_LENGTH]
        if sub.patient_id in erased:
            raise _Rejected(RejectReason.UNKNOWN_PATIENT, "the import names a patient who was "
                            "erased; their data can no longer be recorded", source)
        if sub.patient_id not in patients:
            raise _Rejected(RejectReason.UNKNOWN_PATIENT, "the import names a patient that is "
                            "not registered", source)
        if len(sub.values) == 0:
            raise _Rejected(RejectReason.MALFORMED, "an import packet needs readings", source)
        sent = int(sub.time_ms.max())
        return _Candidate(source, sub.patient_id, sub.seq, sent, Provenance.TRUSTED_IMPORT, None,
                          None, sub.codes, sub.units, np.asarray(sub.values, np.float64),
                          np.asarray(sub.time_ms, np.int64))

    def _check_readings(self, candidates: list[tuple[int, _Candidate]], now_ms: int,
                        verdicts: list[Verdict | None]) -> None:
        # (7): readings of every candidate at once
        if not candidates:
            return
        counts = np.array([len(c.values) for _, c in candidates])
        owner = np.repeat(np.arange(len(candidates)), counts)
        codes = np.array([code for _, c in candidates for code in c.codes])
        units = np.array([unit for _, c in candidates for unit in c.units])
        values = np.concatenate([c.values for _, c in candidates])
        times = np.concatenate([c.time_ms for _, c in candidates])
        signed = np.repeat([c.provenance is Provenance.DEVICE_SIGNED for _, c in candidates],
                           counts)

        unique_codes, code_index = np.unique(codes, return_inverse=True)
        channel = np.array([_CHANNEL_BY_CODE.get(str(u), -1) for u in unique_codes])[code_index]
        known = channel >= 0
        safe = np.where(known, channel, 0)
        right_unit = known & (units == _UCUM_BY_CHANNEL[safe])
        with np.errstate(invalid="ignore"):
            possible = np.isfinite(values) & (values >= POSSIBLE_MIN[safe]) & (
                values <= POSSIBLE_MAX[safe])
        # Imports may be old history, but nothing may come from the future: one future
        # reading would otherwise hide every real one after it.
        not_future = times <= now_ms + self.max_skew_ms
        timely = not_future & (~signed | (times >= now_ms - self.max_age_ms))
        failure = np.select([~known, ~right_unit, ~possible, ~timely], [1, 2, 3, 4], 0)

        bad = np.flatnonzero(failure)
        first_bad = dict(zip(*np.unique(owner[bad], return_index=True), strict=True))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        for k, (i, cand) in enumerate(candidates):
            if k in first_bad:
                at = int(bad[first_bad[k]])
                authentic = cand.provenance is Provenance.DEVICE_SIGNED
                verdicts[i] = Refused(_reading_rejection(int(failure[at]), at - int(starts[k]),
                                                         str(codes[at])), cand.device_id,
                                      cand.seq if authentic else None)
                continue
            sl = slice(int(starts[k]), int(starts[k] + counts[k]))
            batch = ReadingBatch(channel[sl].astype(np.int8), values[sl], times[sl])
            verdicts[i] = Admitted(Packet(cand.device_id, cand.patient_id, cand.seq,
                                          cand.sent_at_ms, batch, cand.provenance),
                                   cand.signature, cand.signed, cand.session_id)


def _reading_rejection(failure: int, position: int, code: str) -> GateRejection:
    """The rejection for a reading's first failed check; names the reading, never its value."""
    where = f"reading {position}"
    if failure == 1:
        return GateRejection(RejectReason.UNKNOWN_CHANNEL, f"{where}: code {code[:32]!r} is not "
                             "a channel medtwin knows", position)
    channel = Channel.from_code(code)
    if failure == 2:
        return GateRejection(RejectReason.WRONG_UNIT, f"{where}: unit must be "
                             f"{channel.ucum!r} for {code}", position)
    if failure == 3:
        spec = channel.spec
        return GateRejection(RejectReason.IMPOSSIBLE_VALUE, f"{where}: value for {code} is "
                             f"outside the possible range {spec.possible_min:g}–"
                             f"{spec.possible_max:g} {channel.ucum}", position)
    return GateRejection(RejectReason.CLOCK_SKEW, f"{where}: time is in the future or older "
                         "than the buffering limit", position)


def _claimed_device(raw: Any) -> str | None:
    """The device id a raw envelope claims, if it is a plausible id (for the rejection record)."""
    try:
        device_id = raw["packet"]["device_id"]
    except (KeyError, TypeError):
        return None
    if (isinstance(device_id, str) and len(device_id) <= MAX_ID_LENGTH
            and re.fullmatch(DEVICE_ID_PATTERN, device_id)):
        return device_id
    return None


class _Rejected(Exception):
    def __init__(self, reason: RejectReason, detail: str, device_id: str | None) -> None:
        self.error = GateRejection(reason, detail)
        self.device_id = device_id


def signed_packet_readings(signed: bytes) -> ReadingBatch:
    """The readings of a packet from the exact bytes its device signed (as stored)."""
    try:
        packet = PACKET_ADAPTER.validate_python(decode_json(signed))
        readings = packet["readings"]
        return ReadingBatch(
            np.array([Channel.from_code(r["code"]) for r in readings], dtype=np.int8),
            np.array([r["value"] for r in readings], dtype=np.float64),
            np.array([r["time"] for r in readings], dtype=np.int64))
    except (ValidationError, KeyError) as exc:
        raise ValueError("ingest: stored packet bytes are not a valid packet") from exc
