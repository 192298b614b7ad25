"""Crypto-shredding: erasing a patient destroys their data key; their ciphertext stays in the
store, unreadable, while the log still verifies and the site still restarts."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import numpy as np
import pytest
from sqlalchemy import select, update
from tests.conftest import DeviceSim, FakeClock

from medtwin.config import Settings
from medtwin.domain import Channel, RejectReason
from medtwin.errors import (
    ConflictError,
    DecryptionError,
    InvalidInputError,
    NotFoundError,
    PatientErasedError,
    VerificationError,
)
from medtwin.ingest import ImportSubmission
from medtwin.pipeline import Accepted, Pipeline, Rejected
from medtwin.pipeline._codec import packet_aad
from medtwin.store import _schema

N_PACKETS = 4


@pytest.fixture
def two_patients(pipeline: Pipeline, device: DeviceSim, clock: FakeClock,
                 make_device: Callable[..., DeviceSim]) -> DeviceSim:
    """Patients pt-1 (device vit-1, the `device` fixture) and pt-2 (device vit-2), each
    with `N_PACKETS` accepted packets; returns pt-2's device."""
    pipeline.add_patient("pt-2")
    other = make_device("vit-2", "pt-2")
    pipeline.add_device(other.device)
    for _ in range(N_PACKETS):
        clock.advance(60)
        outcomes = pipeline.process([device.submit(device.vitals(hr=135.0, spo2=90.0)),
                                     other.submit(other.vitals())])
        assert all(isinstance(o, Accepted) for o in outcomes)
    return other


def _erase(pipeline: Pipeline) -> None:
    pipeline.erase_patient("pt-1", "request of the patient, ticket 42", "dpo")


def test_erasure_leaves_ciphertext_that_cannot_be_opened(
        pipeline: Pipeline, two_patients: DeviceSim) -> None:
    [stored, *_] = pipeline.store.packets("pt-1")
    assert pipeline.keyring.open(stored.patient_id, pipeline.store.patient_keys()["pt-1"],
                                 stored.envelope, packet_aad(stored.leaf_index, "pt-1"))
    _erase(pipeline)
    assert len(list(pipeline.store.packets("pt-1"))) == N_PACKETS
    with pipeline.store.engine.connect() as conn:
        key = conn.execute(select(_schema.patients.c.wrapped_key).where(
            _schema.patients.c.patient_id == "pt-1")).scalar_one()
    assert key == b""
    assert "pt-1" not in pipeline.store.patient_keys()
    with pytest.raises(DecryptionError):
        pipeline.keyring.open("pt-1", key, stored.envelope, packet_aad(stored.leaf_index, "pt-1"))


def test_the_log_verifies_and_counts_what_it_could_not_open(
        pipeline: Pipeline, two_patients: DeviceSim) -> None:
    size = pipeline.tree_size()
    sealed = (N_PACKETS + len(pipeline.store.alerts("pt-1"))
              + len(pipeline.store.findings("pt-1")))
    _erase(pipeline)
    assert pipeline.tree_size() == size + 1
    report = pipeline.verify()
    assert (report.erasures, report.unreadable) == (1, sealed)
    assert report.signatures_checked == N_PACKETS            # only pt-2's could be re-checked
    assert report.tree_size == size + 1


def test_reads_of_an_erased_patient_raise_and_others_still_work(
        pipeline: Pipeline, two_patients: DeviceSim) -> None:
    assert pipeline.alerts("pt-1")                           # the fixture raised some
    _erase(pipeline)
    for read in (pipeline.twin_state, pipeline.alerts, pipeline.findings):
        with pytest.raises(PatientErasedError, match="pt-1' was erased; their data keys"):
            read("pt-1")
    assert pipeline.patients() == ["pt-2"]
    assert [s.patient_id for s in pipeline.twin_states()] == ["pt-2"]
    assert all(a.patient_id == "pt-2" for a in pipeline.alerts())
    assert pipeline.twin_state("pt-2").channels


def test_ingest_for_an_erased_patient_is_refused(
        pipeline: Pipeline, device: DeviceSim, two_patients: DeviceSim, clock: FakeClock) -> None:
    _erase(pipeline)
    clock.advance(60)
    [signed] = pipeline.process([device.submit(device.vitals())])
    assert isinstance(signed, Rejected)
    assert signed.error.reason is RejectReason.UNKNOWN_PATIENT
    assert "belongs to a patient who was erased" in str(signed.error)
    [imported] = pipeline.process([ImportSubmission(
        "pt-1", "late.ndjson", 0, [Channel.HEART_RATE.code], [Channel.HEART_RATE.ucum],
        np.array([70.0]), np.array([clock()], np.int64))])
    assert isinstance(imported, Rejected)
    assert "names a patient who was erased" in str(imported.error)
    assert len(list(pipeline.store.packets("pt-1"))) == N_PACKETS


def test_restart_skips_the_erased_patients_packets(
        settings: Settings, pipeline: Pipeline, two_patients: DeviceSim) -> None:
    before = pipeline.twin_state("pt-2")
    _erase(pipeline)
    pipeline.close()
    reopened = Pipeline.open(settings)
    try:
        assert reopened.replay_skipped == N_PACKETS
        assert reopened.patients() == ["pt-2"]
        assert reopened.twin_state("pt-2") == before
        with pytest.raises(PatientErasedError):
            reopened.twin_state("pt-1")
        with pytest.raises(ConflictError, match="pt-1' was already erased"):
            _erase(reopened)
        with pytest.raises(ConflictError, match="was erased; register them under a new id"):
            reopened.add_patient("pt-1")
    finally:
        reopened.close()


def test_erasing_twice_an_unknown_patient_or_without_reason_changes_nothing(
        pipeline: Pipeline, two_patients: DeviceSim) -> None:
    with pytest.raises(NotFoundError, match="unknown patient 'pt-9'"):
        pipeline.erase_patient("pt-9", "typo", "dpo")
    with pytest.raises(InvalidInputError, match="needs a reason"):
        pipeline.erase_patient("pt-1", "  ", "dpo")
    with pytest.raises(InvalidInputError, match="at most 500 characters"):
        pipeline.erase_patient("pt-1", "asked by " + "x" * 500, "dpo")
    assert pipeline.store.erased_patients() == set()
    _erase(pipeline)
    size = pipeline.tree_size()
    with pytest.raises(ConflictError, match="already erased"):
        _erase(pipeline)
    assert pipeline.tree_size() == size
    assert pipeline.store.erased_patients() == {"pt-1"}


def test_an_open_reader_delays_the_scrub_and_the_erasure_says_so(
        pipeline: Pipeline, two_patients: DeviceSim) -> None:
    """SQLite cannot empty its write-ahead log while a reader holds a snapshot: the erasure
    still happens, and reports that the old page lingers until the next checkpoint."""
    path = pipeline.store.engine.url.database
    assert path
    reader = sqlite3.connect(path)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM patients").fetchone()
        assert pipeline.erase_patient("pt-1", "ticket 43", "dpo") is False
    finally:
        reader.close()
    assert pipeline.store.scrub_wal() is True
    assert "pt-1" not in pipeline.patients()


def test_verify_fails_when_an_erased_patients_key_comes_back(
        pipeline: Pipeline, two_patients: DeviceSim) -> None:
    wrapped = pipeline.store.patient_wrapped_keys()["pt-1"]
    pipeline.erase_patient("pt-1", "ticket 44", "dpo")
    with pipeline.store.engine.begin() as conn:          # a patients table from a backup
        conn.execute(update(_schema.patients).where(_schema.patients.c.patient_id == "pt-1")
                     .values(wrapped_key=wrapped[0]))
    with pytest.raises(VerificationError, match="erased patient"):
        pipeline.verify()
