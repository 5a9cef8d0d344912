//! [`Store`] for [`SqliteStore`].

use std::time::Duration;

use async_trait::async_trait;
use idweb::{
    LockToken, PartitionKey, PartitionWrite, Session, SessionId, SessionLookup, Store, StoreError,
    StoreStats, StoredEntry, StoredPartition, Tombstone,
};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::error::{corrupt, db_error, unavailable};
use crate::{SqliteStore, sql};

/// The `tombstones` row key of a selector: `(kind, iss, value)`.
fn selector_key(selector: &SessionLookup) -> Result<(&'static str, &str, &str), StoreError> {
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

fn decode_session(data: &str) -> Result<Session, StoreError> {
    serde_json::from_str(data).map_err(corrupt)
}

fn to_u64(n: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| corrupt(format!("negative {what} ({n})")))
}

fn to_i64(n: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| unavailable(format!("{what} {n} is too large to store")))
}

fn entry_of(row: &SqliteRow) -> Result<StoredEntry, StoreError> {
    Ok(StoredEntry::new(
        row.try_get::<String, _>(1).map_err(db_error)?,
        row.try_get::<String, _>(2).map_err(db_error)?,
        row.try_get::<Option<i64>, _>(3).map_err(db_error)?,
        row.try_get::<Vec<u8>, _>(4).map_err(db_error)?,
    ))
}

#[async_trait]
impl Store for SqliteStore {
    async fn put_session(&self, session: &Session) -> Result<(), StoreError> {
        let data = serde_json::to_string(session).map_err(corrupt)?;
        let now = self.now();
        let mut w = self.begin_write().await?;
        // The tombstone check and the insert share one write transaction: a
        // sign-out that records its tombstone cannot slip in between.
        for selector in selectors_of(session) {
            let (kind, iss, value) = selector_key(&selector)?;
            let row = sqlx::query(sql::TOMBSTONE_GET)
                .bind(kind)
                .bind(iss)
                .bind(value)
                .bind(now)
                .fetch_optional(&mut *w.tx)
                .await
                .map_err(db_error)?;
            if let Some(row) = row {
                let tombstone = Tombstone::new(
                    selector,
                    row.try_get(0).map_err(db_error)?,
                    row.try_get(1).map_err(db_error)?,
                );
                if tombstone.covers(session) {
                    w.abort().await;
                    return Err(StoreError::SignedOut);
                }
            }
        }
        // An expired session under this id (not purged yet) goes with its
        // partition: a new session never inherits old tokens.
        sqlx::query(sql::SESSION_DELETE_IF_EXPIRED)
            .bind(session.id.secret())
            .bind(now)
            .execute(&mut *w.tx)
            .await
            .map_err(db_error)?;
        // An upsert, not a delete and insert: replacing a live session keeps
        // its partition.
        sqlx::query(sql::SESSION_UPSERT)
            .bind(session.id.secret())
            .bind(&session.iss)
            .bind(&session.sub)
            .bind(session.sid.as_deref())
            .bind(session.created_at)
            .bind(session.expires_at)
            .bind(data)
            .execute(&mut *w.tx)
            .await
            .map_err(db_error)?;
        w.commit().await
    }

    async fn get_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        let now = self.now();
        let Some(row) = sqlx::query(sql::SESSION_GET)
            .bind(id.secret())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?
        else {
            return Ok(None);
        };
        let expires_at: i64 = row.try_get(1).map_err(db_error)?;
        if expires_at <= now {
            // The session has ended: take it and its tokens out now rather
            // than at the next purge. Failing to do so does not make the
            // session any less ended.
            if let Err(e) = self.delete_if_expired(id, now).await {
                tracing::warn!(
                    session = %id.fingerprint(),
                    error = %e,
                    "could not delete an expired session; the next purge will"
                );
            }
            return Ok(None);
        }
        let data: String = row.try_get(0).map_err(db_error)?;
        let session = decode_session(&data)?;
        if !session.id.matches(id) {
            return Err(corrupt("a session row holds another session's id"));
        }
        Ok(Some(session))
    }

    async fn remove_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        let mut w = self.begin_write().await?;
        let data: Option<String> = sqlx::query_scalar(sql::SESSION_GET)
            .bind(id.secret())
            .fetch_optional(&mut *w.tx)
            .await
            .map_err(db_error)?;
        if data.is_none() {
            w.abort().await;
            return Ok(None);
        }
        // The cascade from `sessions` would take the partition too; deleting
        // it by key as well does not depend on the foreign-key setting.
        sqlx::query(sql::PARTITION_DELETE)
            .bind(PartitionKey::Session(id.clone()).storage_key())
            .execute(&mut *w.tx)
            .await
            .map_err(db_error)?;
        sqlx::query(sql::SESSION_DELETE)
            .bind(id.secret())
            .execute(&mut *w.tx)
            .await
            .map_err(db_error)?;
        w.commit().await?;
        // Removed even when its data no longer decodes: a sign-out must not
        // be stopped by a damaged row. The caller still learns about it.
        data.map(|d| decode_session(&d)).transpose()
    }

    async fn find_sessions(&self, lookup: &SessionLookup) -> Result<Vec<SessionId>, StoreError> {
        let now = self.now();
        let (statement, iss, value) = match lookup {
            SessionLookup::ByProviderSession { iss, sid } => (sql::SESSIONS_BY_SID, iss, sid),
            SessionLookup::BySubject { iss, sub } => (sql::SESSIONS_BY_SUB, iss, sub),
            _ => {
                return Err(unavailable(
                    "this store does not know that kind of session lookup",
                ));
            }
        };
        let ids: Vec<String> = sqlx::query_scalar(statement)
            .bind(iss)
            .bind(value)
            .bind(now)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(ids.into_iter().map(SessionId::from_string).collect())
    }

    async fn session_count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(sql::SESSION_COUNT)
            .bind(self.now())
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?;
        to_u64(n, "session count")
    }

    async fn list_sessions(
        &self,
        after: Option<&SessionId>,
        limit: usize,
    ) -> Result<Vec<Session>, StoreError> {
        let now = self.now();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let query = match after {
            None => sqlx::query_scalar(sql::SESSIONS_LIST_FIRST)
                .bind(now)
                .bind(limit),
            Some(after) => sqlx::query_scalar(sql::SESSIONS_LIST_AFTER)
                .bind(after.secret())
                .bind(now)
                .bind(limit),
        };
        let rows: Vec<String> = query.fetch_all(&self.pool).await.map_err(db_error)?;
        rows.iter().map(|d| decode_session(d)).collect()
    }

    async fn get_partition(
        &self,
        key: &PartitionKey,
    ) -> Result<Option<StoredPartition>, StoreError> {
        let rows = sqlx::query(sql::PARTITION_GET)
            .bind(key.storage_key())
            .bind(self.now())
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let mut partition = StoredPartition::default();
        partition.version = to_u64(first.try_get(0).map_err(db_error)?, "partition version")?;
        partition.entries = rows.iter().map(entry_of).collect::<Result<_, _>>()?;
        Ok(Some(partition))
    }

    async fn write_partition(
        &self,
        key: &PartitionKey,
        write: PartitionWrite,
    ) -> Result<u64, StoreError> {
        let pkey = key.storage_key();
        let now = self.now();
        let mut w = self.begin_write().await?;
        // The session check and the write share one write transaction: a
        // concurrent remove_session runs entirely before (the write is
        // refused) or entirely after (the partition goes with the session).
        if let Some(id) = key.session_id() {
            let live = sqlx::query(sql::SESSION_IS_LIVE)
                .bind(id.secret())
                .bind(now)
                .fetch_optional(&mut *w.tx)
                .await
                .map_err(db_error)?
                .is_some();
            if !live {
                w.abort().await;
                return Err(StoreError::SignedOut);
            }
        }
        let found: Option<i64> = sqlx::query_scalar(sql::PARTITION_VERSION)
            .bind(&pkey)
            .fetch_optional(&mut *w.tx)
            .await
            .map_err(db_error)?;
        let found = to_u64(found.unwrap_or(0), "partition version")?;
        if let Some(expected) = write.expected_version
            && expected != found
        {
            w.abort().await;
            return Err(StoreError::Conflict { expected, found });
        }
        let version = found + 1;
        sqlx::query(sql::PARTITION_UPSERT)
            .bind(&pkey)
            .bind(key.session_id().map(SessionId::secret))
            .bind(to_i64(version, "partition version")?)
            .execute(&mut *w.tx)
            .await
            .map_err(db_error)?;
        for cache_key in &write.remove {
            sqlx::query(sql::ENTRY_DELETE)
                .bind(&pkey)
                .bind(cache_key)
                .execute(&mut *w.tx)
                .await
                .map_err(db_error)?;
        }
        for entry in &write.upsert {
            sqlx::query(sql::ENTRY_UPSERT)
                .bind(&pkey)
                .bind(&entry.cache_key)
                .bind(&entry.kind)
                .bind(entry.expires_at)
                .bind(entry.sealed.as_slice())
                .execute(&mut *w.tx)
                .await
                .map_err(db_error)?;
        }
        w.commit().await?;
        Ok(version)
    }

    async fn remove_partition(&self, key: &PartitionKey) -> Result<bool, StoreError> {
        let pkey = key.storage_key();
        let mut w = self.begin_write().await?;
        let had_entries: bool = sqlx::query_scalar(sql::PARTITION_HAS_ENTRIES)
            .bind(&pkey)
            .fetch_one(&mut *w.tx)
            .await
            .map_err(db_error)?;
        sqlx::query(sql::PARTITION_DELETE)
            .bind(&pkey)
            .execute(&mut *w.tx)
            .await
            .map_err(db_error)?;
        w.commit().await?;
        Ok(had_entries)
    }

    async fn put_tombstone(&self, tombstone: &Tombstone) -> Result<(), StoreError> {
        let (kind, iss, value) = selector_key(&tombstone.selector)?;
        let now = self.now();
        let mut w = self.begin_write().await?;
        sqlx::query(sql::TOMBSTONE_PUT)
            .bind(kind)
            .bind(iss)
            .bind(value)
            .bind(tombstone.logged_out_at)
            .bind(tombstone.expires_at)
            .bind(now)
            .execute(&mut *w.tx)
            .await
            .map_err(db_error)?;
        w.commit().await
    }

    async fn get_tombstone(
        &self,
        selector: &SessionLookup,
    ) -> Result<Option<Tombstone>, StoreError> {
        let (kind, iss, value) = selector_key(selector)?;
        let row = sqlx::query(sql::TOMBSTONE_GET)
            .bind(kind)
            .bind(iss)
            .bind(value)
            .bind(self.now())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.map(|row| {
            Ok(Tombstone::new(
                selector.clone(),
                row.try_get(0).map_err(db_error)?,
                row.try_get(1).map_err(db_error)?,
            ))
        })
        .transpose()
    }

    async fn record_jti(&self, iss: &str, jti: &str, expires_at: i64) -> Result<bool, StoreError> {
        let now = self.now();
        let mut w = self.begin_write().await?;
        sqlx::query(sql::JTI_DELETE_IF_EXPIRED)
            .bind(iss)
            .bind(jti)
            .bind(now)
            .execute(&mut *w.tx)
            .await
            .map_err(db_error)?;
        let inserted = sqlx::query(sql::JTI_INSERT)
            .bind(iss)
            .bind(jti)
            .bind(expires_at)
            .execute(&mut *w.tx)
            .await
            .map_err(db_error)?
            .rows_affected();
        w.commit().await?;
        Ok(inserted == 1)
    }

    async fn try_lock(&self, name: &str, ttl: Duration) -> Result<Option<LockToken>, StoreError> {
        let now = self.now();
        let until = now.saturating_add(i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX / 2));
        let token = LockToken::generate();
        let mut w = self.begin_write().await?;
        sqlx::query(sql::LOCK_DELETE_IF_EXPIRED)
            .bind(name)
            .bind(now)
            .execute(&mut *w.tx)
            .await
            .map_err(db_error)?;
        let inserted = sqlx::query(sql::LOCK_INSERT)
            .bind(name)
            .bind(token.as_str())
            .bind(until)
            .execute(&mut *w.tx)
            .await
            .map_err(db_error)?
            .rows_affected();
        w.commit().await?;
        Ok((inserted == 1).then_some(token))
    }

    async fn unlock(&self, name: &str, token: &LockToken) -> Result<(), StoreError> {
        let mut w = self.begin_write().await?;
        sqlx::query(sql::LOCK_DELETE)
            .bind(name)
            .bind(token.as_str())
            .execute(&mut *w.tx)
            .await
            .map_err(db_error)?;
        w.commit().await
    }

    async fn forget_jti(&self, iss: &str, jti: &str) -> Result<(), StoreError> {
        let mut w = self.begin_write().await?;
        sqlx::query(sql::JTI_FORGET)
            .bind(iss)
            .bind(jti)
            .execute(&mut *w.tx)
            .await
            .map_err(db_error)?;
        w.commit().await
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let now = self.now();
        // One read transaction: the counts come from one snapshot.
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let sessions: i64 = sqlx::query_scalar(sql::SESSION_COUNT)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
        let (partitions, entries): (i64, i64) = sqlx::query_as(sql::PARTITION_STATS)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
        let tombstones: i64 = sqlx::query_scalar(sql::TOMBSTONE_COUNT)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        let mut stats = StoreStats::default();
        stats.sessions = to_u64(sessions, "session count")?;
        stats.partitions = to_u64(partitions, "partition count")?;
        stats.entries = to_u64(entries, "entry count")?;
        stats.tombstones = to_u64(tombstones, "tombstone count")?;
        Ok(stats)
    }
}
