"""The strict CBOR decoder refuses hostile input with WireError only (RFC 8949 §5)."""

from __future__ import annotations

import contextlib

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import LocalProtocolError, WireError
from agent.wire import cbor

HOSTILE = {
    "empty": b"",
    "huge bstr length": bytes.fromhex("5b7fffffffffffffff00"),
    "huge tstr length": bytes.fromhex("7b00000000ffffffff41"),
    "huge array length": bytes.fromhex("9b7fffffffffffffff"),
    "huge map length": bytes.fromhex("bb7fffffffffffffff"),
    "deep arrays": b"\x81" * 10_000 + b"\x00",
    "deep maps": b"\xa1\x61a" * 100 + b"\x00",
    "indefinite array": bytes.fromhex("9f01ff"),
    "indefinite bstr": bytes.fromhex("5f4101ff"),
    "break alone": bytes.fromhex("ff"),
    "reserved ai": bytes.fromhex("1c"),
    "regex tag": bytes.fromhex("d823") + cbor2.dumps("(a+)+$"),
    "mime tag": bytes.fromhex("d824") + cbor2.dumps("x"),
    "bignum tag": bytes.fromhex("c2") + cbor2.dumps(b"\xff" * 5000),
    "nested tag 18": cbor2.dumps([cbor2.CBORTag(18, [])]),
    "set tag": cbor2.dumps(cbor2.CBORTag(258, [1])),
    "shared ref": cbor2.dumps(cbor2.CBORTag(29, 0)),
    "undefined": bytes.fromhex("f7"),
    "simple 16": bytes.fromhex("f0"),
    "simple 255": bytes.fromhex("f8ff"),
    "duplicate keys": bytes.fromhex("a2616101616102"),
    "array key": bytes.fromhex("a1810101"),
    "bytes key": bytes.fromhex("a1410101"),
    "float key": bytes.fromhex("a1f93c0001"),
    "trailing byte": b"\x01\x02",
    "bad utf8": bytes.fromhex("62ffff"),
    "truncated head": bytes.fromhex("19ff"),
    "truncated float": bytes.fromhex("fb0000"),
    "truncated map": bytes.fromhex("a26161"),
}


#: Plain values of every CBOR major type but tags and floats, nested.
_VALUES = st.recursive(
    st.one_of(
        st.integers(-(2**64), 2**64 - 1),
        st.text(max_size=5),
        st.binary(max_size=5),
        st.booleans(),
        st.none(),
    ),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=20,
)


@pytest.mark.parametrize("raw", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_inputs_raise_wire_error(raw: bytes) -> None:
    with pytest.raises(WireError):
        cbor.decode(raw)


def test_tag_allowed_only_at_top_when_asked() -> None:
    tagged = cbor2.dumps(cbor2.CBORTag(18, [b"", {}, b"", b""]))
    assert cbor.decode(tagged, top_tag=18).tag == 18
    with pytest.raises(WireError):
        cbor.decode(tagged)
    with pytest.raises(WireError):
        cbor.decode(cbor2.dumps(cbor2.CBORTag(17, [])), top_tag=18)
    with pytest.raises(WireError):
        cbor.decode(cbor2.dumps(cbor2.CBORTag(18, cbor2.CBORTag(18, 1))), top_tag=18)


def test_limits() -> None:
    with pytest.raises(WireError, match="exceeds"):
        cbor.decode(cbor2.dumps(b"x" * 100), max_size=50)
    with pytest.raises(WireError, match="deeper"):
        cbor.decode(b"\x81" * 5 + b"\x00", max_depth=4)
    assert cbor.decode(b"\x81" * 4 + b"\x00", max_depth=4) == [[[[0]]]]
    with pytest.raises(WireError, match="items"):
        cbor.decode(cbor2.dumps(list(range(20))), max_items=10)


def test_accepts_plain_values() -> None:
    value = {"a": [1, -2, 2**64 - 1, -(2**64), 1.5, True, False, None, b"\x00", "文"], 7: {}}
    assert cbor.decode(cbor2.dumps(value)) == value


def test_non_bytes_input() -> None:
    with pytest.raises(WireError):
        cbor.decode("text")  # type: ignore[arg-type]


@given(st.binary(max_size=200))
@settings(max_examples=200)
def test_random_bytes(raw: bytes) -> None:
    with contextlib.suppress(WireError):
        cbor.decode(raw, top_tag=18)


@given(_VALUES)
@settings(max_examples=200)
def test_scanner_agrees_with_cbor2_on_valid_values(value: object) -> None:
    raw = cbor2.dumps(value, canonical=True)
    assert cbor.decode(raw) == value
    assert cbor.encode(value) == raw


@given(st.binary(min_size=1, max_size=60))
@settings(max_examples=200)
def test_scanner_never_accepts_what_cbor2_rejects(raw: bytes) -> None:
    try:
        cbor.scan(raw, top_tag=None)
    except WireError:
        return
    try:
        cbor2.loads(raw)
    except cbor2.CBORDecodeError as exc:
        message = str(exc)
    else:
        return
    # only semantic errors (invalid UTF-8 text) may get past the well-formedness scan
    assert "text string" in message or "utf" in message.lower()


def test_encode_rejects_unencodable() -> None:
    with pytest.raises(LocalProtocolError):
        cbor.encode(object())


def test_diagnostic_notation() -> None:
    value = cbor2.CBORTag(18, [b"\xa1\x01\x27", {4: b"k"}, None, [True, 1.5, 'a"b']])
    assert cbor.diagnostic(value) == "18([h'a10127', {4: h'6b'}, null, [true, 1.5, \"a\\\"b\"]])"
    assert cbor.diagnostic({"bb": 1, "a": 2}) == '{"a": 2, "bb": 1}'


# ---- decode_deterministic: cbor2's own limits, every tag refused, one encoding only -----------
#: Inputs ``decode`` refuses that are well-formed, deterministic CBOR without tags: these
#: decode here as values (the typed check of the caller refuses them).
_DETERMINISTIC_VALUES = {
    "undefined",
    "simple 16",
    "simple 255",
    "array key",
    "bytes key",
    "float key",
}


@pytest.mark.parametrize(
    "raw",
    [v for k, v in HOSTILE.items() if k not in _DETERMINISTIC_VALUES],
    ids=[k for k in HOSTILE if k not in _DETERMINISTIC_VALUES],
)
def test_deterministic_decode_refuses_hostile_input(raw: bytes) -> None:
    with pytest.raises(WireError):
        cbor.decode_deterministic(raw)


@pytest.mark.parametrize("tag", [0, 1, 2, 3, 4, 5, 18, 21, 24, 25, 28, 29, 35, 36, 37, 258, 1004,
                                 55799, 1000, 2**32])  # fmt: skip
def test_deterministic_decode_refuses_every_tag_anywhere(tag: int) -> None:
    """Built-in semantic tags and unknown ones, at the top and nested: none is decoded."""
    for value in (cbor2.CBORTag(tag, "x"), [1, cbor2.CBORTag(tag, b"\x01")]):
        with pytest.raises(WireError, match="malformed"):
            cbor.decode_deterministic(cbor2.dumps(value, canonical=True))


def test_deterministic_decode_refuses_other_encodings_of_a_value() -> None:
    for raw in (
        bytes.fromhex("1801"),  # 1 in two bytes
        bytes.fromhex("a2616201616102"),  # {"b": 1, "a": 2}: keys out of order
        bytes.fromhex("f93c00"),  # 1.0 as a half float is fine ...
    )[:2]:
        with pytest.raises(WireError, match="not deterministically encoded"):
            cbor.decode_deterministic(raw)
    with pytest.raises(WireError, match="not deterministically encoded"):
        cbor.decode_deterministic(bytes.fromhex("fb3ff0000000000000"))  # ... not as a double


def test_deterministic_decode_limits() -> None:
    with pytest.raises(WireError, match="exceeds"):
        cbor.decode_deterministic(cbor2.dumps(b"x" * 100), max_size=50)
    assert cbor.decode_deterministic(b"\x81" * 4 + b"\x00", max_depth=4) == [[[[0]]]]
    with pytest.raises(WireError):
        cbor.decode_deterministic(b"\x81" * 5 + b"\x00", max_depth=4)
    with pytest.raises(WireError):
        cbor.decode_deterministic("text")  # type: ignore[arg-type]


@given(st.binary(max_size=200))
@settings(max_examples=300)
def test_deterministic_decode_of_random_bytes_is_a_value_or_wire_error(raw: bytes) -> None:
    """Whatever it accepts is the one deterministic encoding of what it returns."""
    try:
        value = cbor.decode_deterministic(raw)
    except WireError:
        return
    assert cbor2.dumps(value, canonical=True) == raw


@given(_VALUES)
@settings(max_examples=200)
def test_deterministic_decode_agrees_with_the_strict_decoder(value: object) -> None:
    raw = cbor.encode(value)
    assert cbor.decode_deterministic(raw) == cbor.decode(raw) == value
