"""C2SP signed notes: Go's reference vectors, checkpoint notes with log and witness signatures,
strict parsing, tampering, and property tests of the parser and of sign→open."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from medtwin.crypto import SIGNATURE_SUITES, signature_suite
from medtwin.errors import ConfigError, VerificationError
from medtwin.ledger._checkpoint import checkpoint_body
from medtwin.ledger._note import (
    COSIGNATURE_TYPES,
    COSIGNATURE_V1_TYPE,
    ED25519_TYPE,
    MAX_NOTE_BYTES,
    MAX_SIGNATURE_LINES,
    MAX_TIMESTAMP_S,
    ML_DSA_65_TYPE,
    PRIVATE_TYPE_ESCAPE,
    Checkpoint,
    NoteSigner,
    NoteVerifier,
    cosign_checkpoint,
    note_key_id,
    note_signature_type,
    open_checkpoint_note,
    open_note,
    sign_checkpoint_note,
    sign_note,
    signature_line_key,
    verify_cosignature,
)

# Vectors from golang.org/x/mod/sumdb/note, note_test.go (TestNewVerifier, TestSign, TestOpen):
# the PeterNeumann signer key `PRIVATE+KEY+PeterNeumann+c74f20a3+<base64(0x01 || seed)>`, its
# verifier key `PeterNeumann+c74f20a3+<base64(0x01 || public key)>`, and the signed note.
GO_SEED = base64.b64decode("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")[1:]
GO_PUBLIC = base64.b64decode("ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")[1:]
GO_TEXT = ("If you think cryptography is the answer to your problem,\n"
           "then you don't know what your problem is.\n")
GO_PETER = ("— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqd"
            "ngotpRZb6KE6RyyBwJnAM=\n")
GO_ENOCH = ("— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGw"
            "nWLox33WWd1RvMc+QQ=\n")
GO_PETER_SIGNER = NoteSigner("PeterNeumann", "ed25519", GO_SEED, GO_PUBLIC)

ORIGIN = "medtwin.example/log"
ROOT = hashlib.sha256(b"root").digest()
SIZE = 20852163
T_S = 1_767_225_600


def _signer(name: str, suite: str) -> NoteSigner:
    private, public = signature_suite(suite).generate()
    return NoteSigner(name, suite, private, public)


LOG_ED = _signer("medtwin.example/log", "ed25519")
LOG_PQ = _signer("medtwin.example/log", "ml-dsa-65")
WITNESS = _signer("witness.example/w1", "ed25519")
WITNESS_KEY = WITNESS.verifier(cosigner=True)
ALL_KEYS = [LOG_ED.verifier(), LOG_PQ.verifier(), WITNESS_KEY]


def _checkpoint_note() -> str:
    """A checkpoint signed by the Ed25519 and ML-DSA-65 log keys and cosigned by the witness."""
    note = sign_checkpoint_note(ORIGIN, SIZE, ROOT, [LOG_ED, LOG_PQ])
    return note + cosign_checkpoint(checkpoint_body(ORIGIN, SIZE, ROOT), WITNESS, T_S)


def _replace_blob(line: str, edit: bytes) -> str:
    """`line` with the bytes of its base64 blob XORed with `edit` (from the first byte on)."""
    prefix, encoded = line.rstrip("\n").rsplit(" ", 1)
    blob = bytearray(base64.b64decode(encoded))
    for i, b in enumerate(edit):
        blob[i] ^= b
    return f"{prefix} {base64.b64encode(bytes(blob)).decode()}\n"


def _lines(note: str) -> tuple[str, list[str]]:
    text, block = note.rsplit("\n\n", 1)
    return text + "\n", [line + "\n" for line in block.rstrip("\n").split("\n")]


# Known answers --------------------------------------------------------------------------------

def test_key_id_matches_the_go_sumdb_note_vector() -> None:
    derived = ed25519.Ed25519PrivateKey.from_private_bytes(GO_SEED).public_key()
    assert derived.public_bytes_raw() == GO_PUBLIC
    assert note_key_id("PeterNeumann", ED25519_TYPE, GO_PUBLIC).hex() == "c74f20a3"
    assert GO_PETER_SIGNER.verifier().key_id.hex() == "c74f20a3"


def test_signing_reproduces_the_go_sumdb_note_byte_for_byte() -> None:
    assert sign_note(GO_TEXT, [GO_PETER_SIGNER]) == GO_TEXT + "\n" + GO_PETER


def test_go_note_opens_and_reports_the_unknown_signer() -> None:
    opened = open_note(GO_TEXT + "\n" + GO_PETER + GO_ENOCH, [GO_PETER_SIGNER.verifier()])
    assert opened.text == GO_TEXT
    assert [(s.name, s.key_id.hex()) for s in opened.verified] == [("PeterNeumann", "c74f20a3")]
    assert [(s.name, s.key_id.hex()) for s in opened.unknown] == [("EnochRoot", "af0cfe78")]


def test_go_corrupted_signature_by_the_known_key_rejects_the_note() -> None:
    corrupted = GO_PETER[:60] + "ABCD" + GO_PETER[60:]
    with pytest.raises(VerificationError, match=r"^note: invalid signature by known key "
                                                r"PeterNeumann\+c74f20a3$"):
        open_note(GO_TEXT + "\n" + corrupted, [GO_PETER_SIGNER.verifier()])


@pytest.mark.parametrize("note", [
    GO_TEXT,
    GO_TEXT + "\n",
    GO_TEXT + "\n" + GO_PETER[:-1],
    "\x01" + GO_TEXT + "\n" + GO_PETER,
    GO_TEXT + "\n" + "— Bad Name " + GO_PETER.split(" ")[2],
    GO_TEXT + "\n" + GO_PETER + "Unexpected line.\n",
], ids=["no-signatures", "blank-only", "no-final-newline", "control-char", "space-in-name",
        "trailing-line"])
def test_go_malformed_notes_are_refused(note: str) -> None:
    with pytest.raises(VerificationError, match=r"^note: "):
        open_note(note, [GO_PETER_SIGNER.verifier()])


def test_tlog_cosignature_spec_example_parses_its_key_ids() -> None:
    # The example checkpoint of c2sp.org/tlog-cosignature; its public keys are not published,
    # so only the parse is checked: both lines are reported as unknown keys.
    example = (
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n"
        "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Z"
        "hcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
        "— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrD"
        "JsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n")
    with pytest.raises(VerificationError, match=r"^note: no signature by a known key \(signed "
                                                r"by: example.com/behind-the-sofa\+033de0ae, "
                                                r"witness.example.com/w1\+8d66cf3f\)"):
        open_note(example, [WITNESS_KEY])


def test_cosigned_message_is_the_spec_format() -> None:
    # Checked with the Ed25519 primitive directly, not through the module under test.
    body = checkpoint_body(ORIGIN, SIZE, ROOT)
    blob = base64.b64decode(cosign_checkpoint(body, WITNESS, T_S).split(" ")[2])
    assert blob[:4] == note_key_id(WITNESS.name, b"\x04", WITNESS.public_key)
    assert int.from_bytes(blob[4:12], "big") == T_S
    message = b"cosignature/v1\ntime 1767225600\n" + body
    ed25519.Ed25519PublicKey.from_public_bytes(WITNESS.public_key).verify(blob[12:], message)


def test_signature_types_are_the_documented_ones() -> None:
    assert (ED25519_TYPE, COSIGNATURE_V1_TYPE, PRIVATE_TYPE_ESCAPE) == (b"\x01", b"\x04", b"\xff")
    assert ML_DSA_65_TYPE.startswith(b"\xff") and len(ML_DSA_65_TYPE) > 1
    assert {note_signature_type(s) for s in SIGNATURE_SUITES} == {
        b"\x01", b"\xffmedtwin/ecdsa-p256-sha256-p1363", b"\xffmedtwin/ml-dsa-65"}
    assert note_signature_type("ed25519", cosigner=True) == b"\x04"


# Checkpoint notes -----------------------------------------------------------------------------

def test_checkpoint_note_round_trips_with_two_log_signatures_and_a_cosignature() -> None:
    checkpoint, opened = open_checkpoint_note(_checkpoint_note(), ALL_KEYS)
    assert checkpoint == Checkpoint(ORIGIN, SIZE, ROOT)
    assert [(s.name, s.timestamp_s) for s in opened.verified] == [
        (LOG_ED.name, None), (LOG_PQ.name, None), (WITNESS.name, T_S)]
    assert [len(s.signature) for s in opened.verified] == [64, 3309, 64]
    assert opened.unknown == ()


def test_a_witness_only_key_set_verifies_the_note_and_reports_the_log_keys() -> None:
    checkpoint, opened = open_checkpoint_note(_checkpoint_note(), [WITNESS_KEY])
    assert checkpoint.size == SIZE
    assert [(s.name, s.timestamp_s) for s in opened.verified] == [(WITNESS.name, T_S)]
    assert [s.key_id for s in opened.unknown] == [LOG_ED.verifier().key_id,
                                                  LOG_PQ.verifier().key_id]


def test_verify_cosignature_returns_the_timestamp() -> None:
    body = checkpoint_body(ORIGIN, SIZE, ROOT)
    line = cosign_checkpoint(body, WITNESS, T_S)
    assert verify_cosignature(body, line, WITNESS_KEY) == T_S
    with pytest.raises(VerificationError, match=r"^note: invalid signature by known key"):
        verify_cosignature(checkpoint_body(ORIGIN, SIZE + 1, ROOT), line, WITNESS_KEY)
    with pytest.raises(VerificationError, match="one line ending in a newline"):
        verify_cosignature(body, line + line, WITNESS_KEY)
    with pytest.raises(ConfigError, match="is not a witness"):
        verify_cosignature(body, line, WITNESS.verifier())


def test_a_cosignature_line_names_the_exact_key_that_made_it() -> None:
    """Same name, another suite: another key ID, so a re-registered witness's old lines are
    told apart from its new ones."""
    body = checkpoint_body(ORIGIN, SIZE, ROOT)
    pq = _signer(WITNESS.name, "ml-dsa-65")
    assert signature_line_key(cosign_checkpoint(body, WITNESS, T_S)) == (
        WITNESS.name, WITNESS_KEY.key_id)
    assert signature_line_key(cosign_checkpoint(body, pq, T_S)) == (
        WITNESS.name, pq.verifier(cosigner=True).key_id)
    assert pq.verifier(cosigner=True).key_id != WITNESS_KEY.key_id
    with pytest.raises(VerificationError, match="one line ending in a newline"):
        signature_line_key("\u2014 w AAAAAAAA")
    with pytest.raises(VerificationError, match="shorter than its key ID"):
        signature_line_key("\u2014 w AAAA\n")


@pytest.mark.parametrize("suite", sorted(SIGNATURE_SUITES))
def test_every_suite_signs_a_note_that_names_its_algorithm(suite: str) -> None:
    signer = _signer("medtwin.example/log", suite)
    note = sign_note("hello\n", [signer])
    assert [s.key_id for s in open_note(note, [signer.verifier()]).verified] == [
        note_key_id(signer.name, note_signature_type(suite), signer.public_key)]


def test_old_notes_stay_verifiable_after_a_suite_switch() -> None:
    old = sign_checkpoint_note(ORIGIN, SIZE, ROOT, [LOG_ED])
    new = sign_checkpoint_note(ORIGIN, SIZE + 1, ROOT, [LOG_PQ])
    keys = [LOG_ED.verifier(), LOG_PQ.verifier()]
    assert open_checkpoint_note(old, keys)[0].size == SIZE
    assert open_checkpoint_note(new, keys)[0].size == SIZE + 1
    with pytest.raises(VerificationError, match="no signature by a known key"):
        open_note(old, [LOG_PQ.verifier()])


# Tampering ------------------------------------------------------------------------------------

def test_tampered_text_is_refused() -> None:
    note = _checkpoint_note().replace(f"\n{SIZE}\n", f"\n{SIZE + 1}\n")
    with pytest.raises(VerificationError, match=r"^note: invalid signature by known key "
                                                r"medtwin.example/log\+"):
        open_note(note, ALL_KEYS)
    with pytest.raises(VerificationError, match=r"^note: invalid signature by known key "
                                                r"witness.example/w1\+"):
        open_note(note, [WITNESS_KEY])


@pytest.mark.parametrize("which", [0, 1, 2])
def test_tampered_signature_is_refused(which: int) -> None:
    text, lines = _lines(_checkpoint_note())
    lines[which] = _replace_blob(lines[which], bytes(20) + b"\x01")
    with pytest.raises(VerificationError, match=r"^note: invalid signature by known key"):
        open_note(text + "\n" + "".join(lines), ALL_KEYS)


def test_tampered_key_name_makes_the_signature_unknown() -> None:
    text, lines = _lines(_checkpoint_note())
    renamed = lines[2].replace(WITNESS.name, "witness.example/w2")
    opened = open_note(text + "\n" + "".join(lines[:2]) + renamed, ALL_KEYS)
    assert [s.name for s in opened.unknown] == ["witness.example/w2"]
    with pytest.raises(VerificationError, match=r"no signature by a known key \(signed by: .*"
                                                r"witness.example/w2\+"):
        open_note(text + "\n" + renamed, [WITNESS_KEY])


@pytest.mark.parametrize(("edit", "message"), [
    (bytes(11) + b"\x01", r"invalid signature by known key witness.example/w1\+[0-9a-f]{8}$"),
    (bytes(4) + b"\x80", r"cosignature by witness.example/w1\+[0-9a-f]{8} has a timestamp "
                         r"beyond 2\^63 - 1$"),
], ids=["timestamp+1", "timestamp-beyond-2^63"])
def test_tampered_timestamp_is_refused(edit: bytes, message: str) -> None:
    body = checkpoint_body(ORIGIN, SIZE, ROOT)
    line = _replace_blob(cosign_checkpoint(body, WITNESS, T_S), edit)
    with pytest.raises(VerificationError, match=rf"^note: {message}"):
        verify_cosignature(body, line, WITNESS_KEY)


def test_cosignature_of_wrong_length_is_refused() -> None:
    body = checkpoint_body(ORIGIN, SIZE, ROOT)
    line = cosign_checkpoint(body, WITNESS, T_S)
    name, encoded = line.rstrip("\n").rsplit(" ", 1)
    short = f"{name} {base64.b64encode(base64.b64decode(encoded)[:-1]).decode()}\n"
    with pytest.raises(VerificationError, match=r"cosignature by .* is not a timestamp and "
                                                r"a ed25519 signature$"):
        verify_cosignature(body, short, WITNESS_KEY)


# Strict parsing -------------------------------------------------------------------------------

SIGNED = sign_note("text\n", [LOG_ED])
LINE = SIGNED.split("\n\n")[1]
_, BLOB = LINE.rstrip("\n").rsplit(" ", 1)
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
#: BLOB with non-zero unused bits in its last character: decodes to the same bytes.
NONCANONICAL = BLOB[:-2] + _B64[_B64.index(BLOB[-2]) ^ 1] + "="


@pytest.mark.parametrize(("note", "message"), [
    ("text\n\n" + LINE[:-1], "must end in a newline"),
    ("text\n" + LINE, "no blank line between text and signatures"),
    ("text\n\n", "does not start with an em dash"),
    ("text\n\n-- medtwin.example/log " + BLOB + "\n", "does not start with an em dash"),
    ("text\n\n—medtwin.example/log " + BLOB + "\n", "does not start with an em dash"),
    ("text\n\n— medtwin.example/log\n", "no space between key name and signature"),
    ("text\n\n—  " + BLOB + "\n", "key name '' must be non-empty"),
    ("text\n\n— a+b " + BLOB + "\n", r"key name 'a\+b' must be non-empty, without spaces"),
    ("text\n\n— a\u00a0b " + BLOB + "\n", "without spaces"),
    ("text\n\n— medtwin.example/log " + BLOB[:-2] + "\n", "signature is not valid base64"),
    ("text\n\n— medtwin.example/log " + BLOB + " \n", "signature is not valid base64"),
    ("text\n\n— medtwin.example/log " + NONCANONICAL + "\n", "signature is not canonical base64"),
    ("text\n\n— medtwin.example/log AAAAAA==\n", "signature is shorter than its key ID"),
    ("text\n\n" + LINE + LINE, "a key signs twice"),
    ("te\rxt\n\n" + LINE, "control character other than newline"),
    ("te\udc80xt\n\n" + LINE, "not valid UTF-8"),
    ("text\n\n" + LINE * (MAX_SIGNATURE_LINES + 1), "more than 100 signature lines"),
    ("x" * MAX_NOTE_BYTES + "\n\n" + LINE, "longer than 1048576 bytes"),
    ("é" * (MAX_NOTE_BYTES // 2) + "\n\n" + LINE, "longer than 1048576 bytes"),
])
def test_malformed_notes_are_refused_saying_why(note: str, message: str) -> None:
    with pytest.raises(VerificationError, match=message) as caught:
        open_note(note, [LOG_ED.verifier()])
    assert caught.value.record == "note"


def test_a_note_with_only_unknown_keys_is_refused_naming_them() -> None:
    with pytest.raises(VerificationError, match=r"^note: no signature by a known key \(signed "
                                                rf"by: medtwin.example/log\+"
                                                rf"{LOG_ED.verifier().key_id.hex()}\); add the"):
        open_note(SIGNED, [WITNESS_KEY])


def test_verifiers_sharing_a_key_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"two verifiers share key medtwin\.example/log\+"):
        open_note(SIGNED, [LOG_ED.verifier(), LOG_ED.verifier()])


@pytest.mark.parametrize(("text", "message"), [
    (f"{ORIGIN}\n0{SIZE}\n{base64.b64encode(ROOT).decode()}\n", "without leading zeros"),
    (f"{ORIGIN}\n-1\n{base64.b64encode(ROOT).decode()}\n", "without leading zeros"),
    (f"{ORIGIN}\n{2**64}\n{base64.b64encode(ROOT).decode()}\n", "below 2\\^64"),
    (f"{ORIGIN}\n１２\n{base64.b64encode(ROOT).decode()}\n", "size must be a decimal"),
    (f"{ORIGIN}\n{SIZE}\n{base64.b64encode(ROOT[:31]).decode()}\n", "root hash must be 32 bytes"),
    (f"{ORIGIN}\n{SIZE}\n{base64.b64encode(ROOT).decode()[:-1]}\n", "root hash is not valid"),
    (f"\n{SIZE}\n{base64.b64encode(ROOT).decode()}\n", "origin must be non-empty"),
    (f"{ORIGIN}\n{SIZE}\n{base64.b64encode(ROOT).decode()}\next\n", "exactly three lines"),
    (f"{ORIGIN}\n{SIZE}\n", "exactly three lines"),
])
def test_checkpoint_lines_are_validated_strictly(text: str, message: str) -> None:
    note = sign_note(text, [LOG_ED])
    with pytest.raises(VerificationError, match=rf"^checkpoint: .*{message}") as caught:
        open_checkpoint_note(note, [LOG_ED.verifier()])
    assert caught.value.record == "checkpoint"


@pytest.mark.parametrize(("size", "root", "message"), [
    (-1, ROOT, "size must be a decimal"), (1, ROOT[:16], "root hash must be 32 bytes")])
def test_sign_checkpoint_note_refuses_what_it_could_not_open(size: int, root: bytes,
                                                             message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sign_checkpoint_note(ORIGIN, size, root, [LOG_ED])


def test_signing_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="note text must end in a newline"):
        sign_note("text", [LOG_ED])
    with pytest.raises(ValueError, match="at least one signer"):
        sign_note("text\n", [])
    with pytest.raises(ValueError, match="the same key is given twice"):
        sign_note("text\n", [LOG_ED, LOG_ED])
    with pytest.raises(ValueError, match=r"fit in 1048576 bytes"):
        sign_note("x" * (MAX_NOTE_BYTES - 1) + "\n", [LOG_ED])
    with pytest.raises(ValueError, match="key name 'log key' must be non-empty, without spaces"):
        NoteSigner("log key", "ed25519", LOG_ED.private_key, LOG_ED.public_key)
    with pytest.raises(ConfigError, match="unknown signature suite 'rsa'"):
        NoteSigner("log", "rsa", b"", b"")


def test_cosigning_refuses_bad_input() -> None:
    body = checkpoint_body(ORIGIN, SIZE, ROOT)
    ecdsa = _signer("witness.example/w2", "ecdsa-p256")
    with pytest.raises(ConfigError, match="witnesses cosign with ed25519, ml-dsa-65, not "
                                          "'ecdsa-p256'"):
        cosign_checkpoint(body, ecdsa, T_S)
    with pytest.raises(ConfigError, match="witnesses cosign with ed25519, ml-dsa-65"):
        NoteVerifier("w", "ecdsa-p256", b"", cosigner=True)
    for bad in (-1, MAX_TIMESTAMP_S + 1):
        with pytest.raises(ValueError, match=r"timestamp must be in \[0, 2\^63 - 1\]"):
            cosign_checkpoint(body, WITNESS, bad)
    with pytest.raises(ValueError, match="checkpoint body is not UTF-8"):
        cosign_checkpoint(b"\xff\n", WITNESS, T_S)
    with pytest.raises(ValueError, match="checkpoint body must end in a newline"):
        cosign_checkpoint(body[:-1], WITNESS, T_S)


# Properties -----------------------------------------------------------------------------------

_TEXT_CHARS = st.characters(blacklist_categories=["Cs"],
                            blacklist_characters=[chr(c) for c in range(0x20) if c != 0x0A])
_NOTE_TEXTS = st.lists(st.one_of(st.sampled_from(["\n", "\n\n", "— ", "—", " ", "+", "="]),
                                 st.text(_TEXT_CHARS, max_size=12)), max_size=12).map(
    lambda parts: "".join(parts) + "\n")


@settings(max_examples=60)
@given(text=_NOTE_TEXTS)
def test_sign_then_open_round_trips_any_valid_text(text: str) -> None:
    opened = open_note(sign_note(text, [LOG_ED, WITNESS]), [LOG_ED.verifier(), WITNESS.verifier()])
    assert opened.text == text
    assert [s.name for s in opened.verified] == [LOG_ED.name, WITNESS.name]


@settings(max_examples=5)
@given(text=_NOTE_TEXTS)
def test_sign_then_open_round_trips_with_ml_dsa(text: str) -> None:
    assert open_note(sign_note(text, [LOG_PQ]), [LOG_PQ.verifier()]).text == text


@settings(max_examples=40)
@given(timestamp_s=st.integers(0, MAX_TIMESTAMP_S))
def test_cosignature_round_trips_any_timestamp(timestamp_s: int) -> None:
    body = checkpoint_body(ORIGIN, SIZE, ROOT)
    assert verify_cosignature(body, cosign_checkpoint(body, WITNESS, timestamp_s),
                              WITNESS_KEY) == timestamp_s


_VALID = _checkpoint_note()


@settings(max_examples=300)
@given(note=st.one_of(
    st.text(),
    st.text(alphabet=st.sampled_from(list("—\n +=/Aa\r\udc80é"))),
    st.tuples(st.integers(0, len(_VALID)), st.integers(0, 64), st.text(max_size=8)).map(
        lambda t: _VALID[:t[0]] + t[2] + _VALID[t[0] + t[1]:]),
))
def test_parser_raises_only_verification_errors_on_any_text(note: str) -> None:
    # Stricter than "ValueError or VerificationError": every refusal is a VerificationError.
    try:
        checkpoint, _ = open_checkpoint_note(note, ALL_KEYS)
    except VerificationError:
        return
    assert checkpoint == Checkpoint(ORIGIN, SIZE, ROOT)


_CHECKPOINT_LINES = st.one_of(
    st.sampled_from([ORIGIN, str(SIZE), "0", "00", "-1", str(2**64), "", "１",
                     base64.b64encode(ROOT).decode(), base64.b64encode(ROOT[:31]).decode()]),
    st.text(_TEXT_CHARS.filter(lambda c: c != "\n"), max_size=48))


@settings(max_examples=150)
@given(lines=st.lists(_CHECKPOINT_LINES, max_size=5))
def test_checkpoint_parser_raises_only_verification_errors_on_signed_text(
        lines: list[str]) -> None:
    note = sign_note("".join(f"{line}\n" for line in lines) or "\n", [LOG_ED])
    try:
        checkpoint, _ = open_checkpoint_note(note, [LOG_ED.verifier()])
    except VerificationError as exc:
        assert exc.record == "checkpoint"
        return
    assert checkpoint_body(*checkpoint).decode() == note.rsplit("\n\n", 1)[0] + "\n"


def test_a_post_quantum_witness_cosigns_with_ml_dsa() -> None:
    """An ML-DSA-65 witness: the cosignature/v1 message and line layout under medtwin's
    private type, verified like an Ed25519 one (timestamp included), and refused when cut."""
    witness = _signer("witness.example/pq", "ml-dsa-65")
    verifier = witness.verifier(cosigner=True)
    body = checkpoint_body(ORIGIN, SIZE, ROOT)
    line = cosign_checkpoint(body, witness, T_S)
    assert verify_cosignature(body, line, verifier) == T_S
    note = sign_checkpoint_note(ORIGIN, SIZE, ROOT, [LOG_ED]) + line
    _, opened = open_checkpoint_note(note, [LOG_ED.verifier(), verifier])
    assert [s.name for s in opened.verified] == [ORIGIN, "witness.example/pq"]
    # the same key as an Ed25519-typed witness, or as a log key, has another key ID
    assert verifier.key_id != witness.verifier().key_id
    name, encoded = line.rstrip("\n").rsplit(" ", 1)
    cut = f"{name} {base64.b64encode(base64.b64decode(encoded)[:-1]).decode()}\n"
    with pytest.raises(VerificationError, match="is not a timestamp and a ml-dsa-65 signature"):
        verify_cosignature(body, cut, verifier)
    with pytest.raises(VerificationError):
        verify_cosignature(checkpoint_body(ORIGIN, SIZE + 1, ROOT), line, verifier)


#: A verified cosignature line of a checkpoint by a witness of each suite, with the length of
#: its timestamp and signature: 8 bytes and the suite's signature size.
_COSIGNED = {
    witness.suite: (witness, cosign_checkpoint(checkpoint_body(ORIGIN, SIZE, ROOT), witness,
                                               T_S), size)
    for witness, size in ((WITNESS, 8 + 64), (_signer("witness.example/pq", "ml-dsa-65"),
                                              8 + 3309))
}


def test_every_witness_suite_has_a_cosignature_length() -> None:
    assert set(_COSIGNED) == set(COSIGNATURE_TYPES)
    body = checkpoint_body(ORIGIN, SIZE, ROOT)
    for witness, line, size in _COSIGNED.values():
        assert len(base64.b64decode(line.rsplit(" ", 1)[1])) == 4 + size
        assert verify_cosignature(body, line, witness.verifier(cosigner=True)) == T_S


@settings(max_examples=80)
@given(suite=st.sampled_from(sorted(COSIGNATURE_TYPES)), length=st.integers(1, 8 + 3309 + 64))
@example(suite="ml-dsa-65", length=8 + 3309 - 1)
@example(suite="ml-dsa-65", length=8 + 3309 + 1)
@example(suite="ml-dsa-65", length=8 + 64)
@example(suite="ed25519", length=8 + 3309)
def test_a_cosignature_of_any_other_length_is_refused(suite: str, length: int) -> None:
    """Timestamp and signature of exactly the suite's size: a valid line cut or padded (with
    zeros) to any other length is refused as malformed, before its signature is checked."""
    witness, line, size = _COSIGNED[suite]
    assume(length != size)
    name, encoded = line.rstrip("\n").rsplit(" ", 1)
    blob = base64.b64decode(encoded)
    resized = blob[:4] + (blob[4:] + bytes(length))[:length]
    with pytest.raises(VerificationError, match=rf"^note: cosignature by {witness.name}\+"
                                                rf"[0-9a-f]{{8}} is not a timestamp and a "
                                                rf"{suite} signature$"):
        verify_cosignature(checkpoint_body(ORIGIN, SIZE, ROOT),
                           f"{name} {base64.b64encode(resized).decode()}\n",
                           witness.verifier(cosigner=True))
