//! The sample downstream "todo" API: an OAuth 2.0 resource server built on
//! `idweb-api`.
//!
//! Callers present JWT access tokens (RFC 9068) from the configured issuer in
//! `Authorization: Bearer <token>`. [`idweb_api::JwtBearer`] validates them —
//! signature with a key of the issuer's JWKS (idweb's provider key cache,
//! refetched on an unknown `kid` at most once per 30 seconds), asymmetric
//! algorithms only, no `crit`, `typ` `at+jwt` or `JWT`, `iss` exactly the
//! issuer, `aud` the configured audience, `exp`/`nbf` with 60 seconds of
//! leeway, a non-empty `sub` — and [`RequireScope`] layers require the read
//! scope for `GET` and the write scope for `POST`, `PATCH` and `DELETE`,
//! before the body is read.
//!
//! Failures are answered as RFC 6750 §3 says: 401 with
//! `WWW-Authenticate: Bearer realm="todo"` (plus `error="invalid_token"` when
//! a token was sent) or 403 with `error="insufficient_scope"` and the scope
//! needed. The token itself is never echoed or logged.
//!
//! Endpoints (items belong to the token's `iss` + `sub`, live in memory, and
//! every new caller starts with two sample items):
//!
//! | | |
//! |---|---|
//! | `GET /api/todos` | the caller's items, `[{"id", "title", "done"}]` |
//! | `POST /api/todos` | `{"title"}` (1 to 200 characters) → 201 with the new item |
//! | `PATCH /api/todos/{id}` | `{"done"}` → the updated item |
//! | `DELETE /api/todos/{id}` | → 204 |
//! | `GET /healthz` | `ok`, no token needed |
//!
//! Request bodies are limited to 16 KiB.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::handler::Handler;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use idweb_api::{ApiCaller, BuildError, JwtBearer, RequireScope};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The `realm` of the `WWW-Authenticate` challenges.
const REALM: &str = "todo";

/// Largest request body accepted.
const MAX_REQUEST_BODY: usize = 16 * 1024;

/// Longest item title, in characters.
const MAX_TITLE_CHARS: usize = 200;

/// Most items one caller may have.
const MAX_ITEMS_PER_CALLER: usize = 1000;

/// The items every new caller starts with.
const SAMPLE_TITLES: [&str; 2] = ["Try idweb", "Sign out everywhere"];

/// Configuration of the todo API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TodoApiConfig {
    /// The issuer whose access tokens are accepted; its discovery document is
    /// at `{issuer}/.well-known/openid-configuration`. `https`, or `http` for
    /// a loopback host (development).
    pub issuer: String,
    /// The audience access tokens must be issued for, e.g. `api://todo`.
    pub audience: String,
    /// The scope needed to read items, e.g. `api://todo/todos.read`.
    pub required_scope_read: String,
    /// The scope needed to add, change or delete items, e.g.
    /// `api://todo/todos.write`.
    pub required_scope_write: String,
}

impl TodoApiConfig {
    /// The usual configuration for `issuer`: audience `api://todo`, scopes
    /// `api://todo/todos.read` and `api://todo/todos.write`.
    pub fn new(issuer: impl Into<String>) -> Self {
        TodoApiConfig {
            issuer: issuer.into(),
            audience: "api://todo".to_owned(),
            required_scope_read: "api://todo/todos.read".to_owned(),
            required_scope_write: "api://todo/todos.write".to_owned(),
        }
    }
}

/// Builds the todo API: fetches the issuer's discovery document and JWKS,
/// then returns the router serving `/api/todos` and `/healthz`.
///
/// # Errors
/// The configuration is invalid, or the discovery document or the JWKS cannot
/// be fetched or do not fit the configuration.
pub async fn router(config: TodoApiConfig) -> Result<Router, BuildError> {
    let jwt = JwtBearer::builder(config.issuer)
        .with_audience(config.audience)
        .with_realm(REALM)
        .build()
        .await?;
    let read = RequireScope::any([config.required_scope_read]);
    let write = RequireScope::any([config.required_scope_write]);
    let api = Arc::new(Api {
        todos: Mutex::new(HashMap::new()),
    });
    Ok(Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/api/todos",
            get(list_todos.layer(read)).post(create_todo.layer(write.clone())),
        )
        .route(
            "/api/todos/{id}",
            axum::routing::patch(update_todo.layer(write.clone())).delete(delete_todo.layer(write)),
        )
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BODY))
        .layer(jwt.layer())
        .with_state(api))
}

/// Shared state of the API.
struct Api {
    todos: Mutex<HashMap<Owner, CallerTodos>>,
}

// ---------------------------------------------------------------------------
// The todo items
// ---------------------------------------------------------------------------

/// Who owns items: the token's issuer and subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Owner {
    iss: String,
    sub: String,
}

/// One item.
#[derive(Debug, Clone, Serialize)]
struct Todo {
    id: u64,
    title: String,
    done: bool,
}

/// One caller's items.
struct CallerTodos {
    next_id: u64,
    items: Vec<Todo>,
}

impl CallerTodos {
    fn with_samples() -> Self {
        let mut todos = CallerTodos {
            next_id: 1,
            items: Vec::new(),
        };
        for title in SAMPLE_TITLES {
            todos.add(title.to_owned());
        }
        todos
    }

    fn add(&mut self, title: String) -> Todo {
        let todo = Todo {
            id: self.next_id,
            title,
            done: false,
        };
        self.next_id += 1;
        self.items.push(todo.clone());
        todo
    }
}

impl Api {
    /// Runs `f` on the caller's items, creating the samples on first use.
    fn with_todos<T>(&self, owner: Owner, f: impl FnOnce(&mut CallerTodos) -> T) -> T {
        let mut all = self.todos.lock().unwrap_or_else(PoisonError::into_inner);
        f(all.entry(owner).or_insert_with(CallerTodos::with_samples))
    }
}

/// A JSON error answer for a request that passed authentication.
fn api_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

fn body_error(rejection: &JsonRejection) -> Response {
    let status = rejection.status();
    let description = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "The request body is larger than 16 KiB.",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "The request body must be application/json.",
        _ => "The request body is not the JSON expected.",
    };
    api_error(status, "invalid_request", description)
}

fn not_found() -> Response {
    api_error(StatusCode::NOT_FOUND, "not_found", "There is no such item.")
}

impl Owner {
    fn of(caller: &ApiCaller) -> Self {
        Owner {
            iss: caller.issuer().to_owned(),
            sub: caller.sub().to_owned(),
        }
    }
}

async fn list_todos(State(api): State<Arc<Api>>, caller: ApiCaller) -> Response {
    let items = api.with_todos(Owner::of(&caller), |todos| todos.items.clone());
    Json(items).into_response()
}

#[derive(Deserialize)]
struct NewTodo {
    title: String,
}

async fn create_todo(
    State(api): State<Arc<Api>>,
    caller: ApiCaller,
    body: Result<Json<NewTodo>, JsonRejection>,
) -> Response {
    let Json(new) = match body {
        Ok(body) => body,
        Err(rejection) => return body_error(&rejection),
    };
    let chars = new.title.chars().count();
    if chars == 0
        || chars > MAX_TITLE_CHARS
        || new.title.trim().is_empty()
        || new.title.chars().any(char::is_control)
    {
        return api_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_title",
            "The title must have 1 to 200 characters, not all blank, and no control characters.",
        );
    }
    let created = api.with_todos(Owner::of(&caller), |todos| {
        (todos.items.len() < MAX_ITEMS_PER_CALLER).then(|| todos.add(new.title))
    });
    let Some(todo) = created else {
        return api_error(
            StatusCode::CONFLICT,
            "too_many_items",
            "The list is full; delete items first.",
        );
    };
    let mut response = (StatusCode::CREATED, Json(&todo)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/todos/{}", todo.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

#[derive(Deserialize)]
struct TodoChange {
    done: bool,
}

async fn update_todo(
    State(api): State<Arc<Api>>,
    caller: ApiCaller,
    Path(id): Path<String>,
    body: Result<Json<TodoChange>, JsonRejection>,
) -> Response {
    let Json(change) = match body {
        Ok(body) => body,
        Err(rejection) => return body_error(&rejection),
    };
    let Ok(id) = id.parse::<u64>() else {
        return not_found();
    };
    let updated = api.with_todos(Owner::of(&caller), |todos| {
        todos.items.iter_mut().find(|t| t.id == id).map(|todo| {
            todo.done = change.done;
            todo.clone()
        })
    });
    match updated {
        Some(todo) => Json(todo).into_response(),
        None => not_found(),
    }
}

async fn delete_todo(
    State(api): State<Arc<Api>>,
    caller: ApiCaller,
    Path(id): Path<String>,
) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return not_found();
    };
    let removed = api.with_todos(Owner::of(&caller), |todos| {
        let before = todos.items.len();
        todos.items.retain(|t| t.id != id);
        todos.items.len() != before
    });
    if removed {
        StatusCode::NO_CONTENT.into_response()
    } else {
        not_found()
    }
}
