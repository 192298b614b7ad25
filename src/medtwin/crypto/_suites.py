"""The cipher-suite registry: every ciphertext and signature names its suite (crypto-agility)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from medtwin.errors import ConfigError, SignatureError


@dataclass(frozen=True, slots=True)
class AeadSuite:
    """An authenticated cipher with a one-byte id that is written into every envelope."""

    name: str
    suite_id: int
    key_size: int
    nonce_size: int
    factory: Callable[[bytes], AESGCM | ChaCha20Poly1305]


@dataclass(frozen=True, slots=True)
class SignatureSuite:
    """A signature algorithm: key generation, signing and verification over raw key bytes."""

    name: str
    generate: Callable[[], tuple[bytes, bytes]]
    sign: Callable[[bytes, bytes], bytes]
    verify: Callable[[bytes, bytes, bytes], None]


def _ed25519_generate() -> tuple[bytes, bytes]:
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes_raw(), key.public_key().public_bytes_raw()


def _ed25519_sign(private_key: bytes, message: bytes) -> bytes:
    return ed25519.Ed25519PrivateKey.from_private_bytes(private_key).sign(message)


def _ed25519_verify(public_key: bytes, message: bytes, signature: bytes) -> None:
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError) as exc:
        raise SignatureError("crypto: ed25519 signature does not verify") from exc


AEAD_SUITES: dict[str, AeadSuite] = {
    s.name: s
    for s in (
        AeadSuite("aes-256-gcm", 1, 32, 12, AESGCM),
        AeadSuite("chacha20-poly1305", 2, 32, 12, ChaCha20Poly1305),
    )
}
AEAD_BY_ID: dict[int, AeadSuite] = {s.suite_id: s for s in AEAD_SUITES.values()}

SIGNATURE_SUITES: dict[str, SignatureSuite] = {
    "ed25519": SignatureSuite("ed25519", _ed25519_generate, _ed25519_sign, _ed25519_verify),
}


def aead_suite(name: str) -> AeadSuite:
    """The AEAD suite called `name`, or a ConfigError listing the known ones."""
    try:
        return AEAD_SUITES[name]
    except KeyError:
        known = ", ".join(sorted(AEAD_SUITES))
        raise ConfigError(f"crypto: unknown AEAD suite {name!r}; known: {known}") from None


def signature_suite(name: str) -> SignatureSuite:
    """The signature suite called `name`, or a ConfigError listing the known ones."""
    try:
        return SIGNATURE_SUITES[name]
    except KeyError:
        known = ", ".join(sorted(SIGNATURE_SUITES))
        raise ConfigError(f"crypto: unknown signature suite {name!r}; known: {known}") from None


def verify_signature(suite: str, public_key: bytes, message: bytes, signature: bytes) -> None:
    """Raise SignatureError unless `signature` is `suite`'s signature of `message`."""
    signature_suite(suite).verify(public_key, message, signature)
