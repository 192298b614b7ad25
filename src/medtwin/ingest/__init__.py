"""Device protocol, adapters and the gate: how readings enter medtwin."""

from medtwin.ingest._gate import (
    Admitted,
    Gate,
    ImportSubmission,
    Refused,
    SignedSubmission,
    Submission,
    Verdict,
    signed_packet_readings,
)
from medtwin.ingest._wire import ENVELOPE_ADAPTER, WireEnvelope, decode_json

__all__ = [
    "ENVELOPE_ADAPTER",
    "Admitted",
    "Gate",
    "ImportSubmission",
    "Refused",
    "SignedSubmission",
    "Submission",
    "Verdict",
    "WireEnvelope",
    "decode_json",
    "signed_packet_readings",
]
