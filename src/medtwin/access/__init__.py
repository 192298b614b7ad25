"""Identities, roles and permissions, the bearer tokens that carry them, and access decisions
that follow the patient's consent on the chain."""

from medtwin.access._consent import AccessDecision, Caller, ConsentPolicy
from medtwin.access._roles import (
    ROLE_PERMISSIONS,
    TOKEN_PREFIX,
    Permission,
    Role,
    allows,
    hash_token,
    new_token,
)

__all__ = [
    "ROLE_PERMISSIONS",
    "TOKEN_PREFIX",
    "AccessDecision",
    "Caller",
    "ConsentPolicy",
    "Permission",
    "Role",
    "allows",
    "hash_token",
    "new_token",
]
