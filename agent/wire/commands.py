"""Verification of signed commands from central (DESIGN §5: "rejects unsigned, replayed or
expired commands").

:class:`CommandVerifier` turns the bytes of ``ssc/v1/<terminal>/cmd`` or ``ssc/v1/all/blacklist``
into a typed :class:`agent.wire.codec.Command`, in this order:

1. COSE_Sign1 / Ed25519 signature with one of central's keys (:mod:`agent.wire.cose`);
2. the payload is a valid ``command`` (strict codec);
3. terminal binding: the command names this terminal or ``"all"``;
4. freshness: not issued in the future and not expired, each with ``max_skew`` seconds of
   tolerance for the terminal's clock;
5. replay: ``counter`` above the highest counter accepted so far and the id never seen.

Sans-IO: the replay store is a protocol; the verifier only reads it. The caller records the
command (id, counter) in the same journal transaction that applies it, so a crash cannot
apply a command twice or lose the record that it was applied.

Every rejection is :class:`agent.errors.CommandRejectedError` with ``reason`` one of
:data:`REASONS`, ready for the ``command_rejected`` event.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.errors import CommandRejectedError, SignatureError, WireError
from agent.wire import cose
from agent.wire.codec import Command

__all__ = ["REASONS", "CommandVerifier", "ReplayStore"]

REASONS = ("unsigned", "bad_signature", "replayed", "expired", "wrong_terminal", "malformed")
DEFAULT_MAX_SKEW_S = 300


class ReplayStore(Protocol):
    """What the verifier reads from the journal about commands already accepted."""

    def last_counter(self) -> int:
        """The highest ``counter`` accepted so far (0 before the first command)."""
        ...

    def seen(self, command_id: bytes) -> bool:
        """Whether a command with this id was accepted before."""
        ...


class CommandVerifier:
    """Checks signature, binding, freshness and replay of commands for one terminal."""

    def __init__(
        self,
        public_keys: Mapping[bytes, Ed25519PublicKey],
        terminal: str,
        clock: Callable[[], float],
        replay: ReplayStore,
        *,
        max_skew: int = DEFAULT_MAX_SKEW_S,
        max_size: int = cose.DEFAULT_MAX_SIZE,
    ) -> None:
        if not public_keys:
            raise ValueError("at least one public key is needed to verify commands")
        self._keys = dict(public_keys)
        self._terminal = terminal
        self._clock = clock
        self._replay = replay
        self._max_skew = max_skew
        self._max_size = max_size

    def verify(self, data: bytes) -> Command:
        """The verified command; ``CommandRejectedError`` with a reason otherwise."""
        try:
            payload = cose.verify(data, self._keys, max_size=self._max_size)
        except SignatureError as exc:
            reason = exc.code if exc.code in REASONS else "bad_signature"
            raise CommandRejectedError(reason, exc.message) from None
        try:
            command = Command.from_cbor(payload)
        except WireError as exc:
            raise CommandRejectedError("malformed", exc.message) from None
        if command.terminal not in (self._terminal, "all"):
            raise CommandRejectedError("wrong_terminal", "command is for another terminal")
        now = self._clock()
        if command.issued > now + self._max_skew:
            raise CommandRejectedError("expired", "command issued in the future (clock skew?)")
        if now > command.expires + self._max_skew:
            raise CommandRejectedError("expired", "command has expired")
        if command.counter <= self._replay.last_counter():
            raise CommandRejectedError("replayed", "command counter is not above the last one")
        if self._replay.seen(command.id):
            raise CommandRejectedError("replayed", "command id was seen before")
        return command
