"""Signed commands from central, applied on the agent (DESIGN §4–5).

:class:`CommandHandler` is the session's ``on_command``: every message on
``ssc/v1/<terminal>/cmd`` and ``ssc/v1/all/blacklist`` is verified by
:class:`agent.wire.commands.CommandVerifier` (COSE_Sign1 Ed25519, terminal binding, expiry,
replay) and then applied to the journal:

=====================  ========================================================================
blacklist_snapshot     ``Journal.blacklist_snapshot_replace`` (replaced cards keep their reason)
blacklist_delta        ``Journal.blacklist_apply_delta``; a base-version mismatch is reported as
                       ``command_rejected`` with reason ``blacklist_version`` and
                       ``need = "snapshot"``: central answers with a snapshot for this terminal
authorize              ``Journal.add_authorization`` (unlock / PIN reset / PIN unblock: pushed
                       ahead, or central's answer to an ``authorization_request`` event)
authorization_refused  central refused an online request: reason ``card_replaced`` is applied
                       as ``card_replaced`` below; ``formal_loss`` blacklists the card with
                       reason ``formal_loss`` (not remembered: central's next snapshot or delta
                       rules); ``denied`` changes nothing. ``on_authorization`` then ends the
                       request's wait
card_replaced          blacklisted with reason ``replaced`` (unlock refused for good, the seed
                       rule in ``agent.tx.policy``), remembered across snapshots
config_set             kept in the journal (:class:`CentralSettings`: central's value outlives a
                       restart and wins over the config file); ``on_setting`` applies it and
                       says when it takes effect, in the ``config_changed`` event
ping                   ``pong`` event
report                 ``command_applied`` event with journal counts; the app then publishes its
                       telemetry and retained status at once
resend                 unacked records from ``from_seq`` are resent now
=====================  ========================================================================

Every outcome is an event: stored in the journal's events table first (durable, reported later
if offline), then published on ``ssc/v1/<terminal>/event`` when a publisher is attached. Every
rejection (unsigned, bad signature, replayed, expired, wrong terminal, malformed) is a
``command_rejected`` event with the reason; a bad command never takes the uplink down.

Replay state (highest counter, last id) lives in the journal's ``meta`` table and is written
after the command was applied: every apply is idempotent (snapshot replace, a delta at the same
version is a no-op, authorizations are keyed by id), so a crash in between re-applies harmlessly
instead of losing a command.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from agent.errors import (
    BlacklistVersionError,
    CommandRejectedError,
    JournalError,
    MessageEncodingError,
    UplinkUnavailableError,
    WireError,
)
from agent.journal import Journal
from agent.uplink import topics
from agent.wire import cbor
from agent.wire.codec import (
    AuthorizationRefused,
    Authorize,
    BlacklistDelta,
    BlacklistSnapshot,
    CardReplaced,
    Command,
    ConfigSet,
    EventMessage,
    Ping,
    Report,
    Resend,
)
from agent.wire.commands import CommandVerifier

__all__ = [
    "APPLIES",
    "BLACKLIST_REASON",
    "REPLACED_REASON",
    "CentralSettings",
    "CommandHandler",
    "EventReporter",
    "JournalReplayStore",
]

log = logging.getLogger("agent.uplink.commands")

#: The wire blacklist carries no loss reason: the strict reading (formal loss) applies.
BLACKLIST_REASON = "formal_loss"
#: ``agent.tx.policy.REPLACED``: never unlocked.
REPLACED_REASON = "replaced"
_META_COUNTER = "cmd_last_counter"
_META_ID = "cmd_last_id"
_META_REPLACED = "cards_replaced"
_META_VERSION = "blacklist_version"  # the journal's own key (see Journal.blacklist_version)
_META_SETTING = "central_setting:"  # + the setting's dotted key
_EVENT_NS = uuid.UUID("6f1c2d8e-5b3a-4e0f-9a51-3c7d2b8e4f10")

Publisher = Callable[[str, bytes], Awaitable[None]]
EventHook = Callable[[str, dict[str, Any]], Awaitable[None] | None]
#: Told (on the event loop) about every applied ``authorize`` and ``authorization_refused``.
AuthorizationHook = Callable[[Authorize | AuthorizationRefused], None]
#: When a setting from central takes effect, as ``on_setting`` answers and the
#: ``config_changed`` event says: at once, at the uplink's next connection, at the next start;
#: or never, because this agent's config refuses the value (an error, also logged).
APPLIES = ("now", "next_connection", "restart", "refused")
#: Applies a setting from central (on the event loop); returns one of :data:`APPLIES`.
SettingHook = Callable[[str, str | int | bool], str]


def _hex(card: bytes) -> str:
    """The journal's card id form: 32 upper-case hex digits (``CardIdCode.hex``)."""
    return card.hex().upper()


class JournalReplayStore:
    """:class:`agent.wire.commands.ReplayStore` over the journal's ``meta`` table."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def last_counter(self) -> int:
        v = self.journal.meta_get(_META_COUNTER)
        return int(v) if v is not None else 0

    def seen(self, command_id: bytes) -> bool:
        # counters strictly increase per issuer, so an older id is already refused by counter
        v = self.journal.meta_get(_META_ID)
        return v is not None and bytes(v) == command_id

    def record(self, command: Command) -> None:
        if command.counter > self.last_counter():
            self.journal.meta_set(_META_COUNTER, command.counter)
            self.journal.meta_set(_META_ID, command.id)


class CentralSettings:
    """The settings central changed with ``config_set``, in the journal's ``meta`` table (one
    row per key, the value as CBOR so a bool stays a bool), so they outlive a restart: the app
    lays them over its config file at start (``agent.config.with_settings``)."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def store(self, key: str, value: str | int | bool) -> None:
        self.journal.meta_set(_META_SETTING + key, cbor.encode(value))

    def load(self) -> dict[str, str | int | bool]:
        """Every stored setting; one that does not decode to a scalar is left out (logged)."""
        out: dict[str, str | int | bool] = {}
        for key, raw in self.journal.meta_items(_META_SETTING).items():
            try:
                value = cbor.decode(bytes(raw)) if isinstance(raw, bytes) else None
            except WireError:
                value = None
            if not isinstance(value, str | int):  # bool is an int
                log.error("setting %s from central is unreadable in the journal; ignored", key)
                continue
            out[key] = value
        return out

    def clear(self, keys: list[str] | None = None) -> list[str]:
        """Forget central's value of ``keys`` (all when ``None``): the config file rules again
        from the next start. Returns the keys that were set."""
        held = sorted(self.journal.meta_items(_META_SETTING))
        gone = held if keys is None else [k for k in held if k in keys]
        for key in gone:
            self.journal.meta_delete(_META_SETTING + key)
        return gone


class EventReporter:
    """Events: journal first, then ``ssc/v1/<terminal>/event`` when a publisher is attached.

    ``publisher(topic, payload)`` is typically ``UplinkSession.publish``; it raises
    ``UplinkUnavailableError`` when offline, and the event then stays unreported in the journal
    until :meth:`flush`.
    """

    def __init__(
        self,
        journal: Journal,
        terminal: str,
        publisher: Publisher | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.journal = journal
        self.terminal = terminal
        self.publisher = publisher
        self._clock = clock

    def message(self, event_id: int, at_ms: int, kind: str, data: Mapping[str, Any]) -> bytes:
        """The wire event of a journal event; its id is derived from the journal row, so a
        re-sent event carries the same id and central dedupes it."""
        eid = uuid.uuid5(_EVENT_NS, f"{self.terminal}/{event_id}/{at_ms}").bytes
        return EventMessage(self.terminal, eid, at_ms // 1000, kind, dict(data)).to_cbor()

    async def report(self, kind: str, data: Mapping[str, Any]) -> None:
        """Store the event, then try to publish it (and anything older still unreported)."""
        await asyncio.to_thread(self.journal.add_event, kind, dict(data))
        await self.flush()

    async def report_now(self, kind: str, data: Mapping[str, Any]) -> bool:
        """Publish an event the journal cannot keep (``journal_full``) straight away, with an id
        of its own; ``False`` when offline (then it is lost, and the retained status still shows
        the journal down)."""
        if self.publisher is None:
            return False
        now = self._clock()
        msg = EventMessage(self.terminal, uuid.uuid4().bytes, int(now), kind, dict(data))
        try:
            await self.publisher(topics.event(self.terminal), msg.to_cbor())
        except UplinkUnavailableError:
            return False
        return True

    async def flush(self) -> int:
        """Publish unreported events in order; returns how many went out."""
        if self.publisher is None:
            return 0
        sent = 0
        while True:
            batch = await asyncio.to_thread(self.journal.events, 0, 50, unreported_only=True)
            if not batch:
                return sent
            for ev in batch:
                try:
                    payload = self.message(ev.id, ev.at, ev.kind, ev.data)
                except MessageEncodingError as exc:  # not a wire event type: keep it local
                    log.debug("event %s not reportable: %s", ev.kind, exc)
                    await asyncio.to_thread(self.journal.mark_events_reported, [ev.id])
                    continue
                try:
                    await self.publisher(topics.event(self.terminal), payload)
                except UplinkUnavailableError:
                    return sent
                await asyncio.to_thread(self.journal.mark_events_reported, [ev.id])
                sent += 1


class CommandHandler:
    """The uplink's ``on_command(topic, payload)``; see the module docstring.

    ``on_event(kind, data)`` (sync or async) is told about every event after it is stored, e.g.
    to forward it to local API clients. ``reporter`` publishes events on the uplink (attach the
    session's ``publish`` as its publisher); ``on_resend(from_seq)`` is the session's
    ``resend_from``; ``on_authorization(body)`` is told about every applied ``authorize`` and
    ``authorization_refused`` (``agent.uplink.port.SessionUplinkPort.answered``: it ends the
    wait of an online request).
    """

    def __init__(
        self,
        verifier: CommandVerifier,
        journal: Journal,
        terminal: str,
        on_event: EventHook | None = None,
        *,
        replay: JournalReplayStore | None = None,
        reporter: EventReporter | None = None,
        on_resend: Callable[[int], None] | None = None,
        on_authorization: AuthorizationHook | None = None,
        on_setting: SettingHook | None = None,
    ) -> None:
        self.verifier = verifier
        self.journal = journal
        self.terminal = terminal
        self.on_event = on_event
        self.replay = replay or JournalReplayStore(journal)
        self.reporter = reporter or EventReporter(journal, terminal)
        self.on_resend = on_resend
        self.on_authorization = on_authorization
        self.on_setting = on_setting

    async def __call__(self, topic: str, payload: bytes) -> None:
        try:
            # a 100,000-entry snapshot takes a while to verify: keep the loop free
            command = await asyncio.to_thread(self.verifier.verify, payload)
        except CommandRejectedError as exc:
            await self._event(
                "command_rejected",
                {"reason": exc.reason, "message": exc.message[:200], "topic": topic[-40:]},
            )
            return
        try:
            kind, data = await asyncio.to_thread(self._apply, command)
        except BlacklistVersionError as exc:
            await asyncio.to_thread(self.replay.record, command)
            await self._event(
                "command_rejected",
                {
                    "reason": "blacklist_version",
                    "message": exc.message[:200],
                    "id": command.id,
                    "type": command.type,
                    "need": "snapshot",
                    "local_version": await asyncio.to_thread(self.journal.blacklist_version),
                },
            )
            return
        except JournalError as exc:
            await self._event(
                "command_rejected",
                {"reason": exc.code, "message": exc.message[:200], "id": command.id},
            )
            return
        await asyncio.to_thread(self.replay.record, command)
        if isinstance(command.body, Resend) and self.on_resend is not None:
            self.on_resend(command.body.from_seq)
        if isinstance(command.body, ConfigSet):
            # stored already: without a hook (a tool, not the running agent) it applies at start
            body = command.body
            hook = self.on_setting
            data["applies"] = "restart" if hook is None else hook(body.key, body.value)
        await self._event(kind, data)
        if self.on_authorization is not None and isinstance(
            command.body, Authorize | AuthorizationRefused
        ):
            self.on_authorization(command.body)

    async def _event(self, kind: str, data: dict[str, Any]) -> None:
        await self.reporter.report(kind, data)
        if self.on_event is not None:
            result = self.on_event(kind, data)
            if inspect.isawaitable(result):
                await result

    # ---- apply (sync, in a worker thread) -----------------------------------------------------
    def _replaced(self) -> list[str]:
        """Cards central said were replaced (kept in ``meta``, so snapshots cannot drop them)."""
        raw = self.journal.meta_get(_META_REPLACED)
        return [] if not raw else str(raw).split(",")

    def _apply(self, command: Command) -> tuple[str, dict[str, Any]]:
        body = command.body
        base: dict[str, Any] = {"id": command.id, "type": command.type}
        j = self.journal
        if isinstance(body, BlacklistSnapshot):
            replaced = set(self._replaced())
            entries = [(_hex(c), BLACKLIST_REASON) for c in body.entries if _hex(c) not in replaced]
            entries += [(c, REPLACED_REASON) for c in sorted(replaced)]
            size = j.blacklist_snapshot_replace(body.version, entries)
            return "blacklist_updated", {**base, "version": body.version, "size": size}
        if isinstance(body, BlacklistDelta):
            replaced = set(self._replaced())
            j.blacklist_apply_delta(
                body.base_version,
                body.version,
                [(_hex(c), BLACKLIST_REASON) for c in body.add if _hex(c) not in replaced],
                [_hex(c) for c in body.remove if _hex(c) not in replaced],
            )
            return "blacklist_updated", {
                **base,
                "version": body.version,
                "size": j.blacklist_size(),
            }
        if isinstance(body, Authorize):
            new = j.add_authorization(
                command.id.hex(),
                _hex(body.card_id_code),
                body.kind,
                body.expires * 1000,
                command.to_cbor(),
            )
            return "command_applied", {**base, "kind": body.kind, "new": new}
        if isinstance(body, AuthorizationRefused):
            refused = {
                **base,
                "kind": body.kind,
                "reason": body.reason,
                "request_id": body.request_id,
            }
            if body.reason == "card_replaced":
                return "command_applied", {**refused, **self._card_replaced(body.card_id_code)}
            if body.reason == "formal_loss":
                return "command_applied", {**refused, **self._formal_loss(body.card_id_code)}
            return "command_applied", {**refused, "blacklisted": False}
        if isinstance(body, CardReplaced):
            return "command_applied", {**base, **self._card_replaced(body.card_id_code)}
        if isinstance(body, ConfigSet):
            CentralSettings(j).store(body.key, body.value)
            return "config_changed", {**base, "key": body.key, "value": body.value}
        if isinstance(body, Ping):
            return "pong", base
        if isinstance(body, Report):
            s = j.stats()
            return "command_applied", {
                **base,
                "unacked": s.unacked,
                "last_seq": s.last_seq,
                "transactions": s.transactions,
                "in_doubt": s.in_doubt,
                "blacklist_version": s.blacklist_version,
                "blacklist_size": s.blacklist_size,
            }
        if isinstance(body, Resend):
            n = self._requeue(body.from_seq)
            return "command_applied", {**base, "from_seq": body.from_seq, "unacked": n}
        raise JournalError(f"no handler for command type {command.type}")  # pragma: no cover

    def _card_replaced(self, card: bytes) -> dict[str, Any]:
        """Remember the card and blacklist it now with reason ``replaced``.

        The entry survives later snapshots and deltas because ``_apply`` re-adds every
        remembered replaced card.
        """
        code = _hex(card)
        known = self._replaced()
        if code not in known:
            self.journal.meta_set(_META_REPLACED, ",".join([*known, code]))
        self._blacklist_one(code, REPLACED_REASON)
        return {"blacklisted": True}

    def _formal_loss(self, card: bytes) -> dict[str, Any]:
        """Central refused because the card is formally reported lost: blacklist it now (its
        next snapshot or delta may have been missed). Not remembered: central's list rules
        from its next snapshot or delta on. A replaced card stays replaced."""
        code = _hex(card)
        if self.journal.blacklist_reason(code) != REPLACED_REASON:
            self._blacklist_one(code, BLACKLIST_REASON)
        return {"blacklisted": True}

    def _blacklist_one(self, code: str, reason: str) -> None:
        """Blacklist one card without moving the list's version.

        The journal has no single-entry insert, so a one-entry delta v -> v+1 is applied and
        the local version set back to v: the list stays at central's version (the next delta
        from central still applies).
        """
        j = self.journal
        version = j.blacklist_version()
        try:
            j.blacklist_apply_delta(version, version + 1, [(code, reason)], [])
        finally:
            j.meta_set(_META_VERSION, version)

    def _requeue(self, from_seq: int) -> int:
        j = self.journal
        seqs: list[int] = []
        total = 0
        after = from_seq - 1
        while True:
            batch = j.unacked(after, 1000)
            if not batch:
                break
            seqs.extend(r.seq for r in batch if r.state == "sent")
            total += len(batch)
            after = batch[-1].seq
        j.requeue(seqs)
        return total
