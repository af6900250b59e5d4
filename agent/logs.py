"""Structured logs: JSON lines to stdout (journald), a TRACE level for APDUs, masking by filter.

Every handler installed by ``setup_logging`` carries ``RedactingFilter``, so a personal number
that slips into a message or an ``extra`` field is masked before it is written (developer guide:
personal data masked in logs by default). APDU traces log at TRACE (5) and are masked too.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

from agent.privacy import scrub

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

_STD_ATTRS = frozenset(
    logging.LogRecord("x", 0, "x", 0, "x", None, None).__dict__.keys() | {"message", "asctime"}
)


class RedactingFilter(logging.Filter):
    """Masks ID numbers and PANs in the message and in every extra string field."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        record.msg = scrub(msg)
        record.args = None
        for key, value in list(record.__dict__.items()):
            if key not in _STD_ATTRS and isinstance(value, str):
                setattr(record, key, scrub(value))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, and any extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = scrub(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        self.converter = time.gmtime


def setup_logging(
    level: str = "INFO", *, json_lines: bool = True, stream: TextIO | None = None
) -> None:
    """Configure the root logger once: one stream handler with the redacting filter."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root.addHandler(handler)
    set_level(level)


def set_level(level: str) -> None:
    """The root logger's level by name (``TRACE`` included); at run time too (``config_set``)."""
    lvl = TRACE if level.upper() == "TRACE" else getattr(logging, level.upper(), logging.INFO)
    logging.getLogger().setLevel(lvl)


#: ``log.trace_apdus``: card and PSAM APDUs are logged at TRACE (:func:`trace_apdu`).
_apdu_trace = False
#: Commands whose data is never logged: VERIFY, CHANGE/RESET PIN (PIN blocks), and the writes
#: (UPDATE BINARY/RECORD, APPEND RECORD), which may carry the citizen's data.
_HIDDEN_DATA_INS = frozenset({0x20, 0x24, 0x2C, 0x5E, 0xD6, 0xDC, 0xE2})
APDU_LOG = logging.getLogger("agent.apdu")


def set_apdu_trace(on: bool) -> None:
    global _apdu_trace  # noqa: PLW0603 - one process-wide switch, flipped by config
    _apdu_trace = bool(on)


def apdu_trace_on() -> bool:
    """Whether APDUs are being traced: ``log.trace_apdus`` and the log level at TRACE."""
    return _apdu_trace and APDU_LOG.isEnabledFor(TRACE)


def apdu_text(direction: str, raw: bytes) -> str:
    """What the trace shows of one APDU. A command: its header, and its data unless the
    instruction may carry a PIN or personal data. A response: its length and status word only
    (READ RECORD and READ BINARY answers hold the citizen's name and ID number)."""
    if direction == "<":
        if len(raw) < 2:
            return f"< {raw.hex().upper()} (no status word)"
        sw, n = raw[-2:].hex().upper(), len(raw) - 2
        return f"< SW {sw}" if n == 0 else f"< {n} bytes hidden, SW {sw}"
    text = raw.hex().upper()
    if len(raw) > 5 and raw[1] in _HIDDEN_DATA_INS:
        text = text[:10] + f"…({len(raw) - 5} bytes hidden)"
    return f"> {text}"


def trace_apdu(direction: str, raw: bytes) -> None:
    """Log one APDU (``>`` command, ``<`` response) at TRACE on ``agent.apdu`` when
    ``log.trace_apdus`` is on (:func:`apdu_text` says what is shown)."""
    if apdu_trace_on():
        APDU_LOG.log(TRACE, "%s", apdu_text(direction, raw))
