"""The site's signed session-key offer: a device accepts it only if the site's log key (or a
key it endorsed) signed that exact KEM key for that site; a swapped key is refused."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medtwin.crypto import (
    LogSigningKey,
    check_session_key,
    endorse_log_key,
    kem_suite,
    sign_session_key,
    signature_suite,
)
from medtwin.errors import SignatureError

ORIGIN = "hospital.example/log"
KEM = "x25519+ml-kem-768"


def _log_key(suite: str = "ed25519", name: str = "log-1") -> LogSigningKey:
    private, public = signature_suite(suite).generate()
    return LogSigningKey(name, suite, private, public)


@pytest.fixture(scope="module")
def offer_parts() -> tuple[LogSigningKey, bytes, dict[str, Any]]:
    key = _log_key()
    _private, public = kem_suite(KEM).generate()
    return key, public, sign_session_key(key, ORIGIN, KEM, public)


def test_a_device_accepts_the_offer_its_site_signed(
        offer_parts: tuple[LogSigningKey, bytes, dict[str, Any]]) -> None:
    key, public, offer = offer_parts
    assert check_session_key(offer, key.public, ORIGIN) == (KEM, public, key.public)
    with pytest.raises(SignatureError, match="offered by log"):
        check_session_key(offer, key.public, "other.example/log")
    with pytest.raises(SignatureError, match="does not lead to"):
        check_session_key(offer, _log_key().public, ORIGIN)


def test_a_swapped_session_key_is_refused(
        offer_parts: tuple[LogSigningKey, bytes, dict[str, Any]]) -> None:
    """An attacker who answers /v1/session-key with their own KEM key, signed by their own
    log key, reads nothing: the device's pinned key leads elsewhere."""
    key, _public, offer = offer_parts
    _private, theirs = kem_suite(KEM).generate()
    swapped = {**offer, "public_key": base64.b64encode(theirs).decode()}
    with pytest.raises(SignatureError, match="does not verify"):
        check_session_key(swapped, key.public, ORIGIN)
    rogue = _log_key(name=key.key_id)
    resigned = sign_session_key(rogue, ORIGIN, KEM, theirs)
    with pytest.raises(SignatureError, match="does not lead to"):
        check_session_key(resigned, key.public, ORIGIN)


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_any_changed_byte_of_the_signed_fields_is_refused(
        offer_parts: tuple[LogSigningKey, bytes, dict[str, Any]], data: st.DataObject) -> None:
    key, _public, offer = offer_parts
    field = data.draw(st.sampled_from(["public_key", "signature"]))
    raw = bytearray(base64.b64decode(offer[field]))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= 1 << data.draw(st.integers(0, 7))
    forged = copy.deepcopy(offer)
    forged[field] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(SignatureError):
        check_session_key(forged, key.public, ORIGIN)


def test_a_device_follows_log_key_rotations_in_the_offer() -> None:
    first, second, third = _log_key(), _log_key("ml-dsa-65", "log-2"), _log_key(name="log-3")
    rotations = [endorse_log_key(first, second.public, ORIGIN, 5, 1, "ticket 1"),
                 endorse_log_key(second, third.public, ORIGIN, 9, 2, "ticket 2")]
    _private, public = kem_suite(KEM).generate()
    offer = sign_session_key(third, ORIGIN, KEM, public, rotations)
    checked = check_session_key(offer, first.public, ORIGIN)
    assert (checked.kem, checked.public_key) == (KEM, public)
    assert checked.log_key.same_key(third.public)     # the device trusts the new key now
    without = {**offer, "log_keys": []}
    with pytest.raises(SignatureError, match="does not lead to"):
        check_session_key(without, first.public, ORIGIN)
    with pytest.raises(SignatureError, match="not a signed session key"):
        check_session_key({"kem": KEM}, first.public, ORIGIN)
