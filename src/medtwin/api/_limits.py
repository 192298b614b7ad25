"""Rate limits on packet ingestion: a flooding device or a rogue sender is answered 429 before
its packets reach the gate, so the site keeps serving everyone else.

Every packet spends a token from one bucket (`medtwin.guard.token_bucket`):
- a registered device's packet from an address that has delivered an authentic packet of it
  (`RateLimiter.vouch`), from the bucket of (device id, address), with the device budget
  (`DEVICE_RATE_PER_S`, bursts of `DEVICE_BURST`);
- anything else (an unregistered or invented id, a registered id from an address not yet
  vouched for, a body that does not parse), from the bucket of the address, with the
  unregistered budget: inventing ids, or claiming a real one, gains nothing.
A throttled packet takes no token, writes nothing to the log and is only counted.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
from fastapi import Request
from fastapi.responses import JSONResponse

from medtwin.errors import ConfigError
from medtwin.estimation import NO_TIME
from medtwin.guard import (
    BURST,
    RATE_PER_S,
    UNREGISTERED_BURST,
    UNREGISTERED_RATE_PER_S,
    BucketState,
    bucket_state,
    grow_bucket_state,
    token_bucket,
)

#: A registered device's budget at the API: twice the guard's (`RATE_PER_S`, `BURST`), so the
#: guard sees the start of a flood (its own bucket runs dry first: a device-behaviour finding
#: that quarantines the device) while the API stops the bulk before it costs anything.
DEVICE_RATE_PER_S = 2 * RATE_PER_S
DEVICE_BURST = 2 * BURST
#: Most senders tracked at once (about 300 bytes each, 30 MB at the cap): bounds memory under
#: a flood from many addresses. Idle senders (bucket full again) are forgotten first, losing
#: nothing; past the cap the least recently seen is forgotten and starts with a full bucket.
MAX_TRACKED_SENDERS = 100_000
#: Seconds between re-reads of the registered devices when an unknown id arrives: a flood of
#: invented ids costs one read of the registry per second, not one per packet.
REGISTRY_REFRESH_S = 1.0

#: Bucket key: (registered device id, address), or (None, address) for unregistered senders.
_Key = tuple[str | None, str]


class Throttled(NamedTuple):
    """A packet refused for its rate: whose bucket (`sender`, as in `RateLimiter.throttled`),
    whether it was a registered device's, and whole seconds until the bucket holds a token."""

    sender: str
    registered: bool
    retry_after_s: int
    rate_per_s: float
    burst: float


class RegisteredDevices:
    """Which device ids are registered: a cached set, re-read from `device_ids` (a call that
    may block) at most once per `refresh_s` seconds of `monotonic` time."""

    def __init__(self, device_ids: Callable[[], Iterable[str]],
                 refresh_s: float = REGISTRY_REFRESH_S,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.device_ids = device_ids
        self.refresh_s = refresh_s
        self.monotonic = monotonic
        self._ids: frozenset[str] = frozenset()
        self._read_at = -math.inf
        self._lock = threading.Lock()

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._ids

    def stale(self) -> bool:
        """Whether a re-read is allowed now."""
        return self.monotonic() - self._read_at >= self.refresh_s

    def refresh(self) -> None:
        """Re-read the registered ids, unless another caller did so within `refresh_s`."""
        with self._lock:
            if not self.stale():
                return
            self._read_at = self.monotonic()
        ids = frozenset(self.device_ids())
        self._ids = ids


def claimed_device(envelope: Any) -> str | None:
    """The device id a decoded, untrusted envelope claims, if it has one."""
    packet = envelope.get("packet") if isinstance(envelope, dict) else None
    device_id = packet.get("device_id") if isinstance(packet, dict) else None
    return device_id if isinstance(device_id, str) else None


def address_of(request: Request) -> str:
    """The sender's address as the server sees it (behind a proxy, run uvicorn with
    `--proxy-headers` so this is the client's, not the proxy's)."""
    return request.client.host if request.client is not None else "unknown"


class RateLimiter:
    """Token buckets per sender over the site clock (`clock`, epoch ms; never run backwards),
    thread-safe, holding at most about `max_senders` buckets."""

    def __init__(self, clock: Callable[[], int], registry: RegisteredDevices, *,
                 device_rate_per_s: float = DEVICE_RATE_PER_S, device_burst: float = DEVICE_BURST,
                 unregistered_rate_per_s: float = UNREGISTERED_RATE_PER_S,
                 unregistered_burst: float = UNREGISTERED_BURST,
                 max_senders: int = MAX_TRACKED_SENDERS) -> None:
        budget = (device_rate_per_s, device_burst, unregistered_rate_per_s, unregistered_burst)
        if not (all(math.isfinite(x) for x in budget) and device_rate_per_s > 0
                and unregistered_rate_per_s > 0 and device_burst >= 1
                and unregistered_burst >= 1):
            raise ConfigError("api: rate limits need a rate above 0 packets/s and a burst of at "
                              "least 1 packet; fix the device rate-limit settings")
        if max_senders < 1:
            raise ConfigError("api: the rate limiter must track at least 1 sender")
        self.clock = clock
        self.registry = registry
        self.device_rate_per_s = float(device_rate_per_s)
        self.device_burst = float(device_burst)
        self.unregistered_rate_per_s = float(unregistered_rate_per_s)
        self.unregistered_burst = float(unregistered_burst)
        self.max_senders = max_senders
        self._lock = threading.Lock()
        self._slots: OrderedDict[_Key, int] = OrderedDict()
        self._free: list[int] = []
        self._state = bucket_state(0)
        self._rate = np.zeros(0)
        self._burst = np.zeros(0)
        self._now_ms = NO_TIME
        self._throttled: OrderedDict[str, int] = OrderedDict()
        self._vouched: OrderedDict[tuple[str, str], None] = OrderedDict()

    def vouch(self, device_id: str, address: str) -> None:
        """Note that `address` delivered an authentic packet of `device_id`: from now on its
        packets claiming that device spend the device's budget. Until then they spend the
        unregistered budget of the address, so a forger who knows a device's id gains
        nothing by claiming it."""
        with self._lock:
            self._vouched[(device_id, address)] = None
            self._vouched.move_to_end((device_id, address))
            if len(self._vouched) > self.max_senders:
                self._vouched.popitem(last=False)

    async def admit(self, envelope: Any, address: str) -> Throttled | None:
        """The limit on one request's packet: None if it may go on to the gate. An id the
        cached registry does not know triggers a re-read (off the event loop) when allowed."""
        claimed = claimed_device(envelope)
        if claimed is not None and claimed not in self.registry and self.registry.stale():
            await asyncio.to_thread(self.registry.refresh)
        return self.take([claimed], address)[0]

    def take(self, device_ids: Sequence[str | None], address: str) -> list[Throttled | None]:
        """Spend a token per packet claiming `device_ids` (None: no readable id) from
        `address`, in order; None for each allowed packet, `Throttled` for each refused."""
        with self._lock:
            registered = [d is not None and d in self.registry
                          and (d, address) in self._vouched for d in device_ids]
            keys: list[_Key] = [(d if r else None, address)
                                for d, r in zip(device_ids, registered, strict=True)]
            now = self._now_ms = max(self._now_ms, int(self.clock()))
            pinned = set(keys)
            slots = np.array([self._slot(k, r, now, pinned)
                              for k, r in zip(keys, registered, strict=True)], np.intp)
            used, key_index = np.unique(slots, return_inverse=True)
            result = token_bucket(
                BucketState(self._state.tokens[used], self._state.time_ms[used]),
                key_index.astype(np.intp), np.full(slots.size, now, np.int64),
                self._rate[used], self._burst[used])
            self._state.tokens[used] = result.state.tokens
            self._state.time_ms[used] = result.state.time_ms
            out: list[Throttled | None] = [None] * len(keys)
            for i in np.flatnonzero(~result.allowed).tolist():
                out[i] = self._refusal(keys[i], int(slots[i]), float(result.tokens[i]))
            return out

    def throttled(self) -> dict[str, int]:
        """Throttled packets per sender ("device:<id>" or "unregistered:<address>") since
        start, for the most recently throttled `max_senders` senders."""
        with self._lock:
            return dict(self._throttled)

    def tracked(self) -> int:
        """How many senders hold a bucket now."""
        with self._lock:
            return len(self._slots)

    def _refusal(self, key: _Key, slot: int, tokens: float) -> Throttled:
        device_id, address = key
        sender = f"device:{device_id}" if device_id is not None else f"unregistered:{address}"
        self._throttled[sender] = self._throttled.pop(sender, 0) + 1
        if len(self._throttled) > self.max_senders:
            self._throttled.popitem(last=False)
        rate = float(self._rate[slot])
        wait = max(1, math.ceil((1.0 - tokens) / rate))
        return Throttled(sender, device_id is not None, wait, rate, float(self._burst[slot]))

    def _slot(self, key: _Key, registered: bool, now: int, pinned: set[_Key]) -> int:
        """The bucket index of `key`, made most recent; a new key gets a full bucket, after
        forgetting idle senders and, at the cap, the least recently seen (never a `pinned`
        key: those of the current request)."""
        slot = self._slots.get(key)
        if slot is not None:
            self._slots.move_to_end(key)
            return slot
        while self._slots:
            oldest, old_slot = next(iter(self._slots.items()))
            if oldest in pinned or not (self._idle(old_slot, now)
                                        or len(self._slots) >= self.max_senders):
                break
            del self._slots[oldest]
            self._free.append(old_slot)
        if not self._free:
            used = self._state.tokens.shape[0]
            self._grow(max(used + 1, min(max(16, 2 * used), self.max_senders)))
        slot = self._free.pop()
        self._state.tokens[slot], self._state.time_ms[slot] = 0.0, NO_TIME
        self._rate[slot] = self.device_rate_per_s if registered else self.unregistered_rate_per_s
        self._burst[slot] = self.device_burst if registered else self.unregistered_burst
        self._slots[key] = slot
        return slot

    def _grow(self, capacity: int) -> None:
        """Room for `capacity` buckets; slots past the ones in use go on the free list."""
        used = self._state.tokens.shape[0]
        self._state = grow_bucket_state(self._state, capacity)
        self._rate = np.concatenate([self._rate, np.zeros(capacity - used)])
        self._burst = np.concatenate([self._burst, np.ones(capacity - used)])
        self._free.extend(range(capacity - 1, used - 1, -1))

    def _idle(self, slot: int, now: int) -> bool:
        """Whether a bucket is full again (or never used): forgetting it loses nothing."""
        when = int(self._state.time_ms[slot])
        if when == NO_TIME:
            return True
        refilled = self._state.tokens[slot] + self._rate[slot] * (now - when) / 1000.0
        return bool(refilled >= self._burst[slot])


def throttled_response(refusal: Throttled) -> JSONResponse:
    """429 with `Retry-After` and what to do; nothing was stored or logged."""
    if refusal.registered:
        detail = (f"api: rate-limited: {refusal.sender.removeprefix('device:')!r} sent more "
                  f"than {refusal.rate_per_s:g} packets/s (bursts of {refusal.burst:g}); "
                  f"nothing was stored. Retry after {refusal.retry_after_s} s and send "
                  "buffered readings together in fewer packets")
    else:
        detail = (f"api: rate-limited: too many packets from this address for unregistered "
                  f"devices or unreadable bodies (more than {refusal.rate_per_s:g}/s); nothing "
                  "was stored. Register the device (`medtwin keys add-device`), then retry "
                  f"after {refusal.retry_after_s} s")
    return JSONResponse({"status": "throttled", "reason": "rate-limited", "detail": detail,
                         "retry_after_s": refusal.retry_after_s},
                        status_code=429, headers={"Retry-After": str(refusal.retry_after_s)})
