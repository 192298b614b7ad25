"""Checkpoints anchored on an EVM chain: the `Anchor` contract (one per log), written to by
the site's chain key and read by anyone. The chain keeps, per anchored tree size, the root
and the hash of the signed checkpoint note; reads go to contract storage, never to event
logs (slow on eth-tester, and an index the site keeps itself is cheaper)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from medtwin.errors import ChainError
from medtwin.ledger._evm import Artifact, Chain, load_artifact

ANCHOR_CONTRACT = "Anchor"
_ZERO = bytes(32)


@dataclass(frozen=True, slots=True)
class Anchored:
    """One checkpoint as the chain holds it."""

    size: int
    root: bytes
    note_hash: bytes
    anchored_at_s: int


@dataclass(frozen=True, slots=True)
class AnchorReceipt:
    """Where a checkpoint was anchored: chain, contract, transaction and block."""

    chain_id: int
    contract: str
    size: int
    root: bytes
    note_hash: bytes
    tx_hash: str
    block_number: int


def origin_hash(origin: str) -> bytes:
    """The contract's name for a log: SHA-256 of its checkpoint origin line."""
    return hashlib.sha256(origin.encode("utf-8")).digest()


def note_hash(note: str) -> bytes:
    """SHA-256 of a signed checkpoint note, as anchored."""
    return hashlib.sha256(note.encode("utf-8")).digest()


class AnchorContract:
    """The anchor contract of one log on one chain."""

    def __init__(self, chain: Chain, contract: Any, artifact: Artifact) -> None:
        self.chain = chain
        self._contract = contract
        self._artifact = artifact

    @classmethod
    def deploy(cls, chain: Chain, origin: str) -> AnchorContract:
        """Deploy a new anchor contract for the log `origin`; the chain's key anchors."""
        artifact = load_artifact(ANCHOR_CONTRACT)
        address = chain.deploy(artifact, origin_hash(origin))
        return cls(chain, chain.contract(artifact, address), artifact)

    @classmethod
    def attach(cls, chain: Chain, address: str, origin: str) -> AnchorContract:
        """The anchor contract at `address`, checked to be medtwin's and to be `origin`'s."""
        artifact = load_artifact(ANCHOR_CONTRACT)
        found = cls(chain, chain.contract(artifact, address), artifact)
        if found._call("origin_hash") != origin_hash(origin):
            raise ChainError(f"chain: the anchor contract at {address} anchors another log "
                             f"than {origin!r}; configure this log's contract")
        return found

    @property
    def address(self) -> str:
        return str(self._contract.address)

    def _call(self, name: str, *args: Any) -> Any:
        try:
            return getattr(self._contract.functions, name)(*args).call()
        except Exception as exc:  # web3 and the node raise many kinds
            raise ChainError(f"chain: reading {name} from the anchor contract failed: "
                             f"{type(exc).__name__}") from exc

    def anchorer(self) -> str:
        """The address allowed to anchor."""
        return str(self._call("anchorer"))

    def anchor(self, size: int, root: bytes, note_digest: bytes) -> AnchorReceipt:
        """Anchor the checkpoint of `size` leaves; sizes must grow (the contract refuses a
        size anchored before, or a smaller one)."""
        receipt = self.chain.send(self._contract.functions.anchor(size, root, note_digest))
        return AnchorReceipt(self.chain.chain_id, self.address, size, root, note_digest,
                             "0x" + bytes(receipt["transactionHash"]).hex(),
                             int(receipt["blockNumber"]))

    def latest_size(self) -> int:
        """The largest size anchored (0 if none or only the empty tree)."""
        return int(self._call("latest_size"))

    def count(self) -> int:
        """How many checkpoints are anchored."""
        return int(self._call("count"))

    def anchored(self, size: int) -> Anchored | None:
        """The checkpoint anchored at `size`, or None."""
        root = bytes(self._call("roots", size))
        if root == _ZERO:
            return None
        return Anchored(size, root, bytes(self._call("note_hashes", size)),
                        int(self._call("anchored_at", size)))

    def sizes(self, start: int = 0) -> list[int]:
        """Anchored sizes in anchoring order, from the `start`-th on."""
        return [int(self._call("sizes", i)) for i in range(start, self.count())]
