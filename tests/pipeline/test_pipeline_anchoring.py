"""Anchoring in the background: checkpoints go to the chain once per interval when the log
grew, the site indexes them, `verify` holds the log to every anchor and cosignature, and a
slow chain never holds up a reading."""

from __future__ import annotations

import base64
import threading
import time
from typing import Any

import pytest
from sqlalchemy import update
from tests.conftest import DeviceSim, FakeClock

pytest.importorskip("web3", reason="anchoring needs the chain extra: pip install 'medtwin[chain]'")

from medtwin.config import Settings
from medtwin.errors import ConfigError, VerificationError
from medtwin.ledger import note_hash
from medtwin.pipeline import (
    Accepted,
    Anchorer,
    Pipeline,
    checkpoint_claims,
    verify_store,
)
from medtwin.store import _schema


@pytest.fixture
def anchorer(pipeline: Pipeline) -> Anchorer:
    found = Anchorer.open(pipeline)
    assert found is not None
    return found


def _send(pipeline: Pipeline, device: DeviceSim, clock: FakeClock, n: int = 1) -> None:
    for _ in range(n):
        clock.advance(60)
        [outcome] = pipeline.process([device.submit(device.vitals())])
        assert isinstance(outcome, Accepted)


def _cosign_head(pipeline: Pipeline, device: DeviceSim, clock: FakeClock, signer: Any,
                 when: int = 1_700_000_000) -> tuple[Any, bytes]:
    """Two readings in, then the head cosigned by `signer` and stored; (head, its body)."""
    from medtwin.ledger import checkpoint_body, cosign_checkpoint

    _send(pipeline, device, clock, 2)
    head, _ = pipeline.checkpoint_note() or (None, "")
    assert head is not None
    body = checkpoint_body(head.origin, head.size, head.root)
    pipeline.store.put_cosignature(head.origin, head.size, head.root, signer.name,
                                   cosign_checkpoint(body, signer, when), when, clock())
    return head, body


def test_a_checkpoint_is_anchored_once_per_growth_and_indexed(
        pipeline: Pipeline, device: DeviceSim, clock: FakeClock, anchorer: Anchorer) -> None:
    _send(pipeline, device, clock, 2)
    first = anchorer.anchor_once()
    assert first is not None and anchorer.anchor_once() is None     # nothing new
    head, note = pipeline.checkpoint_note() or (None, "")
    assert head is not None and (first.size, first.root) == (head.size, head.root)
    assert first.note_hash == note_hash(note) and first.embedded
    _send(pipeline, device, clock)
    second = anchorer.anchor_once()
    assert second is not None and second.size > first.size
    assert pipeline.store.anchors() == [first, second]
    assert anchorer.contract.sizes() == [first.size, second.size]
    assert anchorer.status().anchors == 2 and anchorer.status().last_error is None


def test_verify_holds_the_log_to_every_anchor(pipeline: Pipeline, device: DeviceSim,
                                              clock: FakeClock, anchorer: Anchorer) -> None:
    for _ in range(3):
        _send(pipeline, device, clock)
        anchorer.anchor_once()
    claims = checkpoint_claims(pipeline.store, pipeline.settings, anchorer.chain)
    assert (claims.anchors_indexed, claims.anchors_on_chain, claims.anchors_unreachable) == (
        3, 3, 0)
    report = verify_store(pipeline.store, pipeline.keys.log_key_history, claims=claims.claims)
    assert report.checkpoints_checked == 6
    # from another process the embedded chain is gone: the index still binds the log
    elsewhere = checkpoint_claims(pipeline.store, pipeline.settings, None)
    assert (elsewhere.anchors_unreachable, len(elsewhere.claims)) == (3, 3)


def test_a_root_anchored_by_the_sites_key_that_the_log_lacks_fails_verify(
        pipeline: Pipeline, device: DeviceSim, clock: FakeClock, anchorer: Anchorer) -> None:
    """A site that anchored another view of its log (or rewrote the log after anchoring)."""
    _send(pipeline, device, clock, 2)
    size = pipeline.tree_size()
    anchorer.contract.anchor(size, b"\x66" * 32, bytes(32))
    claims = checkpoint_claims(pipeline.store, pipeline.settings, anchorer.chain,
                               [anchorer.contract.address])
    with pytest.raises(VerificationError, match=f"anchor of size {size} on chain"):
        verify_store(pipeline.store, pipeline.keys.log_key_history, claims=claims.claims)


def test_an_altered_index_entry_fails_verify(pipeline: Pipeline, device: DeviceSim,
                                             clock: FakeClock, anchorer: Anchorer) -> None:
    _send(pipeline, device, clock)
    record = anchorer.anchor_once()
    assert record is not None
    with pipeline.store.engine.begin() as conn:
        conn.execute(update(_schema.anchors).values(root=b"\x00" * 32))
    with pytest.raises(VerificationError, match="does not hold as recorded"):
        checkpoint_claims(pipeline.store, pipeline.settings, anchorer.chain)
    # without the chain, the altered index disagrees with the log itself
    claims = checkpoint_claims(pipeline.store, pipeline.settings, None)
    with pytest.raises(VerificationError, match="in the site's index"):
        verify_store(pipeline.store, pipeline.keys.log_key_history, claims=claims.claims)


def test_an_anchor_beyond_the_log_means_it_was_rolled_back(
        pipeline: Pipeline, device: DeviceSim, clock: FakeClock, anchorer: Anchorer) -> None:
    _send(pipeline, device, clock)
    size = pipeline.tree_size()
    anchorer.contract.anchor(size + 4, b"\x01" * 32, bytes(32))
    claims = checkpoint_claims(pipeline.store, pipeline.settings, anchorer.chain,
                               [anchorer.contract.address])
    with pytest.raises(VerificationError, match="truncated or rolled back"):
        verify_store(pipeline.store, pipeline.keys.log_key_history, claims=claims.claims)


class _SlowChain:
    """Holds every transaction of the wrapped chain until released."""

    def __init__(self, send: Any) -> None:
        self.send = send
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, call: Any) -> Any:
        self.started.set()
        assert self.release.wait(10)
        return self.send(call)


def test_a_slow_chain_never_holds_up_a_reading(pipeline: Pipeline, device: DeviceSim,
                                               clock: FakeClock, anchorer: Anchorer) -> None:
    slow = _SlowChain(anchorer.chain.send)
    anchorer.chain.send = slow  # type: ignore[method-assign]
    _send(pipeline, device, clock)
    worker = threading.Thread(target=anchorer.anchor_once)
    worker.start()
    assert slow.started.wait(10)
    _send(pipeline, device, clock, 3)            # the anchor is still in flight
    assert worker.is_alive() and pipeline.store.anchors() == []
    slow.release.set()
    worker.join(10)
    assert len(pipeline.store.anchors()) == 1


def test_the_thread_anchors_every_interval_and_once_more_on_stop(
        settings: Settings, device: DeviceSim, clock: FakeClock, pipeline: Pipeline) -> None:
    pipeline.settings = settings.with_(anchor_interval_s=0.05)  # type: ignore[misc]
    anchorer = Anchorer.open(pipeline)
    assert anchorer is not None
    _send(pipeline, device, clock)
    anchorer.start()
    deadline = time.monotonic() + 10
    while anchorer.status().anchors == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    _send(pipeline, device, clock)
    anchorer.stop()
    assert anchorer.status().last_size == pipeline.tree_size()


def test_the_interval_setting(settings: Settings, pipeline: Pipeline,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline.settings = settings.with_(anchor_interval_s=0)  # type: ignore[misc]
    assert Anchorer.open(pipeline) is None
    pipeline.settings = settings.with_(anchor_interval_s=-1)  # type: ignore[misc]
    with pytest.raises(ConfigError, match="positive number of seconds"):
        Anchorer.open(pipeline)
    monkeypatch.setenv("MEDTWIN_ANCHOR_INTERVAL_S", "soon")
    with pytest.raises(ConfigError, match="MEDTWIN_ANCHOR_INTERVAL_S"):
        Settings.from_env()
    monkeypatch.setenv("MEDTWIN_ANCHOR_INTERVAL_S", "2.5")
    monkeypatch.setenv("MEDTWIN_CHAIN_URL", "http://127.0.0.1:8545")
    got = Settings.from_env()
    assert (got.anchor_interval_s, got.chain_url) == (2.5, "http://127.0.0.1:8545")


def test_the_chain_key_is_kept_and_reused(pipeline: Pipeline, anchorer: Anchorer) -> None:
    again = Anchorer.open(pipeline)
    assert again is not None and again.chain.address == anchorer.chain.address
    key_file = pipeline.settings.resolved_keys_dir / "chain.key"
    assert key_file.stat().st_mode & 0o777 == 0o600


def test_witness_cosignatures_are_checked_and_held_to_the_log(
        pipeline: Pipeline, device: DeviceSim, clock: FakeClock, settings: Settings) -> None:
    from medtwin.config import TrustedWitness
    from medtwin.crypto import signature_suite
    from medtwin.ledger import NoteSigner, checkpoint_body, cosign_checkpoint

    private, public = signature_suite("ed25519").generate()
    signer = NoteSigner("witness.example", "ed25519", private, public)
    head, _ = _cosign_head(pipeline, device, clock, signer)
    trusting = settings.with_(witnesses=(TrustedWitness("witness.example", public),))
    claims = checkpoint_claims(pipeline.store, trusting, None)
    assert (claims.cosignatures, claims.cosignatures_unverified) == (1, 0)
    assert verify_store(pipeline.store, pipeline.keys.log_key_history,
                        claims=claims.claims).checkpoints_checked == 1
    assert checkpoint_claims(pipeline.store, settings, None).cosignatures_unverified == 1
    # a cosigned view the log does not have (the site showed the witness a split view)
    other = b"\x42" * 32
    forged = cosign_checkpoint(checkpoint_body(head.origin, head.size, other), signer, 5)
    pipeline.store.put_cosignature(head.origin, head.size, other, "witness.example", forged,
                                   5, clock())
    claims = checkpoint_claims(pipeline.store, trusting, None)
    with pytest.raises(VerificationError, match=r"witness\.example's cosignature"):
        verify_store(pipeline.store, pipeline.keys.log_key_history, claims=claims.claims)


def test_a_witness_re_registered_with_another_key_leaves_its_old_cosignatures_unverified(
        pipeline: Pipeline, device: DeviceSim, clock: FakeClock, settings: Settings) -> None:
    """Cosignatures are matched to the key that made them (name and key ID), not to the
    name: after a witness moves to an ML-DSA-65 key under the same name, its Ed25519
    cosignatures count as from a key no longer trusted, never as tampering; a bad signature
    by the configured key still fails."""
    from medtwin.config import TrustedWitness
    from medtwin.crypto import signature_suite
    from medtwin.ledger import NoteSigner, cosign_checkpoint

    old_private, old_public = signature_suite("ed25519").generate()
    old = NoteSigner("witness.example", "ed25519", old_private, old_public)
    new_private, new_public = signature_suite("ml-dsa-65").generate()
    new = NoteSigner("witness.example", "ml-dsa-65", new_private, new_public)
    head, body = _cosign_head(pipeline, device, clock, old)
    moved = settings.with_(witnesses=(
        TrustedWitness("witness.example", new_public, "ml-dsa-65"),))
    claims = checkpoint_claims(pipeline.store, moved, None)
    assert (claims.cosignatures, claims.cosignatures_unverified) == (1, 1)
    assert verify_store(pipeline.store, pipeline.keys.log_key_history,
                        claims=claims.claims).checkpoints_checked == 1
    # the new key's own cosignature is checked; a bad signature by it still fails
    line = cosign_checkpoint(body, new, 1_700_000_100)
    pipeline.store.put_cosignature(head.origin, head.size, head.root, "witness.example", line,
                                   1_700_000_100, clock())
    assert checkpoint_claims(pipeline.store, moved, None).cosignatures_unverified == 0
    blob = base64.b64decode(cosign_checkpoint(body, new, 1_700_000_200).split()[-1])
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    bad = f"\u2014 witness.example {base64.b64encode(tampered).decode()}\n"
    pipeline.store.put_cosignature(head.origin, head.size, head.root, "witness.example", bad,
                                   1_700_000_200, clock())
    with pytest.raises(VerificationError, match=r"invalid signature by known key "
                                                r"witness\.example\+"):
        checkpoint_claims(pipeline.store, moved, None)
    # a line filed under another witness's name is a table altered, not a retired key
    with pipeline.store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE cosignatures SET witness = 'other.example' "
                             "WHERE timestamp_s = 1700000200")
    with pytest.raises(VerificationError, match=r"stored as other\.example's is signed as "
                                                r"witness\.example's"):
        checkpoint_claims(pipeline.store, moved, None)


def test_the_anchorer_survives_a_failing_store_and_never_anchors_twice(
        pipeline: Pipeline, device: DeviceSim, clock: FakeClock, anchorer: Anchorer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    _send(pipeline, device, clock)

    def locked(_record: object) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(pipeline.store, "put_anchor", locked)
    anchorer._try_anchor()
    status = anchorer.status()
    assert status.last_error == "OperationalError" and status.last_size == pipeline.tree_size()
    monkeypatch.undo()
    assert anchorer.anchor_once() is None                  # that size is on the chain already
    _send(pipeline, device, clock)
    assert anchorer.anchor_once() is not None and anchorer.contract.count() == 2
