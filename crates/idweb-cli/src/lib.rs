//! The library behind the `idweb` command: opening a store from its URL (as
//! a command needs it), the cache reports the command prints, and a session's partition as MSAL's
//! token cache document (export, import, `remove_account`).
//!
//! The JSON forms are stable: fields are only ever added, never renamed or
//! removed (see `docs/CLI.md`).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use idweb::{
    AuditOutcome, AuditRecord, CacheKeys, Clock, DEFAULT_LISTENER_TIMEOUT, EntrySummary,
    PartitionKey, Session, SessionLookup, SignOut, SignOutAudit, SignOutBus, SignOutEvent,
    SignOutEvents, SignOutPath, SignOutSelector, Store, StoreError, StoreUrl, SystemClock,
    TokenCache,
};
use serde::Serialize;

mod msal;

pub use msal::{
    ImportReport, MAX_IMPORT_BYTES, MsalCommandError, MsalExport, RemoveAccountOptions,
    RemoveAccountReport, RemovedEntry, export_msal, import_msal, read_msal_document,
    remove_account, write_private_file,
};

/// Opens the store at `url` (`--store` or `IDWEB_STORE`) as the command
/// needs it, through `idweb_stores::open`: with the options the app's
/// environment gives (`IDWEB_STORE_*`, e.g. `IDWEB_STORE_PREFIX`), so that
/// the command sees the store the app uses, and without Redis's in-process
/// L1 cache (a command reads the store directly: there is no cache to keep
/// coherent). `memory` is refused: a command cannot see another process's
/// memory.
pub async fn open_store_url(url: &str) -> Result<Arc<dyn Store>, String> {
    let url = store_url(url, std::env::vars())?;
    idweb_stores::open(&url, Arc::new(SystemClock))
        .await
        .map_err(|e| error_chain(&e))
}

/// Opens the sign-out event bus of the store at `url` (Redis: the
/// `PREFIX:signout` channel the app's instances listen on; `None` for
/// SQLite), so that `evict` tells the running apps.
pub async fn open_sign_out_bus_url(url: &str) -> Result<Option<Arc<dyn SignOutBus>>, String> {
    let url = store_url(url, std::env::vars())?;
    idweb_stores::open_sign_out_bus(&url, Arc::new(SystemClock))
        .await
        .map_err(|e| error_chain(&e))
}

/// The store URL the command opens: `url` with the `IDWEB_STORE_*` options
/// of `env`, and `l1` off for Redis and PostgreSQL.
fn store_url(
    url: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<StoreUrl, String> {
    let mut store = StoreUrl::parse(url).map_err(|e| e.to_string())?;
    if store.is_memory() {
        return Err(
            "`memory` is private to one process; give the URL of a shared store \
             (sqlite://PATH, redis://HOST:PORT, postgres://USER@HOST:PORT/DATABASE)"
                .into(),
        );
    }
    for (name, value) in env {
        if let Some(option) = name.strip_prefix("IDWEB_STORE_") {
            store = store
                .with_option(option, value)
                .map_err(|e| e.to_string())?;
        }
    }
    if store.scheme().starts_with("redis") || store.scheme().starts_with("postgres") {
        store = store
            .with_option("l1", "false")
            .map_err(|e| e.to_string())?;
    }
    Ok(store)
}

/// An error and its causes, on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Which sessions a listing covers.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this issuer.
    pub iss: Option<String>,
    /// Only this subject.
    pub sub: Option<String>,
    /// Only this provider session id.
    pub sid: Option<String>,
}

/// One session and its cache entries, as listed.
#[derive(Debug, Serialize)]
pub struct SessionReport {
    /// A fingerprint of the session id (never the id itself).
    pub session: String,
    /// Issuer.
    pub iss: String,
    /// Subject.
    pub sub: String,
    /// Provider session id.
    pub sid: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// The cache entries (no secrets).
    pub entries: Vec<EntrySummary>,
    /// Entries that could not be decrypted with the given keys.
    pub unreadable_entries: usize,
}

/// The sessions matching `filter`, with their cache entries.
pub async fn list(
    store: Arc<dyn Store>,
    keys: Arc<CacheKeys>,
    filter: &Filter,
) -> Result<Vec<SessionReport>, StoreError> {
    let sessions = matching_sessions(store.as_ref(), filter).await?;
    let cache = TokenCache::new(store, keys);
    let mut out = Vec::with_capacity(sessions.len());
    for s in sessions {
        let key = PartitionKey::Session(s.id.clone());
        let part = cache.read(&key).await?;
        let entries = cache.summaries(&key).await?;
        out.push(SessionReport {
            session: s.id.fingerprint(),
            iss: s.iss,
            sub: s.sub,
            sid: s.sid,
            name: s.name,
            // Whole seconds, like `expires_at` (the session keeps microseconds).
            created_at: s.created_at.div_euclid(idweb::MICROS_PER_SEC),
            expires_at: s.expires_at,
            entries,
            unreadable_entries: part.unreadable,
        });
    }
    Ok(out)
}

/// The live sessions matching `filter`: through the indexes when the issuer
/// is known, otherwise by scanning.
pub async fn matching_sessions(
    store: &dyn Store,
    filter: &Filter,
) -> Result<Vec<Session>, StoreError> {
    if let Some(iss) = &filter.iss {
        let lookup = match (&filter.sid, &filter.sub) {
            (Some(sid), _) => Some(SessionLookup::ByProviderSession {
                iss: iss.clone(),
                sid: sid.clone(),
            }),
            (None, Some(sub)) => Some(SessionLookup::BySubject {
                iss: iss.clone(),
                sub: sub.clone(),
            }),
            (None, None) => None,
        };
        if let Some(lookup) = lookup {
            let mut out = Vec::new();
            for id in store.find_sessions(&lookup).await? {
                if let Some(s) = store.get_session(&id).await?
                    && filter.sub.as_ref().is_none_or(|sub| *sub == s.sub)
                {
                    out.push(s);
                }
            }
            return Ok(out);
        }
    }
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_sessions(after.as_ref(), 500).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        out.extend(page.into_iter().filter(|s| {
            filter.iss.as_ref().is_none_or(|v| *v == s.iss)
                && filter.sub.as_ref().is_none_or(|v| *v == s.sub)
                && filter
                    .sid
                    .as_ref()
                    .is_none_or(|v| Some(v) == s.sid.as_ref())
        }));
    }
    Ok(out)
}

/// Store statistics as printed by `idweb cache stats --json`.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct StatsReport {
    /// Live sessions.
    pub sessions: u64,
    /// Partitions.
    pub partitions: u64,
    /// Cache entries.
    pub entries: u64,
    /// Live tombstones.
    pub tombstones: u64,
}

/// Counts of what the store holds.
pub async fn stats(store: &dyn Store) -> Result<StatsReport, StoreError> {
    let s = store.stats().await?;
    Ok(StatsReport {
        sessions: s.sessions,
        partitions: s.partitions,
        entries: s.entries,
        tombstones: s.tombstones,
    })
}

/// What `idweb cache evict` did, as printed with `--json`.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct EvictReport {
    /// Sessions removed, each with its whole token-cache partition.
    pub sessions_removed: usize,
    /// Token-cache entries removed with them.
    pub entries_removed: u64,
    /// The `(iss, sub|sid)` selectors tombstoned.
    pub selectors: Vec<String>,
    /// Sign-out events published to the app's instances (one per selector
    /// when the store has a bus: Redis).
    pub events_published: u64,
}

/// Signs out, in `store`, the sessions of `--sub` or `--sid` (of `--iss`, or
/// of every issuer that has matching sessions): tombstones first, then the
/// sessions with their tokens — the same eviction as a sign-out in the app.
pub async fn evict(
    store: Arc<dyn Store>,
    filter: &Filter,
    tombstone_lifetime: Duration,
) -> Result<EvictReport, StoreError> {
    evict_and_announce(store, None, filter, tombstone_lifetime).await
}

/// [`evict`], then, for each selector, a [`SignOutPath::Operator`] event
/// published on `bus`, so that the app's instances run their sign-out
/// listeners. A publication that fails is counted out of
/// `events_published`; the eviction stands.
pub async fn evict_and_announce(
    store: Arc<dyn Store>,
    bus: Option<Arc<dyn SignOutBus>>,
    filter: &Filter,
    tombstone_lifetime: Duration,
) -> Result<EvictReport, StoreError> {
    let audit = SignOutAudit::new(&random_key(), "idweb-cli");
    evict_announce_and_audit(store, bus, filter, tombstone_lifetime, &audit).await
}

/// A key for audit fingerprints that match no app's (when the app's cookie
/// key is not given).
fn random_key() -> Vec<u8> {
    // A fresh session id: 256 random bits.
    idweb::SessionId::generate().secret().as_bytes().to_vec()
}

/// [`evict_and_announce`], writing one audit event per selector (the
/// `operator` path, outcome `signed_out` or `error`) to `audit`: keyed with
/// the app's cookie key, its fingerprints match those of the app's own
/// audit events.
pub async fn evict_announce_and_audit(
    store: Arc<dyn Store>,
    bus: Option<Arc<dyn SignOutBus>>,
    filter: &Filter,
    tombstone_lifetime: Duration,
    audit: &SignOutAudit,
) -> Result<EvictReport, StoreError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let sign_out = SignOut::new(store.clone(), clock.clone(), tombstone_lifetime);
    let has_bus = bus.is_some();
    let events = SignOutEvents::new(bus, DEFAULT_LISTENER_TIMEOUT);
    let issuers: Vec<String> = match &filter.iss {
        Some(iss) => vec![iss.clone()],
        None => {
            let mut found: Vec<String> = matching_sessions(store.as_ref(), filter)
                .await?
                .into_iter()
                .map(|s| s.iss)
                .collect();
            found.sort();
            found.dedup();
            found
        }
    };
    let mut report = EvictReport {
        sessions_removed: 0,
        entries_removed: 0,
        selectors: Vec::new(),
        events_published: 0,
    };
    for iss in issuers {
        let selector = match (&filter.sid, &filter.sub) {
            (Some(sid), _) => SignOutSelector::ProviderSession {
                iss: iss.clone(),
                sid: sid.clone(),
            },
            (None, Some(sub)) => SignOutSelector::Subject {
                iss: iss.clone(),
                sub: sub.clone(),
            },
            (None, None) => return Ok(report),
        };
        report.selectors.push(match &selector {
            SignOutSelector::ProviderSession { iss, sid } => format!("{iss} sid={sid}"),
            SignOutSelector::Subject { iss, sub } => format!("{iss} sub={sub}"),
            _ => String::new(),
        });
        let subject = match (&filter.sub, &filter.sid) {
            (Some(sub), _) => Some(sub.clone()),
            (None, Some(sid)) => sign_out.subject_of(&iss, sid).await,
            (None, None) => None,
        };
        let result = sign_out.evict(&selector).await;
        audit.record(
            &AuditRecord::new(
                SignOutPath::Operator,
                &iss,
                if result.is_ok() {
                    AuditOutcome::SignedOut
                } else {
                    AuditOutcome::Error
                },
            )
            .with_user(subject.as_deref(), filter.sid.as_deref())
            .with_sessions_removed(result.as_ref().map_or(0, |e| e.sessions_removed))
            .with_entries_removed(result.as_ref().map_or(0, |e| e.entries_removed)),
        );
        let eviction = result?;
        report.sessions_removed += eviction.sessions_removed;
        report.entries_removed += eviction.entries_removed;
        let event = SignOutEvent::new(SignOutPath::Operator, iss, clock.unix_now())
            .with_sub(subject)
            .with_sid(filter.sid.clone())
            .with_sessions(&eviction.sessions)
            .with_entries_removed(eviction.entries_removed);
        events.emit(event).await;
    }
    if has_bus {
        let s = events.stats();
        report.events_published = s.emitted.saturating_sub(s.publish_failed);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_command_sees_the_apps_store_without_l1() {
        let app_env = env(&[
            ("IDWEB_STORE_PREFIX", "app-a"),
            ("IDWEB_STORE_L1", "true"),
            ("IDWEB_CLIENT_ID", "not a store option"),
        ]);
        let url = store_url("redis://127.0.0.1:6379", app_env).expect("redis");
        assert_eq!(url.option("prefix"), Some("app-a"));
        assert_eq!(url.option("l1"), Some("false"));
        assert_eq!(url.options().count(), 2);
        let url = store_url("sqlite://idweb.db", env(&[])).expect("sqlite");
        assert_eq!((url.scheme(), url.options().count()), ("sqlite", 0));
        let app_env = env(&[("IDWEB_STORE_SCHEMA", "app_a")]);
        let url = store_url("postgres://u@127.0.0.1:5432/app", app_env).expect("postgres");
        assert_eq!(url.option("schema"), Some("app_a"));
        assert_eq!(url.option("l1"), Some("false"));
    }

    #[test]
    fn memory_is_refused() {
        for memory in ["memory", "MEMORY"] {
            let e = store_url(memory, env(&[])).expect_err("memory");
            assert!(e.contains("memory") && e.contains("sqlite://"), "{e}");
        }
    }
}
