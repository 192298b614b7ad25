"""Edits made to the database while the site is down are refused at start, not signed over."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from tests.conftest import DeviceSim, FakeClock

from medtwin.config import Settings
from medtwin.crypto import signature_suite
from medtwin.errors import VerificationError
from medtwin.ledger import MerkleTree, leaf_data, leaf_hash, sign_tree_head
from medtwin.pipeline import Pipeline, verify_store
from medtwin.store import RegistrationRecord


@contextmanager
def _offline(settings: Settings) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(settings.data_dir / "medtwin.db")
    try:
        yield conn
        conn.commit()
    finally:
        conn.close()


@pytest.fixture
def stopped(settings: Settings, pipeline: Pipeline, device: DeviceSim,
            clock: FakeClock) -> Settings:
    """A site with a few packets and a news2 alert, then shut down."""
    pipeline.process([device.submit(device.vitals())])
    clock.advance(3600)
    pipeline.process([device.submit(device.vitals(hr=140.0, rr=28.0, temp=39.5))])
    assert pipeline.alerts(), "the fixture should hold an alert"
    pipeline.close()
    return settings


def _refused(settings: Settings, match: str) -> None:
    with pytest.raises(VerificationError, match=match):
        Pipeline.open(settings)


def test_a_device_key_swapped_while_down_is_refused(stopped: Settings) -> None:
    _, attacker_key = signature_suite("ed25519").generate()
    with _offline(stopped) as conn:
        (size,) = conn.execute("SELECT COUNT(*) FROM ledger_leaves").fetchone()
        rec = RegistrationRecord(size, "vit-1", "pt-1", "ed25519", attacker_key, "active", 0)
        conn.execute("INSERT INTO registrations VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     (rec.leaf_index, rec.device_id, rec.patient_id, rec.suite, rec.public_key,
                      rec.status, rec.time_ms, rec.reason))
        conn.execute("INSERT INTO ledger_leaves VALUES (?, ?, ?)", (
            size, rec.kind, leaf_hash(leaf_data(rec.kind, str(size), rec.commit_bytes()))))
        conn.execute("UPDATE devices SET public_key = ?", (attacker_key,))
    _refused(stopped, r"records lie beyond the signed tree head")


def test_alerts_deleted_while_down_are_refused(stopped: Settings) -> None:
    with _offline(stopped) as conn:
        (last,) = conn.execute("SELECT MAX(leaf_index) FROM alerts").fetchone()
        conn.execute("DELETE FROM alerts WHERE leaf_index = ?", (last,))
        conn.execute("DELETE FROM ledger_leaves WHERE leaf_index = ?", (last,))
    _refused(stopped, rf"record #{last}\b.*missing")


def test_a_reset_sequence_number_is_refused(stopped: Settings) -> None:
    with _offline(stopped) as conn:
        conn.execute("UPDATE devices SET last_seq = -1")
    _refused(stopped, r"^devices: device 'vit-1' differs from its logged registration and "
                      r"sequence numbers")


def test_an_insider_cannot_refile_a_packet_for_another_patient(
        pipeline: Pipeline, device: DeviceSim) -> None:
    """Someone holding the site's keys moves a device's authentic packet to another patient:
    sealed under that patient's key, leaf recomputed, head re-signed. The log is then
    consistent, but the device is not registered to that patient."""
    pipeline.add_patient("pt-2")
    pipeline.process([device.submit(device.vitals())])
    (packet,) = pipeline.store.packets()
    keys = pipeline.store.patient_keys()
    payload = pipeline.keyring.open("pt-1", keys["pt-1"], packet.envelope,
                                    f"medtwin/packet/{packet.leaf_index}/pt-1".encode())
    envelope = pipeline.keyring.seal("pt-2", keys["pt-2"], payload,
                                     f"medtwin/packet/{packet.leaf_index}/pt-2".encode())
    moved = dataclasses.replace(packet, patient_id="pt-2", envelope=envelope)
    leaves = pipeline.store.leaf_hashes()
    leaves[moved.leaf_index] = leaf_hash(leaf_data("packet", str(moved.leaf_index),
                                                   moved.commit_bytes()))
    tree = MerkleTree(leaves)
    head = sign_tree_head(pipeline.keys.log_key, pipeline.settings.log_origin, tree.size,
                          tree.root(), 0)
    with pipeline.store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE packets SET patient_id = 'pt-2', envelope = ?",
                             (envelope,))
        conn.exec_driver_sql("UPDATE ledger_leaves SET leaf_hash = ? WHERE leaf_index = ?",
                             (leaves[moved.leaf_index], moved.leaf_index))
        conn.exec_driver_sql("UPDATE tree_heads SET root = ?, signature = ?",
                             (head.root, head.signature))
    with pytest.raises(VerificationError, match=rf"^log: packet #{moved.leaf_index} .* is not "
                                                r"from a device registered to its "
                                                r"patient"):
        verify_store(pipeline.store, pipeline.keys.log_key_history, pipeline.keyring)


def test_token_create_never_mints_keys_over_existing_patients(stopped: Settings) -> None:
    from typer.testing import CliRunner

    from medtwin.cli import app

    for key_file in stopped.resolved_keys_dir.iterdir():
        key_file.unlink()
    result = CliRunner().invoke(app, ["token", "create", "--role", "auditor", "--name", "a",
                                      "--data-dir", str(stopped.data_dir)])
    assert result.exit_code == 0
    assert list(stopped.resolved_keys_dir.iterdir()) == []
