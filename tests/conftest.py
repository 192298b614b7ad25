"""Shared fixtures: a site in a temporary directory with a controllable clock, a pipeline, a
registered patient and a device with a deterministic key pair that signs packets on demand."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import settings as hypothesis_settings

from medtwin.config import Settings
from medtwin.crypto import sign_packet
from medtwin.domain import Channel, Device, Reading, packet_wire
from medtwin.estimation import (
    GlucoseFilterState,
    GlucoseNoise,
    glucose_filter_init,
    glucose_filter_step,
    glucose_forecast,
    insulin_above_basal,
)
from medtwin.ingest import SignedSubmission
from medtwin.physiology import GlucoseParams, GlucoseState
from medtwin.pipeline import Pipeline

#: The interpreter's recursion limit before any test module is imported.
RECURSION_LIMIT = sys.getrecursionlimit()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Test modules importing eth_account (py_ecc) or py-evm raise the recursion limit to
    100,000 when collected; medtwin puts it back when it connects (`ledger._evm`), and so do
    the tests: with it raised, the hostile deeply nested JSON test overflows the C stack."""
    sys.setrecursionlimit(RECURSION_LIMIT)


# Property tests draw the same examples on every run, and keep no example database.
hypothesis_settings.register_profile("medtwin", derandomize=True, database=None, deadline=None)
hypothesis_settings.load_profile("medtwin")

#: 2026-01-01T00:00:00Z, the start of every test's site clock.
T0_MS = 1_767_225_600_000


class FakeClock:
    """A site clock that only moves when a test moves it (epoch milliseconds)."""

    def __init__(self, now_ms: int = T0_MS) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, seconds: float) -> int:
        self.now_ms += int(seconds * 1000)
        return self.now_ms


def key_pair(seed: str) -> tuple[bytes, bytes]:
    """A deterministic Ed25519 (private, public) raw key pair derived from `seed`."""
    private = hashlib.sha256(seed.encode()).digest()
    public = ed25519.Ed25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()
    return private, public


@dataclass
class DeviceSim:
    """A registered device that signs packets with its key, numbering them 0, 1, 2, …"""

    device_id: str
    patient_id: str
    private_key: bytes
    public_key: bytes
    clock: FakeClock
    next_seq: int = 0

    @property
    def device(self) -> Device:
        return Device(self.device_id, self.patient_id, "ed25519", self.public_key)

    def wire(self, readings: Sequence[Reading], seq: int | None = None,
             sent_at_ms: int | None = None) -> dict[str, Any]:
        """The packet as the device sends it; `seq` defaults to the next number."""
        if seq is None:
            seq, self.next_seq = self.next_seq, self.next_seq + 1
        sent = self.clock() if sent_at_ms is None else sent_at_ms
        return packet_wire(self.device_id, seq, sent, readings)

    def sign(self, wire: dict[str, Any], key: bytes | None = None) -> dict[str, Any]:
        """The signed envelope of `wire`, under the device's key unless `key` is given."""
        return sign_packet(wire, self.private_key if key is None else key)

    def envelope(self, readings: Sequence[Reading], seq: int | None = None,
                 sent_at_ms: int | None = None, key: bytes | None = None) -> dict[str, Any]:
        return self.sign(self.wire(readings, seq, sent_at_ms), key)

    def submit(self, readings: Sequence[Reading], **kwargs: Any) -> SignedSubmission:
        return SignedSubmission(self.envelope(readings, **kwargs))

    def vitals(self, *, hr: float = 72.0, rr: float = 16.0, spo2: float = 97.0,
               sbp: float = 120.0, temp: float = 37.0, time_ms: int | None = None
               ) -> list[Reading]:
        """A full set of NEWS2 vitals at `time_ms` (default: now); normal values score 0."""
        t = self.clock() if time_ms is None else time_ms
        return [Reading(Channel.HEART_RATE, hr, t), Reading(Channel.RESP_RATE, rr, t),
                Reading(Channel.SPO2, spo2, t), Reading(Channel.SYSTOLIC_BP, sbp, t),
                Reading(Channel.TEMPERATURE, temp, t)]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(tmp_path: Path, clock: FakeClock) -> Settings:
    """A site without twin snapshots, so leaf numbers in tests count records only (the
    snapshot tests turn them on)."""
    return Settings(data_dir=tmp_path / "site", clock=clock, snapshot_interval_s=0)


@pytest.fixture
def pipeline(settings: Settings) -> Iterator[Pipeline]:
    pipe = Pipeline.open(settings)
    yield pipe
    pipe.close()


@pytest.fixture
def patient_id(pipeline: Pipeline) -> str:
    pipeline.add_patient("pt-1")
    return "pt-1"


@pytest.fixture
def device_keys() -> tuple[bytes, bytes]:
    return key_pair("device vit-1")


@pytest.fixture
def make_device(clock: FakeClock) -> Callable[..., DeviceSim]:
    """A factory of unregistered devices: `make_device(device_id, patient_id, seed)`."""

    def make(device_id: str = "vit-1", patient_id: str = "pt-1",
             seed: str | None = None) -> DeviceSim:
        return DeviceSim(device_id, patient_id, *key_pair(seed or f"device {device_id}"),
                         clock=clock)

    return make


@pytest.fixture
def device(pipeline: Pipeline, patient_id: str, make_device: Callable[..., DeviceSim]
           ) -> DeviceSim:
    """Device "vit-1" of patient "pt-1", registered, with the key pair of `device_keys`."""
    sim = make_device("vit-1", patient_id)
    pipeline.add_device(sim.device)
    return sim


def simglucose_history(days: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """UVA/Padova adult#001 on its 3-min grid for `days` days (seed 1): CGM (mg/dL), carbs
    (g) and insulin (U, basal and bolus doses) reported per step, and the true BG."""
    from medtwin.sim import GlucosePatient

    start = int(datetime(2024, 3, 4, 0, 0, tzinfo=UTC).timestamp() * 1000)
    patient = GlucosePatient("adult#001", start, seed=1)
    steps = 480 * days
    cgm, carbs, insulin, bg = (np.zeros(steps) for _ in range(4))
    for k in range(steps):
        s = patient.step()
        bg[k] = s.true_bg
        for r in s.readings:
            if r.channel == Channel.GLUCOSE:
                cgm[k] = r.value
            elif r.channel == Channel.CARBS:
                carbs[k] += r.value
            elif r.channel == Channel.INSULIN:
                insulin[k] += r.value
    return cgm, carbs, insulin, bg


def score_glucose_twin(p: GlucoseParams, cgm: np.ndarray, carbs: np.ndarray,
                       delivered: np.ndarray, bg: np.ndarray,
                       dt: float) -> tuple[float, float, float, float]:
    """Run the glucose twin (one patient, params `p`) over a history; return the filter's
    RMSE vs true BG, the raw CGM's, the 30-min forecast's and persistence's."""
    noise = GlucoseNoise()
    extra = insulin_above_basal(delivered[np.newaxis], p, dt)[0]   # negative: below basal
    state = glucose_filter_init(p, 1)
    means, covs = [], []
    given_c, given_i = 0.0, 0.0     # inputs reported with a reading are given next step
    for k in range(cgm.size):
        state = glucose_filter_step(p, noise, state, np.array([dt]), np.array([given_c]),
                                    np.array([given_i]), cgm[[k]], np.array([True])).state
        given_c, given_i = carbs[k], extra[k]
        means.append(state.mean[0])
        covs.append(state.cov[0])
    burn, ahead = 20, 10
    est = np.array(means)[:, GlucoseState.G]
    rmse = float(np.sqrt(np.mean((est[burn:] - bg[burn:]) ** 2)))
    cgm_rmse = float(np.sqrt(np.mean((cgm[burn:] - bg[burn:]) ** 2)))
    ks = np.arange(burn, cgm.size - ahead)
    pk = GlucoseParams(*(np.repeat(f, ks.size) for f in p))
    fc, _, _ = glucose_forecast(pk, GlucoseFilterState(np.array(means)[ks], np.array(covs)[ks]),
                                (30.0,), carbs[ks], extra[ks])
    f_rmse = float(np.sqrt(np.mean((fc[:, 0] - bg[ks + ahead]) ** 2)))
    p_rmse = float(np.sqrt(np.mean((cgm[ks] - bg[ks + ahead]) ** 2)))
    return rmse, cgm_rmse, f_rmse, p_rmse
