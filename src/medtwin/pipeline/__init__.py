"""Composes the one path of a reading; the only place that knows the order of the steps."""

from medtwin.ingest import SessionSubmission, SignedSubmission
from medtwin.pipeline._anchoring import (
    CHAIN_KEY_FILE,
    Anchorer,
    AnchorStatus,
    Claims,
    checkpoint_claims,
    site_chain,
)
from medtwin.pipeline._codec import decode_readings, encode_readings
from medtwin.pipeline._consent_site import CONSENT_KEY_FILE, SiteConsent
from medtwin.pipeline._events import EventHub
from medtwin.pipeline._lock import WriterLock
from medtwin.pipeline._pipeline import (
    DEFAULT_REWRAP_BATCH,
    MAX_WHATIF_STEPS,
    Accepted,
    Outcome,
    PacketMeta,
    Personalized,
    Pipeline,
    Rejected,
    ReplayReport,
    WhatIf,
    alert_json,
    finding_json,
    forecast_json,
    twin_state_json,
    whatif_json,
)
from medtwin.pipeline._verify import CheckpointClaim, VerifyReport, verify_store

__all__ = [
    "CHAIN_KEY_FILE",
    "CONSENT_KEY_FILE",
    "DEFAULT_REWRAP_BATCH",
    "MAX_WHATIF_STEPS",
    "Accepted",
    "AnchorStatus",
    "Anchorer",
    "CheckpointClaim",
    "Claims",
    "EventHub",
    "Outcome",
    "PacketMeta",
    "Personalized",
    "Pipeline",
    "Rejected",
    "ReplayReport",
    "SessionSubmission",
    "SignedSubmission",
    "SiteConsent",
    "VerifyReport",
    "WhatIf",
    "WriterLock",
    "alert_json",
    "checkpoint_claims",
    "decode_readings",
    "encode_readings",
    "finding_json",
    "forecast_json",
    "site_chain",
    "twin_state_json",
    "verify_store",
    "whatif_json",
]
