"""Tables of the store (SQLAlchemy Core): the same schema on SQLite and PostgreSQL.

Patient values live only in `envelope` columns, sealed under the patient's data key. A record's
primary key is its leaf index in the Merkle log, so every record has exactly one leaf.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

patients = Table(
    "patients", metadata,
    Column("patient_id", String(64), primary_key=True),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("wrapped_key", LargeBinary, nullable=False),
    Column("kek_id", String(64), nullable=False),
)

devices = Table(
    "devices", metadata,
    Column("device_id", String(64), primary_key=True),
    Column("patient_id", String(64), ForeignKey("patients.patient_id"), nullable=False),
    Column("suite", String(32), nullable=False),
    Column("public_key", LargeBinary, nullable=False),
    Column("status", String(16), nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("registered_at_ms", BigInteger, nullable=False),
)

packets = Table(
    "packets", metadata,
    Column("leaf_index", BigInteger, primary_key=True, autoincrement=False),
    Column("batch_index", BigInteger, nullable=False),
    Column("device_id", String(64), nullable=False),
    Column("patient_id", String(64), ForeignKey("patients.patient_id"), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("sent_at_ms", BigInteger, nullable=False),
    Column("received_at_ms", BigInteger, nullable=False),
    Column("provenance", String(32), nullable=False),
    Column("n_readings", Integer, nullable=False),
    Column("envelope", LargeBinary, nullable=False),
    Column("signature", LargeBinary, nullable=True),
    Index("ix_packets_patient", "patient_id", "leaf_index"),
)

alerts = Table(
    "alerts", metadata,
    Column("leaf_index", BigInteger, primary_key=True, autoincrement=False),
    Column("patient_id", String(64), ForeignKey("patients.patient_id"), nullable=False),
    Column("rule", String(64), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("time_ms", BigInteger, nullable=False),
    Column("envelope", LargeBinary, nullable=False),
    Index("ix_alerts_patient", "patient_id", "leaf_index"),
)

registrations = Table(
    "registrations", metadata,
    Column("leaf_index", BigInteger, primary_key=True, autoincrement=False),
    Column("device_id", String(64), nullable=False),
    Column("patient_id", String(64), ForeignKey("patients.patient_id"), nullable=False),
    Column("suite", String(32), nullable=False),
    Column("public_key", LargeBinary, nullable=False),
    Column("status", String(16), nullable=False),
    Column("time_ms", BigInteger, nullable=False),
    Column("reason", Text, nullable=False, server_default=""),
    Index("ix_registrations_device", "device_id", "leaf_index"),
)

findings = Table(
    "findings",
    metadata,
    Column("leaf_index", BigInteger, primary_key=True, autoincrement=False),
    Column("patient_id", String(64), ForeignKey("patients.patient_id"), nullable=False),
    Column("device_id", String(64), nullable=False),
    Column("code", String(32), nullable=False),
    Column("time_ms", BigInteger, nullable=False),
    Column("envelope", LargeBinary, nullable=False),
)

sessions = Table(
    "sessions", metadata,
    Column("leaf_index", BigInteger, primary_key=True, autoincrement=False),
    Column("device_id", String(64), nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("session_id", String(32), nullable=False, unique=True),
    Column("expires_at_ms", BigInteger, nullable=False),
    Column("handshake", LargeBinary, nullable=False),
)

log_keys = Table(
    "log_keys", metadata,
    Column("leaf_index", BigInteger, primary_key=True, autoincrement=False),
    Column("origin", String(256), nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("suite", String(32), nullable=False),
    Column("public_key", LargeBinary, nullable=False),
    Column("previous_key_id", String(64), nullable=False),
    Column("previous_suite", String(32), nullable=False),
    Column("previous_public_key", LargeBinary, nullable=False),
    Column("time_ms", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    Column("signature", LargeBinary, nullable=False),
)

snapshots = Table(
    "snapshots", metadata,
    Column("leaf_index", BigInteger, primary_key=True, autoincrement=False),
    Column("time_ms", BigInteger, nullable=False),
    Column("digests", LargeBinary, nullable=False),
)

twin_params = Table(
    "twin_params", metadata,
    Column("leaf_index", BigInteger, primary_key=True, autoincrement=False),
    Column("patient_id", String(64), ForeignKey("patients.patient_id"), nullable=False),
    Column("model", String(32), nullable=False),
    Column("time_ms", BigInteger, nullable=False),
    Column("envelope", LargeBinary, nullable=False),
)

erasures = Table(
    "erasures", metadata,
    Column("leaf_index", BigInteger, primary_key=True, autoincrement=False),
    Column("patient_id", String(64), ForeignKey("patients.patient_id"), nullable=False,
           unique=True),
    Column("time_ms", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
)

aead_suites = Table(
    "aead_suites", metadata,
    Column("leaf_index", BigInteger, primary_key=True, autoincrement=False),
    Column("suite", String(32), nullable=False),
    Column("previous_suite", String(32), nullable=False),
    Column("time_ms", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
)

kek_retirements = Table(
    "kek_retirements", metadata,
    Column("leaf_index", BigInteger, primary_key=True, autoincrement=False),
    Column("kek_id", String(64), nullable=False),
    Column("time_ms", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
)

kek_rotations = Table(
    "kek_rotations", metadata,
    Column("leaf_index", BigInteger, primary_key=True, autoincrement=False),
    Column("old_kek_id", String(64), nullable=False),
    Column("new_kek_id", String(64), nullable=False),
    Column("suite", String(32), nullable=False),
    Column("time_ms", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
)

rejections = Table(
    "rejections", metadata,
    Column("leaf_index", BigInteger, primary_key=True, autoincrement=False),
    Column("received_at_ms", BigInteger, nullable=False),
    Column("device_id", String(64), nullable=True),
    Column("reason", String(32), nullable=False),
    Column("detail", Text, nullable=False),
    Column("seq", BigInteger, nullable=True),
)

leaves = Table(
    "ledger_leaves", metadata,
    Column("leaf_index", BigInteger, primary_key=True, autoincrement=False),
    Column("kind", String(16), nullable=False),
    Column("leaf_hash", LargeBinary, nullable=False),
)

tree_heads = Table(
    "tree_heads", metadata,
    Column("head_id", Integer, primary_key=True, autoincrement=False),
    Column("origin", String(256), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("root", LargeBinary, nullable=False),
    Column("timestamp_ms", BigInteger, nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("suite", String(32), nullable=False),
    Column("signature", LargeBinary, nullable=False),
)

cosignatures = Table(
    "cosignatures", metadata,
    Column("origin", String(256), primary_key=True),
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("root", LargeBinary, primary_key=True),
    Column("witness", String(256), primary_key=True),
    Column("line", Text, nullable=False),
    Column("timestamp_s", BigInteger, nullable=False),
    Column("received_at_ms", BigInteger, nullable=False),
)

#: medtwin's own index of its checkpoints anchored on a chain (no event-log queries needed).
anchors = Table(
    "anchors", metadata,
    Column("chain_id", BigInteger, primary_key=True, autoincrement=False),
    Column("contract", String(64), primary_key=True),
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("root", LargeBinary, nullable=False),
    Column("note_hash", LargeBinary, nullable=False),
    Column("tx_hash", String(80), nullable=False),
    Column("block_number", BigInteger, nullable=False),
    Column("embedded", Boolean, nullable=False),
    Column("anchored_at_ms", BigInteger, nullable=False),
)

#: The contracts this site deployed on each (non-embedded) chain, by name ("anchor <origin>",
#: "consent <origin>"), so a restarted site attaches to them.
chain_contracts = Table(
    "chain_contracts", metadata,
    Column("chain_id", BigInteger, primary_key=True, autoincrement=False),
    Column("name", String(300), primary_key=True),
    Column("contract", String(64), nullable=False),
    Column("deployed_at_ms", BigInteger, nullable=False),
    # the chain's latest block before the deployment: its events are read from there on
    # (0 for contracts remembered before it was kept: read from the chain's first block)
    Column("deployed_block", BigInteger, nullable=False, server_default="0"),
)

#: The chain address each API token's holder is granted consent at (consent-gated reads).
token_addresses = Table(
    "token_addresses", metadata,
    Column("token_hash", LargeBinary, primary_key=True),
    Column("address", String(64), nullable=False),
)

#: Every binding of a token to a chain address, as logged (`token_addresses` holds the last).
token_bindings = Table(
    "token_bindings", metadata,
    Column("leaf_index", BigInteger, primary_key=True, autoincrement=False),
    Column("token_hash", LargeBinary, nullable=False),
    Column("holder", String(128), nullable=False),
    Column("address", String(64), nullable=False),
    Column("signature", LargeBinary, nullable=False),
    Column("time_ms", BigInteger, nullable=False),
)

#: Every consent-gated access decision: who asked for which patient's twin, and the answer.
accesses = Table(
    "accesses", metadata,
    Column("leaf_index", BigInteger, primary_key=True, autoincrement=False),
    Column("at_ms", BigInteger, nullable=False),
    Column("caller", String(128), nullable=False),
    Column("role", String(16), nullable=False),
    Column("address", String(64), nullable=True),
    Column("purpose", String(32), nullable=False),
    Column("decisions", LargeBinary, nullable=False),
)

api_tokens = Table(
    "api_tokens", metadata,
    Column("token_hash", LargeBinary, primary_key=True),
    Column("name", String(128), nullable=False),
    Column("role", String(16), nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
)
