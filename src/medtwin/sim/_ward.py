"""A simulated ward: patients with a CGM, a vitals monitor, a BP cuff and an insulin pump each.

Values are deterministic for a seed (device keys are random). 20 patients take 1.2-2 s
of one CPU core per simulated hour (2080 signed packets; the glucose simulators dominate), so
the demo's 60× speed (one simulated minute per second) needs 2-4 % of a core.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from medtwin.domain import Channel, Reading
from medtwin.sim._devices import DeviceRegistration, VirtualDevice
from medtwin.sim._glucose import GlucosePatient, cohort_names
from medtwin.sim._vitals import VitalsParams, vitals_init, vitals_step

MINUTE_MS = 60_000
#: The BP cuff measures every 15 minutes.
BP_INTERVAL_MIN = 15
#: A deteriorating patient's onset falls at a random whole minute in this window after start.
DEFAULT_ONSET_WINDOW_MS = (30 * MINUTE_MS, 120 * MINUTE_MS)
#: Channels of the wearable vitals monitor (every minute) and of the BP cuff.
MONITOR_CHANNELS = (Channel.HEART_RATE, Channel.SPO2, Channel.RESP_RATE, Channel.TEMPERATURE)
CUFF_CHANNELS = (Channel.SYSTOLIC_BP, Channel.DIASTOLIC_BP)
#: simglucose patients the ward cycles through (children are not admitted to an adult ward).
WARD_COHORT = cohort_names("adult") + cohort_names("adolescent")


@dataclass(frozen=True, slots=True)
class WardPatient:
    """One patient of the ward and the ground truth behind their data (for validation)."""

    patient_id: str
    glucose_model: str
    """The simglucose virtual patient behind the glucose data."""
    deterioration_onset_ms: int | None
    """When a sepsis-like deterioration starts, or None if the patient stays well."""


@dataclass(slots=True)
class _Bed:
    """A patient's simulator and devices."""

    patient: WardPatient
    glucose: GlucosePatient
    cgm: VirtualDevice
    monitor: VirtualDevice
    cuff: VirtualDevice
    pump: VirtualDevice


class Ward:
    """`n_patients` simulated patients whose devices send signed packets as time advances.

    A fraction `deteriorating` of them (rounded) develop a sepsis-like deterioration starting
    within `onset_window_ms` after `start_ms`.
    """

    def __init__(self, n_patients: int, start_ms: int, seed: int, deteriorating: float = 0.0,
                 *, suite: str = "ed25519",
                 onset_window_ms: tuple[int, int] = DEFAULT_ONSET_WINDOW_MS) -> None:
        if n_patients < 1:
            raise ValueError("sim: n_patients must be at least 1")
        if not 0.0 <= deteriorating <= 1.0:
            raise ValueError("sim: deteriorating must be a fraction between 0 and 1")
        if start_ms % MINUTE_MS:
            raise ValueError("sim: start_ms must be a whole minute (multiple of 60000)")
        earliest, latest = onset_window_ms
        if not 0 <= earliest <= latest:
            raise ValueError("sim: onset_window_ms must be (earliest, latest) with 0 <= earliest"
                             " <= latest")
        setup_seq, vitals_seq = np.random.SeedSequence(seed).spawn(2)
        setup = np.random.default_rng(setup_seq)
        onsets = np.full(n_patients, np.inf)
        sick = setup.choice(n_patients, size=round(deteriorating * n_patients), replace=False)
        minutes = setup.integers(earliest // MINUTE_MS, latest // MINUTE_MS + 1, size=sick.size)
        onsets[sick] = start_ms + minutes * MINUTE_MS
        glucose_seeds = setup.integers(0, 2**31 - 1, size=n_patients)

        self._vitals_rng = np.random.default_rng(vitals_seq)
        self._vitals_params = VitalsParams.sample(n_patients, setup, onsets)
        self._vitals = vitals_init(self._vitals_params, start_ms, self._vitals_rng)
        self._beds: list[_Bed] = []
        for i in range(n_patients):
            patient_id, tag = f"pt-{i + 1:04d}", f"{i + 1:04d}"
            onset = int(onsets[i]) if np.isfinite(onsets[i]) else None
            name = WARD_COHORT[i % len(WARD_COHORT)]
            self._beds.append(_Bed(
                patient=WardPatient(patient_id, name, onset),
                glucose=GlucosePatient(name, start_ms, int(glucose_seeds[i])),
                cgm=VirtualDevice(f"cgm-{tag}", patient_id, suite),
                monitor=VirtualDevice(f"vit-{tag}", patient_id, suite),
                cuff=VirtualDevice(f"bp-{tag}", patient_id, suite),
                pump=VirtualDevice(f"pump-{tag}", patient_id, suite),
            ))
        self.start_ms = start_ms
        self._now_ms = start_ms
        self._true_bg: dict[str, float] = {}

    @property
    def now_ms(self) -> int:
        """Simulated time up to which packets have been produced (epoch ms)."""
        return self._now_ms

    @property
    def patients(self) -> list[WardPatient]:
        return [bed.patient for bed in self._beds]

    @property
    def devices(self) -> list[DeviceRegistration]:
        """Every device of the ward, for registration at the site."""
        return [device.registration for bed in self._beds
                for device in (bed.cgm, bed.monitor, bed.cuff, bed.pump)]

    def device(self, device_id: str) -> VirtualDevice:
        """The device called `device_id` (to forge or replay its packets in attack scenarios)."""
        for bed in self._beds:
            for device in (bed.cgm, bed.monitor, bed.cuff, bed.pump):
                if device.device_id == device_id:
                    return device
        raise KeyError(device_id)

    @property
    def true_bg(self) -> dict[str, float]:
        """Each patient's true blood glucose (mg/dL) at their latest CGM step; validation only."""
        return dict(self._true_bg)

    def advance(self, until_ms: int) -> list[dict[str, Any]]:
        """Every signed envelope due in (now, until_ms], in time order; time moves by minutes.

        Each packet holds a device's readings of one minute and is sent at their time.
        """
        envelopes: list[dict[str, Any]] = []
        while self._now_ms + MINUTE_MS <= until_ms:
            self._now_ms += MINUTE_MS
            now = self._now_ms
            self._vitals, signs = vitals_step(self._vitals_params, self._vitals,
                                              MINUTE_MS / 1000.0, self._vitals_rng)
            values = {ch: column.tolist() for ch, column in signs.by_channel().items()}
            cuff_due = (now - self.start_ms) // MINUTE_MS % BP_INTERVAL_MIN == 0
            for i, bed in enumerate(self._beds):
                glucose = bed.glucose
                while glucose.time_ms + glucose.sample_time_ms <= now:
                    step = glucose.step()
                    self._true_bg[bed.patient.patient_id] = step.true_bg
                    cgm = [r for r in step.readings if r.channel == Channel.GLUCOSE]
                    therapy = [r for r in step.readings if r.channel != Channel.GLUCOSE]
                    envelopes.append(bed.cgm.packet(cgm, step.time_ms))
                    if therapy:
                        envelopes.append(bed.pump.packet(therapy, step.time_ms))
                monitor = [Reading(ch, values[ch][i], now) for ch in MONITOR_CHANNELS]
                envelopes.append(bed.monitor.packet(monitor, now))
                if cuff_due:
                    cuff = [Reading(ch, values[ch][i], now) for ch in CUFF_CHANNELS]
                    envelopes.append(bed.cuff.packet(cuff, now))
        return envelopes
