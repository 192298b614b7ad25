"""The one exception tree of medtwin; errors from dependencies are re-raised as these.

    MedtwinError
    ├── ConfigError          bad settings or missing key files
    ├── CryptoError
    │   ├── DecryptionError  ciphertext could not be opened (one opaque error, by design)
    │   └── SignatureError   a signature did not verify
    ├── GateRejection        the gate refused a packet; `.reason` says why
    ├── NotFoundError        an unknown patient, device or token
    │   └── PatientErasedError  the patient was erased: their data keys are destroyed
    ├── StoreError           the database failed; the batch was not written
    ├── ConflictError        something with that id already exists
    ├── VerificationError    the store, log or signed head do not agree; `.record` names where
    │   └── SplitViewError   a log showed a witness two views that cannot both be true
    ├── FhirError            a FHIR resource could not be read; `.line` says where
    ├── ChainError           the anchoring chain could not be reached or refused a transaction
    └── InvalidInputError    a request's arguments are out of range (nothing was changed)

Messages start with the stage that failed ("gate: bad-signature: …") and never contain
patient values.
"""

from __future__ import annotations

from medtwin.domain import RejectReason


class MedtwinError(Exception):
    """Base of every error medtwin raises on purpose."""


class ConfigError(MedtwinError):
    """Settings or key files are missing or invalid."""


class CryptoError(MedtwinError):
    """A cryptographic operation failed."""


class DecryptionError(CryptoError):
    """A ciphertext could not be opened: wrong key, wrong context or tampered bytes."""

    def __init__(self) -> None:
        super().__init__("crypto: decryption failed (wrong key, wrong context or tampered data)")


class SignatureError(CryptoError):
    """A signature did not verify."""


class GateRejection(MedtwinError):
    """The gate refused a packet; nothing of it was stored.

    `reading` is the position in the packet of the first refused reading, when one was.
    """

    def __init__(self, reason: RejectReason, detail: str, reading: int | None = None) -> None:
        self.reason = reason
        self.detail = detail
        self.reading = reading
        super().__init__(f"gate: {reason.value}: {detail}")


class NotFoundError(MedtwinError):
    """A patient, device or token that medtwin does not know."""


class PatientErasedError(NotFoundError):
    """The patient was erased (crypto-shredded): their data keys are gone for good."""


class StoreError(MedtwinError):
    """The database failed; nothing of the batch was written."""


class ConflictError(MedtwinError):
    """A patient, device or token with that id already exists."""


class VerificationError(MedtwinError):
    """The store, the Merkle log and the signed tree head disagree."""

    def __init__(self, message: str, record: str | None = None) -> None:
        self.record = record
        super().__init__(message)


class SplitViewError(VerificationError):
    """A log showed two different trees of one size, shrank, or gave an inconsistent proof."""


class FhirError(MedtwinError):
    """A FHIR resource could not be read into medtwin's domain."""

    def __init__(self, message: str, line: int | None = None) -> None:
        self.line = line
        where = f"line {line}: " if line is not None else ""
        super().__init__(f"fhir: {where}{message}")


class ChainError(MedtwinError):
    """The EVM chain (embedded or JSON-RPC) could not be reached, refused a transaction, or
    holds a contract other than the one medtwin expects."""


class InvalidInputError(MedtwinError):
    """A request's arguments are missing or out of range; nothing was changed."""
