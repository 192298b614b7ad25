"""Device sessions through the site: a handshake signed by the device key opens a session
(logged), AEAD frames then carry packets with the device's one sequence of numbers, replays
are refused, and `verify` traces every session packet back to its device's handshake."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from tests.conftest import FakeClock

from medtwin.api import create_app
from medtwin.crypto import check_session_key
from medtwin.domain import Device
from medtwin.errors import VerificationError
from medtwin.pipeline import Pipeline, verify_store
from medtwin.sim import SessionDevice
from medtwin.store import RejectionRecord


@pytest.fixture
def client(pipeline: Pipeline) -> Iterator[TestClient]:
    with TestClient(create_app(pipeline)) as test_client:
        yield test_client


@pytest.fixture
def patch(pipeline: Pipeline, patient_id: str) -> SessionDevice:
    device = SessionDevice("ecg-1", patient_id)
    pipeline.add_device(Device(device.device_id, patient_id, device.suite, device.public_key))
    return device


def _open(client: TestClient, device: SessionDevice, clock: FakeClock) -> dict[str, object]:
    pipeline: Pipeline = client.app.state.pipeline                      # the site served
    offer = client.get("/v1/session-key").json()
    # the device checks the offer against the log key it was provisioned with
    kem, public_key, _signer = check_session_key(offer, pipeline.keys.first_log_key,
                                        pipeline.settings.log_origin)
    assert kem == "x25519+ml-kem-768"
    answer = client.post("/v1/sessions", json=device.handshake(public_key, clock()))
    assert answer.status_code == 201, answer.text
    body: dict[str, object] = answer.json()
    return body


def _frame(client: TestClient, device: SessionDevice, clock: FakeClock, hr: float = 72.0
           ) -> tuple[int, dict[str, object], bytes]:
    from medtwin.domain import Channel, Reading

    clock.advance(1)
    frame = device.frame([Reading(Channel.HEART_RATE, hr, clock())], clock())
    answer = client.post("/v1/session-packets", content=frame,
                         headers={"Content-Type": "application/octet-stream"})
    return answer.status_code, answer.json(), frame


def test_a_session_carries_packets_and_verifies(client: TestClient, pipeline: Pipeline,
                                                patch: SessionDevice, clock: FakeClock) -> None:
    opened = _open(client, patch, clock)
    assert opened["device_id"] == "ecg-1"
    for k in range(5):
        status, body, _ = _frame(client, patch, clock, 70.0 + k)
        assert (status, body["status"], body["seq"]) == (200, "accepted", k)
    report = verify_store(pipeline.store, pipeline.keys.log_key_history, pipeline.keyring)
    assert (report.sessions, report.packets) == (1, 5)
    assert pipeline.store.has_session(str(opened["session_id"]))


def test_replays_and_forgeries_are_refused(client: TestClient, pipeline: Pipeline,
                                           patch: SessionDevice, clock: FakeClock) -> None:
    handshake_key = base64.b64decode(client.get("/v1/session-key").json()["public_key"])
    handshake = patch.handshake(handshake_key, clock())
    assert client.post("/v1/sessions", json=handshake).status_code == 201
    again = client.post("/v1/sessions", json=handshake)
    assert (again.status_code, again.json()["reason"]) == (409, "replayed-sequence")
    _, _, frame = _frame(client, patch, clock)
    replay = client.post("/v1/session-packets", content=frame)
    assert (replay.status_code, replay.json()["reason"]) == (409, "replayed-sequence")
    tampered = bytearray(frame)
    tampered[-1] ^= 1
    bad = client.post("/v1/session-packets", content=bytes(tampered))
    assert bad.status_code == 401
    stranger = SessionDevice("ecg-9", "pt-1")
    refused = client.post("/v1/sessions", json=stranger.handshake(handshake_key, clock()))
    assert (refused.status_code, refused.json()["reason"]) == (401, "unknown-device")
    # refused handshakes are logged like refused packets: who they claimed to be, and why
    logged = [(r.device_id, r.reason) for r in pipeline.store.records()
              if isinstance(r, RejectionRecord) and r.detail.startswith("session handshake")]
    assert logged == [("ecg-1", "replayed-sequence"), ("ecg-9", "unknown-device")]
    assert verify_store(pipeline.store, pipeline.keys.log_key_history, pipeline.keyring
                        ).rejections == 4


def test_verify_refuses_a_session_packet_without_its_handshake(
        client: TestClient, pipeline: Pipeline, patch: SessionDevice, clock: FakeClock) -> None:
    from sqlalchemy import update

    from medtwin.store import _schema

    _open(client, patch, clock)
    _frame(client, patch, clock)
    with pipeline.store.engine.begin() as conn:           # the logged handshake, altered
        conn.execute(update(_schema.sessions).values(session_id="00" * 16))
    with pytest.raises(VerificationError, match="session"):
        verify_store(pipeline.store, pipeline.keys.log_key_history, pipeline.keyring)


def test_a_replayed_handshake_never_ends_a_live_session(
        client: TestClient, pipeline: Pipeline, patch: SessionDevice, clock: FakeClock) -> None:
    """Once the gate evicted a session, its handshake replayed must not evict the live ones."""
    key = base64.b64decode(client.get("/v1/session-key").json()["public_key"])
    first = patch.handshake(key, clock())
    for handshake in (first, patch.handshake(key, clock()), patch.handshake(key, clock())):
        assert client.post("/v1/sessions", json=handshake).status_code == 201
    live = pipeline.gate.live_sessions
    again = client.post("/v1/sessions", json=first)       # evicted by now; replayed
    assert (again.status_code, again.json()["reason"]) == (409, "replayed-sequence")
    assert pipeline.gate.live_sessions == live
    status, body, _ = _frame(client, patch, clock)         # the newest session still works
    assert (status, body["status"]) == (200, "accepted")


def test_rotating_the_device_key_ends_its_sessions(
        client: TestClient, pipeline: Pipeline, patch: SessionDevice, clock: FakeClock) -> None:
    from medtwin.crypto import signature_suite

    _open(client, patch, clock)
    _, new_public = signature_suite("ed25519").generate()
    pipeline.rotate_device_key("ecg-1", "ed25519", new_public, "ticket 11")
    status, body, _ = _frame(client, patch, clock)
    assert (status, body["reason"]) == (401, "unknown-session")


def test_the_session_key_offer_is_checked_across_a_log_key_rotation(
        client: TestClient, pipeline: Pipeline, patch: SessionDevice, clock: FakeClock) -> None:
    """A device provisioned before a log key rotation still checks the offer (it follows the
    rotation the offer carries), and opens a session."""
    pipeline.rotate_log_key("ops", "ticket 40", "ml-dsa-65")
    offer = client.get("/v1/session-key").json()
    assert [r["key"]["key_id"] for r in offer["log_keys"]] == [pipeline.keys.log_key.key_id]
    assert _open(client, patch, clock)["device_id"] == "ecg-1"
