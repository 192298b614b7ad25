"""What the API tests share: an in-process client of the site's app, and bearer tokens."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from medtwin.access import Role, new_token
from medtwin.api import create_app
from medtwin.pipeline import Pipeline


@pytest.fixture
def client(pipeline: Pipeline) -> Iterator[TestClient]:
    """The site's app, served in-process (lifespan included)."""
    with TestClient(create_app(pipeline)) as test_client:
        yield test_client


def auth(pipeline: Pipeline, role: Role) -> dict[str, str]:
    """The Authorization header of a fresh token of `role` (holder "<role>-1")."""
    token, token_hash = new_token()
    pipeline.store.add_token(token_hash, f"{role.value}-1", role.value, 0)
    return {"Authorization": f"Bearer {token}"}
