"""DESIGN §2: layers point down only, and the codec layers are sans-IO.

Walks the import statements of every module (AST, no execution) and checks them against the
layer rules. A violation names the file and the forbidden import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "agent"
IO_MODULES = {"asyncio", "smartcard", "serial", "aiomqtt", "paho", "socket", "sqlite3", "threading"}

# package -> packages of the agent it may import (besides itself and the foundation modules
# every layer may use: agent.errors, agent.profile, agent.privacy, agent.logs)
ALLOWED: dict[str, set[str]] = {
    "card": set(),
    "wire": set(),
    "psam": {"card"},
    "ssc": {"card", "psam"},
    "emv": {"card"},
    "drivers": {"card", "wire"},
    "journal": {"wire", "card", "psam"},
    "tx": {"card", "psam", "ssc", "emv", "journal", "wire"},
    "uplink": {"wire", "journal", "psam", "card"},
}
SANS_IO = {"card", "wire"}
FOUNDATION = {"errors", "profile", "privacy", "logs"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def _modules(pkg: str) -> list[Path]:
    return sorted((ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("pkg", sorted(ALLOWED))
def test_layer_imports_point_down(pkg: str) -> None:
    bad = []
    for path in _modules(pkg):
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] != "agent" or len(parts) < 2:
                continue
            target = parts[1]
            if target in {pkg, *FOUNDATION} or target in ALLOWED[pkg]:
                continue
            bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "layering violations:\n" + "\n".join(bad)


@pytest.mark.parametrize("pkg", sorted(SANS_IO))
def test_codec_layers_are_sans_io(pkg: str) -> None:
    bad = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _modules(pkg)
        for name in _imports(path)
        if name.split(".")[0] in IO_MODULES
    ]
    assert not bad, "I/O imports in a sans-IO layer:\n" + "\n".join(bad)


def test_checker_sees_a_violation(tmp_path: Path) -> None:
    """The walker itself works: a planted import is found."""
    f = tmp_path / "x.py"
    f.write_text("import asyncio\nfrom agent.tx import engine\n", encoding="utf-8")
    assert _imports(f) == {"asyncio", "agent.tx"}
