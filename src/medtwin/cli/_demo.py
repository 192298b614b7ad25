"""`medtwin demo`: a ward of virtual patients streaming signed packets over HTTP to a live site.

The site and the ward share an accelerated clock, so hours of physiology pass in minutes while
the gate's clock checks still hold. A misbehaving device replays and forges a few packets, so
rejections are part of the show.
"""

from __future__ import annotations

import base64
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from medtwin.access import Role, new_token
from medtwin.cli._server import BackgroundServer
from medtwin.clinical import RULES
from medtwin.config import Settings
from medtwin.domain import Channel, Reading
from medtwin.pipeline import Pipeline
from medtwin.sim import Ward, forged_envelope, replayed_envelope

#: Simulated time between ward steps sent to the site.
STEP_SIM_MS = 60_000
#: Clock skew the gate allows, in wall seconds: simulated time runs `speed` times faster, so
#: the limit in simulated seconds scales with it.
SKEW_WALL_S = 30.0
#: Devices sending at the same time (the site gathers their packets into one transaction).
SENDERS = 16
#: Wall seconds between two deliberately bad packets from the misbehaving device.
ATTACK_EVERY_S = 10.0
#: Share of the ward that deteriorates, and when (simulated ms after the start), so that
#: NEWS2 alerts appear within the first simulated hour.
DETERIORATING = 0.25
ONSET_WINDOW_MS = (2 * 60_000, 20 * 60_000)

_RISK_STYLE = {"low": "green", "low-medium": "yellow", "medium": "dark_orange", "high": "bold red"}


class AcceleratedClock:
    """Epoch milliseconds that run `speed` times faster than the wall clock from `start_ms`."""

    def __init__(self, start_ms: int, speed: float) -> None:
        self.start_ms = start_ms
        self.speed = speed
        self._wall0 = time.monotonic()

    def __call__(self) -> int:
        return self.start_ms + int((time.monotonic() - self._wall0) * 1000 * self.speed)


@dataclass
class DemoResult:
    url: str
    data_dir: Path
    sent: int
    accepted_packets: int
    rejected_packets: int
    counts: dict[str, int]
    verified_records: int


def run_demo(data_dir: Path, patients: int, speed: float, duration_s: float, headless: bool,
             seed: int, console: Console) -> DemoResult:
    """Run the demo until `duration_s` wall seconds pass (or Ctrl-C); then verify the log."""
    wall_ms = int(time.time() * 1000)
    start_ms = wall_ms - wall_ms % STEP_SIM_MS
    clock = AcceleratedClock(start_ms, speed)
    settings = Settings(data_dir=data_dir, clock=clock,
                        max_clock_skew_s=SKEW_WALL_S * speed)
    pipeline = Pipeline.open(settings)
    admin, admin_hash = new_token()
    clinician, clinician_hash = new_token()
    pipeline.store.add_token(admin_hash, "demo-admin", Role.ADMIN.value, start_ms)
    pipeline.store.add_token(clinician_hash, "demo-clinician", Role.CLINICIAN.value, start_ms)
    server = BackgroundServer(pipeline).start()
    console.print(f"[bold]medtwin[/] site at [link]{server.url}[/]  (API docs: {server.url}/docs)")
    console.print(f"data directory: {data_dir}  ·  clinician token: {clinician}")
    with console.status("building the virtual ward (UVA/Padova patients)…"):
        ward = Ward(patients, start_ms, seed=seed, deteriorating=DETERIORATING,
                    onset_window_ms=ONSET_WINDOW_MS)
    stats = {"sent": 0, "accepted": 0, "rejected": 0}
    stop = threading.Event()
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        auth = {"Authorization": f"Bearer {admin}"}
        for p in ward.patients:
            http.post("/v1/patients", json={"patient_id": p.patient_id}, headers=auth)
        for reg in ward.devices:
            http.post("/v1/devices", headers=auth, json={
                "device_id": reg.device_id, "patient_id": reg.patient_id, "suite": reg.suite,
                "public_key": base64.b64encode(reg.public_key).decode()})
        streamer = threading.Thread(target=_stream, args=(ward, clock, server.url, stats, stop),
                                    name="medtwin-ward", daemon=True)
        streamer.start()
        deadline = time.monotonic() + duration_s if duration_s > 0 else float("inf")
        view = _ward_view(http, clinician, clock, stats)
        try:
            if headless:
                while time.monotonic() < deadline and streamer.is_alive():
                    time.sleep(min(5.0, max(deadline - time.monotonic(), 0.01)))
                    console.print(_headline(stats, clock))
            else:
                with Live(view(), console=console, refresh_per_second=2) as live:
                    while time.monotonic() < deadline and streamer.is_alive():
                        time.sleep(0.5)
                        live.update(view())
        except KeyboardInterrupt:
            console.print("stopping…")
        stop.set()
        streamer.join(timeout=30)
    server.stop()
    counts = pipeline.store.counts()
    report = pipeline.verify()
    pipeline.close()
    return DemoResult(server.url, data_dir, stats["sent"], stats["accepted"], stats["rejected"],
                      counts, report.records)


def _stream(ward: Ward, clock: AcceleratedClock, url: str, stats: dict[str, int],
            stop: threading.Event) -> None:
    """Send every packet the ward has due, step by step, over HTTP, as its devices would.

    Devices send concurrently (so the site batches their packets), each in its own order.
    """
    last_attack = time.monotonic()
    sent_before: list[dict[str, Any]] = []
    lock = threading.Lock()
    with httpx.Client(base_url=url, timeout=30.0,
                      limits=httpx.Limits(max_connections=SENDERS)) as http, \
            ThreadPoolExecutor(SENDERS, thread_name_prefix="medtwin-device") as pool:

        def send(envelopes: list[dict[str, Any]]) -> None:
            for envelope in envelopes:
                reply = http.post("/v1/packets", json=envelope)
                with lock:
                    stats["sent"] += 1
                    stats["accepted" if reply.status_code == 200 else "rejected"] += 1

        while not stop.is_set():
            now = clock()
            envelopes = ward.advance(now - now % STEP_SIM_MS)
            if time.monotonic() - last_attack > ATTACK_EVERY_S and sent_before:
                last_attack = time.monotonic()
                envelopes.append(replayed_envelope(sent_before[-1]))
                device = ward.device(sent_before[-1]["packet"]["device_id"])
                envelopes.append(forged_envelope(
                    device, [Reading(Channel.HEART_RATE, 72.0, now - now % STEP_SIM_MS)],
                    now - now % STEP_SIM_MS))
            by_device: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for envelope in envelopes:
                by_device[envelope["packet"]["device_id"]].append(envelope)
            for _ in pool.map(send, by_device.values()):
                pass
            if envelopes:
                sent_before = envelopes[-3:]
            stop.wait(0.2)


def _headline(stats: dict[str, int], clock: AcceleratedClock) -> str:
    sim_h = (clock() - clock.start_ms) / 3_600_000
    return (f"simulated {sim_h:5.2f} h · packets sent {stats['sent']} · accepted "
            f"{stats['accepted']} · rejected {stats['rejected']}")


def _ward_view(http: httpx.Client, token: str, clock: AcceleratedClock,
               stats: dict[str, int]) -> Callable[[], Group]:
    """A function that fetches the ward and its latest alerts from the API and renders them."""
    headers = {"Authorization": f"Bearer {token}"}

    def view() -> Group:
        table = Table(title=_headline(stats, clock), expand=True)
        for name in ("patient", "glucose mg/dL → 30 min", "HR /min", "SpO2 %", "RR /min", "BP mmHg",
                     "temp °C", "NEWS2", "alerts"):
            table.add_column(name, justify="right" if name != "alerts" else "left")
        try:
            states = http.get("/v1/patients", headers=headers).json()
            alerts = http.get("/v1/alerts", params={"limit": 5}, headers=headers).json()
        except httpx.HTTPError:
            return Group(table)
        for s in states:
            ch = s["channels"]

            def v(code: str, fmt: str = "{:.0f}", ch: dict[str, Any] = ch) -> str:
                item = ch.get(code)
                return "–" if item is None or item["value"] is None else fmt.format(item["value"])

            news = s["news2"]
            ahead = next((f["mean"] for f in s["forecasts"] if f["code"] == "99504-3"
                          and f["horizon_min"] == 30 and f["mean"] is not None), None)
            glucose = v("99504-3") + ("" if ahead is None else f" → {ahead:.0f}")
            table.add_row(
                s["patient_id"], glucose, v("8867-4"), v("59408-5"), v("9279-1"),
                f"{v('8480-6')}/{v('8462-4')}", v("8310-5", "{:.1f}"),
                f"[{_RISK_STYLE[news['risk']]}]{news['total']}[/]",
                ", ".join(_most_severe(s["active_alerts"])))
        latest = Table.grid(padding=(0, 1))
        for a in alerts:
            latest.add_row(f"[{_RISK_STYLE.get(a['severity'], 'white')}]{a['severity']}[/]",
                           a["patient_id"], a["summary"])
        return Group(table, "[bold]latest alerts[/]", latest)

    return view


def _most_severe(active: list[str]) -> list[str]:
    """Active rules without those outranked by a more severe rule of their family."""
    by_family = {rule.name: rule.family for rule in RULES}
    order = [rule.name for rule in RULES]
    top: dict[str, str] = {}
    for name in sorted(active, key=order.index):
        top[by_family[name]] = name
    return list(top.values())
