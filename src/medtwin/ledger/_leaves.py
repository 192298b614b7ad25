"""What a log leaf commits to: a record's kind, id and the hash of its stored bytes.

Leaves hold no patient values: they commit to ciphertext and metadata only, so tree heads can
be shared or anchored publicly.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Protocol

from medtwin.ledger._merkle import leaf_hash

LEAF_CONTEXT = b"medtwin/leaf/v1\n"


def leaf_data(kind: str, record_id: str, record_bytes: bytes) -> bytes:
    """The leaf data of a stored record: context, kind, id and SHA-256 of its bytes."""
    k, r = kind.encode(), record_id.encode()
    return (LEAF_CONTEXT + struct.pack(">H", len(k)) + k + struct.pack(">H", len(r)) + r
            + hashlib.sha256(record_bytes).digest())


class LoggedRecord(Protocol):
    """What a record on the log shows of itself: its kind, its leaf index and the bytes
    the leaf commits to."""

    @property
    def kind(self) -> str: ...

    @property
    def leaf_index(self) -> int: ...

    def commit_bytes(self) -> bytes: ...


def record_leaf_hash(record: LoggedRecord) -> bytes:
    """The log leaf hash of a record: its leaf data, by kind and leaf index, hashed."""
    return leaf_hash(leaf_data(record.kind, str(record.leaf_index), record.commit_bytes()))
