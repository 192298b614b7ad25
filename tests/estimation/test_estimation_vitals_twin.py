"""The vitals twin: tracks model-simulated patients better than the raw readings with honest
innovations, handles masked channels and gaps, batches exactly, forecasts with a band, and
sees `medtwin.sim`'s sepsis-like deterioration in its latent stress."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest

from medtwin.estimation import (
    N_VITALS_CHANNELS,
    VitalsFilterState,
    VitalsFilterStep,
    VitalsNoise,
    vitals_filter_init,
    vitals_filter_step,
    vitals_forecast,
)
from medtwin.physiology import (
    N_VITALS_STATES,
    VITALS_OBSERVED_CHANNELS,
    VITALS_STATE_MAX,
    VITALS_STATE_MIN,
    VitalsModelParams,
    VitalsModelState,
    default_vitals_params,
    pao2_for_saturation,
    vitals_baseline,
    vitals_dynamics,
    vitals_observation,
)
from medtwin.sim import VitalsParams, vitals_init, vitals_step

NOISE = VitalsNoise()
DT = 5.0
SPO2, SBP, DBP = 1, 3, 4
TAU = np.array([5.0, 5.0, 10.0, 10.0, 10.0, 60.0, 360.0])


def _params(n: int, seed: int) -> VitalsModelParams:
    rng = np.random.default_rng(seed)
    p = default_vitals_params(n)
    return p._replace(heart_rate=rng.uniform(60.0, 85.0, n), resp_rate=rng.uniform(13.0, 19.0, n),
                      mean_arterial_pressure=rng.uniform(82.0, 100.0, n))


class Truth(NamedTuple):
    """Model-simulated states (T+1, n, d) and noisy readings (T, n, m) at the step ends."""

    x: np.ndarray
    y: np.ndarray


def _simulate(p: VitalsModelParams, steps: int, seed: int) -> Truth:
    """The model with the twin's own (exact OU) process noise and measurement noise."""
    rng = np.random.default_rng(seed)
    n = p.heart_rate.shape[0]
    sd = np.asarray(NOISE.stationary_std) * np.sqrt(-np.expm1(-2.0 * DT / TAU))
    x = np.empty((steps + 1, n, N_VITALS_STATES))
    x[0] = vitals_baseline(p, 0.0)
    for k in range(steps):
        nxt = vitals_dynamics(x[k], None, p, DT, k * DT) + sd * rng.standard_normal(x[k].shape)
        x[k + 1] = np.clip(nxt, VITALS_STATE_MIN, VITALS_STATE_MAX)
    y = vitals_observation(x[1:], p)
    y = y + np.asarray(NOISE.measurement_std) * rng.standard_normal(y.shape)
    return Truth(x, y)


def _run(p: VitalsModelParams, y: np.ndarray, observed: np.ndarray) -> list[VitalsFilterStep]:
    n = p.heart_rate.shape[0]
    state = vitals_filter_init(p, n, 0.0)
    out = []
    for k in range(y.shape[0]):
        step = vitals_filter_step(p, NOISE, state, DT, (k + 1) * DT, y[k], observed[k])
        state = step.state
        out.append(step)
    return out


def _ward_mask(steps: int, n: int) -> np.ndarray:
    """BP every 30 min; SpO2 probe off for 5 h (steps 100–160) in the first half."""
    observed = np.ones((steps, n, N_VITALS_CHANNELS), dtype=bool)
    observed[:, :, [SBP, DBP]] = False
    observed[5::6, :, SBP] = observed[5::6, :, DBP] = True
    observed[100:160, : n // 2, SPO2] = False
    return observed


@pytest.fixture(scope="module")
def ward() -> tuple[VitalsModelParams, Truth, np.ndarray, list[VitalsFilterStep]]:
    p = _params(16, seed=1)
    truth = _simulate(p, 288, seed=2)   # 24 h of 5-min steps
    observed = _ward_mask(288, 16)
    return p, truth, observed, _run(p, truth.y, observed)


def test_tracks_model_data_better_than_the_readings(
        ward: tuple[VitalsModelParams, Truth, np.ndarray, list[VitalsFilterStep]]) -> None:
    p, truth, observed, steps = ward
    burn = 20
    true_y = vitals_observation(truth.x[1:], p)[burn:]
    est = vitals_observation(np.array([s.state.mean for s in steps]), p)[burn:]
    seen = observed[burn:]
    err = est - true_y
    raw = truth.y[burn:] - true_y
    rmse = np.sqrt(np.mean(err**2, axis=(0, 1)))
    raw_rmse = np.sqrt(np.array([np.mean(raw[..., c][seen[..., c]] ** 2) for c in range(6)]))
    at_reading = np.sqrt(np.array([np.mean(err[..., c][seen[..., c]] ** 2) for c in range(6)]))
    print("\nfilter RMSE", np.round(rmse, 2), "at readings", np.round(at_reading, 2),
          "raw", np.round(raw_rmse, 2))
    for c in (0, 1, 2, 5):   # HR, SpO2, RR, temperature: read every step (SpO2 mostly)
        assert rmse[c] < 0.85 * raw_rmse[c]
    for c in (SBP, DBP):     # BP read every 30 min: better than the cuff where it reads
        assert at_reading[c] < raw_rmse[c]


def test_innovations_are_standardized(
        ward: tuple[VitalsModelParams, Truth, np.ndarray, list[VitalsFilterStep]]) -> None:
    _, _, observed, steps = ward
    inn = np.array([s.innovation for s in steps])[20:]
    var = np.array([s.innovation_var for s in steps])[20:]
    z = inn / np.sqrt(var)
    seen = observed[20:]
    assert np.array_equal(np.isfinite(z), seen)
    for c in range(N_VITALS_CHANNELS):
        zc = z[..., c][seen[..., c]]
        assert abs(float(zc.mean())) < 0.1
        assert 0.85 < float(zc.var()) < 1.15


def test_masked_channels_report_nan_and_grow_uncertainty(
        ward: tuple[VitalsModelParams, Truth, np.ndarray, list[VitalsFilterStep]]) -> None:
    p, truth, observed, steps = ward
    inn = np.array([s.innovation for s in steps])
    var = np.array([s.innovation_var for s in steps])
    assert np.all(np.isnan(inn[~observed])) and np.all(np.isnan(var[~observed]))
    assert np.all(np.isfinite(inn[observed]))
    k = 130                                  # 30 min into the SpO2 dropout of patients 0-7
    _, lo, hi = vitals_forecast(p, steps[k].state, (k + 1) * DT, (0.0,))
    band = (hi - lo)[:, 0, SPO2]
    assert band[:8].mean() > 1.5 * band[8:].mean()   # without the probe, SpO2 is less certain
    pao2 = VitalsModelState.PAO2
    dropout = np.sqrt(np.array([s.state.cov[:8, pao2, pao2] for s in steps[100:160]]))
    est = np.array([s.state.mean[:, pao2] for s in steps])
    gap_err = np.abs(est[100:160, :8] - truth.x[101:161, :8, pao2])
    assert float(np.mean(gap_err <= 2.0 * dropout)) > 0.85   # still inside its own band
    # between cuff readings the BP estimate's variance grows, and a reading shrinks it
    map_var = np.array([s.state.cov[:, 3, 3] for s in steps])
    assert np.all(map_var[10] > map_var[11]) and np.all(map_var[11] < map_var[12])


def test_gap_widens_uncertainty_but_keeps_it_bounded() -> None:
    p = default_vitals_params(2)
    state = vitals_filter_init(p, 2, 0.0)
    y = vitals_observation(vitals_baseline(p, 0.0), p)
    for k in range(12):
        state = vitals_filter_step(p, NOISE, state, DT, (k + 1) * DT, y,
                                   np.ones((2, 6), dtype=bool)).state
    before = np.diagonal(state.cov, axis1=1, axis2=2)
    long = vitals_filter_step(p, NOISE, state, np.array([60.0, 24 * 60.0]), 60.0 + 60.0,
                              y, np.zeros((2, 6), dtype=bool))
    after = np.diagonal(long.state.cov, axis1=1, axis2=2)
    assert np.all(after > before)
    prior = np.diagonal(vitals_filter_init(p, 2).cov, axis1=1, axis2=2)
    assert np.all(after[1] < prior[1])            # a day alone: about the stationary spread
    assert np.all(long.loglik == 0.0)
    assert np.all(np.isnan(long.innovation)) and np.all(np.isnan(long.innovation_var))


def test_step_handles_partial_and_bad_readings() -> None:
    p = default_vitals_params(3)
    state = vitals_filter_init(p, 3, 0.0)
    y = vitals_observation(vitals_baseline(p, DT), p)
    y[0, 0] += 10.0             # a heart rate 10 above the prediction
    y[1, :] = np.nan            # nothing finite: a pure prediction
    y[2, 1] = np.inf
    observed = np.ones((3, 6), dtype=bool)
    observed[2, 2:] = False     # patient 2: HR only (and an infinite SpO2)
    step = vitals_filter_step(p, NOISE, state, DT, DT, y, observed)
    assert 0.0 < step.innovation[0, 0] <= 10.0
    assert step.innovation_var[0, 0] > NOISE.measurement_std[0] ** 2
    assert step.loglik[0] < 0.0 and step.loglik[1] == 0.0 and step.loglik[2] != 0.0
    assert np.all(np.isnan(step.innovation[1])) and np.all(np.isnan(step.innovation[2, 1:]))
    assert np.isfinite(step.innovation[2, 0])
    assert step.state.mean[0, 0] > state.mean[0, 0]
    assert np.all(step.state.mean >= VITALS_STATE_MIN)
    assert np.all(np.linalg.eigvalsh(step.state.cov) > 0)
    with pytest.raises(ValueError, match=r"measured and observed must have shape \(3, 6\)"):
        vitals_filter_step(p, NOISE, state, DT, DT, y[:, :5], observed[:, :5])
    with pytest.raises(ValueError, match="measurement_std must have shape"):
        vitals_filter_step(p, NOISE._replace(measurement_std=(1.0, 2.0)), state, DT, DT, y,
                           observed)


def test_patients_are_independent_of_the_batch() -> None:
    p = _params(4, seed=5)
    truth = _simulate(p, 24, seed=6)
    observed = np.random.default_rng(7).random(truth.y.shape) < 0.6
    batch = _run(p, truth.y, observed)
    for i in (0, 3):
        alone = _run(VitalsModelParams(*(f[i:i + 1] for f in p)), truth.y[:, i:i + 1],
                     observed[:, i:i + 1])
        np.testing.assert_allclose(batch[-1].state.mean[i], alone[-1].state.mean[0], atol=1e-8)
        np.testing.assert_allclose(batch[-1].state.cov[i], alone[-1].state.cov[0], atol=1e-8)
        np.testing.assert_allclose(batch[-1].loglik[i], alone[-1].loglik[0], atol=1e-8)


def test_forecast_has_a_widening_honest_band(
        ward: tuple[VitalsModelParams, Truth, np.ndarray, list[VitalsFilterStep]]) -> None:
    p, truth, _, steps = ward
    k = 200                                  # after step k, at 16:45
    state: VitalsFilterState = steps[k].state
    mean, lo, hi = vitals_forecast(p, state, (k + 1) * DT, (60.0, 0.0, 30.0))
    assert mean.shape == lo.shape == hi.shape == (16, 3, 6)
    assert np.all(lo <= mean) and np.all(mean <= hi)
    width = np.delete(hi - lo, SPO2, axis=-1)   # (SpO2's band is cut at 100 %)
    assert np.all(width[:, 0] > width[:, 2]) and np.all(width[:, 2] > width[:, 1])
    np.testing.assert_allclose(mean[:, 1, 0], state.mean[:, 0], atol=0.5)
    true_30 = vitals_observation(truth.x[k + 1 + 6], p)
    inside = np.mean((lo[:, 2] <= true_30) & (true_30 <= hi[:, 2]))
    assert inside > 0.8
    with pytest.raises(ValueError, match="horizons_min"):
        vitals_forecast(p, state, 0.0, (-5.0,))


def test_latent_stress_sees_the_simulators_deterioration() -> None:
    """`medtwin.sim`'s vitals (a different generator) with a deterioration from 06:00 in
    half the patients: the twin's stress rises towards 1 there and stays near 0 elsewhere."""
    rng = np.random.default_rng(11)
    n = 6
    onset = np.where(np.arange(n) < 3, 6 * 3_600_000.0, np.inf)
    sp = VitalsParams.sample(n, rng, onset)
    sim_state = vitals_init(sp, 0, rng)
    p = default_vitals_params(n)._replace(
        heart_rate=sp.heart_rate, resp_rate=sp.resp_rate, pao2=pao2_for_saturation(sp.spo2),
        mean_arterial_pressure=(sp.systolic_bp + 2.0 * sp.diastolic_bp) / 3.0,
        pulse_pressure=sp.systolic_bp - sp.diastolic_bp, temperature=sp.temperature)
    state = vitals_filter_init(p, n, 0.0)
    stress = []
    for _ in range(12 * 10):                 # 10 h of 5-min readings
        sim_state, signs = vitals_step(sp, sim_state, DT * 60.0, rng)
        channels = signs.by_channel()
        y = np.stack([channels[c] for c in VITALS_OBSERVED_CHANNELS], axis=-1)
        state = vitals_filter_step(p, NOISE, state, DT, signs.time_ms / 60_000.0, y,
                                   np.ones((n, 6), dtype=bool)).state
        stress.append(state.mean[:, VitalsModelState.STRESS])
    s = np.array(stress)
    assert np.all(np.abs(s[12:60]) < 0.3)            # 01:00–05:00: all well
    assert np.all(s[-12:, :3] > 0.6)                 # septic at full severity
    assert np.all(np.abs(s[-12:, 3:]) < 0.3)
