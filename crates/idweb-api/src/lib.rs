//! # idweb-api
//!
//! Protect an axum web API with the JWT access tokens an OpenID provider
//! issues for it — Microsoft.Identity.Web's `AddMicrosoftIdentityWebApi`
//! for Rust. Callers send `Authorization: Bearer <token>`; the API checks
//! the token, then the scopes or app roles each route needs, and answers
//! failures as RFC 6750 says.
//!
//! ```no_run
//! use axum::{Router, handler::Handler, routing::get};
//! use idweb_api::{ApiCaller, ApiRejection, JwtBearer, RequireScope};
//!
//! async fn list_todos(caller: ApiCaller) -> String {
//!     format!("the todos of {}", caller.sub())
//! }
//!
//! async fn purge(caller: ApiCaller) -> Result<&'static str, ApiRejection> {
//!     caller.require_role("Todo.Admin")?; // 403 insufficient_scope otherwise
//!     Ok("purged")
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // Discovery + JWKS of the issuer; or JwtBearerBuilder::from_env()
//!     // (IDWEB_API_AUTHORITY, IDWEB_API_AUDIENCE, ...).
//!     let jwt = JwtBearer::builder("https://login.microsoftonline.com/TENANT_ID/v2.0")
//!         .with_audience("api://todo")
//!         .with_audience("CLIENT_ID_OF_THE_API") // Entra v2 tokens name the client id
//!         .build()
//!         .await?;
//!     let app = Router::new()
//!         .route(
//!             "/api/todos",
//!             get(list_todos.layer(RequireScope::any(["api://todo/todos.read"]))),
//!         )
//!         .route("/api/purge", axum::routing::post(purge))
//!         .route("/healthz", get(|| async { "ok" })) // no caller asked: open
//!         .layer(jwt.layer());
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:5200").await?;
//!     axum::serve(listener, app).await?;
//!     Ok(())
//! }
//! ```
//!
//! ## Concepts
//! - [`JwtBearer`]: the validator, built once ([`JwtBearer::builder`] or
//!   [`JwtBearerBuilder::from_env`]). It verifies signatures with idweb's
//!   [`idweb::Provider`] — the same discovery and key cache as sign-in,
//!   refetching the JWKS (rate-limited) when a token names an unknown
//!   `kid` — and checks `typ`, `iss`, `aud`, `exp`, `nbf` and `sub` with an
//!   injected [`idweb::Clock`].
//! - [`ApiCaller`]: the extractor for the authenticated caller: `sub`,
//!   claims, scopes, roles, and `require_*` methods that return the right
//!   [`ApiRejection`].
//! - [`RequireScope`] / [`RequireRole`]: the same requirements as layers,
//!   checked before the handler and the body.
//! - [`ApiRejection`]: 401 / 403 / 400 / 503 with the RFC 6750
//!   `WWW-Authenticate` challenge; the token is never echoed or logged.
//! - [`ClaimsChallenge`]: 401 `insufficient_claims` with a `claims`
//!   challenge (Continuous Access Evaluation, authentication contexts),
//!   which idweb's client side turns into a new sign-in with those claims.
//!
//! ## Not done here
//! Opaque tokens (introspection), encrypted tokens (JWE), DPoP / mTLS-bound
//! tokens, and multi-tenant issuers (`{tenantid}` templates) are not
//! supported; see `docs/decisions/0010-idweb-api.md`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod caller;
mod challenge;
mod config;
mod layer;
mod rejection;
mod validate;

pub use caller::ApiCaller;
pub use challenge::ClaimsChallenge;
pub use config::{BuildError, JwtBearerBuilder, TypPolicy};
pub use layer::{RequireRole, RequireScope, RequireService};
pub use rejection::{ApiRejection, RejectionReason};
pub use validate::{InvalidToken, JwtBearer, ValidationError};

/// Re-exported for [`JwtBearerBuilder::with_algorithms`].
pub use jsonwebtoken::Algorithm;
