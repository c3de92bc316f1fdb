"""Micro-batching: concurrent requests are scored together, which is what makes a CPU fast."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any



class MicroBatcher:
    """Collects texts for up to `max_wait_ms` (or `max_batch_size` texts) and scores them at once.

    `score` takes a list of texts and returns one result per text; it runs in a worker thread so
    the event loop keeps accepting requests meanwhile.
    """

    def __init__(self, score: Callable[[list[str]], list[Any]], max_batch_size: int = 32, max_wait_ms: float = 2.0,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.on_batch = on_batch
        self.score = score
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.queue: asyncio.Queue[tuple[str, asyncio.Future]] | None = None
        self.worker: asyncio.Task | None = None

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self.worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            await asyncio.gather(self.worker, return_exceptions=True)

    async def submit(self, texts: list[str]) -> list[Any]:
        assert self.queue is not None, "batcher not started"
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in texts]
        for text, future in zip(texts, futures):
            self.queue.put_nowait((text, future))
        return list(await asyncio.gather(*futures))

    async def _run(self) -> None:
        assert self.queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch_size:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    # Take whatever is already waiting without sleeping further.
                    while len(batch) < self.max_batch_size and not self.queue.empty():
                        batch.append(self.queue.get_nowait())
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), timeout))
                except asyncio.TimeoutError:
                    break
            if self.on_batch is not None:
                self.on_batch(len(batch))
            texts = [text for text, _ in batch]
            try:
                results = await asyncio.to_thread(self.score, texts)
            except Exception as exc:  # one bad batch must not stop the worker
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)
