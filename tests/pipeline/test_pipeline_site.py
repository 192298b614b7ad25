"""Site-level guarantees: one writer, staleness seen by readers, sequence numbers, imports."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest
from tests.conftest import DeviceSim, FakeClock

from medtwin.config import Settings
from medtwin.domain import Channel, Reading, RejectReason
from medtwin.errors import ConfigError, VerificationError
from medtwin.ingest import ImportSubmission, SignedSubmission
from medtwin.ledger import MerkleTree, leaf_data, leaf_hash, sign_tree_head
from medtwin.pipeline import Accepted, EventHub, Pipeline, Rejected, verify_store
from medtwin.pipeline._events import SUBSCRIBER_BUFFER
from medtwin.store import PacketRecord


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
    report = verify_store(pipeline.store, pipeline.keys.log_key_history)
    assert (report.records, report.registrations, report.pending) == (4, 1, 1)
    # no head covers it, but the device table is held to it: its row must be the one logged
    with pipeline.store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE packets SET envelope = (SELECT envelope FROM packets "
                             "ORDER BY leaf_index LIMIT 1) WHERE leaf_index = ?",
                             (head.size,))
    with pytest.raises(VerificationError, match=r"beyond the signed head, does not match its "
                                                "log leaf"):
        verify_store(pipeline.store, pipeline.keys.log_key_history)


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


def test_verify_catches_a_swapped_device_key(pipeline: Pipeline, device: DeviceSim) -> None:
    pipeline.process([device.submit(device.vitals())])
    with pipeline.store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE devices SET public_key = zeroblob(32)")
    with pytest.raises(VerificationError, match=r"^devices: device 'vit-1' differs from its "
                                                r"logged registration") as caught:
        verify_store(pipeline.store, pipeline.keys.log_key_history)
    assert caught.value.record == "device vit-1"


def test_not_even_the_site_can_fabricate_a_device_packet(pipeline: Pipeline,
                                                         device: DeviceSim) -> None:
    """An insider holding the site's keys rewrites a packet's readings, seals them again,
    fixes the leaf and re-signs the tree head: only the device signature check catches it."""
    pipeline.process([device.submit(device.vitals(hr=70.0)) for _ in range(2)])
    (record,) = [r for r in pipeline.store.records() if r.leaf_index == 2]
    assert isinstance(record, PacketRecord)
    wrapped = pipeline.store.patient_keys()["pt-1"]
    payload = pipeline.keyring.open("pt-1", wrapped, record.envelope,
                                    b"medtwin/packet/2/pt-1")
    forged = payload.replace(b'"value":70', b'"value":40')
    assert forged != payload
    envelope = pipeline.keyring.seal("pt-1", wrapped, forged, b"medtwin/packet/2/pt-1")
    altered = dataclasses.replace(record, envelope=envelope)
    leaf = leaf_hash(leaf_data("packet", "2", altered.commit_bytes()))
    leaves = pipeline.store.leaf_hashes()
    leaves[2] = leaf
    tree = MerkleTree(leaves)
    head = sign_tree_head(pipeline.keys.log_key, pipeline.settings.log_origin, tree.size,
                          tree.root(), 0)
    with pipeline.store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE packets SET envelope = ? WHERE leaf_index = 2", (envelope,))
        conn.exec_driver_sql("UPDATE ledger_leaves SET leaf_hash = ? WHERE leaf_index = 2",
                             (leaf,))
        conn.exec_driver_sql("UPDATE tree_heads SET root = ?, signature = ?",
                             (head.root, head.signature))
    verify_store(pipeline.store, pipeline.keys.log_key_history)  # the log alone is consistent
    with pytest.raises(VerificationError, match=r"^signature: packet #2 \(device vit-1, seq 1\) "
                                                r"is not signed by its device's registered key"):
        verify_store(pipeline.store, pipeline.keys.log_key_history, pipeline.keyring)


def test_a_site_with_patients_refuses_to_start_without_its_keys(settings: Settings,
                                                                pipeline: Pipeline,
                                                                patient_id: str) -> None:
    pipeline.close()
    for key_file in settings.resolved_keys_dir.iterdir():
        key_file.unlink()
    with pytest.raises(ConfigError, match=r"^keys: no site key files .* restore the key files"):
        Pipeline.open(settings)
    assert list(settings.resolved_keys_dir.iterdir()) == []


def test_a_key_file_readable_by_others_is_refused(settings: Settings,
                                                  pipeline: Pipeline) -> None:
    pipeline.close()
    kek = settings.resolved_keys_dir / "site-kek.json"
    kek.chmod(0o644)
    with pytest.raises(ConfigError, match=r"is readable by others \(mode 644\); run `chmod 600"):
        Pipeline.open(settings)
