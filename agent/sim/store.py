"""Card store: virtual cards persisted as JSON files in a state directory.

Layout::

    <dir>/cards/<card identification code, 32 hex>.json   one card's ``to_state()``
    <dir>/current                                        the card now "in the reader" (its key)

Every write is atomic (temp file in the same directory, fsync, ``os.replace``, fsync of the
directory), so a reader in another process sees either the old or the new card, never half of
one: a lock done by ``ssc-agent card lock`` in one process and an unlock by a later process see
the same card. Concurrent *writers* to one card are last-writer-wins (the simulators are driven
by one terminal at a time).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from agent.errors import ConfigError, SimStateError
from agent.profile import CardProfile, load_profile
from agent.sim.card import VirtualSscCard

_KEY = re.compile(r"^[0-9A-F]{32}$")
_PROFILE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def card_key(card: VirtualSscCard) -> str:
    """Store key of a card: its 16-byte card identification code as 32 upper-case hex digits."""
    return card.card_id_code.hex().upper()


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably (temp + fsync + replace + dir fsync)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class CardStore:
    """Many virtual cards in one directory, plus the "current card in the reader" pointer.

    ``profile``: the profile cards are loaded with; None loads each card's own profile by the
    name saved in its state (``agent/profiles/<name>.toml``).
    """

    def __init__(self, directory: str | Path, profile: CardProfile | None = None) -> None:
        self.directory = Path(directory)
        self.cards_dir = self.directory / "cards"
        self.profile = profile
        try:
            self.cards_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SimStateError(f"cannot create card store {self.directory}: {e}") from None

    # ----------------------------------------------------------------------------- cards
    def path(self, key: str) -> Path:
        key = key.upper()
        if not _KEY.match(key):
            raise SimStateError(f"not a card key (32 hex digits): {key!r}")
        return self.cards_dir / f"{key}.json"

    def save(self, card: VirtualSscCard) -> str:
        """Persist a card (atomic); returns its key."""
        key = card_key(card)
        data = json.dumps(card.to_state(), sort_keys=True, indent=1, ensure_ascii=False)
        try:
            atomic_write(self.path(key), data.encode("utf-8"))
        except OSError as e:
            raise SimStateError(f"cannot save card {key}: {e}") from None
        return key

    def load(self, key: str) -> VirtualSscCard:
        """Load one card; a missing or malformed file raises ``SimStateError``."""
        path = self.path(key)
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SimStateError(f"no card {key.upper()} in {self.cards_dir}") from None
        except (OSError, ValueError) as e:
            raise SimStateError(f"card {key.upper()}: unreadable state ({e})") from None
        if not isinstance(state, dict):
            raise SimStateError(f"card {key.upper()}: state is not a JSON object")
        return VirtualSscCard.from_state(self._profile_for(state), state)

    def _profile_for(self, state: dict[str, Any]) -> CardProfile:
        if self.profile is not None:
            return self.profile
        name = state.get("profile")
        if not isinstance(name, str) or not _PROFILE_NAME.match(name):
            raise SimStateError("card state names no valid profile")
        try:
            return load_profile(name)
        except ConfigError as e:
            raise SimStateError(f"card state profile: {e.message}") from None

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)
        if self.current_key() == key.upper():
            self.eject()

    def keys(self) -> list[str]:
        """Keys of every stored card, sorted."""
        return sorted(
            p.stem for p in self.cards_dir.glob("*.json") if _KEY.match(p.stem) and p.is_file()
        )

    def list(self) -> list[VirtualSscCard]:
        return [self.load(k) for k in self.keys()]

    # ----------------------------------------------------------------------------- reader
    @property
    def _current_path(self) -> Path:
        return self.directory / "current"

    def insert(self, key_or_card: str | VirtualSscCard) -> str:
        """Put a stored card in the reader (a card object is saved first)."""
        if isinstance(key_or_card, VirtualSscCard):
            key = self.save(key_or_card)
        else:
            key = key_or_card.upper()
            if not self.exists(key):
                raise SimStateError(f"no card {key} in {self.cards_dir}")
        try:
            atomic_write(self._current_path, (key + "\n").encode("ascii"))
        except OSError as e:
            raise SimStateError(f"cannot set the current card: {e}") from None
        return key

    def eject(self) -> None:
        """Take the card out of the reader."""
        self._current_path.unlink(missing_ok=True)

    def current_key(self) -> str | None:
        try:
            key = self._current_path.read_text(encoding="ascii").strip().upper()
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise SimStateError(f"unreadable current-card pointer: {e}") from None
        return key if _KEY.match(key) else None

    def load_current(self) -> VirtualSscCard | None:
        """The card in the reader, or None when the reader is empty."""
        key = self.current_key()
        return None if key is None else self.load(key)
