"""The reliability campaign's mode switch and its figures (DESIGN §9 "how it is proven").

Short mode (the default, part of ``make test``): modest counts so the whole directory runs in a
couple of minutes on a shared CI box. Long mode (``RELIABILITY_LONG=1``, what ``make
reliability`` sets): the counts that docs/RELIABILITY.md reports — large hypothesis example
counts, a 10-minute soak, more fault repetitions.

Every test here is marked ``reliability`` automatically. A test reports what it tried and what
was lost through the ``figures`` fixture; the session writes them all to
``reports/reliability/figures.json`` (or ``$RELIABILITY_REPORT``), the raw material of
docs/RELIABILITY.md.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
LONG = os.environ.get("RELIABILITY_LONG", "") == "1"
MODE = "long" if LONG else "short"


def scaled(short: int, long: int) -> int:
    """``short`` in the normal suite, ``long`` under ``RELIABILITY_LONG=1``."""
    return long if LONG else short


def long_timeout(seconds: float) -> pytest.MarkDecorator:
    """A per-test timeout above the suite's 60 s for long-mode runs (short mode keeps 60 s)."""
    return pytest.mark.timeout(seconds if LONG else 60)


@dataclass
class Figure:
    """One row of docs/RELIABILITY.md: a fault, how it was injected, tried, lost."""

    fault: str
    injection: str
    tried: int
    lost: int
    test: str = ""
    details: dict[str, Any] = field(default_factory=dict)


class Figures:
    """Collects :class:`Figure` rows for one test (``add``) into the session's list."""

    def __init__(self, rows: list[Figure], test: str = "") -> None:
        self.rows = rows
        self.test = test

    def add(self, fault: str, injection: str, tried: int, lost: int, **details: Any) -> None:
        self.rows.append(Figure(fault, injection, tried, lost, self.test, dict(details)))


_ROWS: list[Figure] = []


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    """Record ``figures.add(fault, injection, tried, lost, **details)`` for the report."""
    return Figures(_ROWS, request.node.nodeid)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.reliability)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _ROWS:
        return
    target = Path(os.environ.get("RELIABILITY_REPORT", ROOT / "reports/reliability/figures.json"))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(
            json.dumps(
                {
                    "mode": MODE,
                    "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "python": platform.python_version(),
                    "exit_status": int(exitstatus),
                    "figures": [asdict(r) for r in _ROWS],
                },
                indent=2,
                ensure_ascii=False,
            ),
            encoding="utf-8",
        )
    except OSError:
        pass  # the report is a by-product; never fail a run because of it


# --------------------------------------------------------------------------------------------
# fuzzing in the suite: hypothesis over the same targets as fuzz/ (atheris or fuzz/run.py)
# --------------------------------------------------------------------------------------------
def fuzz_examples(short: int = 150) -> int:
    """Hypothesis examples per fuzz test: ≤ 200 in the normal suite, 5,000 in long mode."""
    return scaled(min(short, 200), 5000)


def mutants(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    """A seed with a few bytes overwritten, inserted or cut: hostile but close to valid."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        buf = bytearray(draw(st.sampled_from(seeds)))
        for _ in range(draw(st.integers(1, 4))):
            op = draw(st.integers(0, 3))
            pos = draw(st.integers(0, len(buf)))
            if op == 0 and buf:
                buf[min(pos, len(buf) - 1)] = draw(st.integers(0, 255))
            elif op == 1:
                buf[pos:pos] = draw(st.binary(min_size=1, max_size=8))
            elif op == 2:
                del buf[pos : pos + draw(st.integers(1, 16))]
            else:
                del buf[pos:]
        return bytes(buf)

    return build()


def hostile(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    """Random bytes or mutated seeds."""
    return st.one_of(mutants(seeds), st.binary(max_size=512))


# --------------------------------------------------------------------------------------------
# a terminal on the simulators (imports lazily: agent.tx may be absent while it is written)
# --------------------------------------------------------------------------------------------
class SimTerminal:
    """Virtual card + virtual PSAM behind the real PSAM client + a journal + ``TxEngine`` with
    a ``FakeUplink`` (online by default: unlock authorizations are granted by "central").

    ``intents`` collects the tx ids of every ``tx_intent`` event: the records the journal
    committed, which must all still be there after any fault.
    """

    def __init__(
        self,
        journal: Any,
        *,
        online: bool = True,
        clock: Any = None,
        seed: int = 3,
        alg: str = "des",
    ) -> None:
        from agent.profile import load_profile
        from agent.psam.client import PsamSecurityModule
        from agent.sim.channel import SimChannel
        from agent.sim.factory import CardFactory
        from agent.sim.psam import DEFAULT_TERMINAL_NUMBER, VirtualPsam
        from agent.tx.engine import TxEngine
        from agent.tx.ports import FakeUplink

        self.profile = load_profile("default")
        self.card = CardFactory(self.profile, seed).issue(algorithm=alg, with_bank=False)
        self.psam = VirtualPsam(self.profile)
        self.sam = PsamSecurityModule(SimChannel(self.psam), self.profile)
        self.journal = journal
        self.terminal_id = DEFAULT_TERMINAL_NUMBER.hex()
        kw: dict[str, Any] = {} if clock is None else {"clock": clock}
        self.uplink = FakeUplink(journal, online=online, **kw)
        self.intents: list[str] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.engine = TxEngine(
            journal,
            self.sam,
            self.profile,
            None,
            self.uplink,
            self.terminal_id,
            on_event=self._on_event,
            **kw,
        )

    def _on_event(self, name: str, data: Any) -> None:
        if name == "tx_intent":
            self.intents.append(str(data["tx_id"]))
        self.events.append((name, dict(data)))

    def channel(self) -> Any:
        from agent.sim.channel import SimChannel

        return SimChannel(self.card)

    async def toggle(self) -> Any:
        """Lock the card if it is active, unlock it if it is locked: one card write."""
        if self.card.state == "temp_locked":
            return await self.engine.unlock(self.channel())
        return await self.engine.lock(self.channel())

    def verify_chain(self, journal: Any = None) -> Any:
        from agent.psam.soft import verify_seal

        tn = bytes.fromhex(self.terminal_id)
        return (journal or self.journal).verify_chain(
            lambda d, m: verify_seal(self.profile, tn, d, m)
        )


def open_journal(path: Any, **kwargs: Any) -> Any:
    """A file journal with the transaction table of ``agent.tx.machine``."""
    from agent.journal.store import Journal
    from agent.tx.machine import TABLE

    return Journal(path, transitions=TABLE, **kwargs)
