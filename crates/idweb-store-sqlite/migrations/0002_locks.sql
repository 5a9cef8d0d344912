-- Version 2: short-lived locks (one refresh-token redemption per partition at
-- a time across every process sharing the database).
CREATE TABLE locks (
    name       TEXT    NOT NULL PRIMARY KEY,
    token      TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
