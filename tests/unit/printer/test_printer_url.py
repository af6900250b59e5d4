"""Printer URLs (DESIGN §2: transports are chosen by URL in config)."""

from __future__ import annotations

import pytest

from agent.drivers.escpos import PrinterStatus
from agent.drivers.printer import PrinterUrl, PrintResult
from agent.errors import ConfigError


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("serial:///dev/ttyUSB0?baud=115200", PrinterUrl("/dev/ttyUSB0", 115200)),
        ("serial:///dev/ttyS1?baud=9600&rtscts=1", PrinterUrl("/dev/ttyS1", 9600, rtscts=True)),
        (
            "serial:///dev/ttyS1?xonxoff=1&confirm=0",
            PrinterUrl("/dev/ttyS1", xonxoff=True, confirm=False),
        ),
        ("/dev/ttyUSB0", PrinterUrl("/dev/ttyUSB0")),
        ("/dev/pts/3", PrinterUrl("/dev/pts/3", 115200)),
    ],
)  # fmt: skip
def test_parse(url: str, expected: PrinterUrl) -> None:
    assert PrinterUrl.parse(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "socket://printer:9100",
        "serial://dev/ttyUSB0",
        "serial://",
        "serial:///dev/ttyUSB0?baud=fast",
        "serial:///dev/ttyUSB0?baud=0",
        "serial:///dev/ttyUSB0?rtscts=yes",
        "serial:///dev/ttyUSB0?parity=E",
    ],
)
def test_bad_urls_name_the_problem(url: str) -> None:
    with pytest.raises(ConfigError):
        PrinterUrl.parse(url)


def test_print_result_to_dict() -> None:
    r = PrintResult(False, "paper_end", PrinterStatus(paper_end=True), None)
    d = r.to_dict()
    assert d["printed"] is False
    assert d["reason"] == "paper_end"
    assert d["status_after"] is None
    assert isinstance(d["status_before"], dict)
