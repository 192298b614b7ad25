"""Site-level guarantees: one writer, staleness seen by readers, sequence numbers, imports."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from tests.conftest import DeviceSim, FakeClock

from medtwin.config import Settings
from medtwin.domain import Channel, Reading, RejectReason
from medtwin.errors import ConfigError
from medtwin.ingest import ImportSubmission, SignedSubmission
from medtwin.pipeline import Accepted, EventHub, Pipeline, Rejected, verify_store
from medtwin.pipeline._events import SUBSCRIBER_BUFFER


def test_one_process_writes_a_site_at_a_time(settings: Settings, pipeline: Pipeline) -> None:
    with pytest.raises(ConfigError, match=r"another medtwin process .* is writing"):
        Pipeline.open(settings)
    pipeline.close()
    Pipeline.open(settings).close()


def test_readers_see_stale_vitals_as_not_observed(pipeline: Pipeline, device: DeviceSim,
                                                  clock: FakeClock) -> None:
    pipeline.process([device.submit(device.vitals(hr=140.0, rr=28.0, temp=39.5, spo2=90.0,
                                                  sbp=88.0))])
    live = pipeline.twin_state("pt-1")
    assert (live.news2, live.news2_complete, live.active_rules) == (14, True, ("news2-low-medium",
                                                                               "news2-medium",
                                                                               "news2-high"))
    clock.advance(12 * 3600)
    later = pipeline.twin_state("pt-1")
    assert (later.news2, later.news2_complete, later.active_rules) == (0, False, ())
    assert later.channels[0].age_s == 12 * 3600


def test_an_authentic_packet_uses_its_sequence_number_even_when_refused(
        pipeline: Pipeline, device: DeviceSim) -> None:
    [refused] = pipeline.process([device.submit(device.vitals(hr=999.0), seq=5)])
    assert isinstance(refused, Rejected)
    assert refused.error.reason is RejectReason.IMPOSSIBLE_VALUE
    [again] = pipeline.process([device.submit(device.vitals(), seq=5)])
    assert isinstance(again, Rejected)
    assert again.error.reason is RejectReason.REPLAYED_SEQUENCE


def test_an_import_from_the_future_is_refused(pipeline: Pipeline, patient_id: str,
                                              clock: FakeClock) -> None:
    future = clock() + 40 * 365 * 86_400_000
    sub = ImportSubmission(patient_id, "in.ndjson", 0, [Channel.GLUCOSE.code], ["mg/dL"],
                           np.array([120.0]), np.array([future], np.int64))
    [outcome] = pipeline.process([sub])
    assert isinstance(outcome, Rejected)
    assert outcome.error.reason is RejectReason.CLOCK_SKEW
    now = ImportSubmission(patient_id, "in.ndjson", 1, [Channel.GLUCOSE.code], ["mg/dL"],
                           np.array([45.0]), np.array([clock()], np.int64))
    [accepted] = pipeline.process([now])
    assert isinstance(accepted, Accepted)
    assert [a.rule for a in accepted.alerts] == ["hypoglycaemia-level-2"]


def test_a_code_with_a_hidden_nul_is_malformed(pipeline: Pipeline, device: DeviceSim,
                                               clock: FakeClock) -> None:
    envelope = device.envelope([Reading(Channel.SPO2, 97.0, clock())])
    envelope["packet"]["readings"][0]["code"] = "59408-5\x00"
    envelope = device.sign(envelope["packet"])
    [outcome] = pipeline.process([SignedSubmission(envelope)])
    assert isinstance(outcome, Rejected)
    assert outcome.error.reason is RejectReason.MALFORMED


def test_verify_counts_records_after_the_signed_head_as_pending(
        pipeline: Pipeline, device: DeviceSim) -> None:
    pipeline.process([device.submit(device.vitals()) for _ in range(3)])
    head = pipeline.store.latest_head()
    assert head is not None
    pipeline.process([device.submit(device.vitals())])
    with pipeline.store.engine.begin() as conn:  # put the older head back
        conn.exec_driver_sql("UPDATE tree_heads SET size = ?, root = ?, signature = ?",
                             (head.size, head.root, head.signature))
    report = verify_store(pipeline.store, pipeline.keys.log_key)
    assert (report.records, report.pending) == (3, 1)


def test_a_slow_subscriber_misses_twin_updates_but_never_an_alert() -> None:
    async def scenario() -> list[str]:
        hub = EventHub()
        queue = hub.subscribe()
        hub.publish([{"type": "twin"}] * (SUBSCRIBER_BUFFER + 10) + [{"type": "alert"}])
        await asyncio.sleep(0)
        kinds = [queue.get_nowait()["type"] for _ in range(queue.qsize())]
        hub.unsubscribe(queue)
        return kinds

    kinds = asyncio.run(scenario())
    assert kinds.count("twin") == SUBSCRIBER_BUFFER
    assert kinds[-1] == "alert"
