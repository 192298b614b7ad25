"""Vectorized vital signs: ranges, device precision, daily rhythm, activity, fever, sepsis."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import pytest

from medtwin.domain import Channel
from medtwin.sim import (
    VitalSigns,
    VitalsParams,
    VitalsState,
    deterioration_severity,
    vitals_init,
    vitals_step,
)
from medtwin.sim._vitals import LIMITS

MIDNIGHT_MS = int(datetime(2024, 3, 4, tzinfo=UTC).timestamp() * 1000)
HOUR_MS = 3_600_000
N = 12
FloatArray = npt.NDArray[np.float64]
#: Values per channel, shape (minutes, n_patients); hour of day of each minute; the states.
Run = tuple[dict[Channel, FloatArray], FloatArray, list[VitalsState]]
VITALS = (Channel.HEART_RATE, Channel.SPO2, Channel.RESP_RATE, Channel.SYSTOLIC_BP,
          Channel.DIASTOLIC_BP, Channel.TEMPERATURE)


def _run(params: VitalsParams, seed: int, minutes: int, start_ms: int = MIDNIGHT_MS) -> Run:
    """`minutes` one-minute steps of the model from `start_ms`."""
    rng = np.random.default_rng(seed)
    state = vitals_init(params, start_ms, rng)
    signs: list[VitalSigns] = []
    states: list[VitalsState] = []
    for _ in range(minutes):
        state, sign = vitals_step(params, state, 60.0, rng)
        signs.append(sign)
        states.append(state)
    values = {ch: np.stack([s.by_channel()[ch] for s in signs]) for ch in VITALS}
    hours = np.array([(s.time_ms - MIDNIGHT_MS) / HOUR_MS % 24 for s in signs])
    return values, hours, states


@pytest.fixture(scope="module")
def params() -> VitalsParams:
    return VitalsParams.sample(N, np.random.default_rng(42))


@pytest.fixture(scope="module")
def two_days(params: VitalsParams) -> Run:
    return _run(params, seed=7, minutes=2 * 24 * 60)


def test_values_in_range_at_device_precision(two_days: Run) -> None:
    values, _, _ = two_days
    for channel, v in values.items():
        assert v.shape == (2 * 24 * 60, N)
        low, high = LIMITS[channel]
        assert channel.spec.possible_min <= low and high <= channel.spec.possible_max
        assert v.min() >= low and v.max() <= high
        if channel is Channel.TEMPERATURE:
            assert np.allclose(v * 10, np.round(v * 10), atol=1e-9)
        else:
            assert np.all(v == np.round(v))
    assert values[Channel.SPO2].max() <= 100
    assert np.all(values[Channel.DIASTOLIC_BP] <= values[Channel.SYSTOLIC_BP] - 10)


def test_well_patients_look_well(two_days: Run) -> None:
    values, _, _ = two_days
    assert 60 < values[Channel.HEART_RATE].mean() < 85
    assert np.percentile(values[Channel.SPO2], 1) >= 92
    assert 12 <= np.median(values[Channel.RESP_RATE]) <= 20
    assert 105 < values[Channel.SYSTOLIC_BP].mean() < 140
    assert 36.0 < values[Channel.TEMPERATURE].mean() < 37.5
    # Noise, but not white noise: consecutive minutes are correlated.
    hr = values[Channel.HEART_RATE][:, 0]
    assert hr.std() > 2
    assert np.corrcoef(hr[:-1], hr[1:])[0, 1] > 0.5


def test_daily_rhythm_night_lower_than_afternoon(two_days: Run) -> None:
    values, hours, _ = two_days
    night, afternoon = (hours >= 2) & (hours < 5), (hours >= 14) & (hours < 18)
    for channel, least in ((Channel.HEART_RATE, 8.0), (Channel.SYSTOLIC_BP, 10.0),
                           (Channel.TEMPERATURE, 0.4), (Channel.RESP_RATE, 0.5)):
        v = values[channel]
        assert v[afternoon].mean() - v[night].mean() > least, channel


def test_activity_bouts_only_when_awake_and_raise_hr_rr_sbp(two_days: Run) -> None:
    values, hours, states = two_days
    activity = np.stack([s.activity for s in states])
    night = (hours >= 23) | (hours < 7)
    late_night = (hours >= 1) & (hours < 6)
    assert activity[late_night].max() < 0.01
    day = ~night
    active, resting = (activity > 0.5) & day[:, None], (activity < 0.02) & day[:, None]
    assert active.sum() > 100  # bouts happen
    for channel, least in ((Channel.HEART_RATE, 15.0), (Channel.RESP_RATE, 2.0),
                           (Channel.SYSTOLIC_BP, 7.0)):
        v = values[channel]
        assert v[active].mean() - v[resting].mean() > least, channel


def test_fever_raises_heart_rate_and_breathing(params: VitalsParams) -> None:
    feverish = dataclasses.replace(params, temperature=params.temperature + 2.0)
    well, _, _ = _run(params, seed=3, minutes=600)
    fever, _, _ = _run(feverish, seed=3, minutes=600)
    assert fever[Channel.TEMPERATURE].mean() - well[Channel.TEMPERATURE].mean() == pytest.approx(
        2.0, abs=0.05)
    assert fever[Channel.HEART_RATE].mean() - well[Channel.HEART_RATE].mean() > 10
    assert fever[Channel.RESP_RATE].mean() - well[Channel.RESP_RATE].mean() > 2.5


def test_deterioration_looks_like_sepsis(params: VitalsParams) -> None:
    onset_ms = MIDNIGHT_MS + 10 * HOUR_MS
    sick = np.arange(N) < N // 2
    deteriorating = params.with_onset(np.where(sick, onset_ms, np.inf))
    well, hours, _ = _run(params, seed=5, minutes=16 * 60, start_ms=MIDNIGHT_MS + 6 * HOUR_MS)
    ill, _, _ = _run(deteriorating, seed=5, minutes=16 * 60, start_ms=MIDNIGHT_MS + 6 * HOUR_MS)
    before = hours < 10
    after = hours >= 13  # more than the 2 h ramp after onset
    for channel in VITALS:  # same seed: identical until the onset, and for the others
        assert np.array_equal(ill[channel][before], well[channel][before]), channel
        assert np.array_equal(ill[channel][:, ~sick], well[channel][:, ~sick]), channel
    rise = {ch: ill[ch][after][:, sick].mean() - well[ch][after][:, sick].mean() for ch in VITALS}
    assert rise[Channel.HEART_RATE] > 20
    assert rise[Channel.RESP_RATE] > 6
    assert rise[Channel.TEMPERATURE] > 1.5
    assert rise[Channel.SPO2] < -5
    assert rise[Channel.SYSTOLIC_BP] < -25
    # Enough for NEWS2 to fire: RR >= 21, SpO2 <= 93, SBP <= 100 most of the time.
    late = ill[Channel.RESP_RATE][after][:, sick]
    assert np.mean(late >= 21) > 0.8
    assert np.mean(ill[Channel.SPO2][after][:, sick] <= 93) > 0.8
    assert np.mean(ill[Channel.SYSTOLIC_BP][after][:, sick] <= 100) > 0.8


def test_deterioration_severity_ramps_from_onset() -> None:
    params = VitalsParams.sample(3, np.random.default_rng(0), [0.0, 3_600_000.0, np.inf])
    assert deterioration_severity(params, -1).tolist() == [0.0, 0.0, 0.0]
    assert deterioration_severity(params, 3_600_000).tolist() == [0.5, 0.0, 0.0]
    assert deterioration_severity(params, 20 * 3_600_000).tolist() == [1.0, 1.0, 0.0]


def test_same_seed_same_values_other_seed_other_values(params: VitalsParams) -> None:
    a, _, _ = _run(params, seed=9, minutes=60)
    b, _, _ = _run(params, seed=9, minutes=60)
    c, _, _ = _run(params, seed=10, minutes=60)
    assert all(np.array_equal(a[ch], b[ch]) for ch in VITALS)
    assert not np.array_equal(a[Channel.HEART_RATE], c[Channel.HEART_RATE])
    again = VitalsParams.sample(N, np.random.default_rng(42))
    assert np.array_equal(again.heart_rate, params.heart_rate)


def test_bad_arguments_are_refused(params: VitalsParams) -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="sim: dt_s must be positive"):
        vitals_step(params, vitals_init(params, 0, rng), 0.0, rng)
    with pytest.raises(ValueError, match="sim: onset_ms must hold one value per patient"):
        params.with_onset([0.0])
    with pytest.raises(ValueError, match="sim: n_patients must be at least 1"):
        VitalsParams.sample(0, rng)
