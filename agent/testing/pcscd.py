"""A private pcscd with vsmartcard's vpcd readers on free ports (DESIGN §7, §9).

Used by the integration and contract tests, the HIL suite run on the simulators, and the PC/SC
benchmark (``bench/pcsc_roundtrip.py``): none of them installs anything or touches the system
daemon. Same behaviour as ``tests/integration/pcscd.py`` (which may re-export this module).

How it runs:

* Debian's pcsc-lite (1.9.x) ``pcscd`` ignores ``PCSCLITE_CSOCK_NAME`` and always serves
  ``/run/pcscd/pcscd.comm`` (libpcsclite, the *client*, does honour the variable). To run a
  private daemon next to a system one, pcscd runs in a private mount namespace where our own
  directory is bind-mounted on ``/run/pcscd``::

      unshare --mount --propagation private \\
          sh -c 'mount --bind "$1" /run/pcscd && exec pcscd --foreground --config "$2"' ...
      # not root: unshare --user --map-root-user --mount --propagation private ...
      # no /run/pcscd on the host: a tmpfs is mounted on /run (inside the namespace) first

  Clients set ``PCSCLITE_CSOCK_NAME=<dir>/run/pcscd.comm`` (``PcscdInstance.env``). libpcsclite
  reads the variable once, on the first PC/SC call of a process: set it before that call.
* ``<dir>/conf/vpcd`` is a reader.conf for the vpcd driver on a free port pair (Debian's own
  file says ``DEVICENAME /dev/null:0x8C7B``, i.e. 35963; the driver's readers
  "Virtual PCD 00 00" and "Virtual PCD 00 01" listen on ``port`` and ``port + 1``).
* ``attach(dir)`` finds a private daemon already serving ``dir`` (started by another fixture
  of the same process) so that one process never runs two daemons on one socket path.
* ``system_instance()`` wraps the running system pcscd with Debian's vpcd ports (35963/35964).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DEFAULT_SOCKET",
    "READER_PREFIX",
    "SYSTEM_VPCD_PORT",
    "PcscdInstance",
    "SimUpProcess",
    "attach",
    "free_port_pair",
    "missing_tools",
    "private_socket_path",
    "reader_conf",
    "socket_alive",
    "start_private",
    "system_instance",
    "vpcd_driver",
]

VPCD_DRIVER_CANDIDATES = (
    "/usr/lib/pcsc/drivers/serial/libifdvpcd.so",
    "/usr/lib64/pcsc/drivers/serial/libifdvpcd.so",
    "/usr/local/lib/pcsc/drivers/serial/libifdvpcd.so",
)
DEFAULT_SOCKET = "/run/pcscd/pcscd.comm"
SYSTEM_VPCD_PORT = 35963
READER_PREFIX = "Virtual PCD"
SLOTS = 2

_SCRIPT = (
    "set -e; if [ ! -d /run/pcscd ]; then mount -t tmpfs -o mode=0755 ssc-pcscd /run; "
    "mkdir /run/pcscd; fi; "
    'mount --bind "$1" /run/pcscd; shift; exec "$@"'
)
_CHANNEL = re.compile(r"^\s*CHANNELID\s+(0x[0-9A-Fa-f]+|\d+)\s*$", re.MULTILINE)


def vpcd_driver() -> str | None:
    """Path of vsmartcard's pcscd driver, or None when the package is not installed."""
    for path in VPCD_DRIVER_CANDIDATES:
        if Path(path).exists():
            return path
    return None


def pcscd_binary() -> str:
    return shutil.which("pcscd") or "/usr/sbin/pcscd"


def missing_tools() -> list[str]:
    """What this machine lacks to run pcscd+vpcd (empty list: all there)."""
    missing = []
    if shutil.which("pcscd") is None and not Path("/usr/sbin/pcscd").exists():
        missing.append("pcscd (Debian package pcscd)")
    if vpcd_driver() is None:
        missing.append("libifdvpcd.so (Debian package vsmartcard-vpcd)")
    if shutil.which("unshare") is None:
        missing.append("unshare (Debian package util-linux)")
    return missing


def free_port_pair(count: int = SLOTS) -> int:
    """A base port such that ``base .. base+count-1`` are all free (vpcd binds INADDR_ANY)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("0.0.0.0", 0))  # noqa: S104 - probing what vpcd will bind
            base: int = s.getsockname()[1]
        if base + count > 65535:
            continue
        ok = True
        for p in range(base, base + count):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("0.0.0.0", p))  # noqa: S104
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port pair for vpcd")


def reader_conf(port: int, driver: str) -> str:
    """A reader.conf for vpcd (same fields as Debian's /etc/reader.conf.d/vpcd)."""
    return (
        f'FRIENDLYNAME "{READER_PREFIX}"\n'
        f"DEVICENAME   /dev/null:{port}\n"
        f"LIBPATH      {driver}\n"
        f"CHANNELID    {port}\n"
    )


def private_socket_path(pid: int | None = None) -> Path:
    """The client socket path of a process's private pcscd (known before it starts)."""
    base = Path(tempfile.gettempdir()) / f"ssc-pcscd-{pid or os.getpid()}"
    return base / "run" / "pcscd.comm"


def socket_alive(path: Path) -> bool:
    """Whether something accepts connections on the Unix socket ``path``."""
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


@dataclass
class PcscdInstance:
    """One pcscd serving vpcd readers. ``private=False`` wraps the system daemon; ``owned=False``
    a private daemon started by someone else (never stopped or removed by this object)."""

    base_dir: Path
    port: int
    private: bool = True
    owned: bool = True
    debug: bool = False
    process: subprocess.Popen[bytes] | None = None
    command: list[str] = field(default_factory=list)
    starts: int = 0

    @property
    def socket_path(self) -> Path:
        return self.base_dir / "run" / "pcscd.comm" if self.private else Path(DEFAULT_SOCKET)

    @property
    def config_dir(self) -> Path:
        return self.base_dir / "conf"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "pcscd.log"

    @property
    def reader_names(self) -> list[str]:
        return [f"{READER_PREFIX} 00 {slot:02X}" for slot in range(SLOTS)]

    def slot_port(self, slot: int) -> int:
        return self.port + slot

    @property
    def env(self) -> dict[str, str]:
        """Environment for PC/SC clients (pyscard, pcsc_scan, opensc-tool) of this daemon."""
        env = dict(os.environ)
        if self.private:
            env["PCSCLITE_CSOCK_NAME"] = str(self.socket_path)
        else:
            env.pop("PCSCLITE_CSOCK_NAME", None)
        return env

    def _wrapper(self) -> list[str]:
        unshare = shutil.which("unshare")
        if unshare is None:
            raise RuntimeError("util-linux 'unshare' is needed to run a private pcscd")
        if os.geteuid() == 0:
            return [unshare, "--mount", "--propagation", "private"]
        return [unshare, "--user", "--map-root-user", "--mount", "--propagation", "private"]

    def start(self, timeout: float = 10.0) -> None:
        """Start the private daemon and wait until its socket accepts connections."""
        if not self.private or not self.owned:
            return
        driver = vpcd_driver()
        if driver is None:
            raise RuntimeError("vsmartcard-vpcd is not installed")
        (self.base_dir / "run").mkdir(parents=True, exist_ok=True)
        self.config_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "vpcd").write_text(reader_conf(self.port, driver), encoding="utf-8")
        pcscd = [pcscd_binary(), "--foreground", "--config", str(self.config_dir)]
        if self.debug:
            pcscd += ["--debug", "--apdu"]
        self.command = [
            *self._wrapper(),
            "sh",
            "-c",
            _SCRIPT,
            "sh",
            str(self.base_dir / "run"),
            *pcscd,
        ]
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell input
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        finally:
            log.close()
        self.starts += 1
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"pcscd exited with {self.process.returncode}: {self.log_tail()}"
                )
            if socket_alive(self.socket_path):
                return
            time.sleep(0.05)
        raise RuntimeError(f"pcscd did not come up in {timeout}s: {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the daemon if this object started it (SIGTERM, then SIGKILL)."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def restart(self) -> None:
        if not self.private or not self.owned:
            raise RuntimeError("this pcscd is not ours to restart")
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop the daemon and remove its directory (only what this object owns)."""
        if not self.owned:
            return
        self.stop()
        if self.private:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> PcscdInstance:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def default_base_dir() -> Path:
    return private_socket_path().parent.parent


def attach(base_dir: Path | None = None) -> PcscdInstance | None:
    """A private pcscd already serving ``base_dir`` (``owned=False``), or None."""
    base = base_dir if base_dir is not None else default_base_dir()
    try:
        conf = (base / "conf" / "vpcd").read_text(encoding="utf-8")
    except OSError:
        return None
    match = _CHANNEL.search(conf)
    if match is None:
        return None
    inst = PcscdInstance(base_dir=base, port=int(match.group(1), 0), owned=False)
    return inst if socket_alive(inst.socket_path) else None


def start_private(base_dir: Path | None = None, *, debug: bool = False) -> PcscdInstance:
    """Start a private pcscd with two vpcd readers on free ports (see the module docstring)."""
    inst = PcscdInstance(
        base_dir=base_dir if base_dir is not None else default_base_dir(),
        port=free_port_pair(),
        debug=debug,
    )
    inst.start()
    return inst


def system_instance() -> PcscdInstance:
    """The running system pcscd with Debian's vpcd readers (ports 35963/35964)."""
    return PcscdInstance(
        base_dir=Path("/run/pcscd"), port=SYSTEM_VPCD_PORT, private=False, owned=False
    )


@dataclass
class SimUpProcess:
    """``ssc-agent sim up --json`` as a subprocess attached to ``pcscd`` (tests, bench, HIL).

    ``start()`` returns the one JSON line (``card_reader``, ``psam_reader``, ``printer``,
    ``control``); ``stop()`` sends SIGTERM and returns the exit status. stderr (the logs) goes
    to ``log_path``.
    """

    state_dir: Path
    pcscd: PcscdInstance
    printer: bool = True
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    info: dict[str, object] = field(default_factory=dict)

    @property
    def log_path(self) -> Path:
        return self.state_dir.parent / f"{self.state_dir.name}-sim-up.log"

    @property
    def command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "agent",
            "sim",
            "up",
            "--json",
            "--state-dir",
            str(self.state_dir),
            "--vpcd-port",
            str(self.pcscd.port),
        ]
        if not self.printer:
            cmd.append("--no-printer")
        return cmd + self.extra_args

    def start(self, timeout: float = 30.0) -> dict[str, object]:
        import json
        import select

        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(  # noqa: S603 - our own CLI, fixed argv
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                env=self.pcscd.env,
            )
        finally:
            log.close()
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"sim up did not attach: {self.log_tail()}")
            ready, _, _ = select.select([self.process.stdout], [], [], left)
            if ready:
                chunk = os.read(self.process.stdout.fileno(), 4096)
                if not chunk:
                    continue
                line += chunk
        info = json.loads(line)
        if not isinstance(info, dict):
            raise TypeError(f"sim up printed {line!r}")
        self.info = info
        return info

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> int | None:
        proc, self.process = self.process, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if proc.stdout is not None:
            proc.stdout.close()
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL: a crash, no clean shutdown (for persistence tests)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.stop()

    def __enter__(self) -> SimUpProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
