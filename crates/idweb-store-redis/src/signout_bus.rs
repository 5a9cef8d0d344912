//! [`RedisSignOutBus`]: sign-out events between the instances of an app, on
//! a pub/sub channel next to the L1 invalidation channel.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use idweb::{LockToken, SignOutBus, SignOutEvent, SignOutReceiver, StoreError, bus_channel};
use redis::aio::MultiplexedConnection;
use redis::{ConnectionInfo, PushInfo, PushKind, Value};
use tokio::sync::{Notify, broadcast};

use crate::conn::{CONNECT_TIMEOUT, OPEN_TIMEOUT, RESPONSE_TIMEOUT, subscribed_connection};
use crate::error::{Error, unavailable};
use crate::store::RedisStore;

/// How often the subscription's connection is pinged.
const PING_EVERY: Duration = Duration::from_secs(1);

/// Waits between subscription attempts.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Largest message read from the channel; larger ones are not events.
const MAX_MESSAGE: usize = 1024 * 1024;

/// The [`SignOutBus`] of a Redis store: events are published on
/// `PREFIX:signout` and heard on a RESP3 subscription of this bus's own
/// (resubscribed after any loss). Messages are `ORIGIN\nJSON`; a bus skips
/// its own. See the [crate documentation](crate#sign-out-events).
///
/// Dropping the bus stops its subscriber task.
pub struct RedisSignOutBus {
    redis: RedisStore,
    shared: Arc<Shared>,
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

struct Shared {
    /// This bus's word at the head of each message it sends.
    origin: String,
    tx: broadcast::Sender<SignOutEvent>,
    live: AtomicBool,
    /// The subscription connection's number: a connection's late events do
    /// not touch its successor.
    generation: AtomicU64,
    lost: Notify,
}

impl Shared {
    fn connection_lost(&self, generation: u64) {
        if self.generation.load(Ordering::SeqCst) == generation {
            self.live.store(false, Ordering::SeqCst);
            self.lost.notify_one();
        }
    }

    /// A message from the channel: an event of another instance, or
    /// nothing (this bus's own, or not an event).
    fn heard(&self, payload: &[u8]) {
        if payload.len() > MAX_MESSAGE {
            return;
        }
        let Some(split) = payload.iter().position(|b| *b == b'\n') else {
            return;
        };
        let (origin, json) = (&payload[..split], &payload[split + 1..]);
        if origin == self.origin.as_bytes() {
            return;
        }
        match SignOutEvent::from_json(json) {
            // No receiver (no listener task yet): nothing to deliver to.
            Ok(event) => drop(self.tx.send(event)),
            Err(e) => tracing::warn!(error = %e, "ignored a message on the sign-out channel"),
        }
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
        let shared = Arc::new(Shared {
            origin: LockToken::generate().as_str().to_string(),
            tx: bus_channel(),
            live: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            lost: Notify::new(),
        });
        let subscriber = runtime.spawn(run_subscriber(shared.clone(), redis.clone()));
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
        self.redis.keys().sign_out_channel()
    }

    /// Waits until the subscription is live or `timeout`; returns whether it is.
    pub async fn wait_until_subscribed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.is_subscribed() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.is_subscribed()
    }
}

#[async_trait]
impl SignOutBus for RedisSignOutBus {
    async fn publish(&self, event: &SignOutEvent) -> Result<(), StoreError> {
        let json = event.to_json().map_err(unavailable)?;
        self.redis
            .publish_sign_out(&format!("{}\n{json}", self.shared.origin))
            .await
    }

    fn subscribe(&self) -> SignOutReceiver {
        SignOutReceiver::new(self.shared.tx.subscribe())
    }

    fn is_subscribed(&self) -> bool {
        self.shared.live.load(Ordering::SeqCst)
    }
}

/// Opens a RESP3 connection to `node` whose pushes feed `shared`, and
/// subscribes to `channel`.
async fn subscribe(
    shared: &Arc<Shared>,
    node: ConnectionInfo,
    channel: &str,
    generation: u64,
) -> Result<MultiplexedConnection, redis::RedisError> {
    let weak: Weak<Shared> = Arc::downgrade(shared);
    let wanted = channel.as_bytes().to_vec();
    let on_push = move |push: PushInfo| -> Result<(), std::convert::Infallible> {
        let Some(shared) = weak.upgrade() else {
            return Ok(());
        };
        match push.kind {
            PushKind::Message => {
                if let [Value::BulkString(ch), Value::BulkString(payload)] = push.data.as_slice()
                    && *ch == wanted
                {
                    shared.heard(payload);
                }
            }
            PushKind::Disconnection | PushKind::Unsubscribe => {
                shared.connection_lost(generation);
            }
            _ => {}
        }
        Ok(())
    };
    subscribed_connection(node, &[channel], on_push).await
}

/// The subscriber task: subscribe, watch the connection (pings, loss
/// notices), and subscribe again after any loss.
async fn run_subscriber(shared: Arc<Shared>, redis: RedisStore) {
    let channel = redis.keys().sign_out_channel();
    let nodes = redis.subscribe_to().to_vec();
    let mut next = 0usize;
    let mut backoff = MIN_BACKOFF;
    loop {
        shared.live.store(false, Ordering::SeqCst);
        let generation = shared.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let Some(node) = nodes.get(next % nodes.len().max(1)).cloned() else {
            return;
        };
        let attempt = tokio::time::timeout(
            CONNECT_TIMEOUT + RESPONSE_TIMEOUT,
            subscribe(&shared, node, &channel, generation),
        )
        .await;
        match attempt {
            Ok(Ok(mut conn)) => {
                shared.live.store(true, Ordering::SeqCst);
                backoff = MIN_BACKOFF;
                tracing::debug!(channel, "sign-out event subscription live");
                loop {
                    tokio::select! {
                        () = shared.lost.notified() => {
                            if shared.generation.load(Ordering::SeqCst) == generation
                                && !shared.live.load(Ordering::SeqCst)
                            {
                                break;
                            }
                        }
                        () = tokio::time::sleep(PING_EVERY) => {
                            let ping = tokio::time::timeout(
                                RESPONSE_TIMEOUT,
                                redis::cmd("PING").query_async::<Value>(&mut conn),
                            )
                            .await;
                            if !matches!(ping, Ok(Ok(_))) {
                                break;
                            }
                        }
                    }
                }
                shared.live.store(false, Ordering::SeqCst);
                tracing::warn!(
                    channel,
                    "sign-out event subscription lost; events published meanwhile are missed"
                );
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cannot subscribe to sign-out events");
                next += 1;
            }
            Err(_) => next += 1,
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
