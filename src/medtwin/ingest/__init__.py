"""Device protocol, adapters and the gate: how readings enter medtwin."""

from medtwin.ingest._gate import (
    Admitted,
    Gate,
    ImportSubmission,
    Refused,
    SignedSubmission,
    Submission,
    Verdict,
)
from medtwin.ingest._wire import ENVELOPE_ADAPTER, MAX_ID_LENGTH, WireEnvelope

__all__ = [
    "ENVELOPE_ADAPTER",
    "MAX_ID_LENGTH",
    "Admitted",
    "Gate",
    "ImportSubmission",
    "Refused",
    "SignedSubmission",
    "Submission",
    "Verdict",
    "WireEnvelope",
]
