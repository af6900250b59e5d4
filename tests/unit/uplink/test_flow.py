"""Backoff, pacing and the in-flight window, with time moved by hand."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.uplink import topics
from agent.uplink.flow import FullJitterBackoff, InflightWindow, TokenBucket, to_ranges


def test_backoff_is_bounded_jittered_and_resets() -> None:
    b = FullJitterBackoff(1.0, 60.0, random.Random(1))
    delays = [b.next() for _ in range(40)]
    assert all(0 <= d <= 60 for d in delays)
    assert max(delays[:3]) <= 4  # 1, 2, 4 ceilings
    assert len({round(d, 6) for d in delays}) > 30  # jittered, not lockstep
    b.reset()
    assert b.next() <= 1.0


def test_backoff_spreads_a_fleet() -> None:
    """1,000 terminals at attempt 6 spread over the whole [0, 64) interval."""
    rng = random.Random(7)
    firsts = []
    for _ in range(1000):
        b = FullJitterBackoff(1.0, 300.0, rng)
        for _ in range(6):
            b.next()
        firsts.append(b.next())
    buckets = [0] * 8
    for d in firsts:
        buckets[min(7, int(d / 8))] += 1
    assert min(buckets) > 60  # no bucket starved: no thundering herd


def test_backoff_rejects_bad_args() -> None:
    with pytest.raises(ValueError, match="backoff"):
        FullJitterBackoff(0, 1)


def test_token_bucket_paces() -> None:
    tb = TokenBucket(rate=10, burst=2, now=0.0)
    assert tb.try_take(0.0) == 0
    assert tb.try_take(0.0) == 0
    assert tb.try_take(0.0) == pytest.approx(0.1)
    assert tb.try_take(0.1) == 0
    # a clock jumping backwards mints nothing
    assert tb.try_take(-100.0) > 0
    assert tb.try_take(0.1) > 0


@settings(max_examples=100)
@given(st.lists(st.floats(min_value=0, max_value=0.5), min_size=1, max_size=200))
def test_token_bucket_never_exceeds_rate(steps: list[float]) -> None:
    tb = TokenBucket(rate=20, burst=5, now=0.0)
    now = 0.0
    taken = 0
    for dt in steps:
        now += dt
        while tb.try_take(now) == 0:
            taken += 1
    assert taken <= 5 + 20 * now + 1e-6


def test_window_ack_and_expire() -> None:
    w = InflightWindow(4)
    for s in (1, 2, 3):
        w.add(s, now=0.0)
    assert w.room == 1
    assert w.ack([(2, 2), (10, 20)]) == [2]
    assert 2 not in w
    assert w.expire(now=5.0, timeout=10) == []
    assert w.expire(now=10.0, timeout=10) == [1, 3]
    assert len(w) == 0
    w.add(5, 0.0)
    assert w.ack([(0, 1_000_000)]) == [5]


def test_window_expires_the_oldest_sends_first_and_a_resent_record_starts_afresh() -> None:
    w = InflightWindow(8)
    for s, t in ((5, 0.0), (1, 1.0), (9, 2.0), (3, 3.0)):
        w.add(s, t)
    w.discard(1)
    w.add(1, 4.0)  # sent again: its time is now, its place is last
    assert w.expire(now=12.5, timeout=10) == [5, 9]  # sorted by seq for the rewind
    assert sorted(w._sent) == [1, 3]
    assert w.expire(now=13.9, timeout=10) == [3]
    assert w.expire(now=14.0, timeout=10) == [1]
    assert len(w) == 0


@settings(max_examples=150)
@given(st.lists(st.floats(min_value=0, max_value=100), max_size=30), st.floats(0, 200))
def test_window_expire_matches_a_full_scan(gaps: list[float], now: float) -> None:
    """Sends in time order: stopping at the first young record finds exactly the old ones."""
    w = InflightWindow(64)
    t = 0.0
    sent = {}
    for seq, gap in enumerate(gaps, start=1):
        t += gap
        w.add(seq, t)
        sent[seq] = t
    assert w.expire(now, 50.0) == sorted(s for s, at in sent.items() if now - at >= 50.0)
    assert all(now - at < 50.0 for at in w._sent.values())


@settings(max_examples=150)
@given(st.sets(st.integers(min_value=0, max_value=500)))
def test_to_ranges_round_trip(seqs: set[int]) -> None:
    ranges = to_ranges(seqs)
    expanded = {s for lo, hi in ranges for s in range(lo, hi + 1)}
    assert expanded == seqs
    assert all(ranges[i][1] + 1 < ranges[i + 1][0] for i in range(len(ranges) - 1))


def test_topics() -> None:
    assert topics.tx("440300907950") == "ssc/v1/440300907950/tx"
    assert topics.terminal_of("ssc/v1/440300907950/ack") == "440300907950"
    assert topics.terminal_of("ssc/v1/all/blacklist") is None
    assert topics.shared("central", "ssc/v1/+/tx") == "$share/central/ssc/v1/+/tx"
    with pytest.raises(ValueError, match="12 digits"):
        topics.tx("+/#")
