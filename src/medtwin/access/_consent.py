"""Access decisions that follow the patient's consent on the chain: a caller may read a twin
for a purpose only if their role reads twins and the twin's owner granted their chain address
that purpose, unexpired and unrevoked. The consent view is refreshed before every decision, so
a revocation holds from the next request; every decision comes back as a record to log."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from medtwin.access._roles import Permission, Role, allows
from medtwin.errors import ChainError, InvalidInputError
from medtwin.ledger import ConsentView


@dataclass(frozen=True)
class Caller:
    """Who asks: a name for the audit trail, a role, and the chain address consent is
    granted to (None: the caller has none on record)."""

    name: str
    role: Role
    address: str | None


@dataclass(frozen=True)
class AccessDecision:
    """One access decision, for the audit log: when (unix s), who, which twin (pseudonymous
    id), for what purpose, the answer and why."""

    at_s: float
    caller: str
    role: str
    address: str | None
    patient_id: str
    purpose: str
    allowed: bool
    reason: str

    def to_record(self) -> dict[str, object]:
        """The decision as a flat dict, ready for a structured log line."""
        return asdict(self)


class ConsentPolicy:
    """Decides twin reads from role and on-chain consent; fails closed when the chain cannot
    be read. `audit` (if given) receives every decision, a request's decisions at once."""

    def __init__(self, view: ConsentView, clock: Callable[[], float] = time.time,
                 audit: Callable[[Sequence[AccessDecision]], object] | None = None) -> None:
        self.view = view
        self.clock = clock
        self.audit = audit

    def decide(self, caller: Caller, patient_id: str, purpose: str) -> AccessDecision:
        """May `caller` read the twin of `patient_id` for `purpose` now?"""
        return self.decide_many(caller, [patient_id], purpose)[0]

    def decide_many(self, caller: Caller, patient_ids: Sequence[str], purpose: str,
                    audit: bool = True) -> list[AccessDecision]:
        """One decision per patient, from one refresh of the consent view (a list read costs
        one chain round trip, not one per patient); passed to the audit hook unless `audit`
        is false (the caller then logs them itself)."""
        now_s = self.clock()
        failure = self._refresh(caller)
        decisions = [AccessDecision(now_s, caller.name, caller.role.value, caller.address,
                                    patient_id, purpose,
                                    *(failure or self._answer(caller, patient_id, purpose,
                                                              now_s)))
                     for patient_id in patient_ids]
        if audit and self.audit is not None and decisions:
            self.audit(decisions)
        return decisions

    def _refresh(self, caller: Caller) -> tuple[bool, str] | None:
        """Refresh the view for a caller who may read twins at all; else why not."""
        if not allows(caller.role, Permission.READ_TWIN):
            return False, f"role {caller.role.value} may not read twins"
        if caller.address is None:
            return False, "no chain address on record for this caller"
        try:
            self.view.refresh()
        except ChainError as exc:
            return False, f"consent state unavailable ({exc})"
        return None

    def _answer(self, caller: Caller, patient_id: str, purpose: str,
                now_s: float) -> tuple[bool, str]:
        assert caller.address is not None  # _refresh refused a caller without one
        try:
            consent = self.view.decide(patient_id, caller.address, purpose, now_s)
        except ChainError as exc:
            return False, f"consent state unavailable ({exc})"
        except InvalidInputError as exc:
            return False, f"invalid request: {exc}"
        return consent.allowed, consent.reason
