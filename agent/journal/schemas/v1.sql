-- Journal schema v1 (DESIGN §4). Applied by agent.journal.store inside one transaction that also
-- sets PRAGMA user_version = 1. Times are integer Unix milliseconds (UTC).

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB
) WITHOUT ROWID;

-- One row per card-changing operation; state follows agent.tx.machine.TABLE.
CREATE TABLE transactions (
    tx_id           TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    state           TEXT NOT NULL,
    card_id_code    TEXT,
    terminal_id     TEXT NOT NULL,
    offline         INTEGER NOT NULL CHECK (offline IN (0, 1)),
    reason          TEXT,
    idempotency_key TEXT UNIQUE,
    auth_id         TEXT,
    outcome         TEXT CHECK (outcome IS NULL OR outcome IN ('done', 'failed')),
    result          TEXT,
    error_code      TEXT,
    personal        BLOB,            -- AES-GCM(CBOR {"salt", "data"}), aad = tx_id; NULL if none
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    seq             INTEGER UNIQUE   -- set at seal
);
CREATE INDEX transactions_card ON transactions (card_id_code, state);
CREATE INDEX transactions_state ON transactions (state);

-- Sealed records: the outbox and the hash chain. seq is gapless (assigned as tail + 1 in the
-- sealing transaction); body is the canonical CBOR that is hashed, MAC'd and sent.
CREATE TABLE outbox (
    seq        INTEGER PRIMARY KEY,
    tx_id      TEXT NOT NULL UNIQUE REFERENCES transactions (tx_id),
    body       BLOB NOT NULL,
    hash       BLOB NOT NULL,
    prev_hash  BLOB NOT NULL,
    mac        BLOB NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('sealed', 'sent', 'acked')),
    sealed_at  INTEGER NOT NULL,
    sent_at    INTEGER,
    acked_at   INTEGER
);
CREATE INDEX outbox_unacked ON outbox (seq) WHERE state <> 'acked';
CREATE INDEX outbox_acked_at ON outbox (acked_at) WHERE state = 'acked';

-- Lost cards (黑名单), replaced as a whole by a snapshot or changed by a delta; the version is
-- the meta row 'blacklist_version'.
CREATE TABLE blacklist (
    card_id_code TEXT PRIMARY KEY,
    reason       TEXT NOT NULL,
    version      INTEGER NOT NULL
) WITHOUT ROWID;

-- Signed authorizations pushed by central for offline unlock / PIN reset / PIN unblock.
CREATE TABLE authorizations (
    auth_id      TEXT PRIMARY KEY,
    card_id_code TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('unlock', 'pin_reset', 'pin_unblock')),
    expires_at   INTEGER NOT NULL,
    received_at  INTEGER NOT NULL,
    used_at      INTEGER,
    used_by      TEXT,
    raw          BLOB NOT NULL
);
CREATE INDEX authorizations_card ON authorizations (card_id_code, kind, expires_at);

-- Offline-policy counters, e.g. ('activate_offline', '2025-01-31').
CREATE TABLE counters (
    name   TEXT NOT NULL,
    window_key TEXT NOT NULL,
    value  INTEGER NOT NULL,
    PRIMARY KEY (name, window_key)
) WITHOUT ROWID;

-- Events for upstream reporting (journal_quarantined, refusals, auto-locks, ...).
CREATE TABLE events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    data     BLOB NOT NULL,          -- canonical CBOR map, personal data already masked
    reported INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX events_unreported ON events (id) WHERE reported = 0;
