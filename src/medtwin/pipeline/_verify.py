"""`medtwin verify`: recompute the log from the store and check it against the signed head.

  (1) the latest signed tree head exists (if anything was logged) and its signature verifies
      with the log key in force at its size: the log's first key, or the last one a logged
      rotation endorsed (1b): each rotation is signed by the key it replaced, names this log,
      and brings in the next key of the site's own key history (so a retired key, even
      stolen, cannot endorse a key of its own); at most the newest key of that history may
      be not yet logged (a rotation interrupted before its record was written);
  (2) records are numbered 0, 1, 2, … with no gap or duplicate;
  (3) each record's leaf, recomputed from its stored bytes, equals the stored leaf hash;
  (4) the tree over the recomputed leaves has the signed head's size and root;
  (5) every device packet comes from a device registered, and active, for that patient when it
      arrived, with a sequence number above all earlier ones of that device; the devices the
      gate trusts (key, patient, status, last sequence number) are exactly what the log implies;
  (6) with the site's keys: every device packet's stored bytes carry a valid signature of the
      device key registered when it arrived, and say the device, sequence number and send
      time its record says (a site cannot fabricate or re-file device data);
  (6b) a session packet instead traces to a logged session of its device, whose handshake
      carries the device's valid signature and names that session id, not yet ended when the
      packet came, and opened with the key the device still had; the packet's stored
      bytes say the device, sequence number and send time its record says. Its per-packet
      tag used the session key, which only the site and the device held: the handshake is
      what anyone can re-check;
  (7) records of an erased patient (their data key destroyed) are checked by (2)-(5) from
      their stored bytes alone, counted as `unreadable`, and never opened; an erased
      patient whose key is back in the store fails verification.
  (7b) every token binding carries the EIP-191 signature of its address's key over the
      binding message (this log's origin, that token), and the token table binds exactly
      what the last binding of each token says; a record beyond the signed head (pending)
      must still match the leaf stored with it, as (3) holds the signed ones;
  (8) every checkpoint someone else holds (`claims`: anchors in the site's index and on the
      chain, witness cosignatures) names the root the log had at its size: the log is
      consistent with all of them (a log rolled back below an anchor fails too).
The first failure raises VerificationError naming the record (or the head). The head is read
first and the check covers the records it signs, so a site that keeps ingesting while it is
verified is checked consistently; records appended since are reported as pending.
"""

from __future__ import annotations

import base64
import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeGuard

from medtwin.crypto import (
    KeyRing,
    PublicLogKey,
    WrappedKey,
    check_endorsement,
    handshake_transcript,
    verify_signature,
)
from medtwin.domain import PACKET_SIGNING_CONTEXT, DeviceStatus, Provenance
from medtwin.errors import (
    DecryptionError,
    InvalidInputError,
    SignatureError,
    VerificationError,
)
from medtwin.ingest import decode_json
from medtwin.ledger import (
    EMPTY_ROOT,
    MerkleTree,
    SignedTreeHead,
    check_binding,
    record_leaf_hash,
    verify_tree_head,
)
from medtwin.pipeline._codec import SESSION_MARK, packet_aad, signed_bytes
from medtwin.store import (
    AlertRecord,
    BindingRecord,
    FindingRecord,
    LogKeyRecord,
    PacketRecord,
    Record,
    RegistrationRecord,
    RejectionRecord,
    SessionRecord,
    Store,
    TwinParamsRecord,
)


@dataclass(frozen=True, slots=True)
class CheckpointClaim:
    """A root that someone outside the store holds for a tree size: an anchor (in the
    site's index or on the chain) or a witness's cosignature. `where` names it."""

    size: int
    root: bytes
    where: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What a successful verification covered."""

    records: int
    packets: int
    alerts: int
    rejections: int
    tree_size: int
    root_hex: str
    pending: int = 0
    registrations: int = 0
    signatures_checked: int = 0
    erasures: int = 0
    unreadable: int = 0
    rotations: int = 0
    checkpoints_checked: int = 0
    snapshots: int = 0
    sessions: int = 0
    log_key_rotations: int = 0
    #: Consent-gated access decisions logged (records: one per request).
    accesses: int = 0
    #: Changes of the configured AEAD suite logged.
    suite_changes: int = 0
    #: Site KEKs retired (removed from the key file).
    kek_retirements: int = 0
    #: Token bindings re-checked (7b): each token's last one, its holder's signature and the
    #: token table's address.
    token_bindings_checked: int = 0
    #: The log key in force at the signed head (the first key, or the last one endorsed).
    log_key_id: str = ""
    #: That key itself (None only for a report built by hand).
    log_key: PublicLogKey | None = None


def verify_store(store: Store, log_keys: Sequence[PublicLogKey],
                 keyring: KeyRing | None = None,
                 claims: Sequence[CheckpointClaim] = ()) -> VerifyReport:
    """Check every stored record against the Merkle log and the signed tree head, signed by
    the log keys `log_keys` (the site's key history, oldest first: `SiteKeys.log_key_history`)
    in the order the log's rotations bring them in; with a `keyring`, also every device
    signature; and every claimed checkpoint against the log."""
    if not log_keys:
        raise ValueError("verify: give the site's log keys, oldest first (at least one)")
    head_row = store.latest_head()
    head = None
    if head_row is not None:
        head = SignedTreeHead(head_row.origin, head_row.size, head_row.root,
                              head_row.timestamp_ms, head_row.key_id, head_row.suite,
                              head_row.signature)
    log_key, rotated = log_keys[0], 0
    signed_size = head.size if head is not None else 0
    claimed: defaultdict[int, list[CheckpointClaim]] = defaultdict(list)
    for claim in claims:
        if claim.size > signed_size:
            raise VerificationError(
                f"checkpoint: {claim.where} is of size {claim.size}, beyond the signed log "
                f"(size {signed_size}): the log was truncated or rolled back", claim.where)
        claimed[claim.size].append(claim)
    _check_claims(claimed.pop(0, []), EMPTY_ROOT)
    stored = store.leaf_hashes()[:signed_size]
    tree = MerkleTree()
    counts = {"packet": 0, "alert": 0, "rejection": 0, "registration": 0, "twin-params": 0,
              "finding": 0, "erasure": 0, "kek-rotation": 0, "snapshot": 0, "session": 0,
              "log-key": 0, "access": 0, "aead-suite": 0, "kek-retirement": 0,
              "token-binding": 0}
    pending = 0
    registered: dict[str, RegistrationRecord] = {}
    sessions: dict[str, tuple[SessionRecord, RegistrationRecord]] = {}
    bindings: dict[bytes, BindingRecord] = {}
    last_seq: dict[str, int] = {}
    wrapped = ({p: WrappedKey(*key) for p, key in store.patient_wrapped_keys().items()}
               if keyring is not None else {})
    erased = store.erased_patients()
    revived = erased & set(store.patient_wrapped_keys())
    if revived:
        raise VerificationError(
            f"verify: {len(revived)} erased patient(s) have a data key again (a patients table "
            "restored from a backup?); erase them again before trusting this store", "patients")
    signatures = unreadable = 0
    for record in store.records():
        if record.leaf_index >= signed_size:
            # Written after the head was read (or outside medtwin): no head covers it yet,
            # but it counts for what the device and token tables should hold now, so it
            # must be the record logged.
            pending += 1
            _check_pending(store, record)
            if isinstance(record, RegistrationRecord):
                registered[record.device_id] = record
            elif isinstance(record, BindingRecord):
                bindings[record.token_hash] = record
            elif _uses_sequence(record) and record.device_id:
                seq = int(record.seq or 0)
                last_seq[record.device_id] = max(last_seq.get(record.device_id, -1), seq)
            continue
        # (2): numbering
        if record.leaf_index != tree.size:
            raise VerificationError(
                f"log: expected record #{tree.size} but found {record.describe()}: a record "
                "is missing or duplicated", record.describe())
        # (3): leaf
        h = record_leaf_hash(record)
        if record.leaf_index >= len(stored) or stored[record.leaf_index] != h:
            raise VerificationError(
                f"log: {record.describe()} does not match its log leaf: the record was altered",
                record.describe())
        tree.append_hash(h)
        if tree.size in claimed:
            _check_claims(claimed.pop(tree.size), tree.root())
        counts[record.kind] += 1
        # (7): sealed under a destroyed key: checked by hash only
        shredded = _sealed_for(record) in erased
        unreadable += shredded
        if isinstance(record, RegistrationRecord):
            registered[record.device_id] = record
        elif isinstance(record, SessionRecord):
            opener = registered.get(record.device_id)
            _check_session(record, opener, keyring is not None)
            assert opener is not None  # _check_session refuses a session without one
            sessions[record.session_id] = (record, opener)
        elif isinstance(record, BindingRecord):
            bindings[record.token_hash] = record
        elif isinstance(record, LogKeyRecord):
            # (1b): a rotation the key in force endorsed
            log_key = _check_rotation(record, log_key, log_keys, rotated, head)
            rotated += 1
        elif isinstance(record, RejectionRecord) and record.seq is not None:
            _check_sequence(record, record.device_id or "", record.seq, last_seq)
        elif (isinstance(record, PacketRecord)
              and record.provenance == Provenance.DEVICE_SIGNED.value):
            # (5): a device registered to that patient, in sequence (a quarantined device's
            # packets are stored, held from the twin)
            registration = registered.get(record.device_id)
            if (registration is None or registration.patient_id != record.patient_id
                    or registration.status not in _STATUSES or not record.signature):
                raise VerificationError(
                    f"log: {record.describe()} is not from a device registered to its "
                    "patient", record.describe())
            _check_sequence(record, record.device_id, record.seq, last_seq)
            if record.signature.startswith(SESSION_MARK):
                # (6b): a session its device opened, logged before the packet
                found = sessions.get(record.signature[len(SESSION_MARK):].hex())
                session, opener = found if found is not None else (None, None)
                if (session is None or opener is None
                        or session.device_id != record.device_id
                        or record.received_at_ms > session.expires_at_ms
                        or (opener.suite, opener.public_key)
                        != (registration.suite, registration.public_key)):
                    raise VerificationError(
                        f"log: {record.describe()} names no live session of its device opened "
                        "with the key it had then", record.describe())
                if keyring is not None and not shredded:
                    _check_packet_claims(record, keyring, wrapped)
            elif keyring is not None and not shredded:
                # (6): the device's signature over the stored bytes
                _check_signature(record, registration, keyring, wrapped)
                signatures += 1
    if head is None:
        if pending:
            raise VerificationError("checkpoint: records exist but no signed tree head",
                                    "tree-head")
    else:
        # (1): the head, by the key in force at its size
        _check_head(head, log_key, tree, len(stored))
    if rotated < len(log_keys) - 2:
        raise VerificationError(
            f"log: the site's key file holds {len(log_keys)} log keys, but the log's "
            f"rotations bring in only {rotated + 1}: rotation records are missing (a store "
            "rolled back?) or the key file is not this log's", "log-keys")
    bindings_checked = _check_bindings(store, bindings, head)
    # (5): the gate's device table against the log
    trusted = {d.device_id: d for d in store.devices()}
    for device_id in sorted(set(trusted) | set(registered)):
        device, reg = trusted.get(device_id), registered.get(device_id)
        if device is None or reg is None or (
                device.patient_id, device.suite, device.public_key, device.status.value,
                device.last_seq) != (reg.patient_id, reg.suite, reg.public_key, reg.status,
                                     last_seq.get(device_id, -1)):
            raise VerificationError(
                f"devices: device {device_id!r} differs from its logged registration and "
                "sequence numbers: the devices table was altered", f"device {device_id}")
    return _report(tree, counts, pending, signatures, unreadable, claims, log_key,
                   bindings_checked)


def record_logged(store: Store, record: Record) -> bool:
    """Whether the leaf stored at `record`'s index is the record's own (read now)."""
    return store.leaf_hashes(record.leaf_index, record.leaf_index + 1) == [
        record_leaf_hash(record)]


def _check_pending(store: Store, record: Record) -> None:
    """A record beyond the signed head, which the device and token tables are held to (5,
    7b), matches the leaf stored with it (read now: a live site writes both in one
    transaction), so its row cannot be rewritten alone to register a device or rebind a
    token."""
    if not record_logged(store, record):
        raise VerificationError(
            f"log: {record.describe()}, beyond the signed head, does not match its log leaf: "
            "the record was altered (or written outside medtwin); do not trust the device or "
            "token it names until it is registered or bound again", record.describe())


def _check_bindings(store: Store, bindings: dict[bytes, BindingRecord],
                    head: SignedTreeHead | None) -> int:
    """(7b) The token table against the logged bindings, each signature re-checked; returns
    how many bindings were checked."""
    for binding in bindings.values():
        assert head is not None   # a binding within the head implies one
        try:
            check_binding(head.origin, binding.token_hash, binding.address, binding.signature)
        except InvalidInputError as exc:
            raise VerificationError(f"log: {binding.describe()}: {exc}",
                                    binding.describe()) from exc
    held = store.token_addresses()
    expected = {h: b.address for h, b in bindings.items()}
    if held != expected:
        changed = sorted(set(held.items()) ^ set(expected.items()))
        raise VerificationError(
            f"tokens: {len(changed)} token address(es) differ from their logged bindings "
            "(the token table was altered, or bound outside medtwin): have each holder bind "
            "again through POST /v1/tokens/me/address", "token-addresses")
    return len(bindings)


def _check_rotation(record: LogKeyRecord, in_force: PublicLogKey,
                    log_keys: Sequence[PublicLogKey], rotated: int,
                    head: SignedTreeHead | None) -> PublicLogKey:
    """(1b) One logged rotation: endorsed by the key in force, for this log, bringing in the
    next key of the site's history; returns the key it brings in."""
    endorsement = record.endorsement()
    try:
        check_endorsement(in_force, endorsement)
    except SignatureError as exc:
        raise VerificationError(f"log: {record.describe()}: {exc}", record.describe()) from exc
    if head is not None and endorsement.origin != head.origin:
        raise VerificationError(f"log: {record.describe()} names log {endorsement.origin!r}, "
                                f"not {head.origin!r}", record.describe())
    if rotated + 1 >= len(log_keys) or not endorsement.key.same_key(log_keys[rotated + 1]):
        raise VerificationError(
            f"log: {record.describe()} brings in a log key the site's key file does not hold "
            "in that place: a rotation forged with a retired key, or a key file from another "
            "site", record.describe())
    return endorsement.key


def _check_head(head: SignedTreeHead, log_key: PublicLogKey, tree: MerkleTree,
                leaves: int) -> None:
    """(1) and (4): the head is signed by the key in force at its size and names the root
    of the log recomputed from the store."""
    if head.key_id != log_key.key_id or head.suite != log_key.suite:
        raise VerificationError(
            f"checkpoint: signed by key {head.key_id!r}, but the key in force at size "
            f"{head.size} is {log_key.key_id!r} (the first key, or the last rotation logged)",
            "tree-head")
    verify_tree_head(head, log_key.public_key)
    if tree.size < head.size or leaves < head.size:
        raise VerificationError(
            f"log: the signed head covers {head.size} records but the store holds "
            f"{tree.size} records and {leaves} leaves: record #{tree.size} is missing",
            f"record #{tree.size}")
    if head.root != tree.root():
        raise VerificationError(
            f"checkpoint: signed head (size {head.size}) does not match the log recomputed from "
            f"the store (size {tree.size}): the log was altered", "tree-head")


def _report(tree: MerkleTree, counts: dict[str, int], pending: int, signatures: int,
            unreadable: int, claims: Sequence[CheckpointClaim],
            log_key: PublicLogKey, bindings_checked: int) -> VerifyReport:
    return VerifyReport(tree.size, counts["packet"], counts["alert"], counts["rejection"],
                        tree.size, tree.root().hex(), pending, counts["registration"],
                        signatures, counts["erasure"], unreadable, counts["kek-rotation"],
                        len(claims), counts["snapshot"], counts["session"], counts["log-key"],
                        counts["access"], counts["aead-suite"], counts["kek-retirement"],
                        bindings_checked, log_key.key_id, log_key)


def _check_claims(claims: Sequence[CheckpointClaim], root: bytes) -> None:
    for claim in claims:
        if claim.root != root:
            raise VerificationError(
                f"checkpoint: {claim.where} holds another root for size {claim.size} than the "
                "log recomputed from the store: the log was altered after it was anchored or "
                "cosigned (or the site showed a split view)", claim.where)


_STATUSES = frozenset(s.value for s in DeviceStatus)


def _sealed_for(record: Record) -> str | None:
    """The patient whose data key seals part of `record`, or None for records in the clear."""
    if isinstance(record, PacketRecord | AlertRecord | TwinParamsRecord | FindingRecord):
        return record.patient_id
    return None


def _uses_sequence(record: Record) -> TypeGuard[PacketRecord | RejectionRecord]:
    """Whether a record used up a device sequence number (authentic packets only)."""
    if isinstance(record, PacketRecord):
        return record.provenance == Provenance.DEVICE_SIGNED.value
    return isinstance(record, RejectionRecord) and record.seq is not None


def _check_sequence(record: PacketRecord | RejectionRecord, device_id: str, seq: int,
                    last_seq: dict[str, int]) -> None:
    if seq <= last_seq.get(device_id, -1):
        raise VerificationError(
            f"log: {record.describe()} reuses sequence number {seq} of device {device_id!r}: "
            "a replayed or duplicated packet", record.describe())
    last_seq[device_id] = seq


def _check_session(record: SessionRecord, registration: RegistrationRecord | None,
                   signatures: bool) -> None:
    """(6b): the logged handshake is its device's, for this session id, and (with
    `signatures`) signed by the device's registered key."""
    where = record.describe()
    if (registration is None or registration.patient_id != record.patient_id
            or registration.status not in _STATUSES):
        raise VerificationError(f"log: {where} is not from a device registered to its "
                                "patient", where)
    try:
        envelope = decode_json(record.handshake)
        transcript = handshake_transcript(envelope["handshake"])
        if (envelope["handshake"]["device_id"] != record.device_id
                or hashlib.sha256(transcript).digest()[:16].hex() != record.session_id):
            raise SignatureError("the handshake is another session's")
        if signatures:
            verify_signature(registration.suite, registration.public_key, transcript,
                             base64.b64decode(envelope["signature"], validate=True))
    except (SignatureError, KeyError, TypeError, ValueError) as exc:
        raise VerificationError(f"session: {where} is not a handshake its device signed for "
                                "that session", where) from exc


def _stored_packet(record: PacketRecord, keyring: KeyRing,
                   wrapped: dict[str, WrappedKey]) -> bytes:
    """The device packet's stored bytes (as signed, or as its session sealed them), checked
    to say the device, sequence number and send time its record says."""
    payload = keyring.open(record.patient_id, wrapped[record.patient_id], record.envelope,
                           packet_aad(record.leaf_index, record.patient_id))
    signed = signed_bytes(payload)
    if signed is None:
        raise SignatureError("no device bytes")
    packet = decode_json(signed)
    if (packet["device_id"], packet["seq"], packet["sent_at"]) != (
            record.device_id, record.seq, record.sent_at_ms):
        raise SignatureError("the stored packet is another packet")
    return signed


def _check_packet_claims(record: PacketRecord, keyring: KeyRing,
                         wrapped: dict[str, WrappedKey]) -> None:
    """(6b): a session packet's stored bytes say what its record says."""
    where = record.describe()
    try:
        _stored_packet(record, keyring, wrapped)
    except (DecryptionError, SignatureError, KeyError, TypeError) as exc:
        raise VerificationError(f"session: {where} does not hold the packet its record "
                                "describes: the packet was altered", where) from exc


def _check_signature(record: PacketRecord, registration: RegistrationRecord,
                     keyring: KeyRing, wrapped: dict[str, WrappedKey]) -> None:
    """(6): the stored bytes say what the record says and carry the device's signature."""
    where = record.describe()
    try:
        signed = _stored_packet(record, keyring, wrapped)
        verify_signature(registration.suite, registration.public_key,
                         PACKET_SIGNING_CONTEXT + signed, record.signature or b"")
    except (DecryptionError, SignatureError, KeyError, TypeError) as exc:
        raise VerificationError(f"signature: {where} is not signed by its device's registered "
                                "key: the packet was altered or fabricated", where) from exc
