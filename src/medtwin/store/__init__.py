"""Persistence behind one interface: SQLite by default, PostgreSQL at scale; ciphertext only."""

from medtwin.store._records import (
    AlertRecord,
    Commit,
    ErasureRecord,
    FindingRecord,
    HeadRecord,
    PacketRecord,
    Record,
    RegistrationRecord,
    RejectionRecord,
    RotationRecord,
    TwinParamsRecord,
)
from medtwin.store._store import Store

__all__ = [
    "AlertRecord",
    "Commit",
    "ErasureRecord",
    "FindingRecord",
    "HeadRecord",
    "PacketRecord",
    "Record",
    "RegistrationRecord",
    "RejectionRecord",
    "RotationRecord",
    "Store",
    "TwinParamsRecord",
]
