"""Consent-gated reads for a site (`Settings.consent_required`): the `Consent` contract on the
site's chain (deployed once and remembered with the block its events start from; per process
on the embedded chain), each twin's
token minted to its patient's key, and a policy that follows the chain's grants and logs
every decision on the Merkle log."""

from __future__ import annotations

from collections.abc import Iterable

from medtwin.access import AccessDecision, Caller, ConsentPolicy
from medtwin.crypto import load_or_create_secret
from medtwin.ledger import Chain, ConsentRegistry, ConsentView, Purpose
from medtwin.pipeline._anchoring import site_contract
from medtwin.pipeline._pipeline import Pipeline

#: The key under which token ids are derived from patient ids; it must never change.
CONSENT_KEY_FILE = "consent-token.key"


class SiteConsent:
    """The site's consent registry and its access policy."""

    def __init__(self, pipeline: Pipeline, registry: ConsentRegistry) -> None:
        self.registry = registry
        self._pipeline = pipeline
        self.policy = ConsentPolicy(ConsentView(registry),
                                    clock=lambda: pipeline.clock() / 1000.0,
                                    audit=pipeline.log_accesses)

    @classmethod
    def open(cls, pipeline: Pipeline, chain: Chain) -> SiteConsent:
        """Attach to the site's consent contract on `chain`, or deploy it."""
        settings = pipeline.settings
        key = load_or_create_secret(settings.resolved_keys_dir / CONSENT_KEY_FILE,
                                    "consent token key")
        registry = site_contract(pipeline, chain, f"consent {settings.log_origin}",
                                 lambda address, block: ConsentRegistry.attach(chain, address,
                                                                               key, block),
                                 lambda: ConsentRegistry.deploy(chain, key))
        return cls(pipeline, registry)

    def mint(self, patient_id: str, owner: str) -> int:
        """Mint the twin's ownership token to the patient's address."""
        return self.registry.mint_twin(patient_id, owner)

    def decide(self, caller: Caller, patient_id: str,
               purpose: str = Purpose.TREATMENT) -> AccessDecision:
        """May `caller` read this twin now? The chain's grants decide; the decision is kept."""
        return self.policy.decide(caller, patient_id, purpose)

    def readable(self, caller: Caller, patient_ids: Iterable[str],
                 previous: set[str] | None = None) -> set[str]:
        """The patients among `patient_ids` whose twins `caller` may read now (one refresh
        of the chain's view, and one logged record of the decisions for all of them). A
        stream re-deciding passes the answer it had (`previous`): its decisions are logged
        only when the answer changed, so an open stream does not fill the log."""
        decisions = self.policy.decide_many(caller, sorted(patient_ids), Purpose.TREATMENT,
                                            audit=previous is None)
        allowed = {d.patient_id for d in decisions if d.allowed}
        if previous is not None and allowed != previous:
            self._pipeline.log_accesses(decisions)
        return allowed
