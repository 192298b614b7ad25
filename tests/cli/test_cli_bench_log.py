"""The transparency-log benchmark: every operation measured, proofs both from the tile index and
from all leaf hashes."""

from __future__ import annotations

from medtwin.cli._bench_log import bench_log


def test_every_log_operation_is_measured() -> None:
    rates = bench_log(700, 0.005)
    assert rates.size == 700 and rates.index_s > 0
    assert all(rate > 0 for rate in (
        rates.appends, rates.inclusion_gen, rates.inclusion_gen_full, rates.inclusion_verify,
        rates.consistency_gen, rates.consistency_gen_full, rates.consistency_verify))
