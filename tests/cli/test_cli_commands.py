"""The `medtwin` command: help, keys and tokens, verify, replay and a short headless demo."""

from __future__ import annotations

import json
import sqlite3
import stat
from datetime import datetime
from pathlib import Path

import pytest
from tests.conftest import T0_MS, DeviceSim
from typer.testing import CliRunner

from medtwin.access import new_token
from medtwin.cli import app
from medtwin.config import Settings
from medtwin.domain import Channel, Reading
from medtwin.fhir import insulin_administration, reading_observation, validate_resource
from medtwin.ledger import binding_message
from medtwin.pipeline import Pipeline

runner = CliRunner()
COMMANDS = ("demo", "serve", "replay", "simulate", "verify", "keys", "token", "bench",
            "witness")


def test_help_explains_every_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output
    for command in (*COMMANDS, "keys init", "keys add-device", "token create"):
        sub = runner.invoke(app, [*command.split(), "--help"])
        assert sub.exit_code == 0, command
        assert "Usage" in sub.output


def test_keys_devices_and_tokens(tmp_path: Path) -> None:
    site = ["--data-dir", str(tmp_path / "site")]
    assert runner.invoke(app, ["keys", "init", *site]).exit_code == 0
    kek = tmp_path / "site" / "keys" / "site-kek.json"
    assert stat.S_IMODE(kek.stat().st_mode) == 0o600
    assert runner.invoke(app, ["keys", "add-patient", "pt-7", *site]).exit_code == 0
    again = runner.invoke(app, ["keys", "add-patient", "pt-7", *site])
    assert again.exit_code == 1
    assert "already exists" in again.output
    key_file = tmp_path / "cgm-7.json"
    added = runner.invoke(app, ["keys", "add-device", "cgm-7", "--patient", "pt-7", "--out",
                                str(key_file), *site])
    assert added.exit_code == 0, added.output
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    provisioned = json.loads(key_file.read_text())
    assert provisioned["device_id"] == "cgm-7"
    assert provisioned["site"]["origin"] == "medtwin.local/log"
    assert set(provisioned["site"]["log_key"]) == {"key_id", "suite", "public_key"}
    orphan = runner.invoke(app, ["keys", "add-device", "cgm-8", "--patient", "pt-404", "--out",
                                 str(tmp_path / "cgm-8.json"), *site])
    assert orphan.exit_code == 1
    assert "unknown patient" in orphan.output
    assert not (tmp_path / "cgm-8.json").exists()
    listed = runner.invoke(app, ["keys", "list", *site])
    assert "cgm-7" in listed.output
    assert runner.invoke(app, ["keys", "quarantine", "cgm-7", *site]).exit_code == 0
    unexplained = runner.invoke(app, ["keys", "release", "cgm-7", *site])
    assert unexplained.exit_code == 2 and "--reason" in unexplained.output
    released = runner.invoke(app, ["keys", "release", "cgm-7", "--reason", "checked", *site])
    assert released.exit_code == 0, released.output
    twice = runner.invoke(app, ["keys", "release", "cgm-7", "--reason", "again", *site])
    assert twice.exit_code == 1 and "not quarantined" in twice.output
    token = runner.invoke(app, ["token", "create", "--role", "auditor", "--name", "a", *site])
    assert token.exit_code == 0
    assert token.output.strip().startswith("mtk_")


def test_verify_passes_then_names_the_tampered_record(tmp_path: Path, settings: Settings,
                                                      pipeline: Pipeline,
                                                      device: DeviceSim) -> None:
    pipeline.process([device.submit(device.vitals()) for _ in range(4)])
    pipeline.close()
    site = ["--data-dir", str(settings.data_dir)]
    ok = runner.invoke(app, ["verify", *site])
    assert ok.exit_code == 0, ok.output
    assert "verify: OK" in ok.output
    db = sqlite3.connect(settings.data_dir / "medtwin.db")
    (blob,) = db.execute("select envelope from packets where leaf_index = 2").fetchone()
    flipped = bytearray(blob)
    flipped[len(flipped) // 2] ^= 0x01
    db.execute("update packets set envelope = ? where leaf_index = 2", (bytes(flipped),))
    db.commit()
    db.close()
    bad = runner.invoke(app, ["verify", *site])
    assert bad.exit_code == 1
    assert "packet #2" in bad.output


def test_verify_counts_the_token_bindings_it_rechecked(settings: Settings,
                                                       pipeline: Pipeline) -> None:
    account = pytest.importorskip("eth_account", reason="bindings need the chain extra: "
                                                        "pip install 'medtwin[chain]'")
    from eth_account.messages import encode_defunct

    for name in ("dr-a", "dr-b"):
        token_hash = new_token()[1]
        pipeline.store.add_token(token_hash, name, "clinician", 0)
        wallet = account.Account.create()
        message = binding_message(settings.log_origin, token_hash, wallet.address)
        signed = wallet.sign_message(encode_defunct(text=message))
        pipeline.bind_address(token_hash, name, wallet.address, bytes(signed.signature))
    pipeline.close()
    ok = runner.invoke(app, ["verify", "--data-dir", str(settings.data_dir)])
    assert ok.exit_code == 0, ok.output
    assert "2 token bindings re-checked" in ok.output


def test_verify_refuses_a_missing_site(tmp_path: Path) -> None:
    result = runner.invoke(app, ["verify", "--data-dir", str(tmp_path / "nowhere")])
    assert result.exit_code == 1
    assert "no site" in result.output


def _write_input(path: Path) -> None:
    lines = []
    for minute in range(0, 120, 5):
        t = T0_MS + minute * 60_000
        hr = 70.0 + minute  # rising pulse and breathing: NEWS2 alerts before the end
        rr = 14.0 + minute / 8
        for ch, value in ((Channel.HEART_RATE, hr), (Channel.RESP_RATE, rr),
                          (Channel.SPO2, 97.0 - minute / 20), (Channel.SYSTOLIC_BP, 120.0),
                          (Channel.TEMPERATURE, 37.0), (Channel.GLUCOSE, 140.0 - minute / 2)):
            rid = f"o-{ch.name.lower().replace('_', '-')}-{minute}"
            obs = reading_observation("pt-1", Reading(ch, value, t), rid)
            lines.append(json.dumps(obs))
    dose = insulin_administration("pt-1", Reading(Channel.INSULIN, 4.0, T0_MS), "dose-1")
    lines.append(json.dumps(dose))
    wrong_unit = reading_observation("pt-1", Reading(Channel.GLUCOSE, 6.0, T0_MS + 60_000),
                                     "wrong-unit")
    wrong_unit["valueQuantity"]["code"] = "mmol/L"
    lines.append(json.dumps(wrong_unit))
    naive = reading_observation("pt-1", Reading(Channel.HEART_RATE, 80.0, T0_MS), "naive")
    naive["effectiveDateTime"] = "2026-01-01T00:00:00"
    lines.append(json.dumps(naive))
    path.write_text("\n".join(lines) + "\n")


def _epoch_ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def test_replay_writes_valid_fhir_estimates_and_findings(tmp_path: Path) -> None:
    source, out = tmp_path / "in.ndjson", tmp_path / "out"
    _write_input(source)
    result = runner.invoke(app, ["replay", str(source), "--out", str(out)])
    assert result.exit_code == 0, result.output
    observations = [json.loads(x) for x in (out / "Observation.ndjson").read_text().splitlines()]
    issues = [json.loads(x) for x in (out / "DetectedIssue.ndjson").read_text().splitlines()]
    provenance = [json.loads(x) for x in (out / "Provenance.ndjson").read_text().splitlines()]
    for resource in observations + issues + provenance:
        validate_resource(resource)
    methods = [o["method"]["coding"][0]["code"] for o in observations]
    assert methods.count("twin-estimate") == 24 * 6  # one per measurement; the dose has none
    assert methods.count("forecast") == 24 * 2       # 30 and 60 min after every CGM value
    glucose_in = {f"Observation/o-glucose-{m}": T0_MS + m * 60_000 for m in range(0, 120, 5)}
    for fc in (o for o in observations if o["method"]["coding"][0]["code"] == "forecast"):
        assert fc["code"]["coding"][0]["code"] == "99504-3"
        assert fc["valueQuantity"]["code"] == "mg/dL"
        [source] = fc["derivedFrom"]
        issued = _epoch_ms(fc["issued"])
        assert issued == glucose_in[source["reference"]]
        parts = {c["code"]["coding"][0]["code"]: c["valueQuantity"]["value"]
                 for c in fc["component"]}
        assert _epoch_ms(fc["effectiveDateTime"]) == issued + parts["horizon"] * 60_000
        assert parts["lower-95"] < fc["valueQuantity"]["value"] < parts["upper-95"]
    estimate = next(o for o in observations
                    if o["derivedFrom"] == [{"reference": "Observation/o-heart-rate-5"}])
    assert estimate["status"] == "preliminary"
    assert estimate["method"]["coding"][0]["code"] == "twin-estimate"
    assert 70.0 < estimate["valueQuantity"]["value"] < 75.0  # smoothed between 70 and 75
    gate = [i for i in issues if i["code"]["coding"][0]["code"] == "wrong-unit"]
    assert len(gate) == 1
    assert gate[0]["implicated"] == [{"reference": "Observation/wrong-unit"}]
    unreadable = [i for i in issues if i["code"]["coding"][0]["code"] == "malformed"]
    assert len(unreadable) == 1
    alerts = [i for i in issues if i["status"] == "preliminary"]
    assert {a["code"]["coding"][0]["code"] for a in alerts} >= {"news2-medium"}
    assert all(a["implicated"] for a in alerts)
    assert "trusted-import" in json.dumps(provenance[0])
    assert "refused 1" in result.output


def test_headless_demo_runs_and_verifies(tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "--patients", "2", "--duration", "12", "--headless",
                                 "--data-dir", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    assert "verify: OK" in result.output
    assert "packets rejected" in result.output
    pipeline = Pipeline.open(Settings(data_dir=tmp_path / "demo"))
    counts = pipeline.store.counts()
    pipeline.close()
    assert counts["packets"] > 20
    assert counts["readings"] > counts["packets"]
    assert counts["rejections"] >= 2  # the demo's replayed and forged packets
