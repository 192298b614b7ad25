"""Consent-gated reads through the API: a twin is read only with its patient's grant on the
chain; a revocation holds from the next request; every decision is kept for auditors."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from tests.conftest import DeviceSim, FakeClock

pytest.importorskip("eth_account", reason="consent needs the chain extra: "
                                          "pip install 'medtwin[chain]'")

from eth_account import Account

from medtwin.access import Role, new_token
from medtwin.api import create_app
from medtwin.ledger import Chain, with_key
from medtwin.pipeline import Pipeline, SiteConsent, site_chain


@pytest.fixture
def consent(pipeline: Pipeline) -> SiteConsent:
    return SiteConsent.open(pipeline, site_chain(pipeline))


@pytest.fixture
def client(pipeline: Pipeline, consent: SiteConsent) -> Iterator[TestClient]:
    with TestClient(create_app(pipeline, consent)) as test_client:
        yield test_client


def _auth(pipeline: Pipeline, role: Role, name: str, address: str | None = None
          ) -> dict[str, str]:
    token, token_hash = new_token()
    pipeline.store.add_token(token_hash, name, role.value, 0)
    if address is not None:
        pipeline.store.set_token_address(token_hash, address)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def owner(consent: SiteConsent) -> Chain:
    """The patient's own wallet on the chain."""
    return with_key(consent.registry.chain, bytes(Account.create().key))


def _register(client: TestClient, pipeline: Pipeline, owner: Chain,
              make_device: Callable[..., DeviceSim], clock: FakeClock) -> DeviceSim:
    admin = _auth(pipeline, Role.ADMIN, "admin-1")
    assert client.post("/v1/patients", json={"patient_id": "pt-7"},
                       headers=admin).status_code == 422        # the owner is required
    made = client.post("/v1/patients", json={"patient_id": "pt-7", "owner": owner.address},
                       headers=admin)
    assert made.status_code == 201 and made.json()["token_id"].startswith("0x")
    device = make_device("vit-7", "pt-7")
    pipeline.add_device(device.device)
    clock.advance(60)
    assert client.post("/v1/packets", json=device.envelope(device.vitals(hr=135.0))
                       ).status_code == 200
    return device


def test_a_twin_is_read_only_with_its_patients_grant(
        client: TestClient, pipeline: Pipeline, consent: SiteConsent, owner: Chain,
        make_device: Callable[..., DeviceSim], clock: FakeClock) -> None:
    _register(client, pipeline, owner, make_device, clock)
    doctor = Account.create().address
    clinician = _auth(pipeline, Role.CLINICIAN, "dr-a", doctor)
    refused = client.get("/v1/patients/pt-7/twin", headers=clinician)
    assert refused.status_code == 403 and "no grant for treatment" in refused.json()["detail"]
    assert client.get("/v1/patients", headers=clinician).json() == []
    consent.registry.grant(owner, "pt-7", doctor, "treatment", int(time.time()) + 3600)
    assert client.get("/v1/patients/pt-7/twin", headers=clinician).status_code == 200
    assert [p["patient_id"] for p in client.get("/v1/patients", headers=clinician).json()] == [
        "pt-7"]
    alerts = client.get("/v1/alerts", headers=clinician).json()
    assert alerts and {a["patient_id"] for a in alerts} == {"pt-7"}
    consent.registry.revoke(owner, "pt-7", doctor, "treatment")
    again = client.get("/v1/patients/pt-7/twin", headers=clinician)
    assert again.status_code == 403 and "revoked" in again.json()["detail"]
    assert client.get("/v1/alerts", headers=clinician).json() == []


def test_callers_without_a_grant_or_an_address_are_refused(
        client: TestClient, pipeline: Pipeline, consent: SiteConsent, owner: Chain,
        make_device: Callable[..., DeviceSim], clock: FakeClock) -> None:
    _register(client, pipeline, owner, make_device, clock)
    for headers, reason in (
            (_auth(pipeline, Role.CLINICIAN, "dr-b"), "no chain address"),
            (_auth(pipeline, Role.ADMIN, "admin-2", Account.create().address), "no grant")):
        answer = client.get("/v1/patients/pt-7/twin", headers=headers)
        assert answer.status_code == 403 and reason in answer.json()["detail"]
        answer = client.get("/v1/findings", params={"patient_id": "pt-7"}, headers=headers)
        assert answer.status_code == 403
        answer = client.post("/v1/patients/pt-7/whatif", json={"hours": 1},
                             headers=headers)
        assert answer.status_code == 403
    admin = _auth(pipeline, Role.ADMIN, "admin-3", Account.create().address)
    refused = client.post("/v1/patients/pt-7/personalize", json={}, headers=admin)
    assert refused.status_code == 403 and "no grant" in refused.json()["detail"]


def test_every_decision_is_kept_for_auditors(
        client: TestClient, pipeline: Pipeline, consent: SiteConsent, owner: Chain,
        make_device: Callable[..., DeviceSim], clock: FakeClock) -> None:
    _register(client, pipeline, owner, make_device, clock)
    doctor = Account.create().address
    clinician = _auth(pipeline, Role.CLINICIAN, "dr-c", doctor)
    client.get("/v1/patients/pt-7/twin", headers=clinician)
    consent.registry.grant(owner, "pt-7", doctor, "treatment", int(time.time()) + 3600)
    client.get("/v1/patients/pt-7/twin", headers=clinician)
    auditor = _auth(pipeline, Role.AUDITOR, "audit-1")
    decisions = client.get("/v1/access-decisions", headers=auditor).json()["decisions"]
    assert [(d["caller"], d["patient_id"], d["purpose"], d["allowed"]) for d in decisions] == [
        ("dr-c", "pt-7", "treatment", True), ("dr-c", "pt-7", "treatment", False)]
    assert decisions[0]["reason"].startswith("granted until")
    assert decisions[1]["address"] == doctor
    assert client.get("/v1/access-decisions", headers=clinician).status_code == 403


def test_a_token_address_must_be_a_chain_address(client: TestClient, pipeline: Pipeline
                                                 ) -> None:
    admin = _auth(pipeline, Role.ADMIN, "admin-3")
    bad = client.post("/v1/tokens", json={"name": "dr-d", "role": "clinician",
                                          "address": "not-an-address"}, headers=admin)
    assert bad.status_code == 422
    good = client.post("/v1/tokens", json={"name": "dr-d", "role": "clinician",
                                           "address": Account.create().address}, headers=admin)
    assert good.status_code == 201


def test_consent_needs_a_chain_that_outlives_the_process(
        pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    from medtwin.cli._server import open_chain_services
    from medtwin.config import Settings
    from medtwin.errors import ConfigError

    monkeypatch.setenv("MEDTWIN_CONSENT", "maybe")
    with pytest.raises(ConfigError, match="MEDTWIN_CONSENT"):
        Settings.from_env()
    monkeypatch.setenv("MEDTWIN_CONSENT", "1")
    pipeline.settings = Settings.from_env(data_dir=pipeline.settings.data_dir,  # type: ignore[misc]
                                          clock=pipeline.clock)
    with pytest.raises(ConfigError, match="MEDTWIN_CHAIN_URL"):
        open_chain_services(pipeline)         # grants on the embedded chain die with it
