"""Personalization in the pipeline: identified from stored data, logged encrypted, used by
the twin, verified and replayed on restart."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from tests.conftest import T0_MS, FakeClock
from typer.testing import CliRunner

from medtwin.access import Role, new_token
from medtwin.api import create_app
from medtwin.cli import app
from medtwin.config import Settings
from medtwin.domain import Channel
from medtwin.errors import InvalidInputError, NotFoundError
from medtwin.ingest import ImportSubmission
from medtwin.physiology import (
    GlucoseParams,
    GlucoseState,
    basal_infusion_rate,
    default_glucose_params,
    glucose_dynamics,
    steady_state,
)
from medtwin.pipeline import Accepted, Pipeline

STEP_MS = 5 * 60_000
SI_FACTOR = 1.8


def _true_params() -> GlucoseParams:
    p = default_glucose_params(1)
    return p._replace(insulin_sensitivity=p.insulin_sensitivity * SI_FACTOR)


def _import_day(pipeline: Pipeline, patient_id: str, start_ms: int, hours: int = 24,
                seed: int = 0) -> None:
    """A day of the model itself under the true parameters: CGM every 5 min (noise 4 mg/dL),
    three meals with boluses sized for the default parameters, the pump's basal reported
    every step; imported four hours per packet."""
    p = _true_params()
    rng = np.random.default_rng(seed)
    x = steady_state(p)
    basal = float(basal_infusion_rate(p)[0]) * 5.0
    meals = {int(h * 12): g for h, g in ((7.5, 50.0), (12.5, 70.0), (19.0, 60.0))}
    codes, units, values, times = [], [], [], []
    for k in range(hours * 12):
        t = start_ms + k * STEP_MS
        carbs = meals.get(k, 0.0)
        bolus = carbs / 10.0
        x = glucose_dynamics(x, np.array([[carbs, bolus]]), p, np.array([5.0]))
        readings = [(Channel.INSULIN, basal + bolus, t),   # delivered at the step's start
                    (Channel.GLUCOSE, float(x[0, GlucoseState.GI]) + rng.normal(0, 4.0),
                     t + STEP_MS)]                       # read at its end
        if carbs:
            readings.append((Channel.CARBS, carbs, t))
        for channel, value, when in readings:
            codes.append(channel.code), units.append(channel.ucum), values.append(value)
            times.append(when)
    per_packet = 4 * (12 * 2 + 1)
    for seq, s in enumerate(range(0, len(codes), per_packet)):
        sl = slice(s, s + per_packet)
        [outcome] = pipeline.process([ImportSubmission(
            patient_id, "model.ndjson", seq, codes[sl], units[sl], np.array(values[sl]),
            np.array(times[sl], np.int64))])
        assert isinstance(outcome, Accepted), outcome


@pytest.fixture
def late_clock(clock: FakeClock) -> FakeClock:
    clock.now_ms = T0_MS + 2 * 86_400_000
    return clock


def test_personalize_identifies_logs_and_uses_the_parameters(
        settings: Settings, late_clock: FakeClock) -> None:
    pipe = Pipeline.open(settings)
    try:
        pipe.add_patient("pt-1")
        pipe.add_patient("pt-2")                     # no data: skipped
        _import_day(pipe, "pt-1", T0_MS)
        before = pipe.whatif("pt-1", 5.0, np.zeros(24), np.full(24, 0.0))
        [result] = pipe.personalize()
        si = result.params["insulin_sensitivity"]
        default_si = float(default_glucose_params(1).insulin_sensitivity[0])
        assert si == pytest.approx(SI_FACTOR * default_si, rel=0.25)
        assert 0 < result.uncertainty["insulin_sensitivity"] < 0.5
        assert result.n_cgm == 24 * 12 - 1 or result.n_cgm == 24 * 12
        assert pipe.store.counts()["twin_params"] == 1
        report = pipe.verify()
        assert report.records == pipe.tree_size()
        after = pipe.whatif("pt-1", 5.0, np.zeros(24), np.zeros(24))
        assert not np.allclose(after.mean, before.mean)   # the twin now runs on them
        state = pipe.twin_state("pt-1")
    finally:
        pipe.close()
    reopened = Pipeline.open(settings)
    try:
        assert reopened.twin_state("pt-1") == state
        again = reopened.whatif("pt-1", 5.0, np.zeros(24), np.zeros(24))
        np.testing.assert_array_equal(again.mean, after.mean)
    finally:
        reopened.close()


def test_the_logged_parameters_are_encrypted(settings: Settings, late_clock: FakeClock) -> None:
    pipe = Pipeline.open(settings)
    try:
        pipe.add_patient("pt-1")
        _import_day(pipe, "pt-1", T0_MS, hours=8)
        [result] = pipe.personalize(["pt-1"], days=1.0)
        [record] = pipe.store.twin_params("pt-1")
        text = str(result.params["insulin_sensitivity"]).encode()
        assert text not in record.envelope and text not in record.commit_bytes()
    finally:
        pipe.close()


def test_personalize_refuses_bad_requests(pipeline: Pipeline, patient_id: str) -> None:
    with pytest.raises(NotFoundError):
        pipeline.personalize(["nobody"])
    with pytest.raises(InvalidInputError):
        pipeline.personalize(days=0.0)
    assert pipeline.personalize() == []              # no CGM data yet: nothing logged
    assert pipeline.store.counts()["twin_params"] == 0


def test_personalize_over_the_api_and_the_cli(settings: Settings, late_clock: FakeClock) -> None:
    pipe = Pipeline.open(settings)
    try:
        pipe.add_patient("pt-1")
        pipe.add_patient("pt-2")
        _import_day(pipe, "pt-1", T0_MS, hours=8)
        token, token_hash = new_token()
        pipe.store.add_token(token_hash, "root", Role.ADMIN.value, 0)
        clinician, clinician_hash = new_token()
        pipe.store.add_token(clinician_hash, "dr", Role.CLINICIAN.value, 0)
        with TestClient(create_app(pipe)) as client:
            admin = {"Authorization": f"Bearer {token}"}
            reply = client.post("/v1/patients/pt-1/personalize", json={"days": 1},
                                headers=admin)
            assert reply.status_code == 200, reply.text
            body = reply.json()
            assert set(body["params"]) == set(body["uncertainty"])
            assert body["n_cgm"] > 0 and body["leaf_index"] >= 0
            none = client.post("/v1/patients/pt-2/personalize", json={}, headers=admin)
            assert none.status_code == 409
            forbidden = client.post("/v1/patients/pt-1/personalize", json={},
                                    headers={"Authorization": f"Bearer {clinician}"})
            assert forbidden.status_code == 403
    finally:
        pipe.close()
    result = CliRunner().invoke(app, ["personalize", "--patient", "pt-1", "--days", "1",
                                      "--data-dir", str(settings.data_dir)])
    assert result.exit_code == 0, result.output
    assert "insulin_sensitivity" in result.output and "pt-1" in result.output
    unknown = CliRunner().invoke(app, ["personalize", "--patient", "nobody",
                                       "--data-dir", str(settings.data_dir)])
    assert unknown.exit_code == 1 and "unknown patient" in unknown.output
