//! The optional state file ([`DevIdpConfig::state_file`](crate::DevIdpConfig::state_file)):
//! the signing keys, the browser sessions and the refresh tokens, so that a
//! restarted provider still validates the tokens it issued, still knows the
//! sessions its relying parties hold (`id_token_hint`, `sid`), and still
//! honours the refresh tokens in their caches.
//!
//! The file is JSON, written whole to a temporary file (mode 0600 on Unix)
//! and renamed over the old one, so a crash leaves the old or the new file,
//! never half of one. It holds private keys and session cookies: it is a
//! development convenience, like the rest of this crate.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::crypto::{SigningKey, b64, b64_decode};
use crate::state::{Family, IdpSession, RefreshRecord, State};

/// The format version written in the file.
const VERSION: u64 = 1;

/// What the state file holds.
#[derive(Debug, Default)]
pub(crate) struct Saved {
    pub(crate) keys: Vec<Arc<SigningKey>>,
    pub(crate) sessions: HashMap<String, IdpSession>,
    pub(crate) refresh_tokens: HashMap<String, RefreshRecord>,
    pub(crate) families: HashMap<u64, Family>,
    pub(crate) next_family: u64,
}

fn invalid(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "the development identity provider's state file {} is not valid ({what}); delete it to start afresh",
            path.display()
        ),
    )
}

/// Reads the state file; `None` when it does not exist yet.
pub(crate) fn load(path: &Path) -> io::Result<Option<Saved>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let doc: Value = serde_json::from_slice(&bytes).map_err(|_| invalid(path, "not JSON"))?;
    if doc.get("version").and_then(Value::as_u64) != Some(VERSION) {
        return Err(invalid(path, "unknown version"));
    }
    parse(&doc)
        .ok_or_else(|| invalid(path, "unexpected content"))
        .map(Some)
}

fn str_of(v: &Value, name: &str) -> Option<String> {
    v.get(name)?.as_str().map(str::to_owned)
}

fn i64_of(v: &Value, name: &str) -> Option<i64> {
    v.get(name)?.as_i64()
}

fn strings(v: &Value, name: &str) -> Option<Vec<String>> {
    v.get(name)?
        .as_array()?
        .iter()
        .map(|s| s.as_str().map(str::to_owned))
        .collect()
}

fn jtis(v: &Value) -> Option<Vec<(String, i64)>> {
    v.get("access_tokens")?
        .as_array()?
        .iter()
        .map(|p| Some((str_of(p, "jti")?, i64_of(p, "exp")?)))
        .collect()
}

fn parse(doc: &Value) -> Option<Saved> {
    let mut saved = Saved::default();
    for key in doc.get("keys")?.as_array()? {
        let der = b64_decode(key.as_str()?)?;
        saved
            .keys
            .push(Arc::new(SigningKey::from_pkcs8(&der).ok()?));
    }
    if saved.keys.is_empty() {
        return None;
    }
    for s in doc.get("sessions")?.as_array()? {
        saved.sessions.insert(
            str_of(s, "cookie")?,
            IdpSession {
                sid: str_of(s, "sid")?,
                username: str_of(s, "username")?,
                auth_time: i64_of(s, "auth_time")?,
                clients: strings(s, "clients")?.into_iter().collect::<BTreeSet<_>>(),
            },
        );
    }
    for r in doc.get("refresh_tokens")?.as_array()? {
        saved.refresh_tokens.insert(
            str_of(r, "hash")?,
            RefreshRecord {
                family: r.get("family")?.as_u64()?,
                client_id: str_of(r, "client_id")?,
                expires_at: i64_of(r, "expires_at")?,
                rotated: r.get("rotated")?.as_bool()?,
            },
        );
    }
    for f in doc.get("families")?.as_array()? {
        saved.families.insert(
            f.get("id")?.as_u64()?,
            Family {
                username: str_of(f, "username")?,
                sid: str_of(f, "sid")?,
                auth_time: i64_of(f, "auth_time")?,
                scope: strings(f, "scope")?,
                revoked: f.get("revoked")?.as_bool()?,
                access_tokens: jtis(f)?,
            },
        );
    }
    saved.next_family = doc.get("next_family")?.as_u64()?;
    Some(saved)
}

/// The state file's content for `st`; `None` if a key cannot be exported.
pub(crate) fn snapshot(st: &State) -> Option<Vec<u8>> {
    let keys = st
        .keys
        .iter()
        .map(|k| k.to_pkcs8().ok().map(|der| b64(&der)))
        .collect::<Option<Vec<_>>>()?;
    let mut sessions: Vec<Value> = st
        .sessions
        .iter()
        .map(|(cookie, s)| {
            json!({
                "cookie": cookie,
                "sid": s.sid,
                "username": s.username,
                "auth_time": s.auth_time,
                "clients": s.clients,
            })
        })
        .collect();
    sessions.sort_by(|a, b| a["cookie"].as_str().cmp(&b["cookie"].as_str()));
    let mut refresh: Vec<Value> = st
        .refresh_tokens
        .iter()
        .map(|(hash, r)| {
            json!({
                "hash": hash,
                "family": r.family,
                "client_id": r.client_id,
                "expires_at": r.expires_at,
                "rotated": r.rotated,
            })
        })
        .collect();
    refresh.sort_by(|a, b| a["hash"].as_str().cmp(&b["hash"].as_str()));
    let mut families: Vec<Value> = st
        .families
        .iter()
        .map(|(id, f)| {
            json!({
                "id": id,
                "username": f.username,
                "sid": f.sid,
                "auth_time": f.auth_time,
                "scope": f.scope,
                "revoked": f.revoked,
                "access_tokens": f.access_tokens.iter()
                    .map(|(jti, exp)| json!({ "jti": jti, "exp": exp }))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    families.sort_by_key(|f| f["id"].as_u64());
    let doc = json!({
        "version": VERSION,
        "keys": keys,
        "sessions": sessions,
        "refresh_tokens": refresh,
        "families": families,
        "next_family": st.next_family(),
    });
    serde_json::to_vec_pretty(&doc).ok()
}

/// Writes `bytes` to `path` through a temporary file (mode 0600 on Unix)
/// renamed over it.
pub(crate) fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = PathBuf::from(path);
    tmp.as_mut_os_string().push(".tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    io::Write::write_all(&mut file, bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_key_survives_the_round_trip() {
        let key = SigningKey::generate().unwrap();
        let back = SigningKey::from_pkcs8(&key.to_pkcs8().unwrap()).unwrap();
        assert_eq!(key.kid(), back.kid());
        assert_eq!(key.jwk(), back.jwk());
    }
}
