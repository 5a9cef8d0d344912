//! The sample web app: `/` is public, `/profile` needs a signed-in user.

use axum::Json;
use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use idweb::{DownstreamRequest, PartitionKey};
use idweb_axum::{ApiRejection, AuthenticatedUser, IdWeb};

use crate::escape;

/// The app's title and the paths its pages link to, as the browser sees
/// them (below the public URL's path, when it has one).
struct Site {
    title: String,
    home: String,
    sign_in: String,
    sign_out: String,
}

impl Site {
    /// `path` of the app (e.g. `/profile`) as the browser sees it.
    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.home.trim_end_matches('/'))
    }
}

/// The sample web app's router, with idweb mounted.
pub fn router(idweb: &IdWeb, title: &str) -> Router {
    let title = std::sync::Arc::new(Site {
        title: title.to_string(),
        home: idweb.home_path(),
        sign_in: idweb.sign_in_path(),
        sign_out: idweb.sign_out_path(),
    });
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
                move |user: AuthenticatedUser, headers: HeaderMap| {
                    let title = title.clone();
                    async move { todos(&title, user, &headers).await }
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
    // No other site may frame the app's pages (clickjacking).
    idweb.mount(app).layer(idweb_axum::DenyFramingLayer)
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"))
}

/// The user's todo items, fetched from the todo API with the user's token.
async fn todos(
    title: &Site,
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
    if wants_json(headers) {
        return Ok(Json(items).into_response());
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
    Ok(page(title, ": todos", &format!("<ul id=\"todos\">{list}</ul>")).into_response())
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
    let rows: String = entries
        .iter()
        .map(|e| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&e.kind),
                escape(e.scopes.as_deref().unwrap_or("")),
                e.expires_at.map(|t| t.to_string()).unwrap_or_default()
            )
        })
        .collect();
    let body = if entries.is_empty() {
        "<p id=\"empty\">The token cache of this session is empty.</p>".to_string()
    } else {
        format!(
            "<table id=\"cache\"><tr><th>Entry</th><th>Scopes</th><th>Expires (Unix time)</th></tr>{rows}</table>"
        )
    };
    page(title, ": token cache", &body).into_response()
}

/// A page of the site, titled with the site's title and `suffix`.
fn page(site: &Site, suffix: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:44rem;margin:2rem auto;padding:0 1rem}}\
         nav a,nav form{{margin-right:1rem;display:inline}}</style></head><body><nav>\
         <a href=\"{home}\">Home</a><a href=\"{profile}\">Profile</a><a href=\"{todos}\">Todos</a>\
         <a href=\"{cache}\">Token cache</a>\
         <form method=\"post\" action=\"{sign_out}\"><button id=\"signout\">Sign out</button></form>\
         <form method=\"post\" action=\"{sign_out}?scope=all\"><button id=\"signout-all\">Sign out of all my sessions here</button></form>\
         </nav><h1>{t}</h1>{body}</body></html>",
        t = escape(&format!("{}{suffix}", site.title)),
        home = escape(&site.home),
        profile = escape(&site.at("/profile")),
        todos = escape(&site.at("/todos")),
        cache = escape(&site.at("/cache")),
        sign_out = escape(&site.sign_out),
    ))
}

fn home(site: &Site, user: Option<AuthenticatedUser>) -> Html<String> {
    let profile = site.at("/profile");
    let body = match user {
        Some(u) => format!(
            "<p id=\"status\">Signed in as <b>{}</b>.</p><p><a href=\"{}\">Your profile</a></p>",
            escape(u.name().unwrap_or(u.sub())),
            escape(&profile)
        ),
        None => {
            let sign_in = format!(
                "{}?{}",
                site.sign_in,
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("returnUrl", &profile)
                    .finish()
            );
            format!(
                "<p id=\"status\">You are not signed in.</p>\
                 <p><a id=\"signin\" href=\"{}\">Sign in</a></p>",
                escape(&sign_in)
            )
        }
    };
    page(site, "", &body)
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
