"""`medtwin bench`: packets and readings per second through gate + twin + ledger + store.

Every configuration runs in the same process on the same pre-signed packets, so the table's
ratios compare like with like.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medtwin.config import Settings
from medtwin.crypto import sign_packet, signature_suite
from medtwin.domain import Channel, Device, Reading, packet_wire
from medtwin.estimation import UKFParams, ukf_predict, ukf_update
from medtwin.ingest import SignedSubmission
from medtwin.pipeline import Accepted, Pipeline

READINGS_PER_PACKET = 4


@dataclass(frozen=True, slots=True)
class BenchRow:
    batch: int
    packets: int
    seconds: float

    @property
    def packets_per_s(self) -> float:
        return self.packets / self.seconds

    @property
    def readings_per_s(self) -> float:
        return self.packets_per_s * READINGS_PER_PACKET


def _signed_packets(n_patients: int, n_packets: int, start_ms: int
                    ) -> tuple[list[Device], list[dict[str, Any]]]:
    keys = [signature_suite("ed25519").generate() for _ in range(n_patients)]
    devices = [Device(f"vit-{i:05d}", f"pt-{i:05d}", "ed25519", pub)
               for i, (_, pub) in enumerate(keys)]
    envelopes = []
    for k in range(n_packets):
        i = k % n_patients
        t = start_ms + (k // n_patients) * 1000
        readings = [Reading(Channel.HEART_RATE, 70.0 + k % 7, t),
                    Reading(Channel.SPO2, 97.0, t), Reading(Channel.RESP_RATE, 14.0, t),
                    Reading(Channel.TEMPERATURE, 36.8, t)]
        envelopes.append(sign_packet(packet_wire(devices[i].device_id, k // n_patients, t,
                                                 readings), keys[i][0]))
    return devices, envelopes


def bench_ingest(batches: tuple[int, ...], n_packets: int, n_patients: int) -> list[BenchRow]:
    """Time the pipeline over the same signed packets at several batch sizes."""
    start_ms = int(time.time() * 1000)
    devices, envelopes = _signed_packets(n_patients, n_packets, start_ms)
    rows = []
    for batch in batches:
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(data_dir=Path(tmp), clock=lambda: start_ms + 60_000)
            pipeline = Pipeline.open(settings)
            for d in devices:
                pipeline.add_patient(d.patient_id)
                pipeline.add_device(d)
            subs = [SignedSubmission(e) for e in envelopes]
            t0 = time.perf_counter()
            for i in range(0, len(subs), batch):
                outcomes = pipeline.process(subs[i:i + batch])
                if not all(isinstance(o, Accepted) for o in outcomes):
                    raise RuntimeError("bench: a benchmark packet was rejected")
            rows.append(BenchRow(batch, len(subs), time.perf_counter() - t0))
            pipeline.close()
    return rows


def bench_buffered_upload(n_readings: int) -> float:
    """Seconds to process one signed packet of `n_readings` CGM readings of one patient (a
    device uploading a day it buffered): the twin and the rules fold it event by event."""
    now = int(time.time() * 1000)
    private, public = signature_suite("ed25519").generate()
    device = Device("cgm-00001", "pt-00001", "ed25519", public)
    readings = [Reading(Channel.GLUCOSE, 120.0 + 60.0 * math.sin(i / 40.0),
                        now - (n_readings - i) * 15_000) for i in range(n_readings)]
    envelope = sign_packet(packet_wire(device.device_id, 0, now, readings), private)
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = Pipeline.open(Settings(data_dir=Path(tmp), clock=lambda: now))
        pipeline.add_patient(device.patient_id)
        pipeline.add_device(device)
        t0 = time.perf_counter()
        (outcome,) = pipeline.process([SignedSubmission(envelope)])
        elapsed = time.perf_counter() - t0
        pipeline.close()
    if not isinstance(outcome, Accepted):
        raise RuntimeError("bench: the buffered upload was rejected")
    return elapsed


#: The 3-state linear model both UKF benchmarks filter (a constant-acceleration-like chain).
_UKF_TRANSITION = np.array([[1.0, 0.1, 0.0], [0.0, 1.0, 0.1], [0.0, 0.0, 0.9]])


def bench_ukf(n_patients: int, steps: int) -> float:
    """Seconds per predict + update of medtwin's batched UKF over `n_patients` at once."""
    params = UKFParams()
    mean = np.zeros((n_patients, 3))
    cov = np.broadcast_to(np.eye(3), (n_patients, 3, 3)).copy()
    process = np.broadcast_to(0.01 * np.eye(3), (n_patients, 3, 3)).copy()
    noise = np.full((n_patients, 1, 1), 0.1)
    measured = np.zeros((n_patients, 1))
    observed = np.ones((n_patients, 1), dtype=bool)
    t0 = time.perf_counter()
    for _ in range(steps):
        mean, cov = ukf_predict(params, mean, cov, lambda x: x @ _UKF_TRANSITION.T, process)
        out = ukf_update(params, mean, cov, lambda x: x[..., :1], measured, noise, observed)
        mean, cov = out.mean, out.cov
    return (time.perf_counter() - t0) / steps


def bench_filterpy(steps: int) -> float | None:
    """Seconds per predict + update of filterpy's UnscentedKalmanFilter on the same model
    (one patient), or None where filterpy is not installed."""
    try:
        from filterpy.kalman import MerweScaledSigmaPoints, UnscentedKalmanFilter
    except ImportError:
        return None
    points = MerweScaledSigmaPoints(3, alpha=1.0, beta=2.0, kappa=0.0)
    ukf = UnscentedKalmanFilter(3, 1, 1.0, hx=lambda x: x[:1],
                                fx=lambda x, _dt: _UKF_TRANSITION @ x, points=points)
    ukf.Q = 0.01 * np.eye(3)
    ukf.R = 0.1 * np.eye(1)
    t0 = time.perf_counter()
    for _ in range(steps):
        ukf.predict()
        ukf.update(np.zeros(1))
    return (time.perf_counter() - t0) / steps
