//! [`PostgresSignOutBus`]: sign-out events between the instances of an app,
//! as notifications on `SCHEMA:signout`.

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use idweb::{SignOutBus, SignOutEvent, SignOutReceiver, StoreError};
use idweb_l1::bus::{BusListener, BusTransport};
use tokio_postgres::Client;

use crate::error::{PostgresError, unavailable};
use crate::l1::{MAX_PAYLOAD, listening_connection, sign_out_channel};
use crate::{PostgresStore, sql};

/// How long a ping, or listening, may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(4);

/// How long [`PostgresSignOutBus::new`] waits for its connection to listen.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

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
    shared: Arc<BusListener>,
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
        let shared = BusListener::new();
        let listener = runtime.spawn(shared.clone().run(
            Listening {
                store: store.clone(),
            },
            sign_out_channel(store.schema()),
        ));
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
        self.shared.wait_until_live(timeout).await
    }
}

#[async_trait]
impl SignOutBus for PostgresSignOutBus {
    async fn publish(&self, event: &SignOutEvent) -> Result<(), StoreError> {
        let payload = self.shared.message_of(event)?;
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
        self.shared.subscribe()
    }

    fn is_subscribed(&self) -> bool {
        self.shared.is_live()
    }
}

/// The bus's listening connection: its own, outside the pool.
struct Listening {
    store: PostgresStore,
}

#[async_trait]
impl BusTransport for Listening {
    type Connection = Client;

    async fn listen(
        &self,
        listener: Weak<BusListener>,
        generation: u64,
        _failures: usize,
    ) -> Result<Client, String> {
        let channel = sign_out_channel(self.store.schema());
        let heard = listener.clone();
        let deliver = move |_: &str, payload: &str| {
            if let Some(l) = heard.upgrade() {
                l.message(payload.as_bytes());
            }
        };
        let lost = move || {
            if let Some(l) = listener.upgrade() {
                l.connection_lost(generation);
            }
        };
        match tokio::time::timeout(
            RESPONSE_TIMEOUT,
            listening_connection(&self.store, &[&channel], deliver, lost),
        )
        .await
        {
            Ok(Ok((client, _))) => Ok(client),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(PostgresError::Timeout(RESPONSE_TIMEOUT).to_string()),
        }
    }

    async fn ping(&self, client: &mut Client) -> bool {
        matches!(
            tokio::time::timeout(RESPONSE_TIMEOUT, client.simple_query("")).await,
            Ok(Ok(_))
        )
    }
}
