//! Sign-out events: every path fires exactly one event, with the right
//! fields, on the instance that evicted and on the other instance of the
//! app. The two instances are two relying parties in this process, each
//! with its own Redis connections and subscription, sharing one Redis (as
//! two processes would); the sample app's tests run two processes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idweb::{SessionId, SessionRef, SignOutEvent, SignOutPath, SignOutSelector};
use idweb_test_support::idweb_devidp::{DevIdp, DevIdpConfig, DevUser};
use idweb_test_support::{AppOptions, TestApp, browser, dev_idp, origin, sign_in, start_app};

/// A dev IdP with one user per sign-out of a test: a sign-out tombstones its
/// user (or provider session), and a new sign-in within the same second
/// would be refused as possibly older than it.
async fn idp_with_users(names: &[&str]) -> DevIdp {
    DevIdp::start(
        ([127, 0, 0, 1], 0).into(),
        DevIdpConfig {
            auto_login: true,
            users: names
                .iter()
                .map(|n| DevUser::new(*n, format!("{n} Example"), format!("{n}@example.com")))
                .collect(),
            ..DevIdpConfig::default()
        },
    )
    .await
    .expect("start the dev IdP")
}

const COOKIE_KEY: &str =
    "ZXZlbnRzLXRlc3RzLXNoYXJlLW9uZS1jb29raWUta2V5LWV2ZW50cy10ZXN0cy1zaGFyZS1vbmUtY29va2llLWtleSE=";
const CACHE_KEYS: &str = "e1:ZXZlbnRzLXRlc3RzLWNhY2hlLWtleS0zMi1ieXRlcyE=";

/// What one instance's listener heard, in order.
#[derive(Clone, Default)]
struct Heard(Arc<Mutex<Vec<SignOutEvent>>>);

impl Heard {
    fn on(app: &TestApp) -> Self {
        let heard = Self::default();
        let h = heard.clone();
        app.idweb.on_sign_out(move |e: SignOutEvent| {
            let h = h.clone();
            async move { h.0.lock().unwrap().push(e) }
        });
        heard
    }

    fn all(&self) -> Vec<SignOutEvent> {
        self.0.lock().unwrap().clone()
    }

    /// Waits (bounded, generously) until `n` events were heard.
    async fn wait_for(&self, n: usize) -> Vec<SignOutEvent> {
        for _ in 0..500 {
            if self.0.lock().unwrap().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let all = self.all();
        assert!(all.len() >= n, "heard {} of {n}: {all:?}", all.len());
        all
    }
}

/// Two instances of one app on one Redis prefix; `a` registers the client.
async fn two_instances(idp: &DevIdp) -> (TestApp, TestApp) {
    two_instances_bounded(idp, None).await
}

/// The same, with sign-out listeners bounded by `bound` (default 1 s).
async fn two_instances_bounded(idp: &DevIdp, bound: Option<Duration>) -> (TestApp, TestApp) {
    let prefix = format!("events-{}", SessionId::generate().fingerprint());
    let env = vec![
        ("IDWEB_STORE", "redis://127.0.0.1:6379".to_string()),
        ("IDWEB_STORE_PREFIX", prefix),
        ("IDWEB_COOKIE_KEY", COOKIE_KEY.to_string()),
        ("IDWEB_CACHE_KEYS", CACHE_KEYS.to_string()),
    ];
    let a = start_app(
        idp,
        AppOptions {
            extra_env: env.clone(),
            sign_out_listener_timeout: bound,
            ..AppOptions::default()
        },
    )
    .await;
    let b = start_app(
        idp,
        AppOptions {
            client_id: a.client_id.clone(),
            client_secret: Some(a.client_secret.clone()),
            register: false,
            extra_env: env,
            sign_out_listener_timeout: bound,
            ..AppOptions::default()
        },
    )
    .await;
    for app in [&a, &b] {
        let bus = app.idweb.relying_party().sign_out_events().bus();
        assert!(
            bus.is_some_and(|b| b.is_subscribed()),
            "a Redis store gives each instance a live sign-out bus"
        );
    }
    (a, b)
}

async fn sessions_of(app: &TestApp) -> Vec<idweb::Session> {
    app.store.list_sessions(None, 100).await.unwrap()
}

/// (path, the instance that evicted, sub, sid, sessions) of one sign-out.
type Expected = (
    SignOutPath,
    char,
    Option<String>,
    Option<String>,
    BTreeSet<String>,
);

fn refs(ids: &[&SessionId]) -> BTreeSet<String> {
    ids.iter()
        .map(|id| SessionRef::of(id).as_str().to_string())
        .collect()
}

fn event_refs(e: &SignOutEvent) -> BTreeSet<String> {
    e.sessions.iter().map(|r| r.as_str().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_path_fires_one_event_on_the_evicting_and_on_the_other_instance() {
    let idp = idp_with_users(&["rp", "all", "back", "front", "operator"]).await;
    let (a, b) = two_instances(&idp).await;
    let (heard_a, heard_b) = (Heard::on(&a), Heard::on(&b));
    let iss = idp.issuer().to_string();
    // (path, which instance evicted, sub, sid, sessions) of each sign-out, in order.
    let mut expected: Vec<Expected> = Vec::new();
    let mut seen = 0;

    // 1. RP-initiated: POST /account/signout at A (the dev IdP has an end-session endpoint).
    let br = browser();
    sign_in(&br, &a, "rp").await;
    let s = sessions_of(&a).await.pop().unwrap();
    let resp = br
        .post(a.at("/account/signout"))
        .header("origin", origin(&a.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    expected.push((
        SignOutPath::RpInitiated,
        'a',
        Some(s.sub.clone()),
        s.sid.clone(),
        refs(&[&s.id]),
    ));
    seen += 1;
    heard_b.wait_for(seen).await;

    // 2. All sessions: two sessions of alice; POST /account/signout?scope=all at B.
    let (b1, b2) = (browser(), browser());
    sign_in(&b1, &a, "all").await;
    sign_in(&b2, &a, "all").await;
    let both = sessions_of(&a).await;
    assert_eq!(both.len(), 2);
    let resp = b2
        .post(b.at("/account/signout?scope=all"))
        .header("origin", origin(&b.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    expected.push((
        SignOutPath::AllSessions,
        'b',
        Some(both[0].sub.clone()),
        None, // checked below: the sid of the session that asked, either of both
        refs(&[&both[0].id, &both[1].id]),
    ));
    seen += 1;
    heard_a.wait_for(seen).await;

    // 3. Back-channel: the provider's logout token reaches B.
    let br = browser();
    sign_in(&br, &a, "back").await;
    let s = sessions_of(&a).await.pop().unwrap();
    let token = idp.logout_token_for(&a.client_id, Some(&s.sub), s.sid.as_deref());
    let resp = reqwest::Client::new()
        .post(b.at("/backchannel-logout"))
        .form(&[("logout_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    expected.push((
        SignOutPath::BackChannel,
        'b',
        Some(s.sub.clone()),
        s.sid.clone(),
        refs(&[&s.id]),
    ));
    seen += 1;
    heard_a.wait_for(seen).await;
    // Its replay is refused and fires nothing.
    let resp = reqwest::Client::new()
        .post(b.at("/backchannel-logout"))
        .form(&[("logout_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    // 4. Front-channel: GET /signout-oidc?iss=&sid= at A (no cookie, as from the IdP's iframe).
    let br = browser();
    sign_in(&br, &a, "front").await;
    let s = sessions_of(&a).await.pop().unwrap();
    let sid = s.sid.clone().expect("the dev IdP sends sid");
    let resp = reqwest::Client::new()
        .get(a.at("/signout-oidc"))
        .query(&[("iss", iss.as_str()), ("sid", sid.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    expected.push((
        SignOutPath::FrontChannel,
        'a',
        Some(s.sub.clone()),
        Some(sid.clone()),
        refs(&[&s.id]),
    ));
    seen += 1;
    heard_b.wait_for(seen).await;
    // An unknown sid changes nothing and fires nothing.
    let resp = reqwest::Client::new()
        .get(a.at("/signout-oidc"))
        .query(&[("iss", iss.as_str()), ("sid", "no-such-sid")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // 5. Operator: the app's own admin action at B, for bob.
    let br = browser();
    sign_in(&br, &a, "operator").await;
    let s = sessions_of(&a).await.pop().unwrap();
    let eviction = b
        .idweb
        .relying_party()
        .logout()
        .operator_sign_out(&SignOutSelector::Subject {
            iss: iss.clone(),
            sub: s.sub.clone(),
        })
        .await
        .unwrap();
    assert_eq!(eviction.sessions_removed, 1);
    expected.push((
        SignOutPath::Operator,
        'b',
        Some(s.sub.clone()),
        None,
        refs(&[&s.id]),
    ));
    seen += 1;

    // A last marker from each instance: once both are heard on the other side,
    // any duplicate of an earlier event would have arrived before it.
    for (app, who) in [(&a, 'a'), (&b, 'b')] {
        app.idweb
            .relying_party()
            .logout()
            .operator_sign_out(&SignOutSelector::Subject {
                iss: iss.clone(),
                sub: format!("marker-{who}"),
            })
            .await
            .unwrap();
        expected.push((
            SignOutPath::Operator,
            who,
            Some(format!("marker-{who}")),
            None,
            BTreeSet::new(),
        ));
        seen += 1;
    }
    let (all_a, all_b) = (heard_a.wait_for(seen).await, heard_b.wait_for(seen).await);

    // Each instance heard every sign-out exactly once, in order: its own as
    // local, the other's from the bus, with the same fields.
    assert_eq!(all_a.len(), expected.len(), "{all_a:#?}");
    assert_eq!(all_b.len(), expected.len(), "{all_b:#?}");
    for (i, (path, who, sub, sid, sessions)) in expected.iter().enumerate() {
        for (heard, me) in [(&all_a, 'a'), (&all_b, 'b')] {
            let e = &heard[i];
            let ctx = format!("event {i} on {me}: {e:?}");
            assert_eq!(e.path, *path, "{ctx}");
            assert_eq!(e.local, *who == me, "{ctx}");
            assert_eq!(e.iss, iss, "{ctx}");
            assert_eq!(&e.sub, sub, "{ctx}");
            if *path != SignOutPath::AllSessions {
                assert_eq!(&e.sid, sid, "{ctx}");
            } else {
                let sids: Vec<_> = both.iter().map(|s| s.sid.clone()).collect();
                assert!(sids.contains(&e.sid), "{ctx}");
            }
            assert_eq!(&event_refs(e), sessions, "{ctx}");
            assert!(e.at > 1_700_000_000, "{ctx}");
        }
        // The same event, as sent and as heard.
        assert_eq!(all_a[i].at, all_b[i].at);
    }
    for app in [&a, &b] {
        let s = app.idweb.relying_party().sign_out_events().stats();
        assert_eq!((s.panicked, s.timed_out, s.publish_failed), (0, 0, 0));
        assert_eq!(s.emitted + s.heard, expected.len() as u64);
    }
}

/// Signs a new user in at `a`, and back-channel logs them out at `a`; the
/// answer must come (the outer limit only keeps a broken build from hanging).
async fn back_channel_sign_out(idp: &DevIdp, a: &TestApp, user: &str) {
    let br = browser();
    sign_in(&br, a, user).await;
    let s = sessions_of(a).await.pop().unwrap();
    let token = idp.logout_token_for(&a.client_id, Some(&s.sub), s.sid.as_deref());
    let resp = tokio::time::timeout(
        Duration::from_secs(60),
        reqwest::Client::new()
            .post(a.at("/backchannel-logout"))
            .form(&[("logout_token", token.as_str())])
            .send(),
    )
    .await
    .expect("the sign-out answered")
    .unwrap();
    assert_eq!(resp.status(), 200, "the sign-out stands");
    assert!(sessions_of(a).await.is_empty());
}

/// Waits (bounded) until `app`'s listener calls have all finished, one way or another.
async fn settled(app: &TestApp, calls: u64) -> idweb::SignOutEventStats {
    let events = app.idweb.relying_party().sign_out_events();
    for _ in 0..1000 {
        let s = events.stats();
        if s.delivered + s.panicked + s.timed_out >= calls {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    events.stats()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_listener_does_not_break_the_sign_out_on_either_instance() {
    let idp = dev_idp(true).await;
    // A bound far above what a panic takes (printing a backtrace can take a
    // while on a loaded machine), so that the panic is what is counted.
    let (a, b) = two_instances_bounded(&idp, Some(Duration::from_secs(30))).await;
    for app in [&a, &b] {
        app.idweb.on_sign_out(|_e: SignOutEvent| async move {
            panic!("a listener bug");
        });
    }
    let (heard_a, heard_b) = (Heard::on(&a), Heard::on(&b));
    back_channel_sign_out(&idp, &a, "alice").await;
    assert_eq!(heard_a.wait_for(1).await[0].path, SignOutPath::BackChannel);
    assert_eq!(heard_b.wait_for(1).await[0].path, SignOutPath::BackChannel);
    let s = settled(&a, 2).await;
    assert_eq!(
        (s.emitted, s.delivered, s.panicked, s.timed_out),
        (1, 1, 1, 0)
    );
    let s = settled(&b, 2).await;
    assert_eq!(
        (s.heard, s.delivered, s.panicked, s.timed_out),
        (1, 1, 1, 0)
    );
    // Both keep working: the next sign-out is heard again.
    back_channel_sign_out(&idp, &a, "bob").await;
    assert_eq!(heard_b.wait_for(2).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_never_ending_listener_is_cut_at_the_bound_and_does_not_hold_the_sign_out() {
    let idp = dev_idp(true).await;
    let (a, b) = two_instances(&idp).await;
    for app in [&a, &b] {
        app.idweb.on_sign_out(|_e: SignOutEvent| async move {
            std::future::pending::<()>().await;
        });
    }
    let (heard_a, heard_b) = (Heard::on(&a), Heard::on(&b));
    // Answers although one listener never ends: it is cancelled at the bound.
    back_channel_sign_out(&idp, &a, "alice").await;
    assert_eq!(
        heard_a.all().len(),
        1,
        "the other listener ran before the answer"
    );
    assert_eq!(heard_b.wait_for(1).await[0].path, SignOutPath::BackChannel);
    let s = settled(&a, 2).await;
    assert_eq!((s.emitted, s.delivered, s.timed_out), (1, 1, 1));
    let s = settled(&b, 2).await;
    assert_eq!((s.heard, s.delivered, s.timed_out), (1, 1, 1));
    back_channel_sign_out(&idp, &a, "bob").await;
    assert_eq!(heard_b.wait_for(2).await.len(), 2);
}

#[tokio::test]
async fn a_single_process_store_has_no_bus_and_still_hears_its_own_sign_outs() {
    let idp = dev_idp(true).await;
    let app = start_app(&idp, AppOptions::default()).await;
    assert!(app.idweb.relying_party().sign_out_events().bus().is_none());
    let heard = Heard::on(&app);
    let br = browser();
    sign_in(&br, &app, "alice").await;
    let s = sessions_of(&app).await.pop().unwrap();
    let resp = br
        .post(app.at("/account/signout?scope=all"))
        .header("origin", origin(&app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Emitted before the answer: no wait needed.
    let all = heard.all();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].path, SignOutPath::AllSessions);
    assert!(all[0].ended(&s.id) && all[0].local);
}
