-- Version 4: `sign_out` also returns `entries_removed`, the number of
-- token-cache entries that left with the live sessions it removed, for the
-- sign-out metrics and audit event. Otherwise the function of version 2,
-- unchanged.
--
-- The entries are counted in the statement that deletes their sessions:
-- its snapshot still holds the rows the cascade removes. Callers of
-- version 2 (`SELECT replayed, removed FROM sign_out(...)`) keep working:
-- the new column is one more output, so instances of either version can
-- share the schema during a rolling upgrade.

-- The number of entries in the partitions of sessions `p_ids`.
CREATE FUNCTION entries_of(p_ids text[]) RETURNS bigint
LANGUAGE sql STABLE
AS $$
    SELECT count(*) FROM entries e JOIN partitions p ON e.part = p.id
    WHERE p.session_id = ANY (p_ids)
$$;

DROP FUNCTION sign_out(text, text, text, bigint, bigint, boolean, text, text, bigint, bigint);

CREATE FUNCTION sign_out(
    p_kind text, p_iss text, p_value text, p_logged_out_at bigint, p_tombstone_expires_at bigint,
    p_only_if_found boolean, p_jti_iss text, p_jti text, p_jti_expires_at bigint, p_now bigint,
    OUT replayed boolean, OUT removed text[], OUT entries_removed bigint
)
LANGUAGE plpgsql
AS $$
DECLARE
    v_iss text;
    v_sid text;
    v_live boolean;
BEGIN
    replayed := false;
    removed := '{}';
    entries_removed := 0;
    IF p_jti IS NOT NULL AND EXISTS (
            SELECT 1 FROM jtis j
            WHERE j.iss = p_jti_iss AND j.jti = p_jti AND j.expires_at > p_now) THEN
        replayed := true;
        RETURN;
    END IF;
    IF p_kind = 'id' THEN
        SELECT s.iss, s.sid, s.expires_at > p_now INTO v_iss, v_sid, v_live
        FROM sessions s WHERE s.id = p_value;
        v_live := coalesce(v_live, false);
    ELSIF p_kind = 'sid' THEN
        v_live := EXISTS (SELECT 1 FROM sessions s
                          WHERE s.iss = p_iss AND s.sid = p_value AND s.expires_at > p_now);
    ELSIF p_kind = 'sub' THEN
        v_live := EXISTS (SELECT 1 FROM sessions s
                          WHERE s.iss = p_iss AND s.sub = p_value AND s.expires_at > p_now);
    ELSE
        RAISE EXCEPTION 'unknown sign-out target kind';
    END IF;
    IF p_only_if_found AND NOT v_live THEN
        RETURN;
    END IF;
    -- The test-and-set: a concurrent sign-out with the same jti that
    -- committed first makes this one a replay (nothing was written before).
    IF p_jti IS NOT NULL THEN
        INSERT INTO jtis AS j (iss, jti, expires_at) VALUES (p_jti_iss, p_jti, p_jti_expires_at)
        ON CONFLICT (iss, jti) DO UPDATE SET expires_at = excluded.expires_at
        WHERE j.expires_at <= p_now;
        IF NOT FOUND THEN
            replayed := true;
            RETURN;
        END IF;
    END IF;
    IF p_kind = 'id' THEN
        IF v_sid IS NOT NULL THEN
            PERFORM put_tombstone('sid', v_iss, v_sid, p_logged_out_at, p_tombstone_expires_at, p_now);
        END IF;
        WITH d AS (DELETE FROM sessions s WHERE s.id = p_value RETURNING s.id, s.expires_at),
             live AS (SELECT d.id FROM d WHERE d.expires_at > p_now)
        SELECT coalesce((SELECT array_agg(live.id) FROM live), '{}'), entries_of(ARRAY(SELECT id FROM live))
          INTO removed, entries_removed;
        RETURN;
    END IF;
    -- The lookup follows the tombstone (taken under its selector's lock): a
    -- sign-in either sees the tombstone or committed its session before it.
    PERFORM put_tombstone(p_kind, p_iss, p_value, p_logged_out_at, p_tombstone_expires_at, p_now);
    IF p_kind = 'sid' THEN
        WITH d AS (DELETE FROM sessions s WHERE s.iss = p_iss AND s.sid = p_value
                   RETURNING s.id, s.expires_at),
             live AS (SELECT d.id FROM d WHERE d.expires_at > p_now)
        SELECT coalesce((SELECT array_agg(live.id) FROM live), '{}'), entries_of(ARRAY(SELECT id FROM live))
          INTO removed, entries_removed;
    ELSE
        WITH d AS (DELETE FROM sessions s WHERE s.iss = p_iss AND s.sub = p_value
                   RETURNING s.id, s.expires_at),
             live AS (SELECT d.id FROM d WHERE d.expires_at > p_now)
        SELECT coalesce((SELECT array_agg(live.id) FROM live), '{}'), entries_of(ARRAY(SELECT id FROM live))
          INTO removed, entries_removed;
    END IF;
END
$$;
