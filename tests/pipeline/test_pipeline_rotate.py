"""Site KEK rotation: data keys are re-wrapped in batches under a fresh KEK, the rotation is
logged, and every patient stays readable during, after and across a crash mid-rotation."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select
from tests.conftest import DeviceSim, FakeClock

from medtwin.config import Settings
from medtwin.crypto import KeyRing, SiteKeys, WrappedKey
from medtwin.crypto._keys import KEK_FILE
from medtwin.errors import (
    ConfigError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    StoreError,
)
from medtwin.pipeline import Accepted, Pipeline
from medtwin.pipeline._codec import packet_aad
from medtwin.store import Commit, RetirementRecord, RotationRecord, _schema

N_PATIENTS = 5


class Crash(Exception):
    """Stands for the process dying between two re-wrap batches."""


@pytest.fixture
def ward(pipeline: Pipeline, clock: FakeClock,
         make_device: Callable[..., DeviceSim]) -> list[DeviceSim]:
    """`N_PATIENTS` patients pt-0.. with one device each and one accepted packet each."""
    devices = []
    for k in range(N_PATIENTS):
        pipeline.add_patient(f"pt-{k}")
        sim = make_device(f"vit-{k}", f"pt-{k}")
        pipeline.add_device(sim.device)
        devices.append(sim)
    _ingest(pipeline, clock, devices)
    return devices


def _ingest(pipeline: Pipeline, clock: FakeClock, devices: list[DeviceSim]) -> None:
    clock.advance(60)
    outcomes = pipeline.process([d.submit(d.vitals()) for d in devices])
    assert all(isinstance(o, Accepted) for o in outcomes)


def _open_every_packet(settings: Settings) -> int:
    """Open every stored packet with keys freshly loaded from the key file (no cache)."""
    pipeline = Pipeline.open(settings)
    try:
        ring = KeyRing(SiteKeys.load(settings.resolved_keys_dir), settings.aead_suite)
        wrapped = {p: WrappedKey(*k) for p, k in pipeline.store.patient_wrapped_keys().items()}
        packets = list(pipeline.store.packets())
        for rec in packets:
            assert ring.open(rec.patient_id, wrapped[rec.patient_id], rec.envelope,
                             packet_aad(rec.leaf_index, rec.patient_id))
        return len(packets)
    finally:
        pipeline.close()


def _crash_after_first_batch(done: int, _total: int) -> None:
    raise Crash(f"died after {done} patients")


def test_rotation_rewraps_every_patient_in_batches(
        pipeline: Pipeline, ward: list[DeviceSim], settings: Settings) -> None:
    old = pipeline.keys.kek_id
    calls: list[tuple[int, int]] = []
    record = pipeline.rotate_kek("sec-officer", "yearly rotation", batch=2,
                                 progress=lambda done, total: calls.append((done, total)))
    assert (record.old_kek_id, record.new_kek_id) == (old, pipeline.keys.kek_id)
    assert record.new_kek_id != old
    assert calls == [(2, 5), (4, 5), (5, 5)]
    assert pipeline.store.kek_usage() == {record.new_kek_id: N_PATIENTS}
    assert pipeline.pending_rewrap() == []
    assert SiteKeys.load(settings.resolved_keys_dir).kek_ids == [record.new_kek_id, old]
    kek_file = settings.resolved_keys_dir / KEK_FILE
    assert kek_file.stat().st_mode & 0o777 == 0o600


def test_data_before_and_after_rotation_opens_and_restart_verifies(
        pipeline: Pipeline, ward: list[DeviceSim], settings: Settings,
        clock: FakeClock) -> None:
    pipeline.rotate_kek("sec-officer", "yearly rotation", batch=2)
    _ingest(pipeline, clock, ward)
    pipeline.add_patient("pt-new")
    pipeline.close()
    assert _open_every_packet(settings) == 2 * N_PATIENTS
    reopened = Pipeline.open(settings)
    try:
        report = reopened.verify()
        assert report.rotations == 1
        assert report.signatures_checked == 2 * N_PATIENTS
        assert reopened.store.kek_usage() == {reopened.keys.kek_id: N_PATIENTS + 1}
        _ingest(reopened, clock, ward)
    finally:
        reopened.close()


def test_rotation_is_a_logged_record_naming_ids_only(
        pipeline: Pipeline, ward: list[DeviceSim]) -> None:
    size, old_kek = pipeline.tree_size(), pipeline.keys.kek
    record = pipeline.rotate_kek("sec-officer", "ticket 51")
    assert record.leaf_index == size and pipeline.tree_size() == size + 1
    [logged] = [r for r in pipeline.store.records() if r.kind == "kek-rotation"]
    assert logged == record
    assert logged.reason == "by sec-officer: ticket 51"
    for kek in (old_kek, pipeline.keys.kek):
        assert kek.hex() not in repr(logged) and repr(kek) not in repr(logged)
        assert repr(kek) not in repr(pipeline.keys)


def test_ingestion_goes_on_between_batches(
        pipeline: Pipeline, ward: list[DeviceSim], clock: FakeClock) -> None:
    ingested: list[bool] = []

    def ingest_from_another_thread(_done: int, _total: int) -> None:
        worker = threading.Thread(target=lambda: ingested.append(
            bool(_ingest(pipeline, clock, ward[:1]) is None)))
        worker.start()
        worker.join(timeout=10)
        assert not worker.is_alive(), "the pipeline lock was held between batches"

    pipeline.rotate_kek("sec-officer", "yearly rotation", batch=2,
                        progress=ingest_from_another_thread)
    assert ingested == [True, True, True]


def test_crash_between_batches_leaves_every_patient_readable(
        pipeline: Pipeline, ward: list[DeviceSim], settings: Settings) -> None:
    old = pipeline.keys.kek_id
    with pytest.raises(Crash):
        pipeline.rotate_kek("sec-officer", "yearly rotation", batch=2,
                            progress=_crash_after_first_batch)
    new = pipeline.keys.kek_id
    assert pipeline.store.kek_usage() == {new: 2, old: 3}
    pipeline.close()
    assert _open_every_packet(settings) == N_PATIENTS
    reopened = Pipeline.open(settings)
    try:
        assert reopened.verify().rotations == 1
        assert len(reopened.pending_rewrap()) == 3
        assert reopened.rewrap_patients(batch=2) == 3
        assert reopened.store.kek_usage() == {new: N_PATIENTS}
    finally:
        reopened.close()


def test_retire_refused_while_a_patient_needs_the_kek_then_allowed(
        pipeline: Pipeline, ward: list[DeviceSim], settings: Settings) -> None:
    old = pipeline.keys.kek_id
    with pytest.raises(Crash):
        pipeline.rotate_kek("sec-officer", "yearly rotation", batch=2,
                            progress=_crash_after_first_batch)
    with pytest.raises(ConflictError, match=r"still wraps the data keys of 3 patients; run "
                                            r"`medtwin keys rewrap` first"):
        pipeline.retire_kek(old)
    with pytest.raises(ConflictError, match="is the current KEK"):
        pipeline.retire_kek(pipeline.keys.kek_id)
    with pytest.raises(NotFoundError, match="no previous KEK 'kek-nope'"):
        pipeline.retire_kek("kek-nope")
    assert old in SiteKeys.load(settings.resolved_keys_dir).kek_ids
    pipeline.rewrap_patients()
    record = pipeline.retire_kek(old, "sec-officer")
    assert (record.kek_id, record.reason) == (old, "by sec-officer")
    assert SiteKeys.load(settings.resolved_keys_dir).kek_ids == [pipeline.keys.kek_id]
    assert pipeline.verify().kek_retirements == 1
    pipeline.close()
    assert _open_every_packet(settings) == N_PATIENTS


def test_erased_patients_are_skipped_and_stay_erased(
        pipeline: Pipeline, ward: list[DeviceSim]) -> None:
    pipeline.erase_patient("pt-0", "request of the patient, ticket 42", "dpo")
    calls: list[tuple[int, int]] = []
    pipeline.rotate_kek("sec-officer", "yearly rotation",
                        progress=lambda done, total: calls.append((done, total)))
    assert calls == [(N_PATIENTS - 1, N_PATIENTS - 1)]
    with pipeline.store.engine.connect() as conn:
        key = conn.execute(select(_schema.patients.c.wrapped_key).where(
            _schema.patients.c.patient_id == "pt-0")).scalar_one()
    assert key == b""
    assert pipeline.verify().rotations == 1


def test_rotation_needs_a_reason_and_changes_nothing_without_one(
        pipeline: Pipeline, ward: list[DeviceSim], settings: Settings) -> None:
    before = (settings.resolved_keys_dir / KEK_FILE).read_bytes()
    with pytest.raises(InvalidInputError, match="needs a reason"):
        pipeline.rotate_kek("sec-officer", "  ")
    with pytest.raises(InvalidInputError, match="at least 1 patient"):
        pipeline.rewrap_patients(batch=0)
    assert (settings.resolved_keys_dir / KEK_FILE).read_bytes() == before


def test_key_files_from_before_rotation_still_load(
        pipeline: Pipeline, ward: list[DeviceSim], settings: Settings) -> None:
    kek_file = settings.resolved_keys_dir / KEK_FILE
    assert set(json.loads(kek_file.read_text())) == {"kek_id", "suite", "key"}
    old = SiteKeys.load(settings.resolved_keys_dir)
    assert old.kek_ids == [old.kek_id]
    pipeline.rotate_kek("sec-officer", "yearly rotation")
    document = json.loads(kek_file.read_text())
    assert [entry["kek_id"] for entry in document["previous"]] == [old.kek_id]


def test_a_missing_kek_says_what_to_restore_without_key_material(
        pipeline: Pipeline, ward: list[DeviceSim]) -> None:
    with pytest.raises(ConfigError, match="KEK 'kek-gone' is not in the site key file; "
                                          "restore") as caught:
        pipeline.keys.kek_for("kek-gone")
    assert pipeline.keys.kek.hex() not in str(caught.value)


def test_a_rotation_that_cannot_be_logged_changes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline = Pipeline.open(Settings(data_dir=tmp_path / "site"))
    try:
        pipeline.add_patient("pt-1")
        before = pipeline.keys.kek_id
        key_file = json.loads((pipeline.settings.resolved_keys_dir / KEK_FILE).read_text())

        def fail(*_args: object, **_kwargs: object) -> None:
            raise StoreError("store: batch not written: OperationalError")

        monkeypatch.setattr(pipeline.store, "commit", fail)
        with pytest.raises(StoreError):
            pipeline.start_rotation("sec-officer", "yearly rotation")
        assert pipeline.keys.kek_id == before
        assert json.loads((pipeline.settings.resolved_keys_dir / KEK_FILE).read_text()) == key_file
    finally:
        pipeline.close()


def _commit_then_fail(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the store's commits land, then report failure (a lost acknowledgement)."""
    commit = pipeline.store.commit

    def commit_then_fail(batch: Commit) -> None:
        commit(batch)
        raise StoreError("store: connection lost before the acknowledgement")

    monkeypatch.setattr(pipeline.store, "commit", commit_then_fail)


def test_a_retirement_committed_despite_an_error_keeps_the_kek_retired(
        pipeline: Pipeline, ward: list[DeviceSim], settings: Settings, clock: FakeClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The log says the KEK is retired, so the key file must not hold it any more."""
    old = pipeline.keys.kek_id
    pipeline.rotate_kek("sec-officer", "yearly rotation")
    _commit_then_fail(pipeline, monkeypatch)
    with pytest.raises(StoreError, match="before the acknowledgement"):
        pipeline.retire_kek(old, "sec-officer")
    monkeypatch.undo()
    [record] = [r for r in pipeline.store.records() if isinstance(r, RetirementRecord)]
    assert record.kek_id == old
    assert old not in SiteKeys.load(settings.resolved_keys_dir).kek_ids
    assert old not in pipeline.keys.kek_ids
    _ingest(pipeline, clock, ward)                    # the log goes on from the landed record
    assert pipeline.verify().kek_retirements == 1
    pipeline.close()
    assert _open_every_packet(settings) == 2 * N_PATIENTS


def test_a_rotation_committed_despite_an_error_keeps_the_new_kek(
        pipeline: Pipeline, ward: list[DeviceSim], settings: Settings,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _commit_then_fail(pipeline, monkeypatch)
    with pytest.raises(StoreError, match="before the acknowledgement"):
        pipeline.start_rotation("sec-officer", "yearly rotation")
    monkeypatch.undo()
    [record] = [r for r in pipeline.store.records() if isinstance(r, RotationRecord)]
    assert pipeline.keys.kek_id == record.new_kek_id
    assert SiteKeys.load(settings.resolved_keys_dir).kek_ids == [record.new_kek_id,
                                                                  record.old_kek_id]
    assert pipeline.rewrap_patients() == N_PATIENTS
    assert pipeline.verify().rotations == 1
