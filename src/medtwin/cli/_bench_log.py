"""`medtwin bench`: the transparency log's appends per second and its RFC 9162 proofs
(generation from the tile index, as the API serves them, and from all leaf hashes; verification)
per second, by tree size."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from rich.table import Table

from medtwin.ledger import (
    MerkleTree,
    TileIndex,
    consistency_proof,
    consistency_proof_from,
    inclusion_proof,
    inclusion_proof_from,
    verify_consistency,
    verify_inclusion,
)

#: Tree sizes measured (full run, `--quick`).
LOG_SIZES = (1_000, 10_000, 100_000, 1_000_000)
LOG_SIZES_QUICK = (1_000, 10_000)
#: Seconds each proof operation is timed for.
PROOF_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class LogRates:
    """Operations per second on a log of `size` leaves (`index_s`: seconds to build the tile
    index from every leaf hash; `*_gen`: from the index, `*_gen_full`: from all leaf hashes)."""

    size: int
    appends: float
    index_s: float
    inclusion_gen: float
    inclusion_gen_full: float
    inclusion_verify: float
    consistency_gen: float
    consistency_gen_full: float
    consistency_verify: float


def _rate(op: Callable[[int], object], seconds: float) -> float:
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        op(n)
        n += 1
    return n / (time.perf_counter() - t0)


def bench_log(size: int, seconds: float = PROOF_SECONDS) -> LogRates:
    """Appends (leaf hash into the tree, then its root, as each batch's signed head needs)
    and proofs at one tree size; the tile index reads leaf hashes from a list in memory."""
    leaves = [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(size)]
    tree = MerkleTree()
    t0 = time.perf_counter()
    for h in leaves:
        tree.append_hash(h)
        tree.root()
    appends = size / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    tiles = TileIndex(lambda start, end: leaves[start:end])
    tiles.extend(leaves)
    index_s = time.perf_counter() - t0
    root = tree.root()
    old = size // 2
    old_root = tiles.subtree_root(0, old)

    def index(k: int) -> int:
        """A different leaf (and tile) each time, so no proof reuses the last one's reads."""
        return (k * 7919) % size

    proof = inclusion_proof_from(tiles, size // 3, size)
    cons = consistency_proof_from(tiles, old, size)
    return LogRates(
        size, appends, index_s,
        _rate(lambda k: inclusion_proof_from(tiles, index(k), size), seconds),
        _rate(lambda k: inclusion_proof(leaves, index(k), size), seconds),
        _rate(lambda k: verify_inclusion(leaves[size // 3], size // 3, size, proof, root),
              seconds),
        _rate(lambda k: consistency_proof_from(tiles, max(1, index(k)), size), seconds),
        _rate(lambda k: consistency_proof(leaves, old, size), seconds),
        _rate(lambda k: verify_consistency(old, size, old_root, root, cons), seconds))


def _rate_text(rate: float) -> str:
    """A rate short enough for a 9-column table on an 80-column terminal."""
    if rate >= 10_000:
        return f"{rate / 1000:,.0f}k"
    return f"{rate:,.0f}" if rate >= 10 else f"{rate:.1f}"


def log_table(quick: bool) -> Table:
    """Appends/s and proofs/s by tree size, side by side."""
    table = Table(title="Transparency log: appends (with the new root) and RFC 9162 proofs per "
                        "second, one core")
    for col in ("leaves", "appends /s", "index build s", "incl. gen /s tiles",
                "incl. gen /s all", "incl. verify /s", "cons. gen /s tiles", "cons. gen /s all",
                "cons. verify /s"):
        table.add_column(col, justify="right")
    for size in LOG_SIZES_QUICK if quick else LOG_SIZES:
        r = bench_log(size, 0.2 if quick else PROOF_SECONDS)
        table.add_row(f"{r.size:,}", _rate_text(r.appends), f"{r.index_s:,.2f}",
                      _rate_text(r.inclusion_gen), _rate_text(r.inclusion_gen_full),
                      _rate_text(r.inclusion_verify), _rate_text(r.consistency_gen),
                      _rate_text(r.consistency_gen_full), _rate_text(r.consistency_verify))
    table.caption = ("gen tiles: from a TileIndex of height 8, as the API serves proofs (it "
                     "reads at most two tiles of 256 leaf hashes per proof, here from memory, "
                     "in the API from the store); gen all: recomputed from every leaf hash, "
                     "O(n) per proof, as the API did before; index build: indexing every leaf "
                     "at once (the API's first proof after a start)")
    return table
