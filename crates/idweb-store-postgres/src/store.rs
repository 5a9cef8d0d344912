//! [`Store`] for [`PostgresStore`].

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use idweb::{
    LockToken, PartitionKey, PartitionWrite, Session, SessionId, SessionLookup, SignOutOutcome,
    SignOutRequest, SignOutTarget, Store, StoreError, StoreStats, StoredEntry, StoredPartition,
    Tombstone, sign_out_in_order,
};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::error::{bad_row, corrupt};
use crate::{LONG_OP_TIMEOUT, PostgresStore, sql};

/// The first schema version whose `sign_out` function reports everything
/// [`SignOutOutcome`] holds (version 2 brought the function, version 4 its
/// count of entries removed).
pub(crate) const SIGN_OUT_VERSION: i64 = 4;

/// The `tombstones` row key of a selector: `(kind, iss, value)`.
pub(crate) fn selector_key(
    selector: &SessionLookup,
) -> Result<(&'static str, &str, &str), StoreError> {
    match selector {
        SessionLookup::ByProviderSession { iss, sid } => Ok(("sid", iss, sid)),
        SessionLookup::BySubject { iss, sub } => Ok(("sub", iss, sub)),
        _ => Err(StoreError::Unavailable(
            "this store does not know that kind of session lookup".into(),
        )),
    }
}

fn decode_session(data: &str) -> Result<Session, StoreError> {
    serde_json::from_str(data).map_err(corrupt)
}

fn to_u64(n: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| corrupt(format!("negative {what} ({n})")))
}

fn to_i64(n: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(n)
        .map_err(|_| StoreError::Unavailable(format!("{what} {n} is too large to store").into()))
}

fn session_of(row: &Row, id: Option<&SessionId>) -> Result<Session, StoreError> {
    let data: String = row.try_get(0).map_err(bad_row)?;
    let session = decode_session(&data)?;
    if let Some(id) = id
        && !session.id.matches(id)
    {
        return Err(corrupt("a session row holds another session's id"));
    }
    Ok(session)
}

/// A `NOTIFY` to send in the same statement as a write: channel, message.
pub(crate) type Notify<'a> = Option<(&'a str, &'a str)>;

/// `params`, then the notification's channel and message when there is one.
fn with_notify<'a>(
    params: &[&'a (dyn ToSql + Sync)],
    notify: &'a Notify<'a>,
) -> Vec<&'a (dyn ToSql + Sync)> {
    let mut all = params.to_vec();
    if let Some((channel, message)) = notify {
        all.push(channel);
        all.push(message);
    }
    all
}

impl PostgresStore {
    pub(crate) async fn put_session_notify(
        &self,
        session: &Session,
        notify: Notify<'_>,
    ) -> Result<(), StoreError> {
        let data = serde_json::to_string(session).map_err(corrupt)?;
        let now = self.now();
        let statement = if notify.is_some() {
            sql::PUT_SESSION_NOTIFY
        } else {
            sql::PUT_SESSION
        };
        let row = self
            .query_one(
                statement,
                &with_notify(
                    &[
                        &session.id.secret(),
                        &session.iss,
                        &session.sub,
                        &session.sid,
                        &session.created_at,
                        &session.expires_at,
                        &data,
                        &now,
                    ],
                    &notify,
                ),
            )
            .await?;
        if row.try_get::<_, bool>(0).map_err(bad_row)? {
            Ok(())
        } else {
            Err(StoreError::SignedOut)
        }
    }

    pub(crate) async fn remove_session_notify(
        &self,
        id: &SessionId,
        notify: Notify<'_>,
    ) -> Result<Option<Session>, StoreError> {
        let Some((channel, message)) = notify else {
            let rows = self.query(sql::REMOVE_SESSION, &[&id.secret()]).await?;
            // Removed even when its data no longer decodes: a sign-out must
            // not be stopped by a damaged row. The caller still learns of it.
            return rows.first().map(|row| session_of(row, None)).transpose();
        };
        let row = self
            .query_one(
                sql::REMOVE_SESSION_NOTIFY,
                &[&id.secret(), &channel, &message],
            )
            .await?;
        match row.try_get::<_, Option<String>>(0).map_err(bad_row)? {
            Some(data) => decode_session(&data).map(Some),
            None => Ok(None),
        }
    }

    pub(crate) async fn write_partition_notify(
        &self,
        key: &PartitionKey,
        write: PartitionWrite,
        notify: Notify<'_>,
    ) -> Result<u64, StoreError> {
        let now = self.now();
        let pkey = key.storage_key();
        let session = key.session_id().map(|id| id.secret().to_string());
        let expected = write
            .expected_version
            .map(|v| to_i64(v, "partition version"))
            .transpose()?;
        // One row per cache key (the last upsert of a key wins), as one
        // INSERT cannot touch a row twice.
        let mut last: HashMap<&str, usize> = HashMap::new();
        for (i, e) in write.upsert.iter().enumerate() {
            last.insert(e.cache_key.as_str(), i);
        }
        let mut upsert: Vec<&StoredEntry> = write
            .upsert
            .iter()
            .enumerate()
            .filter(|(i, e)| last.get(e.cache_key.as_str()) == Some(i))
            .map(|(_, e)| e)
            .collect();
        upsert.sort_by(|a, b| a.cache_key.cmp(&b.cache_key));
        let keys: Vec<&str> = upsert.iter().map(|e| e.cache_key.as_str()).collect();
        let kinds: Vec<&str> = upsert.iter().map(|e| e.kind.as_str()).collect();
        let expires: Vec<Option<i64>> = upsert.iter().map(|e| e.expires_at).collect();
        let sealed: Vec<&[u8]> = upsert.iter().map(|e| e.sealed.as_slice()).collect();
        let remove: Vec<&str> = write.remove.iter().map(String::as_str).collect();
        let statement = if notify.is_some() {
            sql::WRITE_PARTITION_NOTIFY
        } else {
            sql::WRITE_PARTITION
        };
        let row = self
            .query_one(
                statement,
                &with_notify(
                    &[
                        &pkey, &session, &expected, &now, &remove, &keys, &kinds, &expires, &sealed,
                    ],
                    &notify,
                ),
            )
            .await?;
        let status: i32 = row.try_get(0).map_err(bad_row)?;
        let version = to_u64(row.try_get(1).map_err(bad_row)?, "partition version")?;
        match status {
            0 => Ok(version),
            1 => Err(StoreError::SignedOut),
            2 => Err(StoreError::Conflict {
                expected: write.expected_version.unwrap_or_default(),
                found: version,
            }),
            _ => Err(corrupt(format!("write_partition answered status {status}"))),
        }
    }

    pub(crate) async fn remove_partition_notify(
        &self,
        key: &PartitionKey,
        notify: Notify<'_>,
    ) -> Result<bool, StoreError> {
        let statement = if notify.is_some() {
            sql::REMOVE_PARTITION_NOTIFY
        } else {
            sql::REMOVE_PARTITION
        };
        let row = self
            .query_one(statement, &with_notify(&[&key.storage_key()], &notify))
            .await?;
        row.try_get(0).map_err(bad_row)
    }

    pub(crate) async fn put_tombstone_notify(
        &self,
        tombstone: &Tombstone,
        notify: Notify<'_>,
    ) -> Result<(), StoreError> {
        let (kind, iss, value) = selector_key(&tombstone.selector)?;
        let now = self.now();
        let statement = if notify.is_some() {
            sql::PUT_TOMBSTONE_NOTIFY
        } else {
            sql::PUT_TOMBSTONE
        };
        self.query(
            statement,
            &with_notify(
                &[
                    &kind,
                    &iss,
                    &value,
                    &tombstone.logged_out_at,
                    &tombstone.expires_at,
                    &now,
                ],
                &notify,
            ),
        )
        .await
        .map(drop)
    }
}

/// The parameters of the `sign_out` function (`$1`–`$10` of
/// [`sql::SIGN_OUT`] and [`sql::SIGN_OUT_NOTIFY`]).
pub(crate) struct SignOutArgs<'a> {
    kind: &'static str,
    iss: Option<&'a str>,
    value: &'a str,
    logged_out_at: i64,
    tombstone_expires_at: i64,
    only_if_found: bool,
    jti_iss: Option<&'a str>,
    jti: Option<&'a str>,
    jti_expires_at: Option<i64>,
    now: i64,
}

impl<'a> SignOutArgs<'a> {
    pub(crate) fn new(request: &'a SignOutRequest, now: i64) -> Result<Self, StoreError> {
        let (kind, iss, value) = match &request.target {
            SignOutTarget::Session(id) => ("id", None, id.secret()),
            SignOutTarget::Lookup(lookup) => {
                let (kind, iss, value) = selector_key(lookup)?;
                (kind, Some(iss), value)
            }
            _ => {
                return Err(StoreError::Unavailable(
                    "this store does not know that kind of sign-out target".into(),
                ));
            }
        };
        let jti = request.jti.as_ref();
        Ok(Self {
            kind,
            iss,
            value,
            logged_out_at: request.logged_out_at,
            tombstone_expires_at: request.tombstone_expires_at,
            only_if_found: request.only_if_found,
            jti_iss: jti.map(|j| j.iss.as_str()),
            jti: jti.map(|j| j.jti.as_str()),
            jti_expires_at: jti.map(|j| j.expires_at),
            now,
        })
    }

    /// `$1`–`$10`, in order.
    pub(crate) fn params(&self) -> [&(dyn ToSql + Sync); 10] {
        [
            &self.kind,
            &self.iss,
            &self.value,
            &self.logged_out_at,
            &self.tombstone_expires_at,
            &self.only_if_found,
            &self.jti_iss,
            &self.jti,
            &self.jti_expires_at,
            &self.now,
        ]
    }
}

/// The outcome of a `sign_out` call that was no replay.
pub(crate) fn signed_out(removed: Vec<String>, entries: i64) -> Result<SignOutOutcome, StoreError> {
    Ok(SignOutOutcome::SignedOut {
        removed: removed.into_iter().map(SessionId::from_string).collect(),
        entries_removed: u64::try_from(entries)
            .map_err(|_| corrupt("a negative count of entries"))?,
    })
}

#[async_trait]
impl Store for PostgresStore {
    async fn put_session(&self, session: &Session) -> Result<(), StoreError> {
        self.put_session_notify(session, None).await
    }

    async fn get_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        Ok(self
            .get_session_and_partition_version(id)
            .await?
            .map(|(s, _)| s))
    }

    /// One statement (one snapshot, one round trip): the session with its
    /// tombstone check, and its partition's version.
    async fn get_session_and_partition_version(
        &self,
        id: &SessionId,
    ) -> Result<Option<(Session, Option<Option<u64>>)>, StoreError> {
        let now = self.now();
        let pkey = PartitionKey::Session(id.clone()).storage_key();
        let rows = self
            .read(sql::GET_SESSION, &[&id.secret(), &now, &pkey])
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let session = session_of(row, Some(id))?;
        let version = row
            .try_get::<_, Option<i64>>(1)
            .map_err(bad_row)?
            .map(|v| to_u64(v, "partition version"))
            .transpose()?;
        Ok(Some((session, Some(version))))
    }

    async fn remove_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        self.remove_session_notify(id, None).await
    }

    async fn find_sessions(&self, lookup: &SessionLookup) -> Result<Vec<SessionId>, StoreError> {
        let now = self.now();
        let (kind, iss, value) = selector_key(lookup)?;
        let statement = if kind == "sid" {
            sql::SESSIONS_BY_SID
        } else {
            sql::SESSIONS_BY_SUB
        };
        self.read(statement, &[&iss, &value, &now])
            .await?
            .iter()
            .map(|row| {
                row.try_get::<_, String>(0)
                    .map(SessionId::from_string)
                    .map_err(bad_row)
            })
            .collect()
    }

    async fn session_count(&self) -> Result<u64, StoreError> {
        let now = self.now();
        let rows = self
            .query_within(LONG_OP_TIMEOUT, sql::SESSION_COUNT, &[&now], true)
            .await?;
        let n: i64 = rows
            .first()
            .ok_or_else(|| corrupt("no count"))?
            .try_get(0)
            .map_err(bad_row)?;
        to_u64(n, "session count")
    }

    async fn list_sessions(
        &self,
        after: Option<&SessionId>,
        limit: usize,
    ) -> Result<Vec<Session>, StoreError> {
        let now = self.now();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match after {
            None => {
                self.query_within(
                    LONG_OP_TIMEOUT,
                    sql::SESSIONS_LIST_FIRST,
                    &[&now, &limit],
                    true,
                )
                .await?
            }
            Some(after) => {
                self.query_within(
                    LONG_OP_TIMEOUT,
                    sql::SESSIONS_LIST_AFTER,
                    &[&after.secret(), &now, &limit],
                    true,
                )
                .await?
            }
        };
        rows.iter().map(|row| session_of(row, None)).collect()
    }

    async fn get_partition(
        &self,
        key: &PartitionKey,
    ) -> Result<Option<StoredPartition>, StoreError> {
        let now = self.now();
        let rows = self
            .read(sql::GET_PARTITION, &[&key.storage_key(), &now])
            .await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let mut partition = StoredPartition::default();
        partition.version = to_u64(first.try_get(0).map_err(bad_row)?, "partition version")?;
        for row in &rows {
            partition.entries.push(StoredEntry::new(
                row.try_get::<_, String>(1).map_err(bad_row)?,
                row.try_get::<_, String>(2).map_err(bad_row)?,
                row.try_get::<_, Option<i64>>(3).map_err(bad_row)?,
                row.try_get::<_, Vec<u8>>(4).map_err(bad_row)?,
            ));
        }
        Ok(Some(partition))
    }

    async fn partition_version(&self, key: &PartitionKey) -> Result<Option<u64>, StoreError> {
        let now = self.now();
        let rows = self
            .read(sql::PARTITION_VERSION, &[&key.storage_key(), &now])
            .await?;
        rows.first()
            .map(|row| {
                row.try_get::<_, i64>(0)
                    .map_err(bad_row)
                    .and_then(|v| to_u64(v, "partition version"))
            })
            .transpose()
    }

    async fn write_partition(
        &self,
        key: &PartitionKey,
        write: PartitionWrite,
    ) -> Result<u64, StoreError> {
        self.write_partition_notify(key, write, None).await
    }

    async fn remove_partition(&self, key: &PartitionKey) -> Result<bool, StoreError> {
        self.remove_partition_notify(key, None).await
    }

    async fn put_tombstone(&self, tombstone: &Tombstone) -> Result<(), StoreError> {
        self.put_tombstone_notify(tombstone, None).await
    }

    async fn get_tombstone(
        &self,
        selector: &SessionLookup,
    ) -> Result<Option<Tombstone>, StoreError> {
        let (kind, iss, value) = selector_key(selector)?;
        let now = self.now();
        let rows = self
            .read(sql::GET_TOMBSTONE, &[&kind, &iss, &value, &now])
            .await?;
        rows.first()
            .map(|row| {
                Ok(Tombstone::new(
                    selector.clone(),
                    row.try_get(0).map_err(bad_row)?,
                    row.try_get(1).map_err(bad_row)?,
                ))
            })
            .transpose()
    }

    async fn record_jti(&self, iss: &str, jti: &str, expires_at: i64) -> Result<bool, StoreError> {
        let now = self.now();
        let rows = self
            .query(sql::RECORD_JTI, &[&iss, &jti, &expires_at, &now])
            .await?;
        Ok(!rows.is_empty())
    }

    async fn is_jti_recorded(&self, iss: &str, jti: &str) -> Result<bool, StoreError> {
        let now = self.now();
        let row = self
            .read(sql::JTI_RECORDED, &[&iss, &jti, &now])
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| corrupt("no answer to a jti lookup"))?;
        row.try_get(0).map_err(bad_row)
    }

    /// Atomic: one statement, the function `sign_out` of schema version 4,
    /// running as one transaction. On a schema held at an older version
    /// (opened with a maximum version, for migration tests) the
    /// order-based default, which counts the entries it removes too.
    async fn sign_out(&self, request: &SignOutRequest) -> Result<SignOutOutcome, StoreError> {
        if self.inner.schema_version < SIGN_OUT_VERSION {
            return sign_out_in_order(self, request).await;
        }
        let args = SignOutArgs::new(request, self.now())?;
        let row = self.query_one(sql::SIGN_OUT, &args.params()).await?;
        if row.try_get::<_, bool>(0).map_err(bad_row)? {
            return Ok(SignOutOutcome::Replayed);
        }
        signed_out(
            row.try_get(1).map_err(bad_row)?,
            row.try_get(2).map_err(bad_row)?,
        )
    }

    async fn forget_jti(&self, iss: &str, jti: &str) -> Result<(), StoreError> {
        self.query(sql::FORGET_JTI, &[&iss, &jti]).await.map(drop)
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let now = self.now();
        let rows = self
            .query_within(LONG_OP_TIMEOUT, sql::STATS, &[&now], true)
            .await?;
        let row = rows.first().ok_or_else(|| corrupt("no statistics"))?;
        let count = |i: usize, what: &str| -> Result<u64, StoreError> {
            to_u64(row.try_get(i).map_err(bad_row)?, what)
        };
        let mut stats = StoreStats::default();
        stats.sessions = count(0, "session count")?;
        stats.partitions = count(1, "partition count")?;
        stats.entries = count(2, "entry count")?;
        stats.tombstones = count(3, "tombstone count")?;
        Ok(stats)
    }

    async fn try_lock(&self, name: &str, ttl: Duration) -> Result<Option<LockToken>, StoreError> {
        let now = self.now_ms();
        let ttl = i64::try_from(ttl.as_millis().max(1)).unwrap_or(i64::MAX / 2);
        let until = now.saturating_add(ttl);
        let token = LockToken::generate();
        let rows = self
            .query(sql::TRY_LOCK, &[&name, &token.as_str(), &until, &now])
            .await?;
        Ok((!rows.is_empty()).then_some(token))
    }

    async fn unlock(&self, name: &str, token: &LockToken) -> Result<(), StoreError> {
        self.query(sql::UNLOCK, &[&name, &token.as_str()])
            .await
            .map(drop)
    }
}
