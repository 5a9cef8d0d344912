//! # idweb-axum
//!
//! Puts [`idweb`] on an axum router: the sign-in routes (Microsoft.Identity.Web's
//! names), the [`AuthenticatedUser`] extractor, and the mapping of idweb's
//! errors to HTTP responses.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use idweb_axum::{AuthenticatedUser, IdWeb};
//!
//! async fn profile(user: AuthenticatedUser) -> String {
//!     format!("Hello, {}", user.name().unwrap_or(user.sub()))
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let idweb = IdWeb::from_env().await?;
//! let listen = idweb.relying_party().settings().listen;
//! let app = idweb.mount(Router::new().route("/profile", get(profile)));
//! let listener = tokio::net::TcpListener::bind(listen).await?;
//! // Like `axum::serve`, with header-read, idle and body timeouts and a
//! // connection limit.
//! idweb_axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```
//!
//! [`IdWeb::from_env`] reads the `IDWEB_*` variables, opens the store that
//! `IDWEB_STORE` names (`memory` by default; `sqlite://PATH`, or
//! `redis://HOST:PORT` for several instances) and discovers the provider.
//! [`IdWeb::builder`] does the same from [`Settings`] you
//! loaded, with the `with_*` options of the relying party (a store, an HTTP
//! client, a clock).
//!
//! Routes mounted (each path is a setting; defaults shown):
//! - `GET /account/signin?returnUrl=/path` starts a sign-in (`loginHint`,
//!   `prompt`, `scope` and `claims` are passed on to the provider)
//!   (`IDWEB_SIGN_IN_PATH`);
//! - `GET /signin-oidc` (the callback path) completes it
//!   (`IDWEB_CALLBACK_PATH`, `[AzureAd] CallbackPath`);
//! - `POST /account/signout` signs this session out (`?scope=all`: every
//!   session of the user in this app), revokes the refresh token, and
//!   continues at the provider's end-session endpoint (by POST); with
//!   `?scope=local` it signs out of this app only and stays at the app
//!   (`IDWEB_SIGN_OUT_PATH`);
//! - `GET /signout-callback-oidc` is the post-logout redirect URI
//!   (`IDWEB_SIGNED_OUT_CALLBACK_PATH`, `[AzureAd] SignedOutCallbackPath`);
//! - `POST /backchannel-logout` takes the provider's logout tokens
//!   (`IDWEB_BACK_CHANNEL_LOGOUT_PATH`);
//! - `GET /signout-oidc?iss=&sid=` is the front-channel logout URI
//!   (`IDWEB_REMOTE_SIGN_OUT_PATH`, `[AzureAd] RemoteSignOutPath`);
//! - `GET /healthz` answers 200 while the process serves (liveness,
//!   `IDWEB_HEALTH_PATH`), and `GET /readyz` 200 when the provider's
//!   metadata is loaded, the store answers and its subscriptions are live,
//!   else 503 (readiness, `IDWEB_READY_PATH`); neither needs a session.
//!
//! ## Metrics and audit
//!
//! idweb records metrics through the `metrics` facade: install a recorder
//! (e.g. `metrics-exporter-prometheus`) *before* building the `IdWeb`, and
//! serve its output where your scraper looks. Each sign-out writes one
//! audit event on the `tracing` target `idweb::audit`. The list of metrics
//! and audit fields is in the repository's `docs/OBSERVABILITY.md`.
//!
//! With a path in the public URL (`IDWEB_PUBLIC_URL=https://app.example/portal`)
//! [`IdWeb::mount`] serves these routes and the app's below it
//! (`/portal/signin-oidc`, `/portal/profile`), and every URL idweb builds
//! carries it: redirect and post-logout URIs, sign-in redirects, return
//! URLs (which must stay below it), cookie paths. Route paths are relative
//! to the public URL. A reverse proxy in front must pass the path unchanged.
//!
//! ## Sign-out events
//!
//! [`IdWebBuilder::on_sign_out`] (or [`IdWeb::on_sign_out`]) registers an
//! async hook called once per sign-out — whatever the path, on whichever
//! instance it happened — with an [`idweb::SignOutEvent`] naming the path,
//! the user and the sessions removed: the place to drop what the app keeps
//! per user or per session (cached API answers, open streams).
//!
//! A browser request without a valid session is redirected to sign-in; a
//! request with `Accept: application/json` gets `401` with a JSON body.
//!
//! ## Features
//!
//! `sqlite`, `redis` and `postgres` (all on by default) are the store backends
//! [`IdWeb::from_env`] can open (they turn on the same features of
//! `idweb-stores`). With `default-features = false, features = ["redis"]`
//! an app leaves SQLite out; a URL of a left-out backend then fails with
//! [`OpenStoreError::FeatureDisabled`], never with another
//! store in its place.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

/// The README's code compiles (`cargo test --doc`).
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;

mod builder;
mod cookies;
mod error;
mod extract;
mod headers;
mod health;
mod pending;
mod routes;
mod serve;
mod signout;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Router};
use idweb::{RelyingParty, Settings};

pub use builder::{BuildError, IdWebBuilder};
pub use error::{ApiRejection, AuthRejection, SignInFailure};
pub use extract::AuthenticatedUser;
pub use headers::{DenyFramingLayer, ResponseHeaders, ResponseHeadersFuture};
pub use health::READY_CHECK_TIMEOUT;
pub use idweb_stores::OpenStoreError;
pub use pending::MAX_PENDING_SIGN_INS;
pub use serve::{
    DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS, Serve, serve,
};
pub use signout::MAX_LOGOUT_BODY;

/// idweb installed on an axum app. Cheap to clone.
#[derive(Debug, Clone)]
pub struct IdWeb {
    rp: Arc<RelyingParty>,
}

impl IdWeb {
    /// Starts from the environment: loads the settings
    /// ([`Settings::load`]`(None)`: the `IDWEB_*` variables), opens the store
    /// they name (`IDWEB_STORE`, default `memory`) and discovers the
    /// provider. The same as `IdWeb::builder(Settings::load(None)?).build()`.
    ///
    /// # Errors
    /// [`BuildError::Settings`], [`BuildError::Store`] or [`BuildError::Start`].
    pub async fn from_env() -> Result<Self, BuildError> {
        Self::builder(Settings::load(None)?).build().await
    }

    /// Starts building from settings; [`IdWebBuilder::build`] opens the
    /// store they name unless [`IdWebBuilder::with_store`] gives one.
    pub fn builder(settings: Settings) -> IdWebBuilder {
        IdWebBuilder::new(settings)
    }

    /// Wraps a relying party built with [`RelyingParty::builder`].
    pub fn new(rp: RelyingParty) -> Self {
        Self { rp: Arc::new(rp) }
    }

    /// The relying party.
    pub fn relying_party(&self) -> &RelyingParty {
        &self.rp
    }

    /// Adds a sign-out listener to the running app (as
    /// [`IdWebBuilder::on_sign_out`] does at build time): it hears the
    /// sign-outs that take effect from now on, on this instance and, over
    /// the store's bus, on the others.
    pub fn on_sign_out(&self, listener: impl idweb::SignOutListener) {
        self.rp.sign_out_events().listen(listener);
    }

    /// Adds idweb's routes to `router` and installs the layer the
    /// [`AuthenticatedUser`] extractor needs. One call does both.
    ///
    /// When the public URL has a path (`IDWEB_PUBLIC_URL=https://app.example/portal`),
    /// the routes of `router` and idweb's are served below it (`/portal/profile`,
    /// `/portal/signin-oidc`, ...): write `router` as if at the root, and
    /// serve the router this returns at the root of the server (merge it
    /// with other routes if you like, but do not nest it: a request that
    /// reaches it through [`Router::nest`] is answered with a 500 naming the
    /// problem, rather than half-working sign-ins).
    ///
    /// idweb's own pages forbid framing ([`DenyFramingLayer`]; the
    /// front-channel logout page may be framed by the provider only); put
    /// that layer on the app's routes too. Every response to a request that
    /// extracted an [`AuthenticatedUser`] gets `Cache-Control: no-store`.
    pub fn mount<S>(&self, router: Router<S>) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let app = router
            .merge(routes::routes(self).layer(DenyFramingLayer))
            .layer(headers::NoStoreWhenAuthenticatedLayer);
        let app = match self.rp.settings().path_base() {
            "" => app,
            base => Router::new().nest(base, app),
        };
        app.layer(axum::middleware::from_fn(served_at_root))
            .layer(Extension(self.clone()))
    }

    /// Starts a task that deletes expired records from the store
    /// ([`Store::purge_expired`](idweb::Store::purge_expired)) every
    /// `every` (at least one second), the first time one period from now.
    /// The task ends by itself once every clone of this `IdWeb` is dropped.
    /// [`IdWebBuilder::build`] starts it with [`Settings::purge_interval`];
    /// an `IdWeb` made with [`IdWeb::new`] runs none unless this is called.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn spawn_purge_task(&self, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let every = every.max(std::time::Duration::from_secs(1));
        let rp = Arc::downgrade(&self.rp);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(rp) = rp.upgrade() else { break };
                match rp.store().purge_expired().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(records = n, "purged expired records"),
                    Err(e) => tracing::warn!(error = %e, "could not purge expired records"),
                }
            }
        })
    }

    /// The name of the session cookie: `__Host-idweb.session` on https
    /// (Secure, no Domain, Path=/), `__Secure-idweb.session` on https below
    /// a path (Path=the public URL's path), `idweb.session` on a loopback
    /// http URL.
    pub fn session_cookie_name(&self) -> &'static str {
        let settings = self.rp.settings();
        match (settings.secure_cookies(), settings.path_base()) {
            (true, "") => "__Host-idweb.session",
            (true, _) => "__Secure-idweb.session",
            (false, _) => "idweb.session",
        }
    }

    /// The `Path` of the session cookie: the public URL's path, or `/`.
    pub(crate) fn cookie_path(&self) -> &str {
        match self.rp.settings().path_base() {
            "" => "/",
            base => base,
        }
    }

    /// The app's home as the browser sees it: the public URL's path, or `/`.
    pub fn home_path(&self) -> String {
        self.rp.settings().app_path("/")
    }

    /// The path that starts a sign-in, as the browser sees it (below the
    /// public URL's path): for links, `?returnUrl=` added.
    pub fn sign_in_path(&self) -> String {
        let settings = self.rp.settings();
        settings.app_path(&settings.sign_in_path)
    }

    /// The path to `POST` to sign out, as the browser sees it: for the
    /// `action` of sign-out forms (`?scope=all` added: every session of the
    /// user in this app; `?scope=local`: this app only, not at the provider).
    pub fn sign_out_path(&self) -> String {
        let settings = self.rp.settings();
        settings.app_path(&settings.sign_out_path)
    }
}

/// Refuses requests that reach the router of [`IdWeb::mount`] below a path
/// it does not know of (the router nested again, in place of a path in the
/// public URL): every URL idweb builds would miss that path.
async fn served_at_root(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let Some(original) = req.extensions().get::<axum::extract::OriginalUri>() else {
        return next.run(req).await;
    };
    if original.path() == req.uri().path() {
        return next.run(req).await;
    }
    let base = req
        .extensions()
        .get::<IdWeb>()
        .map(|i| i.rp.settings().path_base().to_string())
        .unwrap_or_default();
    let outer = original
        .path()
        .strip_suffix(req.uri().path())
        .unwrap_or_default();
    tracing::error!(
        nested_at = outer,
        public_url_path = base,
        "the router of IdWeb::mount is nested below a path; serve it at the root and put the path in IDWEB_PUBLIC_URL"
    );
    let description = format!(
        "idweb's router is served below `{outer}`, which the public URL does not have \
         (its path is `{base}`): sign-in, sign-out and return URLs would miss it. Serve the router \
         IdWeb::mount returns at the root, and put the whole path in IDWEB_PUBLIC_URL."
    );
    error::error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        error::wants_json(req.headers()),
        "idweb_nested_below_a_path",
        &description,
        "/",
    )
}
