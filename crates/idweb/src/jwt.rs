//! Verifying JWS-signed JWTs from the provider. Claim checks are done by the
//! callers with the injected clock; this module checks the header, the
//! algorithm allow-list and the signature.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, decode_header};
use serde_json::{Map, Value};

use crate::provider::{ASYMMETRIC_ALGORITHMS, Provider, ProviderError, SignatureError};

/// Largest token idweb will look at.
pub(crate) const MAX_JWT_LEN: usize = 16 * 1024;

/// The longest compact JWS [`Provider::verify_jws`] looks at, in bytes
/// (16 KiB); longer tokens are refused as malformed before any parsing.
pub const MAX_JWS_LEN: usize = MAX_JWT_LEN;

/// Why a token's signature could not be verified.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwsError {
    /// Not a compact JWS, or a header that cannot be parsed (this includes `alg: none`).
    #[error("the token is not a well-formed signed JWT")]
    Malformed,
    /// The header names an algorithm that is not on the allow-list.
    #[error("the token is signed with an algorithm that is not allowed ({0})")]
    DisallowedAlgorithm(String),
    /// The header has `crit` extensions idweb does not understand.
    #[error("the token header has critical extensions idweb does not understand")]
    CriticalHeader,
    /// No provider key matches.
    #[error(transparent)]
    Key(#[from] ProviderError),
    /// The signature does not verify with the provider's key.
    #[error("the token's signature is invalid")]
    BadSignature,
}

/// A verified token: its header fields of interest and its claims.
#[derive(Debug)]
pub(crate) struct Verified {
    pub(crate) alg: Algorithm,
    pub(crate) typ: Option<String>,
    pub(crate) claims: Map<String, Value>,
}

/// Verifies the signature of `token` with the provider's keys, accepting only `allowed` algorithms.
pub(crate) async fn verify(
    provider: &Provider,
    token: &str,
    allowed: &[Algorithm],
) -> Result<Verified, JwsError> {
    if token.len() > MAX_JWT_LEN {
        return Err(JwsError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwsError::Malformed);
    };
    // Each part is decoded once: the header here, the signature by the
    // verifier, the claims below (jsonwebtoken's `decode` would parse the
    // header three times and the claims twice, for checks idweb makes itself).
    // Only what is used past the key lookup is kept (jsonwebtoken's whole
    // header would sit in this future's state while it waits).
    let (alg, typ, kid) = {
        let header = decode_header(token).map_err(|_| {
            // `alg` values jsonwebtoken does not know (`none` among them) fail to parse.
            JwsError::Malformed
        })?;
        if !allowed.contains(&header.alg) {
            return Err(JwsError::DisallowedAlgorithm(format!("{:?}", header.alg)));
        }
        if header.crit.is_some() {
            return Err(JwsError::CriticalHeader);
        }
        (header.alg, header.typ, header.kid)
    };
    let key = provider.decoding_key(kid.as_deref(), alg).await?;
    // The signing input is the token up to its last dot.
    let message = &token[..header_b64.len() + 1 + payload_b64.len()];
    match key.verify(alg, message.as_bytes(), signature_b64) {
        Ok(()) => {}
        Err(SignatureError::Invalid) => return Err(JwsError::BadSignature),
        // A signature that is not base64url, or a key that does not fit the algorithm.
        Err(SignatureError::Malformed) => return Err(JwsError::Malformed),
    }
    let payload = URL_SAFE_NO_PAD
        .decode(payload_b64)
        .map_err(|_| JwsError::Malformed)?;
    let claims: Map<String, Value> =
        serde_json::from_slice(&payload).map_err(|_| JwsError::Malformed)?;
    Ok(Verified { alg, typ, claims })
}

/// A JWS whose signature [`Provider::verify_jws`] verified with one of the
/// provider's keys. Only the signature, the algorithm and the header were
/// checked: the claims (`iss`, `aud`, `exp`, ...) are the caller's to check.
///
/// Holds no part of the token itself, only its decoded header fields and claims.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct VerifiedJws {
    /// The signature algorithm (always an asymmetric one).
    pub algorithm: Algorithm,
    /// The header's `typ`, as sent (compare it case-insensitively, RFC 7515 §4.1.9).
    pub typ: Option<String>,
    /// The claims set (a JSON object).
    pub claims: Map<String, Value>,
}

/// A claim that must be a string.
pub(crate) fn str_claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    claims.get(name).and_then(Value::as_str)
}

/// A claim that must be a JSON number of seconds (integers; fractions are truncated).
pub(crate) fn time_claim(claims: &Map<String, Value>, name: &str) -> Option<i64> {
    match claims.get(name)? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        _ => None,
    }
}

/// The `aud` claim as a list (it may be a string or an array of strings).
pub(crate) fn audiences(claims: &Map<String, Value>) -> Option<Vec<&str>> {
    match claims.get("aud")? {
        Value::String(s) => Some(vec![s.as_str()]),
        Value::Array(items) => items.iter().map(Value::as_str).collect(),
        _ => None,
    }
}

impl Provider {
    /// Verifies the signature of a compact JWS with this provider's keys and
    /// returns its header fields and claims — for resource servers that
    /// validate access tokens with the same key cache as sign-in.
    ///
    /// The checks are those idweb applies to ID and logout tokens: at most
    /// [`MAX_JWS_LEN`](crate::MAX_JWS_LEN) bytes; a parseable header (so
    /// never `alg: none`); an algorithm that is both in `algorithms` and
    /// asymmetric (RS*, PS*, ES256, ES384, EdDSA — HS* and `none` are refused
    /// even when listed); no `crit` header; a key of the provider matching
    /// `kid` and `alg` — refetching the JWKS, rate-limited by
    /// [`with_min_refetch_interval`](Self::with_min_refetch_interval), when
    /// the `kid` is unknown; and a valid signature.
    ///
    /// No claim is checked: `iss`, `aud`, `exp`, `nbf`, `typ` and the rest
    /// are the caller's, with its own clock.
    ///
    /// # Errors
    /// [`JwsError`](crate::JwsError) says which check failed;
    /// [`JwsError::Key`](crate::JwsError::Key) carries
    /// [`ProviderError::UnknownKey`] when no key matches,
    /// [`ProviderError::KeyRefetchRateLimited`] when none matches and the
    /// keys may not be refetched yet, or
    /// [`ProviderError::Fetch`] when the refetch failed.
    pub async fn verify_jws(
        &self,
        token: &str,
        algorithms: &[Algorithm],
    ) -> Result<VerifiedJws, JwsError> {
        let allowed: Vec<Algorithm> = algorithms
            .iter()
            .copied()
            .filter(|a| ASYMMETRIC_ALGORITHMS.contains(a))
            .collect();
        let verified = verify(self, token, &allowed).await?;
        Ok(VerifiedJws {
            algorithm: verified.alg,
            typ: verified.typ,
            claims: verified.claims,
        })
    }
}
