"""Fuzz target: bytes from a client into a running local API server (agent.api.server;
DESIGN §6 — "a kiosk UI is not always well written").

One ``ApiServer`` (Unix socket, and a loopback TCP listener that needs a token) runs for the
whole session. Each input opens a connection (first byte: Unix or TCP), writes the rest,
half-closes, and reads every answer until the server hangs up.

Invariant: every frame the server sends back is a well-formed response (``id``, ``ok``, and
``result`` or ``error {code, message}``) whose error code is one of the API's own
(``wire_error``, ``frame_too_large``, ``bad_request``, ``unknown_op``, ``unauthorized``) — never
``internal`` and never a logged exception; the connection is closed and forgotten by the server
(no leak); and a long-lived well-behaved client is still served after every input.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fuzz import _harness

with _harness.instrumented():
    import cbor2

    from agent.api.client import ApiClient
    from agent.api.server import ApiServer
    from agent.wire.framing import NEED_DATA, FrameDecoder, encode_frame

MAX_FRAME = 4096
TOKEN = "fuzz-token"  # noqa: S105  # a test token for a throwaway server
ALLOWED = {"wire_error", "frame_too_large", "bad_request", "unknown_op", "unauthorized"}


async def _status(args: Mapping[str, Any]) -> dict[str, Any]:
    return {"state": "ok"}


class _ErrorCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


class _Rig:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.dir = tempfile.TemporaryDirectory(prefix="fuzz-api-")
        self.path = str(Path(self.dir.name) / "api.sock")
        self.server = ApiServer({"status": _status}, max_frame=MAX_FRAME, token=TOKEN)
        self.errors = _ErrorCounter()
        logging.getLogger("agent.api").addHandler(self.errors)
        self.loop.run_until_complete(self.server.start_unix(self.path))
        self.port = self.loop.run_until_complete(self.server.start_tcp("127.0.0.1", 0))
        self.probe = self.loop.run_until_complete(ApiClient.connect_unix(self.path))
        self.inputs = 0

    def close(self) -> None:
        """Stop the server and free the loop (tests call it; a fuzzing process just exits)."""

        async def _close() -> None:
            await self.probe.close()
            await self.server.close()

        self.loop.run_until_complete(_close())
        self.loop.close()
        logging.getLogger("agent.api").removeHandler(self.errors)
        self.dir.cleanup()

    async def one(self, data: bytes) -> str:
        if data[:1] and data[0] & 1:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        else:
            reader, writer = await asyncio.open_unix_connection(self.path)
        body = data[1:]
        try:
            if body:
                writer.write(body)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
            raw = await asyncio.wait_for(reader.read(), 5)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        codes = self.check_answers(raw)
        for _ in range(200):  # the server forgets the connection (probe's is the only one)
            if len(self.server._conns) <= 1:  # white-box leak check
                break
            await asyncio.sleep(0.001)
        _harness.expect(len(self.server._conns) <= 1, "server keeps a closed connection")
        status = await asyncio.wait_for(self.probe.call("status"), 5)
        _harness.expect(status == {"state": "ok"}, "the probe client is no longer served")
        _harness.expect(self.errors.count == 0, "the server logged an error")
        return ",".join(sorted(codes)) or "silent"

    def check_answers(self, raw: bytes) -> set[str]:
        dec = FrameDecoder(1 << 24)
        dec.receive_data(raw)
        codes: set[str] = set()
        while not isinstance(frame := dec.next_frame(), type(NEED_DATA)):
            msg = cbor2.loads(frame)
            _harness.expect(isinstance(msg, dict) and "id" in msg, f"bad answer {msg!r}")
            if msg.get("ok") is True:
                _harness.expect("result" in msg, "success without result")
                codes.add("ok")
                continue
            err = msg.get("error")
            _harness.expect(msg.get("ok") is False and isinstance(err, dict), f"bad {msg!r}")
            code = err.get("code")
            _harness.expect(code in ALLOWED, f"error code {code!r} is not the API's own")
            _harness.expect(isinstance(err.get("message"), str), "error without message")
            codes.add(str(code))
        _harness.expect(dec.buffered == 0, "server sent a partial frame")
        return codes


_RIG: _Rig | None = None


def _rig() -> _Rig:
    global _RIG  # noqa: PLW0603  # one server for the whole fuzzing session
    if _RIG is None:
        _RIG = _Rig()
    return _RIG


def _req(i: Any, op: Any, args: Any = None, **extra: Any) -> bytes:
    m: dict[str, Any] = {"id": i, "op": op}
    if args is not None:
        m["args"] = args
    m.update(extra)
    return encode_frame(cbor2.dumps(m))


def _seeds() -> list[bytes]:
    status = _req(1, "status", {})
    return [
        b"\x00" + status,
        b"\x01" + _req(1, "auth", {"token": TOKEN}) + status,
        b"\x01" + status,
        b"\x00" + status + _req("x", "nope", {}) + _req(3, "events.subscribe"),
        b"\x00" + _req(2, "status", [1, 2]) + _req(True, "status"),
        b"\x00" + encode_frame(cbor2.dumps([1, 2, 3])) + encode_frame(b"\xff\xff"),
        b"\x00" + (MAX_FRAME + 1).to_bytes(4, "big") + b"x" * 8,
        b"\x00\x00\x00\x00\x00",
        b"\x00" + status[:-3],
        b"\x00" + encode_frame(cbor2.dumps({"id": 2**70, "op": "status", "args": {"a": b"b"}})),
    ]


SEEDS = _seeds()
DICTIONARY = [
    b"\xa3",
    b"\x62id",
    b"\x62op",
    b"\x64args",
    b"\x66status",
    b"\x00\x00\x10\x01",
    b"\x00\x00\x00\x01",
    b"\xbf",
    b"\xff",
    b"\xd8\x18",
    b"\x1b\xff\xff\xff\xff",
]


def test_one_input(data: bytes) -> str:
    rig = _rig()
    return rig.loop.run_until_complete(rig.one(data))


if __name__ == "__main__":
    _harness.main(test_one_input, SEEDS, DICTIONARY)
