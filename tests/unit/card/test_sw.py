"""Status-word table, typed errors and check() (agent.card.sw)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.card.apdu import ResponseApdu
from agent.card.sw import check, describe, error_for, tries_left
from agent.errors import (
    ApplicationLockedError,
    CardStatusError,
    FileNotFoundOnCardError,
    LocalProtocolError,
    PinBlockedError,
    PinError,
    SecurityStatusError,
)


@pytest.mark.parametrize(
    ("sw", "cls"),
    [
        (0x63C5, PinError),
        (0x63C0, PinError),
        (0x6983, PinBlockedError),
        (0x6283, ApplicationLockedError),
        (0x9303, ApplicationLockedError),
        (0x6A81, ApplicationLockedError),
        (0x6982, SecurityStatusError),
        (0x6988, SecurityStatusError),
        (0x9302, SecurityStatusError),
        (0x6984, SecurityStatusError),
        (0x6A82, FileNotFoundOnCardError),
        (0x6A83, FileNotFoundOnCardError),
        (0x6985, CardStatusError),
        (0x6700, CardStatusError),
        (0x6D00, CardStatusError),
        (0x1234, CardStatusError),
    ],
)
def test_error_class_per_sw(sw: int, cls: type[CardStatusError]) -> None:
    err = error_for(sw, "SELECT")
    assert type(err) is cls
    assert err.sw == sw
    assert err.command == "SELECT"
    assert err.message.startswith("SELECT: ")
    assert f"{sw:04X}" in err.message


def test_pin_error_carries_tries() -> None:
    err = error_for(0x63C2)
    assert isinstance(err, PinError)
    assert err.tries_left == 2
    blocked = error_for(0x6983)
    assert isinstance(blocked, PinBlockedError)
    assert blocked.tries_left == 0
    assert blocked.code == "pin_blocked"


@pytest.mark.parametrize(
    ("sw", "tries"),
    [(0x63C3, 3), (0x63CF, 15), (0x63C0, 0), (0x6983, 0), (0x9000, None), (0x6300, None)],
)
def test_tries_left(sw: int, tries: int | None) -> None:
    assert tries_left(sw) == tries


@pytest.mark.parametrize(
    ("sw", "text"),
    [
        (0x9000, "success"),
        (0x6A82, "not found"),
        (0x6110, "16 more bytes"),
        (0x6100, "256 more bytes"),
        (0x6C08, "exact length is 8"),
        (0x63C4, "4 tries left"),
        (0x9303, "permanently locked"),
        (0x6F12, "unknown"),
    ],
)
def test_describe(sw: int, text: str) -> None:
    assert text in describe(sw)
    assert describe(sw).startswith(f"{sw:04X}")


def test_check_passes_expected_and_raises_others() -> None:
    ok = ResponseApdu(b"\x01", 0x9000)
    assert check(ok) is ok
    warn = ResponseApdu(b"\x6f\x00", 0x6283)
    assert check(warn, {0x9000, 0x6283}) is warn
    with pytest.raises(ApplicationLockedError) as ei:
        check(warn, command="SELECT AID")
    assert ei.value.sw == 0x6283
    with pytest.raises(PinError) as pe:
        check(ResponseApdu(b"", 0x63C1), command="VERIFY")
    assert pe.value.tries_left == 1


@pytest.mark.parametrize("bad", [-1, 0x10000, True])
def test_bad_sw_argument(bad: int) -> None:
    with pytest.raises(LocalProtocolError):
        describe(bad)


@given(st.integers(0, 0xFFFF))
def test_every_sw_has_a_description_and_an_error(sw: int) -> None:
    assert describe(sw)
    err = error_for(sw)
    assert isinstance(err, CardStatusError)
    assert err.sw == sw
    t = tries_left(sw)
    if t is not None:
        assert isinstance(err, PinError)
        assert err.tries_left == t
