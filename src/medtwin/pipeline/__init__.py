"""Composes the one path of a reading; the only place that knows the order of the steps."""

from medtwin.ingest import SignedSubmission
from medtwin.pipeline._codec import decode_readings, encode_readings
from medtwin.pipeline._events import EventHub
from medtwin.pipeline._lock import WriterLock
from medtwin.pipeline._pipeline import (
    Accepted,
    Outcome,
    Pipeline,
    Rejected,
    alert_json,
    twin_state_json,
)
from medtwin.pipeline._verify import VerifyReport, verify_store

__all__ = [
    "Accepted",
    "EventHub",
    "Outcome",
    "Pipeline",
    "Rejected",
    "SignedSubmission",
    "VerifyReport",
    "WriterLock",
    "alert_json",
    "decode_readings",
    "encode_readings",
    "twin_state_json",
    "verify_store",
]
