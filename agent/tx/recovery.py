"""Recovery: nothing the card did goes unrecorded, nothing in doubt stays unexamined (DESIGN §4).

* :meth:`Recovery.start` — at agent start: every open ``intent`` becomes ``in_doubt``
  (``Journal.recover_open_intents``); in-doubt loss reports are resolved at once (they have no
  card step: the committed intent *is* the report); records with a card outcome that were never
  sealed (a crash between confirm and seal, a deferred seal) are sealed.
* :meth:`Recovery.on_card_seen` — whenever a card is inserted (or is still in the reader at
  start): read its identity (a locked card: the ATR bytes matched against the in-doubt
  records), resolve each of its in-doubt records by reading the card's real state now, seal
  them, then the blacklist check → ``auto_lock``.

How each kind is resolved (the card state read *now*; the only evidence there is):

==============  =============================================================================
lock/auto_lock  application locked (temp, perm or card blocked) → done; otherwise failed
unlock          not locked → done; temporarily locked → failed; perm-locked/blocked → failed
                (an unlock can never produce those states; the result names the state seen)
activate        card locked → stays in doubt (the status record cannot be read); status record
                active → done; not activated → failed. The PIN change that precedes the
                activation write cannot be read back: the result says so (``pin_unverifiable``)
pin_reset,      the try counter before the write is in the record's ``reason``; a reset/unblock
pin_unblock     always restores the counter to the maximum. Counter now below the maximum →
                failed; at the maximum and it was below before → done; at the maximum and it
                was at the maximum before → **unverifiable** (stays in doubt until the citizen
                verifies, :meth:`confirm_pin`)
pin_change      **unverifiable**: the PIN cannot be read, and the try counter is not evidence
                (a successful VERIFY of the old PIN resets it exactly as a change would). It
                stays ``in_doubt`` — never claimed done — until the citizen proves which PIN the
                card holds with :meth:`confirm_pin` (VERIFY of the new PIN: 9000 → done; 63Cx →
                failed, the old PIN is still in force). Each sighting reports
                ``tx_unverifiable``.
bank_activate   bank application not blocked → done; blocked → failed
report_loss     no card step: resolved done at start (result ``recovered``)
==============  =============================================================================

A change made to the card *elsewhere* between the attempt and the re-read cannot be told apart
from the attempt's own effect; the re-read reports the state the card is in, which is what the
citizen and central need next.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.emv.app import read_bank_app
from agent.errors import FileNotFoundOnCardError, JournalError, PinError
from agent.ssc.app import CardState, SscApplication
from agent.ssc.commands import check_pin
from agent.tx.engine import WriteWatch, atr_card_hint, hint_matches
from agent.tx.machine import Event, State
from agent.tx.records import Kind, TxRecord

if TYPE_CHECKING:
    from agent.card.apdu import CardChannel
    from agent.journal.store import TxRow
    from agent.ssc.app import CardStatus
    from agent.tx.engine import TxEngine

log = logging.getLogger(__name__)

_TRIES_RE = re.compile(r"^pin_tries_before=(\d+)$")
UNVERIFIABLE = "unverifiable"


@dataclass(frozen=True, slots=True)
class Resolution:
    """What happened to one in-doubt record at a sighting."""

    tx_id: str
    kind: str
    #: ``done``, ``failed``, or ``unverifiable`` / ``unreadable`` (still in doubt).
    verdict: str
    result: str | None
    record: TxRecord


@dataclass(frozen=True, slots=True)
class Sighting:
    """Result of :meth:`Recovery.on_card_seen`."""

    card_id_code: str | None
    resolutions: tuple[Resolution, ...] = ()
    auto_lock: TxRecord | None = None
    still_in_doubt: tuple[str, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class StartReport:
    in_doubt: tuple[str, ...]
    resolved_cardless: tuple[str, ...]
    sealed: int


class Recovery:
    """Start-up recovery and in-doubt resolution for one engine (module docstring)."""

    def __init__(self, engine: TxEngine) -> None:
        self.engine = engine
        self.journal = engine.journal

    # ---- start ----------------------------------------------------------------------------
    async def start(self) -> StartReport:
        rows = self.journal.recover_open_intents()
        for row in rows:  # the agent stopped between intent and outcome: central hears of it
            self._journal_event("tx_in_doubt", row, code="restarted")
        cardless = []
        for row in self.journal.records(State.IN_DOUBT.value):
            if row.kind == Kind.REPORT_LOSS.value:
                self.journal.transition(row.tx_id, Event.RESOLVED_DONE, result="recovered")
                self._resolved(row, "done", "recovered")
                cardless.append(row.tx_id)
        sealed = await self.seal_pending()
        return StartReport(tuple(r.tx_id for r in rows), tuple(cardless), sealed)

    async def seal_pending(self) -> int:
        """Seal every record that has a card outcome but no seal yet; returns how many."""
        n = 0
        for state in (State.CARD_DONE, State.FAILED):
            for row in reversed(self.journal.records(state.value)):
                rec = await self.engine.seal(row.tx_id)
                n += rec.state is State.SEALED
        return n

    # ---- a card is seen -------------------------------------------------------------------
    async def identify(self, channel: CardChannel) -> tuple[str | None, list[TxRow]]:
        """The card's id and its in-doubt records (a locked card: matched through the ATR)."""
        watch = WriteWatch(channel)
        app = SscApplication(watch, self.engine.profile, self.engine.sam)
        sel = await app.select()
        if sel.lock is None:
            read = (await app.read_identity()).card_id.hex
            return read, self.journal.in_doubt_for_card(read)
        hint = atr_card_hint(watch.atr)
        if hint is None:
            return None, []
        rows = [
            r
            for r in reversed(self.journal.records(State.IN_DOUBT.value))
            if r.card_id_code and hint_matches(r.card_id_code, hint)
        ]
        cids = {r.card_id_code for r in rows if r.card_id_code}
        if len(cids) != 1:
            return None, []  # none, or ambiguous: never resolve against the wrong card
        return cids.pop(), rows

    async def on_card_seen(self, channel: CardChannel, *, auto_lock: bool = True) -> Sighting:
        """Resolve this card's in-doubt records, seal them, then the blacklist check."""
        cid, rows = await self.identify(channel)
        resolutions = []
        for row in rows:
            resolutions.append(await self.resolve(channel, row))
        locked = None
        if auto_lock:  # a locked card is identified through the ATR and the journal here
            locked = await self.engine.auto_lock(channel)
        still = tuple(r.tx_id for r in resolutions if r.record.state is State.IN_DOUBT)
        return Sighting(cid, tuple(resolutions), locked, still)

    async def resolve(self, channel: CardChannel, row: TxRow) -> Resolution:
        """Resolve one in-doubt record against the card in ``channel`` (see the table)."""
        assert row.card_id_code is not None  # in-doubt records always name their card
        kind = Kind(row.kind)
        app = SscApplication(
            channel,
            self.engine.profile,
            self.engine.sam,
            card_id_code=bytes.fromhex(row.card_id_code),
        )
        status = await app.state()
        verdict, result = await self._verdict(kind, row, status, channel)
        if verdict in ("done", "failed"):
            event = Event.RESOLVED_DONE if verdict == "done" else Event.RESOLVED_FAILED
            self.journal.transition(row.tx_id, event, result=result)
            rec = await self.engine.seal(row.tx_id)
            self._resolved(row, verdict, result)
        else:
            rec = TxRecord.from_row(row)
            self._journal_event(f"tx_{verdict}", row, why=result)
            self.engine.emit(f"tx_{verdict}", _tx_data(row))
        return Resolution(row.tx_id, row.kind, verdict, result, rec)

    async def _verdict(
        self, kind: Kind, row: TxRow, status: CardStatus, channel: CardChannel
    ) -> tuple[str, str | None]:
        state = status.state
        max_tries = self.engine.profile.pin_max_tries
        if kind in (Kind.LOCK, Kind.AUTO_LOCK):
            return ("done", "locked") if state.locked else ("failed", f"card_{state.value}")
        if kind is Kind.UNLOCK:
            if not state.locked:
                return "done", "unlocked"
            return "failed", f"card_{state.value}"
        if state.locked:
            return "unreadable", f"card_{state.value}"
        if kind is Kind.ACTIVATE:
            if state is CardState.ACTIVE:
                return "done", "activated+pin_unverifiable"
            return "failed", "not_activated+pin_unverifiable"
        if kind in (Kind.PIN_RESET, Kind.PIN_UNBLOCK):
            now = status.pin_tries_left
            m = _TRIES_RE.match(row.reason or "")
            before = int(m.group(1)) if m else None
            if now is None:
                return "unreadable", "pin_tries_unknown"
            if now < max_tries:
                return "failed", f"pin_tries_left={now}"
            if before is not None and before < max_tries:
                return "done", "pin_tries_restored"
            return UNVERIFIABLE, "pin_tries_were_full"
        if kind is Kind.PIN_CHANGE:
            return UNVERIFIABLE, "pin_cannot_be_read"
        if kind is Kind.BANK_ACTIVATE:
            try:
                info = await read_bank_app(channel)
            except FileNotFoundOnCardError:
                return "failed", "no_bank_application"
            return ("failed", "bank_blocked") if info.blocked else ("done", "activated")
        return "unreadable", None

    async def confirm_pin(self, channel: CardChannel, tx_id: str, pin: str) -> Resolution:
        """Resolve an unverifiable PIN record with the citizen's help: VERIFY ``pin`` (the new
        PIN of that record). 9000 → done; 63Cx/6983 → failed (the card does not hold it). A
        wrong entry costs one try, exactly as at any terminal."""
        check_pin(pin)
        row = self.journal.get(tx_id)
        if row is None or row.state != State.IN_DOUBT.value or row.card_id_code is None:
            raise JournalError(f"{tx_id} is not an in-doubt record")
        app = SscApplication(
            channel,
            self.engine.profile,
            self.engine.sam,
            card_id_code=bytes.fromhex(row.card_id_code),
        )
        await app.read_identity()  # refuses another card (CardProtocolError)
        try:
            await app.verify_pin(pin)
        except PinError as err:
            verdict, result = "failed", f"new_pin_rejected:{err.code}"
        else:
            verdict, result = "done", "new_pin_verified"
        event = Event.RESOLVED_DONE if verdict == "done" else Event.RESOLVED_FAILED
        self.journal.transition(tx_id, event, result=result)
        rec = await self.engine.seal(tx_id)
        self._resolved(row, verdict, result)
        return Resolution(tx_id, row.kind, verdict, result, rec)

    def _resolved(self, row: TxRow, verdict: str, result: str | None) -> None:
        """A ``tx_resolved`` event: central learns how and why an in-doubt operation ended (its
        sealed record says what; this says it was once in doubt)."""
        self._journal_event("tx_resolved", row, outcome=verdict, why=result)

    def _journal_event(self, kind: str, row: TxRow, **extra: str | None) -> None:
        """A journal event about ``row`` for upstream; a journal failure is logged, not raised
        (the resolution itself is what the caller must learn)."""
        try:
            self.journal.add_event(kind, {**_tx_data(row), **extra})
        except JournalError as err:
            log.warning("could not journal %s: %s", kind, err.message)


def _tx_data(row: TxRow) -> dict[str, Any]:
    """What an event says of the record it is about (no personal data)."""
    return {"tx_id": row.tx_id, "kind": row.kind, "card_id_code": row.card_id_code}
