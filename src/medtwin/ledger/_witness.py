"""A witness's check of one log, as pure functions: verify, compare with what was seen, cosign.

A witness remembers the last checkpoint it cosigned (`WitnessState`). `witness_step` takes the
log's next checkpoint note and the consistency proof from that checkpoint, and either cosigns
the new one or raises: `VerificationError` when the note is not the log's, `SplitViewError`
when the log has shown two trees that cannot both be true (the witness must then refuse to
cosign and report it; a log that does this is misbehaving, not merely slow). No I/O here.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from medtwin.crypto import LogKeyEndorsement, PublicLogKey
from medtwin.errors import SplitViewError, VerificationError
from medtwin.ledger._checkpoint import checkpoint_body
from medtwin.ledger._leaves import record_leaf_hash
from medtwin.ledger._merkle import EMPTY_ROOT, HASH_SIZE
from medtwin.ledger._note import (
    SIGNATURE_PREFIX,
    Checkpoint,
    NoteSigner,
    NoteVerifier,
    cosign_checkpoint,
    open_checkpoint_note,
)
from medtwin.ledger._proofs import verify_consistency

_RECORD = "witness"


@dataclass(frozen=True, slots=True)
class WitnessState:
    """The last checkpoint a witness cosigned for one log (size 0 and the empty root at first)."""

    origin: str
    size: int = 0
    root: bytes = EMPTY_ROOT
    #: The log key this witness trusts now, once it followed a rotation (else the pinned one).
    log_key: PublicLogKey | None = None


class WitnessStep(NamedTuple):
    """The outcome of one round: the state to keep, the checkpoint seen and the cosignature."""

    state: WitnessState
    checkpoint: Checkpoint
    cosignature: str


def witness_step(state: WitnessState, note: str, proof: Sequence[bytes], log: NoteVerifier,
                 witness: NoteSigner, now_s: int) -> WitnessStep:
    """Cosign the log's checkpoint `note` if it extends `state` (by `proof`); raise if not.

    Steps:
      (0) the note is signed by the pinned log key (else VerificationError);
      (1) its origin is the pinned log's (else VerificationError);
      (2) the log never shrinks below a checkpoint already cosigned (else SplitViewError);
      (3) a checkpoint of the size already cosigned has the same root (else SplitViewError);
      (4) a larger one is consistent with the cosigned one by `proof` (else SplitViewError);
      (5) cosign it at `now_s` and remember it.
    """
    # (0): the pinned log's signature.
    try:
        checkpoint, _opened = open_checkpoint_note(note, [log])
    except VerificationError as exc:
        raise VerificationError(f"witness: checkpoint is not signed by the pinned log key "
                                f"{log.name}: {exc}", _RECORD) from exc
    # (1): the pinned log.
    if checkpoint.origin != state.origin:
        raise VerificationError(f"witness: checkpoint is for log {checkpoint.origin!r}, but "
                                f"this witness follows {state.origin!r}", _RECORD)
    seen = f"size {state.size} root {_b64(state.root)}"
    shown = f"size {checkpoint.size} root {_b64(checkpoint.root)}"
    # (2): an append-only log never shrinks.
    if checkpoint.size < state.size:
        raise SplitViewError(f"witness: split view: log {state.origin} rolled back to {shown} "
                             f"after this witness cosigned {seen}", _RECORD)
    # (3): one size, one root.
    if checkpoint.size == state.size and checkpoint.root != state.root:
        raise SplitViewError(f"witness: split view: log {state.origin} shows {shown}, but "
                             f"this witness cosigned {seen}", _RECORD)
    # (4): the new tree extends the cosigned one (a proof that is not 32-byte hashes is
    # malformed, not evidence of a fork).
    if any(len(p) != HASH_SIZE for p in proof):
        raise VerificationError(f"witness: the consistency proof from log {state.origin} is "
                                f"malformed (hashes of {HASH_SIZE} bytes expected)", _RECORD)
    try:
        verify_consistency(state.size, checkpoint.size, state.root, checkpoint.root, proof)
    except VerificationError as exc:
        raise SplitViewError(f"witness: split view: log {state.origin} shows {shown}, which "
                             f"is not consistent with the cosigned {seen}: {exc}",
                             _RECORD) from exc
    # (5): cosign.
    body = checkpoint_body(checkpoint.origin, checkpoint.size, checkpoint.root)
    line = cosign_checkpoint(body, witness, now_s)
    return WitnessStep(WitnessState(checkpoint.origin, checkpoint.size, checkpoint.root,
                                    state.log_key), checkpoint, line)


def log_key_leaf_hash(endorsement: LogKeyEndorsement) -> bytes:
    """The log leaf hash of a rotation's record, to check its inclusion in a checkpoint."""
    return record_leaf_hash(endorsement)


def cosignature_key_name(line: str) -> str:
    """The key name a cosignature line claims, so a site can look up that witness's key."""
    name, space, _rest = line.removeprefix(SIGNATURE_PREFIX).partition(" ")
    if not line.startswith(SIGNATURE_PREFIX) or not space or not name:
        raise VerificationError("witness: a cosignature line is '\u2014 <name> <base64>' "
                                "ending in a newline", _RECORD)
    return name


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
