"""The glucose twin: a batched UKF on the glucose–insulin model, and its forecasts.

Pure functions over N patients at once (no per-patient loop): `glucose_filter_init` starts
each patient at the model's basal steady state, `glucose_filter_step` predicts with
`medtwin.physiology.glucose_dynamics` over an irregular step (inputs applied at its start,
process noise scaled by its length) and conditions on the CGM (the interstitial glucose),
masked where there is no reading; `glucose_forecast` carries the filter's Gaussian through
the model by the unscented transform and returns the *plasma* glucose (what a blood glucose
measurement, or a simulator's true BG, would show) with its 95 % interval.

The filter's state augments the model's 8 states (`GlucoseState` order) with two
Ornstein–Uhlenbeck states (`GlucoseTwinState`): an unmodelled glucose disturbance D (mg/dL/min,
dG/dt += D: meals' composition, exercise, sensitivity drifting over the day, parameter
mismatch), which lets the twin learn the current unexplained trend and lets its forecasts
carry it on while it decays; and the CGM's slowly varying error V (mg/dL: a Dexcom's error is
autocorrelated over tens of minutes, so treating it as white noise makes the filter chase
it), so the CGM reads Gi + V + white noise.

Shapes: n patients, d = `N_GLUCOSE_TWIN_STATES` = 10 states (a model-only state of 8, saved before
the twin's own states existed, is accepted and augmented); every per-patient argument has a
leading axis of length n; params fields are (n,).
"""

from __future__ import annotations

import enum
import math
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


class GlucoseTwinState(enum.IntEnum):
    """Index of the twin's own states, after the model's `GlucoseState` ones."""

    D = N_GLUCOSE_STATES
    """Unmodelled glucose disturbance (mg/dL/min), added to dG/dt; decays to 0."""
    V = N_GLUCOSE_STATES + 1
    """The CGM's autocorrelated error (mg/dL); decays to 0."""


N_GLUCOSE_TWIN_STATES = N_GLUCOSE_STATES + len(GlucoseTwinState)
_STATE_MIN = np.concatenate([GLUCOSE_STATE_MIN, [-np.inf, -np.inf]])
_STATE_MAX = np.concatenate([GLUCOSE_STATE_MAX, [np.inf, np.inf]])


class GlucoseNoise(NamedTuple):
    """Noise of the glucose twin.

    `process_std` ((8,) or (n, 8) per patient, `GlucoseState` order) is the standard deviation
    each model state gains per sqrt(minute) (variance grows linearly with the step).
    `disturbance_std` (mg/dL/min) and `disturbance_time_min` are the stationary standard
    deviation and correlation time of the unmodelled disturbance D. `cgm_std` (mg/dL) is the
    CGM's total error, of which the fraction `cgm_drift_share` of the variance is the
    autocorrelated error V (correlation time `cgm_drift_time_min`), the rest white.

    Defaults: plasma glucose 1.0 mg/dL/sqrt(min) of white model error on top of D; D with
    sd 0.5 mg/dL/min (a 30-min trend of about 15 mg/dL that the model does not explain)
    and a 30-min correlation time (the unexplained part of a meal's or an exercise bout's
    effect lasts about that long). Insulin action X: 1e-4 /min/sqrt(min) (sensitivity
    varies over the day). Plasma insulin 0.2 µU/mL, subcutaneous depots 0.005 U (pump
    delivery error), gut 0.05 g (kept small: the gut is often empty, and a Gaussian spread
    around 0 g, clipped at 0, would feed phantom carbohydrate), interstitial glucose
    0.2 mg/dL (the sensor's kinetics are well described), all per sqrt(min). CGM: 10 mg/dL
    in all, the order of a Dexcom G6's error (MARD ~9 % at 100–150 mg/dL), 80 % of its
    variance autocorrelated over 30 min (sensor error is an AR process with a time constant
    of tens of minutes, Facchinetti et al. 2014, IEEE TBME 61:620; simglucose's Dexcom
    model is an AR(1) with coefficient 0.7 per 15 min, 42 min, cubic-interpolated).
    D's and V's values were chosen on a tuning cohort of 10 simglucose patients (seeds
    apart from those of docs/validation.md) among round values, one at a time.
    """

    process_std: FloatArray | tuple[float, ...] = (1.0, 1e-4, 0.2, 0.005, 0.005, 0.05, 0.05, 0.2)
    cgm_std: float = 10.0
    disturbance_std: float = 0.5
    disturbance_time_min: float = 30.0
    cgm_drift_share: float = 0.8
    cgm_drift_time_min: float = 30.0


class GlucoseFilterState(NamedTuple):
    """Each patient's Gaussian belief: `mean` (n, d) and `cov` (n, d, d), d =
    `N_GLUCOSE_TWIN_STATES`: the model's states in `GlucoseState` order, then
    `GlucoseTwinState`'s."""

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
    return np.asarray(np.clip(mean, _STATE_MIN, _STATE_MAX), dtype=np.float64)


def _augmented(state: GlucoseFilterState, noise: GlucoseNoise) -> GlucoseFilterState:
    """`state` with the twin's own states; a model-only state (d = 8, as saved before they
    existed) gets them at 0 with their stationary spread, uncorrelated."""
    mean, cov = np.asarray(state.mean), np.asarray(state.cov)
    if mean.shape[-1] != N_GLUCOSE_STATES:
        return state
    n = mean.shape[0]
    full_mean = np.zeros((n, N_GLUCOSE_TWIN_STATES))
    full_mean[:, :N_GLUCOSE_STATES] = mean
    full_cov = np.zeros((n, N_GLUCOSE_TWIN_STATES, N_GLUCOSE_TWIN_STATES))
    full_cov[:, :N_GLUCOSE_STATES, :N_GLUCOSE_STATES] = cov
    full_cov[:, GlucoseTwinState.D, GlucoseTwinState.D] = noise.disturbance_std**2
    full_cov[:, GlucoseTwinState.V, GlucoseTwinState.V] = noise.cgm_drift_share * noise.cgm_std**2
    return GlucoseFilterState(full_mean, full_cov)


def glucose_filter_init(params: GlucoseParams, n: int,
                        noise: GlucoseNoise | None = None) -> GlucoseFilterState:
    """n patients at the model's basal steady state, with a wide prior.

    Prior standard deviations: glucose 50 mg/dL (plasma and interstitial, correlation 0.95:
    they differ only by the sensor lag), insulin action 50 % of SI Ib, plasma insulin 50 % of
    Ib, subcutaneous depots 50 % of their basal content, 1 g per gut compartment (empty
    after a fast; see `GlucoseNoise`); the disturbance and the CGM's autocorrelated error at
    their stationary spread under `noise` (default `GlucoseNoise()`). The first CGM readings
    pin glucose down within a few steps.
    """
    noise = GlucoseNoise() if noise is None else noise
    p = broadcast_glucose_params(params, n)
    mean = np.zeros((n, N_GLUCOSE_TWIN_STATES))
    mean[:, :N_GLUCOSE_STATES] = steady_state(p)
    std = np.empty((n, N_GLUCOSE_TWIN_STATES))
    std[:, GlucoseState.G] = std[:, GlucoseState.GI] = 50.0
    std[:, GlucoseState.X] = 0.5 * p.insulin_sensitivity * p.basal_insulin
    std[:, GlucoseState.I] = 0.5 * p.basal_insulin
    std[:, GlucoseState.S1] = 0.5 * mean[:, GlucoseState.S1]
    std[:, GlucoseState.S2] = 0.5 * mean[:, GlucoseState.S2]
    std[:, GlucoseState.D1] = std[:, GlucoseState.D2] = 1.0
    std[:, GlucoseTwinState.D] = noise.disturbance_std
    std[:, GlucoseTwinState.V] = math.sqrt(noise.cgm_drift_share) * noise.cgm_std
    corr = np.eye(N_GLUCOSE_TWIN_STATES)
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


def _ou(std: float, time_min: float, dt_min: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Decay factor and added variance (n,) of an Ornstein–Uhlenbeck state over `dt_min`."""
    decay = np.exp(-dt_min / time_min)
    return decay, std * std * -np.expm1(-2.0 * dt_min / time_min)


def _predict(params: GlucoseParams, noise: GlucoseNoise, state: GlucoseFilterState,
             dt_min: FloatArray, u: FloatArray, ukf: UKFParams) -> GlucoseFilterState:
    """The unscented prediction over `dt_min` (n,), inputs `u` (n, 2) at its start.

    The disturbance D, held over the step, adds D dt to plasma glucose and what a linear
    ramp of that size does to the interstitial glucose, D (dt - tau_s (1 - e^{-dt/tau_s})).
    """
    n = dt_min.shape[0]
    q = np.broadcast_to(np.asarray(noise.process_std, dtype=np.float64) ** 2,
                        (n, N_GLUCOSE_STATES))
    decay_d, var_d = _ou(noise.disturbance_std, noise.disturbance_time_min, dt_min)
    decay_v, var_v = _ou(math.sqrt(noise.cgm_drift_share) * noise.cgm_std,
                         noise.cgm_drift_time_min, dt_min)
    diag = np.concatenate([dt_min[:, np.newaxis] * q, var_d[:, np.newaxis],
                           var_v[:, np.newaxis]], axis=1)
    process_cov = diag[:, :, np.newaxis] * np.eye(N_GLUCOSE_TWIN_STATES)
    tau_s = params.sensor_delay
    ramp_gi = (dt_min + tau_s * np.expm1(-dt_min / tau_s))[:, np.newaxis]  # (n, 1)
    ramp_g = dt_min[:, np.newaxis]

    # Insulin goes into S1 here, negative too (less than the model's basal was delivered,
    # e.g. a lowered basal rate), which `glucose_dynamics` would count as zero.
    insulin = u[:, GlucoseInput.INSULIN][:, np.newaxis]
    u_carbs = u.copy()
    u_carbs[:, GlucoseInput.INSULIN] = 0.0

    def transition(points: FloatArray) -> FloatArray:
        out = np.empty_like(points)
        x = np.array(points[..., :N_GLUCOSE_STATES])
        x[..., GlucoseState.S1] = np.maximum(x[..., GlucoseState.S1] + insulin, 0.0)
        out[..., :N_GLUCOSE_STATES] = glucose_dynamics(x, u_carbs, params, dt_min)
        d = points[..., GlucoseTwinState.D]
        for row, ramp in ((GlucoseState.G, ramp_g), (GlucoseState.GI, ramp_gi)):
            out[..., row] = np.clip(out[..., row] + ramp * d, _STATE_MIN[row], _STATE_MAX[row])
        out[..., GlucoseTwinState.D] = decay_d[:, np.newaxis] * d
        out[..., GlucoseTwinState.V] = decay_v[:, np.newaxis] * points[..., GlucoseTwinState.V]
        return out

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
    of the model's basal infusion, see `medtwin.physiology.basal_infusion_rate`; negative
    where less was delivered, taken out of the first subcutaneous depot, kept >= 0); `cgm`
    (n,) in mg/dL is read at its end where `observed` (n,) is true and finite. Patients without a
    reading only predict (their uncertainty grows). Means are clipped to the model's
    physiological bounds. Pure: the same arguments give the same result.
    """
    n = state.mean.shape[0]
    p = broadcast_glucose_params(params, n)
    state = _augmented(state, noise)
    dt = np.broadcast_to(np.asarray(dt_min, dtype=np.float64), (n,))
    predicted = _predict(p, noise, state, dt, _inputs(n, carbs_g, insulin_u), ukf)

    y = np.asarray(cgm, dtype=np.float64).reshape(n, 1)
    seen = (np.asarray(observed, dtype=bool).reshape(n) & np.isfinite(y[:, 0]))[:, np.newaxis]
    white = (1.0 - noise.cgm_drift_share) * float(noise.cgm_std) ** 2
    noise_cov = np.full((n, 1, 1), white)

    def observe(points: FloatArray) -> FloatArray:
        cgm = (glucose_observation(points[..., :N_GLUCOSE_STATES], p)
               + points[..., GlucoseTwinState.V])
        return cgm[..., np.newaxis]

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
    interstitial: bool = False,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Plasma glucose `horizons_min` ahead: mean, lower and upper 95 % bounds, each (n, h).

    The forecast is of *plasma* glucose G (blood glucose, no sensor lag or sensor noise), so
    it is to be compared with a blood glucose measurement or a simulator's true BG; with
    `interstitial`, of the interstitial glucose Gi instead (what a noise-free CGM would read,
    lagging plasma by the sensor delay). The
    Gaussian is propagated through the model by the unscented transform in steps of at most
    `FORECAST_STEP_MIN`, adding the process noise of each step; the disturbance D carries
    the current unexplained trend on while it decays (`GlucoseNoise.disturbance_time_min`).
    `carbs_g` and `insulin_u` (n,), when given, are eaten/delivered now; no other input is
    assumed. Bounds are clipped to the model's glucose range.
    """
    n = state.mean.shape[0]
    p = broadcast_glucose_params(params, n)
    state = _augmented(state, noise)
    targets = np.asarray(horizons_min, dtype=np.float64)
    if targets.ndim != 1 or np.any(~np.isfinite(targets)) or np.any(targets < 0):
        raise ValueError("estimation: horizons_min must be finite non-negative minutes")
    u = _inputs(n, carbs_g, insulin_u)
    which = GlucoseState.GI if interstitial else GlucoseState.G
    order = np.argsort(targets, kind="stable")
    mean = np.empty((n, targets.size))
    var = np.empty((n, targets.size))
    current, now = state, 0.0
    for j in order:
        if targets[j] > now:  # the inputs go in with the first step actually taken
            current = _propagate(p, noise, current, u, float(targets[j]) - now, ukf)
            u = np.zeros_like(u)
            now = float(targets[j])
        mean[:, j] = current.mean[:, which]
        var[:, j] = current.cov[:, which, which]
    return _glucose_band(mean, var)


def glucose_whatif(
    params: GlucoseParams,
    state: GlucoseFilterState,
    dt_min: float,
    carbs_g: FloatArray,
    insulin_u: FloatArray,
    noise: GlucoseNoise = GlucoseNoise(),  # noqa: B008 - an immutable named tuple
    ukf: UKFParams = UKFParams(),  # noqa: B008 - an immutable named tuple
    interstitial: bool = False,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Plasma glucose (with `interstitial`, the interstitial glucose a noise-free CGM would
    read) under a given future of meals and insulin: mean, lower and upper 95 %
    bounds at the end of each step, each (n, T).

    `carbs_g` and `insulin_u` (n, T) are what is eaten and delivered at the start of each of
    T steps of `dt_min` minutes (insulin on top of the model's basal infusion, negative where
    less is delivered), e.g. a bolus scaled by 1.3, a skipped meal or a changed basal
    expressed as doses (`insulin_above_basal` of the delivered insulin, unclipped). The
    twin's Gaussian is carried through the model by the unscented transform with the
    process noise of each step, as in `glucose_forecast`.
    """
    n = state.mean.shape[0]
    p = broadcast_glucose_params(params, n)
    state = _augmented(state, noise)
    carbs = np.asarray(carbs_g, dtype=np.float64)
    insulin = np.asarray(insulin_u, dtype=np.float64)
    if carbs.shape != insulin.shape or carbs.ndim != 2 or carbs.shape[0] != n:
        raise ValueError(f"estimation: carbs_g and insulin_u must both have shape ({n}, T)")
    if not np.isfinite(dt_min) or dt_min <= 0:
        raise ValueError("estimation: dt_min must be a positive number of minutes")
    which = GlucoseState.GI if interstitial else GlucoseState.G
    steps = carbs.shape[1]
    mean = np.empty((n, steps))
    var = np.empty((n, steps))
    current = state
    for k in range(steps):
        current = _propagate(p, noise, current, _inputs(n, carbs[:, k], insulin[:, k]),
                             dt_min, ukf)
        mean[:, k] = current.mean[:, which]
        var[:, k] = current.cov[:, which, which]
    return _glucose_band(mean, var)
