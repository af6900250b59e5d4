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
    lvl = TRACE if level.upper() == "TRACE" else getattr(logging, level.upper(), logging.INFO)
    root.setLevel(lvl)


def trace_apdu(logger: logging.Logger, direction: str, raw: bytes) -> None:
    """Log one APDU at TRACE; PIN-bearing commands (VERIFY, CHANGE/RELOAD PIN) are blanked."""
    if not logger.isEnabledFor(TRACE):
        return
    text = raw.hex().upper()
    if direction == ">" and len(raw) > 5 and raw[1] in (0x20, 0x24, 0x5E):
        text = text[:10] + "…(PIN data hidden)"
    logger.log(TRACE, "%s %s", direction, text)
