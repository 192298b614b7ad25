"""RFC 9162 inclusion and consistency proofs over the Merkle log, and their verification.

Generation walks the RFC 9162 §2.1.3.1 and §2.1.4.1 definitions and asks a source for each
subtree root it needs: from a list of leaf hashes (`inclusion_proof`, `consistency_proof`),
recomputed from the leaves, O(n) hashes per proof; from a `TileIndex` (`inclusion_proof_from`,
`consistency_proof_from`), O(log n) hashes and at most two tiles of leaf hashes read. Verification
follows the RFC 9162 §2.1.3.2 and §2.1.4.2 algorithms step by step and raises `VerificationError`
on any failure; it never returns a verdict. Arguments that can never be valid (negative sizes, a
leaf hash or root that is not 32 bytes, a range outside the leaves given) raise `ValueError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Protocol

from medtwin.errors import VerificationError
from medtwin.ledger._merkle import EMPTY_ROOT, HASH_SIZE, MerkleTree, node_hash

_INCLUSION = "inclusion-proof"
_CONSISTENCY = "consistency-proof"

#: MTH(D[start:end]): where a proof's generation gets each subtree root it needs.
_RangeRoot = Callable[[int, int], bytes]


class SubtreeRoots(Protocol):
    """A source of the subtree roots of a log's first `size` leaves (a `TileIndex`)."""

    @property
    def size(self) -> int: ...

    def subtree_root(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for 0 <= start <= end <= size."""
        ...


def _split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2): where RFC 9162 splits a tree."""
    return 1 << ((n - 1).bit_length() - 1)


def _check_size(name: str, size: int) -> None:
    if size < 0:
        raise ValueError(f"{name} must be a tree size >= 0, not {size}")


def _check_hash(name: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise ValueError(f"{name} must be a {HASH_SIZE}-byte SHA-256 hash, not {len(value)} bytes")


def _check_leaf_hashes(leaf_hashes: Sequence[bytes], size: int) -> None:
    _check_size("size", size)
    if size > len(leaf_hashes):
        raise ValueError(f"size {size} exceeds the {len(leaf_hashes)} leaf hashes given; "
                         f"pass a size of at most {len(leaf_hashes)}")
    for i in range(size):
        _check_hash(f"leaf hash {i}", leaf_hashes[i])


def _check_within(roots: SubtreeRoots, size: int) -> None:
    _check_size("size", size)
    if size > roots.size:
        raise ValueError(f"size {size} exceeds the {roots.size} leaves indexed; "
                         f"pass a size of at most {roots.size}")


def _check_index(index: int, size: int) -> None:
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of size {size}; "
                         f"pass 0 <= index < size")


def _check_sizes(old_size: int, new_size: int) -> None:
    if old_size > new_size:
        raise ValueError(f"old_size {old_size} is larger than new_size {new_size}; "
                         f"pass old_size <= new_size")


def _check_proof_elements(proof: Sequence[bytes], stage: str, record: str) -> None:
    for i, element in enumerate(proof):
        if len(element) != HASH_SIZE:
            raise VerificationError(
                f"{stage}: element {i} is {len(element)} bytes, not {HASH_SIZE}", record)


def subtree_root(leaf_hashes: Sequence[bytes], start: int, end: int) -> bytes:
    """MTH(D[start:end]) from leaf hashes, in end - start hashes and O(log n) memory."""
    if not 0 <= start <= end <= len(leaf_hashes):
        raise ValueError(f"subtree range [{start}, {end}) must lie within the "
                         f"{len(leaf_hashes)} leaf hashes given")
    return MerkleTree(leaf_hashes[i] for i in range(start, end)).root()


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int, size: int) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(index, D[size]): the audit path proving leaf `index` is logged."""
    _check_leaf_hashes(leaf_hashes, size)
    _check_index(index, size)
    return _inclusion_path(partial(subtree_root, leaf_hashes), index, size)


def inclusion_proof_from(roots: SubtreeRoots, index: int, size: int) -> list[bytes]:
    """`inclusion_proof` of the tree of `size` leaves, its subtree roots taken from `roots`."""
    _check_within(roots, size)
    _check_index(index, size)
    return _inclusion_path(roots.subtree_root, index, size)


def _inclusion_path(root_of: _RangeRoot, index: int, size: int) -> list[bytes]:
    """PATH(index, D[size]) for arguments already checked."""
    # Walk down from the root; each step emits the sibling subtree's root (outermost first).
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        mid = start + _split(end - start)
        if index < mid:
            path.append(root_of(mid, end))
            end = mid
        else:
            path.append(root_of(start, mid))
            start = mid
    path.reverse()
    return path


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes],
                     root: bytes) -> None:
    """Raise VerificationError unless `proof` puts `leaf_hash` at `index` under `root`.

    The RFC 9162 §2.1.3.2 algorithm:
      (0) arguments: size >= 0 and 32-byte hashes (else ValueError); 32-byte proof elements;
      (1) the leaf index lies inside the tree;
      (2) fn = index, sn = size - 1, r = leaf hash;
      (3) fold each proof element into r, failing if the tree has no levels left;
      (4) all levels are used (sn == 0) and r equals the root.
    """
    # (0): argument shapes.
    _check_size("size", size)
    _check_hash("leaf hash", leaf_hash)
    _check_hash("root", root)
    _check_proof_elements(proof, "inclusion proof", _INCLUSION)
    # (1): the index must be inside the tree.
    if not 0 <= index < size:
        raise VerificationError(
            f"inclusion proof: leaf index {index} is outside a tree of size {size}", _INCLUSION)
    # (2): start at the leaf.
    fn, sn, r = index, size - 1, leaf_hash
    # (3): fold the path, choosing left or right from the bits of fn and sn.
    for p in proof:
        if sn == 0:
            raise VerificationError(
                f"inclusion proof: {len(proof)} elements are more than a tree of size {size} "
                f"needs for leaf {index}", _INCLUSION)
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    # (4): every level used, and the computed root is the tree head's.
    if sn != 0:
        raise VerificationError(
            f"inclusion proof: {len(proof)} elements are fewer than a tree of size {size} "
            f"needs for leaf {index}", _INCLUSION)
    if r != root:
        raise VerificationError(
            f"inclusion proof: leaf {index} does not lead to the root of the tree of size {size}",
            _INCLUSION)


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int, new_size: int) -> list[bytes]:
    """RFC 9162 §2.1.4.1 PROOF(old_size, D[new_size]): the tree of old_size is a prefix.

    RFC 9162 defines proofs for 0 < old_size < new_size; for old_size 0 or old_size == new_size
    the proof is empty (nothing to prove beyond the roots themselves).
    """
    _check_size("old_size", old_size)
    _check_leaf_hashes(leaf_hashes, new_size)
    _check_sizes(old_size, new_size)
    return _consistency_path(partial(subtree_root, leaf_hashes), old_size, new_size)


def consistency_proof_from(roots: SubtreeRoots, old_size: int, new_size: int) -> list[bytes]:
    """`consistency_proof` of the trees of `old_size` and `new_size` leaves, its subtree roots
    taken from `roots`."""
    _check_size("old_size", old_size)
    _check_within(roots, new_size)
    _check_sizes(old_size, new_size)
    return _consistency_path(roots.subtree_root, old_size, new_size)


def _consistency_path(root_of: _RangeRoot, old_size: int, new_size: int) -> list[bytes]:
    """PROOF(old_size, D[new_size]) for arguments already checked."""
    if old_size in (0, new_size):
        return []
    # SUBPROOF(m, D[start:end], b) unrolled: each step emits one sibling root (outermost first);
    # `known` is b, true while the old tree is a left prefix whose root the verifier holds.
    path: list[bytes] = []
    m, start, end, known = old_size, 0, new_size, True
    while m != end - start:
        mid = start + _split(end - start)
        if m <= mid - start:
            path.append(root_of(mid, end))
            end = mid
        else:
            path.append(root_of(start, mid))
            m -= mid - start
            start, known = mid, False
    if not known:
        path.append(root_of(start, end))
    path.reverse()
    return path


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> None:
    """Raise VerificationError unless `proof` shows the old tree is a prefix of the new one.

    Steps ((3) to (8) are RFC 9162 §2.1.4.2, which covers 0 < old_size < new_size):
      (0) arguments: sizes >= 0 and 32-byte roots (else ValueError); 32-byte proof elements;
      (1) the log never shrinks: old_size <= new_size;
      (2) equal sizes need an empty proof and equal roots; an empty old tree needs an empty
          proof and the empty-tree root (as Certificate Transparency verifiers do);
      (3) the proof is not empty;
      (4) if old_size is a power of two, old_root is the proof's implicit first element;
      (5) fn = old_size - 1, sn = new_size - 1, shifted right while fn is odd;
      (6) fr = sr = the first element;
      (7) fold each later element into sr (and fr when it is a left sibling of the old tree);
      (8) all levels are used (sn == 0), fr == old_root and sr == new_root.
    """
    # (0): argument shapes.
    _check_size("old_size", old_size)
    _check_size("new_size", new_size)
    _check_hash("old root", old_root)
    _check_hash("new root", new_root)
    _check_proof_elements(proof, "consistency proof", _CONSISTENCY)
    # (1): an append-only log never shrinks.
    if old_size > new_size:
        raise VerificationError(
            f"consistency proof: old size {old_size} is larger than new size {new_size}",
            _CONSISTENCY)
    # (2): the edge cases outside the RFC algorithm.
    if old_size == new_size:
        if proof:
            raise VerificationError(
                f"consistency proof: sizes are equal ({old_size}) but the proof has "
                f"{len(proof)} elements instead of none", _CONSISTENCY)
        if old_root != new_root:
            raise VerificationError(
                f"consistency proof: two trees of size {old_size} have different roots",
                _CONSISTENCY)
        return
    if old_size == 0:
        if proof:
            raise VerificationError(
                f"consistency proof: from an empty tree the proof must be empty, not "
                f"{len(proof)} elements", _CONSISTENCY)
        if old_root != EMPTY_ROOT:
            raise VerificationError(
                "consistency proof: old size 0 but the old root is not the empty-tree root",
                _CONSISTENCY)
        return
    # (3): 0 < old_size < new_size needs at least one element.
    if not proof:
        raise VerificationError(
            f"consistency proof: empty proof for sizes {old_size} -> {new_size}", _CONSISTENCY)
    # (4): a power-of-two old tree is a whole subtree; its root starts the path.
    path = [old_root, *proof] if old_size & (old_size - 1) == 0 else list(proof)
    # (5): skip the levels where the old tree's last leaf is a right child.
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # (6): both roots start from the first element.
    fr = sr = path[0]
    # (7): fold the rest.
    for c in path[1:]:
        if sn == 0:
            raise VerificationError(
                f"consistency proof: {len(proof)} elements are more than sizes "
                f"{old_size} -> {new_size} need", _CONSISTENCY)
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    # (8): every level used, and both roots reproduced.
    if sn != 0:
        raise VerificationError(
            f"consistency proof: {len(proof)} elements are fewer than sizes "
            f"{old_size} -> {new_size} need", _CONSISTENCY)
    if fr != old_root:
        raise VerificationError(
            f"consistency proof: does not lead to the old root of size {old_size}", _CONSISTENCY)
    if sr != new_root:
        raise VerificationError(
            f"consistency proof: does not lead to the new root of size {new_size}", _CONSISTENCY)

