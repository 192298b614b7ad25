"""The glucose twin in the pipeline: per-reading innovations and forecasts, forecasts in the
twin state and the live stream, what-if, restart, and batching invariance."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from tests.conftest import DeviceSim, FakeClock

from medtwin.access import Role, new_token
from medtwin.api import create_app
from medtwin.config import Settings
from medtwin.domain import Channel, Reading
from medtwin.errors import ConflictError, InvalidInputError, NotFoundError
from medtwin.estimation import FORECAST_HORIZONS_MIN
from medtwin.pipeline import Accepted, Pipeline

MIN_MS = 60_000


def _cgm_day(device: DeviceSim, clock: FakeClock, pipeline: Pipeline, steps: int = 24,
             meal_at: int | None = 6) -> list[Accepted]:
    """CGM every 5 min (one packet each), a 60 g meal with its 6 U bolus at `meal_at`; the
    steady part wobbles by 1 mg/dL, as a live sensor's does (a flat line is a stuck one)."""
    outcomes = []
    for k in range(steps):
        t = clock()
        readings = [Reading(Channel.GLUCOSE, 120.0 + (8.0 * (k - meal_at) if meal_at is not None
                                                       and k > meal_at else k % 2), t)]
        if k == meal_at:
            readings += [Reading(Channel.CARBS, 60.0, t), Reading(Channel.INSULIN, 6.0, t)]
        [outcome] = pipeline.process([device.submit(readings)])
        assert isinstance(outcome, Accepted)
        outcomes.append(outcome)
        clock.advance(300)
    return outcomes


def test_every_cgm_reading_gets_an_innovation_and_forecasts(
        pipeline: Pipeline, device: DeviceSim, clock: FakeClock) -> None:
    outcomes = _cgm_day(device, clock, pipeline)
    first, later = outcomes[0].glucose, outcomes[3].glucose
    assert np.isnan(first.innovation[0])            # the first value starts the twin
    assert np.isfinite(later.innovation[0]) and later.innovation_var[0] > 0
    assert later.forecast.shape == (1, len(FORECAST_HORIZONS_MIN))
    assert (later.forecast_low[0] < later.forecast[0]).all()
    assert (later.forecast[0] < later.forecast_high[0]).all()
    meal = outcomes[6].glucose
    assert np.isfinite(meal.estimate[0]) and np.isnan(meal.estimate[1:]).all()
    assert meal.filter_time_ms[0] == outcomes[6].glucose.filter_time_ms[0]
    # after the meal is known, the twin forecasts a rise
    after = outcomes[7].glucose
    assert after.forecast[0, 0] > after.estimate[0] + 5.0


def test_the_twin_state_carries_forecasts_until_glucose_is_stale(
        pipeline: Pipeline, device: DeviceSim, clock: FakeClock) -> None:
    _cgm_day(device, clock, pipeline, steps=6, meal_at=None)
    state = pipeline.twin_state("pt-1")
    assert [f.target_ms - f.issued_ms for f in state.forecasts] == [
        h * MIN_MS for h in FORECAST_HORIZONS_MIN]
    assert all(f.channel is Channel.GLUCOSE and f.low < f.mean < f.high
               for f in state.forecasts)
    clock.advance(2 * 3600)
    assert pipeline.twin_state("pt-1").forecasts == ()


def test_the_result_does_not_depend_on_how_packets_are_batched(
        settings: Settings, tmp_path_factory: pytest.TempPathFactory,
        make_device: Callable[..., DeviceSim], clock: FakeClock) -> None:
    t0 = clock()
    readings = [Reading(Channel.GLUCOSE, 110.0 + 3 * k, t0 + k * 5 * MIN_MS) for k in range(12)]
    readings.insert(4, Reading(Channel.CARBS, 40.0, t0 + 3 * 5 * MIN_MS))
    forecasts = []
    for grouping in ("one packet", "packet per reading"):
        site = Settings(data_dir=tmp_path_factory.mktemp(grouping.replace(" ", "-")),
                        clock=clock)
        clock.now_ms = t0 + 12 * 5 * MIN_MS
        with _open(site) as pipe:
            pipe.add_patient("pt-1")
            dev = make_device("cgm-1", "pt-1")
            pipe.add_device(dev.device)
            if grouping == "one packet":
                pipe.process([dev.submit(readings)])
            else:
                pipe.process([dev.submit([r]) for r in readings])
            forecasts.append(pipe.twin_state("pt-1").forecasts)
    assert forecasts[0] == forecasts[1] and forecasts[0]


def test_a_restart_resumes_with_the_same_glucose_twin(
        settings: Settings, make_device: Callable[..., DeviceSim], clock: FakeClock) -> None:
    with _open(settings) as pipe:
        pipe.add_patient("pt-1")
        dev = make_device("cgm-1", "pt-1")
        pipe.add_device(dev.device)
        _cgm_day(dev, clock, pipe, steps=10, meal_at=4)
        before = pipe.twin_state("pt-1")
        whatif_before = pipe.whatif("pt-1", 5.0, np.zeros(12), np.zeros(12))
    with _open(settings) as pipe:
        assert pipe.twin_state("pt-1") == before
        after = pipe.whatif("pt-1", 5.0, np.zeros(12), np.zeros(12))
    np.testing.assert_array_equal(after.mean, whatif_before.mean)


def test_whatif_answers_therapy_questions(pipeline: Pipeline, device: DeviceSim,
                                         clock: FakeClock) -> None:
    _cgm_day(device, clock, pipeline, steps=8, meal_at=None)
    steps = 48
    meal = np.zeros(steps)
    meal[0] = 60.0
    usual, more = np.zeros(steps), np.zeros(steps)
    usual[0], more[0] = 6.0, 6.0 * 1.3
    eaten = pipeline.whatif("pt-1", 5.0, meal, usual)
    bigger = pipeline.whatif("pt-1", 5.0, meal, more)
    skipped = pipeline.whatif("pt-1", 5.0, np.zeros(steps), usual)
    assert eaten.time_ms.size == steps and (np.diff(eaten.time_ms) == 5 * MIN_MS).all()
    assert bigger.mean[-1] < eaten.mean[-1] - 5.0
    assert skipped.mean.max() < eaten.mean.max() - 20.0
    assert ((eaten.low <= eaten.mean) & (eaten.mean <= eaten.high)).all()


def test_whatif_refuses_what_it_cannot_answer(pipeline: Pipeline, patient_id: str) -> None:
    with pytest.raises(ConflictError, match="no glucose data"):
        pipeline.whatif(patient_id, 5.0, np.zeros(4), np.zeros(4))
    with pytest.raises(NotFoundError):
        pipeline.whatif("nobody", 5.0, np.zeros(4), np.zeros(4))
    for carbs, insulin, step in ((np.zeros(3), np.zeros(4), 5.0),
                                 (np.array([-1.0]), np.zeros(1), 5.0),
                                 (np.array([np.nan]), np.zeros(1), 5.0),
                                 (np.zeros(1), np.zeros(1), 0.0)):
        with pytest.raises(InvalidInputError):
            pipeline.whatif(patient_id, step, carbs, insulin)


@pytest.fixture
def client(pipeline: Pipeline) -> Iterator[TestClient]:
    with TestClient(create_app(pipeline)) as test_client:
        yield test_client


def _clinician(pipeline: Pipeline) -> dict[str, str]:
    token, token_hash = new_token()
    pipeline.store.add_token(token_hash, "dr", Role.CLINICIAN.value, 0)
    return {"Authorization": f"Bearer {token}"}


def test_the_api_shows_forecasts_and_runs_whatifs(client: TestClient, pipeline: Pipeline,
                                                  device: DeviceSim, clock: FakeClock) -> None:
    _cgm_day(device, clock, pipeline, steps=8, meal_at=None)
    auth = _clinician(pipeline)
    twin = client.get("/v1/patients/pt-1/twin", headers=auth).json()
    assert [f["horizon_min"] for f in twin["forecasts"]] == list(FORECAST_HORIZONS_MIN)
    assert all(f["unit"] == "mg/dL" and f["low"] < f["mean"] < f["high"]
               for f in twin["forecasts"])
    body = {"events": [{"minutes": 0, "carbs_g": 60, "insulin_u": 6}], "hours": 3}
    usual = client.post("/v1/patients/pt-1/whatif", json=body, headers=auth)
    assert usual.status_code == 200, usual.text
    points = usual.json()["points"]
    assert len(points) == 36 and points[0]["time_ms"] < points[1]["time_ms"]
    body["events"][0]["insulin_u"] = 7.8
    more = client.post("/v1/patients/pt-1/whatif", json=body, headers=auth).json()["points"]
    assert more[-1]["mean"] < points[-1]["mean"]
    bad = client.post("/v1/patients/pt-1/whatif", json={"hours": -1}, headers=auth)
    assert bad.status_code == 422
    too_low = client.post("/v1/patients/pt-1/whatif",
                          json={"basal_change_u_per_h": -5}, headers=auth)
    assert too_low.status_code == 422 and "basal" in too_low.json()["detail"]
    assert client.post("/v1/patients/nobody/whatif", json={}, headers=auth).status_code == 404
    assert client.post("/v1/patients/pt-1/whatif", json={}).status_code == 401


def test_the_live_stream_carries_forecasts(pipeline: Pipeline, device: DeviceSim,
                                           clock: FakeClock) -> None:
    async def scenario() -> list[dict[str, Any]]:
        queue = pipeline.events.subscribe()
        _cgm_day(device, clock, pipeline, steps=3, meal_at=None)
        await asyncio.sleep(0)
        events = [queue.get_nowait() for _ in range(queue.qsize())]
        pipeline.events.unsubscribe(queue)
        return events

    twins = [e for e in asyncio.run(scenario()) if e["type"] == "twin"]
    assert len(twins) == 3
    assert all(len(e["state"]["forecasts"]) == len(FORECAST_HORIZONS_MIN) for e in twins)


class _open:
    """Open a site for a `with` block and close it after."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def __enter__(self) -> Pipeline:
        self.pipeline = Pipeline.open(self.settings)
        return self.pipeline

    def __exit__(self, *exc: object) -> None:
        self.pipeline.close()


def test_whatif_leaves_the_callers_arrays_alone(pipeline: Pipeline, device: DeviceSim,
                                                clock: FakeClock) -> None:
    t = clock()
    pipeline.process([device.submit([Reading(Channel.GLUCOSE, 120.0, t)])])
    pipeline.process([device.submit([Reading(Channel.CARBS, 60.0, t + 1),
                                     Reading(Channel.INSULIN, 6.0, t + 1)])])  # pending
    carbs, insulin = np.zeros(12), np.zeros(12)
    first = pipeline.whatif("pt-1", 5.0, carbs, insulin)
    second = pipeline.whatif("pt-1", 5.0, carbs, insulin)
    assert (carbs == 0).all() and (insulin == 0).all()
    np.testing.assert_array_equal(first.mean, second.mean)


def test_the_api_simulates_a_lower_basal_and_refuses_what_it_cannot(
        client: TestClient, pipeline: Pipeline, device: DeviceSim, clock: FakeClock) -> None:
    _cgm_day(device, clock, pipeline, steps=8, meal_at=None)
    auth = _clinician(pipeline)
    url = "/v1/patients/pt-1/whatif"
    usual = client.post(url, json={"hours": 6}, headers=auth).json()["points"]
    lower = client.post(url, json={"hours": 6, "basal_change_u_per_h": -0.3}, headers=auth)
    assert lower.status_code == 200, lower.text
    assert lower.json()["points"][-1]["mean"] > usual[-1]["mean"] + 5.0   # less insulin
    none_left = client.post(url, json={"basal_change_u_per_h": -10}, headers=auth)
    assert none_left.status_code == 422 and "no insulin" in none_left.json()["detail"]
    late = client.post(url, json={"hours": 1, "events": [{"minutes": 2000, "carbs_g": 50}]},
                       headers=auth)
    assert late.status_code == 422 and "after" in late.json()["detail"]
    for body in ('{"hours": NaN}', '{"events": [{"minutes": 0, "carbs_g": Infinity}]}'):
        reply = client.post(url, content=body, headers={**auth,
                                                        "Content-Type": "application/json"})
        assert reply.status_code == 422, body
        assert "input" not in json.dumps(reply.json())
