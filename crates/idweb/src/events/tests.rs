use super::*;
use std::sync::atomic::AtomicUsize;

fn event() -> SignOutEvent {
    let id = SessionId::generate();
    SignOutEvent::new(
        SignOutPath::BackChannel,
        "https://idp.example",
        1_800_000_000,
    )
    .with_sub(Some("alice".into()))
    .with_sid(Some("s1".into()))
    .with_sessions([&id])
}

fn counting(hits: &Arc<AtomicUsize>) -> impl SignOutListener {
    let hits = hits.clone();
    move |_e: SignOutEvent| {
        let hits = hits.clone();
        async move {
            hits.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[tokio::test]
async fn every_listener_hears_each_event_once() {
    let events = SignOutEvents::new(None, DEFAULT_LISTENER_TIMEOUT);
    let (a, b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    events.listen(counting(&a));
    events.listen(counting(&b));
    events.emit(event()).await;
    assert_eq!((a.load(Ordering::SeqCst), b.load(Ordering::SeqCst)), (1, 1));
    let s = events.stats();
    assert_eq!(
        (s.emitted, s.delivered, s.panicked, s.timed_out),
        (1, 2, 0, 0)
    );
}

#[tokio::test]
async fn a_panicking_listener_is_counted_and_the_others_still_run() {
    let events = SignOutEvents::new(None, DEFAULT_LISTENER_TIMEOUT);
    let hits = Arc::new(AtomicUsize::new(0));
    events.listen(|_e: SignOutEvent| async move {
        panic!("listener bug");
    });
    events.listen(counting(&hits));
    events.emit(event()).await;
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    let s = events.stats();
    assert_eq!((s.delivered, s.panicked, s.timed_out), (1, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_listener_that_never_finishes_is_cancelled_at_the_bound() {
    let events = SignOutEvents::new(None, Duration::from_millis(300));
    let hits = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let f = finished.clone();
    events.listen(move |_e: SignOutEvent| {
        let f = f.clone();
        async move {
            std::future::pending::<()>().await;
            f.fetch_add(1, Ordering::SeqCst);
        }
    });
    events.listen(counting(&hits));
    let before = tokio::time::Instant::now();
    events.emit(event()).await;
    // The paused clock only moves to the bound: emit waited for it, no longer.
    assert_eq!(before.elapsed(), Duration::from_millis(300));
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert_eq!(finished.load(Ordering::SeqCst), 0);
    let s = events.stats();
    assert_eq!((s.delivered, s.timed_out), (1, 1));
}

#[test]
fn events_name_sessions_by_digest_and_travel_as_json() {
    let id = SessionId::generate();
    let other = SessionId::generate();
    let e = SignOutEvent::new(SignOutPath::FrontChannel, "https://idp.example", 7)
        .with_sub(Some("alice".into()))
        .with_sessions([&id]);
    assert!(e.ended(&id));
    assert!(!e.ended(&other));
    assert!(e.concerns("https://idp.example", "alice"));
    let json = e.to_json().unwrap();
    assert!(!json.contains(id.secret()), "{json}");
    assert!(!format!("{e:?}").contains(id.secret()));
    assert!(json.contains("\"front_channel\""), "{json}");
    let back = SignOutEvent::from_json(json.as_bytes()).unwrap();
    assert!(!back.local);
    assert_eq!(back.sessions, e.sessions);
    assert_eq!((back.path, back.at, back.sub), (e.path, e.at, e.sub));
    assert!(SignOutEvent::from_json(b"{\"path\":\"nope\"}").is_err());
}
