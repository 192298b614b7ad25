"""Run the API with uvicorn, in the foreground (`serve`) or on a background thread (`demo`),
with the checkpoint anchorer beside it."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field

import uvicorn

from medtwin.api import create_app
from medtwin.errors import ChainError, ConfigError
from medtwin.pipeline import Anchorer, Pipeline, SiteConsent, site_chain

#: How long to wait for a background server to start listening.
STARTUP_TIMEOUT_S = 20.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class ChainServices:
    """What the site runs on its chain: the anchorer, the consent registry and policy (each
    None when off), and lines saying so."""

    anchorer: Anchorer | None = None
    consent: SiteConsent | None = None
    lines: list[str] = field(default_factory=list)


def open_chain_services(pipeline: Pipeline) -> ChainServices:
    """Connect the site's chain once and open what its settings ask for. Without the `chain`
    extra, with no chain configured and consent not required, anchoring is off (said, not
    fatal); a configured chain that cannot be reached, or required consent without a chain,
    is an error."""
    settings = pipeline.settings
    out = ChainServices()
    if settings.anchor_interval_s == 0 and not settings.consent_required:
        out.lines.append("anchoring off (MEDTWIN_ANCHOR_INTERVAL_S=0)")
        return out
    try:
        chain = site_chain(pipeline)
    except ChainError as exc:
        if settings.chain_url is not None or settings.consent_required:
            raise
        out.lines.append(f"anchoring off: {exc}")
        return out
    where = ("the embedded chain (in this process only: point MEDTWIN_CHAIN_URL at a "
             "network to keep anchors and consent)" if chain.embedded
             else f"chain {chain.chain_id} at {chain.url}")
    out.anchorer = Anchorer.open(pipeline, chain)
    if out.anchorer is None:
        out.lines.append("anchoring off (MEDTWIN_ANCHOR_INTERVAL_S=0)")
    else:
        out.lines.append(f"anchoring checkpoints every {out.anchorer.interval_s:g} s on "
                         f"{where}, contract {out.anchorer.contract.address}")
    if settings.consent_required:
        if chain.embedded:
            raise ConfigError("config: consent needs a chain that outlives this process (the "
                              "embedded one forgets every grant at a restart): set "
                              "MEDTWIN_CHAIN_URL")
        out.consent = SiteConsent.open(pipeline, chain)
        out.lines.append(f"consent required: twins are read only with their patient's "
                         f"grant, consent contract {out.consent.registry.address}")
    return out


class BackgroundServer:
    """A uvicorn server on a daemon thread, stopped cleanly by `stop()`; with an anchorer,
    it anchors while the server runs."""

    def __init__(self, pipeline: Pipeline, host: str = "127.0.0.1", port: int = 0,
                 services: ChainServices | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        services = services or ChainServices()
        self.anchorer = services.anchorer
        config = uvicorn.Config(create_app(pipeline, services.consent), host=self.host,
                                port=self.port,
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
                  services: ChainServices | None = None) -> None:
    """Serve the API until interrupted, anchoring beside it."""
    services = services or ChainServices()
    anchorer = services.anchorer
    if anchorer is not None:
        anchorer.start()
    try:
        uvicorn.run(create_app(pipeline, services.consent), host=host, port=port,
                    log_level="info")
    finally:
        if anchorer is not None:
            anchorer.stop()
