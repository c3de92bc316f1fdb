"""Micro-batching with admission control: concurrent requests are scored together (what makes a CPU
fast), the queue is bounded in model inputs, a request that could not be scored within its deadline
is refused before it queues, and one text that breaks the model fails alone."""

from __future__ import annotations

import asyncio
import logging
import time
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
    work: int  # characters the model reads: what its scoring time grows with
    future: asyncio.Future


# The learned rate averages batches of every length, but a batch is padded to its longest text, so
# a queue of long texts drains slower than the average says: work is admitted only while it is
# expected to take at most half the time the request has left (a soak without this margin had 2 in
# 7,931 requests time out with 503).
DEADLINE_SHARE = 0.5


class ScoringRate:
    """Seconds the model takes per character read, averaged over recent batches: what predicts how
    long the queue takes to drain. Unknown (None) until the first batch is scored."""

    def __init__(self, smoothing: float = 0.2) -> None:
        self.smoothing = smoothing
        self.seconds_per_char: float | None = None

    def observe(self, seconds: float, chars: int) -> None:
        rate = seconds / max(chars, 1)
        previous = self.seconds_per_char
        self.seconds_per_char = rate if previous is None else previous + self.smoothing * (rate - previous)

    def seconds(self, chars: int) -> float:
        return 0.0 if self.seconds_per_char is None else chars * self.seconds_per_char


class MicroBatcher:
    """Collects texts for up to `max_wait_ms` (or `max_batch_size` model inputs) and scores them at once.

    `score` takes a list of texts and returns one result per text; it runs in a worker thread so the
    event loop keeps accepting requests meanwhile. At most `max_queue` model inputs wait; past that
    `submit` raises `Overloaded` at once, and so it does when the work ahead (queued and being
    scored) would take more than `DEADLINE_SHARE` of the request's deadline at the rate recent
    batches were scored: a refusal with Retry-After at once rather than a deadline's 503 later.
    Texts whose request has gone (deadline passed, client disconnected) are dropped before scoring.
    """

    def __init__(self, score: Callable[[list[str]], list[Any]], max_batch_size: int = 32, max_wait_ms: float = 2.0,
                 max_queue: int = 1024, on_batch: Callable[[int], None] | None = None,
                 read_chars: Callable[[str], int] = len) -> None:
        self.score = score
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.on_batch = on_batch
        self.pending: deque[Pending] = deque()
        self.depth = 0  # model inputs waiting
        self.read_chars = read_chars  # characters of a text the model reads (a truncated text: fewer)
        self.work_ahead = 0  # characters queued or being scored
        self.rate = ScoringRate()
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
        work = [self.read_chars(text) for text in texts]
        expected = self.rate.seconds(self.work_ahead + sum(work))
        if expected > DEADLINE_SHARE * timeout_s:
            raise Overloaded(f"the work ahead would take about {expected:.1f} s; the deadline is {timeout_s:.1f} s")
        loop = asyncio.get_running_loop()
        items = [Pending(text, cost, chars, loop.create_future()) for text, cost, chars in zip(texts, costs, work)]
        self.pending.extend(items)
        self.depth += sum(costs)
        self.work_ahead += sum(work)
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
                self.work_ahead -= item.work
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
            await self._score(batch)
        finally:
            self.work_ahead -= sum(item.work for item in batch)

    async def _score(self, batch: list[Pending]) -> None:
        started = time.perf_counter()
        try:
            results = await asyncio.to_thread(self.score, [item.text for item in batch])
        except Exception as exc:  # one text must not fail the others: score them one by one
            if len(batch) == 1:
                log.exception("scoring failed on one text")
                self._settle(batch[0], error=ScoringFailed(f"{type(exc).__name__}: {exc}"))
                return
            for item in batch:
                if not item.future.done():
                    await self._score([item])
            return
        self.rate.observe(time.perf_counter() - started, sum(item.work for item in batch))
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
