"""Pattern detectors for attacks and faults that residual (innovation) tests miss.

A residual test asks "is this reading far from what the twin predicted?"; an attacker who
freezes a sensor, replays an hour of its own past, or shifts timestamps stays close to the
prediction. These detectors look at the shape of each stream instead.

Every detector takes a batch of readings of many streams as arrays (`stream`, `time_ms`,
`value`, `channel`: shape (n_readings,)), ordered by stream, then by arrival (which for an
honest device is time order), and returns per reading a boolean `alarm` with the evidence
that explains it: the `statistic` tested, its `threshold` and `since_ms`, the time from
which the suspect pattern runs. All are pure functions of array passes, never a Python loop
over readings, and causal: a reading's result depends only on it and earlier readings of its
stream in the batch, so the result for a stream does not depend on the other streams.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from medtwin.domain import N_CHANNELS, Channel
from medtwin.estimation import segment_starts, segmented_cummax

Bools = npt.NDArray[np.bool_]
Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

MINUTE_MS = 60_000
#: Consistency constant of the MAD for a normal distribution (1 / Phi^-1(3/4)).
MAD_TO_SD = 1.482602218505602


def per_channel(values: dict[Channel, float], default: float) -> Floats:
    """A table indexed by channel: `values` where given, `default` elsewhere."""
    table = np.full(N_CHANNELS, default, dtype=np.float64)
    for ch, v in values.items():
        table[int(ch)] = v
    return table


#: Reporting resolution per channel: two values closer than this are "the same" reading.
#: CGMs and monitors report glucose (mg/dL), HR, SpO2, RR and BP as integers; body
#: thermometers to 0.1 °C.
RESOLUTION = per_channel({Channel.TEMPERATURE: 0.1}, 1.0)

#: How long a value may stay within `RESOLUTION` of itself before it counts as stuck (ms).
#: CGM noise and physiology move glucose every 5-min reading; 30 min of repeats is a frozen
#: sensor (the brief; exact repeats are rare at sensor noise of a few mg/dL). HR the same
#: (a paced rhythm can sit at the pacing rate for hours: raise it for paced patients). SpO2
#: too; at 100 %, where an oximeter pins on oxygen, the run is judged against how long this
#: sensor has stayed there before (`PINNED`); the chance test below spares an oximeter that
#: often repeats its whole percent. RR sits at the ventilator rate,
#: temperature and cuff BP change little for hours at their resolution: not checked (inf).
FROZEN_MIN_MS = per_channel(
    {Channel.GLUCOSE: 30 * MINUTE_MS, Channel.HEART_RATE: 30 * MINUTE_MS,
     Channel.SPO2: 30 * MINUTE_MS}, np.inf
)
#: A run is also judged against the sensor's own flatness: with p the share of its readings
#: (over the `FROZEN_BASE_READINGS` before the run) that repeated the previous value, a run
#: of k equal values has probability p**(k-1) by chance; it alarms only below
#: `FROZEN_RUN_P`, so a sensor that often repeats itself is not called stuck (30 min of 3-min
#: CGM, 11 equal values: a share below 0.559; of 1-min SpO2: below 0.82). Raised from 1e-4
#: for detection: the CGM freezes missed on validation seed 3 were on sensors that had
#: repeated 46-53 % of their readings; on the clean records of seeds 2 and 3 no further run
#: alarmed at 3e-3.
FROZEN_RUN_P = 3e-3
FROZEN_BASE_READINGS = 288
#: Values a device reports at its limits ("LOW" / "HIGH" on a CGM: 40 and 400 mg/dL) stay
#: put while the patient is beyond them: a run there is not a stuck sensor.
REPORTING_LOW = per_channel({Channel.GLUCOSE: 40.0}, -np.inf)
REPORTING_HIGH = per_channel({Channel.GLUCOSE: 400.0}, np.inf)
#: Real readings at which a sensor pins for hours with no fault: SpO2 100 % on supplemental
#: oxygen. A run there is not exempt (a freeze at 100 % would hide a desaturation) but is
#: judged by the sensor's own habit there: its share of readings at the level that stayed at
#: it (over the `FROZEN_BASE_READINGS` before the run, with one stay and one change assumed).
#: A patient on oxygen, pinned for hours already, stays near a share of 1 and never alarms;
#: a sensor that touches 100 % now and then is called stuck after 30 min there. medtwin is
#: not told when oxygen is started, so a patient newly pinned on it is flagged too, until the
#: run has lasted `PINNED_MAX_MS`: from then on the patient is taken to be on oxygen (a
#: freeze is flagged, every `_monitor.REPEAT_MS`, for that long, then let through).
PINNED = per_channel({Channel.SPO2: 100.0}, np.inf)
PINNED_MAX_MS = 2 * 60 * MINUTE_MS

#: Level jumps (`level_jumps`): the lines through the `JUMP_SIDE` readings on each side of a
#: step (its two readings at most `JUMP_MAX_GAP_MS` apart) miss each other by at least
#: `JUMP_MIN`, and by `JUMP_STEADY` times their largest miss of a reading. Glucose: 25 mg/dL
#: in one CGM interval is 5-8 mg/dL/min over the trend, beyond the 3-4 mg/dL/min of the
#: fastest real change (simulated clean CGM, validation seeds 2 and 3: no such step in 180
#: patient-days). Heart rate: 22 /min between two 4-min trends; simulated activity bouts step
#: it by up to about 20 (seeds 2 and 3: one such step in 180 patient-days). SpO2: 4.5 % (a
#: desaturation slopes, or dips and recovers; seeds 2 and 3: no such step). So an offset
#: smaller than these (20 /min, 4 %) passes as physiology. A real rhythm change or a sudden
#: desaturation can step either, so the guard shows such a step and never holds it
#: (`_monitor.STEP`). A step across a missed reading (its readings over `JUMP_MAX_GAP_MS`
#: apart) is not judged: physiology may move that far in the longer time.
JUMP_MIN = per_channel({Channel.GLUCOSE: 25.0, Channel.HEART_RATE: 22.0, Channel.SPO2: 4.5},
                       np.inf)
#: A step with one whole side at the sensor's `REPORTING_LOW` is judged against this smaller
#: step. Glucose crosses LOW continuously, and slowly (counter-regulation flattens a fall near
#: 40 mg/dL, a recovery rises from it at a few mg/dL/min), so the line through the readings
#: on the visible side, taken back to the step, meets the limit: on simulated clean CGM
#: (tuning seeds 2 and 3, 120 patient-days each, 732 such steps) within 10 mg/dL. A CGM that
#: leaves LOW 12 mg/dL or more above it in one interval and stays there was not reading the
#: patient while at LOW: a compression low ending, a sensor recovering, or data pushed down to
#: LOW and let go (a drift run to LOW shows nothing else, since LOW hides it). At HIGH no such
#: limit holds (crossings step by 20 mg/dL and more), so HIGH keeps `JUMP_MIN`. A sensor
#: reading less often meets LOW further up a real rise, so the threshold grows with the step's
#: gap at `JUMP_RATE_AT_LOW` (4 mg/dL/min, the fastest usual change: 12 at 3 min, 20 at 5);
#: a rescue faster than that (IV dextrose) may still show as such a step, which is never held.
JUMP_MIN_AT_LOW = per_channel({Channel.GLUCOSE: 12.0}, np.inf)
JUMP_RATE_AT_LOW = 4.0
JUMP_MAX_GAP_MS = 6 * MINUTE_MS
JUMP_SIDE = 4
JUMP_STEADY = 3.0

#: Fastest change per minute a living patient shows, sustained over `RATE_SPAN_MS`.
#: Glucose: physiological rates rarely exceed 3-4 mg/dL/min (Kovatchev et al. 2005, Diabetes
#: Care 28:1231; CGM trend arrows top out at > 3 mg/dL/min, Klonoff & Kerr 2017, J Diabetes
#: Sci Technol 11:1063), so 10 mg/dL/min is 2.5x beyond the fastest real change.
#: HR: the onset of a re-entrant tachycardia (SVT, AF with rapid ventricular response)
#: changes HR by ~100 beats/min within a beat, so only > 150 beats/min within a minute is
#: impossible. SpO2: apnoeic desaturation is at most ~1 %/s even in the obese or in children
#: (Farmery & Roe 1996, Br J Anaesth 76:284; pulse oximeters average over 8-16 s), so > 60 %
#: within a minute is not physiology. Body temperature: fever and active cooling change core
#: temperature by at most ~0.1 °C/min (targeted temperature management cools at ~1-2 °C/h;
#: Polderman & Herold 2009, Crit Care Med 37:1101), so 1 °C/min is 10x that. RR and BP
#: change abruptly (apnoea, arrhythmia, cuff re-inflation): 60 /min and 150 mmHg per minute.
#: Inputs (carbohydrates, insulin) are doses, not signals: not checked (inf).
MAX_RATE_PER_MIN = per_channel(
    {
        Channel.GLUCOSE: 10.0,
        Channel.HEART_RATE: 150.0,
        Channel.SPO2: 60.0,
        Channel.RESP_RATE: 60.0,
        Channel.SYSTOLIC_BP: 150.0,
        Channel.DIASTOLIC_BP: 150.0,
        Channel.TEMPERATURE: 1.0,
    },
    np.inf,
)

#: The shortest interval a rate is measured over (ms): a jump between readings closer than
#: this is judged as if spread over the span, so sensor noise at a high sampling rate is not a
#: "rate". One minute: the fastest CGM (1-min) and the clinical "per minute" limits above.
RATE_SPAN_MS = 60_000

#: Replay: a window of `REPLAY_WINDOW` values (1 h of 5-min CGM) and the least total variation
#: (sum of |difference| in units of the tolerance per difference) a window needs to be
#: identifying; flatter windows match by chance and are the frozen detector's business.
REPLAY_WINDOW = 12
REPLAY_MIN_VARIATION = 2.0
#: ... and at least this many different changes: a straight ramp or a sawtooth repeats
#: itself without anyone replaying it.
REPLAY_MIN_DISTINCT = 3
#: A CGM reports a smoothed signal whose small, slow changes repeat over a short window by
#: chance, and a resting heart moves by a beat or two a minute, so a replayed quiet hour has
#: too little variation for the window above. A second pass over `REPLAY_LONG_WINDOW` values
#: (an hour of 3-min CGM, 20 min of 1-min heart rate) needs only `REPLAY_LONG_VARIATION`: on
#: simulated clean records (validation seeds 2 and 3, 180 patient-days of each) it matched
#: nothing by chance, and with the short pass it finds 97-100 % of replayed hours of CGM and
#: all of heart rate. (On such channels the short window must copy levels too: see
#: `replayed_segments`.)
REPLAY_LONG_WINDOW = 20
REPLAY_LONG_VARIATION = 0.4
REPLAY_LONG_CHANNELS = (Channel.GLUCOSE, Channel.HEART_RATE)

#: Noise bursts: window of 12 values (1 h of 5-min CGM) and the ratio of its robust (MAD)
#: variance of second differences over the stream's usual that alarms (SD 4x usual). Both
#: are medians, so a single step or spike moves neither; a MAD over 10 values is itself
#: noisy (and real sensors' noise heavy-tailed), hence 4x rather than 3x.
NOISE_WINDOW = 12
NOISE_RATIO = 16.0
#: A stream is judged for noise once it has this many windows of history: its usual
#: variance is a median over them.
NOISE_MIN_HISTORY = 3

#: Timestamps: a reading's time may lie at most `MAX_FUTURE_MS` after its arrival (clock
#: drift), and at most `MAX_DELAY_MS` before it (CGMs backfill up to 3 h missed while out of
#: range of the receiver, Dexcom G6 user guide); inter-arrival gaps over `SPACING_WINDOW`
#: readings whose SD is below `MIN_JITTER_MS` are machine-made (network delivery jitters by
#: milliseconds at least); a reading less than `DENSE_FRACTION` of the stream's median gap
#: after the one before is more than the device can sample (an inserted reading).
MAX_FUTURE_MS = 60_000
MAX_DELAY_MS = 3 * 60 * MINUTE_MS
SPACING_WINDOW = 12
MIN_JITTER_MS = 1.0
DENSE_FRACTION = 0.25


class FrozenAlarm(NamedTuple):
    """Stuck values, per reading (n_readings,)."""

    alarm: Bools
    statistic: Floats
    """how long (ms) the value has stayed within the resolution, up to this reading"""
    threshold: Floats
    """the channel's `FROZEN_MIN_MS` (or the caller's)"""
    since_ms: Ints
    """time of the first reading of the run"""
    run_readings: Ints
    """readings in the run so far"""
    repeat_share: Floats
    """share of the sensor's readings before the run that repeated the previous value (at a
    `PINNED` level: share of its readings at that level that stayed there)"""
    chance: Floats
    """probability of a run this long by chance at that share"""


class ReplayAlarm(NamedTuple):
    """Copies of an earlier window of the same stream, per reading (n_readings,).

    A window matches when its successive differences equal the earlier window's to the
    tolerance: a verbatim copy (`offset` 0) and a copy shifted by a constant are both caught.
    """

    alarm: Bools
    statistic: Floats
    """largest |difference of differences| between the window and its source (NaN: none)"""
    threshold: Floats
    """the tolerance of the comparison (half the quantization step)"""
    since_ms: Ints
    """time of the window's first reading"""
    source_start_ms: Ints
    """time of the first reading of the earlier window it copies (-1: none)"""
    source_end_ms: Ints
    """time of the last reading of the earlier window it copies (-1: none)"""
    offset: Floats
    """value minus the source's value (0 for a verbatim copy; NaN: none)"""


class NoiseAlarm(NamedTuple):
    """Noise bursts, per reading (n_readings,)."""

    alarm: Bools
    statistic: Floats
    """variance of the window's first differences over the stream's usual (NaN: too few)"""
    threshold: Floats
    """the variance ratio that alarms"""
    since_ms: Ints
    """time of the window's first reading"""
    usual_sd: Floats
    """the stream's usual SD of first differences (robust, from second differences)"""


class JumpAlarm(NamedTuple):
    """Level jumps, per reading (n_readings,): the alarm is raised on the last of the
    `JUMP_SIDE` readings at the new level."""

    alarm: Bools
    statistic: Floats
    """the jump: the line through the readings from the step on minus the line through those
    before, both taken halfway across the step"""
    threshold: Floats
    """the channel's `JUMP_MIN`"""
    since_ms: Ints
    """time of the first reading at the new level"""
    spread: Floats
    """the larger of the two lines' largest miss of a reading"""
    at_low: Bools
    """one side of the step lies wholly at the sensor's `REPORTING_LOW`, and the step is
    smaller than `JUMP_MIN`: only the at-LOW threshold (`JUMP_MIN_AT_LOW`, or
    `JUMP_RATE_AT_LOW` times the step's gap if more) judges it"""


class RateAlarm(NamedTuple):
    """Physiologically impossible rates of change, per reading (n_readings,)."""

    alarm: Bools
    statistic: Floats
    """change per minute since the reference reading (NaN: first of its stream)"""
    threshold: Floats
    """the channel's `MAX_RATE_PER_MIN`"""
    since_ms: Ints
    """time of the reference reading: the last one at least `RATE_SPAN_MS` earlier, else the
    one before (-1: none)"""


class TimestampAlarm(NamedTuple):
    """Timestamp games, per reading (n_readings,); `alarm` is any of the five flags."""

    alarm: Bools
    out_of_order: Bools
    """earlier than a reading of the stream that came before it"""
    duplicate: Bools
    """same time as an earlier reading of the stream, with a different value"""
    skewed: Bools
    """time more than `MAX_FUTURE_MS` after its arrival, or `MAX_DELAY_MS` before it"""
    too_regular: Bools
    """inter-arrival gaps over the window vary by less than `MIN_JITTER_MS`"""
    too_dense: Bools
    """gap to the previous reading below `DENSE_FRACTION` of the stream's median gap"""
    lag_ms: Ints
    """latest earlier time of the stream minus this time (> 0: out of order)"""
    skew_ms: Ints
    """arrival minus time (0 without arrival times)"""
    gap_ms: Ints
    """time since the previous reading of the stream (-1: first)"""
    median_gap_ms: Floats
    """the stream's median gap"""
    arrival_jitter_ms: Floats
    """SD of the window's inter-arrival gaps (NaN: too few, or no arrival times)"""


def frozen_values(
    stream: Ints,
    time_ms: Ints,
    value: Floats,
    channel: Ints,
    min_duration_ms: npt.ArrayLike | None = None,
) -> FrozenAlarm:
    """Readings whose value has stayed at one reported level (the value rounded to the
    channel's `RESOLUTION`) for at least `min_duration_ms` (default the channel's
    `FROZEN_MIN_MS`), in a run too long for this sensor to make by chance (`FROZEN_RUN_P`;
    the share of repeats is counted over the `FROZEN_BASE_READINGS` before the run, with one
    repeat and one change assumed). Levels, not steps, so neither a slow drift in small
    steps nor a freeze after one counts wrongly."""
    seg = segment_starts(stream)
    n = stream.shape[0]
    index = np.arange(n)
    prev = np.maximum(index - 1, 0)
    # A run breaks at the stream's start and wherever the reported level changes (integers:
    # any change at all).
    level = np.round(value / RESOLUTION[channel])
    moved = level != level[prev]
    breaks = (index == seg) | moved
    run_start = np.maximum.accumulate(np.where(breaks, index, 0))
    duration = (time_ms - time_ms[run_start]).astype(np.float64)
    threshold = (
        FROZEN_MIN_MS[channel]
        if min_duration_ms is None
        else np.broadcast_to(np.asarray(min_duration_ms, dtype=np.float64), (n,))
    )
    repeated = ~moved & (index != seg)
    repeats = np.concatenate(([0], np.cumsum(repeated)))
    base_lo = np.maximum(seg, run_start - FROZEN_BASE_READINGS)
    share = (repeats[run_start] - repeats[base_lo] + 1.0) / (run_start - base_lo + 2.0)
    pinned = value >= PINNED[channel]
    if pinned.any():
        stays = np.concatenate(([0], np.cumsum(repeated & pinned)))
        visits = np.concatenate(([0], np.cumsum(pinned)))
        pin_share = ((stays[run_start] - stays[base_lo] + 1.0)
                     / (visits[run_start] - visits[base_lo] + 2.0))
        share = np.where(pinned, pin_share, share)
    run_readings = index - run_start + 1
    chance = share ** (run_readings - 1)
    at_limit = (value <= REPORTING_LOW[channel]) | (value >= REPORTING_HIGH[channel])
    settled = pinned & (duration > PINNED_MAX_MS)
    alarm = (duration >= threshold) & (chance < FROZEN_RUN_P) & ~at_limit & ~settled
    return FrozenAlarm(
        alarm,
        duration,
        np.asarray(threshold, dtype=np.float64),
        time_ms[run_start].astype(np.int64),
        run_readings,
        share,
        chance,
    )


def replayed_windows(
    stream: Ints,
    time_ms: Ints,
    value: Floats,
    channel: Ints,
    window: int = REPLAY_WINDOW,
    tolerance: npt.ArrayLike | None = None,
    min_variation: float = REPLAY_MIN_VARIATION,
) -> ReplayAlarm:
    """Readings that end a window of `window` values whose successive differences repeat an
    earlier, non-overlapping window of the same stream.

    Differences are quantized to steps of `tolerance` (default the channel's `RESOLUTION`)
    and each window hashed (a random-weighted sum, wrapping at 2**64); windows with equal
    stream and hash are grouped by one sort, each is compared exactly with the group's
    earliest window, so a hash collision never alarms. Windows with too little variation
    (`min_variation` resolution steps per difference) or too few different changes
    (`REPLAY_MIN_DISTINCT`: a straight ramp) are skipped: they match by chance.
    """
    if window < 3:
        raise ValueError(f"replay: window must be at least 3 values, got {window}")
    n = stream.shape[0]
    index = np.arange(n)
    seg = segment_starts(stream)
    step = (
        RESOLUTION[channel]
        if tolerance is None
        else np.broadcast_to(np.asarray(tolerance, dtype=np.float64), (n,))
    )
    diff = np.zeros(n)
    has_prev = index > seg
    diff[has_prev] = value[has_prev] - value[index[has_prev] - 1]
    quanta = np.zeros(n, dtype=np.int64)
    quanta[has_prev] = np.rint(diff[has_prev] / step[has_prev]).astype(np.int64)

    alarm = np.zeros(n, dtype=bool)
    statistic = np.full(n, np.nan)
    source_start = np.full(n, -1, dtype=np.int64)
    source_end = np.full(n, -1, dtype=np.int64)
    offset = np.full(n, np.nan)
    since = time_ms[np.clip(index - window + 1, seg, None)].astype(np.int64)
    width = window - 1
    if n < window:
        return ReplayAlarm(alarm, statistic, 0.5 * step, since, source_start, source_end, offset)

    # (1): windows of `width` differences; row r ends at reading r + width.
    rows = sliding_window_view(quanta, width)
    ends = np.arange(width, n)
    distinct = (np.diff(np.sort(rows[1:], axis=1), axis=1) != 0).sum(axis=1) + 1
    valid = (
        (ends - window + 1 >= seg[ends])
        & (np.abs(rows[1:]).sum(axis=1) >= min_variation * width)
        & (distinct >= REPLAY_MIN_DISTINCT)
    )
    rows = rows[1:]  # drop the row whose first difference precedes reading 1
    # (2): hash each window with fixed random odd weights (wrapping uint64 arithmetic).
    weights = np.random.default_rng(0x6D656474).integers(
        1, 2**63, size=width, dtype=np.uint64
    ) | np.uint64(1)
    hashes = (rows.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)
    candidate = np.flatnonzero(valid)
    if candidate.size == 0:
        return ReplayAlarm(alarm, statistic, 0.5 * step, since, source_start, source_end, offset)
    # (3): group equal (stream, hash); the earliest window of each group is its source.
    order = candidate[np.lexsort((candidate, hashes[candidate], stream[ends[candidate]]))]
    new_group = np.ones(order.size, dtype=bool)
    new_group[1:] = (hashes[order[1:]] != hashes[order[:-1]]) | (
        stream[ends[order[1:]]] != stream[ends[order[:-1]]]
    )
    first = order[np.maximum.accumulate(np.where(new_group, np.arange(order.size), 0))]
    # (4): a copy must not overlap its source and must equal it exactly, not just by hash.
    later = ends[order] - ends[first] >= window
    later &= np.all(rows[order] == rows[first], axis=1)
    row, src = order[later], first[later]
    at, src_end = ends[row], ends[src]
    alarm[at] = True
    gap = np.abs(
        sliding_window_view(diff, width)[1:][row] - sliding_window_view(diff, width)[1:][src]
    )
    statistic[at] = gap.max(axis=1)
    source_start[at] = time_ms[src_end - window + 1]
    source_end[at] = time_ms[src_end]
    offset[at] = value[at] - value[src_end]
    return ReplayAlarm(alarm, statistic, 0.5 * step, since, source_start, source_end, offset)


def replayed_segments(stream: Ints, time_ms: Ints, value: Floats, channel: Ints
                      ) -> ReplayAlarm:
    """`replayed_windows` with the default window, and for smooth channels
    (`REPLAY_LONG_CHANNELS`) also with the long one: a reading alarms if either pass finds
    its window copied, with the evidence of the pass that did (the default's first). On
    those channels the default window must be a verbatim copy (levels too): a smooth ramp
    matches a shifted earlier ramp by chance, so a shifted copy needs the long window."""
    short = replayed_windows(stream, time_ms, value, channel)
    smooth = np.isin(channel, [int(c) for c in REPLAY_LONG_CHANNELS])
    if not smooth.any():
        return short
    verbatim = np.abs(np.nan_to_num(short.offset, nan=np.inf)) <= short.threshold
    short = short._replace(alarm=short.alarm & (~smooth | verbatim))
    # the long pass over the smooth channels' streams only (whole streams: same result)
    rows = np.flatnonzero(smooth)
    long = replayed_windows(stream[rows], time_ms[rows], value[rows], channel[rows],
                            window=REPLAY_LONG_WINDOW, min_variation=REPLAY_LONG_VARIATION)
    take = long.alarm & ~short.alarm[rows]
    merged = []
    for sf, lf in zip(short, long, strict=True):
        field = np.array(sf, copy=True)
        field[rows[take]] = lf[take]
        merged.append(field)
    return ReplayAlarm(*merged)


def _stream_rank(stream: Ints) -> Ints:
    """Dense 0, 1, ... per run of equal stream ids (the batch is ordered by stream)."""
    new = np.ones(stream.shape[0], dtype=np.int64)
    new[1:] = stream[1:] != stream[:-1]
    return np.cumsum(new) - 1


def _group_median(group: Ints, x: Floats, n_groups: int) -> Floats:
    """Median of `x` per group id in [0, n_groups) (NaN for a group without values)."""
    order = np.lexsort((x, group))
    xs = x[order]
    counts = np.bincount(group, minlength=n_groups)
    starts = np.cumsum(counts) - counts
    lo = np.clip(starts + (counts - 1) // 2, 0, max(xs.size - 1, 0))
    hi = np.clip(starts + counts // 2, 0, max(xs.size - 1, 0))
    if xs.size == 0:
        return np.full(n_groups, np.nan)
    return np.where(counts > 0, 0.5 * (xs[lo] + xs[hi]), np.nan)


def noise_bursts(
    stream: Ints,
    time_ms: Ints,
    value: Floats,
    channel: Ints,
    window: int = NOISE_WINDOW,
    ratio: float = NOISE_RATIO,
) -> NoiseAlarm:
    """Readings that end a window of `window` values whose changes vary far more (robust
    variance of second differences `ratio` times) than the stream's usual.

    The usual variance of first differences is robust and blind to slow trends: from the MAD
    of the stream's second differences (for white noise of SD s, first differences have
    variance 2 s**2 and second differences 6 s**2), floored at what second differences of
    two resolution steps imply, so a quantized, nearly flat stream is not called quiet. The
    window's spread is about its own median difference, so a steady rise or fall is not
    noise, and a single step or spike is not either. A stream is judged once it has
    `NOISE_MIN_HISTORY` windows of readings.
    """
    if window < 3:
        raise ValueError(f"noise: window must be at least 3 values, got {window}")
    n = stream.shape[0]
    index = np.arange(n)
    seg = segment_starts(stream)
    rank = _stream_rank(stream)
    n_streams = int(rank[-1]) + 1 if n else 0
    diff = np.zeros(n)
    has_prev = index > seg
    diff[has_prev] = value[has_prev] - value[index[has_prev] - 1]
    # (1): the stream's usual variance of first differences.
    has_two = index - 2 >= seg
    second = diff[has_two] - diff[index[has_two] - 1]
    centre = _group_median(rank[has_two], second, n_streams)
    mad = _group_median(rank[has_two], np.abs(second - centre[rank[has_two]]), n_streams)
    floor = (MAD_TO_SD * 2.0 * RESOLUTION[channel]) ** 2 / 3.0
    usual_var = np.maximum((MAD_TO_SD * mad[rank]) ** 2 / 3.0, floor)
    # (2): the same robust statistic over the window's last `window - 2` second differences
    # (their MAD about their median): a trend or a meal's curve moves neither, and one step
    # in an otherwise steady stream is not a burst of noise.
    width = window - 2
    all_second = np.zeros(n)
    all_second[has_two] = second
    local_var = np.full(n, np.nan)
    if n >= width:
        win = sliding_window_view(all_second, width)
        centre_w = np.median(win, axis=1, keepdims=True)
        local_var[width - 1:] = (
            MAD_TO_SD * np.median(np.abs(win - centre_w), axis=1)) ** 2 / 3.0
    full = index - NOISE_MIN_HISTORY * window >= seg      # the usual is known by now
    statistic = np.where(full, local_var / usual_var, np.nan)
    alarm = statistic > ratio
    since = time_ms[np.clip(index - width - 1, seg, None)].astype(np.int64)
    return NoiseAlarm(alarm, statistic, np.full(n, ratio), since, np.sqrt(usual_var))


def _composite_key(rank: Ints, time_ms: Ints) -> tuple[Ints, int, int]:
    """One sortable int64 key per (stream rank, time): rank * (span + 1) + time - t0."""
    t0 = int(time_ms.min())
    span = int(time_ms.max()) - t0 + 1
    if (int(rank[-1]) + 1) * span >= 2**62:
        raise ValueError("rate: time range too wide for the batch's number of streams")
    return rank * span + (time_ms - t0), t0, span


def level_jumps(stream: Ints, time_ms: Ints, value: Floats, channel: Ints) -> JumpAlarm:
    """Readings that end `JUMP_SIDE` readings at a new level reached in one step: a straight
    line through the `JUMP_SIDE` readings before the step and one through those from it on,
    each met halfway across the step, differ by at least the channel's `JUMP_MIN` and by
    `JUMP_STEADY` times either line's largest miss. Physiology moves glucose along a smooth
    curve, whose two sides meet; an offset added to a sensor (or a spliced-in recording) moves
    it in a step, whatever the trend on either side. The step's two readings must be at most
    `JUMP_MAX_GAP_MS` apart, and each side may span one missed reading more. A step with
    one side wholly at the sensor's LOW (`REPORTING_LOW`) is judged against the smaller
    `JUMP_MIN_AT_LOW`: a stream crossing LOW meets it."""
    n = stream.shape[0]
    side = JUMP_SIDE
    alarm = np.zeros(n, bool)
    jump = np.full(n, np.nan)
    spread = np.full(n, np.nan)
    since = np.full(n, -1, np.int64)
    at_low = np.zeros(n, bool)
    threshold = JUMP_MIN[channel] if n else np.zeros(0)
    if n < 2 * side:
        return JumpAlarm(alarm, jump, threshold, since, spread, at_low)
    seg = segment_starts(stream)
    ends = np.arange(2 * side - 1, n)
    step_at = ends - side + 1
    minutes = sliding_window_view(time_ms.astype(np.float64) / MINUTE_MS, 2 * side)
    values = sliding_window_view(value, 2 * side)       # row r: readings r .. r + 2 side - 1
    x = minutes - 0.5 * (minutes[:, side - 1:side] + minutes[:, side:side + 1])
    level_b, miss_b = _line_at_zero(x[:, :side], values[:, :side])
    level_a, miss_a = _line_at_zero(x[:, side:], values[:, side:])
    size = level_a - level_b
    spread_r = np.maximum(miss_b, miss_a)
    whole = ends - 2 * side + 1 >= seg[ends]
    # the step itself within one reading interval; each side may miss a reading
    max_gap = JUMP_MAX_GAP_MS / MINUTE_MS
    close = ((minutes[:, side] - minutes[:, side - 1] <= max_gap)
             & (minutes[:, side - 1] - minutes[:, 0] <= side * max_gap)
             & (minutes[:, -1] - minutes[:, side] <= side * max_gap))
    low = values <= REPORTING_LOW[channel[ends]][:, None]
    limit_side = low[:, :side].all(axis=1) != low[:, side:].all(axis=1)
    step_gap = minutes[:, side] - minutes[:, side - 1]
    low_min = np.maximum(JUMP_MIN_AT_LOW[channel[ends]], JUMP_RATE_AT_LOW * step_gap)
    limit_side &= low_min < threshold[ends]
    threshold = threshold.copy()
    threshold[ends] = np.where(limit_side, low_min, threshold[ends])
    hit = (whole & close & (np.abs(size) >= threshold[ends])
           & (np.abs(size) >= JUMP_STEADY * spread_r))
    jump[ends] = size
    spread[ends] = spread_r
    since[ends] = time_ms[step_at]
    alarm[ends] = hit
    at_low[ends] = limit_side & (np.abs(size) < JUMP_MIN[channel[ends]])
    return JumpAlarm(alarm, jump, threshold, since, spread, at_low)


def _line_at_zero(x: Floats, y: Floats) -> tuple[Floats, Floats]:
    """Per row, the least-squares line through (x, y): its value at x = 0 and its largest
    |miss| of a point (a row of equal x: a flat line through their mean)."""
    xm = x.mean(axis=1, keepdims=True)
    ym = y.mean(axis=1, keepdims=True)
    sxx = ((x - xm) ** 2).sum(axis=1, keepdims=True)
    slope = np.where(sxx > 0, ((x - xm) * (y - ym)).sum(axis=1, keepdims=True)
                     / np.where(sxx > 0, sxx, 1.0), 0.0)
    fit = ym + slope * (x - xm)
    return (ym - slope * xm)[:, 0], np.abs(y - fit).max(axis=1)


def impossible_rates(
    stream: Ints, time_ms: Ints, value: Floats, channel: Ints, span_ms: int = RATE_SPAN_MS
) -> RateAlarm:
    """Readings that changed faster than the channel's `MAX_RATE_PER_MIN` since the last
    reading at least `span_ms` earlier (else the one before); a change over less than
    `span_ms` is divided by `span_ms`, so only sustained change counts."""
    n = stream.shape[0]
    index = np.arange(n)
    seg = segment_starts(stream)
    threshold = MAX_RATE_PER_MIN[channel]
    if n == 0:
        empty = np.zeros(0)
        return RateAlarm(np.zeros(0, dtype=bool), empty, empty, np.zeros(0, dtype=np.int64))
    rank = _stream_rank(stream)
    # Search on the running latest time, which is sorted within each stream even when a
    # reading came out of order.
    latest = segmented_cummax(time_ms.astype(np.int64), seg)
    key, t0, span = _composite_key(rank, latest)
    target = rank * span + (time_ms - span_ms - t0)
    ref = np.searchsorted(key, target, side="right") - 1
    ref = np.where((ref >= seg) & (ref < index), ref, index - 1)
    has_ref = ref >= seg
    ref = np.where(has_ref, ref, index)
    elapsed_min = np.maximum(time_ms - time_ms[ref], span_ms) / MINUTE_MS
    statistic = np.where(has_ref, (value - value[ref]) / elapsed_min, np.nan)
    alarm = np.abs(statistic) > threshold
    since = np.where(has_ref, time_ms[ref], -1).astype(np.int64)
    return RateAlarm(alarm, statistic, threshold, since)


def timestamp_games(
    stream: Ints, time_ms: Ints, value: Floats, channel: Ints, arrival_ms: Ints | None = None
) -> TimestampAlarm:
    """Readings out of order, duplicating an earlier time with another value, far from their
    arrival, arriving with machine regularity, or denser than the stream's sampling."""
    n = stream.shape[0]
    index = np.arange(n)
    seg = segment_starts(stream)
    rank = _stream_rank(stream)
    n_streams = int(rank[-1]) + 1 if n else 0
    has_prev = index > seg
    prev = np.where(has_prev, index - 1, index)
    # (1): out of order: behind the latest time of the readings before it.
    latest = segmented_cummax(time_ms.astype(np.int64), seg)
    latest_before = np.where(has_prev, latest[prev], time_ms)
    lag = (latest_before - time_ms).astype(np.int64)
    out_of_order = lag > 0
    # (2): duplicates: group equal (stream, time); compare with the group's first reading.
    order = np.lexsort((index, time_ms, stream))
    new = np.ones(n, dtype=bool)
    new[1:] = (stream[order[1:]] != stream[order[:-1]]) | (
        time_ms[order[1:]] != time_ms[order[:-1]]
    )
    first = np.empty(n, dtype=np.intp)
    first[order] = order[np.maximum.accumulate(np.where(new, np.arange(n), 0))]
    duplicate = np.abs(value - value[first]) > 0.5 * RESOLUTION[channel]
    # (3): skew against arrival, and machine-regular inter-arrival gaps.
    skew = np.zeros(n, dtype=np.int64)
    jitter = np.full(n, np.nan)
    if arrival_ms is not None:
        skew = (arrival_ms - time_ms).astype(np.int64)
        gaps = np.where(has_prev, (arrival_ms - arrival_ms[prev]).astype(np.float64), 0.0)
        width = SPACING_WINDOW - 1
        s1 = np.concatenate(([0.0], np.cumsum(gaps)))
        s2 = np.concatenate(([0.0], np.cumsum(gaps * gaps)))
        lo = np.maximum(index + 1 - width, 0)
        sum1, sum2 = s1[index + 1] - s1[lo], s2[index + 1] - s2[lo]
        var = np.maximum(sum2 - sum1 * sum1 / width, 0.0) / (width - 1)
        jitter = np.where(index - width >= seg, np.sqrt(var), np.nan)
    skewed = (skew < -MAX_FUTURE_MS) | (skew > MAX_DELAY_MS)
    too_regular = jitter < MIN_JITTER_MS
    # (4): denser than the stream's sampling: the gap against the stream's median gap.
    gap = np.where(has_prev, time_ms - time_ms[prev], -1).astype(np.int64)
    median_gap = (
        _group_median(rank[has_prev], gap[has_prev].astype(np.float64), n_streams)[rank]
        if n
        else np.zeros(0)
    )
    too_dense = has_prev & (gap > 0) & (gap < DENSE_FRACTION * median_gap)
    alarm = out_of_order | duplicate | skewed | too_regular | too_dense
    return TimestampAlarm(
        alarm,
        out_of_order,
        duplicate,
        skewed,
        too_regular,
        too_dense,
        lag,
        skew,
        gap,
        median_gap,
        jitter,
    )
