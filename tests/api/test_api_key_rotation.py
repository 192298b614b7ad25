"""Rotating the site's keys while it serves: the log signing key (`POST /v1/keys/log`, its
rotations served at `/v1/ledger/log-keys`) and the KEK (`POST /v1/keys/kek`, data keys
re-wrapped in the background). Admins only; ingestion goes on throughout."""

from __future__ import annotations

import base64

from fastapi.testclient import TestClient
from tests.api.conftest import auth
from tests.conftest import DeviceSim, FakeClock

from medtwin.access import Role
from medtwin.crypto import LogKeyEndorsement, PublicLogKey, follow_log_key
from medtwin.ledger import (
    NoteVerifier,
    log_key_leaf_hash,
    open_checkpoint_note,
    verify_inclusion,
)
from medtwin.pipeline import Pipeline


def test_only_an_admin_rotates_keys(client: TestClient, pipeline: Pipeline) -> None:
    before = pipeline.keys
    for role in (Role.CLINICIAN, Role.AUDITOR):
        headers = auth(pipeline, role)
        assert client.post("/v1/keys/log", json={"reason": "x"}, headers=headers
                           ).status_code == 403
        assert client.post("/v1/keys/kek", json={"reason": "x"}, headers=headers
                           ).status_code == 403
    admin = auth(pipeline, Role.ADMIN)
    assert client.post("/v1/keys/log", json={}, headers=admin).status_code == 422
    unknown = client.post("/v1/keys/log", json={"reason": "x", "suite": "rsa"}, headers=admin)
    assert unknown.status_code == 422 and "unknown signature suite" in unknown.json()["detail"]
    assert pipeline.keys == before


def test_log_key_rotation_while_serving_is_followed_from_the_first_key(
        client: TestClient, pipeline: Pipeline, device: DeviceSim, clock: FakeClock) -> None:
    first = pipeline.keys.log_key.public
    assert client.post("/v1/packets", json=device.envelope(device.vitals())).status_code == 200
    rotated = client.post("/v1/keys/log", json={"reason": "ticket 30", "suite": "ml-dsa-65"},
                          headers=auth(pipeline, Role.ADMIN))
    assert rotated.status_code == 200, rotated.text
    answer = rotated.json()
    assert (answer["previous_key_id"], answer["suite"]) == (first.key_id, "ml-dsa-65")
    clock.advance(60)
    assert client.post("/v1/packets", json=device.envelope(device.vitals())).status_code == 200
    auditor = auth(pipeline, Role.AUDITOR)
    served = client.get("/v1/ledger/log-keys", headers=auditor).json()
    endorsements = [LogKeyEndorsement.from_json(item) for item in served]
    origin = pipeline.settings.log_origin
    key, followed = follow_log_key(PublicLogKey("pinned", first.suite, first.public_key),
                                   endorsements, origin)
    assert base64.b64encode(key.public_key).decode() == answer["public_key"]
    note = client.get("/v1/ledger/checkpoint", headers=auditor).text
    checkpoint, _ = open_checkpoint_note(note, [NoteVerifier(origin, key.suite, key.public_key)])
    [rotation] = followed
    proof = client.get("/v1/ledger/proof/inclusion", headers=auditor, params={
        "index": rotation.leaf_index, "size": checkpoint.size}).json()
    verify_inclusion(log_key_leaf_hash(rotation), rotation.leaf_index, checkpoint.size,
                     [base64.b64decode(p) for p in proof["proof"]], checkpoint.root)
    report = client.get("/v1/verify", headers=auditor).json()
    assert (report["ok"], report["log_key_rotations"]) == (True, 1)


def test_kek_rotation_while_serving_rewraps_in_the_background(
        client: TestClient, pipeline: Pipeline, device: DeviceSim, clock: FakeClock) -> None:
    for patient in ("pt-2", "pt-3"):
        pipeline.add_patient(patient)
    old = pipeline.keys.kek_id
    answer = client.post("/v1/keys/kek", json={"reason": "ticket 31"},
                         headers=auth(pipeline, Role.ADMIN))
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["old_kek_id"] == old and body["new_kek_id"] == pipeline.keys.kek_id != old
    assert body["pending"] == 3                      # counted before the background re-wrap
    assert pipeline.pending_rewrap() == []          # the background task ran after the answer
    clock.advance(60)
    assert client.post("/v1/packets", json=device.envelope(device.vitals())).status_code == 200
    twin = client.get("/v1/patients/pt-1/twin", headers=auth(pipeline, Role.CLINICIAN))
    assert twin.status_code == 200
    report = client.get("/v1/verify", headers=auth(pipeline, Role.AUDITOR)).json()
    assert (report["ok"], report["rotations"], report["kek_retirements"]) == (True, 1, 0)
    pipeline.retire_kek(old, "sec-officer")
    report = client.get("/v1/verify", headers=auth(pipeline, Role.AUDITOR)).json()
    assert (report["ok"], report["rotations"], report["kek_retirements"]) == (True, 1, 1)
