"""State estimation of the twin, batched over patients: smoothed channels, UKF, glucose twin."""

from medtwin.estimation._bank import TwinBank, TwinUpdate
from medtwin.estimation._glucose_twin import (
    FORECAST_STEP_MIN,
    Z_95,
    GlucoseFilterState,
    GlucoseFilterStep,
    GlucoseNoise,
    glucose_filter_init,
    glucose_filter_step,
    glucose_forecast,
)
from medtwin.estimation._scan import (
    linear_recurrence,
    segment_starts,
    segmented_cummax,
    segmented_scan,
)
from medtwin.estimation._smoother import (
    NO_TIME,
    EventResult,
    SmootherParams,
    StepResult,
    TwinArrays,
    default_smoother_params,
    empty_twin,
    smoother_events,
    smoother_step,
)
from medtwin.estimation._ukf import (
    MIN_EIGENVALUE,
    UKFParams,
    UKFUpdate,
    safe_cholesky,
    sigma_points,
    sigma_weights,
    ukf_predict,
    ukf_update,
)

__all__ = [
    "FORECAST_STEP_MIN",
    "MIN_EIGENVALUE",
    "NO_TIME",
    "Z_95",
    "EventResult",
    "GlucoseFilterState",
    "GlucoseFilterStep",
    "GlucoseNoise",
    "SmootherParams",
    "StepResult",
    "TwinArrays",
    "TwinBank",
    "TwinUpdate",
    "UKFParams",
    "UKFUpdate",
    "default_smoother_params",
    "empty_twin",
    "glucose_filter_init",
    "glucose_filter_step",
    "glucose_forecast",
    "linear_recurrence",
    "safe_cholesky",
    "segment_starts",
    "segmented_cummax",
    "segmented_scan",
    "sigma_points",
    "sigma_weights",
    "smoother_events",
    "smoother_step",
    "ukf_predict",
    "ukf_update",
]
