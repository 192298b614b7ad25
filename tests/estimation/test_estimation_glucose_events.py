"""The glucose twin on a stream of readings: batching invariance, input conventions, late and
missing data, restarts, and agreement with the filter stepped by hand."""

from __future__ import annotations

import numpy as np
import pytest

from medtwin.domain import Channel
from medtwin.estimation import (
    NO_TIME,
    GlucoseFilterState,
    GlucoseNoise,
    GlucoseRows,
    glucose_events,
    glucose_filter_init,
    glucose_filter_step,
    glucose_rows,
)
from medtwin.estimation._glucose_events import (
    BASAL_CREDIT_MAX_MIN,
    MAX_GAP_MIN,
    processing_order,
)
from medtwin.physiology import (
    GlucoseParams,
    GlucoseState,
    basal_infusion_rate,
    default_glucose_params,
    glucose_dynamics,
    steady_state,
)

MIN = 60_000
G, CARBS, INSULIN = (np.int8(c) for c in (Channel.GLUCOSE, Channel.CARBS, Channel.INSULIN))


def _stream(n_steps: int = 60, seed: int = 0) -> tuple[np.ndarray, ...]:
    """One patient's CGM every 5 min from the model (a 60 g meal with a 6 U bolus at step
    10, the pump delivering the model's basal every step), with sensor noise; channel,
    value, time arrays in time order (inputs before the CGM of the same time)."""
    p = default_glucose_params(1)
    rng = np.random.default_rng(seed)
    x = steady_state(p)
    basal_dose = float(basal_infusion_rate(p)[0]) * 5.0
    channel, value, time = [], [], []
    for k in range(n_steps):
        t = k * 5 * MIN
        carbs, bolus = (60.0, 6.0) if k == 10 else (0.0, 0.0)
        if carbs:
            channel.append(CARBS), value.append(carbs), time.append(t)
        channel.append(INSULIN), value.append(basal_dose + bolus), time.append(t)
        channel.append(G), value.append(float(x[0, GlucoseState.GI]) + rng.normal(0, 5)),
        time.append(t)
        x = glucose_dynamics(x, np.array([[carbs, bolus]]), p, np.array([5.0]))
    return np.array(channel, np.int8), np.array(value), np.array(time, np.int64)


def _fold(rows: GlucoseRows, channel: np.ndarray, value: np.ndarray, time: np.ndarray,
          patient: np.ndarray | None = None, params: GlucoseParams | None = None):
    patient = np.zeros(value.size, np.intp) if patient is None else patient
    n = rows.mean.shape[0]
    p = default_glucose_params(n) if params is None else params
    order = processing_order(patient, channel, time, np.zeros(value.size, np.int64))
    return glucose_events(p, GlucoseNoise(), rows, patient, channel, value, time, order)


def test_the_result_does_not_depend_on_batching() -> None:
    channel, value, time = _stream()
    whole = _fold(glucose_rows(default_glucose_params(1), 1), channel, value, time)
    rows = glucose_rows(default_glucose_params(1), 1)
    pieces = []
    times = np.unique(time)   # packets of one time each, in 7 batches
    for chunk_times in np.array_split(times, 7):
        chunk = np.flatnonzero(np.isin(time, chunk_times))
        result = _fold(rows, channel[chunk], value[chunk], time[chunk])
        rows = result.rows
        pieces.append(result.readings)
    for name in ("estimate", "innovation", "innovation_var", "forecast"):
        joined = np.concatenate([getattr(p, name) for p in pieces])
        np.testing.assert_allclose(joined, getattr(whole.readings, name), rtol=1e-12,
                                   equal_nan=True)
    np.testing.assert_allclose(rows.mean, whole.rows.mean, rtol=1e-12)


def test_it_is_the_filter_stepped_by_hand() -> None:
    """Pump basal at the model's rate adds nothing; the bolus and meal are given at the start
    of the step after the reading that reported them."""
    channel, value, time = _stream(30)
    result = _fold(glucose_rows(default_glucose_params(1), 1), channel, value, time)
    p = default_glucose_params(1)
    noise = GlucoseNoise()
    cgm = np.flatnonzero(channel == G)
    state = glucose_filter_init(p, 1)
    state.mean[0, [GlucoseState.G, GlucoseState.GI]] = value[cgm[0]]
    state.cov[0, GlucoseState.G, GlucoseState.G] = 400.0
    state.cov[0, GlucoseState.GI, GlucoseState.GI] = 100.0
    state.cov[0, GlucoseState.G, GlucoseState.GI] = state.cov[0, GlucoseState.GI,
                                                              GlucoseState.G] = 180.0
    estimates, plasma = [value[cgm[0]]], [value[cgm[0]]]
    first_dose = float(basal_infusion_rate(p)[0]) * 5.0   # no basal owed yet at the start
    for k, i in enumerate(cgm[1:], start=1):
        carbs, bolus = (60.0, 6.0) if k == 11 else (0.0, first_dose if k == 1 else 0.0)
        step = glucose_filter_step(p, noise, state, np.array([5.0]), np.array([carbs]),
                                   np.array([bolus]), value[[i]], np.array([True]))
        state = step.state
        estimates.append(state.mean[0, GlucoseState.GI])
        plasma.append(state.mean[0, GlucoseState.G])
    np.testing.assert_allclose(result.readings.estimate[cgm], estimates, rtol=1e-9)
    np.testing.assert_allclose(result.readings.plasma[cgm], plasma, rtol=1e-9)
    assert np.isnan(result.readings.estimate[channel != G]).all()
    assert np.isnan(result.readings.innovation[channel != G]).all()


def test_patients_do_not_affect_each_other() -> None:
    channel, value, time = _stream(20)
    alone = _fold(glucose_rows(default_glucose_params(1), 1), channel, value, time)
    other_c, other_v, other_t = _stream(25, seed=3)
    both = _fold(glucose_rows(default_glucose_params(2), 2), np.concatenate([other_c, channel]),
                 np.concatenate([other_v + 40.0, value]), np.concatenate([other_t, time]),
                 np.repeat(np.array([1, 0], np.intp), [other_v.size, value.size]))
    mine = slice(other_v.size, None)
    np.testing.assert_allclose(both.readings.estimate[mine], alone.readings.estimate,
                               rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(both.readings.forecast[mine], alone.readings.forecast,
                               rtol=1e-12, equal_nan=True)


def test_a_meal_raises_and_a_bolus_lowers_the_forecast() -> None:
    rows = _fold(glucose_rows(default_glucose_params(1), 1), np.array([G]),
                 np.array([120.0]), np.array([0], np.int64)).rows

    def forecast_after(extra_c: list[np.int8], extra_v: list[float]) -> np.ndarray:
        """The forecast at a CGM value at 5 min, inputs reported at 4 min."""
        c = np.array([*extra_c, G], np.int8)
        v = np.array([*extra_v, 120.0])
        t = np.array([4 * MIN] * len(extra_c) + [5 * MIN], np.int64)
        return _fold(rows, c, v, t).readings.forecast[-1]

    plain = forecast_after([], [])
    meal = forecast_after([CARBS], [50.0])
    bolus = forecast_after([INSULIN], [4.0])
    assert (meal > plain + 10.0).all()
    assert bolus[0] < plain[0] - 1.0 and bolus[1] < plain[1] - 10.0   # insulin acts slowly


def test_pump_basal_at_the_model_rate_adds_no_insulin_but_a_bolus_does() -> None:
    p = default_glucose_params(1)
    rows = _fold(glucose_rows(p, 1), np.array([G, G], np.int8), np.array([120.0, 120.0]),
                 np.array([0, 5 * MIN], np.int64)).rows     # one step: 5 min of basal owed
    basal_dose = float(basal_infusion_rate(p)[0]) * 5.0
    after = _fold(rows, np.array([INSULIN], np.int8), np.array([basal_dose]),
                  np.array([5 * MIN], np.int64)).rows
    assert after.insulin_u[0] == pytest.approx(0.0, abs=1e-12)
    bolus = _fold(rows, np.array([INSULIN], np.int8), np.array([basal_dose + 3.0]),
                  np.array([5 * MIN], np.int64)).rows
    assert bolus.insulin_u[0] == pytest.approx(3.0)
    # a pen user reporting boluses only: at most BASAL_CREDIT_MAX_MIN of basal is deducted
    late = _fold(rows, np.array([G, INSULIN], np.int8), np.array([120.0, 3.0]),
                 np.array([120 * MIN, 120 * MIN], np.int64)).rows
    deducted = float(basal_infusion_rate(p)[0]) * BASAL_CREDIT_MAX_MIN
    assert late.insulin_u[0] == pytest.approx(3.0 - deducted)


def test_a_late_cgm_value_changes_nothing_and_a_late_input_still_counts() -> None:
    rows = _fold(glucose_rows(default_glucose_params(1), 1), np.array([G, G]),
                 np.array([120.0, 121.0]), np.array([0, 10 * MIN], np.int64)).rows
    late = _fold(rows, np.array([G], np.int8), np.array([60.0]), np.array([5 * MIN], np.int64))
    assert np.isnan(late.readings.estimate[0])
    np.testing.assert_array_equal(late.rows.mean, rows.mean)
    meal = _fold(rows, np.array([CARBS], np.int8), np.array([40.0]),
                 np.array([5 * MIN], np.int64))
    assert meal.rows.carbs_g[0] == 40.0
    assert meal.rows.time_ms[0] == 10 * MIN
    later = _fold(meal.rows, np.array([G], np.int8), np.array([121.0]),
                  np.array([15 * MIN], np.int64))
    assert later.rows.carbs_g[0] == 0.0 and later.rows.mean[0, GlucoseState.D1] > 30.0


def test_inputs_before_the_first_cgm_wait_and_a_long_gap_restarts() -> None:
    rows = _fold(glucose_rows(default_glucose_params(1), 1), np.array([CARBS], np.int8),
                 np.array([30.0]), np.array([0], np.int64)).rows
    assert rows.time_ms[0] == NO_TIME and rows.carbs_g[0] == 30.0
    started = _fold(rows, np.array([G, G], np.int8), np.array([95.0, 96.0]),
                    np.array([MIN, 2 * MIN], np.int64))
    assert started.readings.estimate[0] == 95.0 and np.isnan(started.readings.innovation[0])
    assert np.isfinite(started.readings.innovation[1])
    assert started.rows.carbs_g[0] == 0.0      # given at the first value, 1 min before
    assert started.rows.mean[0, GlucoseState.D1] + started.rows.mean[0, GlucoseState.D2] == (
        pytest.approx(30.0, abs=1.0))
    gap = int((MAX_GAP_MIN + 5) * MIN)
    restarted = _fold(started.rows, np.array([G], np.int8), np.array([200.0]),
                      np.array([MIN + gap], np.int64))
    assert restarted.readings.estimate[0] == pytest.approx(200.0, abs=1.0)
    assert restarted.rows.mean[0, GlucoseState.D1] == pytest.approx(0.0, abs=1e-6)


def test_the_plasma_estimate_is_closer_to_plasma_glucose_than_the_lagging_cgm() -> None:
    channel, value, time = _stream(120, seed=5)
    result = _fold(glucose_rows(default_glucose_params(1), 1), channel, value, time)
    p = default_glucose_params(1)
    x = steady_state(p)
    plasma = []
    for k in range(120):
        plasma.append(x[0, GlucoseState.G])
        x = glucose_dynamics(x, np.array([[60.0, 6.0] if k == 10 else [0.0, 0.0]]), p,
                             np.array([5.0]))
    cgm = channel == G
    truth = np.array(plasma)[5:]
    twin_rmse = np.sqrt(np.mean((result.readings.plasma[cgm][5:] - truth) ** 2))
    raw_rmse = np.sqrt(np.mean((value[cgm][5:] - truth) ** 2))
    assert twin_rmse < raw_rmse
    assert np.isfinite(result.readings.forecast[cgm]).all()
    band = result.readings.forecast_high[cgm] - result.readings.forecast_low[cgm]
    assert (band[:, 1] > band[:, 0]).all()   # wider at 60 min than at 30


def test_state_shapes_follow_the_filter() -> None:
    rows = glucose_rows(default_glucose_params(3), 3)
    assert rows.mean.shape[0] == 3 and rows.cov.shape == (3, *rows.cov.shape[1:])
    assert (rows.time_ms == NO_TIME).all()
    prior = glucose_filter_init(default_glucose_params(3), 3)
    assert isinstance(prior, GlucoseFilterState)
    np.testing.assert_array_equal(rows.mean, prior.mean)


def test_a_non_finite_dose_is_ignored() -> None:
    rows = _fold(glucose_rows(default_glucose_params(1), 1), np.array([G]), np.array([120.0]),
                 np.array([0], np.int64)).rows
    after = _fold(rows, np.array([CARBS, INSULIN, G], np.int8),
                  np.array([np.inf, np.inf, 121.0]),
                  np.array([MIN, MIN, 5 * MIN], np.int64))
    assert np.isfinite(after.rows.mean).all() and np.isfinite(after.readings.estimate[2])


def test_a_late_cgm_value_reads_the_same_however_batched() -> None:
    """Through the bank: a late CGM value's estimate is the twin's glucose then, in one batch
    or two."""
    from medtwin.estimation import TwinBank

    readings = [(100.0, 0), (140.0, 5), (180.0, 10), (250.0, 7)]   # the last one is late

    def fold(groups: list[list[int]]) -> float:
        bank = TwinBank()
        bank.row("p")
        got = np.nan
        for group in groups:
            update = bank.propose(np.zeros(len(group), np.intp), np.full(len(group), G),
                                  np.array([readings[i][0] for i in group]),
                                  np.array([readings[i][1] * MIN for i in group], np.int64),
                                  np.arange(len(group), dtype=np.int64))
            bank.apply(update)
            got = float(update.estimate[-1])
        return got

    assert fold([[0, 1, 2, 3]]) == pytest.approx(fold([[0, 1, 2], [3]]), abs=1e-9)
