//! [`L1Backend`] for [`RedisStore`]: the in-process cache of `idweb-l1`
//! over Redis pub/sub. Invalidations and heartbeats go on
//! `PREFIX:invalidate`, acknowledgements on `PREFIX:invalidate:ack:ORIGIN`;
//! each cache listens on a RESP3 connection of its own.

use std::sync::Arc;

use async_trait::async_trait;
use idweb::{
    Clock, PartitionKey, PartitionWrite, Session, SessionId, SignOutOutcome, SignOutRequest, Store,
    StoreError, StoredPartition, Tombstone,
};
use idweb_l1::{BusConnection, BusSink, L1Backend};
use redis::aio::MultiplexedConnection;
use redis::{ConnectionInfo, PushInfo, PushKind, Value};

use crate::conn::{CONNECT_TIMEOUT, RESPONSE_TIMEOUT, subscribed_connection};
use crate::error::{Error, redis_error, unavailable};
use crate::store::RedisStore;

/// The in-process cache in front of a [`RedisStore`], kept coherent by
/// pub/sub (see the [crate documentation](crate#the-in-process-cache)).
pub type CachingStore = idweb_l1::CachingStore<RedisStore>;

/// The channel on which instance `origin` hears acknowledgements.
fn ack_channel(invalidations: &str, origin: &str) -> String {
    format!("{invalidations}:ack:{origin}")
}

/// A listening RESP3 connection, also used to publish heartbeats and
/// acknowledgements.
struct Listening {
    conn: MultiplexedConnection,
    channel: String,
}

#[async_trait]
impl BusConnection for Listening {
    async fn publish(&self, message: &str) -> Result<(), StoreError> {
        publish_on(self.conn.clone(), &self.channel, message).await
    }

    async fn acknowledge(&self, to: &str, message: &str) -> Result<(), StoreError> {
        publish_on(self.conn.clone(), &ack_channel(&self.channel, to), message).await
    }
}

async fn publish_on(
    mut conn: MultiplexedConnection,
    channel: &str,
    message: &str,
) -> Result<(), StoreError> {
    let mut publish = redis::cmd("PUBLISH");
    publish.arg(channel).arg(message);
    match tokio::time::timeout(RESPONSE_TIMEOUT, publish.query_async::<Value>(&mut conn)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(redis_error(e)),
        Err(_) => Err(unavailable(Error::Timeout(RESPONSE_TIMEOUT))),
    }
}

/// Opens a RESP3 connection to `node` whose pushes feed `sink`, subscribed
/// to `channel` and to `origin`'s acknowledgement channel.
async fn subscribe(
    node: ConnectionInfo,
    channel: &str,
    origin: &str,
    sink: BusSink,
) -> Result<MultiplexedConnection, redis::RedisError> {
    let wanted = channel.as_bytes().to_vec();
    let acks = ack_channel(channel, origin);
    let acks_wanted = acks.as_bytes().to_vec();
    let on_push = move |push: PushInfo| -> Result<(), std::convert::Infallible> {
        match push.kind {
            PushKind::Message => {
                if let [Value::BulkString(ch), Value::BulkString(payload)] = push.data.as_slice() {
                    let text = String::from_utf8_lossy(payload);
                    if *ch == wanted {
                        sink.message(&text);
                    } else if *ch == acks_wanted {
                        sink.acknowledgement(&text);
                    }
                }
            }
            PushKind::Disconnection | PushKind::Unsubscribe => sink.lost(),
            _ => {}
        }
        Ok(())
    };
    subscribed_connection(node, &[channel, acks.as_str()], on_push).await
}

#[async_trait]
impl L1Backend for RedisStore {
    fn clock(&self) -> Arc<dyn Clock> {
        RedisStore::clock(self).clone()
    }

    async fn read_partition(
        &self,
        key: &PartitionKey,
    ) -> Result<Option<(StoredPartition, Option<i64>)>, StoreError> {
        RedisStore::read_partition(self, key).await
    }

    async fn put_session_announced(
        &self,
        session: &Session,
        message: &str,
    ) -> Result<(), StoreError> {
        let r = self.put_session(session).await?;
        RedisStore::publish(self, message).await?;
        Ok(r)
    }

    async fn remove_session_announced(
        &self,
        id: &SessionId,
        message: &str,
    ) -> Result<Option<Session>, StoreError> {
        let r = self.remove_session(id).await?;
        RedisStore::publish(self, message).await?;
        Ok(r)
    }

    async fn write_partition_announced(
        &self,
        key: &PartitionKey,
        write: PartitionWrite,
        message: &str,
    ) -> Result<u64, StoreError> {
        let r = self.write_partition(key, write).await?;
        RedisStore::publish(self, message).await?;
        Ok(r)
    }

    async fn remove_partition_announced(
        &self,
        key: &PartitionKey,
        message: &str,
    ) -> Result<bool, StoreError> {
        let r = self.remove_partition(key).await?;
        RedisStore::publish(self, message).await?;
        Ok(r)
    }

    async fn put_tombstone_announced(
        &self,
        tombstone: &Tombstone,
        message: &str,
    ) -> Result<(), StoreError> {
        self.put_tombstone(tombstone).await?;
        RedisStore::publish(self, message).await
    }

    /// Standalone: the one sign-out script, which publishes the
    /// announcement itself (no round trip of its own). A cluster: `None`.
    async fn sign_out_announced(
        &self,
        request: &SignOutRequest,
        origin: &str,
        first_word: &str,
        words: &mut Vec<String>,
    ) -> Option<Result<SignOutOutcome, StoreError>> {
        if self.is_cluster() {
            return None;
        }
        Some(
            self.sign_out_single(request, Some(origin), Some(first_word), words)
                .await,
        )
    }

    async fn publish(&self, message: &str) -> Result<(), StoreError> {
        RedisStore::publish(self, message).await
    }

    /// Subscribes on the first node (of a cluster's seeds) that answers.
    async fn listen(
        &self,
        origin: &str,
        sink: BusSink,
    ) -> Result<Arc<dyn BusConnection>, StoreError> {
        let channel = self.keys().channel().to_string();
        let mut last = unavailable(Error::NoNode);
        for node in self.subscribe_to() {
            let attempt = tokio::time::timeout(
                CONNECT_TIMEOUT + RESPONSE_TIMEOUT,
                subscribe(node.clone(), &channel, origin, sink.clone()),
            )
            .await;
            match attempt {
                Ok(Ok(conn)) => return Ok(Arc::new(Listening { conn, channel })),
                Ok(Err(e)) => last = redis_error(e),
                Err(_) => last = unavailable(Error::Timeout(CONNECT_TIMEOUT + RESPONSE_TIMEOUT)),
            }
        }
        Err(last)
    }
}
