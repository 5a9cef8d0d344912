//! `SqliteStore` on its own: the cost of one read statement, the cost of a
//! thread hop next to it, and back-channel sign-outs per second under
//! concurrent writers. What is measured and the latest figures are in
//! `docs/PERFORMANCE.md` ("SQLite store").
//!
//! - `sqlite_baseline/memory_get_session/1000`: `MemoryStore::get_session`
//!   with 1 000 sessions (the unit of the other benches), measured first and
//!   again last (`sqlite_baseline_end`), to show how the machine drifted.
//! - `sqlite_read/{get_session,partition_version,get_partition}/N`: one
//!   read of a store holding N sessions, each with a three-entry partition
//!   (access, refresh and ID token of realistic sizes).
//! - `sqlite_read_path/{inline,spawn_blocking,dedicated_thread}`: the
//!   statement of `get_session` on a plain rusqlite connection to the same
//!   file, run where the caller is (under a `std::sync::Mutex`), on tokio's
//!   blocking pool, or on a thread of its own fed by a channel: what a read
//!   costs with and without a thread hop.
//! - `sqlite_logout/{ram,disk}/W`: W concurrent back-channel sign-outs, each
//!   `record_jti`, `put_tombstone` and `remove_session` of a session with a
//!   three-entry partition (three writes). Criterion reports sign-outs per
//!   second. `ram` is a file in `/dev/shm` (flushes cost nothing), `disk` a
//!   file in the target directory (each commit waits for the disk). The
//!   sessions are stored before each iteration, outside the timed part.
//!
//! The bench uses only `SqliteStore::open`, `close` and the `Store` trait,
//! so the same file measures earlier versions of the store (see
//! `docs/PERFORMANCE.md`). Run as a test (`cargo test --benches`): small
//! sizes, each benchmark once.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use idweb::{
    MemoryStore, PartitionKey, PartitionWrite, Secret, Session, SessionId, SessionLookup, Store,
    StoredEntry, Tombstone,
};
use idweb_bench::ScratchDir;
use idweb_store_sqlite::SqliteStore;
use rusqlite::{Connection, OptionalExtension};
use tokio::runtime::Runtime;

/// Sessions in the read benchmarks' store, under `cargo bench` and as a test.
const READ_SESSIONS: (usize, usize) = (10_000, 100);

/// Concurrent writers of the sign-out benchmark, under `cargo bench` and as
/// a test.
const WRITERS: (&[usize], &[usize]) = (&[1, 8, 64, 256], &[1, 8]);

const ISS: &str = "https://login.example.com/bench/v2.0";

/// Placeholder sizes of the sealed entries and the ID token, close to those
/// of real tokens.
const ACCESS_TOKEN_LEN: usize = 1200;
const REFRESH_TOKEN_LEN: usize = 400;
const ID_TOKEN_LEN: usize = 900;

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5))
        .sample_size(100)
        .configure_from_args();
    // `cargo bench` passes `--bench`; without it this is a test run.
    let full = std::env::args().any(|a| a == "--bench");
    let pick = |sizes: (usize, usize)| if full { sizes.0 } else { sizes.1 };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let ram = ScratchDir::new().expect("scratch directory");
    let disk = DiskDir::new().expect("directory on disk");
    eprintln!(
        "`ram` files in {} ({}), `disk` files in {}",
        ram.path().display(),
        if ram.in_ram() { "RAM" } else { "not RAM" },
        disk.0.display()
    );

    let memory = rt.block_on(memory_store(1_000));
    baseline(&mut c, &rt, &memory, "sqlite_baseline");

    let n = pick(READ_SESSIONS);
    let path = ram.path().join("reads.db");
    let (store, probe) = rt.block_on(read_store(&path, n));
    reads(&mut c, &rt, &store, &probe, n);
    read_path(&mut c, &rt, &path, &probe);
    rt.block_on(store.close());

    let writers = if full { WRITERS.0 } else { WRITERS.1 };
    for (name, dir) in [("ram", ram.path()), ("disk", disk.0.as_path())] {
        let store = rt
            .block_on(SqliteStore::open(dir.join("logouts.db")))
            .expect("open");
        logouts(&mut c, &rt, &store, name, writers, full);
        rt.block_on(store.close());
    }

    baseline(&mut c, &rt, &memory, "sqlite_baseline_end");
    c.final_summary();
}

/// A directory for database files on the disk (the target directory),
/// deleted on drop.
struct DiskDir(PathBuf);

impl DiskDir {
    fn new() -> std::io::Result<Self> {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "idweb-bench-sqlite-{}-{}",
            std::process::id(),
            SessionId::generate().fingerprint()
        ));
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }
}

impl Drop for DiskDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn session(sub: &str, now: i64) -> Session {
    let mut s = Session::new(
        ISS,
        sub,
        Some(format!("sid-{sub}")),
        Secret::new("i".repeat(ID_TOKEN_LEN)),
        now,
        now + 12 * 3600,
    );
    s.name = Some(format!("User {sub}"));
    s
}

/// A sign-in's partition: access, refresh and ID token.
fn partition(s: &Session, now: i64) -> PartitionWrite {
    let sealed = |len: usize, tag: u8| -> Vec<u8> {
        // 28 bytes of AEAD overhead, bytes that do not compress.
        (0..len + 28)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ tag)
            .collect()
    };
    let key = |kind: &str| format!("{}-login.example.com-{kind}-client-bench", s.account_id);
    PartitionWrite::upsert(vec![
        StoredEntry::new(
            key("accesstoken"),
            "AccessToken",
            Some(now + 3600),
            sealed(ACCESS_TOKEN_LEN, 1),
        ),
        StoredEntry::new(
            key("refreshtoken"),
            "RefreshToken",
            None,
            sealed(REFRESH_TOKEN_LEN, 2),
        ),
        StoredEntry::new(key("idtoken"), "IdToken", None, sealed(ID_TOKEN_LEN, 3)),
    ])
}

async fn memory_store(n: usize) -> (MemoryStore, SessionId) {
    let store = MemoryStore::new();
    let now = now();
    let mut probe = None;
    for i in 0..n {
        let s = session(&format!("user-{i:06}"), now);
        store.put_session(&s).await.expect("put");
        if i == n / 2 {
            probe = Some(s.id.clone());
        }
    }
    (store, probe.expect("probe"))
}

/// A file store with `n` sessions, each with its partition; returns the one
/// in the middle.
async fn read_store(path: &Path, n: usize) -> (SqliteStore, Session) {
    let store = SqliteStore::open(path).await.expect("open");
    let now = now();
    let started = Instant::now();
    let mut probe = None;
    for i in 0..n {
        let s = session(&format!("user-{i:06}"), now);
        store.put_session(&s).await.expect("put");
        store
            .write_partition(&PartitionKey::Session(s.id.clone()), partition(&s, now))
            .await
            .expect("write");
        if i == n / 2 {
            probe = Some(s);
        }
    }
    eprintln!(
        "filled the read store with {n} sessions in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    (store, probe.expect("probe"))
}

fn baseline(c: &mut Criterion, rt: &Runtime, (store, id): &(MemoryStore, SessionId), group: &str) {
    let mut g = c.benchmark_group(group);
    g.bench_function(BenchmarkId::new("memory_get_session", 1000), |b| {
        b.to_async(rt)
            .iter(|| async move { black_box(store.get_session(id).await.expect("get")) })
    });
    g.finish();
}

fn reads(c: &mut Criterion, rt: &Runtime, store: &SqliteStore, probe: &Session, n: usize) {
    let mut g = c.benchmark_group("sqlite_read");
    let id = &probe.id;
    let key = &PartitionKey::Session(probe.id.clone());
    assert_eq!(
        rt.block_on(store.get_partition(key))
            .expect("get")
            .map(|p| p.entries.len()),
        Some(3)
    );
    g.bench_function(BenchmarkId::new("get_session", n), |b| {
        b.to_async(rt)
            .iter(|| async move { black_box(store.get_session(id).await.expect("get")) })
    });
    g.bench_function(BenchmarkId::new("partition_version", n), |b| {
        b.to_async(rt)
            .iter(|| async move { black_box(store.partition_version(key).await.expect("version")) })
    });
    g.bench_function(BenchmarkId::new("get_partition", n), |b| {
        b.to_async(rt)
            .iter(|| async move { black_box(store.get_partition(key).await.expect("get")) })
    });
    g.finish();
}

/// The read of `get_session` on a plain connection.
fn select_session(conn: &Connection, id: &str) -> Option<(String, i64)> {
    conn.prepare_cached("SELECT data, expires_at FROM sessions WHERE id = ?1")
        .and_then(|mut st| {
            st.query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .expect("select")
}

type Request = (String, tokio::sync::oneshot::Sender<Option<(String, i64)>>);

fn read_path(c: &mut Criterion, rt: &Runtime, path: &Path, probe: &Session) {
    let open = || {
        let conn = Connection::open(path).expect("open");
        assert!(select_session(&conn, probe.id.secret()).is_some());
        conn
    };
    let inline = Arc::new(Mutex::new(open()));
    let (requests, queue) = std::sync::mpsc::channel::<Request>();
    let conn = open();
    let worker = std::thread::spawn(move || {
        for (id, reply) in queue {
            let _ = reply.send(select_session(&conn, &id));
        }
    });
    let id = probe.id.secret();

    let mut g = c.benchmark_group("sqlite_read_path");
    g.bench_function("inline", |b| {
        b.to_async(rt).iter(|| {
            let conn = inline.clone();
            async move {
                let conn = conn.lock().expect("lock");
                black_box(select_session(&conn, id))
            }
        })
    });
    g.bench_function("spawn_blocking", |b| {
        b.to_async(rt).iter(|| {
            let (conn, id) = (inline.clone(), id.to_string());
            async move {
                black_box(
                    tokio::task::spawn_blocking(move || {
                        let conn = conn.lock().expect("lock");
                        select_session(&conn, &id)
                    })
                    .await
                    .expect("task"),
                )
            }
        })
    });
    g.bench_function("dedicated_thread", |b| {
        b.to_async(rt).iter(|| {
            let (requests, id) = (requests.clone(), id.to_string());
            async move {
                let (reply, answer) = tokio::sync::oneshot::channel();
                requests.send((id, reply)).expect("send");
                black_box(answer.await.expect("answer"))
            }
        })
    });
    g.finish();
    drop(requests);
    worker.join().expect("worker");
}

/// One back-channel sign-out of `s`: its jti, its tombstone, its removal.
async fn logout(store: SqliteStore, s: Session, now: i64) {
    let jti = SessionId::generate().fingerprint();
    assert!(store.record_jti(ISS, &jti, now + 300).await.expect("jti"));
    let selector = SessionLookup::ByProviderSession {
        iss: ISS.into(),
        sid: s.sid.clone().expect("sid"),
    };
    store
        .put_tombstone(&Tombstone::new(selector, now, now + 12 * 3600))
        .await
        .expect("tombstone");
    assert!(store.remove_session(&s.id).await.expect("remove").is_some());
}

fn logouts(
    c: &mut Criterion,
    rt: &Runtime,
    store: &SqliteStore,
    name: &str,
    writers: &[usize],
    full: bool,
) {
    let mut g = c.benchmark_group("sqlite_logout");
    g.sampling_mode(SamplingMode::Flat);
    if full {
        g.sample_size(10).measurement_time(Duration::from_secs(10));
    }
    for &w in writers {
        g.throughput(Throughput::Elements(w as u64));
        g.bench_function(BenchmarkId::new(name, w), |b| {
            b.to_async(rt).iter_custom(|iters| async move {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let now = now();
                    // The sessions to sign out, stored (concurrently)
                    // outside the timed part.
                    let stored: Vec<_> = (0..w)
                        .map(|_| {
                            let store = store.clone();
                            tokio::spawn(async move {
                                let s = session(&SessionId::generate().fingerprint(), now);
                                store.put_session(&s).await.expect("put");
                                store
                                    .write_partition(
                                        &PartitionKey::Session(s.id.clone()),
                                        partition(&s, now),
                                    )
                                    .await
                                    .expect("write");
                                s
                            })
                        })
                        .collect();
                    let mut sessions = Vec::with_capacity(w);
                    for t in stored {
                        sessions.push(t.await.expect("stored"));
                    }
                    let started = Instant::now();
                    let tasks: Vec<_> = sessions
                        .into_iter()
                        .map(|s| tokio::spawn(logout(store.clone(), s, now)))
                        .collect();
                    for t in tasks {
                        t.await.expect("sign-out");
                    }
                    timed += started.elapsed();
                }
                timed
            })
        });
    }
    g.finish();
}
