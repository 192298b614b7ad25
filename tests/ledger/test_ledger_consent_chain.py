"""Consent tokens on the embedded chain: who may mint, grant, revoke and transfer; expiry;
the event-fed view; and the shipped artifact matching its Vyper source."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("eth_tester", reason="the consent chain tests need medtwin[chain]")

from eth_account import Account

from medtwin.errors import ChainError, InvalidInputError, NotFoundError
from medtwin.ledger._consent import (
    TOKEN_ID_TAG,
    ConsentRegistry,
    ConsentView,
    Purpose,
    token_id_for,
    with_key,
)
from medtwin.ledger._evm import (
    CONTRACTS_DIR,
    Chain,
    compile_contract,
    connect,
    load_artifact,
)

TOKEN_KEY = bytes(range(32))
PATIENT = "pt-7f3a"
TREATMENT = Purpose.TREATMENT.value
RESEARCH = Purpose.RESEARCH.value


@dataclass
class Site:
    """A deployed consent contract, its registrar, a patient's wallet and a clinician."""

    chain: Chain
    registry: ConsentRegistry
    patient: Chain
    clinician: str

    def now(self) -> int:
        return int(self.chain.w3.eth.get_block("latest")["timestamp"])

    def travel(self, seconds: int) -> int:
        """Move the chain's clock forward; the new latest block's timestamp."""
        self.chain.w3.provider.ethereum_tester.time_travel(self.now() + seconds)
        return self.now()


@pytest.fixture(scope="module")
def registrar() -> Chain:
    return connect()


@pytest.fixture(scope="module")
def patient_chain(registrar: Chain) -> Chain:
    return with_key(registrar, secrets.token_bytes(32))


@pytest.fixture
def site(registrar: Chain, patient_chain: Chain) -> Iterator[Site]:
    registry = ConsentRegistry.deploy(registrar, TOKEN_KEY)
    yield Site(registrar, registry, patient_chain, Account.create().address)


@pytest.fixture
def minted(site: Site) -> Site:
    site.registry.mint_twin(PATIENT, site.patient.address)
    return site


def test_token_id_is_keyed_hmac_of_the_pseudonymous_id() -> None:
    expected = hmac.new(TOKEN_KEY, TOKEN_ID_TAG + PATIENT.encode(), hashlib.sha256).digest()
    assert token_id_for(PATIENT, TOKEN_KEY) == int.from_bytes(expected, "big")
    assert token_id_for(PATIENT, TOKEN_KEY) != token_id_for(PATIENT, bytes(32))
    assert token_id_for(PATIENT, TOKEN_KEY) != int.from_bytes(
        hashlib.sha256(PATIENT.encode()).digest(), "big")


def test_a_short_token_key_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="at least 16 random bytes"):
        token_id_for(PATIENT, b"short")


def test_mint_gives_the_token_to_the_patients_key(site: Site) -> None:
    token_id = site.registry.mint_twin(PATIENT, site.patient.address)
    assert token_id == site.registry.token_id_for(PATIENT)
    assert site.registry.owner_of(PATIENT) == site.patient.address
    assert site.registry.contract.functions.balanceOf(site.patient.address).call() >= 1


def test_owner_of_an_unminted_twin_is_not_found(site: Site) -> None:
    with pytest.raises(NotFoundError, match="no consent token; mint it"):
        site.registry.owner_of(PATIENT)


def test_only_the_registrar_mints(site: Site) -> None:
    as_patient = ConsentRegistry.attach(site.patient, site.registry.address, TOKEN_KEY)
    with pytest.raises(ChainError, match=r"mint sent from .* only the site's registrar"):
        as_patient.mint_twin(PATIENT, site.patient.address)


def test_a_twin_is_minted_once(minted: Site) -> None:
    with pytest.raises(ChainError, match="token already minted"):
        minted.registry.mint_twin(PATIENT, minted.clinician)


def test_only_the_owner_grants_and_revokes(minted: Site) -> None:
    expiry = minted.now() + 1000
    with pytest.raises(ChainError, match="only the token's owner may grant"):
        minted.registry.grant(minted.chain, PATIENT, minted.clinician, TREATMENT, expiry)
    minted.registry.grant(minted.patient, PATIENT, minted.clinician, TREATMENT, expiry)
    with pytest.raises(ChainError, match="only the token's owner may revoke"):
        minted.registry.revoke(minted.chain, PATIENT, minted.clinician, TREATMENT)
    assert minted.registry.is_granted(PATIENT, minted.clinician, TREATMENT)


def test_a_grant_holds_for_its_purpose_until_its_expiry(minted: Site) -> None:
    expiry = minted.now() + 1000
    minted.registry.grant(minted.patient, PATIENT, minted.clinician, TREATMENT, expiry)
    assert minted.registry.is_granted(PATIENT, minted.clinician, TREATMENT)
    assert not minted.registry.is_granted(PATIENT, minted.clinician, RESEARCH)
    minted.travel(900)
    assert minted.registry.is_granted(PATIENT, minted.clinician, TREATMENT)
    minted.travel(200)
    assert not minted.registry.is_granted(PATIENT, minted.clinician, TREATMENT)


def test_a_grant_must_expire_in_the_future(minted: Site) -> None:
    with pytest.raises(ChainError, match="the expiry must be in the future"):
        minted.registry.grant(minted.patient, PATIENT, minted.clinician, TREATMENT,
                              minted.now() - 1)


def test_revoke_ends_a_grant_and_a_second_revoke_is_refused(minted: Site) -> None:
    minted.registry.grant(minted.patient, PATIENT, minted.clinician, TREATMENT,
                          minted.now() + 1000)
    minted.registry.revoke(minted.patient, PATIENT, minted.clinician, TREATMENT)
    assert not minted.registry.is_granted(PATIENT, minted.clinician, TREATMENT)
    with pytest.raises(ChainError, match="no such grant"):
        minted.registry.revoke(minted.patient, PATIENT, minted.clinician, TREATMENT)


def test_a_bad_purpose_or_address_is_refused_before_sending(minted: Site) -> None:
    with pytest.raises(InvalidInputError, match="purpose 'Treatment!' must be"):
        minted.registry.grant(minted.patient, PATIENT, minted.clinician, "Treatment!", 1)
    with pytest.raises(InvalidInputError, match="'0x12' is not an Ethereum address"):
        minted.registry.grant(minted.patient, PATIENT, "0x12", TREATMENT, 1)


def test_transfer_moves_control_to_the_new_owner(minted: Site) -> None:
    new_wallet = with_key(minted.chain, secrets.token_bytes(32))
    expiry = minted.now() + 1000
    minted.registry.grant(minted.patient, PATIENT, minted.clinician, TREATMENT, expiry)
    minted.registry.transfer(minted.patient, PATIENT, new_wallet.address)
    assert minted.registry.owner_of(PATIENT) == new_wallet.address
    with pytest.raises(ChainError, match="only the token's owner may grant"):
        minted.registry.grant(minted.patient, PATIENT, minted.clinician, RESEARCH, expiry)
    with pytest.raises(ChainError, match="only the token's owner may transfer"):
        minted.registry.transfer(minted.patient, PATIENT, minted.patient.address)
    assert minted.registry.is_granted(PATIENT, minted.clinician, TREATMENT)
    minted.registry.revoke(new_wallet, PATIENT, minted.clinician, TREATMENT)
    view = ConsentView(minted.registry)
    view.refresh()
    assert view.owner(PATIENT) == new_wallet.address
    assert view.decide(PATIENT, minted.clinician, TREATMENT, minted.now()).reason.startswith(
        "revoked")


def test_attach_refuses_an_address_without_the_consent_contract(site: Site) -> None:
    with pytest.raises(ChainError, match="is not medtwin's Consent"):
        ConsentRegistry.attach(site.chain, site.patient.address, TOKEN_KEY)


def test_the_view_explains_each_decision(site: Site) -> None:
    view = ConsentView(site.registry)
    now = site.now()
    assert view.decide(PATIENT, site.clinician, TREATMENT, now).reason == \
        "no consent token for this twin"
    site.registry.mint_twin(PATIENT, site.patient.address)
    site.registry.grant(site.patient, PATIENT, site.clinician, TREATMENT, now + 1000)
    assert view.refresh() == 2
    assert view.refresh() == 0
    allowed = view.decide(PATIENT, site.clinician, TREATMENT, now)
    assert allowed.allowed
    assert allowed.reason.startswith("granted until 20") and allowed.reason.endswith("Z")
    assert view.decide(PATIENT, site.clinician, RESEARCH, now).reason == \
        "no grant for research"
    expired = view.decide(PATIENT, site.clinician, TREATMENT, now + 1000)
    assert not expired.allowed and expired.reason.startswith("expired at 20")
    assert PATIENT not in allowed.reason + expired.reason


def test_the_view_sees_a_revocation_only_after_refresh(minted: Site) -> None:
    view = ConsentView(minted.registry)
    minted.registry.grant(minted.patient, PATIENT, minted.clinician, TREATMENT,
                          minted.now() + 1000)
    view.refresh()
    minted.registry.revoke(minted.patient, PATIENT, minted.clinician, TREATMENT)
    assert view.decide(PATIENT, minted.clinician, TREATMENT, minted.now()).allowed
    assert view.refresh() == 1
    decision = view.decide(PATIENT, minted.clinician, TREATMENT, minted.now())
    assert not decision.allowed and decision.reason.startswith("revoked (block ")


def test_the_json_rpc_event_path_agrees_with_the_embedded_one(minted: Site) -> None:
    """A Chain with a URL reads events with eth_getLogs; both paths see the same events."""
    as_rpc = Chain(minted.chain.w3, minted.chain.account, "http://embedded.invalid")
    registry = ConsentRegistry.attach(as_rpc, minted.registry.address, TOKEN_KEY,
                                      minted.registry.from_block)
    minted.registry.grant(minted.patient, PATIENT, minted.clinician, TREATMENT,
                          minted.now() + 1000)
    minted.registry.revoke(minted.patient, PATIENT, minted.clinician, TREATMENT)
    head = minted.chain.block_number()
    embedded = minted.registry.events(minted.registry.from_block, head)
    assert registry.events(minted.registry.from_block, head) == embedded
    assert [event.kind for event in embedded] == ["transfer", "granted", "revoked"]


OPS = st.lists(st.tuples(st.sampled_from(["grant", "revoke", "wait"]),
                         st.integers(0, 1), st.sampled_from([TREATMENT, RESEARCH]),
                         st.sampled_from([1000, 3000])), min_size=1, max_size=6)


@settings(max_examples=8)
@given(ops=OPS)
def test_chain_and_view_agree_with_a_naive_model(registrar: Chain, patient_chain: Chain,
                                                 ops: list[tuple[str, int, str, int]]) -> None:
    """Random grants, revocations and waits: the chain's `is_granted` and the view's
    decision both equal a dict of expiries."""
    registry = ConsentRegistry.deploy(registrar, TOKEN_KEY)
    registry.mint_twin(PATIENT, patient_chain.address)
    site = Site(registrar, registry, patient_chain, "")
    grantees = [Account.create().address for _ in range(2)]
    view = ConsentView(registry)
    model: dict[tuple[str, str], int] = {}
    for op, who, purpose, seconds in ops:
        _apply(site, model, (op, grantees[who], purpose, seconds))
        view.refresh()
        now = site.now()
        for grantee in grantees:
            for p in (TREATMENT, RESEARCH):
                expected = now < model.get((grantee, p), 0)
                assert registry.is_granted(PATIENT, grantee, p) == expected
                assert view.decide(PATIENT, grantee, p, now).allowed == expected


def _apply(site: Site, model: dict[tuple[str, str], int], op: tuple[str, str, str, int]) -> None:
    kind, grantee, purpose, seconds = op
    if kind == "wait":
        site.travel(seconds)
    elif kind == "grant":
        expiry = site.now() + seconds
        site.registry.grant(site.patient, PATIENT, grantee, purpose, expiry)
        model[(grantee, purpose)] = expiry
    elif model.get((grantee, purpose), 0) != 0:
        site.registry.revoke(site.patient, PATIENT, grantee, purpose)
        model[(grantee, purpose)] = 0
    else:
        with pytest.raises(ChainError, match="no such grant"):
            site.registry.revoke(site.patient, PATIENT, grantee, purpose)


def test_the_shipped_artifact_loads_and_describes_the_contract() -> None:
    artifact = load_artifact("Consent")
    names = {entry.get("name") for entry in artifact.abi}
    assert {"mint", "grant", "revoke", "is_granted", "ownerOf", "transferFrom",
            "Transfer", "Granted", "Revoked"} <= names


def test_the_shipped_artifact_is_what_vyper_compiles() -> None:
    pytest.importorskip("vyper", reason="rebuilding the artifact needs vyper==0.4.3")
    shipped = json.loads((CONTRACTS_DIR / "Consent.json").read_text(encoding="utf-8"))
    assert json.loads(compile_contract("Consent").to_json()) == shipped
