//! The `idweb` command against a real SQLite store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::sync::Arc;

use idweb::{
    AccessTokenEntry, CacheEntry, CacheKeys, PartitionKey, RefreshTokenEntry, Secret, Session,
    Store, TokenCache,
};
use idweb_store_sqlite::SqliteStore;

const KEYS: &str = "c1:Y2xpLXRlc3RzLW9ubHktY2xpLXRlc3RzLW9ubHktISE=";
const ISS: &str = "https://idp.example.com";

fn idweb(args: &[&str], keys: Option<&str>) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_idweb"));
    cmd.args(args)
        .env_remove("IDWEB_CACHE_KEYS")
        .env_remove("IDWEB_STORE");
    if let Some(k) = keys {
        cmd.env("IDWEB_CACHE_KEYS", k);
    }
    let out = cmd.output().expect("run idweb");
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

async fn populate(path: &std::path::Path) -> Vec<Session> {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(path).await.unwrap());
    let cache = TokenCache::new(store.clone(), Arc::new(CacheKeys::parse(KEYS).unwrap()));
    let now = idweb::unix_seconds(std::time::SystemTime::now());
    let mut sessions = Vec::new();
    for (sub, sid) in [("alice", "sid-a1"), ("alice", "sid-a2"), ("bob", "sid-b1")] {
        let s = Session::new(
            ISS,
            sub,
            Some(sid.into()),
            Secret::new("id.token.x"),
            now,
            now + 3600,
        );
        store.put_session(&s).await.unwrap();
        let at = CacheEntry::AccessToken(AccessTokenEntry {
            home_account_id: Some(s.account_id.clone()),
            environment: "idp.example.com".into(),
            client_id: "app".into(),
            realm: "".into(),
            target: "api://todo/todos.read".into(),
            secret: Secret::new(format!("ACCESS-SECRET-{sub}-{sid}")),
            token_type: Some("Bearer".into()),
            cached_at: Some(now),
            expires_on: now + 3600,
            extended_expires_on: None,
            refresh_on: None,
            key_id: None,
            ext_cache_key: None,
            extra: Default::default(),
        });
        let rt = CacheEntry::RefreshToken(RefreshTokenEntry {
            home_account_id: Some(s.account_id.clone()),
            environment: "idp.example.com".into(),
            client_id: "app".into(),
            secret: Secret::new(format!("REFRESH-SECRET-{sub}-{sid}")),
            target: None,
            last_modification_time: Some(now),
            family_id: None,
            extra: Default::default(),
        });
        cache
            .write(&PartitionKey::Session(s.id.clone()), &[at, rt], &[], None)
            .await
            .unwrap();
        sessions.push(s);
    }
    sessions
}

fn temp_db(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("idweb.sqlite");
    let _ = std::fs::remove_file(&db);
    db
}

#[tokio::test]
async fn list_shows_sessions_and_entries_as_stable_json_without_secrets() {
    let db = temp_db("list");
    populate(&db).await;
    let url = format!("sqlite://{}", db.display());
    let (ok, out, err) = idweb(&["cache", "list", "--store", &url, "--json"], Some(KEYS));
    assert!(ok, "{err}");
    assert!(!out.contains("SECRET"), "no token secret in the output");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let sessions = doc["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 3);
    for s in sessions {
        for field in [
            "session",
            "iss",
            "sub",
            "sid",
            "name",
            "created_at",
            "expires_at",
            "entries",
            "unreadable_entries",
        ] {
            assert!(s.get(field).is_some(), "field {field} in {s}");
        }
        let kinds: Vec<&str> = s["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["AccessToken", "RefreshToken"]);
        assert_eq!(s["entries"][0]["scopes"], "api://todo/todos.read");
        assert!(s["entries"][0]["expires_at"].is_i64());
        assert_eq!(s["unreadable_entries"], 0);
    }

    let (ok, out, _) = idweb(
        &["cache", "list", "--store", &url, "--json", "--sub", "alice"],
        Some(KEYS),
    );
    assert!(ok);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["sessions"].as_array().unwrap().len(), 2);
    let (ok, out, _) = idweb(
        &[
            "cache", "list", "--store", &url, "--json", "--iss", ISS, "--sid", "sid-b1",
        ],
        Some(KEYS),
    );
    assert!(ok);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let found = doc["sessions"].as_array().unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["sub"], "bob");

    // Text output too, still without secrets.
    let (ok, out, _) = idweb(&["cache", "list", "--store", &url], Some(KEYS));
    assert!(
        ok && out.contains("sub=alice") && out.contains("AccessToken") && !out.contains("SECRET")
    );

    // With other keys the entries are counted as unreadable, not shown.
    let other = "c2:b3RoZXIta2V5LW90aGVyLWtleS1vdGhlci1rZXktISE=";
    let (ok, out, _) = idweb(&["cache", "list", "--store", &url, "--json"], Some(other));
    assert!(ok);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["sessions"][0]["unreadable_entries"], 2);
    assert!(doc["sessions"][0]["entries"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn stats_counts_what_the_store_holds() {
    let db = temp_db("stats");
    populate(&db).await;
    let url = format!("sqlite://{}", db.display());
    let (ok, out, err) = idweb(&["cache", "stats", "--store", &url, "--json"], None);
    assert!(ok, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        doc,
        serde_json::json!({ "sessions": 3, "partitions": 3, "entries": 6, "tombstones": 0 })
    );
}

#[test]
fn bad_invocations_fail_with_a_clear_message() {
    let (ok, _, err) = idweb(&["cache", "list", "--store", "sqlite://x.sqlite"], None);
    assert!(!ok && err.contains("IDWEB_CACHE_KEYS"), "{err}");
    let (ok, _, err) = idweb(&["cache", "stats", "--store", "memory"], None);
    assert!(!ok && err.contains("memory"), "{err}");
    let (ok, _, err) = idweb(&["cache", "stats", "--store", "cassandra://x"], None);
    assert!(!ok && err.contains("unsupported store"), "{err}");
    let (ok, _, err) = idweb(
        &["cache", "list", "--store", "sqlite://x.sqlite"],
        Some("garbage"),
    );
    assert!(!ok && err.contains("IDWEB_CACHE_KEYS"), "{err}");
}

#[tokio::test]
async fn evict_signs_out_by_sub_or_sid_and_tombstones() {
    let db = temp_db("evict");
    let sessions = populate(&db).await;
    let url = format!("sqlite://{}", db.display());
    let (ok, out, err) = idweb(
        &[
            "cache", "evict", "--store", &url, "--sid", "sid-b1", "--json",
        ],
        None,
    );
    assert!(ok, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["sessions_removed"], 1);
    let (ok, out, _) = idweb(
        &[
            "cache", "evict", "--store", &url, "--sub", "alice", "--iss", ISS, "--json",
        ],
        None,
    );
    assert!(ok);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["sessions_removed"], 2);
    let (ok, out, _) = idweb(&["cache", "stats", "--store", &url, "--json"], None);
    assert!(ok);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        doc,
        serde_json::json!({ "sessions": 0, "partitions": 0, "entries": 0, "tombstones": 2 })
    );
    // The tombstones refuse the sessions' return.
    let store = SqliteStore::open(&db).await.unwrap();
    assert!(matches!(
        store.put_session(&sessions[0]).await,
        Err(idweb::StoreError::SignedOut)
    ));
    let (ok, _, err) = idweb(&["cache", "evict", "--store", &url], None);
    assert!(!ok && err.contains("--sub"), "{err}");
}
