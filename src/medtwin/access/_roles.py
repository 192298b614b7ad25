"""Roles, what each may do, and bearer tokens that are stored only as their hash."""

from __future__ import annotations

import enum
import hashlib
import secrets

#: Token prefix, so a leaked token is recognisable by secret scanners.
TOKEN_PREFIX = "mtk_"


class Role(enum.StrEnum):
    CLINICIAN = "clinician"
    AUDITOR = "auditor"
    ADMIN = "admin"


class Permission(enum.StrEnum):
    READ_TWIN = "read-twin"          # patients, twin states, alerts, the live stream
    READ_AUDIT = "read-audit"        # ledger head, rejections, verification
    MANAGE = "manage"                # patients, devices, tokens


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.CLINICIAN: frozenset({Permission.READ_TWIN}),
    Role.AUDITOR: frozenset({Permission.READ_AUDIT}),
    Role.ADMIN: frozenset({Permission.MANAGE, Permission.READ_AUDIT, Permission.READ_TWIN}),
}


def allows(role: Role, permission: Permission) -> bool:
    """Whether `role` holds `permission`."""
    return permission in ROLE_PERMISSIONS[role]


def new_token() -> tuple[str, bytes]:
    """A fresh bearer token (shown once) and the hash that is stored instead of it."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, hash_token(token)


def hash_token(token: str) -> bytes:
    """SHA-256 of a token: tokens carry 256 random bits, so a fast hash is enough."""
    return hashlib.sha256(token.encode("utf-8")).digest()
