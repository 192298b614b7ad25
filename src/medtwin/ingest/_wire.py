"""The device protocol on the wire: the JSON shape of a signed packet envelope, with limits."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StrictFloat, StrictInt, StrictStr, TypeAdapter
from typing_extensions import TypedDict

from medtwin.config import MAX_PACKET_READINGS

#: Longest device id (bounded so a rejection record can always name it).
MAX_ID_LENGTH = 64
#: Longest base64 signature accepted (ML-DSA-87 signatures are 4,627 bytes).
MAX_SIGNATURE_LENGTH = 8192
_MAX_INT = 2**63 - 1

DeviceId = Annotated[StrictStr, Field(min_length=1, max_length=MAX_ID_LENGTH,
                                      pattern=r"^[A-Za-z0-9._:-]+$")]
Millis = Annotated[StrictInt, Field(ge=0, le=_MAX_INT)]


#: Integers a float64 holds exactly; larger JSON integers are refused here (a JSON float that
#: large still parses, and the gate's possible-value range refuses it).
_MAX_EXACT_INT = 2**53


class WireReading(TypedDict):
    code: Annotated[StrictStr, Field(max_length=32)]
    unit: Annotated[StrictStr, Field(max_length=32)]
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


ENVELOPE_ADAPTER: TypeAdapter[WireEnvelope] = TypeAdapter(WireEnvelope)
