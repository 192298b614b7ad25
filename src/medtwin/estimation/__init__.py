"""State estimation of the twin, batched over patients (first version: smoothed channels)."""

from medtwin.estimation._bank import TwinBank, TwinUpdate
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
    "MIN_EIGENVALUE",
    "NO_TIME",
    "EventResult",
    "SmootherParams",
    "StepResult",
    "TwinArrays",
    "TwinBank",
    "TwinUpdate",
    "UKFParams",
    "UKFUpdate",
    "default_smoother_params",
    "empty_twin",
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
