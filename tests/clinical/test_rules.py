"""Clinical rules: start and hold thresholds (hysteresis), edge triggering with escalation
(`step_rules`), and explanations that state the value, the threshold and `no_alert_if`."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medtwin.clinical import (
    HYPER_MG_DL,
    HYPO_LEVEL_1_MG_DL,
    HYPO_LEVEL_2_MG_DL,
    N_RULES,
    RULES,
    explain,
    news2_from_estimates,
    rule_conditions,
    step_rules,
)
from medtwin.domain import N_CHANNELS, Channel, Severity

NORMAL = {"respiration_rate": 16.0, "spo2": 97.0, "systolic_bp": 120.0, "pulse": 72.0,
          "temperature": 37.0}
NAMES = [r.name for r in RULES]


def estimates(glucose: float = math.nan, **vitals: float) -> np.ndarray:
    """One patient's row of estimates (n_channels,), normal vitals unless given."""
    v = {**NORMAL, **vitals}
    row = np.full(N_CHANNELS, math.nan)
    row[Channel.GLUCOSE] = glucose
    row[Channel.RESP_RATE] = v["respiration_rate"]
    row[Channel.SPO2] = v["spo2"]
    row[Channel.SYSTOLIC_BP] = v["systolic_bp"]
    row[Channel.HEART_RATE] = v["pulse"]
    row[Channel.TEMPERATURE] = v["temperature"]
    return row


def _names(flags: np.ndarray) -> list[str]:
    return [NAMES[i] for i in np.flatnonzero(flags)]


def starting(row: np.ndarray) -> list[str]:
    conditions = rule_conditions(row[np.newaxis, :])
    assert conditions.start.shape == conditions.hold.shape == (1, N_RULES)
    return _names(conditions.start[0])


def holding(row: np.ndarray) -> list[str]:
    return _names(rule_conditions(row[np.newaxis, :]).hold[0])


@pytest.mark.parametrize(("glucose", "expected"), [
    (100.0, []), (70.0, []), (69.9, ["hypoglycaemia-level-1"]), (54.0, ["hypoglycaemia-level-1"]),
    (53.9, ["hypoglycaemia-level-1", "hypoglycaemia-level-2"]), (250.0, []),
    (250.1, ["hyperglycaemia"]), (math.nan, []),
])
def test_glucose_rules_start_at_the_consensus_thresholds(glucose: float,
                                                         expected: list[str]) -> None:
    assert starting(estimates(glucose)) == expected


@pytest.mark.parametrize(("glucose", "expected"), [
    (74.9, ["hypoglycaemia-level-1"]), (75.0, []),
    (58.9, ["hypoglycaemia-level-1", "hypoglycaemia-level-2"]),
    (59.0, ["hypoglycaemia-level-1"]), (240.1, ["hyperglycaemia"]), (240.0, []),
])
def test_glucose_rules_hold_until_clearly_back(glucose: float, expected: list[str]) -> None:
    assert holding(estimates(glucose)) == expected


def test_news2_rules_mean_at_least_this_bad() -> None:
    assert starting(estimates()) == []
    assert starting(estimates(pulse=95, respiration_rate=10, temperature=38.5, spo2=95)) == []
    assert starting(estimates(spo2=91)) == ["news2-low-medium"]                  # a single 3
    assert starting(estimates(pulse=120, respiration_rate=22, temperature=38.5)) == [
        "news2-low-medium", "news2-medium"]                                      # total 5
    assert starting(estimates(pulse=140, respiration_rate=28, spo2=91)) == [
        "news2-low-medium", "news2-medium", "news2-high"]                        # total 9


def test_news2_rules_hold_two_points_below() -> None:
    six = estimates(pulse=120, respiration_rate=22, temperature=39.5)            # total 6
    assert starting(six) == ["news2-low-medium", "news2-medium"]
    assert holding(six) == ["news2-low-medium", "news2-medium", "news2-high"]
    four = estimates(pulse=95, respiration_rate=10, temperature=38.5, spo2=95)   # total 4
    assert holding(four) == ["news2-low-medium", "news2-medium"]


def run(series: list[np.ndarray]) -> list[tuple[int, str]]:
    """(step, rule) of every alert fired while one patient goes through `series`."""
    active = np.zeros((1, N_RULES), dtype=bool)
    fired: list[tuple[int, str]] = []
    for i, row in enumerate(series):
        step = step_rules(active, row[np.newaxis, :])
        assert step.fired_rows.tolist() == [0] * len(step.fired_rules)
        fired += [(i, NAMES[k]) for k in step.fired_rules]
        active = step.active
    return fired


def test_a_rule_fires_once_when_it_starts_and_rearms_when_it_ends() -> None:
    glucose = [100, 65, 66, 72, 64, 80, 60]  # 72 is still held (< 75); 80 ends it
    assert run([estimates(g) for g in glucose]) == [(1, "hypoglycaemia-level-1"),
                                                    (6, "hypoglycaemia-level-1")]


def test_escalation_fires_the_more_severe_rule() -> None:
    assert run([estimates(g) for g in (100, 65, 50, 52, 65)]) == [
        (1, "hypoglycaemia-level-1"), (2, "hypoglycaemia-level-2")]


def test_straight_to_the_top_fires_one_alert() -> None:
    assert run([estimates(100), estimates(45)]) == [(1, "hypoglycaemia-level-2")]
    crash = estimates(pulse=140, respiration_rate=28, spo2=88, systolic_bp=85, temperature=39.5)
    assert run([estimates(), crash, crash]) == [(1, "news2-high")]


def test_families_are_independent() -> None:
    both = estimates(300, pulse=140, respiration_rate=28, spo2=91)
    assert run([estimates(100), both]) == [(1, "news2-high"), (1, "hyperglycaemia")]


def test_step_rules_over_many_patients() -> None:
    active = np.zeros((3, N_RULES), dtype=bool)
    active[0, NAMES.index("hypoglycaemia-level-1")] = True
    values = np.stack([estimates(60), estimates(60), estimates(100)])
    step = step_rules(active, values)
    assert list(zip(step.fired_rows.tolist(), step.fired_rules.tolist(), strict=True)) == [
        (1, NAMES.index("hypoglycaemia-level-1"))]
    assert _names(step.active[0]) == _names(step.active[1]) == ["hypoglycaemia-level-1"]
    assert _names(step.active[2]) == []
    assert not active[1].any()  # the input is not modified


def test_rule_catalogue() -> None:
    assert {r.name: r.severity for r in RULES} == {
        "news2-low-medium": Severity.LOW, "news2-medium": Severity.MEDIUM,
        "news2-high": Severity.HIGH, "hypoglycaemia-level-1": Severity.MEDIUM,
        "hypoglycaemia-level-2": Severity.HIGH, "hyperglycaemia": Severity.LOW}
    assert (HYPO_LEVEL_1_MG_DL, HYPO_LEVEL_2_MG_DL, HYPER_MG_DL) == (70.0, 54.0, 250.0)
    assert RULES[NAMES.index("hyperglycaemia")].channels == (Channel.GLUCOSE,)


# Explanations ---------------------------------------------------------------------------------

def test_explain_hypoglycaemia() -> None:
    alert = explain(NAMES.index("hypoglycaemia-level-2"), "pt-9", estimates(48.26), 5_000)
    assert (alert.patient_id, alert.rule, alert.severity, alert.time_ms) == (
        "pt-9", "hypoglycaemia-level-2", Severity.HIGH, 5_000)
    assert alert.summary == ("Twin glucose estimate 48 mg/dL is below 54 mg/dL "
                             "(hypoglycaemia level 2).")
    assert alert.evidence["observed"] == 48.3
    assert alert.evidence["threshold"] == 54.0
    assert alert.evidence["no_alert_if"] == "glucose >= 54 mg/dL"
    assert alert.evidence["code"] == "99504-3" and alert.evidence["unit"] == "mg/dL"
    assert alert.evidence["expected"] == "70-250 mg/dL (no glucose alert)"
    assert alert.evidence["channels"] == ["99504-3"]
    assert alert.evidence["since"] == "1970-01-01T00:00:05Z"


def test_explain_level_1_and_hyperglycaemia() -> None:
    level1 = explain(NAMES.index("hypoglycaemia-level-1"), "p", estimates(62.0), 0)
    assert level1.evidence["threshold"] == 70.0
    assert level1.evidence["no_alert_if"] == "glucose >= 70 mg/dL"
    hyper = explain(NAMES.index("hyperglycaemia"), "p", estimates(301.0), 0)
    assert hyper.summary == "Twin glucose estimate 301 mg/dL is above 250 mg/dL (hyperglycaemia)."
    assert hyper.evidence["no_alert_if"] == "glucose <= 250 mg/dL"
    assert hyper.evidence["observed"] == 301.0


def test_explain_news2_names_each_contribution() -> None:
    row = estimates(pulse=140.2, respiration_rate=28, spo2=90, systolic_bp=88, temperature=39.54)
    alert = explain(NAMES.index("news2-high"), "pt-1", row, 7)
    assert alert.severity is Severity.HIGH
    assert alert.summary == (
        "NEWS2 14 (high clinical risk): respiration_rate 28 /min +3, spo2 90 % +3, "
        "systolic_bp 88 mm[Hg] +3, pulse 140 /min +3, temperature 39.5 Cel +2. "
        "Consciousness and supplemental oxygen are not sensed and scored 0.")
    ev = alert.evidence
    assert (ev["observed"], ev["threshold"], ev["no_alert_if"]) == (
        14, "total >= 7", "a total below 7")
    assert [c["points"] for c in ev["contributions"]] == [3, 3, 3, 3, 2]
    assert [c["value"] for c in ev["contributions"]] == [28, 90, 88, 140, 39.5]
    assert [c["code"] for c in ev["contributions"]] == [
        "9279-1", "59408-5", "8480-6", "8867-4", "8310-5"]
    assert ev["not_observed"] == []
    assert ev["assumed"] == {"consciousness": "alert", "supplemental_oxygen": "air"}
    assert ev["channels"] == ["9279-1", "59408-5", "8480-6", "8867-4", "8310-5"]
    assert ev["expected"].startswith("NEWS2 0-4") and ev["since"] == "1970-01-01T00:00:00Z"


def test_explain_news2_thresholds_per_band() -> None:
    row = estimates(pulse=120, respiration_rate=22, temperature=38.5)
    low = explain(NAMES.index("news2-low-medium"), "p", row, 0).evidence
    medium = explain(NAMES.index("news2-medium"), "p", row, 0).evidence
    assert (low["threshold"], low["no_alert_if"]) == (
        "any parameter 3", "no single parameter scoring 3 and a total below 5")
    assert (medium["threshold"], medium["no_alert_if"]) == ("total >= 5", "a total below 5")


def test_explain_news2_with_only_temperature_missing() -> None:
    row = estimates(spo2=91)
    row[Channel.TEMPERATURE] = math.nan
    alert = explain(NAMES.index("news2-low-medium"), "pt-1", row, 0)
    assert alert.evidence["not_observed"] == ["temperature"]


def test_explain_news2_lists_what_was_not_observed() -> None:
    row = estimates(spo2=91)
    row[Channel.HEART_RATE] = row[Channel.TEMPERATURE] = math.nan
    alert = explain(NAMES.index("news2-low-medium"), "pt-1", row, 0)
    assert alert.evidence["not_observed"] == ["pulse", "temperature"]
    assert [c["value"] for c in alert.evidence["contributions"]] == [16, 91, 120, None, None]
    assert "spo2 91 % +3" in alert.summary


def test_news2_from_estimates_reads_the_right_columns() -> None:
    row = estimates(pulse=131)                     # only the pulse scores
    score = news2_from_estimates(row[np.newaxis, :])
    assert score.parts[0].tolist() == [0, 0, 0, 3, 0]
