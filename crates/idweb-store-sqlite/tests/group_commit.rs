//! Group commit: writes waiting together share one transaction (one flush of
//! the log); each caller is answered after that commit, refusals do not
//! spoil the other writes, and a failed commit fails every write of its
//! transaction.
//!
//! To put a known set of writes into one transaction, a test holds the
//! database's write lock from a plain connection (as another process
//! would), starts every call so that each queues its write, then releases
//! the lock: the writer, waiting for the lock with the first write, finds all
//! the others queued behind it. The commits are counted in the write-ahead
//! log itself.

mod common;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use idweb::{
    Clock, LockToken, ManualClock, PartitionKey, PartitionWrite, Session, SessionLookup, Store,
    StoreError, StoredEntry, Tombstone,
};
use idweb_store_conformance::{clock, sample_session};
use idweb_store_sqlite::SqliteStore;
use rusqlite::Connection;

/// What a store call answered, whatever its type.
#[derive(Debug, PartialEq)]
enum Answer {
    Done,
    Version(u64),
    Flag(bool),
    Lock(Option<LockToken>),
    Removed(Option<Session>),
}

/// A started store call.
type Call<'a> = Pin<Box<dyn Future<Output = Result<Answer, StoreError>> + Send + 'a>>;

fn call<'a, T>(
    f: impl Future<Output = Result<T, StoreError>> + Send + 'a,
    answer: impl FnOnce(T) -> Answer + Send + 'a,
) -> Call<'a> {
    Box::pin(async move { f.await.map(answer) })
}

/// Polls each call once, outside tokio's cooperative budget, so that each
/// queues its write. A call that already answered is a test failure: no
/// write can be committed while the test holds the write lock.
async fn queue_all(calls: &mut [Call<'_>]) {
    tokio::task::unconstrained(std::future::poll_fn(|cx| {
        for (i, c) in calls.iter_mut().enumerate() {
            assert!(
                c.as_mut().poll(cx).is_pending(),
                "call {i} answered while the write lock was held elsewhere"
            );
        }
        Poll::Ready(())
    }))
    .await;
}

/// Runs `calls` as one group: queued while `path`'s write lock is held
/// elsewhere, then let go. Returns the answers, in order.
async fn as_one_group(path: &Path, mut calls: Vec<Call<'_>>) -> Vec<Result<Answer, StoreError>> {
    let lock = Connection::open(path).expect("raw connection");
    lock.execute_batch("BEGIN IMMEDIATE").expect("write lock");
    queue_all(&mut calls).await;
    lock.execute_batch("ROLLBACK").expect("release");
    drop(lock);
    let mut answers = Vec::new();
    for c in calls {
        answers.push(c.await);
    }
    answers
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", idweb::SessionId::generate().fingerprint())
}

fn entry(key: &str, sealed: Vec<u8>) -> StoredEntry {
    StoredEntry::new(key, "AccessToken", Some(1_900_000_000), sealed)
}

fn app(name: &str) -> PartitionKey {
    PartitionKey::App {
        client_id: name.into(),
        tenant: "tenant".into(),
        audience: "api://todo".into(),
    }
}

async fn open(path: &Path, clock: &Arc<ManualClock>) -> SqliteStore {
    SqliteStore::open_with_clock(path, clock.clone())
        .await
        .expect("open")
}

/// Every refusal gets its own answer, every other write of the same
/// transaction is committed, and the whole group costs one commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_inside_a_group_do_not_fail_the_other_writes() {
    let path = common::db_path("group-refusals");
    let clock = clock();
    let now = clock.unix_now();
    let store = open(&path, &clock).await;
    let iss = unique("https://iss");

    // What the refusals will run into.
    let live = sample_session(&iss, &unique("sub"), None, now);
    store.put_session(&live).await.expect("put");
    let key = PartitionKey::Session(live.id.clone());
    let v = store
        .write_partition(
            &key,
            PartitionWrite::upsert(vec![entry("rt", b"v1".to_vec())]),
        )
        .await
        .expect("write");
    let gone_sid = unique("sid");
    store
        .put_tombstone(&Tombstone::new(
            SessionLookup::ByProviderSession {
                iss: iss.clone(),
                sid: gone_sid.clone(),
            },
            now,
            now + 7200,
        ))
        .await
        .expect("tombstone");
    assert!(
        store
            .record_jti(&iss, "seen", now + 300)
            .await
            .expect("jti")
    );
    let held = store
        .try_lock("held", Duration::from_secs(60))
        .await
        .expect("lock")
        .expect("free");
    let leaving = sample_session(&iss, &unique("sub"), None, now);
    store.put_session(&leaving).await.expect("put");

    let fresh = sample_session(&iss, &unique("sub"), Some(&unique("sid")), now);
    let covered = sample_session(&iss, &unique("sub"), Some(&gone_sid), now);
    let stone = SessionLookup::BySubject {
        iss: iss.clone(),
        sub: unique("sub"),
    };
    let before = common::wal_commits(&path);
    let s = &store;
    let answers = as_one_group(
        &path,
        vec![
            call(s.put_session(&fresh), |()| Answer::Done),
            // A stale version: Conflict.
            call(
                s.write_partition(
                    &key,
                    PartitionWrite::upsert(vec![entry("rt", b"stale".to_vec())]).if_version(v + 5),
                ),
                Answer::Version,
            ),
            // Covered by a tombstone: SignedOut.
            call(s.put_session(&covered), |()| Answer::Done),
            // A replay: false.
            call(s.record_jti(&iss, "seen", now + 300), Answer::Flag),
            // Held: None.
            call(s.try_lock("held", Duration::from_secs(60)), Answer::Lock),
            // The expected version: written.
            call(
                s.write_partition(
                    &key,
                    PartitionWrite::upsert(vec![entry("rt", b"v2".to_vec())]).if_version(v),
                ),
                Answer::Version,
            ),
            call(s.record_jti(&iss, "new", now + 300), Answer::Flag),
            call(
                s.put_tombstone(&Tombstone::new(stone.clone(), now, now + 7200)),
                |()| Answer::Done,
            ),
            call(s.remove_session(&leaving.id), Answer::Removed),
            // Its session was removed just before, in the same transaction.
            call(
                s.write_partition(
                    &PartitionKey::Session(leaving.id.clone()),
                    PartitionWrite::upsert(vec![entry("rt", b"late".to_vec())]),
                ),
                Answer::Version,
            ),
        ],
    )
    .await;
    let after = common::wal_commits(&path);

    let mut answers = answers.into_iter();
    let mut next = || answers.next().expect("an answer per call");
    assert_eq!(next().expect("fresh session"), Answer::Done);
    assert!(
        matches!(
            next(),
            Err(StoreError::Conflict { expected, found }) if expected == v + 5 && found == v
        ),
        "stale version"
    );
    assert!(matches!(next(), Err(StoreError::SignedOut)), "tombstoned");
    assert_eq!(next().expect("replay"), Answer::Flag(false));
    assert_eq!(next().expect("held lock"), Answer::Lock(None));
    assert_eq!(next().expect("conditional write"), Answer::Version(v + 1));
    assert_eq!(next().expect("new jti"), Answer::Flag(true));
    assert_eq!(next().expect("tombstone"), Answer::Done);
    assert_eq!(
        next().expect("removal"),
        Answer::Removed(Some(leaving.clone()))
    );
    assert!(matches!(next(), Err(StoreError::SignedOut)), "late write");
    assert_eq!(after - before, 1, "the ten writes shared one commit");

    // What was committed is there for another handle, and what was refused
    // is not; the lock is still its holder's.
    store.close().await;
    let reopened = open(&path, &clock).await;
    assert_eq!(
        reopened.get_session(&fresh.id).await.expect("get"),
        Some(fresh)
    );
    assert_eq!(reopened.get_session(&covered.id).await.expect("get"), None);
    assert_eq!(reopened.get_session(&leaving.id).await.expect("get"), None);
    let p = reopened
        .get_partition(&key)
        .await
        .expect("get")
        .expect("partition");
    assert_eq!(
        (p.version, p.entries[0].sealed.as_slice()),
        (v + 1, &b"v2"[..])
    );
    assert!(
        !reopened
            .record_jti(&iss, "new", now + 300)
            .await
            .expect("jti")
    );
    assert!(reopened.get_tombstone(&stone).await.expect("get").is_some());
    assert_eq!(
        reopened
            .get_partition(&PartitionKey::Session(leaving.id.clone()))
            .await
            .expect("get"),
        None
    );
    assert!(
        reopened
            .try_lock("held", Duration::from_secs(60))
            .await
            .expect("lock")
            .is_none()
    );
    reopened.unlock("held", &held).await.expect("unlock");
    reopened.close().await;
    common::remove_db(&path);
}

/// Many callers writing at once, as a burst of back-channel sign-outs does
/// (tombstone, jti, removal): every one is answered with success, and every
/// write is in the file afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_are_all_answered_and_all_their_writes_stay() {
    const USERS: usize = 200;
    let path = common::db_path("group-many");
    let clock = clock();
    let now = clock.unix_now();
    let store = open(&path, &clock).await;
    let iss = unique("https://iss");
    let mut sessions = Vec::new();
    for i in 0..USERS {
        let s = sample_session(&iss, &format!("user-{i}"), Some(&format!("sid-{i}")), now);
        store.put_session(&s).await.expect("put");
        store
            .write_partition(
                &PartitionKey::Session(s.id.clone()),
                PartitionWrite::upsert(vec![entry("rt", vec![7; 300])]),
            )
            .await
            .expect("write");
        sessions.push(s);
    }
    let before = common::wal_commits(&path);
    let mut tasks = Vec::new();
    for (i, s) in sessions.iter().cloned().enumerate() {
        let store = store.clone();
        let iss = iss.clone();
        tasks.push(tokio::spawn(async move {
            let selector = SessionLookup::ByProviderSession {
                iss: iss.clone(),
                sid: s.sid.clone().expect("sid"),
            };
            store
                .put_tombstone(&Tombstone::new(selector, now, now + 7200))
                .await?;
            let first = store
                .record_jti(&iss, &format!("jti-{i}"), now + 300)
                .await?;
            let removed = store.remove_session(&s.id).await?;
            Ok::<_, StoreError>((first, removed.map(|r| r.id)))
        }));
    }
    for (t, s) in tasks.into_iter().zip(&sessions) {
        let (first, removed) = t.await.expect("task").expect("every write answered Ok");
        assert!(first);
        assert_eq!(removed.as_ref(), Some(&s.id));
    }
    let commits = common::wal_commits(&path) - before;
    eprintln!("{} writes in {commits} commits", 3 * USERS);
    store.close().await;

    let reopened = open(&path, &clock).await;
    for (i, s) in sessions.iter().enumerate() {
        assert_eq!(reopened.get_session(&s.id).await.expect("get"), None);
        assert_eq!(
            reopened
                .get_partition(&PartitionKey::Session(s.id.clone()))
                .await
                .expect("get"),
            None
        );
        let selector = SessionLookup::ByProviderSession {
            iss: iss.clone(),
            sid: s.sid.clone().expect("sid"),
        };
        assert!(
            reopened
                .get_tombstone(&selector)
                .await
                .expect("get")
                .is_some()
        );
        assert!(
            !reopened
                .record_jti(&iss, &format!("jti-{i}"), now + 300)
                .await
                .expect("jti"),
            "jti-{i} was recorded"
        );
        // And the sign-in of that provider session stays refused.
        assert!(matches!(
            reopened.put_session(s).await,
            Err(StoreError::SignedOut)
        ));
    }
    assert_eq!(reopened.session_count().await.expect("count"), 0);
    reopened.close().await;
    common::remove_db(&path);
}

/// Set in the child process of
/// [`a_failed_commit_fails_every_write_of_its_group`]: the database to use.
const FAULT_CHILD: &str = "IDWEB_SQLITE_TEST_FAULT_CHILD_DB";

/// The child's file-size limit, in KiB: above the database file and the
/// writes before the group, below what the group adds to the log.
const FILE_LIMIT_KIB: u64 = 512;

/// A commit that fails for real: the group's writes reach the log only at
/// COMMIT, and the process may not grow a file past 512 KiB (its
/// `RLIMIT_FSIZE`, with `SIGXFSZ` ignored, so the write fails with `EFBIG`
/// as on a full disk). Every caller of the group is told
/// `Unavailable`, refusals included; none of the group's writes is in the
/// file afterwards; the next write succeeds.
///
/// The limit applies to a whole process, so the test runs itself again in
/// a child process under `ulimit -f` (bash) and checks the file afterwards.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_fails_every_write_of_its_group() {
    if let Ok(path) = std::env::var(FAULT_CHILD) {
        fault_child(Path::new(&path)).await;
        return;
    }
    let path = common::db_path("group-fault");
    let clock = clock();
    let now = clock.unix_now();
    let store = open(&path, &clock).await;
    let before = sample_session("https://iss", &unique("sub"), None, now);
    store.put_session(&before).await.expect("put");
    store.close().await;
    assert!(
        std::fs::metadata(&path).expect("file").len() < FILE_LIMIT_KIB * 1024 / 2,
        "the database starts well under the child's limit"
    );

    let exe = std::env::current_exe().expect("test binary");
    let output = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f {FILE_LIMIT_KIB} && exec \"$0\" \"$@\""
        ))
        .arg(exe)
        .args([
            "--exact",
            "a_failed_commit_fails_every_write_of_its_group",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(FAULT_CHILD, &path)
        .output()
        .expect("bash runs the test binary");
    let shown = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "child failed:\n{shown}");
    assert!(
        shown.contains("1 passed"),
        "the child ran the test:\n{shown}"
    );
    for line in shown
        .lines()
        .filter(|l| l.contains("the group failed with"))
    {
        eprintln!("child: {line}");
    }

    // Without the limit: the group left nothing; the rest is there.
    let store = open(&path, &clock).await;
    assert_eq!(
        store.get_session(&before.id).await.expect("get"),
        Some(before)
    );
    for i in 0..GROUP_PARTITIONS {
        assert_eq!(
            store
                .get_partition(&app(&format!("big-{i}")))
                .await
                .expect("get"),
            None,
            "big-{i} was not committed"
        );
    }
    assert!(
        store
            .record_jti("https://iss", "in-failed-group", now + 300)
            .await
            .expect("jti"),
        "the group's jti was not recorded"
    );
    assert!(
        store
            .get_partition(&app("after"))
            .await
            .expect("get")
            .is_some(),
        "the write after the failure is durable"
    );
    store.close().await;
    common::remove_db(&path);
}

/// Partitions of the failing group, 128 KiB each: together above the limit.
const GROUP_PARTITIONS: usize = 6;

#[cfg(unix)]
async fn fault_child(path: &Path) {
    let clock = clock();
    let now = clock.unix_now();
    let store = open(path, &clock).await;
    let (iss, sid) = ("https://iss", "sid-x");
    store
        .put_tombstone(&Tombstone::new(
            SessionLookup::ByProviderSession {
                iss: iss.into(),
                sid: sid.into(),
            },
            now,
            now + 7200,
        ))
        .await
        .expect("a small write fits under the limit");
    let covered = sample_session(iss, "sub-x", Some(sid), now);
    let big = |i: usize| -> Vec<u8> {
        (0..128 * 1024u32)
            .map(|b| (b.wrapping_mul(2_654_435_761) >> 24) as u8 ^ i as u8)
            .collect()
    };
    let s = &store;
    let mut calls = Vec::new();
    for i in 0..GROUP_PARTITIONS {
        let key = app(&format!("big-{i}"));
        let write = PartitionWrite::upsert(vec![entry("at", big(i))]);
        calls.push(call(
            async move { s.write_partition(&key, write).await },
            Answer::Version,
        ));
    }
    calls.push(call(
        s.record_jti(iss, "in-failed-group", now + 300),
        Answer::Flag,
    ));
    // Refused on its own merits; still told Unavailable, as its refusal
    // was decided inside a transaction that did not commit.
    calls.push(call(s.put_session(&covered), |()| Answer::Done));
    let answers = as_one_group(path, calls).await;
    for (i, a) in answers.iter().enumerate() {
        let Err(StoreError::Unavailable(source)) = a else {
            panic!("call {i}: {a:?}, expected Unavailable");
        };
        let chain = format!("{source} / {:?}", source.source());
        assert!(chain.contains("not committed"), "call {i}: {chain}");
    }
    eprintln!("the group failed with: {:?}", answers[0]);
    for i in 0..GROUP_PARTITIONS {
        assert_eq!(
            store
                .get_partition(&app(&format!("big-{i}")))
                .await
                .expect("get"),
            None
        );
    }
    // The store goes on: a small write commits.
    store
        .write_partition(
            &app("after"),
            PartitionWrite::upsert(vec![entry("at", b"small".to_vec())]),
        )
        .await
        .expect("a write after the failed commit");
    store.close().await;
}
