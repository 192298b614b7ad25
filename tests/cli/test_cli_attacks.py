"""Attacks through the command line: attacked FHIR files with their ground truth, a replay that
finds the attack, and the demo's choice of attacks."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from medtwin.cli import app
from medtwin.cli._demo import ATTACK_CHANNEL, FLOOD_SIM_MS, LiveAttacks, parse_attacks
from medtwin.crypto import verify_signature
from medtwin.domain import Channel, FindingCode, packet_signing_message
from medtwin.fhir import GUARD_SYSTEM, validate_resource
from medtwin.sim import ATTACK_DEFAULT_SIZE, ATTACK_KINDS, Ward

runner = CliRunner()
START = "2026-01-01T06:00:00Z"
START_MS = 1_767_247_200_000
WARD = ["--patients", "2", "--seed", "5", "--start", START]


def _simulate(path: Path, *args: str, hours: str = "1") -> dict[str, dict[str, Any]]:
    result = runner.invoke(app, ["simulate", str(path), "--hours", hours, *WARD, *args])
    assert result.exit_code == 0, result.output
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}


def _plain(output: str) -> str:
    """The words of a command's output, without rich's box drawing and line breaks."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", output).split())


def _value(resource: dict[str, Any]) -> float:
    quantity = resource.get("valueQuantity") or resource["dosage"]["dose"]
    return float(quantity["value"])


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    return _simulate(tmp_path_factory.mktemp("clean") / "clean.ndjson")


def test_bias_changes_exactly_the_truths_readings_by_the_bias(
        tmp_path: Path, clean: dict[str, dict[str, Any]]) -> None:
    out = tmp_path / "bias.ndjson"
    attacked = _simulate(out, "--attack", "bias", "--attack-start-h", "0.5")
    truth = json.loads((tmp_path / "bias.ndjson.truth.json").read_text())
    assert truth["attack"] | {"start": None} == {
        "kind": "bias", "channel": Channel.GLUCOSE.code, "patient_id": "pt-0001",
        "start_ms": START_MS + 30 * 60_000, "start": None,
        "size": ATTACK_DEFAULT_SIZE["bias"], "size_unit": "mg/dL"}
    assert truth["removed"] is False
    assert attacked.keys() == clean.keys()
    changed = {rid for rid in clean if _value(clean[rid]) != _value(attacked[rid])}
    affected = {ref.removeprefix("Observation/") for ref in truth["affected"]}
    assert changed == affected
    assert len(affected) >= 5
    for rid in affected:
        resource = attacked[rid]
        assert resource["subject"] == {"reference": "Patient/pt-0001"}
        assert resource["code"]["coding"][0]["code"] == Channel.GLUCOSE.code
        assert resource["effectiveDateTime"] >= "2026-01-01T06:30:00"
        assert _value(resource) - _value(clean[rid]) == pytest.approx(40.0)


def test_dropout_removes_exactly_the_truths_readings(
        tmp_path: Path, clean: dict[str, dict[str, Any]]) -> None:
    attacked = _simulate(tmp_path / "drop.ndjson", "--attack", "dropout", "--attack-channel",
                         "heart-rate", "--attack-patient", "pt-0002")
    truth = json.loads((tmp_path / "drop.ndjson.truth.json").read_text())
    assert truth["removed"] is True and truth["attack"]["size_unit"] is None
    removed = clean.keys() - attacked.keys()
    assert {f"Observation/{rid}" for rid in removed} == set(truth["affected"])
    assert {clean[rid]["subject"]["reference"] for rid in removed} == {"Patient/pt-0002"}
    assert len(removed) == 31  # the monitor sends every minute: minutes 30 to 60
    assert all(_value(attacked[rid]) == _value(clean[rid]) for rid in attacked)


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--attack", "flood"], 2, r"unknown attack 'flood' for a file; choose one of bias, ramp"),
    (["--attack", "bias", "--attack-channel", "lactate"], 2, r"unknown channel 'lactate'"),
    (["--attack", "bias", "--attack-patient", "pt-0009"], 1,
     r"no patient 'pt-0009' in the ward; choose one of pt-0001 to pt-0002"),
    (["--attack", "bias", "--attack-start-h", "3"], 1, r"must start within the 1 simulated"),
])
def test_simulate_refuses_an_attack_it_cannot_write(tmp_path: Path, args: list[str], code: int,
                                                    message: str) -> None:
    result = runner.invoke(app, ["simulate", str(tmp_path / "x.ndjson"), "--hours", "1",
                                 *WARD, *args], terminal_width=200)
    assert result.exit_code == code
    assert re.search(message, _plain(result.output)), result.output
    assert not (tmp_path / "x.ndjson.truth.json").exists()


def test_replay_of_a_biased_file_reports_a_guard_finding(tmp_path: Path) -> None:
    source = tmp_path / "bias.ndjson"
    _simulate(source, "--attack", "bias", "--attack-start-h", "1", hours="2")
    truth = json.loads((tmp_path / "bias.ndjson.truth.json").read_text())
    result = runner.invoke(app, ["replay", str(source), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    issues = [json.loads(x)
              for x in (tmp_path / "out" / "DetectedIssue.ndjson").read_text().splitlines()]
    guard = [i for i in issues if i["code"]["coding"][0]["system"] == GUARD_SYSTEM]
    assert guard, "the guard raised no finding on a 40 mg/dL bias"
    codes = {c.value for c in FindingCode}
    inputs = {f"Observation/{json.loads(x)['id']}" for x in source.read_text().splitlines()}
    for issue in guard:
        validate_resource(issue)
        assert issue["code"]["coding"][0]["code"] in codes
        assert {r["reference"] for r in issue["implicated"]} <= inputs
    on_target = [i for i in guard if i["patient"] == {"reference": "Patient/pt-0001"}]
    assert on_target
    assert any({r["reference"] for r in i["implicated"]} & set(truth["affected"])
               for i in on_target)
    assert f"guard findings {len(guard)}" in result.output


def test_demo_refuses_an_unknown_attack_before_starting(tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "--attack", "bias,bogus", "--headless", "--duration",
                                 "1", "--data-dir", str(tmp_path / "demo")], terminal_width=200)
    assert result.exit_code == 2
    text = _plain(result.output)
    assert "unknown attack 'bogus'; choose from bias, ramp" in text
    assert "compromised-key" in text
    assert not (tmp_path / "demo").exists()


def test_parse_attacks() -> None:
    assert parse_attacks("bias, flood") == ("bias", "flood")
    assert parse_attacks(",".join(ATTACK_KINDS)) == ATTACK_KINDS
    with pytest.raises(ValueError, match=r"unknown attack ''; choose from"):
        parse_attacks("bias,")


def _glucose(envelopes: list[dict[str, Any]], device_id: str) -> dict[int, float]:
    return {r["time"]: r["value"] for e in envelopes if e["packet"]["device_id"] == device_id
            for r in e["packet"]["readings"] if r["code"] == ATTACK_CHANNEL.code}


def test_live_attacks_rewrite_and_add_signed_packets() -> None:
    start_ms, minutes = START_MS, 40
    attack_ms = start_ms + 20 * 60_000
    clean_ward, ward = Ward(2, start_ms, seed=3), Ward(2, start_ms, seed=3)
    attacks = LiveAttacks(ward, ("bias", "flood"), attack_ms, seed=3)
    keys = {d.device_id: d for d in ward.devices}
    sent: list[dict[str, Any]] = []
    expected: list[dict[str, Any]] = []
    n_attack = 0
    for minute in range(1, minutes + 1):
        out, added = attacks(ward.advance(start_ms + minute * 60_000))
        sent += out
        n_attack += added
        expected += clean_ward.advance(start_ms + minute * 60_000)
    for envelope in sent:  # every packet verifies under its device's registered key
        device = keys[envelope["packet"]["device_id"]]
        verify_signature(device.suite, device.public_key,
                         packet_signing_message(envelope["packet"]),
                         base64.b64decode(envelope["signature"]))
    clean, biased = _glucose(expected, "cgm-0001"), _glucose(sent, "cgm-0001")
    assert clean.keys() == biased.keys()
    delta = np.array([biased[t] - clean[t] for t in sorted(clean)])
    after = np.array(sorted(clean)) >= attack_ms
    assert np.allclose(delta[after], 40.0) and np.all(delta[~after] == 0.0)
    flood = [e for e in sent if e["packet"]["device_id"] == "cgm-0002"]
    genuine = [e for e in expected if e["packet"]["device_id"] == "cgm-0002"]
    burst = round(ATTACK_DEFAULT_SIZE["flood"] * FLOOD_SIM_MS / 1000)
    assert len(flood) == len(genuine) + burst
    assert n_attack == int(after.sum()) + burst
    seqs = [e["packet"]["seq"] for e in flood]
    assert len(set(seqs)) == len(seqs)  # the flood uses the device's own counter


def test_demo_findings_tolerate_a_missing_endpoint_and_print_each_once() -> None:
    from medtwin.cli._demo import _finding_line, _findings, _new_findings

    finding = {"patient_id": "pt-0001", "device_id": "cgm-0001", "code": "sensor-fault",
               "channel": Channel.GLUCOSE.code, "confidence": 0.9, "time_ms": START_MS,
               "since_ms": START_MS, "summary": "glucose stuck", "evidence": {},
               "quarantined": True}
    older = finding | {"time_ms": START_MS - 60_000, "quarantined": False}

    def site(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/findings":
            return httpx.Response(200, json={"findings": [finding, older]})
        return httpx.Response(404, json={"detail": "Not Found"})

    with httpx.Client(transport=httpx.MockTransport(
            lambda _: httpx.Response(404)), base_url="http://site") as http:
        assert _findings(http, "token", 5) == []
    with httpx.Client(transport=httpx.MockTransport(site), base_url="http://site") as http:
        seen: set[tuple[Any, ...]] = set()
        assert _new_findings(http, "token", seen) == [older, finding]  # oldest first
        assert _new_findings(http, "token", seen) == []
    line = _finding_line(finding)
    assert line == "guard sensor-fault (0.90) pt-0001/cgm-0001: glucose stuck [QUARANTINED]"
    assert "QUARANTINED" not in _finding_line(older)
