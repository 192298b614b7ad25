"""A change of the configured AEAD suite is logged at the start that makes it, and records
sealed under either suite stay readable (every ciphertext names its suite)."""

from __future__ import annotations

import dataclasses

from tests.conftest import DeviceSim, FakeClock

from medtwin.config import Settings
from medtwin.pipeline import Accepted, Pipeline
from medtwin.store import SuiteRecord


def _suite_changes(pipeline: Pipeline) -> list[tuple[str, str]]:
    return [(r.previous_suite, r.suite) for r in pipeline.store.records()
            if isinstance(r, SuiteRecord)]


def test_switching_the_aead_suite_is_logged_once_per_change(
        settings: Settings, pipeline: Pipeline, device: DeviceSim, clock: FakeClock) -> None:
    assert isinstance(pipeline.process([device.submit(device.vitals(hr=71.0))])[0], Accepted)
    assert _suite_changes(pipeline) == []                  # the default: nothing to log
    pipeline.close()
    chacha = dataclasses.replace(settings, aead_suite="chacha20-poly1305")
    for suite_settings in (chacha, chacha):                # the second start: no change
        reopened = Pipeline.open(suite_settings)
        clock.advance(60)
        assert isinstance(reopened.process([device.submit(device.vitals(hr=72.0))])[0],
                          Accepted)
        assert _suite_changes(reopened) == [("aes-256-gcm", "chacha20-poly1305")]
        reopened.close()
    back = Pipeline.open(settings)
    try:
        assert _suite_changes(back) == [("aes-256-gcm", "chacha20-poly1305"),
                                        ("chacha20-poly1305", "aes-256-gcm")]
        # every packet's sealed bytes were opened (under both suites) to re-check its
        # device signature
        report = back.verify()
        assert (report.suite_changes, report.packets, report.signatures_checked) == (2, 3, 3)
    finally:
        back.close()
