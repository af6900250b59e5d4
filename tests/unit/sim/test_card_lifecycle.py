"""Every lifecycle state × every command of the contract (CARD-PROTOCOL §1), by raw bytes.

Each cell: a fresh card brought into the state by MAC'd commands, power cycled, the SSSE
selected, then the command (with its own preparation: GET CHALLENGE, SELECT EF, external
auth). The cell asserts the status word of the command and the lifecycle state afterwards.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.unit.sim._support import PROFILE, STATES, Terminal, card_in_state

NA, AC, TL, PL, CB = STATES


def _read_ef06_after_auth(t: Terminal) -> int:
    t.ext_auth()
    return t.sw("00B2083400")


def _read_ef08_after_auth(t: Terminal) -> int:
    t.ext_auth()
    return t.sw("00B0880000")


def _get_challenge(t: Terminal) -> int:
    return t.sw("0084000004")


def _read_df04_ef06_after_pin(t: Terminal) -> int:
    t.verify(PROFILE.initial_pin)
    t.sw("00A4040006D15600000503")
    return t.sw("00B2423400")


Command = Callable[[Terminal], int]

# name → (command, expected SW per state, expected state afterwards per state; None = unchanged)
TABLE: dict[str, tuple[Command, tuple[int, ...], tuple[str, ...] | None]] = {
    "select_ssse": (
        lambda t: t.select_ssse(),
        (0x9000, 0x9000, 0x6283, 0x9303, 0x6A81),
        None,
    ),
    "select_ef05": (
        lambda t: t.sw("00A4020002EF05"),
        (0x9000, 0x9000, 0x9000, 0x6985, 0x6A81),
        None,
    ),
    "select_df01_by_name": (
        lambda t: t.sw("00A4040006D15600000500"),
        (0x9000, 0x9000, 0x9000, 0x6985, 0x6A81),
        None,
    ),
    "select_mf": (lambda t: t.sw("00A40000023F00"), (0x9000, 0x9000, 0x9000, 0x9000, 0x6A81), None),
    "select_unknown_aid": (
        lambda t: t.sw("00A4040008A000000333010101"),
        (0x6A82, 0x6A82, 0x6A82, 0x6A82, 0x6A81),
        None,
    ),
    "read_card_number_by_sfi": (
        lambda t: t.sw("00B2072C0B"),
        (0x9000, 0x9000, 0x9000, 0x6985, 0x6A81),  # EF05 stays readable when temp locked
        None,
    ),
    "read_ef06_without_auth": (
        lambda t: t.sw("00B2083400"),
        (0x6982, 0x6982, 0x6985, 0x6985, 0x6A81),
        None,
    ),
    "read_ef06_after_ext_auth": (
        _read_ef06_after_auth,
        (0x9000, 0x9000, 0x6985, 0x6985, 0x6A81),
        None,
    ),
    "read_binary_photo_after_ext_auth": (
        _read_ef08_after_auth,
        (0x9000, 0x9000, 0x6985, 0x6985, 0x6A81),
        None,
    ),
    "read_df04_ef06_after_pin": (
        _read_df04_ef06_after_pin,
        (0x9000, 0x9000, 0x6985, 0x6985, 0x6A81),
        None,
    ),
    "get_challenge": (_get_challenge, (0x9000, 0x9000, 0x9000, 0x9000, 0x6A81), None),
    "external_auth": (lambda t: t.ext_auth(), (0x9000, 0x9000, 0x6985, 0x6985, 0x6A81), None),
    "pin_tries": (lambda t: t.sw("00200000"), (0x63C6, 0x63C6, 0x6985, 0x6985, 0x6A81), None),
    "verify_pin": (
        lambda t: t.verify(PROFILE.initial_pin),
        (0x9000, 0x9000, 0x6985, 0x6985, 0x6A81),
        None,
    ),
    "change_pin": (
        lambda t: t.change_pin(PROFILE.initial_pin, "654321"),
        (0x9000, 0x9000, 0x6985, 0x6985, 0x6A81),
        None,
    ),
    "reset_pin": (lambda t: t.reset_pin("112233"), (0x9000, 0x9000, 0x6985, 0x6985, 0x6A81), None),
    "unblock_pin": (
        lambda t: t.unblock_pin("445566"),
        (0x9000, 0x9000, 0x6985, 0x6985, 0x6A81),
        None,
    ),
    "app_block_temporary": (
        lambda t: t.app_block(),
        (0x9000, 0x9000, 0x9000, 0x6985, 0x6A81),
        (TL, TL, TL, PL, CB),
    ),
    "app_block_permanent": (
        lambda t: t.app_block(permanent=True),
        (0x9000, 0x9000, 0x9000, 0x6985, 0x6A81),
        (PL, PL, PL, PL, CB),
    ),
    "app_unblock": (
        lambda t: t.app_unblock(),
        (0x9000, 0x9000, 0x9000, 0x9303, 0x6A81),
        (NA, AC, AC, PL, CB),
    ),
    "card_block": (
        lambda t: t.card_block(),
        (0x9000, 0x9000, 0x9000, 0x9000, 0x6A81),
        (CB, CB, CB, CB, CB),
    ),
    "update_record_activate": (
        lambda t: t.activate(),
        (0x9000, 0x9000, 0x6985, 0x6985, 0x6A81),
        (AC, AC, TL, PL, CB),
    ),
    "get_response_nothing_pending": (
        lambda t: t.sw("00C0000004"),
        (0x6985, 0x6985, 0x6985, 0x6985, 0x6A81),
        None,
    ),
    "unknown_ins": (lambda t: t.sw("00CA9F3600"), (0x6D00, 0x6D00, 0x6D00, 0x6D00, 0x6A81), None),
    "unknown_cla": (lambda t: t.sw("A0B2010400"), (0x6E00, 0x6E00, 0x6E00, 0x6E00, 0x6A81), None),
    "garbage_short": (lambda t: t.sw("00B2"), (0x6700, 0x6700, 0x6700, 0x6700, 0x6A81), None),
}


CASES = [
    pytest.param(name, i, id=f"{state}-{name}") for name in TABLE for i, state in enumerate(STATES)
]


@pytest.mark.parametrize(("name", "state_index"), CASES)
def test_state_command_table(name: str, state_index: int) -> None:
    command, expected_sw, expected_after = TABLE[name]
    state = STATES[state_index]
    card = card_in_state(state)
    term = Terminal(card)
    term.select_ssse()
    sw = command(term)
    assert sw == expected_sw[state_index], f"{name} in {state}: {sw:04X}"
    after = state if expected_after is None else expected_after[state_index]
    assert card.state == after


def test_table_covers_every_contract_command() -> None:
    """The table names a row for each command of CARD-PROTOCOL §1."""
    needed = {
        "select_ssse", "select_ef05", "read_card_number_by_sfi", "get_challenge", "external_auth",
        "pin_tries", "verify_pin", "change_pin", "reset_pin", "unblock_pin", "app_block_temporary",
        "app_block_permanent", "app_unblock", "card_block", "update_record_activate",
        "get_response_nothing_pending",
    }  # fmt: skip
    assert needed <= set(TABLE)


@pytest.mark.parametrize("algorithm", ["des", "sm4"])
def test_full_lifecycle_walk(algorithm: str) -> None:
    """not_activated → active → temp_locked ⇄ active → perm_locked → card_blocked."""
    card = card_in_state("not_activated", algorithm)
    t = Terminal(card)
    assert t.select_ssse() == 0x9000
    assert t.activate() == 0x9000
    assert card.state == "active"
    assert card.record("EF05", 0x0F) == b"\x01"
    assert t.app_block() == 0x9000
    assert card.state == "temp_locked"
    assert t.app_unblock() == 0x9000
    assert card.state == "active"
    assert t.app_block(permanent=True) == 0x9000
    assert card.state == "perm_locked"
    assert t.app_unblock() == 0x9303
    assert t.card_block() == 0x9000
    assert card.state == "card_blocked"
    card.power_on()
    assert t.select_ssse() == 0x6A81
    assert t.sw("00A40000023F00") == 0x6A81


def test_temporary_lock_of_unactivated_card_returns_to_not_activated() -> None:
    card = card_in_state("not_activated")
    t = Terminal(card)
    t.select_ssse()
    assert t.app_block() == 0x9000
    assert card.state == "temp_locked"
    assert t.app_unblock() == 0x9000
    assert card.state == "not_activated"


def test_temp_locked_select_returns_fci_with_6283_even_in_t0_mode() -> None:
    card = card_in_state("temp_locked", "sm4", t0=True)
    resp = card.process(bytes.fromhex("00A404000F7378312E73682EC9E7BBE1B1A3D5CF00"))
    assert resp[-2:] == b"\x62\x83"
    assert b"\x9f\x0c\x03\x86\x01\x03" in resp[:-2]


def test_perm_locked_select_answers_9303_without_data() -> None:
    card = card_in_state("perm_locked")
    assert Terminal(card).send(bytes.fromhex("00A404000F7378312E73682EC9E7BBE1B1A3D5CF")) == (
        b"",
        0x9303,
    )
