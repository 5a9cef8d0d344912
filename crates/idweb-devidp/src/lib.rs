//! A development OpenID Provider for idweb's demo and tests.
//!
//! # ⚠️ NOT FOR PRODUCTION
//!
//! **This provider is for development and automated tests only. Never use it
//! to protect anything real.** Its users sign in by clicking a button without
//! a password, all state (sessions, codes, tokens, keys) lives in memory and
//! is lost on shutdown, it speaks plain HTTP, and it has test hooks that
//! deliberately issue broken tokens.
//!
//! # What it implements
//!
//! From a relying party's point of view it behaves like a real OpenID
//! Provider (OpenID Connect Core and Discovery, OAuth 2.0, PKCE, RFC 9207):
//!
//! | Path | Purpose |
//! | --- | --- |
//! | `GET /.well-known/openid-configuration` | Discovery document |
//! | `GET /jwks` | Public RS256 signing keys |
//! | `GET`/`POST /authorize` | Authorization code flow with mandatory PKCE (`S256`), `prompt`, `max_age`, SSO through the `devidp_session` cookie |
//! | `POST /authorize/login` | The login form's submission |
//! | `POST /token` | `authorization_code`, `refresh_token` (rotated, replay revokes the family) and `client_credentials` grants; `client_secret_basic` and `client_secret_post` |
//! | `GET`/`POST /userinfo` | Claims of the access token's user |
//! | `GET`/`POST /logout` | RP-initiated logout (ends the IdP session; no logout notifications to clients yet) |
//!
//! Rules worth knowing:
//!
//! * Scopes: `openid` (required at /authorize), `profile`, `email`,
//!   `offline_access` (a refresh token is issued only with it) and any
//!   `api://NAME/PERMISSION`. Other scopes are rejected with `invalid_scope`.
//!   The `client_credentials` grant accepts only `api://NAME/...` scopes.
//! * Access tokens are RS256 JWTs with header `typ` `at+jwt` (RFC 9068).
//!   Their `aud` is `api://NAME` for the `api://NAME/...` scopes requested
//!   (an array when there are several resources), otherwise
//!   `{issuer}/userinfo`. /userinfo accepts any unexpired, unrevoked access
//!   token of a user whose scope contains `openid`.
//! * ID tokens carry `name`, `email`, `email_verified` and
//!   `preferred_username` whatever the scope. `sub` is an opaque value derived
//!   from the username ([`subject_for`]).
//! * All times (token `iat`/`exp`, code and refresh token expiry, `auth_time`)
//!   come from the provider's clock, which [`DevIdp::set_clock_offset`] shifts.
//! * A `login_hint` naming a configured user other than the one signed in
//!   makes the existing IdP session unusable for that request (the form is
//!   shown, or with `auto_login` the hinted user is signed in).
//!
//! # Example
//!
//! ```no_run
//! use idweb_devidp::{DevClient, DevIdp, DevIdpConfig};
//!
//! # async fn example() -> std::io::Result<()> {
//! let config = DevIdpConfig {
//!     clients: vec![DevClient::new(
//!         "demo",
//!         "demo-secret",
//!         "http://127.0.0.1:3000/callback",
//!     )],
//!     auto_login: true,
//!     ..DevIdpConfig::default()
//! };
//! let idp = DevIdp::start(([127, 0, 0, 1], 0).into(), config).await?;
//! println!("discovery: {}/.well-known/openid-configuration", idp.issuer());
//! // ... run the relying party against idp.issuer() ...
//! idp.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod crypto;
mod html;
mod params;
mod server;
mod state;
mod tokens;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::{DevClient, DevIdpConfig, DevIdpStats, DevUser, Fault, subject_for};

use crypto::SigningKey;
use state::Shared;

/// How long [`DevIdp::shutdown`] waits for open requests before aborting.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A running development OpenID Provider. **NOT FOR PRODUCTION.**
///
/// Cheap to clone; all clones control the same server. The server runs until
/// [`DevIdp::shutdown`] is called (or its tokio runtime ends); dropping the
/// handles does not stop it.
#[derive(Clone)]
pub struct DevIdp {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    control: Mutex<Option<Control>>,
}

struct Control {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for DevIdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIdp")
            .field("issuer", &self.inner.shared.issuer)
            .field("local_addr", &self.inner.local_addr)
            .finish_non_exhaustive()
    }
}

impl DevIdp {
    /// Binds a TCP listener on `addr` (port 0 picks a free port) and starts
    /// the provider on the current tokio runtime. The issuer is
    /// `http://{bound address}` without a trailing slash.
    ///
    /// # Errors
    /// Binding fails, or the signing key cannot be generated.
    pub async fn start(addr: SocketAddr, config: DevIdpConfig) -> std::io::Result<DevIdp> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        Self::start_on(listener, config).await
    }

    /// Starts the provider on an already bound listener; the issuer is
    /// `http://{listener's local address}`.
    ///
    /// # Errors
    /// The listener's address cannot be read, or the signing key cannot be
    /// generated.
    pub async fn start_on(
        listener: tokio::net::TcpListener,
        config: DevIdpConfig,
    ) -> std::io::Result<DevIdp> {
        let local_addr = listener.local_addr()?;
        let issuer = format!("http://{local_addr}");
        let key = tokio::task::spawn_blocking(SigningKey::generate)
            .await
            .map_err(std::io::Error::other)?
            .map_err(std::io::Error::other)?;
        let shared = Arc::new(Shared::new(issuer, config, key));
        let app = server::router(Arc::clone(&shared));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let signal = async move {
                // A dropped sender (every handle gone) does not stop the server.
                if stopped.await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            if let Err(error) = axum::serve(listener, app)
                .with_graceful_shutdown(signal)
                .await
            {
                tracing::error!(%error, "development OpenID provider stopped with an error");
            }
        });
        tracing::info!(issuer = %shared.issuer, "development OpenID provider (NOT FOR PRODUCTION) listening");
        Ok(DevIdp {
            inner: Arc::new(Inner {
                shared,
                local_addr,
                control: Mutex::new(Some(Control { stop, task })),
            }),
        })
    }

    /// The issuer identifier, `http://{address}` without a trailing slash.
    pub fn issuer(&self) -> &str {
        &self.inner.shared.issuer
    }

    /// The address the provider listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Adds or replaces (by `client_id`) a client registration at run time.
    pub fn register_client(&self, client: DevClient) {
        let mut st = self.inner.shared.lock();
        st.clients.insert(client.client_id.clone(), client);
    }

    /// Generates a new RSA-2048 signing key with a new `kid`; new tokens are
    /// signed with it. If `keep_old` the previous public keys stay in the
    /// JWKS (and keep validating access tokens at /userinfo), otherwise they
    /// are removed.
    ///
    /// Key generation takes a moment and blocks the calling thread. Should it
    /// fail (it does not in practice), the keys are left unchanged and an
    /// error is logged.
    pub fn rotate_keys(&self, keep_old: bool) {
        let key = match SigningKey::generate() {
            Ok(key) => Arc::new(key),
            Err(error) => {
                tracing::error!(%error, "could not generate a signing key");
                return;
            }
        };
        let mut st = self.inner.shared.lock();
        if !keep_old {
            st.keys.clear();
        }
        st.keys.push(key);
    }

    /// Counts of successful and failed /token requests per grant type.
    pub fn stats(&self) -> DevIdpStats {
        self.inner.shared.lock().stats
    }

    /// Revokes every refresh token issued to `username` (any client): their
    /// next use answers `invalid_grant`.
    pub fn revoke_refresh_tokens(&self, username: &str) {
        let mut st = self.inner.shared.lock();
        for family in st.families.values_mut() {
            if family.username == username {
                family.revoked = true;
            }
        }
    }

    /// Test hook: the next ID token issued is deliberately broken in the
    /// given way, then the fault is cleared. A later call replaces a fault
    /// not yet applied.
    pub fn inject_fault(&self, fault: Fault) {
        self.inner.shared.lock().fault = Some(fault);
    }

    /// Shifts the provider's clock by `seconds` (positive = future). It
    /// applies to the `iat`/`exp`/`auth_time` of tokens issued from now on
    /// and to the provider's own expiry checks (codes, refresh tokens, access
    /// tokens at /userinfo). Replaces any earlier offset.
    pub fn set_clock_offset(&self, seconds: i64) {
        self.inner.shared.set_clock_offset(seconds);
    }

    /// Stops the server gracefully: no new connections are accepted and
    /// requests in progress may finish (for up to 10 seconds). Calling it on
    /// a second clone returns at once.
    pub async fn shutdown(self) {
        let control = self
            .inner
            .control
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(Control { stop, mut task }) = control else {
            return;
        };
        let _ = stop.send(());
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
        tracing::info!(issuer = %self.inner.shared.issuer, "development OpenID provider stopped");
    }
}
