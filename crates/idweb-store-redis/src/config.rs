//! [`RedisConfig`]: a Redis store named by the settings' store URL.

use std::sync::Arc;

use idweb::{BoxError, Clock, SignOutBus, Store, StoreError, StoreUrl};
use redis::IntoConnectionInfo;

use crate::conn::{Target, parse_target};
use crate::keys::{DEFAULT_PREFIX, Keys};
use crate::{CachingStore, RedisSignOutBus, RedisStore};

/// The longest key prefix: every key carries it, and it is only a name.
const MAX_PREFIX_LEN: usize = 64;

/// Why a store URL does not name a Redis store this crate can open. The
/// messages never repeat the URL (it may hold a password).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisUrlError {
    /// The URL is not a Redis URL this crate understands.
    #[error(
        "invalid Redis store URL; expected redis://[USER:PASSWORD@]HOST[:PORT][/DB], rediss://..., \
         redis+unix:///PATH or redis+cluster://HOST:PORT,HOST:PORT"
    )]
    InvalidUrl(#[source] BoxError),
    /// An option has a value that cannot be used.
    #[error("invalid {key}: {reason}")]
    InvalidOption {
        /// The option, as the settings name it (`` `store_prefix` (IDWEB_STORE_PREFIX) ``).
        key: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// An option the Redis store does not have (a typo, or one meant for another store).
    #[error(
        "the Redis store has no option {key}; its options: prefix (IDWEB_STORE_PREFIX), l1 (IDWEB_STORE_L1)"
    )]
    UnknownOption {
        /// The option, as the settings name it.
        key: String,
    },
}

/// A Redis store as the settings name it: the URL (see [`RedisStore::open`]
/// for the forms) and two options:
///
/// - `prefix` (`IDWEB_STORE_PREFIX`): the prefix of every key and of the
///   invalidation channel, so that several apps can share one Redis.
///   1 to 64 characters, no `{`, `}`, whitespace or control characters.
///   Default `idweb`.
/// - `l1` (`IDWEB_STORE_L1`): whether a [`CachingStore`] (in-process cache
///   invalidated over pub/sub, bypassed while its subscription is down)
///   sits in front. `true` or `false`; default `true`.
///
/// Any other option is refused, so that a mistyped one is not ignored.
///
/// ```no_run
/// use std::sync::Arc;
/// use idweb::{StoreUrl, SystemClock};
/// use idweb_store_redis::RedisConfig;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let url = StoreUrl::parse("redis://cache.internal:6379/0")?.with_option("prefix", "app-a")?;
/// let store = RedisConfig::from_store_url(&url)?.open(Arc::new(SystemClock)).await?;
/// # let _ = store;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// Its `Debug` hides the password.
    url: StoreUrl,
    prefix: String,
    l1: bool,
}

impl RedisConfig {
    /// Checks the URL (without connecting) and reads the options.
    ///
    /// # Errors
    /// [`RedisUrlError`] for a URL that is not a Redis URL, an option value
    /// that cannot be used, or an unknown option.
    pub fn from_store_url(url: &StoreUrl) -> Result<Self, RedisUrlError> {
        check_url(url.url_with_credentials())?;
        let mut prefix = DEFAULT_PREFIX.to_string();
        let mut l1 = true;
        for (name, value) in url.options() {
            let key = StoreUrl::option_key(name);
            match name {
                "prefix" => {
                    let value = value.trim();
                    if value.chars().count() > MAX_PREFIX_LEN || Keys::new(value).is_err() {
                        return Err(RedisUrlError::InvalidOption {
                            key,
                            reason: "1 to 64 characters, no braces, whitespace or control characters",
                        });
                    }
                    prefix = value.to_string();
                }
                "l1" => {
                    l1 = match value.trim().to_ascii_lowercase().as_str() {
                        "true" | "1" | "yes" | "on" => true,
                        "false" | "0" | "no" | "off" => false,
                        _ => {
                            return Err(RedisUrlError::InvalidOption {
                                key,
                                reason: "expected true or false",
                            });
                        }
                    }
                }
                _ => return Err(RedisUrlError::UnknownOption { key }),
            }
        }
        Ok(Self {
            url: url.clone(),
            prefix,
            l1,
        })
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether [`open`](Self::open) puts a [`CachingStore`] in front.
    pub fn l1(&self) -> bool {
        self.l1
    }

    /// Connects, with `clock` deciding expiry: a [`RedisStore`], behind a
    /// [`CachingStore`] when [`l1`](Self::l1) is on.
    ///
    /// # Errors
    /// As for [`RedisStore::open_with_prefix`] and [`CachingStore::new`].
    pub async fn open(&self, clock: Arc<dyn Clock>) -> Result<Arc<dyn Store>, StoreError> {
        let redis =
            RedisStore::open_with_prefix(self.url.url_with_credentials(), &self.prefix, clock)
                .await?;
        if self.l1 {
            Ok(Arc::new(CachingStore::new(redis)?))
        } else {
            Ok(Arc::new(redis))
        }
    }
}

impl RedisConfig {
    /// Connects the sign-out event bus of this store (its own connection
    /// and subscription, on `PREFIX:signout`); returns once subscribed.
    ///
    /// # Errors
    /// As for [`RedisStore::open_with_prefix`] and [`RedisSignOutBus::new`].
    pub async fn open_sign_out_bus(
        &self,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<dyn SignOutBus>, StoreError> {
        let redis =
            RedisStore::open_with_prefix(self.url.url_with_credentials(), &self.prefix, clock)
                .await?;
        Ok(Arc::new(RedisSignOutBus::new(redis).await?))
    }
}

/// Parses the URL as [`RedisStore::open`] will, without connecting.
fn check_url(url: &str) -> Result<(), RedisUrlError> {
    let invalid = |e: BoxError| RedisUrlError::InvalidUrl(e);
    let nodes = match parse_target(url).map_err(|e| invalid(Box::new(e)))? {
        Target::Single(node) => vec![node],
        Target::Cluster(nodes) => nodes,
    };
    for node in nodes {
        // redis-rs's parse errors name what is wrong, never the URL.
        node.as_str()
            .into_connection_info()
            .map_err(|e| invalid(Box::new(e)))?;
    }
    Ok(())
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
    fn defaults_and_options() {
        let c = RedisConfig::from_store_url(&url("redis://127.0.0.1:6379", &[])).expect("ok");
        assert_eq!((c.prefix(), c.l1()), ("idweb", true));
        let c = RedisConfig::from_store_url(&url(
            "redis+cluster://:hunter2@a:1,b:2",
            &[("prefix", "app-a"), ("l1", "false")],
        ))
        .expect("ok");
        assert_eq!((c.prefix(), c.l1()), ("app-a", false));
        assert!(!format!("{c:?}").contains("hunter2"), "{c:?}");
        for ok in [
            "rediss://cache.example:6380",
            "redis://u:p@h:1/2",
            "redis+unix:///run/redis.sock",
        ] {
            assert!(RedisConfig::from_store_url(&url(ok, &[])).is_ok(), "{ok}");
        }
    }

    #[test]
    fn prefix_rules() {
        for bad in ["a{b}", "a b", "", &"p".repeat(65)] {
            let e = RedisConfig::from_store_url(&url("redis://h:1", &[("prefix", bad)]))
                .expect_err(bad);
            assert!(
                matches!(&e, RedisUrlError::InvalidOption { key, .. } if key.contains("IDWEB_STORE_PREFIX")),
                "{bad}: {e}"
            );
        }
        let long = "p".repeat(64);
        let c = RedisConfig::from_store_url(&url("redis://h:1", &[("prefix", &long)])).expect("64");
        assert_eq!(c.prefix(), long);
    }

    #[test]
    fn bad_values_urls_and_unknown_options() {
        let e =
            RedisConfig::from_store_url(&url("redis://h:1", &[("l1", "maybe")])).expect_err("l1");
        assert!(e.to_string().contains("IDWEB_STORE_L1"), "{e}");
        let e =
            RedisConfig::from_store_url(&url("redis://h:1", &[("prefx", "a")])).expect_err("typo");
        assert!(
            matches!(&e, RedisUrlError::UnknownOption { key } if key.contains("IDWEB_STORE_PREFX")),
            "{e}"
        );
        for bad in [
            "redis://:hunter2@h:1/notadb",
            "redis+cluster://:hunter2@",
            "http://:hunter2@h:1",
            "redis://:hunter2@0.0.0.0:6379",
        ] {
            let e = RedisConfig::from_store_url(&url(bad, &[])).expect_err(bad);
            assert!(matches!(e, RedisUrlError::InvalidUrl(_)), "{bad}: {e}");
            let chain = format!("{e} {:?}", std::error::Error::source(&e));
            assert!(!chain.contains("hunter2"), "{chain}");
        }
    }
}
