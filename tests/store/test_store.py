"""The store keeps patient values only as ciphertext: no decimal string and no float64 bytes of a
reading reach the database file, while the twin proves the values were stored."""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from medtwin.config import Settings
from medtwin.domain import Channel, Device, DeviceStatus, Reading
from medtwin.errors import ConflictError, InvalidInputError, StoreError
from medtwin.pipeline import Pipeline
from medtwin.store import Commit, RegistrationRecord, Store

if TYPE_CHECKING:
    from conftest import DeviceSim, FakeClock

HR, GLUCOSE = 123.456789, 98.7654321


def _needles(value: float) -> dict[str, bytes]:
    return {
        "decimal": repr(value).encode(),
        "decimal, 4 places": f"{value:.4f}".encode(),
        "float64 big-endian": struct.pack(">d", value),
        "float64 little-endian": struct.pack("<d", value),
        "float32 big-endian": struct.pack(">f", value),
        "float32 little-endian": struct.pack("<f", value),
    }


def _database_bytes(data_dir: Path) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in data_dir.glob("medtwin.db*")}
    assert "medtwin.db" in files
    return files


def _fill(pipeline: Pipeline, device: DeviceSim, clock: FakeClock) -> None:
    for _ in range(3):
        t = clock()
        pipeline.process([device.submit([Reading(Channel.HEART_RATE, HR, t),
                                         Reading(Channel.GLUCOSE, GLUCOSE, t)])])
        clock.advance(60)
    # a refused packet with the same values is recorded too; its record must not hold them
    pipeline.process([device.submit([Reading(Channel.HEART_RATE, HR, clock()),
                                     Reading(Channel.GLUCOSE, GLUCOSE, clock() + 3_600_000)])])


def test_no_plaintext_value_reaches_the_database(settings: Settings, pipeline: Pipeline,
                                                 device: DeviceSim, clock: FakeClock) -> None:
    _fill(pipeline, device, clock)
    counts = pipeline.store.counts()
    assert (counts["packets"], counts["readings"], counts["rejections"]) == (3, 6, 1)
    channels = {c.channel: c for c in pipeline.twin_state("pt-1").channels}
    assert channels[Channel.HEART_RATE].value == HR
    assert channels[Channel.GLUCOSE].value == GLUCOSE
    assert channels[Channel.GLUCOSE].estimate == pytest.approx(GLUCOSE, abs=2.0)
    live = _database_bytes(settings.data_dir)       # while open: the WAL holds recent pages
    assert "medtwin.db-wal" in live
    pipeline.close()                                # checkpoints the WAL into the file
    for stage, files in (("open", live), ("closed", _database_bytes(settings.data_dir))):
        for name, content in files.items():
            for value in (HR, GLUCOSE):
                for kind, needle in _needles(value).items():
                    assert needle not in content, f"{kind} of {value} in {name} ({stage})"


def test_values_survive_a_restart_so_they_were_stored(settings: Settings, pipeline: Pipeline,
                                                      device: DeviceSim,
                                                      clock: FakeClock) -> None:
    _fill(pipeline, device, clock)
    pipeline.close()
    reopened = Pipeline.open(settings)
    try:
        channels = {c.channel: c for c in reopened.twin_state("pt-1").channels}
        assert channels[Channel.HEART_RATE].value == HR
        assert channels[Channel.GLUCOSE].value == GLUCOSE
    finally:
        reopened.close()


def test_needle_search_would_find_plaintext(tmp_path: Path) -> None:
    """The search above is able to fail: the same needles are found in a plaintext database."""
    path = tmp_path / "plain.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (v REAL, s TEXT, b BLOB)")
        conn.execute("INSERT INTO t VALUES (?, ?, ?)",
                     (HR, repr(GLUCOSE), struct.pack("<d", GLUCOSE)))
    conn.close()
    content = path.read_bytes()
    assert _needles(HR)["float64 big-endian"] in content     # SQLite stores REAL big-endian
    assert _needles(GLUCOSE)["decimal"] in content
    assert _needles(GLUCOSE)["float64 little-endian"] in content


def test_readings_are_in_sealed_envelopes_only(pipeline: Pipeline, device: DeviceSim,
                                               clock: FakeClock) -> None:
    _fill(pipeline, device, clock)
    conn = sqlite3.connect(pipeline.settings.data_dir / "medtwin.db")
    try:
        columns = {row[1]: row[2] for row in conn.execute("PRAGMA table_info(packets)")}
        envelopes = [row[0] for row in conn.execute("SELECT envelope FROM packets")]
    finally:
        conn.close()
    assert "REAL" not in columns.values() and "FLOAT" not in columns.values()
    assert all(e[:2] == b"MT" for e in envelopes)


# The store's own interface ---------------------------------------------------------------------

@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'db' / 'medtwin.db'}")
    yield store
    store.close()


def test_duplicate_patient_conflicts(store: Store) -> None:
    store.add_patient("p", b"wrapped", "kek-1", 0)
    with pytest.raises(ConflictError, match=r"^store: patient 'p' already exists$"):
        store.add_patient("p", b"wrapped", "kek-1", 0)


def _registration(index: int, status: DeviceStatus, patient: str = "p") -> Commit:
    record = RegistrationRecord(index, "d", patient, "ed25519", b"k" * 32, status.value, index)
    return Commit((), (), (), ((index, record.kind, b"h" * 32),), None, {}, (record,))


def test_a_logged_registration_is_what_the_device_table_holds(store: Store) -> None:
    store.add_patient("p", b"wrapped", "kek-1", 0)
    store.commit(_registration(0, DeviceStatus.ACTIVE))
    store.commit(Commit((), (), (), (), None, {"d": 4}))
    store.commit(_registration(1, DeviceStatus.QUARANTINED))
    assert store.devices() == [Device("d", "p", "ed25519", b"k" * 32,
                                      DeviceStatus.QUARANTINED, 4)]
    assert [r.kind for r in store.records()] == ["registration", "registration"]
    assert store.counts()["registrations"] == 2


def test_a_registration_for_an_unknown_patient_writes_nothing(store: Store) -> None:
    with pytest.raises(StoreError, match=r"^store: batch not written: IntegrityError$"):
        store.commit(_registration(0, DeviceStatus.ACTIVE, patient="nobody"))
    assert store.devices() == [] and list(store.records()) == []


def test_empty_store(store: Store) -> None:
    assert store.counts() == {"patients": 0, "devices": 0, "registrations": 0, "packets": 0,
                              "alerts": 0, "rejections": 0, "twin_params": 0, "findings": 0,
                              "leaves": 0,
                              "readings": 0}
    assert store.latest_head() is None
    assert list(store.records()) == [] and store.leaf_hashes() == []


def test_records_come_back_in_leaf_order(pipeline: Pipeline, device: DeviceSim,
                                         clock: FakeClock,
                                         make_device: Callable[..., DeviceSim]) -> None:
    stranger = make_device("ghost-1")
    pipeline.process([stranger.submit(device.vitals()), device.submit(device.vitals()),
                      stranger.submit(device.vitals()), device.submit(device.vitals())])
    records = list(pipeline.store.records())
    assert [r.leaf_index for r in records] == [0, 1, 2, 3, 4]
    assert [r.kind for r in records] == ["registration", "rejection", "packet", "rejection",
                                         "packet"]
    assert len(pipeline.store.leaf_hashes()) == 5
    head = pipeline.store.latest_head()
    assert head is not None and head.size == 5


def test_leaf_hashes_reads_a_range_of_leaf_indexes(pipeline: Pipeline, device: DeviceSim) -> None:
    pipeline.process([device.submit(device.vitals()) for _ in range(4)])
    every = pipeline.store.leaf_hashes()
    assert len(every) == 5
    assert pipeline.store.leaf_hashes(2) == every[2:]
    assert pipeline.store.leaf_hashes(1, 3) == every[1:3]
    assert pipeline.store.leaf_hashes(4, 5) == every[4:]
    assert pipeline.store.leaf_hashes(3, 3) == pipeline.store.leaf_hashes(5) == []
    assert pipeline.store.leaf_hashes(3, 99) == every[3:]
    with pytest.raises(ValueError, match=r"^store: leaf range \[-1, 2\) is not a range"):
        pipeline.store.leaf_hashes(-1, 2)
    with pytest.raises(ValueError, match=r"^store: leaf range \[3, 2\) is not a range"):
        pipeline.store.leaf_hashes(3, 2)


def test_a_store_from_before_release_reasons_opens(tmp_path: Path) -> None:
    """A database written before registrations had a reason gets the column on open."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    conn = sqlite3.connect(tmp_path / "old.db")
    conn.execute("CREATE TABLE patients (patient_id VARCHAR(64) PRIMARY KEY, created_at_ms "
                 "BIGINT NOT NULL, wrapped_key BLOB NOT NULL, kek_id VARCHAR(64) NOT NULL)")
    conn.execute("CREATE TABLE registrations (leaf_index BIGINT PRIMARY KEY, device_id "
                 "VARCHAR(64) NOT NULL, patient_id VARCHAR(64) NOT NULL, suite VARCHAR(32) "
                 "NOT NULL, public_key BLOB NOT NULL, status VARCHAR(16) NOT NULL, time_ms "
                 "BIGINT NOT NULL)")
    conn.execute("INSERT INTO patients VALUES ('pt-1', 0, x'00', 'k')")
    conn.execute("INSERT INTO registrations VALUES (0, 'd-1', 'pt-1', 'ed25519', x'01', "
                 "'active', 5)")
    conn.commit()
    conn.close()
    store = Store(url)
    try:
        (reg,) = store.registrations()
        assert (reg.device_id, reg.reason) == ("d-1", "")
    finally:
        store.close()


def test_a_store_from_before_logged_bindings_drops_its_unlogged_addresses(
        tmp_path: Path) -> None:
    """Token addresses written before bindings were logged have nothing verify could check:
    the upgrade drops them (holders bind again), so the site still opens and verifies."""
    conn = sqlite3.connect(tmp_path / "old.db")
    conn.execute("CREATE TABLE token_addresses (token_hash BLOB PRIMARY KEY, address "
                 "VARCHAR(64) NOT NULL)")
    conn.execute("INSERT INTO token_addresses VALUES (x'01', '0xabc')")
    conn.commit()
    conn.close()
    url = f"sqlite:///{tmp_path / 'old.db'}"
    store = Store(url)
    try:
        assert store.token_addresses() == {}
        store.add_token(b"\x02", "dr-a", "clinician", 0)
        with store.engine.begin() as c:       # a later row, with the bindings table present
            c.exec_driver_sql("INSERT INTO token_addresses VALUES (x'02', '0xdef')")
    finally:
        store.close()
    reopened = Store(url)
    try:
        assert reopened.token_addresses() == {b"\x02": "0xdef"}   # only upgrades drop rows
    finally:
        reopened.close()


def test_a_contract_is_remembered_with_the_block_its_events_start_from(
        tmp_path: Path) -> None:
    """An attach reads a contract's events from the block before its deployment, not the
    chain's first: a store from before the block was kept reads from block 0."""
    conn = sqlite3.connect(tmp_path / "old.db")
    conn.execute("CREATE TABLE chain_contracts (chain_id BIGINT NOT NULL, name VARCHAR(300) "
                 "NOT NULL, contract VARCHAR(64) NOT NULL, deployed_at_ms BIGINT NOT NULL, "
                 "PRIMARY KEY (chain_id, name))")
    conn.execute("INSERT INTO chain_contracts VALUES (7, 'consent a', '0xabc', 1)")
    conn.commit()
    conn.close()
    store = Store(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        assert (store.chain_contract(7, "consent a"), store.chain_contract_block(7, "consent a")
                ) == ("0xabc", 0)
        store.put_chain_contract(7, "anchor a", "0xdef", 2, deployed_block=1234)
        assert store.chain_contract_block(7, "anchor a") == 1234
        assert store.chain_contract_block(7, "nothing") == 0
        with pytest.raises(InvalidInputError, match="not a block number"):
            store.put_chain_contract(7, "other", "0x123", 3, deployed_block=-1)
        assert store.chain_contract(7, "other") is None
    finally:
        store.close()
