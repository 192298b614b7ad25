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

__all__ = [
    "NO_TIME",
    "EventResult",
    "SmootherParams",
    "StepResult",
    "TwinArrays",
    "TwinBank",
    "TwinUpdate",
    "default_smoother_params",
    "empty_twin",
    "linear_recurrence",
    "segment_starts",
    "segmented_cummax",
    "segmented_scan",
    "smoother_events",
    "smoother_step",
]
