//! [`Store`] for [`SqliteStore`].

use std::time::Duration;

use async_trait::async_trait;
use idweb::{
    LockToken, PartitionKey, PartitionWrite, Session, SessionId, SessionLookup, SignOutOutcome,
    SignOutRequest, Store, StoreError, StoreStats, StoredPartition, Tombstone,
};

use crate::error::{corrupt, unavailable};
use crate::ops::{self, PartitionChange};
use crate::{SqliteStore, sql};

#[async_trait]
impl Store for SqliteStore {
    async fn put_session(&self, session: &Session) -> Result<(), StoreError> {
        let data = serde_json::to_string(session).map_err(corrupt)?;
        let now = self.now();
        let session = session.clone();
        self.write(move |conn| ops::put_session(conn, &session, &data, now))
            .await
    }

    async fn get_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        Ok(self
            .get_session_and_partition_version(id)
            .await?
            .map(|(s, _)| s))
    }

    /// One statement, one snapshot: the session row (with its tombstone
    /// check) and its partition's version. An ended session is deleted now
    /// rather than at the next purge; the decoded session is reused while
    /// the row is byte for byte the one decoded before.
    async fn get_session_and_partition_version(
        &self,
        id: &SessionId,
    ) -> Result<Option<(Session, Option<Option<u64>>)>, StoreError> {
        let now = self.now();
        let key = id.secret().to_string();
        let pkey = PartitionKey::Session(id.clone()).storage_key();
        let inner = self.inner.clone();
        let row = self
            .read(move |conn| {
                let reuse = |text: &str| inner.decoded.get(&key, text);
                ops::get_session_checked(conn, &key, &pkey, now, &reuse)
            })
            .await?;
        let Some(ops::SessionRow {
            data,
            expires_at,
            signed_out,
            version,
        }) = row
        else {
            return Ok(None);
        };
        if signed_out {
            // A tombstone covers it: signed out, whatever rows remain.
            return Ok(None);
        }
        if expires_at <= now {
            // The session has ended: take it and its tokens out now rather
            // than at the next purge. Failing to do so does not make the
            // session any less ended.
            let key = id.secret().to_string();
            if let Err(e) = self
                .write(move |conn| ops::delete_if_expired(conn, &key, now))
                .await
            {
                tracing::warn!(
                    session = %id.fingerprint(),
                    error = %e,
                    "could not delete an expired session; the next purge will"
                );
            }
            return Ok(None);
        }
        let version = version
            .map(|v| ops::to_u64(v, "partition version"))
            .transpose()?;
        let session = match data {
            // The row is byte for byte the one decoded before (compared in
            // the read, against SQLite's own copy of the text).
            ops::RowData::Reused(session) => session,
            ops::RowData::Text(data) => {
                let session = ops::decode_session(&data)?;
                if !session.id.matches(id) {
                    return Err(corrupt("a session row holds another session's id"));
                }
                self.inner.decoded.put(key_of(id), data, &session);
                session
            }
        };
        Ok(Some((session, Some(version))))
    }

    async fn remove_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        let key = id.secret().to_string();
        let pkey = PartitionKey::Session(id.clone()).storage_key();
        let data = self
            .write(move |conn| ops::remove_session(conn, &key, &pkey))
            .await?;
        // Removed even when its data no longer decodes: a sign-out must not
        // be stopped by a damaged row. The caller still learns about it.
        data.map(|(d, _)| ops::decode_session(&d)).transpose()
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
        let (iss, value) = (iss.clone(), value.clone());
        self.read(move |conn| ops::find_sessions(conn, statement, &iss, &value, now))
            .await
    }

    async fn session_count(&self) -> Result<u64, StoreError> {
        let now = self.now();
        self.read_blocking(move |conn| ops::session_count(conn, now))
            .await
    }

    async fn list_sessions(
        &self,
        after: Option<&SessionId>,
        limit: usize,
    ) -> Result<Vec<Session>, StoreError> {
        let now = self.now();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let after = after.map(|a| a.secret().to_string());
        self.read_blocking(move |conn| ops::list_sessions(conn, after.as_deref(), now, limit))
            .await
    }

    async fn get_partition(
        &self,
        key: &PartitionKey,
    ) -> Result<Option<StoredPartition>, StoreError> {
        let now = self.now();
        let pkey = key.storage_key();
        self.read(move |conn| ops::get_partition(conn, &pkey, now))
            .await
    }

    async fn partition_version(&self, key: &PartitionKey) -> Result<Option<u64>, StoreError> {
        let now = self.now();
        let pkey = key.storage_key();
        self.read(move |conn| ops::partition_version(conn, &pkey, now))
            .await
    }

    async fn write_partition(
        &self,
        key: &PartitionKey,
        write: PartitionWrite,
    ) -> Result<u64, StoreError> {
        let change = PartitionChange {
            pkey: key.storage_key(),
            session_id: key.session_id().map(|id| id.secret().to_string()),
            upsert: write.upsert,
            remove: write.remove,
            expected_version: write.expected_version,
            now: self.now(),
        };
        self.write(move |conn| ops::write_partition(conn, &change))
            .await
    }

    async fn remove_partition(&self, key: &PartitionKey) -> Result<bool, StoreError> {
        let pkey = key.storage_key();
        self.write(move |conn| ops::remove_partition(conn, &pkey))
            .await
    }

    async fn put_tombstone(&self, tombstone: &Tombstone) -> Result<(), StoreError> {
        // Refused here, before it is queued, if the selector is unknown.
        ops::selector_key(&tombstone.selector)?;
        let now = self.now();
        let tombstone = tombstone.clone();
        self.write(move |conn| ops::put_tombstone(conn, &tombstone, now))
            .await
    }

    async fn get_tombstone(
        &self,
        selector: &SessionLookup,
    ) -> Result<Option<Tombstone>, StoreError> {
        let now = self.now();
        let owned = selector.clone();
        let found = self
            .read(move |conn| ops::get_tombstone(conn, &owned, now))
            .await?;
        Ok(found.map(|(logged_out_at, expires_at)| {
            Tombstone::new(selector.clone(), logged_out_at, expires_at)
        }))
    }

    async fn record_jti(&self, iss: &str, jti: &str, expires_at: i64) -> Result<bool, StoreError> {
        let now = self.now();
        let (iss, jti) = (iss.to_string(), jti.to_string());
        self.write(move |conn| ops::record_jti(conn, &iss, &jti, expires_at, now))
            .await
    }

    async fn is_jti_recorded(&self, iss: &str, jti: &str) -> Result<bool, StoreError> {
        let now = self.now();
        let (iss, jti) = (iss.to_string(), jti.to_string());
        self.read(move |conn| ops::jti_recorded(conn, &iss, &jti, now))
            .await
    }

    /// Atomic: one operation of the writer, so the whole sign-out commits
    /// in one transaction (grouped with other writes, one flush for all).
    async fn sign_out(&self, request: &SignOutRequest) -> Result<SignOutOutcome, StoreError> {
        if let idweb::SignOutTarget::Lookup(lookup) = &request.target {
            // Refused here, before it is queued, if the selector is unknown.
            ops::selector_key(lookup)?;
        }
        let now = self.now();
        let request = request.clone();
        self.write(move |conn| ops::sign_out(conn, &request, now))
            .await
    }

    async fn forget_jti(&self, iss: &str, jti: &str) -> Result<(), StoreError> {
        let (iss, jti) = (iss.to_string(), jti.to_string());
        self.write(move |conn| ops::forget_jti(conn, &iss, &jti))
            .await
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let now = self.now();
        self.read_blocking(move |conn| ops::stats(conn, now)).await
    }

    async fn try_lock(&self, name: &str, ttl: Duration) -> Result<Option<LockToken>, StoreError> {
        let now = self.now();
        let until = now.saturating_add(i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX / 2));
        let token = LockToken::generate();
        let (name, held) = (name.to_string(), token.as_str().to_string());
        let taken = self
            .write(move |conn| ops::try_lock(conn, &name, &held, until, now))
            .await?;
        Ok(taken.then_some(token))
    }

    async fn unlock(&self, name: &str, token: &LockToken) -> Result<(), StoreError> {
        let (name, token) = (name.to_string(), token.as_str().to_string());
        self.write(move |conn| ops::unlock(conn, &name, &token))
            .await
    }

    async fn purge_expired(&self) -> Result<u64, StoreError> {
        SqliteStore::purge_expired(self).await
    }
}

fn key_of(id: &SessionId) -> String {
    id.secret().to_string()
}

/// Most decoded sessions kept; past it the memo starts over.
const MAX_DECODED: usize = 10_000;

/// Sessions decoded from the JSON of their rows, by session id, each with
/// the row text it was decoded from. A read still fetches the row (with its
/// tombstone check) every time; only when the row's text is exactly the
/// text decoded before is the decoded session reused, so the answer is
/// always what the row says now. Saves a JSON parse per request.
#[derive(Default)]
pub(crate) struct Decoded(std::sync::Mutex<std::collections::HashMap<String, (String, Session)>>);

impl Decoded {
    fn map(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (String, Session)>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, key: &str, data: &str) -> Option<Session> {
        self.map()
            .get(key)
            .filter(|(text, _)| text == data)
            .map(|(_, session)| session.clone())
    }

    fn put(&self, key: String, data: String, session: &Session) {
        let mut map = self.map();
        if map.len() >= MAX_DECODED {
            map.clear();
        }
        map.insert(key, (data, session.clone()));
    }
}
