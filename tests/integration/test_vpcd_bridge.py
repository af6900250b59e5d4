"""The vpcd framing (sans-IO) and the bridge against a scripted vpcd peer (no pcscd needed).

The fake vpcd below is the driver side of the protocol described in ``agent/sim/vpcd.py``:
it listens, and drives the connected card with length-prefixed control bytes and APDUs.
"""

from __future__ import annotations

import asyncio
import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.sim.vpcd import (
    BridgeState,
    Control,
    VpcdBridge,
    VpcdDecoder,
    VpcdMessage,
    answer,
    encode_frame,
)

ATR = bytes.fromhex("3B8F8001804F0CA000000306030001000000006A")


class Device:
    def __init__(self, *, broken: bool = False, reply: bytes | None = None) -> None:
        self.log: list[str] = []
        self.broken = broken
        self.reply = reply

    @property
    def atr(self) -> bytes:
        return ATR

    def power_on(self) -> bytes:
        self.log.append("on")
        return ATR

    def power_off(self) -> None:
        self.log.append("off")

    def process(self, apdu: bytes) -> bytes:
        self.log.append(apdu.hex())
        if self.broken:
            raise ZeroDivisionError("simulator bug")
        if self.reply is not None:
            return self.reply
        return apdu[::-1] + b"\x90\x00"


# ------------------------------------------------------------------ sans-IO framing
payloads = st.binary(min_size=1, max_size=600)


@settings(max_examples=200)
@given(st.lists(payloads, max_size=8), st.data())
def test_decoder_round_trip_under_any_split(messages: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(m) for m in messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    decoder = VpcdDecoder()
    out: list[VpcdMessage] = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        out += decoder.feed(stream[prev:cut])
        prev = cut
    assert decoder.pending == 0
    decoded = [
        bytes((m.control,))
        if m.control is not None
        else (bytes((m.unknown,)) if m.unknown is not None else m.apdu)
        for m in out
    ]
    assert decoded == messages


@settings(max_examples=200)
@given(st.binary(max_size=2000))
def test_decoder_never_raises_on_garbage(garbage: bytes) -> None:
    decoder = VpcdDecoder()
    for m in decoder.feed(garbage):
        assert m.control is not None or m.unknown is not None or len(m.apdu) >= 2
    assert decoder.pending <= len(garbage)


def test_decoder_message_kinds() -> None:
    d = VpcdDecoder()
    msgs = d.feed(b"\x00\x01\x00\x00\x01\x01\x00\x01\x02\x00\x01\x04\x00\x01\x07\x00\x00")
    assert [m.control for m in msgs] == [Control.OFF, Control.ON, Control.RESET, Control.ATR, None]
    assert msgs[-1].unknown == 7
    assert d.feed(b"\x00\x04\x00\xa4\x04") == []  # incomplete APDU kept
    assert d.feed(b"\x00") == [VpcdMessage(apdu=b"\x00\xa4\x04\x00")]


def test_encode_frame_limits() -> None:
    assert encode_frame(b"\x01") == b"\x00\x01\x01"
    assert encode_frame(bytes(0xFFFF))[:2] == b"\xff\xff"
    for bad in (b"", bytes(0x10000)):
        try:
            encode_frame(bad)
        except ValueError:
            continue
        raise AssertionError("encode_frame accepted an unframeable payload")


def test_answer_table() -> None:
    """Every message kind × device behaviour: the reply vpcd expects (or none)."""
    dev = Device()
    assert answer(dev, VpcdMessage(control=Control.ATR)) == encode_frame(ATR)
    assert answer(dev, VpcdMessage(control=Control.ON)) is None
    assert answer(dev, VpcdMessage(control=Control.RESET)) is None
    assert answer(dev, VpcdMessage(control=Control.OFF)) is None
    assert answer(dev, VpcdMessage(unknown=9)) is None
    assert answer(dev, VpcdMessage(apdu=b"\x00\xb0")) == encode_frame(b"\xb0\x00\x90\x00")
    assert dev.log == ["on", "on", "off", "00b0"]  # the ATR poll never touches the session
    assert answer(Device(broken=True), VpcdMessage(apdu=b"\x00\xb0")) == encode_frame(b"\x6f\x00")
    assert answer(Device(reply=b"\x90"), VpcdMessage(apdu=b"\x00\xb0")) == encode_frame(b"\x6f\x00")


# ------------------------------------------------------------------ the asyncio shell
class FakeVpcd:
    """The vpcd driver side: accepts one card connection at a time."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0
        self.conns: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )

    async def start(self, port: int = 0) -> None:
        async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await self.conns.put((r, w))

        self.server = await asyncio.start_server(on_conn, "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None


async def _request(w: asyncio.StreamWriter, r: asyncio.StreamReader, payload: bytes) -> bytes:
    w.write(encode_frame(payload))
    await w.drain()
    size = int.from_bytes(await r.readexactly(2), "big")
    return await r.readexactly(size)


async def test_bridge_speaks_vpcd() -> None:
    vpcd = FakeVpcd()
    await vpcd.start()
    dev = Device()
    bridge = VpcdBridge(dev, "127.0.0.1", vpcd.port, reconnect=False)
    try:
        await bridge.insert()
        assert bridge.state is BridgeState.INSERTED
        async with asyncio.timeout(5):
            r, w = await vpcd.conns.get()
            assert await _request(w, r, b"\x04") == ATR
            w.write(encode_frame(b"\x01") + b"\x00\x01\x09")  # power on, then an unknown byte
            assert await _request(w, r, b"\x00\xca\x01\x02") == b"\x02\x01\xca\x00\x90\x00"
            # garbage cannot crash it: a zero frame, then the connection still answers
            w.write(b"\x00\x00")
            assert await _request(w, r, b"\x04") == ATR
        assert dev.log[0] == "on"
        await bridge.remove()
        assert bridge.state is BridgeState.REMOVED
        async with asyncio.timeout(5):
            assert await r.read() == b""  # pulled: vpcd sees EOF
        assert dev.log[-1] == "off"
        w.close()
    finally:
        await bridge.remove()
        await vpcd.stop()


async def test_bridge_reconnects_when_vpcd_comes_back_and_swaps() -> None:
    vpcd = FakeVpcd()
    await vpcd.start()
    port = vpcd.port
    bridge = VpcdBridge(Device(), "127.0.0.1", port, reconnect=True, backoff_max=0.2)
    try:
        await bridge.insert()
        async with asyncio.timeout(5):
            _, w = await vpcd.conns.get()
        # pcscd stops: the listening socket and the connection go away
        await vpcd.stop()
        w.close()
        async with asyncio.timeout(5):
            while bridge.state is BridgeState.INSERTED:  # noqa: ASYNC110 - observing a state
                await asyncio.sleep(0.02)
        assert bridge.state is BridgeState.CONNECTING
        await vpcd.start(port)
        async with asyncio.timeout(5):
            r, w = await vpcd.conns.get()
            assert await _request(w, r, b"\x04") == ATR
        assert bridge.connections == 2
        other = Device(reply=b"\x63\xc3")
        await bridge.swap(other)
        async with asyncio.timeout(5):
            assert await r.read() == b""
            r2, w2 = await vpcd.conns.get()
            assert await _request(w2, r2, b"\x00\x20\x00\x00") == b"\x63\xc3"
        w.close()
        w2.close()
    finally:
        await bridge.remove()
        await vpcd.stop()


async def test_bridge_without_reconnect_gives_up_when_nobody_listens() -> None:
    vpcd = FakeVpcd()
    await vpcd.start()
    port = vpcd.port
    await vpcd.stop()
    bridge = VpcdBridge(Device(), "127.0.0.1", port, reconnect=False)
    await bridge.insert(wait=False)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(2):
            while bridge.state is not BridgeState.REMOVED:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
    assert bridge.state is BridgeState.REMOVED
    await bridge.remove()
