//! Response headers every page of a signed-in app needs: no framing by other
//! sites (clickjacking), and no caching of what a signed-in user was shown.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use axum::http::{HeaderValue, Request, Response, header};

const FRAME_ANCESTORS_NONE: HeaderValue = HeaderValue::from_static("frame-ancestors 'none'");
const DENY: HeaderValue = HeaderValue::from_static("DENY");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

/// Forbids other sites (and other pages of this site) to frame the
/// responses: adds `Content-Security-Policy: frame-ancestors 'none'` and
/// `X-Frame-Options: DENY`.
///
/// A response that names its own `frame-ancestors` in a
/// `Content-Security-Policy` keeps its framing rules untouched (idweb's
/// front-channel logout page, which only the provider may frame, does). A
/// response with a policy that does not mention `frame-ancestors` gets a
/// second `Content-Security-Policy` header; browsers enforce both.
///
/// idweb's own routes have it; put it on the app's routes too:
///
/// ```
/// # fn app(idweb: &idweb_axum::IdWeb) -> axum::Router {
/// use axum::{Router, routing::get};
/// idweb
///     .mount(Router::new().route("/", get(|| async { "home" })))
///     .layer(idweb_axum::DenyFramingLayer)
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct DenyFramingLayer;

impl<S> tower::Layer<S> for DenyFramingLayer {
    type Service = ResponseHeaders<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ResponseHeaders {
            inner,
            deny_framing: true,
            no_store_when_authenticated: false,
        }
    }
}

/// Sets `Cache-Control: no-store` on the responses to requests that
/// extracted an [`AuthenticatedUser`](crate::AuthenticatedUser) (or a
/// present `Option<AuthenticatedUser>`). [`IdWeb::mount`](crate::IdWeb::mount)
/// installs it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NoStoreWhenAuthenticatedLayer;

impl<S> tower::Layer<S> for NoStoreWhenAuthenticatedLayer {
    type Service = ResponseHeaders<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ResponseHeaders {
            inner,
            deny_framing: false,
            no_store_when_authenticated: true,
        }
    }
}

/// Set by the extractor when the request had a signed-in user.
#[derive(Debug, Clone, Default)]
pub(crate) struct Authenticated(Arc<AtomicBool>);

impl Authenticated {
    pub(crate) fn mark(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn is_marked(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The service of [`DenyFramingLayer`] (and of the layer that marks
/// authenticated responses `no-store`).
#[derive(Debug, Clone)]
pub struct ResponseHeaders<S> {
    inner: S,
    deny_framing: bool,
    no_store_when_authenticated: bool,
}

impl<S, B, R> tower::Service<Request<B>> for ResponseHeaders<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = ResponseHeadersFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let marker = self.no_store_when_authenticated.then(|| {
            let m = Authenticated::default();
            req.extensions_mut().insert(m.clone());
            m
        });
        ResponseHeadersFuture {
            inner: self.inner.call(req),
            deny_framing: self.deny_framing,
            marker,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`ResponseHeaders`].
    #[derive(Debug)]
    pub struct ResponseHeadersFuture<F> {
        #[pin]
        inner: F,
        deny_framing: bool,
        marker: Option<Authenticated>,
    }
}

impl<F, R, E> Future for ResponseHeadersFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = Result<Response<R>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut resp = ready!(this.inner.poll(cx))?;
        if *this.deny_framing {
            deny_framing(resp.headers_mut());
        }
        if this.marker.as_ref().is_some_and(Authenticated::is_marked) {
            resp.headers_mut().insert(header::CACHE_CONTROL, NO_STORE);
        }
        Poll::Ready(Ok(resp))
    }
}

fn deny_framing(headers: &mut axum::http::HeaderMap) {
    let own_rules = headers
        .get_all(header::CONTENT_SECURITY_POLICY)
        .iter()
        .any(|v| {
            v.to_str()
                .is_ok_and(|s| s.to_ascii_lowercase().contains("frame-ancestors"))
        });
    if own_rules {
        return;
    }
    headers.append(header::CONTENT_SECURITY_POLICY, FRAME_ANCESTORS_NONE);
    if !headers.contains_key(header::X_FRAME_OPTIONS) {
        headers.insert(header::X_FRAME_OPTIONS, DENY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_headers_leave_a_response_with_its_own_frame_ancestors_alone() {
        let mut own = axum::http::HeaderMap::new();
        own.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors https://idp.example"),
        );
        deny_framing(&mut own);
        assert_eq!(
            own.get_all(header::CONTENT_SECURITY_POLICY).iter().count(),
            1
        );
        assert!(!own.contains_key(header::X_FRAME_OPTIONS));

        let mut other = axum::http::HeaderMap::new();
        other.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'self'"),
        );
        deny_framing(&mut other);
        let csp: Vec<_> = other
            .get_all(header::CONTENT_SECURITY_POLICY)
            .iter()
            .collect();
        assert_eq!(csp, ["default-src 'self'", "frame-ancestors 'none'"]);
        assert_eq!(other[header::X_FRAME_OPTIONS], "DENY");
    }
}
