"""The micro-batcher's admission control, in isolation: bounded queue, deadlines, dropped requests,
and one bad text failing alone."""

from __future__ import annotations

import asyncio
import threading

import pytest

from routeclf.serving.app import ClientGone, until_disconnected
from routeclf.serving.batching import DeadlineExceeded, MicroBatcher, Overloaded, ScoringFailed


class Recorder:
    """A model stand-in: records every batch, can be slowed, and breaks on texts holding "bad"."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[str]] = []
        self.delay = delay
        self.release = threading.Event()

    def __call__(self, texts: list[str]) -> list[str]:
        self.batches.append(list(texts))
        if self.delay:
            self.release.wait(self.delay)
        if any("bad" in t for t in texts):
            raise ValueError("cannot read this text")
        return [t.upper() for t in texts]

    @property
    def scored(self) -> list[str]:
        return [t for batch in self.batches for t in batch]


def run(coroutine):
    return asyncio.run(coroutine)


def test_a_failing_text_fails_alone_and_the_others_are_answered() -> None:
    async def scenario():
        model = Recorder()
        batcher = MicroBatcher(model, max_batch_size=8, max_wait_ms=20)
        batcher.start()
        results = await asyncio.gather(
            batcher.submit(["good one"], [1], 5), batcher.submit(["bad one"], [1], 5),
            batcher.submit(["good two", "good three"], [1, 1], 5), return_exceptions=True)
        await batcher.stop()
        return model, results

    model, results = run(scenario())
    assert results[0] == ["GOOD ONE"] and results[2] == ["GOOD TWO", "GOOD THREE"]
    assert isinstance(results[1], ScoringFailed) and "cannot read this text" in str(results[1])
    assert len(model.batches[0]) == 4  # they were batched together, then retried one by one


def test_the_queue_is_bounded_in_model_inputs() -> None:
    async def scenario():
        model = Recorder(delay=5)
        batcher = MicroBatcher(model, max_batch_size=1, max_wait_ms=0, max_queue=3)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(["a"], [1], 10))
        await asyncio.sleep(0.05)  # "a" is being scored; the queue is empty again
        waiting = asyncio.ensure_future(batcher.submit(["b"], [3], 10))
        await asyncio.sleep(0.01)
        with pytest.raises(Overloaded):
            await batcher.submit(["c"], [1], 10)
        depth = batcher.depth
        model.release.set()
        assert await first == ["A"] and await waiting == ["B"]
        await batcher.stop()
        return depth, batcher.depth

    assert run(scenario()) == (3, 0)


def test_past_its_deadline_a_request_fails_and_its_text_is_never_scored() -> None:
    async def scenario():
        model = Recorder(delay=0.5)
        batcher = MicroBatcher(model, max_batch_size=1, max_wait_ms=0)
        batcher.start()
        slow = asyncio.ensure_future(batcher.submit(["first"], [1], 5))
        await asyncio.sleep(0.05)
        with pytest.raises(DeadlineExceeded):
            await batcher.submit(["late"], [1], 0.1)
        model.release.set()
        await slow
        await asyncio.sleep(0.05)
        await batcher.stop()
        return model.scored, batcher.depth

    scored, depth = run(scenario())
    assert scored == ["first"] and depth == 0


def test_work_that_would_outlast_the_deadline_is_refused_at_once() -> None:
    async def scenario():
        model = Recorder(delay=0.2)
        batcher = MicroBatcher(model, max_batch_size=1, max_wait_ms=0)
        batcher.start()
        assert await batcher.submit(["x" * 100], [1], 5) == ["X" * 100]  # 100 characters in about 0.2 s
        slow = asyncio.ensure_future(batcher.submit(["y" * 100], [1], 5))
        await asyncio.sleep(0.02)
        started = asyncio.get_running_loop().time()
        with pytest.raises(Overloaded, match="deadline"):  # 0.2 s ahead and 0.2 s of its own: past half of 0.6 s
            await batcher.submit(["z" * 100], [1], 0.6)
        refused_after = asyncio.get_running_loop().time() - started
        admitted = await batcher.submit(["w" * 100], [1], 5)  # the same work with time enough
        await slow
        await batcher.stop()
        return refused_after, admitted, model.scored, batcher.depth, batcher.work_ahead

    refused_after, admitted, scored, depth, work_ahead = run(scenario())
    assert refused_after < 0.05 and admitted == ["W" * 100]
    assert "z" * 100 not in scored and (depth, work_ahead) == (0, 0)


def test_the_work_ahead_is_released_whatever_the_batch_ends_in() -> None:
    async def scenario():
        model = Recorder()
        batcher = MicroBatcher(model, max_batch_size=8, max_wait_ms=20)
        batcher.start()
        await asyncio.gather(batcher.submit(["good"], [1], 5), batcher.submit(["bad"], [1], 5),
                             return_exceptions=True)
        with pytest.raises(DeadlineExceeded):
            await batcher.submit(["gone"], [1], 0.01)
        await asyncio.sleep(0.05)
        await batcher.stop()
        return batcher.depth, batcher.work_ahead

    assert run(scenario()) == (0, 0)


def test_batches_are_cut_by_model_inputs() -> None:
    async def scenario():
        model = Recorder(delay=0.2)
        batcher = MicroBatcher(model, max_batch_size=4, max_wait_ms=0)
        batcher.start()
        blocker = asyncio.ensure_future(batcher.submit(["x"], [1], 5))
        await asyncio.sleep(0.05)
        rest = asyncio.ensure_future(batcher.submit(["long", "s1", "s2"], [3, 1, 1], 5))
        model.release.set()
        await blocker
        await rest
        await batcher.stop()
        return model.batches

    assert run(scenario()) == [["x"], ["long", "s1"], ["s2"]]


class FakeRequest:
    """A request whose client disconnects after `after` seconds."""

    def __init__(self, after: float) -> None:
        self.after = after

    async def receive(self) -> dict:
        await asyncio.sleep(self.after)
        return {"type": "http.disconnect"}


def test_a_disconnected_clients_texts_leave_the_queue_unscored() -> None:
    async def scenario():
        model = Recorder(delay=0.5)
        batcher = MicroBatcher(model, max_batch_size=1, max_wait_ms=0)
        batcher.start()
        busy = asyncio.ensure_future(batcher.submit(["busy"], [1], 5))
        await asyncio.sleep(0.05)
        with pytest.raises(ClientGone):
            await until_disconnected(FakeRequest(0.1), batcher.submit(["abandoned"], [1], 5))
        kept = await until_disconnected(FakeRequest(10), batcher.submit(["kept"], [1], 5))
        await busy
        await batcher.stop()
        return model.scored, kept

    scored, kept = run(scenario())
    assert kept == ["KEPT"] and "abandoned" not in scored
