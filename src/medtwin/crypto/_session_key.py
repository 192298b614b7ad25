"""The site's session KEM key as a signed offer, so a device handshakes only to the real site.

The KEM key is made fresh at every start of the site and never stored; the site signs it
with its log key (the site's long-term identity, which devices are provisioned with). A
device checks the offer against the log key it was given; if the log key has rotated since,
the offer carries the rotations, each endorsed by the key before, and the device follows them
(`follow_log_key`). Without this check, whoever answers `/v1/session-key` could read every
packet of the sessions keyed to it.

Offer (JSON): {"kem", "site_key", "public_key", "origin", "log_key": {key_id, suite,
public_key}, "signature", "log_keys": [rotation, ...]}; the signature covers the RFC 8785
canonical JSON of {"context", "origin", "kem", "public_key"}.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from medtwin.crypto._keys import LogSigningKey, PublicLogKey, _b64
from medtwin.crypto._log_keys import LogKeyEndorsement, follow_log_key
from medtwin.crypto._session import site_key_id
from medtwin.crypto._suites import verify_signature
from medtwin.domain import canonical_json
from medtwin.errors import SignatureError

#: Names the signed statement, so it can never be read as another signed message.
SESSION_KEY_CONTEXT = "medtwin/session-key/v1"


def session_key_statement(origin: str, kem: str, public_key: bytes) -> bytes:
    """The bytes the log key signs for one session KEM key of the site `origin`."""
    return canonical_json({"context": SESSION_KEY_CONTEXT, "origin": origin, "kem": kem,
                           "public_key": _b64(public_key)})


def sign_session_key(log_key: LogSigningKey, origin: str, kem: str, public_key: bytes,
                     rotations: Sequence[LogKeyEndorsement] = ()) -> dict[str, Any]:
    """The offer a device fetches: the KEM key, signed by the site's current log key, with
    the log key rotations that lead to that key."""
    return {"kem": kem, "site_key": site_key_id(public_key), "public_key": _b64(public_key),
            "origin": origin, "log_key": log_key.public.as_json(),
            "signature": _b64(log_key.sign(session_key_statement(origin, kem, public_key))),
            "log_keys": [r.as_json() for r in rotations]}


class CheckedOffer(NamedTuple):
    """A session-key offer that checked out: the KEM suite and public key to handshake to,
    and the log key that signed it, which the device should trust from now on (so a retired
    log key stops counting for it)."""

    kem: str
    public_key: bytes
    log_key: PublicLogKey


def check_session_key(offer: Mapping[str, Any], trusted: PublicLogKey,
                      origin: str) -> CheckedOffer:
    """Check a session-key offer that the site `origin` signed with `trusted` or a key
    `trusted` endorsed (through the offer's rotations); SignatureError otherwise, saying why.
    An offer carries no time: an old one is useless to replay, since its KEM private key
    lived only in the site process that made it. A log key that leaked lets its holder sign
    offers to devices that still trust it: after such a rotation, devices must have seen an
    offer by the new key (or be re-provisioned) before the old key stops being a risk."""
    try:
        kem, public_key = str(offer["kem"]), base64.b64decode(offer["public_key"],
                                                              validate=True)
        signer = PublicLogKey.from_json(offer["log_key"])
        signature = base64.b64decode(offer["signature"], validate=True)
        rotations = [LogKeyEndorsement.from_json(r) for r in offer.get("log_keys", [])]
        offered_origin = str(offer["origin"])
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise SignatureError("session key: the offer is not a signed session key "
                             "(kem, public_key, origin, log_key, signature)") from exc
    if offered_origin != origin:
        raise SignatureError(f"session key: offered by log {offered_origin!r}, not {origin!r}")
    key, _followed = follow_log_key(trusted, rotations, origin)
    if not key.same_key(signer):
        raise SignatureError(f"session key: signed by log key {signer.key_id!r}, which the "
                             f"trusted key does not lead to (it leads to {key.key_id!r})")
    try:
        verify_signature(key.suite, key.public_key,
                         session_key_statement(origin, kem, public_key), signature)
    except SignatureError as exc:
        raise SignatureError("session key: the log key's signature over the session key "
                             "does not verify") from exc
    return CheckedOffer(kem, public_key, key)
