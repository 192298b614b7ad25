"""FHIR dateTime <-> epoch milliseconds (UTC), exact to the millisecond."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
#: A FHIR dateTime with a time of day; the zone is optional here so that its absence can be
#: reported as such (FHIR requires it whenever a time is given).
_DATETIME = re.compile(
    r"(?P<y>[0-9]{4})-(?P<mo>[0-9]{2})-(?P<d>[0-9]{2})"
    r"T(?P<h>[0-9]{2}):(?P<mi>[0-9]{2}):(?P<s>[0-9]{2})(?:\.(?P<f>[0-9]{1,9}))?"
    r"(?P<tz>Z|[+-][0-9]{2}:[0-9]{2})?"
)
_DATE_ONLY = re.compile(r"[0-9]{4}(-[0-9]{2}(-[0-9]{2})?)?")
#: The epoch-ms range that formats as a four-digit year (0001-01-01 .. 9999-12-31).
MIN_TIME_MS = (datetime(1, 1, 1, tzinfo=UTC) - _EPOCH) // _MS
MAX_TIME_MS = (datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC) - _EPOCH) // _MS


def parse_time_ms(text: str, field: str) -> int:
    """Epoch ms (UTC) of a FHIR dateTime/instant; ValueError naming `field` (never the text)."""
    m = _DATETIME.fullmatch(text)
    if m is None:
        if _DATE_ONLY.fullmatch(text):
            raise ValueError(f"{field} has no time of day")
        raise ValueError(f"{field} is not a FHIR dateTime")
    if m["tz"] is None:
        raise ValueError(f"{field} has no timezone (naive times are ambiguous)")
    try:
        if m["tz"] == "Z":
            tz = UTC
        else:
            sign = -1 if m["tz"][0] == "-" else 1
            offset = timedelta(hours=int(m["tz"][1:3]), minutes=int(m["tz"][4:6]))
            tz = timezone(sign * offset)
        micros = int((m["f"] or "0")[:6].ljust(6, "0"))
        when = datetime(
            int(m["y"]), int(m["mo"]), int(m["d"]),
            int(m["h"]), int(m["mi"]), int(m["s"]), micros, tzinfo=tz,
        )
    except ValueError:
        raise ValueError(f"{field} is not a valid date and time") from None
    time_ms = (when - _EPOCH) // _MS
    if not MIN_TIME_MS <= time_ms <= MAX_TIME_MS:
        raise ValueError(f"{field} is outside the years 0001-9999 (UTC)")
    return time_ms


def format_time_ms(time_ms: int) -> str:
    """The FHIR instant `YYYY-MM-DDThh:mm:ss.sssZ` of epoch ms (UTC)."""
    if not MIN_TIME_MS <= time_ms <= MAX_TIME_MS:
        raise ValueError("time is outside the years 0001-9999")
    t = _EPOCH + timedelta(milliseconds=time_ms)
    return (
        f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
        f".{t.microsecond // 1000:03d}Z"
    )
