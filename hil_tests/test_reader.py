"""Reader: enumeration, ATR parse and known-ATR lookup, card insert/remove events."""

from __future__ import annotations

import fnmatch
import time
from typing import Any

import pytest

from agent.card.atr import parse_atr
from agent.hil.atrs import load_table, lookup
from hil_tests.conftest import HERE, HilEnv, HilFailure, ensure_card

pytestmark = pytest.mark.reader


async def test_reader_enumeration(hil: HilEnv) -> None:
    if not (hil.reader or hil.psam):
        pytest.skip("no reader configured (--reader/--psam, or --sim)")
    from agent.drivers.pcsc import PcscSystem

    async with PcscSystem() as system:
        readers = await system.list_readers()
    for role, glob in (("card reader", hil.reader), ("PSAM reader", hil.psam)):
        if glob is None:
            continue
        name = next((r for r in readers if fnmatch.fnmatchcase(r, glob)), None)
        if name is None:
            raise HilFailure(
                f"no reader matches the {role} glob {glob!r}; pcscd sees: "
                f"{', '.join(map(repr, readers)) or 'none'}",
                "plug the reader in (USB), check `pcsc_scan`, or fix --reader/--psam",
            )
        hil.run.add_inventory(f"{role} name", name)


async def test_atr_known(hil: HilEnv, card_reader: Any) -> None:
    atr = await ensure_card(hil, card_reader)
    parsed = parse_atr(atr)  # AtrError fails the test: a malformed ATR
    hil.run.add_inventory("card ATR", atr.hex().upper())
    hil.run.add_inventory("card ATR protocols", ", ".join(f"T={t}" for t in parsed.protocols))
    entry = lookup(load_table(HERE / "known_atrs.toml"), atr)
    if entry is None:
        raise HilFailure(
            f"ATR {atr.hex().upper()} is not in the known-ATR table",
            "check the card with `ssc-agent card read`, then add its ATR pattern to "
            "hil_tests/known_atrs.toml",
        )
    hil.run.add_inventory("card ATR is", f"{entry.name} [{entry.kind}]")
    if hil.psam:
        from agent.drivers.pcsc import PcscReader

        async with PcscReader(hil.psam) as psam_reader:
            if await psam_reader.card_present():
                patr = await psam_reader.wait_for_card(timeout=5)
                parse_atr(patr)
                known = lookup(load_table(HERE / "known_atrs.toml"), patr)
                hil.run.add_inventory("PSAM ATR", patr.hex().upper())
                hil.run.add_inventory("PSAM ATR is", known.name if known else "unknown")


async def test_insert_remove_events(hil: HilEnv, card_reader: Any) -> None:
    await ensure_card(hil, card_reader)
    sim = hil.sim

    async def pull() -> None:
        await hil.control("card.remove")

    async def push() -> None:
        await hil.control("card.insert", {"key": sim.card_key} if sim.card_key else {})

    t0 = time.perf_counter()
    await hil.act(
        "remove the card from the reader now",
        lambda: card_reader.wait_for_removal(),
        sim=pull if sim is not None else None,
    )
    removed_s = time.perf_counter() - t0
    events = card_reader.events()
    try:
        t0 = time.perf_counter()

        async def inserted() -> Any:
            while True:
                ev = await anext(events)
                if ev.kind == "inserted":
                    return ev

        ev = await hil.act(
            "insert the test card again now",
            inserted,
            sim=push if sim is not None else None,
        )
        inserted_s = time.perf_counter() - t0
    finally:
        await events.aclose()
    assert ev.atr, "an insertion event carries the ATR"
    parse_atr(ev.atr)
    hil.run.add_timing("card removal seen after", f"{removed_s * 1000:.0f} ms")
    hil.run.add_timing("card insertion event after", f"{inserted_s * 1000:.0f} ms")
