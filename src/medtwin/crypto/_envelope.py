"""Authenticated encryption envelopes that name their suite, so old data outlives a suite change.

Layout: b"MT" | version (1 byte) | suite id (1 byte) | nonce | ciphertext with tag.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag

from medtwin.crypto._suites import AEAD_BY_ID, aead_suite
from medtwin.errors import DecryptionError

MAGIC = b"MT"
VERSION = 1
HEADER_SIZE = 4


def seal(key: bytes, plaintext: bytes, aad: bytes, suite: str = "aes-256-gcm") -> bytes:
    """Encrypt `plaintext` bound to `aad` (the context it belongs to) under `key`."""
    spec = aead_suite(suite)
    nonce = os.urandom(spec.nonce_size)
    header = MAGIC + bytes((VERSION, spec.suite_id))
    return header + nonce + spec.factory(key).encrypt(nonce, plaintext, header + aad)


def open_sealed(key: bytes, envelope: bytes, aad: bytes) -> bytes:
    """Decrypt an envelope from `seal`; any failure is the one opaque DecryptionError."""
    if len(envelope) < HEADER_SIZE or envelope[:2] != MAGIC or envelope[2] != VERSION:
        raise DecryptionError()
    spec = AEAD_BY_ID.get(envelope[3])
    if spec is None or len(key) != spec.key_size:
        raise DecryptionError()
    header = envelope[:HEADER_SIZE]
    nonce = envelope[HEADER_SIZE : HEADER_SIZE + spec.nonce_size]
    body = envelope[HEADER_SIZE + spec.nonce_size :]
    try:
        return spec.factory(key).decrypt(nonce, body, header + aad)
    except (InvalidTag, ValueError) as exc:
        raise DecryptionError() from exc


def envelope_suite(envelope: bytes) -> str:
    """The name of the suite an envelope was sealed with."""
    if len(envelope) < HEADER_SIZE or envelope[:2] != MAGIC:
        raise DecryptionError()
    spec = AEAD_BY_ID.get(envelope[3])
    if spec is None:
        raise DecryptionError()
    return spec.name
