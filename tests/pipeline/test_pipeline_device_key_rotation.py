"""Device key rotation without downtime: logged, the old key stops signing at once (its
sessions end), the new one signs from the next packet, and verify checks each packet with
the key registered when it came."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.conftest import DeviceSim, FakeClock, key_pair

from medtwin.access import Role, new_token
from medtwin.api import create_app
from medtwin.domain import RejectReason
from medtwin.errors import ConflictError, InvalidInputError, NotFoundError
from medtwin.pipeline import Accepted, Pipeline, Rejected, verify_store


def test_a_rotated_key_signs_from_the_next_packet(pipeline: Pipeline, device: DeviceSim,
                                                  clock: FakeClock) -> None:
    clock.advance(60)
    assert isinstance(pipeline.process([device.submit(device.vitals())])[0], Accepted)
    old_key = device.private_key
    device.private_key, device.public_key = key_pair("device vit-1, second key")
    pipeline.rotate_device_key("vit-1", "ed25519", device.public_key, "ticket 7: lost patch")
    clock.advance(60)
    [stale] = pipeline.process([device.submit(device.vitals(), key=old_key)])
    assert isinstance(stale, Rejected) and stale.error.reason is RejectReason.BAD_SIGNATURE
    clock.advance(60)
    assert isinstance(pipeline.process([device.submit(device.vitals())])[0], Accepted)
    report = verify_store(pipeline.store, pipeline.keys.log_key_history, pipeline.keyring)
    assert (report.signatures_checked, report.registrations) == (2, 2)
    [*_, latest] = pipeline.store.registrations()
    assert latest.reason == "key rotation: ticket 7: lost patch"


def test_rotation_is_refused_with_a_clear_reason(pipeline: Pipeline, device: DeviceSim) -> None:
    with pytest.raises(InvalidInputError):
        pipeline.rotate_device_key("vit-1", "ed25519", b"\x01" * 32, "")
    with pytest.raises(NotFoundError):
        pipeline.rotate_device_key("vit-9", "ed25519", b"\x01" * 32, "ticket 8")
    with pytest.raises(ConflictError, match="already has that key"):
        pipeline.rotate_device_key("vit-1", "ed25519", device.public_key, "ticket 8")


@pytest.fixture
def client(pipeline: Pipeline) -> Iterator[TestClient]:
    with TestClient(create_app(pipeline)) as test_client:
        yield test_client


def test_rotation_through_the_api_is_for_admins(client: TestClient, pipeline: Pipeline,
                                                device: DeviceSim) -> None:
    token, token_hash = new_token()
    pipeline.store.add_token(token_hash, "admin-1", Role.ADMIN.value, 0)
    _, public = key_pair("device vit-1, api key")
    body = {"public_key": base64.b64encode(public).decode(), "reason": "ticket 9"}
    assert client.post("/v1/devices/vit-1/key", json=body).status_code == 401
    done = client.post("/v1/devices/vit-1/key", json=body,
                       headers={"Authorization": f"Bearer {token}"})
    assert done.status_code == 200
    assert [d.public_key for d in pipeline.devices()] == [public]


def test_rotation_from_the_command_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medtwin.cli import app

    site = str(tmp_path / "cli-site")
    runner = CliRunner()
    for command in (["keys", "init"], ["keys", "add-patient", "pt-1"],
                    ["keys", "add-device", "vit-1", "--patient", "pt-1", "--out",
                     str(tmp_path / "old.json")]):
        done = runner.invoke(app, [*command, "--data-dir", site])
        assert done.exit_code == 0, done.output
    new = tmp_path / "new.json"
    out = runner.invoke(app, ["keys", "rotate-device", "vit-1", "--out", str(new),
                              "--reason", "ticket 10", "--data-dir", site])
    assert out.exit_code == 0, out.output
    assert new.stat().st_mode & 0o777 == 0o600
    failed = runner.invoke(app, ["keys", "rotate-device", "vit-9", "--out",
                                 str(tmp_path / "x.json"), "--reason", "t", "--data-dir", site])
    assert failed.exit_code == 1 and not (tmp_path / "x.json").exists()
