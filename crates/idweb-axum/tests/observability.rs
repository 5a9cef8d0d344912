//! Metrics and the audit trail, through a real app: a recorder and a
//! tracing layer are installed for this whole test binary (one test, so
//! that nothing else writes to them), then a real sign-in, token requests
//! (hit, refresh, UI required), every sign-out path over HTTP or the app's
//! admin call, refused logout requests and a `jti` replay each move exactly
//! the metrics they name, and each sign-out writes exactly one audit event
//! on `idweb::audit`, with no token, session id or secret in any event.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use idweb::{AUDIT_TARGET, ManualClock, MemoryStore, SessionId, SignOutSelector, Store};
use idweb_test_support::idweb_devidp::{DevIdp, DevIdpConfig, DevUser};
use idweb_test_support::{
    AppOptions, ControlledStore, TestApp, browser, only_session, origin, sign_in, start_app,
};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// One event's target and fields (as text).
type Event = (String, BTreeMap<String, String>);

/// Every event of every target.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<Event>>>);

#[derive(Default)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
}

impl<S: tracing::Subscriber> Layer<S> for Captured {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        self.0
            .lock()
            .unwrap()
            .push((event.metadata().target().to_string(), fields.0));
    }
}

impl Captured {
    /// The audit events since the last call.
    fn take_audit(&self, seen: &mut usize) -> Vec<BTreeMap<String, String>> {
        let all = self.0.lock().unwrap();
        let new: Vec<_> = all[*seen..]
            .iter()
            .filter(|(t, _)| t == AUDIT_TARGET)
            .map(|(_, f)| f.clone())
            .collect();
        *seen = all.len();
        new
    }
}

type Labels = Vec<(String, String)>;

/// Counter deltas since the last snapshot: (name, labels, value).
struct Deltas(Vec<(String, Labels, DebugValue)>);

/// Every metric name seen in a snapshot.
static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

impl Deltas {
    fn take(s: &Snapshotter) -> Self {
        let d = Self(
            s.snapshot()
                .into_vec()
                .into_iter()
                .map(|(ck, _, _, v)| {
                    let key = ck.key();
                    let labels = key
                        .labels()
                        .map(|l| (l.key().to_string(), l.value().to_string()))
                        .collect();
                    (key.name().to_string(), labels, v)
                })
                .collect(),
        );
        SEEN.lock()
            .unwrap()
            .extend(d.0.iter().map(|(n, _, _)| n.clone()));
        d
    }

    /// The sum of the counters `name` whose labels include `labels`.
    fn count(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.0
            .iter()
            .filter(|(n, ls, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| ls.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, v)| match v {
                DebugValue::Counter(c) => *c,
                _ => 0,
            })
            .sum()
    }

    /// The last value of gauge `name`, if it was set since the last snapshot.
    fn gauge(&self, name: &str) -> Option<f64> {
        self.0.iter().find_map(|(n, _, v)| match v {
            DebugValue::Gauge(g) if n == name => Some(g.into_inner()),
            _ => None,
        })
    }

    /// The number of latency samples of store operation `op` on the memory store.
    fn samples(&self, op: &str) -> usize {
        self.samples_of(op, "memory")
    }

    /// The number of latency samples of store operation `op` on `backend`.
    fn samples_of(&self, op: &str, backend: &str) -> usize {
        self.0
            .iter()
            .filter(|(n, ls, _)| {
                n == "idweb_store_operation_duration_seconds"
                    && ls.iter().any(|(k, v)| k == "operation" && v == op)
                    && ls.iter().any(|(k, v)| k == "backend" && v == backend)
            })
            .map(|(_, _, v)| match v {
                DebugValue::Histogram(h) => h.len(),
                _ => 0,
            })
            .sum()
    }
}

const SIGN_OUTS: &str = "idweb_sign_outs_total";
const REFUSED: &str = "idweb_logout_requests_refused_total";

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

/// The token-cache entries the app's store holds for its sessions now.
async fn session_entries(app: &TestApp) -> u64 {
    let mut n = 0;
    for s in app.store.list_sessions(None, 100).await.unwrap() {
        let key = idweb::PartitionKey::Session(s.id.clone());
        if let Some(p) = app.store.get_partition(&key).await.unwrap() {
            n += p.entries.len() as u64;
        }
    }
    n
}

/// Asserts the sessions and entries `path`'s sign-outs removed, by the counters.
fn assert_removed(d: &Deltas, path: &str, sessions: u64, entries: u64) {
    assert_eq!(
        d.count("idweb_sign_out_sessions_removed_total", &[("path", path)]),
        sessions,
        "{path}"
    );
    assert_eq!(
        d.count("idweb_sign_out_entries_removed_total", &[("path", path)]),
        entries,
        "{path}"
    );
}

/// Asserts one audit event with these fields (and a fingerprint, not the
/// raw value, for `sub`).
fn assert_one_event(
    events: &[BTreeMap<String, String>],
    path: &str,
    outcome: &str,
    (sessions, entries): (&str, u64),
    app: &TestApp,
    sub: Option<&str>,
) {
    assert_eq!(
        events.len(),
        1,
        "exactly one audit event for {path}: {events:#?}"
    );
    let e = &events[0];
    assert_eq!(e["event"], "sign_out");
    assert_eq!(e["path"], path, "{e:?}");
    assert_eq!(e["outcome"], outcome, "{e:?}");
    assert_eq!(e["sessions_removed"], sessions, "{e:?}");
    assert_eq!(e["entries_removed"], entries.to_string(), "{e:?}");
    assert_eq!(e["instance"], "obs-test-1", "{e:?}");
    assert!(e["at"].parse::<i64>().unwrap() > 1_700_000_000, "{e:?}");
    let audit = app.idweb.relying_party().logout().audit();
    if let Some(sub) = sub {
        assert_eq!(e["sub"], audit.fingerprint(sub), "{e:?}");
        assert_ne!(e["sub"], sub);
    }
    if let Some(sid) = e.get("sid") {
        assert_eq!(sid.len(), 32, "a fingerprint: {e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_moves_its_metrics_and_every_sign_out_writes_one_audit_event() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this binary");
    let captured = Captured::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(captured.clone()))
        .expect("the only subscriber of this binary");

    let idp = idp_with_users(&["rp", "all", "back", "front", "operator", "l1"]).await;
    let env = vec![("IDWEB_COOKIE_KEY", COOKIE_KEY.to_string())];
    let clock = Arc::new(ManualClock::starting_now());
    let app = start_app_named(&idp, env, clock.clone()).await;
    let rp = app.idweb.relying_party();
    let iss = idp.issuer().to_string();
    let mut seen = 0;
    let mut secrets: Vec<String> = vec![COOKIE_KEY.into(), app.client_secret.clone()];
    Deltas::take(&snap);
    captured.take_audit(&mut seen);

    // A sign-in.
    let br = browser();
    sign_in(&br, &app, "rp").await;
    let d = Deltas::take(&snap);
    assert_eq!(d.count("idweb_sign_ins_total", &[]), 1);
    assert_eq!(d.count("idweb_sign_in_failures_total", &[]), 0);
    assert!(d.samples("put_session") >= 1, "the store is timed");
    // A failed one: a callback without a pending sign-in.
    let resp = browser()
        .get(app.at("/signin-oidc?code=c&state=s"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let d = Deltas::take(&snap);
    assert_eq!(
        d.count(
            "idweb_sign_in_failures_total",
            &[("reason", "no_pending_sign_in")]
        ),
        1
    );

    // Token requests: hit, refresh, UI required.
    let s = only_session(&app).await;
    secrets.push(s.id.secret().to_string());
    secrets.push(s.id_token.secret().to_string());
    let hit = rp.token_for_user(&s, &["openid"]).await.unwrap();
    secrets.push(hit.secret.secret().to_string());
    let d = Deltas::take(&snap);
    assert_eq!(
        d.count("idweb_token_requests_total", &[("result", "hit")]),
        1
    );
    assert_eq!(d.samples("partition_version"), 0, "the hit path is untimed");
    // Past the access token's life (on the app's clock only), a refresh.
    clock.advance(Duration::from_secs(3500));
    let refreshed = rp.token_for_user(&s, &["openid"]).await.unwrap();
    clock.set(SystemTime::now());
    secrets.push(refreshed.secret.secret().to_string());
    let d = Deltas::take(&snap);
    assert_eq!(
        d.count("idweb_token_requests_total", &[("result", "refresh")]),
        1
    );
    assert_eq!(
        d.count("idweb_token_requests_total", &[("result", "hit")]),
        0
    );
    idp.revoke_refresh_tokens("rp");
    clock.advance(Duration::from_secs(3 * 3500));
    let ui = rp.token_for_user(&s, &["openid"]).await;
    clock.set(SystemTime::now());
    assert!(
        matches!(ui, Err(idweb::TokenError::UiRequired { .. })),
        "{ui:?}"
    );
    let d = Deltas::take(&snap);
    assert_eq!(
        d.count("idweb_token_requests_total", &[("result", "ui_required")]),
        1
    );

    // RP-initiated sign-out (the dev IdP has an end-session endpoint).
    let entries = session_entries(&app).await;
    assert!(entries > 0, "the session holds its account and ID token");
    let resp = br
        .post(app.at("/account/signout"))
        .header("origin", origin(&app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let d = Deltas::take(&snap);
    assert_eq!(
        d.count(
            SIGN_OUTS,
            &[("path", "rp_initiated"), ("outcome", "signed_out")]
        ),
        1
    );
    assert_removed(&d, "rp_initiated", 1, entries);
    assert_eq!(session_entries(&app).await, 0);
    assert_one_event(
        &captured.take_audit(&mut seen),
        "rp_initiated",
        "signed_out",
        ("1", entries),
        &app,
        Some(&s.sub),
    );

    // All sessions: two browsers, one sign-out.
    let (b1, b2) = (browser(), browser());
    sign_in(&b1, &app, "all").await;
    sign_in(&b2, &app, "all").await;
    let all = app.store.list_sessions(None, 10).await.unwrap();
    secrets.extend(all.iter().map(|s| s.id.secret().to_string()));
    let entries = session_entries(&app).await;
    let resp = b2
        .post(app.at("/account/signout?scope=all"))
        .header("origin", origin(&app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let d = Deltas::take(&snap);
    assert_eq!(d.count(SIGN_OUTS, &[("path", "all_sessions")]), 1);
    assert_removed(&d, "all_sessions", 2, entries);
    assert_one_event(
        &captured.take_audit(&mut seen),
        "all_sessions",
        "signed_out",
        ("2", entries),
        &app,
        Some(&all[0].sub),
    );

    // Back-channel, then its replay.
    sign_in(&browser(), &app, "back").await;
    let s = only_session(&app).await;
    secrets.push(s.id.secret().to_string());
    // A token in the cache too: the entries removed are more than sign-in's.
    let signed_in_entries = session_entries(&app).await;
    rp.token_for_user(&s, &["openid"]).await.unwrap();
    let entries = session_entries(&app).await;
    assert!(entries >= signed_in_entries && entries > 0);
    let token = idp.logout_token_for(&app.client_id, Some(&s.sub), s.sid.as_deref());
    secrets.push(token.clone());
    let post = |token: String| {
        reqwest::Client::new()
            .post(app.at("/backchannel-logout"))
            .form(&[("logout_token", token)])
            .send()
    };
    assert_eq!(post(token.clone()).await.unwrap().status(), 200);
    let d = Deltas::take(&snap);
    assert_eq!(
        d.count(
            SIGN_OUTS,
            &[("path", "back_channel"), ("outcome", "signed_out")]
        ),
        1
    );
    assert!(d.samples("sign_out") >= 1);
    assert_eq!(
        d.count(
            "idweb_sign_out_entries_removed_total",
            &[("path", "back_channel")]
        ),
        entries
    );
    assert_one_event(
        &captured.take_audit(&mut seen),
        "back_channel",
        "signed_out",
        ("1", entries),
        &app,
        Some(&s.sub),
    );
    assert_eq!(post(token.clone()).await.unwrap().status(), 400);
    let d = Deltas::take(&snap);
    assert_eq!(d.count("idweb_logout_token_replays_total", &[]), 1);
    assert_eq!(d.count(REFUSED, &[("reason", "replayed")]), 1);
    assert_eq!(
        d.count(
            SIGN_OUTS,
            &[("path", "back_channel"), ("outcome", "replayed")]
        ),
        1
    );
    assert_one_event(
        &captured.take_audit(&mut seen),
        "back_channel",
        "replayed",
        ("0", 0),
        &app,
        Some(&s.sub),
    );

    // Refused logout requests: counted by rule, never audited.
    let other_audience = idp.logout_token_for("someone-else", Some(&s.sub), None);
    // One character in the middle of the signature changed.
    let valid = idp.logout_token_for(&app.client_id, Some(&s.sub), None);
    let at = valid.rfind('.').unwrap() + 10;
    let flipped = if &valid[at..=at] == "A" { "B" } else { "A" };
    let tampered = format!("{}{flipped}{}", &valid[..at], &valid[at + 1..]);
    for t in [other_audience.clone(), tampered.clone()] {
        secrets.push(t.clone());
        assert_eq!(post(t).await.unwrap().status(), 400);
    }
    let resp = reqwest::Client::new()
        .post(app.at("/backchannel-logout"))
        .form(&[("not_a_token", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let d = Deltas::take(&snap);
    assert_eq!(d.count(REFUSED, &[("reason", "audience")]), 1);
    assert_eq!(d.count(REFUSED, &[("reason", "signature")]), 1);
    assert_eq!(d.count(REFUSED, &[("reason", "malformed_request")]), 1);
    assert_eq!(d.count(SIGN_OUTS, &[]), 0, "nothing was signed out");
    assert!(captured.take_audit(&mut seen).is_empty());

    // Front-channel, without the cookie; an unknown sid is counted only.
    sign_in(&browser(), &app, "front").await;
    let s = only_session(&app).await;
    secrets.push(s.id.secret().to_string());
    let sid = s.sid.clone().expect("the dev IdP sends sid");
    let entries = session_entries(&app).await;
    let front = |sid: String| {
        reqwest::Client::new()
            .get(app.at("/signout-oidc"))
            .query(&[("iss", iss.clone()), ("sid", sid)])
            .send()
    };
    assert_eq!(front(sid.clone()).await.unwrap().status(), 200);
    assert_eq!(front("no-such-sid".into()).await.unwrap().status(), 200);
    let d = Deltas::take(&snap);
    assert_eq!(
        d.count(
            SIGN_OUTS,
            &[("path", "front_channel"), ("outcome", "signed_out")]
        ),
        1
    );
    assert_eq!(
        d.count(
            SIGN_OUTS,
            &[("path", "front_channel"), ("outcome", "no_match")]
        ),
        1
    );
    let events = captured.take_audit(&mut seen);
    assert_one_event(
        &events,
        "front_channel",
        "signed_out",
        ("1", entries),
        &app,
        Some(&s.sub),
    );
    assert_eq!(events[0]["sid"], rp.logout().audit().fingerprint(&sid));

    // Operator (the app's admin action, and `idweb cache evict`'s path).
    sign_in(&browser(), &app, "operator").await;
    let s = only_session(&app).await;
    secrets.push(s.id.secret().to_string());
    let entries = session_entries(&app).await;
    rp.logout()
        .operator_sign_out(&SignOutSelector::Subject {
            iss: iss.clone(),
            sub: s.sub.clone(),
        })
        .await
        .unwrap();
    let d = Deltas::take(&snap);
    assert_eq!(
        d.count(
            SIGN_OUTS,
            &[("path", "operator"), ("outcome", "signed_out")]
        ),
        1
    );
    assert_one_event(
        &captured.take_audit(&mut seen),
        "operator",
        "signed_out",
        ("1", entries),
        &app,
        Some(&s.sub),
    );

    // A sign-out the store fails: one event, outcome error.
    let controlled = Arc::new(ControlledStore::new(Arc::new(MemoryStore::new())));
    let failing = start_app(
        &idp,
        AppOptions {
            store: Some(controlled.clone() as Arc<dyn Store>),
            ..AppOptions::default()
        },
    )
    .await;
    controlled.set_failing(true);
    let result = failing
        .idweb
        .relying_party()
        .logout()
        .operator_sign_out(&SignOutSelector::Subject {
            iss: iss.clone(),
            sub: "someone".into(),
        })
        .await;
    assert!(result.is_err());
    let d = Deltas::take(&snap);
    assert_eq!(
        d.count(SIGN_OUTS, &[("path", "operator"), ("outcome", "error")]),
        1
    );
    let events = captured.take_audit(&mut seen);
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["outcome"], "error");
    assert_eq!(events[0]["sessions_removed"], "0");
    assert_eq!(events[0]["entries_removed"], "0");
    // The same for a front-channel request the store cannot carry out.
    let resp = reqwest::Client::new()
        .get(failing.at("/signout-oidc"))
        .query(&[("iss", iss.as_str()), ("sid", "some-sid")])
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_server_error(), "{}", resp.status());
    let d = Deltas::take(&snap);
    assert_eq!(
        d.count(
            SIGN_OUTS,
            &[("path", "front_channel"), ("outcome", "error")]
        ),
        1
    );
    let events = captured.take_audit(&mut seen);
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(
        (events[0]["path"].as_str(), events[0]["outcome"].as_str()),
        ("front_channel", "error")
    );

    // The L1 in front of Redis: subscription, hits and misses, invalidations.
    let redis = start_app(
        &idp,
        AppOptions {
            extra_env: vec![
                ("IDWEB_STORE", "redis://127.0.0.1:6379".into()),
                (
                    "IDWEB_STORE_PREFIX",
                    format!("obs-{}", SessionId::generate().fingerprint()),
                ),
            ],
            ..AppOptions::default()
        },
    )
    .await;
    let rrp = redis.idweb.relying_party();
    for _ in 0..250 {
        if rrp.readiness(Duration::from_secs(2)).await.is_ready() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let d = Deltas::take(&snap);
    assert_eq!(d.gauge("idweb_l1_subscribed"), Some(1.0), "subscribed");
    sign_in(&browser(), &redis, "l1").await;
    let s = only_session(&redis).await;
    secrets.push(s.id.secret().to_string());
    Deltas::take(&snap);
    for _ in 0..2 {
        rrp.token_for_user(&s, &["openid"]).await.unwrap();
    }
    let d = Deltas::take(&snap);
    let (hits, misses) = (
        d.count("idweb_l1_hits_total", &[]),
        d.count("idweb_l1_misses_total", &[]),
    );
    assert!(
        hits >= 1 && hits + misses >= 2,
        "{hits} hits, {misses} misses"
    );
    rrp.logout()
        .operator_sign_out(&SignOutSelector::Session(s.id.clone()))
        .await
        .unwrap();
    let d = Deltas::take(&snap);
    assert!(d.count("idweb_l1_invalidations_total", &[]) >= 1);
    assert!(d.samples_of("sign_out", "redis") >= 1);
    captured.take_audit(&mut seen);

    // Every metric recorded is documented.
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/OBSERVABILITY.md"
    ))
    .unwrap();
    for name in SEEN.lock().unwrap().iter() {
        assert!(
            doc.contains(&format!("`{name}`")),
            "{name} is not documented"
        );
    }

    // No token, session id or secret in any event of any target.
    let all = captured.0.lock().unwrap();
    assert!(all.iter().any(|(t, _)| t == AUDIT_TARGET));
    for (target, fields) in all.iter() {
        for value in fields.values() {
            for secret in secrets.iter().filter(|s| s.len() >= 16) {
                assert!(
                    !value.contains(secret.as_str()),
                    "a secret in an event of {target}: {fields:?}"
                );
            }
        }
    }
}

const COOKIE_KEY: &str = "b2JzZXJ2YWJpbGl0eS10ZXN0cy1jb29raWUta2V5LW9ic2VydmFiaWxpdHktdGVzdHMtY29va2llLWtleS0wMTIzNDU2Nzg5";

/// An app whose instance id is `obs-test-1`.
async fn start_app_named(
    idp: &DevIdp,
    env: Vec<(&'static str, String)>,
    clock: Arc<ManualClock>,
) -> TestApp {
    start_app(
        idp,
        AppOptions {
            clock,
            extra_env: env,
            instance_id: Some("obs-test-1"),
            ..AppOptions::default()
        },
    )
    .await
}
