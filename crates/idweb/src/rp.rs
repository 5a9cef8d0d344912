//! [`RelyingParty`]: the web app's side of OpenID Connect, without any web framework.

use std::sync::Arc;
use std::time::Duration;

use crate::client::ProviderClient;
use crate::config::{KeySource, Settings};
use crate::crypto::Sealer;
use crate::downstream::{DownstreamApi, DownstreamError, DownstreamRequest, DownstreamResponse};
use crate::events::{DEFAULT_LISTENER_TIMEOUT, SignOutBus, SignOutEvents, SignOutListener};
use crate::http::default_client;
use crate::observe::{SignOutAudit, default_instance_id};
use crate::provider::{Provider, ProviderError};
use crate::secret::Secret;
use crate::session::{Session, SessionId};
use crate::sessions::Sessions;
use crate::signin::{
    CallbackParams, SignIn, SignInConfig, SignInError, SignInOptions, SignInRequest, SignedIn,
};
use crate::signout::{
    BackChannelError, Eviction, FrontChannelError, LocalSignOut, LogoutConfig, LogoutHandler,
    SignOut,
};
use crate::store::{MemoryStore, Store, StoreError};
use crate::time::{Clock, SystemClock};
use crate::token_cache::TokenCache;
use crate::tokens::{AccessToken, TokenAcquirer, TokenError};

/// Why a [`RelyingParty`] could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Discovery failed.
    #[error("cannot load the identity provider's configuration")]
    Provider(#[from] ProviderError),
    /// The settings name a store (`IDWEB_STORE`) other than `memory`, and no
    /// store was passed with [`RelyingPartyBuilder::with_store`]. Starting on
    /// a private in-process store instead would keep sessions apart from the
    /// other instances, and a sign-out on one would not reach the others.
    #[error(
        "IDWEB_STORE names a `{scheme}` store, but none was passed to the relying party: \
         open it with `idweb_stores::open(&settings.store, clock)` and pass it to `with_store`, \
         or start with `idweb_axum::IdWeb::from_env()` (or `IdWeb::builder(settings)`), which opens it"
    )]
    StoreNotOpened {
        /// The scheme of the store the settings name (never the URL, which
        /// may hold a password).
        scheme: String,
    },
}

/// What [`RelyingParty::readiness`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Readiness {
    /// The provider's metadata and keys are loaded.
    pub provider: bool,
    /// The store answered in time (with its own subscription, if it keeps one, live).
    pub store: bool,
    /// Whether the sign-out bus is subscribed; `None` without a bus
    /// (memory and SQLite stores).
    pub subscription: Option<bool>,
}

impl Readiness {
    /// Whether every check passed.
    pub fn is_ready(&self) -> bool {
        self.provider && self.store && self.subscription != Some(false)
    }
}

/// Builds a [`RelyingParty`]. Every setting has a documented, safe default.
pub struct RelyingPartyBuilder {
    settings: Settings,
    store: Option<Arc<dyn Store>>,
    http: Option<reqwest::Client>,
    clock: Option<Arc<dyn Clock>>,
    clock_skew: Duration,
    min_jwks_refetch_interval: Duration,
    sign_out_bus: Option<Arc<dyn SignOutBus>>,
    listeners: Vec<Arc<dyn SignOutListener>>,
    listener_timeout: Duration,
    instance_id: Option<String>,
    audit_identifiers_in_clear: bool,
}

impl std::fmt::Debug for RelyingPartyBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelyingPartyBuilder")
            .field("settings", &self.settings)
            .field("store", &self.store)
            .field("sign_out_bus", &self.sign_out_bus)
            .field("listeners", &self.listeners.len())
            .field("listener_timeout", &self.listener_timeout)
            .finish_non_exhaustive()
    }
}

impl RelyingPartyBuilder {
    /// Where this instance tells the other instances of the app of its
    /// sign-outs, and hears theirs (`idweb_stores::open_sign_out_bus` opens
    /// the one of a shared store). Default: none — the app's listeners hear
    /// only this instance's sign-outs (right for a store private to one
    /// process: memory, SQLite).
    pub fn with_sign_out_bus(mut self, bus: Arc<dyn SignOutBus>) -> Self {
        self.sign_out_bus = Some(bus);
        self
    }

    /// Adds a sign-out listener: called once per sign-out, on every path,
    /// after the eviction is stored (see [`SignOutListener`]). More can be
    /// added later with [`RelyingParty::sign_out_events`]. Default: none.
    pub fn on_sign_out(mut self, listener: impl SignOutListener) -> Self {
        self.listeners.push(Arc::new(listener));
        self
    }

    /// How long the sign-out listeners of one event may run (and its
    /// publication to the other instances may take) before the sign-out
    /// answers anyway; listeners still running then are cancelled.
    /// Default [`DEFAULT_LISTENER_TIMEOUT`] (1 s).
    pub fn with_sign_out_listener_timeout(mut self, timeout: Duration) -> Self {
        self.listener_timeout = timeout;
        self
    }

    /// The name of this instance in audit events. Default: `$HOSTNAME`
    /// (the pod's name under Kubernetes) when set to a plain host name,
    /// else a random `idweb-…` name chosen at build.
    pub fn with_instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = Some(id.into());
        self
    }

    /// Writes the user's `sub` and `sid` in audit events as they are,
    /// rather than as keyed fingerprints ([`SignOutAudit`]). Default
    /// `false`: they identify a person, and audit logs are kept long and
    /// copied far.
    pub fn with_audit_identifiers_in_clear(mut self, clear: bool) -> Self {
        self.audit_identifiers_in_clear = clear;
        self
    }

    /// The store for sessions and tokens: the one `settings.store` names,
    /// opened (e.g. by `idweb_stores::open`). Default: a new [`MemoryStore`]
    /// when `settings.store` is `memory`; for any other store,
    /// [`build`](Self::build) fails with [`StartError::StoreNotOpened`]
    /// rather than use a store other than the one configured.
    pub fn with_store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// The HTTP client for calls to the provider. Default: a client that
    /// follows no redirects, with 5 s connect and 15 s total timeouts.
    pub fn with_http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// The clock. Default: the system clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Tolerated clock difference with the provider. Default 5 minutes.
    pub fn with_clock_skew(mut self, skew: Duration) -> Self {
        self.clock_skew = skew;
        self
    }

    /// Least time between two JWKS fetches caused by unknown key ids. Default 30 seconds.
    pub fn with_min_jwks_refetch_interval(mut self, interval: Duration) -> Self {
        self.min_jwks_refetch_interval = interval;
        self
    }

    /// Fetches the provider's metadata and keys, and builds the relying party.
    ///
    /// # Errors
    /// [`StartError::StoreNotOpened`] (before any network call) when no
    /// store was passed and `settings.store` is not `memory`;
    /// [`StartError::Provider`] when discovery fails.
    pub async fn build(self) -> Result<RelyingParty, StartError> {
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let store = match self.store {
            Some(store) => store,
            None if self.settings.store.is_memory() => {
                Arc::new(MemoryStore::with_clock(clock.clone()))
            }
            None => {
                return Err(StartError::StoreNotOpened {
                    scheme: self.settings.store.scheme().to_string(),
                });
            }
        };
        let http = self.http.unwrap_or_else(default_client);
        let provider = Arc::new(
            Provider::discover(&self.settings.authority, http.clone(), clock.clone())
                .await?
                .with_min_refetch_interval(self.min_jwks_refetch_interval)
                .with_allowed_tenants(self.settings.allowed_tenants.as_ref()),
        );
        let settings = self.settings;
        if settings.cookie_key_source() == KeySource::Generated {
            tracing::warn!(
                "no cookie key configured (IDWEB_COOKIE_KEY): generated a random one for this loopback app; \
                 sessions will not survive a restart"
            );
        }
        if settings.cache_keys_source() == KeySource::Generated {
            tracing::warn!(
                "no cache keys configured (IDWEB_CACHE_KEYS): generated one for this loopback app; \
                 cached tokens will not be readable after a restart"
            );
        }
        let skew = i64::try_from(self.clock_skew.as_secs()).unwrap_or(300);
        let sealer = Arc::new(Sealer::new(&settings.cookie_key_bytes()));
        let keys = settings.cache_keys().clone();
        let cache = TokenCache::new(store.clone(), keys.clone());
        let client = Arc::new(
            ProviderClient::new(
                http.clone(),
                provider.clone(),
                settings.client_id.clone(),
                settings.client_secret.clone(),
                settings.client_auth,
            )
            .with_capabilities(&settings.client_capabilities),
        );
        let sessions = Sessions::new(store.clone(), sealer.clone(), keys, clock.clone());
        let sign_in = SignIn::new(
            SignInConfig {
                client_id: settings.client_id.clone(),
                redirect_uri: settings.redirect_uri(),
                public_url: settings.public_url.clone(),
                scopes: settings.scopes.clone(),
                session_lifetime: i64::try_from(settings.session_lifetime.as_secs())
                    .unwrap_or(43_200),
                skew,
            },
            client.clone(),
            sealer.clone(),
            sessions.clone(),
            cache.clone(),
            clock.clone(),
        );
        let tokens = Arc::new(TokenAcquirer::new(
            client.clone(),
            cache.clone(),
            store.clone(),
            clock.clone(),
            settings.scopes.clone(),
        ));
        let downstream = DownstreamApi::new(settings.downstream.clone(), http, tokens.clone());
        // Tombstones outlive every session they could cover.
        let sign_out = SignOut::new(
            store.clone(),
            clock.clone(),
            settings.session_lifetime + self.clock_skew + Duration::from_secs(3600),
        )
        .with_cache(cache.clone());
        let events = SignOutEvents::new(self.sign_out_bus, self.listener_timeout);
        for l in self.listeners {
            events.listen_arc(l);
        }
        events.start();
        let post_logout_redirect_uri = settings.post_logout_redirect_uri();
        let audit = SignOutAudit::new(
            &settings.cookie_key_bytes(),
            self.instance_id.unwrap_or_else(default_instance_id),
        )
        .with_identifiers_in_clear(self.audit_identifiers_in_clear)
        .with_clock(clock.clone());
        let logout = LogoutHandler::new(
            LogoutConfig {
                logout_tokens: settings.logout_tokens,
                revoke_on_sign_out: settings.revoke_on_sign_out,
                end_session_method: settings.end_session_method,
                post_logout_redirect_uri,
            },
            client,
            cache.clone(),
            sign_out,
            sealer,
            clock.clone(),
            events,
            audit,
        );
        Ok(RelyingParty {
            settings,
            provider,
            store,
            clock,
            cache,
            sessions,
            sign_in,
            tokens,
            downstream,
            logout,
        })
    }
}

/// The web app's side of OpenID Connect, composed of one service per role:
/// [`SignIn`], [`Sessions`], [`TokenAcquirer`], [`DownstreamApi`] and
/// [`LogoutHandler`] (which ends in [`SignOut`]). Framework-free;
/// `idweb-axum` puts it on HTTP routes. The methods below are shorthands for
/// the services' own.
#[derive(Debug)]
pub struct RelyingParty {
    settings: Settings,
    provider: Arc<Provider>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    cache: TokenCache,
    sessions: Sessions,
    sign_in: SignIn,
    tokens: Arc<TokenAcquirer>,
    downstream: DownstreamApi,
    logout: LogoutHandler,
}

impl RelyingParty {
    /// Starts building a relying party from validated settings.
    pub fn builder(settings: Settings) -> RelyingPartyBuilder {
        RelyingPartyBuilder {
            settings,
            store: None,
            http: None,
            clock: None,
            clock_skew: Duration::from_secs(300),
            min_jwks_refetch_interval: Duration::from_secs(30),
            sign_out_bus: None,
            listeners: Vec::new(),
            listener_timeout: DEFAULT_LISTENER_TIMEOUT,
            instance_id: None,
            audit_identifiers_in_clear: false,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The provider (metadata and keys).
    pub fn provider(&self) -> &Provider {
        &self.provider
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The token cache.
    pub fn token_cache(&self) -> &TokenCache {
        &self.cache
    }

    /// The sign-in service.
    pub fn sign_in(&self) -> &SignIn {
        &self.sign_in
    }

    /// The sessions service.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// The token acquisition service.
    pub fn tokens(&self) -> &TokenAcquirer {
        &self.tokens
    }

    /// The downstream API service.
    pub fn downstream(&self) -> &DownstreamApi {
        &self.downstream
    }

    /// The sign-out flows (back-channel, front-channel, local).
    pub fn logout(&self) -> &LogoutHandler {
        &self.logout
    }

    /// The eviction service of this app.
    pub fn sign_out(&self) -> &SignOut {
        self.logout.sign_out()
    }

    /// The app's sign-out listeners ([`SignOutEvents::listen`] adds one)
    /// and the bus to the other instances.
    pub fn sign_out_events(&self) -> &SignOutEvents {
        self.logout.events()
    }

    /// Whether this instance can serve now, for readiness probes: the
    /// provider's metadata is loaded (always, once built), the store
    /// answers within `timeout` ([`Store::check_ready`]), and the sign-out
    /// bus, when the store has one, is subscribed.
    pub async fn readiness(&self, timeout: Duration) -> Readiness {
        let store = matches!(
            tokio::time::timeout(timeout, self.store.check_ready()).await,
            Ok(Ok(()))
        );
        Readiness {
            provider: !self.provider.issuer().is_empty(),
            store,
            subscription: self.sign_out_events().bus().map(|bus| bus.is_subscribed()),
        }
    }

    /// [`SignIn::begin`].
    pub fn begin_sign_in(&self, options: &SignInOptions) -> Result<SignInRequest, SignInError> {
        self.sign_in.begin(options)
    }

    /// [`SignIn::complete`].
    pub async fn complete_sign_in(
        &self,
        pending_cookie: Option<&str>,
        params: &CallbackParams,
    ) -> Result<SignedIn, SignInError> {
        self.sign_in.complete(pending_cookie, params).await
    }

    /// [`Sessions::cookie_value`].
    pub fn session_cookie_value(&self, id: &SessionId) -> Secret {
        self.sessions.cookie_value(id)
    }

    /// [`Sessions::id_from_cookie`].
    pub fn session_id_from_cookie(&self, cookie_value: &str) -> Option<SessionId> {
        self.sessions.id_from_cookie(cookie_value)
    }

    /// [`Sessions::from_cookie`].
    pub async fn session_from_cookie(
        &self,
        cookie_value: &str,
    ) -> Result<Option<Session>, StoreError> {
        self.sessions.from_cookie(cookie_value).await
    }

    /// [`Sessions::get`].
    pub async fn session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        self.sessions.get(id).await
    }

    /// [`TokenAcquirer::token_for_user`].
    pub async fn token_for_user(
        &self,
        session: &Session,
        scopes: &[&str],
    ) -> Result<AccessToken, TokenError> {
        self.tokens.token_for_user(session, scopes).await
    }

    /// [`TokenAcquirer::token_for_app`].
    pub async fn token_for_app(&self, scopes: &[&str]) -> Result<AccessToken, TokenError> {
        self.tokens.token_for_app(scopes).await
    }

    /// [`DownstreamApi::call`].
    pub async fn call_api(
        &self,
        session: &Session,
        api: &str,
        request: DownstreamRequest,
    ) -> Result<DownstreamResponse, DownstreamError> {
        self.downstream.call(session, api, request).await
    }

    /// [`LogoutHandler::back_channel_logout`].
    pub async fn back_channel_logout(
        &self,
        logout_token: &str,
    ) -> Result<Eviction, BackChannelError> {
        self.logout.back_channel_logout(logout_token).await
    }

    /// [`LogoutHandler::front_channel_logout`].
    pub async fn front_channel_logout(
        &self,
        iss: Option<&str>,
        sid: Option<&str>,
    ) -> Result<Eviction, FrontChannelError> {
        self.logout.front_channel_logout(iss, sid).await
    }

    /// [`LogoutHandler::local_sign_out`].
    pub async fn local_sign_out(
        &self,
        session: &Session,
        everywhere: bool,
    ) -> Result<LocalSignOut, StoreError> {
        self.logout.local_sign_out(session, everywhere).await
    }

    /// [`LogoutHandler::app_only_sign_out`].
    pub async fn app_only_sign_out(&self, session: &Session) -> Result<LocalSignOut, StoreError> {
        self.logout.app_only_sign_out(session).await
    }

    /// [`LogoutHandler::complete_sign_out`].
    pub fn complete_sign_out(&self, cookie: Option<&str>, state: Option<&str>) -> bool {
        self.logout.complete_sign_out(cookie, state)
    }
}
