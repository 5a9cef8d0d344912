//! # idweb
//!
//! OpenID Connect sign-in for Rust web apps, server-side sessions, a token
//! cache for calling web APIs on the user's behalf — and sign-out that
//! removes every token of the session, on every path and every instance.
//!
//! This crate is framework-free; `idweb-axum` mounts it on an axum router.
//!
//! ```no_run
//! use std::sync::Arc;
//! use idweb::{MemoryStore, RelyingParty, Settings, SignInOptions};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // IDWEB_AUTHORITY, IDWEB_CLIENT_ID, IDWEB_CLIENT_SECRET, IDWEB_PUBLIC_URL, ...
//! let settings = Settings::load(None)?;
//! let rp = RelyingParty::builder(settings)
//!     .with_store(Arc::new(MemoryStore::new()))
//!     .build()
//!     .await?;
//! let request = rp.begin_sign_in(&SignInOptions::returning_to("/profile"))?;
//! // Send the browser to request.authorization_url and set the cookie
//! // request.cookie_name = request.cookie_value; at the redirect URI call
//! // rp.complete_sign_in(cookie, &params).
//! # let _ = request;
//! # Ok(())
//! # }
//! ```
//!
//! ## Concepts
//! - [`Settings`]: validated configuration from TOML and `IDWEB_*` variables.
//! - [`Provider`]: discovery metadata and the provider's keys, refetched on an unknown `kid`.
//! - [`RelyingParty`]: composes one service per role, each given only what it needs:
//!   - [`SignIn`]: code flow with PKCE S256, `state`, `nonce`, ID-token checks;
//!   - [`Sessions`]: server-side sessions behind a sealed cookie;
//!   - [`TokenAcquirer`]: access tokens from the cache, else by refresh (one
//!     redemption per partition across instances), else [`TokenError::UiRequired`];
//!   - [`DownstreamApi`]: calls to configured web APIs with the user's token;
//!   - [`LogoutHandler`]: back-channel, front-channel and local sign-out, each
//!     ending in [`SignOut::evict`] (tombstone first, then sessions and tokens),
//!     then a [`SignOutEvent`] for the app's [`SignOutListener`]s, on this
//!     instance and, over the store's [`SignOutBus`], on the others.
//! - [`Store`]: where sessions, tokens, tombstones live; [`MemoryStore`] in process.
//! - [`msal`]: the token-cache entries in MSAL's unified schema.
//! - [`StoreUrl`]: the store the settings name (`IDWEB_STORE`), opaque here;
//!   `idweb-stores` opens it, and [`RelyingParty::builder`] refuses to start
//!   on anything but `memory` without the opened store.
//! - [`Clock`]: injected time, so expiry is testable without sleeping.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

// Modules in dependency order (blank lines keep rustfmt from sorting them):
// each uses only modules above it; tests/module_order.rs checks it.
mod secret;

mod time;

mod crypto;

mod http;

mod keys;

mod tenant;

mod session;

mod store;

mod events;

mod observe;

mod cache;

mod token_cache;

mod config;

mod provider;

mod jwt;

mod client;

mod sessions;

mod signin;

mod tokens;

mod downstream;

mod signout;

mod rp;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

/// MSAL's unified token-cache schema: the entries idweb keeps per partition,
/// and their MSAL JSON form (export to, import from and `remove_account` as
/// MSAL Python, MSAL.NET and MSAL Java do).
pub mod msal {
    pub use crate::cache::{
        AccessTokenEntry, AccountEntry, AccountIdentity, AppMetadataEntry, CacheEntry, EntryKind,
        IdTokenEntry, MsalFormatError, RefreshTokenEntry, TokenResponseParts, UnknownEntryKind,
        account_identity, entries_from_token_response, export_msal_json, import_msal_json,
        msal_environment, msal_realm, remove_account_entries,
    };
}

pub use client::TokenSet;
pub use config::{
    ClientAuthMethod, ConfigError, DownstreamApiSettings, EndSessionMethod, KeySource,
    LogoutTokenPolicy, Settings, StoreUrl,
};
pub use downstream::{
    DownstreamApi, DownstreamError, DownstreamRequest, DownstreamResponse, MAX_DOWNSTREAM_BODY,
};
pub use events::{
    DEFAULT_LISTENER_TIMEOUT, SessionRef, SignOutBus, SignOutEvent, SignOutEventStats,
    SignOutEvents, SignOutListener, SignOutPath, SignOutReceiver, bus_channel,
};
pub use http::{HttpError, provider_http_client};
pub use jwt::{JwsError, MAX_JWS_LEN, VerifiedJws};
pub use keys::{CacheKeyError, CacheKeys};
pub use observe::{
    AUDIT_TARGET, AuditOutcome, AuditRecord, MeteredStore, SignOutAudit, store_backend_label,
};
pub use provider::{Provider, ProviderError, ProviderMetadata};
pub use rp::{Readiness, RelyingParty, RelyingPartyBuilder, StartError};
pub use secret::Secret;
pub use session::{Session, SessionId, account_id_for};
pub use sessions::Sessions;
pub use signin::{
    CallbackParams, IdTokenError, SIGN_IN_TIMEOUT, SignIn, SignInError, SignInOptions,
    SignInRequest, SignedIn, pending_cookie_name,
};
pub use signout::{
    BACKCHANNEL_LOGOUT_EVENT, BackChannelError, EndSessionRequest, Eviction, FrontChannelError,
    LocalSignOut, LogoutHandler, LogoutRequest, LogoutTokenError, SIGN_OUT_CALLBACK_PATH,
    SIGN_OUT_STATE_COOKIE, SignOut, SignOutSelector,
};
pub use store::{
    BoxError, JtiRecord, LockToken, MemoryHeld, MemoryStore, PartitionKey, PartitionWrite,
    SessionLookup, SignOutOutcome, SignOutRequest, SignOutTarget, Store, StoreError, StoreStats,
    StoredEntry, StoredPartition, Tombstone, sign_out_in_order,
};
pub use tenant::{CONSUMER_TENANT, IssuerError, TENANT_PLACEHOLDER};
pub use time::{Clock, MICROS_PER_SEC, ManualClock, SystemClock, unix_micros, unix_seconds};
pub use token_cache::{CachedPartition, EntrySummary, TokenCache};
pub use tokens::{AccessToken, MIN_REMAINING_SECS, TokenAcquirer, TokenError};

/// Whether `url`'s host is a loopback name or address (`localhost`,
/// `127.0.0.0/8`, `::1`): the only hosts idweb lets use plain `http`, for
/// development.
pub fn is_loopback(url: &url::Url) -> bool {
    config::is_loopback(url)
}

/// The claims challenge of a `WWW-Authenticate` header, as a web API sends
/// it when the caller's access token lacks claims it needs (Microsoft
/// Entra's Continuous Access Evaluation and Conditional Access
/// authentication contexts): for `Bearer error="insufficient_claims",
/// claims="<base64 JSON>"`, the decoded JSON object. `None` when the header
/// is not a Bearer challenge with a claims parameter holding a JSON object.
///
/// This is the parser idweb uses itself on downstream API answers; the JSON
/// is what to send as the `claims` parameter of the next authorization or
/// token request.
///
/// ```
/// let header = r#"Bearer realm="", error="insufficient_claims", claims="eyJhY2Nlc3NfdG9rZW4iOnsibmJmIjp7ImVzc2VudGlhbCI6dHJ1ZX19fQ==""#;
/// assert_eq!(
///     idweb::parse_claims_challenge(header).as_deref(),
///     Some(r#"{"access_token":{"nbf":{"essential":true}}}"#)
/// );
/// assert_eq!(idweb::parse_claims_challenge(r#"Bearer error="invalid_token""#), None);
/// ```
pub fn parse_claims_challenge(www_authenticate: &str) -> Option<String> {
    downstream::claims_challenge(www_authenticate)
}
