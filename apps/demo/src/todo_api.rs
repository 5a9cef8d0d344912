//! The sample downstream "todo" API.
//!
//! For now a stub that serves a fixed list without checking callers; token
//! validation (JWT access tokens from the dev IdP) arrives with the token cache.

use axum::Json;
use axum::Router;
use axum::routing::get;

/// The todo API's router.
pub fn router() -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/api/todos",
            get(|| async {
                Json(serde_json::json!([
                    { "id": 1, "title": "Try idweb", "done": false }
                ]))
            }),
        )
}
