"""The anchor contract on the embedded chain: only the log's key anchors, sizes only grow,
reads come from contract storage, and the shipped artifact is what its source compiles to."""

from __future__ import annotations

import pytest

pytest.importorskip("web3", reason="anchoring needs the chain extra: pip install 'medtwin[chain]'")

from medtwin.errors import ChainError
from medtwin.ledger import (
    AnchorContract,
    Chain,
    compile_contract,
    connect_chain,
    load_artifact,
    note_hash,
)

ORIGIN = "example.org/log"


@pytest.fixture(scope="module")
def chain() -> Chain:
    return connect_chain()


@pytest.fixture
def contract(chain: Chain) -> AnchorContract:
    return AnchorContract.deploy(chain, ORIGIN)


def test_anchors_are_read_back_from_storage(contract: AnchorContract) -> None:
    assert (contract.count(), contract.latest_size(), contract.anchored(3)) == (0, 0, None)
    first = contract.anchor(3, b"\x01" * 32, note_hash("note 3\n"))
    second = contract.anchor(10, b"\x02" * 32, note_hash("note 10\n"))
    assert second.block_number > first.block_number and first.tx_hash.startswith("0x")
    assert (contract.count(), contract.latest_size(), contract.sizes()) == (2, 10, [3, 10])
    got = contract.anchored(10)
    assert got is not None and (got.root, got.note_hash) == (b"\x02" * 32,
                                                             note_hash("note 10\n"))
    assert contract.anchored(4) is None


def test_sizes_only_grow(contract: AnchorContract) -> None:
    contract.anchor(5, b"\x01" * 32, bytes(32))
    for size in (5, 4):
        with pytest.raises(ChainError, match="size must grow"):
            contract.anchor(size, b"\x09" * 32, bytes(32))
    assert contract.sizes() == [5]


def test_only_the_logs_key_anchors(chain: Chain, contract: AnchorContract) -> None:
    from eth_account import Account

    other = Chain(chain.w3, Account.create(), None)
    chain.w3.eth.send_transaction({"from": chain.w3.eth.accounts[0], "to": other.address,
                                   "value": 10**18})
    intruder = AnchorContract.attach(other, contract.address, ORIGIN)
    with pytest.raises(ChainError, match="only the log's anchoring key"):
        intruder.anchor(7, b"\x07" * 32, bytes(32))
    assert contract.count() == 0 and intruder.anchorer() == chain.address


def test_attach_checks_the_code_and_the_log(chain: Chain, contract: AnchorContract) -> None:
    with pytest.raises(ChainError, match="anchors another log"):
        AnchorContract.attach(chain, contract.address, "another.org/log")
    with pytest.raises(ChainError, match="is not medtwin's Anchor"):
        AnchorContract.attach(chain, chain.w3.eth.accounts[1], ORIGIN)


def test_the_shipped_artifact_is_what_the_source_compiles_to() -> None:
    pytest.importorskip("vyper", reason="checking the artifact needs vyper==0.4.3")
    shipped, fresh = load_artifact("Anchor"), compile_contract("Anchor")
    assert (fresh.abi, fresh.bytecode, fresh.runtime) == (shipped.abi, shipped.bytecode,
                                                          shipped.runtime)


def test_connecting_keeps_the_interpreters_recursion_limit() -> None:
    """py-evm raises it on import; left raised, a deeply nested hostile JSON body would
    overflow the C stack (a crash) instead of being refused."""
    import sys

    from medtwin.ingest import decode_json

    before = sys.getrecursionlimit()
    connect_chain()
    assert sys.getrecursionlimit() == before
    assert decode_json(b"[" * 100_000) is None
