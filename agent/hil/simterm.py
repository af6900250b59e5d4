"""The whole simulated terminal for ``--sim`` (DESIGN §7, §9), on free ports in a private dir.

Started in this order, torn down in reverse:

1. a private pcscd with two vpcd readers (``agent.testing.pcscd``; no system daemon touched);
2. ``ssc-agent sim up`` attached to it: the virtual card in "Virtual PCD 00 00", the virtual
   PSAM in "Virtual PCD 00 01", the ESC/POS printer on a pty (unless ``printer=False``);
3. mosquitto with TLS and client certificates (``agent.testing.mosquitto``): one for the
   terminal (common name = the PSAM's terminal number, which the broker's ACL binds to
   ``ssc/v1/<terminal>/…``) and one for ``central``;
4. the reference central (``agent.sim.central.ReferenceCentral``) on its own event-loop thread,
   so the suite's tests (each with its own loop) can ask it things.

``PCSCLITE_CSOCK_NAME`` is set for this process (libpcsclite reads it once, at the first PC/SC
call): start the terminal before anything in the process talks PC/SC.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from agent.errors import ConfigError
from agent.profile import CardProfile

T = TypeVar("T")

__all__ = ["SimTls", "SimulatedTerminal"]


@dataclass(frozen=True, slots=True)
class SimTls:
    ca: str
    cert: str
    key: str


class SimulatedTerminal:
    """See the module docstring. ``start()`` / ``stop()`` (also a context manager)."""

    def __init__(
        self,
        profile: CardProfile,
        *,
        printer: bool = True,
        workdir: Path | None = None,
    ) -> None:
        self.profile = profile
        self.with_printer = printer
        # Unix socket paths must stay short: a private dir directly under the temp dir.
        self._own_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="ssc-hil-"))
        self.state_dir = self.workdir / "sim"
        self.pcscd: Any = None
        self.simup: Any = None
        self.broker: Any = None
        self.central: Any = None
        self.terminal_id = ""
        self.card_key = ""
        self.card_reader = ""
        self.psam_reader = ""
        self.printer_path: str | None = None
        self.tls: SimTls | None = None
        self.central_tls: SimTls | None = None
        self.startup_s: dict[str, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._central_task: Future[None] | None = None

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> SimulatedTerminal:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _timed(self, name: str, fn: Callable[[], T]) -> T:
        t0 = time.monotonic()
        try:
            return fn()
        finally:
            self.startup_s[name] = time.monotonic() - t0

    def _start(self) -> None:
        from agent.testing import pcscd as pcscd_mod
        from agent.testing.mosquitto import Mosquitto

        missing = pcscd_mod.missing_tools()
        if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
            missing.append("mosquitto (Debian package mosquitto)")
        if missing:
            raise ConfigError("--sim needs " + ", ".join(missing) + " (make setup installs them)")
        self.pcscd = self._timed("pcscd", lambda: pcscd_mod.start_private(self.workdir / "pcscd"))
        os.environ["PCSCLITE_CSOCK_NAME"] = str(self.pcscd.socket_path)
        self.simup = pcscd_mod.SimUpProcess(self.state_dir, self.pcscd, printer=self.with_printer)
        info = self._timed("sim up", self.simup.start)
        self.card_reader = str(info["card_reader"])
        self.psam_reader = str(info["psam_reader"])
        printer = info.get("printer")
        self.printer_path = str(printer) if printer else None
        status = self.control("status")
        self.terminal_id = str(status["psam_reader"]["terminal_number"])
        card = status["card_reader"]["card"]
        self.card_key = str(card) if card else ""
        self.broker = Mosquitto(self.workdir / "mq", tls=True)
        self._timed("mosquitto", self.broker.start)
        files = self.broker.tls_files
        cert, key = files.client(self.terminal_id)
        self.tls = SimTls(str(files.ca), str(cert), str(key))
        ccert, ckey = files.client("central")
        self.central_tls = SimTls(str(files.ca), str(ccert), str(ckey))
        self._timed("central", self._start_central)

    def _start_central(self) -> None:
        from agent.sim.central import CentralTls, ReferenceCentral

        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="hil-central", daemon=True)
        self._thread.start()
        assert self.central_tls is not None

        async def make() -> ReferenceCentral:
            assert self.central_tls is not None
            tls = self.central_tls
            return ReferenceCentral(
                self.broker_url,
                self.workdir / "central.db",
                self.profile,
                tls=CentralTls(tls.ca, tls.cert, tls.key),
            )

        central = self.call(make())
        self.central = central
        self._central_task = asyncio.run_coroutine_threadsafe(central.run(), loop)

        async def ready() -> None:
            async with asyncio.timeout(15):
                await central.wait_ready()

        self.call(ready(), timeout=20)

    def stop(self) -> None:
        """Tear everything down (safe to call twice, or after a failed start)."""
        if self._central_task is not None and self._loop is not None:
            self._central_task = None
            # Cancel the central's tasks *on its loop* and wait until they have ended: the
            # concurrent future's cancel() returns at once, before the task has run its
            # finally blocks (agent.uplink.mqtt.connection releases the MQTT socket there);
            # a loop closed under it leaves a paho client whose __del__ calls into a closed
            # loop ("Event loop is closed" at interpreter exit).
            with contextlib.suppress(BaseException):
                self.call(_cancel_other_tasks(), timeout=20)
        if self.central is not None:
            central, self.central = self.central, None
            with contextlib.suppress(BaseException):
                self.call(_close(central), timeout=10)
        if self._loop is not None:
            # aiomqtt clients left for the garbage collector call back into their loop when
            # collected: collect them while it still runs.
            gc.collect()
            loop, self._loop = self._loop, None
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(10)
                self._thread = None
            loop.close()
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        if self.simup is not None:
            self.simup.stop()
            self.simup = None
        if self.pcscd is not None:
            self.pcscd.cleanup()
            self.pcscd = None
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> SimulatedTerminal:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- services
    @property
    def broker_url(self) -> str:
        return str(self.broker.url) if self.broker is not None else ""

    def control(self, op: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """One request to ``sim up``'s control channel (blocking; run it in a thread)."""
        from agent.sim.terminal import control_request

        return control_request(self.state_dir, op, args)

    def call(self, coro: Awaitable[T], timeout: float = 30.0) -> T:
        """Run ``coro`` on the central's loop and wait for its result (blocking)."""
        if self._loop is None:
            raise ConfigError("the reference central is not running")
        return asyncio.run_coroutine_threadsafe(_wrap(coro), self._loop).result(timeout)


async def _wrap(coro: Awaitable[T]) -> T:
    return await coro


async def _close(central: Any) -> None:
    central.close()


async def _cancel_other_tasks() -> None:
    """Cancel every other task of this loop and wait for them (a cancel swallowed by a
    completing wait is repeated)."""
    me = asyncio.current_task()
    for _ in range(20):
        others = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
        if not others:
            return
        for t in others:
            t.cancel()
        await asyncio.wait(others, timeout=0.5)
