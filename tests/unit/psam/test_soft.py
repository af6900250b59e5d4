"""SoftSecurityModule and the helpers central uses (agent/psam/soft.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import ConfigError, LocalProtocolError, SecurityModuleError
from agent.profile import load_profile, parse_profile
from agent.psam.crypto import Algorithm
from agent.psam.soft import (
    SoftSecurityModule,
    card_key,
    compute_seal,
    seal_function,
    seal_key,
    verify_seal,
)
from tests.unit.psam._support import ref_diversify, ref_ecb, ref_retail_mac, ref_sm4_mac

PROFILE = load_profile("default")
H = bytes.fromhex
TN = H("440300907950")
CARD_ID = H("440300") + H("D156000005") + H("0123456789ABCDEF")
NO_KEYS = parse_profile(
    {
        "name": "production-like",
        "psam_aid": "D156000005535343",
        "keys": {
            "stk": {"usage": 0x46, "index": 1, "factors": ["serial", "area"]},
            "seal": {"usage": 0x26, "index": 0x10, "factors": ["terminal"]},
        },
    }
)


@pytest.mark.parametrize("alg", list(Algorithm), ids=lambda a: a.value)
@pytest.mark.parametrize("purpose", ["stk", "rkssse", "rpk", "puk"])
def test_card_key_is_master_diversified_by_serial_then_area(alg: Algorithm, purpose: str) -> None:
    want = ref_diversify(
        alg.value,
        PROFILE.master_key(alg.value, purpose),
        [H("0123456789ABCDEF"), H("4403000000000000")],
    )
    assert card_key(PROFILE, alg, purpose, CARD_ID) == want


def test_card_key_differs_per_card_and_algorithm() -> None:
    other = CARD_ID[:-1] + b"\x00"
    k = card_key(PROFILE, Algorithm.DES, "stk", CARD_ID)
    assert k != card_key(PROFILE, Algorithm.DES, "stk", other)
    assert k != card_key(PROFILE, Algorithm.SM4, "stk", CARD_ID)
    with pytest.raises(ConfigError):
        card_key(PROFILE, Algorithm.DES, "stk", CARD_ID[:15])


async def test_soft_card_mac_and_encrypt_use_the_card_key() -> None:
    soft = SoftSecurityModule(PROFILE, TN)
    factors = [H("0123456789ABCDEF"), H("4403000000000000")]
    key = card_key(PROFILE, Algorithm.DES, "stk", CARD_ID)
    mac = await soft.card_mac("stk", Algorithm.DES, factors, H("11223344"), H("841E000004"))
    assert mac == ref_retail_mac(key, H("1122334400000000"), H("841E000004"))[:4]
    key4 = card_key(PROFILE, Algorithm.SM4, "puk", CARD_ID)
    mac = await soft.card_mac("puk", Algorithm.SM4, factors, bytes(8), b"abc")
    assert mac == ref_sm4_mac(key4, bytes(16), b"abc")[:4]
    enc = await soft.encrypt("rkssse", Algorithm.SM4, factors, bytes(16))
    assert enc == ref_ecb("sm4", card_key(PROFILE, Algorithm.SM4, "rkssse", CARD_ID), bytes(16))
    assert await soft.terminal_number() == TN


async def test_soft_rejects_bad_use() -> None:
    soft = SoftSecurityModule(PROFILE, TN)
    with pytest.raises(LocalProtocolError):
        await soft.card_mac("stk", Algorithm.DES, [bytes(8)], bytes(4), b"")
    with pytest.raises(LocalProtocolError):
        await soft.encrypt("stk", Algorithm.DES, [bytes(8)] * 2, bytes(7))
    with pytest.raises(ConfigError):
        await soft.card_mac("xyz", Algorithm.DES, [], bytes(4), b"")
    for bad in (H("4403009079"), H("44030090795A")):
        with pytest.raises(LocalProtocolError):
            SoftSecurityModule(PROFILE, bad)


async def test_profile_without_test_keys_refuses() -> None:
    soft = SoftSecurityModule(NO_KEYS, TN)
    with pytest.raises(SecurityModuleError):
        await soft.card_mac("stk", Algorithm.DES, [bytes(8)] * 2, bytes(4), b"")
    with pytest.raises(SecurityModuleError):
        await soft.seal_mac(bytes(32))
    with pytest.raises(SecurityModuleError):
        verify_seal(NO_KEYS, TN, bytes(32), bytes(8))


def test_seal_key_and_compute_seal() -> None:
    key = ref_diversify("sm4", PROFILE.master_key("sm4", "seal"), [TN + bytes(2)])
    assert seal_key(PROFILE, TN) == key
    assert compute_seal(PROFILE, TN, b"digest") == ref_sm4_mac(key, bytes(16), b"digest")[:8]


@settings(max_examples=100, deadline=None)
@given(digest=st.binary(max_size=64), flip=st.integers(0, 63))
def test_verify_seal(digest: bytes, flip: int) -> None:
    seal = compute_seal(PROFILE, TN, digest)
    assert len(seal) == 8
    assert verify_seal(PROFILE, TN, digest, seal)
    bad = bytearray(seal)
    bad[flip // 8] ^= 1 << (flip % 8)
    assert not verify_seal(PROFILE, TN, digest, bytes(bad))
    assert not verify_seal(PROFILE, TN, digest, seal[:4])
    assert not verify_seal(PROFILE, TN, digest + b"\x00", seal)
    assert not verify_seal(PROFILE, H("440300907951"), digest, seal)


@pytest.mark.parametrize("terminal", [b"", H("4403009079"), H("44030090795001"), H("4403009079AF")])
def test_verify_seal_bad_terminal_number_is_false(terminal: bytes) -> None:
    assert not verify_seal(PROFILE, terminal, b"d", bytes(8))


@settings(max_examples=50)
@given(digest=st.binary(min_size=0, max_size=64))
async def test_seal_function_and_the_module_seal_as_compute_seal(digest: bytes) -> None:
    """The cached-key paths (``seal_function``, ``SoftSecurityModule.seal_mac``) give the
    reference MAC over the derived seal key."""
    want = ref_sm4_mac(seal_key(PROFILE, TN), bytes(16), digest)[:8]
    assert compute_seal(PROFILE, TN, digest) == want
    assert seal_function(PROFILE, TN)(digest) == want
    assert await SoftSecurityModule(PROFILE, TN).seal_mac(digest) == want
