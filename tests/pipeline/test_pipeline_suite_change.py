"""A change of the configured AEAD suite is logged at the start that makes it, and records
sealed under either suite stay readable (every ciphertext names its suite)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from tests.conftest import DeviceSim, FakeClock

from medtwin.config import Settings
from medtwin.pipeline import Accepted, Pipeline
from medtwin.pipeline._pipeline import UNRECORDED_SUITE
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


def _open_as_before_suites_were_logged(settings: Settings) -> Pipeline:
    """Open a site as the release before `aead-suite` records did: it never logs one."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Pipeline, "_log_aead_suite", lambda _self: None)
        return Pipeline.open(settings)


def test_an_upgraded_site_logs_no_change_its_data_does_not_show(
        settings: Settings, clock: FakeClock,
        make_device: Callable[..., DeviceSim]) -> None:
    """A site sealing with ChaCha20-Poly1305 since before suites were logged: its first start
    under this release logs nothing (its envelopes name the suite in force); a real change
    afterwards is logged from that suite, not from the default."""
    chacha = dataclasses.replace(settings, aead_suite="chacha20-poly1305")
    old = _open_as_before_suites_were_logged(chacha)
    old.add_patient("pt-1")
    device = make_device("vit-1", "pt-1")
    old.add_device(device.device)
    assert isinstance(old.process([device.submit(device.vitals())])[0], Accepted)
    old.close()
    upgraded = Pipeline.open(chacha)
    try:
        assert _suite_changes(upgraded) == []
        clock.advance(60)
        assert isinstance(upgraded.process([device.submit(device.vitals())])[0], Accepted)
        assert upgraded.verify().signatures_checked == 2
    finally:
        upgraded.close()
    changed = Pipeline.open(settings)
    try:
        assert _suite_changes(changed) == [("chacha20-poly1305", "aes-256-gcm")]
        clock.advance(60)
        assert isinstance(changed.process([device.submit(device.vitals())])[0], Accepted)
        report = changed.verify()
        assert (report.suite_changes, report.signatures_checked) == (1, 3)
    finally:
        changed.close()


def test_an_upgraded_site_without_records_reads_its_wrapped_data_keys(
        settings: Settings) -> None:
    """No sealed record yet: the wrapped data keys tell the suite when they agree; when they
    do not, the first record names the suite before as unrecorded (not as the default)."""
    chacha = dataclasses.replace(settings, aead_suite="chacha20-poly1305")
    old = _open_as_before_suites_were_logged(chacha)
    old.add_patient("pt-1")
    old.close()
    for _ in range(2):                      # a real change, logged once
        site = Pipeline.open(settings)
        assert _suite_changes(site) == [("chacha20-poly1305", "aes-256-gcm")]
        site.close()
    mixed = dataclasses.replace(settings, data_dir=settings.data_dir.parent / "mixed")
    for suite_settings in (mixed, dataclasses.replace(mixed, aead_suite="chacha20-poly1305")):
        old = _open_as_before_suites_were_logged(suite_settings)
        old.add_patient(f"pt-{suite_settings.aead_suite}")
        old.close()
    site = Pipeline.open(mixed)
    try:
        assert _suite_changes(site) == [(UNRECORDED_SUITE, "aes-256-gcm")]
        assert site.verify().suite_changes == 1
    finally:
        site.close()
