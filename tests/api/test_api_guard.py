"""The guard through the HTTP API: a flood is throttled and its device quarantined with an
explained finding, while other devices are served; findings and held readings are shown."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient
from tests.api.conftest import auth
from tests.conftest import DeviceSim, FakeClock

from medtwin.access import Role
from medtwin.pipeline import Pipeline


def test_a_flood_is_throttled_found_and_quarantined(
        client: TestClient, pipeline: Pipeline, device: DeviceSim, clock: FakeClock,
        make_device: Callable[..., DeviceSim]) -> None:
    other = make_device("vit-2", "pt-1")
    pipeline.add_device(other.device)
    for _ in range(40):                                   # usual: one packet a minute
        clock.advance(60)
        assert client.post("/v1/packets", json=device.envelope(device.vitals())).status_code == 200
    clock.advance(60)
    codes = [client.post("/v1/packets", json=device.envelope(device.vitals())).status_code
             for _ in range(300)]
    assert codes.count(429) > 100                         # the API stops the bulk
    assert client.post("/v1/packets", json=other.envelope(other.vitals())).status_code == 200
    clinician = auth(pipeline, Role.CLINICIAN)
    findings = client.get("/v1/findings", headers=clinician).json()["findings"]
    flood = [f for f in findings if f["code"] == "device-behaviour"]
    convicting = [f for f in flood if f["quarantined"]]
    assert len(convicting) == 1 and convicting[0]["device_id"] == "vit-1"
    assert len(flood) <= 2                                # one learned, one rule finding
    assert {"observed", "expected", "statistic", "threshold", "since",
            "would_clear"} <= set(convicting[0]["evidence"])
    devices = {d["device_id"]: d["status"]
               for d in client.get("/v1/devices", headers=auth(pipeline, Role.ADMIN)).json()}
    assert devices == {"vit-1": "quarantined", "vit-2": "active"}
    audit = client.get("/v1/throttled", headers=auth(pipeline, Role.AUDITOR)).json()
    assert audit["throttled"] == {"device:vit-1": codes.count(429)}
    # a quarantined device's later packets are stored and held; the twin shows it
    clock.advance(120)
    held = client.post("/v1/packets", json=device.envelope(device.vitals(hr=130.0)))
    assert (held.status_code, held.json()["held"]) == (200, 5)
    twin = client.get("/v1/patients/pt-1/twin", headers=clinician).json()
    heart = twin["channels"]["8867-4"]
    assert heart["held"] is True and heart["value"] != 130.0
    assert heart["low"] < heart["estimate"] < heart["high"]
