"""EF05/EF06 record codecs (agent/ssc/files.py): known vectors, round trips, hostile bytes."""

from __future__ import annotations

import contextlib
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.card import tlv
from agent.errors import CardProtocolError
from agent.ssc import commands as c
from agent.ssc import files as f

# Spec sample (ssc-card-protocol.md §1.3): 639900D15600000500BF7C7A48FB4966
CID_HEX = "639900D15600000500BF7C7A48FB4966"


def rec(spec: c.RecordSpec, value: bytes) -> bytes:
    return bytes((spec.tag, len(value))) + value


def identity_records(**over: bytes) -> dict[int, bytes]:
    values = {
        "card_id_code": bytes.fromhex(CID_HEX),
        "card_type": b"3",
        "spec_version": b"3.00",
        "issue_date": bytes.fromhex("20101001"),
        "expiry_date": bytes.fromhex("20201001"),
        "card_number": b"X00000019",
    }
    values.update(over)
    return {s.tag: rec(s, values[s.name]) for s in c.EF05_RECORDS}


def holder_records(**over: bytes) -> dict[int, bytes]:
    values = {
        "ssn": b"111111198101011110",
        "name": "张三".encode("gbk") + bytes(26),
        "gender": b"1",
        "nation": b"\x01",
        "birthplace": bytes.fromhex("110101"),
        "birth_date": bytes.fromhex("19810101"),
    }
    values.update(over)
    return {s.tag: rec(s, values[s.name]) for s in c.EF06_RECORDS if s.name in values}


# --- known vectors -------------------------------------------------------------------------------
def test_identity_spec_sample() -> None:
    ident = f.decode_identity(identity_records())
    assert ident.card_id.hex == CID_HEX
    assert ident.area_code == "639900"
    assert ident.card_id.serial == bytes.fromhex("00BF7C7A48FB4966")
    assert ident.card_type == "3"
    assert ident.spec_version == "3.00"
    assert ident.generation == 3
    assert ident.issue_date == date(2010, 10, 1)
    assert ident.expiry_date == date(2020, 10, 1)
    assert ident.card_number == "X00000019"
    assert ident.expired(date(2021, 1, 1))
    assert not ident.expired(date(2020, 10, 1))


def test_identity_repr_masks_card_number() -> None:
    text = repr(f.decode_identity(identity_records()))
    assert "X00000019" not in text
    assert "*****0019" in text


def test_holder_spec_sample_and_masking() -> None:
    h = f.decode_holder(holder_records())
    assert h.ssn == "111111198101011110"
    assert h.name == "张三"
    assert h.gender is f.Gender.MALE
    assert h.nation == "01"
    assert h.birthplace == "110101"
    assert h.birth_date == date(1981, 1, 1)
    for text in (repr(h), str(h)):
        assert "111111198101011110" not in text
        assert "张三" not in text
        assert "111111********1110" in text
        assert "张*" in text


def test_name_extension_is_appended() -> None:
    long_name = "阿卜杜热合曼·买买提托合提阿吉艾力"  # 17 characters, 34+ GBK bytes
    raw = long_name.encode("gbk")
    assert len(raw) > 30
    recs = holder_records(name=raw[:30])
    recs[c.NAME_EXT.tag] = rec(c.NAME_EXT, raw[30:] + bytes(20 - len(raw[30:])))
    assert f.decode_holder(recs).name == long_name


def test_empty_name_extension_is_ignored() -> None:
    recs = holder_records()
    recs[c.NAME_EXT.tag] = rec(c.NAME_EXT, bytes(20))
    assert f.decode_holder(recs).name == "张三"


def test_birthplace_f_padding_and_blank() -> None:
    assert f.decode_birthplace(bytes.fromhex("11FFFF")) == "11"
    assert f.decode_birthplace(bytes.fromhex("FFFFFF")) == ""
    assert f.decode_nation(b"\xff") == ""


def test_fci_algorithm() -> None:
    def fci(inner: bytes) -> bytes:
        return tlv.encode(0x6F, tlv.encode(0x84, c.SSSE_AID) + tlv.encode(0xA5, inner))

    assert f.decode_fci_algorithm(fci(tlv.encode(0x9F0C, b"\x86\x01\x03"))) == 0x03
    assert f.decode_fci_algorithm(fci(tlv.encode(0x9F0C, b"\x86\x01\x01"))) == 0x01
    assert f.decode_fci_algorithm(fci(b"")) == 0x01  # absent => DES
    assert f.decode_fci_algorithm(b"") == 0x01
    with pytest.raises(CardProtocolError):
        f.decode_fci_algorithm(fci(tlv.encode(0x9F0C, b"\x86\x02\x01\x01")))
    with pytest.raises(CardProtocolError):
        f.decode_fci_algorithm(tlv.encode(0x6F, tlv.encode(0x84, b"\xa0\x00")))
    with pytest.raises(CardProtocolError):
        f.decode_fci_algorithm(tlv.encode(0x70, b""))


# --- malformed records, one by one --------------------------------------------------------------
BAD_IDENTITY = {
    "rid": {"card_id_code": bytes.fromhex("639900D15600000600BF7C7A48FB4966")},
    "area not bcd": {"card_id_code": bytes.fromhex("6399A0D15600000500BF7C7A48FB4966")},
    "short id": {"card_id_code": bytes.fromhex("639900D156000005")},
    "card type": {"card_type": b"\x01"},
    "spec version": {"spec_version": b"3.0\x00"},
    "spec letters": {"spec_version": b"a.bc"},
    "issue month 13": {"issue_date": bytes.fromhex("20101301")},
    "issue not bcd": {"issue_date": bytes.fromhex("2010100A")},
    "feb 30": {"expiry_date": bytes.fromhex("20200230")},
    "expiry before issue": {"expiry_date": bytes.fromhex("20091001")},
    "card number lower": {"card_number": b"x00000019"},
    "card number nul inside": {"card_number": b"X00\x0000019"},
    "card number empty": {"card_number": bytes(9)},
}


@pytest.mark.parametrize("case", sorted(BAD_IDENTITY))
def test_malformed_identity(case: str) -> None:
    with pytest.raises(CardProtocolError):
        f.decode_identity(identity_records(**BAD_IDENTITY[case]))


BAD_HOLDER = {
    "ssn letters": {"ssn": b"11111119810101111A"},
    "ssn short": {"ssn": b"11111119810101111" + b"\x00"},
    "name not gbk": {"name": b"\xff\xff" + bytes(28)},
    "name blank": {"name": bytes(30)},
    "name control": {"name": b"ab\x07" + bytes(27)},
    "name nul inside": {"name": b"ab\x00cd" + bytes(25)},
    "gender 3": {"gender": b"3"},
    "nation not bcd": {"nation": b"\xa1"},
    "nation one digit": {"nation": b"\x1f"},
    "birthplace odd": {"birthplace": bytes.fromhex("11101F")},
    "birthplace not bcd": {"birthplace": bytes.fromhex("1A0101")},
    "birth date": {"birth_date": bytes.fromhex("19810229")},
}


@pytest.mark.parametrize("case", sorted(BAD_HOLDER))
def test_malformed_holder(case: str) -> None:
    with pytest.raises(CardProtocolError):
        f.decode_holder(holder_records(**BAD_HOLDER[case]))


def test_record_framing_errors() -> None:
    good = rec(c.CARD_TYPE, b"3")
    assert f.decode_record(c.CARD_TYPE, good) == b"3"
    for bad in (b"", b"\x02", b"\x03\x01\x33", b"\x02\x02\x33", b"\x02\x01", b"\x02\x02\x33\x33"):
        with pytest.raises(CardProtocolError):
            f.decode_record(c.CARD_TYPE, bad)
    recs = identity_records()
    del recs[c.CARD_NUMBER.tag]
    with pytest.raises(CardProtocolError, match="missing"):
        f.decode_identity(recs)


# --- round trips ---------------------------------------------------------------------------------
dates = st.dates(min_value=date(1900, 1, 1), max_value=date(9999, 12, 31))
gbk_chars = st.characters(min_codepoint=0x4E00, max_codepoint=0x9FA5).filter(
    lambda ch: len(ch.encode("gbk", errors="ignore")) == 2
)


@st.composite
def identities(draw: st.DrawFn) -> f.CardIdentity:
    issue = draw(dates)
    expiry = draw(st.dates(min_value=issue, max_value=date(9999, 12, 31)))
    return f.CardIdentity(
        card_id=f.CardIdCode.build(
            draw(st.from_regex(r"[0-9]{6}", fullmatch=True)),
            draw(st.binary(min_size=8, max_size=8)),
        ),
        card_type=draw(st.from_regex(r"[0-9A-Za-z]", fullmatch=True)),
        spec_version=draw(st.from_regex(r"[0-9]\.[0-9]{2}", fullmatch=True)),
        issue_date=issue,
        expiry_date=expiry,
        card_number=draw(st.from_regex(r"[0-9A-Z]{1,9}", fullmatch=True)),
    )


@st.composite
def holders(draw: st.DrawFn) -> f.Holder:
    return f.Holder(
        ssn=draw(st.from_regex(r"[0-9]{17}[0-9X]", fullmatch=True)),
        name=draw(st.text(gbk_chars, min_size=1, max_size=25)),
        gender=draw(st.sampled_from(f.Gender)),
        nation=draw(st.from_regex(r"([0-9]{2})?", fullmatch=True)),
        birthplace=draw(st.from_regex(r"([0-9]{2}){0,3}", fullmatch=True)),
        birth_date=draw(dates),
    )


@settings(max_examples=150)
@given(identities())
def test_identity_round_trip(ident: f.CardIdentity) -> None:
    assert f.decode_identity(f.encode_identity(ident)) == ident


@settings(max_examples=150)
@given(holders())
def test_holder_round_trip(h: f.Holder) -> None:
    assert f.decode_holder(f.encode_holder(h)) == h


# --- hostile bytes: only CardProtocolError -------------------------------------------------------
def _only_protocol_errors(fn: object, *args: object) -> None:
    with contextlib.suppress(CardProtocolError):
        fn(*args)  # type: ignore[operator]


@settings(max_examples=200)
@given(st.dictionaries(st.sampled_from([s.tag for s in c.EF05_RECORDS]), st.binary(max_size=24)))
def test_hostile_identity_records(records: dict[int, bytes]) -> None:
    _only_protocol_errors(f.decode_identity, records)


@settings(max_examples=200)
@given(st.dictionaries(st.sampled_from([s.tag for s in c.EF06_RECORDS]), st.binary(max_size=40)))
def test_hostile_holder_records(records: dict[int, bytes]) -> None:
    _only_protocol_errors(f.decode_holder, records)


@settings(max_examples=200)
@given(st.binary(max_size=40))
def test_hostile_elements(value: bytes) -> None:
    for fn in (
        f.CardIdCode.decode,
        f.decode_card_type,
        f.decode_spec_version,
        f.decode_card_number,
        f.decode_date,
        f.decode_ssn,
        f.decode_name,
        f.decode_gender,
        f.decode_nation,
        f.decode_birthplace,
        f.decode_fci_algorithm,
    ):
        _only_protocol_errors(fn, value)
    _only_protocol_errors(f.decode_name, value[:30], value[30:])
    _only_protocol_errors(f.decode_record, c.NAME, value)


@settings(max_examples=200)
@given(identities(), st.data())
def test_mutated_identity_records(ident: f.CardIdentity, data: st.DataObject) -> None:
    """A valid record set with one record's value flipped decodes or raises CardProtocolError."""
    recs = f.encode_identity(ident)
    tag = data.draw(st.sampled_from(sorted(recs)))
    raw = bytearray(recs[tag])
    pos = data.draw(st.integers(0, len(raw) - 1))
    raw[pos] = data.draw(st.integers(0, 255))
    recs[tag] = bytes(raw)
    _only_protocol_errors(f.decode_identity, recs)
