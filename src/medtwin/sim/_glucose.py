"""Virtual type 1 diabetes patients: the UVA/Padova simulator (simglucose) on basal-bolus therapy.

Each patient is simglucose's `T1DSimEnv` with a Dexcom CGM, an Insulet pump, a seeded random
meal scenario and the basal-bolus controller. One simulated patient-hour (20 steps of 3 min)
takes about 0.06 s of one CPU core (after the two speed-ups below; 0.7 s as simglucose
ships), so a 20-patient ward runs far faster than real time.
simglucose (and its ~3 s import) is loaded on first use: it is the optional `sim` extra.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import numpy as np

from medtwin.domain import Channel, Reading
from medtwin.errors import ConfigError

# simglucose logs at INFO on every bolus, including glucose values: keep that out of our logs.
logging.getLogger("simglucose").setLevel(logging.WARNING)

COHORTS: tuple[str, ...] = ("adolescent", "adult", "child")
#: Virtual patients per simglucose cohort (`adult#001` … `adult#010`).
COHORT_SIZE = 10
SENSOR_NAME = "Dexcom"
PUMP_NAME = "Insulet"
#: A Dexcom CGM reports "LOW" below 39 mg/dL and "HIGH" above 400 mg/dL (simglucose's own
#: sensor table allows up to 600; we clip to what the real device can report).
CGM_MIN_MG_DL = 39.0
CGM_MAX_MG_DL = 400.0
_MINUTE_MS = 60_000
_EPOCH = datetime(1970, 1, 1)


def cohort_names(cohort: str | None = None) -> tuple[str, ...]:
    """Names of simglucose's virtual patients: all cohorts, or one of `COHORTS`."""
    if cohort is not None and cohort not in COHORTS:
        raise ValueError(f"sim: unknown cohort {cohort!r}; known: {', '.join(COHORTS)}")
    chosen = COHORTS if cohort is None else (cohort,)
    return tuple(f"{c}#{i:03d}" for c in chosen for i in range(1, COHORT_SIZE + 1))


class _Simglucose(NamedTuple):
    """The simglucose classes we use, imported on first use."""

    env: Any
    scenario: Any
    controller: Any
    patient: Any
    sensor: Any
    pump: Any


@functools.cache
def _simglucose() -> _Simglucose:
    """Import simglucose once; a ConfigError saying how to install it if it is missing."""
    try:
        from simglucose.actuator.pump import InsulinPump
        from simglucose.controller.basal_bolus_ctrller import BBController
        from simglucose.patient.t1dpatient import T1DPatient
        from simglucose.sensor.cgm import CGMSensor
        from simglucose.simulation.env import T1DSimEnv
        from simglucose.simulation.scenario_gen import RandomScenario
    except ImportError as exc:
        raise ConfigError(
            "sim: simglucose is not installed; install medtwin with the `sim` extra"
        ) from exc
    return _Simglucose(T1DSimEnv, RandomScenario, BBController, T1DPatient, CGMSensor,
                       InsulinPump)


class _AttributeParams:
    """A patient's parameter row with plain attributes: the ODE reads ~40 parameters per
    evaluation, and pandas attribute access made the simulator ~5× slower."""

    def __init__(self, row: Any) -> None:
        self.__dict__.update({str(k): v for k, v in row.to_dict().items()})
        self.iloc = row.iloc  # T1DPatient.reset() reads the initial state as iloc[2:15]


class _BasalBolus:
    """simglucose's `BBController`, consulted only at meals: without a meal its action is the
    patient's constant basal rate, and its pandas look-ups took half of each step's time."""

    def __init__(self, controller: Any) -> None:
        self._controller = controller
        self._basal_only: Any = None

    def policy(self, observation: Any, reward: Any, done: Any, **info: Any) -> Any:
        if info.get("meal", 0) > 0:
            return self._controller.policy(observation, reward, done, **info)
        if self._basal_only is None:
            self._basal_only = self._controller.policy(observation, reward, done, **info)
        return self._basal_only


def _build(name: str, start_ms: int, seed: int, fast: bool = True) -> tuple[Any, Any]:
    """A seeded simglucose environment for patient `name` and its controller.

    `fast=False` builds it exactly as simglucose's documentation does (to test that the
    speed-ups change nothing).
    """
    sg = _simglucose()
    patient_seed, sensor_seed, scenario_seed = (
        int(s) for s in np.random.default_rng(seed).integers(0, 2**31 - 1, size=3)
    )
    patient = sg.patient.withName(name, random_init_bg=True, seed=patient_seed)
    controller = sg.controller()
    if fast:
        patient._params = _AttributeParams(patient._params)
        controller = _BasalBolus(controller)
    # T1DSimEnv's clock is scenario.start_time + patient.t minutes; reset() rewinds the
    # patient to t = 0 and re-seeds sensor noise and meals, so it keeps our start time.
    env = sg.env(
        patient,
        sg.sensor.withName(SENSOR_NAME, seed=sensor_seed),
        sg.pump.withName(PUMP_NAME),
        sg.scenario(start_time=_utc_datetime(start_ms), seed=scenario_seed),
    )
    return env, controller


def _utc_datetime(time_ms: int) -> datetime:
    """The naive UTC datetime simglucose expects, exactly (no float seconds)."""
    return _EPOCH + timedelta(milliseconds=time_ms)


@dataclass(frozen=True, slots=True)
class GlucoseStep:
    """One simulator step: the devices' readings and the true blood glucose behind them.

    `readings` are the CGM glucose (mg/dL), carbohydrates eaten during the step (g) and the
    insulin the pump delivered during the step (U: bolus and basal as separate doses; doses
    at one time add up), all at `time_ms`, the end of the step. `true_bg` (mg/dL, mean over
    the step) is for validation only: no device reports it.
    """

    time_ms: int
    readings: tuple[Reading, ...]
    true_bg: float


class GlucosePatient:
    """A virtual T1D patient: UVA/Padova model, Dexcom CGM, Insulet pump, meals, basal-bolus.

    Deterministic for a given `name`, `start_ms` and `seed`. `start_ms` (epoch ms, UTC) must
    be a whole minute because simglucose's meal scenario works in minutes of the day.
    """

    def __init__(self, name: str, start_ms: int, seed: int) -> None:
        if name not in cohort_names():
            raise ValueError(f"sim: unknown simglucose patient {name!r}; see cohort_names()")
        if start_ms % _MINUTE_MS:
            raise ValueError("sim: start_ms must be a whole minute (multiple of 60000)")
        self._env, self._controller = _build(name, start_ms, seed)
        self._last = self._env.reset()
        self.name = name
        self.start_ms = start_ms
        self.sample_time_ms = round(float(self._env.sample_time) * _MINUTE_MS)
        self._steps = 0

    @property
    def time_ms(self) -> int:
        """Simulated time of the latest step (epoch ms, UTC)."""
        return self.start_ms + self._steps * self.sample_time_ms

    def step(self) -> GlucoseStep:
        """Advance one sensor sample time (3 min) and return what the devices report."""
        obs, reward, done, info = self._last
        action = self._controller.policy(obs, reward, done, **info)
        self._last = self._env.step(action)
        self._steps += 1
        obs, _, _, info = self._last
        now = self.time_ms
        minutes = self.sample_time_ms / _MINUTE_MS
        pump = self._env.pump
        cgm = min(max(float(obs.CGM), CGM_MIN_MG_DL), CGM_MAX_MG_DL)
        readings = [Reading(Channel.GLUCOSE, float(round(cgm)), now)]
        carbs = round(float(info["meal"]) * minutes, 1)
        if carbs > 0:
            readings.append(Reading(Channel.CARBS, carbs, now))
        bolus = round(float(pump.bolus(action.bolus)) * minutes, 4)
        if bolus > 0:
            readings.append(Reading(Channel.INSULIN, bolus, now))
        basal = round(float(pump.basal(action.basal)) * minutes, 4)
        if basal > 0:
            readings.append(Reading(Channel.INSULIN, basal, now))
        return GlucoseStep(now, tuple(readings), float(info["bg"]))
