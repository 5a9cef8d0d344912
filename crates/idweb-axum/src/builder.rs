//! [`IdWebBuilder`]: settings → store → relying party → [`IdWeb`], in one call.

use std::sync::Arc;
use std::time::Duration;

use idweb::{
    Clock, ConfigError, MeteredStore, RelyingParty, RelyingPartyBuilder, Settings, SignOutBus,
    SignOutListener, StartError, Store, StoreUrl, SystemClock,
};
use idweb_stores::OpenStoreError;

use crate::IdWeb;

/// Why [`IdWeb::from_env`] or [`IdWebBuilder::build`] could not start the
/// app. Each variant keeps its cause as the [source](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The settings are missing or invalid (the source names the setting).
    #[error("invalid idweb settings")]
    Settings(#[from] ConfigError),
    /// The store the settings name (`IDWEB_STORE`) could not be opened.
    #[error("cannot open the store named by IDWEB_STORE")]
    Store(#[from] OpenStoreError),
    /// The relying party could not start (e.g. the provider's discovery
    /// document could not be loaded).
    #[error("cannot start the relying party")]
    Start(#[from] StartError),
}

/// Builds an [`IdWeb`] from settings: opens the store they name (unless one
/// is given), discovers the provider. Made by [`IdWeb::builder`]; the
/// `with_*` methods are those of [`RelyingPartyBuilder`], with the same
/// defaults.
#[derive(Debug)]
#[must_use = "call .build().await to start"]
pub struct IdWebBuilder {
    store_url: StoreUrl,
    store: Option<Arc<dyn Store>>,
    clock: Option<Arc<dyn Clock>>,
    bus: Option<Arc<dyn SignOutBus>>,
    rp: RelyingPartyBuilder,
}

impl IdWebBuilder {
    pub(crate) fn new(settings: Settings) -> Self {
        Self {
            store_url: settings.store.clone(),
            store: None,
            clock: None,
            bus: None,
            rp: RelyingParty::builder(settings),
        }
    }

    /// The store for sessions and tokens. Default: the store the settings
    /// name (`IDWEB_STORE`, default `memory`), opened by
    /// [`idweb_stores::open`] at [`build`](Self::build) and wrapped in a
    /// [`MeteredStore`] (latency histograms by operation). A store given
    /// here is used as it is: wrap it in a [`MeteredStore`] to time it.
    pub fn with_store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// The HTTP client for calls to the provider. Default: a client that
    /// follows no redirects, with 5 s connect and 15 s total timeouts.
    pub fn with_http_client(mut self, http: reqwest::Client) -> Self {
        self.rp = self.rp.with_http_client(http);
        self
    }

    /// The clock, for the relying party and the store it opens. Default:
    /// the system clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.rp = self.rp.with_clock(clock.clone());
        self.clock = Some(clock);
        self
    }

    /// Tolerated clock difference with the provider. Default 5 minutes.
    pub fn with_clock_skew(mut self, skew: Duration) -> Self {
        self.rp = self.rp.with_clock_skew(skew);
        self
    }

    /// Least time between two JWKS fetches caused by unknown key ids.
    /// Default 30 seconds.
    pub fn with_min_jwks_refetch_interval(mut self, interval: Duration) -> Self {
        self.rp = self.rp.with_min_jwks_refetch_interval(interval);
        self
    }

    /// Adds a sign-out listener: called once per sign-out of a session of
    /// this app — local, all sessions, RP-initiated, back-channel,
    /// front-channel, operator — after the eviction is stored, on this
    /// instance and (through the store's bus) on every other instance. It
    /// runs in its own task, bounded by
    /// [`with_sign_out_listener_timeout`](Self::with_sign_out_listener_timeout);
    /// a panic or a timeout is logged and counted, and changes no answer.
    ///
    /// ```no_run
    /// # async fn run(settings: idweb::Settings) -> Result<(), idweb_axum::BuildError> {
    /// let idweb = idweb_axum::IdWeb::builder(settings)
    ///     .on_sign_out(|event: idweb::SignOutEvent| async move {
    ///         tracing::info!(path = event.path.as_str(), sessions = event.sessions.len(), "signed out");
    ///     })
    ///     .build()
    ///     .await?;
    /// # let _ = idweb; Ok(())
    /// # }
    /// ```
    pub fn on_sign_out(mut self, listener: impl SignOutListener) -> Self {
        self.rp = self.rp.on_sign_out(listener);
        self
    }

    /// How long one sign-out's listeners may run before the sign-out answers
    /// anyway (they are cancelled then). Default 1 s.
    pub fn with_sign_out_listener_timeout(mut self, timeout: Duration) -> Self {
        self.rp = self.rp.with_sign_out_listener_timeout(timeout);
        self
    }

    /// The name of this instance in audit events. Default: `$HOSTNAME`
    /// (the pod's name under Kubernetes) when set to a plain host name,
    /// else a random `idweb-…` name.
    pub fn with_instance_id(mut self, id: impl Into<String>) -> Self {
        self.rp = self.rp.with_instance_id(id);
        self
    }

    /// Writes the user's `sub` and `sid` in audit events as they are,
    /// rather than as keyed fingerprints. Default `false`.
    pub fn with_audit_identifiers_in_clear(mut self, clear: bool) -> Self {
        self.rp = self.rp.with_audit_identifiers_in_clear(clear);
        self
    }

    /// The bus over which the instances hear each other's sign-outs.
    /// Default: the bus of the store the settings name, opened by
    /// [`idweb_stores::open_sign_out_bus`] (Redis: its `PREFIX:signout`
    /// channel; memory and SQLite: none) — none when the store is given
    /// with [`with_store`](Self::with_store): pass its bus here then.
    pub fn with_sign_out_bus(mut self, bus: Arc<dyn SignOutBus>) -> Self {
        self.bus = Some(bus);
        self
    }

    /// Opens the store (unless one was given), fetches the provider's
    /// metadata and keys, builds the [`IdWeb`], and starts its purge task
    /// (every [`Settings::purge_interval`], `IDWEB_PURGE_INTERVAL`; see
    /// [`IdWeb::spawn_purge_task`]).
    ///
    /// # Errors
    /// [`BuildError::Store`] when the store or its sign-out bus cannot be
    /// opened (checked first); [`BuildError::Start`] when the relying party cannot start.
    pub async fn build(self) -> Result<IdWeb, BuildError> {
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        // The bus comes with the store the settings name; a store given
        // explicitly comes with the bus given (if any).
        let (store, bus) = match self.store {
            Some(store) => (store, self.bus),
            None => {
                let opened = idweb_stores::open(&self.store_url, clock.clone()).await?;
                // Timed: `idweb_store_operation_duration_seconds{backend=<scheme>}`.
                let backend = idweb::store_backend_label(self.store_url.scheme());
                let store: Arc<dyn Store> = Arc::new(MeteredStore::new(opened, backend));
                let bus = match self.bus {
                    Some(bus) => Some(bus),
                    None => idweb_stores::open_sign_out_bus(&self.store_url, clock).await?,
                };
                (store, bus)
            }
        };
        let mut rp = self.rp.with_store(store);
        if let Some(bus) = bus {
            rp = rp.with_sign_out_bus(bus);
        }
        let idweb = IdWeb::new(rp.build().await?);
        let every = idweb.relying_party().settings().purge_interval;
        if !every.is_zero() {
            drop(idweb.spawn_purge_task(every));
        }
        Ok(idweb)
    }
}
