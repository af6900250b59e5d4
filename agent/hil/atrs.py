"""The known-ATR table of the HIL suite (``hil_tests/known_atrs.toml``).

Each ``[[atr]]`` entry has a ``pattern`` — hex byte pairs, spaces ignored, ``..`` matches any
byte (cards embed their area code and chip serial in the historical bytes, ssc-card-protocol.md
§1.3) — a ``name``, a ``kind`` (``ssc``, ``psam``, ``bank``, ``other``) and an optional ``note``.
The first entry whose pattern covers the whole ATR wins.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from agent.errors import ConfigError

KINDS = ("ssc", "psam", "bank", "other")


@dataclass(frozen=True, slots=True)
class KnownAtr:
    pattern: tuple[int | None, ...]  # None = any byte
    name: str
    kind: str
    note: str = ""

    def matches(self, atr: bytes) -> bool:
        if len(atr) != len(self.pattern):
            return False
        return all(p is None or p == b for p, b in zip(self.pattern, atr, strict=True))

    @property
    def text(self) -> str:
        return " ".join(".." if p is None else f"{p:02X}" for p in self.pattern)


def parse_pattern(text: str) -> tuple[int | None, ...]:
    """``"3B 6D .. 00"`` → ``(0x3B, 0x6D, None, 0x00)``; ``ConfigError`` when malformed."""
    compact = "".join(text.split())
    if not compact or len(compact) % 2:
        raise ConfigError(f"ATR pattern must be whole hex bytes or '..': {text!r}")
    out: list[int | None] = []
    for i in range(0, len(compact), 2):
        pair = compact[i : i + 2]
        if pair == "..":
            out.append(None)
            continue
        try:
            out.append(int(pair, 16))
        except ValueError:
            raise ConfigError(f"bad byte {pair!r} in ATR pattern {text!r}") from None
    return tuple(out)


def load_table(path: str | Path) -> list[KnownAtr]:
    """Read and validate the table (``ConfigError`` names the entry at fault)."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read the known-ATR table {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    entries = data.get("atr", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: 'atr' must be an array of tables ([[atr]])")
    table: list[KnownAtr] = []
    for i, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: atr entry {i} is not a table")
        pattern, name = entry.get("pattern"), entry.get("name")
        kind, note = entry.get("kind", "other"), entry.get("note", "")
        if not isinstance(pattern, str) or not isinstance(name, str) or not name:
            raise ConfigError(f"{path}: atr entry {i} needs a 'pattern' and a 'name' (strings)")
        if kind not in KINDS or not isinstance(note, str):
            raise ConfigError(f"{path}: atr entry {i}: kind must be one of {', '.join(KINDS)}")
        table.append(KnownAtr(parse_pattern(pattern), name, kind, note))
    return table


def lookup(table: list[KnownAtr], atr: bytes) -> KnownAtr | None:
    return next((entry for entry in table if entry.matches(atr)), None)
