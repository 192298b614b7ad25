"""Clinical alert rules over the twin's estimates, evaluated for many patients at once.

A rule fires when its condition starts (edge-triggered), so a patient who stays hypoglycaemic
gets one alert, not one per reading; it re-arms when the condition ends. Thresholds: NEWS2 bands
from the RCP 2017 chart; hypoglycaemia levels 1 (< 70 mg/dL) and 2 (< 54 mg/dL) and
hyperglycaemia (> 250 mg/dL) from the international consensus on CGM targets (Battelino et al.,
Diabetes Care 2019).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from medtwin.clinical._news2 import NEWS2_PARAMETERS, News2, news2_score
from medtwin.domain import Alert, Channel, Severity, iso_second
from medtwin.estimation import segmented_scan

HYPO_LEVEL_1_MG_DL = 70.0
HYPO_LEVEL_2_MG_DL = 54.0
HYPER_MG_DL = 250.0
#: A value older than this no longer counts for the rules (as if not observed).
STALE_AFTER_S = 3600.0
RISK_NAMES = ("low", "low-medium", "medium", "high")


@dataclass(frozen=True, slots=True)
class Rule:
    """An alert rule: its name, severity, family (rules of one family escalate) and the
    channels whose readings are its evidence."""

    name: str
    severity: Severity
    family: str
    channels: tuple[Channel, ...]


_NEWS2_CHANNELS = (Channel.RESP_RATE, Channel.SPO2, Channel.SYSTOLIC_BP, Channel.HEART_RATE,
                   Channel.TEMPERATURE)
RULES: tuple[Rule, ...] = (
    Rule("news2-low-medium", Severity.LOW, "news2", _NEWS2_CHANNELS),
    Rule("news2-medium", Severity.MEDIUM, "news2", _NEWS2_CHANNELS),
    Rule("news2-high", Severity.HIGH, "news2", _NEWS2_CHANNELS),
    Rule("hypoglycaemia-level-1", Severity.MEDIUM, "hypoglycaemia", (Channel.GLUCOSE,)),
    Rule("hypoglycaemia-level-2", Severity.HIGH, "hypoglycaemia", (Channel.GLUCOSE,)),
    Rule("hyperglycaemia", Severity.LOW, "hyperglycaemia", (Channel.GLUCOSE,)),
)
N_RULES = len(RULES)
# _OUTRANKED[i, j]: rule j is a more severe rule of rule i's family.
_OUTRANKED = np.array([[a.family == b.family and j > i for j, b in enumerate(RULES)]
                       for i, a in enumerate(RULES)])


def news2_from_estimates(values: npt.NDArray[np.float64]) -> News2:
    """NEWS2 from twin estimates of shape (n_patients, n_channels); NaN where unobserved."""
    return news2_score(values[:, Channel.RESP_RATE], values[:, Channel.SPO2],
                       values[:, Channel.SYSTOLIC_BP], values[:, Channel.HEART_RATE],
                       values[:, Channel.TEMPERATURE])


def rule_conditions(values: npt.NDArray[np.float64]) -> RuleConditions:
    """Where each rule's condition starts and where it still holds, shape (n, N_RULES) each.

    A rule means "at least this bad": a patient at NEWS2 8 meets both the medium and the high
    rule. It starts at the rule's threshold and ends only once the patient is clearly past it
    again (NEWS2 two points below, glucose 5–10 mg/dL back inside), so noise around a
    threshold does not make alerts flap.
    """
    score = news2_from_estimates(values)
    total = score.total
    any_three = (score.parts == 3).any(axis=1)
    glucose = values[:, Channel.GLUCOSE]
    with np.errstate(invalid="ignore"):
        start = np.stack([
            any_three | (total >= 5), total >= 5, total >= 7,
            glucose < HYPO_LEVEL_1_MG_DL, glucose < HYPO_LEVEL_2_MG_DL, glucose > HYPER_MG_DL,
        ], axis=1)
        hold = np.stack([
            any_three | (total >= 4), total >= 4, total >= 6,
            glucose < HYPO_LEVEL_1_MG_DL + 5.0, glucose < HYPO_LEVEL_2_MG_DL + 5.0,
            glucose > HYPER_MG_DL - 10.0,
        ], axis=1)
    return RuleConditions(start, hold)


class RuleConditions(NamedTuple):
    start: npt.NDArray[np.bool_]
    hold: npt.NDArray[np.bool_]


class RuleStep(NamedTuple):
    """Rules active after a step, and the (patient row, rule) pairs that fired in it."""

    active: npt.NDArray[np.bool_]
    fired_rows: npt.NDArray[np.intp]
    fired_rules: npt.NDArray[np.intp]


class RuleEvents(NamedTuple):
    """Rules judged after every event of a batch: each patient's active rules after the batch
    (n_patients, N_RULES), and the (event, rule) pairs that fired."""

    active: npt.NDArray[np.bool_]
    fired_events: npt.NDArray[np.intp]
    fired_rules: npt.NDArray[np.intp]


def _hysteresis(earlier: tuple[npt.NDArray[Any], ...],
                later: tuple[npt.NDArray[Any], ...]) -> tuple[npt.NDArray[Any], ...]:
    """Compose two steps of active' = start | (active & hold)."""
    start_1, hold_1 = earlier
    start_2, hold_2 = later
    return start_2 | (start_1 & hold_2), hold_1 & hold_2


def rules_over_events(active: npt.NDArray[np.bool_], values: npt.NDArray[np.float64],
                      event_row: npt.NDArray[np.intp],
                      event_start: npt.NDArray[np.intp]) -> RuleEvents:
    """Judge the rules after every event, as `step_rules` would one event at a time.

    `active` (n_patients, N_RULES) before the batch; `values` (n_events, channels) the twin's
    estimates after each event; events of a patient are contiguous, `event_row` names the
    patient and `event_start` the index of the patient's first event. The recurrence runs
    as a segmented scan, not a loop over events.
    """
    if values.shape[0] == 0:
        none = np.zeros(0, np.intp)
        return RuleEvents(active.copy(), none, none)
    conditions = rule_conditions(values)
    start, hold = segmented_scan((conditions.start, conditions.hold), _hysteresis, event_start)
    before = active[event_row]
    now_active = start.astype(bool) | (before & hold.astype(bool))
    index = np.arange(values.shape[0])
    previous = np.where((index > event_start)[:, np.newaxis], np.roll(now_active, 1, axis=0),
                        before)
    outranked = (now_active.astype(np.int8) @ _OUTRANKED.T.astype(np.int8)) > 0
    fired_events, fired_rules = np.nonzero(now_active & ~previous & ~outranked)
    after = active.copy()
    last = np.ones(values.shape[0], dtype=bool)
    last[:-1] = event_start[1:] != event_start[:-1]
    after[event_row[last]] = now_active[last]
    return RuleEvents(after, fired_events, fired_rules)


def step_rules(active: npt.NDArray[np.bool_], values: npt.NDArray[np.float64]) -> RuleStep:
    """Advance the rules of n patients: `active` (n, N_RULES) before, estimates (n, channels).

    A rule fires when it becomes active, unless a more severe rule of its family is active
    (one alert for an escalation straight to the top); it stays active while its condition
    holds.
    """
    conditions = rule_conditions(values)
    now_active = conditions.start | (active & conditions.hold)
    outranked = (now_active.astype(np.int8) @ _OUTRANKED.T.astype(np.int8)) > 0
    fired_rows, fired_rules = np.nonzero(now_active & ~active & ~outranked)
    return RuleStep(now_active, fired_rows, fired_rules)


def explain(rule_index: int, patient_id: str, values: npt.NDArray[np.float64],
            time_ms: int) -> Alert:
    """The alert of one fired rule, with the evidence a clinician reads in seconds.

    `values` is the patient's row of estimates (n_channels,).
    """
    rule = RULES[rule_index]
    if rule.name.startswith("news2"):
        return _explain_news2(rule, patient_id, values, time_ms)
    return _explain_glucose(rule, patient_id, float(values[Channel.GLUCOSE]), time_ms)


def _explain_news2(rule: Rule, patient_id: str, values: npt.NDArray[np.float64],
                   time_ms: int) -> Alert:
    score = news2_from_estimates(values[np.newaxis, :])
    total, parts = int(score.total[0]), score.parts[0]
    channels = (Channel.RESP_RATE, Channel.SPO2, Channel.SYSTOLIC_BP, Channel.HEART_RATE,
                Channel.TEMPERATURE)
    contributions: list[dict[str, Any]] = []
    for name, channel, points in zip(NEWS2_PARAMETERS, channels, parts, strict=True):
        value = float(values[channel])
        shown: float | None = None
        if not np.isnan(value):
            shown = round(value, 1) if channel is Channel.TEMPERATURE else round(value)
        contributions.append({
            "parameter": name, "code": channel.code, "unit": channel.ucum,
            "value": shown, "points": int(points),
        })
    scoring = ", ".join(
        f"{c['parameter']} {c['value']} {c['unit']} +{c['points']}"
        for c in contributions if c["points"] > 0
    )
    needed = {"news2-low-medium": "no single parameter scoring 3 and a total below 5",
              "news2-medium": "a total below 5",
              "news2-high": "a total below 7"}[rule.name]
    missing = [c["parameter"] for c in contributions if c["value"] is None]
    band = rule.name.removeprefix("news2-")
    summary = (f"NEWS2 {total} ({band} clinical risk): {scoring}. "
               f"Consciousness and supplemental oxygen are not sensed and scored 0.")
    evidence: dict[str, Any] = {
        "statistic": "NEWS2", "observed": total, "contributions": contributions,
        "threshold": {"news2-low-medium": "any parameter 3", "news2-medium": "total >= 5",
                      "news2-high": "total >= 7"}[rule.name],
        "no_alert_if": needed, "not_observed": missing,
        "assumed": {"consciousness": "alert", "supplemental_oxygen": "air"},
        "expected": "NEWS2 0-4 with no single parameter scoring 3 (low clinical risk)",
        "channels": [c["code"] for c in contributions if c["points"] > 0],
        "since": iso_second(time_ms),
    }
    return Alert(patient_id, rule.name, rule.severity, time_ms, summary, evidence)


def _explain_glucose(rule: Rule, patient_id: str, glucose: float, time_ms: int) -> Alert:
    if rule.name == "hyperglycaemia":
        threshold, relation, no_alert = HYPER_MG_DL, "above", f"glucose <= {HYPER_MG_DL:g} mg/dL"
    else:
        threshold = HYPO_LEVEL_2_MG_DL if rule.name.endswith("2") else HYPO_LEVEL_1_MG_DL
        relation, no_alert = "below", f"glucose >= {threshold:g} mg/dL"
    summary = (f"Twin glucose estimate {glucose:.0f} mg/dL is {relation} {threshold:g} mg/dL "
               f"({rule.name.replace('-', ' ')}).")
    evidence = {"statistic": "glucose estimate", "code": Channel.GLUCOSE.code, "unit": "mg/dL",
                "observed": round(glucose, 1), "threshold": threshold, "no_alert_if": no_alert,
                "expected": f"{HYPO_LEVEL_1_MG_DL:g}-{HYPER_MG_DL:g} mg/dL (no glucose alert)",
                "channels": [Channel.GLUCOSE.code], "since": iso_second(time_ms)}
    return Alert(patient_id, rule.name, rule.severity, time_ms, summary, evidence)

