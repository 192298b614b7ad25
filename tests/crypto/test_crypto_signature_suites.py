"""Every registered signature suite signs, verifies and refuses tampering with SignatureError."""

from __future__ import annotations

import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medtwin.crypto import SIGNATURE_SUITES, signature_suite, verify_signature
from medtwin.errors import ConfigError, SignatureError

SUITES = sorted(SIGNATURE_SUITES)
MESSAGE = b"checkpoint body"

#: Raw key and signature sizes each suite documents (private, public, signature).
SIZES = {"ed25519": (32, 32, 64), "ecdsa-p256": (32, 65, 64), "ml-dsa-65": (32, 1952, 3309)}


@functools.cache
def _keys(suite: str, which: int = 0) -> tuple[bytes, bytes]:
    """A key pair per (suite, which), made once: ML-DSA key generation is not free."""
    return signature_suite(suite).generate()


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


def test_registry_holds_the_three_suites_and_ed25519_stays_first() -> None:
    assert list(SIGNATURE_SUITES) == ["ed25519", "ecdsa-p256", "ml-dsa-65"]
    assert all(SIGNATURE_SUITES[name].name == name for name in SIGNATURE_SUITES)


@pytest.mark.parametrize("suite", SUITES)
def test_keys_and_signatures_have_the_documented_sizes(suite: str) -> None:
    private, public = _keys(suite)
    signature = signature_suite(suite).sign(private, MESSAGE)
    assert (len(private), len(public), len(signature)) == SIZES[suite]


def test_ecdsa_public_key_is_an_uncompressed_point() -> None:
    assert _keys("ecdsa-p256")[1][0] == 0x04


@pytest.mark.parametrize("suite", SUITES)
def test_signature_round_trips(suite: str) -> None:
    private, public = _keys(suite)
    verify_signature(suite, public, MESSAGE, signature_suite(suite).sign(private, MESSAGE))


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("at", [0, -1])
def test_flipped_message_byte_raises(suite: str, at: int) -> None:
    private, public = _keys(suite)
    signature = signature_suite(suite).sign(private, MESSAGE)
    with pytest.raises(SignatureError, match=rf"^crypto: {suite} signature does not verify$"):
        verify_signature(suite, public, _flip(MESSAGE, at % len(MESSAGE)), signature)


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("at", [0, 31, -1])
def test_flipped_signature_byte_raises(suite: str, at: int) -> None:
    private, public = _keys(suite)
    signature = signature_suite(suite).sign(private, MESSAGE)
    with pytest.raises(SignatureError, match=rf"^crypto: {suite} signature does not verify$"):
        verify_signature(suite, public, MESSAGE, _flip(signature, at % len(signature)))


@pytest.mark.parametrize("suite", SUITES)
def test_signature_by_another_key_raises(suite: str) -> None:
    private, _ = _keys(suite)
    _, other_public = _keys(suite, which=1)
    signature = signature_suite(suite).sign(private, MESSAGE)
    with pytest.raises(SignatureError, match=rf"^crypto: {suite} signature does not verify$"):
        verify_signature(suite, other_public, MESSAGE, signature)


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("mangle", ["truncated", "extended", "empty", "garbage"])
def test_malformed_public_key_raises(suite: str, mangle: str) -> None:
    private, public = _keys(suite)
    signature = signature_suite(suite).sign(private, MESSAGE)
    bad = {"truncated": public[:-1], "extended": public + b"\x00", "empty": b"",
           "garbage": b"\x04" + b"\xff" * (len(public) - 1)}[mangle]
    with pytest.raises(SignatureError, match=rf"^crypto: {suite} signature does not verify$"):
        verify_signature(suite, bad, MESSAGE, signature)


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("mangle", ["truncated", "extended", "empty"])
def test_malformed_signature_raises(suite: str, mangle: str) -> None:
    private, public = _keys(suite)
    signature = signature_suite(suite).sign(private, MESSAGE)
    bad = {"truncated": signature[:-1], "extended": signature + b"\x00", "empty": b""}[mangle]
    with pytest.raises(SignatureError, match=rf"^crypto: {suite} signature does not verify$"):
        verify_signature(suite, public, MESSAGE, bad)


def test_compressed_ecdsa_point_is_refused() -> None:
    private, public = _keys("ecdsa-p256")
    compressed = bytes([0x02 + (public[-1] & 1)]) + public[1:33]
    signature = signature_suite("ecdsa-p256").sign(private, MESSAGE)
    with pytest.raises(SignatureError, match="ecdsa-p256 signature does not verify"):
        verify_signature("ecdsa-p256", compressed, MESSAGE, signature)


def test_ecdsa_zero_signature_is_refused() -> None:
    _, public = _keys("ecdsa-p256")
    with pytest.raises(SignatureError, match="ecdsa-p256 signature does not verify"):
        verify_signature("ecdsa-p256", public, MESSAGE, bytes(64))


def test_ecdsa_private_key_of_wrong_size_is_refused() -> None:
    with pytest.raises(ValueError, match="32-byte big-endian scalar"):
        signature_suite("ecdsa-p256").sign(bytes(31) + b"\x01" + b"\x00", MESSAGE)


@pytest.mark.parametrize("suite", SUITES)
@settings(max_examples=8, deadline=None)
@given(message=st.binary(max_size=512), tamper=st.integers(0, 511))
def test_any_message_round_trips_and_any_flip_is_refused(suite: str, message: bytes,
                                                         tamper: int) -> None:
    private, public = _keys(suite)
    signature = signature_suite(suite).sign(private, message)
    verify_signature(suite, public, message, signature)
    if message:
        with pytest.raises(SignatureError):
            verify_signature(suite, public, _flip(message, tamper % len(message)), signature)


def test_unknown_suite_is_a_config_error_listing_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"^crypto: unknown signature suite 'nope'; known: "
                                          r"ecdsa-p256, ed25519, ml-dsa-65$"):
        signature_suite("nope")
    with pytest.raises(ConfigError, match=r"unknown signature suite 'nope'"):
        verify_signature("nope", b"", MESSAGE, b"")


def test_ecdsa_signs_with_low_s_and_refuses_the_high_s_twin() -> None:
    """(r, s) and (r, n - s) both verify in plain ECDSA; medtwin makes and accepts only the
    low one, so a signature cannot be altered into another valid one."""
    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    suite = signature_suite("ecdsa-p256")
    private, public = suite.generate()
    for k in range(20):
        message = f"packet {k}".encode()
        signature = suite.sign(private, message)
        r, s = signature[:32], int.from_bytes(signature[32:], "big")
        assert s <= order // 2
        suite.verify(public, message, signature)
        with pytest.raises(SignatureError):
            suite.verify(public, message, r + (order - s).to_bytes(32, "big"))
