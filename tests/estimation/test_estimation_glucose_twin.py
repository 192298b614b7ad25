"""The glucose twin: tracks model-simulated patients honestly, handles gaps, batches exactly,
forecasts better than persistence, and is measured against simglucose (UVA/Padova)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
from tests.conftest import score_glucose_twin, simglucose_history

from medtwin.estimation import (
    N_GLUCOSE_TWIN_STATES,
    GlucoseFilterState,
    GlucoseNoise,
    GlucoseTwinState,
    glucose_filter_init,
    glucose_filter_step,
    glucose_forecast,
)
from medtwin.physiology import (
    GLUCOSE_STATE_MAX,
    GLUCOSE_STATE_MIN,
    N_GLUCOSE_STATES,
    GlucoseParams,
    GlucoseState,
    default_glucose_params,
    glucose_dynamics,
    steady_state,
)

NOISE = GlucoseNoise()
DT = 3.0
G = GlucoseState.G


def _params(n: int, seed: int) -> GlucoseParams:
    """Default parameters with per-patient insulin sensitivity and basal glucose."""
    rng = np.random.default_rng(seed)
    p = default_glucose_params(n)
    return p._replace(insulin_sensitivity=p.insulin_sensitivity * rng.uniform(0.7, 1.3, n),
                      basal_glucose=rng.uniform(100.0, 140.0, n))


class Truth(NamedTuple):
    """A model-simulated cohort: states (T+1, n, d), inputs (T, n) given at step starts, and
    CGM (T, n) read at step ends."""

    x: np.ndarray
    carbs: np.ndarray
    insulin: np.ndarray
    cgm: np.ndarray


def _simulate(p: GlucoseParams, steps: int, seed: int, meal_at: int | None = None) -> Truth:
    """The model itself with the filter's process noise, meals with boluses, noisy CGM;
    `meal_at`: every patient also eats 60 g without a bolus at that step."""
    rng = np.random.default_rng(seed)
    n = p.basal_glucose.shape[0]
    carbs = np.zeros((steps, n))
    for start in range(20, steps, 100):  # a meal every 5 h, jittered by up to 1 h
        at = np.minimum(start + rng.integers(0, 20, n), steps - 1)
        carbs[at, np.arange(n)] = rng.uniform(30.0, 80.0, n)
    insulin = carbs / rng.uniform(10.0, 16.0, n)
    if meal_at is not None:
        carbs[meal_at], insulin[meal_at] = 60.0, 0.0
    q = np.sqrt(DT) * np.asarray(NOISE.process_std)
    x = np.empty((steps + 1, n, 8))
    x[0] = steady_state(p)
    for k in range(steps):
        u = np.stack([carbs[k], insulin[k]], axis=-1)
        nxt = glucose_dynamics(x[k], u, p, DT) + q * rng.standard_normal((n, 8))
        x[k + 1] = np.clip(nxt, GLUCOSE_STATE_MIN, GLUCOSE_STATE_MAX)
    cgm = x[1:, :, GlucoseState.GI] + NOISE.cgm_std * rng.standard_normal((steps, n))
    return Truth(x, carbs, insulin, cgm)


def _run(p: GlucoseParams, truth: Truth, observed: np.ndarray,
         carbs: np.ndarray | None = None) -> list[GlucoseFilterState]:
    """Filter states after each step (T of them)."""
    n = p.basal_glucose.shape[0]
    carbs = truth.carbs if carbs is None else carbs
    state = glucose_filter_init(p, n)
    out = []
    for k in range(truth.cgm.shape[0]):
        step = glucose_filter_step(p, NOISE, state, np.full(n, DT), carbs[k], truth.insulin[k],
                                   truth.cgm[k], observed[k])
        state = step.state
        out.append(state)
    return out


@pytest.fixture(scope="module")
def cohort() -> tuple[GlucoseParams, Truth, list[GlucoseFilterState]]:
    p = _params(16, seed=1)
    truth = _simulate(p, 240, seed=2)   # 12 h
    return p, truth, _run(p, truth, np.ones(truth.cgm.shape, dtype=bool))


def test_tracks_model_data_with_honest_uncertainty(
        cohort: tuple[GlucoseParams, Truth, list[GlucoseFilterState]]) -> None:
    _, truth, states = cohort
    burn = 20
    est = np.array([s.mean[:, G] for s in states])[burn:]
    sd = np.sqrt(np.array([s.cov[:, G, G] for s in states]))[burn:]
    true_g = truth.x[1:, :, G][burn:]
    rmse = float(np.sqrt(np.mean((est - true_g) ** 2)))
    cgm_rmse = float(np.sqrt(np.mean((truth.cgm[burn:] - true_g) ** 2)))
    inside = float(np.mean(np.abs(est - true_g) <= 2.0 * sd))
    print(f"\nmodel data: filter RMSE {rmse:.1f} mg/dL (CGM {cgm_rmse:.1f}); "
          f"inside ±2σ {inside:.2f}")
    assert rmse < NOISE.cgm_std
    assert 0.85 <= inside <= 1.0


def test_step_reports_innovations_and_keeps_bounds() -> None:
    p = default_glucose_params(3)
    state = glucose_filter_init(p, 3)
    step = glucose_filter_step(p, NOISE, state, np.full(3, DT), np.zeros(3), np.zeros(3),
                               np.array([130.0, np.nan, -500.0]), np.array([True, True, True]))
    assert 0.0 < step.innovation[0] <= 10.0     # 130 read, about basal 120 predicted
    assert step.innovation_var[0] > NOISE.cgm_std**2
    assert step.loglik[0] < 0.0
    assert np.isnan(step.innovation[1]) and np.isnan(step.innovation_var[1])
    assert step.loglik[1] == 0.0
    predicted = glucose_filter_step(p, NOISE, state, np.full(3, DT), np.zeros(3), np.zeros(3),
                                    np.full(3, 130.0), np.zeros(3, dtype=bool))
    np.testing.assert_array_equal(step.state.mean[1], predicted.state.mean[1])
    assert predicted.state.cov[0, G, G] > step.state.cov[0, G, G]   # a reading informs
    assert step.state.mean[2, G] >= GLUCOSE_STATE_MIN[G]
    assert step.state.mean.shape == (3, N_GLUCOSE_TWIN_STATES)
    assert np.all(step.state.mean[:, :N_GLUCOSE_STATES] >= GLUCOSE_STATE_MIN)
    assert np.all(np.linalg.eigvalsh(step.state.cov) > 0)


def test_gap_widens_uncertainty_and_a_reading_pulls_back() -> None:
    p = _params(4, seed=3)
    truth = _simulate(p, 140, seed=4, meal_at=100)
    observed = np.ones(truth.cgm.shape, dtype=bool)
    gap = slice(100, 120)                  # one hour without CGM, starting with a meal
    observed[gap] = False
    states = _run(p, truth, observed)      # the twin is told of the meal
    sd = np.sqrt(np.array([s.cov[:, G, G] for s in states]))
    est = np.array([s.mean[:, G] for s in states])
    true_g = truth.x[1:, :, G]
    assert np.all(np.diff(sd[gap], axis=0) > 0)                 # uncertainty grows ...
    assert np.all(sd[119] > 1.5 * sd[99])
    assert np.all(est[112] - est[99] > 30.0)                    # ... the meal is predicted
    assert np.all(np.abs(est[119] - true_g[119]) < 3.0 * sd[119])
    # Now an unannounced meal during a second gap: the readings after it pull the twin back.
    observed2 = np.ones(truth.cgm.shape, dtype=bool)
    observed2[gap] = False
    untold = truth.carbs.copy()
    untold[100] = 0.0
    states2 = _run(p, truth, observed2, untold)
    err_before = np.abs(states2[119].mean[:, G] - true_g[119])
    err_after = np.abs(states2[129].mean[:, G] - true_g[129])
    first = np.abs(states2[120].mean[:, G] - true_g[120])
    assert np.all(err_before > 20.0)
    assert np.all(first < err_before)
    assert np.all(err_after < 0.5 * err_before)
    assert np.all(states2[120].cov[:, G, G] < states2[119].cov[:, G, G])


def test_batch_equals_each_patient_alone() -> None:
    p = _params(4, seed=5)
    truth = _simulate(p, 40, seed=6)
    rng = np.random.default_rng(7)
    observed = rng.random(truth.cgm.shape) < 0.7
    dt = rng.uniform(1.0, 6.0, truth.cgm.shape)
    def run(idx: list[int]) -> tuple[np.ndarray, ...]:
        sub = GlucoseParams(*(f[idx] for f in p))
        state = glucose_filter_init(sub, len(idx))
        innov = []
        for k in range(truth.cgm.shape[0]):
            step = glucose_filter_step(sub, NOISE, state, dt[k, idx], truth.carbs[k, idx],
                                       truth.insulin[k, idx], truth.cgm[k, idx],
                                       observed[k, idx])
            state = step.state
            innov.append(np.stack([step.innovation, step.innovation_var, step.loglik]))
        fc = glucose_forecast(sub, state, (30, 60), np.full(len(idx), 20.0))
        return (state.mean, state.cov, np.array(innov).transpose(2, 0, 1), *fc)

    together = run([0, 1, 2, 3])
    for i in range(4):
        alone = run([i])
        for a, b in zip(together, alone, strict=True):
            np.testing.assert_allclose(a[[i]], b, rtol=1e-9, atol=1e-12)


def test_forecast_beats_persistence_on_model_data(
        cohort: tuple[GlucoseParams, Truth, list[GlucoseFilterState]]) -> None:
    p, truth, states = cohort
    n = p.basal_glucose.shape[0]
    burn, ahead = 20, 10                    # 30 min = 10 steps
    ks = np.arange(burn, truth.cgm.shape[0] - ahead)
    mean = np.concatenate([states[k].mean for k in ks])
    cov = np.concatenate([states[k].cov for k in ks])
    pk = GlucoseParams(*(np.tile(f, ks.size) for f in p))
    # The inputs reported with reading k are given at the start of step k + 1.
    nxt_c = np.concatenate([truth.carbs[k + 1] for k in ks])
    nxt_i = np.concatenate([truth.insulin[k + 1] for k in ks])
    fc, lo, hi = glucose_forecast(pk, GlucoseFilterState(mean, cov), (30.0,), nxt_c, nxt_i)
    target = np.concatenate([truth.x[k + 1 + ahead, :, G] for k in ks])
    persistence = np.concatenate([truth.cgm[k] for k in ks])
    rmse = float(np.sqrt(np.mean((fc[:, 0] - target) ** 2)))
    rmse_p = float(np.sqrt(np.mean((persistence - target) ** 2)))
    inside = float(np.mean((lo[:, 0] <= target) & (target <= hi[:, 0])))
    print(f"\nmodel data, 30 min: twin RMSE {rmse:.1f}, persistence {rmse_p:.1f}, "
          f"inside 95% {inside:.2f} (n={n}×{ks.size})")
    assert rmse < rmse_p
    assert 0.85 <= inside <= 1.0
    assert np.all(lo <= fc) and np.all(fc <= hi)


def test_forecast_horizons_in_any_order() -> None:
    p = default_glucose_params(2)
    prior = glucose_filter_init(p, 2)
    state = prior._replace(cov=0.01 * prior.cov)     # a well-settled twin
    a = glucose_forecast(p, state, (60.0, 0.0, 30.0), np.array([50.0, 0.0]))
    b = glucose_forecast(p, state, (0.0, 30.0, 60.0), np.array([50.0, 0.0]))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y[:, [2, 0, 1]])
    mean = a[0]
    assert mean[0, 2] > mean[0, 1] + 20.0          # the meal raises glucose within 30 min
    assert np.all(np.diff(b[2] - b[1], axis=1) > 0)  # the band widens with the horizon
    with pytest.raises(ValueError):
        glucose_forecast(p, state, (-5.0,))


def test_the_interstitial_forecast_lags_the_plasma_one() -> None:
    p = default_glucose_params(1)
    prior = glucose_filter_init(p, 1)
    state = prior._replace(cov=0.01 * prior.cov)
    state.mean[0, GlucoseState.GI] = 100.0             # the sensor still behind plasma
    plasma = glucose_forecast(p, state, (0.0, 30.0), np.array([60.0]))[0][0]
    inter = glucose_forecast(p, state, (0.0, 30.0), np.array([60.0]), interstitial=True)[0][0]
    assert inter[0] == pytest.approx(100.0) and plasma[0] == pytest.approx(
        state.mean[0, GlucoseState.G])
    assert inter[1] < plasma[1]                        # a meal shows later under the skin
    assert inter[1] > inter[0]


def test_simglucose_adult_24h() -> None:
    """UVA/Padova adult#001 for 24 h, default parameters: report, assert loosely."""
    pytest.importorskip("simglucose")
    cgm, carbs, insulin, bg = simglucose_history(1)
    # The sim reports basal and bolus doses; the model infuses its own basal already.
    rmse, cgm_rmse, f_rmse, p_rmse = score_glucose_twin(default_glucose_params(1), cgm, carbs,
                                                        insulin, bg, DT)
    print(f"\nsimglucose adult#001 24 h, default params: filter RMSE vs BG {rmse:.1f} "
          f"(raw CGM {cgm_rmse:.1f}); 30-min forecast RMSE {f_rmse:.1f} "
          f"(persistence {p_rmse:.1f})")
    assert np.isfinite(rmse) and rmse < 40.0
    # With default (unpersonalized) parameters the twin's forecast does NOT beat
    # persistence on this patient (model mismatch: 102 kg, basal 1.27 U/h vs the model's
    # 70 kg, 0.70 U/h); only that it stays finite and bounded is asserted here.
    assert np.isfinite(f_rmse) and f_rmse < 100.0


def test_disturbance_learns_an_unexplained_trend() -> None:
    """Glucose pushed up (down) by 0.8 mg/dL/min for an hour by something no input explains:
    the twin's disturbance state takes the push's sign (sharing it with the CGM drift, insulin
    action and plasma glucose's own random walk), and its forecast errs less than a twin
    without the disturbance state."""
    p = default_glucose_params(2)
    push = np.array([0.8, -0.8])
    tau_s = p.sensor_delay
    errors, learnt = [], []
    for noise in (NOISE, NOISE._replace(disturbance_std=1e-6)):
        x = steady_state(p)
        state = glucose_filter_init(p, 2, noise)
        for _ in range(20):
            x = glucose_dynamics(x, np.zeros((2, 2)), p, DT)
            x[:, G] += push * DT
            x[:, GlucoseState.GI] += push * (DT + tau_s * np.expm1(-DT / tau_s))
            state = glucose_filter_step(p, noise, state, np.full(2, DT), np.zeros(2),
                                        np.zeros(2), x[:, GlucoseState.GI],
                                        np.ones(2, dtype=bool)).state
        for _ in range(10):
            x = glucose_dynamics(x, np.zeros((2, 2)), p, DT)
            x[:, G] += push * DT
        errors.append(glucose_forecast(p, state, (30.0,), noise=noise)[0][:, 0] - x[:, G])
        learnt.append(state.mean[:, GlucoseTwinState.D])
    print(f"\ndisturbance learnt {np.round(learnt[0], 2)} (true {push}); 30-min forecast "
          f"error {np.round(errors[0], 1)}, without the state {np.round(errors[1], 1)}")
    assert np.all(np.sign(learnt[0]) == np.sign(push))
    assert np.all(np.abs(learnt[0]) > 0.2 * np.abs(push))
    assert np.all(np.abs(errors[0]) < np.abs(errors[1]) - 3.0)


def test_a_model_only_state_is_augmented() -> None:
    """A state of the model's 8 states (saved before the twin had its own) still filters and
    forecasts, as the twin's state with D = V = 0 at their stationary spread."""
    p = default_glucose_params(2)
    full = glucose_filter_init(p, 2)
    old = GlucoseFilterState(full.mean[:, :N_GLUCOSE_STATES],
                             full.cov[:, :N_GLUCOSE_STATES, :N_GLUCOSE_STATES])
    args = (np.full(2, DT), np.zeros(2), np.zeros(2), np.full(2, 130.0), np.ones(2, bool))
    a = glucose_filter_step(p, NOISE, old, *args).state
    b = glucose_filter_step(p, NOISE, full, *args).state
    np.testing.assert_allclose(a.mean, b.mean)
    np.testing.assert_allclose(a.cov, b.cov)
    for x, y in zip(glucose_forecast(p, old), glucose_forecast(p, full), strict=True):
        np.testing.assert_allclose(x, y)
