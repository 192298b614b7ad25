"""Site keys kept in files outside the database, and per-patient data keys wrapped by them."""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from medtwin.crypto._envelope import open_sealed, seal
from medtwin.crypto._suites import aead_suite, signature_suite
from medtwin.errors import ConfigError, ConflictError, NotFoundError

KEK_FILE = "site-kek.json"
LOG_KEY_FILE = "log-signing.json"
_DATA_KEY_CONTEXT = b"medtwin/data-key/v1\n"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _write_tmp(path: Path, document: Mapping[str, Any]) -> Path:
    """Write `document` durably to a fresh owner-only (0600) file next to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)  # a leftover of a crash: never reuse it (or its mode)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(document, handle)
        handle.flush()
        os.fsync(handle.fileno())
    return tmp


def _write_secret(path: Path, document: Mapping[str, Any]) -> None:
    """Write a key file readable by its owner only, atomically, never over an existing one."""
    tmp = _write_tmp(path, document)
    try:
        os.link(tmp, path)  # fails if the key file appeared meanwhile: keep that one
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    _sync_dir(path.parent)


def _replace_secret(path: Path, document: Mapping[str, Any]) -> None:
    """Replace a key file atomically (0600): a crash leaves the old file or the new one."""
    os.replace(_write_tmp(path, document), path)
    _sync_dir(path.parent)


def _sync_dir(path: Path) -> None:
    """Flush a directory entry, so a key file survives a power cut like the data it unlocks."""
    directory = os.open(path, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _read_secret(path: Path) -> dict[str, Any]:
    try:
        mode = path.stat().st_mode & 0o777
    except OSError as exc:
        raise ConfigError(f"keys: key file {path} is missing: {exc.strerror}") from exc
    if mode & 0o077:
        raise ConfigError(f"keys: key file {path} is readable by others (mode {mode:o}); "
                          f"run `chmod 600 {path}`")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"keys: cannot read key file {path}: {exc}") from exc
    if not isinstance(document, dict):
        raise ConfigError(f"keys: key file {path} is not a JSON object")
    return document


@dataclass(frozen=True, slots=True)
class PublicLogKey:
    """A log signing key as verifiers know it: its id, suite and public key."""

    key_id: str
    suite: str
    public_key: bytes = field(repr=False)

    def same_key(self, other: PublicLogKey) -> bool:
        """Whether both name the same key material (ids are labels, not identity)."""
        return (self.suite, self.public_key) == (other.suite, other.public_key)

    def as_json(self) -> dict[str, str]:
        """The key as JSON: id, suite and base64 public key."""
        return {"key_id": self.key_id, "suite": self.suite, "public_key": _b64(self.public_key)}

    @classmethod
    def from_json(cls, document: Any) -> PublicLogKey:
        """Parse `as_json`'s form; KeyError, TypeError or ValueError if it is not that."""
        return cls(str(document["key_id"]), str(document["suite"]),
                   base64.b64decode(document["public_key"], validate=True))


@dataclass(frozen=True, slots=True)
class LogSigningKey:
    """The key that signs the site's Merkle tree heads."""

    key_id: str
    suite: str
    private_key: bytes = field(repr=False)
    public_key: bytes

    @property
    def public(self) -> PublicLogKey:
        """The public half, as verifiers know it."""
        return PublicLogKey(self.key_id, self.suite, self.public_key)

    def sign(self, message: bytes) -> bytes:
        return signature_suite(self.suite).sign(self.private_key, message)


def _new_log_key_document(suite: str) -> dict[str, str]:
    """A fresh log signing key entry: id, suite, private and public key (base64)."""
    private, public = signature_suite(suite).generate()
    return {"key_id": f"log-{secrets.token_hex(4)}", "suite": suite,
            "private_key": _b64(private), "public_key": _b64(public)}


def _log_key(document: Mapping[str, Any]) -> LogSigningKey:
    """A log signing key from its key file entry."""
    return LogSigningKey(document["key_id"], document["suite"],
                         base64.b64decode(document["private_key"]),
                         base64.b64decode(document["public_key"]))




class WrappedKey(NamedTuple):
    """A patient's data key as stored: sealed under the site KEK named `kek_id`."""

    blob: bytes
    kek_id: str


def _new_kek_document(aead: str) -> dict[str, str]:
    """A fresh KEK entry of the key file: id, suite and key (base64)."""
    spec = aead_suite(aead)
    return {"kek_id": f"kek-{secrets.token_hex(16)}", "suite": spec.name,
            "key": _b64(secrets.token_bytes(spec.key_size))}


@dataclass(frozen=True, slots=True)
class SiteKeys:
    """The site key-encryption key (wraps new patient data keys), older KEKs kept to unwrap
    data keys not yet re-wrapped after a rotation, and the log signing key."""

    kek_id: str
    kek_suite: str
    kek: bytes = field(repr=False)
    log_key: LogSigningKey
    #: KEKs retired from wrapping but still needed to unwrap, by id (the key file's
    #: `previous` list; absent in key files written before rotation existed).
    previous_keks: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    #: Log keys that signed before the current one, newest first (public halves only).
    previous_log_keys: tuple[PublicLogKey, ...] = ()
    #: The previous log key's private half while a rotation is not yet logged (a crash
    #: between writing the key file and logging); None once settled.
    unsettled_log_key: LogSigningKey | None = None

    @property
    def first_log_key(self) -> PublicLogKey:
        """The log's first key: where a chain of rotation endorsements starts."""
        return self.log_key_history[0]

    @property
    def log_key_history(self) -> tuple[PublicLogKey, ...]:
        """Every log key this site has held, oldest first, the current one last: the keys
        the log's rotations must bring in, in this order."""
        return (*reversed(self.previous_log_keys), self.log_key.public)

    @property
    def kek_ids(self) -> list[str]:
        """Ids of every KEK held: the current one first, then the previous ones."""
        return [self.kek_id, *self.previous_keks]

    def kek_for(self, kek_id: str) -> bytes:
        """The KEK named `kek_id`; ConfigError if this site no longer (or never) held it."""
        if kek_id == self.kek_id:
            return self.kek
        try:
            return self.previous_keks[kek_id]
        except KeyError:
            raise ConfigError(f"keys: KEK {kek_id!r} is not in the site key file; restore the "
                              "key file that holds it (a backup from before it was retired)"
                              ) from None

    @classmethod
    def exist(cls, keys_dir: Path) -> bool:
        """Whether any site key file is in `keys_dir`."""
        return (keys_dir / KEK_FILE).exists() or (keys_dir / LOG_KEY_FILE).exists()

    @classmethod
    def load_or_create(cls, keys_dir: Path, aead: str = "aes-256-gcm",
                       log_suite: str = "ed25519") -> SiteKeys:
        """Load the key files in `keys_dir`, creating them (mode 0600) on first run."""
        kek_path, log_path = keys_dir / KEK_FILE, keys_dir / LOG_KEY_FILE
        if not kek_path.exists():
            _write_secret(kek_path, _new_kek_document(aead))
        if not log_path.exists():
            _write_secret(log_path, _new_log_key_document(log_suite))
        return cls.load(keys_dir)

    @classmethod
    def load(cls, keys_dir: Path) -> SiteKeys:
        """Load existing key files; ConfigError saying what is missing otherwise."""
        kek_doc = _read_secret(keys_dir / KEK_FILE)
        log_doc = _read_secret(keys_dir / LOG_KEY_FILE)
        try:
            previous = {doc["kek_id"]: base64.b64decode(doc["key"])
                        for doc in kek_doc.get("previous", [])}
            older_log = log_doc.get("previous", [])
            unsettled = (_log_key(older_log[0])
                         if older_log and "private_key" in older_log[0] else None)
            return cls(kek_doc["kek_id"], kek_doc["suite"], base64.b64decode(kek_doc["key"]),
                       _log_key(log_doc), previous,
                       tuple(PublicLogKey.from_json(doc) for doc in older_log), unsettled)
        except (KeyError, ValueError, TypeError) as exc:
            raise ConfigError(f"keys: malformed key file in {keys_dir}: {exc}") from exc

    @classmethod
    def rotate_kek(cls, keys_dir: Path, aead: str) -> SiteKeys:
        """Make a fresh KEK (suite `aead`) current, keeping the old ones to unwrap; the key
        file is replaced atomically, so a crash leaves the old ring or the new one."""
        path = keys_dir / KEK_FILE
        document = _read_secret(path)
        previous = [{k: document[k] for k in ("kek_id", "suite", "key")},
                    *document.get("previous", [])]
        _replace_secret(path, {**_new_kek_document(aead), "previous": previous})
        return cls.load(keys_dir)

    @staticmethod
    def key_file(keys_dir: Path, name: str) -> dict[str, Any]:
        """The document of key file `name` (KEK_FILE or LOG_KEY_FILE) as it is now (secrets:
        keep it in memory only), to put back with `restore_key_file` if a rotation cannot be
        logged."""
        return _read_secret(keys_dir / name)

    @staticmethod
    def restore_key_file(keys_dir: Path, name: str, document: dict[str, Any]) -> None:
        """Put back a key file document read by `key_file` (atomically, mode 0600)."""
        _replace_secret(keys_dir / name, document)

    @classmethod
    def rotate_log_key(cls, keys_dir: Path, suite: str) -> SiteKeys:
        """Make a fresh log signing key (suite `suite`) current. The outgoing key keeps its
        private half in the file (`unsettled_log_key`) until `settle_log_key`, so a rotation
        interrupted before it was logged can still be endorsed; replaced atomically."""
        signature_suite(suite)
        path = keys_dir / LOG_KEY_FILE
        document = _read_secret(path)
        outgoing = {k: document[k] for k in ("key_id", "suite", "private_key", "public_key")}
        older = [_public_only(doc) for doc in document.get("previous", [])]
        _replace_secret(path, {**_new_log_key_document(suite), "previous": [outgoing, *older]})
        return cls.load(keys_dir)

    @classmethod
    def settle_log_key(cls, keys_dir: Path) -> SiteKeys:
        """Drop the outgoing log key's private half once its endorsement is logged."""
        path = keys_dir / LOG_KEY_FILE
        document = _read_secret(path)
        older = [_public_only(doc) for doc in document.get("previous", [])]
        _replace_secret(path, {**document, "previous": older})
        return cls.load(keys_dir)

    @classmethod
    def retire_kek(cls, keys_dir: Path, kek_id: str) -> SiteKeys:
        """Drop the previous KEK `kek_id` from the key file (the caller has checked that no
        data key still needs it); ConflictError for the current KEK, NotFoundError if absent."""
        path = keys_dir / KEK_FILE
        document = _read_secret(path)
        if document.get("kek_id") == kek_id:
            raise ConflictError(f"keys: {kek_id!r} is the current KEK; rotate first "
                                "(`medtwin keys rotate`), then retire it")
        previous = document.get("previous", [])
        kept = [doc for doc in previous if doc.get("kek_id") != kek_id]
        if len(kept) == len(previous):
            raise NotFoundError(f"keys: no previous KEK {kek_id!r} in {path}")
        _replace_secret(path, {**document, "previous": kept})
        return cls.load(keys_dir)


def _public_only(document: Mapping[str, Any]) -> dict[str, Any]:
    """A log key file entry without its private key."""
    return {k: document[k] for k in ("key_id", "suite", "public_key")}


def load_or_create_signing_key(path: Path, suite: str = "ed25519") -> LogSigningKey:
    """A signing key kept alone in `path` (mode 0600), created on first run: a witness's key."""
    if not path.exists():
        private, public = signature_suite(suite).generate()
        _write_secret(path, {"key_id": f"key-{secrets.token_hex(4)}", "suite": suite,
                             "private_key": _b64(private), "public_key": _b64(public)})
    doc = _read_secret(path)
    try:
        return LogSigningKey(doc["key_id"], doc["suite"], base64.b64decode(doc["private_key"]),
                             base64.b64decode(doc["public_key"]))
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"keys: malformed key file {path}: {exc}") from exc


def load_or_create_secret(path: Path, kind: str, size: int = 32) -> bytes:
    """`size` random bytes kept alone in `path` (mode 0600), created on first run and named
    `kind` in the file: a key used outside medtwin's suites (the chain account's key)."""
    if not path.exists():
        _write_secret(path, {"kind": kind, "secret": _b64(secrets.token_bytes(size))})
    doc = _read_secret(path)
    try:
        secret = base64.b64decode(doc["secret"], validate=True)
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"keys: malformed key file {path}: {exc}") from exc
    if doc.get("kind") != kind or len(secret) != size:
        raise ConfigError(f"keys: {path} is not a {kind} key of {size} bytes")
    return secret


class KeyRing:
    """Wraps, unwraps and caches per-patient data keys; seals and opens patient records."""

    def __init__(self, site: SiteKeys, aead: str = "aes-256-gcm") -> None:
        self.site = site
        self.aead = aead
        self._data_keys: dict[str, bytes] = {}

    def new_data_key(self, patient_id: str) -> bytes:
        """A fresh data key for `patient_id`, returned wrapped by the current site KEK."""
        key = secrets.token_bytes(aead_suite(self.aead).key_size)
        self._data_keys[patient_id] = key
        return self._wrap(patient_id, key)

    def rewrap(self, patient_id: str, wrapped: WrappedKey) -> WrappedKey:
        """The same data key of `patient_id`, re-wrapped under the current site KEK."""
        key = self.data_key(patient_id, wrapped)
        return WrappedKey(self._wrap(patient_id, key), self.site.kek_id)

    def _wrap(self, patient_id: str, key: bytes) -> bytes:
        return seal(self.site.kek, key, _DATA_KEY_CONTEXT + patient_id.encode(), self.aead)

    def data_key(self, patient_id: str, wrapped: bytes | WrappedKey) -> bytes:
        """The plaintext data key of `patient_id`, unwrapping `wrapped` on first use with the
        KEK it names (plain bytes: wrapped by the current KEK)."""
        key = self._data_keys.get(patient_id)
        if key is None:
            if isinstance(wrapped, WrappedKey):
                kek, blob = self.site.kek_for(wrapped.kek_id), wrapped.blob
            else:
                kek, blob = self.site.kek, wrapped
            key = open_sealed(kek, blob, _DATA_KEY_CONTEXT + patient_id.encode())
            self._data_keys[patient_id] = key
        return key

    def forget(self, patient_id: str) -> None:
        """Drop the cached data key of `patient_id` (erased: their key must not outlive it)."""
        self._data_keys.pop(patient_id, None)

    def seal(self, patient_id: str, wrapped: bytes | WrappedKey, plaintext: bytes,
             aad: bytes) -> bytes:
        """Encrypt a record of `patient_id` under their data key, bound to `aad`."""
        return seal(self.data_key(patient_id, wrapped), plaintext, aad, self.aead)

    def open(self, patient_id: str, wrapped: bytes | WrappedKey, envelope: bytes,
             aad: bytes) -> bytes:
        """Decrypt a record of `patient_id`; DecryptionError if anything is off."""
        return open_sealed(self.data_key(patient_id, wrapped), envelope, aad)
