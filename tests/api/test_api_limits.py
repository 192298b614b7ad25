"""Rate limits on packet ingestion: a flooding device or a rogue sender gets 429 within its
burst, nothing of the flood is logged, and everyone else is still served."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from tests.conftest import DeviceSim, FakeClock

from medtwin.api import create_app
from medtwin.api._limits import DEVICE_BURST as BURST
from medtwin.api._limits import DEVICE_RATE_PER_S as RATE_PER_S
from medtwin.api._limits import RateLimiter, RegisteredDevices
from medtwin.errors import ConfigError
from medtwin.guard import UNREGISTERED_BURST, UNREGISTERED_RATE_PER_S
from medtwin.pipeline import Pipeline


@pytest.fixture
def client(pipeline: Pipeline) -> Iterator[TestClient]:
    with TestClient(create_app(pipeline), client=("10.0.0.1", 40000)) as test_client:
        yield test_client


def _limiter(test_client: TestClient) -> RateLimiter:
    limiter = test_client.app.state.limiter  # type: ignore[attr-defined]
    assert isinstance(limiter, RateLimiter)
    return limiter


def _logged(pipeline: Pipeline) -> tuple[int, int]:
    """Records in the log, and rejections among them."""
    return pipeline.tree_size(), pipeline.store.counts()["rejections"]


def test_a_flooding_device_is_throttled_while_another_is_served(
        client: TestClient, pipeline: Pipeline, device: DeviceSim,
        make_device: Callable[..., DeviceSim]) -> None:
    other = make_device("vit-2", "pt-1")
    pipeline.add_device(other.device)
    # its first authentic packet vouches for its address; then it has the device budget
    assert client.post("/v1/packets", json=device.envelope(device.vitals())).status_code == 200
    burst = [client.post("/v1/packets", json=device.envelope(device.vitals()))
             for _ in range(int(BURST))]
    assert [r.status_code for r in burst] == [200] * int(BURST)
    before = _logged(pipeline)
    flood = [client.post("/v1/packets", json=device.envelope(device.vitals()))
             for _ in range(5)]
    assert [r.status_code for r in flood] == [429] * 5
    assert _logged(pipeline) == before          # the flood never reached the gate or the log
    refused = flood[0]
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["reason"] == "rate-limited"
    assert refused.json()["retry_after_s"] == 1
    assert "'vit-1'" in refused.json()["detail"]
    assert "Retry after 1 s" in refused.json()["detail"]
    served = client.post("/v1/packets", json=other.envelope(other.vitals()))
    assert served.status_code == 200, served.text
    assert _limiter(client).throttled() == {"device:vit-1": 5}


def test_a_rogue_inventing_device_ids_is_throttled_by_its_address(
        client: TestClient, pipeline: Pipeline, device: DeviceSim,
        make_device: Callable[..., DeviceSim]) -> None:
    # the registered device at the same address, once vouched for, keeps a bucket of its own
    assert client.post("/v1/packets", json=device.envelope(device.vitals())).status_code == 200
    rogues = [make_device(f"rogue-{i}", "pt-1") for i in range(int(UNREGISTERED_BURST) + 5)]
    replies = [client.post("/v1/packets", json=r.envelope(r.vitals())) for r in rogues]
    n = int(UNREGISTERED_BURST)
    assert [r.status_code for r in replies] == [401] * (n - 1) + [429] * 6
    assert _logged(pipeline)[1] == n - 1           # only the burst was refused and logged
    assert "register the device" in replies[-1].json()["detail"].lower()
    garbage = client.post("/v1/packets", content=b"not json",
                          headers={"Content-Type": "application/json"})
    assert garbage.status_code == 429              # unreadable bodies share the same bucket
    assert _limiter(client).throttled() == {"unregistered:10.0.0.1": 7}
    assert client.post("/v1/packets", json=device.envelope(device.vitals())).status_code == 200


def test_each_address_has_its_own_unregistered_bucket() -> None:
    limiter = RateLimiter(FakeClock(), RegisteredDevices(lambda: []))
    n = int(UNREGISTERED_BURST)
    first = limiter.take([None, "made-up"] * n, "10.0.0.1")
    assert first[:n] == [None] * n and all(t is not None for t in first[n:])
    assert limiter.take([None] * n, "10.0.0.2") == [None] * n


def test_a_throttled_device_is_served_again_once_tokens_refill(
        client: TestClient, device: DeviceSim, clock: FakeClock) -> None:
    for _ in range(int(BURST) + 1):            # the first vouches, then a device's burst
        assert client.post("/v1/packets", json=device.envelope(device.vitals())).status_code == 200
    refused = client.post("/v1/packets", json=device.envelope(device.vitals()))
    assert refused.status_code == 429
    clock.advance(float(refused.headers["retry-after"]))
    assert client.post("/v1/packets", json=device.envelope(device.vitals())).status_code == 200


def test_tokens_refill_at_the_rate_up_to_the_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock, RegisteredDevices(lambda: ["dev-a"]))
    limiter.registry.refresh()
    limiter.vouch("dev-a", "10.0.0.1")
    n = int(BURST)
    first = limiter.take(["dev-a"] * (n + 3), "10.0.0.1")
    assert first[:n] == [None] * n
    assert all(t is not None and t.sender == "device:dev-a" for t in first[n:])
    clock.advance(1.0 / RATE_PER_S)                # exactly one token back
    assert limiter.take(["dev-a", "dev-a"], "10.0.0.1")[0] is None
    assert limiter.take(["dev-a"], "10.0.0.1")[0] is not None
    clock.advance(10 * BURST / RATE_PER_S)         # full again, never more than the burst
    again = limiter.take(["dev-a"] * (n + 1), "10.0.0.1")
    assert again[:n] == [None] * n and again[n] is not None
    assert limiter.throttled() == {"device:dev-a": 3 + 1 + 1 + 1}


def test_a_clock_that_steps_back_refills_nothing() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock, RegisteredDevices(lambda: []))
    n = int(UNREGISTERED_BURST)
    assert limiter.take([None] * n, "10.0.0.1") == [None] * n
    clock.advance(-3600)
    refused = limiter.take([None], "10.0.0.1")[0]
    assert refused is not None
    assert refused.retry_after_s == int(1 / UNREGISTERED_RATE_PER_S)


def test_the_sender_table_stays_bounded_and_keeps_active_flooders() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock, RegisteredDevices(lambda: []), max_senders=8)
    n = int(UNREGISTERED_BURST)
    limiter.take([None] * n, "10.9.9.9")           # a flooder empties its bucket
    for i in range(1000):
        limiter.take([None], f"10.0.{i // 256}.{i % 256}")
        assert limiter.take([None], "10.9.9.9")[0] is not None   # still throttled
        assert limiter.tracked() <= 8
    assert limiter.throttled()["unregistered:10.9.9.9"] == 1000
    assert len(limiter.throttled()) <= 8


def test_idle_senders_are_forgotten_first() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock, RegisteredDevices(lambda: []), max_senders=1000)
    for i in range(100):
        limiter.take([None], f"10.0.0.{i}")
    clock.advance(UNREGISTERED_BURST / UNREGISTERED_RATE_PER_S)   # all buckets full again
    limiter.take([None], "10.1.0.0")
    assert limiter.tracked() == 1


def test_a_flood_of_unknown_ids_rereads_the_registry_at_most_once_per_interval() -> None:
    now = [0.0]
    reads: list[int] = []

    def ids() -> list[str]:
        reads.append(1)
        return ["dev-a"]

    registry = RegisteredDevices(ids, refresh_s=1.0, monotonic=lambda: now[0])
    for _ in range(100):
        if registry.stale():
            registry.refresh()
    assert len(reads) == 1 and "dev-a" in registry and "dev-b" not in registry
    now[0] += 1.0
    registry.refresh()
    assert len(reads) == 2


def test_a_device_registered_after_start_gets_the_device_budget(
        client: TestClient, pipeline: Pipeline, patient_id: str,
        make_device: Callable[..., DeviceSim]) -> None:
    late = make_device("vit-9", patient_id)
    pipeline.add_device(late.device)
    replies = [client.post("/v1/packets", json=late.envelope(late.vitals()))
               for _ in range(int(UNREGISTERED_BURST) + 1)]
    assert {r.status_code for r in replies} == {200}


def test_claiming_a_registered_id_from_elsewhere_gains_nothing() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock, RegisteredDevices(lambda: ["dev-a"]))
    limiter.registry.refresh()
    limiter.vouch("dev-a", "10.0.0.1")             # the real device's address
    n = int(UNREGISTERED_BURST)
    forger = limiter.take(["dev-a"] * (n + 5), "10.6.6.6")
    assert forger[:n] == [None] * n
    assert all(t is not None and t.sender == "unregistered:10.6.6.6" for t in forger[n:])
    assert limiter.take(["dev-a"] * int(BURST), "10.0.0.1") == [None] * int(BURST)


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 10.0), (1.0, 0.5), (float("nan"), 10.0)])
def test_nonsense_limits_are_refused(rate: float, burst: float) -> None:
    with pytest.raises(ConfigError, match="rate above 0 packets/s and a burst of at least 1"):
        RateLimiter(FakeClock(), RegisteredDevices(lambda: []), device_rate_per_s=rate,
                    device_burst=burst)
