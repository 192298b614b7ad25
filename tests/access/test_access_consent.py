"""Access decisions follow on-chain consent: roles first, then the patient's grant; a
revocation holds from the next request; every decision is a record for the audit log."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import pytest

pytest.importorskip("eth_tester", reason="the consent policy tests need medtwin[chain]")

from eth_account import Account

from medtwin.access import AccessDecision, Caller, ConsentPolicy, Role
from medtwin.ledger._consent import ConsentRegistry, ConsentView, with_key
from medtwin.ledger._evm import Chain, connect

TOKEN_KEY = bytes(range(100, 132))
PATIENT = "pt-19c2"
TREATMENT = "treatment"


@dataclass
class Ward:
    """A consent contract with one minted twin, the patient's wallet, a clinician with a
    chain address, a settable clock and the audit log the policy writes to."""

    chain: Chain
    registry: ConsentRegistry
    patient: Chain
    clinician: Caller
    now_s: float
    audit: list[AccessDecision] = field(default_factory=list)

    def policy(self) -> ConsentPolicy:
        return ConsentPolicy(ConsentView(self.registry), clock=lambda: self.now_s,
                             audit=self.audit.extend)

    def grant(self, seconds: int) -> None:
        assert self.clinician.address is not None
        self.registry.grant(self.patient, PATIENT, self.clinician.address, TREATMENT,
                            int(self.now_s) + seconds)


@pytest.fixture(scope="module")
def chain() -> Chain:
    return connect()


@pytest.fixture
def ward(chain: Chain) -> Ward:
    registry = ConsentRegistry.deploy(chain, TOKEN_KEY)
    patient = with_key(chain, secrets.token_bytes(32))
    registry.mint_twin(PATIENT, patient.address)
    clinician = Caller("dr-lee", Role.CLINICIAN, Account.create().address)
    now_s = float(chain.w3.eth.get_block("latest")["timestamp"])
    return Ward(chain, registry, patient, clinician, now_s)


def test_a_granted_clinician_may_read_and_the_decision_is_recorded(ward: Ward) -> None:
    ward.grant(3600)
    policy = ward.policy()
    decision = policy.decide(ward.clinician, PATIENT, TREATMENT)
    assert decision.allowed
    assert decision.reason.startswith("granted until ")
    assert ward.audit == [decision]
    record = decision.to_record()
    assert record["caller"] == "dr-lee" and record["role"] == "clinician"
    assert record["patient_id"] == PATIENT and record["purpose"] == TREATMENT
    assert record["at_s"] == ward.now_s and record["allowed"] is True


def test_a_revocation_holds_from_the_next_request(ward: Ward) -> None:
    ward.grant(3600)
    policy = ward.policy()
    assert policy.decide(ward.clinician, PATIENT, TREATMENT).allowed
    assert ward.clinician.address is not None
    ward.registry.revoke(ward.patient, PATIENT, ward.clinician.address, TREATMENT)
    denied = policy.decide(ward.clinician, PATIENT, TREATMENT)
    assert not denied.allowed and denied.reason.startswith("revoked")
    assert [d.allowed for d in ward.audit] == [True, False]


def test_without_a_grant_access_is_denied(ward: Ward) -> None:
    decision = ward.policy().decide(ward.clinician, PATIENT, TREATMENT)
    assert not decision.allowed and decision.reason == "no grant for treatment"


def test_an_expired_grant_denies(ward: Ward) -> None:
    ward.grant(60)
    policy = ward.policy()
    ward.now_s += 60
    decision = policy.decide(ward.clinician, PATIENT, TREATMENT)
    assert not decision.allowed and decision.reason.startswith("expired at ")


def test_a_role_that_does_not_read_twins_is_denied_despite_consent(ward: Ward) -> None:
    ward.grant(3600)
    auditor = Caller("audit-1", Role.AUDITOR, ward.clinician.address)
    decision = ward.policy().decide(auditor, PATIENT, TREATMENT)
    assert not decision.allowed and decision.reason == "role auditor may not read twins"


def test_a_caller_without_a_chain_address_is_denied(ward: Ward) -> None:
    caller = Caller("dr-nobody", Role.CLINICIAN, None)
    decision = ward.policy().decide(caller, PATIENT, TREATMENT)
    assert decision.reason == "no chain address on record for this caller"
    assert not decision.allowed and len(ward.audit) == 1


def test_a_bad_purpose_is_denied_and_recorded(ward: Ward) -> None:
    decision = ward.policy().decide(ward.clinician, PATIENT, "Any Purpose")
    assert not decision.allowed and decision.reason.startswith("invalid request: ")
    assert ward.audit == [decision]


def test_an_unreachable_chain_fails_closed(ward: Ward) -> None:
    from web3 import Web3

    ward.grant(3600)
    policy = ward.policy()
    assert policy.decide(ward.clinician, PATIENT, TREATMENT).allowed
    unreachable = Web3(Web3.HTTPProvider("http://127.0.0.1:9", request_kwargs={"timeout": 1}))
    ward.registry.chain = Chain(unreachable, ward.chain.account, "http://127.0.0.1:9")
    decision = policy.decide(ward.clinician, PATIENT, TREATMENT)
    assert not decision.allowed
    assert decision.reason.startswith("consent state unavailable (consent: cannot read")


def test_a_list_read_refreshes_the_view_once_and_audits_every_patient(ward: Ward) -> None:
    ward.grant(600)
    policy = ward.policy()
    refreshes = []
    refresh = policy.view.refresh

    def counted() -> int:
        refreshes.append(1)
        return refresh()

    policy.view.refresh = counted  # type: ignore[method-assign]
    decisions = policy.decide_many(ward.clinician, [PATIENT, "pt-unknown"], TREATMENT)
    assert [d.allowed for d in decisions] == [True, False]
    assert len(refreshes) == 1 and ward.audit == decisions
