"""The PC/SC driver through the real stack: pyscard → libpcsclite → pcscd → vpcd → simulator.

DESIGN §7: readers by glob, ATR, APDU round trips, presence events, card pulled mid-sequence,
pcscd restarted while waiting, exclusive access. Every wait is bounded, so a regression fails
instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from agent.card.apdu import CommandApdu, ResponseApdu
from agent.drivers.pcsc import CardEvent, PcscReader, PcscSystem
from agent.errors import (
    CardRemovedError,
    ConfigError,
    DeviceError,
    DeviceTimeoutError,
    NoCardError,
    PcscServiceError,
    ReaderBusyError,
    ReaderUnavailableError,
)
from tests.integration.pcscd import PcscdInstance

pytestmark = pytest.mark.pcsc

READER0 = "Virtual PCD 00 00"
READER1 = "Virtual PCD 00 01"


class EchoCard:
    """A tiny SimDevice: echoes command data back with 9000; counts power cycles."""

    def __init__(self, atr: bytes = bytes.fromhex("3B8080010101"), tag: bytes = b"") -> None:
        self._atr = atr
        self.tag = tag
        self.powered = False
        self.power_ons = 0
        self.seen: list[bytes] = []

    @property
    def atr(self) -> bytes:
        return self._atr

    def power_on(self) -> bytes:
        self.powered = True
        self.power_ons += 1
        return self._atr

    def power_off(self) -> None:
        self.powered = False

    def process(self, apdu: bytes) -> bytes:
        self.seen.append(apdu)
        cmd = CommandApdu.from_bytes(apdu)
        if cmd.ins == 0xCA:  # GET DATA: who are you
            return self.tag + b"\x90\x00"
        return cmd.data + b"\x90\x00"


async def test_readers_listed_and_found_by_glob(pcscd: PcscdInstance) -> None:
    async with PcscSystem() as system:
        readers = await system.list_readers()
        assert READER0 in readers
        assert READER1 in readers
        assert await system.find("Virtual PCD * 01") == READER1
        assert await system.find("Virtual*") == READER0
        with pytest.raises(ReaderUnavailableError):
            await system.find("No Such Reader*")


async def test_atr_through_pcscd_is_the_device_atr(pcscd: PcscdInstance, bridges: Any) -> None:
    card = EchoCard(bytes.fromhex("3B6800000073C84013009000"))
    await bridges(card).insert()
    async with PcscReader("Virtual PCD * 00") as reader:
        atr = await reader.wait_for_card(timeout=10)
        assert atr == card.atr
        async with reader.session() as channel:
            assert channel.atr == card.atr
            assert channel.reader_name == READER0
            assert channel.protocol == "T=0"  # the ATR offers only T=0


async def test_apdu_round_trips_all_cases(pcscd: PcscdInstance, bridges: Any) -> None:
    card = EchoCard()
    await bridges(card).insert()
    async with PcscReader(READER0) as reader:
        await reader.wait_for_card(timeout=10)
        async with reader.session() as channel:
            assert channel.protocol == "T=1"
            commands = [
                CommandApdu(0x00, 0x20, 0x00, 0x00),  # case 1
                CommandApdu(0x00, 0xB0, 0x00, 0x00, ne=16),  # case 2
                CommandApdu(0x00, 0xD6, 0x00, 0x00, b"\x01\x02\x03"),  # case 3
                CommandApdu(0x00, 0xA4, 0x04, 0x00, bytes(range(255)), ne=256),  # case 4, max
            ]
            for cmd in commands:
                resp = await channel.transmit(cmd)
                assert resp == ResponseApdu(cmd.data, 0x9000)
            assert card.seen[-len(commands) :] == [c.to_bytes() for c in commands]


async def test_presence_events_insert_remove_swap(pcscd: PcscdInstance, bridges: Any) -> None:
    first, second = EchoCard(tag=b"A"), EchoCard(bytes.fromhex("3B8180018080"), tag=b"B")
    bridge = bridges(first)
    seen: asyncio.Queue[CardEvent] = asyncio.Queue()
    async with PcscReader(READER0) as reader:

        async def collect() -> None:
            async for ev in reader.events():
                seen.put_nowait(ev)

        task = asyncio.create_task(collect())
        try:
            await bridge.insert()
            async with asyncio.timeout(10):
                inserted = await seen.get()
            await bridge.remove()
            async with asyncio.timeout(10):
                removed = await seen.get()
            await bridge.swap(second)
            async with asyncio.timeout(10):
                swapped = await seen.get()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert (inserted.kind, inserted.atr, inserted.reader) == ("inserted", first.atr, READER0)
    assert (removed.kind, removed.atr, removed.reader) == ("removed", b"", READER0)
    assert (swapped.kind, swapped.atr) == ("inserted", second.atr)
    assert seen.empty()


async def test_wait_for_card_times_out(pcscd: PcscdInstance) -> None:
    async with PcscReader(READER1) as reader:
        with pytest.raises(DeviceTimeoutError):
            await reader.wait_for_card(timeout=0.5)
        assert not await reader.card_present()


async def test_connect_without_card_is_no_card(pcscd: PcscdInstance) -> None:
    async with PcscReader(READER1) as reader:
        with pytest.raises(NoCardError):
            await reader.connect()


async def test_unknown_reader_is_reader_unavailable(pcscd: PcscdInstance) -> None:
    async with PcscReader("Nope *") as reader:
        with pytest.raises(ReaderUnavailableError):
            await reader.connect()


async def test_card_pulled_mid_sequence_raises_card_removed(
    pcscd: PcscdInstance, bridges: Any
) -> None:
    card = EchoCard()
    bridge = bridges(card)
    await bridge.insert()
    async with PcscReader(READER0) as reader:
        await reader.wait_for_card(timeout=10)
        channel = await reader.connect()
        ok = await channel.transmit(CommandApdu(0x00, 0xA4, 0x04, 0x00, b"\xa0\x00"))
        assert ok.sw == 0x9000
        await bridge.remove()  # the citizen pulls the card
        async with asyncio.timeout(15):
            with pytest.raises(CardRemovedError):
                await channel.transmit(CommandApdu(0x00, 0xB2, 0x01, 0x04, ne=256))
            await reader.wait_for_removal(timeout=10)
        with pytest.raises(DeviceError):  # the session is over for good
            await channel.transmit(CommandApdu(0x00, 0xB2, 0x01, 0x04, ne=256))
        await channel.aclose()
        assert not card.powered


async def test_exclusive_access(pcscd: PcscdInstance, bridges: Any) -> None:
    await bridges(EchoCard()).insert()
    async with PcscReader(READER0) as a, PcscReader(READER0) as b:
        await a.wait_for_card(timeout=10)
        first = await a.connect(exclusive=True)
        with pytest.raises(ReaderBusyError):
            await b.connect(exclusive=False)
        await first.aclose()
        second = await b.connect(exclusive=True)
        assert (await second.transmit(CommandApdu(0, 0xCA, 0, 0, ne=1))).ok
        await second.aclose()


async def test_transaction_holds_a_shared_card(pcscd: PcscdInstance, bridges: Any) -> None:
    await bridges(EchoCard()).insert()
    async with PcscReader(READER0) as a, PcscReader(READER0) as b:
        await a.wait_for_card(timeout=10)
        ch_a = await a.connect(exclusive=False)
        ch_b = await b.connect(exclusive=False)
        async with ch_a.transaction():
            assert (await ch_a.transmit(CommandApdu(0, 0xCA, 0, 0, ne=1))).ok
            # pcscd holds the other session's APDU until the transaction ends
            blocked = asyncio.create_task(ch_b.transmit(CommandApdu(0, 0xCA, 0, 0, ne=1)))
            await asyncio.sleep(0.5)
            assert not blocked.done()
            assert (await ch_a.transmit(CommandApdu(0, 0xCA, 0, 0, ne=1))).ok
        async with asyncio.timeout(10):
            assert (await blocked).ok
        await ch_a.aclose()
        await ch_b.aclose()


async def test_two_readers_two_devices(pcscd: PcscdInstance, bridges: Any) -> None:
    citizen, psam = EchoCard(tag=b"C"), EchoCard(bytes.fromhex("3B8180018080"), tag=b"P")
    await bridges(citizen, 0).insert()
    await bridges(psam, 1).insert()
    async with PcscReader(READER0) as r0, PcscReader(READER1) as r1:
        assert await r0.wait_for_card(timeout=10) == citizen.atr
        assert await r1.wait_for_card(timeout=10) == psam.atr
        async with r0.session() as c0, r1.session() as c1:
            assert (await c0.transmit(CommandApdu(0, 0xCA, 0, 0, ne=1))).data == b"C"
            assert (await c1.transmit(CommandApdu(0, 0xCA, 0, 0, ne=1))).data == b"P"


async def test_pcscd_restart_while_waiting_for_a_card(
    restartable_pcscd: PcscdInstance, bridges: Any
) -> None:
    card = EchoCard()
    bridge = bridges(card, reconnect=True)
    async with PcscReader(READER0) as reader:
        waiter = asyncio.create_task(reader.wait_for_card(timeout=30))
        await asyncio.sleep(0.3)
        await asyncio.to_thread(restartable_pcscd.restart)
        await asyncio.sleep(0.3)
        assert not waiter.done()
        await bridge.insert(timeout=10)
        async with asyncio.timeout(20):
            assert await waiter == card.atr
        assert reader.service_recoveries >= 1
        async with reader.session() as channel:
            assert (await channel.transmit(CommandApdu(0, 0xA4, 4, 0, b"\x01"))).data == b"\x01"


async def test_pcscd_restart_mid_session_then_recovers(
    restartable_pcscd: PcscdInstance, bridges: Any
) -> None:
    card = EchoCard()
    bridge = bridges(card, reconnect=True)
    await bridge.insert()
    async with PcscReader(READER0) as reader:
        await reader.wait_for_card(timeout=10)
        channel = await reader.connect()
        assert (await channel.transmit(CommandApdu(0, 0xCA, 0, 0, ne=1))).ok
        await asyncio.to_thread(restartable_pcscd.restart)
        with pytest.raises((PcscServiceError, CardRemovedError)):
            await channel.transmit(CommandApdu(0, 0xCA, 0, 0, ne=1))
        await channel.aclose()
        # the bridge re-inserts the card into the new pcscd; the same reader object works
        assert await reader.wait_for_card(timeout=20) == card.atr
        async with reader.session() as again:
            assert (await again.transmit(CommandApdu(0, 0xCA, 0, 0, ne=1))).ok


async def test_list_readers_without_service_is_typed(
    restartable_pcscd: PcscdInstance,
) -> None:
    await asyncio.to_thread(restartable_pcscd.stop)
    try:
        async with PcscSystem() as system:
            with pytest.raises(PcscServiceError):
                await system.list_readers()
    finally:
        await asyncio.to_thread(restartable_pcscd.start)
    async with PcscSystem() as system:
        assert READER0 in await system.list_readers()


async def test_the_apdu_timeout_is_the_readers_own(pcscd: PcscdInstance, bridges: Any) -> None:
    """``card.apdu_timeout_s`` reaches every session of the reader (the app passes it)."""
    from agent.app import PcscCardSlot

    assert PcscCardSlot(READER0, 2.5).reader.transmit_timeout == 2.5
    card = EchoCard()
    await bridges(card).insert()
    async with PcscReader(READER0, transmit_timeout=2.5) as reader:
        await reader.wait_for_card(timeout=10)
        async with reader.session() as channel:
            assert channel.transmit_timeout == 2.5
            resp = await channel.transmit(CommandApdu(0x00, 0xD6, 0x00, 0x00, b"\x01"))
            assert resp == ResponseApdu(b"\x01", 0x9000)
    for bad in (0.0, -1.0):
        with pytest.raises(ConfigError):
            PcscReader(READER0, transmit_timeout=bad)
