"""Cross-sensor consistency (the "oracle" check): a reading is judged against the patient's
other devices and other channels, so no single compromised device can move the twin alone.

Two pure checks, batched over patients (results for a patient never depend on the others):

- `device_agreement`: the same quantity from two or more devices (heart rate from an ECG
  patch and a wrist PPG). Each reading is paired with the nearest reading of every other
  device of its patient within `PAIR_TOLERANCE_MS` (sort + searchsorted, no loop over
  readings) and a pair disagrees when |difference| > `AGREEMENT_SIGMAS` x the combined noise
  SD of both devices. With two devices a disagreement blames neither: both are DISPUTED. With
  three or more a majority vote decides: a reading that agrees with at least half of its
  partners is CONSISTENT, one that disagrees with a partner in such a majority while
  agreeing with too few itself is the OUTLIER; with no majority anywhere all are DISPUTED.
- `physiological_coherence`: one patient's channels against each other. Rules (conservative:
  real deterioration moves several channels together and must not alarm):
  (1) SpO2 < 88 % and >= 6 % below the patient's baseline for >= 15 min while heart rate
      and respiratory rate, averaged over the last 15 min of that run, stay within +-10 /min
      and +-3 /min of baseline.
      Hypoxaemia drives breathing (hypoxic ventilatory response, Weil et al. 1970, J Clin
      Invest 49:1061) and heart rate (chemoreflex sympathetic activation); respiratory
      depression (opioids) lowers RR, which is a change too. SpO2 < 88 % is below the target
      range of every patient group (BTS oxygen guideline, O'Driscoll et al. 2017, Thorax
      72:i1: 94-98 %, 88-92 % at risk of hypercapnia); the drop from baseline spares
      chronically hypoxaemic patients. Beta-blockade blunts HR, but not RR as well.
  (2) Heart rate >= 40 /min above baseline for >= 15 min while SpO2, RR and systolic BP,
      averaged alike, all stay within their bands and at least two of them are measured. Fever
      (Liebermeister: ~10 /min per °C), hypovolaemia, sepsis and exercise all move RR or
      BP with it; a re-entrant tachycardia (SVT, AF) can jump alone, so this rule is a
      doubt to corroborate with `device_agreement` on a second HR device, not a verdict.
  A companion channel is read as its latest reading at or before the reading, at most
  `COMPANION_MAX_AGE_MS` old, sampled at the target channel's readings; while fewer
  companions than a rule needs are fresh the run counts as responding, so no rule alarms
  without evidence.

Glucose against insulin and meals is not judged here: that coherence is the glucose twin's
innovation, tested by `nis_test`, `window_test` and `cusum_test` (`_residuals.py`).
"""

from __future__ import annotations

import enum
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from medtwin.domain import N_CHANNELS, Channel
from medtwin.estimation import NO_TIME
from medtwin.guard._patterns import per_channel

Bools = npt.NDArray[np.bool_]
Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

MINUTE_MS = 60_000
#: Two devices' readings closer than this are the same moment: one minute, the slowest usual
#: vital-sign sampling of a wearable (many PPG watches report HR once a minute at rest).
PAIR_TOLERANCE_MS = 60_000
#: A pair disagrees beyond this many SDs of the difference of two independent devices
#: (3 sigma: ~0.3 % of honest pairs if the noise were normal; with the defaults below HR
#: pairs disagree beyond 3 sqrt(3² + 3²) = 12.7 /min).
AGREEMENT_SIGMAS = 3.0


#: Default SD of one device's error per channel, including what physiology changes within
#: `PAIR_TOLERANCE_MS`. HR: wrist PPG against ECG at rest errs by a few /min (Bent et al.
#: 2020, npj Digit Med 3:18), 3 /min. SpO2: pulse oximeters must reach A_rms <= 3 % (ISO
#: 80601-2-61; FDA 2013 guidance), 2 %. RR: impedance and PPG-derived RR, 2 /min. BP: cuffs
#: validated to a mean difference <= 5 and SD <= 8 mmHg (ISO 81060-2), 6 mmHg. Temperature:
#: 0.2 °C. Glucose: CGMs with a MARD of ~10 %, 12 mg/dL. Inputs are not measured: inf.
DEVICE_NOISE_SD = per_channel(
    {
        Channel.GLUCOSE: 12.0,
        Channel.HEART_RATE: 3.0,
        Channel.SPO2: 2.0,
        Channel.RESP_RATE: 2.0,
        Channel.SYSTOLIC_BP: 6.0,
        Channel.DIASTOLIC_BP: 6.0,
        Channel.TEMPERATURE: 0.2,
    },
    np.inf,
)

#: Rule (1): SpO2 below `HYPOXAEMIA_SPO2` and at least `HYPOXAEMIA_DROP` below baseline (%).
HYPOXAEMIA_SPO2 = 88.0
HYPOXAEMIA_DROP = 6.0
#: Rule (2): heart rate at least `TACHYCARDIA_RISE` (/min) above baseline.
TACHYCARDIA_RISE = 40.0
#: How long the target must stay abnormal with silent companions before it alarms (ms).
SUSTAINED_MS = 15 * MINUTE_MS
#: A companion's reading is used for at most this long after it was taken (ms).
COMPANION_MAX_AGE_MS = 5 * MINUTE_MS
#: "Unchanged" band of each companion around its baseline: beyond it the channel has
#: responded. About 3 SD of resting variation (HR ~3 /min, RR ~1 /min, SpO2 ~1 %, SBP ~4 mmHg)
#: plus the daily rhythm (HR +-5, RR +-0.8, SBP +-5; Degaute et al. 1991, Hypertension 18:199).
UNCHANGED_BAND = per_channel(
    {
        Channel.HEART_RATE: 10.0,
        Channel.RESP_RATE: 3.0,
        Channel.SPO2: 3.0,
        Channel.SYSTOLIC_BP: 15.0,
    },
    np.inf,
)


class Agreement(enum.IntEnum):
    """How a reading stands against the same channel from the patient's other devices."""

    UNPAIRED = 0
    """no other device read the channel within the tolerance: not judged"""
    CONSISTENT = 1
    """agrees with every partner, or with at least half of them"""
    DISPUTED = 2
    """disagrees, and no majority says who is wrong (always so with two devices)"""
    OUTLIER = 3
    """disagrees with a majority that agrees among itself: this device is blamed"""


class CoherenceRule(enum.IntEnum):
    """The physiological-coherence rule a reading was judged by."""

    NONE = 0
    """no rule applies to this reading (channel or value not covered)"""
    HYPOXAEMIA_WITHOUT_RESPONSE = 1
    """rule (1): low SpO2 while HR and RR stay at baseline"""
    TACHYCARDIA_WITHOUT_RESPONSE = 2
    """rule (2): a large HR rise while SpO2, RR and SBP stay at baseline"""


class DeviceAgreement(NamedTuple):
    """The multi-device check per reading (n_readings,), in the order given."""

    status: npt.NDArray[np.int8]
    """an `Agreement`"""
    alarm: Bools
    """status DISPUTED or OUTLIER"""
    statistic: Floats
    """|difference| to the partner it disagrees with most (relative to threshold; NaN: none)"""
    threshold: Floats
    """that pair's threshold: `AGREEMENT_SIGMAS` sqrt(sd_self² + sd_partner²)"""
    partner_device: Ints
    """that partner's device (-1: none)"""
    partner_value: Floats
    partner_time_ms: Ints
    n_partners: Ints
    """devices it was compared with"""
    n_disagree: Ints
    """of those, how many disagree with it"""
    consensus: Floats
    """median of the partners' values: no alarm had the value been within `threshold`"""
    since_ms: Ints
    """time of the first reading of this device's current run of alarms (`NO_TIME`: none)"""


class Coherence(NamedTuple):
    """The cross-channel check per reading (n_readings,), in the order given."""

    rule: npt.NDArray[np.int8]
    """the `CoherenceRule` that applies (NONE: not judged)"""
    score: Floats
    """largest companion change (mean over the window) in units of its band, capped at 1:
    1 is coherent, 0 every companion exactly at baseline; 1 where no rule applies"""
    alarm: Bools
    """rule applies, sustained >= `SUSTAINED_MS`, and every companion stayed strictly inside
    its band (score < 1)"""
    statistic: Floats
    """the reading's value (the abnormal target)"""
    threshold: Floats
    """the value the target is abnormal beyond (NaN where no rule applies)"""
    since_ms: Ints
    """first reading of the run in which the target has been abnormal (`NO_TIME`: none)"""
    companions: Floats
    """(n_readings, N_CHANNELS): latest value of each channel at the reading (NaN: none)"""
    silent_channels: Ints
    """bit mask (1 << Channel) of the companions whose window mean stayed in their band"""


def _check(*arrays: npt.ArrayLike) -> None:
    shapes = {np.shape(a) for a in arrays}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError("guard: per-reading arrays must have one equal shape (n,)")


def _composite(group: Ints, time_ms: Ints, n_groups: int, slack_ms: int) -> tuple[Ints, int]:
    """One sortable int64 key per (group, time), and the time origin it subtracts."""
    t0 = int(time_ms.min(initial=0)) - slack_ms
    span = int(time_ms.max(initial=0)) - t0 + slack_ms + 1
    if n_groups * span >= 2**62:
        raise ValueError("guard: batch spans too long a time for so many streams")
    return group * span + (time_ms - t0), span


def _window_sum(x: Floats, lo: npt.NDArray[np.intp], hi: npt.NDArray[np.intp]) -> Floats:
    """Column sums of `x` (n, k) over rows [lo, hi) per row, by cumulative sums."""
    total = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0)])
    return np.asarray(total[hi] - total[lo], dtype=np.float64)


def _no_agreement(n: int) -> DeviceAgreement:
    """The result for `n` readings none of which could be judged."""
    return DeviceAgreement(
        np.full(n, Agreement.UNPAIRED, np.int8),
        np.zeros(n, bool),
        np.full(n, np.nan),
        np.full(n, np.nan),
        np.full(n, -1, np.int64),
        np.full(n, np.nan),
        np.full(n, NO_TIME, np.int64),
        np.zeros(n, np.int64),
        np.zeros(n, np.int64),
        np.full(n, np.nan),
        np.full(n, NO_TIME, np.int64),
    )


def device_agreement(
    patient: Ints,
    device: Ints,
    time_ms: Ints,
    value: Floats,
    channel: Channel,
    noise_sd: Floats | float | None = None,
    tolerance_ms: int = PAIR_TOLERANCE_MS,
    sigmas: float = AGREEMENT_SIGMAS,
) -> DeviceAgreement:
    """Judge each reading of one `channel` against the patient's other devices; pure.

    `noise_sd` is each reading's device error SD (scalar or (n,)); None: the channel's
    `DEVICE_NOISE_SD`. Readings may come in any order; NaN values are not judged.
    """
    # (0): inputs and groups of (patient, device), sorted by group then time.
    _check(patient, device, time_ms, value)
    patient = np.asarray(patient, dtype=np.int64)
    device = np.asarray(device, dtype=np.int64)
    time_ms = np.asarray(time_ms, dtype=np.int64)
    value = np.asarray(value, dtype=np.float64)
    n = value.shape[0]
    sd = np.broadcast_to(
        np.asarray(
            DEVICE_NOISE_SD[int(channel)] if noise_sd is None else noise_sd, dtype=np.float64
        ),
        (n,),
    )
    if n and (patient.min() < 0 or device.min() < 0):
        raise ValueError("guard: patient and device ids must be >= 0")
    ok = np.isfinite(value)
    pair_key = patient * (int(device.max(initial=0)) + 1) + device
    groups, group = np.unique(pair_key, return_inverse=True)
    group = group.astype(np.int64).reshape(-1)
    n_groups = groups.shape[0]
    group_patient = groups // (int(device.max(initial=0)) + 1)
    key, span = _composite(group, time_ms, n_groups, tolerance_ms)
    order = np.argsort(np.where(ok, key, np.iinfo(np.int64).max), kind="stable")
    order = order[ok[order]]
    sorted_key, sorted_group = key[order], group[order]

    if order.size == 0:
        return _no_agreement(n)

    # (1): every judged reading against every other device (group) of its patient.
    first = np.searchsorted(group_patient, group_patient, side="left")
    count = np.searchsorted(group_patient, group_patient, side="right") - first
    mine = np.flatnonzero(ok)
    rep = count[group[mine]]
    cand = np.repeat(mine, rep)
    offset = np.arange(cand.size) - np.repeat(np.cumsum(rep) - rep, rep)
    other = first[group[cand]] + offset
    keep = other != group[cand]
    cand, other = cand[keep], other[keep]

    # (2): nearest reading of the other group in time (searchsorted), within the tolerance.
    target = other * span + (key[cand] - group[cand] * span)
    pos = np.searchsorted(sorted_key, target)
    best = np.full(cand.size, -1, np.int64)
    best_dt = np.full(cand.size, np.inf)
    for side in (pos - 1, pos):  # two neighbours, left first (ties go to the earlier)
        s = np.clip(side, 0, sorted_key.size - 1)
        same = (side >= 0) & (side < sorted_key.size) & (sorted_group[s] == other)
        dt = np.where(same, np.abs(sorted_key[s] - target), np.inf)
        better = dt < best_dt
        best = np.where(better, order[s], best)
        best_dt = np.where(better, dt, best_dt)
    paired = best_dt <= tolerance_ms
    cand, partner = cand[paired], best[paired]

    # (3): pairwise disagreement against the combined noise of both devices.
    diff = value[cand] - value[partner]
    thr = sigmas * np.sqrt(sd[cand] ** 2 + sd[partner] ** 2)
    disagree = np.abs(diff) > thr
    n_partners = np.bincount(cand, minlength=n).astype(np.int64)
    n_disagree = np.bincount(cand, weights=disagree, minlength=n).astype(np.int64)

    # (4): the vote. In a majority: agrees with at least half of its partners (with itself,
    # a strict majority of the devices). Outlier: not in a majority, and disagrees with a
    # partner that is, where a majority exists (three devices or more).
    n_agree = n_partners - n_disagree
    in_majority = (n_partners >= 2) & (2 * (1 + n_agree) > n_partners + 1)
    blamed = np.bincount(cand, weights=disagree & in_majority[partner], minlength=n) > 0
    status = np.full(n, Agreement.UNPAIRED, np.int8)
    status[n_partners > 0] = Agreement.DISPUTED
    status[(n_partners > 0) & ((n_disagree == 0) | in_majority)] = Agreement.CONSISTENT
    status[(status == Agreement.DISPUTED) & ~in_majority & blamed] = Agreement.OUTLIER
    alarm = status >= Agreement.DISPUTED

    # (5): evidence: the worst pair, the partners' median, since when this device alarms.
    ratio = np.abs(diff) / np.where(thr > 0, thr, np.inf)
    by_ratio = np.lexsort((ratio, cand))
    last = (
        by_ratio[np.r_[cand[by_ratio][1:] != cand[by_ratio][:-1], True]] if cand.size else by_ratio
    )
    worst = np.full(n, -1, np.int64)
    worst[cand[last]] = last
    has = worst >= 0
    statistic = np.full(n, np.nan)
    threshold = np.full(n, np.nan)
    partner_device = np.full(n, -1, np.int64)
    partner_value = np.full(n, np.nan)
    partner_time = np.full(n, NO_TIME, np.int64)
    w = worst[has]
    statistic[has] = np.abs(diff[w])
    threshold[has] = thr[w]
    partner_device[has] = device[partner[w]]
    partner_value[has] = value[partner[w]]
    partner_time[has] = time_ms[partner[w]]
    by_value = np.lexsort((value[partner], cand))
    seg = np.searchsorted(cand[by_value], np.arange(n))
    low = seg + (n_partners - 1) // 2
    high = seg + n_partners // 2
    consensus = np.full(n, np.nan)
    pv = value[partner][by_value]
    consensus[has] = 0.5 * (pv[low[has]] + pv[high[has]])
    since = np.full(n, NO_TIME, np.int64)
    run_alarm = alarm[order]
    start = np.ones(order.size, bool)
    start[1:] = (sorted_group[1:] != sorted_group[:-1]) | ~run_alarm[:-1]
    run_first = np.maximum.accumulate(np.where(start, np.arange(order.size), 0))
    since[order] = np.where(run_alarm, time_ms[order[run_first]], NO_TIME)
    return DeviceAgreement(
        status,
        alarm,
        statistic,
        threshold,
        partner_device,
        partner_value,
        partner_time,
        n_partners,
        n_disagree,
        consensus,
        since,
    )


#: Per rule: target channel, companions, and whether the target is abnormal below (-1) or
#: above (+1) its threshold.
_RULES: dict[CoherenceRule, tuple[Channel, tuple[Channel, ...], int]] = {
    CoherenceRule.HYPOXAEMIA_WITHOUT_RESPONSE: (
        Channel.SPO2,
        (Channel.HEART_RATE, Channel.RESP_RATE),
        -1,
    ),
    CoherenceRule.TACHYCARDIA_WITHOUT_RESPONSE: (
        Channel.HEART_RATE,
        (Channel.SPO2, Channel.RESP_RATE, Channel.SYSTOLIC_BP),
        +1,
    ),
}
#: Companions a rule needs measured (fresh) before it may call them all silent: both for
#: rule (1), two of three for rule (2) (cuffs read BP only every 15-60 min).
_MIN_COMPANIONS = {
    CoherenceRule.HYPOXAEMIA_WITHOUT_RESPONSE: 2,
    CoherenceRule.TACHYCARDIA_WITHOUT_RESPONSE: 2,
}


def physiological_coherence(
    patient: Ints,
    time_ms: Ints,
    channel: Ints,
    value: Floats,
    baseline: Floats,
    sustained_ms: int = SUSTAINED_MS,
    max_age_ms: int = COMPANION_MAX_AGE_MS,
) -> Coherence:
    """Judge each reading against the patient's other channels by the rules above; pure.

    `baseline` (n_patients, N_CHANNELS) is each patient's usual value per channel (the twin's
    or a personal resting baseline; NaN: unknown, and rules needing it do not apply).
    Readings of all vital channels in any order; causal: a reading is judged on it and
    earlier readings only.
    """
    # (0): inputs; readings sorted by (patient, channel, time), one stream per pair.
    _check(patient, time_ms, channel, value)
    patient = np.asarray(patient, dtype=np.int64)
    time_ms = np.asarray(time_ms, dtype=np.int64)
    channel = np.asarray(channel, dtype=np.int64)
    value = np.asarray(value, dtype=np.float64)
    baseline = np.asarray(baseline, dtype=np.float64)
    n = value.shape[0]
    if baseline.ndim != 2 or baseline.shape[1] != N_CHANNELS:
        raise ValueError(f"guard: baseline must have shape (n_patients, {N_CHANNELS})")
    if n and (patient.min() < 0 or patient.max() >= baseline.shape[0]):
        raise ValueError(f"guard: patient ids must be in [0, {baseline.shape[0]})")
    ok = np.isfinite(value)
    stream = patient * N_CHANNELS + channel
    key, span = _composite(stream, time_ms, int(baseline.shape[0]) * N_CHANNELS, max_age_ms)
    order = np.argsort(np.where(ok, key, np.iinfo(np.int64).max), kind="stable")
    order = order[ok[order]]
    sorted_key = key[order]

    # (1): the latest reading of every vital channel at or before each reading.
    companions = np.full((n, N_CHANNELS), np.nan)
    for ch in Channel:
        if ch.is_input or order.size == 0:
            continue
        wanted = patient * N_CHANNELS + int(ch)
        target = wanted * span + (key - stream * span)
        pos = np.searchsorted(sorted_key, target, side="right") - 1
        p = np.maximum(pos, 0)
        found = (
            (pos >= 0) & (sorted_key[p] // span == wanted) & (target - sorted_key[p] <= max_age_ms)
        )
        companions[found, int(ch)] = value[order[p[found]]]

    # (2): per rule, the runs of abnormal target readings and their companions' response.
    rule = np.zeros(n, np.int8)
    score = np.ones(n)
    alarm = np.zeros(n, bool)
    threshold = np.full(n, np.nan)
    since = np.full(n, NO_TIME, np.int64)
    silent = np.zeros(n, np.int64)
    base = baseline[patient] if n else np.zeros((0, N_CHANNELS))
    for kind, (target_ch, companion_chs, sign) in _RULES.items():
        rows = order[channel[order] == int(target_ch)]  # sorted by patient, time
        b = base[rows, int(target_ch)]
        if kind is CoherenceRule.HYPOXAEMIA_WITHOUT_RESPONSE:
            limit = np.minimum(HYPOXAEMIA_SPO2, b - HYPOXAEMIA_DROP)
        else:
            limit = b + TACHYCARDIA_RISE
        abnormal = (sign * (value[rows] - limit) > 0) & np.isfinite(limit)
        # Runs: consecutive abnormal readings of one patient.
        start = np.ones(rows.size, bool)
        start[1:] = (patient[rows][1:] != patient[rows][:-1]) | ~abnormal[:-1]
        run_first = np.maximum.accumulate(np.where(start, np.arange(rows.size), 0))
        duration = time_ms[rows] - time_ms[rows][run_first]
        # Window: the run's readings of the last `sustained_ms` (searchsorted on the key).
        lo = np.maximum(run_first, np.searchsorted(key[rows], key[rows] - sustained_ms))
        hi = np.arange(rows.size) + 1
        # Each companion's mean deviation from baseline over the window, in units of its
        # band (a mean, so one noisy sample is no "response"); unmeasured ones left out.
        cols = list(companion_chs)
        deviation = companions[rows][:, cols] - base[rows][:, cols]
        measured = np.isfinite(deviation)
        sums = _window_sum(np.where(measured, deviation, 0.0), lo, hi)
        counts = _window_sum(measured.astype(np.float64), lo, hi)
        response = np.abs(sums) / np.maximum(counts, 1.0) / UNCHANGED_BAND[cols]
        # Too few fresh companions at any reading of the window: no evidence, responding.
        short = (measured.sum(axis=1) < _MIN_COMPANIONS[kind]).astype(np.float64)
        blind = _window_sum(short[:, None], lo, hi)[:, 0] > 0
        response[blind] = np.inf
        strongest = response.max(axis=1, initial=0.0)
        rule[rows[abnormal]] = kind
        threshold[rows[abnormal]] = limit[abnormal]
        since[rows[abnormal]] = time_ms[rows][run_first][abnormal]
        score[rows[abnormal]] = np.minimum(strongest[abnormal], 1.0)
        alarm[rows] = abnormal & (duration >= sustained_ms) & (strongest < 1.0)
        bits = np.zeros(rows.size, np.int64)
        for j, c in enumerate(companion_chs):
            bits |= np.where(response[:, j] < 1.0, 1 << int(c), 0)
        silent[rows[abnormal]] = bits[abnormal]
    return Coherence(rule, score, alarm, value.copy(), threshold, since, companions, silent)


def describe_agreement(
    result: DeviceAgreement,
    i: int,
    patient: int,
    device: int,
    channel: Channel,
    time_ms: int,
    value: float,
) -> str:
    """One line explaining reading `i` of a `device_agreement` result."""
    status = Agreement(int(result.status[i]))
    unit = channel.spec.unit_display
    head = (
        f"patient {patient} device {device} {channel.name.lower()} {value:g} {unit} "
        f"at {time_ms}: {status.name.lower()}"
    )
    if status is Agreement.UNPAIRED:
        return head + f" (no other device within {PAIR_TOLERANCE_MS // 1000} s)"
    text = (
        f"{head}; {int(result.n_disagree[i])} of {int(result.n_partners[i])} other "
        f"devices disagree, most device {int(result.partner_device[i])} "
        f"({result.partner_value[i]:g} {unit}, |diff| {result.statistic[i]:.1f} > "
        f"{result.threshold[i]:.1f})"
        if result.alarm[i]
        else f"{head} with {int(result.n_partners[i])} other devices"
    )
    if result.alarm[i]:
        text += (
            f" since {int(result.since_ms[i])}; expected within "
            f"{result.threshold[i]:.1f} of {result.consensus[i]:g} {unit}"
        )
    return text


def describe_coherence(result: Coherence, i: int, baseline: Floats) -> str:
    """One line explaining reading `i` of a `physiological_coherence` result, e.g. "SpO2 84 %
    but RR 16 and HR 72 unchanged for 15 min; expected RR > 20 or HR > 90"."""
    kind = CoherenceRule(int(result.rule[i]))
    if kind is CoherenceRule.NONE:
        return "no coherence rule applies"
    target_ch, companion_chs, _ = _RULES[kind]
    names = {
        Channel.SPO2: "SpO2",
        Channel.HEART_RATE: "HR",
        Channel.RESP_RATE: "RR",
        Channel.SYSTOLIC_BP: "SBP",
    }
    unit = target_ch.spec.unit_display
    seen = " and ".join(f"{names[c]} {result.companions[i, int(c)]:g}" for c in companion_chs)
    expected = " or ".join(
        f"{names[c]} outside {baseline[int(c)] - UNCHANGED_BAND[int(c)]:g}-"
        f"{baseline[int(c)] + UNCHANGED_BAND[int(c)]:g}"
        for c in companion_chs
    )
    state = (
        "unchanged"
        if result.alarm[i]
        else "so far unchanged"
        if result.score[i] < 1.0
        else "responding"
    )
    return (
        f"{names[target_ch]} {result.statistic[i]:g} {unit} (threshold "
        f"{result.threshold[i]:g}) but {seen} {state} since {int(result.since_ms[i])}; "
        f"expected {expected}"
    )
