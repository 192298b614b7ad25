"""Glucose–insulin model for type 1 diabetes, vectorized over patients (and sigma points).

Bergman's minimal model (Bergman et al. 1979, Am J Physiol 236:E667) with a two-compartment
gut and a two-compartment subcutaneous insulin absorption (Hovorka et al. 2004, Physiol Meas
25:905) and a first-order CGM sensor delay (Rebrin et al. 1999, Am J Physiol 277:E561); a
structure close to ReplayBG's (Cappon et al. 2023, IEEE TBME 70:3227). Time in minutes::

    dG/dt  = -(SG + X) G + SG Gb + 1000 f D2 / (tau_D VG BW)
    dX/dt  = p2 (SI (I - Ib) - X)
    dI/dt  = 1000 S2 / (tau_I VI BW) - ke I
    dS1/dt = u_b - S1 / tau_I             dS2/dt = (S1 - S2) / tau_I
    dD1/dt = -D1 / tau_D                  dD2/dt = (D1 - D2) / tau_D
    dGi/dt = (G - Gi) / tau_s

Carbohydrates (g) and insulin (U) are impulses added to D1 and S1 at the start of a step.
Basal insulin is a constant infusion `u_b = Ib ke VI BW / 1000` (U/min) into S1, the rate
that holds plasma insulin at `Ib` (see `basal_infusion_rate`); insulin inputs are doses
*on top of* that basal (boluses, or delivered basal minus `u_b`).

Integration over a step (`glucose_dynamics`): after the impulses, the linear compartments
(D1, D2, S1, S2, I) have constant coefficients, so they are solved exactly in closed form —
as deviations from the basal equilibrium, through e^{-t/tau_D}, e^{-t/tau_I}, e^{-ke t} and
the exponential-integrator functions phi_k of -|ke - 1/tau_I| t, so that equal time
constants (always the case within gut and subcutaneous pairs, and ke = 1/tau_I) need no
special case. The nonlinear pair G, X (the X G product) takes classical RK4 substeps of at
most `MAX_SUBSTEP_MIN` = 5 min whose inputs I(t) and D2(t) come from that exact solution at
each stage's time. The sensor Gi, linear given G, is integrated exactly against the cubic
Hermite interpolant of G (its values and derivatives at both ends of each substep). Against
the former all-state RK4 with 1-min substeps, G and Gi differ by < 0.2 mg/dL over 24 h of
meals (20–100 g) and boluses (1–10 U) at 5-min steps (see tests/physiology).

Default parameters (adult, 70 kg): tau_D = 40 min, tau_I = 55 min, ke = 0.138 /min,
VI = 0.12 L/kg, VG = 0.16 L/kg, f = 0.8 from Hovorka et al. 2004; p2 = 0.02 /min and
SG = 0.01 /min in the range of Bergman et al. 1979 and Dalla Man et al. 2007
(IEEE TBME 54:1740); SI = 8e-4 /min per µU/mL (minimal-model SI is of order 1e-4 to 1e-3),
so that 1 U lowers glucose by about 25 mg/dL and 5 U about covers a 50 g meal;
Gb = 120 mg/dL, Ib = 10 µU/mL (basal 0.7 U/h at 70 kg); tau_s = 10 min (Rebrin et al. 1999).

The functions run unchanged on NumPy arrays or torch tensors (`medtwin._array`): given a
tensor state, they compute in float64 on its device (parameters may stay NumPy arrays).
"""

from __future__ import annotations

import enum
import math
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from medtwin._array import array_namespace
from medtwin.domain import Channel

FloatArray = npt.NDArray[np.float64]


class GlucoseState(enum.IntEnum):
    """Index of each state on the last axis of a glucose state array."""

    G = 0
    """Plasma glucose (mg/dL)."""
    X = 1
    """Remote insulin action relative to basal (1/min; 0 at basal, >= -SI Ib)."""
    I = 2  # noqa: E741
    """Plasma insulin (µU/mL)."""
    S1 = 3
    """Subcutaneous insulin, first compartment (U)."""
    S2 = 4
    """Subcutaneous insulin, second compartment (U)."""
    D1 = 5
    """Carbohydrates in the stomach (g)."""
    D2 = 6
    """Carbohydrates in the gut (g)."""
    GI = 7
    """Interstitial glucose, what the CGM reads (mg/dL)."""


class GlucoseInput(enum.IntEnum):
    """Index of each input on the last axis of a glucose input array."""

    CARBS = 0
    """Carbohydrates eaten at the start of the step (g)."""
    INSULIN = 1
    """Insulin delivered at the start of the step on top of the basal infusion (U)."""


N_GLUCOSE_STATES = len(GlucoseState)
N_GLUCOSE_INPUTS = len(GlucoseInput)
#: The domain channel of each input, in `GlucoseInput` order.
GLUCOSE_INPUT_CHANNELS: tuple[Channel, ...] = (Channel.CARBS, Channel.INSULIN)
#: The channel `glucose_observation` predicts.
GLUCOSE_OBSERVED_CHANNEL = Channel.GLUCOSE

#: Physiological bounds of each state (glucose 10–1000 mg/dL, compartments non-negative;
#: X needs none: it relaxes towards SI (I - Ib) >= -SI Ib).
GLUCOSE_STATE_MIN: FloatArray = np.array([10.0, -np.inf, 0, 0, 0, 0, 0, 10.0])
GLUCOSE_STATE_MAX: FloatArray = np.array([1000.0, *([np.inf] * 6), 1000.0])
GLUCOSE_STATE_MIN.flags.writeable = GLUCOSE_STATE_MAX.flags.writeable = False
#: Longest RK4 substep (min) for G and X; the linear compartments and Gi need none (exact).
MAX_SUBSTEP_MIN = 5.0


class GlucoseParams(NamedTuple):
    """Per-patient parameters of the glucose–insulin model; each field has shape (n_patients,)."""

    insulin_sensitivity: FloatArray
    """SI: insulin action per unit plasma insulin above basal (1/min per µU/mL)."""
    glucose_effectiveness: FloatArray
    """SG: rate at which glucose returns to basal by itself (1/min)."""
    basal_glucose: FloatArray
    """Gb: fasting glucose under basal insulin (mg/dL)."""
    basal_insulin: FloatArray
    """Ib: plasma insulin under the basal infusion (µU/mL)."""
    insulin_action_rate: FloatArray
    """p2: rate at which insulin action follows plasma insulin (1/min)."""
    carb_absorption_time: FloatArray
    """tau_D: time constant of each gut compartment (min); glucose appears fastest at tau_D."""
    insulin_absorption_time: FloatArray
    """tau_I: time constant of each subcutaneous compartment (min)."""
    insulin_clearance: FloatArray
    """ke: plasma insulin elimination rate (1/min)."""
    glucose_volume: FloatArray
    """VG: glucose distribution volume (dL/kg)."""
    insulin_volume: FloatArray
    """VI: insulin distribution volume (L/kg)."""
    body_weight: FloatArray
    """BW: body weight (kg)."""
    carb_bioavailability: FloatArray
    """f: fraction of eaten carbohydrate that reaches plasma (dimensionless, 0–1)."""
    sensor_delay: FloatArray
    """tau_s: plasma-to-interstitial glucose time constant (min)."""


_DEFAULTS: dict[str, float] = {
    "insulin_sensitivity": 8.0e-4,
    "glucose_effectiveness": 0.01,
    "basal_glucose": 120.0,
    "basal_insulin": 10.0,
    "insulin_action_rate": 0.02,
    "carb_absorption_time": 40.0,
    "insulin_absorption_time": 55.0,
    "insulin_clearance": 0.138,
    "glucose_volume": 1.6,
    "insulin_volume": 0.12,
    "body_weight": 70.0,
    "carb_bioavailability": 0.8,
    "sensor_delay": 10.0,
}


def default_glucose_params(n_patients: int) -> GlucoseParams:
    """Literature-typical adult T1D parameters (see the module docstring) for `n_patients`."""
    return GlucoseParams(**{k: np.full(n_patients, v) for k, v in _DEFAULTS.items()})


def broadcast_glucose_params(params: GlucoseParams, n_patients: int) -> GlucoseParams:
    """`params` with every field of shape (n_patients,); fields of length 1 are repeated.

    ValueError if a field has another shape.
    """
    xp = array_namespace(*params)
    fields = [xp.asarray(f, dtype=xp.float64) for f in params]
    if any(tuple(f.shape) not in ((n_patients,), (1,), ()) for f in fields):
        raise ValueError(f"physiology: params fields must have shape ({n_patients},) or (1,)")
    return GlucoseParams(*(xp.array(xp.broadcast_to(f, (n_patients,))) for f in fields))


def basal_infusion_rate(params: GlucoseParams) -> FloatArray:
    """The constant insulin infusion (U/min) that holds plasma insulin at `basal_insulin`."""
    p = params
    xp = array_namespace(*p)
    rate: FloatArray = xp.asarray(
        p.basal_insulin * p.insulin_clearance * p.insulin_volume * p.body_weight / 1000.0,
        dtype=xp.float64,
    )
    return rate


def steady_state(params: GlucoseParams) -> FloatArray:
    """The basal equilibrium (n_patients, n_states): basal glucose and insulin, empty gut."""
    p = params
    xp = array_namespace(*p)
    n = tuple(xp.asarray(p.basal_glucose).shape)
    x: FloatArray = xp.zeros((*n, N_GLUCOSE_STATES))
    subcutaneous = basal_infusion_rate(p) * p.insulin_absorption_time
    x[..., GlucoseState.G] = p.basal_glucose
    x[..., GlucoseState.I] = p.basal_insulin
    x[..., GlucoseState.S1] = subcutaneous
    x[..., GlucoseState.S2] = subcutaneous
    x[..., GlucoseState.GI] = p.basal_glucose
    return x


def glucose_observation(x: FloatArray, params: GlucoseParams) -> FloatArray:
    """What the CGM reads (mg/dL, shape `x.shape[:-1]`): the interstitial glucose."""
    del params  # the sensor has no gain or offset in this model
    xp = array_namespace(x)
    reading: FloatArray = xp.array(x[..., GlucoseState.GI], dtype=xp.float64)
    return reading


#: Below this |w| the phi functions come from their Taylor series, above it from expm1.
_PHI_SERIES_BELOW = 0.2
#: Taylor terms: 0.2^10 / 10! < 1e-13, and the series' terms shrink faster for higher phi_k.
_PHI_SERIES_TERMS = 10


def _phis(xp: Any, w: FloatArray, em1: FloatArray, k_max: int) -> list[FloatArray]:
    """`[phi_1(w), ..., phi_k_max(w)]` for `w <= 0`, given `em1 = expm1(w)`.

    `phi_k(w) = int_0^1 e^{(1-s) w} s^{k-1}/(k-1)! ds`, so `phi_1 = (e^w - 1)/w` and
    `phi_{k+1} = (phi_k - 1/k!)/w`. That recurrence is used upwards for |w| >= 0.2 (it loses
    at most a few digits there: relative error below 1e-12); below, `phi_k_max` comes from
    its Taylor series `sum_j w^j/(j + k_max)!` and the rest from `phi_k = 1/k! + w phi_{k+1}`,
    which is stable. Each branch is only evaluated when some patient needs it.
    """
    series = xp.abs(w) < _PHI_SERIES_BELOW
    any_series = bool(series.any())
    all_series = any_series and bool(series.all())
    if all_series:
        up: list[FloatArray] = []
    else:
        ws = xp.where(series, -1.0, w) if any_series else w  # -1: a harmless stand-in
        up = [em1 / ws]
        for k in range(1, k_max):
            up.append((up[-1] - 1.0 / math.factorial(k)) / ws)
        if not any_series:
            return up
    top = xp.full_like(w, 1.0 / math.factorial(_PHI_SERIES_TERMS - 1 + k_max))
    for j in range(_PHI_SERIES_TERMS - 2, -1, -1):
        top = top * w + 1.0 / math.factorial(j + k_max)
    down = [top]
    for k in range(k_max - 1, 0, -1):
        down.insert(0, 1.0 / math.factorial(k) + w * down[0])
    if all_series:
        return down
    return [xp.where(series, d, u) for d, u in zip(down, up, strict=True)]


class _SensorWeights(NamedTuple):
    """Gi after a substep of length h, as weights (n,) on Gi and on G and h dG/dt at both ends.

    Exact for `dGi/dt = (G - Gi)/tau_s` when G is the cubic Hermite interpolant of its values
    and derivatives at both ends of the substep. With `z = h/tau_s` and `phi_k = phi_k(-z)`
    the weights are `e^{-z}` on Gi(0), `z (phi1 - 6 phi3 + 12 phi4)` on G(0),
    `z (phi2 - 4 phi3 + 6 phi4)` on h G'(0), `z (6 phi3 - 12 phi4)` on G(h) and
    `z (6 phi4 - 2 phi3)` on h G'(h).
    """

    decay: FloatArray
    g0: FloatArray
    dg0: FloatArray
    g1: FloatArray
    dg1: FloatArray


def _sensor_weights(xp: Any, h: FloatArray, tau_s: FloatArray) -> _SensorWeights:
    z = h / tau_s
    em1 = xp.expm1(-z)
    phi1, phi2, phi3, phi4 = _phis(xp, -z, em1, 4)
    return _SensorWeights(
        decay=1.0 + em1,
        g0=z * (phi1 - 6.0 * phi3 + 12.0 * phi4),
        dg0=z * (phi2 - 4.0 * phi3 + 6.0 * phi4),
        g1=z * (6.0 * phi3 - 12.0 * phi4),
        dg1=z * (6.0 * phi4 - 2.0 * phi3),
    )


#: Sensor weights of a substep of length zero: Gi stays as it is.
_SENSOR_IDLE = (1.0, 0.0, 0.0, 0.0, 0.0)


class _Linear(NamedTuple):
    """The exact solution of the linear compartments as coefficients (n,) at a time t.

    With deviations from the basal equilibrium `s1 = S1 - u_b tau_I`, `s2 = S2 - u_b tau_I`,
    `i = I - Ib` (`a = 1/tau_D`, `b = 1/tau_I`, `c = 1000/(tau_I VI BW)`)::

        D1(t) = D1 e^{-at}              D2(t) = D2 e^{-at} + D1 a t e^{-at}
        s1(t) = s1 e^{-bt}              s2(t) = s2 e^{-bt} + s1 b t e^{-bt}
        i(t)  = i e^{-ke t} + c (s2 P(t) + s1 b Q(t)),
        P(t)  = int_0^t e^{-ke (t-r)} e^{-br} dr,   Q(t) = int_0^t e^{-ke (t-r)} r e^{-br} dr.

    `_advance` moves these from t to t + tau with `P(t + tau) = e^{-ke tau} P(t) +
    e^{-bt} P(tau)` and `Q(t + tau) = e^{-ke tau} Q(t) + e^{-bt} (Q(tau) + t P(tau))`, where
    `P(tau)` and `Q(tau)` use phi functions of `-|ke - b| tau` (ke = b is no special case).
    """

    t: FloatArray
    ed: FloatArray  # e^{-at}
    eb: FloatArray  # e^{-bt}
    ek: FloatArray  # e^{-ke t}
    p: FloatArray  # P(t)
    q: FloatArray  # Q(t)


def _linear_start(xp: Any, like: FloatArray) -> _Linear:
    one, zero = xp.ones_like(like), xp.zeros_like(like)
    return _Linear(t=zero, ed=one, eb=one, ek=one, p=zero, q=zero)


def _advance(
    xp: Any, c: _Linear, by: _Linear, active: npt.NDArray[np.bool_] | None
) -> _Linear:
    """`c` moved on by `by.t` (the one-interval solution `by`); frozen where not `active`."""
    moved = _Linear(
        t=c.t + by.t,
        ed=c.ed * by.ed,
        eb=c.eb * by.eb,
        ek=c.ek * by.ek,
        p=by.ek * c.p + c.eb * by.p,
        q=by.ek * c.q + c.eb * (by.q + c.t * by.p),
    )
    if active is None:
        return moved
    return _Linear(*(xp.where(active, m, f) for m, f in zip(moved, c, strict=True)))


def _linear_interval(
    xp: Any, tau: FloatArray, a: FloatArray, b: FloatArray, ke: FloatArray
) -> _Linear:
    """The coefficients at time `tau` (n,)."""
    eb = xp.exp(-b * tau)
    ek = xp.exp(-ke * tau)
    w = -xp.abs(ke - b) * tau
    phi1, phi2 = _phis(xp, w, xp.expm1(w), 2)
    ke_faster = ke >= b
    e_slow = xp.where(ke_faster, eb, ek)  # e^{-min(b, ke) tau}
    return _Linear(
        t=tau,
        ed=xp.exp(-a * tau),
        eb=eb,
        ek=ek,
        p=e_slow * tau * phi1,
        q=e_slow * (tau * tau) * xp.where(ke_faster, phi2, phi1 - phi2),
    )


def _rhs(
    xp: Any,
    f_g: FloatArray,
    f_x: FloatArray,
    sg: FloatArray,
    p2: FloatArray,
    g: FloatArray,
    x: FloatArray,
    out_g: FloatArray,
    out_x: FloatArray,
) -> None:
    """dG/dt = f_g - (SG + X) G and dX/dt = f_x - p2 X, into `out_g` and `out_x`."""
    xp.add(sg, x, out=out_g)
    out_g *= g
    xp.subtract(f_g, out_g, out=out_g)
    xp.multiply(p2, x, out=out_x)
    xp.subtract(f_x, out_x, out=out_x)


def glucose_dynamics(
    x: FloatArray, u: FloatArray, params: GlucoseParams, dt_min: FloatArray | float
) -> FloatArray:
    """The state `dt_min` minutes later, after inputs `u` at the start of the step.

    Shapes: `x` (n_patients, n_states) or (n_patients, n_sigma, n_states); `u`
    (n_patients, n_inputs) or `x.shape[:-1] + (n_inputs,)`; `dt_min` a scalar or (n_patients,);
    params fields (n_patients,). The linear compartments (gut, subcutaneous and plasma
    insulin) are solved exactly; G and X take ceil(dt / MAX_SUBSTEP_MIN) RK4 substeps per
    patient and Gi follows G exactly through each substep's cubic Hermite interpolant, so the
    result of one patient never depends on the rest of the batch. States are clipped to
    `GLUCOSE_STATE_MIN`/`MAX` after the inputs and G and Gi after every substep (the exact
    linear solution keeps the compartments non-negative by itself); negative inputs count as
    zero. Pure: the result is a new C-contiguous array of `x`'s shape.
    """
    xp = array_namespace(x, u)
    x = xp.asarray(x, dtype=xp.float64)
    u = xp.asarray(u, dtype=xp.float64)
    lead = x.ndim - 1
    n_patients = x.shape[0]
    dt_given = xp.asarray(dt_min, dtype=xp.float64)
    if not xp.all(xp.isfinite(dt_given) & (dt_given >= 0)):
        raise ValueError("physiology: dt_min must be finite and non-negative")
    dt = xp.broadcast_to(dt_given, (n_patients,))
    lo = xp.asarray(GLUCOSE_STATE_MIN).reshape((N_GLUCOSE_STATES,) + (1,) * lead)
    hi = xp.asarray(GLUCOSE_STATE_MAX).reshape((N_GLUCOSE_STATES,) + (1,) * lead)

    # Work on the reversed layout (n_states, [n_sigma,] n_patients): one contiguous row per
    # state, and the per-patient parameters (n,) broadcast along the last, contiguous axis.
    xt = xp.array(xp.transpose(x), order="C")  # a private copy
    xt[GlucoseState.D1] += xp.transpose(xp.maximum(u[..., GlucoseInput.CARBS], 0.0))
    xt[GlucoseState.S1] += xp.transpose(xp.maximum(u[..., GlucoseInput.INSULIN], 0.0))
    xp.clip(xt, lo, hi, out=xt)

    def f64(a: FloatArray) -> FloatArray:
        converted: FloatArray = xp.asarray(a, dtype=xp.float64)
        return converted

    def b(a: FloatArray) -> FloatArray:  # (n,) broadcasts as it is: patients are last
        return a

    p = GlucoseParams(*(xp.asarray(f, dtype=xp.float64) for f in params))
    rate_d, rate_i = 1.0 / f64(p.carb_absorption_time), 1.0 / f64(p.insulin_absorption_time)
    ke, ib = f64(p.insulin_clearance), f64(p.basal_insulin)
    s_basal = basal_infusion_rate(p) * p.insulin_absorption_time
    gain = 1000.0 / (p.insulin_absorption_time * p.insulin_volume * p.body_weight)
    # Rows of the private copy `xt`, changed in place to deviations from the basal equilibrium.
    d1, d2 = xt[GlucoseState.D1], xt[GlucoseState.D2]
    s1, s2, i0 = xt[GlucoseState.S1], xt[GlucoseState.S2], xt[GlucoseState.I]
    s1 -= b(s_basal)
    s2 -= b(s_basal)
    i0 -= b(ib)

    # Forcing of G (glucose appearance plus production, mg/dL/min) and of X
    # (p2 SI (I - Ib), 1/min^2) at the time of `c`, from the exact linear solution.
    appearance = f64(
        1000.0
        * p.carb_bioavailability
        / (p.carb_absorption_time * p.glucose_volume * p.body_weight)
    )
    production = b(f64(p.glucose_effectiveness * p.basal_glucose))
    action = f64(p.insulin_action_rate * p.insulin_sensitivity)
    x_s2, x_s1 = action * gain, action * gain * rate_i

    work = xp.empty((9, *xt.shape[1:]))  # one block: G, X forcing at three times, and scratch

    def forcing(c: _Linear, f_g: FloatArray, f_x: FloatArray) -> tuple[FloatArray, FloatArray]:
        scratch = work[8]
        app_ed = appearance * c.ed
        xp.multiply(b(app_ed), d2, out=f_g)
        xp.multiply(b(app_ed * rate_d * c.t), d1, out=scratch)
        f_g += scratch
        f_g += production
        xp.multiply(b(action * c.ek), i0, out=f_x)
        xp.multiply(b(x_s2 * c.p), s2, out=scratch)
        f_x += scratch
        xp.multiply(b(x_s1 * c.q), s1, out=scratch)
        f_x += scratch
        return f_g, f_x

    sg = b(f64(p.glucose_effectiveness))
    p2 = b(f64(p.insulin_action_rate))
    g_lo, g_hi = GLUCOSE_STATE_MIN[GlucoseState.G], GLUCOSE_STATE_MAX[GlucoseState.G]
    gi_lo, gi_hi = GLUCOSE_STATE_MIN[GlucoseState.GI], GLUCOSE_STATE_MAX[GlucoseState.GI]
    g, xa, gi = xt[GlucoseState.G], xt[GlucoseState.X], xt[GlucoseState.GI]

    n_sub = xp.ceil(dt / MAX_SUBSTEP_MIN)  # whole numbers, as floats
    h_full = xp.where(n_sub > 0, dt / xp.maximum(n_sub, 1.0), 0.0)
    n_min, n_max = (int(n_sub.min()), int(n_sub.max())) if n_patients else (0, 0)
    half_step = _linear_interval(xp, 0.5 * h_full, rate_d, rate_i, ke)
    sensor = _sensor_weights(xp, h_full, f64(p.sensor_delay))
    c0 = _linear_start(xp, dt)
    f_g0, f_x0 = forcing(c0, work[0], work[1])
    slots = [(work[2], work[3]), (work[4], work[5])]
    dg = f_g0 - (sg + xa) * g
    # Work arrays of the batch shape, reused by every substep (no temporaries in the loop).
    g_s, x_s, k_g, k_x, acc_g, acc_x, tmp = xp.empty((7, *g.shape))
    for k in range(n_max):
        # Patients that have finished their substeps take steps of zero length (exact no-ops).
        active = None if k < n_min else k < n_sub
        h_n = h_full if active is None else xp.where(active, h_full, 0.0)
        w = (
            sensor
            if active is None
            else _SensorWeights(
                *(xp.where(active, s, i) for s, i in zip(sensor, _SENSOR_IDLE, strict=True))
            )
        )
        cm = _advance(xp, c0, half_step, active)
        c1 = _advance(xp, cm, half_step, active)
        f_gm, f_xm = forcing(cm, *slots[0])
        f_g1, f_x1 = forcing(c1, *slots[1])
        h, half, sixth = b(h_n), b(0.5 * h_n), b(h_n / 6.0)
        # RK4 for G and X; dg (dG/dt at the start) carries over from the previous substep.
        xp.multiply(p2, xa, out=acc_x)
        xp.subtract(f_x0, acc_x, out=acc_x)  # k1 of X
        xp.copyto(acc_g, dg)
        # stages 2 and 3: half a step along the previous stage's slope (k1, then k2)
        for slope_g, slope_x in ((dg, acc_x), (k_g, k_x)):
            xp.multiply(half, slope_g, out=g_s)
            g_s += g
            xp.multiply(half, slope_x, out=x_s)
            x_s += xa
            _rhs(xp, f_gm, f_xm, sg, p2, g_s, x_s, k_g, k_x)
            acc_g += 2.0 * k_g
            acc_x += 2.0 * k_x
        # stage 4
        xp.multiply(h, k_g, out=g_s)
        g_s += g
        xp.multiply(h, k_x, out=x_s)
        x_s += xa
        _rhs(xp, f_g1, f_x1, sg, p2, g_s, x_s, k_g, k_x)
        acc_g += k_g
        acc_x += k_x
        # the new G (into g_s) and X
        xp.multiply(sixth, acc_g, out=g_s)
        g_s += g
        xp.clip(g_s, g_lo, g_hi, out=g_s)
        acc_x *= sixth
        xa += acc_x
        # its derivative (into k_g)
        xp.add(sg, xa, out=k_g)
        k_g *= g_s
        xp.subtract(f_g1, k_g, out=k_g)
        # Gi: the sensor's exact response to the cubic Hermite interpolant of G.
        gi *= b(w.decay)
        for weight, value in ((w.g0, g), (w.g1, g_s), (w.dg0 * h_n, dg), (w.dg1 * h_n, k_g)):
            xp.multiply(b(weight), value, out=tmp)
            gi += tmp
        xp.clip(gi, gi_lo, gi_hi, out=gi)
        g, g_s = g_s, g  # every array here is private to this call: swap, don't copy
        dg, k_g = k_g, dg
        slots[1] = (f_g0, f_x0)  # the start's forcing is free again: rotate the buffers
        c0, f_g0, f_x0 = c1, f_g1, f_x1

    # c0 is now at each patient's n_sub * h_full = dt.
    out: FloatArray = xp.empty(tuple(x.shape))
    out[..., GlucoseState.G] = xp.transpose(g)
    out[..., GlucoseState.X] = xp.transpose(xa)
    out[..., GlucoseState.GI] = xp.transpose(gi)
    for row, terms in (
        (GlucoseState.D1, ((c0.ed, d1),)),
        (GlucoseState.D2, ((c0.ed, d2), (rate_d * c0.t * c0.ed, d1))),
        (GlucoseState.S1, ((c0.eb, s1),)),
        (GlucoseState.S2, ((c0.eb, s2), (rate_i * c0.t * c0.eb, s1))),
        (GlucoseState.I, ((c0.ek, i0), (gain * c0.p, s2), (gain * rate_i * c0.q, s1))),
    ):
        acc = xp.multiply(b(terms[0][0]), terms[0][1], out=tmp)
        for coefficient, value in terms[1:]:
            acc += b(coefficient) * value
        if row in (GlucoseState.S1, GlucoseState.S2):
            acc += b(s_basal)
        elif row == GlucoseState.I:
            acc += b(ib)
        # Exact solutions from non-negative states stay non-negative; this only removes
        # rounding (G and Gi were clipped in the loop, X has no bounds).
        out[..., row] = xp.transpose(xp.maximum(acc, float(GLUCOSE_STATE_MIN[row]), out=acc))
    return out
