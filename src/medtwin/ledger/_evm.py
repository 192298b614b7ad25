"""The EVM chain that anchors checkpoints and holds consent tokens: the embedded in-process
chain (eth-tester on py-evm, no set-up, gone with its process) or any Ethereum JSON-RPC
endpoint (a Hyperledger Besu QBFT network, a Hardhat node); the Vyper contracts medtwin
ships, compiled; and one way to sign, send and wait for a transaction.

web3 and eth-tester come with the `chain` extra (`pip install 'medtwin[chain]'`); vyper is
needed only to rebuild or check the compiled artifacts (`make contracts`, the tests)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medtwin.errors import ChainError

#: Where the contracts' Vyper sources and their compiled artifacts (JSON) live.
CONTRACTS_DIR = Path(__file__).parent / "contracts"
#: The compiler the artifacts were built with; a test recompiles and compares.
VYPER_VERSION = "0.4.3"
#: Ether the embedded chain gives a new account from its pre-funded test account (wei).
EMBEDDED_FUNDING_WEI = 10**21
#: How long to wait for a transaction's receipt on a JSON-RPC chain (s).
RECEIPT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Artifact:
    """A compiled contract: ABI, creation and runtime bytecode (hex, 0x-prefixed), and the
    SHA-256 of the source it was compiled from."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    runtime: str
    source_sha256: str
    compiler: str

    def to_json(self) -> str:
        """The artifact file's text (stable key order, so a rebuild diffs cleanly)."""
        return json.dumps({"name": self.name, "compiler": self.compiler,
                           "source_sha256": self.source_sha256, "abi": self.abi,
                           "bytecode": self.bytecode, "runtime": self.runtime},
                          indent=1, sort_keys=True) + "\n"


def contract_source(name: str) -> str:
    """The Vyper source of a shipped contract (`CONTRACTS_DIR/<name>.vy`)."""
    path = CONTRACTS_DIR / f"{name}.vy"
    if not path.is_file():
        raise ChainError(f"chain: no contract named {name!r} in {CONTRACTS_DIR}")
    return path.read_text(encoding="utf-8")


def load_artifact(name: str) -> Artifact:
    """The compiled contract shipped with medtwin, checked against its source's hash."""
    path = CONTRACTS_DIR / f"{name}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ChainError(f"chain: the compiled contract {path} is missing or unreadable; "
                         "rebuild it with `make contracts`") from exc
    artifact = Artifact(data["name"], data["abi"], data["bytecode"], data["runtime"],
                        data["source_sha256"], data["compiler"])
    if artifact.source_sha256 != _sha256(contract_source(name)):
        raise ChainError(f"chain: {path} was compiled from another version of {name}.vy; "
                         "rebuild it with `make contracts`")
    return artifact


def compile_contract(name: str) -> Artifact:
    """Compile a shipped contract with vyper (the version the artifacts pin)."""
    try:
        with _recursion_limit_kept():
            import vyper
            from vyper import compile_code
    except ImportError as exc:
        raise ChainError(f"chain: compiling contracts needs vyper=={VYPER_VERSION} "
                         f"(pip install 'vyper=={VYPER_VERSION}')") from exc
    version = str(getattr(vyper, "__version__", "")).split("+")[0]
    if version != VYPER_VERSION:
        raise ChainError(f"chain: the artifacts are built with vyper {VYPER_VERSION}, "
                         f"not {version}")
    source = contract_source(name)
    out = compile_code(source, output_formats=["abi", "bytecode", "bytecode_runtime"])
    return Artifact(name, out["abi"], out["bytecode"], out["bytecode_runtime"],
                    _sha256(source), f"vyper {VYPER_VERSION}")


def build_artifacts() -> list[Path]:
    """Compile every shipped contract and write its artifact next to its source."""
    written = []
    for source in sorted(CONTRACTS_DIR.glob("*.vy")):
        path = source.with_suffix(".json")
        path.write_text(compile_contract(source.stem).to_json(), encoding="utf-8")
        written.append(path)
    return written


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Chain:
    """A connected chain and the account medtwin signs its transactions with. One
    transaction is in flight at a time (the nonce is medtwin's), so it is safe to share
    between threads."""

    def __init__(self, w3: Any, account: Any, url: str | None) -> None:
        self.w3 = w3
        self.account = account
        self.url = url
        self._lock = threading.Lock()

    @property
    def embedded(self) -> bool:
        """Whether this is the in-process chain (its state ends with the process)."""
        return self.url is None

    @property
    def address(self) -> str:
        """The checksummed address medtwin sends from."""
        return str(self.account.address)

    @property
    def chain_id(self) -> int:
        return int(self.w3.eth.chain_id)

    def block_number(self) -> int:
        """The latest block's number."""
        return int(self.w3.eth.block_number)

    def deploy(self, artifact: Artifact, *args: Any) -> str:
        """Deploy a contract; its address (checksummed)."""
        factory = self.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        receipt = self.send(factory.constructor(*args))
        address = receipt["contractAddress"]
        if not address:
            raise ChainError(f"chain: deploying {artifact.name} created no contract")
        return str(address)

    def contract(self, artifact: Artifact, address: str) -> Any:
        """The contract at `address`, checked to run the artifact's code."""
        try:
            code = bytes(self.w3.eth.get_code(self.w3.to_checksum_address(address)))
        except Exception as exc:  # web3 raises many kinds; all mean "not there"
            raise ChainError(f"chain: cannot read the code at {address}: "
                             f"{type(exc).__name__}") from exc
        if code != bytes.fromhex(artifact.runtime.removeprefix("0x")):
            raise ChainError(f"chain: the contract at {address} is not medtwin's "
                             f"{artifact.name} ({VYPER_VERSION} build); deploy it anew or fix "
                             "the configured address")
        return self.w3.eth.contract(address=self.w3.to_checksum_address(address),
                                    abi=artifact.abi)

    def send(self, call: Any) -> Any:
        """Sign a contract call (or constructor) with medtwin's key, send it, and wait for
        its receipt; a reverted or unsendable transaction is a `ChainError`."""
        with self._lock:
            try:
                tx = call.build_transaction({
                    "from": self.address,
                    "nonce": self.w3.eth.get_transaction_count(self.address, "pending"),
                    "chainId": self.chain_id,
                })
                signed = self.account.sign_transaction(tx)
                tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
                receipt = self.w3.eth.wait_for_transaction_receipt(
                    tx_hash, timeout=RECEIPT_TIMEOUT_S)
            except ChainError:
                raise
            except Exception as exc:  # web3 and the node raise many kinds
                raise ChainError(f"chain: the transaction failed: {type(exc).__name__}: "
                                 f"{_short(exc)}") from exc
        if int(receipt["status"]) != 1:
            raise ChainError(f"chain: the transaction {receipt['transactionHash'].hex()} "
                             "reverted")
        return receipt


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text[:200]


@contextlib.contextmanager
def _recursion_limit_kept() -> Iterator[None]:
    """py-evm raises the interpreter's recursion limit to 12,288 when first imported (for
    1,024-deep EVM calls, which medtwin's contracts never make). With that limit a deeply
    nested hostile JSON body overflows the C stack and kills the process instead of raising
    RecursionError, so the limit is put back."""
    limit = sys.getrecursionlimit()
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)


def connect(url: str | None = None, private_key: bytes | None = None,
            fund_from_node: bool = False) -> Chain:
    """Connect to the chain: `url` None is a fresh embedded chain (its test account funds
    medtwin's); otherwise a JSON-RPC endpoint (http://, https://). `private_key` is
    medtwin's 32-byte secp256k1 key (a new one if None; the caller keeps it).
    `fund_from_node` lets a development node's first unlocked account (Hardhat's) fund it."""
    with _recursion_limit_kept():
        return _connect(url, private_key, fund_from_node)


def _connect(url: str | None, private_key: bytes | None, fund_from_node: bool) -> Chain:
    try:
        from eth_account import Account
        from web3 import Web3
    except ImportError as exc:
        raise ChainError("chain: anchoring needs web3 and eth-tester "
                         "(pip install 'medtwin[chain]')") from exc
    if url is None:
        try:
            from web3 import EthereumTesterProvider
            w3 = Web3(EthereumTesterProvider())
        except ImportError as exc:
            raise ChainError("chain: the embedded chain needs eth-tester with py-evm "
                             "(pip install 'medtwin[chain]')") from exc
    else:
        if not url.startswith(("http://", "https://")):
            raise ChainError(f"chain: {url!r} is not an http(s) JSON-RPC URL")
        w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 10}))
        if not w3.is_connected():
            raise ChainError(f"chain: no JSON-RPC node answers at {url}; start it, or unset "
                             "MEDTWIN_CHAIN_URL to anchor on the embedded chain")
    account = (Account.from_key(private_key) if private_key is not None
               else Account.create())
    chain = Chain(w3, account, url)
    if url is None or fund_from_node:
        fund_account(chain)
    return chain


def fund_account(chain: Chain) -> None:
    """Give `chain`'s account ether from the node's first unlocked account (the embedded
    chain's test account, a development node's), unless it has enough already."""
    w3 = chain.w3
    if int(w3.eth.get_balance(chain.address)) >= EMBEDDED_FUNDING_WEI // 2:
        return
    accounts = w3.eth.accounts
    if not accounts:
        raise ChainError("chain: the node has no unlocked account to fund medtwin's key; "
                         "fund its address from the network's faucet")
    tx = w3.eth.send_transaction({"from": accounts[0], "to": chain.address,
                                  "value": EMBEDDED_FUNDING_WEI})
    w3.eth.wait_for_transaction_receipt(tx)
