"""The batched smoother equals a plain per-reading loop, is pure, and the twin bank grows."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medtwin.domain import N_CHANNELS, Channel
from medtwin.estimation import (
    NO_TIME,
    SmootherParams,
    TwinArrays,
    TwinBank,
    default_smoother_params,
    empty_twin,
    smoother_step,
)


def reference(tau_s: np.ndarray, state: TwinArrays, row: np.ndarray, channel: np.ndarray,
              value: np.ndarray, time_ms: np.ndarray, arrival: np.ndarray | None = None
              ) -> tuple[TwinArrays, np.ndarray]:
    """One reading at a time, in order of arrival then time, in plain Python."""
    last_v = state.last_value.tolist()
    last_t = state.last_time_ms.tolist()
    est = state.estimate.tolist()
    out = [math.nan] * len(value)
    arrived = [0] * len(value) if arrival is None else arrival.tolist()
    for i in sorted(range(len(value)), key=lambda i: (arrived[i], int(time_ms[i]))):
        r, c, v, t = int(row[i]), int(channel[i]), float(value[i]), int(time_ms[i])
        if last_t[r][c] == NO_TIME or math.isnan(est[r][c]):
            est[r][c] = v
        elif t >= last_t[r][c]:
            dt = (t - last_t[r][c]) / 1000.0
            alpha = 1.0 if tau_s[c] == 0 else 1.0 - math.exp(-dt / tau_s[c])
            est[r][c] = est[r][c] + alpha * (v - est[r][c])
        else:  # older than the latest value: ignored
            out[i] = est[r][c]
            continue
        last_v[r][c], last_t[r][c] = v, t
        out[i] = est[r][c]
    return (TwinArrays(np.array(last_v), np.array(last_t, dtype=np.int64), np.array(est)),
            np.array(out))


def scenario(seed: int, n_patients: int, n_readings: int
             ) -> tuple[TwinArrays, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random prior state and a shuffled batch; times are unique per (patient, channel)."""
    rng = np.random.default_rng(seed)
    state = empty_twin(n_patients)
    seen = rng.random((n_patients, N_CHANNELS)) < 0.5
    state.last_time_ms[seen] = rng.integers(0, 600_000, int(seen.sum()))
    state.last_value[seen] = rng.uniform(40, 200, int(seen.sum()))
    state.estimate[seen] = rng.uniform(40, 200, int(seen.sum()))
    row = rng.integers(0, n_patients, n_readings).astype(np.intp)
    channel = rng.integers(0, N_CHANNELS, n_readings).astype(np.int8)
    value = rng.uniform(20, 250, n_readings)
    # unique time per reading, many of them older than the prior state's latest value
    time_ms = rng.permutation(np.arange(n_readings, dtype=np.int64) * 7_919 + 1)
    order = rng.permutation(n_readings)
    return state, row[order], channel[order], value[order], time_ms[order]


@settings(max_examples=60)
@given(seed=st.integers(0, 2**32 - 1), n_patients=st.integers(1, 12),
       n_readings=st.integers(0, 200))
def test_batched_step_equals_sequential_reference(seed: int, n_patients: int,
                                                  n_readings: int) -> None:
    params = default_smoother_params()
    state, row, channel, value, time_ms = scenario(seed, n_patients, n_readings)
    result = smoother_step(params, state, row, channel, value, time_ms)
    expected, expected_out = reference(params.tau_s, state, row, channel, value, time_ms)
    np.testing.assert_array_equal(result.state.last_time_ms, expected.last_time_ms)
    np.testing.assert_array_equal(result.state.last_value, expected.last_value)
    np.testing.assert_allclose(result.state.estimate, expected.estimate, rtol=1e-12)
    np.testing.assert_allclose(result.estimate, expected_out, rtol=1e-12)


@settings(max_examples=40)
@given(seed=st.integers(0, 2**32 - 1), n_patients=st.integers(1, 6),
       n_readings=st.integers(0, 150), n_packets=st.integers(1, 8))
def test_readings_apply_in_arrival_then_time_order(seed: int, n_patients: int, n_readings: int,
                                                   n_packets: int) -> None:
    params = default_smoother_params()
    state, row, channel, value, time_ms = scenario(seed, n_patients, n_readings)
    arrival = np.random.default_rng(seed).integers(0, n_packets, n_readings).astype(np.int64)
    result = smoother_step(params, state, row, channel, value, time_ms, arrival)
    expected, expected_out = reference(params.tau_s, state, row, channel, value, time_ms,
                                       arrival)
    np.testing.assert_array_equal(result.state.last_time_ms, expected.last_time_ms)
    np.testing.assert_allclose(result.state.estimate, expected.estimate, rtol=1e-12)
    np.testing.assert_allclose(result.estimate, expected_out, rtol=1e-12)


def test_one_batch_equals_packet_by_packet() -> None:
    """With arrival = packet position, batching does not change the twin."""
    params = default_smoother_params()
    state, row, channel, value, time_ms = scenario(21, 4, 120)
    packet = np.random.default_rng(1).integers(0, 6, len(value)).astype(np.int64)
    batched = smoother_step(params, state, row, channel, value, time_ms, packet).state
    stepwise = state
    for k in range(6):
        mine = packet == k
        stepwise = smoother_step(params, stepwise, row[mine], channel[mine], value[mine],
                                 time_ms[mine]).state
    for a, b in zip(batched, stepwise, strict=True):
        np.testing.assert_array_equal(a, b)


def test_scenario_exercises_stale_readings() -> None:
    """Guard against a reference test that never meets the 'older than latest' branch."""
    state, row, channel, _, time_ms = scenario(3, 4, 200)
    stale = time_ms < state.last_time_ms[row, channel.astype(np.intp)]
    assert 0 < stale.sum() < len(stale)


def test_order_of_the_batch_does_not_matter() -> None:
    params = default_smoother_params()
    state, row, channel, value, time_ms = scenario(11, 5, 150)
    first = smoother_step(params, state, row, channel, value, time_ms)
    perm = np.random.default_rng(0).permutation(len(value))
    second = smoother_step(params, state, row[perm], channel[perm], value[perm], time_ms[perm])
    np.testing.assert_array_equal(first.state.estimate, second.state.estimate)
    np.testing.assert_array_equal(first.estimate[perm], second.estimate)


def test_exponential_smoothing_by_hand() -> None:
    tau = np.zeros(N_CHANNELS)
    tau[Channel.HEART_RATE] = 60.0
    hr = int(Channel.HEART_RATE)
    result = smoother_step(SmootherParams(tau), empty_twin(1), np.zeros(3, np.intp),
                           np.full(3, hr, np.int8), np.array([60.0, 120.0, 0.0]),
                           np.array([0, 60_000, 60_000], np.int64))
    first = 60.0
    second = first + (1 - math.exp(-1.0)) * (120.0 - first)
    assert result.estimate.tolist() == pytest.approx([first, second, second])  # dt = 0: alpha 0
    assert result.state.last_value[0, hr] == 0.0
    assert result.state.last_time_ms[0, hr] == 60_000


def test_inputs_are_not_smoothed() -> None:
    params = default_smoother_params()
    assert params.tau_s[Channel.CARBS] == 0 and params.tau_s[Channel.INSULIN] == 0
    assert np.all(params.tau_s[[c for c in Channel if not c.is_input]] > 0)
    carbs = int(Channel.CARBS)
    result = smoother_step(params, empty_twin(1), np.zeros(2, np.intp),
                           np.full(2, carbs, np.int8), np.array([40.0, 10.0]),
                           np.array([0, 1_000], np.int64))
    assert result.estimate.tolist() == [40.0, 10.0]


def test_a_much_older_reading_is_ignored_quietly() -> None:
    carbs = int(Channel.CARBS)                    # tau 0: the 'safe' tau of 1 s is used
    state = smoother_step(default_smoother_params(), empty_twin(1), np.zeros(1, np.intp),
                          np.full(1, carbs, np.int8), np.array([40.0]),
                          np.array([3_600_000], np.int64)).state
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = smoother_step(default_smoother_params(), state, np.zeros(1, np.intp),
                               np.full(1, carbs, np.int8), np.array([10.0]),
                               np.array([0], np.int64))
    assert result.state.estimate[0, carbs] == 40.0


def test_step_is_pure() -> None:
    params = default_smoother_params()
    state, row, channel, value, time_ms = scenario(5, 6, 120)
    before = TwinArrays(*(a.copy() for a in state))
    inputs = [a.copy() for a in (row, channel, value, time_ms)]
    tau = params.tau_s.copy()
    smoother_step(params, state, row, channel, value, time_ms)
    for old, now in zip(before, state, strict=True):
        np.testing.assert_array_equal(old, now)
    for old, now in zip(inputs, (row, channel, value, time_ms), strict=True):
        np.testing.assert_array_equal(old, now)
    np.testing.assert_array_equal(tau, params.tau_s)


def test_empty_batch_returns_the_state_unchanged() -> None:
    state, *_ = scenario(1, 3, 0)
    result = smoother_step(default_smoother_params(), state, np.zeros(0, np.intp),
                           np.zeros(0, np.int8), np.zeros(0), np.zeros(0, np.int64))
    assert result.estimate.shape == (0,)
    np.testing.assert_array_equal(result.state.estimate, state.estimate)


# The bank --------------------------------------------------------------------------------------

def _feed(bank: TwinBank, patient: str, channel: Channel, value: float, t: int) -> None:
    update = bank.propose(np.array([bank.row(patient)], np.intp), np.array([channel], np.int8),
                          np.array([value]), np.array([t], np.int64))
    bank.apply(update)


def test_bank_grows_past_capacity_keeping_earlier_rows() -> None:
    bank = TwinBank(capacity=2)
    for i in range(2):
        _feed(bank, f"p{i}", Channel.GLUCOSE, 100.0 + i, 1_000)
    for i in range(2, 9):
        assert bank.row(f"p{i}") == i
    assert len(bank) == 9 and bank.patient_ids() == [f"p{i}" for i in range(9)]
    _feed(bank, "p8", Channel.HEART_RATE, 80.0, 2_000)
    state = bank.rows_state(np.arange(9, dtype=np.intp))
    g, hr = int(Channel.GLUCOSE), int(Channel.HEART_RATE)
    assert state.estimate[:2, g].tolist() == pytest.approx([100.0, 101.0])
    assert state.last_time_ms[:2, g].tolist() == [1_000, 1_000]
    assert np.isnan(state.estimate[2:, g]).all()
    assert state.estimate[8, hr] == 80.0
    assert bank.row("p0") == 0


def test_propose_changes_nothing_until_apply() -> None:
    bank = TwinBank()
    row = bank.row("p")
    update = bank.propose(np.array([row], np.intp), np.array([Channel.SPO2], np.int8),
                          np.array([95.0]), np.array([10], np.int64))
    assert np.isnan(bank.rows_state(np.array([row], np.intp)).estimate).all()
    bank.apply(update)
    assert bank.rows_state(np.array([row], np.intp)).estimate[0, Channel.SPO2] == 95.0


def test_rows_state_returns_copies() -> None:
    bank = TwinBank()
    _feed(bank, "p", Channel.SPO2, 95.0, 10)
    rows = np.array([0], np.intp)
    bank.rows_state(rows).estimate[0, Channel.SPO2] = 0.0
    assert bank.rows_state(rows).estimate[0, Channel.SPO2] == 95.0


def test_ages() -> None:
    bank = TwinBank()
    _feed(bank, "p", Channel.SPO2, 95.0, 10_000)
    ages = bank.ages_s(np.array([0], np.intp), 70_000)
    assert ages.shape == (1, N_CHANNELS)
    assert ages[0, Channel.SPO2] == 60.0
    assert np.isnan(ages[0, Channel.GLUCOSE])


def test_bank_with_zero_capacity_grows() -> None:
    bank = TwinBank(capacity=0)
    _feed(bank, "p", Channel.GLUCOSE, 100.0, 1)
    assert bank.rows_state(np.array([0], np.intp)).estimate[0, Channel.GLUCOSE] == (
        pytest.approx(100.0))
