//! Sign-out events for the app: [`SignOutEvent`] (what was signed out, by
//! which path), [`SignOutListener`] (the app's async hook), [`SignOutEvents`]
//! (the listeners of one instance, run with a time bound and panics caught)
//! and [`SignOutBus`] (how the other instances of the app hear of it).

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::crypto::{hex, sha256};
use crate::session::SessionId;
use crate::store::StoreError;

/// How long the listeners of one event may run, by default.
pub const DEFAULT_LISTENER_TIMEOUT: Duration = Duration::from_secs(1);

/// Events a slow subscriber may fall behind by before it misses some.
const BUS_BUFFER: usize = 1024;

/// The way a sign-out reached the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SignOutPath {
    /// `POST /account/signout?scope=local` (or `POST /account/signout` in
    /// an app whose provider has no end-session endpoint): this session
    /// only, at this app only; the provider's session stays.
    Local,
    /// `POST /account/signout?scope=all`: every session of the user in this app.
    AllSessions,
    /// `POST /account/signout` followed by the provider's end-session
    /// endpoint (RP-initiated logout): this session, then the provider's.
    RpInitiated,
    /// The provider's logout token at `POST /backchannel-logout`.
    BackChannel,
    /// The provider's `GET /signout-oidc?iss=&sid=`.
    FrontChannel,
    /// An operator's eviction (`idweb cache evict`, or
    /// [`LogoutHandler::operator_sign_out`](crate::LogoutHandler::operator_sign_out)).
    Operator,
}

impl SignOutPath {
    /// The path's name in events and logs (`back_channel`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::AllSessions => "all_sessions",
            Self::RpInitiated => "rp_initiated",
            Self::BackChannel => "back_channel",
            Self::FrontChannel => "front_channel",
            Self::Operator => "operator",
        }
    }
}

/// A session removed by a sign-out, named by the SHA-256 of its id: a
/// session id is a bearer credential and never leaves the store, while this
/// digest can travel between instances and be compared with the session an
/// app holds ([`SessionRef::of`], [`SignOutEvent::ended`]).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionRef(String);

impl SessionRef {
    /// The reference of session `id`.
    pub fn of(id: &SessionId) -> Self {
        Self(hex(&sha256(id.secret().as_bytes())))
    }

    /// The lower-case hexadecimal SHA-256 of the session id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SessionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionRef(#{})", self.0.get(..12).unwrap_or(&self.0))
    }
}

/// A sign-out that took effect: delivered to the app's [`SignOutListener`]s
/// once the eviction is stored, on the instance that evicted and on every
/// other instance that shares its store's [`SignOutBus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SignOutEvent {
    /// How the sign-out reached the app.
    pub path: SignOutPath,
    /// The issuer of the signed-out user.
    pub iss: String,
    /// The user's subject, when known (always, except for a back-channel or
    /// operator sign-out by `sid` that removed no session).
    pub sub: Option<String>,
    /// The provider session (`sid`), when the sign-out named one or the
    /// local session had one.
    pub sid: Option<String>,
    /// The sessions removed (possibly none: the provider's sign-out of a
    /// user whose sessions had already ended).
    pub sessions: Vec<SessionRef>,
    /// The token-cache entries removed with those sessions, as the store
    /// counted them (`None` from an instance of an idweb version that did
    /// not send the count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries_removed: Option<u64>,
    /// When the eviction was stored (Unix seconds, the evicting instance's clock).
    pub at: i64,
    /// Whether this instance did the eviction (`false`: heard on the bus).
    #[serde(skip)]
    pub local: bool,
}

impl SignOutEvent {
    /// An event for `path` at `iss`, at `at`, with no subject, `sid` or
    /// session yet (see the `with_*` methods).
    pub fn new(path: SignOutPath, iss: impl Into<String>, at: i64) -> Self {
        Self {
            path,
            iss: iss.into(),
            sub: None,
            sid: None,
            sessions: Vec::new(),
            entries_removed: None,
            at,
            local: true,
        }
    }

    /// With the subject.
    #[must_use]
    pub fn with_sub(mut self, sub: Option<String>) -> Self {
        self.sub = sub;
        self
    }

    /// With the provider session.
    #[must_use]
    pub fn with_sid(mut self, sid: Option<String>) -> Self {
        self.sid = sid;
        self
    }

    /// With the sessions removed.
    #[must_use]
    pub fn with_sessions<'a>(mut self, ids: impl IntoIterator<Item = &'a SessionId>) -> Self {
        self.sessions = ids.into_iter().map(SessionRef::of).collect();
        self
    }

    /// With the number of token-cache entries removed.
    #[must_use]
    pub fn with_entries_removed(mut self, n: u64) -> Self {
        self.entries_removed = Some(n);
        self
    }

    /// Whether session `id` is among those this sign-out removed.
    pub fn ended(&self, id: &SessionId) -> bool {
        let r = SessionRef::of(id);
        self.sessions.contains(&r)
    }

    /// Whether this sign-out concerns user `(iss, sub)`.
    pub fn concerns(&self, iss: &str, sub: &str) -> bool {
        self.iss == iss && self.sub.as_deref() == Some(sub)
    }

    /// The event as published on a bus (JSON; `local` is not sent).
    ///
    /// # Errors
    /// Never in practice (every field serializes); a serde error otherwise.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    /// An event read from a bus: `local` is `false`.
    ///
    /// # Errors
    /// When `json` is not an event.
    pub fn from_json(json: &[u8]) -> Result<Self, serde_json::Error> {
        let mut e: Self = serde_json::from_slice(json)?;
        e.local = false;
        Ok(e)
    }
}

/// The app's hook, called once per [`SignOutEvent`] on each instance.
///
/// It runs in its own task, bounded by the listener timeout
/// ([`DEFAULT_LISTENER_TIMEOUT`] unless set): past it, it is cancelled. A
/// listener that panics or times out is logged and counted
/// ([`SignOutEventStats`]); the sign-out stands and its answer is the same.
/// Async closures `Fn(SignOutEvent) -> impl Future<Output = ()>` are listeners.
#[async_trait]
pub trait SignOutListener: Send + Sync + 'static {
    /// Drops what the app keeps for the sessions or user of `event`.
    async fn on_sign_out(&self, event: SignOutEvent);
}

#[async_trait]
impl<F, Fut> SignOutListener for F
where
    F: Fn(SignOutEvent) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    async fn on_sign_out(&self, event: SignOutEvent) {
        self(event).await;
    }
}

/// Where the instances of one app tell each other of sign-outs: a channel of
/// the shared store (Redis pub/sub). Stores private to one process
/// (memory, SQLite) have none.
///
/// Delivery is at most once per subscribed instance: an instance whose
/// subscription is down (not started yet, disconnected) misses what is
/// published meanwhile. The store is where a sign-out takes effect; the bus
/// only tells apps to drop what *they* keep.
#[async_trait]
pub trait SignOutBus: fmt::Debug + Send + Sync + 'static {
    /// Sends `event` to the other instances.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the bus could not take it.
    async fn publish(&self, event: &SignOutEvent) -> Result<(), StoreError>;

    /// The events other instances publish from now on — never this bus's
    /// own (the evicting instance delivers those itself).
    fn subscribe(&self) -> SignOutReceiver;

    /// Whether the subscription is live now (events published while it is
    /// not are missed).
    fn is_subscribed(&self) -> bool;
}

/// Events heard on a [`SignOutBus`].
#[derive(Debug)]
pub struct SignOutReceiver {
    rx: tokio::sync::broadcast::Receiver<SignOutEvent>,
}

impl SignOutReceiver {
    /// Wraps the receiving end of a bus's broadcast channel.
    pub fn new(rx: tokio::sync::broadcast::Receiver<SignOutEvent>) -> Self {
        Self { rx }
    }

    /// The next event; `None` once the bus is gone. Events missed by
    /// falling behind are logged and skipped.
    pub async fn recv(&mut self) -> Option<SignOutEvent> {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match self.rx.recv().await {
                Ok(e) => return Some(e),
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "sign-out events missed: listeners too slow");
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

/// The sending end of a broadcast channel sized for a bus; each
/// [`SignOutBus::subscribe`] wraps one of its receivers
/// ([`SignOutReceiver::new`]`(sender.subscribe())`).
pub fn bus_channel() -> tokio::sync::broadcast::Sender<SignOutEvent> {
    tokio::sync::broadcast::channel(BUS_BUFFER).0
}

/// Counters of one instance's sign-out events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SignOutEventStats {
    /// Events of evictions done here.
    pub emitted: u64,
    /// Events heard on the bus from other instances.
    pub heard: u64,
    /// Listener calls that returned in time.
    pub delivered: u64,
    /// Listener calls that panicked.
    pub panicked: u64,
    /// Listener calls cancelled at the time bound.
    pub timed_out: u64,
    /// Events that could not be published on the bus.
    pub publish_failed: u64,
}

#[derive(Default)]
struct Counters {
    emitted: AtomicU64,
    heard: AtomicU64,
    delivered: AtomicU64,
    panicked: AtomicU64,
    timed_out: AtomicU64,
    publish_failed: AtomicU64,
}

struct Inner {
    listeners: RwLock<Vec<Arc<dyn SignOutListener>>>,
    bus: Option<Arc<dyn SignOutBus>>,
    timeout: Duration,
    counters: Counters,
    subscriber: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self
            .subscriber
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

/// The sign-out listeners of one instance, and its bus. Cheap to clone.
///
/// [`emit`](Self::emit) runs every listener (each in its own task, all at
/// once) and publishes on the bus, and returns when all are done or the
/// listener timeout has passed, whichever is first: it never fails and never
/// waits longer. Events heard on the bus run the same listeners.
#[derive(Clone)]
pub struct SignOutEvents {
    inner: Arc<Inner>,
}

impl fmt::Debug for SignOutEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignOutEvents")
            .field("listeners", &self.listener_count())
            .field("bus", &self.inner.bus)
            .field("timeout", &self.inner.timeout)
            .field("stats", &self.stats())
            .finish()
    }
}

impl SignOutEvents {
    /// Listeners bounded by `timeout`, publishing on `bus` (if any). Call
    /// [`start`](Self::start) to also hear the other instances.
    pub fn new(bus: Option<Arc<dyn SignOutBus>>, timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                listeners: RwLock::new(Vec::new()),
                bus,
                timeout,
                counters: Counters::default(),
                subscriber: Mutex::new(None),
            }),
        }
    }

    /// Starts delivering the bus's events (other instances' sign-outs) to
    /// the listeners; does nothing without a bus, outside a Tokio runtime,
    /// or when started already. Stops when the last clone is dropped.
    pub fn start(&self) {
        let Some(bus) = &self.inner.bus else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("no async runtime: sign-out events of other instances are not heard");
            return;
        };
        let mut slot = self
            .inner
            .subscriber
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            return;
        }
        let mut rx = bus.subscribe();
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        *slot = Some(runtime.spawn(async move {
            while let Some(event) = rx.recv().await {
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                inner.counters.heard.fetch_add(1, Ordering::Relaxed);
                let events = SignOutEvents { inner };
                events.deliver(event).await;
            }
        }));
    }

    /// Adds a listener (also after start: it hears the next events).
    pub fn listen(&self, listener: impl SignOutListener) {
        self.listen_arc(Arc::new(listener));
    }

    /// Adds a shared listener.
    pub fn listen_arc(&self, listener: Arc<dyn SignOutListener>) {
        self.inner
            .listeners
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(listener);
    }

    /// Listeners registered.
    pub fn listener_count(&self) -> usize {
        self.inner
            .listeners
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// The bus, when the store has one.
    pub fn bus(&self) -> Option<&Arc<dyn SignOutBus>> {
        self.inner.bus.as_ref()
    }

    /// The time bound of one event's listeners (and of its publication).
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Counters since start.
    pub fn stats(&self) -> SignOutEventStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SignOutEventStats {
            emitted: get(&c.emitted),
            heard: get(&c.heard),
            delivered: get(&c.delivered),
            panicked: get(&c.panicked),
            timed_out: get(&c.timed_out),
            publish_failed: get(&c.publish_failed),
        }
    }

    /// Delivers the event of an eviction done here to this instance's
    /// listeners and publishes it on the bus, within the time bound. Call it
    /// only once the eviction is stored.
    pub async fn emit(&self, mut event: SignOutEvent) {
        event.local = true;
        self.inner.counters.emitted.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            path = event.path.as_str(),
            sessions = event.sessions.len(),
            "sign-out event"
        );
        let publish = async {
            let Some(bus) = &self.inner.bus else {
                return;
            };
            let ok = matches!(
                tokio::time::timeout(self.inner.timeout, bus.publish(&event)).await,
                Ok(Ok(()))
            );
            if !ok {
                self.inner
                    .counters
                    .publish_failed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    path = event.path.as_str(),
                    "the sign-out event could not be published to the other instances \
                     (the sign-out itself is stored)"
                );
            }
        };
        tokio::join!(publish, self.deliver(event.clone()));
    }

    /// Runs every listener on `event`, each in its own task, and waits for
    /// them up to the time bound; counts and logs failures.
    async fn deliver(&self, event: SignOutEvent) {
        let listeners: Vec<Arc<dyn SignOutListener>> = self
            .inner
            .listeners
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if listeners.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("no async runtime: sign-out listeners not run");
            return;
        };
        let tasks: Vec<_> = listeners
            .into_iter()
            .map(|l| {
                let e = event.clone();
                runtime.spawn(async move { l.on_sign_out(e).await })
            })
            .collect();
        let deadline = tokio::time::Instant::now() + self.inner.timeout;
        let c = &self.inner.counters;
        for (i, mut task) in tasks.into_iter().enumerate() {
            match tokio::time::timeout_at(deadline, &mut task).await {
                Ok(Ok(())) => {
                    c.delivered.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(e)) if e.is_panic() => {
                    c.panicked.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        listener = i,
                        path = event.path.as_str(),
                        "a sign-out listener panicked (the sign-out stands)"
                    );
                }
                Ok(Err(_)) => {
                    c.timed_out.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    task.abort();
                    c.timed_out.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        listener = i,
                        path = event.path.as_str(),
                        timeout_ms =
                            u64::try_from(self.inner.timeout.as_millis()).unwrap_or(u64::MAX),
                        "a sign-out listener did not finish in time and was cancelled (the sign-out stands)"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
