//! An HTTP/1.1 load generator for the HTTP benchmark: a fixed number of
//! keep-alive connections over loopback, each sending one request at a time
//! and waiting for the whole answer before the next (closed loop, like
//! `wrk`). It runs on whatever tokio runtime calls [`run`].
//!
//! A run has a warm-up (not counted) and a measured window; it is bounded
//! in time ([`LoadOptions::warmup`] + [`LoadOptions::window`]) and in count
//! ([`LoadOptions::max_requests`], and for [`Requests::EachOnce`] the
//! number of bodies). Only the answers completed inside the window count,
//! and only 2xx answers count as served; every other status and every
//! transport error is reported.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::cpu::{Cpu, Snapshot};
use idweb::BoxError;

/// How often the coordinator looks at the counters while waiting.
const POLL: Duration = Duration::from_millis(2);

/// One request, as sent again and again.
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    /// The method.
    pub method: Method,
    /// Path and query.
    pub path: String,
    /// Headers besides `Host` (and `Content-Length`, set from the body).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body (empty for `GET`).
    pub body: Bytes,
}

impl RequestTemplate {
    /// `GET path` with `headers`.
    pub fn get(path: &str, headers: Vec<(HeaderName, HeaderValue)>) -> Self {
        Self {
            method: Method::GET,
            path: path.to_string(),
            headers,
            body: Bytes::new(),
        }
    }

    /// `POST path` with a form body (`application/x-www-form-urlencoded`)
    /// given per request by [`Requests::EachOnce`].
    pub fn post_form(path: &str) -> Self {
        Self {
            method: Method::POST,
            path: path.to_string(),
            headers: vec![(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            )],
            body: Bytes::new(),
        }
    }

    fn build(&self, host: &HeaderValue, body: Bytes) -> Result<Request<Full<Bytes>>, BoxError> {
        let mut b = Request::builder()
            .method(self.method.clone())
            .uri(self.path.as_str())
            .header(HOST, host.clone());
        for (name, value) in &self.headers {
            b = b.header(name, value);
        }
        Ok(b.body(Full::new(body))?)
    }
}

/// What the connections send.
#[derive(Debug, Clone)]
pub enum Requests {
    /// The template, with its body, every time.
    Repeat(RequestTemplate),
    /// The template once with each body, in order, across all connections;
    /// the run ends when every body has been sent.
    EachOnce {
        /// Method, path and headers.
        template: RequestTemplate,
        /// The bodies.
        bodies: Arc<Vec<Bytes>>,
    },
}

impl Requests {
    fn limit(&self) -> u64 {
        match self {
            Requests::Repeat(_) => u64::MAX,
            Requests::EachOnce { bodies, .. } => bodies.len() as u64,
        }
    }

    fn build(&self, n: u64, host: &HeaderValue) -> Result<Request<Full<Bytes>>, BoxError> {
        match self {
            Requests::Repeat(t) => t.build(host, t.body.clone()),
            Requests::EachOnce { template, bodies } => {
                let body = usize::try_from(n)
                    .ok()
                    .and_then(|i| bodies.get(i))
                    .cloned()
                    .ok_or("no body left")?;
                template.build(host, body)
            }
        }
    }
}

/// How to run the load.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// Concurrent connections, each with one request in flight.
    pub connections: usize,
    /// Time before the window opens; answers meanwhile are not counted.
    /// For [`Requests::EachOnce`] the window also opens once a quarter of
    /// the bodies has been sent, so that the window gets most of them.
    pub warmup: Duration,
    /// Length of the measured window; it closes earlier when the requests
    /// run out.
    pub window: Duration,
    /// Most requests sent in the whole run, warm-up included.
    pub max_requests: u64,
    /// Which threads count as the server's in [`LoadReport::server_cpu`]:
    /// called with each thread's name and whether it is the main thread.
    pub server_threads: fn(&str, bool) -> bool,
    /// Which threads count as the load generator's in
    /// [`LoadReport::load_cpu`].
    pub load_threads: fn(&str, bool) -> bool,
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Length of the measured window.
    pub window: Duration,
    /// 2xx answers completed in the window.
    pub ok: u64,
    /// Other answers completed in the window.
    pub failed: u64,
    /// Requests sent in the whole run.
    pub sent: u64,
    /// 2xx answers in the whole run.
    pub ok_total: u64,
    /// Non-2xx answers in the whole run, by status.
    pub failed_by_status: BTreeMap<u16, u64>,
    /// Connections that ended with a transport error (each ends at its
    /// first error), and the first such error.
    pub transport_errors: u64,
    /// The first transport error, if any.
    pub first_error: Option<String>,
    /// Whether the window closed because the requests ran out.
    pub exhausted: bool,
    /// CPU of the server's threads in the window (see
    /// [`LoadOptions::server_threads`]); zero when not measurable.
    pub server_cpu: Cpu,
    /// CPU of the load generator's threads in the window.
    pub load_cpu: Cpu,
    /// Whether the CPU figures could be read.
    pub cpu_available: bool,
    /// Share of the machine's CPU time taken by the hypervisor in the
    /// window (virtual machines), when known.
    pub steal: Option<f64>,
}

impl LoadReport {
    /// 2xx answers per second in the window.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.window.as_secs_f64().max(1e-9)
    }

    /// Microseconds of server CPU per 2xx answer in the window.
    pub fn server_us_per_request(&self) -> Option<f64> {
        (self.cpu_available && self.ok > 0)
            .then(|| self.server_cpu.run_ns as f64 / 1e3 / self.ok as f64)
    }

    /// Microseconds of load-generator CPU per answer in the window.
    pub fn load_us_per_request(&self) -> Option<f64> {
        (self.cpu_available && self.ok > 0)
            .then(|| self.load_cpu.run_ns as f64 / 1e3 / self.ok as f64)
    }

    /// Whether every request of the run was answered with a 2xx status.
    pub fn all_ok(&self) -> bool {
        self.transport_errors == 0 && self.failed_by_status.is_empty() && self.ok_total == self.sent
    }
}

#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    issued: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    active: AtomicUsize,
    transport_errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    failed_by_status: Mutex<BTreeMap<u16, u64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `requests` against the server at `addr` (`Host: host`) with
/// `options`, and reports what the window saw. Must be called within a
/// tokio runtime (the connections are tasks on it).
///
/// # Errors
/// Only for an invalid `host`; failed connections and non-2xx answers are
/// reported in the [`LoadReport`].
pub async fn run(
    addr: SocketAddr,
    host: &str,
    requests: Requests,
    options: LoadOptions,
) -> Result<LoadReport, BoxError> {
    let host = HeaderValue::from_str(host)?;
    let limit = requests.limit().min(options.max_requests);
    let shared = Arc::new(Shared::default());
    let requests = Arc::new(requests);
    let mut tasks = tokio::task::JoinSet::new();
    shared
        .active
        .store(options.connections.max(1), Ordering::SeqCst);
    for _ in 0..options.connections.max(1) {
        let (shared, requests, host) = (shared.clone(), requests.clone(), host.clone());
        tasks.spawn(async move {
            if let Err(e) = connection(addr, &host, &requests, &shared, limit).await {
                shared.transport_errors.fetch_add(1, Ordering::SeqCst);
                lock(&shared.first_error).get_or_insert_with(|| e.to_string());
            }
            shared.active.fetch_sub(1, Ordering::SeqCst);
        });
    }
    let done = || shared.active.load(Ordering::SeqCst) == 0;

    // Warm-up.
    let start = Instant::now();
    let quarter = if limit == u64::MAX {
        u64::MAX
    } else {
        limit / 4
    };
    while start.elapsed() < options.warmup && shared.issued.load(Ordering::SeqCst) < quarter {
        if done() {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let cpu0 = Snapshot::now();
    let steal0 = crate::cpu::machine_steal();
    let t0 = Instant::now();
    let (ok0, failed0) = (
        shared.ok.load(Ordering::SeqCst),
        shared.failed.load(Ordering::SeqCst),
    );

    // The window.
    while t0.elapsed() < options.window && !done() {
        tokio::time::sleep(POLL).await;
    }
    let exhausted = done();
    let (ok1, failed1) = (
        shared.ok.load(Ordering::SeqCst),
        shared.failed.load(Ordering::SeqCst),
    );
    let window = t0.elapsed();
    let cpu1 = Snapshot::now();
    let steal1 = crate::cpu::machine_steal();

    shared.stop.store(true, Ordering::SeqCst);
    while tasks.join_next().await.is_some() {}

    let cpu_available = cpu0.available() && cpu1.available();
    Ok(LoadReport {
        window,
        ok: ok1 - ok0,
        failed: failed1 - failed0,
        sent: shared.issued.load(Ordering::SeqCst).min(limit),
        ok_total: shared.ok.load(Ordering::SeqCst),
        failed_by_status: lock(&shared.failed_by_status).clone(),
        transport_errors: shared.transport_errors.load(Ordering::SeqCst),
        first_error: lock(&shared.first_error).clone(),
        exhausted,
        server_cpu: cpu1.since(&cpu0, options.server_threads),
        load_cpu: cpu1.since(&cpu0, options.load_threads),
        cpu_available,
        steal: crate::cpu::steal_share(steal0, steal1),
    })
}

/// One connection: requests one after the other until stopped or the
/// requests run out.
async fn connection(
    addr: SocketAddr,
    host: &HeaderValue,
    requests: &Requests,
    shared: &Shared,
    limit: u64,
) -> Result<(), BoxError> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let conn = tokio::spawn(conn);
    let result = async {
        loop {
            if shared.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let n = shared.issued.fetch_add(1, Ordering::SeqCst);
            if n >= limit {
                return Ok(());
            }
            let request = requests.build(n, host)?;
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let status = response.status();
            response.into_body().collect().await?;
            if status.is_success() {
                shared.ok.fetch_add(1, Ordering::SeqCst);
            } else {
                shared.failed.fetch_add(1, Ordering::SeqCst);
                *lock(&shared.failed_by_status)
                    .entry(status.as_u16())
                    .or_default() += 1;
            }
        }
    }
    .await;
    drop(sender);
    let _ = conn.await;
    result
}
