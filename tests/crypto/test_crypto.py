"""Envelopes round-trip, fail opaquely, name their suite; site keys persist; signatures verify."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medtwin.crypto import (
    AEAD_SUITES,
    SIGNATURE_SUITES,
    KeyRing,
    SiteKeys,
    aead_suite,
    envelope_suite,
    open_sealed,
    seal,
    sign_packet,
    signature_suite,
    verify_signature,
)
from medtwin.domain import Channel, Reading, packet_signing_message, packet_wire
from medtwin.errors import ConfigError, DecryptionError, SignatureError

SUITES = sorted(AEAD_SUITES)
OPAQUE = r"^crypto: decryption failed \(wrong key, wrong context or tampered data\)$"
KEY = hashlib.sha256(b"test key").digest()
OTHER_KEY = hashlib.sha256(b"other key").digest()


def test_both_suites_are_registered() -> None:
    assert SUITES == ["aes-256-gcm", "chacha20-poly1305"]
    assert list(SIGNATURE_SUITES) == ["ed25519", "ecdsa-p256", "ml-dsa-65"]


@pytest.mark.parametrize("suite", SUITES)
@settings(max_examples=40, deadline=None)
@given(plaintext=st.binary(max_size=256), aad=st.binary(max_size=64))
def test_open_inverts_seal(suite: str, plaintext: bytes, aad: bytes) -> None:
    envelope = seal(KEY, plaintext, aad, suite)
    assert open_sealed(KEY, envelope, aad) == plaintext
    assert envelope_suite(envelope) == suite


@pytest.mark.parametrize("suite", SUITES)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_flipped_byte_is_one_opaque_error(suite: str, data: st.DataObject) -> None:
    plaintext = data.draw(st.binary(max_size=64))
    envelope = bytearray(seal(KEY, plaintext, b"ctx", suite))
    at = data.draw(st.integers(0, len(envelope) - 1))
    envelope[at] ^= data.draw(st.integers(1, 255))
    with pytest.raises(DecryptionError, match=OPAQUE):
        open_sealed(KEY, bytes(envelope), b"ctx")


@pytest.mark.parametrize("suite", SUITES)
def test_wrong_aad_wrong_key_or_truncation_is_the_same_error(suite: str) -> None:
    envelope = seal(KEY, b"heart rate 72", b"patient-1", suite)
    cases = [(KEY, envelope, b"patient-2"), (OTHER_KEY, envelope, b"patient-1"),
             (KEY[:16], envelope, b"patient-1"), (KEY, envelope[:-1], b"patient-1"),
             (KEY, envelope[:10], b"patient-1"), (KEY, b"", b"patient-1"),
             (KEY, envelope + b"\x00", b"patient-1")]
    messages = set()
    for key, env, aad in cases:
        with pytest.raises(DecryptionError, match=OPAQUE) as caught:
            open_sealed(key, env, aad)
        messages.add(str(caught.value))
    assert len(messages) == 1


def test_envelope_from_one_suite_cannot_be_relabelled_as_the_other() -> None:
    envelope = bytearray(seal(KEY, b"x", b"", "aes-256-gcm"))
    envelope[3] = aead_suite("chacha20-poly1305").suite_id
    assert envelope_suite(bytes(envelope)) == "chacha20-poly1305"
    with pytest.raises(DecryptionError):
        open_sealed(KEY, bytes(envelope), b"")


def test_envelope_suite_of_garbage_is_a_decryption_error() -> None:
    with pytest.raises(DecryptionError):
        envelope_suite(b"XX\x01\x01" + bytes(40))
    with pytest.raises(DecryptionError):
        envelope_suite(b"MT\x01\xff" + bytes(40))


def test_unknown_suites_are_config_errors_listing_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown AEAD suite 'des'; known: aes-256-gcm, "
                                          r"chacha20-poly1305$"):
        aead_suite("des")
    with pytest.raises(ConfigError, match=r"unknown AEAD suite 'rot13'"):
        seal(KEY, b"x", b"", "rot13")
    with pytest.raises(ConfigError, match=r"unknown signature suite 'rsa'; known: ecdsa-p256, "
                                          r"ed25519, ml-dsa-65$"):
        signature_suite("rsa")


def test_seal_is_randomized() -> None:
    assert seal(KEY, b"same", b"") != seal(KEY, b"same", b"")


# Site keys -------------------------------------------------------------------------------------

def test_load_or_create_writes_owner_only_files_and_reloads_the_same_keys(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    created = SiteKeys.load_or_create(keys_dir)
    files = sorted(p.name for p in keys_dir.iterdir())
    assert files == ["log-signing.json", "site-kek.json"]
    for name in files:
        assert stat.S_IMODE(os.stat(keys_dir / name).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(keys_dir).st_mode) & 0o077 == 0
    again = SiteKeys.load_or_create(keys_dir)
    assert again == created
    assert again.kek == created.kek and again.log_key.private_key == created.log_key.private_key
    assert len(created.kek) == 32
    assert SiteKeys.load(keys_dir) == created


def test_key_repr_hides_secrets(tmp_path: Path) -> None:
    keys = SiteKeys.load_or_create(tmp_path)
    text = repr(keys)
    assert keys.kek.hex() not in text and repr(keys.kek) not in text
    assert repr(keys.log_key.private_key) not in text


def test_load_without_key_files_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^keys: key file .*site-kek\.json is missing"):
        SiteKeys.load(tmp_path)


def test_malformed_key_file_is_a_config_error(tmp_path: Path) -> None:
    SiteKeys.load_or_create(tmp_path)
    (tmp_path / "site-kek.json").write_text('{"suite": "aes-256-gcm"}')
    with pytest.raises(ConfigError, match=r"keys: malformed key file"):
        SiteKeys.load(tmp_path)
    (tmp_path / "site-kek.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match=r"is not a JSON object"):
        SiteKeys.load(tmp_path)


def test_keyring_unwraps_data_keys_in_a_fresh_instance(tmp_path: Path) -> None:
    first = KeyRing(SiteKeys.load_or_create(tmp_path))
    wrapped = first.new_data_key("pt-1")
    sealed = first.seal("pt-1", wrapped, b"glucose 98", b"record-1")
    fresh = KeyRing(SiteKeys.load(tmp_path))
    assert fresh.data_key("pt-1", wrapped) == first.data_key("pt-1", wrapped)
    assert fresh.open("pt-1", wrapped, sealed, b"record-1") == b"glucose 98"
    with pytest.raises(DecryptionError):
        fresh.open("pt-1", wrapped, sealed, b"record-2")


def test_wrapped_key_is_bound_to_its_patient(tmp_path: Path) -> None:
    site = SiteKeys.load_or_create(tmp_path)
    wrapped = KeyRing(site).new_data_key("pt-1")
    with pytest.raises(DecryptionError):
        KeyRing(site).data_key("pt-2", wrapped)


def test_wrapped_key_needs_the_site_kek(tmp_path: Path) -> None:
    wrapped = KeyRing(SiteKeys.load_or_create(tmp_path / "a")).new_data_key("pt-1")
    with pytest.raises(DecryptionError):
        KeyRing(SiteKeys.load_or_create(tmp_path / "b")).data_key("pt-1", wrapped)


def test_keyring_seals_with_its_configured_suite(tmp_path: Path) -> None:
    ring = KeyRing(SiteKeys.load_or_create(tmp_path), "chacha20-poly1305")
    wrapped = ring.new_data_key("pt-1")
    assert envelope_suite(wrapped) == "chacha20-poly1305"
    assert envelope_suite(ring.seal("pt-1", wrapped, b"x", b"")) == "chacha20-poly1305"


# Signatures ------------------------------------------------------------------------------------

def test_signature_verifies_and_tampering_raises() -> None:
    private, public = signature_suite("ed25519").generate()
    signature = signature_suite("ed25519").sign(private, b"message")
    verify_signature("ed25519", public, b"message", signature)
    with pytest.raises(SignatureError, match="ed25519 signature does not verify"):
        verify_signature("ed25519", public, b"messagE", signature)
    with pytest.raises(SignatureError):
        verify_signature("ed25519", public, b"message", bytes([signature[0] ^ 1]) + signature[1:])
    with pytest.raises(SignatureError):
        verify_signature("ed25519", public[:31], b"message", signature)
    _, other_public = signature_suite("ed25519").generate()
    with pytest.raises(SignatureError):
        verify_signature("ed25519", other_public, b"message", signature)


def test_sign_packet_signs_the_domain_separated_message() -> None:
    private, public = signature_suite("ed25519").generate()
    wire = packet_wire("dev-1", 0, 1000, [Reading(Channel.SPO2, 97.0, 1000)])
    envelope = sign_packet(wire, private)
    assert envelope["packet"] is wire and envelope["suite"] == "ed25519"
    signature = base64.b64decode(envelope["signature"], validate=True)
    verify_signature("ed25519", public, packet_signing_message(wire), signature)
    wire["readings"][0]["value"] = 98.0
    with pytest.raises(SignatureError):
        verify_signature("ed25519", public, packet_signing_message(wire), signature)
