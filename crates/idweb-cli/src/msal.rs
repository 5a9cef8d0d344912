//! `idweb cache export|import|remove-account`: a session's token-cache
//! partition as MSAL's JSON document, and MSAL's `remove_account` on it.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use idweb::{
    CacheKeys, PartitionKey, Session, Store, StoreError, TokenCache,
    msal::{
        CacheEntry, MsalFormatError, export_msal_json, import_msal_json, msal_environment,
        remove_account_entries,
    },
};
use serde::Serialize;

use crate::{Filter, matching_sessions};

/// The largest MSAL document `idweb cache import` reads: 1 MiB.
pub const MAX_IMPORT_BYTES: usize = 1 << 20;

/// How often a removal is retried when the partition changes under it.
const REMOVE_ATTEMPTS: usize = 5;

/// What went wrong in `export`, `import` or `remove-account`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MsalCommandError {
    /// The store failed.
    #[error("the store failed")]
    Store(#[source] StoreError),
    /// No live session matches the selection.
    #[error("no session matches {0}")]
    NoSession(String),
    /// `import` needs exactly one session.
    #[error(
        "{count} sessions match {selector}; import writes into exactly one session (narrow it with --iss)"
    )]
    SeveralSessions {
        /// How many matched.
        count: usize,
        /// The selection, as given.
        selector: String,
    },
    /// Entries the given keys cannot decrypt: nothing is exported or changed.
    #[error(
        "{count} cache entries of session #{session} cannot be decrypted with IDWEB_CACHE_KEYS; nothing was done"
    )]
    Unreadable {
        /// How many.
        count: usize,
        /// The session's fingerprint.
        session: String,
    },
    /// The document could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The document is larger than [`MAX_IMPORT_BYTES`].
    #[error(
        "{path} is larger than 1 MiB; an MSAL token cache document is far smaller, refusing it"
    )]
    TooLarge {
        /// The file.
        path: String,
    },
    /// The document is not JSON.
    #[error("{path} is not JSON")]
    NotJson {
        /// The file.
        path: String,
        /// The parser's error (line and column).
        #[source]
        source: serde_json::Error,
    },
    /// The document is JSON but not MSAL's token cache schema.
    #[error("{path} is not a valid MSAL token cache")]
    Format {
        /// The file.
        path: String,
        /// Which entry is wrong, and how.
        #[source]
        source: MsalFormatError,
    },
    /// An entry belongs to another account or provider than the session.
    #[error(
        "token cache entry {entry} is not of session #{session}'s account ({found}; the \
         session's: {expected}); nothing was imported"
    )]
    OtherAccount {
        /// The entry: its cache key and section.
        entry: String,
        /// The entry's `home_account_id` and `environment`.
        found: String,
        /// The session's fingerprint.
        session: String,
        /// What the session accepts.
        expected: String,
    },
    /// The partition holds tokens of several clients: the app's must be named.
    #[error(
        "session #{session} holds tokens of several clients ({clients}); say which app removes the account with --client-id"
    )]
    AmbiguousClient {
        /// The session's fingerprint.
        session: String,
        /// The client ids found.
        clients: String,
    },
}

impl From<StoreError> for MsalCommandError {
    fn from(e: StoreError) -> Self {
        MsalCommandError::Store(e)
    }
}

fn describe(filter: &Filter) -> String {
    let mut parts = Vec::new();
    if let Some(iss) = &filter.iss {
        parts.push(format!("iss={iss}"));
    }
    if let Some(sub) = &filter.sub {
        parts.push(format!("sub={sub}"));
    }
    if let Some(sid) = &filter.sid {
        parts.push(format!("sid={sid}"));
    }
    if parts.is_empty() {
        "(every session)".into()
    } else {
        parts.join(" ")
    }
}

async fn sessions_or_error(
    store: &dyn Store,
    filter: &Filter,
) -> Result<Vec<Session>, MsalCommandError> {
    let sessions = matching_sessions(store, filter).await?;
    if sessions.is_empty() {
        return Err(MsalCommandError::NoSession(describe(filter)));
    }
    Ok(sessions)
}

/// The document `idweb cache export --format msal` writes.
#[derive(Debug)]
#[non_exhaustive]
pub struct MsalExport {
    /// MSAL's JSON document ([`export_msal_json`] of every entry). It holds
    /// tokens.
    pub document: serde_json::Value,
    /// The sessions exported.
    pub sessions: usize,
    /// The entries exported.
    pub entries: usize,
}

/// Exports the partitions of the sessions matching `filter` as one MSAL
/// document: exactly [`export_msal_json`] of their entries, session after
/// session (an entry with the same key as an earlier one replaces it, as in
/// MSAL). Fails, exporting nothing, when no session matches or an entry
/// cannot be decrypted.
pub async fn export_msal(
    store: Arc<dyn Store>,
    keys: Arc<CacheKeys>,
    filter: &Filter,
) -> Result<MsalExport, MsalCommandError> {
    let sessions = sessions_or_error(store.as_ref(), filter).await?;
    let cache = TokenCache::new(store, keys);
    let mut entries = Vec::new();
    for s in &sessions {
        let part = cache.read(&PartitionKey::Session(s.id.clone())).await?;
        if part.unreadable > 0 {
            return Err(MsalCommandError::Unreadable {
                count: part.unreadable,
                session: s.id.fingerprint(),
            });
        }
        entries.extend(part.entries);
    }
    Ok(MsalExport {
        document: export_msal_json(&entries),
        sessions: sessions.len(),
        entries: entries.len(),
    })
}

/// Writes `bytes` to `path`, readable and writable by the owner only (mode
/// 0600 on Unix): through a new file in the same folder, renamed over `path`,
/// so that an existing file's permissions never apply and no reader sees half
/// a document.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the output path names no file"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let result = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads an MSAL document from `path` (`-`: standard input), refusing more
/// than [`MAX_IMPORT_BYTES`].
pub fn read_msal_document(path: &str) -> Result<Vec<u8>, MsalCommandError> {
    let read_err = |source| MsalCommandError::Read {
        path: path.to_owned(),
        source,
    };
    let limit = u64::try_from(MAX_IMPORT_BYTES).unwrap_or(u64::MAX) + 1;
    let mut bytes = Vec::new();
    if path == "-" {
        std::io::stdin()
            .lock()
            .take(limit)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(limit).read_to_end(&mut bytes))
            .map_err(read_err)?;
    }
    if bytes.len() > MAX_IMPORT_BYTES {
        return Err(MsalCommandError::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

/// What `idweb cache import --json` prints.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ImportReport {
    /// A fingerprint of the session id (never the id itself).
    pub session: String,
    /// Entries written (inserted or replacing the entry with the same key).
    pub entries_written: usize,
}

/// Imports an MSAL document (`document`, as read from `path`, which only
/// names it in errors) into the partition of the one session matching
/// `filter`.
///
/// Every entry is written through [`TokenCache::write`] (encrypted), replacing
/// the entry with the same (recomputed) key; other entries stay. Refused as a
/// whole, writing nothing: more than [`MAX_IMPORT_BYTES`], not JSON, not
/// MSAL's schema (the error names the entry), no or several matching
/// sessions, or an entry of another account or provider than the session's
/// — an entry's `environment` must be the host of the session's issuer, and
/// its `home_account_id` the session's account id, its `sub` (what MSAL uses
/// for providers without `client_info`), or `null`.
pub async fn import_msal(
    store: Arc<dyn Store>,
    keys: Arc<CacheKeys>,
    filter: &Filter,
    path: &str,
    document: &[u8],
) -> Result<ImportReport, MsalCommandError> {
    if document.len() > MAX_IMPORT_BYTES {
        return Err(MsalCommandError::TooLarge {
            path: path.to_owned(),
        });
    }
    let doc: serde_json::Value =
        serde_json::from_slice(document).map_err(|source| MsalCommandError::NotJson {
            path: path.to_owned(),
            source,
        })?;
    let entries = import_msal_json(&doc).map_err(|source| MsalCommandError::Format {
        path: path.to_owned(),
        source,
    })?;
    let mut sessions = sessions_or_error(store.as_ref(), filter).await?;
    if sessions.len() > 1 {
        return Err(MsalCommandError::SeveralSessions {
            count: sessions.len(),
            selector: describe(filter),
        });
    }
    let Some(session) = sessions.pop() else {
        return Err(MsalCommandError::NoSession(describe(filter)));
    };
    let environment = msal_environment(&session.iss);
    for e in &entries {
        let home_ok = e
            .home_account_id()
            .is_none_or(|h| h == session.account_id || h == session.sub);
        if !home_ok || e.environment() != environment {
            return Err(MsalCommandError::OtherAccount {
                entry: format!("`{}` in `{}`", e.cache_key(), e.kind()),
                found: format!(
                    "home_account_id {}, environment `{}`",
                    e.home_account_id()
                        .map_or_else(|| "null".into(), |h| format!("`{h}`")),
                    e.environment()
                ),
                session: session.id.fingerprint(),
                expected: format!(
                    "home_account_id `{}` or `{}`, environment `{environment}`",
                    session.account_id, session.sub
                ),
            });
        }
    }
    // One write per key, the document's last entry winning (as in MSAL).
    let mut unique: Vec<CacheEntry> = Vec::with_capacity(entries.len());
    for e in entries {
        let key = e.cache_key();
        unique.retain(|kept| kept.cache_key() != key);
        unique.push(e);
    }
    let cache = TokenCache::new(store, keys);
    cache
        .write(
            &PartitionKey::Session(session.id.clone()),
            &unique,
            &[],
            None,
        )
        .await?;
    Ok(ImportReport {
        session: session.id.fingerprint(),
        entries_written: unique.len(),
    })
}

/// Which account `remove-account` removes, and for which app.
#[derive(Debug, Clone, Default)]
pub struct RemoveAccountOptions {
    /// The account's `home_account_id`; default: the session's account id.
    pub home_account_id: Option<String>,
    /// The account's `environment`; default: the host of the session's issuer.
    pub environment: Option<String>,
    /// The app that removes it (MSAL's `client_id`, for the refresh-token
    /// ownership check); default: the one client the partition's entries
    /// are of.
    pub client_id: Option<String>,
}

/// One removed entry, as `remove-account --json` prints it (no secret).
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct RemovedEntry {
    /// MSAL's section name.
    pub kind: String,
    /// The MSAL cache key.
    pub cache_key: String,
}

/// What `remove-account` did to one session's partition.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct RemoveAccountReport {
    /// A fingerprint of the session id (never the id itself).
    pub session: String,
    /// The account removed.
    pub home_account_id: String,
    /// Its environment.
    pub environment: String,
    /// The app on whose behalf (null when the partition holds no client's entries).
    pub client_id: Option<String>,
    /// The entries removed.
    pub entries_removed: Vec<RemovedEntry>,
}

/// MSAL Python's `remove_account(account)` on the partition of every session
/// matching `filter` ([`remove_account_entries`] decides what goes; the
/// session itself stays signed in — `evict` signs out). Conditional on the
/// partition's version, retried when it changed meanwhile.
pub async fn remove_account(
    store: Arc<dyn Store>,
    keys: Arc<CacheKeys>,
    filter: &Filter,
    options: &RemoveAccountOptions,
) -> Result<Vec<RemoveAccountReport>, MsalCommandError> {
    let sessions = sessions_or_error(store.as_ref(), filter).await?;
    let cache = TokenCache::new(store, keys);
    let mut reports = Vec::with_capacity(sessions.len());
    for s in sessions {
        let key = PartitionKey::Session(s.id.clone());
        let home = options
            .home_account_id
            .clone()
            .unwrap_or_else(|| s.account_id.clone());
        let environment = options
            .environment
            .clone()
            .unwrap_or_else(|| msal_environment(&s.iss));
        let mut attempt = 0;
        let report = loop {
            attempt += 1;
            let part = cache.read(&key).await?;
            if part.unreadable > 0 {
                return Err(MsalCommandError::Unreadable {
                    count: part.unreadable,
                    session: s.id.fingerprint(),
                });
            }
            let client_id = match &options.client_id {
                Some(c) => Some(c.clone()),
                None => {
                    let mut clients: Vec<&str> = part
                        .entries
                        .iter()
                        .filter_map(CacheEntry::client_id)
                        .collect();
                    clients.sort_unstable();
                    clients.dedup();
                    match clients.as_slice() {
                        [] => None,
                        [one] => Some((*one).to_owned()),
                        many => {
                            return Err(MsalCommandError::AmbiguousClient {
                                session: s.id.fingerprint(),
                                clients: many.join(", "),
                            });
                        }
                    }
                }
            };
            let removed = remove_account_entries(
                &part.entries,
                client_id.as_deref().unwrap_or(""),
                &environment,
                &home,
            );
            let report = RemoveAccountReport {
                session: s.id.fingerprint(),
                home_account_id: home.clone(),
                environment: environment.clone(),
                client_id,
                entries_removed: removed
                    .iter()
                    .map(|e| RemovedEntry {
                        kind: e.kind().to_string(),
                        cache_key: e.cache_key(),
                    })
                    .collect(),
            };
            if removed.is_empty() {
                break report;
            }
            let keys: Vec<String> = removed.iter().map(|e| e.cache_key()).collect();
            match cache.write(&key, &[], &keys, Some(part.version)).await {
                Ok(_) => break report,
                Err(StoreError::Conflict { .. }) if attempt < REMOVE_ATTEMPTS => continue,
                Err(e) => return Err(e.into()),
            }
        };
        reports.push(report);
    }
    Ok(reports)
}
