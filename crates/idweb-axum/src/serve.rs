//! [`serve`]: an HTTP/1.1 server for an axum router with the timeouts and the
//! connection limit a server facing the Internet needs (`axum::serve` has
//! none: a client that opens connections and sends nothing keeps them, and
//! their file descriptors, for as long as it likes).
//!
//! Every connection is in one of three states, each with its own limit:
//!
//! - **waiting for a request head**: a new connection, or a kept-alive one on
//!   which a request has started to arrive. The head (request line and
//!   headers) must be complete within the *header-read timeout*, counted
//!   from the connection's acceptance or the first byte of the request;
//! - **idle**: a kept-alive connection between two requests, closed after
//!   the *idle timeout*;
//! - **busy**: a request is being handled or its response sent. Its body
//!   must arrive within the *body timeout* (counted from the end of the
//!   head); otherwise the request's body fails, the app's answer is replaced
//!   by `408 Request Timeout`, and the connection is closed.
//!
//! At most *max connections* are open at a time. When a new connection
//! arrives at the limit, the connection that has been waiting (idle, or for a
//! request head) the longest is closed to make room; only when every
//! connection is busy does the new one wait for a slot. So idle or
//! slow-header connections, however many, cannot starve a valid request.

use std::convert::Infallible;
use std::future::{Future, IntoFuture};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

/// Default [`Serve::with_header_read_timeout`]: 10 seconds.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`Serve::with_idle_timeout`]: 60 seconds.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default [`Serve::with_body_timeout`]: 30 seconds.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`Serve::with_max_connections`]: 512, below the common limit of
/// 1024 open files per process, leaving room for the store and the provider.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// How long the accept loop waits for a slot before it looks again for a
/// connection to close (one that became idle meanwhile).
const RECLAIM_RETRY: Duration = Duration::from_millis(50);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves `router` on `listener` over HTTP/1.1 with the default timeouts and
/// connection limit (see the `DEFAULT_*` constants); the `with_*` methods
/// change them. Await the result to run the server.
///
/// ```no_run
/// # async fn run(idweb: idweb_axum::IdWeb) -> std::io::Result<()> {
/// use std::time::Duration;
/// let app = idweb.mount(axum::Router::new());
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:5000").await?;
/// idweb_axum::serve(listener, app)
///     .with_idle_timeout(Duration::from_secs(30))
///     .await
/// # }
/// ```
///
/// Handlers can extract `ConnectInfo<SocketAddr>` (the peer's address), as
/// with `axum::serve(listener, router.into_make_service_with_connect_info())`.
/// HTTP/2 is not served: put a reverse proxy in front for it.
pub fn serve(listener: TcpListener, router: Router) -> Serve {
    Serve {
        listener,
        router,
        limits: Limits::default(),
        shutdown: None,
    }
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    header_read: Duration,
    idle: Duration,
    body: Duration,
    max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read: DEFAULT_HEADER_READ_TIMEOUT,
            idle: DEFAULT_IDLE_TIMEOUT,
            body: DEFAULT_BODY_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// A server being configured; made by [`serve`], run by awaiting it.
#[must_use = "await it to run the server"]
pub struct Serve {
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl std::fmt::Debug for Serve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serve")
            .field("listener", &self.listener)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Serve {
    /// Time allowed for a request head (request line and headers), counted
    /// from the connection's acceptance, or on a kept-alive connection from
    /// the request's first byte. Default 10 seconds.
    pub fn with_header_read_timeout(mut self, timeout: Duration) -> Self {
        self.limits.header_read = timeout;
        self
    }

    /// Time a kept-alive connection may stay without a request. Default 60
    /// seconds.
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.limits.idle = timeout;
        self
    }

    /// Time allowed for a request body to arrive, counted from the end of
    /// the head; past it the request gets `408 Request Timeout` and the
    /// connection is closed. Default 30 seconds.
    pub fn with_body_timeout(mut self, timeout: Duration) -> Self {
        self.limits.body = timeout;
        self
    }

    /// Most connections open at a time (at least 1). At the limit, a new
    /// connection closes the one waiting the longest, or waits for a slot
    /// when all are busy. Default 512.
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.limits.max_connections = max.max(1);
        self
    }

    /// Stops accepting when `signal` completes, lets the requests in
    /// progress finish, closes idle connections, and returns when every
    /// connection is closed.
    pub fn with_graceful_shutdown<F>(mut self, signal: F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.shutdown = Some(Box::pin(signal));
        self
    }

    /// The address the server listens on.
    ///
    /// # Errors
    /// The listener's error.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    async fn run(self) -> io::Result<()> {
        let Serve {
            listener,
            router,
            limits,
            shutdown,
        } = self;
        let mut shutdown = shutdown.unwrap_or_else(|| Box::pin(std::future::pending()));
        let shared = Arc::new(Shared {
            limits,
            conns: Mutex::new(std::collections::HashMap::new()),
            next_id: AtomicU64::new(0),
        });
        let slots = Arc::new(Semaphore::new(limits.max_connections));
        let (close_tx, close_rx) = watch::channel(false);
        let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = &mut shutdown => break,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait and try again.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let permit = loop {
                if let Ok(p) = slots.clone().try_acquire_owned() {
                    break Some(p);
                }
                shared.reclaim_oldest_waiting();
                tokio::select! {
                    p = slots.clone().acquire_owned() => break p.ok(),
                    () = tokio::time::sleep(RECLAIM_RETRY) => {}
                    () = &mut shutdown => break None,
                }
            };
            let Some(permit) = permit else { break };
            let conn = shared.register();
            tokio::spawn(connection(
                stream,
                peer,
                router.clone(),
                shared.clone(),
                conn,
                close_rx.clone(),
                permit,
                done_tx.clone(),
            ));
        }
        drop(listener);
        let _ = close_tx.send(true);
        drop(done_tx);
        // Every connection task holds a sender: `None` once all have ended.
        let _ = done_rx.recv().await;
        Ok(())
    }
}

impl IntoFuture for Serve {
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

/// What the server knows of its connections.
#[derive(Debug)]
struct Shared {
    limits: Limits,
    conns: Mutex<std::collections::HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, std::collections::HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(&self) -> Arc<Conn> {
        let conn = Arc::new(Conn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            phase: Mutex::new(Phase::Head(Instant::now())),
            changed: Notify::new(),
            reclaim: AtomicBool::new(false),
        });
        self.lock().insert(conn.id, conn.clone());
        conn
    }

    /// Asks the connection that has waited the longest (idle, or for a
    /// request head) to close.
    fn reclaim_oldest_waiting(&self) {
        let victim = self
            .lock()
            .values()
            .filter_map(|c| c.waiting_since().map(|t| (t, c.clone())))
            .min_by_key(|(t, _)| *t)
            .map(|(_, c)| c);
        if let Some(c) = victim {
            c.reclaim.store(true, Ordering::Relaxed);
            c.changed.notify_one();
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a request head since this instant.
    Head(Instant),
    /// Kept alive without a request since this instant.
    Idle(Instant),
    /// This many requests in progress (response bodies included).
    Busy(usize),
}

/// One connection's state, shared by its I/O, its requests and its task.
#[derive(Debug)]
struct Conn {
    id: u64,
    phase: Mutex<Phase>,
    changed: Notify,
    reclaim: AtomicBool,
}

impl Conn {
    fn phase(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn waiting_since(&self) -> Option<Instant> {
        match *self.phase() {
            Phase::Head(t) | Phase::Idle(t) => Some(t),
            Phase::Busy(_) => None,
        }
    }

    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        match *self.phase() {
            Phase::Head(t) => Some(t + limits.header_read),
            Phase::Idle(t) => Some(t + limits.idle),
            Phase::Busy(_) => None,
        }
    }

    /// Bytes arrived: an idle connection starts receiving a request head.
    fn on_read(&self) {
        let mut phase = self.phase();
        if let Phase::Idle(_) = *phase {
            *phase = Phase::Head(Instant::now());
            drop(phase);
            self.changed.notify_one();
        }
    }

    fn begin_request(self: &Arc<Self>) -> BusyGuard {
        {
            let mut phase = self.phase();
            *phase = match *phase {
                Phase::Busy(n) => Phase::Busy(n.saturating_add(1)),
                _ => Phase::Busy(1),
            };
        }
        self.changed.notify_one();
        BusyGuard(self.clone())
    }
}

/// Held by a request until its response body is sent (or dropped).
#[derive(Debug)]
struct BusyGuard(Arc<Conn>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        {
            let mut phase = self.0.phase();
            *phase = match *phase {
                Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
                _ => Phase::Idle(Instant::now()),
            };
        }
        self.0.changed.notify_one();
    }
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    mut close: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
    _done: mpsc::Sender<()>,
) {
    let limits = shared.limits;
    let io = TokioIo::new(Tracked {
        inner: stream,
        conn: conn.clone(),
    });
    let service = {
        let conn = conn.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            handle(req, router.clone(), conn.clone(), limits.body, peer)
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // Head and idle deadlines are enforced below, per state.
    builder.timer(TokioTimer::new()).header_read_timeout(None);
    let served = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(served);
    let mut shutting_down = false;
    loop {
        let deadline = conn.deadline(&limits);
        tokio::select! {
            result = served.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            () = sleep_until(deadline) => {
                if conn.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                    tracing::debug!("closing a connection: no request within the timeout");
                    break;
                }
            }
            () = conn.changed.notified() => {
                if conn.reclaim.swap(false, Ordering::Relaxed) && conn.waiting_since().is_some() {
                    tracing::debug!("closing the longest-waiting connection to make room");
                    break;
                }
            }
            _ = close.changed(), if !shutting_down => {
                shutting_down = true;
                served.as_mut().graceful_shutdown();
            }
        }
    }
    shared.lock().remove(&conn.id);
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn handle(
    req: Request<Incoming>,
    router: Router,
    conn: Arc<Conn>,
    body_timeout: Duration,
    peer: SocketAddr,
) -> Result<Response<Body>, Infallible> {
    let guard = conn.begin_request();
    let timed_out = Arc::new(AtomicBool::new(false));
    let mut req = req.map(|body| {
        Body::new(DeadlineBody {
            inner: body,
            sleep: Box::pin(tokio::time::sleep(body_timeout)),
            timed_out: timed_out.clone(),
            done: false,
        })
    });
    req.extensions_mut().insert(ConnectInfo(peer));
    let resp = match router.oneshot(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    };
    let resp = if timed_out.load(Ordering::Relaxed) {
        tracing::debug!("request body not received within the body timeout");
        let mut r = Response::new(Body::from("request body timeout\n"));
        *r.status_mut() = StatusCode::REQUEST_TIMEOUT;
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        r
    } else {
        resp
    };
    Ok(resp.map(|inner| {
        Body::new(Guarded {
            inner,
            _guard: guard,
        })
    }))
}

/// The request body the app reads: fails once the body timeout has passed.
struct DeadlineBody {
    inner: Incoming,
    sleep: Pin<Box<Sleep>>,
    timed_out: Arc<AtomicBool>,
    done: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within the body timeout")]
struct BodyTimeout;

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => Poll::Ready(Some(frame.map_err(Into::into))),
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.timed_out.store(true, Ordering::Relaxed);
                    this.done = true;
                    Poll::Ready(Some(Err(Box::new(BodyTimeout))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The response body, holding its request's [`BusyGuard`] until it is sent.
struct Guarded {
    inner: Body,
    _guard: BusyGuard,
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The TCP stream, telling its connection when bytes arrive.
struct Tracked {
    inner: TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.on_read();
        }
        result
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
