"""The drain against a real mosquitto: acks, resends, broker outage mid-drain, exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiomqtt
import cbor2
import pytest

from agent.testing.mosquitto import Mosquitto
from agent.uplink import topics
from agent.uplink.flow import to_ranges
from agent.uplink.mqtt import RecordPublisher, connection, route_topic
from agent.uplink.session import OutboxItem, UplinkSession, UplinkSettings, drain_once
from agent.wire.codec import TX_BATCH_MAX_SIZE, split_tx_payload

pytestmark = pytest.mark.mqtt
TERMINAL = "440300907950"


class MemoryOutbox:
    """The Outbox port over a dict (the journal-backed one is tested in the journal suite)."""

    def __init__(self, n: int) -> None:
        self.rows = {s: cbor2.dumps({"seq": s}) for s in range(1, n + 1)}
        self.acked: set[int] = set()
        self.sent: set[int] = set()
        self.lock = threading.Lock()

    def pending(self, after_seq: int, limit: int) -> list[OutboxItem]:
        with self.lock:
            out = [s for s in sorted(self.rows) if s > after_seq and s not in self.acked]
            return [OutboxItem(s, self.rows[s]) for s in out[:limit]]

    def mark_sent(self, seqs: list[int]) -> None:
        with self.lock:
            self.sent.update(seqs)

    def ack(self, ranges: list[tuple[int, int]]) -> int:
        with self.lock:
            new = {s for lo, hi in ranges for s in range(lo, hi + 1) if s in self.rows} - self.acked
            self.acked |= new
            return len(new)

    def unacked_count(self) -> int:
        with self.lock:
            return len(self.rows) - len(self.acked)

    def max_seq(self) -> int:
        with self.lock:
            return max(self.rows, default=0)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "mq") as m:
        yield m


async def _central(
    port: int, received: list[int], stop: asyncio.Event, drop: set[int] | None = None
) -> None:
    """A minimal acker that keeps every delivery (to count duplicates) and acks in ranges;
    the first delivery of each seq in ``drop`` is received but never acked."""
    while not stop.is_set():
        try:
            async with connection(
                aiomqtt.Client("127.0.0.1", port, identifier="central-test")
            ) as c:
                await c.subscribe(topics.shared("central", "ssc/v1/+/tx"), qos=1)
                async for msg in c.messages:
                    keep = []
                    for one in split_tx_payload(bytes(msg.payload)):  # type: ignore[arg-type]
                        seq = cbor2.loads(one)["seq"]
                        received.append(seq)
                        if drop is not None and seq in drop:
                            drop.discard(seq)
                            continue
                        keep.append(seq)
                    if keep:
                        ack = cbor2.dumps({"ranges": [list(r) for r in to_ranges(keep)]})
                        await c.publish(topics.ack(TERMINAL), ack, qos=1)
        except aiomqtt.MqttError:
            await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def central(port: int, drop: set[int] | None = None) -> AsyncIterator[list[int]]:
    received: list[int] = []
    stop = asyncio.Event()
    task = asyncio.create_task(_central(port, received, stop, drop))
    await asyncio.sleep(0.3)
    try:
        yield received
    finally:
        stop.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _session(port: int, outbox: MemoryOutbox, **kw: float) -> UplinkSession:
    settings = UplinkSettings(
        terminal=TERMINAL,
        host="127.0.0.1",
        port=port,
        window=int(kw.get("window", 32)),
        backlog_rate=kw.get("rate", 5000.0),
        ack_timeout_s=kw.get("ack_timeout", 2.0),
        reconnect_min_s=0.1,
        reconnect_max_s=0.5,
    )
    return UplinkSession(
        settings,
        outbox,
        encode_status=lambda online: cbor2.dumps({"online": online}),
        decode_ack=lambda p: [tuple(r) for r in cbor2.loads(p)["ranges"]],
    )


async def test_drain_all_acked(broker: Mosquitto) -> None:
    outbox = MemoryOutbox(300)
    async with central(broker.port) as received:
        sent, acked, remaining = await drain_once(_session(broker.port, outbox), 30)
    assert remaining == 0
    assert acked == 300
    assert sorted(set(received)) == list(range(1, 301))
    assert sent >= 300


async def test_unacked_records_are_sent_again_after_the_ack_timeout(broker: Mosquitto) -> None:
    """The drain's cursors go back for records whose ack never came."""
    outbox = MemoryOutbox(400)
    dropped = {3, 150, 399}
    session = _session(broker.port, outbox, window=64, ack_timeout=1.0)
    async with central(broker.port, drop=set(dropped)) as received:
        sent, acked, remaining = await drain_once(session, 30)
    assert (acked, remaining) == (400, 0)
    counts = {s: received.count(s) for s in set(received)}
    assert set(counts) == set(range(1, 401))
    # the unacked ones again (a record acked late on a loaded machine may be resent too)
    assert dropped <= {s for s, n in counts.items() if n > 1}
    assert session.stats.resent >= len(dropped)
    assert sent >= 403


async def test_broker_killed_mid_drain(broker: Mosquitto) -> None:
    outbox = MemoryOutbox(1000)
    session = _session(broker.port, outbox, rate=400.0)
    async with central(broker.port) as received:
        task = asyncio.create_task(session.run())
        while outbox.unacked_count() > 700:  # noqa: ASYNC110 - polling a thread-side store
            await asyncio.sleep(0.05)
        broker.stop()
        await asyncio.sleep(1.0)
        broker.start()
        async with asyncio.timeout(60):
            while outbox.unacked_count():  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert set(received) == set(range(1, 1001))  # central saw every record (dupes are deduped)
    assert session.stats.connects >= 2


async def test_unreachable_broker_raises() -> None:
    from agent.errors import UplinkError
    from agent.testing.mosquitto import free_port

    outbox = MemoryOutbox(3)
    with pytest.raises(UplinkError, match="broker"):
        await drain_once(_session(free_port(), outbox), 1.0)
    assert outbox.unacked_count() == 3


@pytest.mark.parametrize("batch_max", [1, 32])
async def test_batches_carry_consecutive_records_once(broker: Mosquitto, batch_max: int) -> None:
    outbox = MemoryOutbox(500)
    session = _session(broker.port, outbox, window=128)
    session._batch_max = batch_max  # as UplinkSettings(batch_max=...) sets it
    async with central(broker.port) as received:
        _, acked, remaining = await drain_once(session, 30)
    assert (acked, remaining) == (500, 0)
    assert sorted(received) == list(range(1, 501))  # each record once, none lost
    if batch_max == 1:
        assert session.stats.messages == session.stats.published
    else:
        assert session.stats.messages <= session.stats.published // 4  # mostly full batches


class _Recorder:
    """Stands in for the record publisher in the batching unit test below: records payloads
    and answers each with a PUBACK that accepts it."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    def publish(self, topic: str, payload: bytes, done: Callable[[int], None]) -> None:
        self.payloads.append(payload)
        done(0)


async def test_batches_respect_the_count_and_the_size_bound() -> None:
    """32 records a batch at most, and never more than the wire's 64 KiB: records of ~10 KB go
    six to a message; a single record goes as itself, not as a batch of one."""
    session = _session(1, MemoryOutbox(0))
    session._batch_max = 32
    rec = _Recorder()
    big = [OutboxItem(s, cbor2.dumps({"seq": s, "pad": bytes(10_000)})) for s in range(1, 14)]
    small = [OutboxItem(s, cbor2.dumps({"seq": s})) for s in range(100, 170)]
    lone = OutboxItem(999, cbor2.dumps({"seq": 999}))
    session._start_publishes(rec, big)  # type: ignore[arg-type]
    session._start_publishes(rec, small)  # type: ignore[arg-type]
    session._start_publishes(rec, [lone])  # type: ignore[arg-type]
    counts = sorted(len(split_tx_payload(p)) for p in rec.payloads)
    assert counts == [1, 1, 6, 6, 6, 32, 32]
    assert all(len(p) <= TX_BATCH_MAX_SIZE for p in rec.payloads)
    assert lone.payload in rec.payloads  # the lone record, sent as itself
    seqs = sorted(cbor2.loads(one)["seq"] for p in rec.payloads for one in split_tx_payload(p))
    assert seqs == sorted([*range(1, 14), *range(100, 170), 999])
    assert session.stats.published == 13 + 70 + 1


async def test_record_publisher_reports_each_pubacks_reason_and_leaves_aiomqtt_its_own(
    tmp_path: Path,
) -> None:
    """Through the TLS broker with the terminals' ACL: a record on the terminal's own ``tx``
    topic is taken (a reason code below 128), one on another terminal's is refused (MQTT 5
    reason 135, not authorized) and reported as such, so the session never marks it ``sent``;
    aiomqtt's own publishes (status, events) still finish while the publisher owns
    ``on_publish``."""
    other = "440300907951"
    with Mosquitto(tmp_path / "mq", tls=True) as tls_broker:
        assert tls_broker.tls_files is not None
        cert, key = tls_broker.tls_files.client(TERMINAL)
        ctx = ssl.create_default_context(cafile=str(tls_broker.tls_files.ca))
        ctx.load_cert_chain(str(cert), str(key))
        client = aiomqtt.Client(
            "127.0.0.1", tls_broker.port, identifier="t-pub", tls_context=ctx,
            protocol=aiomqtt.ProtocolVersion.V5,
        )  # fmt: skip
        async with connection(client):
            publisher = RecordPublisher(client)
            reasons: dict[str, list[int]] = {"own": [], "other": []}
            all_six = asyncio.Event()

            def done(kind: str) -> Callable[[int], None]:
                def record(code: int) -> None:
                    reasons[kind].append(code)
                    if sum(map(len, reasons.values())) == 6:
                        all_six.set()

                return record

            for _ in range(3):
                publisher.publish(topics.tx(TERMINAL), b"\xa0", done("own"))
                publisher.publish(topics.tx(other), b"\xa0", done("other"))
            # an aiomqtt publish in between: its PUBACK goes to aiomqtt, which returns
            await asyncio.wait_for(
                client.publish(topics.status(TERMINAL), b"\xa0", qos=1, retain=True), 5
            )
            await asyncio.wait_for(all_six.wait(), 5)
            assert publisher.pending == 0
            publisher.close()
    # taken: 0, or 16 ("no matching subscribers"), both below 128
    assert len(reasons["own"]) == 3
    assert all(code < 0x80 for code in reasons["own"])
    assert reasons["other"] == [135, 135, 135]


async def test_a_refused_record_is_not_marked_sent_and_goes_again(broker: Mosquitto) -> None:
    """A PUBACK with a failure reason code leaves the record unsent (``stats.refused``); the
    ack timeout sends it again, and a broker that takes it then gets it marked ``sent``."""
    session = _session(broker.port, MemoryOutbox(2))
    item = OutboxItem(1, b"\xa0")

    class _Refusing:
        def __init__(self, codes: list[int]) -> None:
            self.codes = codes

        def publish(self, topic: str, payload: bytes, done: Callable[[int], None]) -> None:
            done(self.codes.pop(0))

    session._start_publishes(_Refusing([135]), [item])  # type: ignore[arg-type]
    assert (session.stats.refused, session.stats.published, session._puback) == (1, 0, [])
    session._start_publishes(_Refusing([0]), [item])  # type: ignore[arg-type]
    assert (session.stats.refused, session.stats.published, session._puback) == (1, 1, [1])


async def test_a_routed_topic_goes_to_its_handler_and_the_rest_to_aiomqtt(
    broker: Mosquitto,
) -> None:
    """``route_topic``: acks reach the handler on the loop's thread, in order, and never
    aiomqtt's queue; commands still come through ``client.messages``."""
    seen: list[tuple[bytes, bool]] = []
    loop_thread = threading.get_ident()
    got_all = asyncio.Event()

    def on_ack(payload: bytes) -> None:
        seen.append((payload, threading.get_ident() == loop_thread))
        if len(seen) == 3:
            got_all.set()

    client = aiomqtt.Client("127.0.0.1", broker.port, identifier="t-route")
    async with connection(client):
        route_topic(client, topics.ack(TERMINAL), on_ack)
        await client.subscribe(topics.ack(TERMINAL), qos=1)
        await client.subscribe(topics.cmd(TERMINAL), qos=1)
        async with connection(aiomqtt.Client("127.0.0.1", broker.port)) as peer:
            for i in range(3):
                await peer.publish(topics.ack(TERMINAL), bytes([i]), qos=1)
            await peer.publish(topics.cmd(TERMINAL), b"cmd", qos=1)
        msg = await asyncio.wait_for(anext(aiter(client.messages)), 5)
        await asyncio.wait_for(got_all.wait(), 5)
    assert (str(msg.topic), msg.payload) == (topics.cmd(TERMINAL), b"cmd")
    assert seen == [(b"\x00", True), (b"\x01", True), (b"\x02", True)]


async def test_a_new_backlog_pace_applies_to_the_drain_under_way(broker: Mosquitto) -> None:
    """Central's ``config_set uplink.backlog_rate`` (``UplinkSession.retune``): at 2 records a
    second this backlog would take 100 s; the new pace drains it at once, on the same
    connection. A new window size waits for the next connection."""
    outbox = MemoryOutbox(200)
    session = _session(broker.port, outbox, rate=2.0)
    async with central(broker.port):
        task = asyncio.create_task(session.run())
        try:
            async with asyncio.timeout(10):
                await session.wait_online()
            await asyncio.sleep(1.0)
            assert outbox.unacked_count() > 190  # paced: about 2 a second so far
            session.retune(backlog_rate=100_000.0, window=64)
            assert session.window.size == 32  # the window: next connection
            async with asyncio.timeout(10):
                while outbox.unacked_count():  # noqa: ASYNC110 - the outbox is sync
                    await asyncio.sleep(0.05)
            assert session.stats.connects == 1
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
