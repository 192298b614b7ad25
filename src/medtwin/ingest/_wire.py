"""The device protocol on the wire: the JSON shapes of a signed packet envelope and of a
session handshake, with limits."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import Field, StrictFloat, StrictInt, StrictStr, TypeAdapter
from typing_extensions import TypedDict

from medtwin.config import ID_PATTERN, MAX_ID_LENGTH, MAX_PACKET_READINGS

#: Longest base64 signature accepted (ML-DSA-87 signatures are 4,627 bytes).
MAX_SIGNATURE_LENGTH = 8192
#: Longest base64 KEM ciphertext accepted (x25519+ml-kem-768's 1,120 bytes are 1,496 chars).
MAX_KEM_CIPHERTEXT_LENGTH = 4096
#: Largest integer in a signed packet: canonical JSON (RFC 8785) covers integers to 2**53.
_MAX_INT = 2**53 - 1

DeviceId = Annotated[StrictStr, Field(min_length=1, max_length=MAX_ID_LENGTH,
                                      pattern=ID_PATTERN)]
Millis = Annotated[StrictInt, Field(ge=0, le=_MAX_INT)]


#: Integers a float64 holds exactly; larger JSON integers are refused here (a JSON float that
#: large still parses, and the gate's possible-value range refuses it).
_MAX_EXACT_INT = 2**53 - 1


#: Printable ASCII without spaces: codes and units are never free text.
_TOKEN = r"^[!-~]{1,32}$"
DEVICE_ID_PATTERN = ID_PATTERN


class WireReading(TypedDict):
    code: Annotated[StrictStr, Field(pattern=_TOKEN)]
    unit: Annotated[StrictStr, Field(pattern=_TOKEN)]
    value: StrictFloat | Annotated[StrictInt, Field(ge=-_MAX_EXACT_INT, le=_MAX_EXACT_INT)]
    time: Millis


class WirePacket(TypedDict):
    device_id: DeviceId
    seq: Millis
    sent_at: Millis
    readings: Annotated[list[WireReading], Field(min_length=1, max_length=MAX_PACKET_READINGS)]


class WireEnvelope(TypedDict):
    packet: WirePacket
    suite: Annotated[StrictStr, Field(max_length=32)]
    signature: Annotated[StrictStr, Field(max_length=MAX_SIGNATURE_LENGTH)]


#: Standard base64 with padding, nothing else (the handshake is signed as sent).
_BASE64 = r"^[A-Za-z0-9+/]*={0,2}$"
_SUITE_NAME = Annotated[StrictStr, Field(max_length=32)]


class WireHandshake(TypedDict):
    device_id: DeviceId
    kem: _SUITE_NAME
    site_key: Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")]
    kem_ciphertext: Annotated[StrictStr, Field(max_length=MAX_KEM_CIPHERTEXT_LENGTH,
                                               pattern=_BASE64)]
    nonce: Annotated[StrictStr, Field(min_length=24, max_length=24, pattern=_BASE64)]
    started_at: Millis
    aead: _SUITE_NAME


class WireHandshakeEnvelope(TypedDict):
    handshake: WireHandshake
    suite: _SUITE_NAME
    signature: Annotated[StrictStr, Field(max_length=MAX_SIGNATURE_LENGTH)]


ENVELOPE_ADAPTER: TypeAdapter[WireEnvelope] = TypeAdapter(WireEnvelope)
PACKET_ADAPTER: TypeAdapter[WirePacket] = TypeAdapter(WirePacket)
HANDSHAKE_ADAPTER: TypeAdapter[WireHandshakeEnvelope] = TypeAdapter(WireHandshakeEnvelope)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"JSON constant {name} is not allowed")


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        raise ValueError("duplicate key in a JSON object")
    return document


def decode_json(body: bytes) -> Any:
    """The JSON value of a request body, or None if it is not strict JSON (I-JSON, RFC 7493:
    NaN and Infinity literals, duplicate keys, invalid UTF-8 and nesting deep enough to
    exhaust the parser are all refused)."""
    try:
        return json.loads(body, parse_constant=_refuse_constant,
                          object_pairs_hook=_refuse_duplicates)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
