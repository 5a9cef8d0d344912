//! [`SqliteConfig`]: a SQLite store named by the settings' store URL.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use idweb::{Clock, StoreError, StoreUrl};

use crate::SqliteStore;

/// Why a store URL does not name a SQLite store this crate can open. The
/// messages never repeat the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteUrlError {
    /// The URL does not start with `sqlite://` or `sqlite:`.
    #[error("a SQLite store URL must start with `sqlite://`")]
    NotSqlite,
    /// Nothing follows the scheme.
    #[error("the SQLite store URL names no file")]
    NoPath,
    /// The URL has a query or a fragment.
    #[error("the SQLite store URL must be a plain path: options (`?...`) are not supported")]
    Query,
    /// `sqlite::memory:`: every session would be lost on restart.
    #[error("an in-memory SQLite store loses every session on restart; give a file path")]
    InMemory,
    /// A store option was given; the SQLite store takes none.
    #[error("the SQLite store takes no option, but {key} is set")]
    UnknownOption {
        /// The option, as the settings name it (`` `store_prefix` (IDWEB_STORE_PREFIX) ``).
        key: String,
    },
}

/// A SQLite store as the settings name it: `sqlite://PATH` (or
/// `sqlite:PATH`) with no store option. Relative paths are relative to the
/// working directory; `sqlite:///var/lib/app/idweb.db` is absolute.
///
/// ```no_run
/// use std::sync::Arc;
/// use idweb::{StoreUrl, SystemClock};
/// use idweb_store_sqlite::SqliteConfig;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let config = SqliteConfig::from_store_url(&StoreUrl::parse("sqlite://data/idweb.db")?)?;
/// let store = config.open(Arc::new(SystemClock)).await?;
/// # let _ = store;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteConfig {
    path: PathBuf,
}

impl SqliteConfig {
    /// Reads the file path from a store URL; refuses any store option
    /// (`IDWEB_STORE_*`), so that a setting meant for another store is not
    /// silently ignored.
    ///
    /// # Errors
    /// [`SqliteUrlError`] for a URL of another form or an option.
    pub fn from_store_url(url: &StoreUrl) -> Result<Self, SqliteUrlError> {
        let path = parse_path(url.url_with_credentials())?;
        if let Some((name, _)) = url.options().next() {
            return Err(SqliteUrlError::UnknownOption {
                key: StoreUrl::option_key(name),
            });
        }
        Ok(Self { path })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens (creating if needed) the database, as
    /// [`SqliteStore::open_with_clock`] does.
    ///
    /// # Errors
    /// As for [`SqliteStore::open_with_clock`].
    pub async fn open(&self, clock: Arc<dyn Clock>) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with_clock(&self.path, clock).await
    }
}

/// The file path of a `sqlite://PATH` or `sqlite:PATH` URL.
pub(crate) fn parse_path(url: &str) -> Result<PathBuf, SqliteUrlError> {
    let rest = strip_prefix_ignore_case(url, "sqlite://")
        .or_else(|| strip_prefix_ignore_case(url, "sqlite:"))
        .ok_or(SqliteUrlError::NotSqlite)?;
    if rest.is_empty() {
        return Err(SqliteUrlError::NoPath);
    }
    if rest.contains(['?', '#']) {
        return Err(SqliteUrlError::Query);
    }
    if rest == ":memory:" {
        return Err(SqliteUrlError::InMemory);
    }
    Ok(PathBuf::from(rest))
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> Result<SqliteConfig, SqliteUrlError> {
        SqliteConfig::from_store_url(&StoreUrl::parse(url).expect("a URL"))
    }

    #[test]
    fn paths_from_urls() {
        for (url, path) in [
            ("sqlite://data/idweb.db", "data/idweb.db"),
            ("sqlite:idweb.db", "idweb.db"),
            ("SQLITE:///var/lib/app/idweb.db", "/var/lib/app/idweb.db"),
        ] {
            assert_eq!(config(url).expect(url).path(), Path::new(path));
        }
    }

    #[test]
    fn bad_urls_and_options_are_refused_by_kind() {
        for (url, err) in [
            ("sqlite://", SqliteUrlError::NoPath),
            ("sqlite://idweb.db?mode=rwc", SqliteUrlError::Query),
            ("sqlite://:memory:", SqliteUrlError::InMemory),
            ("sqlite::memory:", SqliteUrlError::InMemory),
            ("postgres://u:hunter2@db/idweb", SqliteUrlError::NotSqlite),
        ] {
            let e = config(url).expect_err(url);
            assert_eq!(e, err, "{url}");
            assert!(!e.to_string().contains("hunter2"));
        }
        let url = StoreUrl::parse("sqlite://idweb.db")
            .and_then(|u| u.with_option("prefix", "app-a"))
            .expect("a URL");
        let e = SqliteConfig::from_store_url(&url).expect_err("an option");
        assert!(e.to_string().contains("IDWEB_STORE_PREFIX"), "{e}");
    }
}
