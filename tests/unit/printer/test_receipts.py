"""Receipt templates: every transaction kind, bilingual text, offline notice, no personal data."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import pytest

from agent.drivers.escpos import Line, Qr, Run, parse, text_columns
from agent.drivers.receipts import (
    COLUMNS_58MM,
    KIND_TITLES,
    ReceiptData,
    build_receipt,
    qr_payload,
    render_text,
)
from agent.errors import LocalProtocolError

from .strategies import normalize

KINDS = [
    "lock",
    "unlock",
    "report_loss",
    "activate",
    "bank_activate",
    "pin_change",
    "pin_reset",
    "pin_unblock",
    "auto_lock",
]
DATA = ReceiptData(
    kind="lock",
    terminal_id="T440300001",
    time=datetime(2025, 3, 4, 10, 11, 12),
    card_masked="*****1234",
    tx_id="01J9ZX3F7Q2V8K4M6N0P1R2S3T",
    seq=42,
    state="sealed",
    offline=False,
)


def test_every_kind_has_a_template() -> None:
    assert sorted(KIND_TITLES) == sorted(KINDS)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("offline", [False, True])
def test_receipt_content(kind: str, offline: bool) -> None:
    data = replace(DATA, kind=kind, offline=offline)
    text = render_text(data)
    title_cn, title_en = KIND_TITLES[kind]
    for expected in (
        title_cn,
        title_en,
        "T440300001",
        "2025-03-04 10:11:12",
        "*****1234",
        "01J9ZX3F7Q2V8K4M6N0P1R2S3T",
        "42",
        "成功",
        "Success",
        "[QR] SSC-TX:T440300001:01J9ZX3F7Q2V8K4M6N0P1R2S3T:42",
    ):
        assert expected in text
    assert ("待上传" in text) is offline
    assert ("Pending upload" in text) is offline


@pytest.mark.parametrize("kind", KINDS)
def test_bytes_parse_back_to_the_same_receipt(kind: str) -> None:
    receipt = build_receipt(replace(DATA, kind=kind, offline=True, reason="pin_blocked"))
    raw = receipt.to_bytes()
    assert "社会保障卡".encode("gb18030") in raw
    assert parse(raw) == [normalize(op) for op in receipt.ops]


@pytest.mark.parametrize(
    ("state", "cn", "en"),
    [
        ("card_done", "成功", "Success"),
        ("acked", "成功", "Success"),
        ("failed", "失败", "Failed"),
        ("refused", "拒绝", "Refused"),
        ("in_doubt", "待确认", "In doubt"),
        ("weird", "状态 weird", "weird"),
    ],
)
def test_result_line(state: str, cn: str, en: str) -> None:
    lines = [ln.strip() for ln in render_text(replace(DATA, state=state)).splitlines()]
    assert any(ln.startswith("结果") and ln.endswith(cn) for ln in lines)
    assert any(ln.startswith("Result") and ln.endswith(en) for ln in lines)


def test_reason_is_printed() -> None:
    assert "pin_blocked" in render_text(replace(DATA, state="failed", reason="pin_blocked"))


def test_no_seq() -> None:
    data = replace(DATA, seq=None)
    assert qr_payload(data) == "SSC-TX:T440300001:01J9ZX3F7Q2V8K4M6N0P1R2S3T"
    assert "序号" not in render_text(data)


def test_unmasked_personal_data_is_scrubbed() -> None:
    leaky = replace(DATA, card_masked="110101199003071234", reason="PAN 6217001234567890123")
    text = render_text(leaky)
    assert "110101199003071234" not in text
    assert "6217001234567890123" not in text
    assert "110101********1234" in text


def test_qr_carries_no_personal_data() -> None:
    qrs = [op for op in build_receipt(DATA).ops if isinstance(op, Qr)]
    assert [q.data for q in qrs] == [qr_payload(DATA).encode()]
    assert b"1234" not in qrs[0].data


def test_unknown_kind_refused() -> None:
    with pytest.raises(LocalProtocolError):
        build_receipt(replace(DATA, kind="withdraw"))


def test_control_characters_in_fields_refused() -> None:
    with pytest.raises(LocalProtocolError):
        build_receipt(replace(DATA, terminal_id="T1\x1b@"))


@pytest.mark.parametrize("columns", [COLUMNS_58MM, 48])
def test_lines_fit_the_paper(columns: int) -> None:
    data = replace(DATA, kind="auto_lock", offline=True, reason="blacklisted")
    for op in build_receipt(data, columns=columns).ops:
        if isinstance(op, Line):
            width = sum(text_columns(r.text) * r.width for r in op.runs)
            assert width <= columns, op.text


def test_titles_are_bold_and_big() -> None:
    first = next(op for op in build_receipt(DATA).ops if isinstance(op, Line))
    assert first.runs == (Run("社会保障卡", bold=True, width=2, height=2),)
