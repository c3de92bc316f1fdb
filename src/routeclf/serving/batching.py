"""Micro-batching with admission control: concurrent requests are scored together (what makes a CPU
fast), the queue is bounded in model inputs, every request has a deadline, and one text that breaks
the model fails alone."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("routeclf.serve")


class Overloaded(Exception):
    """The queue holds as much work as the service will take: come back later (429)."""


class DeadlineExceeded(Exception):
    """The request was not scored within its deadline (503)."""


class ScoringFailed(Exception):
    """The model raised on this text; other texts of its batch were scored without it."""


@dataclass
class Pending:
    text: str
    cost: int  # model inputs (windows) the text takes
    future: asyncio.Future


class MicroBatcher:
    """Collects texts for up to `max_wait_ms` (or `max_batch_size` model inputs) and scores them at once.

    `score` takes a list of texts and returns one result per text; it runs in a worker thread so the
    event loop keeps accepting requests meanwhile. At most `max_queue` model inputs wait; past that
    `submit` raises `Overloaded` at once. Texts whose request has gone (deadline passed, client
    disconnected) are dropped before scoring.
    """

    def __init__(self, score: Callable[[list[str]], list[Any]], max_batch_size: int = 32, max_wait_ms: float = 2.0,
                 max_queue: int = 1024, on_batch: Callable[[int], None] | None = None) -> None:
        self.score = score
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.on_batch = on_batch
        self.pending: deque[Pending] = deque()
        self.depth = 0  # model inputs waiting
        self.wakeup: asyncio.Event | None = None
        self.worker: asyncio.Task | None = None

    def start(self) -> None:
        self.wakeup = asyncio.Event()
        self.worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            await asyncio.gather(self.worker, return_exceptions=True)

    async def submit(self, texts: list[str], costs: list[int], timeout_s: float) -> list[Any]:
        """Scores `texts` (each taking `costs[i]` model inputs), or raises `Overloaded` at once,
        `DeadlineExceeded` after `timeout_s`, or `ScoringFailed` for a text the model cannot read."""
        assert self.wakeup is not None, "batcher not started"
        if self.depth + sum(costs) > self.max_queue:
            raise Overloaded(f"{self.depth} model inputs are queued; the limit is {self.max_queue}")
        loop = asyncio.get_running_loop()
        items = [Pending(text, cost, loop.create_future()) for text, cost in zip(texts, costs)]
        self.pending.extend(items)
        self.depth += sum(costs)
        self.wakeup.set()
        try:
            async with asyncio.timeout(timeout_s):
                return list(await asyncio.gather(*(item.future for item in items)))
        except TimeoutError:
            raise DeadlineExceeded(f"not scored within {timeout_s:g} s") from None
        finally:  # a request that is gone (deadline, disconnect, error) leaves nothing to score
            for item in items:
                item.future.cancel()

    def _take(self) -> list[Pending]:
        """The next batch: waiting texts in order, up to `max_batch_size` model inputs (at least one
        text), skipping those whose request has gone."""
        batch: list[Pending] = []
        size = 0
        while self.pending:
            item = self.pending[0]
            if item.future.done():
                self.pending.popleft()
                self.depth -= item.cost
                continue
            if batch and size + item.cost > self.max_batch_size:
                break
            self.pending.popleft()
            self.depth -= item.cost
            batch.append(item)
            size += item.cost
        return batch

    async def _run(self) -> None:
        assert self.wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self.pending:
                self.wakeup.clear()
                await self.wakeup.wait()
            if self.max_wait > 0:  # let concurrent requests join the batch
                deadline = loop.time() + self.max_wait
                while self.depth < self.max_batch_size and loop.time() < deadline:
                    self.wakeup.clear()
                    try:
                        await asyncio.wait_for(self.wakeup.wait(), deadline - loop.time())
                    except TimeoutError:
                        break
            batch = self._take()
            if not batch:
                continue
            if self.on_batch is not None:
                self.on_batch(sum(item.cost for item in batch))
            await self._score_batch(batch)

    async def _score_batch(self, batch: list[Pending]) -> None:
        try:
            results = await asyncio.to_thread(self.score, [item.text for item in batch])
        except Exception as exc:  # one text must not fail the others: score them one by one
            if len(batch) == 1:
                log.exception("scoring failed on one text")
                self._settle(batch[0], error=ScoringFailed(f"{type(exc).__name__}: {exc}"))
                return
            for item in batch:
                if not item.future.done():
                    await self._score_batch([item])
            return
        for item, result in zip(batch, results):
            self._settle(item, result)

    @staticmethod
    def _settle(item: Pending, result: Any = None, error: Exception | None = None) -> None:
        if item.future.done():  # its request has gone meanwhile
            return
        if error is not None:
            item.future.set_exception(error)
        else:
            item.future.set_result(result)
