//! The statements the store runs, unqualified: each connection's
//! `search_path` is the store's schema. Parameters are always bound, never
//! formatted in. Each statement is prepared once per connection.

pub(crate) const PUT_SESSION: &str = "SELECT put_session($1, $2, $3, $4, $5, $6, $7, $8)";

/// A live session unless a live tombstone covers it (an `(iss, sid)` one, or
/// an `(iss, sub)` one of a sign-out at or after its creation), even while
/// its rows remain: one statement (one snapshot), each tombstone probed by
/// its primary key.
///
/// The second column is the version of the session's partition `$3` when it
/// holds entries ([`PARTITION_VERSION`] without the session check, which the
/// row itself passed), so that the request path reads both at once.
pub(crate) const GET_SESSION: &str = "SELECT s.data,
       (SELECT p.version FROM partitions p
        WHERE p.pkey = $3 AND EXISTS (SELECT 1 FROM entries e WHERE e.part = p.id))
     FROM sessions s
     WHERE s.id = $1 AND s.expires_at > $2
       AND NOT EXISTS (SELECT 1 FROM tombstones t
                       WHERE t.kind = 'sid' AND t.iss = s.iss AND t.value = s.sid
                         AND t.expires_at > $2)
       AND NOT EXISTS (SELECT 1 FROM tombstones t
                       WHERE t.kind = 'sub' AND t.iss = s.iss AND t.value = s.sub
                         AND t.expires_at > $2 AND t.logged_out_at >= s.created_at)";

pub(crate) const REMOVE_SESSION: &str = "DELETE FROM sessions WHERE id = $1 RETURNING data";

pub(crate) const SESSIONS_BY_SID: &str =
    "SELECT id FROM sessions WHERE iss = $1 AND sid = $2 AND expires_at > $3";

pub(crate) const SESSIONS_BY_SUB: &str =
    "SELECT id FROM sessions WHERE iss = $1 AND sub = $2 AND expires_at > $3";

pub(crate) const SESSION_COUNT: &str =
    "SELECT count(*)::bigint FROM sessions WHERE expires_at > $1";

pub(crate) const SESSIONS_LIST_FIRST: &str =
    "SELECT data FROM sessions WHERE expires_at > $1 ORDER BY id LIMIT $2";

pub(crate) const SESSIONS_LIST_AFTER: &str =
    "SELECT data FROM sessions WHERE id > $1 AND expires_at > $2 ORDER BY id LIMIT $3";

/// Every entry of a partition with the partition's version, in one statement
/// (one snapshot); nothing when the partition belongs to a session that is
/// not live.
pub(crate) const GET_PARTITION: &str =
    "SELECT p.version, e.cache_key, e.kind, e.expires_at, e.sealed
     FROM partitions p JOIN entries e ON e.part = p.id
     WHERE p.pkey = $1
       AND (p.session_id IS NULL
            OR EXISTS (SELECT 1 FROM sessions s WHERE s.id = p.session_id AND s.expires_at > $2))";

/// The version [`GET_PARTITION`] would return, without reading the entries.
pub(crate) const PARTITION_VERSION: &str = "SELECT p.version FROM partitions p
     WHERE p.pkey = $1
       AND EXISTS (SELECT 1 FROM entries e WHERE e.part = p.id)
       AND (p.session_id IS NULL
            OR EXISTS (SELECT 1 FROM sessions s WHERE s.id = p.session_id AND s.expires_at > $2))";

pub(crate) const WRITE_PARTITION: &str =
    "SELECT status, version FROM write_partition($1, $2, $3, $4, $5, $6, $7, $8, $9)";

/// Removes a partition (its entries by cascade); whether it had entries (the
/// outer query sees the rows as they were before the deletion).
pub(crate) const REMOVE_PARTITION: &str =
    "WITH d AS (DELETE FROM partitions WHERE pkey = $1 RETURNING id)
     SELECT EXISTS (SELECT 1 FROM entries e JOIN d ON e.part = d.id)";

pub(crate) const PUT_TOMBSTONE: &str = "SELECT put_tombstone($1, $2, $3, $4, $5, $6)";

pub(crate) const GET_TOMBSTONE: &str = "SELECT logged_out_at, expires_at FROM tombstones
     WHERE kind = $1 AND iss = $2 AND value = $3 AND expires_at > $4";

/// Records `(iss, jti)` unless a live record exists (an expired one is
/// replaced): a row comes back the first time only. Atomic under
/// concurrency: `ON CONFLICT` decides on the committed row.
pub(crate) const RECORD_JTI: &str = "INSERT INTO jtis AS j (iss, jti, expires_at)
     VALUES ($1, $2, $3)
     ON CONFLICT (iss, jti) DO UPDATE SET expires_at = excluded.expires_at
     WHERE j.expires_at <= $4
     RETURNING 1";

pub(crate) const FORGET_JTI: &str = "DELETE FROM jtis WHERE iss = $1 AND jti = $2";

/// Takes a lock unless a live holder exists (an expired one is replaced).
pub(crate) const TRY_LOCK: &str = "INSERT INTO locks AS l (name, token, expires_at_ms)
     VALUES ($1, $2, $3)
     ON CONFLICT (name) DO UPDATE SET token = excluded.token, expires_at_ms = excluded.expires_at_ms
     WHERE l.expires_at_ms <= $4
     RETURNING 1";

pub(crate) const UNLOCK: &str = "DELETE FROM locks WHERE name = $1 AND token = $2";

/// Every count from one snapshot (one statement).
pub(crate) const STATS: &str = "SELECT
       (SELECT count(*) FROM sessions WHERE expires_at > $1)::bigint,
       (SELECT count(DISTINCT e.part) FROM entries e JOIN partitions p ON p.id = e.part
        WHERE p.session_id IS NULL
           OR EXISTS (SELECT 1 FROM sessions s WHERE s.id = p.session_id AND s.expires_at > $1))::bigint,
       (SELECT count(*) FROM entries e JOIN partitions p ON p.id = e.part
        WHERE p.session_id IS NULL
           OR EXISTS (SELECT 1 FROM sessions s WHERE s.id = p.session_id AND s.expires_at > $1))::bigint,
       (SELECT count(*) FROM tombstones WHERE expires_at > $1)::bigint";

/// A whole sign-out in one transaction (see migrations 2 and 4).
pub(crate) const SIGN_OUT: &str = "SELECT replayed, removed, entries_removed
     FROM sign_out($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

/// Whether `(iss, jti)` has a live replay record.
pub(crate) const JTI_RECORDED: &str =
    "SELECT EXISTS (SELECT 1 FROM jtis WHERE iss = $1 AND jti = $2 AND expires_at > $3)";

// Purging, in batches: each batch is one short statement, and rows another
// purge (on another instance) is deleting are skipped, not waited for.

/// Expired sessions; their partitions and entries go by cascade.
pub(crate) const PURGE_SESSIONS: &str = "DELETE FROM sessions WHERE id = ANY (ARRAY
     (SELECT id FROM sessions WHERE expires_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED))";

pub(crate) const PURGE_TOMBSTONES: &str = "DELETE FROM tombstones WHERE ctid = ANY (ARRAY
     (SELECT ctid FROM tombstones WHERE expires_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED))";

pub(crate) const PURGE_JTIS: &str = "DELETE FROM jtis WHERE ctid = ANY (ARRAY
     (SELECT ctid FROM jtis WHERE expires_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED))";

/// Locks store milliseconds: `$1` is in milliseconds here.
pub(crate) const PURGE_LOCKS: &str = "DELETE FROM locks WHERE ctid = ANY (ARRAY
     (SELECT ctid FROM locks WHERE expires_at_ms <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED))";

// The in-process cache (`CachingStore`): each write with its announcement,
// a `NOTIFY` in the same statement, hence the same transaction. The last
// two parameters are the channel and the message.

pub(crate) const PUT_SESSION_NOTIFY: &str =
    "SELECT put_session($1, $2, $3, $4, $5, $6, $7, $8), pg_notify($9, $10)";

/// One row always (the removed session's data, or NULL).
pub(crate) const REMOVE_SESSION_NOTIFY: &str =
    "WITH d AS (DELETE FROM sessions WHERE id = $1 RETURNING data)
     SELECT (SELECT data FROM d), pg_notify($2, $3)";

pub(crate) const WRITE_PARTITION_NOTIFY: &str = "SELECT w.status, w.version, pg_notify($10, $11)
     FROM write_partition($1, $2, $3, $4, $5, $6, $7, $8, $9) w";

pub(crate) const REMOVE_PARTITION_NOTIFY: &str =
    "WITH d AS (DELETE FROM partitions WHERE pkey = $1 RETURNING id)
     SELECT EXISTS (SELECT 1 FROM entries e JOIN d ON e.part = d.id), pg_notify($2, $3)";

pub(crate) const PUT_TOMBSTONE_NOTIFY: &str =
    "SELECT put_tombstone($1, $2, $3, $4, $5, $6), pg_notify($7, $8)";

/// [`GET_PARTITION`] with the expiry of the partition's session (NULL for
/// an app partition), from the same snapshot.
pub(crate) const GET_PARTITION_L1: &str =
    "SELECT p.version, e.cache_key, e.kind, e.expires_at, e.sealed, s.expires_at
     FROM partitions p JOIN entries e ON e.part = p.id
     LEFT JOIN sessions s ON s.id = p.session_id
     WHERE p.pkey = $1 AND (p.session_id IS NULL OR s.expires_at > $2)";

/// [`SIGN_OUT`] announcing, in the same transaction and unless nothing was
/// written (a replay; `only_if_found` with no live session), `$12` (the
/// origin and acknowledgement words, and for a lookup its tombstone word)
/// followed by the words the L1 layer gives a session target's `(iss,
/// sid)` tombstone (`t:sid:B64(ISS).B64(SID)`, read before the removal)
/// and each removed session and its partition (`s:TAG`, `p:s:TAG`, TAG the
/// base64url SHA-256 of the id) — or `$13` (drop everything) when that
/// would not fit a notification (8000 bytes). Returns the message too.
pub(crate) const SIGN_OUT_NOTIFY: &str = "WITH before AS (
         SELECT iss, sid FROM sessions WHERE $1 = 'id' AND id = $3 AND sid IS NOT NULL),
     r AS (SELECT replayed, removed, entries_removed
           FROM sign_out($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)),
     m AS (
         SELECT $12::text
             || coalesce((SELECT E'\\nt:sid:'
                          || rtrim(translate(encode(convert_to(b.iss, 'UTF8'), 'base64'), E'+/\\n', '-_'), '=')
                          || '.'
                          || rtrim(translate(encode(convert_to(b.sid, 'UTF8'), 'base64'), E'+/\\n', '-_'), '=')
                          FROM before b), '')
             || coalesce((SELECT string_agg(E'\\ns:' || x.tag || E'\\np:s:' || x.tag, '')
                          FROM unnest(r.removed) AS u(id),
                               LATERAL (SELECT rtrim(translate(encode(sha256(convert_to(u.id, 'UTF8')), 'base64'),
                                                               E'+/\\n', '-_'), '=') AS tag) x), '')
             AS msg
         FROM r
         WHERE NOT r.replayed AND (NOT $6 OR cardinality(r.removed) > 0)),
     n AS (SELECT pg_notify($11, CASE WHEN octet_length(m.msg) < 8000 THEN m.msg ELSE $13::text END)
           FROM m)
     SELECT r.replayed, r.removed, (SELECT msg FROM m), (SELECT count(*) FROM n)::bigint,
            r.entries_removed
     FROM r";

/// Publishes on a channel (the listening connection's heartbeats and
/// acknowledgements, queued announcements, sign-out events).
pub(crate) const NOTIFY: &str = "SELECT pg_notify($1, $2)";
