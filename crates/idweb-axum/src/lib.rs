//! # idweb-axum
//!
//! Puts [`idweb`] on an axum router: the sign-in routes (Microsoft.Identity.Web's
//! names), the [`AuthenticatedUser`] extractor, and the mapping of idweb's
//! errors to HTTP responses.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use idweb::{RelyingParty, Settings};
//! use idweb_axum::{AuthenticatedUser, IdWeb};
//!
//! async fn profile(user: AuthenticatedUser) -> String {
//!     format!("Hello, {}", user.name().unwrap_or(user.sub()))
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let settings = Settings::load(None)?;
//! let listen = settings.listen;
//! let idweb = IdWeb::new(RelyingParty::builder(settings).build().await?);
//! let app = idweb.mount(Router::new().route("/profile", get(profile)));
//! let listener = tokio::net::TcpListener::bind(listen).await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```
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
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod cookies;
mod error;
mod extract;
mod routes;
mod signout;

use std::sync::Arc;

use axum::{Extension, Router};
use idweb::RelyingParty;

pub use error::{ApiRejection, AuthRejection, SignInFailure};
pub use extract::AuthenticatedUser;
pub use signout::MAX_LOGOUT_BODY;

/// idweb installed on an axum app. Cheap to clone.
#[derive(Debug, Clone)]
pub struct IdWeb {
    rp: Arc<RelyingParty>,
}

impl IdWeb {
    /// Wraps a relying party.
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
