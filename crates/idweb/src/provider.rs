//! Provider metadata (OpenID Connect Discovery 1.0) and the provider's signing
//! keys, cached and refetched when a token names a key id we do not know.

use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, SystemTime};

use aws_lc_rs::signature::{self as sig, ParsedPublicKey, RsaPublicKeyComponents};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::http::{HttpError, get_json};
use crate::tenant::{self, IssuerError, IssuerPolicy, TenantTemplate};
use crate::time::Clock;

/// The subset of the provider's discovery document that idweb uses.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProviderMetadata {
    /// The issuer identifier; equal to the configured authority, or for a
    /// multi-tenant authority a template such as
    /// `https://login.microsoftonline.com/{tenantid}/v2.0`.
    pub issuer: String,
    /// Where browsers are sent to sign in.
    pub authorization_endpoint: String,
    /// Where codes and refresh tokens are redeemed.
    pub token_endpoint: String,
    /// The provider's signing keys.
    pub jwks_uri: String,
    /// RP-Initiated Logout endpoint, when the provider has one.
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
    /// RFC 7009 token revocation endpoint, when the provider has one.
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    /// UserInfo endpoint, when the provider has one.
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    /// Algorithms the provider signs ID tokens with.
    #[serde(default)]
    pub id_token_signing_alg_values_supported: Vec<String>,
    /// Client authentication methods the token endpoint accepts.
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    /// PKCE methods the provider supports.
    #[serde(default)]
    pub code_challenge_methods_supported: Option<Vec<String>>,
    /// Whether authorization responses carry `iss` (RFC 9207).
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
}

/// Why discovery or a key lookup failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The discovery document or the JWKS could not be fetched or parsed.
    #[error("cannot fetch provider metadata")]
    Fetch(#[from] HttpError),
    /// The discovery document names another issuer than the configured authority.
    #[error(
        "the provider's discovery document says its issuer is `{actual}`, but the configured authority is `{expected}`; set the authority to exactly the issuer"
    )]
    IssuerMismatch {
        /// The configured authority.
        expected: String,
        /// The `issuer` in the discovery document.
        actual: String,
    },
    /// An endpoint in the discovery document is not an acceptable URL.
    #[error("the provider's `{field}` is not an acceptable URL: {reason}")]
    BadEndpoint {
        /// The metadata field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// No key of the provider matches the token's `kid` and algorithm, even after refetching the JWKS.
    #[error("no signing key of the provider matches key id {kid:?} and algorithm {alg:?}")]
    UnknownKey {
        /// The key id from the token header.
        kid: Option<String>,
        /// The algorithm from the token header.
        alg: Algorithm,
    },
    /// No key of the provider matches the token's `kid`, and the JWKS was
    /// refetched too recently to be fetched again: the provider may have
    /// just rotated its keys. A transient condition: retry after `retry_after`.
    #[error(
        "no signing key of the provider matches key id {kid:?}; the keys were refetched too recently to look again (retry in {retry_after:?})"
    )]
    KeyRefetchRateLimited {
        /// The key id from the token header.
        kid: Option<String>,
        /// When the keys may be fetched again.
        retry_after: Duration,
    },
}

impl ProviderError {
    /// When the failure may go away by itself (the keys could not be
    /// fetched, or may not be refetched yet), how long to wait before
    /// trying again; `None` for a final answer.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::KeyRefetchRateLimited { retry_after, .. } => Some(*retry_after),
            ProviderError::Fetch(_) => Some(Duration::from_secs(5)),
            _ => None,
        }
    }
}

/// One of the provider's signing keys.
#[derive(Debug)]
pub(crate) struct ProviderKey {
    kid: Option<String>,
    alg: Option<KeyAlgorithm>,
    key: DecodingKey,
    /// The key parsed for each algorithm of [`ASYMMETRIC_ALGORITHMS`] it is
    /// used with, on first use (`None`: it does not fit that algorithm).
    /// Parsing an RSA key (its Montgomery constants) costs about a sixth of
    /// a signature check; the key set lives for hours.
    parsed: [OnceLock<Option<ParsedPublicKey>>; ASYMMETRIC_ALGORITHMS.len()],
}

/// Why [`ProviderKey::verify`] refused a signature.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SignatureError {
    /// The signature is not base64url, or the key does not fit the algorithm.
    Malformed,
    /// The signature does not verify.
    Invalid,
}

impl ProviderKey {
    fn new(kid: Option<String>, alg: Option<KeyAlgorithm>, key: DecodingKey) -> Self {
        Self {
            kid,
            alg,
            key,
            parsed: Default::default(),
        }
    }

    /// Checks `signature_b64` (base64url, as in a compact JWS) over
    /// `message` with this key and `alg` — what
    /// `jsonwebtoken::crypto::verify` checks, with the key parsed once.
    pub(crate) fn verify(
        &self,
        alg: Algorithm,
        message: &[u8],
        signature_b64: &str,
    ) -> Result<(), SignatureError> {
        use base64::Engine as _;
        let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(signature_b64)
            .map_err(|_| SignatureError::Malformed)?;
        let i = ASYMMETRIC_ALGORITHMS
            .iter()
            .position(|a| *a == alg)
            .ok_or(SignatureError::Malformed)?;
        let parsed = self.parsed[i]
            .get_or_init(|| parse_key(&self.key, alg))
            .as_ref()
            .ok_or(SignatureError::Malformed)?;
        parsed
            .verify_sig(message, &signature)
            .map_err(|_| SignatureError::Invalid)
    }
}

/// `key` parsed for `alg` with the verification parameters jsonwebtoken
/// uses for it; `None` when the key does not fit.
fn parse_key(key: &DecodingKey, alg: Algorithm) -> Option<ParsedPublicKey> {
    let rsa = |params: &'static sig::RsaParameters| match key.kind() {
        DecodingKeyKind::RsaModulusExponent { n, e } => RsaPublicKeyComponents { n, e }
            .to_parsed_public_key(params)
            .ok(),
        DecodingKeyKind::SecretOrDer(der) => ParsedPublicKey::new(params, der).ok(),
    };
    let raw = |params: &'static dyn sig::VerificationAlgorithm| match key.kind() {
        DecodingKeyKind::SecretOrDer(bytes) => ParsedPublicKey::new(params, bytes).ok(),
        DecodingKeyKind::RsaModulusExponent { .. } => None,
    };
    match alg {
        Algorithm::RS256 => rsa(&sig::RSA_PKCS1_2048_8192_SHA256),
        Algorithm::RS384 => rsa(&sig::RSA_PKCS1_2048_8192_SHA384),
        Algorithm::RS512 => rsa(&sig::RSA_PKCS1_2048_8192_SHA512),
        Algorithm::PS256 => rsa(&sig::RSA_PSS_2048_8192_SHA256),
        Algorithm::PS384 => rsa(&sig::RSA_PSS_2048_8192_SHA384),
        Algorithm::PS512 => rsa(&sig::RSA_PSS_2048_8192_SHA512),
        Algorithm::ES256 => raw(&sig::ECDSA_P256_SHA256_FIXED),
        Algorithm::ES384 => raw(&sig::ECDSA_P384_SHA384_FIXED),
        Algorithm::EdDSA => raw(&sig::ED25519),
        _ => None,
    }
}

#[derive(Debug, Default)]
struct KeyState {
    keys: Vec<Arc<ProviderKey>>,
    /// When an unknown key id last caused a refetch (the fetch at discovery does not count).
    last_refetch: Option<SystemTime>,
}

/// A provider: its metadata and a cache of its signing keys.
///
/// When a token carries a `kid` that is not in the cache, the JWKS is fetched
/// again — at most once per [`Provider::with_min_refetch_interval`] — so key
/// rotation at the provider does not break sign-in, and a flood of tokens with
/// made-up key ids does not become a flood of requests to the provider.
#[derive(Debug)]
pub struct Provider {
    metadata: ProviderMetadata,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    keys: RwLock<KeyState>,
    refetch: tokio::sync::Mutex<()>,
    min_refetch_interval: Duration,
    /// How tokens must name their issuer (fixed, or a tenant template).
    issuer_policy: IssuerPolicy,
    /// Lower-cased tenant ids whose tokens are accepted; `None` = any.
    allowed_tenants: Option<std::collections::BTreeSet<String>>,
}

impl Provider {
    /// Fetches `{authority}/.well-known/openid-configuration` and the JWKS,
    /// and checks that the document's issuer is exactly `authority` — or,
    /// for a multi-tenant authority (Entra's `common`, `organizations`), a
    /// template carrying `{tenantid}` that is the authority with the tenant
    /// segment replaced; tokens are then checked against the template filled
    /// in with their own `tid` (see [`Provider::check_issuer`]).
    pub async fn discover(
        authority: &Url,
        http: reqwest::Client,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ProviderError> {
        let base = authority.as_str().trim_end_matches('/');
        let url = format!("{base}/.well-known/openid-configuration");
        let metadata: ProviderMetadata = get_json(&http, &url).await?;
        let expected = authority.as_str();
        let issuer_policy = if metadata.issuer == expected || metadata.issuer == base {
            IssuerPolicy::Fixed(metadata.issuer.clone())
        } else if let Some(template) = TenantTemplate::matching(&metadata.issuer, base) {
            IssuerPolicy::Template(template)
        } else {
            return Err(ProviderError::IssuerMismatch {
                expected: base.to_string(),
                actual: metadata.issuer.clone(),
            });
        };
        let secure = authority.scheme() == "https";
        for (field, value) in [
            (
                "authorization_endpoint",
                Some(&metadata.authorization_endpoint),
            ),
            ("token_endpoint", Some(&metadata.token_endpoint)),
            ("jwks_uri", Some(&metadata.jwks_uri)),
            (
                "end_session_endpoint",
                metadata.end_session_endpoint.as_ref(),
            ),
            ("revocation_endpoint", metadata.revocation_endpoint.as_ref()),
        ] {
            if let Some(v) = value {
                check_endpoint(field, v, secure)?;
            }
        }
        let provider = Self {
            metadata,
            http,
            clock,
            keys: RwLock::new(KeyState::default()),
            refetch: tokio::sync::Mutex::new(()),
            min_refetch_interval: Duration::from_secs(30),
            issuer_policy,
            allowed_tenants: None,
        };
        provider.fetch_keys().await?;
        Ok(provider)
    }

    /// A provider that never goes to the network, for fuzzing: `metadata`
    /// and the keys of `jwks` as given, the issuer policy derived as at
    /// discovery from `authority`, and an unknown `kid` always answered as
    /// rate-limited (the refetch window never opens).
    #[cfg(feature = "fuzzing")]
    pub(crate) fn offline(
        authority: &str,
        metadata: ProviderMetadata,
        jwks: &[serde_json::Value],
        http: reqwest::Client,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let base = authority.trim_end_matches('/');
        let issuer_policy = match TenantTemplate::matching(&metadata.issuer, base) {
            Some(template) => IssuerPolicy::Template(template),
            None => IssuerPolicy::Fixed(metadata.issuer.clone()),
        };
        let keys = jwks
            .iter()
            .filter_map(|v| serde_json::from_value::<Jwk>(v.clone()).ok())
            .filter_map(|jwk| usable_key(&jwk))
            .map(Arc::new)
            .collect();
        let now = clock.now();
        Self {
            metadata,
            http,
            clock,
            keys: RwLock::new(KeyState {
                keys,
                last_refetch: Some(now),
            }),
            refetch: tokio::sync::Mutex::new(()),
            min_refetch_interval: Duration::MAX,
            issuer_policy,
            allowed_tenants: None,
        }
    }

    /// Sets the least time between two JWKS fetches caused by unknown key ids.
    /// Default 30 seconds.
    pub fn with_min_refetch_interval(mut self, interval: Duration) -> Self {
        self.min_refetch_interval = interval;
        self
    }

    /// Accepts only tokens whose `tid` is one of `tenants` (tenant ids,
    /// compared case-insensitively). Default: every tenant the issuer
    /// accepts. With an allow-list, tokens without a `tid` are refused even
    /// from a single-tenant issuer.
    pub fn with_allowed_tenants<I, S>(mut self, tenants: Option<I>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.allowed_tenants = tenants.map(|t| {
            t.into_iter()
                .map(|s| s.as_ref().trim().to_ascii_lowercase())
                .collect()
        });
        self
    }

    /// Whether the issuer is a template (`{tenantid}`): each token's issuer
    /// is then the template with the token's own `tid`.
    pub fn is_multi_tenant(&self) -> bool {
        matches!(self.issuer_policy, IssuerPolicy::Template(_))
    }

    /// The allowed tenant ids (lower case), when an allow-list is set.
    pub fn allowed_tenants(&self) -> Option<impl Iterator<Item = &str>> {
        self.allowed_tenants
            .as_ref()
            .map(|t| t.iter().map(String::as_str))
    }

    /// The issuer of tenant `tid` for a multi-tenant provider (the template
    /// filled in), when `tid` is a tenant id; for a single-tenant provider,
    /// its issuer.
    pub fn issuer_for_tenant(&self, tid: &str) -> Option<String> {
        match &self.issuer_policy {
            IssuerPolicy::Fixed(issuer) => Some(issuer.clone()),
            IssuerPolicy::Template(t) => {
                tenant::is_tenant_id(tid).then(|| t.issuer_for(&tid.to_ascii_lowercase()))
            }
        }
    }

    /// Checks a token's `iss` (and `tid`): for a single-tenant provider,
    /// `iss` must be the issuer; for a multi-tenant one, `tid` must be a
    /// tenant id and `iss` exactly the template with that `tid` — and under
    /// an `organizations` authority not the personal-account tenant, under
    /// an authority naming a tenant id that tenant. With an allow-list
    /// ([`with_allowed_tenants`](Self::with_allowed_tenants)), `tid` must
    /// also be on it.
    ///
    /// # Errors
    /// [`IssuerError`] says which rule failed.
    pub fn check_issuer(&self, iss: &str, tid: Option<&str>) -> Result<(), IssuerError> {
        tenant::check(&self.issuer_policy, self.allowed_tenants.as_ref(), iss, tid)
    }

    /// Whether `iss` could be an issuer of this provider: the issuer, or for
    /// a multi-tenant provider the template filled in with a tenant id
    /// (allowed, when there is an allow-list). For values that come without
    /// a token to check them against (RFC 9207 `iss`, front-channel `iss`).
    pub fn accepts_issuer(&self, iss: &str) -> bool {
        match &self.issuer_policy {
            IssuerPolicy::Fixed(issuer) => iss == issuer,
            IssuerPolicy::Template(t) => {
                let template = t.template();
                let Some((prefix, suffix)) = template.split_once(tenant::TENANT_PLACEHOLDER) else {
                    return false;
                };
                iss.strip_prefix(prefix)
                    .and_then(|rest| rest.strip_suffix(suffix))
                    .is_some_and(|tid| self.check_issuer(iss, Some(tid)).is_ok())
            }
        }
    }

    /// Whether this provider was discovered for `authority`: its issuer is
    /// the authority, or a `{tenantid}` template of it.
    pub fn serves_authority(&self, authority: &Url) -> bool {
        let base = authority.as_str().trim_end_matches('/');
        let issuer = self.issuer();
        issuer == authority.as_str()
            || issuer == base
            || TenantTemplate::matching(issuer, base).is_some()
    }

    /// The discovery metadata.
    pub fn metadata(&self) -> &ProviderMetadata {
        &self.metadata
    }

    /// The issuer identifier.
    pub fn issuer(&self) -> &str {
        &self.metadata.issuer
    }

    async fn fetch_keys(&self) -> Result<(), ProviderError> {
        #[derive(Deserialize)]
        struct RawSet {
            keys: Vec<serde_json::Value>,
        }
        let set: RawSet = get_json(&self.http, &self.metadata.jwks_uri).await?;
        let keys: Vec<Arc<ProviderKey>> = set
            .keys
            .into_iter()
            .filter_map(|v| serde_json::from_value::<Jwk>(v).ok())
            .filter_map(|jwk| usable_key(&jwk))
            .map(Arc::new)
            .collect();
        tracing::debug!(keys = keys.len(), jwks_uri = %self.metadata.jwks_uri, "fetched provider keys");
        self.keys.write().unwrap_or_else(|e| e.into_inner()).keys = keys;
        Ok(())
    }

    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<ProviderKey>> {
        let state = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let mut candidates = state.keys.iter().filter(|k| key_fits(k, alg));
        match kid {
            Some(kid) => candidates.find(|k| k.kid.as_deref() == Some(kid)).cloned(),
            None => {
                let first = candidates.next()?;
                // Without a kid, the key must be unambiguous.
                candidates.next().is_none().then(|| first.clone())
            }
        }
    }

    /// The key to verify a token signed with `alg` under key id `kid`,
    /// refetching the JWKS (rate-limited) when the key id is unknown.
    pub(crate) async fn decoding_key(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<ProviderKey>, ProviderError> {
        if let Some(key) = self.find(kid, alg) {
            return Ok(key);
        }
        // The refetch (an HTTP request) boxed: the future of every
        // verification stays small.
        Box::pin(self.refetch_key(kid, alg)).await
    }

    /// [`decoding_key`](Self::decoding_key) for a key not among the known
    /// ones: refetches the JWKS (one task at a time, rate-limited).
    async fn refetch_key(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<ProviderKey>, ProviderError> {
        let unknown = || ProviderError::UnknownKey {
            kid: kid.map(str::to_string),
            alg,
        };
        let _guard = self.refetch.lock().await;
        // Another task may have refetched while we waited.
        if let Some(key) = self.find(kid, alg) {
            return Ok(key);
        }
        let now = self.clock.now();
        {
            let mut state = self.keys.write().unwrap_or_else(|e| e.into_inner());
            if let Some(last) = state.last_refetch {
                let since = now.duration_since(last).unwrap_or_default();
                if since < self.min_refetch_interval {
                    tracing::debug!(?kid, "unknown key id; JWKS refetch rate-limited");
                    return Err(ProviderError::KeyRefetchRateLimited {
                        kid: kid.map(str::to_string),
                        retry_after: self.min_refetch_interval.saturating_sub(since),
                    });
                }
            }
            state.last_refetch = Some(now);
        }
        tracing::info!(?kid, "unknown key id; refetching the provider's JWKS");
        self.fetch_keys().await?;
        self.find(kid, alg).ok_or_else(unknown)
    }
}

fn check_endpoint(field: &'static str, value: &str, secure: bool) -> Result<(), ProviderError> {
    let url = Url::parse(value).map_err(|e| ProviderError::BadEndpoint {
        field,
        reason: e.to_string(),
    })?;
    let ok = match url.scheme() {
        "https" => true,
        "http" => !secure && crate::config::is_loopback(&url),
        _ => false,
    };
    if !ok {
        return Err(ProviderError::BadEndpoint {
            field,
            reason: "must be https (http only for a loopback development provider)".into(),
        });
    }
    Ok(())
}

/// Only asymmetric signature keys are usable; symmetric (`oct`) keys from a
/// JWKS are never trusted.
fn usable_key(jwk: &Jwk) -> Option<ProviderKey> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_)
        | AlgorithmParameters::EllipticCurve(_)
        | AlgorithmParameters::OctetKeyPair(_) => {}
        _ => return None,
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(ProviderKey::new(
        jwk.common.key_id.clone(),
        jwk.common.key_algorithm,
        key,
    ))
}

fn key_fits(key: &ProviderKey, alg: Algorithm) -> bool {
    if let Some(ka) = key.alg
        && ka != KeyAlgorithm::from(alg)
    {
        return false;
    }
    key.key.family() == alg.family()
}

/// Algorithms idweb accepts for tokens signed by a provider: asymmetric only.
pub(crate) const ASYMMETRIC_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

impl Provider {
    /// The asymmetric algorithms idweb accepts on tokens signed by a
    /// provider: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 and
    /// EdDSA.
    pub fn asymmetric_algorithms() -> &'static [Algorithm] {
        ASYMMETRIC_ALGORITHMS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    const MESSAGE: &[u8] = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9";

    /// `ProviderKey::verify` answers what `jsonwebtoken::crypto::verify`
    /// answers: a valid signature passes, a changed one or a changed
    /// message is `Invalid`, a key of another family is `Malformed`.
    fn agrees_with_jsonwebtoken(key: &DecodingKey, alg: Algorithm, signature: &[u8]) {
        let pk = ProviderKey::new(None, None, key.clone());
        let reference =
            |sig: &str, msg: &[u8]| match jsonwebtoken::crypto::verify(sig, msg, key, alg) {
                Ok(true) => Ok(()),
                Ok(false) => Err(SignatureError::Invalid),
                Err(_) => Err(SignatureError::Malformed),
            };
        let good = URL_SAFE_NO_PAD.encode(signature);
        let mut flipped = signature.to_vec();
        flipped[signature.len() / 2] ^= 1;
        let bad = URL_SAFE_NO_PAD.encode(&flipped);
        let other_message = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJib2IifQ";
        let cases: [(&str, &[u8], Result<(), SignatureError>); 4] = [
            (&good, MESSAGE, Ok(())),
            (&bad, MESSAGE, Err(SignatureError::Invalid)),
            (&good, other_message, Err(SignatureError::Invalid)),
            ("not base64url!", MESSAGE, Err(SignatureError::Malformed)),
        ];
        // Twice: the second time the parsed key is reused.
        for _ in 0..2 {
            for (sig, msg, want) in &cases {
                assert_eq!(&pk.verify(alg, msg, sig), want, "{alg:?}");
                assert_eq!(&reference(sig, msg), want, "jsonwebtoken, {alg:?}");
            }
        }
    }

    fn rsa_key() -> (RsaKeyPair, DecodingKey) {
        let pair = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let public = pair.public_key();
        let key = DecodingKey::from_rsa_raw_components(
            public.modulus().big_endian_without_leading_zero(),
            public.exponent().big_endian_without_leading_zero(),
        );
        (pair, key)
    }

    #[test]
    fn rsa_signatures_verify_as_jsonwebtoken_verifies_them() {
        let (pair, key) = rsa_key();
        let rng = SystemRandom::new();
        for (alg, padding) in [
            (
                Algorithm::RS256,
                &sig::RSA_PKCS1_SHA256 as &dyn sig::RsaEncoding,
            ),
            (Algorithm::RS512, &sig::RSA_PKCS1_SHA512),
            (Algorithm::PS256, &sig::RSA_PSS_SHA256),
            (Algorithm::PS384, &sig::RSA_PSS_SHA384),
        ] {
            let mut signature = vec![0; pair.public_modulus_len()];
            pair.sign(padding, &rng, MESSAGE, &mut signature).unwrap();
            agrees_with_jsonwebtoken(&key, alg, &signature);
        }
        // The same key given as DER (jsonwebtoken's other RSA form).
        let der = DecodingKey::from_rsa_der(pair.public_key().as_ref());
        let mut signature = vec![0; pair.public_modulus_len()];
        pair.sign(&sig::RSA_PKCS1_SHA256, &rng, MESSAGE, &mut signature)
            .unwrap();
        agrees_with_jsonwebtoken(&der, Algorithm::RS256, &signature);
    }

    #[test]
    fn ec_and_ed25519_signatures_verify_as_jsonwebtoken_verifies_them() {
        let rng = SystemRandom::new();
        for (alg, signing) in [
            (Algorithm::ES256, &sig::ECDSA_P256_SHA256_FIXED_SIGNING),
            (Algorithm::ES384, &sig::ECDSA_P384_SHA384_FIXED_SIGNING),
        ] {
            let pair = EcdsaKeyPair::generate(signing).unwrap();
            let point = pair.public_key().as_ref().to_vec();
            let half = (point.len() - 1) / 2;
            let key = DecodingKey::from_ec_components(
                &URL_SAFE_NO_PAD.encode(&point[1..=half]),
                &URL_SAFE_NO_PAD.encode(&point[half + 1..]),
            )
            .unwrap();
            let signature = pair.sign(&rng, MESSAGE).unwrap();
            agrees_with_jsonwebtoken(&key, alg, signature.as_ref());
        }
        let pair = Ed25519KeyPair::generate().unwrap();
        let key =
            DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()))
                .unwrap();
        agrees_with_jsonwebtoken(&key, Algorithm::EdDSA, pair.sign(MESSAGE).as_ref());
    }

    #[test]
    fn a_key_of_another_family_is_refused_as_malformed() {
        let (pair, rsa) = rsa_key();
        let mut signature = vec![0; pair.public_modulus_len()];
        pair.sign(
            &sig::RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            MESSAGE,
            &mut signature,
        )
        .unwrap();
        let good = URL_SAFE_NO_PAD.encode(&signature);
        let pk = ProviderKey::new(None, None, rsa);
        assert_eq!(
            pk.verify(Algorithm::ES256, MESSAGE, &good),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            pk.verify(Algorithm::HS256, MESSAGE, &good),
            Err(SignatureError::Malformed)
        );
        // Still good for the algorithm it fits.
        assert_eq!(pk.verify(Algorithm::RS256, MESSAGE, &good), Ok(()));
    }
}
