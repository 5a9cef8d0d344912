//! The in-process cache over `LISTEN/NOTIFY`, with the real server: several
//! instances sharing one schema (the scenarios every store with an
//! invalidation bus runs), the acknowledged eviction with instances behind
//! a slow link, fail-closed when the listening connection is killed, and the
//! sign-out event bus.

mod common;

#[path = "../../idweb-test-support/src/relay.rs"]
mod relay;

use std::sync::Arc;
use std::time::Duration;

use idweb::{Clock, SignOutBus, SignOutEvent, SignOutPath, Store, SystemClock};
use idweb_store_conformance::multi_instance;
use idweb_store_postgres::{CachingStore, PostgresSignOutBus};
use relay::DelayRelay;

fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

async fn instance(url: &str, schema: &str) -> Arc<CachingStore> {
    multi_instance::caching(common::open_url(url, schema, clock()).await).await
}

/// The server's address, as `HOST:PORT`, for the relay.
fn upstream() -> String {
    let url = common::server_url();
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(&url);
    let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest);
    rest.split('/').next().unwrap_or(rest).to_string()
}

/// The server's URL, through `addr` instead.
fn url_through(addr: std::net::SocketAddr) -> String {
    common::server_url().replacen(&upstream(), &addr.to_string(), 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_out_empties_another_instance_cache() {
    let schema = common::unique_name("l1two");
    let _drop = common::DropSchema(schema.clone());
    let url = common::server_url();
    let a = instance(&url, &schema).await;
    let b = instance(&url, &schema).await;
    multi_instance::sign_out_empties_another_instance_cache(&a, &b).await;
}

/// A version read refills L1 once the cached partition aged out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_reads_refill_an_aged_out_partition() {
    let schema = common::unique_name("l1age");
    let _drop = common::DropSchema(schema.clone());
    multi_instance::version_reads_refill_an_aged_out_partition(
        common::open_url(&common::server_url(), &schema, clock()).await,
    )
    .await;
}

/// Three instances with their caches on; two reach PostgreSQL through a
/// relay that delays what the server sends them by 40 ms (their pools and
/// their listening connections). Over 300 sign-outs through the third,
/// while clients keep asking the slow two for the session: no request that
/// started after the sign-out returned is answered with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_instance_serves_a_session_once_its_sign_out_returned() {
    let schema = common::unique_name("l1ack");
    let _drop = common::DropSchema(schema.clone());
    let relay_a = DelayRelay::start(&upstream(), Duration::from_millis(40))
        .await
        .expect("relay");
    let relay_b = DelayRelay::start(&upstream(), Duration::from_millis(40))
        .await
        .expect("relay");
    let c = instance(&common::server_url(), &schema).await;
    let a = instance(&url_through(relay_a.addr()), &schema).await;
    let b = instance(&url_through(relay_b.addr()), &schema).await;
    multi_instance::no_instance_serves_a_session_once_its_sign_out_returned(
        c,
        a,
        b,
        300,
        10,
        Duration::from_millis(70),
    )
    .await;
}

/// What acknowledgement costs a sign-out when every instance is healthy
/// (three instances on a direct link). Prints the figures; asserts only
/// that each sign-out removed its session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_acknowledgement_costs_a_sign_out_on_a_direct_link() {
    let schema = common::unique_name("l1cost");
    let _drop = common::DropSchema(schema.clone());
    let url = common::server_url();
    let c = instance(&url, &schema).await;
    let _others = [instance(&url, &schema).await, instance(&url, &schema).await];
    tokio::time::sleep(Duration::from_millis(300)).await;
    let plain: Arc<dyn Store> = Arc::new(c.inner().clone());
    let cached: Arc<dyn Store> = c.clone();
    for (name, store) in [("CachingStore", cached), ("PostgresStore", plain)] {
        let (median, p99) = multi_instance::time_sign_outs(store, 200).await;
        println!(
            "{name}: back-channel sign-out of one session, 3 instances: {median:?} (median), {p99:?} (p99)"
        );
    }
}

/// Fail-closed: the listening connections of the schema's caches are
/// terminated by the server (`pg_terminate_backend`); L1 is bypassed and
/// emptied until they listen again, then recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_listener_bypasses_and_empties_l1_until_it_listens_again() {
    let schema = common::unique_name("l1kill");
    let _drop = common::DropSchema(schema.clone());
    let url = common::server_url();
    let a = instance(&url, &schema).await;
    let b = instance(&url, &schema).await;
    let admin = common::admin().await;
    let name = format!("idweb listener {schema}");
    let kill = || async {
        let rows = admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                &[&name],
            )
            .await
            .expect("terminate");
        assert!(!rows.is_empty(), "no listening connection to terminate");
    };
    multi_instance::a_lost_listener_bypasses_and_empties_l1_until_back(&a, &b, kill).await;
}

/// Each write is announced in its own transaction: heard in commit order
/// by a plain listening connection; a write that rolls back (here a
/// trigger refuses the insert) announces nothing, neither then nor later
/// (the cache does not queue it again, as it would on Redis).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_announce_in_their_transaction() {
    let schema = common::unique_name("l1tx");
    let _drop = common::DropSchema(schema.clone());
    let url = common::server_url();
    let store = common::open_url(&url, &schema, clock()).await;
    let (client, mut conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(m)) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            if let tokio_postgres::AsyncMessage::Notification(n) = m {
                let _ = tx.send(n.payload().to_string());
            }
        }
    });
    client
        .batch_execute(&format!(
            "LISTEN \"{schema}:invalidate\";
             CREATE FUNCTION {schema}.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN IF NEW.sub = 'refused' THEN RAISE EXCEPTION 'refused by the test'; END IF;
             RETURN NEW; END $$;
             CREATE TRIGGER refuse BEFORE INSERT ON {schema}.sessions
             FOR EACH ROW EXECUTE FUNCTION {schema}.refuse();"
        ))
        .await
        .expect("listen, trigger");
    let cached = multi_instance::caching(store.clone()).await;
    let s = multi_instance_session();
    let mut ghost = multi_instance_session();
    ghost.sub = "refused".into();
    let refused = cached.put_session(&ghost).await;
    assert!(
        matches!(refused, Err(idweb::StoreError::Unavailable(_))),
        "{refused:?}"
    );
    assert!(cached.wait_until_active(Duration::from_secs(10)).await);
    cached.put_session(&s).await.expect("sign-in");
    cached.remove_session(&s.id).await.expect("remove");
    // Heard, in commit order: the sign-in, then the removal (asking for
    // acknowledgements); heartbeats aside, nothing of the refused write.
    let mut heard = Vec::new();
    while heard.len() < 2 {
        let p = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("in time")
            .expect("a notification");
        if !p.contains("\n~") {
            heard.push(p);
        }
    }
    let tag = idweb_l1_tag(&s.id);
    assert!(
        heard[0].ends_with(&format!("\ns:{tag}\np:s:{tag}")),
        "{heard:?}"
    );
    assert!(
        heard[1].contains(&format!("\ns:{tag}")) && heard[1].contains("\n#"),
        "{heard:?}"
    );
    let ghost_tag = idweb_l1_tag(&ghost.id);
    assert!(heard.iter().all(|p| !p.contains(&ghost_tag)), "{heard:?}");
}

fn multi_instance_session() -> idweb::Session {
    let now = clock().unix_now();
    idweb::Session::new(
        "https://iss.example",
        format!("sub-{}", idweb::SessionId::generate().fingerprint()),
        Some(format!(
            "sid-{}",
            idweb::SessionId::generate().fingerprint()
        )),
        idweb::Secret::new("header.payload.sig"),
        now,
        now + 3600,
    )
}

/// The L1 tag of a session id, as the layer computes it.
fn idweb_l1_tag(id: &idweb::SessionId) -> String {
    idweb_l1::names::session_tag(id)
}

/// A sign-out through the one-statement `sign_out` names, in SQL, what the
/// layer names in Rust: the removed sessions' entries are dropped on the
/// other instance (checked through its cache), for a session target with
/// a provider session too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_statement_sign_out_drops_the_entries_on_other_instances() {
    let schema = common::unique_name("l1so");
    let _drop = common::DropSchema(schema.clone());
    let url = common::server_url();
    let a = instance(&url, &schema).await;
    let b = instance(&url, &schema).await;
    // Two sessions of one provider session: a local sign-out of one of them
    // tombstones (iss, sid), which must drop the other from A's cache too.
    let s1 = multi_instance_session();
    let mut s2 = multi_instance_session();
    s2.sid = s1.sid.clone();
    s2.sub = s1.sub.clone();
    for s in [&s1, &s2] {
        b.put_session(s).await.expect("sign-in");
        assert!(a.get_session(&s.id).await.expect("read").is_some());
    }
    // The announcement of B's own write may still be on its way and drop
    // what A just cached: the precondition is that A comes to serve s2 from
    // its cache.
    let served_from_l1 =
        idweb_store_conformance::multi_instance::eventually(Duration::from_secs(5), || async {
            let before = a.l1_hits();
            a.get_session(&s2.id).await.expect("read").is_some() && a.l1_hits() == before + 1
        })
        .await;
    assert!(served_from_l1, "A serves s2 from its cache");
    let signout = idweb::SignOut::new(b.clone(), clock(), Duration::from_secs(3600));
    signout
        .evict(&idweb::SignOutSelector::Session(s1.id.clone()))
        .await
        .expect("sign-out");
    for s in [&s1, &s2] {
        assert!(
            a.get_session(&s.id).await.expect("read").is_none(),
            "A still serves a session of the signed-out provider session"
        );
    }
}

/// The next event `rx` hears (within a generous bound).
async fn next(rx: &mut idweb::SignOutReceiver) -> SignOutEvent {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("in time")
        .expect("event")
}

/// Two instances' sign-out buses on one schema: an event published by one
/// is heard once by the other, and not by the publisher itself (markers
/// published afterwards prove it: notifications arrive in commit order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sign_out_bus_delivers_another_instances_event_once() {
    let schema = common::unique_name("bus");
    let _drop = common::DropSchema(schema.clone());
    let store = common::open(&schema, clock()).await;
    let one = PostgresSignOutBus::new(store.clone()).await.expect("bus");
    let two = PostgresSignOutBus::new(store).await.expect("bus");
    assert_eq!(one.channel(), format!("{schema}:signout"));
    let (mut at_one, mut at_two) = (one.subscribe(), two.subscribe());
    let id = idweb::SessionId::generate();
    let event = SignOutEvent::new(SignOutPath::BackChannel, "https://iss.example", 42)
        .with_sub(Some("alice".into()))
        .with_sid(Some("sid-1".into()))
        .with_sessions([&id]);
    one.publish(&event).await.expect("publish");
    let marker_one = SignOutEvent::new(SignOutPath::Operator, "https://iss.example", 43);
    one.publish(&marker_one).await.expect("publish");
    let marker_two = SignOutEvent::new(SignOutPath::Operator, "https://iss.example", 44);
    two.publish(&marker_two).await.expect("publish");
    let heard = next(&mut at_two).await;
    assert!(!heard.local);
    assert_eq!(
        (
            heard.path,
            heard.iss.as_str(),
            heard.sub.as_deref(),
            heard.sid.as_deref(),
            heard.at
        ),
        (
            SignOutPath::BackChannel,
            "https://iss.example",
            Some("alice"),
            Some("sid-1"),
            42
        )
    );
    assert!(heard.ended(&id));
    // Then one's marker, not the event again.
    assert_eq!(next(&mut at_two).await.at, 43, "the event was heard twice");
    // The publisher hears only the other's marker, not its own messages.
    assert_eq!(next(&mut at_one).await.at, 44, "a bus heard its own event");

    // The server ends both buses' listening connections: each notices,
    // listens again, and hears the other's events again.
    let admin = common::admin().await;
    let rows = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&format!("idweb listener {schema}")],
        )
        .await
        .expect("terminate");
    assert_eq!(rows.len(), 2, "the two buses' listening connections");
    let noticed = multi_instance::eventually(Duration::from_secs(5), || async {
        !one.is_subscribed() || !two.is_subscribed()
    })
    .await;
    assert!(noticed, "a lost listening connection went unnoticed");
    assert!(one.wait_until_subscribed(Duration::from_secs(10)).await);
    assert!(two.wait_until_subscribed(Duration::from_secs(10)).await);
    let after = SignOutEvent::new(SignOutPath::FrontChannel, "https://iss.example", 45);
    one.publish(&after).await.expect("publish");
    assert_eq!(
        next(&mut at_two).await.at,
        45,
        "heard after listening again"
    );
}
