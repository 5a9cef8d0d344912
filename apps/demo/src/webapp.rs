//! The sample web app: `/` is public, `/profile` needs a signed-in user.

use axum::Json;
use axum::Router;
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use idweb_axum::{AuthenticatedUser, IdWeb};

use crate::escape;

/// The sample web app's router, with idweb mounted.
pub fn router(idweb: &IdWeb, title: &str) -> Router {
    let title = title.to_string();
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
            get(move |user: AuthenticatedUser, headers: HeaderMap| {
                let title = title.clone();
                async move { profile(&title, user, &headers) }
            }),
        );
    idweb.mount(app)
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem}}\
         nav a{{margin-right:1rem}}</style></head><body><nav><a href=\"/\">Home</a><a href=\"/profile\">Profile</a></nav>\
         <h1>{t}</h1>{body}</body></html>",
        t = escape(title)
    ))
}

fn home(title: &str, user: Option<AuthenticatedUser>) -> Html<String> {
    let body = match user {
        Some(u) => format!(
            "<p id=\"status\">Signed in as <b>{}</b>.</p><p><a href=\"/profile\">Your profile</a></p>",
            escape(u.name().unwrap_or(u.sub()))
        ),
        None => "<p id=\"status\">You are not signed in.</p>\
                 <p><a id=\"signin\" href=\"/account/signin?returnUrl=%2Fprofile\">Sign in</a></p>"
            .to_string(),
    };
    page(title, &body)
}

fn profile(title: &str, user: AuthenticatedUser, headers: &HeaderMap) -> Response {
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"));
    if wants_json {
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
    page(&format!("{title}: profile"), &body).into_response()
}
