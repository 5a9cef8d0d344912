//! Configuration and other public value types.

use std::fmt;
use std::time::Duration;

use crate::crypto::{hex, sha256};

/// Configuration of a [`DevIdp`](crate::DevIdp).
///
/// The [`Default`] configuration has two users, `alice` ("Alice Example") and
/// `bob` ("Bob Example"), no clients, `auto_login` off, one-hour access and
/// ID tokens, 60-second authorization codes and 14-day refresh tokens.
#[derive(Debug, Clone)]
pub struct DevIdpConfig {
    /// The users who can sign in.
    pub users: Vec<DevUser>,
    /// The registered clients (relying parties). More can be added at run
    /// time with [`DevIdp::register_client`](crate::DevIdp::register_client).
    pub clients: Vec<DevClient>,
    /// When true, an /authorize request carrying `login_hint=<username>` of a
    /// configured user signs that user in without showing the form (for
    /// tests). Default false.
    pub auto_login: bool,
    /// Lifetime of access tokens (`expires_in`). Default 3600 s.
    pub access_token_lifetime: Duration,
    /// Lifetime of ID tokens (`exp - iat`). Default 3600 s.
    pub id_token_lifetime: Duration,
    /// Lifetime of authorization codes. Default 60 s.
    pub code_lifetime: Duration,
    /// Lifetime of each refresh token; every rotation issues a token with a
    /// fresh lifetime. Default 14 days.
    pub refresh_token_lifetime: Duration,
}

impl Default for DevIdpConfig {
    fn default() -> Self {
        DevIdpConfig {
            users: vec![
                DevUser::new("alice", "Alice Example", "alice@example.com"),
                DevUser::new("bob", "Bob Example", "bob@example.com"),
            ],
            clients: Vec::new(),
            auto_login: false,
            access_token_lifetime: Duration::from_secs(3600),
            id_token_lifetime: Duration::from_secs(3600),
            code_lifetime: Duration::from_secs(60),
            refresh_token_lifetime: Duration::from_secs(14 * 24 * 3600),
        }
    }
}

/// A user of the development provider.
///
/// The user's subject identifier (`sub`) is not the username but a stable
/// opaque value derived from it, see [`DevUser::subject`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevUser {
    /// The login name, also released as `preferred_username`.
    pub username: String,
    /// The display name (`name` claim).
    pub name: String,
    /// The e-mail address (`email` claim, always `email_verified: true`).
    pub email: String,
}

impl DevUser {
    /// Creates a user.
    pub fn new(
        username: impl Into<String>,
        name: impl Into<String>,
        email: impl Into<String>,
    ) -> Self {
        DevUser {
            username: username.into(),
            name: name.into(),
            email: email.into(),
        }
    }

    /// The `sub` claim issued for this user: the first 32 hex digits of
    /// SHA-256 of `"devidp-sub:" + username`. Stable across restarts.
    pub fn subject(&self) -> String {
        subject_for(&self.username)
    }
}

/// The `sub` claim the provider issues for `username` (see [`DevUser::subject`]).
pub fn subject_for(username: &str) -> String {
    let hash = sha256(format!("devidp-sub:{username}").as_bytes());
    hex(hash.get(..16).unwrap_or(&hash))
}

/// A registered client (relying party), authenticated at the token endpoint
/// with `client_secret_basic` or `client_secret_post`.
///
/// Its [`Debug`] output never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct DevClient {
    /// The client identifier.
    pub client_id: String,
    /// The client secret.
    pub client_secret: String,
    /// Redirect URIs, compared by exact string match.
    pub redirect_uris: Vec<String>,
    /// Allowed `post_logout_redirect_uri` values, compared by exact string match.
    pub post_logout_redirect_uris: Vec<String>,
    /// The OpenID Connect Back-Channel Logout URI, if any.
    pub backchannel_logout_uri: Option<String>,
    /// The OpenID Connect Front-Channel Logout URI, if any.
    pub frontchannel_logout_uri: Option<String>,
}

impl DevClient {
    /// Creates a client with one redirect URI and no logout settings.
    pub fn new(
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        redirect_uri: impl Into<String>,
    ) -> Self {
        DevClient {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            redirect_uris: vec![redirect_uri.into()],
            post_logout_redirect_uris: Vec::new(),
            backchannel_logout_uri: None,
            frontchannel_logout_uri: None,
        }
    }
}

impl fmt::Debug for DevClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevClient")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("redirect_uris", &self.redirect_uris)
            .field("post_logout_redirect_uris", &self.post_logout_redirect_uris)
            .field("backchannel_logout_uri", &self.backchannel_logout_uri)
            .field("frontchannel_logout_uri", &self.frontchannel_logout_uri)
            .finish()
    }
}

/// Counts of /token requests, see [`DevIdp::stats`](crate::DevIdp::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DevIdpStats {
    /// Successful `authorization_code` grants.
    pub authorization_code: u64,
    /// Successful `refresh_token` grants.
    pub refresh_token: u64,
    /// Successful `client_credentials` grants.
    pub client_credentials: u64,
    /// /token requests answered with an error, whatever the grant type.
    pub token_errors: u64,
}

/// A deliberate defect for the next ID token, see
/// [`DevIdp::inject_fault`](crate::DevIdp::inject_fault).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The `nonce` claim differs from the one in the authorization request
    /// (it is present even when the request had none).
    WrongNonce,
    /// Bits of the signature are flipped, so it does not verify.
    TamperedSignature,
    /// `aud` is `"someone-else"`.
    WrongAudience,
    /// `exp` is ten minutes in the past and `iat` five minutes before that.
    Expired,
    /// Signed by a fresh key whose `kid` is never published in the JWKS.
    UnknownKid,
    /// `iss` is `"https://wrong-issuer.example"` instead of the issuer.
    WrongIssuer,
}
