//! The store's operations as statements on one connection. Writes run on the
//! writer's connection inside a transaction (see [`crate::writer`]); reads on
//! a reader connection, each in one statement (one snapshot) unless noted.
//! Every statement is prepared once per connection and cached.

use idweb::{
    PartitionKey, Session, SessionId, SessionLookup, SignOutOutcome, SignOutRequest, SignOutTarget,
    StoreError, StoreStats, StoredEntry, StoredPartition, Tombstone,
};
use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{corrupt, db_error, unavailable};
use crate::sql;

/// The `tombstones` row key of a selector: `(kind, iss, value)`.
pub(crate) fn selector_key(
    selector: &SessionLookup,
) -> Result<(&'static str, &str, &str), StoreError> {
    match selector {
        SessionLookup::ByProviderSession { iss, sid } => Ok(("sid", iss, sid)),
        SessionLookup::BySubject { iss, sub } => Ok(("sub", iss, sub)),
        _ => Err(unavailable(
            "this store does not know that kind of session lookup",
        )),
    }
}

/// The selectors whose tombstones can forbid `session`.
fn selectors_of(session: &Session) -> Vec<SessionLookup> {
    let mut v = vec![SessionLookup::BySubject {
        iss: session.iss.clone(),
        sub: session.sub.clone(),
    }];
    if let Some(sid) = &session.sid {
        v.push(SessionLookup::ByProviderSession {
            iss: session.iss.clone(),
            sid: sid.clone(),
        });
    }
    v
}

pub(crate) fn decode_session(data: &str) -> Result<Session, StoreError> {
    serde_json::from_str(data).map_err(corrupt)
}

pub(crate) fn to_u64(n: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| corrupt(format!("negative {what} ({n})")))
}

fn to_i64(n: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| unavailable(format!("{what} {n} is too large to store")))
}

/// Runs a cached statement; the number of rows it changed.
fn exec(
    conn: &Connection,
    statement: &str,
    params: impl rusqlite::Params,
) -> Result<usize, StoreError> {
    conn.prepare_cached(statement)
        .and_then(|mut st| st.execute(params))
        .map_err(db_error)
}

// Writes.

/// Inserts or replaces `session` (`data` is its JSON form) unless a live
/// tombstone covers it.
pub(crate) fn put_session(
    conn: &Connection,
    session: &Session,
    data: &str,
    now: i64,
) -> Result<(), StoreError> {
    // The tombstone check and the insert are in one write transaction: a
    // sign-out that records its tombstone cannot slip in between.
    for selector in selectors_of(session) {
        let (kind, iss, value) = selector_key(&selector)?;
        let row = conn
            .prepare_cached(sql::TOMBSTONE_GET)
            .and_then(|mut st| {
                st.query_row(params![kind, iss, value, now], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                })
                .optional()
            })
            .map_err(db_error)?;
        if let Some((logged_out_at, expires_at)) = row
            && Tombstone::new(selector, logged_out_at, expires_at).covers(session)
        {
            return Err(StoreError::SignedOut);
        }
    }
    // An expired session under this id (not purged yet) goes with its
    // partition: a new session never inherits old tokens.
    exec(
        conn,
        sql::SESSION_DELETE_IF_EXPIRED,
        params![session.id.secret(), now],
    )?;
    // An upsert, not a delete and insert: replacing a live session keeps
    // its partition.
    exec(
        conn,
        sql::SESSION_UPSERT,
        params![
            session.id.secret(),
            session.iss,
            session.sub,
            session.sid,
            session.created_at,
            session.expires_at,
            data
        ],
    )?;
    Ok(())
}

/// Deletes the session `id` (and, by cascade, its partition) if it has expired.
pub(crate) fn delete_if_expired(conn: &Connection, id: &str, now: i64) -> Result<(), StoreError> {
    exec(conn, sql::SESSION_DELETE_IF_EXPIRED, params![id, now]).map(drop)
}

/// Removes the session `id` and its partition; its data, if it existed.
/// Removes session `id` with its partition `pkey`: the session's data and
/// the number of entries its partition held, `None` when it was not stored.
pub(crate) fn remove_session(
    conn: &Connection,
    id: &str,
    pkey: &str,
) -> Result<Option<(String, u64)>, StoreError> {
    let data: Option<String> = conn
        .prepare_cached(sql::SESSION_GET)
        .and_then(|mut st| st.query_row([id], |r| r.get(0)).optional())
        .map_err(db_error)?;
    if data.is_none() {
        return Ok(None);
    }
    // The cascade from `sessions` would take the partition and its entries
    // too; deleting them by key as well does not depend on the foreign-key
    // setting, and counts the entries.
    let entries = exec(conn, sql::ENTRIES_DELETE_OF_PARTITION, [pkey])?;
    exec(conn, sql::PARTITION_DELETE, [pkey])?;
    exec(conn, sql::SESSION_DELETE, [id])?;
    Ok(data.map(|d| (d, u64::try_from(entries).unwrap_or(u64::MAX))))
}

/// A partition write, decided on the caller's side.
pub(crate) struct PartitionChange {
    pub(crate) pkey: String,
    /// The session the partition belongs to, if it is a session partition.
    pub(crate) session_id: Option<String>,
    pub(crate) upsert: Vec<StoredEntry>,
    pub(crate) remove: Vec<String>,
    pub(crate) expected_version: Option<u64>,
    pub(crate) now: i64,
}

/// Applies a partition write; the new version.
pub(crate) fn write_partition(conn: &Connection, w: &PartitionChange) -> Result<u64, StoreError> {
    // The session check and the write are in one write transaction: a
    // concurrent remove_session runs entirely before (the write is refused)
    // or entirely after (the partition goes with the session).
    if let Some(id) = &w.session_id {
        let live = conn
            .prepare_cached(sql::SESSION_IS_LIVE)
            .and_then(|mut st| st.exists(params![id, w.now]))
            .map_err(db_error)?;
        if !live {
            return Err(StoreError::SignedOut);
        }
    }
    let found: Option<i64> = conn
        .prepare_cached(sql::PARTITION_VERSION)
        .and_then(|mut st| st.query_row([&w.pkey], |r| r.get(0)).optional())
        .map_err(db_error)?;
    let found = to_u64(found.unwrap_or(0), "partition version")?;
    if let Some(expected) = w.expected_version
        && expected != found
    {
        return Err(StoreError::Conflict { expected, found });
    }
    let version = found + 1;
    exec(
        conn,
        sql::PARTITION_UPSERT,
        params![w.pkey, w.session_id, to_i64(version, "partition version")?],
    )?;
    for cache_key in &w.remove {
        exec(conn, sql::ENTRY_DELETE, params![w.pkey, cache_key])?;
    }
    for e in &w.upsert {
        exec(
            conn,
            sql::ENTRY_UPSERT,
            params![w.pkey, e.cache_key, e.kind, e.expires_at, e.sealed],
        )?;
    }
    Ok(version)
}

/// Removes a partition; whether it had entries.
pub(crate) fn remove_partition(conn: &Connection, pkey: &str) -> Result<bool, StoreError> {
    let had_entries: bool = conn
        .prepare_cached(sql::PARTITION_HAS_ENTRIES)
        .and_then(|mut st| st.query_row([pkey], |r| r.get(0)))
        .map_err(db_error)?;
    exec(conn, sql::PARTITION_DELETE, [pkey])?;
    Ok(had_entries)
}

/// Records a tombstone (see [`sql::TOMBSTONE_PUT`]).
pub(crate) fn put_tombstone(
    conn: &Connection,
    tombstone: &Tombstone,
    now: i64,
) -> Result<(), StoreError> {
    let (kind, iss, value) = selector_key(&tombstone.selector)?;
    exec(
        conn,
        sql::TOMBSTONE_PUT,
        params![
            kind,
            iss,
            value,
            tombstone.logged_out_at,
            tombstone.expires_at,
            now
        ],
    )
    .map(drop)
}

/// Records `(iss, jti)`; `true` the first time.
pub(crate) fn record_jti(
    conn: &Connection,
    iss: &str,
    jti: &str,
    expires_at: i64,
    now: i64,
) -> Result<bool, StoreError> {
    exec(conn, sql::JTI_DELETE_IF_EXPIRED, params![iss, jti, now])?;
    Ok(exec(conn, sql::JTI_INSERT, params![iss, jti, expires_at])? == 1)
}

/// Whether `(iss, jti)` is recorded and live.
pub(crate) fn jti_recorded(
    conn: &Connection,
    iss: &str,
    jti: &str,
    now: i64,
) -> Result<bool, StoreError> {
    conn.prepare_cached(sql::JTI_LIVE)
        .and_then(|mut st| st.exists(params![iss, jti, now]))
        .map_err(db_error)
}

/// A whole sign-out, inside the writer's transaction (so all of it commits
/// together, or none of it): the replay check, the tombstone, the removal of
/// each selected session with its partition, the replay record.
pub(crate) fn sign_out(
    conn: &Connection,
    request: &SignOutRequest,
    now: i64,
) -> Result<SignOutOutcome, StoreError> {
    if let Some(j) = &request.jti
        && jti_recorded(conn, &j.iss, &j.jti, now)?
    {
        return Ok(SignOutOutcome::Replayed);
    }
    let (tombstone, ids, any_live) = match &request.target {
        SignOutTarget::Session(id) => {
            let row: Option<(String, Option<String>)> = conn
                .prepare_cached(sql::SESSION_PROVIDER_SESSION)
                .and_then(|mut st| {
                    st.query_row([id.secret()], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()
                })
                .map_err(db_error)?;
            let live = conn
                .prepare_cached(sql::SESSION_IS_LIVE)
                .and_then(|mut st| st.exists(params![id.secret(), now]))
                .map_err(db_error)?;
            // The tombstone of a session target is its provider session's.
            let tombstone = row.and_then(|(iss, sid)| {
                Some(Tombstone::new(
                    SessionLookup::ByProviderSession { iss, sid: sid? },
                    request.logged_out_at,
                    request.tombstone_expires_at,
                ))
            });
            (tombstone, vec![id.clone()], live)
        }
        SignOutTarget::Lookup(lookup) => {
            let (statement, iss, value) = match lookup {
                SessionLookup::ByProviderSession { iss, sid } => (sql::SESSIONS_BY_SID, iss, sid),
                SessionLookup::BySubject { iss, sub } => (sql::SESSIONS_BY_SUB, iss, sub),
                _ => {
                    return Err(unavailable(
                        "this store does not know that kind of session lookup",
                    ));
                }
            };
            let ids = find_sessions(conn, statement, iss, value, now)?;
            let any = !ids.is_empty();
            (request.tombstone(None), ids, any)
        }
        _ => {
            return Err(unavailable(
                "this store does not know that kind of sign-out target",
            ));
        }
    };
    if request.only_if_found && !any_live {
        return Ok(SignOutOutcome::SignedOut {
            removed: Vec::new(),
            entries_removed: 0,
        });
    }
    if let Some(t) = &tombstone {
        put_tombstone(conn, t, now)?;
    }
    // Lookups select live sessions only; a session target counts when live.
    let mut removed = Vec::new();
    let mut entries_removed = 0;
    for id in ids {
        let pkey = PartitionKey::Session(id.clone()).storage_key();
        if let Some((_, entries)) = remove_session(conn, id.secret(), &pkey)?
            && any_live
        {
            removed.push(id);
            entries_removed += entries;
        }
    }
    if let Some(j) = &request.jti {
        exec(conn, sql::JTI_DELETE_IF_EXPIRED, params![j.iss, j.jti, now])?;
        exec(conn, sql::JTI_INSERT, params![j.iss, j.jti, j.expires_at])?;
    }
    Ok(SignOutOutcome::SignedOut {
        removed,
        entries_removed,
    })
}

/// Forgets `(iss, jti)`.
pub(crate) fn forget_jti(conn: &Connection, iss: &str, jti: &str) -> Result<(), StoreError> {
    exec(conn, sql::JTI_FORGET, params![iss, jti]).map(drop)
}

/// Takes the lock `name` with `token` until `until` unless it is held.
pub(crate) fn try_lock(
    conn: &Connection,
    name: &str,
    token: &str,
    until: i64,
    now: i64,
) -> Result<bool, StoreError> {
    exec(conn, sql::LOCK_DELETE_IF_EXPIRED, params![name, now])?;
    Ok(exec(conn, sql::LOCK_INSERT, params![name, token, until])? == 1)
}

/// Releases the lock `name` if `token` holds it.
pub(crate) fn unlock(conn: &Connection, name: &str, token: &str) -> Result<(), StoreError> {
    exec(conn, sql::LOCK_DELETE, params![name, token]).map(drop)
}

/// Deletes up to `limit` expired sessions with their partitions and entries;
/// `(rows deleted, sessions deleted)`.
pub(crate) fn purge_sessions(
    conn: &Connection,
    now: i64,
    limit: i64,
) -> Result<(u64, usize), StoreError> {
    let ids: Vec<String> = conn
        .prepare_cached(sql::EXPIRED_SESSIONS)
        .and_then(|mut st| {
            st.query_map(params![now, limit], |r| r.get(0))?
                .collect::<Result<_, _>>()
        })
        .map_err(db_error)?;
    let mut rows = 0u64;
    for id in &ids {
        for statement in [
            sql::ENTRIES_DELETE_OF_SESSION,
            sql::PARTITIONS_DELETE_OF_SESSION,
        ] {
            rows += exec(conn, statement, [id])? as u64;
        }
        rows += exec(conn, sql::SESSION_DELETE_IF_EXPIRED, params![id, now])? as u64;
    }
    Ok((rows, ids.len()))
}

/// Runs one batch of a purge statement (`?1` = now, `?2` = limit); rows deleted.
pub(crate) fn purge_batch(
    conn: &Connection,
    statement: &'static str,
    now: i64,
    limit: i64,
) -> Result<u64, StoreError> {
    Ok(exec(conn, statement, params![now, limit])? as u64)
}

// Reads.

/// A session row as the request path reads it ([`sql::SESSION_GET_CHECKED`]).
pub(crate) struct SessionRow {
    /// The session: decoded before from this very text, or the text.
    pub(crate) data: RowData,
    /// Unix seconds when it ends.
    pub(crate) expires_at: i64,
    /// Whether a live tombstone covers it.
    pub(crate) signed_out: bool,
    /// The version of its partition, when the partition holds entries.
    pub(crate) version: Option<i64>,
}

/// A session row's data.
pub(crate) enum RowData {
    /// What `reuse` returned for the row's text (compared while it was
    /// still SQLite's, so the request path copies nothing).
    Reused(Session),
    /// The text, to decode.
    Text(String),
}

/// The row of session `id`, with the version of partition `pkey` (its own);
/// `reuse` is offered the row's text first.
pub(crate) fn get_session_checked(
    conn: &Connection,
    id: &str,
    pkey: &str,
    now: i64,
    reuse: &dyn Fn(&str) -> Option<Session>,
) -> Result<Option<SessionRow>, StoreError> {
    conn.prepare_cached(sql::SESSION_GET_CHECKED)
        .and_then(|mut st| {
            st.query_row(params![id, now, pkey], |r| {
                let text = r.get_ref(0)?.as_str()?;
                let data = match reuse(text) {
                    Some(session) => RowData::Reused(session),
                    None => RowData::Text(text.to_string()),
                };
                Ok(SessionRow {
                    data,
                    expires_at: r.get(1)?,
                    signed_out: r.get(2)?,
                    version: r.get(3)?,
                })
            })
            .optional()
        })
        .map_err(db_error)
}

/// Ids of the live sessions found by `statement` for `(iss, value)`.
pub(crate) fn find_sessions(
    conn: &Connection,
    statement: &'static str,
    iss: &str,
    value: &str,
    now: i64,
) -> Result<Vec<SessionId>, StoreError> {
    conn.prepare_cached(statement)
        .and_then(|mut st| {
            st.query_map(params![iss, value, now], |r| {
                r.get::<_, String>(0).map(SessionId::from_string)
            })?
            .collect()
        })
        .map_err(db_error)
}

/// The number of live sessions.
pub(crate) fn session_count(conn: &Connection, now: i64) -> Result<u64, StoreError> {
    let n: i64 = conn
        .prepare_cached(sql::SESSION_COUNT)
        .and_then(|mut st| st.query_row([now], |r| r.get(0)))
        .map_err(db_error)?;
    to_u64(n, "session count")
}

/// Up to `limit` live sessions after `after`, in id order.
pub(crate) fn list_sessions(
    conn: &Connection,
    after: Option<&str>,
    now: i64,
    limit: i64,
) -> Result<Vec<Session>, StoreError> {
    let rows: Vec<String> = match after {
        None => conn
            .prepare_cached(sql::SESSIONS_LIST_FIRST)
            .and_then(|mut st| st.query_map(params![now, limit], |r| r.get(0))?.collect()),
        Some(after) => conn
            .prepare_cached(sql::SESSIONS_LIST_AFTER)
            .and_then(|mut st| {
                st.query_map(params![after, now, limit], |r| r.get(0))?
                    .collect()
            }),
    }
    .map_err(db_error)?;
    rows.iter().map(|d| decode_session(d)).collect()
}

/// Every entry of a partition with its version, in one statement.
pub(crate) fn get_partition(
    conn: &Connection,
    pkey: &str,
    now: i64,
) -> Result<Option<StoredPartition>, StoreError> {
    let mut st = conn.prepare_cached(sql::PARTITION_GET).map_err(db_error)?;
    let mut rows = st.query(params![pkey, now]).map_err(db_error)?;
    let mut partition: Option<StoredPartition> = None;
    while let Some(row) = rows.next().map_err(db_error)? {
        let p = match &mut partition {
            Some(p) => p,
            None => {
                let mut p = StoredPartition::default();
                p.version = to_u64(row.get(0).map_err(db_error)?, "partition version")?;
                partition.insert(p)
            }
        };
        p.entries.push(StoredEntry::new(
            row.get::<_, String>(1).map_err(db_error)?,
            row.get::<_, String>(2).map_err(db_error)?,
            row.get::<_, Option<i64>>(3).map_err(db_error)?,
            row.get::<_, Vec<u8>>(4).map_err(db_error)?,
        ));
    }
    Ok(partition)
}

/// The version [`get_partition`] would return, in one indexed statement.
pub(crate) fn partition_version(
    conn: &Connection,
    pkey: &str,
    now: i64,
) -> Result<Option<u64>, StoreError> {
    let version: Option<i64> = conn
        .prepare_cached(sql::PARTITION_LIVE_VERSION)
        .and_then(|mut st| st.query_row(params![pkey, now], |r| r.get(0)).optional())
        .map_err(db_error)?;
    version.map(|v| to_u64(v, "partition version")).transpose()
}

/// The live tombstone for `selector`: `(logged_out_at, expires_at)`.
pub(crate) fn get_tombstone(
    conn: &Connection,
    selector: &SessionLookup,
    now: i64,
) -> Result<Option<(i64, i64)>, StoreError> {
    let (kind, iss, value) = selector_key(selector)?;
    conn.prepare_cached(sql::TOMBSTONE_GET)
        .and_then(|mut st| {
            st.query_row(params![kind, iss, value, now], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
        })
        .map_err(db_error)
}

/// Counts, from one read transaction (one snapshot).
pub(crate) fn stats(conn: &Connection, now: i64) -> Result<StoreStats, StoreError> {
    let tx = conn.unchecked_transaction().map_err(db_error)?;
    let sessions: i64 = tx
        .prepare_cached(sql::SESSION_COUNT)
        .and_then(|mut st| st.query_row([now], |r| r.get(0)))
        .map_err(db_error)?;
    let (partitions, entries): (i64, i64) = tx
        .prepare_cached(sql::PARTITION_STATS)
        .and_then(|mut st| st.query_row([now], |r| Ok((r.get(0)?, r.get(1)?))))
        .map_err(db_error)?;
    let tombstones: i64 = tx
        .prepare_cached(sql::TOMBSTONE_COUNT)
        .and_then(|mut st| st.query_row([now], |r| r.get(0)))
        .map_err(db_error)?;
    tx.commit().map_err(db_error)?;
    let mut stats = StoreStats::default();
    stats.sessions = to_u64(sessions, "session count")?;
    stats.partitions = to_u64(partitions, "partition count")?;
    stats.entries = to_u64(entries, "entry count")?;
    stats.tombstones = to_u64(tombstones, "tombstone count")?;
    Ok(stats)
}
