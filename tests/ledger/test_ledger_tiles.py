"""The tile index gives the same RFC 9162 proofs as recomputing them from every leaf hash, at
every tile height and around tile boundaries, however it is extended, while reading at most
two tiles of leaf hashes per proof; bad arguments and a log that lost leaves raise."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import medtwin.ledger._merkle as merkle_module
import medtwin.ledger._tiles as tiles_module
from medtwin.errors import VerificationError
from medtwin.ledger import (
    EMPTY_ROOT,
    MerkleTree,
    TileIndex,
    consistency_proof,
    consistency_proof_from,
    inclusion_proof,
    inclusion_proof_from,
    leaf_hash,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)
from medtwin.ledger._tiles import TILE_HEIGHT

#: Enough leaves for five tiles at the default height.
MAX_LEAVES = 5 * 2**TILE_HEIGHT + 3
HASHES = [leaf_hash(n.to_bytes(4, "big")) for n in range(MAX_LEAVES)]
HEIGHTS = (0, 1, 2, 3, TILE_HEIGHT)


class LeafReads:
    """`leaf_range` over HASHES[:size], recording every range asked for."""

    def __init__(self, size: int = MAX_LEAVES) -> None:
        self.size = size
        self.ranges: list[tuple[int, int]] = []

    def __call__(self, start: int, end: int) -> Sequence[bytes]:
        self.ranges.append((start, end))
        return HASHES[start:min(end, self.size)]

    def leaves_read(self) -> int:
        return sum(end - start for start, end in self.ranges)


def _index(size: int, height: int, chunks: Sequence[int] = ()) -> tuple[TileIndex, LeafReads]:
    """An index of HASHES[:size], extended in `chunks` (then the rest), and its leaf reads."""
    reads = LeafReads()
    index = TileIndex(reads, height)
    for chunk in chunks:
        index.extend(HASHES[index.size:min(size, index.size + chunk)])
    index.extend(HASHES[index.size:size])
    return index, reads


def sizes(height: int, low: int = 1, high: int = MAX_LEAVES) -> st.SearchStrategy[int]:
    """A tree size in [low, high]: any, or within one leaf of a multiple of the tile width."""
    width = 2**height
    near_boundary = st.builds(lambda k, d: max(low, min(high, k * width + d)),
                              st.integers(0, high // width), st.integers(-1, 1))
    return st.one_of(st.integers(low, high), near_boundary)


@st.composite
def proof_cases(draw: st.DrawFn) -> tuple[int, int, int, int, int]:
    """(height, indexed leaves, tree size <= them, leaf index < size, old size <= size)."""
    height = draw(st.sampled_from(HEIGHTS))
    size = draw(sizes(height))
    indexed = draw(st.one_of(st.just(size), sizes(height, low=size)))
    index = draw(st.one_of(sizes(height, low=0, high=size - 1), st.sampled_from([0, size - 1])))
    old = draw(sizes(height, low=0, high=size))
    return height, indexed, size, index, old


# Agreement with the full recompute ---------------------------------------------------------

@settings(max_examples=150)
@given(proof_cases())
def test_proofs_from_the_index_equal_the_full_recompute_and_verify(
        case: tuple[int, int, int, int, int]) -> None:
    height, indexed, size, index, old = case
    tiles, _ = _index(indexed, height)
    root = root_from_leaf_hashes(HASHES[:size])
    proof = inclusion_proof_from(tiles, index, size)
    assert proof == inclusion_proof(HASHES, index, size)
    verify_inclusion(HASHES[index], index, size, proof, root)
    proof = consistency_proof_from(tiles, old, size)
    assert proof == consistency_proof(HASHES, old, size)
    verify_consistency(old, size, root_from_leaf_hashes(HASHES[:old]), root, proof)


def test_every_proof_of_small_trees_at_small_heights() -> None:
    for height in (0, 1, 2, 3):
        for size in range(1, 40):
            tiles, _ = _index(size, height)
            for index in range(size):
                assert inclusion_proof_from(tiles, index, size) == inclusion_proof(
                    HASHES, index, size), (height, index, size)
            for old in range(size + 1):
                assert consistency_proof_from(tiles, old, size) == consistency_proof(
                    HASHES, old, size), (height, old, size)


@settings(max_examples=60)
@given(st.sampled_from(HEIGHTS), st.data())
def test_subtree_roots_are_the_mth_of_the_range(height: int, data: st.DataObject) -> None:
    size = data.draw(sizes(height, low=0))
    tiles, _ = _index(size, height)
    start = data.draw(st.integers(0, size))
    end = data.draw(st.integers(start, size))
    assert tiles.subtree_root(start, end) == root_from_leaf_hashes(HASHES[start:end])


@settings(max_examples=60)
@given(st.sampled_from(HEIGHTS), st.lists(st.integers(0, 600), max_size=6), st.data())
def test_extending_in_chunks_equals_indexing_at_once(
        height: int, chunks: list[int], data: st.DataObject) -> None:
    size = data.draw(sizes(height, low=0))
    in_chunks, _ = _index(size, height, chunks)
    at_once, _ = _index(size, height)
    assert in_chunks.size == at_once.size == size
    for end in sorted({0, size, *data.draw(st.lists(st.integers(0, size), max_size=8))}):
        assert in_chunks.subtree_root(0, end) == at_once.subtree_root(0, end) == (
            MerkleTree(HASHES[:end]).root())
    if size:
        index = data.draw(st.integers(0, size - 1))
        assert inclusion_proof_from(in_chunks, index, size) == inclusion_proof_from(
            at_once, index, size)


def test_extending_by_nothing_changes_nothing() -> None:
    tiles, _ = _index(300, 2)
    assert tiles.extend([]) == 300
    assert tiles.subtree_root(0, 300) == root_from_leaf_hashes(HASHES[:300])
    assert TileIndex(LeafReads()).subtree_root(0, 0) == EMPTY_ROOT


# The cost: O(log n), at most two tiles of leaf hashes read ---------------------------------

@settings(max_examples=150)
@given(proof_cases())
def test_a_proof_reads_at_most_two_tiles_of_leaf_hashes(
        case: tuple[int, int, int, int, int]) -> None:
    height, indexed, size, index, old = case
    width = 2**height
    for prove in (lambda t: inclusion_proof_from(t, index, size),
                  lambda t: consistency_proof_from(t, old, size)):
        tiles, reads = _index(indexed, height)  # nothing read yet: the worst case
        prove(tiles)
        assert reads.leaves_read() <= 2 * width, reads.ranges
        assert len(reads.ranges) <= 2, reads.ranges
        # each read lies inside one tile
        assert all(start // width == (end - 1) // width for start, end in reads.ranges)


def test_a_proof_of_a_large_log_hashes_o_log_n(monkeypatch: pytest.MonkeyPatch) -> None:
    size = 100_003
    hashes = [leaf_hash(n.to_bytes(4, "big")) for n in range(size)]
    tiles = TileIndex(lambda start, end: hashes[start:end])
    tiles.extend(hashes)
    calls = 0
    real_node_hash = merkle_module.node_hash

    def counting(left: bytes, right: bytes) -> bytes:
        nonlocal calls
        calls += 1
        return real_node_hash(left, right)

    monkeypatch.setattr(merkle_module, "node_hash", counting)
    monkeypatch.setattr(tiles_module, "node_hash", counting)
    # The leaf's tile and the last, partial tile are hashed from leaves; the rest is looked up.
    bound = 2 * 2**TILE_HEIGHT + 2 * size.bit_length()
    for index, old in ((0, 1), (51_234, 51_234), (size - 1, size - 2), (65_536, 65_536)):
        calls = 0
        proof = inclusion_proof_from(tiles, index, size)
        assert calls < bound
        assert proof == inclusion_proof(hashes, index, size)
        calls = 0
        proof = consistency_proof_from(tiles, old, size)
        assert calls < bound
        assert proof == consistency_proof(hashes, old, size)


# Readers alongside one writer --------------------------------------------------------------

def test_readers_prove_while_the_writer_extends() -> None:
    roots = [EMPTY_ROOT]
    tree = MerkleTree()
    for h in HASHES:
        tree.append_hash(h)
        roots.append(tree.root())
    tiles = TileIndex(lambda start, end: HASHES[start:end], height=2)
    done = threading.Event()
    failures: list[Exception] = []

    def read() -> None:
        k = 0
        while not done.is_set():
            size = tiles.size
            if size:
                k += 1
                index, old = (k * 7919) % size, (k * 104_729) % (size + 1)
                try:
                    verify_inclusion(HASHES[index], index, size,
                                     inclusion_proof_from(tiles, index, size), roots[size])
                    verify_consistency(old, size, roots[old], roots[size],
                                       consistency_proof_from(tiles, old, size))
                except Exception as exc:  # reported by the main thread
                    failures.append(exc)
                    return

    readers = [threading.Thread(target=read) for _ in range(3)]
    for reader in readers:
        reader.start()
    for start in range(0, MAX_LEAVES, 3):
        tiles.extend(HASHES[start:start + 3])
    done.set()
    for reader in readers:
        reader.join()
    assert failures == []
    assert tiles.size == MAX_LEAVES


# Bad arguments, and a log that lost leaves -------------------------------------------------

@pytest.mark.parametrize(("call", "message"), [
    (lambda t: inclusion_proof_from(t, 0, 8), r"^size 8 exceeds the 7 leaves indexed; pass a "
                                              r"size of at most 7$"),
    (lambda t: inclusion_proof_from(t, 7, 7), r"^leaf index 7 is outside a tree of size 7; "),
    (lambda t: inclusion_proof_from(t, -1, 7), r"^leaf index -1 is outside"),
    (lambda t: inclusion_proof_from(t, 0, -1), r"^size must be a tree size >= 0, not -1$"),
    (lambda t: consistency_proof_from(t, 3, 8), r"^size 8 exceeds the 7 leaves indexed"),
    (lambda t: consistency_proof_from(t, 5, 4), r"^old_size 5 is larger than new_size 4; pass"),
    (lambda t: consistency_proof_from(t, -1, 4), r"^old_size must be a tree size >= 0"),
    (lambda t: t.subtree_root(3, 8), r"^subtree range \[3, 8\) must lie within the 7 leaves"),
    (lambda t: t.subtree_root(4, 3), r"^subtree range \[4, 3\)"),
    (lambda t: t.subtree_root(-1, 3), r"^subtree range \[-1, 3\)"),
    (lambda t: t.extend([HASHES[7], b"short"]), r"^leaf hash 8 must be a 32-byte SHA-256 hash, "
                                                r"not 5 bytes$"),
    (lambda t: TileIndex(LeafReads(), height=-1), r"^tile height must be >= 0, not -1$"),
])
def test_bad_arguments_raise_value_error(call: Callable[[TileIndex], object],
                                         message: str) -> None:
    tiles, _ = _index(7, 1)
    with pytest.raises(ValueError, match=message):
        call(tiles)
    assert tiles.size == 7  # a refused extend indexes nothing
    assert tiles.subtree_root(0, 7) == root_from_leaf_hashes(HASHES[:7])


@pytest.mark.parametrize(("stored", "what"), [
    (lambda hashes: hashes[:-1], "fewer"),
    (lambda hashes: [*hashes[:-1], hashes[-1][:31]], "a short hash"),
], ids=["fewer", "short"])
def test_a_log_that_lost_leaves_fails_verification(
        stored: Callable[[list[bytes]], list[bytes]], what: str) -> None:
    tiles = TileIndex(lambda start, end: stored(HASHES[start:end]), height=2)
    tiles.extend(HASHES[:10])
    with pytest.raises(VerificationError, match=r"^tile index: the leaf hashes read for leaves "
                                                r"\[8, 10\) are not 2 hashes of 32 bytes; the "
                                                r"log lost or changed leaves") as caught:
        inclusion_proof_from(tiles, 9, 10)
    assert caught.value.record == "ledger-leaves", what
