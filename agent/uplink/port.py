"""The transaction engine's ``UplinkPort`` over the MQTT session (DESIGN §4, §5; issue 4).

:class:`SessionUplinkPort` is what ``agent.app`` and the reliability harness give the engine:

* ``online`` / ``last_online_ms``: the session's state, and when it was last up (the offline
  policy's age limit); ``went_offline()`` (or ``on_session_event``) records the moment.
* ``request_authorization(kind, card_id_code)``: asks central online for a signed
  authorization of an unlock, PIN reset or PIN unblock:

  1. offline (no session, or the session is down), or no way to verify central's commands
     (``commands_verified`` False): ``UplinkUnavailableError`` at once, no wait — the engine
     then decides as offline (a pushed authorization or a clear refusal);
  2. publish an ``authorization_request`` event (``agent.wire.codec.AuthorizationRequest``:
     a new UUIDv7 ``request_id``, which is also the event id, the kind and the card) with
     ``UplinkSession.publish`` — directly, never through the journal's event queue: a request
     nobody waits for any more must not reach central later;
  3. wait, at most ``timeout_s``, until the journal holds a valid authorization for this card
     and kind (``CommandHandler`` stores a verified ``authorize`` command with
     ``Journal.add_authorization``) → ``True``; or until central's signed
     ``authorization_refused`` naming this ``request_id`` arrives → ``False`` (the handler has
     already blacklisted a replaced or formally lost card, so the engine's policy gives the
     precise refusal); or until the session drops → ``UplinkUnavailableError``; or until the
     time is up → :class:`agent.errors.AuthorizationTimeoutError` (the engine refuses with
     ``authorization_timeout``).

  The wait is woken by ``answered(body)``, the ``CommandHandler``'s ``on_authorization`` hook,
  and also re-checks the journal every ``poll_s`` (an authorization stored by another path
  counts as well). Only a verified authorization in the journal ever yields ``True``: nothing
  in the answer itself is trusted.
* ``wake()``: a record was sealed, drain now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent.errors import AuthorizationTimeoutError, MessageEncodingError, UplinkUnavailableError
from agent.uplink import topics
from agent.wire.codec import (
    AUTHORIZATION_REQUEST,
    AuthorizationRefused,
    AuthorizationRequest,
    Authorize,
    EventMessage,
)

if TYPE_CHECKING:
    from agent.journal.store import Journal
    from agent.uplink.session import UplinkSession

__all__ = ["DEFAULT_AUTHORIZATION_TIMEOUT_S", "SessionUplinkPort", "new_request_id"]

log = logging.getLogger("agent.uplink.port")

#: How long an online authorization request waits for central (s); ``uplink``'s
#: ``authorization_timeout_s`` in the agent's configuration.
DEFAULT_AUTHORIZATION_TIMEOUT_S = 10.0
#: The journal is re-checked this often while waiting, in case no hook wakes the wait (s).
DEFAULT_POLL_S = 0.5


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_request_id(now_ms: int | None = None) -> bytes:
    """A UUIDv7 (RFC 9562 §5.7) as 16 bytes: 48-bit Unix ms, version 7, variant 10, random."""
    ms = _now_ms() if now_ms is None else now_ms
    raw = bytearray((ms & (2**48 - 1)).to_bytes(6, "big") + os.urandom(10))
    raw[6] = 0x70 | (raw[6] & 0x0F)
    raw[8] = 0x80 | (raw[8] & 0x3F)
    return bytes(raw)


@dataclass(slots=True)
class _Pending:
    """One request being waited for."""

    kind: str
    card_id_code: str
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    refused: str | None = None  # central's reason, once refused


class SessionUplinkPort:
    """``agent.tx.ports.UplinkPort`` over an :class:`~agent.uplink.session.UplinkSession`
    (module docstring). ``session`` may be attached after construction (the app creates the
    engine before the uplink task). ``last_online_ms`` is the value before the first
    connection (the app passes its start time; ``None`` = never)."""

    def __init__(
        self,
        journal: Journal,
        terminal: str,
        session: UplinkSession | None = None,
        *,
        timeout_s: float = DEFAULT_AUTHORIZATION_TIMEOUT_S,
        poll_s: float = DEFAULT_POLL_S,
        last_online_ms: int | None = None,
        clock_ms: Callable[[], int] = _now_ms,
    ) -> None:
        if timeout_s <= 0 or poll_s <= 0:
            raise ValueError("timeout_s and poll_s must be positive")
        self.journal = journal
        self.terminal = terminal
        self.session = session
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self._clock_ms = clock_ms
        self._last_online_ms = last_online_ms
        #: False when nothing verifies central's commands (no keys configured): a grant could
        #: never be stored, so central is not asked.
        self.commands_verified = True
        self._pending: dict[bytes, _Pending] = {}
        #: Requests published, granted, refused, timed out (for status and tests).
        self.stats: dict[str, int] = {"requested": 0, "granted": 0, "refused": 0, "timeouts": 0}

    # ---- link state ---------------------------------------------------------------------------
    @property
    def online(self) -> bool:
        return self.session is not None and self.session.online

    @property
    def last_online_ms(self) -> int | None:
        return self._clock_ms() if self.online else self._last_online_ms

    def went_offline(self) -> None:
        """The session went down now; a request in flight stops waiting."""
        self._last_online_ms = self._clock_ms()
        for p in self._pending.values():
            p.wake.set()

    def on_session_event(self, kind: str, _data: Mapping[str, object]) -> None:
        """``UplinkSession``'s ``on_event`` (or a part of it)."""
        if kind == "uplink_offline":
            self.went_offline()

    def wake(self) -> None:
        if self.session is not None:
            self.session.wake()

    # ---- central's answers --------------------------------------------------------------------
    def answered(self, body: Authorize | AuthorizationRefused) -> None:
        """``CommandHandler.on_authorization``: a verified answer was applied to the journal."""
        if isinstance(body, AuthorizationRefused):
            p = self._pending.get(body.request_id)
            if (
                p is not None
                and p.kind == body.kind
                and p.card_id_code == body.card_id_code.hex().upper()
            ):
                p.refused = body.reason
                p.wake.set()
            return
        for p in self._pending.values():  # the journal decides whether it is the one waited for
            p.wake.set()

    # ---- the request --------------------------------------------------------------------------
    async def request_authorization(self, kind: str, card_id_code: str) -> bool:
        """Ask central; see the module docstring for every outcome."""
        session = self.session
        if session is None or not session.online:
            raise UplinkUnavailableError("central is not reachable: the uplink is offline")
        if not self.commands_verified:
            raise UplinkUnavailableError("central's commands are not verified: no central keys")
        card = card_id_code.upper()
        try:
            request = AuthorizationRequest(
                new_request_id(self._clock_ms()), kind, bytes.fromhex(card)
            )
        except ValueError:
            raise MessageEncodingError("card_id_code must be 32 hex digits") from None
        event = EventMessage(
            self.terminal,
            request.request_id,
            self._clock_ms() // 1000,
            AUTHORIZATION_REQUEST,
            request.to_data(),
        )
        pending = _Pending(kind, card)
        self._pending[request.request_id] = pending
        try:
            await session.publish(topics.event(self.terminal), event.to_cbor())
            self.stats["requested"] += 1
            try:
                async with asyncio.timeout(self.timeout_s):
                    granted = await self._wait(session, pending)
            except TimeoutError:
                self.stats["timeouts"] += 1
                raise AuthorizationTimeoutError(
                    f"central did not answer the {kind} authorization request "
                    f"within {self.timeout_s:g} s"
                ) from None
        finally:
            del self._pending[request.request_id]
        self.stats["granted" if granted else "refused"] += 1
        log.info(
            "authorization request %s (%s): %s",
            request.request_id.hex(),
            kind,
            "granted" if granted else f"refused ({pending.refused})",
        )
        return granted

    async def _wait(self, session: UplinkSession, pending: _Pending) -> bool:
        while True:
            pending.wake.clear()
            found = await asyncio.to_thread(
                self.journal.find_valid_authorization, pending.card_id_code, pending.kind
            )
            if found is not None:
                return True
            if pending.refused is not None:
                return False
            if not session.online:
                raise UplinkUnavailableError("the uplink went down while waiting for central")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_s):
                    await pending.wake.wait()
