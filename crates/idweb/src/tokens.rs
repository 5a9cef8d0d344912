//! Token acquisition: access tokens for the signed-in user (from the cache,
//! else by redeeming the refresh token, one redemption per partition at a
//! time) and for the app itself (client credentials).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use crate::cache::{
    AccessTokenEntry, CacheEntry, EntryKind, account_identity, entries_from_token_response,
    msal_environment, msal_realm, msal_target,
};
use crate::client::{ProviderClient, TokenRequestError, TokenSet};
use crate::http::HttpError;
use crate::observe::{count, counter, names};
use crate::provider::Provider;
use crate::secret::Secret;
use crate::session::Session;
use crate::store::{PartitionKey, Store, StoreError};
use crate::time::Clock;
use crate::token_cache::TokenCache;

/// How long a refresh lock lasts at most (a crashed holder frees it then).
const REFRESH_LOCK_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a caller waits for another instance's refresh.
const REFRESH_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// Tokens must stay valid at least this long to be served from the cache.
pub const MIN_REMAINING_SECS: i64 = 300;

/// OAuth error codes that mean: the user has to come back through the provider.
const UI_REQUIRED_ERRORS: &[&str] = &[
    "invalid_grant",
    "interaction_required",
    "login_required",
    "consent_required",
    "invalid_scope",
];

/// An access token and what it is good for.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AccessToken {
    /// The token.
    pub secret: Secret,
    /// Unix seconds when it expires.
    pub expires_at: i64,
    /// The scopes it was granted for (shared by the hits of one cached
    /// token: a hit copies no scope).
    pub scopes: Arc<[String]>,
}

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The user must go through the provider again (sign in, consent, or
    /// satisfy a claims challenge). Web frameworks turn this into a challenge.
    #[error("the user must sign in again or consent (scopes: {})", scopes.join(" "))]
    UiRequired {
        /// The scopes to ask for.
        scopes: Vec<String>,
        /// A claims challenge to pass to the provider, if any (JSON).
        claims: Option<String>,
    },
    /// The session was signed out while the token was being acquired.
    #[error("the session was signed out")]
    SignedOut,
    /// The store failed.
    #[error("the token cache is unavailable")]
    Store(#[source] StoreError),
    /// The provider could not be reached or answered nonsense.
    #[error("cannot reach the identity provider")]
    Provider(#[source] HttpError),
    /// The provider refused the request for a reason the user cannot fix.
    #[error("the identity provider refused the token request: {error}")]
    Rejected {
        /// The OAuth error code.
        error: String,
        /// The provider's description.
        description: Option<String>,
    },
    /// Another instance was redeeming the refresh token of this partition
    /// and did not finish in time (it may have crashed; its lock expires).
    #[error("timed out waiting for another instance's token refresh")]
    RefreshWaitTimedOut,
}

impl From<StoreError> for TokenError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::SignedOut => TokenError::SignedOut,
            other => TokenError::Store(other),
        }
    }
}

/// Whether an OAuth error code means the user must interact.
pub(crate) fn needs_ui(error: &str) -> bool {
    UI_REQUIRED_ERRORS.contains(&error)
}

/// Lower-cased scope set of a space-separated list.
pub(crate) fn scope_set(scopes: &str) -> BTreeSet<String> {
    scopes
        .split_whitespace()
        .map(str::to_ascii_lowercase)
        .collect()
}

/// The cached access token in `entries` for `client_id` covering `wanted`
/// and valid for at least [`MIN_REMAINING_SECS`] after `now`.
pub(crate) fn usable_access_token(
    entries: &[CacheEntry],
    client_id: &str,
    wanted: &BTreeSet<String>,
    now: i64,
) -> Option<AccessToken> {
    entries
        .iter()
        .filter(|e| e.kind() == EntryKind::AccessToken)
        .filter(|e| {
            e.client_id()
                .is_some_and(|c| c.eq_ignore_ascii_case(client_id))
        })
        .filter_map(|e| {
            let expires = e.expires_on()?;
            let target = scope_set(e.target().unwrap_or_default());
            (expires > now + MIN_REMAINING_SECS && wanted.is_subset(&target)).then(|| AccessToken {
                secret: Secret::new(e.secret().unwrap_or_default()),
                expires_at: expires,
                scopes: target.into_iter().collect(),
            })
        })
        .max_by_key(|t| t.expires_at)
}

/// The refresh token in `entries` for `client_id`.
pub(crate) fn refresh_token(entries: &[CacheEntry], client_id: &str) -> Option<Secret> {
    entries
        .iter()
        .filter(|e| e.kind() == EntryKind::RefreshToken)
        .find(|e| {
            e.client_id()
                .is_some_and(|c| c.eq_ignore_ascii_case(client_id))
        })
        .and_then(|e| e.secret().map(Secret::new))
}

/// One async mutex per partition, so that one refresh is in flight per
/// partition in this process; entries are dropped when nobody holds them.
#[derive(Debug, Default)]
pub(crate) struct SingleFlight {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl SingleFlight {
    /// Runs `f` while holding the lock of `key`.
    pub(crate) async fn run<T, F: Future<Output = T>>(&self, key: &str, f: F) -> T {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(key.to_string()).or_default().clone()
        };
        let out = {
            let _guard = match lock.try_lock() {
                Ok(guard) => guard,
                Err(_) => {
                    count(names::REFRESH_WAITS, "scope", "process");
                    lock.lock().await
                }
            };
            f.await
        };
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        // Two references: ours and the map's — nobody else waits.
        if Arc::strong_count(&lock) == 2 {
            locks.remove(key);
        }
        out
    }

    /// Locks currently tracked (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.locks.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Scopes MSAL adds to every user token request; kept when they were configured at sign-in.
const RESERVED: &[&str] = &["openid", "profile", "offline_access"];

impl From<TokenRequestError> for TokenError {
    fn from(e: TokenRequestError) -> Self {
        match e {
            TokenRequestError::Rejected { error, description } => {
                TokenError::Rejected { error, description }
            }
            TokenRequestError::Http(h) => TokenError::Provider(h),
        }
    }
}

/// Token acquisition: access tokens for the signed-in user from the
/// session's cache partition, else by redeeming its refresh token (one
/// redemption per partition at a time, across instances), and for the app
/// itself (client credentials).
#[derive(Debug)]
pub struct TokenAcquirer {
    client: Arc<ProviderClient>,
    cache: TokenCache,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// The scopes configured for sign-in (MSAL's reserved ones among them are
    /// asked for again on refresh).
    sign_in_scopes: Vec<String>,
    single_flight: SingleFlight,
    /// `idweb_token_requests_total{result="hit"}`, registered once: the
    /// hit path increments it and does nothing else for metrics.
    hits: metrics::Counter,
}

impl TokenAcquirer {
    pub(crate) fn new(
        client: Arc<ProviderClient>,
        cache: TokenCache,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        sign_in_scopes: Vec<String>,
    ) -> Self {
        Self {
            client,
            cache,
            store,
            clock,
            sign_in_scopes,
            single_flight: SingleFlight::default(),
            hits: counter(names::TOKEN_REQUESTS, "result", "hit"),
        }
    }

    fn client_id(&self) -> &str {
        self.client.client_id()
    }

    fn provider(&self) -> &Provider {
        self.client.provider()
    }

    /// A token request with this app's client authentication.
    async fn request_tokens(
        &self,
        form: Vec<(&str, &str)>,
        now: i64,
    ) -> Result<TokenSet, TokenRequestError> {
        self.client.token_request(form, now).await
    }

    /// The hot path: the cached access token of `key` covering `scopes` and
    /// valid for at least [`MIN_REMAINING_SECS`], from the partition's
    /// decoded view (one version check against the store; no decryption
    /// unless the partition changed). `read_along` is the partition version
    /// read with the session in this request, if any (see
    /// [`TokenCache::access_tokens`]).
    async fn cached_token(
        &self,
        key: &PartitionKey,
        scopes: &[&str],
        read_along: Option<Option<u64>>,
    ) -> Result<Option<AccessToken>, StoreError> {
        let Some(view) = self
            .cache
            .access_tokens(key, self.client_id(), read_along)
            .await?
        else {
            return Ok(None);
        };
        let now = self.clock.unix_now();
        Ok(view
            .tokens
            .iter()
            .filter(|t| t.expires_at > now + MIN_REMAINING_SECS && t.covers(scopes))
            .max_by_key(|t| t.expires_at)
            .map(|t| AccessToken {
                secret: t.secret.clone(),
                expires_at: t.expires_at,
                scopes: t.scopes.clone(),
            }))
    }

    /// An access token for the signed-in user with at least `scopes`,
    /// valid for at least five more minutes.
    ///
    /// From the session's cache partition when possible; otherwise the
    /// refresh token is redeemed — one redemption per partition at a time
    /// in this process, concurrent callers wait and reuse its result — and
    /// the new tokens (with the rotated refresh token) are stored
    /// atomically. Without a usable refresh token, or when the provider
    /// answers `invalid_grant` / `interaction_required`, the result is
    /// [`TokenError::UiRequired`].
    ///
    /// The cache is checked against the store's current partition version,
    /// except for the first lookup right after the session was read (within
    /// 100 ms) by a store that read that version with it
    /// ([`Store::get_session_and_partition_version`]): that lookup is
    /// answered from the session's snapshot, as the rest of its request is.
    pub async fn token_for_user(
        &self,
        session: &Session,
        scopes: &[&str],
    ) -> Result<AccessToken, TokenError> {
        let key = PartitionKey::Session(session.id.clone());
        let read_along = session.partition_read.as_ref().and_then(|r| r.take());
        match self.cached_token(&key, scopes, read_along).await {
            Ok(Some(t)) => {
                self.hits.increment(1);
                return Ok(t);
            }
            Ok(None) => {}
            Err(e) => {
                count(names::TOKEN_REQUESTS, "result", "error");
                return Err(e.into());
            }
        }
        // The refresh is a large state machine (HTTP to the provider, the
        // lock, the write): boxed, so that a hit's future stays small (axum
        // boxes every handler's future, copying it whole).
        Box::pin(self.token_by_refresh(session, &key, scopes)).await
    }

    async fn token_by_refresh(
        &self,
        session: &Session,
        key: &PartitionKey,
        scopes: &[&str],
    ) -> Result<AccessToken, TokenError> {
        let wanted: BTreeSet<String> = scopes.iter().map(|s| s.to_ascii_lowercase()).collect();
        let result = self
            .single_flight
            .run(
                &key.storage_key(),
                self.refresh_across_instances(session, key, scopes, &wanted),
            )
            .await;
        let label = match &result {
            Ok(_) => "refresh",
            Err(TokenError::UiRequired { .. }) => "ui_required",
            Err(TokenError::SignedOut) => "signed_out",
            Err(_) => "refresh_failed",
        };
        count(names::TOKEN_REQUESTS, "result", label);
        result
    }

    /// Takes the store's refresh lock of the partition (so that one
    /// instance redeems the refresh token while the others wait and reuse
    /// its result), then refreshes.
    async fn refresh_across_instances(
        &self,
        session: &Session,
        key: &PartitionKey,
        scopes: &[&str],
        wanted: &BTreeSet<String>,
    ) -> Result<AccessToken, TokenError> {
        let name = format!("refresh/{}", key.storage_key());
        let deadline = tokio::time::Instant::now() + REFRESH_LOCK_WAIT;
        let mut waited = false;
        let token = loop {
            if let Some(token) = self.store.try_lock(&name, REFRESH_LOCK_TTL).await? {
                break token;
            }
            if !waited {
                waited = true;
                count(names::REFRESH_WAITS, "scope", "store");
            }
            // Another instance is refreshing: wait for its result.
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            if let Some(t) = self.cached_token(key, scopes, None).await? {
                return Ok(t);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(TokenError::RefreshWaitTimedOut);
            }
        };
        let result = self.refresh_for_user(session, key, scopes, wanted).await;
        if let Err(e) = self.store.unlock(&name, &token).await {
            tracing::warn!(error = %e, "could not release the refresh lock; it expires by itself");
        }
        result
    }

    async fn refresh_for_user(
        &self,
        session: &Session,
        key: &PartitionKey,
        scopes: &[&str],
        wanted: &BTreeSet<String>,
    ) -> Result<AccessToken, TokenError> {
        let ui_required = || TokenError::UiRequired {
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            claims: None,
        };
        // Another caller may have refreshed while we waited.
        let cached = self.cache.read_credentials(key).await?;
        let now = self.clock.unix_now();
        if let Some(t) = usable_access_token(&cached.entries, self.client_id(), wanted, now) {
            return Ok(t);
        }
        if self.store.get_session(&session.id).await?.is_none() {
            return Err(TokenError::SignedOut);
        }
        let Some(rt) = refresh_token(&cached.entries, self.client_id()) else {
            return Err(ui_required());
        };
        let mut ask: Vec<&str> = scopes.to_vec();
        for r in RESERVED {
            if self.sign_in_scopes.iter().any(|s| s == r) && !ask.contains(r) {
                ask.push(r);
            }
        }
        let scope = ask.join(" ");
        let form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", rt.secret()),
            ("scope", scope.as_str()),
        ];
        let tokens = match self.request_tokens(form, now).await {
            Ok(t) => t,
            Err(TokenRequestError::Rejected { error, description }) if needs_ui(&error) => {
                tracing::info!(%error, "refresh token refused; the user must sign in again");
                let _ = description;
                // The dead refresh token goes, so the next request does not try it again.
                let dead: Vec<String> = cached
                    .entries
                    .iter()
                    .filter(|e| e.kind() == EntryKind::RefreshToken)
                    .map(CacheEntry::cache_key)
                    .collect();
                let _ = self.cache.write(key, &[], &dead, None).await;
                return Err(ui_required());
            }
            Err(e) => return Err(e.into()),
        };
        let entries = self.entries_for_refresh(session, &tokens, &scope, now);
        // Conditional on the version we read: a concurrent sign-out makes
        // this fail (SignedOut) instead of writing the tokens back.
        match self
            .cache
            .write(key, &entries, &[], Some(cached.version))
            .await
        {
            Ok(_) => {}
            Err(StoreError::Conflict { .. }) => {
                // Someone else wrote meanwhile (another instance); prefer theirs if usable.
                let again = self.cache.read_credentials(key).await?;
                if let Some(t) = usable_access_token(
                    &again.entries,
                    self.client_id(),
                    wanted,
                    self.clock.unix_now(),
                ) {
                    return Ok(t);
                }
                self.cache
                    .write(key, &entries, &[], Some(again.version))
                    .await?;
            }
            Err(e) => return Err(e.into()),
        }
        let granted = tokens.scope.clone().unwrap_or(scope);
        Ok(AccessToken {
            secret: tokens.access_token,
            expires_at: tokens.expires_at.unwrap_or(now + 3600),
            scopes: scope_set(&granted).into_iter().collect(),
        })
    }

    fn entries_for_refresh(
        &self,
        session: &Session,
        tokens: &TokenSet,
        scope: &str,
        now: i64,
    ) -> Vec<CacheEntry> {
        let granted = tokens.scope.as_deref().unwrap_or(scope);
        let claims = serde_json::Map::from_iter([(
            "sub".to_string(),
            serde_json::Value::String(session.sub.clone()),
        )]);
        let mut identity = account_identity(
            &session.iss,
            &self.provider().metadata().token_endpoint,
            &claims,
            tokens.client_info.as_deref(),
        );
        identity.home_account_id = session.account_id.clone();
        let parts = tokens
            .response_parts(
                self.client_id(),
                granted,
                tokens.id_token.as_ref().map(Secret::secret),
                "refresh_token",
                now,
            )
            .without_account();
        entries_from_token_response(&identity, &parts)
    }

    /// An access token for the app itself (client credentials), cached in
    /// a partition of its own per client, tenant and audience.
    pub async fn token_for_app(&self, scopes: &[&str]) -> Result<AccessToken, TokenError> {
        let issuer = self.provider().issuer();
        let target = msal_target(&scopes.join(" "));
        let key = PartitionKey::App {
            client_id: self.client_id().to_string(),
            tenant: msal_realm(&self.provider().metadata().token_endpoint),
            audience: audience_of(scopes),
        };
        if let Some(t) = self.cached_token(&key, scopes, None).await? {
            return Ok(t);
        }
        let wanted: BTreeSet<String> = scopes.iter().map(|s| s.to_ascii_lowercase()).collect();
        self.single_flight
            .run(&key.storage_key(), async {
                let cached = self.cache.read_credentials(&key).await?;
                let now = self.clock.unix_now();
                if let Some(t) =
                    usable_access_token(&cached.entries, self.client_id(), &wanted, now)
                {
                    return Ok(t);
                }
                let scope = scopes.join(" ");
                let form = vec![
                    ("grant_type", "client_credentials"),
                    ("scope", scope.as_str()),
                ];
                let tokens = self.request_tokens(form, now).await?;
                let expires_at = tokens.expires_at.unwrap_or(now + 3600);
                let entry = CacheEntry::AccessToken(AccessTokenEntry {
                    home_account_id: None,
                    environment: msal_environment(issuer),
                    client_id: self.client_id().to_string(),
                    realm: msal_realm(&self.provider().metadata().token_endpoint),
                    target: target.clone(),
                    secret: tokens.access_token.clone(),
                    token_type: Some("Bearer".into()),
                    cached_at: Some(now),
                    expires_on: expires_at,
                    extended_expires_on: Some(expires_at),
                    refresh_on: None,
                    key_id: None,
                    ext_cache_key: None,
                    extra: serde_json::Map::new(),
                });
                // Replace older app tokens of this audience.
                let stale: Vec<String> = cached.entries.iter().map(CacheEntry::cache_key).collect();
                self.cache.write(&key, &[entry], &stale, None).await?;
                Ok(AccessToken {
                    secret: tokens.access_token,
                    expires_at,
                    scopes: scope_set(&target).into_iter().collect(),
                })
            })
            .await
    }

    /// Removes an access token from the session's cache (after an API refused it).
    pub(crate) async fn discard_access_token(
        &self,
        session: &Session,
        token: &AccessToken,
    ) -> Result<(), TokenError> {
        let key = PartitionKey::Session(session.id.clone());
        let cached = self.cache.read_credentials(&key).await?;
        let stale: Vec<String> = cached
            .entries
            .iter()
            .filter(|e| {
                e.kind() == EntryKind::AccessToken && e.secret() == Some(token.secret.secret())
            })
            .map(CacheEntry::cache_key)
            .collect();
        if !stale.is_empty() {
            self.cache.write(&key, &[], &stale, None).await?;
        }
        Ok(())
    }
}

/// The resource of a set of scopes: `api://todo/read` → `api://todo`,
/// `https://graph.microsoft.com/.default` → `https://graph.microsoft.com`.
fn audience_of(scopes: &[&str]) -> String {
    let mut resources: Vec<String> = scopes
        .iter()
        .map(|s| match s.rfind('/') {
            Some(i) if s.contains("://") && i > s.find("://").unwrap_or(0) + 2 => {
                s[..i].to_string()
            }
            _ => s.to_string(),
        })
        .collect();
    resources.sort();
    resources.dedup();
    resources.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn single_flight_serialises_per_key_and_cleans_up() {
        let sf = Arc::new(SingleFlight::default());
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let max = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (sf, running, max) = (sf.clone(), running.clone(), max.clone());
            tasks.push(tokio::spawn(async move {
                sf.run("p", async {
                    let now = running.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    max.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                })
                .await
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(max.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(sf.len(), 0);
    }

    #[test]
    fn scope_sets_ignore_case_and_order() {
        assert!(scope_set("B a").is_subset(&scope_set("a b c")));
        assert!(!scope_set("a d").is_subset(&scope_set("a b c")));
    }

    #[test]
    fn audiences_of_scopes() {
        assert_eq!(
            audience_of(&["api://todo/read", "api://todo/write"]),
            "api://todo"
        );
        assert_eq!(
            audience_of(&["https://graph.microsoft.com/.default"]),
            "https://graph.microsoft.com"
        );
        assert_eq!(audience_of(&["User.Read"]), "User.Read");
    }
}
