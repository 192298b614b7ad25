"""Level jumps judged against the trend on either side, and the long replay pass for smooth
CGM: steps and spliced-in recordings are caught, smooth physiology is not."""

from __future__ import annotations

import numpy as np
import pytest

from medtwin.domain import Channel, FindingCode
from medtwin.guard import (
    JUMP_MIN,
    JUMP_MIN_AT_LOW,
    JUMP_RATE_AT_LOW,
    GuardBank,
    level_jumps,
    replayed_segments,
    replayed_windows,
)

T0 = 1_700_000_000_000
MINUTE = 60_000


def smooth_cgm(n: int, seed: int, step_min: int = 3) -> tuple[np.ndarray, ...]:
    """A filtered CGM's output: glucose drifting smoothly, whole mg/dL, every `step_min`."""
    rng = np.random.default_rng(seed)
    knots = np.cumsum(rng.normal(0, 6.0, n // 5 + 2))          # a 15-min random walk ...
    k = np.arange(n)
    drift = np.interp(k / 5.0, np.arange(knots.size), knots)   # ... drawn smoothly
    value = np.round(130 + 30 * np.sin(k / 97.0) + drift - drift.mean())
    time_ms = T0 + k.astype(np.int64) * step_min * MINUTE
    return (np.zeros(n, np.int64), time_ms, value.astype(np.float64),
            np.full(n, int(Channel.GLUCOSE), np.int64))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_smooth_clean_cgm_has_no_jump_and_no_replay(seed: int) -> None:
    args = smooth_cgm(720, seed)
    assert not level_jumps(*args).alarm.any()
    assert not replayed_segments(*args).alarm.any()


@pytest.mark.parametrize("offset", [-30.0, 30.0])
def test_an_offset_on_a_steep_trend_is_a_jump_of_its_size(offset: float) -> None:
    stream, time_ms, _, channel = smooth_cgm(200, 4)
    value = np.round(80 + 7.5 * np.arange(200) / 3.0) % 1000    # rising 2.5 mg/dL/min
    value[100:] += offset
    r = level_jumps(stream, time_ms, value, channel)
    assert np.flatnonzero(r.alarm).tolist() == [103]          # the 4th reading at the level
    assert r.statistic[103] == pytest.approx(offset, abs=1.0)
    assert r.since_ms[103] == time_ms[100]
    assert r.threshold[103] == JUMP_MIN[int(Channel.GLUCOSE)]


def test_a_fast_smooth_rise_and_a_gap_in_the_data_are_not_jumps() -> None:
    stream, time_ms, _, channel = smooth_cgm(200, 5)
    rise = np.round(100 + 120 / (1 + np.exp(-(np.arange(200) - 100) / 4.0)))  # 10/reading
    assert not level_jumps(stream, time_ms, rise, channel).alarm.any()
    stepped = np.full(200, 120.0)
    stepped[100:] = 160.0
    gapped = time_ms.copy()
    gapped[100:] += 60 * MINUTE                                  # an hour without readings
    assert not level_jumps(stream, gapped, stepped, channel).alarm.any()
    assert level_jumps(stream, time_ms, stepped, channel).alarm.any()


def _from_low(level: float, rise_per_min: float = 0.0) -> tuple[np.ndarray, ...]:
    """3-min CGM: an hour at LOW (39), then readings from `level` on, rising at
    `rise_per_min` mg/dL/min."""
    stream, time_ms, _, channel = smooth_cgm(60, 7)
    value = np.full(60, 39.0)
    value[20:] = np.round(level + 3.0 * rise_per_min * np.arange(40))
    return stream, time_ms, value, channel


@pytest.mark.parametrize("level", [52.0, 60.0])
def test_leaving_low_above_it_in_one_step_is_a_jump_from_low(level: float) -> None:
    r = level_jumps(*_from_low(level))
    assert np.flatnonzero(r.alarm).tolist() == [23]          # the 4th reading off LOW
    assert r.at_low[23] and r.threshold[23] == JUMP_MIN_AT_LOW[int(Channel.GLUCOSE)]
    assert r.statistic[23] == pytest.approx(level - 39.0)


@pytest.mark.parametrize("step_min", [3, 5])
def test_crossing_low_smoothly_is_not_a_jump_at_any_usual_speed(step_min: int) -> None:
    for rate in (1.0, 3.0, 5.0, 6.0):            # a recovery from hypoglycaemia
        stream, time_ms, _, channel = smooth_cgm(60, 8, step_min)
        for phase in np.linspace(0.0, 1.0, 5, endpoint=False):
            true = 20.0 + rate * step_min * (np.arange(60) - 5 - phase)
            value = np.maximum(np.round(true), 39.0)
            assert not level_jumps(stream, time_ms, value, channel).alarm.any()
            fall = value[::-1].copy()            # ... and a fall into it
            assert not level_jumps(stream, time_ms, fall, channel).alarm.any()


def test_a_slower_sensor_needs_a_larger_step_off_low() -> None:
    stream, time_ms, _, channel = smooth_cgm(60, 9, step_min=5)
    for level, fires in ((54.0, False), (61.0, True)):         # steps of 15 and 22
        value = np.full(60, 39.0)
        value[20:] = level
        r = level_jumps(stream, time_ms, value, channel)
        assert r.alarm.any() == fires
        assert r.threshold[23] == JUMP_RATE_AT_LOW * 5 > JUMP_MIN_AT_LOW[int(Channel.GLUCOSE)]


def test_the_smaller_threshold_holds_only_at_low() -> None:
    stream, time_ms, value, channel = _from_low(55.0)
    for low, high in ((100.0, 116.0), (384.0, 400.0)):   # the same step elsewhere, at HIGH
        stepped = np.where(value > 39.0, high, low)
        r = level_jumps(stream, time_ms, stepped, channel)
        assert not r.alarm.any() and not r.at_low.any()
    heart = np.full(60, int(Channel.HEART_RATE), np.int64)   # no LOW on other channels
    assert not level_jumps(stream, time_ms, value, heart).at_low.any()


@pytest.mark.parametrize("quiet_channel", [Channel.GLUCOSE, Channel.HEART_RATE])
def test_a_replayed_flat_hour_is_found_by_the_long_pass_only(quiet_channel: Channel) -> None:
    stream, time_ms, value, _ = smooth_cgm(400, 6)
    channel = np.full(400, int(quiet_channel), np.int64)
    value = value.copy()
    quiet = np.round(110 + 4 * np.sin(np.arange(20) / 3.0))    # a quiet hour, changes of 0-1
    value[100:120] = quiet
    value[300:320] = quiet                                        # ... replayed 10 h later
    assert not replayed_windows(stream, time_ms, value, channel).alarm[300:320].any()
    r = replayed_segments(stream, time_ms, value, channel)
    assert np.flatnonzero(r.alarm).tolist() == [319]
    assert r.source_start_ms[319] == time_ms[100]
    assert r.source_end_ms[319] == time_ms[119]
    assert r.offset[319] == 0.0
    spo2 = np.full(400, int(Channel.SPO2), np.int64)              # not a smooth channel
    assert not replayed_segments(stream, time_ms, value, spo2).alarm.any()


def test_on_cgm_a_shifted_copy_needs_the_long_window() -> None:
    stream, time_ms, value, channel = smooth_cgm(400, 7)
    value = value.copy()
    shape = np.round(100 + 30 * np.sin(np.arange(20) / 4.0))    # an identifying hour
    value[100:120] = shape
    value[300:312] = shape[:12] + 17.0                            # 12 readings, shifted
    r = replayed_segments(stream, time_ms, value, channel)
    assert replayed_windows(stream, time_ms, value, channel).alarm[311]
    assert not r.alarm[300:320].any()                             # a ramp's chance match
    value[300:320] = shape + 17.0                                 # the whole hour, shifted
    r = replayed_segments(stream, time_ms, value, channel)
    assert np.flatnonzero(r.alarm[300:330]).tolist() == [19]
    assert r.offset[319] == 17.0
    value[300:320] = shape                                        # verbatim: 12 readings do
    assert np.flatnonzero(replayed_segments(stream, time_ms, value, channel).alarm)[0] == 311


@pytest.mark.parametrize(("channel", "usual", "step"),
                         [(Channel.HEART_RATE, 72.0, 30.0), (Channel.SPO2, 96.0, -6.0)])
def test_a_vital_sign_step_is_shown_but_never_held(channel: Channel, usual: float,
                                                    step: float) -> None:
    """A probe offset and a sudden change in the patient (an arrhythmia's onset) both step a
    vital sign: the guard says so, the readings still move the twin and the clinical rules
    judge them."""
    bank = GuardBank()
    src = bank.source("pt-1", "monitor-1")
    rng = np.random.default_rng(8)
    n = 200
    value = np.round(usual + np.sin(np.arange(n) / 15.0) + rng.normal(0, 0.7, n))
    value[120:] += step
    time_ms = T0 + np.arange(n, dtype=np.int64) * MINUTE
    channels = np.full(n, int(channel), np.int8)
    screen = bank.screen(np.full(n, src, np.intp), channels, value, time_ms)
    (found,) = [d for d in screen.drafts if d.detector.name == "level-jump"]
    assert found.detector.code is FindingCode.SENSOR_FAULT and not found.detector.holds
    assert found.time_ms == time_ms[123] and found.since_ms == time_ms[120]
    assert "check both" in found.summary
    assert not screen.held.any()


def test_an_offset_with_a_missed_reading_beside_the_step_is_still_a_jump() -> None:
    stream, time_ms, _, channel = smooth_cgm(200, 9, step_min=5)
    value = np.full(200, 120.0)
    value[100:] += 40.0
    keep = np.ones(200, bool)
    keep[98] = keep[102] = False                                  # one missed on each side
    r = level_jumps(stream[keep], time_ms[keep], value[keep], channel[keep])
    assert r.alarm.any() and r.statistic[r.alarm][0] == pytest.approx(40.0)


def test_a_v_shaped_glucose_turn_is_never_a_jump() -> None:
    """A fast fall that turns into a fast rise (a hypo treated with glucose): two straight
    lines meeting at a corner, not a step."""
    stream, time_ms, _, channel = smooth_cgm(200, 10)
    k = np.arange(200.0)
    fall, rise = 3.0 * 3, 3.5 * 3                                # mg/dL per 3-min reading
    value = np.round(np.where(k < 100, np.minimum(70 + fall * (100 - k), 160),
                              np.minimum(70 + rise * (k - 100), 250)))
    assert value.min() == 70 and value[90] == 160 and value[108] == 154
    assert not level_jumps(stream, time_ms, value, channel).alarm.any()
