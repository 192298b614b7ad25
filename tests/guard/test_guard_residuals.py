"""Residual tests on innovations: design false-alarm rates, detection of biases and drifts,
batch invariance, NaN skipping, and window sums against a naive reference."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medtwin.estimation import NO_TIME
from medtwin.guard import (
    CUSUM_THRESHOLD,
    CusumState,
    WindowState,
    chi2_1_sf,
    chi2_sf,
    chi2_threshold,
    cusum_state,
    cusum_test,
    nis_test,
    normalized_innovation,
    window_state,
    window_test,
)

FIVE_MIN_MS = 300_000
READINGS_PER_WEEK = 7 * 24 * 12


def _streams(m: int, n: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.int64],
                                      npt.NDArray[np.int64]]:
    """m streams of n readings each, 5 min apart: stream id, time (ms), index in stream."""
    j = np.tile(np.arange(n, dtype=np.int64), m)
    return np.repeat(np.arange(m), n).astype(np.intp), j * FIVE_MIN_MS, j


# --- chi-square tails -------------------------------------------------------------------


def test_chi2_tails_match_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    for dof in range(1, 16):
        for x in (0.01, 0.5, 1.0, 3.0, 10.0, 25.0, 60.0):
            assert chi2_sf(x, dof) == pytest.approx(stats.chi2.sf(x, dof), rel=1e-9, abs=1e-300)
        for alpha in (1e-2, 1e-4, 1e-6):
            assert chi2_threshold(alpha, dof) == pytest.approx(stats.chi2.isf(alpha, dof),
                                                               rel=1e-9)


def test_chi2_1_sf_matches_erfc() -> None:
    x = np.concatenate([np.linspace(0.0, 5.0, 101), np.geomspace(5.0, 200.0, 100)])
    exact = np.array([math.erfc(math.sqrt(v / 2.0)) for v in x])
    np.testing.assert_allclose(chi2_1_sf(x), exact, rtol=2e-7)
    assert np.isnan(chi2_1_sf(np.array([np.nan]))[0])


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="guard: false_alarm must be in"):
        chi2_threshold(0.0)
    with pytest.raises(ValueError, match="guard: chi-square dof must be >= 1"):
        chi2_sf(1.0, 0)
    with pytest.raises(ValueError, match="guard: window must be >= 1"):
        window_state(3, 0)
    one = np.ones(2)
    with pytest.raises(ValueError, match="guard: readings must be ordered by stream"):
        window_test(window_state(2), np.array([1, 0]), one, one)
    with pytest.raises(ValueError, match=r"guard: stream ids must be in \[0, 2\)"):
        cusum_test(cusum_state(2), np.array([0, 2]), np.zeros(2, np.int64), one, one)
    with pytest.raises(ValueError, match="guard: stream and per-reading arrays"):
        window_test(window_state(2), np.array([0, 1]), np.ones(3), np.ones(3))


# --- false alarms on a twin that fits -----------------------------------------------------


def test_nis_false_alarm_rate_matches_design() -> None:
    rng = np.random.default_rng(11)
    n = 2_000_000
    result = nis_test(rng.standard_normal(n), np.ones(n), false_alarm=1e-3)
    # Binomial(2e6, 1e-3): 2000 ± 45; allow 4 standard deviations.
    assert abs(int(result.alarm.sum()) - 2000) < 180
    assert result.threshold[0] == pytest.approx(10.827566, rel=1e-6)
    # p-values of a fitting twin are uniform.
    assert np.mean(result.p_value < 0.05) == pytest.approx(0.05, abs=0.001)


def test_window_false_alarm_rate_matches_design() -> None:
    rng = np.random.default_rng(12)
    stream, _, _ = _streams(1000, 1000)
    z = rng.standard_normal(stream.size)
    result = window_test(window_state(1000), stream, z, np.ones(z.size), false_alarm=1e-3)
    # 1e6 readings at 1e-3 each: 1000 expected; window sums overlap, so alarms cluster and
    # the spread is wider than binomial.
    assert 750 < int(result.alarm.sum()) < 1250
    assert result.dof.max() == 12


def test_cusum_false_alarms_about_one_per_stream_week() -> None:
    """Design: about 1 alarm (upward crossing of h) per stream-week of 5-min readings."""
    rng = np.random.default_rng(13)
    m, weeks = 400, 4
    stream, time_ms, _ = _streams(m, weeks * READINGS_PER_WEEK)
    z = rng.standard_normal(stream.size)
    alarm = cusum_test(cusum_state(m), stream, time_ms, z, np.ones(z.size)).alarm
    per_stream = alarm.reshape(m, -1)
    onsets = per_stream[:, 0].sum() + (per_stream[:, 1:] & ~per_stream[:, :-1]).sum()
    # Simulated with 4000 streams x 10 weeks: 1.01 per stream-week.
    assert 0.8 < onsets / (m * weeks) < 1.25


# --- detection ---------------------------------------------------------------------------


def test_bias_of_three_sigma_is_caught() -> None:
    """After 60 clean readings a bias of 3 sigma: the window test alarms on every reading once
    its window is full, and first within one window, 12 readings (simulated median 3, p99 6);
    the per-reading test alarms on each reading with P(|z + 3| > 3.89) = 0.19."""
    rng = np.random.default_rng(21)
    m, pre, post = 2000, 60, 40
    stream, _, j = _streams(m, pre + post)
    nu = 2.0 * (rng.standard_normal(stream.size) + np.where(j >= pre, 3.0, 0.0))
    var = np.full(nu.size, 4.0)
    per_reading = nis_test(nu, var)
    assert per_reading.alarm[j >= pre].mean() == pytest.approx(0.19, abs=0.01)
    assert per_reading.alarm[j < pre].sum() <= 40  # 1.2e5 readings at 1e-4
    window = window_test(window_state(m), stream, nu, var)
    assert window.alarm[j >= pre + 11].mean() > 0.999
    after = window.alarm.reshape(m, -1)[:, pre:]
    assert after[:, :12].any(axis=1).all()
    assert np.median(after.argmax(axis=1)) <= 4
    # A single spike of 3 sigma on a clean stream is caught per reading as often as theory
    # says, and a spike of 8 sigma always.
    spike = nis_test(np.array([3.0, -3.0, 8.0, -8.0]) * 2.0, np.full(4, 4.0))
    assert list(spike.alarm) == [False, False, True, True]
    np.testing.assert_allclose(spike.p_value[:2], math.erfc(3.0 / math.sqrt(2.0)), rtol=1e-6)


def test_drift_is_caught_by_cusum_with_its_start() -> None:
    """A drift of 0.3 sigma per reading after 60 clean readings: CUSUM alarms within 12
    readings of its start (simulated median 7, p99 10; the per-reading test needs median 10,
    p99 15), and says it began at the drift's start (median 1 reading after) in most
    streams; earlier where noise had already lifted the sum."""
    rng = np.random.default_rng(22)
    m, pre, post = 2000, 60, 40
    stream, time_ms, j = _streams(m, pre + post)
    drift = np.where(j >= pre, 0.3 * (j - pre + 1), 0.0)
    nu = rng.standard_normal(stream.size) + drift
    result = cusum_test(cusum_state(m), stream, time_ms, nu, np.ones(nu.size))
    after = result.alarm.reshape(m, -1)[:, pre:]
    assert after[:, :12].any(axis=1).all()
    first = after.argmax(axis=1)
    assert np.median(first) <= 8
    since = result.since_ms.reshape(m, -1)[:, pre:][np.arange(m), first]
    offset = since // FIVE_MIN_MS - pre
    assert np.all(result.direction.reshape(m, -1)[:, pre:][np.arange(m), first] == 1)
    assert abs(np.median(offset)) <= 1
    assert np.mean((offset >= -3) & (offset <= 5)) > 0.8


def test_cusum_on_a_noise_free_drift() -> None:
    """z = 0, then 0.3, 0.6, ...: the upper sum leaves 0 at the second drifting reading and
    crosses h when sum(0.3 i - 0.5, i = 2..t) > 6.75."""
    n = 30
    z = np.concatenate([np.zeros(10), 0.3 * np.arange(1, n - 9)])
    time_ms = np.arange(n, dtype=np.int64) * FIVE_MIN_MS
    result = cusum_test(cusum_state(1), np.zeros(n, np.intp), time_ms, z, np.ones(n))
    expected = np.maximum.accumulate(np.maximum(0.0, np.cumsum(np.maximum(0.0, z - 0.5))))
    np.testing.assert_allclose(result.statistic, expected, atol=1e-12)
    first = int(np.argmax(result.alarm))
    assert first == int(np.argmax(expected > CUSUM_THRESHOLD)) == 17
    assert result.since_ms[first] == time_ms[11]
    assert result.since_ms[10] == NO_TIME and result.direction[10] == 0
    assert result.direction[first] == 1
    # The same drift downwards is the lower sum's.
    down = cusum_test(cusum_state(1), np.zeros(n, np.intp), time_ms, -z, np.ones(n))
    assert down.direction[first] == -1 and down.alarm[first]
    assert down.since_ms[first] == time_ms[11]


# --- NaN innovations ---------------------------------------------------------------------


def test_nan_innovations_are_skipped() -> None:
    rng = np.random.default_rng(31)
    stream, time_ms, j = _streams(5, 60)
    nu = rng.standard_normal(stream.size) * 3.0 + np.where(j > 30, 4.0, 0.0)
    var = np.full(nu.size, 9.0)
    holes = rng.random(nu.size) < 0.3
    # Holes: a NaN innovation in the first half, a NaN or zero variance in the second.
    half = nu.size // 2
    first, second = holes.copy(), holes.copy()
    first[half:], second[:half] = False, False
    nu_h, var_h = np.where(first, np.nan, nu), var.copy()
    var_h[second] = np.where(rng.random(int(second.sum())) < 0.5, np.nan, 0.0)
    skipped = ~np.isfinite(normalized_innovation(nu_h, var_h))
    assert np.array_equal(skipped, holes)
    kept = ~holes

    per_reading = nis_test(nu_h, var_h)
    assert np.isnan(per_reading.nis[holes]).all() and not per_reading.alarm[holes].any()

    window = window_test(window_state(5), stream, nu_h, var_h)
    clean = window_test(window_state(5), stream[kept], nu[kept], var[kept])
    assert np.isnan(window.statistic[holes]).all() and (window.dof[holes] == 0).all()
    np.testing.assert_allclose(window.statistic[kept], clean.statistic, rtol=1e-12)
    np.testing.assert_allclose(window.state.recent, clean.state.recent, rtol=1e-12)

    cusum = cusum_test(cusum_state(5), stream, time_ms, nu_h, var_h)
    clean_cusum = cusum_test(cusum_state(5), stream[kept], time_ms[kept], nu[kept], var[kept])
    assert np.isnan(cusum.statistic[holes]).all() and not cusum.alarm[holes].any()
    np.testing.assert_allclose(cusum.statistic[kept], clean_cusum.statistic, rtol=1e-12)
    assert np.array_equal(cusum.since_ms[kept], clean_cusum.since_ms)
    assert np.array_equal(cusum.alarm[kept], clean_cusum.alarm)


# --- batch invariance --------------------------------------------------------------------


def _in_batches(batch: npt.NDArray[np.int64], stream: npt.NDArray[np.intp],
                time_ms: npt.NDArray[np.int64], nu: npt.NDArray[np.float64],
                var: npt.NDArray[np.float64], m: int,
                window: int) -> tuple[dict[str, npt.NDArray[np.generic]], WindowState,
                                      CusumState]:
    """Run the window and CUSUM tests batch by batch (batch numbers non-decreasing along
    each stream); per-reading results in the original order."""
    w_state, c_state = window_state(m, window), cusum_state(m)
    out: dict[str, npt.NDArray[np.generic]] = {
        "w_stat": np.full(nu.size, np.nan), "w_alarm": np.zeros(nu.size, bool),
        "c_stat": np.full(nu.size, np.nan), "c_alarm": np.zeros(nu.size, bool),
        "c_since": np.zeros(nu.size, np.int64)}
    for b in np.unique(batch):
        rows = np.flatnonzero(batch == b)
        w = window_test(w_state, stream[rows], nu[rows], var[rows])
        c = cusum_test(c_state, stream[rows], time_ms[rows], nu[rows], var[rows])
        w_state, c_state = w.state, c.state
        out["w_stat"][rows], out["w_alarm"][rows] = w.statistic, w.alarm
        out["c_stat"][rows], out["c_alarm"][rows] = c.statistic, c.alarm
        out["c_since"][rows] = c.since_ms
    return out, w_state, c_state


def test_results_do_not_depend_on_batching() -> None:
    rng = np.random.default_rng(41)
    m, n = 50, 400
    stream, time_ms, j = _streams(m, n)
    onset = rng.integers(0, n, m)[stream]
    nu = rng.standard_normal(stream.size) + np.where(j >= onset, 0.1 * (j - onset), 0.0)
    nu[rng.random(nu.size) < 0.05] = np.nan
    var = np.ones(nu.size)
    whole, w_whole, c_whole = _in_batches(np.zeros(nu.size, np.int64), stream, time_ms, nu,
                                          var, m, 12)
    assert whole["c_alarm"].any() and whole["w_alarm"].any()
    # Batches are time slices of uneven length, different for each stream.
    cuts = np.sort(rng.integers(0, n, (m, 15)), axis=1)
    batch = np.array([np.searchsorted(cuts[s], k, side="right")
                      for s, k in zip(stream, j, strict=True)], dtype=np.int64)
    parts, w_parts, c_parts = _in_batches(batch, stream, time_ms, nu, var, m, 12)
    for key in whole:
        np.testing.assert_allclose(parts[key].astype(float), whole[key].astype(float),
                                   rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(w_parts.recent, w_whole.recent)
    for a, b in zip(c_parts, c_whole, strict=True):
        np.testing.assert_allclose(a, b)


# --- window sums against a naive reference -----------------------------------------------


def _naive_window(stream: list[int], nis: list[float], window: int,
                  history: dict[int, list[float]]) -> list[tuple[float, int]]:
    """Sum of the last `window` finite NIS per stream, one reading at a time."""
    out = []
    for s, v in zip(stream, nis, strict=True):
        if not math.isfinite(v):
            out.append((math.nan, 0))
            continue
        history.setdefault(s, []).append(v)
        last = history[s][-window:]
        out.append((math.fsum(last), len(last)))
    return out


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(st.tuples(st.integers(0, 4),
                            st.one_of(st.floats(-50.0, 50.0), st.just(math.nan)),
                            st.floats(0.01, 10.0)), max_size=60),
    window=st.integers(1, 6),
    cut=st.integers(0, 60),
)
def test_window_sums_match_a_naive_reference(rows: list[tuple[int, float, float]],
                                             window: int, cut: int) -> None:
    rows = sorted(rows, key=lambda r: r[0])
    stream = np.array([r[0] for r in rows], dtype=np.intp)
    nu = np.array([r[1] for r in rows], dtype=np.float64)
    var = np.array([r[2] for r in rows], dtype=np.float64)
    nis = normalized_innovation(nu, var)
    expected = _naive_window(stream.tolist(), nis.tolist(), window, {})
    # In one batch, and in two cut at per-stream positions (earlier readings first).
    rank = np.arange(stream.size) - np.searchsorted(stream, stream)
    second = rank >= cut % (window + 3)
    state = window_state(5, window)
    got_stat, got_dof = np.full(stream.size, np.nan), np.zeros(stream.size, np.int64)
    for part in (~second, second):
        result = window_test(state, stream[part], nu[part], var[part])
        state = result.state
        got_stat[part], got_dof[part] = result.statistic, result.dof
    whole = window_test(window_state(5, window), stream, nu, var)
    want_stat = np.array([e[0] for e in expected])
    want_dof = np.array([e[1] for e in expected], dtype=np.int64)
    for stat, dof in ((whole.statistic, whole.dof), (got_stat, got_dof)):
        np.testing.assert_allclose(stat, want_stat, rtol=1e-9, atol=1e-6)
        assert np.array_equal(dof, want_dof)
    thresholds = [chi2_threshold(1e-4, d) if d else math.inf for d in want_dof]
    np.testing.assert_allclose(whole.threshold, thresholds)
