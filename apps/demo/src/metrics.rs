//! Prometheus metrics for the demo and `idweb-demo webapp`: with
//! `IDWEB_METRICS=true`, a Prometheus recorder is installed before the apps
//! start, and every server of the process answers `GET /metrics` with the
//! text exposition format. idweb itself only records through the `metrics`
//! facade; choosing and serving an exporter is the app's job, done here.

use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Histogram buckets (seconds) of idweb's `_seconds` metrics: store
/// operations take from a few microseconds (memory, an L1 hit) to tens of
/// milliseconds (a remote store under load).
pub const BUCKETS: &[f64] = &[
    0.000_01, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Whether `IDWEB_METRICS` asks for metrics (`true`/`1`/`yes`; unset or
/// `false`/`0`/`no`: no).
///
/// # Errors
/// Any other value.
pub fn enabled_in_env() -> Result<bool, BoxError> {
    match std::env::var("IDWEB_METRICS") {
        Err(_) => Ok(false),
        Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
            "" | "false" | "0" | "no" => Ok(false),
            "true" | "1" | "yes" => Ok(true),
            other => Err(format!("IDWEB_METRICS must be true or false, not `{other}`").into()),
        },
    }
}

/// Installs the Prometheus recorder when `IDWEB_METRICS` asks for it (call
/// it before building the apps: idweb registers its metrics then).
///
/// # Errors
/// An invalid `IDWEB_METRICS`, or another recorder installed already.
pub fn install_from_env() -> Result<bool, BoxError> {
    if !enabled_in_env()? || HANDLE.get().is_some() {
        return Ok(HANDLE.get().is_some());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)?
        .install_recorder()?;
    let upkeep = handle.clone();
    // Histograms are folded into their buckets by the upkeep.
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(5));
                upkeep.run_upkeep();
            }
        })?;
    let _ = HANDLE.set(handle);
    Ok(true)
}

/// `app` with `GET /metrics` when the recorder is installed; `app` as it is otherwise.
pub fn route(app: Router) -> Router {
    match HANDLE.get() {
        None => app,
        Some(handle) => {
            let handle = handle.clone();
            app.route(
                "/metrics",
                get(move || {
                    let handle = handle.clone();
                    async move {
                        handle.run_upkeep();
                        (
                            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                            handle.render(),
                        )
                            .into_response()
                    }
                }),
            )
        }
    }
}
