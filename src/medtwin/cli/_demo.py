"""`medtwin demo`: a ward of virtual patients streaming signed packets over HTTP to a live site.

The site and the ward share an accelerated clock, so hours of physiology pass in minutes while
the gate's clock checks still hold. A misbehaving device replays and forges a few packets, so
rejections are part of the show; attacks chosen from the library (`--attack`) hit one
patient's CGM each, and the ward view shows the guard's findings and quarantined devices.
"""

from __future__ import annotations

import base64
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from medtwin.access import Role, new_token
from medtwin.cli._server import BackgroundServer, open_chain_services
from medtwin.clinical import RULES
from medtwin.config import Settings
from medtwin.domain import Channel, Reading
from medtwin.pipeline import Pipeline
from medtwin.sim import (
    ATTACK_DATA_KINDS,
    ATTACK_KINDS,
    Attack,
    VirtualDevice,
    Ward,
    apply_attack,
    attack_of,
    compromised_key_envelopes,
    flood_envelopes,
    forged_envelope,
    replayed_envelope,
    resigned_envelope,
    rogue_device,
    rogue_envelopes,
)

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

#: Simulated time after the start when the attacks chosen with --attack begin, so that the
#: twins have settled on genuine data first.
ATTACK_START_SIM_MS = 20 * 60_000
#: A flood is one burst of this much simulated time, not a lasting load on the site.
FLOOD_SIM_MS = 2 * 60_000
#: The channel the chosen attacks hit: the CGM's (one reading per packet).
ATTACK_CHANNEL = Channel.GLUCOSE
#: Newest guard findings the ward view shows.
FINDINGS_SHOWN = 6

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
    attacks: tuple[str, ...] = ()
    attack_packets: int = 0


def parse_attacks(text: str) -> tuple[str, ...]:
    """The attack kinds of a comma-separated list (e.g. "bias,flood"), in order; ValueError
    naming the kinds there are for an unknown or empty one."""
    kinds = tuple(k.strip() for k in text.split(","))
    unknown = [k for k in kinds if k not in ATTACK_KINDS]
    if unknown:
        raise ValueError(f"unknown attack {', '.join(repr(k) for k in unknown)}; choose from "
                         f"{', '.join(ATTACK_KINDS)} (comma-separated)")
    return kinds


@dataclass
class _Target:
    """One chosen attack on one patient's CGM, with what it has seen of the stream so far."""

    attack: Attack
    patient_id: str
    seed: int
    device: VirtualDevice | None = None
    times: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    rogue: VirtualDevice | None = None
    flooded: bool = False


class LiveAttacks:
    """The attacks chosen with --attack, applied to the ward's envelopes as they are sent.

    Attack k hits patient k of the ward (cycling) on `ATTACK_CHANNEL` from `start_ms`. A data
    attack rewrites the CGM's packets, signed with its own key (a device whose firmware lies);
    it runs on the stream's whole history, so freeze, replay and spike see what came before.
    A device attack adds packets: one flood burst, a rogue device's, or ones signed with the
    CGM's stolen key. Sizes are `medtwin.sim.ATTACK_DEFAULT_SIZE`.
    """

    def __init__(self, ward: Ward, kinds: Sequence[str], start_ms: int, seed: int) -> None:
        patients = ward.patients
        settle = start_ms - ward.start_ms
        self._ward = ward
        self._patient_of = {d.device_id: d.patient_id for d in ward.devices}
        self._targets = [
            _Target(attack_of(kind, ATTACK_CHANNEL, start_ms,
                              duration_ms=settle // 2 if kind == "replay" else None),
                    patients[k % len(patients)].patient_id, seed + k)
            for k, kind in enumerate(kinds)]

    def __call__(self, envelopes: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
        """The envelopes to send instead of `envelopes`, and how many attack packets that
        makes (added, rewritten or withheld)."""
        out: list[dict[str, Any]] = []
        added = 0
        new: dict[int, list[int]] = defaultdict(list)  # target -> its new history positions
        for envelope in envelopes:
            packet = envelope["packet"]
            for k, target in enumerate(self._targets):
                if self._patient_of.get(packet["device_id"]) != target.patient_id or not any(
                        r["code"] == ATTACK_CHANNEL.code for r in packet["readings"]):
                    continue
                target.device = self._ward.device(packet["device_id"])
                for r in packet["readings"]:
                    if r["code"] == ATTACK_CHANNEL.code:
                        new[k].append(len(target.times))
                        target.times.append(int(r["time"]))
                        target.values.append(float(r["value"]))
                if target.attack.kind in ATTACK_DATA_KINDS:
                    rewritten = _data_attack(target, envelope)
                    added += rewritten is not envelope
                    if rewritten is None:
                        break
                    envelope, packet = rewritten, rewritten["packet"]
            else:
                out.append(envelope)
        for k, target in enumerate(self._targets):
            extra = _device_attack(target, new[k])
            out.extend(extra)
            added += len(extra)
        return out, added


def _data_attack(target: _Target, envelope: dict[str, Any]) -> dict[str, Any] | None:
    """`envelope` after the target's data attack: itself if untouched, None if emptied."""
    attack, device = target.attack, target.device
    packet = envelope["packet"]
    if device is None or target.times[-1] < attack.start_ms:
        return envelope
    try:
        result = apply_attack(attack, target.times, target.values,
                              rng=np.random.default_rng(target.seed))
    except ValueError:  # the window does not fit the stream yet (or any more): leave it be
        return envelope
    mine = [r for r in packet["readings"] if r["code"] == ATTACK_CHANNEL.code]
    first = len(target.times) - len(mine)
    if not result.affected[first:].any():
        return envelope
    if attack.kind == "dropout":
        keep = ~result.affected[first:]
        attacked = [Reading(ATTACK_CHANNEL, float(r["value"]), int(r["time"]))
                    for r, kept in zip(mine, keep.tolist(), strict=True) if kept]
    else:
        attacked = [Reading(ATTACK_CHANNEL, float(v), int(t)) for t, v in zip(
            result.time_ms[first:].tolist(), result.value[first:].tolist(), strict=True)]
    others = [Reading(Channel.from_code(r["code"]), float(r["value"]), int(r["time"]))
              for r in packet["readings"] if r["code"] != ATTACK_CHANNEL.code]
    readings = others + attacked
    return resigned_envelope(device, envelope, readings) if readings else None


def _device_attack(target: _Target, new: list[int]) -> list[dict[str, Any]]:
    """The packets the target's device attack sends on the stream's new readings `new`."""
    attack, device = target.attack, target.device
    due = [i for i in new if target.times[i] >= attack.start_ms]
    if attack.kind in ATTACK_DATA_KINDS or device is None or not due:
        return []
    times = np.asarray([target.times[i] for i in due], dtype=np.int64)
    fake = np.asarray([target.values[i] for i in due]) + attack.size
    if attack.kind == "flood":
        if target.flooded:
            return []
        target.flooded = True
        return list(flood_envelopes(device, ATTACK_CHANNEL, target.values[due[0]],
                                    start_ms=int(times[0]), duration_ms=FLOOD_SIM_MS,
                                    rate_per_s=attack.size))
    if attack.kind == "rogue-device":
        target.rogue = target.rogue or rogue_device(target.patient_id, suite=device.suite)
        return list(rogue_envelopes(target.rogue, ATTACK_CHANNEL, times, fake))
    return list(compromised_key_envelopes(device, ATTACK_CHANNEL, times, fake))


def run_demo(data_dir: Path, patients: int, speed: float, duration_s: float, headless: bool,
             seed: int, console: Console, attacks: Sequence[str] = ()) -> DemoResult:
    """Run the demo until `duration_s` wall seconds pass (or Ctrl-C); then verify the log.

    `attacks`: kinds from `medtwin.sim.ATTACK_KINDS`, each on its own patient's CGM from
    `ATTACK_START_SIM_MS` after the start (see `LiveAttacks`)."""
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
    services = open_chain_services(pipeline)
    server = BackgroundServer(pipeline, services=services).start()
    console.print(f"[bold]medtwin[/] site at [link]{server.url}[/]  (API docs: {server.url}/docs)")
    for line in services.lines:
        console.print(line)
    console.print(f"data directory: {data_dir}  ·  clinician token: {clinician}")
    with console.status("building the virtual ward (UVA/Padova patients)…"):
        ward = Ward(patients, start_ms, seed=seed, deteriorating=DETERIORATING,
                    onset_window_ms=ONSET_WINDOW_MS)
    stats = {"sent": 0, "accepted": 0, "rejected": 0, "attack": 0}
    live_attacks = LiveAttacks(ward, attacks, start_ms + ATTACK_START_SIM_MS, seed)
    for k, kind in enumerate(attacks):
        console.print(f"attack {kind} on {ward.patients[k % len(ward.patients)].patient_id}'s "
                      f"CGM from {ATTACK_START_SIM_MS // 60_000} simulated minutes")
    stop = threading.Event()
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        auth = {"Authorization": f"Bearer {admin}"}
        for p in ward.patients:
            http.post("/v1/patients", json={"patient_id": p.patient_id}, headers=auth)
        for reg in ward.devices:
            http.post("/v1/devices", headers=auth, json={
                "device_id": reg.device_id, "patient_id": reg.patient_id, "suite": reg.suite,
                "public_key": base64.b64encode(reg.public_key).decode()})
        streamer = threading.Thread(target=_stream,
                                    args=(ward, clock, server.url, stats, stop, live_attacks),
                                    name="medtwin-ward", daemon=True)
        streamer.start()
        deadline = time.monotonic() + duration_s if duration_s > 0 else float("inf")
        view = _ward_view(http, clinician, admin, clock, stats)
        seen: set[tuple[Any, ...]] = set()
        try:
            if headless:
                while time.monotonic() < deadline and streamer.is_alive():
                    time.sleep(min(5.0, max(deadline - time.monotonic(), 0.01)))
                    console.print(_headline(stats, clock))
                    for f in _new_findings(http, clinician, seen):
                        console.print("  " + _finding_line(f), markup=False, highlight=False)
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
                      counts, report.records, tuple(attacks), stats["attack"])


def _stream(ward: Ward, clock: AcceleratedClock, url: str, stats: dict[str, int],
            stop: threading.Event, attacks: LiveAttacks) -> None:
    """Send every packet the ward has due, step by step, over HTTP, as its devices would,
    after the chosen `attacks` (and the periodic replayed and forged packets) had their way.

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
            genuine = ward.advance(now - now % STEP_SIM_MS)
            envelopes, n_attack = attacks(genuine)
            with lock:
                stats["attack"] += n_attack
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
            if genuine:  # the ward's own devices: the periodic attack replays and forges them
                sent_before = genuine[-3:]
            stop.wait(0.2)


def _headline(stats: dict[str, int], clock: AcceleratedClock) -> str:
    sim_h = (clock() - clock.start_ms) / 3_600_000
    attack = f" · attack packets {stats['attack']}" if stats.get("attack") else ""
    return (f"simulated {sim_h:5.2f} h · packets sent {stats['sent']} · accepted "
            f"{stats['accepted']} · rejected {stats['rejected']}{attack}")


def _get_json(http: httpx.Client, path: str, token: str, **params: Any) -> Any:
    """The JSON of GET `path`, or None when the site has no such endpoint or does not answer
    (the view then leaves that part out)."""
    try:
        reply = http.get(path, params=params, headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError:
        return None
    return reply.json() if reply.status_code == 200 else None


def _findings(http: httpx.Client, token: str, limit: int) -> list[dict[str, Any]]:
    """The newest guard findings (`GET /v1/findings`), newest first; [] if unavailable."""
    body = _get_json(http, "/v1/findings", token, limit=limit)
    found = body.get("findings") if isinstance(body, dict) else None
    return [f for f in found if isinstance(f, dict)] if isinstance(found, list) else []


def _new_findings(http: httpx.Client, token: str,
                  seen: set[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Findings not printed before (oldest first), remembered in `seen`."""
    fresh = []
    for f in reversed(_findings(http, token, 100)):
        key = (f.get("device_id"), f.get("code"), f.get("channel"), f.get("time_ms"))
        if key not in seen:
            seen.add(key)
            fresh.append(f)
    return fresh


def _finding_line(f: dict[str, Any]) -> str:
    """One finding as a line: code, confidence, patient and device, summary, quarantine."""
    mark = " [QUARANTINED]" if f.get("quarantined") else ""
    return (f"guard {f.get('code')} ({float(f.get('confidence') or 0.0):.2f}) "
            f"{f.get('patient_id')}/{f.get('device_id')}: {f.get('summary')}{mark}")


def _ward_view(http: httpx.Client, token: str, admin_token: str, clock: AcceleratedClock,
               stats: dict[str, int]) -> Callable[[], Group]:
    """A function that fetches the ward, its latest alerts, guard findings and quarantined
    devices from the API and renders them."""
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
        guard = Table.grid(padding=(0, 1))
        for f in _findings(http, token, FINDINGS_SHOWN):
            guard.add_row(f"[{'bold red' if f.get('quarantined') else 'yellow'}]"
                          f"{escape(str(f.get('code')))}[/]",
                          f"{float(f.get('confidence') or 0.0):.2f}",
                          escape(str(f.get("patient_id"))), escape(str(f.get("device_id"))),
                          escape(str(f.get("summary"))),
                          "[bold red]quarantined[/]" if f.get("quarantined") else "")
        devices = _get_json(http, "/v1/devices", admin_token)
        held = sorted(str(d.get("device_id")) for d in devices or ()
                      if isinstance(d, dict) and d.get("status") == "quarantined")
        parts: list[Any] = [table, "[bold]latest alerts[/]", latest,
                            "[bold]guard findings[/]", guard]
        if held:
            parts.append(f"[bold red]quarantined devices:[/] {', '.join(held)}")
        return Group(*parts)

    return view


def _most_severe(active: list[str]) -> list[str]:
    """Active rules without those outranked by a more severe rule of their family."""
    by_family = {rule.name: rule.family for rule in RULES}
    order = [rule.name for rule in RULES]
    top: dict[str, str] = {}
    for name in sorted(active, key=order.index):
        top[by_family[name]] = name
    return list(top.values())
