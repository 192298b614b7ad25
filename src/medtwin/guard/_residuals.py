"""Residual tests on a twin's innovations, batched over many streams.

A twin that fits its patient predicts each reading with innovation nu and variance S, and
z = nu / sqrt(S) is then standard normal and independent from reading to reading (the
innovation property of the Kalman filter; Bar-Shalom, Li & Kirubarajan 2001, "Estimation with
Applications to Tracking and Navigation", §5.4). Spoofed or faulty data break that, in three
ways with one test each:

- one reading far off (a spike, an injected value): the normalized innovation squared
  NIS = nu² / S, chi-square with 1 dof, against its (1 − false alarm) quantile (`nis_test`);
- a small bias held for a while: the sum of NIS over a stream's last k readings, chi-square
  with k dof (`window_test`; Bar-Shalom et al. §5.4.2);
- a slow drift: a two-sided CUSUM on z (Page 1954, Biometrika 41:100), which also says
  since when the stream has drifted (`cusum_test`).

Readings are given in one batch for many streams: `stream` (n_readings,) is each reading's
stream, an index into the per-stream state, with readings ordered by stream and then time.
A reading without an innovation (NaN nu or S, S <= 0) is skipped: its statistic is NaN, it
never alarms and it changes no state. The window and CUSUM tests carry per-stream state from
batch to batch, so their results do not depend on how readings were cut into batches.

Chi-square tails use closed forms for integer dof (Abramowitz & Stegun 26.4.4-5), so the
kernel needs no SciPy.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from medtwin.estimation import NO_TIME, segment_starts

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

#: False-alarm probability per reading of the NIS and window tests: at 5-min readings
#: (2016 a week) about 0.2 false alarms per stream-week for each.
FALSE_ALARM_PER_READING = 1e-4
#: Readings in the window test's sum: one hour at 5-min readings.
WINDOW_READINGS = 12
#: CUSUM drift k (in standard deviations): half the smallest shift worth catching fast,
#: 1 sigma (Page 1954; Montgomery, "Introduction to Statistical Quality Control", §9.1).
CUSUM_DRIFT = 0.5
#: CUSUM threshold h (in standard deviations), for about one false alarm per stream-week at
#: 5-min readings. Siegmund's approximation (Siegmund 1985, "Sequential Analysis", (2.55))
#: gives one side's in-control run length (exp(2kb) − 2kb − 1) / (2k²), b = h + 1.166:
#: 5463 readings, so 2732 for both sides, 0.74 alarms a week; simulated (4000 streams × 10
#: weeks, counting every upward crossing of h as an alarm) 1.01 alarms per stream-week.
CUSUM_THRESHOLD = 6.75
#: NIS values are capped at this in window sums: a reading that far out alarms on its own,
#: and the cap keeps cumulative sums (and their differences) exact to ~1e-7 absolute.
NIS_CAP = 1e8


class NisTest(NamedTuple):
    """The per-reading test, each (n_readings,): `nis` (NaN where there is no innovation),
    its chi-square(1) `p_value`, the `threshold` it is held against, and `alarm` (nis >
    threshold)."""

    nis: FloatArray
    p_value: FloatArray
    threshold: FloatArray
    alarm: BoolArray


class WindowState(NamedTuple):
    """Per stream, `recent` (n_streams, k − 1): the NIS of its last k − 1 readings with an
    innovation, oldest first, NaN-padded on the left while it has had fewer."""

    recent: FloatArray


class WindowTest(NamedTuple):
    """The window test, each (n_readings,): `statistic`, the sum of NIS over the stream's last
    `dof` readings with an innovation (this one included; dof = k once it has had k; NaN and
    dof 0 where this reading has none), its chi-square(dof) `threshold`, `alarm`; and the
    streams' `state` after the batch."""

    statistic: FloatArray
    dof: IntArray
    threshold: FloatArray
    alarm: BoolArray
    state: WindowState


class CusumState(NamedTuple):
    """Per stream (n_streams,): the CUSUM sums of z above (`upper`) and below (`lower`) the
    prediction, and the time (epoch ms) of the first reading of each sum's current excursion
    from 0 (`upper_since_ms`, `lower_since_ms`; `NO_TIME` while the sum is 0)."""

    upper: FloatArray
    lower: FloatArray
    upper_since_ms: IntArray
    lower_since_ms: IntArray


class CusumTest(NamedTuple):
    """The CUSUM test, each (n_readings,): `statistic`, the larger of the two sums after the
    reading (NaN where it has no innovation); `direction`, +1 if that is the upper sum
    (readings above the prediction), −1 the lower, 0 if both are 0; `threshold`; `alarm`
    (statistic > threshold); `since_ms`, the time of the first reading of that sum's current
    excursion, the reading right after the sum was last 0, i.e. since when the stream has
    drifted (`NO_TIME` while it is 0); and the streams' `state` after the batch."""

    statistic: FloatArray
    direction: npt.NDArray[np.int8]
    threshold: FloatArray
    alarm: BoolArray
    since_ms: IntArray
    state: CusumState


def normalized_innovation(innovation: FloatArray, innovation_var: FloatArray) -> FloatArray:
    """NIS = nu² / S per reading; NaN where nu or S is not finite or S <= 0."""
    nu = np.asarray(innovation, dtype=np.float64)
    s = np.asarray(innovation_var, dtype=np.float64)
    ok = np.isfinite(nu) & np.isfinite(s) & (s > 0.0)
    out = np.full(nu.shape, np.nan)
    out[ok] = nu[ok] ** 2 / s[ok]
    return out


def chi2_sf(x: float, dof: int) -> float:
    """P(X > x) for X chi-square with integer `dof` >= 1 (A&S 26.4.4-5), scalar."""
    if dof < 1:
        raise ValueError(f"guard: chi-square dof must be >= 1, got {dof}")
    if x <= 0.0:
        return 1.0
    half = x / 2.0
    if dof % 2 == 0:
        term, total = 1.0, 1.0
        for j in range(1, dof // 2):
            term *= half / j
            total += term
        return min(1.0, math.exp(-half) * total)
    term, total = math.sqrt(x), 0.0
    for j in range(1, (dof - 1) // 2 + 1):
        if j > 1:
            term *= x / (2 * j - 1)
        total += term
    return min(1.0, math.erfc(math.sqrt(half)) + math.sqrt(2.0 / math.pi) * math.exp(-half) * total)


@lru_cache(maxsize=256)
def chi2_threshold(false_alarm: float, dof: int = 1) -> float:
    """The x with P(X > x) = `false_alarm` for X chi-square with `dof` (bisection, 1e-12)."""
    if not 0.0 < false_alarm < 1.0:
        raise ValueError(f"guard: false_alarm must be in (0, 1), got {false_alarm}")
    low, high = 0.0, float(dof) + 10.0
    while chi2_sf(high, dof) > false_alarm:
        low, high = high, 2.0 * high
    while high - low > 1e-12 * high:
        mid = 0.5 * (low + high)
        if chi2_sf(mid, dof) > false_alarm:
            low = mid
        else:
            high = mid
    return 0.5 * (low + high)


def chi2_1_sf(x: FloatArray) -> FloatArray:
    """P(X > x) for X chi-square(1), vectorized: erfc(sqrt(x / 2)) by Numerical Recipes'
    Chebyshev fit (Press et al. 2007, §6.2.2; relative error < 1.2e-7); NaN stays NaN."""
    z = np.sqrt(np.maximum(np.asarray(x, dtype=np.float64), 0.0) / 2.0)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = np.full(z.shape, 0.17087277)
    for c in (
        -0.82215223,
        1.48851587,
        -1.13520398,
        0.27886807,
        -0.18628806,
        0.09678418,
        0.37409196,
        1.00002368,
        -1.26551223,
    ):
        poly = c + t * poly
    out: FloatArray = np.where(np.isnan(x), np.nan, np.minimum(1.0, t * np.exp(-z * z + poly)))
    return out


def nis_test(
    innovation: FloatArray, innovation_var: FloatArray, false_alarm: float = FALSE_ALARM_PER_READING
) -> NisTest:
    """Test each reading on its own: NIS against the chi-square(1) quantile of 1 −
    `false_alarm`."""
    nis = normalized_innovation(innovation, innovation_var)
    threshold = np.full(nis.shape, chi2_threshold(false_alarm, 1))
    return NisTest(nis, chi2_1_sf(nis), threshold, np.nan_to_num(nis) > threshold)


def window_state(n_streams: int, window: int = WINDOW_READINGS) -> WindowState:
    """`n_streams` streams that have had no innovation, for windows of `window` readings."""
    if window < 1:
        raise ValueError(f"guard: window must be >= 1, got {window}")
    return WindowState(np.full((n_streams, window - 1), np.nan))


def _check_streams(
    stream: npt.NDArray[np.intp], n_streams: int, *arrays: npt.NDArray[np.generic]
) -> npt.NDArray[np.intp]:
    """`stream` as an index array, after checking shapes, range and order."""
    stream = np.asarray(stream, dtype=np.intp)
    if stream.ndim != 1 or any(np.shape(a) != stream.shape for a in arrays):
        raise ValueError("guard: stream and per-reading arrays must have one equal shape (n,)")
    if stream.size and (stream.min() < 0 or stream.max() >= n_streams):
        raise ValueError(f"guard: stream ids must be in [0, {n_streams})")
    if np.any(stream[1:] < stream[:-1]):
        raise ValueError("guard: readings must be ordered by stream")
    return stream


def window_test(
    state: WindowState,
    stream: npt.NDArray[np.intp],
    innovation: FloatArray,
    innovation_var: FloatArray,
    false_alarm: float = FALSE_ALARM_PER_READING,
) -> WindowTest:
    """Sum NIS over each stream's last k readings with an innovation (k = window of `state`)
    and test the sum against the chi-square(dof) quantile of 1 − `false_alarm`; pure.

    Carried values go before the batch's in each stream; window sums are differences of
    cumulative sums within each stream, so no loop runs over readings or streams.
    """
    n_streams, carried = state.recent.shape
    window = carried + 1
    stream = _check_streams(stream, n_streams, innovation, innovation_var)
    n = stream.shape[0]
    nis = normalized_innovation(innovation, innovation_var)
    # Each stream's sequence: its carried values, then this batch's, skipping NaN.
    present = np.unique(stream)
    carried_stream = np.repeat(present, carried)
    carried_value = state.recent[present].reshape(-1)
    seq_stream = np.concatenate([carried_stream, stream])
    seq_value = np.concatenate([carried_value, nis])
    seq_reading = np.concatenate([np.full(carried_stream.size, -1, np.intp), np.arange(n)])
    from_batch = np.concatenate([np.zeros(carried_stream.size, bool), np.ones(n, bool)])
    order = np.lexsort((from_batch, seq_stream))
    keep = order[np.isfinite(seq_value[order])]
    seq_stream, seq_value, seq_reading = seq_stream[keep], seq_value[keep], seq_reading[keep]
    # Window sums as differences of cumulative sums within each stream.
    start = segment_starts(seq_stream.astype(np.int64))
    index = np.arange(seq_stream.size)
    total = np.cumsum(np.minimum(seq_value, NIS_CAP))
    base = np.maximum(index - window, start - 1)
    before = np.where(base >= 0, total[np.maximum(base, 0)], 0.0)
    sums = np.maximum(total - before, 0.0)
    dof_seq = np.minimum(index - start + 1, window)
    thresholds = np.array([np.inf] + [chi2_threshold(false_alarm, d) for d in range(1, window + 1)])
    statistic = np.full(n, np.nan)
    dof = np.zeros(n, np.int64)
    mine = seq_reading >= 0
    statistic[seq_reading[mine]] = sums[mine]
    dof[seq_reading[mine]] = dof_seq[mine]
    threshold = thresholds[dof]
    alarm = np.nan_to_num(statistic) > threshold
    # Each present stream keeps its last k − 1 values, right-aligned.
    recent = state.recent.copy()
    recent[present] = np.nan
    if carried:
        end = np.searchsorted(seq_stream, seq_stream, side="right") - 1
        back = end - index
        last = back < carried
        recent[seq_stream[last], carried - 1 - back[last]] = seq_value[last]
    return WindowTest(statistic, dof, threshold, alarm, WindowState(recent))


def cusum_state(n_streams: int) -> CusumState:
    """`n_streams` streams with both sums at 0."""
    return CusumState(
        np.zeros(n_streams),
        np.zeros(n_streams),
        np.full(n_streams, NO_TIME, np.int64),
        np.full(n_streams, NO_TIME, np.int64),
    )


def cusum_test(
    state: CusumState,
    stream: npt.NDArray[np.intp],
    time_ms: IntArray,
    innovation: FloatArray,
    innovation_var: FloatArray,
    drift: float = CUSUM_DRIFT,
    threshold: float = CUSUM_THRESHOLD,
) -> CusumTest:
    """Two-sided CUSUM on z = nu / sqrt(S) (Page 1954); pure.

    upper_t = max(0, upper_(t−1) + z_t − drift), lower_t = max(0, lower_(t−1) − z_t − drift);
    a reading alarms while the larger sum exceeds `threshold`. The recurrence is not
    associative, so the loop runs over the most readings one stream has in the batch, each
    step batched over all streams, never over streams.
    """
    n_streams = state.upper.shape[0]
    stream = _check_streams(stream, n_streams, time_ms, innovation, innovation_var)
    n = stream.shape[0]
    z = np.sqrt(normalized_innovation(innovation, innovation_var)) * np.sign(innovation)
    upper, lower = state.upper.copy(), state.lower.copy()
    upper_since, lower_since = state.upper_since_ms.copy(), state.lower_since_ms.copy()
    statistic = np.full(n, np.nan)
    direction = np.zeros(n, np.int8)
    since = np.full(n, NO_TIME, np.int64)
    rank = np.arange(n) - segment_starts(stream.astype(np.int64))
    by_rank = np.argsort(rank, kind="stable")
    bounds = np.searchsorted(rank[by_rank], np.arange(int(rank.max(initial=-1)) + 2))
    for step in range(bounds.size - 1):
        reading = by_rank[bounds[step] : bounds[step + 1]]
        reading = reading[np.isfinite(z[reading])]
        s, zz, t = stream[reading], z[reading], np.asarray(time_ms)[reading]
        new_upper = np.maximum(0.0, upper[s] + zz - drift)
        new_lower = np.maximum(0.0, lower[s] - zz - drift)
        upper_since[s] = np.where(
            new_upper == 0.0, NO_TIME, np.where(upper[s] == 0.0, t, upper_since[s])
        )
        lower_since[s] = np.where(
            new_lower == 0.0, NO_TIME, np.where(lower[s] == 0.0, t, lower_since[s])
        )
        upper[s], lower[s] = new_upper, new_lower
        above = new_upper >= new_lower
        statistic[reading] = np.where(above, new_upper, new_lower)
        direction[reading] = np.where(
            np.maximum(new_upper, new_lower) == 0.0, 0, np.where(above, 1, -1)
        )
        since[reading] = np.where(above, upper_since[s], lower_since[s])
    limit = np.full(n, float(threshold))
    alarm = np.nan_to_num(statistic) > limit
    return CusumTest(
        statistic,
        direction,
        limit,
        alarm,
        since,
        CusumState(upper, lower, upper_since, lower_since),
    )
