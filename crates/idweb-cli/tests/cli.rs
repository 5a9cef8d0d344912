//! The `idweb` command against a real SQLite store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::sync::Arc;

use idweb::{
    CacheKeys, PartitionKey, Secret, Session, Store, TokenCache,
    msal::{AccessTokenEntry, CacheEntry, RefreshTokenEntry},
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
    populate_store(Arc::new(SqliteStore::open(path).await.unwrap())).await
}

async fn populate_store(store: Arc<dyn Store>) -> Vec<Session> {
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
    let (ok, _, err) = idweb(
        &["cache", "stats", "--store", "cassandra://u:hunter2@x"],
        None,
    );
    assert!(
        !ok && err.contains("`cassandra` store") && err.contains("sqlite://PATH"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
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
    // Each session holds an access and a refresh token.
    assert_eq!(doc["entries_removed"], 2);
    let (ok, out, err) = idweb(
        &[
            "cache", "evict", "--store", &url, "--sub", "alice", "--iss", ISS, "--json",
        ],
        None,
    );
    assert!(ok);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["sessions_removed"], 2);
    assert_eq!(doc["entries_removed"], 4);
    // One audit event (on standard error), the operator path, the subject
    // as a fingerprint only.
    let audit: Vec<&str> = err.lines().filter(|l| l.contains("idweb::audit")).collect();
    assert_eq!(audit.len(), 1, "{err}");
    for field in [
        "path=\"operator\"",
        "outcome=\"signed_out\"",
        "sessions_removed=2",
        "entries_removed=4",
        "instance=\"idweb-cli@",
    ] {
        assert!(audit[0].contains(field), "{field} in {}", audit[0]);
    }
    assert!(audit[0].contains(" sub="), "{}", audit[0]);
    assert!(!audit[0].contains("alice"), "{}", audit[0]);
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

// ---- export / import / remove-account (MSAL's format) ---------------------
// Against MSAL Python itself: tests/msal.rs.

fn stats_json(url: &str) -> serde_json::Value {
    let (ok, out, err) = idweb(&["cache", "stats", "--store", url, "--json"], None);
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[tokio::test]
async fn export_writes_an_owner_only_file_and_refuses_what_it_cannot_read() {
    let db = temp_db("export");
    populate(&db).await;
    let url = format!("sqlite://{}", db.display());
    let out_file = db.with_file_name("export.json");
    std::fs::write(&out_file, "old").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&out_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let out_arg = out_file.to_str().unwrap();
    let (ok, out, err) = idweb(
        &[
            "cache", "export", "--format", "msal", "--sid", "sid-a1", "--store", &url, "--out",
            out_arg,
        ],
        Some(KEYS),
    );
    assert!(ok, "{err}");
    assert!(!out.contains("SECRET"), "the summary shows no token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&out_file).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "an existing file's mode does not apply"
        );
    }
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out_file).unwrap()).unwrap();
    assert_eq!(doc["AccessToken"].as_object().unwrap().len(), 1);
    assert_eq!(doc["RefreshToken"].as_object().unwrap().len(), 1);
    let leftovers: Vec<_> = std::fs::read_dir(out_file.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary file left behind");

    // No match, no keys, wrong keys: an error, no document.
    let (ok, out, err) = idweb(
        &[
            "cache", "export", "--format", "msal", "--sid", "nope", "--store", &url,
        ],
        Some(KEYS),
    );
    assert!(
        !ok && out.is_empty() && err.contains("no session matches sid=nope"),
        "{err}"
    );
    let (ok, _, err) = idweb(
        &[
            "cache", "export", "--format", "msal", "--sid", "sid-a1", "--store", &url,
        ],
        None,
    );
    assert!(!ok && err.contains("IDWEB_CACHE_KEYS"), "{err}");
    let other = "c2:b3RoZXIta2V5LW90aGVyLWtleS1vdGhlci1rZXktISE=";
    let (ok, out, err) = idweb(
        &[
            "cache", "export", "--format", "msal", "--sid", "sid-a1", "--store", &url,
        ],
        Some(other),
    );
    assert!(
        !ok && out.is_empty() && err.contains("2 cache entries") && err.contains("decrypted"),
        "{err}"
    );
    let (ok, _, err) = idweb(
        &[
            "cache", "export", "--format", "adal", "--sid", "sid-a1", "--store", &url,
        ],
        Some(KEYS),
    );
    assert!(!ok && err.contains("msal"), "{err}");
}

#[tokio::test]
async fn import_replaces_same_key_entries_of_the_session() {
    let db = temp_db("import");
    let sessions = populate(&db).await;
    let url = format!("sqlite://{}", db.display());
    let file = db.with_file_name("a1.json");
    let (ok, _, err) = idweb(
        &[
            "cache",
            "export",
            "--format",
            "msal",
            "--sid",
            "sid-a1",
            "--store",
            &url,
            "--out",
            file.to_str().unwrap(),
        ],
        Some(KEYS),
    );
    assert!(ok, "{err}");
    // Alice's other session has entries with the same keys: they are replaced.
    let (ok, out, err) = idweb(
        &[
            "cache",
            "import",
            "--format",
            "msal",
            "--sid",
            "sid-a2",
            "--iss",
            ISS,
            "--store",
            &url,
            "--json",
            file.to_str().unwrap(),
        ],
        Some(KEYS),
    );
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        report,
        serde_json::json!({ "session": sessions[1].id.fingerprint(), "entries_written": 2 })
    );
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).await.unwrap());
    let cache = TokenCache::new(store, Arc::new(CacheKeys::parse(KEYS).unwrap()));
    let part = cache
        .read(&PartitionKey::Session(sessions[1].id.clone()))
        .await
        .unwrap();
    let mut secrets: Vec<&str> = part.entries.iter().filter_map(|e| e.secret()).collect();
    secrets.sort_unstable();
    assert_eq!(
        secrets,
        ["ACCESS-SECRET-alice-sid-a1", "REFRESH-SECRET-alice-sid-a1"]
    );
    assert_eq!(stats_json(&url)["entries"], 6);

    // From standard input too.
    let mut child = Command::new(env!("CARGO_BIN_EXE_idweb"))
        .args([
            "cache", "import", "--format", "msal", "--sid", "sid-a1", "--store", &url, "-",
        ])
        .env("IDWEB_CACHE_KEYS", KEYS)
        .env_remove("IDWEB_STORE")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&std::fs::read(&file).unwrap()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("imported 2 entries")
    );
}

#[tokio::test]
async fn import_refuses_bad_documents_and_other_accounts_writing_nothing() {
    let db = temp_db("import-refused");
    populate(&db).await;
    let url = format!("sqlite://{}", db.display());
    let file = db.with_file_name("a1.json");
    let (ok, _, err) = idweb(
        &[
            "cache",
            "export",
            "--format",
            "msal",
            "--sid",
            "sid-a1",
            "--store",
            &url,
            "--out",
            file.to_str().unwrap(),
        ],
        Some(KEYS),
    );
    assert!(ok, "{err}");
    let good: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let before = stats_json(&url);
    let import = |doc: &[u8], sid: &str| {
        let path = db.with_file_name("candidate.json");
        std::fs::write(&path, doc).unwrap();
        idweb(
            &[
                "cache",
                "import",
                "--format",
                "msal",
                "--sid",
                sid,
                "--store",
                &url,
                path.to_str().unwrap(),
            ],
            Some(KEYS),
        )
    };

    // Over 1 MiB.
    let mut huge = good.clone();
    huge["AppMetadata"] = serde_json::json!({ "x": { "padding": "x".repeat(1 << 20) } });
    let (ok, _, err) = import(huge.to_string().as_bytes(), "sid-a1");
    assert!(!ok && err.contains("larger than 1 MiB"), "{err}");
    // Not JSON.
    let (ok, _, err) = import(b"{ not json", "sid-a1");
    assert!(
        !ok && err.contains("is not JSON") && err.contains("line 1"),
        "{err}"
    );
    // A malformed entry is named.
    let mut bad = good.clone();
    let at_key = bad["AccessToken"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    bad["AccessToken"][&at_key]
        .as_object_mut()
        .unwrap()
        .remove("expires_on");
    let (ok, _, err) = import(bad.to_string().as_bytes(), "sid-a1");
    assert!(
        !ok && err.contains(&format!("`{at_key}`")) && err.contains("expires_on"),
        "{err}"
    );
    assert!(!err.contains("SECRET"), "no token in the error");
    // Alice's tokens into Bob's session.
    let (ok, _, err) = import(serde_json::to_vec(&good).unwrap().as_slice(), "sid-b1");
    assert!(
        !ok && err.contains("is not of session") && err.contains("nothing was imported"),
        "{err}"
    );
    // Another provider's tokens.
    let mut elsewhere = good.clone();
    elsewhere["AccessToken"][&at_key]["environment"] = "idp.elsewhere.example".into();
    let (ok, _, err) = import(elsewhere.to_string().as_bytes(), "sid-a1");
    assert!(!ok && err.contains("idp.elsewhere.example"), "{err}");
    // No such session.
    let (ok, _, err) = import(serde_json::to_vec(&good).unwrap().as_slice(), "sid-zz");
    assert!(
        !ok && err.contains("no session matches sid=sid-zz"),
        "{err}"
    );
    assert_eq!(stats_json(&url), before, "nothing was written");
}

#[tokio::test]
async fn import_needs_exactly_one_session() {
    let db = temp_db("import-several");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).await.unwrap());
    let now = idweb::unix_seconds(std::time::SystemTime::now());
    for _ in 0..2 {
        let s = Session::new(
            ISS,
            "carol",
            Some("shared-sid".into()),
            Secret::new("x"),
            now,
            now + 60,
        );
        store.put_session(&s).await.unwrap();
    }
    let url = format!("sqlite://{}", db.display());
    let file = db.with_file_name("empty.json");
    std::fs::write(&file, "{}").unwrap();
    let (ok, _, err) = idweb(
        &[
            "cache",
            "import",
            "--format",
            "msal",
            "--sid",
            "shared-sid",
            "--store",
            &url,
            file.to_str().unwrap(),
        ],
        Some(KEYS),
    );
    assert!(!ok && err.contains("2 sessions match"), "{err}");
}

#[tokio::test]
async fn remove_account_removes_the_sessions_tokens_and_keeps_it_signed_in() {
    let db = temp_db("remove-account");
    let sessions = populate(&db).await;
    let url = format!("sqlite://{}", db.display());
    let (ok, out, err) = idweb(
        &[
            "cache",
            "remove-account",
            "--sid",
            "sid-b1",
            "--store",
            &url,
            "--json",
        ],
        Some(KEYS),
    );
    assert!(ok, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let report = &doc["sessions"][0];
    assert_eq!(report["session"], sessions[2].id.fingerprint());
    assert_eq!(report["home_account_id"], sessions[2].account_id.as_str());
    assert_eq!(report["environment"], "idp.example.com");
    assert_eq!(report["client_id"], "app");
    let kinds: Vec<&str> = report["entries_removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.len(), 2);
    assert!(kinds.contains(&"AccessToken") && kinds.contains(&"RefreshToken"));
    assert_eq!(
        stats_json(&url),
        serde_json::json!({ "sessions": 3, "partitions": 2, "entries": 4, "tombstones": 0 }),
        "bob is still signed in; his tokens are gone, nobody else's"
    );
    // Again: nothing left to remove. Text output.
    let (ok, out, err) = idweb(
        &[
            "cache",
            "remove-account",
            "--sid",
            "sid-b1",
            "--store",
            &url,
        ],
        Some(KEYS),
    );
    assert!(ok && out.contains("removed 0 entries"), "{out} {err}");
    // Another account: nothing of bob's session matches.
    let (ok, out, _) = idweb(
        &[
            "cache",
            "remove-account",
            "--sid",
            "sid-a1",
            "--store",
            &url,
            "--account",
            "someone.else",
        ],
        Some(KEYS),
    );
    assert!(ok && out.contains("removed 0 entries"), "{out}");
    assert_eq!(stats_json(&url)["entries"], 4);
}

#[tokio::test]
async fn list_stats_and_evict_work_against_redis() {
    let prefix = format!("cli-test-{}", idweb::SessionId::generate().fingerprint());
    let redis = idweb_store_redis::RedisStore::open_with_prefix(
        "redis://127.0.0.1:6379",
        &prefix,
        Arc::new(idweb::SystemClock),
    )
    .await
    .expect("the Redis at 127.0.0.1:6379 must be running");
    populate_store(Arc::new(redis)).await;
    let url = "redis://127.0.0.1:6379";
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_idweb"))
            .args(args)
            .env("IDWEB_STORE_PREFIX", &prefix)
            .env("IDWEB_CACHE_KEYS", KEYS)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let stats = run(&["cache", "stats", "--store", url, "--json"]);
    assert_eq!(
        (stats["sessions"].as_u64(), stats["entries"].as_u64()),
        (Some(3), Some(6))
    );
    let list = run(&[
        "cache", "list", "--store", url, "--json", "--iss", ISS, "--sub", "alice",
    ]);
    assert_eq!(list["sessions"].as_array().unwrap().len(), 2);
    assert_eq!(list["sessions"][0]["entries"].as_array().unwrap().len(), 2);
    // A running app instance listens on the store's sign-out bus.
    let listener = idweb_store_redis::RedisSignOutBus::new(
        idweb_store_redis::RedisStore::open_with_prefix(url, &prefix, Arc::new(idweb::SystemClock))
            .await
            .unwrap(),
    )
    .await
    .expect("subscribe to the sign-out channel");
    let mut heard = idweb::SignOutBus::subscribe(&listener);
    let evicted = run(&["cache", "evict", "--store", url, "--json", "--sub", "alice"]);
    assert_eq!(evicted["sessions_removed"], 2);
    assert_eq!(evicted["events_published"], 1);
    let event = tokio::time::timeout(std::time::Duration::from_secs(20), heard.recv())
        .await
        .expect("the app hears the operator's eviction")
        .unwrap();
    assert_eq!(event.path, idweb::SignOutPath::Operator);
    assert_eq!(
        (event.iss.as_str(), event.sub.as_deref()),
        (ISS, Some("alice"))
    );
    assert_eq!(event.sessions.len(), 2);
    assert!(!event.local);
    let stats = run(&["cache", "stats", "--store", url, "--json"]);
    assert_eq!(
        (stats["sessions"].as_u64(), stats["tombstones"].as_u64()),
        (Some(1), Some(1))
    );
    let evicted = run(&[
        "cache", "evict", "--store", url, "--json", "--sid", "sid-b1",
    ]);
    assert_eq!(evicted["sessions_removed"], 1);
}
