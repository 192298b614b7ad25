"""The glucose twin: a batched UKF on the glucose–insulin model, and its forecasts.

Pure functions over N patients at once (no per-patient loop): `glucose_filter_init` starts
each patient at the model's basal steady state, `glucose_filter_step` predicts with
`medtwin.physiology.glucose_dynamics` over an irregular step (inputs applied at its start,
process noise scaled by its length) and conditions on the CGM (the interstitial glucose),
masked where there is no reading; `glucose_forecast` carries the filter's Gaussian through
the model by the unscented transform and returns the *plasma* glucose (what a blood glucose
measurement, or a simulator's true BG, would show) with its 95 % interval.

Shapes: n patients, d = 8 states in `GlucoseState` order; every per-patient argument has a
leading axis of length n; params fields are (n,).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from medtwin.estimation._ukf import UKFParams, ukf_predict, ukf_update
from medtwin.physiology import (
    GLUCOSE_STATE_MAX,
    GLUCOSE_STATE_MIN,
    N_GLUCOSE_INPUTS,
    N_GLUCOSE_STATES,
    GlucoseInput,
    GlucoseParams,
    GlucoseState,
    broadcast_glucose_params,
    glucose_dynamics,
    glucose_observation,
    steady_state,
)

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: Longest step (min) of the unscented propagation in `glucose_forecast`: the Gaussian is
#: re-approximated (and process noise added) at least this often, as the filter does between
#: 3–5 min CGM readings.
FORECAST_STEP_MIN = 5.0
#: Two-sided 95 % quantile of the standard normal distribution.
Z_95 = 1.959963984540054


class GlucoseNoise(NamedTuple):
    """Noise of the glucose twin. `process_std` ((d,), or (n, d) per patient) is the standard
    deviation each state gains per sqrt(minute) (variance grows linearly with the step);
    `cgm_std` in mg/dL.

    Defaults: the model error lives mostly in plasma glucose (unmodelled meals composition,
    exercise, stress, parameter mismatch): 1.5 mg/dL/sqrt(min) gives about 8 mg/dL over
    30 min and 12 mg/dL over 60 min of drift. Insulin action X: 1e-4 /min/sqrt(min), so in an
    hour it can move by ~1e-3 /min, about 10 % of a meal bolus' peak action (sensitivity
    varies over the day). Plasma insulin 0.2 µU/mL, subcutaneous depots 0.005 U (pump
    delivery error), gut 0.05 g (kept small: the gut is often empty, and a Gaussian spread
    around 0 g, clipped at 0, would feed phantom carbohydrate), interstitial glucose
    0.2 mg/dL (the sensor's plasma-to-interstitial kinetics are well described), all per
    sqrt(min).
    CGM: 10 mg/dL, the order of a Dexcom G6's error (MARD ~9 % at 100–150 mg/dL).
    """

    process_std: FloatArray | tuple[float, ...] = (1.5, 1e-4, 0.2, 0.005, 0.005, 0.05, 0.05, 0.2)
    cgm_std: float = 10.0


class GlucoseFilterState(NamedTuple):
    """Each patient's Gaussian belief: `mean` (n, d) and `cov` (n, d, d), `GlucoseState`
    order."""

    mean: FloatArray
    cov: FloatArray


class GlucoseFilterStep(NamedTuple):
    """One filter step per patient: the new `state`, and for the CGM reading the
    `innovation` (n,) in mg/dL, its variance `innovation_var` (n,) in (mg/dL)^2 (both NaN
    where there was no reading) and the Gaussian log-likelihood `loglik` (n,) (0 there)."""

    state: GlucoseFilterState
    innovation: FloatArray
    innovation_var: FloatArray
    loglik: FloatArray


def _clip_mean(mean: FloatArray) -> FloatArray:
    return np.asarray(np.clip(mean, GLUCOSE_STATE_MIN, GLUCOSE_STATE_MAX), dtype=np.float64)


def glucose_filter_init(params: GlucoseParams, n: int) -> GlucoseFilterState:
    """n patients at the model's basal steady state, with a wide prior.

    Prior standard deviations: glucose 50 mg/dL (plasma and interstitial, correlation 0.95:
    they differ only by the sensor lag), insulin action 50 % of SI Ib, plasma insulin 50 % of
    Ib, subcutaneous depots 50 % of their basal content, 1 g per gut compartment (empty
    after a fast; see `GlucoseNoise`). The first CGM readings pin glucose down within a few
    steps.
    """
    p = broadcast_glucose_params(params, n)
    mean = steady_state(p)
    std = np.empty((n, N_GLUCOSE_STATES))
    std[:, GlucoseState.G] = std[:, GlucoseState.GI] = 50.0
    std[:, GlucoseState.X] = 0.5 * p.insulin_sensitivity * p.basal_insulin
    std[:, GlucoseState.I] = 0.5 * p.basal_insulin
    std[:, GlucoseState.S1] = 0.5 * mean[:, GlucoseState.S1]
    std[:, GlucoseState.S2] = 0.5 * mean[:, GlucoseState.S2]
    std[:, GlucoseState.D1] = std[:, GlucoseState.D2] = 1.0
    corr = np.eye(N_GLUCOSE_STATES)
    corr[GlucoseState.G, GlucoseState.GI] = corr[GlucoseState.GI, GlucoseState.G] = 0.95
    cov = std[:, :, np.newaxis] * corr * std[:, np.newaxis, :]
    return GlucoseFilterState(mean, cov)


def _inputs(n: int, carbs_g: FloatArray | None, insulin_u: FloatArray | None) -> FloatArray:
    u = np.zeros((n, N_GLUCOSE_INPUTS))
    if carbs_g is not None:
        u[:, GlucoseInput.CARBS] = np.nan_to_num(np.asarray(carbs_g, dtype=np.float64))
    if insulin_u is not None:
        u[:, GlucoseInput.INSULIN] = np.nan_to_num(np.asarray(insulin_u, dtype=np.float64))
    return u


def _predict(params: GlucoseParams, noise: GlucoseNoise, state: GlucoseFilterState,
             dt_min: FloatArray, u: FloatArray, ukf: UKFParams) -> GlucoseFilterState:
    """The unscented prediction over `dt_min` (n,), inputs `u` (n, 2) at its start."""
    q = np.asarray(noise.process_std, dtype=np.float64) ** 2
    process_cov = dt_min[:, np.newaxis, np.newaxis] * (q[..., np.newaxis] * np.eye(q.shape[-1]))

    def transition(points: FloatArray) -> FloatArray:
        return glucose_dynamics(points, u, params, dt_min)

    mean, cov = ukf_predict(ukf, state.mean, state.cov, transition, process_cov)
    return GlucoseFilterState(_clip_mean(mean), cov)


def _propagate(params: GlucoseParams, noise: GlucoseNoise, state: GlucoseFilterState,
               u: FloatArray, minutes: float, ukf: UKFParams) -> GlucoseFilterState:
    """Carry the Gaussian `minutes` ahead, inputs `u` at the start, re-approximating it at
    least every `FORECAST_STEP_MIN`."""
    n = state.mean.shape[0]
    now = 0.0
    while now < minutes:
        h = min(FORECAST_STEP_MIN, minutes - now)
        state = _predict(params, noise, state, np.full(n, h), u, ukf)
        u = np.zeros_like(u)
        now += h
    return state


def _glucose_band(mean: FloatArray, var: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Mean with its 95 % bounds, clipped to the model's glucose range."""
    half = Z_95 * np.sqrt(np.maximum(var, 0.0))
    lo, hi = GLUCOSE_STATE_MIN[GlucoseState.G], GLUCOSE_STATE_MAX[GlucoseState.G]
    return mean, np.clip(mean - half, lo, hi), np.clip(mean + half, lo, hi)


def glucose_filter_step(
    params: GlucoseParams,
    noise: GlucoseNoise,
    state: GlucoseFilterState,
    dt_min: FloatArray,
    carbs_g: FloatArray,
    insulin_u: FloatArray,
    cgm: FloatArray,
    observed: BoolArray,
    ukf: UKFParams = UKFParams(),  # noqa: B008 - an immutable named tuple
) -> GlucoseFilterStep:
    """Advance every patient by `dt_min` (n,) minutes and condition on its CGM.

    `carbs_g` (n,) and `insulin_u` (n,) are taken at the start of the step (insulin on top
    of the model's basal infusion, see `medtwin.physiology.basal_infusion_rate`); `cgm` (n,)
    in mg/dL is read at its end where `observed` (n,) is true and finite. Patients without a
    reading only predict (their uncertainty grows). Means are clipped to the model's
    physiological bounds. Pure: the same arguments give the same result.
    """
    n = state.mean.shape[0]
    p = broadcast_glucose_params(params, n)
    dt = np.broadcast_to(np.asarray(dt_min, dtype=np.float64), (n,))
    predicted = _predict(p, noise, state, dt, _inputs(n, carbs_g, insulin_u), ukf)

    y = np.asarray(cgm, dtype=np.float64).reshape(n, 1)
    seen = (np.asarray(observed, dtype=bool).reshape(n) & np.isfinite(y[:, 0]))[:, np.newaxis]
    noise_cov = np.full((n, 1, 1), float(noise.cgm_std) ** 2)

    def observe(points: FloatArray) -> FloatArray:
        return glucose_observation(points, p)[..., np.newaxis]

    upd = ukf_update(ukf, predicted.mean, predicted.cov, observe, y, noise_cov, seen)
    hit = seen[:, 0]
    return GlucoseFilterStep(
        GlucoseFilterState(_clip_mean(upd.mean), upd.cov),
        np.where(hit, upd.innovation[:, 0], np.nan),
        np.where(hit, upd.innovation_cov[:, 0, 0], np.nan),
        upd.loglik,
    )


def glucose_forecast(
    params: GlucoseParams,
    state: GlucoseFilterState,
    horizons_min: Sequence[float] = (30.0, 60.0),
    carbs_g: FloatArray | None = None,
    insulin_u: FloatArray | None = None,
    noise: GlucoseNoise = GlucoseNoise(),  # noqa: B008 - an immutable named tuple
    ukf: UKFParams = UKFParams(),  # noqa: B008 - an immutable named tuple
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Plasma glucose `horizons_min` ahead: mean, lower and upper 95 % bounds, each (n, h).

    The forecast is of *plasma* glucose G (blood glucose, no sensor lag or sensor noise), so
    it is to be compared with a blood glucose measurement or a simulator's true BG. The
    Gaussian is propagated through the model by the unscented transform in steps of at most
    `FORECAST_STEP_MIN`, adding the process noise of each step; `carbs_g` and `insulin_u`
    (n,), when given, are eaten/delivered now; no other input is assumed. Bounds are
    clipped to the model's glucose range.
    """
    n = state.mean.shape[0]
    p = broadcast_glucose_params(params, n)
    targets = np.asarray(horizons_min, dtype=np.float64)
    if targets.ndim != 1 or np.any(~np.isfinite(targets)) or np.any(targets < 0):
        raise ValueError("estimation: horizons_min must be finite non-negative minutes")
    u = _inputs(n, carbs_g, insulin_u)
    order = np.argsort(targets, kind="stable")
    mean = np.empty((n, targets.size))
    var = np.empty((n, targets.size))
    current, now = state, 0.0
    for j in order:
        if targets[j] > now:  # the inputs go in with the first step actually taken
            current = _propagate(p, noise, current, u, float(targets[j]) - now, ukf)
            u = np.zeros_like(u)
            now = float(targets[j])
        mean[:, j] = current.mean[:, GlucoseState.G]
        var[:, j] = current.cov[:, GlucoseState.G, GlucoseState.G]
    return _glucose_band(mean, var)


def glucose_whatif(
    params: GlucoseParams,
    state: GlucoseFilterState,
    dt_min: float,
    carbs_g: FloatArray,
    insulin_u: FloatArray,
    noise: GlucoseNoise = GlucoseNoise(),  # noqa: B008 - an immutable named tuple
    ukf: UKFParams = UKFParams(),  # noqa: B008 - an immutable named tuple
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Plasma glucose under a given future of meals and insulin: mean, lower and upper 95 %
    bounds at the end of each step, each (n, T).

    `carbs_g` and `insulin_u` (n, T) are what is eaten and delivered at the start of each of
    T steps of `dt_min` minutes (insulin on top of the model's basal infusion), e.g. a bolus
    scaled by 1.3, a skipped meal or a changed basal expressed as doses. The twin's Gaussian
    is carried through the model by the unscented transform with the process noise of each
    step, as in `glucose_forecast`.
    """
    n = state.mean.shape[0]
    p = broadcast_glucose_params(params, n)
    carbs = np.asarray(carbs_g, dtype=np.float64)
    insulin = np.asarray(insulin_u, dtype=np.float64)
    if carbs.shape != insulin.shape or carbs.ndim != 2 or carbs.shape[0] != n:
        raise ValueError(f"estimation: carbs_g and insulin_u must both have shape ({n}, T)")
    if not np.isfinite(dt_min) or dt_min <= 0:
        raise ValueError("estimation: dt_min must be a positive number of minutes")
    steps = carbs.shape[1]
    mean = np.empty((n, steps))
    var = np.empty((n, steps))
    current = state
    for k in range(steps):
        current = _propagate(p, noise, current, _inputs(n, carbs[:, k], insulin[:, k]),
                             dt_min, ukf)
        mean[:, k] = current.mean[:, GlucoseState.G]
        var[:, k] = current.cov[:, GlucoseState.G, GlucoseState.G]
    return _glucose_band(mean, var)
