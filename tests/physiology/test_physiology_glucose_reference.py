"""The exact-linear + RK4 integrator against the former all-RK4 scheme (1-min substeps).

`_reference_dynamics` is the implementation `glucose_dynamics` had before the linear
compartments were solved in closed form; it is kept here only as the accuracy reference.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest

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
    steady_state,
)

FloatArray = np.ndarray


class _Rates(NamedTuple):
    si: FloatArray
    sg: FloatArray
    production: FloatArray
    p2: FloatArray
    ib: FloatArray
    inv_tau_d: FloatArray
    appearance: FloatArray
    inv_tau_i: FloatArray
    insulin_gain: FloatArray
    ke: FloatArray
    basal_rate: FloatArray
    inv_tau_s: FloatArray


def _lead(a: FloatArray, lead_ndim: int) -> FloatArray:
    return a.reshape(a.shape + (1,) * (lead_ndim - a.ndim))


def _rates(p: GlucoseParams, lead_ndim: int) -> _Rates:
    def b(a: FloatArray) -> FloatArray:
        return _lead(np.asarray(a, dtype=np.float64), lead_ndim)

    return _Rates(
        si=b(p.insulin_sensitivity),
        sg=b(p.glucose_effectiveness),
        production=b(p.glucose_effectiveness * p.basal_glucose),
        p2=b(p.insulin_action_rate),
        ib=b(p.basal_insulin),
        inv_tau_d=b(1.0 / p.carb_absorption_time),
        appearance=b(
            1000.0
            * p.carb_bioavailability
            / (p.carb_absorption_time * p.glucose_volume * p.body_weight)
        ),
        inv_tau_i=b(1.0 / p.insulin_absorption_time),
        insulin_gain=b(1000.0 / (p.insulin_absorption_time * p.insulin_volume * p.body_weight)),
        ke=b(p.insulin_clearance),
        basal_rate=b(basal_infusion_rate(p)),
        inv_tau_s=b(1.0 / p.sensor_delay),
    )


def _derivative(xt: FloatArray, r: _Rates) -> FloatArray:
    g, x, i, s1, s2, d1, d2, gi = xt
    dx = np.empty_like(xt)
    dx[GlucoseState.G] = r.production + r.appearance * d2 - (r.sg + x) * g
    dx[GlucoseState.X] = r.p2 * (r.si * (i - r.ib) - x)
    dx[GlucoseState.I] = r.insulin_gain * s2 - r.ke * i
    dx[GlucoseState.S1] = r.basal_rate - r.inv_tau_i * s1
    dx[GlucoseState.S2] = r.inv_tau_i * (s1 - s2)
    dx[GlucoseState.D1] = -r.inv_tau_d * d1
    dx[GlucoseState.D2] = r.inv_tau_d * (d1 - d2)
    dx[GlucoseState.GI] = r.inv_tau_s * (g - gi)
    return dx


def _reference_dynamics(
    x: FloatArray, u: FloatArray, params: GlucoseParams, dt_min: FloatArray | float
) -> FloatArray:
    """The former `glucose_dynamics`: all eight states by RK4 in substeps of at most 1 min."""
    x = np.asarray(x, dtype=np.float64)
    u = np.asarray(u, dtype=np.float64)
    lead = x.ndim - 1
    dt = np.broadcast_to(np.asarray(dt_min, dtype=np.float64), (x.shape[0],))
    lo = GLUCOSE_STATE_MIN.reshape((N_GLUCOSE_STATES,) + (1,) * lead)
    hi = GLUCOSE_STATE_MAX.reshape((N_GLUCOSE_STATES,) + (1,) * lead)
    xt = np.moveaxis(x, -1, 0).copy()
    inputs = np.maximum(np.moveaxis(u, -1, 0), 0.0)
    xt[GlucoseState.D1] += _lead(inputs[GlucoseInput.CARBS], lead)
    xt[GlucoseState.S1] += _lead(inputs[GlucoseInput.INSULIN], lead)
    np.clip(xt, lo, hi, out=xt)
    r = _rates(params, lead)
    n_sub = np.ceil(dt / 1.0).astype(np.int64)
    h_full = np.divide(dt, n_sub, out=np.zeros_like(dt), where=n_sub > 0)
    for k in range(int(n_sub.max(initial=0))):
        h = _lead(np.where(k < n_sub, h_full, 0.0), lead)
        k1 = _derivative(xt, r)
        k2 = _derivative(xt + (0.5 * h) * k1, r)
        k3 = _derivative(xt + (0.5 * h) * k2, r)
        k4 = _derivative(xt + h * k3, r)
        xt = xt + (h / 6.0) * (k1 + 2.0 * (k2 + k3) + k4)
        np.clip(xt, lo, hi, out=xt)
    return np.ascontiguousarray(np.moveaxis(xt, 0, -1))


def _varied_params(n: int, seed: int) -> GlucoseParams:
    """Defaults scaled per patient by 0.6–1.4."""
    rng = np.random.default_rng(seed)
    p = default_glucose_params(n)
    return GlucoseParams(*(f * rng.uniform(0.6, 1.4, n) for f in p))


def _realistic_inputs(rng: np.random.Generator, n: int, dt: np.ndarray) -> np.ndarray:
    """About four meals (20–100 g) a day with boluses (1–10 U), plus correction boluses."""
    u = np.zeros((n, N_GLUCOSE_INPUTS))
    meal = rng.random(n) < 4.0 * dt / 1440.0
    u[meal, GlucoseInput.CARBS] = rng.uniform(20.0, 100.0, meal.sum())
    u[meal, GlucoseInput.INSULIN] = rng.uniform(1.0, 10.0, meal.sum())
    correction = rng.random(n) < 1.0 * dt / 1440.0
    u[correction, GlucoseInput.INSULIN] += rng.uniform(1.0, 10.0, correction.sum())
    return u


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_the_former_rk4_scheme_over_24_hours(seed: int) -> None:
    n = 12
    p = _varied_params(n, seed)
    rng = np.random.default_rng(100 + seed)
    dt = np.array([5.0, 5.0, 5.0, 5.0, 1.0, 2.5, 3.0, 4.0, 7.5, 10.0, 15.0, 5.0])
    x_new = steady_state(p)
    x_new[:, GlucoseState.G] = x_new[:, GlucoseState.GI] = rng.uniform(80.0, 250.0, n)
    x_ref = x_new.copy()
    worst = np.zeros(N_GLUCOSE_STATES)
    scale = np.zeros(N_GLUCOSE_STATES)
    for _ in range(int(1440 / dt.min() / 5)):  # 24 h for the 5-min patients (4.8 h at 1 min)
        u = _realistic_inputs(rng, n, dt)
        x_new = glucose_dynamics(x_new, u, p, dt)
        x_ref = _reference_dynamics(x_ref, u, p, dt)
        worst = np.maximum(worst, np.abs(x_new - x_ref).max(axis=0))
        scale = np.maximum(scale, np.abs(x_ref).max(axis=0))
    assert worst[GlucoseState.G] < 1.0, worst
    assert worst[GlucoseState.GI] < 1.0, worst
    # The linear compartments are exact: what differs is the reference's RK4 error.
    linear = [GlucoseState.I, GlucoseState.S1, GlucoseState.S2, GlucoseState.D1, GlucoseState.D2]
    assert np.all(worst[linear] < 1e-4 * scale[linear]), (worst, scale)
    assert worst[GlucoseState.X] < 1e-3 * scale[GlucoseState.X], (worst, scale)


def test_matches_the_former_rk4_scheme_on_sigma_points() -> None:
    n, k = 6, 2 * N_GLUCOSE_STATES + 1
    p = _varied_params(n, 3)
    rng = np.random.default_rng(4)
    x0 = steady_state(p)
    x0[:, GlucoseState.D1] = rng.uniform(0.0, 80.0, n)
    x0[:, GlucoseState.S1] += rng.uniform(0.0, 6.0, n)
    x = x0[:, None, :] * rng.uniform(0.8, 1.2, (n, k, N_GLUCOSE_STATES))
    x[..., GlucoseState.X] = rng.normal(0.0, 0.005, (n, k))
    u = np.array([[60.0, 5.0], [0.0, 0.0], [20.0, 1.0], [100.0, 10.0], [0.0, 3.0], [40.0, 0.0]])
    dt = np.array([5.0, 5.0, 1.0, 5.0, 30.0, 12.5])
    new = glucose_dynamics(x, u, p, dt)
    ref = _reference_dynamics(x, u, p, dt)
    assert new.shape == (n, k, N_GLUCOSE_STATES)
    assert np.max(np.abs(new[..., GlucoseState.G] - ref[..., GlucoseState.G])) < 0.1
    assert np.max(np.abs(new[..., GlucoseState.GI] - ref[..., GlucoseState.GI])) < 0.1
    np.testing.assert_allclose(new, ref, rtol=1e-4, atol=1e-6)


def test_equal_insulin_absorption_and_clearance_rates_are_no_special_case() -> None:
    # ke = 1/tau_I exactly, and within rounding of it: the closed form has no 0/0 there.
    p = default_glucose_params(4)
    rate = 1.0 / p.insulin_absorption_time[0]
    p = p._replace(insulin_clearance=rate * np.array([1.0, 1.0 + 1e-12, 1.0 - 1e-9, 1.05]))
    x = steady_state(p)
    u = np.array([[60.0, 5.0]] * 4)
    new = glucose_dynamics(x, u, p, 60.0)
    ref = _reference_dynamics(x, u, p, 60.0)
    assert np.all(np.isfinite(new))
    np.testing.assert_allclose(new, ref, rtol=1e-5, atol=1e-6)
