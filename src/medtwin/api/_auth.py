"""Bearer-token authentication and role checks for every endpoint but packet ingestion."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from medtwin.access import Caller, Permission, Role, allows, hash_token
from medtwin.pipeline import Pipeline

_bearer = HTTPBearer(auto_error=False, description="A medtwin API token (`medtwin token create`)")


def caller_of(pipeline: Pipeline, token: str) -> Caller | None:
    """Who holds `token` (name, role, the chain address consent is granted to), or None if
    it is unknown or revoked."""
    token_hash = hash_token(token)
    found = pipeline.store.token_role(token_hash)
    if found is None:
        return None
    return Caller(found[0], Role(found[1]), pipeline.store.token_address(token_hash))


def token_hash_of(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> bytes:
    """The stored hash of the request's bearer token (use beside `require`, which checks it)."""
    if credentials is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "api: bearer token required",
                            headers={"WWW-Authenticate": "Bearer"})
    return hash_token(credentials.credentials)


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
