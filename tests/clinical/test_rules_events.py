"""Rules judged over all events of a batch at once equal rules judged one event at a time."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from medtwin.clinical import N_RULES, rules_over_events, step_rules
from medtwin.domain import N_CHANNELS, Channel
from medtwin.estimation import linear_recurrence, segment_starts, segmented_cummax


def _events(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_patients = draw(st.integers(1, 4))
    counts = draw(st.lists(st.integers(0, 12), min_size=n_patients, max_size=n_patients))
    rows = np.repeat(np.arange(n_patients), counts).astype(np.intp)
    n = rows.shape[0]
    values = np.full((n, N_CHANNELS), np.nan)
    # Values that cross every threshold and its hysteresis band.
    values[:, Channel.GLUCOSE] = draw(st.lists(st.sampled_from([40.0, 52.0, 56.0, 60.0, 68.0,
                                                                72.0, 76.0, 120.0, 245.0,
                                                                255.0]),
                                               min_size=n, max_size=n))
    for channel, choices in ((Channel.HEART_RATE, [60.0, 95.0, 115.0, 135.0]),
                             (Channel.RESP_RATE, [14.0, 22.0, 26.0]),
                             (Channel.SPO2, [97.0, 94.0, 92.0, 90.0]),
                             (Channel.SYSTOLIC_BP, [120.0, 105.0, 95.0]),
                             (Channel.TEMPERATURE, [37.0, 38.5, 39.5])):
        values[:, channel] = draw(st.lists(st.sampled_from(choices), min_size=n, max_size=n))
    initial = np.array(draw(st.lists(st.booleans(), min_size=n_patients * N_RULES,
                                     max_size=n_patients * N_RULES))).reshape(n_patients,
                                                                                  N_RULES)
    return rows, values, initial


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_rules_over_events_equal_one_event_at_a_time(data: st.DataObject) -> None:
    rows, values, initial = data.draw(st.composite(_events)())
    result = rules_over_events(initial, values, rows, segment_starts(rows.astype(np.int64)))

    active = initial.copy()
    fired = []
    for e in range(rows.shape[0]):
        step = step_rules(active[rows[e]][np.newaxis], values[e][np.newaxis])
        active[rows[e]] = step.active[0]
        fired.extend((e, int(rule)) for rule in step.fired_rules)
    assert np.array_equal(result.active, active)
    assert sorted(zip(result.fired_events.tolist(), result.fired_rules.tolist(),
                      strict=True)) == sorted(fired)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.floats(0.0, 1.0), st.floats(-5.0, 5.0)),
                max_size=40))
def test_linear_recurrence_and_cummax_match_loops(steps: list[tuple[int, float, float]]) -> None:
    steps = sorted(steps, key=lambda s: s[0])
    key = np.array([s[0] for s in steps], np.int64)
    a = np.array([s[1] for s in steps])
    b = np.array([s[2] for s in steps])
    initial = key.astype(float) * 10.0
    start = segment_starts(key)
    expected, expected_max = [], []
    for i, (k, ai, bi) in enumerate(steps):
        first = i == 0 or steps[i - 1][0] != k
        y = ai * (initial[i] if first else expected[-1]) + bi
        expected.append(y)
        m = int(bi * 100)
        expected_max.append(m if first else max(expected_max[-1], m))
    assert np.allclose(linear_recurrence(a, b, initial, start), expected)
    assert segmented_cummax((b * 100).astype(np.int64), start).tolist() == expected_max
