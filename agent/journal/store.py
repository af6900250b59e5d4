"""The durable journal: SQLite in WAL mode with ``synchronous=FULL`` (DESIGN §4).

Tables (``schemas/v1.sql``, reshaped by ``v2.sql``): ``transactions`` (one row per
card-changing operation, its state following the injected transition table —
``agent.tx.machine.TABLE``), ``outbox`` (sealed records: gapless ``seq``, canonical CBOR body,
hash chain, MAC, delivery state), ``blacklist``,
``authorizations``, ``counters``, ``events`` and ``meta``.

Threading: one connection (``check_same_thread=False``) guarded by one lock; every public method
is synchronous and safe to call from any thread (async callers use ``asyncio.to_thread``, or
:meth:`Journal.seal_async`). All writes run in ``BEGIN IMMEDIATE`` transactions, so a commit is
durable (fsync of the WAL) when the method returns.

Sealing without holding the write lock during the security-module call: :meth:`prepare_seal`
reads the chain tail and builds the body and digest *without* a write transaction;
the MAC is computed with no database lock held; :meth:`commit_seal` then, inside one short
``BEGIN IMMEDIATE``, inserts the outbox row at the prepared seq if the chain still ends just
before it (one statement) and moves the record to ``sealed`` if it is still as
prepared (else ``SealConflictError``, prepare again). :meth:`seal` serialises
prepare→MAC→commit in this process with a seal mutex that nothing else takes, so intents,
acks and blacklist updates are never blocked by a slow PSAM.

Self-healing (DESIGN §4): at open the header is checked and ``PRAGMA quick_check`` run; a
corrupt or non-SQLite file (and its ``-wal``/``-shm``) is moved aside to
``<name>.corrupt-<UTC timestamp>``, a fresh store is created and a ``journal_quarantined`` event
recorded for upstream. ``SQLITE_FULL`` (disk full, or the ``max_bytes`` bound) becomes
``JournalFullError``: the failed transaction is rolled back and committed records stay intact.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import cbor2

from agent.errors import (
    BlacklistVersionError,
    DuplicateIntentError,
    InvalidTransitionError,
    JournalCorruptError,
    JournalError,
    JournalFullError,
    PolicyRefusal,
    RecordFormatError,
    SealConflictError,
)
from agent.journal.atrest import AtRestDecryptError, Sealer, load_or_create_key
from agent.journal.codec import GENESIS_HASH, body_fields, decode_body, encode_body, record_digest

log = logging.getLogger(__name__)

SCHEMA_DIR = Path(__file__).with_name("schemas")
#: A store migrated while at most this many pages (16 MB at 4 KB) is compacted at once.
COMPACT_MAX_PAGES = 4096
SQLITE_HEADER = b"SQLite format 3\x00"
BUSY_TIMEOUT_MS = 5000
DAY_MS = 86_400_000
#: Seqs per ``IN (...)`` list: far below SQLite's bound on host parameters (32,766).
_IN_CHUNK = 500

# State names the journal itself needs (the legality of each move is the injected table's).
INTENT, IN_DOUBT, CARD_DONE, FAILED = "intent", "in_doubt", "card_done", "failed"
SEALED, SENT, ACKED = "sealed", "sent", "acked"
_OUTCOME_OF_STATE = {CARD_DONE: "done", FAILED: "failed"}
#: The states without a card outcome, in the words of the partial index ``transactions_open``
#: (schemas/v2.sql): a query that repeats this term verbatim lets the planner use that index.
_OPEN_STATES = (INTENT, IN_DOUBT)
_OPEN = "state IN ('intent', 'in_doubt')"
#: Fields ``transition`` may change besides the state.
_MUTABLE_FIELDS = frozenset({"reason", "result", "error_code", "auth_id", "card_id_code"})
AUTH_KINDS = ("unlock", "pin_reset", "pin_unblock")

TransitionTable = Mapping[tuple[str, str], str]
MacFn = Callable[[bytes], bytes]


def _retire_expired(conn: sqlite3.Connection, now: int) -> None:
    """Mark every unused authorization whose expiry has passed as used by ``(expired)``.

    Run before each authorization decision, so an authorization once seen expired stays
    expired: a wall clock set back later cannot revive it. Fresh authorizations are still
    judged by the current clock (a clock that runs behind does not block new ones).
    """
    conn.execute(
        "UPDATE authorizations SET used_at = ?, used_by = '(expired)' "
        "WHERE used_at IS NULL AND expires_at <= ?",
        (now, now),
    )


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# --------------------------------------------------------------------------------------------
# Value types
# --------------------------------------------------------------------------------------------
class IntentLike(Protocol):
    """What ``create_intent`` reads (``agent.tx.records.TxRecord`` satisfies it)."""

    @property
    def tx_id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def terminal_id(self) -> str: ...
    @property
    def card_id_code(self) -> str | None: ...
    @property
    def offline(self) -> bool: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def idempotency_key(self) -> str | None: ...
    @property
    def auth_id(self) -> str | None: ...
    @property
    def created_at(self) -> int: ...
    @property
    def personal(self) -> Mapping[str, str] | None: ...
    @property
    def personal_salt(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class TxRow:
    """A ``transactions`` row as stored (``personal`` decrypted; never printed by ``repr``)."""

    tx_id: str
    kind: str
    state: str
    terminal_id: str
    card_id_code: str | None
    offline: bool
    reason: str | None
    idempotency_key: str | None
    auth_id: str | None
    outcome: str | None
    result: str | None
    error_code: str | None
    created_at: int
    updated_at: int
    seq: int | None
    prev_hash: bytes | None
    hash: bytes | None
    mac: bytes | None
    personal: Mapping[str, str] | None = field(repr=False)
    personal_salt: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class SealDraft:
    """Output of :meth:`Journal.prepare_seal`: MAC ``digest``, then :meth:`Journal.commit_seal`."""

    tx_id: str
    seq: int
    prev_hash: bytes
    body: bytes
    digest: bytes
    state: str
    updated_at: int


@dataclass(frozen=True, slots=True)
class SealedRecord:
    """An outbox row: what the uplink sends (``body`` + ``mac``; ``personal`` beside it)."""

    seq: int
    tx_id: str
    body: bytes
    hash: bytes
    prev_hash: bytes
    mac: bytes
    state: str
    sealed_at: int
    sent_at: int | None
    acked_at: int | None
    personal: Mapping[str, str] | None = field(default=None, repr=False)
    personal_salt: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, slots=True)
class ChainReport:
    """Result of :meth:`Journal.verify_chain`: ``ok`` or the first break."""

    ok: bool
    checked: int
    first_seq: int | None
    last_seq: int | None
    bad_seq: int | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Authorization:
    auth_id: str
    card_id_code: str
    kind: str
    expires_at: int
    received_at: int
    used_at: int | None
    used_by: str | None
    raw: bytes


@dataclass(frozen=True, slots=True)
class JournalEvent:
    id: int
    at: int
    kind: str
    data: dict[str, Any]
    reported: bool


@dataclass(frozen=True, slots=True)
class PruneReport:
    records: int
    events: int
    authorizations: int
    counters: int


@dataclass(frozen=True, slots=True)
class JournalStats:
    transactions: int
    open_intents: int
    in_doubt: int
    unacked: int
    oldest_unacked_at: int | None
    last_seq: int
    blacklist_version: int
    blacklist_size: int
    size_bytes: int


# --------------------------------------------------------------------------------------------
# Errors from sqlite3
# --------------------------------------------------------------------------------------------
def _translate(exc: sqlite3.Error, what: str) -> JournalError:
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    text = str(exc)
    if code == sqlite3.SQLITE_FULL or "database or disk is full" in text:
        return JournalFullError(f"{what}: journal is full; new work is refused")
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return JournalCorruptError(f"{what}: {text}")
    if isinstance(exc, sqlite3.IntegrityError) and what == "create intent":
        return DuplicateIntentError(f"{what}: tx id or idempotency key already journaled")
    return JournalError(f"{what}: {exc.__class__.__name__}: {text}")


def schema_versions(schema_dir: Path = SCHEMA_DIR) -> dict[int, Path]:
    """``{N: path}`` of the ``vN.sql`` files, which must be numbered 1..max without gaps."""
    found: dict[int, Path] = {}
    for p in schema_dir.glob("v*.sql"):
        m = re.fullmatch(r"v(\d+)\.sql", p.name)
        if m:
            found[int(m.group(1))] = p
    if sorted(found) != list(range(1, len(found) + 1)):
        raise JournalError(f"schema files are not v1..vN without gaps: {sorted(found)}")
    return found


class _WriteTxn:
    """``with journal._write(what) as conn``: lock, ``BEGIN IMMEDIATE`` … ``COMMIT``, or roll
    back on any exception; sqlite3 errors become journal errors. A class, not a generator
    context manager: it runs three times per sealed transaction (bench/journal.py)."""

    __slots__ = ("_journal", "_what")

    def __init__(self, journal: Journal, what: str) -> None:
        self._journal = journal
        self._what = what

    def __enter__(self) -> sqlite3.Connection:
        j = self._journal
        j._lock.acquire()
        try:
            j._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            j._lock.release()
            raise _translate(exc, self._what) from None
        except BaseException:
            j._lock.release()
            raise
        return j._conn

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        j = self._journal
        try:
            if exc_type is None:
                try:
                    j._conn.execute("COMMIT")
                except sqlite3.Error as commit_exc:
                    j._rollback()
                    raise _translate(commit_exc, self._what) from None
                return
            j._rollback()
            if isinstance(exc, sqlite3.Error):
                raise _translate(exc, self._what) from None
        finally:
            j._lock.release()


class _ReadTxn:
    """``with journal._read(what) as conn``: the connection under the lock; sqlite3 errors
    become journal errors."""

    __slots__ = ("_journal", "_what")

    def __init__(self, journal: Journal, what: str) -> None:
        self._journal = journal
        self._what = what

    def __enter__(self) -> sqlite3.Connection:
        self._journal._lock.acquire()
        return self._journal._conn

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        self._journal._lock.release()
        if isinstance(exc, sqlite3.Error):
            raise _translate(exc, self._what) from None


# --------------------------------------------------------------------------------------------
# The journal
# --------------------------------------------------------------------------------------------
class Journal:
    """The agent's durable store. See the module docstring.

    ``transitions`` is the state machine (``agent.tx.machine.TABLE``); it is injected because
    the journal sits below ``tx`` (DESIGN §2). ``key_path`` defaults to ``<path>.key``.
    ``max_bytes`` bounds the database (``PRAGMA max_page_count``); beyond it every write raises
    ``JournalFullError`` exactly as on a full disk. ``clock`` returns Unix milliseconds.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        transitions: TransitionTable,
        key_path: str | os.PathLike[str] | None = None,
        max_bytes: int | None = None,
        clock: Callable[[], int] = _now_ms,
        schema_dir: Path = SCHEMA_DIR,
    ) -> None:
        self.path = Path(path)
        self._memory = str(path) == ":memory:"
        self._table = transitions
        self._clock = clock
        self._lock = threading.RLock()
        self._seal_lock = threading.Lock()
        self._async_seal_lock: asyncio.Lock | None = None
        self._schema_dir = schema_dir
        self._moves_of: dict[str, tuple[tuple[str, str], ...]] = {}
        self._transition_plans: dict[
            tuple[str, tuple[str, ...]], tuple[str, tuple[str, ...], tuple[str, ...]]
        ] = {}
        #: Where a corrupt file was moved at open, if it was.
        self.quarantined: Path | None = None
        #: the key file exists only once a store was opened here: an empty database beside it
        #: is a lost journal, not a first start.
        self._existed = False
        if self._memory:
            key = os.urandom(32)
        else:
            kp = Path(key_path) if key_path is not None else Path(f"{self.path}.key")
            self._existed = kp.exists()
            key = load_or_create_key(kp)
        self._sealer = Sealer(key)
        self._conn = self._open(max_bytes)

    # ---- opening, integrity, migrations ---------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            str(self.path), isolation_level=None, check_same_thread=False, timeout=5.0
        )
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        return conn

    def _header_problem(self) -> str | None:
        if self._memory or not self.path.exists():
            return None
        size = self.path.stat().st_size
        if size == 0:
            # zero bytes beside an existing key file: the journal was emptied (a bad restore, a
            # filesystem repair); quarantine it so the loss is reported, never silently reset
            return "empty file where a journal was (its key file exists)" if self._existed else None
        with self.path.open("rb") as f:
            head = f.read(100)
        if len(head) < 100 or not head.startswith(SQLITE_HEADER):
            return "not an SQLite database (bad header)"
        page_size = int.from_bytes(head[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        if page_size < 512 or page_size & (page_size - 1):
            return f"bad page size {page_size}"
        if size % page_size:
            return "file size is not a whole number of pages (truncated)"
        return None

    def _check(self, conn: sqlite3.Connection) -> str | None:
        rows = conn.execute("PRAGMA quick_check").fetchall()
        if [r[0] for r in rows] != ["ok"]:
            return "quick_check: " + "; ".join(str(r[0]) for r in rows[:5])
        return None

    def _open(self, max_bytes: int | None) -> sqlite3.Connection:
        problem = self._header_problem()
        conn: sqlite3.Connection | None = None
        if problem is None:
            try:
                conn = self._connect()
                conn.execute("PRAGMA journal_mode = WAL").fetchone()
                problem = self._check(conn)
                version = conn.execute("PRAGMA user_version").fetchone()[0]
            except sqlite3.DatabaseError as exc:
                problem = f"{exc.__class__.__name__}: {exc}"
            else:
                if problem is None and version > max(self._versions(), default=0):
                    conn.close()
                    raise JournalError(
                        f"journal schema v{version} is newer than this agent understands; "
                        "refusing to open (downgrade?)"
                    )
            if problem is not None and conn is not None:
                conn.close()
        if problem is not None:
            self._quarantine(problem)
            conn = self._connect()
        assert conn is not None  # both branches above set it
        try:
            self._configure(conn, max_bytes)
            self._migrate(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise _translate(exc, "open journal") from None
        if problem is not None:
            self._conn = conn
            self.add_event(
                "journal_quarantined",
                {"file": self.quarantined.name if self.quarantined else "", "reason": problem},
            )
        return conn

    def _configure(self, conn: sqlite3.Connection, max_bytes: int | None) -> None:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal" and not self._memory:
            raise JournalError(f"journal could not enter WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        if max_bytes is not None:
            page = conn.execute("PRAGMA page_size").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {max(1, max_bytes // page)}")

    def _versions(self) -> dict[int, Path]:
        return schema_versions(self._schema_dir)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        current = conn.execute("PRAGMA user_version").fetchone()[0]
        migrated = False
        for n, path in sorted(self._versions().items()):
            if n <= current:
                continue
            sql = path.read_text(encoding="utf-8")
            # executescript runs the whole file; BEGIN..COMMIT makes the step atomic together
            # with the version bump (user_version lives in the header, so it is transactional).
            try:
                conn.executescript(f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {n};\nCOMMIT;")
            except sqlite3.Error:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            log.info("journal schema migrated to v%d", n)
            migrated = True
        if migrated:
            self._compact_if_small(conn)

    @staticmethod
    def _compact_if_small(conn: sqlite3.Connection) -> None:
        """After migrations that rebuilt tables, give their old pages back (``VACUUM``) when the
        store is small: a new journal is created as v1 and migrated, and would otherwise
        start with free pages that hold nothing (a damaged one of them would go unnoticed by
        the integrity check). A large migrated store keeps them for later records: copying
        it whole would double its size on disk for the length of the copy."""
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        if free and pages <= COMPACT_MAX_PAGES:
            conn.execute("VACUUM")

    def _quarantine(self, problem: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
            n += 1
        for suffix in ("-wal", "-shm"):
            side = Path(f"{self.path}{suffix}")
            if side.exists():
                side.replace(Path(f"{target}{suffix}"))
        self.path.replace(target)
        self.quarantined = target
        log.error("journal %s quarantined to %s: %s", self.path.name, target.name, problem)

    # ---- plumbing ---------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection (a checkpoint happens on close)."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, what: str) -> _WriteTxn:
        """One ``BEGIN IMMEDIATE`` transaction; sqlite3 errors become journal errors."""
        return _WriteTxn(self, what)

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")

    def _read(self, what: str) -> _ReadTxn:
        """The connection under the lock; sqlite3 errors become journal errors."""
        return _ReadTxn(self, what)

    def _transition_sql(
        self, event: str, names: tuple[str, ...]
    ) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
        """The one UPDATE of :meth:`transition` for ``event`` setting ``names``, cached: the
        table's moves for the event become a CASE on the current state, and a row in any other
        state is not matched. Returns (sql, args before ``updated_at``, args after ``tx_id``)."""
        key = (event, names)
        plan = self._transition_plans.get(key)
        if plan is None:
            moves = self._moves(event)
            whens = " ".join("WHEN ? THEN ?" for _ in moves)
            sets = [f"state = CASE state {whens} END"]
            head: list[str] = [x for move in moves for x in move]
            outcomes = [(o, _OUTCOME_OF_STATE[n]) for o, n in moves if n in _OUTCOME_OF_STATE]
            if outcomes:
                sets.append(
                    f"outcome = CASE state {' '.join('WHEN ? THEN ?' for _ in outcomes)} "
                    "ELSE outcome END"
                )
                head.extend(x for o in outcomes for x in o)
            sets.append("updated_at = ?")
            sets.extend(f"{name} = ?" for name in names)
            marks = ", ".join("?" * len(moves))
            sql = (
                f"UPDATE transactions SET {', '.join(sets)} "  # noqa: S608  # names from a fixed set
                f"WHERE tx_id = ? AND state IN ({marks}) RETURNING {self._TX_RETURNING}"
            )
            plan = (sql, tuple(head), tuple(old for old, _ in moves))
            self._transition_plans[key] = plan
        return plan

    def _moves(self, event: str) -> tuple[tuple[str, str], ...]:
        """``(from, to)`` pairs of the transition table for ``event``, cached."""
        moves = self._moves_of.get(event)
        if moves is None:
            moves = tuple(
                sorted(
                    (str(old), str(new)) for (old, ev), new in self._table.items() if ev == event
                )
            )
            self._moves_of[event] = moves
        if not moves:
            raise InvalidTransitionError(f"no transition on {event}")
        return moves

    def _next(self, state: str, event: str, tx_id: str) -> str:
        nxt = self._table.get((state, event))
        if nxt is None:
            raise InvalidTransitionError(f"tx {tx_id}: no transition from {state} on {event}")
        return str(nxt)

    # ---- personal data at rest -------------------------------------------------------------
    def _encrypt_personal(self, tx_id: str, personal: Mapping[str, str], salt: bytes) -> bytes:
        plain = cbor2.dumps({"salt": salt, "data": dict(personal)}, canonical=True)
        return self._sealer.encrypt(plain, tx_id.encode())

    def _decrypt_personal(
        self, tx_id: str, blob: bytes | None
    ) -> tuple[Mapping[str, str] | None, bytes]:
        if blob is None:
            return None, bytes(16)
        try:
            value = cbor2.loads(self._sealer.decrypt(blob, tx_id.encode()))
        except AtRestDecryptError:
            # The record itself (and its sealed body) stays usable; only the personal data
            # beside it is lost, which the caller sees as ``personal is None``.
            log.warning("personal data of tx %s does not decrypt", tx_id)
            return None, bytes(16)
        return dict(value["data"]), bytes(value["salt"])

    # ---- transactions ----------------------------------------------------------------------
    _TX_COLS = (
        "t.tx_id, t.kind, t.state, t.terminal_id, t.card_id_code, t.offline, t.reason, "
        "t.idempotency_key, t.auth_id, t.outcome, t.result, t.error_code, t.created_at, "
        "t.updated_at, t.seq, o.prev_hash, o.hash, o.mac, t.personal"
    )
    _TX_FROM = "transactions t LEFT JOIN outbox o ON o.seq = t.seq"
    # the same columns from an UPDATE ... RETURNING (no join there: the outbox's are NULL)
    _TX_RETURNING = (
        "tx_id, kind, state, terminal_id, card_id_code, offline, reason, idempotency_key, "
        "auth_id, outcome, result, error_code, created_at, updated_at, seq, NULL, NULL, NULL, "
        "personal"
    )

    def _row(self, r: tuple[Any, ...]) -> TxRow:
        personal, salt = self._decrypt_personal(r[0], r[18])
        return TxRow(
            tx_id=r[0],
            kind=r[1],
            state=r[2],
            terminal_id=r[3],
            card_id_code=r[4],
            offline=bool(r[5]),
            reason=r[6],
            idempotency_key=r[7],
            auth_id=r[8],
            outcome=r[9],
            result=r[10],
            error_code=r[11],
            created_at=r[12],
            updated_at=r[13],
            seq=r[14],
            prev_hash=r[15],
            hash=r[16],
            mac=r[17],
            personal=personal,
            personal_salt=salt,
        )

    def _select(self, where: str, args: tuple[Any, ...], what: str) -> list[TxRow]:
        sql = f"SELECT {self._TX_COLS} FROM {self._TX_FROM} WHERE {where}"  # noqa: S608  # constant fragments only
        with self._read(what) as conn:
            return [self._row(r) for r in conn.execute(sql, args).fetchall()]

    def create_intent(self, record: IntentLike) -> TxRow:
        """Commit the ``intent`` row; call **before** the first card write (DESIGN §4).

        If the record names an authorization (``auth_id``), it is consumed in the same
        transaction, so one authorization can never be used twice; an unknown, used or expired
        one raises ``PolicyRefusal`` (code ``authorization_unavailable``) and nothing is written.
        Duplicate tx id or idempotency key raises ``DuplicateIntentError``.
        """
        now = self._clock()
        blob = (
            self._encrypt_personal(record.tx_id, record.personal, record.personal_salt)
            if record.personal
            else None
        )
        with self._write("create intent") as conn:
            if record.auth_id is not None:
                _retire_expired(conn, now)
                cur = conn.execute(
                    "UPDATE authorizations SET used_at = ?, used_by = ? WHERE auth_id = ? "
                    "AND used_at IS NULL AND expires_at > ? AND card_id_code IS ? AND kind = ?",
                    (now, record.tx_id, record.auth_id, now, record.card_id_code, record.kind),
                )
                if cur.rowcount != 1:
                    raise PolicyRefusal(
                        "authorization is unknown, used, expired or for another card",
                        code="authorization_unavailable",
                    )
            conn.execute(
                "INSERT INTO transactions (tx_id, kind, state, card_id_code, terminal_id, "
                "offline, reason, idempotency_key, auth_id, personal, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.tx_id,
                    str(record.kind),
                    INTENT,
                    record.card_id_code,
                    record.terminal_id,
                    int(record.offline),
                    record.reason,
                    record.idempotency_key,
                    record.auth_id,
                    blob,
                    record.created_at,
                    max(now, record.created_at),
                ),
            )
        # the row just committed, built from what was written (a SELECT and a decrypt of the
        # personal data cost a quarter of a sealed transaction's CPU: bench/journal.py)
        return TxRow(
            tx_id=record.tx_id,
            kind=str(record.kind),
            state=INTENT,
            terminal_id=record.terminal_id,
            card_id_code=record.card_id_code,
            offline=bool(record.offline),
            reason=record.reason,
            idempotency_key=record.idempotency_key,
            auth_id=record.auth_id,
            outcome=None,
            result=None,
            error_code=None,
            created_at=record.created_at,
            updated_at=max(now, record.created_at),
            seq=None,
            prev_hash=None,
            hash=None,
            mac=None,
            personal=dict(record.personal) if blob is not None and record.personal else None,
            personal_salt=bytes(record.personal_salt) if blob is not None else bytes(16),
        )

    def get(self, tx_id: str) -> TxRow | None:
        rows = self._select("t.tx_id = ?", (tx_id,), "get transaction")
        return rows[0] if rows else None

    def find_by_idempotency_key(self, key: str) -> TxRow | None:
        rows = self._select("t.idempotency_key = ?", (key,), "find by idempotency key")
        return rows[0] if rows else None

    def open_intents(self) -> list[TxRow]:
        """Records still in ``intent`` (at start: the ones a crash interrupted)."""
        return self._select(
            f"t.{_OPEN} AND t.state = ? ORDER BY t.created_at", (INTENT,), "open intents"
        )

    def in_doubt_for_card(self, card_id_code: str) -> list[TxRow]:
        """``in_doubt`` records of this card, oldest first (resolve when the card is seen)."""
        return self._select(
            f"t.{_OPEN} AND t.state = ? AND t.card_id_code = ? ORDER BY t.created_at",
            (IN_DOUBT, card_id_code),
            "in-doubt records",
        )

    def records(self, state: str | None = None, *, limit: int = 1000) -> list[TxRow]:
        """Records (optionally in one state), newest first."""
        if state is None:
            return self._select("1 ORDER BY t.created_at DESC LIMIT ?", (limit,), "records")
        # intent and in_doubt are in the small partial index; any other state is a scan (at
        # start, for records with an outcome but no seal yet, and from the CLI)
        where = f"t.{_OPEN} AND t.state = ?" if state in _OPEN_STATES else "t.state = ?"
        return self._select(
            f"{where} ORDER BY t.created_at DESC LIMIT ?", (state, limit), "records"
        )

    def card_codes_like(self, pattern: str, kinds: Iterable[str], limit: int = 2) -> list[str]:
        """Distinct card codes of records of ``kinds`` that match the SQL ``LIKE`` ``pattern``
        (``_`` one character), at most ``limit``: how a locked card, which answers no READ
        RECORD, is found from the bytes of its code that its ATR shows. The whole journal is
        searched (its retention bounds it): the card code has no index (schema v2), so this
        reads every record, a few milliseconds per 10,000, and is only asked for a card that
        arrives locked."""
        wanted = sorted(set(kinds))
        if not wanted:
            return []
        marks = ", ".join("?" * len(wanted))
        with self._read("card lookup") as conn:
            rows = conn.execute(
                "SELECT DISTINCT card_id_code FROM transactions "  # noqa: S608 - placeholders only
                f"WHERE kind IN ({marks}) AND card_id_code LIKE ? LIMIT ?",
                (*wanted, pattern, limit),
            ).fetchall()
        return [str(r[0]) for r in rows]

    def transition(self, tx_id: str, event: str, **fields: str | None) -> TxRow:
        """Apply ``event`` to a record (by the transition table) and update ``fields``.

        ``fields`` may set ``reason``, ``result``, ``error_code``, ``auth_id``,
        ``card_id_code``. Entering ``card_done`` / ``failed`` records the outcome. ``sealed``,
        ``published``, ``acked`` and ``ack_timeout`` belong to :meth:`seal`, :meth:`mark_sent`,
        :meth:`ack` and :meth:`requeue`, which keep the outbox in step.
        """
        bad = set(fields) - _MUTABLE_FIELDS
        if bad:
            raise JournalError(f"transition cannot set {sorted(bad)}")
        if event in ("sealed", "published", "acked", "ack_timeout"):
            raise InvalidTransitionError(
                f"{event} is applied by the outbox methods, not transition"
            )
        names = tuple(sorted(fields))
        sql, head, tail = self._transition_sql(event, names)
        with self._write("transition") as conn:
            found = conn.execute(
                sql, (*head, self._clock(), *(fields[n] for n in names), tx_id, *tail)
            ).fetchall()
            if not found:
                r = conn.execute("SELECT state FROM transactions WHERE tx_id = ?", (tx_id,))
                current = r.fetchone()
                if current is None:
                    raise JournalError(f"no transaction {tx_id}")
                self._next(current[0], event, tx_id)  # raises InvalidTransitionError
                raise JournalError(f"tx {tx_id}: {event} not applied")  # pragma: no cover
            updated = found[0]
            if updated[14] is not None:  # a sealed record: its chain fields live in the outbox
                chain = conn.execute(
                    "SELECT prev_hash, hash, mac FROM outbox WHERE seq = ?", (updated[14],)
                ).fetchone()
                if chain is not None:
                    updated = (*updated[:15], *chain, updated[18])
        return self._row(updated)

    def recover_open_intents(self) -> list[TxRow]:
        """At start: every ``intent`` becomes ``in_doubt`` (event ``crash_recovered``), in one
        transaction. Returns the records, to be resolved when their card is seen."""
        now = self._clock()
        with self._write("recover intents") as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    f"SELECT tx_id FROM transactions WHERE {_OPEN} AND state = ?",  # noqa: S608  # constant
                    (INTENT,),
                )
            ]
            for tx_id in ids:
                new = self._next(INTENT, "crash_recovered", tx_id)
                conn.execute(
                    "UPDATE transactions SET state = ?, updated_at = ? WHERE tx_id = ?",
                    (new, now, tx_id),
                )
        return [r for r in (self.get(t) for t in ids) if r is not None]

    # ---- sealing ----------------------------------------------------------------------------
    def _tail(self, conn: sqlite3.Connection) -> tuple[int, bytes]:
        r = conn.execute("SELECT seq, hash FROM outbox ORDER BY seq DESC LIMIT 1").fetchone()
        if r is not None:
            return int(r[0]), bytes(r[1])
        return self._anchor(conn)

    def _anchor(self, conn: sqlite3.Connection) -> tuple[int, bytes]:
        seq = conn.execute("SELECT value FROM meta WHERE key = 'chain_anchor_seq'").fetchone()
        h = conn.execute("SELECT value FROM meta WHERE key = 'chain_anchor_hash'").fetchone()
        if seq is None or h is None:
            return 0, GENESIS_HASH
        return int(seq[0]), bytes(h[0])

    def prepare_seal(self, tx_id: str) -> SealDraft:
        """Assign the next seq and build body and digest, without a write transaction."""
        with self._read("prepare seal") as conn:
            # the record and the chain tail in one statement (MAX of the key is one b-tree step)
            found = conn.execute(
                f"SELECT {self._TX_COLS}, tail.seq, tail.hash FROM {self._TX_FROM} "  # noqa: S608  # constant fragments only
                "LEFT JOIN (SELECT seq, hash FROM outbox ORDER BY seq DESC LIMIT 1) tail "
                "WHERE t.tx_id = ?",
                (tx_id,),
            ).fetchone()
            if found is None:
                raise JournalError(f"no transaction {tx_id}")
            row = self._row(found)
            self._next(row.state, "sealed", tx_id)
            if found[19] is not None:
                last_seq, last_hash = int(found[19]), bytes(found[20])
            else:  # nothing in the outbox: the chain starts at the anchor
                last_seq, last_hash = self._anchor(conn)
        seq = last_seq + 1
        body = encode_body(body_fields(row, seq, last_hash))
        return SealDraft(
            tx_id, seq, last_hash, body, record_digest(body), row.state, row.updated_at
        )

    def commit_seal(self, draft: SealDraft, mac: bytes) -> SealedRecord:
        """Insert the sealed record if the chain tail and the record are still as prepared."""
        if not mac:
            raise JournalError("empty MAC")
        with self._write("seal") as conn:
            return self._insert_sealed(conn, draft, mac)

    def _insert_sealed(
        self, conn: sqlite3.Connection, draft: SealDraft, mac: bytes
    ) -> SealedRecord:
        now = self._clock()
        new = self._next(draft.state, "sealed", draft.tx_id)
        # the tail check is part of the INSERT (MAX of the primary key is one b-tree step):
        # the row goes in only if the chain still ends at the prepared seq - 1, which a
        # concurrent sealer (another process) or a prune that moved the anchor changes
        inserted = conn.execute(
            "INSERT INTO outbox (seq, tx_id, body, hash, prev_hash, mac, state, sealed_at) "
            "SELECT ?, ?, ?, ?, ?, ?, ?, ? WHERE COALESCE((SELECT MAX(seq) FROM outbox), "
            "(SELECT value FROM meta WHERE key = 'chain_anchor_seq'), 0) = ?",
            (
                draft.seq,
                draft.tx_id,
                draft.body,
                draft.digest,
                draft.prev_hash,
                mac,
                SEALED,
                now,
                draft.seq - 1,
            ),
        ).rowcount
        if inserted != 1:
            raise SealConflictError(f"seq {draft.seq} was taken; prepare again")
        # the record must still be as prepared: checked by the UPDATE itself
        moved = conn.execute(
            "UPDATE transactions SET state = ?, seq = ? "
            "WHERE tx_id = ? AND state = ? AND updated_at = ?",
            (new, draft.seq, draft.tx_id, draft.state, draft.updated_at),
        ).rowcount
        if moved != 1:
            raise SealConflictError(f"tx {draft.tx_id} changed since prepare")
        return SealedRecord(
            draft.seq, draft.tx_id, draft.body, draft.digest, draft.prev_hash, mac, SEALED, now,
            None, None,
        )  # fmt: skip

    def seal(self, tx_id: str, mac_fn: MacFn, *, attempts: int = 10) -> SealedRecord:
        """Seal a ``card_done`` / ``failed`` record: gapless seq, chain hash, MAC.

        ``mac_fn(digest) -> mac`` (the security module) runs with no database lock held; the
        seal mutex keeps this process's sealers in order, and a conflict with a sealer outside
        it (another process, a two-phase caller) is retried. The last of ``attempts`` holds the
        database's write lock from prepare to commit, MAC included, so a sealer that keeps
        losing the race to a busy competitor still finishes instead of failing the operation.
        """
        with self._seal_lock:
            for _ in range(attempts - 1):
                draft = self.prepare_seal(tx_id)
                try:
                    return self.commit_seal(draft, mac_fn(draft.digest))
                except SealConflictError:
                    continue
            if attempts < 1:
                raise SealConflictError("no attempts")
            with self._write("seal") as conn:
                draft = self.prepare_seal(tx_id)
                mac = mac_fn(draft.digest)
                if not mac:
                    raise JournalError("empty MAC")
                return self._insert_sealed(conn, draft, mac)

    async def seal_async(
        self, tx_id: str, mac_fn: Callable[[bytes], Awaitable[bytes]], *, attempts: int = 10
    ) -> SealedRecord:
        """:meth:`seal` for an async security module (``SecurityModule.seal_mac``): database
        work runs in a thread, sealers of one event loop are serialised by an asyncio lock, and
        a conflict with any other sealer is retried."""
        if self._async_seal_lock is None:
            self._async_seal_lock = asyncio.Lock()
        async with self._async_seal_lock:
            for attempt in range(attempts):
                draft = await asyncio.to_thread(self.prepare_seal, tx_id)
                mac = await mac_fn(draft.digest)
                try:
                    return await asyncio.to_thread(self.commit_seal, draft, mac)
                except SealConflictError:
                    if attempt == attempts - 1:
                        raise
        raise SealConflictError("no attempts")

    # ---- outbox -----------------------------------------------------------------------------
    def _sealed(self, r: tuple[Any, ...]) -> SealedRecord:
        personal, salt = self._decrypt_personal(r[1], r[10])
        return SealedRecord(
            seq=r[0],
            tx_id=r[1],
            body=bytes(r[2]),
            hash=bytes(r[3]),
            prev_hash=bytes(r[4]),
            mac=bytes(r[5]),
            state=r[6],
            sealed_at=r[7],
            sent_at=r[8],
            acked_at=r[9],
            personal=personal,
            personal_salt=salt if personal else b"",
        )

    _OUT_COLS = (
        "o.seq, o.tx_id, o.body, o.hash, o.prev_hash, o.mac, o.state, o.sealed_at, o.sent_at, "
        "o.acked_at, t.personal"
    )

    def unacked(self, after_seq: int = 0, limit: int = 100) -> list[SealedRecord]:
        """Sealed, not yet acked records with ``seq > after_seq``, in seq order (the outbox)."""
        with self._read("outbox") as conn:
            rows = conn.execute(
                f"SELECT {self._OUT_COLS} FROM outbox o JOIN transactions t ON t.tx_id = o.tx_id "  # noqa: S608
                "WHERE o.state <> 'acked' AND o.seq > ? ORDER BY o.seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [self._sealed(r) for r in rows]

    def sealed_record(self, seq: int) -> SealedRecord | None:
        with self._read("outbox") as conn:
            r = conn.execute(
                f"SELECT {self._OUT_COLS} FROM outbox o JOIN transactions t ON t.tx_id = o.tx_id "  # noqa: S608
                "WHERE o.seq = ?",
                (seq,),
            ).fetchone()
        return None if r is None else self._sealed(r)

    def _outbox_event(self, seqs: Iterable[int], event: str, what: str) -> int:
        """Apply ``event`` to the outbox records ``seqs`` in one transaction: one indexed read
        per 500 records and one ``executemany`` per table, not three statements a record (a
        drain marks every record ``sent``)."""
        wanted = sorted({int(s) for s in seqs})
        if not wanted:
            return 0
        now = self._clock()
        moves: dict[str, list[tuple[int, str]]] = {}
        with self._write(what) as conn:
            for i in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[i : i + _IN_CHUNK]
                rows = conn.execute(
                    "SELECT o.seq, o.tx_id, t.state FROM outbox o JOIN transactions t "  # noqa: S608
                    f"ON t.tx_id = o.tx_id WHERE o.seq IN ({', '.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()  # a pruned seq, or one not ours, is simply not there
                for seq, tx_id, state in rows:
                    nxt = self._table.get((state, event))
                    # PUBACKs, central acks and ack timeouts race each other: a batch event that
                    # the table does not allow for one record (a timeout for a record acked
                    # meanwhile) leaves that record alone instead of failing the whole batch.
                    if nxt is None or nxt == state:
                        continue
                    moves.setdefault(str(nxt), []).append((seq, tx_id))
            for new, moved in moves.items():
                column = {SENT: "sent_at", ACKED: "acked_at", SEALED: "sent_at"}[new]
                value = None if new == SEALED else now
                conn.executemany(
                    f"UPDATE outbox SET state = ?, {column} = ? WHERE seq = ?",  # noqa: S608
                    [(new, value, seq) for seq, _ in moved],
                )
                conn.executemany(
                    "UPDATE transactions SET state = ? WHERE tx_id = ?",
                    [(new, tx_id) for _, tx_id in moved],
                )
        return sum(len(m) for m in moves.values())

    def mark_sent(self, seqs: Iterable[int]) -> int:
        """PUBACK received for these records (``published``); returns how many changed."""
        return self._outbox_event(seqs, "published", "mark sent")

    def requeue(self, seqs: Iterable[int]) -> int:
        """No central ack in time (``ack_timeout``): these ``sent`` records go back to
        ``sealed`` and will be resent."""
        return self._outbox_event(seqs, "ack_timeout", "requeue")

    def ack(self, ranges: Iterable[tuple[int, int]]) -> int:
        """Central acked the inclusive seq ranges; idempotent. Returns how many became acked.

        One transaction for all ranges; per range one indexed read of the records the transition
        table lets go to ``acked`` and two ``executemany`` updates by primary key, so an ack costs
        the size of its range, not of the backlog. Committed with ``synchronous=NORMAL``: in WAL
        mode the store stays consistent, but a power cut may roll back the latest acks — never
        a record. A lost ack only means the record is sent again and central, which dedupes by
        (terminal, seq), acks it again; waiting for the disk on every ack message would instead
        halve the drain rate. The next ``synchronous=FULL`` commit makes these acks durable too.
        """
        spans = [(int(lo), int(hi)) for lo, hi in ranges]
        for lo, hi in spans:
            if lo > hi:
                raise JournalError(f"bad ack range {lo}..{hi}")
        if not spans:
            return 0
        movable = sorted(
            {str(st) for (st, ev), nxt in self._table.items() if ev == ACKED and nxt == ACKED}
            - {ACKED}
        )
        if not movable:
            return 0
        marks = ", ".join("?" * len(movable))
        now = self._clock()
        total = 0
        with self._lock:
            self._conn.execute("PRAGMA synchronous = NORMAL")
            try:
                with self._write("ack") as conn:
                    for lo, hi in spans:
                        # CROSS JOIN keeps the seq range as the outer loop: cost is the size of
                        # the range, never of the backlog (the planner would otherwise walk
                        # every unacked transaction through the state index)
                        rows = conn.execute(
                            "SELECT o.seq, o.tx_id FROM outbox o CROSS JOIN transactions t "  # noqa: S608
                            "ON t.tx_id = o.tx_id WHERE o.seq BETWEEN ? AND ? "
                            f"AND o.state <> 'acked' AND t.state IN ({marks})",
                            (lo, hi, *movable),
                        ).fetchall()
                        conn.executemany(
                            "UPDATE outbox SET state = 'acked', acked_at = ? WHERE seq = ?",
                            [(now, seq) for seq, _ in rows],
                        )
                        conn.executemany(
                            "UPDATE transactions SET state = 'acked' WHERE tx_id = ?",
                            [(tx_id,) for _, tx_id in rows],
                        )
                        total += len(rows)
            finally:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("PRAGMA synchronous = FULL")
        return total

    def last_seq(self) -> int:
        with self._read("last seq") as conn:
            return self._tail(conn)[0]

    def prune(self, retention_days: float) -> PruneReport:
        """Delete acked records older than the retention, as a prefix of the chain (the chain
        anchor moves to the last pruned record), plus reported events, used or expired
        authorizations and counters older than the retention."""
        now = self._clock()
        cutoff = now - int(retention_days * DAY_MS)
        with self._write("prune") as conn:
            first_keep = conn.execute(
                "SELECT MIN(seq) FROM outbox WHERE NOT (state = 'acked' AND acked_at < ?)",
                (cutoff,),
            ).fetchone()[0]
            limit = first_keep - 1 if first_keep is not None else self._tail(conn)[0]
            last = conn.execute(
                "SELECT seq, hash FROM outbox WHERE seq <= ? ORDER BY seq DESC LIMIT 1", (limit,)
            ).fetchone()
            n_records = 0
            if last is not None:
                ids = [
                    r[0] for r in conn.execute("SELECT tx_id FROM outbox WHERE seq <= ?", (limit,))
                ]
                conn.execute("DELETE FROM outbox WHERE seq <= ?", (limit,))
                conn.executemany("DELETE FROM transactions WHERE tx_id = ?", ((i,) for i in ids))
                n_records = len(ids)
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('chain_anchor_seq', ?), "
                    "('chain_anchor_hash', ?)",
                    (last[0], last[1]),
                )
            n_events = conn.execute(
                "DELETE FROM events WHERE reported = 1 AND at < ?", (cutoff,)
            ).rowcount
            n_auth = conn.execute(
                "DELETE FROM authorizations WHERE (used_at IS NOT NULL AND used_at < ?) "
                "OR expires_at < ?",
                (cutoff, cutoff),
            ).rowcount
            old_window = datetime.fromtimestamp(cutoff / 1000, UTC).strftime("%Y-%m-%d")
            n_counters = conn.execute(
                "DELETE FROM counters WHERE window_key < ?", (old_window,)
            ).rowcount
        return PruneReport(n_records, n_events, n_auth, n_counters)

    def verify_chain(
        self, verify_mac: Callable[[bytes, bytes], bool] | None = None, *, batch: int = 1000
    ) -> ChainReport:
        """Walk the outbox from the chain anchor: gapless seq, ``prev_hash`` links, canonical
        body matching its columns, ``hash = SHA-256(body)`` and (if given)
        ``verify_mac(digest, mac)``. Returns the first break, if any."""
        with self._read("verify chain") as conn:
            exp_seq, exp_prev = self._anchor(conn)
        checked = 0
        first: int | None = None
        after = exp_seq
        while True:
            with self._read("verify chain") as conn:
                rows = conn.execute(
                    "SELECT seq, tx_id, body, hash, prev_hash, mac FROM outbox WHERE seq > ? "
                    "ORDER BY seq LIMIT ?",
                    (after, batch),
                ).fetchall()
            if not rows:
                break
            for seq, tx_id, body_v, h_v, prev_v, mac_v in rows:
                first = seq if first is None else first
                body, h, prev, mac = bytes(body_v), bytes(h_v), bytes(prev_v), bytes(mac_v)
                problem = None
                if seq != exp_seq + 1:
                    problem = f"gap: expected seq {exp_seq + 1}"
                elif prev != exp_prev:
                    problem = "prev_hash does not link to the previous record"
                elif record_digest(body) != h:
                    problem = "hash does not match the body"
                else:
                    try:
                        fields = decode_body(body)
                    except RecordFormatError as exc:
                        problem = f"body: {exc.message}"
                    else:
                        if (fields["seq"], fields["prev_hash"], fields["tx_id"]) != (
                            seq,
                            prev,
                            tx_id,
                        ):
                            problem = "body does not match its row"
                if problem is None and verify_mac is not None and not verify_mac(h, mac):
                    problem = "MAC does not verify"
                if problem is not None:
                    return ChainReport(False, checked, first, seq, seq, problem)
                checked += 1
                exp_seq, exp_prev = seq, h
            after = rows[-1][0]
        return ChainReport(True, checked, first, exp_seq if checked else None)

    # ---- blacklist --------------------------------------------------------------------------
    def blacklist_version(self) -> int:
        with self._read("blacklist version") as conn:
            r = conn.execute("SELECT value FROM meta WHERE key = 'blacklist_version'").fetchone()
        return int(r[0]) if r is not None else 0

    def blacklist_snapshot_replace(self, version: int, entries: Iterable[tuple[str, str]]) -> int:
        """Replace the whole blacklist with ``(card_id_code, reason)`` entries at ``version``,
        in one transaction (a failure leaves the previous list). Returns the entry count."""
        with self._write("blacklist snapshot") as conn:
            conn.execute("DELETE FROM blacklist")
            conn.executemany(
                "INSERT OR REPLACE INTO blacklist (card_id_code, reason, version) VALUES (?, ?, ?)",
                ((c, r, version) for c, r in entries),
            )
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('blacklist_version', ?)",
                (version,),
            )
            n: int = conn.execute("SELECT COUNT(*) FROM blacklist").fetchone()[0]
        return n

    def blacklist_apply_delta(
        self,
        base_version: int,
        version: int,
        added: Iterable[tuple[str, str]],
        removed: Iterable[str],
    ) -> None:
        """Apply a delta from ``base_version`` to ``version`` in one transaction.

        A delta whose base is not the local version raises ``BlacklistVersionError`` (ask
        central for a snapshot); a re-delivered delta (``version`` == local) is a no-op.
        """
        if version <= base_version:
            raise JournalError(f"blacklist delta {base_version}->{version} does not advance")
        with self._write("blacklist delta") as conn:
            r = conn.execute("SELECT value FROM meta WHERE key = 'blacklist_version'").fetchone()
            local = int(r[0]) if r is not None else 0
            if local == version:
                return
            if local != base_version:
                raise BlacklistVersionError(
                    f"blacklist delta starts at v{base_version}, local list is v{local}"
                )
            conn.executemany(
                "DELETE FROM blacklist WHERE card_id_code = ?", ((c,) for c in removed)
            )
            conn.executemany(
                "INSERT OR REPLACE INTO blacklist (card_id_code, reason, version) VALUES (?, ?, ?)",
                ((c, reason, version) for c, reason in added),
            )
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('blacklist_version', ?)",
                (version,),
            )

    def blacklist_reason(self, card_id_code: str) -> str | None:
        """The loss reason if the card is blacklisted, else ``None`` (primary-key lookup)."""
        with self._read("blacklist lookup") as conn:
            r = conn.execute(
                "SELECT reason FROM blacklist WHERE card_id_code = ?", (card_id_code,)
            ).fetchone()
        return None if r is None else str(r[0])

    def is_blacklisted(self, card_id_code: str) -> bool:
        return self.blacklist_reason(card_id_code) is not None

    def blacklist_size(self) -> int:
        with self._read("blacklist size") as conn:
            n: int = conn.execute("SELECT COUNT(*) FROM blacklist").fetchone()[0]
        return n

    # ---- authorizations ---------------------------------------------------------------------
    def add_authorization(
        self, auth_id: str, card_id_code: str, kind: str, expires_at: int, raw: bytes
    ) -> bool:
        """Store a verified signed authorization; a re-delivered one is ignored (returns False).

        The signature is checked by the wire layer before this call.
        """
        if kind not in AUTH_KINDS:
            raise JournalError(f"authorization kind must be one of {AUTH_KINDS}")
        with self._write("add authorization") as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO authorizations (auth_id, card_id_code, kind, expires_at, "
                "received_at, raw) VALUES (?, ?, ?, ?, ?, ?)",
                (auth_id, card_id_code, kind, expires_at, self._clock(), raw),
            )
        return cur.rowcount == 1

    def _auth(self, r: tuple[Any, ...]) -> Authorization:
        return Authorization(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bytes(r[7]))

    _AUTH_COLS = "auth_id, card_id_code, kind, expires_at, received_at, used_at, used_by, raw"

    def find_valid_authorization(self, card_id_code: str, kind: str) -> Authorization | None:
        """An unused, unexpired authorization for this card and kind (soonest expiry first)."""
        now = self._clock()
        with self._write("find authorization") as conn:
            _retire_expired(conn, now)
            r = conn.execute(
                f"SELECT {self._AUTH_COLS} FROM authorizations WHERE card_id_code = ? AND kind = ? "  # noqa: S608
                "AND used_at IS NULL AND expires_at > ? ORDER BY expires_at LIMIT 1",
                (card_id_code, kind, now),
            ).fetchone()
        return None if r is None else self._auth(r)

    def get_authorization(self, auth_id: str) -> Authorization | None:
        with self._read("get authorization") as conn:
            r = conn.execute(
                f"SELECT {self._AUTH_COLS} FROM authorizations WHERE auth_id = ?",  # noqa: S608
                (auth_id,),
            ).fetchone()
        return None if r is None else self._auth(r)

    def consume_authorization(self, auth_id: str, used_by: str) -> bool:
        """Mark an unused, unexpired authorization used; False if it was not (atomic)."""
        now = self._clock()
        with self._write("consume authorization") as conn:
            _retire_expired(conn, now)
            cur = conn.execute(
                "UPDATE authorizations SET used_at = ?, used_by = ? WHERE auth_id = ? "
                "AND used_at IS NULL AND expires_at > ?",
                (now, used_by, auth_id, now),
            )
        return cur.rowcount == 1

    # ---- counters ---------------------------------------------------------------------------
    def counter_incr(self, name: str, window: str, by: int = 1) -> int:
        """Add ``by`` to the counter ``(name, window)``; returns the new value."""
        with self._write("counter") as conn:
            conn.execute(
                "INSERT INTO counters (name, window_key, value) VALUES (?, ?, ?) "
                "ON CONFLICT (name, window_key) DO UPDATE SET value = value + excluded.value",
                (name, window, by),
            )
            v: int = conn.execute(
                "SELECT value FROM counters WHERE name = ? AND window_key = ?", (name, window)
            ).fetchone()[0]
        return v

    def counter_get(self, name: str, window: str) -> int:
        with self._read("counter") as conn:
            r = conn.execute(
                "SELECT value FROM counters WHERE name = ? AND window_key = ?", (name, window)
            ).fetchone()
        return 0 if r is None else int(r[0])

    # ---- events -----------------------------------------------------------------------------
    def add_event(self, kind: str, data: Mapping[str, Any]) -> int:
        """Record an event for upstream; ``data`` must already be masked (no personal data)."""
        blob = cbor2.dumps(dict(data), canonical=True)
        with self._write("add event") as conn:
            cur = conn.execute(
                "INSERT INTO events (at, kind, data) VALUES (?, ?, ?)", (self._clock(), kind, blob)
            )
        return int(cur.lastrowid or 0)

    def events(
        self, after_id: int = 0, limit: int = 100, *, unreported_only: bool = False
    ) -> list[JournalEvent]:
        cond = "AND reported = 0" if unreported_only else ""
        with self._read("events") as conn:
            rows = conn.execute(
                f"SELECT id, at, kind, data, reported FROM events WHERE id > ? {cond} "  # noqa: S608
                "ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [JournalEvent(r[0], r[1], r[2], cbor2.loads(r[3]), bool(r[4])) for r in rows]

    def mark_events_reported(self, ids: Iterable[int]) -> None:
        with self._write("events reported") as conn:
            conn.executemany("UPDATE events SET reported = 1 WHERE id = ?", ((i,) for i in ids))

    # ---- meta and health --------------------------------------------------------------------
    def meta_get(self, key: str) -> Any:
        with self._read("meta") as conn:
            r = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if r is None else r[0]

    def meta_items(self, prefix: str) -> dict[str, Any]:
        """Every ``meta`` entry whose key starts with ``prefix``, keyed without it."""
        with self._read("meta") as conn:
            rows = conn.execute(
                "SELECT key, value FROM meta WHERE substr(key, 1, ?) = ? ORDER BY key",
                (len(prefix), prefix),
            ).fetchall()
        return {str(k)[len(prefix) :]: v for k, v in rows}

    def meta_delete(self, key: str) -> None:
        with self._write("meta") as conn:
            conn.execute("DELETE FROM meta WHERE key = ?", (key,))

    def meta_set(self, key: str, value: str | int | bytes | None) -> None:
        with self._write("meta") as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def stats(self) -> JournalStats:
        with self._read("stats") as conn:

            def one(sql: str, *args: Any) -> Any:
                return conn.execute(sql, args).fetchone()[0]

            page = one("PRAGMA page_size")
            open_count = f"SELECT COUNT(*) FROM transactions WHERE {_OPEN}"  # noqa: S608  # constant
            return JournalStats(
                transactions=one("SELECT COUNT(*) FROM transactions"),
                open_intents=one(f"{open_count} AND state = ?", INTENT),
                in_doubt=one(f"{open_count} AND state = ?", IN_DOUBT),
                unacked=one("SELECT COUNT(*) FROM outbox WHERE state <> 'acked'"),
                oldest_unacked_at=one("SELECT MIN(sealed_at) FROM outbox WHERE state <> 'acked'"),
                last_seq=self._tail(conn)[0],
                blacklist_version=int(
                    one("SELECT COALESCE(MAX(value), 0) FROM meta WHERE key = 'blacklist_version'")
                ),
                blacklist_size=one("SELECT COUNT(*) FROM blacklist"),
                size_bytes=one("PRAGMA page_count") * page,
            )

    def integrity_check(self) -> str | None:
        """``PRAGMA quick_check`` now; ``None`` when healthy, else the problem."""
        with self._read("integrity check") as conn:
            return self._check(conn)
