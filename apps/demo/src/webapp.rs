//! The sample web app: `/` is public, `/profile` needs a signed-in user.
//!
//! It keeps two things of its own per user, and drops both in its sign-out
//! hook (`IdWeb::on_sign_out`), whichever path and instance the sign-out
//! took: an in-memory copy of each user's todo list (`/todos/last`), and the open
//! `GET /events` streams (server-sent events), which send `signed-out` and
//! close when their session ends.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use idweb::{DownstreamRequest, PartitionKey, SessionRef, SignOutEvent};
use idweb_axum::{ApiRejection, AuthenticatedUser, IdWeb};
use tokio::sync::oneshot;

use crate::escape;

/// The app's title and the paths its pages link to, as the browser sees
/// them (below the public URL's path, when it has one).
struct Site {
    title: String,
    home: String,
    sign_in: String,
    sign_out: String,
    /// More links for the navigation bar (the demo's control room).
    links: Vec<(String, String)>,
}

impl Site {
    /// `path` of the app (e.g. `/profile`) as the browser sees it.
    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.home.trim_end_matches('/'))
    }

    /// The sign-in URL that comes back to the profile page.
    fn sign_in_url(&self) -> String {
        format!(
            "{}?{}",
            self.sign_in,
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("returnUrl", &self.at("/profile"))
                .finish()
        )
    }

    /// The navigation bar: the app's pages, the extra links, then the
    /// sign-out buttons for a signed-in user or a sign-in link otherwise.
    fn nav(&self, signed_in: bool) -> String {
        let mut nav = format!(
            "<a href=\"{home}\">Home</a><a href=\"{profile}\">Profile</a><a href=\"{todos}\">Todos</a>\
             <a href=\"{cache}\">Token cache</a>{links}",
            home = escape(&self.home),
            profile = escape(&self.at("/profile")),
            todos = escape(&self.at("/todos")),
            cache = escape(&self.at("/cache")),
            links = crate::look::links(&self.links),
        );
        if signed_in {
            nav.push_str(&format!(
                "<form method=\"post\" action=\"{sign_out}\"><button id=\"signout\">Sign out</button></form>\
                 <form method=\"post\" action=\"{sign_out}?scope=all\"><button id=\"signout-all\">Sign out of all my sessions here</button></form>",
                sign_out = escape(&self.sign_out),
            ));
        } else {
            nav.push_str(&format!(
                "<a id=\"nav-signin\" href=\"{}\">Sign in</a>",
                escape(&self.sign_in_url())
            ));
        }
        nav
    }
}

/// An open `/events` stream: its session, and how to end it.
struct OpenStream {
    session: SessionRef,
    signed_out: oneshot::Sender<SignOutEvent>,
}

/// What the sample app keeps in memory per user and per session.
#[derive(Default)]
struct Kept {
    /// `(iss, sub)` → the user's todo list as last fetched.
    todos: HashMap<(String, String), Vec<serde_json::Value>>,
    /// Open `/events` streams by number.
    streams: HashMap<u64, OpenStream>,
    next_stream: u64,
}

/// The sample app's per-user memory, shared by its routes and its sign-out hook.
#[derive(Clone, Default)]
struct AppMemory(Arc<Mutex<Kept>>);

impl AppMemory {
    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The sign-out hook: drops the user's todo copy and ends the streams
    /// of the sessions removed.
    fn signed_out(&self, event: &SignOutEvent) {
        let mut kept = self.kept();
        if let Some(sub) = &event.sub {
            kept.todos.remove(&(event.iss.clone(), sub.clone()));
        }
        let ended: Vec<u64> = kept
            .streams
            .iter()
            .filter(|(_, s)| event.sessions.contains(&s.session))
            .map(|(n, _)| *n)
            .collect();
        for n in ended {
            if let Some(s) = kept.streams.remove(&n) {
                let _ = s.signed_out.send(event.clone());
            }
        }
    }

    fn open_stream(&self, session: SessionRef) -> (u64, oneshot::Receiver<SignOutEvent>) {
        let (tx, rx) = oneshot::channel();
        let mut kept = self.kept();
        kept.next_stream += 1;
        let n = kept.next_stream;
        kept.streams.insert(
            n,
            OpenStream {
                session,
                signed_out: tx,
            },
        );
        (n, rx)
    }
}

/// Unregisters a stream when the client goes away.
struct StreamGuard {
    memory: AppMemory,
    n: u64,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.memory.kept().streams.remove(&self.n);
    }
}

/// The sample web app's router, with idweb mounted and the app's sign-out
/// hook registered on `idweb`.
pub fn router(idweb: &IdWeb, title: &str) -> Router {
    router_with_links(idweb, title, Vec::new())
}

/// [`router`], with more `(label, URL)` links in every page's navigation
/// bar (the demo links its control room).
pub fn router_with_links(idweb: &IdWeb, title: &str, links: Vec<(String, String)>) -> Router {
    let memory = AppMemory::default();
    let hook = memory.clone();
    idweb.on_sign_out(move |event: SignOutEvent| {
        let hook = hook.clone();
        async move { hook.signed_out(&event) }
    });
    let title = std::sync::Arc::new(Site {
        title: title.to_string(),
        home: idweb.home_path(),
        sign_in: idweb.sign_in_path(),
        sign_out: idweb.sign_out_path(),
        links,
    });
    let dressing = (title.title.clone(), title.nav(false));
    let home_title = title.clone();
    let app = Router::new()
        .route(
            "/",
            get(move |user: Option<AuthenticatedUser>| {
                let title = home_title.clone();
                async move { home(&title, user) }
            }),
        )
        .route(
            "/profile",
            get({
                let title = title.clone();
                move |user: AuthenticatedUser, headers: HeaderMap| {
                    let title = title.clone();
                    async move { profile(&title, user, &headers) }
                }
            }),
        )
        .route(
            "/todos",
            get({
                let title = title.clone();
                let memory = memory.clone();
                move |user: AuthenticatedUser, headers: HeaderMap| {
                    let title = title.clone();
                    let memory = memory.clone();
                    async move { todos(&title, &memory, user, &headers).await }
                }
            }),
        )
        .route(
            "/sign-out",
            get({
                let title = title.clone();
                move |user: Option<AuthenticatedUser>| {
                    let title = title.clone();
                    async move { sign_out_page(&title, user.as_ref()) }
                }
            }),
        )
        .route(
            "/todos/last",
            get({
                let title = title.clone();
                let memory = memory.clone();
                move |user: AuthenticatedUser, headers: HeaderMap| {
                    let title = title.clone();
                    let memory = memory.clone();
                    async move { last_todos(&title, &memory, &user, &headers) }
                }
            }),
        )
        .route(
            "/events",
            get({
                let idweb = idweb.clone();
                move |user: AuthenticatedUser| {
                    let memory = memory.clone();
                    let idweb = idweb.clone();
                    async move { events(&idweb, memory, user).await }
                }
            }),
        )
        .route(
            "/cache",
            get({
                let idweb = idweb.clone();
                move |user: AuthenticatedUser, headers: HeaderMap| {
                    let title = title.clone();
                    let idweb = idweb.clone();
                    async move { cache(&title, &idweb, user, &headers).await }
                }
            }),
        );
    let app = app.route(crate::look::STYLESHEET_PATH, get(crate::look::stylesheet));
    // idweb's own pages (signed out, errors) in the app's look; no other
    // site may frame the app's pages (clickjacking).
    idweb
        .mount(app)
        .layer(axum::middleware::from_fn(move |req, next| {
            let (brand, nav) = dressing.clone();
            crate::look::dress(brand, nav, req, next)
        }))
        .layer(idweb_axum::DenyFramingLayer)
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"))
}

/// `GET /events`: a server-sent-events stream for the signed-in session:
/// `ready` at once, then `signed-out` (with the path) when the session is
/// signed out — by any path, on any instance — and the stream ends.
async fn events(idweb: &IdWeb, memory: AppMemory, user: AuthenticatedUser) -> Response {
    let id = user.session().id.clone();
    let (n, signed_out) = memory.open_stream(SessionRef::of(&id));
    let guard = StreamGuard {
        memory: memory.clone(),
        n,
    };
    // Signed out between the request's check and the registration: end now.
    let still_there = idweb.relying_party().session(&id).await;
    if matches!(still_there, Ok(None)) {
        let event = SignOutEvent::new(
            idweb::SignOutPath::Local,
            user.iss(),
            idweb.relying_party().clock().unix_now(),
        );
        if let Some(s) = memory.kept().streams.remove(&n) {
            let _ = s.signed_out.send(event);
        }
    }
    enum Step {
        Ready(oneshot::Receiver<SignOutEvent>, StreamGuard),
        Waiting(oneshot::Receiver<SignOutEvent>, StreamGuard),
        Done,
    }
    let stream = futures_util::stream::unfold(Step::Ready(signed_out, guard), |step| async move {
        match step {
            Step::Ready(rx, guard) => Some((
                Ok::<_, Infallible>(Event::default().event("ready").data("{}")),
                Step::Waiting(rx, guard),
            )),
            Step::Waiting(rx, _guard) => match rx.await {
                Ok(e) => Some((
                    Ok(Event::default()
                        .event("signed-out")
                        .data(serde_json::json!({ "path": e.path.as_str() }).to_string())),
                    Step::Done,
                )),
                Err(_) => None,
            },
            Step::Done => None,
        }
    });
    let mut resp = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The user's todo items, fetched from the todo API with the user's token;
/// the app keeps a copy in memory (see `/todos/last`) until the user signs out.
async fn todos(
    title: &Site,
    memory: &AppMemory,
    user: AuthenticatedUser,
    headers: &HeaderMap,
) -> Result<Response, ApiRejection> {
    let resp = user
        .call_api("todo", DownstreamRequest::get("api/todos"))
        .await?;
    if !resp.is_success() {
        let body = format!(
            "<p id=\"error\">The todo API answered HTTP {}.</p>",
            resp.status
        );
        return Ok((StatusCode::BAD_GATEWAY, page(title, "", &body)).into_response());
    }
    let items: Vec<serde_json::Value> = resp.json().unwrap_or_default();
    let key = (user.iss().to_string(), user.sub().to_string());
    memory.kept().todos.insert(key, items.clone());
    Ok(todos_page(title, &items, headers))
}

/// `GET /todos/last`: the app's in-memory copy of the user's todo list, as
/// last fetched on this instance — 404 when there is none (never fetched
/// here, or dropped by the sign-out hook since).
fn last_todos(
    title: &Site,
    memory: &AppMemory,
    user: &AuthenticatedUser,
    headers: &HeaderMap,
) -> Response {
    let key = (user.iss().to_string(), user.sub().to_string());
    let copy = memory.kept().todos.get(&key).cloned();
    match copy {
        Some(items) => todos_page(title, &items, headers),
        None if wants_json(headers) => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": "no_copy" })),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            page(
                title,
                "",
                "<p id=\"no-copy\">No copy of your todo list is kept here.</p>",
            ),
        )
            .into_response(),
    }
}

fn todos_page(title: &Site, items: &[serde_json::Value], headers: &HeaderMap) -> Response {
    if wants_json(headers) {
        return Json(items).into_response();
    }
    let list: String = items
        .iter()
        .map(|i| {
            format!(
                "<li>{} {}</li>",
                if i["done"].as_bool().unwrap_or(false) {
                    "&#10003;"
                } else {
                    "&#9744;"
                },
                escape(i["title"].as_str().unwrap_or(""))
            )
        })
        .collect();
    page(title, ": todos", &format!("<ul id=\"todos\">{list}</ul>")).into_response()
}

/// The session's token-cache entries: kind, scopes, expiry — never a secret.
async fn cache(
    title: &Site,
    idweb: &IdWeb,
    user: AuthenticatedUser,
    headers: &HeaderMap,
) -> Response {
    let key = PartitionKey::Session(user.session().id.clone());
    let entries = match idweb.relying_party().token_cache().summaries(&key).await {
        Ok(e) => e,
        Err(_) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                page(title, "", "<p>The token cache is unavailable.</p>"),
            )
                .into_response();
        }
    };
    if wants_json(headers) {
        return Json(serde_json::json!({ "entries": entries })).into_response();
    }
    let now = idweb.relying_party().clock().unix_now();
    let rows: String = entries
        .iter()
        .map(|e| crate::look::entry_row(e, now))
        .collect();
    let body = if entries.is_empty() {
        "<p id=\"empty\" class=\"empty\">The token cache of this session is empty.</p>".to_string()
    } else {
        format!(
            "<div class=\"card\"><table id=\"cache\"><tr><th>Entry</th><th>What it holds</th><th>Expires</th></tr>{rows}</table>\
             <p><small>Secrets are never shown: they are encrypted in the store and stay on the server.</small></p></div>"
        )
    };
    page(title, ": token cache", &body).into_response()
}

/// A page of the site, titled with the site's title and `suffix`, for a
/// signed-in user (the sign-out buttons are shown).
fn page(site: &Site, suffix: &str, body: &str) -> Html<String> {
    page_for(site, suffix, body, true)
}

/// A page of the site; the navigation bar offers sign-out only when `signed_in`.
fn page_for(site: &Site, suffix: &str, body: &str, signed_in: bool) -> Html<String> {
    Html(crate::look::frame(
        &format!("{}{suffix}", site.title),
        &site.title,
        &site.nav(signed_in),
        body,
        false,
    ))
}

fn home(site: &Site, user: Option<AuthenticatedUser>) -> Html<String> {
    let profile = site.at("/profile");
    let signed_in = user.is_some();
    let body = match user {
        Some(u) => format!(
            "<div class=\"card\"><p id=\"status\">Signed in as <b>{}</b>.</p>\
             <p class=\"actions\"><a class=\"button\" href=\"{}\">Your profile</a>\
             <a class=\"button quiet\" href=\"{}\">Your todos</a>\
             <a class=\"button quiet\" href=\"{}\">This session's token cache</a></p></div>",
            escape(u.name().unwrap_or(u.sub())),
            escape(&profile),
            escape(&site.at("/todos")),
            escape(&site.at("/cache")),
        ),
        None => format!(
            "<div class=\"card\"><p id=\"status\">You are not signed in.</p>\
             <p class=\"actions\"><a class=\"button\" id=\"signin\" href=\"{}\">Sign in</a></p></div>",
            escape(&site.sign_in_url())
        ),
    };
    page_for(site, "", &body, signed_in)
}

/// `GET /sign-out`: the app's sign-out choices on a page of its own (the
/// control room links here; the buttons post from this origin, as the
/// sign-out's Origin check wants).
fn sign_out_page(site: &Site, user: Option<&AuthenticatedUser>) -> Html<String> {
    let body = match user {
        Some(u) => format!(
            "<div class=\"card\"><p>Signed in as <b>{name}</b>.</p>\
             <form method=\"post\" action=\"{so}\"><button class=\"block danger\" id=\"signout-here\">Sign out \
             <small>(this session; then at the provider, which tells the other apps)</small></button></form>\
             <form method=\"post\" action=\"{so}?scope=all\"><button class=\"block danger\" id=\"signout-all-here\">Sign out of all my sessions in this app</button></form>\
             <form method=\"post\" action=\"{so}?scope=local\"><button class=\"block\" id=\"signout-app-only\">Sign out of this app only \
             <small>(stay signed in at the provider and in the other app)</small></button></form></div>",
            name = escape(u.name().unwrap_or(u.sub())),
            so = escape(&site.sign_out),
        ),
        None => format!(
            "<div class=\"card\"><p id=\"status\">You are not signed in.</p>\
             <p class=\"actions\"><a class=\"button\" href=\"{}\">Sign in</a></p></div>",
            escape(&site.sign_in_url())
        ),
    };
    page_for(site, ": sign out", &body, user.is_some())
}

fn profile(title: &Site, user: AuthenticatedUser, headers: &HeaderMap) -> Response {
    if wants_json(headers) {
        return Json(serde_json::json!({
            "sub": user.sub(),
            "name": user.name(),
            "sid": user.sid(),
        }))
        .into_response();
    }
    let body = format!(
        "<dl><dt>Name</dt><dd id=\"name\">{}</dd><dt>Subject (sub)</dt><dd id=\"sub\">{}</dd>\
         <dt>Issuer</dt><dd>{}</dd><dt>Provider session (sid)</dt><dd>{}</dd></dl>",
        escape(user.name().unwrap_or("(no name)")),
        escape(user.sub()),
        escape(user.iss()),
        escape(user.sid().unwrap_or("(none)")),
    );
    page(title, ": profile", &body).into_response()
}
