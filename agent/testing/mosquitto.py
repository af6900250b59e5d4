"""A private mosquitto broker on a free loopback port, with optional TLS and per-terminal ACL.

With TLS, a throwaway CA issues the server certificate and client certificates whose common name
is the MQTT username (``use_identity_as_username``); the ACL lets a terminal use only
``ssc/v1/<its id>/…`` (and read ``ssc/v1/all/…``), and lets the ``central`` identity use all.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ACL = """\
# terminals: only their own subtree, and the broadcast subtree read-only
pattern write ssc/v1/%u/tx
pattern write ssc/v1/%u/event
pattern write ssc/v1/%u/status
pattern write ssc/v1/%u/telemetry
pattern read ssc/v1/%u/ack
pattern read ssc/v1/%u/cmd
topic read ssc/v1/all/#
user central
topic readwrite ssc/v1/#
topic readwrite $share/#
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"mosquitto did not listen on {port}")


@dataclass
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    dir: Path
    _ca_key: ec.EllipticCurvePrivateKey
    _ca_cert: x509.Certificate

    def client(self, common_name: str) -> tuple[Path, Path]:
        """Issue a client certificate whose CN is the MQTT identity; returns (cert, key)."""
        cert, key = _issue(self._ca_key, self._ca_cert, common_name, server=False)
        cp = self.dir / f"{common_name}.pem"
        kp = self.dir / f"{common_name}.key"
        cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        kp.write_bytes(_key_pem(key))
        kp.chmod(0o600)
        return cp, kp


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _issue(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, cn: str, *, server: bool
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256()), key


def make_tls(directory: Path) -> TlsFiles:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ssc-test-ca")])
    now = dt.datetime.now(dt.UTC)
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    srv_cert, srv_key = _issue(ca_key, ca_cert, "localhost", server=True)
    ca = directory / "ca.pem"
    ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    sc = directory / "server.pem"
    sc.write_bytes(srv_cert.public_bytes(serialization.Encoding.PEM))
    sk = directory / "server.key"
    sk.write_bytes(_key_pem(srv_key))
    sk.chmod(0o600)
    return TlsFiles(ca, sc, sk, directory, ca_key, ca_cert)


@dataclass
class Mosquitto:
    """A running private broker. ``url`` is ``mqtt://127.0.0.1:PORT`` (or ``mqtts://``)."""

    workdir: Path
    tls: bool = False
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    tls_files: TlsFiles | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log = self.workdir / "mosquitto.log"
        if self.tls:
            self.tls_files = make_tls(self.workdir / "tls")

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def _config(self) -> str:
        lines = [
            "per_listener_settings false",
            "persistence false",
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
            "max_inflight_messages 0",
            "max_queued_messages 100000",
            "set_tcp_nodelay true",
            f"listener {self.port} 127.0.0.1",
        ]
        if os.geteuid() == 0:
            # mosquitto drops to user "mosquitto" when started as root, and could then not
            # read our private work directory (CI runs as root).
            lines.insert(0, "user root")
        if self.tls and self.tls_files:
            acl = self.workdir / "acl"
            acl.write_text(ACL)
            lines += [
                f"cafile {self.tls_files.ca}",
                f"certfile {self.tls_files.server_cert}",
                f"keyfile {self.tls_files.server_key}",
                "require_certificate true",
                "use_identity_as_username true",
                f"acl_file {acl}",
                "allow_anonymous false",
            ]
        else:
            lines.append("allow_anonymous true")
        return "\n".join(lines) + "\n"

    def start(self) -> Mosquitto:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.path.exists(exe):
            raise FileNotFoundError("mosquitto is not installed (make setup installs it)")
        if not self.port:
            self.port = free_port()
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self._config())
        self.proc = subprocess.Popen(  # noqa: S603 - fixed argv, our own config
            [exe, "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            _wait_port(self.port, 10)
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the broker (SIGKILL: an outage, not a clean shutdown)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
