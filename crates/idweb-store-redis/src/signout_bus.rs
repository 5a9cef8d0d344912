//! [`RedisSignOutBus`]: sign-out events between the instances of an app, on
//! a pub/sub channel next to the L1 invalidation channel.

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use idweb::{SignOutBus, SignOutEvent, SignOutReceiver, StoreError};
use idweb_l1::bus::{BusListener, BusTransport};
use redis::aio::MultiplexedConnection;
use redis::{ConnectionInfo, PushInfo, PushKind, Value};

use crate::conn::{CONNECT_TIMEOUT, OPEN_TIMEOUT, RESPONSE_TIMEOUT, subscribed_connection};
use crate::error::{Error, unavailable};
use crate::store::RedisStore;

/// The [`SignOutBus`] of a Redis store: events are published on
/// `PREFIX:signout` and heard on a RESP3 subscription of this bus's own
/// (resubscribed after any loss). Messages are `ORIGIN\nJSON`; a bus skips
/// its own. See the [crate documentation](crate#sign-out-events).
///
/// Dropping the bus stops its subscriber task.
pub struct RedisSignOutBus {
    redis: RedisStore,
    shared: Arc<BusListener>,
    subscriber: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for RedisSignOutBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSignOutBus")
            .field("channel", &self.redis.keys().sign_out_channel())
            .field("subscribed", &self.is_subscribed())
            .finish()
    }
}

impl Drop for RedisSignOutBus {
    fn drop(&mut self) {
        self.subscriber.abort();
    }
}

impl RedisSignOutBus {
    /// A bus on `redis`'s prefix and server (or cluster). Returns once the
    /// subscription is live, so that events published from then on are
    /// heard.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] outside a Tokio runtime, or when the
    /// subscription is not live within a few seconds.
    pub async fn new(redis: RedisStore) -> Result<Self, StoreError> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| unavailable(Error::NoRuntime))?;
        let shared = BusListener::new();
        let subscriber = runtime.spawn(shared.clone().run(
            Subscribing {
                channel: redis.keys().sign_out_channel().to_string(),
                nodes: redis.subscribe_to().to_vec(),
            },
            redis.keys().sign_out_channel().to_string(),
        ));
        let bus = Self {
            redis,
            shared,
            subscriber,
        };
        if bus.wait_until_subscribed(OPEN_TIMEOUT).await {
            Ok(bus)
        } else {
            Err(unavailable(Error::Timeout(OPEN_TIMEOUT)))
        }
    }

    /// The channel: `PREFIX:signout`.
    pub fn channel(&self) -> String {
        self.redis.keys().sign_out_channel().to_string()
    }

    /// Waits until the subscription is live or `timeout`; returns whether it is.
    pub async fn wait_until_subscribed(&self, timeout: Duration) -> bool {
        self.shared.wait_until_live(timeout).await
    }
}

#[async_trait]
impl SignOutBus for RedisSignOutBus {
    async fn publish(&self, event: &SignOutEvent) -> Result<(), StoreError> {
        self.redis
            .publish_sign_out(&self.shared.message_of(event)?)
            .await
    }

    fn subscribe(&self) -> SignOutReceiver {
        self.shared.subscribe()
    }

    fn is_subscribed(&self) -> bool {
        self.shared.is_live()
    }
}

/// The bus's subscription: a RESP3 connection of its own to one node
/// (the next one after each failed attempt).
struct Subscribing {
    channel: String,
    nodes: Vec<ConnectionInfo>,
}

#[async_trait]
impl BusTransport for Subscribing {
    type Connection = MultiplexedConnection;

    async fn listen(
        &self,
        listener: Weak<BusListener>,
        generation: u64,
        failures: usize,
    ) -> Result<MultiplexedConnection, String> {
        let node = self
            .nodes
            .get(failures % self.nodes.len().max(1))
            .cloned()
            .ok_or("no node to subscribe to")?;
        let wanted = self.channel.as_bytes().to_vec();
        let on_push = move |push: PushInfo| -> Result<(), std::convert::Infallible> {
            let Some(listener) = listener.upgrade() else {
                return Ok(());
            };
            match push.kind {
                PushKind::Message => {
                    if let [Value::BulkString(ch), Value::BulkString(payload)] =
                        push.data.as_slice()
                        && *ch == wanted
                    {
                        listener.message(payload);
                    }
                }
                PushKind::Disconnection | PushKind::Unsubscribe => {
                    listener.connection_lost(generation);
                }
                _ => {}
            }
            Ok(())
        };
        match tokio::time::timeout(
            CONNECT_TIMEOUT + RESPONSE_TIMEOUT,
            subscribed_connection(node, &[&self.channel], on_push),
        )
        .await
        {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(Error::Timeout(CONNECT_TIMEOUT + RESPONSE_TIMEOUT).to_string()),
        }
    }

    async fn ping(&self, conn: &mut MultiplexedConnection) -> bool {
        matches!(
            tokio::time::timeout(
                RESPONSE_TIMEOUT,
                redis::cmd("PING").query_async::<Value>(conn),
            )
            .await,
            Ok(Ok(_))
        )
    }
}
