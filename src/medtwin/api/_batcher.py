"""Group commit: packets arriving together share one pass through the pipeline and one fsync."""

from __future__ import annotations

import asyncio
import contextlib

from medtwin.pipeline import Outcome, Pipeline, SessionSubmission, SignedSubmission


class IngestBatcher:
    """Collects submissions from concurrent requests and processes them in batches.

    Each request waits for its own outcome, which exists only once its batch is durable.
    """

    def __init__(self, pipeline: Pipeline, max_batch: int) -> None:
        self.pipeline = pipeline
        self.max_batch = max_batch
        self._queue: asyncio.Queue[tuple[SignedSubmission | SessionSubmission,
                                         asyncio.Future[Outcome]]] | None
        self._queue = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def submit(self, submission: SignedSubmission | SessionSubmission) -> Outcome:
        """Queue one submission; returns its outcome once durable (or raises the batch's
        error)."""
        if self._queue is None:
            raise RuntimeError("api: ingest batcher is not running")
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        await self._queue.put((submission, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                outcomes = await asyncio.to_thread(self.pipeline.process,
                                                   [s for s, _ in batch])
            except Exception as exc:  # the batch failed as a whole: every waiter learns why
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if not future.done():
                    future.set_result(outcome)
