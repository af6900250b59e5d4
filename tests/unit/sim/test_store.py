"""Card store: atomic JSON persistence, listing, the current-card pointer, across processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.errors import SimStateError
from agent.sim.factory import CardFactory
from agent.sim.store import CardStore, atomic_write, card_key
from tests.unit.sim._support import PROFILE, Terminal

ROOT = Path(__file__).resolve().parents[3]


def test_save_load_list_delete(tmp_path: Path) -> None:
    store = CardStore(tmp_path, PROFILE)
    cards = CardFactory(PROFILE, 4).issue_many(3)
    keys = [store.save(c) for c in cards]
    assert store.keys() == sorted(keys)
    assert keys[0] == cards[0].card_id_code.hex().upper() == card_key(cards[0])
    loaded = store.load(keys[1])
    assert loaded.to_state() == cards[1].to_state()
    assert [c.card_id_code for c in store.list()] == sorted(c.card_id_code for c in cards)
    store.delete(keys[1])
    assert not store.exists(keys[1])
    assert len(store.keys()) == 2
    assert not [p for p in (tmp_path / "cards").iterdir() if p.suffix != ".json"]


def test_load_without_profile_uses_saved_profile_name(tmp_path: Path) -> None:
    card = CardFactory(PROFILE, 4).issue()
    key = CardStore(tmp_path, PROFILE).save(card)
    assert CardStore(tmp_path).load(key).profile.name == "default"


def test_current_card_pointer(tmp_path: Path) -> None:
    store = CardStore(tmp_path, PROFILE)
    assert store.current_key() is None
    assert store.load_current() is None
    card = CardFactory(PROFILE, 5).issue()
    key = store.insert(card)
    assert store.current_key() == key
    current = store.load_current()
    assert current is not None
    assert current.card_id_code == card.card_id_code
    store.eject()
    assert store.current_key() is None
    store.insert(key)
    store.delete(key)
    assert store.current_key() is None


def test_errors(tmp_path: Path) -> None:
    store = CardStore(tmp_path, PROFILE)
    with pytest.raises(SimStateError):
        store.load("00" * 16)
    with pytest.raises(SimStateError):
        store.load("../../etc/passwd")
    with pytest.raises(SimStateError):
        store.insert("11" * 16)
    (tmp_path / "cards" / ("AB" * 16 + ".json")).write_text("{not json", encoding="utf-8")
    with pytest.raises(SimStateError):
        store.load("AB" * 16)
    (tmp_path / "cards" / ("CD" * 16 + ".json")).write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(SimStateError):
        store.load("CD" * 16)
    (tmp_path / "cards" / ("EF" * 16 + ".json")).write_text('{"profile": "../x"}', "utf-8")
    with pytest.raises(SimStateError):
        CardStore(tmp_path).load("EF" * 16)


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    atomic_write(target, b"old")
    atomic_write(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]


def test_failed_write_leaves_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = CardStore(tmp_path, PROFILE)
    card = CardFactory(PROFILE, 6).issue()
    key = store.save(card)
    before = store.path(key).read_bytes()
    t = Terminal(card)
    t.select_ssse()
    t.app_block()

    def fail(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(SimStateError, match="No space left"):
        store.save(card)
    monkeypatch.undo()
    assert store.path(key).read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "cards").iterdir()) == [f"{key}.json"]
    assert store.load(key).state == "active"


_CHILD = """
import sys
from agent.sim.store import CardStore
from tests.unit.sim._support import Terminal
store = CardStore(sys.argv[1])
card = store.load_current()
t = Terminal(card)
t.select_ssse()
sw = t.app_unblock()
store.save(card)
print(f"{sw:04X} {card.state}")
"""


def test_lock_and_later_unlock_in_another_process(tmp_path: Path) -> None:
    store = CardStore(tmp_path, PROFILE)
    card = CardFactory(PROFILE, 7).issue()
    store.insert(card)
    t = Terminal(card)
    t.select_ssse()
    assert t.app_block() == 0x9000
    store.save(card)
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        check=True,
    )
    assert out.stdout.split() == ["9000", "active"]
    reloaded = store.load_current()
    assert reloaded is not None
    assert reloaded.state == "active"
