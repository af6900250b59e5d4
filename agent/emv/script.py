"""Issuer-script relay (ssc-card-protocol.md §4 "Issuer scripts"; EMV Book 3 §10.10, Book 4
§A5 "Issuer Script Results").

The bank host answers an online request with issuer script templates ``71`` (before the second
GENERATE AC) or ``72`` (after it), each ``{9F18 script id (optional), 86 command, 86 …}``. The
agent cannot compute their MACs (it has no issuer keys); it sends each ``86`` command to the card
unchanged and in order. A command fails when SW1 is not ``90``, ``62`` or ``63``; the rest of
*that* script is then skipped and the next script still runs (Book 3 §10.10). The results go
back to the host as ``9F5B`` bytes: per script, one byte (high nibble 0 not performed, 1 failed,
2 successful; low nibble the 1-based sequence number of the failing command, ``F`` for 15 or
more) followed by the 4-byte script identifier (zeros when absent).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from agent.card import tlv
from agent.card.apdu import CardChannel, CommandApdu
from agent.card.t0 import transceive
from agent.errors import CardProtocolError, IssuerScriptError, TlvError

SCRIPT_TEMPLATES = (0x71, 0x72)
MAX_SCRIPTS = 16
MAX_COMMANDS = 32


class ScriptOutcome(IntEnum):
    NOT_PERFORMED = 0
    FAILED = 1
    SUCCESS = 2


@dataclass(frozen=True, slots=True)
class IssuerScript:
    template: int
    script_id: bytes | None
    commands: tuple[CommandApdu, ...]


@dataclass(frozen=True, slots=True)
class ScriptResult:
    """Outcome of one script: the SWs of the commands that were sent (in order)."""

    template: int
    script_id: bytes | None
    outcome: ScriptOutcome
    sws: tuple[int, ...]
    failed_index: int | None = None  # 1-based number of the failing command

    @property
    def result_bytes(self) -> bytes:
        """The 5 bytes of this script in ``9F5B``."""
        seq = 0 if self.failed_index is None else min(self.failed_index, 0x0F)
        return bytes(((int(self.outcome) << 4) | seq,)) + (self.script_id or bytes(4))


def parse_issuer_scripts(data: bytes) -> list[IssuerScript]:
    """Parse the host's script templates (other top-level objects such as ``91`` are ignored).

    Raises ``IssuerScriptError`` for anything malformed: bad TLV, a script id that is not 4 bytes,
    an unknown object inside a template, or an ``86`` that is not a command APDU.
    """
    try:
        top = tlv.decode(data, skip_padding=True)
    except TlvError as e:
        raise IssuerScriptError(f"issuer script TLV: {e.message}") from e
    scripts = []
    for obj in top:
        if obj.tag not in SCRIPT_TEMPLATES:
            continue
        try:
            children = obj.children
        except TlvError as e:
            raise IssuerScriptError(f"issuer script template {obj.tag:X}: {e.message}") from e
        script_id: bytes | None = None
        commands: list[CommandApdu] = []
        for child in children:
            if child.tag == 0x9F18:
                if script_id is not None or commands or len(child.value) != 4:
                    raise IssuerScriptError("script identifier (9F18) must come first, 4 bytes")
                script_id = child.value
            elif child.tag == 0x86:
                try:
                    commands.append(CommandApdu.from_bytes(child.value))
                except CardProtocolError as e:
                    raise IssuerScriptError(f"issuer script command (86): {e.message}") from e
            else:
                raise IssuerScriptError(f"unexpected tag {child.tag:X} in an issuer script")
        if len(commands) > MAX_COMMANDS:
            raise IssuerScriptError(f"issuer script has more than {MAX_COMMANDS} commands")
        scripts.append(IssuerScript(obj.tag, script_id, tuple(commands)))
    if len(scripts) > MAX_SCRIPTS:
        raise IssuerScriptError(f"more than {MAX_SCRIPTS} issuer scripts")
    return scripts


def _command_ok(sw: int) -> bool:
    return sw >> 8 in (0x90, 0x62, 0x63)


async def run_script(channel: CardChannel, script: IssuerScript) -> ScriptResult:
    """Send one script's commands in order, stopping at the first failure."""
    sws: list[int] = []
    for i, cmd in enumerate(script.commands, start=1):
        try:
            resp = await transceive(channel, cmd)
        except CardProtocolError:
            # The card broke the T=0 rules for this command: it failed, stop this script.
            return ScriptResult(
                script.template, script.script_id, ScriptOutcome.FAILED, tuple(sws), i
            )
        sws.append(resp.sw)
        if not _command_ok(resp.sw):
            return ScriptResult(
                script.template, script.script_id, ScriptOutcome.FAILED, tuple(sws), i
            )
    return ScriptResult(script.template, script.script_id, ScriptOutcome.SUCCESS, tuple(sws))


async def relay_issuer_scripts(
    channel: CardChannel,
    scripts: Sequence[IssuerScript] | bytes,
    *,
    template: int | None = None,
) -> list[ScriptResult]:
    """Relay scripts (parsed, or raw host bytes) to the card; ``template`` filters 71 or 72.

    Device errors (card removed) propagate: the caller's transaction decides what is in doubt.
    """
    parsed = parse_issuer_scripts(scripts) if isinstance(scripts, bytes | bytearray) else scripts
    results = []
    for script in parsed:
        if template is not None and script.template != template:
            continue
        results.append(await run_script(channel, script))
    return results


def script_results(results: Sequence[ScriptResult]) -> bytes:
    """The ``9F5B`` value for the host: 5 bytes per script, in order."""
    return b"".join(r.result_bytes for r in results)
