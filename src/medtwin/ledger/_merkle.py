"""RFC 9162 Merkle tree hashing: leaf and node hashes, and an append-only tree.

Leaf hash  = SHA-256(0x00 || leaf data)      (RFC 9162 §2.1.1)
Node hash  = SHA-256(0x01 || left || right)
The tree over n leaves splits at k, the largest power of two below n; the empty tree hashes
to SHA-256 of nothing. `MerkleTree` keeps the compact range (one root per maximal perfect
subtree), so an append costs O(log n) and memory is O(log n).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 hash of one leaf's data."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 hash of an interior node."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """Merkle tree hash of leaves given by their leaf hashes, by the recursive definition."""
    n = len(hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return hashes[0]
    k = 1 << ((n - 1).bit_length() - 1)
    return node_hash(root_from_leaf_hashes(hashes[:k]), root_from_leaf_hashes(hashes[k:]))


class MerkleTree:
    """An append-only RFC 9162 tree holding only its compact range of subtree roots."""

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._size = 0
        self._stack: list[bytes] = []
        for h in leaf_hashes:
            self.append_hash(h)

    @property
    def size(self) -> int:
        return self._size

    def copy(self) -> MerkleTree:
        """An independent tree with the same leaves (O(log n))."""
        twin = MerkleTree()
        twin._size, twin._stack = self._size, list(self._stack)
        return twin

    def append_hash(self, h: bytes) -> int:
        """Append a leaf by its leaf hash; returns the leaf's index."""
        index = self._size
        self._stack.append(h)
        self._size += 1
        merges = (self._size & -self._size).bit_length() - 1
        for _ in range(merges):
            right = self._stack.pop()
            left = self._stack.pop()
            self._stack.append(node_hash(left, right))
        return index

    def append(self, data: bytes) -> int:
        """Append a leaf by its data; returns the leaf's index."""
        return self.append_hash(leaf_hash(data))

    def root(self) -> bytes:
        """The tree head hash over all leaves so far."""
        if not self._stack:
            return EMPTY_ROOT
        acc = self._stack[-1]
        for h in reversed(self._stack[:-1]):
            acc = node_hash(h, acc)
        return acc
