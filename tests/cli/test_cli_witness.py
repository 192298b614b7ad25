"""`medtwin witness` against the real app in-process (its HTTP client is swapped for FastAPI's
test client): cosigning, growth, split views, a wrong log key, and argument handling."""

from __future__ import annotations

import base64
import dataclasses
import json
import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.conftest import DeviceSim, FakeClock
from typer.testing import CliRunner

from medtwin.access import Role, new_token
from medtwin.api import create_app
from medtwin.cli import _witness, app
from medtwin.config import Settings, TrustedWitness
from medtwin.crypto import endorse_log_key, load_or_create_signing_key
from medtwin.errors import ConfigError
from medtwin.ledger import NoteVerifier, WitnessState, open_checkpoint_note
from medtwin.pipeline import Pipeline, verify_store
from medtwin.store import LogKeyRecord

runner = CliRunner()
NAME = "witness.example/w1"
PQ_NAME = "witness.example/pq"


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "witness"


@pytest.fixture
def settings(tmp_path: Path, clock: FakeClock, state_dir: Path) -> Settings:
    """A site that has registered the witness's key (made before the witness's first run),
    and a post-quantum witness's ML-DSA-65 key."""
    key = load_or_create_signing_key(state_dir / _witness.KEY_FILE)
    pq = load_or_create_signing_key(tmp_path / "pq-witness" / _witness.KEY_FILE, "ml-dsa-65")
    return Settings(data_dir=tmp_path / "site", clock=clock,
                    witnesses=(TrustedWitness(NAME, key.public_key),
                               TrustedWitness(PQ_NAME, pq.public_key, "ml-dsa-65")))


@pytest.fixture
def site(pipeline: Pipeline, device: DeviceSim, monkeypatch: pytest.MonkeyPatch) -> Pipeline:
    """The site's app, reached by the witness through an in-process client with a token."""
    token, token_hash = new_token()
    pipeline.store.add_token(token_hash, "witness", Role.AUDITOR.value, 0)
    monkeypatch.setattr(_witness, "open_client", lambda config: TestClient(
        create_app(pipeline), base_url=config.log_url,
        headers={"Authorization": f"Bearer {token}"}))
    pipeline.process([device.submit(device.vitals()) for _ in range(3)])
    return pipeline


def _args(pipeline: Pipeline, state_dir: Path, log_key: bytes | None = None) -> list[str]:
    key = log_key if log_key is not None else pipeline.keys.log_key.public_key
    return ["witness", "--once", "--log-url", "http://site.test", "--origin",
            pipeline.settings.log_origin, "--log-key", base64.b64encode(key).decode(),
            "--name", NAME, "--state-dir", str(state_dir)]


def _state(state_dir: Path) -> dict[str, object]:
    document = json.loads((state_dir / _witness.STATE_FILE).read_text())
    assert isinstance(document, dict)
    return document


def test_witness_cosigns_and_its_cosignature_is_served(site: Pipeline, state_dir: Path,
                                                       device: DeviceSim) -> None:
    result = runner.invoke(app, _args(site, state_dir))
    assert result.exit_code == 0, result.output
    head = site.store.latest_head()
    assert head is not None
    assert f"cosigned {head.origin} size {head.size}" in result.output
    assert _state(state_dir)["size"] == head.size
    assert stat.S_IMODE((state_dir / _witness.KEY_FILE).stat().st_mode) == 0o600
    [line] = site.store.cosignatures(head.origin, head.size, head.root)
    key = load_or_create_signing_key(state_dir / _witness.KEY_FILE)
    verifiers = [NoteVerifier(head.origin, "ed25519", site.keys.log_key.public_key),
                 NoteVerifier(NAME, "ed25519", key.public_key, cosigner=True)]
    with TestClient(create_app(site)) as client:
        token, token_hash = new_token()
        site.store.add_token(token_hash, "auditor", Role.AUDITOR.value, 0)
        note = client.get("/v1/ledger/checkpoint",
                          headers={"Authorization": f"Bearer {token}"}).text
    assert note.endswith(line)
    _, opened = open_checkpoint_note(note, verifiers)
    assert [s.name for s in opened.verified] == [head.origin, NAME]
    # the log grows: the next round checks the consistency proof and moves on
    site.process([device.submit(device.vitals()) for _ in range(4)])
    grown = runner.invoke(app, _args(site, state_dir))
    assert grown.exit_code == 0, grown.output
    newer = site.store.latest_head()
    assert newer is not None and newer.size > head.size
    assert _state(state_dir)["size"] == newer.size


def test_a_split_view_exits_3_naming_both_roots(site: Pipeline, state_dir: Path) -> None:
    assert runner.invoke(app, _args(site, state_dir)).exit_code == 0
    state = _state(state_dir)
    seen = base64.b64encode(bytes(range(32))).decode()
    (state_dir / _witness.STATE_FILE).write_text(json.dumps({**state, "root": seen}))
    result = runner.invoke(app, _args(site, state_dir))
    assert result.exit_code == 3, result.output
    head = site.store.latest_head()
    assert head is not None
    assert "SPLIT VIEW" in result.output
    assert seen in result.output and base64.b64encode(head.root).decode() in result.output
    assert _state(state_dir)["root"] == seen


def test_a_checkpoint_signed_by_another_key_is_not_cosigned(site: Pipeline,
                                                            state_dir: Path) -> None:
    result = runner.invoke(app, _args(site, state_dir, log_key=bytes(32)))
    assert result.exit_code == 1
    assert "no signature by a known key" in result.output
    assert not (state_dir / _witness.STATE_FILE).exists()
    head = site.store.latest_head()
    assert head is not None
    assert site.store.cosignatures(head.origin, head.size, head.root) == []


def test_options_come_from_a_config_file_and_missing_ones_are_named(
        site: Pipeline, state_dir: Path, tmp_path: Path) -> None:
    missing = runner.invoke(app, ["witness", "--once", "--state-dir", str(state_dir)])
    assert missing.exit_code == 1
    assert "missing log_url, origin, log_key, name" in missing.output
    config = tmp_path / "witness.json"
    config.write_text(json.dumps({
        "log_url": "http://site.test", "origin": site.settings.log_origin, "name": NAME,
        "log_key": base64.b64encode(site.keys.log_key.public_key).decode(),
        "state_dir": str(state_dir)}))
    result = runner.invoke(app, ["witness", "--once", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert f"MEDTWIN_WITNESSES={NAME}=" in result.output
    bad_name = runner.invoke(app, ["witness", "--once", "--config", str(config),
                                   "--name", "has space"])
    assert bad_name.exit_code == 1
    assert "key name" in bad_name.output


def test_the_witness_state_is_kept_per_log(state_dir: Path) -> None:
    state_dir.mkdir()
    path = state_dir / _witness.STATE_FILE
    _witness.save_state(path, WitnessState("a.example/log", 3, bytes(32)))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _witness.load_state(path, "a.example/log").size == 3
    with pytest.raises(ConfigError, match="use another --state-dir"):
        _witness.load_state(path, "b.example/log")


def test_one_witness_process_per_state_directory(tmp_path: Path) -> None:
    """Two rounds on one state could both cosign from the same checkpoint: the second waits
    for nothing, it refuses."""
    from medtwin.cli._witness import state_lock

    with (state_lock(tmp_path / "w"),
          pytest.raises(ConfigError, match="another witness process"),
          state_lock(tmp_path / "w")):
        pass
    with state_lock(tmp_path / "w"):                       # free again afterwards
        pass


def test_the_witness_follows_a_log_key_rotation_it_can_check(site: Pipeline, state_dir: Path,
                                                            device: DeviceSim) -> None:
    """Pinned to the first key, the witness follows two rotations (one to ML-DSA-65): each
    endorsed by the key before it and included in the checkpoint; it remembers the new key."""
    args = _args(site, state_dir)
    assert runner.invoke(app, args).exit_code == 0
    site.rotate_log_key("ops", "ticket 20")
    site.process([device.submit(device.vitals()) for _ in range(2)])
    record = site.rotate_log_key("ops", "ticket 21: post-quantum", "ml-dsa-65")
    site.process([device.submit(device.vitals()) for _ in range(2)])
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    head = site.store.latest_head()
    assert head is not None and head.key_id == record.key_id
    state = _state(state_dir)
    assert state["size"] == head.size
    assert state["log_key"] == {"key_id": record.key_id, "suite": "ml-dsa-65",
                                "public_key": base64.b64encode(record.public_key).decode()}
    assert len(site.store.cosignatures(head.origin, head.size, head.root)) == 1
    # the next round uses the remembered key directly
    site.process([device.submit(device.vitals())])
    assert runner.invoke(app, args).exit_code == 0


def test_a_rotation_not_endorsed_by_the_trusted_key_is_not_followed(
        site: Pipeline, state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A log that swaps in a key endorsed by some other key gets no cosignature."""
    args = _args(site, state_dir)                           # pinned to the first key
    assert runner.invoke(app, args).exit_code == 0
    site.rotate_log_key("ops", "ticket 22")
    [genuine] = site.log_key_rotations()
    rogue = load_or_create_signing_key(state_dir.parent / "rogue.json")
    forged = endorse_log_key(rogue, genuine.endorsement().key, genuine.origin,
                             genuine.leaf_index, genuine.time_ms, genuine.reason)
    forged = dataclasses.replace(forged, previous=dataclasses.replace(
        forged.previous, public_key=site.keys.first_log_key.public_key))
    monkeypatch.setattr(site, "log_key_rotations", lambda: [LogKeyRecord.of(forged)])
    size_before = _state(state_dir)["size"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "is not signed by 'pinned key'" in " ".join(result.output.split())
    assert _state(state_dir)["size"] == size_before and "log_key" not in _state(state_dir)


def test_a_rotation_that_is_not_in_the_log_is_not_followed(
        site: Pipeline, state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An endorsement by the right key, but of a record the log does not hold at that leaf,
    fails the inclusion check: a witness adopts only rotations the log itself carries."""
    args = _args(site, state_dir)
    assert runner.invoke(app, args).exit_code == 0
    outgoing = site.keys.log_key                 # its private half, before it is dropped
    record = site.rotate_log_key("ops", "ticket 23")
    elsewhere = endorse_log_key(outgoing, record.endorsement().key, record.origin, 1,
                                record.time_ms, record.reason)
    monkeypatch.setattr(site, "log_key_rotations", lambda: [LogKeyRecord.of(elsewhere)])
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "inclusion proof" in " ".join(result.output.split())
    assert "log_key" not in _state(state_dir)


def test_a_checkpoint_older_than_the_newest_rotation_is_still_cosigned(
        site: Pipeline, state_dir: Path, device: DeviceSim,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A rotation logged between the witness's two fetches: it follows only as far as the
    key that signed the checkpoint it holds."""
    args = _args(site, state_dir)
    assert runner.invoke(app, args).exit_code == 0
    middle = site.rotate_log_key("ops", "ticket 24")
    site.process([device.submit(device.vitals())])
    held = site.checkpoint_note()
    assert held is not None
    site.rotate_log_key("ops", "ticket 25")
    monkeypatch.setattr(site, "checkpoint_note", lambda: held)
    result = runner.invoke(app, args)
    # checked and cosigned (the site, having moved on, asks for the newer one: 409)
    assert "the latest checkpoint is size" in " ".join(result.output.split())
    state = _state(state_dir)
    assert state["size"] == held[0].size
    assert state["log_key"]["key_id"] == middle.key_id   # type: ignore[index]


def test_a_post_quantum_witness_cosigns_and_verify_checks_it(
        site: Pipeline, tmp_path: Path, device: DeviceSim) -> None:
    """`--suite ml-dsa-65`: the witness cosigns with ML-DSA-65, the site (which registered
    it as `name=ml-dsa-65:<key>`) stores the line, and verify re-checks its signature."""
    from medtwin.pipeline import checkpoint_claims

    pq_dir = tmp_path / "pq-witness"
    args = [*_args(site, pq_dir)[:-4], "--name", PQ_NAME, "--state-dir", str(pq_dir),
            "--suite", "ml-dsa-65"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"MEDTWIN_WITNESSES={PQ_NAME}=ml-dsa-65:" in " ".join(result.output.split())
    head = site.store.latest_head()
    assert head is not None
    [line] = site.store.cosignatures(head.origin, head.size, head.root)
    assert len(line) > 4000                                    # an ML-DSA-65 signature
    claims = checkpoint_claims(site.store, site.settings, None)
    assert claims.cosignatures == 1
    assert verify_store(site.store, site.keys.log_key_history,
                        claims=claims.claims).checkpoints_checked == 1
    wrong = runner.invoke(app, [*args[:-2], "--suite", "ed25519"])
    assert wrong.exit_code == 1 and "use another --state-dir" in " ".join(wrong.output.split())
