//! The encrypted token cache over a [`Store`]: each entry is sealed with the
//! cache key ring, bound to its partition and cache key.
//!
//! The request path reads access tokens through a decoded view of each
//! partition (scopes parsed once, expiry, the secret), kept in process and
//! keyed by partition and version: a cache hit costs the store's
//! [`partition_version`](Store::partition_version) and a comparison, not a
//! decryption and a parse. The view is exactly as coherent as the store:
//! every hit checks the version the store reports (so a write or an eviction
//! by any instance or process is seen on the next request), local writes and
//! evictions drop it before they return, and it holds only access tokens — a
//! hit never decrypts the refresh token.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::cache::{CacheEntry, EntryKind};
use crate::keys::CacheKeys;
use crate::secret::Secret;
use crate::store::{PartitionKey, PartitionWrite, Store, StoreError, StoredEntry};

/// Most partitions whose view is kept; past it the views are dropped and
/// rebuilt on demand (each rebuild is one partition read).
const MAX_VIEWS: usize = 100_000;

/// One access token as the request path needs it.
#[derive(Debug)]
pub(crate) struct ViewToken {
    /// Its scopes, lower-cased.
    pub(crate) scopes: Box<[Box<str>]>,
    /// Unix seconds when it expires.
    pub(crate) expires_at: i64,
    /// The token (zeroized on drop).
    pub(crate) secret: Secret,
}

impl ViewToken {
    /// Whether every scope of `wanted` (any case) is among this token's.
    pub(crate) fn covers(&self, wanted: &[&str]) -> bool {
        wanted
            .iter()
            .all(|w| self.scopes.iter().any(|s| s.eq_ignore_ascii_case(w)))
    }
}

/// The decoded access tokens of one partition, as of one version.
#[derive(Debug)]
pub(crate) struct PartitionView {
    version: u64,
    /// This client's access tokens.
    pub(crate) tokens: Box<[ViewToken]>,
}

/// The fields of an access-token entry that the request path reads; the
/// others are left unparsed.
#[derive(Deserialize)]
struct AccessTokenFields {
    secret: Secret,
    client_id: String,
    #[serde(default)]
    target: String,
    expires_on: MsalTime,
}

/// MSAL writes times as strings of digits; accept numbers too.
#[derive(Deserialize)]
#[serde(untagged)]
enum MsalTime {
    Text(String),
    Number(i64),
}

impl MsalTime {
    fn seconds(&self) -> Option<i64> {
        match self {
            MsalTime::Text(t) => t.trim().parse().ok(),
            MsalTime::Number(n) => Some(*n),
        }
    }
}

/// A partition read back and decrypted.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CachedPartition {
    /// The entries that could be decrypted.
    pub entries: Vec<CacheEntry>,
    /// The partition's version (for conditional writes).
    pub version: u64,
    /// Entries that could not be decrypted (unknown key id, or tampered).
    pub unreadable: usize,
}

/// What can be shown of an entry: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct EntrySummary {
    /// MSAL's section name.
    pub kind: String,
    /// The MSAL cache key.
    pub cache_key: String,
    /// The scopes (access tokens; `target`).
    pub scopes: Option<String>,
    /// Unix seconds when it expires (access tokens).
    pub expires_at: Option<i64>,
}

/// The token cache: MSAL-schema entries in per-session partitions of a
/// [`Store`], each entry encrypted at rest.
#[derive(Debug, Clone)]
pub struct TokenCache {
    store: Arc<dyn Store>,
    keys: Arc<CacheKeys>,
    views: Arc<RwLock<HashMap<PartitionKey, Arc<PartitionView>>>>,
}

fn aad(key: &PartitionKey, cache_key: &str) -> Vec<u8> {
    let mut aad = key.storage_key().into_bytes();
    aad.push(0);
    aad.extend_from_slice(cache_key.as_bytes());
    aad
}

impl TokenCache {
    /// A cache over `store`, sealing with `keys`.
    pub fn new(store: Arc<dyn Store>, keys: Arc<CacheKeys>) -> Self {
        Self {
            store,
            keys,
            views: Arc::default(),
        }
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Reads and decrypts a partition (empty when absent).
    pub async fn read(&self, key: &PartitionKey) -> Result<CachedPartition, StoreError> {
        let Some(stored) = self.store.get_partition(key).await? else {
            return Ok(CachedPartition::default());
        };
        let mut out = CachedPartition {
            version: stored.version,
            ..CachedPartition::default()
        };
        for e in stored.entries {
            match self.decode(key, &e) {
                Some(entry) => out.entries.push(entry),
                None => out.unreadable += 1,
            }
        }
        if out.unreadable > 0 {
            tracing::warn!(
                unreadable = out.unreadable,
                "token cache entries could not be decrypted (missing or rotated-out cache key?)"
            );
        }
        Ok(out)
    }

    fn decode(&self, key: &PartitionKey, e: &StoredEntry) -> Option<CacheEntry> {
        let kind: EntryKind = e.kind.parse().ok()?;
        let plain = self.keys.open(&aad(key, &e.cache_key), &e.sealed).ok()?;
        let value: serde_json::Value = serde_json::from_slice(&plain).ok()?;
        CacheEntry::from_msal_json(kind, &e.cache_key, &value).ok()
    }

    /// The current view of `key`'s access tokens for `client_id`: the kept
    /// one when the store still reports its version, else rebuilt from the
    /// store (decrypting the access tokens only). `None` when the partition
    /// has no entries (or its session is gone).
    pub(crate) async fn access_tokens(
        &self,
        key: &PartitionKey,
        client_id: &str,
    ) -> Result<Option<Arc<PartitionView>>, StoreError> {
        let Some(version) = self.store.partition_version(key).await? else {
            self.forget(key);
            return Ok(None);
        };
        if let Some(view) = self.kept_view(key)
            && view.version == version
        {
            return Ok(Some(view));
        }
        let Some(stored) = self.store.get_partition(key).await? else {
            self.forget(key);
            return Ok(None);
        };
        let tokens: Vec<ViewToken> = stored
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::AccessToken.as_str())
            .filter_map(|e| self.decode_access_token(key, e))
            .filter(|(client, _)| client.eq_ignore_ascii_case(client_id))
            .map(|(_, t)| t)
            .collect();
        let view = Arc::new(PartitionView {
            version: stored.version,
            tokens: tokens.into_boxed_slice(),
        });
        let mut views = self.views.write().unwrap_or_else(|e| e.into_inner());
        if views.len() >= MAX_VIEWS {
            views.clear();
        }
        views.insert(key.clone(), view.clone());
        Ok(Some(view))
    }

    fn kept_view(&self, key: &PartitionKey) -> Option<Arc<PartitionView>> {
        self.views
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// Drops the view of `key` (after a write or an eviction).
    pub(crate) fn forget(&self, key: &PartitionKey) {
        let mut views = self.views.write().unwrap_or_else(|e| e.into_inner());
        views.remove(key);
    }

    /// Decrypts one access-token entry straight into the fields the request
    /// path needs; the plaintext is zeroized afterwards.
    fn decode_access_token(
        &self,
        key: &PartitionKey,
        e: &StoredEntry,
    ) -> Option<(String, ViewToken)> {
        let plain = Zeroizing::new(self.keys.open(&aad(key, &e.cache_key), &e.sealed).ok()?);
        let fields: AccessTokenFields = serde_json::from_slice(&plain).ok()?;
        let scopes = fields
            .target
            .split_whitespace()
            .map(|s| s.to_ascii_lowercase().into_boxed_str())
            .collect();
        Some((
            fields.client_id,
            ViewToken {
                scopes,
                expires_at: fields.expires_on.seconds()?,
                secret: fields.secret,
            },
        ))
    }

    /// Encrypts `entry` for `key`.
    pub fn seal(&self, key: &PartitionKey, entry: &CacheEntry) -> StoredEntry {
        let cache_key = entry.cache_key();
        let json = entry.to_msal_json().to_string();
        let sealed = self.keys.seal(&aad(key, &cache_key), json.as_bytes());
        let expires_at = match entry.kind() {
            EntryKind::AccessToken => entry.expires_on(),
            _ => None,
        };
        StoredEntry::new(cache_key, entry.kind().as_str(), expires_at, sealed)
    }

    /// Writes entries (insert or replace) and removes cache keys, atomically;
    /// with `expected_version`, only if the partition is still at that version.
    pub async fn write(
        &self,
        key: &PartitionKey,
        upsert: &[CacheEntry],
        remove: &[String],
        expected_version: Option<u64>,
    ) -> Result<u64, StoreError> {
        let mut write = PartitionWrite::upsert(upsert.iter().map(|e| self.seal(key, e)).collect());
        write.remove = remove.to_vec();
        write.expected_version = expected_version;
        let result = self.store.write_partition(key, write).await;
        // Dropped whatever the outcome: a failed write may still have landed.
        self.forget(key);
        result
    }

    /// A secret-free description of every entry of a partition.
    pub async fn summaries(&self, key: &PartitionKey) -> Result<Vec<EntrySummary>, StoreError> {
        let mut out: Vec<EntrySummary> = self
            .read(key)
            .await?
            .entries
            .iter()
            .map(|e| EntrySummary {
                kind: e.kind().as_str().to_string(),
                cache_key: e.cache_key(),
                scopes: e.target().map(str::to_string),
                expires_at: match e.kind() {
                    EntryKind::AccessToken => e.expires_on(),
                    _ => None,
                },
            })
            .collect();
        out.sort_by(|a, b| {
            (a.kind.as_str(), a.cache_key.as_str()).cmp(&(b.kind.as_str(), b.cache_key.as_str()))
        });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cache::{AccessTokenEntry, RefreshTokenEntry};
    use crate::session::Session;
    use crate::signout::{SignOut, SignOutSelector};
    use crate::store::MemoryStore;
    use crate::time::SystemClock;

    fn access_token(client_id: &str, target: &str, secret: &str, expires_on: i64) -> CacheEntry {
        CacheEntry::AccessToken(AccessTokenEntry {
            home_account_id: Some("uid.utid".into()),
            environment: "idp.example.com".into(),
            client_id: client_id.into(),
            realm: "common".into(),
            target: target.into(),
            secret: Secret::new(secret),
            token_type: Some("Bearer".into()),
            cached_at: Some(0),
            expires_on,
            extended_expires_on: None,
            refresh_on: None,
            key_id: None,
            ext_cache_key: None,
            extra: serde_json::Map::new(),
        })
    }

    async fn cache_with_session() -> (TokenCache, Session, PartitionKey) {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let now = crate::time::unix_seconds(std::time::SystemTime::now());
        let session = Session::new(
            "https://idp.example.com",
            "alice",
            Some("sid-1".into()),
            Secret::new("id-token"),
            now,
            now + 3600,
        );
        store.put_session(&session).await.unwrap();
        let cache = TokenCache::new(store, Arc::new(CacheKeys::generate()));
        let key = PartitionKey::Session(session.id.clone());
        (cache, session, key)
    }

    #[tokio::test]
    async fn the_view_holds_only_this_clients_access_tokens_and_follows_the_version() {
        let (cache, _session, key) = cache_with_session().await;
        let rt = RefreshTokenEntry {
            home_account_id: Some("uid.utid".into()),
            environment: "idp.example.com".into(),
            client_id: "app".into(),
            secret: Secret::new("rt"),
            target: None,
            last_modification_time: None,
            family_id: None,
            extra: serde_json::Map::new(),
        };
        cache
            .write(
                &key,
                &[
                    access_token("app", "Read Write", "at-1", 2_000_000_000),
                    access_token("other-app", "Read", "at-other", 2_000_000_000),
                    CacheEntry::RefreshToken(rt),
                ],
                &[],
                None,
            )
            .await
            .unwrap();
        let view = cache.access_tokens(&key, "APP").await.unwrap().unwrap();
        assert_eq!(view.tokens.len(), 1);
        assert_eq!(view.tokens[0].secret.secret(), "at-1");
        assert!(view.tokens[0].covers(&["read", "WRITE"]));
        assert!(!view.tokens[0].covers(&["read", "delete"]));
        // The same view while the version holds.
        let again = cache.access_tokens(&key, "app").await.unwrap().unwrap();
        assert!(Arc::ptr_eq(&view, &again));
        // A write through another cache over the same store changes the version.
        let other = TokenCache::new(cache.store().clone(), cache.keys.clone());
        other
            .write(
                &key,
                &[access_token("app", "Read", "at-2", 2_000_000_001)],
                &[],
                None,
            )
            .await
            .unwrap();
        let fresh = cache.access_tokens(&key, "app").await.unwrap().unwrap();
        assert!(!Arc::ptr_eq(&view, &fresh));
        assert!(fresh.tokens.iter().any(|t| t.secret.secret() == "at-2"));
    }

    #[tokio::test]
    async fn writes_and_evictions_drop_the_view_before_returning() {
        let (cache, session, key) = cache_with_session().await;
        let entry = access_token("app", "Read", "at-1", 2_000_000_000);
        cache
            .write(&key, std::slice::from_ref(&entry), &[], None)
            .await
            .unwrap();
        cache.access_tokens(&key, "app").await.unwrap().unwrap();
        assert!(cache.kept_view(&key).is_some());
        cache.write(&key, &[entry], &[], None).await.unwrap();
        assert!(cache.kept_view(&key).is_none(), "a write drops the view");

        cache.access_tokens(&key, "app").await.unwrap().unwrap();
        assert!(cache.kept_view(&key).is_some());
        let sign_out = SignOut::new(
            cache.store().clone(),
            Arc::new(SystemClock),
            Duration::from_secs(3600),
        )
        .with_cache(cache.clone());
        sign_out
            .evict(&SignOutSelector::Session(session.id.clone()))
            .await
            .unwrap();
        assert!(
            cache.kept_view(&key).is_none(),
            "an eviction drops the view"
        );
        assert!(cache.access_tokens(&key, "app").await.unwrap().is_none());
    }
}
