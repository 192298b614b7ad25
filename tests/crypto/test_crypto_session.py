"""Session crypto: the signed handshake derives the same keys on both sides and binds the site
key; frames open only whole, in their own session, and a sender never reuses a nonce."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from medtwin.crypto import (
    AEAD_SUITES,
    SIGNATURE_SUITES,
    SessionKeys,
    accept_handshake,
    build_handshake,
    derive_session_keys,
    handshake_transcript,
    kem_suite,
    open_frame,
    parse_frame_header,
    seal_frame,
    signature_suite,
    site_key_id,
)
from medtwin.crypto._session import FRAME_HEADER_SIZE, MAX_SEQ, SESSION_KEY_LABEL
from medtwin.errors import DecryptionError, InvalidInputError, SignatureError

T = 1_767_225_600_000
SITE_PRIVATE, SITE_PUBLIC = kem_suite("x25519+ml-kem-768").generate()
DEVICE_PRIVATE, DEVICE_PUBLIC = signature_suite("ed25519").generate()


def _accept(envelope: dict[str, Any], public: bytes = DEVICE_PUBLIC, suite: str = "ed25519",
            site: tuple[bytes, bytes] = (SITE_PRIVATE, SITE_PUBLIC)) -> SessionKeys:
    return accept_handshake(envelope["handshake"], base64.b64decode(envelope["signature"]),
                            suite, public, *site)


def _keys(aead: str = "aes-256-gcm", secret: bytes = b"\x07" * 32) -> SessionKeys:
    return derive_session_keys(secret, b"medtwin test transcript", aead)


KEYS = _keys()


@pytest.mark.parametrize("suite", list(SIGNATURE_SUITES))
@pytest.mark.parametrize("aead", list(AEAD_SUITES))
def test_both_sides_derive_the_same_session(suite: str, aead: str) -> None:
    private, public = signature_suite(suite).generate()
    envelope, sender = build_handshake("ecg-1", suite, private, SITE_PUBLIC, T, aead=aead)
    keys = _accept(envelope, public, suite)
    assert (keys.session_id, keys.key, keys.iv, keys.aead) == (
        sender.keys.session_id, sender.keys.key, sender.keys.iv, sender.keys.aead)
    wire = {"device_id": "ecg-1", "seq": 0, "sent_at": T, "readings": []}
    assert open_frame(keys, sender.seal(wire))[0] == 0
    assert envelope["handshake"]["site_key"] == site_key_id(SITE_PUBLIC)


def test_two_handshakes_make_unrelated_sessions() -> None:
    (_, first), (_, second) = (build_handshake("ecg-1", "ed25519", DEVICE_PRIVATE, SITE_PUBLIC,
                                               T) for _ in range(2))
    assert first.keys.session_id != second.keys.session_id
    assert first.keys.key != second.keys.key


@pytest.mark.parametrize("field,value", [
    ("device_id", "ecg-2"), ("nonce", "A" * 22 + "=="), ("started_at", T + 1),
    ("aead", "chacha20-poly1305")])
def test_a_handshake_altered_after_signing_is_refused(field: str, value: object) -> None:
    envelope, _ = build_handshake("ecg-1", "ed25519", DEVICE_PRIVATE, SITE_PUBLIC, T)
    envelope["handshake"][field] = value
    with pytest.raises(SignatureError, match="ed25519 signature does not verify"):
        _accept(envelope)


def test_a_swapped_kem_ciphertext_is_refused_by_the_signature() -> None:
    envelope, _ = build_handshake("ecg-1", "ed25519", DEVICE_PRIVATE, SITE_PUBLIC, T)
    other, _ = build_handshake("ecg-1", "ed25519", DEVICE_PRIVATE, SITE_PUBLIC, T)
    envelope["handshake"]["kem_ciphertext"] = other["handshake"]["kem_ciphertext"]
    with pytest.raises(SignatureError, match="does not verify"):
        _accept(envelope)


def test_a_handshake_for_another_site_key_is_refused_before_decapsulation() -> None:
    other_private, other_public = kem_suite("x25519+ml-kem-768").generate()
    envelope, _ = build_handshake("ecg-1", "ed25519", DEVICE_PRIVATE, other_public, T)
    with pytest.raises(SignatureError, match="another site session key; fetch"):
        _accept(envelope)
    assert _accept(envelope, site=(other_private, other_public)).session_id


def test_another_devices_key_does_not_verify_the_handshake() -> None:
    envelope, _ = build_handshake("ecg-1", "ed25519", DEVICE_PRIVATE, SITE_PUBLIC, T)
    _, stranger = signature_suite("ed25519").generate()
    with pytest.raises(SignatureError):
        _accept(envelope, stranger)


def test_key_schedule_is_hkdf_sha256_over_the_transcript_hash() -> None:
    """Known answer, recomputed with the standard library's HMAC (RFC 5869 by hand)."""
    secret, transcript = b"\x01" * 32, b"medtwin/session-handshake/v1\n{}"
    th = hashlib.sha256(transcript).digest()
    prk = hmac.new(th, secret, hashlib.sha256).digest()
    info = SESSION_KEY_LABEL + b"aes-256-gcm"
    t1 = hmac.new(prk, info + b"\x01", hashlib.sha256).digest()
    t2 = hmac.new(prk, t1 + info + b"\x02", hashlib.sha256).digest()
    keys = derive_session_keys(secret, transcript, "aes-256-gcm")
    assert (keys.session_id, keys.key, keys.iv) == (th[:16], t1, t2[:12])
    assert handshake_transcript({"b": 1, "a": "x"}) == (
        b'medtwin/session-handshake/v1\n{"a":"x","b":1}')


@given(seq=st.integers(0, MAX_SEQ), plaintext=st.binary(max_size=512),
       aead=st.sampled_from(list(AEAD_SUITES)))
def test_open_of_seal_is_the_plaintext(seq: int, plaintext: bytes, aead: str) -> None:
    keys = _keys(aead)
    frame = seal_frame(keys, seq, plaintext)
    assert open_frame(keys, frame) == (seq, plaintext)
    header = parse_frame_header(frame)
    assert (header.session_id, header.seq) == (keys.session_id, seq)
    assert len(frame) == FRAME_HEADER_SIZE + len(plaintext) + 16


@given(seq=st.integers(0, MAX_SEQ), plaintext=st.binary(max_size=128), data=st.data())
def test_any_bit_flip_is_refused(seq: int, plaintext: bytes, data: st.DataObject) -> None:
    frame = bytearray(seal_frame(KEYS, seq, plaintext))
    bit = data.draw(st.integers(0, len(frame) * 8 - 1))
    frame[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(DecryptionError):
        open_frame(KEYS, bytes(frame))


@given(plaintext=st.binary(max_size=128), data=st.data())
def test_any_truncation_or_extension_is_refused(plaintext: bytes, data: st.DataObject) -> None:
    frame = seal_frame(KEYS, 5, plaintext)
    cut = data.draw(st.integers(0, len(frame) - 1))
    with pytest.raises(DecryptionError):
        open_frame(KEYS, frame[:cut])
    with pytest.raises(DecryptionError):
        open_frame(KEYS, frame + data.draw(st.binary(min_size=1, max_size=8)))


@given(seq=st.integers(0, 2**32), plaintext=st.binary(max_size=64))
def test_a_frame_opens_in_no_other_session(seq: int, plaintext: bytes) -> None:
    other = _keys(secret=b"\x08" * 32)
    with pytest.raises(DecryptionError):
        open_frame(other, seal_frame(KEYS, seq, plaintext))
    # nor with the header's session id rewritten to the other session
    frame = seal_frame(KEYS, seq, plaintext)
    forged = frame[:4] + other.session_id + frame[4 + 16:]
    with pytest.raises(DecryptionError):
        open_frame(other, forged)


@given(first=st.integers(0, 1000), delta=st.integers(0, 1000))
def test_a_sender_refuses_a_sequence_number_not_above_its_last(first: int, delta: int) -> None:
    _, sender = build_handshake("ecg-1", "ed25519", DEVICE_PRIVATE, SITE_PUBLIC, T)
    sender.seal({"device_id": "ecg-1", "seq": first + delta, "sent_at": T, "readings": []})
    with pytest.raises(InvalidInputError, match=r"must be above .*resend the frame"):
        sender.seal({"device_id": "ecg-1", "seq": first, "sent_at": T, "readings": []})


def test_frames_with_distinct_sequence_numbers_use_distinct_nonces() -> None:
    frames = [seal_frame(KEYS, seq, b"same") for seq in range(64)]
    assert len({f[FRAME_HEADER_SIZE:] for f in frames}) == 64


@pytest.mark.parametrize("seq", [-1, MAX_SEQ + 1])
def test_out_of_range_sequence_numbers_cannot_be_sealed(seq: int) -> None:
    with pytest.raises(InvalidInputError, match="sequence number must be"):
        seal_frame(KEYS, seq, b"")


@pytest.mark.parametrize("frame", [b"", b"MS", b"XX" + bytes(60), b"MS\x02\x01" + bytes(60),
                                   b"MS\x01\x09" + bytes(60)])
def test_what_is_not_a_frame_is_refused_opaquely(frame: bytes) -> None:
    with pytest.raises(DecryptionError, match="decryption failed"):
        parse_frame_header(frame)
