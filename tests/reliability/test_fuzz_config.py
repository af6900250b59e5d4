"""Hostile configuration files (DESIGN §8): fuzz/config_parse.py under hypothesis.

Invariant: an ``AgentConfig`` or ``ConfigError`` — nothing else. The two bugs the fuzzer found
(a non-UTF-8 file, a URL without ``//``) are fixed; their regression tests are below.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from agent.config import ConfigError, load_config, parse_config
from fuzz import config_parse
from tests.reliability.conftest import Figures, fuzz_examples, hostile


def test_shipped_configs_parse() -> None:
    assert {config_parse.test_one_input(s) for s in config_parse.SEEDS} >= {"ok:0", "ok:1"}


def test_hostile_config_text(figures: Figures) -> None:
    count = {"n": 0}

    @settings(
        max_examples=fuzz_examples(),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=hostile(config_parse.SEEDS))
    def run(data: bytes) -> None:
        count["n"] += 1
        config_parse.test_one_input(data)

    run()
    figures.add(
        "hostile config files", "hypothesis (text, file bytes, env overrides)", count["n"], 0
    )


def test_non_utf8_config_file_is_a_config_error(tmp_path: Path) -> None:
    p = tmp_path / "agent.toml"
    p.write_bytes(b'[log]\nlevel = "\xff"\n')
    with pytest.raises(ConfigError):
        load_config(p, env={})


def test_url_without_slashes_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        parse_config('[card]\nreader = "sim:x"\n', env={})
