"""C2SP signed notes (c2sp.org/signed-note) and witness cosignatures (c2sp.org/tlog-cosignature).

A note is UTF-8 text ending in a newline, a blank line, then one or more signature lines
`— <key name> <base64(key ID || signature)>`. The 4-byte key ID is the start of
SHA-256(key name || 0x0A || signature type || public key), so every line names its algorithm
through its key, and notes signed before a suite switch stay verifiable after it.

Signature types:

- `0x01` Ed25519 over the note text (signed-note).
- `0x04` cosignature/v1: an Ed25519 witness signs `cosignature/v1\\ntime <s>\\n` + note text;
  the line carries key ID || 8-byte big-endian timestamp || signature (tlog-cosignature).
- A post-quantum witness (ML-DSA-65) cosigns the same message, with the same line layout, under
  the **medtwin-private** type `0xff` + `medtwin/ml-dsa-65-cosignature/v1`
  (`ML_DSA_65_COSIGNATURE_TYPE`): tlog-cosignature defines Ed25519 only.
- ECDSA P-256 and ML-DSA-65: **non-standard, medtwin-private.** signed-note assigns no byte to
  ML-DSA-65, and its `0x02` is "ECDSA as implemented by transparency-dev/witness" (key ID over
  the DER SPKI), which medtwin does not claim to match. Both use the spec's escape for
  unassigned types: `0xff` followed by a longer identifier (`ECDSA_P256_TYPE`,
  `ML_DSA_65_TYPE`). Other verifiers see these lines as signatures by unknown keys.

A witness's cosignature line joins a signed note by concatenation: `note + line`.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from medtwin.crypto import signature_suite, verify_signature
from medtwin.errors import ConfigError, SignatureError, VerificationError
from medtwin.ledger._checkpoint import MAX_ORIGIN_LENGTH, checkpoint_body

#: Largest note accepted or produced (prevents DoS); 100 ML-DSA-65 lines (≈4.4 kB each) fit.
MAX_NOTE_BYTES = 1 << 20
#: Most signature lines in a note (prevents DoS); Go's sumdb/note cap, spec requires ≥ 16.
MAX_SIGNATURE_LINES = 100
#: Largest cosignature timestamp (tlog-cosignature: it MUST NOT exceed 2^63 - 1).
MAX_TIMESTAMP_S = 2**63 - 1

SIGNATURE_PREFIX = "\u2014 "
ED25519_TYPE = b"\x01"
COSIGNATURE_V1_TYPE = b"\x04"
#: signed-note's escape for types without an assigned byte; medtwin's identifiers follow it.
PRIVATE_TYPE_ESCAPE = b"\xff"
ECDSA_P256_TYPE = PRIVATE_TYPE_ESCAPE + b"medtwin/ecdsa-p256-sha256-p1363"
ML_DSA_65_TYPE = PRIVATE_TYPE_ESCAPE + b"medtwin/ml-dsa-65"
ML_DSA_65_COSIGNATURE_TYPE = PRIVATE_TYPE_ESCAPE + b"medtwin/ml-dsa-65-cosignature/v1"
#: The signature type of a log (non-witness) key of each signature suite.
NOTE_SIGNATURE_TYPES: dict[str, bytes] = {
    "ed25519": ED25519_TYPE,
    "ecdsa-p256": ECDSA_P256_TYPE,
    "ml-dsa-65": ML_DSA_65_TYPE,
}
#: The signature type of a witness key of each suite a witness may cosign with.
COSIGNATURE_TYPES: dict[str, bytes] = {
    "ed25519": COSIGNATURE_V1_TYPE,
    "ml-dsa-65": ML_DSA_65_COSIGNATURE_TYPE,
}

_KEY_ID_SIZE = 4
_TIMESTAMP_SIZE = 8
#: Signature size of each suite a witness cosigns with (Ed25519: RFC 8032; ML-DSA-65: FIPS 204).
_COSIGNATURE_SIGNATURE_SIZES: dict[str, int] = {"ed25519": 64, "ml-dsa-65": 3309}
_ROOT_SIZE = 32
_MAX_TREE_SIZE = 2**64 - 1
_COSIGNATURE_HEADER = b"cosignature/v1\n"
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f]")
_TREE_SIZE = re.compile("0|[1-9][0-9]{0,19}")


@dataclass(frozen=True, slots=True)
class NoteVerifier:
    """A trusted public key; `cosigner` marks a tlog witness that makes cosignature/v1 lines."""

    name: str
    suite: str
    public_key: bytes
    cosigner: bool = False

    def __post_init__(self) -> None:
        _check_key_name(self.name)
        note_signature_type(self.suite, cosigner=self.cosigner)

    @property
    def key_id(self) -> bytes:
        """The 4-byte key ID that this key's signature lines carry."""
        return note_key_id(self.name, note_signature_type(self.suite, cosigner=self.cosigner),
                           self.public_key)


@dataclass(frozen=True, slots=True)
class NoteSigner:
    """A named private key of a signature suite that signs notes (or cosigns, if a witness)."""

    name: str
    suite: str
    private_key: bytes = field(repr=False)
    public_key: bytes

    def __post_init__(self) -> None:
        _check_key_name(self.name)
        signature_suite(self.suite)

    def verifier(self, *, cosigner: bool = False) -> NoteVerifier:
        """The verifier of this key, as a log key or (`cosigner`) as a witness key."""
        return NoteVerifier(self.name, self.suite, self.public_key, cosigner)


class NoteSignature(NamedTuple):
    """One signature line: key name and ID, signature, and a verified cosignature's timestamp.

    `signature` excludes the key ID, and the timestamp once a cosignature is verified.
    """

    name: str
    key_id: bytes
    signature: bytes
    timestamp_s: int | None = None


class OpenedNote(NamedTuple):
    """A verified note: its text, the signatures that verified, and those by unknown keys."""

    text: str
    verified: tuple[NoteSignature, ...]
    unknown: tuple[NoteSignature, ...]


class Checkpoint(NamedTuple):
    """The three lines of a C2SP tlog checkpoint."""

    origin: str
    size: int
    root: bytes


def note_key_id(name: str, signature_type: bytes, public_key: bytes) -> bytes:
    """SHA-256(name || 0x0A || signature type || public key)[:4], as signed-note recommends."""
    return hashlib.sha256(name.encode() + b"\n" + signature_type + public_key).digest()[:4]


def note_signature_type(suite: str, *, cosigner: bool = False) -> bytes:
    """The signature type of a `suite` key; ConfigError for a suite notes cannot carry."""
    if cosigner:
        try:
            return COSIGNATURE_TYPES[suite]
        except KeyError:
            known = ", ".join(sorted(COSIGNATURE_TYPES))
            raise ConfigError(f"note: witnesses cosign with {known}, not {suite!r}") from None
    try:
        return NOTE_SIGNATURE_TYPES[suite]
    except KeyError:
        known = ", ".join(sorted(NOTE_SIGNATURE_TYPES))
        raise ConfigError(f"note: no note signature type for suite {suite!r}; "
                          f"known: {known}") from None


def sign_note(text: str, signers: Sequence[NoteSigner]) -> str:
    """The signed note of `text` (non-empty, ending in a newline) with one line per signer."""
    message = _note_bytes(text, "note text")
    if not signers:
        raise ValueError("note: sign with at least one signer")
    keyed = [(signer, signer.verifier().key_id) for signer in signers]
    if len({(signer.name, key_id) for signer, key_id in keyed}) != len(keyed):
        raise ValueError("note: the same key is given twice; give each signer once")
    lines = [_signature_line(signer.name, key_id
                             + signature_suite(signer.suite).sign(signer.private_key, message))
             for signer, key_id in keyed]
    note = text + "\n" + "".join(lines)
    _check_bounds(note, len(lines))
    return note


def cosign_checkpoint(checkpoint_body: bytes, witness: NoteSigner, timestamp_s: int) -> str:
    """The witness's cosignature/v1 line over `checkpoint_body` at `timestamp_s` (POSIX s)."""
    try:
        _note_bytes(checkpoint_body.decode(), "checkpoint body")
    except UnicodeDecodeError:
        raise ValueError("note: checkpoint body is not UTF-8") from None
    if not 0 <= timestamp_s <= MAX_TIMESTAMP_S:
        raise ValueError(f"note: cosignature timestamp must be in [0, 2^63 - 1], "
                         f"not {timestamp_s}")
    key_id = witness.verifier(cosigner=True).key_id
    signature = signature_suite(witness.suite).sign(
        witness.private_key, _cosigned_message(checkpoint_body, timestamp_s))
    return _signature_line(witness.name,
                           key_id + timestamp_s.to_bytes(_TIMESTAMP_SIZE, "big") + signature)


def open_note(note: str, verifiers: Sequence[NoteVerifier]) -> OpenedNote:
    """Parse `note` strictly and verify it; VerificationError unless a known key verifies it.

    Steps: (0) size, (1) characters, (2) text and signature block, (3) signature lines,
    (4) duplicates, (5) known keys, (6) every known key's signature, (7) at least one.
    """
    index = _verifier_index(verifiers)
    try:
        text, signatures = _parse_note(note)
    except ValueError as exc:
        raise VerificationError(str(exc), "note") from exc
    message = text.encode()
    verified: list[NoteSignature] = []
    unknown: list[NoteSignature] = []
    for sig in signatures:
        # (5): known keys; unknown ones are ignored, as the spec requires, but reported
        verifier = index.get((sig.name, sig.key_id))
        if verifier is None:
            unknown.append(sig)
            continue
        # (6): a known key's bad signature rejects the whole note
        verified.append(_verify_signature(verifier, message, sig))
    # (7): at least one
    if not verified:
        names = ", ".join(f"{s.name}+{s.key_id.hex()}" for s in unknown)
        raise VerificationError(f"note: no signature by a known key (signed by: {names}); "
                                "add the signer's key to the verifiers", "note")
    return OpenedNote(text, tuple(verified), tuple(unknown))


def verify_cosignature(checkpoint_body: bytes, line: str, witness: NoteVerifier) -> int:
    """The timestamp of `witness`'s cosignature `line` on `checkpoint_body`, once verified."""
    if not witness.cosigner:
        raise ConfigError(f"note: key {witness.name!r} is not a witness; "
                          "use NoteVerifier(..., cosigner=True)")
    if not line.endswith("\n") or line.count("\n") != 1:
        raise VerificationError("note: a cosignature is one line ending in a newline", "note")
    try:
        body = checkpoint_body.decode()
    except UnicodeDecodeError as exc:
        raise VerificationError("note: checkpoint body is not UTF-8", "note") from exc
    timestamp_s = open_note(body + "\n" + line, [witness]).verified[0].timestamp_s
    assert timestamp_s is not None  # a cosigner's verified signature always has one
    return timestamp_s


def signature_line_key(line: str) -> tuple[str, bytes]:
    """The key name and 4-byte key ID that one signature line names: together they identify
    the exact key (and so the suite) that made it, as `NoteVerifier` does."""
    if not line.endswith("\n") or line.count("\n") != 1:
        raise VerificationError("note: a signature line is one line ending in a newline", "note")
    try:
        signature = _parse_signature_line(line[:-1])
    except ValueError as exc:
        raise VerificationError(str(exc), "note") from exc
    return signature.name, signature.key_id


def sign_checkpoint_note(origin: str, size: int, root: bytes,
                         signers: Sequence[NoteSigner]) -> str:
    """The checkpoint of a tree of `size` leaves with root `root`, as a signed note."""
    text = checkpoint_body(origin, size, root).decode()
    _parse_checkpoint(text)
    return sign_note(text, signers)


def open_checkpoint_note(note: str,
                         verifiers: Sequence[NoteVerifier]) -> tuple[Checkpoint, OpenedNote]:
    """Verify a checkpoint note and read its origin, size and root; VerificationError if not."""
    opened = open_note(note, verifiers)
    try:
        return _parse_checkpoint(opened.text), opened
    except ValueError as exc:
        raise VerificationError(str(exc), "checkpoint") from exc


def _parse_note(note: str) -> tuple[str, list[NoteSignature]]:
    """The text and signature lines of `note`; ValueError saying what is malformed."""
    # (0): size, before any work proportional to it
    if len(note) > MAX_NOTE_BYTES:
        raise ValueError(f"note: longer than {MAX_NOTE_BYTES} bytes")
    # (1): characters
    _note_bytes(note, "note")
    # (2): text and signature block, split at the last blank line
    split = note.rfind("\n\n")
    if split < 0:
        raise ValueError("note: no blank line between text and signatures")
    text, block = note[:split + 1], note[split + 2:]
    # (3): signature lines
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURE_LINES:
        raise ValueError(f"note: more than {MAX_SIGNATURE_LINES} signature lines")
    signatures = [_parse_signature_line(line) for line in lines]
    # (4): duplicates
    keys = [(s.name, s.key_id) for s in signatures]
    if len(set(keys)) != len(keys):
        raise ValueError("note: a key signs twice")
    return text, signatures


def _parse_signature_line(line: str) -> NoteSignature:
    if not line.startswith(SIGNATURE_PREFIX):
        raise ValueError("note: a signature line does not start with an em dash and a space")
    name, space, encoded = line[len(SIGNATURE_PREFIX):].partition(" ")
    if not space:
        raise ValueError("note: a signature line has no space between key name and signature")
    _check_key_name(name)
    blob = _strict_b64decode(encoded, "note: signature")
    if len(blob) <= _KEY_ID_SIZE:
        raise ValueError("note: a signature is shorter than its key ID")
    return NoteSignature(name, blob[:_KEY_ID_SIZE], blob[_KEY_ID_SIZE:])


def _verify_signature(verifier: NoteVerifier, message: bytes,
                      sig: NoteSignature) -> NoteSignature:
    """`sig` checked against `verifier`, with its timestamp split off if a cosignature."""
    where = f"{sig.name}+{sig.key_id.hex()}"
    signature, timestamp_s = sig.signature, None
    if verifier.cosigner:
        if len(signature) != _TIMESTAMP_SIZE + _COSIGNATURE_SIGNATURE_SIZES[verifier.suite]:
            raise VerificationError(f"note: cosignature by {where} is not a timestamp and a "
                                    f"{verifier.suite} signature", "note")
        timestamp_s = int.from_bytes(signature[:_TIMESTAMP_SIZE], "big")
        signature = signature[_TIMESTAMP_SIZE:]
        if timestamp_s > MAX_TIMESTAMP_S:
            raise VerificationError(f"note: cosignature by {where} has a timestamp beyond "
                                    "2^63 - 1", "note")
        message = _cosigned_message(message, timestamp_s)
    try:
        verify_signature(verifier.suite, verifier.public_key, message, signature)
    except SignatureError as exc:
        raise VerificationError(f"note: invalid signature by known key {where}", "note") from exc
    return NoteSignature(sig.name, sig.key_id, signature, timestamp_s)


def _parse_checkpoint(text: str) -> Checkpoint:
    """Origin, size and root of a checkpoint text; ValueError naming the bad line."""
    lines = text.split("\n")
    if len(lines) != 4 or lines[3]:
        raise ValueError("checkpoint: text must be exactly three lines (origin, size, root "
                         "hash); medtwin writes no extension lines")
    origin, size, root = lines[:3]
    if not origin or len(origin) > MAX_ORIGIN_LENGTH:
        raise ValueError(f"checkpoint: origin must be non-empty and at most "
                         f"{MAX_ORIGIN_LENGTH} characters")
    if not _TREE_SIZE.fullmatch(size) or int(size) > _MAX_TREE_SIZE:
        raise ValueError("checkpoint: size must be a decimal below 2^64 without leading zeros")
    digest = _strict_b64decode(root, "checkpoint: root hash")
    if len(digest) != _ROOT_SIZE:
        raise ValueError("checkpoint: root hash must be 32 bytes")
    return Checkpoint(origin, int(size), digest)


def _verifier_index(verifiers: Sequence[NoteVerifier]) -> dict[tuple[str, bytes], NoteVerifier]:
    index: dict[tuple[str, bytes], NoteVerifier] = {}
    for verifier in verifiers:
        key = (verifier.name, verifier.key_id)
        if key in index:
            raise ConfigError(f"note: two verifiers share key {key[0]}+{key[1].hex()}; "
                              "give each key once")
        index[key] = verifier
    return index


def _note_bytes(text: str, what: str) -> bytes:
    """`text` as UTF-8, if it is non-empty, ends in a newline and has no control characters."""
    if not text.endswith("\n"):
        raise ValueError(f"note: {what} must end in a newline")
    if _CONTROL.search(text):
        raise ValueError(f"note: {what} contains a control character other than newline")
    try:
        encoded = text.encode()
    except UnicodeEncodeError:
        raise ValueError(f"note: {what} is not valid UTF-8 (a lone surrogate)") from None
    if len(encoded) > MAX_NOTE_BYTES:
        raise ValueError(f"note: {what} is longer than {MAX_NOTE_BYTES} bytes")
    return encoded


def _check_bounds(note: str, n_lines: int) -> None:
    if len(note.encode()) > MAX_NOTE_BYTES or n_lines > MAX_SIGNATURE_LINES:
        raise ValueError(f"note: a signed note must fit in {MAX_NOTE_BYTES} bytes and "
                         f"{MAX_SIGNATURE_LINES} signature lines; sign a shorter text")


def _check_key_name(name: str) -> None:
    if not name or "+" in name or any(ch.isspace() for ch in name) or _CONTROL.search(name):
        raise ValueError(f"note: key name {name!r} must be non-empty, without spaces, '+' "
                         "or control characters")


def _strict_b64decode(encoded: str, what: str) -> bytes:
    """Standard base64 with padding, in its one canonical spelling (no malleable bits)."""
    try:
        raw = base64.b64decode(encoded, validate=True)
    except ValueError:
        raise ValueError(f"{what} is not valid base64") from None
    if base64.b64encode(raw).decode() != encoded:
        raise ValueError(f"{what} is not canonical base64")
    return raw


def _signature_line(name: str, blob: bytes) -> str:
    return f"{SIGNATURE_PREFIX}{name} {base64.b64encode(blob).decode()}\n"


def _cosigned_message(body: bytes, timestamp_s: int) -> bytes:
    return _COSIGNATURE_HEADER + f"time {timestamp_s}\n".encode() + body
