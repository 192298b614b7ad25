"""Explanations of guard findings: one readable sentence and the evidence an analyst or
clinician judges it by (what was observed and expected, the statistic and its threshold, the
channels involved, since when, and what would have had to be different for no finding).

Pure text from a detector's arrays at one reading; no state, no patient data beyond the
values the finding is about (findings are sealed like readings).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medtwin.domain import N_CHANNELS, Channel, iso_second
from medtwin.guard._behaviour import Feature
from medtwin.guard._consistency import Coherence, CoherenceRule
from medtwin.guard._patterns import (
    FROZEN_MIN_MS,
    FROZEN_RUN_P,
    JUMP_STEADY,
    MAX_RATE_PER_MIN,
    PINNED,
    REPORTING_LOW,
)
from medtwin.guard._residuals import CUSUM_THRESHOLD

REPLAY_NAME = "replayed-segment"
FROZEN_NAME = "frozen-value"
NOISE_NAME = "noise-burst"
RATE_NAME = "impossible-rate"
JUMP_NAME = "level-jump"
DUPLICATE_NAME = "conflicting-timestamp"
AGREEMENT_NAME = "device-agreement"
COHERENCE_NAME = "physiological-coherence"
RESIDUAL_NAME = "innovation-tests"
BEHAVIOUR_NAME = "device-behaviour"

Evidence = dict[str, Any]

FEATURE_TEXT = {
    Feature.RATE: "packet rate (per s)", Feature.JITTER: "arrival jitter (ms)",
    Feature.SKEW: "clock skew (ms)", Feature.SEQ_GAP: "sequence gap (packets)",
    Feature.PAYLOAD: "payload size", Feature.SEQ_REGRESSION: "sequence regression",
    Feature.SIGNATURE: "signature failure count", Feature.THROTTLE: "token deficit (flood)",
}


def channel_name(channel: Channel) -> str:
    return channel.name.lower().replace("_", " ")


def explain_screen(detector: str, i: int, ch: Channel, v: float, t: int,
                   alarms: dict[str, Any], agree: Any, coherence: Coherence
                   ) -> tuple[int, str, Evidence]:
    """Since when, the sentence and the evidence of a screening detector's alarm at
    flattened reading `i` (channel `ch`, value `v` at time `t`)."""
    unit = ch.spec.unit_display
    name = channel_name(ch)
    if detector == REPLAY_NAME:
        a = alarms[REPLAY_NAME]
        since, summary = int(a.since_ms[i]), (
            f"{name} since {iso_second(int(a.since_ms[i]))} repeats the stretch recorded "
            f"{iso_second(int(a.source_start_ms[i]))}-{iso_second(int(a.source_end_ms[i]))}, "
            f"change for change (offset {a.offset[i]:+.1f} {unit})")
        evidence = {"observed": f"{v:g} {unit}",
                    "expected": "new readings, not a copy of an earlier stretch",
                    "statistic": f"largest difference from the earlier stretch "
                                 f"{a.statistic[i]:.2f} {unit}",
                    "threshold": f"{a.threshold[i]:.2f} {unit}",
                    "since": iso_second(since),
                    "would_clear": "any change between readings differing from the "
                                   "earlier stretch by more than the threshold"}
    elif detector == FROZEN_NAME:
        a = alarms[FROZEN_NAME]
        since = int(a.since_ms[i])
        summary = (f"{name} stuck at {v:g} {unit} for {a.statistic[i] / 60_000:.0f} "
                   f"min ({int(a.run_readings[i])} readings)")
        share = 100 * a.repeat_share[i]
        habit = (f"at {v:g} {unit} it stayed there in {share:.0f} % of its readings"
                 if v >= PINNED[int(ch)] else f"it repeats {share:.0f} % of its values")
        evidence = {"observed": f"{v:g} {unit} unchanged since {iso_second(since)}",
                    "expected": "readings that vary as a living patient's do",
                    "statistic": f"{a.statistic[i] / 60_000:.0f} min unchanged; a run this "
                                 f"long has chance {a.chance[i]:.1e} for this sensor "
                                 f"({habit})",
                    "threshold": f"{FROZEN_MIN_MS[int(ch)] / 60_000:.0f} min and chance "
                                 f"below {FROZEN_RUN_P:g}",
                    "since": iso_second(since),
                    "would_clear": "a change of at least the channel's resolution "
                                   "within the threshold"}
    elif detector == NOISE_NAME:
        a = alarms[NOISE_NAME]
        since = int(a.since_ms[i])
        summary = (f"{name} is {np.sqrt(a.statistic[i]):.1f}x noisier than usual "
                   "between readings")
        evidence = {"observed": f"variance of changes {a.statistic[i]:.1f}x usual",
                    "expected": f"changes with SD about {a.usual_sd[i]:.2f} {unit}",
                    "statistic": f"variance ratio {a.statistic[i]:.1f}",
                    "threshold": f"{a.threshold[i]:g}", "since": iso_second(since),
                    "would_clear": f"a variance ratio at most {a.threshold[i]:g}"}
    elif detector == JUMP_NAME:
        a = alarms[JUMP_NAME]
        since = int(a.since_ms[i])
        if a.at_low[i]:
            towards = "reached" if v <= REPORTING_LOW[int(ch)] else "left"
            verdict = (f"the sensor {towards} LOW in one step, where a patient's {name} "
                       "crosses it smoothly: a compression low, a recovering sensor, data "
                       "pushed to LOW, or a rescue faster than any usual change (IV "
                       "dextrose); confirm with a fingerstick (LOW readings still alert)")
        elif ch is Channel.GLUCOSE:
            verdict = "an offset, not a physiological change"
        else:
            verdict = "a probe's offset, or a sudden change in the patient; check both"
        summary = (f"{name} jumped {a.statistic[i]:+.0f} {unit} in one step at "
                   f"{iso_second(since)} and went on from there: {verdict}")
        evidence = {"observed": f"a step of {a.statistic[i]:+.0f} {unit} between the trends "
                                f"before and after it (they miss readings by at most "
                                f"{a.spread[i]:.0f} {unit})",
                    "expected": "changes along a curve, at most a few {unit} per minute"
                                .replace("{unit}", unit),
                    "statistic": f"|step| {abs(a.statistic[i]):.0f} {unit}",
                    "threshold": f"{a.threshold[i]:g} {unit} and {JUMP_STEADY:g}x the "
                                 "trends' largest miss",
                    "since": iso_second(since),
                    "would_clear": "a smaller step, or a change spread over several readings"}
    elif detector == RATE_NAME:
        a = alarms[RATE_NAME]
        since = int(a.since_ms[i])
        summary = (f"{name} changed {a.statistic[i]:+.1f} {unit}/min, faster than "
                   "any physiology")
        evidence = {"observed": f"{a.statistic[i]:+.1f} {unit}/min",
                    "expected": f"at most {MAX_RATE_PER_MIN[int(ch)]:g} {unit}/min",
                    "statistic": f"{abs(a.statistic[i]):.1f} {unit}/min",
                    "threshold": f"{MAX_RATE_PER_MIN[int(ch)]:g} {unit}/min",
                    "since": iso_second(since),
                    "would_clear": "a change within the physiological limit"}
    elif detector == COHERENCE_NAME:
        since = int(coherence.since_ms[i])
        rule = CoherenceRule(int(coherence.rule[i]))
        quiet = [Channel(c).name.lower().replace("_", " ") for c in range(N_CHANNELS)
                 if int(coherence.silent_channels[i]) >> c & 1]
        summary = (f"{name} {v:g} {unit} since {iso_second(since)} while "
                   f"{' and '.join(quiet) or 'the other vital signs'} stayed at the "
                   "patient's usual: check the sensor before treating")
        evidence = {"observed": f"{v:g} {unit}, with "
                                f"{' and '.join(quiet) or 'companions'} unchanged",
                    "expected": ("a body short of oxygen breathes faster or its heart "
                                 "beats faster" if rule is
                                 CoherenceRule.HYPOXAEMIA_WITHOUT_RESPONSE else
                                 "a racing heart with some other response"),
                    "statistic": f"{name} beyond {coherence.threshold[i]:g} {unit} "
                                 "with the companions' mean response under one band",
                    "threshold": f"{coherence.threshold[i]:g} {unit} for 15 min",
                    "channels": ", ".join([name, *quiet]), "since": iso_second(since),
                    "would_clear": "a response of the companion channels, or the "
                                   "value back within its limit"}
    elif detector == DUPLICATE_NAME:
        since = t
        summary = f"two different {name} values for the same time {iso_second(t)}"
        evidence = {"observed": f"{v:g} {unit} for a time already reported",
                    "expected": "one value per time", "since": iso_second(t),
                    "statistic": "value differs from the earlier one",
                    "threshold": "half the channel's resolution",
                    "would_clear": "the same value, or a new time"}
    else:                                    # device agreement
        since = int(agree.since_ms[i])
        others = int(agree.n_partners[i])
        summary = (f"{name} {v:g} {unit} disagrees with "
                   f"{int(agree.n_disagree[i])} of {others} other devices "
                   f"(they read about {agree.consensus[i]:g} {unit})")
        evidence = {"observed": f"{v:g} {unit}",
                    "expected": f"within {agree.threshold[i]:.1f} of "
                                f"{agree.consensus[i]:g} {unit}",
                    "statistic": f"|difference| {agree.statistic[i]:.1f} {unit}",
                    "threshold": f"{agree.threshold[i]:.1f} {unit}",
                    "channels": f"{name} from {others + 1} devices",
                    "since": iso_second(since),
                    "would_clear": "agreement within the devices' combined noise"}
    return since, summary, evidence


def explain_residual(channel: Channel, value: float, innovation: float, innovation_var: float,
                     up: bool, since: int, tests: list[str]) -> tuple[str, Evidence]:
    """The sentence and evidence of a residual episode called spoofing suspected: readings
    that ran `up` (or down) against the twin's prediction and would mask danger."""
    sd = float(np.sqrt(innovation_var))
    expected = value - innovation
    unit = channel.spec.unit_display
    name = channel_name(channel)
    side = "above" if up else "below"
    summary = (f"{name} readings have run {side} what the twin expects from the patient's "
               f"other data since {iso_second(since)} ({value:g} vs {expected:.0f} {unit}): they "
               "would mask the patient's course")
    return summary, {
        "observed": f"{value:g} {unit}",
        "expected": f"{expected:.1f} {unit} (95 % {expected - 1.96 * sd:.1f} to "
                    f"{expected + 1.96 * sd:.1f})",
        "statistic": "; ".join(tests),
        "threshold": f"chi-square false alarm 1e-4 per reading; CUSUM {CUSUM_THRESHOLD:g}",
        "channels": f"{name} vs the twin's model of the patient's other channels, meals "
                    "and insulin",
        "since": iso_second(since),
        "would_clear": f"readings within about {1.96 * sd:.1f} {unit} of the twin's "
                       "prediction, without a sustained one-sided run"}


def explain_behaviour(feature: Feature, observed: float, expected: float, statistic: float,
                      threshold: float, since: int) -> tuple[str, Evidence]:
    """The sentence and evidence of a device-behaviour alarm on `feature`."""
    what = FEATURE_TEXT[feature]
    return (f"the device's {what} is unlike its usual ({observed:.3g} vs {expected:.3g})",
            {"observed": f"{observed:.4g}", "expected": f"{expected:.4g}",
             "statistic": f"{what} {statistic:.3g}", "threshold": f"{threshold:.3g}",
             "since": iso_second(since), "would_clear": f"{what} within the threshold"})
