"""Engineer prompts with timeouts ("insert the test card now", "open the printer cover").

A prompt names a physical action and how the suite sees it done (``wait``: a card event, a
printer status). Who acts:

* ``--sim``: the suite itself, through the simulators' controls (``sim``: ``sim card
  insert/remove``, ``sim printer fault``), in interactive and non-interactive runs alike;
* interactive, on hardware: the engineer; the instruction is printed and the suite waits for the
  device to show it done, at most ``timeout`` seconds;
* ``--non-interactive`` on hardware: nobody — :class:`~agent.errors.OperatorActionError`
  (code ``no_operator``), which the suite reports as a skip with the instruction as reason.

A wait that times out raises ``OperatorActionError`` (code ``operator_timeout``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from agent.errors import OperatorActionError

T = TypeVar("T")

__all__ = ["Prompter"]


@dataclass(slots=True)
class Prompter:
    """See the module docstring. ``say`` writes one line to the engineer's terminal."""

    interactive: bool
    simulated: bool
    timeout: float = 60.0
    say: Callable[[str], None] = print
    log: list[str] = field(default_factory=list)

    async def perform(
        self,
        instruction: str,
        wait: Callable[[], Awaitable[T]],
        *,
        sim: Callable[[], Awaitable[object]] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - a prompt's own deadline
    ) -> T:
        """Have ``instruction`` done (module docstring); the result of ``wait``."""
        limit = self.timeout if timeout is None else timeout
        if self.simulated and sim is not None:
            self.log.append(f"[sim] {instruction}")
            await sim()
        elif self.interactive:
            self.log.append(f"[engineer] {instruction}")
            self.say(f"\n>>> {instruction}  (waiting up to {limit:g} s)")
        else:
            raise OperatorActionError(
                f"needs a person at the terminal: {instruction!r} (--non-interactive)",
                code="no_operator",
            )
        try:
            async with asyncio.timeout(limit):
                return await wait()
        except TimeoutError:
            raise OperatorActionError(
                f"not done within {limit:g} s: {instruction!r}", code="operator_timeout"
            ) from None
