"""The cipher-suite registry: every ciphertext and signature names its suite (crypto-agility)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
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


# ECDSA P-256 with SHA-256. Raw keys: the private key is the 32-byte big-endian scalar, the
# public key the 65-byte uncompressed X9.62 point (0x04 || X || Y). Signatures are the fixed
# 64-byte r || s (IEEE P1363, as in JWS ES256, COSE and WebCrypto), not DER: a fixed size is
# simpler to bound and has one encoding per (r, s).
_P256 = ec.SECP256R1()
_P256_SCALAR_SIZE = 32
#: The order of P-256's group: (r, s) and (r, n - s) both verify, so signatures are made with
#: the low s and only the low s is accepted (one signature bytes per signing, no malleation).
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _ecdsa_p256_generate() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(_P256)
    private = key.private_numbers().private_value.to_bytes(_P256_SCALAR_SIZE, "big")
    public = key.public_key().public_bytes(serialization.Encoding.X962,
                                           serialization.PublicFormat.UncompressedPoint)
    return private, public


def _ecdsa_p256_sign(private_key: bytes, message: bytes) -> bytes:
    if len(private_key) != _P256_SCALAR_SIZE:
        raise ValueError("crypto: an ecdsa-p256 private key is a 32-byte big-endian scalar")
    key = ec.derive_private_key(int.from_bytes(private_key, "big"), _P256)
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    s = min(s, _P256_ORDER - s)
    return r.to_bytes(_P256_SCALAR_SIZE, "big") + s.to_bytes(_P256_SCALAR_SIZE, "big")


def _ecdsa_p256_verify(public_key: bytes, message: bytes, signature: bytes) -> None:
    try:
        if len(public_key) != 1 + 2 * _P256_SCALAR_SIZE or public_key[0] != 0x04:
            raise ValueError("public key is not a 65-byte uncompressed P-256 point")
        if len(signature) != 2 * _P256_SCALAR_SIZE:
            raise ValueError("signature is not 64 bytes of r || s")
        r = int.from_bytes(signature[:_P256_SCALAR_SIZE], "big")
        s = int.from_bytes(signature[_P256_SCALAR_SIZE:], "big")
        if not (0 < r < _P256_ORDER and 0 < s <= _P256_ORDER // 2):
            raise ValueError("signature is not r || s with 0 < r < n and a low 0 < s <= n/2")
        key = ec.EllipticCurvePublicKey.from_encoded_point(_P256, public_key)
        key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError) as exc:
        raise SignatureError("crypto: ecdsa-p256 signature does not verify") from exc


# ML-DSA-65 (FIPS 204), empty context. Raw keys as cryptography exposes them: the private key
# is the 32-byte seed (never the expanded key), the public key 1952 bytes; signatures 3309 bytes.
def _ml_dsa_65_generate() -> tuple[bytes, bytes]:
    key = mldsa.MLDSA65PrivateKey.generate()
    return key.private_bytes_raw(), key.public_key().public_bytes_raw()


def _ml_dsa_65_sign(private_key: bytes, message: bytes) -> bytes:
    return mldsa.MLDSA65PrivateKey.from_seed_bytes(private_key).sign(message)


def _ml_dsa_65_verify(public_key: bytes, message: bytes, signature: bytes) -> None:
    try:
        mldsa.MLDSA65PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError) as exc:
        raise SignatureError("crypto: ml-dsa-65 signature does not verify") from exc


AEAD_SUITES: dict[str, AeadSuite] = {
    s.name: s
    for s in (
        AeadSuite("aes-256-gcm", 1, 32, 12, AESGCM),
        AeadSuite("chacha20-poly1305", 2, 32, 12, ChaCha20Poly1305),
    )
}
AEAD_BY_ID: dict[int, AeadSuite] = {s.suite_id: s for s in AEAD_SUITES.values()}

SIGNATURE_SUITES: dict[str, SignatureSuite] = {
    s.name: s
    for s in (
        SignatureSuite("ed25519", _ed25519_generate, _ed25519_sign, _ed25519_verify),
        SignatureSuite("ecdsa-p256", _ecdsa_p256_generate, _ecdsa_p256_sign,
                       _ecdsa_p256_verify),
        SignatureSuite("ml-dsa-65", _ml_dsa_65_generate, _ml_dsa_65_sign, _ml_dsa_65_verify),
    )
}


S = TypeVar("S")


def lookup_suite(registry: Mapping[str, S], name: str, kind: str) -> S:
    """The `kind` suite called `name` in `registry`, or a ConfigError listing the known
    ones (the one lookup of every suite registry)."""
    try:
        return registry[name]
    except KeyError:
        known = ", ".join(sorted(registry))
        raise ConfigError(f"crypto: unknown {kind} suite {name!r}; known: {known}") from None


def aead_suite(name: str) -> AeadSuite:
    """The AEAD suite called `name`, or a ConfigError listing the known ones."""
    return lookup_suite(AEAD_SUITES, name, "AEAD")


def signature_suite(name: str) -> SignatureSuite:
    """The signature suite called `name`, or a ConfigError listing the known ones."""
    return lookup_suite(SIGNATURE_SUITES, name, "signature")


def verify_signature(suite: str, public_key: bytes, message: bytes, signature: bytes) -> None:
    """Raise SignatureError unless `signature` is `suite`'s signature of `message`."""
    signature_suite(suite).verify(public_key, message, signature)
