"""Cardiorespiratory vital signs, vectorized over patients (and sigma points).

Seven coupled latent states per patient: heart rate, respiratory rate, arterial oxygen
tension PaO2, mean arterial pressure MAP, pulse pressure PP, core temperature and a latent
physiological stress s (0 at the patient's baseline, 1 a sepsis-like deterioration; < 0
calmer than baseline). Time in minutes, time of day in minutes after local midnight.

Each state is its circadian baseline `m_i(t) = base_i + A_i cos(2 pi (t - peak) / 1440)`
plus a deviation `y_i` that relaxes (Ornstein–Uhlenbeck mean) towards a coupling drive::

    dy_i/dt = (c_i - y_i) / tau_i          c_s    = 0
    c_T  = k_Ts s + fever                  c_PaO2 = -k_Ps s + 713 dFiO2
    c_MAP = -k_Ms s                        c_PP   = -k_PPs s
    c_HR = k_HT y_T + k_Hs s + k_Hh h      c_RR   = k_RT y_T + k_Rs s + k_Rh h

with `h = S(PaO2_base) - S(PaO2)` the desaturation (%) below the patient's baseline, S the
oxygen dissociation curve of Severinghaus (1979, J Appl Physiol 46:599). So without
disturbance every state follows its baseline exactly, with the rhythm's amplitude and phase.
The couplings form a chain (s → T, PaO2, MAP, PP → HR, RR), integrated upstream first in
substeps of at most `VITALS_MAX_SUBSTEP_MIN`; each substep is the exact OU solution for a
drive linear in time between its values at both ends (exponential integrator), so an
uncoupled deviation decays by exactly `e^{-dt/tau}` over any irregular step. Measured:
HR, SpO2 = S(PaO2), RR, SBP = MAP + 2 PP / 3, DBP = MAP - PP / 3, temperature.

Magnitudes (defaults):
- Fever: Liebermeister's rule, heart rate +8–10 /min per °C (Karjalainen & Viitasalo 1986,
  Arch Intern Med 146:1169 measured 8.5): k_HT = 10 /min/°C; breathing +2.5 /min/°C.
- Hypoxaemia: hypoxic ventilatory response of order 1 L/min per % desaturation (Weil et al.
  1970, J Clin Invest 49:1061), here 0.5 breaths/min per %; heart rate +1 /min per %
  (order of magnitude of acute isocapnic hypoxia studies; a modelling choice).
- Supplemental oxygen: the alveolar gas equation, PAO2 = FiO2 (760 - 47) - PaCO2 / 0.8,
  so +7.13 mmHg per 0.01 of FiO2 above air (healthy lungs).
- Circadian rhythm, peak 16:00 (as `medtwin.sim`), trough 04:00: core temperature ±0.35 °C
  (peak-to-trough 0.5–1 °C, Refinetti & Menaker 1992, Physiol Behav 51:613); heart rate
  ±5 /min and BP about ±5 mmHg systolic, ±3 mmHg diastolic (day–night differences of
  ambulatory monitoring, Degaute et al. 1991, Hypertension 18:199): MAP ±4, PP ±2 mmHg;
  breathing ±0.8 /min.
- Baselines inside the NEWS2 zero-score ranges (Royal College of Physicians 2017): HR 72
  (51–90), RR 16 (12–20), SpO2 97.4 % from PaO2 95 mmHg (>= 96), SBP 122 (111–219), DBP 76,
  temperature 36.8 °C (36.1–38.0).
- Stress at s = 1 (a sepsis-like deterioration, cf. Sepsis-3, Singer et al. 2016, JAMA
  315:801, matching `medtwin.sim`'s): temperature +2 °C, PaO2 -35 mmHg (SpO2 ~97 → ~90 %),
  MAP -28 and PP -18 mmHg (SBP -40, DBP -22), and directly HR +15 and RR +4 /min; with the
  fever and desaturation couplings HR rises by ~42 and RR by ~12 /min in all.
- Time constants: HR and RR 5 min, PaO2, MAP and PP 10 min (the AR(1) noise of
  `medtwin.sim`), temperature 60 min, stress 6 h.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from medtwin.domain import Channel

FloatArray = npt.NDArray[np.float64]


class VitalsModelState(enum.IntEnum):
    """Index of each state on the last axis of a vitals state array."""

    HEART_RATE = 0
    """Heart rate (beats/min)."""
    RESP_RATE = 1
    """Respiratory rate (breaths/min)."""
    PAO2 = 2
    """Arterial oxygen tension (mmHg); SpO2 is its saturation."""
    MAP = 3
    """Mean arterial pressure (mmHg)."""
    PULSE_PRESSURE = 4
    """Systolic minus diastolic pressure (mmHg)."""
    TEMPERATURE = 5
    """Core temperature (°C)."""
    STRESS = 6
    """Latent physiological stress (dimensionless; 0 baseline, 1 sepsis-like)."""


class VitalsInput(enum.IntEnum):
    """Index of each input on the last axis of a vitals input array (held over a step)."""

    FEVER = 0
    """Shift of the hypothalamic temperature set point (°C; pyrogens > 0, antipyretics < 0)."""
    FIO2 = 1
    """Inspired oxygen fraction above room air (0–0.79)."""


N_VITALS_STATES = len(VitalsModelState)
N_VITALS_INPUTS = len(VitalsInput)
#: The channels `vitals_observation` predicts, in its output order (`Channel` order).
VITALS_OBSERVED_CHANNELS: tuple[Channel, ...] = (
    Channel.HEART_RATE, Channel.SPO2, Channel.RESP_RATE, Channel.SYSTOLIC_BP,
    Channel.DIASTOLIC_BP, Channel.TEMPERATURE,
)
#: Physiological bounds of each state. With MAP >= 50 and PP <= 90, diastolic pressure stays
#: >= 20 mmHg and systolic <= 240 mmHg, inside the channels' possible ranges.
VITALS_STATE_MIN: FloatArray = np.array([30.0, 4.0, 30.0, 50.0, 10.0, 34.0, -1.0])
VITALS_STATE_MAX: FloatArray = np.array([220.0, 60.0, 600.0, 180.0, 90.0, 42.5, 2.0])
VITALS_STATE_MIN.flags.writeable = VITALS_STATE_MAX.flags.writeable = False
#: Longest substep (min) of the coupled integration; uncoupled deviations need none (exact).
VITALS_MAX_SUBSTEP_MIN = 5.0
#: Minutes in a day: the period of the circadian rhythm.
CIRCADIAN_PERIOD_MIN = 1440.0
#: Barometric minus water vapour pressure (mmHg): PaO2 gained per unit of FiO2.
_ALVEOLAR_MMHG = 760.0 - 47.0


class VitalsModelParams(NamedTuple):
    """Per-patient parameters of the vitals model; each field has shape (n_patients,)."""

    heart_rate: FloatArray
    """Daily mean of the heart rate baseline (beats/min)."""
    resp_rate: FloatArray
    """Daily mean of the respiratory rate baseline (breaths/min)."""
    pao2: FloatArray
    """Baseline arterial oxygen tension (mmHg)."""
    mean_arterial_pressure: FloatArray
    """Daily mean of the MAP baseline (mmHg)."""
    pulse_pressure: FloatArray
    """Daily mean of the pulse pressure baseline (mmHg)."""
    temperature: FloatArray
    """Daily mean of the core temperature baseline (°C)."""
    heart_rate_amplitude: FloatArray
    """Circadian amplitude of heart rate (beats/min)."""
    resp_rate_amplitude: FloatArray
    """Circadian amplitude of respiratory rate (breaths/min)."""
    map_amplitude: FloatArray
    """Circadian amplitude of MAP (mmHg)."""
    pulse_pressure_amplitude: FloatArray
    """Circadian amplitude of pulse pressure (mmHg)."""
    temperature_amplitude: FloatArray
    """Circadian amplitude of core temperature (°C)."""
    circadian_peak: FloatArray
    """Time of day at which the rhythms peak (min after midnight)."""
    heart_rate_time: FloatArray
    """tau of heart rate (min)."""
    resp_rate_time: FloatArray
    """tau of respiratory rate (min)."""
    pao2_time: FloatArray
    """tau of PaO2 (min)."""
    map_time: FloatArray
    """tau of MAP (min)."""
    pulse_pressure_time: FloatArray
    """tau of pulse pressure (min)."""
    temperature_time: FloatArray
    """tau of core temperature (min)."""
    stress_time: FloatArray
    """tau of the latent stress (min)."""
    fever_heart_rate: FloatArray
    """k_HT: heart rate per °C above the temperature baseline (beats/min/°C)."""
    fever_resp_rate: FloatArray
    """k_RT: respiratory rate per °C above the temperature baseline (breaths/min/°C)."""
    hypoxia_heart_rate: FloatArray
    """k_Hh: heart rate per % desaturation (beats/min/%)."""
    hypoxia_resp_rate: FloatArray
    """k_Rh: respiratory rate per % desaturation (breaths/min/%)."""
    stress_heart_rate: FloatArray
    """k_Hs: direct heart rate rise at stress 1 (beats/min)."""
    stress_resp_rate: FloatArray
    """k_Rs: direct respiratory rate rise at stress 1 (breaths/min)."""
    stress_temperature: FloatArray
    """k_Ts: temperature rise at stress 1 (°C)."""
    stress_pao2: FloatArray
    """k_Ps: PaO2 fall at stress 1 (mmHg)."""
    stress_map: FloatArray
    """k_Ms: MAP fall at stress 1 (mmHg)."""
    stress_pulse_pressure: FloatArray
    """k_PPs: pulse pressure fall at stress 1 (mmHg)."""


_DEFAULTS: dict[str, float] = {
    "heart_rate": 72.0,
    "resp_rate": 16.0,
    "pao2": 95.0,
    "mean_arterial_pressure": 91.0,
    "pulse_pressure": 46.0,
    "temperature": 36.8,
    "heart_rate_amplitude": 5.0,
    "resp_rate_amplitude": 0.8,
    "map_amplitude": 4.0,
    "pulse_pressure_amplitude": 2.0,
    "temperature_amplitude": 0.35,
    "circadian_peak": 16.0 * 60.0,
    "heart_rate_time": 5.0,
    "resp_rate_time": 5.0,
    "pao2_time": 10.0,
    "map_time": 10.0,
    "pulse_pressure_time": 10.0,
    "temperature_time": 60.0,
    "stress_time": 360.0,
    "fever_heart_rate": 10.0,
    "fever_resp_rate": 2.5,
    "hypoxia_heart_rate": 1.0,
    "hypoxia_resp_rate": 0.5,
    "stress_heart_rate": 15.0,
    "stress_resp_rate": 4.0,
    "stress_temperature": 2.0,
    "stress_pao2": 35.0,
    "stress_map": 28.0,
    "stress_pulse_pressure": 18.0,
}


def default_vitals_params(n_patients: int) -> VitalsModelParams:
    """Literature-typical resting adult parameters (see the module docstring)."""
    return VitalsModelParams(**{k: np.full(n_patients, v) for k, v in _DEFAULTS.items()})


def broadcast_vitals_params(params: VitalsModelParams, n_patients: int) -> VitalsModelParams:
    """`params` with every field of shape (n_patients,); fields of length 1 are repeated.

    ValueError if a field has another shape.
    """
    fields = [np.asarray(f, dtype=np.float64) for f in params]
    if any(f.shape not in ((n_patients,), (1,), ()) for f in fields):
        raise ValueError(f"physiology: params fields must have shape ({n_patients},) or (1,)")
    return VitalsModelParams(*(np.broadcast_to(f, (n_patients,)).copy() for f in fields))


def oxygen_saturation(pao2_mmhg: FloatArray | float) -> FloatArray:
    """Haemoglobin O2 saturation (%) at a PaO2 (mmHg), Severinghaus (1979):
    `S = 100 / (1 + 23400 / (P^3 + 150 P))`."""
    p = np.maximum(np.asarray(pao2_mmhg, dtype=np.float64), 0.0)
    return np.asarray(100.0 * (p * p * p + 150.0 * p) / (p * p * p + 150.0 * p + 23400.0),
                      dtype=np.float64)


def pao2_for_saturation(saturation_pct: FloatArray | float) -> FloatArray:
    """The PaO2 (mmHg) at which `oxygen_saturation` gives `saturation_pct` (clipped to
    1–99.99 %): the real root of `P^3 + 150 P = 23400 S / (100 - S)` by Cardano's formula."""
    s = np.clip(np.asarray(saturation_pct, dtype=np.float64), 1.0, 99.99)
    half_q = 11700.0 * s / (100.0 - s)
    root = np.sqrt(half_q * half_q + 125000.0)  # 125000 = (150 / 3)^3
    return np.asarray(np.cbrt(half_q + root) + np.cbrt(half_q - root), dtype=np.float64)


#: The fields holding each state's daily mean level and circadian amplitude, in state order
#: (None: 0, stress has neither and PaO2 no rhythm); and each state's time constant.
_LEVEL = ("heart_rate", "resp_rate", "pao2", "mean_arterial_pressure", "pulse_pressure",
          "temperature", None)
_AMPLITUDE = ("heart_rate_amplitude", "resp_rate_amplitude", None, "map_amplitude",
              "pulse_pressure_amplitude", "temperature_amplitude", None)
_TIME = ("heart_rate_time", "resp_rate_time", "pao2_time", "map_time", "pulse_pressure_time",
         "temperature_time", "stress_time")


def _rows(params: VitalsModelParams, names: tuple[str | None, ...]) -> FloatArray:
    """The fields `names` stacked in state order (0 for None), (n_states, n_patients)."""
    zero = np.zeros(np.shape(params.heart_rate))
    return np.stack([zero if k is None else np.asarray(getattr(params, k), dtype=np.float64)
                     for k in names])


class _Rhythm(NamedTuple):
    """Circadian baselines as rows (n_states, n_patients): `level + amplitude cos(...)`."""

    level: FloatArray
    amplitude: FloatArray
    peak: FloatArray

    def at(self, time_of_day_min: FloatArray) -> FloatArray:
        """The baselines (n_states, n_patients) at each patient's time of day."""
        phase = (time_of_day_min - self.peak) * (2.0 * np.pi / CIRCADIAN_PERIOD_MIN)
        return np.asarray(self.level + self.amplitude * np.cos(phase), dtype=np.float64)


def _rhythm(params: VitalsModelParams) -> _Rhythm:
    return _Rhythm(_rows(params, _LEVEL), _rows(params, _AMPLITUDE),
                   np.asarray(params.circadian_peak, dtype=np.float64))


def vitals_baseline(params: VitalsModelParams,
                    time_of_day_min: FloatArray | float) -> FloatArray:
    """The undisturbed state (n_patients, n_states) at a time of day (min, scalar or (n,)):
    every state on its circadian baseline, stress 0. The model keeps it there."""
    n = np.shape(params.heart_rate)[0]
    tod = np.broadcast_to(np.asarray(time_of_day_min, dtype=np.float64), (n,))
    return np.ascontiguousarray(_rhythm(params).at(tod).T)


def vitals_observation(x: FloatArray, params: VitalsModelParams) -> FloatArray:
    """What the monitors read, `x.shape[:-1] + (6,)` in `VITALS_OBSERVED_CHANNELS` order:
    HR, SpO2 (the saturation of PaO2), RR, SBP, DBP, temperature."""
    del params  # the devices have no gain or offset in this model
    s = VitalsModelState
    mean_pressure, pulse = x[..., s.MAP], x[..., s.PULSE_PRESSURE]
    return np.stack([
        x[..., s.HEART_RATE],
        oxygen_saturation(x[..., s.PAO2]),
        x[..., s.RESP_RATE],
        mean_pressure + pulse * (2.0 / 3.0),
        mean_pressure - pulse / 3.0,
        x[..., s.TEMPERATURE],
    ], axis=-1).astype(np.float64, copy=False)


class _Decay(NamedTuple):
    """Exponential-integrator weights (n_states, n) of a substep: `y(h) = e y0 + (1 - e) c0 +
    g (c1 - c0)` is exact for a drive linear from c0 to c1, with `g = 1 - (1 - e) / z`,
    `z = h / tau`."""

    e: FloatArray
    g: FloatArray


def _decay(h: FloatArray, tau: FloatArray) -> _Decay:
    z = h / tau
    em1 = np.expm1(-z)
    small = z < 1e-6  # 1 - (1 - e)/z = z/2 - z^2/6 + ..., without cancellation
    safe_z = np.where(small, 1.0, z)
    g = np.where(small, z * (0.5 - z / 6.0), 1.0 + em1 / safe_z)
    return _Decay(1.0 + em1, g)


def vitals_dynamics(
    x: FloatArray,
    u: FloatArray | None,
    params: VitalsModelParams,
    dt_min: FloatArray | float,
    time_of_day_min: FloatArray | float,
) -> FloatArray:
    """The state `dt_min` minutes after `time_of_day_min` (the step's start), inputs `u` held.

    Shapes: `x` (n_patients, n_states) or (n_patients, n_sigma, n_states); `u` None (no
    inputs) or (n_patients, n_inputs) or `x.shape[:-1] + (n_inputs,)`; `dt_min` and
    `time_of_day_min` scalars or (n_patients,); params fields (n_patients,). Each patient
    takes ceil(dt / VITALS_MAX_SUBSTEP_MIN) substeps of its own, so its result never
    depends on the rest of the batch. States are clipped to `VITALS_STATE_MIN`/`MAX` at the
    start and after every substep. Pure: the result is a new C-contiguous array.
    """
    x = np.asarray(x, dtype=np.float64)
    lead = x.ndim - 1
    n = x.shape[0]
    dt_given = np.asarray(dt_min, dtype=np.float64)
    if not np.all(np.isfinite(dt_given) & (dt_given >= 0)):
        raise ValueError("physiology: dt_min must be finite and non-negative")
    tod_given = np.asarray(time_of_day_min, dtype=np.float64)
    if not np.all(np.isfinite(tod_given)):
        raise ValueError("physiology: time_of_day_min must be finite")
    dt = np.broadcast_to(dt_given, (n,))
    t = np.broadcast_to(tod_given, (n,)).copy()
    p = VitalsModelParams(*(np.asarray(f, dtype=np.float64) for f in params))
    st = VitalsModelState

    # Reversed layout (n_states, [n_sigma,] n_patients): per-patient (n,) rows broadcast.
    lo = VITALS_STATE_MIN.reshape((N_VITALS_STATES,) + (1,) * lead)
    hi = VITALS_STATE_MAX.reshape((N_VITALS_STATES,) + (1,) * lead)
    xt = np.clip(np.transpose(x), lo, hi)
    fever: FloatArray | float = 0.0
    oxygen: FloatArray | float = 0.0
    if u is not None:
        ut = np.transpose(np.nan_to_num(np.asarray(u, dtype=np.float64)))
        fever = ut[VitalsInput.FEVER]
        oxygen = _ALVEOLAR_MMHG * np.clip(ut[VitalsInput.FIO2], 0.0, 0.79)
    rhythm = _rhythm(p)
    base = rhythm.at(t)
    y = xt - (base if lead == 1 else base[:, np.newaxis, :])
    sat_base = oxygen_saturation(p.pao2)

    def upstream(s: FloatArray) -> tuple[FloatArray, ...]:
        """Drives of T, PaO2, MAP, PP from the stress."""
        return (p.stress_temperature * s + fever, oxygen - p.stress_pao2 * s,
                -p.stress_map * s, -p.stress_pulse_pressure * s)

    def downstream(s: FloatArray, y_t: FloatArray, y_p: FloatArray) -> tuple[FloatArray, ...]:
        """Drives of HR and RR from stress, fever and desaturation."""
        desaturation = sat_base - oxygen_saturation(p.pao2 + y_p)
        return (p.fever_heart_rate * y_t + p.stress_heart_rate * s
                + p.hypoxia_heart_rate * desaturation,
                p.fever_resp_rate * y_t + p.stress_resp_rate * s
                + p.hypoxia_resp_rate * desaturation)

    up_rows = (st.TEMPERATURE, st.PAO2, st.MAP, st.PULSE_PRESSURE)
    down_rows = (st.HEART_RATE, st.RESP_RATE)
    c_up = upstream(y[st.STRESS])
    c_down = downstream(y[st.STRESS], y[st.TEMPERATURE], y[st.PAO2])

    n_sub = np.ceil(dt / VITALS_MAX_SUBSTEP_MIN).astype(np.int64)
    h_full = np.divide(dt, n_sub, out=np.zeros_like(dt), where=n_sub > 0)
    tau = _rows(p, _TIME)
    full = _decay(h_full, tau)
    idle = _Decay(np.ones_like(tau), np.zeros_like(tau))

    def relax(row: int, w: _Decay, c0: FloatArray | float, c1: FloatArray | float,
              base_end: FloatArray) -> None:
        """Row `row` of `y` over the substep, clipped to the bounds at its end."""
        e, g = w.e[row], w.g[row]
        moved = e * y[row] + (1.0 - e) * c0 + g * (np.asarray(c1) - c0)
        b = base_end[row]
        y[row] = np.clip(b + moved, VITALS_STATE_MIN[row], VITALS_STATE_MAX[row]) - b

    for k in range(int(n_sub.max(initial=0))):
        if k < n_sub.min():
            w, h = full, h_full
        else:  # patients that have finished take steps of zero length (exact no-ops)
            active = k < n_sub
            w = _Decay(*(np.where(active, f, i) for f, i in zip(full, idle, strict=True)))
            h = np.where(active, h_full, 0.0)
        t = t + h
        base_end = rhythm.at(t)
        relax(st.STRESS, w, 0.0, 0.0, base_end)
        c_up_end = upstream(y[st.STRESS])
        for row, c0, c1 in zip(up_rows, c_up, c_up_end, strict=True):
            relax(row, w, c0, c1, base_end)
        c_down_end = downstream(y[st.STRESS], y[st.TEMPERATURE], y[st.PAO2])
        for row, c0, c1 in zip(down_rows, c_down, c_down_end, strict=True):
            relax(row, w, c0, c1, base_end)
        c_up, c_down = c_up_end, c_down_end

    base = rhythm.at(t)
    out = y + (base if lead == 1 else base[:, np.newaxis, :])
    return np.ascontiguousarray(np.transpose(out))
