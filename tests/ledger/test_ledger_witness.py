"""The witness's pure core: trust on first checkpoint, growth by a good consistency proof, and
refusal of forged proofs, rollbacks, split views and checkpoints signed by another key."""

from __future__ import annotations

import base64
import hashlib

import pytest
from tests.conftest import key_pair

from medtwin.errors import SplitViewError, VerificationError
from medtwin.ledger import (
    EMPTY_ROOT,
    MerkleTree,
    NoteSigner,
    WitnessState,
    WitnessStep,
    checkpoint_body,
    consistency_proof,
    cosignature_key_name,
    sign_checkpoint_note,
    verify_cosignature,
    witness_step,
)
from medtwin.ledger import leaf_hash as merkle_leaf_hash

ORIGIN = "hospital.example/log"
NOW_S = 1_767_225_600
LOG = NoteSigner(ORIGIN, "ed25519", *key_pair("log key"))
OTHER_LOG = NoteSigner(ORIGIN, "ed25519", *key_pair("another log key"))
WITNESS = NoteSigner("witness.example/w1", "ed25519", *key_pair("witness key"))
LEAVES = [merkle_leaf_hash(hashlib.sha256(str(i).encode()).digest()) for i in range(20)]


def _root(size: int, leaves: list[bytes] = LEAVES) -> bytes:
    return MerkleTree(leaves[:size]).root()


def _note(size: int, signer: NoteSigner = LOG, leaves: list[bytes] = LEAVES) -> str:
    return sign_checkpoint_note(ORIGIN, size, _root(size, leaves), [signer])


def _step(state: WitnessState, note: str, proof: list[bytes] | None = None,
          log: NoteSigner = LOG) -> WitnessStep:
    return witness_step(state, note, proof or [], log.verifier(), WITNESS, NOW_S)


def test_first_checkpoint_is_cosigned_and_remembered() -> None:
    step = _step(WitnessState(ORIGIN), _note(7))
    assert step.state == WitnessState(ORIGIN, 7, _root(7))
    assert step.checkpoint.size == 7
    body = checkpoint_body(ORIGIN, 7, _root(7))
    witness = WITNESS.verifier(cosigner=True)
    assert verify_cosignature(body, step.cosignature, witness) == NOW_S
    assert cosignature_key_name(step.cosignature) == WITNESS.name


def test_growth_with_a_good_proof_is_cosigned() -> None:
    state = _step(WitnessState(ORIGIN), _note(7)).state
    step = _step(state, _note(13), consistency_proof(LEAVES, 7, 13))
    assert step.state == WitnessState(ORIGIN, 13, _root(13))


def test_the_same_checkpoint_again_is_cosigned_again() -> None:
    state = WitnessState(ORIGIN, 7, _root(7))
    assert _step(state, _note(7)).state == state


def test_a_forged_proof_is_a_split_view_naming_both_roots() -> None:
    state = WitnessState(ORIGIN, 7, _root(7))
    proof = consistency_proof(LEAVES, 7, 13)
    proof[0] = bytes(32)
    old, new = base64.b64encode(_root(7)).decode(), base64.b64encode(_root(13)).decode()
    with pytest.raises(SplitViewError, match="not consistent") as caught:
        _step(state, _note(13), proof)
    assert old in str(caught.value) and new in str(caught.value)


def test_a_rewritten_history_is_a_split_view_even_with_its_own_proof() -> None:
    forked = [*LEAVES[:5], bytes(32), *LEAVES[6:]]
    state = WitnessState(ORIGIN, 7, _root(7))
    with pytest.raises(SplitViewError, match="split view"):
        _step(state, _note(13, leaves=forked), consistency_proof(forked, 7, 13))


def test_a_rolled_back_size_is_refused() -> None:
    state = WitnessState(ORIGIN, 13, _root(13))
    with pytest.raises(SplitViewError, match="rolled back to size 7"):
        _step(state, _note(7))


def test_same_size_different_root_is_a_split_view_naming_both_roots() -> None:
    forked = [*LEAVES[:6], bytes(32), *LEAVES[7:]]
    state = WitnessState(ORIGIN, 7, _root(7))
    seen, shown = base64.b64encode(_root(7)).decode(), base64.b64encode(_root(7, forked)).decode()
    with pytest.raises(SplitViewError, match="split view") as caught:
        _step(state, _note(7, leaves=forked))
    assert f"cosigned size 7 root {seen}" in str(caught.value)
    assert f"shows size 7 root {shown}" in str(caught.value)


def test_a_checkpoint_signed_by_another_key_is_refused_not_cosigned() -> None:
    with pytest.raises(VerificationError, match="not signed by the pinned log key") as caught:
        _step(WitnessState(ORIGIN), _note(7, signer=OTHER_LOG))
    assert not isinstance(caught.value, SplitViewError)


def test_a_checkpoint_of_another_log_is_refused() -> None:
    other = NoteSigner("elsewhere.example/log", "ed25519", LOG.private_key, LOG.public_key)
    note = sign_checkpoint_note(other.name, 3, _root(3), [other])
    with pytest.raises(VerificationError, match=r"follows 'hospital\.example/log'"):
        witness_step(WitnessState(ORIGIN), note, [], other.verifier(), WITNESS, NOW_S)


def test_a_fresh_state_is_the_empty_tree() -> None:
    assert WitnessState(ORIGIN) == WitnessState(ORIGIN, 0, EMPTY_ROOT)


def test_a_malformed_cosignature_line_is_refused() -> None:
    with pytest.raises(VerificationError, match="cosignature line"):
        cosignature_key_name("witness AAAA\n")


def test_a_malformed_proof_is_refused_but_is_no_split_view() -> None:
    state = WitnessState(ORIGIN, 7, _root(7))
    proof = consistency_proof(LEAVES, 7, 13)
    proof[0] = proof[0][:31]
    with pytest.raises(VerificationError, match="malformed") as caught:
        _step(state, _note(13), proof)
    assert not isinstance(caught.value, SplitViewError)
