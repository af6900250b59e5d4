"""agent.hil: the known-ATR table, the test-card guard, prompts and the report."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import ConfigError, NotATestCardError, OperatorActionError
from agent.hil.atrs import load_table, lookup, parse_pattern
from agent.hil.guard import TestCardGuard, admit_card, normalize_card_id
from agent.hil.prompts import Prompter
from agent.hil.report import (
    HilRun,
    TestResult,
    latency_stats,
    percentile,
    render_markdown,
    summary_table,
)
from agent.profile import load_profile
from agent.sim.channel import SimChannel
from agent.sim.factory import CardFactory
from agent.sim.store import card_key
from agent.ssc import commands as c
from agent.ssc.app import CardState, SscApplication

TABLE = Path(__file__).resolve().parents[3] / "hil_tests" / "known_atrs.toml"
PROFILE = load_profile("default")


# ---- known ATRs ---------------------------------------------------------------------------
def test_shipped_table_knows_the_simulators() -> None:
    from agent.sim.psam import ATR as PSAM_ATR

    table = load_table(TABLE)
    card = CardFactory(PROFILE, seed=3).issue()
    assert lookup(table, card.atr) is not None
    assert lookup(table, card.atr).kind == "ssc"  # type: ignore[union-attr]
    assert lookup(table, PSAM_ATR).kind == "psam"  # type: ignore[union-attr]
    assert lookup(table, card.atr + b"\x00") is None  # whole ATR only
    assert lookup(table, bytes.fromhex("3B8F8001")) is None


def test_pattern_wildcards() -> None:
    assert parse_pattern("3B 6D .. 0a") == (0x3B, 0x6D, None, 0x0A)
    for bad in ("", "3", "3G", "3B 6", "..."):
        with pytest.raises(ConfigError):
            parse_pattern(bad)


@settings(max_examples=200)
@given(st.text(max_size=40))
def test_pattern_hostile_text_raises_config_error_only(text: str) -> None:
    try:
        out = parse_pattern(text)
    except ConfigError:
        return
    assert out
    assert all(b is None or 0 <= b <= 255 for b in out)


def test_table_errors_name_the_entry(tmp_path: Path) -> None:
    bad = tmp_path / "t.toml"
    bad.write_text('[[atr]]\npattern = "3B"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="entry 1"):
        load_table(bad)
    bad.write_text('[[atr]]\npattern = "3B"\nname = "x"\nkind = "toaster"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="kind"):
        load_table(bad)
    bad.write_text("atr = [", encoding="utf-8")
    with pytest.raises(ConfigError):
        load_table(bad)


# ---- the guard ----------------------------------------------------------------------------
def test_normalize_card_id() -> None:
    assert normalize_card_id("44 02 00 d1 56 00 00 05 42 48 5e 3a 0a 5d 2f 34") == (
        "440200D15600000542485E3A0A5D2F34"
    )
    with pytest.raises(ValueError, match="32 hex"):
        normalize_card_id("4402")


async def test_guard_refuses_a_card_not_on_the_list_before_any_write() -> None:
    card = CardFactory(PROFILE, seed=1).issue()
    before = card.to_state()
    guard = TestCardGuard(SimChannel(card), ["00" * 16])
    with pytest.raises(NotATestCardError):
        await admit_card(guard, PROFILE)
    with pytest.raises(NotATestCardError):
        await guard.transmit(c.app_block(PROFILE.lock_p2_temporary).with_mac(bytes(4)))
    assert (guard.writes_sent, guard.writes_refused) == (0, 1)
    assert card.to_state() == before  # nothing reached the card


async def test_guard_lets_an_admitted_test_card_be_written() -> None:
    from agent.psam.soft import SoftSecurityModule

    card = CardFactory(PROFILE, seed=2).issue()
    guard = TestCardGuard(SimChannel(card), [card_key(card)])
    assert await admit_card(guard, PROFILE) == card_key(card).upper()
    sam = SoftSecurityModule(PROFILE, bytes.fromhex("440300000001"))
    await SscApplication(guard, PROFILE, sam).block()
    assert guard.writes_sent == 1
    assert (await SscApplication(guard, PROFILE).state()).state is CardState.TEMP_LOCKED
    # a locked test card is still admitted, by the serial bytes of its ATR
    again = TestCardGuard(guard.inner, [card_key(card)])
    assert await admit_card(again, PROFILE) == card_key(card).upper()


# ---- prompts ------------------------------------------------------------------------------
async def test_prompt_without_a_person_raises() -> None:
    p = Prompter(interactive=False, simulated=False)

    async def never() -> None:
        await asyncio.Event().wait()

    with pytest.raises(OperatorActionError) as e:
        await p.perform("insert the test card now", never)
    assert e.value.code == "no_operator"


async def test_prompt_sim_action_then_wait() -> None:
    done = asyncio.Event()
    p = Prompter(interactive=False, simulated=True, timeout=1)

    async def act() -> None:
        done.set()

    async def wait() -> str:
        await done.wait()
        return "seen"

    assert await p.perform("open the printer cover", wait, sim=act) == "seen"
    assert p.log == ["[sim] open the printer cover"]


async def test_prompt_times_out() -> None:
    said: list[str] = []
    p = Prompter(interactive=True, simulated=False, timeout=0.05, say=said.append)

    async def never() -> None:
        await asyncio.Event().wait()

    with pytest.raises(OperatorActionError) as e:
        await p.perform("remove the card", never)
    assert e.value.code == "operator_timeout"
    assert "remove the card" in said[0]


# ---- report -------------------------------------------------------------------------------
def test_percentiles() -> None:
    v = [float(i) for i in range(1, 101)]
    assert (percentile(v, 50), percentile(v, 95), percentile(v, 100)) == (50.0, 95.0, 100.0)
    s = latency_stats([0.003, 0.001, 0.002])
    assert (s["min_ms"], s["p50_ms"], s["max_ms"]) == pytest.approx((1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_report_folds_phases_and_renders_failures_with_hints() -> None:
    run = HilRun(required=("printer",))
    run.record(TestResult("t.py::a", "card", "passed", 0.1))
    run.record(TestResult("t.py::a", "card", "failed", 0.2, "boom", "reseat the card"))
    run.record(TestResult("t.py::a", "card", "passed", 0.05))
    run.record(TestResult("t.py::b", "printer", "skipped", 0.0, "no printer configured"))
    run.add_inventory("card ATR", "3B6D")
    run.add_timing("card APDU latency", "n=3")
    assert [r.outcome for r in run.results] == ["failed", "skipped"]
    assert run.results[0].duration_s == pytest.approx(0.35)
    assert not run.ok
    md = render_markdown(run)
    assert "FAILED" in md
    assert "**Fix hint:** reseat the card" in md
    assert "| card ATR | 3B6D |" in md
    assert "| card APDU latency | n=3 |" in md
    table = summary_table(run)
    assert "printer       yes" in table
    assert "HIL: FAILED" in table
