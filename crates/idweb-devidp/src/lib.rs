//! A development OpenID Provider for idweb's demo and tests.
//!
//! # ⚠️ NOT FOR PRODUCTION
//!
//! **This provider is for development and automated tests only. Never use it
//! to protect anything real.** Its users sign in by clicking a button without
//! a password, all state (sessions, codes, tokens, keys) lives in memory and
//! is lost on shutdown (unless [`DevIdpConfig::state_file`] keeps the keys,
//! sessions and refresh tokens in a plain file), it speaks plain HTTP, and it has test hooks that
//! deliberately issue broken tokens.
//!
//! # What it implements
//!
//! From a relying party's point of view it behaves like a real OpenID
//! Provider (OpenID Connect Core and Discovery, OAuth 2.0, PKCE, RFC 9207):
//!
//! | Path | Purpose |
//! | --- | --- |
//! | `GET /` | A start page: the endpoints, the registered clients (linked to their origins), the users |
//! | `GET /style.css` | The pages' stylesheet ([`STYLESHEET`]) |
//! | `GET /.well-known/openid-configuration` | Discovery document |
//! | `GET /jwks` | Public RS256 signing keys |
//! | `GET`/`POST /authorize` | Authorization code flow with mandatory PKCE (`S256`), `prompt`, `max_age`, SSO through the `devidp_session` cookie |
//! | `POST /authorize/login` | The login form's submission |
//! | `POST /token` | `authorization_code`, `refresh_token` (rotated, replay revokes the family) and `client_credentials` grants; `client_secret_basic` and `client_secret_post` |
//! | `GET`/`POST /userinfo` | Claims of the access token's user |
//! | `GET`/`POST /logout` | End-session endpoint (RP-Initiated Logout 1.0): ends the IdP session and notifies every client that signed in during it (Back-Channel Logout 1.0, Front-Channel Logout 1.0), see [Logout](#logout) |
//! | `GET`/`POST /admin/end-sessions` | **Development only**, no authentication: ends every IdP session of a user (form field `username`) and answers a page listing the notifications, see [`DevIdp::end_all_sessions`] |
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
//! # Logout
//!
//! The provider remembers, per IdP session, every client that received an
//! authorization code in it (including through silent SSO). When the session
//! ends, each of those clients is notified on the channels it registered
//! ([`DevClient::with_backchannel_logout`],
//! [`DevClient::with_frontchannel_logout`]):
//!
//! * **Back channel**: a logout token is POSTed from the provider to the
//!   client's `backchannel_logout_uri` as the form parameter `logout_token`
//!   (`application/x-www-form-urlencoded`), redirects not followed, each
//!   request limited to 5 seconds, all sent at once. The provider waits for
//!   the answers before it answers the browser. The logout token is an RS256
//!   JWT signed with the current key, header `typ` `logout+jwt` and `kid`,
//!   with the claims `iss`, `aud` (the client id), `iat`, `exp` (`iat` +
//!   120 s), a unique `jti`, `events`
//!   (`{"http://schemas.openid.net/event/backchannel-logout": {}}`), `sub`
//!   and `sid` (the `sid` of the client's ID tokens; left out when the client's
//!   [`backchannel_logout_session_required`](DevClient::backchannel_logout_session_required)
//!   is false). Never `nonce`.
//! * **Front channel**: the logout page renders one `<iframe>` per such
//!   client, whose `src` is its `frontchannel_logout_uri` with `iss` and `sid`
//!   added to the query (unless its
//!   [`frontchannel_logout_session_required`](DevClient::frontchannel_logout_session_required)
//!   is false). The URI must be on the scheme, host and port of one of the
//!   client's redirect URIs.
//!
//! Every notification is recorded as a [`LogoutDelivery`]
//! ([`DevIdp::logout_deliveries`]): the HTTP status of each back-channel
//! answer, or why nothing was delivered.
//!
//! At `/logout` (GET, or POST with a form body):
//!
//! * `id_token_hint`, if given, must be an ID token issued by this provider
//!   and signed by one of the keys in the JWKS (retired keys kept by
//!   [`DevIdp::rotate_keys`]`(true)` included); an expired one is accepted.
//!   Its `aud` names the client, its `sid` the IdP session. A `client_id`
//!   given as well must be the same client.
//! * `post_logout_redirect_uri` must exactly match one of the client's
//!   [`post_logout_redirect_uris`](DevClient::post_logout_redirect_uris), the
//!   client being known from `id_token_hint` or `client_id`; `state` is
//!   passed back to it. `logout_hint` (a username or `sub`) is optional;
//!   `ui_locales` is ignored.
//! * An invalid request (bad hint, unknown or mismatched client, unregistered
//!   redirect target, repeated parameter) gets an error page, without any
//!   redirect, and changes nothing: no session ends, nobody is notified, the
//!   cookie stays.
//! * The session to end is the browser's (the `devidp_session` cookie), else
//!   the one named by the hint's `sid`. Unless the hint names that very
//!   session (and `logout_hint`, if given, its user), the user is first asked
//!   to confirm on a page whose form posts the request back with
//!   `confirm=yes`; `confirm` counts only in a POST.
//! * The answer: with front-channel clients to notify, a page (200,
//!   `Cache-Control: no-store`) with their iframes, the list of every
//!   application told (back channel included) and how, a link to the
//!   post-logout redirect target and a `<meta http-equiv="refresh">` going
//!   there one second after the page and its iframes have loaded; otherwise
//!   a redirect (302
//!   for GET, 303 for POST) to the target, or a "signed out" page when there
//!   is none. The IdP session cookie is cleared.
//!
//! "Signed out elsewhere" (at the provider itself, or by an administrator) is
//! [`DevIdp::end_all_sessions`], or `POST /admin/end-sessions` with
//! `username=...` (`GET /admin/end-sessions` shows a form). It ends every
//! IdP session of the user and sends the same back-channel notifications.
//! Front-channel notifications need a browser: the page `POST
//! /admin/end-sessions` answers renders their iframes (a relying party's
//! front-channel endpoint must work without its cookie, as idweb's does),
//! while [`DevIdp::end_all_sessions`] has no browser and records them as
//! skipped.
//!
//! A sign-in of another user in a browser that has an IdP session also ends
//! that session: its clients get their back-channel logout tokens before the
//! browser gets its authorization code.
//!
//! Test hooks: [`DevIdp::logout_deliveries`], [`DevIdp::sessions_of`],
//! [`DevIdp::logout_token_for`] (a well-formed logout token, sent nowhere)
//! and [`DevIdp::mint_jwt`] (arbitrary header and claims signed with the
//! current key, to build bad logout tokens that still verify).
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
mod logout;
mod params;
mod persist;
mod server;
mod state;
mod tokens;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::{
    CONTOSO_TENANT, DevClient, DevIdpConfig, DevIdpStats, DevUser, EntraProfile, FABRIKAM_TENANT,
    Fault, LogoutChannel, LogoutDelivery, login_hint_for, subject_for,
};

pub use html::STYLESHEET;

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
    /// The task that rewrites the state file, if there is one.
    saver: Option<JoinHandle<()>>,
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
        let saved = match &config.state_file {
            Some(path) => persist::load(path)?,
            None => None,
        };
        let key = match saved.as_ref().and_then(|s| s.keys.last()) {
            Some(key) => Arc::clone(key),
            None => Arc::new(
                tokio::task::spawn_blocking(SigningKey::generate)
                    .await
                    .map_err(std::io::Error::other)?
                    .map_err(std::io::Error::other)?,
            ),
        };
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(logout::BACKCHANNEL_TIMEOUT)
            .user_agent(concat!("idweb-devidp/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(std::io::Error::other)?;
        let state_file = config.state_file.clone();
        let (changes, changed) = tokio::sync::watch::channel(0u64);
        let shared = Arc::new(Shared::new(
            issuer,
            config,
            key,
            http,
            state_file.is_some().then_some(changes),
        ));
        if let Some(saved) = saved {
            shared.lock().restore(saved);
        }
        let saver = match state_file {
            Some(path) => {
                // Written at once, so that a first start leaves the file.
                save(&shared, &path).await?;
                Some(tokio::spawn(keep_saved(Arc::clone(&shared), path, changed)))
            }
            None => None,
        };
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
                control: Mutex::new(Some(Control { stop, task, saver })),
            }),
        })
    }

    /// The issuer identifier, `http://{address}` without a trailing slash.
    /// With the [`EntraProfile`] it is only the base URL: authorities are
    /// [`entra_authority`](Self::entra_authority)s.
    pub fn issuer(&self) -> &str {
        &self.inner.shared.issuer
    }

    /// With the [`EntraProfile`]: the authority of `tenant` (`common`,
    /// `organizations`, `consumers` or a tenant id), `{base}/{tenant}/v2.0`.
    pub fn entra_authority(&self, tenant: &str) -> String {
        format!("{}/{tenant}/v2.0", self.inner.shared.issuer)
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
    /// JWKS (and keep validating access tokens at /userinfo and ID tokens
    /// given as `id_token_hint` at /logout), otherwise they are removed.
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
        drop(st);
        self.inner.shared.changed();
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
        drop(st);
        self.inner.shared.changed();
    }

    /// Ends every IdP session of `username`, as when the user signs out at
    /// the provider itself or an administrator revokes their sessions
    /// ("signed out elsewhere"; `POST /admin/end-sessions` does the same over
    /// HTTP).
    ///
    /// For every client that signed in during one of those sessions, a
    /// logout token is POSTed to its `backchannel_logout_uri` (all at once,
    /// each with a 5-second timeout) and the answers are awaited.
    /// Front-channel logout needs the user's browser, so those clients are
    /// not notified: their deliveries are recorded with an
    /// [`error`](LogoutDelivery::error) saying so. Returns the deliveries of
    /// this call (also added to [`logout_deliveries`](Self::logout_deliveries));
    /// empty when the user had no session.
    pub async fn end_all_sessions(&self, username: &str) -> Vec<LogoutDelivery> {
        logout::end_all_sessions(&self.inner.shared, username, false)
            .await
            .2
    }

    /// Every live IdP session (for a demo's overview), oldest first.
    pub fn sessions(&self) -> Vec<DevSession> {
        let st = self.inner.shared.lock();
        let mut out: Vec<DevSession> = st
            .sessions
            .values()
            .map(|s| DevSession {
                username: s.username.clone(),
                sid: s.sid.clone(),
                auth_time: s.auth_time,
                clients: s.clients.iter().cloned().collect(),
            })
            .collect();
        drop(st);
        out.sort_by(|a, b| a.auth_time.cmp(&b.auth_time).then(a.sid.cmp(&b.sid)));
        out
    }

    /// Test hook: the `sid` of every live IdP session of `username`
    /// (sorted).
    pub fn sessions_of(&self, username: &str) -> Vec<String> {
        let st = self.inner.shared.lock();
        let mut sids: Vec<String> = st
            .sessions
            .values()
            .filter(|s| s.username == username)
            .map(|s| s.sid.clone())
            .collect();
        drop(st);
        sids.sort();
        sids
    }

    /// Test hook: every logout notification made so far (RP-initiated
    /// logout at `/logout` and [`end_all_sessions`](Self::end_all_sessions)),
    /// oldest first. Only the latest 1000 are kept.
    pub fn logout_deliveries(&self) -> Vec<LogoutDelivery> {
        self.inner
            .shared
            .lock()
            .deliveries
            .iter()
            .cloned()
            .collect()
    }

    /// Test hook: a well-formed logout token for `client_id` (header `typ`
    /// `logout+jwt` and the current key's `kid`; claims `iss`, `aud`, `iat`,
    /// `exp` = `iat` + 120 s, a fresh `jti`, `events`, and `sub`/`sid` when
    /// given), signed with the current key but sent nowhere. Pass at least
    /// one of `sub` and `sid` for a valid token. Times follow the provider's
    /// clock ([`set_clock_offset`](Self::set_clock_offset)).
    ///
    /// Returns an empty string if signing fails (it does not in practice).
    pub fn logout_token_for(
        &self,
        client_id: &str,
        sub: Option<&str>,
        sid: Option<&str>,
    ) -> String {
        let shared = &self.inner.shared;
        let Some(key) = shared.lock().current_key() else {
            return String::new();
        };
        logout::logout_token(&key, &shared.issuer, client_id, sub, sid, shared.now())
            .unwrap_or_else(|error| {
                tracing::error!(%error, "could not sign a logout token");
                String::new()
            })
    }

    /// Test hook: signs arbitrary `claims` (any JSON value) under an
    /// arbitrary JWS `header` with the current signing key, so that tests can
    /// build malformed tokens (wrong `typ`, missing claims, a `nonce` in a
    /// logout token, ...) that still verify with the JWKS. The header's `alg`
    /// is set to `RS256` and, unless the given header has a `kid`, `kid` is
    /// set to the current key's; nothing else is added (no `typ` unless
    /// given). A header that is not a JSON object is replaced by an empty one.
    ///
    /// Returns an empty string if signing fails (it does not in practice).
    pub fn mint_jwt(&self, header: serde_json::Value, claims: serde_json::Value) -> String {
        let Some(key) = self.inner.shared.lock().current_key() else {
            return String::new();
        };
        let mut header = match header {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        header.insert("alg".into(), "RS256".into());
        if !header.contains_key("kid") {
            header.insert("kid".into(), key.kid().into());
        }
        key.sign_jws(&serde_json::Value::Object(header), &claims)
            .unwrap_or_else(|error| {
                tracing::error!(%error, "could not sign a JWT");
                String::new()
            })
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
        let Some(Control {
            stop,
            mut task,
            saver,
        }) = control
        else {
            return;
        };
        let _ = stop.send(());
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
        if let Some(saver) = saver {
            saver.abort();
            if let Some(path) = self.inner.shared.state_file()
                && let Err(error) = save(&self.inner.shared, &path).await
            {
                tracing::error!(%error, "could not save the development OpenID provider's state");
            }
        }
        tracing::info!(issuer = %self.inner.shared.issuer, "development OpenID provider stopped");
    }
}

/// A live IdP browser session, see [`DevIdp::sessions`].
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevSession {
    /// The user signed in.
    pub username: String,
    /// The OpenID Connect session id (`sid` claim).
    pub sid: String,
    /// When the user signed in (Unix seconds, the provider's clock).
    pub auth_time: i64,
    /// The clients that received an authorization code in this session.
    pub clients: Vec<String>,
}

/// Writes the state file now.
async fn save(shared: &Arc<Shared>, path: &std::path::Path) -> std::io::Result<()> {
    let Some(bytes) = persist::snapshot(&shared.lock()) else {
        return Err(std::io::Error::other("a signing key cannot be exported"));
    };
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || persist::write(&path, &bytes))
        .await
        .map_err(std::io::Error::other)?
}

/// Rewrites the state file after changes (several changes in a row are
/// written once); a failure is logged and retried on the next change.
async fn keep_saved(
    shared: Arc<Shared>,
    path: std::path::PathBuf,
    mut changed: tokio::sync::watch::Receiver<u64>,
) {
    let mut last: Option<Vec<u8>> = None;
    while changed.changed().await.is_ok() {
        let Some(bytes) = persist::snapshot(&shared.lock()) else {
            continue;
        };
        if last.as_ref() == Some(&bytes) {
            continue;
        }
        let target = path.clone();
        let copy = bytes.clone();
        match tokio::task::spawn_blocking(move || persist::write(&target, &copy)).await {
            Ok(Ok(())) => last = Some(bytes),
            Ok(Err(error)) => {
                tracing::error!(%error, "could not save the development OpenID provider's state");
            }
            Err(error) => {
                tracing::error!(%error, "could not save the development OpenID provider's state");
            }
        }
    }
}
