"""Device protocol, adapters and the gate: how readings enter medtwin."""

from medtwin.ingest._gate import (
    MAX_HANDSHAKE_BYTES,
    Admitted,
    Gate,
    ImportSubmission,
    Refused,
    SessionOpened,
    SessionSubmission,
    SignedSubmission,
    Submission,
    Verdict,
    signed_packet_readings,
)
from medtwin.ingest._wire import (
    ENVELOPE_ADAPTER,
    HANDSHAKE_ADAPTER,
    WireEnvelope,
    WireHandshakeEnvelope,
    decode_json,
)

__all__ = [
    "ENVELOPE_ADAPTER",
    "HANDSHAKE_ADAPTER",
    "MAX_HANDSHAKE_BYTES",
    "Admitted",
    "Gate",
    "ImportSubmission",
    "Refused",
    "SessionOpened",
    "SessionSubmission",
    "SignedSubmission",
    "Submission",
    "Verdict",
    "WireEnvelope",
    "WireHandshakeEnvelope",
    "decode_json",
    "signed_packet_readings",
]
