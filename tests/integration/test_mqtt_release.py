"""A failed or cancelled MQTT connect leaves no socket behind (agent.uplink.mqtt).

The broker here is a real TCP listener that accepts and then never sends a CONNACK (a broker
stuck under load, a captive proxy): aiomqtt times out, or the caller gives up and cancels. Each
attempt must close its socket at once, not at garbage collection — a terminal that cannot get
through for days would otherwise run out of descriptors, and a paho client collected after its
loop closed raises ``RuntimeError: Event loop is closed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
from collections.abc import AsyncIterator

import aiomqtt
import pytest

from agent.uplink.mqtt import connection

ATTEMPTS = 12


def _open_sockets() -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                n += 1
    return n


SILENT_BROKER = """
import socket, sys
srv = socket.create_server(("127.0.0.1", 0))
print(srv.getsockname()[1], flush=True)
held = []
while True:
    conn, _ = srv.accept()
    held.append(conn)  # accepted, never read, never answered
"""


@contextlib.asynccontextmanager
async def _silent_broker() -> AsyncIterator[int]:
    """A listener in another process (so every socket of this process is a client's) that
    accepts connections and never answers; its ends stay open for the whole test."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SILENT_BROKER, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(10):
            port = int(await proc.stdout.readline())
        yield port
    finally:
        proc.kill()
        await proc.wait()


def _client(port: int, timeout: float) -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1", port, identifier="release-test", timeout=timeout, keepalive=5
    )


async def test_timed_out_connects_close_their_sockets() -> None:
    gc.collect()
    before = _open_sockets()
    async with _silent_broker() as port:
        gc.disable()  # the garbage collector must not be what closes them
        try:
            for _ in range(ATTEMPTS):
                with pytest.raises(aiomqtt.MqttError):
                    async with connection(_client(port, 0.05)):
                        pytest.fail("connected to a broker that never answers")
            leaked = _open_sockets() - before
        finally:
            gc.enable()
    assert leaked == 0, f"{leaked} sockets still open after {ATTEMPTS} attempts"


async def test_cancelled_connects_close_their_sockets() -> None:
    gc.collect()
    before = _open_sockets()
    async with _silent_broker() as port:
        gc.disable()
        try:
            for _ in range(ATTEMPTS):

                async def attempt() -> None:
                    async with connection(_client(port, 30)):
                        pytest.fail("connected to a broker that never answers")

                task = asyncio.create_task(attempt())
                await asyncio.sleep(0.05)  # inside __aenter__, waiting for the CONNACK
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            leaked = _open_sockets() - before
        finally:
            gc.enable()
    assert leaked == 0, f"{leaked} sockets still open after {ATTEMPTS} attempts"
