"""Attacks and faults to make attacked streams for tests, validation and the demo.

Data attacks are pure functions of one channel's stream: `time_ms` (n,) epoch ms, sorted, and
`value` (n,) in the channel's unit. Each returns an `AttackedStream`: the attacked arrays and
`affected`, a boolean mask over the *input* readings (the ground truth a detector is scored
against). A window is `[start_ms, start_ms + duration_ms)`, or from `start_ms` to the end of
the stream when `duration_ms` is None; it must hold at least one reading.

Device attacks yield signed packet envelopes (one reading per packet) like a `VirtualDevice`:
a flood from a registered device, a rogue device nobody registered, and a registered device's
stolen key signing false readings. `Attack` describes any of them and `apply_attack` runs it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from medtwin.crypto import sign_packet
from medtwin.domain import Channel, Reading, packet_wire
from medtwin.sim._devices import DeviceRegistration, VirtualDevice

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
Envelope = dict[str, Any]

DATA_ATTACK_KINDS: tuple[str, ...] = (
    "bias", "ramp", "freeze", "replay", "noise", "dropout", "spike", "time-shift")
DEVICE_ATTACK_KINDS: tuple[str, ...] = ("flood", "rogue-device", "compromised-key")
ATTACK_KINDS: tuple[str, ...] = DATA_ATTACK_KINDS + DEVICE_ATTACK_KINDS
#: Device id a rogue device claims unless told otherwise (no ward registers it).
ROGUE_DEVICE_ID = "rogue-0001"
_MINUTE_MS = 60_000


class AttackedStream(NamedTuple):
    """A stream after an attack, and which input readings the attack touched."""

    time_ms: IntArray
    """Times of the readings after the attack, epoch ms, shape (n_out,)."""
    value: FloatArray
    """Values after the attack, shape (n_out,); n_out < n only for dropout."""
    affected: BoolArray
    """Mask over the n input readings: True where the attack changed or removed the reading."""


@dataclass(frozen=True, slots=True)
class Attack:
    """One attack on one channel: what `apply_attack` runs.

    `size` by kind: bias offset (channel unit); ramp rate (unit per minute); noise sigma (unit);
    spike height (unit); time-shift shift (ms); replay lag (ms back to the replayed segment,
    0 for the segment just before the window); flood rate (packets per second); rogue-device
    and compromised-key offset added to the true readings they fake. freeze and dropout
    ignore it.
    """

    kind: str
    """One of `ATTACK_KINDS`."""
    channel: Channel
    start_ms: int
    """Start of the attack, epoch ms."""
    duration_ms: int | None = None
    """Length of the attack window, ms; None: to the end of the stream (spike: one reading)."""
    size: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ATTACK_KINDS:
            raise ValueError(f"sim: unknown attack kind {self.kind!r}; pass one of "
                             f"{', '.join(ATTACK_KINDS)}")


class AttackResult(NamedTuple):
    """What `apply_attack` made: the stream, the affected mask and any attacker packets.

    For data attacks `envelopes` is empty and `attacker` None. For device attacks the stream is
    returned unchanged (nothing in it is affected) and every envelope is attack traffic, signed
    by the key registered (or, for a rogue device, not registered) as `attacker`.
    """

    time_ms: IntArray
    value: FloatArray
    affected: BoolArray
    envelopes: tuple[Envelope, ...] = ()
    attacker: DeviceRegistration | None = None


# -- validation ------------------------------------------------------------------------------

def _stream(kind: str, time_ms: npt.ArrayLike, value: npt.ArrayLike) -> tuple[IntArray,
                                                                               FloatArray]:
    """Copies of the stream as int64 / float64 arrays, or a ValueError saying what to pass."""
    times = np.array(time_ms, dtype=np.int64, copy=True)
    values = np.array(value, dtype=np.float64, copy=True)
    if times.ndim != 1 or values.shape != times.shape:
        raise ValueError(f"sim: {kind}: pass time_ms and value as 1-D arrays of equal length")
    if np.any(np.diff(times) < 0):
        raise ValueError(f"sim: {kind}: pass time_ms sorted in increasing order")
    return times, values


def _finite(kind: str, name: str, number: float, *, positive: bool = False) -> None:
    if not np.isfinite(number) or (positive and number <= 0):
        what = "a positive finite number" if positive else "a finite number"
        raise ValueError(f"sim: {kind}: {name} must be {what}, got {number!r}")


def _window(kind: str, times: IntArray, start_ms: int, duration_ms: int | None) -> BoolArray:
    """Mask of the readings in `[start_ms, start_ms + duration_ms)` (to the end if None)."""
    if duration_ms is not None and duration_ms <= 0:
        raise ValueError(f"sim: {kind}: duration_ms must be positive (ms), or None for to the "
                         f"end of the stream; got {duration_ms!r}")
    mask = times >= start_ms
    if duration_ms is not None:
        mask &= times < start_ms + duration_ms
    if not mask.any():
        raise ValueError(f"sim: {kind}: the window from start_ms={start_ms} holds no reading; "
                         "pass a start_ms (and duration_ms) inside the stream")
    return mask


# -- data attacks ----------------------------------------------------------------------------

def bias_attack(time_ms: npt.ArrayLike, value: npt.ArrayLike, *, start_ms: int, offset: float,
                duration_ms: int | None = None) -> AttackedStream:
    """A constant `offset` added to every reading in the window (a miscalibrated sensor)."""
    times, values = _stream("bias", time_ms, value)
    _finite("bias", "offset", offset)
    mask = _window("bias", times, start_ms, duration_ms)
    values[mask] += offset
    return AttackedStream(times, values, mask)


def ramp_attack(time_ms: npt.ArrayLike, value: npt.ArrayLike, *, start_ms: int,
                rate_per_min: float, duration_ms: int | None = None) -> AttackedStream:
    """A drift growing by `rate_per_min` (unit per minute) from `start_ms` over the window:
    a reading at time t gains rate_per_min * (t - start_ms) / 60000."""
    times, values = _stream("ramp", time_ms, value)
    _finite("ramp", "rate_per_min", rate_per_min)
    mask = _window("ramp", times, start_ms, duration_ms)
    values[mask] += rate_per_min * (times[mask] - start_ms) / _MINUTE_MS
    return AttackedStream(times, values, mask)


def freeze_attack(time_ms: npt.ArrayLike, value: npt.ArrayLike, *, start_ms: int,
                  duration_ms: int | None = None) -> AttackedStream:
    """Every reading in the window holds the value of the last reading before it (a stuck
    sensor)."""
    times, values = _stream("freeze", time_ms, value)
    mask = _window("freeze", times, start_ms, duration_ms)
    first = int(np.argmax(mask))
    if first == 0:
        raise ValueError("sim: freeze: pass a start_ms after the first reading (the frozen "
                         "value is the last reading before the window)")
    values[mask] = values[first - 1]
    return AttackedStream(times, values, mask)


def replay_attack(time_ms: npt.ArrayLike, value: npt.ArrayLike, *, start_ms: int,
                  duration_ms: int | None = None,
                  source_start_ms: int | None = None) -> AttackedStream:
    """The window's values replaced by the values of an equally long earlier segment of the
    same stream, starting at the first reading at or after `source_start_ms` (None: the
    segment just before the window); times are kept, so the replay looks current."""
    times, values = _stream("replay", time_ms, value)
    mask = _window("replay", times, start_ms, duration_ms)
    target = np.flatnonzero(mask)
    first, count = int(target[0]), int(target.size)
    source = first - count if source_start_ms is None else int(
        np.searchsorted(times, source_start_ms, side="left"))
    if source < 0 or source + count > first:
        raise ValueError(f"sim: replay: the {count} replayed readings must come from before "
                         "the window; pass an earlier source_start_ms or a shorter duration_ms")
    values[target] = values[source:source + count]
    return AttackedStream(times, values, mask)


def noise_attack(time_ms: npt.ArrayLike, value: npt.ArrayLike, *, start_ms: int, sigma: float,
                 rng: np.random.Generator, duration_ms: int | None = None) -> AttackedStream:
    """Gaussian noise of standard deviation `sigma` added to the readings in the window."""
    times, values = _stream("noise", time_ms, value)
    _finite("noise", "sigma", sigma, positive=True)
    if not isinstance(rng, np.random.Generator):
        raise ValueError("sim: noise: pass rng=np.random.default_rng(seed)")
    mask = _window("noise", times, start_ms, duration_ms)
    values[mask] += rng.normal(0.0, sigma, int(mask.sum()))
    return AttackedStream(times, values, mask)


def dropout_attack(time_ms: npt.ArrayLike, value: npt.ArrayLike, *, start_ms: int,
                   duration_ms: int | None = None) -> AttackedStream:
    """The readings in the window removed (a jammed or unplugged sensor); `affected` marks the
    removed ones, and the returned arrays are shorter by their number."""
    times, values = _stream("dropout", time_ms, value)
    mask = _window("dropout", times, start_ms, duration_ms)
    return AttackedStream(times[~mask], values[~mask], mask)


def spike_attack(time_ms: npt.ArrayLike, value: npt.ArrayLike, *, start_ms: int, size: float,
                 duration_ms: int | None = None) -> AttackedStream:
    """`size` added to the first reading at or after `start_ms` (duration_ms None), or to every
    reading of a short window (a transient artefact)."""
    times, values = _stream("spike", time_ms, value)
    _finite("spike", "size", size)
    mask = _window("spike", times, start_ms, duration_ms)
    if duration_ms is None:
        only = int(np.argmax(mask))
        mask = np.zeros_like(mask)
        mask[only] = True
    values[mask] += size
    return AttackedStream(times, values, mask)


def time_shift_attack(time_ms: npt.ArrayLike, value: npt.ArrayLike, *, start_ms: int,
                      shift_ms: int, duration_ms: int | None = None) -> AttackedStream:
    """The times of the readings in the window moved by `shift_ms` (values kept); the result
    is left in stream order, so it may no longer be sorted by time."""
    times, values = _stream("time-shift", time_ms, value)
    if int(shift_ms) != shift_ms or shift_ms == 0:
        raise ValueError(f"sim: time-shift: shift_ms must be a non-zero whole number of ms, "
                         f"got {shift_ms!r}")
    mask = _window("time-shift", times, start_ms, duration_ms)
    times[mask] += int(shift_ms)
    return AttackedStream(times, values, mask)


# -- device attacks --------------------------------------------------------------------------

def flood_envelopes(device: VirtualDevice, channel: Channel, value: float, *, start_ms: int,
                    duration_ms: int, rate_per_s: float) -> Iterator[Envelope]:
    """`rate_per_s` packets per second for `duration_ms` from a registered `device` (faulty or
    hijacked): valid signatures, its own increasing `seq`, one reading of `value` each, sent
    (and timed) evenly from `start_ms`. Advances the device's counter."""
    _finite("flood", "rate_per_s", rate_per_s, positive=True)
    _finite("flood", "value", value)
    if duration_ms <= 0:
        raise ValueError(f"sim: flood: duration_ms must be positive (ms), got {duration_ms!r}")
    count = round(rate_per_s * duration_ms / 1000)
    if count < 1:
        raise ValueError("sim: flood: rate_per_s * duration_ms must allow at least one packet")
    sent = start_ms + np.arange(count) * duration_ms // count

    def packets() -> Iterator[Envelope]:
        for t in sent.tolist():
            yield device.packet([Reading(channel, value, t)], t)

    return packets()


def rogue_device(patient_id: str, *, device_id: str = ROGUE_DEVICE_ID,
                 suite: str = "ed25519") -> VirtualDevice:
    """A device claiming to measure `patient_id`, with its own fresh key and an id no site
    registered."""
    return VirtualDevice(device_id, patient_id, suite)


def _readings(kind: str, channel: Channel, time_ms: npt.ArrayLike,
              value: npt.ArrayLike) -> list[Reading]:
    times, values = _stream(kind, time_ms, value)
    return [Reading(channel, v, t) for t, v in zip(times.tolist(), values.tolist(), strict=True)]


def rogue_envelopes(rogue: VirtualDevice, channel: Channel, time_ms: npt.ArrayLike,
                    value: npt.ArrayLike) -> Iterator[Envelope]:
    """The packets of a `rogue_device`, one reading each, sent at its time: each verifies under
    the rogue's own key, but no site knows its id."""
    readings = _readings("rogue-device", channel, time_ms, value)

    def packets() -> Iterator[Envelope]:
        for reading in readings:
            yield rogue.packet([reading], reading.time_ms)

    return packets()


def compromised_key_envelopes(device: VirtualDevice, channel: Channel, time_ms: npt.ArrayLike,
                              value: npt.ArrayLike, *,
                              first_seq: int | None = None) -> Iterator[Envelope]:
    """Packets of attacker-chosen readings signed with `device`'s stolen key: authentic
    signatures, false data. The attacker counts `seq` from `first_seq` (None: the device's next
    one); the device's own counter is untouched, so its next genuine packets repeat those seqs."""
    readings = _readings("compromised-key", channel, time_ms, value)
    seq = device.seq if first_seq is None else first_seq
    if seq < 0:
        raise ValueError(f"sim: compromised-key: first_seq must be >= 0, got {first_seq!r}")
    stolen_key = device._private_key  # what the attacker extracted from the device

    def packets() -> Iterator[Envelope]:
        for i, reading in enumerate(readings):
            wire = packet_wire(device.device_id, seq + i, reading.time_ms, [reading])
            yield sign_packet(wire, stolen_key, device.suite)

    return packets()


# -- dispatcher ------------------------------------------------------------------------------

def apply_attack(attack: Attack, time_ms: npt.ArrayLike, value: npt.ArrayLike, *,
                 rng: np.random.Generator | None = None,
                 device: VirtualDevice | None = None) -> AttackResult:
    """Run `attack` on one channel's stream (`time_ms`, `value`, shape (n,)).

    `rng` is needed for noise; `device` (the registered device behind the stream) for the
    device attacks. See `Attack` for what `size` means for each kind.
    """
    kind, start, duration, size = attack.kind, attack.start_ms, attack.duration_ms, attack.size
    if kind in DATA_ATTACK_KINDS:
        match kind:
            case "bias":
                out = bias_attack(time_ms, value, start_ms=start, offset=size,
                                  duration_ms=duration)
            case "ramp":
                out = ramp_attack(time_ms, value, start_ms=start, rate_per_min=size,
                                  duration_ms=duration)
            case "freeze":
                out = freeze_attack(time_ms, value, start_ms=start, duration_ms=duration)
            case "replay":
                source = None if size == 0 else start - int(size)
                out = replay_attack(time_ms, value, start_ms=start, duration_ms=duration,
                                    source_start_ms=source)
            case "noise":
                if rng is None:
                    raise ValueError("sim: noise: pass rng=np.random.default_rng(seed)")
                out = noise_attack(time_ms, value, start_ms=start, sigma=size, rng=rng,
                                   duration_ms=duration)
            case "dropout":
                out = dropout_attack(time_ms, value, start_ms=start, duration_ms=duration)
            case "spike":
                out = spike_attack(time_ms, value, start_ms=start, size=size,
                                   duration_ms=duration)
            case _:
                out = time_shift_attack(time_ms, value, start_ms=start, shift_ms=int(size),
                                        duration_ms=duration)
        return AttackResult(*out)

    if device is None:
        raise ValueError(f"sim: {kind}: pass device=the VirtualDevice behind the stream")
    times, values = _stream(kind, time_ms, value)
    untouched = np.zeros(times.shape, dtype=np.bool_)
    if kind == "flood":
        if duration is None:
            raise ValueError("sim: flood: duration_ms must be given (ms)")
        before = np.flatnonzero(times <= start)
        level = float(values[before[-1]] if before.size else values[0])
        envelopes = tuple(flood_envelopes(device, attack.channel, level, start_ms=start,
                                          duration_ms=duration, rate_per_s=size))
        return AttackResult(times, values, untouched, envelopes, device.registration)
    _finite(kind, "size", size)
    mask = _window(kind, times, start, duration)
    fake_times, fake_values = times[mask], values[mask] + size
    if kind == "rogue-device":
        rogue = rogue_device(device.patient_id, suite=device.suite)
        envelopes = tuple(rogue_envelopes(rogue, attack.channel, fake_times, fake_values))
        return AttackResult(times, values, untouched, envelopes, rogue.registration)
    envelopes = tuple(compromised_key_envelopes(device, attack.channel, fake_times,
                                                fake_values))
    return AttackResult(times, values, untouched, envelopes, device.registration)
