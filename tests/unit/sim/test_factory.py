"""Card factory: distinct cards, valid synthetic holders, determinism, check digits."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import ConfigError
from agent.psam.crypto import Algorithm
from agent.sim.card import RID
from agent.sim.factory import (
    AREAS,
    CardFactory,
    card_number_check,
    id_check_digit,
    id_number_valid,
    luhn_check_digit,
    luhn_valid,
)
from tests.unit.sim._support import PROFILE


# --- check digits ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "number",
    ["11010519491231002X", "440524188001010014", "11010119900307803X"],
)
def test_known_valid_id_numbers(number: str) -> None:
    assert id_check_digit(number[:17]) == number[17]
    assert id_number_valid(number)


@pytest.mark.parametrize(
    "number",
    ["110105194912310021", "11010519491231002", "1101051949123100XX", "110105194913310024"],
)
def test_invalid_id_numbers(number: str) -> None:
    assert not id_number_valid(number)


def test_id_check_digit_rejects_bad_input() -> None:
    with pytest.raises(ConfigError):
        id_check_digit("1234")
    with pytest.raises(ConfigError):
        id_check_digit("1101051949123100X")


@given(st.text(alphabet="0123456789", min_size=17, max_size=17), st.integers(0, 16))
@settings(max_examples=200)
def test_mod11_2_detects_every_single_digit_change(first17: str, pos: int) -> None:
    number = first17 + id_check_digit(first17)
    changed = first17[:pos] + str((int(first17[pos]) + 1) % 10) + first17[pos + 1 :]
    assert id_check_digit(changed) != number[17]


@pytest.mark.parametrize(
    ("pan", "valid"),
    [("79927398713", True), ("4111111111111111", True), ("79927398710", False), ("4111", False)],
)
def test_luhn_known(pan: str, valid: bool) -> None:
    assert luhn_valid(pan) is valid
    assert luhn_check_digit("7992739871") == "3"


def test_card_number_check() -> None:
    assert card_number_check("A1234567") == card_number_check("A1234567")
    assert card_number_check("A1234567") != card_number_check("A1234568")
    with pytest.raises(ConfigError):
        card_number_check("11234567")


# --- issued cards ------------------------------------------------------------------------------
def test_thousand_cards_are_distinct_and_well_formed() -> None:
    factory = CardFactory(PROFILE, 2024, with_bank=False)
    cards = factory.issue_many(1000)
    serials = {c.chip_serial for c in cards}
    assert len(serials) == 1000
    assert len({c.card_id_code for c in cards}) == 1000
    assert len({c.card_number for c in cards}) == 1000
    long_names = 0
    for c in cards:
        cic = c.card_id_code
        assert cic[3:8] == RID
        assert cic[:3].hex() in AREAS
        assert len(c.card_number) == 9
        assert c.card_number[8] == card_number_check(c.card_number[:8])
        ssn = c.ssn
        assert id_number_valid(ssn), ssn
        birth = (c.record("EF06", 0x0D) or b"").hex()
        assert ssn[6:14] == birth
        gender = (c.record("EF06", 0x0A) or b"").decode()
        assert (int(ssn[16]) % 2 == 1) == (gender == "1")
        assert (c.record("EF06", 0x0C) or b"").hex() == ssn[:6]
        c.name.encode("gbk")
        long_names += len(c.name) > 15
        issue = dt.datetime.strptime((c.record("EF05", 0x05) or b"").hex(), "%Y%m%d").date()
        expiry = dt.datetime.strptime((c.record("EF05", 0x06) or b"").hex(), "%Y%m%d").date()
        assert issue < expiry
        assert c.spec_version == "3.00"
        assert c.state == "active"
        assert c.pin == PROFILE.initial_pin
    assert {c.algorithm for c in cards} == {Algorithm.DES, Algorithm.SM4}
    assert {c.area_code for c in cards} == set(AREAS)
    assert 20 < long_names < 300


def test_deterministic_for_a_seed() -> None:
    a = [c.to_state() for c in CardFactory(PROFILE, 99).issue_many(5)]
    b = [c.to_state() for c in CardFactory(PROFILE, 99).issue_many(5)]
    c = [c.to_state() for c in CardFactory(PROFILE, 100).issue_many(5)]
    assert a == b
    assert a != c


def test_issue_options() -> None:
    f = CardFactory(PROFILE, 1, with_bank=False)
    card = f.issue(
        algorithm="sm4",
        spec_version="2.00",
        state="not_activated",
        area_code="442000",
        long_name=True,
        gender="2",
        pin="9876",
    )
    assert card.algorithm is Algorithm.SM4
    assert card.spec_version == "2.00"
    assert card.state == "not_activated"
    assert card.area_code == "442000"
    assert len(card.name) > 15
    assert card.record("EF06", 0x4E) != bytes(20)  # the name overflows into tag 4E
    assert card.record("EF06", 0x0B) == b"\x05"
    assert card.ssn[16] in "02468"
    assert card.pin == "9876"
    assert card.applets == ()


def test_issue_rejects_bad_options() -> None:
    f = CardFactory(PROFILE, 1)
    with pytest.raises(ConfigError):
        f.issue(algorithm="ssf33")
    with pytest.raises(ConfigError):
        f.issue(state="card_blocked")
    with pytest.raises(ConfigError):
        f.issue(gender="3")


def test_bank_application_pan_passes_luhn() -> None:
    cards = CardFactory(PROFILE, 8).issue_many(20)
    for card in cards:
        pboc = card.applets[0]
        pan = str(pboc.to_state()["pan"])
        assert len(pan) == 19
        assert luhn_valid(pan)
        assert pboc.aids == (bytes.fromhex("A000000333010101"),)
