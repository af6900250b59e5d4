-- Journal schema v2 (DESIGN §4): the same tables as v1 with fewer index pages written per
-- sealed transaction (bench/journal.py measured 17 pages of WAL per lock in v1). Applied by
-- agent.journal.store inside one transaction with PRAGMA user_version = 2; a v1 database is
-- rebuilt in place (tests/fixtures/journal_v1 is a v1 store from the field, kept as the fixture).
--
-- * transactions is WITHOUT ROWID: the tx_id key is the table, not a second b-tree beside it.
-- * its seq is no longer UNIQUE: the outbox's primary key is the one source of seq (the seal
--   inserts there and fails on a taken seq), and rows are joined on it.
-- * no card index: the only lookup by card is for its in-doubt records, and those are in the
--   state index, which keeps only the records without a card outcome (start-up recovery, the
--   health counters and a card's in-doubt lookup search those), so it stays a page or two; a
--   record leaves it at its outcome and the seal does not touch it.
-- * the idempotency index skips the rows without a key (every CLI and uplink-command row).
-- * outbox.tx_id has no unique index and no foreign key: the seal writes both rows in one
--   transaction, and rows are looked up by seq.

CREATE TABLE outbox_v2 (
    seq        INTEGER PRIMARY KEY,
    tx_id      TEXT NOT NULL,
    body       BLOB NOT NULL,
    hash       BLOB NOT NULL,
    prev_hash  BLOB NOT NULL,
    mac        BLOB NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('sealed', 'sent', 'acked')),
    sealed_at  INTEGER NOT NULL,
    sent_at    INTEGER,
    acked_at   INTEGER
);
INSERT INTO outbox_v2 (seq, tx_id, body, hash, prev_hash, mac, state, sealed_at, sent_at, acked_at)
    SELECT seq, tx_id, body, hash, prev_hash, mac, state, sealed_at, sent_at, acked_at FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_v2 RENAME TO outbox;
CREATE INDEX outbox_unacked ON outbox (seq) WHERE state <> 'acked';
CREATE INDEX outbox_acked_at ON outbox (acked_at) WHERE state = 'acked';

CREATE TABLE transactions_v2 (
    tx_id           TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    state           TEXT NOT NULL,
    card_id_code    TEXT,
    terminal_id     TEXT NOT NULL,
    offline         INTEGER NOT NULL CHECK (offline IN (0, 1)),
    reason          TEXT,
    idempotency_key TEXT,
    auth_id         TEXT,
    outcome         TEXT CHECK (outcome IS NULL OR outcome IN ('done', 'failed')),
    result          TEXT,
    error_code      TEXT,
    personal        BLOB,            -- AES-GCM(CBOR {"salt", "data"}), aad = tx_id; NULL if none
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    seq             INTEGER          -- set at seal; the outbox row's key
) WITHOUT ROWID;
INSERT INTO transactions_v2 (tx_id, kind, state, card_id_code, terminal_id, offline, reason,
        idempotency_key, auth_id, outcome, result, error_code, personal, created_at, updated_at,
        seq)
    SELECT tx_id, kind, state, card_id_code, terminal_id, offline, reason, idempotency_key,
        auth_id, outcome, result, error_code, personal, created_at, updated_at, seq
    FROM transactions;
DROP TABLE transactions;
ALTER TABLE transactions_v2 RENAME TO transactions;
CREATE UNIQUE INDEX transactions_idempotency ON transactions (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- queries name the states as literals so that the planner can prove they are in this index
CREATE INDEX transactions_open ON transactions (state) WHERE state IN ('intent', 'in_doubt');
