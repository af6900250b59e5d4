"""Central's acks in the uplink session, without a broker (DESIGN §5).

An ack frees its records from the in-flight window at once (on the loop, from paho's read
callback) and reaches the journal in the drainer's next step, or when the connection ends; a
malformed ack frees nothing and is reported; an ack the journal could not take is kept for the
next write, so no ack is lost on the terminal's side. The drain over a real broker:
tests/integration/test_uplink_session.py.
"""

from __future__ import annotations

import asyncio

import pytest

from agent.errors import JournalError
from agent.uplink.session import OutboxItem, UplinkSession, UplinkSettings
from agent.wire.codec import AckMessage, ack_ranges

T = "440300907950"


class Outbox:
    """The Outbox port in memory; ``fail`` makes the next ``ack`` raise, as a full disk would."""

    def __init__(self, n: int) -> None:
        self.seqs = set(range(1, n + 1))
        self.acked: set[int] = set()
        self.ack_calls: list[list[tuple[int, int]]] = []
        self.fail = False

    def pending(self, after_seq: int, limit: int) -> list[OutboxItem]:
        out = sorted(s for s in self.seqs - self.acked if s > after_seq)[:limit]
        return [OutboxItem(s, b"\xa0") for s in out]

    def mark_sent(self, seqs: list[int]) -> None:
        pass

    def ack(self, ranges: list[tuple[int, int]]) -> int:
        if self.fail:
            self.fail = False
            raise JournalError("disk full")
        self.ack_calls.append(list(ranges))
        new = {s for lo, hi in ranges for s in range(lo, hi + 1)} & self.seqs - self.acked
        self.acked |= new
        return len(new)

    def unacked_count(self) -> int:
        return len(self.seqs - self.acked)

    def max_seq(self) -> int:
        return max(self.seqs, default=0)


def _session(outbox: Outbox, events: list[tuple[str, dict[str, object]]]) -> UplinkSession:
    return UplinkSession(
        UplinkSettings(terminal=T, host="127.0.0.1", port=1, window=8),
        outbox,
        encode_status=lambda online: b"\xa0",
        decode_ack=lambda p: ack_ranges(p, T),
        on_event=lambda kind, data: events.append((kind, data)),
    )


def _ack(*ranges: tuple[int, int], terminal: str = T) -> bytes:
    return AckMessage(terminal, ranges).to_cbor()


async def test_an_ack_frees_the_window_at_once_and_reaches_the_journal_in_one_write() -> None:
    outbox, events = Outbox(10), []
    session = _session(outbox, events)
    for s in (1, 2, 3, 4):
        session.window.add(s, 0.0)
    session._on_ack(_ack((1, 2)))
    session._on_ack(_ack((4, 4)))
    assert (sorted(session.window._sent), session._wake.is_set()) == ([3], True)
    assert outbox.acked == set()  # not on disk yet: the drainer's next step writes both
    session._write_acks_now()
    assert outbox.ack_calls == [[(1, 2), (4, 4)]]
    assert (outbox.acked, session.stats.acked, session._acks) == ({1, 2, 4}, 3, [])
    session._write_acks_now()  # nothing left: no write
    assert len(outbox.ack_calls) == 1
    assert events == []


@pytest.mark.parametrize(
    "payload",
    [b"\xff", b"\xa0", _ack((1, 2), terminal="440300907951"), b"\x82\x01\x02"],
    ids=["not-cbor", "empty-map", "other-terminal", "array"],
)
async def test_a_malformed_ack_frees_nothing_and_is_reported(payload: bytes) -> None:
    outbox, events = Outbox(3), []
    session = _session(outbox, events)
    session.window.add(1, 0.0)
    session._on_ack(payload)
    assert (1 in session.window, session._acks, session._wake.is_set()) == (True, [], False)
    assert events == [("ack_rejected", {"reason": "wire_error"})]


async def test_an_ack_the_journal_could_not_take_is_kept_for_the_next_write() -> None:
    outbox, events = Outbox(5), []
    session = _session(outbox, events)
    session._on_ack(_ack((1, 3)))
    outbox.fail = True
    session._write_acks_now()
    assert (session._acks, outbox.acked) == ([(1, 3)], set())
    session._on_ack(_ack((5, 5)))
    session._write_acks_now()
    assert (outbox.acked, session.stats.acked, session._acks) == ({1, 2, 3, 5}, 4, [])


async def test_a_step_that_ends_after_its_drainer_was_cancelled_is_still_counted() -> None:
    """The thread of a cancelled step finishes its writes: what it acked is counted, and the
    acks of a step that failed are written by the next one."""
    loop = asyncio.get_running_loop()
    session = _session(Outbox(5), [])
    done: asyncio.Future[tuple[int, list[OutboxItem], list[OutboxItem]]] = loop.create_future()
    done.set_result((3, [], []))
    session._late_step([(1, 3)], done)
    assert (session.stats.acked, session._acks) == (3, [])
    failed: asyncio.Future[tuple[int, list[OutboxItem], list[OutboxItem]]] = loop.create_future()
    failed.set_exception(JournalError("disk full"))
    session._acks = [(9, 9)]
    session._late_step([(4, 5)], failed)
    assert (session.stats.acked, session._acks) == (3, [(4, 5), (9, 9)])
    cancelled: asyncio.Future[tuple[int, list[OutboxItem], list[OutboxItem]]] = loop.create_future()
    cancelled.cancel()
    session._late_step([(6, 6)], cancelled)
    assert session._acks == [(6, 6), (4, 5), (9, 9)]


async def test_a_journal_step_writes_acks_before_it_reads() -> None:
    """A cursor that went back (a resend) must not read records central already acked."""
    outbox = Outbox(6)
    session = _session(outbox, [])
    acked, live, backlog = session._journal_step([(1, 4)], [5], (0, 8), (0, 2))
    assert acked == 4
    assert [i.seq for i in live] == [5, 6]
    assert [i.seq for i in backlog] == [5, 6]
    assert session._journal_step([], [], None, None) == (0, [], [])
