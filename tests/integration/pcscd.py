"""A private pcscd with vsmartcard's vpcd readers, for integration tests (DESIGN §7, §9).

How it runs (reusable by the HIL suite and ``ssc-agent sim up``):

* Debian's pcsc-lite 1.9.9 ``pcscd`` ignores ``PCSCLITE_CSOCK_NAME`` and always serves
  ``/run/pcscd/pcscd.comm`` (libpcsclite, the *client*, does honour the variable). To run a
  private daemon next to a system one, pcscd is started in a private mount namespace where our
  own directory is bind-mounted on ``/run/pcscd``::

      unshare --mount --propagation private \\
          sh -c 'mount --bind "$1" /run/pcscd && exec pcscd --foreground --config "$2"' \\
          sh <dir>/run <dir>/conf
      # not root: unshare --user --map-root-user --mount --propagation private ...
      # no /run/pcscd on the host: a tmpfs is mounted on /run (inside the namespace) first

  Clients use ``PCSCLITE_CSOCK_NAME=<dir>/run/pcscd.comm``. libpcsclite reads the variable
  once, on the first PC/SC call of the process, so tests set it at conftest import.
* ``<dir>/conf/vpcd`` is a reader.conf for the vpcd driver on free ports (Debian's own file
  uses ``DEVICENAME /dev/null:0x8C7B``, i.e. 35963; the driver's readers "Virtual PCD 00 00"
  and "Virtual PCD 00 01" listen on ``port`` and ``port + 1``).
* ``SSC_TEST_PCSCD=system`` reuses the running system pcscd instead (default socket, Debian's
  vpcd ports 35963/35964); tests that must restart pcscd are skipped then.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

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


def vpcd_driver() -> str | None:
    for path in VPCD_DRIVER_CANDIDATES:
        if Path(path).exists():
            return path
    return None


def missing_tools() -> list[str]:
    """What this machine lacks to run pcscd+vpcd tests (empty list: all there)."""
    missing = []
    if shutil.which("pcscd") is None and not Path("/usr/sbin/pcscd").exists():
        missing.append("pcscd (Debian package pcscd)")
    if vpcd_driver() is None:
        missing.append("libifdvpcd.so (Debian package vsmartcard-vpcd)")
    return missing


def pcscd_binary() -> str:
    return shutil.which("pcscd") or "/usr/sbin/pcscd"


def free_port_pair(count: int = SLOTS) -> int:
    """A base port such that ``base .. base+count-1`` are all free (vpcd binds INADDR_ANY)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("0.0.0.0", 0))  # probing what vpcd will bind
            base = s.getsockname()[1]
        if base + count > 65535:
            continue
        ok = True
        for p in range(base, base + count):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("0.0.0.0", p))
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
    """The client socket path of this process's private pcscd (known before it starts)."""
    base = Path(tempfile.gettempdir()) / f"ssc-pcscd-{pid or os.getpid()}"
    return base / "run" / "pcscd.comm"


@dataclass
class PcscdInstance:
    """One pcscd serving vpcd readers. ``private=False`` wraps the system daemon."""

    base_dir: Path
    port: int
    private: bool = True
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
        return {**os.environ, "PCSCLITE_CSOCK_NAME": str(self.socket_path)}

    def _wrapper(self) -> list[str]:
        unshare = shutil.which("unshare")
        if unshare is None:
            raise RuntimeError("util-linux 'unshare' is needed to run a private pcscd")
        if os.geteuid() == 0:
            return [unshare, "--mount", "--propagation", "private"]
        return [unshare, "--user", "--map-root-user", "--mount", "--propagation", "private"]

    def start(self, timeout: float = 10.0) -> None:
        if not self.private:
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
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PCSCLITE_CSOCK_NAME": str(self.socket_path)},
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
            if self.socket_path.exists():
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    try:
                        s.connect(str(self.socket_path))
                    except OSError:
                        pass
                    else:
                        return
            time.sleep(0.05)
        raise RuntimeError(f"pcscd did not come up in {timeout}s: {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
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
        if not self.private:
            raise RuntimeError("the system pcscd is not ours to restart")
        self.stop()
        self.start()

    def _kill_orphan(self) -> None:
        """Stop a daemon of ours that outlived its Popen handle (found by pid file + cmdline)."""
        pid_file = self.base_dir / "run" / "pcscd.pid"
        try:
            pid = int(pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if str(self.config_dir).encode() in cmdline:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)

    def cleanup(self) -> None:
        self.stop()
        if self.private:
            self._kill_orphan()
            shutil.rmtree(self.base_dir, ignore_errors=True)


def start_private(base_dir: Path | None = None, *, debug: bool = False) -> PcscdInstance:
    """Start a private pcscd with two vpcd readers on free ports (see the module docstring)."""
    if base_dir is None:
        base_dir = private_socket_path().parent.parent
    inst = PcscdInstance(base_dir=base_dir, port=free_port_pair(), debug=debug)
    inst.start()
    return inst


def system_instance() -> PcscdInstance:
    """The running system pcscd with Debian's vpcd readers (SSC_TEST_PCSCD=system)."""
    return PcscdInstance(base_dir=Path("/run/pcscd"), port=SYSTEM_VPCD_PORT, private=False)
