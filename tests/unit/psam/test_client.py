"""PSAM client and PsamSecurityModule against the virtual PSAM (docs/CARD-PROTOCOL.md §2)."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import (
    CardProtocolError,
    ConfigError,
    LocalProtocolError,
    PsamKeyNotFoundError,
    PsamStatusError,
    SecurityModuleError,
)
from agent.profile import CardProfile, card_factors, load_profile, parse_profile
from agent.psam import client
from agent.psam.client import PsamSecurityModule
from agent.psam.crypto import Algorithm, pad_m2
from agent.psam.module import SecurityModule
from agent.psam.soft import SoftSecurityModule, verify_seal
from agent.sim.psam import DEFAULT_TERMINAL_NUMBER, VirtualPsam
from tests.unit.psam._support import (
    SimChannel,
    ref_diversify,
    ref_ecb,
    ref_retail_mac,
    ref_sm4_mac,
)

PROFILE = load_profile("default")
H = bytes.fromhex
AREA = H("440300")
SERIAL = H("0123456789ABCDEF")
CARD_ID = AREA + H("D156000005") + SERIAL
CARD_FACTORS = [SERIAL, AREA + bytes(5)]


def channel(profile: CardProfile = PROFILE, **kw: object) -> SimChannel:
    return SimChannel(VirtualPsam(profile), **kw)  # type: ignore[arg-type]


def p1s(ch: SimChannel, ins: int = 0xFA) -> list[int]:
    return [c[2] for c in ch.log if c[1] == ins]


# ------------------------------------------------------------------------- plain commands
async def test_files_and_select() -> None:
    ch = channel()
    await client.select_mf(ch)
    info = await client.read_public_info(ch)
    assert info.serial == ch.device.serial  # type: ignore[attr-defined]
    assert len(info.raw) == 14
    assert (info.version, info.key_card_type, info.command_set_version) == (1, 0, 1)
    tn = await client.read_terminal_number(ch)
    assert tn == DEFAULT_TERMINAL_NUMBER
    assert client.terminal_id(tn) == "440300907950"
    fci = await client.select_app(ch, PROFILE.psam_aid)
    assert fci[:2] == bytes((0x6F, len(PROFILE.psam_aid) + 2))
    assert PROFILE.psam_aid in fci
    assert await client.read_tsn(ch) == 0
    assert H("00B0960006") in ch.log
    assert H("00B095000E") in ch.log
    assert any(c[:2] == H("00C0") for c in ch.log)  # the FCI came by GET RESPONSE


async def test_select_unknown_app() -> None:
    with pytest.raises(PsamStatusError) as info:
        await client.select_app(channel(), H("A000000003000000"))
    assert info.value.sw == 0x6A82
    assert not isinstance(info.value, PsamKeyNotFoundError)
    with pytest.raises(LocalProtocolError):
        await client.select_app(channel(), H("A0000000"))


def test_terminal_id_rejects_bad_numbers() -> None:
    for bad in (H("4403009079"), H("44030090795F")):
        with pytest.raises(LocalProtocolError):
            client.terminal_id(bad)


def _tamper_ef16(value: bytes):  # type: ignore[no-untyped-def]
    def tamper(cmd: bytes, answer: bytes) -> bytes:
        return value if cmd[:3] == H("00B096") else answer

    return tamper


@pytest.mark.parametrize(
    "answer",
    [H("4403009079FA 9000"), H("4403009079 9000"), H("44030090795000 9000")],
    ids=["not-bcd", "short", "long"],
)
async def test_hostile_terminal_number(answer: bytes) -> None:
    ch = channel(tamper=_tamper_ef16(answer))
    with pytest.raises(CardProtocolError):
        await client.read_terminal_number(ch)


async def test_terminal_number_status_error() -> None:
    ch = channel()
    await client.select_app(ch, PROFILE.psam_aid)  # EF16 is not in the application DF
    with pytest.raises(PsamStatusError) as info:
        await client.read_terminal_number(ch)
    assert info.value.sw == 0x6A82


# ------------------------------------------------------------------------- delivery key levels
LEVELS_PROFILE = parse_profile(
    {
        "name": "levels",
        "psam_aid": PROFILE.psam_aid.hex(),
        "keys": {
            "stk": {"usage": 0x06, "index": 0x20, "factors": []},
            "puk": {"usage": 0x26, "index": 0x21, "factors": ["serial"]},
            "rkssse": {"usage": 0x47, "index": 0x22, "factors": ["serial", "area"]},
            "rpk": {"usage": 0x66, "index": 0x23, "factors": ["serial", "area", "terminal"]},
        },
        "test_master_keys": {
            "des": {p: f"{i:02X}" * 16 for i, p in enumerate(["stk", "puk", "rkssse", "rpk"])},
            "sm4": {p: f"{i:02X}" * 16 for i, p in enumerate(["rpk", "stk", "puk", "rkssse"])},
        },
    }
)


@pytest.mark.parametrize("alg", list(Algorithm), ids=lambda a: a.value)
@pytest.mark.parametrize("purpose", ["stk", "puk", "rkssse", "rpk"])
async def test_delivery_key_levels_0_to_3(purpose: str, alg: Algorithm) -> None:
    ref = LEVELS_PROFILE.key(purpose)
    factors = card_factors(ref.factors, CARD_ID, DEFAULT_TERMINAL_NUMBER)
    ch = channel(LEVELS_PROFILE)
    await client.select_app(ch, LEVELS_PROFILE.psam_aid)
    await client.deliver_key(ch, ref.usage, ref.index, factors)
    sent = ch.log[-1]
    assert sent[:4] == bytes((0x80, 0x1A, ref.usage, ref.index))
    assert (sent[4] if len(sent) > 4 else 0) == 8 * len(factors)
    iv = bytes(range(alg.block_size))
    data = b"lock me"
    mac = await client.compute_mac(ch, alg, iv + pad_m2(data, alg.block_size))
    key = ref_diversify(alg.value, LEVELS_PROFILE.master_key(alg.value, purpose), factors)
    expected = (ref_retail_mac if alg is Algorithm.DES else ref_sm4_mac)(key, iv, data)
    assert mac == expected[:4]


@pytest.mark.parametrize(
    ("usage", "factors"),
    [(0x46, [bytes(8)]), (0x26, []), (0x06, [bytes(8)]), (0x66, [bytes(8)] * 2)],
)
async def test_delivery_key_level_bits_must_match_factor_count(
    usage: int, factors: list[bytes]
) -> None:
    ch = channel()
    with pytest.raises(LocalProtocolError):
        await client.deliver_key(ch, usage, 1, factors)
    assert ch.log == []  # refused before anything reached the PSAM


async def test_delivery_key_rejects_bad_factor_and_bytes() -> None:
    ch = channel()
    with pytest.raises(LocalProtocolError):
        await client.deliver_key(ch, 0x26, 1, [bytes(7)])
    with pytest.raises(LocalProtocolError):
        await client.deliver_key(ch, 0x126, 1, [])
    assert ch.log == []


async def test_unknown_key_is_key_not_found() -> None:
    ch = channel()
    await client.select_app(ch, PROFILE.psam_aid)
    with pytest.raises(PsamKeyNotFoundError) as info:
        await client.deliver_key(ch, 0x46, 0x77, [bytes(8), bytes(8)])
    assert info.value.sw == 0x6A88
    assert info.value.code == "psam_key_not_found"
    assert isinstance(info.value, SecurityModuleError)


async def test_9403_is_key_not_found() -> None:
    def tamper(cmd: bytes, answer: bytes) -> bytes:
        return H("9403") if cmd[1] == 0x1A else answer

    ch = channel(tamper=tamper)
    await client.select_app(ch, PROFILE.psam_aid)
    with pytest.raises(PsamKeyNotFoundError):
        await client.deliver_key(ch, 0x46, 0x01, [bytes(8), bytes(8)])


async def test_mac_without_key_is_status_error() -> None:
    ch = channel()
    await client.select_app(ch, PROFILE.psam_aid)
    with pytest.raises(PsamStatusError) as info:
        await client.compute_mac(ch, Algorithm.DES, bytes(16))
    assert info.value.sw == 0x6985
    assert "no key delivered" in str(info.value)


# ------------------------------------------------------------------------- MAC and encrypt
async def _stk_channel() -> SimChannel:
    ch = channel()
    await client.select_app(ch, PROFILE.psam_aid)
    ref = PROFILE.key("stk")
    await client.deliver_key(ch, ref.usage, ref.index, CARD_FACTORS)
    return ch


def _stk(alg: Algorithm) -> bytes:
    return ref_diversify(alg.value, PROFILE.master_key(alg.value, "stk"), CARD_FACTORS)


@pytest.mark.parametrize(
    ("alg", "n", "expected_p1"),
    [
        (Algorithm.DES, 0, [0x05]),
        (Algorithm.DES, 39, [0x05]),  # 8 + 40 = 48 bytes: one chunk
        (Algorithm.DES, 40, [0x07, 0x01]),  # 8 + 48 = 56
        (Algorithm.DES, 100, [0x07, 0x03, 0x01]),  # 8 + 104 = 112
        (Algorithm.SM4, 31, [0x05]),  # 16 + 32
        (Algorithm.SM4, 32, [0x07, 0x01]),  # 16 + 48
        (Algorithm.SM4, 200, [0x07, 0x03, 0x03, 0x03, 0x01]),  # 16 + 208 = 224
    ],
)
async def test_mac_single_and_chained(alg: Algorithm, n: int, expected_p1: list[int]) -> None:
    ch = await _stk_channel()
    iv = bytes(range(alg.block_size))
    data = bytes(random.Random(n).randrange(256) for _ in range(n))
    mac = await client.compute_mac(ch, alg, iv + pad_m2(data, alg.block_size))
    ref = (ref_retail_mac if alg is Algorithm.DES else ref_sm4_mac)(_stk(alg), iv, data)
    assert mac == ref[:4]
    fa = [c for c in ch.log if c[1] == 0xFA]
    assert [c[2] for c in fa] == expected_p1
    assert all(c[3] == client.cipher_p2(alg) for c in fa)
    assert all(c[4] <= 0x30 for c in fa)


async def test_mac_payload_validation() -> None:
    ch = await _stk_channel()
    for alg, payload in [
        (Algorithm.DES, bytes(8)),
        (Algorithm.DES, bytes(20)),
        (
            Algorithm.SM4,
            bytes(24),
        ),
    ]:
        with pytest.raises(LocalProtocolError):
            await client.compute_mac(ch, alg, payload)


@pytest.mark.parametrize("alg", list(Algorithm), ids=lambda a: a.value)
@pytest.mark.parametrize("blocks", [1, 3, 6, 7])
async def test_encrypt_single_and_chunked(alg: Algorithm, blocks: int) -> None:
    ch = await _stk_channel()
    data = bytes(range(blocks * alg.block_size))
    out = await client.encrypt_data(ch, alg, data)
    assert out == ref_ecb(alg.value, _stk(alg), data)
    n_chunks = -(-len(data) // 0x30)
    assert p1s(ch) == [0x02] * (n_chunks - 1) + [0x00]


async def test_encrypt_validation() -> None:
    ch = await _stk_channel()
    for data in (b"", bytes(7), bytes(8) + b"\x01"):
        with pytest.raises(LocalProtocolError):
            await client.encrypt_data(ch, Algorithm.DES, data)


def _tamper_get_response(fn):  # type: ignore[no-untyped-def]
    def tamper(cmd: bytes, answer: bytes) -> bytes:
        return fn(answer) if cmd[:2] == H("00C0") else answer

    return tamper


async def test_hostile_mac_length() -> None:
    ch = channel(tamper=_tamper_get_response(lambda a: a[:2] + a[-2:]))
    await client.select_app(ch, PROFILE.psam_aid)
    await client.deliver_key(ch, 0x46, 0x01, CARD_FACTORS)
    with pytest.raises(CardProtocolError):
        await client.compute_mac(ch, Algorithm.DES, bytes(16))


async def test_hostile_encrypt_length() -> None:
    ch = channel(tamper=_tamper_get_response(lambda a: a[:-3] + a[-2:]))
    await client.select_app(ch, PROFILE.psam_aid)
    await client.deliver_key(ch, 0x46, 0x01, CARD_FACTORS)
    with pytest.raises(CardProtocolError):
        await client.encrypt_data(ch, Algorithm.DES, bytes(8))


async def test_hostile_intermediate_chunk_with_data() -> None:
    def tamper(cmd: bytes, answer: bytes) -> bytes:
        return H("AA 9000") if cmd[:3] == H("80FA07") else answer

    ch = channel(tamper=tamper)
    await client.select_app(ch, PROFILE.psam_aid)
    await client.deliver_key(ch, 0x46, 0x01, CARD_FACTORS)
    with pytest.raises(CardProtocolError):
        await client.compute_mac(ch, Algorithm.DES, bytes(64))


# ------------------------------------------------------------------------- the security module
def _lock_mac_reference(alg: str, challenge: bytes) -> bytes:
    """The lock command's MAC with cryptography alone (ssc-card-protocol.md §2, §3.1)."""
    master = PROFILE.master_key(alg, "stk")
    key = ref_diversify(alg, master, [SERIAL, AREA + bytes(5)])  # profile: serial, area
    block = 8 if alg == "des" else 16
    iv = challenge + bytes(block - len(challenge))
    header = H("841E000004")
    return (ref_retail_mac if alg == "des" else ref_sm4_mac)(key, iv, header)[:4]


@pytest.mark.parametrize(
    ("alg", "challenge"),
    [(Algorithm.DES, H("1A2B3C4D")), (Algorithm.SM4, H("1A2B3C4D5E6F7081"))],
    ids=["des", "sm4"],
)
async def test_lock_command_mac_matches_independent_reference(
    alg: Algorithm, challenge: bytes
) -> None:
    ch = channel()
    sm = PsamSecurityModule(ch, PROFILE)
    factors = card_factors(PROFILE.key("stk").factors, CARD_ID)
    mac = await sm.card_mac("stk", alg, factors, challenge, H("841E000004"))
    assert mac == _lock_mac_reference(alg.value, challenge)
    # the wire shape of CARD-PROTOCOL.md §2: select app, 80 1A 46 01 10, 80 FA 05 …, GET RESPONSE
    assert ch.log[0][:5] == H("00A4040008")
    deliver = next(c for c in ch.log if c[1] == 0x1A)
    assert deliver == H("801A460110") + SERIAL + AREA + bytes(5)
    if alg is Algorithm.DES:
        assert H("80FA0500101A2B3C4D00000000841E000004800000") in ch.log
    assert ch.log[-1] == H("00C0000004")


async def test_terminal_number_is_cached() -> None:
    ch = channel()
    sm = PsamSecurityModule(ch, PROFILE)
    assert await sm.terminal_number() == DEFAULT_TERMINAL_NUMBER
    n = len(ch.log)
    assert await sm.terminal_number() == DEFAULT_TERMINAL_NUMBER
    assert len(ch.log) == n
    info = await sm.public_info()
    assert info.serial == ch.device.serial  # type: ignore[attr-defined]
    n = len(ch.log)
    assert await sm.public_info() is info
    assert len(ch.log) == n


async def test_module_factor_count_checked() -> None:
    ch = channel()
    sm = PsamSecurityModule(ch, PROFILE)
    with pytest.raises(LocalProtocolError):
        await sm.card_mac("stk", Algorithm.DES, [SERIAL], bytes(4), b"x")
    with pytest.raises(ConfigError):
        await sm.card_mac("nope", Algorithm.DES, [], bytes(4), b"x")


async def test_module_is_a_security_module() -> None:
    sm: SecurityModule = PsamSecurityModule(channel(), PROFILE)
    soft: SecurityModule = SoftSecurityModule(PROFILE, DEFAULT_TERMINAL_NUMBER)
    assert await sm.terminal_number() == await soft.terminal_number()


async def test_seal_mac_matches_soft_and_central() -> None:
    ch = channel()
    sm = PsamSecurityModule(ch, PROFILE)
    digest = bytes(range(32))
    seal = await sm.seal_mac(digest)
    assert len(seal) == 8
    assert seal == await SoftSecurityModule(PROFILE, DEFAULT_TERMINAL_NUMBER).seal_mac(digest)
    assert verify_seal(PROFILE, DEFAULT_TERMINAL_NUMBER, digest, seal)
    assert not verify_seal(PROFILE, H("440300907951"), digest, seal)
    # independent: SM4 CBC-MAC with IV 0 under seal master diversified by terminal ‖ 0000
    key = ref_diversify(
        "sm4", PROFILE.master_key("sm4", "seal"), [DEFAULT_TERMINAL_NUMBER + bytes(2)]
    )
    assert seal == ref_sm4_mac(key, bytes(16), digest)[:8]
    # 16 + 48 bytes: a chained MAC with the SM4 P2
    assert [c[2:4] for c in ch.log if c[1] == 0xFA] == [H("0703"), H("0103")]


async def test_seal_needs_eight_bytes_from_the_psam() -> None:
    ch = channel(tamper=_tamper_get_response(lambda a: a[:4] + a[-2:] if len(a) == 10 else a))
    sm = PsamSecurityModule(ch, PROFILE)
    with pytest.raises(SecurityModuleError):
        await sm.seal_mac(bytes(32))


async def test_module_recovers_from_leftover_psam_state() -> None:
    ch = channel()
    psam: VirtualPsam = ch.device  # type: ignore[assignment]
    # another key delivered and a chain left half-way (e.g. a cancelled caller)
    psam.process(H("00A40400 08") + PROFILE.psam_aid)
    psam.process(H("801A4804 10") + bytes(16))
    psam.process(H("80FA0700 08") + bytes(8))
    sm = PsamSecurityModule(ch, PROFILE)
    mac = await sm.card_mac("stk", Algorithm.DES, CARD_FACTORS, H("1A2B3C4D"), H("841E000004"))
    assert mac == _lock_mac_reference("des", H("1A2B3C4D"))


async def test_concurrent_callers_are_serialised() -> None:
    # yield_each lets another task run between every APDU: without the lock, a delivery key
    # from one caller would land between another caller's delivery key and its MAC.
    ch = channel(yield_each=True)
    sm = PsamSecurityModule(ch, PROFILE)
    soft = SoftSecurityModule(PROFILE, DEFAULT_TERMINAL_NUMBER)
    rng = random.Random(7)
    jobs = []
    for i in range(24):
        purpose = ["stk", "rpk", "puk", "rkssse"][i % 4]
        alg = list(Algorithm)[i % 2]
        challenge = rng.randbytes(4)
        data = rng.randbytes(rng.randrange(0, 90))
        jobs.append((purpose, alg, CARD_FACTORS, challenge, data))
    got = await asyncio.gather(*(sm.card_mac(*j) for j in jobs), sm.seal_mac(b"d" * 32))
    want = [await soft.card_mac(*j) for j in jobs] + [await soft.seal_mac(b"d" * 32)]
    assert got == want


# ------------------------------------------------------------------------- PSAM == soft (property)
purposes = st.sampled_from(["stk", "rkssse", "rpk", "puk"])
algs = st.sampled_from(list(Algorithm))


@settings(max_examples=120, deadline=None)
@given(
    purpose=purposes,
    alg=algs,
    serial=st.binary(min_size=8, max_size=8),
    area=st.binary(min_size=3, max_size=3),
    challenge=st.binary(min_size=4, max_size=8),
    data=st.binary(max_size=120),
)
def test_psam_and_soft_modules_agree_on_card_mac(
    purpose: str, alg: Algorithm, serial: bytes, area: bytes, challenge: bytes, data: bytes
) -> None:
    factors = card_factors(PROFILE.key(purpose).factors, area + H("D156000005") + serial)
    psam = PsamSecurityModule(channel(), PROFILE)
    soft = SoftSecurityModule(PROFILE, DEFAULT_TERMINAL_NUMBER)

    async def both() -> tuple[bytes, bytes]:
        a = await psam.card_mac(purpose, alg, factors, challenge, data)
        b = await soft.card_mac(purpose, alg, factors, challenge, data)
        return a, b

    a, b = asyncio.run(both())
    assert len(a) == 4
    assert a == b


@settings(max_examples=60, deadline=None)
@given(
    purpose=purposes,
    alg=algs,
    serial=st.binary(min_size=8, max_size=8),
    blocks=st.integers(1, 8),
    seed=st.binary(min_size=128, max_size=128),
    digest=st.binary(max_size=64),
)
def test_psam_and_soft_modules_agree_on_encrypt_and_seal(
    purpose: str, alg: Algorithm, serial: bytes, blocks: int, seed: bytes, digest: bytes
) -> None:
    factors = [serial, H("4403000000000000")]
    data = seed[: blocks * alg.block_size]
    psam = PsamSecurityModule(channel(), PROFILE)
    soft = SoftSecurityModule(PROFILE, DEFAULT_TERMINAL_NUMBER)

    async def both() -> list[bytes]:
        return [
            await psam.encrypt(purpose, alg, factors, data),
            await soft.encrypt(purpose, alg, factors, data),
            await psam.seal_mac(digest),
            await soft.seal_mac(digest),
        ]

    enc_a, enc_b, seal_a, seal_b = asyncio.run(both())
    assert enc_a == enc_b
    assert seal_a == seal_b
