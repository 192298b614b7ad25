"""Fan-out of twin updates and alerts to live subscribers (API streams), safe across threads."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

#: Twin updates buffered per subscriber; one that falls further behind misses twin updates
#: (the next one supersedes them) but never an alert.
SUBSCRIBER_BUFFER = 1024


class EventHub:
    """Publishes events from the pipeline's thread to asyncio queues of subscribers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[dict[str, Any]]]]
        self._subscribers = []

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        """A queue receiving every event from now on; call from the subscriber's event loop."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        with self._lock:
            self._subscribers.append((asyncio.get_running_loop(), queue))
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        with self._lock:
            self._subscribers = [(lp, q) for lp, q in self._subscribers if q is not queue]

    @property
    def has_subscribers(self) -> bool:
        with self._lock:
            return bool(self._subscribers)

    def publish(self, events: list[dict[str, Any]]) -> None:
        """Deliver events to every subscriber without blocking the caller."""
        if not events:
            return
        with self._lock:
            subscribers = list(self._subscribers)
        for loop, queue in subscribers:
            try:
                loop.call_soon_threadsafe(_offer, queue, events)
            except RuntimeError:
                self.unsubscribe(queue)


def _offer(queue: asyncio.Queue[dict[str, Any]], events: list[dict[str, Any]]) -> None:
    for event in events:
        if event["type"] == "alert" or queue.qsize() < SUBSCRIBER_BUFFER:
            queue.put_nowait(event)
