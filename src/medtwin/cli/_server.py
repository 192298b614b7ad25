"""Run the API with uvicorn, in the foreground (`serve`) or on a background thread (`demo`),
with the checkpoint anchorer beside it."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from medtwin.api import create_app
from medtwin.errors import ChainError
from medtwin.pipeline import Anchorer, Pipeline

#: How long to wait for a background server to start listening.
STARTUP_TIMEOUT_S = 20.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def open_anchorer(pipeline: Pipeline) -> tuple[Anchorer | None, str]:
    """The site's anchorer and a line saying where it anchors. Without the `chain` extra
    and with no chain configured, anchoring is off (said, not fatal); a configured chain
    that cannot be reached is an error."""
    try:
        anchorer = Anchorer.open(pipeline)
    except ChainError as exc:
        if pipeline.settings.chain_url is not None:
            raise
        return None, f"anchoring off: {exc}"
    if anchorer is None:
        return None, "anchoring off (MEDTWIN_ANCHOR_INTERVAL_S=0)"
    where = ("the embedded chain (in this process only: point MEDTWIN_CHAIN_URL at a "
             "network to keep anchors)" if anchorer.chain.embedded
             else f"chain {anchorer.chain.chain_id} at {anchorer.chain.url}")
    return anchorer, (f"anchoring checkpoints every {anchorer.interval_s:g} s on {where}, "
                      f"contract {anchorer.contract.address}")


class BackgroundServer:
    """A uvicorn server on a daemon thread, stopped cleanly by `stop()`; with an anchorer,
    it anchors while the server runs."""

    def __init__(self, pipeline: Pipeline, host: str = "127.0.0.1", port: int = 0,
                 anchorer: Anchorer | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.anchorer = anchorer
        config = uvicorn.Config(create_app(pipeline), host=self.host, port=self.port,
                                log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="medtwin-api", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> BackgroundServer:
        if self.anchorer is not None:
            self.anchorer.start()
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
        if self.anchorer is not None:
            self.anchorer.stop()


def serve_forever(pipeline: Pipeline, host: str, port: int,
                  anchorer: Anchorer | None = None) -> None:
    """Serve the API until interrupted, anchoring beside it."""
    if anchorer is not None:
        anchorer.start()
    try:
        uvicorn.run(create_app(pipeline), host=host, port=port, log_level="info")
    finally:
        if anchorer is not None:
            anchorer.stop()
