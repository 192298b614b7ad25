"""State estimation of the twin, batched over patients (first version: smoothed channels)."""

from medtwin.estimation._bank import TwinBank, TwinUpdate
from medtwin.estimation._smoother import (
    NO_TIME,
    SmootherParams,
    StepResult,
    TwinArrays,
    default_smoother_params,
    empty_twin,
    plan_rounds,
    smoother_step,
    smoother_update,
)

__all__ = [
    "NO_TIME",
    "SmootherParams",
    "StepResult",
    "TwinArrays",
    "TwinBank",
    "TwinUpdate",
    "default_smoother_params",
    "empty_twin",
    "plan_rounds",
    "smoother_step",
    "smoother_update",
]
