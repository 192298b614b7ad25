"""The tamper-evident record: an RFC 9162 Merkle log, leaves, proofs and signed tree heads."""

from medtwin.ledger._checkpoint import (
    SignedTreeHead,
    checkpoint_body,
    sign_tree_head,
    verify_tree_head,
)
from medtwin.ledger._leaves import leaf_data
from medtwin.ledger._merkle import (
    EMPTY_ROOT,
    MerkleTree,
    leaf_hash,
    node_hash,
    root_from_leaf_hashes,
)
from medtwin.ledger._proofs import (
    consistency_proof,
    inclusion_proof,
    verify_consistency,
    verify_inclusion,
)

__all__ = [
    "EMPTY_ROOT",
    "MerkleTree",
    "SignedTreeHead",
    "checkpoint_body",
    "consistency_proof",
    "inclusion_proof",
    "leaf_data",
    "leaf_hash",
    "node_hash",
    "root_from_leaf_hashes",
    "sign_tree_head",
    "verify_consistency",
    "verify_inclusion",
    "verify_tree_head",
]
