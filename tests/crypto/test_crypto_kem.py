"""KEM suites: round trips, fresh randomness, tampering, malformed sizes and the hybrid."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medtwin.crypto import KEM_SUITES, KemSuite, kem_suite
from medtwin.errors import ConfigError, CryptoError

NAMES = sorted(KEM_SUITES)
CIPHERTEXT_SIZES = {"x25519": 32, "ml-kem-768": 1088, "x25519+ml-kem-768": 32 + 1088}
X25519_PART = 32


def _flip(data: bytes, index: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[index] ^= mask
    return bytes(out)


def _secret_or_error(suite: KemSuite, private: bytes, ciphertext: bytes) -> bytes | None:
    """The decapsulated secret, or None where the suite refused with a typed error."""
    try:
        return suite.decapsulate(private, ciphertext)
    except CryptoError:
        return None


@pytest.mark.parametrize("name", NAMES)
def test_round_trip_gives_both_sides_the_same_32_byte_secret(name: str) -> None:
    suite = kem_suite(name)
    private, public = suite.generate()
    secret, ciphertext = suite.encapsulate(public)
    assert len(secret) == 32
    assert len(ciphertext) == CIPHERTEXT_SIZES[name]
    assert suite.decapsulate(private, ciphertext) == secret


@pytest.mark.parametrize("name", NAMES)
def test_each_encapsulation_is_fresh(name: str) -> None:
    suite = kem_suite(name)
    _, public = suite.generate()
    first, second = suite.encapsulate(public), suite.encapsulate(public)
    assert first[0] != second[0]
    assert first[1] != second[1]


@pytest.mark.parametrize("name", NAMES)
def test_a_wrong_private_key_derives_a_different_secret(name: str) -> None:
    suite = kem_suite(name)
    _, public = suite.generate()
    other_private, _ = suite.generate()
    secret, ciphertext = suite.encapsulate(public)
    assert suite.decapsulate(other_private, ciphertext) != secret


@pytest.mark.parametrize("name", NAMES)
def test_a_flipped_ciphertext_byte_changes_the_secret_or_is_refused(name: str) -> None:
    suite = kem_suite(name)
    private, public = suite.generate()
    secret, ciphertext = suite.encapsulate(public)
    for index in (0, len(ciphertext) // 2, len(ciphertext) - 1):
        assert _secret_or_error(suite, private, _flip(ciphertext, index)) != secret


def test_ml_kem_implicit_rejection_returns_a_different_secret_without_error() -> None:
    suite = kem_suite("ml-kem-768")
    private, public = suite.generate()
    secret, ciphertext = suite.encapsulate(public)
    tampered = _flip(ciphertext, 100)
    rejected = suite.decapsulate(private, tampered)
    assert len(rejected) == 32
    assert rejected != secret
    assert suite.decapsulate(private, tampered) == rejected  # deterministic, not random noise


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("change", ["truncated", "extended", "empty"])
def test_a_ciphertext_of_the_wrong_size_is_a_typed_error(name: str, change: str) -> None:
    suite = kem_suite(name)
    private, public = suite.generate()
    _, ciphertext = suite.encapsulate(public)
    bad = {"truncated": ciphertext[:-1], "extended": ciphertext + b"\x00",
           "empty": b""}[change]
    with pytest.raises(CryptoError, match=rf"ciphertext.* must be {len(ciphertext)} bytes"):
        suite.decapsulate(private, bad)


@pytest.mark.parametrize("name", NAMES)
def test_a_public_key_of_the_wrong_size_is_a_typed_error(name: str) -> None:
    suite = kem_suite(name)
    _, public = suite.generate()
    with pytest.raises(CryptoError, match=rf"public key must be {len(public)} bytes, got"):
        suite.encapsulate(public[:-1])


@pytest.mark.parametrize("name", NAMES)
def test_a_private_key_of_the_wrong_size_is_a_typed_error(name: str) -> None:
    suite = kem_suite(name)
    private, public = suite.generate()
    _, ciphertext = suite.encapsulate(public)
    with pytest.raises(CryptoError, match=rf"private key.* must be {len(private)} bytes"):
        suite.decapsulate(private + b"\x00", ciphertext)


def test_an_invalid_ml_kem_public_key_is_a_typed_error() -> None:
    with pytest.raises(CryptoError, match="not a valid ml-kem-768 public key"):
        kem_suite("ml-kem-768").encapsulate(b"\xff" * 1184)


def test_a_low_order_x25519_point_is_a_typed_error() -> None:
    suite = kem_suite("x25519")
    private, _ = suite.generate()
    with pytest.raises(CryptoError, match="low-order point"):
        suite.decapsulate(private, bytes(32))
    with pytest.raises(CryptoError, match="low-order point"):
        suite.encapsulate(bytes(32))


def test_the_hybrid_secret_differs_from_either_components_secret() -> None:
    hybrid, classical, pq = (kem_suite(n) for n in ("x25519+ml-kem-768", "x25519",
                                                     "ml-kem-768"))
    private, public = hybrid.generate()
    secret, ciphertext = hybrid.encapsulate(public)
    x_secret = classical.decapsulate(private[:X25519_PART], ciphertext[:X25519_PART])
    m_secret = pq.decapsulate(private[X25519_PART:], ciphertext[X25519_PART:])
    assert secret not in (x_secret, m_secret)


@pytest.mark.parametrize("part", ["x25519", "ml-kem-768"])
def test_the_hybrid_secret_depends_on_both_components(part: str) -> None:
    hybrid = kem_suite("x25519+ml-kem-768")
    private, public = hybrid.generate()
    other_private, _ = hybrid.generate()
    secret, ciphertext = hybrid.encapsulate(public)
    # Keep one component's private key right and swap the other's for a stranger's.
    if part == "x25519":
        mixed = other_private[:X25519_PART] + private[X25519_PART:]
    else:
        mixed = private[:X25519_PART] + other_private[X25519_PART:]
    assert hybrid.decapsulate(mixed, ciphertext) != secret


@settings(max_examples=15, deadline=None)
@given(name=st.sampled_from(NAMES), data=st.data())
def test_any_single_flip_never_yields_the_senders_secret(name: str, data: st.DataObject
                                                          ) -> None:
    suite = kem_suite(name)
    private, public = suite.generate()
    secret, ciphertext = suite.encapsulate(public)
    index = data.draw(st.integers(0, len(ciphertext) - 1), label="index")
    mask = data.draw(st.integers(1, 255), label="mask")
    assert _secret_or_error(suite, private, _flip(ciphertext, index, mask)) != secret


def test_suite_ids_are_distinct_single_bytes() -> None:
    ids = [s.suite_id for s in KEM_SUITES.values()]
    assert len(set(ids)) == len(ids)
    assert all(0 < i < 256 for i in ids)


def test_an_unknown_suite_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown KEM suite 'kyber'; known: ml-kem-768, "
                                          r"x25519, x25519\+ml-kem-768"):
        kem_suite("kyber")
