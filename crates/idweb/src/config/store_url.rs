//! [`StoreUrl`]: the store the settings name, kept opaque.

use std::collections::BTreeMap;
use std::fmt;

use super::ConfigError;

/// The store the settings name: its URL as given (`IDWEB_STORE`, or `store`
/// in the file; default `memory`) and its options (every `IDWEB_STORE_NAME`
/// variable, or `store_name` key of the file, becomes option `name`).
///
/// The core knows only `memory`, the in-process store it ships. Every other
/// URL is opaque here: the store crate named by its scheme parses it and its
/// options, and the `idweb-stores` crate opens it from this value. A new
/// backend therefore needs no change to the core.
///
/// The URL may carry credentials (`redis://:PASSWORD@host`). `Debug` and
/// `Display` show it with the password and every query value replaced by
/// `***`; [`url_with_credentials`](Self::url_with_credentials) gives the URL
/// itself, for the code that connects.
///
/// ```
/// use idweb::StoreUrl;
///
/// let store = StoreUrl::parse("redis://:hunter2@cache.internal:6379/0")?
///     .with_option("prefix", "app-a")?;
/// assert_eq!(store.scheme(), "redis");
/// assert_eq!(store.option("prefix"), Some("app-a"));
/// assert_eq!(store.to_string(), "redis://:***@cache.internal:6379/0");
/// assert!(!format!("{store:?}").contains("hunter2"));
/// assert!(StoreUrl::default().is_memory());
/// # Ok::<(), idweb::ConfigError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct StoreUrl {
    url: String,
    scheme: String,
    options: BTreeMap<String, String>,
}

impl Default for StoreUrl {
    /// `memory`, without options.
    fn default() -> Self {
        Self::memory()
    }
}

impl StoreUrl {
    /// The in-process store: lost on restart, private to one process.
    pub fn memory() -> Self {
        Self {
            url: MEMORY.to_string(),
            scheme: MEMORY.to_string(),
            options: BTreeMap::new(),
        }
    }

    /// Takes a store URL: `memory`, or `SCHEME:...` with a scheme as RFC 3986
    /// spells it (a letter, then letters, digits, `+`, `-` or `.`). Nothing
    /// else is checked here: the store crate of that scheme checks the rest
    /// when it opens the store.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming `IDWEB_STORE` when the value is empty
    /// or has no scheme. The message never repeats the value, which may hold
    /// a password.
    pub fn parse(url: &str) -> Result<Self, ConfigError> {
        let url = url.trim();
        let invalid = |reason: &str| ConfigError::Invalid {
            key: STORE_KEY.into(),
            reason: reason.into(),
        };
        if url.is_empty() {
            return Err(invalid(
                "must not be empty; use `memory` or a store URL such as sqlite://PATH or redis://HOST:PORT",
            ));
        }
        if url.eq_ignore_ascii_case(MEMORY) {
            return Ok(Self::memory());
        }
        let scheme = match url.split_once(':') {
            Some((scheme, rest)) if is_scheme(scheme) && !rest.is_empty() => {
                scheme.to_ascii_lowercase()
            }
            _ => {
                return Err(invalid(
                    "expected `memory` or a URL `SCHEME:...`, such as sqlite://PATH or redis://HOST:PORT",
                ));
            }
        };
        Ok(Self {
            url: url.to_string(),
            scheme,
            options: BTreeMap::new(),
        })
    }

    /// Adds (or replaces) option `name` (as `IDWEB_STORE_NAME` would). Names
    /// are lower-case letters, digits and `_`; an upper-case name is
    /// lower-cased. Which options exist, and their values, is the store's
    /// business.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for an empty name or one with other characters.
    pub fn with_option(
        mut self,
        name: &str,
        value: impl Into<String>,
    ) -> Result<Self, ConfigError> {
        let name = name.trim().to_ascii_lowercase();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(ConfigError::Invalid {
                key: format!("store option `{name}`"),
                reason: "option names use only letters, digits and _".into(),
            });
        }
        self.options.insert(name, value.into());
        Ok(self)
    }

    /// The scheme, lower-case: `memory`, `sqlite`, `redis`, `rediss`,
    /// `redis+cluster`, ...
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// Whether this is the in-process `memory` store.
    pub fn is_memory(&self) -> bool {
        self.scheme == MEMORY
    }

    /// The value of option `name` (lower-case, e.g. `prefix` for
    /// `IDWEB_STORE_PREFIX`), if given.
    pub fn option(&self, name: &str) -> Option<&str> {
        self.options.get(name).map(String::as_str)
    }

    /// Every option given, by name.
    pub fn options(&self) -> impl Iterator<Item = (&str, &str)> {
        self.options.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The URL exactly as given (trimmed), **with any credentials it
    /// holds**. For the code that connects to the store; never log it (log
    /// the value itself: its `Display` is redacted).
    pub fn url_with_credentials(&self) -> &str {
        &self.url
    }

    /// How the settings name option `name`, for error messages:
    /// `` `store_prefix` (IDWEB_STORE_PREFIX) ``.
    pub fn option_key(name: &str) -> String {
        format!("`store_{name}` (IDWEB_STORE_{})", name.to_ascii_uppercase())
    }
}

impl fmt::Display for StoreUrl {
    /// The URL with its password and query values replaced by `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.url))
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreUrl")
            .field("url", &format_args!("{self}"))
            .field("options", &self.options)
            .finish()
    }
}

const MEMORY: &str = "memory";
const STORE_KEY: &str = "`store` (IDWEB_STORE)";

/// RFC 3986 §3.1: `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`.
fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// `url` with the password of its user info, its query values and its
/// fragment replaced by `***`. The user info ends at the last `@` (a
/// password may hold `/`, `?` or `#` unencoded); only a plain user name
/// before a `:` is kept, anything else of it is replaced whole.
fn redact(url: &str) -> String {
    let (mut out, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => match url.split_once(':') {
            Some((scheme, rest)) => (format!("{scheme}:"), rest),
            None => (String::new(), url),
        },
    };
    let rest = match rest.rsplit_once('@') {
        Some((userinfo, rest)) => {
            match userinfo.split_once(':') {
                Some((user, _)) if !user.contains(['/', '?', '#']) => {
                    out.push_str(user);
                    out.push_str(":***");
                }
                _ => out.push_str("***"),
            }
            out.push('@');
            rest
        }
        None => rest,
    };
    let (rest, fragment) = match rest.split_once('#') {
        Some((r, _)) => (r, true),
        None => (rest, false),
    };
    match rest.split_once('?') {
        Some((before, query)) => {
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) => format!("{k}=***"),
                    None => "***".to_string(),
                })
                .collect();
            out.push_str(before);
            out.push('?');
            out.push_str(&pairs.join("&"));
        }
        None => out.push_str(rest),
    }
    if fragment {
        out.push_str("#***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_are_taken_opaquely() {
        for (url, scheme) in [
            ("memory", "memory"),
            ("MEMORY", "memory"),
            ("sqlite://data/idweb.db", "sqlite"),
            ("sqlite:idweb.db", "sqlite"),
            ("redis://127.0.0.1:6379", "redis"),
            ("Rediss://h:1", "rediss"),
            ("redis+cluster://a:1,b:2", "redis+cluster"),
            ("postgres://db.internal/idweb", "postgres"),
        ] {
            let s = StoreUrl::parse(url).unwrap();
            assert_eq!(s.scheme(), scheme, "{url}");
            assert_eq!(s.is_memory(), scheme == "memory", "{url}");
        }
        for bad in ["", "  ", "data/idweb.db", "sqlite:", "1abc://x", "://x"] {
            let e = StoreUrl::parse(bad).unwrap_err().to_string();
            assert!(e.contains("IDWEB_STORE"), "{bad}: {e}");
        }
    }

    #[test]
    fn options_by_name() {
        let s = StoreUrl::parse("redis://h:1")
            .unwrap()
            .with_option("PREFIX", "app-a")
            .unwrap()
            .with_option("l1", "false")
            .unwrap();
        assert_eq!(s.option("prefix"), Some("app-a"));
        assert_eq!(s.option("l1"), Some("false"));
        assert_eq!(s.option("other"), None);
        assert_eq!(
            s.options().collect::<Vec<_>>(),
            [("l1", "false"), ("prefix", "app-a")]
        );
        assert!(s.clone().with_option("a-b", "x").is_err());
        assert!(s.with_option("", "x").is_err());
        assert_eq!(
            StoreUrl::option_key("prefix"),
            "`store_prefix` (IDWEB_STORE_PREFIX)"
        );
    }

    #[test]
    fn passwords_never_shown() {
        for (url, shown) in [
            ("redis://:hunter2@cache:6379/0", "redis://:***@cache:6379/0"),
            (
                "redis://app:hunter2@cache:6379",
                "redis://app:***@cache:6379",
            ),
            ("rediss://hunter2@cache", "rediss://***@cache"),
            (
                "redis+cluster://u:hunter2@a:1,b:2",
                "redis+cluster://u:***@a:1,b:2",
            ),
            (
                "postgres://db/idweb?user=x&password=hunter2",
                "postgres://db/idweb?user=***&password=***",
            ),
            ("x://u:p@h/p#hunter2", "x://u:***@h/p#***"),
            ("x:hunter2@host", "x:***@host"),
            ("redis://:hunter2/x?y#z@cache:1", "redis://:***@cache:1"),
            (
                "redis://u:hunter2@cache/0?db=1",
                "redis://u:***@cache/0?db=***",
            ),
            ("sqlite://data/idweb.db", "sqlite://data/idweb.db"),
            ("memory", "memory"),
        ] {
            let s = StoreUrl::parse(url).unwrap();
            assert_eq!(s.to_string(), shown, "{url}");
            let dbg = format!("{s:?}");
            assert!(!dbg.contains("hunter2"), "{dbg}");
            assert_eq!(s.url_with_credentials(), url);
        }
    }
}
