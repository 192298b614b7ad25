"""Validate the guard: attacks of realistic size on simglucose patients and virtual vitals, run
through the real medtwin pipeline, against two baselines.

    .venv/bin/python validation/guard.py            # full: 30 simglucose patients, 4 days
    .venv/bin/python validation/guard.py --quick    # 3 patients, 2 days, 3 attacks per kind

Steps:
(0) clean data: every simglucose patient (adults, adolescents, children; basal-bolus therapy,
    random meals, Dexcom CGM) for `days` days, and as many virtual vitals patients (heart and
    respiratory rate, SpO2, temperature every minute; a fifth of them deteriorate, sepsis-like,
    on a test day). Day 1 is the training day (the IsolationForest is fitted on it, medtwin
    warms up on it), the others are test days;
(1) scenarios: clean runs (each patient's whole record, scored on the test days) and attacked
    runs: one attack (`medtwin.sim.apply_attack`) on one channel at a seeded random start in
    the test days, submitted from `WARMUP_MS` before it to `GRACE_MS` after it ends;
(2) detectors: medtwin (the pipeline on a temporary site, readings submitted as trusted
    imports in 5-min windows like `medtwin replay`; its `Accepted.findings`), fixed
    thresholds and an IsolationForest (`baselines.py`), all returning `Hit`s;
(3) scoring: an attack is detected by the first hit on its patient and channel (or on the
    whole device, channel None) at a data time inside the attack or up to `GRACE_MS` after it
    (both reported); false alarms are hits on clean runs' test days, counted as episodes
    (hits of one patient and channel less than `EPISODE_MS` apart count once).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import multiprocessing
import os
import pickle
import sys
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=UserWarning)

from baselines import (  # noqa: E402
    Hit,
    Scenario,
    Training,
    isolation_forest_findings,
    threshold_findings,
)

from medtwin.clinical import HYPO_LEVEL_1_MG_DL, HYPO_LEVEL_2_MG_DL  # noqa: E402
from medtwin.config import Settings  # noqa: E402
from medtwin.domain import Channel  # noqa: E402
from medtwin.sim import (  # noqa: E402
    Attack,
    VitalsParams,
    apply_attack,
    cohort_names,
    vitals_init,
    vitals_step,
)

ROOT = HERE.parent
MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
#: Midnight, 2024-03-04 UTC: every record's day 1 starts here.
START_MS = int(_dt.datetime(2024, 3, 4, tzinfo=_dt.UTC).timestamp() * 1000)
CGM_STEP_MS = 3 * MINUTE_MS
VITALS_STEP_MS = MINUTE_MS
#: Width of the time window whose readings of one device form one import packet (as replay).
WINDOW_MS = 5 * MINUTE_MS
#: An attacked run starts this long before its attack (the twin and the guard warm up).
WARMUP_MS = 8 * HOUR_MS
#: Findings up to this long after an attack's end still count (its end may be the tell-tale).
GRACE_MS = 30 * MINUTE_MS
#: Hits of one patient and channel less than this apart are one false-alarm episode.
EPISODE_MS = 30 * MINUTE_MS
#: Share of the vitals patients whose sepsis-like deterioration begins on a test day.
DETERIORATING = 0.2
#: What each channel's device can send: CGM 39-400 mg/dL (LOW/HIGH outside), the vitals
#: simulator's sensible ranges; values are rounded to the device's resolution.
DEVICE_RANGE = {Channel.GLUCOSE: (39.0, 400.0), Channel.HEART_RATE: (30.0, 220.0),
                Channel.SPO2: (70.0, 100.0), Channel.RESP_RATE: (4.0, 60.0),
                Channel.TEMPERATURE: (34.0, 42.5)}
RESOLUTION = {Channel.TEMPERATURE: 0.1}
#: Zone A of the Clarke error grid (Clarke et al. 1987, Diabetes Care 10:622) holds a glucose
#: reading within 20 % of the reference *or with both below 70 mg/dL*: clinically accurate,
#: since both call for treating the low. An attack that changed only readings hypoglycaemic
#: both as sent and in the clean record, and never sent one at or above 54 mg/dL (medtwin's
#: level-2 alert) that was below it, hid no hypoglycaemia: it at most showed one as worse.
HYPO_BELOW = {Channel.GLUCOSE: HYPO_LEVEL_1_MG_DL}
SEVERE_BELOW = {Channel.GLUCOSE: HYPO_LEVEL_2_MG_DL}
VITALS_CHANNELS = (Channel.HEART_RATE, Channel.SPO2, Channel.RESP_RATE, Channel.TEMPERATURE)


@dataclass(frozen=True)
class AttackSpec:
    """One attack kind of the validation: `size` as `medtwin.sim.Attack` takes it (for a
    replay, the range of lags, ms); `signed`: its sign drawn at random."""

    label: str
    channel: Channel
    kind: str
    size: float
    duration_ms: int
    signed: bool = False
    lag_ms: tuple[int, int] = (0, 0)


ATTACKS: tuple[AttackSpec, ...] = (
    AttackSpec("CGM bias ±30 mg/dL, 2 h", Channel.GLUCOSE, "bias", 30.0, 2 * HOUR_MS, True),
    AttackSpec("CGM drift ±1.5 mg/dL/min, 2 h", Channel.GLUCOSE, "ramp", 1.5, 2 * HOUR_MS,
               True),
    AttackSpec("CGM freeze 30 min", Channel.GLUCOSE, "freeze", 0.0, 30 * MINUTE_MS),
    AttackSpec("CGM replay of 1 h from 1-6 h earlier", Channel.GLUCOSE, "replay", 0.0,
               HOUR_MS, lag_ms=(HOUR_MS, 6 * HOUR_MS)),
    AttackSpec("CGM noise σ 20 mg/dL, 1 h", Channel.GLUCOSE, "noise", 20.0, HOUR_MS),
    AttackSpec("HR bias ±25 bpm, 2 h", Channel.HEART_RATE, "bias", 25.0, 2 * HOUR_MS, True),
    AttackSpec("HR freeze 30 min", Channel.HEART_RATE, "freeze", 0.0, 30 * MINUTE_MS),
    AttackSpec("HR replay of 1 h from 1-6 h earlier", Channel.HEART_RATE, "replay", 0.0,
               HOUR_MS, lag_ms=(HOUR_MS, 6 * HOUR_MS)),
    AttackSpec("HR noise σ 15 bpm, 1 h", Channel.HEART_RATE, "noise", 15.0, HOUR_MS),
    AttackSpec("SpO2 bias −6 %, 2 h", Channel.SPO2, "bias", -6.0, 2 * HOUR_MS),
    AttackSpec("SpO2 freeze 30 min", Channel.SPO2, "freeze", 0.0, 30 * MINUTE_MS),
)


class Series(NamedTuple):
    """A base patient's whole clean record: channel -> (time_ms, value)."""

    base: str
    group: str
    observed: dict[Channel, tuple[np.ndarray, np.ndarray]]
    inputs: dict[Channel, tuple[np.ndarray, np.ndarray]]


# -- (0) clean data ---------------------------------------------------------------------------

def _glucose_record(job: tuple[str, int, int]) -> Series:
    import cohort as co

    name, seed, days = job
    rec = co.simulate_patient(name, seed, days, therapies=())
    tr = rec.usual
    t = START_MS + (np.arange(tr.cgm.size, dtype=np.int64) + 1) * CGM_STEP_MS
    carbs = np.round(tr.carbs, 1)
    insulin = np.round(tr.bolus + tr.basal, 4)
    return Series(name, "glucose (simglucose)", {Channel.GLUCOSE: (t, np.round(tr.cgm))},
                  {Channel.CARBS: (t[carbs > 0], carbs[carbs > 0]),
                   Channel.INSULIN: (t[insulin > 0], insulin[insulin > 0])})


def simulate_glucose(names: Sequence[str], days: int, seed: int, cache: Path | None,
                     processes: int) -> list[Series]:
    """`days` days of each simglucose patient (patient i seeded `1000 * seed + 500 + i`)."""
    key = f"guard_glucose_{seed}_{'-'.join(names)}_{days}d".replace("#", "")
    path = None if cache is None else cache / f"{key[:120]}.pkl"
    if path is not None and path.exists():
        with open(path, "rb") as f:   # plain tuples: the file outlives this module's classes
            return [Series(*x) for x in pickle.load(f)]
    jobs = [(name, 1000 * seed + 500 + i, days) for i, name in enumerate(names)]
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        out = list(pool.map(_glucose_record, jobs))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            pickle.dump([tuple(x) for x in out], f)
    return out


def simulate_vitals(n: int, days: int, seed: int) -> list[Series]:
    """`days` days of `n` virtual vitals patients every minute; `DETERIORATING` of them
    deteriorate from a random minute of the test days."""
    rng = np.random.default_rng([seed, 7])
    onsets = np.full(n, np.inf)
    sick = rng.choice(n, size=round(DETERIORATING * n), replace=False)
    onsets[sick] = START_MS + DAY_MS + rng.integers(0, (days - 1) * DAY_MS // MINUTE_MS,
                                                    sick.size) * MINUTE_MS
    params = VitalsParams.sample(n, rng, onsets)
    state = vitals_init(params, START_MS, rng)
    steps = days * DAY_MS // VITALS_STEP_MS
    cols = np.zeros((len(VITALS_CHANNELS), steps, n))
    for k in range(steps):
        state, signs = vitals_step(params, state, VITALS_STEP_MS / 1000.0, rng)
        by = signs.by_channel()
        for j, ch in enumerate(VITALS_CHANNELS):
            cols[j, k] = by[ch]
    t = START_MS + (np.arange(steps, dtype=np.int64) + 1) * VITALS_STEP_MS
    return [Series(f"vitals#{i + 1:03d}",
                   "vitals (deteriorating)" if np.isfinite(onsets[i]) else "vitals",
                   {ch: (t, cols[j, :, i].copy()) for j, ch in enumerate(VITALS_CHANNELS)}, {})
            for i in range(n)]


def training_days(series: Sequence[Series]) -> dict[str, Training]:
    """Each base patient's day 1 (the only data a baseline may fit on)."""
    end = START_MS + DAY_MS
    return {s.base: Training(s.base, {ch: (t[t <= end], v[t <= end])
                                      for ch, (t, v) in s.observed.items()})
            for s in series}


# -- (1) scenarios ----------------------------------------------------------------------------

def _cut(pairs: Mapping[Channel, tuple[np.ndarray, np.ndarray]], lo: int, hi: int
         ) -> dict[Channel, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for ch, (t, v) in pairs.items():
        keep = (t > lo) & (t <= hi)
        out[ch] = (t[keep], v[keep])
    return out


def clean_scenarios(series: Sequence[Series]) -> list[Scenario]:
    """Each patient's whole record, unattacked, scored from the end of day 1."""
    out = []
    for s in series:
        end = int(max(t[-1] for t, _ in s.observed.values()))
        out.append(Scenario(f"clean-{s.base}", s.base, s.observed, s.inputs, None, None, 0, 0,
                            START_MS + DAY_MS, end))
    return out


def _device_format(channel: Channel, value: np.ndarray) -> np.ndarray:
    low, high = DEVICE_RANGE[channel]
    step = RESOLUTION.get(channel, 1.0)
    return np.asarray(np.clip(np.round(value / step) * step, low, high))


def attack_scenarios(series: Sequence[Series], specs: Sequence[AttackSpec], per_kind: int,
                     seed: int) -> list[Scenario]:
    """`per_kind` attacked runs of each spec, cycling through the patients that record its
    channel, each at a seeded random whole-minute start in the test days."""
    rng = np.random.default_rng([seed, 11])
    out = []
    for k, spec in enumerate(specs):
        pool = [s for s in series if spec.channel in s.observed]
        for i in range(per_kind):
            s = pool[i % len(pool)]
            t_all = s.observed[spec.channel][0]
            lo = max(START_MS + DAY_MS, START_MS + WARMUP_MS)
            hi = int(t_all[-1]) - spec.duration_ms - GRACE_MS
            start = int(rng.integers(lo // MINUTE_MS, hi // MINUTE_MS + 1)) * MINUTE_MS
            sign = float(rng.choice([-1.0, 1.0])) if spec.signed else 1.0
            size = spec.size * sign
            if spec.kind == "replay":
                size = float(rng.integers(spec.lag_ms[0] // MINUTE_MS,
                                          spec.lag_ms[1] // MINUTE_MS + 1) * MINUTE_MS)
            first, last = start - WARMUP_MS, start + spec.duration_ms + GRACE_MS
            observed = _cut(s.observed, first, last)
            t, v = observed[spec.channel]
            attack = Attack(spec.kind, spec.channel, start, spec.duration_ms, size)
            res = apply_attack(attack, t, v, rng=rng)
            if not np.array_equal(res.time_ms, t):
                raise ValueError(f"validation: {spec.kind} changes reading times; score it "
                                 "against its own clean readings")
            sent = _device_format(spec.channel, res.value)
            clean = _device_format(spec.channel, v)
            changed = sent != clean
            hypo = HYPO_BELOW.get(spec.channel, -np.inf)
            severe = SEVERE_BELOW.get(spec.channel, -np.inf)
            both_hypo = (changed & (sent < hypo) & (clean < hypo)
                         & ~((clean < severe) & (sent >= severe)))
            observed[spec.channel] = (res.time_ms, sent)
            out.append(Scenario(f"atk{k:02d}-{i:04d}", s.base, observed,
                                _cut(s.inputs, first, last), spec.channel, spec.label,
                                start, start + spec.duration_ms, start, last,
                                int(changed.sum()), int(both_hypo.sum())))
    return out


# -- (2) medtwin ------------------------------------------------------------------------------

class _Clock:
    """The site clock, moved to the end of each window as the data are submitted."""

    def __init__(self) -> None:
        self.now_ms = START_MS

    def __call__(self) -> int:
        return self.now_ms


def _columns(scenarios: Sequence[Scenario]) -> dict[str, np.ndarray]:
    """Every reading of every scenario as columns: scenario, device (0 sensor, 1 pump),
    channel, value, time."""
    parts: list[tuple[int, int, int, np.ndarray, np.ndarray]] = []
    for i, s in enumerate(scenarios):
        parts += [(i, 0, int(ch), t, v) for ch, (t, v) in s.observed.items()]
        parts += [(i, 1, int(ch), t, v) for ch, (t, v) in s.inputs.items()]
    sizes = [p[3].size for p in parts]
    return {
        "scenario": np.repeat([p[0] for p in parts], sizes),
        "device": np.repeat([p[1] for p in parts], sizes),
        "channel": np.repeat([p[2] for p in parts], sizes),
        "time": np.concatenate([p[3] for p in parts]).astype(np.int64),
        "value": np.concatenate([p[4] for p in parts]).astype(np.float64),
    }


def medtwin_findings(scenarios: Sequence[Scenario],
                     training: Mapping[str, Training] | None = None,
                     tick: Callable[[int], None] | None = None,
                     refused: Counter[str] | None = None) -> list[Hit]:
    """Run every scenario through a pipeline on a fresh temporary site, as trusted imports of
    5-min windows (each device's readings of a window one packet, all patients of a window
    one batch, like `medtwin replay`), and read back the findings the pipeline returns.
    `tick(n)` is told of each window's n readings (progress); `refused` counts the packets
    the gate refused, by reason."""
    from medtwin.ingest import ImportSubmission
    from medtwin.pipeline import Accepted, Pipeline

    del training
    col = _columns(scenarios)
    window = col["time"] // WINDOW_MS
    # packets in time order, as a device sends them (channels interleaved)
    order = np.lexsort((col["channel"], col["time"], col["device"], col["scenario"], window))
    w_sorted = window[order]
    key = (col["scenario"] * 2 + col["device"])[order]
    cut = np.flatnonzero((np.diff(w_sorted) != 0) | (np.diff(key) != 0)) + 1
    bounds = np.concatenate([[0], cut, [order.size]])
    codes = np.array([c.code for c in Channel])
    units = np.array([c.ucum for c in Channel])
    sources = [(f"{s.patient_id}-sensor", f"{s.patient_id}-pump") for s in scenarios]
    hits: list[Hit] = []
    clock = _Clock()
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = Pipeline.open(Settings(data_dir=Path(tmp) / "site", clock=clock))
        try:
            for s in scenarios:
                pipeline.add_patient(s.patient_id)
            seq = 0
            a = 0
            while a < order.size:
                w = int(w_sorted[a])
                batch = []
                b = int(np.searchsorted(w_sorted, w, side="right"))
                starts = bounds[np.searchsorted(bounds, a):np.searchsorted(bounds, b)]
                for lo, hi in zip(starts, [*starts[1:], b], strict=True):
                    rows = order[lo:hi]
                    i, dev = int(col["scenario"][rows[0]]), int(col["device"][rows[0]])
                    ch = col["channel"][rows]
                    batch.append(ImportSubmission(
                        scenarios[i].patient_id, sources[i][dev], seq, codes[ch].tolist(),
                        units[ch].tolist(), col["value"][rows], col["time"][rows]))
                    seq += 1
                clock.now_ms = (w + 1) * WINDOW_MS
                for outcome in pipeline.process(batch):
                    if isinstance(outcome, Accepted):
                        hits.extend(Hit(f.patient_id, f.channel, int(f.time_ms), str(f.code),
                                        str(f.detector))
                                    for f in getattr(outcome, "findings", ()))
                    elif refused is not None:
                        refused[str(outcome.error.reason)] += 1
                if tick is not None:
                    tick(b - a)
                a = b
        finally:
            pipeline.close()
    return hits


# -- (3) scoring ------------------------------------------------------------------------------

class AttackScore(NamedTuple):
    """How one detector did on one attacked run."""

    scenario: Scenario
    detected_during: bool
    detected: bool
    ttd_min: float


def score_attacks(scenarios: Sequence[Scenario], hits: Sequence[Hit]) -> list[AttackScore]:
    """Per attacked run that changed a reading (`attack_changed`): detected during the
    attack, detected up to `GRACE_MS` after it, and the time from the attack's start to the
    first such hit (min; NaN if none)."""
    by_patient: dict[str, list[Hit]] = defaultdict(list)
    for h in hits:
        by_patient[h.patient_id].append(h)
    out = []
    for s in scenarios:
        if s.attack_channel is None or s.attack_changed == 0:
            continue
        times = np.array([h.time_ms for h in by_patient[s.patient_id]
                          if h.channel in (s.attack_channel, None)
                          and s.attack_start_ms <= h.time_ms < s.attack_end_ms + GRACE_MS],
                         dtype=np.int64)
        first = times.min() if times.size else None
        out.append(AttackScore(s, bool((times < s.attack_end_ms).any()), times.size > 0,
                               np.nan if first is None
                               else (first - s.attack_start_ms) / MINUTE_MS))
    return out


def false_alarm_episodes(scenario: Scenario, hits: Sequence[Hit]) -> int:
    """Episodes of hits on a clean run's scored days: hits of one channel less than
    `EPISODE_MS` apart count once."""
    by_channel: dict[Channel | None, list[int]] = defaultdict(list)
    for h in hits:
        if h.patient_id == scenario.patient_id and h.time_ms >= scenario.scored_from_ms:
            by_channel[h.channel].append(h.time_ms)
    count = 0
    for times in by_channel.values():
        t = np.sort(np.array(times, dtype=np.int64))
        count += 1 + int(np.count_nonzero(np.diff(t) >= EPISODE_MS))
    return count


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score 95 % interval of a proportion k / n."""
    if n == 0:
        return (np.nan, np.nan)
    p = k / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, mid - half), min(1.0, mid + half))


# -- running it all ---------------------------------------------------------------------------

DETECTORS: dict[str, str] = {"medtwin": "medtwin (pipeline findings)",
                             "threshold": "fixed thresholds",
                             "iforest": "IsolationForest"}


def _chunks(scenarios: Sequence[Scenario], n: int) -> list[list[Scenario]]:
    """`n` groups of scenarios with about as many readings each (largest first, greedy)."""
    sizes = [sum(t.size for t, _ in s.observed.values()) + sum(t.size for t, _ in
                                                                 s.inputs.values())
             for s in scenarios]
    groups: list[list[Scenario]] = [[] for _ in range(n)]
    load = [0] * n
    for i in np.argsort(sizes)[::-1]:
        j = int(np.argmin(load))
        groups[j].append(scenarios[i])
        load[j] += sizes[i]
    return [g for g in groups if g]


#: What the forked medtwin workers read: their scenario chunks and the progress counter.
_SHARED: dict[str, Any] = {}


def _medtwin_job(j: int) -> tuple[list[Hit], Counter[str]]:
    counter = _SHARED["counter"]

    def tick(n: int) -> None:
        with counter.get_lock():
            counter.value += n

    refused: Counter[str] = Counter()
    hits = medtwin_findings(_SHARED["chunks"][j], tick=tick, refused=refused)
    return hits, refused


def run_medtwin(scenarios: Sequence[Scenario], processes: int, show: bool,
                refused: Counter[str]) -> list[Hit]:
    """`medtwin_findings` over the scenarios split across `processes` sites (each patient's
    findings depend only on its own data), with a rich progress bar over readings."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    ctx = multiprocessing.get_context("fork")
    chunks = _chunks(scenarios, processes)
    total = sum(int(_columns(c)["time"].size) for c in chunks)
    _SHARED.update(chunks=chunks, counter=ctx.Value("q", 0))
    hits: list[Hit] = []
    with ctx.Pool(len(chunks)) as pool, Progress(
            TextColumn("medtwin"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,}"
                                                           " readings"),
            TimeElapsedColumn(), disable=not show) as bar:
        task = bar.add_task("medtwin", total=total)
        result = pool.map_async(_medtwin_job, range(len(chunks)))
        while not result.ready():
            result.wait(0.5)
            bar.update(task, completed=_SHARED["counter"].value)
        bar.update(task, completed=_SHARED["counter"].value)
        for part, refusals in result.get():
            hits.extend(part)
            refused.update(refusals)
    return hits


@dataclass
class Results:
    """What the run measured, for the report."""

    args: dict[str, Any]
    series: list[Series]
    clean: list[Scenario]
    attacked: list[Scenario]
    hits: dict[str, list[Hit]]
    seconds: dict[str, float]
    n_readings: int
    refused: dict[str, int]


def run(quick: bool = False, seed: int = 1, per_kind: int | None = None,
        patients: int | None = None, days: int | None = None,
        detectors: Sequence[str] = tuple(DETECTORS), processes: int = 2,
        cache: Path | None = None, show: bool = True) -> Results:
    """Steps (0)-(2); the scoring is done by the report."""
    names = (("adult#001", "adolescent#001", "child#001") if quick else cohort_names())
    if patients is not None:
        names = tuple(names[:patients])
    days = days or (2 if quick else 4)
    per_kind = per_kind or (3 if quick else 100)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    print(f"(0) simulating {len(names)} simglucose and {len(names)} vitals patients, {days} "
          "days ...", flush=True)
    series = simulate_glucose(names, days, seed, cache, processes)
    series += simulate_vitals(len(names), days, seed)
    seconds["simulation"] = time.perf_counter() - t0
    train = training_days(series)
    clean = clean_scenarios(series)
    attacked = attack_scenarios(series, ATTACKS, per_kind, seed)
    scenarios = clean + attacked
    n_readings = int(_columns(scenarios)["time"].size)
    print(f"(1) {len(clean)} clean runs, {len(attacked)} attacked runs, {n_readings:,} "
          "readings", flush=True)
    hits: dict[str, list[Hit]] = {}
    refused: Counter[str] = Counter()
    for name in detectors:
        print(f"(2) {DETECTORS[name]} ...", flush=True)
        t0 = time.perf_counter()
        if name == "medtwin":
            hits[name] = run_medtwin(scenarios, processes, show, refused)
        elif name == "threshold":
            hits[name] = threshold_findings(scenarios, train)
        else:
            hits[name] = isolation_forest_findings(scenarios, train, seed=seed)
        seconds[name] = time.perf_counter() - t0
    return Results({"quick": quick, "seed": seed, "per_kind": per_kind,
                    "patients": len(names), "days": days}, series, clean, attacked, hits,
                   seconds, n_readings, dict(refused))


# -- report -----------------------------------------------------------------------------------

def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _pct(k: int, n: int) -> str:
    lo, hi = wilson(k, n)
    return f"{100 * k / n:.1f} ({100 * lo:.0f}–{100 * hi:.0f})" if n else "–"


def _clock(ms: int) -> str:
    t = _dt.datetime.fromtimestamp(ms / 1000, _dt.UTC)
    day = (ms - START_MS) // DAY_MS + 1
    return f"day {day} {t:%H:%M}"


def report(res: Results, heading: str = "##") -> str:
    """The guard section of docs/validation.md, from what `run` measured."""
    group_of = {s.base: s.group for s in res.series}
    labels = [spec.label for spec in ATTACKS]
    rows = []
    scores = {name: score_attacks(res.attacked, hits) for name, hits in res.hits.items()}
    # The same windows on the clean record: how often a detector "detects" by chance.
    unattacked = [s._replace(patient_id=f"clean-{s.base}") for s in res.attacked]
    chance = {name: score_attacks(unattacked, hits) for name, hits in res.hits.items()}
    no_op = Counter(s.attack_kind for s in res.attacked if s.attack_changed == 0)
    for label in labels:
        for name in res.hits:
            sc = [x for x in scores[name] if x.scenario.attack_kind == label]
            n = len(sc)
            during = sum(x.detected_during for x in sc)
            det = sum(x.detected for x in sc)
            by_chance = sum(x.detected for x in chance[name]
                            if x.scenario.attack_kind == label)
            ttd = np.array([x.ttd_min for x in sc if x.detected])
            rows.append([label, DETECTORS[name], str(n), str(no_op[label]),
                         _pct(during, n), _pct(det, n),
                         f"{np.median(ttd):.0f}" if ttd.size else "–",
                         f"{np.percentile(ttd, 90):.0f}" if ttd.size else "–",
                         f"{100 * by_chance / n:.0f}" if n else "–"])
    fa_rows = []
    groups = sorted({group_of[s.base] for s in res.clean})
    for group in groups:
        runs = [s for s in res.clean if group_of[s.base] == group]
        pdays = sum((s.end_ms - s.scored_from_ms) / DAY_MS for s in runs)
        for name, hits in res.hits.items():
            ep = sum(false_alarm_episodes(s, hits) for s in runs)
            fa_rows.append([group, DETECTORS[name], f"{pdays:.0f}", str(ep),
                            f"{ep / pdays:.3f}", f"{7 * ep / pdays:.2f}"])
    all_days = sum((s.end_ms - s.scored_from_ms) / DAY_MS for s in res.clean)
    lines = [
        f"{heading} Guard: attacks of realistic size, medtwin against two baselines",
        "",
        f"Generated by `{_command(res)}` on {_dt.date.today().isoformat()}. Seed "
        f"{res.args['seed']}. {res.args['patients']} simglucose patients ({_cohorts(res)}) "
        f"and {res.args['patients']} virtual vitals patients ({DETERIORATING:.0%} of them "
        f"deteriorating, sepsis-like, from a random time of a test day), {res.args['days']} "
        f"days each: day 1 trains (the IsolationForest is fitted on it; medtwin warms up on "
        f"it), days 2–{res.args['days']} test. {len(res.clean)} clean runs "
        f"({all_days:.0f} patient-days scored) and {len(res.attacked)} attacked runs "
        f"({res.args['per_kind']} per attack kind), {res.n_readings:,} readings in all.",
        "",
        "**Protocol.** An attacked run is one patient's record from "
        f"{WARMUP_MS // HOUR_MS} h before the attack to {GRACE_MS // MINUTE_MS} min after it "
        "ends; the attack (`medtwin.sim.apply_attack`) hits one channel at a seeded random "
        "whole minute of the test days, its values clipped and rounded to what the device "
        "can send (CGM 39–400 mg/dL, integers). An attack that changed none of the readings "
        "the device sends is a no-op, counted apart and not scored: nothing in the data "
        "differs from the clean record (a freeze or a downward bias while the CGM reads "
        "LOW, an upward one while it reads HIGH). medtwin: the readings go through the real "
        "pipeline (gate, twin, guard, ledger, store) on a temporary site as trusted imports, "
        "each device's readings of a 5-min window one packet, every patient of a window one "
        "batch, the site clock at the window's end; its findings are `Accepted.findings`. "
        "A run counts as detected by the first finding (any code) on its patient and "
        "attacked channel, or on the whole device (channel none), raised at a data time in "
        f"the attack (*during*) or up to {GRACE_MS // MINUTE_MS} min after its end (*≤ "
        f"{GRACE_MS // MINUTE_MS} min after*: a freeze, replay or bias often shows when it "
        "stops); time to detect (TTD) from the attack's start to that finding, over the "
        "detected runs. False alarms: "
        "findings on the clean runs' test days, as episodes (findings of one patient and "
        f"channel less than {EPISODE_MS // MINUTE_MS} min apart count once). Detection rates "
        "with Wilson 95 % intervals. The last column scores the same windows (patient, "
        "channel, times) on the patient's clean record: the share a detector would have "
        "'detected' by chance, from its false alarms alone. Targets: ≥ 99 % detected, ≤ 1 "
        "false alarm per patient-week (0.143 per patient-day).",
        "",
        "**Baselines** (`validation/baselines.py`), fixed before the run: *fixed "
        "thresholds*: glucose outside 40–400 mg/dL or changing faster than 4 mg/dL/min "
        "between consecutive readings; heart rate outside 40–150 /min or > 30 /min per min; "
        "SpO2 below 85 % or > 5 % per min; respiratory rate outside 6–40 /min or > 10 per "
        "min; temperature outside 34.5–40.5 °C or > 1 °C per min. *IsolationForest* "
        "(scikit-learn, 100 trees, seeded): per patient and channel, fitted on the training "
        "day's sliding windows of 12 readings (levels and first differences per minute); "
        "contamination set to spend one false alarm per patient-week over the windows; a "
        "window scored anomalous is a finding at its last reading.",
        "",
        _table(["attack", "detector", "runs", "no-op runs", "detected during %",
                "detected ≤ 30 min after %", "median TTD min",
                "90th pct TTD min",
                "same window, clean record %"], rows),
        "",
        "False alarms on clean data (test days only):",
        "",
        _table(["records", "detector", "patient-days", "false-alarm episodes",
                "per patient-day", "per patient-week"], fa_rows),
        "",
    ]
    if "medtwin" in res.hits:
        lines[2:2] = _summary(res, scores["medtwin"])
        lines += _medtwin_details(res, scores["medtwin"], group_of)
    lines += [
        "Time: simulation {:.0f} s; {}.".format(
            res.seconds.get("simulation", 0.0),
            ", ".join(f"{DETECTORS[k]} {v:.0f} s" for k, v in res.seconds.items()
                      if k in DETECTORS)),
        "",
    ]
    return "\n".join(lines)


def _cohorts(res: Results) -> str:
    counts = Counter(s.base.split("#")[0] for s in res.series if s.group.startswith("glucose"))
    def plural(c: str, n: int) -> str:
        return c if n == 1 else c + ("ren" if c == "child" else "s")

    return ", ".join(f"{n} {plural(c, n)}" for c, n in counts.items())


def _summary(res: Results, scores: list[AttackScore]) -> list[str]:
    """medtwin against the targets, in one paragraph computed from the tables' figures."""
    labels = [spec.label for spec in ATTACKS]
    rate = {label: np.mean([x.detected for x in scores if x.scenario.attack_kind == label])
            for label in labels}
    met = [label for label in labels if rate[label] >= 0.99]
    no_op = sum(s.attack_changed == 0 for s in res.attacked)
    # runs that changed only readings hypoglycaemic both as sent and in the clean record
    hypo = [x for x in scores if x.scenario.attack_hypo == x.scenario.attack_changed]
    rest = [x for x in scores if x.scenario.attack_hypo != x.scenario.attack_changed]
    below_rest = []
    for label in labels:
        hit = [x.detected for x in rest if x.scenario.attack_kind == label]
        if not hit or np.mean(hit) < 0.99:
            below_rest.append(f"{label} ({sum(hit)} of {len(hit)})")
    misses_hypo = sum(not x.detected for x in hypo)
    days = sum((s.end_ms - s.scored_from_ms) / DAY_MS for s in res.clean)
    hits = res.hits["medtwin"]
    ep = sum(false_alarm_episodes(s, hits) for s in res.clean)
    unattacked = [s._replace(patient_id=f"clean-{s.base}") for s in res.attacked]
    chance = np.mean([x.detected for x in score_attacks(unattacked, hits)])
    return [f"**medtwin against the targets.** Detected (≤ 30 min after) in ≥ 99 % of the "
            f"runs for {len(met)} of {len(labels)} attack kinds"
            + (f" ({'; '.join(met)})" if met else "")
            + f"; lowest: {min(rate.values()):.0%} ({min(rate, key=rate.__getitem__)}). "
            f"False alarms on clean data: {7 * ep / days:.1f} episodes per patient-week "
            "(target ≤ 1); "
            f"{chance:.0%} of the attack windows hold a finding on the clean record too, so "
            "a detection is only as telling as its margin over the last column. "
            f"{no_op} of {len(res.attacked)} attacks changed no reading the device sends "
            "(no-op runs) and are not scored. "
            f"{len(hypo)} scored runs changed only CGM readings that were below "
            f"{HYPO_BELOW[Channel.GLUCOSE]:g} mg/dL both as sent and in the clean record, never "
            f"one sent at or above {SEVERE_BELOW[Channel.GLUCOSE]:g} that was below it (zone A "
            "of the Clarke error grid, and no hypoglycaemia shown as milder than it was: they "
            "hid none); "
            f"{misses_hypo} of medtwin's {sum(not x.detected for x in scores)} misses are "
            "among them. Without those runs (medtwin only), every kind is at ≥ 99 %"
            + (f" except {'; '.join(below_rest)}." if below_rest else "."), ""]


def _medtwin_details(res: Results, scores: list[AttackScore], group_of: dict[str, str]
                     ) -> list[str]:
    hits = res.hits["medtwin"]
    clean_ids = {s.patient_id: s for s in res.clean}
    on_clean = [h for h in hits if h.patient_id in clean_ids
                and h.time_ms >= clean_ids[h.patient_id].scored_from_ms]
    kinds = Counter((group_of[clean_ids[h.patient_id].base], h.code, h.detector,
                     "device" if h.channel is None else h.channel.name.lower())
                    for h in on_clean)
    missed = [x for x in scores if not x.detected]
    refused = ", ".join(f"{r} {n}" for r, n in sorted(res.refused.items())) or "none"
    lines = [f"Packets the gate refused in the medtwin runs: {refused}.", "",
             f"medtwin's {len(on_clean)} findings on clean test days (not episodes), by "
             "records, code, detector and channel (the 20 most frequent):", "",
             _table(["records", "code", "detector", "channel", "findings"],
                    [[*k, str(n)] for k, n in kinds.most_common(20)]), ""]
    if not hits:
        lines += ["**medtwin raised no finding at all in this run** (the pipeline returned "
                  "none: is `Accepted.findings` wired?).", ""]
    by_kind: dict[str, list[AttackScore]] = defaultdict(list)
    for x in missed:
        by_kind[str(x.scenario.attack_kind)].append(x)
    if missed:
        lines += [f"medtwin's misses ({len(missed)} of {len(scores)}), up to five per kind:",
                  ""]
        for kind, xs in by_kind.items():
            shown = "; ".join(f"{x.scenario.base} at {_clock(x.scenario.attack_start_ms)} "
                              f"(`{x.scenario.patient_id}`)" for x in xs[:5])
            lines.append(f"- {kind}: {len(xs)} missed ({shown})")
        lines.append("")
    return lines


def _command(res: Results) -> str:
    a = res.args
    cmd = ".venv/bin/python validation/guard.py" + (" --quick" if a["quick"] else "")
    full = {"per_kind": (100, "--attacks"), "patients": (30, "--patients"),
            "days": (4, "--days")}
    if not a["quick"]:
        cmd += "".join(f" {flag} {a[k]}" for k, (v, flag) in full.items() if a[k] != v)
    if a["seed"] != 1:
        cmd += f" --seed {a['seed']}"
    return cmd


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="3 patients, 2 days, 3 attacks per kind (well under a minute)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--attacks", type=int, default=None, help="attacked runs per kind")
    ap.add_argument("--patients", type=int, default=None,
                    help="simglucose patients (and as many vitals patients)")
    ap.add_argument("--days", type=int, default=None, help="days per record (day 1 trains)")
    ap.add_argument("--detectors", default=",".join(DETECTORS),
                    help=f"comma-separated, of {', '.join(DETECTORS)}")
    ap.add_argument("--processes", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--cache", default=os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "medtwin-validation"),
        help="where the simulated glucose records are kept between runs")
    ap.add_argument("--save", default=None,
                    help="also pickle what the run measured here (to rewrite the report later)")
    ap.add_argument("--load", default=None,
                    help="write the report from a run saved with --save, without running")
    ap.add_argument("--heading", default="##",
                    help="markdown heading of the section (run.py: '## 5.')")
    ap.add_argument("--out", default=None, help="the report (default build/validation-guard/"
                    "guard.md; with --quick build/validation-quick/guard.md)")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    if args.load:
        with open(args.load, "rb") as f:
            res: Results = pickle.load(f)
    else:
        res = run(args.quick, args.seed, args.attacks, args.patients, args.days,
                  [d for d in args.detectors.split(",") if d], args.processes,
                  Path(args.cache))
    if args.save:
        with open(args.save, "wb") as f:
            pickle.dump(res, f)
    text = report(res, heading=args.heading)
    out = Path(args.out) if args.out else ROOT / "build" / (
        "validation-quick" if args.quick else "validation-guard") / "guard.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    print(f"written to {out} in {(time.perf_counter() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
