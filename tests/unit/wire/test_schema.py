"""messages.cddl: the examples match it, broken messages do not, zcbor can generate C from it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import cbor2
import pytest

from agent.errors import WireError
from agent.wire import schema
from agent.wire.cbor import decode
from agent.wire.examples import examples

EXAMPLES = examples()


def _obj(ex: Any) -> Any:
    return decode(ex.cbor, max_size=1 << 20, top_tag=18 if ex.rule == "signed-command" else None)


@pytest.mark.parametrize("ex", EXAMPLES, ids=[e.title for e in EXAMPLES])
def test_every_example_matches_its_rule(ex: Any) -> None:
    schema.validate(ex.rule, _obj(ex))


def test_every_rule_has_an_example() -> None:
    assert {e.rule for e in EXAMPLES} == set(schema.RULES)


def _example(title_prefix: str) -> dict[str, Any]:
    ex = next(e for e in EXAMPLES if e.title.startswith(title_prefix))
    return dict(cbor2.loads(ex.cbor))


TX = _example("tx: lock")
LOSS = _example("tx: report_loss")
CMD = _example("command: authorize")
INVALID: list[tuple[str, str, Any]] = [
    ("tx-record", "extra key", {**TX, "name": "张三"}),
    ("tx-record", "raw ID number", {**LOSS, "ssn": "110101199003071234"}),
    ("tx-record", "missing mac", {k: v for k, v in TX.items() if k != "mac"}),
    ("tx-record", "missing reason", {k: v for k, v in TX.items() if k != "reason"}),
    ("tx-record", "short mac", {**TX, "mac": b"\x00" * 7}),
    ("tx-record", "version 2", {**TX, "v": 2}),
    ("tx-record", "unknown kind", {**TX, "kind": "format_card"}),
    ("tx-record", "outcome card_done", {**TX, "outcome": "card_done"}),
    ("tx-record", "binary tx_id", {**TX, "tx_id": b"\x00" * 16}),
    ("tx-record", "short tx_id", {**TX, "tx_id": "019b7a4e-1c00"}),
    ("tx-record", "negative created_at", {**TX, "created_at": -1}),
    ("tx-record", "terminal_id length", {**TX, "terminal_id": "4403"}),
    ("tx-record", "binary card id", {**TX, "card_id_code": b"\x00" * 16}),
    ("tx-record", "short personal_digest", {**LOSS, "personal_digest": b"\x00" * 31}),
    (
        "tx-record",
        "old field names",
        {**{k: v for k, v in TX.items() if k != "terminal_id"}, "terminal": TX["terminal_id"]},
    ),
    ("event", "unknown type", {**_example("event: blacklist_hit"), "type": "explode"}),
    ("event", "nested data", {**_example("event: blacklist_hit"), "data": {"a": {"b": 1}}}),
    (
        "event",
        "authorization_request with open data",
        {**_example("event: authorization_request"), "data": {"card": "4403****"}},
    ),
    (
        "event",
        "authorization_request for a lock",
        {
            **_example("event: authorization_request"),
            "data": {**_example("event: authorization_request")["data"], "kind": "lock"},
        },
    ),
    (
        "event",
        "authorization_request with a text request id",
        {
            **_example("event: authorization_request"),
            "data": {
                **_example("event: authorization_request")["data"],
                "request_id": "019b7a4e-1c4e-7b22-a3c4-d5e6f7081920",
            },
        },
    ),
    ("status", "online as int", {**_example("status (retained)"), "online": 1}),
    ("telemetry", "negative counter", {**_example("telemetry"), "counters": {"x": -1}}),
    ("ack", "no ranges", {**_example("ack"), "ranges": []}),
    ("ack", "range of 3", {**_example("ack"), "ranges": [[1, 2, 3]]}),
    ("command", "unknown type", {**CMD, "type": "format_disk"}),
    ("command", "body of another type", {**CMD, "type": "ping"}),
    ("command", "short id", {**CMD, "id": b"\x00"}),
    (
        "command",
        "refusal with an unknown reason",
        {
            **_example("command: authorization_refused"),
            "body": {**_example("command: authorization_refused")["body"], "reason": "because"},
        },
    ),
    ("command", "terminal any", {**CMD, "terminal": "any"}),
    (
        "command",
        "config key not allowed",
        {**CMD, "type": "config_set", "body": {"key": "terminal.id", "value": "1"}},
    ),
    (
        "command",
        "config value out of range",
        {**CMD, "type": "config_set", "body": {"key": "uplink.inflight_window", "value": 0}},
    ),
    ("api-request", "op missing", {"id": 1, "args": {}}),
    ("api-request", "negative id", {"id": -1, "op": "x", "args": {}}),
    ("api-response", "ok with error", {"id": 1, "ok": True, "error": {"code": "x", "message": ""}}),
    ("api-response", "error without code", {"id": 1, "ok": False, "error": {"message": ""}}),
    ("api-event", "no data", {"event": "x"}),
    ("signed-command", "untagged", [b"\xa1\x01\x27", {}, cbor2.dumps(CMD), b"\x00" * 64]),
    (
        "signed-command",
        "wrong alg",
        cbor2.CBORTag(18, [b"\xa1\x01\x26", {}, cbor2.dumps(CMD), b"\x00" * 64]),
    ),
    (
        "signed-command",
        "short signature",
        cbor2.CBORTag(18, [b"\xa1\x01\x27", {}, cbor2.dumps(CMD), b"\x00" * 63]),
    ),
    (
        "signed-command",
        "payload not a command",
        cbor2.CBORTag(18, [b"\xa1\x01\x27", {}, cbor2.dumps({"x": 1}), b"\x00" * 64]),
    ),
]


@pytest.mark.parametrize(("rule", "why", "obj"), INVALID, ids=[f"{r}: {w}" for r, w, _ in INVALID])
def test_invalid_messages_are_rejected_by_the_cddl(rule: str, why: str, obj: Any) -> None:
    with pytest.raises(WireError, match=r"messages\.cddl"):
        schema.validate(rule, obj)


def test_any_member_order_is_accepted() -> None:
    reordered = dict(reversed(list(TX.items())))
    schema.validate("tx-record", reordered)


def test_unknown_rule() -> None:
    with pytest.raises(KeyError):
        schema.validate("no-such-rule", {})


def test_cddl_ships_with_the_package() -> None:
    assert "tx-record = " in schema.cddl_text()


ZCBOR_SHIM = (
    "import sys, cbor2\n"
    "cbor2.CBORDecodeValueError = getattr(cbor2, 'CBORDecodeValueError', cbor2.CBORDecodeError)\n"
    "from zcbor import main\n"
    "sys.exit(main())\n"
)


def _generate_c(out: Path) -> None:
    cddl = Path(schema.__file__).with_name("messages.cddl")
    cmd = [
        sys.executable,
        "-c",
        ZCBOR_SHIM,
        "code",
        "-c",
        str(cddl),
        "-d",
        "-e",
        "-t",
        *schema.RULES,
        "--oc",
        str(out / "msgs.c"),
        "--oh",
        str(out / "msgs.h"),
        "--output-h-types",
        str(out / "msgs_types.h"),
        "--dq",
        "16",
        "--copy-sources",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=55, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


def test_zcbor_generates_c_code(tmp_path: Path) -> None:
    _generate_c(tmp_path)
    for name in ("msgs_decode.c", "msgs_encode.c", "msgs_types.h"):
        assert (tmp_path / name).stat().st_size > 1000


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_generated_c_code_compiles(tmp_path: Path) -> None:
    _generate_c(tmp_path)
    sources = [
        "msgs_decode.c",
        "msgs_encode.c",
        "zcbor_common.c",
        "zcbor_decode.c",
        "zcbor_encode.c",
    ]
    done = subprocess.run(
        ["cc", "-std=c11", "-c", "-I.", *sources],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=55,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_validation_neither_prints_nor_swallows_other_threads_output(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """zcbor prints notes when a validation fails; they must not appear, and what another
    thread prints meanwhile (a CLI's JSON, a log line) must not be lost (a process-wide
    ``redirect_stdout`` once swallowed it)."""
    import threading

    stop = threading.Event()
    written = 0

    def writer() -> None:
        nonlocal written
        while not stop.is_set():
            print(f"line {written}")
            written += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(100):
            with pytest.raises(WireError):
                schema.validate("tx-record", {**TX, "kind": "format_card"})
    finally:
        stop.set()
        t.join()
    out = capsys.readouterr().out.splitlines()
    assert out == [f"line {i}" for i in range(written)]


def test_zcbor_makes_each_result_tuple_class_once() -> None:
    """zcbor's per-map ``namedtuple()`` (an ``eval`` each) is made once per field list; a
    call it does not expect still gets a fresh class."""
    schema._translators()
    impl = schema._zcbor_module()
    first = impl.namedtuple("_", ("seq", "mac"))
    assert impl.namedtuple("_", ["seq", "mac"]) is first
    assert impl.namedtuple("_", ("seq", "kind")) is not first
    assert impl.namedtuple("_", "seq mac") is not first  # a string: passed through
    assert first(1, b"x").mac == b"x"
