"""The tamper-evident record: an RFC 9162 Merkle log, leaves, proofs, signed tree heads and
their anchors on an EVM chain."""

from medtwin.ledger._address_proof import binding_message, check_binding
from medtwin.ledger._anchor import (
    AnchorContract,
    Anchored,
    AnchorReceipt,
    note_hash,
    origin_hash,
)
from medtwin.ledger._checkpoint import (
    SignedTreeHead,
    checkpoint_body,
    sign_tree_head,
    verify_tree_head,
)
from medtwin.ledger._consent import (
    ConsentDecision,
    ConsentEvent,
    ConsentRegistry,
    ConsentView,
    Purpose,
    token_id_for,
    with_key,
)
from medtwin.ledger._evm import Artifact, Chain, compile_contract, load_artifact
from medtwin.ledger._evm import connect as connect_chain
from medtwin.ledger._leaves import LoggedRecord, leaf_data, record_leaf_hash
from medtwin.ledger._merkle import (
    EMPTY_ROOT,
    MerkleTree,
    leaf_hash,
    node_hash,
    root_from_leaf_hashes,
)
from medtwin.ledger._note import (
    Checkpoint,
    NoteSigner,
    NoteVerifier,
    cosign_checkpoint,
    open_checkpoint_note,
    sign_checkpoint_note,
    signature_line_key,
    verify_cosignature,
)
from medtwin.ledger._proofs import (
    consistency_proof,
    consistency_proof_from,
    inclusion_proof,
    inclusion_proof_from,
    verify_consistency,
    verify_inclusion,
)
from medtwin.ledger._tiles import TileIndex
from medtwin.ledger._witness import (
    WitnessState,
    WitnessStep,
    cosignature_key_name,
    log_key_leaf_hash,
    witness_step,
)

__all__ = [
    "EMPTY_ROOT",
    "AnchorContract",
    "AnchorReceipt",
    "Anchored",
    "Artifact",
    "Chain",
    "Checkpoint",
    "ConsentDecision",
    "ConsentEvent",
    "ConsentRegistry",
    "ConsentView",
    "LoggedRecord",
    "MerkleTree",
    "NoteSigner",
    "NoteVerifier",
    "Purpose",
    "SignedTreeHead",
    "TileIndex",
    "WitnessState",
    "WitnessStep",
    "binding_message",
    "check_binding",
    "checkpoint_body",
    "compile_contract",
    "connect_chain",
    "consistency_proof",
    "consistency_proof_from",
    "cosign_checkpoint",
    "cosignature_key_name",
    "inclusion_proof",
    "inclusion_proof_from",
    "leaf_data",
    "leaf_hash",
    "load_artifact",
    "log_key_leaf_hash",
    "node_hash",
    "note_hash",
    "open_checkpoint_note",
    "origin_hash",
    "record_leaf_hash",
    "root_from_leaf_hashes",
    "sign_checkpoint_note",
    "sign_tree_head",
    "signature_line_key",
    "token_id_for",
    "verify_consistency",
    "verify_cosignature",
    "verify_inclusion",
    "verify_tree_head",
    "with_key",
    "witness_step",
]
