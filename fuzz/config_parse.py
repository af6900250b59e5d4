"""Fuzz target: configuration files (agent.config.parse_config / load_config; DESIGN §8).

The first byte picks the entry point: (0) ``parse_config`` of the text (UTF-8, invalid bytes
replaced); (1) ``load_config`` of the raw bytes written to a file, as the daemon reads it;
(2) the text as the value of an environment override ``SSC_AGENT__<section>__<key>`` on top of
the shipped config.

Invariant: a valid ``AgentConfig`` or ``ConfigError`` (with every issue naming its key) —
never ``KeyError``, ``ValueError``, ``UnicodeDecodeError``, ``TypeError`` from the loader.

Found and fixed by this target: ``load_config`` of a file that is not UTF-8 raised
``UnicodeDecodeError``; a URL with a scheme but no ``//`` (``reader = "sim:x"``) raised
``IndexError`` in ``TransportUrl.parse``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fuzz import _harness

with _harness.instrumented():
    from agent.config import AgentConfig, ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[1]
_TMP = tempfile.TemporaryDirectory(prefix="fuzz-config-")
_FILE = Path(_TMP.name) / "agent.toml"
_BASE = (ROOT / "config" / "agent.toml").read_text(encoding="utf-8")
_OVERRIDES = (
    ("UPLINK", "BROKER"),
    ("API", "MAX_FRAME"),
    ("CARD", "READER"),
    ("PRINTER", "PRINT_AFTER"),
    ("TERMINAL", "ID"),
    ("LOG", "LEVEL"),
    ("JOURNAL", "RETENTION_DAYS"),
    ("API", "TCP"),
)


def _seeds() -> list[bytes]:
    out = []
    for p in sorted((ROOT / "config").glob("*.toml")):
        raw = p.read_bytes()
        out += [b"\x00" + raw, b"\x01" + raw]
    out += [
        b"\x02mqtt://10.0.0.5:1883",
        b"\x0a65536",
        b"\x1a'pcsc://*'",
        b'\x22["lock"]',
        b'\x00[api]\ntcp = "127.0.0.1:7000"\n',
        b'\x00[uplink]\nbroker = "mqtts://h"\n',
    ]
    return out


SEEDS = _seeds()
DICTIONARY = [
    b"[card]",
    b"[uplink]",
    b"[api]",
    b"[journal]",
    b"[printer]",
    b"[terminal]",
    b" = ",
    b"\n",
    b'"',
    b"'''",
    b"mqtts://",
    b"sim://",
    b"pcsc://",
    b"serial://",
    b"socket://",
    b"true",
    b"1e400",
    b"nan",
    b"-inf",
    b"[[x]]",
    b"{a=1}",
    b"\xff\xfe",
]


def test_one_input(data: bytes) -> str:
    mode = data[0] % 3 if data else 0
    body = data[1:]
    try:
        if mode == 0:
            cfg = parse_config(body.decode("utf-8", "replace"), env={})
        elif mode == 1:
            _FILE.write_bytes(body)
            cfg = load_config(_FILE, env={})
        else:
            section, key = _OVERRIDES[(data[0] // 3) % len(_OVERRIDES)]
            env = {f"SSC_AGENT__{section}__{key}": body.decode("utf-8", "replace")}
            cfg = parse_config(_BASE, env=env)
    except ConfigError as e:
        return f"config_error:{mode}:{len(getattr(e, 'issues', ()))}"
    _harness.expect(isinstance(cfg, AgentConfig), "parse_config returned something else")
    cfg.broker_url  # noqa: B018  # URLs were validated: parsing them again must not fail
    cfg.reader_url  # noqa: B018
    cfg.psam_url  # noqa: B018
    cfg.printer_url  # noqa: B018
    return f"ok:{mode}"


if __name__ == "__main__":
    _harness.main(test_one_input, SEEDS, DICTIONARY)
