"""Anchoring in the background: every `Settings.anchor_interval_s`, the latest checkpoint (if
the log grew) goes to the chain in one transaction, and the site indexes the receipt.

A reading's path never touches the chain: the anchorer reads the signed head from the store
on its own thread and holds no lock the pipeline takes, so a slow or unreachable chain only
delays anchors (reported by `status`), never ingestion. The chain's account key lives in
the keys directory (`chain.key`); on a JSON-RPC chain the log's contract is deployed once
and remembered in the store, on the embedded chain a new one is deployed per process."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from medtwin.config import Settings
from medtwin.crypto import load_or_create_secret
from medtwin.errors import ChainError, ConfigError, MedtwinError, VerificationError
from medtwin.ledger import (
    AnchorContract,
    Chain,
    NoteVerifier,
    checkpoint_body,
    connect_chain,
    note_hash,
    signature_line_key,
    verify_cosignature,
)
from medtwin.pipeline._pipeline import Pipeline
from medtwin.pipeline._verify import CheckpointClaim
from medtwin.store import AnchorRecord, Store

log = logging.getLogger("medtwin.anchoring")


class _Deployed(Protocol):
    """A contract handle: where it lives."""

    @property
    def address(self) -> str: ...


_C = TypeVar("_C", bound=_Deployed)

CHAIN_KEY_FILE = "chain.key"


@dataclass(frozen=True, slots=True)
class AnchorStatus:
    """What the anchorer has done: anchors made, the last size anchored, the last error."""

    anchors: int
    last_size: int
    last_error: str | None
    chain_id: int
    contract: str
    embedded: bool


def site_chain(pipeline: Pipeline) -> Chain:
    """The chain of the site's settings (`chain_url`; the embedded chain if unset), signed for
    with the site's chain key (`keys/chain.key`, created on first use). One per process: the
    anchorer and the consent registry share it (an embedded chain lives in its object)."""
    settings = pipeline.settings
    key = load_or_create_secret(settings.resolved_keys_dir / CHAIN_KEY_FILE,
                                "secp256k1 chain account")
    return connect_chain(settings.chain_url, key)


def site_contract(pipeline: Pipeline, chain: Chain, name: str,
                  attach: Callable[[str, int], _C], deploy: Callable[[], _C]) -> _C:
    """The site's contract `name` on `chain`: attached where the store remembers one (a
    network chain; `attach(address, block)` gets the block its events start after), else
    deployed and, on a network chain, remembered with the chain's latest block before the
    deployment, so a later attach does not read the chain's whole history. The embedded
    chain is new in each process, so its contracts are too."""
    store = pipeline.store
    address = None if chain.embedded else store.chain_contract(chain.chain_id, name)
    if address is not None:
        return attach(address, store.chain_contract_block(chain.chain_id, name))
    before = chain.block_number()
    contract = deploy()
    if not chain.embedded:
        store.put_chain_contract(chain.chain_id, name, contract.address, pipeline.clock(),
                                 before)
    return contract


class Anchorer:
    """Anchors one site's checkpoints on one chain."""

    def __init__(self, pipeline: Pipeline, chain: Chain, contract: AnchorContract,
                 interval_s: float) -> None:
        if interval_s <= 0:
            raise ConfigError("config: the anchor interval must be a positive number of "
                              "seconds (0 turns anchoring off)")
        self.pipeline = pipeline
        self.chain = chain
        self.contract = contract
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._anchors = 0
        self._last_size = contract.latest_size() if contract.count() else -1
        self._last_error: str | None = None

    @classmethod
    def open(cls, pipeline: Pipeline, chain: Chain | None = None) -> Anchorer | None:
        """The site's anchorer from its settings (None if `anchor_interval_s` is 0): on
        `chain` (default: `site_chain`), attached to the log's contract or deploying it."""
        settings = pipeline.settings
        if settings.anchor_interval_s == 0:
            return None
        if settings.anchor_interval_s < 0:
            raise ConfigError("config: the anchor interval must be a positive number of "
                              "seconds (0 turns anchoring off)")
        chain = chain if chain is not None else site_chain(pipeline)
        origin = settings.log_origin
        contract = site_contract(pipeline, chain, f"anchor {origin}",
                                 lambda address, _block: AnchorContract.attach(chain, address,
                                                                               origin),
                                 lambda: AnchorContract.deploy(chain, origin))
        return cls(pipeline, chain, contract, settings.anchor_interval_s)

    def anchor_once(self) -> AnchorRecord | None:
        """Anchor the latest checkpoint if the log grew since the last anchor; the index
        record, or None if there was nothing new."""
        with self._lock:
            latest = self.pipeline.checkpoint_note()
            if latest is None or latest[0].size <= self._last_size:
                return None
            head, note = latest
            receipt = self.contract.anchor(head.size, head.root, note_hash(note))
            # on the chain now: never anchor this size again, even if indexing it fails
            self._last_size = head.size
            self._anchors += 1
            record = AnchorRecord(receipt.chain_id, receipt.contract, head.size, head.root,
                                  receipt.note_hash, receipt.tx_hash, receipt.block_number,
                                  self.chain.embedded, self.pipeline.clock())
            self.pipeline.store.put_anchor(record)
            return record

    def status(self) -> AnchorStatus:
        return AnchorStatus(self._anchors, self._last_size, self._last_error,
                            self.chain.chain_id, self.contract.address, self.chain.embedded)

    def start(self) -> None:
        """Anchor every `interval_s` on a daemon thread until `stop`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="medtwin-anchorer",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, after a last anchor of what was logged until now."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join()
        self._try_anchor()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._try_anchor()

    def _try_anchor(self) -> None:
        try:
            self.anchor_once()
            self._last_error = None
        except Exception as exc:  # the chain, the store, the network: try again next time
            self._last_error = (str(exc) if isinstance(exc, MedtwinError)
                                else f"{type(exc).__name__}")
            log.warning("anchoring failed, will retry: %s", self._last_error)



@dataclass(frozen=True, slots=True)
class Claims:
    """The checkpoints others hold, for `verify_store`, and what could be checked."""

    claims: tuple[CheckpointClaim, ...]
    anchors_indexed: int
    anchors_on_chain: int
    anchors_unreachable: int
    #: Stored witness cosignatures, each one's root held to the log.
    cosignatures: int
    #: Of those, the ones by a witness key no longer in `Settings.witnesses` (a witness
    #: removed, or re-registered with another key or suite): their signatures are not
    #: checked, and they do not count as valid cosignatures.
    cosignatures_unverified: int


def checkpoint_claims(store: Store, settings: Settings, chain: Chain | None,
                      contracts: Sequence[str] = ()) -> Claims:
    """Every anchor in the site's index, every anchor on `chain` of this log's contracts
    (those the index names, the one the store remembers for that chain, and `contracts`;
    each index entry must be there, with the same root and note hash), and every stored
    witness cosignature (its signature checked when the witness key that made it is still
    configured: same name and key ID; else counted as unverified). Anchors on
    a chain that cannot be read here (an embedded chain of another process) count as
    unreachable: the index still binds the log to them."""
    claims: list[CheckpointClaim] = []
    indexed = store.anchors()
    claims += [CheckpointClaim(a.size, a.root, f"the anchor of size {a.size} in the site's "
                               f"index (tx {a.tx_hash})") for a in indexed]
    on_chain = unreachable = 0
    known = {(a.chain_id, a.contract) for a in indexed}
    if chain is not None:
        remembered = store.chain_contract(chain.chain_id, f"anchor {settings.log_origin}")
        extra = [*contracts, *([remembered] if remembered else [])]
        known |= {(chain.chain_id, address) for address in extra}
    for chain_id, address in sorted(known):
        mine = [a for a in indexed if (a.chain_id, a.contract) == (chain_id, address)]
        if chain is None or chain.chain_id != chain_id:
            unreachable += len(mine)
            continue
        try:
            contract = AnchorContract.attach(chain, address, settings.log_origin)
        except ChainError as exc:
            if all(a.embedded for a in mine):
                unreachable += len(mine)
                continue
            raise VerificationError(f"chain: the anchor contract {address} the index names "
                                    f"cannot be read on chain {chain_id}: {exc}",
                                    f"contract {address}") from exc
        held = {}
        for size in contract.sizes():
            anchored = contract.anchored(size)
            if anchored is None:
                continue
            held[size] = anchored
            claims.append(CheckpointClaim(size, anchored.root, f"the anchor of size {size} "
                                          f"on chain {chain_id} ({address})"))
        for a in mine:
            found = held.get(a.size)
            if found is None or (found.root, found.note_hash) != (a.root, a.note_hash):
                raise VerificationError(
                    f"chain: the index records an anchor of size {a.size} (tx {a.tx_hash}) "
                    f"that contract {address} does not hold as recorded: the index or the "
                    "chain was altered", f"anchor {a.size}")
        on_chain += len(held)
    # Matched by key name and key ID, not by name alone: a witness re-registered under its
    # name with another key or suite did not make the cosignatures its old key made.
    verifiers = (NoteVerifier(w.name, w.suite, w.public_key, cosigner=True)
                 for w in settings.witnesses)
    witnesses = {(v.name, v.key_id): v for v in verifiers}
    cosigned = unverified = 0
    for origin, size, root, witness, line in store.all_cosignatures():
        key = signature_line_key(line)
        if key[0] != witness:
            raise VerificationError(
                f"checkpoint: a cosignature stored as {witness}'s is signed as {key[0]}'s: "
                "the cosignature table was altered", f"{witness}'s cosignature of size {size}")
        verifier = witnesses.get(key)
        if verifier is None:
            unverified += 1
        else:
            verify_cosignature(checkpoint_body(origin, size, root), line, verifier)
        cosigned += 1
        claims.append(CheckpointClaim(size, root, f"{witness}'s cosignature of size {size}"))
    return Claims(tuple(claims), len(indexed), on_chain, unreachable, cosigned, unverified)
