"""Virtual patients and devices for the demo, tests and benchmarks: a ward that sends signed
packets, UVA/Padova glucose patients, vectorized vital signs, and forged or replayed packets."""

from medtwin.sim._devices import (
    DeviceRegistration,
    VirtualDevice,
    forged_envelope,
    replayed_envelope,
    tampered_envelope,
)
from medtwin.sim._glucose import GlucosePatient, GlucoseStep, cohort_names
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
    "DeviceRegistration",
    "GlucosePatient",
    "GlucoseStep",
    "VirtualDevice",
    "VitalSigns",
    "VitalsParams",
    "VitalsState",
    "Ward",
    "WardPatient",
    "cohort_names",
    "deterioration_severity",
    "forged_envelope",
    "replayed_envelope",
    "tampered_envelope",
    "vitals_init",
    "vitals_step",
]
