"""Persistence behind one interface: SQLite by default, PostgreSQL at scale; ciphertext only."""

from medtwin.store._records import (
    AccessRecord,
    AlertRecord,
    AnchorRecord,
    Commit,
    ErasureRecord,
    FindingRecord,
    HeadRecord,
    LogKeyRecord,
    PacketRecord,
    Record,
    RegistrationRecord,
    RejectionRecord,
    RotationRecord,
    SessionRecord,
    SnapshotRecord,
    TwinParamsRecord,
)
from medtwin.store._store import Store

__all__ = [
    "AccessRecord",
    "AlertRecord",
    "AnchorRecord",
    "Commit",
    "ErasureRecord",
    "FindingRecord",
    "HeadRecord",
    "LogKeyRecord",
    "PacketRecord",
    "Record",
    "RegistrationRecord",
    "RejectionRecord",
    "RotationRecord",
    "SessionRecord",
    "SnapshotRecord",
    "Store",
    "TwinParamsRecord",
]
