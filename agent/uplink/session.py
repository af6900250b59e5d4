"""The MQTT session: store-and-forward of the journal's outbox to central (DESIGN §5).

* The SQLite outbox is the only queue. A record is published (QoS 1), marked ``sent`` on PUBACK,
  and leaves the outbox only when central acks it on ``ssc/v1/<t>/ack`` (acks come as ranges).
  A PUBACK proves nothing about central (a broker may even refuse with reason code 135); an
  unacked record is published again after ``ack_timeout``. Central dedupes by (terminal, seq).
* A bounded in-flight window; records sealed after the connection came up ("live") go before the
  backlog; the backlog is paced by a token bucket so a returning fleet does not trip quotas.
* One new aiomqtt client per connection attempt (aiomqtt clients are reusable but not
  reentrant: peer-lessons (c) 6), full-jitter exponential backoff with a cap, and the backoff is
  reset only once a connection has stayed up, so a flapping link cannot storm.
* Retained ``status`` with a last will saying offline.
* Throughput (bench/drain.py): the drain keeps two cursors (last live and last backlog seq
  handed to the window), so a wake-up reads only records not yet in flight; records go out
  through :class:`~agent.uplink.mqtt.RecordPublisher` (a PUBACK found by its message id, not
  aiomqtt's per-publish task, event and O(window) scan); central's acks come straight from
  paho's read callback (:func:`~agent.uplink.mqtt.route_topic`), free the window at once and
  reach the journal in the drainer's next step, which writes every ack and PUBACK that came
  since the last one and reads the next records in one worker-thread hop (a central that acks
  each record alone costs an ack decode a record, and acks share transactions); PUBACKs are
  marked ``sent`` in batches, and only those whose reason code says the broker took the
  message; paho's own in-flight cap is off (the window is the cap); sockets run with
  ``TCP_NODELAY`` — the drain is request/response (records out, acks back) and Nagle's
  algorithm would hold a lone packet for the peer's delayed ACK (40 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiomqtt
import paho.mqtt.client as paho

from agent.errors import AgentError, UplinkError, UplinkUnavailableError, WireError
from agent.uplink import topics
from agent.uplink.flow import FullJitterBackoff, InflightWindow, TokenBucket
from agent.uplink.mqtt import RecordPublisher, connection, route_topic
from agent.wire.codec import TX_BATCH_MAX, TX_BATCH_MAX_SIZE, encode_tx_batch

log = logging.getLogger("agent.uplink")

# a batch element's CBOR framing (byte string head) and the array head, over-estimated; a
# batch is closed before its encoding could pass the wire's size bound
_BATCH_ITEM_OVERHEAD = 5
_BATCH_BUDGET = TX_BATCH_MAX_SIZE - 16

STABLE_AFTER_S = 30.0  # a connection that lasted this long resets the backoff
EXTRA_INFLIGHT = 16  # events, status and replies published beside a full window of records
NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)
REFUSED = 0x80  # MQTT 5 reason codes from here on are failures (§2.4)


@dataclass(frozen=True, slots=True)
class OutboxItem:
    seq: int
    payload: bytes


class Outbox(Protocol):
    """What the drain needs from the journal (sync; called in a worker thread)."""

    def pending(self, after_seq: int, limit: int) -> list[OutboxItem]:
        """Unacked sealed records with ``seq > after_seq``, ascending, at most ``limit``."""
        ...

    def mark_sent(self, seqs: list[int]) -> None: ...

    def ack(self, ranges: list[tuple[int, int]]) -> int:
        """Mark acked (idempotent); returns how many were newly acked."""
        ...

    def unacked_count(self) -> int: ...

    def max_seq(self) -> int:
        """Highest sealed seq (0 when empty)."""
        ...


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca_file: str
    cert_file: str
    key_file: str


@dataclass(slots=True)
class UplinkStats:
    published: int = 0  # records the broker took (PUBACK)
    refused: int = 0  # records whose PUBACK carried a failure reason code (sent again later)
    messages: int = 0  # tx messages they went in (a batch carries several)
    acked: int = 0
    resent: int = 0
    connects: int = 0
    connect_failures: int = 0
    last_error: str = ""


@dataclass
class UplinkSettings:
    terminal: str
    host: str
    port: int
    tls: TlsFiles | None = None
    window: int = 32
    backlog_rate: float = 200.0
    ack_timeout_s: float = 30.0
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 300.0
    keepalive_s: int = 30
    client_id: str = ""
    #: records per ``tx`` message; 1 (the contract: one record per message) or, for a central
    #: that takes ``tx-batch`` messages, up to 64 consecutive records (docs/MESSAGES.md)
    batch_max: int = 1
    extra_subscriptions: tuple[str, ...] = field(default=(topics.BROADCAST_BLACKLIST,))


CommandHandler = Callable[[str, bytes], Awaitable[None]]
EventSink = Callable[[str, dict[str, object]], None]


class UplinkSession:
    """Owns the connection loop; ``run()`` until cancelled."""

    def __init__(
        self,
        settings: UplinkSettings,
        outbox: Outbox,
        *,
        encode_status: Callable[[bool], bytes],
        decode_ack: Callable[[bytes], list[tuple[int, int]]],
        on_command: CommandHandler | None = None,
        on_event: EventSink | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.s = settings
        self.outbox = outbox
        self._encode_status = encode_status
        self._decode_ack = decode_ack
        self._on_command = on_command
        self._on_event = on_event
        self._clock = clock
        self.window = InflightWindow(settings.window)
        self._batch_max = max(1, min(settings.batch_max, TX_BATCH_MAX))
        self.backoff = FullJitterBackoff(settings.reconnect_min_s, settings.reconnect_max_s)
        self.stats = UplinkStats()
        self._wake = asyncio.Event()
        self._online = False
        self._online_changed = asyncio.Event()
        self._live_mark = 0
        self._repace = False  # backlog_rate changed: the drainer makes a new bucket
        self._client_now: aiomqtt.Client | None = None
        self._puback: list[int] = []  # PUBACKed seqs not yet marked sent (batched)
        self._acks: list[tuple[int, int]] = []  # central's acks not yet written to the journal
        self._rewind: int | None = None  # drain cursors go back to this seq (resend)

    # ---- public surface --------------------------------------------------------------------
    @property
    def online(self) -> bool:
        return self._online

    def wake(self) -> None:
        """A record was sealed: drain now rather than at the next tick."""
        self._wake.set()

    async def wait_online(self) -> None:
        """Return once connected (wrap in ``asyncio.timeout`` to bound it)."""
        while not self._online:
            self._online_changed.clear()
            await self._online_changed.wait()

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        """Publish on the live connection (events, replies); ``UplinkUnavailableError`` when
        offline or when the connection drops during the publish."""
        client = self._client_now
        if client is None or not self._online:
            raise UplinkUnavailableError("uplink is offline")
        try:
            await client.publish(topic, payload, qos=qos, timeout=10)
        except aiomqtt.MqttError as e:
            raise UplinkUnavailableError(f"publish failed: {e}") from None

    def resend_from(self, from_seq: int) -> None:
        """Central asked for records from ``from_seq`` again: forget them as in flight, so the
        drain publishes every unacked one of them now."""
        self.window.ack([(from_seq, 2**63)])
        self._rewind_to(from_seq - 1)
        self._wake.set()

    async def run(self) -> None:
        """Connect, drain, reconnect with backoff; forever (cancel to stop)."""
        while True:
            started = self._clock()
            try:
                async with connection(self._client()) as client:
                    self.stats.connects += 1
                    await self._connected(client)
            except* aiomqtt.MqttError as group:
                # Errors surface from the reader, the drain or a publish task (hence a group).
                err = group.exceptions[0]
                self.stats.last_error = str(err)
                self.stats.connect_failures += 1
                log.info("uplink down: %s", err)
            except* (OSError, RuntimeError, AgentError) as group:
                # The uplink is a supervised loop: an unexpected failure of one connection
                # (a socket error outside aiomqtt, a task scheduled on a closing group) must
                # not end draining for the life of the process. Records wait in the journal.
                failure = group.exceptions[0]
                self.stats.last_error = f"{type(failure).__name__}: {failure}"
                self.stats.connect_failures += 1
                log.warning("uplink connection failed unexpectedly: %r", failure)
            finally:
                self._client_now = None
                self._set_online(False)
                self._write_acks_now()
            if self._clock() - started >= STABLE_AFTER_S:
                self.backoff.reset()
            await asyncio.sleep(self.backoff.next())

    # ---- internals ---------------------------------------------------------------------------
    def _rewind_to(self, after_seq: int) -> None:
        self._rewind = after_seq if self._rewind is None else min(self._rewind, after_seq)

    def _take_rewind(self) -> int | None:
        rewind, self._rewind = self._rewind, None
        return rewind

    def _emit(self, kind: str, data: dict[str, object]) -> None:
        if self._on_event is not None:
            self._on_event(kind, data)

    def _set_online(self, value: bool) -> None:
        if value != self._online:
            self._online = value
            self._online_changed.set()
            self._emit(
                "uplink_online" if value else "uplink_offline", {"terminal": self.s.terminal}
            )

    def _client(self) -> aiomqtt.Client:
        tls_context = None
        if self.s.tls is not None:
            tls_context = ssl.create_default_context(cafile=self.s.tls.ca_file)
            tls_context.load_cert_chain(self.s.tls.cert_file, self.s.tls.key_file)
        will = aiomqtt.Will(
            topics.status(self.s.terminal), self._encode_status(False), qos=1, retain=True
        )
        client = aiomqtt.Client(
            self.s.host,
            self.s.port,
            identifier=self.s.client_id or f"ssc-{self.s.terminal}",
            protocol=aiomqtt.ProtocolVersion.V5,
            will=will,
            keepalive=self.s.keepalive_s,
            tls_context=tls_context,
            timeout=10,
            clean_start=paho.MQTT_CLEAN_START_FIRST_ONLY,
            # the journal is the queue: paho's own queue stays at the window size. The window
            # bounds what is in flight, so paho's own cap is off (0): its default of 20 would
            # cap the window, and any cap makes paho scan every message it holds on each
            # PUBACK (O(window) per record)
            max_queued_outgoing_messages=self.s.window * 2,
            max_inflight_messages=0,
            # small packets go out at once: with Nagle on, an ack or a record waits for the peer's
            # delayed TCP ACK (40 ms on Linux) whenever the pipe is not full
            socket_options=NODELAY,
        )
        # a full window is normal here, not the "too many pending calls" aiomqtt warns about
        client.pending_calls_threshold = self.s.window + EXTRA_INFLIGHT
        return client

    def retune(self, *, window: int | None = None, backlog_rate: float | None = None) -> None:
        """Central's ``config_set`` of ``uplink.inflight_window`` / ``uplink.backlog_rate``.

        The backlog pace applies at the drainer's next wake-up. The window applies at the next
        connection: the MQTT client's own queue is sized for it when the client is made."""
        if window is not None:
            self.s = dataclasses.replace(self.s, window=window)
        if backlog_rate is not None:
            self.s = dataclasses.replace(self.s, backlog_rate=backlog_rate)
            self._repace = True
            self._wake.set()

    async def _connected(self, client: aiomqtt.Client) -> None:
        self.window.clear()
        self.window.size = self.s.window  # central may have changed it (retune)
        self._live_mark = await asyncio.to_thread(self.outbox.max_seq)
        t = self.s.terminal
        route_topic(client, topics.ack(t), self._on_ack)
        await client.subscribe(topics.ack(t), qos=1)
        await client.subscribe(topics.cmd(t), qos=1)
        for extra in self.s.extra_subscriptions:
            await client.subscribe(extra, qos=1)
        await client.publish(topics.status(t), self._encode_status(True), qos=1, retain=True)
        self._client_now = client
        self._set_online(True)
        publisher = RecordPublisher(client)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._reader(client), name="uplink-reader")
                tg.create_task(self._drainer(publisher), name="uplink-drain")
        finally:
            publisher.close()

    def _on_ack(self, payload: bytes) -> None:
        """Central's ack (on the loop, from paho's read callback: :func:`route_topic`).

        Its records leave the window at once, so the drainer can fill it again; the journal
        learns of them in the drainer's next step, one write for every ack that came meanwhile.
        Until then they are still unacked on disk: a crash only means central gets them again,
        dedupes them and acks them again.
        """
        try:
            ranges = self._decode_ack(payload)
        except WireError as e:
            self._emit("ack_rejected", {"reason": e.code})
            return
        self.window.ack(ranges)
        self._acks.extend(ranges)
        self._wake.set()

    async def _reader(self, client: aiomqtt.Client) -> None:
        """Commands and broadcasts (acks take :meth:`_on_ack`)."""
        async for msg in client.messages:
            payload = msg.payload if isinstance(msg.payload, bytes | bytearray) else b""
            if self._on_command is not None:
                try:
                    await self._on_command(str(msg.topic), bytes(payload))
                except AgentError as e:  # a bad command never takes the uplink down
                    self._emit("command_rejected", {"reason": e.code, "message": e.message})

    def _start_publishes(self, publisher: RecordPublisher, items: list[OutboxItem]) -> None:
        """Publish ``items`` (records just added to the window, in seq order) as ``tx``
        messages of up to ``batch_max`` records and ``TX_BATCH_MAX_SIZE`` bytes each."""
        group: list[OutboxItem] = []
        size = 0
        for item in items:
            grown = size + len(item.payload) + _BATCH_ITEM_OVERHEAD
            if group and (len(group) >= self._batch_max or grown > _BATCH_BUDGET):
                self._publish(publisher, group)
                group, grown = [], len(item.payload) + _BATCH_ITEM_OVERHEAD
            group.append(item)
            size = grown
        if group:
            self._publish(publisher, group)

    def _publish(self, publisher: RecordPublisher, items: list[OutboxItem]) -> None:
        payload = (
            items[0].payload if len(items) == 1 else encode_tx_batch([i.payload for i in items])
        )
        try:
            publisher.publish(
                topics.tx(self.s.terminal), payload, functools.partial(self._published, items)
            )
        except aiomqtt.MqttError:
            # paho refused it (the connection is going): the records stay unacked and go again
            # on the next connection; central dedupes. Re-raise to restart the session.
            for item in items:
                self.window.discard(item.seq)
            raise

    def _published(self, items: list[OutboxItem], reason_code: int) -> None:
        """The PUBACK of one ``tx`` message (on the loop, from paho's callback)."""
        if reason_code >= REFUSED:
            # The broker refused it (quota, ACL): not "sent". The records stay in the window
            # until the ack timeout sends them again; the journal's stats show them unsent.
            self.stats.refused += len(items)
            return
        self.stats.published += len(items)
        self.stats.messages += 1
        # "sent" only records that the broker took a copy; the drainer writes these in batches
        # (a lost batch costs nothing: the record is still unacked and its ack still counts)
        self._puback.extend(item.seq for item in items)

    def _write_acks_now(self) -> None:
        """Write the acks that came since the drainer's last step (the connection ended: the
        next step may be far off). One short journal transaction on the loop's thread."""
        acks, self._acks = self._acks, []
        if not acks:
            return
        try:
            self.stats.acked += self.outbox.ack(acks)
        except AgentError as e:  # written by the next step instead
            self._acks = acks + self._acks
            log.warning("could not write central's acks: %s", e)

    def _late_step(
        self,
        acks: list[tuple[int, int]],
        step: asyncio.Future[tuple[int, list[OutboxItem], list[OutboxItem]]],
    ) -> None:
        """A step whose drainer was cancelled has ended in its thread: count what it acked,
        or keep its acks for the next write if it failed."""
        if step.cancelled() or step.exception() is not None:
            self._acks = acks + self._acks
        else:
            self.stats.acked += step.result()[0]

    def _journal_step(
        self,
        acks: list[tuple[int, int]],
        sent: list[int],
        live: tuple[int, int] | None,
        backlog: tuple[int, int] | None,
    ) -> tuple[int, list[OutboxItem], list[OutboxItem]]:
        """One worker-thread hop of the drainer: write central's acks and the PUBACKs that
        came since the last step, then read the next live and backlog records (``(after_seq,
        limit)`` each). Acks go first, so a cursor that went back never re-reads records that
        central has already acked."""
        acked = self.outbox.ack(acks) if acks else 0
        if sent:
            self.outbox.mark_sent(sent)
        fresh = self.outbox.pending(*live) if live else []
        old = self.outbox.pending(*backlog) if backlog else []
        return acked, fresh, old

    async def _drainer(self, publisher: RecordPublisher) -> None:
        """Fill the window: live records first, then the backlog through the token bucket.

        Two cursors (the last live and the last backlog seq handed to the window) make a wake-up
        read only records not yet in flight; they go back only when records must be sent again
        (ack timeout, central's ``resend``). A wake-up is one worker-thread hop
        (:meth:`_journal_step`) however many acks and PUBACKs came since the last one.
        """
        bucket = TokenBucket(self.s.backlog_rate, max(1.0, self.s.backlog_rate / 10), self._clock())
        tick = min(1.0, self.s.ack_timeout_s / 4)
        live_after = self._live_mark
        backlog_after = 0
        self._take_rewind()  # a new connection starts from the cursors above anyway
        while True:
            if self._repace:
                self._repace = False
                rate = self.s.backlog_rate
                bucket = TokenBucket(rate, max(1.0, rate / 10), self._clock())
            expired = self.window.expire(self._clock(), self.s.ack_timeout_s)
            if expired:
                self.stats.resent += len(expired)
                self._rewind_to(expired[0] - 1)
            rewind = self._take_rewind()
            if rewind is not None:
                backlog_after = min(backlog_after, rewind)
                live_after = min(live_after, max(rewind, self._live_mark))
            self._wake.clear()
            room = self.window.room
            acks, self._acks = self._acks, []
            sent, self._puback = self._puback, []
            want_backlog = room > 0 and backlog_after < self._live_mark
            if acks or sent or room:
                step = asyncio.ensure_future(
                    asyncio.to_thread(
                        self._journal_step,
                        acks,
                        sent,
                        (live_after, room) if room else None,
                        (backlog_after, room) if want_backlog else None,
                    )
                )
                try:
                    acked, live, backlog = await asyncio.shield(step)
                except asyncio.CancelledError:
                    # the thread finishes its writes anyway: count them when it does
                    step.add_done_callback(functools.partial(self._late_step, acks))
                    raise
                except AgentError:
                    self._acks = acks + self._acks  # not written: the next step writes them
                    raise
                self.stats.acked += acked
                fresh: list[OutboxItem] = []
                for item in live:
                    if not self.window.room:
                        break
                    live_after = item.seq
                    if item.seq not in self.window:
                        self.window.add(item.seq, self._clock())
                        fresh.append(item)
                self._start_publishes(publisher, fresh)
            else:
                backlog = []
            paced_wait = 0.0
            if self.window.room and want_backlog:
                fresh = []
                for item in backlog:
                    if item.seq > self._live_mark:
                        backlog_after = self._live_mark  # the backlog is all in flight
                        break
                    if not self.window.room:
                        break
                    if item.seq not in self.window:
                        paced_wait = bucket.try_take(self._clock())
                        if paced_wait:
                            break
                        self.window.add(item.seq, self._clock())
                        fresh.append(item)
                    backlog_after = item.seq
                self._start_publishes(publisher, fresh)
            if self._wake.is_set() and not paced_wait:
                continue  # acks came during the step: go again at once
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow the task
            # group's cancellation when the wake-up lands at the same moment, and the drainer
            # would then start publishes on a group that is shutting down
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(paced_wait or tick):
                    await self._wake.wait()


async def cancel_and_wait(task: asyncio.Task[Any], retry_s: float = 0.13) -> None:
    """Cancel ``task`` and wait until it has ended, cancelling again while it runs.

    On Python 3.11 a cancel that lands as an inner ``asyncio.wait_for`` completes is lost
    (CPython gh-86296), and aiomqtt waits for its replies that way: a single ``cancel()`` then
    ``await`` can wait for ever. The retry interval is unlike the session's 1 s tick, so the
    retries cannot stay in phase with it. Exceptions other than the cancellation propagate.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=retry_s)
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def drain_once(session: UplinkSession, limit_s: float) -> tuple[int, int, int]:
    """Run ``session`` until the outbox is empty or ``limit_s``; returns (sent, acked, remaining).

    Used by ``ssc-agent uplink drain``.
    """
    task = asyncio.create_task(session.run(), name="uplink")
    deadline = session._clock() + limit_s
    try:
        while session._clock() < deadline:
            # "anything left?" is one indexed row, not a count: counting a 100,000-record
            # backlog every 50 ms would hold the journal as long as the drain itself does
            if not await asyncio.to_thread(session.outbox.pending, 0, 1):
                break
            await asyncio.sleep(0.05)
    finally:
        await cancel_and_wait(task)
    remaining = await asyncio.to_thread(session.outbox.unacked_count)
    if remaining and not session.stats.connects:
        raise UplinkError(f"could not reach the broker: {session.stats.last_error or 'timeout'}")
    return session.stats.published, session.stats.acked, remaining
