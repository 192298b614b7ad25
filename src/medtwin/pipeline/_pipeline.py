"""The one path a reading travels: gate → twin → clinical rules → ledger → store → events.

`Pipeline.process` is the whole path for a batch of submissions, on one screen. Nothing in
memory changes until the batch is durable in the store, so a failed write changes nothing.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import json
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt

from medtwin.access import AccessDecision
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
from medtwin.config import MAX_ID_LENGTH, Settings
from medtwin.crypto import (
    KEK_FILE,
    LOG_KEY_FILE,
    KeyRing,
    LogSigningKey,
    PublicLogKey,
    SiteKeys,
    WrappedKey,
    aead_suite,
    endorse_log_key,
    envelope_suite,
    sign_session_key,
    signature_suite,
)
from medtwin.domain import (
    Alert,
    Channel,
    ChannelState,
    Device,
    DeviceStatus,
    Finding,
    Forecast,
    Packet,
    Patient,
    Provenance,
    ReadingBatch,
    RejectReason,
    TwinState,
    canonical_json,
)
from medtwin.errors import (
    ConfigError,
    ConflictError,
    DecryptionError,
    GateRejection,
    InvalidInputError,
    NotFoundError,
    PatientErasedError,
    StoreError,
    VerificationError,
)
from medtwin.estimation import (
    FORECAST_HORIZONS_MIN,
    NO_TIME,
    GlucoseFilterState,
    GlucoseHistory,
    GlucoseReadings,
    TwinBank,
    TwinUpdate,
    glucose_whatif,
    grid_glucose_history,
    identify_history,
)
from medtwin.guard import (
    BehaviourState,
    Draft,
    GuardBank,
    Judgement,
    Screen,
)
from medtwin.ingest import Admitted, Gate, Refused, SessionOpened, Submission, Verdict
from medtwin.ledger import (
    MerkleTree,
    NoteSigner,
    check_binding,
    record_leaf_hash,
    sign_checkpoint_note,
    sign_tree_head,
)
from medtwin.physiology import VITALS_OBSERVED_CHANNELS, GlucoseParams, basal_infusion_rate
from medtwin.pipeline._codec import (
    SESSION_MARK,
    alert_aad,
    decode_alert,
    decode_finding,
    decode_params,
    decode_payload,
    encode_alert,
    encode_finding,
    encode_params,
    encode_readings,
    encode_signed_packet,
    finding_aad,
    packet_aad,
    twin_params_aad,
)
from medtwin.pipeline._events import EventHub
from medtwin.pipeline._lock import WriterLock
from medtwin.pipeline._verify import VerifyReport, record_logged, verify_store
from medtwin.store import (
    AccessRecord,
    AlertRecord,
    BindingRecord,
    Commit,
    ErasureRecord,
    FindingRecord,
    HeadRecord,
    LogKeyRecord,
    PacketRecord,
    RegistrationRecord,
    RejectionRecord,
    RetirementRecord,
    RotationRecord,
    SessionRecord,
    SnapshotRecord,
    Store,
    SuiteRecord,
    TwinParamsRecord,
)

#: Records logged one at a time by an administrative action (or a request's access decisions).
ActionRecord = (RegistrationRecord | ErasureRecord | RotationRecord | SessionRecord
                | LogKeyRecord | AccessRecord | RejectionRecord | SuiteRecord
                | RetirementRecord | BindingRecord)
_Action = TypeVar("_Action", bound=ActionRecord)
#: Longest reason kept with an access decision.
MAX_ACCESS_REASON = 300
#: The previous suite an `aead-suite` record names when the site never logged one and its
#: stored envelopes do not tell which sealed its data last (wrapped data keys of several
#: suites and no sealed record, or a header no suite reads).
UNRECORDED_SUITE = "unrecorded"

#: Patients whose data keys one rotation batch re-wraps in one store transaction (and one
#: hold of the pipeline lock: ingestion waits at most one batch).
DEFAULT_REWRAP_BATCH = 500


@dataclass(frozen=True, slots=True)
class Accepted:
    """A packet that is durable in the store and in the log.

    Per reading, in the packet's order: `estimates` the twin's estimate right after it;
    `innovation` and `innovation_var` the model twin's innovation (reading minus what the
    glucose or vitals twin predicted) and its variance, NaN where no model used the reading
    (inputs, the first value of a twin, late values); `glucose` what the glucose twin made of
    it (forecasts at `FORECAST_HORIZONS_MIN` with their 95 % intervals; NaN for readings that
    are not CGM values it used); `held` whether the guard kept it from the twin (recorded,
    but it moved nothing: its estimate and innovation are NaN). `alerts`: the alerts this
    batch raised for the packet's patient (on their last packet); `findings`: the guard
    findings raised on this packet's readings or on its device's behaviour.
    """

    leaf_index: int
    device_id: str
    seq: int
    n_readings: int
    estimates: npt.NDArray[np.float64]
    innovation: npt.NDArray[np.float64]
    innovation_var: npt.NDArray[np.float64]
    glucose: GlucoseReadings
    held: npt.NDArray[np.bool_]
    alerts: tuple[Alert, ...] = ()
    findings: tuple[Finding, ...] = ()


@dataclass(frozen=True, slots=True)
class Rejected:
    """A packet the gate refused; its rejection is durable, its readings were never stored."""

    leaf_index: int
    error: GateRejection


Outcome = Accepted | Rejected


class PacketMeta(NamedTuple):
    """Metadata of the admitted device-signed packets of a batch for device-behaviour
    detection, per packet: its index among the batch's verdicts and among its admitted
    packets, guard source, arrival and send times, sequence number and payload size
    (readings). Refused packets are not in it: unauthenticated input never counts against the
    device it names (the gate refuses and logs each one)."""

    verdict: npt.NDArray[np.intp]
    packet: npt.NDArray[np.intp]
    source: npt.NDArray[np.intp]
    arrival_ms: npt.NDArray[np.int64]
    send_ms: npt.NDArray[np.int64]
    sequence: npt.NDArray[np.int64]
    payload: npt.NDArray[np.int64]


class _Step(NamedTuple):
    """Steps (2)-(3) of a batch, proposed: the twin update, the rules' new state and alerts,
    which readings the guard held, its proposals and the findings to raise (with the
    sources they quarantine)."""

    update: TwinUpdate
    active: npt.NDArray[np.bool_]
    alerts: list[Alert]
    held: npt.NDArray[np.bool_]
    screen: Screen
    judgement: Judgement
    behaviour: BehaviourState | None
    findings: list[tuple[Draft, Finding]]
    quarantined: frozenset[int]
    meta: PacketMeta
#: The longest what-if a caller may ask for, in steps (two days of 5-minute steps).
MAX_WHATIF_STEPS = 576
#: Days of data `Pipeline.personalize` identifies from by default, and its grid step (min).
PERSONALIZE_DAYS = 2.0
PERSONALIZE_STEP_MIN = 5.0
#: The longest the twin's interval "now" is propagated from its last reading (min).
MAX_BAND_MIN = 12 * 60.0
#: The model name of glucose twin parameter records.
GLUCOSE_MODEL = "glucose"


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """What replaying the logged inputs re-derived (`verify --replay`): batches replayed,
    snapshots and alerts compared, and every one the inputs do not imply."""

    batches: int
    snapshots: int
    alerts: int
    mismatches: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.mismatches


@dataclass(frozen=True, slots=True)
class Personalized:
    """A patient's identified glucose-model parameters, as logged at `leaf_index`: values and
    posterior log-standard deviations (≈ relative spreads) of the identified fields, and how
    many CGM values they came from."""

    patient_id: str
    leaf_index: int
    params: dict[str, float]
    uncertainty: dict[str, float]
    n_cgm: int


@dataclass(frozen=True, slots=True)
class WhatIf:
    """Glucose (mg/dL, interstitial: what a noise-free CGM would read) of a patient under a
    given future, from their glucose twin at `start_ms`: the mean and 95 % interval at the
    end of each step, at `time_ms`."""

    patient_id: str
    start_ms: int
    time_ms: npt.NDArray[np.int64]
    mean: npt.NDArray[np.float64]
    low: npt.NDArray[np.float64]
    high: npt.NDArray[np.float64]


class Pipeline:
    """A site's twin kernel: registered devices, the twin bank, the log and the store."""

    def __init__(self, settings: Settings, store: Store, keys: SiteKeys,
                 check_replay: bool = False) -> None:
        self.settings = settings
        self.clock = settings.clock
        self.store = store
        self.keys = keys
        self.keyring = KeyRing(keys, settings.aead_suite)
        self.gate = Gate(settings, sessions=True)
        self.events = EventHub()
        self.twin = TwinBank()
        self.guard = GuardBank()
        self._lock = threading.RLock()
        self._writer_lock: WriterLock | None = None
        self._note: tuple[HeadRecord, str] | None = None
        self._offer: tuple[str, dict[str, Any]] | None = None
        in_force = self._check_store()
        self._wrapped = {p: WrappedKey(*key) for p, key in store.patient_wrapped_keys().items()}
        self._erased = store.erased_patients()
        #: Stored packets of erased patients that the restart replay skipped.
        self.replay_skipped = 0
        self._devices = {d.device_id: d for d in store.devices()}
        self._tree = MerkleTree(store.leaf_hashes())
        if not check_replay:    # the evil-twin check reads, never writes
            self._settle_log_key(in_force)
            self._log_aead_suite()
        self._active = np.zeros((0, N_RULES), dtype=bool)
        snapshots = store.snapshots()
        self._next_snapshot_ms = (snapshots[-1].time_ms + self._snapshot_every_ms()
                                  if snapshots else 0)
        #: What the restart replay checked (snapshots and alerts only with `check_replay`).
        self.replay_report = self._rebuild_twin(check_replay)

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
            keys = SiteKeys.load_or_create(settings.resolved_keys_dir, settings.aead_suite,
                                           settings.log_suite)
            pipeline = cls(settings, store, keys)
        except BaseException:
            if store is not None:
                store.close()
            lock.release()
            raise
        pipeline._writer_lock = lock
        return pipeline

    @classmethod
    def check_replay(cls, settings: Settings) -> ReplayReport:
        """The evil-twin check of a site: re-derive its twins and alerts from the logged
        inputs (reading the store, writing nothing) and compare them with every logged
        snapshot and alert. Run it on a stopped site, or under its writer lock."""
        store = Store(settings.resolved_database_url)
        try:
            keys = SiteKeys.load(settings.resolved_keys_dir)
            return cls(settings, store, keys, check_replay=True).replay_report
        finally:
            store.close()

    def _check_store(self) -> PublicLogKey:
        """Refuse a store whose records, leaves, devices or sequence numbers disagree with
        the signed tree head: the site would otherwise sign edits made while it was down.
        Returns the log key in force at the head."""
        report = verify_store(self.store, self.keys.log_key_history)
        if report.pending:
            raise VerificationError(
                f"pipeline: {report.pending} records lie beyond the signed tree head; every "
                "commit signs its head, so they were added outside medtwin: run `medtwin "
                "verify`", f"record #{report.tree_size}")
        assert report.log_key is not None
        return report.log_key

    def _log_aead_suite(self) -> None:
        """Log a change of the configured AEAD suite, so the log says what seals new records
        from when: a change from the last one logged or, on a site that never logged one (new,
        or from before suites were logged), from the one its data at rest names."""
        configured = aead_suite(self.settings.aead_suite).name
        in_force = self.store.aead_suite_in_force() or self._sealed_suite()
        if in_force is not None and configured != in_force:
            reason = ("configured at start (MEDTWIN_AEAD_SUITE)" if in_force != UNRECORDED_SUITE
                      else "configured at start (MEDTWIN_AEAD_SUITE); the suite before was "
                           "never logged, and the stored envelopes do not tell it")
            with self._lock:
                now = self.clock()
                self._log_action(SuiteRecord(self._tree.size, configured, in_force, now,
                                             reason), now)

    def _sealed_suite(self) -> str | None:
        """The AEAD suite the site's data at rest was last sealed with, as its envelopes name
        it: the newest sealed record's, else the one every wrapped data key names; None if
        nothing is sealed yet (no suite to change from), UNRECORDED_SUITE if they do not tell."""
        newest = self.store.newest_envelope()
        envelopes = ([newest] if newest is not None
                     else [wrapped.blob for wrapped in self._wrapped.values()])
        try:
            suites = {envelope_suite(envelope) for envelope in envelopes}
        except DecryptionError:
            return UNRECORDED_SUITE
        if len(suites) > 1:
            return UNRECORDED_SUITE
        return suites.pop() if suites else None

    def _settle_log_key(self, in_force: PublicLogKey) -> None:
        """Finish a log key rotation that a crash (or a commit of unknown outcome) left
        unsettled: log the outgoing key's endorsement if it is not logged yet, then drop the
        outgoing private key. `verify_store` has already held the log's rotations to the key
        file's history, so the only key that may be in force besides the current one is the
        outgoing one."""
        outgoing = self.keys.unsettled_log_key
        if outgoing is not None and in_force.same_key(outgoing.public):
            in_force = self._log_rotation(self.keys, "completed at start: the rotation was "
                                          "interrupted before it was logged").endorsement().key
        if outgoing is not None:
            self._use_keys(SiteKeys.settle_log_key(self.settings.resolved_keys_dir))
        if not in_force.same_key(self.keys.log_key.public):
            raise ConfigError(
                f"keys: the site key file's log key is {self.keys.log_key.key_id!r}, but the "
                f"log's signed heads and rotations lead to {in_force.key_id!r}: restore the "
                f"key file that holds {in_force.key_id!r}")

    def verify(self, signatures: bool = True) -> VerifyReport:
        """Verify the store against the log while no batch is being written (consistent even
        on a live site); with `signatures`, re-check every device signature too."""
        with self._lock:
            return verify_store(self.store, self.keys.log_key_history,
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
            verdicts = self.gate.check(submissions, now, self._devices, self._wrapped,
                                       self._erased)
            admitted = [v for v in verdicts if isinstance(v, Admitted)]
            # (2) guard and twin: screen, one batched twin update over the readings not
            # held, residual tests, device behaviour; (3) clinical rules on the patients
            # the batch touched
            step = self._advance([a.packet for a in admitted], self._packet_meta(verdicts, now))
            # (4) seal and log: records, leaves and a signed tree head; when due, first a
            # snapshot of the twins as they stand before this batch
            tree = self._tree.copy()
            snapshot = self._snapshot(tree.size, now) if verdicts else None
            commit, outcomes = self._seal_and_log(verdicts, step, tree, now, snapshot)
            # (5) durable before anything is acknowledged or shown
            self.store.commit(commit)
            # (6) make it current, and tell the subscribers
            self._tree = tree
            if snapshot is not None:
                self._next_snapshot_ms = now + self._snapshot_every_ms()
            self.twin.apply(step.update)
            self.guard.apply(step.screen, step.judgement, step.behaviour, list(step.quarantined),
                             step.held)
            self._active[step.update.rows] = step.active
            for device_id, seq in commit.device_seqs.items():
                self._devices[device_id] = replace(self._devices[device_id], last_seq=seq)
            for reg in commit.registrations:
                self._devices[reg.device_id] = replace(self._devices[reg.device_id],
                                                       status=DeviceStatus(reg.status))
            if self.events.has_subscribers:
                self.events.publish(self._events(step, now))
            return outcomes

    def _packet_meta(self, verdicts: Sequence[Verdict], now: int) -> PacketMeta:
        """Behaviour metadata of the batch's admitted device-signed packets."""
        admitted = [(k, v.packet) for k, v in enumerate(verdicts) if isinstance(v, Admitted)]
        signed = [(k, a, p) for a, (k, p) in enumerate(admitted)
                  if p.provenance is Provenance.DEVICE_SIGNED]
        return PacketMeta(
            np.array([k for k, _, _ in signed], np.intp),
            np.array([a for _, a, _ in signed], np.intp),
            np.array([self.guard.source(p.patient_id, p.device_id) for _, _, p in signed],
                     np.intp),
            np.full(len(signed), now, np.int64),
            np.array([p.sent_at_ms for _, _, p in signed], np.int64),
            np.array([p.seq for _, _, p in signed], np.int64),
            np.array([len(p.readings) for _, _, p in signed], np.int64))

    # Steps ----------------------------------------------------------------------------------

    def _advance(self, packets: Sequence[Packet], meta: PacketMeta) -> _Step:
        """Steps (2) and (3) for a batch, proposed, not applied. Restart replays through here.

        The guard screens the readings; the twin takes those not held, in one batched update
        (each patient's events in order, the rules judging the twin after each one, so a short
        excursion inside one packet or batch is still seen); the guard tests the twin's
        innovations. If that quarantines a source, its readings from the one that convicted
        it on are held too and the twin is proposed again without them.
        """
        sizes = [len(p.readings) for p in packets]
        rows = np.repeat(np.array([self.twin.row(p.patient_id) for p in packets], np.intp),
                         sizes)
        source = np.repeat(np.array([self.guard.source(p.patient_id, p.device_id)
                                     for p in packets], np.intp), sizes)
        if self._active.shape[0] < len(self.twin):
            grown = np.zeros((2 * len(self.twin), N_RULES), dtype=bool)
            grown[: self._active.shape[0]] = self._active
            self._active = grown

        def column(name: str, dtype: type) -> npt.NDArray[Any]:
            parts = [getattr(p.readings, name) for p in packets]
            return np.concatenate(parts) if parts else np.zeros(0, dtype)

        channel, value = column("channel", np.int8), column("value", np.float64)
        time_ms = column("time_ms", np.int64)
        n = value.shape[0]
        arrival = np.repeat(np.arange(len(packets), dtype=np.int64), sizes)
        behaviour, behaviour_drafts = (
            self.guard.behaviour(meta.source, meta.arrival_ms, meta.send_ms, meta.sequence,
                                 meta.payload, np.ones(meta.source.size, bool))
            if meta.source.size else (None, ()))
        screen = self.guard.screen(source, channel, value, time_ms)
        held = screen.held
        while True:
            use = np.flatnonzero(~held)
            update = _widen(self.twin.propose(rows[use], channel[use], value[use],
                                              time_ms[use], arrival[use]), use, n)
            judgement = self.guard.judge(replace(screen, held=held), channel, value, time_ms,
                                         update.innovation, update.innovation_var,
                                         behaviour_drafts)
            later = np.zeros(n, dtype=bool)
            for src, after in self._convicted_from(judgement, meta, sizes).items():
                later |= (source == src) & (np.arange(n) > after)
            if not (later & ~held).any():
                break
            held = held | later
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
        findings, quarantined = self._findings(judgement.drafts,
                                               set(judgement.newly_blocked.tolist()))
        return _Step(update, rules.active, alerts, held, screen, judgement,
                     None if behaviour is None else behaviour.state, findings,
                     frozenset(quarantined), meta)

    def _convicted_from(self, judgement: Judgement, meta: PacketMeta, sizes: Sequence[int]
                        ) -> dict[int, int]:
        """Per newly convicted source, the last reading that still moves the twin: the one
        its first convicting finding was raised on (or, for device behaviour, the reading
        before the convicting packet's)."""
        starts = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
        blocked = set(judgement.newly_blocked.tolist())
        after: dict[int, int] = {}
        for draft in judgement.drafts:
            if draft.source not in blocked or not draft.detector.convicts:
                continue
            at = (draft.reading if draft.reading >= 0
                  else int(starts[meta.packet[draft.packet]]) - 1)
            after[draft.source] = min(after.get(draft.source, at), at)
        return after

    def _findings(self, drafts: Sequence[Draft], newly_blocked: set[int]
                  ) -> tuple[list[tuple[Draft, Finding]], set[int]]:
        """The findings drafted for a batch; the first convicting finding of each newly
        blocked source (behaviour's included) is the one that quarantines it."""
        quarantined: set[int] = set()
        out = []
        for draft in drafts:
            convicts = (draft.detector.convicts and draft.source in newly_blocked
                        and draft.source not in quarantined)
            if convicts:
                quarantined.add(draft.source)
            out.append((draft, self.guard.finding(draft, convicts)))
        return out, quarantined

    def _snapshot_every_ms(self) -> int:
        return int(self.settings.snapshot_interval_s * 1000)

    def _snapshot(self, leaf_index: int, now: int) -> SnapshotRecord | None:
        """A snapshot of every (not erased) twin before the batch at `leaf_index`, if one
        is due (`Settings.snapshot_interval_s` since the last; 0: never)."""
        if self.settings.snapshot_interval_s <= 0 or now < self._next_snapshot_ms:
            return None
        return SnapshotRecord(leaf_index, now, self._digests())

    def _digests(self) -> bytes:
        return canonical_json([[p, self.twin.digest(p).hex()]
                               for p in sorted(self.twin.patient_ids())
                               if p not in self._erased])

    def _seal_and_log(self, verdicts: Sequence[Verdict], step: _Step, tree: MerkleTree,
                      now: int, snapshot: SnapshotRecord | None = None
                      ) -> tuple[Commit, list[Outcome]]:
        packets: list[PacketRecord] = []
        rejections: list[RejectionRecord] = []
        alert_records: list[AlertRecord] = []
        finding_records: list[FindingRecord] = []
        registrations: list[RegistrationRecord] = []
        leaves: list[tuple[int, str, bytes]] = []
        outcomes: list[Outcome] = []
        seqs: dict[str, int] = {}
        offset = 0
        batch_index = tree.size
        update = step.update

        def log(record: PacketRecord | AlertRecord | RejectionRecord | FindingRecord
                | RegistrationRecord | SnapshotRecord) -> None:
            h = record_leaf_hash(record)
            tree.append_hash(h)
            leaves.append((record.leaf_index, record.kind, h))

        if snapshot is not None:
            log(snapshot)

        admitted_at: list[int] = []
        for k, verdict in enumerate(verdicts):
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
            # a session packet keeps, where a signed one keeps its signature, the id of the
            # logged session whose key authenticated it
            authenticated_by = (verdict.signature if verdict.session_id is None
                                else SESSION_MARK + bytes.fromhex(verdict.session_id))
            prec = PacketRecord(index, batch_index, pkt.device_id, pkt.patient_id, pkt.seq,
                                pkt.sent_at_ms, now, pkt.provenance.value, n, envelope,
                                authenticated_by)
            packets.append(prec)
            log(prec)
            if pkt.device_id in self._devices:
                seqs[pkt.device_id] = pkt.seq
            admitted_at.append(k)
            outcomes.append(Accepted(index, pkt.device_id, pkt.seq, n,
                                     update.estimate[offset:offset + n],
                                     update.innovation[offset:offset + n],
                                     update.innovation_var[offset:offset + n],
                                     update.glucose.readings.slice(offset, offset + n),
                                     step.held[offset:offset + n]))
            offset += n
        patient_of = {k: v.packet.patient_id for k, v in enumerate(verdicts)
                      if isinstance(v, Admitted)}
        for patient_id in {a.patient_id for a in step.alerts}:
            k = max(k for k, p in patient_of.items() if p == patient_id)
            accepted = outcomes[k]
            assert isinstance(accepted, Accepted)
            outcomes[k] = replace(accepted, alerts=tuple(
                a for a in step.alerts if a.patient_id == patient_id))
        for alert in step.alerts:
            index = tree.size
            envelope = self.keyring.seal(alert.patient_id, self._wrapped[alert.patient_id],
                                         encode_alert(alert), alert_aad(index, alert.patient_id))
            arec = AlertRecord(index, alert.patient_id, alert.rule, alert.severity.value,
                               alert.time_ms, envelope)
            alert_records.append(arec)
            log(arec)
        # Guard findings, attached to the packet they were raised on; a quarantine is a
        # logged status change of the registered device.
        ends = np.cumsum([len(v.packet.readings) for v in verdicts if isinstance(v, Admitted)])
        attached: dict[int, list[Finding]] = {}
        for draft, finding in step.findings:
            index = tree.size
            envelope = self.keyring.seal(finding.patient_id, self._wrapped[finding.patient_id],
                                         encode_finding(finding),
                                         finding_aad(index, finding.patient_id))
            frec = FindingRecord(index, finding.patient_id, finding.device_id,
                                 finding.code.value, finding.time_ms, envelope)
            finding_records.append(frec)
            log(frec)
            k = (admitted_at[int(np.searchsorted(ends, draft.reading, side="right"))]
                 if draft.reading >= 0 else int(step.meta.verdict[draft.packet]))
            if isinstance(outcomes[k], Accepted):
                attached.setdefault(k, []).append(finding)
            device = self._devices.get(finding.device_id)
            if finding.quarantined and device is not None:
                reg = RegistrationRecord(tree.size, device.device_id, device.patient_id,
                                         device.suite, device.public_key,
                                         DeviceStatus.QUARANTINED.value, now,
                                         f"guard: {finding.code.value} (finding #{index})")
                registrations.append(reg)
                log(reg)
        for k, found in attached.items():
            accepted = outcomes[k]
            assert isinstance(accepted, Accepted)
            outcomes[k] = replace(accepted, findings=tuple(found))
        head = self._sign_head(tree, now) if leaves else None
        commit = Commit(tuple(packets), tuple(alert_records), tuple(rejections), tuple(leaves),
                        head, seqs, tuple(registrations), findings=tuple(finding_records),
                        snapshots=(snapshot,) if snapshot is not None else ())
        return commit, outcomes

    def _sign_head(self, tree: MerkleTree, now: int,
                   key: LogSigningKey | None = None) -> HeadRecord:
        """The signed head of `tree`, by `key` (default: the current log key)."""
        sth = sign_tree_head(key or self.keys.log_key, self.settings.log_origin, tree.size,
                             tree.root(), now)
        return HeadRecord(sth.origin, sth.size, sth.root, sth.timestamp_ms, sth.key_id,
                          sth.suite, sth.signature)

    def checkpoint_note(self) -> tuple[HeadRecord, str] | None:
        """The latest signed tree head and its C2SP checkpoint note, signed by the log key
        once per head (what the API serves and the chain anchors); None while nothing is
        logged. Reads the store, not the twin: never waits for ingestion."""
        head = self.store.latest_head()
        if head is None:
            return None
        cached = self._note
        if cached is not None and cached[0] == head:
            return cached
        key = self.keys.log_key
        if key.key_id != head.key_id:   # a log key rotation is being committed: wait for it
            with self._lock:
                key, head = self.keys.log_key, self.store.latest_head()
            assert head is not None
        note = sign_checkpoint_note(head.origin, head.size, head.root, [
            NoteSigner(head.origin, key.suite, key.private_key, key.public_key)])
        self._note = (head, note)
        return head, note

    def session_key_offer(self) -> dict[str, Any]:
        """The gate's session KEM key signed by the current log key, with the log key
        rotations so far: what a device checks (`check_session_key`) before a handshake."""
        key = self.keys.log_key
        cached = self._offer
        if cached is not None and cached[0] == key.key_id:
            return cached[1]
        gate = self.gate
        offer = sign_session_key(key, self.settings.log_origin, gate.session_kem,
                                 gate.session_public_key,
                                 [r.endorsement() for r in self.store.log_key_records()])
        self._offer = (key.key_id, offer)
        return offer

    def _register(self, device: Device, reason: str = "") -> None:
        """Log a device's registration (or status change) and make it current, durably."""
        now = self.clock()
        self._log_action(RegistrationRecord(self._tree.size, device.device_id,
                                            device.patient_id, device.suite, device.public_key,
                                            device.status.value, now, reason), now)
        self._devices[device.device_id] = device
        self._sync_blocked(device)

    def _log_action(self, record: ActionRecord, now: int) -> None:
        """Log one administrative record (at leaf `record.leaf_index`, the log's size) under a
        signed head, durably, and make it the log's newest; the caller holds the lock."""
        self._log_actions((record,), now)

    def _log_actions(self, records: Sequence[ActionRecord], now: int,
                     key: LogSigningKey | None = None) -> None:
        """Log records numbered from the log's size on, in one transaction under one head
        signed by `key` (default: the current log key); the caller holds the lock."""
        tree = self._tree.copy()
        leaves = []
        for record in records:
            h = record_leaf_hash(record)
            if record.leaf_index != tree.append_hash(h):
                raise StoreError(f"pipeline: {record.describe()} is not numbered at the log's "
                                 "end; nothing was written")
            leaves.append((record.leaf_index, record.kind, h))

        def of(kind: type[_Action]) -> tuple[_Action, ...]:
            return tuple(r for r in records if isinstance(r, kind))

        self.store.commit(Commit(
            (), (), of(RejectionRecord), tuple(leaves), self._sign_head(tree, now, key), {},
            registrations=of(RegistrationRecord), erasures=of(ErasureRecord),
            rotations=of(RotationRecord), sessions=of(SessionRecord), log_keys=of(LogKeyRecord),
            accesses=of(AccessRecord), suites=of(SuiteRecord),
            retirements=of(RetirementRecord), bindings=of(BindingRecord)))
        self._tree = tree

    def bind_address(self, token_hash: bytes, holder: str, address: str,
                     signature: bytes) -> BindingRecord:
        """Bind a token to the chain address whose key signed the binding message (EIP-191;
        it names this site and the token), logged with that signature so `verify` re-checks
        it; InvalidInputError if the signature is not that key's."""
        check_binding(self.settings.log_origin, token_hash, address, signature)
        with self._lock:
            now = self.clock()
            record = BindingRecord(self._tree.size, token_hash, holder, address, signature, now)
            self._log_action(record, now)
            return record

    def log_accesses(self, decisions: Sequence[AccessDecision]) -> list[AccessRecord]:
        """Log access decisions on the Merkle log, so the audit of who read which twin is as
        tamper-evident as the data: one record per caller, purpose and moment (a request's
        decisions, however many patients), all in one transaction under one head."""
        groups: dict[tuple[float, str, str, str | None, str], list[AccessDecision]] = {}
        for d in decisions:
            groups.setdefault((d.at_s, d.caller, d.role, d.address, d.purpose), []).append(d)
        if not groups:
            return []
        with self._lock:
            start = self._tree.size
            records = [AccessRecord(start + i, int(at_s * 1000), caller, role, address, purpose,
                                    canonical_json([[d.patient_id, d.allowed,
                                                     d.reason[:MAX_ACCESS_REASON]]
                                                    for d in group]))
                       for i, ((at_s, caller, role, address, purpose), group)
                       in enumerate(groups.items())]
            self._log_actions(records, self.clock())
            return records

    def _sync_blocked(self, device: Device) -> None:
        """Tell the guard whether a registered device's source is blocked."""
        source = np.array([self.guard.source(device.patient_id, device.device_id)], np.intp)
        quarantined = device.status is DeviceStatus.QUARANTINED
        if bool(self.guard.blocked(source)[0]) != quarantined:
            self.guard.set_blocked(source, quarantined)

    def _events(self, step: _Step, now: int) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = [
            {"type": "twin", "state": twin_state_json(state)}
            for state in self._states_of(step.update.rows, now)
        ]
        events.extend({"type": "alert", "alert": alert_json(a)} for a in step.alerts)
        events.extend({"type": "finding", "finding": finding_json(f)} for _, f in step.findings)
        return events

    # Registration ---------------------------------------------------------------------------

    def open_session(self, envelope: Any, size: int = 0) -> SessionOpened:
        """Open a device session from its signed handshake (decoded JSON) and log the
        handshake (its signed fields only), so every session packet traces back to a handshake
        its device signed; GateRejection with the reason if the gate refuses it. The
        signature and KEM work runs outside the pipeline lock: ingestion never waits on it."""
        devices, erased = dict(self._devices), set(self._erased)
        try:
            opened = self.gate.open_session(envelope, self.clock(), devices, erased, size,
                                            seen=self.store.has_session)
        except GateRejection as exc:
            self._log_refused_handshake(envelope, exc)
            raise
        try:
            with self._lock:
                device = self._devices.get(opened.device_id)
                signer = devices[opened.device_id]
                if device is None or (device.suite, device.public_key) != (
                        signer.suite, signer.public_key) or device.patient_id in self._erased:
                    raise GateRejection(RejectReason.UNKNOWN_SESSION, "the device's key "
                                        "changed while the handshake was checked; handshake "
                                        "again")
                now = self.clock()
                signed = {"handshake": envelope["handshake"], "suite": envelope["suite"],
                          "signature": envelope["signature"]}
                self._log_action(SessionRecord(self._tree.size, device.device_id,
                                               device.patient_id, opened.session_id,
                                               opened.expires_at_ms, canonical_json(signed)),
                                 now)
        except BaseException:
            self.gate.close_session(opened.session_id)
            raise
        return opened

    def _log_refused_handshake(self, envelope: Any, refused: GateRejection) -> None:
        """Log a refused session handshake as a refused packet is: who it claimed to come
        from and why (a handshake carries no reading)."""
        handshake = envelope.get("handshake") if isinstance(envelope, dict) else None
        claimed = handshake.get("device_id") if isinstance(handshake, dict) else None
        device_id = (claimed if isinstance(claimed, str) and 0 < len(claimed) <= MAX_ID_LENGTH
                     else None)
        with self._lock:
            now = self.clock()
            self._log_action(RejectionRecord(self._tree.size, now, device_id,
                                             refused.reason.value,
                                             f"session handshake: {refused.detail}"), now)

    def add_patient(self, patient_id: str) -> Patient:
        """Register a patient and create their data key; ConflictError if known."""
        with self._lock:
            if patient_id in self._wrapped:
                raise ConflictError(f"pipeline: patient {patient_id!r} already exists")
            if patient_id in self._erased:
                raise ConflictError(f"pipeline: patient {patient_id!r} was erased; register "
                                    "them under a new id")
            now = self.clock()
            wrapped = self.keyring.new_data_key(patient_id)
            self.store.add_patient(patient_id, wrapped, self.keys.kek_id, now)
            self._wrapped[patient_id] = WrappedKey(wrapped, self.keys.kek_id)
            self.twin.row(patient_id)
            return Patient(patient_id, now)

    def erase_patient(self, patient_id: str, reason: str, by: str) -> bool:
        """Crypto-shred a patient: destroy their data key, so their stored records stay in
        the log (checkable by hash) but can never be opened again, and log who did it and
        why. NotFoundError if unknown, ConflictError if already erased, InvalidInputError
        without a reason; nothing changes on error. Returns whether the database's
        write-ahead log was emptied of the old key page at once (else at its next
        checkpoint)."""
        _check_reason(reason, "erasing a patient", "who asked and on what grounds")
        with self._lock:
            if patient_id in self._erased:
                raise ConflictError(f"pipeline: patient {patient_id!r} was already erased")
            self._check_readable(patient_id)
            now = self.clock()
            self._log_action(ErasureRecord(self._tree.size, patient_id, now,
                                           f"by {by}: {reason}"), now)
            del self._wrapped[patient_id]
            self._erased.add(patient_id)
            self.keyring.forget(patient_id)
        return self.store.scrub_wal()

    # Site KEK rotation ----------------------------------------------------------------------

    def rotate_kek(self, by: str, reason: str, batch: int = DEFAULT_REWRAP_BATCH,
                   progress: Callable[[int, int], None] | None = None) -> RotationRecord:
        """Rotate the site KEK and re-wrap every patient's data key under it, batch by batch
        while ingestion goes on; returns the logged rotation."""
        record = self.start_rotation(by, reason)
        self.rewrap_patients(batch, progress)
        return record

    def start_rotation(self, by: str, reason: str) -> RotationRecord:
        """Make a fresh site KEK current for new data keys and log who rotated it and why;
        stored data keys stay readable under their old KEK until re-wrapped. The key file
        is replaced first, so a crash never leaves a logged KEK that does not exist; if the
        record cannot be committed, the old key ring is put back and nothing changes.
        InvalidInputError without a reason."""
        _check_reason(reason, "rotating the site KEK", "who asked and why")
        with self._lock:
            old = self.keys.kek_id
            return self._change_kek_file(
                lambda keys_dir: SiteKeys.rotate_kek(keys_dir, self.settings.aead_suite),
                lambda keys, now: RotationRecord(self._tree.size, old, keys.kek_id,
                                                 keys.kek_suite, now, f"by {by}: {reason}"))

    def _change_kek_file(self, change: Callable[[Path], SiteKeys],
                         record_of: Callable[[SiteKeys, int], _Action]) -> _Action:
        """Change the KEK file, then log the change and use the new keys; if the record
        cannot be committed, put the file back (not logged: not in force), unless it is in
        the log after all (a lost acknowledgement): then the changed file is in force and
        the error still propagates. The caller holds the lock."""
        keys_dir = self.settings.resolved_keys_dir
        before = SiteKeys.key_file(keys_dir, KEK_FILE)
        keys = change(keys_dir)
        now = self.clock()
        record = record_of(keys, now)
        try:
            self._log_action(record, now)
        except BaseException:
            if not self._record_landed(record):
                SiteKeys.restore_key_file(keys_dir, KEK_FILE, before)
                raise
            self._tree = MerkleTree(self.store.leaf_hashes())
            self._use_keys(keys)
            raise
        self._use_keys(keys)
        return record

    def _record_landed(self, record: ActionRecord) -> bool:
        """Whether a record whose commit raised is in the log after all (its leaf is stored:
        a lost acknowledgement; one transaction writes the leaf and its signed head). If the
        store cannot even be read, the outcome is unknown: the error propagates and the
        changed key file stays (no KEK a stored data key needs is ever dropped by it); stop
        the site and run `medtwin verify` (a store that cannot be read takes no writes)."""
        return record_logged(self.store, record)

    def _use_keys(self, keys: SiteKeys) -> None:
        """Sign, seal and unwrap with `keys` from now on."""
        self.keys = self.keyring.site = keys

    # Log signing key rotation ---------------------------------------------------------------

    def rotate_log_key(self, by: str, reason: str, suite: str | None = None) -> LogKeyRecord:
        """Make a fresh log signing key (suite `suite`, default the current one's) current
        without downtime. The outgoing key signs an endorsement of the new one, logged as a
        record whose tree head the new key already signs: witnesses and verifiers that trust
        the old key follow it. The key file is replaced first and put back if the record
        cannot be committed; the outgoing private key is dropped once the record is durable.
        InvalidInputError without a reason, ConfigError for an unknown suite."""
        _check_reason(reason, "rotating the log signing key", "who asked and why")
        signature_suite(suite or self.keys.log_key.suite)
        with self._lock:
            keys_dir = self.settings.resolved_keys_dir
            before = SiteKeys.key_file(keys_dir, LOG_KEY_FILE)
            keys = SiteKeys.rotate_log_key(keys_dir, suite or self.keys.log_key.suite)
            try:
                record = self._log_rotation(keys, f"by {by}: {reason}")
            except BaseException:
                if not self._rotation_landed(keys):
                    SiteKeys.restore_key_file(keys_dir, LOG_KEY_FILE, before)
                    raise
                # committed after all (a lost acknowledgement): the new key is in force
                self._tree = MerkleTree(self.store.leaf_hashes())
                self._use_keys(SiteKeys.settle_log_key(keys_dir))
                raise
            self._use_keys(SiteKeys.settle_log_key(keys_dir))
            return record

    def _log_rotation(self, keys: SiteKeys, reason: str) -> LogKeyRecord:
        """Log the endorsement of `keys.log_key` by the outgoing key (`unsettled_log_key`)
        under a head the new key signs, and sign with the new key once that is durable (so
        nothing signs with a key the log does not yet endorse)."""
        outgoing = keys.unsettled_log_key
        if outgoing is None:
            raise ConfigError("keys: no outgoing log key to endorse the new one")
        now = self.clock()
        record = LogKeyRecord.of(endorse_log_key(outgoing, keys.log_key.public,
                                                 self.settings.log_origin, self._tree.size,
                                                 now, reason))
        self._log_actions((record,), now, keys.log_key)
        self._use_keys(keys)
        return record

    def _rotation_landed(self, keys: SiteKeys) -> bool:
        """Whether a rotation whose commit raised is in the log after all (its head is signed
        by the new key: a lost acknowledgement). If the store cannot even be read, the
        outcome is unknown: the error propagates, the key file keeps both keys (the new one
        current, the outgoing one unsettled) and the next start resolves it either way; stop
        the site then (a store that cannot be read takes no writes anyway)."""
        head = self.store.latest_head()
        return head is not None and head.key_id == keys.log_key.key_id

    def log_key_rotations(self) -> list[LogKeyRecord]:
        """Every logged log key rotation, oldest first (what witnesses follow)."""
        return self.store.log_key_records()

    def pending_rewrap(self) -> list[str]:
        """Patients (erased ones excluded) whose data key a KEK other than the current wraps."""
        with self._lock:
            return sorted(p for p, w in self._wrapped.items() if w.kek_id != self.keys.kek_id)

    def rewrap_patients(self, batch: int = DEFAULT_REWRAP_BATCH,
                        progress: Callable[[int, int], None] | None = None) -> int:
        """Re-wrap under the current KEK every data key still under an older one, `batch`
        patients per store transaction and per hold of the lock (no downtime); calls
        `progress(done, total)` after each batch; returns how many were re-wrapped."""
        if batch < 1:
            raise InvalidInputError(f"pipeline: a re-wrap batch needs at least 1 patient, "
                                    f"not {batch}")
        pending = self.pending_rewrap()
        done = 0
        for start in range(0, len(pending), batch):
            chunk = pending[start:start + batch]
            done += self._rewrap_batch(chunk)
            if progress is not None:
                progress(start + len(chunk), len(pending))
        return done

    def _rewrap_batch(self, patient_ids: Sequence[str]) -> int:
        """Re-wrap one batch in one transaction; patients erased meanwhile are skipped."""
        with self._lock:
            fresh = {p: self.keyring.rewrap(p, self._wrapped[p]) for p in patient_ids
                     if p in self._wrapped and self._wrapped[p].kek_id != self.keys.kek_id}
            self.store.rewrap_patients({p: (w.blob, w.kek_id) for p, w in fresh.items()})
            self._wrapped.update(fresh)
            return len(fresh)

    def retire_kek(self, kek_id: str, by: str = "") -> RetirementRecord:
        """Remove a previous KEK from the key file once no patient's data key needs it, and
        log it (if it cannot be logged, the key file is put back); ConflictError naming how
        many still need it (finish with `medtwin keys rewrap`)."""
        with self._lock:
            needed = self.store.kek_usage().get(kek_id, 0)
            if needed and kek_id != self.keys.kek_id:  # the current one: SiteKeys says so
                raise ConflictError(f"keys: KEK {kek_id!r} still wraps the data keys of "
                                    f"{needed} patients; run `medtwin keys rewrap` first")
            return self._change_kek_file(
                lambda keys_dir: SiteKeys.retire_kek(keys_dir, kek_id),
                lambda keys, now: RetirementRecord(self._tree.size, kek_id, now,
                                                   f"by {by}" if by else
                                                   "no data key needed it"))

    def add_device(self, device: Device) -> None:
        """Register a device to a known patient; NotFoundError or ConflictError otherwise."""
        with self._lock:
            self._check_not_erased(device.patient_id)
            if device.patient_id not in self._wrapped:
                raise NotFoundError(f"pipeline: unknown patient {device.patient_id!r}; "
                                    "register the patient first")
            if device.device_id in self._devices:
                raise ConflictError(f"pipeline: device {device.device_id!r} already exists")
            signature_suite(device.suite)
            self._register(Device(device.device_id, device.patient_id, device.suite,
                                  device.public_key, device.status))

    def set_device_status(self, device_id: str, status: DeviceStatus, reason: str = "") -> None:
        """Quarantine or release a device, logging `reason` (who and why; no patient data);
        NotFoundError if unknown. A quarantined device's packets are still admitted and
        stored, but its readings no longer move the twin."""
        with self._lock:
            if device_id not in self._devices:
                raise NotFoundError(f"pipeline: unknown device {device_id!r}")
            self._register(replace(self._devices[device_id], status=status), reason)

    def rotate_device_key(self, device_id: str, suite: str, public_key: bytes,
                          reason: str) -> None:
        """Give a registered device a new key (of any registered suite), without downtime:
        logged as a registration with the new key and `reason`; from the next packet on only
        the new key signs, its live sessions end, and `verify` checks each packet with the key
        registered when it came. NotFoundError if unknown, InvalidInputError without a reason,
        ConflictError if the key is the current one."""
        _check_reason(reason, "rotating a device key", "who asked and why (a ticket)")
        signature_suite(suite)
        with self._lock:
            device = self._devices.get(device_id)
            if device is None:
                raise NotFoundError(f"pipeline: unknown device {device_id!r}")
            if (device.suite, device.public_key) == (suite, public_key):
                raise ConflictError(f"pipeline: device {device_id!r} already has that key")
            self._register(replace(device, suite=suite, public_key=public_key),
                           f"key rotation: {reason}")
            self.gate.close_device_sessions(device_id)

    def release_device(self, device_id: str, reason: str) -> None:
        """Release a quarantined device: an explicit, logged admin action with its reason.
        Its residual tests start afresh. NotFoundError if unknown, ConflictError if it is not
        quarantined, InvalidInputError without a reason."""
        _check_reason(reason, "releasing a device", "who checked it and what was found")
        with self._lock:
            device = self._devices.get(device_id)
            if device is None:
                raise NotFoundError(f"pipeline: unknown device {device_id!r}")
            if device.status is not DeviceStatus.QUARANTINED:
                raise ConflictError(f"pipeline: device {device_id!r} is not quarantined")
            self._register(replace(device, status=DeviceStatus.ACTIVE), f"release: {reason}")

    def findings(self, patient_id: str | None = None, limit: int = 100) -> list[Finding]:
        """Recent guard findings, newest first, decrypted for an authorised reader (erased
        patients' are left out; asking for one raises PatientErasedError)."""
        with self._lock:
            if patient_id is not None:
                self._check_not_erased(patient_id)
            return [
                decode_finding(self.keyring.open(r.patient_id, self._wrapped[r.patient_id],
                                                 r.envelope,
                                                 finding_aad(r.leaf_index, r.patient_id)),
                               r.patient_id, r.device_id, r.code, r.time_ms)
                for r in self.store.findings(patient_id, limit)
                if r.patient_id not in self._erased
            ]

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
            row = self._row_of(patient_id)
            return self._states_of(np.array([row], np.intp), self.clock())[0]

    def twin_states(self) -> list[TwinState]:
        with self._lock:
            rows = np.array([self.twin.row(p) for p in sorted(self._wrapped)], np.intp)
            return self._states_of(rows, self.clock())

    def whatif(self, patient_id: str, step_min: float, carbs_g: npt.NDArray[np.float64],
               insulin_u: npt.NDArray[np.float64]) -> WhatIf:
        """Glucose (the channel's: interstitial, what a noise-free CGM would read) from the
        patient's glucose twin now under a given future: `carbs_g` and `insulin_u` (T,)
        eaten and delivered at the start of each of T steps of `step_min`, insulin on top of
        the usual basal (negative for less, down to none at all; see `glucose_whatif`). The
        arguments are not modified. NotFoundError if the patient is unknown, ConflictError if
        the twin has no glucose data yet, InvalidInputError for arguments out of range."""
        carbs = np.array(carbs_g, dtype=np.float64).reshape(-1)      # copies: callers keep theirs
        insulin = np.array(insulin_u, dtype=np.float64).reshape(-1)
        if carbs.shape != insulin.shape or carbs.size == 0 or carbs.size > MAX_WHATIF_STEPS:
            raise InvalidInputError(f"pipeline: a what-if needs 1 to {MAX_WHATIF_STEPS} steps of "
                                    "carbs and insulin of equal length")
        if not (np.isfinite(carbs).all() and np.isfinite(insulin).all() and (carbs >= 0).all()):
            raise InvalidInputError("pipeline: what-if carbs must be >= 0 and carbs and insulin "
                                    "finite")
        if not (np.isfinite(step_min) and 0 < step_min <= 60):
            raise InvalidInputError("pipeline: the what-if step must be 0 to 60 minutes")
        with self._lock:
            rows = np.array([self._row_of(patient_id)], np.intp)
            g = self.twin.glucose_rows(rows)
            params = self.twin.glucose_params(rows)
        if g.time_ms[0] == NO_TIME:
            raise ConflictError(f"pipeline: patient {patient_id!r} has no glucose data yet; "
                                "a what-if starts from the glucose twin")
        if (insulin < -basal_infusion_rate(params)[0] * step_min * (1.0 + 1e-9)).any():
            raise InvalidInputError("pipeline: what-if insulin is on top of the usual basal: it "
                                    "cannot be lower than no insulin at all (minus the basal)")
        carbs[0] += g.carbs_g[0]
        insulin[0] += g.insulin_u[0]
        mean, low, high = glucose_whatif(params, GlucoseFilterState(g.mean, g.cov), step_min,
                                         carbs[np.newaxis], insulin[np.newaxis],
                                         self.twin.glucose_noise, interstitial=True)
        start = int(g.time_ms[0])
        times = start + np.round(np.arange(1, carbs.size + 1) * step_min * 60_000).astype(
            np.int64)
        return WhatIf(patient_id, start, times, mean[0], low[0], high[0])

    def personalize(self, patient_ids: Sequence[str] | None = None,
                    days: float = PERSONALIZE_DAYS, progress: Any = None) -> list[Personalized]:
        """Identify the glucose twin's parameters of some patients (default: all) from their
        last `days` of stored CGM, carbohydrate and insulin data, log them (encrypted) and
        use them from now on. Patients without CGM data are skipped. Re-identify as data
        accumulate by calling it again; restart and `verify` replay the logged parameters.

        The data are read under the pipeline's lock, identified without it (ingestion goes
        on), then logged and applied under it. `progress` wraps the list of patients (e.g. a
        progress bar)."""
        if not (math.isfinite(days) and 0 < days <= 30):
            raise InvalidInputError("pipeline: personalize from 0 to 30 days of data")
        with self._lock:
            chosen = sorted(self._wrapped) if patient_ids is None else list(patient_ids)
            for patient_id in chosen:
                self._row_of(patient_id)
            histories = {p: self._glucose_history(p, days) for p in chosen}
        found = [(p, h) for p, h in histories.items() if h is not None]
        identified = [(p, h, identify_history(h))
                      for p, h in (progress(found) if progress is not None else found)]
        with self._lock:
            now = self.clock()
            tree = self._tree.copy()
            records: list[TwinParamsRecord] = []
            leaves: list[tuple[int, str, bytes]] = []
            results: list[Personalized] = []
            for patient_id, history, result in identified:
                values = [float(np.asarray(f)[0]) for f in result.params]
                index = tree.size
                envelope = self.keyring.seal(
                    patient_id, self._wrapped[patient_id],
                    encode_params(GlucoseParams._fields, values),
                    twin_params_aad(index, patient_id))
                record = TwinParamsRecord(index, patient_id, GLUCOSE_MODEL, now, envelope)
                h = record_leaf_hash(record)
                tree.append_hash(h)
                records.append(record)
                leaves.append((index, record.kind, h))
                results.append(Personalized(
                    patient_id, index, dict(zip(result.names, (
                        float(np.asarray(getattr(result.params, m))[0]) for m in result.names),
                        strict=True)),
                    dict(zip(result.names, (float(u) for u in result.uncertainty[0]),
                             strict=True)),
                    int(np.isfinite(history.cgm).sum())))
            if not records:
                return []
            self.store.commit(Commit((), (), (), tuple(leaves), self._sign_head(tree, now), {},
                                     twin_params=tuple(records)))
            self._tree = tree
            for record in records:
                self._apply_params(record)
            return results

    def _glucose_history(self, patient_id: str, days: float) -> GlucoseHistory | None:
        """The patient's last `days` of glucose, carbohydrate and insulin readings, gridded."""
        parts = [self._open_readings(r) for r in self.store.packets(patient_id)]
        if not parts:
            return None
        channel = np.concatenate([b.channel for b in parts])
        value = np.concatenate([b.value for b in parts])
        time_ms = np.concatenate([b.time_ms for b in parts])
        cgm = channel == Channel.GLUCOSE
        if not cgm.any():
            return None
        end = int(time_ms[cgm].max())
        keep = time_ms >= end - int(days * 86_400_000)
        return grid_glucose_history(np.full(int(keep.sum()), patient_id), time_ms[keep],
                                    channel[keep], value[keep], PERSONALIZE_STEP_MIN,
                                    end_ms=end)

    def _apply_params(self, record: TwinParamsRecord) -> None:
        """Make logged twin parameters current."""
        values = decode_params(self.keyring.open(
            record.patient_id, self._wrapped[record.patient_id], record.envelope,
            twin_params_aad(record.leaf_index, record.patient_id)))
        row = np.array([self.twin.row(record.patient_id)], np.intp)
        self.twin.set_glucose_params(row, GlucoseParams(
            *(np.array([values[name]]) for name in GlucoseParams._fields)))

    def _row_of(self, patient_id: str) -> int:
        self._check_readable(patient_id)
        return self.twin.row(patient_id)

    def _check_readable(self, patient_id: str) -> None:
        """PatientErasedError if the patient was erased, NotFoundError if never registered."""
        self._check_not_erased(patient_id)
        if patient_id not in self._wrapped:
            raise NotFoundError(f"pipeline: unknown patient {patient_id!r}")

    def _check_not_erased(self, patient_id: str) -> None:
        """PatientErasedError if the patient was erased: their records cannot be read."""
        if patient_id in self._erased:
            raise PatientErasedError(f"pipeline: patient {patient_id!r} was erased; their data "
                                     "keys are destroyed and their records cannot be read")

    def alerts(self, patient_id: str | None = None, limit: int = 100) -> list[Alert]:
        """Recent alerts, newest first, decrypted for an authorised reader (erased patients'
        are left out; asking for one raises PatientErasedError)."""
        with self._lock:
            if patient_id is not None:
                self._check_not_erased(patient_id)
            return [
                decode_alert(self.keyring.open(r.patient_id, self._wrapped[r.patient_id],
                                               r.envelope, alert_aad(r.leaf_index, r.patient_id)),
                             r.patient_id, r.rule, r.severity, r.time_ms)
                for r in self.store.alerts(patient_id, limit) if r.patient_id not in self._erased
            ]

    def tree_size(self) -> int:
        with self._lock:
            return self._tree.size

    def _states_of(self, rows: npt.NDArray[np.intp], now: int) -> list[TwinState]:
        """The twins of some patients as a reader should see them at `now` (see
        `_state_of`), their glucose and vitals forecasts computed in one batch each."""
        if rows.size == 0:
            return []
        g_mean, g_low, g_high = self.twin.glucose_forecast(rows, FORECAST_HORIZONS_MIN)
        g_issued = self.twin.glucose_rows(rows).time_ms
        v_mean, v_low, v_high = self.twin.vitals_forecast(rows, FORECAST_HORIZONS_MIN)
        v_issued = self.twin.vitals_rows(rows).time_ms
        limit = STALE_AFTER_S * 1000

        def forecasts(k: int, issued: int, channels: Sequence[Channel],
                      mean: npt.NDArray[np.float64], low: npt.NDArray[np.float64],
                      high: npt.NDArray[np.float64]) -> list[Forecast]:
            if issued == NO_TIME or now - issued > limit:
                return []
            return [Forecast(c, issued, issued + round(h * 60_000), float(mean[k, j, i]),
                             float(low[k, j, i]), float(high[k, j, i]))
                    for i, c in enumerate(channels)
                    for j, h in enumerate(FORECAST_HORIZONS_MIN)]

        states = []
        for k, row in enumerate(rows):
            shown = forecasts(k, int(g_issued[k]), (Channel.GLUCOSE,), g_mean[:, :, None],
                              g_low[:, :, None], g_high[:, :, None])
            shown += forecasts(k, int(v_issued[k]), VITALS_OBSERVED_CHANNELS, v_mean, v_low,
                               v_high)
            states.append(self._state_of(int(row), now, tuple(shown)))
        return states

    def _state_of(self, row: int, now: int, forecasts: tuple[Forecast, ...]) -> TwinState:
        """The twin as a reader should see it at `now`: values older than the rules'
        staleness limit (by the site clock) no longer count for NEWS2, a rule whose
        evidence is all stale is not shown as active, and stale glucose gives no forecast."""
        rows = np.array([row], dtype=np.intp)
        state = self.twin.rows_state(rows)
        ages = self.twin.ages_s(rows, now)[0]
        current = ages <= STALE_AFTER_S
        fresh = np.where(current, state.estimate, np.nan)
        score = news2_from_estimates(fresh)
        risk = int(news2_risk(score)[0])
        bands = self._bands_now(rows, now)
        held = self.guard.held_channels(self.twin.patient_ids()[row])
        channels = tuple(
            ChannelState(c, float(state.last_value[0, c]), float(state.estimate[0, c]),
                         float(ages[c]), *bands.get(c, (math.nan, math.nan)), c in held)
            for c in Channel if state.last_time_ms[0, c] != NO_TIME
        )
        active = self._active[row] if row < self._active.shape[0] else np.zeros(N_RULES, bool)
        shown = tuple(RULES[i].name for i in np.flatnonzero(active)
                      if current[list(RULES[i].channels)].any())
        return TwinState(self.twin.patient_ids()[row], now, channels, int(score.total[0]),
                         bool(score.complete[0]), RISK_NAMES[risk], shown, forecasts)

    def _bands_now(self, rows: npt.NDArray[np.intp], now: int
                   ) -> dict[Channel, tuple[float, float]]:
        """The model twins' 95 % intervals of each channel at `now` for one patient: their
        prediction from the last reading they took, so the interval widens while none moves
        them (a quarantined device, a silent sensor)."""
        bands: dict[Channel, tuple[float, float]] = {}
        g_time = int(self.twin.glucose_rows(rows).time_ms[0])
        if g_time != NO_TIME:
            h = min(max(now - g_time, 0) / 60_000, MAX_BAND_MIN)
            _, low, high = self.twin.glucose_forecast(rows, (h,))
            bands[Channel.GLUCOSE] = (float(low[0, 0]), float(high[0, 0]))
        v_time = int(self.twin.vitals_rows(rows).time_ms[0])
        if v_time != NO_TIME:
            h = min(max(now - v_time, 0) / 60_000, MAX_BAND_MIN)
            _, low, high = self.twin.vitals_forecast(rows, (h,))
            for i, c in enumerate(VITALS_OBSERVED_CHANNELS):
                bands[c] = (float(low[0, 0, i]), float(high[0, 0, i]))
        return bands

    def _rebuild_twin(self, check: bool = False) -> ReplayReport:
        """Replay the stored packets, batch by batch as they were processed, with the twin
        parameters and device statuses where they were logged, so a restart resumes with
        exactly the twin, guard and rule state the site had. Erased patients' packets cannot
        be opened: they are skipped and counted in `replay_skipped`. With `check`, every
        logged snapshot is compared with the replayed twins at its place in the log, and
        every logged alert with the alerts the replayed batches raise (the evil-twin check)."""
        for patient_id in self._wrapped:
            self.twin.row(patient_id)
        params = (p for p in self.store.twin_params() if p.patient_id not in self._erased)
        batches = ((index, list(records)) for index, records in
                   itertools.groupby(self.store.packets(), key=lambda r: r.batch_index))
        events: list[Any] = [((p.leaf_index, 1), p) for p in params]
        events += [((r.leaf_index, 1), r) for r in self.store.registrations()]
        events += [((s.leaf_index, 0), s) for s in (self.store.snapshots() if check else ())]
        mismatches: list[str] = []
        replayed_alerts: list[tuple[int, tuple[str, str, str, int]]] = []
        replayed_batches: list[int] = []
        n_batches = 0
        for _, item in heapq.merge(sorted(events, key=lambda e: e[0]),
                                   (((b, 1), (b, recs)) for b, recs in batches),
                                   key=lambda e: e[0]):
            if isinstance(item, TwinParamsRecord):
                self._apply_params(item)
            elif isinstance(item, RegistrationRecord):
                self._replay_status(item)
            elif isinstance(item, SnapshotRecord):
                mismatches += self._compare_snapshot(item)
            else:
                batch_index, stored = item
                batch = [r for r in stored if r.patient_id not in self._erased]
                self.replay_skipped += len(stored) - len(batch)
                if not batch:
                    continue
                n_batches += 1
                replayed_batches.append(batch_index)
                packets = [Packet(r.device_id, r.patient_id, r.seq, r.sent_at_ms,
                                  self._open_readings(r), Provenance(r.provenance))
                           for r in batch]
                step = self._advance(packets, self._stored_meta(batch))
                self.twin.apply(step.update)
                self.guard.apply(step.screen, step.judgement, step.behaviour,
                                 list(step.quarantined), step.held)
                self._active[step.update.rows] = step.active
                if check:
                    replayed_alerts += [(batch_index, (a.patient_id, a.rule,
                                                       a.severity.value, a.time_ms))
                                        for a in step.alerts]
        if not check:
            return ReplayReport(n_batches, 0, 0, ())
        logged = [a for a in self.store.alert_records() if a.patient_id not in self._erased]
        mismatches += _compare_alerts(logged, replayed_batches, replayed_alerts)
        return ReplayReport(n_batches, sum(isinstance(e[1], SnapshotRecord) for e in events),
                            len(logged), tuple(mismatches))

    def _compare_snapshot(self, snapshot: SnapshotRecord) -> list[str]:
        """Where the replayed twins differ from a logged snapshot (erased patients aside)."""
        logged = {p: d for p, d in json.loads(snapshot.digests) if p not in self._erased}
        now = dict(json.loads(self._digests()))
        # the replay holds a row for every patient from the start; one registered after this
        # snapshot is absent from it, and must still be an untouched twin here
        fresh = TwinBank()
        untouched = {p for p in set(now) - set(logged)
                     if fresh.digest_of_new(p).hex() == now[p]}
        differ = sorted(p for p in set(logged) | set(now) - untouched
                        if logged.get(p) != now.get(p))
        if not differ:
            return []
        return [f"{snapshot.describe()}: the twin of {len(differ)} patient(s) (first "
                f"{differ[0]!r}) is not what the logged inputs imply"]

    def _replay_status(self, record: RegistrationRecord) -> None:
        source = np.array([self.guard.source(record.patient_id, record.device_id)], np.intp)
        self.guard.set_blocked(source, record.status == DeviceStatus.QUARANTINED.value)

    def _stored_meta(self, batch: Sequence[PacketRecord]) -> PacketMeta:
        """Behaviour metadata of a stored batch's device-signed packets."""
        signed = [(k, r) for k, r in enumerate(batch)
                  if r.provenance == Provenance.DEVICE_SIGNED.value]
        index = np.array([k for k, _ in signed], np.intp)
        return PacketMeta(
            index, index,
            np.array([self.guard.source(r.patient_id, r.device_id) for _, r in signed], np.intp),
            np.array([r.received_at_ms for _, r in signed], np.int64),
            np.array([r.sent_at_ms for _, r in signed], np.int64),
            np.array([r.seq for _, r in signed], np.int64),
            np.array([r.n_readings for _, r in signed], np.int64))

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
                             "low": _num(c.low), "high": _num(c.high), "held": c.held,
                             "age_s": _num(c.age_s)}
            for c in state.channels
        },
        "news2": {"total": state.news2, "complete": state.news2_complete,
                  "risk": state.news2_risk},
        "active_alerts": list(state.active_rules),
        "forecasts": [forecast_json(f) for f in state.forecasts],
    }


def forecast_json(forecast: Forecast) -> dict[str, Any]:
    """A forecast as JSON: the channel's code and unit, when it was issued and for when."""
    return {"code": forecast.channel.code, "unit": forecast.channel.ucum,
            "issued_ms": forecast.issued_ms, "target_ms": forecast.target_ms,
            "horizon_min": round((forecast.target_ms - forecast.issued_ms) / 60_000, 3),
            "mean": _num(forecast.mean), "low": _num(forecast.low), "high": _num(forecast.high)}


def whatif_json(result: WhatIf) -> dict[str, Any]:
    """A what-if trajectory as JSON (the glucose channel's quantity, mg/dL, with its 95 %
    interval)."""
    return {"patient_id": result.patient_id, "start_ms": result.start_ms,
            "code": Channel.GLUCOSE.code, "unit": "mg/dL",
            "points": [{"time_ms": int(t), "mean": _num(m), "low": _num(lo), "high": _num(hi)}
                       for t, m, lo, hi in zip(result.time_ms, result.mean, result.low,
                                               result.high, strict=True)]}


def finding_json(finding: Finding) -> dict[str, Any]:
    """A guard finding as JSON for the API and the live stream."""
    return {"patient_id": finding.patient_id, "device_id": finding.device_id,
            "code": finding.code.value,
            "channel": None if finding.channel is None else finding.channel.code,
            "confidence": round(finding.confidence, 3), "time_ms": finding.time_ms,
            "since_ms": finding.since_ms, "detector": finding.detector,
            "summary": finding.summary, "evidence": finding.evidence,
            "quarantined": finding.quarantined}


def _widen(update: TwinUpdate, used: npt.NDArray[np.intp], n: int) -> TwinUpdate:
    """A twin update proposed from readings `used` of a batch of `n`, with its per-reading
    results spread back over all `n` (NaN, or `NO_TIME`, for readings held out)."""
    if used.size == n:
        return update

    def spread(x: npt.NDArray[Any]) -> npt.NDArray[Any]:
        fill = NO_TIME if x.dtype.kind == "i" else np.nan
        out = np.full((n, *x.shape[1:]), fill, dtype=x.dtype)
        out[used] = x
        return out

    g = update.glucose
    return replace(update, estimate=spread(update.estimate),
                   innovation=spread(update.innovation),
                   innovation_var=spread(update.innovation_var),
                   glucose=g._replace(readings=GlucoseReadings(*(spread(f)
                                                                 for f in g.readings))))


def alert_json(alert: Alert) -> dict[str, Any]:
    return {"patient_id": alert.patient_id, "rule": alert.rule, "severity": alert.severity.value,
            "time_ms": alert.time_ms, "summary": alert.summary, "evidence": alert.evidence}


def _num(x: float) -> float | None:
    return None if np.isnan(x) else round(x, 2)


#: Longest reason an administrative action may log: the log is permanent (an erasure's too),
#: so a reason names a ticket and grounds, never a person's details.
MAX_REASON_LENGTH = 500


def _check_reason(reason: str, action: str, what: str) -> None:
    """InvalidInputError unless `reason` is given and short enough for the permanent log."""
    if not reason.strip():
        raise InvalidInputError(f"pipeline: {action} needs a reason ({what}), for the audit "
                                "log")
    if len(reason) > MAX_REASON_LENGTH:
        raise InvalidInputError(f"pipeline: a reason for {action} is at most "
                                f"{MAX_REASON_LENGTH} characters (it stays in the log for good: "
                                "give a ticket number and the grounds, no personal details)")


def _compare_alerts(logged: Sequence[AlertRecord], batches: Sequence[int],
                    replayed: Sequence[tuple[int, tuple[str, str, str, int]]]) -> list[str]:
    """Alerts logged that the replayed batches did not raise, and the reverse: each logged
    alert belongs to the last replayed batch that starts before it (so an alert logged in a
    later batch than the one that raised it, held back, is a mismatch too)."""
    starts = sorted(set(batches) | {0})
    by_batch: dict[int, list[tuple[str, str, str, int]]] = {}
    for b, key in replayed:
        by_batch.setdefault(b, []).append(key)
    out = []
    for record in logged:
        b = starts[bisect.bisect_right(starts, record.leaf_index) - 1]
        key = (record.patient_id, record.rule, record.severity, record.time_ms)
        if key in by_batch.get(b, []):
            by_batch[b].remove(key)
        else:
            out.append(f"{record.describe()}: the logged inputs do not raise this alert")
    for b, keys in sorted(by_batch.items()):
        out += [f"the batch at #{b} raises a {rule} alert the log lacks" for _, rule, _, _ in keys]
    return out
