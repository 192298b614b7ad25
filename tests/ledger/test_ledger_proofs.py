"""Inclusion and consistency proofs agree with RFC 9162 (a naive reference written from the
recursive definitions, and the RFC's worked example), verify against the log's roots, and
any tampering makes verification raise."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import medtwin.ledger._merkle as merkle_module
from medtwin.errors import VerificationError
from medtwin.ledger import (
    EMPTY_ROOT,
    MerkleTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)
from medtwin.ledger._proofs import subtree_root

MAX_LEAVES = 200


# The reference: RFC 9162 §2.1.1, §2.1.3.1 and §2.1.4.1 transcribed over leaf *data* ----------

def ref_mth(d: list[bytes]) -> bytes:
    """MTH(D[n])."""
    n = len(d)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = ref_split(n)
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_split(n: int) -> int:
    """The largest power of two smaller than n."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    """PATH(m, D[n])."""
    n = len(d)
    if n == 1:
        return []
    k = ref_split(n)
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b)."""
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = ref_split(n)
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def ref_proof(m: int, d: list[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) = SUBPROOF(m, D[n], true)."""
    return ref_subproof(m, d, True)


# The RFC 9162 §2.1.5 example tree of seven leaves, built by hand ------------------------------

def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


D7 = [f"d{i}".encode() for i in range(7)]
a, b, c, d, e, f, j = (hashlib.sha256(b"\x00" + x).digest() for x in D7)
g, h, i = _node(a, b), _node(c, d), _node(e, f)
k, l = _node(g, h), _node(i, j)  # noqa: E741 - the RFC's name for this node
ROOT7 = _node(k, l)
HASHES7 = [a, b, c, d, e, f, j]

RFC_PATHS = {0: [b, h, l], 3: [c, g, l], 4: [f, j, k], 6: [i, k]}
RFC_CONSISTENCY = {3: [c, d, g, l], 4: [l], 6: [i, j, k]}
RFC_OLD_ROOTS = {3: _node(g, c), 4: k, 6: _node(k, i)}


def test_reference_reproduces_the_rfc_example() -> None:
    assert ref_mth(D7) == ROOT7
    for index, path in RFC_PATHS.items():
        assert ref_path(index, D7) == path
    for old, proof in RFC_CONSISTENCY.items():
        assert ref_proof(old, D7) == proof
        assert ref_mth(D7[:old]) == RFC_OLD_ROOTS[old]


@pytest.mark.parametrize("index", sorted(RFC_PATHS))
def test_rfc_example_inclusion(index: int) -> None:
    assert inclusion_proof(HASHES7, index, 7) == RFC_PATHS[index]
    verify_inclusion(HASHES7[index], index, 7, RFC_PATHS[index], ROOT7)


@pytest.mark.parametrize("old", sorted(RFC_CONSISTENCY))
def test_rfc_example_consistency(old: int) -> None:
    assert consistency_proof(HASHES7, old, 7) == RFC_CONSISTENCY[old]
    verify_consistency(old, 7, RFC_OLD_ROOTS[old], ROOT7, RFC_CONSISTENCY[old])


def test_small_trees_by_hand() -> None:
    # Size 1: the leaf is the root and the path is empty.
    assert inclusion_proof([a], 0, 1) == []
    verify_inclusion(a, 0, 1, [], a)
    # Size 2: each leaf's path is the other leaf; 1 -> 2 needs only the new leaf.
    assert inclusion_proof([a, b], 0, 2) == [b]
    assert inclusion_proof([a, b], 1, 2) == [a]
    assert consistency_proof([a, b], 1, 2) == [b]
    verify_consistency(1, 2, a, g, [b])
    # Size 3: the odd leaf hangs off the root.
    root3 = _node(g, c)
    assert inclusion_proof([a, b, c], 2, 3) == [g]
    assert inclusion_proof([a, b, c], 1, 3) == [a, c]
    assert consistency_proof([a, b, c], 1, 3) == [b, c]
    assert consistency_proof([a, b, c], 2, 3) == [c]
    verify_consistency(1, 3, a, root3, [b, c])
    verify_consistency(2, 3, g, root3, [c])
    # Size 8: a perfect tree; the first half's root is all a 4 -> 8 proof needs.
    x = hashlib.sha256(b"\x00x").digest()
    hashes8 = [*HASHES7, x]
    right = _node(i, _node(j, x))
    assert inclusion_proof(hashes8, 5, 8) == [e, _node(j, x), k]
    assert inclusion_proof(hashes8, 7, 8) == [j, i, k]
    assert consistency_proof(hashes8, 4, 8) == [right]
    assert consistency_proof(hashes8, 7, 8) == [j, x, i, k]
    verify_consistency(7, 8, ROOT7, _node(k, right), [j, x, i, k])


# Agreement with the reference and the log's roots ----------------------------------------------

@st.composite
def inclusion_cases(draw: st.DrawFn, min_size: int = 1,
                    unique: bool = False) -> tuple[list[bytes], int, int]:
    """Leaf data for a log, a tree size within it and a leaf index within that tree."""
    n = draw(st.integers(min_size, MAX_LEAVES))
    leaves = draw(st.lists(st.binary(max_size=4), min_size=n, max_size=n, unique=unique))
    size = draw(st.integers(min_size, n))
    return leaves, size, draw(st.integers(0, size - 1))


@st.composite
def consistency_cases(draw: st.DrawFn, proper: bool = False,
                      unique: bool = False) -> tuple[list[bytes], int, int]:
    """Leaf data for a log and two tree sizes old <= new within it (0 < old < new if proper)."""
    n = draw(st.integers(2 if proper else 1, MAX_LEAVES))
    leaves = draw(st.lists(st.binary(max_size=4), min_size=n, max_size=n, unique=unique))
    if proper:
        new = draw(st.integers(2, n))
        return leaves, draw(st.integers(1, new - 1)), new
    new = draw(st.integers(0, n))
    return leaves, draw(st.integers(0, new)), new


@settings(max_examples=60)
@given(inclusion_cases())
def test_inclusion_proofs_match_the_reference_and_verify(
        case: tuple[list[bytes], int, int]) -> None:
    leaves, size, index = case
    hashes = [leaf_hash(x) for x in leaves]
    proof = inclusion_proof(hashes, index, size)
    assert proof == ref_path(index, leaves[:size])
    root = root_from_leaf_hashes(hashes[:size])
    assert root == MerkleTree(hashes[:size]).root() == ref_mth(leaves[:size])
    verify_inclusion(hashes[index], index, size, proof, root)


@settings(max_examples=60)
@given(consistency_cases())
def test_consistency_proofs_match_the_reference_and_verify(
        case: tuple[list[bytes], int, int]) -> None:
    leaves, old, new = case
    hashes = [leaf_hash(x) for x in leaves]
    proof = consistency_proof(hashes, old, new)
    assert proof == (ref_proof(old, leaves[:new]) if old else [])
    tree = MerkleTree(hashes[:old])
    old_root = tree.root()
    for h_ in hashes[old:new]:
        tree.append_hash(h_)
    assert old_root == root_from_leaf_hashes(hashes[:old])
    assert tree.root() == root_from_leaf_hashes(hashes[:new])
    verify_consistency(old, new, old_root, tree.root(), proof)


def test_every_proof_in_trees_up_to_33_leaves() -> None:
    leaves = [n.to_bytes(1, "big") for n in range(33)]
    hashes = [leaf_hash(x) for x in leaves]
    roots = [root_from_leaf_hashes(hashes[:n]) for n in range(34)]
    for size in range(1, 34):
        for index in range(size):
            proof = inclusion_proof(hashes, index, size)
            assert proof == ref_path(index, leaves[:size]), (index, size)
            verify_inclusion(hashes[index], index, size, proof, roots[size])
        for old in range(size + 1):
            proof = consistency_proof(hashes, old, size)
            assert proof == (ref_proof(old, leaves[:size]) if old else []), (old, size)
            verify_consistency(old, size, roots[old], roots[size], proof)


@settings(max_examples=40)
@given(st.lists(st.binary(max_size=4), max_size=64), st.data())
def test_subtree_root_is_the_mth_of_the_range(leaves: list[bytes], data: st.DataObject) -> None:
    hashes = [leaf_hash(x) for x in leaves]
    start = data.draw(st.integers(0, len(hashes)))
    end = data.draw(st.integers(start, len(hashes)))
    assert subtree_root(hashes, start, end) == ref_mth(leaves[start:end])


def test_generation_hashes_each_subtree_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    real_node_hash = merkle_module.node_hash

    def counting(left: bytes, right: bytes) -> bytes:
        nonlocal calls
        calls += 1
        return real_node_hash(left, right)

    monkeypatch.setattr(merkle_module, "node_hash", counting)
    hashes = [leaf_hash(n.to_bytes(2, "big")) for n in range(1000)]
    # The path's subtrees are disjoint and cover every leaf but one: n - 1 - len(path) nodes.
    proof = inclusion_proof(hashes, 421, 1000)
    assert calls == 1000 - 1 - len(proof)
    calls = 0
    consistency_proof(hashes, 421, 1000)
    assert calls < 1000


# Tampering --------------------------------------------------------------------------------------

def flip(value: bytes, position: int, bit: int) -> bytes:
    """`value` with one bit changed."""
    position %= len(value)
    return value[:position] + bytes([value[position] ^ (1 << bit)]) + value[position + 1:]


positions = st.integers(0, 31)
bits = st.integers(0, 7)


def _inclusion(case: tuple[list[bytes], int, int]) -> tuple[bytes, list[bytes], bytes]:
    leaves, size, index = case
    hashes = [leaf_hash(x) for x in leaves]
    return hashes[index], inclusion_proof(hashes, index, size), root_from_leaf_hashes(hashes[:size])


@settings(max_examples=40)
@given(inclusion_cases(min_size=2, unique=True), st.data(), positions, bits)
def test_inclusion_with_a_flipped_proof_byte_fails(
        case: tuple[list[bytes], int, int], data: st.DataObject, position: int, bit: int) -> None:
    _, size, index = case
    leaf, proof, root = _inclusion(case)
    which = data.draw(st.integers(0, len(proof) - 1))
    proof[which] = flip(proof[which], position, bit)
    with pytest.raises(VerificationError, match=rf"^inclusion proof: leaf {index} does not lead "
                                                rf"to the root of the tree of size {size}$"):
        verify_inclusion(leaf, index, size, proof, root)


@settings(max_examples=40)
@given(inclusion_cases(unique=True), positions, bits, st.booleans())
def test_inclusion_with_a_flipped_leaf_or_root_fails(
        case: tuple[list[bytes], int, int], position: int, bit: int, in_root: bool) -> None:
    _, size, index = case
    leaf, proof, root = _inclusion(case)
    if in_root:
        root = flip(root, position, bit)
    else:
        leaf = flip(leaf, position, bit)
    with pytest.raises(VerificationError, match="does not lead to the root") as caught:
        verify_inclusion(leaf, index, size, proof, root)
    assert caught.value.record == "inclusion-proof"


@settings(max_examples=60)
@given(inclusion_cases(unique=True), st.data())
def test_inclusion_at_a_wrong_index_fails(
        case: tuple[list[bytes], int, int], data: st.DataObject) -> None:
    _, size, index = case
    leaf, proof, root = _inclusion(case)
    wrong_index = data.draw(st.integers(0, size + 2).filter(lambda x: x != index))
    with pytest.raises(VerificationError, match=r"^inclusion proof: "):
        verify_inclusion(leaf, wrong_index, size, proof, root)


@settings(max_examples=40)
@given(inclusion_cases(unique=True), st.data())
def test_inclusion_with_a_truncated_or_extended_proof_fails(
        case: tuple[list[bytes], int, int], data: st.DataObject) -> None:
    _, size, index = case
    leaf, proof, root = _inclusion(case)
    extra = data.draw(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=3))
    with pytest.raises(VerificationError, match="elements are more than a tree of size"):
        verify_inclusion(leaf, index, size, proof + extra, root)
    if proof:
        cut = data.draw(st.integers(0, len(proof) - 1))
        with pytest.raises(VerificationError, match="elements are fewer than a tree of size"):
            verify_inclusion(leaf, index, size, proof[:cut], root)


def _consistency(case: tuple[list[bytes], int, int]) -> tuple[bytes, bytes, list[bytes]]:
    leaves, old, new = case
    hashes = [leaf_hash(x) for x in leaves]
    return (root_from_leaf_hashes(hashes[:old]), root_from_leaf_hashes(hashes[:new]),
            consistency_proof(hashes, old, new))


@settings(max_examples=40)
@given(consistency_cases(proper=True, unique=True), st.data(), positions, bits)
def test_consistency_with_a_flipped_proof_byte_fails(
        case: tuple[list[bytes], int, int], data: st.DataObject, position: int, bit: int) -> None:
    _, old, new = case
    old_root, new_root, proof = _consistency(case)
    which = data.draw(st.integers(0, len(proof) - 1))
    proof[which] = flip(proof[which], position, bit)
    with pytest.raises(VerificationError, match=r"^consistency proof: does not lead to the "
                                                r"(old root of size \d+|new root of size \d+)$"):
        verify_consistency(old, new, old_root, new_root, proof)


@settings(max_examples=40)
@given(consistency_cases(proper=True, unique=True), positions, bits, st.booleans())
def test_consistency_with_a_flipped_root_fails(
        case: tuple[list[bytes], int, int], position: int, bit: int, in_old: bool) -> None:
    _, old, new = case
    old_root, new_root, proof = _consistency(case)
    if in_old:
        old_root = flip(old_root, position, bit)
    else:
        new_root = flip(new_root, position, bit)
    with pytest.raises(VerificationError, match=r"does not lead to the (old|new) root") as caught:
        verify_consistency(old, new, old_root, new_root, proof)
    assert caught.value.record == "consistency-proof"


@settings(max_examples=40)
@given(consistency_cases(proper=True, unique=True), st.data())
def test_consistency_with_a_truncated_or_extended_proof_fails(
        case: tuple[list[bytes], int, int], data: st.DataObject) -> None:
    _, old, new = case
    old_root, new_root, proof = _consistency(case)
    extra = data.draw(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=3))
    with pytest.raises(VerificationError, match="elements are more than sizes"):
        verify_consistency(old, new, old_root, new_root, proof + extra)
    cut = data.draw(st.integers(0, len(proof) - 1))
    with pytest.raises(VerificationError, match=r"elements are fewer than sizes|empty proof"):
        verify_consistency(old, new, old_root, new_root, proof[:cut])


@settings(max_examples=40)
@given(consistency_cases(proper=True, unique=True))
def test_consistency_with_swapped_sizes_fails(case: tuple[list[bytes], int, int]) -> None:
    _, old, new = case
    old_root, new_root, proof = _consistency(case)
    with pytest.raises(VerificationError,
                       match=rf"^consistency proof: old size {new} is larger than new size {old}$"):
        verify_consistency(new, old, old_root, new_root, proof)
    with pytest.raises(VerificationError, match=r"old size \d+ is larger than new size \d+"):
        verify_consistency(new, old, new_root, old_root, proof)


@pytest.mark.parametrize("verify", [
    lambda p: verify_inclusion(a, 0, 7, p, ROOT7),
    lambda p: verify_consistency(3, 7, RFC_OLD_ROOTS[3], ROOT7, p),
], ids=["inclusion", "consistency"])
def test_a_proof_element_of_the_wrong_length_fails(
        verify: Callable[[list[bytes]], None]) -> None:
    with pytest.raises(VerificationError, match=r"proof: element 1 is 31 bytes, not 32$"):
        verify([b, h[:-1], l])


# Edge cases and bad arguments ------------------------------------------------------------------

def test_consistency_between_equal_sizes() -> None:
    for size in (0, 3, 7):
        assert consistency_proof(HASHES7, size, size) == []
    verify_consistency(7, 7, ROOT7, ROOT7, [])
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    with pytest.raises(VerificationError, match=r"^consistency proof: two trees of size 7 have "
                                                r"different roots$"):
        verify_consistency(7, 7, ROOT7, k, [])
    with pytest.raises(VerificationError, match=r"sizes are equal \(7\) but the proof has 1 "):
        verify_consistency(7, 7, ROOT7, ROOT7, [l])


def test_consistency_from_the_empty_tree() -> None:
    assert consistency_proof(HASHES7, 0, 7) == []
    verify_consistency(0, 7, EMPTY_ROOT, ROOT7, [])
    verify_consistency(0, 1, EMPTY_ROOT, a, [])
    with pytest.raises(VerificationError, match="from an empty tree the proof must be empty"):
        verify_consistency(0, 7, EMPTY_ROOT, ROOT7, [k])
    with pytest.raises(VerificationError, match="old root is not the empty-tree root"):
        verify_consistency(0, 7, k, ROOT7, [])


def test_verify_inclusion_outside_the_tree_fails() -> None:
    with pytest.raises(VerificationError, match=r"^inclusion proof: leaf index 7 is outside a "
                                                r"tree of size 7$"):
        verify_inclusion(a, 7, 7, RFC_PATHS[0], ROOT7)
    with pytest.raises(VerificationError, match="leaf index 0 is outside a tree of size 0"):
        verify_inclusion(EMPTY_ROOT, 0, 0, [], EMPTY_ROOT)
    with pytest.raises(VerificationError, match="leaf index -1 is outside"):
        verify_inclusion(a, -1, 7, RFC_PATHS[0], ROOT7)


def test_an_empty_consistency_proof_between_different_sizes_fails() -> None:
    with pytest.raises(VerificationError, match=r"^consistency proof: empty proof for sizes "
                                                r"4 -> 7$"):
        verify_consistency(4, 7, k, ROOT7, [])


@pytest.mark.parametrize(("call", "message"), [
    (lambda: inclusion_proof(HASHES7, 7, 7), r"leaf index 7 is outside a tree of size 7; pass"),
    (lambda: inclusion_proof(HASHES7, -1, 7), r"leaf index -1 is outside"),
    (lambda: inclusion_proof(HASHES7, 0, 0), r"leaf index 0 is outside a tree of size 0"),
    (lambda: inclusion_proof(HASHES7, 0, 8), r"size 8 exceeds the 7 leaf hashes given; "
                                             r"pass a size of at most 7"),
    (lambda: inclusion_proof(HASHES7, 0, -1), r"size must be a tree size >= 0, not -1"),
    (lambda: inclusion_proof([a, b"short"], 0, 2), r"leaf hash 1 must be a 32-byte"),
    (lambda: consistency_proof(HASHES7, 5, 4), r"old_size 5 is larger than new_size 4; "
                                               r"pass old_size <= new_size"),
    (lambda: consistency_proof(HASHES7, 3, 8), r"size 8 exceeds the 7 leaf hashes"),
    (lambda: consistency_proof(HASHES7, -1, 7), r"old_size must be a tree size >= 0"),
    (lambda: consistency_proof([*HASHES7[:6], b""], 3, 7), r"leaf hash 6 must be a 32-byte "
                                                           r"SHA-256 hash, not 0 bytes"),
    (lambda: verify_inclusion(a[:-1], 0, 7, RFC_PATHS[0], ROOT7), r"^leaf hash must be a 32"),
    (lambda: verify_inclusion(a, 0, 7, RFC_PATHS[0], ROOT7 + b"!"), r"^root must be a 32-byte "
                                                                    r"SHA-256 hash, not 33"),
    (lambda: verify_inclusion(a, 0, -7, RFC_PATHS[0], ROOT7), r"^size must be a tree size"),
    (lambda: verify_consistency(-1, 7, k, ROOT7, [l]), r"^old_size must be a tree size"),
    (lambda: verify_consistency(4, -7, k, ROOT7, [l]), r"^new_size must be a tree size"),
    (lambda: verify_consistency(4, 7, b"", ROOT7, [l]), r"^old root must be a 32-byte"),
    (lambda: verify_consistency(4, 7, k, ROOT7[:16], [l]), r"^new root must be a 32-byte"),
    (lambda: subtree_root(HASHES7, 3, 8), r"subtree range \[3, 8\) must lie within the 7"),
    (lambda: subtree_root(HASHES7, 4, 3), r"subtree range \[4, 3\)"),
])
def test_bad_arguments_raise_value_error(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
