"""The HTTP API (FastAPI): ingestion, twins, alerts, audit and the live stream."""

from medtwin.api._app import create_app

__all__ = ["create_app"]
