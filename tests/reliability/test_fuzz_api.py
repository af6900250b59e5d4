"""Hostile local-API clients (DESIGN §6, §9): fuzz/api_frames.py under hypothesis.

One running ``ApiServer`` (Unix + token-protected loopback TCP) takes every input on a fresh
connection; the target checks that every answer is a well-formed response with one of the
API's own error codes, no exception is logged, the connection is not leaked, and a long-lived
client is still served after each input.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings

from fuzz import api_frames
from tests.reliability.conftest import Figures, fuzz_examples, hostile


@pytest.fixture(scope="module")
def rig() -> Iterator[api_frames._Rig]:
    r = api_frames._Rig()
    yield r
    r.close()


def test_seed_frames_are_answered(rig: api_frames._Rig) -> None:
    outcomes = [rig.loop.run_until_complete(rig.one(s)) for s in api_frames.SEEDS]
    assert "ok" in outcomes
    assert any("frame_too_large" in o for o in outcomes)
    assert any("unauthorized" in o for o in outcomes)


def test_hostile_frames_keep_the_server_serving(rig: api_frames._Rig, figures: Figures) -> None:
    count = {"n": 0}

    @settings(
        max_examples=fuzz_examples(),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=hostile(api_frames.SEEDS))
    def run(data: bytes) -> None:
        count["n"] += 1
        rig.loop.run_until_complete(rig.one(data))

    run()
    assert rig.server.stats["connections"] >= count["n"]
    figures.add("hostile API frames", "hypothesis (bytes over Unix/TCP sockets)", count["n"], 0)
