"""`medtwin bench`: ingest latency with anchoring on and off, and what one anchor costs on
the embedded chain. Anchoring runs on its own thread; this measures that it stays there."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.table import Table

from medtwin.cli._bench import _signed_packets
from medtwin.config import DEFAULT_ANCHOR_INTERVAL_S, Settings
from medtwin.ingest import SignedSubmission
from medtwin.pipeline import Accepted, Anchorer, Pipeline

#: Packets sent one at a time per configuration (full run, `--quick`).
ANCHOR_BENCH_PACKETS = 2000
ANCHOR_BENCH_PACKETS_QUICK = 200
#: The anchor interval of the stress run: far shorter than the default, so an anchor is in
#: flight for much of the run (the full run also measures the default interval).
STRESS_ANCHOR_INTERVAL_S = 0.05


@dataclass(frozen=True, slots=True)
class IngestLatency:
    """Per-packet ingest latency (ms) of one configuration, and the anchors made meanwhile."""

    label: str
    p50_ms: float
    p99_ms: float
    anchors: int


def _ingest_latency(label: str, n_packets: int, interval_s: float
                    ) -> tuple[IngestLatency, list[float]]:
    start_ms = int(time.time() * 1000)
    devices, envelopes = _signed_packets(20, n_packets, start_ms)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), clock=lambda: start_ms + 60_000,
                            anchor_interval_s=interval_s)
        pipeline = Pipeline.open(settings)
        try:
            for d in devices:
                pipeline.add_patient(d.patient_id)
                pipeline.add_device(d)
            anchorer = Anchorer.open(pipeline)
            if anchorer is not None:
                anchorer.start()
            took = np.empty(n_packets)
            for k, envelope in enumerate(envelopes):
                t0 = time.perf_counter()
                [outcome] = pipeline.process([SignedSubmission(envelope)])
                took[k] = time.perf_counter() - t0
                if not isinstance(outcome, Accepted):
                    raise RuntimeError("bench: a benchmark packet was rejected")
            anchor_s: list[float] = []
            anchors = 0
            if anchorer is not None:
                anchorer.stop()
                anchors = anchorer.status().anchors
                anchor_s = _anchor_latencies(anchorer)
        finally:
            pipeline.close()
    p50, p99 = np.percentile(took * 1000, [50, 99])
    return IngestLatency(label, float(p50), float(p99), anchors), anchor_s


def _anchor_latencies(anchorer: Anchorer, n: int = 20) -> list[float]:
    """Seconds per anchor (one transaction and its receipt) on the anchorer's contract."""
    out = []
    size = anchorer.contract.latest_size()
    for k in range(1, n + 1):
        t0 = time.perf_counter()
        anchorer.contract.anchor(size + k, bytes([k]) * 32, bytes(32))
        out.append(time.perf_counter() - t0)
    return out


def anchoring_table(quick: bool) -> Table:
    """Ingest p50/p99 per packet (batch 1) with anchoring off and on (the default interval
    in a full run, and a stress interval), and the anchor's own latency on the embedded
    chain. The embedded chain runs Python in this process: its CPU competes with ingestion
    for the interpreter, which a JSON-RPC node (another process) does not."""
    n = ANCHOR_BENCH_PACKETS_QUICK if quick else ANCHOR_BENCH_PACKETS
    runs = [("anchoring off", 0.0)]
    if not quick:
        runs.append((f"anchoring every {DEFAULT_ANCHOR_INTERVAL_S:g} s (default)",
                     DEFAULT_ANCHOR_INTERVAL_S))
    runs.append((f"anchoring every {STRESS_ANCHOR_INTERVAL_S:g} s (stress)",
                 STRESS_ANCHOR_INTERVAL_S))
    rows, anchor_s = [], []
    for label, interval in runs:
        row, took = _ingest_latency(label, n, interval)
        rows.append(row)
        anchor_s += took
    table = Table(title=f"Ingest latency per packet with anchoring on and off, embedded chain "
                        f"({n} signed packets, one per batch)")
    for col in ("configuration", "p50 ms", "p99 ms", "p50 vs off", "p99 vs off",
                "anchors made"):
        table.add_column(col, justify="left" if col == "configuration" else "right")
    off = rows[0]
    for row in rows:
        table.add_row(row.label, f"{row.p50_ms:.2f}", f"{row.p99_ms:.2f}",
                      f"{row.p50_ms / off.p50_ms:.2f}x", f"{row.p99_ms / off.p99_ms:.2f}x",
                      str(row.anchors))
    if anchor_s:
        p50, p99 = np.percentile(np.array(anchor_s) * 1000, [50, 99])
        table.caption = (f"one anchor on the embedded chain (transaction + receipt): p50 "
                         f"{p50:.0f} ms, p99 {p99:.0f} ms over {len(anchor_s)} anchors")
    return table
