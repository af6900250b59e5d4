"""``cancel_and_wait``: a cancel lost inside the task (Python 3.11, gh-86296) is repeated."""

from __future__ import annotations

import asyncio

import pytest

from agent.uplink.session import cancel_and_wait


async def test_a_swallowed_cancel_is_repeated_until_the_task_ends() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if swallowed < 2:  # what a lost cancel looks like from outside
                    swallowed += 1
                    continue
                raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    async with asyncio.timeout(5):
        await cancel_and_wait(task)
    assert task.cancelled()
    assert swallowed == 2


async def test_other_exceptions_propagate_and_done_tasks_return() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="boom"):
        await cancel_and_wait(task)
    done = asyncio.create_task(asyncio.sleep(0))
    await done
    await cancel_and_wait(done)
