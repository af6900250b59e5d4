"""The HIL suite's pytest plugin: options, device fixtures, prompts, required groups, reports.

Run it with ``ssc-agent hil [pytest args]`` (or ``pytest hil_tests [args]``). Groups are pytest
markers (``agent.hil.report.GROUPS``); a group whose device is absent is SKIPPED with the reason,
and failed instead under ``--require GROUP``. ``--sim`` starts the whole simulated terminal
(``agent.hil.simterm``). ``--report DIR`` writes ``DIR/junit.xml`` (pytest's JUnit XML) and
``DIR/report.md`` (+ ``summary.json``). Writes go only to allow-listed test cards
(``--test-card``; under ``--sim`` the simulator's own card), see ``agent.hil.guard``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import glob as globmod
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from agent.errors import AgentError, OperatorActionError
from agent.hil.guard import normalize_card_id
from agent.hil.prompts import Prompter
from agent.hil.report import GROUP_HELP, GROUPS, HINTS, HilRun, TestResult, set_last_run
from agent.hil.report import write_reports as _write_reports
from agent.profile import CardProfile, load_profile

T = TypeVar("T")
HERE = Path(__file__).parent
RUN_KEY = pytest.StashKey["HilEnv"]()
_CURRENT: list[HilEnv] = []  # the run of this pytest session (logreport has no config)


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("hil", "SSC terminal hardware-in-the-loop suite")
    g.addoption("--reader", metavar="GLOB", help="card reader name glob (pcsc_scan lists names)")
    g.addoption("--psam", metavar="GLOB", help="PSAM reader name glob")
    g.addoption("--printer", metavar="URL", help="printer: serial:///dev/ttyUSB0?baud=… or path")
    g.addoption("--broker", metavar="URL", help="MQTT broker, mqtts://host:port")
    g.addoption("--ca", metavar="FILE", help="broker CA certificate (PEM)")
    g.addoption("--cert", metavar="FILE", help="terminal client certificate (PEM)")
    g.addoption("--key", metavar="FILE", help="terminal client key (PEM)")
    g.addoption("--terminal-id", metavar="ID", help="terminal id (default: the PSAM's EF16)")
    g.addoption(
        "--test-card",
        metavar="ID",
        action="append",
        default=[],
        help="card identification code (32 hex) of a card the suite may write; repeatable",
    )
    g.addoption("--test-pin", metavar="PIN", help="test cards' PIN (default: profile initial)")
    g.addoption("--profile", dest="hil_profile", default="default", help="card profile")
    g.addoption("--state-dir", dest="hil_state_dir", metavar="DIR", help="journal directory")
    g.addoption("--min-free-mb", type=int, default=64, help="free disk the journal needs")
    g.addoption("--max-clock-skew", type=float, default=30.0, help="seconds against central")
    g.addoption("--latency-apdus", type=int, default=40, help="APDUs for the latency statistics")
    g.addoption("--sim", action="store_true", help="start and use the simulated terminal")
    g.addoption("--sim-no-printer", action="store_true", help="--sim without the printer")
    g.addoption("--sim-no-psam", action="store_true", help="--sim without the PSAM")
    g.addoption("--non-interactive", action="store_true", help="never wait for a person")
    g.addoption("--prompt-timeout", type=float, default=60.0, help="seconds per engineer prompt")
    g.addoption("--report", dest="hil_report", metavar="DIR", help="junit.xml + report.md here")
    g.addoption(
        "--require",
        metavar="GROUP",
        action="append",
        default=[],
        choices=GROUPS,
        help="a skip in GROUP is a failure; repeatable",
    )


# ---------------------------------------------------------------------------------------------
# The run's environment
# ---------------------------------------------------------------------------------------------
@dataclass
class HilEnv:
    """Options, devices, the simulated terminal (``--sim``), prompts and the run's results."""

    config: pytest.Config
    run: HilRun
    profile: CardProfile
    reader: str | None = None
    psam: str | None = None
    printer: str | None = None
    broker: str | None = None
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    terminal_id: str | None = None
    test_cards: set[str] = field(default_factory=set)
    test_pin: str = ""
    state_dir: Path = Path()
    sim: Any = None
    prompter: Prompter | None = None
    sim_error: str = ""

    def opt(self, name: str) -> Any:
        return self.config.getoption(name)

    @property
    def simulated(self) -> bool:
        return self.sim is not None

    def say(self, text: str) -> None:
        capman = self.config.pluginmanager.getplugin("capturemanager")
        ctx = capman.global_and_fixture_disabled() if capman else contextlib.nullcontext()
        with ctx:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()

    async def act(
        self,
        instruction: str,
        wait: Callable[[], Awaitable[T]],
        *,
        sim: Callable[[], Awaitable[object]] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - a prompt's own deadline
    ) -> T:
        """A prompt (``agent.hil.prompts``); a person who cannot act means a skip."""
        assert self.prompter is not None
        try:
            return await self.prompter.perform(instruction, wait, sim=sim, timeout=timeout)
        except OperatorActionError as e:
            pytest.skip(e.message)
        finally:
            self.run.prompts[:] = self.prompter.log

    async def control(self, op: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """A simulator control request (``--sim`` only)."""
        import asyncio

        assert self.sim is not None
        result: dict[str, Any] = await asyncio.to_thread(self.sim.control, op, args)
        return result


def _env(config: pytest.Config) -> HilEnv:
    return config.stash[RUN_KEY]


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    for group in GROUPS:
        config.addinivalue_line("markers", f"{group}: HIL group — {GROUP_HELP[group]}")
    report = config.getoption("hil_report", None)
    if report and not getattr(config.option, "xmlpath", None):
        Path(report).mkdir(parents=True, exist_ok=True)
        config.option.xmlpath = str(Path(report) / "junit.xml")
    required = tuple(dict.fromkeys(config.getoption("require", None) or []))
    sim = bool(config.getoption("sim", False))
    run = HilRun(mode="simulated terminal (--sim)" if sim else "hardware", required=required)
    profile = load_profile(config.getoption("hil_profile", "default") or "default")
    env = HilEnv(config=config, run=run, profile=profile)
    config.stash[RUN_KEY] = env
    _CURRENT[:] = [env]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        item.user_properties.append(("group", group_of(item)))


def group_of(item: pytest.Item) -> str:
    for group in GROUPS:
        if item.get_closest_marker(group) is not None:
            return group
    return "other"


# ---------------------------------------------------------------------------------------------
# Session setup: resolve the devices; --sim starts the simulated terminal
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="session", autouse=True)
def hil(request: pytest.FixtureRequest) -> Iterator[HilEnv]:
    env = _env(request.config)
    o = env.opt
    env.reader, env.psam, env.printer = o("reader"), o("psam"), o("printer")
    env.broker, env.ca, env.cert, env.key = o("broker"), o("ca"), o("cert"), o("key")
    env.terminal_id = o("terminal_id")
    env.test_pin = o("test_pin") or env.profile.initial_pin
    cards = set()
    for c in o("test_card"):
        try:
            cards.add(normalize_card_id(c))
        except ValueError as e:
            raise pytest.UsageError(f"--test-card: {e}") from None
    env.test_cards = cards
    env.state_dir = Path(o("hil_state_dir") or "var/agent")
    sim = None
    if o("sim"):
        from agent.hil.simterm import SimulatedTerminal

        sim = SimulatedTerminal(env.profile, printer=not o("sim_no_printer"))
        try:
            sim.start()
        except (AgentError, OSError, RuntimeError) as e:
            env.sim_error = f"the simulated terminal did not start: {e}"
            sim = None
        if sim is not None:
            env.sim = sim
            env.reader = env.reader or globmod.escape(sim.card_reader)
            env.psam = None if o("sim_no_psam") else (env.psam or globmod.escape(sim.psam_reader))
            env.printer = None if o("sim_no_printer") else (env.printer or sim.printer_path)
            env.broker = env.broker or sim.broker_url
            assert sim.tls is not None
            env.ca, env.cert, env.key = sim.tls.ca, sim.tls.cert, sim.tls.key
            env.terminal_id = env.terminal_id or sim.terminal_id
            env.state_dir = sim.workdir / "agent"
            if sim.card_key:
                env.test_cards.add(sim.card_key)
            for name, secs in sim.startup_s.items():
                env.run.add_timing(f"sim start: {name}", f"{secs * 1000:.0f} ms")
    env.prompter = Prompter(
        interactive=not o("non_interactive"),
        simulated=sim is not None,
        timeout=o("prompt_timeout"),
        say=env.say,
    )
    inv = env.run.add_inventory
    inv("card reader (configured)", env.reader or "not configured")
    inv("PSAM reader (configured)", env.psam or "not configured")
    inv("printer (configured)", env.printer or "not configured")
    inv("broker (configured)", env.broker or "not configured")
    inv("allow-listed test cards", ", ".join(sorted(env.test_cards)) or "none")
    inv("card profile", env.profile.name)
    try:
        yield env
    finally:
        if sim is not None:
            sim.stop()


@pytest.fixture(autouse=True)
async def _per_test(hil: HilEnv) -> AsyncIterator[None]:
    if hil.sim_error:
        pytest.fail(hil.sim_error)
    yield
    # paho clients that aiomqtt leaves to the garbage collector call back into the test's event
    # loop when collected: collect them while that loop still runs.
    gc.collect()


# ---------------------------------------------------------------------------------------------
# Device fixtures (function scope: each test owns its sessions and its event loop)
# ---------------------------------------------------------------------------------------------
@pytest.fixture
async def card_reader(hil: HilEnv) -> AsyncIterator[Any]:
    if not hil.reader:
        pytest.skip("no card reader configured (--reader GLOB, or --sim)")
    from agent.drivers.pcsc import PcscReader

    reader = PcscReader(hil.reader)
    try:
        yield reader
    finally:
        await reader.aclose()


async def ensure_card(hil: HilEnv, reader: Any) -> bytes:
    """The ATR of the card in the reader; the engineer is asked to insert one if needed."""
    if await reader.card_present():
        atr: bytes = await reader.wait_for_card(timeout=5)
        return atr

    async def insert() -> None:
        await hil.control("card.insert", {"key": hil.sim.card_key} if hil.sim.card_key else {})

    return await hil.act(
        "insert the test card now",
        lambda: reader.wait_for_card(),
        sim=insert if hil.simulated else None,
    )


@pytest.fixture
async def card(hil: HilEnv, card_reader: Any) -> AsyncIterator[Any]:
    """An exclusive session with the card in the card reader (asks for one if empty)."""
    await ensure_card(hil, card_reader)
    async with card_reader.session() as channel:
        yield channel


@pytest.fixture
async def psam_module(hil: HilEnv) -> AsyncIterator[Any]:
    """``PsamSecurityModule`` over the PSAM reader."""
    if not hil.psam:
        pytest.skip("no PSAM configured (--psam GLOB; --sim-no-psam leaves it out)")
    from agent.drivers.pcsc import PcscReader
    from agent.psam.client import PsamSecurityModule

    async with PcscReader(hil.psam) as reader:
        if not await reader.card_present():
            pytest.skip(f"no PSAM in the PSAM reader {hil.psam!r}: insert the PSAM")
        async with reader.session() as channel:
            yield PsamSecurityModule(channel, hil.profile)


@pytest.fixture
async def printer(hil: HilEnv) -> AsyncIterator[Any]:
    if not hil.printer:
        pytest.skip("no printer configured (--printer URL; --sim-no-printer leaves it out)")
    from agent.drivers.printer import SerialPrinter

    url = hil.printer if hil.printer.startswith("serial:") else f"serial://{hil.printer}"
    async with SerialPrinter(url) as p:
        yield p


# ---------------------------------------------------------------------------------------------
# Results: required groups, hints, the human report
# ---------------------------------------------------------------------------------------------
class HilFailure(AssertionError):
    """A failed check with a fix hint for the engineer."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(f"{message}\nhint: {hint}")
        self.hint = hint


def _skip_reason(rep: pytest.TestReport) -> str:
    lr = rep.longrepr
    if isinstance(lr, tuple) and len(lr) == 3:
        return str(lr[2]).removeprefix("Skipped: ")
    return str(lr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    rep: pytest.TestReport = outcome.get_result()
    env = _env(item.config)
    group = group_of(item)
    hint = ""
    if call.excinfo is not None:
        exc = call.excinfo.value
        if isinstance(exc, HilFailure):
            hint = exc.hint
        elif isinstance(exc, AgentError):
            hint = HINTS.get(exc.code, "") or HINTS.get(type(exc).code, "")
    if rep.skipped and group in env.run.required and not hasattr(rep, "wasxfail"):
        reason = _skip_reason(rep)
        rep.outcome = "failed"
        rep.longrepr = f"required group {group!r} was skipped: {reason}"
        hint = hint or "connect the device (or drop --require " + group + ")"
    if hint:
        rep.user_properties.append(("hint", hint))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    env = _CURRENT[0] if _CURRENT else None
    if env is None:
        return
    if report.when != "call" and report.passed:
        env.run.record(_result(env, report, "passed", only_time=True))
        return
    if report.skipped:
        outcome, message = "skipped", _skip_reason(report)
    elif report.failed:
        outcome = "failed" if report.when == "call" else "error"
        message = str(report.longrepr)
    else:
        outcome, message = "passed", ""
    env.run.record(_result(env, report, outcome, message=message))


def _result(
    env: HilEnv,
    report: pytest.TestReport,
    outcome: str,
    *,
    message: str = "",
    only_time: bool = False,
) -> TestResult:
    props = dict(report.user_properties)
    group = str(props.get("group", "other"))
    if only_time:
        outcome = "passed"
    return TestResult(
        nodeid=report.nodeid,
        group=group,
        outcome=outcome,
        duration_s=report.duration,
        message=message if not only_time else "",
        hint=str(props.get("hint", "")),
        required=group in env.run.required,
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    env = session.config.stash.get(RUN_KEY, None)
    if env is None:
        return
    env.run.finished = dt.datetime.now(dt.UTC)
    env.run.exit_status = int(exitstatus)
    set_last_run(env.run)
    report = session.config.getoption("hil_report", None)
    if report:
        _write_reports(env.run, report)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    env = config.stash.get(RUN_KEY, None)
    report = config.getoption("hil_report", None)
    if env is not None and report:
        terminalreporter.write_line(f"HIL report: {Path(report) / 'report.md'}")
