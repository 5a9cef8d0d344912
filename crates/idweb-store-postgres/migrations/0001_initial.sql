-- Version 1: sessions, token-cache partitions and their entries, tombstones,
-- logout-token replay records, locks, and the functions that make each
-- multi-step write one atomic statement (one round trip).
--
-- Runs with `search_path` set to the store's schema. All times are Unix
-- seconds (locks: milliseconds) decided by the application's clock, never by
-- the server's. Every lookup is served by a primary key or one of the indexes
-- below, so its cost follows the number of matching rows, not the size of
-- the tables. Text keys use the "C" collation: byte order, as the listing
-- cursor expects, and cheaper comparisons.

-- One row per server-side session. `data` is the JSON form of the whole
-- session (its ID token already sealed by idweb); the other columns are
-- copies of its fields, kept for lookups and expiry.
CREATE TABLE sessions (
    id         text   COLLATE "C" NOT NULL PRIMARY KEY,
    iss        text   COLLATE "C" NOT NULL,
    sub        text   COLLATE "C" NOT NULL,
    sid        text   COLLATE "C",
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL,
    data       text   NOT NULL
);

-- (iss, sid) -> sessions: front- and back-channel sign-out of one provider session.
CREATE INDEX sessions_by_provider_session ON sessions (iss, sid) WHERE sid IS NOT NULL;
-- (iss, sub) -> sessions: sign-out everywhere, back-channel sign-out by subject.
CREATE INDEX sessions_by_subject ON sessions (iss, sub);
-- Counting live sessions and purging expired ones.
CREATE INDEX sessions_by_expiry ON sessions (expires_at);

-- One row per token-cache partition. A session partition names its session
-- and goes with it (cascade); an app partition (client credentials) has none.
-- `version` counts the writes (compare-and-set for conditional writes).
CREATE TABLE partitions (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pkey       text   COLLATE "C" NOT NULL UNIQUE,
    session_id text   COLLATE "C" REFERENCES sessions (id) ON DELETE CASCADE,
    version    bigint NOT NULL CHECK (version >= 0)
);

CREATE INDEX partitions_by_session ON partitions (session_id) WHERE session_id IS NOT NULL;

-- One row per cache entry, written and removed one by one. `sealed` is the
-- encrypted entry exactly as the token cache gave it.
CREATE TABLE entries (
    part       bigint NOT NULL REFERENCES partitions (id) ON DELETE CASCADE,
    cache_key  text   COLLATE "C" NOT NULL,
    kind       text   NOT NULL,
    expires_at bigint,
    sealed     bytea  NOT NULL,
    PRIMARY KEY (part, cache_key)
);

-- Sign-out records: `kind` is 'sid' (value = the provider's sid) or 'sub'
-- (value = the subject). Sessions they cover cannot be stored while they live.
CREATE TABLE tombstones (
    kind          text   NOT NULL CHECK (kind IN ('sid', 'sub')),
    iss           text   COLLATE "C" NOT NULL,
    value         text   COLLATE "C" NOT NULL,
    logged_out_at bigint NOT NULL,
    expires_at    bigint NOT NULL,
    PRIMARY KEY (kind, iss, value)
);

CREATE INDEX tombstones_by_expiry ON tombstones (expires_at);

-- Logout-token ids already seen, until they expire.
CREATE TABLE jtis (
    iss        text   COLLATE "C" NOT NULL,
    jti        text   COLLATE "C" NOT NULL,
    expires_at bigint NOT NULL,
    PRIMARY KEY (iss, jti)
);

CREATE INDEX jtis_by_expiry ON jtis (expires_at);

-- Short-lived locks (one refresh-token redemption per partition at a time
-- across every instance). `expires_at_ms` in milliseconds.
CREATE TABLE locks (
    name          text   COLLATE "C" NOT NULL PRIMARY KEY,
    token         text   NOT NULL,
    expires_at_ms bigint NOT NULL
);

CREATE INDEX locks_by_expiry ON locks (expires_at_ms);

-- The advisory-lock key of a tombstone selector. A sign-in takes it shared
-- while it checks for tombstones and stores its session; recording a
-- tombstone takes it exclusive. So a sign-in either sees the tombstone, or
-- commits its session before the tombstone commits (and the sign-out's
-- lookup, which comes after, finds it). Two selectors with the same key only
-- wait for each other.
CREATE FUNCTION selector_lock(p_kind text, p_iss text, p_value text) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT hashtextextended(p_kind || chr(31) || p_iss || chr(31) || p_value, 0) $$;

-- Inserts or replaces a session unless a live tombstone covers it; false
-- when refused. An expired session under the same id (not purged yet) goes
-- first, with its partition: a new session never inherits old tokens.
CREATE FUNCTION put_session(
    p_id text, p_iss text, p_sub text, p_sid text,
    p_created_at bigint, p_expires_at bigint, p_data text, p_now bigint
) RETURNS boolean
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(selector_lock('sub', p_iss, p_sub));
    IF p_sid IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock_shared(selector_lock('sid', p_iss, p_sid));
    END IF;
    IF EXISTS (SELECT 1 FROM tombstones t
               WHERE t.kind = 'sub' AND t.iss = p_iss AND t.value = p_sub
                 AND t.expires_at > p_now AND p_created_at <= t.logged_out_at) THEN
        RETURN false;
    END IF;
    IF p_sid IS NOT NULL AND EXISTS (
               SELECT 1 FROM tombstones t
               WHERE t.kind = 'sid' AND t.iss = p_iss AND t.value = p_sid
                 AND t.expires_at > p_now) THEN
        RETURN false;
    END IF;
    DELETE FROM sessions s WHERE s.id = p_id AND s.expires_at <= p_now;
    INSERT INTO sessions AS s (id, iss, sub, sid, created_at, expires_at, data)
    VALUES (p_id, p_iss, p_sub, p_sid, p_created_at, p_expires_at, p_data)
    ON CONFLICT (id) DO UPDATE SET
        iss = excluded.iss, sub = excluded.sub, sid = excluded.sid,
        created_at = excluded.created_at, expires_at = excluded.expires_at,
        data = excluded.data;
    RETURN true;
END
$$;

-- Applies a partition write atomically. Status 0: written, `version` is the
-- new version; 1: the session is not live (nothing written); 2: conflict,
-- `version` is the version found (nothing written).
--
-- A session partition's write holds its session row FOR SHARE from the
-- liveness check to the commit: a concurrent removal of the session waits
-- for the write and then removes the partition with it, or removes the
-- session first and the write finds it gone. A refresh finishing after a
-- sign-out cannot write tokens back.
CREATE FUNCTION write_partition(
    p_pkey text, p_session text, p_expected bigint, p_now bigint,
    p_remove text[], p_keys text[], p_kinds text[], p_expires bigint[], p_sealed bytea[],
    OUT status int, OUT version bigint
)
LANGUAGE plpgsql
AS $$
DECLARE
    v_part bigint;
    v_found bigint;
BEGIN
    IF p_session IS NOT NULL THEN
        PERFORM 1 FROM sessions s WHERE s.id = p_session AND s.expires_at > p_now FOR SHARE;
        IF NOT FOUND THEN
            status := 1; version := 0; RETURN;
        END IF;
    END IF;
    SELECT p.id, p.version INTO v_part, v_found FROM partitions p WHERE p.pkey = p_pkey FOR UPDATE;
    IF v_part IS NULL THEN
        v_found := 0;
    END IF;
    IF p_expected IS NOT NULL AND p_expected <> v_found THEN
        status := 2; version := v_found; RETURN;
    END IF;
    IF v_part IS NULL THEN
        INSERT INTO partitions (pkey, session_id, version) VALUES (p_pkey, p_session, 0)
        ON CONFLICT (pkey) DO NOTHING
        RETURNING id INTO v_part;
        IF v_part IS NULL THEN
            -- Created by a concurrent writer meanwhile: decide on its version.
            SELECT p.id, p.version INTO v_part, v_found FROM partitions p
            WHERE p.pkey = p_pkey FOR UPDATE;
            IF p_expected IS NOT NULL AND p_expected <> v_found THEN
                status := 2; version := v_found; RETURN;
            END IF;
        END IF;
    END IF;
    UPDATE partitions p SET version = v_found + 1 WHERE p.id = v_part;
    IF cardinality(p_remove) > 0 THEN
        DELETE FROM entries e WHERE e.part = v_part AND e.cache_key = ANY (p_remove);
    END IF;
    INSERT INTO entries AS e (part, cache_key, kind, expires_at, sealed)
    SELECT v_part, u.k, u.kind, u.exp, u.sealed
    FROM unnest(p_keys, p_kinds, p_expires, p_sealed) AS u(k, kind, exp, sealed)
    ON CONFLICT (part, cache_key) DO UPDATE SET
        kind = excluded.kind, expires_at = excluded.expires_at, sealed = excluded.sealed;
    status := 0; version := v_found + 1;
END
$$;

-- Records a tombstone, holding its selector's advisory lock exclusively (see
-- `selector_lock`). An existing one for the same selector is replaced when
-- the new sign-out is as late or later, or when the old one has expired; a
-- live tombstone's expiry is never shortened.
CREATE FUNCTION put_tombstone(
    p_kind text, p_iss text, p_value text, p_logged_out_at bigint, p_expires_at bigint, p_now bigint
) RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(selector_lock(p_kind, p_iss, p_value));
    INSERT INTO tombstones AS t (kind, iss, value, logged_out_at, expires_at)
    VALUES (p_kind, p_iss, p_value, p_logged_out_at, p_expires_at)
    ON CONFLICT (kind, iss, value) DO UPDATE SET
        logged_out_at = excluded.logged_out_at,
        expires_at = CASE WHEN t.expires_at > p_now
                          THEN GREATEST(t.expires_at, excluded.expires_at)
                          ELSE excluded.expires_at END
    WHERE excluded.logged_out_at >= t.logged_out_at OR t.expires_at <= p_now;
END
$$;
