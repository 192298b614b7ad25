"""Settings of a medtwin site, in one place, with the defaults of the embedded set-up."""

from __future__ import annotations

import base64
import binascii
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from medtwin.errors import ConfigError

DEFAULT_DATA_DIR = Path("medtwin-data")
#: Largest accepted difference between a packet's send time and the site clock.
DEFAULT_MAX_CLOCK_SKEW_S = 300.0
#: Largest packet body accepted, in bytes (prevents memory exhaustion by one device).
MAX_PACKET_BYTES = 256 * 1024
#: Most readings in one packet (prevents DoS through one huge batch).
MAX_PACKET_READINGS = 4096
#: Longest patient or device id (bounded so every record and message can name it).
MAX_ID_LENGTH = 64
#: Patient and device ids: letters, digits and . _ : - only (never free text).
ID_PATTERN = r"^[A-Za-z0-9._:-]+$"
#: How long a device may buffer readings before sending them.
MAX_READING_AGE_S = 24 * 3600.0
#: AEAD suite for new ciphertext; old ciphertext names its own suite and stays readable.
DEFAULT_AEAD_SUITE = "aes-256-gcm"
#: Signature suite of a new site's log signing key (ed25519, ecdsa-p256 or ml-dsa-65).
DEFAULT_LOG_SIGNATURE_SUITE = "ed25519"
#: Name of this log in its signed tree heads (C2SP checkpoint "origin" line).
DEFAULT_LOG_ORIGIN = "medtwin.local/log"
#: Most packets the API gathers into one transaction (group commit).
DEFAULT_MAX_BATCH = 256
#: Seconds of site time between two twin snapshots in the log (0: none); `verify --replay`
#: re-derives each from the logged inputs.
DEFAULT_SNAPSHOT_INTERVAL_S = 900.0
#: Seconds between two checkpoint anchors on the chain (0: no anchoring). One transaction
#: per interval, never per reading: eth-tester makes 20-30 transactions/s.
DEFAULT_ANCHOR_INTERVAL_S = 5.0


#: Public key sizes of the suites a witness may cosign with.
WITNESS_KEY_SIZES = {"ed25519": 32, "ml-dsa-65": 1952}


@dataclass(frozen=True, slots=True)
class TrustedWitness:
    """A witness whose cosignatures the site accepts: its note key name, public key and the
    key's suite (Ed25519, or ML-DSA-65 for a post-quantum witness)."""

    name: str
    public_key: bytes
    suite: str = "ed25519"

    def spec(self) -> str:
        """This witness as one MEDTWIN_WITNESSES item."""
        encoded = base64.b64encode(self.public_key).decode()
        return f"{self.name}={encoded}" if self.suite == "ed25519" else \
            f"{self.name}={self.suite}:{encoded}"


def parse_witnesses(text: str) -> tuple[TrustedWitness, ...]:
    """Witnesses from `name=base64key,name=ml-dsa-65:base64key` (the MEDTWIN_WITNESSES
    format; a key without a suite is Ed25519)."""
    witnesses: list[TrustedWitness] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        suite, colon, encoded = value.rpartition(":")
        suite = suite if colon else "ed25519"
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if not sep or not name or len(key) != WITNESS_KEY_SIZES.get(suite, -1):
            raise ConfigError(f"config: witness {item!r} must be name=<base64 Ed25519 public "
                              "key> or name=ml-dsa-65:<base64 ML-DSA-65 public key>")
        witnesses.append(TrustedWitness(name, key, suite))
    if len({w.name for w in witnesses}) != len(witnesses):
        raise ConfigError("config: a witness name is given twice; give each witness once")
    return tuple(witnesses)


def wall_clock_ms() -> int:
    """The site clock: milliseconds since the epoch, UTC."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Settings:
    """Everything a site can configure; build with `Settings.from_env()` or directly in tests."""

    data_dir: Path = DEFAULT_DATA_DIR
    keys_dir: Path | None = None
    database_url: str | None = None
    max_clock_skew_s: float = DEFAULT_MAX_CLOCK_SKEW_S
    max_reading_age_s: float = MAX_READING_AGE_S
    aead_suite: str = DEFAULT_AEAD_SUITE
    #: Suite of the log key a new site makes (later changes: `medtwin keys rotate-log`).
    log_suite: str = DEFAULT_LOG_SIGNATURE_SUITE
    log_origin: str = DEFAULT_LOG_ORIGIN
    max_batch: int = DEFAULT_MAX_BATCH
    witnesses: tuple[TrustedWitness, ...] = ()
    chain_url: str | None = None
    anchor_contract: str | None = None
    anchor_interval_s: float = DEFAULT_ANCHOR_INTERVAL_S
    consent_required: bool = False
    snapshot_interval_s: float = DEFAULT_SNAPSHOT_INTERVAL_S
    clock: Callable[[], int] = field(default=wall_clock_ms, compare=False)

    @property
    def resolved_keys_dir(self) -> Path:
        """Where key files live: outside the database, `data_dir/keys` unless configured."""
        return self.keys_dir if self.keys_dir is not None else self.data_dir / "keys"

    @property
    def resolved_database_url(self) -> str:
        """SQLAlchemy URL of the store: a SQLite file in `data_dir` unless configured."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'medtwin.db').resolve()}"

    def with_(self, **changes: object) -> Settings:
        """A copy with some fields changed."""
        return replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Settings from `MEDTWIN_*` environment variables, then explicit overrides."""
        env = os.environ
        values: dict[str, object] = {}
        if "MEDTWIN_DATA_DIR" in env:
            values["data_dir"] = Path(env["MEDTWIN_DATA_DIR"])
        if "MEDTWIN_KEYS_DIR" in env:
            values["keys_dir"] = Path(env["MEDTWIN_KEYS_DIR"])
        if "MEDTWIN_DATABASE_URL" in env:
            values["database_url"] = env["MEDTWIN_DATABASE_URL"]
        seconds = {"MEDTWIN_MAX_CLOCK_SKEW_S": ("max_clock_skew_s", ""),
                   "MEDTWIN_ANCHOR_INTERVAL_S": ("anchor_interval_s",
                                                 " (0 turns anchoring off)"),
                   "MEDTWIN_SNAPSHOT_INTERVAL_S": ("snapshot_interval_s", " (0: no snapshots)")}
        for name, (field_name, zero) in seconds.items():
            if name in env:
                try:
                    values[field_name] = float(env[name])
                except ValueError as exc:
                    raise ConfigError(f"config: {name} must be a number of seconds"
                                      f"{zero}") from exc
        if "MEDTWIN_AEAD_SUITE" in env:
            values["aead_suite"] = env["MEDTWIN_AEAD_SUITE"]
        if "MEDTWIN_LOG_SUITE" in env:
            values["log_suite"] = env["MEDTWIN_LOG_SUITE"]
        if "MEDTWIN_CHAIN_URL" in env:
            values["chain_url"] = env["MEDTWIN_CHAIN_URL"] or None
        if "MEDTWIN_ANCHOR_CONTRACT" in env:
            values["anchor_contract"] = env["MEDTWIN_ANCHOR_CONTRACT"] or None
        if "MEDTWIN_CONSENT" in env:
            flag = env["MEDTWIN_CONSENT"].strip().lower()
            if flag not in ("0", "1", "true", "false", ""):
                raise ConfigError("config: MEDTWIN_CONSENT must be 1 (reads of a twin need its "
                                  "patient's grant on the chain) or 0")
            values["consent_required"] = flag in ("1", "true")
        if "MEDTWIN_WITNESSES" in env:
            values["witnesses"] = parse_witnesses(env["MEDTWIN_WITNESSES"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
