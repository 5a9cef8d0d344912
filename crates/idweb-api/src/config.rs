//! Configuration: the builder, the `IDWEB_API_*` variables and the start-up errors.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use idweb::{Clock, Provider, ProviderError, SystemClock};
use jsonwebtoken::Algorithm;
use url::Url;

use crate::validate::{Inner, JwtBearer};

/// Default clock skew tolerated on `exp` and `nbf`.
pub(crate) const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);

/// Largest clock skew the builder accepts.
pub(crate) const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// Default least time between two JWKS fetches caused by unknown key ids.
const DEFAULT_MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(30);

/// Which JWS header `typ` values an access token may carry.
///
/// RFC 9068 access tokens say `at+jwt`; Microsoft Entra and many other
/// providers say `JWT`; some say nothing. The comparison ignores case and an
/// `application/` prefix (RFC 7515 §4.1.9). Other values — `logout+jwt`,
/// `id_token+jwt`, ... — are always refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TypPolicy {
    /// Only `at+jwt`: the strict RFC 9068 §4 check, for providers that issue
    /// RFC 9068 access tokens. It keeps ID tokens and other JWTs of the same
    /// provider from being replayed as access tokens.
    RequireAtJwt,
    /// `at+jwt` or `JWT`. The default: RFC 9068 providers and Microsoft Entra.
    #[default]
    AtJwtOrJwt,
    /// `at+jwt`, `JWT`, or no `typ` at all, for providers that omit it.
    AllowMissing,
}

impl TypPolicy {
    /// Whether a header `typ` (or its absence) is accepted.
    pub(crate) fn accepts(self, typ: Option<&str>) -> bool {
        let Some(typ) = typ else {
            return self == TypPolicy::AllowMissing;
        };
        let lower = typ.to_ascii_lowercase();
        let media = lower.strip_prefix("application/").unwrap_or(&lower);
        match media {
            "at+jwt" => true,
            "jwt" => self != TypPolicy::RequireAtJwt,
            _ => false,
        }
    }
}

/// Why a [`JwtBearer`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A required setting is absent.
    #[error("missing setting {setting}: {hint}")]
    Missing {
        /// The setting (builder method or environment variable).
        setting: &'static str,
        /// What to put there.
        hint: &'static str,
    },
    /// A setting has a value that cannot be used.
    #[error("invalid setting {setting}: {reason}")]
    Invalid {
        /// The setting (builder method or environment variable).
        setting: String,
        /// Why it was refused.
        reason: String,
    },
    /// The issuer's discovery document or its keys could not be fetched,
    /// or they do not fit the configured authority.
    #[error("cannot load the issuer's metadata and signing keys")]
    Provider(#[source] ProviderError),
    /// The provider given to [`JwtBearerBuilder::with_provider`] has another
    /// issuer than the configured authority.
    #[error("the provider's issuer is `{actual}`, but the configured authority is `{expected}`")]
    ProviderMismatch {
        /// The configured authority.
        expected: String,
        /// The provider's issuer.
        actual: String,
    },
}

fn invalid(setting: impl Into<String>, reason: impl Into<String>) -> BuildError {
    BuildError::Invalid {
        setting: setting.into(),
        reason: reason.into(),
    }
}

/// Builds a [`JwtBearer`]; start with [`JwtBearer::builder`] or
/// [`JwtBearerBuilder::from_env`].
#[must_use = "call .build().await"]
pub struct JwtBearerBuilder {
    authority: String,
    audiences: Vec<String>,
    algorithms: Option<Vec<Algorithm>>,
    typ: TypPolicy,
    leeway: Duration,
    max_token_len: usize,
    realm: Option<String>,
    clock: Option<Arc<dyn Clock>>,
    http: Option<reqwest::Client>,
    provider: Option<Arc<Provider>>,
    min_refetch_interval: Duration,
    allowed_tenants: Option<Vec<String>>,
}

impl std::fmt::Debug for JwtBearerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtBearerBuilder")
            .field("authority", &self.authority)
            .field("audiences", &self.audiences)
            .field("typ", &self.typ)
            .field("leeway", &self.leeway)
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

/// The environment variables [`JwtBearerBuilder::from_env`] reads.
const ENV_KEYS: &[&str] = &[
    "IDWEB_API_AUTHORITY",
    "IDWEB_API_AUDIENCE",
    "IDWEB_API_REALM",
    "IDWEB_API_LEEWAY",
    "IDWEB_API_TYP",
    "IDWEB_API_MAX_TOKEN_LENGTH",
];

impl JwtBearerBuilder {
    pub(crate) fn new(authority: String) -> Self {
        Self {
            authority,
            audiences: Vec::new(),
            algorithms: None,
            typ: TypPolicy::default(),
            leeway: DEFAULT_LEEWAY,
            max_token_len: idweb::MAX_JWS_LEN,
            realm: None,
            clock: None,
            http: None,
            provider: None,
            min_refetch_interval: DEFAULT_MIN_REFETCH_INTERVAL,
            allowed_tenants: None,
        }
    }

    /// A builder configured from the process environment; see
    /// [`from_vars`](Self::from_vars) for the variables.
    ///
    /// # Errors
    /// A required variable is missing or a value is invalid.
    pub fn from_env() -> Result<Self, BuildError> {
        Self::from_vars(std::env::vars())
    }

    /// A builder configured from `IDWEB_API_*` variables (other variables are
    /// ignored; an unknown `IDWEB_API_*` one is an error, to catch typos):
    ///
    /// | variable | meaning |
    /// |---|---|
    /// | `IDWEB_API_AUTHORITY` | the issuer (falls back to `IDWEB_AUTHORITY`, the web app's); required |
    /// | `IDWEB_API_AUDIENCE` | accepted audiences, separated by spaces or commas; required |
    /// | `IDWEB_API_REALM` | the `realm` of the challenges; default none |
    /// | `IDWEB_API_LEEWAY` | clock skew on `exp`/`nbf`, in seconds; default 60 |
    /// | `IDWEB_API_TYP` | `at+jwt`, `at+jwt,jwt` (default) or `at+jwt,jwt,none` |
    /// | `IDWEB_API_MAX_TOKEN_LENGTH` | in bytes; default and maximum 16384 |
    ///
    /// Code can change the result further with the `with_*` methods.
    ///
    /// ```
    /// use idweb_api::JwtBearerBuilder;
    /// let builder = JwtBearerBuilder::from_vars([
    ///     ("IDWEB_API_AUTHORITY".to_string(), "https://login.example.com".to_string()),
    ///     ("IDWEB_API_AUDIENCE".to_string(), "api://todo, 6f1c6e1a-0000-4000-8000-000000000000".to_string()),
    /// ])
    /// .unwrap();
    /// assert!(JwtBearerBuilder::from_vars([]).is_err());
    /// # let _ = builder;
    /// ```
    ///
    /// # Errors
    /// A required variable is missing or a value is invalid.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, BuildError> {
        let mut vars: BTreeMap<String, String> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with("IDWEB_API_") || k == "IDWEB_AUTHORITY")
            .collect();
        if let Some(unknown) = vars
            .keys()
            .find(|k| k.starts_with("IDWEB_API_") && !ENV_KEYS.contains(&k.as_str()))
        {
            return Err(invalid(
                unknown.clone(),
                format!(
                    "unknown variable; the known ones are {}",
                    ENV_KEYS.join(", ")
                ),
            ));
        }
        let authority = vars
            .remove("IDWEB_API_AUTHORITY")
            .or_else(|| vars.remove("IDWEB_AUTHORITY"))
            .ok_or(BuildError::Missing {
                setting: "IDWEB_API_AUTHORITY",
                hint: "the issuer whose access tokens the API accepts, e.g. https://login.microsoftonline.com/TENANT/v2.0",
            })?;
        let audience = vars
            .remove("IDWEB_API_AUDIENCE")
            .ok_or(BuildError::Missing {
                setting: "IDWEB_API_AUDIENCE",
                hint: "the audience(s) access tokens must be issued for, e.g. api://todo",
            })?;
        let mut builder = Self::new(authority)
            .with_audiences(audience.split([' ', ',']).filter(|a| !a.is_empty()));
        if let Some(realm) = vars.remove("IDWEB_API_REALM") {
            builder = builder.with_realm(realm);
        }
        if let Some(leeway) = vars.remove("IDWEB_API_LEEWAY") {
            let secs: u64 = leeway
                .trim()
                .parse()
                .map_err(|_| invalid("IDWEB_API_LEEWAY", "must be a number of seconds"))?;
            builder = builder.with_leeway(Duration::from_secs(secs));
        }
        if let Some(typ) = vars.remove("IDWEB_API_TYP") {
            let mut words: Vec<String> = typ
                .split([' ', ','])
                .filter(|w| !w.is_empty())
                .map(str::to_ascii_lowercase)
                .collect();
            words.sort();
            let policy = match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
                ["at+jwt"] => TypPolicy::RequireAtJwt,
                ["at+jwt", "jwt"] => TypPolicy::AtJwtOrJwt,
                ["at+jwt", "jwt", "none"] => TypPolicy::AllowMissing,
                _ => {
                    return Err(invalid(
                        "IDWEB_API_TYP",
                        "must be `at+jwt`, `at+jwt,jwt` or `at+jwt,jwt,none`",
                    ));
                }
            };
            builder = builder.with_typ_policy(policy);
        }
        if let Some(max) = vars.remove("IDWEB_API_MAX_TOKEN_LENGTH") {
            let max: usize = max
                .trim()
                .parse()
                .map_err(|_| invalid("IDWEB_API_MAX_TOKEN_LENGTH", "must be a number of bytes"))?;
            builder = builder.with_max_token_length(max);
        }
        Ok(builder)
    }

    /// Adds an accepted audience: a token is accepted when its `aud` contains
    /// one of them. At least one is required. With Microsoft Entra, add both
    /// the application ID URI (`api://...`) and the client id, as
    /// Microsoft.Identity.Web does: v2 tokens carry the client id. All the
    /// audiences must name this one API (they are aliases: a scope
    /// `{audience}/{name}` is satisfied by a token scope `{name}`).
    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// Adds several accepted audiences; see [`with_audience`](Self::with_audience).
    pub fn with_audiences<I, A>(mut self, audiences: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<String>,
    {
        self.audiences.extend(audiences.into_iter().map(Into::into));
        self
    }

    /// Restricts the signature algorithms accepted. Default: every asymmetric
    /// algorithm idweb supports ([`Provider::asymmetric_algorithms`]); only
    /// those can be given (HS* and `none` are refused at build).
    pub fn with_algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = Some(algorithms.into_iter().collect());
        self
    }

    /// Which header `typ` values are accepted. Default [`TypPolicy::AtJwtOrJwt`].
    pub fn with_typ_policy(mut self, policy: TypPolicy) -> Self {
        self.typ = policy;
        self
    }

    /// The clock skew tolerated on `exp` and `nbf`. Default 60 seconds;
    /// at most 5 minutes.
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// The longest token looked at, in bytes; longer ones are refused before
    /// any decoding. Default and maximum [`idweb::MAX_JWS_LEN`] (16 KiB).
    pub fn with_max_token_length(mut self, bytes: usize) -> Self {
        self.max_token_len = bytes;
        self
    }

    /// The `realm` of the `WWW-Authenticate` challenges (RFC 6750 §3).
    /// Default none: the parameter is left out. Printable ASCII without `"`
    /// or `\`.
    pub fn with_realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = Some(realm.into());
        self
    }

    /// The clock used for `exp`/`nbf` and the JWKS refetch rate limit.
    /// Default the system clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The HTTP client for discovery and JWKS fetches. Default
    /// [`idweb::provider_http_client`] (no redirects, bounded time). Not used
    /// with [`with_provider`](Self::with_provider).
    pub fn with_http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// The least time between two JWKS fetches caused by tokens with an
    /// unknown `kid`. Default 30 seconds. Not used with
    /// [`with_provider`](Self::with_provider) (the provider keeps its own).
    pub fn with_min_jwks_refetch_interval(mut self, interval: Duration) -> Self {
        self.min_refetch_interval = interval;
        self
    }

    /// Accepts only access tokens whose `tid` is one of `tenants` (Microsoft
    /// Entra tenant ids), as the web app's `IDWEB_ALLOWED_TENANTS` does for
    /// sign-in. Default: every tenant the authority accepts. Applies to the
    /// provider discovered at [`build`](Self::build); a provider given with
    /// [`with_provider`](Self::with_provider) keeps its own allow-list.
    pub fn with_allowed_tenants<I, S>(mut self, tenants: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allowed_tenants = Some(tenants.into_iter().map(Into::into).collect());
        self
    }

    /// Uses an already discovered provider — and its key cache — instead of
    /// discovering the authority again; for a process that signs users in
    /// and serves an API with the same provider. Its issuer must be the
    /// authority. Default: discover at [`build`](Self::build).
    pub fn with_provider(mut self, provider: Arc<Provider>) -> Self {
        self.provider = Some(provider);
        self
    }

    /// Checks the settings, fetches the issuer's discovery document and
    /// JWKS (unless a provider was given), and returns the validator.
    ///
    /// # Errors
    /// An invalid setting, or the issuer cannot be discovered.
    pub async fn build(self) -> Result<JwtBearer, BuildError> {
        let authority = check_authority(&self.authority)?;
        if self.audiences.is_empty() {
            return Err(BuildError::Missing {
                setting: "with_audience",
                hint: "the audience(s) access tokens must be issued for, e.g. api://todo",
            });
        }
        if self.audiences.iter().any(|a| a.trim().is_empty()) {
            return Err(invalid("with_audience", "an audience must not be empty"));
        }
        let algorithms = match self.algorithms {
            None => Provider::asymmetric_algorithms().to_vec(),
            Some(list) => {
                if let Some(bad) = list
                    .iter()
                    .find(|a| !Provider::asymmetric_algorithms().contains(a))
                {
                    return Err(invalid(
                        "with_algorithms",
                        format!("{bad:?} is not an asymmetric signature algorithm"),
                    ));
                }
                if list.is_empty() {
                    return Err(invalid("with_algorithms", "the list is empty"));
                }
                list
            }
        };
        if self.leeway > MAX_LEEWAY {
            return Err(invalid("with_leeway", "must be at most 300 seconds"));
        }
        if self.max_token_len == 0 || self.max_token_len > idweb::MAX_JWS_LEN {
            return Err(invalid(
                "with_max_token_length",
                format!("must be between 1 and {} bytes", idweb::MAX_JWS_LEN),
            ));
        }
        if let Some(realm) = &self.realm
            && !crate::rejection::quotable(realm)
        {
            return Err(invalid(
                "with_realm",
                "must be printable ASCII without `\"` or `\\`",
            ));
        }
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let provider = match self.provider {
            Some(provider) => {
                let base = authority.as_str().trim_end_matches('/');
                if !provider.serves_authority(&authority) {
                    return Err(BuildError::ProviderMismatch {
                        expected: base.to_string(),
                        actual: provider.issuer().to_string(),
                    });
                }
                provider
            }
            None => {
                let http = self.http.unwrap_or_else(idweb::provider_http_client);
                let provider = Provider::discover(&authority, http, Arc::clone(&clock))
                    .await
                    .map_err(BuildError::Provider)?
                    .with_min_refetch_interval(self.min_refetch_interval)
                    .with_allowed_tenants(self.allowed_tenants.as_ref());
                Arc::new(provider)
            }
        };
        Ok(JwtBearer::from_inner(Inner {
            issuer: provider.issuer().to_string(),
            provider,
            audiences: self.audiences,
            algorithms,
            typ: self.typ,
            leeway: i64::try_from(self.leeway.as_secs()).unwrap_or(i64::MAX),
            max_token_len: self.max_token_len,
            realm: self.realm.map(Arc::from),
            clock,
        }))
    }
}

/// `https`, or `http` for a loopback host; no query, fragment or credentials.
fn check_authority(authority: &str) -> Result<Url, BuildError> {
    let url = Url::parse(authority)
        .map_err(|e| invalid("authority", format!("`{authority}` is not a URL: {e}")))?;
    let ok = match url.scheme() {
        "https" => true,
        "http" => idweb::is_loopback(&url),
        _ => false,
    };
    if !ok {
        return Err(invalid(
            "authority",
            format!(
                "`{authority}` must use https (plain http only for a loopback development provider)"
            ),
        ));
    }
    if url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(invalid(
            "authority",
            "must not have a query, a fragment or credentials",
        ));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typ_policies() {
        use TypPolicy::*;
        for (policy, typ, ok) in [
            (RequireAtJwt, Some("at+jwt"), true),
            (RequireAtJwt, Some("application/AT+JWT"), true),
            (RequireAtJwt, Some("JWT"), false),
            (RequireAtJwt, None, false),
            (AtJwtOrJwt, Some("JWT"), true),
            (AtJwtOrJwt, Some("at+jwt"), true),
            (AtJwtOrJwt, None, false),
            (AtJwtOrJwt, Some("logout+jwt"), false),
            (AllowMissing, None, true),
            (AllowMissing, Some("jwt"), true),
            (AllowMissing, Some("id_token+jwt"), false),
        ] {
            assert_eq!(policy.accepts(typ), ok, "{policy:?} {typ:?}");
        }
    }

    #[test]
    fn authorities() {
        for ok in [
            "https://login.example.com/tenant/v2.0",
            "http://127.0.0.1:5100",
            "http://localhost:8080/realms/x",
            "http://[::1]:1",
        ] {
            assert!(check_authority(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://login.example.com",
            "ftp://127.0.0.1",
            "not a url",
            "https://login.example.com/?x=1",
            "https://user:pw@login.example.com/",
        ] {
            assert!(check_authority(bad).is_err(), "{bad}");
        }
    }

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn environment() {
        let b = JwtBearerBuilder::from_vars(vars(&[
            ("IDWEB_AUTHORITY", "https://web.example.com"),
            ("IDWEB_API_AUDIENCE", "api://todo,  client-id"),
            ("IDWEB_API_REALM", "todo"),
            ("IDWEB_API_LEEWAY", "30"),
            ("IDWEB_API_TYP", "JWT, at+jwt, none"),
            ("IDWEB_API_MAX_TOKEN_LENGTH", "8192"),
            ("PATH", "/usr/bin"),
        ]))
        .unwrap();
        assert_eq!(b.authority, "https://web.example.com");
        assert_eq!(b.audiences, ["api://todo", "client-id"]);
        assert_eq!(b.realm.as_deref(), Some("todo"));
        assert_eq!(b.leeway, Duration::from_secs(30));
        assert_eq!(b.typ, TypPolicy::AllowMissing);
        assert_eq!(b.max_token_len, 8192);

        let b = JwtBearerBuilder::from_vars(vars(&[
            ("IDWEB_AUTHORITY", "https://web.example.com"),
            ("IDWEB_API_AUTHORITY", "https://api.example.com"),
            ("IDWEB_API_AUDIENCE", "api://todo"),
            ("IDWEB_API_TYP", "at+jwt"),
        ]))
        .unwrap();
        assert_eq!(b.authority, "https://api.example.com");
        assert_eq!(b.typ, TypPolicy::RequireAtJwt);
        assert_eq!(b.leeway, DEFAULT_LEEWAY);

        for (bad, needle) in [
            (vec![("IDWEB_API_AUDIENCE", "a")], "IDWEB_API_AUTHORITY"),
            (
                vec![("IDWEB_API_AUTHORITY", "https://x.example")],
                "IDWEB_API_AUDIENCE",
            ),
            (
                vec![
                    ("IDWEB_API_AUTHORITY", "https://x.example"),
                    ("IDWEB_API_AUDIENCE", "a"),
                    ("IDWEB_API_AUDEINCE", "a"),
                ],
                "IDWEB_API_AUDEINCE",
            ),
            (
                vec![
                    ("IDWEB_API_AUTHORITY", "https://x.example"),
                    ("IDWEB_API_AUDIENCE", "a"),
                    ("IDWEB_API_LEEWAY", "1m"),
                ],
                "IDWEB_API_LEEWAY",
            ),
            (
                vec![
                    ("IDWEB_API_AUTHORITY", "https://x.example"),
                    ("IDWEB_API_AUDIENCE", "a"),
                    ("IDWEB_API_TYP", "jwt"),
                ],
                "IDWEB_API_TYP",
            ),
        ] {
            let err = JwtBearerBuilder::from_vars(vars(&bad)).unwrap_err();
            assert!(err.to_string().contains(needle), "{err}");
        }
    }

    #[tokio::test]
    async fn invalid_settings_fail_before_any_request() {
        // An unreachable https authority: each check must fail before discovery.
        let base = || JwtBearer::builder("https://127.0.0.1:1").with_audience("api://todo");
        for (builder, needle) in [
            (JwtBearer::builder("https://127.0.0.1:1"), "with_audience"),
            (base().with_audience(" "), "with_audience"),
            (
                base().with_algorithms([Algorithm::HS256]),
                "with_algorithms",
            ),
            (base().with_algorithms([]), "with_algorithms"),
            (base().with_leeway(Duration::from_secs(301)), "with_leeway"),
            (base().with_max_token_length(0), "with_max_token_length"),
            (
                base().with_max_token_length(idweb::MAX_JWS_LEN + 1),
                "with_max_token_length",
            ),
            (base().with_realm("a\"b"), "with_realm"),
            (
                JwtBearer::builder("http://idp.example.com").with_audience("a"),
                "authority",
            ),
        ] {
            let err = builder.build().await.unwrap_err();
            assert!(err.to_string().contains(needle), "{needle}: {err}");
        }
        // Everything valid: now the discovery is what fails.
        let err = base().build().await.unwrap_err();
        assert!(matches!(err, BuildError::Provider(_)), "{err}");
    }
}
