"""`medtwin bench`: the transparency log's appends per second and its RFC 9162 proofs
(generation from the leaf hashes, verification) per second, by tree size."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from rich.table import Table

from medtwin.ledger import (
    MerkleTree,
    consistency_proof,
    inclusion_proof,
    verify_consistency,
    verify_inclusion,
)

#: Tree sizes measured (full run, `--quick`).
LOG_SIZES = (1_000, 10_000, 100_000)
LOG_SIZES_QUICK = (1_000, 10_000)
#: Seconds each proof operation is timed for.
PROOF_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class LogRates:
    """Operations per second on a log of `size` leaves."""

    size: int
    appends: float
    inclusion_gen: float
    inclusion_verify: float
    consistency_gen: float
    consistency_verify: float


def _rate(op: Callable[[int], object], seconds: float) -> float:
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        op(n)
        n += 1
    return n / (time.perf_counter() - t0)


def bench_log(size: int, seconds: float = PROOF_SECONDS) -> LogRates:
    """Appends (leaf hash into the tree, then its root, as each batch's signed head needs)
    and proofs at one tree size."""
    leaves = [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(size)]
    tree = MerkleTree()
    t0 = time.perf_counter()
    for h in leaves:
        tree.append_hash(h)
        tree.root()
    appends = size / (time.perf_counter() - t0)
    root = tree.root()
    old = size // 2
    old_root = MerkleTree(leaves[:old]).root()

    def include(k: int) -> object:
        return inclusion_proof(leaves, (k * 7919) % size, size)

    proof = inclusion_proof(leaves, size // 3, size)
    cons = consistency_proof(leaves, old, size)
    return LogRates(
        size, appends, _rate(include, seconds),
        _rate(lambda k: verify_inclusion(leaves[size // 3], size // 3, size, proof, root),
              seconds),
        _rate(lambda k: consistency_proof(leaves, old, size), seconds),
        _rate(lambda k: verify_consistency(old, size, old_root, root, cons), seconds))


def log_table(quick: bool) -> Table:
    """Appends/s and proofs/s by tree size, side by side."""
    table = Table(title="Transparency log: appends (with the new root) and RFC 9162 proofs per "
                        "second, one core")
    for col in ("leaves", "appends/s", "inclusion proof gen/s", "inclusion verify/s",
                "consistency proof gen/s", "consistency verify/s"):
        table.add_column(col, justify="right")
    for size in LOG_SIZES_QUICK if quick else LOG_SIZES:
        r = bench_log(size, 0.2 if quick else PROOF_SECONDS)
        table.add_row(f"{r.size:,}", f"{r.appends:,.0f}", f"{r.inclusion_gen:,.0f}",
                      f"{r.inclusion_verify:,.0f}", f"{r.consistency_gen:,.0f}",
                      f"{r.consistency_verify:,.0f}")
    table.caption = ("proofs are generated from all leaf hashes (O(n) per proof); the API does "
                     "the same per request")
    return table
