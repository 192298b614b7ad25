"""Run the API with uvicorn, in the foreground (`serve`) or on a background thread (`demo`)."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from medtwin.api import create_app
from medtwin.pipeline import Pipeline

#: How long to wait for a background server to start listening.
STARTUP_TIMEOUT_S = 20.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class BackgroundServer:
    """A uvicorn server on a daemon thread, stopped cleanly by `stop()`."""

    def __init__(self, pipeline: Pipeline, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port or free_port(host)
        config = uvicorn.Config(create_app(pipeline), host=self.host, port=self.port,
                                log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="medtwin-api", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"serve: API did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def serve_forever(pipeline: Pipeline, host: str, port: int) -> None:
    """Serve the API until interrupted."""
    uvicorn.run(create_app(pipeline), host=host, port=port, log_level="info")
