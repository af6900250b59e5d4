"""Simulated ESC/POS receipt printer on a pseudo-terminal, rendering receipts to PNG.

DESIGN §7: "the simulated printer sits on a pseudo-terminal, decodes ESC/POS, keeps the rendered
receipts, and injects faults". The pty slave path is the device the real driver opens
(``serial:///dev/pts/N``), so the whole serial stack (pyserial, termios, the fd in the event loop)
is exercised. The device side is the sans-IO parser of ``agent.drivers.escpos``.

Behaviour modelled on a thermal printer (peer-lessons c.9, printers that lie):

- ``DLE EOT n`` is answered at once from the injected state (paper out, cover open, offline,
  near end, error) unless the printer is ``silent`` (powered off, cable pulled: no answer at all);
- printing *stops* while the paper is out, the cover is open, the printer is offline or in error:
  operations received then are kept but marked not printed, the receipt is ``interrupted``, and
  ``GS r`` (in-order status) is held back until printing resumes — as a real printer does;
- ``set_fault(after_bytes=N, paper_out=True)`` flips the state after N more bytes, e.g. the paper
  running out in the middle of a receipt;
- a cut ends a receipt: it is kept (ops, text) and rendered to ``receipt-NNNN.png`` at the paper
  width (576 dots = 80 mm, 384 dots = 58 mm at 203 dpi) with a CJK font and segno for QR codes.

Control API (``set_state``, ``set_fault``, ``receipts``) is synchronous; call it from the event
loop's thread (or before ``start``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import tty
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Final

from agent.drivers.escpos import (
    Align,
    Cut,
    Feed,
    Init,
    Line,
    NotReady,
    Op,
    Parser,
    PrinterStatus,
    Qr,
    Signal,
    StatusQuery,
    TransmitStatus,
    Unknown,
    char_columns,
    encode_paper_sensor,
    encode_status_byte,
    render_text,
)

if TYPE_CHECKING:
    from PIL import Image as PILImage
    from PIL import ImageFont

log = logging.getLogger(__name__)

#: CJK fonts tried in order (Debian packages fonts-wqy-zenhei, -microhei, noto-cjk, arphic, droid).
CJK_FONTS: Final = (
    ("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc", 1),  # face 1: "Zen Hei Mono", 12/24 dots
    ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", 1),
    ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", 0),
    ("/usr/share/fonts/truetype/arphic/uming.ttc", 0),
    ("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf", 0),
)
#: Font A: 12 x 24 dots per half-width character; default line spacing 30 dots.
CELL_W: Final = 12
CELL_H: Final = 24
LINE_GAP: Final = 6
RAW_KEEP: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class SimPrinterState:
    """Injected printer state; ``silent`` means no answer at all (power off, cable pulled)."""

    paper_out: bool = False
    cover_open: bool = False
    offline: bool = False
    near_end: bool = False
    error: bool = False
    silent: bool = False

    @property
    def status(self) -> PrinterStatus:
        """What the printer reports to ``DLE EOT`` in this state."""
        stopped = self.paper_out or self.cover_open or self.offline or self.error
        return PrinterStatus(
            online=not stopped,
            cover_open=self.cover_open,
            paper_end_stop=self.paper_out,
            error=self.error,
            unrecoverable_error=self.error,
            paper_near_end=self.near_end or self.paper_out,
            paper_end=self.paper_out,
        )

    @property
    def stopped(self) -> NotReady | None:
        """Why printing is stopped now, or None."""
        if self.silent:
            return NotReady.NO_ANSWER
        return self.status.not_ready


@dataclass(slots=True)
class SimReceipt:
    """One receipt as received: every op, which of them printed, and its PNG."""

    index: int
    ops: list[Op] = field(default_factory=list)
    printed_flags: list[bool] = field(default_factory=list)
    interrupted: NotReady | None = None
    cut: bool = False
    png: Path | None = None

    @property
    def printed(self) -> bool:
        """Whether the whole receipt printed and was cut."""
        return self.cut and self.interrupted is None

    @property
    def lines(self) -> list[Line]:
        """The text lines, in order."""
        return [op for op in self.ops if isinstance(op, Line)]

    @property
    def text(self) -> str:
        """Every line's text, one per line (no justification)."""
        return "\n".join(line.text for line in self.lines)

    @property
    def qr_payloads(self) -> list[bytes]:
        """The QR payloads, in order."""
        return [op.data for op in self.ops if isinstance(op, Qr)]

    @property
    def printed_ops(self) -> list[Op]:
        """The ops that actually came out of the printer."""
        return [op for op, ok in zip(self.ops, self.printed_flags, strict=True) if ok]

    def to_text(self, columns: int = 48) -> str:
        """Plain-text rendering of the printed ops."""
        return render_text(self.printed_ops, columns)


class SimPrinter:
    """A printer on a pty: ``await start()``, open ``device_path`` with the driver, ``stop()``."""

    def __init__(
        self,
        output_dir: Path | str | None = None,
        *,
        dots: int = 576,
        render: bool = True,
        supports_transmit_status: bool = True,
    ) -> None:
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.dots = dots
        self.render = render and self.output_dir is not None
        #: False models the cheap printers that ignore ``GS r`` (the driver then cannot confirm).
        self.supports_transmit_status = supports_transmit_status
        self.state = SimPrinterState()
        self.bytes_received = 0
        self.raw = bytearray()  # everything received (the last RAW_KEEP bytes), for inspection
        self.status_queries = 0
        self.sent = bytearray()  # every answer byte sent (also when not started), for inspection
        self.unknown_ops: list[Unknown] = []
        self._receipts: list[SimReceipt] = []
        self._current = SimReceipt(0)
        self._parser = Parser()
        self._fault_after: int | None = None
        self._fault_state: SimPrinterState | None = None
        self._held_transmit: list[int] = []
        self._out = bytearray()
        self._master = -1
        self._slave = -1
        self._path = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()
        self._renderer: _Renderer | None = None
        # One rendering thread: the loop keeps answering status queries while a PNG is drawn
        # (a slow render must not look like a silent printer), and FreeType is not shared.
        self._render_pool: ThreadPoolExecutor | None = None
        self._renders: set[asyncio.Future[None]] = set()

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def device_path(self) -> str:
        """The pty slave path (``/dev/pts/N``): the driver's device."""
        if not self._path:
            raise RuntimeError("SimPrinter is not started")
        return self._path

    @property
    def url(self) -> str:
        """``serial://`` URL of the device, as the agent's config would name it."""
        return f"serial://{self.device_path}"

    async def start(self) -> None:
        """Create the pty and start answering (the slave stays open here so reads never hit EIO)."""
        if self._master >= 0:
            return
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # binary clean: no echo, no CR/LF translation, no signals
        os.set_blocking(self._master, False)
        self._path = os.ttyname(self._slave)
        if self.output_dir is not None:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._master, self._on_readable)
        log.info("simulated printer on %s", self._path)

    async def stop(self) -> None:
        """Stop answering, keep an unfinished receipt (not cut), close the pty."""
        if self._master < 0:
            return
        if self._loop is not None:
            self._loop.remove_reader(self._master)
            self._loop.remove_writer(self._master)
        if any(isinstance(op, Line | Qr) for op in self._current.ops):
            self._finish_receipt()
        await self.wait_rendered()
        if self._render_pool is not None:
            self._render_pool.shutdown(wait=True)
            self._render_pool = None
        os.close(self._master)
        os.close(self._slave)
        self._master = self._slave = -1

    async def __aenter__(self) -> SimPrinter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- control API (synchronous) -------------------------------------------------------------
    @property
    def receipts(self) -> list[SimReceipt]:
        """Every finished (cut) receipt so far."""
        return list(self._receipts)

    def set_state(self, **flags: bool) -> None:
        """Change the state now, e.g. ``set_state(paper_out=True)``; resuming answers held GS r."""
        self.state = replace(self.state, **flags)
        self._maybe_resume()

    def set_fault(self, after_bytes: int, **flags: bool) -> None:
        """Apply ``flags`` after ``after_bytes`` more bytes arrive (0: before the next byte)."""
        if after_bytes < 0:
            raise ValueError("after_bytes must be >= 0")
        known = {f.name for f in fields(SimPrinterState)}
        if not flags or set(flags) - known:
            raise ValueError(f"fault flags must be among {sorted(known)}")
        self._fault_after = after_bytes
        self._fault_state = replace(self.state, **flags)

    def clear_fault(self) -> None:
        """Cancel a pending fault."""
        self._fault_after = None
        self._fault_state = None

    async def wait_receipts(self, count: int, within: float = 5.0) -> list[SimReceipt]:
        """Wait until ``count`` receipts are finished and rendered (TimeoutError otherwise)."""
        async with asyncio.timeout(within):
            while len(self._receipts) < count:
                self._changed.clear()
                await self._changed.wait()
            await self.wait_rendered()
        return self.receipts

    async def wait_rendered(self) -> None:
        """Wait for the PNGs being drawn."""
        while self._renders:
            await asyncio.wait(set(self._renders))

    # -- device side ---------------------------------------------------------------------------
    def _on_readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO cannot happen while we hold the slave; be safe anyway
            log.warning("simulated printer read failed: %s", exc)
            return
        self.receive(data)

    def receive(self, data: bytes) -> None:
        """Process bytes as if they came down the cable (public for in-memory use and tests)."""
        while data:
            if self._fault_after is None:
                chunk, data = data, b""
            else:
                chunk, data = data[: self._fault_after], data[self._fault_after :]
                self._fault_after -= len(chunk)
            self.bytes_received += len(chunk)
            self.raw += chunk
            if len(self.raw) > RAW_KEEP:
                del self.raw[: len(self.raw) - RAW_KEEP]
            self._process(chunk)
            if self._fault_after == 0 and self._fault_state is not None:
                log.info("simulated printer fault after the byte count: %s", self._fault_state)
                self.state, self._fault_after, self._fault_state = self._fault_state, None, None
                self._maybe_resume()

    def _process(self, chunk: bytes) -> None:
        if chunk:
            self._parser.receive_data(chunk)
        while not isinstance(op := self._parser.next_event(), Signal):
            self._handle(op)

    def _handle(self, op: Op) -> None:
        match op:
            case StatusQuery(n=n):
                self.status_queries += 1
                if not self.state.silent:
                    self._send(bytes((encode_status_byte(n, self.state.status),)))
            case TransmitStatus(n=n):
                if not self.supports_transmit_status:
                    pass
                elif self.state.stopped is None:
                    self._answer_transmit(n)
                elif not self.state.silent:
                    self._held_transmit.append(n)  # answered when printing resumes
            case _:
                if isinstance(op, Unknown):
                    self.unknown_ops.append(op)
                stopped = self.state.stopped
                self._current.ops.append(op)
                self._current.printed_flags.append(stopped is None)
                if stopped is not None and not isinstance(op, Init | Unknown):
                    self._current.interrupted = self._current.interrupted or stopped
                if isinstance(op, Cut):
                    self._current.cut = True
                    self._finish_receipt()

    def _answer_transmit(self, n: int) -> None:
        value = encode_paper_sensor(self.state.near_end, self.state.paper_out) if n == 1 else 0
        self._send(bytes((value,)))

    def _maybe_resume(self) -> None:
        if self.state.stopped is None and self._held_transmit:
            held, self._held_transmit = self._held_transmit, []
            for n in held:
                self._answer_transmit(n)

    def _finish_receipt(self) -> None:
        receipt, self._current = self._current, SimReceipt(len(self._receipts) + 1)
        if self.render and self.output_dir is not None and self._loop is not None:
            if self._render_pool is None:
                self._render_pool = ThreadPoolExecutor(1, thread_name_prefix="sim-printer-png")
            path = self.output_dir / f"receipt-{receipt.index:04d}.png"
            job = self._loop.run_in_executor(
                self._render_pool, self._render, list(receipt.printed_ops), path
            )
            self._renders.add(job)
            job.add_done_callback(functools.partial(self._rendered, receipt=receipt, path=path))
        self._receipts.append(receipt)
        self._changed.set()

    def _render(self, ops: list[Op], path: Path) -> None:
        if self._renderer is None:
            self._renderer = _Renderer(self.dots)
        self._renderer.render(ops).save(path)

    def _rendered(self, job: asyncio.Future[None], receipt: SimReceipt, path: Path) -> None:
        self._renders.discard(job)
        if job.cancelled():
            return
        if (exc := job.exception()) is not None:
            log.error("rendering %s failed: %s", path.name, exc)
            return
        receipt.png = path

    def _send(self, data: bytes) -> None:
        self.sent += data
        if len(self.sent) > RAW_KEEP:
            del self.sent[: len(self.sent) - RAW_KEEP]
        if self._master < 0:
            return
        self._out += data
        self._flush_out()

    def _flush_out(self) -> None:
        try:
            while self._out:
                del self._out[: os.write(self._master, self._out)]
        except BlockingIOError:
            if self._loop is not None:
                self._loop.add_writer(self._master, self._flush_out)
            return
        except OSError as exc:
            log.warning("simulated printer write failed: %s", exc)
            self._out.clear()
        if self._loop is not None:
            self._loop.remove_writer(self._master)


# ---------------------------------------------------------------------------------------------
# PNG rendering (Pillow + segno, imported lazily: they are the "render" extra)
# ---------------------------------------------------------------------------------------------
def find_cjk_font() -> tuple[str, int] | None:
    """The first installed CJK font (path, face index), or None."""
    for path, index in CJK_FONTS:
        if Path(path).is_file():
            return path, index
    return None


class _Renderer:
    """Lays out printed ops on a ``dots``-wide 1-colour paper, like the print head would."""

    def __init__(self, dots: int) -> None:
        from PIL import ImageFont

        self.dots = dots
        self.y_offset = 0
        found = find_cjk_font()
        self.font: ImageFont.FreeTypeFont | ImageFont.ImageFont
        if found is None:
            log.warning("no CJK font installed (fonts-wqy-zenhei): Chinese renders as boxes")
            self.font = ImageFont.load_default(size=CELL_H - 4)
            return
        # The largest size whose ascenders and descenders fit the 24-dot cell, like a print head.
        for size in range(CELL_H, 12, -1):
            font = ImageFont.truetype(found[0], size, index=found[1])
            _, top, _, bottom = font.getbbox("社国gjpqy|", anchor="la")
            if bottom - top <= CELL_H - 1:
                break
        self.font, self.y_offset = font, -int(top)

    def render(self, ops: Sequence[Op]) -> PILImage.Image:
        """The receipt image (mode "L", black on white), ending with a cut mark."""
        from PIL import Image

        blocks: list[tuple[PILImage.Image | None, Align, int]] = [(None, Align.LEFT, 8)]
        for op in ops:
            match op:
                case Line():
                    for row in self._line_rows(op):
                        blocks.append((row, op.align, 0))
                case Qr():
                    blocks.append((self._qr(op), op.align, 0))
                case Feed(lines=n):
                    blocks.append((None, Align.LEFT, n * (CELL_H + LINE_GAP)))
                case Cut(feed=dots):
                    blocks.append((None, Align.LEFT, dots or 0))
                case _:
                    pass
        height = sum(img.height if img is not None else gap for img, _, gap in blocks) + 12
        page = Image.new("L", (self.dots, height), 255)
        y = 0
        for img, align, gap in blocks:
            if img is None:
                y += gap
                continue
            x = {Align.LEFT: 0, Align.CENTER: (self.dots - img.width) // 2}.get(
                align, self.dots - img.width
            )
            page.paste(img, (max(0, x), y))
            y += img.height
        for x in range(0, self.dots, 16):  # the cut
            page.paste(0, (x, height - 4, x + 8, height - 2))
        return page

    def _line_rows(self, line: Line) -> list[PILImage.Image]:
        """The line split into rows that fit the paper (the printer wraps at the edge)."""
        from PIL import Image, ImageDraw

        rows: list[list[tuple[str, int, int, bool]]] = [[]]
        x = 0
        for run in line.runs:
            for ch in run.text:
                w = char_columns(ch) * CELL_W * run.width
                if x + w > self.dots and rows[-1]:
                    rows.append([])
                    x = 0
                rows[-1].append((ch, w, run.height, run.bold))
                x += w
        out = []
        for cells in rows:
            row_h = max((CELL_H * h for _, _, h, _ in cells), default=CELL_H) + LINE_GAP
            img = Image.new("L", (max(1, sum(w for _, w, _, _ in cells)), row_h), 255)
            x = 0
            for ch, w, h, bold in cells:
                glyph = Image.new("L", (char_columns(ch) * CELL_W, CELL_H), 255)
                draw = ImageDraw.Draw(glyph)
                gx = max(0, int(glyph.width - self.font.getlength(ch)) // 2)
                draw.text((gx, self.y_offset), ch, font=self.font, fill=0, anchor="la")
                if bold:  # emphasis: the head strikes each dot row twice, one dot apart
                    draw.text((gx + 1, self.y_offset), ch, font=self.font, fill=0, anchor="la")
                if (w, CELL_H * h) != glyph.size:
                    glyph = glyph.resize((w, CELL_H * h), Image.Resampling.NEAREST)
                img.paste(glyph, (x, row_h - LINE_GAP - CELL_H * h))
                x += w
            out.append(img)
        return out

    def _qr(self, qr: Qr) -> PILImage.Image:
        import segno
        from PIL import Image

        try:
            symbol = segno.make(qr.data, error=qr.ec.value.lower(), micro=False, boost_error=False)
        except ValueError:  # segno.DataOverflowError: more than a version-40 symbol holds
            return self._line_rows(Line((), qr.align))[0]
        rows = [bytes(0 if dark else 255 for dark in row) for row in symbol.matrix_iter(border=2)]
        img = Image.frombytes("L", (len(rows[0]), len(rows)), b"".join(rows))
        img = img.resize((img.width * qr.module_size,) * 2, Image.Resampling.NEAREST)
        if img.width > self.dots:
            img = img.crop((0, 0, self.dots, img.height))
        pad = Image.new("L", (img.width, img.height + CELL_H // 2), 255)
        pad.paste(img, (0, CELL_H // 4))
        return pad


def render_png(ops: Sequence[Op], path: Path | str, *, dots: int = 576) -> Path:
    """Render printed ops to a PNG (what a receipt would look like on paper)."""
    out = Path(path)
    _Renderer(dots).render(ops).save(out)
    return out
