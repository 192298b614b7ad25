"""Clinical alert rules (NEWS2, hypo- and hyperglycaemia) with explanations."""

from medtwin.clinical._news2 import NEWS2_PARAMETERS, News2, news2_risk, news2_score
from medtwin.clinical._rules import (
    HYPER_MG_DL,
    HYPO_LEVEL_1_MG_DL,
    HYPO_LEVEL_2_MG_DL,
    N_RULES,
    RISK_NAMES,
    RULES,
    STALE_AFTER_S,
    Rule,
    RuleConditions,
    RuleEvents,
    RuleStep,
    explain,
    news2_from_estimates,
    rule_conditions,
    rules_over_events,
    step_rules,
)

__all__ = [
    "HYPER_MG_DL",
    "HYPO_LEVEL_1_MG_DL",
    "HYPO_LEVEL_2_MG_DL",
    "NEWS2_PARAMETERS",
    "N_RULES",
    "RISK_NAMES",
    "RULES",
    "STALE_AFTER_S",
    "News2",
    "Rule",
    "RuleConditions",
    "RuleEvents",
    "RuleStep",
    "explain",
    "news2_from_estimates",
    "news2_risk",
    "news2_score",
    "rule_conditions",
    "rules_over_events",
    "step_rules",
]
