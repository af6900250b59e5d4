"""Python client for the local API (DESIGN §6; docs/API.md).

async with await ApiClient.connect_unix("/run/ssc-agent/api.sock") as api:
    print(await api.call("status"))
    await api.subscribe()
    async for event, data in api.events():
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any

import cbor2

from agent.errors import AgentError, ApiError, WireError
from agent.wire.framing import FrameDecoder, encode_frame


class RemoteApiError(ApiError):
    """The agent answered ``ok: false``; ``code`` and ``message`` are the agent's; ``error``
    is the whole error map (``message_zh``, ``record``... where the operation gives them)."""

    def __init__(self, code: str, message: str, error: Mapping[str, Any] | None = None) -> None:
        super().__init__(message, code=code)
        self.error: dict[str, Any] = dict(error or {"code": code, "message": message})

    def to_dict(self) -> dict[str, Any]:
        return dict(self.error)


class ApiClient:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_frame: int = 1 << 20
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._decoder = FrameDecoder(max_frame)
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._events: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self._closed = asyncio.Event()
        self._task = asyncio.create_task(self._read_loop(), name="api-client-reader")

    @classmethod
    async def connect_unix(cls, path: str) -> ApiClient:
        reader, writer = await asyncio.open_unix_connection(path)
        return cls(reader, writer)

    @classmethod
    async def connect_tcp(cls, host: str, port: int, token: str) -> ApiClient:
        reader, writer = await asyncio.open_connection(host, port)
        client = cls(reader, writer)
        await client.call("auth", {"token": token})
        return client

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()

    async def call(self, op: str, args: Mapping[str, Any] | None = None) -> Any:
        """Send one request and wait for its response; ``ok: false`` raises RemoteApiError."""
        req_id = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        frame = encode_frame(cbor2.dumps({"id": req_id, "op": op, "args": dict(args or {})}))
        self._writer.write(frame)
        await self._writer.drain()
        try:
            return await fut
        finally:
            self._pending.pop(req_id, None)

    async def subscribe(self) -> None:
        await self.call("events.subscribe")

    async def events(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        while True:
            get = asyncio.ensure_future(self._events.get())
            closed = asyncio.ensure_future(self._closed.wait())
            done, _ = await asyncio.wait({get, closed}, return_when=asyncio.FIRST_COMPLETED)
            if get in done:
                closed.cancel()
                yield get.result()
            else:
                get.cancel()
                return

    async def _read_loop(self) -> None:
        try:
            while True:
                chunk = await self._reader.read(65536)
                if not chunk:
                    break
                self._decoder.receive_data(chunk)
                while isinstance(frame := self._decoder.next_frame(), bytes):
                    self._on_frame(frame)
        except (ConnectionError, AgentError):
            pass
        finally:
            self._closed.set()
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ApiError("connection to the agent closed"))

    def _on_frame(self, frame: bytes) -> None:
        try:
            msg = cbor2.loads(frame)
        except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError):
            raise WireError("agent sent invalid CBOR") from None
        if not isinstance(msg, dict):
            return
        if "event" in msg:
            self._events.put_nowait((str(msg["event"]), dict(msg.get("data") or {})))
            return
        fut = self._pending.get(msg.get("id"))  # type: ignore[arg-type]
        if fut is None or fut.done():
            if msg.get("id") is None and not msg.get("ok", True):
                err = msg.get("error") or {}
                for f in self._pending.values():
                    if not f.done():
                        f.set_exception(
                            RemoteApiError(str(err.get("code")), str(err.get("message")), err)
                        )
            return
        if msg.get("ok"):
            fut.set_result(msg.get("result"))
        else:
            err = msg.get("error") or {}
            fut.set_exception(RemoteApiError(str(err.get("code")), str(err.get("message")), err))
