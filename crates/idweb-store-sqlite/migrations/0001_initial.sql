-- Version 1: sessions, token-cache partitions and their entries, tombstones,
-- logout-token replay records.
--
-- All times are Unix seconds decided by the application's clock, never by
-- SQLite's. Every lookup the store makes is served by a primary key or one of
-- the indexes below, so its cost follows the number of matching rows, not the
-- size of the tables.

-- One row per server-side session. `data` is the JSON form of the whole
-- session; `iss`, `sub`, `sid`, `created_at` and `expires_at` are copies of its
-- fields, kept for lookups and expiry.
CREATE TABLE sessions (
    id         TEXT    NOT NULL PRIMARY KEY,
    iss        TEXT    NOT NULL,
    sub        TEXT    NOT NULL,
    sid        TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    data       TEXT    NOT NULL
) STRICT;

-- (iss, sid) -> sessions: front- and back-channel sign-out of one provider session.
CREATE INDEX sessions_by_provider_session ON sessions (iss, sid) WHERE sid IS NOT NULL;
-- (iss, sub) -> sessions: sign-out everywhere, back-channel sign-out by subject.
CREATE INDEX sessions_by_subject ON sessions (iss, sub);
-- Counting live sessions and purging expired ones.
CREATE INDEX sessions_by_expiry ON sessions (expires_at);

-- One row per token-cache partition. A session partition names its session
-- and goes with it; an app partition (client credentials) has no session.
CREATE TABLE partitions (
    pkey       TEXT    NOT NULL PRIMARY KEY,
    session_id TEXT    REFERENCES sessions (id) ON DELETE CASCADE,
    version    INTEGER NOT NULL CHECK (version >= 0)
) STRICT;

-- Lets the cascade from `sessions` find a session's partition by index.
CREATE INDEX partitions_by_session ON partitions (session_id);

-- One row per cache entry, written and removed one by one. `sealed` is the
-- encrypted entry exactly as the cache gave it; the store adds no plaintext.
CREATE TABLE entries (
    pkey       TEXT    NOT NULL REFERENCES partitions (pkey) ON DELETE CASCADE,
    cache_key  TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    expires_at INTEGER,
    sealed     BLOB    NOT NULL,
    PRIMARY KEY (pkey, cache_key)
) STRICT;

-- Sign-out records: `kind` is 'sid' (value = the provider's sid) or 'sub'
-- (value = the subject). Sessions they cover cannot be stored while they live.
CREATE TABLE tombstones (
    kind          TEXT    NOT NULL CHECK (kind IN ('sid', 'sub')),
    iss           TEXT    NOT NULL,
    value         TEXT    NOT NULL,
    logged_out_at INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    PRIMARY KEY (kind, iss, value)
) STRICT;

CREATE INDEX tombstones_by_expiry ON tombstones (expires_at);

-- Logout-token ids already seen, until they expire.
CREATE TABLE jtis (
    iss        TEXT    NOT NULL,
    jti        TEXT    NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (iss, jti)
) STRICT;

CREATE INDEX jtis_by_expiry ON jtis (expires_at);
