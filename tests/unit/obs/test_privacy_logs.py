"""Personal data never reaches a log line unmasked."""

from __future__ import annotations

import io
import json
import logging

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.logs import TRACE, setup_logging, trace_apdu
from agent.privacy import mask_card_number, mask_name, mask_pan, mask_ssn, scrub

SSN = "110101199003071234"
PAN = "6217001234567890123"


def test_masks() -> None:
    assert mask_ssn(SSN) == "110101********1234"
    assert mask_name("张三丰") == "张**"
    assert mask_name("") == ""
    assert mask_pan(PAN) == "621700*********0123"
    assert mask_card_number("X00000019") == "*****0019"


def test_scrub_free_text() -> None:
    out = scrub(f"holder {SSN} paid with {PAN}; id 11010119900307123X")
    assert SSN not in out
    assert PAN not in out
    assert "11010119900307123X" not in out
    assert "110101********1234" in out


@settings(max_examples=100)
@given(st.from_regex(r"\d{17}[\dX]", fullmatch=True), st.text(max_size=20))
def test_scrub_never_leaves_an_id(ssn: str, noise: str) -> None:
    assert ssn not in scrub(f"{noise} {ssn} {noise}")


def test_json_logs_are_masked() -> None:
    buf = io.StringIO()
    setup_logging("TRACE", json_lines=True, stream=buf)
    log = logging.getLogger("t")
    log.info("read card of %s", SSN, extra={"pan": PAN})
    trace_apdu(log, ">", bytes.fromhex("0020000003123456"))
    logging.getLogger().handlers.clear()
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert SSN not in buf.getvalue()
    assert PAN not in buf.getvalue()
    assert lines[0]["pan"] == mask_pan(PAN)
    assert lines[1]["level"] == "TRACE"
    assert "123456" not in lines[1]["msg"]
    assert TRACE == 5
