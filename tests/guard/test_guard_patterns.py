"""Pattern detectors: silent on clean CGM, catch realistic attacks, batch = each stream alone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pytest

from medtwin.domain import Channel
from medtwin.guard._patterns import (
    MAX_RATE_PER_MIN,
    frozen_values,
    impossible_rates,
    noise_bursts,
    replayed_windows,
    timestamp_games,
)

STEP_MS = 5 * 60_000
N = 2 * 24 * 12  # two days of 5-min CGM
T0 = 1_700_000_000_000


class Stream(NamedTuple):
    stream: np.ndarray
    time_ms: np.ndarray
    value: np.ndarray
    channel: np.ndarray
    arrival_ms: np.ndarray


def cgm(seed: int, stream_id: int = 0, sigma: float = 5.0) -> Stream:
    """Two days of CGM: daily and meal-scale swings plus sensor noise, reported as integers,
    arriving after a jittered network delay."""
    rng = np.random.default_rng(seed)
    t = np.arange(N) * STEP_MS
    minutes = t / 60_000
    phase = rng.uniform(0, 2 * np.pi, 2)
    smooth = (140 + 40 * np.sin(2 * np.pi * minutes / 1440 + phase[0])
              + 20 * np.sin(2 * np.pi * minutes / 180 + phase[1]))
    value = np.rint(smooth + rng.normal(0, sigma, N))
    arrival = T0 + t + 200 + rng.exponential(300, N).astype(np.int64)
    return Stream(np.full(N, stream_id, dtype=np.int64), T0 + t, value.astype(np.float64),
                  np.full(N, int(Channel.GLUCOSE), dtype=np.int64), arrival.astype(np.int64))


def run_all(s: Stream) -> dict[str, NamedTuple]:
    args = (s.stream, s.time_ms, s.value, s.channel)
    return {
        "frozen": frozen_values(*args),
        "replay": replayed_windows(*args),
        "noise": noise_bursts(*args),
        "rate": impossible_rates(*args),
        "timestamps": timestamp_games(*args, arrival_ms=s.arrival_ms),
    }


def with_value(s: Stream, value: np.ndarray) -> Stream:
    return s._replace(value=value)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_clean_cgm_raises_no_alarm(seed: int) -> None:
    for name, result in run_all(cgm(seed)).items():
        alarm: Any = result[0]
        assert not alarm.any(), name


def test_freeze_of_35_minutes_is_caught_from_its_start() -> None:
    s = cgm(4)
    value = s.value.copy()
    value[200:208] = value[200]  # 8 equal readings: 35 min
    value[208] = value[200] + 3.0  # then it moves again
    r = frozen_values(s.stream, s.time_ms, value, s.channel)
    assert np.flatnonzero(r.alarm).tolist() == [206, 207]
    assert r.since_ms[207] == s.time_ms[200]
    assert r.statistic[207] == 35 * 60_000
    assert r.threshold[207] == 30 * 60_000
    assert r.run_readings[207] == 8


def test_freeze_shorter_than_the_duration_is_not_an_alarm() -> None:
    s = cgm(4)
    value = s.value.copy()
    value[200:205] = value[200]  # 20 min
    assert not frozen_values(s.stream, s.time_ms, value, s.channel).alarm.any()


@pytest.mark.parametrize("shift", [0.0, 15.0])
def test_replay_of_an_hour_is_caught_and_points_at_its_source(shift: float) -> None:
    s = cgm(5)
    value = s.value.copy()
    value[400:413] = value[100:113] + shift  # 13 readings, 1 h, copied (and shifted)
    r = replayed_windows(s.stream, s.time_ms, value, s.channel)
    assert np.flatnonzero(r.alarm).tolist() == [411, 412]
    assert r.since_ms[412] == s.time_ms[401]
    assert r.source_start_ms[412] == s.time_ms[101]
    assert r.source_end_ms[412] == s.time_ms[112]
    assert r.offset[412] == shift
    assert r.statistic[412] <= r.threshold[412]


def test_replay_of_less_than_the_window_is_not_an_alarm() -> None:
    s = cgm(5)
    value = s.value.copy()
    value[400:411] = value[100:111]  # 11 readings
    assert not replayed_windows(s.stream, s.time_ms, value, s.channel).alarm.any()


def test_noise_burst_is_caught_within_it() -> None:
    s = cgm(6)
    value = s.value.copy()
    rng = np.random.default_rng(60)
    value[300:324] += np.rint(rng.normal(0, 20, 24))  # 2 h of SD 20 noise
    r = noise_bursts(s.stream, s.time_ms, value, s.channel)
    hits = np.flatnonzero(r.alarm)
    assert hits.size > 0
    assert hits.min() >= 300 and hits.max() < 300 + 24 + 12
    assert (r.statistic[hits] > r.threshold[hits]).all()
    assert (r.since_ms[hits] >= s.time_ms[300 - 12]).all()
    # first differences of SD-5 noise have SD 5 * sqrt(2) ~ 7
    assert 5.0 < float(r.usual_sd[0]) < 10.0


def test_jump_of_80_in_5_minutes_is_an_impossible_rate() -> None:
    s = cgm(7)
    value = s.value.copy()
    value[250:] += 80.0
    r = impossible_rates(s.stream, s.time_ms, value, s.channel)
    assert np.flatnonzero(r.alarm).tolist() == [250]
    assert r.since_ms[250] == s.time_ms[249]
    assert r.statistic[250] > r.threshold[250] == MAX_RATE_PER_MIN[Channel.GLUCOSE]


def rapid_fall(seed: int) -> Stream:
    """A real fall of 3 mg/dL/min from 180 into hypoglycaemia (45 mg/dL) and back up slowly."""
    s = cgm(seed)
    rng = np.random.default_rng(seed + 100)
    minutes = np.arange(N) * 5.0
    start = minutes[300]
    curve = np.clip(180 - 3.0 * (minutes - start), 45, None)
    curve = np.where(minutes < start, 180.0, curve)
    curve = np.where(minutes > start + 200, 45 + 0.5 * (minutes - start - 200), curve)
    curve = np.minimum(curve, 180.0)
    return with_value(s, np.rint(curve + rng.normal(0, 5, N)))


def test_rapid_physiological_fall_into_hypoglycaemia_is_not_an_alarm() -> None:
    s = rapid_fall(8)
    r = impossible_rates(s.stream, s.time_ms, s.value, s.channel)
    assert not r.alarm.any()
    assert np.nanmin(r.statistic) < -4.0  # it is a fast fall, measured as such
    assert not noise_bursts(s.stream, s.time_ms, s.value, s.channel).alarm.any()
    assert not frozen_values(s.stream, s.time_ms, s.value, s.channel).alarm.any()


def test_heart_rate_uses_its_own_limit() -> None:
    t = T0 + np.arange(120) * 1000  # 1 Hz
    hr = np.full(120, 70.0) + np.arange(120) % 3
    hr[60:] += 100.0  # re-entrant tachycardia onset: possible
    ch = np.full(120, int(Channel.HEART_RATE), dtype=np.int64)
    sid = np.zeros(120, dtype=np.int64)
    assert not impossible_rates(sid, t, hr, ch).alarm.any()
    hr[90:] += 100.0  # 70 -> 270 within a minute: not physiology
    assert impossible_rates(sid, t, hr, ch).alarm[90]


def test_out_of_order_and_duplicate_timestamps() -> None:
    s = cgm(9)
    time_ms = s.time_ms.copy()
    time_ms[[100, 101]] = time_ms[[101, 100]]  # swapped
    time_ms[200] = time_ms[199]  # same time as the reading before, another value
    r = timestamp_games(s.stream, time_ms, s.value, s.channel)
    assert np.flatnonzero(r.out_of_order).tolist() == [101]
    assert r.lag_ms[101] == STEP_MS
    assert np.flatnonzero(r.duplicate).tolist() == [200]
    assert np.flatnonzero(r.alarm).tolist() == [101, 200]


def test_skewed_regular_and_dense_timestamps() -> None:
    s = cgm(10)
    arrival = s.arrival_ms.copy()
    arrival[50] = s.time_ms[50] - 10 * 60_000  # stamped 10 min in the future
    arrival[60] = s.time_ms[60] + 5 * 60 * 60_000  # 5 h late
    arrival[300:320] = arrival[300] + np.arange(20) * STEP_MS  # scripted, exact spacing
    time_ms = s.time_ms.copy()
    time_ms[400] = time_ms[399] + 30_000  # a reading inserted 30 s after the last
    r = timestamp_games(s.stream, time_ms, s.value, s.channel, arrival_ms=arrival)
    assert np.flatnonzero(r.skewed).tolist() == [50, 60]
    assert r.skew_ms[50] == -10 * 60_000
    assert np.flatnonzero(r.too_regular).tolist() == list(range(311, 320))
    assert (r.arrival_jitter_ms[311:320] == 0).all()
    assert np.flatnonzero(r.too_dense).tolist() == [400]
    assert r.gap_ms[400] == 30_000 and r.median_gap_ms[400] == STEP_MS
    assert not r.out_of_order.any() and not r.duplicate.any()


def attacked(seed: int, stream_id: int) -> Stream:
    s = cgm(seed, stream_id)
    value = s.value.copy()
    value[100:108] = value[100]
    value[300:313] = value[150:163] - 7.0
    value[400:430] += np.rint(np.random.default_rng(seed).normal(0, 25, 30))
    value[500:] += 80
    time_ms = s.time_ms.copy()
    time_ms[[50, 51]] = time_ms[[51, 50]]
    return s._replace(value=value, time_ms=time_ms)


def concat(streams: list[Stream]) -> Stream:
    return Stream(*(np.concatenate(parts) for parts in zip(*streams, strict=True)))


def assert_same(a: NamedTuple, b: NamedTuple) -> None:
    for name, x, y in zip(a._fields, a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=name)


def test_streams_in_one_batch_give_each_stream_alone() -> None:
    alone = [attacked(seed, sid) for seed, sid in [(11, 7), (12, 3), (13, 42)]]
    batch = concat([alone[0], rapid_fall(14)._replace(stream=np.full(N, 9)), *alone[1:]])
    parts = [alone[0], rapid_fall(14)._replace(stream=np.full(N, 9)), *alone[1:]]
    together = run_all(batch)
    for k, part in enumerate(parts):
        rows = slice(k * N, (k + 1) * N)
        for name, result in run_all(part).items():
            sliced = type(result)(*(np.asarray(f)[rows] for f in together[name]))
            assert_same(sliced, result)
    caught = {name: bool(np.asarray(r[0])[:N].any()) for name, r in together.items()}
    assert all(caught.values()), caught


@pytest.mark.parametrize("detector", [replayed_windows, noise_bursts])
def test_windows_shorter_than_three_are_refused(detector: Callable[..., Any]) -> None:
    s = cgm(1)
    with pytest.raises(ValueError, match=r"^(replay|noise): window must be at least 3 values"):
        detector(s.stream, s.time_ms, s.value, s.channel, window=2)


def test_empty_batch() -> None:
    empty_i = np.zeros(0, dtype=np.int64)
    empty_f = np.zeros(0)
    args = (empty_i, empty_i, empty_f, empty_i)
    assert frozen_values(*args).alarm.shape == (0,)
    assert replayed_windows(*args).alarm.shape == (0,)
    assert noise_bursts(*args).alarm.shape == (0,)
    assert impossible_rates(*args).alarm.shape == (0,)
    assert timestamp_games(*args).alarm.shape == (0,)
