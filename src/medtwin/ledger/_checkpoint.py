"""Signed tree heads in the C2SP tlog-checkpoint body form: origin, size, base64 root hash.

The body is the three lines `origin\\nsize\\nbase64(root)\\n`; the site signs it with its log key.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from medtwin.crypto import LogSigningKey, verify_signature
from medtwin.errors import SignatureError, VerificationError

#: Longest accepted origin line (prevents abuse through huge checkpoint bodies).
MAX_ORIGIN_LENGTH = 256


@dataclass(frozen=True, slots=True)
class SignedTreeHead:
    """A checkpoint of the log and the site's signature over its body."""

    origin: str
    size: int
    root: bytes
    timestamp_ms: int
    key_id: str
    suite: str
    signature: bytes

    def body(self) -> bytes:
        return checkpoint_body(self.origin, self.size, self.root)


def checkpoint_body(origin: str, size: int, root: bytes) -> bytes:
    """The checkpoint text the signature covers."""
    if not origin or "\n" in origin or len(origin) > MAX_ORIGIN_LENGTH:
        raise ValueError("checkpoint: origin must be one non-empty line of at most 256 chars")
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n".encode()


def sign_tree_head(key: LogSigningKey, origin: str, size: int, root: bytes,
                   timestamp_ms: int) -> SignedTreeHead:
    """Sign the checkpoint of a tree of `size` leaves with root `root`."""
    signature = key.sign(checkpoint_body(origin, size, root))
    return SignedTreeHead(origin, size, root, timestamp_ms, key.key_id, key.suite, signature)


def verify_tree_head(head: SignedTreeHead, public_key: bytes) -> None:
    """Raise VerificationError unless the site's key signed this checkpoint."""
    try:
        verify_signature(head.suite, public_key, head.body(), head.signature)
    except SignatureError as exc:
        raise VerificationError(
            f"checkpoint: invalid signature on tree head of size {head.size}", "tree-head"
        ) from exc
