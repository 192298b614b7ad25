"""The guard over a site's streams: screen readings before the twin, test the twin's
innovations after it, classify what fired, and decide who is quarantined.

A *source* is one device of one patient (a registered device, or an import's source name for
one patient); a *stream* is one measured channel of a source. Per batch the pipeline calls:

1. `GuardBank.screen`: pattern detectors (frozen, replayed segment, noise burst, impossible
   rate, conflicting timestamps) and cross-device agreement on the raw values, over each
   touched stream's recent history and the batch. A reading that trips one is *held*: stored
   and logged, but it does not move the twin. Readings of blocked (quarantined) sources are
   held too.
2. the twin proposes its update from the readings not held;
3. `GuardBank.judge`: windowed chi-square and CUSUM tests on the twin's innovations, the
   classification of every alarm (`FindingCode`) with a confidence, and per source whether
   it is now blocked. A residual run that moves towards clinical danger, or sits outside a
   reassuring range, is taken for physiology: no finding, never held, never a reason to
   quarantine, so a real fall into hypoglycaemia reaches the clinical rules;
4. `GuardBank.behaviour`: device-behaviour intrusion detection on signed packets' metadata.

Everything is batched: per reading and per packet as array passes, Python loops only over
the few findings raised (their words come from `_explain`). State is proposed, then applied
when the batch is durable; results do not depend on how readings were cut into batches (up
to `REPEAT_MS` de-duplication of findings, which is by data time).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from medtwin.domain import COMPROMISE_CODES, N_CHANNELS, Channel, Finding, FindingCode
from medtwin.estimation import NO_TIME, linear_recurrence, segment_starts, segmented_cummax
from medtwin.guard._behaviour import (
    BehaviourResult,
    BehaviourState,
    Feature,
    behaviour_state,
    behaviour_step,
    grow_behaviour_state,
)
from medtwin.guard._consistency import (
    Agreement,
    Coherence,
    device_agreement,
    physiological_coherence,
)
from medtwin.guard._explain import (
    AGREEMENT_NAME,
    BEHAVIOUR_NAME,
    COHERENCE_NAME,
    DUPLICATE_NAME,
    FROZEN_NAME,
    JUMP_NAME,
    NOISE_NAME,
    RATE_NAME,
    REPLAY_NAME,
    RESIDUAL_NAME,
    explain_behaviour,
    explain_residual,
    explain_screen,
)
from medtwin.guard._patterns import (
    frozen_values,
    impossible_rates,
    level_jumps,
    noise_bursts,
    per_channel,
    replayed_segments,
    timestamp_games,
)
from medtwin.guard._residuals import (
    WINDOW_READINGS,
    CusumState,
    WindowState,
    cusum_state,
    cusum_test,
    window_state,
    window_test,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
Index = npt.NDArray[np.intp]

#: Readings of each stream kept for the pattern detectors: 12 h of one-minute vitals (a
#: replayed hour from up to 6 h back is still in view), 2.5 days of 5-minute CGM.
HISTORY = 720
#: A stream raises one detector's finding at most once per this much data time.
REPEAT_MS = 30 * 60_000
#: Innovations are judged against their stream's running mean NIS (weight per reading: about
#: the last 100 readings, 8 h of 5-min CGM), each NIS capped at 25 (5 SD) in that mean.
SCALE_WEIGHT = 0.01
NIS_SCALE_CAP = 25.0
#: A residual run is called spoofing only once its window test has fired without a break for
#: this long (data time) and for twice its window of readings (one burst keeps a window's
#: sum high for a window), with the CUSUM firing too: a stretch the model briefly does not
#: follow (an activity bout, the onset of an offset the twin's sensor state then absorbs) is
#: not. (Timing the CUSUM's excursion instead let a bout on top of a long, sub-threshold
#: excursion count: 1.6 false findings per patient-week on clean simulated vitals.)
SUSTAINED_MS = 30 * 60_000
SUSTAINED_READINGS = 2 * WINDOW_READINGS
#: A finding of a `COMPROMISE_CODES` code at least this confident quarantines its source.
QUARANTINE_CONFIDENCE = 0.9


#: Below these values a reading lower than the twin expected is heading towards clinical
#: danger (hypoglycaemia, bradycardia, hypoxaemia, bradypnoea, hypotension, hypothermia) ...
DANGER_BELOW = per_channel({
    Channel.GLUCOSE: 180.0, Channel.HEART_RATE: 60.0, Channel.SPO2: 97.0,
    Channel.RESP_RATE: 12.0, Channel.SYSTOLIC_BP: 110.0, Channel.DIASTOLIC_BP: 60.0,
    Channel.TEMPERATURE: 36.0}, -np.inf)
#: ... and above these, a reading higher than expected is (hyperglycaemia, tachycardia,
#: tachypnoea, hypertension, fever). Such a change is never called spoofing on residual
#: evidence alone: a real deterioration must reach the clinical rules.
DANGER_ABOVE = per_channel({
    Channel.GLUCOSE: 250.0, Channel.HEART_RATE: 90.0, Channel.RESP_RATE: 20.0,
    Channel.SYSTOLIC_BP: 160.0, Channel.DIASTOLIC_BP: 100.0, Channel.TEMPERATURE: 37.5},
    np.inf)
#: A residual alarm is called spoofing only when the reading looks reassuring: inside these
#: ranges (a value outside them alerts clinically whatever the guard thinks) and not heading
#: towards danger. A sick patient's course that the model does not follow is not spoofing.
NORMAL_LOW = per_channel({
    Channel.GLUCOSE: 70.0, Channel.HEART_RATE: 50.0, Channel.SPO2: 92.0,
    Channel.RESP_RATE: 9.0, Channel.SYSTOLIC_BP: 100.0, Channel.DIASTOLIC_BP: 50.0,
    Channel.TEMPERATURE: 35.5}, -np.inf)
NORMAL_HIGH = per_channel({
    Channel.GLUCOSE: 180.0, Channel.HEART_RATE: 110.0, Channel.RESP_RATE: 20.0,
    Channel.SYSTOLIC_BP: 200.0, Channel.DIASTOLIC_BP: 110.0, Channel.TEMPERATURE: 38.5},
    np.inf)


class Detector(NamedTuple):
    """How one detector's alarm is classified: its code, confidence, and whether the
    readings it fires on are held out of the twin."""

    name: str
    code: FindingCode
    confidence: float
    holds: bool

    @property
    def convicts(self) -> bool:
        """Whether its finding quarantines the source: a compromise code, confident."""
        return self.code in COMPROMISE_CODES and self.confidence >= QUARANTINE_CONFIDENCE


REPLAY = Detector(REPLAY_NAME, FindingCode.REPLAY, 0.99, True)
OUTLIER = Detector(AGREEMENT_NAME, FindingCode.SPOOFING_SUSPECTED, 0.95, True)
DISPUTED = Detector(AGREEMENT_NAME, FindingCode.SPOOFING_SUSPECTED, 0.6, False)
DUPLICATE = Detector(DUPLICATE_NAME, FindingCode.SPOOFING_SUSPECTED, 0.8, True)
FROZEN = Detector(FROZEN_NAME, FindingCode.SENSOR_FAULT, 0.9, True)
NOISE = Detector(NOISE_NAME, FindingCode.SENSOR_FAULT, 0.9, True)
RATE = Detector(RATE_NAME, FindingCode.SENSOR_FAULT, 0.9, True)
JUMP = Detector(JUMP_NAME, FindingCode.SENSOR_FAULT, 0.9, True)
#: a step in a vital sign is a probe's offset or a sudden change in the patient (an
#: arrhythmia's onset steps heart rate too): shown, never held, the clinical rules judge it
STEP = Detector(JUMP_NAME, FindingCode.SENSOR_FAULT, 0.6, False)
#: channels whose level jumps are not physiology, so `JUMP` holds them; `STEP` elsewhere
JUMP_HELD_CHANNELS = (Channel.GLUCOSE,)
#: a step to or from the sensor's LOW that only the smaller at-LOW threshold catches: a
#: compression low, a recovering sensor or data pushed to LOW; shown, never held, so a LOW
#: reading always reaches the clinical rules
LOW_STEP = Detector(JUMP_NAME, FindingCode.SENSOR_FAULT, 0.7, False)
#: a vital sign far from the patient's usual while the channels that would respond do not:
#: more often a displaced probe than a lie, and never held (NEWS2 alerts on it regardless)
INCOHERENT = Detector(COHERENCE_NAME, FindingCode.SENSOR_FAULT, 0.7, False)
#: screening detectors, strongest first: a reading is explained by the first that fired
SCREENS = (REPLAY, OUTLIER, DUPLICATE, FROZEN, NOISE, RATE, JUMP, DISPUTED, STEP, LOW_STEP,
           INCOHERENT)
_FROZEN_INDEX = SCREENS.index(FROZEN)
#: Residual evidence alone never quarantines: a model that does not follow a patient's real
#: course (a recovery, a deterioration) looks the same to it as masking data does. Only
#: positive signs of manipulation (a replay, a device the others outvote, device behaviour)
#: convict a source.
RESIDUAL_BOTH = Detector(RESIDUAL_NAME, FindingCode.SPOOFING_SUSPECTED, 0.8, False)
#: Findings on a stream are de-duplicated per detector, so a weak finding (a two-device
#: dispute, a vital sign's step) never silences a stronger one of the same code (an outvoted
#: device, a frozen value) for `REPEAT_MS`.
_DEDUP_INDEX = {d: i for i, d in enumerate((*SCREENS, RESIDUAL_BOTH))}
#: behaviour rules need no learning; learned features fire on a z beyond their threshold
BEHAVIOUR_RULE = Detector(BEHAVIOUR_NAME, FindingCode.DEVICE_BEHAVIOUR, 0.95, False)
BEHAVIOUR_LEARNED = Detector(BEHAVIOUR_NAME, FindingCode.DEVICE_BEHAVIOUR, 0.8, False)


class GuardState(NamedTuple):
    """Per stream (source * N_CHANNELS + channel): the recent history, oldest first
    (`hist_count` valid values left-aligned), the time of its latest reading and whether that
    was held, the level of its current residual episode (0 none, 1 the patient's own course,
    2 spoofing suspected), since when and for how many readings its window test has fired
    without a break (`NO_TIME`, 0: it does not), the running scale of its innovations
    (`SCALE_WEIGHT`), the tests' state, and when each detector last raised a finding; per
    source: blocked, behaviour state and when it last raised a behaviour finding.
    """

    hist_time: IntArray
    hist_value: FloatArray
    hist_count: IntArray
    last_time: IntArray
    last_held: BoolArray
    episode_level: npt.NDArray[np.int8]
    window_since: IntArray
    window_run: IntArray
    nis_scale: FloatArray
    window: WindowState
    cusum: CusumState
    last_raised: IntArray
    blocked: BoolArray
    behaviour: BehaviourState
    behaviour_raised: IntArray


def guard_state(n_sources: int) -> GuardState:
    """State for `n_sources` sources that have sent nothing."""
    n = n_sources * N_CHANNELS
    return GuardState(np.zeros((n, HISTORY), np.int64), np.zeros((n, HISTORY)),
                      np.zeros(n, np.int64), np.full(n, NO_TIME, np.int64), np.zeros(n, bool),
                      np.zeros(n, np.int8), np.full(n, NO_TIME, np.int64),
                      np.zeros(n, np.int64), np.ones(n),
                      window_state(n), cusum_state(n),
                      np.full((n, len(_DEDUP_INDEX)), NO_TIME, np.int64),
                      np.zeros(n_sources, bool),
                      behaviour_state(n_sources), np.full((n_sources, 2), NO_TIME, np.int64))


def _grow(state: GuardState, n_sources: int) -> GuardState:
    fresh = guard_state(n_sources)
    old = state.blocked.shape[0]
    k = old * N_CHANNELS

    def put(new: npt.NDArray[Any], cur: npt.NDArray[Any], rows: int) -> npt.NDArray[Any]:
        new[:rows] = cur
        return new

    return GuardState(
        put(fresh.hist_time, state.hist_time, k), put(fresh.hist_value, state.hist_value, k),
        put(fresh.hist_count, state.hist_count, k), put(fresh.last_time, state.last_time, k),
        put(fresh.last_held, state.last_held, k), put(fresh.episode_level, state.episode_level, k),
        put(fresh.window_since, state.window_since, k), put(fresh.window_run, state.window_run, k),
        put(fresh.nis_scale, state.nis_scale, k),
        WindowState(put(fresh.window.recent, state.window.recent, k)),
        CusumState(*(put(f, c, k) for f, c in zip(fresh.cusum, state.cusum, strict=True))),
        put(fresh.last_raised, state.last_raised, k), put(fresh.blocked, state.blocked, old),
        grow_behaviour_state(state.behaviour, n_sources),
        put(fresh.behaviour_raised, state.behaviour_raised, old))


@dataclass(frozen=True, slots=True)
class Draft:
    """A finding before it is tied to a patient and a device name: `reading` indexes the
    batch's readings (or `packet` its packets, -1 if none)."""

    source: int
    reading: int
    packet: int
    detector: Detector
    channel: Channel | None
    time_ms: int
    since_ms: int
    summary: str
    evidence: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Screen:
    """`GuardBank.screen`'s proposal for a batch of readings: which are held, why (index into
    `SCREENS`, -1 for none, per reading) and the touched streams' new history."""

    stream: Index
    time_ms: IntArray
    held: BoolArray
    fired: npt.NDArray[np.int8]
    drafts: tuple[Draft, ...]
    rows: Index
    hist_time: IntArray
    hist_value: FloatArray
    hist_count: IntArray


@dataclass(frozen=True, slots=True)
class Judgement:
    """`GuardBank.judge`'s proposal: the findings drafted (screen's and the residual tests'),
    sources newly blocked, whether each tested stream ends the batch in residual alarm, and
    the new residual-test and de-duplication state."""

    drafts: tuple[Draft, ...]
    newly_blocked: Index
    alarm_streams: Index
    level_after: npt.NDArray[np.int8]
    window_since_after: IntArray
    window_run_after: IntArray
    scale_after: FloatArray
    window: WindowState
    cusum: CusumState
    last_raised: IntArray


class GuardBank:
    """The guard's state for every source of a site, grown as sources appear."""

    def __init__(self) -> None:
        self._sources: dict[tuple[str, str], int] = {}
        self._names: list[tuple[str, str]] = []
        self._patients: dict[str, int] = {}
        self._patient_of = np.zeros(16, np.int64)
        self._state = guard_state(16)

    def source(self, patient_id: str, device_id: str) -> int:
        """The index of a patient's source `device_id`, adding it on first sight."""
        key = (patient_id, device_id)
        found = self._sources.get(key)
        if found is not None:
            return found
        index = len(self._sources)
        if index >= self._state.blocked.shape[0]:
            self._state = _grow(self._state, 2 * self._state.blocked.shape[0])
            grown = np.zeros(self._state.blocked.shape[0], np.int64)
            grown[:index] = self._patient_of[:index]
            self._patient_of = grown
        self._sources[key] = index
        self._names.append(key)
        self._patient_of[index] = self._patients.setdefault(patient_id, len(self._patients))
        return index

    def source_names(self) -> list[tuple[str, str]]:
        """(patient id, device id) of every source, by index."""
        return list(self._names)

    def blocked(self, sources: Index) -> BoolArray:
        """Whether each source is blocked (quarantined)."""
        return self._state.blocked[sources].copy()

    def set_blocked(self, sources: Index, blocked: bool) -> None:
        """Block or release sources (an admin's quarantine or release, or a replayed one). A
        released source's residual tests start afresh: its readings were not tested while it
        was blocked, so old evidence would judge new data."""
        st = self._state
        st.blocked[sources] = blocked
        if blocked:
            return
        streams = (np.asarray(sources, np.intp)[:, None] * N_CHANNELS
                   + np.arange(N_CHANNELS)).ravel()
        fresh_w, fresh_c = window_state(streams.size, st.window.recent.shape[1] + 1), \
            cusum_state(streams.size)
        st.window.recent[streams] = fresh_w.recent
        for current, new in zip(st.cusum, fresh_c, strict=True):
            current[streams] = new
        st.nis_scale[streams] = 1.0
        st.episode_level[streams] = 0
        st.window_since[streams] = NO_TIME
        st.window_run[streams] = 0

    # (1) before the twin ----------------------------------------------------------------

    def screen(self, source: Index, channel: npt.NDArray[np.int8], value: FloatArray,
               time_ms: IntArray) -> Screen:
        """Screen a batch of readings (in arrival order) on their raw values; pure."""
        st = self._state
        measured = ~np.isin(channel, [int(c) for c in Channel if c.is_input])
        stream = (source.astype(np.intp) * N_CHANNELS + channel.astype(np.intp))
        held = st.blocked[source].copy()          # a quarantined pump's doses too
        fired = np.full(value.shape[0], -1, np.int8)
        new = np.flatnonzero(measured)
        rows = np.unique(stream[new])
        if new.size == 0:
            empty = np.zeros((0, HISTORY))
            return Screen(stream, time_ms, held, fired, (), rows, empty.astype(np.int64),
                          empty, np.zeros(0, np.int64))
        # Each touched stream's history, then its new readings in arrival order.
        counts = st.hist_count[rows]
        h_stream = np.repeat(rows, counts)
        h_col = np.arange(h_stream.size) - np.repeat(np.cumsum(counts) - counts, counts)
        f_stream = np.concatenate([h_stream, stream[new]])
        f_time = np.concatenate([st.hist_time[h_stream, h_col], time_ms[new]])
        f_value = np.concatenate([st.hist_value[h_stream, h_col], value[new]])
        f_pos = np.concatenate([np.full(h_stream.size, -1, np.intp), new])
        order = np.lexsort((np.arange(f_stream.size), f_stream))
        f_stream, f_time, f_value, f_pos = (f_stream[order], f_time[order], f_value[order],
                                            f_pos[order])
        f_channel = (f_stream % N_CHANNELS).astype(np.int64)
        s64 = f_stream.astype(np.int64)
        alarms: dict[str, Any] = {
            REPLAY_NAME: replayed_segments(s64, f_time, f_value, f_channel),
            FROZEN_NAME: frozen_values(s64, f_time, f_value, f_channel),
            NOISE_NAME: noise_bursts(s64, f_time, f_value, f_channel),
            RATE_NAME: impossible_rates(s64, f_time, f_value, f_channel),
            JUMP_NAME: level_jumps(s64, f_time, f_value, f_channel),
        }
        stamps = timestamp_games(s64, f_time, f_value, f_channel)
        agree = _agreement(f_stream, f_time, f_value, f_channel, self._patient_of)
        is_new = f_pos >= 0
        coherence = _coherence(f_stream, f_time, f_value, f_channel, is_new, self._patient_of,
                               len(self._patients))
        fired_flat = np.full(f_stream.size, -1, np.int8)
        for k in range(len(SCREENS) - 1, -1, -1):      # strongest last: it wins
            det = SCREENS[k]
            if det is JUMP or det is STEP or det is LOW_STEP:
                jumps = alarms[JUMP_NAME]
                held_channel = np.isin(f_channel, [int(c) for c in JUMP_HELD_CHANNELS])
                hit = jumps.alarm & (jumps.at_low if det is LOW_STEP else ~jumps.at_low & (
                    held_channel if det is JUMP else ~held_channel))
            elif det.name in alarms:
                hit = alarms[det.name].alarm
            elif det is DUPLICATE:
                hit = stamps.duplicate
            elif det is INCOHERENT:
                hit = coherence.alarm
            else:
                hit = agree.status == (Agreement.OUTLIER if det is OUTLIER
                                       else Agreement.DISPUTED)
            fired_flat[hit & is_new] = k
        fired[f_pos[is_new]] = fired_flat[is_new]
        hold = np.array([d.holds for d in SCREENS])
        holds = (fired >= 0) & hold[np.maximum(fired, 0)]
        # A value stuck outside the reassuring range is shown, not held: were it real (a
        # patient resting at 86 % SpO2), holding it would let the clinical rules lose it.
        c = channel.astype(np.intp)
        reassuring = (value >= NORMAL_LOW[c]) & (value <= NORMAL_HIGH[c])
        held |= holds & ((fired != _FROZEN_INDEX) | reassuring)
        drafts = self._screen_drafts(f_stream, f_time, f_value, f_pos, fired_flat, alarms,
                                     agree, coherence)
        h_time, h_value, h_count = _keep_last(rows, f_stream, f_time, f_value)
        return Screen(stream, time_ms, held, fired, drafts, rows, h_time, h_value, h_count)

    def _screen_drafts(self, f_stream: Index, f_time: IntArray, f_value: FloatArray,
                       f_pos: Index, fired: npt.NDArray[np.int8], alarms: dict[str, Any],
                       agree: AgreementView, coherence: Coherence) -> tuple[Draft, ...]:
        """One draft per (stream, detector) that fired in the batch: its first reading."""
        # a quarantined source's readings are held already: no new findings about them
        hit = np.flatnonzero((fired >= 0) & ~self._state.blocked[f_stream // N_CHANNELS])
        if hit.size == 0:
            return ()
        key = f_stream[hit].astype(np.int64) * len(SCREENS) + fired[hit]
        _, first = np.unique(key, return_index=True)
        drafts = []
        for i in hit[first]:
            det = SCREENS[int(fired[i])]
            s = int(f_stream[i])
            ch = Channel(s % N_CHANNELS)
            t = int(f_time[i])
            since, summary, evidence = explain_screen(det.name, int(i), ch, float(f_value[i]),
                                                      t, alarms, agree, coherence)
            drafts.append(Draft(s // N_CHANNELS, int(f_pos[i]), -1, det, ch, t,
                                since if since != NO_TIME else t, summary, evidence))
        return tuple(drafts)

    # (3) after the twin -----------------------------------------------------------------

    def judge(self, screen: Screen, channel: npt.NDArray[np.int8], value: FloatArray,
              time_ms: IntArray, innovation: FloatArray, innovation_var: FloatArray,
              behaviour: Sequence[Draft] = ()) -> Judgement:
        """Residual tests on the innovations of the readings the twin used, classification,
        de-duplication (of `behaviour`'s drafts too) and quarantine; pure (the state moves
        on `apply`)."""
        st = self._state
        usable = (~screen.held & np.isfinite(innovation) & np.isfinite(innovation_var)
                  & (innovation_var > 0))
        idx = np.flatnonzero(usable)
        idx = idx[np.lexsort((idx, screen.stream[idx]))]
        stream = screen.stream[idx]
        # Self-normalized innovations: a twin whose innovations run wider than it believes
        # (a patient the model fits loosely) is judged against its own recent spread.
        var, scale_after = _scaled_variance(st.nis_scale, stream, innovation[idx],
                                            innovation_var[idx])
        win = window_test(st.window, stream, innovation[idx], var)
        cus = cusum_test(st.cusum, stream, time_ms[idx], innovation[idx], var)
        alarm = win.alarm | cus.alarm
        first = np.ones(stream.size, dtype=bool)
        first[1:] = stream[1:] != stream[:-1]
        window_since, window_run = _run_since(win.alarm, first, st.window_since[stream],
                                              st.window_run[stream], time_ms[idx])
        sustained = ((window_since != NO_TIME) & (time_ms[idx] - window_since >= SUSTAINED_MS)
                     & (window_run >= SUSTAINED_READINGS))
        level = _residual_level(alarm, win.alarm & cus.alarm & sustained, cus.alarm,
                                cus.direction, innovation[idx], value[idx],
                                channel[idx].astype(np.intp))
        # One finding per episode (a run of alarms) and level: at its onset, and again if it
        # escalates from the patient's own course to spoofing suspected.
        change = first.copy()
        change[1:] |= alarm[1:] != alarm[:-1]
        seg = np.maximum.accumulate(np.where(change, np.arange(stream.size), 0)).astype(np.intp)
        carried = np.where(first & alarm, st.episode_level[stream], 0).astype(np.int64)
        running = segmented_cummax(np.maximum(level, carried), seg)
        before = np.where(change, carried, np.roll(running, 1))
        rises = level > before
        last = np.ones(stream.size, dtype=bool)
        last[:-1] = stream[1:] != stream[:-1]
        drafts = list(screen.drafts)
        # A run the guard takes for the patient's own course (level 1) raises nothing: the
        # clinical rules alert on it; only an escalation to spoofing suspected is a finding.
        for j in np.flatnonzero(rises & (level == 2)):
            i = int(idx[j])
            drafts.append(_residual_draft(int(stream[j]), i, Channel(int(channel[i])),
                                          float(value[i]), int(time_ms[i]),
                                          float(innovation[i]), float(var[j]),
                                          win, cus, int(j)))
        kept, last_raised = _deduplicate([*drafts, *behaviour], st.last_raised,
                                         st.behaviour_raised)
        newly = sorted({d.source for d in kept
                        if d.detector.convicts and not st.blocked[d.source]})
        return Judgement(tuple(kept), np.array(newly, np.intp), stream[last],
                         np.where(alarm[last], running[last], 0).astype(np.int8),
                         window_since[last], window_run[last],
                         scale_after[last], win.state, cus.state, last_raised)

    # (4) device behaviour ---------------------------------------------------------------

    def behaviour(self, source: Index, arrival_ms: IntArray, send_ms: IntArray,
                  sequence: IntArray, payload: IntArray, signature_ok: BoolArray
                  ) -> tuple[BehaviourResult, tuple[Draft, ...]]:
        """Device-behaviour detection over a batch of signed packets (any order); pure."""
        result = behaviour_step(self._state.behaviour, source, arrival_ms, send_ms, sequence,
                                payload, signature_ok)
        drafts = []
        hit = np.flatnonzero(result.alarm)
        if hit.size:
            # per source, its first rule alarm (throttle, signatures, regression), else its
            # first learned one
            rule = result.finding[hit] >= Feature.SEQ_REGRESSION
            hit = hit[np.lexsort((hit, ~rule, source[hit]))]
            _, first = np.unique(source[hit], return_index=True)
            for k in hit[first]:
                feature = Feature(int(result.finding[k]))
                det = BEHAVIOUR_RULE if feature >= Feature.SEQ_REGRESSION else BEHAVIOUR_LEARNED
                since = int(result.since_ms[k])
                since = since if since != NO_TIME else int(arrival_ms[k])
                summary, evidence = explain_behaviour(
                    feature, float(result.observed[k]), float(result.expected[k]),
                    float(result.statistic[k]), float(result.threshold[k]), since)
                drafts.append(Draft(int(source[k]), -1, int(k), det, None, int(send_ms[k]),
                                    since, summary, evidence))
        return result, tuple(drafts)

    # Proposals become state ---------------------------------------------------------------

    def apply(self, screen: Screen, judgement: Judgement, behaviour: BehaviourState | None,
              quarantined: Sequence[int], held: BoolArray) -> None:
        """Make a batch's proposals current (after the batch is durable), blocking the
        sources its findings `quarantined`; `held` is which readings the twin did not take."""
        st = self._state
        if held.size:
            order = np.lexsort((screen.time_ms, screen.stream))
            last = np.ones(order.size, dtype=bool)
            last[:-1] = screen.stream[order[1:]] != screen.stream[order[:-1]]
            k = order[last]
            newer = screen.time_ms[k] >= st.last_time[screen.stream[k]]
            st.last_time[screen.stream[k[newer]]] = screen.time_ms[k[newer]]
            st.last_held[screen.stream[k[newer]]] = held[k[newer]]
        st.hist_time[screen.rows] = screen.hist_time
        st.hist_value[screen.rows] = screen.hist_value
        st.hist_count[screen.rows] = screen.hist_count
        st.blocked[np.array(sorted(quarantined), np.intp)] = True
        st.episode_level[judgement.alarm_streams] = judgement.level_after
        st.window_since[judgement.alarm_streams] = judgement.window_since_after
        st.window_run[judgement.alarm_streams] = judgement.window_run_after
        st.nis_scale[judgement.alarm_streams] = judgement.scale_after
        self._state = st._replace(
            window=judgement.window, cusum=judgement.cusum,
            last_raised=judgement.last_raised,
            behaviour=behaviour if behaviour is not None else st.behaviour,
            behaviour_raised=_behaviour_raised(st.behaviour_raised, judgement.drafts))

    def held_channels(self, patient_id: str) -> set[Channel]:
        """The channels whose latest reading for this patient (from any of their sources)
        was held from the twin."""
        patient = self._patients.get(patient_id)
        if patient is None:
            return set()
        sources = np.flatnonzero(self._patient_of[:len(self._sources)] == patient)
        if sources.size == 0:
            return set()
        streams = sources[:, None] * N_CHANNELS + np.arange(N_CHANNELS)
        times = self._state.last_time[streams]
        newest = np.argmax(times, axis=0)
        held = self._state.last_held[streams[newest, np.arange(N_CHANNELS)]]
        seen = times.max(axis=0) != NO_TIME
        return {Channel(int(c)) for c in np.flatnonzero(held & seen)}

    def finding(self, draft: Draft, quarantined: bool) -> Finding:
        """The finding a draft describes, named by patient and device."""
        patient_id, device_id = self._names[draft.source]
        evidence = dict(draft.evidence)
        evidence["detector"] = draft.detector.name
        return Finding(patient_id, device_id, draft.detector.code, draft.channel,
                       draft.detector.confidence, draft.time_ms, draft.since_ms,
                       draft.detector.name, draft.summary, evidence, quarantined)


class AgreementView(NamedTuple):
    """`device_agreement`'s evidence over a flattened batch (every channel at once)."""

    status: npt.NDArray[np.int8]
    since_ms: IntArray
    n_partners: IntArray
    n_disagree: IntArray
    consensus: FloatArray
    statistic: FloatArray
    threshold: FloatArray


def _agreement(stream: Index, time_ms: IntArray, value: FloatArray, channel: IntArray,
               patient_of_source: IntArray) -> AgreementView:
    """Device agreement per channel over the flattened history (UNPAIRED where a patient has
    one source for the channel); one call per channel present, batched over patients."""
    n = stream.shape[0]
    view = AgreementView(np.zeros(n, np.int8), np.full(n, NO_TIME, np.int64),
                         np.zeros(n, np.int64), np.zeros(n, np.int64), np.full(n, np.nan),
                         np.full(n, np.nan), np.full(n, np.nan))
    source = stream // N_CHANNELS
    patient = patient_of_source[source]
    for ch in np.unique(channel):
        rows = np.flatnonzero(channel == ch)
        pairs = np.unique(np.stack([patient[rows], source[rows]]), axis=1)
        if pairs.shape[1] == np.unique(pairs[0]).size:
            continue                        # no patient has two devices on this channel
        result = device_agreement(patient[rows].astype(np.int64),
                                  source[rows].astype(np.int64), time_ms[rows], value[rows],
                                  Channel(int(ch)))
        for name in AgreementView._fields:
            getattr(view, name)[rows] = getattr(result, name)
    return view


def _coherence(stream: Index, time_ms: IntArray, value: FloatArray, channel: IntArray,
               is_new: BoolArray, patient_of_source: IntArray, n_patients: int) -> Coherence:
    """Physiological coherence over the flattened batch, each patient's baseline per channel
    the median of its history before the batch (NaN where there is none)."""
    patient = patient_of_source[stream // N_CHANNELS]
    group = patient * N_CHANNELS + channel
    old = np.flatnonzero(~is_new)
    baseline = np.full(max(n_patients, 1) * N_CHANNELS, np.nan)
    if old.size:
        order = old[np.lexsort((value[old], group[old]))]
        groups, start, count = np.unique(group[order], return_index=True, return_counts=True)
        mid = 0.5 * (value[order[start + (count - 1) // 2]] + value[order[start + count // 2]])
        baseline[groups] = mid
    return physiological_coherence(patient, time_ms, channel, value,
                                   baseline.reshape(-1, N_CHANNELS))


def _keep_last(rows: Index, f_stream: Index, f_time: IntArray, f_value: FloatArray
               ) -> tuple[IntArray, FloatArray, IntArray]:
    """The last `HISTORY` readings of each stream in `rows` (sorted) from the flattened
    history-and-batch arrays (ordered by stream, then arrival)."""
    seg_len = np.bincount(np.searchsorted(rows, f_stream), minlength=rows.size)
    seg_end = np.cumsum(seg_len)
    local = np.searchsorted(rows, f_stream)
    from_end = seg_end[local] - np.arange(f_stream.size) - 1
    count = np.minimum(seg_len, HISTORY)
    keep = from_end < HISTORY
    col = count[local[keep]] - 1 - from_end[keep]
    h_time = np.zeros((rows.size, HISTORY), np.int64)
    h_value = np.zeros((rows.size, HISTORY))
    h_time[local[keep], col] = f_time[keep]
    h_value[local[keep], col] = f_value[keep]
    return h_time, h_value, count.astype(np.int64)


def _residual_level(alarm: BoolArray, both: BoolArray, cusum: BoolArray,
                    direction: npt.NDArray[np.int8], innovation: FloatArray,
                    value: FloatArray, channel: Index) -> IntArray:
    """Per tested reading: 0 no residual alarm; 2 spoofing suspected: both tests fire on
    readings that look reassuring and run away from danger (they would mask it); 1
    otherwise (the patient's own course until shown otherwise: no finding). The side is the
    CUSUM's where it fired (a run), else the reading's."""
    up = np.where(cusum, direction > 0, innovation > 0)
    towards = ((~up & (value < DANGER_BELOW[channel]))
               | (up & (value > DANGER_ABOVE[channel])))
    reassuring = (value >= NORMAL_LOW[channel]) & (value <= NORMAL_HIGH[channel])
    masking = both & reassuring & ~towards
    return np.where(alarm, np.where(masking, 2, 1), 0).astype(np.int64)


def _run_since(alarm: BoolArray, first: BoolArray, since: IntArray, run: IntArray,
               time_ms: IntArray) -> tuple[IntArray, IntArray]:
    """Per reading (sorted by stream; `first` marks each stream's first), when its run of
    consecutive alarms began and how many readings it holds so far (`since`, `run`: the
    stream's values from the last batch, for a run going on from it); `NO_TIME` and 0 where
    it does not alarm."""
    index = np.arange(alarm.size)
    before = np.roll(alarm, 1)
    before[first] = since[first] != NO_TIME
    head = alarm & (first | ~np.roll(alarm, 1))
    going_on = alarm & before
    start = np.where(going_on, since, time_ms)
    count = np.where(going_on, run, 0)
    at = np.maximum.accumulate(np.where(head, index, 0))
    return (np.where(alarm, start[at], NO_TIME).astype(np.int64),
            np.where(alarm, count[at] + index - at + 1, 0).astype(np.int64))


def _scaled_variance(scale: FloatArray, stream: Index, innovation: FloatArray,
                     innovation_var: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Each reading's innovation variance inflated by its stream's running mean NIS before
    it (never deflated; NIS capped at `NIS_SCALE_CAP`, so an attack barely moves it), and the
    running mean after each reading. Readings sorted by stream."""
    if stream.size == 0:
        return innovation_var.copy(), np.zeros(0)
    start = segment_starts(stream.astype(np.int64))
    nis = np.minimum(innovation ** 2 / innovation_var, NIS_SCALE_CAP)
    w = np.full(stream.size, SCALE_WEIGHT)
    after = linear_recurrence(1.0 - w, w * nis, scale[stream], start)
    before = np.where(start == np.arange(stream.size), scale[stream], np.roll(after, 1))
    return innovation_var * np.maximum(before, 1.0), after


def _residual_draft(stream: int, i: int, channel: Channel, value: float, time_ms: int,
                    innovation: float, innovation_var: float, win: Any, cus: Any,
                    j: int) -> Draft:
    """The draft of a residual spoofing alarm on reading `i` (`j` in the tests' order)."""
    up = bool(cus.direction[j] > 0) if cus.alarm[j] else innovation > 0
    since = int(cus.since_ms[j]) if cus.alarm[j] and cus.since_ms[j] != NO_TIME else time_ms
    tests = []
    if win.alarm[j]:
        tests.append(f"window chi-square {win.statistic[j]:.1f} on {int(win.dof[j])} "
                     f"readings > {win.threshold[j]:.1f}")
    if cus.alarm[j]:
        tests.append(f"CUSUM {cus.statistic[j]:.1f} > {cus.threshold[j]:.2f}")
    summary, evidence = explain_residual(channel, value, innovation, innovation_var, up,
                                         since, tests)
    return Draft(stream // N_CHANNELS, i, -1, RESIDUAL_BOTH, channel, time_ms, since, summary,
                 evidence)


def _deduplicate(drafts: Sequence[Draft], last_raised: IntArray, behaviour_raised: IntArray
                 ) -> tuple[list[Draft], IntArray]:
    """The drafts to raise: per stream and detector (per device and rule or learned, for
    behaviour, so a rule alarm after a learned one still convicts), the first of the batch,
    unless the same was raised less than `REPEAT_MS` before; and the new last-raised
    times."""
    last = last_raised.copy()
    device_last = behaviour_raised.copy()
    kept = []
    for d in drafts:
        if d.channel is None:
            col = int(d.detector is BEHAVIOUR_RULE)
            prev = int(device_last[d.source, col])
            if prev == NO_TIME or d.time_ms - prev >= REPEAT_MS:
                kept.append(d)
                device_last[d.source, col] = d.time_ms
            continue
        s, column = d.source * N_CHANNELS + int(d.channel), _DEDUP_INDEX[d.detector]
        prev = int(last[s, column])
        if prev == NO_TIME or d.time_ms - prev >= REPEAT_MS:
            kept.append(d)
            last[s, column] = d.time_ms
    return kept, last


def _behaviour_raised(current: IntArray, drafts: Sequence[Draft]) -> IntArray:
    """Last time each source raised a behaviour finding (learned, rule), after `drafts`."""
    out = current.copy()
    for d in drafts:
        if d.channel is None:
            out[d.source, int(d.detector is BEHAVIOUR_RULE)] = d.time_ms
    return out
