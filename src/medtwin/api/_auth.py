"""Bearer-token authentication and role checks for every endpoint but packet ingestion."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from medtwin.access import Permission, Role, allows, hash_token
from medtwin.pipeline import Pipeline

_bearer = HTTPBearer(auto_error=False, description="A medtwin API token (`medtwin token create`)")


@dataclass(frozen=True, slots=True)
class Caller:
    name: str
    role: Role


def caller_of(pipeline: Pipeline, token: str) -> Caller | None:
    """Who holds `token`, or None if it is unknown or revoked."""
    found = pipeline.store.token_role(hash_token(token))
    return None if found is None else Caller(found[0], Role(found[1]))


def require(permission: Permission) -> Callable[..., Caller]:
    """A dependency that admits callers whose role holds `permission` (runs in a worker
    thread: it reads the store)."""

    def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Caller:
        if credentials is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "api: bearer token required",
                                headers={"WWW-Authenticate": "Bearer"})
        caller = caller_of(request.app.state.pipeline, credentials.credentials)
        if caller is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "api: unknown or revoked token",
                                headers={"WWW-Authenticate": "Bearer"})
        if not allows(caller.role, permission):
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                f"api: role {caller.role.value!r} may not {permission.value}")
        return caller

    dependency.__name__ = f"require_{permission.value.replace('-', '_')}"
    return dependency
