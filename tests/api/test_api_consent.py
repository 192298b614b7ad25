"""Consent-gated reads through the API: a twin is read only with its patient's grant on the
chain; a revocation holds from the next request; every decision is kept for auditors."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from tests.conftest import DeviceSim, FakeClock

pytest.importorskip("eth_account", reason="consent needs the chain extra: "
                                          "pip install 'medtwin[chain]'")

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from httpx import Response
from sqlalchemy import update

from medtwin.access import Caller, Role, new_token
from medtwin.api import create_app
from medtwin.errors import VerificationError
from medtwin.ledger import (
    Chain,
    binding_message,
    leaf_data,
    leaf_hash,
    verify_inclusion,
    with_key,
)
from medtwin.pipeline import Pipeline, SiteConsent, site_chain
from medtwin.store import AccessRecord, BindingRecord
from medtwin.store._schema import token_addresses


@pytest.fixture
def consent(pipeline: Pipeline) -> SiteConsent:
    return SiteConsent.open(pipeline, site_chain(pipeline))


@pytest.fixture
def client(pipeline: Pipeline, consent: SiteConsent) -> Iterator[TestClient]:
    with TestClient(create_app(pipeline, consent)) as test_client:
        yield test_client


def _auth(pipeline: Pipeline, role: Role, name: str, wallet: LocalAccount | None = None
          ) -> dict[str, str]:
    """A token of `role`, bound (by its holder's signature) to `wallet`'s address if given."""
    token, token_hash = new_token()
    pipeline.store.add_token(token_hash, name, role.value, 0)
    if wallet is not None:
        message = binding_message(pipeline.settings.log_origin, token_hash, wallet.address)
        signed = wallet.sign_message(encode_defunct(text=message))
        pipeline.bind_address(token_hash, name, wallet.address, bytes(signed.signature))
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
    wallet = Account.create()
    doctor = wallet.address
    clinician = _auth(pipeline, Role.CLINICIAN, "dr-a", wallet)
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
            (_auth(pipeline, Role.ADMIN, "admin-2", Account.create()), "no grant")):
        answer = client.get("/v1/patients/pt-7/twin", headers=headers)
        assert answer.status_code == 403 and reason in answer.json()["detail"]
        answer = client.get("/v1/findings", params={"patient_id": "pt-7"}, headers=headers)
        assert answer.status_code == 403
        answer = client.post("/v1/patients/pt-7/whatif", json={"hours": 1},
                             headers=headers)
        assert answer.status_code == 403
    admin = _auth(pipeline, Role.ADMIN, "admin-3", Account.create())
    refused = client.post("/v1/patients/pt-7/personalize", json={}, headers=admin)
    assert refused.status_code == 403 and "no grant" in refused.json()["detail"]


def test_every_decision_is_kept_for_auditors(
        client: TestClient, pipeline: Pipeline, consent: SiteConsent, owner: Chain,
        make_device: Callable[..., DeviceSim], clock: FakeClock) -> None:
    _register(client, pipeline, owner, make_device, clock)
    wallet = Account.create()
    doctor = wallet.address
    clinician = _auth(pipeline, Role.CLINICIAN, "dr-c", wallet)
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
    # each decision is a record of the Merkle log: proven included, and counted by verify
    newest = decisions[0]["leaf_index"]
    head = client.get("/v1/ledger/head", headers=auditor).json()
    proof = client.get("/v1/ledger/proof/inclusion", headers=auditor,
                       params={"index": newest, "size": head["size"]}).json()
    [record] = [r for r in pipeline.store.records()
                if isinstance(r, AccessRecord) and r.leaf_index == newest]
    assert json.loads(record.decisions) == [["pt-7", True, decisions[0]["reason"]]]
    expected = leaf_hash(leaf_data(record.kind, str(newest), record.commit_bytes()))
    assert base64.b64decode(proof["leaf_hash"]) == expected
    verify_inclusion(expected, newest, head["size"],
                     [base64.b64decode(p) for p in proof["proof"]], bytes.fromhex(head["root"]))
    report = client.get("/v1/verify", headers=auditor).json()
    assert (report["ok"], report["accesses"]) == (True, 2)


def test_a_deleted_access_decision_is_detected(
        client: TestClient, pipeline: Pipeline, consent: SiteConsent, owner: Chain,
        make_device: Callable[..., DeviceSim], clock: FakeClock) -> None:
    _register(client, pipeline, owner, make_device, clock)
    clinician = _auth(pipeline, Role.CLINICIAN, "dr-d", Account.create())
    assert client.get("/v1/patients/pt-7/twin", headers=clinician).status_code == 403
    [decision] = pipeline.store.access_decisions()
    with pipeline.store.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM accesses")
    with pytest.raises(VerificationError, match=f"record #{decision['leaf_index']} is missing"):
        pipeline.verify()


def _bind(client: TestClient, headers: dict[str, str], account: LocalAccount,
          signer: LocalAccount | None = None, address: str | None = None) -> Response:
    """Ask for the binding message of `address` (default: the account's), sign it with
    `signer`'s key (default: the account's) and post it."""
    address = address or account.address
    message = client.get("/v1/tokens/me/binding", params={"address": address},
                         headers=headers).json()["message"]
    signed = (signer or account).sign_message(encode_defunct(text=message))
    return client.post("/v1/tokens/me/address", headers=headers, json={
        "address": address, "signature": "0x" + bytes(signed.signature).hex()})


def test_a_holder_binds_their_token_to_an_address_they_control(
        client: TestClient, pipeline: Pipeline, consent: SiteConsent, owner: Chain,
        make_device: Callable[..., DeviceSim], clock: FakeClock) -> None:
    _register(client, pipeline, owner, make_device, clock)
    wallet = Account.create()
    consent.registry.grant(owner, "pt-7", wallet.address, "treatment", int(time.time()) + 3600)
    clinician = _auth(pipeline, Role.CLINICIAN, "dr-e")               # no address yet
    assert client.get("/v1/patients/pt-7/twin", headers=clinician).status_code == 403
    stranger = Account.create()
    forged = _bind(client, clinician, wallet, signer=stranger)
    assert forged.status_code == 422 and f"signed by {stranger.address}" in forged.text
    bound = _bind(client, clinician, wallet)
    assert bound.status_code == 200, bound.text
    assert bound.json() == {"name": "dr-e", "address": wallet.address,
                            "leaf_index": pipeline.verify().tree_size - 1}
    assert client.get("/v1/patients/pt-7/twin", headers=clinician).status_code == 200


def test_a_binding_cannot_be_replayed_for_another_token_or_set_by_an_admin(
        client: TestClient, pipeline: Pipeline) -> None:
    wallet = Account.create()
    first = _auth(pipeline, Role.CLINICIAN, "dr-f")
    message = client.get("/v1/tokens/me/binding", params={"address": wallet.address},
                         headers=first).json()["message"]
    signature = "0x" + bytes(wallet.sign_message(encode_defunct(text=message)).signature).hex()
    second = _auth(pipeline, Role.CLINICIAN, "dr-g")
    replayed = client.post("/v1/tokens/me/address", headers=second,
                           json={"address": wallet.address, "signature": signature})
    assert replayed.status_code == 422 and "was signed by" in replayed.json()["detail"]
    malformed = client.post("/v1/tokens/me/address", headers=first,
                            json={"address": wallet.address, "signature": "0x1234"})
    assert malformed.status_code == 422
    admin = _auth(pipeline, Role.ADMIN, "admin-3")
    set_by_admin = client.post("/v1/tokens", json={"name": "dr-h", "role": "clinician",
                                                   "address": wallet.address}, headers=admin)
    assert set_by_admin.status_code == 422
    auditor = _auth(pipeline, Role.AUDITOR, "audit-2")       # auditors read no twin
    assert client.get("/v1/tokens/me/binding", params={"address": wallet.address},
                      headers=auditor).status_code == 403
    bad = client.get("/v1/tokens/me/binding", params={"address": "not-an-address"},
                     headers=first)
    assert bad.status_code == 422


def test_verify_reports_the_token_bindings_it_checked(client: TestClient,
                                                      pipeline: Pipeline) -> None:
    """Each token's last binding is re-checked: a rebound token counts once."""
    auditor = _auth(pipeline, Role.AUDITOR, "audit-3")
    assert client.get("/v1/verify", headers=auditor).json()["token_bindings_checked"] == 0
    first, second = (_auth(pipeline, Role.CLINICIAN, name) for name in ("dr-i", "dr-j"))
    for headers in (first, first, second):
        assert _bind(client, headers, Account.create()).status_code == 200
    report = client.get("/v1/verify", headers=auditor).json()
    assert (report["ok"], report["token_bindings_checked"]) == (True, 2)


def test_a_pending_binding_is_held_to_its_log_leaf(pipeline: Pipeline) -> None:
    """A binding beyond the signed head still sets the token table, so its row must match
    the leaf logged with it: a consistent one is pending, a rewritten one (another address,
    validly signed by an attacker's key) fails."""
    _auth(pipeline, Role.AUDITOR, "audit-p", Account.create())
    head = pipeline.store.latest_head()
    assert head is not None
    _auth(pipeline, Role.CLINICIAN, "dr-p", Account.create())
    with pipeline.store.engine.begin() as conn:  # put the older head back
        conn.exec_driver_sql("UPDATE tree_heads SET size = ?, root = ?, signature = ?",
                             (head.size, head.root, head.signature))
    report = pipeline.verify()
    assert (report.pending, report.token_bindings_checked) == (1, 2)
    [pending] = [r for r in pipeline.store.records()
                 if isinstance(r, BindingRecord) and r.leaf_index >= head.size]
    attacker = Account.create()
    message = binding_message(pipeline.settings.log_origin, pending.token_hash,
                              attacker.address)
    signature = bytes(attacker.sign_message(encode_defunct(text=message)).signature)
    with pipeline.store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE token_bindings SET address = ?, signature = ? "
                             "WHERE leaf_index = ?",
                             (attacker.address, signature, pending.leaf_index))
        conn.execute(update(token_addresses)
                     .where(token_addresses.c.token_hash == pending.token_hash)
                     .values(address=attacker.address))
    with pytest.raises(VerificationError, match=rf"^log: token binding #{pending.leaf_index} "
                                                r"\(dr-p -> 0x\w+\), beyond the signed head, "
                                                "does not match its log leaf") as caught:
        pipeline.verify()
    assert caught.value.record == f"token binding #{pending.leaf_index} " \
                                  f"(dr-p -> {attacker.address})"


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


def test_a_list_read_is_one_record_and_a_stream_logs_only_changes(
        client: TestClient, pipeline: Pipeline, consent: SiteConsent, owner: Chain,
        make_device: Callable[..., DeviceSim], clock: FakeClock) -> None:
    _register(client, pipeline, owner, make_device, clock)
    pipeline.add_patient("pt-8")
    doctor = Account.create().address
    caller = Caller("dr-s", Role.CLINICIAN, doctor)

    def logged() -> list[AccessRecord]:
        return [r for r in pipeline.store.records() if isinstance(r, AccessRecord)]

    assert consent.readable(caller, {"pt-7", "pt-8"}) == set()
    [first] = logged()
    assert [row[:2] for row in json.loads(first.decisions)] == [["pt-7", False],
                                                                 ["pt-8", False]]
    # a stream re-deciding the same answer adds nothing; a changed answer is logged
    assert consent.readable(caller, {"pt-7", "pt-8"}, previous=set()) == set()
    assert len(logged()) == 1
    consent.registry.grant(owner, "pt-7", doctor, "treatment", int(time.time()) + 3600)
    assert consent.readable(caller, {"pt-7", "pt-8"}, previous=set()) == {"pt-7"}
    assert len(logged()) == 2


def test_token_bindings_are_logged_and_verify_holds_the_token_table_to_them(
        client: TestClient, pipeline: Pipeline) -> None:
    wallet = Account.create()
    clinician = _auth(pipeline, Role.CLINICIAN, "dr-v")
    bound = _bind(client, clinician, wallet)
    assert bound.status_code == 200, bound.text
    [record] = [r for r in pipeline.store.records() if isinstance(r, BindingRecord)]
    assert (record.leaf_index, record.holder, record.address) == (
        bound.json()["leaf_index"], "dr-v", wallet.address)
    assert pipeline.verify().records == record.leaf_index + 1
    # someone with the database rebinds the token to a grantee's address: verify says so
    grantee = Account.create().address
    with pipeline.store.engine.begin() as conn:
        conn.execute(update(token_addresses).values(address=grantee))
    with pytest.raises(VerificationError, match="differ from their logged bindings"):
        pipeline.verify()
    with pipeline.store.engine.begin() as conn:
        conn.execute(update(token_addresses).values(address=wallet.address))
    pipeline.verify()
    # a binding logged without the address key's signature (a rogue site) fails too
    forged = BindingRecord(pipeline.verify().tree_size, record.token_hash, "dr-v", grantee,
                           record.signature, 0)
    with pipeline._lock:
        pipeline._log_action(forged, 0)
    with pytest.raises(VerificationError, match="was signed by"):
        pipeline.verify()
