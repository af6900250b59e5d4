"""The reference central: the other half of the uplink (DESIGN §5).

It is the simulator the tests and the demo run against and the example for integrators:

* consumes ``$share/<group>/ssc/v1/+/tx`` and ``…/+/event`` (shared subscriptions, so several
  instances split the load; they must share one database file for the chain check);
* validates every message against ``messages.cddl``, recomputes the record digest from the
  ``tx`` message (:func:`agent.uplink.outbox.parse_tx`), verifies the security-module MAC
  (``verify_seal`` with the terminal number of the topic, which must be the record's) and the
  hash chain per terminal. Records may arrive in any order: they are stored, and the chain is
  verified over the contiguous prefix from seq 1; a break raises an ``alerts`` row;
* dedupes by (terminal, seq): a duplicate with the same digest is acked again; one with another
  digest is a ``conflict`` alert (its bytes kept in the alert) and is never overwritten;
* opens the personal data of a loss report made without the card (``pii``, sealed to its
  X25519 key, :mod:`agent.wire.pii`), checks it against the sealed ``personal_digest`` and
  keeps it in ``loss_reports`` (:meth:`ReferenceCentral.loss_reports`, masked by default); a
  ``pii`` it cannot open or trust is a ``pii_unreadable`` alert, and the record is still
  stored and acked;
* stores in SQLite (WAL, ``synchronous=FULL``) and only then acks, batched as seq ranges, on
  ``ssc/v1/<t>/ack``. A record whose MAC does not verify is never acked: an ack would let a
  forger make the terminal drop a genuine record with the same seq;
* keeps the blacklist (versioned, with a change log for deltas) and signs commands
  (COSE_Sign1, Ed25519) with a monotonic counter kept in the database, a random id and an
  issued/expires window: blacklist snapshot/delta (broadcast on ``ssc/v1/all/blacklist``),
  authorize unlock|pin_reset|pin_unblock, card_replaced, config_set, ping, report, resend.
  A terminal reporting ``command_rejected`` with ``need = "snapshot"`` gets a snapshot;
* answers online authorization requests (``authorization_request`` events, issue 4) with the
  policy of :meth:`CentralStore.decide_authorization`, recorded in ``authorization_requests``:
  refused (a signed ``authorization_refused`` naming the request) when the card was replaced
  (:meth:`ReferenceCentral.card_replaced`; also an ``alerts`` row ``replaced_card_request``)
  or is on the blacklist (central's blacklist means a formal loss); otherwise granted with an
  ``authorize`` command bound to that card and kind that expires after ``authorization_ttl_s``
  (5 minutes); a request older than ``request_max_age_s`` is recorded as ``stale`` and not
  answered (the terminal stopped waiting long ago); with ``auto_authorize=False`` requests are
  only recorded (``pending``), as for an operator who decides by hand.

The signing key and the personal-data key are created (mode 0600) beside the database on first
start unless given (``<db>.signing-key``, ``<db>.pii-key``).

Cost: zcbor's Python validator takes several milliseconds per record, far more than everything
else central does; ``schema_every=N`` checks every N-th record against the CDDL (1 = every
record, the default). Every record always goes through the strict codec (``TxMessage``: exact
field set and types, canonical encoding, one decode) and the MAC and chain checks. A burst of
messages is parsed and MAC-checked outside the write lock (the terminal's derived seal key is
cached), then stored in one transaction (one fsync) with one ``executemany`` per table, the
chain advanced once per terminal, and acked as ranges without waiting for each ack's PUBACK.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import sqlite3
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from agent.errors import ConfigError, UplinkUnavailableError, WireError
from agent.journal import Journal
from agent.journal.codec import GENESIS_HASH
from agent.journal.store import TransitionTable
from agent.privacy import mask_card_number, mask_name, mask_ssn
from agent.profile import CardProfile
from agent.psam.soft import seal_function
from agent.uplink import topics
from agent.uplink.flow import FullJitterBackoff, to_ranges
from agent.uplink.mqtt import connection
from agent.uplink.outbox import ParsedTx, parse_tx
from agent.uplink.session import NODELAY
from agent.wire import cose, schema
from agent.wire.codec import (
    AUTHORIZATION_REQUEST,
    AckMessage,
    AuthorizationRefused,
    AuthorizationRequest,
    Authorize,
    BlacklistDelta,
    BlacklistSnapshot,
    CardReplaced,
    Command,
    CommandBody,
    ConfigSet,
    EventMessage,
    Ping,
    Report,
    Resend,
    split_tx_payload,
)
from agent.wire.pii import open_personal, personal_digest

__all__ = [
    "CentralTls",
    "ReferenceCentral",
    "key_id",
    "load_or_create_pii_key",
    "load_or_create_signing_key",
    "seed_backlog",
]

log = logging.getLogger("agent.sim.central")

AUTHORIZE_KINDS = ("unlock", "pin_reset", "pin_unblock")
DEFAULT_COMMAND_TTL_S = 86_400
#: Lifetime of an authorization granted online (s): the citizen is at the terminal now.
ONLINE_AUTHORIZATION_TTL_S = 300
#: An authorization request older than this (by its event time) is not answered (s).
REQUEST_MAX_AGE_S = 120
MAX_BATCH = 1000
MAX_ACK_RANGES = 256
CHAIN_CHUNK = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
    terminal    TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    digest      BLOB NOT NULL,
    prev_hash   BLOB NOT NULL,
    mac         BLOB NOT NULL,
    body        BLOB NOT NULL,
    kind        TEXT,
    tx_id       TEXT,
    card        TEXT,
    outcome     TEXT,
    received_at INTEGER NOT NULL,
    duplicates  INTEGER NOT NULL DEFAULT 0,
    chain       TEXT NOT NULL DEFAULT 'pending' CHECK (chain IN ('pending', 'ok', 'broken')),
    PRIMARY KEY (terminal, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS terminals (
    terminal      TEXT PRIMARY KEY,
    verified_seq  INTEGER NOT NULL DEFAULT 0,
    verified_hash BLOB NOT NULL,
    last_seen     INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alerts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    terminal    TEXT,
    seq         INTEGER,
    kind        TEXT NOT NULL,
    detail      TEXT NOT NULL,
    fingerprint BLOB NOT NULL,
    payload     BLOB,
    UNIQUE (kind, fingerprint)
);
CREATE TABLE IF NOT EXISTS events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id BLOB NOT NULL UNIQUE,
    at       INTEGER NOT NULL,
    terminal TEXT NOT NULL,
    type     TEXT NOT NULL,
    time     INTEGER NOT NULL,
    data     BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS cards (card TEXT PRIMARY KEY, terminal TEXT NOT NULL, at INTEGER)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blacklist (card TEXT PRIMARY KEY, version INTEGER NOT NULL)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blacklist_log (
    version INTEGER PRIMARY KEY, base_version INTEGER NOT NULL, added TEXT NOT NULL,
    removed TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS replaced_cards (card TEXT PRIMARY KEY, at INTEGER NOT NULL)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS authorization_requests (
    request_id  BLOB PRIMARY KEY,
    terminal    TEXT NOT NULL,
    kind        TEXT NOT NULL,
    card        TEXT NOT NULL,
    time        INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    decision    TEXT NOT NULL
        CHECK (decision IN ('granted', 'refused', 'stale', 'pending', 'duplicate')),
    reason      TEXT,
    command_id  BLOB,
    sent        INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS loss_reports (
    terminal    TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    tx_id       TEXT NOT NULL,
    ssn         TEXT NOT NULL,
    card_number TEXT NOT NULL,
    name        TEXT,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (terminal, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS commands (
    counter  INTEGER PRIMARY KEY,
    id       BLOB NOT NULL UNIQUE,
    terminal TEXT NOT NULL,
    type     TEXT NOT NULL,
    issued   INTEGER NOT NULL,
    expires  INTEGER NOT NULL,
    signed   BLOB NOT NULL
);
"""


# --------------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------------
def load_or_create_signing_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """The Ed25519 command-signing key in ``path`` (PKCS#8 PEM), created 0600 if missing."""
    key = _load_or_create(path, Ed25519PrivateKey.generate, "signing key")
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"signing key {path} is not an Ed25519 key")
    return key


def load_or_create_pii_key(path: str | os.PathLike[str]) -> X25519PrivateKey:
    """The X25519 key that opens the personal data of loss reports (``agent.wire.pii``) in
    ``path`` (PKCS#8 PEM), created 0600 if missing."""
    key = _load_or_create(path, X25519PrivateKey.generate, "personal-data key")
    if not isinstance(key, X25519PrivateKey):
        raise ConfigError(f"personal-data key {path} is not an X25519 key")
    return key


def _load_or_create(
    path: str | os.PathLike[str],
    generate: Callable[[], Ed25519PrivateKey | X25519PrivateKey],
    what: str,
) -> object:
    p = Path(path)
    if not p.exists():
        pem = generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        p.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another instance created it first: use theirs
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
                f.flush()
                os.fsync(f.fileno())
    try:
        return serialization.load_pem_private_key(p.read_bytes(), password=None)
    except (ValueError, TypeError, OSError) as exc:
        raise ConfigError(f"{what} {p}: {exc.__class__.__name__}") from None


def public_key_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PrivateKey) -> bytes:
    """The COSE ``kid``: first 8 bytes of SHA-256 of the raw public key."""
    h = hashes.Hash(hashes.SHA256())
    h.update(public_key_bytes(key))
    return h.finalize()[:8]


def default_key_path(db_path: str | os.PathLike[str]) -> Path:
    """``<db>.signing-key`` beside the database."""
    return Path(f"{db_path}.signing-key")


def default_pii_key_path(db_path: str | os.PathLike[str]) -> Path:
    """``<db>.pii-key`` beside the database."""
    return Path(f"{db_path}.pii-key")


def pii_public_bytes(key: X25519PrivateKey) -> bytes:
    """The raw X25519 public key, for the agent's ``uplink.central_pii_key`` (hex)."""
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


# --------------------------------------------------------------------------------------------
# Store
# --------------------------------------------------------------------------------------------
@dataclass(slots=True)
class IngestResult:
    acks: dict[str, list[int]] = field(default_factory=dict)
    snapshot_for: set[str] = field(default_factory=set)
    #: (terminal, request, decision, reason) of new authorization requests to answer.
    authorizations: list[tuple[str, AuthorizationRequest, str, str | None]] = field(
        default_factory=list
    )
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _TxBatch:
    """The records of one ingest transaction, written with one ``executemany`` per table.

    ``digest_of`` answers from this batch first, then from the database, so a duplicate or a
    conflict inside one burst is recognised exactly as one across bursts.
    """

    def __init__(self, c: sqlite3.Connection) -> None:
        self.c = c
        self.touched: set[str] = set()
        self._new: dict[tuple[str, int], bytes] = {}
        self._stored: dict[tuple[str, int], bytes] = {}
        self._rows: list[tuple[Any, ...]] = []
        self._cards: dict[str, tuple[str, str, int]] = {}
        self._dups: list[tuple[str, int]] = []

    def prefetch(self, keys: Iterable[tuple[str, int]]) -> None:
        """Load the stored digests of these (terminal, seq) in a few queries, not one each."""
        by_terminal: dict[str, list[int]] = {}
        for terminal, seq in keys:
            by_terminal.setdefault(terminal, []).append(seq)
        for terminal, seqs in by_terminal.items():
            for i in range(0, len(seqs), 500):
                chunk = seqs[i : i + 500]
                rows = self.c.execute(
                    "SELECT seq, digest FROM records WHERE terminal = ? "  # noqa: S608
                    f"AND seq IN ({', '.join('?' * len(chunk))})",
                    (terminal, *chunk),
                ).fetchall()
                self._stored.update(((terminal, q), bytes(d)) for q, d in rows)

    def digest_of(self, terminal: str, seq: int) -> bytes | None:
        """The digest stored for (terminal, seq), by this batch or before it (prefetched)."""
        key = (terminal, seq)
        return self._new.get(key) or self._stored.get(key)

    def duplicate(self, terminal: str, seq: int) -> None:
        self._dups.append((terminal, seq))

    def store(self, terminal: str, rec: ParsedTx, now: int) -> None:
        m = rec.msg
        self._new[(terminal, m.seq)] = rec.digest
        self.touched.add(terminal)
        self._rows.append(
            (
                terminal, m.seq, rec.digest, m.prev_hash, m.mac, rec.body, m.kind, m.tx_id,
                m.card_id_code, m.outcome, now,
            )
        )  # fmt: skip
        if m.card_id_code is not None:
            seen = self._cards.get(m.card_id_code)
            if seen is None or m.completed_at >= seen[2]:
                self._cards[m.card_id_code] = (m.card_id_code, terminal, m.completed_at)

    def flush(self) -> None:
        c = self.c
        c.executemany(
            "INSERT INTO records (terminal, seq, digest, prev_hash, mac, body, kind, tx_id, card, "
            "outcome, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            self._rows,
        )
        c.executemany(
            "INSERT INTO cards (card, terminal, at) VALUES (?, ?, ?) ON CONFLICT (card) "
            "DO UPDATE SET terminal = excluded.terminal, at = excluded.at "
            "WHERE excluded.at >= cards.at",
            list(self._cards.values()),
        )
        c.executemany(
            "UPDATE records SET duplicates = duplicates + 1 WHERE terminal = ? AND seq = ?",
            self._dups,
        )


class CentralStore:
    """Central's SQLite database (sync; one connection behind a lock)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        schema_every: int = 1,
        auto_authorize: bool = True,
        request_max_age_s: float = REQUEST_MAX_AGE_S,
    ) -> None:
        self.path = Path(path)
        self.schema_every = schema_every
        self.auto_authorize = auto_authorize
        self.request_max_age_s = request_max_age_s
        self._tx_seen = 0
        #: Opens the personal data of loss reports (``ReferenceCentral`` sets it).
        self.pii_key: X25519PrivateKey | None = None
        self._keys_profile: CardProfile | None = None
        self._seal_keys: dict[str, Callable[[bytes], bytes]] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            str(self.path), isolation_level=None, check_same_thread=False, timeout=10.0
        )
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = FULL")
        self._conn.execute("PRAGMA busy_timeout = 10000")
        with self._lock:
            self._conn.executescript(_SCHEMA)  # idempotent (IF NOT EXISTS)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            c = self._conn
            c.execute("BEGIN IMMEDIATE")
            try:
                yield c
            except BaseException:
                c.execute("ROLLBACK")
                raise
            c.execute("COMMIT")

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, tuple(args)).fetchall()

    # ---- meta / counters ------------------------------------------------------------------
    def meta(self, key: str, default: Any = None) -> Any:
        rows = self.query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else default

    def _meta_int(self, c: sqlite3.Connection, key: str) -> int:
        r = c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(r[0]) if r else 0

    def log_command(self, make: Callable[[int], tuple[Command, bytes]]) -> tuple[Command, bytes]:
        """Take the next counter and store the signed command, in one transaction."""
        with self._write() as c:
            counter = self._meta_int(c, "counter") + 1
            command, signed = make(counter)
            c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('counter', ?)", (counter,))
            c.execute(
                "INSERT INTO commands (counter, id, terminal, type, issued, expires, signed) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    counter,
                    command.id,
                    command.terminal,
                    command.type,
                    command.issued,
                    command.expires,
                    signed,
                ),
            )
        return command, signed

    # ---- blacklist --------------------------------------------------------------------------
    def blacklist_version(self) -> int:
        return int(self.meta("blacklist_version", 0))

    def blacklist(self) -> list[str]:
        return [r[0] for r in self.query("SELECT card FROM blacklist ORDER BY card")]

    def blacklist_change(self, add: Iterable[str], remove: Iterable[str]) -> BlacklistDelta | None:
        """Apply a change as a new version; returns the delta (None when nothing changes)."""
        with self._write() as c:
            base = self._meta_int(c, "blacklist_version")
            present = {r[0] for r in c.execute("SELECT card FROM blacklist").fetchall()}
            added = sorted({a for a in add if a not in present})
            removed = sorted({r for r in remove if r in present} - set(added))
            if not added and not removed:
                return None
            version = base + 1
            c.executemany(
                "INSERT INTO blacklist (card, version) VALUES (?, ?)", ((a, version) for a in added)
            )
            c.executemany("DELETE FROM blacklist WHERE card = ?", ((r,) for r in removed))
            c.execute(
                "INSERT INTO blacklist_log (version, base_version, added, removed) "
                "VALUES (?, ?, ?, ?)",
                (version, base, ",".join(added), ",".join(removed)),
            )
            c.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('blacklist_version', ?)",
                (version,),
            )
        return BlacklistDelta(
            base, version, tuple(bytes.fromhex(a) for a in added),
            tuple(bytes.fromhex(r) for r in removed),
        )  # fmt: skip

    # ---- cards ------------------------------------------------------------------------------
    def last_terminal_of(self, card: str) -> str | None:
        rows = self.query("SELECT terminal FROM cards WHERE card = ?", (card,))
        return str(rows[0][0]) if rows else None

    def mark_replaced(self, card: str) -> None:
        """The card was replaced (补换卡): never authorized again."""
        with self._write() as c:
            c.execute(
                "INSERT OR IGNORE INTO replaced_cards (card, at) VALUES (?, ?)", (card, _now_ms())
            )

    def is_replaced(self, card: str) -> bool:
        return bool(self.query("SELECT 1 FROM replaced_cards WHERE card = ?", (card,)))

    # ---- online authorization requests -------------------------------------------------------
    def decide_authorization(
        self, c: sqlite3.Connection, req: AuthorizationRequest, age_s: float
    ) -> tuple[str, str | None]:
        """The reference policy: ``(decision, reason)``.

        1. a request older than ``request_max_age_s``: ``stale`` (not answered);
        2. ``auto_authorize`` off: ``pending`` (recorded for an operator; not answered);
        3. the card was replaced: ``refused``, ``card_replaced`` (seed rule: a replaced card
           is never unlocked; nor is its PIN reset or unblocked);
        4. the card is on the blacklist: ``refused``, ``formal_loss`` (central's blacklist is
           the formal loss list; lifting it is a counter service);
        5. otherwise ``granted``.
        """
        card = req.card_id_code.hex().upper()
        if age_s > self.request_max_age_s:
            return "stale", None
        if not self.auto_authorize:
            return "pending", None
        if c.execute("SELECT 1 FROM replaced_cards WHERE card = ?", (card,)).fetchone():
            return "refused", "card_replaced"
        if c.execute("SELECT 1 FROM blacklist WHERE card = ?", (card,)).fetchone():
            return "refused", "formal_loss"
        return "granted", None

    def grant_pending(self, terminal: str, kind: str, card: str, command_id: bytes) -> int:
        """An operator authorized ``kind`` for ``card`` at ``terminal``: its ``pending``
        requests become ``granted`` (reason ``operator``) with the command that answered them.
        Returns how many."""
        with self._write() as c:
            return c.execute(
                "UPDATE authorization_requests SET decision = 'granted', reason = 'operator', "
                "command_id = ?, sent = 1 "
                "WHERE decision = 'pending' AND terminal = ? AND kind = ? AND card = ?",
                (command_id, terminal, kind, card),
            ).rowcount

    def answered_authorization(self, request_id: bytes, command_id: bytes | None) -> None:
        """Record the command that answered a request (``None``: it could not be sent)."""
        with self._write() as c:
            c.execute(
                "UPDATE authorization_requests SET command_id = ?, sent = ? WHERE request_id = ?",
                (command_id, int(command_id is not None), request_id),
            )

    # ---- ingest -----------------------------------------------------------------------------
    def _alert(
        self,
        c: sqlite3.Connection,
        kind: str,
        detail: str,
        where: tuple[str | None, int | None],
        payload: bytes,
    ) -> None:
        terminal, seq = where
        log.warning("central alert %s terminal=%s seq=%s: %s", kind, terminal, seq, detail)
        c.execute(
            "INSERT OR IGNORE INTO alerts (at, terminal, seq, kind, detail, fingerprint, payload) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                _now_ms(),
                terminal,
                seq,
                kind,
                detail[:500],
                hashlib.sha256(payload).digest(),
                payload[:65536],
            ),
        )

    def _seal_ok(self, profile: CardProfile, terminal: str, digest: bytes, mac: bytes) -> bool:
        """``verify_seal`` with the terminal's seal function cached (deriving its key costs
        more than everything else central does with a record)."""
        if profile is not self._keys_profile:
            self._keys_profile = profile
            self._seal_keys.clear()
        seal = self._seal_keys.get(terminal)
        if seal is None:
            # topics.terminal_of admits 12 digits only: always 6 BCD bytes
            seal = seal_function(profile, bytes.fromhex(terminal))
            self._seal_keys[terminal] = seal
        return hmac.compare_digest(seal(digest), mac)

    def ingest(self, items: Sequence[tuple[str, bytes]], profile: CardProfile) -> IngestResult:
        """Verify and store a batch of (topic, payload) in one transaction; say what to ack.

        Records are parsed and their MACs verified before the write transaction; the stored ones
        go in with one ``executemany`` per table and the chain advances once per terminal, so a
        burst costs one commit (one fsync) and a few statements, not several per record.
        """
        res = IngestResult()
        now = _now_ms()
        checked: list[tuple[str, ParsedTx | None, bytes, str]] = []
        personal: dict[tuple[str, int], dict[str, str] | str] = {}
        for topic, payload in items:
            terminal = topics.terminal_of(topic)
            if terminal is None:
                continue  # not ours (the subscriptions never deliver this)
            if topic.endswith("/tx"):
                try:
                    records = split_tx_payload(payload)
                except WireError as exc:  # a malformed batch: no record in it is trusted
                    checked.append((terminal, None, payload, f"malformed: {exc.message}"))
                    continue
                for one in records:  # a batch's records are checked and stored one by one
                    rec, problem = self._check_tx(terminal, one, profile)
                    checked.append((terminal, rec, one, problem))
                    if rec is not None and not problem and rec.msg.pii is not None:
                        personal[(terminal, rec.seq)] = self._open_pii(terminal, rec)
            elif topic.endswith("/event"):
                checked.append((terminal, None, payload, "event"))
        with self._write() as c:
            batch = _TxBatch(c)
            batch.prefetch((t, rec.seq) for t, rec, _, problem in checked if rec and not problem)
            for terminal, rec, payload, problem in checked:
                if problem == "event":
                    self._ingest_event(c, terminal, payload, now, res)
                elif rec is None or problem:
                    res.rejected += 1
                    where = (terminal, rec.seq if rec is not None else None)
                    kind, _, detail = problem.partition(":")
                    self._alert(c, kind, detail.strip(), where, payload)
                else:
                    stored = self._ingest_tx(c, batch, terminal, rec, payload, now=now, res=res)
                    opened = personal.get((terminal, rec.seq))
                    if stored and isinstance(opened, dict):
                        self._store_loss_report(c, terminal, rec, opened, now)
                    elif stored and isinstance(opened, str):
                        # the record is sealed and valid, so it is stored and acked; what it
                        # says of the citizen cannot be trusted, and someone must look
                        self._alert(c, "pii_unreadable", opened, (terminal, rec.seq), payload)
            batch.flush()
            for t in sorted(batch.touched):
                self._advance_chain(c, t)
        return res

    def _check_tx(
        self, terminal: str, payload: bytes, profile: CardProfile
    ) -> tuple[ParsedTx | None, str]:
        """Parse and verify one record outside the write lock: (record, "" or "kind: detail")."""
        self._tx_seen += 1
        check_schema = self.schema_every > 0 and self._tx_seen % self.schema_every == 0
        try:
            rec = parse_tx(payload)
            if check_schema:
                schema.validate("tx-record", rec.obj)
        except WireError as exc:
            return None, f"malformed: {exc.message}"
        if rec.terminal != terminal:
            return rec, f"terminal_mismatch: record of {rec.terminal} on the topic of {terminal}"
        if not self._seal_ok(profile, terminal, rec.digest, rec.mac):
            return rec, "bad_mac: seal MAC does not verify"
        return rec, ""

    def _open_pii(self, terminal: str, rec: ParsedTx) -> dict[str, str] | str:
        """The personal data a record carries in ``pii`` (``agent.wire.pii``), checked against
        the sealed body's ``personal_digest``; or what is wrong with it."""
        assert rec.msg.pii is not None
        if self.pii_key is None:
            return "central has no personal-data key"
        try:
            data, salt = open_personal(rec.msg.pii, self.pii_key, terminal, rec.msg.tx_id)
        except WireError as exc:
            return exc.message
        if rec.msg.personal_digest != personal_digest(data, salt):
            return "pii: the personal data does not match the sealed personal_digest"
        return data

    def _store_loss_report(
        self,
        c: sqlite3.Connection,
        terminal: str,
        rec: ParsedTx,
        data: Mapping[str, str],
        now: int,
    ) -> None:
        c.execute(
            "INSERT OR IGNORE INTO loss_reports (terminal, seq, tx_id, ssn, card_number, name, "
            "received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (terminal, rec.seq, rec.msg.tx_id, data["ssn"], data["card_number"],
             data.get("name"), now),
        )  # fmt: skip

    def _ingest_tx(
        self,
        c: sqlite3.Connection,
        batch: _TxBatch,
        terminal: str,
        rec: ParsedTx,
        payload: bytes,
        *,
        now: int,
        res: IngestResult,
    ) -> bool:
        """Store ``rec`` (``True``) or recognise it as a duplicate or a conflict (``False``);
        either way it is acked."""
        acks = res.acks.setdefault(terminal, [])
        old = batch.digest_of(terminal, rec.seq)
        if old is not None:
            if old == rec.digest:
                res.duplicates += 1
                batch.duplicate(terminal, rec.seq)
            else:
                # A second, validly sealed record with this seq: keep the first, keep this
                # one's bytes in the alert, and ack so the terminal is not stuck resending.
                self._alert(
                    c, "conflict", "another record with this seq is already stored",
                    (terminal, rec.seq), payload,
                )  # fmt: skip
            acks.append(rec.seq)
            return False
        batch.store(terminal, rec, now)
        res.stored += 1
        acks.append(rec.seq)
        return True

    def _advance_chain(self, c: sqlite3.Connection, terminal: str) -> None:
        """Verify the chain over the contiguous prefix stored since the last call."""
        r = c.execute(
            "SELECT verified_seq, verified_hash FROM terminals WHERE terminal = ?", (terminal,)
        ).fetchone()
        seq, prev = (int(r[0]), bytes(r[1])) if r else (0, GENESIS_HASH)
        start = seq
        broken: list[tuple[str, int]] = []
        while True:
            # the next CHAIN_CHUNK stored records after the verified prefix, stopping at a gap
            rows = c.execute(
                "SELECT seq, prev_hash, digest FROM records WHERE terminal = ? "
                "AND seq BETWEEN ? AND ? ORDER BY seq",
                (terminal, seq + 1, seq + CHAIN_CHUNK),
            ).fetchall()
            for row_seq, row_prev, row_digest in rows:
                if row_seq != seq + 1:
                    break  # a gap: the rest waits as pending
                seq += 1
                if bytes(row_prev) != prev:
                    self._alert(
                        c, "chain_break",
                        f"prev_hash of seq {seq} is not the digest of seq {seq - 1}",
                        (terminal, seq), bytes(row_digest),
                    )  # fmt: skip
                    broken.append((terminal, seq))
                prev = bytes(row_digest)
            if len(rows) < CHAIN_CHUNK or seq != rows[-1][0]:
                break
        if seq == start:
            if r is None:
                c.execute(
                    "INSERT INTO terminals (terminal, verified_seq, verified_hash, last_seen) "
                    "VALUES (?, 0, ?, ?)",
                    (terminal, GENESIS_HASH, _now_ms()),
                )
            return
        c.execute(
            "UPDATE records SET chain = 'ok' WHERE terminal = ? AND seq BETWEEN ? AND ?",
            (terminal, start + 1, seq),
        )
        c.executemany("UPDATE records SET chain = 'broken' WHERE terminal = ? AND seq = ?", broken)
        c.execute(
            "INSERT INTO terminals (terminal, verified_seq, verified_hash, last_seen) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (terminal) DO UPDATE SET "
            "verified_seq = excluded.verified_seq, verified_hash = excluded.verified_hash, "
            "last_seen = excluded.last_seen",
            (terminal, seq, prev, _now_ms()),
        )

    def _ingest_event(
        self, c: sqlite3.Connection, terminal: str, payload: bytes, now: int, res: IngestResult
    ) -> None:
        try:
            ev = EventMessage.from_cbor(payload, validate=True)
        except WireError as exc:
            self._alert(c, "malformed_event", exc.message, (terminal, None), payload)
            return
        if ev.terminal != terminal:
            self._alert(
                c, "terminal_mismatch", "event of another terminal", (terminal, None), payload
            )
            return
        cur = c.execute(
            "INSERT OR IGNORE INTO events (event_id, at, terminal, type, time, data) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (ev.id, now, terminal, ev.type, ev.time, payload),
        )
        if cur.rowcount and ev.type == "command_rejected" and ev.data.get("need") == "snapshot":
            res.snapshot_for.add(terminal)
        if cur.rowcount and ev.type == AUTHORIZATION_REQUEST:
            self._authorization_request(c, ev, payload, now=now, res=res)

    def _authorization_request(
        self,
        c: sqlite3.Connection,
        ev: EventMessage,
        payload: bytes,
        *,
        now: int,
        res: IngestResult,
    ) -> None:
        terminal = ev.terminal  # checked against the topic by the caller
        req = ev.authorization_request()  # the codec checked the shape already
        card = req.card_id_code.hex().upper()
        decision, reason = self.decide_authorization(c, req, now / 1000 - ev.time)
        cur = c.execute(
            "INSERT OR IGNORE INTO authorization_requests (request_id, terminal, kind, card, "
            "time, received_at, decision, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (req.request_id, terminal, req.kind, card, ev.time, now, decision, reason),
        )
        if not cur.rowcount:
            # another event carried this request id: answer once, keep the first
            self._alert(
                c, "duplicate_request", "authorization request id seen before",
                (terminal, None), payload,
            )  # fmt: skip
            return
        if reason == "card_replaced":
            self._alert(
                c, "replaced_card_request",
                f"{req.kind} requested for replaced card {card[:4]}****{card[-6:]}",
                (terminal, None), payload,
            )  # fmt: skip
        if decision in ("granted", "refused"):
            res.authorizations.append((terminal, req, decision, reason))


# --------------------------------------------------------------------------------------------
# The service
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CentralTls:
    ca_file: str
    cert_file: str
    key_file: str


def parse_broker_url(url: str) -> tuple[str, int, bool]:
    """``mqtt://host:port`` or ``mqtts://host:port`` -> (host, port, tls)."""
    u = urlsplit(url)
    if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
        raise ConfigError(f"broker URL must be mqtt://host:port or mqtts://host:port, got {url!r}")
    return u.hostname, u.port or (8883 if u.scheme == "mqtts" else 1883), u.scheme == "mqtts"


def _card_hex(card: str) -> str:
    c = card.strip().upper()
    if len(c) != 32 or any(ch not in "0123456789ABCDEF" for ch in c):
        raise ConfigError("a card identification code is 32 hex digits")
    return c


class _Inbox:
    """The ``tx`` and ``event`` messages that arrived and are not ingested yet, taken a burst
    at a time (one wake-up and one ingest transaction for everything that came meanwhile)."""

    def __init__(self) -> None:
        self._items: list[tuple[str, bytes]] = []
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, topic: str, payload: bytes) -> None:
        self._items.append((topic, payload))
        self._ready.set()

    async def take(self, limit: int) -> list[tuple[str, bytes]]:
        """The oldest ``limit`` messages at most; waits while there are none."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        batch, self._items = self._items[:limit], self._items[limit:]
        return batch

    def queue_type(self) -> type[asyncio.Queue[aiomqtt.Message]]:
        """An aiomqtt ``queue_type`` whose ``put_nowait`` (aiomqtt's one call on its incoming
        queue) feeds this inbox.

        aiomqtt's message iterator costs a task and an ``asyncio.wait`` per message, as much
        CPU as paho's own work on it (docs/PERFORMANCE.md). Messages go straight here instead;
        nothing ever reaches the queue itself, so iterating ``client.messages`` only tells when
        the connection ends (it raises ``MqttError``).
        """
        inbox = self

        class _Feed(asyncio.Queue[aiomqtt.Message]):
            def put_nowait(self, item: aiomqtt.Message) -> None:
                payload = item.payload
                if isinstance(payload, bytes | bytearray):
                    inbox.put(item.topic.value, bytes(payload))

        return _Feed


class ReferenceCentral:
    """See the module docstring. ``await run()`` until cancelled; admin methods are async
    (they publish on the running connection, or on a short one of their own when not running);
    queries are sync."""

    def __init__(
        self,
        broker_url: str,
        db_path: str | os.PathLike[str],
        profile: CardProfile,
        signing_key: Ed25519PrivateKey | str | os.PathLike[str] | None = None,
        *,
        pii_key: X25519PrivateKey | str | os.PathLike[str] | None = None,
        tls: CentralTls | None = None,
        group: str = "central",
        client_id: str | None = None,
        schema_every: int = 1,
        clock: Callable[[], float] = time.time,
        auto_authorize: bool = True,
        authorization_ttl_s: int = ONLINE_AUTHORIZATION_TTL_S,
        request_max_age_s: float = REQUEST_MAX_AGE_S,
    ) -> None:
        self.host, self.port, use_tls = parse_broker_url(broker_url)
        if use_tls and tls is None:
            raise ConfigError("mqtts:// needs the CA, certificate and key files")
        self.tls = tls
        self.group = group
        self.client_id = client_id or f"{group}-{uuid.uuid4().hex[:10]}"
        self.profile = profile
        self.store = CentralStore(
            db_path,
            schema_every=schema_every,
            auto_authorize=auto_authorize,
            request_max_age_s=request_max_age_s,
        )
        self.authorization_ttl_s = max(1, authorization_ttl_s)
        if not isinstance(signing_key, Ed25519PrivateKey):
            signing_key = load_or_create_signing_key(
                signing_key if signing_key is not None else default_key_path(db_path)
            )
        self.key = signing_key
        self.kid = key_id(signing_key)
        if not isinstance(pii_key, X25519PrivateKey):
            pii_key = load_or_create_pii_key(
                pii_key if pii_key is not None else default_pii_key_path(db_path)
            )
        self.pii_key = pii_key
        self.store.pii_key = pii_key
        self._clock = clock
        self._client_now: aiomqtt.Client | None = None
        self._ready = asyncio.Event()
        self._inbox = _Inbox()
        self.stats: dict[str, int] = {"stored": 0, "duplicates": 0, "rejected": 0, "acks": 0}

    # ---- identity ---------------------------------------------------------------------------
    @property
    def public_key(self) -> bytes:
        return public_key_bytes(self.key)

    @property
    def pii_public_key(self) -> bytes:
        """The raw X25519 key terminals seal personal data to (``uplink.central_pii_key``)."""
        return pii_public_bytes(self.pii_key)

    def close(self) -> None:
        self.store.close()

    # ---- connection -------------------------------------------------------------------------
    def _client(self, identifier: str) -> aiomqtt.Client:
        ctx = None
        if self.tls is not None:
            ctx = ssl.create_default_context(cafile=self.tls.ca_file)
            ctx.load_cert_chain(self.tls.cert_file, self.tls.key_file)
        return aiomqtt.Client(
            self.host,
            self.port,
            identifier=identifier,
            protocol=aiomqtt.ProtocolVersion.V5,
            tls_context=ctx,
            keepalive=30,
            timeout=10,
            queue_type=self._inbox.queue_type(),
            # small packets go out at once: with Nagle on, an ack or a record waits for the peer's
            # delayed TCP ACK (40 ms on Linux) whenever the pipe is not full
            socket_options=NODELAY,
        )

    async def wait_ready(self) -> None:
        """Return once subscribed (wrap in ``asyncio.timeout``)."""
        await self._ready.wait()

    async def run(self) -> None:
        """Consume, verify, store and ack; reconnects with jitter until cancelled."""
        backoff = FullJitterBackoff(0.1, 5.0)
        while True:
            try:
                async with connection(self._client(self.client_id)) as client:
                    await client.subscribe(topics.shared(self.group, "ssc/v1/+/tx"), qos=1)
                    await client.subscribe(topics.shared(self.group, "ssc/v1/+/event"), qos=1)
                    self._client_now = client
                    self._ready.set()
                    backoff.reset()
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._worker(client, tg), name="central-worker")
                        # messages go to the inbox (see _Inbox.queue_type): this loop only
                        # ends, with MqttError, when the connection does
                        async for _ in client.messages:
                            pass  # pragma: no cover - nothing is ever queued here
            except* aiomqtt.MqttError as group:
                log.info("central connection lost: %s", group.exceptions[0])
            finally:
                self._client_now = None
                self._ready.clear()
            await asyncio.sleep(backoff.next())

    async def _worker(self, client: aiomqtt.Client, tg: asyncio.TaskGroup) -> None:
        while True:
            batch = await self._inbox.take(MAX_BATCH)
            res = await asyncio.to_thread(self.store.ingest, batch, self.profile)
            self.stats["stored"] += res.stored
            self.stats["duplicates"] += res.duplicates
            self.stats["rejected"] += res.rejected
            for terminal, seqs in res.acks.items():
                ranges = to_ranges(seqs)
                for i in range(0, len(ranges), MAX_ACK_RANGES):
                    ack = AckMessage(terminal, tuple(ranges[i : i + MAX_ACK_RANGES]))
                    # not awaited here: the next burst is verified while the broker takes the
                    # ack (acks are idempotent, their order does not matter; a failure ends
                    # the connection through the task group, as an awaited one did)
                    tg.create_task(client.publish(topics.ack(terminal), ack.to_cbor(), qos=1))
                    self.stats["acks"] += 1
            for terminal in sorted(res.snapshot_for):
                await self.send_blacklist_snapshot(terminal)
            for terminal, req, decision, reason in res.authorizations:
                await self.answer_authorization(terminal, req, decision, reason)

    async def _send(self, topic: str, payload: bytes) -> None:
        client = self._client_now
        if client is not None:
            try:
                await client.publish(topic, payload, qos=1, timeout=10)
            except aiomqtt.MqttError as exc:
                raise UplinkUnavailableError(f"publish failed: {exc}") from None
            return
        try:
            async with connection(self._client(f"{self.client_id}-admin")) as once:
                await once.publish(topic, payload, qos=1, timeout=10)
        except aiomqtt.MqttError as exc:
            raise UplinkUnavailableError(f"could not reach the broker: {exc}") from None

    # ---- commands ---------------------------------------------------------------------------
    def sign(self, terminal: str, body: CommandBody, ttl_s: int = DEFAULT_COMMAND_TTL_S) -> bytes:
        """Sign a command (next counter, new id, issued now) and log it; returns COSE bytes."""
        return self.sign_command(terminal, body, ttl_s)[1]

    def sign_command(
        self, terminal: str, body: CommandBody, ttl_s: int = DEFAULT_COMMAND_TTL_S
    ) -> tuple[Command, bytes]:
        """:meth:`sign`, also returning the command."""
        now = int(self._clock())

        def make(counter: int) -> tuple[Command, bytes]:
            cmd = Command(uuid.uuid4().bytes, terminal, counter, now, now + max(1, ttl_s), body)
            return cmd, cose.sign(cmd.to_cbor(), self.key, self.kid)

        return self.store.log_command(make)

    async def command(
        self, terminal: str, body: CommandBody, ttl_s: int = DEFAULT_COMMAND_TTL_S
    ) -> bytes:
        """Sign and send a command to one terminal (``ssc/v1/<t>/cmd``); returns the bytes."""
        signed = await asyncio.to_thread(self.sign, terminal, body, ttl_s)
        await self._send(topics.cmd(terminal), signed)
        return signed

    async def broadcast(self, body: CommandBody, ttl_s: int = DEFAULT_COMMAND_TTL_S) -> bytes:
        """Sign for ``"all"`` and send on ``ssc/v1/all/blacklist``."""
        signed = await asyncio.to_thread(self.sign, "all", body, ttl_s)
        await self._send(topics.BROADCAST_BLACKLIST, signed)
        return signed

    async def blacklist_add(self, cards: Iterable[str]) -> int:
        """Add cards (32 hex digits); broadcasts the delta. Returns the new version."""
        delta = await asyncio.to_thread(
            self.store.blacklist_change, [_card_hex(c) for c in cards], []
        )
        if delta is not None:
            await self.broadcast(delta)
        return self.store.blacklist_version()

    async def blacklist_remove(self, cards: Iterable[str]) -> int:
        delta = await asyncio.to_thread(
            self.store.blacklist_change, [], [_card_hex(c) for c in cards]
        )
        if delta is not None:
            await self.broadcast(delta)
        return self.store.blacklist_version()

    async def send_blacklist_snapshot(self, terminal: str | None = None) -> int:
        """The whole list at the current version, to one terminal or to all."""
        version = self.store.blacklist_version()
        body = BlacklistSnapshot(version, tuple(bytes.fromhex(c) for c in self.store.blacklist()))
        if terminal is None:
            await self.broadcast(body)
        else:
            await self.command(terminal, body)
        return version

    async def authorize(
        self, kind: str, card: str, terminal: str | None = None, ttl_s: int = 3600
    ) -> str:
        """Authorize an offline unlock / PIN reset / PIN unblock of ``card``; to ``terminal`` or
        the last terminal that reported the card. Returns the terminal."""
        if kind not in AUTHORIZE_KINDS:
            raise ConfigError(f"authorization kind must be one of {AUTHORIZE_KINDS}")
        code = _card_hex(card)
        target = terminal or self.store.last_terminal_of(code)
        if target is None:
            raise ConfigError("no terminal has reported this card: give --terminal")
        expires = int(self._clock()) + max(1, ttl_s)
        body = Authorize(kind, bytes.fromhex(code), expires)
        command, signed = await asyncio.to_thread(self.sign_command, target, body, ttl_s)
        await self._send(topics.cmd(target), signed)
        # the operator's answer to requests this central kept pending (``auto_authorize`` off)
        await asyncio.to_thread(self.store.grant_pending, target, kind, code, command.id)
        return target

    async def answer_authorization(
        self, terminal: str, req: AuthorizationRequest, decision: str, reason: str | None
    ) -> bytes | None:
        """Send the answer to an online request: ``authorize`` for this card and kind expiring
        after ``authorization_ttl_s``, or ``authorization_refused`` naming the request.
        Returns the signed command, or ``None`` when the broker could not take it (recorded;
        the terminal's wait then times out)."""
        ttl = self.authorization_ttl_s
        body: CommandBody
        if decision == "granted":
            body = Authorize(req.kind, req.card_id_code, int(self._clock()) + ttl)
        else:
            body = AuthorizationRefused(
                req.kind, reason or "denied", req.request_id, req.card_id_code
            )
        command, signed = await asyncio.to_thread(self.sign_command, terminal, body, ttl)
        try:
            await self._send(topics.cmd(terminal), signed)
        except UplinkUnavailableError as exc:
            log.warning("answer to authorization request not sent: %s", exc)
            await asyncio.to_thread(self.store.answered_authorization, req.request_id, None)
            return None
        await asyncio.to_thread(self.store.answered_authorization, req.request_id, command.id)
        return signed

    async def card_replaced(self, card: str, terminal: str | None = None) -> None:
        """The card was replaced: blacklist it and tell the terminals (all, or one); online
        authorization requests for it are refused from now on."""
        code = _card_hex(card)
        await asyncio.to_thread(self.store.mark_replaced, code)
        await self.blacklist_add([code])
        body = CardReplaced(bytes.fromhex(code))
        if terminal is None:
            await self.broadcast(body)
        else:
            await self.command(terminal, body)

    async def ping(self, terminal: str) -> None:
        await self.command(terminal, Ping())

    async def report(self, terminal: str) -> None:
        await self.command(terminal, Report())

    async def resend(self, terminal: str, from_seq: int) -> None:
        await self.command(terminal, Resend(from_seq))

    async def config_set(self, terminal: str, key: str, value: str | int | bool) -> None:
        await self.command(terminal, ConfigSet(key, value))

    # ---- queries ----------------------------------------------------------------------------
    def records(self, terminal: str | None = None) -> list[dict[str, Any]]:
        rows = self.store.query(
            "SELECT terminal, seq, kind, tx_id, card, outcome, chain, duplicates, digest, "
            "received_at FROM records WHERE (? IS NULL OR terminal = ?) ORDER BY terminal, seq",
            (terminal, terminal),
        )
        keys = ("terminal", "seq", "kind", "tx_id", "card", "outcome", "chain", "duplicates")
        return [
            {
                **dict(zip(keys, r[:8], strict=True)),
                "digest": bytes(r[8]).hex(),
                "received_at": r[9],
            }
            for r in rows
        ]

    def loss_reports(
        self, terminal: str | None = None, *, show_pii: bool = False
    ) -> list[dict[str, Any]]:
        """Loss reports whose personal data arrived (``pii``), masked unless ``show_pii``."""
        rows = self.store.query(
            "SELECT terminal, seq, tx_id, ssn, card_number, name, received_at FROM loss_reports "
            "WHERE (? IS NULL OR terminal = ?) ORDER BY terminal, seq",
            (terminal, terminal),
        )

        def shown(value: str | None, mask: Callable[[str], str]) -> str | None:
            return value if show_pii or not value else mask(value)

        return [
            {"terminal": t, "seq": seq, "tx_id": tx_id, "ssn": shown(ssn, mask_ssn),
             "card_number": shown(number, mask_card_number), "name": shown(name, mask_name),
             "received_at": at}
            for t, seq, tx_id, ssn, number, name, at in rows
        ]  # fmt: skip

    def alerts(self) -> list[dict[str, Any]]:
        rows = self.store.query(
            "SELECT id, at, terminal, seq, kind, detail FROM alerts ORDER BY id"
        )
        keys = ("id", "at", "terminal", "seq", "kind", "detail")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def events(self, terminal: str | None = None) -> list[EventMessage]:
        rows = self.store.query(
            "SELECT data FROM events WHERE (? IS NULL OR terminal = ?) ORDER BY id",
            (terminal, terminal),
        )
        return [EventMessage.from_cbor(bytes(r[0])) for r in rows]

    def authorization_requests(self, terminal: str | None = None) -> list[dict[str, Any]]:
        """Online authorization requests and central's decisions, oldest first."""
        rows = self.store.query(
            "SELECT request_id, terminal, kind, card, time, received_at, decision, reason, "
            "command_id, sent FROM authorization_requests WHERE (? IS NULL OR terminal = ?) "
            "ORDER BY received_at, request_id",
            (terminal, terminal),
        )
        keys = ("request_id", "terminal", "kind", "card", "time", "received_at", "decision")
        return [
            {
                **dict(zip(keys, r[:7], strict=True)),
                "request_id": bytes(r[0]).hex(),
                "reason": r[7],
                "command_id": bytes(r[8]).hex() if r[8] is not None else None,
                "sent": bool(r[9]),
            }
            for r in rows
        ]

    def chain_state(self, terminal: str) -> tuple[int, int]:
        """(verified contiguous seq, records stored) of a terminal."""
        r = self.store.query("SELECT verified_seq FROM terminals WHERE terminal = ?", (terminal,))
        n = self.store.query("SELECT COUNT(*) FROM records WHERE terminal = ?", (terminal,))
        return (int(r[0][0]) if r else 0), int(n[0][0])


def seed_backlog(
    journal: Journal, terminal: str, n: int, profile: CardProfile, *, card: str | None = None
) -> list[int]:
    """Journal ``n`` completed, sealed lock records of ``terminal`` (a terminal with a backlog,
    for tests, the benchmark and the demo), through the journal's own API. Returns the seqs."""
    from agent.tx.records import Kind, TxRecord

    seal = seal_function(profile, bytes.fromhex(terminal))
    code = card or "44030000D156000005" + "0" * 14
    seqs = []
    for _ in range(n):
        rec = TxRecord(kind=Kind.LOCK, terminal_id=terminal, card_id_code=code, offline=True)
        journal.create_intent(rec)
        journal.transition(rec.tx_id, "card_confirmed", result="ok")
        sealed = journal.seal(rec.tx_id, seal)
        seqs.append(sealed.seq)
    return seqs


def seed_state_dir(
    state_dir: Path, terminal: str, n: int, profile: CardProfile, transitions: TransitionTable
) -> Path:
    """A terminal state directory whose ``journal.db`` holds ``n`` sealed, unacked records
    (:func:`seed_backlog`), closed again; for tests that copy one backlog per case."""
    state_dir.mkdir(parents=True, exist_ok=True)
    journal = Journal(state_dir / "journal.db", transitions=transitions)
    try:
        seed_backlog(journal, terminal, n, profile)
    finally:
        journal.close()
    return state_dir
