"""The real ``App`` on ``uplink.broker = "sim://"`` (its private mosquitto and in-process
reference central), running until the block ends: for tests of what central and the running
agent say to each other."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from agent.app import App
from agent.config import AgentConfig, parse_config


def sim_config(state: Path, sections: str) -> AgentConfig:
    """``[terminal] state_dir = state`` plus ``sections`` (TOML; include ``[uplink]`` with
    ``broker = "sim://"``)."""
    text = f'[terminal]\nstate_dir = "{state}"\n{sections}'
    return parse_config(text, base_dir=str(state), env={})


@contextlib.asynccontextmanager
async def running(config: AgentConfig) -> AsyncIterator[App]:
    """The app, once it serves and its uplink is online; stopped gracefully afterwards."""
    app = App(config, install_signals=False)
    task = asyncio.create_task(app.run())
    try:
        async with asyncio.timeout(30):
            await app.ready.wait()
            while app.session is None or not app.session.online:  # noqa: ASYNC110 - polled
                await asyncio.sleep(0.05)
        yield app
    finally:
        app.request_stop()
        await asyncio.wait_for(task, 30)


async def until(pred: Callable[[], bool], limit_s: float = 15) -> None:
    """Wait for ``pred`` (run in a thread: central's store is sync)."""
    async with asyncio.timeout(limit_s):
        while not await asyncio.to_thread(pred):  # noqa: ASYNC110 - polled
            await asyncio.sleep(0.05)
