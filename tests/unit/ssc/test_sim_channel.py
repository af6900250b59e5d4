"""SimChannel: power-on, counting, latency and every fault of FaultPlan (agent/sim/channel.py)."""

from __future__ import annotations

import asyncio

import pytest

from agent.card.apdu import CommandApdu, ResponseApdu
from agent.errors import CardProtocolError, CardRemovedError, LocalProtocolError
from agent.sim.channel import FaultPlan, Latency, SimChannel

ATR = bytes.fromhex("3B0200")


class CounterDevice:
    """A minimal SimDevice: answers its counter value; counts APDUs and power cycles."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self.power_ons = 0
        self.power_offs = 0

    @property
    def atr(self) -> bytes:
        return ATR

    def power_on(self) -> bytes:
        self.power_ons += 1
        return ATR

    def power_off(self) -> None:
        self.power_offs += 1

    def process(self, apdu: bytes) -> bytes:
        self.seen.append(apdu)
        return bytes((len(self.seen),)) + b"\x90\x00"


CMD = CommandApdu(0x00, 0x84, 0x00, 0x00, b"", 4)


async def test_connect_powers_on_and_transmit_round_trips() -> None:
    dev = CounterDevice()
    ch = SimChannel(dev)
    assert ch.atr is None
    assert await ch.connect() == ATR
    assert dev.power_ons == 1
    resp = await ch.transmit(CMD)
    assert resp == ResponseApdu(b"\x01", 0x9000)
    assert dev.seen == [CMD.to_bytes()]
    assert ch.apdu_count == 1
    assert ch.processed_count == 1


async def test_transmit_connects_implicitly_once() -> None:
    dev = CounterDevice()
    ch = SimChannel(dev)
    await ch.transmit(CMD)
    await ch.transmit(CMD)
    assert dev.power_ons == 1
    assert ch.atr == ATR


async def test_disconnect_powers_off_and_next_use_resets() -> None:
    dev = CounterDevice()
    ch = SimChannel(dev)
    await ch.transmit(CMD)
    await ch.disconnect()
    assert dev.power_offs == 1
    assert not ch.connected
    await ch.transmit(CMD)
    assert dev.power_ons == 2


@pytest.mark.parametrize("processed", [False, True])
async def test_pull_at_k_raises_on_k_and_after(processed: bool) -> None:
    dev = CounterDevice()
    ch = SimChannel(dev, faults=FaultPlan().pull(2, processed=processed))
    await ch.transmit(CMD)
    await ch.transmit(CMD)
    with pytest.raises(CardRemovedError):
        await ch.transmit(CMD)
    # the card saw APDU #2 only when pulled after processing it
    assert len(dev.seen) == (3 if processed else 2)
    assert dev.power_offs == 1  # power lost with the card
    for _ in range(3):
        with pytest.raises(CardRemovedError):
            await ch.transmit(CMD)
    assert len(dev.seen) == (3 if processed else 2)
    assert ch.apdu_count == 6
    assert not ch.present
    with pytest.raises(CardRemovedError):
        await ch.connect()


async def test_reinsert_brings_the_card_back_with_a_new_plan() -> None:
    dev = CounterDevice()
    ch = SimChannel(dev, faults=FaultPlan().pull(0))
    with pytest.raises(CardRemovedError):
        await ch.transmit(CMD)
    ch.reinsert(FaultPlan())
    assert (await ch.transmit(CMD)).ok
    assert dev.power_ons == 2  # reinsertion means a fresh cold reset


async def test_manual_pull() -> None:
    dev = CounterDevice()
    ch = SimChannel(dev)
    await ch.transmit(CMD)
    ch.pull()
    with pytest.raises(CardRemovedError):
        await ch.transmit(CMD)
    assert dev.power_offs == 1


@pytest.mark.parametrize("processed", [False, True])
async def test_forced_sw(processed: bool) -> None:
    dev = CounterDevice()
    ch = SimChannel(dev, faults=FaultPlan().force_sw(1, 0x6581, processed=processed))
    assert (await ch.transmit(CMD)).ok
    resp = await ch.transmit(CMD)
    assert resp == ResponseApdu(b"", 0x6581)
    assert len(dev.seen) == (2 if processed else 1)
    assert (await ch.transmit(CMD)).ok  # only APDU #1 is affected


async def test_garbage_short_raises_protocol_error_long_parses() -> None:
    dev = CounterDevice()
    plan = FaultPlan().garbage(0, b"\x90").garbage(1, b"\xde\xad\xbe\xef")
    ch = SimChannel(dev, faults=plan)
    with pytest.raises(CardProtocolError):
        await ch.transmit(CMD)
    assert await ch.transmit(CMD) == ResponseApdu(b"\xde\xad", 0xBEEF)
    assert len(dev.seen) == 2  # garbage defaults to "the card did it, the line garbled it"


async def test_garbage_not_processed() -> None:
    dev = CounterDevice()
    ch = SimChannel(dev, faults=FaultPlan().garbage(0, b"", processed=False))
    with pytest.raises(CardProtocolError):
        await ch.transmit(CMD)
    assert dev.seen == []


def test_fault_plan_is_immutable_and_validated() -> None:
    base = FaultPlan()
    pulled = base.pull(3, processed=True)
    assert base.pull_at is None
    assert (pulled.pull_at, pulled.pull_processed) == (3, True)
    forced = pulled.force_sw(1, 0x6988)
    assert 1 not in pulled.responses
    assert forced.responses[1].raw == b"\x69\x88"
    with pytest.raises(TypeError):
        forced.responses[2] = forced.responses[1]  # type: ignore[index]
    for bad in (-1, True, 1.5):
        with pytest.raises(LocalProtocolError):
            base.pull(bad)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        base.force_sw(0, 0x10000)


def test_latency_model() -> None:
    lat = Latency(base_s=0.001, per_byte_s=0.0001)
    assert lat.delay(10) == pytest.approx(0.002)
    with pytest.raises(LocalProtocolError):
        Latency(base_s=-1)


async def test_latency_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(delay: float) -> None:
        slept.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    ch = SimChannel(CounterDevice(), latency=Latency(base_s=0.5, per_byte_s=0.25))
    await ch.transmit(CMD)
    # 5 command bytes + 3 response bytes
    assert slept == [pytest.approx(0.5 + 0.25 * 8)]
    slept.clear()
    await SimChannel(CounterDevice()).transmit(CMD)
    assert slept == []
