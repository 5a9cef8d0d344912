//! Configuration and other public value types.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::crypto::{hex, sha256};

/// Configuration of a [`DevIdp`](crate::DevIdp).
///
/// The [`Default`] configuration has two users, `alice` ("Alice Example") and
/// `bob` ("Bob Example"), no clients, `auto_login` off, one-hour access and
/// ID tokens, 60-second authorization codes and 14-day refresh tokens, its
/// state in memory only.
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
    /// Look like Microsoft Entra ID (see [`EntraProfile`]). Default `None`:
    /// a plain OpenID Provider whose issuer is its base URL.
    pub entra: Option<EntraProfile>,
    /// Keep the signing keys, the browser sessions and the refresh tokens
    /// in this file (JSON, created readable by the owner only), read at
    /// start and rewritten after each change, so that a restarted provider
    /// still accepts the ID tokens, session ids and refresh tokens its
    /// relying parties hold. Default `None`: everything lives in memory and
    /// is lost on shutdown. The file holds private keys: development only.
    pub state_file: Option<std::path::PathBuf>,
    /// Links (label, URL) shown in the navigation bar of every page of the
    /// provider, e.g. to the applications of a demo. Default none.
    pub nav_links: Vec<(String, String)>,
}

/// The tenant id of the "Contoso" directory of the [`EntraProfile`] (alice's by default).
pub const CONTOSO_TENANT: &str = "5f1c2a9e-3d4b-4c6a-9e8f-0a1b2c3d4e5f";
/// The tenant id of the "Fabrikam" directory of the [`EntraProfile`] (bob's by default).
pub const FABRIKAM_TENANT: &str = "b7e4d3c2-1a09-4f8e-8d7c-6b5a49382716";

/// A development profile that serves Microsoft Entra ID's shapes, for
/// testing multi-tenant apps without Entra:
///
/// * metadata per tenant under `/{tenant}/v2.0/.well-known/openid-configuration`,
///   `tenant` being `common`, `organizations`, `consumers` or a tenant id;
///   for `common` and `organizations` the `issuer` is the template
///   `{base}/{tenantid}/v2.0`, otherwise `{base}/{tenant id}/v2.0`; the
///   endpoints are `/{tenant}/oauth2/v2.0/authorize`, `/token`, `/logout`
///   and `/{tenant}/discovery/v2.0/keys`; no revocation endpoint, no
///   back-channel logout, no `iss` in authorization responses;
/// * tokens whose `iss` is `{base}/{tid}/v2.0` for the user's tenant, with
///   `tid`, `oid`, `ver` `2.0` and (ID tokens) the optional claim
///   `login_hint`, which `/logout` accepts as `logout_hint`;
/// * access tokens carrying `xms_cc` when the request's `claims` parameter
///   asks for `{"access_token":{"xms_cc":{"values":[...]}}}` (client
///   capabilities), and `acrs` for an `acrs` claims request;
/// * front-channel logout with `sid` only (no `iss`), and never a
///   back-channel logout token.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EntraProfile {
    /// Each user's tenant id, by username; users not listed are in
    /// [`default_tenant`](Self::default_tenant).
    pub user_tenants: BTreeMap<String, String>,
    /// The tenant of users not in [`user_tenants`](Self::user_tenants).
    pub default_tenant: String,
}

impl Default for EntraProfile {
    /// alice in [`CONTOSO_TENANT`], bob in [`FABRIKAM_TENANT`], anyone else in Contoso.
    fn default() -> Self {
        EntraProfile {
            user_tenants: BTreeMap::from([
                ("alice".to_owned(), CONTOSO_TENANT.to_owned()),
                ("bob".to_owned(), FABRIKAM_TENANT.to_owned()),
            ]),
            default_tenant: CONTOSO_TENANT.to_owned(),
        }
    }
}

impl EntraProfile {
    /// Puts `username` in tenant `tenant_id`.
    pub fn with_user_tenant(
        mut self,
        username: impl Into<String>,
        tenant_id: impl Into<String>,
    ) -> Self {
        self.user_tenants.insert(username.into(), tenant_id.into());
        self
    }

    /// The tenant id of `username`.
    pub fn tenant_of(&self, username: &str) -> &str {
        self.user_tenants
            .get(username)
            .map_or(self.default_tenant.as_str(), String::as_str)
    }
}

/// The `login_hint` claim the [`EntraProfile`] puts in `username`'s ID
/// tokens (an opaque value, as Entra's is); `/logout` accepts it as `logout_hint`.
pub fn login_hint_for(username: &str) -> String {
    let hash = sha256(format!("devidp-login-hint:{username}").as_bytes());
    format!("O.{}", hex(hash.get(..24).unwrap_or(&hash)))
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
            entra: None,
            state_file: None,
            nav_links: Vec::new(),
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
    /// The OpenID Connect Back-Channel Logout URI, if any: when an IdP
    /// session in which this client signed in ends, the provider POSTs a
    /// logout token to it. It must be an absolute `http`/`https` URI without
    /// a fragment (otherwise the notification is recorded as failed and not
    /// sent).
    pub backchannel_logout_uri: Option<String>,
    /// Whether the logout tokens sent to
    /// [`backchannel_logout_uri`](Self::backchannel_logout_uri) carry the
    /// `sid` claim. When false they carry only `sub` (the intent being that
    /// all of the user's sessions at the client end).
    ///
    /// Default `true` here ([`DevClient::new`]), unlike the registration
    /// metadata of the same name whose default is `false`.
    pub backchannel_logout_session_required: bool,
    /// The OpenID Connect Front-Channel Logout URI, if any: the logout page
    /// of an IdP session in which this client signed in renders it in an
    /// `<iframe>`. It must be an absolute `http`/`https` URI without a
    /// fragment, with the scheme, host and port of one of the client's
    /// [`redirect_uris`](Self::redirect_uris) (otherwise no iframe is
    /// rendered and the notification is recorded as failed).
    pub frontchannel_logout_uri: Option<String>,
    /// Whether the front-channel logout iframe gets the `iss` and `sid`
    /// query parameters. When false the bare
    /// [`frontchannel_logout_uri`](Self::frontchannel_logout_uri) is used.
    ///
    /// Default `true` here ([`DevClient::new`]), unlike the registration
    /// metadata of the same name whose default is `false`.
    pub frontchannel_logout_session_required: bool,
}

impl DevClient {
    /// Creates a client with one redirect URI and no logout settings (both
    /// `*_logout_session_required` flags are `true`).
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
            backchannel_logout_session_required: true,
            frontchannel_logout_uri: None,
            frontchannel_logout_session_required: true,
        }
    }

    /// Sets the [`backchannel_logout_uri`](Self::backchannel_logout_uri).
    pub fn with_backchannel_logout(mut self, uri: impl Into<String>) -> Self {
        self.backchannel_logout_uri = Some(uri.into());
        self
    }

    /// Sets the [`frontchannel_logout_uri`](Self::frontchannel_logout_uri).
    pub fn with_frontchannel_logout(mut self, uri: impl Into<String>) -> Self {
        self.frontchannel_logout_uri = Some(uri.into());
        self
    }

    /// Adds an allowed `post_logout_redirect_uri`.
    pub fn with_post_logout_redirect_uri(mut self, uri: impl Into<String>) -> Self {
        self.post_logout_redirect_uris.push(uri.into());
        self
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
            .field(
                "backchannel_logout_session_required",
                &self.backchannel_logout_session_required,
            )
            .field("frontchannel_logout_uri", &self.frontchannel_logout_uri)
            .field(
                "frontchannel_logout_session_required",
                &self.frontchannel_logout_session_required,
            )
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
    /// Refresh tokens revoked through the revocation endpoint (RFC 7009).
    pub revocations: u64,
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
    /// With the [`EntraProfile`]: `iss` names another tenant than the
    /// token's `tid` (the issuer of [`FABRIKAM_TENANT`], or of
    /// [`CONTOSO_TENANT`] for a Fabrikam user).
    IssuerOfAnotherTenant,
}

/// How a logout notification reached (or was meant to reach) a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogoutChannel {
    /// OpenID Connect Back-Channel Logout: a logout token POSTed from the
    /// provider to the client's `backchannel_logout_uri`.
    BackChannel,
    /// OpenID Connect Front-Channel Logout: the client's
    /// `frontchannel_logout_uri` rendered in an `<iframe>` of the provider's
    /// logout page, loaded by the user's browser.
    FrontChannel,
}

/// One logout notification to one client, recorded when an IdP session
/// ends; see [`DevIdp::logout_deliveries`](crate::DevIdp::logout_deliveries)
/// and [`DevIdp::end_all_sessions`](crate::DevIdp::end_all_sessions).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutDelivery {
    /// The client notified.
    pub client_id: String,
    /// The channel used.
    pub channel: LogoutChannel,
    /// The URI the notification went to: the `backchannel_logout_uri`, or
    /// the iframe's `src` (the `frontchannel_logout_uri` with any `iss` and
    /// `sid` parameters added).
    pub uri: String,
    /// The `sid` sent (logout token claim or iframe parameter); `None` when
    /// the client registered that it does not need it.
    pub sid: Option<String>,
    /// The subject (`sub`) of the user whose IdP session ended (always in
    /// back-channel logout tokens; not sent on the front channel).
    pub sub: String,
    /// The HTTP status the client answered a back-channel POST with; `None`
    /// for the front channel and when the POST failed.
    pub status: Option<u16>,
    /// Why the notification failed or was not made: the POST could not be
    /// completed (connection, 5-second timeout), the registered URI is
    /// unusable, or front-channel logout was skipped because no browser takes
    /// part. `None` otherwise (a 4xx/5xx answer is in [`status`](Self::status)).
    pub error: Option<String>,
}
