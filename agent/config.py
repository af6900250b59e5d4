"""Agent configuration: TOML → frozen, validated dataclasses, loaded once (DESIGN §8).

Every section is a frozen dataclass; the loader walks the dataclass fields, so a new setting is
one annotated field with a default. Validation collects *every* error, each with its dotted key
and, when the key is in the file, its line number (``ssc-agent config check FILE``).

Environment overrides: ``SSC_AGENT__<SECTION>__<KEY>=value`` (value parsed as a TOML value when
it parses, else taken as a string), e.g. ``SSC_AGENT__UPLINK__BROKER=mqtt://10.0.0.5:1883``.
Transport URLs are parsed here and nowhere else (model-codebases principle 5).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from agent.errors import ConfigError

#: agent.wire.codec.TX_BATCH_MAX (config sits below the wire layer; a test keeps them equal)
TX_BATCH_LIMIT = 64

ENV_PREFIX = "SSC_AGENT__"
TX_KINDS = (
    "lock",
    "unlock",
    "report_loss",
    "activate",
    "bank_activate",
    "pin_change",
    "pin_reset",
    "pin_unblock",
    "auto_lock",
)


@dataclass(frozen=True, slots=True)
class TransportUrl:
    """A parsed device URL: ``pcsc://<glob>``, ``sim://<name>``, ``serial:///dev/x?baud=``,
    ``socket://host:port``, ``mqtt://host:port``, ``mqtts://host:port``."""

    scheme: str
    target: str
    params: dict[str, str]
    raw: str

    @classmethod
    def parse(cls, raw: str, allowed: tuple[str, ...]) -> TransportUrl:
        parts = urlsplit(raw)
        scheme = parts.scheme
        if scheme not in allowed:
            raise ValueError(f"scheme must be one of {', '.join(allowed)}: {raw!r}")
        if scheme == "serial":
            target = parts.path
        elif scheme in ("socket", "mqtt", "mqtts"):
            if not parts.hostname:
                raise ValueError(f"missing host in {raw!r}")
            port = parts.port
            default = {"mqtt": 1883, "mqtts": 8883}.get(scheme)
            if port is None and default is None:
                raise ValueError(f"missing port in {raw!r}")
            target = f"{parts.hostname}:{port or default}"
        else:  # pcsc / sim: everything after the scheme, glob characters kept
            if "://" not in raw:
                raise ValueError(f"expected {scheme}://…, got {raw!r}")
            target = raw.split("://", 1)[1].split("?", 1)[0]
        params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        return cls(scheme, target, params, raw)

    @property
    def host(self) -> str:
        return self.target.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.target.rsplit(":", 1)[1])


@dataclass(frozen=True, slots=True)
class TerminalConfig:
    #: Terminal id; empty = the PSAM's terminal number (EF16), the normal case.
    id: str = ""
    #: Directory for the journal, keys, simulator state. Relative paths are against the config file.
    state_dir: str = "var/agent"
    #: Card profile: a built-in name (agent/profiles/<name>.toml) or a file path.
    profile: str = "default"


@dataclass(frozen=True, slots=True)
class CardConfig:
    #: Citizen card reader: ``sim://<profile>`` (in-process simulator) or ``pcsc://<reader glob>``.
    reader: str = "sim://default"
    #: PSAM slot: ``sim://<profile>`` or ``pcsc://<reader glob>``.
    psam: str = "sim://default"
    #: Seconds a single APDU may take before the reader is declared stuck.
    apdu_timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class PrinterConfig:
    enabled: bool = True
    #: ``sim://`` (in-process simulated printer), ``serial:///dev/ttyUSB0?baud=115200``.
    url: str = "sim://"
    #: Transaction kinds that print a receipt when they complete.
    print_after: tuple[str, ...] = TX_KINDS
    timeout_s: float = 3.0


@dataclass(frozen=True, slots=True)
class JournalConfig:
    #: SQLite file, relative to the state directory.
    path: str = "journal.db"
    #: Acked records older than this are pruned.
    retention_days: int = 180


@dataclass(frozen=True, slots=True)
class UplinkConfig:
    enabled: bool = True
    #: ``mqtt://host:port``, ``mqtts://host:port`` (TLS with client certificate), or ``sim://``
    #: for the in-process reference central.
    broker: str = "sim://"
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    #: Central's command-signing public keys: key id -> Ed25519 public key (hex).
    central_keys: dict[str, str] = field(default_factory=dict)
    #: Central's personal-data key (X25519 public key, hex; ``ssc-agent central pubkey``): a
    #: loss report made without the card sends the citizen's ID and card numbers sealed to it
    #: (docs/MESSAGES.md "Personal data"). Empty: they stay on the terminal, and central learns
    #: only that a loss was reported.
    central_pii_key: str = ""
    inflight_window: int = 32
    #: Records per tx message while a backlog drains (docs/MESSAGES.md "Batches"). 1, the
    #: default, is the uplink contract: one record per message. Above 1 only for a central
    #: that has agreed to take ``tx-batch`` messages.
    batch_max: int = 1
    #: Backlog pace (records per second); live records are not paced.
    backlog_rate: float = 200.0
    ack_timeout_s: float = 30.0
    #: How long an online authorization request (unlock / PIN reset / PIN unblock) waits for
    #: central's answer while the citizen waits at the terminal.
    authorization_timeout_s: float = 10.0
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 300.0
    keepalive_s: int = 30


@dataclass(frozen=True, slots=True)
class ApiConfig:
    #: Unix socket path ('' disables); relative paths are against the state directory.
    socket: str = "api.sock"
    #: Optional loopback TCP listener ``127.0.0.1:PORT`` ('' disables); needs ``token_file``.
    tcp: str = ""
    token_file: str = ""
    max_frame: int = 65536
    #: Whether ``card.read`` may return unmasked personal data when a client asks (``show_pii``).
    allow_pii: bool = False


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    #: Social-security activation while offline: at most this many per day…
    activate_offline_max_per_day: int = 50
    #: …and only while the uplink has been away for less than this many hours.
    activate_offline_max_age_h: float = 72.0
    #: Report-loss accepted offline (queued, receipt says pending).
    report_loss_offline: bool = True


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "INFO"
    #: JSON lines (journald) or human text.
    json: bool = True
    #: Log APDUs at TRACE level (masked).
    trace_apdus: bool = False


@dataclass(frozen=True, slots=True)
class AgentConfig:
    terminal: TerminalConfig = field(default_factory=TerminalConfig)
    card: CardConfig = field(default_factory=CardConfig)
    printer: PrinterConfig = field(default_factory=PrinterConfig)
    journal: JournalConfig = field(default_factory=JournalConfig)
    uplink: UplinkConfig = field(default_factory=UplinkConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    log: LogConfig = field(default_factory=LogConfig)
    #: Directory of the config file (relative paths resolve against it).
    base_dir: str = "."

    def state_path(self, *parts: str) -> Path:
        base = Path(self.terminal.state_dir)
        if not base.is_absolute():
            base = Path(self.base_dir) / base
        return base.joinpath(*parts)

    @property
    def reader_url(self) -> TransportUrl:
        return TransportUrl.parse(self.card.reader, ("sim", "pcsc"))

    @property
    def psam_url(self) -> TransportUrl:
        return TransportUrl.parse(self.card.psam, ("sim", "pcsc"))

    @property
    def printer_url(self) -> TransportUrl:
        return TransportUrl.parse(self.printer.url, ("sim", "serial", "socket"))

    @property
    def printer_device_url(self) -> str:
        """The printer URL with a relative serial path (``serial:../var/sim/printer``)
        resolved against the config file's directory."""
        u = self.printer_url
        if u.scheme != "serial" or u.target.startswith("/"):
            return self.printer.url
        path = (Path(self.base_dir) / u.target).resolve()
        query = self.printer.url.split("?", 1)[1] if "?" in self.printer.url else ""
        return f"serial://{path}" + (f"?{query}" if query else "")

    @property
    def broker_url(self) -> TransportUrl:
        return TransportUrl.parse(self.uplink.broker, ("sim", "mqtt", "mqtts"))


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ConfigIssue:
    key: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.key}: {self.message}"


class ConfigErrors(ConfigError):
    """One or more configuration errors; ``issues`` lists every one with its key and line."""

    def __init__(self, issues: list[ConfigIssue], source: str = "") -> None:
        self.issues = issues
        head = f"{source}: " if source else ""
        super().__init__(head + "; ".join(str(i) for i in issues))


def _key_lines(text: str) -> dict[str, int]:
    """Map dotted keys to the line they are assigned on (tomllib keeps no positions)."""
    lines: dict[str, int] = {}
    section = ""
    header = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\-]+)\s*\]")
    assign = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*=")
    for no, line in enumerate(text.splitlines(), 1):
        if m := header.match(line):
            section = m.group(1)
            lines.setdefault(section, no)
        elif m := assign.match(line):
            key = f"{section}.{m.group(1)}" if section else m.group(1)
            lines.setdefault(key, no)
    return lines


_VALIDATORS: dict[str, typing.Callable[[Any], str | None]] = {
    "card.reader": lambda v: _url_error(v, ("sim", "pcsc")),
    "card.psam": lambda v: _url_error(v, ("sim", "pcsc")),
    "card.apdu_timeout_s": lambda v: None if 0 < v <= 600 else "0 < seconds <= 600",
    "printer.url": lambda v: _url_error(v, ("sim", "serial", "socket")),
    "uplink.broker": lambda v: _url_error(v, ("sim", "mqtt", "mqtts")),
    "printer.print_after": lambda v: (
        None
        if all(k in TX_KINDS for k in v)
        else f"unknown kind(s): {', '.join(k for k in v if k not in TX_KINDS)}"
    ),
    "log.level": lambda v: (
        None
        if v.upper() in ("TRACE", "DEBUG", "INFO", "WARNING", "ERROR")
        else "one of TRACE, DEBUG, INFO, WARNING, ERROR"
    ),
    "terminal.id": lambda v: None if v == "" or re.fullmatch(r"\d{12}", v) else "12 digits",
    "api.tcp": lambda v: (
        None
        if v == "" or re.fullmatch(r"127\.0\.0\.1:\d{1,5}|\[::1\]:\d{1,5}|localhost:\d{1,5}", v)
        else "loopback only: 127.0.0.1:PORT"
    ),
    "api.max_frame": lambda v: None if 1024 <= v <= 16 * 1024 * 1024 else "1024..16777216",
    # 1..1024: what central may set with config_set (messages.cddl set-inflight-window)
    "uplink.inflight_window": lambda v: None if 1 <= v <= 1024 else "1..1024",
    "uplink.batch_max": lambda v: None if 1 <= v <= TX_BATCH_LIMIT else f"1..{TX_BATCH_LIMIT}",
    "uplink.backlog_rate": lambda v: None if v > 0 else "must be positive",
    "uplink.ack_timeout_s": lambda v: None if v > 0 else "must be positive",
    "uplink.authorization_timeout_s": lambda v: None if 0 < v <= 120 else "0 < seconds <= 120",
    "uplink.reconnect_min_s": lambda v: None if v > 0 else "must be positive",
    "uplink.reconnect_max_s": lambda v: None if v > 0 else "must be positive",
    "journal.retention_days": lambda v: None if v >= 1 else "at least 1",
    "uplink.central_pii_key": lambda v: (
        None
        if v == "" or re.fullmatch(r"[0-9A-Fa-f]{64}", v)
        else "central's X25519 public key, 64 hex digits (ssc-agent central pubkey: pii_key)"
    ),
}


def _url_error(value: str, allowed: tuple[str, ...]) -> str | None:
    try:
        TransportUrl.parse(value, allowed)
    except ValueError as e:
        return str(e)
    return None


def _coerce(value: Any, tp: Any) -> Any:
    """Check ``value`` against a field type; return the converted value or raise TypeError."""
    origin = typing.get_origin(tp)
    if tp is bool:
        if not isinstance(value, bool):
            raise TypeError("expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError("expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError("expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise TypeError("expected a string")
        return value
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise TypeError("expected a list of strings")
        return tuple(value)
    if origin is dict:
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise TypeError("expected a table of strings")
        return dict(value)
    raise TypeError(f"unsupported type {tp}")  # pragma: no cover - schema bug


def _env_overrides(env: typing.Mapping[str, str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        if len(parts) != 2:
            continue
        try:
            value: Any = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        out.setdefault(parts[0], {})[parts[1]] = value
    return out


def parse_config(
    text: str,
    *,
    source: str = "<config>",
    base_dir: str = ".",
    env: typing.Mapping[str, str] | None = None,
) -> AgentConfig:
    """Parse and validate config text; raises ``ConfigErrors`` listing every problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        line = getattr(e, "lineno", None)
        raise ConfigErrors([ConfigIssue("<file>", str(e), line)], source) from None
    for section, values in _env_overrides(env if env is not None else os.environ).items():
        target = data.setdefault(section, {})
        if isinstance(target, dict):
            target.update(values)
    lines = _key_lines(text)
    issues: list[ConfigIssue] = []
    hints = typing.get_type_hints(AgentConfig)
    sections: dict[str, Any] = {}
    known = {f.name for f in dataclasses.fields(AgentConfig)} - {"base_dir"}
    for name in data:
        if name not in known:
            issues.append(ConfigIssue(name, "unknown section", lines.get(name)))
    for sec in sorted(known):
        cls = hints[sec]
        raw = data.get(sec, {})
        if not isinstance(raw, dict):
            issues.append(ConfigIssue(sec, "expected a table", lines.get(sec)))
            continue
        sec_hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in raw.items():
            dotted = f"{sec}.{key}"
            if key not in names:
                issues.append(ConfigIssue(dotted, "unknown key", lines.get(dotted)))
                continue
            tp = sec_hints[key]
            if isinstance(tp, types.UnionType):  # pragma: no cover - not used yet
                tp = typing.get_args(tp)[0]
            try:
                conv = _coerce(value, tp)
            except TypeError as e:
                issues.append(ConfigIssue(dotted, str(e), lines.get(dotted)))
                continue
            check = _VALIDATORS.get(dotted)
            if check is not None and (msg := check(conv)):
                issues.append(ConfigIssue(dotted, msg, lines.get(dotted)))
                continue
            kwargs[key] = conv
        sections[sec] = cls(**kwargs)
    if issues:
        raise ConfigErrors(issues, source)
    cfg = AgentConfig(**sections, base_dir=base_dir)
    _cross_checks(cfg, lines, source)
    return cfg


def _cross_checks(cfg: AgentConfig, lines: dict[str, int], source: str) -> None:
    issues = []
    if cfg.api.tcp and not cfg.api.token_file:
        issues.append(
            ConfigIssue("api.token_file", "required when api.tcp is set", lines.get("api.tcp"))
        )
    if cfg.broker_url.scheme == "mqtts" and not (cfg.uplink.cert_file and cfg.uplink.key_file):
        issues.append(
            ConfigIssue(
                "uplink.cert_file",
                "mqtts needs a client certificate and key",
                lines.get("uplink.broker"),
            )
        )
    if issues:
        raise ConfigErrors(issues, source)


def setting_value(config: AgentConfig, key: str) -> Any:
    """The value of a dotted ``section.key`` setting (``KeyError`` if there is no such key)."""
    section, _, name = key.partition(".")
    if section not in _SECTIONS or name not in _field_names(_SECTIONS[section]):
        raise KeyError(key)
    return getattr(getattr(config, section), name)


def with_settings(
    config: AgentConfig, settings: typing.Mapping[str, Any]
) -> tuple[AgentConfig, list[ConfigIssue]]:
    """``config`` with dotted ``section.key`` settings applied, each checked exactly as the same
    key in the file is (type, then validator): central's ``config_set`` (docs/MESSAGES.md
    "Settings from central"). A setting that fails is left out and listed; the others apply."""
    issues: list[ConfigIssue] = []
    changes: dict[str, dict[str, Any]] = {}
    for key, value in settings.items():
        section, _, name = key.partition(".")
        cls = _SECTIONS.get(section)
        if cls is None or name not in _field_names(cls):
            issues.append(ConfigIssue(key, "unknown key", None))
            continue
        try:
            conv = _coerce(value, typing.get_type_hints(cls)[name])
        except TypeError as e:
            issues.append(ConfigIssue(key, str(e), None))
            continue
        check = _VALIDATORS.get(key)
        if check is not None and (msg := check(conv)):
            issues.append(ConfigIssue(key, msg, None))
            continue
        changes.setdefault(section, {})[name] = conv
    sections = {
        sec: dataclasses.replace(getattr(config, sec), **values) for sec, values in changes.items()
    }
    return dataclasses.replace(config, **sections), issues


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


_SECTIONS: dict[str, type] = {
    f.name: typing.get_type_hints(AgentConfig)[f.name]
    for f in dataclasses.fields(AgentConfig)
    if f.name != "base_dir"
}


def load_config(path: str | Path, *, env: typing.Mapping[str, str] | None = None) -> AgentConfig:
    """Load a config file; relative paths inside it resolve against its directory."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config {p}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config {p} is not UTF-8 text (byte {e.start})") from None
    return parse_config(text, source=str(p), base_dir=str(p.resolve().parent), env=env)
