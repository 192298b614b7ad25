"""Bearer-token authentication and role checks for every endpoint but packet ingestion."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
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


def require(permission: Permission) -> Callable[..., Awaitable[Caller]]:
    """A dependency that admits callers whose role holds `permission`."""

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Caller:
        if credentials is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "api: bearer token required",
                                headers={"WWW-Authenticate": "Bearer"})
        pipeline: Pipeline = request.app.state.pipeline
        found = pipeline.store.token_role(hash_token(credentials.credentials))
        if found is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "api: unknown or revoked token",
                                headers={"WWW-Authenticate": "Bearer"})
        caller = Caller(found[0], Role(found[1]))
        if not allows(caller.role, permission):
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                f"api: role {caller.role.value!r} may not {permission.value}")
        return caller

    return dependency
