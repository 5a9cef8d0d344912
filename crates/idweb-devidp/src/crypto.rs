//! Keys, randomness, hashing and compact JWS (RS256) signing/verification.

use aws_lc_rs::{
    constant_time, digest,
    rand::{self, SystemRandom},
    rsa,
    signature::{self, KeyPair as _},
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};

/// A cryptographic primitive failed (key generation, signing, randomness).
#[derive(Debug, thiserror::Error)]
#[error("cryptographic operation failed")]
pub(crate) struct CryptoError;

impl From<aws_lc_rs::error::Unspecified> for CryptoError {
    fn from(_: aws_lc_rs::error::Unspecified) -> Self {
        CryptoError
    }
}

impl From<aws_lc_rs::error::KeyRejected> for CryptoError {
    fn from(_: aws_lc_rs::error::KeyRejected) -> Self {
        CryptoError
    }
}

/// base64url without padding.
pub(crate) fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// Decodes base64url without padding.
pub(crate) fn b64_decode(data: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(data).ok()
}

/// SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA256, data).as_ref().to_vec()
}

/// A base64url-encoded SHA-256 of `data`: used as the map key for stored
/// codes and refresh tokens, so that the raw values are never kept.
pub(crate) fn token_hash(data: &str) -> String {
    b64(&sha256(data.as_bytes()))
}

/// A fresh random value of `len` bytes, base64url-encoded (URL safe).
pub(crate) fn random_string(len: usize) -> Result<String, CryptoError> {
    let mut buf = vec![0u8; len];
    rand::fill(&mut buf)?;
    Ok(b64(&buf))
}

/// Compares two secrets without leaking their contents through timing.
///
/// Both sides are hashed first so that the comparison is also independent of
/// their lengths.
pub(crate) fn secrets_equal(a: &str, b: &str) -> bool {
    constant_time::verify_slices_are_equal(&sha256(a.as_bytes()), &sha256(b.as_bytes())).is_ok()
}

/// `at_hash`: base64url of the left half of SHA-256 of the access token.
pub(crate) fn at_hash(access_token: &str) -> String {
    let hash = sha256(access_token.as_bytes());
    b64(hash.get(..16).unwrap_or(&hash))
}

/// An RSA-2048 signing key with its JWK form.
pub(crate) struct SigningKey {
    kid: String,
    pair: rsa::KeyPair,
    n: String,
    e: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates a new key; its `kid` is the RFC 7638 JWK thumbprint.
    pub(crate) fn generate() -> Result<Self, CryptoError> {
        Ok(Self::from_pair(rsa::KeyPair::generate(
            rsa::KeySize::Rsa2048,
        )?))
    }

    /// Reads a key saved with [`to_pkcs8`](Self::to_pkcs8).
    pub(crate) fn from_pkcs8(der: &[u8]) -> Result<Self, CryptoError> {
        Ok(Self::from_pair(rsa::KeyPair::from_pkcs8(der)?))
    }

    /// The private key as PKCS#8 DER (for the provider's state file).
    pub(crate) fn to_pkcs8(&self) -> Result<Vec<u8>, CryptoError> {
        use aws_lc_rs::encoding::AsDer as _;
        let der: aws_lc_rs::encoding::Pkcs8V1Der<'static> = self.pair.as_der()?;
        Ok(der.as_ref().to_vec())
    }

    fn from_pair(pair: rsa::KeyPair) -> Self {
        let public = pair.public_key();
        let n = b64(public.modulus().big_endian_without_leading_zero());
        let e = b64(public.exponent().big_endian_without_leading_zero());
        let thumbprint_input = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
        let kid = b64(&sha256(thumbprint_input.as_bytes()));
        SigningKey { kid, pair, n, e }
    }

    /// The key id.
    pub(crate) fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK.
    pub(crate) fn jwk(&self) -> Value {
        json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": self.n,
            "e": self.e,
        })
    }

    /// Signs `claims` as a compact JWS with header `{"alg":"RS256","typ":typ,"kid":kid}`.
    pub(crate) fn sign_jwt(&self, typ: &str, claims: &Value) -> Result<String, CryptoError> {
        let header = json!({ "alg": "RS256", "typ": typ, "kid": self.kid });
        self.sign_jws(&header, claims)
    }

    /// Signs `payload` with RS256 under exactly the given `header` (which
    /// should say `"alg":"RS256"`; nothing is checked or added).
    pub(crate) fn sign_jws(&self, header: &Value, payload: &Value) -> Result<String, CryptoError> {
        let header = serde_json::to_vec(header).map_err(|_| CryptoError)?;
        let payload = serde_json::to_vec(payload).map_err(|_| CryptoError)?;
        let signing_input = format!("{}.{}", b64(&header), b64(&payload));
        let mut sig = vec![0u8; self.pair.public_modulus_len()];
        self.pair.sign(
            &signature::RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            signing_input.as_bytes(),
            &mut sig,
        )?;
        Ok(format!("{signing_input}.{}", b64(&sig)))
    }

    fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        signature::UnparsedPublicKey::new(
            &signature::RSA_PKCS1_2048_8192_SHA256,
            self.pair.public_key().as_ref(),
        )
        .verify(message, sig)
        .is_ok()
    }
}

/// A JWT whose RS256 signature was verified by one of our keys.
#[derive(Debug)]
pub(crate) struct VerifiedJwt {
    pub(crate) typ: Option<String>,
    pub(crate) claims: Map<String, Value>,
}

/// Verifies a compact JWS against `keys` (by `kid`) and returns its header
/// `typ` and claims. Returns `None` for anything malformed or unverifiable.
pub(crate) fn verify_jwt<'a>(
    token: &str,
    keys: impl IntoIterator<Item = &'a SigningKey>,
) -> Option<VerifiedJwt> {
    let mut parts = token.split('.');
    let (header_b64, payload_b64, sig_b64) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header: Map<String, Value> = serde_json::from_slice(&b64_decode(header_b64)?).ok()?;
    if header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return None;
    }
    let kid = header.get("kid").and_then(Value::as_str)?;
    let key = keys.into_iter().find(|k| k.kid() == kid)?;
    let sig = b64_decode(sig_b64)?;
    let signing_input = format!("{header_b64}.{payload_b64}");
    if !key.verify(signing_input.as_bytes(), &sig) {
        return None;
    }
    let claims: Map<String, Value> = serde_json::from_slice(&b64_decode(payload_b64)?).ok()?;
    let typ = header.get("typ").and_then(Value::as_str).map(str::to_owned);
    Some(VerifiedJwt { typ, claims })
}

/// Lower-case hex encoding.
pub(crate) fn hex(data: &[u8]) -> String {
    use std::fmt::Write as _;
    data.iter()
        .fold(String::with_capacity(data.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
