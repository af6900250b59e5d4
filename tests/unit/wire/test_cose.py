"""COSE_Sign1 / Ed25519 (RFC 9052 §4.4, RFC 8032): vectors, strictness, pycose interop."""

from __future__ import annotations

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import MessageEncodingError, SignatureError
from agent.wire import cose

# RFC 8032 §7.1, TEST 1 and TEST 2
RFC8032 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
]

KEY = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(RFC8032[0][0]))
OTHER = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(RFC8032[1][0]))
KID = b"central-1"
KEYS = {KID: KEY.public_key()}


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@pytest.mark.parametrize(("secret", "public", "msg", "sig"), RFC8032)
def test_rfc8032_vectors(secret: str, public: str, msg: str, sig: str) -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(secret))
    assert _raw_public(key).hex() == public
    assert key.sign(bytes.fromhex(msg)).hex() == sig


def test_sign_layout_is_rfc9052() -> None:
    data = cose.sign(b"payload", KEY, KID)
    obj = cbor2.loads(data)
    assert obj.tag == 18
    protected, unprotected, payload, signature = obj.value
    assert protected == bytes.fromhex("a10127")  # {1: -8}
    assert dict(unprotected) == {4: KID}
    assert payload == b"payload"
    tbs = cbor2.dumps(["Signature1", protected, b"", b"payload"])
    KEY.public_key().verify(signature, tbs)
    assert cose.sign(b"payload", KEY, KID) == data  # Ed25519 is deterministic


@given(st.binary(max_size=200), st.none() | st.binary(min_size=1, max_size=32))
@settings(max_examples=100)
def test_round_trip(payload: bytes, kid: bytes | None) -> None:
    keys = {kid or b"k": KEY.public_key()}
    v = cose.verify_detailed(cose.sign(payload, KEY, kid), keys)
    assert v.payload == payload
    assert v.kid == (kid or b"k")


def _sign1(protected: bytes, unprotected: dict, payload: bytes, sig: bytes, tag: int = 18) -> bytes:
    return cbor2.dumps(cbor2.CBORTag(tag, [protected, unprotected, payload, sig]))


def _code(data: bytes, keys: dict = KEYS) -> str:
    with pytest.raises(SignatureError) as info:
        cose.verify(data, keys)
    return info.value.code


GOOD = cbor2.loads(cose.sign(b"cmd", KEY, KID)).value
P, U, PAYLOAD, SIG = GOOD[0], dict(GOOD[1]), GOOD[2], GOOD[3]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (cbor2.dumps([P, U, PAYLOAD, SIG]), "unsigned"),  # untagged
        (_sign1(P, U, PAYLOAD, SIG, tag=98), "malformed"),  # COSE_Sign, not Sign1
        (cbor2.dumps(cbor2.CBORTag(18, [P, U, PAYLOAD])), "unsigned"),
        (_sign1(P, U, PAYLOAD, b""), "unsigned"),
        (_sign1(P, U, None, SIG), "unsigned"),  # type: ignore[arg-type]
        (_sign1(P, [], PAYLOAD, SIG), "unsigned"),  # type: ignore[arg-type]
        (_sign1(b"", U, PAYLOAD, SIG), "bad_signature"),  # alg not protected
        (_sign1(cbor2.dumps({1: -7}), U, PAYLOAD, SIG), "bad_signature"),  # ES256
        (_sign1(cbor2.dumps({1: "EdDSA"}), U, PAYLOAD, SIG), "bad_signature"),
        (_sign1(cbor2.dumps({}), {1: -8, 4: KID}, PAYLOAD, SIG), "bad_signature"),
        (_sign1(cbor2.dumps({1: -8, 2: [1]}), U, PAYLOAD, SIG), "bad_signature"),  # crit
        (_sign1(P, {4: KID, 3: 0}, PAYLOAD, SIG), "bad_signature"),
        (_sign1(P, {4: b"unknown"}, PAYLOAD, SIG), "bad_signature"),
        (_sign1(P, U, PAYLOAD, SIG[:-1]), "bad_signature"),
        (_sign1(P, U, PAYLOAD, bytes([SIG[0] ^ 1]) + SIG[1:]), "bad_signature"),
        (_sign1(P, U, b"cmd!", SIG), "bad_signature"),  # payload swapped
        (_sign1(b"\xff", U, PAYLOAD, SIG), "bad_signature"),  # protected not CBOR
        (b"\xd2", "malformed"),
        (b"garbage", "malformed"),
        (b"", "malformed"),
    ],
)
def test_rejections(data: bytes, code: str) -> None:
    assert _code(data) == code


def test_wrong_key_and_forgery() -> None:
    assert _code(cose.sign(b"cmd", OTHER, KID)) == "bad_signature"
    assert _code(cose.sign(b"cmd", OTHER)) == "bad_signature"  # no kid: every key tried
    # a signature over the same payload with a different protected header does not transfer
    forged = _sign1(cbor2.dumps({1: -8, 4: KID}), {}, PAYLOAD, SIG)
    assert _code(forged) == "bad_signature"


def test_kid_in_protected_header_and_external_aad() -> None:
    protected = cbor2.dumps({1: -8, 4: KID}, canonical=True)
    sig = KEY.sign(cose.sig_structure(protected, b"x", b"aad"))
    data = _sign1(protected, {}, b"x", sig)
    assert cose.verify(data, KEYS, external_aad=b"aad") == b"x"
    assert _code(_sign1(protected, {4: KID}, b"x", sig)) == "bad_signature"  # kid twice
    with pytest.raises(SignatureError):
        cose.verify(data, KEYS)  # without the aad


def test_size_limit() -> None:
    data = cose.sign(b"x" * 2000, KEY, KID)
    with pytest.raises(SignatureError):
        cose.verify(data, KEYS, max_size=1000)


def test_sign_rejects_bad_arguments() -> None:
    with pytest.raises(MessageEncodingError):
        cose.sign("text", KEY)  # type: ignore[arg-type]
    with pytest.raises(MessageEncodingError):
        cose.sign(b"x", KEY, b"k" * 33)


@given(st.binary(max_size=200))
@settings(max_examples=200)
def test_random_bytes_only_signature_error(raw: bytes) -> None:
    with pytest.raises(SignatureError):
        cose.verify(raw, KEYS)


# ---------------------------------------------------------------------------------------------
# pycose interop. pycose 1.1 cannot decode under cbor2 6 (a tag's array decodes as a tuple and
# pycose checks for a list), so its decode is fed the decoded structure as lists.
# ---------------------------------------------------------------------------------------------
pycose = pytest.importorskip("pycose")


def _pycose_key(private: bool) -> object:
    from pycose.keys import OKPKey
    from pycose.keys.curves import Ed25519

    d = KEY.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return OKPKey(crv=Ed25519, x=_raw_public(KEY), d=d if private else b"")


def test_pycose_verifies_ours() -> None:
    from pycose.messages import Sign1Message

    value = cbor2.loads(cose.sign(b"for pycose", KEY, KID)).value
    msg = Sign1Message.from_cose_obj([value[0], dict(value[1]), value[2], value[3]], True)
    msg.key = _pycose_key(private=False)
    assert msg.verify_signature()
    assert msg.payload == b"for pycose"


def test_we_verify_pycose() -> None:
    from pycose.algorithms import EdDSA
    from pycose.headers import KID as KID_HDR
    from pycose.headers import Algorithm
    from pycose.messages import Sign1Message

    msg = Sign1Message(phdr={Algorithm: EdDSA}, uhdr={KID_HDR: KID}, payload=b"from pycose")
    msg.key = _pycose_key(private=True)
    data = msg.encode()
    assert cose.verify(data, KEYS) == b"from pycose"
    assert cbor2.loads(data).value[0] == bytes.fromhex("a10127")
