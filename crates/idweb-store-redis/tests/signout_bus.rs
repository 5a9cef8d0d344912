//! The Redis sign-out bus: an event published by one instance is heard once
//! by every other instance on the same prefix, never by its sender, and
//! never across prefixes. Needs the Redis at 127.0.0.1:6379.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use idweb::{SessionId, SignOutBus, SignOutEvent, SignOutPath, SystemClock};
use idweb_store_redis::{RedisSignOutBus, RedisStore};

const URL: &str = "redis://127.0.0.1:6379";

async fn bus(prefix: &str) -> RedisSignOutBus {
    let redis = RedisStore::open_with_prefix(URL, prefix, Arc::new(SystemClock))
        .await
        .expect("the Redis at 127.0.0.1:6379 must be running");
    RedisSignOutBus::new(redis).await.expect("subscribed")
}

fn prefix(what: &str) -> String {
    format!("bus-{what}-{}", SessionId::generate().fingerprint())
}

#[tokio::test]
async fn others_hear_each_event_once_and_the_sender_does_not() {
    let p = prefix("once");
    let (a, b, c) = (
        bus(&p).await,
        bus(&p).await,
        bus(&prefix("elsewhere")).await,
    );
    assert_eq!(a.channel(), format!("{p}:signout"));
    let (mut at_a, mut at_b, mut at_c) = (a.subscribe(), b.subscribe(), c.subscribe());
    let id = SessionId::generate();
    let first = SignOutEvent::new(SignOutPath::BackChannel, "https://idp.example", 42)
        .with_sub(Some("alice".into()))
        .with_sid(Some("s1".into()))
        .with_sessions([&id]);
    a.publish(&first).await.unwrap();
    // A marker from b: once a hears it, anything a would have heard of its
    // own message (published earlier, same channel) would have come first.
    let marker = SignOutEvent::new(SignOutPath::Operator, "https://idp.example", 43);
    b.publish(&marker).await.unwrap();
    let within = Duration::from_secs(20);

    let heard = tokio::time::timeout(within, at_b.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(!heard.local);
    assert_eq!(heard.path, first.path);
    assert_eq!(
        (
            heard.iss.as_str(),
            heard.sub.as_deref(),
            heard.sid.as_deref()
        ),
        ("https://idp.example", Some("alice"), Some("s1"))
    );
    assert!(heard.ended(&id));
    assert_eq!(heard.at, 42);

    let heard = tokio::time::timeout(within, at_a.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        heard.path,
        SignOutPath::Operator,
        "a skipped its own message"
    );
    // b heard the first event once: the next thing it hears is a's next event.
    let next = SignOutEvent::new(SignOutPath::FrontChannel, "https://idp.example", 44);
    a.publish(&next).await.unwrap();
    let heard = tokio::time::timeout(within, at_b.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(heard.at, 44, "no duplicate of the first event");

    // c, on another prefix, heard nothing: a marker on its own prefix comes first.
    let c2 = bus(c.channel().trim_end_matches(":signout")).await;
    c2.publish(&marker).await.unwrap();
    let heard = tokio::time::timeout(within, at_c.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(heard.at, 43, "c heard only its own prefix");
    assert!(a.is_subscribed() && b.is_subscribed());
}
