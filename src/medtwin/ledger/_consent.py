"""Consent on the chain: one ownership token per patient twin (the `Consent` contract), the
grants its owner gives and revokes, and a view of them kept from the contract's events.

A token id is HMAC-SHA-256(site token key, tag ‖ pseudonymous patient id) read as a uint256:
the chain never sees a patient id, and nobody without the site's key can link a token to one.
A purpose is a short lowercase word ("treatment", "research") left-aligned in a bytes32.

The view reads the events of the blocks since its last refresh. On the embedded chain it reads
each block's receipts from py-evm directly: eth-tester finds a receipt by scanning back from
the head, so its `get_logs` costs grow with the square of the range (400 blocks: 16 s). On a
JSON-RPC chain it asks `eth_getLogs` for bounded ranges."""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from medtwin.errors import ChainError, InvalidInputError, NotFoundError
from medtwin.ledger._evm import Chain, fund_account, load_artifact

#: Domain tag of token ids, versioned: a new derivation gets a new tag.
TOKEN_ID_TAG = b"medtwin-consent-token-v1\x00"
#: Shortest site token key accepted (bytes): shorter keys make token ids guessable.
MIN_TOKEN_KEY_BYTES = 16
#: Most blocks one `eth_getLogs` call covers: nodes refuse larger ranges, and it bounds work.
MAX_LOG_RANGE = 1000
#: A purpose: lowercase ASCII, 1 to 32 characters, so it fits (readably) in a bytes32.
PURPOSE_PATTERN = re.compile(r"[a-z][a-z0-9-]{0,31}")

_EVENT_SIGNATURES = {
    "transfer": "Transfer(address,address,uint256)",
    "granted": "Granted(uint256,address,bytes32,uint256)",
    "revoked": "Revoked(uint256,address,bytes32)",
}


class Purpose(enum.StrEnum):
    """The purposes medtwin asks consent for; any word matching `PURPOSE_PATTERN` works."""

    TREATMENT = "treatment"
    RESEARCH = "research"


@dataclass(frozen=True)
class ConsentEvent:
    """One change of consent: a token's transfer (`party` is the new owner), a grant or a
    revocation (`party` is the grantee)."""

    kind: str
    block: int
    token_id: int
    party: str
    purpose: str = ""
    expires_at_s: int = 0


@dataclass(frozen=True)
class ConsentDecision:
    """Whether consent allows an access now, and why (no patient values in `reason`)."""

    allowed: bool
    reason: str


def token_id_for(patient_id: str, token_key: bytes) -> int:
    """The token id of a patient's twin under the site's token key."""
    if not patient_id:
        raise InvalidInputError("consent: the patient id is empty")
    _check_token_key(token_key)
    mac = hmac.new(token_key, TOKEN_ID_TAG + patient_id.encode("utf-8"), hashlib.sha256)
    return int.from_bytes(mac.digest(), "big")


def purpose_word(purpose: str) -> bytes:
    """A purpose as the contract's bytes32 (ASCII, zero-padded on the right)."""
    if not PURPOSE_PATTERN.fullmatch(purpose):
        raise InvalidInputError(f"consent: purpose {purpose!r} must be 1-32 characters of "
                                "a-z, 0-9 and '-', starting with a letter")
    return purpose.encode("ascii").ljust(32, b"\x00")


def with_key(chain: Chain, private_key: bytes) -> Chain:
    """The same chain, sending from another key (a patient's wallet); on the embedded chain
    the new key is funded so it can pay for gas."""
    from eth_account import Account

    other = Chain(chain.w3, Account.from_key(private_key), chain.url)
    if other.embedded:
        fund_account(other)
    return other


class ConsentRegistry:
    """The site's handle on a deployed `Consent` contract: mints twins' tokens (as the
    registrar), sends owners' grants and revocations, and reads consent events."""

    def __init__(self, chain: Chain, address: str, token_key: bytes,
                 from_block: int = 0) -> None:
        _check_token_key(token_key)
        self.chain = chain
        self.artifact = load_artifact("Consent")
        self.contract = chain.contract(self.artifact, address)
        self.address = str(self.contract.address)
        self.from_block = from_block
        self._token_key = token_key
        self._topics = _event_topics()

    @classmethod
    def deploy(cls, chain: Chain, token_key: bytes) -> ConsentRegistry:
        """Deploy a new `Consent` contract; `chain`'s key becomes its registrar."""
        address = chain.deploy(load_artifact("Consent"))
        return cls(chain, address, token_key, from_block=chain.block_number())

    @classmethod
    def attach(cls, chain: Chain, address: str, token_key: bytes,
               from_block: int = 0) -> ConsentRegistry:
        """The contract already at `address`; events are read from `from_block` (its
        deployment block saves reading the chain's whole history)."""
        return cls(chain, address, token_key, from_block)

    def token_id_for(self, patient_id: str) -> int:
        """The token id of a patient's twin."""
        return token_id_for(patient_id, self._token_key)

    def mint_twin(self, patient_id: str, owner_address: str) -> int:
        """Mint the twin's token to the patient's address; its token id."""
        token_id = self.token_id_for(patient_id)
        call = self.contract.functions.mint(self._address(owner_address), token_id)
        self._send(self.chain, call, "mint")
        return token_id

    def owner_of(self, patient_id: str) -> str:
        """The address holding the twin's token (checksummed)."""
        token_id = self.token_id_for(patient_id)
        try:
            return str(self.contract.functions.ownerOf(token_id).call())
        except Exception as exc:  # web3 raises many kinds for a reverted call
            raise NotFoundError("consent: this twin has no consent token; mint it with "
                                "mint_twin first") from exc

    def is_granted(self, patient_id: str, grantee: str, purpose: str) -> bool:
        """Whether the chain itself (at its latest block time) grants the access."""
        call = self.contract.functions.is_granted(
            self.token_id_for(patient_id), self._address(grantee), purpose_word(purpose))
        return bool(call.call())

    def grant(self, owner: Chain, patient_id: str, grantee: str, purpose: str,
              expires_at_s: int) -> None:
        """Grant `grantee` access for `purpose` until `expires_at_s` (unix s, exclusive),
        sent from the token owner's chain (see `with_key`)."""
        call = self._bound(owner).functions.grant(
            self.token_id_for(patient_id), self._address(grantee), purpose_word(purpose),
            int(expires_at_s))
        self._send(owner, call, "grant")

    def revoke(self, owner: Chain, patient_id: str, grantee: str, purpose: str) -> None:
        """Withdraw a grant, sent from the token owner's chain."""
        call = self._bound(owner).functions.revoke(
            self.token_id_for(patient_id), self._address(grantee), purpose_word(purpose))
        self._send(owner, call, "revoke")

    def transfer(self, owner: Chain, patient_id: str, new_owner: str) -> None:
        """Move the twin's token to another address, sent from the current owner's chain."""
        call = self._bound(owner).functions.transferFrom(
            owner.address, self._address(new_owner), self.token_id_for(patient_id))
        self._send(owner, call, "transfer")

    def events(self, first_block: int, last_block: int) -> list[ConsentEvent]:
        """The contract's consent events in blocks `first_block`..`last_block`, in order."""
        raw = _embedded_logs(self.chain, self.address, first_block, last_block)
        if raw is None:
            raw = self._rpc_logs(first_block, last_block)
        events = (self._decode(block, topics, data) for block, topics, data in raw)
        return [event for event in events if event is not None]

    def _rpc_logs(self, first: int, last: int) -> list[tuple[int, list[bytes], bytes]]:
        out: list[tuple[int, list[bytes], bytes]] = []
        for start in range(first, last + 1, MAX_LOG_RANGE):
            end = min(start + MAX_LOG_RANGE - 1, last)
            try:
                logs = self.chain.w3.eth.get_logs(
                    {"address": self.address, "fromBlock": start, "toBlock": end})
            except Exception as exc:  # web3 and the node raise many kinds
                raise ChainError(f"consent: cannot read events of blocks {start}-{end}: "
                                 f"{type(exc).__name__}") from exc
            out.extend((int(log["blockNumber"]), [bytes(t) for t in log["topics"]],
                        bytes(log["data"])) for log in logs)
        return out

    def _decode(self, block: int, topics: list[bytes], data: bytes) -> ConsentEvent | None:
        kind = self._topics.get(topics[0]) if topics else None
        if kind == "transfer":
            return ConsentEvent(kind, block, _uint(topics[3]), self._word_address(topics[2]))
        if kind in ("granted", "revoked"):
            return ConsentEvent(kind, block, _uint(topics[1]), self._word_address(topics[2]),
                                _purpose_text(topics[3]),
                                _uint(data[:32]) if kind == "granted" else 0)
        return None

    def _bound(self, owner: Chain) -> Any:
        return owner.w3.eth.contract(address=self.address, abi=self.artifact.abi)

    def _address(self, address: str) -> str:
        try:
            return str(self.chain.w3.to_checksum_address(address))
        except ValueError as exc:
            raise InvalidInputError(f"consent: {address!r} is not an Ethereum address") \
                from exc

    def _word_address(self, word: bytes) -> str:
        return str(self.chain.w3.to_checksum_address(word[-20:]))

    @staticmethod
    def _send(sender: Chain, call: Any, action: str) -> None:
        try:
            sender.send(call)
        except ChainError as exc:
            raise ChainError(f"consent: {action} sent from {sender.address} refused: {exc}") \
                from exc


class ConsentView:
    """The consent state of one contract, cached from its events: `refresh` applies the
    changes since the last refresh, `decide` answers from the cache. Safe across threads."""

    def __init__(self, registry: ConsentRegistry) -> None:
        self.registry = registry
        self.last_block = registry.from_block - 1
        self._owners: dict[int, str] = {}
        self._grants: dict[tuple[int, str, str], ConsentEvent] = {}
        self._lock = threading.Lock()

    def refresh(self) -> int:
        """Read the events of the blocks since the last refresh; how many were applied."""
        with self._lock:
            try:
                head = self.registry.chain.block_number()
            except Exception as exc:  # web3 and the node raise many kinds
                raise ChainError(f"consent: cannot read the chain's latest block: "
                                 f"{type(exc).__name__}") from exc
            if head <= self.last_block:
                return 0
            events = self.registry.events(self.last_block + 1, head)
            for event in events:
                self._apply(event)
            self.last_block = head
            return len(events)

    def owner(self, patient_id: str) -> str | None:
        """The twin's token owner as last seen, or None before it is minted."""
        with self._lock:
            return self._owners.get(self.registry.token_id_for(patient_id))

    def decide(self, patient_id: str, grantee: str, purpose: str,
               now_s: float) -> ConsentDecision:
        """Whether the cached consent lets `grantee` access the twin for `purpose` at
        `now_s` (unix s); refresh first for the chain's latest state."""
        token_id = self.registry.token_id_for(patient_id)
        purpose_word(purpose)
        key = (token_id, self.registry._address(grantee).lower(), purpose)
        with self._lock:
            if token_id not in self._owners:
                return ConsentDecision(False, "no consent token for this twin")
            grant = self._grants.get(key)
        if grant is None:
            return ConsentDecision(False, f"no grant for {purpose}")
        if grant.kind == "revoked":
            return ConsentDecision(False, f"revoked (block {grant.block})")
        if now_s >= grant.expires_at_s:
            return ConsentDecision(False, f"expired at {_iso(grant.expires_at_s)}")
        return ConsentDecision(True, f"granted until {_iso(grant.expires_at_s)}")

    def _apply(self, event: ConsentEvent) -> None:
        if event.kind == "transfer":
            self._owners[event.token_id] = event.party
        else:
            self._grants[(event.token_id, event.party.lower(), event.purpose)] = event


def _embedded_logs(chain: Chain, address: str, first: int,
                   last: int) -> list[tuple[int, list[bytes], bytes]] | None:
    """Logs of `address` read from py-evm's receipts (linear in the range), or None when the
    chain is not eth-tester on py-evm."""
    tester = getattr(chain.w3.provider, "ethereum_tester", None)
    evm = getattr(getattr(tester, "backend", None), "chain", None)
    if not chain.embedded or evm is None:
        return None
    want = bytes.fromhex(address.removeprefix("0x"))
    out: list[tuple[int, list[bytes], bytes]] = []
    for number in range(max(first, 0), last + 1):
        block = evm.get_canonical_block_by_number(number)
        for receipt in block.get_receipts(evm.chaindb):
            out.extend((number, [t.to_bytes(32, "big") for t in log.topics], bytes(log.data))
                       for log in receipt.logs if bytes(log.address) == want)
    return out


def _event_topics() -> dict[bytes, str]:
    from eth_utils.crypto import keccak

    return {keccak(text=signature): kind for kind, signature in _EVENT_SIGNATURES.items()}


def _check_token_key(token_key: bytes) -> None:
    if len(token_key) < MIN_TOKEN_KEY_BYTES:
        raise InvalidInputError(f"consent: the token key must be at least "
                                f"{MIN_TOKEN_KEY_BYTES} random bytes; generate one with "
                                "secrets.token_bytes(32) and keep it with the site's keys")


def _uint(word: bytes) -> int:
    return int.from_bytes(word, "big")


def _purpose_text(word: bytes) -> str:
    text = word.rstrip(b"\x00")
    try:
        return text.decode("ascii")
    except UnicodeDecodeError:
        return "0x" + word.hex()


def _iso(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
