//! MSAL Python 1.39 against `idweb cache export|import|remove-account`, on a
//! real SQLite store, offline.
//!
//! MSAL runs in `.test-deps/venv` (made by `scripts/setup-test-deps`) through
//! `interop/msal/check.py`, whose HTTP client answers only the provider's
//! discovery document (and, when MSAL writes a cache, one token request).
//! Both sides use one made-up provider: MSAL refuses authorities that are not
//! https or have no path, so the issuer is `https://idp.example.test/realms/demo`
//! and the partitions are built for it (environment `idp.example.test`, realm
//! `realms` — the first path segment of the token endpoint), the way idweb's
//! sign-in builds them.
//!
//! Tokens never appear in a failure message: the tests compare SHA-256
//! hashes, and MSAL's output (which may hold tokens) is never printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use idweb::{
    CacheKeys, PartitionKey, Secret, Session, Store, TokenCache,
    msal::{
        CacheEntry, TokenResponseParts, account_identity, entries_from_token_response,
        export_msal_json,
    },
};
use idweb_store_sqlite::SqliteStore;
use serde_json::{Value, json};

const KEYS: &str = "m1:bXNhbC1pbnRlcm9wLW1zYWwtaW50ZXJvcC1tc2FsLSE=";
const AUTHORITY: &str = "https://idp.example.test/realms/demo";
const TOKEN_ENDPOINT: &str = "https://idp.example.test/realms/demo/protocol/openid-connect/token";
const CLIENT_ID: &str = "idweb-interop";
const SCOPES: &str = "openid profile offline_access api.read";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The virtual environment's interpreter: missing is a failure, never a skip.
fn python() -> PathBuf {
    let python = workspace_root().join(".test-deps/venv/bin/python");
    assert!(
        python.exists(),
        "MSAL Python is not installed (.test-deps/venv): run scripts/setup-test-deps"
    );
    python
}

fn sha256_hex(text: &str) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Runs `check.py MODE` and parses its JSON output. On failure only MSAL's
/// standard error is shown (the script never writes tokens there).
fn msal(mode: &str, args: &[&str]) -> Value {
    let out = Command::new(python())
        .arg("-B")
        .arg(workspace_root().join("interop/msal/check.py"))
        .arg(mode)
        .args([
            "--authority",
            AUTHORITY,
            "--token-endpoint",
            TOKEN_ENDPOINT,
            "--client-id",
            CLIENT_ID,
        ])
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run MSAL Python");
    assert!(
        out.status.success(),
        "MSAL {mode} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("MSAL's output is JSON")
}

/// Runs the `idweb` binary with the test keys.
fn idweb(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_idweb"))
        .args(args)
        .env_remove("IDWEB_STORE")
        .env("IDWEB_CACHE_KEYS", KEYS)
        .output()
        .expect("run idweb");
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn temp_dir(name: &str) -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("msal-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn now() -> i64 {
    idweb::unix_seconds(std::time::SystemTime::now())
}

/// An unsigned ID token with `claims` (neither idweb's cache nor MSAL checks
/// the signature of a cached ID token).
fn id_token(claims: &Value) -> String {
    let header = B64.encode(br#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#);
    let payload = B64.encode(claims.to_string());
    format!("{header}.{payload}.c2ln")
}

struct Fixture {
    store: Arc<dyn Store>,
    cache: TokenCache,
    url: String,
    dir: PathBuf,
}

async fn fixture(name: &str) -> Fixture {
    let dir = temp_dir(name);
    let db = dir.join("idweb.sqlite");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).await.unwrap());
    let cache = TokenCache::new(store.clone(), Arc::new(CacheKeys::parse(KEYS).unwrap()));
    Fixture {
        store,
        cache,
        url: format!("sqlite://{}", db.display()),
        dir,
    }
}

/// What a token response at sign-in holds.
struct SignIn<'a> {
    sub: &'a str,
    sid: &'a str,
    access_token: &'a str,
    refresh_token: &'a str,
    family_id: Option<&'a str>,
}

/// A session and the entries idweb's sign-in stores for its token response
/// (`account_identity` + `entries_from_token_response`, as
/// `RelyingParty::complete_sign_in` does); the entries are not written yet.
async fn sign_in(f: &Fixture, s: &SignIn<'_>) -> (Session, Vec<CacheEntry>) {
    let now = now();
    let claims = json!({
        "iss": AUTHORITY, "aud": CLIENT_ID, "sub": s.sub, "sid": s.sid,
        "preferred_username": s.sub, "name": s.sub, "iat": now, "exp": now + 300,
    });
    let id_token = id_token(&claims);
    let identity = account_identity(AUTHORITY, TOKEN_ENDPOINT, claims.as_object().unwrap(), None);
    let session = Session::new(
        AUTHORITY,
        s.sub,
        Some(s.sid.into()),
        Secret::new(id_token.clone()),
        now,
        now + 3600,
    );
    assert_eq!(session.account_id, identity.home_account_id);
    f.store.put_session(&session).await.unwrap();
    let parts = TokenResponseParts::new(CLIENT_ID, SCOPES, s.access_token, now)
        .with_token_type(Some("Bearer"))
        .with_expires_at(Some(now + 3600))
        .with_refresh_token(Some(s.refresh_token))
        .with_id_token(Some(&id_token))
        .with_family_id(s.family_id)
        .with_grant_type(Some("authorization_code"));
    let entries = entries_from_token_response(&identity, &parts);
    (session, entries)
}

async fn write(f: &Fixture, session: &Session, entries: &[CacheEntry]) {
    f.cache
        .write(
            &PartitionKey::Session(session.id.clone()),
            entries,
            &[],
            None,
        )
        .await
        .unwrap();
}

/// `(section, cache key)` of every entry of an MSAL document.
fn document_keys(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (section, entries) in doc.as_object().unwrap() {
        for key in entries.as_object().unwrap().keys() {
            out.insert((section.clone(), key.clone()));
        }
    }
    out
}

/// `(kind, cache key)` of every entry `idweb cache list --json` shows for
/// the one session of `sid`.
fn listed_keys(url: &str, sid: &str) -> BTreeSet<(String, String)> {
    let (ok, out, err) = idweb(&[
        "cache", "list", "--store", url, "--iss", AUTHORITY, "--sid", sid, "--json",
    ]);
    assert!(ok, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    let sessions = doc["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["unreadable_entries"], 0);
    sessions[0]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["cache_key"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn msal_serves_an_exported_partition_offline() {
    let f = fixture("load").await;
    let access_token = format!("idweb-access-{}", sha256_hex(&f.url));
    let (session, entries) = sign_in(
        &f,
        &SignIn {
            sub: "alice",
            sid: "sid-load",
            access_token: &access_token,
            refresh_token: "idweb-refresh-token",
            family_id: None,
        },
    )
    .await;
    write(&f, &session, &entries).await;

    let file = f.dir.join("export.json");
    let file_arg = file.to_str().unwrap();
    let (ok, out, err) = idweb(&[
        "cache", "export", "--format", "msal", "--sid", "sid-load", "--iss", AUTHORITY, "--store",
        &f.url, "--out", file_arg,
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("exported 5 entries of 1 session(s)"), "{out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the export holds tokens: owner only");
    }
    let exported: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert!(
        exported == export_msal_json(&entries),
        "the file is export_msal_json of the partition"
    );
    // Standard output gets the same document.
    let (ok, out, err) = idweb(&[
        "cache", "export", "--format", "msal", "--sid", "sid-load", "--store", &f.url,
    ]);
    assert!(ok, "{err}");
    assert!(serde_json::from_str::<Value>(&out).unwrap() == exported);

    let result = msal(
        "load",
        &[
            "--cache",
            file_arg,
            "--scope",
            "api.read",
            "--account",
            &session.account_id,
        ],
    );
    assert_eq!(result["msal_version"], "1.39.0");
    assert_eq!(result["token_source"], "cache", "served from the cache");
    assert_eq!(
        result["access_token_sha256"],
        sha256_hex(&access_token),
        "MSAL served idweb's access token"
    );
    assert_eq!(result["token_type"], "Bearer");
    assert_eq!(
        result["requests"],
        json!([format!("GET {AUTHORITY}/.well-known/openid-configuration")]),
        "offline: discovery only"
    );
    let accounts = result["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0]["home_account_id"], session.account_id.as_str());
    assert_eq!(accounts[0]["environment"], "idp.example.test");
    assert_eq!(accounts[0]["realm"], "realms");
    assert_eq!(accounts[0]["username"], "alice");
    assert_eq!(accounts[0]["account_source"], "authorization_code");
}

#[tokio::test]
async fn remove_account_leaves_the_same_entries_in_msal_and_idweb() {
    let f = fixture("remove").await;
    // Alice signed in to an app of a family (foci "1").
    let (session, mut entries) = sign_in(
        &f,
        &SignIn {
            sub: "alice",
            sid: "sid-remove",
            access_token: "alice-access",
            refresh_token: "alice-refresh",
            family_id: Some("1"),
        },
    )
    .await;
    let find = |entries: &[CacheEntry], kind: &str| -> CacheEntry {
        entries
            .iter()
            .find(|e| e.kind().as_str() == kind)
            .unwrap()
            .clone()
    };
    let (at, rt, idt, account) = match (
        find(&entries, "AccessToken"),
        find(&entries, "RefreshToken"),
        find(&entries, "IdToken"),
        find(&entries, "Account"),
    ) {
        (
            CacheEntry::AccessToken(at),
            CacheEntry::RefreshToken(rt),
            CacheEntry::IdToken(idt),
            CacheEntry::Account(account),
        ) => (at, rt, idt, account),
        _ => unreachable!(),
    };
    // Neighbours of every kind MSAL's remove_account treats differently.
    let mut sibling_rt = rt.clone(); // same family: removed
    sibling_rt.client_id = "family-sibling".into();
    sibling_rt.secret = Secret::new("sibling-refresh");
    let mut stranger_rt = rt.clone(); // another app, no family: stays
    stranger_rt.client_id = "stranger".into();
    stranger_rt.family_id = None;
    stranger_rt.secret = Secret::new("stranger-refresh");
    let mut stranger_at = at.clone(); // ATs of other apps: removed
    stranger_at.client_id = "stranger".into();
    let mut ext_at = at.clone(); // isolated by ext_cache_key: stays
    ext_at.ext_cache_key = Some("fmi-path-hash".into());
    let mut other_realm_at = at.clone(); // every realm: removed
    other_realm_at.realm = "tenant-two".into();
    let mut other_realm_idt = idt.clone();
    other_realm_idt.realm = "tenant-two".into();
    let mut other_realm_account = account.clone();
    other_realm_account.realm = "tenant-two".into();
    let mut other_env_at = at.clone(); // another provider: stays
    other_env_at.environment = "other.example.test".into();
    let mut other_env_rt = rt.clone();
    other_env_rt.environment = "other.example.test".into();
    let mut bob_at = at.clone(); // another account: stays
    bob_at.home_account_id = Some(idweb::account_id_for(AUTHORITY, "bob"));
    let mut bob_rt = rt.clone();
    bob_rt.home_account_id = bob_at.home_account_id.clone();
    let mut bob_account = account.clone();
    bob_account.home_account_id = bob_at.home_account_id.clone().unwrap();
    bob_account.username = "bob".into();
    let mut sibling_meta = match find(&entries, "AppMetadata") {
        CacheEntry::AppMetadata(m) => m,
        _ => unreachable!(),
    };
    sibling_meta.client_id = "family-sibling".into();
    entries.extend([
        sibling_rt.into(),
        stranger_rt.into(),
        stranger_at.into(),
        ext_at.into(),
        other_realm_at.into(),
        other_realm_idt.into(),
        other_realm_account.into(),
        other_env_at.into(),
        other_env_rt.into(),
        bob_at.into(),
        bob_rt.into(),
        bob_account.into(),
        sibling_meta.into(),
    ]);
    write(&f, &session, &entries).await;
    let before = listed_keys(&f.url, "sid-remove");
    assert_eq!(before.len(), entries.len());

    // MSAL: remove_account on the exported partition.
    let file = f.dir.join("export.json");
    let file_arg = file.to_str().unwrap();
    let (ok, _, err) = idweb(&[
        "cache",
        "export",
        "--format",
        "msal",
        "--sid",
        "sid-remove",
        "--store",
        &f.url,
        "--out",
        file_arg,
    ]);
    assert!(ok, "{err}");
    let msal_left = document_keys(&msal(
        "remove",
        &["--cache", file_arg, "--account", &session.account_id],
    ));

    // idweb: the partition holds several apps' tokens, so the app is named.
    let (ok, _, err) = idweb(&[
        "cache",
        "remove-account",
        "--sid",
        "sid-remove",
        "--store",
        &f.url,
    ]);
    assert!(!ok && err.contains("--client-id"), "{err}");
    let (ok, out, err) = idweb(&[
        "cache",
        "remove-account",
        "--sid",
        "sid-remove",
        "--iss",
        AUTHORITY,
        "--store",
        &f.url,
        "--client-id",
        CLIENT_ID,
        "--json",
    ]);
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let report = &report["sessions"][0];
    assert_eq!(report["home_account_id"], session.account_id.as_str());
    assert_eq!(report["environment"], "idp.example.test");
    assert_eq!(report["client_id"], CLIENT_ID);
    let idweb_left = listed_keys(&f.url, "sid-remove");

    assert_eq!(
        idweb_left, msal_left,
        "the same entries remain on both sides"
    );
    let removed: BTreeSet<(String, String)> = report["entries_removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["cache_key"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        removed,
        before.difference(&idweb_left).cloned().collect(),
        "the report lists what went"
    );
    // Not vacuous: each rule removed or kept something.
    let count = |set: &BTreeSet<(String, String)>, kind: &str| {
        set.iter().filter(|(k, _)| k == kind).count()
    };
    assert_eq!(
        count(&removed, "AccessToken"),
        3,
        "own, other app's, other realm's"
    );
    assert_eq!(
        count(&removed, "RefreshToken"),
        2,
        "own and the family sibling's"
    );
    assert_eq!(count(&removed, "IdToken"), 2);
    assert_eq!(count(&removed, "Account"), 2);
    assert_eq!(
        count(&idweb_left, "AccessToken"),
        3,
        "ext_cache_key, other env, bob"
    );
    assert_eq!(
        count(&idweb_left, "RefreshToken"),
        3,
        "stranger, other env, bob"
    );
    assert_eq!(count(&idweb_left, "Account"), 1, "bob");
    assert_eq!(count(&idweb_left, "AppMetadata"), 2);
}

#[tokio::test]
async fn a_cache_msal_wrote_imports_into_the_session() {
    let f = fixture("import").await;
    let now = now();
    // The session exists (signed in earlier; its tokens are gone).
    let session = Session::new(
        AUTHORITY,
        "alice",
        Some("sid-import".into()),
        Secret::new("id.token.x"),
        now,
        now + 3600,
    );
    f.store.put_session(&session).await.unwrap();

    let access_token = format!("msal-access-{}", sha256_hex(&f.url));
    let response = json!({
        "scope": SCOPES,
        "access_token": access_token,
        "refresh_token": "msal-refresh-token",
        "expires_in": 3600,
        "id_token_claims": { "sub": "alice", "sid": "sid-import", "preferred_username": "alice" },
    });
    let response_file = f.dir.join("response.json");
    std::fs::write(&response_file, response.to_string()).unwrap();
    let written = msal("write", &["--response", response_file.to_str().unwrap()]);
    // MSAL keys a generic provider's account by `sub` alone.
    let home = written["Account"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()["home_account_id"]
        .clone();
    assert_eq!(home, "alice");
    let doc_file = f.dir.join("msal.json");
    std::fs::write(&doc_file, written.to_string()).unwrap();
    let doc_arg = doc_file.to_str().unwrap();

    let import = |json: bool| {
        let mut args = vec![
            "cache",
            "import",
            "--format",
            "msal",
            "--sid",
            "sid-import",
            "--iss",
            AUTHORITY,
            "--store",
            &f.url,
            doc_arg,
        ];
        if json {
            args.push("--json");
        }
        let (ok, out, err) = idweb(&args);
        assert!(ok, "{err}");
        out
    };
    let report: Value = serde_json::from_str(&import(true)).unwrap();
    assert_eq!(
        report,
        json!({ "session": session.id.fingerprint(), "entries_written": 5 })
    );
    assert_eq!(listed_keys(&f.url, "sid-import"), document_keys(&written));

    // The same secrets, and every field as MSAL wrote it.
    let part = f
        .cache
        .read(&PartitionKey::Session(session.id.clone()))
        .await
        .unwrap();
    assert_eq!(part.entries.len(), 5);
    for e in &part.entries {
        if let Some(secret) = e.secret() {
            let msal_secret = written[e.kind().as_str()][e.cache_key()]["secret"]
                .as_str()
                .unwrap();
            assert_eq!(
                sha256_hex(secret),
                sha256_hex(msal_secret),
                "secret of {} {}",
                e.kind(),
                e.cache_key()
            );
        }
    }
    let at = part
        .entries
        .iter()
        .find(|e| e.kind().as_str() == "AccessToken")
        .unwrap();
    assert_eq!(sha256_hex(at.secret().unwrap()), sha256_hex(&access_token));
    assert!(
        export_msal_json(&part.entries) == written,
        "idweb's export of the imported partition is MSAL's document"
    );

    // Importing again replaces the same keys: nothing doubles.
    assert!(import(false).contains("imported 5 entries"));
    assert_eq!(listed_keys(&f.url, "sid-import"), document_keys(&written));

    // And MSAL serves the token from idweb's export of it.
    let file = f.dir.join("export.json");
    let file_arg = file.to_str().unwrap();
    let (ok, _, err) = idweb(&[
        "cache",
        "export",
        "--format",
        "msal",
        "--sid",
        "sid-import",
        "--store",
        &f.url,
        "--out",
        file_arg,
    ]);
    assert!(ok, "{err}");
    let result = msal("load", &["--cache", file_arg, "--scope", "api.read"]);
    assert_eq!(result["token_source"], "cache");
    assert_eq!(result["access_token_sha256"], sha256_hex(&access_token));
}
