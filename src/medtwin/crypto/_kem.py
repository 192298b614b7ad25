"""The KEM suite registry: key encapsulation, classical, post-quantum and hybrid (crypto-agility).

A KEM gives a sender a fresh 32-byte shared secret and a ciphertext that only the holder of
the recipient's private key can turn back into the same secret. Keys and ciphertexts are raw
bytes with fixed sizes; anything malformed is a CryptoError that says which size was expected.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from medtwin.crypto._suites import lookup_suite
from medtwin.errors import CryptoError

SHARED_SECRET_SIZE = 32


@dataclass(frozen=True, slots=True)
class KemSuite:
    """A KEM with a one-byte id: key generation, encapsulation and decapsulation over raw bytes.

    `generate() -> (private, public)`, `encapsulate(public) -> (shared_secret, ciphertext)`,
    `decapsulate(private, ciphertext) -> shared_secret`.
    """

    name: str
    suite_id: int
    generate: Callable[[], tuple[bytes, bytes]]
    encapsulate: Callable[[bytes], tuple[bytes, bytes]]
    decapsulate: Callable[[bytes, bytes], bytes]


def _check_size(what: str, value: bytes, size: int) -> None:
    """Raise CryptoError unless `value` is exactly `size` bytes (keys, ciphertexts)."""
    if len(value) != size:
        raise CryptoError(f"crypto: {what} must be {size} bytes, got {len(value)}: it was "
                          "truncated, extended or belongs to another KEM suite")


# --- x25519: ephemeral-static Diffie-Hellman as a KEM ------------------------------------------
# Raw keys: 32-byte private scalar and 32-byte public u-coordinate (RFC 7748). The ciphertext
# is the sender's ephemeral public key. The shared secret is
#   HKDF-SHA256(salt = empty (RFC 5869: HashLen zero bytes), ikm = X25519(eph, recipient),
#               info = b"medtwin/kem/x25519/v1" || ephemeral public || recipient public)
# so it is bound to both public keys, like the kem_context of RFC 9180's DHKEM(X25519).
_X25519_KEY_SIZE = 32
_X25519_LABEL = b"medtwin/kem/x25519/v1"


def _hkdf_sha256(ikm: bytes, info: bytes) -> bytes:
    """32 bytes of HKDF-SHA256 (empty salt) over `ikm`, bound to `info`."""
    return HKDF(hashes.SHA256(), SHARED_SECRET_SIZE, salt=None, info=info).derive(ikm)


def _x25519_private(private_key: bytes) -> x25519.X25519PrivateKey:
    _check_size("an x25519 private key", private_key, _X25519_KEY_SIZE)
    return x25519.X25519PrivateKey.from_private_bytes(private_key)


def _x25519_public(public_key: bytes, what: str) -> x25519.X25519PublicKey:
    _check_size(what, public_key, _X25519_KEY_SIZE)
    return x25519.X25519PublicKey.from_public_bytes(public_key)


def _x25519_dh(private: x25519.X25519PrivateKey, public: x25519.X25519PublicKey) -> bytes:
    """The raw X25519 output; a low-order peer key (all-zero output) is a CryptoError."""
    try:
        return private.exchange(public)
    except ValueError as exc:
        raise CryptoError("crypto: x25519 key agreement failed: the peer's public key is a "
                          "low-order point; use a key made by a real X25519 key pair") from exc


def _x25519_generate() -> tuple[bytes, bytes]:
    key = x25519.X25519PrivateKey.generate()
    return key.private_bytes_raw(), key.public_key().public_bytes_raw()


def _x25519_encapsulate_raw(public_key: bytes) -> tuple[bytes, bytes]:
    """(raw DH output, ephemeral public key) towards `public_key`; the hybrid uses the raw DH."""
    recipient = _x25519_public(public_key, "an x25519 public key")
    ephemeral = x25519.X25519PrivateKey.generate()
    return _x25519_dh(ephemeral, recipient), ephemeral.public_key().public_bytes_raw()


def _x25519_decapsulate_raw(private_key: bytes, ciphertext: bytes) -> tuple[bytes, bytes]:
    """(raw DH output, recipient public key) for the ephemeral key in `ciphertext`."""
    key = _x25519_private(private_key)
    ephemeral = _x25519_public(ciphertext, "an x25519 ciphertext (ephemeral public key)")
    return _x25519_dh(key, ephemeral), key.public_key().public_bytes_raw()


def _x25519_encapsulate(public_key: bytes) -> tuple[bytes, bytes]:
    dh, ciphertext = _x25519_encapsulate_raw(public_key)
    return _hkdf_sha256(dh, _X25519_LABEL + ciphertext + public_key), ciphertext


def _x25519_decapsulate(private_key: bytes, ciphertext: bytes) -> bytes:
    dh, public_key = _x25519_decapsulate_raw(private_key, ciphertext)
    return _hkdf_sha256(dh, _X25519_LABEL + ciphertext + public_key)


# --- ml-kem-768 (FIPS 203) -----------------------------------------------------------------------
# Raw keys as cryptography exposes them: the private key is the 64-byte seed (d || z), never the
# expanded decapsulation key; the public (encapsulation) key is 1184 bytes, the ciphertext 1088.
# A well-sized but altered ciphertext is not an error: ML-KEM's implicit rejection returns a
# pseudorandom secret that the sender does not have, so the mismatch shows at the first AEAD use.
_MLKEM_SEED_SIZE = 64
_MLKEM_PUBLIC_SIZE = 1184
_MLKEM_CIPHERTEXT_SIZE = 1088


def _mlkem_generate() -> tuple[bytes, bytes]:
    key = mlkem.MLKEM768PrivateKey.generate()
    return key.private_bytes_raw(), key.public_key().public_bytes_raw()


def _mlkem_private(private_key: bytes) -> mlkem.MLKEM768PrivateKey:
    _check_size("an ml-kem-768 private key (seed)", private_key, _MLKEM_SEED_SIZE)
    return mlkem.MLKEM768PrivateKey.from_seed_bytes(private_key)


def _mlkem_encapsulate(public_key: bytes) -> tuple[bytes, bytes]:
    _check_size("an ml-kem-768 public key", public_key, _MLKEM_PUBLIC_SIZE)
    try:
        key = mlkem.MLKEM768PublicKey.from_public_bytes(public_key)
    except ValueError as exc:
        raise CryptoError("crypto: not a valid ml-kem-768 public key (its coefficients are out "
                          "of range); ask the recipient for its key again") from exc
    return key.encapsulate()


def _mlkem_decapsulate(private_key: bytes, ciphertext: bytes) -> bytes:
    _check_size("an ml-kem-768 ciphertext", ciphertext, _MLKEM_CIPHERTEXT_SIZE)
    return _mlkem_private(private_key).decapsulate(ciphertext)


# --- x25519+ml-kem-768: the hybrid ---------------------------------------------------------------
# Both components must be broken to recover the secret. Layouts (fixed sizes, checked):
#   private    = x25519 private (32) || ml-kem-768 seed (64)
#   public     = x25519 public (32)  || ml-kem-768 public (1184)
#   ciphertext = x25519 ciphertext (32) || ml-kem-768 ciphertext (1088)
# Combiner: HKDF-SHA256(salt = empty, ikm = ml-kem secret || x25519 raw DH output,
#   info = b"medtwin/kem/x25519+ml-kem-768/v1" || x25519 ct || ml-kem ct || x25519 pk
#          || ml-kem pk).
# The ikm order (ML-KEM first) and the concatenation follow X-Wing (draft-connolly-cfrg-xwing-kem)
# and X25519MLKEM768 (draft-ietf-tls-ecdhe-mlkem, after draft-ietf-tls-hybrid-design). X-Wing
# omits the ML-KEM ciphertext and key because ML-KEM binds them itself; we bind every ciphertext
# and public key anyway (the conservative "kitchen-sink" combiner of draft-irtf-cfrg-hybrid-kems),
# which costs one hash over ~2.3 kB and relies on no property of either component beyond IND-CCA.
_HYBRID_LABEL = b"medtwin/kem/x25519+ml-kem-768/v1"
_HYBRID_PRIVATE_SIZE = _X25519_KEY_SIZE + _MLKEM_SEED_SIZE
_HYBRID_PUBLIC_SIZE = _X25519_KEY_SIZE + _MLKEM_PUBLIC_SIZE
_HYBRID_CIPHERTEXT_SIZE = _X25519_KEY_SIZE + _MLKEM_CIPHERTEXT_SIZE


def _hybrid_combine(mlkem_secret: bytes, x25519_dh: bytes, ciphertext: bytes,
                    public_key: bytes) -> bytes:
    """The hybrid secret: both component secrets, bound to both ciphertexts and public keys."""
    x_ct, m_ct = ciphertext[:_X25519_KEY_SIZE], ciphertext[_X25519_KEY_SIZE:]
    x_pk, m_pk = public_key[:_X25519_KEY_SIZE], public_key[_X25519_KEY_SIZE:]
    return _hkdf_sha256(mlkem_secret + x25519_dh, _HYBRID_LABEL + x_ct + m_ct + x_pk + m_pk)


def _hybrid_generate() -> tuple[bytes, bytes]:
    x_private, x_public = _x25519_generate()
    m_private, m_public = _mlkem_generate()
    return x_private + m_private, x_public + m_public


def _hybrid_encapsulate(public_key: bytes) -> tuple[bytes, bytes]:
    _check_size("an x25519+ml-kem-768 public key", public_key, _HYBRID_PUBLIC_SIZE)
    x_dh, x_ct = _x25519_encapsulate_raw(public_key[:_X25519_KEY_SIZE])
    m_secret, m_ct = _mlkem_encapsulate(public_key[_X25519_KEY_SIZE:])
    ciphertext = x_ct + m_ct
    return _hybrid_combine(m_secret, x_dh, ciphertext, public_key), ciphertext


def _hybrid_decapsulate(private_key: bytes, ciphertext: bytes) -> bytes:
    _check_size("an x25519+ml-kem-768 private key", private_key, _HYBRID_PRIVATE_SIZE)
    _check_size("an x25519+ml-kem-768 ciphertext", ciphertext, _HYBRID_CIPHERTEXT_SIZE)
    x_dh, x_public = _x25519_decapsulate_raw(private_key[:_X25519_KEY_SIZE],
                                             ciphertext[:_X25519_KEY_SIZE])
    m_key = _mlkem_private(private_key[_X25519_KEY_SIZE:])
    m_secret = m_key.decapsulate(ciphertext[_X25519_KEY_SIZE:])
    public_key = x_public + m_key.public_key().public_bytes_raw()
    return _hybrid_combine(m_secret, x_dh, ciphertext, public_key)


KEM_SUITES: dict[str, KemSuite] = {
    s.name: s
    for s in (
        KemSuite("x25519", 1, _x25519_generate, _x25519_encapsulate, _x25519_decapsulate),
        KemSuite("ml-kem-768", 2, _mlkem_generate, _mlkem_encapsulate, _mlkem_decapsulate),
        KemSuite("x25519+ml-kem-768", 3, _hybrid_generate, _hybrid_encapsulate,
                 _hybrid_decapsulate),
    )
}


def kem_suite(name: str) -> KemSuite:
    """The KEM suite called `name`, or a ConfigError listing the known ones."""
    return lookup_suite(KEM_SUITES, name, "KEM")
