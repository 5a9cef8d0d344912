//! [`RelyingParty`]: the web app's side of OpenID Connect, without any web framework.

use std::sync::Arc;
use std::time::Duration;

use crate::cache::{account_identity, entries_from_token_response};
use crate::config::Settings;
use crate::crypto::Sealer;
use crate::http::default_client;
use crate::jwt::str_claim;
use crate::provider::{Provider, ProviderError};
use crate::secret::{Secret, constant_time_eq};
use crate::session::{Session, SessionId};
use crate::signin::{
    CallbackParams, IdTokenExpectations, PENDING_PURPOSE, Pending, SIGN_IN_TIMEOUT, SignInError,
    SignInOptions, SignInRequest, TokenSet, authorization_request, pending_cookie_name,
    redeem_code, same_origin_path, validate_id_token,
};
use crate::signout::SignOut;
use crate::store::PartitionKey;
use crate::store::{MemoryStore, Store, StoreError};
use crate::time::{Clock, SystemClock};
use crate::token_cache::TokenCache;
use crate::tokens::SingleFlight;

const SESSION_PURPOSE: &str = "idweb session v1";

/// Marks an ID token stored encrypted.
const SEALED_PREFIX: &str = "sealed:";

/// A completed sign-in.
#[derive(Debug)]
#[non_exhaustive]
pub struct SignedIn {
    /// The new session (already stored).
    pub session: Session,
    /// Where to send the user: a same-origin path.
    pub return_url: String,
    /// The tokens from the code redemption.
    pub tokens: TokenSet,
}

/// Why a [`RelyingParty`] could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Discovery failed.
    #[error("cannot load the identity provider's configuration")]
    Provider(#[from] ProviderError),
    /// The settings name a store (`IDWEB_STORE`) other than `memory`, and no
    /// store was passed with [`RelyingPartyBuilder::with_store`]. Starting on
    /// a private in-process store instead would keep sessions apart from the
    /// other instances, and a sign-out on one would not reach the others.
    #[error(
        "IDWEB_STORE names a `{scheme}` store, but none was passed to the relying party: \
         open it with `idweb_stores::open(&settings.store, clock)` and pass it to `with_store`, \
         or start with `idweb_axum::IdWeb::from_env()` (or `IdWeb::builder(settings)`), which opens it"
    )]
    StoreNotOpened {
        /// The scheme of the store the settings name (never the URL, which
        /// may hold a password).
        scheme: String,
    },
}

/// Builds a [`RelyingParty`]. Every setting has a documented, safe default.
#[derive(Debug)]
pub struct RelyingPartyBuilder {
    settings: Settings,
    store: Option<Arc<dyn Store>>,
    http: Option<reqwest::Client>,
    clock: Option<Arc<dyn Clock>>,
    clock_skew: Duration,
    min_jwks_refetch_interval: Duration,
}

impl RelyingPartyBuilder {
    /// The store for sessions and tokens: the one `settings.store` names,
    /// opened (e.g. by `idweb_stores::open`). Default: a new [`MemoryStore`]
    /// when `settings.store` is `memory`; for any other store,
    /// [`build`](Self::build) fails with [`StartError::StoreNotOpened`]
    /// rather than use a store other than the one configured.
    pub fn with_store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// The HTTP client for calls to the provider. Default: a client that
    /// follows no redirects, with 5 s connect and 15 s total timeouts.
    pub fn with_http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// The clock. Default: the system clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Tolerated clock difference with the provider. Default 5 minutes.
    pub fn with_clock_skew(mut self, skew: Duration) -> Self {
        self.clock_skew = skew;
        self
    }

    /// Least time between two JWKS fetches caused by unknown key ids. Default 30 seconds.
    pub fn with_min_jwks_refetch_interval(mut self, interval: Duration) -> Self {
        self.min_jwks_refetch_interval = interval;
        self
    }

    /// Fetches the provider's metadata and keys, and builds the relying party.
    ///
    /// # Errors
    /// [`StartError::StoreNotOpened`] (before any network call) when no
    /// store was passed and `settings.store` is not `memory`;
    /// [`StartError::Provider`] when discovery fails.
    pub async fn build(self) -> Result<RelyingParty, StartError> {
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let store = match self.store {
            Some(store) => store,
            None if self.settings.store.is_memory() => {
                Arc::new(MemoryStore::with_clock(clock.clone()))
            }
            None => {
                return Err(StartError::StoreNotOpened {
                    scheme: self.settings.store.scheme().to_string(),
                });
            }
        };
        let http = self.http.unwrap_or_else(default_client);
        let provider = Provider::discover(&self.settings.authority, http.clone(), clock.clone())
            .await?
            .with_min_refetch_interval(self.min_jwks_refetch_interval);
        if self.settings.cookie_key_source() == crate::config::KeySource::Generated {
            tracing::warn!(
                "no cookie key configured (IDWEB_COOKIE_KEY): generated a random one for this loopback app; \
                 sessions will not survive a restart"
            );
        }
        let sealer = Sealer::new(&self.settings.cookie_key_bytes());
        if self.settings.cache_keys_source() == crate::config::KeySource::Generated {
            tracing::warn!(
                "no cache keys configured (IDWEB_CACHE_KEYS): generated one for this loopback app; \
                 cached tokens will not be readable after a restart"
            );
        }
        let cache = TokenCache::new(store.clone(), self.settings.cache_keys().clone());
        // Tombstones outlive every session they could cover.
        let sign_out = SignOut::new(
            store.clone(),
            clock.clone(),
            self.settings.session_lifetime + self.clock_skew + Duration::from_secs(3600),
        );
        Ok(RelyingParty {
            settings: self.settings,
            provider,
            store,
            cache,
            http,
            clock,
            sealer,
            sign_out,
            skew: i64::try_from(self.clock_skew.as_secs()).unwrap_or(300),
            single_flight: SingleFlight::default(),
        })
    }
}

/// The web app's side of OpenID Connect: starts and completes sign-ins,
/// creates and finds server-side sessions. Framework-free; `idweb-axum` puts
/// it on HTTP routes.
#[derive(Debug)]
pub struct RelyingParty {
    pub(crate) settings: Settings,
    pub(crate) provider: Provider,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) cache: TokenCache,
    pub(crate) http: reqwest::Client,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) sealer: Sealer,
    pub(crate) sign_out: SignOut,
    pub(crate) skew: i64,
    pub(crate) single_flight: SingleFlight,
}

impl RelyingParty {
    /// Starts building a relying party from validated settings.
    pub fn builder(settings: Settings) -> RelyingPartyBuilder {
        RelyingPartyBuilder {
            settings,
            store: None,
            http: None,
            clock: None,
            clock_skew: Duration::from_secs(300),
            min_jwks_refetch_interval: Duration::from_secs(30),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The provider (metadata and keys).
    pub fn provider(&self) -> &Provider {
        &self.provider
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The token cache.
    pub fn token_cache(&self) -> &TokenCache {
        &self.cache
    }

    /// Starts a sign-in. Fails with [`SignInError::InvalidReturnUrl`] when the
    /// return URL leaves this site (no open redirect).
    pub fn begin_sign_in(&self, options: &SignInOptions) -> Result<SignInRequest, SignInError> {
        let return_url =
            same_origin_path(options.return_url.as_deref(), &self.settings.public_url)?;
        let (authorization_url, pending) = authorization_request(
            &self.provider,
            &self.settings.client_id,
            &self.settings.redirect_uri(),
            &self.settings.scopes,
            options,
            return_url,
            self.clock.unix_now(),
        )?;
        let json = serde_json::to_vec(&pending).map_err(|_| SignInError::NoPendingSignIn)?;
        Ok(SignInRequest {
            authorization_url,
            cookie_name: pending_cookie_name(&pending.state),
            cookie_value: Secret::new(self.sealer.seal(PENDING_PURPOSE, &json)),
            max_age: SIGN_IN_TIMEOUT,
        })
    }

    /// Completes a sign-in at the redirect URI. `pending_cookie` is the value
    /// of the cookie named [`pending_cookie_name`]`(state)`. On success the
    /// session is stored; on any error nothing is stored.
    pub async fn complete_sign_in(
        &self,
        pending_cookie: Option<&str>,
        params: &CallbackParams,
    ) -> Result<SignedIn, SignInError> {
        let now = self.clock.unix_now();
        let pending: Pending = pending_cookie
            .and_then(|c| self.sealer.open(PENDING_PURPOSE, c))
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or(SignInError::NoPendingSignIn)?;
        let timeout = i64::try_from(SIGN_IN_TIMEOUT.as_secs()).unwrap_or(600);
        if now > pending.created_at.saturating_add(timeout)
            || now < pending.created_at.saturating_sub(self.skew)
        {
            return Err(SignInError::NoPendingSignIn);
        }
        let state = params.state.as_deref().ok_or(SignInError::StateMismatch)?;
        if !constant_time_eq(state.as_bytes(), pending.state.as_bytes()) {
            return Err(SignInError::StateMismatch);
        }
        match params.iss.as_deref() {
            Some(iss) if iss != self.provider.issuer() => return Err(SignInError::IssuerMismatch),
            None if self
                .provider
                .metadata()
                .authorization_response_iss_parameter_supported =>
            {
                return Err(SignInError::IssuerMismatch);
            }
            _ => {}
        }
        if let Some(error) = &params.error {
            return Err(SignInError::Provider {
                error: error.clone(),
                description: params.error_description.clone(),
            });
        }
        let code = params.code.as_ref().ok_or(SignInError::MissingCode)?;
        let tokens = redeem_code(
            &self.http,
            &self.provider,
            &self.settings.client_id,
            &self.settings.client_secret,
            self.settings.client_auth,
            code,
            &self.settings.redirect_uri(),
            &pending.verifier,
            now,
        )
        .await?;
        let id_token = tokens.id_token.clone().ok_or(SignInError::IdToken(
            crate::signin::IdTokenError::MissingClaim("id_token"),
        ))?;
        let claims = validate_id_token(
            &self.provider,
            &id_token,
            &IdTokenExpectations {
                client_id: &self.settings.client_id,
                nonce: Some(&pending.nonce),
                access_token: Some(&tokens.access_token),
                now,
                skew: self.skew,
                max_age: 3600,
            },
        )
        .await?;
        let iss = self.provider.issuer().to_string();
        let sub = str_claim(&claims, "sub").unwrap_or_default().to_string();
        let lifetime = i64::try_from(self.settings.session_lifetime.as_secs()).unwrap_or(43_200);
        let identity = account_identity(
            &iss,
            &self.provider.metadata().token_endpoint,
            &claims,
            tokens.client_info.as_deref(),
        );
        let session = Session {
            id: SessionId::generate(),
            account_id: identity.home_account_id.clone(),
            sid: str_claim(&claims, "sid").map(str::to_string),
            name: str_claim(&claims, "name")
                .or_else(|| str_claim(&claims, "preferred_username"))
                .map(str::to_string),
            iss,
            sub,
            id_token,
            created_at: now,
            expires_at: now.saturating_add(lifetime),
        };
        self.store
            .put_session(&self.sealed_session(&session))
            .await?;
        let requested = self.settings.scopes.join(" ");
        let granted = tokens.scope.as_deref().unwrap_or(&requested);
        let parts = tokens.response_parts(
            &self.settings.client_id,
            granted,
            Some(session.id_token.secret()),
            "authorization_code",
            now,
        );
        let entries = entries_from_token_response(&identity, &parts);
        if let Err(e) = self
            .cache
            .write(
                &PartitionKey::Session(session.id.clone()),
                &entries,
                &[],
                None,
            )
            .await
        {
            // No half-made sign-in: without its tokens the session goes too.
            let _ = self.store.remove_session(&session.id).await;
            return Err(SignInError::Store(e));
        }
        tracing::info!(session = ?session.id, sid = ?session.sid, "signed in");
        Ok(SignedIn {
            session,
            return_url: pending.return_url,
            tokens,
        })
    }

    /// The sealed cookie value for a session id.
    pub fn session_cookie_value(&self, id: &SessionId) -> Secret {
        Secret::new(self.sealer.seal(SESSION_PURPOSE, id.secret().as_bytes()))
    }

    /// The session id inside a cookie value, if the cookie is genuine.
    pub fn session_id_from_cookie(&self, cookie_value: &str) -> Option<SessionId> {
        let raw = self.sealer.open(SESSION_PURPOSE, cookie_value)?;
        String::from_utf8(raw).ok().map(SessionId::from_string)
    }

    /// The live session a cookie value points to, if any.
    pub async fn session_from_cookie(
        &self,
        cookie_value: &str,
    ) -> Result<Option<Session>, StoreError> {
        let Some(id) = self.session_id_from_cookie(cookie_value) else {
            return Ok(None);
        };
        self.session(&id).await
    }

    /// The live session with this id, if any (its ID token decrypted).
    pub async fn session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        let Some(stored) = self.store.get_session(id).await? else {
            return Ok(None);
        };
        let now = self.clock.unix_now();
        if stored.is_expired(now) || !stored.id.matches(id) {
            return Ok(None);
        }
        self.opened_session(stored).map(Some)
    }

    /// The session as stored: its ID token encrypted with the cache keys, so
    /// that the store holds no token in clear.
    fn sealed_session(&self, session: &Session) -> Session {
        let aad = format!("session id_token\0{}", session.id.secret());
        let sealed = self
            .settings
            .cache_keys()
            .seal(aad.as_bytes(), session.id_token.secret().as_bytes());
        let mut stored = session.clone();
        stored.id_token = Secret::new(format!("{SEALED_PREFIX}{}", crate::crypto::b64url(&sealed)));
        stored
    }

    fn opened_session(&self, mut stored: Session) -> Result<Session, StoreError> {
        let Some(b64) = stored.id_token.secret().strip_prefix(SEALED_PREFIX) else {
            return Ok(stored);
        };
        let aad = format!("session id_token\0{}", stored.id.secret());
        let raw = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, b64)
            .map_err(|e| StoreError::Corrupt(Box::new(e)))?;
        let plain = self
            .settings
            .cache_keys()
            .open(aad.as_bytes(), &raw)
            .map_err(|e| StoreError::Corrupt(Box::new(e)))?;
        stored.id_token =
            Secret::new(String::from_utf8(plain).map_err(|e| StoreError::Corrupt(Box::new(e)))?);
        Ok(stored)
    }
}
