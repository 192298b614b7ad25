"""Device-behaviour intrusion detection from packet metadata, batched over devices.

A compromised, cloned or flooding device betrays itself in how it sends, before any value it
sends looks wrong: packets too fast, a clock that jumps, sequence numbers that run backwards,
signatures that fail in bursts. Per packet this module computes six features from metadata
alone (device, arrival time, device send time, sequence number, payload size, signature ok):

- learned, per device: packet `RATE` (log of 1 / inter-arrival), `JITTER` (|change of
  transit time| between successive packets, RFC 3550 §6.4.1), clock `SKEW` (arrival − send),
  sequence `SEQ_GAP` (packets missing) and `PAYLOAD` size. Each keeps an exponentially
  weighted mean and variance (West 1979, CACM 22:532; Finch 2009, "Incremental calculation of
  weighted mean and variance"), a running mean for the first 1 / alpha packets, and a packet
  is scored by its z against the state before it; no alarm during a warm-up;
- rules, no learning needed: a `SEQ_REGRESSION` (sequence number not above the last one), a
  `SIGNATURE` burst (exponentially decayed count of failures over a threshold) and
  `THROTTLE`, a token bucket per device (and one for unregistered senders, by sender key).

Why a small online model and not River or PyOD: each feature is one number per device whose
normal behaviour is a level and a spread (a CGM sends every 300 s ± a few, a monitor every
1 s), so a mean and variance per device and feature are the whole model: two floats, updated
in O(1), exactly replayable, explainable as "observed vs expected, z against threshold", and
batched over every device as array passes. Multivariate detectors (isolation forests, half-
space trees) would add dependencies and state that cannot be explained per feature, to catch
joint anomalies these attacks do not need.

Packets arrive as arrays (n_packets,) in any order; they are processed per device in order of
arrival and results come back in the caller's order. Everything is causal per device and the
state (`BehaviourState`, per-device arrays) is carried between batches, so results do not
depend on how packets were cut into batches, as long as batches follow each other in time.
A forged packet (signature failed) is scored but moves no baseline or reference; a throttled
packet is scored but teaches nothing, so a flood cannot become the normal. Learning is
unconditional otherwise (it keeps the update a linear scan), so a held step, such as a clock
that jumps 10 min and stays there, alarms on its first packets and is then absorbed by the
inflated variance; the alarm's `since_ms` and the twin's own checks carry it from there.

The learned statistics and the signature count are linear recurrences, computed by segmented
scans (`medtwin.estimation.linear_recurrence`): no loop over packets. The token bucket is not
a linear recurrence (a throttled packet consumes nothing), so it runs in stretches: a
closed-form pass per device up to its first throttled packet, then a jump (binary search) to
the first packet the refilled bucket admits. The loop runs once per time a bucket runs dry in
the batch, each pass batched over all devices, never once per packet.
"""

from __future__ import annotations

import enum
from typing import NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt

from medtwin.estimation import (
    NO_TIME,
    linear_recurrence,
    segment_starts,
    segmented_cummax,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

SECOND_MS = 1000
_T = TypeVar("_T", bound=np.generic)


class Feature(enum.IntEnum):
    """What a finding is about; the first `N_LEARNED` are learned per device."""

    RATE = 0
    JITTER = 1
    SKEW = 2
    SEQ_GAP = 3
    PAYLOAD = 4
    SEQ_REGRESSION = 5
    SIGNATURE = 6
    THROTTLE = 7


N_FEATURES = len(Feature)
N_LEARNED = 5
#: `finding` of a packet without one.
NO_FINDING = -1
#: Sequence number of a device that has sent no authentic packet yet.
NO_SEQUENCE = np.iinfo(np.int64).min

#: Token bucket for a registered device: 5 packets/s sustained, bursts of 50. A CGM sends
#: every 5 min (0.003/s), a vitals monitor or ECG patch about once a second (waveforms come
#: batched in packets), so 5/s is 5x the fastest honest device; 50 lets a device that was out
#: of range flush its buffer (CGMs backfill, Dexcom G6 user guide) without being throttled.
RATE_PER_S = 5.0
BURST = 50.0
#: Unregistered senders share buckets by sender key (say, a hash of the source address): they
#: only ever get as far as the gate's rejection, so 1 packet/s and a burst of 10 per key.
UNREGISTERED_RATE_PER_S = 1.0
UNREGISTERED_BURST = 10.0
#: Weight of a new packet in the exponentially weighted mean and variance: a memory of about
#: 100 packets (8 h of a 5-min CGM, under 2 min of a 1-s monitor).
EW_WEIGHT = 0.01
#: Packets a feature must have learned from before it may alarm.
WARMUP_PACKETS = 30
#: z above which a learned feature alarms. A robust margin rather than a Gaussian quantile:
#: EW variances from ~100 packets have heavier tails than the normal; measured on a simulated
#: day of a 1-s monitor and a 5-min CGM the largest |z| stays under 5 (tests).
Z_THRESHOLD = 8.0
#: Floors added to each learned feature's SD (its units), so a device whose feature barely
#: varies is not flagged for a change nobody would call anomalous: rate 10 % (log), jitter
#: 50 ms, skew 1 s (device clocks are set to seconds), sequence gap 1 packet, payload 16 bytes.
SD_FLOOR: tuple[float, ...] = (0.1, 50.0, 1000.0, 1.0, 16.0)
#: Which side of each learned feature alarms: +1 only above (too fast, too jittery, too many
#: missing), 0 both (a clock or payload size off either way).
SIDE: tuple[int, ...] = (1, 1, 0, 1, 0)
#: Signature failures: each adds 1 to a count that halves every `SIGNATURE_HALF_LIFE_MS`;
#: a failed packet alarms when the count exceeds `SIGNATURE_BURST`, i.e. about three failures
#: within half a minute. A single corrupted packet now and then never alarms.
SIGNATURE_HALF_LIFE_MS = 60_000
SIGNATURE_BURST = 2.5
#: Tolerance on "one token available", so float rounding never flips a decision.
TOKEN_EPS = 1e-9


class BehaviourParams(NamedTuple):
    """Hyperparameters of `behaviour_step`; defaults and their reasons are the constants."""

    rate_per_s: float = RATE_PER_S
    burst: float = BURST
    ew_weight: float = EW_WEIGHT
    warmup: int = WARMUP_PACKETS
    z_threshold: float = Z_THRESHOLD
    sd_floor: tuple[float, ...] = SD_FLOOR
    signature_half_life_ms: float = SIGNATURE_HALF_LIFE_MS
    signature_burst: float = SIGNATURE_BURST


DEFAULT_PARAMS = BehaviourParams()


class BucketState(NamedTuple):
    """Per key (n_keys,): `tokens` at `time_ms` (epoch ms of the key's last packet, after it;
    `NO_TIME`: no packet yet, the bucket is full)."""

    tokens: FloatArray
    time_ms: IntArray


class BucketResult(NamedTuple):
    """Per packet (n_packets,): `allowed`, and the `tokens` the bucket held on its arrival
    (it is allowed when they are >= 1); and the keys' `state` after the batch."""

    allowed: BoolArray
    tokens: FloatArray
    state: BucketState


class BehaviourState(NamedTuple):
    """Per device: the learned features' packets `seen`, EW `mean` and `var` (n_devices,
    N_LEARNED); the last authentic packet's `last_arrival_ms`, `last_transit_ms` (arrival −
    send) and `last_sequence` (`NO_TIME` / `NO_SEQUENCE`: none yet); the decayed
    `signature_failures` at `last_packet_ms` (any packet); the token `bucket`; and
    `alarm_since_ms`, the first packet of the current run of alarms (`NO_TIME`: the last
    packet did not alarm)."""

    seen: IntArray
    mean: FloatArray
    var: FloatArray
    last_arrival_ms: IntArray
    last_transit_ms: IntArray
    last_sequence: IntArray
    signature_failures: FloatArray
    last_packet_ms: IntArray
    bucket: BucketState
    alarm_since_ms: IntArray


class BehaviourResult(NamedTuple):
    """Per packet (n_packets,), in the caller's order:

    - `alarm`, and `finding`, the `Feature` that explains it (`NO_FINDING` if none): a rule
      (signature, regression, throttle, in that order) before the learned feature of largest
      z (skew before jitter: a clock jump is also a jitter spike); `alarms` (n_packets,
      N_FEATURES) says every feature that fired;
    - evidence for the finding: `observed` and `expected` in the feature's units (rate in
      packets/s, jitter and skew in ms, gap in packets, payload in bytes, regression: sequence
      number vs last + 1, signature: decayed failure count vs 0, throttle: tokens vs 1), the
      `statistic` tested and its `threshold` (z for learned features, the decayed count, how
      far the sequence went back, token deficit 1 − tokens), and `since_ms`, the arrival time
      of the first packet of the device's current run of alarms (`NO_TIME` without alarm);
    - `score`, the largest sided z over learned features (NaN in warm-up), `z` per learned
      feature (n_packets, N_LEARNED), and `allowed` by the device's token bucket;
    - the devices' `state` after the batch.
    """

    alarm: BoolArray
    finding: npt.NDArray[np.int8]
    alarms: BoolArray
    observed: FloatArray
    expected: FloatArray
    statistic: FloatArray
    threshold: FloatArray
    since_ms: IntArray
    score: FloatArray
    z: FloatArray
    allowed: BoolArray
    state: BehaviourState


def bucket_state(n_keys: int) -> BucketState:
    """`n_keys` full buckets."""
    return BucketState(np.zeros(n_keys), np.full(n_keys, NO_TIME, np.int64))


def behaviour_state(n_devices: int) -> BehaviourState:
    """`n_devices` devices that have sent nothing."""
    return BehaviourState(
        seen=np.zeros((n_devices, N_LEARNED), np.int64),
        mean=np.zeros((n_devices, N_LEARNED)),
        var=np.zeros((n_devices, N_LEARNED)),
        last_arrival_ms=np.full(n_devices, NO_TIME, np.int64),
        last_transit_ms=np.full(n_devices, NO_TIME, np.int64),
        last_sequence=np.full(n_devices, NO_SEQUENCE, np.int64),
        signature_failures=np.zeros(n_devices),
        last_packet_ms=np.full(n_devices, NO_TIME, np.int64),
        bucket=bucket_state(n_devices),
        alarm_since_ms=np.full(n_devices, NO_TIME, np.int64),
    )


def grow_bucket_state(state: BucketState, n_keys: int) -> BucketState:
    """`state` with full buckets appended up to `n_keys` keys (never shrinks)."""
    extra = bucket_state(max(0, n_keys - state.tokens.shape[0]))
    return BucketState(
        np.concatenate([state.tokens, extra.tokens]), np.concatenate([state.time_ms, extra.time_ms])
    )


def grow_behaviour_state(state: BehaviourState, n_devices: int) -> BehaviourState:
    """`state` with new, silent devices appended up to `n_devices` (never shrinks); the
    existing devices' state is unchanged."""
    extra = behaviour_state(max(0, n_devices - state.seen.shape[0]))
    fields = [
        np.concatenate([old, new])
        for old, new in zip(state, extra, strict=True)
        if not isinstance(old, BucketState)
    ]
    count, mean, var, arrival, transit, sequence, failures, last_packet, since = fields
    return BehaviourState(
        count,
        mean,
        var,
        arrival,
        transit,
        sequence,
        failures,
        last_packet,
        grow_bucket_state(state.bucket, n_devices),
        since,
    )


def _order(
    key: npt.NDArray[np.intp], time_ms: IntArray, n_keys: int, *arrays: npt.NDArray[np.generic]
) -> npt.NDArray[np.intp]:
    """The stable order by key, then time, after checking shapes and key range."""
    key = np.asarray(key)
    if (
        key.ndim != 1
        or np.shape(time_ms) != key.shape
        or any(np.shape(a) != key.shape for a in arrays)
    ):
        raise ValueError("guard: per-packet arrays must have one equal shape (n,)")
    if key.size and (key.min() < 0 or key.max() >= n_keys):
        raise ValueError(f"guard: device/key ids must be in [0, {n_keys}); grow the state first")
    return np.lexsort((np.asarray(time_ms), key)).astype(np.intp)


def _bucket_sorted(
    state: BucketState,
    key: npt.NDArray[np.intp],
    time_ms: IntArray,
    rate_per_ms: FloatArray,
    burst: FloatArray,
) -> tuple[BoolArray, FloatArray, BucketState]:
    """The token bucket on packets sorted by key, then time; see `token_bucket`.

    While a key's bucket never runs dry, tokens on arrival have a closed form: with
    c_j = r (t_j − t_0) − j (j-th packet from the pass's start, tokens x at time t_s before),
    tokens_j = c_j + min(x − r (t_s − t_0), B − max_(i<=j) c_i). The first packet finding
    fewer than 1 is throttled; the next allowed one is the first at or after the time the
    bucket holds 1 again; the pass restarts there.
    """
    n = key.shape[0]
    if n == 0:
        return np.zeros(0, bool), np.zeros(0), state
    allowed = np.zeros(n, bool)
    tokens = np.zeros(n)
    tok, when = state.tokens.copy(), state.time_ms.copy()
    fresh = when == NO_TIME
    first = np.searchsorted(key, np.arange(tok.shape[0]))
    end = np.searchsorted(key, np.arange(tok.shape[0]), side="right")
    has = first < end
    tok[fresh & has] = burst[fresh & has]
    when[fresh & has] = time_ms[first[fresh & has]]
    # Each segment's times laid end to end on one increasing axis, for binary searches.
    seg_start = segment_starts(key.astype(np.int64))
    span_end = time_ms[np.maximum(end - 1, 0)] - time_ms[np.minimum(first, n - 1)]
    offset = np.concatenate([[0], np.cumsum(np.where(has, span_end + 1, 0))[:-1]])
    axis = time_ms - time_ms[seg_start] + offset[key]
    pointer = first.copy()
    everything = np.arange(n)
    while np.any(pointer < end):
        idx = np.flatnonzero(everything >= pointer[key])
        k_of = key[idx]
        start = segment_starts(k_of.astype(np.int64))
        seg_first = np.flatnonzero(start == np.arange(idx.size))
        seg_key = k_of[seg_first]
        seg_end = np.append(seg_first[1:], idx.size)
        t0 = time_ms[idx[start]]
        r = rate_per_ms[k_of]
        c = r * (time_ms[idx] - t0) - (np.arange(idx.size) - start)
        y = c + np.minimum(
            tok[k_of] - r * (when[k_of] - t0), burst[k_of] - segmented_cummax(c, start)
        )
        # (1): packets up to each key's first throttled one (or its end) are allowed.
        marker = np.where(y < 1.0 - TOKEN_EPS, np.arange(idx.size), idx.size)
        first_short = np.minimum.reduceat(marker, seg_first)
        upto = np.minimum(first_short, seg_end)
        ok = np.arange(idx.size) < np.repeat(upto, seg_end - seg_first)
        allowed[idx[ok]] = True
        tokens[idx] = y
        # (2): keys with no throttled packet end the batch after their last packet.
        done = first_short >= idx.size
        last = seg_end[done] - 1
        tok[seg_key[done]] = y[last] - 1.0
        when[seg_key[done]] = time_ms[idx[last]]
        pointer[seg_key[done]] = end[seg_key[done]]
        # (3): the others jump to the first packet at or after the bucket holds 1 again;
        # packets in between are throttled, with the tokens refilled since.
        ks, q = seg_key[~done], idx[first_short[~done]]
        y_q, t_q = y[first_short[~done]], time_ms[q]
        ready = np.ceil(t_q + (1.0 - TOKEN_EPS - y_q) / rate_per_ms[ks]).astype(np.int64)
        target = np.searchsorted(axis, ready - time_ms[seg_start[q]] + offset[ks])
        target = np.clip(target, q + 1, end[ks])
        skipped = target - q - 1
        gap = np.repeat(q + 1 - np.cumsum(skipped) + skipped, skipped) + np.arange(
            int(skipped.sum())
        )
        tokens[gap] = np.repeat(y_q, skipped) + np.repeat(rate_per_ms[ks], skipped) * (
            time_ms[gap] - np.repeat(t_q, skipped)
        )
        tok[ks], when[ks] = y_q, t_q
        pointer[ks] = target
    return allowed, tokens, BucketState(tok, when)


def token_bucket(
    state: BucketState,
    key: npt.NDArray[np.intp],
    time_ms: IntArray,
    rate_per_s: float | FloatArray = RATE_PER_S,
    burst: float | FloatArray = BURST,
) -> BucketResult:
    """A token bucket per key (Turner 1986; the continuous-state leaky bucket of ITU-T I.371):
    each key holds up to `burst` tokens, refilled at `rate_per_s`; a packet is allowed if it
    finds a token and then takes it, a throttled one takes none. Pure; packets in any order,
    processed per key in time order; `rate_per_s`, `burst` scalars or per key (n_keys,).
    For unregistered senders, call it with a sender key index and the `UNREGISTERED_*`
    defaults on a `bucket_state` of its own."""
    n_keys = state.tokens.shape[0]
    time_ms = np.asarray(time_ms, dtype=np.int64)
    order = _order(key, time_ms, n_keys)
    rate = np.broadcast_to(np.asarray(rate_per_s, np.float64), (n_keys,)) / SECOND_MS
    cap = np.broadcast_to(np.asarray(burst, np.float64), (n_keys,))
    if np.any(rate <= 0.0) or np.any(cap < 1.0):
        raise ValueError("guard: token bucket needs rate > 0 and burst >= 1")
    ok, tokens, new_state = _bucket_sorted(
        state, np.asarray(key, np.intp)[order], time_ms[order], rate, cap
    )
    allowed = np.zeros(order.size, bool)
    held = np.zeros(order.size)
    allowed[order], held[order] = ok, tokens
    return BucketResult(allowed, held, new_state)


def _shift(
    x: npt.NDArray[_T], start: npt.NDArray[np.intp], before: npt.NDArray[_T]
) -> npt.NDArray[_T]:
    """x of the previous element in the same segment, `before` (per element) at its start."""
    out = before.copy()
    inner = np.flatnonzero(np.arange(start.size) > start)
    out[inner] = x[inner - 1]
    return out


def behaviour_step(
    state: BehaviourState,
    device: npt.NDArray[np.intp],
    arrival_ms: IntArray,
    send_ms: IntArray,
    sequence: IntArray,
    payload_bytes: IntArray,
    signature_ok: BoolArray,
    params: BehaviourParams = DEFAULT_PARAMS,
) -> BehaviourResult:
    """Score a batch of packets of many devices against each device's learned behaviour,
    rate-limit them and update the state; pure. Arrays (n_packets,), in any order.

    Steps: (1) order by device, then arrival; (2) token bucket; (3) each packet's reference,
    the device's previous authentic packet; (4) features; (5) z of each learned feature
    against the EW mean and variance before the packet, then learn from authentic, allowed
    packets; (6) rules; (7) the finding and its evidence, and since when the device alarms.
    A packet with `sequence` `NO_SEQUENCE` (its claims were not read: a forged packet) is
    judged on its arrival and signature only.
    """
    n_devices = state.seen.shape[0]
    if len(params.sd_floor) != N_LEARNED:
        raise ValueError(f"guard: sd_floor needs {N_LEARNED} values")
    if not 0.0 < params.ew_weight <= 1.0:
        raise ValueError(f"guard: ew_weight must be in (0, 1], got {params.ew_weight}")
    # (1): per device, in order of arrival.
    arrival_in = np.asarray(arrival_ms, np.int64)
    order = _order(device, arrival_in, n_devices, send_ms, sequence, payload_bytes, signature_ok)
    dev = np.asarray(device, np.intp)[order]
    arrival = arrival_in[order]
    send = np.asarray(send_ms, np.int64)[order]
    seq = np.asarray(sequence, np.int64)[order]
    size = np.asarray(payload_bytes, np.float64)[order]
    authentic = np.asarray(signature_ok, bool)[order]
    n = dev.size
    start = segment_starts(dev.astype(np.int64))
    index = np.arange(n)
    # (2): the token bucket.
    rate = np.full(n_devices, params.rate_per_s / SECOND_MS)
    cap = np.full(n_devices, float(params.burst))
    allowed, tokens, bucket = _bucket_sorted(state.bucket, dev, arrival, rate, cap)
    # (3): the previous authentic packet of the device, in the batch or carried.
    latest = np.maximum.accumulate(np.where(authentic, index, -1)) if n else index
    prev = _shift(np.where(latest >= start, latest, -1), start, np.full(n, -1))
    inside = prev >= 0
    transit = arrival - send
    prev_arrival = np.where(inside, arrival[np.maximum(prev, 0)], state.last_arrival_ms[dev])
    prev_transit = np.where(inside, transit[np.maximum(prev, 0)], state.last_transit_ms[dev])
    prev_seq = np.where(inside, seq[np.maximum(prev, 0)], state.last_sequence[dev])
    has_prev = prev_arrival != NO_TIME
    # (4): features, NaN where undefined.
    x = np.full((n, N_LEARNED), np.nan)
    gap_ms = np.maximum(arrival - prev_arrival, 1).astype(np.float64)
    x[has_prev, Feature.RATE] = np.log(SECOND_MS / gap_ms[has_prev])
    x[has_prev, Feature.JITTER] = np.abs(transit - prev_transit)[has_prev]
    x[:, Feature.SKEW] = transit
    known = seq != NO_SEQUENCE        # unknown: a packet whose claims were not read (forged)
    forward = has_prev & (seq > prev_seq) & known
    x[forward, Feature.SEQ_GAP] = (seq - prev_seq - 1)[forward]
    x[:, Feature.PAYLOAD] = size
    x[~known, Feature.JITTER:] = np.nan
    # (5): EW mean and variance (West 1979), a running mean until 1 / weight packets.
    learn = np.isfinite(x) & (authentic & allowed)[:, None]
    step = learn.astype(np.int64)
    before_batch = state.seen[dev]
    seen = before_batch + np.cumsum(step, axis=0) - _cum_at_start(step, start)
    weight = np.where(learn, np.maximum(params.ew_weight, 1.0 / np.maximum(seen, 1)), 0.0)
    xv = np.nan_to_num(x)
    mean = (
        linear_recurrence(1.0 - weight, weight * xv, state.mean[dev], start)
        if n
        else np.zeros((0, N_LEARNED))
    )
    mean_before = _shift(mean, start, state.mean[dev])
    delta = xv - mean_before
    var = (
        linear_recurrence(1.0 - weight, (1.0 - weight) * weight * delta**2, state.var[dev], start)
        if n
        else np.zeros((0, N_LEARNED))
    )
    var_before = _shift(var, start, state.var[dev])
    count_before = seen - step
    floor = np.asarray(params.sd_floor, np.float64)
    z = delta / np.sqrt(var_before + floor**2)
    side = np.asarray(SIDE)
    sided = np.where(side > 0, z, np.abs(z))
    scored = np.isfinite(x) & (count_before >= params.warmup)
    z = np.where(scored, z, np.nan)
    sided = np.where(scored, sided, np.nan)
    alarms = np.zeros((n, N_FEATURES), bool)
    alarms[:, :N_LEARNED] = np.nan_to_num(sided, nan=-np.inf) > params.z_threshold
    # (6): rules. Sequence regressions; decayed signature failures; the bucket.
    back = has_prev & (seq <= prev_seq) & known
    alarms[:, Feature.SEQ_REGRESSION] = back
    prev_any = _shift(arrival, start, state.last_packet_ms[dev])
    decay = np.where(
        prev_any == NO_TIME,
        0.0,
        np.exp2(-(arrival - prev_any).clip(min=0) / float(params.signature_half_life_ms)),
    )
    failures = (
        linear_recurrence(
            decay, (~authentic).astype(np.float64), state.signature_failures[dev], start
        )
        if n
        else np.zeros(0)
    )
    alarms[:, Feature.SIGNATURE] = ~authentic & (failures > params.signature_burst)
    alarms[:, Feature.THROTTLE] = ~allowed
    # (7): the finding: rules first, then the learned feature of largest z.
    # A clock jump is one jitter spike too: the skew explains it, so it is named first.
    ranked = np.nan_to_num(sided, nan=-np.inf)
    ranked[alarms[:, Feature.SKEW], Feature.JITTER] = -np.inf
    learned_best = np.argmax(ranked, axis=1) if n else np.zeros(0, np.intp)
    learned_fires = alarms[index, learned_best] if n else np.zeros(0, bool)
    finding = np.full(n, NO_FINDING, np.int8)
    finding[learned_fires] = learned_best[learned_fires]
    for rule in (Feature.THROTTLE, Feature.SEQ_REGRESSION, Feature.SIGNATURE):
        finding[alarms[:, rule]] = rule
    alarm = finding != NO_FINDING
    observed = np.full(n, np.nan)
    expected = np.full(n, np.nan)
    statistic = np.full(n, np.nan)
    threshold = np.full(n, np.nan)
    learned = alarm & (finding < N_LEARNED)
    li, lf = np.flatnonzero(learned), finding[learned].astype(np.intp)
    observed[li], expected[li] = x[li, lf], mean_before[li, lf]
    statistic[li], threshold[li] = sided[li, lf], params.z_threshold
    rate_found = learned & (finding == Feature.RATE)
    observed[rate_found] = np.exp(observed[rate_found])
    expected[rate_found] = np.exp(expected[rate_found])
    m = finding == Feature.SEQ_REGRESSION
    observed[m], expected[m] = seq[m], prev_seq[m] + 1.0
    statistic[m], threshold[m] = (prev_seq - seq + 1)[m], 0.0
    m = finding == Feature.SIGNATURE
    observed[m], expected[m], statistic[m] = failures[m], 0.0, failures[m]
    threshold[m] = params.signature_burst
    m = finding == Feature.THROTTLE
    observed[m], expected[m], statistic[m], threshold[m] = tokens[m], 1.0, 1.0 - tokens[m], 0.0
    # Since when: the first packet after the device's last packet without alarm.
    quiet = np.maximum.accumulate(np.where(~alarm, index, -1)) if n else index
    run_start = quiet + 1
    carried = state.alarm_since_ms[dev]
    from_before = (run_start <= start) & (carried != NO_TIME)
    since = np.where(
        from_before, carried, arrival[np.minimum(np.maximum(run_start, start), max(n - 1, 0))]
    )
    since = np.where(alarm, since, NO_TIME)
    new_state = _carry(
        state,
        dev,
        start,
        x,
        seq,
        transit,
        arrival,
        authentic,
        seen,
        mean,
        var,
        failures,
        since,
        bucket,
    )
    out = np.empty(n, np.intp)
    out[order] = index
    return BehaviourResult(
        alarm[out],
        finding[out],
        alarms[out],
        observed[out],
        expected[out],
        statistic[out],
        threshold[out],
        since[out],
        np.nanmax(np.where(np.isnan(sided), -np.inf, sided), axis=1)[out] if n else np.zeros(0),
        z[out],
        allowed[out],
        new_state,
    )


def _cum_at_start(step: IntArray, start: npt.NDArray[np.intp]) -> IntArray:
    """Per element, the cumulative sum of `step` before its segment's start."""
    total = np.cumsum(step, axis=0)
    before = np.zeros_like(total)
    inner = start > 0
    before[inner] = total[start[inner] - 1]
    return before


def _carry(
    state: BehaviourState,
    dev: npt.NDArray[np.intp],
    start: npt.NDArray[np.intp],
    x: FloatArray,
    seq: IntArray,
    transit: IntArray,
    arrival: IntArray,
    authentic: BoolArray,
    seen: IntArray,
    mean: FloatArray,
    var: FloatArray,
    failures: FloatArray,
    since: IntArray,
    bucket: BucketState,
) -> BehaviourState:
    """The state after the batch: each present device's values after its last packet."""
    del x, start
    n = dev.size
    if n == 0:
        return state._replace(bucket=bucket)
    last = np.flatnonzero(np.append(dev[1:] != dev[:-1], True))
    d = dev[last]
    count, mu, sigma2 = state.seen.copy(), state.mean.copy(), state.var.copy()
    count[d], mu[d], sigma2[d] = seen[last], mean[last], var[last]
    last_arrival, last_transit = state.last_arrival_ms.copy(), state.last_transit_ms.copy()
    last_sequence = state.last_sequence.copy()
    auth = np.flatnonzero(authentic)
    if auth.size:
        final = auth[np.append(dev[auth][1:] != dev[auth][:-1], True)]
        last_arrival[dev[final]] = arrival[final]
        last_transit[dev[final]] = transit[final]
        last_sequence[dev[final]] = seq[final]
    sig, last_packet = state.signature_failures.copy(), state.last_packet_ms.copy()
    sig[d], last_packet[d] = failures[last], arrival[last]
    alarm_since = state.alarm_since_ms.copy()
    alarm_since[d] = since[last]
    return BehaviourState(
        count,
        mu,
        sigma2,
        last_arrival,
        last_transit,
        last_sequence,
        sig,
        last_packet,
        bucket,
        alarm_since,
    )
