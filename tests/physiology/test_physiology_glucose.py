"""Glucose–insulin model: fixed point, meal and insulin responses, dt invariance, batching,
purity, bounds, and plausibility against the UVA/Padova simulator (simglucose)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from medtwin.domain import Channel
from medtwin.physiology import (
    GLUCOSE_STATE_MAX,
    GLUCOSE_STATE_MIN,
    N_GLUCOSE_INPUTS,
    N_GLUCOSE_STATES,
    GlucoseInput,
    GlucoseParams,
    GlucoseState,
    basal_infusion_rate,
    default_glucose_params,
    glucose_dynamics,
    glucose_observation,
    steady_state,
)

G = GlucoseState.G


def _inputs(n: int, carbs: float = 0.0, insulin: float = 0.0) -> np.ndarray:
    u = np.zeros((n, N_GLUCOSE_INPUTS))
    u[:, GlucoseInput.CARBS] = carbs
    u[:, GlucoseInput.INSULIN] = insulin
    return u


def _run(
    x: np.ndarray, first_u: np.ndarray, params: GlucoseParams, dt: float, steps: int
) -> np.ndarray:
    """Trajectory (steps + 1, *x.shape): inputs at the first step only."""
    out = [x]
    zero = np.zeros_like(first_u)
    for k in range(steps):
        x = glucose_dynamics(x, first_u if k == 0 else zero, params, dt)
        out.append(x)
    return np.array(out)


def _varied_params(n: int) -> GlucoseParams:
    """Defaults scaled per patient, deterministically, by 0.6–1.4."""
    rng = np.random.default_rng(7)
    p = default_glucose_params(n)
    return GlucoseParams(*(f * rng.uniform(0.6, 1.4, n) for f in p))


def _patient(p: GlucoseParams, k: int) -> GlucoseParams:
    """Patient `k`'s parameters as a batch of one."""
    return GlucoseParams(*(f[k : k + 1] for f in p))


def test_steady_state_is_a_fixed_point_for_24_hours() -> None:
    p = _varied_params(5)
    x0 = steady_state(p)
    assert x0.shape == (5, N_GLUCOSE_STATES)
    traj = _run(x0, _inputs(5), p, 5.0, 24 * 12)
    assert np.max(np.abs(traj[..., G] - p.basal_glucose)) < 0.5
    np.testing.assert_allclose(glucose_observation(x0, p), p.basal_glucose)


def test_no_inputs_means_no_change() -> None:
    p = default_glucose_params(3)
    x0 = steady_state(p)
    np.testing.assert_allclose(glucose_dynamics(x0, _inputs(3), p, 5.0), x0, atol=1e-9)


def test_basal_infusion_holds_basal_insulin() -> None:
    p = default_glucose_params(1)
    # 10 µU/mL × 0.138 /min × 8.4 L = 0.0116 U/min, about 0.7 U/h.
    np.testing.assert_allclose(basal_infusion_rate(p) * 60, 0.6955, rtol=1e-3)


def test_meal_raises_glucose_with_a_plausible_peak_and_returns_towards_basal() -> None:
    p = default_glucose_params(1)
    traj = _run(steady_state(p), _inputs(1, carbs=50.0), p, 5.0, 10 * 12)
    g = traj[:, 0, G]
    peak_min = 5 * int(np.argmax(g))
    assert 30 <= peak_min <= 120
    assert g.max() > p.basal_glucose[0] + 50
    assert abs(g[-1] - p.basal_glucose[0]) < 0.2 * (g.max() - p.basal_glucose[0])
    cgm = glucose_observation(traj[:, 0], p)
    assert int(np.argmax(cgm)) > int(np.argmax(g))  # the sensor lags plasma glucose


def test_insulin_lowers_glucose_and_more_insulin_lowers_it_more() -> None:
    doses = np.array([0.0, 0.5, 1.0, 2.0, 4.0])
    p = default_glucose_params(doses.size)
    u = _inputs(doses.size)
    u[:, GlucoseInput.INSULIN] = doses
    traj = _run(steady_state(p), u, p, 5.0, 6 * 12)
    nadir = traj[..., G].min(axis=0)
    assert nadir[0] == pytest.approx(p.basal_glucose[0])
    assert np.all(np.diff(nadir) < 0)
    assert 15 < p.basal_glucose[0] - nadir[2] < 60  # 1 U: of the order of a correction factor


@pytest.mark.parametrize("fine_dt", [1.0, 5.0])
def test_dt_invariance(fine_dt: float) -> None:
    p = _varied_params(4)
    x0 = steady_state(p)
    x0[:, G] += np.array([-40.0, 0.0, 30.0, 150.0])
    u = _inputs(4, carbs=60.0, insulin=3.0)
    coarse = glucose_dynamics(x0, u, p, 60.0)
    fine = _run(x0, u, p, fine_dt, int(60 / fine_dt))[-1]
    assert np.max(np.abs(coarse[:, G] - fine[:, G])) < 1.0
    assert np.max(np.abs(coarse[:, GlucoseState.GI] - fine[:, GlucoseState.GI])) < 1.0


def test_per_patient_dt() -> None:
    p = default_glucose_params(3)
    x0 = steady_state(p)
    u = _inputs(3, carbs=40.0)
    dts = np.array([0.0, 2.5, 60.0])
    batch = glucose_dynamics(x0, u, p, dts)
    for k, dt in enumerate(dts):
        alone = glucose_dynamics(x0[k : k + 1], u[k : k + 1], _patient(p, k), dt)
        np.testing.assert_array_equal(batch[k], alone[0])
    assert batch[0, GlucoseState.D1] == 40.0  # dt = 0: the meal is eaten, nothing moves


def test_n_patients_at_once_equal_each_patient_alone() -> None:
    n = 6
    p = _varied_params(n)
    rng = np.random.default_rng(1)
    x = steady_state(p) * rng.uniform(0.5, 1.5, (n, N_GLUCOSE_STATES))
    u = rng.uniform(0, 1, (n, N_GLUCOSE_INPUTS)) * [80.0, 6.0]
    batch = glucose_dynamics(x, u, p, 5.0)
    for k in range(n):
        alone = glucose_dynamics(x[k : k + 1], u[k : k + 1], _patient(p, k), 5.0)
        np.testing.assert_array_equal(batch[k], alone[0])


def test_sigma_point_batches_equal_looping() -> None:
    n, k = 4, 2 * N_GLUCOSE_STATES + 1
    p = _varied_params(n)
    rng = np.random.default_rng(2)
    x = steady_state(p)[:, None, :] * rng.uniform(0.7, 1.3, (n, k, N_GLUCOSE_STATES))
    u = _inputs(n, carbs=30.0, insulin=2.0)
    dt = np.array([1.0, 5.0, 7.5, 30.0])
    batch = glucose_dynamics(x, u, p, dt)
    assert batch.shape == (n, k, N_GLUCOSE_STATES)
    np.testing.assert_array_equal(glucose_observation(batch, p), batch[..., GlucoseState.GI])
    for j in range(k):
        np.testing.assert_allclose(batch[:, j], glucose_dynamics(x[:, j], u, p, dt), rtol=1e-12)
    # Per-sigma-point inputs, shape (n, k, n_inputs), broadcast the same way.
    u_k = np.broadcast_to(u[:, None, :], (n, k, N_GLUCOSE_INPUTS))
    np.testing.assert_array_equal(glucose_dynamics(x, u_k, p, dt), batch)


def test_pure() -> None:
    p = default_glucose_params(2)
    x = steady_state(p)
    u = _inputs(2, carbs=50.0, insulin=4.0)
    dt = np.array([5.0, 60.0])
    copies = (x.copy(), u.copy(), dt.copy(), [f.copy() for f in p])
    glucose_dynamics(x, u, p, dt)
    glucose_observation(x, p)
    steady_state(p)
    np.testing.assert_array_equal(x, copies[0])
    np.testing.assert_array_equal(u, copies[1])
    np.testing.assert_array_equal(dt, copies[2])
    for f, c in zip(p, copies[3], strict=True):
        np.testing.assert_array_equal(f, c)


def test_bounds_hold_under_absurd_inputs() -> None:
    p = default_glucose_params(4)
    u = np.array([[500.0, 0.0], [0.0, 100.0], [500.0, 100.0], [-50.0, -10.0]])
    for dt in (1.0, 5.0, 60.0):
        traj = _run(steady_state(p), u, p, dt, int(24 * 60 / dt))
        assert np.all(np.isfinite(traj))
        assert np.all(traj >= GLUCOSE_STATE_MIN) and np.all(traj <= GLUCOSE_STATE_MAX)
    assert traj[:, 0, G].max() > 400  # 500 g of carbohydrate is seen
    assert traj[:, 1, G].min() == 10.0  # 100 U drives glucose to the floor
    np.testing.assert_allclose(traj[-1, 3], steady_state(p)[3], atol=1e-9)  # negative = none


def test_invalid_dt_is_refused() -> None:
    p = default_glucose_params(1)
    with pytest.raises(ValueError, match="dt_min"):
        glucose_dynamics(steady_state(p), _inputs(1), p, -1.0)


def test_plausible_against_simglucose_adult() -> None:
    pytest.importorskip("simglucose")
    from medtwin.sim import GlucosePatient

    start_ms = int(datetime(2024, 3, 4, 0, 0, tzinfo=UTC).timestamp() * 1000)
    patient = GlucosePatient("adult#001", start_ms, seed=3)
    steps = [patient.step() for _ in range(24 * 20)]  # 24 h of 3-min steps
    dt = patient.sample_time_ms / 60_000
    carbs, insulin = (
        np.array([sum(r.value for r in s.readings if r.channel == ch) for s in steps])
        for ch in (Channel.CARBS, Channel.INSULIN)
    )
    truth = np.array([s.true_bg for s in steps])
    assert carbs.sum() > 100 and insulin.sum() > 5

    # The pump's basal is part of `insulin`; the model carries its own basal infusion, so it
    # gets the insulin on top of the pump's constant basal (the smallest delivery per step).
    p = default_glucose_params(1)
    x = steady_state(p)
    x[:, G] = x[:, GlucoseState.GI] = truth[0]
    model = []
    for c, i in zip(carbs, insulin - insulin.min(), strict=True):
        x = glucose_dynamics(x, np.array([[c, i]]), p, dt)
        model.append(x[0, G])
    g = np.array(model)
    assert g.min() >= 40 and g.max() <= 400
    r = float(np.corrcoef(g, truth)[0, 1])
    assert r > 0.3, r
