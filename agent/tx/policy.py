"""Offline policy and card-status rules: may this operation run now? (DESIGN §4)

Pure: ``decide(kind, online, context, config)`` looks only at its arguments; the caller gathers
the context from the journal (blacklist reason, a valid authorization, today's offline counter)
and the uplink (online, offline since). Per operation (:data:`DEFAULT_OPERATIONS`):

=============  ==========================================================================
lock           always (protective), also offline and for lost cards; same for auto_lock
report_loss    online: accepted; offline: accepted and queued, receipt says "pending"
activate       online; offline within ``max_per_day`` and ``max_offline_age_s``
unlock         online; offline only with a signed authorization from central
pin_reset      online; offline only with a signed authorization
pin_unblock    online; offline only with a signed authorization
pin_change     online and offline (the card itself verifies the old PIN)
bank_activate  online only (the bank host must take part)
=============  ==========================================================================

Card-status rules from the seed regulations (Shaoguan measures 第十四–十六条, 第二十一条):
after a loss report "all functions of the card cannot be used" (挂失后，该社保卡所有功能不能使用),
so a blacklisted card is refused everything but lock and report-loss; **unlock** is the
exception for a *temporary* loss report (临时挂失, done at self-service terminals), which may be
lifted; a *formal* loss report (正式挂失) is lifted only at the service counter with the holder's
ID (解除挂失需持身份证件到窗口), and once a replacement card has been applied for after a formal
report, unlock is never allowed (已经办理正式挂失且重新申请补换卡业务时，不允许办理解挂业务).
Blacklist reasons: :data:`TEMPORARY_LOSS`, :data:`FORMAL_LOSS`, :data:`REPLACED`; an unknown
reason is treated as a formal loss (the strict reading).

The authorization signature is verified by the wire layer before the journal stores it; here an
authorization must be bound to this card, of this kind, unexpired and unused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Protocol

from agent.tx.records import Kind

TEMPORARY_LOSS = "temporary_loss"
FORMAL_LOSS = "formal_loss"
REPLACED = "replaced"
#: Name of the journal counter of offline activations (window = :func:`day_window`).
ACTIVATE_OFFLINE_COUNTER = "activate_offline"
#: Business days are counted in China Standard Time.
CST = timedelta(hours=8)


class OfflineMode(StrEnum):
    ALWAYS = "always"  # allowed offline as online
    QUEUE = "queue"  # allowed offline, result is pending until central confirms
    LIMITED = "limited"  # allowed offline within count and age limits
    AUTHORIZATION = "authorization"  # offline only with a pushed signed authorization
    NEVER = "never"  # online only


@dataclass(frozen=True, slots=True)
class OperationPolicy:
    offline: OfflineMode
    #: LIMITED: at most this many offline operations per business day.
    max_per_day: int | None = None
    #: LIMITED: only while the uplink has been away for less than this many seconds.
    max_offline_age_s: float | None = None


DEFAULT_OPERATIONS: Mapping[Kind, OperationPolicy] = MappingProxyType(
    {
        Kind.LOCK: OperationPolicy(OfflineMode.ALWAYS),
        Kind.AUTO_LOCK: OperationPolicy(OfflineMode.ALWAYS),
        Kind.REPORT_LOSS: OperationPolicy(OfflineMode.QUEUE),
        Kind.ACTIVATE: OperationPolicy(OfflineMode.LIMITED, 50, 72 * 3600.0),
        Kind.UNLOCK: OperationPolicy(OfflineMode.AUTHORIZATION),
        Kind.PIN_RESET: OperationPolicy(OfflineMode.AUTHORIZATION),
        Kind.PIN_UNBLOCK: OperationPolicy(OfflineMode.AUTHORIZATION),
        Kind.PIN_CHANGE: OperationPolicy(OfflineMode.ALWAYS),
        Kind.BANK_ACTIVATE: OperationPolicy(OfflineMode.NEVER),
    }
)


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """The offline policy per operation (every ``Kind`` must have an entry)."""

    operations: Mapping[Kind, OperationPolicy] = field(default_factory=lambda: DEFAULT_OPERATIONS)

    def __post_init__(self) -> None:
        missing = set(Kind) - set(self.operations)
        if missing:
            raise ValueError(f"policy has no entry for {sorted(missing)}")

    @classmethod
    def from_settings(
        cls,
        *,
        activate_offline_max_per_day: int,
        activate_offline_max_age_h: float,
        report_loss_offline: bool,
    ) -> PolicyConfig:
        """From the ``[policy]`` section of the agent config (``agent.config.PolicyConfig``)."""
        ops = dict(DEFAULT_OPERATIONS)
        ops[Kind.ACTIVATE] = OperationPolicy(
            OfflineMode.LIMITED, activate_offline_max_per_day, activate_offline_max_age_h * 3600.0
        )
        ops[Kind.REPORT_LOSS] = OperationPolicy(
            OfflineMode.QUEUE if report_loss_offline else OfflineMode.NEVER
        )
        return cls(MappingProxyType(ops))


class AuthorizationView(Protocol):
    """The parts of a stored authorization the policy checks (``journal.Authorization``)."""

    @property
    def auth_id(self) -> str: ...
    @property
    def card_id_code(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def expires_at(self) -> int: ...
    @property
    def used_at(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class Context:
    """What the caller knows at decision time. Times are Unix milliseconds."""

    now_ms: int
    card_id_code: str | None = None
    #: ``journal.blacklist_reason(card)``; ``None`` = not blacklisted.
    blacklist_reason: str | None = None
    #: An authorization found for this card and kind (``journal.find_valid_authorization``).
    authorization: AuthorizationView | None = None
    #: Offline operations of this kind already done in the current business day.
    offline_count_today: int = 0
    #: When the uplink was last online (``None``: never since start of records).
    offline_since_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    code: str
    message_zh: str
    message_en: str
    #: Allowed, but the result is pending central's confirmation (receipt says so).
    pending: bool = False
    #: The authorization that makes an offline operation possible (consume it with the intent).
    auth_id: str | None = None


#: Every code ``decide`` can return, with the texts a kiosk shows.
MESSAGES: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "ok": ("可以办理", "Allowed"),
        "pending": ("已受理，待中心确认", "Accepted; pending confirmation by the card centre"),
        "offline_authorized": ("已凭授权办理", "Allowed offline by an authorization from central"),
        "online_only": (
            "网络中断，此业务暂不能办理，请稍后再试",
            "This service needs the network; please try again later",
        ),
        "offline_unlock_needs_authorization": (
            "网络中断，暂不能解锁，请到服务窗口办理或稍后再试",
            "Offline unlock needs an authorization from central; try later or visit a counter",
        ),
        "offline_pin_reset_needs_authorization": (
            "网络中断，暂不能重置密码，请稍后再试",
            "Offline PIN reset needs an authorization from central; please try again later",
        ),
        "offline_pin_unblock_needs_authorization": (
            "网络中断，暂不能解锁密码，请稍后再试",
            "Offline PIN unblock needs an authorization from central; please try again later",
        ),
        "authorization_expired": ("授权已过期", "The authorization has expired"),
        "authorization_used": ("授权已使用", "The authorization has already been used"),
        "authorization_mismatch": (
            "授权与本卡或本业务不符",
            "The authorization is for another card or another service",
        ),
        "offline_limit_reached": (
            "今日离线办理次数已满，请联网后办理",
            "Today's offline limit is reached; please try when the network is back",
        ),
        "offline_too_long": (
            "终端离线时间过长，请联网后办理",
            "The terminal has been offline too long; please try when the network is back",
        ),
        "card_reported_lost": (
            "此卡已挂失，不能办理此业务",
            "This card has been reported lost; the service is not available",
        ),
        "formal_loss_counter_only": (
            "此卡已正式挂失，请持本人有效身份证件到社保卡服务窗口办理解挂",
            "This card is formally reported lost; lift the report at a service counter with ID",
        ),
        "card_replaced": (
            "此卡已正式挂失并补换新卡，不能解锁",
            "This card was reported lost and replaced; it cannot be unlocked",
        ),
        "card_required": ("请插入社保卡", "Please insert the social security card"),
    }
)

_AUTH_KINDS = {Kind.UNLOCK, Kind.PIN_RESET, Kind.PIN_UNBLOCK}
_PROTECTIVE = {Kind.LOCK, Kind.AUTO_LOCK, Kind.REPORT_LOSS}


def _d(allowed: bool, code: str, *, pending: bool = False, auth_id: str | None = None) -> Decision:
    zh, en = MESSAGES[code]
    return Decision(allowed, code, zh, en, pending, auth_id)


def day_window(now_ms: int) -> str:
    """The business-day counter window (China Standard Time date), e.g. ``2025-01-31``."""
    return (datetime.fromtimestamp(now_ms / 1000, UTC) + CST).strftime("%Y-%m-%d")


def _card_status(kind: Kind, reason: str | None) -> Decision | None:
    """Refusal by the card's blacklist status, or None (seed rules in the module docstring)."""
    if reason is None or kind in _PROTECTIVE:
        return None
    if reason == REPLACED:
        return _d(False, "card_replaced")
    if kind is Kind.UNLOCK:
        return None if reason == TEMPORARY_LOSS else _d(False, "formal_loss_counter_only")
    return _d(False, "card_reported_lost")


def _authorization(kind: Kind, ctx: Context) -> Decision:
    auth = ctx.authorization
    if auth is None:
        return _d(False, f"offline_{kind.value}_needs_authorization")
    if ctx.card_id_code is None or auth.card_id_code != ctx.card_id_code or auth.kind != kind:
        return _d(False, "authorization_mismatch")
    if auth.used_at is not None:
        return _d(False, "authorization_used")
    if auth.expires_at <= ctx.now_ms:
        return _d(False, "authorization_expired")
    return _d(True, "offline_authorized", auth_id=auth.auth_id)


def decide(
    kind: str, online: bool, context: Context, config: PolicyConfig | None = None
) -> Decision:
    """May ``kind`` run now? Card status first (online or not), then the offline mode."""
    k = Kind(kind)
    op = (config or PolicyConfig()).operations[k]
    if context.card_id_code is None and k is not Kind.REPORT_LOSS:
        return _d(False, "card_required")
    refusal = _card_status(k, context.blacklist_reason)
    if refusal is not None:
        return refusal
    if online:
        return _d(True, "ok")
    match op.offline:
        case OfflineMode.ALWAYS:
            return _d(True, "ok")
        case OfflineMode.QUEUE:
            return _d(True, "pending", pending=True)
        case OfflineMode.NEVER:
            return _d(False, "online_only")
        case OfflineMode.AUTHORIZATION:
            if k not in _AUTH_KINDS:
                return _d(False, "online_only")
            return _authorization(k, context)
        case OfflineMode.LIMITED:
            if op.max_offline_age_s is not None and (
                context.offline_since_ms is None
                or context.now_ms - context.offline_since_ms > op.max_offline_age_s * 1000
            ):
                return _d(False, "offline_too_long")
            if op.max_per_day is not None and context.offline_count_today >= op.max_per_day:
                return _d(False, "offline_limit_reached")
            return _d(True, "ok")
