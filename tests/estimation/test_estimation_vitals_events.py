"""The vitals twin on a stream of events through the twin bank: the first event pins the
twin, later ones give innovations only where a channel was read, late events change nothing,
and batching does not matter."""

from __future__ import annotations

import numpy as np
import pytest

from medtwin.domain import Channel
from medtwin.estimation import NO_TIME, TwinBank, TwinUpdate
from medtwin.physiology import VITALS_OBSERVED_CHANNELS

MIN = 60_000
HR, SPO2, RR, SBP, DBP, TEMP = (Channel.HEART_RATE, Channel.SPO2, Channel.RESP_RATE,
                                Channel.SYSTOLIC_BP, Channel.DIASTOLIC_BP, Channel.TEMPERATURE)


def _propose(bank: TwinBank, readings: list[tuple[str, Channel, float, int]],
             arrival: list[int] | None = None) -> TwinUpdate:
    rows = np.array([bank.row(p) for p, _, _, _ in readings], np.intp)
    channel = np.array([c for _, c, _, _ in readings], np.int8)
    value = np.array([v for _, _, v, _ in readings])
    time = np.array([t for _, _, _, t in readings], np.int64)
    return bank.propose(rows, channel, value, time,
                        None if arrival is None else np.array(arrival, np.int64))


def _full_set(patient: str, t: int, hr: float = 72.0, spo2: float = 97.0, rr: float = 16.0,
              sbp: float = 120.0, dbp: float = 75.0, temp: float = 36.8
              ) -> list[tuple[str, Channel, float, int]]:
    return [(patient, HR, hr, t), (patient, SPO2, spo2, t), (patient, RR, rr, t),
            (patient, SBP, sbp, t), (patient, DBP, dbp, t), (patient, TEMP, temp, t)]


def test_the_first_event_pins_the_twin_to_the_readings() -> None:
    bank = TwinBank()
    update = _propose(bank, _full_set("p", 0, hr=128.0, spo2=91.0, rr=27.0, sbp=88.0,
                                      dbp=50.0, temp=38.9))
    got = update.vitals.readings
    np.testing.assert_allclose(got.estimate, [128.0, 91.0, 27.0, 88.0, 50.0, 38.9], atol=0.6)
    assert np.isnan(update.innovation).all()            # nothing was predicted yet
    bank.apply(update)
    assert bank.vitals_rows(np.array([0], np.intp)).time_ms[0] == 0


def test_later_events_give_innovations_where_a_channel_was_read() -> None:
    bank = TwinBank()
    bank.apply(_propose(bank, _full_set("p", 0)))
    update = _propose(bank, [("p", HR, 90.0, 5 * MIN), ("p", RR, 16.0, 5 * MIN),
                             ("p", Channel.GLUCOSE, 120.0, 5 * MIN)])
    hr, rr, g = update.innovation
    assert hr == pytest.approx(18.0, abs=3.0) and abs(rr) < 3.0
    assert np.isnan(g)                                   # the glucose twin's first value
    assert (update.innovation_var[:2] > 0).all()
    assert update.vitals.readings.estimate[0] > 80.0     # pulled towards the reading


def test_a_late_event_changes_nothing() -> None:
    bank = TwinBank()
    bank.apply(_propose(bank, _full_set("p", 10 * MIN)))
    before = bank.vitals_rows(np.array([0], np.intp))
    update = _propose(bank, [("p", HR, 150.0, 5 * MIN)])
    assert np.isnan(update.innovation[0])
    bank.apply(update)
    after = bank.vitals_rows(np.array([0], np.intp))
    np.testing.assert_array_equal(after.mean, before.mean)


def test_batching_does_not_matter() -> None:
    events = [_full_set("a", k * 5 * MIN, hr=72.0 + 3 * k, temp=36.8 + 0.1 * k)
              for k in range(8)]
    events += [[("b", HR, 60.0 + k, k * 7 * MIN), ("b", SBP, 110.0, k * 7 * MIN)]
               for k in range(5)]
    one = TwinBank()
    whole = _propose(one, [r for e in events for r in e],
                       [i for i, e in enumerate(events) for _ in e])
    one.apply(whole)
    many = TwinBank()
    many.row("a"), many.row("b")
    innovations = {}
    for e in events:
        update = _propose(many, e)
        many.apply(update)
        for r, v in zip(e, update.innovation, strict=True):
            innovations[(r[0], r[1], r[3])] = v
    flat = [r for e in events for r in e]
    expected = np.array([innovations[(p, c, t)] for p, c, _, t in flat])
    np.testing.assert_allclose(whole.innovation, expected, rtol=1e-10, equal_nan=True)
    rows = np.array([0, 1], np.intp)
    np.testing.assert_allclose(one.vitals_rows(rows).mean, many.vitals_rows(rows).mean,
                               rtol=1e-10)


def test_forecasts_exist_only_for_patients_with_vitals() -> None:
    bank = TwinBank()
    bank.apply(_propose(bank, [*_full_set("p", 0), ("q", Channel.GLUCOSE, 100.0, 0)]))
    mean, low, high = bank.vitals_forecast(np.array([0, 1], np.intp), (30.0, 60.0))
    assert mean.shape == (2, 2, len(VITALS_OBSERVED_CHANNELS))
    assert np.isfinite(mean[0]).all() and np.isnan(mean[1]).all()
    assert (low[0] <= mean[0]).all() and (mean[0] <= high[0]).all()
    assert bank.vitals_rows(np.array([1], np.intp)).time_ms[0] == NO_TIME
