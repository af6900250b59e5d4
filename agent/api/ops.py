"""The local API's operations (DESIGN §6; the reference is docs/API.md).

``build_handlers(app)`` maps each operation name to an ``async handler(args) -> result`` for
:class:`agent.api.server.ApiServer`. Handlers validate their arguments (``bad_request``), run
card work under the app's card-io lock, and translate outcomes:

* success → the result map (records as :func:`agent.tx.engine.record_to_json`: no personal data);
* a policy or engine refusal → ``{"code", "message", "message_zh"}`` — the citizen-facing texts;
* the card refused → the card error's code (``pin_wrong``...) and the journaled ``record``;
* the outcome is unknown → ``tx_in_doubt`` and the ``record`` (resolved when the card is seen).

Transaction requests must carry ``idempotency_key`` (1–128 chars): a retried request with the
same key returns the first request's outcome and never changes the card twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from agent.errors import (
    AgentError,
    ApiError,
    CardRefusedError,
    PolicyRefusal,
    TransactionInDoubtError,
)

if TYPE_CHECKING:
    from agent.app import App
    from agent.card.apdu import CardChannel
    from agent.tx.records import TxRecord

Handler = Callable[[Mapping[str, Any]], Awaitable[Any]]

MAX_WAIT_S = 300.0
MAX_QUERY = 1000
TX_OPS = (
    "tx.lock",
    "tx.unlock",
    "tx.report_loss",
    "tx.activate",
    "tx.bank_activate",
    "pin.change",
    "pin.reset",
    "pin.unblock",
)


class OperationError(ApiError):
    """An operation's failure with extra fields for the client (texts, the journaled record)."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message, code=code)
        self.extra = extra

    def to_dict(self) -> dict[str, Any]:  # extra fields beside code and message
        return {"code": self.code, "message": self.message, **self.extra}


class BadArgsError(ApiError):
    """An argument is missing or of the wrong type."""

    code = "bad_request"


class TimeoutApiError(ApiError):
    """The wait ended before the condition was met."""

    code = "timeout"


# ---- argument helpers -----------------------------------------------------------------------
def _str(
    args: Mapping[str, Any], key: str, *, required: bool = True, max_len: int = 128
) -> str | None:
    v = args.get(key)
    if v is None:
        if required:
            raise BadArgsError(f"argument {key!r} is required")
        return None
    if not isinstance(v, str) or not 1 <= len(v) <= max_len:
        raise BadArgsError(f"argument {key!r} must be a string of 1..{max_len} characters")
    return v


def _pin(args: Mapping[str, Any], key: str) -> str:
    v = _str(args, key, max_len=12)
    assert v is not None
    if not v.isdigit() or not 4 <= len(v) <= 12:
        raise BadArgsError(f"argument {key!r} must be 4 to 12 digits")
    return v


def _bool(args: Mapping[str, Any], key: str, default: bool = False) -> bool:
    v = args.get(key, default)
    if not isinstance(v, bool):
        raise BadArgsError(f"argument {key!r} must be true or false")
    return v


def _number(args: Mapping[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    v = args.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
        raise BadArgsError(f"argument {key!r} must be a number in {lo}..{hi}")
    return float(v)


def _card_id(args: Mapping[str, Any], key: str = "card_id_code") -> str | None:
    v = _str(args, key, required=False, max_len=32)
    if v is None:
        return None
    try:
        ok = len(bytes.fromhex(v)) == 16
    except ValueError:
        ok = False
    if not ok:
        raise BadArgsError(f"argument {key!r} must be 32 hex digits")
    return v.upper()


def _record_json(rec: Any) -> dict[str, Any] | None:
    from agent.tx.engine import record_to_json
    from agent.tx.records import TxRecord

    return record_to_json(rec) if isinstance(rec, TxRecord) else None


def translate(err: AgentError) -> AgentError:
    """The API form of an engine outcome (module docstring)."""
    if isinstance(err, PolicyRefusal):
        from agent.tx.engine import message_for

        zh, en = message_for(err.code)
        return OperationError(
            err.code, en if err.message in ("", err.code) else err.message, message_zh=zh
        )
    if isinstance(err, CardRefusedError | TransactionInDoubtError):
        return OperationError(err.code, err.message, record=_record_json(err.record))
    return err


# ---- the operations --------------------------------------------------------------------------
class Operations:
    """The handlers, bound to one :class:`agent.app.App`."""

    def __init__(self, app: App) -> None:
        self.app = app

    def handlers(self) -> dict[str, Handler]:
        h: dict[str, Handler] = {
            "status": self.status,
            "card.wait": self.card_wait,
            "card.read": self.card_read,
            "tx.lock": self.tx_lock,
            "tx.unlock": self.tx_unlock,
            "tx.report_loss": self.tx_report_loss,
            "tx.activate": self.tx_activate,
            "tx.bank_activate": self.tx_bank_activate,
            "pin.change": self.pin_change,
            "pin.reset": self.pin_reset,
            "pin.unblock": self.pin_unblock,
            "print.receipt": self.print_receipt,
            "journal.query": self.journal_query,
            "journal.verify": self.journal_verify,
        }
        if self.app.config.reader_url.scheme == "sim":
            h["sim.card.insert"] = self.sim_card_insert
            h["sim.card.remove"] = self.sim_card_remove
        return h

    # ---- status ------------------------------------------------------------------------
    async def status(self, args: Mapping[str, Any]) -> dict[str, Any]:
        app = self.app
        stats = await asyncio.to_thread(app.journal.stats)
        return {
            "terminal_id": app.terminal_id,
            "version": _version(),
            "state": "stopping" if app.stopping else "running",
            "health": app.health.overall.value,
            "uptime_s": round(time.monotonic() - app.started, 3),
            "components": app.health.snapshot(),
            "card_present": app.slot.present,
            "card_io_busy": app.card_lock.busy,
            "uplink": {"enabled": app.config.uplink.enabled, "online": app.uplink_port.online},
            "journal": {
                "transactions": stats.transactions,
                "in_doubt": stats.in_doubt,
                "unacked": stats.unacked,
                "last_seq": stats.last_seq,
                "blacklist_version": stats.blacklist_version,
                "blacklist_size": stats.blacklist_size,
            },
            "counters": dict(app.counters),
        }

    # ---- card --------------------------------------------------------------------------
    async def card_wait(self, args: Mapping[str, Any]) -> dict[str, Any]:
        timeout = _number(args, "timeout", 30.0, 0.0, MAX_WAIT_S)
        try:
            async with asyncio.timeout(timeout):
                atr = await self.app.slot.wait_present()
        except TimeoutError:
            raise TimeoutApiError(f"no card after {timeout:g}s") from None
        return {"present": True, "atr": atr.hex().upper()}

    async def card_read(self, args: Mapping[str, Any]) -> dict[str, Any]:
        from agent.tx.read import read_card

        show = _bool(args, "show_pii")
        if show and not getattr(self.app.config.api, "allow_pii", False):
            raise OperationError(
                "pii_not_allowed", "this agent does not release personal data (api.allow_pii)"
            )
        app = self.app
        async with app.card_session("card.read") as ch:
            report = await read_card(ch, app.profile, app.sam)
        return report.to_json(show_pii=show)

    # ---- transactions ------------------------------------------------------------------
    async def _tx(
        self,
        op: str,
        flow: Callable[[CardChannel | None], Awaitable[TxRecord]],
        *,
        key: str,
        needs_card: bool = True,
    ) -> dict[str, Any]:
        from agent.tx.engine import record_to_json

        try:
            rec, printed, replay = await self.app.run_tx(
                op, flow, needs_card=needs_card, idempotency_key=key
            )
        except AgentError as err:
            raise translate(err) from None
        out = record_to_json(rec)
        out["receipt"] = printed
        out["replayed"] = replay
        return out

    @staticmethod
    def _key(args: Mapping[str, Any]) -> str:
        key = _str(args, "idempotency_key")
        assert key is not None
        return key

    async def tx_lock(self, args: Mapping[str, Any]) -> dict[str, Any]:
        key = self._key(args)
        reason = _str(args, "reason", required=False) or "holder"
        if reason not in ("holder", "central"):
            raise BadArgsError("argument 'reason' must be holder or central")
        cid = _card_id(args)
        e = self.app.engine

        async def flow(ch: CardChannel | None) -> TxRecord:
            assert ch is not None
            return await e.lock(ch, reason, idempotency_key=key, card_id_code=cid)

        return await self._tx("tx.lock", flow, key=key)

    async def tx_unlock(self, args: Mapping[str, Any]) -> dict[str, Any]:
        key = self._key(args)
        cid = _card_id(args)
        e = self.app.engine

        async def flow(ch: CardChannel | None) -> TxRecord:
            assert ch is not None
            return await e.unlock(ch, idempotency_key=key, card_id_code=cid)

        return await self._tx("tx.unlock", flow, key=key)

    async def tx_report_loss(self, args: Mapping[str, Any]) -> dict[str, Any]:
        key = self._key(args)
        ssn = _str(args, "ssn", max_len=18)
        number = _str(args, "card_number", max_len=20)
        name = _str(args, "name", required=False, max_len=32)
        cid = _card_id(args)
        assert ssn is not None
        assert number is not None
        e = self.app.engine

        async def flow(_: CardChannel | None) -> TxRecord:
            return await e.report_loss(ssn, number, name, card_id_code=cid, idempotency_key=key)

        return await self._tx("tx.report_loss", flow, key=key, needs_card=False)

    async def tx_activate(self, args: Mapping[str, Any]) -> dict[str, Any]:
        key = self._key(args)
        old = _pin(args, "old_pin")
        new = _pin(args, "new_pin")
        e = self.app.engine

        async def flow(ch: CardChannel | None) -> TxRecord:
            assert ch is not None
            return await e.activate(ch, old, new, idempotency_key=key)

        return await self._tx("tx.activate", flow, key=key)

    async def tx_bank_activate(self, args: Mapping[str, Any]) -> dict[str, Any]:
        key = self._key(args)
        e = self.app.engine

        async def flow(ch: CardChannel | None) -> TxRecord:
            assert ch is not None
            return await e.bank_activate(ch, idempotency_key=key)

        return await self._tx("tx.bank_activate", flow, key=key)

    async def pin_change(self, args: Mapping[str, Any]) -> dict[str, Any]:
        key = self._key(args)
        old = _pin(args, "old_pin")
        new = _pin(args, "new_pin")
        e = self.app.engine

        async def flow(ch: CardChannel | None) -> TxRecord:
            assert ch is not None
            return await e.pin_change(ch, old, new, idempotency_key=key)

        return await self._tx("pin.change", flow, key=key)

    async def pin_reset(self, args: Mapping[str, Any]) -> dict[str, Any]:
        key = self._key(args)
        new = _pin(args, "new_pin")
        e = self.app.engine

        async def flow(ch: CardChannel | None) -> TxRecord:
            assert ch is not None
            return await e.pin_reset(ch, new, idempotency_key=key)

        return await self._tx("pin.reset", flow, key=key)

    async def pin_unblock(self, args: Mapping[str, Any]) -> dict[str, Any]:
        key = self._key(args)
        new = _pin(args, "new_pin")
        e = self.app.engine

        async def flow(ch: CardChannel | None) -> TxRecord:
            assert ch is not None
            return await e.pin_unblock(ch, new, idempotency_key=key)

        return await self._tx("pin.unblock", flow, key=key)

    # ---- receipts and journal ----------------------------------------------------------
    async def print_receipt(self, args: Mapping[str, Any]) -> dict[str, Any]:
        from agent.tx.records import TxRecord

        tx_id = _str(args, "tx_id", max_len=64)
        assert tx_id is not None
        app = self.app
        if app.printer is None:
            raise OperationError("printer_disabled", "this terminal has no printer configured")
        row = await asyncio.to_thread(app.journal.get, tx_id)
        if row is None:
            raise OperationError("not_found", f"no transaction {tx_id}")
        return await app.print_receipt(TxRecord.from_row(row), reprint=True)

    async def journal_query(self, args: Mapping[str, Any]) -> dict[str, Any]:
        from agent.tx.machine import State

        tx_id = _str(args, "tx_id", required=False, max_len=64)
        state = _str(args, "state", required=False, max_len=16)
        limit = int(_number(args, "limit", 20, 1, MAX_QUERY))
        if state is not None and state not in {s.value for s in State}:
            raise BadArgsError(f"argument 'state' must be one of {sorted(s.value for s in State)}")
        j = self.app.journal
        if tx_id is not None:
            row = await asyncio.to_thread(j.get, tx_id)
            rows = [] if row is None else [row]
        else:
            rows = await asyncio.to_thread(lambda: j.records(state, limit=limit))
        return {"records": [_record_json(_rec(r)) for r in rows[:limit]]}

    async def journal_verify(self, args: Mapping[str, Any]) -> dict[str, Any]:
        from agent.errors import SecurityModuleError
        from agent.psam.soft import verify_seal

        app = self.app
        terminal = bytes.fromhex(app.terminal_id)

        def check_mac(digest: bytes, mac: bytes) -> bool:
            return verify_seal(app.profile, terminal, digest, mac)

        mac_checked = True
        try:
            report = await asyncio.to_thread(app.journal.verify_chain, check_mac)
        except SecurityModuleError:
            # a production profile holds no seal key: only central can check the MACs
            mac_checked = False
            report = await asyncio.to_thread(app.journal.verify_chain)
        return {
            "ok": report.ok,
            "checked": report.checked,
            "first_seq": report.first_seq,
            "last_seq": report.last_seq,
            "bad_seq": report.bad_seq,
            "reason": report.reason,
            "mac_checked": mac_checked,
        }

    # ---- simulator hands (sim:// reader only) ------------------------------------------
    async def sim_card_insert(self, args: Mapping[str, Any]) -> dict[str, Any]:
        from agent.app import SimCardSlot

        slot = self.app.slot
        assert isinstance(slot, SimCardSlot)
        card = None
        if _bool(args, "new"):
            from agent.sim.factory import CardFactory

            state = _str(args, "state", required=False, max_len=16) or "active"
            seed = int(_number(args, "seed", 1, 0, 2**31))
            try:
                card = CardFactory(self.app.profile, seed=seed).issue(state=state)
            except (ValueError, AgentError) as exc:
                raise BadArgsError(f"cannot issue that card: {exc}") from None
        await slot.insert(card)
        return {"present": True, "card_id_code": slot.rig.card.card_id_code.hex().upper()}

    async def sim_card_remove(self, args: Mapping[str, Any]) -> dict[str, Any]:
        from agent.app import SimCardSlot

        slot = self.app.slot
        assert isinstance(slot, SimCardSlot)
        await slot.remove()
        return {"present": False}


def _rec(row: Any) -> TxRecord:
    from agent.tx.records import TxRecord

    return TxRecord.from_row(row)


def _version() -> str:
    from agent.app import VERSION

    return VERSION


def build_handlers(app: App) -> dict[str, Handler]:
    """Every operation of docs/API.md, bound to ``app``."""
    return Operations(app).handlers()


__all__ = ["TX_OPS", "BadArgsError", "OperationError", "Operations", "build_handlers", "translate"]
