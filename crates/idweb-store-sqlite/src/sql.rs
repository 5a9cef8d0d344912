//! The statements the store runs. Parameters are always bound, never formatted in.
//!
//! A unary `+` before a column (`+s.expires_at`) keeps SQLite from choosing
//! that column's index for the term: the expiry filter must not displace the
//! primary key or the `(iss, sid)` / `(iss, sub)` index that selects the rows.

// Sessions.

pub(crate) const TOMBSTONE_GET: &str = "SELECT logged_out_at, expires_at FROM tombstones
     WHERE kind = ?1 AND iss = ?2 AND value = ?3 AND expires_at > ?4";

pub(crate) const SESSION_DELETE_IF_EXPIRED: &str =
    "DELETE FROM sessions WHERE id = ?1 AND expires_at <= ?2";

pub(crate) const SESSION_UPSERT: &str =
    "INSERT INTO sessions (id, iss, sub, sid, created_at, expires_at, data)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
     ON CONFLICT (id) DO UPDATE SET
         iss = excluded.iss,
         sub = excluded.sub,
         sid = excluded.sid,
         created_at = excluded.created_at,
         expires_at = excluded.expires_at,
         data = excluded.data";

pub(crate) const SESSION_GET: &str = "SELECT data, expires_at FROM sessions WHERE id = ?1";

/// A session as the request path reads it: its data, its expiry, whether
/// a live tombstone covers it (an `(iss, sid)` one, or an `(iss, sub)` one
/// of a sign-out at or after its creation), each tombstone probed by its
/// primary key — and the version of the session's partition `?3` when it
/// holds entries ([`PARTITION_LIVE_VERSION`] without the session check,
/// which the caller makes on the row itself); one statement, one snapshot.
pub(crate) const SESSION_GET_CHECKED: &str = "SELECT s.data, s.expires_at,
        EXISTS (SELECT 1 FROM tombstones t
                WHERE t.kind = 'sid' AND t.iss = s.iss AND t.value = s.sid
                  AND +t.expires_at > ?2)
        OR EXISTS (SELECT 1 FROM tombstones t
                   WHERE t.kind = 'sub' AND t.iss = s.iss AND t.value = s.sub
                     AND +t.expires_at > ?2 AND t.logged_out_at >= s.created_at),
        (SELECT p.version FROM partitions p
         WHERE p.pkey = ?3 AND EXISTS (SELECT 1 FROM entries e WHERE e.pkey = p.pkey))
     FROM sessions s WHERE s.id = ?1";

/// What a sign-out of one session needs: its issuer and provider session.
pub(crate) const SESSION_PROVIDER_SESSION: &str = "SELECT iss, sid FROM sessions WHERE id = ?1";

pub(crate) const SESSION_DELETE: &str = "DELETE FROM sessions WHERE id = ?1";

pub(crate) const SESSIONS_BY_SID: &str = "SELECT id FROM sessions
     WHERE iss = ?1 AND sid = ?2 AND +expires_at > ?3";

pub(crate) const SESSIONS_BY_SUB: &str = "SELECT id FROM sessions
     WHERE iss = ?1 AND sub = ?2 AND +expires_at > ?3";

pub(crate) const SESSION_COUNT: &str = "SELECT COUNT(*) FROM sessions WHERE expires_at > ?1";

pub(crate) const SESSIONS_LIST_FIRST: &str = "SELECT data FROM sessions
     WHERE +expires_at > ?1 ORDER BY id LIMIT ?2";

pub(crate) const SESSIONS_LIST_AFTER: &str = "SELECT data FROM sessions
     WHERE id > ?1 AND +expires_at > ?2 ORDER BY id LIMIT ?3";

pub(crate) const SESSION_IS_LIVE: &str =
    "SELECT 1 FROM sessions WHERE id = ?1 AND +expires_at > ?2";

// Partitions and entries.

/// Every entry of a partition with the partition's version, in one statement
/// (one snapshot); nothing when the partition belongs to a session that is not
/// live.
pub(crate) const PARTITION_GET: &str =
    "SELECT p.version, e.cache_key, e.kind, e.expires_at, e.sealed
     FROM partitions p JOIN entries e ON e.pkey = p.pkey
     WHERE p.pkey = ?1
       AND (p.session_id IS NULL
            OR EXISTS (SELECT 1 FROM sessions s
                       WHERE s.id = p.session_id AND +s.expires_at > ?2))";

/// The version [`PARTITION_GET`] would return, without reading the entries:
/// by primary keys only, with the same conditions (the partition has an
/// entry, and its session, if any, is live).
pub(crate) const PARTITION_LIVE_VERSION: &str = "SELECT p.version FROM partitions p
     WHERE p.pkey = ?1
       AND EXISTS (SELECT 1 FROM entries e WHERE e.pkey = p.pkey)
       AND (p.session_id IS NULL
            OR EXISTS (SELECT 1 FROM sessions s
                       WHERE s.id = p.session_id AND +s.expires_at > ?2))";

pub(crate) const PARTITION_VERSION: &str = "SELECT version FROM partitions WHERE pkey = ?1";

pub(crate) const PARTITION_UPSERT: &str = "INSERT INTO partitions (pkey, session_id, version)
     VALUES (?1, ?2, ?3)
     ON CONFLICT (pkey) DO UPDATE SET version = excluded.version";

pub(crate) const PARTITION_HAS_ENTRIES: &str =
    "SELECT EXISTS (SELECT 1 FROM entries WHERE pkey = ?1)";

pub(crate) const PARTITION_DELETE: &str = "DELETE FROM partitions WHERE pkey = ?1";

/// A partition's entries (their number is what a sign-out reports).
pub(crate) const ENTRIES_DELETE_OF_PARTITION: &str = "DELETE FROM entries WHERE pkey = ?1";

pub(crate) const ENTRY_DELETE: &str = "DELETE FROM entries WHERE pkey = ?1 AND cache_key = ?2";

pub(crate) const ENTRY_UPSERT: &str =
    "INSERT INTO entries (pkey, cache_key, kind, expires_at, sealed)
     VALUES (?1, ?2, ?3, ?4, ?5)
     ON CONFLICT (pkey, cache_key) DO UPDATE SET
         kind = excluded.kind,
         expires_at = excluded.expires_at,
         sealed = excluded.sealed";

// Tombstones and jti records.

/// Records a tombstone. An existing one for the same selector is replaced when
/// the new sign-out is as late or later, or when the old one has expired; a
/// live tombstone's expiry is never shortened.
pub(crate) const TOMBSTONE_PUT: &str =
    "INSERT INTO tombstones (kind, iss, value, logged_out_at, expires_at)
     VALUES (?1, ?2, ?3, ?4, ?5)
     ON CONFLICT (kind, iss, value) DO UPDATE SET
         logged_out_at = excluded.logged_out_at,
         expires_at = CASE WHEN tombstones.expires_at > ?6
                           THEN MAX(tombstones.expires_at, excluded.expires_at)
                           ELSE excluded.expires_at END
     WHERE excluded.logged_out_at >= tombstones.logged_out_at
        OR tombstones.expires_at <= ?6";

pub(crate) const JTI_DELETE_IF_EXPIRED: &str =
    "DELETE FROM jtis WHERE iss = ?1 AND jti = ?2 AND expires_at <= ?3";

pub(crate) const JTI_INSERT: &str = "INSERT INTO jtis (iss, jti, expires_at) VALUES (?1, ?2, ?3)
     ON CONFLICT (iss, jti) DO NOTHING";

pub(crate) const JTI_LIVE: &str =
    "SELECT 1 FROM jtis WHERE iss = ?1 AND jti = ?2 AND +expires_at > ?3";

pub(crate) const JTI_FORGET: &str = "DELETE FROM jtis WHERE iss = ?1 AND jti = ?2";

pub(crate) const LOCK_DELETE_IF_EXPIRED: &str =
    "DELETE FROM locks WHERE name = ?1 AND expires_at <= ?2";

pub(crate) const LOCK_INSERT: &str =
    "INSERT INTO locks (name, token, expires_at) VALUES (?1, ?2, ?3)
     ON CONFLICT (name) DO NOTHING";

pub(crate) const LOCK_DELETE: &str = "DELETE FROM locks WHERE name = ?1 AND token = ?2";

// Statistics.

pub(crate) const PARTITION_STATS: &str = "SELECT COUNT(DISTINCT e.pkey), COUNT(*)
     FROM entries e JOIN partitions p ON p.pkey = e.pkey
     WHERE p.session_id IS NULL
        OR EXISTS (SELECT 1 FROM sessions s
                   WHERE s.id = p.session_id AND +s.expires_at > ?1)";

pub(crate) const TOMBSTONE_COUNT: &str = "SELECT COUNT(*) FROM tombstones WHERE expires_at > ?1";

// Group commit: one transaction for many operations, one savepoint per
// operation.

pub(crate) const BEGIN: &str = "BEGIN IMMEDIATE";

pub(crate) const COMMIT: &str = "COMMIT";

pub(crate) const ROLLBACK: &str = "ROLLBACK";

pub(crate) const SAVEPOINT: &str = "SAVEPOINT op";

pub(crate) const SAVEPOINT_RELEASE: &str = "RELEASE op";

pub(crate) const SAVEPOINT_ROLLBACK: &str = "ROLLBACK TO op";

// Purging, in batches so that one purge never holds the write lock for long.

pub(crate) const EXPIRED_SESSIONS: &str = "SELECT id FROM sessions WHERE expires_at <= ?1 LIMIT ?2";

pub(crate) const ENTRIES_DELETE_OF_SESSION: &str = "DELETE FROM entries
     WHERE pkey IN (SELECT pkey FROM partitions WHERE session_id = ?1)";

pub(crate) const PARTITIONS_DELETE_OF_SESSION: &str =
    "DELETE FROM partitions WHERE session_id = ?1";

pub(crate) const TOMBSTONES_PURGE: &str = "DELETE FROM tombstones WHERE rowid IN
     (SELECT rowid FROM tombstones WHERE expires_at <= ?1 LIMIT ?2)";

pub(crate) const JTIS_PURGE: &str = "DELETE FROM jtis WHERE rowid IN
     (SELECT rowid FROM jtis WHERE expires_at <= ?1 LIMIT ?2)";

/// Every statement whose cost must follow the number of matching rows, with
/// placeholder parameters, for the query-plan test.
#[cfg(test)]
pub(crate) const INDEXED: &[&str] = &[
    TOMBSTONE_GET,
    SESSION_DELETE_IF_EXPIRED,
    SESSION_UPSERT,
    SESSION_GET,
    SESSION_GET_CHECKED,
    SESSION_PROVIDER_SESSION,
    SESSION_DELETE,
    SESSIONS_BY_SID,
    SESSIONS_BY_SUB,
    SESSION_COUNT,
    SESSIONS_LIST_FIRST,
    SESSIONS_LIST_AFTER,
    SESSION_IS_LIVE,
    PARTITION_GET,
    PARTITION_LIVE_VERSION,
    PARTITION_VERSION,
    PARTITION_UPSERT,
    PARTITION_HAS_ENTRIES,
    PARTITION_DELETE,
    ENTRIES_DELETE_OF_PARTITION,
    ENTRY_DELETE,
    ENTRY_UPSERT,
    TOMBSTONE_PUT,
    JTI_DELETE_IF_EXPIRED,
    JTI_INSERT,
    JTI_LIVE,
    JTI_FORGET,
    LOCK_DELETE_IF_EXPIRED,
    LOCK_INSERT,
    LOCK_DELETE,
    TOMBSTONE_COUNT,
    EXPIRED_SESSIONS,
    ENTRIES_DELETE_OF_SESSION,
    PARTITIONS_DELETE_OF_SESSION,
    TOMBSTONES_PURGE,
    JTIS_PURGE,
];
