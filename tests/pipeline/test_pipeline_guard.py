"""The guard on the reading's path: attacks on a simulated patient's CGM through the real
pipeline (signed devices, gate, twin, guard, ledger, store), and honest physiology that must
reach the clinical rules unhindered."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
from tests.conftest import DeviceSim, FakeClock, simglucose_history

from medtwin.config import Settings
from medtwin.domain import Channel, DeviceStatus, FindingCode, Reading
from medtwin.errors import ConflictError, InvalidInputError
from medtwin.pipeline import Accepted, Pipeline, verify_store

STEP_MS = 3 * 60_000          # simglucose's grid
BATCH_STEPS = 5               # one process() call per 15 minutes of data


@pytest.fixture(scope="module")
def day() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A day of UVA/Padova adult#001: CGM, carbs and insulin per 3-minute step."""
    cgm, carbs, insulin, _ = simglucose_history(1)
    return cgm, carbs, insulin


class Site:
    """A patient with CGM devices and a pump, fed step by step through the pipeline."""

    def __init__(self, pipeline: Pipeline, clock: FakeClock,
                 make_device: Callable[..., DeviceSim], n_cgm: int = 1) -> None:
        self.pipeline, self.clock = pipeline, clock
        pipeline.add_patient("pt-1")
        self.cgms = [make_device(f"cgm-{k + 1}", "pt-1") for k in range(n_cgm)]
        self.pump = make_device("pump-1", "pt-1")
        for d in [*self.cgms, self.pump]:
            pipeline.add_device(d.device)
        self.t0 = clock()
        self.outcomes: list[Accepted] = []

    def feed(self, cgm: np.ndarray, carbs: np.ndarray, insulin: np.ndarray,
             start: int, stop: int) -> None:
        """Steps start..stop-1; `cgm` is (n_cgm, steps)."""
        for first in range(start, stop, BATCH_STEPS):
            self.clock.now_ms = self.t0 + min(first + BATCH_STEPS, stop) * STEP_MS
            sent = self.clock()                    # devices upload every 15 minutes
            subs = []
            for k in range(first, min(first + BATCH_STEPS, stop)):
                t = self.t0 + k * STEP_MS
                for d, values in zip(self.cgms, cgm, strict=True):
                    subs.append(d.submit([Reading(Channel.GLUCOSE, float(values[k]), t)],
                                         sent_at_ms=sent))
                doses = [Reading(c, float(v[k]), t) for c, v in
                         ((Channel.CARBS, carbs), (Channel.INSULIN, insulin)) if v[k] > 0]
                if doses:
                    subs.append(self.pump.submit(doses, sent_at_ms=sent))
            outcomes = self.pipeline.process(subs)
            assert all(isinstance(o, Accepted) for o in outcomes), outcomes
            self.outcomes.extend(o for o in outcomes if isinstance(o, Accepted))

    def findings(self) -> list[tuple[FindingCode, str, bool]]:
        return [(f.code, f.device_id, f.quarantined)
                for o in self.outcomes for f in o.findings]

    def status(self, device_id: str) -> DeviceStatus:
        return next(d.status for d in self.pipeline.devices() if d.device_id == device_id)


@pytest.fixture
def site(pipeline: Pipeline, clock: FakeClock, make_device: Callable[..., DeviceSim]
         ) -> Iterator[Site]:
    yield Site(pipeline, clock, make_device)


def test_a_clean_day_convicts_nobody(site: Site, day: tuple[np.ndarray, ...]) -> None:
    """An honest day may hold a suspect reading or note what the twin, unpersonalized, did
    not expect (docs/validation.md counts those as false alarms), but it never convicts the
    device: no quarantine, no replay, no device-behaviour finding."""
    cgm, carbs, insulin = day
    site.feed(cgm[np.newaxis], carbs, insulin, 0, cgm.size)
    found = site.findings()
    assert not [f for f in found if f[2] or f[0] in {FindingCode.REPLAY,
                                                     FindingCode.DEVICE_BEHAVIOUR}]
    assert len(found) <= 4
    assert site.status("cgm-1") is DeviceStatus.ACTIVE


def test_a_replayed_hour_quarantines_the_cgm_which_is_then_held(
        site: Site, day: tuple[np.ndarray, ...], settings: Settings) -> None:
    cgm, carbs, insulin = day
    attacked = cgm.copy()
    start = 200                                    # 10 h in; replay 10:00-11:00 of 7:00-8:00
    attacked[start:start + 20] = cgm[start - 60:start - 40]
    site.feed(attacked[np.newaxis], carbs, insulin, 0, start + 30)
    found = [f for o in site.outcomes for f in o.findings if f.code is FindingCode.REPLAY]
    assert found and found[0].quarantined and found[0].device_id == "cgm-1"
    first = found[0]
    assert site.t0 + start * STEP_MS <= first.time_ms <= site.t0 + (start + 20) * STEP_MS
    assert first.evidence["since"] and first.evidence["would_clear"]
    assert site.status("cgm-1") is DeviceStatus.QUARANTINED
    reg = site.pipeline.store.registrations()[-1]
    assert (reg.device_id, reg.status) == ("cgm-1", "quarantined")
    assert reg.reason.startswith("guard: replay (finding #")
    # later readings are stored and held; the twin's glucose no longer follows them
    later = [o for o in site.outcomes if o.device_id == "cgm-1"][-5:]
    assert all(o.held.all() and np.isnan(o.estimates).all() for o in later)
    assert site.pipeline.findings()[0].patient_id == "pt-1"
    state = site.pipeline.twin_state("pt-1")
    glucose = next(c for c in state.channels if c.channel is Channel.GLUCOSE)
    assert glucose.held
    # the log verifies, and a restart rebuilds the same twin, guard and statuses
    report = verify_store(site.pipeline.store, site.pipeline.keys.log_key_history)
    assert report.records == site.pipeline.tree_size()
    site.pipeline.close()
    reopened = Pipeline.open(settings)
    try:
        assert reopened.twin_state("pt-1") == state
        source = np.array([reopened.guard.source("pt-1", "cgm-1")], np.intp)
        assert reopened.guard.blocked(source).all()
        with pytest.raises(InvalidInputError):
            reopened.release_device("cgm-1", " ")
        reopened.release_device("cgm-1", "sensor replaced by nurse on duty")
        assert not reopened.guard.blocked(source).any()
        with pytest.raises(ConflictError):
            reopened.release_device("cgm-1", "again")
        assert reopened.store.registrations()[-1].reason == (
            "release: sensor replaced by nurse on duty")
    finally:
        reopened.close()
        site.pipeline = Pipeline.open(settings)   # the fixture closes it


def test_three_cgms_outvote_a_biased_one(pipeline: Pipeline, clock: FakeClock,
                                         make_device: Callable[..., DeviceSim],
                                         day: tuple[np.ndarray, ...]) -> None:
    cgm, carbs, insulin = day
    site = Site(pipeline, clock, make_device, n_cgm=3)
    rng = np.random.default_rng(7)
    streams = cgm + rng.normal(0.0, 2.0, (3, cgm.size))
    streams[2, 150:] += 70.0                       # cgm-3 reads 70 mg/dL high from 7:30
    site.feed(np.round(streams), carbs, insulin, 0, 180)
    convicted = [f for f in site.findings() if f[2]]
    assert convicted == [(FindingCode.SPOOFING_SUSPECTED, "cgm-3", True)]
    assert [site.status(d) for d in ("cgm-1", "cgm-2", "cgm-3")] == [
        DeviceStatus.ACTIVE, DeviceStatus.ACTIVE, DeviceStatus.QUARANTINED]
    # the twin follows the honest pair
    glucose = next(c for c in pipeline.twin_state("pt-1").channels
                   if c.channel is Channel.GLUCOSE)
    assert abs(glucose.estimate - cgm[179]) < 25.0


def test_a_flat_line_is_a_sensor_fault_and_held(site: Site, day: tuple[np.ndarray, ...]
                                                ) -> None:
    cgm, carbs, insulin = day
    stuck = cgm.copy()
    stuck[100:140] = stuck[100]
    site.feed(stuck[np.newaxis], carbs, insulin, 0, 140)
    faults = [f for o in site.outcomes for f in o.findings
              if f.code is FindingCode.SENSOR_FAULT]
    assert faults and faults[0].detector == "frozen-value" and not faults[0].quarantined
    assert [o for o in site.outcomes if o.device_id == "cgm-1"][-1].held.all()
    assert site.status("cgm-1") is DeviceStatus.ACTIVE


def test_a_real_fall_into_hypoglycaemia_alerts_and_is_not_called_spoofing(
        site: Site, day: tuple[np.ndarray, ...]) -> None:
    cgm, carbs, insulin = day
    fallen = cgm.copy()
    start = 200
    drop = np.clip(np.arange(cgm.size - start) * 2.5 * 3, 0, None)   # 2.5 mg/dL/min
    fallen[start:] = np.maximum(cgm[start] - drop, 45.0)
    fallen[start:] += np.random.default_rng(3).normal(0.0, 1.5, cgm.size - start)
    site.feed(np.round(fallen)[np.newaxis], carbs, insulin, 0, start + 40)
    rules = {a.rule for a in site.pipeline.alerts()}
    assert "hypoglycaemia-level-2" in rules
    codes = {f[0] for f in site.findings()}
    assert FindingCode.SPOOFING_SUSPECTED not in codes
    assert site.status("cgm-1") is DeviceStatus.ACTIVE


def test_a_cgm_its_twin_partner_outvotes_for_hours_is_called_spoofing(
        pipeline: Pipeline, clock: FakeClock, make_device: Callable[..., DeviceSim],
        day: tuple[np.ndarray, ...]) -> None:
    """Two CGMs; one reads 35 mg/dL high, within the reassuring range, from 10 h on. The
    other anchors the twin, so the offset cannot hide in the twin's sensor state: the
    residual tests fire for as long as it lasts."""
    cgm, carbs, insulin = day
    site = Site(pipeline, clock, make_device, n_cgm=2)
    pair = np.stack([cgm, cgm.copy()])
    wobble = np.round(np.sin(np.arange(cgm.size - 200.0)))
    pair[1, 200:] = np.minimum(cgm[200:] + 35.0, 179.0) + wobble
    site.feed(pair, carbs, insulin, 0, 260)
    residual = [f for o in site.outcomes for f in o.findings
                if f.code is FindingCode.SPOOFING_SUSPECTED and f.detector == "innovation-tests"]
    assert residual and {f.device_id for f in residual} == {"cgm-2"}
    assert not any(f.quarantined for f in residual)


def _wobbly(device: DeviceSim, rng: np.random.Generator, time_ms: int | None = None
            ) -> list[Reading]:
    """Normal vitals with a monitor's wobble (a flat line would be a frozen sensor)."""
    return device.vitals(hr=round(72 + rng.normal(0, 2)), spo2=round(97 + rng.normal(0, 1)),
                         rr=round(16 + rng.normal(0, 1)), sbp=round(120 + rng.normal(0, 3)),
                         temp=round(37 + rng.normal(0, 0.1), 1), time_ms=time_ms)


def test_a_flooding_device_is_found_and_quarantined(pipeline: Pipeline, device: DeviceSim,
                                                    clock: FakeClock) -> None:
    rng = np.random.default_rng(5)
    for _ in range(40):                           # its usual: one packet a minute
        clock.advance(60)
        pipeline.process([device.submit(_wobbly(device, rng))])
    clock.advance(60)
    flood = [device.submit(_wobbly(device, rng, clock() - (80 - k) * 500)) for k in range(80)]
    outcomes = pipeline.process(flood)
    found = [f for o in outcomes if isinstance(o, Accepted) for f in o.findings]
    assert any(f.code is FindingCode.DEVICE_BEHAVIOUR and f.quarantined for f in found)
    assert next(d.status for d in pipeline.devices()) is DeviceStatus.QUARANTINED
    # from the convicting packet on, the flood moves nothing, even inside this batch
    convicted = next(k for k, o in enumerate(outcomes) if isinstance(o, Accepted)
                     and any(f.quarantined for f in o.findings))
    assert all(o.held.all() for o in outcomes[convicted:] if isinstance(o, Accepted))
    assert not any(o.held.any() for o in outcomes[:convicted] if isinstance(o, Accepted))


def test_forged_packets_never_count_against_the_device_they_name(
        pipeline: Pipeline, device: DeviceSim, clock: FakeClock,
        make_device: Callable[..., DeviceSim]) -> None:
    forger = make_device("vit-1", "pt-1", seed="someone else's key")
    rng = np.random.default_rng(6)
    for _ in range(40):
        clock.advance(60)
        pipeline.process([device.submit(_wobbly(device, rng))])
    for _ in range(20):
        clock.advance(5)
        pipeline.process([forger.submit(forger.vitals(spo2=99.0), seq=device.next_seq)])
    assert next(d.status for d in pipeline.devices()) is DeviceStatus.ACTIVE
    assert not pipeline.findings()
    clock.advance(60)
    (o,) = pipeline.process([device.submit(device.vitals(spo2=85.0, hr=130.0))])
    assert isinstance(o, Accepted) and not o.held.any()


def _vitals_hour(pipeline: Pipeline, device: DeviceSim, clock: FakeClock, minutes: int,
                 rng: np.random.Generator, **level: float) -> list[Accepted]:
    """`minutes` of one-minute vitals around `level`, with a monitor's small wobble."""
    usual = {"hr": 72.0, "rr": 16.0, "spo2": 97.0, "sbp": 120.0, "temp": 37.0} | level
    out = []
    for _ in range(minutes):
        clock.advance(60)
        noisy = {k: round(v + rng.normal(0.0, 1.0 if k != "temp" else 0.05), 1)
                 for k, v in usual.items()}
        (o,) = pipeline.process([device.submit(device.vitals(**noisy))])
        assert isinstance(o, Accepted)
        out.append(o)
    return out


@pytest.mark.parametrize(("responds", "flagged"), [(False, True), (True, False)])
def test_spo2_falling_alone_is_questioned(pipeline: Pipeline, device: DeviceSim,
                                          clock: FakeClock, responds: bool,
                                          flagged: bool) -> None:
    rng = np.random.default_rng(11)
    _vitals_hour(pipeline, device, clock, 60, rng)
    later = []
    for k in range(1, 11):                        # a desaturation over 10 min, not a step
        response = {"hr": 72.0 + 3.3 * k, "rr": 16.0 + k} if responds else {}
        later += _vitals_hour(pipeline, device, clock, 1, rng, spo2=97.0 - 1.5 * k,
                              **response)
    response = {"hr": 105.0, "rr": 26.0} if responds else {}
    later += _vitals_hour(pipeline, device, clock, 25, rng, spo2=82.0, **response)
    found = [f for o in later for f in o.findings if f.detector == "physiological-coherence"]
    assert bool(found) is flagged
    if flagged:
        assert found[0].code is FindingCode.SENSOR_FAULT and not found[0].quarantined
        assert "heart rate" in found[0].summary and "resp rate" in found[0].summary
    # the clinical rules see the low SpO2 either way
    assert any(a.rule.startswith("news2") for a in pipeline.alerts())
