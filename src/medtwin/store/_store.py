"""The store: one interface over SQLite (default) or PostgreSQL, holding only ciphertext of
patient data. Every batch is written in one transaction, committed durably before any ack.
"""

from __future__ import annotations

import heapq
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Engine,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from medtwin.domain import Device, DeviceStatus
from medtwin.errors import ConflictError, InvalidInputError, StoreError
from medtwin.store import _schema as t
from medtwin.store._records import (
    AccessRecord,
    AlertRecord,
    AnchorRecord,
    BindingRecord,
    Commit,
    ErasureRecord,
    FindingRecord,
    HeadRecord,
    LogKeyRecord,
    PacketRecord,
    Record,
    RegistrationRecord,
    RejectionRecord,
    RetirementRecord,
    RotationRecord,
    SessionRecord,
    SnapshotRecord,
    SuiteRecord,
    TwinParamsRecord,
)

#: Tries, and the wait that grows by this much per try (s), to empty SQLite's write-ahead log
#: after an erasure while readers come and go.
SCRUB_ATTEMPTS = 5
SCRUB_WAIT_S = 0.05


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")  # durable before ack, even on power loss
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA secure_delete=ON")  # an overwritten (erased) key leaves no copy
    cursor.close()


class Store:
    """Persistence of patients, devices, sealed records, log leaves, tree heads and tokens."""

    def __init__(self, url: str) -> None:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.url = url
        self.engine: Engine = create_engine(url)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            tables = set(inspect(self.engine).get_table_names())
            t.metadata.create_all(self.engine)
            self._upgrade(tables)
        except SQLAlchemyError as exc:
            raise StoreError(f"store: cannot open database: {type(exc).__name__}") from exc

    def _upgrade(self, tables: set[str]) -> None:
        """Bring a store written by an earlier medtwin (whose tables were `tables`) up to
        this schema: columns added since are added with their defaults (tables added since
        are created above). Token addresses from before bindings were logged have no
        binding record and no signature to check: they are dropped, and holders bind again
        (`POST /v1/tokens/me/address`)."""
        schema = inspect(self.engine)
        columns = {c["name"] for c in schema.get_columns("registrations")}
        contract_columns = {c["name"] for c in schema.get_columns("chain_contracts")}
        with self.engine.begin() as conn:
            if "reason" not in columns:
                conn.execute(text("ALTER TABLE registrations ADD COLUMN reason TEXT "
                                  "NOT NULL DEFAULT ''"))
            if "deployed_block" not in contract_columns:
                conn.execute(text("ALTER TABLE chain_contracts ADD COLUMN deployed_block "
                                  "BIGINT NOT NULL DEFAULT 0"))
            if "token_addresses" in tables and "token_bindings" not in tables:
                conn.execute(delete(t.token_addresses))

    def close(self) -> None:
        self.engine.dispose()

    # Patients and devices -------------------------------------------------------------------

    def add_patient(self, patient_id: str, wrapped_key: bytes, kek_id: str, now_ms: int) -> None:
        """Register a patient with their wrapped data key; ConflictError if the id exists."""
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(t.patients).values(
                    patient_id=patient_id, created_at_ms=now_ms, wrapped_key=wrapped_key,
                    kek_id=kek_id))
        except IntegrityError as exc:
            raise ConflictError(f"store: patient {patient_id!r} already exists") from exc

    def patient_keys(self) -> dict[str, bytes]:
        """Wrapped data key of every patient not erased (an erased patient's key is empty)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.patients.c.patient_id, t.patients.c.wrapped_key))
            return {r.patient_id: r.wrapped_key for r in rows if r.wrapped_key}

    def patient_wrapped_keys(self) -> dict[str, tuple[bytes, str]]:
        """(wrapped data key, id of the KEK that wrapped it) of every patient not erased."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.patients.c.patient_id, t.patients.c.wrapped_key,
                                       t.patients.c.kek_id))
            return {r.patient_id: (r.wrapped_key, r.kek_id) for r in rows if r.wrapped_key}

    def kek_usage(self) -> dict[str, int]:
        """How many patients (not erased) have their data key wrapped by each KEK id."""
        usage: dict[str, int] = {}
        for _, kek_id in self.patient_wrapped_keys().values():
            usage[kek_id] = usage.get(kek_id, 0) + 1
        return usage

    def rewrap_patients(self, keys: dict[str, tuple[bytes, str]]) -> None:
        """Store re-wrapped data keys `{patient: (wrapped, kek_id)}` in one transaction; an
        erased patient (empty key) is left erased."""
        if not keys:
            return
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    update(t.patients)
                    .where((t.patients.c.patient_id == bindparam("p"))
                           & (func.length(t.patients.c.wrapped_key) > 0))
                    .values(wrapped_key=bindparam("w"), kek_id=bindparam("k")),
                    [{"p": p, "w": w, "k": k} for p, (w, k) in keys.items()])
        except SQLAlchemyError as exc:
            raise StoreError(f"store: re-wrapped keys not written: {type(exc).__name__}") from exc

    def erased_patients(self) -> set[str]:
        """Ids of the patients whose data key was destroyed (crypto-shredded)."""
        with self.engine.connect() as conn:
            return set(conn.execute(select(t.erasures.c.patient_id)).scalars())

    def scrub_wal(self, attempts: int = SCRUB_ATTEMPTS) -> bool:
        """Fold SQLite's write-ahead log into the database and empty it, so the page that
        held a destroyed key does not survive there; whether it was emptied (a reader that
        stays open blocks it: then the next checkpoint does it). True on other databases."""
        if self.engine.dialect.name != "sqlite":
            return True
        for attempt in range(attempts):
            try:
                with self.engine.connect() as conn:
                    busy = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").scalar()
            except SQLAlchemyError:
                busy = 1
            if busy == 0:
                return True
            time.sleep(SCRUB_WAIT_S * (attempt + 1))
        return False

    def devices(self) -> list[Device]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.devices).order_by(t.devices.c.device_id))
            return [Device(r.device_id, r.patient_id, r.suite, r.public_key,
                           DeviceStatus(r.status), r.last_seq) for r in rows]

    # The one write of the reading's path ----------------------------------------------------

    def commit(self, batch: Commit) -> None:
        """Write a batch in one transaction; when this returns, it is durable."""
        try:
            with self.engine.begin() as conn:
                for field, table in _PLAIN_ROWS:
                    rows = getattr(batch, field)
                    if rows:
                        conn.execute(insert(table), [_row(r) for r in rows])
                for reg in batch.registrations:
                    conn.execute(insert(t.registrations).values(**_row(reg)))
                    current = {"patient_id": reg.patient_id, "suite": reg.suite,
                               "public_key": reg.public_key, "status": reg.status}
                    done = conn.execute(update(t.devices)
                                        .where(t.devices.c.device_id == reg.device_id)
                                        .values(**current))
                    if done.rowcount == 0:
                        conn.execute(insert(t.devices).values(
                            device_id=reg.device_id, last_seq=-1,
                            registered_at_ms=reg.time_ms, **current))
                for binding in batch.bindings:
                    conn.execute(insert(t.token_bindings).values(**_row(binding)))
                    conn.execute(delete(t.token_addresses).where(
                        t.token_addresses.c.token_hash == binding.token_hash))
                    conn.execute(insert(t.token_addresses).values(
                        token_hash=binding.token_hash, address=binding.address))
                for erasure in batch.erasures:
                    conn.execute(insert(t.erasures).values(**_row(erasure)))
                    conn.execute(update(t.patients)
                                 .where(t.patients.c.patient_id == erasure.patient_id)
                                 .values(wrapped_key=b""))
                if batch.leaf_hashes:
                    conn.execute(insert(t.leaves), [
                        {"leaf_index": i, "kind": k, "leaf_hash": h}
                        for i, k, h in batch.leaf_hashes])
                if batch.device_seqs:
                    conn.execute(
                        update(t.devices).where(t.devices.c.device_id == bindparam("d"))
                        .values(last_seq=bindparam("s")),
                        [{"d": d, "s": s} for d, s in batch.device_seqs.items()])
                if batch.head is not None:
                    head = {"head_id": 1, **_row(batch.head)}
                    done = conn.execute(update(t.tree_heads)
                                        .where(t.tree_heads.c.head_id == 1).values(**head))
                    if done.rowcount == 0:
                        conn.execute(insert(t.tree_heads).values(**head))
        except SQLAlchemyError as exc:
            raise StoreError(f"store: batch not written: {type(exc).__name__}") from exc

    # Reads ---------------------------------------------------------------------------------

    def packets(self, patient_id: str | None = None) -> Iterator[PacketRecord]:
        """Stored packets in log order, of one patient or all."""
        query = select(t.packets).order_by(t.packets.c.leaf_index)
        if patient_id is not None:
            query = query.where(t.packets.c.patient_id == patient_id)
        with self.engine.connect() as conn:
            for r in conn.execute(query):
                yield PacketRecord(**r._asdict())

    def twin_params(self, patient_id: str | None = None) -> list[TwinParamsRecord]:
        """Twin parameter records in log order, of one patient or all."""
        query = select(t.twin_params).order_by(t.twin_params.c.leaf_index)
        if patient_id is not None:
            query = query.where(t.twin_params.c.patient_id == patient_id)
        with self.engine.connect() as conn:
            return [TwinParamsRecord(**r._asdict()) for r in conn.execute(query)]

    def alerts(self, patient_id: str | None = None, limit: int = 100) -> list[AlertRecord]:
        """Most recent alerts first."""
        query = select(t.alerts).order_by(t.alerts.c.leaf_index.desc()).limit(limit)
        if patient_id is not None:
            query = query.where(t.alerts.c.patient_id == patient_id)
        with self.engine.connect() as conn:
            return [AlertRecord(**r._asdict()) for r in conn.execute(query)]

    def findings(self, patient_id: str | None = None, limit: int = 100
                 ) -> list[FindingRecord]:
        """Most recent guard findings first, of one patient or all."""
        query = select(t.findings).order_by(t.findings.c.leaf_index.desc()).limit(limit)
        if patient_id is not None:
            query = query.where(t.findings.c.patient_id == patient_id)
        with self.engine.connect() as conn:
            return [FindingRecord(**r._asdict()) for r in conn.execute(query)]

    def registrations(self) -> list[RegistrationRecord]:
        """Every device registration and status change, in log order."""
        query = select(t.registrations).order_by(t.registrations.c.leaf_index)
        with self.engine.connect() as conn:
            return [RegistrationRecord(**r._asdict()) for r in conn.execute(query)]

    def rejections(self, limit: int = 100) -> list[RejectionRecord]:
        """Most recent rejections first."""
        query = select(t.rejections).order_by(t.rejections.c.leaf_index.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [RejectionRecord(**r._asdict()) for r in conn.execute(query)]

    def records(self) -> Iterator[Record]:
        """Every logged record, in leaf order."""
        with self.engine.connect() as conn:
            streams: list[Iterator[Record]] = [
                (PacketRecord(**r._asdict())
                 for r in conn.execute(select(t.packets).order_by(t.packets.c.leaf_index))),
                (AlertRecord(**r._asdict())
                 for r in conn.execute(select(t.alerts).order_by(t.alerts.c.leaf_index))),
                (RejectionRecord(**r._asdict()) for r in conn.execute(
                    select(t.rejections).order_by(t.rejections.c.leaf_index))),
                (RegistrationRecord(**r._asdict()) for r in conn.execute(
                    select(t.registrations).order_by(t.registrations.c.leaf_index))),
                (TwinParamsRecord(**r._asdict()) for r in conn.execute(
                    select(t.twin_params).order_by(t.twin_params.c.leaf_index))),
                (FindingRecord(**r._asdict()) for r in conn.execute(
                    select(t.findings).order_by(t.findings.c.leaf_index))),
                (ErasureRecord(**r._asdict()) for r in conn.execute(
                    select(t.erasures).order_by(t.erasures.c.leaf_index))),
                (RotationRecord(**r._asdict()) for r in conn.execute(
                    select(t.kek_rotations).order_by(t.kek_rotations.c.leaf_index))),
                (SnapshotRecord(**r._asdict()) for r in conn.execute(
                    select(t.snapshots).order_by(t.snapshots.c.leaf_index))),
                (SessionRecord(**r._asdict()) for r in conn.execute(
                    select(t.sessions).order_by(t.sessions.c.leaf_index))),
                (LogKeyRecord(**r._asdict()) for r in conn.execute(
                    select(t.log_keys).order_by(t.log_keys.c.leaf_index))),
                (AccessRecord(**r._asdict()) for r in conn.execute(
                    select(t.accesses).order_by(t.accesses.c.leaf_index))),
                (SuiteRecord(**r._asdict()) for r in conn.execute(
                    select(t.aead_suites).order_by(t.aead_suites.c.leaf_index))),
                (RetirementRecord(**r._asdict()) for r in conn.execute(
                    select(t.kek_retirements).order_by(t.kek_retirements.c.leaf_index))),
                (BindingRecord(**r._asdict()) for r in conn.execute(
                    select(t.token_bindings).order_by(t.token_bindings.c.leaf_index))),
            ]
            yield from heapq.merge(*streams, key=lambda rec: rec.leaf_index)

    def has_session(self, session_id: str) -> bool:
        """Whether a session of this id was ever logged."""
        with self.engine.connect() as conn:
            return conn.execute(select(t.sessions.c.leaf_index).where(
                t.sessions.c.session_id == session_id)).first() is not None

    def aead_suite_in_force(self) -> str | None:
        """The AEAD suite the latest logged suite change names (None: never changed)."""
        c = t.aead_suites.c
        with self.engine.connect() as conn:
            return conn.execute(select(c.suite).order_by(c.leaf_index.desc()).limit(1)
                                ).scalar()

    def newest_envelope(self) -> bytes | None:
        """The envelope of the newest sealed patient record (highest leaf index, erased
        patients' included: its header names its suite in the clear), or None if none is."""
        newest: tuple[int, bytes] | None = None
        with self.engine.connect() as conn:
            for table in _SEALED:
                row = conn.execute(select(table.c.leaf_index, table.c.envelope)
                                   .order_by(table.c.leaf_index.desc()).limit(1)).first()
                if row is not None and (newest is None or row.leaf_index > newest[0]):
                    newest = (row.leaf_index, row.envelope)
        return None if newest is None else newest[1]

    def log_key_records(self) -> list[LogKeyRecord]:
        """Every log signing key rotation, in leaf order."""
        with self.engine.connect() as conn:
            return [LogKeyRecord(**r._asdict()) for r in conn.execute(
                select(t.log_keys).order_by(t.log_keys.c.leaf_index))]

    def snapshots(self) -> list[SnapshotRecord]:
        """Every twin snapshot, in leaf order."""
        with self.engine.connect() as conn:
            return [SnapshotRecord(**r._asdict()) for r in conn.execute(
                select(t.snapshots).order_by(t.snapshots.c.leaf_index))]

    def alert_records(self) -> list[AlertRecord]:
        """Every alert record, in leaf order (rule, severity and time in the clear)."""
        with self.engine.connect() as conn:
            return [AlertRecord(**r._asdict()) for r in conn.execute(
                select(t.alerts).order_by(t.alerts.c.leaf_index))]

    def leaf_hashes(self, start: int = 0, end: int | None = None) -> list[bytes]:
        """Stored leaf hashes in order: all of them, or those of leaf indexes [start, end)."""
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"store: leaf range [{start}, {end}) is not a range of leaf indexes")
        query = select(t.leaves.c.leaf_hash).where(t.leaves.c.leaf_index >= start)
        if end is not None:
            query = query.where(t.leaves.c.leaf_index < end)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(t.leaves.c.leaf_index))
            return [r.leaf_hash for r in rows]

    def latest_head(self) -> HeadRecord | None:
        with self.engine.connect() as conn:
            r = conn.execute(select(t.tree_heads).where(t.tree_heads.c.head_id == 1)).first()
        if r is None:
            return None
        fields = r._asdict()
        fields.pop("head_id")
        return HeadRecord(**fields)

    # Witness cosignatures of checkpoints ---------------------------------------------------

    def put_cosignature(self, origin: str, size: int, root: bytes, witness: str, line: str,
                        timestamp_s: int, now_ms: int) -> None:
        """Keep `witness`'s verified cosignature line of a checkpoint, replacing an older one
        (by its timestamp: a replayed older line never displaces a newer one)."""
        key = ((t.cosignatures.c.origin == origin) & (t.cosignatures.c.size == size)
               & (t.cosignatures.c.root == root) & (t.cosignatures.c.witness == witness))
        with self.engine.begin() as conn:
            newest = conn.execute(select(t.cosignatures.c.timestamp_s).where(key)).scalar()
            if newest is not None and newest > timestamp_s:
                return
            conn.execute(delete(t.cosignatures).where(key))
            conn.execute(insert(t.cosignatures).values(
                origin=origin, size=size, root=root, witness=witness, line=line,
                timestamp_s=timestamp_s, received_at_ms=now_ms))

    def cosignatures(self, origin: str, size: int, root: bytes) -> list[str]:
        """The stored cosignature lines of one checkpoint, ordered by witness name."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.cosignatures.c.line).where(
                (t.cosignatures.c.origin == origin) & (t.cosignatures.c.size == size)
                & (t.cosignatures.c.root == root)).order_by(t.cosignatures.c.witness))
            return [r.line for r in rows]

    # Anchors of checkpoints on a chain -----------------------------------------------------

    def put_anchor(self, anchor: AnchorRecord) -> None:
        """Index one anchored checkpoint."""
        with self.engine.begin() as conn:
            conn.execute(insert(t.anchors).values(**_row(anchor)))

    def anchors(self) -> list[AnchorRecord]:
        """Every indexed anchor, in the order they were anchored."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.anchors).order_by(t.anchors.c.anchored_at_ms,
                                                           t.anchors.c.size))
            return [AnchorRecord(**r._asdict()) for r in rows]

    def chain_contract(self, chain_id: int, name: str) -> str | None:
        """The address of this site's contract `name` on a chain, once deployed there."""
        c = t.chain_contracts.c
        with self.engine.connect() as conn:
            return conn.execute(select(c.contract).where(
                (c.chain_id == chain_id) & (c.name == name))).scalar()

    def chain_contract_block(self, chain_id: int, name: str) -> int:
        """The block from which the contract's events are to be read (the chain's latest
        before its deployment; 0 if unknown or not deployed)."""
        c = t.chain_contracts.c
        with self.engine.connect() as conn:
            block = conn.execute(select(c.deployed_block).where(
                (c.chain_id == chain_id) & (c.name == name))).scalar()
        return int(block or 0)

    def put_chain_contract(self, chain_id: int, name: str, contract: str,
                           now_ms: int, deployed_block: int = 0) -> None:
        """Remember this site's contract `name` on a chain (once per chain and name), with
        the chain's latest block before it was deployed."""
        if deployed_block < 0:
            raise InvalidInputError(f"store: block {deployed_block} is not a block number")
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(t.chain_contracts).values(
                    chain_id=chain_id, name=name, contract=contract, deployed_at_ms=now_ms,
                    deployed_block=deployed_block))
        except IntegrityError as exc:
            raise ConflictError(f"store: chain {chain_id} already has a contract "
                                f"{name!r}") from exc

    # Consent-gated access -----------------------------------------------------------------

    def token_addresses(self) -> dict[bytes, str]:
        """Every token's bound chain address, by token hash."""
        with self.engine.connect() as conn:
            return {r.token_hash: r.address for r in conn.execute(select(t.token_addresses))}

    def token_address(self, token_hash: bytes) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(select(t.token_addresses.c.address).where(
                t.token_addresses.c.token_hash == token_hash)).scalar()

    def access_decisions(self, limit: int = 100) -> list[dict[str, Any]]:
        """The latest `limit` access decisions, newest first, one dict per patient decided,
        with the `leaf_index` of the logged record that holds it."""
        c = t.accesses.c
        out: list[dict[str, Any]] = []
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.accesses).order_by(c.leaf_index.desc()).limit(limit))
            for r in rows:
                meta = {k: v for k, v in r._asdict().items() if k != "decisions"}
                out += [{**meta, "patient_id": p, "allowed": a, "reason": why}
                        for p, a, why in json.loads(r.decisions)]
                if len(out) >= limit:
                    break
        return out[:limit]

    def all_cosignatures(self) -> list[tuple[str, int, bytes, str, str]]:
        """Every stored cosignature as (origin, size, root, witness, line), by size."""
        c = t.cosignatures.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(c.origin, c.size, c.root, c.witness, c.line)
                                .order_by(c.size, c.witness))
            return [(r.origin, int(r.size), r.root, r.witness, r.line) for r in rows]

    def counts(self) -> dict[str, int]:
        """Rows per table, and readings accepted."""
        with self.engine.connect() as conn:
            result = {name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
                      for name, table in (("patients", t.patients), ("devices", t.devices),
                                          ("registrations", t.registrations),
                                          ("packets", t.packets), ("alerts", t.alerts),
                                          ("rejections", t.rejections),
                                          ("twin_params", t.twin_params),
                                          ("findings", t.findings),
                                          ("leaves", t.leaves))}
            readings = conn.execute(select(func.coalesce(func.sum(t.packets.c.n_readings), 0)))
            result["readings"] = int(readings.scalar_one())
        return result

    # API tokens (stored hashed) ------------------------------------------------------------

    def add_token(self, token_hash: bytes, name: str, role: str, now_ms: int) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(t.api_tokens).values(
                    token_hash=token_hash, name=name, role=role, created_at_ms=now_ms))
        except IntegrityError as exc:
            raise ConflictError("store: token already exists") from exc

    def revoke_tokens(self, name: str) -> int:
        """Delete every token held by `name`; returns how many there were."""
        with self.engine.begin() as conn:
            result = conn.execute(delete(t.api_tokens).where(t.api_tokens.c.name == name))
            return int(result.rowcount)

    def token_role(self, token_hash: bytes) -> tuple[str, str] | None:
        """(name, role) of the token with this hash, or None."""
        with self.engine.connect() as conn:
            r = conn.execute(select(t.api_tokens.c.name, t.api_tokens.c.role)
                             .where(t.api_tokens.c.token_hash == token_hash)).first()
        return None if r is None else (r.name, r.role)


#: Commit fields whose records are rows of one table each, and nothing more.
_PLAIN_ROWS = (("packets", t.packets), ("alerts", t.alerts), ("rejections", t.rejections),
               ("twin_params", t.twin_params), ("findings", t.findings),
               ("snapshots", t.snapshots), ("sessions", t.sessions),
               ("retirements", t.kek_retirements), ("suites", t.aead_suites),
               ("accesses", t.accesses), ("log_keys", t.log_keys),
               ("rotations", t.kek_rotations))
#: Tables of records sealed under a patient's data key (an `envelope` column).
_SEALED = (t.packets, t.alerts, t.findings, t.twin_params)


def _row(record: Record | HeadRecord | AnchorRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__dataclass_fields__}
