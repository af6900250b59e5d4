"""The transaction engine against the virtual card and the virtual PSAM (DES and SM4):
every flow, the offline policy, authorizations, idempotency, card refusals, sealing."""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.card.apdu import CommandApdu
from agent.errors import (
    AuthorizationTimeoutError,
    CardRefusedError,
    CardRemovedError,
    LocalProtocolError,
    PolicyRefusal,
    TransactionInDoubtError,
    UplinkUnavailableError,
)
from agent.journal.codec import decode_body
from agent.sim.channel import FaultPlan
from agent.tx.engine import (
    atr_card_hint,
    hint_matches,
    hint_pattern,
    is_card_write,
    record_to_json,
)
from agent.tx.policy import (
    DEFAULT_OPERATIONS,
    FORMAL_LOSS,
    REPLACED,
    TEMPORARY_LOSS,
    OfflineMode,
    OperationPolicy,
    PolicyConfig,
)
from agent.tx.ports import FakeUplink
from agent.tx.records import Kind, TxRecord

from ._txsupport import FLOWS, NEW_PIN, PROFILE, Terminal, prepared, with_state


@pytest.mark.parametrize("alg", ["des", "sm4"])
@pytest.mark.parametrize("flow", sorted(FLOWS))
async def test_every_flow_changes_the_card_and_seals_a_verified_record(flow: str, alg: str) -> None:
    t = await prepared(flow, alg)
    assert not FLOWS[flow]["truth"](t)
    rec = await FLOWS[flow]["run"](t, t.channel())
    assert FLOWS[flow]["truth"](t)
    assert (rec.kind.value, rec.state.value, rec.outcome) == (flow, "sealed", "done")
    assert rec.card_id_code == t.cid
    assert rec.terminal_id == "440300907950"
    assert rec.seq is not None
    assert rec.mac is not None
    assert t.verify_chain()
    names = [n for n, d in t.events if d.get("tx_id") == rec.tx_id]
    assert names == ["tx_intent", "tx_card_written", "tx_card_done", "tx_sealing", "tx_sealed"]
    assert t.uplink.wakes >= 1


async def test_lock_offline_succeeds_and_says_offline() -> None:
    t = Terminal("sm4")
    rec = await t.engine.lock(t.channel(), "central")
    assert rec.offline
    assert rec.reason == "central"
    assert t.card.state == "temp_locked"
    with pytest.raises(PolicyRefusal) as exc:
        await t.engine.lock(t.channel())
    assert exc.value.code == "already_locked"
    assert t.kinds() == ["lock"]


async def test_unlock_offline_without_authorization_is_refused_clearly() -> None:
    t = Terminal()
    await t.engine.lock(t.channel())
    with pytest.raises(PolicyRefusal) as exc:
        await t.engine.unlock(t.channel())
    assert exc.value.code == "offline_unlock_needs_authorization"
    assert t.card.state == "temp_locked"
    assert t.kinds() == ["lock"]
    [ev] = [e for e in t.journal.events() if e.kind == "tx_refused"]
    assert ev.data["code"] == "offline_unlock_needs_authorization"


async def test_unlock_with_authorization_consumes_it_once() -> None:
    t = Terminal()
    await t.engine.lock(t.channel())
    t.grant("unlock", auth_id="A1")
    rec = await t.engine.unlock(t.channel())
    assert rec.auth_id == "A1"
    assert rec.offline
    assert t.card.state == "active"
    auth = t.journal.get_authorization("A1")
    assert auth is not None
    assert auth.used_by == rec.tx_id
    await t.engine.lock(t.channel())
    with pytest.raises(PolicyRefusal):
        await t.engine.unlock(t.channel())  # the authorization was used up
    assert t.card.state == "temp_locked"


@pytest.mark.parametrize("variant", ["expired", "other_card", "other_kind", "denied_online"])
async def test_bad_authorizations_are_refused(variant: str) -> None:
    t = Terminal()
    await t.engine.lock(t.channel())
    expected = "offline_unlock_needs_authorization"
    if variant == "expired":
        t.grant("unlock", ttl_ms=-1)
    elif variant == "other_card":
        t.journal.add_authorization(
            "X", "440300D156000005" + "00" * 8, "unlock", t.engine.clock() + 60_000, b"s"
        )
    elif variant == "other_kind":
        t.grant("pin_reset")
    else:  # central online refuses (a forged or unknown request never yields one)
        t.uplink.online = True
        t.uplink.grant = False
        expected = "authorization_denied"
    with pytest.raises(PolicyRefusal) as exc:
        await t.engine.unlock(t.channel())
    assert exc.value.code == expected
    assert t.card.state == "temp_locked"
    assert t.kinds() == ["lock"]


async def test_online_unlock_asks_central() -> None:
    t = Terminal(online=True)
    await t.engine.lock(t.channel())
    rec = await t.engine.unlock(t.channel())
    assert not rec.offline
    assert rec.auth_id is not None
    assert t.uplink.requests == [("unlock", t.cid)]


class AnsweringCentral(FakeUplink):
    """Central online that answers a request as told: ``replaced`` / ``formal_loss`` (its signed
    refusal blacklists the card, as ``CommandHandler`` applies it, then False), ``denied``
    (False), ``timeout`` (no answer in time), ``dropped`` (the link went down meanwhile)."""

    def __init__(self, t: Terminal, answer: str) -> None:
        super().__init__(t.journal, online=True)
        self.answer = answer

    async def request_authorization(self, kind: str, card_id_code: str) -> bool:
        self.requests.append((kind, card_id_code))
        if self.answer in (REPLACED, FORMAL_LOSS):
            v = self._journal.blacklist_version()
            self._journal.blacklist_apply_delta(v, v + 1, [(card_id_code, self.answer)], [])
        elif self.answer == "timeout":
            raise AuthorizationTimeoutError("central did not answer")
        elif self.answer == "dropped":
            self.online = False
            raise UplinkUnavailableError("the uplink went down")
        return False


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        (REPLACED, "card_replaced"),
        (FORMAL_LOSS, "formal_loss_counter_only"),
        ("denied", "authorization_denied"),
        ("timeout", "authorization_timeout"),
        ("dropped", "offline_unlock_needs_authorization"),
    ],
)
async def test_online_unlock_refused_by_centrals_answer(answer: str, code: str) -> None:
    t = Terminal()
    await t.engine.lock(t.channel())
    central = AnsweringCentral(t, answer)
    t.engine.uplink = central
    with pytest.raises(PolicyRefusal) as exc:
        await t.engine.unlock(t.channel())
    assert exc.value.code == code
    assert central.requests == [("unlock", t.cid)]
    assert t.card.state == "temp_locked"
    assert t.kinds() == ["lock"]
    [ev] = [e for e in t.journal.events() if e.kind == "tx_refused"]
    assert ev.data["code"] == code


@pytest.mark.parametrize("kind", ["unlock", "pin_reset"])
async def test_a_card_the_blacklist_refuses_is_not_asked_for(kind: str) -> None:
    t = Terminal(online=True)
    if kind == "unlock":
        await t.engine.lock(t.channel())
    t.journal.blacklist_snapshot_replace(1, [(t.cid, REPLACED)])
    run = (
        t.engine.unlock(t.channel())
        if kind == "unlock"
        else t.engine.pin_reset(t.channel(), NEW_PIN)
    )
    with pytest.raises(PolicyRefusal) as exc:
        await run
    assert exc.value.code == "card_replaced"
    assert t.uplink.requests == []


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        (REPLACED, "card_replaced"),
        (FORMAL_LOSS, "formal_loss_counter_only"),
        (TEMPORARY_LOSS, None),
    ],
)
async def test_unlock_by_blacklist_reason(reason: str, code: str | None) -> None:
    t = Terminal()
    await t.engine.lock(t.channel())
    t.grant("unlock")
    t.journal.blacklist_snapshot_replace(1, [(t.cid, reason)])
    if code is None:
        await t.engine.unlock(t.channel())
        assert t.card.state == "active"
        return
    with pytest.raises(PolicyRefusal) as exc:
        await t.engine.unlock(t.channel())
    assert exc.value.code == code
    assert t.card.state == "temp_locked"


async def test_locked_card_unknown_to_the_terminal_cannot_be_unlocked() -> None:
    t = Terminal()
    t.card = with_state(t.card, temp_locked=True)
    with pytest.raises(PolicyRefusal) as exc:
        await t.engine.unlock(t.channel())
    assert exc.value.code == "card_unknown"
    t.grant("unlock")
    await t.engine.unlock(t.channel(), card_id_code=t.cid)  # the caller knows it
    assert t.card.state == "active"


async def test_a_card_locked_long_ago_is_still_found_from_its_atr() -> None:
    """A citizen comes back to unlock a card this kiosk locked 1,500 operations ago: the
    locked card answers no READ RECORD, and its ATR's bytes find it in the whole journal."""
    t = Terminal()
    await t.engine.lock(t.channel())
    for i in range(1500):
        t.journal.create_intent(
            TxRecord(Kind.LOCK, t.engine.terminal_id, f"4403{i:028X}", offline=True)
        )
    t.grant("unlock")
    rec = await t.engine.unlock(t.channel())
    assert (rec.card_id_code, t.card.state) == (t.cid, "active")


async def test_two_locked_cards_behind_one_atr_hint_are_not_guessed() -> None:
    """Two journaled locks whose codes share the ATR's bytes: the terminal cannot tell which
    card this is, so it asks for the code instead of unlocking the wrong one."""
    t = Terminal()
    await t.engine.lock(t.channel())
    twin = t.cid[:8] + ("0" if t.cid[8] != "0" else "1") + t.cid[9:]
    assert twin != t.cid
    assert hint_matches(twin, atr_card_hint(t.card.atr) or b"")
    t.journal.create_intent(TxRecord(Kind.AUTO_LOCK, t.engine.terminal_id, twin, offline=True))
    t.grant("unlock")
    with pytest.raises(PolicyRefusal) as exc:
        await t.engine.unlock(t.channel())
    assert exc.value.code == "card_unknown"
    assert t.card.state == "temp_locked"


def test_hint_pattern_is_the_like_form_of_hint_matches() -> None:
    hint = bytes.fromhex("4403AD932A48")
    code = "4403" + "0" * 12 + "AD932A48" + "F" * 8
    assert hint_pattern(hint) == "4403" + "_" * 12 + "AD932A48" + "_" * 8
    assert len(hint_pattern(hint)) == len(code) == 32
    assert hint_matches(code, hint)


@settings(max_examples=300)
@given(st.binary(min_size=16, max_size=16), st.binary(min_size=6, max_size=6), st.booleans())
def test_the_like_pattern_matches_exactly_the_codes_hint_matches_takes(
    code: bytes, hint: bytes, plant: bool
) -> None:
    if plant:  # a code that carries the hint, with random bytes around it
        code = hint[:2] + code[2:8] + hint[2:6] + code[12:]
    text = code.hex().upper()
    with contextlib.closing(sqlite3.connect(":memory:")) as db:
        (like,) = db.execute("SELECT ? LIKE ?", (text, hint_pattern(hint))).fetchone()
    assert bool(like) == hint_matches(text, hint)
    assert plant <= hint_matches(text, hint)


@pytest.mark.parametrize("flow", ["lock", "unlock", "pin_change", "activate"])
async def test_idempotency_key_writes_the_card_once(flow: str) -> None:
    t = await prepared(flow, "des")
    e = t.engine
    calls: dict[str, Any] = {
        "lock": lambda ch: e.lock(ch, idempotency_key="K1"),
        "unlock": lambda ch: e.unlock(ch, idempotency_key="K1"),
        "pin_change": lambda ch: e.pin_change(
            ch, PROFILE.initial_pin, NEW_PIN, idempotency_key="K1"
        ),
        "activate": lambda ch: e.activate(ch, PROFILE.initial_pin, NEW_PIN, idempotency_key="K1"),
    }
    first = await calls[flow](t.channel())
    again = t.channel()
    second = await calls[flow](again)
    assert second.tx_id == first.tx_id
    assert second.seq == first.seq
    assert again.apdu_count == 0  # the card was not even touched
    assert [r.kind for r in t.journal.records()].count(flow) == 1
    with pytest.raises(PolicyRefusal) as exc:  # the key belongs to this operation only
        await e.pin_reset(t.channel(), NEW_PIN, idempotency_key="K1")
    assert exc.value.code == "idempotency_conflict"


async def test_wrong_old_pin_is_a_card_refusal_with_a_failed_record() -> None:
    t = Terminal("sm4")
    with pytest.raises(CardRefusedError) as exc:
        await t.engine.pin_change(t.channel(), "000000", NEW_PIN)
    assert exc.value.code == "pin_wrong"
    rec = exc.value.record
    assert rec is not None
    assert rec.outcome == "failed"
    assert rec.state.value == "sealed"
    assert rec.error_code == "pin_wrong"
    assert t.card.pin == PROFILE.initial_pin
    assert t.card.pin_tries_left == PROFILE.pin_max_tries - 1
    assert t.verify_chain()


async def test_wrong_mac_refusal_changes_nothing() -> None:
    t = Terminal()
    base = t.channel()
    await t.engine.lock(base)
    n = base.apdu_count
    t2 = Terminal(seed=4)
    ch = t2.channel(FaultPlan().force_sw(n - 1, 0x6988, processed=False))
    with pytest.raises(CardRefusedError) as exc:
        await t2.engine.lock(ch)
    assert exc.value.code == "card_security"
    assert t2.card.state == "active"


async def test_memory_failure_after_the_write_is_in_doubt_then_resolved() -> None:
    t = Terminal()
    base = t.channel()
    await t.engine.lock(base)
    n = base.apdu_count
    t2 = Terminal(seed=4)
    ch = t2.channel(FaultPlan().force_sw(n - 1, 0x6581, processed=True))
    with pytest.raises(TransactionInDoubtError) as exc:
        await t2.engine.lock(ch)
    assert exc.value.record is not None
    assert exc.value.record.state.value == "in_doubt"
    seen = await t2.recovery.on_card_seen(t2.channel())
    [res] = seen.resolutions
    assert (res.verdict, res.record.state.value) == ("done", "sealed")
    assert t2.card.state == "temp_locked"


async def test_pull_before_any_write_is_failed_not_sent() -> None:
    t = Terminal()
    with pytest.raises(CardRemovedError):
        await t.engine.lock(t.channel(FaultPlan().pull(15)))  # GET CHALLENGE: after the intent
    [row] = t.journal.records()
    assert (row.state, row.outcome, row.result) == ("sealed", "failed", "not_sent")


async def test_report_loss_offline_is_pending_and_personal_data_stays_out_of_the_body() -> None:
    t = Terminal()
    rec = await t.engine.report_loss("110101199003071234", "A1234567X", "张三")
    assert (rec.kind, rec.result, rec.offline, rec.card_id_code) == (
        Kind.REPORT_LOSS,
        "pending",
        True,
        None,
    )
    assert rec.personal == {"ssn": "110101199003071234", "card_number": "A1234567X", "name": "张三"}
    assert rec.seq is not None
    sealed = t.journal.sealed_record(rec.seq)
    assert sealed is not None
    assert b"110101199003071234" not in sealed.body
    assert decode_body(sealed.body)["personal_digest"] is not None
    assert "110101199003071234" not in repr(t.events) + repr(record_to_json(rec))
    t.uplink.online = True
    assert (await t.engine.report_loss("110101199003071234", "A1234567X")).result == "accepted"
    with pytest.raises(LocalProtocolError):
        await t.engine.report_loss("", "A1234567X")


@pytest.mark.parametrize(
    ("ssn", "number", "name", "message"),
    [
        ("1" * 33, "A1234567X", None, "ssn must be text of 1..32"),
        ("110101199003071234", "9" * 33, None, "card_number must be text of 1..32"),
        ("110101199003071234", "A1234567X", "名" * 65, "name must be text of 1..64"),
    ],
)
async def test_a_loss_report_central_could_not_be_sent_is_refused_before_it_is_journaled(
    ssn: str, number: str, name: str | None, message: str
) -> None:
    """What the sealed copy for central cannot hold is refused at once, so no record is ever
    journaled that could not reach central whole."""
    t = Terminal()
    with pytest.raises(LocalProtocolError, match=message):
        await t.engine.report_loss(ssn, number, name)
    assert t.kinds() == []


async def test_bank_activation_is_online_only() -> None:
    t = Terminal()
    t.bank_applet().blocked = True
    with pytest.raises(PolicyRefusal) as exc:
        await t.engine.bank_activate(t.channel())
    assert exc.value.code == "online_only"
    assert t.bank_applet().blocked
    assert t.bank.requests == 0


async def test_bank_declines_a_bad_cryptogram() -> None:
    t = Terminal(online=True)
    t.bank_applet().blocked = True
    t.bank.host.issuer_master_key = bytes(16)  # another issuer: the ARQC does not verify
    with pytest.raises(CardRefusedError) as exc:
        await t.engine.bank_activate(t.channel())
    assert exc.value.code == "bank_declined"
    assert t.bank_applet().blocked


async def test_offline_activation_limit() -> None:
    ops = dict(DEFAULT_OPERATIONS)
    ops[Kind.ACTIVATE] = OperationPolicy(OfflineMode.LIMITED, 1, 3600.0)
    t = Terminal(state="not_activated")
    t.engine.policy = PolicyConfig(ops)
    await t.engine.activate(t.channel(), PROFILE.initial_pin, NEW_PIN)
    t2 = Terminal(seed=9, state="not_activated", journal=t.journal)
    t2.engine.policy = PolicyConfig(ops)
    with pytest.raises(PolicyRefusal) as exc:
        await t2.engine.activate(t2.channel(), PROFILE.initial_pin, NEW_PIN)
    assert exc.value.code == "offline_limit_reached"
    with pytest.raises(PolicyRefusal) as exc:
        await t.engine.activate(t.channel(), NEW_PIN, "135790")
    assert exc.value.code == "already_active"


async def test_pin_operations_refused_on_a_locked_card() -> None:
    t = Terminal()
    await t.engine.lock(t.channel())
    with pytest.raises(PolicyRefusal) as exc:
        await t.engine.pin_change(t.channel(), PROFILE.initial_pin, NEW_PIN)
    assert exc.value.code == "card_locked"


async def test_blacklisted_card_is_locked_automatically_once() -> None:
    t = Terminal()
    t.journal.blacklist_snapshot_replace(1, [(t.cid, TEMPORARY_LOSS)])
    seen = await t.recovery.on_card_seen(t.channel())
    assert seen.auto_lock is not None
    assert seen.auto_lock.kind is Kind.AUTO_LOCK
    assert seen.auto_lock.reason == "blacklist"
    assert t.card.state == "temp_locked"
    again = await t.recovery.on_card_seen(t.channel())
    assert again.auto_lock is None
    hits = [e.data["action"] for e in t.journal.events() if e.kind == "blacklist_hit"]
    assert hits == ["lock", "already_locked"]
    assert t.kinds() == ["auto_lock"]


async def test_seal_deferred_when_the_psam_fails_then_sealed_by_recovery() -> None:
    t = Terminal()
    psam_channel = t.sam._channel  # the SimChannel of the virtual PSAM
    t.engine._on_event = lambda n, d: psam_channel.pull() if n == "tx_card_written" else None  # type: ignore[attr-defined]
    rec = await t.engine.lock(t.channel())
    assert rec.state.value == "card_done"
    assert t.card.state == "temp_locked"
    assert any(e.kind == "seal_deferred" for e in t.journal.events())
    psam_channel.reinsert()
    assert await t.recovery.seal_pending() == 1
    assert t.journal.get(rec.tx_id).state == "sealed"  # type: ignore[union-attr]
    assert t.verify_chain()


def test_write_detection_and_atr_hint() -> None:
    assert is_card_write(CommandApdu(0x84, 0x1E, 0, 0, bytes(4)))
    assert is_card_write(CommandApdu(0x04, 0xDC, 0x0F, 0x2C, bytes(7)))
    assert is_card_write(CommandApdu(0x80, 0x5E, 1, 0, bytes(7)))
    assert not is_card_write(CommandApdu(0x00, 0x84, 0, 0, ne=4))
    assert not is_card_write(CommandApdu(0x00, 0x20, 0, 0, bytes(3)))
    t = Terminal()
    hint = atr_card_hint(t.card.atr)
    assert hint is not None
    assert hint_matches(t.cid, hint)
    assert not hint_matches(Terminal(seed=8).cid, hint)
    assert atr_card_hint(b"\x3b\x00") is None
    assert atr_card_hint(b"garbage") is None
