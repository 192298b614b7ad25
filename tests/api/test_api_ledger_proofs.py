"""Transparency-log endpoints through the real app: the checkpoint as a signed note, inclusion and
consistency proofs that verify against the signed head, and witness cosignatures."""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.conftest import DeviceSim, FakeClock, key_pair

import medtwin.api._ledger as api_ledger
from medtwin.access import Role, new_token
from medtwin.api import create_app
from medtwin.config import Settings, TrustedWitness, parse_witnesses
from medtwin.crypto import signature_suite
from medtwin.errors import ConfigError
from medtwin.ledger import (
    NoteSigner,
    NoteVerifier,
    TileIndex,
    checkpoint_body,
    consistency_proof,
    cosign_checkpoint,
    inclusion_proof,
    open_checkpoint_note,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)
from medtwin.pipeline import Pipeline
from medtwin.store import Store

WITNESS = NoteSigner("witness.example/w1", "ed25519", *key_pair("witness w1"))
STRANGER = NoteSigner("witness.example/w2", "ed25519", *key_pair("witness w2"))
NOW_S = 1_767_225_600


@pytest.fixture
def settings(tmp_path: Path, clock: FakeClock) -> Settings:
    """The shared site, with witness w1 registered (w2 is not)."""
    return Settings(data_dir=tmp_path / "site", clock=clock,
                    witnesses=(TrustedWitness(WITNESS.name, WITNESS.public_key),))


@pytest.fixture
def client(pipeline: Pipeline) -> Iterator[TestClient]:
    with TestClient(create_app(pipeline)) as test_client:
        yield test_client


@pytest.fixture
def auditor(pipeline: Pipeline) -> dict[str, str]:
    token, token_hash = new_token()
    pipeline.store.add_token(token_hash, "witness-operator", Role.AUDITOR.value, 0)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def logged(pipeline: Pipeline, device: DeviceSim) -> int:
    """Packets in the log; returns the signed head's size."""
    pipeline.process([device.submit(device.vitals()) for _ in range(5)])
    head = pipeline.store.latest_head()
    assert head is not None
    return head.size


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _hashes(answer: dict[str, object]) -> list[bytes]:
    proof = answer["proof"]
    assert isinstance(proof, list)
    return [base64.b64decode(h) for h in proof]


def _checkpoint(client: TestClient, auditor: dict[str, str]) -> str:
    reply = client.get("/v1/ledger/checkpoint", headers=auditor)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain")
    return reply.text


def _cosign(size: int, root: bytes, witness: NoteSigner, origin: str) -> dict[str, object]:
    line = cosign_checkpoint(checkpoint_body(origin, size, root), witness, NOW_S)
    return {"size": size, "root": base64.b64encode(root).decode(), "cosignature": line}


def test_proofs_verify_against_the_signed_head(client: TestClient, auditor: dict[str, str],
                                               pipeline: Pipeline, logged: int) -> None:
    head = pipeline.store.latest_head()
    assert head is not None
    leaves = pipeline.store.leaf_hashes()
    for index in range(logged):
        reply = client.get("/v1/ledger/proof/inclusion", params={"index": index, "size": logged},
                           headers=auditor)
        assert reply.status_code == 200, reply.text
        answer = reply.json()
        assert base64.b64decode(answer["leaf_hash"]) == leaves[index]
        verify_inclusion(leaves[index], index, logged, _hashes(answer), head.root)
    for old in range(logged + 1):
        reply = client.get("/v1/ledger/proof/consistency", params={"old": old, "new": logged},
                           headers=auditor)
        assert reply.status_code == 200, reply.text
        verify_consistency(old, logged, root_from_leaf_hashes(leaves[:old]), head.root,
                           _hashes(reply.json()))


def test_proofs_follow_the_growing_log_reading_only_new_leaves(
        pipeline: Pipeline, device: DeviceSim, auditor: dict[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The answers are those of the proofs recomputed from every leaf hash, as the log grows
    past several tiles (of 2 leaves here); a request reads the leaves logged since the last
    one, at most two tiles and the leaf it proves."""
    monkeypatch.setattr(api_ledger, "TileIndex", partial(TileIndex, height=1))
    every_leaf = pipeline.store.leaf_hashes
    reads: list[tuple[int, int | None, int]] = []

    def leaf_hashes(start: int = 0, end: int | None = None) -> list[bytes]:
        rows = every_leaf(start, end)
        reads.append((start, end, len(rows)))
        return rows

    monkeypatch.setattr(pipeline.store, "leaf_hashes", leaf_hashes)
    indexed = 0
    with TestClient(create_app(pipeline)) as client:
        for packets in (3, 1, 6, 9):
            pipeline.process([device.submit(device.vitals()) for _ in range(packets)])
            leaves = every_leaf()
            size = len(leaves)
            head = pipeline.store.latest_head()
            assert head is not None and head.size == size
            for index in range(size):
                reads.clear()
                reply = client.get("/v1/ledger/proof/inclusion",
                                   params={"index": index, "size": size}, headers=auditor)
                assert reply.status_code == 200, reply.text
                assert reply.json() == {"index": index, "size": size,
                                        "leaf_hash": _b64(leaves[index]), "proof": [
                                            _b64(p) for p in inclusion_proof(leaves, index, size)]}
                assert sum(rows for _, _, rows in reads) <= size - indexed + 2 * 2 + 1, reads
                indexed = size
            for old in range(size + 1):
                reads.clear()
                reply = client.get("/v1/ledger/proof/consistency",
                                   params={"old": old, "new": size}, headers=auditor)
                assert reply.status_code == 200, reply.text
                assert reply.json() == {"old": old, "new": size, "proof": [
                    _b64(p) for p in consistency_proof(leaves, old, size)]}
                assert sum(rows for _, _, rows in reads) <= 2 * 2, reads


@pytest.mark.parametrize(("path", "params", "message"), [
    ("inclusion", {"index": 0, "size": 10_000}, "beyond the latest signed tree head"),
    ("inclusion", {"index": 7, "size": 3}, "outside a tree of size 3"),
    ("inclusion", {"index": -1, "size": 3}, "outside a tree of size 3"),
    ("consistency", {"old": 4, "new": 2}, "are not a range"),
    ("consistency", {"old": -1, "new": 2}, "are not a range"),
    ("consistency", {"old": 1, "new": 10_000}, "beyond the latest signed tree head"),
])
def test_bad_ranges_are_400_with_a_reason(client: TestClient, auditor: dict[str, str],
                                          logged: int, path: str, params: dict[str, int],
                                          message: str) -> None:
    reply = client.get(f"/v1/ledger/proof/{path}", params=params, headers=auditor)
    assert reply.status_code == 400
    assert message in reply.json()["detail"]


def test_ledger_endpoints_need_the_audit_role(client: TestClient, pipeline: Pipeline,
                                              logged: int) -> None:
    token, token_hash = new_token()
    pipeline.store.add_token(token_hash, "dr", Role.CLINICIAN.value, 0)
    clinician = {"Authorization": f"Bearer {token}"}
    assert client.get("/v1/ledger/checkpoint").status_code == 401
    assert client.get("/v1/ledger/checkpoint", headers=clinician).status_code == 403
    assert client.get("/v1/ledger/proof/consistency", params={"old": 0, "new": 1},
                      headers=clinician).status_code == 403


def test_the_checkpoint_of_an_empty_log_is_not_found(client: TestClient,
                                                     auditor: dict[str, str]) -> None:
    assert client.get("/v1/ledger/checkpoint", headers=auditor).status_code == 404


def test_the_checkpoint_note_opens_with_the_site_log_key(client: TestClient,
                                                         auditor: dict[str, str],
                                                         pipeline: Pipeline, logged: int) -> None:
    head = pipeline.store.latest_head()
    assert head is not None
    log = NoteVerifier(pipeline.settings.log_origin, "ed25519",
                       pipeline.keys.log_key.public_key)
    checkpoint, opened = open_checkpoint_note(_checkpoint(client, auditor), [log])
    assert (checkpoint.origin, checkpoint.size, checkpoint.root) == (
        head.origin, logged, head.root)
    assert opened.unknown == ()


def test_a_registered_witness_cosignature_is_served_with_its_checkpoint(
        client: TestClient, auditor: dict[str, str], pipeline: Pipeline, device: DeviceSim,
        logged: int) -> None:
    head = pipeline.store.latest_head()
    assert head is not None
    reply = client.post("/v1/ledger/cosignature", headers=auditor,
                        json=_cosign(head.size, head.root, WITNESS, head.origin))
    assert reply.status_code == 200, reply.text
    assert reply.json()["timestamp_s"] == NOW_S
    log = NoteVerifier(head.origin, "ed25519", pipeline.keys.log_key.public_key)
    witness = WITNESS.verifier(cosigner=True)
    _, opened = open_checkpoint_note(_checkpoint(client, auditor), [log, witness])
    assert [s.name for s in opened.verified] == [head.origin, WITNESS.name]
    assert opened.verified[1].timestamp_s == NOW_S
    # a new checkpoint carries only the cosignatures made for it
    pipeline.process([device.submit(device.vitals())])
    _, newer = open_checkpoint_note(_checkpoint(client, auditor), [log, witness])
    assert [s.name for s in newer.verified] == [head.origin]


def test_unregistered_forged_and_stale_cosignatures_are_refused(
        client: TestClient, auditor: dict[str, str], pipeline: Pipeline, logged: int) -> None:
    head = pipeline.store.latest_head()
    assert head is not None
    stranger = client.post("/v1/ledger/cosignature", headers=auditor,
                           json=_cosign(head.size, head.root, STRANGER, head.origin))
    assert stranger.status_code == 403
    assert "not registered" in stranger.json()["detail"]
    impostor = NoteSigner(WITNESS.name, "ed25519", STRANGER.private_key, STRANGER.public_key)
    forged = client.post("/v1/ledger/cosignature", headers=auditor,
                         json=_cosign(head.size, head.root, impostor, head.origin))
    assert forged.status_code == 400
    assert "does not verify" in forged.json()["detail"]
    other_root = bytes(32)
    wrong_body = _cosign(head.size, other_root, WITNESS, head.origin)
    wrong_body["root"] = base64.b64encode(head.root).decode()
    tampered = client.post("/v1/ledger/cosignature", headers=auditor, json=wrong_body)
    assert tampered.status_code == 400
    stale = client.post("/v1/ledger/cosignature", headers=auditor,
                        json=_cosign(head.size - 1, head.root, WITNESS, head.origin))
    assert stale.status_code == 409
    assert "fetch it again" in stale.json()["detail"]
    log = NoteVerifier(head.origin, "ed25519", pipeline.keys.log_key.public_key)
    _, opened = open_checkpoint_note(_checkpoint(client, auditor), [log])
    assert opened.unknown == ()


def test_a_site_from_before_cosignatures_opens(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    Store(url).close()
    db = sqlite3.connect(tmp_path / "old.db")
    db.execute("drop table cosignatures")
    db.commit()
    db.close()
    store = Store(url)
    assert store.cosignatures("o", 1, bytes(32)) == []
    store.close()


def test_witnesses_are_configured_as_name_and_base64_key(monkeypatch: pytest.MonkeyPatch) -> None:
    key = base64.b64encode(WITNESS.public_key).decode()
    monkeypatch.setenv("MEDTWIN_WITNESSES", f"{WITNESS.name}={key}, ")
    assert Settings.from_env().witnesses == (TrustedWitness(WITNESS.name, WITNESS.public_key),)
    assert Settings().witnesses == ()
    with pytest.raises(ConfigError, match="base64 Ed25519 public key"):
        parse_witnesses("w1=AAAA")
    with pytest.raises(ConfigError, match="given twice"):
        parse_witnesses(f"w1={key},w1={key}")
    pq_public = signature_suite("ml-dsa-65").generate()[1]
    pq = TrustedWitness("w2", pq_public, "ml-dsa-65")
    assert parse_witnesses(f"w1={key},{pq.spec()}") == (
        TrustedWitness("w1", WITNESS.public_key), pq)
    for wrong in (f"w2=ml-dsa-65:{key}", f"w2=rsa:{key}",
                  f"w2=ed25519:{base64.b64encode(pq_public).decode()}"):
        with pytest.raises(ConfigError, match="ml-dsa-65:<base64 ML-DSA-65 public key>"):
            parse_witnesses(wrong)
