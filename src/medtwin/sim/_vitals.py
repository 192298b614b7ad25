"""Plausible vital signs for many patients at once, as array operations over patients.

Every array has shape (n_patients,). Each vital is a resting baseline plus a daily rhythm,
activity bouts, physiological coupling (fever raises heart and breathing rate), an optional
sepsis-like deterioration and AR(1) noise, then device measurement noise and rounding.
Times are epoch ms; the daily rhythm uses the UTC time of day as the patients' local time.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from medtwin.domain import Channel

FloatArray = npt.NDArray[np.float64]

_HOUR_MS = 3_600_000
_DAY_H = 24.0
#: Hour of the day at which heart rate, blood pressure and temperature peak (trough 12 h
#: later, ~04:00), after the human circadian rhythm of core temperature.
PEAK_HOUR = 16.0
#: Patients are awake (and may be active) from WAKE_HOUR to SLEEP_HOUR.
WAKE_HOUR, SLEEP_HOUR = 7.0, 22.0
#: Mean time between activity bouts while awake, their mean duration, and the time constant
#: with which the body follows a change of activity.
BOUT_INTERVAL_S = 90 * 60.0
BOUT_MEAN_S = 12 * 60.0
ACTIVITY_TAU_S = 120.0
#: A deterioration ramps from onset to full severity over this time (sepsis-like, hours).
DETERIORATION_RAMP_S = 2 * 3600.0
#: Core temperature above which fever raises heart rate and breathing rate.
FEVER_THRESHOLD_C = 37.2

# Row order of the (6, n_patients) noise arrays.
_HR, _SPO2, _RR, _SBP, _DBP, _TEMP = range(6)
#: Time constants (s) and stationary standard deviations of the physiological AR(1) noise.
_NOISE_TAU_S = np.array([300.0, 600.0, 300.0, 600.0, 600.0, 1800.0])[:, None]
_NOISE_SD = np.array([3.0, 0.6, 1.0, 4.0, 3.0, 0.08])[:, None]
#: Standard deviation of each device's white measurement noise.
_MEASUREMENT_SD = np.array([1.0, 0.5, 0.7, 3.0, 2.0, 0.05])[:, None]

#: Physiologically sensible range of each output (all inside `Channel.spec`'s possible range).
LIMITS: dict[Channel, tuple[float, float]] = {
    Channel.HEART_RATE: (30.0, 220.0),
    Channel.SPO2: (70.0, 100.0),
    Channel.RESP_RATE: (4.0, 60.0),
    Channel.SYSTOLIC_BP: (60.0, 250.0),
    Channel.DIASTOLIC_BP: (30.0, 150.0),
    Channel.TEMPERATURE: (34.0, 42.5),
}
#: Smallest pulse pressure (systolic minus diastolic) a cuff reports, mmHg.
MIN_PULSE_PRESSURE = 10.0


@dataclass(frozen=True, slots=True)
class VitalsParams:
    """Per-patient resting baselines and deterioration onsets, arrays of shape (n_patients,)."""

    heart_rate: FloatArray
    """Resting heart rate at the daily mean, beats/min."""
    spo2: FloatArray
    """Resting oxygen saturation, %."""
    resp_rate: FloatArray
    """Resting respiratory rate, breaths/min."""
    systolic_bp: FloatArray
    """Resting systolic blood pressure at the daily mean, mmHg."""
    diastolic_bp: FloatArray
    """Resting diastolic blood pressure at the daily mean, mmHg."""
    temperature: FloatArray
    """Core temperature at the daily mean, °C."""
    onset_ms: FloatArray
    """Start of a sepsis-like deterioration (epoch ms); +inf for a patient who stays well."""

    @property
    def n_patients(self) -> int:
        return int(self.heart_rate.shape[0])

    @classmethod
    def sample(cls, n_patients: int, rng: np.random.Generator,
               onset_ms: npt.ArrayLike | None = None) -> VitalsParams:
        """Baselines of `n_patients` healthy adults; `onset_ms` per patient (+inf: none)."""
        if n_patients < 1:
            raise ValueError("sim: n_patients must be at least 1")
        n = n_patients
        systolic = np.clip(rng.normal(122.0, 10.0, n), 110.0, 150.0)
        diastolic = np.clip(rng.normal(76.0, 7.0, n), 60.0, 92.0)
        onsets = np.full(n, np.inf) if onset_ms is None else np.asarray(onset_ms, np.float64)
        if onsets.shape != (n,):
            raise ValueError("sim: onset_ms must hold one value per patient")
        return cls(
            heart_rate=np.clip(rng.normal(72.0, 8.0, n), 52.0, 95.0),
            spo2=np.clip(rng.normal(97.5, 0.8, n), 95.5, 99.5),
            resp_rate=np.clip(rng.normal(16.0, 1.5, n), 13.0, 20.0),
            systolic_bp=systolic,
            diastolic_bp=np.minimum(diastolic, systolic - 30.0),
            temperature=np.clip(rng.normal(36.8, 0.2, n), 36.3, 37.1),
            onset_ms=onsets,
        )

    def with_onset(self, onset_ms: npt.ArrayLike) -> VitalsParams:
        """The same patients with other deterioration onsets (+inf: none)."""
        onsets = np.asarray(onset_ms, np.float64)
        if onsets.shape != (self.n_patients,):
            raise ValueError("sim: onset_ms must hold one value per patient")
        return dataclasses.replace(self, onset_ms=onsets)


@dataclass(frozen=True, slots=True)
class VitalsState:
    """The hidden state of the vitals model; arrays of shape (n_patients,) unless noted."""

    time_ms: int
    noise: FloatArray
    """Physiological AR(1) noise, shape (6, n_patients): HR, SpO2, RR, SBP, DBP, temperature."""
    activity: FloatArray
    """How active the body currently is, 0 (rest) to 1 (brisk exercise)."""
    bout_left_s: FloatArray
    """Time left in the current activity bout, s (0: no bout)."""
    bout_intensity: FloatArray
    """Intensity of the current activity bout, 0 to 1."""


@dataclass(frozen=True, slots=True)
class VitalSigns:
    """What the devices measure at `time_ms`, rounded to device precision; shape (n_patients,)."""

    time_ms: int
    heart_rate: FloatArray
    spo2: FloatArray
    resp_rate: FloatArray
    systolic_bp: FloatArray
    diastolic_bp: FloatArray
    temperature: FloatArray

    def by_channel(self) -> dict[Channel, FloatArray]:
        """The values keyed by the channel that carries them."""
        return {
            Channel.HEART_RATE: self.heart_rate,
            Channel.SPO2: self.spo2,
            Channel.RESP_RATE: self.resp_rate,
            Channel.SYSTOLIC_BP: self.systolic_bp,
            Channel.DIASTOLIC_BP: self.diastolic_bp,
            Channel.TEMPERATURE: self.temperature,
        }


def vitals_init(params: VitalsParams, start_ms: int, rng: np.random.Generator) -> VitalsState:
    """A resting state at `start_ms`, with noise drawn from its stationary distribution."""
    n = params.n_patients
    return VitalsState(
        time_ms=start_ms,
        noise=_NOISE_SD * rng.standard_normal((6, n)),
        activity=np.zeros(n),
        bout_left_s=np.zeros(n),
        bout_intensity=np.zeros(n),
    )


def deterioration_severity(params: VitalsParams, time_ms: int) -> FloatArray:
    """How far each patient's deterioration has gone at `time_ms`: 0 (well) to 1 (septic)."""
    progress = np.clip((time_ms - params.onset_ms) / (DETERIORATION_RAMP_S * 1000.0), 0.0, 1.0)
    result: FloatArray = progress * progress * (3.0 - 2.0 * progress)  # smoothstep
    return result


def vitals_step(params: VitalsParams, state: VitalsState, dt_s: float,
                rng: np.random.Generator) -> tuple[VitalsState, VitalSigns]:
    """Advance every patient by `dt_s` seconds; the new state and the measured vital signs.

    The random draws have the same shapes at every step whatever the state, so two runs with
    the same seed differ only where their parameters (e.g. deterioration onsets) differ.
    """
    if dt_s <= 0:
        raise ValueError("sim: dt_s must be positive")
    n = params.n_patients
    time_ms = state.time_ms + round(dt_s * 1000.0)
    hour = (time_ms / _HOUR_MS) % _DAY_H
    rhythm = np.cos(2.0 * np.pi * (hour - PEAK_HOUR) / _DAY_H)  # +1 at 16:00, -1 at 04:00
    asleep = 0.0 if WAKE_HOUR <= hour < SLEEP_HOUR else 1.0
    severity = deterioration_severity(params, time_ms)

    # Activity bouts: start at random while awake (rarely when unwell), last a random time.
    u_start, u_length, u_intensity = rng.random((3, n))
    start_rate = (1.0 - asleep) * (1.0 - severity) / BOUT_INTERVAL_S
    starts = (state.bout_left_s <= 0.0) & (u_start < -np.expm1(-start_rate * dt_s))
    bout_left_s = np.where(starts, -BOUT_MEAN_S * np.log1p(-u_length),
                           np.maximum(state.bout_left_s - dt_s, 0.0))
    intensity = np.where(starts, 0.2 + 0.8 * u_intensity, state.bout_intensity)
    target = np.where(bout_left_s > 0.0, intensity, 0.0)
    activity = target + (state.activity - target) * np.exp(-dt_s / ACTIVITY_TAU_S)

    # Physiological noise: exact AR(1) discretisation, stationary sd _NOISE_SD.
    phi = np.exp(-dt_s / _NOISE_TAU_S)
    noise = phi * state.noise + _NOISE_SD * np.sqrt(1.0 - phi * phi) * rng.standard_normal((6, n))

    temperature = (params.temperature + 0.35 * rhythm + 0.1 * activity + 2.1 * severity
                   + noise[_TEMP])
    fever = np.maximum(temperature - FEVER_THRESHOLD_C, 0.0)
    heart_rate = (params.heart_rate + 6.0 * rhythm - 4.0 * asleep + 35.0 * activity
                  + 10.0 * fever + 25.0 * severity + noise[_HR])
    resp_rate = (params.resp_rate + 0.8 * rhythm + 6.0 * activity + 2.5 * fever
                 + 8.0 * severity + noise[_RR])
    spo2 = params.spo2 - 1.0 * activity - 7.0 * severity + noise[_SPO2]
    systolic = (params.systolic_bp + 5.0 * rhythm - 5.0 * asleep + 18.0 * activity
                - 40.0 * severity + noise[_SBP])
    diastolic = (params.diastolic_bp + 3.0 * rhythm - 4.0 * asleep + 6.0 * activity
                 - 22.0 * severity + 0.3 * noise[_SBP] + noise[_DBP])

    measured = np.stack([heart_rate, spo2, resp_rate, systolic, diastolic, temperature])
    measured = measured + _MEASUREMENT_SD * rng.standard_normal((6, n))
    hr, sat, rr, sbp, dbp, temp = measured
    sbp = _bounded(np.round(sbp), Channel.SYSTOLIC_BP)
    dbp = np.minimum(_bounded(np.round(dbp), Channel.DIASTOLIC_BP), sbp - MIN_PULSE_PRESSURE)
    signs = VitalSigns(
        time_ms=time_ms,
        heart_rate=_bounded(np.round(hr), Channel.HEART_RATE),
        spo2=_bounded(np.round(sat), Channel.SPO2),
        resp_rate=_bounded(np.round(rr), Channel.RESP_RATE),
        systolic_bp=sbp,
        diastolic_bp=dbp,
        temperature=_bounded(np.round(temp, 1), Channel.TEMPERATURE),
    )
    new_state = VitalsState(time_ms, noise, activity, bout_left_s, intensity)
    return new_state, signs


def _bounded(values: FloatArray, channel: Channel) -> FloatArray:
    """`values` clipped to the channel's physiologically sensible range."""
    low, high = LIMITS[channel]
    result: FloatArray = np.clip(values, low, high)
    return result
