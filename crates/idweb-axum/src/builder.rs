//! [`IdWebBuilder`]: settings → store → relying party → [`IdWeb`], in one call.

use std::sync::Arc;
use std::time::Duration;

use idweb::{
    Clock, ConfigError, RelyingParty, RelyingPartyBuilder, Settings, StartError, Store, StoreUrl,
    SystemClock,
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
    rp: RelyingPartyBuilder,
}

impl IdWebBuilder {
    pub(crate) fn new(settings: Settings) -> Self {
        Self {
            store_url: settings.store.clone(),
            store: None,
            clock: None,
            rp: RelyingParty::builder(settings),
        }
    }

    /// The store for sessions and tokens. Default: the store the settings
    /// name (`IDWEB_STORE`, default `memory`), opened by
    /// [`idweb_stores::open`] at [`build`](Self::build).
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

    /// Opens the store (unless one was given), fetches the provider's
    /// metadata and keys, builds the [`IdWeb`], and starts its purge task
    /// (every [`Settings::purge_interval`], `IDWEB_PURGE_INTERVAL`; see
    /// [`IdWeb::spawn_purge_task`]).
    ///
    /// # Errors
    /// [`BuildError::Store`] when the store cannot be opened (checked
    /// first); [`BuildError::Start`] when the relying party cannot start.
    pub async fn build(self) -> Result<IdWeb, BuildError> {
        let store = match self.store {
            Some(store) => store,
            None => {
                let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
                idweb_stores::open(&self.store_url, clock).await?
            }
        };
        let rp = self.rp.with_store(store).build().await?;
        let idweb = IdWeb::new(rp);
        let every = idweb.relying_party().settings().purge_interval;
        if !every.is_zero() {
            drop(idweb.spawn_purge_task(every));
        }
        Ok(idweb)
    }
}
