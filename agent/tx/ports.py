"""Ports the transaction engine talks through, and in-process fakes (DESIGN §2, §4, §5).

* :class:`UplinkPort` — the link to central: whether it is up, when it was last up (the offline
  policy's age limit), asking central for a signed authorization (unlock, PIN reset, PIN
  unblock) and waking the outbox drain after a seal. The MQTT uplink implements it
  (``agent.uplink.port.SessionUplinkPort``: an ``authorization_request`` event, answered by
  central's signed ``authorize`` or ``authorization_refused``); a granted authorization arrives
  as a signed ``authorize`` command that the uplink verifies and stores with
  ``Journal.add_authorization`` — the engine only ever reads authorizations from the journal,
  so an unverified one can never be used.
* :class:`BankHostPort` — the bank host for bank activation (ssc-card-protocol.md §4): the
  online request (the card's ARQC and the data it covers) in, issuer scripts out.

Fakes: :class:`FakeUplink` (a central that grants or denies, in process). The adapter over the
simulated bank host, ``agent.sim.rig.SimBankHost``, lives in ``sim`` because ``tx`` may not
import ``sim`` (DESIGN §2).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from agent.errors import UplinkUnavailableError

if TYPE_CHECKING:
    from agent.journal.store import Journal

#: Default lifetime of an authorization granted by the fake central (ms).
DEFAULT_AUTH_TTL_MS = 10 * 60 * 1000


class UplinkPort(Protocol):
    """What the engine needs from the uplink."""

    @property
    def online(self) -> bool:
        """Central is reachable now."""
        ...

    @property
    def last_online_ms(self) -> int | None:
        """When central was last reachable (Unix ms; ``None`` = never since start of records)."""
        ...

    async def request_authorization(self, kind: str, card_id_code: str) -> bool:
        """Ask central online for a signed authorization of ``kind`` for this card.

        True when central granted one and it has been verified and stored in the journal
        (``Journal.add_authorization``) before this returns; False when central refused (its
        signed refusal may have blacklisted the card: the engine decides again).
        Raises ``UplinkUnavailableError`` when central cannot be asked now (or the link went
        away meanwhile), and its subclass ``AuthorizationTimeoutError`` when central was asked
        and did not answer in time.
        """
        ...

    def wake(self) -> None:
        """A record was sealed: drain the outbox now (must not block)."""
        ...


@dataclass(frozen=True, slots=True)
class BankRequest:
    """The online request for bank activation (the ICC part of ISO 8583 field 55)."""

    pan: str = field(repr=False)
    psn: int
    atc: int
    cryptogram: bytes  # 9F26
    transaction_data: bytes  # CDOL1 data as sent in GENERATE AC
    aip: bytes  # 82 (0000 when GPO was refused by a blocked application)
    iad: bytes  # 9F10
    action: str = "activate"


@dataclass(frozen=True, slots=True)
class BankAnswer:
    approved: bool
    response_code: str  # "00" approved
    scripts: bytes  # 71/72 templates, relayed unchanged


class BankHostPort(Protocol):
    async def authorize(self, request: BankRequest) -> BankAnswer:
        """Send the online request; raises ``UplinkUnavailableError`` when the host is down."""
        ...


# ---------------------------------------------------------------------------------------------
# Fakes
# ---------------------------------------------------------------------------------------------
class FakeUplink:
    """An in-process central: ``online`` is a switch; authorizations are granted (stored in the
    journal with a fresh id and ``ttl_ms`` lifetime) when ``grant`` is True, else denied.

    ``wakes`` counts ``wake()`` calls; ``requests`` lists ``(kind, card_id_code)`` asked.
    """

    def __init__(
        self,
        journal: Journal,
        *,
        online: bool = False,
        grant: bool = True,
        ttl_ms: int = DEFAULT_AUTH_TTL_MS,
        clock: Any = None,
        last_online_ms: int | None = None,
    ) -> None:
        self._journal = journal
        self._online = online
        self.grant = grant
        self.ttl_ms = ttl_ms
        self._clock = clock or (lambda: time.time_ns() // 1_000_000)
        self._last_online = last_online_ms
        self.wakes = 0
        self.requests: list[tuple[str, str]] = []
        self._n = 0

    @property
    def online(self) -> bool:
        return self._online

    @online.setter
    def online(self, value: bool) -> None:
        if self._online and not value:
            self._last_online = int(self._clock())
        self._online = value

    @property
    def last_online_ms(self) -> int | None:
        return int(self._clock()) if self._online else self._last_online

    async def request_authorization(self, kind: str, card_id_code: str) -> bool:
        if not self._online:
            raise UplinkUnavailableError("central is not reachable")
        self.requests.append((kind, card_id_code))
        if not self.grant:
            return False
        self._n += 1
        auth_id = f"fake-{int(self._clock())}-{self._n}"
        expires = int(self._clock()) + self.ttl_ms
        self._journal.add_authorization(auth_id, card_id_code, kind, expires, b"fake-central")
        return True

    def wake(self) -> None:
        self.wakes += 1
