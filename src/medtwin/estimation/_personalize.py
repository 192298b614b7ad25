"""Personalization: identify each patient's glucose-model parameters from their history.

MAP estimation by simulation-error least squares, batched over patients, as pure functions.

What is identified (`PERSONALIZED_PARAMS`, in log space):

- insulin sensitivity SI: sets how far a unit of insulin moves glucose; it varies several-fold
  between people (and absorbs a wrong insulin volume or body weight, since a bolus acts
  through SI / (VI BW));
- basal insulin Ib: the plasma insulin at which glucose rests at Gb, equivalently the basal
  infusion `basal_infusion_rate` the model assumes. Given the insulin actually delivered it
  sets the fasting glucose level (together with SI): a pump basal above the model's drives
  glucose down all day, one below it up. (With inputs given *on top of* the candidate's own
  basal Ib would cancel out of the dynamics; it is identifiable because the inputs are
  re-expressed per candidate, see below.)
- carbohydrate bioavailability f: sets how far a gram of carbohydrate moves glucose (and
  absorbs a wrong glucose volume or body weight, through f / (VG BW)); capped at 1;
- carbohydrate absorption time tau_D: when a meal's glucose appears. Mixed meals are
  absorbed more slowly than the 40-min default (simglucose's UVA/Padova patients fit 50–75
  min), and a wrong tau_D is otherwise absorbed by a wrong f and SI.

The first three set the gains of the three things in a T1D history (meals, boluses, basal);
of the timing parameters only tau_D improves the twin measurably on simglucose (tau_I and
p2 are poorly separable from the gains with CGM alone; see docs/validation.md). Other
fields (`SUPPORTED_PARAMS`) may be chosen with `names`. A known body weight
(`body_weight`) scales the model's volumes and basal, so SI and f keep per-kilogram priors.

Objective, per patient and candidate θ (the negative log posterior, up to a constant)::

    L(θ) = sum_k w (Gi_θ(t_k) - cgm_k)^2 / (2 sigma^2) + sum_j (log θ_j - log θ0_j)^2 / (2 s_j^2)

- `Gi_θ` is the model's interstitial glucose simulated *open loop* over the whole history
  from a steady state fitted to the first CGM value: G = Gi = that value, the subcutaneous
  and plasma insulin and X at equilibrium under the delivered basal (the candidate's own
  basal plus the median extra insulin rate over the first hour), empty gut.
- sigma = `SIM_ERROR_STD` = 20 mg/dL: the spread of simulation error (model mismatch plus
  sensor noise) over a day; w = dt / `SIM_ERROR_CORRELATION_MIN` (30 min) counts each
  residual as a fraction of an independent one, since simulation errors are correlated over
  about half an hour (without it a day of 5-min readings would swamp any prior).
- log-normal prior around `prior` (default `default_glucose_params`) with log-standard
  deviations `PRIOR_LOG_STD`: 0.5 for SI and Ib (a factor 1.65 per sd), 0.3 for f and tau_D.
- Missing CGM (NaN) adds nothing.

Search (derivative-free, every patient and candidate in one batch of n x C through
`glucose_dynamics`, looping only over time steps and rounds): a coarse log-grid of
`COARSE_POINTS` per parameter over `LOG_BOUNDS`, then `REFINE_ROUNDS` rounds of a 5-point
per-parameter grid (3-point, `REFINE_ROUNDS_LARGE` rounds, for more than
`SMALL_SEARCH_MAX` parameters) around each patient's best so far, its spacing shrunk by
`REFINE_SHRINK` per round and jittered by a shared seeded offset (the same for every patient,
so a patient's result never depends on the batch). The best candidate evaluated is returned.

Uncertainty: a quadratic fitted to L on a 3-point-per-parameter grid (log step
`CURVATURE_STEP`) around the optimum gives the Hessian H; `uncertainty` is
sqrt(diag(H^-1)), the Laplace approximation of the posterior standard deviation of each
log-parameter (≈ its relative standard deviation: 0.1 means about ±10 %). H's eigenvalues
are floored at the prior's smallest precision, so no spread exceeds the widest prior's.

Inputs: regular grid, inputs at the *start* of each step, CGM read at its *end*; insulin is
given on top of the *prior's* basal infusion (see `insulin_above_basal`), and may be
negative where less than that basal was delivered; for each candidate it is re-expressed on
top of the candidate's basal, `insulin_u + (u_b(prior) - u_b(θ)) dt`, and added to the first
subcutaneous compartment at each step even where negative (less than the candidate's basal;
the compartment is kept >= 0), which `glucose_dynamics` itself would treat as zero. (Had
negative inputs been dropped, every Ib above the true one would fit as well as the truth.)
The glucose twin (`glucose_filter_step`, `glucose_whatif`) takes them the same way, negative
too: with the identified params, convert as `insulin_above_basal(delivered, params, dt)`
(`glucose_dynamics` itself counts negative inputs as zero). Re-identify as data accumulate by
calling again on the longer history (optionally with the last result as `prior`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from medtwin.physiology import (
    N_GLUCOSE_INPUTS,
    GlucoseInput,
    GlucoseParams,
    GlucoseState,
    basal_infusion_rate,
    broadcast_glucose_params,
    default_glucose_params,
    glucose_dynamics,
    steady_state,
)

FloatArray = npt.NDArray[np.float64]

#: The parameters identified by default (fields of `GlucoseParams`).
PERSONALIZED_PARAMS: tuple[str, ...] = (
    "insulin_sensitivity",
    "basal_insulin",
    "carb_bioavailability",
    "carb_absorption_time",
)
#: Log-standard deviation of the log-normal prior of each identifiable parameter.
PRIOR_LOG_STD: dict[str, float] = {
    "insulin_sensitivity": 0.5,
    "basal_insulin": 0.5,
    "carb_bioavailability": 0.3,
    "carb_absorption_time": 0.3,
    "body_weight": 0.3,
    "basal_glucose": 0.2,
    "insulin_absorption_time": 0.3,
    "insulin_action_rate": 0.5,
}
#: Search range of each identifiable parameter as log-ratios to the prior (lower, upper).
LOG_BOUNDS: dict[str, tuple[float, float]] = {
    "insulin_sensitivity": (math.log(0.125), math.log(4.0)),
    "basal_insulin": (math.log(1 / 3), math.log(3.0)),
    "carb_bioavailability": (math.log(0.25), math.log(1.25)),
    "carb_absorption_time": (math.log(0.4), math.log(2.5)),
    "body_weight": (math.log(0.5), math.log(2.0)),
    "basal_glucose": (math.log(0.6), math.log(1.6)),
    "insulin_absorption_time": (math.log(0.5), math.log(2.0)),
    "insulin_action_rate": (math.log(0.25), math.log(4.0)),
}
#: The parameters `names` may choose from.
SUPPORTED_PARAMS: tuple[str, ...] = tuple(PRIOR_LOG_STD)
#: Absolute upper bounds of parameters (bioavailability is a fraction).
_UPPER: dict[str, float] = {"carb_bioavailability": 1.0}
#: Standard deviation of simulation error (mg/dL) in the likelihood.
SIM_ERROR_STD = 20.0
#: Correlation time of simulation error (min): each residual weighs dt / this.
SIM_ERROR_CORRELATION_MIN = 30.0
#: Points per parameter of the coarse grid.
COARSE_POINTS = 7
#: With more than `SMALL_SEARCH_MAX` parameters the local grids have 3 points per parameter
#: instead of 5 (the cost grows as points^k: 81 instead of 625 for 4), with
#: `REFINE_ROUNDS_LARGE` rounds to make up for it.
SMALL_SEARCH_MAX = 3
REFINE_ROUNDS_LARGE = 6
#: Rounds of local refinement, and the factor the spacing shrinks by each round.
REFINE_ROUNDS = 4
REFINE_SHRINK = 0.4
#: Log step of the grid the curvature (uncertainty) is fitted on.
CURVATURE_STEP = 0.05
#: Window (min) over which the initial extra basal rate is taken (as a median).
_INITIAL_WINDOW_MIN = 60.0


class Personalization(NamedTuple):
    """Identified parameters of n patients.

    `params`: the prior with the identified fields replaced (each (n,)); `loss` (n,): the
    MAP objective L at them (see the module docstring); `uncertainty` (n, k): the Laplace
    posterior standard deviation of each identified log-parameter, in `names` order (a
    relative spread: 0.1 ≈ ±10 %); `names`: the identified fields.
    """

    params: GlucoseParams
    loss: FloatArray
    uncertainty: FloatArray
    names: tuple[str, ...]


def insulin_above_basal(
    delivered_u: FloatArray, params: GlucoseParams, dt_min: FloatArray | float
) -> FloatArray:
    """Delivered insulin (n, T) per step (U: pump basal plus boluses) minus the basal
    infusion `params` assume over each step (`basal_infusion_rate` x dt), unclipped.

    This is the `insulin_u` `identify_glucose_params` expects (with `params` = its prior).
    For `glucose_filter_step` and `glucose_whatif`, convert with the params in use (for
    `glucose_dynamics`, clip at 0: it counts negative inputs as zero).
    """
    d = np.asarray(delivered_u, dtype=np.float64)
    dt = np.asarray(dt_min, dtype=np.float64)
    dt_col = dt[:, np.newaxis] if dt.ndim == 1 else dt
    return np.asarray(d - basal_infusion_rate(params)[:, np.newaxis] * dt_col, dtype=np.float64)


class _History(NamedTuple):
    dt: FloatArray  # (n,)
    cgm: FloatArray  # (n, T)
    carbs: FloatArray  # (n, T)
    insulin: FloatArray  # (n, T)


def _history(
    dt_min: FloatArray | float, cgm: FloatArray, carbs_g: FloatArray, insulin_u: FloatArray
) -> _History:
    y = np.atleast_2d(np.asarray(cgm, dtype=np.float64))
    n, t = y.shape
    c = np.nan_to_num(np.asarray(carbs_g, dtype=np.float64))
    i = np.nan_to_num(np.asarray(insulin_u, dtype=np.float64))
    if c.shape != (n, t) or i.shape != (n, t):
        raise ValueError(f"estimation: cgm, carbs_g and insulin_u must all have shape ({n}, T)")
    dt = np.broadcast_to(np.asarray(dt_min, dtype=np.float64), (n,)).copy()
    if not np.all(np.isfinite(dt) & (dt > 0)):
        raise ValueError("estimation: dt_min must be finite and positive")
    if not np.all(np.isfinite(y).any(axis=1)):
        raise ValueError("estimation: every patient needs at least one CGM reading")
    return _History(dt, y, c, i)


def _check_names(names: Sequence[str]) -> tuple[str, ...]:
    out = tuple(names)
    bad = [m for m in out if m not in SUPPORTED_PARAMS]
    if bad or not out or len(set(out)) != len(out):
        raise ValueError(f"estimation: names must be distinct, from {SUPPORTED_PARAMS}")
    return out


def _tile(params: GlucoseParams, c: int) -> GlucoseParams:
    """Fields (n,) -> (n * c,), patient-major (each patient's c candidates together)."""
    return GlucoseParams(*(np.repeat(np.asarray(f, dtype=np.float64), c) for f in params))


def _candidates(prior: GlucoseParams, names: tuple[str, ...], z: FloatArray) -> GlucoseParams:
    """Params (n * c,) for log-ratio offsets `z` (n, c, k) to the prior."""
    n, c, _ = z.shape
    p = _tile(prior, c)
    changes = {}
    for j, name in enumerate(names):
        value = np.asarray(getattr(p, name)) * np.exp(z[:, :, j].reshape(n * c))
        changes[name] = np.minimum(value, _UPPER.get(name, np.inf))
    return p._replace(**changes)


def _simulation_loss(
    prior: GlucoseParams, names: tuple[str, ...], z: FloatArray, h: _History
) -> FloatArray:
    """The objective L (n, c) at log-offsets `z` (n, c, k): all n * c simulated at once."""
    n, c, _ = z.shape
    p = _candidates(prior, names, z)
    dt = np.repeat(h.dt, c)
    extra_basal = (basal_infusion_rate(_tile(prior, c)) - basal_infusion_rate(p)) * dt
    insulin = np.repeat(h.insulin, c, axis=0) + extra_basal[:, np.newaxis]  # (n c, T)
    carbs = np.repeat(h.carbs, c, axis=0)
    y = np.repeat(h.cgm, c, axis=0)
    t = y.shape[1]

    # Initial state: steady state at the first CGM value under the delivered basal.
    first = y[np.arange(n * c), np.argmax(np.isfinite(y), axis=1)]
    early = np.arange(t) * dt[:, np.newaxis] < _INITIAL_WINDOW_MIN  # each patient's own hour
    rate = np.nanmedian(np.where(early, insulin, np.nan), axis=1) / dt  # U/min above basal
    x = steady_state(p)
    x[:, GlucoseState.G] = x[:, GlucoseState.GI] = first
    u_total = np.maximum(basal_infusion_rate(p) + rate, 0.0)
    x[:, GlucoseState.S1] = x[:, GlucoseState.S2] = u_total * p.insulin_absorption_time
    i_eq = 1000.0 * u_total / (p.insulin_clearance * p.insulin_volume * p.body_weight)
    x[:, GlucoseState.I] = i_eq
    x[:, GlucoseState.X] = p.insulin_sensitivity * (i_eq - p.basal_insulin)

    u = np.zeros((n * c, N_GLUCOSE_INPUTS))
    sse = np.zeros(n * c)
    for k in range(t):
        # Insulin goes straight into S1, negative too (less than the candidate's basal was
        # delivered): `glucose_dynamics` would count a negative input as zero.
        x[:, GlucoseState.S1] = np.maximum(x[:, GlucoseState.S1] + insulin[:, k], 0.0)
        u[:, GlucoseInput.CARBS] = carbs[:, k]
        x = glucose_dynamics(x, u, p, dt)
        r = x[:, GlucoseState.GI] - y[:, k]
        sse += np.where(np.isfinite(r), r * r, 0.0)
    weight = dt / SIM_ERROR_CORRELATION_MIN
    s = np.array([PRIOR_LOG_STD[m] for m in names])
    prior_term = 0.5 * np.sum((z / s) ** 2, axis=-1)
    return np.asarray(
        (weight * sse).reshape(n, c) / (2.0 * SIM_ERROR_STD**2) + prior_term, dtype=np.float64
    )


def _grid(points: int, k: int) -> FloatArray:
    """All combinations (points^k, k) of `points` equally spaced values in [-1, 1]."""
    axis = np.linspace(-1.0, 1.0, points)
    return np.array(list(itertools.product(axis, repeat=k)), dtype=np.float64).reshape(-1, k)


def _prepare(
    dt_min: FloatArray | float,
    cgm: FloatArray,
    carbs_g: FloatArray,
    insulin_u: FloatArray,
    prior: GlucoseParams | None,
    names: Sequence[str],
    body_weight: FloatArray | float | None = None,
) -> tuple[_History, GlucoseParams, tuple[str, ...]]:
    h = _history(dt_min, cgm, carbs_g, insulin_u)
    n = h.cgm.shape[0]
    p = broadcast_glucose_params(default_glucose_params(n) if prior is None else prior, n)
    if body_weight is not None:
        bw = np.broadcast_to(np.asarray(body_weight, dtype=np.float64), (n,)).copy()
        if not np.all(np.isfinite(bw) & (bw > 0)):
            raise ValueError("estimation: body_weight must be finite and positive (kg)")
        weighed = p._replace(body_weight=bw)
        # insulin_u is on top of the given prior's basal: re-express it on top of this one's.
        shift = (basal_infusion_rate(p) - basal_infusion_rate(weighed)) * h.dt
        h = h._replace(insulin=h.insulin + shift[:, np.newaxis])
        p = weighed
    return h, p, _check_names(names)


def personalization_loss(
    params: GlucoseParams,
    dt_min: FloatArray | float,
    cgm: FloatArray,
    carbs_g: FloatArray,
    insulin_u: FloatArray,
    prior: GlucoseParams | None = None,
    names: Sequence[str] = PERSONALIZED_PARAMS,
    body_weight: FloatArray | float | None = None,
) -> FloatArray:
    """The MAP objective L (n,) of `params` on a history (arguments as in
    `identify_glucose_params`); only the `names` fields of `params` are used, the rest come
    from `prior`."""
    h, p, nm = _prepare(dt_min, cgm, carbs_g, insulin_u, prior, names, body_weight)
    theta = np.stack([np.asarray(getattr(params, m), dtype=np.float64) for m in nm], axis=-1)
    prior_theta = np.stack([getattr(p, m) for m in nm], axis=-1)
    z = np.log(np.broadcast_to(theta, prior_theta.shape) / prior_theta)[:, np.newaxis, :]
    return _simulation_loss(p, nm, z, h)[:, 0]


def identify_glucose_params(
    dt_min: FloatArray | float,
    cgm: FloatArray,
    carbs_g: FloatArray,
    insulin_u: FloatArray,
    prior: GlucoseParams | None = None,
    names: Sequence[str] = PERSONALIZED_PARAMS,
    random_state: int | np.random.Generator | None = 0,
    body_weight: FloatArray | float | None = None,
) -> Personalization:
    """Identify each patient's parameters from a history on a regular grid (MAP, see the
    module docstring).

    Shapes (n patients, T steps): `dt_min` the step (min), a scalar or (n,); `carbs_g` (n, T)
    eaten and `insulin_u` (n, T) delivered at the *start* of each step, the latter on top of
    the prior's basal infusion (`insulin_above_basal(delivered, prior, dt_min)`; negative
    where less was delivered; NaN counts as 0); `cgm` (n, T) mg/dL read at the *end* of each
    step, NaN where missing (each patient needs one reading). `prior`: the centre of the
    log-normal prior and the values of every field not identified (default
    `default_glucose_params(n)`); fields (n,) or (1,). `names`: the fields to identify
    (default `PERSONALIZED_PARAMS`). `random_state` seeds the jitter of the refinement grid
    (shared by all patients, so a patient's result does not depend on the batch).
    `body_weight` (kg, scalar or (n,)), when known, replaces the prior's (`insulin_u` stays
    relative to `prior` as given; it is re-expressed internally): the model's
    distribution volumes and basal infusion scale with it, so SI and f stay near their
    per-kilogram priors (a 102 kg patient needs no 70 kg patient's low SI).
    """
    h, p, nm = _prepare(dt_min, cgm, carbs_g, insulin_u, prior, names, body_weight)
    n, k = h.cgm.shape[0], len(nm)
    rng = np.random.default_rng(random_state)
    lo = np.array([LOG_BOUNDS[m][0] for m in nm])
    hi = np.array([LOG_BOUNDS[m][1] for m in nm])
    for j, m in enumerate(nm):  # absolute caps, as log-ratios to the smallest prior value
        if m in _UPPER:
            hi[j] = min(hi[j], math.log(_UPPER[m] / float(np.min(getattr(p, m)))))
    centre, half = 0.5 * (lo + hi), 0.5 * (hi - lo)

    # Coarse grid (the same for everyone), then local grids around each patient's best.
    small = k <= SMALL_SEARCH_MAX
    coarse = COARSE_POINTS
    z = np.broadcast_to(centre + half * _grid(coarse, k), (n, coarse**k, k))
    loss = _simulation_loss(p, nm, z, h)
    pick = np.argmin(loss, axis=1)
    best_z, best_loss = z[np.arange(n), pick], loss[np.arange(n), pick]
    spacing = 2.0 * half / (coarse - 1)
    local = _grid(5 if small else 3, k)
    for _ in range(REFINE_ROUNDS if small else REFINE_ROUNDS_LARGE):
        jitter = rng.uniform(-0.25, 0.25, local.shape) * spacing
        offsets = local * spacing + jitter
        offsets[np.all(local == 0.0, axis=1)] = 0.0  # keep the incumbent itself
        z = np.clip(best_z[:, np.newaxis, :] + offsets, lo, hi)
        loss = _simulation_loss(p, nm, z, h)
        pick = np.argmin(loss, axis=1)
        better = loss[np.arange(n), pick] < best_loss
        best_z = np.where(better[:, np.newaxis], z[np.arange(n), pick], best_z)
        best_loss = np.where(better, loss[np.arange(n), pick], best_loss)
        spacing = spacing * REFINE_SHRINK

    # Curvature: a quadratic fitted on a 3^k grid around the optimum (shared design matrix).
    unit = _grid(3, k)
    d = CURVATURE_STEP * unit
    pairs = [(a, b) for a in range(k) for b in range(a, k)]
    design = np.column_stack(
        [np.ones(len(d)), d] + [d[:, a] * d[:, b] * (0.5 if a == b else 1.0) for a, b in pairs]
    )
    loss = _simulation_loss(p, nm, best_z[:, np.newaxis, :] + d, h)  # no clipping: local fit
    coef = np.linalg.lstsq(design, loss.T, rcond=None)[0]  # (1 + k + pairs, n)
    hess = np.zeros((n, k, k))
    for col, (a, b) in enumerate(pairs, start=1 + k):
        hess[:, a, b] = hess[:, b, a] = coef[col]
    floor = 1.0 / max(PRIOR_LOG_STD[m] for m in nm) ** 2
    w, v = np.linalg.eigh(hess)
    cov = np.einsum("nij,nj,nkj->nik", v, 1.0 / np.maximum(w, floor), v)
    uncertainty = np.sqrt(np.diagonal(cov, axis1=1, axis2=2))

    best = _candidates(p, nm, best_z[:, np.newaxis, :])
    return Personalization(best, best_loss, np.asarray(uncertainty, dtype=np.float64), nm)
