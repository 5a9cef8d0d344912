-- Version 2: one atomic sign-out. The replay record of the logout token (if
-- any), the tombstone and the removal of every session it selects (with
-- their partitions and entries, by cascade) commit together: a crash leaves
-- either nothing (the provider's retry does it all) or everything.
--
-- `p_jti` NULL: no replay record. Returns `replayed` true (and nothing done)
-- when `(p_iss, p_jti)` was already recorded and has not expired; otherwise
-- the ids of the live sessions removed.
CREATE FUNCTION sign_out(
    p_kind text, p_iss text, p_value text, p_logged_out_at bigint, p_tombstone_expires_at bigint,
    p_jti text, p_jti_expires_at bigint, p_now bigint,
    OUT replayed boolean, OUT removed text[]
)
LANGUAGE plpgsql
AS $$
BEGIN
    replayed := false;
    removed := '{}';
    IF p_jti IS NOT NULL THEN
        INSERT INTO jtis AS j (iss, jti, expires_at) VALUES (p_iss, p_jti, p_jti_expires_at)
        ON CONFLICT (iss, jti) DO UPDATE SET expires_at = excluded.expires_at
        WHERE j.expires_at <= p_now;
        IF NOT FOUND THEN
            replayed := true;
            RETURN;
        END IF;
    END IF;
    PERFORM put_tombstone(p_kind, p_iss, p_value, p_logged_out_at, p_tombstone_expires_at, p_now);
    IF p_kind = 'sid' THEN
        WITH d AS (DELETE FROM sessions s WHERE s.iss = p_iss AND s.sid = p_value
                   RETURNING s.id, s.expires_at)
        SELECT coalesce(array_agg(d.id) FILTER (WHERE d.expires_at > p_now), '{}') INTO removed FROM d;
    ELSE
        WITH d AS (DELETE FROM sessions s WHERE s.iss = p_iss AND s.sub = p_value
                   RETURNING s.id, s.expires_at)
        SELECT coalesce(array_agg(d.id) FILTER (WHERE d.expires_at > p_now), '{}') INTO removed FROM d;
    END IF;
END
$$;
