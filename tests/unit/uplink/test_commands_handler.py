"""The agent's command handler over a real journal and the real verifier (no broker).

Commands are signed by the reference central's own signer (``ReferenceCentral.sign``), so the
bytes are exactly what central publishes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.journal import Journal
from agent.profile import load_profile
from agent.sim.central import ReferenceCentral, key_id, seed_backlog
from agent.tx.machine import TABLE
from agent.uplink.commands import CentralSettings, CommandHandler, JournalReplayStore
from agent.wire import cose
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

T = "440300907950"
OTHER = "440300907951"
CARD_A = "44030000D15600000500000000000001"
CARD_B = "44030000D15600000500000000000002"


class Harness:
    def __init__(self, tmp: Path) -> None:
        self.journal = Journal(tmp / "journal.db", transitions=TABLE)  # type: ignore[arg-type]
        self.central = ReferenceCentral(
            "mqtt://127.0.0.1:1", tmp / "central.db", load_profile("default")
        )
        self.now = time.time()
        verifier = CommandVerifier(
            {self.central.kid: self.central.key.public_key()},
            T,
            lambda: self.now,
            JournalReplayStore(self.journal),
        )
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.published: list[bytes] = []
        self.resends: list[int] = []
        self.answers: list[Any] = []

        async def publish(topic: str, payload: bytes) -> None:
            assert topic == f"ssc/v1/{T}/event"
            self.published.append(payload)

        self.handler = CommandHandler(
            verifier,
            self.journal,
            T,
            lambda k, d: self.events.append((k, d)),
            on_resend=self.resends.append,
            on_authorization=self.answers.append,
        )
        self.handler.reporter.publisher = publish

    async def send(
        self, body: Any, terminal: str = T, ttl: int = 600
    ) -> tuple[str, dict[str, Any]]:
        await self.handler(f"ssc/v1/{T}/cmd", self.central.sign(terminal, body, ttl))
        return self.events[-1]

    def close(self) -> None:
        self.journal.close()
        self.central.close()


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    harness.close()


def _card(code: str) -> bytes:
    return bytes.fromhex(code)


async def test_blacklist_snapshot_then_delta(h: Harness) -> None:
    kind, data = await h.send(BlacklistSnapshot(3, (_card(CARD_A),)))
    assert (kind, data["version"], data["size"]) == ("blacklist_updated", 3, 1)
    assert h.journal.is_blacklisted(CARD_A)
    kind, data = await h.send(BlacklistDelta(3, 4, (_card(CARD_B),), (_card(CARD_A),)))
    assert kind == "blacklist_updated"
    assert h.journal.blacklist_version() == 4
    assert not h.journal.is_blacklisted(CARD_A)
    assert h.journal.is_blacklisted(CARD_B)


async def test_delta_on_wrong_base_asks_for_a_snapshot(h: Harness) -> None:
    kind, data = await h.send(BlacklistDelta(7, 8, (_card(CARD_A),), ()))
    assert kind == "command_rejected"
    assert (data["reason"], data["need"], data["local_version"]) == (
        "blacklist_version",
        "snapshot",
        0,
    )
    assert not h.journal.is_blacklisted(CARD_A)


async def test_authorization_is_stored(h: Harness) -> None:
    expires = int(h.now) + 3600
    kind, data = await h.send(Authorize("unlock", _card(CARD_A), expires))
    assert (kind, data["kind"], data["new"]) == ("command_applied", "unlock", True)
    auth = h.journal.find_valid_authorization(CARD_A, "unlock")
    assert auth is not None
    assert auth.expires_at == expires * 1000
    assert h.journal.find_valid_authorization(CARD_A, "pin_reset") is None


async def test_card_replaced_is_blacklisted_as_replaced_and_survives_snapshots(
    h: Harness,
) -> None:
    await h.send(BlacklistSnapshot(5, ()))
    kind, _ = await h.send(CardReplaced(_card(CARD_A)))
    assert kind == "command_applied"
    assert h.journal.blacklist_reason(CARD_A) == "replaced"
    assert h.journal.blacklist_version() == 5  # still central's version
    await h.send(BlacklistSnapshot(6, (_card(CARD_B),)))
    assert h.journal.blacklist_reason(CARD_A) == "replaced"
    await h.send(BlacklistDelta(6, 7, (), (_card(CARD_B),)))
    assert h.journal.blacklist_reason(CARD_A) == "replaced"
    assert not h.journal.is_blacklisted(CARD_B)


async def test_config_ping_report_resend(h: Harness) -> None:
    kind, data = await h.send(ConfigSet("uplink.backlog_rate", 50))
    # no on_setting hook (a tool, not the running agent): kept, applies at the next start
    assert (kind, data["key"], data["value"], data["applies"]) == (
        "config_changed",
        "uplink.backlog_rate",
        50,
        "restart",
    )
    assert CentralSettings(h.journal).load() == {"uplink.backlog_rate": 50}
    kind, _ = await h.send(Ping())
    assert kind == "pong"
    seed_backlog(h.journal, T, 5, load_profile("default"))
    h.journal.mark_sent([1, 2, 3])
    kind, data = await h.send(Report())
    assert (kind, data["unacked"], data["last_seq"]) == ("command_applied", 5, 5)
    kind, data = await h.send(Resend(2))
    assert (kind, data["unacked"]) == ("command_applied", 4)
    assert h.resends == [2]
    assert {r.seq: r.state for r in h.journal.unacked(0, 10)} == {
        1: "sent",
        2: "sealed",
        3: "sealed",
        4: "sealed",
        5: "sealed",
    }


def _raw_command(h: Harness, counter: int, issued: float, ttl: int = 600) -> bytes:
    return Command(b"\x01" * 16, T, counter, int(issued), int(issued) + ttl, Ping()).to_cbor()


async def _reason(h: Harness, payload: bytes) -> str:
    before = len(h.events)
    await h.handler(f"ssc/v1/{T}/cmd", payload)
    assert len(h.events) == before + 1
    kind, data = h.events[-1]
    assert kind == "command_rejected"
    return str(data["reason"])


async def test_rejections_are_events(h: Harness) -> None:
    good = h.central.sign(T, Ping())
    await h.handler(f"ssc/v1/{T}/cmd", good)
    assert h.events[-1][0] == "pong"
    # replayed: the same signed bytes again
    assert await _reason(h, good) == "replayed"
    # unsigned: a bare command
    assert await _reason(h, _raw_command(h, 99, h.now)) == "unsigned"
    # forged: signed by another key under central's kid
    forged = cose.sign(_raw_command(h, 100, h.now), Ed25519PrivateKey.generate(), h.central.kid)
    assert await _reason(h, forged) == "bad_signature"
    other = Ed25519PrivateKey.generate()
    assert await _reason(h, cose.sign(_raw_command(h, 101, h.now), other, key_id(other))) == (
        "bad_signature"
    )
    # expired: issued an hour ago, valid 10 minutes
    h.now += 3600
    assert await _reason(h, h.central.sign(T, Ping(), 600)) == "expired"
    h.now -= 3600
    # wrong terminal
    assert await _reason(h, h.central.sign(OTHER, Ping())) == "wrong_terminal"
    # malformed: garbage and a valid signature over garbage
    assert await _reason(h, b"\xff\x00garbage") in ("malformed", "unsigned")
    junk = cose.sign(cbor2.dumps({"not": "a command"}), h.central.key, h.central.kid)
    assert await _reason(h, junk) == "malformed"
    # every rejection is in the journal and was published as a wire event
    stored = [e for e in h.journal.events(0, 100) if e.kind == "command_rejected"]
    assert len(stored) == 8
    published = [EventMessage.from_cbor(p, validate=True) for p in h.published]
    assert [e.type for e in published].count("command_rejected") == 8
    assert all(e.reported for e in h.journal.events(0, 100))


REQUEST = bytes(range(16))


@pytest.mark.parametrize(
    ("reason", "blacklisted"),
    [("card_replaced", "replaced"), ("formal_loss", "formal_loss"), ("denied", None)],
)
async def test_authorization_refused_blacklists_by_reason_and_is_announced(
    h: Harness, reason: str, blacklisted: str | None
) -> None:
    await h.send(BlacklistSnapshot(5, ()))
    body = AuthorizationRefused("unlock", reason, REQUEST, _card(CARD_A))
    kind, data = await h.send(body)
    assert kind == "command_applied"
    assert (data["type"], data["kind"], data["reason"], data["request_id"]) == (
        "authorization_refused",
        "unlock",
        reason,
        REQUEST,
    )
    assert data["blacklisted"] is (blacklisted is not None)
    assert h.journal.blacklist_reason(CARD_A) == blacklisted
    assert h.journal.blacklist_version() == 5  # still central's version
    assert h.answers == [body]
    assert h.journal.find_valid_authorization(CARD_A, "unlock") is None


async def test_formal_loss_refusal_never_downgrades_a_replaced_card(h: Harness) -> None:
    await h.send(CardReplaced(_card(CARD_A)))
    await h.send(AuthorizationRefused("pin_reset", "formal_loss", REQUEST, _card(CARD_A)))
    assert h.journal.blacklist_reason(CARD_A) == "replaced"
    await h.send(BlacklistSnapshot(9, ()))  # central's list without it: the refusal was formal
    assert h.journal.blacklist_reason(CARD_A) == "replaced"


async def test_formal_loss_refusal_yields_to_centrals_next_snapshot(h: Harness) -> None:
    await h.send(AuthorizationRefused("unlock", "formal_loss", REQUEST, _card(CARD_B)))
    assert h.journal.blacklist_reason(CARD_B) == "formal_loss"
    await h.send(BlacklistSnapshot(2, ()))
    assert not h.journal.is_blacklisted(CARD_B)


async def test_only_authorization_answers_reach_the_hook(h: Harness) -> None:
    await h.send(Ping())
    await h.send(CardReplaced(_card(CARD_A)))
    assert h.answers == []
    grant = Authorize("pin_unblock", _card(CARD_B), int(h.now) + 60)
    await h.send(grant)
    assert h.answers == [grant]


async def test_config_set_is_kept_applied_through_the_hook_and_reported(h: Harness) -> None:
    applied: list[tuple[str, Any]] = []

    def on_setting(key: str, value: Any) -> str:
        applied.append((key, value))
        return "now"

    h.handler.on_setting = on_setting
    kind, data = await h.send(ConfigSet("log.trace_apdus", True))
    assert (kind, data["applies"]) == ("config_changed", "now")
    _, data = await h.send(ConfigSet("log.level", "DEBUG"))
    _, data = await h.send(ConfigSet("log.trace_apdus", False))  # the last word wins
    assert applied == [
        ("log.trace_apdus", True),
        ("log.level", "DEBUG"),
        ("log.trace_apdus", False),
    ]
    held = CentralSettings(h.journal).load()
    assert held == {"log.level": "DEBUG", "log.trace_apdus": False}
    assert held["log.trace_apdus"] is False  # a bool stays a bool (not 0)
    # what central is told: the event says when the setting took effect
    sent = [EventMessage.from_cbor(p) for p in h.published]
    assert [(e.type, e.data.get("applies")) for e in sent] == [("config_changed", "now")] * 3


async def test_a_refused_or_unsigned_config_set_changes_nothing(h: Harness) -> None:
    kind, _ = await h.send(ConfigSet("uplink.backlog_rate", 50), terminal=OTHER)
    assert kind == "command_rejected"
    await h.handler(f"ssc/v1/{T}/cmd", b"not a command")
    assert CentralSettings(h.journal).load() == {}


def test_central_settings_survive_reopening_and_clear(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.db", transitions=TABLE)  # type: ignore[arg-type]
    CentralSettings(j).store("policy.report_loss_offline", False)
    CentralSettings(j).store("uplink.inflight_window", 64)
    CentralSettings(j).store("log.level", "DEBUG")
    j.meta_set("central_setting:journal.retention_days", b"\xff")  # not CBOR: left out
    j.close()
    j = Journal(tmp_path / "journal.db", transitions=TABLE)  # type: ignore[arg-type]
    store = CentralSettings(j)
    assert store.load() == {
        "log.level": "DEBUG",
        "policy.report_loss_offline": False,
        "uplink.inflight_window": 64,
    }
    assert store.clear(["log.level", "no.such"]) == ["log.level"]
    assert "log.level" not in store.load()
    assert store.clear() == [
        "journal.retention_days",
        "policy.report_loss_offline",
        "uplink.inflight_window",
    ]
    assert store.load() == {}
    assert j.meta_get("cmd_last_counter") is None  # other meta untouched (none was set here)
    j.close()
