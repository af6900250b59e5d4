"""Personal data never reaches a log line unmasked."""

from __future__ import annotations

import io
import json
import logging

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.logs import TRACE, apdu_text, set_apdu_trace, setup_logging, trace_apdu
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
    set_apdu_trace(True)
    try:
        trace_apdu(">", bytes.fromhex("0020000003123456"))
    finally:
        set_apdu_trace(False)
    logging.getLogger().handlers.clear()
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert SSN not in buf.getvalue()
    assert PAN not in buf.getvalue()
    assert lines[0]["pan"] == mask_pan(PAN)
    assert lines[1]["level"] == "TRACE"
    assert "123456" not in lines[1]["msg"]
    assert TRACE == 5


def _trace_lines(level: str, on: bool, apdus: list[tuple[str, bytes]]) -> list[str]:
    buf = io.StringIO()
    setup_logging(level, json_lines=True, stream=buf)
    set_apdu_trace(on)
    try:
        for direction, raw in apdus:
            trace_apdu(direction, raw)
    finally:
        set_apdu_trace(False)
        logging.getLogger().handlers.clear()
        logging.getLogger().setLevel(logging.WARNING)
    return [json.loads(x)["msg"] for x in buf.getvalue().splitlines()]


SELECT = bytes.fromhex("00A404000F7378312E73682EC9E7BBE1B1A3D5CF")
#: a READ RECORD answer holding an ID number (ASCII digits) and a name (GBK)
RECORD = bytes.fromhex("0712") + SSN.encode() + "张三".encode("gbk") + bytes.fromhex("9000")


def test_apdu_trace_shows_headers_and_status_words_only() -> None:
    lines = _trace_lines("TRACE", True, [(">", SELECT), ("<", RECORD), ("<", b"\x6a\x82")])
    assert lines == [
        "> " + SELECT.hex().upper(),  # a SELECT by name is shown whole
        f"< {len(RECORD) - 2} bytes hidden, SW 9000",
        "< SW 6A82",
    ]


def test_apdu_trace_is_off_unless_asked_and_at_trace_level() -> None:
    assert _trace_lines("TRACE", False, [(">", SELECT)]) == []
    assert _trace_lines("DEBUG", True, [(">", SELECT)]) == []


@settings(max_examples=200)
@given(
    st.sampled_from([0x20, 0x24, 0x2C, 0x5E, 0xD6, 0xDC, 0xE2]),
    st.binary(min_size=1, max_size=64),
    st.binary(min_size=0, max_size=64),
)
def test_apdu_trace_never_shows_pin_or_written_data(ins: int, data: bytes, resp: bytes) -> None:
    cmd = bytes([0x80, ins, 0x00, 0x00, len(data)]) + data
    shown = apdu_text(">", cmd)
    assert shown == f"> {cmd[:5].hex().upper()}…({len(data)} bytes hidden)"
    answer = apdu_text("<", resp + b"\x90\x00")
    assert answer == (f"< {len(resp)} bytes hidden, SW 9000" if resp else "< SW 9000")


async def test_the_simulated_reader_traces_what_it_exchanges() -> None:
    """``SimChannel`` (and ``PcscCardChannel``, the same two calls) logs each exchange."""
    from agent.profile import load_profile
    from agent.psam import client
    from agent.sim.channel import SimChannel
    from agent.sim.psam import VirtualPsam

    buf = io.StringIO()
    setup_logging("TRACE", json_lines=True, stream=buf)
    set_apdu_trace(True)
    try:
        ch = SimChannel(VirtualPsam(load_profile("default")))  # type: ignore[arg-type]
        await client.select_mf(ch)
        number = await client.read_terminal_number(ch)
    finally:
        set_apdu_trace(False)
        logging.getLogger().handlers.clear()
        logging.getLogger().setLevel(logging.WARNING)
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert {x["logger"] for x in lines} == {"agent.apdu"}
    msgs = [x["msg"] for x in lines]
    assert msgs[0].startswith("> 00A4")  # SELECT MF, shown
    assert all(m.startswith("<") for m in msgs[1::2])
    assert all(m.startswith(">") for m in msgs[0::2])
    assert number.hex().upper() not in buf.getvalue()  # EF16's content is not in the trace
