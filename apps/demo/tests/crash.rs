//! Crash safety of back-channel logout: the sample web app as a process, on
//! SQLite and on Redis, receives a storm of valid logout tokens (signed by
//! the dev IdP's key, one per pre-created session, from several senders at
//! once) and is killed with SIGKILL at a random point of it. It is started
//! again, and every token that was not acknowledged is sent again unchanged,
//! as a provider would. Over every round:
//!
//! - no acknowledged logout is lost: each session whose token got a 200
//!   before the kill is gone after the restart;
//! - no logout is lost after the retries: every targeted session is gone,
//!   with its tokens, and the request path refuses it (the store's
//!   `get_session`, and `/profile` for a browser that really signed in).
//!
//! A retry may be answered 400 "jti replayed": the logout was stored but
//! its 200 never left the killed process. That is fine as long as the
//! session is gone, which is checked.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeSet, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{start_webapp, stop};
use idweb::{
    PartitionKey, PartitionWrite, Secret, Session, SessionId, SessionLookup, Store, StoredEntry,
    SystemClock, unix_seconds,
};
use idweb_test_support::idweb_devidp::{DevClient, DevIdp};
use idweb_test_support::{browser, dev_idp, sign_in_at};

/// Kill points per store (at least 20 in all).
const ROUNDS: usize = 12;
/// Pre-created sessions per round (each gets its own logout token).
const SESSIONS: usize = 40;
/// Concurrent senders.
const SENDERS: usize = 8;

const COOKIE_KEY: &str = "Zm9yLXRlc3RzLW9ubHktZm9yLXRlc3RzLW9ubHktZm9yLXRlc3RzLW9ubHktZm9yLXRlc3RzLW9ubHktZm9yLXRlc3RzLW9ubHkt";
const CACHE_KEYS: &str = "t1:dGhpcnR5LXR3by1ieXRlcy1mb3ItdGVzdHMtb25seSE=";

fn random_below(n: usize) -> usize {
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    usize::try_from(r % (n.max(1) as u64)).unwrap()
}

fn now() -> i64 {
    unix_seconds(std::time::SystemTime::now())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One targeted session: its id, its provider session and its logout token.
struct Target {
    id: SessionId,
    sid: String,
    token: String,
}

/// What the senders saw.
#[derive(Default)]
struct Seen {
    acked: BTreeSet<usize>,
    /// Answers other than 200 before the kill (there should be none).
    refused: Vec<(usize, u16, String)>,
}

/// Sends `tokens` (by index from `queue`) from `SENDERS` senders until the
/// queue is empty or the app is gone; counts acknowledgements in `acks`.
async fn storm(
    url: &str,
    targets: &Arc<Vec<Target>>,
    queue: Vec<usize>,
    acks: &Arc<AtomicUsize>,
) -> Seen {
    let queue = Arc::new(Mutex::new(VecDeque::from(queue)));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut tasks = Vec::new();
    for _ in 0..SENDERS {
        let (queue, seen, acks, targets) =
            (queue.clone(), seen.clone(), acks.clone(), targets.clone());
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            loop {
                let Some(i) = queue.lock().unwrap().pop_front() else {
                    return;
                };
                let resp = client
                    .post(&url)
                    .form(&[("logout_token", targets[i].token.as_str())])
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status() == 200 => {
                        seen.lock().unwrap().acked.insert(i);
                        acks.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let body = r.text().await.unwrap_or_default();
                        seen.lock().unwrap().refused.push((i, status, body));
                    }
                    // The process is gone (or going): not acknowledged.
                    Err(_) => {}
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(seen)
        .ok()
        .expect("senders done")
        .into_inner()
        .unwrap()
}

/// Whether nothing of the session is left in the store.
async fn gone(store: &Arc<dyn Store>, iss: &str, t: &Target) -> bool {
    store.get_session(&t.id).await.expect("get").is_none()
        && store
            .find_sessions(&SessionLookup::ByProviderSession {
                iss: iss.to_string(),
                sid: t.sid.clone(),
            })
            .await
            .expect("find")
            .is_empty()
        && store
            .get_partition(&PartitionKey::Session(t.id.clone()))
            .await
            .expect("partition")
            .is_none()
}

#[derive(Debug, Default)]
struct Tally {
    rounds: usize,
    tokens: usize,
    acked_before_kill: usize,
    resent: usize,
    resent_ok: usize,
    resent_replayed: usize,
    acked_lost: usize,
    lost_after_retry: usize,
    browser_sessions_still_served: usize,
}

/// Runs the rounds against the app configured by `env` (whose store the
/// test also opens as `store`).
async fn crash_rounds(
    label: &str,
    idp: &DevIdp,
    client_id: &str,
    env: Vec<(&'static str, String)>,
    base: &str,
    store: Arc<dyn Store>,
) -> Tally {
    let iss = idp.issuer().to_string();
    let env = Arc::new(env);
    let spawn = |env: Arc<Vec<(&'static str, String)>>| async move {
        tokio::task::spawn_blocking(move || start_webapp(&env))
            .await
            .unwrap()
    };
    let mut app: Child = spawn(env.clone()).await;
    let logout_url = format!("{base}/backchannel-logout");
    let mut tally = Tally::default();
    for round in 0..ROUNDS {
        // A browser that really signs in, and the pre-created sessions.
        let b = browser();
        let before: BTreeSet<String> = idp.sessions_of("alice").into_iter().collect();
        let profile = sign_in_at(&b, base, "alice").await;
        let sub = profile["sub"].as_str().expect("sub").to_string();
        let new_sids: Vec<String> = idp
            .sessions_of("alice")
            .into_iter()
            .filter(|s| !before.contains(s))
            .collect();
        assert_eq!(new_sids.len(), 1, "one new provider session");
        let browser_sid = new_sids[0].clone();
        let browser_ids = store
            .find_sessions(&SessionLookup::ByProviderSession {
                iss: iss.clone(),
                sid: browser_sid.clone(),
            })
            .await
            .expect("find");
        assert_eq!(browser_ids.len(), 1);
        let mut targets = vec![Target {
            id: browser_ids[0].clone(),
            token: idp.logout_token_for(client_id, Some(&sub), Some(&browser_sid)),
            sid: browser_sid,
        }];
        for i in 0..SESSIONS {
            let sid = format!("crash-{round}-{i}-{}", SessionId::generate().fingerprint());
            let user = format!("user-{round}-{i}");
            let s = Session::new(
                &iss,
                &user,
                Some(sid.clone()),
                Secret::new("header.payload.sig"),
                now(),
                now() + 3600,
            );
            store.put_session(&s).await.expect("put");
            store
                .write_partition(
                    &PartitionKey::Session(s.id.clone()),
                    PartitionWrite::upsert(vec![StoredEntry::new(
                        "rt",
                        "RefreshToken",
                        Some(now() + 3600),
                        vec![1; 64],
                    )]),
                )
                .await
                .expect("tokens");
            targets.push(Target {
                id: s.id,
                token: idp.logout_token_for(client_id, Some(&user), Some(&sid)),
                sid,
            });
        }
        assert!(targets.iter().all(|t| !t.token.is_empty()));
        let targets = Arc::new(targets);
        let n = targets.len();

        // The storm, and a SIGKILL once a random number of acks arrived.
        let kill_after = 1 + random_below(n - 1);
        let acks = Arc::new(AtomicUsize::new(0));
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            order.swap(i, random_below(i + 1));
        }
        let pid = app.id();
        let storm_over = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let killer = {
            let (acks, storm_over) = (acks.clone(), storm_over.clone());
            tokio::spawn(async move {
                while acks.load(Ordering::SeqCst) < kill_after && !storm_over.load(Ordering::SeqCst)
                {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
                let status = std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status()
                    .unwrap();
                assert!(status.success());
            })
        };
        let seen = storm(&logout_url, &targets, order, &acks).await;
        storm_over.store(true, Ordering::SeqCst);
        killer.await.unwrap();
        let status = tokio::task::spawn_blocking(move || {
            let s = app.wait().unwrap();
            (s, app)
        })
        .await
        .unwrap();
        assert!(!status.0.success(), "{label}: the app was killed");
        assert!(
            seen.refused.is_empty(),
            "{label}: answers other than 200 before the kill: {:?}",
            seen.refused
                .iter()
                .map(|(i, s, b)| (i, s, b.chars().take(120).collect::<String>()))
                .collect::<Vec<_>>()
        );

        // Restart; no acknowledged logout may be lost.
        app = spawn(env.clone()).await;
        for &i in &seen.acked {
            if !gone(&store, &iss, &targets[i]).await {
                tally.acked_lost += 1;
            }
        }

        // Resend every unacknowledged token, unchanged, until answered.
        let unacked: Vec<usize> = (0..n).filter(|i| !seen.acked.contains(i)).collect();
        let client = reqwest::Client::new();
        for &i in &unacked {
            let mut answered = false;
            for _ in 0..20 {
                let r = client
                    .post(&logout_url)
                    .form(&[("logout_token", targets[i].token.as_str())])
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        tally.resent_ok += 1;
                        answered = true;
                    }
                    Ok(r) if r.status() == 400 => {
                        let body = r.text().await.unwrap_or_default();
                        assert!(
                            body.contains("replayed") || body.contains("already used"),
                            "{label}: a resent token was refused: {body}"
                        );
                        tally.resent_replayed += 1;
                        answered = true;
                    }
                    // 5xx or no answer: a provider retries.
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
                if answered {
                    break;
                }
            }
            assert!(answered, "{label}: a resent token was never answered");
        }

        // Every targeted session is gone, and refused on the request path.
        for t in targets.iter() {
            if !gone(&store, &iss, t).await {
                tally.lost_after_retry += 1;
            }
        }
        let profile = b
            .get(format!("{base}/profile"))
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .unwrap();
        if profile.status() == 200 {
            tally.browser_sessions_still_served += 1;
        }
        tally.rounds += 1;
        tally.tokens += n;
        tally.acked_before_kill += seen.acked.len();
        tally.resent += unacked.len();
    }
    tokio::task::spawn_blocking(move || stop(app))
        .await
        .unwrap();
    println!("{label}: {tally:?}");
    tally
}

fn check(label: &str, t: &Tally) {
    assert_eq!(t.rounds, ROUNDS);
    assert_eq!(t.acked_lost, 0, "{label}: acknowledged logouts lost: {t:?}");
    assert_eq!(
        t.lost_after_retry, 0,
        "{label}: logouts lost after the retries: {t:?}"
    );
    assert_eq!(
        t.browser_sessions_still_served, 0,
        "{label}: a signed-out browser was still served: {t:?}"
    );
    assert_eq!(t.resent_ok + t.resent_replayed, t.resent);
    assert_eq!(t.acked_before_kill + t.resent, t.tokens);
}

fn app_env(idp: &DevIdp, client_id: &str, base: &str, port: u16) -> Vec<(&'static str, String)> {
    idp.register_client(DevClient::new(
        client_id,
        "crash-secret",
        format!("{base}/signin-oidc"),
    ));
    vec![
        ("IDWEB_AUTHORITY", idp.issuer().to_string()),
        ("IDWEB_CLIENT_ID", client_id.to_string()),
        ("IDWEB_CLIENT_SECRET", "crash-secret".to_string()),
        ("IDWEB_PUBLIC_URL", base.to_string()),
        ("IDWEB_LISTEN", format!("127.0.0.1:{port}")),
        ("IDWEB_COOKIE_KEY", COOKIE_KEY.to_string()),
        ("IDWEB_CACHE_KEYS", CACHE_KEYS.to_string()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_back_channel_logout_is_lost_to_a_crash_on_sqlite() {
    let idp = dev_idp(true).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("crash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("webapp.sqlite");
    let _ = std::fs::remove_file(&db);
    let client_id = "crash-sqlite";
    let mut env = app_env(&idp, client_id, &base, port);
    env.push(("IDWEB_STORE", format!("sqlite://{}", db.display())));
    let store: Arc<dyn Store> = Arc::new(
        idweb_store_sqlite::SqliteStore::open(&db)
            .await
            .expect("open the database"),
    );
    let tally = crash_rounds("SQLite", &idp, client_id, env, &base, store).await;
    check("SQLite", &tally);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_back_channel_logout_is_lost_to_a_crash_on_redis() {
    let idp = dev_idp(true).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let prefix = format!("idweb-test-crash-{}", SessionId::generate().fingerprint());
    let url =
        std::env::var("IDWEB_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let client_id = "crash-redis";
    let mut env = app_env(&idp, client_id, &base, port);
    env.push(("IDWEB_STORE", url.clone()));
    env.push(("IDWEB_STORE_PREFIX", prefix.clone()));
    let redis =
        match idweb_store_redis::RedisStore::open_with_prefix(&url, &prefix, Arc::new(SystemClock))
            .await
        {
            Ok(r) => r,
            Err(e) => panic!("this test needs Redis at {url} (or IDWEB_TEST_REDIS_URL): {e}"),
        };
    let store: Arc<dyn Store> = Arc::new(redis);
    let tally = crash_rounds("Redis", &idp, client_id, env, &base, store).await;
    delete_keys(&url, &prefix);
    check("Redis", &tally);
}

/// Deletes every key under `prefix` (a cursor walk, never `KEYS`).
fn delete_keys(url: &str, prefix: &str) {
    let Ok(mut con) = redis::Client::open(url).and_then(|c| c.get_connection()) else {
        return;
    };
    let mut cursor: u64 = 0;
    loop {
        let Ok((next, keys)): redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(1000)
            .query(&mut con)
        else {
            return;
        };
        if !keys.is_empty() {
            let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(&keys).query(&mut con);
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}
