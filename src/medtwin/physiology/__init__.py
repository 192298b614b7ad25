"""Physiological models as pure, vectorized functions `f(x, u, θ, dt)`: glucose–insulin (T1D)."""

from medtwin.physiology._glucose import (
    GLUCOSE_INPUT_CHANNELS,
    GLUCOSE_OBSERVED_CHANNEL,
    GLUCOSE_STATE_MAX,
    GLUCOSE_STATE_MIN,
    MAX_SUBSTEP_MIN,
    N_GLUCOSE_INPUTS,
    N_GLUCOSE_STATES,
    GlucoseInput,
    GlucoseParams,
    GlucoseState,
    basal_infusion_rate,
    broadcast_glucose_params,
    default_glucose_params,
    glucose_dynamics,
    glucose_observation,
    steady_state,
)

__all__ = [
    "GLUCOSE_INPUT_CHANNELS",
    "GLUCOSE_OBSERVED_CHANNEL",
    "GLUCOSE_STATE_MAX",
    "GLUCOSE_STATE_MIN",
    "MAX_SUBSTEP_MIN",
    "N_GLUCOSE_INPUTS",
    "N_GLUCOSE_STATES",
    "GlucoseInput",
    "GlucoseParams",
    "GlucoseState",
    "basal_infusion_rate",
    "broadcast_glucose_params",
    "default_glucose_params",
    "glucose_dynamics",
    "glucose_observation",
    "steady_state",
]
