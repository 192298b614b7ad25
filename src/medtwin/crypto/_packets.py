"""Signed packet envelopes: what a device sends, `{"packet": …, "suite": …, "signature": …}`."""

from __future__ import annotations

import base64
from typing import Any

from medtwin.crypto._suites import signature_suite
from medtwin.domain import packet_signing_message


def sign_packet(wire: dict[str, Any], private_key: bytes, suite: str = "ed25519") -> dict[str, Any]:
    """The envelope a device sends: the packet, its suite and its signature (base64)."""
    signature = signature_suite(suite).sign(private_key, packet_signing_message(wire))
    return {"packet": wire, "suite": suite, "signature": base64.b64encode(signature).decode()}
