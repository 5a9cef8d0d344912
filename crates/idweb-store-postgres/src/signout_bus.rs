//! [`PostgresSignOutBus`]: sign-out events between the instances of an app,
//! as notifications on `SCHEMA:signout`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use idweb::{LockToken, SignOutBus, SignOutEvent, SignOutReceiver, StoreError, bus_channel};
use tokio::sync::{Notify, broadcast};

use crate::error::{PostgresError, unavailable};
use crate::l1::{MAX_PAYLOAD, listening_connection, sign_out_channel};
use crate::{PostgresStore, sql};

/// How often the listening connection is pinged.
const PING_EVERY: Duration = Duration::from_secs(1);

/// How long a ping, or listening, may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(4);

/// How long [`PostgresSignOutBus::new`] waits for its connection to listen.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// Waits between attempts to listen.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The [`SignOutBus`] of a PostgreSQL store: an event is a `NOTIFY` on
/// `SCHEMA:signout` with the payload `ORIGIN\nJSON`, heard on a listening
/// connection of the bus's own (outside the pool, listening again after
/// any loss); a bus skips its own events. The JSON names sessions by the
/// SHA-256 of their ids, never by the ids.
///
/// PostgreSQL refuses a payload of 8000 bytes or more: an event that large
/// (a sign-out of about a hundred sessions of one user at once) is not
/// published — [`publish`](SignOutBus::publish) fails, which the relying
/// party counts as `publish_failed` — and the other instances do not hear
/// it. The sign-out itself is stored either way.
///
/// Dropping the bus stops its listener task.
pub struct PostgresSignOutBus {
    store: PostgresStore,
    shared: Arc<Shared>,
    listener: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for PostgresSignOutBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSignOutBus")
            .field("channel", &self.channel())
            .field("subscribed", &self.is_subscribed())
            .finish()
    }
}

impl Drop for PostgresSignOutBus {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

struct Shared {
    /// This bus's word at the head of each message it sends.
    origin: String,
    tx: broadcast::Sender<SignOutEvent>,
    live: AtomicBool,
    /// The listening connection's number: a connection's late events do
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

    /// A notification: an event of another instance, or nothing (this
    /// bus's own, or not an event).
    fn heard(&self, payload: &str) {
        let Some((origin, json)) = payload.split_once('\n') else {
            return;
        };
        if origin == self.origin {
            return;
        }
        match SignOutEvent::from_json(json.as_bytes()) {
            // No receiver (no listener task yet): nothing to deliver to.
            Ok(event) => drop(self.tx.send(event)),
            Err(e) => tracing::warn!(error = %e, "ignored a notification on the sign-out channel"),
        }
    }
}

impl PostgresSignOutBus {
    /// A bus on `store`'s database and schema. Returns once its connection
    /// listens, so that events published from then on are heard.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] outside a Tokio runtime, or when the
    /// connection does not listen within a few seconds.
    pub async fn new(store: PostgresStore) -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            StoreError::Unavailable("the sign-out bus needs a Tokio runtime".into())
        })?;
        let shared = Arc::new(Shared {
            origin: LockToken::generate().as_str().to_string(),
            tx: bus_channel(),
            live: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            lost: Notify::new(),
        });
        let listener = runtime.spawn(run_listener(shared.clone(), store.clone()));
        let bus = Self {
            store,
            shared,
            listener,
        };
        if bus.wait_until_subscribed(OPEN_TIMEOUT).await {
            Ok(bus)
        } else {
            Err(unavailable(PostgresError::Timeout(OPEN_TIMEOUT)))
        }
    }

    /// The channel: `SCHEMA:signout`.
    pub fn channel(&self) -> String {
        sign_out_channel(self.store.schema())
    }

    /// Waits until the connection listens or `timeout`; returns whether it does.
    pub async fn wait_until_subscribed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.is_subscribed() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.is_subscribed()
    }
}

#[async_trait]
impl SignOutBus for PostgresSignOutBus {
    async fn publish(&self, event: &SignOutEvent) -> Result<(), StoreError> {
        let json = event
            .to_json()
            .map_err(|e| StoreError::Unavailable(e.into()))?;
        let payload = format!("{}\n{json}", self.shared.origin);
        if payload.len() > MAX_PAYLOAD {
            return Err(StoreError::Unavailable(
                format!(
                    "a sign-out event of {} bytes does not fit a notification (at most {MAX_PAYLOAD})",
                    payload.len()
                )
                .into(),
            ));
        }
        let channel = self.channel();
        self.store
            .query(sql::NOTIFY, &[&channel, &payload])
            .await
            .map(drop)
    }

    fn subscribe(&self) -> SignOutReceiver {
        SignOutReceiver::new(self.shared.tx.subscribe())
    }

    fn is_subscribed(&self) -> bool {
        self.shared.live.load(Ordering::SeqCst)
    }
}

/// The listener task: listen, watch the connection (pings, loss notices),
/// and listen again after any loss.
async fn run_listener(shared: Arc<Shared>, store: PostgresStore) {
    let channel = sign_out_channel(store.schema());
    let mut backoff = MIN_BACKOFF;
    loop {
        shared.live.store(false, Ordering::SeqCst);
        let generation = shared.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let heard = Arc::downgrade(&shared);
        let gone = Arc::downgrade(&shared);
        let deliver = move |_: &str, payload: &str| {
            if let Some(shared) = heard.upgrade() {
                shared.heard(payload);
            }
        };
        let lost = move || {
            if let Some(shared) = gone.upgrade() {
                shared.connection_lost(generation);
            }
        };
        let attempt = tokio::time::timeout(
            RESPONSE_TIMEOUT,
            listening_connection(&store, &[&channel], deliver, lost),
        )
        .await;
        match attempt {
            Ok(Ok((client, _))) => {
                shared.live.store(true, Ordering::SeqCst);
                backoff = MIN_BACKOFF;
                tracing::debug!(channel, "sign-out event listener live");
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
                                client.simple_query(""),
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
                    "sign-out event listener lost; events published meanwhile are missed"
                );
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot listen for sign-out events"),
            Err(_) => tracing::debug!("listening for sign-out events timed out"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
