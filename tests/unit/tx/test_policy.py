"""Offline policy (DESIGN §4) and card-status rules from the seed regulations: table tests."""

from __future__ import annotations

import itertools

import pytest

from agent.journal.store import Authorization
from agent.tx.policy import (
    FORMAL_LOSS,
    MESSAGES,
    REPLACED,
    TEMPORARY_LOSS,
    Context,
    OfflineMode,
    OperationPolicy,
    PolicyConfig,
    day_window,
    decide,
)
from agent.tx.records import Kind

NOW = 1_700_000_000_000
CARD = "440300D1560000050102030405060708"
HOUR = 3_600_000

AUTHS = {
    "none": None,
    "valid": "valid",
    "expired": "expired",
    "used": "used",
    "other_card": "other_card",
    "other_kind": "other_kind",
}


def make_auth(situation: str, kind: Kind) -> Authorization | None:
    if situation == "none":
        return None
    auth_kind = str(kind) if kind in (Kind.UNLOCK, Kind.PIN_RESET, Kind.PIN_UNBLOCK) else "unlock"
    return Authorization(
        auth_id="A1",
        card_id_code="OTHER" if situation == "other_card" else CARD,
        kind=("pin_reset" if auth_kind != "pin_reset" else "unlock")
        if situation == "other_kind"
        else auth_kind,
        expires_at=NOW - 1 if situation == "expired" else NOW + HOUR,
        received_at=NOW - HOUR,
        used_at=NOW - 5 if situation == "used" else None,
        used_by="tx0" if situation == "used" else None,
        raw=b"signed",
    )


def ctx(auth: str, kind: Kind, **kw: object) -> Context:
    base: dict[str, object] = {
        "now_ms": NOW,
        "card_id_code": CARD,
        "authorization": make_auth(auth, kind),
        "offline_since_ms": NOW - HOUR,
    }
    base.update(kw)
    return Context(**base)  # type: ignore[arg-type]


AUTH_REFUSAL = {
    "none": None,  # filled per kind below
    "valid": "offline_authorized",
    "expired": "authorization_expired",
    "used": "authorization_used",
    "other_card": "authorization_mismatch",
    "other_kind": "authorization_mismatch",
}


def expected_code(kind: Kind, online: bool, auth: str) -> str:
    """The policy table of DESIGN §4, written out by hand."""
    if online:
        return "ok"
    if kind in (Kind.LOCK, Kind.AUTO_LOCK, Kind.PIN_CHANGE):
        return "ok"
    if kind is Kind.REPORT_LOSS:
        return "pending"
    if kind is Kind.ACTIVATE:
        return "ok"  # within limits (1 h offline, 0 today)
    if kind is Kind.BANK_ACTIVATE:
        return "online_only"
    return AUTH_REFUSAL[auth] or f"offline_{kind}_needs_authorization"


@pytest.mark.parametrize(
    ("kind", "online", "auth"), list(itertools.product(Kind, [True, False], AUTHS))
)
def test_every_kind_online_offline_and_authorization(kind: Kind, online: bool, auth: str) -> None:
    d = decide(kind, online, ctx(auth, kind))
    code = expected_code(kind, online, auth)
    assert d.code == code
    assert d.allowed == (code in ("ok", "pending", "offline_authorized"))
    assert d.pending == (code == "pending")
    assert d.auth_id == ("A1" if code == "offline_authorized" else None)
    assert (d.message_zh, d.message_en) == MESSAGES[code]
    assert d.message_zh
    assert d.message_en


# Card status (blacklist reason) × kind, online (offline adds only further refusals).
STATUS_EXPECTED = {
    TEMPORARY_LOSS: {Kind.UNLOCK: "ok"},
    FORMAL_LOSS: {Kind.UNLOCK: "formal_loss_counter_only"},
    REPLACED: {Kind.UNLOCK: "card_replaced"},
    "something_new": {Kind.UNLOCK: "formal_loss_counter_only"},
}


@pytest.mark.parametrize(
    ("kind", "reason", "online"),
    list(itertools.product(Kind, [*STATUS_EXPECTED, None], [True, False])),
)
def test_card_status_rules(kind: Kind, reason: str | None, online: bool) -> None:
    d = decide(kind, online, ctx("valid", kind, blacklist_reason=reason))
    if reason is None or kind in (Kind.LOCK, Kind.AUTO_LOCK, Kind.REPORT_LOSS):
        assert d.code == expected_code(kind, online, "valid")
        return
    if kind is Kind.UNLOCK:
        want = STATUS_EXPECTED[reason][Kind.UNLOCK]
        if want == "ok":
            want = expected_code(kind, online, "valid")  # temporary loss: normal unlock rules
        assert d.code == want
    else:
        assert d.code == ("card_replaced" if reason == REPLACED else "card_reported_lost")
        assert not d.allowed


def test_lock_of_a_replaced_card_is_always_allowed_offline() -> None:
    d = decide("lock", False, ctx("none", Kind.LOCK, blacklist_reason=REPLACED))
    assert d.allowed


@pytest.mark.parametrize(
    ("count", "offline_for_h", "code"),
    [
        (0, 1, "ok"),
        (49, 71.9, "ok"),
        (50, 1, "offline_limit_reached"),
        (0, 72.1, "offline_too_long"),
        (50, 73, "offline_too_long"),
        (0, None, "offline_too_long"),  # never been online: no offline activation
    ],
)
def test_activation_offline_limits(count: int, offline_for_h: float | None, code: str) -> None:
    since = None if offline_for_h is None else NOW - int(offline_for_h * HOUR)
    c = ctx("none", Kind.ACTIVATE, offline_count_today=count, offline_since_ms=since)
    assert decide("activate", False, c).code == code
    assert decide("activate", True, c).code == "ok"  # limits are for offline only


def test_from_settings_and_report_loss_offline_switch() -> None:
    cfg = PolicyConfig.from_settings(
        activate_offline_max_per_day=2, activate_offline_max_age_h=1.0, report_loss_offline=False
    )
    assert decide("report_loss", False, ctx("none", Kind.REPORT_LOSS), cfg).code == "online_only"
    c = ctx("none", Kind.ACTIVATE, offline_count_today=2, offline_since_ms=NOW - 1000)
    assert decide("activate", False, c, cfg).code == "offline_limit_reached"
    c = ctx("none", Kind.ACTIVATE, offline_count_today=0, offline_since_ms=NOW - 2 * HOUR)
    assert decide("activate", False, c, cfg).code == "offline_too_long"


def test_config_must_cover_every_kind() -> None:
    with pytest.raises(ValueError, match="no entry"):
        PolicyConfig({Kind.LOCK: OperationPolicy(OfflineMode.ALWAYS)})


def test_card_required_except_for_report_loss() -> None:
    c = Context(now_ms=NOW, card_id_code=None, offline_since_ms=NOW)
    assert decide("report_loss", False, c).code == "pending"
    assert decide("lock", True, c).code == "card_required"
    with pytest.raises(ValueError):
        decide("not_a_kind", True, c)


def test_day_window_is_china_standard_time() -> None:
    # 2023-11-14T16:30Z is already 2023-11-15 00:30 in Beijing
    assert day_window(1_699_979_400_000) == "2023-11-15"
    assert day_window(1_699_975_000_000) == "2023-11-14"
