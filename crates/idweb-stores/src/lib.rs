//! # idweb-stores
//!
//! Opens the [`Store`] that the settings name: `IDWEB_STORE` (or `store` in
//! the file) and its options (`IDWEB_STORE_*`), as an [`idweb::StoreUrl`].
//! Each store crate parses its own URL and options; this crate only picks
//! the crate by the URL's scheme.
//!
//! ```no_run
//! use std::sync::Arc;
//! use idweb::{RelyingParty, Settings, SystemClock};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let settings = Settings::load(None)?;
//! let store = idweb_stores::open(&settings.store, Arc::new(SystemClock)).await?;
//! let rp = RelyingParty::builder(settings).with_store(store).build().await?;
//! # let _ = rp;
//! # Ok(())
//! # }
//! ```
//!
//! (`idweb_axum::IdWeb::from_env()` does all of this in one call.)
//!
//! | `IDWEB_STORE` | store | options | feature |
//! |---|---|---|---|
//! | `memory` (default) | [`idweb::MemoryStore`]: one process, lost on restart | none | always |
//! | `sqlite://PATH`, `sqlite:PATH` | `idweb_store_sqlite::SqliteStore` (file created if missing) | none | `sqlite` |
//! | `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`, `postgresql://...` | `idweb_store_postgres::PostgresStore` (creates or migrates its schema in that database), behind its `CachingStore` unless `l1` is off | `IDWEB_STORE_SCHEMA` (default `idweb`), `IDWEB_STORE_POOL_SIZE` (default 16), `IDWEB_STORE_L1` (default `true`) | `postgres` |
//! | `redis://[USER:PASSWORD@]HOST[:PORT][/DB]`, `rediss://...` (TLS), `redis+unix:///PATH`, `redis+cluster://H:P,H:P`, `rediss+cluster://...` | `idweb_store_redis::RedisStore`, behind its `CachingStore` unless `l1` is off | `IDWEB_STORE_PREFIX` (default `idweb`), `IDWEB_STORE_L1` (default `true`) | `redis` |
//!
//! All three features are on by default. An app that needs one backend only
//! depends on this crate (or on `idweb-axum`) with `default-features = false`
//! and `features = ["sqlite"]` (or `["redis"]`, `["postgres"]`); a URL whose backend was
//! left out then fails with [`OpenStoreError::FeatureDisabled`], never with
//! another store in its place.
//!
//! [`open_sign_out_bus`] opens the store's [`idweb::SignOutBus`] (Redis
//! only), over which the instances of one app hear each other's sign-outs.
//!
//! No error, and no `Debug` output, of this crate shows the URL's password:
//! errors name the scheme only.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::sync::Arc;

use idweb::{BoxError, Clock, MemoryStore, SignOutBus, Store, StoreError, StoreUrl};

/// Why the store the settings name could not be opened. Each message names
/// `IDWEB_STORE` and the store's scheme, never its URL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenStoreError {
    /// No store is known by this scheme.
    #[error(
        "IDWEB_STORE names a `{scheme}` store, which idweb does not know; supported: memory, \
         sqlite://PATH (feature `sqlite`), redis://HOST:PORT, rediss://, redis+unix://, \
         redis+cluster://, rediss+cluster:// (feature `redis`), postgres://USER@HOST:PORT/DATABASE, \
         postgresql:// (feature `postgres`)"
    )]
    UnsupportedScheme {
        /// The URL's scheme.
        scheme: String,
    },
    /// The store of this scheme is behind a cargo feature this build left out.
    #[error(
        "IDWEB_STORE names a `{scheme}` store, but this build leaves out the `{feature}` feature \
         of idweb-stores (and of idweb-axum) that opens it; enable that feature"
    )]
    FeatureDisabled {
        /// The URL's scheme.
        scheme: String,
        /// The feature to enable.
        feature: &'static str,
    },
    /// The store refuses its URL or one of its options (`IDWEB_STORE_*`);
    /// the source says which and why.
    #[error("IDWEB_STORE: the `{scheme}` store refuses its URL or options")]
    Invalid {
        /// The URL's scheme.
        scheme: String,
        /// The store crate's error.
        #[source]
        source: BoxError,
    },
    /// The store could not be opened (unreachable, no permission, a newer
    /// schema, ...).
    #[error("cannot open the `{scheme}` store that IDWEB_STORE names")]
    Open {
        /// The URL's scheme.
        scheme: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },
}

/// The stores this crate can name, whether or not their feature is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Memory,
    Sqlite,
    Redis,
    Postgres,
}

impl Backend {
    fn of(scheme: &str) -> Option<Self> {
        match scheme {
            "memory" => Some(Self::Memory),
            "sqlite" => Some(Self::Sqlite),
            "redis" | "rediss" | "redis+unix" | "redis+cluster" | "rediss+cluster" => {
                Some(Self::Redis)
            }
            "postgres" | "postgresql" => Some(Self::Postgres),
            _ => None,
        }
    }
}

/// Opens the store `url` names, with `clock` deciding expiry: a
/// [`MemoryStore`] for `memory`, otherwise the store of the URL's scheme
/// (connecting to it, creating a SQLite file if missing). See the
/// [crate documentation](crate) for the URLs and options.
///
/// # Errors
/// [`OpenStoreError::UnsupportedScheme`] for a scheme no store has,
/// [`OpenStoreError::FeatureDisabled`] for a store this build leaves out,
/// [`OpenStoreError::Invalid`] for a URL or an option the store refuses
/// (checked before connecting), [`OpenStoreError::Open`] when the store
/// cannot be reached or opened.
pub async fn open(url: &StoreUrl, clock: Arc<dyn Clock>) -> Result<Arc<dyn Store>, OpenStoreError> {
    match Backend::of(url.scheme()) {
        None => Err(OpenStoreError::UnsupportedScheme {
            scheme: url.scheme().to_string(),
        }),
        Some(Backend::Memory) => match url.options().next() {
            None => Ok(Arc::new(MemoryStore::with_clock(clock))),
            Some((name, _)) => Err(invalid(
                url,
                MemoryTakesNoOption {
                    key: StoreUrl::option_key(name),
                },
            )),
        },
        Some(Backend::Sqlite) => open_sqlite(url, clock).await,
        Some(Backend::Redis) => open_redis(url, clock).await,
        Some(Backend::Postgres) => open_postgres(url, clock).await,
    }
}

/// Opens the sign-out event bus of the store `url` names, over which the
/// instances of an app hear each other's sign-outs
/// ([`idweb::SignOutBus`]): for Redis, the `PREFIX:signout` pub/sub channel
/// (subscribed before this returns); `None` for `memory` and SQLite, whose
/// sign-outs happen in the process that listens. For PostgreSQL, notifications
/// on `SCHEMA:signout` (listening before this returns).
///
/// # Errors
/// As for [`open`].
pub async fn open_sign_out_bus(
    url: &StoreUrl,
    clock: Arc<dyn Clock>,
) -> Result<Option<Arc<dyn SignOutBus>>, OpenStoreError> {
    match Backend::of(url.scheme()) {
        None => Err(OpenStoreError::UnsupportedScheme {
            scheme: url.scheme().to_string(),
        }),
        Some(Backend::Memory | Backend::Sqlite) => Ok(None),
        Some(Backend::Redis) => open_redis_bus(url, clock).await.map(Some),
        Some(Backend::Postgres) => open_postgres_bus(url, clock).await.map(Some),
    }
}

#[cfg(feature = "redis")]
async fn open_redis_bus(
    url: &StoreUrl,
    clock: Arc<dyn Clock>,
) -> Result<Arc<dyn SignOutBus>, OpenStoreError> {
    let config =
        idweb_store_redis::RedisConfig::from_store_url(url).map_err(|e| invalid(url, e))?;
    config
        .open_sign_out_bus(clock)
        .await
        .map_err(|e| failed(url, e))
}

#[cfg(not(feature = "redis"))]
async fn open_redis_bus(
    url: &StoreUrl,
    _clock: Arc<dyn Clock>,
) -> Result<Arc<dyn SignOutBus>, OpenStoreError> {
    Err(OpenStoreError::FeatureDisabled {
        scheme: url.scheme().to_string(),
        feature: "redis",
    })
}

/// An option given to the `memory` store.
#[derive(Debug, thiserror::Error)]
#[error("the memory store takes no option, but {key} is set")]
struct MemoryTakesNoOption {
    key: String,
}

fn invalid(url: &StoreUrl, e: impl Into<BoxError>) -> OpenStoreError {
    OpenStoreError::Invalid {
        scheme: url.scheme().to_string(),
        source: e.into(),
    }
}

#[cfg(any(feature = "sqlite", feature = "redis", feature = "postgres"))]
fn failed(url: &StoreUrl, e: StoreError) -> OpenStoreError {
    OpenStoreError::Open {
        scheme: url.scheme().to_string(),
        source: e,
    }
}

#[cfg(feature = "sqlite")]
async fn open_sqlite(
    url: &StoreUrl,
    clock: Arc<dyn Clock>,
) -> Result<Arc<dyn Store>, OpenStoreError> {
    let config =
        idweb_store_sqlite::SqliteConfig::from_store_url(url).map_err(|e| invalid(url, e))?;
    let store = config.open(clock).await.map_err(|e| failed(url, e))?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "sqlite"))]
async fn open_sqlite(
    url: &StoreUrl,
    _clock: Arc<dyn Clock>,
) -> Result<Arc<dyn Store>, OpenStoreError> {
    Err(OpenStoreError::FeatureDisabled {
        scheme: url.scheme().to_string(),
        feature: "sqlite",
    })
}

#[cfg(feature = "redis")]
async fn open_redis(
    url: &StoreUrl,
    clock: Arc<dyn Clock>,
) -> Result<Arc<dyn Store>, OpenStoreError> {
    let config =
        idweb_store_redis::RedisConfig::from_store_url(url).map_err(|e| invalid(url, e))?;
    config.open(clock).await.map_err(|e| failed(url, e))
}

#[cfg(not(feature = "redis"))]
async fn open_redis(
    url: &StoreUrl,
    _clock: Arc<dyn Clock>,
) -> Result<Arc<dyn Store>, OpenStoreError> {
    Err(OpenStoreError::FeatureDisabled {
        scheme: url.scheme().to_string(),
        feature: "redis",
    })
}

#[cfg(feature = "postgres")]
async fn open_postgres(
    url: &StoreUrl,
    clock: Arc<dyn Clock>,
) -> Result<Arc<dyn Store>, OpenStoreError> {
    let config =
        idweb_store_postgres::PostgresConfig::from_store_url(url).map_err(|e| invalid(url, e))?;
    config.open_shared(clock).await.map_err(|e| failed(url, e))
}

#[cfg(feature = "postgres")]
async fn open_postgres_bus(
    url: &StoreUrl,
    clock: Arc<dyn Clock>,
) -> Result<Arc<dyn SignOutBus>, OpenStoreError> {
    let config =
        idweb_store_postgres::PostgresConfig::from_store_url(url).map_err(|e| invalid(url, e))?;
    config
        .open_sign_out_bus(clock)
        .await
        .map_err(|e| failed(url, e))
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres_bus(
    url: &StoreUrl,
    _clock: Arc<dyn Clock>,
) -> Result<Arc<dyn SignOutBus>, OpenStoreError> {
    Err(OpenStoreError::FeatureDisabled {
        scheme: url.scheme().to_string(),
        feature: "postgres",
    })
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(
    url: &StoreUrl,
    _clock: Arc<dyn Clock>,
) -> Result<Arc<dyn Store>, OpenStoreError> {
    Err(OpenStoreError::FeatureDisabled {
        scheme: url.scheme().to_string(),
        feature: "postgres",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_name_backends() {
        assert_eq!(Backend::of("memory"), Some(Backend::Memory));
        assert_eq!(Backend::of("sqlite"), Some(Backend::Sqlite));
        for redis in [
            "redis",
            "rediss",
            "redis+unix",
            "redis+cluster",
            "rediss+cluster",
        ] {
            assert_eq!(Backend::of(redis), Some(Backend::Redis), "{redis}");
        }
        for pg in ["postgres", "postgresql"] {
            assert_eq!(Backend::of(pg), Some(Backend::Postgres), "{pg}");
        }
        for unknown in ["mongodb", "unix", "file", "sqlite3", "postgres+tls"] {
            assert_eq!(Backend::of(unknown), None, "{unknown}");
        }
    }
}
