"""The ward: every device's signed packets, in time order, at their cadence, deterministic."""

from __future__ import annotations

import base64
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from medtwin.crypto import verify_signature
from medtwin.domain import Channel, packet_signing_message
from medtwin.sim import Ward

START_MS = int(datetime(2024, 3, 4, 6, 0, tzinfo=UTC).timestamp() * 1000)
MINUTE_MS = 60_000
HOURS = 4
ONSET_MS = 30 * MINUTE_MS
Envelope = dict[str, Any]
WardRun = tuple[Ward, list[Envelope]]


def _make(seed: int = 11) -> Ward:
    return Ward(3, START_MS, seed, deteriorating=1 / 3, onset_window_ms=(ONSET_MS, ONSET_MS))


@pytest.fixture(scope="module")
def ward_run() -> WardRun:
    """Four simulated hours of three patients, one deteriorating, in three uneven calls."""
    ward = _make()
    envelopes = ward.advance(START_MS + 90 * MINUTE_MS + 30_000)  # a partial minute waits
    assert ward.now_ms == START_MS + 90 * MINUTE_MS
    envelopes += ward.advance(START_MS + 100 * MINUTE_MS)
    envelopes += ward.advance(START_MS + HOURS * 60 * MINUTE_MS)
    return ward, envelopes


def _by_device(envelopes: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for envelope in envelopes:
        grouped[envelope["packet"]["device_id"]].append(envelope["packet"])
    return grouped


def _series(packets: list[dict[str, Any]], channel: Channel) -> npt.NDArray[np.float64]:
    """The values of `channel` in `packets`, in order."""
    return np.array([r["value"] for p in packets for r in p["readings"]
                     if r["code"] == channel.code], dtype=np.float64)


def test_devices_and_patients_are_pseudonymous_and_complete(ward_run: WardRun) -> None:
    ward, _ = ward_run
    assert [p.patient_id for p in ward.patients] == ["pt-0001", "pt-0002", "pt-0003"]
    assert [p.glucose_model for p in ward.patients] == ["adult#001", "adult#002", "adult#003"]
    ids = [(d.device_id, d.patient_id, d.suite) for d in ward.devices]
    assert ids[:4] == [("cgm-0001", "pt-0001", "ed25519"), ("vit-0001", "pt-0001", "ed25519"),
                       ("bp-0001", "pt-0001", "ed25519"), ("pump-0001", "pt-0001", "ed25519")]
    assert len(ids) == 12 and len({d.public_key for d in ward.devices}) == 12
    assert ward.device("pump-0003").patient_id == "pt-0003"
    with pytest.raises(KeyError):
        ward.device("cgm-9999")
    onsets = [p.deterioration_onset_ms for p in ward.patients]
    assert [o for o in onsets if o is not None] == [START_MS + ONSET_MS]
    assert onsets.count(None) == 2
    assert set(ward.true_bg) == {"pt-0001", "pt-0002", "pt-0003"}


def test_every_envelope_verifies_with_its_device_key(ward_run: WardRun) -> None:
    ward, envelopes = ward_run
    keys = {d.device_id: (d.suite, d.public_key) for d in ward.devices}
    for envelope in envelopes:
        suite, key = keys[envelope["packet"]["device_id"]]
        assert envelope["suite"] == suite
        verify_signature(suite, key, packet_signing_message(envelope["packet"]),
                         base64.b64decode(envelope["signature"]))


def test_time_order_sent_at_and_seq(ward_run: WardRun) -> None:
    _, envelopes = ward_run
    sent = [e["packet"]["sent_at"] for e in envelopes]
    assert sent == sorted(sent) and sent[0] > START_MS and sent[-1] == START_MS + HOURS * 3_600_000
    for envelope in envelopes:
        packet = envelope["packet"]
        assert packet["readings"]
        assert packet["sent_at"] == max(r["time"] for r in packet["readings"])
    for packets in _by_device(envelopes).values():
        assert [p["seq"] for p in packets] == list(range(len(packets)))


def test_each_device_keeps_its_cadence_and_channels(ward_run: WardRun) -> None:
    _, envelopes = ward_run
    grouped = _by_device(envelopes)
    minutes = HOURS * 60
    codes = {ch.code: ch for ch in Channel}
    carbs_seen = 0
    for tag in ("0001", "0002", "0003"):
        cgm, vit, bp = grouped[f"cgm-{tag}"], grouped[f"vit-{tag}"], grouped[f"bp-{tag}"]
        assert [p["sent_at"] for p in vit] == [START_MS + (k + 1) * MINUTE_MS
                                               for k in range(minutes)]
        assert [p["sent_at"] for p in cgm] == [START_MS + (k + 1) * 3 * MINUTE_MS
                                               for k in range(minutes // 3)]
        assert [p["sent_at"] for p in bp] == [START_MS + (k + 1) * 15 * MINUTE_MS
                                              for k in range(minutes // 15)]
        assert all([codes[r["code"]] for r in p["readings"]] == [Channel.GLUCOSE] for p in cgm)
        assert all([codes[r["code"]] for r in p["readings"]] == [
            Channel.HEART_RATE, Channel.SPO2, Channel.RESP_RATE, Channel.TEMPERATURE] for p in vit)
        assert all([codes[r["code"]] for r in p["readings"]] == [
            Channel.SYSTOLIC_BP, Channel.DIASTOLIC_BP] for p in bp)
        pump = grouped[f"pump-{tag}"]
        assert pump and {codes[r["code"]] for p in pump for r in p["readings"]} <= {
            Channel.CARBS, Channel.INSULIN}
        carbs_seen += len(_series(pump, Channel.CARBS))
    assert carbs_seen >= 2  # breakfast happens between 06:00 and 10:00
    for envelope in envelopes:
        for r in envelope["packet"]["readings"]:
            spec = codes[r["code"]].spec
            assert r["unit"] == spec.ucum
            assert spec.possible_min <= r["value"] <= spec.possible_max


def test_the_deteriorating_patient_deteriorates(ward_run: WardRun) -> None:
    ward, envelopes = ward_run
    grouped = _by_device(envelopes)
    for patient in ward.patients:
        tag = patient.patient_id[3:]
        late = grouped[f"vit-{tag}"][-30:]  # more than the 2 h ramp after onset
        late_cuff = grouped[f"bp-{tag}"][-2:]
        rr, spo2, temp, hr = (_series(late, ch).mean() for ch in (
            Channel.RESP_RATE, Channel.SPO2, Channel.TEMPERATURE, Channel.HEART_RATE))
        sbp = _series(late_cuff, Channel.SYSTOLIC_BP).mean()
        if patient.deterioration_onset_ms is not None:
            assert rr >= 21 and spo2 <= 93 and temp >= 38.0 and hr >= 100 and sbp <= 100
        else:
            assert spo2 >= 94 and temp < 37.8 and sbp > 100


def test_same_seed_same_values_other_seed_other_values(ward_run: WardRun) -> None:
    _, envelopes = ward_run
    end = START_MS + 60 * MINUTE_MS
    first_hour = [e["packet"] for e in envelopes if e["packet"]["sent_at"] <= end]
    assert [e["packet"] for e in _make().advance(end)] == first_hour
    assert [e["packet"] for e in _make(seed=12).advance(end)] != first_hour


def test_advance_into_the_past_returns_nothing() -> None:
    ward = Ward(1, START_MS, 0)
    assert ward.advance(START_MS - MINUTE_MS) == []
    assert len(ward.advance(START_MS + MINUTE_MS)) == 1  # the vitals monitor's first minute
    assert ward.advance(START_MS + MINUTE_MS) == []


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n_patients": 0}, "sim: n_patients must be at least 1"),
    ({"deteriorating": 1.5}, "sim: deteriorating must be a fraction between 0 and 1"),
    ({"start_ms": START_MS + 1}, "sim: start_ms must be a whole minute"),
    ({"onset_window_ms": (10, 5)}, "sim: onset_window_ms must be"),
])
def test_bad_arguments_are_refused(kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"n_patients": 1, "start_ms": START_MS, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=message):
        Ward(**arguments)
