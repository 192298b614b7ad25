"""Log signing key rotation without downtime: the outgoing key endorses the new one in a
logged record, heads are signed by the new key from that record on, verify follows the chain
from the first key, an interrupted rotation completes at the next start, and a key nobody
endorsed is refused."""

from __future__ import annotations

import base64
import dataclasses
import json
import sqlite3
import threading
from collections.abc import Callable

import pytest
from tests.conftest import DeviceSim, FakeClock

from medtwin.config import Settings
from medtwin.crypto import (
    LOG_KEY_FILE,
    LogSigningKey,
    PublicLogKey,
    SiteKeys,
    check_session_key,
    endorse_log_key,
    signature_suite,
)
from medtwin.errors import ConfigError, InvalidInputError, StoreError, VerificationError
from medtwin.ledger import NoteVerifier, open_checkpoint_note
from medtwin.pipeline import Accepted, Pipeline, verify_store
from medtwin.store import Commit, LogKeyRecord


def _note_verifier(pipeline: Pipeline, suite: str, public_key: bytes) -> NoteVerifier:
    return NoteVerifier(pipeline.settings.log_origin, suite, public_key)


def test_a_rotated_log_key_signs_every_later_head_and_verify_follows(
        pipeline: Pipeline, device: DeviceSim, clock: FakeClock) -> None:
    assert isinstance(pipeline.process([device.submit(device.vitals())])[0], Accepted)
    first = pipeline.keys.log_key
    record = pipeline.rotate_log_key("ops", "ticket 12: yearly rotation", "ml-dsa-65")
    assert (record.previous_key_id, record.suite) == (first.key_id, "ml-dsa-65")
    assert pipeline.keys.log_key.key_id == record.key_id != first.key_id
    assert pipeline.keys.unsettled_log_key is None            # the old private key is gone
    assert pipeline.keys.first_log_key.same_key(first.public)
    clock.advance(60)
    assert isinstance(pipeline.process([device.submit(device.vitals())])[0], Accepted)
    head = pipeline.store.latest_head()
    assert head is not None and (head.key_id, head.suite) == (record.key_id, "ml-dsa-65")
    report = verify_store(pipeline.store, pipeline.keys.log_key_history, pipeline.keyring)
    assert (report.log_key_rotations, report.log_key_id) == (1, record.key_id)
    latest = pipeline.checkpoint_note()
    assert latest is not None
    new = pipeline.keys.log_key
    open_checkpoint_note(latest[1], [_note_verifier(pipeline, new.suite, new.public_key)])
    with pytest.raises(VerificationError):
        open_checkpoint_note(latest[1], [_note_verifier(pipeline, first.suite,
                                                        first.public_key)])
    [logged] = pipeline.log_key_rotations()
    assert logged == record and logged.reason == "by ops: ticket 12: yearly rotation"


def test_the_site_restarts_with_the_rotated_key(settings: Settings, pipeline: Pipeline,
                                                device: DeviceSim, clock: FakeClock) -> None:
    pipeline.rotate_log_key("ops", "ticket 13")
    pipeline.rotate_log_key("ops", "ticket 14", "ecdsa-p256")
    current = pipeline.keys.log_key.key_id
    pipeline.close()
    reopened = Pipeline.open(settings)
    try:
        assert reopened.keys.log_key.key_id == current
        assert len(reopened.keys.previous_log_keys) == 2
        clock.advance(60)
        assert isinstance(reopened.process([device.submit(device.vitals())])[0], Accepted)
        assert reopened.verify().log_key_rotations == 2
    finally:
        reopened.close()


def test_an_interrupted_rotation_is_completed_at_the_next_start(
        settings: Settings, pipeline: Pipeline, device: DeviceSim) -> None:
    pipeline.process([device.submit(device.vitals())])
    pipeline.close()
    keys_dir = settings.resolved_keys_dir
    # the crash: the key file holds the new key, the log does not have the rotation yet
    crashed = SiteKeys.rotate_log_key(keys_dir, "ed25519")
    assert crashed.unsettled_log_key is not None
    reopened = Pipeline.open(settings)
    try:
        [record] = reopened.log_key_rotations()
        assert record.key_id == crashed.log_key.key_id
        assert "interrupted" in record.reason
        assert reopened.keys.unsettled_log_key is None
        document = json.loads((keys_dir / LOG_KEY_FILE).read_text())
        assert all("private_key" not in old for old in document["previous"])
        assert reopened.verify().log_key_id == crashed.log_key.key_id
    finally:
        reopened.close()


def test_a_key_file_with_an_unendorsed_log_key_is_refused(settings: Settings,
                                                          pipeline: Pipeline,
                                                          device: DeviceSim) -> None:
    pipeline.process([device.submit(device.vitals())])
    pipeline.close()
    path = settings.resolved_keys_dir / LOG_KEY_FILE
    private, public = signature_suite("ed25519").generate()
    document = json.loads(path.read_text())
    document.update(key_id="log-swapped", private_key=base64.b64encode(private).decode(),
                    public_key=base64.b64encode(public).decode())
    path.write_text(json.dumps(document))
    with pytest.raises(VerificationError, match=r"key in force at size .* is 'log-swapped'"):
        Pipeline.open(settings)


def test_a_rotation_the_key_in_force_did_not_sign_fails_verify(pipeline: Pipeline,
                                                               device: DeviceSim) -> None:
    pipeline.process([device.submit(device.vitals())])
    private, public = signature_suite("ed25519").generate()
    rogue = LogSigningKey("log-rogue", "ed25519", private, public)
    forged = endorse_log_key(rogue, rogue.public, pipeline.settings.log_origin,
                             pipeline._tree.size, 0, "forged")
    with pipeline._lock:
        pipeline._log_action(LogKeyRecord.of(forged), 0)     # as if written by a rogue site
    with pytest.raises(VerificationError, match="not by the key in force"):
        verify_store(pipeline.store, pipeline.keys.log_key_history)


def test_an_edited_rotation_record_fails_verify(settings: Settings, pipeline: Pipeline) -> None:
    record = pipeline.rotate_log_key("ops", "ticket 15")
    database = settings.data_dir / "medtwin.db"
    assert database.exists()
    with sqlite3.connect(database) as conn:
        conn.execute("UPDATE log_keys SET reason = 'by ops: nothing to see' "
                     "WHERE leaf_index = ?", (record.leaf_index,))
    with pytest.raises(VerificationError, match="log key rotation"):
        verify_store(pipeline.store, pipeline.keys.log_key_history)


def test_a_rotation_that_cannot_be_logged_changes_nothing(
        settings: Settings, pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    before = pipeline.keys.log_key
    file_before = (settings.resolved_keys_dir / LOG_KEY_FILE).read_bytes()

    def refuse(*_: object, **__: object) -> None:
        raise StoreError("store: disk full")

    monkeypatch.setattr(pipeline.store, "commit", refuse)
    with pytest.raises(StoreError):
        pipeline.rotate_log_key("ops", "ticket 16")
    assert pipeline.keys.log_key == before
    assert json.loads((settings.resolved_keys_dir / LOG_KEY_FILE).read_bytes()) == \
        json.loads(file_before)
    with pytest.raises(InvalidInputError, match="reason"):
        pipeline.rotate_log_key("ops", " ")
    with pytest.raises(ConfigError, match="unknown signature suite"):
        pipeline.rotate_log_key("ops", "ticket 17", "rsa-1024")
    assert pipeline.keys.log_key == before and pipeline.log_key_rotations() == []


def _forge_rotation(pipeline: Pipeline, reason: str) -> LogSigningKey:
    """What someone holding the current (soon retired) log key and the database could do:
    log a rotation to a key of their own. Returns their key."""
    private, public = signature_suite("ed25519").generate()
    theirs = LogSigningKey(pipeline.keys.log_key.key_id, "ed25519", private, public)
    forged = dataclasses.replace(pipeline.keys, log_key=theirs,
                                 unsettled_log_key=pipeline.keys.log_key)
    with pipeline._lock:
        pipeline._log_rotation(forged, reason)
    return theirs


def test_a_rotation_forged_with_a_retired_key_fails_verify(pipeline: Pipeline,
                                                           device: DeviceSim) -> None:
    """The key file's history pins which keys the rotations may bring in: an endorsement
    by the right (stolen) key of a key the site never held fails, whatever its id says."""
    pipeline.process([device.submit(device.vitals())])
    history = pipeline.keys.log_key_history
    genuine = signature_suite("ed25519").generate()[1]
    theirs = _forge_rotation(pipeline, "by ops: ticket 18")
    with pytest.raises(VerificationError, match="does not hold in that place"):
        verify_store(pipeline.store, (*history, PublicLogKey(theirs.key_id, "ed25519",
                                                             genuine)))
    assert verify_store(pipeline.store, (*history, theirs.public)).log_key_rotations == 1
    with pytest.raises(VerificationError, match="rotation records are missing"):
        verify_store(pipeline.store, (*history, theirs.public, *history, *history))


def test_readers_during_a_rotation_never_get_a_key_the_log_does_not_endorse(
        pipeline: Pipeline, device: DeviceSim, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the rotation commits, the session-key offer and the checkpoint note are read
    from other threads; afterwards both lead from the first key to the new one."""
    pipeline.process([device.submit(device.vitals())])
    first = pipeline.keys.log_key
    commit = pipeline.store.commit
    readers: list[threading.Thread] = []
    notes: list[str] = []

    def commit_and_read(batch: Commit) -> None:
        pipeline.session_key_offer()                       # read without the lock
        commit(batch)
        reader = threading.Thread(target=lambda: notes.append(pipeline.checkpoint_note()[1]))
        reader.start()
        readers.append(reader)

    monkeypatch.setattr(pipeline.store, "commit", commit_and_read)
    pipeline.rotate_log_key("ops", "ticket 19")
    for reader in readers:
        reader.join(timeout=10)
    new = pipeline.keys.log_key
    origin = pipeline.settings.log_origin
    checked = check_session_key(pipeline.session_key_offer(), first.public, origin)
    assert checked.log_key.same_key(new.public)
    [note] = notes
    open_checkpoint_note(note, [_note_verifier(pipeline, new.suite, new.public_key)])


def test_a_rotation_committed_despite_an_error_keeps_its_new_key(
        settings: Settings, pipeline: Pipeline, device: DeviceSim,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A commit that lands but reports failure (a lost acknowledgement) must not cost the
    new private key: the site keeps signing with the key the log endorses."""
    commit = pipeline.store.commit

    def commit_then_fail(batch: Commit) -> None:
        commit(batch)
        raise StoreError("store: connection lost before the acknowledgement")

    monkeypatch.setattr(pipeline.store, "commit", commit_then_fail)
    with pytest.raises(StoreError):
        pipeline.rotate_log_key("ops", "ticket 20")
    monkeypatch.undo()
    [record] = pipeline.log_key_rotations()
    assert pipeline.keys.log_key.key_id == record.key_id
    assert pipeline.keys.unsettled_log_key is None
    pipeline.process([device.submit(device.vitals())])
    pipeline.close()
    reopened = Pipeline.open(settings)
    try:
        assert reopened.verify().log_key_id == record.key_id
    finally:
        reopened.close()


def test_a_key_file_rotated_outside_medtwin_is_refused_at_start(
        settings: Settings, pipeline: Pipeline, device: DeviceSim) -> None:
    """A key file that names a new log key the log never endorsed, with no outgoing key
    left to endorse it: the site refuses to sign with it and says what to restore."""
    pipeline.process([device.submit(device.vitals())])
    in_force = pipeline.keys.log_key.key_id
    pipeline.close()
    SiteKeys.rotate_log_key(settings.resolved_keys_dir, "ed25519")
    SiteKeys.settle_log_key(settings.resolved_keys_dir)          # the outgoing key dropped
    with pytest.raises(ConfigError, match=f"restore the key file that holds '{in_force}'"):
        Pipeline.open(settings)


def test_a_new_site_can_start_with_a_post_quantum_log_key(settings: Settings,
                                                           make_device: Callable[..., DeviceSim]
                                                           ) -> None:
    """MEDTWIN_LOG_SUITE=ml-dsa-65: the first log key, every head and the checkpoint note
    are ML-DSA-65 from the start."""
    pq = dataclasses.replace(settings, data_dir=settings.data_dir.parent / "pq-site",
                             log_suite="ml-dsa-65")
    site = Pipeline.open(pq)
    try:
        site.add_patient("pt-1")
        device = make_device("vit-1", "pt-1")
        site.add_device(device.device)
        assert isinstance(site.process([device.submit(device.vitals())])[0], Accepted)
        head = site.store.latest_head()
        assert head is not None and head.suite == "ml-dsa-65"
        latest = site.checkpoint_note()
        assert latest is not None
        key = site.keys.log_key
        open_checkpoint_note(latest[1], [_note_verifier(site, key.suite, key.public_key)])
        assert site.verify().signatures_checked == 1
    finally:
        site.close()
    with pytest.raises(ConfigError, match="unknown signature suite 'rsa'"):
        Pipeline.open(dataclasses.replace(pq, data_dir=pq.data_dir.parent / "rsa-site",
                                          log_suite="rsa"))
