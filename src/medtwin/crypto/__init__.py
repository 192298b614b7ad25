"""Cipher-suite registry, signatures, envelope encryption and site keys (crypto-agile)."""

from medtwin.crypto._envelope import envelope_suite, open_sealed, seal
from medtwin.crypto._kem import KEM_SUITES, KemSuite, kem_suite
from medtwin.crypto._keys import (
    KeyRing,
    LogSigningKey,
    SiteKeys,
    WrappedKey,
    load_or_create_secret,
    load_or_create_signing_key,
)
from medtwin.crypto._packets import sign_packet
from medtwin.crypto._session import (
    HANDSHAKE_NONCE_SIZE,
    SESSION_KEM_SUITE,
    FrameHeader,
    SessionKeys,
    SessionSender,
    accept_handshake,
    build_handshake,
    derive_session_keys,
    handshake_transcript,
    open_frame,
    parse_frame_header,
    seal_frame,
    site_key_id,
)
from medtwin.crypto._suites import (
    AEAD_SUITES,
    SIGNATURE_SUITES,
    AeadSuite,
    SignatureSuite,
    aead_suite,
    signature_suite,
    verify_signature,
)

__all__ = [
    "AEAD_SUITES",
    "HANDSHAKE_NONCE_SIZE",
    "KEM_SUITES",
    "SESSION_KEM_SUITE",
    "SIGNATURE_SUITES",
    "AeadSuite",
    "FrameHeader",
    "KemSuite",
    "KeyRing",
    "LogSigningKey",
    "SessionKeys",
    "SessionSender",
    "SignatureSuite",
    "SiteKeys",
    "WrappedKey",
    "accept_handshake",
    "aead_suite",
    "build_handshake",
    "derive_session_keys",
    "envelope_suite",
    "handshake_transcript",
    "kem_suite",
    "load_or_create_secret",
    "load_or_create_signing_key",
    "open_frame",
    "open_sealed",
    "parse_frame_header",
    "seal",
    "seal_frame",
    "sign_packet",
    "signature_suite",
    "site_key_id",
    "verify_signature",
]
