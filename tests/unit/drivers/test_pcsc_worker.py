"""The PC/SC driver's worker thread: spin-then-park hand-off, errors, deadlines, cancellation.

(The driver over a real pcscd + vpcd is in tests/integration/test_pcsc_*.py; this is the
thread hand-off under it, with plain callables standing in for the blocking PC/SC calls.)
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from agent.drivers import pcsc
from agent.drivers.pcsc import INLINE_MAX_S, _Worker


@pytest.fixture
def worker() -> Iterator[_Worker]:
    w = _Worker("test-worker")
    yield w
    w.close()


async def _loop_turns_during(coro: object) -> int:
    """How many times another task ran while ``coro`` was awaited."""
    turns = 0
    stop = False

    async def ticker() -> None:
        nonlocal turns
        while not stop:
            turns += 1
            await asyncio.sleep(0)

    t = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    turns = 0
    try:
        await coro  # type: ignore[misc]
    finally:
        stop = True
        await t
    return turns


async def test_fast_calls_are_answered_inline_on_the_worker_thread(worker: _Worker) -> None:
    for _ in range(20):  # the average of recent calls falls under the bound
        assert await worker.run(lambda: threading.current_thread().name, inline=True) == (
            "test-worker"
        )
    assert worker.fast_s < INLINE_MAX_S
    # answered without yielding: no other task ran during the call
    assert await _loop_turns_during(worker.run(lambda: 1, inline=True)) == 0


async def test_calls_not_marked_inline_always_park(worker: _Worker) -> None:
    for _ in range(5):
        await worker.run(lambda: 1, inline=True)
    assert await _loop_turns_during(worker.run(lambda: time.sleep(0.001))) > 0


async def test_slow_calls_park_and_stop_being_waited_for_inline(worker: _Worker) -> None:
    for _ in range(10):
        await worker.run(lambda: time.sleep(0.005), inline=True)
    assert worker.fast_s > INLINE_MAX_S
    # a slow reader: the loop keeps serving while the call runs
    assert await _loop_turns_during(worker.run(lambda: time.sleep(0.02), inline=True)) > 0


async def test_errors_reach_the_caller_inline_and_parked(worker: _Worker) -> None:
    def boom() -> None:
        raise pcsc.CardRemovedError("card left")

    for _ in range(20):
        with pytest.raises(pcsc.CardRemovedError):
            await worker.run(boom, inline=True)
    with pytest.raises(pcsc.CardRemovedError):
        await worker.run(boom)


async def test_a_call_that_outlives_the_inline_wait_is_answered_through_the_loop(
    worker: _Worker,
) -> None:
    for _ in range(20):
        await worker.run(lambda: 1, inline=True)
    assert worker.fast_s < INLINE_MAX_S
    # one call past the bound: the caller parks and still gets the result
    assert await worker.run(lambda: time.sleep(3 * INLINE_MAX_S) or "late", inline=True) == "late"


async def test_deadline_counts_from_the_start_and_applies_when_parked(worker: _Worker) -> None:
    release = threading.Event()
    with pytest.raises(TimeoutError):
        await worker.run(lambda: release.wait(5), deadline_s=0.1, inline=True)
    release.set()
    assert await worker.run(lambda: 2) == 2  # the worker serves the next call


async def test_cancel_calls_the_canceller_until_the_thread_lets_go(worker: _Worker) -> None:
    release = threading.Event()
    cancels = 0

    def canceller() -> None:
        nonlocal cancels
        cancels += 1
        release.set()

    task = asyncio.create_task(worker.run(lambda: release.wait(5), canceller, inline=True))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancels >= 1
    assert await worker.run(lambda: 3) == 3


async def test_a_closed_worker_refuses(worker: _Worker) -> None:
    worker.close()
    with pytest.raises(pcsc.DeviceError):
        await worker.run(lambda: 1, inline=True)
