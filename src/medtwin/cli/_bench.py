"""`medtwin bench`: packets and readings per second through gate + twin + ledger + store,
UKF filter steps per second (NumPy, and torch where installed, against filterpy), the time
to personalize a patient-day, and the crypto suites side by side.

Every configuration runs in the same process on the same inputs, so the tables' ratios
compare like with like.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from medtwin.config import Settings
from medtwin.crypto import (
    AEAD_SUITES,
    KEM_SUITES,
    SESSION_KEM_SUITE,
    SIGNATURE_SUITES,
    kem_suite,
    sign_packet,
    signature_suite,
)
from medtwin.domain import Channel, Device, Reading, packet_wire
from medtwin.estimation import UKFParams, identify_glucose_params, ukf_predict, ukf_update
from medtwin.ingest import Admitted, Gate, SessionSubmission, SignedSubmission, Submission
from medtwin.physiology import (
    default_glucose_params,
    glucose_dynamics,
    glucose_observation,
    steady_state,
)
from medtwin.pipeline import Accepted, Pipeline
from medtwin.sim import SessionDevice

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


def torch_device() -> Any | None:
    """The torch device the UKF benchmark uses (CUDA where there is one, else the CPU), or
    None where torch is not installed (it is optional: `pip install medtwin[gpu]`)."""
    try:
        import torch
    except ImportError:
        return None
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def bench_ukf(n_patients: int, steps: int, device: Any | None = None) -> float:
    """Seconds per predict + update of medtwin's batched UKF over `n_patients` at once: NumPy,
    or the same code on torch tensors on `device` (a torch device; synchronized around the
    timing on CUDA; one thread on a CPU). One untimed step first (allocator and kernel
    warm-up)."""
    params = UKFParams()
    arrays: list[Any] = [
        np.zeros((n_patients, 3)), np.broadcast_to(np.eye(3), (n_patients, 3, 3)).copy(),
        np.broadcast_to(0.01 * np.eye(3), (n_patients, 3, 3)).copy(),
        np.full((n_patients, 1, 1), 0.1), np.zeros((n_patients, 1)),
        np.ones((n_patients, 1), dtype=bool), _UKF_TRANSITION.T]
    sync: Callable[[], None] = lambda: None  # noqa: E731
    threads = None
    if device is not None:
        import torch

        arrays = [torch.as_tensor(a, device=device) for a in arrays]
        if device.type == "cuda":
            sync = torch.cuda.synchronize
        else:  # one thread, like NumPy's: torch's spinning OpenMP threads collapse when the
            threads = torch.get_num_threads()  # cores are shared (25x slower at load 5/2)
            torch.set_num_threads(1)
    try:
        return _time_ukf(params, arrays, steps, sync)
    finally:
        if threads is not None:
            torch.set_num_threads(threads)


def _time_ukf(params: UKFParams, arrays: list[Any], steps: int,
              sync: Callable[[], None]) -> float:
    mean, cov, process, noise, measured, observed, transition_t = arrays

    def step(mean: Any, cov: Any) -> tuple[Any, Any]:
        mean, cov = ukf_predict(params, mean, cov, lambda x: x @ transition_t, process)
        out = ukf_update(params, mean, cov, lambda x: x[..., :1], measured, noise, observed)
        return out.mean, out.cov

    step(mean, cov)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        mean, cov = step(mean, cov)
    sync()
    return (time.perf_counter() - t0) / steps


#: The synthetic day `bench_personalize` identifies from: 5-min steps, three meals (g) with
#: a bolus of 1 U per 10 g, CGM noise (mg/dL).
_DAY_STEPS, _DAY_STEP_MIN, _MEALS_AT_H, _CGM_NOISE = 288, 5.0, (7, 12, 19), 5.0


def bench_personalize(n_patients: int) -> float:
    """Seconds to identify the parameters of `n_patients` from one day of CGM, meals and
    boluses each (`identify_glucose_params`, one batch), simulated from default parameters."""
    rng = np.random.default_rng(0)
    carbs = np.zeros((n_patients, _DAY_STEPS))
    insulin = np.zeros((n_patients, _DAY_STEPS))
    for hour in _MEALS_AT_H:
        k = int(hour * 60 / _DAY_STEP_MIN)
        carbs[:, k] = rng.uniform(30.0, 80.0, n_patients)
        insulin[:, k] = carbs[:, k] / 10.0
    truth = default_glucose_params(n_patients)
    x = steady_state(truth)
    cgm = np.empty((n_patients, _DAY_STEPS))
    for k in range(_DAY_STEPS):
        x = glucose_dynamics(x, np.stack([carbs[:, k], insulin[:, k]], axis=-1), truth,
                             _DAY_STEP_MIN)
        cgm[:, k] = glucose_observation(x, truth) + rng.normal(0.0, _CGM_NOISE, n_patients)
    t0 = time.perf_counter()
    identify_glucose_params(_DAY_STEP_MIN, cgm, carbs, insulin)
    return time.perf_counter() - t0


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


#: Bytes the signature suites sign in `bench_signature_suites`: about one packet's canonical
#: JSON. Seconds each operation is timed for, per suite (full run, `--quick`).
CRYPTO_MESSAGE_SIZE, CRYPTO_SECONDS, CRYPTO_SECONDS_QUICK = 256, 1.0, 0.05


@dataclass(frozen=True, slots=True)
class SuiteRates:
    """Operations per second of one suite: the sender's (sign, encapsulate) and the
    receiver's (verify, decapsulate)."""

    suite: str
    sender_per_s: float
    receiver_per_s: float


def _ops_per_s(op: Callable[[], object], seconds: float) -> float:
    """How many times per second `op` runs, over at least `seconds` (one untimed call first)."""
    op()
    n, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        op()
        n += 1
    return n / elapsed


def _signature_rates(name: str, message: bytes, seconds: float) -> SuiteRates:
    suite = signature_suite(name)
    private, public = suite.generate()
    signature = suite.sign(private, message)
    return SuiteRates(name, _ops_per_s(lambda: suite.sign(private, message), seconds),
                      _ops_per_s(lambda: suite.verify(public, message, signature), seconds))


def bench_signature_suites(seconds: float) -> list[SuiteRates]:
    """Sign/s and verify/s of every signature suite on one random 256-byte message, through
    the suites' raw-bytes API (key parsing included, as medtwin calls it)."""
    message = np.random.default_rng(0).bytes(CRYPTO_MESSAGE_SIZE)
    return [_signature_rates(name, message, seconds) for name in SIGNATURE_SUITES]


def _kem_rates(name: str, seconds: float) -> SuiteRates:
    suite = kem_suite(name)
    private, public = suite.generate()
    _, ciphertext = suite.encapsulate(public)
    return SuiteRates(name, _ops_per_s(lambda: suite.encapsulate(public), seconds),
                      _ops_per_s(lambda: suite.decapsulate(private, ciphertext), seconds))


def bench_kem_suites(seconds: float) -> list[SuiteRates]:
    """Encapsulate/s and decapsulate/s of every KEM suite, through the raw-bytes API."""
    return [_kem_rates(name, seconds) for name in KEM_SUITES]


def _ratio(value: float, base: float) -> str:
    ratio = value / base
    return f"{ratio:.{2 if ratio < 1 else 1}f}×"


def _suite_table(title: str, ops: tuple[str, str], rows: list[SuiteRates]) -> Table:
    """One table of `rows`, each operation's rate with its ratio to the first row's."""
    table = Table(title=title)
    sender, receiver = ops
    for col in ("suite", f"{sender}/s", f"{sender} vs {rows[0].suite}", f"{receiver}/s",
                f"{receiver} vs {rows[0].suite}"):
        table.add_column(col, justify="right")
    base = rows[0]
    for r in rows:
        table.add_row(r.suite, f"{r.sender_per_s:,.0f}",
                      _ratio(r.sender_per_s, base.sender_per_s),
                      f"{r.receiver_per_s:,.0f}",
                      _ratio(r.receiver_per_s, base.receiver_per_s))
    return table


def crypto_suite_tables(quick: bool) -> tuple[Table, Table]:
    """The crypto suites side by side: signatures against Ed25519, KEMs against X25519."""
    seconds = CRYPTO_SECONDS_QUICK if quick else CRYPTO_SECONDS
    signatures = _suite_table(
        f"signature suites on a {CRYPTO_MESSAGE_SIZE}-byte message (raw-bytes API, key "
        "parsing included; one core)", ("sign", "verify"), bench_signature_suites(seconds))
    kems = _suite_table("KEM suites (raw-bytes API, key parsing included; one core)",
                        ("encapsulate", "decapsulate"), bench_kem_suites(seconds))
    return signatures, kems


#: Packets checked per configuration by `bench_packet_cpu` (full run, `--quick`), in gate
#: batches of `PACKET_CPU_BATCH`, from `PACKET_CPU_DEVICES` devices sending in turn.
PACKET_CPU_PACKETS, PACKET_CPU_PACKETS_QUICK = 3000, 300
PACKET_CPU_BATCH, PACKET_CPU_DEVICES = 64, 50


@dataclass(frozen=True, slots=True)
class PacketCpu:
    """Gate CPU per packet of one kind: signed with a suite, or sealed in a session."""

    kind: str
    us_per_packet: float

    @property
    def packets_per_s(self) -> float:
        return 1e6 / self.us_per_packet


def _bench_readings(t: int, k: int) -> list[Reading]:
    return [Reading(Channel.HEART_RATE, 70.0 + k % 7, t), Reading(Channel.SPO2, 97.0, t),
            Reading(Channel.RESP_RATE, 14.0, t), Reading(Channel.TEMPERATURE, 36.8, t)]


def _time_gate(gate: Gate, subs: list[Submission], devices: dict[str, Device],
               now: int) -> float:
    """Seconds per packet of `gate.check` over `subs` in batches; every packet must pass."""
    patients: dict[str, object] = {d.patient_id: object() for d in devices.values()}
    t0 = time.perf_counter()
    for i in range(0, len(subs), PACKET_CPU_BATCH):
        verdicts = gate.check(subs[i:i + PACKET_CPU_BATCH], now, devices, patients)
        if not all(isinstance(v, Admitted) for v in verdicts):
            raise RuntimeError("bench: a benchmark packet was refused by the gate")
    return (time.perf_counter() - t0) / len(subs)


def _session_fleet(gate: Gate, aead: str, now: int
                   ) -> tuple[list[SessionDevice], dict[str, Device], float]:
    """Devices with an open session each, and the gate's seconds per handshake."""
    fleet = [SessionDevice(f"ecg-{i:05d}", f"pt-{i:05d}", aead=aead)
             for i in range(PACKET_CPU_DEVICES)]
    devices = {d.device_id: Device(d.device_id, d.patient_id, d.suite, d.public_key)
               for d in fleet}
    handshakes = [d.handshake(gate.session_public_key, now) for d in fleet]
    t0 = time.perf_counter()
    for envelope in handshakes:
        gate.open_session(envelope, now, devices)
    return fleet, devices, (time.perf_counter() - t0) / len(fleet)


def bench_packet_cpu(n_packets: int) -> tuple[list[PacketCpu], float]:
    """Gate CPU per packet (shape, authentication, replay, clock and reading checks; no
    store), signed with each signature suite and sealed in a session with each AEAD suite,
    over the same readings; and the gate's seconds per session handshake."""
    now = int(time.time() * 1000)
    settings = Settings(data_dir=Path(tempfile.gettempdir()), clock=lambda: now)
    rows = []
    for suite_name in SIGNATURE_SUITES:
        suite = signature_suite(suite_name)
        keys = [suite.generate() for _ in range(PACKET_CPU_DEVICES)]
        devices = {f"vit-{i:05d}": Device(f"vit-{i:05d}", f"pt-{i:05d}", suite_name, pub)
                   for i, (_, pub) in enumerate(keys)}
        subs: list[Submission] = [SignedSubmission(sign_packet(packet_wire(
            f"vit-{k % PACKET_CPU_DEVICES:05d}", k // PACKET_CPU_DEVICES, now,
            _bench_readings(now, k)), keys[k % PACKET_CPU_DEVICES][0], suite_name))
            for k in range(n_packets)]
        rows.append(PacketCpu(f"signed, {suite_name}",
                              1e6 * _time_gate(Gate(settings), subs, devices, now)))
    handshake_s = 0.0
    for aead in AEAD_SUITES:
        gate = Gate(settings, sessions=True)
        fleet, devices, handshake_s = _session_fleet(gate, aead, now)
        subs = [SessionSubmission(fleet[k % len(fleet)].frame(_bench_readings(now, k), now))
                for k in range(n_packets)]
        rows.append(PacketCpu(f"session, {aead}", 1e6 * _time_gate(gate, subs, devices, now)))
    return rows, handshake_s


def packet_cpu_table(quick: bool) -> Table:
    """CPU per packet through the gate: signed (each suite) against session (each AEAD)."""
    n = PACKET_CPU_PACKETS_QUICK if quick else PACKET_CPU_PACKETS
    rows, handshake_s = bench_packet_cpu(n)
    table = Table(title=f"CPU per packet: signed (each suite) vs session (AEAD); gate checks "
                        f"of {n} packets × {READINGS_PER_PACKET} readings in batches of "
                        f"{PACKET_CPU_BATCH}, one core. A session handshake (ed25519 + "
                        f"{SESSION_KEM_SUITE}) costs the gate {handshake_s * 1e6:,.0f} µs")
    for col in ("packet", "µs/packet", "packets/s", "vs signed, ed25519"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r.kind, f"{r.us_per_packet:,.1f}", f"{r.packets_per_s:,.0f}",
                      _ratio(r.packets_per_s, rows[0].packets_per_s))
    return table
