"""GuardBank: classification, holding and quarantine over batches, independent of how the
readings were cut into batches."""

from __future__ import annotations

import numpy as np
import pytest

from medtwin.domain import COMPROMISE_CODES, Channel, FindingCode
from medtwin.guard import HISTORY, QUARANTINE_CONFIDENCE, GuardBank
from medtwin.guard._monitor import SUSTAINED_MS, SUSTAINED_READINGS

T0 = 1_767_225_600_000
STEP = 5 * 60_000


def _stream(n: int, seed: int = 0) -> np.ndarray:
    """A CGM-like stream: a slow wave with a sensor's wobble, whole mg/dL."""
    rng = np.random.default_rng(seed)
    k = np.arange(n)
    return np.round(130 + 40 * np.sin(k / 20) + rng.normal(0, 2.0, n))


def _run(values: np.ndarray, innovation: np.ndarray, batch: int
         ) -> tuple[list[tuple[FindingCode, int, bool]], np.ndarray]:
    """Feed one CGM stream through a bank in batches of `batch` readings; the findings
    (code, data time, quarantines) and which readings were held."""
    bank = GuardBank()
    src = bank.source("pt-1", "cgm-1")
    found, held = [], np.zeros(values.size, bool)
    for a in range(0, values.size, batch):
        b = min(a + batch, values.size)
        n = b - a
        source = np.full(n, src, np.intp)
        channel = np.full(n, int(Channel.GLUCOSE), np.int8)
        time_ms = T0 + np.arange(a, b, dtype=np.int64) * STEP
        screen = bank.screen(source, channel, values[a:b], time_ms)
        judged = bank.judge(screen, channel, values[a:b], time_ms, innovation[a:b],
                            np.full(n, 25.0))
        quarantined = [int(s) for s in judged.newly_blocked]
        found += [(d.detector.code, d.time_ms, d.detector.code in COMPROMISE_CODES
                   and d.detector.confidence >= QUARANTINE_CONFIDENCE
                   and d.source in quarantined) for d in judged.drafts]
        held[a:b] = screen.held
        bank.apply(screen, judged, None, quarantined, screen.held)
    return found, held


@pytest.mark.parametrize("batch", [1, 7, 50])
def test_a_replay_is_found_once_quarantines_and_holds_what_follows(batch: int) -> None:
    values = _stream(200)
    values[150:170] = values[100:120]                # an hour and a half replayed
    found, held = _run(values, np.zeros(values.size), batch)
    replays = [f for f in found if f[0] is FindingCode.REPLAY]
    assert len(replays) == 1 and replays[0][2]
    at = (replays[0][1] - T0) // STEP
    assert 150 <= at < 170
    assert held[at:170].all() and not held[:150].any()
    # the splice itself jumps faster than glucose can: a held sensor fault
    assert (FindingCode.SENSOR_FAULT, T0 + 150 * STEP, False) in found
    after = (at // batch + 1) * batch                # from the next batch on: quarantined
    assert held[after:].all()
    # the same finding at the same data time whatever the batching
    assert sorted(found) == sorted(_run(values, np.zeros(values.size), 200)[0])


def test_a_flat_line_is_held_but_quarantines_nobody() -> None:
    values = _stream(120)
    values[60:80] = values[60]
    found, held = _run(values, np.zeros(values.size), 10)
    assert {f[0] for f in found} == {FindingCode.SENSOR_FAULT}
    assert not any(f[2] for f in found)
    assert held[67:80].all() and not held[85:].any()


def test_residual_runs_are_one_finding_per_episode_and_never_quarantine() -> None:
    values = np.full(300, 120.0) + _stream(300) - 130     # reassuring values
    innovation = np.zeros(300)
    innovation[100:160] = 20.0                            # readings run 4 SD above the twin
    found, held = _run(values, innovation, 9)
    residual = [f for f in found if f[0] is FindingCode.SPOOFING_SUSPECTED]
    assert len(residual) == 1 and not residual[0][2]
    sustained = max(SUSTAINED_MS // STEP, SUSTAINED_READINGS)
    assert 100 + sustained <= (residual[0][1] - T0) // STEP < 106 + sustained
    assert not held.any()


def test_a_burst_on_a_long_quiet_drift_is_not_spoofing() -> None:
    """A CUSUM that has crept over its threshold for hours, then one short burst the window
    test sees: the model missed a moment, nothing persistent runs against it."""
    values = np.full(300, 120.0) + _stream(300) - 130
    innovation = np.full(300, 4.0)                        # 0.8 SD: the CUSUM creeps up
    innovation[200:204] = 25.0                            # a 20-min burst
    found, _ = _run(values, innovation, 9)
    assert FindingCode.SPOOFING_SUSPECTED not in {f[0] for f in found}


def test_a_run_towards_danger_is_physiology() -> None:
    values = np.linspace(160, 60, 200)                    # falling towards hypoglycaemia
    innovation = np.zeros(200)
    innovation[120:] = -20.0
    found, held = _run(np.round(values + _stream(200) - 130), innovation, 5)
    assert not found and not held.any()                   # the clinical rules alert on it


def test_history_is_bounded_and_keeps_the_latest() -> None:
    bank = GuardBank()
    src = bank.source("pt-1", "cgm-1")
    values = _stream(HISTORY + 50)
    n = values.size
    screen = bank.screen(np.full(n, src, np.intp), np.full(n, 0, np.int8), values,
                         T0 + np.arange(n, dtype=np.int64) * STEP)
    assert screen.hist_count.tolist() == [HISTORY]
    assert screen.hist_value[0, -1] == values[-1] and screen.hist_value[0, 0] == values[50]


def test_a_straight_ramp_is_not_a_replay_of_itself() -> None:
    values = 140.0 - 2.5 * np.arange(100)                 # a perfectly steady fall
    found, held = _run(values, np.zeros(values.size), 10)
    assert FindingCode.REPLAY not in {f[0] for f in found}
    assert not held.any()


def test_a_sudden_offset_is_a_level_jump_and_a_curve_is_not() -> None:
    values = _stream(120)
    values[70:] += 40.0                                    # an offset added to the sensor
    found, _ = _run(values, np.zeros(values.size), 10)
    jumps = [f for f in found if f[0] is FindingCode.SENSOR_FAULT]
    assert jumps and (jumps[0][1] - T0) // STEP == 73     # the fourth reading at the new level
    curve = np.round(120 + 60 / (1 + np.exp(-(np.arange(120) - 70) / 3.0)))   # a fast rise
    found, held = _run(curve + _stream(120) - 130, np.zeros(120), 10)
    assert not found and not held.any()


def test_a_step_off_low_is_shown_never_held() -> None:
    bank = GuardBank()
    src = bank.source("pt-1", "cgm-1")
    wobble = np.round(np.random.default_rng(3).normal(0, 1.0, 20))
    fall = np.linspace(110, 42, 40).round()                  # a fall to LOW, then LOW
    values = np.concatenate([fall, np.full(30, 39.0), 62.0 + wobble])   # 5-min: needs 20
    n = values.size
    time_ms = T0 + np.arange(n, dtype=np.int64) * STEP
    channel = np.full(n, int(Channel.GLUCOSE), np.int8)
    screen = bank.screen(np.full(n, src, np.intp), channel, values, time_ms)
    judged = bank.judge(screen, channel, values, time_ms, np.zeros(n), np.full(n, 25.0))
    steps = [d for d in judged.drafts if "LOW" in d.summary]
    assert len(steps) == 1 and steps[0].detector.code is FindingCode.SENSOR_FAULT
    assert (steps[0].time_ms - T0) // STEP == 73               # the fourth reading off LOW
    assert steps[0].detector.confidence < QUARANTINE_CONFIDENCE
    assert not screen.held.any() and not judged.newly_blocked.size
    assert "fingerstick" in steps[0].summary and steps[0].evidence["threshold"].startswith("20")
    assert "left LOW" in steps[0].summary


def test_a_step_onto_low_is_shown_as_reaching_it() -> None:
    bank = GuardBank()
    src = bank.source("pt-1", "cgm-1")
    wobble = np.round(np.random.default_rng(4).normal(0, 1.0, 40))
    values = np.concatenate([62.0 + wobble, np.full(30, 39.0)])   # 62 -> LOW in one step
    n = values.size
    time_ms = T0 + np.arange(n, dtype=np.int64) * STEP
    channel = np.full(n, int(Channel.GLUCOSE), np.int8)
    screen = bank.screen(np.full(n, src, np.intp), channel, values, time_ms)
    [step] = [d for d in bank.judge(screen, channel, values, time_ms, np.zeros(n),
                                    np.full(n, 25.0)).drafts if "LOW" in d.summary]
    assert "reached LOW" in step.summary and (step.time_ms - T0) // STEP == 43
    assert not screen.held.any()


def _residual_run(hook: int, action: str) -> list[int]:
    """Feed 300 readings whose innovations run 4 SD high from reading 100, in batches of 5;
    before reading `hook`, release the source ('release') or add 20 sources ('grow').
    The spoofing findings' reading indexes."""
    bank = GuardBank()
    src = bank.source("pt-1", "cgm-1")
    values = np.full(300, 120.0) + _stream(300) - 130
    innovation = np.where(np.arange(300) >= 100, 20.0, 0.0)
    out = []
    for a in range(0, 300, 5):
        if a == hook and action == "release":
            bank.set_blocked(np.array([src], np.intp), False)
        if a == hook and action == "grow":
            for k in range(20):
                bank.source(f"pt-{k + 2}", "cgm-1")
        source = np.full(5, src, np.intp)
        channel = np.full(5, int(Channel.GLUCOSE), np.int8)
        time_ms = T0 + np.arange(a, a + 5, dtype=np.int64) * STEP
        screen = bank.screen(source, channel, values[a:a + 5], time_ms)
        judged = bank.judge(screen, channel, values[a:a + 5], time_ms, innovation[a:a + 5],
                            np.full(5, 25.0))
        out += [int((d.time_ms - T0) // STEP) for d in judged.drafts
                if d.detector.code is FindingCode.SPOOFING_SUSPECTED]
        bank.apply(screen, judged, None, [], screen.held)
    return out


def test_a_release_restarts_the_residual_run_and_growing_keeps_it() -> None:
    sustained = max(SUSTAINED_MS // STEP, SUSTAINED_READINGS)
    (plain,) = _residual_run(-1, "none")
    assert 100 + sustained - 1 <= plain <= 100 + sustained + 5
    assert _residual_run(110, "grow") == [plain]
    (released,) = _residual_run(110, "release")
    assert released >= 110 + sustained - 1
