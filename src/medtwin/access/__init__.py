"""Identities, roles and permissions, and the bearer tokens that carry them."""

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
    "Permission",
    "Role",
    "allows",
    "hash_token",
    "new_token",
]
