"""SscApplication against the virtual card and the virtual PSAM (real PSAM client), DES and SM4."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

import pytest

from agent.errors import (
    ApplicationLockedError,
    CardProtocolError,
    CardRemovedError,
    FileNotFoundOnCardError,
    LocalProtocolError,
    PinBlockedError,
    PinError,
    SecurityModuleError,
    SecurityStatusError,
)
from agent.profile import CardProfile
from agent.psam.crypto import Algorithm
from agent.psam.module import SecurityModule
from agent.sim.card import VirtualSscCard
from agent.sim.channel import FaultPlan, SimChannel
from agent.ssc.app import CardState, SscApplication

OpenApp = Callable[..., tuple[SscApplication, SimChannel]]
MakeCard = Callable[..., VirtualSscCard]


class TamperingSam:
    """A SecurityModule that corrupts the MACs or cryptograms of an honest one."""

    def __init__(self, inner: SecurityModule, *, mac: bool = False, crypt: bool = False) -> None:
        self.inner = inner
        self.mac = mac
        self.crypt = crypt

    async def terminal_number(self) -> bytes:
        return await self.inner.terminal_number()

    async def card_mac(self, *args: Any) -> bytes:
        out = await self.inner.card_mac(*args)
        return bytes((out[0] ^ 0x01,)) + out[1:] if self.mac else out

    async def encrypt(self, *args: Any) -> bytes:
        out = await self.inner.encrypt(*args)
        return bytes((out[0] ^ 0x01,)) + out[1:] if self.crypt else out

    async def seal_mac(self, digest: bytes) -> bytes:
        return await self.inner.seal_mac(digest)


def with_flags(card: VirtualSscCard, **flags: bool) -> VirtualSscCard:
    state = card.to_state()
    state.update(flags)
    return VirtualSscCard.from_state(card.profile, state)


# --- select and read -----------------------------------------------------------------------------
async def test_select_reports_algorithm(card: VirtualSscCard, open_app: OpenApp) -> None:
    app, _ = open_app(card)
    sel = await app.select()
    assert sel.sw == 0x9000
    assert sel.lock is None
    assert sel.algorithm is card.algorithm


async def test_read_identity(card: VirtualSscCard, open_app: OpenApp) -> None:
    app, _ = open_app(card)
    ident = await app.read_identity()
    assert ident.card_id_code == card.card_id_code
    assert ident.area_code == card.area_code
    assert ident.card_id.serial == card.chip_serial
    assert ident.card_number == card.card_number
    assert ident.spec_version == card.spec_version == "3.00"
    assert ident.issue_date < ident.expiry_date
    assert app.identity is ident


async def test_read_holder_with_external_auth(card: VirtualSscCard, open_app: OpenApp) -> None:
    app, _ = open_app(card)
    holder = await app.read_holder()
    assert card.ext_authenticated
    assert holder.ssn == card.ssn
    assert holder.name == card.name
    assert holder.gender.value in ("1", "2")
    assert isinstance(holder.birth_date, date)
    assert card.ssn not in repr(holder)
    assert card.name not in repr(holder)


async def test_long_name_uses_extension(make_card: MakeCard, open_app: OpenApp) -> None:
    card = make_card(long_name=True)
    app, _ = open_app(card)
    holder = await app.read_holder()
    assert len(card.name.encode("gbk")) > 30  # the name really continues in record 4E
    assert card.record("EF06", 0x4E) != bytes(20)
    assert holder.name == card.name


async def test_holder_of_2_0_card_needs_no_security_module(
    make_card: MakeCard, open_app: OpenApp
) -> None:
    card = make_card(spec_version="2.00")
    app, _ = open_app(card, sam=None)
    holder = await app.read_holder()
    assert holder.ssn == card.ssn
    assert not card.ext_authenticated


async def test_holder_of_3_0_card_without_security_module(
    card: VirtualSscCard, open_app: OpenApp
) -> None:
    app, _ = open_app(card, sam=None)
    with pytest.raises(SecurityModuleError):
        await app.read_holder()


async def test_wrong_external_auth_counts_key_tries(
    card: VirtualSscCard, open_app: OpenApp, sam: SecurityModule
) -> None:
    app, _ = open_app(card, sam=TamperingSam(sam, crypt=True))
    tries = card.ext_auth_tries_left
    with pytest.raises(SecurityStatusError) as info:
        await app.read_holder()
    assert not isinstance(info.value, PinError)  # key tries, not PIN tries
    assert info.value.sw == 0x63C0 | (tries - 1)
    assert card.ext_auth_tries_left == tries - 1
    assert card.pin_tries_left == card.profile.pin_max_tries


async def test_not_an_ssc(profile: CardProfile, sam: SecurityModule) -> None:
    class Empty:
        atr = b"\x3b\x00"

        def power_on(self) -> bytes:
            return self.atr

        def power_off(self) -> None:
            pass

        def process(self, apdu: bytes) -> bytes:
            return b"\x6a\x82"

    app = SscApplication(SimChannel(Empty()), profile, sam)
    with pytest.raises(FileNotFoundOnCardError):
        await app.select()


async def test_other_card_than_expected(
    card: VirtualSscCard, make_card: MakeCard, open_app: OpenApp
) -> None:
    other = make_card()
    app, _ = open_app(card, card_id_code=other.card_id_code)
    with pytest.raises(CardProtocolError, match="not the card"):
        await app.read_identity()


# --- state ---------------------------------------------------------------------------------------
async def test_state_active_and_tries(card: VirtualSscCard, open_app: OpenApp) -> None:
    app, _ = open_app(card)
    status = await app.state()
    assert status.state is CardState.ACTIVE
    assert status.pin_tries_left == card.profile.pin_max_tries
    assert not status.pin_blocked


async def test_activation(make_card: MakeCard, open_app: OpenApp) -> None:
    card = make_card(state="not_activated")
    app, _ = open_app(card)
    assert (await app.state()).state is CardState.NOT_ACTIVATED
    assert await app.activate() is True
    assert card.state == "active"
    assert (await app.state()).state is CardState.ACTIVE


async def test_activation_step_none(card: VirtualSscCard, open_app: OpenApp) -> None:
    from dataclasses import replace

    profile = replace(card.profile, activation=replace(card.profile.activation, step="none"))
    app, channel = open_app(card)
    app._profile = profile  # the agent's profile says activation is central-only
    assert await app.activate() is False
    assert channel.apdu_count == 0
    assert await app.activation_state() is CardState.ACTIVE


# --- lifecycle: every state x every operation ----------------------------------------------------
START = {
    "active": {},
    "not_activated": {},
    "temp_locked": {"temp_locked": True},
    "perm_locked": {"perm_locked": True},
    "card_blocked": {"card_blocked": True},
}
OPS = ("block", "block_perm", "unblock", "card_block", "activate", "verify", "read", "state")
L = ApplicationLockedError
# (start state, op) -> final card state, or (error class, status word)
TABLE: dict[tuple[str, str], str | tuple[type[Exception], int]] = {
    ("active", "block"): "temp_locked",
    ("active", "block_perm"): "perm_locked",
    ("active", "unblock"): "active",
    ("active", "card_block"): "card_blocked",
    ("active", "activate"): "active",
    ("active", "verify"): "active",
    ("active", "read"): "active",
    ("active", "state"): "active",
    ("not_activated", "block"): "temp_locked",
    ("not_activated", "block_perm"): "perm_locked",
    ("not_activated", "unblock"): "not_activated",
    ("not_activated", "card_block"): "card_blocked",
    ("not_activated", "activate"): "active",
    ("not_activated", "verify"): "not_activated",
    ("not_activated", "read"): "not_activated",
    ("not_activated", "state"): "not_activated",
    ("temp_locked", "block"): "temp_locked",
    ("temp_locked", "block_perm"): "perm_locked",
    ("temp_locked", "unblock"): "active",
    ("temp_locked", "card_block"): "card_blocked",
    ("temp_locked", "activate"): (L, 0x6283),
    ("temp_locked", "verify"): (L, 0x6283),
    ("temp_locked", "read"): "temp_locked",  # EF05 stays readable (CARD-PROTOCOL §1)
    ("temp_locked", "state"): "temp_locked",
    ("perm_locked", "block"): (L, 0x9303),
    ("perm_locked", "block_perm"): (L, 0x9303),
    ("perm_locked", "unblock"): (L, 0x9303),
    ("perm_locked", "card_block"): "card_blocked",
    ("perm_locked", "activate"): (L, 0x9303),
    ("perm_locked", "verify"): (L, 0x9303),
    ("perm_locked", "read"): (L, 0x9303),
    ("perm_locked", "state"): "perm_locked",
    ("card_blocked", "block"): (L, 0x6A81),
    ("card_blocked", "block_perm"): (L, 0x6A81),
    ("card_blocked", "unblock"): (L, 0x6A81),
    ("card_blocked", "card_block"): (L, 0x6A81),
    ("card_blocked", "activate"): (L, 0x6A81),
    ("card_blocked", "verify"): (L, 0x6A81),
    ("card_blocked", "read"): (L, 0x6A81),
    ("card_blocked", "state"): "card_blocked",
}


def test_table_is_complete() -> None:
    assert set(TABLE) == {(s, op) for s in START for op in OPS}


async def run_op(app: SscApplication, op: str, pin: str) -> object:
    if op == "block":
        await app.block()
    elif op == "block_perm":
        await app.block(permanent=True)
    elif op == "unblock":
        await app.unblock()
    elif op == "card_block":
        await app.card_block()
    elif op == "activate":
        return await app.activate()
    elif op == "verify":
        await app.verify_pin(pin)
    elif op == "reset_pin":
        await app.reset_pin("999999")
    elif op == "unblock_pin":
        await app.unblock_pin("999999")
    elif op == "read":
        return await app.read_identity()
    else:
        return await app.state()
    return None


@pytest.mark.parametrize(("start", "op"), sorted(TABLE))
async def test_lifecycle_table(start: str, op: str, make_card: MakeCard, open_app: OpenApp) -> None:
    base = make_card(state="not_activated" if start == "not_activated" else "active")
    card = with_flags(base, **START[start]) if START[start] else base
    assert card.state == start
    # A locked card cannot tell its identity: the caller (tx, from the journal) supplies it.
    app, _ = open_app(card, card_id_code=card.card_id_code, algorithm=card.algorithm)
    expected = TABLE[(start, op)]
    if isinstance(expected, str):
        result = await run_op(app, op, card.pin)
        assert card.state == expected
        if op == "state":
            assert result.state.value == expected  # type: ignore[attr-defined]
            if expected in ("active", "not_activated"):
                assert result.pin_tries_left == card.pin_tries_left  # type: ignore[attr-defined]
            else:
                assert result.pin_tries_left is None  # type: ignore[attr-defined]
    else:
        error, sw = expected
        with pytest.raises(error) as info:
            await run_op(app, op, card.pin)
        assert info.value.sw == sw  # type: ignore[attr-defined]
        assert card.state == start


@pytest.mark.parametrize(
    ("flags", "sw", "lock"),
    [
        ({"temp_locked": True}, 0x6283, CardState.TEMP_LOCKED),
        ({"perm_locked": True}, 0x9303, CardState.PERM_LOCKED),
        ({"card_blocked": True}, 0x6A81, CardState.CARD_BLOCKED),
    ],
)
async def test_select_lock_hints(
    flags: dict[str, bool], sw: int, lock: CardState, card: VirtualSscCard, open_app: OpenApp
) -> None:
    app, _ = open_app(with_flags(card, **flags))
    sel = await app.select()
    assert (sel.sw, sel.lock) == (sw, lock)
    # a temporarily locked card still sends its FCI (CARD-PROTOCOL §1)
    assert (sel.algorithm is card.algorithm) == (sw == 0x6283)


async def test_block_then_unblock_in_one_session(card: VirtualSscCard, open_app: OpenApp) -> None:
    app, _ = open_app(card)
    await app.read_identity()
    await app.block()
    assert (await app.select()).sw == 0x6283
    await app.unblock()
    assert card.state == "active"
    await app.block(permanent=True)
    assert (await app.select()).sw == 0x9303
    with pytest.raises(ApplicationLockedError):
        await app.unblock()
    await app.card_block()  # the algorithm is remembered from the first SELECT
    assert card.state == "card_blocked"


async def test_unblock_of_locked_card_without_known_identity(
    card: VirtualSscCard, open_app: OpenApp
) -> None:
    """A terminal that never saw the card reads its identity from EF05 to diversify the key."""
    locked = with_flags(card, temp_locked=True)
    app, _ = open_app(locked)
    await app.unblock()
    assert locked.state == "active"


# --- wrong MAC: 6988 and nothing changes --------------------------------------------------------
MAC_OPS = ("block", "block_perm", "unblock", "card_block", "activate", "reset_pin", "unblock_pin")


@pytest.mark.parametrize("op", MAC_OPS)
async def test_wrong_mac_changes_nothing(
    op: str, make_card: MakeCard, open_app: OpenApp, sam: SecurityModule
) -> None:
    start = {"unblock": "temp_locked", "activate": "not_activated"}.get(op, "active")
    card = make_card(state="not_activated" if start == "not_activated" else "active")
    if start == "temp_locked":
        card = with_flags(card, temp_locked=True)
    before = card.to_state()
    app, _ = open_app(
        card,
        sam=TamperingSam(sam, mac=True),
        card_id_code=card.card_id_code,
        algorithm=card.algorithm,
    )
    with pytest.raises(SecurityStatusError) as info:
        await run_op(app, op, card.pin)
    assert info.value.sw == 0x6988
    assert card.to_state() == before


async def test_no_security_module_for_writes(card: VirtualSscCard, open_app: OpenApp) -> None:
    app, channel = open_app(card, sam=None)
    for call in (app.block, app.unblock, app.card_block, app.activate):
        with pytest.raises(SecurityModuleError):
            await call()
    assert card.state == "active"
    assert channel.apdu_count == 0


# --- PIN -----------------------------------------------------------------------------------------
def wrong(pin: str) -> str:
    return "".join(str((int(d) + 1) % 10) for d in pin)


async def test_pin_tries_count_down_to_blocked(card: VirtualSscCard, open_app: OpenApp) -> None:
    app, _ = open_app(card)
    max_tries = card.profile.pin_max_tries
    assert await app.pin_tries_left() == max_tries
    for left in range(max_tries - 1, 0, -1):
        with pytest.raises(PinError) as info:
            await app.verify_pin(wrong(card.pin))
        assert not isinstance(info.value, PinBlockedError)
        assert (info.value.sw, info.value.tries_left) == (0x63C0 | left, left)
        assert await app.pin_tries_left() == left  # asking does not consume a try
    with pytest.raises(PinBlockedError) as blocked:
        await app.verify_pin(wrong(card.pin))
    assert (blocked.value.sw, blocked.value.tries_left) == (0x6983, 0)
    with pytest.raises(PinBlockedError):
        await app.verify_pin(card.pin)  # even the right PIN
    assert await app.pin_tries_left() == 0
    status = await app.state()
    assert (status.state, status.pin_blocked) == (CardState.ACTIVE, True)


async def test_verify_resets_counter(card: VirtualSscCard, open_app: OpenApp) -> None:
    app, _ = open_app(card)
    with pytest.raises(PinError):
        await app.verify_pin(wrong(card.pin))
    await app.verify_pin(card.pin)
    assert card.pin_tries_left == card.profile.pin_max_tries
    assert await app.pin_tries_left() == card.profile.pin_max_tries


async def test_change_pin(card: VirtualSscCard, open_app: OpenApp) -> None:
    app, _ = open_app(card)
    old = card.pin
    with pytest.raises(PinError) as info:
        await app.change_pin(wrong(old), "24680")
    assert info.value.tries_left == card.profile.pin_max_tries - 1
    assert card.pin == old
    await app.change_pin(old, "24680")
    assert card.pin == "24680"
    await app.verify_pin("24680")


@pytest.mark.parametrize("method", ["reset_pin", "unblock_pin"])
async def test_reset_and_unblock_pin_restore_a_blocked_pin(
    method: str, card: VirtualSscCard, open_app: OpenApp
) -> None:
    app, _ = open_app(card)
    for _ in range(card.profile.pin_max_tries):
        with pytest.raises(PinError):
            await app.verify_pin(wrong(card.pin))
    assert card.pin_blocked
    await getattr(app, method)("13572468")
    assert card.pin == "13572468"
    assert card.pin_tries_left == card.profile.pin_max_tries
    await app.verify_pin("13572468")


@pytest.mark.parametrize("pin", ["123", "1234567890123", "12a456", "", "12 456"])
async def test_bad_pin_strings_never_reach_the_card(
    pin: str, card: VirtualSscCard, open_app: OpenApp
) -> None:
    app, channel = open_app(card)
    calls = (
        app.verify_pin(pin),
        app.change_pin(pin, "123456"),
        app.change_pin("123456", pin),
        app.reset_pin(pin),
        app.unblock_pin(pin),
    )
    for call in calls:
        with pytest.raises(LocalProtocolError):
            await call
    assert channel.apdu_count == 0
    assert card.pin_tries_left == card.profile.pin_max_tries


@pytest.mark.parametrize("algorithm", [Algorithm.DES, Algorithm.SM4], ids=["des", "sm4"])
async def test_algorithm_matrix_smoke(
    algorithm: Algorithm, make_card: MakeCard, open_app: OpenApp
) -> None:
    """Both algorithms end to end: read, block, unblock, reset PIN."""
    card = make_card(algorithm=algorithm)
    app, _ = open_app(card)
    assert (await app.select()).algorithm is algorithm
    await app.read_holder()
    await app.block()
    await app.unblock()
    await app.reset_pin("8642")
    assert (card.state, card.pin) == ("active", "8642")


# --- card pulled around the write: the in-doubt case --------------------------------------------
@pytest.mark.parametrize("processed", [False, True], ids=["before", "after"])
async def test_pull_at_the_block_command(
    processed: bool, make_card: MakeCard, open_app: OpenApp
) -> None:
    probe = make_card()
    app, channel = open_app(probe, card_id_code=probe.card_id_code)
    await app.block()
    last = channel.apdu_count - 1  # 84 1E is the last APDU of a block
    card = make_card()
    app, channel = open_app(
        card, card_id_code=card.card_id_code, faults=FaultPlan().pull(last, processed=processed)
    )
    with pytest.raises(CardRemovedError):
        await app.block()
    # the terminal cannot tell these two apart: that is what the journal's in_doubt is for
    assert card.state == ("temp_locked" if processed else "active")
