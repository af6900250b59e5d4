"""The PC/SC driver's worker thread: fast readers on the loop, errors, deadlines, cancellation.

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


def _where(worker: _Worker) -> object:
    return worker.run(lambda: threading.current_thread().name, inline=True)


async def _prove_fast(worker: _Worker) -> None:
    """A reader starts on its worker thread and moves to the loop once its calls are fast."""
    names = [await _where(worker) for _ in range(20)]
    assert names[0] == "test-worker"
    assert worker.fast_s < INLINE_MAX_S
    assert names[-1] == threading.current_thread().name


async def test_fast_calls_move_to_the_loop_thread_after_proving_fast(worker: _Worker) -> None:
    await _prove_fast(worker)
    # answered on the loop thread without yielding: no other task ran during the call
    assert await _loop_turns_during(worker.run(lambda: 1, inline=True)) == 0


async def test_calls_not_marked_inline_always_run_on_the_worker(worker: _Worker) -> None:
    await _prove_fast(worker)
    assert await worker.run(lambda: threading.current_thread().name) == "test-worker"
    assert await _loop_turns_during(worker.run(lambda: time.sleep(0.001))) > 0


async def test_a_slow_answer_sends_the_reader_back_to_its_worker(worker: _Worker) -> None:
    await _prove_fast(worker)
    assert await worker.run(lambda: time.sleep(0.05) or "slow", inline=True) == "slow"
    assert worker.fast_s > INLINE_MAX_S
    # the loop keeps serving while the next calls run on the worker thread
    assert await _where(worker) == "test-worker"
    assert await _loop_turns_during(worker.run(lambda: time.sleep(0.02), inline=True)) > 0


async def test_slow_readers_never_leave_the_worker(worker: _Worker) -> None:
    for _ in range(10):
        await worker.run(lambda: time.sleep(0.005), inline=True)
    assert worker.fast_s > INLINE_MAX_S
    assert await _where(worker) == "test-worker"


async def test_a_busy_worker_keeps_the_order_of_calls(worker: _Worker) -> None:
    """A fast call never overtakes a call still queued or running on the worker thread."""
    await _prove_fast(worker)
    order: list[str] = []
    release = threading.Event()
    first = asyncio.create_task(worker.run(lambda: (release.wait(5), order.append("first"))[1]))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(
        worker.run(lambda: order.append(threading.current_thread().name), inline=True)
    )
    await asyncio.sleep(0.01)
    assert order == []  # the fast call waits behind the running one
    release.set()
    await asyncio.gather(first, second)
    assert order == ["first", "test-worker"]


async def test_errors_reach_the_caller_on_either_thread(worker: _Worker) -> None:
    def boom() -> None:
        raise pcsc.CardRemovedError("card left")

    for _ in range(20):
        with pytest.raises(pcsc.CardRemovedError):
            await worker.run(boom, inline=True)
    assert worker.fast_s < INLINE_MAX_S  # the later ones were raised on the loop thread
    with pytest.raises(pcsc.CardRemovedError):
        await worker.run(boom)


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


async def test_no_loop_calls_while_this_process_serves_a_device(worker: _Worker) -> None:
    """An in-process vpcd simulator answers on this loop: calls must stay on the worker."""
    from agent.drivers import loopcalls

    await _prove_fast(worker)
    with loopcalls.device_served_here():
        assert not loopcalls.allowed()
        assert await _where(worker) == "test-worker"
    assert loopcalls.allowed()
    assert await _where(worker) == threading.current_thread().name


async def test_a_run_of_loop_thread_calls_lets_other_tasks_in(worker: _Worker) -> None:
    await _prove_fast(worker)

    async def run_of_calls() -> None:
        for _ in range(100):  # ~30 ms of calls that each finish within the bound
            await worker.run(lambda: time.sleep(0.0003), inline=True)

    assert await _loop_turns_during(run_of_calls()) >= 5
