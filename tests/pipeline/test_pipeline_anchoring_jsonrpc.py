"""The same anchoring code against a real Ethereum JSON-RPC node (Hardhat 2, installed by
`make hardhat`, as `.ci/run` does): the contract is deployed once and remembered, a reopened
site attaches to it, and `verify`'s claims are read back from the node."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import DeviceSim, FakeClock

pytest.importorskip("web3", reason="anchoring needs the chain extra: pip install 'medtwin[chain]'")

from medtwin.cli._server import free_port
from medtwin.config import Settings
from medtwin.crypto import load_or_create_secret
from medtwin.ledger import connect_chain
from medtwin.pipeline import (
    CHAIN_KEY_FILE,
    Accepted,
    Anchorer,
    Pipeline,
    checkpoint_claims,
    verify_store,
)

HARDHAT_DIR = Path(os.environ.get("MEDTWIN_HARDHAT_DIR",
                                  Path(__file__).resolve().parents[2] / "build" / "hardhat"))
HARDHAT = HARDHAT_DIR / "node_modules" / ".bin" / "hardhat"


@pytest.fixture(scope="module")
def node_url() -> Iterator[str]:
    if not HARDHAT.exists():
        reason = ("`make hardhat` has not been run (.ci/run runs it where npm is present)"
                  if shutil.which("npm") else "npm is not installed")
        pytest.skip(f"no Hardhat node for the JSON-RPC anchoring test: {reason}")
    port = free_port()
    proc = subprocess.Popen([str(HARDHAT), "node", "--hostname", "127.0.0.1", "--port",
                             str(port)], cwd=HARDHAT_DIR, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                connect_chain(url)
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the Hardhat node did not start") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_anchors_on_a_json_rpc_node_survive_a_restart(node_url: str, settings: Settings,
                                                      device: DeviceSim, clock: FakeClock,
                                                      pipeline: Pipeline) -> None:
    site = settings.with_(chain_url=node_url)
    pipeline.settings = site  # type: ignore[misc]
    # the node's first account funds the site's chain key, as a network's operator would
    key = load_or_create_secret(site.resolved_keys_dir / CHAIN_KEY_FILE,
                                "secp256k1 chain account")
    connect_chain(node_url, key, fund_from_node=True)
    anchorer = Anchorer.open(pipeline)
    assert anchorer is not None and not anchorer.chain.embedded
    for _ in range(2):
        clock.advance(60)
        [outcome] = pipeline.process([device.submit(device.vitals())])
        assert isinstance(outcome, Accepted)
        assert anchorer.anchor_once() is not None
    remembered = pipeline.store.chain_contract(anchorer.chain.chain_id,
                                                f"anchor {site.log_origin}")
    assert remembered == anchorer.contract.address
    again = Anchorer.open(pipeline)                       # a restarted site: same contract
    assert again is not None and again.contract.address == remembered
    assert again.anchor_once() is None                   # nothing new since the last anchor
    reader = connect_chain(node_url)                     # `medtwin verify` from elsewhere
    claims = checkpoint_claims(pipeline.store, site, reader)
    assert (claims.anchors_indexed, claims.anchors_on_chain, claims.anchors_unreachable) == (
        2, 2, 0)
    assert verify_store(pipeline.store, pipeline.keys.log_key_history,
                        claims=claims.claims).checkpoints_checked == 4


def test_consent_and_anchoring_share_the_sites_chain_and_survive_a_restart(
        node_url: str, settings: Settings, pipeline: Pipeline) -> None:
    from medtwin.cli._server import open_chain_services

    site = settings.with_(chain_url=node_url, consent_required=True)
    pipeline.settings = site  # type: ignore[misc]
    key = load_or_create_secret(site.resolved_keys_dir / CHAIN_KEY_FILE,
                                "secp256k1 chain account")
    connect_chain(node_url, key, fund_from_node=True)
    services = open_chain_services(pipeline)
    assert services.consent is not None and services.anchorer is not None
    assert services.consent.registry.chain is services.anchorer.chain
    again = open_chain_services(pipeline)                 # a restart: the same contracts
    assert again.consent is not None and again.anchorer is not None
    assert again.consent.registry.address == services.consent.registry.address
    # ... whose events are read from the block before its deployment, not from block 0
    assert 0 < again.consent.registry.from_block <= services.consent.registry.from_block
    assert again.anchorer.contract.address == services.anchorer.contract.address
