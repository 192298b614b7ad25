"""The vitals twin: a batched UKF on the cardiorespiratory model, and its forecasts.

Pure functions over N patients at once (no per-patient loop): `vitals_filter_init` starts
each patient on its circadian baseline, `vitals_filter_step` predicts with
`medtwin.physiology.vitals_dynamics` over an irregular step (process noise of each state
that of an exact Ornstein–Uhlenbeck fluctuation: it grows with the step but saturates, so a
long gap does not make the twin believe anything is possible) and conditions on whichever
of the six vital channels each patient has at the step's end (any subset: BP every 30 min,
SpO2 dropping out, ...); `vitals_forecast` carries the Gaussian through the model by the
unscented transform and returns each channel's true value with a 95 % interval.

Shapes: n patients, d = 7 states in `VitalsModelState` order, m = 6 channels in
`VITALS_OBSERVED_CHANNELS` order (HR, SpO2, RR, SBP, DBP, temperature); params fields (n,).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from medtwin.domain import POSSIBLE_MAX, POSSIBLE_MIN
from medtwin.estimation._glucose_twin import Z_95
from medtwin.estimation._ukf import UKFParams, sigma_points, sigma_weights, ukf_predict, ukf_update
from medtwin.physiology import (
    N_VITALS_INPUTS,
    N_VITALS_STATES,
    VITALS_OBSERVED_CHANNELS,
    VITALS_STATE_MAX,
    VITALS_STATE_MIN,
    VitalsModelParams,
    broadcast_vitals_params,
    vitals_baseline,
    vitals_dynamics,
    vitals_observation,
)

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: Number of measured vital channels.
N_VITALS_CHANNELS = len(VITALS_OBSERVED_CHANNELS)
#: Longest step (min) of the unscented propagation in `vitals_forecast`; the process noise
#: is exact over any step, this only bounds how long the Gaussian goes without being
#: re-approximated (the coupled model is mildly nonlinear: saturation curve, bounds).
VITALS_FORECAST_STEP_MIN = 15.0
_TIME_FIELDS = ("heart_rate_time", "resp_rate_time", "pao2_time", "map_time",
                "pulse_pressure_time", "temperature_time", "stress_time")
_CHANNEL_MIN = POSSIBLE_MIN[[int(c) for c in VITALS_OBSERVED_CHANNELS]]
_CHANNEL_MAX = POSSIBLE_MAX[[int(c) for c in VITALS_OBSERVED_CHANNELS]]


class VitalsNoise(NamedTuple):
    """Noise of the vitals twin, as standard deviations.

    `stationary_std` ((d,) or (n, d), state units): the spread of each state's unexplained
    fluctuation around what the model predicts, an OU process with the state's time
    constant, so over a step dt the variance added is `std^2 (1 - e^{-2 dt / tau})`.
    Defaults: heart rate 4 /min, breathing 1.5 /min, PaO2 8 mmHg, MAP 5 and pulse pressure
    4 mmHg (the minute-to-minute variability of resting adults; cf. `medtwin.sim`'s 3 /min,
    1 /min, 4 and 3 mmHg, widened for activity and posture), temperature 0.15 °C, stress
    0.3 (a third of a sepsis-like deterioration within its 6-h time constant: how the
    twin follows a deterioration it was not told of).

    `measurement_std` ((m,) or (n, m), channel units), per channel: heart rate 3 /min
    (ECG/oximeter pulse rate accuracy, ±3 /min, plus motion); SpO2 1.5 % (ISO 80601-2-61
    allows an Arms of 4 % over 70–100 %; good sensors reach ~1.5–2 % near normal, and
    readings are integers); respiratory rate 2 /min (impedance pneumography and manual
    counts disagree by a few breaths); SBP and DBP 6 mmHg (ISO 81060-2 validates cuffs at a
    mean error within 5 mmHg and an SD within 8 mmHg); temperature 0.15 °C (clinical
    thermometers ±0.1–0.2 °C, plus the 0.1 °C display step).
    """

    stationary_std: FloatArray | tuple[float, ...] = (4.0, 1.5, 8.0, 5.0, 4.0, 0.15, 0.3)
    measurement_std: FloatArray | tuple[float, ...] = (3.0, 1.5, 2.0, 6.0, 6.0, 0.15)


class VitalsFilterState(NamedTuple):
    """Each patient's Gaussian belief: `mean` (n, d) and `cov` (n, d, d), `VitalsModelState`
    order."""

    mean: FloatArray
    cov: FloatArray


class VitalsFilterStep(NamedTuple):
    """One filter step per patient: the new `state`; per channel the `innovation` (n, m)
    (reading minus prediction) and its variance `innovation_var` (n, m), both NaN where the
    channel was not read; the Gaussian log-likelihood `loglik` (n,) of the readings taken
    (0 for a patient without any)."""

    state: VitalsFilterState
    innovation: FloatArray
    innovation_var: FloatArray
    loglik: FloatArray


def _clip_mean(mean: FloatArray) -> FloatArray:
    return np.asarray(np.clip(mean, VITALS_STATE_MIN, VITALS_STATE_MAX), dtype=np.float64)


def vitals_filter_init(params: VitalsModelParams, n: int,
                       time_of_day_min: FloatArray | float = 0.0) -> VitalsFilterState:
    """n patients on their circadian baseline at `time_of_day_min` (scalar or (n,)), with a
    wide prior: twice `VitalsNoise()`'s stationary spread for the vitals, 0.3 for the stress
    (the first readings pin the vitals down within a few steps)."""
    p = broadcast_vitals_params(params, n)
    mean = vitals_baseline(p, time_of_day_min)
    std = np.array(VitalsNoise().stationary_std, dtype=np.float64) * 2.0
    std[-1] = 0.3
    cov = np.broadcast_to(np.diag(std**2), (n, N_VITALS_STATES, N_VITALS_STATES)).copy()
    return VitalsFilterState(mean, cov)


def _noise_rows(value: FloatArray | tuple[float, ...], n: int, k: int, name: str) -> FloatArray:
    """A noise field as (n, k)."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape not in ((k,), (n, k)):
        raise ValueError(f"estimation: {name} must have shape ({k},) or ({n}, {k})")
    return np.broadcast_to(arr, (n, k))


def _inputs(n: int, u: FloatArray | None) -> FloatArray | None:
    if u is None:
        return None
    arr = np.nan_to_num(np.asarray(u, dtype=np.float64))
    if arr.shape != (n, N_VITALS_INPUTS):
        raise ValueError(f"estimation: u must have shape ({n}, {N_VITALS_INPUTS})")
    return arr


def _predict(params: VitalsModelParams, noise: VitalsNoise, state: VitalsFilterState,
             dt_min: FloatArray, start_min: FloatArray, u: FloatArray | None,
             ukf: UKFParams) -> VitalsFilterState:
    """The unscented prediction over `dt_min` (n,) from time of day `start_min` (n,)."""
    n = state.mean.shape[0]
    std = _noise_rows(noise.stationary_std, n, N_VITALS_STATES, "stationary_std")
    tau = np.stack([getattr(params, f) for f in _TIME_FIELDS], axis=-1)
    var = std**2 * -np.expm1(-2.0 * dt_min[:, np.newaxis] / tau)
    process_cov = var[:, :, np.newaxis] * np.eye(N_VITALS_STATES)

    def transition(points: FloatArray) -> FloatArray:
        return vitals_dynamics(points, u, params, dt_min, start_min)

    mean, cov = ukf_predict(ukf, state.mean, state.cov, transition, process_cov)
    return VitalsFilterState(_clip_mean(mean), cov)


def vitals_filter_step(
    params: VitalsModelParams,
    noise: VitalsNoise,
    state: VitalsFilterState,
    dt_min: FloatArray | float,
    time_of_day_min: FloatArray | float,
    measured: FloatArray,
    observed: BoolArray,
    u: FloatArray | None = None,
    ukf: UKFParams = UKFParams(),  # noqa: B008 - an immutable named tuple
) -> VitalsFilterStep:
    """Advance every patient by `dt_min` ((n,) or scalar) minutes and condition on the
    readings taken at its end.

    `time_of_day_min` ((n,) or scalar) is the local time of day of the readings (the end
    of the step, min after midnight); `measured` (n, m) in channel units, in
    `VITALS_OBSERVED_CHANNELS` order, counts where `observed` (n, m) is true and the value
    finite; `u` (n, n_inputs), if given, is held over the step (`VitalsInput`). A patient
    without a reading only predicts (its uncertainty grows). Means are clipped to the
    model's physiological bounds. Pure: the same arguments give the same result.
    """
    n = state.mean.shape[0]
    m = N_VITALS_CHANNELS
    p = broadcast_vitals_params(params, n)
    dt = np.broadcast_to(np.asarray(dt_min, dtype=np.float64), (n,))
    end = np.broadcast_to(np.asarray(time_of_day_min, dtype=np.float64), (n,))
    predicted = _predict(p, noise, state, dt, end - dt, _inputs(n, u), ukf)

    y = np.asarray(measured, dtype=np.float64)
    mask = np.asarray(observed, dtype=bool)
    if y.shape != (n, m) or mask.shape != (n, m):
        raise ValueError(f"estimation: measured and observed must have shape ({n}, {m})")
    seen = mask & np.isfinite(y)
    r = _noise_rows(noise.measurement_std, n, m, "measurement_std") ** 2
    noise_cov = r[:, :, np.newaxis] * np.eye(m)

    def observe(points: FloatArray) -> FloatArray:
        return vitals_observation(points, p)

    upd = ukf_update(ukf, predicted.mean, predicted.cov, observe, y, noise_cov, seen)
    return VitalsFilterStep(
        VitalsFilterState(_clip_mean(upd.mean), upd.cov),
        np.where(seen, upd.innovation, np.nan),
        np.where(seen, np.diagonal(upd.innovation_cov, axis1=-2, axis2=-1), np.nan),
        upd.loglik,
    )


def _channel_moments(params: VitalsModelParams, state: VitalsFilterState,
                     ukf: UKFParams) -> tuple[FloatArray, FloatArray]:
    """Mean and variance (n, m) of each channel's true value under the state's Gaussian."""
    wm, wc, _ = sigma_weights(ukf, N_VITALS_STATES)
    values = vitals_observation(sigma_points(ukf, state.mean, state.cov), params)
    mean = np.einsum("s,nsm->nm", wm, values)
    var = np.einsum("s,nsm->nm", wc, (values - mean[:, np.newaxis, :]) ** 2)
    return np.asarray(mean, dtype=np.float64), np.asarray(var, dtype=np.float64)


def vitals_forecast(
    params: VitalsModelParams,
    state: VitalsFilterState,
    time_of_day_min: FloatArray | float,
    horizons_min: Sequence[float] = (30.0, 60.0),
    u: FloatArray | None = None,
    noise: VitalsNoise = VitalsNoise(),  # noqa: B008 - an immutable named tuple
    ukf: UKFParams = UKFParams(),  # noqa: B008 - an immutable named tuple
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Each channel `horizons_min` after `time_of_day_min` (the state's time, (n,) or
    scalar): mean, lower and upper 95 % bounds, each (n, h, m).

    The forecast is of the vitals' true values (no measurement noise), to be compared with
    a simulator's truth or a reference measurement. The Gaussian is propagated through the
    model by the unscented transform in steps of at most `VITALS_FORECAST_STEP_MIN`, adding
    each step's process noise; `u` (n, n_inputs), when given, is held throughout. Bounds
    are clipped to each channel's possible range.
    """
    n = state.mean.shape[0]
    p = broadcast_vitals_params(params, n)
    targets = np.asarray(horizons_min, dtype=np.float64)
    if targets.ndim != 1 or np.any(~np.isfinite(targets)) or np.any(targets < 0):
        raise ValueError("estimation: horizons_min must be finite non-negative minutes")
    inputs = _inputs(n, u)
    now = np.broadcast_to(np.asarray(time_of_day_min, dtype=np.float64), (n,)).copy()
    mean = np.empty((n, targets.size, N_VITALS_CHANNELS))
    var = np.empty_like(mean)
    current, elapsed = state, 0.0
    for j in np.argsort(targets, kind="stable"):
        while elapsed < targets[j]:
            remaining = float(targets[j]) - elapsed
            h = min(VITALS_FORECAST_STEP_MIN, remaining)
            current = _predict(p, noise, current, np.full(n, h), now, inputs, ukf)
            now = now + h
            elapsed = float(targets[j]) if h >= remaining else elapsed + h
        mean[:, j], var[:, j] = _channel_moments(p, current, ukf)
    half = Z_95 * np.sqrt(np.maximum(var, 0.0))
    return (mean, np.clip(mean - half, _CHANNEL_MIN, _CHANNEL_MAX),
            np.clip(mean + half, _CHANNEL_MIN, _CHANNEL_MAX))
