"""End to end over real HTTP: virtual devices → uvicorn → gate → twin → alerts → API and stream."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import T0_MS

from medtwin.access import Role, new_token
from medtwin.cli._server import BackgroundServer
from medtwin.config import Settings
from medtwin.pipeline import Pipeline
from medtwin.sim import Ward


class WardClock:
    """The site clock follows the ward's simulated time, as in the demo."""

    def __init__(self) -> None:
        self.ward: Ward | None = None

    def __call__(self) -> int:
        return self.ward.now_ms if self.ward is not None else T0_MS


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[BackgroundServer, Pipeline, WardClock]]:
    clock = WardClock()
    pipeline = Pipeline.open(Settings(data_dir=tmp_path / "site", clock=clock))
    server = BackgroundServer(pipeline).start()
    yield server, pipeline, clock
    server.stop()
    pipeline.close()


def _collect_stream(url: str, token: str, events: list[dict[str, Any]],
                    ready: threading.Event, done: threading.Event) -> None:
    with httpx.Client(base_url=url, timeout=30.0) as http, http.stream(
            "GET", "/v1/stream", headers={"Authorization": f"Bearer {token}"}) as reply:
        kind = None
        for line in reply.iter_lines():
            if line.startswith(": connected"):
                ready.set()
            elif line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: ") and kind is not None:
                events.append(json.loads(line.removeprefix("data: ")))
                if kind == "alert":
                    done.set()
                    return


def test_virtual_ward_to_twin_and_alert_over_http(
        site: tuple[BackgroundServer, Pipeline, WardClock]) -> None:
    server, pipeline, clock = site
    admin, admin_hash = new_token()
    clinician, clinician_hash = new_token()
    pipeline.store.add_token(admin_hash, "admin", Role.ADMIN.value, T0_MS)
    pipeline.store.add_token(clinician_hash, "dr", Role.CLINICIAN.value, T0_MS)
    ward = Ward(1, T0_MS, seed=3, deteriorating=1.0, onset_window_ms=(0, 0))
    clock.ward = ward
    events: list[dict[str, Any]] = []
    ready, done = threading.Event(), threading.Event()
    listener = threading.Thread(target=_collect_stream,
                                args=(server.url, clinician, events, ready, done), daemon=True)
    listener.start()
    assert ready.wait(10), "the live stream did not connect"

    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        admin_auth = {"Authorization": f"Bearer {admin}"}
        assert http.post("/v1/patients", json={"patient_id": "pt-0001"},
                         headers=admin_auth).status_code == 201
        for reg in ward.devices:
            assert http.post("/v1/devices", headers=admin_auth, json={
                "device_id": reg.device_id, "patient_id": reg.patient_id, "suite": reg.suite,
                "public_key": base64.b64encode(reg.public_key).decode()}).status_code == 201
        accepted = 0
        for _ in range(120):  # two simulated hours, minute by minute
            for envelope in ward.advance(ward.now_ms + 60_000):
                reply = http.post("/v1/packets", json=envelope)
                assert reply.status_code == 200, reply.text
                accepted += 1

        clinician_auth = {"Authorization": f"Bearer {clinician}"}
        twin = http.get("/v1/patients/pt-0001/twin", headers=clinician_auth).json()
        alerts = http.get("/v1/alerts", headers=clinician_auth).json()
        findings = http.get("/v1/findings", headers=clinician_auth).json()["findings"]
        devices = http.get("/v1/devices", headers=admin_auth).json()

    assert accepted > 100
    assert set(twin["channels"]) >= {"99504-3", "8867-4", "59408-5", "9279-1", "8480-6",
                                     "8462-4", "8310-5"}
    assert 39 <= twin["channels"]["99504-3"]["value"] <= 400
    assert twin["news2"]["complete"] is True
    assert twin["news2"]["total"] >= 5
    assert alerts, "a deteriorating patient raised no alert"
    first = alerts[-1]
    assert first["rule"].startswith("news2")
    assert "NEWS2" in first["summary"]
    assert first["evidence"]["no_alert_if"]
    assert done.wait(10), "the live stream did not deliver the alert"
    kinds = {e["type"] for e in events}
    assert {"twin", "alert"} <= kinds <= {"twin", "alert", "finding"}
    # an honest patient deteriorating: the guard calls nothing spoofed or faulty and
    # quarantines no device
    assert findings == []
    assert {d["status"] for d in devices} == {"active"}
    assert any(e["type"] == "twin" and e["state"]["patient_id"] == "pt-0001" for e in events)
