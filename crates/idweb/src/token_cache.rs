//! The encrypted token cache over a [`Store`]: each entry is sealed with the
//! cache key ring, bound to its partition and cache key.

use std::sync::Arc;

use crate::cache::{CacheEntry, EntryKind};
use crate::keys::CacheKeys;
use crate::store::{PartitionKey, PartitionWrite, Store, StoreError, StoredEntry};

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
        Self { store, keys }
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
        self.store.write_partition(key, write).await
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
