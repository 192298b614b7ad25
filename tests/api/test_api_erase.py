"""Erasing a patient through the API: admins only; the patient's reads then answer 410 and
their device's packets are refused, while the log still verifies."""

from __future__ import annotations

from fastapi.testclient import TestClient
from tests.api.conftest import auth
from tests.conftest import DeviceSim, FakeClock

from medtwin.access import Role
from medtwin.pipeline import Pipeline


def test_only_an_admin_may_erase(client: TestClient, pipeline: Pipeline,
                                 patient_id: str) -> None:
    body = {"reason": "request of the patient"}
    for role in (Role.CLINICIAN, Role.AUDITOR):
        answer = client.post(f"/v1/patients/{patient_id}/erase", json=body,
                             headers=auth(pipeline, role))
        assert answer.status_code == 403
    assert client.post(f"/v1/patients/{patient_id}/erase", json=body).status_code == 401
    assert pipeline.store.erased_patients() == set()


def test_erasure_through_the_api(client: TestClient, pipeline: Pipeline, device: DeviceSim,
                                 clock: FakeClock) -> None:
    clock.advance(60)
    assert client.post("/v1/packets", json=device.envelope(device.vitals())).status_code == 200
    admin = auth(pipeline, Role.ADMIN)
    assert client.post("/v1/patients/pt-1/erase", json={}, headers=admin).status_code == 422
    erased = client.post("/v1/patients/pt-1/erase", json={"reason": "ticket 42"}, headers=admin)
    assert erased.json() == {"patient_id": "pt-1", "status": "erased", "scrubbed": True}
    again = client.post("/v1/patients/pt-1/erase", json={"reason": "ticket 42"}, headers=admin)
    assert again.status_code == 409
    unknown = client.post("/v1/patients/pt-9/erase", json={"reason": "x"}, headers=admin)
    assert unknown.status_code == 404
    clinician = auth(pipeline, Role.CLINICIAN)
    twin = client.get("/v1/patients/pt-1/twin", headers=clinician)
    assert twin.status_code == 410
    assert "was erased" in twin.json()["detail"]
    clock.advance(60)
    refused = client.post("/v1/packets", json=device.envelope(device.vitals()))
    assert refused.json()["reason"] == "unknown-patient"
    report = client.get("/v1/verify", headers=auth(pipeline, Role.AUDITOR)).json()
    assert (report["ok"], report["erasures"], report["unreadable"]) == (True, 1, 1)
