"""The crypto-suite benchmark: every registered suite measured, side by side, with ratios."""

from __future__ import annotations

from medtwin.cli._bench import bench_kem_suites, bench_signature_suites, crypto_suite_tables
from medtwin.crypto import KEM_SUITES, SIGNATURE_SUITES


def test_every_suite_is_measured_in_both_directions() -> None:
    signatures = bench_signature_suites(0.005)
    kems = bench_kem_suites(0.005)
    assert [r.suite for r in signatures] == list(SIGNATURE_SUITES)
    assert [r.suite for r in kems] == list(KEM_SUITES)
    assert all(r.sender_per_s > 0 and r.receiver_per_s > 0 for r in [*signatures, *kems])


def test_the_tables_hold_one_row_per_suite_against_the_classical_baseline() -> None:
    signature_table, kem_table = crypto_suite_tables(quick=True)
    assert signature_table.row_count == len(SIGNATURE_SUITES)
    assert kem_table.row_count == len(KEM_SUITES)
    assert next(iter(signature_table.columns[2].cells)) == "1.0×"        # ed25519 vs itself
