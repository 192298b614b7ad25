"""Device sessions: one signed, KEM-keyed handshake, then an AEAD tag per packet instead of a
signature (a high-rate device's packets cost a few µs to check instead of ~130 µs).

Handshake (device → site), JSON, signed with the device's registered signature key:
  {"handshake": {"device_id", "kem", "site_key", "kem_ciphertext", "nonce", "started_at",
                 "aead"}, "suite", "signature"}
  - `kem_ciphertext` (base64) is encapsulated to the site's session KEM public key
    (x25519+ml-kem-768 by default); `site_key` is the hex SHA-256 of that public key, so the
    signature binds the exact site key; `nonce` is 16 fresh random bytes (base64).
  - transcript = HANDSHAKE_CONTEXT || canonical JSON (RFC 8785) of `handshake`: the bytes the
    device signs; it binds the site key, the ciphertext, the device id, the nonce and the AEAD.
Key schedule, with th = SHA-256(transcript):
  session id = th[:16]
  key || iv  = HKDF-SHA256(ikm = KEM shared secret, salt = th,
                           info = SESSION_KEY_LABEL || aead name, length = key + nonce size)
Packet frame (device → site), binary:
  b"MS" | version (1) | AEAD suite id (1) | session id (16) | seq (8, big-endian) | ct || tag
  AAD = the 28-byte header; nonce = iv XOR seq (12 bytes, big-endian), as in TLS 1.3. The
  plaintext is the canonical JSON of the same packet a signed envelope carries, whose `seq`
  must equal the header's: one sequence number per device, whichever way it sends.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from medtwin.crypto._kem import kem_suite
from medtwin.crypto._suites import AEAD_BY_ID, AeadSuite, aead_suite, signature_suite
from medtwin.domain import canonical_json
from medtwin.errors import CryptoError, DecryptionError, InvalidInputError, SignatureError

#: The KEM that keys sessions by default: both X25519 and ML-KEM-768 must fall to read them.
SESSION_KEM_SUITE = "x25519+ml-kem-768"
#: Prefix of every handshake transcript: a handshake signature can never pass for a packet's.
HANDSHAKE_CONTEXT = b"medtwin/session-handshake/v1\n"
#: HKDF info prefix of the device-to-site packet key and IV.
SESSION_KEY_LABEL = b"medtwin/session/v1/device-to-site\n"
HANDSHAKE_NONCE_SIZE = 16
SESSION_ID_SIZE = 16
FRAME_MAGIC = b"MS"
FRAME_VERSION = 1
_FRAME_HEADER = struct.Struct(">2sBB16sQ")
FRAME_HEADER_SIZE = _FRAME_HEADER.size
#: Largest sequence number: packets are canonical JSON, whose integers stop at 2**53 - 1.
MAX_SEQ = 2**53 - 1


def site_key_id(public_key: bytes) -> str:
    """The hex SHA-256 of a site session KEM public key: what a handshake names it by."""
    return hashlib.sha256(public_key).hexdigest()


def handshake_transcript(handshake: dict[str, Any]) -> bytes:
    """The exact bytes a device signs for the handshake fields `handshake`."""
    return HANDSHAKE_CONTEXT + canonical_json(handshake)


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """One session's id and device-to-site packet key, derived alike on both sides."""

    session_id: bytes
    aead: AeadSuite
    key: bytes = field(repr=False)
    iv: bytes = field(repr=False)
    cipher: AESGCM | ChaCha20Poly1305 = field(repr=False, compare=False)


def derive_session_keys(shared_secret: bytes, transcript: bytes, aead: str) -> SessionKeys:
    """The session id, key and IV of a handshake, from its KEM secret and transcript."""
    spec = aead_suite(aead)
    digest = hashlib.sha256(transcript).digest()
    okm = HKDF(hashes.SHA256(), spec.key_size + spec.nonce_size, salt=digest,
               info=SESSION_KEY_LABEL + spec.name.encode()).derive(shared_secret)
    key, iv = okm[:spec.key_size], okm[spec.key_size:]
    return SessionKeys(digest[:SESSION_ID_SIZE], spec, key, iv, spec.factory(key))


def _nonce(keys: SessionKeys, seq: int) -> bytes:
    """iv XOR seq: unique per packet as long as no sequence number is sealed twice."""
    size = keys.aead.nonce_size
    return (int.from_bytes(keys.iv, "big") ^ seq).to_bytes(size, "big")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def build_handshake(device_id: str, signature_suite_name: str, private_key: bytes,
                    site_public_key: bytes, now_ms: int, *, kem: str = SESSION_KEM_SUITE,
                    aead: str = "aes-256-gcm") -> tuple[dict[str, Any], SessionSender]:
    """A device's signed handshake towards the site key `site_public_key`, and the sender
    that seals its packets in the session the site will derive from it."""
    shared, ciphertext = kem_suite(kem).encapsulate(site_public_key)
    handshake = {"device_id": device_id, "kem": kem, "site_key": site_key_id(site_public_key),
                 "kem_ciphertext": _b64(ciphertext),
                 "nonce": _b64(os.urandom(HANDSHAKE_NONCE_SIZE)), "started_at": now_ms,
                 "aead": aead_suite(aead).name}
    transcript = handshake_transcript(handshake)
    signature = signature_suite(signature_suite_name).sign(private_key, transcript)
    envelope = {"handshake": handshake, "suite": signature_suite_name,
                "signature": _b64(signature)}
    return envelope, SessionSender(derive_session_keys(shared, transcript, aead))


def accept_handshake(handshake: dict[str, Any], signature: bytes, device_suite: str,
                     device_public_key: bytes, site_private_key: bytes,
                     site_public_key: bytes) -> SessionKeys:
    """The session keys of a handshake whose fields have the protocol's shape (checked by the
    caller). Raises SignatureError unless the device key signed it for this site's key, and
    CryptoError if its KEM ciphertext is unusable."""
    # (1): the handshake names this site's current session key
    if handshake["site_key"] != site_key_id(site_public_key):
        raise SignatureError("session: the handshake is for another site session key; fetch "
                             "the site's current session key and handshake again")
    # (2): the device's registered key signed exactly this transcript
    transcript = handshake_transcript(handshake)
    signature_suite(device_suite).verify(device_public_key, transcript, signature)
    # (3): decapsulate and derive
    try:
        ciphertext = base64.b64decode(handshake["kem_ciphertext"], validate=True)
    except ValueError as exc:
        raise CryptoError("session: the KEM ciphertext is not base64") from exc
    shared = kem_suite(handshake["kem"]).decapsulate(site_private_key, ciphertext)
    return derive_session_keys(shared, transcript, handshake["aead"])


@dataclass(frozen=True, slots=True)
class FrameHeader:
    """The clear header of a session packet frame (authenticated as AAD, not yet trusted)."""

    aead_id: int
    session_id: bytes
    seq: int


def parse_frame_header(frame: bytes) -> FrameHeader:
    """The header of `frame`; DecryptionError if it is not a session frame of this version
    long enough to hold a tag (every malformed frame fails alike)."""
    if len(frame) < FRAME_HEADER_SIZE + 16:
        raise DecryptionError()
    magic, version, aead_id, session_id, seq = _FRAME_HEADER.unpack_from(frame)
    if magic != FRAME_MAGIC or version != FRAME_VERSION or aead_id not in AEAD_BY_ID:
        raise DecryptionError()
    return FrameHeader(aead_id, session_id, seq)


def seal_frame(keys: SessionKeys, seq: int, plaintext: bytes) -> bytes:
    """The frame of packet `seq` of a session; the caller never seals a `seq` twice."""
    if not 0 <= seq <= MAX_SEQ:
        raise InvalidInputError(f"session: sequence number must be 0..{MAX_SEQ}")
    header = _FRAME_HEADER.pack(FRAME_MAGIC, FRAME_VERSION, keys.aead.suite_id,
                                keys.session_id, seq)
    return header + keys.cipher.encrypt(_nonce(keys, seq), plaintext, header)


def open_frame(keys: SessionKeys, frame: bytes) -> tuple[int, bytes]:
    """(seq, plaintext) of a frame sealed under `keys`; one opaque DecryptionError for a
    frame of another session or suite, or any altered or truncated byte."""
    header = parse_frame_header(frame)
    if header.session_id != keys.session_id or header.aead_id != keys.aead.suite_id:
        raise DecryptionError()
    try:
        plaintext = keys.cipher.decrypt(_nonce(keys, header.seq), frame[FRAME_HEADER_SIZE:],
                                        frame[:FRAME_HEADER_SIZE])
    except (InvalidTag, ValueError) as exc:
        raise DecryptionError() from exc
    return header.seq, plaintext


class SessionSender:
    """A device's side of a session: seals packets, refusing a sequence number not above the
    last one it sealed (sealing one twice would reuse an AEAD nonce under the session key).

    A retry must resend the frame already sealed, never reseal its packet."""

    def __init__(self, keys: SessionKeys) -> None:
        self.keys = keys
        self.last_seq = -1

    @property
    def session_id(self) -> str:
        """The session id in hex, as the site reports it."""
        return self.keys.session_id.hex()

    def seal(self, wire: dict[str, Any]) -> bytes:
        """The frame of the packet `wire` (the dict a signed envelope's `packet` holds)."""
        seq = wire.get("seq")
        if not isinstance(seq, int) or seq <= self.last_seq:
            raise InvalidInputError(f"session: packet sequence number must be above "
                                    f"{self.last_seq}, the last sealed in this session; "
                                    "resend the frame already sealed instead of resealing")
        frame = seal_frame(self.keys, seq, canonical_json(wire))
        self.last_seq = seq
        return frame
