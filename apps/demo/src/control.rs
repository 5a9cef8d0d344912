//! The control room: one page that shows App A and App B side by side —
//! each app's live sessions with their token-cache entries (kind, scopes,
//! expiry; never a secret) — the provider's sessions, a way to start every
//! sign-out path, and a live timeline of the sign-outs each app heard.
//!
//! It runs in the demo's process and sees the apps through their [`IdWeb`]
//! handles: their stores (read-only, for the columns) and their sign-out
//! hooks (for the timeline). The operator eviction runs the library path of
//! `idweb cache evict` ([`idweb_cli::evict_and_announce`]) on a store
//! connection of its own, as the command would from another process.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use idweb::{Clock, PartitionKey, SessionRef, SignOutEvent, SignOutPath, SystemClock};
use idweb_axum::IdWeb;
use idweb_devidp::{DevIdp, subject_for};

use crate::escape;
use crate::look::{self, human_time};

/// How many timeline entries are kept (the oldest go first).
const TIMELINE_LENGTH: usize = 50;
/// Events this close to the previous one belong to the same sign-out: their
/// times are counted from its start.
const SAME_SIGN_OUT: Duration = Duration::from_millis(1500);
/// How long a tombstone of the operator eviction lasts (the command's default).
const OPERATOR_TOMBSTONE: Duration = Duration::from_secs(86_400);

/// One of the apps the control room shows.
#[derive(Clone, Debug)]
pub struct ControlApp {
    /// Its name ("App A").
    pub name: String,
    /// Its public URL, without a trailing slash.
    pub url: String,
    /// How the provider tells it of sign-outs ("back-channel").
    pub told_by: String,
    /// The app's idweb.
    pub idweb: IdWeb,
}

/// One line of the timeline.
#[derive(Debug, Clone)]
struct Entry {
    /// Unix seconds.
    at: i64,
    app: String,
    path: &'static str,
    /// How the app heard of it.
    how: String,
    user: Option<String>,
    sessions: usize,
    /// Cache entries removed with those sessions, as the store counted
    /// them in the sign-out (`None`: the event did not say).
    tokens: Option<u64>,
    /// Milliseconds since this sign-out started.
    after_ms: u128,
}

#[derive(Default)]
struct Timeline {
    entries: VecDeque<Entry>,
    /// When the current sign-out started (the first event of a burst, or
    /// the control room's button).
    started: Option<Instant>,
    last: Option<Instant>,
}

impl Timeline {
    /// Milliseconds since the start of the sign-out an event at `now` belongs to.
    fn elapsed(&mut self, now: Instant) -> u128 {
        let fresh = self
            .last
            .is_none_or(|last| now.duration_since(last) > SAME_SIGN_OUT);
        if fresh || self.started.is_none() {
            self.started = Some(now);
        }
        self.last = Some(now);
        self.started
            .map_or(0, |s| now.saturating_duration_since(s).as_millis())
    }

    fn push(&mut self, entry: Entry) {
        self.entries.push_front(entry);
        self.entries.truncate(TIMELINE_LENGTH);
    }
}

struct Inner {
    apps: Vec<ControlApp>,
    idp: DevIdp,
    timeline: Mutex<Timeline>,
    /// Usernames by subject, for the timeline.
    names: HashMap<String, String>,
}

/// The control room (cheap to clone).
#[derive(Clone)]
pub struct ControlRoom {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ControlRoom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlRoom")
            .field("apps", &self.inner.apps.len())
            .finish_non_exhaustive()
    }
}

impl ControlRoom {
    /// A control room over `apps` and `idp`; registers a sign-out hook on
    /// each app for the timeline.
    pub fn new(idp: DevIdp, apps: Vec<ControlApp>, users: &[&str]) -> Self {
        let names = users
            .iter()
            .map(|u| (subject_for(u), (*u).to_string()))
            .collect();
        let room = Self {
            inner: Arc::new(Inner {
                apps,
                idp,
                timeline: Mutex::new(Timeline::default()),
                names,
            }),
        };
        for (index, app) in room.inner.apps.iter().enumerate() {
            let hook = room.clone();
            app.idweb.on_sign_out(move |event: SignOutEvent| {
                let hook = hook.clone();
                async move { hook.heard(index, &event) }
            });
        }
        room
    }

    fn timeline(&self) -> MutexGuard<'_, Timeline> {
        self.inner
            .timeline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// An app's sign-out hook: one timeline entry.
    fn heard(&self, index: usize, event: &SignOutEvent) {
        let now = Instant::now();
        let Some(app) = self.inner.apps.get(index) else {
            return;
        };
        let how = match (event.local, event.path) {
            (false, _) => "heard on the store's bus (another instance or the command did it)",
            (true, SignOutPath::BackChannel) => "the provider's logout token (back-channel)",
            (true, SignOutPath::FrontChannel) => {
                "the provider's page loaded its iframe (front-channel)"
            }
            (true, SignOutPath::RpInitiated) => "its own Sign out, then on to the provider",
            (true, SignOutPath::AllSessions) => "its own \"Sign out of all my sessions\"",
            (true, SignOutPath::Local) => "its own Sign out (this app only)",
            (true, SignOutPath::Operator) => "an operator's eviction in this process",
            (true, _) => "a sign-out",
        };
        let mut timeline = self.timeline();
        let tokens = event.entries_removed;
        let after_ms = timeline.elapsed(now);
        let entry = Entry {
            at: event.at,
            app: app.name.clone(),
            path: event.path.as_str(),
            how: how.to_string(),
            user: event.sub.as_ref().map(|s| self.user_name(s)),
            sessions: event.sessions.len(),
            tokens,
            after_ms,
        };
        timeline.push(entry);
    }

    fn user_name(&self, sub: &str) -> String {
        self.inner
            .names
            .get(sub)
            .cloned()
            .unwrap_or_else(|| format!("{}…", sub.get(..8).unwrap_or(sub)))
    }

    /// The control room's router: `/` (the page), `/live` (its live part),
    /// `POST /operator-evict`, `/style.css`.
    pub fn router(&self) -> Router {
        let room = self.clone();
        let live = self.clone();
        let evict = self.clone();
        Router::new()
            .route(
                "/",
                get(move || {
                    let room = room.clone();
                    async move { room.page().await }
                }),
            )
            .route(
                "/live",
                get(move || {
                    let room = live.clone();
                    async move { no_store(Html(room.live().await).into_response()) }
                }),
            )
            .route(
                "/operator-evict",
                post(move |headers: HeaderMap, body: Bytes| {
                    let room = evict.clone();
                    async move { room.operator_evict(&headers, &body).await }
                }),
            )
            .route(look::STYLESHEET_PATH, get(look::stylesheet))
    }

    /// The whole page.
    async fn page(&self) -> Response {
        let apps = &self.inner.apps;
        let idp = self.inner.idp.issuer();
        let mut nav: Vec<(String, String)> = apps
            .iter()
            .map(|a| (a.name.clone(), format!("{}/", a.url)))
            .collect();
        nav.push(("Identity provider".into(), format!("{idp}/")));
        let (mut paths, mut local) = (String::new(), String::new());
        for app in apps {
            let (id, url, name) = (
                escape(&slug(&app.name)),
                escape(&app.url),
                escape(&app.name),
            );
            paths.push_str(&format!(
                "<a class=\"button\" id=\"rp-{id}\" href=\"{url}/sign-out\">Sign out in {name}</a>"
            ));
            local.push_str(&format!(
                "<a class=\"button\" id=\"local-{id}\" href=\"{url}/sign-out#signout-app-only\">Sign out of {name} only</a>"
            ));
        }
        let users = ["alice", "bob"];
        let mut provider = String::new();
        let mut operator = String::new();
        for user in users {
            provider.push_str(&format!(
                "<form method=\"post\" action=\"{idp}/admin/end-sessions\"><button class=\"danger\" id=\"end-{user}\" name=\"username\" value=\"{user}\">End all sessions of {user}</button></form>",
                idp = escape(idp),
            ));
            operator.push_str(&format!(
                "<form method=\"post\" action=\"/operator-evict\"><button class=\"danger\" id=\"evict-{user}\" name=\"username\" value=\"{user}\">idweb cache evict --sub {user}</button></form>"
            ));
        }
        let body = format!(
            "<div id=\"live\">{live}</div><div class=\"card\"><p>Sign in to both apps (same browser: single sign-on), open their <em>Todos</em> so that each caches an access token, \
             then sign out by any path below. Whatever the path, <strong>both caches empty</strong>: every app that shared the provider session \
             hears of it, and the timeline says how and how fast.</p>\
             <table id=\"paths\"><tr><th>Path</th><th>Start it</th></tr>\
             <tr><td><span class=\"path\">rp_initiated</span> / <span class=\"path\">all_sessions</span><br><small>the app's own Sign out, then the provider tells the other app</small></td><td class=\"actions\">{paths}</td></tr>\
             <tr><td><span class=\"path\">provider</span><br><small>the provider's \"end all sessions\": back-channel to App A, front-channel iframe to App B</small></td><td class=\"actions\">{provider}</td></tr>\
             <tr><td><span class=\"path\">operator</span><br><small>what <code>idweb cache evict</code> does, on each app's store</small></td><td class=\"actions\">{operator}</td></tr>\
             <tr><td><span class=\"path\">local</span><br><small>this app only: its session and tokens go; the provider's session and the other app stay (on purpose)</small></td><td class=\"actions\">{local}</td></tr>\
             </table></div>\
             <script>\
             async function refresh() {{ try {{ const r = await fetch('/live', {{cache: 'no-store'}}); \
             if (r.ok) {{ document.getElementById('live').innerHTML = await r.text(); }} }} catch (e) {{}} }}\
             setInterval(refresh, 1000);\
             </script>",
            live = self.live().await,
        );
        no_store(
            Html(look::frame(
                "Control room",
                "Control room",
                &look::links(&nav),
                &body,
                true,
            ))
            .into_response(),
        )
    }

    /// The live part: the apps, the provider, the timeline.
    async fn live(&self) -> String {
        let now = SystemClock.unix_now();
        let mut columns = String::new();
        for app in &self.inner.apps {
            columns.push_str(&self.app_column(app, now).await);
        }
        columns.push_str(&self.provider_column(now));
        let timeline = self.timeline_html(now);
        format!(
            "<div class=\"grid\">{columns}</div><div class=\"card\"><h2>Sign-out timeline</h2>{timeline}</div>"
        )
    }

    async fn app_column(&self, app: &ControlApp, now: i64) -> String {
        let rp = app.idweb.relying_party();
        let id = slug(&app.name);
        let mut out = format!(
            "<div class=\"card\" id=\"{id}\"><h2><a href=\"{url}/\">{name}</a></h2><p><small>told of sign-outs by {told}</small></p>",
            id = escape(&id),
            url = escape(&app.url),
            name = escape(&app.name),
            told = escape(&app.told_by),
        );
        let sessions = match rp.store().list_sessions(None, 50).await {
            Ok(s) => s,
            Err(_) => {
                out.push_str("<p class=\"error\">The app's store is unavailable.</p></div>");
                return out;
            }
        };
        let sessions: Vec<_> = sessions
            .into_iter()
            .filter(|s| !s.is_expired(now))
            .collect();
        if sessions.is_empty() {
            out.push_str("<p class=\"empty no-sessions\">No session: nothing cached.</p>");
        }
        for s in sessions {
            let reference = SessionRef::of(&s.id);
            let entries = rp
                .token_cache()
                .summaries(&PartitionKey::Session(s.id.clone()))
                .await
                .unwrap_or_default();
            out.push_str(&format!(
                "<div class=\"session\"><h3>{name} <small class=\"mono\">session #{digest}</small></h3>\
                 <p><small>provider session <span class=\"mono\">{sid}</span>, signed in: {created}</small></p>",
                name = escape(
                    s.name
                        .as_deref()
                        .unwrap_or(&self.user_name(&s.sub))
                ),
                digest = escape(reference.as_str().get(..8).unwrap_or_default()),
                sid = escape(&short(s.sid.as_deref().unwrap_or("none"))),
                created = escape(&human_time(s.created_at.div_euclid(idweb::MICROS_PER_SEC), now)),
            ));
            if entries.is_empty() {
                out.push_str("<p class=\"empty\">No cache entries.</p>");
            } else {
                out.push_str("<table class=\"entries\"><tr><th>Entry</th><th>Holds</th><th>Expires</th></tr>");
                for e in &entries {
                    out.push_str(&look::entry_row(e, now));
                }
                out.push_str("</table>");
            }
            out.push_str("</div>");
        }
        out.push_str("</div>");
        out
    }

    fn provider_column(&self, now: i64) -> String {
        let sessions = self.inner.idp.sessions();
        let mut out = format!(
            "<div class=\"card\" id=\"provider\"><h2><a href=\"{}/\">Identity provider</a></h2><p><small>its browser sessions</small></p>",
            escape(self.inner.idp.issuer())
        );
        if sessions.is_empty() {
            out.push_str("<p class=\"empty no-sessions\">No session.</p>");
        } else {
            out.push_str(
                "<table><tr><th>User</th><th>sid</th><th>Apps</th><th>Signed in</th></tr>",
            );
            for s in sessions {
                out.push_str(&format!(
                    "<tr class=\"idp-session\"><td>{}</td><td class=\"mono\">{}</td><td>{}</td><td>{}</td></tr>",
                    escape(&s.username),
                    escape(&short(&s.sid)),
                    escape(&s.clients.join(", ")),
                    escape(&human_time(s.auth_time, now)),
                ));
            }
            out.push_str("</table>");
        }
        out.push_str("</div>");
        out
    }

    fn timeline_html(&self, now: i64) -> String {
        let timeline = self.timeline();
        if timeline.entries.is_empty() {
            return "<p class=\"empty\" id=\"timeline-empty\">No sign-out yet.</p>".into();
        }
        let mut out = String::from("<ol class=\"timeline\" id=\"timeline\">");
        for e in &timeline.entries {
            let tokens = e.tokens.map_or_else(|| "?".to_string(), |t| t.to_string());
            out.push_str(&format!(
                "<li class=\"{class}\" data-app=\"{app}\" data-path=\"{path}\" data-entries=\"{tokens}\"><span class=\"when\">{when} · +{ms} ms</span>\
                 <strong>{app}</strong> <span class=\"path\">{path}</span> {user} — {how}: \
                 <strong>{sessions}</strong> session{s} and <strong>{tokens}</strong> cache entr{ies} removed</li>",
                class = match (e.sessions, e.tokens) {
                    (0, _) => "",
                    (_, Some(1..)) => "removed with-entries",
                    _ => "removed",
                },
                when = escape(&human_time(e.at, now)),
                ms = e.after_ms,
                app = escape(&e.app),
                path = e.path,
                user = e
                    .user
                    .as_deref()
                    .map(|u| format!("({})", escape(u)))
                    .unwrap_or_default(),
                how = escape(&e.how),
                sessions = e.sessions,
                s = if e.sessions == 1 { "" } else { "s" },
                ies = if e.tokens == Some(1) { "y" } else { "ies" },
            ));
        }
        out.push_str("</ol>");
        out
    }

    /// `POST /operator-evict` (`username=...`): the library path of `idweb
    /// cache evict --sub SUB`, on each app's store through a connection of
    /// its own, then back to the page.
    async fn operator_evict(&self, headers: &HeaderMap, body: &[u8]) -> Response {
        if !same_origin(headers) {
            return (
                StatusCode::FORBIDDEN,
                "the control room's actions must come from its own page",
            )
                .into_response();
        }
        let username = url::form_urlencoded::parse(body)
            .find(|(k, _)| k == "username")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        if !self.inner.names.values().any(|u| *u == username) {
            return (StatusCode::BAD_REQUEST, "unknown user").into_response();
        }
        let sub = subject_for(&username);
        let started = Instant::now();
        {
            let mut timeline = self.timeline();
            timeline.started = Some(started);
            timeline.last = Some(started);
        }
        for app in &self.inner.apps {
            let outcome = operator_evict(app, &sub).await;
            let mut timeline = self.timeline();
            let after_ms = timeline.elapsed(Instant::now());
            let (sessions, tokens, how) = match outcome {
                Ok((removed, entries, bus)) => (
                    removed,
                    Some(entries),
                    if bus {
                        "idweb cache evict's library path; the event goes out on the store's bus"
                            .to_string()
                    } else {
                        "idweb cache evict's library path on the app's SQLite file (no bus: the app refuses the session on its next request)"
                            .to_string()
                    },
                ),
                Err(e) => (0, None, format!("idweb cache evict failed: {e}")),
            };
            timeline.push(Entry {
                at: SystemClock.unix_now(),
                app: app.name.clone(),
                path: SignOutPath::Operator.as_str(),
                how,
                user: Some(username.clone()),
                sessions,
                tokens,
                after_ms,
            });
        }
        Redirect::to("/").into_response()
    }
}

/// `idweb cache evict --sub SUB` on `app`'s store: the store opened as the
/// command opens it (its own connection, no in-process L1), its bus if it
/// has one. Returns the sessions and cache entries removed and whether
/// there was a bus.
async fn operator_evict(app: &ControlApp, sub: &str) -> Result<(usize, u64, bool), String> {
    let settings = app.idweb.relying_party().settings();
    let mut url = settings.store.clone();
    if url.scheme().starts_with("redis") || url.scheme().starts_with("postgres") {
        url = url.with_option("l1", "false").map_err(|e| e.to_string())?;
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = idweb_stores::open(&url, clock.clone())
        .await
        .map_err(|e| idweb_cli::error_chain(&e))?;
    let bus = idweb_stores::open_sign_out_bus(&url, clock)
        .await
        .map_err(|e| idweb_cli::error_chain(&e))?;
    let has_bus = bus.is_some();
    let filter = idweb_cli::Filter {
        iss: None,
        sub: Some(sub.to_string()),
        sid: None,
    };
    let report = idweb_cli::evict_and_announce(store, bus, &filter, OPERATOR_TOMBSTONE)
        .await
        .map_err(|e| idweb_cli::error_chain(&e))?;
    Ok((report.sessions_removed, report.entries_removed, has_bus))
}

/// Whether a form post comes from the control room's own page.
fn same_origin(headers: &HeaderMap) -> bool {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    match get("sec-fetch-site") {
        Some(site) => site == "same-origin",
        None => match (get("origin"), get("host")) {
            (Some(origin), Some(host)) => origin == format!("http://{host}"),
            _ => false,
        },
    }
}

fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// "App A" → "app-a".
fn slug(name: &str) -> String {
    name.to_ascii_lowercase().replace(' ', "-")
}

/// The first 10 characters of an identifier, for display.
fn short(id: &str) -> String {
    match id.get(..10) {
        Some(head) if id.len() > 10 => format!("{head}…"),
        _ => id.to_string(),
    }
}
