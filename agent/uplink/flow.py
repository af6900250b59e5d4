"""Pure flow-control pieces of the drain: backoff, pacing, the in-flight window. Sans-IO.

* ``FullJitterBackoff``: reconnect delays ``uniform(0, min(cap, base·2^n))`` (AWS "full
  jitter"), so thousands of terminals returning after an outage do not reconnect in lockstep
  (peer-lessons (c) 5).
* ``TokenBucket``: paces the backlog under central's quota after an outage (peer-lessons (c) 4).
* ``InflightWindow``: which records were published and await central's ack, when they were sent,
  which timed out. Records leave the outbox only on central's ack (DESIGN §5).
Time is always passed in (a monotonic float), so tests move time instead of sleeping.
"""

from __future__ import annotations

import random
from collections.abc import Iterable


class FullJitterBackoff:
    def __init__(
        self, base: float = 1.0, cap: float = 300.0, rng: random.Random | None = None
    ) -> None:
        if base <= 0 or cap < base:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self.attempt = 0
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography

    def next(self) -> float:
        """Delay before the next attempt; grows until the cap."""
        ceiling = min(self.cap, self.base * (2 ** min(self.attempt, 32)))
        self.attempt += 1
        return self._rng.uniform(0, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = max(self.stamp, now)  # a clock that jumps back never mints tokens

    def try_take(self, now: float, n: float = 1.0) -> float:
        """Take ``n`` tokens if available and return 0, else return the seconds to wait."""
        self._refill(now)
        if self.tokens >= n:
            self.tokens -= n
            return 0.0
        return (n - self.tokens) / self.rate


class InflightWindow:
    """Published records awaiting central's ack, bounded by ``size``."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("window size must be >= 1")
        self.size = size
        self._sent: dict[int, float] = {}

    def __len__(self) -> int:
        return len(self._sent)

    def __contains__(self, seq: object) -> bool:
        return seq in self._sent

    @property
    def room(self) -> int:
        return max(0, self.size - len(self._sent))

    def add(self, seq: int, now: float) -> None:
        self._sent[seq] = now

    def discard(self, seq: int) -> None:
        self._sent.pop(seq, None)

    def ack(self, ranges: Iterable[tuple[int, int]]) -> list[int]:
        """Remove acked sequence numbers (inclusive ranges); returns those that were in flight."""
        done = []
        for lo, hi in ranges:
            if hi - lo < len(self._sent):
                for s in range(lo, hi + 1):
                    if self._sent.pop(s, None) is not None:
                        done.append(s)
            else:
                for s in [s for s in self._sent if lo <= s <= hi]:
                    del self._sent[s]
                    done.append(s)
        return done

    def expire(self, now: float, timeout: float) -> list[int]:
        """Records unacked for ``timeout`` seconds leave the window so they are sent again.

        Records are added in the order they were sent, with the session's monotonic clock, so
        the oldest come first: the scan stops at the first record still within its time, and a
        wake-up costs the expired records, not the window. (A record added with an earlier time
        than the one before it waits for that one to expire.)"""
        old = []
        for s, t in self._sent.items():
            if now - t < timeout:
                break
            old.append(s)
        for s in old:
            del self._sent[s]
        old.sort()
        return old

    def clear(self) -> None:
        """A new connection: nothing is in flight on it yet."""
        self._sent.clear()


def to_ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Compress sequence numbers into sorted inclusive ranges (acks may be batched as ranges)."""
    out: list[tuple[int, int]] = []
    for s in sorted(set(seqs)):
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out
