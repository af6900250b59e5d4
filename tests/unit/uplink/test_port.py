"""SessionUplinkPort: the online authorization request over a real journal (no broker).

The session is a stand-in with the two members the port uses (``online``, ``publish``): what
it publishes is decoded with the strict codec and the CDDL, and central's answers are applied
the way ``CommandHandler`` applies them (journal first, then the hook). Broker, reference
central and handler together: tests/integration/test_online_authorization.py.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from agent.errors import AuthorizationTimeoutError, UplinkUnavailableError
from agent.journal import Journal
from agent.tx.machine import TABLE
from agent.uplink.port import SessionUplinkPort, new_request_id
from agent.wire.codec import (
    AuthorizationRefused,
    AuthorizationRequest,
    Authorize,
    EventMessage,
)

T = "440300907950"
CARD = "44030000D15600000500000000000001"
OTHER = "44030000D15600000500000000000002"


class StubSession:
    """``online`` and ``publish`` of ``UplinkSession``; ``on_publish`` plays central."""

    def __init__(self, *, online: bool = True) -> None:
        self.online = online
        self.published: list[tuple[str, bytes]] = []
        self.on_publish: Callable[[AuthorizationRequest], Awaitable[None]] | None = None
        self.fail = False
        self.wakes = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        self.wakes += 1

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        if self.fail or not self.online:
            raise UplinkUnavailableError("uplink is offline")
        self.published.append((topic, payload))
        if self.on_publish is not None:
            req = EventMessage.from_cbor(payload, validate=True).authorization_request()
            task = asyncio.create_task(self.on_publish(req))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "journal.db", transitions=TABLE)  # type: ignore[arg-type]
    yield j
    j.close()


def _port(journal: Journal, session: StubSession | None, **kw: float) -> SessionUplinkPort:
    port = SessionUplinkPort(journal, T, timeout_s=kw.pop("timeout_s", 2.0), **kw)  # type: ignore[arg-type]
    port.session = session  # type: ignore[assignment]
    return port


def _grant(journal: Journal, kind: str = "unlock", card: str = CARD) -> Authorize:
    expires = int(time.time()) + 300
    journal.add_authorization(uuid.uuid4().hex, card, kind, expires * 1000, b"signed")
    return Authorize(kind, bytes.fromhex(card), expires)


@pytest.mark.parametrize("session", [None, StubSession(online=False)], ids=["none", "offline"])
async def test_offline_is_unavailable_at_once(
    journal: Journal, session: StubSession | None
) -> None:
    port = _port(journal, session, timeout_s=30.0)
    started = time.monotonic()
    with pytest.raises(UplinkUnavailableError) as exc:
        await port.request_authorization("unlock", CARD)
    assert not isinstance(exc.value, AuthorizationTimeoutError)
    assert time.monotonic() - started < 1.0
    assert session is None or session.published == []
    assert port.stats["requested"] == 0


async def test_unverifiable_answers_are_not_asked_for(journal: Journal) -> None:
    session = StubSession()
    port = _port(journal, session, timeout_s=30.0)
    port.commands_verified = False
    with pytest.raises(UplinkUnavailableError, match="central keys"):
        await port.request_authorization("unlock", CARD)
    assert session.published == []


async def test_the_request_on_the_wire(journal: Journal) -> None:
    session = StubSession()
    port = _port(journal, session, timeout_s=0.2, poll_s=0.05)
    with pytest.raises(AuthorizationTimeoutError):
        await port.request_authorization("pin_reset", CARD.lower())
    [(topic, payload)] = session.published
    assert topic == f"ssc/v1/{T}/event"
    ev = EventMessage.from_cbor(payload, validate=True)
    req = ev.authorization_request()
    assert (ev.type, ev.terminal, ev.id) == ("authorization_request", T, req.request_id)
    assert (req.kind, req.card_id_code) == ("pin_reset", bytes.fromhex(CARD))
    assert abs(ev.time - time.time()) < 5
    assert uuid.UUID(bytes=req.request_id).version == 7


async def test_grant_through_the_hook(journal: Journal) -> None:
    session = StubSession()
    port = _port(journal, session, poll_s=30.0)  # only the hook can end the wait in time

    async def central(req: AuthorizationRequest) -> None:
        port.answered(_grant(journal, req.kind, req.card_id_code.hex().upper()))

    session.on_publish = central
    assert await port.request_authorization("unlock", CARD) is True
    assert port.stats == {"requested": 1, "granted": 1, "refused": 0, "timeouts": 0}
    assert journal.find_valid_authorization(CARD, "unlock") is not None


async def test_grant_found_by_polling_without_a_hook(journal: Journal) -> None:
    session = StubSession()
    port = _port(journal, session, poll_s=0.05)

    async def central(req: AuthorizationRequest) -> None:
        await asyncio.sleep(0.1)
        _grant(journal, req.kind)

    session.on_publish = central
    assert await port.request_authorization("unlock", CARD) is True


async def test_a_grant_for_another_card_or_kind_does_not_count(journal: Journal) -> None:
    session = StubSession()
    port = _port(journal, session, timeout_s=0.3, poll_s=0.05)

    async def central(req: AuthorizationRequest) -> None:
        port.answered(_grant(journal, "unlock", OTHER))
        port.answered(_grant(journal, "pin_unblock", CARD))

    session.on_publish = central
    with pytest.raises(AuthorizationTimeoutError):
        await port.request_authorization("unlock", CARD)


async def test_refusal_naming_the_request_ends_the_wait(journal: Journal) -> None:
    session = StubSession()
    port = _port(journal, session, timeout_s=5.0, poll_s=30.0)

    async def central(req: AuthorizationRequest) -> None:
        port.answered(
            AuthorizationRefused("unlock", "card_replaced", req.request_id, req.card_id_code)
        )

    session.on_publish = central
    started = time.monotonic()
    assert await port.request_authorization("unlock", CARD) is False
    assert time.monotonic() - started < 2.0
    assert port.stats["refused"] == 1


@pytest.mark.parametrize("mismatch", ["request_id", "kind", "card"])
async def test_a_refusal_of_another_request_is_ignored(journal: Journal, mismatch: str) -> None:
    session = StubSession()
    port = _port(journal, session, timeout_s=0.3, poll_s=0.05)

    async def central(req: AuthorizationRequest) -> None:
        rid = new_request_id() if mismatch == "request_id" else req.request_id
        kind = "pin_reset" if mismatch == "kind" else req.kind
        card = bytes.fromhex(OTHER) if mismatch == "card" else req.card_id_code
        port.answered(AuthorizationRefused(kind, "denied", rid, card))

    session.on_publish = central
    with pytest.raises(AuthorizationTimeoutError):
        await port.request_authorization("unlock", CARD)


async def test_no_answer_times_out_with_its_own_error(journal: Journal) -> None:
    session = StubSession()
    port = _port(journal, session, timeout_s=0.2, poll_s=0.05)
    with pytest.raises(AuthorizationTimeoutError) as exc:
        await port.request_authorization("pin_unblock", CARD)
    assert exc.value.code == "authorization_timeout"
    assert port.stats == {"requested": 1, "granted": 0, "refused": 0, "timeouts": 1}
    assert port._pending == {}


async def test_link_lost_while_waiting_is_unavailable(journal: Journal) -> None:
    session = StubSession()
    port = _port(journal, session, timeout_s=5.0, poll_s=30.0)

    async def link_drops(_: AuthorizationRequest) -> None:
        await asyncio.sleep(0.05)
        session.online = False
        port.on_session_event("uplink_offline", {"terminal": T})

    session.on_publish = link_drops
    with pytest.raises(UplinkUnavailableError) as exc:
        await port.request_authorization("unlock", CARD)
    assert not isinstance(exc.value, AuthorizationTimeoutError)
    assert port.last_online_ms is not None


async def test_publish_failure_is_unavailable(journal: Journal) -> None:
    session = StubSession()
    session.fail = True
    port = _port(journal, session)
    with pytest.raises(UplinkUnavailableError):
        await port.request_authorization("unlock", CARD)
    assert port._pending == {}
    assert port.stats["requested"] == 0


async def test_link_state(journal: Journal) -> None:
    port = SessionUplinkPort(journal, T, last_online_ms=123, clock_ms=lambda: 1000)
    assert (port.online, port.last_online_ms) == (False, 123)
    session = StubSession()
    port.session = session  # type: ignore[assignment]
    assert (port.online, port.last_online_ms) == (True, 1000)
    session.online = False
    port.went_offline()
    assert (port.online, port.last_online_ms) == (False, 1000)
    port.wake()
    assert session.wakes == 1
    with pytest.raises(ValueError, match="positive"):
        SessionUplinkPort(journal, T, timeout_s=0)


def test_request_ids_are_uuid7_in_time_order() -> None:
    a = new_request_id(1_700_000_000_000)
    b = new_request_id(1_700_000_000_001)
    assert uuid.UUID(bytes=a).version == 7
    assert uuid.UUID(bytes=a).variant == uuid.RFC_4122
    assert a[:6] == (1_700_000_000_000).to_bytes(6, "big")
    assert a < b
    assert new_request_id() != new_request_id()
