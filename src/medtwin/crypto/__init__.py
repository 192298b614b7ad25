"""Cipher-suite registry, signatures, envelope encryption and site keys (crypto-agile)."""

from medtwin.crypto._envelope import envelope_suite, open_sealed, seal
from medtwin.crypto._kem import KEM_SUITES, KemSuite, kem_suite
from medtwin.crypto._keys import (
    KeyRing,
    LogSigningKey,
    SiteKeys,
    WrappedKey,
    load_or_create_signing_key,
)
from medtwin.crypto._packets import sign_packet
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
    "KEM_SUITES",
    "SIGNATURE_SUITES",
    "AeadSuite",
    "KemSuite",
    "KeyRing",
    "LogSigningKey",
    "SignatureSuite",
    "SiteKeys",
    "WrappedKey",
    "aead_suite",
    "envelope_suite",
    "kem_suite",
    "load_or_create_signing_key",
    "open_sealed",
    "seal",
    "sign_packet",
    "signature_suite",
    "verify_signature",
]
