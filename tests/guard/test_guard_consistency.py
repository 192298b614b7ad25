"""Cross-sensor consistency: honest devices agree, a biased one is disputed (blamed by a
third), a spoofed SpO2 stands alone, a real deterioration moves together, batch = alone."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np
import pytest

from medtwin.domain import N_CHANNELS, Channel
from medtwin.estimation import NO_TIME
from medtwin.guard._consistency import (
    AGREEMENT_SIGMAS,
    DEVICE_NOISE_SD,
    SUSTAINED_MS,
    Agreement,
    Coherence,
    CoherenceRule,
    DeviceAgreement,
    describe_agreement,
    describe_coherence,
    device_agreement,
    physiological_coherence,
)
from medtwin.sim import VitalsParams, vitals_init, vitals_step

MINUTE = 60_000
T0 = 1_700_006_400_000  # 00:00 UTC: patients asleep, no activity bouts
HR_THRESHOLD = AGREEMENT_SIGMAS * np.sqrt(2.0) * DEVICE_NOISE_SD[Channel.HEART_RATE]


class Hr(NamedTuple):
    patient: np.ndarray
    device: np.ndarray
    time_ms: np.ndarray
    value: np.ndarray


def heart_rate(seed: int, biases: tuple[float, ...], minutes: int = 120) -> Hr:
    """One patient's HR every minute from one device per bias, each at its own clock offset
    (< 40 s) with 1.5 /min noise, reported as integers."""
    rng = np.random.default_rng(seed)
    t = np.arange(minutes) * MINUTE
    true = 72 + 8 * np.sin(2 * np.pi * t / (90 * MINUTE)) + np.cumsum(rng.normal(0, 0.3, minutes))
    parts = []
    for d, bias in enumerate(biases):
        shift = int(rng.integers(0, 40_000))
        value = np.round(true + bias + rng.normal(0, 1.5, minutes))
        parts.append((np.zeros(minutes, np.int64), np.full(minutes, d), T0 + t + shift, value))
    return Hr(*(np.concatenate(x) for x in zip(*parts, strict=True)))


def agreement(hr: Hr) -> DeviceAgreement:
    return device_agreement(hr.patient, hr.device, hr.time_ms, hr.value, Channel.HEART_RATE)


def test_two_agreeing_devices_raise_nothing() -> None:
    result = agreement(heart_rate(1, (0.0, 0.0)))
    assert not result.alarm.any()
    assert (result.status == Agreement.CONSISTENT).mean() > 0.95  # ends may lack a partner
    assert np.nanmax(result.statistic) < HR_THRESHOLD


def test_one_biased_of_two_is_disputed_with_evidence() -> None:
    hr = heart_rate(2, (0.0, 30.0))
    result = agreement(hr)
    paired = result.status != Agreement.UNPAIRED
    assert (result.status[paired] == Agreement.DISPUTED).all()  # no blame with two devices
    assert result.alarm[hr.device == 1].mean() > 0.95
    i = int(np.flatnonzero(result.alarm & (hr.device == 1))[-1])
    assert result.statistic[i] > 20 and result.threshold[i] == pytest.approx(HR_THRESHOLD)
    assert result.partner_device[i] == 0 and result.n_disagree[i] == 1
    assert result.since_ms[i] == hr.time_ms[hr.device == 1][paired[hr.device == 1]].min()
    assert abs(result.consensus[i] - hr.value[i]) > result.threshold[i]
    text = describe_agreement(result, i, 0, 1, Channel.HEART_RATE, int(hr.time_ms[i]),
                              float(hr.value[i]))
    assert "disputed" in text and "1 of 1 other devices disagree" in text


def test_third_device_blames_the_biased_one() -> None:
    hr = heart_rate(3, (0.0, 30.0, 0.0))
    result = agreement(hr)
    biased, honest = hr.device == 1, hr.device != 1
    judged = result.n_partners >= 2
    assert (result.status[biased & judged] == Agreement.OUTLIER).all()
    assert (result.status[honest & judged] == Agreement.CONSISTENT).all()
    assert not result.alarm[honest & judged].any()


def test_no_majority_means_disputed_not_outlier() -> None:
    result = agreement(heart_rate(4, (0.0, 30.0, 60.0)))
    judged = result.n_partners == 2
    assert (result.status[judged] == Agreement.DISPUTED).all()


def test_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="guard: per-reading arrays must have one equal shape"):
        device_agreement(np.zeros(3, np.int64), np.zeros(2, np.int64), np.zeros(3, np.int64),
                         np.zeros(3), Channel.HEART_RATE)


class Vitals(NamedTuple):
    patient: np.ndarray
    time_ms: np.ndarray
    channel: np.ndarray
    value: np.ndarray


CHANNELS = (Channel.HEART_RATE, Channel.SPO2, Channel.RESP_RATE)


def ward_vitals(seed: int, hours: float, onset_h: float = np.inf,
                spo2: float | None = None) -> Vitals:
    """One simulated patient's HR, SpO2 and RR every minute from midnight."""
    rng = np.random.default_rng(seed)
    params = VitalsParams.sample(1, rng, onset_ms=[T0 + onset_h * 3_600_000])
    if spo2 is not None:
        params = dataclasses.replace(params, spo2=np.array([spo2]))
    state = vitals_init(params, T0, rng)
    rows = []
    for _ in range(int(hours * 60)):
        state, signs = vitals_step(params, state, 60.0, rng)
        by = signs.by_channel()
        rows += [(signs.time_ms, int(c), float(by[c][0])) for c in CHANNELS]
    t, c, v = (np.array(x) for x in zip(*rows, strict=True))
    return Vitals(np.zeros(t.size, np.int64), t.astype(np.int64), c.astype(np.int64), v)


def baseline_of(v: Vitals, hours: float = 1.0) -> np.ndarray:
    """Each channel's median over the first `hours`: the patient's resting baseline."""
    out = np.full((1, N_CHANNELS), np.nan)
    early = v.time_ms < T0 + hours * 3_600_000
    for c in CHANNELS:
        out[0, int(c)] = np.median(v.value[early & (v.channel == int(c))])
    return out


def coherence(v: Vitals, baseline: np.ndarray) -> Coherence:
    return physiological_coherence(v.patient, v.time_ms, v.channel, v.value, baseline)


def spoofed() -> tuple[Vitals, int]:
    v = ward_vitals(5, hours=3.0)
    start = T0 + 2 * 3_600_000
    hit = (v.channel == Channel.SPO2) & (v.time_ms >= start)
    return v._replace(value=np.where(hit, 84.0, v.value)), start


def test_spoofed_spo2_with_silent_vitals_is_flagged() -> None:
    v, start = spoofed()
    base = baseline_of(v)
    result = coherence(v, base)
    spo2 = v.channel == Channel.SPO2
    late = spo2 & (v.time_ms >= start + SUSTAINED_MS)
    assert result.alarm[late].all()
    assert not result.alarm[v.time_ms < start + SUSTAINED_MS].any()  # sustained only
    assert not result.alarm[~spo2].any()
    i = int(np.flatnonzero(late)[-1])
    assert result.rule[i] == CoherenceRule.HYPOXAEMIA_WITHOUT_RESPONSE
    assert result.since_ms[i] == start and result.threshold[i] == 88.0
    assert result.score[i] < 1.0
    silent = (1 << Channel.HEART_RATE) | (1 << Channel.RESP_RATE)
    assert result.silent_channels[i] == silent
    text = describe_coherence(result, i, base[0])
    assert text.startswith("SpO2 84 %") and "unchanged" in text and "expected HR outside" in text


def test_real_deterioration_moving_together_is_not_flagged() -> None:
    v = ward_vitals(6, hours=5.0, onset_h=1.5, spo2=94.0)
    result = coherence(v, baseline_of(v))
    judged = result.rule == CoherenceRule.HYPOXAEMIA_WITHOUT_RESPONSE
    assert judged.sum() > 30  # SpO2 really fell below 88 % for a while: the rule was tested
    assert not result.alarm.any()
    assert (result.score[judged] == 1.0).all()  # HR and RR responded


def test_stale_companions_never_alarm() -> None:
    v, _ = spoofed()
    only_spo2 = v.channel == Channel.SPO2
    v = Vitals(*(x[only_spo2] for x in v))
    assert not coherence(v, baseline_of(ward_vitals(5, hours=1.0))).alarm.any()


def test_batched_patients_equal_each_alone() -> None:
    hrs = [heart_rate(1, (0.0, 0.0)), heart_rate(2, (0.0, 30.0)),
           heart_rate(3, (0.0, 30.0, 0.0))]
    ids = (7, 0, 3)
    batch = Hr(*(np.concatenate(x) for x in zip(
        *(h._replace(patient=h.patient + p) for h, p in zip(hrs, ids, strict=True)),
        strict=True)))
    shuffle = np.random.default_rng(0).permutation(batch.value.size)
    together = agreement(Hr(*(x[shuffle] for x in batch)))
    alone = [agreement(h) for h in hrs]
    for field, joint in zip(together._fields, together, strict=True):
        expected = np.concatenate([getattr(a, field) for a in alone])
        back = np.empty_like(joint)
        back[shuffle] = joint
        np.testing.assert_array_equal(back, expected, err_msg=field)

    (spoof, _), sepsis = spoofed(), ward_vitals(6, hours=5.0, onset_h=1.5, spo2=94.0)
    cases = [(spoof, baseline_of(spoof)), (sepsis, baseline_of(sepsis))]
    joint_v = Vitals(*(np.concatenate(x) for x in zip(
        spoof, sepsis._replace(patient=sepsis.patient + 1), strict=True)))
    joint_b = np.concatenate([b for _, b in cases])
    shuffle = np.random.default_rng(1).permutation(joint_v.value.size)
    together_c = coherence(Vitals(*(x[shuffle] for x in joint_v)), joint_b)
    alone_c = [coherence(v, b) for v, b in cases]
    for field, joint in zip(together_c._fields, together_c, strict=True):
        expected = np.concatenate([getattr(a, field) for a in alone_c])
        back = np.empty_like(joint)
        back[shuffle] = joint
        np.testing.assert_array_equal(back, expected, err_msg=field)


def test_empty_batch() -> None:
    empty = np.zeros(0, np.int64)
    result = device_agreement(empty, empty, empty, np.zeros(0), Channel.HEART_RATE)
    assert result.alarm.shape == (0,)
    result_c = physiological_coherence(empty, empty, empty, np.zeros(0),
                                       np.zeros((1, N_CHANNELS)))
    assert result_c.alarm.shape == (0,) and NO_TIME < 0


def test_heart_rate_jump_alone_is_flagged() -> None:
    v = ward_vitals(5, hours=3.0)
    start = T0 + 2 * 3_600_000
    hit = (v.channel == Channel.HEART_RATE) & (v.time_ms >= start)
    v = v._replace(value=np.where(hit, v.value + 50.0, v.value))
    result = coherence(v, baseline_of(v))
    late = hit & (v.time_ms >= start + SUSTAINED_MS)
    assert result.alarm[late].all() and not result.alarm[~late].any()
    assert (result.rule[late] == CoherenceRule.TACHYCARDIA_WITHOUT_RESPONSE).all()
