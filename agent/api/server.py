"""The local integration API server (DESIGN §6; docs/API.md).

Unix domain socket (mode 0660) and an optional loopback TCP listener that requires a token.
Each frame is a 4-byte big-endian length and one CBOR map. Requests ``{"id", "op", "args"}``;
responses ``{"id", "ok": true, "result"}`` or ``{"id", "ok": false, "error": {"code",
"message"}}``; unsolicited events ``{"event", "data"}`` after ``events.subscribe``.

Robustness rules (a kiosk UI is not always well written):
* an oversized length prefix loses the framing: the client gets an error frame and the
  connection is closed; the server and the other clients carry on;
* a frame that is not CBOR, not a map, or lacks ``op`` gets an error response; the connection
  stays open (framing is intact);
* each request runs in its own task, so a long ``card.wait`` does not block ``status``;
* a subscriber that does not read its events is disconnected once its bounded queue is full,
  rather than growing the agent's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2

from agent.errors import AgentError, ApiError, WireError
from agent.wire.framing import FrameDecoder, encode_frame

log = logging.getLogger("agent.api")

Handler = Callable[[Mapping[str, Any]], Awaitable[Any]]
EVENT_QUEUE_MAX = 1000
READ_CHUNK = 65536


def _parse_request(frame: bytes) -> tuple[int | str, str, dict[str, Any]]:
    """Decode and check one request frame (raises WireError / BadRequestError)."""
    try:
        req = cbor2.loads(frame)
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError, OverflowError):
        raise WireError("frame is not valid CBOR") from None
    if not isinstance(req, dict):
        raise BadRequestError("a request is a CBOR map")
    req_id = req.get("id")
    if not isinstance(req_id, int | str) or isinstance(req_id, bool):
        raise BadRequestError("request id must be an integer or a string")
    op = req.get("op")
    args = req.get("args", {})
    if not isinstance(op, str) or not isinstance(args, dict):
        raise BadRequestError("request needs a text 'op' and a map 'args'")
    return req_id, op, args


def _prepare_socket_path(p: Path) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        p.unlink()  # a stale socket from a crash


class UnknownOperationError(ApiError):
    """No such operation."""

    code = "unknown_op"


class BadRequestError(ApiError):
    """The request is not a map with ``id``, ``op`` and a map ``args``."""

    code = "bad_request"


class UnauthorizedError(ApiError):
    """TCP clients must authenticate first with ``{"op": "auth", "args": {"token": …}}``."""

    code = "unauthorized"


@dataclass(eq=False)
class _Conn:
    writer: asyncio.StreamWriter
    authenticated: bool
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    events: asyncio.Queue[dict[str, Any]] | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    pump: asyncio.Task[None] | None = None
    closed: bool = False


class ApiServer:
    """Serves registered operations over the local API."""

    def __init__(
        self,
        handlers: Mapping[str, Handler],
        *,
        max_frame: int = 65536,
        token: str = "",
    ) -> None:
        self.handlers = dict(handlers)
        self.max_frame = max_frame
        self.token = token
        self._servers: list[asyncio.Server] = []
        self._conns: set[_Conn] = set()
        self.stats = {"connections": 0, "requests": 0, "errors": 0, "dropped_subscribers": 0}

    # ---- lifecycle -------------------------------------------------------------------------
    async def start_unix(self, path: str | Path, mode: int = 0o660) -> None:
        p = Path(path)
        _prepare_socket_path(p)
        srv = await asyncio.start_unix_server(
            lambda r, w: self._serve(r, w, authenticated=True), path=str(p)
        )
        os.chmod(p, mode)
        self._servers.append(srv)

    async def start_tcp(self, host: str, port: int) -> int:
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ApiError("the TCP listener is loopback only")
        if not self.token:
            raise ApiError("the TCP listener needs a token")
        srv = await asyncio.start_server(
            lambda r, w: self._serve(r, w, authenticated=False), host=host, port=port
        )
        self._servers.append(srv)
        bound: int = srv.sockets[0].getsockname()[1]
        return bound

    async def close(self) -> None:
        for srv in self._servers:
            srv.close()
        for conn in list(self._conns):
            await self._close_conn(conn)
        for srv in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(srv.wait_closed(), 2)
        self._servers.clear()

    # ---- events ----------------------------------------------------------------------------
    def publish_event(self, event: str, data: Mapping[str, Any]) -> None:
        """Queue an event for every subscriber; a full queue drops that subscriber."""
        frame = {"event": event, "data": dict(data)}
        for conn in list(self._conns):
            q = conn.events
            if q is None or conn.closed:
                continue
            try:
                q.put_nowait(frame)
            except asyncio.QueueFull:
                self.stats["dropped_subscribers"] += 1
                conn.events = None
                conn.writer.close()

    # ---- connection handling -----------------------------------------------------------------
    async def _send(self, conn: _Conn, obj: Mapping[str, Any]) -> None:
        if conn.closed:
            return
        data = encode_frame(cbor2.dumps(dict(obj)))
        async with conn.lock:
            conn.writer.write(data)
            with contextlib.suppress(ConnectionError):
                await conn.writer.drain()

    async def _close_conn(self, conn: _Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        for t in list(conn.tasks):
            t.cancel()
        if conn.pump is not None:
            conn.pump.cancel()
        conn.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await conn.writer.wait_closed()
        self._conns.discard(conn)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, authenticated: bool
    ) -> None:
        conn = _Conn(writer, authenticated)
        self._conns.add(conn)
        self.stats["connections"] += 1
        decoder = FrameDecoder(self.max_frame)
        try:
            while not conn.closed:
                chunk = await reader.read(READ_CHUNK)
                if not chunk:
                    break
                try:
                    decoder.receive_data(chunk)
                    while isinstance(frame := decoder.next_frame(), bytes):
                        self._dispatch(conn, frame)
                except WireError as e:  # oversized or empty frame
                    # framing is lost: say why, then hang up on this client only
                    await self._send(conn, {"id": None, "ok": False, "error": e.to_dict()})
                    break
        except ConnectionError:
            pass
        finally:
            await self._close_conn(conn)

    async def _pump(self, conn: _Conn) -> None:
        while not conn.closed and conn.events is not None:
            frame = await conn.events.get()
            await self._send(conn, frame)

    def _dispatch(self, conn: _Conn, frame: bytes) -> None:
        task = asyncio.create_task(self._handle(conn, frame))
        conn.tasks.add(task)
        task.add_done_callback(conn.tasks.discard)

    async def _handle(self, conn: _Conn, frame: bytes) -> None:
        self.stats["requests"] += 1
        req_id: int | str | None = None
        try:
            req_id, op, args = _parse_request(frame)
            result = await self._run(conn, op, args)
            await self._send(conn, {"id": req_id, "ok": True, "result": result})
        except AgentError as e:
            self.stats["errors"] += 1
            await self._send(conn, {"id": req_id, "ok": False, "error": e.to_dict()})
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.stats["errors"] += 1
            log.exception("API handler failed")
            err = {"code": "internal", "message": type(e).__name__}
            await self._send(conn, {"id": req_id, "ok": False, "error": err})

    async def _run(self, conn: _Conn, op: str, args: Mapping[str, Any]) -> Any:
        if op == "auth":
            return self._auth(conn, args)
        if not conn.authenticated:
            raise UnauthorizedError("authenticate first (op 'auth' with the token)")
        if op == "events.subscribe":
            if conn.events is None:
                conn.events = asyncio.Queue(EVENT_QUEUE_MAX)
                conn.pump = asyncio.create_task(self._pump(conn))
            return {"subscribed": True}
        handler = self.handlers.get(op)
        if handler is None:
            raise UnknownOperationError(f"unknown operation {op!r}")
        return await handler(args)

    def _auth(self, conn: _Conn, args: Mapping[str, Any]) -> dict[str, bool]:
        token = args.get("token")
        if not self.token or (
            isinstance(token, str) and hmac.compare_digest(token.encode(), self.token.encode())
        ):
            conn.authenticated = True
        else:
            raise UnauthorizedError("bad token")
        return {"authenticated": True}
