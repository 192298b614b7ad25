"""The HTTP API through FastAPI's test client: authentication, roles, ingestion answers."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.conftest import DeviceSim

from medtwin.access import Role, hash_token, new_token
from medtwin.api import create_app
from medtwin.config import MAX_PACKET_BYTES
from medtwin.domain import Channel, Reading
from medtwin.pipeline import Pipeline


def _token(pipeline: Pipeline, role: Role) -> str:
    token, token_hash = new_token()
    pipeline.store.add_token(token_hash, f"test-{role.value}", role.value, 0)
    return token


@pytest.fixture
def client(pipeline: Pipeline) -> Iterator[TestClient]:
    with TestClient(create_app(pipeline)) as test_client:
        yield test_client


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_every_endpoint_but_ingestion_needs_a_token(client: TestClient) -> None:
    for path in ("/v1/patients", "/v1/alerts", "/v1/rejections", "/v1/ledger/head",
                 "/v1/verify", "/v1/devices", "/v1/patients/pt-1/twin"):
        reply = client.get(path)
        assert reply.status_code == 401, path
        assert reply.headers["www-authenticate"] == "Bearer"
    assert client.get("/v1/patients", headers=_auth("mtk_not-a-real-token")).status_code == 401


def test_roles_limit_what_a_token_may_do(client: TestClient, pipeline: Pipeline,
                                         patient_id: str) -> None:
    clinician = _auth(_token(pipeline, Role.CLINICIAN))
    auditor = _auth(_token(pipeline, Role.AUDITOR))
    admin = _auth(_token(pipeline, Role.ADMIN))
    assert client.get("/v1/patients", headers=clinician).status_code == 200
    assert client.get(f"/v1/patients/{patient_id}/twin", headers=clinician).status_code == 200
    forbidden = client.get("/v1/rejections", headers=clinician)
    assert forbidden.status_code == 403
    assert "clinician" in forbidden.json()["detail"]
    assert client.get("/v1/patients", headers=auditor).status_code == 403
    assert client.get("/v1/rejections", headers=auditor).status_code == 200
    assert client.post("/v1/patients", json={"patient_id": "pt-2"},
                       headers=clinician).status_code == 403
    assert client.post("/v1/patients", json={"patient_id": "pt-2"},
                       headers=admin).status_code == 201
    assert client.post("/v1/patients", json={"patient_id": "pt-2"},
                       headers=admin).status_code == 409
    assert client.get("/v1/patients/pt-404/twin", headers=admin).status_code == 404


def test_tokens_are_stored_only_as_hashes(pipeline: Pipeline, settings: object) -> None:
    token = _token(pipeline, Role.ADMIN)
    pipeline.close()
    db = Path(pipeline.store.url.removeprefix("sqlite:///"))
    stored = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
    assert token.encode() not in stored
    assert hash_token(token) in stored


def test_admin_registers_a_device_that_can_then_send(client: TestClient, pipeline: Pipeline,
                                                     patient_id: str, make_device: type) -> None:
    admin = _auth(_token(pipeline, Role.ADMIN))
    sim: DeviceSim = make_device("cgm-9", patient_id)
    bad_key = client.post("/v1/devices", headers=admin, json={
        "device_id": "cgm-9", "patient_id": patient_id, "public_key": "not base64!"})
    assert bad_key.status_code == 422
    reply = client.post("/v1/devices", headers=admin, json={
        "device_id": "cgm-9", "patient_id": patient_id,
        "public_key": base64.b64encode(sim.public_key).decode()})
    assert reply.status_code == 201
    sent = client.post("/v1/packets", json=sim.envelope(
        [Reading(Channel.GLUCOSE, 110.0, sim.clock())]))
    assert sent.status_code == 200, sent.text
    assert sent.json()["status"] == "accepted"
    devices = client.get("/v1/devices", headers=admin).json()
    assert {"device_id": "cgm-9", "patient_id": patient_id, "suite": "ed25519",
            "status": "active", "last_seq": 0} in devices


def test_ingestion_answers_say_why_a_packet_was_refused(client: TestClient, pipeline: Pipeline,
                                                        device: DeviceSim) -> None:
    good = device.envelope(device.vitals())
    assert client.post("/v1/packets", json=good).status_code == 200
    replay = client.post("/v1/packets", json=good)
    assert (replay.status_code, replay.json()["reason"]) == (409, "replayed-sequence")
    forged = client.post("/v1/packets", json=device.envelope(device.vitals(), key=b"\x01" * 32))
    assert (forged.status_code, forged.json()["reason"]) == (401, "bad-signature")
    garbage = client.post("/v1/packets", content=b"{not json",
                          headers={"Content-Type": "application/json"})
    assert (garbage.status_code, garbage.json()["reason"]) == (400, "malformed")
    huge = client.post("/v1/packets", content=b" " * (MAX_PACKET_BYTES + 1),
                       headers={"Content-Type": "application/json"})
    assert (huge.status_code, huge.json()["reason"]) == (413, "too-large")
    impossible = client.post("/v1/packets", json=device.envelope(device.vitals(hr=999.0)))
    assert (impossible.status_code, impossible.json()["reason"]) == (422, "impossible-value")
    assert "999" not in impossible.text
    counts = pipeline.store.counts()
    assert (counts["packets"], counts["rejections"]) == (1, 5)
    auditor = _auth(_token(pipeline, Role.AUDITOR))
    reasons = [r["reason"] for r in client.get("/v1/rejections", headers=auditor).json()]
    assert reasons == ["impossible-value", "too-large", "malformed", "bad-signature",
                       "replayed-sequence"]


def test_audit_endpoints_show_the_signed_head_and_verify(client: TestClient, pipeline: Pipeline,
                                                          device: DeviceSim) -> None:
    auditor = _auth(_token(pipeline, Role.AUDITOR))
    assert client.get("/v1/ledger/head", headers=auditor).json()["size"] == 1  # registration
    for _ in range(3):
        assert client.post("/v1/packets", json=device.envelope(device.vitals())).status_code == 200
    head = client.get("/v1/ledger/head", headers=auditor).json()
    assert head["size"] == 4
    assert head["suite"] == "ed25519"
    result = client.get("/v1/verify", headers=auditor).json()
    assert result == {"ok": True, "records": 4, "packets": 3, "alerts": 0, "rejections": 0,
                      "registrations": 1, "signatures_checked": 3, "pending": 0,
                      "erasures": 0, "unreadable": 0, "rotations": 0, "sessions": 0,
                      "snapshots": 0, "accesses": 0, "suite_changes": 0,
                      "kek_retirements": 0, "token_bindings_checked": 0,
                      "log_key_rotations": 0,
                      "log_key_id": pipeline.keys.log_key.key_id, "root": head["root"]}


def test_the_ledger_head_of_an_empty_site_is_not_found(client: TestClient,
                                                       pipeline: Pipeline) -> None:
    auditor = _auth(_token(pipeline, Role.AUDITOR))
    assert client.get("/v1/ledger/head", headers=auditor).status_code == 404


def test_openapi_documents_the_endpoints(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/v1/packets", "/v1/patients", "/v1/patients/{patient_id}/twin", "/v1/alerts",
            "/v1/stream", "/v1/verify"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200
    assert json.loads(client.get("/healthz").text) == {"status": "ok"}
