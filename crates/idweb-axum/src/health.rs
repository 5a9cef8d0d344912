//! The probes: `GET /healthz` (liveness) and `GET /readyz` (readiness), for
//! Kubernetes and load balancers. Neither needs a session; neither says
//! more than which check failed.

use std::time::Duration;

use axum::Extension;
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use idweb::Settings;

use crate::IdWeb;

/// How long `/readyz` waits for the store before it answers 503.
pub const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) fn routes<S>(settings: &Settings) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route(&settings.health_path, get(healthz))
        .route(&settings.ready_path, get(readyz))
}

fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// 200 while the process serves requests.
async fn healthz() -> Response {
    no_store((StatusCode::OK, "ok\n").into_response())
}

/// 200 when the provider's metadata is loaded, the store answers within
/// [`READY_CHECK_TIMEOUT`] and its subscriptions are live; 503 otherwise,
/// with the checks in a JSON body.
async fn readyz(Extension(idweb): Extension<IdWeb>) -> Response {
    let r = idweb.relying_party().readiness(READY_CHECK_TIMEOUT).await;
    let check = |ok: bool| if ok { "ok" } else { "fail" };
    let body = serde_json::json!({
        "status": if r.is_ready() { "ready" } else { "not_ready" },
        "checks": {
            "provider": check(r.provider),
            "store": check(r.store),
            "subscription": r.subscription.map_or("none", check),
        }
    });
    let status = if r.is_ready() {
        StatusCode::OK
    } else {
        tracing::warn!(
            store = r.store,
            subscription = ?r.subscription,
            "not ready"
        );
        StatusCode::SERVICE_UNAVAILABLE
    };
    no_store((status, axum::Json(body)).into_response())
}
