"""NEWS2 band edges of the RCP 2017 chart, risk bands, edge-triggered rules and explanations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medtwin.clinical import (
    HYPER_MG_DL,
    HYPO_LEVEL_1_MG_DL,
    HYPO_LEVEL_2_MG_DL,
    N_RULES,
    NEWS2_PARAMETERS,
    RISK_NAMES,
    RULES,
    explain,
    news2_from_estimates,
    news2_risk,
    news2_score,
    rising_edges,
    rule_conditions,
)
from medtwin.domain import N_CHANNELS, Channel, Severity

NORMAL = {"respiration_rate": 16.0, "spo2": 97.0, "systolic_bp": 120.0, "pulse": 72.0,
          "temperature": 37.0}

BANDS = {
    "respiration_rate": [(8, 3), (9, 1), (11, 1), (12, 0), (20, 0), (21, 2), (24, 2), (25, 3),
                         (4, 3), (40, 3)],
    "spo2": [(91, 3), (92, 2), (93, 2), (94, 1), (95, 1), (96, 0), (100, 0), (85, 3)],
    "systolic_bp": [(90, 3), (91, 2), (100, 2), (101, 1), (110, 1), (111, 0), (219, 0),
                    (220, 3), (60, 3)],
    "pulse": [(40, 3), (41, 1), (50, 1), (51, 0), (90, 0), (91, 1), (110, 1), (111, 2),
              (130, 2), (131, 3), (180, 3)],
    "temperature": [(35.0, 3), (35.1, 1), (36.0, 1), (36.1, 0), (38.0, 0), (38.1, 1),
                    (39.0, 1), (39.1, 2), (41.0, 2), (33.0, 3)],
}
CASES = [(p, v, pts) for p, rows in BANDS.items() for v, pts in rows]


def score_of(**values: float) -> tuple[int, list[int], bool, int]:
    """(total, parts, complete, risk) of one patient; unspecified parameters are normal."""
    v = {**NORMAL, **values}
    score = news2_score(*(np.array([v[name]]) for name in NEWS2_PARAMETERS))
    return (int(score.total[0]), score.parts[0].tolist(), bool(score.complete[0]),
            int(news2_risk(score)[0]))


@pytest.mark.parametrize(("parameter", "value", "points"), CASES,
                         ids=[f"{p}={v}" for p, v, _ in CASES])
def test_band_edges(parameter: str, value: float, points: int) -> None:
    total, parts, complete, _ = score_of(**{parameter: value})
    assert parts[NEWS2_PARAMETERS.index(parameter)] == points
    assert total == points and complete


def test_bands_vectorized_in_one_call() -> None:
    """All edge cases of one parameter at once give the same points as one by one."""
    for parameter, rows in BANDS.items():
        n = len(rows)
        columns = {name: np.full(n, NORMAL[name]) for name in NEWS2_PARAMETERS}
        columns[parameter] = np.array([v for v, _ in rows], dtype=float)
        score = news2_score(*(columns[name] for name in NEWS2_PARAMETERS))
        assert score.parts.shape == (n, 5)
        assert score.parts[:, NEWS2_PARAMETERS.index(parameter)].tolist() == [p for _, p in rows]


def test_values_are_rounded_to_chart_precision() -> None:
    assert score_of(pulse=90.4)[0] == 0
    assert score_of(pulse=90.6)[0] == 1
    assert score_of(temperature=38.04)[0] == 0
    assert score_of(temperature=38.06)[0] == 1
    assert score_of(temperature=35.0999999)[0] == 1  # float noise does not cross an edge


@pytest.mark.parametrize("parameter", NEWS2_PARAMETERS)
def test_missing_parameter_scores_zero_and_is_incomplete(parameter: str) -> None:
    total, parts, complete, _ = score_of(**{parameter: math.nan})
    assert parts == [0] * 5 and total == 0 and not complete


def test_nothing_observed() -> None:
    nan = np.array([math.nan])
    score = news2_score(nan, nan, nan, nan, nan)
    assert int(score.total[0]) == 0 and not score.complete[0]
    assert int(news2_risk(score)[0]) == 0


@pytest.mark.parametrize(("values", "total", "risk"), [
    ({}, 0, "low"),
    ({"pulse": 95, "respiration_rate": 10}, 2, "low"),
    ({"pulse": 95, "respiration_rate": 10, "temperature": 38.5, "spo2": 95}, 4, "low"),
    ({"spo2": 91}, 3, "low-medium"),                              # a single 3
    ({"spo2": 91, "pulse": 95}, 4, "low-medium"),
    ({"pulse": 120, "respiration_rate": 22, "temperature": 38.5}, 5, "medium"),
    ({"spo2": 91, "respiration_rate": 22}, 5, "medium"),           # medium outranks a 3
    ({"pulse": 120, "respiration_rate": 22, "temperature": 39.5}, 6, "medium"),
    ({"pulse": 120, "respiration_rate": 22, "temperature": 39.5, "systolic_bp": 105}, 7,
     "high"),
    ({"pulse": 140, "respiration_rate": 28, "spo2": 90, "systolic_bp": 88,
      "temperature": 39.5}, 14, "high"),
])
def test_risk_bands(values: dict[str, float], total: int, risk: str) -> None:
    got_total, _, _, got_risk = score_of(**values)
    assert (got_total, RISK_NAMES[got_risk]) == (total, risk)


# Rules -----------------------------------------------------------------------------------------

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


def rules_holding(row: np.ndarray) -> list[str]:
    conditions = rule_conditions(row[np.newaxis, :])
    assert conditions.shape == (1, N_RULES)
    return [RULES[i].name for i in np.flatnonzero(conditions[0])]


@pytest.mark.parametrize(("glucose", "expected"), [
    (100.0, []), (70.0, []), (69.9, ["hypoglycaemia-level-1"]), (54.0, ["hypoglycaemia-level-1"]),
    (53.9, ["hypoglycaemia-level-2"]), (250.0, []), (250.1, ["hyperglycaemia"]),
    (math.nan, []),
])
def test_glucose_rule_thresholds(glucose: float, expected: list[str]) -> None:
    assert rules_holding(estimates(glucose)) == expected


def test_news2_rules_follow_the_risk_band() -> None:
    assert rules_holding(estimates(spo2=91)) == ["news2-low-medium"]
    assert rules_holding(estimates(pulse=120, respiration_rate=22, temperature=38.5)) == [
        "news2-medium"]
    assert rules_holding(estimates(pulse=140, respiration_rate=28, spo2=91)) == ["news2-high"]
    assert rules_holding(estimates()) == []


def test_rules_are_evaluated_per_patient() -> None:
    rows = np.stack([estimates(100), estimates(50), estimates(300, pulse=140, spo2=91,
                                                              respiration_rate=28)])
    conditions = rule_conditions(rows)
    names = [[RULES[i].name for i in np.flatnonzero(c)] for c in conditions]
    assert names == [[], ["hypoglycaemia-level-2"], ["news2-high", "hyperglycaemia"]]


def test_rising_edges_fire_once_and_rearm() -> None:
    hypo = [r.name for r in RULES].index("hypoglycaemia-level-1")
    series = [100, 65, 66, 64, 100, 60]           # glucose of one patient over time
    active = np.zeros((1, N_RULES), dtype=bool)
    fired_at = []
    for step, glucose in enumerate(series):
        conditions = rule_conditions(estimates(glucose)[np.newaxis, :])
        rows, rules = rising_edges(active, conditions)
        fired_at += [(step, int(r), int(k)) for r, k in zip(rows, rules, strict=True)]
        active = conditions
    assert fired_at == [(1, 0, hypo), (5, 0, hypo)]


def test_rising_edges_over_many_patients() -> None:
    active = np.array([[True, False], [False, False], [False, True]])
    conditions = np.array([[True, True], [True, False], [False, True]])
    rows, rules = rising_edges(active, conditions)
    assert list(zip(rows.tolist(), rules.tolist(), strict=True)) == [(0, 1), (1, 0)]


def test_rule_severities() -> None:
    assert {r.name: r.severity for r in RULES} == {
        "news2-low-medium": Severity.LOW, "news2-medium": Severity.MEDIUM,
        "news2-high": Severity.HIGH, "hypoglycaemia-level-1": Severity.MEDIUM,
        "hypoglycaemia-level-2": Severity.HIGH, "hyperglycaemia": Severity.LOW}
    assert (HYPO_LEVEL_1_MG_DL, HYPO_LEVEL_2_MG_DL, HYPER_MG_DL) == (70.0, 54.0, 250.0)


def _rule(name: str) -> int:
    return [r.name for r in RULES].index(name)


def test_explain_hypoglycaemia() -> None:
    alert = explain(_rule("hypoglycaemia-level-2"), "pt-9", estimates(48.26), 5_000)
    assert (alert.patient_id, alert.rule, alert.severity, alert.time_ms) == (
        "pt-9", "hypoglycaemia-level-2", Severity.HIGH, 5_000)
    assert alert.summary == ("Twin glucose estimate 48 mg/dL is below 54 mg/dL "
                             "(hypoglycaemia level 2).")
    assert alert.evidence["observed"] == 48.3
    assert alert.evidence["threshold"] == 54.0
    assert alert.evidence["no_alert_if"] == "glucose >= 54 mg/dL"
    assert alert.evidence["code"] == "99504-3" and alert.evidence["unit"] == "mg/dL"


def test_explain_level_1_and_hyperglycaemia() -> None:
    level1 = explain(_rule("hypoglycaemia-level-1"), "p", estimates(62.0), 0)
    assert level1.evidence["threshold"] == 70.0
    assert level1.evidence["no_alert_if"] == "glucose >= 70 mg/dL"
    hyper = explain(_rule("hyperglycaemia"), "p", estimates(301.0), 0)
    assert hyper.summary == "Twin glucose estimate 301 mg/dL is above 250 mg/dL (hyperglycaemia)."
    assert hyper.evidence["no_alert_if"] == "glucose <= 250 mg/dL"
    assert hyper.evidence["observed"] == 301.0


def test_explain_news2_names_each_contribution() -> None:
    row = estimates(pulse=140, respiration_rate=28, spo2=90, systolic_bp=88, temperature=39.5)
    alert = explain(_rule("news2-high"), "pt-1", row, 7)
    assert alert.severity is Severity.HIGH
    assert alert.summary.startswith("NEWS2 14 (high clinical risk): respiration_rate 28.0 /min "
                                    "+3, spo2 90.0 % +3, systolic_bp 88.0 mm[Hg] +3, pulse "
                                    "140.0 /min +3, temperature 39.5 Cel +2.")
    assert "not sensed and scored 0" in alert.summary
    ev = alert.evidence
    assert (ev["observed"], ev["threshold"], ev["no_alert_if"]) == (
        14, "total >= 7", "a total below 7")
    assert [c["points"] for c in ev["contributions"]] == [3, 3, 3, 3, 2]
    assert [c["code"] for c in ev["contributions"]] == [
        "9279-1", "59408-5", "8480-6", "8867-4", "8310-5"]
    assert ev["not_observed"] == []


def test_explain_news2_lists_what_was_not_observed() -> None:
    row = estimates(spo2=91)
    row[Channel.TEMPERATURE] = math.nan
    alert = explain(_rule("news2-low-medium"), "pt-1", row, 0)
    assert alert.evidence["not_observed"] == ["temperature"]
    assert alert.evidence["no_alert_if"] == "no single parameter scoring 3"
    assert alert.evidence["contributions"][4]["value"] is None
    assert "spo2 91.0 % +3" in alert.summary


def test_news2_from_estimates_reads_the_right_columns() -> None:
    row = estimates(pulse=131)                     # only the pulse scores
    score = news2_from_estimates(row[np.newaxis, :])
    assert score.parts[0].tolist() == [0, 0, 0, 3, 0]
