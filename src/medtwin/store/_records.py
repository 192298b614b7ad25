"""Rows of the store as values, and the bytes of each that its log leaf commits to."""

from __future__ import annotations

from dataclasses import dataclass

from medtwin.crypto import LogKeyEndorsement, PublicLogKey
from medtwin.domain import canonical_json


@dataclass(frozen=True, slots=True)
class PacketRecord:
    """An accepted packet: metadata in the clear, readings only as ciphertext.

    `batch_index` is the first leaf of the batch it was processed in: replaying batches as
    they were processed rebuilds exactly the twin and rule state the site had.
    """

    leaf_index: int
    batch_index: int
    device_id: str
    patient_id: str
    seq: int
    sent_at_ms: int
    received_at_ms: int
    provenance: str
    n_readings: int
    envelope: bytes
    signature: bytes | None

    kind = "packet"

    def commit_bytes(self) -> bytes:
        meta = canonical_json([self.batch_index, self.device_id, self.patient_id, self.seq,
                               self.sent_at_ms, self.received_at_ms, self.provenance,
                               self.n_readings])
        return b"\n".join((meta, self.envelope, self.signature or b""))

    def describe(self) -> str:
        return f"packet #{self.leaf_index} (device {self.device_id}, seq {self.seq})"


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """A raised alert: rule and severity in the clear, explanation only as ciphertext."""

    leaf_index: int
    patient_id: str
    rule: str
    severity: str
    time_ms: int
    envelope: bytes

    kind = "alert"

    def commit_bytes(self) -> bytes:
        meta = canonical_json([self.patient_id, self.rule, self.severity, self.time_ms])
        return b"\n".join((meta, self.envelope))

    def describe(self) -> str:
        return f"alert #{self.leaf_index} ({self.rule})"


@dataclass(frozen=True, slots=True)
class RejectionRecord:
    """A refused packet: who claimed to send it and why; never its readings.

    `seq` is the sequence number of an authentic packet refused for its readings: it is used
    up, and the log must say so for the replay protection to be checkable.
    """

    leaf_index: int
    received_at_ms: int
    device_id: str | None
    reason: str
    detail: str
    seq: int | None = None

    kind = "rejection"

    def commit_bytes(self) -> bytes:
        return canonical_json([self.received_at_ms, self.device_id, self.reason, self.detail,
                               self.seq])

    def describe(self) -> str:
        return f"rejection #{self.leaf_index} ({self.reason})"


@dataclass(frozen=True, slots=True)
class RegistrationRecord:
    """A device registered to a patient with its public key, or a change of its status.

    The latest registration of a device is what the gate trusts; logging every one makes a
    swapped key or a silent release visible to `verify`.
    """

    leaf_index: int
    device_id: str
    patient_id: str
    suite: str
    public_key: bytes
    status: str
    time_ms: int
    reason: str = ""

    kind = "registration"

    def commit_bytes(self) -> bytes:
        fields = [self.device_id, self.patient_id, self.suite, self.public_key.hex(),
                  self.status, self.time_ms]
        return canonical_json([*fields, self.reason] if self.reason else fields)

    def describe(self) -> str:
        return f"registration #{self.leaf_index} (device {self.device_id}, {self.status})"


@dataclass(frozen=True, slots=True)
class TwinParamsRecord:
    """A patient's twin parameters set at `time_ms` (e.g. after personalization): which model
    in the clear, the parameters only as ciphertext. Logged, so that replaying the log
    rebuilds exactly the twin the site ran."""

    leaf_index: int
    patient_id: str
    model: str
    time_ms: int
    envelope: bytes

    kind = "twin-params"

    def commit_bytes(self) -> bytes:
        meta = canonical_json([self.patient_id, self.model, self.time_ms])
        return b"\n".join((meta, self.envelope))

    def describe(self) -> str:
        return f"twin parameters #{self.leaf_index} ({self.model})"


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A device session the gate opened: the device's signed handshake as it came (it binds
    the site's session key, the KEM ciphertext and the session's start; no readings) and when
    the session ends, so `verify` can check that every session packet belongs to a live
    session its device opened with the key it had then."""

    leaf_index: int
    device_id: str
    patient_id: str
    session_id: str
    expires_at_ms: int
    handshake: bytes

    kind = "session"

    def commit_bytes(self) -> bytes:
        meta = canonical_json([self.device_id, self.patient_id, self.session_id,
                               self.expires_at_ms])
        return b"\n".join((meta, self.handshake))

    def describe(self) -> str:
        return f"session #{self.leaf_index} of {self.device_id}"


@dataclass(frozen=True, slots=True)
class SnapshotRecord:
    """The twins as they stood before the batch starting at `leaf_index` was applied: one
    SHA-256 per patient over everything their twin holds (state, model rows, parameters),
    `digests` as canonical JSON [[patient_id, hex], ...]. Hashes only: a snapshot reveals no
    value, and replaying the logged inputs must reproduce every one (`verify --replay`)."""

    leaf_index: int
    time_ms: int
    digests: bytes

    kind = "snapshot"

    def commit_bytes(self) -> bytes:
        return b"\n".join((canonical_json([self.time_ms]), self.digests))

    def describe(self) -> str:
        return f"twin snapshot #{self.leaf_index}"


@dataclass(frozen=True, slots=True)
class FindingRecord:
    """A guard finding: its code, device and data time in the clear (a security analyst
    counts them without patient data), the explanation only as ciphertext."""

    leaf_index: int
    patient_id: str
    device_id: str
    code: str
    time_ms: int
    envelope: bytes

    kind = "finding"

    def commit_bytes(self) -> bytes:
        meta = canonical_json([self.patient_id, self.device_id, self.code, self.time_ms])
        return b"\n".join((meta, self.envelope))

    def describe(self) -> str:
        return f"finding #{self.leaf_index} ({self.code}, device {self.device_id})"


@dataclass(frozen=True, slots=True)
class ErasureRecord:
    """A patient erased (crypto-shredded) at `time_ms`: their data key was destroyed, so
    their sealed records stay in the log, checkable by hash, but can never be opened again.
    `reason` says who and why (no patient data)."""

    leaf_index: int
    patient_id: str
    time_ms: int
    reason: str

    kind = "erasure"

    def commit_bytes(self) -> bytes:
        return canonical_json([self.patient_id, self.time_ms, self.reason])

    def describe(self) -> str:
        return f"erasure #{self.leaf_index}"


@dataclass(frozen=True, slots=True)
class SuiteRecord:
    """The AEAD suite that seals new patient records and wraps new data keys changed to
    `suite` at `time_ms` (configuration, `MEDTWIN_AEAD_SUITE`); records sealed before keep
    naming theirs. `reason` says how the change came about."""

    leaf_index: int
    suite: str
    previous_suite: str
    time_ms: int
    reason: str

    kind = "aead-suite"

    def commit_bytes(self) -> bytes:
        return canonical_json([self.suite, self.previous_suite, self.time_ms, self.reason])

    def describe(self) -> str:
        return f"AEAD suite change #{self.leaf_index} ({self.previous_suite} -> {self.suite})"


@dataclass(frozen=True, slots=True)
class RetirementRecord:
    """A previous site KEK, which no stored data key needed any more, removed from the key
    file at `time_ms`: backups taken before need a copy of the old key file. Ids only."""

    leaf_index: int
    kek_id: str
    time_ms: int
    reason: str

    kind = "kek-retirement"

    def commit_bytes(self) -> bytes:
        return canonical_json([self.kek_id, self.time_ms, self.reason])

    def describe(self) -> str:
        return f"KEK retirement #{self.leaf_index} ({self.kek_id})"


@dataclass(frozen=True, slots=True)
class RotationRecord:
    """The site KEK rotated at `time_ms`: new data keys are wrapped by `new_kek_id` (suite
    `suite`) from now on, and stored ones are re-wrapped from `old_kek_id`. Ids only, never
    key material; `reason` says who and why."""

    leaf_index: int
    old_kek_id: str
    new_kek_id: str
    suite: str
    time_ms: int
    reason: str

    kind = "kek-rotation"

    def commit_bytes(self) -> bytes:
        return canonical_json([self.old_kek_id, self.new_kek_id, self.suite, self.time_ms,
                               self.reason])

    def describe(self) -> str:
        return f"KEK rotation #{self.leaf_index} ({self.old_kek_id} -> {self.new_kek_id})"


@dataclass(frozen=True, slots=True)
class AccessRecord:
    """One request's consent-gated read decisions, made at `at_ms` for one caller (name,
    role, chain address) and purpose: `decisions` is canonical JSON [[patient_id, allowed,
    reason], ...] with pseudonymous patient ids. No twin value."""

    leaf_index: int
    at_ms: int
    caller: str
    role: str
    address: str | None
    purpose: str
    decisions: bytes

    kind = "access"

    def commit_bytes(self) -> bytes:
        meta = canonical_json([self.at_ms, self.caller, self.role, self.address, self.purpose])
        return b"\n".join((meta, self.decisions))

    def describe(self) -> str:
        return f"access decisions #{self.leaf_index} ({self.caller})"


@dataclass(frozen=True, slots=True)
class BindingRecord:
    """An API token bound by its holder to a chain address: the token's hash (never the
    token), the holder's name, the address and the address key's EIP-191 signature of the
    binding message (it names the site and the token), so `verify` can re-check that the
    address's owner agreed, and that the token table binds nothing else."""

    leaf_index: int
    token_hash: bytes
    holder: str
    address: str
    signature: bytes
    time_ms: int

    kind = "token-binding"

    def commit_bytes(self) -> bytes:
        return canonical_json([self.token_hash.hex(), self.holder, self.address,
                               self.signature.hex(), self.time_ms])

    def describe(self) -> str:
        return f"token binding #{self.leaf_index} ({self.holder} -> {self.address})"


@dataclass(frozen=True, slots=True)
class LogKeyRecord:
    """The log signing key rotated: the outgoing key's endorsement of the new one, which signs
    every tree head from this record's on. Public keys only; `reason` says who and why."""

    leaf_index: int
    origin: str
    key_id: str
    suite: str
    public_key: bytes
    previous_key_id: str
    previous_suite: str
    previous_public_key: bytes
    time_ms: int
    reason: str
    signature: bytes

    kind = LogKeyEndorsement.kind

    @classmethod
    def of(cls, endorsement: LogKeyEndorsement) -> LogKeyRecord:
        """The record that logs `endorsement`."""
        e, key, old = endorsement, endorsement.key, endorsement.previous
        return cls(e.leaf_index, e.origin, key.key_id, key.suite, key.public_key, old.key_id,
                   old.suite, old.public_key, e.time_ms, e.reason, e.signature)

    def endorsement(self) -> LogKeyEndorsement:
        """The signed rotation this record holds."""
        return LogKeyEndorsement(
            self.origin, self.leaf_index,
            PublicLogKey(self.previous_key_id, self.previous_suite, self.previous_public_key),
            PublicLogKey(self.key_id, self.suite, self.public_key), self.time_ms, self.reason,
            self.signature)

    def commit_bytes(self) -> bytes:
        return self.endorsement().commit_bytes()

    def describe(self) -> str:
        return f"log key rotation #{self.leaf_index} ({self.previous_key_id} -> {self.key_id})"


Record = (PacketRecord | AlertRecord | RejectionRecord | RegistrationRecord | TwinParamsRecord
          | FindingRecord | ErasureRecord | RotationRecord | SnapshotRecord | SessionRecord
          | LogKeyRecord | AccessRecord | SuiteRecord | RetirementRecord | BindingRecord)


@dataclass(frozen=True, slots=True)
class HeadRecord:
    """The latest signed tree head as stored."""

    origin: str
    size: int
    root: bytes
    timestamp_ms: int
    key_id: str
    suite: str
    signature: bytes


@dataclass(frozen=True, slots=True)
class AnchorRecord:
    """A checkpoint the site anchored on a chain, as its own index keeps it."""

    chain_id: int
    contract: str
    size: int
    root: bytes
    note_hash: bytes
    tx_hash: str
    block_number: int
    embedded: bool
    anchored_at_ms: int


@dataclass(frozen=True, slots=True)
class Commit:
    """Everything one batch writes, in one transaction: durable together or not at all."""

    packets: tuple[PacketRecord, ...]
    alerts: tuple[AlertRecord, ...]
    rejections: tuple[RejectionRecord, ...]
    leaf_hashes: tuple[tuple[int, str, bytes], ...]
    head: HeadRecord | None
    device_seqs: dict[str, int]
    registrations: tuple[RegistrationRecord, ...] = ()
    twin_params: tuple[TwinParamsRecord, ...] = ()
    findings: tuple[FindingRecord, ...] = ()
    erasures: tuple[ErasureRecord, ...] = ()
    rotations: tuple[RotationRecord, ...] = ()
    snapshots: tuple[SnapshotRecord, ...] = ()
    sessions: tuple[SessionRecord, ...] = ()
    log_keys: tuple[LogKeyRecord, ...] = ()
    accesses: tuple[AccessRecord, ...] = ()
    suites: tuple[SuiteRecord, ...] = ()
    retirements: tuple[RetirementRecord, ...] = ()
    bindings: tuple[BindingRecord, ...] = ()
