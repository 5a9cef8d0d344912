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
//!
//! The ID token of a session is stored once: the session holds it sealed
//! (see [`TokenCache::put_session`]), and the partition's `IdToken` entry for
//! that same token holds a sealed reference to it instead of a copy. Reading
//! the entry ([`TokenCache::read`]) puts the session's ID token back in, so
//! MSAL export, `remove_account` and every reader see the entry as before.
//! Entries written by earlier versions (MSAL JSON, the ID token inline) are
//! still read.

use std::sync::{Arc, RwLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::cache::plain::{self, Field};
use crate::cache::{CacheEntry, EntryKind};
use crate::crypto::b64url;
use crate::keys::CacheKeys;
use crate::secret::{Secret, constant_time_eq};
use crate::session::{Session, SessionId};
use crate::store::{PartitionKey, PartitionWrite, Store, StoreError, StoredEntry};

/// Marks a session's ID token stored sealed (`sealed:` and the base64url of
/// the sealed bytes).
pub(crate) const SEALED_ID_TOKEN_PREFIX: &str = "sealed:";

fn id_token_aad(id: &SessionId) -> String {
    format!("session id_token\0{}", id.secret())
}

/// `session` as stores keep it: its ID token sealed with `keys`, bound to
/// the session id.
pub(crate) fn seal_session(keys: &CacheKeys, session: &Session) -> Session {
    let aad = id_token_aad(&session.id);
    let sealed = keys.seal(aad.as_bytes(), session.id_token.secret().as_bytes());
    let mut stored = session.clone();
    stored.id_token = Secret::new(format!("{SEALED_ID_TOKEN_PREFIX}{}", b64url(&sealed)));
    stored.partition_read = None;
    stored
}

/// A session as a store returned it, its ID token opened (a session stored
/// without sealing is returned as it is).
pub(crate) fn open_session(keys: &CacheKeys, mut stored: Session) -> Result<Session, StoreError> {
    let Some(b64) = stored
        .id_token
        .secret()
        .strip_prefix(SEALED_ID_TOKEN_PREFIX)
    else {
        return Ok(stored);
    };
    let raw = URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|e| StoreError::Corrupt(Box::new(e)))?;
    let plain = Zeroizing::new(
        keys.open(id_token_aad(&stored.id).as_bytes(), &raw)
            .map_err(|e| StoreError::Corrupt(Box::new(e)))?,
    );
    let text = std::str::from_utf8(&plain).map_err(|e| StoreError::Corrupt(Box::new(e)))?;
    stored.id_token = Secret::new(text);
    Ok(stored)
}

/// Most partitions whose view is kept; past it the views are dropped and
/// rebuilt on demand (each rebuild is one partition read).
const MAX_VIEWS: usize = 100_000;

/// One access token as the request path needs it.
#[derive(Debug)]
pub(crate) struct ViewToken {
    /// Its scopes, lower-cased (shared with the [`AccessToken`]s of hits).
    ///
    /// [`AccessToken`]: crate::AccessToken
    pub(crate) scopes: Arc<[String]>,
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

/// Decodes an opened entry's plaintext as a full read and as the request
/// path do; for fuzzing.
#[cfg(feature = "fuzzing")]
pub(crate) fn decode_opened(opened: &[u8], cache_key: &str) {
    let _ = plain::decode(opened, cache_key);
    let fields = if plain::is_compact(opened) {
        compact_access_token(opened, cache_key)
    } else {
        serde_json::from_slice::<AccessTokenFields>(opened).ok()
    };
    if let Some(f) = fields {
        let _ = f.expires_on.seconds();
    }
}

/// The fields of a compact access-token plaintext that the request path reads.
fn compact_access_token(opened: &[u8], cache_key: &str) -> Option<AccessTokenFields> {
    let (mut secret, mut client_id, mut target, mut expires_on) = (None, None, None, None);
    for field in plain::fields(opened, cache_key) {
        let (name, value) = field?;
        let text = match value {
            Field::Text(t) => Some(t),
            _ => None,
        };
        match name {
            "secret" => secret = Some(Secret::new(text?)),
            "client_id" => client_id = Some(text?.to_owned()),
            "target" => target = Some(text?.to_owned()),
            "expires_on" => {
                expires_on = Some(match value {
                    Field::Digits(n) => MsalTime::Number(i64::try_from(n).ok()?),
                    Field::Text(t) => MsalTime::Text(t.to_owned()),
                    Field::Json(j) => MsalTime::Number(j.trim().parse().ok()?),
                    Field::SessionIdToken => return None,
                });
            }
            _ => {}
        }
    }
    Some(AccessTokenFields {
        secret: secret?,
        client_id: client_id?,
        target: target.unwrap_or_default(),
        expires_on: expires_on?,
    })
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
    /// foldhash: the keys are random session ids or the app's own names.
    views: Arc<RwLock<hashbrown::HashMap<PartitionKey, Arc<PartitionView>>>>,
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

    /// Stores `session` as sign-in does: its ID token sealed with this
    /// cache's keys (the store holds no token in clear), so that the
    /// partition's `IdToken` entry can refer to it.
    pub async fn put_session(&self, session: &Session) -> Result<(), StoreError> {
        self.store
            .put_session(&seal_session(&self.keys, session))
            .await
    }

    /// The ID token of the session whose partition `key` is, opened; `None`
    /// for app partitions, a missing session or one that cannot be opened.
    async fn session_id_token(&self, key: &PartitionKey) -> Result<Option<Secret>, StoreError> {
        let PartitionKey::Session(id) = key else {
            return Ok(None);
        };
        let Some(stored) = self.store.get_session(id).await? else {
            return Ok(None);
        };
        Ok(open_session(&self.keys, stored).ok().map(|s| s.id_token))
    }

    /// Reads and decrypts a partition (empty when absent). An `IdToken`
    /// entry that refers to the session's ID token gets it back (one read of
    /// the session).
    pub async fn read(&self, key: &PartitionKey) -> Result<CachedPartition, StoreError> {
        self.read_with(key, true).await
    }

    /// Like [`read`](Self::read), without the `IdToken` entries that refer to
    /// the session's ID token (no read of the session): for the request
    /// path, which needs access and refresh tokens only.
    pub(crate) async fn read_credentials(
        &self,
        key: &PartitionKey,
    ) -> Result<CachedPartition, StoreError> {
        self.read_with(key, false).await
    }

    async fn read_with(
        &self,
        key: &PartitionKey,
        resolve: bool,
    ) -> Result<CachedPartition, StoreError> {
        let Some(stored) = self.store.get_partition(key).await? else {
            return Ok(CachedPartition::default());
        };
        let mut out = CachedPartition {
            version: stored.version,
            ..CachedPartition::default()
        };
        // Read at most once, and only when an entry refers to it.
        let mut id_token: Option<Option<Secret>> = None;
        for e in stored.entries {
            let Some((kind, mut decoded)) = self.open_entry(key, &e) else {
                out.unreadable += 1;
                continue;
            };
            if decoded.secret_is_session_id_token {
                if !resolve {
                    continue;
                }
                if id_token.is_none() {
                    id_token = Some(self.session_id_token(key).await?);
                }
                let Some(Some(token)) = &id_token else {
                    out.unreadable += 1;
                    continue;
                };
                decoded
                    .object
                    .insert("secret".into(), Value::String(token.secret().to_owned()));
            }
            let value = Value::Object(decoded.object);
            match CacheEntry::from_msal_json(kind, &e.cache_key, &value) {
                Ok(entry) => out.entries.push(entry),
                Err(_) => out.unreadable += 1,
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

    /// Opens one entry: its kind and MSAL object (a reference to the
    /// session's ID token is accepted only in an `IdToken` entry of a
    /// session partition).
    fn open_entry(
        &self,
        key: &PartitionKey,
        e: &StoredEntry,
    ) -> Option<(EntryKind, plain::Decoded)> {
        let kind: EntryKind = e.kind.parse().ok()?;
        let opened = Zeroizing::new(self.keys.open(&aad(key, &e.cache_key), &e.sealed).ok()?);
        let decoded = plain::decode(&opened, &e.cache_key)?;
        if decoded.secret_is_session_id_token
            && (kind != EntryKind::IdToken || !matches!(key, PartitionKey::Session(_)))
        {
            return None;
        }
        Some((kind, decoded))
    }

    /// The current view of `key`'s access tokens for `client_id`: the kept
    /// one when the store still reports its version, else rebuilt from the
    /// store (decrypting the access tokens only). `None` when the partition
    /// has no entries (or its session is gone).
    pub(crate) async fn access_tokens(
        &self,
        key: &PartitionKey,
        client_id: &str,
        read_along: Option<Option<u64>>,
    ) -> Result<Option<Arc<PartitionView>>, StoreError> {
        // The version read with the session, in the same snapshot: when the
        // view is of that version, it answers without asking the store.
        // Anything else (no view, another version, no entries then) asks
        // the store, as a local write or eviction since has dropped the view.
        if let Some(Some(version)) = read_along
            && let Some(view) = self.kept_view(key)
            && view.version == version
        {
            return Ok(Some(view));
        }
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
        let opened = Zeroizing::new(self.keys.open(&aad(key, &e.cache_key), &e.sealed).ok()?);
        let fields = if plain::is_compact(&opened) {
            compact_access_token(&opened, &e.cache_key)?
        } else {
            serde_json::from_slice(&opened).ok()?
        };
        let scopes = fields
            .target
            .split_whitespace()
            .map(str::to_ascii_lowercase)
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

    /// Encrypts `entry` for `key` (its secret included).
    pub fn seal(&self, key: &PartitionKey, entry: &CacheEntry) -> StoredEntry {
        self.seal_entry(key, entry, None)
    }

    /// Encrypts `entry` for `key`; an `IdToken` entry of a session partition
    /// whose token is `session_id_token` refers to it instead of holding it.
    fn seal_entry(
        &self,
        key: &PartitionKey,
        entry: &CacheEntry,
        session_id_token: Option<&Secret>,
    ) -> StoredEntry {
        let cache_key = entry.cache_key();
        let object = match entry.to_msal_json() {
            Value::Object(object) => object,
            _ => Map::new(),
        };
        let by_reference = entry.kind() == EntryKind::IdToken
            && matches!(key, PartitionKey::Session(_))
            && match (entry.secret(), session_id_token) {
                (Some(secret), Some(token)) => {
                    constant_time_eq(secret.as_bytes(), token.secret().as_bytes())
                }
                _ => false,
            };
        let plaintext = plain::encode(&object, &cache_key, by_reference);
        let sealed = self.keys.seal(&aad(key, &cache_key), &plaintext);
        let expires_at = match entry.kind() {
            EntryKind::AccessToken => entry.expires_on(),
            _ => None,
        };
        StoredEntry::new(cache_key, entry.kind().as_str(), expires_at, sealed)
    }

    /// Writes entries (insert or replace) and removes cache keys, atomically;
    /// with `expected_version`, only if the partition is still at that version.
    ///
    /// An `IdToken` entry of a session partition holding the session's own
    /// ID token is stored as a reference to it (the session is read to
    /// compare); any other ID token is stored in the entry.
    pub async fn write(
        &self,
        key: &PartitionKey,
        upsert: &[CacheEntry],
        remove: &[String],
        expected_version: Option<u64>,
    ) -> Result<u64, StoreError> {
        let session_id_token = if matches!(key, PartitionKey::Session(_))
            && upsert.iter().any(|e| e.kind() == EntryKind::IdToken)
        {
            self.session_id_token(key).await?
        } else {
            None
        };
        self.write_entries(
            key,
            upsert,
            remove,
            expected_version,
            session_id_token.as_ref(),
        )
        .await
    }

    /// [`write`](Self::write) for a session whose ID token the caller holds
    /// (sign-in, which has just stored it): the session is not read again.
    pub(crate) async fn write_for_session(
        &self,
        session: &Session,
        upsert: &[CacheEntry],
    ) -> Result<u64, StoreError> {
        let key = PartitionKey::Session(session.id.clone());
        self.write_entries(&key, upsert, &[], None, Some(&session.id_token))
            .await
    }

    async fn write_entries(
        &self,
        key: &PartitionKey,
        upsert: &[CacheEntry],
        remove: &[String],
        expected_version: Option<u64>,
        session_id_token: Option<&Secret>,
    ) -> Result<u64, StoreError> {
        let mut write = PartitionWrite::upsert(
            upsert
                .iter()
                .map(|e| self.seal_entry(key, e, session_id_token))
                .collect(),
        );
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
        let view = cache
            .access_tokens(&key, "APP", None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(view.tokens.len(), 1);
        assert_eq!(view.tokens[0].secret.secret(), "at-1");
        assert!(view.tokens[0].covers(&["read", "WRITE"]));
        assert!(!view.tokens[0].covers(&["read", "delete"]));
        // The same view while the version holds.
        let again = cache
            .access_tokens(&key, "app", None)
            .await
            .unwrap()
            .unwrap();
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
        let fresh = cache
            .access_tokens(&key, "app", None)
            .await
            .unwrap()
            .unwrap();
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
        cache
            .access_tokens(&key, "app", None)
            .await
            .unwrap()
            .unwrap();
        assert!(cache.kept_view(&key).is_some());
        cache.write(&key, &[entry], &[], None).await.unwrap();
        assert!(cache.kept_view(&key).is_none(), "a write drops the view");

        cache
            .access_tokens(&key, "app", None)
            .await
            .unwrap()
            .unwrap();
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
        assert!(
            cache
                .access_tokens(&key, "app", None)
                .await
                .unwrap()
                .is_none()
        );
    }

    fn id_token_entry(secret: &str) -> CacheEntry {
        CacheEntry::IdToken(crate::cache::IdTokenEntry {
            home_account_id: Some("uid.utid".into()),
            environment: "idp.example.com".into(),
            realm: "common".into(),
            client_id: "app".into(),
            secret: Secret::new(secret),
            extra: serde_json::Map::new(),
        })
    }

    #[tokio::test]
    async fn the_sessions_own_id_token_is_stored_once_and_read_back() {
        let (cache, session, key) = cache_with_session().await;
        // Stored as sign-in stores it: sealed.
        cache.put_session(&session).await.unwrap();
        let stored = cache
            .store()
            .get_session(&session.id)
            .await
            .unwrap()
            .unwrap();
        assert!(stored.id_token.secret().starts_with(SEALED_ID_TOKEN_PREFIX));
        let entry = id_token_entry(session.id_token.secret());
        cache
            .write(&key, std::slice::from_ref(&entry), &[], None)
            .await
            .unwrap();
        let part = cache.store().get_partition(&key).await.unwrap().unwrap();
        let inline = cache.seal(&key, &entry);
        assert!(
            part.entries[0].sealed.len() < inline.sealed.len(),
            "a reference"
        );
        let read = cache.read(&key).await.unwrap();
        assert_eq!(read.unreadable, 0);
        assert_eq!(read.entries.len(), 1);
        assert_eq!(read.entries[0].secret(), Some(session.id_token.secret()));
        assert_eq!(read.entries[0].to_msal_json(), entry.to_msal_json());
        // The request path's read leaves it out, without reading the session.
        assert!(
            cache
                .read_credentials(&key)
                .await
                .unwrap()
                .entries
                .is_empty()
        );

        // Another ID token (a refresh's) is held in the entry.
        let other = id_token_entry("another.id.token");
        cache
            .write(&key, std::slice::from_ref(&other), &[], None)
            .await
            .unwrap();
        let part = cache.store().get_partition(&key).await.unwrap().unwrap();
        assert_eq!(
            part.entries[0].sealed.len(),
            cache.seal(&key, &other).sealed.len()
        );
        let read = cache.read(&key).await.unwrap();
        assert_eq!(read.entries[0].secret(), Some("another.id.token"));
    }

    #[tokio::test]
    async fn a_reference_is_only_honoured_where_it_was_sealed() {
        let (cache, session, key) = cache_with_session().await;
        cache.put_session(&session).await.unwrap();
        let entry = id_token_entry(session.id_token.secret());
        cache
            .write(&key, std::slice::from_ref(&entry), &[], None)
            .await
            .unwrap();
        let sealed = cache
            .store()
            .get_partition(&key)
            .await
            .unwrap()
            .unwrap()
            .entries;
        // Moved to another session's partition: its associated data no longer matches.
        let other = Session::new(
            "https://idp.example.com",
            "bob",
            None,
            Secret::new("b"),
            0,
            i64::MAX,
        );
        cache.put_session(&other).await.unwrap();
        let other_key = PartitionKey::Session(other.id.clone());
        cache
            .store()
            .write_partition(&other_key, PartitionWrite::upsert(sealed))
            .await
            .unwrap();
        let read = cache.read(&other_key).await.unwrap();
        assert_eq!((read.entries.len(), read.unreadable), (0, 1));
        // The session gone, the entry cannot be completed.
        let (cache2, session2, key2) = cache_with_session().await;
        cache2.put_session(&session2).await.unwrap();
        cache2
            .write(
                &key2,
                &[id_token_entry(session2.id_token.secret())],
                &[],
                None,
            )
            .await
            .unwrap();
        let entries = cache2.store().get_partition(&key2).await.unwrap().unwrap();
        let mut stale = session2.clone();
        stale.id_token = Secret::new("sealed:AAAA");
        cache2.store().put_session(&stale).await.unwrap();
        assert_eq!(entries.entries.len(), 1);
        let read = cache2.read(&key2).await.unwrap();
        assert_eq!((read.entries.len(), read.unreadable), (0, 1));
    }
}
