"""Log signing key rotation as a chain of endorsements: the outgoing key signs the incoming one.

A verifier pins the log's first key (or the last one it followed). Each rotation is a statement
(the log's origin, the leaf it is logged at, the previous key, the new key, when and why)
signed by the previous key, so whoever trusts one key can follow every later key without being
told them out of band, and a key nobody endorsed is refused. Pure functions; no I/O.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from medtwin.crypto._keys import LogSigningKey, PublicLogKey, _b64
from medtwin.crypto._suites import verify_signature
from medtwin.domain import canonical_json
from medtwin.errors import SignatureError

#: Names the statement's format, so its bytes can never be read as another signed message.
STATEMENT_CONTEXT = "medtwin/log-key-rotation/v1"


@dataclass(frozen=True, slots=True)
class LogKeyEndorsement:
    """One rotation: `previous` signed that `key` signs the log `origin` from leaf
    `leaf_index` on (the rotation's own record, whose tree head `key` already signs)."""

    origin: str
    leaf_index: int
    previous: PublicLogKey
    key: PublicLogKey
    time_ms: int
    reason: str
    signature: bytes = field(repr=False)

    #: The kind of the log record (and leaf) that carries a rotation.
    kind = "log-key"

    def statement(self) -> bytes:
        """The bytes the previous key signs (RFC 8785 canonical JSON)."""
        return endorsement_statement(self.origin, self.leaf_index, self.previous, self.key,
                                     self.time_ms, self.reason)

    def commit_bytes(self) -> bytes:
        """What the log leaf of this rotation commits to: the statement and its signature."""
        return canonical_json([self.statement().decode(), _b64(self.signature)])

    @classmethod
    def from_json(cls, document: Any) -> LogKeyEndorsement:
        """Parse `as_json`'s form; KeyError, TypeError or ValueError if it is not that."""
        return cls(str(document["origin"]), int(document["leaf_index"]),
                   PublicLogKey.from_json(document["previous"]),
                   PublicLogKey.from_json(document["key"]), int(document["time_ms"]),
                   str(document["reason"]), base64.b64decode(document["signature"],
                                                             validate=True))

    def as_json(self) -> dict[str, object]:
        """The rotation as JSON (what `/v1/ledger/log-keys` serves)."""
        return {"origin": self.origin, "leaf_index": self.leaf_index,
                "previous": self.previous.as_json(), "key": self.key.as_json(),
                "time_ms": self.time_ms, "reason": self.reason,
                "signature": _b64(self.signature)}


def endorsement_statement(origin: str, leaf_index: int, previous: PublicLogKey,
                          key: PublicLogKey, time_ms: int, reason: str) -> bytes:
    """The canonical statement of one rotation."""
    return canonical_json({"context": STATEMENT_CONTEXT, "origin": origin,
                           "leaf_index": leaf_index, "previous": previous.as_json(),
                           "key": key.as_json(), "time_ms": time_ms, "reason": reason})


def endorse_log_key(previous: LogSigningKey, key: PublicLogKey, origin: str, leaf_index: int,
                    time_ms: int, reason: str) -> LogKeyEndorsement:
    """The outgoing key's signed endorsement of `key`."""
    old = previous.public
    statement = endorsement_statement(origin, leaf_index, old, key, time_ms, reason)
    return LogKeyEndorsement(origin, leaf_index, old, key, time_ms, reason,
                             previous.sign(statement))


def check_endorsement(trusted: PublicLogKey, endorsement: LogKeyEndorsement) -> None:
    """Raise SignatureError unless `trusted` is the endorsement's previous key and signed it."""
    if not trusted.same_key(endorsement.previous):
        raise SignatureError(
            f"log key: the rotation at leaf {endorsement.leaf_index} was endorsed by key "
            f"{endorsement.previous.key_id!r}, not by the key in force ({trusted.key_id!r})")
    try:
        verify_signature(trusted.suite, trusted.public_key, endorsement.statement(),
                         endorsement.signature)
    except SignatureError as exc:
        raise SignatureError(
            f"log key: the endorsement of {endorsement.key.key_id!r} at leaf "
            f"{endorsement.leaf_index} is not signed by {trusted.key_id!r}") from exc


def follow_log_key(trusted: PublicLogKey, endorsements: Sequence[LogKeyEndorsement],
                   origin: str) -> tuple[PublicLogKey, list[LogKeyEndorsement]]:
    """The key that `trusted` leads to through a log's rotations (any order), and the
    rotations followed, oldest first. Rotations before the one `trusted` signed are skipped;
    from there on each must be signed by the key before it (else SignatureError), so nobody
    adopts a key their pinned key did not endorse, directly or in a chain."""
    current = trusted
    followed: list[LogKeyEndorsement] = []
    for endorsement in sorted(endorsements, key=lambda e: e.leaf_index):
        if endorsement.origin != origin:
            raise SignatureError(f"log key: a rotation names log {endorsement.origin!r}, not "
                                 f"{origin!r}")
        if not followed and not endorsement.previous.same_key(current):
            continue
        check_endorsement(current, endorsement)
        current = endorsement.key
        followed.append(endorsement)
    return current, followed
