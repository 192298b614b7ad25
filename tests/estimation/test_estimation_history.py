"""Gridding of raw glucose, carbohydrate and insulin rows for the glucose twin."""

from __future__ import annotations

import numpy as np
import pytest

from medtwin.domain import Channel
from medtwin.estimation import GlucoseHistory, grid_glucose_history

MIN = 60_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00Z, a multiple of 5 min
G, C, INS, HR = (int(c) for c in (Channel.GLUCOSE, Channel.CARBS, Channel.INSULIN,
                                Channel.HEART_RATE))


def _grid(rows: list[tuple[str, int, int, float]], **kwargs: int) -> GlucoseHistory:
    pids, times, channels, values = zip(*rows, strict=True)
    return grid_glucose_history(list(pids), list(times), list(channels), list(values), 5.0,
                                **kwargs)


def test_cgm_at_step_ends_inputs_at_the_next_step_start() -> None:
    h = _grid([
        ("a", T0 + 3 * MIN, G, 100.0),    # (t0, t1] -> read at the end of step 0
        ("a", T0 + 5 * MIN, G, 105.0),    # exactly t1: still step 0, the later one wins
        ("a", T0 + 7 * MIN, G, 110.0),    # step 1
        ("a", T0 + 3 * MIN, C, 20.0),     # reported in step 0 -> given at the start of step 1
        ("a", T0 + 5 * MIN, C, 10.0),     # exactly t1 -> start of step 1 as well
        ("a", T0 + 6 * MIN, INS, 1.5),      # -> start of step 2
        ("a", T0 + 9 * MIN, INS, 0.5),      # summed with it
        ("a", T0 + 21 * MIN, G, 120.0),   # step 4; steps 2 and 3 have no CGM
    ], start_ms=T0)
    assert h.patient_ids == ("a",)
    assert h.start_ms == T0 and h.step_min == 5.0
    assert h.n_steps == 5 and h.end_ms == T0 + 25 * MIN
    np.testing.assert_array_equal(h.cgm, [[105.0, 110.0, np.nan, np.nan, 120.0]])
    np.testing.assert_array_equal(h.carbs_g, [[0.0, 30.0, 0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(h.insulin_u, [[0.0, 0.0, 2.0, 0.0, 0.0]])
    np.testing.assert_array_equal(h.pending_carbs_g, [0.0])


def test_default_start_is_the_step_boundary_before_the_first_row() -> None:
    h = _grid([("a", T0, G, 100.0), ("a", T0, INS, 1.0), ("a", T0 + 12 * MIN, G, 90.0)])
    assert h.start_ms == T0 - 5 * MIN       # a reading exactly on a boundary is kept
    assert h.end_ms == T0 + 15 * MIN
    np.testing.assert_array_equal(h.cgm, [[100.0, np.nan, np.nan, 90.0]])
    np.testing.assert_array_equal(h.insulin_u, [[0.0, 1.0, 0.0, 0.0]])


def test_inputs_of_the_last_step_are_pending() -> None:
    h = _grid([("a", T0 + 5 * MIN, G, 100.0), ("a", T0 + 5 * MIN, C, 40.0),
               ("a", T0 + 5 * MIN, INS, 4.0)], start_ms=T0)
    assert h.n_steps == 1
    np.testing.assert_array_equal(h.carbs_g, [[0.0]])
    np.testing.assert_array_equal(h.pending_carbs_g, [40.0])
    np.testing.assert_array_equal(h.pending_insulin_u, [4.0])


def test_order_of_distinct_times_does_not_matter_and_patients_are_separate() -> None:
    rng = np.random.default_rng(3)
    n = 300
    pids = rng.choice(["p2", "p1", "p3"], n)
    times = T0 + rng.choice(np.arange(1, 6 * 60 * 60), n, replace=False) * 1000  # distinct
    channels = rng.choice([G, C, INS, HR], n)
    values = rng.uniform(1.0, 300.0, n)
    h = grid_glucose_history(pids, times, channels, values, 5.0, start_ms=T0,
                             end_ms=T0 + 6 * 60 * MIN)
    perm = rng.permutation(n)
    again = grid_glucose_history(pids[perm], times[perm], channels[perm], values[perm], 5.0,
                                 start_ms=T0, end_ms=T0 + 6 * 60 * MIN)
    assert h.patient_ids == again.patient_ids == ("p1", "p2", "p3")
    for a, b in zip(h, again, strict=True):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)
    for i, pid in enumerate(h.patient_ids):
        mine = pids == pid
        alone = grid_glucose_history(pids[mine], times[mine], channels[mine], values[mine], 5.0,
                                     start_ms=T0, end_ms=T0 + 6 * 60 * MIN)
        np.testing.assert_array_equal(alone.cgm[0], h.cgm[i])
        np.testing.assert_array_equal(alone.carbs_g[0], h.carbs_g[i])
        # Sums: every input row is on the grid or pending, none twice.
        for c, grid, pending in ((C, h.carbs_g, h.pending_carbs_g),
                                 (INS, h.insulin_u, h.pending_insulin_u)):
            total = values[mine & (channels == c)].sum()
            assert grid[i].sum() + pending[i] == pytest.approx(total)
    assert np.isnan(h.cgm).any() and np.isfinite(h.cgm).any()


def test_rows_outside_the_window_are_dropped() -> None:
    h = _grid([("a", T0, G, 100.0),                 # at start: belongs to the step before
               ("a", T0 - MIN, C, 50.0),            # before start
               ("a", T0, C, 10.0),                  # at start: given at the start of step 0
               ("a", T0 + 11 * MIN, G, 90.0),       # after end
               ("a", T0 + 10 * MIN, G, 95.0)], start_ms=T0, end_ms=T0 + 10 * MIN)
    np.testing.assert_array_equal(h.cgm, [[np.nan, 95.0]])
    np.testing.assert_array_equal(h.carbs_g, [[10.0, 0.0]])


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match=r"must all have shape \(n_rows,\)"):
        grid_glucose_history(["a"], [T0, T0], [G, G], [1.0, 2.0])
    with pytest.raises(ValueError, match="step_min must be a positive"):
        grid_glucose_history(["a"], [T0], [G], [1.0], 0.0)
    with pytest.raises(ValueError, match="no glucose, carbohydrate or insulin rows"):
        grid_glucose_history(["a"], [T0], [HR], [70.0])
    with pytest.raises(ValueError, match="end_ms is before start_ms"):
        grid_glucose_history(["a"], [T0], [G], [1.0], start_ms=T0, end_ms=T0 - 1)
    empty = grid_glucose_history([], [], [], [], start_ms=T0, end_ms=T0 + 10 * MIN)
    assert empty.patient_ids == () and empty.cgm.shape == (0, 2)
