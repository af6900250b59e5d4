"""Clock jumps backwards and forwards (NTP correction, dead RTC battery, an operator setting
the date): DESIGN §4–5 under a wall clock that lies.

What "sane" means here (docs/RELIABILITY.md, "Clock jumps"):

1. **Order never comes from the clock.** The sealed sequence number is the next integer after
   the chain tail, whatever the time: seq stays gapless and follows the order of the seals,
   the hash chain verifies, and every committed record is there. Timestamps in records are
   informational (``created_at`` may go backwards with the clock).
2. **Replay protection never comes from the clock.** A command from central is applied at
   most once across any jump (strictly increasing ``counter`` and the seen ``id``).
3. **Expiry is judged against a high-water time.** A clock set back must never revive an
   authorization or a command already seen expired: expiry is judged against
   ``max(now, highest time already observed)``, a floor the journal would persist. A forward
   jump may expire things early: that fails safe (a refusal; central pushes a new one).
4. **Pacing never mints tokens from a jump.** The drain's token bucket gains nothing when the
   clock goes back and at most ``burst`` when it leaps forward.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import CommandRejectedError, PolicyRefusal
from agent.uplink.flow import TokenBucket
from agent.wire import codec, cose
from agent.wire import examples as ex
from agent.wire.commands import CommandVerifier
from tests.reliability.conftest import Figures, SimTerminal, open_journal, scaled

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
#: Backwards and forwards, small and huge (a dead RTC resets to 1970 or 2000).
JUMPS_MS = (-HOUR_MS, 2 * DAY_MS, -3 * DAY_MS, 60_000, -365 * DAY_MS, 10 * 365 * DAY_MS, -1)


class Clock:
    """A settable wall clock in Unix milliseconds."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def jump(self, delta_ms: int) -> None:
        self.now_ms = max(0, self.now_ms + delta_ms)


class HighWater:
    """``max(clock(), highest value seen)``: the floor rule 3 asks expiry checks to use."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.high = clock()

    def __call__(self) -> int:
        self.high = max(self.high, self.clock())
        return self.high


# --- 1. order ---------------------------------------------------------------------------------
async def test_seq_stays_gapless_and_in_seal_order_across_jumps(tmp_path, figures: Figures):
    pytest.importorskip("agent.tx.engine", reason="needs agent.tx.engine (TxEngine)")
    clock = Clock(1_767_225_600_000)
    journal = open_journal(tmp_path / "journal.db", clock=clock)
    t = SimTerminal(journal, clock=clock)
    seqs: list[int] = []
    rounds = scaled(2, 20)
    for _ in range(rounds):
        for jump in JUMPS_MS:
            clock.jump(jump)
            rec = await t.toggle()
            assert str(rec.state) == "sealed"
            seqs.append(int(rec.seq))
    assert seqs == list(range(1, len(seqs) + 1))
    report = t.verify_chain()
    assert report.ok, report
    assert report.checked == len(seqs)
    assert {r.tx_id for r in journal.records(limit=10_000)} == set(t.intents)
    journal.close()
    reopened = open_journal(tmp_path / "journal.db", clock=clock)
    assert reopened.quarantined is None
    assert reopened.verify_chain().ok
    reopened.close()
    figures.add("clock jumps: sealing order", f"wall clock jumps {JUMPS_MS} ms", len(seqs), 0)


# --- 3. authorizations --------------------------------------------------------------------------
async def test_forward_jump_expires_an_authorization_and_unlock_is_refused(tmp_path):
    pytest.importorskip("agent.tx.engine", reason="needs agent.tx.engine (TxEngine)")
    clock = Clock(1_767_225_600_000)
    journal = open_journal(tmp_path / "journal.db", clock=clock)
    t = SimTerminal(journal, clock=clock, online=False)
    await t.engine.lock(t.channel())
    cid = t.card.card_id_code.hex().upper()
    journal.add_authorization("a-1", cid, "unlock", clock() + 60_000, b"signed")
    clock.jump(2 * HOUR_MS)
    with pytest.raises(PolicyRefusal):
        await t.engine.unlock(t.channel())
    assert t.card.state == "temp_locked"  # refused before any card write
    journal.close()


async def test_backward_jump_never_revives_an_expired_authorization(tmp_path):
    clock = Clock(1_767_225_600_000)
    journal = open_journal(tmp_path / "journal.db", clock=clock)
    try:
        cid = "44" * 16
        journal.add_authorization("a-1", cid, "unlock", clock() + 60_000, b"signed")
        clock.jump(2 * HOUR_MS)
        assert journal.find_valid_authorization(cid, "unlock") is None  # expired
        clock.jump(-3 * HOUR_MS)  # the clock is set back
        assert journal.find_valid_authorization(cid, "unlock") is None
    finally:
        journal.close()


async def test_a_used_authorization_stays_used_across_jumps(tmp_path):
    clock = Clock(1_767_225_600_000)
    journal = open_journal(tmp_path / "journal.db", clock=clock)
    try:
        cid = "44" * 16
        journal.add_authorization("a-1", cid, "unlock", clock() + DAY_MS, b"signed")
        assert journal.consume_authorization("a-1", "tx-1")
        for jump in JUMPS_MS:
            clock.jump(jump)
            assert journal.find_valid_authorization(cid, "unlock") is None
            assert not journal.consume_authorization("a-1", "tx-2")
    finally:
        journal.close()


# --- 2 and 3. commands from central -------------------------------------------------------------
@dataclass
class Replay:
    counter: int = 0
    ids: set[bytes] = field(default_factory=set)

    def last_counter(self) -> int:
        return self.counter

    def seen(self, command_id: bytes) -> bool:
        return command_id in self.ids


def _signed(counter: int, issued: int, expires: int, cid: bytes) -> bytes:
    cmd = codec.Command(cid, ex.TERMINAL, counter, issued, expires, codec.Ping())
    return cose.sign(cmd.to_cbor(), ex.example_signing_key(), ex.EXAMPLE_KID)


@settings(max_examples=scaled(100, 2000), deadline=None)
@given(jumps=st.lists(st.integers(-10 * 86_400, 10 * 86_400), min_size=1, max_size=12))
def test_a_command_is_applied_at_most_once_whatever_the_clock(jumps: list[int]) -> None:
    clock = Clock(ex.T0 * 1000)
    replay = Replay()
    verifier = CommandVerifier(
        {ex.EXAMPLE_KID: ex.example_signing_key().public_key()},
        ex.TERMINAL,
        lambda: clock() / 1000,
        replay,
    )
    data = _signed(7, ex.T0, ex.T0 + 3600, b"\x01" * 16)
    applied = 0
    reasons: set[str] = set()
    for j in jumps:
        clock.jump(j * 1000)
        try:
            cmd = verifier.verify(data)
        except CommandRejectedError as e:
            reasons.add(e.reason)
            continue
        applied += 1
        replay.counter, replay.ids = cmd.counter, replay.ids | {cmd.id}
    assert applied <= 1
    assert reasons <= {"expired", "replayed"}


def test_with_a_high_water_clock_an_expired_command_is_not_revived() -> None:
    clock = Clock(ex.T0 * 1000)
    floor = HighWater(clock)
    verifier = CommandVerifier(
        {ex.EXAMPLE_KID: ex.example_signing_key().public_key()},
        ex.TERMINAL,
        lambda: floor() / 1000,
        Replay(),
        max_skew=300,
    )
    data = _signed(9, ex.T0, ex.T0 + 600, b"\x02" * 16)
    clock.jump(2 * HOUR_MS)
    with pytest.raises(CommandRejectedError) as info:
        verifier.verify(data)
    assert info.value.reason == "expired"
    clock.jump(-2 * HOUR_MS)  # set back into the validity window
    with pytest.raises(CommandRejectedError) as info:
        verifier.verify(data)
    assert info.value.reason == "expired"


# --- 4. the token bucket ------------------------------------------------------------------------
@settings(max_examples=scaled(200, 5000), deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.floats(-1e6, 1e6, allow_nan=False), st.floats(0.1, 5, allow_nan=False)),
        min_size=1,
        max_size=40,
    ),
    rate=st.floats(0.5, 100, allow_nan=False),
    burst=st.floats(1, 50, allow_nan=False),
)
def test_token_bucket_never_mints_tokens_from_a_jump(
    steps: list[tuple[float, float]], rate: float, burst: float
) -> None:
    start = 1000.0
    bucket = TokenBucket(rate, burst, start)
    now = start
    high = start
    taken = 0.0
    for jump, n in steps:
        now += jump
        before = bucket.tokens
        wait = bucket.try_take(now, n)
        assert wait >= 0
        if wait == 0:
            taken += n
        assert bucket.tokens <= burst + 1e-9
        if now <= high:  # backwards (or standing still): nothing was minted
            assert bucket.tokens <= before + 1e-9
        high = max(high, now)
        # everything ever taken was saved up at the start or earned over real elapsed time
        assert taken <= burst + rate * (high - start) + 1e-6
