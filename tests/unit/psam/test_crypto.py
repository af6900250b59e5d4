"""Known-answer and property tests for agent.psam.crypto (ssc-card-protocol.md §2, §3)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import LocalProtocolError
from agent.psam import crypto
from agent.psam.crypto import Algorithm
from tests.unit.psam._support import ref_diversify, ref_ecb, ref_retail_mac, ref_sm4_mac

K_SM4 = bytes.fromhex("0123456789abcdeffedcba9876543210")
K_DES = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")

keys = st.binary(min_size=16, max_size=16)
factor = st.binary(min_size=8, max_size=8)


# ---------------------------------------------------------------------------- known answers
def test_sm4_gbt32907_vector() -> None:
    # GB/T 32907-2016 appendix A, example 1
    out = crypto.ecb_encrypt(Algorithm.SM4, K_SM4, K_SM4)
    assert out.hex() == "681edf34d206965e86b3e94f536e4246"
    assert crypto.ecb_decrypt(Algorithm.SM4, K_SM4, out) == K_SM4


@pytest.mark.slow
def test_sm4_gbt32907_million_iterations() -> None:
    # GB/T 32907-2016 appendix A, example 2: encrypt 1,000,000 times with the same key
    # One encryptor from the module's own cipher factory (ecb_encrypt per call takes ~15 s).
    enc = crypto._sm4(K_SM4).encryptor()
    x = K_SM4
    for _ in range(1_000_000):
        x = enc.update(x)
    assert x.hex() == "595298c7c6fd271f0402f804c33d3f66"


def test_3des_ecb_vector() -> None:
    # Two-key 3DES with K1 = K2 reduces to single DES: FIPS 81 / classic "Now is t" vector.
    k = bytes.fromhex("0123456789ABCDEF") * 2
    assert crypto.ecb_encrypt(Algorithm.DES, k, b"Now is t").hex() == "3fa40e8a984d4815"


def test_retail_mac_lock_command_vector() -> None:
    # ssc-card-protocol.md §7: key 0123…3210, IV 11223344 00000000, data 841E000004 → 40D016F4
    iv = bytes.fromhex("1122334400000000")
    out = crypto.retail_mac(K_DES, bytes.fromhex("841E000004"), iv)
    assert out[:4].hex().upper() == "40D016F4"
    assert crypto.mac(Algorithm.DES, K_DES, bytes.fromhex("841E000004"), iv) == out
    assert out == ref_retail_mac(K_DES, iv, bytes.fromhex("841E000004"))


def test_card_mac_iv_left_aligns_challenge() -> None:
    assert crypto.card_mac_iv(Algorithm.DES, b"\x11\x22\x33\x44").hex() == "1122334400000000"
    assert crypto.card_mac_iv(Algorithm.SM4, bytes(range(8))) == bytes(range(8)) + bytes(8)
    with pytest.raises(LocalProtocolError):
        crypto.card_mac_iv(Algorithm.DES, bytes(9))


def test_algorithm_indicator() -> None:
    assert Algorithm.from_indicator(0x01) is Algorithm.DES
    assert Algorithm.from_indicator(0x03) is Algorithm.SM4
    assert Algorithm.DES.indicator == 1
    assert Algorithm.SM4.indicator == 3
    assert Algorithm.DES.block_size == 8
    assert Algorithm.SM4.block_size == 16
    with pytest.raises(LocalProtocolError):
        Algorithm.from_indicator(0x02)  # SSF33 is not supported


# ---------------------------------------------------------------------------- diversification
@pytest.mark.parametrize("alg", list(Algorithm))
def test_diversify_zero_levels_is_master(alg: Algorithm) -> None:
    assert crypto.diversify(alg, K_DES, []) == K_DES


def test_diversify_des_level_is_encrypt_factor_and_inverse() -> None:
    f = bytes.fromhex("0001020304050607")
    out = crypto.diversify(Algorithm.DES, K_DES, [f])
    assert out[:8] == ref_ecb("des", K_DES, f)
    assert out[8:] == ref_ecb("des", K_DES, bytes(b ^ 0xFF for b in f))


def test_diversify_sm4_level_is_one_block_of_factor_and_inverse() -> None:
    f = bytes.fromhex("0001020304050607")
    out = crypto.diversify(Algorithm.SM4, K_SM4, [f])
    assert out == ref_ecb("sm4", K_SM4, f + bytes(b ^ 0xFF for b in f))


@pytest.mark.parametrize("alg", list(Algorithm))
@settings(max_examples=60, deadline=None)
@given(master=keys, fs=st.lists(factor, min_size=0, max_size=3))
def test_diversify_matches_reference_and_composes(
    alg: Algorithm, master: bytes, fs: list[bytes]
) -> None:
    out = crypto.diversify(alg, master, fs)
    assert len(out) == 16
    assert out == ref_diversify(alg.value, master, fs)
    # level by level equals all at once
    step = master
    for f in fs:
        step = crypto.diversify(alg, step, [f])
    assert step == out


@pytest.mark.parametrize("alg", list(Algorithm))
@settings(max_examples=60, deadline=None)
@given(master=keys, a=factor, b=factor)
def test_diversify_distinct_factors_give_distinct_keys(
    alg: Algorithm, master: bytes, a: bytes, b: bytes
) -> None:
    # a block cipher is a permutation: distinct factor blocks never collide
    ka, kb = crypto.diversify(alg, master, [a]), crypto.diversify(alg, master, [b])
    assert (ka == kb) == (a == b)


@pytest.mark.parametrize(
    ("master", "fs"),
    [
        (bytes(15), []),
        (bytes(16), [bytes(7)]),
        (bytes(16), [bytes(9)]),
        (bytes(16), [bytes(8)] * 4),
    ],
)
@pytest.mark.parametrize("alg", list(Algorithm))
def test_diversify_rejects_bad_input(alg: Algorithm, master: bytes, fs: list[bytes]) -> None:
    with pytest.raises(LocalProtocolError):
        crypto.diversify(alg, master, fs)


# ---------------------------------------------------------------------------- MACs and padding
@settings(max_examples=150, deadline=None)
@given(key=keys, iv=st.binary(min_size=8, max_size=8), data=st.binary(max_size=100))
def test_retail_mac_equals_reference(key: bytes, iv: bytes, data: bytes) -> None:
    assert crypto.retail_mac(key, data, iv) == ref_retail_mac(key, iv, data)


@settings(max_examples=150, deadline=None)
@given(key=keys, iv=st.binary(min_size=16, max_size=16), data=st.binary(max_size=100))
def test_sm4_mac_equals_reference(key: bytes, iv: bytes, data: bytes) -> None:
    assert crypto.sm4_cbc_mac(key, data, iv) == ref_sm4_mac(key, iv, data)
    assert crypto.mac(Algorithm.SM4, key, data, iv) == ref_sm4_mac(key, iv, data)


@settings(max_examples=100, deadline=None)
@given(key=keys, data=st.lists(st.binary(max_size=70), min_size=1, max_size=4))
def test_keyed_sm4_mac_function_equals_reference_call_after_call(
    key: bytes, data: list[bytes]
) -> None:
    """One encryptor serves every call: nothing of one MAC's chaining leaks into the next."""
    cbc_mac = crypto.sm4_cbc_mac_function(key)
    for one in data:
        assert cbc_mac(one) == ref_sm4_mac(key, bytes(16), one)


def test_keyed_sm4_mac_function_rejects_a_bad_key() -> None:
    with pytest.raises(LocalProtocolError):
        crypto.sm4_cbc_mac_function(bytes(15))


@settings(max_examples=100, deadline=None)
@given(key=keys, data=st.binary(max_size=60))
def test_mac_default_iv_is_zero(key: bytes, data: bytes) -> None:
    assert crypto.mac(Algorithm.DES, key, data) == ref_retail_mac(key, bytes(8), data)
    assert crypto.mac(Algorithm.SM4, key, data) == ref_sm4_mac(key, bytes(16), data)


@settings(max_examples=100, deadline=None)
@given(key=keys, data=st.binary(max_size=60))
def test_unpadded_mac_over_padded_data_is_the_same(key: bytes, data: bytes) -> None:
    # what the PSAM does: the host pads, the PSAM MACs whole blocks
    assert crypto.retail_mac(key, crypto.pad_m2(data, 8), pad=False) == crypto.retail_mac(key, data)
    assert crypto.sm4_cbc_mac(key, crypto.pad_m2(data, 16), pad=False) == crypto.sm4_cbc_mac(
        key, data
    )


@pytest.mark.parametrize("block", [8, 16])
@settings(max_examples=150)
@given(data=st.binary(max_size=80))
def test_padding_round_trip(block: int, data: bytes) -> None:
    padded = crypto.pad_m2(data, block)
    assert len(padded) % block == 0
    assert 1 <= len(padded) - len(data) <= block
    assert padded.startswith(data + b"\x80")
    assert padded == ref_pad_bytes(data, block)
    assert crypto.unpad_m2(padded) == data


def ref_pad_bytes(data: bytes, block: int) -> bytes:
    n = block - len(data) % block
    return data + b"\x80" + bytes(n - 1)


@settings(max_examples=150)
@given(data=st.binary(max_size=40))
def test_unpad_hostile_input(data: bytes) -> None:
    try:
        out = crypto.unpad_m2(data)
    except LocalProtocolError:
        assert not data.rstrip(b"\x00").endswith(b"\x80")
    else:
        assert data.startswith(out + b"\x80")
        assert not data[len(out) + 1 :].strip(b"\x00")


@pytest.mark.parametrize(
    "call",
    [
        lambda: crypto.retail_mac(bytes(16), b"", bytes(7)),
        lambda: crypto.retail_mac(bytes(15), b""),
        lambda: crypto.retail_mac(bytes(16), b"", pad=False),
        lambda: crypto.retail_mac(bytes(16), bytes(7), pad=False),
        lambda: crypto.sm4_cbc_mac(bytes(16), b"", bytes(8)),
        lambda: crypto.sm4_cbc_mac(bytes(16), bytes(8), pad=False),
        lambda: crypto.ecb_encrypt(Algorithm.SM4, bytes(16), bytes(8)),
        lambda: crypto.ecb_decrypt(Algorithm.DES, bytes(16), bytes(7)),
        lambda: crypto.ecb_encrypt(Algorithm.DES, bytes(8), bytes(8)),
    ],
)
def test_crypto_rejects_bad_sizes(call: object) -> None:
    with pytest.raises(LocalProtocolError):
        call()  # type: ignore[operator]


@pytest.mark.parametrize("alg", list(Algorithm))
@settings(max_examples=60)
@given(key=keys, blocks=st.integers(1, 4), seed=st.binary(min_size=64, max_size=64))
def test_ecb_round_trip_and_reference(alg: Algorithm, key: bytes, blocks: int, seed: bytes) -> None:
    data = seed[: blocks * alg.block_size]
    enc = crypto.ecb_encrypt(alg, key, data)
    assert enc == ref_ecb(alg.value, key, data)
    assert crypto.ecb_decrypt(alg, key, enc) == data
