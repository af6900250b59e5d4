"""Hostile cards (DESIGN §3, §9): the fuzz targets of fuzz/card_*.py under hypothesis.

Each target's ``test_one_input`` checks the invariant itself — parse, or raise the card
layer's own error (``TlvError``/``AtrError``/``CardProtocolError``, the ``CardStatusError``
family for a well-formed refusal), lose nothing — and raises anything else. Short mode: ≤ 200
examples each; ``RELIABILITY_LONG=1``: 5,000. The 100,000-input runs are fuzz/ under atheris
(docs/RELIABILITY.md).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from fuzz import card_atr, card_read_flow, card_records, card_sw, card_tlv
from tests.reliability.conftest import Figures, fuzz_examples, hostile

TARGETS = {
    "card_tlv": card_tlv,
    "card_atr": card_atr,
    "card_sw": card_sw,
    "card_records": card_records,
}
SETTINGS = settings(
    max_examples=fuzz_examples(),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_seeds_parse(name: str) -> None:
    """The recorded answers of a real read are accepted (the targets are not vacuous)."""
    mod = TARGETS[name]
    outcomes = [mod.test_one_input(s) for s in mod.SEEDS]
    assert "ok" in outcomes


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_hostile_bytes_give_the_layers_own_errors(name: str, figures: Figures) -> None:
    mod = TARGETS[name]
    count = {"n": 0}

    @SETTINGS
    @given(data=hostile(mod.SEEDS))
    def run(data: bytes) -> None:
        count["n"] += 1
        mod.test_one_input(data)

    run()
    figures.add(
        f"hostile card answers: {name}", "hypothesis (mutated seeds + random bytes)", count["n"], 0
    )


def test_read_flow_with_fuzzed_answers(figures: Figures) -> None:
    count = {"n": 0}

    @settings(SETTINGS, max_examples=fuzz_examples(100))
    @given(data=hostile(card_read_flow.SEEDS))
    def run(data: bytes) -> None:
        count["n"] += 1
        card_read_flow.test_one_input(data)

    run()
    figures.add(
        "hostile card answers: full read flow", "hypothesis (fuzzed channel)", count["n"], 0
    )


def test_read_flow_unmutated_is_a_full_read() -> None:
    assert card_read_flow.test_one_input(b"\x00") == "ok"
    assert card_read_flow.test_one_input(b"\x01") == "ok"
