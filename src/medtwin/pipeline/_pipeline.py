"""The one path a reading travels: gate → twin → clinical rules → ledger → store → events.

`Pipeline.process` is the whole path for a batch of submissions, on one screen. Nothing in
memory changes until the batch is durable in the store, so a failed write changes nothing.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from medtwin.clinical import (
    N_RULES,
    RISK_NAMES,
    RULES,
    STALE_AFTER_S,
    explain,
    news2_from_estimates,
    news2_risk,
    rules_over_events,
)
from medtwin.config import Settings
from medtwin.crypto import KeyRing, SiteKeys, signature_suite
from medtwin.domain import (
    Alert,
    Channel,
    ChannelState,
    Device,
    DeviceStatus,
    Packet,
    Patient,
    Provenance,
    ReadingBatch,
    TwinState,
)
from medtwin.errors import (
    ConfigError,
    ConflictError,
    DecryptionError,
    GateRejection,
    NotFoundError,
    VerificationError,
)
from medtwin.estimation import NO_TIME, TwinBank, TwinUpdate
from medtwin.ingest import Admitted, Gate, Refused, Submission, Verdict
from medtwin.ledger import MerkleTree, leaf_data, leaf_hash, sign_tree_head
from medtwin.pipeline._codec import (
    alert_aad,
    decode_alert,
    decode_payload,
    encode_alert,
    encode_readings,
    encode_signed_packet,
    packet_aad,
)
from medtwin.pipeline._events import EventHub
from medtwin.pipeline._lock import WriterLock
from medtwin.pipeline._verify import VerifyReport, verify_store
from medtwin.store import (
    AlertRecord,
    Commit,
    HeadRecord,
    PacketRecord,
    RegistrationRecord,
    RejectionRecord,
    Store,
)


@dataclass(frozen=True, slots=True)
class Accepted:
    """A packet that is durable in the store and in the log.

    `estimates` holds the twin's estimate right after each reading (in the packet's order);
    `alerts` the alerts this batch raised for the packet's patient (on their last packet).
    """

    leaf_index: int
    device_id: str
    seq: int
    n_readings: int
    estimates: npt.NDArray[np.float64]
    alerts: tuple[Alert, ...] = ()


@dataclass(frozen=True, slots=True)
class Rejected:
    """A packet the gate refused; its rejection is durable, its readings were never stored."""

    leaf_index: int
    error: GateRejection


Outcome = Accepted | Rejected


class Pipeline:
    """A site's twin kernel: registered devices, the twin bank, the log and the store."""

    def __init__(self, settings: Settings, store: Store, keys: SiteKeys) -> None:
        self.settings = settings
        self.clock = settings.clock
        self.store = store
        self.keys = keys
        self.keyring = KeyRing(keys, settings.aead_suite)
        self.gate = Gate(settings)
        self.events = EventHub()
        self.twin = TwinBank()
        self._lock = threading.RLock()
        self._writer_lock: WriterLock | None = None
        self._check_store()
        self._wrapped = store.patient_keys()
        self._devices = {d.device_id: d for d in store.devices()}
        self._tree = MerkleTree(store.leaf_hashes())
        self._active = np.zeros((0, N_RULES), dtype=bool)
        self._rebuild_twin()

    @classmethod
    def open(cls, settings: Settings) -> Pipeline:
        """Open (or create on first run) the site in `settings.data_dir`.

        One process at a time writes a site (its log numbering lives in memory): a second
        `open` of the same data directory raises ConfigError until the first is closed.
        """
        lock = WriterLock.acquire(settings.data_dir)
        store = None
        try:
            store = Store(settings.resolved_database_url)
            if not SiteKeys.exist(settings.resolved_keys_dir) and store.patient_keys():
                raise ConfigError(
                    f"keys: no site key files in {settings.resolved_keys_dir}, but the database "
                    "holds patients' wrapped data keys: restore the key files (new keys would "
                    "make their data unreadable)")
            keys = SiteKeys.load_or_create(settings.resolved_keys_dir, settings.aead_suite)
            pipeline = cls(settings, store, keys)
        except BaseException:
            if store is not None:
                store.close()
            lock.release()
            raise
        pipeline._writer_lock = lock
        return pipeline

    def _check_store(self) -> None:
        """Refuse a store whose records, leaves, devices or sequence numbers disagree with
        the signed tree head: the site would otherwise sign edits made while it was down."""
        report = verify_store(self.store, self.keys.log_key)
        if report.pending:
            raise VerificationError(
                f"pipeline: {report.pending} records lie beyond the signed tree head; every "
                "commit signs its head, so they were added outside medtwin: run `medtwin "
                "verify`", f"record #{report.tree_size}")

    def verify(self, signatures: bool = True) -> VerifyReport:
        """Verify the store against the log while no batch is being written (consistent even
        on a live site); with `signatures`, re-check every device signature too."""
        with self._lock:
            return verify_store(self.store, self.keys.log_key,
                                self.keyring if signatures else None)

    def close(self) -> None:
        self.store.close()
        if self._writer_lock is not None:
            self._writer_lock.release()
            self._writer_lock = None

    # The path -------------------------------------------------------------------------------

    def process(self, submissions: Sequence[Submission]) -> list[Outcome]:
        """Run a batch through the whole path; returns when every outcome is durable."""
        with self._lock:
            now = self.clock()
            # (1) gate: whole packets in or out, with a reason
            verdicts = self.gate.check(submissions, now, self._devices, self._wrapped)
            admitted = [v for v in verdicts if isinstance(v, Admitted)]
            # (2) twin: one batched update over every admitted reading
            # (3) clinical rules on the patients the batch touched
            update, active, alerts = self._advance([a.packet for a in admitted])
            # (4) seal and log: records, leaves and a signed tree head
            tree = self._tree.copy()
            commit, outcomes = self._seal_and_log(verdicts, update, alerts, tree, now)
            # (5) durable before anything is acknowledged or shown
            self.store.commit(commit)
            # (6) make it current, and tell the subscribers
            self._tree = tree
            self.twin.apply(update)
            self._active[update.rows] = active
            for device_id, seq in commit.device_seqs.items():
                self._devices[device_id] = replace(self._devices[device_id], last_seq=seq)
            if self.events.has_subscribers:
                self.events.publish(self._events(update, alerts, now))
            return outcomes

    # Steps ----------------------------------------------------------------------------------

    def _advance(self, packets: Sequence[Packet]
                 ) -> tuple[TwinUpdate, npt.NDArray[np.bool_], list[Alert]]:
        """Steps (2) and (3) for a batch, proposed, not applied: the twin update, the rules'
        new state and the alerts they raised. Restart replays through here.

        Each patient's events are applied in order and the rules judge the twin after each
        one, so a short excursion inside one packet or batch is still seen; both run as
        segmented scans over all events at once.
        """
        sizes = [len(p.readings) for p in packets]
        rows = np.repeat(np.array([self.twin.row(p.patient_id) for p in packets], np.intp),
                         sizes)
        if self._active.shape[0] < len(self.twin):
            grown = np.zeros((2 * len(self.twin), N_RULES), dtype=bool)
            grown[: self._active.shape[0]] = self._active
            self._active = grown

        def column(name: str, dtype: type) -> npt.NDArray[Any]:
            parts = [getattr(p.readings, name) for p in packets]
            return np.concatenate(parts) if parts else np.zeros(0, dtype)

        channel, value = column("channel", np.int8), column("value", np.float64)
        time_ms = column("time_ms", np.int64)
        arrival = np.repeat(np.arange(len(packets), dtype=np.int64), sizes)
        update = self.twin.propose(rows, channel, value, time_ms, arrival)
        patients, folded = update.rows, update.events
        values = _fresh_estimates(folded.event_estimate, folded.event_time_ms)
        rules = rules_over_events(self._active[patients], values, folded.event_row,
                                  folded.event_start)
        patient_ids = self.twin.patient_ids()
        alerts = [
            explain(int(rule), patient_ids[patients[folded.event_row[e]]], values[e],
                    int(folded.event_time_ms[e].max()))
            for e, rule in zip(rules.fired_events, rules.fired_rules, strict=True)
        ]
        return update, rules.active, alerts

    def _seal_and_log(self, verdicts: Sequence[Verdict], update: TwinUpdate,
                      alerts: Sequence[Alert], tree: MerkleTree,
                      now: int) -> tuple[Commit, list[Outcome]]:
        packets: list[PacketRecord] = []
        rejections: list[RejectionRecord] = []
        alert_records: list[AlertRecord] = []
        leaves: list[tuple[int, str, bytes]] = []
        outcomes: list[Outcome] = []
        seqs: dict[str, int] = {}
        offset = 0
        batch_index = tree.size

        def log(record: PacketRecord | AlertRecord | RejectionRecord) -> None:
            h = leaf_hash(leaf_data(record.kind, str(record.leaf_index), record.commit_bytes()))
            tree.append_hash(h)
            leaves.append((record.leaf_index, record.kind, h))

        for verdict in verdicts:
            index = tree.size
            if isinstance(verdict, Refused):
                rec = RejectionRecord(index, now, verdict.device_id, verdict.rejection.reason.value,
                                      verdict.rejection.detail, verdict.seq)
                rejections.append(rec)
                outcomes.append(Rejected(index, verdict.rejection))
                log(rec)
                if verdict.seq is not None and verdict.device_id in self._devices:
                    seqs[verdict.device_id] = verdict.seq
                continue
            pkt = verdict.packet
            n = len(pkt.readings)
            payload = (encode_signed_packet(verdict.signed) if verdict.signed is not None
                       else encode_readings(pkt.readings))
            envelope = self.keyring.seal(pkt.patient_id, self._wrapped[pkt.patient_id],
                                         payload, packet_aad(index, pkt.patient_id))
            prec = PacketRecord(index, batch_index, pkt.device_id, pkt.patient_id, pkt.seq,
                                pkt.sent_at_ms, now, pkt.provenance.value, n, envelope,
                                verdict.signature)
            packets.append(prec)
            log(prec)
            if pkt.device_id in self._devices:
                seqs[pkt.device_id] = pkt.seq
            outcomes.append(Accepted(index, pkt.device_id, pkt.seq, n,
                                     update.estimate[offset:offset + n]))
            offset += n
        patient_of = {k: v.packet.patient_id for k, v in enumerate(verdicts)
                      if isinstance(v, Admitted)}
        for patient_id in {a.patient_id for a in alerts}:
            k = max(k for k, p in patient_of.items() if p == patient_id)
            accepted = outcomes[k]
            assert isinstance(accepted, Accepted)
            outcomes[k] = replace(accepted, alerts=tuple(
                a for a in alerts if a.patient_id == patient_id))
        for alert in alerts:
            index = tree.size
            envelope = self.keyring.seal(alert.patient_id, self._wrapped[alert.patient_id],
                                         encode_alert(alert), alert_aad(index, alert.patient_id))
            arec = AlertRecord(index, alert.patient_id, alert.rule, alert.severity.value,
                               alert.time_ms, envelope)
            alert_records.append(arec)
            log(arec)
        head = self._sign_head(tree, now) if leaves else None
        commit = Commit(tuple(packets), tuple(alert_records), tuple(rejections), tuple(leaves),
                        head, seqs)
        return commit, outcomes

    def _sign_head(self, tree: MerkleTree, now: int) -> HeadRecord:
        sth = sign_tree_head(self.keys.log_key, self.settings.log_origin, tree.size,
                             tree.root(), now)
        return HeadRecord(sth.origin, sth.size, sth.root, sth.timestamp_ms, sth.key_id,
                          sth.suite, sth.signature)

    def _register(self, device: Device) -> None:
        """Log a device's registration (or status change) and make it current, durably."""
        now = self.clock()
        tree = self._tree.copy()
        record = RegistrationRecord(tree.size, device.device_id, device.patient_id,
                                    device.suite, device.public_key, device.status.value, now)
        h = leaf_hash(leaf_data(record.kind, str(record.leaf_index), record.commit_bytes()))
        tree.append_hash(h)
        self.store.commit(Commit((), (), (), ((record.leaf_index, record.kind, h),),
                                 self._sign_head(tree, now), {}, (record,)))
        self._tree = tree
        self._devices[device.device_id] = device

    def _events(self, update: TwinUpdate, alerts: Sequence[Alert],
                now: int) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = [
            {"type": "twin", "state": twin_state_json(self._state_of(int(row), now))}
            for row in update.rows
        ]
        events.extend({"type": "alert", "alert": alert_json(a)} for a in alerts)
        return events

    # Registration ---------------------------------------------------------------------------

    def add_patient(self, patient_id: str) -> Patient:
        """Register a patient and create their data key; ConflictError if known."""
        with self._lock:
            if patient_id in self._wrapped:
                raise ConflictError(f"pipeline: patient {patient_id!r} already exists")
            now = self.clock()
            wrapped = self.keyring.new_data_key(patient_id)
            self.store.add_patient(patient_id, wrapped, self.keys.kek_id, now)
            self._wrapped[patient_id] = wrapped
            self.twin.row(patient_id)
            return Patient(patient_id, now)

    def add_device(self, device: Device) -> None:
        """Register a device to a known patient; NotFoundError or ConflictError otherwise."""
        with self._lock:
            if device.patient_id not in self._wrapped:
                raise NotFoundError(f"pipeline: unknown patient {device.patient_id!r}; "
                                    "register the patient first")
            if device.device_id in self._devices:
                raise ConflictError(f"pipeline: device {device.device_id!r} already exists")
            signature_suite(device.suite)
            self._register(Device(device.device_id, device.patient_id, device.suite,
                                  device.public_key, device.status))

    def set_device_status(self, device_id: str, status: DeviceStatus) -> None:
        """Quarantine or release a device; NotFoundError if unknown."""
        with self._lock:
            if device_id not in self._devices:
                raise NotFoundError(f"pipeline: unknown device {device_id!r}")
            self._register(replace(self._devices[device_id], status=status))

    # Reads ----------------------------------------------------------------------------------

    def patients(self) -> list[str]:
        with self._lock:
            return sorted(self._wrapped)

    def devices(self) -> list[Device]:
        with self._lock:
            return list(self._devices.values())

    def twin_state(self, patient_id: str) -> TwinState:
        """The twin of one patient now; NotFoundError if unknown."""
        with self._lock:
            if patient_id not in self._wrapped:
                raise NotFoundError(f"pipeline: unknown patient {patient_id!r}")
            return self._state_of(self.twin.row(patient_id), self.clock())

    def twin_states(self) -> list[TwinState]:
        with self._lock:
            now = self.clock()
            return [self._state_of(self.twin.row(p), now) for p in sorted(self._wrapped)]

    def alerts(self, patient_id: str | None = None, limit: int = 100) -> list[Alert]:
        """Recent alerts, newest first, decrypted for an authorised reader."""
        with self._lock:
            return [
                decode_alert(self.keyring.open(r.patient_id, self._wrapped[r.patient_id],
                                               r.envelope, alert_aad(r.leaf_index, r.patient_id)),
                             r.patient_id, r.rule, r.severity, r.time_ms)
                for r in self.store.alerts(patient_id, limit)
            ]

    def tree_size(self) -> int:
        with self._lock:
            return self._tree.size

    def _state_of(self, row: int, now: int) -> TwinState:
        """The twin as a reader should see it at `now`: values older than the rules'
        staleness limit (by the site clock) no longer count for NEWS2, and a rule whose
        evidence is all stale is not shown as active."""
        rows = np.array([row], dtype=np.intp)
        state = self.twin.rows_state(rows)
        ages = self.twin.ages_s(rows, now)[0]
        current = ages <= STALE_AFTER_S
        fresh = np.where(current, state.estimate, np.nan)
        score = news2_from_estimates(fresh)
        risk = int(news2_risk(score)[0])
        channels = tuple(
            ChannelState(c, float(state.last_value[0, c]), float(state.estimate[0, c]),
                         float(ages[c]))
            for c in Channel if state.last_time_ms[0, c] != NO_TIME
        )
        active = self._active[row] if row < self._active.shape[0] else np.zeros(N_RULES, bool)
        shown = tuple(RULES[i].name for i in np.flatnonzero(active)
                      if current[list(RULES[i].channels)].any())
        return TwinState(self.twin.patient_ids()[row], now, channels, int(score.total[0]),
                         bool(score.complete[0]), RISK_NAMES[risk], shown)

    def _rebuild_twin(self) -> None:
        """Replay the stored packets, batch by batch as they were processed, so a restart
        resumes with exactly the twin and rule state the site had."""
        for patient_id in self._wrapped:
            self.twin.row(patient_id)
        for _, records in itertools.groupby(self.store.packets(), key=lambda r: r.batch_index):
            packets = [Packet(r.device_id, r.patient_id, r.seq, r.sent_at_ms,
                              self._open_readings(r), Provenance(r.provenance))
                       for r in records]
            update, active, _ = self._advance(packets)
            self.twin.apply(update)
            self._active[update.rows] = active

    def _open_readings(self, rec: PacketRecord) -> ReadingBatch:
        try:
            return decode_payload(self.keyring.open(
                rec.patient_id, self._wrapped[rec.patient_id], rec.envelope,
                packet_aad(rec.leaf_index, rec.patient_id)))
        except (DecryptionError, ValueError) as exc:
            raise VerificationError(
                f"pipeline: stored {rec.describe()} cannot be opened (altered, or sealed "
                "under another key); run `medtwin verify`", rec.describe()) from exc


def _fresh_estimates(estimate: npt.NDArray[np.float64],
                     last_time_ms: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Estimates with values older than the rules' staleness limit blanked (NaN).

    Age is measured from each patient's newest reading, so replayed history is judged by its
    own clock.
    """
    newest = last_time_ms.max(axis=1, keepdims=True)
    stale = (last_time_ms == NO_TIME) | (newest - last_time_ms > STALE_AFTER_S * 1000)
    return np.where(stale, np.nan, estimate)


def twin_state_json(state: TwinState) -> dict[str, Any]:
    """A twin state as JSON for the API and the live stream."""
    return {
        "patient_id": state.patient_id,
        "time_ms": state.time_ms,
        "channels": {
            c.channel.code: {"name": c.channel.name.lower(), "unit": c.channel.ucum,
                             "value": _num(c.value), "estimate": _num(c.estimate),
                             "age_s": _num(c.age_s)}
            for c in state.channels
        },
        "news2": {"total": state.news2, "complete": state.news2_complete,
                  "risk": state.news2_risk},
        "active_alerts": list(state.active_rules),
    }


def alert_json(alert: Alert) -> dict[str, Any]:
    return {"patient_id": alert.patient_id, "rule": alert.rule, "severity": alert.severity.value,
            "time_ms": alert.time_ms, "summary": alert.summary, "evidence": alert.evidence}


def _num(x: float) -> float | None:
    return None if np.isnan(x) else round(x, 2)
