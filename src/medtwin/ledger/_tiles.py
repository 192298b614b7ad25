"""The log's tile index: the roots of its perfect, aligned subtrees of 2**height leaves and up,
so that any subtree root a proof needs costs O(log n) hashes instead of O(n).

Level k holds the roots of the subtrees of 2**(height + k) leaves, left to right (a level-0
root is a full tile's, as in C2SP tlog-tiles): about n / 2**(height - 1) hashes in all, and an
append costs O(1) amortized. Below the tile height the index reads leaf hashes through
`leaf_range`; a proof needs at most two tiles of them (its leaf's or boundary's, and the last).
One writer at a time calls `extend`; readers need no lock: the levels only grow, and `size`
moves only once they hold its leaves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from medtwin.errors import VerificationError
from medtwin.ledger._merkle import EMPTY_ROOT, HASH_SIZE, MerkleTree, node_hash

#: Height of a tile: subtrees of 2**8 = 256 leaves and up are kept (about n / 128 hashes, 7,800
#: at a million leaves), and a proof reads at most 2 × 256 leaf hashes (C2SP tlog-tiles' height).
TILE_HEIGHT = 8

#: Reads the leaf hashes of leaf indexes [start, end), in order (e.g. `Store.leaf_hashes`).
LeafRange = Callable[[int, int], Sequence[bytes]]

_LEAVES = "ledger-leaves"


class TileIndex:
    """The subtree roots of a log's first `size` leaves at and above the tile height."""

    def __init__(self, leaf_range: LeafRange, height: int = TILE_HEIGHT) -> None:
        if height < 0:
            raise ValueError(f"tile height must be >= 0, not {height}")
        self.height = height
        self._leaf_range = leaf_range
        self._width = 1 << height
        self._levels: list[list[bytes]] = []
        self._tile = MerkleTree()  # the leaves of the last tile, until it is full
        self._size = 0
        # The leaves of the tile read last (its first index, its leaf hashes); replaced whole.
        self._read_tile: tuple[int, Sequence[bytes]] = (0, ())

    @property
    def size(self) -> int:
        """How many leaves are indexed."""
        return self._size

    def extend(self, leaf_hashes: Sequence[bytes]) -> int:
        """Index the log's next leaves by their leaf hashes; returns the new size. Callers
        serialise `extend` (one writer); readers may run meanwhile."""
        for i, h in enumerate(leaf_hashes):
            if len(h) != HASH_SIZE:
                raise ValueError(f"leaf hash {self._size + i} must be a {HASH_SIZE}-byte "
                                 f"SHA-256 hash, not {len(h)} bytes")
        for h in leaf_hashes:
            self._tile.append_hash(h)
            if self._tile.size == self._width:
                self._add_tile(self._tile.root())
                self._tile = MerkleTree()
        self._size += len(leaf_hashes)
        return self._size

    def _add_tile(self, root: bytes) -> None:
        """Append a full tile's root, then each parent it completes (a binary counter)."""
        level = 0
        while True:
            if level == len(self._levels):
                self._levels.append([])
            nodes = self._levels[level]
            nodes.append(root)
            if len(nodes) % 2:
                return
            root = node_hash(nodes[-2], nodes[-1])
            level += 1

    def subtree_root(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) of indexed leaves: O(log n) hashes when start is a multiple of a
        power of two >= end - start, as for every subtree of an RFC 9162 tree (any other range
        is right too, but reads all its leaves)."""
        if not 0 <= start <= end <= self._size:
            raise ValueError(f"subtree range [{start}, {end}) must lie within the {self._size} "
                             "leaves indexed")
        if start == end:
            return EMPTY_ROOT
        return self._root(start, end)

    def _root(self, start: int, end: int) -> bytes:
        n = end - start
        if n >= self._width and n & (n - 1) == 0 and start % n == 0:
            return self._levels[n.bit_length() - 1 - self.height][start // n]
        if n <= self._width:
            return MerkleTree(self._leaves(start, end)).root()
        k = 1 << ((n - 1).bit_length() - 1)
        return node_hash(self._root(start, start + k), self._root(start + k, end))

    def _leaves(self, start: int, end: int) -> Sequence[bytes]:
        """Leaf hashes [start, end): within one tile, from that tile read whole once (a proof
        asks for several ranges of one tile; leaves never change once logged)."""
        first = start - start % self._width
        if end - first > self._width:
            return self._read(start, end)
        tile_start, leaves = self._read_tile
        if tile_start != first or tile_start + len(leaves) < end:
            leaves = self._read(first, min(first + self._width, self._size))
            self._read_tile = (first, leaves)
        return leaves[start - first:end - first]

    def _read(self, start: int, end: int) -> Sequence[bytes]:
        leaves = self._leaf_range(start, end)
        if len(leaves) != end - start or any(len(h) != HASH_SIZE for h in leaves):
            raise VerificationError(
                f"tile index: the leaf hashes read for leaves [{start}, {end}) are not "
                f"{end - start} hashes of {HASH_SIZE} bytes; the log lost or changed leaves "
                "it had indexed", _LEAVES)
        return leaves
