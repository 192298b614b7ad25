"""The guard's two baselines, with the same shape as `guard.medtwin_findings`: fixed range and
rate thresholds, and an IsolationForest over raw sliding windows fitted on a clean training
day of each patient. Each takes the scenarios (and the training series) and returns `Hit`s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from medtwin.domain import Channel

MINUTE_MS = 60_000

#: Fixed limits, chosen a priori (not on the test data): (low, high, |rate| per minute).
#: Glucose as the task states; the vitals after common bedside-monitor alarm limits, with
#: rate limits no resting or walking patient reaches within a minute.
THRESHOLDS: dict[Channel, tuple[float, float, float]] = {
    Channel.GLUCOSE: (40.0, 400.0, 4.0),
    Channel.HEART_RATE: (40.0, 150.0, 30.0),
    Channel.SPO2: (85.0, 100.0, 5.0),
    Channel.RESP_RATE: (6.0, 40.0, 10.0),
    Channel.TEMPERATURE: (34.5, 40.5, 1.0),
}
#: Readings per IsolationForest window (levels, plus their 11 first differences per minute).
IF_WINDOW = 12
IF_TREES = 100
#: Clean false-alarm budget the forest's contamination is set from: one per patient-week.
BUDGET_PER_WEEK = 1.0


class Hit(NamedTuple):
    """A detector's finding: patient, channel (None: the whole device or patient), data time."""

    patient_id: str
    channel: Channel | None
    time_ms: int
    code: str = ""
    """What kind of finding (medtwin's `FindingCode`; empty for the baselines)."""
    detector: str = ""
    """Which of medtwin's detectors raised it (empty for the baselines)."""


class Scenario(NamedTuple):
    """One pipeline patient's submitted data: a slice of a base patient's clean series, with
    at most one attack on one channel. `observed`: channel -> (time_ms, value) after the
    attack; `inputs`: carbs and insulin (never attacked)."""

    patient_id: str
    base: str
    observed: Mapping[Channel, tuple[np.ndarray, np.ndarray]]
    inputs: Mapping[Channel, tuple[np.ndarray, np.ndarray]]
    attack_channel: Channel | None
    attack_kind: str | None
    attack_start_ms: int
    attack_end_ms: int
    scored_from_ms: int
    end_ms: int
    attack_changed: int = 0
    """How many readings the attack changed, as the device reports them (0: its range or
    resolution hid the attack, e.g. a freeze while the CGM reads LOW)."""
    attack_hypo: int = 0
    """How many of those were hypoglycaemic both as sent and in the clean record (CGM below
    `guard.HYPO_BELOW`) and not sent milder than a severe clean one (`guard.SEVERE_BELOW`):
    no hypoglycaemia hidden, whatever the attack made of them."""


class Training(NamedTuple):
    """A base patient's clean training day: channel -> (time_ms, value)."""

    base: str
    observed: Mapping[Channel, tuple[np.ndarray, np.ndarray]]


def _scored_channels(s: Scenario) -> list[Channel]:
    """Attacked runs: only the attacked channel (detection needs no other); clean runs: all."""
    return [s.attack_channel] if s.attack_channel is not None else list(s.observed)


def threshold_findings(scenarios: Sequence[Scenario],
                       training: Mapping[str, Training] | None = None) -> list[Hit]:
    """Readings outside fixed limits, or changing faster than a fixed rate from the previous
    reading of their channel."""
    del training
    hits: list[Hit] = []
    for s in scenarios:
        for ch in _scored_channels(s):
            if ch not in THRESHOLDS:
                continue
            low, high, rate = THRESHOLDS[ch]
            t, v = s.observed[ch]
            out = (v < low) | (v > high)
            dt_min = np.diff(t) / MINUTE_MS
            fast = np.zeros_like(out)
            with np.errstate(divide="ignore", invalid="ignore"):
                fast[1:] = np.abs(np.diff(v)) > rate * np.maximum(dt_min, 1e-9)
            hits.extend(Hit(s.patient_id, ch, int(x)) for x in t[out | fast])
    return hits


def _windows(t: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Features of every window of `IF_WINDOW` readings (levels and first differences per
    minute) and the time of each window's last reading."""
    if v.size < IF_WINDOW:
        return np.zeros((0, 2 * IF_WINDOW - 1)), np.zeros(0, np.int64)
    level = np.lib.stride_tricks.sliding_window_view(v, IF_WINDOW)
    dt = np.lib.stride_tricks.sliding_window_view(np.diff(t) / MINUTE_MS, IF_WINDOW - 1)
    slope = np.diff(level, axis=1) / np.maximum(dt, 1e-9)
    return np.hstack([level, slope]), t[IF_WINDOW - 1:]


def isolation_forest_findings(scenarios: Sequence[Scenario],
                              training: Mapping[str, Training], seed: int = 0) -> list[Hit]:
    """An IsolationForest per base patient and channel, fitted on its training day; a window
    whose score falls below the forest's threshold is a hit at its last reading.

    The contamination is the per-window share that spends the clean false-alarm budget
    (`BUDGET_PER_WEEK` per patient-week, spread over the channels of the patient's stream).
    """
    from sklearn.ensemble import IsolationForest

    forests: dict[tuple[str, Channel], IsolationForest] = {}
    hits: list[Hit] = []
    for s in scenarios:
        for ch in _scored_channels(s):
            key = (s.base, ch)
            if key not in forests:
                t_train, v_train = training[s.base].observed[ch]
                x_train, _ = _windows(t_train, v_train)
                per_week = x_train.shape[0] * 7 * len(training[s.base].observed)
                contamination = min(0.5, max(BUDGET_PER_WEEK / per_week, 1e-6))
                forests[key] = IsolationForest(
                    n_estimators=IF_TREES, contamination=contamination,
                    random_state=seed).fit(x_train)
            x, t_end = _windows(*s.observed[ch])
            if x.shape[0] == 0:
                continue
            flagged = forests[key].predict(x) < 0
            hits.extend(Hit(s.patient_id, ch, int(x_)) for x_ in t_end[flagged])
    return hits
