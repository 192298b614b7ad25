"""The whole path: packets in, twin estimates and NEWS2 out, edge-triggered alerts, restarts,
`verify_store` catching every kind of tampering, and failed commits that change nothing."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from medtwin.config import Settings
from medtwin.domain import Channel, Device, Reading, RejectReason, Severity
from medtwin.errors import ConflictError, NotFoundError, StoreError, VerificationError
from medtwin.ingest import SignedSubmission
from medtwin.pipeline import Accepted, Pipeline, Rejected, VerifyReport, verify_store

if TYPE_CHECKING:
    from conftest import DeviceSim, FakeClock

BAD = {"hr": 140.0, "rr": 28.0, "spo2": 88.0, "sbp": 85.0, "temp": 39.5}   # NEWS2 14


def _channels(pipeline: Pipeline, patient: str = "pt-1") -> dict[Channel, tuple[float, float]]:
    return {c.channel: (c.value, c.estimate) for c in pipeline.twin_state(patient).channels}


def _step(pipeline: Pipeline, device: DeviceSim, clock: FakeClock, **vitals: float
          ) -> Accepted:
    clock.advance(60)
    (outcome,) = pipeline.process([device.submit(device.vitals(**vitals))])
    assert isinstance(outcome, Accepted), outcome
    return outcome


def _verify(pipeline: Pipeline) -> VerifyReport:
    return verify_store(pipeline.store, pipeline.keys.log_key_history)


@contextmanager
def _sql(pipeline: Pipeline) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(pipeline.settings.data_dir / "medtwin.db")
    try:
        yield conn
        conn.commit()
    finally:
        conn.close()


def test_end_to_end_estimates_and_news2(pipeline: Pipeline, device: DeviceSim,
                                        clock: FakeClock) -> None:
    first = _step(pipeline, device, clock, hr=80.0)
    assert (first.leaf_index, first.device_id, first.seq, first.n_readings) == (1, "vit-1", 0, 5)
    assert first.estimates.tolist() == [80.0, 16.0, 97.0, 120.0, 37.0]
    second = _step(pipeline, device, clock, hr=100.0)
    expected = 80.0 + (1 - np.exp(-60 / 120)) * (100.0 - 80.0)   # tau 120 s for heart rate
    assert second.estimates[0] == pytest.approx(expected)
    state = pipeline.twin_state("pt-1")
    assert state.patient_id == "pt-1" and state.time_ms == clock()
    channels = _channels(pipeline)
    assert channels[Channel.HEART_RATE][0] == 100.0
    assert channels[Channel.HEART_RATE][1] == pytest.approx(expected)
    assert set(channels) == {Channel.HEART_RATE, Channel.RESP_RATE, Channel.SPO2,
                             Channel.SYSTOLIC_BP, Channel.TEMPERATURE}
    assert (state.news2, state.news2_complete, state.news2_risk, state.active_rules) == (
        0, True, "low", ())
    assert {c.channel: c.age_s for c in state.channels}[Channel.SPO2] == 0.0
    assert pipeline.alerts() == []


def test_incomplete_news2_without_all_vitals(pipeline: Pipeline, device: DeviceSim,
                                             clock: FakeClock) -> None:
    pipeline.process([device.submit([Reading(Channel.SPO2, 95.0, clock())])])
    state = pipeline.twin_state("pt-1")
    assert (state.news2, state.news2_complete, state.news2_risk) == (1, False, "low")


def test_news2_alert_with_a_vital_missing(pipeline: Pipeline, device: DeviceSim,
                                          clock: FakeClock) -> None:
    (outcome,) = pipeline.process([device.submit([Reading(Channel.SPO2, 91.0, clock())])])
    assert isinstance(outcome, Accepted)
    state = pipeline.twin_state("pt-1")
    assert (state.news2, state.news2_complete, state.news2_risk) == (3, False, "low-medium")
    (alert,) = pipeline.alerts()
    assert alert.rule == "news2-low-medium"
    assert alert.evidence["not_observed"] == [
        "respiration_rate", "systolic_bp", "pulse", "temperature"]


def test_deterioration_raises_news2_high_once(pipeline: Pipeline, device: DeviceSim,
                                              clock: FakeClock) -> None:
    for _ in range(3):
        _step(pipeline, device, clock)
    assert pipeline.twin_state("pt-1").news2 == 0
    for _ in range(20):
        _step(pipeline, device, clock, **BAD)
    highs = [a for a in pipeline.alerts() if a.rule == "news2-high"]
    assert len(highs) == 1
    (alert,) = highs
    assert alert.patient_id == "pt-1" and alert.severity is Severity.HIGH
    assert alert.summary.startswith("NEWS2 ") and "(high clinical risk)" in alert.summary
    assert alert.evidence["statistic"] == "NEWS2" and alert.evidence["observed"] >= 7
    assert alert.evidence["threshold"] == "total >= 7"
    assert alert.evidence["no_alert_if"] == "a total below 7"
    assert clock() - 20 * 60_000 <= alert.time_ms <= clock()
    state = pipeline.twin_state("pt-1")
    assert state.news2 == 14 and state.news2_risk == "high"
    assert "news2-high" in state.active_rules
    assert pipeline.alerts("pt-1") == pipeline.alerts()
    assert pipeline.alerts("someone-else") == []
    assert pipeline.alerts(limit=1) == pipeline.alerts()[:1]


def test_alert_rearms_after_recovery(pipeline: Pipeline, device: DeviceSim,
                                     clock: FakeClock) -> None:
    _step(pipeline, device, clock)
    # A recovery over a quarter of an hour, and a relapse: a monitor whose every channel
    # turned normal within a minute would look like a masking attack to the guard.
    normal = {"hr": 72.0, "rr": 16.0, "spo2": 97.0, "sbp": 120.0, "temp": 37.0}
    ramp = [{k: BAD[k] + (normal[k] - BAD[k]) * i / 15 for k in BAD} for i in range(16)]
    for vitals in ([BAD] * 10 + ramp + [normal] * 10 + ramp[::-1] + [BAD] * 5):
        _step(pipeline, device, clock, **vitals)
    assert [a.rule for a in pipeline.alerts()].count("news2-high") == 2


def test_restart_rebuilds_the_twin_and_keeps_sequences(settings: Settings, pipeline: Pipeline,
                                                       device: DeviceSim,
                                                       clock: FakeClock) -> None:
    _step(pipeline, device, clock)
    for _ in range(8):
        last = device.envelope(device.vitals(**BAD))
        clock.advance(60)
        pipeline.process([SignedSubmission(last)])
    before = pipeline.twin_state("pt-1")
    size, alerts = pipeline.tree_size(), pipeline.alerts()
    report = _verify(pipeline)
    pipeline.close()

    reopened = Pipeline.open(settings)
    try:
        assert reopened.twin_state("pt-1") == before
        assert reopened.tree_size() == size
        assert reopened.alerts() == alerts
        assert _verify(reopened) == report
        assert {d.device_id: d.last_seq for d in reopened.devices()} == {"vit-1": 8}
        (replayed,) = reopened.process([SignedSubmission(last)])
        assert isinstance(replayed, Rejected)
        assert replayed.error.reason is RejectReason.REPLAYED_SEQUENCE
        # the condition was already active before the restart: no second alert
        clock.advance(60)
        (outcome,) = reopened.process([device.submit(device.vitals(**BAD))])
        assert isinstance(outcome, Accepted) and outcome.seq == 9
        assert [a.rule for a in reopened.alerts()].count("news2-high") == 1
    finally:
        reopened.close()


def test_restart_equals_live_twin_when_a_batch_arrives_out_of_order(
        settings: Settings, pipeline: Pipeline, device: DeviceSim, clock: FakeClock,
        make_device: Callable[..., DeviceSim]) -> None:
    second = make_device("vit-2")
    pipeline.add_device(second.device)
    t = clock()
    pipeline.process([device.submit([Reading(Channel.HEART_RATE, 70.0, t - 120_000)])])
    # one batch: the newer reading comes first, from another sensor of the same patient
    pipeline.process([device.submit([Reading(Channel.HEART_RATE, 100.0, t)]),
                      second.submit([Reading(Channel.HEART_RATE, 80.0, t - 60_000)])])
    live = pipeline.twin_state("pt-1")
    pipeline.close()
    reopened = Pipeline.open(settings)
    try:
        assert reopened.twin_state("pt-1") == live
    finally:
        reopened.close()


def test_restart_keeps_rules_held_by_hysteresis(settings: Settings, pipeline: Pipeline,
                                                device: DeviceSim, clock: FakeClock) -> None:
    # readings 30 min apart, so the estimates follow the values (alpha > 0.99)
    seven = {"hr": 140.0, "rr": 28.0, "temp": 38.5}                 # NEWS2 7: high starts
    six = {"hr": 140.0, "rr": 28.0, "temp": 37.0}                   # NEWS2 6: high holds
    for vitals in (seven, six):
        clock.advance(1800)
        pipeline.process([device.submit(device.vitals(**vitals))])
    assert "news2-high" in pipeline.twin_state("pt-1").active_rules
    pipeline.close()
    reopened = Pipeline.open(settings)
    try:
        assert "news2-high" in reopened.twin_state("pt-1").active_rules
        clock.advance(1800)
        reopened.process([device.submit(device.vitals(**seven))])
        assert [a.rule for a in reopened.alerts()].count("news2-high") == 1
    finally:
        reopened.close()


def test_grouping_into_batches_does_not_change_the_twin(
        settings: Settings, tmp_path: Path, pipeline: Pipeline, device: DeviceSim,
        clock: FakeClock, make_device: Callable[..., DeviceSim]) -> None:
    second = make_device("vit-2")
    pipeline.add_device(second.device)
    t = clock()
    envelopes = [device.envelope([Reading(Channel.HEART_RATE, 70.0, t - 120_000)]),
                 device.envelope([Reading(Channel.HEART_RATE, 100.0, t)]),
                 second.envelope([Reading(Channel.HEART_RATE, 80.0, t - 60_000)]),
                 second.envelope([Reading(Channel.SPO2, 94.0, t - 30_000),
                                  Reading(Channel.SPO2, 96.0, t - 90_000)])]
    pipeline.process([SignedSubmission(e) for e in envelopes])
    other = Pipeline.open(settings.with_(data_dir=tmp_path / "other"))
    try:
        other.add_patient("pt-1")
        other.add_device(device.device)
        other.add_device(second.device)
        for envelope in envelopes:
            other.process([SignedSubmission(envelope)])
        assert other.twin_state("pt-1") == pipeline.twin_state("pt-1")
    finally:
        other.close()


@pytest.mark.parametrize("grouping", ["one packet", "one batch", "two batches"])
def test_a_short_hypoglycaemia_alerts_however_it_is_batched(
        pipeline: Pipeline, device: DeviceSim, clock: FakeClock, grouping: str) -> None:
    t = clock()
    low, back = (Reading(Channel.GLUCOSE, 45.0, t - 1_800_000),
                 Reading(Channel.GLUCOSE, 110.0, t))
    if grouping == "one packet":
        pipeline.process([device.submit([low, back])])
    elif grouping == "one batch":
        pipeline.process([device.submit([low]), device.submit([back])])
    else:
        pipeline.process([device.submit([low])])
        pipeline.process([device.submit([back])])
    alerts = pipeline.alerts()
    assert [a.rule for a in alerts] == ["hypoglycaemia-level-2"]
    assert alerts[0].time_ms == low.time_ms
    assert pipeline.twin_state("pt-1").active_rules == ()


# verify_store ----------------------------------------------------------------------------------

@pytest.fixture
def logged(pipeline: Pipeline, device: DeviceSim, clock: FakeClock,
           make_device: Callable[..., DeviceSim]) -> Pipeline:
    """A log of registration #0, packets #1–#3, rejection #4, packets #5–#12 and news2 alerts."""
    for _ in range(3):
        _step(pipeline, device, clock)
    pipeline.process([make_device("ghost-1").submit(device.vitals())])
    for _ in range(8):
        _step(pipeline, device, clock, **BAD)
    return pipeline


def test_verify_passes_on_a_clean_run(logged: Pipeline) -> None:
    report = _verify(logged)
    counts = logged.store.counts()
    assert (report.packets, report.rejections, report.alerts) == (
        counts["packets"], counts["rejections"], counts["alerts"]) == (11, 1, report.alerts)
    assert report.alerts >= 1
    assert report.records == report.tree_size == logged.tree_size() == counts["leaves"]
    head = logged.store.latest_head()
    assert head is not None and head.root.hex() == report.root_hex and head.size == report.tree_size


def test_verify_of_an_empty_store(pipeline: Pipeline) -> None:
    report = _verify(pipeline)
    assert (report.records, report.tree_size) == (0, 0)


def _flip(logged: Pipeline, table: str, column: str, leaf_index: int, at: int = 40) -> None:
    with _sql(logged) as conn:
        (blob,) = conn.execute(f"SELECT {column} FROM {table} WHERE leaf_index = ?",
                               (leaf_index,)).fetchone()
        data = bytearray(blob)
        data[at] ^= 0x01
        conn.execute(f"UPDATE {table} SET {column} = ? WHERE leaf_index = ?",
                     (bytes(data), leaf_index))


@pytest.mark.parametrize(("column", "at"), [("envelope", 40), ("envelope", 0),
                                            ("signature", 5)])
def test_flipped_packet_byte_is_named(logged: Pipeline, column: str, at: int) -> None:
    _flip(logged, "packets", column, 3, at)
    with pytest.raises(VerificationError, match=r"^log: packet #3 \(device vit-1, seq 2\) does "
                                                r"not match its log leaf") as caught:
        _verify(logged)
    assert caught.value.record == "packet #3 (device vit-1, seq 2)"


def test_flipped_alert_byte_is_named(logged: Pipeline) -> None:
    (alert,) = logged.store.alerts(limit=1)
    _flip(logged, "alerts", "envelope", alert.leaf_index)
    with pytest.raises(VerificationError, match=rf"^log: alert #{alert.leaf_index} "
                                                rf"\({alert.rule}\) does not match") as caught:
        _verify(logged)
    assert caught.value.record == f"alert #{alert.leaf_index} ({alert.rule})"


@pytest.mark.parametrize(("sql", "record"), [
    ("UPDATE rejections SET detail = 'nothing to see' WHERE leaf_index = 4",
     "rejection #4 (unknown-device)"),
    ("UPDATE packets SET seq = 99 WHERE leaf_index = 5", "packet #5 (device vit-1, seq 99)"),
    ("UPDATE packets SET n_readings = 4 WHERE leaf_index = 1",
     "packet #1 (device vit-1, seq 0)"),
    ("UPDATE registrations SET public_key = zeroblob(32) WHERE leaf_index = 0",
     "registration #0 (device vit-1, active)"),
    ("UPDATE alerts SET severity = 'low'", None),
])
def test_altered_metadata_is_named(logged: Pipeline, sql: str, record: str | None) -> None:
    with _sql(logged) as conn:
        conn.execute(sql)
    with pytest.raises(VerificationError, match="does not match its log leaf") as caught:
        _verify(logged)
    if record is not None:
        assert caught.value.record == record
    else:
        assert caught.value.record is not None and caught.value.record.startswith("alert #")


_TABLES = {"packet": "packets", "alert": "alerts", "rejection": "rejections",
           "registration": "registrations"}


def test_deleted_row_is_detected(logged: Pipeline) -> None:
    records = list(logged.store.records())
    gone, found = records[5], records[6]
    with _sql(logged) as conn:
        conn.execute(f"DELETE FROM {_TABLES[gone.kind]} WHERE leaf_index = 5")
    with pytest.raises(VerificationError, match=rf"^log: expected record #5 but found "
                                                rf"{re.escape(found.describe())}: a record is "
                                                rf"missing or duplicated$") as caught:
        _verify(logged)
    assert caught.value.record == found.describe()


def test_deleted_last_row_is_detected(logged: Pipeline) -> None:
    last = list(logged.store.records())[-1]
    with _sql(logged) as conn:
        conn.execute(f"DELETE FROM {_TABLES[last.kind]} WHERE leaf_index = ?",
                     (last.leaf_index,))
    with pytest.raises(VerificationError, match=rf"record #{last.leaf_index} is missing$"
                       ) as caught:
        _verify(logged)
    assert caught.value.record == f"record #{last.leaf_index}"


def test_deleted_row_and_leaf_are_detected(logged: Pipeline) -> None:
    last = list(logged.store.records())[-1]
    with _sql(logged) as conn:
        conn.execute(f"DELETE FROM {_TABLES[last.kind]} WHERE leaf_index = ?",
                     (last.leaf_index,))
        conn.execute("DELETE FROM ledger_leaves WHERE leaf_index = ?", (last.leaf_index,))
    with pytest.raises(VerificationError, match=rf"signed head covers {last.leaf_index + 1} "
                       rf"records .* record #{last.leaf_index} is missing$") as caught:
        _verify(logged)
    assert caught.value.record == f"record #{last.leaf_index}"


def test_altered_record_with_matching_leaf_is_detected(logged: Pipeline) -> None:
    """Rewriting a record and its leaf hash together still breaks the signed root."""
    with _sql(logged) as conn:
        conn.execute("UPDATE rejections SET detail = 'rewritten' WHERE leaf_index = 4")
    rewritten = next(r for r in logged.store.records() if r.leaf_index == 4)
    from medtwin.ledger import leaf_data, leaf_hash
    h = leaf_hash(leaf_data(rewritten.kind, "4", rewritten.commit_bytes()))
    with _sql(logged) as conn:
        conn.execute("UPDATE ledger_leaves SET leaf_hash = ? WHERE leaf_index = 4", (h,))
    with pytest.raises(VerificationError, match=r"does not match the log recomputed from the "
                                                r"store .*the log was altered"):
        _verify(logged)


@pytest.mark.parametrize(("sql", "message"), [
    ("UPDATE tree_heads SET root = zeroblob(32)", r"^checkpoint: invalid signature on tree head"),
    ("UPDATE tree_heads SET size = size - 1", r"^checkpoint: invalid signature on tree head"),
    ("UPDATE tree_heads SET signature = zeroblob(64)", r"^checkpoint: invalid signature"),
    ("UPDATE tree_heads SET key_id = 'log-evil'", r"^checkpoint: signed by key 'log-evil', "
                                                  r"but the key in force at size \d+ is "),
    ("DELETE FROM tree_heads", r"^checkpoint: records exist but no signed tree head$"),
])
def test_altered_tree_head_fails(logged: Pipeline, sql: str, message: str) -> None:
    with _sql(logged) as conn:
        conn.execute(sql)
    with pytest.raises(VerificationError, match=message) as caught:
        _verify(logged)
    assert caught.value.record == "tree-head"


# Failed commits --------------------------------------------------------------------------------

def _snapshot(pipeline: Pipeline) -> tuple[object, ...]:
    return (pipeline.twin_state("pt-1"), pipeline.tree_size(),
            {d.device_id: d.last_seq for d in pipeline.devices()}, pipeline.store.counts(),
            pipeline.alerts())


def test_store_error_changes_nothing(pipeline: Pipeline, device: DeviceSim, clock: FakeClock,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _step(pipeline, device, clock)
    clock.advance(60)
    before = _snapshot(pipeline)

    def failing_commit(_batch: object) -> None:
        raise StoreError("store: batch not written: OperationalError")

    envelope = device.envelope(device.vitals(**BAD))
    monkeypatch.setattr(pipeline.store, "commit", failing_commit)
    with pytest.raises(StoreError, match=r"^store: batch not written"):
        pipeline.process([SignedSubmission(envelope)])
    assert _snapshot(pipeline) == before
    monkeypatch.undo()

    (outcome,) = pipeline.process([SignedSubmission(envelope)])
    assert isinstance(outcome, Accepted) and outcome.leaf_index == 2 and outcome.seq == 1
    assert _channels(pipeline)[Channel.HEART_RATE][0] == BAD["hr"]
    _verify(pipeline)


def test_database_failure_mid_batch_writes_nothing(pipeline: Pipeline, device: DeviceSim,
                                                   clock: FakeClock,
                                                   make_device: Callable[..., DeviceSim]) -> None:
    _step(pipeline, device, clock)
    clock.advance(60)
    before = _snapshot(pipeline)
    with _sql(pipeline) as conn:   # one table of the batch fails; the others must roll back
        conn.execute("CREATE TRIGGER full BEFORE INSERT ON rejections "
                     "BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    batch = [make_device("ghost-1").submit(device.vitals()),
             device.submit(device.vitals(hr=150, rr=30, spo2=85, sbp=80, temp=40))]
    with pytest.raises(StoreError, match=r"^store: batch not written: \w+Error$"):
        pipeline.process(batch)
    assert _snapshot(pipeline) == before
    with _sql(pipeline) as conn:
        conn.execute("DROP TRIGGER full")
    outcomes = pipeline.process(batch)
    assert [type(o) for o in outcomes] == [Rejected, Accepted]
    assert [o.leaf_index for o in outcomes] == [2, 3]
    assert _channels(pipeline)[Channel.HEART_RATE][0] == 150.0
    _verify(pipeline)


# Registration ----------------------------------------------------------------------------------

def test_registration_errors(pipeline: Pipeline, device: DeviceSim) -> None:
    with pytest.raises(ConflictError, match=r"^pipeline: patient 'pt-1' already exists$"):
        pipeline.add_patient("pt-1")
    with pytest.raises(ConflictError, match=r"^pipeline: device 'vit-1' already exists$"):
        pipeline.add_device(device.device)
    with pytest.raises(NotFoundError, match=r"^pipeline: unknown patient 'pt-2'; register"):
        pipeline.add_device(Device("vit-9", "pt-2", "ed25519", device.public_key))
    with pytest.raises(NotFoundError, match=r"^pipeline: unknown patient 'pt-2'$"):
        pipeline.twin_state("pt-2")
    assert pipeline.patients() == ["pt-1"]
    assert [d.device_id for d in pipeline.devices()] == ["vit-1"]


def test_many_patients_in_one_batch(pipeline: Pipeline, clock: FakeClock,
                                    make_device: Callable[..., DeviceSim]) -> None:
    devices = []
    for i in range(70):          # more than the twin bank's initial capacity
        pipeline.add_patient(f"pt-{i}")
        devices.append(make_device(f"dev-{i}", f"pt-{i}"))
        pipeline.add_device(devices[-1].device)
    outcomes = pipeline.process([d.submit(d.vitals(hr=60.0 + i))
                                 for i, d in enumerate(devices)])
    assert all(isinstance(o, Accepted) for o in outcomes)
    states = pipeline.twin_states()
    assert len(states) == 70
    hr = {s.patient_id: {c.channel: c.value for c in s.channels}[Channel.HEART_RATE]
          for s in states}
    assert hr == {f"pt-{i}": 60.0 + i for i in range(70)}
