"""Virtual patients and devices for the demo, tests and benchmarks: a ward that sends signed
packets, UVA/Padova glucose patients, vectorized vital signs, forged or replayed packets, and
an attack and fault library for attacked streams."""

from medtwin.sim._attacked_ndjson import (
    ATTACK_DATA_KINDS,
    ATTACK_DEFAULT_SIZE,
    AttackedRows,
    attack_of,
    attack_rows,
    resigned_envelope,
)
from medtwin.sim._attacks import (
    ATTACK_KINDS,
    Attack,
    AttackedStream,
    AttackResult,
    apply_attack,
    bias_attack,
    compromised_key_envelopes,
    dropout_attack,
    flood_envelopes,
    freeze_attack,
    noise_attack,
    ramp_attack,
    replay_attack,
    rogue_device,
    rogue_envelopes,
    spike_attack,
    time_shift_attack,
)
from medtwin.sim._devices import (
    DeviceRegistration,
    VirtualDevice,
    forged_envelope,
    replayed_envelope,
    tampered_envelope,
)
from medtwin.sim._glucose import GlucosePatient, GlucoseStep, cohort_names
from medtwin.sim._sessions import SessionDevice
from medtwin.sim._vitals import (
    VitalSigns,
    VitalsParams,
    VitalsState,
    deterioration_severity,
    vitals_init,
    vitals_step,
)
from medtwin.sim._ward import Ward, WardPatient

__all__ = [
    "ATTACK_DATA_KINDS",
    "ATTACK_DEFAULT_SIZE",
    "ATTACK_KINDS",
    "Attack",
    "AttackResult",
    "AttackedRows",
    "AttackedStream",
    "DeviceRegistration",
    "GlucosePatient",
    "GlucoseStep",
    "SessionDevice",
    "VirtualDevice",
    "VitalSigns",
    "VitalsParams",
    "VitalsState",
    "Ward",
    "WardPatient",
    "apply_attack",
    "attack_of",
    "attack_rows",
    "bias_attack",
    "cohort_names",
    "compromised_key_envelopes",
    "deterioration_severity",
    "dropout_attack",
    "flood_envelopes",
    "forged_envelope",
    "freeze_attack",
    "noise_attack",
    "ramp_attack",
    "replay_attack",
    "replayed_envelope",
    "resigned_envelope",
    "rogue_device",
    "rogue_envelopes",
    "spike_attack",
    "tampered_envelope",
    "time_shift_attack",
    "vitals_init",
    "vitals_step",
]
