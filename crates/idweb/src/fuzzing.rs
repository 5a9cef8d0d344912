//! Entry points for the fuzz targets in `fuzz/` and for the replay of their
//! corpus by an ordinary test: each function feeds arbitrary bytes to the
//! same parsing code idweb runs on outside input or persisted data.
//!
//! Compiled only with the `fuzzing` feature; not part of the API. Each
//! function panics when an invariant breaks (a round trip that does not
//! round-trip); any other panic is a bug in the code under test.

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::config::LogoutTokenPolicy;
use crate::crypto::Sealer;
use crate::keys::CacheKeys;
use crate::provider::{Provider, ProviderMetadata};
use crate::secret::Secret;
use crate::time::{Clock, ManualClock};

/// The time the fixtures' clock stands at (Unix seconds).
pub const NOW: i64 = 1_700_000_000;

/// The client id the token checks expect.
pub const CLIENT_ID: &str = "fuzz-client";

/// A public P-256 key (`kid` `fuzz`, ES256) the fixture providers trust.
const JWK_X: &str = "pGJfCBEp_lrD-HL5rI9ouyc5phMHPIgYUAXWmmwku68";
const JWK_Y: &str = "0zw6eMWOElJgaWEzKBJ9NxfuBeQ-vlXz4TcgygpcltQ";

struct Fixture {
    /// A single-tenant provider (`https://op.example`).
    fixed: Provider,
    /// A multi-tenant one (`https://login.example/{tenantid}/v2.0`).
    multi: Provider,
    sealer: Sealer,
    keys: CacheKeys,
}

fn metadata(issuer: &str) -> Option<ProviderMetadata> {
    serde_json::from_value(serde_json::json!({
        "issuer": issuer,
        "authorization_endpoint": "https://op.example/authorize",
        "token_endpoint": "https://op.example/token",
        "jwks_uri": "https://op.example/jwks",
        "id_token_signing_alg_values_supported": ["ES256", "RS256", "EdDSA"],
    }))
    .ok()
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let jwks = [
            serde_json::json!({"kty": "EC", "crv": "P-256", "kid": "fuzz", "alg": "ES256",
                               "use": "sig", "x": JWK_X, "y": JWK_Y}),
            serde_json::json!({"kty": "oct", "kid": "sym", "k": "c2VjcmV0"}),
        ];
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::at_unix(NOW.unsigned_abs()));
        let http = reqwest::Client::new();
        let provider = |authority: &str, issuer: &str| {
            let Some(m) = metadata(issuer) else {
                unreachable!("the fixture's metadata is valid")
            };
            Provider::offline(authority, m, &jwks, http.clone(), clock.clone())
        };
        let keys = match CacheKeys::parse("k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=") {
            Ok(k) => k,
            Err(_) => unreachable!("the fixture's key list is valid"),
        };
        Fixture {
            fixed: provider("https://op.example", "https://op.example"),
            multi: provider(
                "https://login.example/common/v2.0",
                "https://login.example/{tenantid}/v2.0",
            ),
            sealer: Sealer::new(&[7u8; 64]),
            keys,
        }
    })
}

/// Runs a future that must not wait (the fixtures never go to the network).
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("an offline check waited for something"),
    }
}

/// The claims of a compact JWS, decoded without checking anything.
fn payload(token: &str) -> Option<Map<String, Value>> {
    let part = token.split('.').nth(1)?;
    let json = URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&json).ok()
}

fn providers() -> [&'static Provider; 2] {
    let f = fixture();
    [&f.fixed, &f.multi]
}

/// A logout token: the header and signature checks with the fixture
/// providers' keys, then the claim checks of Back-Channel Logout §2.6 on
/// its (unverified) claims, with the default and the lenient policy.
pub fn logout_token(data: &[u8]) {
    let token = String::from_utf8_lossy(data);
    let lenient = LogoutTokenPolicy {
        require_exp: false,
        ..LogoutTokenPolicy::default()
    };
    for provider in providers() {
        for policy in [LogoutTokenPolicy::default(), lenient] {
            let _ = ready(crate::signout::validate_logout_token(
                provider, CLIENT_ID, &token, &policy, NOW,
            ));
        }
        if let Some(claims) = payload(&token) {
            let issuer = |iss: &str, tid: Option<&str>| provider.check_issuer(iss, tid);
            for policy in [LogoutTokenPolicy::default(), lenient] {
                if let Ok(request) =
                    crate::signout::check_claims(&claims, &issuer, CLIENT_ID, &policy, NOW)
                {
                    assert!(request.sub.is_some() || request.sid.is_some());
                    let _ = request.selector();
                }
            }
        }
    }
}

/// An ID token: the header and signature checks, then the claim checks of
/// OpenID Connect Core §3.1.3.7 on its (unverified) claims, with and
/// without a nonce and an access token for `at_hash`.
pub fn id_token(data: &[u8]) {
    let token = String::from_utf8_lossy(data);
    let access_token = Secret::new("an-access-token".to_string());
    for provider in providers() {
        let algs = crate::signin::id_token_algorithms(provider);
        let _ = ready(crate::jwt::verify(provider, &token, &algs));
        let Some(claims) = payload(&token) else {
            continue;
        };
        for (nonce, at) in [(None, None), (Some("n-0S6_WzA2Mj"), Some(&access_token))] {
            let expect = crate::signin::IdTokenExpectations {
                client_id: CLIENT_ID,
                nonce,
                access_token: at,
                now: NOW,
                skew: 300,
                max_age: 3600,
            };
            for alg in [
                jsonwebtoken::Algorithm::ES256,
                jsonwebtoken::Algorithm::RS384,
                jsonwebtoken::Algorithm::EdDSA,
            ] {
                let _ = crate::signin::check_id_token_claims(provider, alg, &claims, &expect);
            }
        }
    }
}

/// A sealed cookie value: opened for each purpose idweb seals cookies for
/// (session, pending sign-in, pending sign-out) and, when it opens, parsed
/// as that cookie's content; and the bytes themselves sealed and opened
/// again, which must give them back and must not open for another purpose.
pub fn sealed_cookie(data: &[u8]) {
    let sealer = &fixture().sealer;
    let text = String::from_utf8_lossy(data);
    for purpose in [
        crate::sessions::SESSION_PURPOSE,
        crate::signin::PENDING_PURPOSE,
        crate::signout::SIGN_OUT_PURPOSE,
    ] {
        let _ = sealer.open(purpose, &text);
    }
    // What follows a successful open: the content parsers.
    let _ = serde_json::from_slice::<crate::signin::Pending>(data);
    let _ = serde_json::from_slice::<crate::signout::PendingSignOut>(data);
    let _ = String::from_utf8(data.to_vec()).map(crate::session::SessionId::from_string);
    if data.len() <= 4096 {
        let sealed = sealer.seal(crate::signin::PENDING_PURPOSE, data);
        assert_eq!(
            sealer
                .open(crate::signin::PENDING_PURPOSE, &sealed)
                .as_deref(),
            Some(data),
            "a sealed value opens to itself"
        );
        assert!(
            sealer
                .open(crate::sessions::SESSION_PURPOSE, &sealed)
                .is_none()
        );
    }
}

/// A front-channel request's `iss` and `sid` (as the web layer parsed them
/// from the query): the checks that pick the issuers to sign out, with a
/// single-tenant and a multi-tenant provider.
pub fn front_channel(iss: Option<&str>, sid: Option<&str>) {
    for provider in providers() {
        if let Ok((issuers, sid)) = crate::signout::front_channel_selectors(provider, iss, sid) {
            assert!(!sid.is_empty() && sid.len() <= 255);
            assert!(iss.is_none() || issuers.len() == 1);
        }
    }
}

/// A `WWW-Authenticate` header from a downstream API: the claims-challenge
/// parser; what it returns must be a JSON object.
pub fn claims_challenge(data: &[u8]) {
    let header = String::from_utf8_lossy(data);
    if let Some(json) = crate::downstream::claims_challenge(&header) {
        assert!(serde_json::from_str::<Value>(&json).is_ok_and(|v| v.is_object()));
    }
}

/// An MSAL token-cache document: imported; what imports exports to a
/// document that imports to the same entries.
pub fn msal_import(data: &[u8]) {
    let Ok(doc) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Ok(entries) = crate::cache::import_msal_json(&doc) else {
        return;
    };
    let again = crate::cache::export_msal_json(&entries);
    match crate::cache::import_msal_json(&again) {
        Ok(back) => assert_eq!(back, entries, "export then import gives the entries back"),
        Err(e) => panic!("an exported document does not import: {e}"),
    }
}

/// Settings: the text up to the first NUL byte as the TOML file, each line
/// after it as a `NAME=VALUE` environment variable; also each value alone
/// as a store URL and a cache key list.
pub fn settings(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (toml, env) = text.split_once('\0').unwrap_or((&text, ""));
    let vars: Vec<(String, String)> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let _ = crate::config::Settings::from_sources(Some(toml), vars.clone());
    let _ = crate::config::Settings::from_sources(None, vars.clone());
    for (_, v) in &vars {
        let _ = crate::config::StoreUrl::parse(v);
        let _ = CacheKeys::parse(v);
    }
}

/// A token-cache entry as a store returns it: the sealed bytes opened with
/// the fixture key ring (and their key id read), then — as if they had
/// opened — decoded as an entry's plaintext, both by the full reader and by
/// the request path's access-token reader, under the cache key given by the
/// first line of the input. Bytes sealed under one cache key open under it
/// and under no other.
pub fn sealed_entry(data: &[u8]) {
    let keys = &fixture().keys;
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let (key_bytes, rest) = data.split_at(split);
    let plain = rest.get(1..).unwrap_or_default();
    let cache_key = String::from_utf8_lossy(key_bytes);
    let _ = CacheKeys::key_id_of(data);
    let _ = keys.open(key_bytes, plain);
    crate::token_cache::decode_opened(plain, &cache_key);
    if plain.len() <= 4096 {
        let sealed = keys.seal(key_bytes, plain);
        assert_eq!(
            keys.open(key_bytes, &sealed).ok().as_deref(),
            Some(plain),
            "a sealed entry opens to itself"
        );
        let mut other = key_bytes.to_vec();
        other.push(b'x');
        assert!(keys.open(&other, &sealed).is_err());
    }
}
