"""Bank application host flows (agent.emv.app) against the simulated PBOC applet."""

from __future__ import annotations

import asyncio
from datetime import date

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.card.apdu import ResponseApdu
from agent.emv import app as emv
from agent.emv.dol import default_terminal_data
from agent.errors import (
    ApplicationLockedError,
    CardProtocolError,
    CardStatusError,
    FileNotFoundOnCardError,
)
from agent.sim.pboc import CDOL1, PPSE_NAME, DirectoryEntry, PbocApplet, PseApplet

from ._card import HOLDER_ID, HOLDER_NAME, PAN, AppletCard, TamperingCard, bank_card, make_applet

TERMINAL = default_terminal_data(unpredictable=b"\x01\x02\x03\x04")


@pytest.mark.parametrize("t0", [False, True])
async def test_read_bank_app_via_pse(t0: bool) -> None:
    card, applet = bank_card(t0=t0)
    info = await emv.read_bank_app(card, terminal=TERMINAL)
    assert info.aid == emv.UNIONPAY_DEBIT
    assert info.label == "UnionPay Debit"
    assert info.pan == PAN
    assert info.psn == 1
    assert info.expiry == date(2031, 12, 31)
    assert info.effective == date(2021, 12, 1)
    assert info.holder_name == HOLDER_NAME
    assert info.holder_id == HOLDER_ID
    assert info.holder_id_type == 0
    assert info.pin_tries == 3
    assert info.atc == 0
    assert not info.blocked
    assert info.aip == bytes.fromhex("7C00")
    assert info.cdol1 == CDOL1
    # the PSE was used: its directory record was read
    assert any(raw.startswith(bytes.fromhex("00A404000E")) for raw, _ in card.log)
    assert any(raw[:4] == bytes.fromhex("00B2010C") for raw, _ in card.log)
    del applet


async def test_personal_data_is_masked() -> None:
    card, _ = bank_card()
    info = await emv.read_bank_app(card, terminal=TERMINAL)
    assert info.masked_pan == "621700*********0123"
    assert info.masked_id == "110101********1234"
    assert info.masked_name == "张**"
    text = repr(info)
    for secret in (PAN, HOLDER_ID, HOLDER_NAME):
        assert secret not in text
    masked = info.to_dict()
    assert masked["pan"] == info.masked_pan
    assert masked["holder_id"] == info.masked_id
    assert PAN not in str(masked)
    assert info.to_dict(show_pii=True)["pan"] == PAN


async def test_ppse_when_no_pse() -> None:
    applet = make_applet()
    ppse = PseApplet.for_applets([applet])
    ppse.aids = (PPSE_NAME,)
    card = AppletCard([ppse, applet])
    entries = await emv.find_applications(card)
    assert entries == [emv.ApplicationEntry(emv.UNIONPAY_DEBIT, "UnionPay Debit", 1)]
    assert card.log[0][1] == b"\x6a\x82"  # PSE not found first


async def test_direct_selection_when_no_directory() -> None:
    card, _ = bank_card(pse=False, aid=emv.UNIONPAY_CREDIT, label="UnionPay Credit")
    entries = await emv.find_applications(card)
    assert [e.aid for e in entries] == [emv.UNIONPAY_CREDIT]
    info = await emv.read_bank_app(card, terminal=TERMINAL)
    assert info.aid == emv.UNIONPAY_CREDIT


async def test_no_application() -> None:
    card = AppletCard([])
    with pytest.raises(FileNotFoundOnCardError):
        await emv.read_bank_app(card)


async def test_directory_priority_order() -> None:
    a = make_applet(aid=emv.UNIONPAY_CREDIT, label="Credit")
    b = make_applet(aid=emv.UNIONPAY_DEBIT, label="Debit")
    pse = PseApplet([DirectoryEntry(a.aid, "Credit", 2), DirectoryEntry(b.aid, "Debit", 1)])
    card = AppletCard([pse, a, b])
    entries = await emv.read_pse(card)
    assert [e.label for e in entries] == ["Debit", "Credit"]


async def test_blocked_application_is_read_and_reported() -> None:
    card, _ = bank_card(blocked=True)
    info = await emv.read_bank_app(card, terminal=TERMINAL)
    assert info.blocked
    assert info.pan == PAN
    assert info.aip is None  # GPO not attempted on a blocked app
    gpo = [raw for raw, _ in card.log if raw[:2] == b"\x80\xa8"]
    assert gpo == []


async def test_blocked_application_refuses_gpo() -> None:
    card, _ = bank_card(blocked=True)
    app = await emv.select_application(card, emv.UNIONPAY_DEBIT)
    assert app.blocked
    with pytest.raises(CardStatusError) as ei:
        await emv.get_processing_options(card, app, TERMINAL)
    assert ei.value.sw == 0x6985


async def test_card_blocked_raises_locked() -> None:
    card, _ = bank_card(pse=False, card_blocked=True)
    with pytest.raises(ApplicationLockedError) as ei:
        await emv.select_application(card, emv.UNIONPAY_DEBIT)
    assert ei.value.sw == 0x6A81


async def test_generate_ac_increments_atc() -> None:
    card, applet = bank_card()
    info = await emv.read_bank_app(card, terminal=TERMINAL)
    assert info.cdol1 is not None
    ac = await emv.generate_ac(card, info.cdol1, TERMINAL)
    assert ac.kind is emv.Cryptogram.ARQC
    assert ac.atc == 1 == applet.atc
    assert len(ac.cryptogram) == 8
    assert await emv.get_atc(card) == 1


async def test_get_data_absent_is_none() -> None:
    card, _ = bank_card()
    await emv.select_application(card, emv.UNIONPAY_DEBIT)
    assert await emv.get_data(card, 0x9F79) is None


# ---- pure decoders ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("afl", "ok"),
    [
        ("08010200", True),
        ("0801020010010301", True),
        ("", False),
        ("080102", False),
        ("00010100", False),  # SFI 0
        ("F8010100", False),  # SFI 31
        ("09010100", False),  # low bits set
        ("08000100", False),  # record 0
        ("08030200", False),  # last < first
        ("08010103", False),  # offline count too large
        ("08" + "01FF00", False),  # 255 records > bound
    ],
)
def test_parse_afl(afl: str, ok: bool) -> None:
    raw = bytes.fromhex(afl)
    if ok:
        assert len(emv.parse_afl(raw)) == len(raw) // 4
    else:
        with pytest.raises(CardProtocolError):
            emv.parse_afl(raw)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("311231", date(2031, 12, 31)),
        ("491130", date(2049, 11, 30)),
        ("991231", date(1999, 12, 31)),
    ],
)
def test_decode_date(value: str, expected: date) -> None:
    assert emv.decode_date(bytes.fromhex(value), "x") == expected


@pytest.mark.parametrize("value", ["311331", "3112", "31123F", "310230", "AABBCC"])
def test_decode_date_rejects(value: str) -> None:
    with pytest.raises(CardProtocolError):
        emv.decode_date(bytes.fromhex(value), "x")


def test_pan_decoders() -> None:
    assert emv.decode_pan(bytes.fromhex("6217001234567890123F")) == PAN
    assert emv.pan_from_track2(bytes.fromhex("6217001234567890123D31122201")) == PAN
    for bad in ("62170012", "6217001234567890123A", "FFFFFFFFFF"):
        with pytest.raises(CardProtocolError):
            emv.decode_pan(bytes.fromhex(bad))
    with pytest.raises(CardProtocolError):
        emv.pan_from_track2(bytes.fromhex("62170012345678901231"))


# ---- hostile card -------------------------------------------------------------------------------

ALLOWED = (CardProtocolError, CardStatusError)

sws = st.one_of(
    st.sampled_from([0x9000, 0x6283, 0x6A83, 0x6A82, 0x6985, 0x6A81, 0x6100, 0x6C05]),
    st.integers(0, 0xFFFF),
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    index=st.integers(0, 10),
    data=st.binary(max_size=80),
    sw=sws,
    keep_data=st.booleans(),
    t0=st.booleans(),
)
def test_hostile_answer_at_any_step(
    index: int, data: bytes, sw: int, keep_data: bool, t0: bool
) -> None:
    card, _ = bank_card(t0=t0)

    def fake(real: ResponseApdu) -> bytes:
        body = real.data[: len(data)] + data if keep_data else data
        return body + sw.to_bytes(2, "big")

    chan = TamperingCard(card, index, fake)
    try:
        info = asyncio.run(emv.read_bank_app(chan, terminal=TERMINAL))
    except ALLOWED:
        return
    assert len(info.pan) >= 12


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=120), st.booleans())
def test_hostile_record_bytes(record: bytes, directory_too: bool) -> None:
    """Any bytes as every READ RECORD answer: only protocol or status errors."""

    class RecordForger(AppletCard):
        def _raw(self, raw: bytes) -> bytes:
            in_app = isinstance(self.selected, PbocApplet)
            if raw[:2] == b"\x00\xb2" and (directory_too or in_app):
                return record + b"\x90\x00"
            return super()._raw(raw)

    card, _ = bank_card()
    forger = RecordForger(card.applets)
    try:
        info = asyncio.run(emv.read_bank_app(forger, terminal=TERMINAL))
    except ALLOWED:
        return
    assert info.pan.isdigit()
