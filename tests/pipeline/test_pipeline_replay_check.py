"""The evil-twin check: twin snapshots are logged, and replaying the logged inputs re-derives
every snapshot and every alert; a twin or an alert stream the inputs do not imply is caught."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from tests.conftest import DeviceSim, FakeClock

from medtwin.config import Settings
from medtwin.pipeline import Accepted, Pipeline


@pytest.fixture
def snapshotting(settings: Settings) -> Settings:
    return settings.with_(snapshot_interval_s=120)


def _run(pipeline: Pipeline, device: DeviceSim, clock: FakeClock, minutes: int,
         sick: Callable[[int], bool] = lambda k: False) -> None:
    """A minute of vitals per packet; septic-looking ones (NEWS2 alerts) where `sick`."""
    for k in range(minutes):
        clock.advance(60)
        readings = (device.vitals(hr=140.0, rr=28.0, temp=39.5, spo2=90.0, sbp=88.0)
                    if sick(k) else device.vitals(hr=70.0 + k % 5, rr=16.0 + k % 3))
        [outcome] = pipeline.process([device.submit(readings)])
        assert isinstance(outcome, Accepted)


def _site(settings: Settings, make_device: Callable[..., DeviceSim]
          ) -> tuple[Pipeline, DeviceSim]:
    pipeline = Pipeline.open(settings)
    pipeline.add_patient("pt-1")
    device = make_device("vit-1", "pt-1")
    pipeline.add_device(device.device)
    return pipeline, device


def test_an_honest_site_replays_to_every_snapshot_and_alert(
        snapshotting: Settings, make_device: Callable[..., DeviceSim], clock: FakeClock) -> None:
    pipeline, device = _site(snapshotting, make_device)
    _run(pipeline, device, clock, 10, sick=lambda k: 4 <= k < 7)
    snapshots = pipeline.store.snapshots()
    assert len(snapshots) == 5                            # every 2 min of site time
    [[patient, digest]] = json.loads(snapshots[-1].digests)
    assert patient == "pt-1" and len(digest) == 64         # hashes only, no values
    assert pipeline.store.alert_records()
    pipeline.close()
    report = Pipeline.check_replay(snapshotting)
    assert report.ok, report.mismatches
    assert (report.batches, report.snapshots) == (10, 5) and report.alerts >= 1


def test_a_twin_changed_behind_the_logs_back_is_caught(
        snapshotting: Settings, make_device: Callable[..., DeviceSim], clock: FakeClock) -> None:
    """An evil twin: its glucose parameters changed without a logged record."""
    import numpy as np

    pipeline, device = _site(snapshotting, make_device)
    _run(pipeline, device, clock, 3)
    rows = np.array([pipeline.twin.row("pt-1")])
    params = pipeline.twin.glucose_params(rows)
    pipeline.twin.set_glucose_params(rows, params._replace(
        insulin_sensitivity=params.insulin_sensitivity * 3))
    _run(pipeline, device, clock, 3)
    pipeline.close()
    report = Pipeline.check_replay(snapshotting)
    assert not report.ok
    assert "is not what the logged inputs imply" in report.mismatches[0]


def test_an_alert_the_site_suppressed_is_caught(
        snapshotting: Settings, make_device: Callable[..., DeviceSim], clock: FakeClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A site whose rules were silenced: the inputs imply an alert its log lacks."""
    pipeline, device = _site(snapshotting, make_device)
    advance = pipeline._advance

    def silenced(*args: object) -> object:
        return advance(*args)._replace(alerts=[])  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "_advance", silenced)
    _run(pipeline, device, clock, 4, sick=lambda k: True)
    assert pipeline.store.alert_records() == []
    pipeline.close()
    report = Pipeline.check_replay(snapshotting)
    assert any("alert the log lacks" in m for m in report.mismatches), report.mismatches


def test_verify_replay_from_the_command_line(
        snapshotting: Settings, make_device: Callable[..., DeviceSim], clock: FakeClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from medtwin.cli import app

    pipeline, device = _site(snapshotting, make_device)
    _run(pipeline, device, clock, 4)
    pipeline.close()
    monkeypatch.setenv("MEDTWIN_CHAIN_URL", "")
    out = CliRunner().invoke(app, ["verify", "--replay", "--data-dir",
                                   str(snapshotting.data_dir)])
    assert out.exit_code == 0, out.output
    assert "twin snapshots" in out.output and "match" in out.output


def test_the_glucose_twin_replays_bit_for_bit(
        snapshotting: Settings, make_device: Callable[..., DeviceSim], clock: FakeClock) -> None:
    from medtwin.domain import Channel, Reading

    pipeline = Pipeline.open(snapshotting)
    pipeline.add_patient("pt-2")
    cgm = make_device("cgm-2", "pt-2")
    pipeline.add_device(cgm.device)
    for k in range(40):
        clock.advance(180)
        readings = [Reading(Channel.GLUCOSE, 110.0 + 25.0 * ((k % 12) / 6.0 - 1.0) ** 2, clock())]
        if k == 5:
            readings += [Reading(Channel.CARBS, 40.0, clock()),
                         Reading(Channel.INSULIN, 4.0, clock())]
        [outcome] = pipeline.process([cgm.submit(readings)])
        assert isinstance(outcome, Accepted)
    pipeline.close()
    report = Pipeline.check_replay(snapshotting)
    assert report.ok, report.mismatches
    assert report.snapshots >= 20


def test_a_patient_admitted_after_a_snapshot_replays_cleanly(
        snapshotting: Settings, make_device: Callable[..., DeviceSim], clock: FakeClock) -> None:
    pipeline, device = _site(snapshotting, make_device)
    _run(pipeline, device, clock, 5)
    pipeline.add_patient("pt-2")
    later = make_device("vit-2", "pt-2")
    pipeline.add_device(later.device)
    _run(pipeline, later, clock, 5)
    pipeline.close()
    report = Pipeline.check_replay(snapshotting)
    assert report.ok, report.mismatches
    assert report.snapshots == 5


def test_an_alert_logged_later_than_its_batch_is_a_mismatch() -> None:
    """An evil twin that holds an alert back and logs it batches later is caught."""
    from medtwin.pipeline._pipeline import _compare_alerts
    from medtwin.store import AlertRecord

    key = ("pt-1", "news2-high", "high", 1_000)
    on_time = AlertRecord(12, *key, b"")
    late = AlertRecord(22, *key, b"")
    assert _compare_alerts([on_time], [10, 20], [(10, key)]) == []
    found = _compare_alerts([late], [10, 20], [(10, key)])
    assert any("do not raise this alert" in m for m in found)
    assert any("raises a news2-high alert the log lacks" in m for m in found)
