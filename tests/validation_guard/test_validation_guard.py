"""The guard validation harness (validation/guard.py, validation/baselines.py): attacked runs
touch only their attack window, the scoring counts what the protocol says, the baselines
detect what they should, and the medtwin detector reads findings back from a real pipeline."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

VALIDATION = Path(__file__).resolve().parents[2] / "validation"
sys.path.insert(0, str(VALIDATION))

import baselines as bl  # noqa: E402

import guard as gd  # noqa: E402
from medtwin.domain import Channel  # noqa: E402


@pytest.fixture(scope="module")
def vitals() -> list[gd.Series]:
    return gd.simulate_vitals(3, 2, seed=5)


def _glucose_series(name: str = "synthetic#001") -> gd.Series:
    """Two days of a smooth synthetic CGM every 3 min (a sine around 130 mg/dL)."""
    t = gd.START_MS + (np.arange(2 * 480, dtype=np.int64) + 1) * gd.CGM_STEP_MS
    g = np.round(130.0 + 40.0 * np.sin(2 * np.pi * (t - gd.START_MS) / (6 * gd.HOUR_MS)))
    return gd.Series(name, "glucose (synthetic)", {Channel.GLUCOSE: (t, g)}, {})


def _clean_value(series: list[gd.Series], s: bl.Scenario, ch: Channel) -> np.ndarray:
    t_all, v_all = next(x for x in series if x.base == s.base).observed[ch]
    return np.asarray(v_all[np.isin(t_all, s.observed[ch][0])])


def test_attacked_runs_differ_from_the_clean_record_only_inside_the_attack(
        vitals: list[gd.Series]) -> None:
    series = [*vitals, _glucose_series()]
    runs = gd.attack_scenarios(series, gd.ATTACKS, per_kind=4, seed=3)
    assert len(runs) == 4 * len(gd.ATTACKS)
    changed_somewhere = 0
    for s in runs:
        ch = s.attack_channel
        assert ch is not None and s.attack_kind is not None
        assert s.attack_start_ms >= gd.START_MS + gd.DAY_MS          # a test day
        t, v = s.observed[ch]
        assert t[0] > s.attack_start_ms - gd.WARMUP_MS - 1
        assert t[-1] <= s.attack_end_ms + gd.GRACE_MS
        outside = (t < s.attack_start_ms) | (t >= s.attack_end_ms)
        clean = _clean_value(series, s, ch)
        np.testing.assert_array_equal(v[outside], clean[outside])
        changed_somewhere += int(np.any(v[~outside] != clean[~outside]))
        for other, (_, v_other) in s.observed.items():
            if other != ch:
                np.testing.assert_array_equal(v_other, _clean_value(series, s, other))
    assert changed_somewhere >= len(runs) - 4   # a freeze may hit a flat stretch


def test_attacked_runs_are_seeded(vitals: list[gd.Series]) -> None:
    a = gd.attack_scenarios(vitals, gd.ATTACKS[5:], per_kind=2, seed=9)
    b = gd.attack_scenarios(vitals, gd.ATTACKS[5:], per_kind=2, seed=9)
    c = gd.attack_scenarios(vitals, gd.ATTACKS[5:], per_kind=2, seed=10)
    assert [s.attack_start_ms for s in a] == [s.attack_start_ms for s in b]
    assert [s.attack_start_ms for s in a] != [s.attack_start_ms for s in c]


def _run(start: int, end: int, ch: Channel = Channel.HEART_RATE) -> bl.Scenario:
    return bl.Scenario("p1", "b", {}, {}, ch, "kind", start, end, start, end + gd.GRACE_MS, 5)


def test_scoring_counts_hits_on_the_attacked_channel_or_device_inside_the_window() -> None:
    start, end = gd.START_MS + gd.DAY_MS, gd.START_MS + gd.DAY_MS + gd.HOUR_MS
    s = _run(start, end)
    minute = gd.MINUTE_MS
    cases = {
        "other channel": ([bl.Hit("p1", Channel.SPO2, start + minute)], False, False),
        "other patient": ([bl.Hit("p2", Channel.HEART_RATE, start + minute)], False, False),
        "before": ([bl.Hit("p1", Channel.HEART_RATE, start - minute)], False, False),
        "too late": ([bl.Hit("p1", None, end + gd.GRACE_MS)], False, False),
        "grace": ([bl.Hit("p1", None, end + 10 * minute)], False, True),
        "during": ([bl.Hit("p1", Channel.HEART_RATE, start + 7 * minute),
                    bl.Hit("p1", Channel.HEART_RATE, start + 20 * minute)], True, True),
    }
    for name, (hits, during, detected) in cases.items():
        (score,) = gd.score_attacks([s], hits)
        assert (score.detected_during, score.detected) == (during, detected), name
    assert gd.score_attacks([s], cases["during"][0])[0].ttd_min == 7.0
    assert np.isnan(gd.score_attacks([s], [])[0].ttd_min)


def test_an_attack_that_changed_no_reading_is_not_scored() -> None:
    start, end = gd.START_MS + gd.DAY_MS, gd.START_MS + gd.DAY_MS + gd.HOUR_MS
    no_op = _run(start, end)._replace(attack_changed=0)
    assert gd.score_attacks([no_op, _run(start, end)], [])[0].scenario.attack_changed == 5
    assert len(gd.score_attacks([no_op], [])) == 0


def test_a_freeze_at_the_cgm_floor_is_a_no_op_run() -> None:
    t = gd.START_MS + np.arange(1, 2 * 480 + 1, dtype=np.int64) * gd.CGM_STEP_MS
    value = np.full(t.size, 39.0)                                   # the CGM reads LOW
    value[: t.size // 4] = 120.0
    series = [gd.Series("low#1", "glucose", {Channel.GLUCOSE: (t, value)}, {})]
    spec = gd.AttackSpec("freeze", Channel.GLUCOSE, "freeze", 0.0, 30 * gd.MINUTE_MS)
    spec_bias = gd.AttackSpec("bias", Channel.GLUCOSE, "bias", -30.0, 30 * gd.MINUTE_MS)
    frozen = gd.attack_scenarios(series, [spec, spec_bias], per_kind=3, seed=3)
    assert [s.attack_changed for s in frozen] == [0] * 6
    up = gd.AttackSpec("bias up", Channel.GLUCOSE, "bias", 40.0, 30 * gd.MINUTE_MS)
    runs = gd.attack_scenarios(series, [up], 3, seed=3)
    assert [(s.attack_changed, s.attack_hypo) for s in runs] == [(10, 0)] * 3   # LOW -> 79


@pytest.mark.parametrize(("level", "bias", "hypo"), [
    (55.0, -30.0, 10), (90.0, -30.0, 0), (45.0, 15.0, 0), (60.0, -15.0, 10)])
def test_an_attack_counts_as_hiding_no_hypoglycaemia_only_if_none_is_shown_milder(
        level: float, bias: float, hypo: int) -> None:
    """55 -> LOW keeps a low reading low, only worse (Clarke zone A); 90 -> 60 makes a normal
    reading low; 45 -> 60 shows a severe low (< 54) as a mild one, which hides it."""
    t = gd.START_MS + np.arange(1, 2 * 480 + 1, dtype=np.int64) * gd.CGM_STEP_MS
    series = [gd.Series("low#2", "glucose", {Channel.GLUCOSE: (t, np.full(t.size, level))},
                        {})]
    spec = gd.AttackSpec("bias", Channel.GLUCOSE, "bias", bias, 30 * gd.MINUTE_MS)
    runs = gd.attack_scenarios(series, [spec], 2, seed=4)
    assert [(s.attack_changed, s.attack_hypo) for s in runs] == [(10, hypo)] * 2


def test_false_alarms_count_episodes_on_scored_days_only() -> None:
    day2 = gd.START_MS + gd.DAY_MS
    clean = bl.Scenario("c", "b", {}, {}, None, None, 0, 0, day2, day2 + gd.DAY_MS)
    minute = gd.MINUTE_MS
    hits = [bl.Hit("c", Channel.GLUCOSE, day2 - minute),                  # training day
            bl.Hit("c", Channel.GLUCOSE, day2 + minute),
            bl.Hit("c", Channel.GLUCOSE, day2 + 20 * minute),              # same episode
            bl.Hit("c", Channel.GLUCOSE, day2 + 60 * minute),              # a new one
            bl.Hit("c", None, day2 + 61 * minute),                         # another channel
            bl.Hit("x", Channel.GLUCOSE, day2 + 5 * minute)]               # another patient
    assert gd.false_alarm_episodes(clean, hits) == 3


def test_wilson_interval_holds_the_proportion() -> None:
    lo, hi = gd.wilson(99, 100)
    assert lo < 0.99 < hi <= 1.0
    assert gd.wilson(0, 10)[0] == 0.0


def test_threshold_baseline_flags_a_bias_step_not_the_clean_record() -> None:
    series = [_glucose_series()]
    (clean,) = gd.clean_scenarios(series)
    assert bl.threshold_findings([clean]) == []
    spec = gd.AttackSpec("bias", Channel.GLUCOSE, "bias", 30.0, 2 * gd.HOUR_MS)
    (run,) = gd.attack_scenarios(series, [spec], per_kind=1, seed=1)
    (score,) = gd.score_attacks([run], bl.threshold_findings([run]))
    assert score.detected_during and score.ttd_min <= 3.0


def test_isolation_forest_is_fitted_on_training_days_and_seeded(
        vitals: list[gd.Series]) -> None:
    pytest.importorskip("sklearn", reason="the IsolationForest baseline needs the validate "
                        "extra")
    train = gd.training_days(vitals)
    assert all(t[-1] <= gd.START_MS + gd.DAY_MS for s in train.values()
               for t, _ in s.observed.values())
    spec = gd.AttackSpec("noise", Channel.HEART_RATE, "noise", 40.0, gd.HOUR_MS)
    runs = gd.attack_scenarios(vitals, [spec], per_kind=3, seed=2)
    a = bl.isolation_forest_findings(runs, train, seed=4)
    assert a == bl.isolation_forest_findings(runs, train, seed=4)
    assert all(s.detected_during for s in gd.score_attacks(runs, a))


def test_medtwin_detector_runs_scenarios_through_the_pipeline(
        vitals: list[gd.Series]) -> None:
    spec = gd.AttackSpec("noise", Channel.HEART_RATE, "noise", 40.0, gd.HOUR_MS)
    (run,) = gd.attack_scenarios(vitals[:1], [spec], per_kind=1, seed=6)
    short = run._replace(observed=gd._cut(run.observed, run.attack_start_ms - 2 * gd.HOUR_MS,
                                          run.end_ms))
    ticks: list[int] = []
    hits = gd.medtwin_findings([short], tick=ticks.append)
    assert sum(ticks) == sum(t.size for t, _ in short.observed.values())
    assert all(isinstance(h, bl.Hit) and h.patient_id == short.patient_id for h in hits)
    (score,) = gd.score_attacks([short], hits)   # a gross noise burst: the guard must see it
    assert score.detected_during
