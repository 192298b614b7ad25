"""Device-behaviour detection: silent on a simulated day of honest devices, catches floods,
clock jumps, signature-failure bursts and sequence regressions, batch invariant."""

from __future__ import annotations

import numpy as np
import pytest

from medtwin.estimation import NO_TIME
from medtwin.guard._behaviour import (
    BURST,
    NO_SEQUENCE,
    RATE_PER_S,
    UNREGISTERED_BURST,
    UNREGISTERED_RATE_PER_S,
    Feature,
    behaviour_state,
    behaviour_step,
    bucket_state,
    grow_behaviour_state,
    token_bucket,
)

T0 = 1_700_000_000_000
DAY_MS = 86_400_000
Packets = dict[str, np.ndarray]


def device(i: int, period_ms: int, n: int, seed: int, t0: int = T0, delay_ms: int = 50,
           size: int = 120) -> Packets:
    """An honest device: sends every `period_ms` (a few ms of timing jitter), packets arrive
    after a network delay of `delay_ms` plus an exponential tail, payload size ± 8 bytes."""
    rng = np.random.default_rng(seed)
    send = t0 + np.arange(n) * period_ms + rng.normal(0, 5, n).astype(np.int64)
    return {"device": np.full(n, i), "arrival_ms": send + delay_ms
            + rng.exponential(20, n).astype(np.int64), "send_ms": send,
            "sequence": np.arange(n, dtype=np.int64),
            "payload_bytes": size + rng.integers(-8, 9, n), "signature_ok": np.ones(n, bool)}


def cat(*parts: Packets) -> Packets:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def cgm(i: int, n: int = 288, seed: int = 0) -> Packets:
    return device(i, 300_000, n, seed, delay_ms=200, size=64)


def monitor(i: int, n: int, seed: int = 1) -> Packets:
    return device(i, 1000, n, seed)


def test_honest_devices_raise_no_alarm_over_a_day() -> None:
    packets = cat(cgm(0), monitor(1, DAY_MS // 1000))
    result = behaviour_step(behaviour_state(2), **packets)
    assert not result.alarm.any()
    assert result.allowed.all()
    assert np.nanmax(result.score) < 5.0  # measured 3.3; Z_THRESHOLD is 8
    assert (result.since_ms == NO_TIME).all()


def test_flood_is_throttled_within_a_second_and_flagged_others_unaffected() -> None:
    warm = 600
    start = T0 + warm * 1000 + 500
    flood = device(1, 10, 500, seed=9, t0=start)  # 100 packets/s for 5 s
    flood["sequence"] = warm + np.arange(500)
    flood["arrival_ms"].sort()  # in sequence order: no regressions muddle the test
    packets = cat(cgm(0, n=10), monitor(1, warm), monitor(2, warm + 10, seed=3), flood)
    result = behaviour_step(behaviour_state(3), **packets)
    is_flood = packets["arrival_ms"] >= start - 100
    is_flood &= packets["device"] == 1
    throttled = is_flood & ~result.allowed
    assert packets["arrival_ms"][throttled].min() - start < 1000
    # The bucket admits its burst, then the rate: about 50 + 5 * 5 of 500 packets.
    admitted = int((is_flood & result.allowed).sum())
    assert BURST <= admitted <= BURST + RATE_PER_S * 5 + 2
    assert result.alarm[throttled].all()
    assert (result.finding[throttled] == Feature.THROTTLE).all()
    # The rate is flagged as soon as the flood starts, before the bucket runs dry.
    assert result.alarms[is_flood, Feature.RATE][1:3].all()
    assert result.alarm[is_flood].mean() > 0.85
    assert (result.since_ms[is_flood & result.alarm] >= start - 100).all()
    others = packets["device"] != 1
    assert result.allowed[others].all() and not result.alarm[others].any()


def test_clock_skew_of_ten_minutes_is_flagged() -> None:
    packets = monitor(0, 1200)
    jump = 900
    packets["send_ms"][jump:] += 600_000  # the device clock runs 10 min ahead
    result = behaviour_step(behaviour_state(1), **packets)
    assert not result.alarm[:jump].any()
    assert result.finding[jump] == Feature.SKEW
    assert result.observed[jump] == pytest.approx(result.expected[jump] - 600_000, abs=500)
    assert result.statistic[jump] > result.threshold[jump]
    assert result.since_ms[jump] == packets["arrival_ms"][jump]
    # The EW variance absorbs a held step within a few packets (see the module docstring).
    assert result.alarm[jump:jump + 2].all()
    assert (result.since_ms[jump:jump + 2] == packets["arrival_ms"][jump]).all()


def test_bursts_of_signature_failures_are_flagged_single_ones_not() -> None:
    packets = monitor(0, 1200)
    packets["signature_ok"][[100, 400]] = False  # stray corruption
    packets["signature_ok"][800:806] = False  # a forging burst
    result = behaviour_step(behaviour_state(1), **packets)
    assert not result.alarm[:800].any()
    assert (result.finding[802:806] == Feature.SIGNATURE).all()
    assert result.statistic[805] > 5.0 and result.threshold[805] == 2.5
    assert result.since_ms[805] == packets["arrival_ms"][802]
    assert not result.alarm[806:].any()


def test_sequence_regressions_are_flagged() -> None:
    packets = monitor(0, 300)
    packets["sequence"][200] = 150  # a replayed packet
    packets["sequence"][201:] += 1000  # then it goes on (a jump forward is a gap, not this)
    result = behaviour_step(behaviour_state(1), **packets)
    assert result.finding[200] == Feature.SEQ_REGRESSION
    assert (result.observed[200], result.expected[200]) == (150, 200)
    assert result.statistic[200] == 50 and result.threshold[200] == 0
    # The replayed packet is authentic, so it becomes the reference: the next one is a gap.
    assert result.finding[201] == Feature.SEQ_GAP


def _scenario() -> Packets:
    flood = device(1, 10, 300, seed=9, t0=T0 + 400_500)
    flood["sequence"] = 400 + np.arange(300)
    packets = cat(cgm(0, n=12), monitor(1, 400), monitor(2, 900, seed=4), flood)
    packets["send_ms"][(packets["device"] == 2) & (packets["arrival_ms"] > T0 + 600_000)] += 600_000
    two = np.flatnonzero(packets["device"] == 2)
    packets["signature_ok"][two[700:705]] = False
    packets["sequence"][two[800]] = 3
    return packets


def test_results_do_not_depend_on_batching() -> None:
    packets = _scenario()
    rng = np.random.default_rng(5)
    shuffle = rng.permutation(packets["device"].size)
    whole = behaviour_step(behaviour_state(3), **{k: v[shuffle] for k, v in packets.items()})
    assert whole.alarm.any()
    cuts = np.sort(rng.integers(T0, T0 + 900_000, 7)) + 0.5
    batch = np.searchsorted(cuts, packets["arrival_ms"][shuffle])
    state = behaviour_state(3)
    pieces = []
    for b in range(8):
        chosen = np.flatnonzero(batch == b)
        part = behaviour_step(state, **{k: v[shuffle][chosen] for k, v in packets.items()})
        state = part.state
        pieces.append((chosen, part))
    for name in ("alarm", "finding", "alarms", "since_ms", "allowed"):
        got = np.empty_like(getattr(whole, name))
        for chosen, part in pieces:
            got[chosen] = getattr(part, name)
        np.testing.assert_array_equal(got, getattr(whole, name), err_msg=name)
    for name in ("observed", "expected", "statistic", "threshold", "score", "z"):
        got = np.empty_like(getattr(whole, name))
        for chosen, part in pieces:
            got[chosen] = getattr(part, name)
        np.testing.assert_allclose(got, getattr(whole, name), rtol=1e-9, atol=1e-9,
                                   err_msg=name)
    for a, b in zip(state, whole.state, strict=True):
        for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,),
                        strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-9)


def test_state_grows_to_new_devices() -> None:
    first, later = monitor(0, 300), cat(monitor(0, 300, seed=7), cgm(1, n=40), monitor(2, 50))
    later["arrival_ms"][later["device"] == 0] += 300_000
    later["send_ms"][later["device"] == 0] += 300_000
    later["sequence"][later["device"] == 0] += 300
    small = behaviour_step(behaviour_state(1), **first)
    with pytest.raises(ValueError, match=r"guard: device/key ids must be in \[0, 1\); grow"):
        behaviour_step(small.state, **later)
    grown = grow_behaviour_state(small.state, 3)
    assert grown.seen.shape == (3, 5) and grown.bucket.tokens.shape == (3,)
    big = behaviour_step(behaviour_state(3), **first)
    for a, b in zip(grown, big.state, strict=True):
        for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,),
                        strict=True):
            np.testing.assert_array_equal(x, y)
    result = behaviour_step(grown, **later)
    assert not result.alarm.any()
    fresh = result.z[later["device"] == 2]
    assert np.isnan(fresh[:30]).all() and np.isfinite(fresh[31:, Feature.SKEW]).all()


def _naive_bucket(times: np.ndarray, rate_per_s: float, burst: float) -> np.ndarray:
    tokens, last, out = burst, times[0], []
    for t in times:
        tokens = min(burst, tokens + rate_per_s * (t - last) / 1000)
        last = t
        out.append(tokens >= 1 - 1e-9)
        tokens -= out[-1]
    return np.array(out)


@pytest.mark.parametrize("seed", range(6))
def test_token_bucket_matches_a_packet_by_packet_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, 4, 600)
    times = T0 + np.cumsum(rng.exponential(rng.choice([5, 50, 400]), 600)).astype(np.int64)
    rate, burst = rng.uniform(1, 20, 4), rng.integers(1, 30, 4).astype(float)
    state = bucket_state(4)
    allowed = np.zeros(600, bool)
    for part in np.array_split(np.arange(600), rng.integers(1, 5)):
        res = token_bucket(state, keys[part], times[part], rate, burst)
        allowed[part], state = res.allowed, res.state
    for k in range(4):
        mine = keys == k
        np.testing.assert_array_equal(allowed[mine], _naive_bucket(times[mine], rate[k],
                                                                   burst[k]))


def test_unregistered_senders_share_buckets_by_key() -> None:
    times = T0 + np.arange(200) * 10
    keys = np.zeros(200, np.intp)
    keys[::20] = 1  # a second sender, 5 packets/s
    res = token_bucket(bucket_state(2), keys, times, UNREGISTERED_RATE_PER_S,
                       UNREGISTERED_BURST)
    assert res.allowed[keys == 0].sum() == UNREGISTERED_BURST + 1  # burst, then 1/s for ~2 s
    assert res.allowed[keys == 1].all()
    with pytest.raises(ValueError, match="guard: token bucket needs rate > 0"):
        token_bucket(bucket_state(1), np.zeros(1, np.intp), times[:1], 0.0)


def test_a_forged_packet_is_judged_on_its_arrival_and_signature_only() -> None:
    state = behaviour_state(1)
    t = np.arange(40, dtype=np.int64) * 60_000
    state = behaviour_step(state, np.zeros(40, np.intp), t, t - 500, np.arange(40),
                           np.full(40, 5), np.ones(40, bool)).state
    forged = behaviour_step(state, np.zeros(1, np.intp), np.array([40 * 60_000]),
                            np.array([40 * 60_000]), np.array([NO_SEQUENCE]),
                            np.zeros(1, np.int64), np.zeros(1, bool))
    assert not forged.alarms[0, Feature.SEQ_REGRESSION]
    assert not forged.alarms[0, Feature.SKEW] and not forged.alarms[0, Feature.PAYLOAD]
