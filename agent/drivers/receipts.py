"""Receipt templates for every card transaction, in Chinese with English sub-lines.

DESIGN §4 (offline policy: a queued operation's receipt says "pending upload") and §7 (receipt
printer). The input is a plain frozen ``ReceiptData`` so this module does not depend on the tx
layer; tx maps its record to it. Personal data arrives masked (``card_masked``) and is scrubbed
again here as a last line of defence (agent.privacy). The QR code carries only the transaction
reference (terminal, transaction id, sequence), never personal data.

``build_receipt`` gives the ESC/POS ``Receipt``; ``render_text`` the plain text of the very same
operations (so the two cannot drift apart).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from agent.drivers.escpos import Align, QrEc, Receipt, text_columns
from agent.errors import LocalProtocolError
from agent.privacy import scrub

#: kind → (Chinese title, English sub-line)
KIND_TITLES: Final[dict[str, tuple[str, str]]] = {
    "lock": ("社保卡应用锁定", "Card application lock"),
    "unlock": ("社保卡应用解锁", "Card application unlock"),
    "report_loss": ("社保卡挂失", "Card loss report"),
    "activate": ("社保功能激活", "Social security activation"),
    "bank_activate": ("金融功能激活", "Bank function activation"),
    "pin_change": ("修改密码", "PIN change"),
    "pin_reset": ("重置密码", "PIN reset"),
    "pin_unblock": ("密码解锁", "PIN unblock"),
    "auto_lock": ("黑名单卡自动锁定", "Auto lock (blacklisted card)"),
}

#: journal state (DESIGN §4) → (Chinese, English) result
STATE_RESULTS: Final[dict[str, tuple[str, str]]] = {
    "card_done": ("成功", "Success"),
    "sealed": ("成功", "Success"),
    "sent": ("成功", "Success"),
    "acked": ("成功", "Success"),
    "failed": ("失败", "Failed"),
    "refused": ("拒绝", "Refused"),
    "in_doubt": ("待确认", "In doubt"),
    "intent": ("处理中", "In progress"),
}

#: Columns of Font A (12 dots) on 80 mm (576 dots) and 58 mm (384 dots) paper.
COLUMNS_80MM: Final = 48
COLUMNS_58MM: Final = 32


@dataclass(frozen=True, slots=True)
class ReceiptData:
    """What a receipt shows. ``card_masked`` must already be masked (card number or ID code)."""

    kind: str
    terminal_id: str
    time: datetime
    card_masked: str
    tx_id: str
    seq: int | None
    state: str
    offline: bool
    reason: str | None = None


def qr_payload(data: ReceiptData) -> str:
    """The transaction reference in the QR code: ``SSC-TX:<terminal>:<tx id>[:<seq>]``."""
    ref = f"SSC-TX:{data.terminal_id}:{data.tx_id}"
    return ref if data.seq is None else f"{ref}:{data.seq}"


def _field(receipt: Receipt, label: str, value: str, columns: int) -> None:
    """``label ...... value`` on one line, or the value right-aligned below if it does not fit."""
    gap = columns - text_columns(label) - text_columns(value)
    receipt.align(Align.LEFT)
    if gap >= 1:
        receipt.line(label + " " * gap + value)
    else:
        receipt.line(label)
        receipt.align(Align.RIGHT).line(value)


def build_receipt(data: ReceiptData, *, columns: int = COLUMNS_80MM) -> Receipt:
    """The ESC/POS receipt for one transaction (``LocalProtocolError`` for an unknown kind)."""
    if data.kind not in KIND_TITLES:
        raise LocalProtocolError(f"no receipt template for transaction kind {data.kind!r}")
    title_cn, title_en = KIND_TITLES[data.kind]
    result_cn, result_en = STATE_RESULTS.get(data.state, ("状态 " + data.state, data.state))
    r = Receipt()
    r.align(Align.CENTER).bold().size(2, 2).line("社会保障卡").size(1, 1)
    r.line("Social Security Card").line(title_cn).bold(False).line(title_en)
    r.align(Align.LEFT).line("-" * columns)
    _field(r, "终端号 Terminal", data.terminal_id, columns)
    _field(r, "时间 Time", data.time.strftime("%Y-%m-%d %H:%M:%S"), columns)
    _field(r, "卡号 Card", scrub(data.card_masked), columns)
    _field(r, "流水号 Transaction", data.tx_id, columns)
    if data.seq is not None:
        _field(r, "序号 Sequence", str(data.seq), columns)
    r.line("-" * columns)
    r.bold()
    _field(r, "结果", result_cn, columns)
    r.bold(False)
    _field(r, "Result", result_en, columns)
    if data.reason:
        _field(r, "原因 Reason", scrub(data.reason), columns)
    if data.offline:
        r.line("-" * columns).align(Align.CENTER).bold().size(2, 2).line("待上传").size(1, 1)
        r.line("Pending upload").bold(False)
        r.line("联网后自动上传").line("Sent when the terminal is online")
    r.align(Align.CENTER).line().qr(qr_payload(data), module_size=6, ec=QrEc.M)
    r.line("扫码查询业务").line("Scan to look up this transaction")
    r.line("请妥善保管本凭条").line("Please keep this receipt")
    return r.feed(4).cut(partial=True)


def render_text(data: ReceiptData, *, columns: int = COLUMNS_80MM) -> str:
    """Plain-text rendering of the same receipt (for logs, the API and the CLI)."""
    return build_receipt(data, columns=columns).to_text(columns)
