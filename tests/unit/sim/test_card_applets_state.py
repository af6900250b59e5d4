"""Hosted applets (routing, card block), persistence round trips, hostile bytes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.errors import SimStateError
from agent.sim import card as card_module
from agent.sim.card import SSSE_AID, Lifecycle, VirtualSscCard
from agent.sim.factory import CardFactory
from tests.unit.sim._support import PROFILE, SELECT_SSSE, Terminal, make_card

PBOC_AID = bytes.fromhex("A000000333010101")


class EchoApplet:
    """A minimal real SimApplet: answers SELECT with an FCI, counts commands, 84 16 → 9000."""

    aids = (bytes.fromhex("F0010203040506"),)

    def __init__(self, count: int = 0) -> None:
        self.count = count
        self.resets = 0

    def select(self, aid: bytes) -> bytes:
        return b"\x6f\x03\x84\x01\xaa\x90\x00"

    def process(self, apdu: bytes) -> bytes:
        self.count += 1
        if apdu[:2] == b"\x84\x16":
            return b"\x90\x00"
        return bytes((self.count,)) + b"\x90\x00"

    def reset(self) -> None:
        self.resets += 1

    def to_state(self) -> dict[str, object]:
        return {"count": self.count}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> EchoApplet:
        return cls(int(state["count"]))


def _with_echo(t0: bool = False) -> tuple[VirtualSscCard, EchoApplet]:
    base = make_card()
    echo = EchoApplet()
    card = VirtualSscCard.from_state(PROFILE, base.to_state())
    card.applets = (echo,)
    card.t0 = t0
    return card, echo


def test_select_routes_to_applet_and_commands_follow() -> None:
    card, echo = _with_echo()
    t = Terminal(card)
    assert t.send("00A4040007F0010203040506") == (b"\x6f\x03\x84\x01\xaa", 0x9000)
    assert card.selected.startswith("applet:")
    assert t.send("0084000004") == (b"\x01", 0x9000)  # not the SSSE's GET CHALLENGE
    assert t.send("00B2010C00") == (b"\x02", 0x9000)
    assert t.select_ssse() == 0x9000
    assert t.sw("00200000") == 0x63C6
    assert echo.count == 2


def test_partial_name_selects_applet() -> None:
    card, _ = _with_echo()
    assert Terminal(card).sw("00A4040005F001020304") == 0x9000
    assert Terminal(card).sw("00A4040003F00102") == 0x6A82  # too short to be a partial name


def test_applet_responses_follow_t0() -> None:
    card, _ = _with_echo(t0=True)
    assert card.process(bytes.fromhex("00A4040007F0010203040506")) == b"\x61\x05"
    assert card.process(bytes.fromhex("00C0000005")) == b"\x6f\x03\x84\x01\xaa\x90\x00"
    assert card.process(bytes.fromhex("80CA9F3600")) == b"\x61\x01"
    assert card.process(bytes.fromhex("00C0000001")) == b"\x01\x90\x00"


def test_power_cycle_resets_applets_and_selection() -> None:
    card, echo = _with_echo()
    Terminal(card).sw("00A4040007F0010203040506")
    card.power_on()
    assert echo.resets == 1
    assert card.selected == "MF"


def test_ssse_card_block_blocks_every_applet() -> None:
    card, echo = _with_echo()
    t = Terminal(card)
    t.select_ssse()
    assert t.card_block() == 0x9000
    assert t.sw("00A4040007F0010203040506") == 0x6A81
    assert t.sw("0084000004") == 0x6A81
    assert echo.count == 0


def test_applet_card_block_blocks_the_chip() -> None:
    card, _ = _with_echo()
    t = Terminal(card)
    t.sw("00A4040007F0010203040506")
    assert t.sw("8416000004DEADBEEF") == 0x9000
    assert card.state == "card_blocked"
    assert t.select_ssse() == 0x6A81


def test_factory_card_hosts_pboc_and_pse() -> None:
    card = CardFactory(PROFILE, 11).issue(t0=False)
    t = Terminal(card)
    fci, sw = t.send(b"\x00\xa4\x04\x00\x0e1PAY.SYS.DDF01\x00")
    assert sw == 0x9000
    assert PBOC_AID in t.send("00B2010C00")[0]
    fci, sw = t.send(b"\x00\xa4\x04\x00\x08" + PBOC_AID + b"\x00")
    assert sw == 0x9000
    assert PBOC_AID in fci
    assert t.select_ssse() == 0x9000
    assert t.card_block() == 0x9000
    assert t.sw(b"\x00\xa4\x04\x00\x08" + PBOC_AID + b"\x00") == 0x6A81
    assert t.sw(b"\x00\xa4\x04\x00\x0e2PAY.SYS.DDF01\x00") == 0x6A81


# --- persistence -------------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ["des", "sm4"])
def test_state_round_trip_through_json(algorithm: str) -> None:
    card = CardFactory(PROFILE, 2).issue(algorithm=algorithm, state="not_activated", long_name=True)
    t = Terminal(card)
    t.select_ssse()
    t.verify("000000")
    t.app_block()
    state = json.loads(json.dumps(card.to_state()))
    again = VirtualSscCard.from_state(PROFILE, state)
    assert again.to_state() == card.to_state()
    assert again.state == "temp_locked"
    assert again.pin_tries_left == 5
    assert again.name == card.name
    assert again.atr == card.atr
    assert [type(a).__name__ for a in again.applets] == ["PbocApplet", "PseApplet"]
    t2 = Terminal(again)
    t2.select_ssse()
    assert t2.app_unblock() == 0x9000
    assert again.state == "not_activated"


def test_round_trip_restores_applets_of_allowed_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    card, echo = _with_echo()
    echo.count = 9
    state = json.loads(json.dumps(card.to_state()))
    with pytest.raises(SimStateError, match="refusing applet type"):
        VirtualSscCard.from_state(PROFILE, state)
    monkeypatch.setattr(card_module, "APPLET_MODULE_PREFIXES", ("agent.sim.", "tests.unit.sim."))
    again = VirtualSscCard.from_state(PROFILE, state)
    assert isinstance(again.applets[0], EchoApplet)
    assert again.applets[0].count == 9


def _mutations() -> list[tuple[str, Any]]:
    return [
        ("format", 99),
        ("algorithm", "rot13"),
        ("pin", 123456),
        ("pin", "12"),
        ("pin_tries_left", 99),
        ("pin_tries_left", True),
        ("ext_auth_tries_left", -1),
        ("temp_locked", "yes"),
        ("files", []),
        ("files", {"EF05": {"01": "zz"}}),
        ("files", {"EF99": {"01": "00"}}),
        ("files", {"EF05": "00"}),
        ("files", {"EF07": {"01": "00"}}),
        ("files", {"EF05": {"01": "0011"}}),
        ("applets", [{"type": "os:system", "state": {}}]),
        ("applets", [{"type": "agent.sim.nothere:X", "state": {}}]),
        ("applets", [{"type": "agent.sim.card:Lifecycle", "state": {}}]),
        ("applets", ["x"]),
    ]


@pytest.mark.parametrize(("key", "value"), _mutations())
def test_malformed_state_raises_sim_state_error(key: str, value: Any) -> None:
    state = make_card().to_state()
    state[key] = value
    with pytest.raises(SimStateError):
        VirtualSscCard.from_state(PROFILE, state)


def test_missing_key_raises_sim_state_error() -> None:
    state = make_card().to_state()
    del state["pin"]
    with pytest.raises(SimStateError):
        VirtualSscCard.from_state(PROFILE, state)


# --- hostile bytes -----------------------------------------------------------------------------
_CARDS = {(alg, t0): make_card(alg, t0=t0) for alg in ("des", "sm4") for t0 in (False, True)}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.binary(max_size=300), alg=st.sampled_from(["des", "sm4"]), t0=st.booleans())
def test_random_bytes_never_raise(raw: bytes, alg: str, t0: bool) -> None:
    card = _CARDS[(alg, t0)]
    resp = card.process(raw)
    assert isinstance(resp, bytes)
    assert len(resp) >= 2


_HEADER_HEX = (
    "00A40400 00A40000 00A40200 00A40300 00B20104 00B2012C 00B00000 00B08800 00840000 "
    "00820000 0082000A 00200000 805E0100 805E0000 84240000 841E0000 841E0001 84180000 "
    "84160000 04DC0F2C 00C00000"
)
_HEADERS = st.sampled_from([bytes.fromhex(h) for h in _HEADER_HEX.split()])


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(
        st.tuples(_HEADERS, st.binary(max_size=24), st.one_of(st.none(), st.integers(0, 255))),
        max_size=25,
    ),
    t0=st.booleans(),
)
def test_random_command_sequences_keep_invariants(
    steps: list[tuple[bytes, bytes, int | None]], t0: bool
) -> None:
    card = make_card("sm4" if t0 else "des", t0=t0)
    card.process(SELECT_SSSE)
    for header, data, le in steps:
        apdu = header + (bytes((len(data),)) + data if data else b"")
        if le is not None:
            apdu += bytes((le,))
        resp = card.process(apdu)
        assert len(resp) >= 2
        assert card.state in set(Lifecycle)
        assert 0 <= card.pin_tries_left <= PROFILE.pin_max_tries
    # whatever happened, the state still round-trips
    assert VirtualSscCard.from_state(PROFILE, card.to_state()).to_state() == card.to_state()


def test_ssse_aid_constant() -> None:
    assert SSSE_AID[:7] == b"sx1.sh."
    assert SSSE_AID[7:].decode("gbk") == "社会保障"
