//! The cluster form (`redis+cluster://`) on a real three-node Redis Cluster
//! that this test binary starts on loopback ports (and that goes away with
//! it): the conformance suite on [`RedisStore`] and [`CachingStore`], and
//! the races whose safety, on a cluster, rests on the order of cross-slot
//! steps rather than on one script.

mod common;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::RedisProcess;
use common::scenarios::{
    caching, clock, entry, partition_write_races_sign_out, session, sign_in_races_sign_out,
    sign_out_empties_another_instance_cache,
};
use idweb::{Clock, PartitionKey, PartitionWrite, Store};
use idweb_store_redis::{CachingStore, RedisStore};

const NODES: usize = 3;
const SLOTS: usize = 16_384;

struct Cluster {
    nodes: Vec<RedisProcess>,
}

impl Cluster {
    fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    fn node_urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisProcess::url).collect()
    }
}

fn sync_con(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
        .unwrap_or_else(|e| panic!("cannot reach cluster node {url}: {e}"))
}

/// Three masters sharing the slots, started once for this test binary.
fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let dir = common::scratch_dir();
        // Node files of earlier runs.
        let stale = std::time::SystemTime::now() - Duration::from_secs(600);
        for file in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let old = file
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < stale);
            if old && file.file_name().to_string_lossy().starts_with("nodes-") {
                let _ = std::fs::remove_file(file.path());
            }
        }
        let nodes: Vec<RedisProcess> = (0..NODES)
            .map(|_| {
                let port = common::free_port();
                let conf = dir.join(format!("nodes-{}-{port}.conf", std::process::id()));
                let _ = std::fs::remove_file(&conf);
                RedisProcess::start(
                    port,
                    &[
                        "--cluster-enabled".into(),
                        "yes".into(),
                        "--cluster-config-file".into(),
                        conf.display().to_string(),
                        "--cluster-node-timeout".into(),
                        "5000".into(),
                    ],
                )
            })
            .collect();
        let per_node = SLOTS.div_ceil(NODES);
        for (i, node) in nodes.iter().enumerate() {
            let mut con = sync_con(&node.url());
            let (first, last) = (i * per_node, ((i + 1) * per_node).min(SLOTS) - 1);
            let _: () = redis::cmd("CLUSTER")
                .arg("ADDSLOTSRANGE")
                .arg(first)
                .arg(last)
                .query(&mut con)
                .expect("assign slots");
        }
        let mut first = sync_con(&nodes[0].url());
        for node in &nodes[1..] {
            let _: () = redis::cmd("CLUSTER")
                .arg("MEET")
                .arg("127.0.0.1")
                .arg(node.port)
                .query(&mut first)
                .expect("meet");
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = nodes.iter().all(|n| {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut sync_con(&n.url()))
                    .unwrap_or_default();
                info.contains("cluster_state:ok")
                    && info.contains(&format!("cluster_known_nodes:{NODES}"))
                    && info.contains(&format!("cluster_slots_ok:{SLOTS}"))
            });
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "the test cluster did not form");
            std::thread::sleep(Duration::from_millis(50));
        }
        Cluster { nodes }
    })
}

async fn open(prefix: &str, clock: Arc<dyn Clock>) -> RedisStore {
    let url = cluster().url();
    let store = RedisStore::open_with_prefix(&url, prefix, clock)
        .await
        .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    assert!(store.is_cluster());
    store
}

mod redis_store {
    use super::*;

    idweb_store_conformance::store_conformance_tests!(|clock| async move {
        Arc::new(open(&common::unique_prefix(), clock).await) as Arc<dyn idweb::Store>
    });
}

mod caching_store {
    use super::*;

    idweb_store_conformance::store_conformance_tests!(|clock| async move {
        let store = CachingStore::new(open(&common::unique_prefix(), clock).await).expect("cache");
        assert!(store.wait_until_active(Duration::from_secs(5)).await);
        Arc::new(store) as Arc<dyn idweb::Store>
    });
}

/// The keys of one session share a slot, and different sessions spread
/// over the nodes.
#[tokio::test]
async fn a_session_lives_in_one_slot_and_sessions_spread() {
    let prefix = common::unique_prefix();
    let store = open(&prefix, clock()).await;
    let now = clock().unix_now();
    for _ in 0..30 {
        let s = session("https://iss", "sub", None, now);
        store.put_session(&s).await.expect("put");
        store
            .write_partition(
                &PartitionKey::Session(s.id.clone()),
                PartitionWrite::upsert(vec![entry("rt", b"x")]),
            )
            .await
            .expect("write");
    }
    let mut nodes_with_sessions = 0;
    for url in cluster().node_urls() {
        let keys = common::keys_under(&url, &prefix);
        let sessions = keys.iter().filter(|k| k.ends_with(":session")).count();
        let parts = keys.iter().filter(|k| k.ends_with(":part")).count();
        assert_eq!(
            sessions, parts,
            "{url}: a session and its partition share a node"
        );
        if sessions > 0 {
            nodes_with_sessions += 1;
        }
    }
    assert!(nodes_with_sessions > 1, "30 sessions on one node only");
}

/// The anti-resurrection rule under a real race on the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_write_racing_sign_out_never_outlives_the_session() {
    let prefix = common::unique_prefix();
    let writer = open(&prefix, clock()).await;
    let remover = open(&prefix, clock()).await;
    partition_write_races_sign_out(&writer, &remover, 200, &cluster().node_urls()).await;
}

/// Sign-out against a sign-in on the cluster: here put_session and the
/// eviction each span several slots, and only their order keeps the
/// sign-in from surviving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_racing_a_sign_out_never_survives_it() {
    let prefix = common::unique_prefix();
    let signin = open(&prefix, clock()).await;
    let signout = open(&prefix, clock()).await;
    sign_in_races_sign_out(&signin, &signout, 200).await;
}

/// Invalidation across instances when each may subscribe on another node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_on_one_instance_empties_the_cache_of_another() {
    let prefix = common::unique_prefix();
    let a = caching(open(&prefix, clock()).await).await;
    let b = caching(open(&prefix, clock()).await).await;
    sign_out_empties_another_instance_cache(&a, &b).await;
}
