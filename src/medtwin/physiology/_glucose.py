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

Default parameters (adult, 70 kg): tau_D = 40 min, tau_I = 55 min, ke = 0.138 /min,
VI = 0.12 L/kg, VG = 0.16 L/kg, f = 0.8 from Hovorka et al. 2004; p2 = 0.02 /min and
SG = 0.01 /min in the range of Bergman et al. 1979 and Dalla Man et al. 2007
(IEEE TBME 54:1740); SI = 8e-4 /min per µU/mL (minimal-model SI is of order 1e-4 to 1e-3),
so that 1 U lowers glucose by about 25 mg/dL and 5 U about covers a 50 g meal;
Gb = 120 mg/dL, Ib = 10 µU/mL (basal 0.7 U/h at 70 kg); tau_s = 10 min (Rebrin et al. 1999).
"""

from __future__ import annotations

import enum
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

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
#: Longest integration substep (min): RK4 is stable for every default rate at this size.
MAX_SUBSTEP_MIN = 1.0


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


def basal_infusion_rate(params: GlucoseParams) -> FloatArray:
    """The constant insulin infusion (U/min) that holds plasma insulin at `basal_insulin`."""
    p = params
    return np.asarray(
        p.basal_insulin * p.insulin_clearance * p.insulin_volume * p.body_weight / 1000.0,
        dtype=np.float64,
    )


def steady_state(params: GlucoseParams) -> FloatArray:
    """The basal equilibrium (n_patients, n_states): basal glucose and insulin, empty gut."""
    p = params
    n = np.shape(p.basal_glucose)
    x = np.zeros((*n, N_GLUCOSE_STATES))
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
    return np.array(x[..., GlucoseState.GI], dtype=np.float64)


class _Rates(NamedTuple):
    """Parameter combinations the right-hand side uses, broadcast to the batch shape."""

    si: FloatArray
    sg: FloatArray
    production: FloatArray  # SG Gb, mg/dL/min
    p2: FloatArray
    ib: FloatArray
    inv_tau_d: FloatArray
    appearance: FloatArray  # 1000 f / (tau_D VG BW): mg/dL per g in D2 per min
    inv_tau_i: FloatArray
    insulin_gain: FloatArray  # 1000 / (tau_I VI BW): µU/mL per U in S2 per min
    ke: FloatArray
    basal_rate: FloatArray
    inv_tau_s: FloatArray


def _rates(p: GlucoseParams, lead_ndim: int) -> _Rates:
    """Parameter combinations shaped (n_patients, 1, ...) to broadcast over `lead_ndim` axes."""

    def b(a: FloatArray) -> FloatArray:
        a = np.asarray(a, dtype=np.float64)
        return a.reshape(a.shape + (1,) * (lead_ndim - a.ndim))

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
    """Time derivative of a state array laid out state-first, (n_states, *batch)."""
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


def _lead(a: FloatArray, lead_ndim: int) -> FloatArray:
    """`a` (shape (n,) or the batch shape) with trailing unit axes up to `lead_ndim` axes."""
    return a.reshape(a.shape + (1,) * (lead_ndim - a.ndim))


def glucose_dynamics(
    x: FloatArray, u: FloatArray, params: GlucoseParams, dt_min: FloatArray | float
) -> FloatArray:
    """The state `dt_min` minutes later, after inputs `u` at the start of the step.

    Shapes: `x` (n_patients, n_states) or (n_patients, n_sigma, n_states); `u`
    (n_patients, n_inputs) or `x.shape[:-1] + (n_inputs,)`; `dt_min` a scalar or (n_patients,);
    params fields (n_patients,). Each patient's step is ceil(dt) RK4 substeps of at most 1 min,
    so the result of one patient never depends on the rest of the batch. States are clipped to
    `GLUCOSE_STATE_MIN`/`MAX` after every substep; negative inputs count as zero. Pure.
    """
    x = np.asarray(x, dtype=np.float64)
    u = np.asarray(u, dtype=np.float64)
    lead = x.ndim - 1
    n_patients = x.shape[0]
    dt = np.broadcast_to(np.asarray(dt_min, dtype=np.float64), (n_patients,))
    if np.any(~np.isfinite(dt)) or np.any(dt < 0):
        raise ValueError("physiology: dt_min must be finite and non-negative")
    lo = GLUCOSE_STATE_MIN.reshape((N_GLUCOSE_STATES,) + (1,) * lead)
    hi = GLUCOSE_STATE_MAX.reshape((N_GLUCOSE_STATES,) + (1,) * lead)

    xt = np.moveaxis(x, -1, 0).copy()  # (n_states, *batch): one contiguous row per state
    inputs = np.maximum(np.moveaxis(u, -1, 0), 0.0)
    xt[GlucoseState.D1] += _lead(inputs[GlucoseInput.CARBS], lead)
    xt[GlucoseState.S1] += _lead(inputs[GlucoseInput.INSULIN], lead)
    np.clip(xt, lo, hi, out=xt)

    r = _rates(params, lead)
    n_sub = np.ceil(dt / MAX_SUBSTEP_MIN).astype(np.int64)
    h_full = np.divide(dt, n_sub, out=np.zeros_like(dt), where=n_sub > 0)
    for k in range(int(n_sub.max(initial=0))):
        # Patients that have finished their substeps take steps of zero length (exact no-ops).
        h = _lead(np.where(k < n_sub, h_full, 0.0), lead)
        k1 = _derivative(xt, r)
        k2 = _derivative(xt + (0.5 * h) * k1, r)
        k3 = _derivative(xt + (0.5 * h) * k2, r)
        k4 = _derivative(xt + h * k3, r)
        xt = xt + (h / 6.0) * (k1 + 2.0 * (k2 + k3) + k4)
        np.clip(xt, lo, hi, out=xt)
    return np.ascontiguousarray(np.moveaxis(xt, 0, -1))
