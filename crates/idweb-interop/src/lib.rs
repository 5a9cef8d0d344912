//! Interoperability tests of idweb against independent OpenID Providers.
//!
//! The tests are in `tests/`: `oidc_provider.rs` runs npm `oidc-provider`
//! (9.x, and 6.31.1 for front-channel logout) from `interop/oidc-provider`
//! as a child process. They need Node.js 20 or later and the pinned npm
//! packages: run `scripts/setup-test-deps` first.
#![forbid(unsafe_code)]
