//! [`PostgresConfig`]: a PostgreSQL store named by the settings' store URL.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use idweb::{BoxError, Clock, SignOutBus, Store, StoreError, StoreUrl, SystemClock};
use tokio_postgres::config::{Host, SslMode};

use crate::PostgresStore;

/// The schema the store's tables live in unless `schema` says otherwise.
pub const DEFAULT_SCHEMA: &str = "idweb";

/// Connections per store unless `pool_size` says otherwise.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// Why a store URL does not name a PostgreSQL store this crate can open.
/// The messages never repeat the URL (it may hold a password).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostgresUrlError {
    /// The URL is not a PostgreSQL URL this crate understands.
    #[error(
        "invalid PostgreSQL store URL; expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE \
         (or postgresql://)"
    )]
    InvalidUrl(#[source] Option<BoxError>),
    /// A part the store needs is missing from the URL.
    #[error(
        "the PostgreSQL store URL names no {0}; expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
    )]
    Missing(&'static str),
    /// The URL asks for TLS, which this build does not speak.
    #[error(
        "the PostgreSQL store URL asks for TLS (sslmode=require), which this build of \
         idweb-store-postgres does not support; connect over a private network or a local socket"
    )]
    TlsUnsupported,
    /// An option has a value that cannot be used.
    #[error("invalid {key}: {reason}")]
    InvalidOption {
        /// The option, as the settings name it.
        key: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// An option the PostgreSQL store does not have.
    #[error(
        "the PostgreSQL store has no option {key}; its options: schema (IDWEB_STORE_SCHEMA), \
         pool_size (IDWEB_STORE_POOL_SIZE), l1 (IDWEB_STORE_L1)"
    )]
    UnknownOption {
        /// The option, as the settings name it.
        key: String,
    },
}

/// A PostgreSQL store: where to connect, in which schema, with how many
/// connections.
///
/// - URL: `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE` or
///   `postgresql://...`, with libpq's query parameters where the driver
///   knows them (`connect_timeout`, `application_name`, `sslmode=disable`,
///   ...). TLS (`sslmode=require`) is refused: this build speaks plain TCP
///   (or a Unix socket: `host=/run/postgresql`).
/// - `schema` (`IDWEB_STORE_SCHEMA`): the schema of the store's tables,
///   created if missing. Lowercase letters, digits and `_`, starting with a
///   letter or `_`, at most 63 characters. Default `idweb`.
/// - `pool_size` (`IDWEB_STORE_POOL_SIZE`): connections per process, 1 to
///   256. Default 16.
/// - `l1` (`IDWEB_STORE_L1`): whether [`open_shared`](Self::open_shared)
///   puts a [`CachingStore`](crate::CachingStore) (in-process cache kept
///   coherent by `LISTEN/NOTIFY`, fail-closed) in front of the store.
///   `true` or `false`; default `true`.
///
/// `Debug` shows neither the password nor the URL.
///
/// ```no_run
/// use std::sync::Arc;
/// use idweb::{StoreUrl, SystemClock};
/// use idweb_store_postgres::PostgresConfig;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let url = StoreUrl::parse("postgres://app:secret@db.internal:5432/app")?;
/// let store = PostgresConfig::from_store_url(&url)?.open(Arc::new(SystemClock)).await?;
/// # let _ = store;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresConfig {
    pub(crate) pg: tokio_postgres::Config,
    pub(crate) schema: String,
    pub(crate) pool_size: usize,
    /// Migrate no further than this version (tests of the migrations).
    pub(crate) max_version: Option<i64>,
    /// Whether `open_shared` puts the in-process cache in front.
    pub(crate) l1: bool,
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hosts: Vec<String> = self
            .pg
            .get_hosts()
            .iter()
            .map(|h| match h {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        f.debug_struct("PostgresConfig")
            .field("hosts", &hosts)
            .field("ports", &self.pg.get_ports())
            .field("user", &self.pg.get_user())
            .field("dbname", &self.pg.get_dbname())
            .field("password", &self.pg.get_password().map(|_| "***"))
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("l1", &self.l1)
            .finish()
    }
}

impl PostgresConfig {
    /// Parses a `postgres://` or `postgresql://` URL (without connecting),
    /// with the default schema and pool size.
    ///
    /// # Errors
    /// [`PostgresUrlError`] when the URL is not of that form, lacks a user,
    /// a host or a database, or asks for TLS.
    pub fn parse(url: &str) -> Result<Self, PostgresUrlError> {
        // The driver knows the schemes in lowercase only.
        let Some(rest) = ["postgres://", "postgresql://"].iter().find_map(|p| {
            url.get(..p.len())
                .filter(|head| head.eq_ignore_ascii_case(p))
                .map(|_| &url[p.len()..])
        }) else {
            return Err(PostgresUrlError::InvalidUrl(None));
        };
        let url = format!("postgresql://{rest}");
        // The driver's parse errors usually name the part that is wrong, but
        // some repeat the input (a URL it could not read as one is taken for
        // a `key=value` string, and the whole of it becomes an "unknown
        // option"). Their text is kept as the source only when it holds no
        // part of the URL.
        let mut pg = tokio_postgres::Config::from_str(&url)
            .map_err(|e| PostgresUrlError::InvalidUrl(sanitized(&e, rest)))?;
        if pg.get_user().is_none_or(str::is_empty) {
            return Err(PostgresUrlError::Missing("user"));
        }
        if pg.get_hosts().is_empty() {
            return Err(PostgresUrlError::Missing("host"));
        }
        if pg.get_dbname().is_none_or(str::is_empty) {
            return Err(PostgresUrlError::Missing("database"));
        }
        match pg.get_ssl_mode() {
            SslMode::Disable | SslMode::Prefer => {}
            _ => return Err(PostgresUrlError::TlsUnsupported),
        }
        // Plain TCP: never send a TLS request the server would answer for nothing.
        pg.ssl_mode(SslMode::Disable);
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(Duration::from_secs(3));
        }
        if pg.get_application_name().is_none() {
            pg.application_name("idweb");
        }
        pg.keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .tcp_user_timeout(Duration::from_secs(10));
        Ok(Self {
            pg,
            schema: DEFAULT_SCHEMA.to_string(),
            pool_size: DEFAULT_POOL_SIZE,
            max_version: None,
            l1: true,
        })
    }

    /// Reads the URL and the options of a store URL (without connecting).
    ///
    /// # Errors
    /// As for [`parse`](Self::parse); [`PostgresUrlError::InvalidOption`]
    /// or [`PostgresUrlError::UnknownOption`] for the options.
    pub fn from_store_url(url: &StoreUrl) -> Result<Self, PostgresUrlError> {
        let mut config = Self::parse(url.url_with_credentials())?;
        for (name, value) in url.options() {
            let key = StoreUrl::option_key(name);
            let value = value.trim();
            match name {
                "schema" => {
                    config = config
                        .with_schema(value)
                        .map_err(|reason| PostgresUrlError::InvalidOption { key, reason })?;
                }
                "pool_size" => {
                    let n = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=256).contains(n))
                        .ok_or(PostgresUrlError::InvalidOption {
                            key,
                            reason: "expected a number from 1 to 256",
                        })?;
                    config.pool_size = n;
                }
                "l1" => {
                    config.l1 = match value.to_ascii_lowercase().as_str() {
                        "true" | "1" | "yes" | "on" => true,
                        "false" | "0" | "no" | "off" => false,
                        _ => {
                            return Err(PostgresUrlError::InvalidOption {
                                key,
                                reason: "expected true or false",
                            });
                        }
                    };
                }
                _ => return Err(PostgresUrlError::UnknownOption { key }),
            }
        }
        Ok(config)
    }

    /// Puts the tables in `schema` (see the type's documentation for the
    /// rules).
    ///
    /// # Errors
    /// Why the name cannot be used.
    pub fn with_schema(mut self, schema: &str) -> Result<Self, &'static str> {
        let ok = !schema.is_empty()
            && schema.len() <= 63
            && schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !schema.starts_with(|c: char| c.is_ascii_digit())
            && !schema.starts_with("pg_");
        if !ok {
            return Err(
                "1 to 63 lowercase letters, digits or `_`, not starting with a digit or `pg_`",
            );
        }
        self.schema = schema.to_string();
        Ok(self)
    }

    /// Keeps at most `n` connections (at least 1).
    pub fn with_pool_size(mut self, n: usize) -> Self {
        self.pool_size = n.max(1);
        self
    }

    /// Migrates the schema no further than `version` (to test migrations
    /// from an older version). Not for applications.
    #[doc(hidden)]
    pub fn with_max_schema_version(mut self, version: i64) -> Self {
        self.max_version = Some(version);
        self
    }

    /// The schema of the store's tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Connections per process.
    pub fn pool_size(&self) -> usize {
        self.pool_size
    }

    /// Connects, creates or migrates the schema, with `clock` deciding expiry.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when PostgreSQL cannot be reached or the
    /// migration fails; [`StoreError::Corrupt`] when the schema is newer than
    /// this build knows.
    pub async fn open(&self, clock: Arc<dyn Clock>) -> Result<PostgresStore, StoreError> {
        PostgresStore::open_config(self.clone(), clock).await
    }

    /// Whether [`open_shared`](Self::open_shared) puts the in-process cache
    /// in front of the store.
    pub fn l1(&self) -> bool {
        self.l1
    }

    /// With the in-process cache in front ([`open_shared`](Self::open_shared)) or not.
    pub fn with_l1(mut self, on: bool) -> Self {
        self.l1 = on;
        self
    }

    /// [`open`](Self::open), behind a [`CachingStore`](crate::CachingStore)
    /// when [`l1`](Self::l1) is on: the store an app shares between its
    /// services.
    ///
    /// # Errors
    /// As for [`open`](Self::open); [`StoreError::Unavailable`] outside a
    /// Tokio runtime when the cache is on.
    pub async fn open_shared(&self, clock: Arc<dyn Clock>) -> Result<Arc<dyn Store>, StoreError> {
        let store = self.open(clock).await?;
        if self.l1 {
            Ok(Arc::new(crate::CachingStore::new(store)?))
        } else {
            Ok(Arc::new(store))
        }
    }

    /// Opens the store (for its connection settings and schema) and its
    /// [`PostgresSignOutBus`](crate::PostgresSignOutBus), listening when
    /// this returns.
    ///
    /// # Errors
    /// As for [`open`](Self::open), and when the bus does not listen within
    /// a few seconds.
    pub async fn open_sign_out_bus(
        &self,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<dyn SignOutBus>, StoreError> {
        let store = self.open(clock).await?;
        Ok(Arc::new(crate::PostgresSignOutBus::new(store).await?))
    }

    /// [`open`](Self::open) with the system clock.
    ///
    /// # Errors
    /// As for [`open`](Self::open).
    pub async fn open_with_system_clock(&self) -> Result<PostgresStore, StoreError> {
        self.open(Arc::new(SystemClock)).await
    }
}

/// The text of a parse error, if it repeats nothing of the URL after its
/// scheme (user, password, host, path, query).
fn sanitized(e: &tokio_postgres::Error, rest: &str) -> Option<BoxError> {
    let text = match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    };
    let leaks = rest
        .split(['@', ':', '/', '?', '&', '='])
        .any(|part| part.len() >= 3 && text.contains(part));
    (!leaks && !text.contains("://")).then(|| text.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(url: &str, options: &[(&str, &str)]) -> StoreUrl {
        options
            .iter()
            .fold(StoreUrl::parse(url).expect("a URL"), |u, (name, value)| {
                u.with_option(name, *value).expect("an option name")
            })
    }

    #[test]
    fn urls_and_defaults() {
        for ok in [
            "postgres://app:hunter2@db.internal:5432/app",
            "postgresql://app@127.0.0.1/idweb",
            "POSTGRES://app:hunter2@[::1]:6543/app?application_name=x&sslmode=disable",
        ] {
            let c = PostgresConfig::from_store_url(&url(ok, &[])).expect(ok);
            assert_eq!((c.schema(), c.pool_size(), c.l1()), ("idweb", 16, true));
            let shown = format!("{c:?}");
            assert!(!shown.contains("hunter2"), "{shown}");
        }
        let c = PostgresConfig::from_store_url(&url(
            "postgres://a:hunter2@h/d",
            &[("schema", "app_a"), ("pool_size", "4"), ("l1", "false")],
        ))
        .expect("options");
        assert_eq!((c.schema(), c.pool_size(), c.l1()), ("app_a", 4, false));
        let c = PostgresConfig::from_store_url(&url("postgres://a@h/d", &[("l1", "on")]))
            .expect("options");
        assert!(c.l1());
    }

    #[test]
    fn bad_urls_never_show_the_password() {
        for (bad, what) in [
            ("redis://:hunter2@h:1", "InvalidUrl"),
            ("postgres://:hunter2@h:1/d", "Missing"),
            ("postgres://u:hunter2@h:notaport/d", "InvalidUrl"),
            ("postgres://u:hunter2@h:5432", "Missing"),
            ("postgres://u:hunter2@h/d?sslmode=require", "TlsUnsupported"),
            ("postgres://u:hunter2@h/d?nosuchparam=1", "InvalidUrl"),
            ("POSTGRES://u:hunter2@h/d?nosuchparam=1", "InvalidUrl"),
            ("postgres://u:hunter2@h/d?application_name", "InvalidUrl"),
            ("Postgresql://u:hunter2@[::1/d", "InvalidUrl"),
        ] {
            let e = PostgresConfig::parse(bad).expect_err(bad);
            assert!(format!("{e:?}").starts_with(what), "{bad}: {e:?}");
            let mut chain = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                chain.push_str(&format!(" / {s} / {s:?}"));
                source = s.source();
            }
            assert!(!chain.contains("hunter2"), "{bad}: {chain}");
        }
    }

    #[test]
    fn bad_options_are_refused_by_name() {
        let base = "postgres://u@h/d";
        for (name, value, key) in [
            ("schema", "Bad-Name", "IDWEB_STORE_SCHEMA"),
            ("schema", "pg_x", "IDWEB_STORE_SCHEMA"),
            ("schema", "1x", "IDWEB_STORE_SCHEMA"),
            ("pool_size", "0", "IDWEB_STORE_POOL_SIZE"),
            ("pool_size", "many", "IDWEB_STORE_POOL_SIZE"),
            ("l1", "maybe", "IDWEB_STORE_L1"),
            ("prefix", "x", "IDWEB_STORE_PREFIX"),
        ] {
            let e = PostgresConfig::from_store_url(&url(base, &[(name, value)])).expect_err(name);
            assert!(e.to_string().contains(key), "{name}={value}: {e}");
        }
    }
}
