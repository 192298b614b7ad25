"""Attacks change exactly the readings they mark, by the requested amount; device attacks sign
their packets with the key their kind promises."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from medtwin.crypto import verify_signature
from medtwin.domain import Channel, packet_signing_message
from medtwin.errors import SignatureError
from medtwin.sim import (
    ATTACK_KINDS,
    Attack,
    AttackedStream,
    VirtualDevice,
    apply_attack,
    bias_attack,
    compromised_key_envelopes,
    dropout_attack,
    flood_envelopes,
    freeze_attack,
    noise_attack,
    ramp_attack,
    replay_attack,
    rogue_device,
    rogue_envelopes,
    spike_attack,
    time_shift_attack,
)

T0 = 1_709_532_000_000
MINUTE_MS = 60_000
N = 200
TIME = T0 + np.arange(N, dtype=np.int64) * MINUTE_MS
VALUE = 120.0 + 30.0 * np.sin(np.arange(N) / 15.0)
START = T0 + 50 * MINUTE_MS
DURATION = 40 * MINUTE_MS
WINDOW = (TIME >= START) & (TIME < START + DURATION)


def verify(envelope: dict[str, Any], public_key: bytes) -> None:
    verify_signature(envelope["suite"], public_key, packet_signing_message(envelope["packet"]),
                     base64.b64decode(envelope["signature"]))


def _check_rest_untouched(out: AttackedStream) -> None:
    assert out.affected.shape == (N,) and out.affected.dtype == np.bool_
    np.testing.assert_array_equal(out.time_ms[~out.affected], TIME[~out.affected])
    np.testing.assert_array_equal(out.value[~out.affected], VALUE[~out.affected])


def test_bias_adds_the_offset_to_the_window_only() -> None:
    out = bias_attack(TIME, VALUE, start_ms=START, offset=25.0, duration_ms=DURATION)
    np.testing.assert_array_equal(out.affected, WINDOW)
    np.testing.assert_allclose(out.value[WINDOW], VALUE[WINDOW] + 25.0)
    _check_rest_untouched(out)
    to_end = bias_attack(TIME, VALUE, start_ms=START, offset=-10.0)
    np.testing.assert_array_equal(to_end.affected, TIME >= START)


def test_ramp_grows_linearly_from_the_start() -> None:
    out = ramp_attack(TIME, VALUE, start_ms=START, rate_per_min=0.5, duration_ms=DURATION)
    np.testing.assert_array_equal(out.affected, WINDOW)
    minutes = np.arange(WINDOW.sum())
    np.testing.assert_allclose(out.value[WINDOW] - VALUE[WINDOW], 0.5 * minutes)
    _check_rest_untouched(out)


def test_freeze_holds_the_last_value_before_the_window() -> None:
    out = freeze_attack(TIME, VALUE, start_ms=START, duration_ms=DURATION)
    np.testing.assert_array_equal(out.affected, WINDOW)
    assert np.all(out.value[WINDOW] == VALUE[49])
    _check_rest_untouched(out)


def test_replay_copies_the_earlier_segment() -> None:
    out = replay_attack(TIME, VALUE, start_ms=START, duration_ms=DURATION)
    np.testing.assert_array_equal(out.value[WINDOW], VALUE[10:50])  # the 40 readings before
    np.testing.assert_array_equal(out.time_ms, TIME)  # times kept: the replay looks current
    _check_rest_untouched(out)
    chosen = replay_attack(TIME, VALUE, start_ms=START, duration_ms=DURATION,
                           source_start_ms=T0 + 3 * MINUTE_MS)
    np.testing.assert_array_equal(chosen.value[WINDOW], VALUE[3:43])


def test_noise_has_the_requested_sigma_and_is_seeded() -> None:
    out = noise_attack(TIME, VALUE, start_ms=T0, sigma=4.0, rng=np.random.default_rng(7))
    assert out.affected.all()
    assert np.std(out.value - VALUE) == pytest.approx(4.0, rel=0.15)
    again = noise_attack(TIME, VALUE, start_ms=T0, sigma=4.0, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(out.value, again.value)
    windowed = noise_attack(TIME, VALUE, start_ms=START, sigma=4.0, duration_ms=DURATION,
                            rng=np.random.default_rng(7))
    np.testing.assert_array_equal(windowed.affected, WINDOW)
    _check_rest_untouched(windowed)


def test_dropout_removes_only_the_window() -> None:
    out = dropout_attack(TIME, VALUE, start_ms=START, duration_ms=DURATION)
    np.testing.assert_array_equal(out.affected, WINDOW)
    np.testing.assert_array_equal(out.time_ms, TIME[~WINDOW])
    np.testing.assert_array_equal(out.value, VALUE[~WINDOW])
    assert len(out.value) == N - 40


def test_spike_hits_one_reading_or_a_short_window() -> None:
    out = spike_attack(TIME, VALUE, start_ms=START - 1, size=80.0)
    assert np.flatnonzero(out.affected).tolist() == [50]
    assert out.value[50] == VALUE[50] + 80.0
    _check_rest_untouched(out)
    short = spike_attack(TIME, VALUE, start_ms=START, size=-50.0, duration_ms=3 * MINUTE_MS)
    assert np.flatnonzero(short.affected).tolist() == [50, 51, 52]


def test_time_shift_moves_only_the_window_times() -> None:
    out = time_shift_attack(TIME, VALUE, start_ms=START, shift_ms=-90_000, duration_ms=DURATION)
    np.testing.assert_array_equal(out.time_ms[WINDOW], TIME[WINDOW] - 90_000)
    np.testing.assert_array_equal(out.value, VALUE)
    _check_rest_untouched(out)


def test_inputs_are_not_modified() -> None:
    time, value = TIME.copy(), VALUE.copy()
    bias_attack(time, value, start_ms=START, offset=5.0)
    time_shift_attack(time, value, start_ms=START, shift_ms=1)
    np.testing.assert_array_equal(time, TIME)
    np.testing.assert_array_equal(value, VALUE)


@pytest.mark.parametrize(("call", "message"), [
    (lambda: bias_attack(TIME, VALUE[:-1], start_ms=START, offset=1.0),
     "sim: bias: pass time_ms and value as 1-D arrays of equal length"),
    (lambda: bias_attack(TIME[::-1], VALUE, start_ms=START, offset=1.0),
     "sim: bias: pass time_ms sorted in increasing order"),
    (lambda: bias_attack(TIME, VALUE, start_ms=START, offset=float("nan")),
     "sim: bias: offset must be a finite number"),
    (lambda: ramp_attack(TIME, VALUE, start_ms=START, rate_per_min=1.0, duration_ms=0),
     "sim: ramp: duration_ms must be positive"),
    (lambda: bias_attack(TIME, VALUE, start_ms=T0 + N * MINUTE_MS, offset=1.0),
     "sim: bias: the window from start_ms=.* holds no reading"),
    (lambda: freeze_attack(TIME, VALUE, start_ms=T0),
     "sim: freeze: pass a start_ms after the first reading"),
    (lambda: replay_attack(TIME, VALUE, start_ms=T0 + 10 * MINUTE_MS, duration_ms=DURATION),
     "sim: replay: the 40 replayed readings must come from before the window"),
    (lambda: replay_attack(TIME, VALUE, start_ms=START, duration_ms=DURATION,
                           source_start_ms=START - MINUTE_MS),
     "sim: replay: .* must come from before the window"),
    (lambda: noise_attack(TIME, VALUE, start_ms=START, sigma=0.0, rng=np.random.default_rng()),
     "sim: noise: sigma must be a positive finite number"),
    (lambda: time_shift_attack(TIME, VALUE, start_ms=START, shift_ms=0),
     "sim: time-shift: shift_ms must be a non-zero whole number"),
    (lambda: Attack("teleport", Channel.GLUCOSE, START),
     "sim: unknown attack kind 'teleport'; pass one of bias, ramp"),
    (lambda: apply_attack(Attack("noise", Channel.GLUCOSE, START, size=2.0), TIME, VALUE),
     r"sim: noise: pass rng=np.random.default_rng\(seed\)"),
    (lambda: apply_attack(Attack("flood", Channel.GLUCOSE, START, 1000, 50.0), TIME, VALUE),
     "sim: flood: pass device=the VirtualDevice behind the stream"),
])
def test_bad_arguments_are_refused_with_what_to_pass(call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_flood_has_the_requested_rate_valid_signatures_and_increasing_seq() -> None:
    device = VirtualDevice("cgm-0001", "pt-0001")
    device.packet([], T0)
    envelopes = list(flood_envelopes(device, Channel.GLUCOSE, 110.0, start_ms=START,
                                     duration_ms=2000, rate_per_s=50.0))
    assert len(envelopes) == 100
    sent = [e["packet"]["sent_at"] for e in envelopes]
    assert min(sent) >= START and max(sent) < START + 2000
    assert sum(START <= t < START + 1000 for t in sent) == 50  # 50 per second
    assert [e["packet"]["seq"] for e in envelopes] == list(range(1, 101))
    assert device.seq == 101
    for envelope in envelopes:
        verify(envelope, device.public_key)
    with pytest.raises(ValueError, match="sim: flood: rate_per_s must be a positive"):
        flood_envelopes(device, Channel.GLUCOSE, 1.0, start_ms=START, duration_ms=1000,
                        rate_per_s=-1.0)


def test_rogue_device_verifies_under_its_own_key_only_and_is_not_registered() -> None:
    registered = {VirtualDevice(f"cgm-{i:04d}", f"pt-{i:04d}").registration for i in range(3)}
    rogue = rogue_device("pt-0001")
    envelopes = list(rogue_envelopes(rogue, Channel.GLUCOSE, TIME[:5], VALUE[:5]))
    assert len(envelopes) == 5
    assert rogue.device_id not in {r.device_id for r in registered}
    for envelope in envelopes:
        verify(envelope, rogue.public_key)
        assert envelope["packet"]["device_id"] == "rogue-0001"
        for known in registered:
            with pytest.raises(SignatureError):
                verify(envelope, known.public_key)


def test_compromised_key_signs_false_readings_that_verify() -> None:
    device = VirtualDevice("cgm-0002", "pt-0002")
    device.packet([], T0)
    fake = np.full(3, 45.0)
    envelopes = list(compromised_key_envelopes(device, Channel.GLUCOSE, TIME[:3], fake))
    for envelope in envelopes:
        verify(envelope, device.public_key)  # authentic signature, false data
    assert [e["packet"]["readings"][0]["value"] for e in envelopes] == [45.0] * 3
    assert [e["packet"]["seq"] for e in envelopes] == [1, 2, 3] and device.seq == 1
    ahead = next(compromised_key_envelopes(device, Channel.GLUCOSE, TIME[:1], fake[:1],
                                           first_seq=1000))
    assert ahead["packet"]["seq"] == 1000


@pytest.mark.parametrize("kind", ATTACK_KINDS)
def test_apply_attack_runs_every_kind(kind: str) -> None:
    device = VirtualDevice("cgm-0003", "pt-0003")
    size = {"replay": 0.0, "time-shift": 30_000.0, "flood": 0.5}.get(kind, 12.0)
    attack = Attack(kind, Channel.GLUCOSE, START, 10 * MINUTE_MS, size)
    result = apply_attack(attack, TIME, VALUE, rng=np.random.default_rng(1), device=device)
    if kind in ("flood", "rogue-device", "compromised-key"):
        assert not result.affected.any() and result.envelopes
        assert result.attacker is not None
        for envelope in result.envelopes:
            verify(envelope, result.attacker.public_key)
        expected_id = "rogue-0001" if kind == "rogue-device" else "cgm-0003"
        assert result.attacker.device_id == expected_id
        n_packets = {"flood": 300, "rogue-device": 10, "compromised-key": 10}[kind]
        assert len(result.envelopes) == n_packets
    else:
        assert result.envelopes == () and result.attacker is None
        expected = WINDOW & (TIME < START + 10 * MINUTE_MS)
        np.testing.assert_array_equal(result.affected, expected)


def test_apply_attack_matches_the_direct_call() -> None:
    result = apply_attack(Attack("bias", Channel.GLUCOSE, START, DURATION, 25.0), TIME, VALUE)
    direct = bias_attack(TIME, VALUE, start_ms=START, offset=25.0, duration_ms=DURATION)
    np.testing.assert_array_equal(result.value, direct.value)
    np.testing.assert_array_equal(result.affected, direct.affected)
    faked = apply_attack(Attack("compromised-key", Channel.GLUCOSE, START, DURATION, -60.0),
                         TIME, VALUE, device=VirtualDevice("cgm-0004", "pt-0004"))
    values: npt.NDArray[np.float64] = np.array(
        [e["packet"]["readings"][0]["value"] for e in faked.envelopes])
    np.testing.assert_allclose(values, VALUE[WINDOW] - 60.0)
