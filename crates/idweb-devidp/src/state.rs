//! The provider's in-memory state.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::{
    DevClient, DevIdpConfig, DevIdpStats, DevUser, EntraProfile, Fault, LogoutDelivery, subject_for,
};
use crate::crypto::SigningKey;

/// How long a used or expired authorization code is remembered, so that its
/// replay is still detected (and the tokens issued from it revoked).
const CODE_MEMORY_SECS: i64 = 600;

/// How many logout deliveries are remembered (the oldest are forgotten).
const DELIVERY_MEMORY: usize = 1000;

/// State shared by the request handlers and the [`DevIdp`](crate::DevIdp) handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) issuer: String,
    /// The HTTP client for back-channel logout requests (no redirects,
    /// 5-second timeout).
    pub(crate) http: reqwest::Client,
    /// The Entra-like profile, when configured.
    pub(crate) entra: Option<EntraProfile>,
    clock_offset: AtomicI64,
    state: Mutex<State>,
    /// Links shown on every page (see `DevIdpConfig::nav_links`).
    pub(crate) nav_links: Vec<(String, String)>,
    /// Told of every request that may have changed the state, when the
    /// state is kept in a file.
    changes: Option<tokio::sync::watch::Sender<u64>>,
    state_file: Option<std::path::PathBuf>,
}

impl Shared {
    pub(crate) fn new(
        issuer: String,
        config: DevIdpConfig,
        key: Arc<SigningKey>,
        http: reqwest::Client,
        changes: Option<tokio::sync::watch::Sender<u64>>,
    ) -> Self {
        Shared {
            issuer,
            http,
            entra: config.entra.clone(),
            clock_offset: AtomicI64::new(0),
            nav_links: config.nav_links.clone(),
            state_file: config.state_file.clone(),
            state: Mutex::new(State::new(config, key)),
            changes,
        }
    }

    /// The state file, if the state is kept in one.
    pub(crate) fn state_file(&self) -> Option<std::path::PathBuf> {
        self.state_file.clone()
    }

    /// Notes that the state may have changed (the state file, if any, is
    /// rewritten soon after).
    pub(crate) fn changed(&self) {
        if let Some(tx) = &self.changes {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// The issuer of `username`'s tokens and their `tid`: with the Entra
    /// profile `{base}/{tid}/v2.0` of the user's tenant (of the default
    /// tenant without a user), otherwise the base issuer and no tenant.
    pub(crate) fn issuer_of(&self, username: Option<&str>) -> (String, Option<String>) {
        match &self.entra {
            None => (self.issuer.clone(), None),
            Some(profile) => {
                let tid =
                    username.map_or(profile.default_tenant.as_str(), |u| profile.tenant_of(u));
                (self.tenant_issuer(tid), Some(tid.to_owned()))
            }
        }
    }

    /// `{base}/{tid}/v2.0`.
    pub(crate) fn tenant_issuer(&self, tid: &str) -> String {
        format!("{}/{tid}/v2.0", self.issuer)
    }

    /// Whether `iss` is an issuer of this provider: the base issuer, or
    /// with the Entra profile the issuer of one of its tenants.
    pub(crate) fn is_own_issuer(&self, iss: &str) -> bool {
        if iss == self.issuer {
            return true;
        }
        self.entra.as_ref().is_some_and(|p| {
            p.user_tenants
                .values()
                .chain(std::iter::once(&p.default_tenant))
                .any(|tid| self.tenant_issuer(tid) == iss)
        })
    }

    /// The provider's current time in seconds since the Unix epoch,
    /// including the clock offset.
    pub(crate) fn now(&self) -> i64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(secs)
            .unwrap_or(0);
        real.saturating_add(self.clock_offset.load(Ordering::Relaxed))
    }

    pub(crate) fn set_clock_offset(&self, seconds: i64) {
        self.clock_offset.store(seconds, Ordering::Relaxed);
    }

    /// Locks the state. A poisoned lock is recovered: every mutation leaves
    /// the state consistent.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A duration in whole seconds, saturating.
pub(crate) fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Token and code lifetimes in seconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lifetimes {
    pub(crate) access: i64,
    pub(crate) id: i64,
    pub(crate) code: i64,
    pub(crate) refresh: i64,
}

/// An IdP browser session, found through the `devidp_session` cookie.
#[derive(Debug, Clone)]
pub(crate) struct IdpSession {
    /// The OpenID Connect session id (`sid` claim).
    pub(crate) sid: String,
    pub(crate) username: String,
    pub(crate) auth_time: i64,
    /// The clients that received a code in this session.
    pub(crate) clients: BTreeSet<String>,
}

/// An issued authorization code (stored under the hash of the code).
#[derive(Debug, Clone)]
pub(crate) struct CodeGrant {
    pub(crate) client_id: String,
    pub(crate) redirect_uri: String,
    pub(crate) scope: Vec<String>,
    pub(crate) nonce: Option<String>,
    pub(crate) code_challenge: String,
    pub(crate) username: String,
    pub(crate) sid: String,
    pub(crate) auth_time: i64,
    pub(crate) expires_at: i64,
    pub(crate) redeemed: bool,
    /// The refresh token family created when the code was redeemed.
    pub(crate) family: Option<u64>,
    /// Access tokens (`jti`, `exp`) issued when the code was redeemed.
    pub(crate) access_tokens: Vec<(String, i64)>,
    /// The authorization request's `claims` request, if any.
    pub(crate) claims: Option<serde_json::Value>,
}

/// A refresh token (stored under the hash of the token).
#[derive(Debug, Clone)]
pub(crate) struct RefreshRecord {
    pub(crate) family: u64,
    pub(crate) client_id: String,
    pub(crate) expires_at: i64,
    /// Already exchanged: presenting it again is a replay.
    pub(crate) rotated: bool,
}

/// All refresh tokens descending from one authorization code.
#[derive(Debug, Clone)]
pub(crate) struct Family {
    pub(crate) username: String,
    pub(crate) sid: String,
    pub(crate) auth_time: i64,
    /// The scope originally granted; a refresh may only narrow it.
    pub(crate) scope: Vec<String>,
    pub(crate) revoked: bool,
    /// Access tokens (`jti`, `exp`) issued with this family.
    pub(crate) access_tokens: Vec<(String, i64)>,
}

/// Everything the provider keeps in memory.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) users: Vec<DevUser>,
    pub(crate) clients: HashMap<String, DevClient>,
    pub(crate) auto_login: bool,
    pub(crate) lifetimes: Lifetimes,
    /// Published keys; the last one signs new tokens.
    pub(crate) keys: Vec<Arc<SigningKey>>,
    pub(crate) fault: Option<Fault>,
    pub(crate) stats: DevIdpStats,
    /// Browser sessions by cookie value.
    pub(crate) sessions: HashMap<String, IdpSession>,
    /// Authorization codes by hash.
    pub(crate) codes: HashMap<String, CodeGrant>,
    /// Refresh tokens by hash.
    pub(crate) refresh_tokens: HashMap<String, RefreshRecord>,
    pub(crate) families: HashMap<u64, Family>,
    next_family: u64,
    /// Revoked access tokens: `jti` to `exp`.
    pub(crate) revoked_access_tokens: HashMap<String, i64>,
    /// Logout notifications made, oldest first.
    pub(crate) deliveries: VecDeque<LogoutDelivery>,
}

impl State {
    fn new(config: DevIdpConfig, key: Arc<SigningKey>) -> Self {
        State {
            users: config.users,
            clients: config
                .clients
                .into_iter()
                .map(|c| (c.client_id.clone(), c))
                .collect(),
            auto_login: config.auto_login,
            lifetimes: Lifetimes {
                access: secs(config.access_token_lifetime),
                id: secs(config.id_token_lifetime),
                code: secs(config.code_lifetime),
                refresh: secs(config.refresh_token_lifetime),
            },
            keys: vec![key],
            fault: None,
            stats: DevIdpStats::default(),
            sessions: HashMap::new(),
            codes: HashMap::new(),
            refresh_tokens: HashMap::new(),
            families: HashMap::new(),
            next_family: 0,
            revoked_access_tokens: HashMap::new(),
            deliveries: VecDeque::new(),
        }
    }

    /// The number the next refresh token family gets.
    pub(crate) fn next_family(&self) -> u64 {
        self.next_family
    }

    /// Puts back what the state file held.
    pub(crate) fn restore(&mut self, saved: crate::persist::Saved) {
        self.keys = saved.keys;
        self.sessions = saved.sessions;
        self.refresh_tokens = saved.refresh_tokens;
        self.families = saved.families;
        self.next_family = saved.next_family;
    }

    /// Records logout notifications, forgetting the oldest beyond a limit.
    pub(crate) fn record_deliveries(&mut self, deliveries: &[LogoutDelivery]) {
        self.deliveries.extend(deliveries.iter().cloned());
        while self.deliveries.len() > DELIVERY_MEMORY {
            self.deliveries.pop_front();
        }
    }

    /// The user named `username`.
    pub(crate) fn user(&self, username: &str) -> Option<&DevUser> {
        self.users.iter().find(|u| u.username == username)
    }

    /// The user whose subject identifier is `sub`.
    pub(crate) fn user_by_subject(&self, sub: &str) -> Option<&DevUser> {
        self.users.iter().find(|u| subject_for(&u.username) == sub)
    }

    /// The key that signs new tokens.
    pub(crate) fn current_key(&self) -> Option<Arc<SigningKey>> {
        self.keys.last().cloned()
    }

    /// Starts a new refresh token family.
    pub(crate) fn new_family(&mut self, family: Family) -> u64 {
        let id = self.next_family;
        self.next_family = self.next_family.wrapping_add(1);
        self.families.insert(id, family);
        id
    }

    /// Revokes a refresh token family and the access tokens issued with it.
    pub(crate) fn revoke_family(&mut self, id: u64) {
        if let Some(family) = self.families.get_mut(&id) {
            family.revoked = true;
            let tokens = std::mem::take(&mut family.access_tokens);
            self.revoked_access_tokens.extend(tokens);
        }
    }

    /// Revokes the given access tokens.
    pub(crate) fn revoke_access_tokens(&mut self, tokens: Vec<(String, i64)>) {
        self.revoked_access_tokens.extend(tokens);
    }

    /// Forgets expired codes, refresh tokens and revocation entries.
    pub(crate) fn purge(&mut self, now: i64) {
        self.codes
            .retain(|_, c| c.expires_at.saturating_add(CODE_MEMORY_SECS) > now);
        self.refresh_tokens.retain(|_, r| r.expires_at > now);
        let live: std::collections::HashSet<u64> =
            self.refresh_tokens.values().map(|r| r.family).collect();
        let referenced: std::collections::HashSet<u64> =
            self.codes.values().filter_map(|c| c.family).collect();
        self.families
            .retain(|id, _| live.contains(id) || referenced.contains(id));
        self.revoked_access_tokens.retain(|_, exp| *exp > now);
    }
}
