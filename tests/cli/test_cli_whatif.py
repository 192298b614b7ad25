"""`medtwin whatif`: a twin identified from a simglucose day, then meals and boluses simulated."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from medtwin.cli import app
from medtwin.domain import Channel, Reading
from medtwin.fhir import (
    METHOD_SYSTEM,
    PREDICTION_SYSTEM,
    insulin_administration,
    reading_observation,
    validate_resource,
    write_ndjson,
)
from medtwin.fhir._time import parse_time_ms

runner = CliRunner()
START = int(datetime(2024, 3, 4, 0, 0, tzinfo=UTC).timestamp() * 1000)
MIN = 60_000


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """One simulated day of adult#001 (CGM, carbs, pump insulin) as FHIR; its last time."""
    pytest.importorskip("simglucose")
    from medtwin.sim import GlucosePatient

    patient = GlucosePatient("adult#001", START, seed=1)
    resources = []
    for k in range(480):
        for j, r in enumerate(patient.step().readings):
            build = insulin_administration if r.channel is Channel.INSULIN else (
                reading_observation)
            resources.append(build("adult-1", r, f"h-{k}-{j}"))
    path = tmp_path_factory.mktemp("whatif") / "history.ndjson"
    write_ndjson(path, resources)
    return path, patient.time_ms


def _scenario(path: Path, last_ms: int, meal_g: float, bolus_u: float,
              patient: str = "adult-1", delay_min: int = 30) -> Path:
    t = last_ms + delay_min * MIN
    resources = []
    if meal_g:
        resources.append(reading_observation(patient, Reading(Channel.CARBS, meal_g, t), "meal"))
    if bolus_u:
        resources.append(insulin_administration(patient, Reading(Channel.INSULIN, bolus_u, t),
                                                "bolus"))
    write_ndjson(path, resources)
    return path


def _run(history: Path, scenario: Path, out: Path, *extra: str) -> list[dict[str, Any]]:
    result = runner.invoke(app, ["whatif", str(history), str(scenario), "--out", str(out),
                                 *extra])
    assert result.exit_code == 0, result.output
    assert "resources" in result.output and "SI" in result.output
    lines = (out / "Observation.ndjson").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _mean(resources: list[dict[str, Any]]) -> np.ndarray:
    return np.array([r["valueQuantity"]["value"] for r in resources])


def test_whatif_follows_the_scenario(history: tuple[Path, int], tmp_path: Path) -> None:
    path, last_ms = history
    usual = _run(path, _scenario(tmp_path / "usual.ndjson", last_ms, 60.0, 6.0), tmp_path / "u")
    bigger = _run(path, _scenario(tmp_path / "big.ndjson", last_ms, 60.0, 9.0), tmp_path / "b")
    skipped = _run(path, _scenario(tmp_path / "skip.ndjson", last_ms, 0.0, 6.0), tmp_path / "s",
                   "--hours", "3")

    # Output: valid R4, coded simulation, on a 5-min grid after the history, up to 4 h after
    # the last input; the band holds the mean.
    times = [parse_time_ms(r["effectiveDateTime"], "t") for r in usual]
    end = times[0] - 5 * MIN
    assert end >= last_ms and end - last_ms < 5 * MIN and end % (5 * MIN) == 0
    assert np.all(np.diff(times) == 5 * MIN)
    assert times[-1] >= last_ms + 30 * MIN + 4 * 60 * MIN > times[-2]
    for r in usual:
        validate_resource(r)
        assert r["method"]["coding"] == [{"system": METHOD_SYSTEM, "code": "simulation"}]
        assert r["subject"] == {"reference": "Patient/adult-1"}
        assert parse_time_ms(r["issued"], "issued") == last_ms
        low, high, horizon = (c["valueQuantity"]["value"] for c in r["component"])
        assert all(c["code"]["coding"][0]["system"] == PREDICTION_SYSTEM
                   for c in r["component"])
        assert low <= r["valueQuantity"]["value"] <= high
        assert parse_time_ms(r["effectiveDateTime"], "t") == end + horizon * MIN
    meal_refs = [{"reference": "Observation/meal"} in r["derivedFrom"] for r in usual]
    assert not meal_refs[0] and all(meal_refs[6:])
    assert len(skipped) == len(usual) - 12   # 3 h instead of 4 after the last input

    # Behaviour: a bigger bolus lowers glucose, a skipped meal lowers it more.
    u, b, s = _mean(usual), _mean(bigger), _mean(skipped)
    assert np.all(b <= u + 1e-6) and (u - b).max() > 5.0
    assert np.all(s <= u[: s.size] + 1e-6) and s.max() < u.max() - 20.0
    assert u.min() > 60.0 and u.max() < 300.0


def test_errors_are_clear(history: tuple[Path, int], tmp_path: Path) -> None:
    path, last_ms = history
    ok = _scenario(tmp_path / "ok.ndjson", last_ms, 50.0, 5.0)
    out = tmp_path / "out"

    def fails(hist: Path, scen: Path, *extra: str) -> str:
        result = runner.invoke(app, ["whatif", str(hist), str(scen), "--out", str(out), *extra])
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output and result.exception is not None
        return " ".join(result.output.split())

    early = _scenario(tmp_path / "early.ndjson", last_ms, 50.0, 0.0, delay_min=0)
    assert ("error: fhir: line 1: scenario: Observation/meal is at or before the end of the "
            "history") in fails(path, early)
    assert "unknown patient pt-404" in fails(path, ok, "--patient", "pt-404")
    empty = tmp_path / "empty.ndjson"
    empty.write_text("")
    assert "history: no glucose, carbohydrate or insulin readings" in fails(empty, ok)
    no_cgm = tmp_path / "no-cgm.ndjson"
    write_ndjson(no_cgm, [reading_observation("adult-1", Reading(Channel.CARBS, 40.0, START),
                                              "c")])
    assert "history: no CGM glucose readings" in fails(no_cgm, ok)
    cgm_in_scenario = tmp_path / "cgm.ndjson"
    write_ndjson(cgm_in_scenario, [reading_observation(
        "adult-1", Reading(Channel.GLUCOSE, 140.0, last_ms + 60 * MIN), "g")])
    message = fails(path, cgm_in_scenario)
    assert "line 1: scenario: Observation/g: only carbohydrate Observations" in message
    assert "140" not in message
    broken = tmp_path / "broken.ndjson"
    broken.write_text('{"resourceType": "Observation"\n')
    assert "fhir: line 1: line is not valid JSON" in fails(path, broken)
    assert not (out / "Observation.ndjson").exists()
