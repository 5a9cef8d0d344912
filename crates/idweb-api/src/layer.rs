//! Per-route requirements as tower layers.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};

use crate::caller::{ApiCaller, caller_of};
use crate::rejection::ApiRejection;

#[derive(Debug, Clone)]
enum Requirement {
    AnyScope(Arc<[String]>),
    AnyRole(Arc<[String]>),
}

impl Requirement {
    fn check(&self, caller: &ApiCaller) -> Result<(), ApiRejection> {
        match self {
            Requirement::AnyScope(scopes) => {
                let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
                caller.require_any_scope(&scopes)
            }
            Requirement::AnyRole(roles) => {
                let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
                caller.require_any_role(&roles)
            }
        }
    }
}

/// A layer that lets a request through only with a valid bearer token that
/// grants at least one of the given scopes — Microsoft.Identity.Web's
/// `[RequiredScope]`. Otherwise it answers the [`ApiRejection`] (401, or
/// 403 `insufficient_scope` naming the scopes) before the handler runs and
/// before the body is read. The validated [`ApiCaller`] is handed to the
/// handler's extractor, so the token is validated once.
///
/// Needs [`JwtBearer::layer`](crate::JwtBearer::layer) outside it.
///
/// ```
/// use axum::{Router, handler::Handler, routing::get};
/// use idweb_api::{ApiCaller, JwtBearer, RequireRole, RequireScope};
///
/// async fn list(caller: ApiCaller) -> String { caller.sub().to_string() }
/// async fn create(caller: ApiCaller) -> String { caller.sub().to_string() }
/// async fn stats() -> &'static str { "{}" }
///
/// fn app(jwt: &JwtBearer) -> Router {
///     let read = RequireScope::any(["api://todo/todos.read"]);
///     let write = RequireScope::any(["api://todo/todos.write"]);
///     Router::new()
///         // A scope per method: layer the handlers.
///         .route("/todos", get(list.layer(read)).post(create.layer(write)))
///         // One requirement for every method of a path: `route_layer`.
///         .route("/stats", get(stats).route_layer(RequireRole::any(["Todo.Admin"])))
///         .layer(jwt.layer())
/// }
/// ```
#[derive(Debug, Clone)]
pub struct RequireScope {
    requirement: Requirement,
}

impl RequireScope {
    /// Requires at least one of `scopes` (see [`ApiCaller::has_scope`] for
    /// how a granted scope matches).
    pub fn any<I, T>(scopes: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        Self {
            requirement: Requirement::AnyScope(scopes.into_iter().map(Into::into).collect()),
        }
    }
}

/// A layer that lets a request through only with a valid bearer token that
/// grants at least one of the given app roles (`roles` claim) — the
/// application permissions of app-only tokens, or roles assigned to users.
/// Otherwise it answers 401, or 403 `insufficient_scope`. Like
/// [`RequireScope`] otherwise.
#[derive(Debug, Clone)]
pub struct RequireRole {
    requirement: Requirement,
}

impl RequireRole {
    /// Requires at least one of `roles`.
    pub fn any<I, T>(roles: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        Self {
            requirement: Requirement::AnyRole(roles.into_iter().map(Into::into).collect()),
        }
    }
}

impl<S> Layer<S> for RequireScope {
    type Service = RequireService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireService {
            inner,
            requirement: self.requirement.clone(),
        }
    }
}

impl<S> Layer<S> for RequireRole {
    type Service = RequireService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireService {
            inner,
            requirement: self.requirement.clone(),
        }
    }
}

/// The service of [`RequireScope`] and [`RequireRole`].
#[derive(Debug, Clone)]
pub struct RequireService<S> {
    inner: S,
    requirement: Requirement,
}

impl<S> Service<Request> for RequireService<S>
where
    S: Service<Request, Error = Infallible> + Clone + Send + 'static,
    S::Response: IntoResponse,
    S::Future: Send,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // The clone may not be ready: keep the ready one for this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let requirement = self.requirement.clone();
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let checked = match caller_of(&mut parts).await {
                Ok(caller) => requirement.check(&caller),
                Err(rejection) => Err(rejection),
            };
            if let Err(rejection) = checked {
                return Ok(rejection.into_response());
            }
            let response = inner.call(Request::from_parts(parts, body)).await?;
            Ok(response.into_response())
        })
    }
}
