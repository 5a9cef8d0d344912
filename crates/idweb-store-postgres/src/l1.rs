//! [`L1Backend`] for [`PostgresStore`]: the in-process cache of `idweb-l1`
//! over `LISTEN/NOTIFY`. Each write carries its announcement as a
//! `pg_notify` in the same statement (one transaction): a write that rolls
//! back announces nothing, one that commits is heard by every listening
//! connection, in commit order. Each cache listens on a connection of its
//! own, outside the pool.

use std::sync::Arc;

use async_trait::async_trait;
use aws_lc_rs::digest::{SHA256, digest};
use idweb::{
    Clock, PartitionKey, PartitionWrite, Session, SessionId, SignOutOutcome, SignOutRequest,
    SignOutTarget, StoreError, StoredEntry, StoredPartition, Tombstone,
};
use idweb_l1::{BusConnection, BusSink, DROP_ALL, L1Backend, names};
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Client, NoTls, Statement};

use crate::error::{PostgresError, bad_row, corrupt, unavailable};
use crate::store::{SignOutArgs, signed_out};
use crate::{PostgresStore, sql};

/// The in-process cache in front of a [`PostgresStore`], kept coherent by
/// `LISTEN/NOTIFY` (see the [crate documentation](crate#the-in-process-cache)).
pub type CachingStore = idweb_l1::CachingStore<PostgresStore>;

/// The largest notification payload PostgreSQL accepts is 7999 bytes.
pub(crate) const MAX_PAYLOAD: usize = 7_999;

/// The prefix of this store's channel names: the schema, or a digest of it
/// when the names would be too long for PostgreSQL (63 bytes).
fn channel_base(schema: &str) -> String {
    if schema.len() <= 32 {
        schema.to_string()
    } else {
        let d = digest(&SHA256, schema.as_bytes());
        let hex: String = d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("h{hex}")
    }
}

/// The invalidation channel: `SCHEMA:invalidate`.
pub(crate) fn invalidation_channel(schema: &str) -> String {
    format!("{}:invalidate", channel_base(schema))
}

/// The sign-out event channel: `SCHEMA:signout`.
pub(crate) fn sign_out_channel(schema: &str) -> String {
    format!("{}:signout", channel_base(schema))
}

/// The channel on which instance `origin` hears acknowledgements:
/// `SCHEMA:ack:` and the first 16 characters of its random token.
fn ack_channel(schema: &str, origin: &str) -> String {
    let token: String = origin.trim_start_matches('@').chars().take(16).collect();
    format!("{}:ack:{token}", channel_base(schema))
}

/// A quoted identifier (a channel name for `LISTEN`).
pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A connection of its own (outside the pool) whose notifications on
/// `channels` go to `deliver`, and whose end (closed, failed, terminated)
/// calls `lost`. Returns once `LISTEN` is confirmed, with the statement
/// that publishes (`pg_notify`) prepared.
pub(crate) async fn listening_connection(
    store: &PostgresStore,
    channels: &[&str],
    deliver: impl Fn(&str, &str) + Send + 'static,
    lost: impl FnOnce() + Send + 'static,
) -> Result<(Client, Statement), StoreError> {
    let mut config = store.inner.config.pg.clone();
    // Named, so that an operator (or a test) can tell it in pg_stat_activity.
    config.application_name(format!("idweb listener {}", store.schema()));
    let (client, mut connection) = config.connect(NoTls).await.map_err(unavailable)?;
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => deliver(n.channel(), n.payload()),
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %PostgresError::from(e), "the listening connection failed");
                    break;
                }
                None => break,
            }
        }
        lost();
    });
    let listen: Vec<String> = channels
        .iter()
        .map(|c| format!("LISTEN {};", quote(c)))
        .collect();
    client
        .batch_execute(&listen.concat())
        .await
        .map_err(unavailable)?;
    let notify = client.prepare(sql::NOTIFY).await.map_err(unavailable)?;
    Ok((client, notify))
}

/// The cache's listening connection, also used for its heartbeats and
/// acknowledgements.
struct Listening {
    client: Client,
    notify: Statement,
    schema: String,
    channel: String,
}

impl Listening {
    async fn notify(&self, channel: &str, message: &str) -> Result<(), StoreError> {
        self.client
            .execute(&self.notify, &[&channel, &message])
            .await
            .map(drop)
            .map_err(unavailable)
    }
}

#[async_trait]
impl BusConnection for Listening {
    async fn publish(&self, message: &str) -> Result<(), StoreError> {
        self.notify(&self.channel, message).await
    }

    async fn acknowledge(&self, to: &str, message: &str) -> Result<(), StoreError> {
        self.notify(&ack_channel(&self.schema, to), message).await
    }
}

impl PostgresStore {
    /// The channel of this store's L1 invalidations: `SCHEMA:invalidate`.
    pub fn invalidation_channel(&self) -> String {
        invalidation_channel(self.schema())
    }

    /// `message`, or "drop everything" from the same origin when it would
    /// not fit a notification.
    fn fitting<'a>(&self, message: &'a str) -> std::borrow::Cow<'a, str> {
        if message.len() <= MAX_PAYLOAD {
            return message.into();
        }
        let origin = message.split('\n').next().unwrap_or_default();
        names::message(origin, &[DROP_ALL]).into()
    }
}

#[async_trait]
impl L1Backend for PostgresStore {
    fn clock(&self) -> Arc<dyn Clock> {
        self.inner.clock.clone()
    }

    /// `true`: each `NOTIFY` is part of its write's statement.
    fn announces_in_transaction(&self) -> bool {
        true
    }

    async fn read_partition(
        &self,
        key: &PartitionKey,
    ) -> Result<Option<(StoredPartition, Option<i64>)>, StoreError> {
        let now = self.now();
        let rows = self
            .read(sql::GET_PARTITION_L1, &[&key.storage_key(), &now])
            .await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let mut partition = StoredPartition::default();
        let version: i64 = first.try_get(0).map_err(bad_row)?;
        partition.version =
            u64::try_from(version).map_err(|_| corrupt("negative partition version"))?;
        let session_expires_at: Option<i64> = first.try_get(5).map_err(bad_row)?;
        for row in &rows {
            partition.entries.push(StoredEntry::new(
                row.try_get::<_, String>(1).map_err(bad_row)?,
                row.try_get::<_, String>(2).map_err(bad_row)?,
                row.try_get::<_, Option<i64>>(3).map_err(bad_row)?,
                row.try_get::<_, Vec<u8>>(4).map_err(bad_row)?,
            ));
        }
        Ok(Some((partition, session_expires_at)))
    }

    async fn put_session_announced(
        &self,
        session: &Session,
        message: &str,
    ) -> Result<(), StoreError> {
        let channel = self.invalidation_channel();
        let message = self.fitting(message);
        self.put_session_notify(session, Some((&channel, &message)))
            .await
    }

    async fn remove_session_announced(
        &self,
        id: &SessionId,
        message: &str,
    ) -> Result<Option<Session>, StoreError> {
        let channel = self.invalidation_channel();
        let message = self.fitting(message);
        self.remove_session_notify(id, Some((&channel, &message)))
            .await
    }

    async fn write_partition_announced(
        &self,
        key: &PartitionKey,
        write: PartitionWrite,
        message: &str,
    ) -> Result<u64, StoreError> {
        let channel = self.invalidation_channel();
        let message = self.fitting(message);
        self.write_partition_notify(key, write, Some((&channel, &message)))
            .await
    }

    async fn remove_partition_announced(
        &self,
        key: &PartitionKey,
        message: &str,
    ) -> Result<bool, StoreError> {
        let channel = self.invalidation_channel();
        let message = self.fitting(message);
        self.remove_partition_notify(key, Some((&channel, &message)))
            .await
    }

    async fn put_tombstone_announced(
        &self,
        tombstone: &Tombstone,
        message: &str,
    ) -> Result<(), StoreError> {
        let channel = self.invalidation_channel();
        let message = self.fitting(message);
        self.put_tombstone_notify(tombstone, Some((&channel, &message)))
            .await
    }

    /// One statement: the `sign_out` function and its `NOTIFY`, composed
    /// in SQL from the sessions it removed (see `sql::SIGN_OUT_NOTIFY`).
    /// `None` on a schema still at version 1 (migration tests only).
    async fn sign_out_announced(
        &self,
        request: &SignOutRequest,
        origin: &str,
        first_word: &str,
        words: &mut Vec<String>,
    ) -> Option<Result<SignOutOutcome, StoreError>> {
        if self.inner.schema_version < crate::store::SIGN_OUT_VERSION {
            return None;
        }
        Some(
            self.sign_out_notify(request, origin, first_word, words)
                .await,
        )
    }

    async fn publish(&self, message: &str) -> Result<(), StoreError> {
        let channel = self.invalidation_channel();
        let message = self.fitting(message);
        self.query(sql::NOTIFY, &[&channel, &message.as_ref()])
            .await
            .map(drop)
    }

    async fn listen(
        &self,
        origin: &str,
        sink: BusSink,
    ) -> Result<Arc<dyn BusConnection>, StoreError> {
        let schema = self.schema().to_string();
        let channel = invalidation_channel(&schema);
        let acks = ack_channel(&schema, origin);
        let (heard, gone) = (sink.clone(), sink);
        let (inv, ack) = (channel.clone(), acks.clone());
        let deliver = move |ch: &str, payload: &str| {
            if ch == inv {
                heard.message(payload);
            } else if ch == ack {
                heard.acknowledgement(payload);
            }
        };
        let (client, notify) =
            listening_connection(self, &[&channel, &acks], deliver, move || gone.lost()).await?;
        Ok(Arc::new(Listening {
            client,
            notify,
            schema,
            channel,
        }))
    }
}

impl PostgresStore {
    async fn sign_out_notify(
        &self,
        request: &SignOutRequest,
        origin: &str,
        first_word: &str,
        words: &mut Vec<String>,
    ) -> Result<SignOutOutcome, StoreError> {
        words.clear();
        let args = SignOutArgs::new(request, self.now())?;
        // A lookup's tombstone word leads the message (a session target's,
        // known only to the database, is added there).
        let tombstone = match &request.target {
            SignOutTarget::Lookup(lookup) => Some(names::tombstone_word(
                &names::selector_tag(lookup)
                    .ok_or_else(|| corrupt("a lookup without a selector tag"))?,
            )),
            _ => None,
        };
        let head = match &tombstone {
            Some(t) => names::message(origin, &[first_word, t]),
            None => names::message(origin, &[first_word]),
        };
        let drop_all = names::message(origin, &[first_word, DROP_ALL]);
        let channel = self.invalidation_channel();
        let mut params: Vec<&(dyn ToSql + Sync)> = args.params().to_vec();
        params.extend([&channel as &(dyn ToSql + Sync), &head, &drop_all]);
        let row = self.query_one(sql::SIGN_OUT_NOTIFY, &params).await?;
        if row.try_get::<_, bool>(0).map_err(bad_row)? {
            return Ok(SignOutOutcome::Replayed);
        }
        let message: Option<String> = row.try_get(2).map_err(bad_row)?;
        if let Some(message) = message {
            words.extend(message.split('\n').skip(1).map(str::to_string));
        }
        signed_out(
            row.try_get(1).map_err(bad_row)?,
            row.try_get(4).map_err(bad_row)?,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_fit_postgres_identifiers() {
        let origin = format!("@{}", idweb::LockToken::generate().as_str());
        for schema in [
            "idweb",
            "a_rather_long_schema_name_of_63_characters_xxxxxxxxxxxxxxxxxxxxx",
        ] {
            for name in [
                invalidation_channel(schema),
                sign_out_channel(schema),
                ack_channel(schema, &origin),
            ] {
                assert!(name.len() <= 63, "{name}");
            }
        }
        assert_eq!(invalidation_channel("idweb"), "idweb:invalidate");
        assert_ne!(ack_channel("idweb", "@abc"), ack_channel("idweb", "@abd"));
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
    }
}
