//! Sign-out: the eviction of sessions and their tokens ([`SignOut`]), and the
//! validation of back-channel logout tokens (OpenID Connect Back-Channel
//! Logout 1.0 §2.4–2.6, with errata 1: `exp` is required).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::cache::EntryKind;
use crate::client::ProviderClient;
use crate::config::{EndSessionMethod, LogoutTokenPolicy};
use crate::crypto::{Sealer, random_token};
use crate::events::{SignOutEvent, SignOutEvents, SignOutPath};
use crate::jwt::{self, JwsError, audiences, str_claim, time_claim};
use crate::observe::{AuditOutcome, AuditRecord, SignOutAudit, count, names};
use crate::provider::Provider;
use crate::secret::{Secret, constant_time_eq};
use crate::session::{Session, SessionId};
use crate::store::{
    JtiRecord, PartitionKey, SessionLookup, SignOutOutcome, SignOutRequest, SignOutTarget, Store,
    StoreError,
};
use crate::tenant::IssuerError;
use crate::time::Clock;
use crate::token_cache::TokenCache;

/// The event a logout token must carry.
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// What to sign out.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignOutSelector {
    /// One session of this app (local sign-out).
    Session(SessionId),
    /// Every session of one provider session `(iss, sid)`.
    ProviderSession {
        /// Issuer.
        iss: String,
        /// The provider's session id.
        sid: String,
    },
    /// Every session of one user `(iss, sub)` ("sign out everywhere").
    Subject {
        /// Issuer.
        iss: String,
        /// Subject.
        sub: String,
    },
}

/// What an eviction did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Eviction {
    /// Sessions removed (each with its whole token-cache partition).
    pub sessions_removed: usize,
    /// Token-cache entries removed with those sessions (access, refresh and
    /// ID tokens, accounts, app metadata), as the store counted them.
    pub entries_removed: u64,
    /// Their ids (for the sign-out event, which carries only their digests).
    pub sessions: Vec<SessionId>,
}

/// Removes signed-out sessions and every token of theirs, so that nothing
/// brings them back.
///
/// [`SignOut::evict`] records a [`Tombstone`](crate::Tombstone) (for
/// `(iss, sid)` or `(iss, sub)`), so that a sign-in or a token refresh still
/// in flight cannot write the session back, and removes each selected session
/// together with its cache partition and index entries — all in one
/// [`Store::sign_out`] step, atomic in the stores idweb ships; it returns only
/// when all of that is stored. Its cost is proportional to the sessions
/// selected, not to the size of the store.
#[derive(Debug, Clone)]
pub struct SignOut {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    tombstone_lifetime: Duration,
    /// The token cache of this process, whose decoded views of the removed
    /// partitions are dropped before `evict` returns.
    cache: Option<TokenCache>,
}

impl SignOut {
    /// Evicts from `store`; tombstones last `tombstone_lifetime` (at least the
    /// longest session lifetime, so that no session they cover can outlive them).
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, tombstone_lifetime: Duration) -> Self {
        Self {
            store,
            clock,
            tombstone_lifetime,
            cache: None,
        }
    }

    /// Also drops the in-process views of `cache` for the sessions evicted.
    pub(crate) fn with_cache(mut self, cache: TokenCache) -> Self {
        self.cache = Some(cache);
        self
    }

    fn forget_views(&self, id: &SessionId) {
        if let Some(cache) = &self.cache {
            cache.forget(&PartitionKey::Session(id.clone()));
        }
    }

    fn request(&self, selector: &SignOutSelector) -> SignOutRequest {
        let now = self.clock.unix_now();
        let ttl = i64::try_from(self.tombstone_lifetime.as_secs()).unwrap_or(i64::MAX / 2);
        let target = match selector {
            SignOutSelector::Session(id) => SignOutTarget::Session(id.clone()),
            SignOutSelector::ProviderSession { iss, sid } => {
                SignOutTarget::Lookup(SessionLookup::ByProviderSession {
                    iss: iss.clone(),
                    sid: sid.clone(),
                })
            }
            SignOutSelector::Subject { iss, sub } => {
                SignOutTarget::Lookup(SessionLookup::BySubject {
                    iss: iss.clone(),
                    sub: sub.clone(),
                })
            }
        };
        SignOutRequest::new(target, self.clock.unix_micros(), now.saturating_add(ttl))
    }

    /// Runs `request` as one [`Store::sign_out`], then drops this process's
    /// views of what it removed. `None` when the request's `jti` was a replay.
    async fn run(
        &self,
        selector: &SignOutSelector,
        request: SignOutRequest,
    ) -> Result<Option<Eviction>, StoreError> {
        let outcome = self.store.sign_out(&request).await;
        if let SignOutSelector::Session(id) = selector {
            // Whatever the outcome: no view of this session outlives the call.
            self.forget_views(id);
        }
        let (removed, entries_removed) = match outcome? {
            SignOutOutcome::Replayed => return Ok(None),
            SignOutOutcome::SignedOut {
                removed,
                entries_removed,
            } => (removed, entries_removed),
        };
        for id in &removed {
            self.forget_views(id);
        }
        tracing::info!(
            sessions = removed.len(),
            entries = entries_removed,
            selector = selector_kind(selector),
            "signed out"
        );
        Ok(Some(Eviction {
            sessions_removed: removed.len(),
            entries_removed,
            sessions: removed,
        }))
    }

    /// Signs out what `selector` names: its tombstone and the removal of
    /// every session it selects (each with its token-cache partition and
    /// index entries) are stored as one step ([`Store::sign_out`]). Errors
    /// leave a retry possible.
    pub async fn evict(&self, selector: &SignOutSelector) -> Result<Eviction, StoreError> {
        let request = self.request(selector);
        Ok(self.run(selector, request).await?.unwrap_or_default())
    }

    /// Removes session `id` with its partition and index entries
    /// ([`Store::remove_session`], one atomic step in every store) and
    /// records **no tombstone**: for a sign-out of one app only, after
    /// which the provider's session goes on and a new sign-in through it
    /// (single sign-on) is welcome. The removed session cannot come back
    /// (its id is gone; a late write of its partition is refused), so a
    /// refresh in flight writes nothing back. The entry count is read just
    /// before the removal.
    pub async fn remove_without_tombstone(&self, id: &SessionId) -> Result<Eviction, StoreError> {
        let entries = crate::store::partition_len(&*self.store, id).await?;
        let removed = self.store.remove_session(id).await;
        self.forget_views(id);
        Ok(match removed? {
            Some(_) => Eviction {
                sessions_removed: 1,
                entries_removed: entries,
                sessions: vec![id.clone()],
            },
            None => Eviction::default(),
        })
    }

    /// The subject of the sessions of provider session `(iss, sid)`, for the
    /// sign-out event of a request that names only the `sid` (read before
    /// the eviction; `None` when none is found or the store fails: the
    /// eviction itself then decides the answer).
    pub async fn subject_of(&self, iss: &str, sid: &str) -> Option<String> {
        let lookup = SessionLookup::ByProviderSession {
            iss: iss.to_string(),
            sid: sid.to_string(),
        };
        let id = self
            .store
            .find_sessions(&lookup)
            .await
            .ok()?
            .into_iter()
            .next()?;
        Some(self.store.get_session(&id).await.ok()??.sub)
    }

    /// Evicts `(iss, sid)` only if some session of this app matches it, and
    /// writes nothing otherwise (for unauthenticated front-channel requests).
    /// The check and the eviction are one step.
    pub async fn evict_if_known(&self, iss: &str, sid: &str) -> Result<Eviction, StoreError> {
        let selector = SignOutSelector::ProviderSession {
            iss: iss.to_string(),
            sid: sid.to_string(),
        };
        let request = self.request(&selector).only_if_found();
        Ok(self.run(&selector, request).await?.unwrap_or_default())
    }

    /// The eviction a back-channel logout token asks for, stored in one step
    /// with the token's replay record. `None` when the token's `jti` was
    /// recorded already (a replay): then nothing changed.
    pub(crate) async fn evict_logout(
        &self,
        logout: &LogoutRequest,
    ) -> Result<Option<Eviction>, StoreError> {
        let selector = logout.selector();
        let request = self.request(&selector).with_jti(JtiRecord::new(
            logout.iss.clone(),
            logout.jti.clone(),
            logout.replayable_until,
        ));
        self.run(&selector, request).await
    }
}

fn selector_kind(s: &SignOutSelector) -> &'static str {
    match s {
        SignOutSelector::Session(_) => "session",
        SignOutSelector::ProviderSession { .. } => "provider session",
        SignOutSelector::Subject { .. } => "subject",
    }
}

/// What a valid logout token asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogoutRequest {
    /// The issuer.
    pub iss: String,
    /// The subject, when present.
    pub sub: Option<String>,
    /// The provider session, when present.
    pub sid: Option<String>,
    /// The token's id.
    pub jti: String,
    /// Unix seconds until which the token could be replayed.
    pub replayable_until: i64,
}

impl LogoutRequest {
    /// The sessions to sign out: `(iss, sid)` when the token has a `sid`,
    /// otherwise every session of `(iss, sub)`.
    pub fn selector(&self) -> SignOutSelector {
        match (&self.sid, &self.sub) {
            (Some(sid), _) => SignOutSelector::ProviderSession {
                iss: self.iss.clone(),
                sid: sid.clone(),
            },
            (None, Some(sub)) => SignOutSelector::Subject {
                iss: self.iss.clone(),
                sub: sub.clone(),
            },
            // Validation guarantees one of them.
            (None, None) => SignOutSelector::Subject {
                iss: self.iss.clone(),
                sub: String::new(),
            },
        }
    }
}

/// Why a logout token was refused. Nothing is signed out in any of these cases.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogoutTokenError {
    /// The body carries no single `logout_token`.
    #[error("the request must carry exactly one logout_token form field")]
    Missing,
    /// The signature, header, algorithm or key check failed (§2.6 step 3 via ID-token rules).
    #[error("the logout token's signature is not valid: {0}")]
    Signature(#[from] JwsError),
    /// `typ` is present but not `logout+jwt`, or absent while required.
    #[error("the logout token's typ header must be logout+jwt")]
    Typ,
    /// A required claim is missing or has the wrong type.
    #[error("the logout token has no valid `{0}` claim")]
    MissingClaim(&'static str),
    /// `iss` is not the provider's issuer (for a multi-tenant authority: not
    /// the issuer template filled in with the token's own `tid`).
    #[error("the logout token was issued by someone else (iss)")]
    Issuer,
    /// The token's tenant (`tid`) is not one this app accepts.
    #[error("the logout token names tenant {tenant}, which this app does not accept")]
    TenantNotAllowed {
        /// The token's `tid`.
        tenant: String,
    },
    /// `aud` does not contain this client.
    #[error("the logout token is not meant for this app (aud)")]
    Audience,
    /// `iat` is in the future or too old.
    #[error("the logout token's issue time is not acceptable (iat)")]
    IssuedAt,
    /// `exp` has passed.
    #[error("the logout token has expired")]
    Expired,
    /// `events` lacks the back-channel logout event, or its value is not an object.
    #[error(
        "the logout token's events claim must contain {BACKCHANNEL_LOGOUT_EVENT} with an object value"
    )]
    Events,
    /// `nonce` is present (forbidden, so that ID tokens cannot pass as logout tokens).
    #[error("the logout token must not contain a nonce")]
    Nonce,
    /// Neither `sub` nor `sid` is present.
    #[error("the logout token must contain sub, sid or both")]
    NoSubject,
    /// The `jti` was seen before.
    #[error("the logout token was already used (jti replayed)")]
    Replayed,
}

impl LogoutTokenError {
    /// The rule the token broke, from a fixed set: `malformed_request`,
    /// `signature`, `unknown_key`, `algorithm`, `typ`, `missing_claim`,
    /// `issuer`, `tenant`, `audience`, `iat`, `expired`, `events`, `nonce`,
    /// `no_subject`, `replayed` (the `reason` label of
    /// `idweb_logout_requests_refused_total`).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "malformed_request",
            Self::Signature(JwsError::Key(_)) => "unknown_key",
            Self::Signature(JwsError::DisallowedAlgorithm(_)) => "algorithm",
            Self::Signature(_) => "signature",
            Self::Typ => "typ",
            Self::MissingClaim(_) => "missing_claim",
            Self::Issuer => "issuer",
            Self::TenantNotAllowed { .. } => "tenant",
            Self::Audience => "audience",
            Self::IssuedAt => "iat",
            Self::Expired => "expired",
            Self::Events => "events",
            Self::Nonce => "nonce",
            Self::NoSubject => "no_subject",
            Self::Replayed => "replayed",
        }
    }
}

/// Counts a logout request refused before any eviction.
pub(crate) fn count_refused(reason: &'static str) {
    count(names::LOGOUT_REFUSED, "reason", reason);
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4)
}

/// Validates a logout token (§2.6) except the replay check, which needs the store.
pub(crate) async fn validate_logout_token(
    provider: &Provider,
    client_id: &str,
    token: &str,
    policy: &LogoutTokenPolicy,
    now: i64,
) -> Result<LogoutRequest, LogoutTokenError> {
    let algs = crate::signin::id_token_algorithms(provider);
    let verified = jwt::verify(provider, token, &algs).await?;
    // `logout+jwt` (explicit typing, §2.4) always; plain `JWT` or no `typ`
    // from providers that predate it unless `require_typ`; anything else
    // (`at+jwt`, ...) is another kind of token.
    let explicit = |t: &str| {
        t.eq_ignore_ascii_case("logout+jwt") || t.eq_ignore_ascii_case("application/logout+jwt")
    };
    match verified.typ.as_deref() {
        Some(t) if explicit(t) => {}
        Some(t) if t.eq_ignore_ascii_case("jwt") && !policy.require_typ => {}
        None if !policy.require_typ => {}
        _ => return Err(LogoutTokenError::Typ),
    }
    let issuer = |iss: &str, tid: Option<&str>| provider.check_issuer(iss, tid);
    check_claims(&verified.claims, &issuer, client_id, policy, now)
}

/// Checks a token's `iss` and `tid` (the provider's rule).
pub(crate) type IssuerCheck<'a> = &'a dyn Fn(&str, Option<&str>) -> Result<(), IssuerError>;

pub(crate) fn check_claims(
    c: &Map<String, Value>,
    issuer: IssuerCheck<'_>,
    client_id: &str,
    policy: &LogoutTokenPolicy,
    now: i64,
) -> Result<LogoutRequest, LogoutTokenError> {
    let skew = secs(policy.skew);
    let iss = str_claim(c, "iss").ok_or(LogoutTokenError::MissingClaim("iss"))?;
    issuer(iss, str_claim(c, "tid")).map_err(|e| match e {
        IssuerError::TenantNotAllowed { tenant } => LogoutTokenError::TenantNotAllowed { tenant },
        _ => LogoutTokenError::Issuer,
    })?;
    let aud = audiences(c).ok_or(LogoutTokenError::MissingClaim("aud"))?;
    if !aud.contains(&client_id) {
        return Err(LogoutTokenError::Audience);
    }
    let iat = time_claim(c, "iat").ok_or(LogoutTokenError::MissingClaim("iat"))?;
    if iat > now.saturating_add(skew)
        || iat < now.saturating_sub(secs(policy.max_age).saturating_add(skew))
    {
        return Err(LogoutTokenError::IssuedAt);
    }
    let exp = match time_claim(c, "exp") {
        Some(exp) => {
            if now > exp.saturating_add(skew) {
                return Err(LogoutTokenError::Expired);
            }
            Some(exp)
        }
        None if policy.require_exp => return Err(LogoutTokenError::MissingClaim("exp")),
        None => None,
    };
    let jti = str_claim(c, "jti")
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or(LogoutTokenError::MissingClaim("jti"))?;
    let events = c
        .get("events")
        .and_then(Value::as_object)
        .ok_or(LogoutTokenError::Events)?;
    if !events
        .get(BACKCHANNEL_LOGOUT_EVENT)
        .is_some_and(Value::is_object)
    {
        return Err(LogoutTokenError::Events);
    }
    if c.contains_key("nonce") {
        return Err(LogoutTokenError::Nonce);
    }
    let nonempty = |name: &'static str| -> Result<Option<String>, LogoutTokenError> {
        match c.get(name) {
            None => Ok(None),
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 255 => Ok(Some(s.clone())),
            Some(_) => Err(LogoutTokenError::MissingClaim(name)),
        }
    };
    let sub = nonempty("sub")?;
    let sid = nonempty("sid")?;
    if sub.is_none() && sid.is_none() {
        return Err(LogoutTokenError::NoSubject);
    }
    let horizon = iat.saturating_add(secs(policy.max_age));
    Ok(LogoutRequest {
        iss: iss.to_string(),
        sub,
        sid,
        jti: jti.to_string(),
        replayable_until: exp.unwrap_or(horizon).max(horizon).saturating_add(skew),
    })
}

/// The checks of a front-channel request's `iss` and `sid`: the issuers
/// whose `(iss, sid)` it signs out, and the `sid`.
pub(crate) fn front_channel_selectors<'a>(
    provider: &Provider,
    iss: Option<&str>,
    sid: Option<&'a str>,
) -> Result<(Vec<String>, &'a str), FrontChannelError> {
    let sid = sid
        .filter(|s| !s.is_empty() && s.len() <= 255 && !s.chars().any(char::is_control))
        .ok_or(FrontChannelError::MissingSid)?;
    let issuers: Vec<String> = match iss {
        Some(iss) if provider.accepts_issuer(iss) => vec![iss.to_string()],
        Some(_) => return Err(FrontChannelError::WrongIssuer),
        None if !provider.is_multi_tenant() => vec![provider.issuer().to_string()],
        None => provider
            .allowed_tenants()
            .ok_or(FrontChannelError::UnknownTenant)?
            .filter_map(|tid| provider.issuer_for_tenant(tid))
            .collect(),
    };
    Ok((issuers, sid))
}

/// Why a back-channel logout request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackChannelError {
    /// The logout token is invalid: nothing was signed out (HTTP 400).
    #[error(transparent)]
    Invalid(#[from] LogoutTokenError),
    /// The sign-out could not be recorded (HTTP 5xx; the provider may retry).
    #[error("the sign-out could not be recorded")]
    Store(#[source] StoreError),
}

/// Why a front-channel logout request was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrontChannelError {
    /// `sid` is missing or malformed.
    #[error("the request must carry a sid")]
    MissingSid,
    /// `iss` names another issuer than this app's provider.
    #[error("the request names another issuer")]
    WrongIssuer,
    /// The provider is multi-tenant, the request has no `iss`, and the app
    /// has no allow-list of tenants: the tenant of `sid` cannot be known.
    #[error(
        "a front-channel logout with only a sid cannot name the tenant of a multi-tenant app; \
         set IDWEB_ALLOWED_TENANTS (or [AzureAd] AllowedTenants) to the tenants that may sign in"
    )]
    UnknownTenant,
    /// The sign-out could not be recorded.
    #[error("the sign-out could not be recorded")]
    Store(#[source] StoreError),
}

impl FrontChannelError {
    /// The refusal's label in `idweb_logout_requests_refused_total`
    /// (`front_channel_missing_sid`, `front_channel_wrong_issuer`,
    /// `front_channel_unknown_tenant`; `store` for a store failure).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingSid => "front_channel_missing_sid",
            Self::WrongIssuer => "front_channel_wrong_issuer",
            Self::UnknownTenant => "front_channel_unknown_tenant",
            Self::Store(_) => "store",
        }
    }
}

/// A local sign-out in progress: the session is already gone; send the
/// browser to the provider's end-session endpoint (by POSTing `params` to
/// `endpoint`, or with [`EndSessionMethod::Get`](crate::EndSessionMethod::Get)
/// by a redirect whose query carries `params` — then without `id_token_hint`,
/// so no token appears in a URL), and set the cookie
/// `state_cookie_name=state_cookie_value` (path: the sign-out callback).
#[derive(Debug)]
#[non_exhaustive]
pub struct EndSessionRequest {
    /// The provider's end-session endpoint.
    pub endpoint: url::Url,
    /// POST a form (with `id_token_hint`) or redirect with a query (without it).
    pub method: EndSessionMethod,
    /// Form parameters: `id_token_hint`, `post_logout_redirect_uri`, `state`, `client_id`.
    pub params: Vec<(&'static str, Secret)>,
    /// Name of the cookie binding `state` to this browser.
    pub state_cookie_name: &'static str,
    /// Its sealed value.
    pub state_cookie_value: Secret,
}

/// What a local sign-out did.
#[derive(Debug)]
#[non_exhaustive]
pub struct LocalSignOut {
    /// The eviction.
    pub eviction: Eviction,
    /// Where to send the browser next, when the provider has an end-session endpoint.
    pub end_session: Option<EndSessionRequest>,
    /// Whether the refresh token was revoked at the provider (RFC 7009).
    pub refresh_token_revoked: bool,
}

/// The name of the cookie holding the sign-out `state`.
pub const SIGN_OUT_STATE_COOKIE: &str = "idweb.signout";

/// The default path of the post-logout redirect URI, below the public URL
/// (the app's is [`Settings::signed_out_callback_path`](crate::config::Settings::signed_out_callback_path)).
pub const SIGN_OUT_CALLBACK_PATH: &str = crate::config::DEFAULT_SIGNED_OUT_CALLBACK_PATH;

pub(crate) const SIGN_OUT_PURPOSE: &str = "idweb signout v1";

#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct PendingSignOut {
    state: String,
    created_at: i64,
}

/// What the sign-out flows need to know of the app's settings.
#[derive(Debug, Clone)]
pub(crate) struct LogoutConfig {
    pub(crate) logout_tokens: LogoutTokenPolicy,
    pub(crate) revoke_on_sign_out: bool,
    pub(crate) end_session_method: EndSessionMethod,
    /// The post-logout redirect URI.
    pub(crate) post_logout_redirect_uri: url::Url,
}

/// The sign-out flows of the app: back-channel and front-channel logout
/// requests from the provider, and local sign-out (with refresh-token
/// revocation and the RP-initiated logout that follows). Each ends in
/// [`SignOut::evict`]; once the eviction is stored, each emits one
/// [`SignOutEvent`] to the app's listeners ([`SignOutEvents::emit`]: bounded
/// in time, never an error).
#[derive(Debug, Clone)]
pub struct LogoutHandler {
    config: LogoutConfig,
    client: Arc<ProviderClient>,
    cache: TokenCache,
    sign_out: SignOut,
    sealer: Arc<Sealer>,
    clock: Arc<dyn Clock>,
    events: SignOutEvents,
    audit: SignOutAudit,
}

impl LogoutHandler {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: LogoutConfig,
        client: Arc<ProviderClient>,
        cache: TokenCache,
        sign_out: SignOut,
        sealer: Arc<Sealer>,
        clock: Arc<dyn Clock>,
        events: SignOutEvents,
        audit: SignOutAudit,
    ) -> Self {
        Self {
            config,
            client,
            cache,
            sign_out,
            sealer,
            clock,
            events,
            audit,
        }
    }

    /// The audit trail of this app's sign-outs.
    pub fn audit(&self) -> &SignOutAudit {
        &self.audit
    }

    /// Writes the one audit event of a sign-out the store was asked to
    /// carry out (and counts it), whatever its outcome.
    fn audit_result(
        &self,
        path: SignOutPath,
        iss: &str,
        user: (Option<&str>, Option<&str>),
        result: Result<Option<&Eviction>, &StoreError>,
    ) {
        let (outcome, removed, entries) = match result {
            Ok(Some(e)) => (
                AuditOutcome::SignedOut,
                e.sessions_removed,
                e.entries_removed,
            ),
            Ok(None) => (AuditOutcome::Replayed, 0, 0),
            Err(_) => (AuditOutcome::Error, 0, 0),
        };
        self.audit.record(
            &AuditRecord::new(path, iss, outcome)
                .with_user(user.0, user.1)
                .with_sessions_removed(removed)
                .with_entries_removed(entries),
        );
    }

    /// The app's sign-out listeners and the bus to the other instances.
    pub fn events(&self) -> &SignOutEvents {
        &self.events
    }

    /// Emits the event of a stored eviction: the subject and `sid` named by
    /// the request, else those of the removed sessions.
    async fn emit(
        &self,
        path: SignOutPath,
        iss: &str,
        sub: Option<&str>,
        sid: Option<&str>,
        eviction: &Eviction,
    ) {
        let event = SignOutEvent::new(path, iss, self.clock.unix_now())
            .with_sub(sub.map(str::to_string))
            .with_sid(sid.map(str::to_string))
            .with_sessions(&eviction.sessions)
            .with_entries_removed(eviction.entries_removed);
        self.events.emit(event).await;
    }

    /// An operator's sign-out (the app's own admin action): evicts what
    /// `selector` names, exactly as the other paths do, then emits a
    /// [`SignOutPath::Operator`] event.
    ///
    /// # Errors
    /// The store's error; nothing is emitted then.
    pub async fn operator_sign_out(
        &self,
        selector: &SignOutSelector,
    ) -> Result<Eviction, StoreError> {
        let subject = match selector {
            SignOutSelector::ProviderSession { iss, sid } => {
                self.sign_out.subject_of(iss, sid).await
            }
            SignOutSelector::Session(id) => match self.sign_out.store.get_session(id).await {
                Ok(Some(s)) => Some(s.sub),
                _ => None,
            },
            SignOutSelector::Subject { sub, .. } => Some(sub.clone()),
        };
        let result = self.sign_out.evict(selector).await;
        let (iss, sid) = match selector {
            SignOutSelector::ProviderSession { iss, sid } => (iss.as_str(), Some(sid.as_str())),
            SignOutSelector::Subject { iss, .. } => (iss.as_str(), None),
            SignOutSelector::Session(_) => (self.provider().issuer(), None),
        };
        self.audit_result(
            SignOutPath::Operator,
            iss,
            (subject.as_deref(), sid),
            result.as_ref().map(Some),
        );
        let eviction = result?;
        self.emit(
            SignOutPath::Operator,
            iss,
            subject.as_deref(),
            sid,
            &eviction,
        )
        .await;
        Ok(eviction)
    }

    fn provider(&self) -> &Provider {
        self.client.provider()
    }

    /// The eviction service underneath.
    pub fn sign_out(&self) -> &SignOut {
        &self.sign_out
    }

    /// Back-channel logout: validates `logout_token` (§2.6), refuses a
    /// replayed `jti`, then evicts `(iss, sid)` — or every session of
    /// `(iss, sub)` when the token has no `sid`. Success means the
    /// eviction is stored (also when nothing matched).
    pub async fn back_channel_logout(
        &self,
        logout_token: &str,
    ) -> Result<Eviction, BackChannelError> {
        let now = self.clock.unix_now();
        let request = match validate_logout_token(
            self.provider(),
            self.client.client_id(),
            logout_token,
            &self.config.logout_tokens,
            now,
        )
        .await
        {
            Ok(r) => r,
            Err(e) => {
                count_refused(e.reason());
                return Err(e.into());
            }
        };
        // The replay check, the replay record, the tombstone and the
        // removals are one store step: a failure (or a crash) leaves none of
        // it, or — on stores that do it in order — a state the provider's
        // retry of this same token completes.
        let subject = match (&request.sub, &request.sid) {
            (None, Some(sid)) => self.sign_out.subject_of(&request.iss, sid).await,
            _ => None,
        };
        let result = self.sign_out.evict_logout(&request).await;
        let sub = request.sub.as_deref().or(subject.as_deref());
        self.audit_result(
            SignOutPath::BackChannel,
            &request.iss,
            (sub, request.sid.as_deref()),
            result.as_ref().map(Option::as_ref),
        );
        let Some(eviction) = result.map_err(BackChannelError::Store)? else {
            metrics::counter!(names::JTI_REPLAYS).increment(1);
            count_refused(LogoutTokenError::Replayed.reason());
            return Err(LogoutTokenError::Replayed.into());
        };
        self.emit(
            SignOutPath::BackChannel,
            &request.iss,
            sub,
            request.sid.as_deref(),
            &eviction,
        )
        .await;
        Ok(eviction)
    }

    /// Front-channel logout (`GET ...?iss=&sid=`): evicts `(iss, sid)` if
    /// sessions of this app match it, and changes nothing otherwise.
    /// Without `iss` (Microsoft Entra sends only `sid`) the app's one
    /// provider is assumed; for a multi-tenant authority, `(issuer of T,
    /// sid)` for each tenant `T` of the allow-list (without an allow-list,
    /// [`FrontChannelError::UnknownTenant`]). With `iss`, it must be the
    /// issuer, or for a multi-tenant authority the issuer of an accepted tenant.
    pub async fn front_channel_logout(
        &self,
        iss: Option<&str>,
        sid: Option<&str>,
    ) -> Result<Eviction, FrontChannelError> {
        let result = self.front_channel(iss, sid).await;
        if let Err(e) = &result
            && !matches!(e, FrontChannelError::Store(_))
        {
            count_refused(e.reason());
        }
        result
    }

    async fn front_channel(
        &self,
        iss: Option<&str>,
        sid: Option<&str>,
    ) -> Result<Eviction, FrontChannelError> {
        let (issuers, sid) = front_channel_selectors(self.provider(), iss, sid)?;
        let mut total = Eviction::default();
        for issuer in &issuers {
            let subject = self.sign_out.subject_of(issuer, sid).await;
            let result = self.sign_out.evict_if_known(issuer, sid).await;
            // An unknown `sid` changes nothing, so it is no sign-out to
            // announce or audit (and an unauthenticated request must not
            // fill the audit trail): it is only counted.
            match &result {
                Ok(e) if e.sessions_removed == 0 => {
                    metrics::counter!(names::SIGN_OUTS, "path" => "front_channel", "outcome" => "no_match")
                        .increment(1);
                }
                r => self.audit_result(
                    SignOutPath::FrontChannel,
                    issuer,
                    (subject.as_deref(), Some(sid)),
                    r.as_ref().map(Some),
                ),
            }
            let eviction = result.map_err(FrontChannelError::Store)?;
            if eviction.sessions_removed > 0 {
                self.emit(
                    SignOutPath::FrontChannel,
                    issuer,
                    subject.as_deref(),
                    Some(sid),
                    &eviction,
                )
                .await;
            }
            total.sessions_removed += eviction.sessions_removed;
            total.entries_removed += eviction.entries_removed;
            total.sessions.extend(eviction.sessions);
        }
        Ok(total)
    }

    /// Local sign-out of `session` (or, with `everywhere`, of every session
    /// of its user in this app): revokes the refresh token at the provider
    /// when configured and possible, evicts, and prepares the
    /// RP-initiated logout at the provider.
    pub async fn local_sign_out(
        &self,
        session: &Session,
        everywhere: bool,
    ) -> Result<LocalSignOut, StoreError> {
        self.sign_out_session(session, everywhere, true).await
    }

    /// Sign-out of `session` in this app only ([`SignOutPath::Local`]):
    /// revokes the refresh token when configured and possible, and evicts
    /// the session with every token of it, as [`local_sign_out`](Self::local_sign_out)
    /// does; but the user stays signed in at the provider (and in other
    /// apps): [`LocalSignOut::end_session`] is `None`, no tombstone is
    /// recorded ([`SignOut::remove_without_tombstone`]), and the next
    /// sign-in may be silent.
    pub async fn app_only_sign_out(&self, session: &Session) -> Result<LocalSignOut, StoreError> {
        self.sign_out_session(session, false, false).await
    }

    async fn sign_out_session(
        &self,
        session: &Session,
        everywhere: bool,
        at_provider: bool,
    ) -> Result<LocalSignOut, StoreError> {
        let key = PartitionKey::Session(session.id.clone());
        let refresh_token = if self.config.revoke_on_sign_out
            && self.provider().metadata().revocation_endpoint.is_some()
        {
            self.cache.read_credentials(&key).await.ok().and_then(|p| {
                p.entries
                    .iter()
                    .find(|e| e.kind() == EntryKind::RefreshToken)
                    .and_then(|e| e.secret().map(Secret::new))
            })
        } else {
            None
        };
        let selector = if everywhere {
            SignOutSelector::Subject {
                iss: session.iss.clone(),
                sub: session.sub.clone(),
            }
        } else {
            SignOutSelector::Session(session.id.clone())
        };
        let result = if everywhere || at_provider {
            self.sign_out.evict(&selector).await
        } else {
            // This app only: the provider's session goes on, so it gets no
            // tombstone (a sign-in through it later is single sign-on).
            self.sign_out.remove_without_tombstone(&session.id).await
        };
        let to_provider = at_provider && self.provider().metadata().end_session_endpoint.is_some();
        let path = if everywhere {
            SignOutPath::AllSessions
        } else if to_provider {
            SignOutPath::RpInitiated
        } else {
            SignOutPath::Local
        };
        self.audit_result(
            path,
            &session.iss,
            (Some(&session.sub), session.sid.as_deref()),
            result.as_ref().map(Some),
        );
        let eviction = result?;
        self.emit(
            path,
            &session.iss,
            Some(&session.sub),
            session.sid.as_deref(),
            &eviction,
        )
        .await;
        let refresh_token_revoked = match refresh_token {
            Some(rt) => self.revoke(&rt).await,
            None => false,
        };
        let end_session = self
            .provider()
            .metadata()
            .end_session_endpoint
            .as_ref()
            .filter(|_| at_provider)
            .and_then(|e| {
                let endpoint = url::Url::parse(e).ok()?;
                let state = random_token();
                let pending = PendingSignOut {
                    state: state.clone(),
                    created_at: self.clock.unix_now(),
                };
                let json = serde_json::to_vec(&pending).ok()?;
                let post_logout = &self.config.post_logout_redirect_uri;
                let by_get = self.config.end_session_method == EndSessionMethod::Get;
                let mut params = vec![
                    (
                        "post_logout_redirect_uri",
                        Secret::new(post_logout.as_str()),
                    ),
                    ("state", Secret::new(state)),
                    ("client_id", Secret::new(self.client.client_id())),
                ];
                if !by_get {
                    // Never in a URL: only sent in a POSTed form.
                    params.insert(0, ("id_token_hint", session.id_token.clone()));
                }
                // Entra's optional `login_hint` claim names the account, so
                // the provider signs out that one without an account picker.
                if let Some(hint) = session
                    .id_token_claims()
                    .get("login_hint")
                    .and_then(Value::as_str)
                    .filter(|h| !h.is_empty() && h.len() <= 2048)
                {
                    params.push(("logout_hint", Secret::new(hint)));
                }
                Some(EndSessionRequest {
                    endpoint,
                    method: self.config.end_session_method,
                    params,
                    state_cookie_name: SIGN_OUT_STATE_COOKIE,
                    state_cookie_value: Secret::new(self.sealer.seal(SIGN_OUT_PURPOSE, &json)),
                })
            });
        Ok(LocalSignOut {
            eviction,
            end_session,
            refresh_token_revoked,
        })
    }

    /// Checks the `state` the provider sent back to the post-logout
    /// redirect URI against the browser's sign-out cookie.
    pub fn complete_sign_out(&self, cookie: Option<&str>, state: Option<&str>) -> bool {
        let Some(pending) = cookie
            .and_then(|c| self.sealer.open(SIGN_OUT_PURPOSE, c))
            .and_then(|json| serde_json::from_slice::<PendingSignOut>(&json).ok())
        else {
            return false;
        };
        let fresh = self.clock.unix_now() <= pending.created_at.saturating_add(600);
        fresh && state.is_some_and(|s| constant_time_eq(s.as_bytes(), pending.state.as_bytes()))
    }

    /// RFC 7009 revocation of a refresh token; `true` when the provider accepted it.
    async fn revoke(&self, refresh_token: &Secret) -> bool {
        let Some(endpoint) = &self.provider().metadata().revocation_endpoint else {
            return false;
        };
        let form = vec![
            ("token", refresh_token.secret()),
            ("token_type_hint", "refresh_token"),
        ];
        match self.client.authenticated_post(endpoint, form).await {
            Ok(resp) if resp.status().is_success() => true,
            Ok(resp) => {
                tracing::warn!(
                    status = resp.status().as_u16(),
                    "the provider refused to revoke the refresh token"
                );
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach the revocation endpoint");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ISS: &str = "https://idp.example.com";
    const NOW: i64 = 1_800_000_000;

    fn fixed(iss: &str, _tid: Option<&str>) -> Result<(), IssuerError> {
        if iss == ISS {
            Ok(())
        } else {
            Err(IssuerError::Mismatch)
        }
    }

    fn good() -> Value {
        json!({
            "iss": ISS, "aud": "app", "iat": NOW, "exp": NOW + 120, "jti": "j1",
            "events": { BACKCHANNEL_LOGOUT_EVENT: {} }, "sub": "alice", "sid": "s1"
        })
    }

    fn check(v: Value) -> Result<LogoutRequest, LogoutTokenError> {
        let Value::Object(m) = v else { panic!() };
        check_claims(&m, &fixed, "app", &LogoutTokenPolicy::default(), NOW)
    }

    fn without(field: &str) -> Value {
        let mut v = good();
        v.as_object_mut().unwrap().remove(field);
        v
    }

    fn with(field: &str, value: Value) -> Value {
        let mut v = good();
        v.as_object_mut().unwrap().insert(field.into(), value);
        v
    }

    #[test]
    fn a_good_token_selects_the_provider_session_or_the_subject() {
        let r = check(good()).unwrap();
        assert_eq!(
            r.selector(),
            SignOutSelector::ProviderSession {
                iss: ISS.into(),
                sid: "s1".into()
            }
        );
        let r = check(without("sid")).unwrap();
        assert_eq!(
            r.selector(),
            SignOutSelector::Subject {
                iss: ISS.into(),
                sub: "alice".into()
            }
        );
        assert!(r.replayable_until >= NOW + 600);
    }

    #[test]
    fn each_claim_rule_is_enforced() {
        use LogoutTokenError as E;
        type Check = fn(&E) -> bool;
        let cases: Vec<(Value, Check)> = vec![
            (with("iss", json!("https://evil.example.com")), |e| {
                matches!(e, E::Issuer)
            }),
            (without("iss"), |e| matches!(e, E::MissingClaim("iss"))),
            (with("aud", json!("other")), |e| matches!(e, E::Audience)),
            (with("aud", json!(["other", "app"])), |_| false),
            (without("iat"), |e| matches!(e, E::MissingClaim("iat"))),
            (with("iat", json!(NOW - 2000)), |e| matches!(e, E::IssuedAt)),
            (with("iat", json!(NOW + 1000)), |e| matches!(e, E::IssuedAt)),
            (without("exp"), |e| matches!(e, E::MissingClaim("exp"))),
            (with("exp", json!(NOW - 400)), |e| matches!(e, E::Expired)),
            (without("jti"), |e| matches!(e, E::MissingClaim("jti"))),
            (with("jti", json!(7)), |e| {
                matches!(e, E::MissingClaim("jti"))
            }),
            (without("events"), |e| matches!(e, E::Events)),
            (
                with("events", json!({ BACKCHANNEL_LOGOUT_EVENT: "yes" })),
                |e| matches!(e, E::Events),
            ),
            (with("events", json!({ "http://other/event": {} })), |e| {
                matches!(e, E::Events)
            }),
            (with("nonce", json!("n")), |e| matches!(e, E::Nonce)),
            (with("sub", json!(42)), |e| {
                matches!(e, E::MissingClaim("sub"))
            }),
        ];
        for (i, (token, expected)) in cases.into_iter().enumerate() {
            match check(token) {
                Ok(_) if i == 3 => {} // an array audience containing us is fine
                Ok(r) => panic!("case {i} accepted: {r:?}"),
                Err(e) => assert!(expected(&e), "case {i}: unexpected {e:?}"),
            }
        }
        let mut neither = good();
        neither.as_object_mut().unwrap().remove("sub");
        neither.as_object_mut().unwrap().remove("sid");
        assert!(matches!(check(neither), Err(E::NoSubject)));
    }

    #[test]
    fn lenient_policy_accepts_tokens_without_exp() {
        let Value::Object(m) = without("exp") else {
            panic!()
        };
        let policy = LogoutTokenPolicy {
            require_exp: false,
            ..LogoutTokenPolicy::default()
        };
        assert!(check_claims(&m, &fixed, "app", &policy, NOW).is_ok());
    }
}
