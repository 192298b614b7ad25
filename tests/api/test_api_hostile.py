"""Hostile bodies, quarantine and token revocation through the HTTP API."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from tests.conftest import DeviceSim, FakeClock

from medtwin.access import Role, new_token
from medtwin.api import create_app
from medtwin.config import MAX_PACKET_BYTES
from medtwin.pipeline import Pipeline


@pytest.fixture
def client(pipeline: Pipeline) -> Iterator[TestClient]:
    with TestClient(create_app(pipeline)) as test_client:
        yield test_client


def _auth(pipeline: Pipeline, role: Role, name: str = "someone") -> dict[str, str]:
    token, token_hash = new_token()
    pipeline.store.add_token(token_hash, name, role.value, 0)
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("body", [
    b"[" * 100_000,                                    # nesting deep enough to exhaust a parser
    b'{"packet": NaN, "suite": "ed25519", "signature": ""}',
    b'{"packet": {"seq": Infinity}}',
    b"\xff\xfe not utf-8",
    b"",
])
def test_hostile_bodies_are_refused_as_malformed_and_recorded(
        client: TestClient, pipeline: Pipeline, body: bytes) -> None:
    reply = client.post("/v1/packets", content=body,
                        headers={"Content-Type": "application/json"})
    assert reply.status_code == 400
    assert reply.json()["reason"] == "malformed"
    assert pipeline.store.counts()["rejections"] == 1


def test_a_declared_oversized_body_is_refused_unread(client: TestClient,
                                                     pipeline: Pipeline) -> None:
    reply = client.post("/v1/packets", content=b"{}",
                        headers={"Content-Length": str(MAX_PACKET_BYTES + 1),
                                 "Content-Type": "application/json"})
    assert (reply.status_code, reply.json()["reason"]) == (413, "too-large")


def test_quarantine_then_release(client: TestClient, pipeline: Pipeline,
                                 device: DeviceSim, clock: FakeClock) -> None:
    admin = _auth(pipeline, Role.ADMIN)
    assert client.post("/v1/devices/vit-1/quarantine", headers=admin,
                       json={"reason": "lost"}).status_code == 200
    held = client.post("/v1/packets", json=device.envelope(device.vitals()))
    assert (held.status_code, held.json()["held"]) == (200, 5)   # stored, moves nothing
    assert client.post("/v1/devices/vit-1/release", headers=admin).status_code == 422
    assert client.post("/v1/devices/vit-1/release", headers=admin,
                       json={"reason": "found and checked"}).status_code == 200
    assert client.post("/v1/devices/vit-1/release", headers=admin,
                       json={"reason": "again"}).status_code == 409
    clock.advance(60)
    fresh = client.post("/v1/packets", json=device.envelope(device.vitals(hr=75.0)))
    assert (fresh.status_code, fresh.json()["held"]) == (200, 0)
    reasons = [r.reason for r in pipeline.store.registrations()]
    assert reasons[-2:] == ["quarantine by someone: lost",
                            "release: by someone: found and checked"]
    assert client.post("/v1/devices/nope/quarantine", headers=admin).status_code == 404


def test_a_revoked_token_stops_working(client: TestClient, pipeline: Pipeline) -> None:
    admin = _auth(pipeline, Role.ADMIN)
    created = client.post("/v1/tokens", json={"name": "dr-b", "role": "clinician"},
                          headers=admin)
    assert created.status_code == 201
    clinician = {"Authorization": f"Bearer {created.json()['token']}"}
    assert client.get("/v1/patients", headers=clinician).status_code == 200
    assert client.delete("/v1/tokens/dr-b", headers=admin).json() == {"name": "dr-b",
                                                                       "revoked": 1}
    assert client.get("/v1/patients", headers=clinician).status_code == 401


def test_registering_a_device_with_an_unknown_suite_is_refused(client: TestClient,
                                                               pipeline: Pipeline,
                                                               patient_id: str) -> None:
    admin = _auth(pipeline, Role.ADMIN)
    reply = client.post("/v1/devices", headers=admin, json={
        "device_id": "x-1", "patient_id": patient_id, "suite": "rot13", "public_key": "AAAA"})
    assert reply.status_code == 422
    assert "unknown signature suite" in reply.json()["detail"]
