"""Erasing a patient through the API: admins only; the patient's reads then answer 410 and
their device's packets are refused, while the log still verifies."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from tests.conftest import DeviceSim, FakeClock

from medtwin.access import Role, new_token
from medtwin.api import create_app
from medtwin.pipeline import Pipeline


@pytest.fixture
def client(pipeline: Pipeline) -> Iterator[TestClient]:
    with TestClient(create_app(pipeline)) as test_client:
        yield test_client


def _auth(pipeline: Pipeline, role: Role) -> dict[str, str]:
    token, token_hash = new_token()
    pipeline.store.add_token(token_hash, f"{role.value}-1", role.value, 0)
    return {"Authorization": f"Bearer {token}"}


def test_only_an_admin_may_erase(client: TestClient, pipeline: Pipeline,
                                 patient_id: str) -> None:
    body = {"reason": "request of the patient"}
    for role in (Role.CLINICIAN, Role.AUDITOR):
        answer = client.post(f"/v1/patients/{patient_id}/erase", json=body,
                             headers=_auth(pipeline, role))
        assert answer.status_code == 403
    assert client.post(f"/v1/patients/{patient_id}/erase", json=body).status_code == 401
    assert pipeline.store.erased_patients() == set()


def test_erasure_through_the_api(client: TestClient, pipeline: Pipeline, device: DeviceSim,
                                 clock: FakeClock) -> None:
    clock.advance(60)
    assert client.post("/v1/packets", json=device.envelope(device.vitals())).status_code == 200
    admin = _auth(pipeline, Role.ADMIN)
    assert client.post("/v1/patients/pt-1/erase", json={}, headers=admin).status_code == 422
    erased = client.post("/v1/patients/pt-1/erase", json={"reason": "ticket 42"}, headers=admin)
    assert erased.json() == {"patient_id": "pt-1", "status": "erased", "scrubbed": True}
    again = client.post("/v1/patients/pt-1/erase", json={"reason": "ticket 42"}, headers=admin)
    assert again.status_code == 409
    unknown = client.post("/v1/patients/pt-9/erase", json={"reason": "x"}, headers=admin)
    assert unknown.status_code == 404
    clinician = _auth(pipeline, Role.CLINICIAN)
    twin = client.get("/v1/patients/pt-1/twin", headers=clinician)
    assert twin.status_code == 410
    assert "was erased" in twin.json()["detail"]
    clock.advance(60)
    refused = client.post("/v1/packets", json=device.envelope(device.vitals()))
    assert refused.json()["reason"] == "unknown-patient"
    report = client.get("/v1/verify", headers=_auth(pipeline, Role.AUDITOR)).json()
    assert (report["ok"], report["erasures"], report["unreadable"]) == (True, 1, 1)
