"""agent.tx.read.read_card: the combined read, its JSON contract, and faults at every APDU."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.errors import AgentError, CardRemovedError
from agent.profile import CardProfile
from agent.psam.module import SecurityModule
from agent.sim.card import VirtualSscCard
from agent.sim.channel import FaultPlan, SimChannel
from agent.sim.factory import CardFactory
from agent.tx.read import CardReport, read_card

MakeCard = Callable[..., VirtualSscCard]
KEYS = {
    "card_id_code",
    "card_number",
    "card_type",
    "spec_version",
    "issue_date",
    "expiry_date",
    "area_code",
    "algorithm",
    "state",
    "pin_tries_left",
    "holder",
    "bank",
}


async def read(
    card: VirtualSscCard, profile: CardProfile, sam: SecurityModule | None
) -> CardReport:
    return await read_card(SimChannel(card), profile, sam)


async def test_read_card_contract_masked(
    card: VirtualSscCard, profile: CardProfile, sam: SecurityModule
) -> None:
    report = await read(card, profile, sam)
    out = report.to_json()
    assert set(out) == KEYS
    assert out["card_id_code"] == card.card_id_code.hex().upper()
    assert re.fullmatch(r"[0-9A-F]{32}", out["card_id_code"])
    assert out["card_number"] == card.card_number
    assert out["spec_version"] == "3.00"
    assert out["area_code"] == card.area_code
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", out["issue_date"])
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", out["expiry_date"])
    assert out["algorithm"] == card.algorithm.value
    assert out["state"] == "active"
    assert out["pin_tries_left"] == profile.pin_max_tries
    holder = out["holder"]
    assert set(holder) == {"ssn", "name", "gender", "birth_date"}
    assert holder["ssn"] != card.ssn
    assert holder["ssn"][:6] == card.ssn[:6]
    assert holder["ssn"][-4:] == card.ssn[-4:]
    assert "*" * 8 in holder["ssn"]
    assert holder["name"] == card.name[0] + "*" * (len(card.name) - 1)
    assert holder["gender"] in ("male", "female")
    bank = out["bank"]
    assert bank is not None
    assert set(bank) == {"pan", "expiry"}
    assert "*" in bank["pan"]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", bank["expiry"])
    text = repr(out)
    assert card.ssn not in text
    assert card.name not in text


async def test_read_card_show_pii(
    card: VirtualSscCard, profile: CardProfile, sam: SecurityModule
) -> None:
    out = (await read(card, profile, sam)).to_json(show_pii=True)
    assert out["holder"]["ssn"] == card.ssn
    assert out["holder"]["name"] == card.name
    assert "*" not in out["bank"]["pan"]
    assert out["bank"]["pan"].isdigit()


async def test_read_card_without_bank_app(profile: CardProfile, sam: SecurityModule) -> None:
    card = CardFactory(profile, seed=3, with_bank=False).issue(algorithm="sm4")
    out = (await read(card, profile, sam)).to_json()
    assert out["bank"] is None
    assert out["algorithm"] == "sm4"
    assert out["holder"] is not None


async def test_read_card_without_security_module(
    card: VirtualSscCard, profile: CardProfile
) -> None:
    out = (await read(card, profile, None)).to_json()
    assert out["card_id_code"] == card.card_id_code.hex().upper()
    assert out["holder"] is None  # a 3.0 card's holder data needs external authentication


@pytest.mark.parametrize(
    ("flags", "state", "has_alg"),
    [
        ({"temp_locked": True}, "temp_locked", True),
        ({"perm_locked": True}, "perm_locked", False),
        ({"card_blocked": True}, "card_blocked", False),
    ],
)
async def test_read_locked_card(
    flags: dict[str, bool],
    state: str,
    has_alg: bool,
    card: VirtualSscCard,
    profile: CardProfile,
    sam: SecurityModule,
) -> None:
    st_ = card.to_state()
    st_.update(flags)
    locked = VirtualSscCard.from_state(profile, st_)
    out = (await read(locked, profile, sam)).to_json()
    assert out["state"] == state
    assert out["card_id_code"] is None
    assert out["holder"] is None
    assert out["pin_tries_left"] is None
    assert (out["algorithm"] == card.algorithm.value) == has_alg
    assert (out["bank"] is None) == (state == "card_blocked")


async def test_read_not_activated(
    make_card: MakeCard, profile: CardProfile, sam: SecurityModule
) -> None:
    out = (await read(make_card(state="not_activated"), profile, sam)).to_json()
    assert out["state"] == "not_activated"
    assert out["holder"] is not None


async def test_read_changes_nothing(
    card: VirtualSscCard, profile: CardProfile, sam: SecurityModule
) -> None:
    before = card.to_state()
    await read(card, profile, sam)
    assert card.to_state() == before


# --- card pulled at every APDU -------------------------------------------------------------------
@pytest.mark.parametrize("processed", [False, True], ids=["before", "after"])
async def test_card_pulled_at_every_apdu(
    processed: bool, make_card: MakeCard, profile: CardProfile, sam: SecurityModule
) -> None:
    probe = SimChannel(make_card())
    await read_card(probe, profile, sam)
    total = probe.apdu_count
    assert total > 20  # SSSE, external auth, state, bank application
    for k in range(total):
        card = make_card()
        channel = SimChannel(card, faults=FaultPlan().pull(k, processed=processed))
        with pytest.raises(CardRemovedError):
            await read_card(channel, profile, sam)
        assert channel.apdu_count == k + 1  # nothing is sent after the pull is seen


# --- hostile answers -----------------------------------------------------------------------------
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(index=st.integers(0, 40), raw=st.binary(max_size=40), processed=st.booleans())
async def test_garbage_at_any_apdu_gives_agent_errors_only(
    index: int, raw: bytes, processed: bool, profile: CardProfile, sam: SecurityModule
) -> None:
    card = CardFactory(profile, seed=5).issue(algorithm="des")
    channel = SimChannel(card, faults=FaultPlan().garbage(index, raw, processed=processed))
    with contextlib.suppress(AgentError):
        await read_card(channel, profile, sam)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(index=st.integers(0, 40), sw=st.integers(0, 0xFFFF))
async def test_forced_status_word_at_any_apdu(
    index: int, sw: int, profile: CardProfile, sam: SecurityModule
) -> None:
    card = CardFactory(profile, seed=5).issue(algorithm="sm4")
    channel = SimChannel(card, faults=FaultPlan().force_sw(index, sw))
    with contextlib.suppress(AgentError):
        await read_card(channel, profile, sam)
