"""``ssc-agent sim up`` as real hardware: pcscd sees the card and PSAM, tools talk to them, the
control channel inserts, removes and swaps cards, printer faults reach the serial driver, and
the state survives restarts and crashes (DESIGN §7, §8)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from agent.card.apdu import CommandApdu
from agent.drivers.escpos import Receipt
from agent.drivers.pcsc import CardEvent, PcscReader
from agent.drivers.printer import SerialPrinter
from agent.sim.card import SSSE_AID
from agent.sim.store import CardStore
from agent.testing.pcscd import SimUpProcess
from tests.integration.pcscd import PcscdInstance

pytestmark = pytest.mark.pcsc

READER0 = "Virtual PCD 00 00"
READER1 = "Virtual PCD 00 01"
SELECT_SSSE = "00A404000F" + SSSE_AID.hex().upper()


async def _wait_empty() -> None:
    for name in (READER0, READER1):
        async with PcscReader(name) as reader:
            await reader.wait_for_removal(timeout=10)


@pytest.fixture
async def sim_up(pcscd: PcscdInstance, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Factory ``sim_up(state_dir=None, printer=True) -> SimUpProcess`` (started); all stopped
    at teardown, and the readers seen empty again."""
    made: list[SimUpProcess] = []

    def start(state_dir: Path | None = None, *, printer: bool = True) -> SimUpProcess:
        proc = SimUpProcess(state_dir or tmp_path / "sim", pcscd, printer=printer)  # type: ignore[arg-type]
        made.append(proc)
        proc.start()
        return proc

    yield start
    for proc in made:
        await asyncio.to_thread(proc.stop)
    await _wait_empty()


def ssc(env: dict[str, str], *argv: str, timeout: float = 40) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def ctl(env: dict[str, str], state_dir: Path, *argv: str) -> dict[str, Any]:
    done = ssc(env, "sim", *argv, "--state-dir", str(state_dir))
    assert done.returncode == 0, (done.stdout, done.stderr)
    obj = json.loads(done.stdout)
    assert isinstance(obj, dict)
    return obj


async def test_up_prints_one_json_line_and_exits_cleanly(
    pcscd: PcscdInstance, sim_up: Callable[..., SimUpProcess], tmp_path: Path
) -> None:
    proc = sim_up()
    state = tmp_path / "sim"
    assert set(proc.info) == {"card_reader", "psam_reader", "printer", "control"}
    assert proc.info["card_reader"] == READER0
    assert proc.info["psam_reader"] == READER1
    assert proc.info["control"] == str(state / "control.sock")
    assert (state / "printer").readlink() == Path(str(proc.info["printer"]))
    status = ctl(pcscd.env, state, "status")
    assert status["card_reader"]["bridge"] == "inserted"
    assert status["psam_reader"]["terminal_number"] == "440300907950"
    assert await asyncio.to_thread(proc.stop) == 0
    assert not (state / "control.sock").exists()
    assert not (state / "printer").exists()


async def test_second_up_on_same_state_dir_is_refused(
    pcscd: PcscdInstance, sim_up: Callable[..., SimUpProcess], tmp_path: Path
) -> None:
    sim_up()
    done = ssc(pcscd.env, "sim", "up", "--json", "--state-dir", str(tmp_path / "sim"),
               "--vpcd-port", str(pcscd.port))  # fmt: skip
    assert done.returncode == 1
    assert json.loads(done.stdout)["error"]["code"] == "sim_running"


def test_control_without_sim_up_says_not_running(tmp_path: Path) -> None:
    done = ssc(dict(os.environ), "sim", "status", "--state-dir", str(tmp_path))
    assert done.returncode == 1
    assert json.loads(done.stdout)["error"]["code"] == "sim_not_running"


async def test_opensc_tool_sees_atr_and_selects_ssse(
    pcscd: PcscdInstance, sim_up: Callable[..., SimUpProcess], tmp_path: Path
) -> None:
    sim_up()
    card = CardStore(tmp_path / "sim").load_current()
    assert card is not None
    listing = ssc_tool(pcscd, "opensc-tool", "--list-readers")
    index = next(
        line.split()[0] for line in listing.splitlines() if line.rstrip().endswith(READER0)
    )
    atr = ssc_tool(pcscd, "opensc-tool", "--reader", index, "--atr")
    assert card.atr.hex(":") in atr.lower()
    apdu = ":".join(re.findall("..", SELECT_SSSE + "00"))
    out = ssc_tool(pcscd, "opensc-tool", "--reader", index, "--card-driver", "default",
                   "--send-apdu", apdu)  # fmt: skip
    # T=0: the FCI waits behind 61xx (GET RESPONSE is the host's job); either way, selected
    assert re.search(r"SW1=0x(90|61), SW2=0x", out), out
    scan = ssc_tool(pcscd, "pcsc_scan", "-r")
    assert READER0 in scan
    assert READER1 in scan


def ssc_tool(pcscd: PcscdInstance, *argv: str) -> str:
    done = subprocess.run(
        argv, capture_output=True, text=True, env=pcscd.env, timeout=30, check=False
    )
    assert done.returncode == 0, (argv, done.stdout, done.stderr)
    return done.stdout + done.stderr


async def test_remove_insert_swap_are_presence_events(
    pcscd: PcscdInstance, sim_up: Callable[..., SimUpProcess], tmp_path: Path
) -> None:
    state = tmp_path / "sim"
    sim_up()
    first = CardStore(state).load_current()
    assert first is not None
    events: list[CardEvent] = []
    async with PcscReader(READER0) as reader:

        async def collect() -> None:
            async for ev in reader.events():
                events.append(ev)

        task = asyncio.create_task(collect())
        try:
            await _until(lambda: events[:1] == [CardEvent("inserted", READER0, first.atr)])
            removed = await asyncio.to_thread(ctl, pcscd.env, state, "card", "remove")
            assert removed == {"removed": first.card_id_code.hex().upper()}
            await _until(lambda: len(events) >= 2)
            inserted = await asyncio.to_thread(ctl, pcscd.env, state, "card", "insert")
            assert inserted["key"] == first.card_id_code.hex().upper()
            await _until(lambda: len(events) >= 3)
            issued = await asyncio.to_thread(
                ctl, pcscd.env, state, "card", "issue", "--algorithm", "des", "--seed", "5"
            )
            assert not issued["in_reader"]
            swapped = await asyncio.to_thread(ctl, pcscd.env, state, "card", "swap", issued["key"])
            assert swapped["in_reader"]
            await _until(lambda: len(events) >= 5)
        finally:
            task.cancel()
    second = CardStore(state).load(issued["key"])
    assert [(e.kind, e.atr) for e in events] == [
        ("inserted", first.atr),
        ("removed", b""),
        ("inserted", first.atr),
        ("removed", b""),
        ("inserted", second.atr),
    ]
    listed = ctl(pcscd.env, state, "card", "list")["cards"]
    assert {c["key"]: c["in_reader"] for c in listed} == {
        first.card_id_code.hex().upper(): False,
        issued["key"]: True,
    }
    assert "ssn" not in json.dumps(listed)
    assert first.name not in json.dumps(listed)


async def _until(cond: Callable[[], bool], within: float = 10) -> None:
    async with asyncio.timeout(within):
        while not cond():  # noqa: ASYNC110 - the condition is a plain list, polled briefly
            await asyncio.sleep(0.05)


async def test_printer_fault_paper_out_means_not_printed(
    pcscd: PcscdInstance, sim_up: Callable[..., SimUpProcess], tmp_path: Path
) -> None:
    state = tmp_path / "sim"
    sim_up()
    receipt = Receipt().line("社保卡业务回执").line("业务: 挂失").cut()
    async with SerialPrinter(f"serial://{state / 'printer'}", print_timeout=5) as printer:
        ok = await printer.print_receipt(receipt)
        assert (ok.printed, ok.reason) == (True, None)
        faulted = await asyncio.to_thread(ctl, pcscd.env, state, "printer", "fault", "paper_out")
        assert faulted["state"]["paper_out"] is True
        result = await printer.print_receipt(receipt)
        assert (result.printed, result.reason) == (False, "paper_end")
        await asyncio.to_thread(ctl, pcscd.env, state, "printer", "fault", "clear")
        # paper runs out in the middle of the next receipt
        await asyncio.to_thread(
            ctl, pcscd.env, state, "printer", "fault", "paper_out", "--after-bytes", "10"
        )
        mid = await printer.print_receipt(receipt)
        assert (mid.printed, mid.reason) == (False, "paper_end")
    status = ctl(pcscd.env, state, "status")
    assert status["printer"]["receipts"] >= 1


async def test_state_persists_after_apdu_batch_even_on_crash(
    pcscd: PcscdInstance, sim_up: Callable[..., SimUpProcess], tmp_path: Path
) -> None:
    state = tmp_path / "sim"
    proc = sim_up()
    verify_wrong = CommandApdu(0x00, 0x20, 0x00, 0x00, bytes.fromhex("999999FF"))
    async with PcscReader(READER0) as reader:
        await reader.wait_for_card(timeout=10)
        async with reader.session() as channel:
            sel = await channel.transmit(CommandApdu.from_bytes(bytes.fromhex(SELECT_SSSE)))
            assert sel.sw >> 8 in (0x90, 0x61)
            wrong = await channel.transmit(verify_wrong)
            assert wrong.sw == 0x63C5
    await asyncio.sleep(0.5)  # the batch ends; the save follows
    await asyncio.to_thread(proc.kill)  # no clean shutdown
    card = CardStore(state).load_current()
    assert card is not None
    assert card.pin_tries_left == 5
    sim_up()  # restarted on the same state: the same card, with its counter
    async with PcscReader(READER0) as reader:
        await reader.wait_for_card(timeout=10)
        async with reader.session() as channel:
            await channel.transmit(CommandApdu.from_bytes(bytes.fromhex(SELECT_SSSE)))
            tries = await channel.transmit(CommandApdu(0x00, 0x20, 0x00, 0x00))
            assert tries.sw == 0x63C5


async def test_a_fast_reader_runs_on_the_loop_thread_and_a_pull_is_still_typed(
    pcscd: PcscdInstance,
    sim_up: Callable[..., SimUpProcess],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The card served by another process (as in the field): once its APDUs prove fast they
    are sent from the event loop's own thread, with no thread hand-off; pulling the card then
    still ends the sequence with the typed removal, promptly, and the loop kept running."""
    from agent.drivers import pcsc
    from agent.errors import CardRemovedError

    sim_up(printer=False)
    callers: list[str] = []
    real = pcsc.scard.SCardTransmit

    def recording(*args: Any) -> Any:
        callers.append(threading.current_thread().name)
        return real(*args)

    monkeypatch.setattr(pcsc.scard, "SCardTransmit", recording)
    pin_tries = CommandApdu.from_bytes(bytes.fromhex("00200000"))
    async with PcscReader(READER0) as reader:
        await reader.wait_for_card(timeout=10)
        async with reader.session() as channel:
            await channel.transmit(CommandApdu.from_bytes(bytes.fromhex(SELECT_SSSE)))
            for _ in range(30):
                assert (await channel.transmit(pin_tries)).sw >> 8 == 0x63
            loop_thread = threading.current_thread().name
            assert callers[0] != loop_thread  # a reader starts on its worker thread
            assert callers[-1] == loop_thread  # and moved to the loop once proven fast

            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.001)

            async def until_pulled() -> BaseException:
                try:
                    while True:
                        await channel.transmit(pin_tries)
                except CardRemovedError as exc:
                    return exc

            tick_task = asyncio.create_task(ticker())
            pull = asyncio.create_task(
                asyncio.to_thread(ctl, pcscd.env, tmp_path / "sim", "card", "remove")
            )
            try:
                err = await asyncio.wait_for(until_pulled(), 15)
            finally:
                tick_task.cancel()
            await pull
            assert isinstance(err, CardRemovedError)
            assert ticks > 10  # other tasks ran between the APDUs on the loop thread
