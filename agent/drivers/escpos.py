"""ESC/POS for thermal receipt printers: encoder, status decoder and incremental parser. Sans-IO.

DESIGN §7 (receipt printer: GB18030 text, QR code, cut, real-time status) and peer-lessons (c) 9
(printers that lie about success). Bytes in, values out: no asyncio, no serial, no threads; the
driver (``agent.drivers.printer``) and the simulator (``agent.sim.printer``) are the I/O shells.

Command subset (Epson ESC/POS, as implemented by the Chinese 58/80 mm kiosk printers):

- ``ESC @`` initialise; ``FS &`` / ``FS .`` enter / leave Chinese (Kanji) mode, text in GB18030;
- ``ESC a n`` justification, ``ESC E n`` emphasis, ``GS ! n`` character size, ``ESC ! n`` print
  mode (parsed only), ``LF`` print and feed one line, ``ESC d n`` print and feed n lines;
- ``GS ( k`` QR code (cn=49): fn 65 model, 67 module size, 69 error correction, 80 store, 81 print;
- ``GS V m [n]`` cut; ``DLE EOT n`` real-time status (n=1 printer, 2 offline cause, 3 error
  cause, 4 paper roll sensor); ``GS r 1`` paper sensor status, processed *in order* with the
  print data, which is why the driver uses it as a print-completion barrier.

Operations are a small document model rather than one object per command: a ``Line`` carries its
text runs with their style (emphasis, size) and its justification; a ``Qr`` carries its payload and
symbol settings. The encoder emits only the style commands needed; the parser tracks the printer's
modes and rebuilds the same operations, so ``parse(encode(ops)) == ops`` (canonical ops: no empty
runs, adjacent runs of the same style merged).

Status bytes have fixed bits that identify the command they answer (ESC/POS "identification of
send status"): ``DLE EOT`` → ``0xx1xx10``, ``GS r`` → ``0xx0xxxx``, XON ``0x11``, XOFF ``0x13``.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from enum import IntEnum, StrEnum
from typing import Final, Self

from agent.errors import LocalProtocolError, PrinterProtocolError

ESC: Final = 0x1B
GS: Final = 0x1D
FS: Final = 0x1C
DLE: Final = 0x10
EOT: Final = 0x04
LF: Final = 0x0A
CR: Final = 0x0D
XON: Final = 0x11
XOFF: Final = 0x13

#: Longest line the parser accumulates before wrapping (a printer wraps at the paper edge anyway).
MAX_LINE_CHARS: Final = 1024
#: Largest QR payload ``GS ( k`` can carry (pL pH counts cn fn m too).
MAX_QR_DATA: Final = 0xFFFF - 3


class Align(IntEnum):
    """``ESC a n`` justification."""

    LEFT = 0
    CENTER = 1
    RIGHT = 2


class QrEc(StrEnum):
    """QR error-correction level (``GS ( k`` fn 69: 48..51)."""

    L = "L"
    M = "M"
    Q = "Q"
    H = "H"


_EC_TO_BYTE: Final = {QrEc.L: 48, QrEc.M: 49, QrEc.Q: 50, QrEc.H: 51}
_BYTE_TO_EC: Final = {v: k for k, v in _EC_TO_BYTE.items()}


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise LocalProtocolError(message)


# ---------------------------------------------------------------------------------------------
# Operations
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Run:
    """A piece of text printed in one style; ``width``/``height`` are ``GS !`` multipliers 1..8."""

    text: str
    bold: bool = False
    width: int = 1
    height: int = 1

    def __post_init__(self) -> None:
        _check(1 <= self.width <= 8 and 1 <= self.height <= 8, "character size must be 1..8")

    def same_style(self, other: Run) -> bool:
        """Whether both runs print in the same style (so they can be merged)."""
        return (self.bold, self.width, self.height) == (other.bold, other.width, other.height)


@dataclass(frozen=True, slots=True)
class Init:
    """``ESC @``: modes back to defaults, print buffer cleared."""


@dataclass(frozen=True, slots=True)
class Line:
    """One printed line (ends with ``LF``): styled runs and the justification it started with."""

    runs: tuple[Run, ...] = ()
    align: Align = Align.LEFT

    @property
    def text(self) -> str:
        """The line's text without style."""
        return "".join(r.text for r in self.runs)


@dataclass(frozen=True, slots=True)
class Qr:
    """A QR symbol (``GS ( k``): payload bytes, module size in dots, error correction, model."""

    data: bytes
    module_size: int = 6
    ec: QrEc = QrEc.M
    model: int = 2
    align: Align = Align.CENTER

    def __post_init__(self) -> None:
        _check(1 <= len(self.data) <= MAX_QR_DATA, "QR data must be 1..65532 bytes")
        _check(1 <= self.module_size <= 16, "QR module size must be 1..16")
        _check(self.model in (1, 2), "QR model must be 1 or 2")


@dataclass(frozen=True, slots=True)
class Feed:
    """``ESC d n``: print the buffer and feed ``lines`` lines."""

    lines: int

    def __post_init__(self) -> None:
        _check(0 <= self.lines <= 255, "feed must be 0..255 lines")


@dataclass(frozen=True, slots=True)
class Cut:
    """``GS V``: full or partial cut, optionally after feeding ``feed`` dots (function B)."""

    partial: bool = False
    feed: int | None = None

    def __post_init__(self) -> None:
        _check(self.feed is None or 0 <= self.feed <= 255, "cut feed must be 0..255")


@dataclass(frozen=True, slots=True)
class StatusQuery:
    """``DLE EOT n``: real-time status request, n = 1..4."""

    n: int

    def __post_init__(self) -> None:
        _check(1 <= self.n <= 4, "DLE EOT n must be 1..4")


@dataclass(frozen=True, slots=True)
class TransmitStatus:
    """``GS r n``: status request processed in order with print data (1 paper, 2 drawer)."""

    n: int

    def __post_init__(self) -> None:
        _check(self.n in (1, 2), "GS r n must be 1 or 2")


@dataclass(frozen=True, slots=True)
class Unknown:
    """Bytes the parser does not model (kept verbatim, never an exception)."""

    data: bytes


Op = Init | Line | Qr | Feed | Cut | StatusQuery | TransmitStatus | Unknown


# ---------------------------------------------------------------------------------------------
# Command builders (one function per command, bytes out)
# ---------------------------------------------------------------------------------------------
def initialize() -> bytes:
    """``ESC @``."""
    return bytes((ESC, 0x40))


def kanji_on() -> bytes:
    """``FS &``: Chinese mode, multi-byte text is GB18030."""
    return bytes((FS, 0x26))


def kanji_off() -> bytes:
    """``FS .``: leave Chinese mode."""
    return bytes((FS, 0x2E))


def align(value: Align) -> bytes:
    """``ESC a n``."""
    return bytes((ESC, 0x61, int(value)))


def emphasis(on: bool) -> bytes:
    """``ESC E n``."""
    return bytes((ESC, 0x45, 1 if on else 0))


def char_size(width: int, height: int) -> bytes:
    """``GS ! n``: width and height multipliers 1..8."""
    _check(1 <= width <= 8 and 1 <= height <= 8, "character size must be 1..8")
    return bytes((GS, 0x21, ((width - 1) << 4) | (height - 1)))


def _qr_function(fn: int, params: bytes) -> bytes:
    size = len(params) + 2  # cn + fn
    return bytes((GS, 0x28, 0x6B, size & 0xFF, size >> 8, 49, fn)) + params


def qr_model(model: int) -> bytes:
    """``GS ( k`` fn 65: model 1 or 2."""
    _check(model in (1, 2), "QR model must be 1 or 2")
    return _qr_function(65, bytes((48 + model, 0)))


def qr_module_size(size: int) -> bytes:
    """``GS ( k`` fn 67: module size in dots, 1..16."""
    _check(1 <= size <= 16, "QR module size must be 1..16")
    return _qr_function(67, bytes((size,)))


def qr_error_correction(level: QrEc) -> bytes:
    """``GS ( k`` fn 69: L/M/Q/H."""
    return _qr_function(69, bytes((_EC_TO_BYTE[QrEc(level)],)))


def qr_store(data: bytes) -> bytes:
    """``GS ( k`` fn 80: store the symbol data (m = 48)."""
    _check(1 <= len(data) <= MAX_QR_DATA, "QR data must be 1..65532 bytes")
    return _qr_function(80, b"\x30" + data)


def qr_print() -> bytes:
    """``GS ( k`` fn 81: print the stored symbol."""
    return _qr_function(81, b"\x30")


def feed(lines: int) -> bytes:
    """``ESC d n``."""
    _check(0 <= lines <= 255, "feed must be 0..255 lines")
    return bytes((ESC, 0x64, lines))


def cut(partial: bool = False, feed_dots: int | None = None) -> bytes:
    """``GS V m`` (function A) or ``GS V m n`` (function B: feed then cut)."""
    if feed_dots is None:
        return bytes((GS, 0x56, 1 if partial else 0))
    _check(0 <= feed_dots <= 255, "cut feed must be 0..255")
    return bytes((GS, 0x56, 66 if partial else 65, feed_dots))


def status_query(n: int) -> bytes:
    """``DLE EOT n``: real-time status (1 printer, 2 offline cause, 3 error cause, 4 paper)."""
    _check(1 <= n <= 4, "DLE EOT n must be 1..4")
    return bytes((DLE, EOT, n))


def transmit_status(n: int = 1) -> bytes:
    """``GS r n``: in-order status (1 paper sensor)."""
    _check(n in (1, 2), "GS r n must be 1 or 2")
    return bytes((GS, 0x72, n))


def encode_text(text: str, *, kanji: bool) -> bytes:
    """Text bytes: GB18030 in Chinese mode, ASCII otherwise; control characters are refused."""
    if any(ord(c) < 0x20 for c in text):
        raise LocalProtocolError("receipt text must not contain control characters")
    try:
        return text.encode("gb18030" if kanji else "ascii")
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"text not encodable ({'GB18030' if kanji else 'ASCII'})") from exc


# ---------------------------------------------------------------------------------------------
# Encoder
# ---------------------------------------------------------------------------------------------
class Encoder:
    """Turns operations into bytes, tracking the printer's modes to emit only needed commands.

    Starts from the power-on state (left, no emphasis, 1x1, not in Chinese mode); enters Chinese
    mode (``FS &``) before the first non-ASCII text.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.align = Align.LEFT
        self.bold = False
        self.width = 1
        self.height = 1
        self.kanji = False

    def encode(self, op: Op) -> bytes:
        """The bytes of one operation."""
        out = bytearray()
        match op:
            case Init():
                self._reset()
                out += initialize()
            case Line(runs=runs, align=line_align):
                if line_align != self.align:
                    out += align(line_align)
                    self.align = line_align
                for run in runs:
                    if run.text:
                        out += self._run(run)
                out.append(LF)
            case Qr():
                if op.align != self.align:
                    out += align(op.align)
                    self.align = op.align
                out += qr_model(op.model) + qr_module_size(op.module_size)
                out += qr_error_correction(op.ec) + qr_store(op.data) + qr_print()
            case Feed(lines=n):
                out += feed(n)
            case Cut(partial=partial, feed=dots):
                out += cut(partial, dots)
            case StatusQuery(n=n):
                out += status_query(n)
            case TransmitStatus(n=n):
                out += transmit_status(n)
            case Unknown(data=data):
                out += data
        return bytes(out)

    def _run(self, run: Run) -> bytes:
        out = bytearray()
        if run.bold != self.bold:
            out += emphasis(run.bold)
            self.bold = run.bold
        if (run.width, run.height) != (self.width, self.height):
            out += char_size(run.width, run.height)
            self.width, self.height = run.width, run.height
        if not self.kanji and not run.text.isascii():
            out += kanji_on()
            self.kanji = True
        out += encode_text(run.text, kanji=self.kanji)
        return bytes(out)


def encode_ops(ops: Iterable[Op]) -> bytes:
    """Encode a sequence of operations from the power-on state."""
    enc = Encoder()
    return b"".join(enc.encode(op) for op in ops)


# ---------------------------------------------------------------------------------------------
# Receipt builder
# ---------------------------------------------------------------------------------------------
class Receipt:
    """Fluent receipt builder: ``Receipt().align(Align.CENTER).bold().line("凭条").cut()``.

    Starts with ``ESC @``; text style set by ``align``/``bold``/``size`` applies to the following
    lines.
    """

    def __init__(self) -> None:
        self._ops: list[Op] = [Init()]
        self._align = Align.LEFT
        self._bold = False
        self._size = (1, 1)

    @property
    def ops(self) -> tuple[Op, ...]:
        """The operations so far."""
        return tuple(self._ops)

    def align(self, value: Align) -> Self:
        """Justification of the following lines and QR codes."""
        self._align = Align(value)
        return self

    def bold(self, on: bool = True) -> Self:
        """Emphasis of the following text."""
        self._bold = on
        return self

    def size(self, width: int = 1, height: int = 1) -> Self:
        """Character size multipliers (1..8) of the following text."""
        _check(1 <= width <= 8 and 1 <= height <= 8, "character size must be 1..8")
        self._size = (width, height)
        return self

    def line(self, text: str = "") -> Self:
        """One line in the current style (empty text: a blank line)."""
        encode_text(text, kanji=True)  # refuse control characters now, not at print time
        runs = (Run(text, self._bold, *self._size),) if text else ()
        self._ops.append(Line(runs, self._align))
        return self

    def runs(self, *runs: Run) -> Self:
        """One line made of runs with their own style, in the current justification."""
        for r in runs:
            encode_text(r.text, kanji=True)
        self._ops.append(Line(tuple(r for r in runs if r.text), self._align))
        return self

    def qr(self, data: bytes | str, *, module_size: int = 6, ec: QrEc = QrEc.M) -> Self:
        """A QR code (model 2) in the current justification."""
        payload = data.encode("utf-8") if isinstance(data, str) else data
        self._ops.append(Qr(payload, module_size, ec, 2, self._align))
        return self

    def feed(self, lines: int) -> Self:
        """Feed ``lines`` lines."""
        self._ops.append(Feed(lines))
        return self

    def cut(self, *, partial: bool = False, feed_dots: int | None = None) -> Self:
        """Cut the paper."""
        self._ops.append(Cut(partial, feed_dots))
        return self

    def to_bytes(self) -> bytes:
        """The ESC/POS byte stream."""
        return encode_ops(self._ops)

    def to_text(self, columns: int = 48) -> str:
        """Plain-text rendering of the same operations (see ``render_text``)."""
        return render_text(self._ops, columns)


def char_columns(ch: str) -> int:
    """Columns of one character on a receipt: CJK (wide/fullwidth) takes two half-width columns."""
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def text_columns(text: str) -> int:
    """Display width of ``text`` in half-width columns."""
    return sum(char_columns(c) for c in text)


def render_text(ops: Iterable[Op], columns: int = 48) -> str:
    """Plain text of printed operations: lines justified in ``columns`` half-width columns.

    QR codes appear as ``[QR] <payload>``, a cut as a dashed line; status queries are not printed.
    """
    out: list[str] = []
    for op in ops:
        match op:
            case Line(runs=runs, align=line_align):
                text = "".join(r.text for r in runs)
                width = sum(text_columns(r.text) * r.width for r in runs)
                pad = max(0, columns - width)
                if line_align is Align.CENTER:
                    text = " " * (pad // 2) + text
                elif line_align is Align.RIGHT:
                    text = " " * pad + text
                out.append(text.rstrip())
            case Qr(data=data):
                out.append("[QR] " + data.decode("utf-8", errors="replace"))
            case Feed(lines=n):
                out.extend([""] * n)
            case Cut():
                out.append("-" * columns)
            case _:
                pass
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# Status (DLE EOT 1..4, GS r 1)
# ---------------------------------------------------------------------------------------------
class NotReady(StrEnum):
    """Why a printer cannot print (or did not print): stable codes for the journal and events."""

    NO_ANSWER = "no_answer"
    COVER_OPEN = "cover_open"
    PAPER_END = "paper_end"
    PRINTER_ERROR = "printer_error"
    OFFLINE = "offline"


@dataclass(frozen=True, slots=True)
class PrinterStatus:
    """Real-time printer status from ``DLE EOT`` 1..4 (``responding=False``: no answer)."""

    responding: bool = True
    # n=1 printer status
    online: bool = True
    drawer_pin3_high: bool = False
    waiting_online_recovery: bool = False
    feed_button_pressed: bool = False
    # n=2 offline cause
    cover_open: bool = False
    feeding_by_button: bool = False
    paper_end_stop: bool = False
    error: bool = False
    # n=3 error cause
    recoverable_error: bool = False
    cutter_error: bool = False
    unrecoverable_error: bool = False
    auto_recoverable_error: bool = False
    # n=4 paper roll sensor
    paper_near_end: bool = False
    paper_end: bool = False

    @classmethod
    def unreachable(cls) -> PrinterStatus:
        """The status of a printer that did not answer: offline (peer-lessons c.9)."""
        return cls(responding=False, online=False)

    @property
    def not_ready(self) -> NotReady | None:
        """Why printing is impossible now, or None (paper near-end alone does not stop printing)."""
        if not self.responding:
            return NotReady.NO_ANSWER
        if self.cover_open:
            return NotReady.COVER_OPEN
        if self.paper_end or self.paper_end_stop:
            return NotReady.PAPER_END
        if (
            self.error
            or self.recoverable_error
            or self.cutter_error
            or self.unrecoverable_error
            or self.auto_recoverable_error
        ):
            return NotReady.PRINTER_ERROR
        if not self.online:
            return NotReady.OFFLINE
        return None

    @property
    def ready(self) -> bool:
        """Whether the printer can print now."""
        return self.not_ready is None

    def to_dict(self) -> dict[str, bool]:
        """Flags as a JSON-able dict."""
        return {f.name: bool(getattr(self, f.name)) for f in fields(self)}


# (n, bit) -> field; a 2-bit sensor field lists both bits (either bit set means the condition).
_STATUS_BITS: Final[dict[int, dict[int, str]]] = {
    1: {2: "drawer_pin3_high", 3: "online", 5: "waiting_online_recovery", 6: "feed_button_pressed"},
    2: {2: "cover_open", 3: "feeding_by_button", 5: "paper_end_stop", 6: "error"},
    3: {
        2: "recoverable_error",
        3: "cutter_error",
        5: "unrecoverable_error",
        6: "auto_recoverable_error",
    },
    4: {2: "paper_near_end", 3: "paper_near_end", 5: "paper_end", 6: "paper_end"},
}
_INVERTED: Final = frozenset({"online"})  # bit 3 of n=1 is 1 when *offline*


def is_realtime_status(value: int) -> bool:
    """Whether a byte has the fixed bits of a ``DLE EOT`` answer (``0xx1xx10``)."""
    return (value & 0x93) == 0x12


def is_transmit_status(value: int) -> bool:
    """Whether a byte can be a ``GS r`` answer (``0xx0xxxx``; XON/XOFF never match)."""
    return (value & 0x90) == 0x00


def decode_status_byte(n: int, value: int) -> dict[str, bool]:
    """Flags carried by the answer to ``DLE EOT n``; wrong fixed bits raise PrinterProtocolError."""
    if n not in _STATUS_BITS:
        raise LocalProtocolError("DLE EOT n must be 1..4")
    if not 0 <= value <= 0xFF or not is_realtime_status(value):
        raise PrinterProtocolError(f"DLE EOT {n} answer {value:#04x} breaks the fixed bits")
    flags: dict[str, bool] = {}
    for bit, name in _STATUS_BITS[n].items():
        on = bool(value >> bit & 1)
        flags[name] = flags.get(name, False) or on
    for name in _INVERTED & flags.keys():
        flags[name] = not flags[name]
    return flags


def encode_status_byte(n: int, status: PrinterStatus) -> int:
    """The answer a printer in ``status`` gives to ``DLE EOT n`` (used by the simulator)."""
    if n not in _STATUS_BITS:
        raise LocalProtocolError("DLE EOT n must be 1..4")
    value = 0x12
    for bit, name in _STATUS_BITS[n].items():
        on = bool(getattr(status, name))
        if name in _INVERTED:
            on = not on
        if on:
            value |= 1 << bit
    return value


def decode_status(answers: Mapping[int, int]) -> PrinterStatus:
    """A PrinterStatus from the answers to ``DLE EOT`` n (a missing n means "not asked")."""
    flags: dict[str, bool] = {}
    for n, value in answers.items():
        flags.update(decode_status_byte(n, value))
    return replace(PrinterStatus(), **flags)


def decode_paper_sensor(value: int) -> tuple[bool, bool]:
    """``GS r 1`` answer → ``(near_end, paper_end)``; bits 0-1 near end, 2-3 paper end."""
    if not 0 <= value <= 0xFF or not is_transmit_status(value):
        raise PrinterProtocolError(f"GS r 1 answer {value:#04x} breaks the fixed bits")
    return bool(value & 0x03), bool(value & 0x0C)


def encode_paper_sensor(near_end: bool, paper_end: bool) -> int:
    """The ``GS r 1`` answer for a paper state."""
    return (0x03 if near_end else 0) | (0x0C if paper_end else 0)


# ---------------------------------------------------------------------------------------------
# Parser (the device side, used by the simulator)
# ---------------------------------------------------------------------------------------------
class Signal:
    """A parser signal that is not an operation (``NEED_DATA``, ``END``)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: ``next_event`` needs more bytes.
NEED_DATA: Final = Signal("NEED_DATA")
#: The stream ended (after ``receive_data(b"")``) and every operation was returned.
END: Final = Signal("END")

_CONTROL = re.compile(rb"[\x00-\x1f]")

# Commands we do not model but whose parameter length is fixed: skip them as one Unknown op so
# their parameters are not taken for text. Values: number of parameter bytes.
_ESC_FIXED: Final = {
    0x20: 1, 0x21: 1, 0x24: 2, 0x25: 1, 0x2D: 1, 0x32: 0, 0x33: 1, 0x3D: 1, 0x3F: 1, 0x47: 1,
    0x4A: 1, 0x4B: 1, 0x4D: 1, 0x52: 1, 0x54: 1, 0x55: 1, 0x56: 1, 0x5C: 2, 0x65: 1, 0x70: 3,
    0x74: 1, 0x7B: 1, 0x63: 2,
}  # fmt: skip
_GS_FIXED: Final = {
    0x42: 1, 0x48: 1, 0x49: 1, 0x4C: 2, 0x50: 2, 0x57: 2, 0x61: 1, 0x62: 1, 0x66: 1, 0x68: 1,
    0x77: 1, 0x3A: 0,
}  # fmt: skip
_FS_FIXED: Final = {0x21: 1, 0x2D: 1, 0x43: 1, 0x53: 2, 0x57: 1, 0x70: 2}


class Parser:
    """Incremental ESC/POS parser: ``receive_data(bytes)``, then ``next_event()`` until NEED_DATA.

    Tracks the printer's modes (justification, emphasis, size, Chinese mode, QR settings) and
    emits operations: a ``Line`` at each ``LF`` (or before ``ESC d``, a cut, a QR print, and at
    ``MAX_LINE_CHARS``), ``Qr`` at print, ``StatusQuery``/``TransmitStatus`` at once (the simulator
    answers them), ``Unknown`` for anything it does not model. Garbage never raises; invalid
    GB18030 decodes to U+FFFD. The only error is feeding data after the end of the stream.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._out: deque[Op] = deque()
        self._eof = False
        self._done = False
        self._skip = 0
        self._reset_modes()
        self._runs: list[Run] = []
        self._line_align: Align | None = None
        self._line_chars = 0
        self._text: list[str] = []
        self._decoder: codecs.IncrementalDecoder | None = None

    def _reset_modes(self) -> None:
        self.align = Align.LEFT
        self.bold = False
        self.width = 1
        self.height = 1
        self.kanji = False
        self.qr_model = 2
        self.qr_size = 3
        self.qr_ec = QrEc.L
        self.qr_data: bytes | None = None

    # -- public API ----------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        """Feed bytes; ``b""`` means end of stream (a partial command then becomes Unknown)."""
        if self._eof and data:
            raise LocalProtocolError("data received after the end of the stream")
        if data:
            self._buf += data
        else:
            self._eof = True

    def next_event(self) -> Op | Signal:
        """The next operation, NEED_DATA, or END after the end of the stream."""
        while not self._out:
            if not self._step():
                return END if self._done else NEED_DATA
        return self._out.popleft()

    def feed(self, data: bytes) -> list[Op]:
        """``receive_data`` then every available operation."""
        self.receive_data(data)
        ops: list[Op] = []
        while not isinstance(ev := self.next_event(), Signal):
            ops.append(ev)
        return ops

    # -- text and lines ------------------------------------------------------------------------
    def _add_text(self, chunk: bytes) -> None:
        if self._decoder is None:
            self._decoder = codecs.getincrementaldecoder("gb18030" if self.kanji else "cp437")(
                errors="replace"
            )
            if self._line_align is None:
                self._line_align = self.align
        text = self._decoder.decode(chunk)
        while self._line_chars + len(text) > MAX_LINE_CHARS:
            # wrap, as the printer does at the paper edge; the decoder keeps a partial character
            room = MAX_LINE_CHARS - self._line_chars
            self._text.append(text[:room])
            text = text[room:]
            self._push_run(final=False)
            self._emit_line()
            self._line_align = self.align
        self._text.append(text)
        self._line_chars += len(text)

    def _push_run(self, *, final: bool = True) -> None:
        if self._decoder is None:
            return
        if final:
            self._text.append(self._decoder.decode(b"", final=True))
            self._decoder = None
        text = "".join(self._text)
        self._text = []
        if not text:
            return
        run = Run(text, self.bold, self.width, self.height)
        if self._runs and self._runs[-1].same_style(run):
            run = replace(self._runs[-1], text=self._runs[-1].text + text)
            self._runs[-1] = run
        else:
            self._runs.append(run)

    def _emit_line(self) -> None:
        line_align = self._line_align if self._line_align is not None else self.align
        self._out.append(Line(tuple(self._runs), line_align))
        self._runs = []
        self._line_align = None
        self._line_chars = 0

    def _flush_pending_line(self) -> None:
        self._push_run()
        if self._runs:
            self._emit_line()

    def _drop_pending_line(self) -> None:
        self._push_run()
        self._runs = []
        self._line_align = None
        self._line_chars = 0

    # -- commands ------------------------------------------------------------------------------
    def _take(self, n: int) -> bytes:
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def _need(self, n: int) -> bool | None:
        """True if ``n`` bytes are buffered; None if not yet; at EOF the rest becomes Unknown."""
        if len(self._buf) >= n:
            return True
        if self._eof:
            self._out.append(Unknown(self._take(len(self._buf))))
            return False
        return None

    def _step(self) -> bool:
        """Parse one item; False when nothing more can be done with the buffered bytes."""
        buf = self._buf
        if self._skip:
            n = min(self._skip, len(buf))
            if not n:
                if self._eof:
                    self._skip = 0
                    return True
                return False
            del buf[:n]
            self._skip -= n
            return True
        if not buf:
            if self._eof and not self._done:
                self._flush_pending_line()
                self._done = True
                return True
            return False
        b = buf[0]
        if b >= 0x20:
            m = _CONTROL.search(buf)
            self._add_text(self._take(m.start() if m else len(buf)))
            return True
        self._push_run()  # a command ends the current text run (never inside a valid character)
        if b == LF:
            del buf[:1]
            self._emit_line()
            return True
        if b == CR:  # ignored by serial printers unless auto line feed is on
            del buf[:1]
            return True
        handler = {ESC: self._esc, GS: self._gs, FS: self._fs, DLE: self._dle}.get(b)
        if handler is None:
            self._out.append(Unknown(self._take(1)))
            return True
        ok = self._need(2)
        if ok is None:
            return False
        if ok is False:
            return True
        return handler(buf[1])

    def _fixed(self, total: int) -> bool:
        ok = self._need(total)
        if ok is None:
            return False
        if ok:
            self._out.append(Unknown(self._take(total)))
        return True

    def _esc(self, cmd: int) -> bool:
        buf = self._buf
        if cmd == 0x40:  # ESC @
            del buf[:2]
            self._drop_pending_line()  # the print buffer is cleared
            self._reset_modes()
            self._out.append(Init())
            return True
        if cmd in (0x61, 0x45, 0x21, 0x64):
            ok = self._need(3)
            if ok is None:
                return False
            if not ok:
                return True
            n = buf[2]
            if cmd == 0x61:  # ESC a n
                if n not in (0, 1, 2, 48, 49, 50):
                    self._out.append(Unknown(self._take(3)))
                    return True
                self.align = Align(n % 48)
            elif cmd == 0x45:  # ESC E n
                self.bold = bool(n & 1)
            elif cmd == 0x21:  # ESC ! n: bit 3 emphasis, bit 4 double height, bit 5 double width
                self.bold = bool(n & 0x08)
                self.height = 2 if n & 0x10 else 1
                self.width = 2 if n & 0x20 else 1
            else:  # ESC d n
                self._flush_pending_line()
                self._out.append(Feed(n))
            del buf[:3]
            return True
        if cmd in _ESC_FIXED:
            return self._fixed(2 + _ESC_FIXED[cmd])
        self._out.append(Unknown(self._take(2)))
        return True

    def _gs(self, cmd: int) -> bool:
        buf = self._buf
        if cmd in (0x21, 0x56, 0x72):
            ok = self._need(3)
            if ok is None:
                return False
            if not ok:
                return True
            n = buf[2]
            if cmd == 0x21:  # GS ! n
                if n & 0x88:
                    self._out.append(Unknown(self._take(3)))
                    return True
                self.width, self.height = (n >> 4) + 1, (n & 7) + 1
            elif cmd == 0x72:  # GS r n
                if n not in (1, 2, 49, 50):
                    self._out.append(Unknown(self._take(3)))
                    return True
                self._out.append(TransmitStatus(n % 48))
            else:  # GS V m [n]
                if n in (65, 66):
                    ok = self._need(4)
                    if ok is None:
                        return False
                    if ok:
                        self._flush_pending_line()
                        self._out.append(Cut(partial=n == 66, feed=buf[3]))
                        del buf[:4]
                    return True
                if n not in (0, 1, 48, 49):
                    self._out.append(Unknown(self._take(3)))
                    return True
                self._flush_pending_line()
                self._out.append(Cut(partial=bool(n & 1)))
            del buf[:3]
            return True
        if cmd == 0x28:  # GS ( fn pL pH ...
            ok = self._need(5)
            if ok is None:
                return False
            if not ok:
                return True
            size = buf[3] | buf[4] << 8
            ok = self._need(5 + size)
            if ok is None:
                return False
            if not ok:
                return True
            raw = self._take(5 + size)
            if raw[2] != 0x6B or not self._qr(raw[5:]):
                self._out.append(Unknown(raw))
            return True
        if cmd == 0x76:  # GS v 0 m xL xH yL yH d...: raster image, skipped
            ok = self._need(8)
            if ok is None:
                return False
            if ok:
                raw = self._take(8)
                self._skip = (raw[4] | raw[5] << 8) * (raw[6] | raw[7] << 8)
                self._out.append(Unknown(raw))
            return True
        if cmd in _GS_FIXED:
            return self._fixed(2 + _GS_FIXED[cmd])
        self._out.append(Unknown(self._take(2)))
        return True

    def _qr(self, body: bytes) -> bool:
        """Apply a ``GS ( k`` function body (cn fn params); False if it is not a valid QR one."""
        if len(body) < 3 or body[0] != 49:
            return False
        fn, params = body[1], body[2:]
        if fn == 65 and len(params) == 2 and params[0] in (49, 50):
            self.qr_model = params[0] - 48
        elif fn == 67 and len(params) == 1 and 1 <= params[0] <= 16:
            self.qr_size = params[0]
        elif fn == 69 and len(params) == 1 and params[0] in _BYTE_TO_EC:
            self.qr_ec = _BYTE_TO_EC[params[0]]
        elif fn == 80 and len(params) >= 2 and params[0] == 48:
            self.qr_data = params[1:]
        elif fn == 81 and params == b"\x30":
            if self.qr_data:
                self._flush_pending_line()
                self._out.append(
                    Qr(self.qr_data, self.qr_size, self.qr_ec, self.qr_model, self.align)
                )
        else:
            return False
        return True

    def _fs(self, cmd: int) -> bool:
        if cmd in (0x26, 0x2E):  # FS & / FS .
            del self._buf[:2]
            self.kanji = cmd == 0x26
            return True
        if cmd in _FS_FIXED:
            return self._fixed(2 + _FS_FIXED[cmd])
        self._out.append(Unknown(self._take(2)))
        return True

    def _dle(self, cmd: int) -> bool:
        if cmd == EOT:
            ok = self._need(3)
            if ok is None:
                return False
            if ok:
                raw = self._take(3)
                self._out.append(StatusQuery(raw[2]) if 1 <= raw[2] <= 4 else Unknown(raw))
            return True
        if cmd == 0x05:  # DLE ENQ n
            return self._fixed(3)
        if cmd == 0x14:  # DLE DC4 fn a b
            return self._fixed(5)
        self._out.append(Unknown(self._take(1)))  # a lone DLE: the next byte is not its parameter
        return True


def parse(data: bytes) -> list[Op]:
    """Every operation in a complete byte stream."""
    p = Parser()
    ops = p.feed(data)
    ops += p.feed(b"")
    return ops
