"""The transaction engine: every card-changing operation as a journaled state machine (DESIGN §4).

Common skeleton of every flow (``agent.tx.machine`` has the table)::

    idempotency key seen before? ─yes─▶ the existing record (the card is never written twice)
    select SSSE + identity (a locked card: identity from the caller or the ATR + journal)
    policy.decide ─refused─▶ PolicyRefusal(code, message) + journal event "tx_refused";
                              no record, no card write
    journal.create_intent         (committed BEFORE the first card write; consumes an
                                   authorization in the same transaction)
    card write(s) ──9000──────────▶ card_confirmed → card_done
                  ──status word───▶ card_refused → failed         (well-formed refusal: no effect)
                  ──removed/device/garbage/65xx/6Fxx after the write was sent──▶
                                   crash_recovered → in_doubt     (resolved when the card is seen
                                                                   again: agent.tx.recovery)
                  ──the same before any write was sent──▶ card_refused → failed ("not_sent")
    seal (journal.seal_async with sam.seal_mac) → uplink.wake() → the record

What the caller learns (never less than the truth):

* success: the :class:`~agent.tx.records.TxRecord` (``state`` ``sealed``; ``card_done`` if the
  seal had to be deferred — the PSAM failed; ``Recovery.seal_pending`` seals it later);
* a policy refusal: :class:`~agent.errors.PolicyRefusal` (nothing journaled but an event);
* the card refused: :class:`~agent.errors.CardRefusedError` (``code`` = the card error's code,
  e.g. ``pin_wrong``; ``record`` = the sealed failed record);
* the outcome is unknown: :class:`~agent.errors.TransactionInDoubtError` (``record`` in_doubt);
* a device, PSAM or protocol error before any write reached the card: that error itself (the
  failed record is journaled and sealed too).

"A write was sent" is decided by :class:`WriteWatch`, a channel proxy that counts
card-changing commands handed to the reader (secure-messaging CLA ``84``/``04`` — block,
unblock, card block, update record, PIN unblock, issuer scripts — and ``80 5E`` PIN
change/reset). Anything that fails once such a command left the terminal may have changed the
card, so it is in doubt; anything before cannot have.

``on_event(name, data)`` is called synchronously at each step (``tx_intent``,
``tx_card_written``, ``tx_card_done``, ``tx_failed``, ``tx_in_doubt``, ``tx_sealing``,
``tx_sealed``, ``tx_refused``, ``blacklist_hit``) with masked data only: progress events for a
kiosk UI, and the hook the kill-at-every-step reliability test uses.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.card.atr import parse_atr
from agent.emv.app import generate_ac, read_bank_app
from agent.emv.dol import build_dol_data, default_terminal_data
from agent.emv.script import ScriptOutcome, relay_issuer_scripts
from agent.errors import (
    AgentError,
    AtrError,
    AuthorizationTimeoutError,
    CardProtocolError,
    CardRefusedError,
    CardStatusError,
    DuplicateIntentError,
    JournalError,
    LocalProtocolError,
    PolicyRefusal,
    TransactionInDoubtError,
    UplinkUnavailableError,
    WireError,
)
from agent.ssc.app import CardState, SscApplication
from agent.ssc.commands import check_pin
from agent.tx.machine import Event, State
from agent.tx.policy import (
    ACTIVATE_OFFLINE_COUNTER,
    MESSAGES,
    Context,
    PolicyConfig,
    day_window,
    decide,
)
from agent.tx.ports import BankRequest
from agent.tx.records import Kind, TxRecord, now_ms
from agent.wire.pii import check_personal

if TYPE_CHECKING:
    from agent.card.apdu import CardChannel, CommandApdu, ResponseApdu
    from agent.journal.store import Journal, TxRow
    from agent.profile import CardProfile
    from agent.psam.module import SecurityModule
    from agent.ssc.app import Selection
    from agent.tx.ports import BankHostPort, UplinkPort

log = logging.getLogger(__name__)

EventSink = Callable[[str, Mapping[str, Any]], None]

#: Kinds that need a signed authorization from central (online: asked for; offline: pushed).
AUTH_KINDS = frozenset({Kind.UNLOCK, Kind.PIN_RESET, Kind.PIN_UNBLOCK})
#: Lock reasons (the record's ``reason``).
LOCK_REASONS = ("holder", "blacklist", "central")
#: Status-word classes that do not prove "no effect" after a write: 65xx memory failure,
#: 6Fxx unknown fault.
_UNCERTAIN_SW1 = frozenset({0x65, 0x6F})

#: Refusal codes of the engine itself (policy codes are in ``agent.tx.policy.MESSAGES``).
ENGINE_MESSAGES: Mapping[str, tuple[str, str]] = {
    "already_locked": ("此卡已锁定", "The card is already locked"),
    "not_locked": ("此卡未锁定，无需解锁", "The card is not locked"),
    "permanently_locked": (
        "此卡已永久锁定，请到服务窗口办理",
        "The card is permanently locked; please visit a service counter",
    ),
    "card_blocked": ("此卡已停用", "The card is blocked"),
    "card_locked": ("此卡已锁定，请先解锁", "The card is locked; unlock it first"),
    "already_active": ("此卡已启用", "The card is already activated"),
    "card_unknown": (
        "无法识别已锁定的卡，请到服务窗口办理",
        "The locked card cannot be identified; please visit a service counter",
    ),
    "wrong_card": ("不是本次业务的卡", "This is not the card of this transaction"),
    "authorization_denied": ("中心未授权此业务", "Central did not authorize this service"),
    "authorization_timeout": (
        "中心未及时答复授权请求，请稍后再试",
        "Central did not answer the authorization request in time; please try again later",
    ),
    "no_bank_application": ("此卡无金融应用", "The card has no bank application"),
    "bank_not_configured": ("终端未连接银行主机", "This terminal has no bank host"),
    "idempotency_conflict": (
        "业务编号已用于其他业务",
        "The idempotency key belongs to another operation",
    ),
}


def message_for(code: str) -> tuple[str, str]:
    """``(zh, en)`` texts for a refusal code of the policy or the engine."""
    return MESSAGES.get(code) or ENGINE_MESSAGES.get(code) or (code, code)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
def is_card_write(command: CommandApdu) -> bool:
    """A command that may change the card: secure messaging (CLA 84/04) or PIN change/reset."""
    return command.cla in (0x84, 0x04) or (command.cla == 0x80 and command.ins == 0x5E)


class WriteWatch:
    """``CardChannel`` proxy counting card-changing commands handed to the reader."""

    def __init__(self, inner: CardChannel) -> None:
        self.inner = inner
        self.writes_sent = 0
        self.apdus = 0

    @property
    def atr(self) -> bytes | None:
        atr = getattr(self.inner, "atr", None)
        return bytes(atr) if isinstance(atr, bytes | bytearray) else None

    async def transmit(self, command: CommandApdu) -> ResponseApdu:
        if is_card_write(command):
            self.writes_sent += 1  # counted before sending: once handed over it may take effect
        self.apdus += 1
        return await self.inner.transmit(command)


def atr_card_hint(atr: bytes | None) -> bytes | None:
    """6 bytes that an SSC's ATR historical bytes carry: area code bytes 1–2 ‖ chip serial bytes
    1–4 (ssc-card-protocol.md §1.3: ``…3202AD932A48`` ↔ ``320200D156000005AD932A48…``, [S])."""
    if not atr:
        return None
    try:
        hist = parse_atr(atr).historical
    except AtrError:
        return None
    return hist[-6:] if len(hist) == 13 else None


def hint_pattern(hint: bytes) -> str:
    """The SQL ``LIKE`` pattern of the card codes that :func:`hint_matches` accepts: bytes 0–1
    and 8–11 of the 16-byte code as upper-case hex, every other digit ``_``."""
    return hint[:2].hex().upper() + "_" * 12 + hint[2:6].hex().upper() + "_" * 8


def hint_matches(card_id_code: str, hint: bytes) -> bool:
    try:
        raw = bytes.fromhex(card_id_code)
    except ValueError:
        return False
    return len(raw) == 16 and raw[:2] + raw[8:12] == hint


def record_to_json(rec: TxRecord) -> dict[str, Any]:
    """The record as the CLI and API print it (no personal data)."""
    return {
        "tx_id": rec.tx_id,
        "seq": rec.seq,
        "kind": rec.kind.value,
        "state": rec.state.value,
        "outcome": rec.outcome,
        "result": rec.result,
        "error_code": rec.error_code,
        "card_id_code": rec.card_id_code,
        "terminal_id": rec.terminal_id,
        "offline": rec.offline,
        "reason": rec.reason,
        "auth_id": rec.auth_id,
        "idempotency_key": rec.idempotency_key,
        "created_at": rec.created_at,
        "updated_at": rec.updated_at,
        "hash": rec.hash.hex() if rec.hash else None,
        "has_personal": bool(rec.personal),
    }


@dataclass(slots=True)
class CardSession:
    """A card opened by the engine: the application, its write watch and what SELECT said."""

    watch: WriteWatch
    app: SscApplication
    selection: Selection
    card_id_code: str | None

    @property
    def lock(self) -> CardState | None:
        return self.selection.lock


@dataclass(slots=True)
class _Progress:
    """What a write function reports besides its result."""

    #: Result to record if a *later* write is refused after an earlier one took effect.
    partial: str | None = None


WriteFn = Callable[[_Progress], Awaitable[str | None]]


class _BankDeclined(AgentError):
    code = "bank_declined"


# ---------------------------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------------------------
class TxEngine:
    """Runs the card transactions of one terminal (see the module docstring)."""

    def __init__(  # noqa: PLR0917  # the port signature agreed with the other layers
        self,
        journal: Journal,
        sam: SecurityModule,
        profile: CardProfile,
        policy_config: PolicyConfig | None,
        uplink: UplinkPort,
        terminal_id: str,
        *,
        bank: BankHostPort | None = None,
        clock: Callable[[], int] = now_ms,
        on_event: EventSink | None = None,
    ) -> None:
        self.journal = journal
        self.sam = sam
        self.profile = profile
        self.policy = policy_config or PolicyConfig()
        self.uplink = uplink
        self.terminal_id = terminal_id
        self.bank = bank
        self.clock = clock
        self._on_event = on_event

    # ---- events ---------------------------------------------------------------------------
    def emit(self, name: str, data: Mapping[str, Any]) -> None:
        if self._on_event is not None:
            self._on_event(name, data)

    def _emit_row(self, name: str, row: TxRow | TxRecord) -> None:
        self.emit(
            name,
            {
                "tx_id": row.tx_id,
                "kind": str(row.kind),
                "state": str(row.state),
                "card_id_code": row.card_id_code,
            },
        )

    def _journal_event(self, kind: str, data: Mapping[str, Any]) -> None:
        """A journal event for upstream; a journal failure here is logged, not raised (the
        operation's own outcome is what the caller must learn)."""
        try:
            self.journal.add_event(kind, data)
        except JournalError as err:
            log.warning("could not journal event %s: %s", kind, err.message)

    def refuse(self, kind: Kind, card_id_code: str | None, code: str) -> PolicyRefusal:
        """Journal a ``tx_refused`` event and build the refusal to raise."""
        zh, en = message_for(code)
        data = {
            "kind": kind.value,
            "code": code,
            "card_id_code": card_id_code,
            "terminal_id": self.terminal_id,
        }
        self._journal_event("tx_refused", data)
        self.emit("tx_refused", data)
        err = PolicyRefusal(en, code=code)
        err.message_zh = zh  # type: ignore[attr-defined]  # the kiosk's text beside the English one
        return err

    # ---- records --------------------------------------------------------------------------
    def record(self, tx_id: str) -> TxRecord:
        row = self.journal.get(tx_id)
        if row is None:
            raise JournalError(f"no transaction {tx_id}")
        return TxRecord.from_row(row)

    def outcome(self, rec: TxRecord) -> TxRecord:
        """Return ``rec`` if it succeeded, else raise what it means (used for fresh results and
        for idempotent replays alike, so a retry learns exactly what the first call learned)."""
        if rec.state is State.IN_DOUBT or rec.state is State.INTENT:
            raise TransactionInDoubtError(
                f"{rec.kind.value}: the card's outcome is unknown until it is seen again",
                record=rec,
            )
        if rec.outcome == "failed":
            raise CardRefusedError(
                f"{rec.kind.value} failed ({rec.error_code or 'refused'})",
                code=rec.error_code or "card_refused",
                record=rec,
            )
        return rec

    def _existing(self, kind: Kind, key: str | None) -> TxRecord | None:
        if key is None:
            return None
        row = self.journal.find_by_idempotency_key(key)
        if row is None:
            return None
        if row.kind != kind.value:
            raise self.refuse(kind, row.card_id_code, "idempotency_conflict")
        return TxRecord.from_row(row)

    # ---- opening a card -------------------------------------------------------------------
    async def open_card(
        self, channel: CardChannel, *, card_id_code: str | None = None
    ) -> CardSession:
        """SELECT the SSSE and identify the card. A locked card serves no READ RECORD
        (CARD-PROTOCOL §1): its identity is ``card_id_code`` if given, else the one journaled
        card whose code matches the ATR's embedded bytes (``None`` if none or several)."""
        watch = WriteWatch(channel)
        app = SscApplication(watch, self.profile, self.sam)
        sel = await app.select()
        if sel.lock is None:
            ident = await app.read_identity()
            read = ident.card_id.hex
            if card_id_code is not None and card_id_code.upper() != read:
                raise PolicyRefusal(message_for("wrong_card")[1], code="wrong_card")
            return CardSession(watch, app, sel, read)
        cid = (
            card_id_code.upper()
            if card_id_code
            else await asyncio.to_thread(self.card_id_from_atr, watch.atr)
        )
        if cid is not None:
            app = SscApplication(
                watch,
                self.profile,
                self.sam,
                card_id_code=bytes.fromhex(cid),
                algorithm=sel.algorithm,
            )
            sel = await app.select()
        return CardSession(watch, app, sel, cid)

    def card_id_from_atr(self, atr: bytes | None) -> str | None:
        """The journaled card whose code matches the ATR (CARD-PROTOCOL §1.3): an in-doubt
        record's card first, else a card this terminal locked, however long ago (within the
        journal's retention); ``None`` if none or several match. Reads the journal: call it
        from a worker thread."""
        hint = atr_card_hint(atr)
        if hint is None:
            return None
        found = {
            r.card_id_code
            for r in self.journal.records(State.IN_DOUBT.value)
            if r.card_id_code and hint_matches(r.card_id_code, hint)
        }
        if not found:
            found = {
                code
                for code in self.journal.card_codes_like(
                    hint_pattern(hint), (Kind.LOCK.value, Kind.AUTO_LOCK.value)
                )
                if hint_matches(code, hint)  # LIKE ignores case: the code must be ours exactly
            }
        return found.pop() if len(found) == 1 else None

    # ---- policy ---------------------------------------------------------------------------
    async def authorize(self, kind: Kind, card_id_code: str | None) -> tuple[bool, str | None]:
        """Policy decision; returns ``(offline, auth_id)`` or raises the refusal.

        Unlock / PIN reset / PIN unblock without a stored authorization, online: a card the
        local blacklist already refuses is refused without asking; otherwise central is asked
        (``UplinkPort.request_authorization``). Central's refusal is decided by the policy again
        (its signed refusal blacklists a replaced or formally lost card, so the citizen gets
        ``card_replaced`` / ``formal_loss_counter_only``), else ``authorization_denied``; no
        answer in time is ``authorization_timeout``; the link lost is decided as offline.
        """
        now = self.clock()
        online = self.uplink.online
        auth = None
        if kind in AUTH_KINDS and card_id_code is not None:
            auth = self.journal.find_valid_authorization(card_id_code, kind.value)
            if auth is None and online:
                known = decide(
                    kind.value,
                    True,
                    Context(
                        now_ms=now,
                        card_id_code=card_id_code,
                        blacklist_reason=self.journal.blacklist_reason(card_id_code),
                    ),
                    self.policy,
                )
                if not known.allowed:
                    raise self.refuse(kind, card_id_code, known.code)
                try:
                    await self.uplink.request_authorization(kind.value, card_id_code)
                except AuthorizationTimeoutError:
                    raise self.refuse(kind, card_id_code, "authorization_timeout") from None
                except UplinkUnavailableError:
                    online = False  # central went away: decide as offline
                # granted or not, only a verified authorization in the journal counts
                auth = self.journal.find_valid_authorization(card_id_code, kind.value)
        count = 0
        if kind is Kind.ACTIVATE and not online:
            count = self.journal.counter_get(ACTIVATE_OFFLINE_COUNTER, day_window(now))
        ctx = Context(
            now_ms=now,
            card_id_code=card_id_code,
            blacklist_reason=(
                self.journal.blacklist_reason(card_id_code) if card_id_code else None
            ),
            authorization=auth,
            offline_count_today=count,
            offline_since_ms=self.uplink.last_online_ms,
        )
        decision = decide(kind.value, online, ctx, self.policy)
        if not decision.allowed:
            raise self.refuse(kind, card_id_code, decision.code)
        auth_id = decision.auth_id or (auth.auth_id if auth is not None else None)
        if kind in AUTH_KINDS and auth_id is None:
            code = (
                f"offline_{kind.value}_needs_authorization"
                if not online
                else "authorization_denied"
            )
            raise self.refuse(kind, card_id_code, code)
        return not online, auth_id

    # ---- the common skeleton ----------------------------------------------------------------
    async def execute(
        self,
        kind: Kind,
        card_id_code: str | None,
        write: WriteFn,
        *,
        watch: WriteWatch | None,
        offline: bool,
        reason: str | None = None,
        idempotency_key: str | None = None,
        auth_id: str | None = None,
        personal: Mapping[str, str] | None = None,
    ) -> TxRecord:
        """intent → write → card_done | failed | in_doubt → seal → wake (module docstring)."""
        rec = TxRecord(
            kind=kind,
            terminal_id=self.terminal_id,
            card_id_code=card_id_code,
            offline=offline,
            reason=reason,
            idempotency_key=idempotency_key,
            auth_id=auth_id,
            personal=personal,
            created_at=self.clock(),
        )
        try:
            self.journal.create_intent(rec)
        except DuplicateIntentError:
            existing = self._existing(kind, idempotency_key)
            if existing is None:
                raise
            return self.outcome(existing)  # a concurrent twin won the race: its outcome
        self._emit_row("tx_intent", rec)
        if kind is Kind.ACTIVATE and offline:
            self.journal.counter_incr(ACTIVATE_OFFLINE_COUNTER, day_window(rec.created_at))
        progress = _Progress()

        def sent() -> int:
            return watch.writes_sent if watch is not None else 0

        try:
            result = await write(progress)
        except CardStatusError as err:
            if sent() and err.sw >> 8 in _UNCERTAIN_SW1:
                raise self._in_doubt(rec, err) from err
            row = self.journal.transition(
                rec.tx_id, Event.CARD_REFUSED, error_code=err.code, result=progress.partial
            )
            self._emit_row("tx_failed", row)
            sealed = await self.seal(rec.tx_id)
            raise CardRefusedError(err.message, code=err.code, record=sealed) from err
        except _BankDeclined as err:
            row = self.journal.transition(
                rec.tx_id, Event.CARD_REFUSED, error_code=err.code, result="declined"
            )
            self._emit_row("tx_failed", row)
            sealed = await self.seal(rec.tx_id)
            raise CardRefusedError(err.message, code=err.code, record=sealed) from err
        except AgentError as err:
            # Removed card, device fault, timeout, garbage answer, PSAM failure, bug of ours:
            # in doubt once a write left the terminal, otherwise certainly without effect.
            if sent():
                raise self._in_doubt(rec, err) from err
            row = self.journal.transition(
                rec.tx_id, Event.CARD_REFUSED, error_code=err.code, result="not_sent"
            )
            self._emit_row("tx_failed", row)
            await self.seal(rec.tx_id)
            raise
        except BaseException as err:
            # Cancellation (the caller gave up) or an unexpected bug: record what is known,
            # then let it propagate unchanged.
            if sent():
                self._in_doubt(rec, err)
            else:
                self.journal.transition(
                    rec.tx_id, Event.CARD_REFUSED, error_code="aborted", result="not_sent"
                )
            raise
        self.emit("tx_card_written", {"tx_id": rec.tx_id, "kind": kind.value})
        row = self.journal.transition(rec.tx_id, Event.CARD_CONFIRMED, result=result)
        self._emit_row("tx_card_done", row)
        return await self.seal(rec.tx_id)

    def _in_doubt(self, rec: TxRecord, err: BaseException) -> TransactionInDoubtError:
        code = err.code if isinstance(err, AgentError) else type(err).__name__
        row = self.journal.transition(rec.tx_id, Event.CRASH_RECOVERED, error_code=code)
        self._emit_row("tx_in_doubt", row)
        self._journal_event(
            "tx_in_doubt",
            {"tx_id": row.tx_id, "kind": row.kind, "card_id_code": row.card_id_code, "code": code},
        )
        return TransactionInDoubtError(
            f"{rec.kind.value}: {code} after the card write was sent; the outcome is resolved "
            "when the card is seen again",
            record=TxRecord.from_row(row),
        )

    async def seal(self, tx_id: str) -> TxRecord:
        """Seal a card_done/failed record and wake the uplink. A security-module or journal
        failure defers the seal (event ``seal_deferred``; ``Recovery.seal_pending`` retries):
        the card outcome is already durable, so it is not reported as a failure of the card."""

        async def mac(digest: bytes) -> bytes:
            self.emit("tx_sealing", {"tx_id": tx_id})
            return await self.sam.seal_mac(digest)

        try:
            await self.journal.seal_async(tx_id, mac)
        except (AgentError, TimeoutError) as err:
            code = err.code if isinstance(err, AgentError) else "timeout"
            log.warning("seal of %s deferred: %s", tx_id, code)
            self._journal_event("seal_deferred", {"tx_id": tx_id, "code": code})
            return self.record(tx_id)
        rec = self.record(tx_id)
        self._emit_row("tx_sealed", rec)
        self.uplink.wake()
        return rec

    # ---- flows ----------------------------------------------------------------------------
    async def lock(
        self,
        channel: CardChannel,
        reason: str = "holder",
        *,
        idempotency_key: str | None = None,
        card_id_code: str | None = None,
    ) -> TxRecord:
        """Application lock (84 1E, temporary): always allowed, also offline (protective)."""
        if reason not in LOCK_REASONS:
            raise LocalProtocolError(f"lock reason must be one of {LOCK_REASONS}")
        kind = Kind.AUTO_LOCK if reason == "blacklist" else Kind.LOCK
        return await self._lock(kind, channel, reason, idempotency_key, card_id_code)

    async def _lock(
        self,
        kind: Kind,
        channel: CardChannel,
        reason: str,
        idempotency_key: str | None,
        card_id_code: str | None,
    ) -> TxRecord:
        existing = self._existing(kind, idempotency_key)
        if existing is not None:
            return self.outcome(existing)
        s = await self.open_card(channel, card_id_code=card_id_code)
        if s.lock is not None:
            raise self.refuse(kind, s.card_id_code, _lock_code(s.lock, "already_locked"))
        offline, _ = await self.authorize(kind, s.card_id_code)

        async def write(_: _Progress) -> str:
            await s.app.block()
            return "locked"

        return await self.execute(
            kind,
            s.card_id_code,
            write,
            watch=s.watch,
            offline=offline,
            reason=reason,
            idempotency_key=idempotency_key,
        )

    async def auto_lock(self, channel: CardChannel) -> TxRecord | None:
        """A blacklisted card was inserted: lock it (``auto_lock``, reason ``blacklist``) and
        report ``blacklist_hit``. ``None`` when the card is not blacklisted or already locked."""
        s = await self.open_card(channel)
        if s.card_id_code is None:
            return None
        bl = self.journal.blacklist_reason(s.card_id_code)
        if bl is None:
            return None
        hit = {
            "card_id_code": s.card_id_code,
            "reason": bl,
            "terminal_id": self.terminal_id,
            "action": "lock" if s.lock is None else "already_locked",
        }
        self._journal_event("blacklist_hit", hit)
        self.emit("blacklist_hit", hit)
        if s.lock is not None:
            return None
        offline, _ = await self.authorize(Kind.AUTO_LOCK, s.card_id_code)

        async def write(_: _Progress) -> str:
            await s.app.block()
            return "locked"

        return await self.execute(
            Kind.AUTO_LOCK,
            s.card_id_code,
            write,
            watch=s.watch,
            offline=offline,
            reason="blacklist",
        )

    async def unlock(
        self,
        channel: CardChannel,
        *,
        idempotency_key: str | None = None,
        card_id_code: str | None = None,
    ) -> TxRecord:
        """Application unblock (84 18) with an authorization from central: a pushed one from
        the journal, or (online) one requested now. Refused for a replaced card or a formal
        loss (policy), for a card that is not (temporarily) locked, and for a locked card whose
        identity cannot be established (``card_unknown``)."""
        kind = Kind.UNLOCK
        existing = self._existing(kind, idempotency_key)
        if existing is not None:
            return self.outcome(existing)
        s = await self.open_card(channel, card_id_code=card_id_code)
        if s.lock is None:
            raise self.refuse(kind, s.card_id_code, "not_locked")
        if s.lock is not CardState.TEMP_LOCKED:
            raise self.refuse(kind, s.card_id_code, _lock_code(s.lock, "permanently_locked"))
        if s.card_id_code is None:
            raise self.refuse(kind, None, "card_unknown")
        offline, auth_id = await self.authorize(kind, s.card_id_code)

        async def write(_: _Progress) -> str:
            await s.app.unblock()
            return "unlocked"

        return await self.execute(
            kind,
            s.card_id_code,
            write,
            watch=s.watch,
            offline=offline,
            reason="central" if auth_id else None,
            idempotency_key=idempotency_key,
            auth_id=auth_id,
        )

    async def report_loss(
        self,
        ssn: str,
        card_number: str,
        name: str | None = None,
        *,
        card_id_code: str | None = None,
        idempotency_key: str | None = None,
    ) -> TxRecord:
        """Loss report with the card absent (挂失): accepted online, queued offline (result
        ``pending``). The ID number, card number and name are kept in the record's ``personal``
        field, encrypted at rest by the journal, never in the sealed body (which holds their
        salted digest); they travel to central sealed to its key (``agent.wire.pii``)."""
        kind = Kind.REPORT_LOSS
        existing = self._existing(kind, idempotency_key)
        if existing is not None:
            return self.outcome(existing)
        if not ssn or not card_number:
            raise LocalProtocolError("a loss report needs the ID number and the card number")
        personal = {"ssn": ssn, "card_number": card_number}
        if name:
            personal["name"] = name
        try:
            check_personal(personal)  # what central's sealed copy can hold (agent.wire.pii)
        except WireError as exc:
            raise LocalProtocolError(f"loss report: {exc.message.removeprefix('pii: ')}") from None
        now = self.clock()
        online = self.uplink.online
        ctx = Context(now_ms=now, card_id_code=card_id_code)
        decision = decide(kind.value, online, ctx, self.policy)
        if not decision.allowed:
            raise self.refuse(kind, card_id_code, decision.code)

        async def write(_: _Progress) -> str:
            return "pending" if decision.pending else "accepted"

        return await self.execute(
            kind,
            card_id_code,
            write,
            watch=None,
            offline=not online,
            reason="holder",
            idempotency_key=idempotency_key,
            personal=personal,
        )

    async def activate(
        self,
        channel: CardChannel,
        old_pin: str | None = None,
        new_pin: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> TxRecord:
        """Social-security activation (启用): the PIN change the profile requires (initial PIN →
        the citizen's own; done first, so a wrong PIN refuses before anything changes), then
        the profile's card-side step (EF05 status record, 04 DC). Offline within the policy's
        count and age limits; each offline attempt counts."""
        kind = Kind.ACTIVATE
        existing = self._existing(kind, idempotency_key)
        if existing is not None:
            return self.outcome(existing)
        act = self.profile.activation
        if act.require_pin_change:
            if old_pin is None or new_pin is None:
                raise LocalProtocolError("activation changes the PIN: old and new PIN needed")
            check_pin(old_pin)
            check_pin(new_pin)
        s = await self.open_card(channel)
        if s.lock is not None:
            raise self.refuse(kind, s.card_id_code, _lock_code(s.lock, "card_locked"))
        if act.step != "none" and await s.app.activation_state() is CardState.ACTIVE:
            raise self.refuse(kind, s.card_id_code, "already_active")
        offline, _ = await self.authorize(kind, s.card_id_code)

        async def write(progress: _Progress) -> str:
            parts = []
            if act.require_pin_change:
                assert old_pin is not None  # checked above
                assert new_pin is not None
                await s.app.change_pin(old_pin, new_pin)
                progress.partial = "pin_changed"
                parts.append("pin_changed")
            if await s.app.activate():
                parts.insert(0, "activated")
            return "+".join(parts) or "central_only"

        return await self.execute(
            kind,
            s.card_id_code,
            write,
            watch=s.watch,
            offline=offline,
            reason="holder",
            idempotency_key=idempotency_key,
        )

    async def pin_change(
        self,
        channel: CardChannel,
        old_pin: str,
        new_pin: str,
        *,
        idempotency_key: str | None = None,
    ) -> TxRecord:
        """CHANGE PIN (80 5E 01): the card verifies the old PIN; allowed offline."""
        check_pin(old_pin)
        check_pin(new_pin)
        return await self._pin_op(
            Kind.PIN_CHANGE,
            channel,
            lambda s: s.app.change_pin(old_pin, new_pin),
            idempotency_key,
        )

    async def pin_reset(
        self, channel: CardChannel, new_pin: str, *, idempotency_key: str | None = None
    ) -> TxRecord:
        """PIN reload (80 5E 00, rpk MAC): authorized as unlock is."""
        check_pin(new_pin)
        return await self._pin_op(
            Kind.PIN_RESET, channel, lambda s: s.app.reset_pin(new_pin), idempotency_key
        )

    async def pin_unblock(
        self, channel: CardChannel, new_pin: str, *, idempotency_key: str | None = None
    ) -> TxRecord:
        """PIN unblock (84 24, puk): authorized as unlock is."""
        check_pin(new_pin)
        return await self._pin_op(
            Kind.PIN_UNBLOCK, channel, lambda s: s.app.unblock_pin(new_pin), idempotency_key
        )

    async def _pin_op(
        self,
        kind: Kind,
        channel: CardChannel,
        op: Callable[[CardSession], Awaitable[None]],
        idempotency_key: str | None,
    ) -> TxRecord:
        existing = self._existing(kind, idempotency_key)
        if existing is not None:
            return self.outcome(existing)
        s = await self.open_card(channel)
        if s.lock is not None:
            raise self.refuse(kind, s.card_id_code, _lock_code(s.lock, "card_locked"))
        offline, auth_id = await self.authorize(kind, s.card_id_code)
        # Evidence for recovery (the PIN itself can never be read back): the try counter
        # before the write, kept in the record's ``reason``.
        tries = await s.app.pin_tries_left()

        async def write(_: _Progress) -> str:
            await op(s)
            return {"pin_change": "pin_changed", "pin_reset": "pin_reset"}.get(
                kind.value, "pin_unblocked"
            )

        return await self.execute(
            kind,
            s.card_id_code,
            write,
            watch=s.watch,
            offline=offline,
            reason=f"pin_tries_before={tries}",
            idempotency_key=idempotency_key,
            auth_id=auth_id,
        )

    async def bank_activate(
        self, channel: CardChannel, *, idempotency_key: str | None = None
    ) -> TxRecord:
        """Bank account activation (online only): GENERATE AC (ARQC) → bank host → its issuer
        scripts relayed unchanged to the card (ssc-card-protocol.md §4)."""
        kind = Kind.BANK_ACTIVATE
        existing = self._existing(kind, idempotency_key)
        if existing is not None:
            return self.outcome(existing)
        bank = self.bank
        s = await self.open_card(channel)
        if bank is None:
            raise self.refuse(kind, s.card_id_code, "bank_not_configured")
        if s.lock is not None:
            raise self.refuse(kind, s.card_id_code, _lock_code(s.lock, "card_locked"))
        offline, _ = await self.authorize(kind, s.card_id_code)
        terminal = default_terminal_data()
        info = await read_bank_app(s.watch, terminal=terminal)
        if not info.blocked:
            raise self.refuse(kind, s.card_id_code, "already_active")
        if info.cdol1 is None:
            raise CardProtocolError("bank application has no CDOL1 (8C)")
        cdol1 = info.cdol1

        async def write(_: _Progress) -> str:
            ac = await generate_ac(s.watch, cdol1, terminal)
            request = BankRequest(
                info.pan,
                info.psn or 0,
                ac.atc,
                ac.cryptogram,
                build_dol_data(cdol1, terminal),
                info.aip or bytes(2),
                ac.iad,
            )
            answer = await bank.authorize(request)
            if not answer.approved:
                raise _BankDeclined(
                    f"the bank host declined (response code {answer.response_code})"
                )
            results = await relay_issuer_scripts(s.watch, answer.scripts)
            for r in results:
                if r.outcome is ScriptOutcome.SUCCESS:
                    continue
                if r.failed_index is not None and len(r.sws) < r.failed_index:
                    # the failing command has no status word: garbage after it was sent
                    raise CardProtocolError("issuer script command answered malformed bytes")
                raise CardStatusError(r.sws[-1], "issuer script refused", command="issuer script")
            if not results:
                raise _BankDeclined("the bank host sent no issuer script")
            return "activated"

        return await self.execute(
            kind,
            s.card_id_code,
            write,
            watch=s.watch,
            offline=offline,
            reason="holder",
            idempotency_key=idempotency_key,
        )


def _lock_code(state: CardState, default: str) -> str:
    if state is CardState.CARD_BLOCKED:
        return "card_blocked"
    if state is CardState.PERM_LOCKED and default != "already_locked":
        return "permanently_locked"
    return default


async def run_with_timeout(coro: Awaitable[TxRecord], seconds: float) -> TxRecord:
    """Run a flow with an overall deadline (a timeout after the write was sent is in doubt:
    the flow sees ``TimeoutError`` from the channel it waits on)."""
    async with asyncio.timeout(seconds):
        return await coro
