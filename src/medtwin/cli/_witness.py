"""`medtwin witness`: fetch a site's checkpoint, check it against what was seen, cosign, post.

The checks are `medtwin.ledger.witness_step` (pure); this module does the I/O around it: the
witness's key file and state file in its state directory, and HTTP to the site.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from medtwin.config import TrustedWitness
from medtwin.crypto import (
    LogKeyEndorsement,
    PublicLogKey,
    follow_log_key,
    load_or_create_signing_key,
)
from medtwin.errors import ConfigError, MedtwinError, SignatureError, VerificationError
from medtwin.ledger import (
    Checkpoint,
    NoteSigner,
    NoteVerifier,
    WitnessState,
    WitnessStep,
    log_key_leaf_hash,
    open_checkpoint_note,
    verify_inclusion,
    witness_step,
)

DEFAULT_STATE_DIR = Path("medtwin-witness")
KEY_FILE = "witness-key.json"
STATE_FILE = "witness-state.json"
LOCK_FILE = "witness.lock"
#: Seconds an HTTP request to the site may take before the round fails.
HTTP_TIMEOUT_S = 30.0
#: Largest response read from the site (prevents memory exhaustion by a hostile log).
MAX_RESPONSE_BYTES = 2 * 1024 * 1024


class WitnessHttpError(MedtwinError):
    """The site did not answer a witness request as expected (network, status or body)."""


@dataclass(frozen=True, slots=True)
class WitnessConfig:
    """One witness pinned to one log: where it is, its origin and key, and local state."""

    log_url: str
    origin: str
    log_key: bytes
    name: str
    state_dir: Path
    log_suite: str = "ed25519"
    token: str | None = None
    #: The suite of this witness's own key: ed25519 (cosignature/v1) or ml-dsa-65.
    suite: str = "ed25519"

    @property
    def log(self) -> NoteVerifier:
        """The pinned log key, as a note verifier (key name = origin)."""
        return NoteVerifier(self.origin, self.log_suite, self.log_key)

    @property
    def pinned(self) -> PublicLogKey:
        """The pinned log key, where following the log's key rotations starts."""
        return PublicLogKey("pinned key", self.log_suite, self.log_key)

    def signer(self) -> NoteSigner:
        """The witness's own key (of `suite`), created (mode 0600) in the state dir on first
        run; ConfigError if the key kept there is of another suite."""
        key = load_or_create_signing_key(self.state_dir / KEY_FILE, self.suite)
        if key.suite != self.suite:
            raise ConfigError(f"witness: the key in {self.state_dir / KEY_FILE} is "
                              f"{key.suite}, not {self.suite}; use another --state-dir for a "
                              "witness of another suite")
        return NoteSigner(self.name, key.suite, key.private_key, key.public_key)

    def trusted(self) -> TrustedWitness:
        """This witness as the site registers it (its MEDTWIN_WITNESSES item)."""
        return TrustedWitness(self.name, self.signer().public_key, self.suite)


def load_config(path: Path | None, **given: Any) -> WitnessConfig:
    """Settings from a JSON config file (optional), overridden by options that were given."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"witness: cannot read config file {path}: {exc}") from exc
        if not isinstance(document, dict):
            raise ConfigError(f"witness: config file {path} is not a JSON object")
        values.update(document)
    values.update({k: v for k, v in given.items() if v is not None})
    missing = [k for k in ("log_url", "origin", "log_key", "name") if not values.get(k)]
    if missing:
        raise ConfigError(f"witness: missing {', '.join(missing)}; give them as options "
                          "(--log-url, --origin, --log-key, --name) or in --config")
    try:
        log_key = base64.b64decode(str(values["log_key"]), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("witness: log_key must be the site's log public key in base64 "
                          "(`medtwin keys init` prints it)") from None
    config = WitnessConfig(str(values["log_url"]), str(values["origin"]), log_key,
                           str(values["name"]), Path(values.get("state_dir", DEFAULT_STATE_DIR)),
                           str(values.get("log_suite", "ed25519")), values.get("token"),
                           str(values.get("suite", "ed25519")))
    try:
        NoteVerifier(config.origin, config.log_suite, config.log_key)
        NoteVerifier(config.name, config.suite, b"", cosigner=True)
    except ValueError as exc:
        raise ConfigError(f"witness: {exc}") from exc
    return config


def load_state(path: Path, origin: str) -> WitnessState:
    """The last cosigned checkpoint kept in `path`, or a fresh state if there is none."""
    if not path.exists():
        return WitnessState(origin)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        key = document.get("log_key")
        state = WitnessState(document["origin"], int(document["size"]),
                             base64.b64decode(document["root"], validate=True),
                             PublicLogKey.from_json(key) if key is not None else None)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"witness: state file {path} is unreadable ({exc}); restore it "
                          "from a backup rather than deleting it") from exc
    if state.origin != origin or len(state.root) != 32 or state.size < 0:
        raise ConfigError(f"witness: state file {path} is for log {state.origin!r}, not "
                          f"{origin!r}; use another --state-dir for another log")
    return state


def save_state(path: Path, state: WitnessState) -> None:
    """Write the state atomically and durably (a crash, even a power cut, leaves the old or
    the new one, never half, and never loses a state whose cosignature was posted)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump({"origin": state.origin, "size": state.size,
                   "root": base64.b64encode(state.root).decode(),
                   **({"log_key": state.log_key.as_json()} if state.log_key else {})}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@contextmanager
def state_lock(state_dir: Path) -> Iterator[None]:
    """Hold the state directory for one round: two witness processes on one state would
    each cosign from the same last checkpoint, and could be shown two forks."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"witness: another witness process holds {state_dir}; run one "
                              "per state directory") from None
        yield
    finally:
        os.close(fd)


def open_client(config: WitnessConfig) -> httpx.Client:
    """The HTTP client to the site, with the witness's bearer token."""
    headers = {"Authorization": f"Bearer {config.token}"} if config.token else {}
    return httpx.Client(base_url=config.log_url, headers=headers, timeout=HTTP_TIMEOUT_S)


def witness_round(client: httpx.Client, config: WitnessConfig, signer: NoteSigner,
                  now_s: int) -> WitnessStep:
    """One round: fetch and check the checkpoint, remember it, post the cosignature.

    The state is saved before the cosignature is posted: once signed, the witness never signs
    a conflicting checkpoint, even if the post fails.
    """
    state_path = config.state_dir / STATE_FILE
    with state_lock(config.state_dir):
        state = load_state(state_path, config.origin)
        note = _request(client, "GET", "/v1/ledger/checkpoint").text
        trusted = state.log_key or config.pinned
        try:
            checkpoint, _opened = open_checkpoint_note(note, [_verifier(config, trusted)])
        except VerificationError:
            followed = _follow_rotation(client, config, trusted, note)
            if followed is None:
                raise
            trusted, checkpoint = followed
            state = replace(state, log_key=trusted)
        proof: list[bytes] = []
        if 0 < state.size < checkpoint.size:
            answer = _request(client, "GET", "/v1/ledger/proof/consistency",
                              params={"old": state.size, "new": checkpoint.size}).json()
            proof = _proof_hashes(answer)
        step = witness_step(state, note, proof, _verifier(config, trusted), signer, now_s)
        save_state(state_path, step.state)
    _request(client, "POST", "/v1/ledger/cosignature", json={
        "size": step.checkpoint.size, "root": base64.b64encode(step.checkpoint.root).decode(),
        "cosignature": step.cosignature})
    return step


def _verifier(config: WitnessConfig, key: PublicLogKey) -> NoteVerifier:
    """`key` as the log's note verifier (key name = the origin)."""
    return NoteVerifier(config.origin, key.suite, key.public_key)


def _follow_rotation(client: httpx.Client, config: WitnessConfig, trusted: PublicLogKey,
                     note: str) -> tuple[PublicLogKey, Checkpoint] | None:
    """The checkpoint is not signed by the key this witness trusts: follow the log's key
    rotations from that key, check that every one followed is in the checkpoint's tree, and
    open the note with the key they lead to (VerificationError if any step fails). None if
    no rotation starts from the trusted key."""
    answer = _request(client, "GET", "/v1/ledger/log-keys").json()
    try:
        endorsements = [LogKeyEndorsement.from_json(item) for item in answer]
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise WitnessHttpError("witness: /v1/ledger/log-keys is not a JSON list of log key "
                               "rotations") from exc
    try:
        _key, followed = follow_log_key(trusted, endorsements, config.origin)
    except SignatureError as exc:
        raise VerificationError(f"witness: {exc}", "witness") from exc
    if not followed:
        return None
    # the checkpoint may predate the newest rotations: the first key along the chain that
    # signed it is the one to trust, and the rotations up to it must be in its tree
    checkpoint = None
    for i, endorsement in enumerate(followed):
        try:
            checkpoint, _opened = open_checkpoint_note(note, [_verifier(config,
                                                                        endorsement.key)])
        except VerificationError:
            continue
        followed = followed[:i + 1]
        break
    if checkpoint is None:
        raise VerificationError("witness: the checkpoint is signed by none of the log keys "
                                "the log's rotations lead to from the trusted one", "witness")
    for endorsement in followed:
        if endorsement.leaf_index >= checkpoint.size:
            raise VerificationError(f"witness: the log key rotation at leaf "
                                    f"{endorsement.leaf_index} is not in the checkpoint of size "
                                    f"{checkpoint.size}", "witness")
        answer = _request(client, "GET", "/v1/ledger/proof/inclusion", params={
            "index": endorsement.leaf_index, "size": checkpoint.size}).json()
        verify_inclusion(log_key_leaf_hash(endorsement), endorsement.leaf_index,
                         checkpoint.size, _proof_hashes(answer), checkpoint.root)
    return followed[-1].key, checkpoint


def run_witness(config: WitnessConfig, *, once: bool, interval_s: float,
                report: Callable[[str], None],
                clock: Callable[[], float] = time.time) -> None:
    """Witness rounds until stopped (or one, if `once`). An unreachable site is reported and
    retried at the next round; any refusal (split view, wrong key) ends it by raising."""
    signer = config.signer()
    with open_client(config) as client:
        while True:
            try:
                step = witness_round(client, config, signer, int(clock()))
                report(f"cosigned {config.origin} size {step.checkpoint.size} root "
                       f"{base64.b64encode(step.checkpoint.root).decode()}")
            except MedtwinError as exc:
                if once or not _retryable(exc):
                    raise
                report(f"error: {exc}; retrying in {interval_s:g} s")
            if once:
                return
            time.sleep(interval_s)


def _retryable(exc: MedtwinError) -> bool:
    return isinstance(exc, WitnessHttpError)


def _request(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """`method path` on the site; WitnessHttpError unless it answers 2xx within the limits."""
    try:
        with client.stream(method, path, **kwargs) as response:
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_RESPONSE_BYTES:      # stop reading a hostile log's flood
                    raise WitnessHttpError(f"witness: {method} {path}: answer longer than "
                                           f"{MAX_RESPONSE_BYTES} bytes")
    except httpx.HTTPError as exc:
        raise WitnessHttpError(f"witness: {method} {path}: {type(exc).__name__}: {exc}") from exc
    response = httpx.Response(response.status_code, headers=response.headers,
                              content=bytes(body), request=response.request)
    if not response.is_success:
        raise WitnessHttpError(f"witness: {method} {path}: HTTP {response.status_code}: "
                               f"{response.text[:500]}")
    return response


def _proof_hashes(answer: Any) -> list[bytes]:
    """The base64 hashes of a consistency-proof answer; WitnessHttpError if malformed."""
    try:
        return [base64.b64decode(h, validate=True) for h in answer["proof"]]
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise WitnessHttpError("witness: the consistency proof is not a JSON list of base64 "
                               "hashes") from exc
