"""The local API server against hostile clients: it keeps serving everyone else."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import struct
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.api.client import ApiClient, RemoteApiError
from agent.api.server import ApiServer


async def _status(args: Mapping[str, Any]) -> dict[str, Any]:
    return {"state": "ok", "echo": args.get("x")}


async def _slow(args: Mapping[str, Any]) -> str:
    await asyncio.sleep(float(args.get("s", 0.5)))
    return "done"


async def _boom(args: Mapping[str, Any]) -> None:
    raise RuntimeError("bug")


HANDLERS = {"status": _status, "slow": _slow, "boom": _boom}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[ApiServer, str]]:
    srv = ApiServer(HANDLERS, max_frame=4096, token="s3cret")
    path = str(tmp_path / "api.sock")
    await srv.start_unix(path)
    yield srv, path
    await srv.close()


async def _raw(path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_unix_connection(path)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def _read_frame(reader: asyncio.StreamReader) -> Any:
    (n,) = struct.unpack(">I", await reader.readexactly(4))
    return cbor2.loads(await reader.readexactly(n))


async def test_round_trip_and_socket_mode(server: tuple[ApiServer, str]) -> None:
    _, path = server
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    async with await ApiClient.connect_unix(path) as api:
        assert await api.call("status", {"x": 7}) == {"state": "ok", "echo": 7}


async def test_errors_are_typed(server: tuple[ApiServer, str]) -> None:
    _, path = server
    async with await ApiClient.connect_unix(path) as api:
        with pytest.raises(RemoteApiError) as ei:
            await api.call("nope")
        assert ei.value.code == "unknown_op"
        with pytest.raises(RemoteApiError) as ei:
            await api.call("boom")
        assert ei.value.code == "internal"
        assert await api.call("status") == {"state": "ok", "echo": None}  # still serving


async def test_long_request_does_not_block_others(server: tuple[ApiServer, str]) -> None:
    _, path = server
    async with await ApiClient.connect_unix(path) as api:
        slow = asyncio.create_task(api.call("slow", {"s": 1.0}))
        async with asyncio.timeout(0.5):
            assert (await api.call("status"))["state"] == "ok"
        assert await slow == "done"


async def test_garbage_keeps_connection(server: tuple[ApiServer, str]) -> None:
    _, path = server
    reader, writer = await _raw(path)
    writer.write(struct.pack(">I", 3) + b"\xff\xff\xff")  # framed, not CBOR
    writer.write(struct.pack(">I", 1) + b"\x01")  # CBOR, not a map
    req = cbor2.dumps({"id": 5, "op": "status", "args": {}})
    writer.write(struct.pack(">I", len(req)) + req)
    await writer.drain()
    got = [await _read_frame(reader) for _ in range(3)]
    by_code = sorted(g["error"]["code"] for g in got if not g["ok"])
    assert by_code == ["bad_request", "wire_error"]
    assert any(g["ok"] and g["id"] == 5 for g in got)
    await _close(writer)


async def test_oversized_frame_closes_only_that_client(server: tuple[ApiServer, str]) -> None:
    srv, path = server
    async with await ApiClient.connect_unix(path) as good:
        reader, writer = await _raw(path)
        writer.write(struct.pack(">I", 1 << 30))
        await writer.drain()
        err = await _read_frame(reader)
        assert err["error"]["code"] == "frame_too_large"
        assert await reader.read() == b""  # closed
        await _close(writer)
        # truncated frame then hang-up
        _r2, w2 = await _raw(path)
        w2.write(struct.pack(">I", 100) + b"abc")
        await w2.drain()
        await _close(w2)
        assert (await good.call("status"))["state"] == "ok"
    assert srv.stats["connections"] >= 3


async def test_tcp_needs_token(tmp_path: Path) -> None:
    srv = ApiServer(HANDLERS, token="s3cret")
    port = await srv.start_tcp("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = ApiClient(reader, writer)
        with pytest.raises(RemoteApiError) as ei:
            await client.call("status")
        assert ei.value.code == "unauthorized"
        with pytest.raises(RemoteApiError):
            await client.call("auth", {"token": "wrong"})
        await client.close()
        async with await ApiClient.connect_tcp("127.0.0.1", port, "s3cret") as api:
            assert (await api.call("status"))["state"] == "ok"
    finally:
        await srv.close()


async def test_events_and_slow_subscriber(server: tuple[ApiServer, str]) -> None:
    srv, path = server
    async with await ApiClient.connect_unix(path) as api:
        await api.subscribe()
        srv.publish_event("card_inserted", {"reader": "r0"})
        it = api.events().__aiter__()
        async with asyncio.timeout(2):
            assert await it.__anext__() == ("card_inserted", {"reader": "r0"})
    # a subscriber that never reads is dropped instead of growing memory
    reader, writer = await _raw(path)
    req = cbor2.dumps({"id": 1, "op": "events.subscribe", "args": {}})
    writer.write(struct.pack(">I", len(req)) + req)
    await writer.drain()
    await _read_frame(reader)
    for i in range(20000):
        srv.publish_event("tick", {"i": i, "pad": "x" * 100})
        if i % 500 == 0:
            await asyncio.sleep(0)
    assert srv.stats["dropped_subscribers"] >= 1
    await _close(writer)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=1, max_size=300))
async def test_fuzzed_frames_never_kill_the_server(
    server: tuple[ApiServer, str], payload: bytes
) -> None:
    _, path = server
    reader, writer = await _raw(path)
    writer.write(struct.pack(">I", len(payload)) + payload)
    await writer.drain()
    async with asyncio.timeout(2):
        reply = await _read_frame(reader)
    assert reply["ok"] in (True, False)
    await _close(writer)
    async with await ApiClient.connect_unix(path) as api:
        assert (await api.call("status"))["state"] == "ok"
