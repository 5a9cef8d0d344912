//! What every store's [`SignOutBus`](idweb::SignOutBus) shares: the
//! listener's state (this bus's origin, the broadcast of events heard, the
//! connection's liveness) and the task that keeps a listening connection
//! up — listen, ping, listen again after any loss, with backoff. A backend
//! supplies only its connection ([`BusTransport`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use idweb::{LockToken, SignOutEvent, SignOutReceiver, StoreError, bus_channel};
use tokio::sync::{Notify, broadcast};

/// How often the listening connection is pinged.
const PING_EVERY: Duration = Duration::from_secs(1);

/// Waits between attempts to listen.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Largest message taken for an event; larger ones are ignored.
const MAX_MESSAGE: usize = 1024 * 1024;

/// A backend's listening connection for sign-out events.
#[async_trait]
pub trait BusTransport: Send + Sync + 'static {
    /// The open connection, kept while it answers pings.
    type Connection: Send;

    /// Opens a connection that listens on the bus's channel and hands each
    /// message to [`BusListener::message`], and calls
    /// [`BusListener::connection_lost`] with `generation` when it ends
    /// (holding `listener` weakly). `failures` counts the attempts that
    /// failed since the last live connection (to rotate among nodes).
    /// Bounded in time by the transport itself.
    ///
    /// # Errors
    /// A description of why it could not listen (logged at debug level).
    async fn listen(
        &self,
        listener: Weak<BusListener>,
        generation: u64,
        failures: usize,
    ) -> Result<Self::Connection, String>;

    /// Whether `connection` still answers (bounded in time by the transport).
    async fn ping(&self, connection: &mut Self::Connection) -> bool;
}

/// The state a sign-out bus shares with its listener task.
#[derive(Debug)]
pub struct BusListener {
    /// This bus's word at the head of each message it sends.
    origin: String,
    tx: broadcast::Sender<SignOutEvent>,
    live: AtomicBool,
    /// The listening connection's number: a connection's late notices do
    /// not touch its successor.
    generation: AtomicU64,
    lost: Notify,
}

impl BusListener {
    /// A listener with a fresh random origin, not yet live.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            origin: LockToken::generate().as_str().to_string(),
            tx: bus_channel(),
            live: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            lost: Notify::new(),
        })
    }

    /// The message that carries `event` from this bus: `ORIGIN\nJSON`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the event does not serialize.
    pub fn message_of(&self, event: &SignOutEvent) -> Result<String, StoreError> {
        let json = event
            .to_json()
            .map_err(|e| StoreError::Unavailable(e.into()))?;
        Ok(format!("{}\n{json}", self.origin))
    }

    /// A message heard on the channel: delivered to the subscribers when it
    /// is another bus's event; this bus's own, and anything that is not an
    /// event, are dropped.
    pub fn message(&self, payload: &[u8]) {
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
            // No receiver (no listener yet): nothing to deliver to.
            Ok(event) => drop(self.tx.send(event)),
            Err(e) => tracing::warn!(error = %e, "ignored a message on the sign-out channel"),
        }
    }

    /// The connection of `generation` ended.
    pub fn connection_lost(&self, generation: u64) {
        if self.generation.load(Ordering::SeqCst) == generation {
            self.live.store(false, Ordering::SeqCst);
            self.lost.notify_one();
        }
    }

    /// A receiver of the events heard from now on.
    pub fn subscribe(&self) -> SignOutReceiver {
        SignOutReceiver::new(self.tx.subscribe())
    }

    /// Whether a connection listens now.
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::SeqCst)
    }

    /// Waits until a connection listens or `timeout`; returns whether one does.
    pub async fn wait_until_live(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.is_live() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.is_live()
    }

    /// The listener task: listen through `transport`, ping every second,
    /// and listen again after any loss (backing off up to a second).
    /// `channel` names the channel in log lines. Runs until aborted.
    pub async fn run<T: BusTransport>(self: Arc<Self>, transport: T, channel: String) {
        let mut backoff = MIN_BACKOFF;
        let mut failures = 0usize;
        loop {
            self.live.store(false, Ordering::SeqCst);
            let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
            match transport
                .listen(Arc::downgrade(&self), generation, failures)
                .await
            {
                Ok(mut connection) => {
                    self.live.store(true, Ordering::SeqCst);
                    backoff = MIN_BACKOFF;
                    failures = 0;
                    tracing::debug!(channel, "sign-out event listener live");
                    self.watch(&transport, &mut connection, generation).await;
                    self.live.store(false, Ordering::SeqCst);
                    tracing::warn!(
                        channel,
                        "sign-out event listener lost; events published meanwhile are missed"
                    );
                }
                Err(e) => {
                    tracing::debug!(channel, error = %e, "cannot listen for sign-out events");
                    failures += 1;
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Returns when connection `generation` is lost or stops answering pings.
    async fn watch<T: BusTransport>(
        &self,
        transport: &T,
        connection: &mut T::Connection,
        generation: u64,
    ) {
        loop {
            tokio::select! {
                () = self.lost.notified() => {
                    if self.generation.load(Ordering::SeqCst) == generation && !self.is_live() {
                        return;
                    }
                }
                () = tokio::time::sleep(PING_EVERY) => {
                    if !transport.ping(connection).await {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use idweb::SignOutPath;

    #[tokio::test]
    async fn messages_of_other_buses_are_delivered_and_its_own_are_not() {
        let (a, b) = (BusListener::new(), BusListener::new());
        let mut heard = b.subscribe();
        let event = SignOutEvent::new(SignOutPath::BackChannel, "https://iss", 1);
        let message = a.message_of(&event).expect("json");
        b.message(b"no newline: not an event");
        b.message(b.message_of(&event).expect("json").as_bytes());
        b.message(message.as_bytes());
        let got = tokio::time::timeout(Duration::from_secs(1), heard.recv())
            .await
            .expect("an event")
            .expect("open");
        assert_eq!(got.iss, "https://iss");
        assert!(!got.local, "heard, not done here");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), heard.recv())
                .await
                .is_err(),
            "its own event and the junk were dropped"
        );
        let mut big = message.into_bytes();
        big.resize(MAX_MESSAGE + 1, b' ');
        b.message(&big);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), heard.recv())
                .await
                .is_err()
        );
    }

    #[test]
    fn a_late_loss_notice_does_not_touch_the_next_connection() {
        let l = BusListener::new();
        l.generation.store(2, Ordering::SeqCst);
        l.live.store(true, Ordering::SeqCst);
        l.connection_lost(1);
        assert!(l.is_live());
        l.connection_lost(2);
        assert!(!l.is_live());
    }
}
