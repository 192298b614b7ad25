"""UVA/Padova glucose patients: plausible CGM that follows the true glucose, meals and insulin."""

from __future__ import annotations

import csv
import logging
from datetime import UTC, datetime

import numpy as np
import pytest

from medtwin.domain import Channel
from medtwin.sim import GlucosePatient, GlucoseStep, _glucose, cohort_names

START_MS = int(datetime(2024, 3, 4, 6, 0, tzinfo=UTC).timestamp() * 1000)
STEP_MS = 3 * 60_000
HOURS = 12
STEPS = HOURS * 20


Runs = dict[str, list[GlucoseStep]]


@pytest.fixture(scope="module")
def runs() -> Runs:
    """12 simulated hours (06:00-18:00 UTC) of two patients."""
    result: Runs = {}
    for name, seed in (("adult#001", 1), ("adolescent#003", 2)):
        patient = GlucosePatient(name, START_MS, seed)
        result[name] = [patient.step() for _ in range(STEPS)]
    return result


def _values(steps: list[GlucoseStep], channel: Channel) -> list[float]:
    return [r.value for s in steps for r in s.readings if r.channel == channel]


def test_cohort_names_are_simglucose_patients() -> None:
    from simglucose.patient.t1dpatient import PATIENT_PARA_FILE

    with open(PATIENT_PARA_FILE, newline="") as handle:
        shipped = {row["Name"] for row in csv.DictReader(handle)}
    assert set(cohort_names()) == shipped
    assert len(cohort_names()) == 30
    assert cohort_names("adult")[0] == "adult#001"
    assert cohort_names("child")[-1] == "child#010"
    with pytest.raises(ValueError, match="sim: unknown cohort 'elderly'"):
        cohort_names("elderly")


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="sim: unknown simglucose patient 'adult#011'"):
        GlucosePatient("adult#011", START_MS, 0)
    with pytest.raises(ValueError, match="sim: start_ms must be a whole minute"):
        GlucosePatient("adult#001", START_MS + 1, 0)


def test_steps_are_three_minutes_apart_in_epoch_ms(runs: Runs) -> None:
    for steps in runs.values():
        assert [s.time_ms for s in steps] == [START_MS + (k + 1) * STEP_MS for k in range(STEPS)]
        for s in steps:
            assert all(r.time_ms == s.time_ms for r in s.readings)


def test_cgm_is_plausible_and_follows_true_glucose(runs: Runs) -> None:
    for steps in runs.values():
        cgm = np.array(_values(steps, Channel.GLUCOSE))
        bg = np.array([s.true_bg for s in steps])
        assert cgm.shape == (STEPS,)  # exactly one CGM reading per step
        assert np.all((cgm >= 39) & (cgm <= 400))
        assert np.all(cgm == np.round(cgm))  # mg/dL integers, as a Dexcom reports
        assert 60 < bg.mean() < 250 and bg.std() > 5  # a living T1D patient, not a flat line
        assert np.corrcoef(cgm, bg)[0, 1] > 0.9
        assert np.mean(np.abs(cgm - bg)) < 25


def test_meals_bring_carbs_then_a_bolus_and_a_glucose_rise(
        runs: Runs) -> None:
    for steps in runs.values():
        basal = {r.value for s in steps for r in s.readings
                 if r.channel == Channel.INSULIN and r.value < 0.5}
        assert len(basal) == 1 and 0 < basal.pop() < 0.5  # constant basal every 3 min
        meals = [k for k, s in enumerate(steps)
                 if any(r.channel == Channel.CARBS for r in s.readings)]
        assert len(meals) >= 2  # breakfast and lunch at least, in 06:00-18:00
        for k in (k for k in meals if k + 1 < STEPS):
            carbs = _values([steps[k]], Channel.CARBS)[0]
            assert 1 <= carbs <= 150
            # The controller sees the meal at the end of step k; the pump boluses in step k+1.
            doses = _values([steps[k + 1]], Channel.INSULIN)
            assert len(doses) == 2 and max(doses) > min(doses)
            if carbs >= 30:  # a main meal, not a snack
                assert max(doses) > 1.0
                assert max(s.true_bg for s in steps[k : k + 40]) > steps[k].true_bg + 10
        non_meal = [k + 1 for k in range(STEPS - 1) if k not in meals]
        assert all(len(_values([steps[k]], Channel.INSULIN)) == 1 for k in non_meal)


def test_simglucose_logs_nothing_below_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    patient = GlucosePatient("adult#004", START_MS, 3)  # breakfast at 06:15, then a bolus
    steps = [patient.step() for _ in range(8)]
    assert any(r.channel == Channel.CARBS for s in steps for r in s.readings)
    assert [r.name for r in caplog.records if r.name.startswith("simglucose")] == []


def test_same_seed_same_patient_other_seed_other_patient() -> None:
    first = [GlucosePatient("child#002", START_MS, 5).step() for _ in range(1)]
    a = GlucosePatient("child#002", START_MS, 5)
    b = GlucosePatient("child#002", START_MS, 5)
    c = GlucosePatient("child#002", START_MS, 6)
    run_a, run_b, run_c = ([p.step() for _ in range(20)] for p in (a, b, c))
    assert run_a == run_b
    assert run_a[0] == first[0]
    assert [s.true_bg for s in run_a] != [s.true_bg for s in run_c]


def test_speed_ups_do_not_change_the_simulation() -> None:
    """Our fast parameter view and controller cache match simglucose as shipped, exactly."""
    name, seed, steps = "adult#004", 3, 30
    ours = GlucosePatient(name, START_MS, seed)
    got = [ours.step() for _ in range(steps)]
    env, controller = _glucose._build(name, START_MS, seed, fast=False)
    obs, reward, done, info = env.reset()
    meals = 0
    for step in got:
        action = controller.policy(obs, reward, done, **info)
        obs, reward, done, info = env.step(action)
        meals += info["meal"] > 0
        assert step.true_bg == info["bg"]
        assert _values([step], Channel.GLUCOSE) == [round(min(max(obs.CGM, 39), 400))]
        assert sum(_values([step], Channel.INSULIN)) == pytest.approx(
            3 * (action.basal + action.bolus), abs=1e-3)
    assert meals >= 1  # the comparison covered the controller's bolus path
