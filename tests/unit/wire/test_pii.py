"""Personal data sealed for central alone (``agent.wire.pii``; docs/MESSAGES.md "Personal data").

Only central's key opens a box, only as the personal data of the record it was made for, and
every box that is not exactly what a terminal makes is a ``WireError`` (never another
exception): round trips, wrong keys, moved boxes, flipped bytes, random bytes, and well-sealed
boxes whose plaintext is not personal data.
"""

from __future__ import annotations

import os

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import ConfigError, WireError
from agent.journal.codec import personal_digest
from agent.wire.codec import PII_MAX_SIZE, PII_MIN_SIZE
from agent.wire.pii import (
    PERSONAL_KEYS,
    SUITE,
    check_personal,
    open_personal,
    pii_public_key,
    seal_personal,
)

KEY = X25519PrivateKey.generate()
T, TX = "440300000001", "019b7a4e-1c3c-7d3a-9a0b-1c2d3e4f5061"
PERSONAL = {"ssn": "440301199001011234", "card_number": "A12345678", "name": "张三丰"}


def _text(key: str) -> st.SearchStrategy[str]:
    return st.text(min_size=1, max_size=PERSONAL_KEYS[key])


personal_data = st.fixed_dictionaries(
    {"ssn": _text("ssn"), "card_number": _text("card_number")},
    optional={"name": _text("name")},
)


@settings(max_examples=60, deadline=None)
@given(personal_data, st.binary(min_size=16, max_size=16))
def test_a_box_opens_with_centrals_key_as_the_same_data_and_salt(
    personal: dict[str, str], salt: bytes
) -> None:
    box = seal_personal(personal, salt, KEY.public_key(), T, TX)
    assert PII_MIN_SIZE <= len(box) <= PII_MAX_SIZE
    data, got_salt = open_personal(box, KEY, T, TX)
    assert (data, got_salt) == (personal, salt)
    assert personal_digest(data, got_salt) == personal_digest(personal, salt)


def test_each_box_is_new_and_the_data_is_not_in_it() -> None:
    salt = os.urandom(16)
    one = seal_personal(PERSONAL, salt, KEY.public_key(), T, TX)
    two = seal_personal(PERSONAL, salt, KEY.public_key(), T, TX)
    assert one != two  # HPKE is randomised: a resend carries another box
    for value in PERSONAL.values():
        assert value.encode() not in one


@pytest.mark.parametrize(
    ("key", "terminal", "tx_id"),
    [
        (X25519PrivateKey.generate(), T, TX),  # another central's key
        (KEY, "440300000002", TX),  # moved to another terminal's record
        (KEY, T, "019b7a4e-1c3c-7d3a-9a0b-1c2d3e4f5062"),  # moved to another record
    ],
    ids=["other-key", "other-terminal", "other-record"],
)
def test_a_box_opens_only_with_centrals_key_for_its_own_record(
    key: X25519PrivateKey, terminal: str, tx_id: str
) -> None:
    box = seal_personal(PERSONAL, os.urandom(16), KEY.public_key(), T, TX)
    with pytest.raises(WireError, match="does not open"):
        open_personal(box, key, terminal, tx_id)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_a_flipped_byte_anywhere_is_refused(data: st.DataObject) -> None:
    box = bytearray(seal_personal(PERSONAL, os.urandom(16), KEY.public_key(), T, TX))
    i = data.draw(st.integers(0, len(box) - 1))
    box[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(WireError):
        open_personal(bytes(box), KEY, T, TX)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=PII_MAX_SIZE + 64))
def test_hostile_bytes_are_a_wire_error_and_nothing_else(box: bytes) -> None:
    with pytest.raises(WireError):
        open_personal(box, KEY, T, TX)


def _sealed(plain: bytes) -> bytes:
    """A box that opens with central's key for the record, holding ``plain``."""
    return SUITE.encrypt(
        plain, KEY.public_key(), b"\x00".join((b"ssc/v1 pii", T.encode(), TX.encode()))
    )


@pytest.mark.parametrize(
    ("plain", "message"),
    [
        (cbor2.dumps(["salt", "personal"] * 20), "map of salt and personal"),
        (
            cbor2.dumps({"salt": bytes(16), "personal": PERSONAL, "x": "y"}, canonical=True),
            "map of salt",
        ),
        (cbor2.dumps({"salt": bytes(15), "personal": PERSONAL}, canonical=True), "salt"),
        (cbor2.dumps({"salt": "s" * 16, "personal": PERSONAL}, canonical=True), "salt"),
        (
            cbor2.dumps(
                {"salt": bytes(16), "personal": {**PERSONAL, "pan": "62" * 8}}, canonical=True
            ),
            "may hold name",
        ),
        (
            cbor2.dumps({"salt": bytes(16), "personal": {"ssn": "1" * 18}}, canonical=True),
            "must hold",
        ),
        (
            cbor2.dumps({"salt": bytes(16), "personal": {**PERSONAL, "ssn": 4403}}, canonical=True),
            "ssn must be text",
        ),
        (
            cbor2.dumps({"personal": PERSONAL, "salt": bytes(16)}),  # members out of order
            "deterministically",
        ),
    ],
    ids=["array", "extra-key", "short-salt", "text-salt", "pan", "no-card-number", "int", "order"],
)
def test_a_well_sealed_box_of_anything_but_personal_data_is_refused(
    plain: bytes, message: str
) -> None:
    box = _sealed(plain)
    assert PII_MIN_SIZE <= len(box) <= PII_MAX_SIZE
    with pytest.raises(WireError, match=message):
        open_personal(box, KEY, T, TX)


@pytest.mark.parametrize(
    "personal",
    [
        {"ssn": "440301199001011234"},
        {"card_number": "A12345678"},
        {**PERSONAL, "pan": "6217001234567890123"},
        {**PERSONAL, "ssn": ""},
        {**PERSONAL, "ssn": "4" * 33},
        {**PERSONAL, "name": "名" * 65},
        {**PERSONAL, "card_number": 12345678},
        ["ssn", "card_number"],
    ],
    ids=["no-card-number", "no-ssn", "pan", "empty", "long-ssn", "long-name", "int", "list"],
)
def test_personal_data_outside_the_box_bounds_is_refused_before_sealing(personal: object) -> None:
    with pytest.raises(WireError):
        check_personal(personal)
    with pytest.raises(WireError):
        seal_personal(personal, os.urandom(16), KEY.public_key(), T, TX)  # type: ignore[arg-type]


def test_a_salt_must_be_16_bytes() -> None:
    with pytest.raises(WireError, match="salt"):
        seal_personal(PERSONAL, bytes(8), KEY.public_key(), T, TX)


def test_the_configured_key_is_hex_x25519_or_empty() -> None:
    raw = KEY.public_key().public_bytes_raw()
    key = pii_public_key(raw.hex().upper())
    assert key is not None
    assert key.public_bytes_raw() == raw
    assert pii_public_key("  ") is None
    for bad in ("zz", raw.hex()[:-2], raw.hex() + "00"):
        with pytest.raises(ConfigError, match="central_pii_key"):
            pii_public_key(bad)


def test_the_documented_example_opens_with_the_example_key_to_its_digest() -> None:
    """docs/MESSAGES.md's loss report is a real one: an integrator can test central's side
    against it (RFC 7748's "Bob" key opens it)."""
    from agent.wire.codec import TxMessage
    from agent.wire.examples import (
        EXAMPLE_PERSONAL,
        EXAMPLE_SALT,
        TERMINAL,
        TX_ID_LOSS,
        example_pii_key,
        examples,
    )

    [loss] = [e for e in examples() if e.title.startswith("tx: report_loss")]
    msg = TxMessage.from_cbor(loss.cbor, validate=True)
    assert msg.pii is not None
    data, salt = open_personal(msg.pii, example_pii_key(), TERMINAL, TX_ID_LOSS)
    assert (data, salt) == (EXAMPLE_PERSONAL, EXAMPLE_SALT)
    assert personal_digest(data, salt) == msg.personal_digest
