"""Transactions: lock → unlock → PIN change and restore, on an allow-listed test card ONLY.

Every card-changing command passes ``agent.hil.guard.TestCardGuard``: a card that is not on
the allow-list (``--test-card``; under ``--sim`` the simulator's own card) is refused before a
single write, and ``test_non_test_card_is_refused`` shows it, reading the card before and after.
The engine is the agent's own (``agent.tx.engine.TxEngine``) over a scratch journal; central's
authorization for the unlock is granted in process for the test card (``FakeUplink``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.errors import NotATestCardError
from agent.hil.guard import TestCardGuard, admit_card
from agent.ssc import commands as c
from agent.ssc.app import CardState, SscApplication
from agent.tx.read import read_card
from hil_tests.conftest import HilEnv, HilFailure, ensure_card

pytestmark = pytest.mark.transactions

TEMP_PIN = "135790"


@contextlib.asynccontextmanager
async def _engine(hil: HilEnv, sam: Any, workdir: Path) -> AsyncIterator[Any]:
    from agent.journal.store import Journal
    from agent.psam.client import terminal_id
    from agent.tx.engine import TxEngine
    from agent.tx.machine import TABLE
    from agent.tx.ports import FakeUplink

    journal = Journal(workdir / "hil-journal.db", transitions=TABLE)  # type: ignore[arg-type]
    try:
        terminal = terminal_id(await sam.terminal_number())
        yield TxEngine(journal, sam, hil.profile, None, FakeUplink(journal, online=True), terminal)
    finally:
        journal.close()


async def test_lock_unlock_pin_cycle(
    hil: HilEnv, card: Any, psam_module: Any, tmp_path: Path
) -> None:
    guard = TestCardGuard(card, hil.test_cards)
    try:
        code = await admit_card(guard, hil.profile)
    except NotATestCardError as e:
        pytest.skip(f"{e.message} (pass --test-card ID for a card the suite may write)")
    assert guard.writes_sent == 0
    times: dict[str, float] = {}
    async with _engine(hil, psam_module, tmp_path) as engine:
        app = SscApplication(guard, hil.profile)
        before = await app.state()
        if before.state is not CardState.ACTIVE:
            raise HilFailure(
                f"test card {code} is {before.state.value}",
                "restore the test card: `ssc-agent tx unlock` / activate it first",
            )
        if before.pin_tries_left != hil.profile.pin_max_tries:
            raise HilFailure(
                f"test card {code} has {before.pin_tries_left} PIN tries left",
                "reset the test card's PIN counter before running the suite",
            )
        locked = False
        try:
            t0 = time.perf_counter()
            await engine.lock(guard)
            times["lock"] = time.perf_counter() - t0
            locked = True
            assert (await SscApplication(guard, hil.profile).state()).state is (
                CardState.TEMP_LOCKED
            )
            t0 = time.perf_counter()
            await engine.unlock(guard, card_id_code=code)
            times["unlock"] = time.perf_counter() - t0
            locked = False
            assert (await SscApplication(guard, hil.profile).state()).state is CardState.ACTIVE
            t0 = time.perf_counter()
            await engine.pin_change(guard, hil.test_pin, TEMP_PIN)
            times["PIN change"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            await engine.pin_change(guard, TEMP_PIN, hil.test_pin)
            times["PIN restore"] = time.perf_counter() - t0
        finally:
            if locked:  # leave the test card usable even when the cycle failed
                with contextlib.suppress(Exception):
                    await engine.unlock(guard, card_id_code=code)
        after = await SscApplication(guard, hil.profile).state()
        assert after.state is CardState.ACTIVE
        assert after.pin_tries_left == hil.profile.pin_max_tries
        await SscApplication(guard, hil.profile).verify_pin(hil.test_pin)  # restored PIN works
    assert guard.writes_sent >= 4
    for name, secs in times.items():
        hil.run.add_timing(f"transaction {name} (journaled, sealed)", f"{secs * 1000:.0f} ms")


async def _snapshot(channel: Any, hil: HilEnv) -> dict[str, Any]:
    report = await read_card(channel, hil.profile)
    return report.to_json()


async def test_non_test_card_is_refused(hil: HilEnv, card_reader: Any) -> None:
    sim = hil.sim
    swapped = False
    if sim is not None:
        issued = await hil.control("card.issue", {"algorithm": "sm4"})
        other = issued["key"]
        assert other.upper() not in hil.test_cards
        await hil.control("card.swap", {"key": other})
        swapped = True
    else:
        await ensure_card(hil, card_reader)
    try:
        async with card_reader.session() as channel:
            before = await _snapshot(channel, hil)
            code = before["card_id_code"]
            if code is not None and code in hil.test_cards:
                pytest.skip(
                    "the card in the reader is an allow-listed test card; insert a card that "
                    "is not one to see the refusal"
                )
            guard = TestCardGuard(channel, hil.test_cards)
            with pytest.raises(NotATestCardError) as refused:
                await admit_card(guard, hil.profile)
            # Even a flow that skipped the check cannot write: the guard stops the command.
            lock_cmd = c.app_block(hil.profile.lock_p2_temporary).with_mac(bytes(4))
            with pytest.raises(NotATestCardError):
                await guard.transmit(lock_cmd)
            assert guard.writes_sent == 0
            assert guard.writes_refused == 1
            after = await _snapshot(channel, hil)
        assert after == before, "the refused card's state changed"
        if sim is not None:
            listed = {x["key"]: x for x in (await hil.control("card.list"))["cards"]}
            assert listed[other]["state"] == "active"
        hil.run.add_inventory(
            "refused card (not allow-listed)",
            f"{code}: {refused.value.message}; state unchanged ({after['state']})",
        )
    finally:
        if swapped:
            await hil.control("card.swap", {"key": sim.card_key})
