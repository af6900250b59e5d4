"""The test-card allow-list: the HIL suite writes only to cards it was told are test cards.

DESIGN §9: "writes only to allow-listed test cards". Two locks, both before the first write:

* :func:`admit_card` identifies the card read-only (SELECT SSSE, EF05) and raises
  :class:`~agent.errors.NotATestCardError` unless its card identification code is allow-listed;
* :class:`TestCardGuard` is a ``CardChannel`` proxy that refuses every card-changing command
  (``agent.tx.engine.is_card_write``: secure-messaging block/unblock/update, PIN change/reset)
  until a card was admitted, so even a flow that skipped the check cannot write.

A test card left locked by an interrupted run serves no READ RECORD (CARD-PROTOCOL §1); it is
admitted when the chip-serial bytes of its ATR match exactly one allow-listed code.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from agent.errors import NotATestCardError
from agent.ssc.app import SscApplication
from agent.tx.engine import atr_card_hint, hint_matches, is_card_write

if TYPE_CHECKING:
    from agent.card.apdu import CardChannel, CommandApdu, ResponseApdu
    from agent.profile import CardProfile

__all__ = ["TestCardGuard", "admit_card", "normalize_card_id"]


def normalize_card_id(text: str) -> str:
    """A card identification code as 32 upper-case hex digits (``ValueError`` otherwise)."""
    code = "".join(text.split()).upper()
    if len(code) != 32 or any(ch not in "0123456789ABCDEF" for ch in code):
        raise ValueError(f"a card identification code is 32 hex digits: {text!r}")
    return code


class TestCardGuard:
    """``CardChannel`` proxy that lets card writes through only for an admitted test card."""

    __test__ = False  # not a pytest test class

    def __init__(self, inner: CardChannel, allowed: Iterable[str]) -> None:
        self.inner = inner
        self.allowed = frozenset(normalize_card_id(c) for c in allowed)
        self.card_id: str | None = None
        self.writes_sent = 0
        self.writes_refused = 0
        self.apdus = 0

    @property
    def atr(self) -> bytes | None:
        atr = getattr(self.inner, "atr", None)
        return atr if isinstance(atr, bytes) else None

    def admit(self, card_id_code: str) -> None:
        code = normalize_card_id(card_id_code)
        if code not in self.allowed:
            raise NotATestCardError(
                f"card {code} is not an allow-listed test card: refused before any write"
            )
        self.card_id = code

    async def transmit(self, command: CommandApdu) -> ResponseApdu:
        if is_card_write(command):
            if self.card_id is None:
                self.writes_refused += 1
                raise NotATestCardError(
                    "card write refused: the card was not admitted as an allow-listed test card"
                )
            self.writes_sent += 1
        self.apdus += 1
        return await self.inner.transmit(command)


async def admit_card(guard: TestCardGuard, profile: CardProfile) -> str:
    """Identify the card read-only and admit it; its code. ``NotATestCardError`` otherwise."""
    app = SscApplication(guard, profile)
    sel = await app.select()
    if sel.lock is None:
        code = (await app.read_identity()).card_id.hex
        guard.admit(code)
        return code
    hint = atr_card_hint(guard.atr)
    found = [c for c in guard.allowed if hint is not None and hint_matches(c, hint)]
    if len(found) != 1:
        raise NotATestCardError(
            f"the card is {sel.lock.value} and its ATR matches no single allow-listed test "
            "card: refused before any write"
        )
    guard.admit(found[0])
    return found[0]
