"""Attacks in the units a person chooses, and data attacks applied to rows of a whole ward.

`attack_of` builds an `Attack` from a kind and a size in everyday units (`ATTACK_DEFAULT_SIZE`
when none is given: sizes a real fault or attacker would plausibly use). `attack_rows` runs a
data attack on one stream (one patient's channel) picked out of a ward's reading rows, as
array operations, and says which rows it touched: the ground truth written beside an attacked
FHIR NDJSON file. `resigned_envelope` puts attacked readings into a device's packet, signed
with the device's own key, as a compromised device would send them (the live demo).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from medtwin.crypto import sign_packet
from medtwin.domain import Channel, Reading, packet_wire
from medtwin.sim._attacks import (
    ATTACK_KINDS,
    DATA_ATTACK_KINDS,
    Attack,
    apply_attack,
)
from medtwin.sim._devices import VirtualDevice

_MINUTE_MS = 60_000
#: Size of each attack when none is given. Units: bias, noise (sigma), spike and the offset
#: of rogue-device / compromised-key readings in the channel's unit (the values suit glucose,
#: mg/dL); ramp in the channel's unit per minute; time-shift and replay (lag back to the
#: replayed segment, 0 for the segment just before) in minutes; flood in packets per second.
#: freeze and dropout have no size.
ATTACK_DEFAULT_SIZE: dict[str, float] = {
    "bias": 40.0, "ramp": 1.5, "freeze": 0.0, "replay": 0.0, "noise": 25.0, "dropout": 0.0,
    "spike": 80.0, "time-shift": 10.0, "flood": 2.0, "rogue-device": 40.0,
    "compromised-key": 40.0,
}
#: Kinds whose size `attack_of` reads in minutes (`Attack` wants ms).
_SIZE_IN_MINUTES = frozenset({"time-shift", "replay"})

#: The data attack kinds (`DATA_ATTACK_KINDS`), named to sort with `ATTACK_KINDS`.
ATTACK_DATA_KINDS: tuple[str, ...] = DATA_ATTACK_KINDS

BoolArray = npt.NDArray[np.bool_]


class AttackedRows(NamedTuple):
    """A ward's reading rows after a data attack on one of its streams."""

    time_ms: npt.NDArray[np.int64]
    """Times of all rows, attacked ones changed (time-shift), shape (n_rows,)."""
    value: npt.NDArray[np.float64]
    """Values of all rows, attacked ones changed, shape (n_rows,)."""
    keep: BoolArray
    """Rows still present (False only for rows a dropout removed), shape (n_rows,)."""
    affected: BoolArray
    """Rows the attack changed or removed: the ground truth, shape (n_rows,)."""


def attack_of(kind: str, channel: Channel, start_ms: int, size: float | None = None,
              duration_ms: int | None = None) -> Attack:
    """The `Attack` of `kind` on `channel` from `start_ms`, `size` in the units of
    `ATTACK_DEFAULT_SIZE` (None: its default); ValueError naming the kinds for an unknown one."""
    if kind not in ATTACK_KINDS:
        raise ValueError(f"sim: unknown attack kind {kind!r}; choose one of "
                         f"{', '.join(ATTACK_KINDS)}")
    chosen = ATTACK_DEFAULT_SIZE[kind] if size is None else float(size)
    if not math.isfinite(chosen):
        raise ValueError(f"sim: {kind}: the attack size must be a finite number")
    if kind in _SIZE_IN_MINUTES:
        chosen = float(round(chosen * _MINUTE_MS))
    return Attack(kind, channel, int(start_ms), duration_ms, chosen)


def attack_rows(attack: Attack, stream: BoolArray, time_ms: npt.ArrayLike,
                value: npt.ArrayLike, rng: np.random.Generator) -> AttackedRows:
    """Run the data `attack` on the rows selected by `stream` (one patient's `attack.channel`;
    the other rows are left alone); `rng` feeds the noise attack.

    The stream is attacked in time order whatever the rows' order; ValueError (from
    `apply_attack`) when the attack does not fit the stream, e.g. a window with no reading.
    """
    if attack.kind not in DATA_ATTACK_KINDS:
        raise ValueError(f"sim: {attack.kind} is a device attack: it sends packets and changes "
                         f"no stored reading; choose one of {', '.join(DATA_ATTACK_KINDS)}")
    times = np.array(time_ms, dtype=np.int64, copy=True)
    values = np.array(value, dtype=np.float64, copy=True)
    mask = np.asarray(stream, dtype=np.bool_)
    if times.ndim != 1 or values.shape != times.shape or mask.shape != times.shape:
        raise ValueError("sim: attack_rows: pass stream, time_ms and value of equal length")
    rows = np.flatnonzero(mask)
    rows = rows[np.argsort(times[rows], kind="stable")]
    if rows.size == 0:
        raise ValueError("sim: the attacked stream has no reading; choose a patient and a "
                         "channel present in the data")
    out = apply_attack(attack, times[rows], values[rows], rng=rng)
    affected = np.zeros(times.shape, dtype=np.bool_)
    affected[rows[out.affected]] = True
    keep = np.ones(times.shape, dtype=np.bool_)
    if attack.kind == "dropout":
        keep[rows[out.affected]] = False
    else:
        times[rows] = out.time_ms
        values[rows] = out.value
    return AttackedRows(times, values, keep, affected)


def resigned_envelope(device: VirtualDevice, envelope: dict[str, Any],
                      readings: Sequence[Reading]) -> dict[str, Any]:
    """`envelope` of `device` with its readings replaced by `readings` (same seq and send
    time), signed with the device's own key: a device whose firmware lies."""
    packet = envelope["packet"]
    if packet["device_id"] != device.device_id:
        raise ValueError("sim: resigned_envelope: the envelope is not the device's")
    wire = packet_wire(device.device_id, int(packet["seq"]), int(packet["sent_at"]), readings)
    return sign_packet(wire, device._private_key, device.suite)  # the device's own firmware
