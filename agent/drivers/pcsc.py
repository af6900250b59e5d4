"""PC/SC card readers over pyscard's low-level ``smartcard.scard`` API (DESIGN §7).

Every blocking PC/SC call runs on a worker thread owned by the reader (one for card I/O, one
for presence monitoring, each with its own PC/SC context, because pcsc-lite serialises calls
on a context) and is awaited from asyncio; only the APDUs of a reader that has proven fast are
sent from the event loop's thread, while its I/O worker is idle (see ``INLINE_MAX_S``).
Presence is watched with ``SCardGetStatusChange`` and a long timeout, woken by ``SCardCancel``:
no polling. A missing reader is awaited on the ``\\\\?PnP?\\Notification`` pseudo-reader.

Robustness (peer lessons c.8, pyscard #27/#82/#87/#127/#153): a context that died with pcscd
(``SCARD_E_NO_SERVICE``, invalid handle, comm error) is released and re-established with
jittered backoff; the presence watcher survives a pcscd restart and reports the card as removed
meanwhile (its session is gone). ``SCardTransmit`` on a worker is bounded by a timeout. Nothing from
``smartcard`` escapes: return codes and pyscard exceptions become ``agent.errors`` at this edge
(:func:`map_exceptions`, :func:`check`).
"""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import dataclasses
import fnmatch
import functools
import logging
import queue
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Literal, TypeVar
from urllib.parse import unquote, urlsplit

from smartcard import scard

from agent.card.apdu import CommandApdu, ResponseApdu
from agent.drivers import loopcalls
from agent.errors import (
    AgentError,
    CardProtocolError,
    CardRemovedError,
    ConfigError,
    DeviceError,
    DeviceTimeoutError,
    NoCardError,
    PcscServiceError,
    ReaderBusyError,
    ReaderUnavailableError,
)
from agent.logs import apdu_trace_on, trace_apdu

log = logging.getLogger(__name__)

__all__ = [
    "PNP_NOTIFICATION",
    "CardEvent",
    "PcscCardChannel",
    "PcscReader",
    "PcscSystem",
    "check",
    "error_for",
    "map_exceptions",
    "parse_pcsc_url",
]

T = TypeVar("T")

PNP_NOTIFICATION = "\\\\?PnP?\\Notification"
WAIT_CHUNK_MS = 60_000  # one SCardGetStatusChange; woken early by SCardCancel or an event
TRANSMIT_TIMEOUT = 30.0  # a card that never answers must not hang a transaction (pyscard #127)
BACKOFF_START = 0.05
BACKOFF_MAX = 2.0

# pcsc-lite puts an event counter in the high 16 bits of dwEventState
_STATE_MASK = 0xFFFF


def _code(name: str, default: int) -> int:
    value = getattr(scard, name, default)
    return value if isinstance(value, int) else default


SCARD_S_SUCCESS = _code("SCARD_S_SUCCESS", 0)
SCARD_E_CANCELLED = _code("SCARD_E_CANCELLED", 0x80100002)
SCARD_E_INVALID_HANDLE = _code("SCARD_E_INVALID_HANDLE", 0x80100003)
SCARD_E_TIMEOUT = _code("SCARD_E_TIMEOUT", 0x8010000A)
SCARD_E_UNKNOWN_READER = _code("SCARD_E_UNKNOWN_READER", 0x80100009)
SCARD_E_SHARING_VIOLATION = _code("SCARD_E_SHARING_VIOLATION", 0x8010000B)
SCARD_E_NO_SMARTCARD = _code("SCARD_E_NO_SMARTCARD", 0x8010000C)
SCARD_E_PROTO_MISMATCH = _code("SCARD_E_PROTO_MISMATCH", 0x8010000F)
SCARD_E_NOT_TRANSACTED = _code("SCARD_E_NOT_TRANSACTED", 0x80100016)
SCARD_E_READER_UNAVAILABLE = _code("SCARD_E_READER_UNAVAILABLE", 0x80100017)
SCARD_E_NO_SERVICE = _code("SCARD_E_NO_SERVICE", 0x8010001D)
SCARD_E_SERVICE_STOPPED = _code("SCARD_E_SERVICE_STOPPED", 0x8010001E)
SCARD_E_NO_READERS_AVAILABLE = _code("SCARD_E_NO_READERS_AVAILABLE", 0x8010002E)
SCARD_F_COMM_ERROR = _code("SCARD_F_COMM_ERROR", 0x80100013)
SCARD_W_UNRESPONSIVE_CARD = _code("SCARD_W_UNRESPONSIVE_CARD", 0x80100066)
SCARD_W_UNPOWERED_CARD = _code("SCARD_W_UNPOWERED_CARD", 0x80100067)
SCARD_W_RESET_CARD = _code("SCARD_W_RESET_CARD", 0x80100068)
SCARD_W_REMOVED_CARD = _code("SCARD_W_REMOVED_CARD", 0x80100069)
SCARD_PRESENT = _code("SCARD_PRESENT", 0x0004)  # SCardStatus dwState (pcsclite.h)

# A context (or card handle) in this state is dead: release it and establish a new one.
_SERVICE_LOST = frozenset(
    {SCARD_E_NO_SERVICE, SCARD_E_SERVICE_STOPPED, SCARD_E_INVALID_HANDLE, SCARD_F_COMM_ERROR}
)


def error_for(hresult: int, what: str = "PC/SC") -> AgentError:
    """The typed agent error for a PC/SC return code (never raises)."""
    hr = hresult & 0xFFFFFFFF
    text = f"{what}: PC/SC 0x{hr:08X}"
    if hr == SCARD_W_REMOVED_CARD:
        return CardRemovedError(f"{what}: card removed")
    if hr == SCARD_W_RESET_CARD:
        return CardRemovedError(f"{what}: card reset by another application", code="card_reset")
    if hr == SCARD_E_NO_SMARTCARD:
        return NoCardError(f"{what}: no card in the reader")
    if hr in (SCARD_E_UNKNOWN_READER, SCARD_E_READER_UNAVAILABLE):
        return ReaderUnavailableError(f"{what}: reader unavailable")
    if hr in (SCARD_E_NO_READERS_AVAILABLE,) or hr in _SERVICE_LOST:
        return PcscServiceError(f"{what}: PC/SC service unavailable (0x{hr:08X})")
    if hr == SCARD_E_TIMEOUT:
        return DeviceTimeoutError(f"{what}: timed out")
    if hr == SCARD_E_SHARING_VIOLATION:
        return ReaderBusyError(f"{what}: the card is in use by another application")
    if hr in (SCARD_W_UNRESPONSIVE_CARD, SCARD_W_UNPOWERED_CARD):
        return DeviceError(f"{what}: the card does not answer", code="card_unresponsive")
    if hr == SCARD_E_PROTO_MISMATCH:
        return DeviceError(f"{what}: no common protocol with the card", code="protocol_mismatch")
    return DeviceError(text, code="pcsc_error")


def check(hresult: object, what: str = "PC/SC") -> None:
    """Raise the typed error for a non-success return code."""
    if not isinstance(hresult, int):
        raise DeviceError(f"{what}: unexpected PC/SC result {hresult!r}", code="pcsc_error")
    if hresult != SCARD_S_SUCCESS:
        raise error_for(hresult, what)


@contextlib.contextmanager
def map_exceptions(what: str = "PC/SC") -> Iterator[None]:
    """Translate whatever pyscard raises into ``agent.errors`` (DESIGN §2: nothing leaks up).

    pyscard's SWIG layer raises ``TypeError``/``ValueError``/``SystemError`` on odd input and
    its high-level layer raises ``smartcard.Exceptions.*``; none of them may escape the driver.
    """
    try:
        yield
    except AgentError:
        raise
    except _SWIG_ERRORS as exc:
        raise _swig_error(what, exc) from exc


# smartcard.Exceptions.SmartcardException derives from Exception; those we meet at the SWIG
# layer are these builtin types (AgentError is none of them)
_SWIG_ERRORS = (TypeError, ValueError, SystemError, OSError, RuntimeError)


def _swig_error(what: str, exc: BaseException) -> DeviceError:
    return DeviceError(f"{what}: {type(exc).__name__}: {exc}", code="pcsc_error")


def _is_service_lost(exc: AgentError) -> bool:
    return isinstance(exc, PcscServiceError)


class _Job:
    """One call for the worker thread. Hand-off by raw locks (``_thread`` locks, one futex
    each): a ``threading.Event`` is a Condition that allocates a lock per wait, and with an
    eagerly created future that was two thirds of the per-APDU overhead (bench/pcsc_roundtrip.py).
    """

    __slots__ = ("done", "exc", "finished", "fn", "fut", "inline", "lock", "loop", "result")

    def __init__(
        self, fn: Callable[[], Any], loop: asyncio.AbstractEventLoop, inline: bool
    ) -> None:
        self.fn = fn
        self.inline = inline
        self.loop = loop
        self.done = _thread.allocate_lock()  # held until the thread is finished with the job
        self.done.acquire()
        self.lock = _thread.allocate_lock()  # orders "finished" against parking (``fut`` set)
        self.finished = False
        #: set (under ``lock``) when the caller parks: from then the thread answers through it
        self.fut: asyncio.Future[Any] | None = None
        self.result: Any = None
        self.exc: BaseException | None = None

    def released(self) -> bool:
        """The thread has let go of this job (ran it, or skipped it)."""
        return not self.done.locked()

    def outcome(self) -> Any:
        if self.exc is not None:
            raise self.exc
        return self.result


# Calls on the loop thread for proven-fast readers (DESIGN §7, bench/pcsc_roundtrip.py). Every
# hand-off to a thread costs two wake-ups of a sleeping thread, 60-90 us on a small VM even with
# raw locks: a fifth of a vpcd APDU (~0.4 ms). So while a reader's recent APDUs (an EWMA) have
# finished within INLINE_MAX_S and its worker is idle, the next APDU is sent from the event loop's
# own thread; any slower answer raises the average and the reader's calls go back to the worker
# thread, with its deadlines and cancellation, until it is fast again. A real contact reader
# (5-50 ms per APDU) never qualifies. The price: an APDU that hangs on a fast reader blocks the
# loop until pcscd gives up on it, or until the systemd watchdog (WatchdogSec) restarts the
# agent, whose recovery resolves the operation from the card; a restarted agent starts every
# reader on its worker thread. Never while this process itself serves a device behind pcscd
# (agent.drivers.loopcalls: an in-process vpcd simulator would wait for the blocked loop).
INLINE_MAX_S = 0.002
_EWMA_ALPHA = 0.2


class _Worker:
    """A single daemon thread that runs blocking calls in order and answers on the loop.

    Daemon, so that a call stuck in a misbehaving driver cannot keep the process alive at exit
    (a ThreadPoolExecutor joins its threads at interpreter shutdown).
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self.closed = False
        #: EWMA of the inline-eligible calls' durations; starts at the bound, so a reader must
        #: prove fast on the thread before any call runs on the loop
        self.fast_s = INLINE_MAX_S
        self._last: _Job | None = None
        self._inline_since: float | None = None  # first loop-thread call since the last yield

    def _main(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                with job.lock:
                    fut = job.fut
                if fut is not None and fut.done():  # cancelled or timed out before it started
                    continue
                t0 = time.perf_counter()
                try:
                    job.result = job.fn()
                except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                    job.exc = exc
                if job.inline:
                    took = time.perf_counter() - t0
                    self.fast_s += _EWMA_ALPHA * (took - self.fast_s)
                with job.lock:
                    job.finished = True
                    fut = job.fut
                if fut is not None:
                    self._answer(job, fut)
            finally:
                job.done.release()

    @staticmethod
    def _answer(job: _Job, fut: asyncio.Future[Any]) -> None:
        # the loop may be gone (test or process ending): nobody is left to tell
        with contextlib.suppress(RuntimeError):
            job.loop.call_soon_threadsafe(_settle, fut, job.result, job.exc)

    async def run(
        self,
        fn: Callable[[], T],
        canceller: Callable[[], None] | None = None,
        *,
        deadline_s: float | None = None,
        inline: bool = False,
    ) -> T:
        """Run ``fn`` on the thread. If the caller is cancelled, ``canceller`` is called until
        the thread lets go of the job, so a blocking call is never left running (the wake-up
        signal can otherwise arrive before the call has started, and be lost).

        ``inline``: a short call (an APDU) runs on the calling (loop) thread while such calls
        have lately finished within ``INLINE_MAX_S`` and the thread is idle (see above).
        """
        if self.closed:
            raise DeviceError("PC/SC reader is closed", code="pcsc_closed")
        last = self._last
        if (
            inline
            and self.fast_s < INLINE_MAX_S
            and (last is None or last.released())
            and loopcalls.allowed()
        ):
            t0 = time.perf_counter()
            try:
                return fn()
            finally:
                t1 = time.perf_counter()
                self.fast_s += _EWMA_ALPHA * (t1 - t0 - self.fast_s)
                # a run of calls on the loop thread never suspends: let the other tasks in at
                # least every INLINE_MAX_S (an API request, the MQTT keepalive)
                if self._inline_since is None:
                    self._inline_since = t0
                elif t1 - self._inline_since >= INLINE_MAX_S:
                    self._inline_since = None
                    await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        job = _Job(fn, loop, inline)
        self._last = job  # FIFO: when the newest job is released, the thread is idle
        self._jobs.put(job)
        started = time.monotonic()
        fut: asyncio.Future[T] = loop.create_future()
        with job.lock:
            if job.finished:
                return job.outcome()  # type: ignore[no-any-return]
            job.fut = fut  # from here the thread answers through the loop
        # A bare timer on the future (not asyncio.timeout): this is the per-APDU hot path, and
        # the context manager costs a third of the thread hand-off on a small machine.
        timer = (
            None
            if deadline_s is None
            else loop.call_later(deadline_s - (time.monotonic() - started), _expire, fut)
        )
        try:
            return await fut
        except asyncio.CancelledError:
            if canceller is not None:
                for _ in range(200):  # bounded: 10 s
                    if job.released():
                        break
                    canceller()
                    await asyncio.sleep(0.05)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._jobs.put(None)


def _expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


def _settle(fut: asyncio.Future[Any], result: object, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


class _Context:
    """One PC/SC context, used from its worker thread, plus ``SCardCancel`` from anywhere and
    the APDUs of a proven-fast reader from the loop thread while the worker is idle (pcsc-lite
    serialises the calls on a context; the driver never overlaps them)."""

    def __init__(self) -> None:
        self.handle: int | None = None

    def get(self) -> int:
        if self.handle is None:
            with map_exceptions("SCardEstablishContext"):
                hr, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
            check(hr, "SCardEstablishContext")
            self.handle = ctx
        return self.handle

    def release(self) -> None:
        ctx, self.handle = self.handle, None
        if ctx is not None:
            with contextlib.suppress(AgentError), map_exceptions("SCardReleaseContext"):
                scard.SCardReleaseContext(ctx)

    def cancel(self) -> None:
        """Wake a blocked ``SCardGetStatusChange`` on this context (thread-safe by design)."""
        ctx = self.handle
        if ctx is not None:
            with contextlib.suppress(AgentError), map_exceptions("SCardCancel"):
                scard.SCardCancel(ctx)

    def list_readers(self) -> list[str]:
        ctx = self.get()
        with map_exceptions("SCardListReaders"):
            hr, readers = scard.SCardListReaders(ctx, [])
        if hr == SCARD_E_NO_READERS_AVAILABLE:
            return []
        try:
            check(hr, "SCardListReaders")
        except PcscServiceError:
            self.release()
            raise
        return [str(r) for r in readers]


def _match(readers: list[str], glob: str) -> str | None:
    for name in readers:
        if fnmatch.fnmatchcase(name, glob):
            return name
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class CardEvent:
    """A card presence change on a reader."""

    kind: Literal["inserted", "removed"]
    reader: str
    atr: bytes = b""


def _raise_if_removed(hcard: int, settle: float = 1.5) -> None:
    """Raise ``CardRemovedError`` if the card under ``hcard`` is gone within ``settle`` s.

    Runs on the worker thread after a failed exchange (an error path, not a poll loop).
    """
    deadline = time.monotonic() + settle
    while True:
        with map_exceptions("SCardStatus"):
            status = scard.SCardStatus(hcard)
        hr = status[0]
        if hr in (SCARD_W_REMOVED_CARD, SCARD_E_NO_SMARTCARD):
            raise CardRemovedError("SCardTransmit: card removed")
        if hr != SCARD_S_SUCCESS:
            raise error_for(hr, "SCardStatus")
        if not status[2] & SCARD_PRESENT:
            raise CardRemovedError("SCardTransmit: card removed")
        if time.monotonic() >= deadline:
            return
        time.sleep(0.1)


class _Backoff:
    def __init__(self) -> None:
        self.delay = BACKOFF_START

    def reset(self) -> None:
        self.delay = BACKOFF_START

    def next(self) -> float:
        d = random.uniform(self.delay / 2, self.delay)  # noqa: S311 - jitter, not crypto
        self.delay = min(self.delay * 2, BACKOFF_MAX)
        return d


class PcscReader:
    """A reader chosen by name glob (``fnmatch``), resolved again whenever it reappears.

    ``wait_for_card``/``wait_for_removal``/``events`` share one presence watcher task that
    runs while someone listens. ``connect`` opens a card session on the I/O worker.
    """

    def __init__(self, glob: str, *, transmit_timeout: float = TRANSMIT_TIMEOUT) -> None:
        if not transmit_timeout > 0:
            raise ConfigError(f"APDU timeout must be positive, got {transmit_timeout!r}")
        self.glob = glob
        #: Seconds one APDU may take before the session is declared stuck (``card.apdu_timeout_s``)
        self.transmit_timeout = transmit_timeout
        self.name: str | None = None
        self._last_name: str | None = None
        self._io = _Worker(f"pcsc-io:{glob}")
        self._mon = _Worker(f"pcsc-mon:{glob}")
        self._io_ctx = _Context()
        self._mon_ctx = _Context()
        self._present = False
        self._atr = b""
        self._known = False  # the watcher has a fresh answer from pcscd
        self._cond = asyncio.Condition()
        self._subscribers: list[asyncio.Queue[CardEvent]] = []
        self._users = 0
        self._watcher: asyncio.Task[None] | None = None
        self._closed = False
        self.service_recoveries = 0  # contexts re-established after pcscd went away

    def __repr__(self) -> str:
        return f"PcscReader({self.glob!r}, name={self.name!r})"

    # ---------------------------------------------------------------- presence
    @contextlib.asynccontextmanager
    async def _listening(self) -> AsyncIterator[None]:
        if self._closed:
            raise DeviceError("PC/SC reader is closed", code="pcsc_closed")
        self._users += 1
        if self._watcher is None or self._watcher.done():
            self._known = False
            self._watcher = asyncio.create_task(self._watch(), name=f"pcsc-watch:{self.glob}")
        try:
            yield
        finally:
            self._users -= 1
            if self._users == 0:
                await self._stop_watcher()

    async def _stop_watcher(self) -> None:
        task, self._watcher = self._watcher, None
        if task is not None and not task.done():
            task.cancel()
            self._mon_ctx.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._known = False

    async def _set(self, present: bool, atr: bytes) -> None:
        async with self._cond:
            changed = present != self._present or (present and atr != self._atr)
            was_present = self._present
            self._present, self._atr, self._known = present, atr, True
            self._cond.notify_all()
        if self.name is not None:
            self._last_name = self.name
        reader = self.name or self._last_name
        if not changed or reader is None:
            return
        events = []
        if was_present and present:  # a different card since the last look
            events.append(CardEvent("removed", reader))
        events.append(CardEvent("inserted" if present else "removed", reader, atr))
        for q in self._subscribers:
            for ev in events:
                q.put_nowait(ev)

    async def _mon_call(self, fn: Callable[[], T]) -> T:
        return await self._mon.run(fn, self._mon_ctx.cancel)

    async def _watch(self) -> None:
        backoff = _Backoff()
        state = scard.SCARD_STATE_UNAWARE
        while True:
            try:
                if self.name is None:
                    readers = await self._mon_call(self._mon_ctx.list_readers)
                    self.name = _match(readers, self.glob)
                    state = scard.SCARD_STATE_UNAWARE
                    if self.name is None:
                        await self._set(False, b"")
                        await self._mon_call(functools.partial(self._wait_pnp, len(readers)))
                        continue
                name = self.name
                hr, states = await self._mon_call(
                    functools.partial(self._status_change, [(name, state)], WAIT_CHUNK_MS)
                )
                if hr in (SCARD_E_TIMEOUT, SCARD_E_CANCELLED):
                    continue
                if hr == SCARD_E_UNKNOWN_READER:
                    self.name = None
                    continue
                check(hr, "SCardGetStatusChange")
                _, event, atr = states[0]
                state = event & ~scard.SCARD_STATE_CHANGED
                flags = event & _STATE_MASK
                if flags & (scard.SCARD_STATE_UNKNOWN | scard.SCARD_STATE_UNAVAILABLE):
                    self.name = None  # the reader went away; find it again
                    await self._set(False, b"")
                    continue
                present = bool(flags & scard.SCARD_STATE_PRESENT) and not (
                    flags & scard.SCARD_STATE_MUTE
                )
                await self._set(present, bytes(atr) if present else b"")
                backoff.reset()
            except (PcscServiceError, ReaderUnavailableError) as exc:
                # pcscd went away (or restarts): the card session is lost either way
                log.info("pcsc %s: %s; re-establishing the context", self.glob, exc.message)
                self._mon_ctx.release()
                self.name = None
                state = scard.SCARD_STATE_UNAWARE
                await self._set(False, b"")
                self.service_recoveries += 1
                await asyncio.sleep(backoff.next())
            except DeviceError as exc:
                log.warning("pcsc %s: %s", self.glob, exc.message)
                await asyncio.sleep(backoff.next())

    def _status_change(
        self, states: list[tuple[str, int]], timeout_ms: int
    ) -> tuple[int, list[tuple[str, int, list[int]]]]:
        ctx = self._mon_ctx.get()
        with map_exceptions("SCardGetStatusChange"):
            hr, result = scard.SCardGetStatusChange(ctx, timeout_ms, states)
        if hr in _SERVICE_LOST:
            raise error_for(hr, "SCardGetStatusChange")
        return hr, list(result)

    def _wait_pnp(self, count: int) -> None:
        """Block until the reader list changes (or a chunk passes, or ``SCardCancel``)."""
        hr, _ = self._status_change([(PNP_NOTIFICATION, count << 16)], WAIT_CHUNK_MS)
        if hr not in (SCARD_S_SUCCESS, SCARD_E_TIMEOUT, SCARD_E_CANCELLED):
            raise error_for(hr, "SCardGetStatusChange(PnP)")

    async def wait_for_card(self, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        """Wait until a (responsive) card is present; its ATR. ``DeviceTimeoutError`` on timeout."""
        async with self._listening():
            try:
                async with asyncio.timeout(timeout), self._cond:
                    await self._cond.wait_for(lambda: self._known and self._present)
                    return self._atr
            except TimeoutError:
                raise DeviceTimeoutError(f"no card in {self.glob!r} after {timeout}s") from None

    async def wait_for_removal(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait until the reader is empty (or gone). ``DeviceTimeoutError`` on timeout."""
        async with self._listening():
            try:
                async with asyncio.timeout(timeout), self._cond:
                    await self._cond.wait_for(lambda: self._known and not self._present)
            except TimeoutError:
                raise DeviceTimeoutError(f"card still in {self.glob!r} after {timeout}s") from None

    async def events(self) -> AsyncIterator[CardEvent]:
        """Presence changes as they happen, starting with the current state if a card is in."""
        q: asyncio.Queue[CardEvent] = asyncio.Queue()
        self._subscribers.append(q)
        try:
            async with self._listening():
                while True:
                    yield await q.get()
        finally:
            self._subscribers.remove(q)

    async def card_present(self) -> bool:
        """One look at the reader (no watcher needed). False when pcscd or the reader is gone."""

        def look() -> bool:
            name = self._resolve(self._io_ctx)
            if name is None:
                return False
            hr, result = self._io_status(name)
            if hr != SCARD_S_SUCCESS:
                return False
            flags = result[0][1] & _STATE_MASK
            return bool(flags & scard.SCARD_STATE_PRESENT) and not (flags & scard.SCARD_STATE_MUTE)

        try:
            return await self._io.run(look)
        except (PcscServiceError, ReaderUnavailableError):
            self._io_ctx.release()
            return False

    def _io_status(self, name: str) -> tuple[int, list[tuple[str, int, list[int]]]]:
        ctx = self._io_ctx.get()
        with map_exceptions("SCardGetStatusChange"):
            hr, result = scard.SCardGetStatusChange(ctx, 0, [(name, scard.SCARD_STATE_UNAWARE)])
        if hr in _SERVICE_LOST:
            raise error_for(hr, "SCardGetStatusChange")
        return hr, list(result)

    def _resolve(self, ctx: _Context) -> str | None:
        name = _match(ctx.list_readers(), self.glob)
        if name is not None:
            self.name = name
        return name

    # ---------------------------------------------------------------- card sessions
    async def connect(
        self, *, exclusive: bool = True, protocols: Literal["T0", "T1", "any"] = "any"
    ) -> PcscCardChannel:
        """Open a session with the card; exclusive access unless asked otherwise.

        Raises ``NoCardError`` (empty reader), ``ReaderUnavailableError``,
        ``ReaderBusyError`` (another application holds the card), ``PcscServiceError``.
        """
        share = scard.SCARD_SHARE_EXCLUSIVE if exclusive else scard.SCARD_SHARE_SHARED
        wanted = {
            "T0": scard.SCARD_PROTOCOL_T0,
            "T1": scard.SCARD_PROTOCOL_T1,
            "any": scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1,
        }[protocols]

        def do_connect() -> tuple[int, int, str, bytes]:
            name = self._resolve(self._io_ctx)
            if name is None:
                raise ReaderUnavailableError(f"no reader matches {self.glob!r}")
            ctx = self._io_ctx.get()
            with map_exceptions("SCardConnect"):
                hr, hcard, proto = scard.SCardConnect(ctx, name, share, wanted)
            check(hr, "SCardConnect")
            with map_exceptions("SCardStatus"):
                status = scard.SCardStatus(hcard)
            hr = status[0]
            if hr != SCARD_S_SUCCESS:
                with map_exceptions("SCardDisconnect"):
                    scard.SCardDisconnect(hcard, scard.SCARD_LEAVE_CARD)
                check(hr, "SCardStatus")
            return hcard, proto, name, bytes(status[4])

        try:
            hcard, proto, name, atr = await self._io.run(do_connect)
        except PcscServiceError:
            self._io_ctx.release()  # re-established on the next call
            raise
        return PcscCardChannel(self, hcard, proto, name, atr)

    @contextlib.asynccontextmanager
    async def session(
        self, *, exclusive: bool = True, reset_on_close: bool = True
    ) -> AsyncIterator[PcscCardChannel]:
        """``connect`` + ``aclose`` as a context manager."""
        channel = await self.connect(exclusive=exclusive)
        try:
            yield channel
        finally:
            await channel.aclose(reset=reset_on_close)

    async def aclose(self) -> None:
        """Stop the watcher, release both contexts and the worker threads."""
        if self._closed:
            return
        self._closed = True
        await self._stop_watcher()
        with contextlib.suppress(DeviceError):
            await self._mon.run(self._mon_ctx.release)
        with contextlib.suppress(DeviceError):
            await self._io.run(self._io_ctx.release)
        self._mon.close()
        self._io.close()

    async def __aenter__(self) -> PcscReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class PcscCardChannel:
    """A card session on a PC/SC reader; implements ``agent.card.apdu.CardChannel``.

    ``atr`` and ``protocol`` ("T=0" or "T=1", negotiated by pcscd from the ATR) are fixed at
    connect. After the card is pulled every call raises ``CardRemovedError``.
    """

    def __init__(self, reader: PcscReader, hcard: int, proto: int, name: str, atr: bytes) -> None:
        self.reader = reader
        self.reader_name = name
        self.atr = atr
        self._hcard: int | None = hcard
        self._proto = proto
        self._in_transaction = False
        self.transmit_timeout = reader.transmit_timeout

    @property
    def protocol(self) -> str:
        return "T=0" if self._proto == scard.SCARD_PROTOCOL_T0 else "T=1"

    @property
    def closed(self) -> bool:
        return self._hcard is None

    def _handle(self) -> int:
        if self._hcard is None:
            raise DeviceError("card session is closed", code="pcsc_closed")
        return self._hcard

    async def transmit(self, command: CommandApdu) -> ResponseApdu:
        """Send one APDU; the raw response (T=0 61xx/6Cxx is handled above this port)."""
        hcard = self._handle()
        cmd = command.to_bytes()
        raw = list(cmd)
        proto = self._proto
        tracing = apdu_trace_on()
        if tracing:
            trace_apdu(">", cmd)

        def do_transmit() -> bytes:
            # map_exceptions spelled out: a generator context manager costs more than the rest
            # of this function (bench/pcsc_roundtrip.py)
            try:
                hr, response = scard.SCardTransmit(hcard, proto, raw)
            except _SWIG_ERRORS as exc:
                raise _swig_error("SCardTransmit", exc) from exc
            if hr == SCARD_E_NOT_TRANSACTED:
                # the reader driver failed the exchange; usually the card just left and
                # pcscd has not polled yet (vpcd: < 0.5 s). Tell removal from a mute card.
                _raise_if_removed(hcard)
            check(hr, "SCardTransmit")
            if len(response) < 2:
                # a card torn out mid-exchange can leave the driver "successful" with a
                # truncated answer: report the removal, not a protocol error, when it is one
                _raise_if_removed(hcard)
            return bytes(response)

        try:
            data = await self.reader._io.run(
                do_transmit, deadline_s=self.transmit_timeout, inline=True
            )
        except TimeoutError:
            # the worker may stay stuck in the driver; this session is unusable
            self._hcard = None
            raise DeviceTimeoutError(
                f"card did not answer within {self.transmit_timeout}s"
            ) from None
        except PcscServiceError:
            self._hcard = None
            self.reader._io_ctx.release()
            raise
        except CardRemovedError:
            await self._drop()
            raise
        if tracing:
            trace_apdu("<", data)
        if len(data) < 2:
            raise CardProtocolError(f"response APDU too short: {len(data)} bytes")
        return ResponseApdu.from_bytes(data)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[PcscCardChannel]:
        """Hold the card exclusively for a multi-APDU sequence (``SCardBeginTransaction``)."""
        hcard = self._handle()

        def begin() -> None:
            with map_exceptions("SCardBeginTransaction"):
                check(scard.SCardBeginTransaction(hcard), "SCardBeginTransaction")

        def end() -> None:
            with map_exceptions("SCardEndTransaction"):
                hr = scard.SCardEndTransaction(hcard, scard.SCARD_LEAVE_CARD)
            # the card may have gone mid-transaction: that was reported by transmit already
            if hr not in (SCARD_S_SUCCESS, SCARD_W_REMOVED_CARD, SCARD_E_NOT_TRANSACTED):
                check(hr, "SCardEndTransaction")

        await self.reader._io.run(begin)
        self._in_transaction = True
        try:
            yield self
        finally:
            self._in_transaction = False
            if self._hcard is not None:
                with contextlib.suppress(CardRemovedError, NoCardError, PcscServiceError):
                    await self.reader._io.run(end)

    async def reconnect(self, *, reset: bool = True) -> bytes:
        """Warm-reset (or just re-open) the session; the new ATR."""
        hcard = self._handle()
        init = scard.SCARD_RESET_CARD if reset else scard.SCARD_LEAVE_CARD

        def do() -> tuple[int, bytes]:
            with map_exceptions("SCardReconnect"):
                hr, proto = scard.SCardReconnect(
                    hcard,
                    scard.SCARD_SHARE_EXCLUSIVE,
                    scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1,
                    init,
                )
            check(hr, "SCardReconnect")
            with map_exceptions("SCardStatus"):
                status = scard.SCardStatus(hcard)
            check(status[0], "SCardStatus")
            return proto, bytes(status[4])

        self._proto, self.atr = await self.reader._io.run(do)
        return self.atr

    async def _drop(self) -> None:
        hcard, self._hcard = self._hcard, None
        if hcard is None:
            return

        def do() -> None:
            with map_exceptions("SCardDisconnect"):
                scard.SCardDisconnect(hcard, scard.SCARD_LEAVE_CARD)

        with contextlib.suppress(DeviceError):
            await self.reader._io.run(do)

    async def aclose(self, *, reset: bool = True) -> None:
        """End the session; by default the card is reset so no verified PIN outlives it."""
        hcard, self._hcard = self._hcard, None
        if hcard is None:
            return
        disposition = scard.SCARD_RESET_CARD if reset else scard.SCARD_LEAVE_CARD

        def do() -> None:
            with map_exceptions("SCardDisconnect"):
                scard.SCardDisconnect(hcard, disposition)

        with contextlib.suppress(DeviceError):
            await self.reader._io.run(do)

    async def __aenter__(self) -> PcscCardChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def parse_pcsc_url(url: str) -> str:
    """The reader glob of a ``pcsc://<glob>`` URL (DESIGN §2); percent-escapes are decoded.

    ``pcsc://`` alone (or ``pcsc://*``) means the first reader.
    """
    parts = urlsplit(url)
    if parts.scheme != "pcsc":
        raise ConfigError(f"not a pcsc:// URL: {url!r}")
    glob = unquote(url[len("pcsc://") :].split("?", 1)[0].split("#", 1)[0])
    return glob or "*"


class PcscSystem:
    """Entry point: list readers, find one by glob, open one from a ``pcsc://`` URL."""

    def __init__(self) -> None:
        self._worker = _Worker("pcsc-system")
        self._ctx = _Context()
        self._readers: list[PcscReader] = []

    async def list_readers(self) -> list[str]:
        """Reader names; raises ``PcscServiceError`` when pcscd is not reachable."""
        try:
            return await self._worker.run(self._ctx.list_readers)
        except PcscServiceError:
            await self._worker.run(self._ctx.release)
            raise

    async def find(self, glob: str) -> str:
        """The first reader name that matches ``glob``; ``ReaderUnavailableError`` if none."""
        name = _match(await self.list_readers(), glob)
        if name is None:
            raise ReaderUnavailableError(f"no reader matches {glob!r}")
        return name

    def reader(self, glob: str) -> PcscReader:
        """A reader handle for ``glob`` (resolved lazily, so the reader may appear later)."""
        r = PcscReader(glob)
        self._readers.append(r)
        return r

    def open_url(self, url: str) -> PcscReader:
        return self.reader(parse_pcsc_url(url))

    async def aclose(self) -> None:
        for r in self._readers:
            await r.aclose()
        self._readers.clear()
        with contextlib.suppress(DeviceError):
            await self._worker.run(self._ctx.release)
        self._worker.close()

    async def __aenter__(self) -> PcscSystem:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
