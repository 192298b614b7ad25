"""Virtual cohorts for the validation: simglucose (UVA/Padova) patients on basal-bolus therapy,
with randomized meals, recorded as the twin sees them (CGM, carbs, insulin) and as the
simulator knows them (plasma and subcutaneous glucose).

Days 1..n run under the usual therapy; for the what-if check, the simulator is copied at the
end of the last-but-one day and the last day is re-run under each altered therapy (same
meals, same sensor noise, same patient state), so the two runs differ only by the therapy.
"""

from __future__ import annotations

import copy
import functools
import multiprocessing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np

from medtwin.sim import cohort_names
from medtwin.sim._glucose import CGM_MAX_MG_DL, CGM_MIN_MG_DL, _build

#: Midnight, 2024-03-04 UTC: every patient's day 1 starts here (meals are times of day).
START_MS = int(datetime(2024, 3, 4, tzinfo=UTC).timestamp() * 1000)
DT_MIN = 3.0
DAY_STEPS = 480
#: Lunch in simglucose's random scenario is drawn between 10:00 and 14:00.
LUNCH_MIN = (600.0, 840.0)


class Therapy(NamedTuple):
    """An altered therapy for the last day: meal boluses and basal scaled, lunch skipped."""

    name: str
    bolus_scale: float = 1.0
    basal_scale: float = 1.0
    skip_lunch: bool = False


THERAPIES: tuple[Therapy, ...] = (
    Therapy("boluses x1.3", bolus_scale=1.3),
    Therapy("lunch skipped", skip_lunch=True),
    Therapy("basal x0.8", basal_scale=0.8),
)


@dataclass
class Trace:
    """One patient's record on the 3-min grid (T steps); step k's inputs, reading at its end."""

    cgm: np.ndarray          # mg/dL, Dexcom (clipped to 39–400)
    carbs: np.ndarray        # g eaten during the step
    bolus: np.ndarray        # U
    basal: np.ndarray        # U
    plasma: np.ndarray       # mg/dL, plasma glucose Gp/Vg at the step's end (truth)
    gsub: np.ndarray         # mg/dL, simglucose's "BG": subcutaneous glucose, step mean

    @property
    def delivered(self) -> np.ndarray:
        return np.asarray(self.bolus + self.basal)


@dataclass
class PatientRecord:
    name: str
    seed: int
    body_weight: float
    usual: Trace                       # all days, usual therapy
    altered: dict[str, Trace]          # last day only, per therapy name


class _Altered:
    """A controller that applies `therapy` to what the usual controller decides."""

    def __init__(self, inner: Any, therapy: Therapy) -> None:
        self._inner, self._therapy = inner, therapy

    def policy(self, observation: Any, reward: Any, done: Any, **info: Any) -> Any:
        a = self._inner.policy(observation, reward, done, **info)
        return type(a)(basal=a.basal * self._therapy.basal_scale,
                       bolus=a.bolus * self._therapy.bolus_scale)


class _SkipLunch:
    """simglucose's scenario with the lunch (a meal between 10:00 and 14:00) removed."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.start_time = inner.start_time

    def get_action(self, t: datetime) -> Any:
        a = self._inner.get_action(t)
        minute = t.hour * 60 + t.minute
        if a.meal > 0 and LUNCH_MIN[0] <= minute < LUNCH_MIN[1]:
            return type(a)(meal=0)
        return a

    def reset(self) -> None:
        self._inner.reset()


def _run(env: Any, controller: Any, last: Any, steps: int) -> tuple[Trace, Any]:
    rows = np.zeros((steps, 6))
    vg = float(env.patient._params.Vg)
    for k in range(steps):
        obs, reward, done, info = last
        action = controller.policy(obs, reward, done, **info)
        last = env.step(action)
        obs, _, _, info = last
        rows[k] = (min(max(float(obs.CGM), CGM_MIN_MG_DL), CGM_MAX_MG_DL),
                   float(info["meal"]) * DT_MIN,
                   float(env.pump.bolus(action.bolus)) * DT_MIN,
                   float(env.pump.basal(action.basal)) * DT_MIN,
                   float(env.patient.state[3]) / vg,
                   float(info["bg"]))
    return Trace(*(np.ascontiguousarray(c) for c in rows.T)), last


def _concat(a: Trace, b: Trace) -> Trace:
    return Trace(*(np.concatenate([x, y]) for x, y in zip(
        (a.cgm, a.carbs, a.bolus, a.basal, a.plasma, a.gsub),
        (b.cgm, b.carbs, b.bolus, b.basal, b.plasma, b.gsub), strict=True)))


def simulate_patient(name: str, seed: int, days: int,
                     therapies: tuple[Therapy, ...] = THERAPIES) -> PatientRecord:
    """`days` days of `name` (seeded), the last one also under each of `therapies`."""
    env, controller = _build(name, START_MS, seed)
    last = env.reset()
    body_weight = float(env.patient._params.BW)
    first, last = _run(env, controller, last, DAY_STEPS * (days - 1))
    altered = {}
    for therapy in therapies:
        env_t, ctl_t, last_t = copy.deepcopy((env, controller, last))
        if therapy.skip_lunch:
            env_t.scenario = _SkipLunch(env_t.scenario)
        altered[therapy.name] = _run(env_t, _Altered(ctl_t, therapy), last_t, DAY_STEPS)[0]
    final, _ = _run(env, controller, last, DAY_STEPS)
    return PatientRecord(name, seed, body_weight, _concat(first, final), altered)


def _simulate_star(args: tuple[str, int, int]) -> PatientRecord:
    return simulate_patient(*args)


def simulate_cohort(cohorts: tuple[str, ...], per_cohort: int, days: int,
                    seed: int = 1, processes: int | None = None) -> list[PatientRecord]:
    """The first `per_cohort` patients of each cohort, patient i seeded `seed * 1000 + i`."""
    jobs = [(name, seed * 1000 + i, days)
            for c in cohorts for i, name in enumerate(cohort_names(c)[:per_cohort])]
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        return list(pool.map(_simulate_star, jobs))


@functools.cache
def quest(name: str) -> dict[str, float]:
    """simglucose's therapy parameters of `name` (CR g/U, CF mg/dL/U, TDI U, basal U/h)."""
    import pandas as pd
    from simglucose.controller.basal_bolus_ctrller import CONTROL_QUEST, PATIENT_PARA_FILE

    q = pd.read_csv(CONTROL_QUEST).set_index("Name").loc[name]
    p = pd.read_csv(PATIENT_PARA_FILE).set_index("Name").loc[name]
    return {"CR": float(q.CR), "CF": float(q.CF), "TDI": float(q.TDI),
            "basal_u_h": float(p.u2ss * p.BW / 6000 * 60), "BW": float(p.BW)}


#: Patients per cohort in the full validation (all of simglucose's).
COHORT_SIZE_USED = 10
