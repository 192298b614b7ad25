"""The cardiorespiratory vitals model: circadian baselines, couplings (fever, hypoxaemia,
stress), exact OU relaxation over irregular steps, bounds, and batching."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medtwin.domain import Channel
from medtwin.physiology import (
    CIRCADIAN_PERIOD_MIN,
    N_VITALS_INPUTS,
    N_VITALS_STATES,
    VITALS_OBSERVED_CHANNELS,
    VITALS_STATE_MAX,
    VITALS_STATE_MIN,
    VitalsInput,
    VitalsModelParams,
    VitalsModelState,
    broadcast_vitals_params,
    default_vitals_params,
    oxygen_saturation,
    pao2_for_saturation,
    vitals_baseline,
    vitals_dynamics,
    vitals_observation,
)

S = VitalsModelState


def _run(x: np.ndarray, p: VitalsModelParams, dt: float, steps: int, t0: float = 0.0,
         u: np.ndarray | None = None) -> np.ndarray:
    """States (steps + 1, n, d) from `x` at time of day `t0`."""
    out = [x]
    for k in range(steps):
        out.append(vitals_dynamics(out[-1], u, p, dt, t0 + k * dt))
    return np.array(out)


def _inputs(n: int, fever: float = 0.0, fio2: float = 0.0) -> np.ndarray:
    u = np.zeros((n, N_VITALS_INPUTS))
    u[:, VitalsInput.FEVER] = fever
    u[:, VitalsInput.FIO2] = fio2
    return u


def test_channels_are_the_vitals_in_channel_order() -> None:
    assert list(VITALS_OBSERVED_CHANNELS) == sorted(VITALS_OBSERVED_CHANNELS)
    assert VITALS_OBSERVED_CHANNELS == (Channel.HEART_RATE, Channel.SPO2, Channel.RESP_RATE,
                                        Channel.SYSTOLIC_BP, Channel.DIASTOLIC_BP,
                                        Channel.TEMPERATURE)


def test_baseline_is_normal_and_kept_for_24_hours_with_the_daily_rhythm() -> None:
    p = default_vitals_params(2)
    traj = _run(vitals_baseline(p, 0.0), p, 10.0, 144)
    times = np.arange(145) * 10.0
    expected = np.array([vitals_baseline(p, t) for t in times])
    np.testing.assert_allclose(traj, expected, atol=1e-9)
    y = vitals_observation(traj[:, 0], p)
    hr, spo2, rr, sbp, dbp, temp = y.T
    # NEWS2 zero-score ranges all day (RCP 2017)
    assert hr.min() >= 51 and hr.max() <= 90 and rr.min() >= 12 and rr.max() <= 20
    assert spo2.min() >= 96 and sbp.min() >= 111 and sbp.max() <= 219
    assert temp.min() >= 36.1 and temp.max() <= 38.0 and np.all(dbp < sbp)
    # peak at 16:00, trough at 04:00, with the published amplitudes
    assert times[np.argmax(hr)] == 960.0 and times[np.argmin(hr)] == 240.0
    assert times[np.argmax(temp)] == 960.0 and times[np.argmin(temp)] == 240.0
    assert hr.max() - hr.min() == pytest.approx(2 * 5.0)
    assert temp.max() - temp.min() == pytest.approx(2 * 0.35)
    assert sbp.max() - sbp.min() == pytest.approx(2 * (4.0 + 2.0 * 2 / 3))
    np.testing.assert_allclose(traj[:, :, S.STRESS], 0.0)


def test_baseline_time_of_day_wraps_around_midnight() -> None:
    p = default_vitals_params(1)
    np.testing.assert_allclose(vitals_baseline(p, 100.0),
                               vitals_baseline(p, 100.0 + CIRCADIAN_PERIOD_MIN), atol=1e-12)


def test_fever_raises_heart_and_breathing_rate_by_the_coupling() -> None:
    p = default_vitals_params(1)
    u = _inputs(1, fever=1.5)
    traj = _run(vitals_baseline(p, 0.0), p, 15.0, 48, u=u)  # 12 h of a 1.5 °C pyrogen
    rise = traj[-1, 0] - vitals_baseline(p, 12 * 60.0)[0]
    assert rise[S.TEMPERATURE] == pytest.approx(1.5, abs=0.01)
    assert rise[S.HEART_RATE] == pytest.approx(10.0 * 1.5, abs=0.3)  # Liebermeister
    assert rise[S.RESP_RATE] == pytest.approx(2.5 * 1.5, abs=0.1)
    assert abs(rise[S.MAP]) < 1e-9 and abs(rise[S.STRESS]) < 1e-12


def test_hypoxaemia_raises_breathing_and_heart_rate() -> None:
    p = default_vitals_params(1)
    zero = np.zeros(1)
    # stress that only lowers PaO2, and lasts
    p = p._replace(stress_time=np.full(1, 1e12), stress_temperature=zero, stress_map=zero,
                   stress_pulse_pressure=zero, stress_heart_rate=zero, stress_resp_rate=zero)
    x = vitals_baseline(p, 0.0)
    x[:, S.STRESS] = 1.0
    end = _run(x, p, 5.0, 24)[-1, 0] - vitals_baseline(p, 120.0)[0]
    desaturation = float(oxygen_saturation(95.0) - oxygen_saturation(95.0 - 35.0))
    assert 5.0 < desaturation < 9.0
    assert end[S.PAO2] == pytest.approx(-35.0, abs=0.01)
    assert end[S.RESP_RATE] == pytest.approx(0.5 * desaturation, abs=0.05)
    assert end[S.HEART_RATE] == pytest.approx(1.0 * desaturation, abs=0.1)


def test_deterioration_looks_like_sepsis_and_oxygen_helps() -> None:
    p = default_vitals_params(2)
    x = vitals_baseline(p, 0.0)
    x[:, S.STRESS] = 1.0
    u = _inputs(2)
    u[1, VitalsInput.FIO2] = 0.19  # 40 % oxygen
    end = _run(x, p, 10.0, 36, u=u)[-1]   # 6 h later
    base = vitals_observation(vitals_baseline(p, 360.0), p)[0]
    hr, spo2, rr, sbp, dbp, temp = vitals_observation(end, p).T
    assert end[0, S.STRESS] == pytest.approx(np.exp(-1.0), rel=1e-9)  # tau 6 h
    assert hr[0] > base[0] + 15 and rr[0] > base[2] + 4 and temp[0] > base[5] + 0.5
    assert sbp[0] < base[3] - 10 and dbp[0] < base[4] - 5 and spo2[0] < base[1] - 1.0
    assert spo2[1] > 99.0 and hr[1] < hr[0] and rr[1] < rr[0]   # oxygen relieves hypoxaemia


def test_uncoupled_relaxation_is_exact_over_irregular_steps() -> None:
    p = default_vitals_params(1)
    x0 = vitals_baseline(p, 300.0)
    dev = np.zeros_like(x0)
    dev[:, [S.HEART_RATE, S.RESP_RATE, S.MAP, S.PULSE_PRESSURE]] = [20.0, 6.0, -15.0, 8.0]
    x0 = x0 + dev
    one = vitals_dynamics(x0, None, p, 17.0, 300.0)
    two = vitals_dynamics(vitals_dynamics(x0, None, p, 6.5, 300.0), None, p, 10.5, 306.5)
    np.testing.assert_allclose(one, two, atol=1e-10)
    tau = np.array([5.0, 5.0, 10.0, 10.0, 10.0, 60.0, 360.0])
    expected = vitals_baseline(p, 317.0) + dev * np.exp(-17.0 / tau)
    np.testing.assert_allclose(one, expected, atol=1e-10)


def test_coupled_steps_are_consistent_across_step_lengths() -> None:
    p = default_vitals_params(1)
    x0 = vitals_baseline(p, 0.0)
    x0[:, S.STRESS] = 0.8
    x0[:, S.TEMPERATURE] += 1.0
    one = vitals_dynamics(x0, None, p, 13.0, 0.0)
    two = vitals_dynamics(vitals_dynamics(x0, None, p, 6.5, 0.0), None, p, 6.5, 6.5)
    np.testing.assert_allclose(one, two, atol=0.02)
    assert np.all(np.abs(one - x0)[0, :2] > 1.0)   # HR and RR moved


def test_zero_step_changes_nothing() -> None:
    p = default_vitals_params(2)
    x = vitals_baseline(p, 50.0) + np.array([5.0, 1.0, -10.0, 3.0, 2.0, 0.5, 0.3])
    np.testing.assert_allclose(vitals_dynamics(x, None, p, 0.0, 50.0), x, atol=1e-12)


def test_patients_are_independent_of_the_batch() -> None:
    rng = np.random.default_rng(0)
    n = 5
    p = default_vitals_params(n)._replace(heart_rate=rng.uniform(55, 95, n),
                                          temperature_time=rng.uniform(30, 90, n))
    x = vitals_baseline(p, 0.0) + rng.normal(0, 1, (n, N_VITALS_STATES)) * [
        10, 3, 20, 10, 5, 0.8, 0.5]
    u = rng.uniform(0, 0.5, (n, N_VITALS_INPUTS))
    dt = np.array([1.0, 5.0, 12.0, 60.0, 0.0])
    tod = rng.uniform(0, 1440, n)
    batch = vitals_dynamics(x, u, p, dt, tod)
    for i in range(n):
        alone = vitals_dynamics(x[i:i + 1], u[i:i + 1],
                                VitalsModelParams(*(f[i:i + 1] for f in p)), dt[i], tod[i])
        np.testing.assert_allclose(batch[i:i + 1], alone, rtol=0, atol=1e-9)
    sigma = np.stack([x, x + 1.0, x - 1.0], axis=1)   # (n, 3, d)
    moved = vitals_dynamics(sigma, u, p, dt, tod)
    for j in range(3):
        np.testing.assert_allclose(moved[:, j], vitals_dynamics(sigma[:, j], u, p, dt, tod),
                                   rtol=0, atol=1e-9)


def test_pure() -> None:
    p = default_vitals_params(2)
    x = vitals_baseline(p, 0.0)
    u = _inputs(2, fever=1.0)
    copies = (x.copy(), u.copy(), [f.copy() for f in p])
    vitals_dynamics(x, u, p, 30.0, 0.0)
    np.testing.assert_array_equal(x, copies[0])
    np.testing.assert_array_equal(u, copies[1])
    for f, c in zip(p, copies[2], strict=True):
        np.testing.assert_array_equal(f, c)


@settings(max_examples=60)
@given(
    deviation=st.lists(st.floats(-1e4, 1e4), min_size=N_VITALS_STATES,
                       max_size=N_VITALS_STATES),
    fever=st.floats(-20.0, 20.0),
    fio2=st.floats(-1.0, 2.0),
    dt=st.floats(0.0, 6 * 60.0),
    tod=st.floats(-1e4, 1e4),
)
def test_bounds_hold_under_extreme_inputs(deviation: list[float], fever: float, fio2: float,
                                          dt: float, tod: float) -> None:
    p = default_vitals_params(1)
    x = vitals_baseline(p, tod) + np.array(deviation)
    out = vitals_dynamics(x, _inputs(1, fever, fio2), p, dt, tod)
    assert np.all(np.isfinite(out))
    assert np.all(out >= VITALS_STATE_MIN) and np.all(out <= VITALS_STATE_MAX)
    y = vitals_observation(out, p)
    lo = np.array([c.spec.possible_min for c in VITALS_OBSERVED_CHANNELS])
    hi = np.array([c.spec.possible_max for c in VITALS_OBSERVED_CHANNELS])
    assert np.all(y >= lo) and np.all(y <= hi)


def test_saturation_curve() -> None:
    assert float(oxygen_saturation(26.8)) == pytest.approx(50.0, abs=0.5)   # P50
    assert float(oxygen_saturation(95.0)) == pytest.approx(97.4, abs=0.1)
    assert float(oxygen_saturation(60.0)) == pytest.approx(90.6, abs=0.2)
    pao2 = np.array([20.0, 40.0, 60.0, 95.0, 150.0, 400.0])
    np.testing.assert_allclose(pao2_for_saturation(oxygen_saturation(pao2)), pao2, rtol=1e-6)


def test_observation_splits_pressure_into_systolic_and_diastolic() -> None:
    p = default_vitals_params(1)
    x = vitals_baseline(p, 0.0)
    x[0, S.MAP], x[0, S.PULSE_PRESSURE] = 90.0, 45.0
    hr, _, _, sbp, dbp, _ = vitals_observation(x, p)[0]
    assert (sbp, dbp) == (pytest.approx(120.0), pytest.approx(75.0))
    assert hr == x[0, S.HEART_RATE]


def test_invalid_arguments_are_refused() -> None:
    p = default_vitals_params(1)
    x = vitals_baseline(p, 0.0)
    with pytest.raises(ValueError, match="dt_min"):
        vitals_dynamics(x, None, p, -1.0, 0.0)
    with pytest.raises(ValueError, match="time_of_day_min"):
        vitals_dynamics(x, None, p, 1.0, np.nan)
    with pytest.raises(ValueError, match=r"params fields must have shape \(3,\)"):
        broadcast_vitals_params(default_vitals_params(2), 3)
    assert broadcast_vitals_params(default_vitals_params(1), 3).heart_rate.shape == (3,)
