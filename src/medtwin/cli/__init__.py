"""The `medtwin` command (Typer): demo, serve, replay, verify, keys, token, bench."""

from medtwin.cli._main import app, main

__all__ = ["app", "main"]
