"""What-if: the glucose twin under an altered future of meals and insulin."""

from __future__ import annotations

import numpy as np
import pytest

from medtwin.estimation import (
    GlucoseFilterState,
    GlucoseNoise,
    glucose_filter_init,
    glucose_filter_step,
    glucose_forecast,
    glucose_whatif,
)
from medtwin.physiology import GlucoseParams, default_glucose_params

N, STEPS, DT = 3, 36, 5.0   # three hours on a 5-minute grid
Start = tuple[GlucoseParams, GlucoseFilterState]


def _future(meal_g: float, bolus_u: float) -> tuple[np.ndarray, np.ndarray]:
    carbs = np.zeros((N, STEPS))
    insulin = np.zeros((N, STEPS))
    carbs[:, 2] = meal_g
    insulin[:, 2] = bolus_u
    return carbs, insulin


@pytest.fixture
def start() -> Start:
    params = default_glucose_params(N)
    return params, glucose_filter_init(params, N)


def test_no_inputs_is_the_forecast(start: Start) -> None:
    params, state = start
    mean, lower, upper = glucose_whatif(params, state, DT, *_future(0.0, 0.0))
    f_mean, f_lower, f_upper = glucose_forecast(params, state, (30.0, 60.0))
    assert np.allclose(mean[:, [5, 11]], f_mean)
    assert np.allclose(lower[:, [5, 11]], f_lower) and np.allclose(upper[:, [5, 11]], f_upper)


def test_therapy_changes_move_glucose_the_right_way(start: Start) -> None:
    params, state = start
    usual, _, _ = glucose_whatif(params, state, DT, *_future(60.0, 6.0))
    stronger, _, _ = glucose_whatif(params, state, DT, *_future(60.0, 6.0 * 1.3))
    skipped, _, _ = glucose_whatif(params, state, DT, *_future(0.0, 6.0))
    assert np.all(stronger <= usual + 1e-9) and np.any(stronger < usual - 5.0)
    assert np.all(skipped <= usual + 1e-9) and skipped.min() < usual.min() - 10.0
    peak = usual.argmax(axis=1) * DT
    assert np.all((peak >= 30.0) & (peak <= 150.0))


def test_the_band_widens_with_the_horizon_and_holds_the_mean(start: Start) -> None:
    params, state = start
    for _ in range(24):  # two hours of CGM at 120 mg/dL: a confident twin
        state = glucose_filter_step(params, GlucoseNoise(), state, np.full(N, DT), np.zeros(N),
                                    np.zeros(N), np.full(N, 120.0), np.ones(N, bool)).state
    mean, lower, upper = glucose_whatif(params, state, DT, *_future(40.0, 4.0))
    width = upper - lower
    assert np.all(lower <= mean) and np.all(mean <= upper)
    assert np.all(width[:, -1] > width[:, 0])


def test_patients_are_independent(start: Start) -> None:
    params, state = start
    carbs, insulin = _future(50.0, 5.0)
    carbs[1] *= 2.0
    together = glucose_whatif(params, state, DT, carbs, insulin)[0]
    alone = glucose_whatif(params, state, DT, np.repeat(carbs[1:2], N, 0),
                           np.repeat(insulin[1:2], N, 0))[0]
    assert np.allclose(together[1], alone[0], rtol=1e-9)


def test_bad_shapes_are_refused(start: Start) -> None:
    params, state = start
    with pytest.raises(ValueError, match=r"must both have shape \(3, T\)"):
        glucose_whatif(params, state, DT, np.zeros((2, 4)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="dt_min must be a positive"):
        glucose_whatif(params, state, 0.0, *_future(0.0, 0.0))
