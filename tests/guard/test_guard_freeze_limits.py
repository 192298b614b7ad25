"""Frozen values on SpO2 (judged against the oximeter's own repeats; at 100 %, against its
own habit of staying there) and the run's first value: a slow drift is not a freeze."""

from __future__ import annotations

import numpy as np
import pytest

from medtwin.domain import Channel, FindingCode
from medtwin.guard import GuardBank, frozen_values

T0 = 1_700_000_000_000
MINUTE = 60_000


def oximeter(n: int, seed: int) -> tuple[np.ndarray, ...]:
    """One-minute whole-percent SpO2 wandering around 96 %."""
    rng = np.random.default_rng(seed)
    value = np.clip(np.round(96 + rng.normal(0, 1.0, n)), 70, 100)
    return (np.zeros(n, np.int64), T0 + np.arange(n, dtype=np.int64) * MINUTE, value,
            np.full(n, int(Channel.SPO2), np.int64))


def test_a_frozen_oximeter_is_caught_after_30_minutes() -> None:
    stream, time_ms, value, channel = oximeter(600, 1)
    assert not frozen_values(stream, time_ms, value, channel).alarm.any()
    value[400:440] = value[399]                                  # stuck for 40 min
    r = frozen_values(stream, time_ms, value, channel)
    hits = np.flatnonzero(r.alarm)
    assert hits.size and hits.min() == 429 and hits.max() == 439  # from 30 min on
    assert (r.chance[hits] < 3e-3).all()


def test_an_oximeter_pinned_at_100_on_oxygen_is_not_stuck() -> None:
    """On oxygen for hours, with a dip to 99 % now and then: once the sensor has a history
    there (its first run has none, and is judged as a new one), 100 % is where it stays."""
    stream, time_ms, value, channel = oximeter(900, 2)
    value[:] = 100.0
    value[::97] = 99.0
    assert not frozen_values(stream, time_ms, value, channel).alarm[97:].any()


def test_a_freeze_at_100_is_caught_on_a_sensor_that_only_touches_it() -> None:
    """An oximeter that reads 100 % now and then, for a minute or two, frozen there."""
    stream, time_ms, value, channel = oximeter(600, 6)
    value[:400] = np.clip(value[:400] + 3, 70, 100)               # wanders 96-100 %
    assert 0 < (value[:400] == 100).sum() < 200
    assert not frozen_values(stream, time_ms, value, channel).alarm[:400].any()
    value[400:450] = 100.0
    r = frozen_values(stream, time_ms, value, channel)
    hits = np.flatnonzero(r.alarm)
    assert hits.size and 429 <= hits.min() <= 431 and hits.max() == 449
    assert (r.repeat_share[hits] < 0.8).all()


def test_a_patient_newly_pinned_at_100_is_flagged_for_2_hours_only() -> None:
    """medtwin is not told when oxygen starts: a new run at 100 % is flagged from 30 min,
    and after 2 h the patient is taken to be on oxygen."""
    stream, time_ms, value, channel = oximeter(600, 7)
    value[200:] = 100.0
    hits = np.flatnonzero(frozen_values(stream, time_ms, value, channel).alarm)
    assert hits.size and hits.min() == 230 and hits.max() == 320


def test_a_drift_slower_than_the_resolution_per_reading_is_not_a_freeze() -> None:
    stream, time_ms, value, channel = oximeter(600, 3)
    value[300:400] = 96.0 - 0.25 * np.arange(100)               # unrounded, 0.25 % a minute
    assert not frozen_values(stream, time_ms, value, channel).alarm[300:400].any()


def test_a_freeze_after_a_small_drift_is_caught() -> None:
    """Runs are levels, not steps: creeping off a value and then holding still is stuck."""
    stream, time_ms, value, channel = oximeter(600, 4)
    value[400:403] = [96.0, 95.7, 95.4]
    value[403:460] = 95.4                                        # held for 57 min
    hits = np.flatnonzero(frozen_values(stream, time_ms, value, channel).alarm)
    assert hits.size and 430 <= hits.min() <= 433 and hits.max() == 459


@pytest.mark.parametrize(("level", "held"), [(96.0, True), (86.0, False)])
def test_a_stuck_value_is_held_only_while_it_reassures(level: float, held: bool) -> None:
    """Stuck at 96 %, the oximeter could hide a desaturation: held. At 86 % it may be a
    patient resting there: shown, and the clinical rules keep seeing it."""
    _, time_ms, value, channel = oximeter(600, 5)
    value[400:460] = level
    bank = GuardBank()
    src = bank.source("pt-1", "monitor-1")
    screen = bank.screen(np.full(600, src, np.intp), channel.astype(np.int8), value, time_ms)
    (frozen,) = [d for d in screen.drafts if d.detector.name == "frozen-value"]
    assert frozen.detector.code is FindingCode.SENSOR_FAULT
    assert bool(screen.held[430:460].all()) is held and not screen.held[460:].any()
