"""The Merkle log agrees with RFC 9162 (checked against an independent naive reference and the
Certificate Transparency test vector); signed tree heads verify and resist tampering."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medtwin.crypto import LogSigningKey, signature_suite
from medtwin.errors import VerificationError
from medtwin.ledger import (
    EMPTY_ROOT,
    MerkleTree,
    SignedTreeHead,
    checkpoint_body,
    leaf_data,
    leaf_hash,
    node_hash,
    root_from_leaf_hashes,
    sign_tree_head,
    verify_tree_head,
)


def naive_mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 Merkle Tree Hash over leaf *data*, written straight from the text."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < n:  # the largest power of two smaller than n
        k *= 2
    return hashlib.sha256(b"\x01" + naive_mth(leaves[:k]) + naive_mth(leaves[k:])).digest()


# RFC 6962 / RFC 9162 test tree, as used by Certificate Transparency implementations.
CT_LEAVES = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
    "606162636465666768696a6b6c6d6e6f")]
CT_ROOT_8 = "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"


def test_naive_reference_reproduces_the_ct_vector() -> None:
    assert naive_mth(CT_LEAVES).hex() == CT_ROOT_8


def test_tree_root_of_the_ct_vector() -> None:
    tree = MerkleTree()
    for i, data in enumerate(CT_LEAVES):
        assert tree.append(data) == i
    assert tree.size == 8
    assert tree.root().hex() == CT_ROOT_8
    assert root_from_leaf_hashes([leaf_hash(d) for d in CT_LEAVES]).hex() == CT_ROOT_8


def test_tree_roots_of_every_ct_prefix_match_the_reference() -> None:
    tree = MerkleTree()
    for n, data in enumerate(CT_LEAVES, start=1):
        tree.append(data)
        assert tree.root() == naive_mth(CT_LEAVES[:n])


def test_empty_tree() -> None:
    assert hashlib.sha256(b"").digest() == EMPTY_ROOT
    assert MerkleTree().root() == EMPTY_ROOT
    assert MerkleTree().size == 0
    assert root_from_leaf_hashes([]) == EMPTY_ROOT


def test_hash_domain_separation() -> None:
    assert leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    left, right = b"L" * 32, b"R" * 32
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(max_size=8), max_size=300))
def test_append_matches_both_references(leaves: list[bytes]) -> None:
    tree = MerkleTree()
    for data in leaves:
        tree.append(data)
    hashes = [leaf_hash(d) for d in leaves]
    assert tree.size == len(leaves)
    assert tree.root() == root_from_leaf_hashes(hashes) == naive_mth(leaves)
    assert MerkleTree(hashes).root() == tree.root()


def test_every_size_up_to_300() -> None:
    leaves = [i.to_bytes(2, "big") for i in range(301)]
    tree = MerkleTree()
    assert tree.root() == naive_mth([])
    for n in range(1, 301):
        tree.append(leaves[n - 1])
        assert tree.root() == naive_mth(leaves[:n]), n


def test_copy_is_independent() -> None:
    tree = MerkleTree(leaf_hash(bytes([i])) for i in range(5))
    twin = tree.copy()
    root5 = tree.root()
    twin.append(b"only in the copy")
    assert (tree.size, tree.root()) == (5, root5)
    assert twin.size == 6 and twin.root() != root5
    tree.append(b"only in the original")
    assert twin.root() == naive_mth([bytes([i]) for i in range(5)] + [b"only in the copy"])


def test_leaf_data_is_unambiguous() -> None:
    assert leaf_data("packet", "12", b"x") != leaf_data("packet1", "2", b"x")
    assert leaf_data("packet", "1", b"x") != leaf_data("alert", "1", b"x")
    assert leaf_data("packet", "1", b"x").endswith(hashlib.sha256(b"x").digest())


# Signed tree heads ---------------------------------------------------------------------------

@pytest.fixture
def log_key() -> LogSigningKey:
    private, public = signature_suite("ed25519").generate()
    return LogSigningKey("log-test", "ed25519", private, public)


def _head(log_key: LogSigningKey) -> SignedTreeHead:
    tree = MerkleTree(leaf_hash(d) for d in CT_LEAVES)
    return sign_tree_head(log_key, "example.org/log", tree.size, tree.root(), 1_000)


def test_signed_tree_head_verifies(log_key: LogSigningKey) -> None:
    head = _head(log_key)
    verify_tree_head(head, log_key.public_key)
    assert head.body() == (b"example.org/log\n8\n"
                           + base64.b64encode(bytes.fromhex(CT_ROOT_8)) + b"\n")
    assert (head.key_id, head.suite, head.size) == ("log-test", "ed25519", 8)


@pytest.mark.parametrize("change", [
    {"root": bytes(32)},
    {"root": bytes.fromhex(CT_ROOT_8)[:-1] + b"\x29"},
    {"size": 7},
    {"size": 9},
    {"origin": "example.org/other"},
])
def test_tampered_head_fails(log_key: LogSigningKey, change: dict[str, object]) -> None:
    tampered = replace(_head(log_key), **change)
    with pytest.raises(VerificationError, match=r"^checkpoint: invalid signature on tree head "
                                                r"of size \d+$") as caught:
        verify_tree_head(tampered, log_key.public_key)
    assert caught.value.record == "tree-head"


def test_head_under_another_key_fails(log_key: LogSigningKey) -> None:
    _, other_public = signature_suite("ed25519").generate()
    with pytest.raises(VerificationError, match="invalid signature"):
        verify_tree_head(_head(log_key), other_public)


@pytest.mark.parametrize("origin", ["", "two\nlines", "x" * 257])
def test_checkpoint_origin_must_be_one_short_line(origin: str) -> None:
    with pytest.raises(ValueError, match="origin must be one non-empty line"):
        checkpoint_body(origin, 0, EMPTY_ROOT)
