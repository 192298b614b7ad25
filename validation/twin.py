"""medtwin's glucose twin on recorded cohorts, batched over patients: identification, the
filter, forecasts and what-if, and the baselines they are compared with."""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np
from cohort import DT_MIN

from medtwin.estimation import (
    PERSONALIZED_PARAMS,
    GlucoseFilterState,
    GlucoseNoise,
    Personalization,
    glucose_filter_init,
    glucose_filter_step,
    glucose_forecast,
    glucose_whatif,
    identify_glucose_params,
    insulin_above_basal,
)
from medtwin.physiology import GlucoseParams, default_glucose_params

#: Steps of the linear-extrapolation baseline's window (10 readings: the last 27 min).
LINEAR_WINDOW = 10


def identify(cgm: np.ndarray, carbs: np.ndarray, delivered: np.ndarray,
             body_weight: np.ndarray | None,
             names: tuple[str, ...] | None = None) -> tuple[Personalization, float]:
    """Identify every patient at once on (n, T) histories; the wall time (s)."""
    n = cgm.shape[0]
    prior = default_glucose_params(n)
    insulin = insulin_above_basal(delivered, prior, DT_MIN)
    t = time.perf_counter()
    result = identify_glucose_params(DT_MIN, cgm, carbs, insulin, prior,
                                     names=names or PERSONALIZED_PARAMS,
                                     body_weight=body_weight)
    return result, time.perf_counter() - t


class FilterRun(NamedTuple):
    mean: np.ndarray    # (T, n, d)
    cov: np.ndarray     # (T, n, d, d)
    seconds: float


def extra_insulin(params: GlucoseParams, delivered: np.ndarray) -> np.ndarray:
    """Delivered insulin (n, T) as the twin takes it: on top of the model's basal (negative
    where less was delivered, e.g. a lowered basal)."""
    return insulin_above_basal(delivered, params, DT_MIN)


def run_filter(params: GlucoseParams, noise: GlucoseNoise, cgm: np.ndarray, carbs: np.ndarray,
               delivered: np.ndarray, state: GlucoseFilterState | None = None) -> FilterRun:
    """The filter over (n, T) histories, one call per step for all patients: step k takes the
    inputs reported with reading k (eaten/delivered during the step) and then reading k."""
    n, t = cgm.shape
    extra = extra_insulin(params, delivered)
    state = glucose_filter_init(params, n, noise) if state is None else state
    means, covs = [], []
    dt, seen = np.full(n, DT_MIN), np.ones(n, dtype=bool)
    start = time.perf_counter()
    for k in range(t):
        state = glucose_filter_step(params, noise, state, dt, carbs[:, k], extra[:, k],
                                    cgm[:, k], seen).state
        means.append(state.mean)
        covs.append(state.cov)
    return FilterRun(np.array(means), np.array(covs), time.perf_counter() - start)


def forecasts(params: GlucoseParams, noise: GlucoseNoise, run: FilterRun, ks: np.ndarray,
              horizons_min: tuple[float, ...], interstitial: bool = False
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Twin forecasts from the states after readings `ks` (all patients in one call): mean,
    lo, hi (len(ks), n, h) of plasma glucose (of interstitial glucose with `interstitial`).
    No input after the reading is assumed."""
    n = run.mean.shape[1]
    m = ks.size
    mean = run.mean[ks].reshape(m * n, -1)
    cov = run.cov[ks].reshape(m * n, *run.cov.shape[2:])
    p = GlucoseParams(*(np.tile(f, m) for f in params))
    fc = glucose_forecast(p, GlucoseFilterState(mean, cov), horizons_min, noise=noise,
                          interstitial=interstitial)
    return tuple(x.reshape(m, n, -1) for x in fc)  # type: ignore[return-value]


def linear_extrapolation(cgm: np.ndarray, ks: np.ndarray, ahead_steps: int) -> np.ndarray:
    """Least-squares line through the last `LINEAR_WINDOW` readings (n, T), extrapolated
    `ahead_steps` past each reading in `ks`: (len(ks), n)."""
    x = np.arange(-LINEAR_WINDOW + 1, 1, dtype=float)
    xc = x - x.mean()
    win = np.stack([cgm[:, ks + j] for j in range(-LINEAR_WINDOW + 1, 1)], axis=-1)  # n,m,w
    slope = (win - win.mean(axis=-1, keepdims=True)) @ xc / (xc @ xc)
    level = win.mean(axis=-1) + slope * (0.0 - x.mean())
    return np.asarray((level + slope * ahead_steps).T)


def whatif(params: GlucoseParams, noise: GlucoseNoise, state: GlucoseFilterState,
           carbs: np.ndarray, delivered: np.ndarray) -> tuple[np.ndarray, ...]:
    """Open-loop plasma glucose (n, T) under given carbs and delivered insulin (n, T)."""
    return glucose_whatif(params, state, DT_MIN, carbs, extra_insulin(params, delivered),
                          noise=noise)


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def mard(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Mean absolute relative difference (%) of `estimate` against `truth`."""
    return float(100.0 * np.mean(np.abs(estimate - truth) / truth))


def time_in_range(g: np.ndarray) -> float:
    """Share (%) of values in 70–180 mg/dL."""
    return float(100.0 * np.mean((g >= 70.0) & (g <= 180.0)))


#: Two-sided 95 % quantile of the standard normal distribution.
Z95 = 1.959963984540054
