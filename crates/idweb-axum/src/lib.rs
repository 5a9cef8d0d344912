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
//! axum::serve(listener, app).await?;
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
//! Routes mounted:
//! - `GET /account/signin?returnUrl=/path` starts a sign-in (`loginHint`,
//!   `prompt`, `scope` and `claims` are passed on to the provider);
//! - `GET /signin-oidc` (the callback path) completes it;
//! - `POST /account/signout` signs this session out (`?scope=all`: every
//!   session of the user in this app), revokes the refresh token, and
//!   continues at the provider's end-session endpoint (by POST);
//! - `GET /signout-callback-oidc` is the post-logout redirect URI;
//! - `POST /backchannel-logout` takes the provider's logout tokens;
//! - `GET /signout-oidc?iss=&sid=` is the front-channel logout URI.
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
mod routes;
mod signout;

use std::sync::Arc;

use axum::{Extension, Router};
use idweb::{RelyingParty, Settings};

pub use builder::{BuildError, IdWebBuilder};
pub use error::{ApiRejection, AuthRejection, SignInFailure};
pub use extract::AuthenticatedUser;
pub use idweb_stores::OpenStoreError;
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

    /// Adds idweb's routes to `router` and installs the layer the
    /// [`AuthenticatedUser`] extractor needs. One call does both.
    pub fn mount<S>(&self, router: Router<S>) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        router
            .merge(routes::routes(self))
            .layer(Extension(self.clone()))
    }

    /// The name of the session cookie: `__Host-idweb.session` on https
    /// (Secure, no Domain, Path=/), `idweb.session` on a loopback http URL.
    pub fn session_cookie_name(&self) -> &'static str {
        if self.rp.settings().secure_cookies() {
            "__Host-idweb.session"
        } else {
            "idweb.session"
        }
    }
}
