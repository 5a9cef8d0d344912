//! Property tests: sealing token-cache entries at rest (any plaintext, any
//! associated data, any key id round-trips; any tampered byte fails), and
//! MSAL export/import of token-cache partitions (export, import: the same
//! entries).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use idweb::CacheKeys;
use idweb::msal::{
    CacheEntry, TokenResponseParts, account_identity, entries_from_token_response,
    export_msal_json, import_msal_json,
};
use proptest::prelude::*;

fn ring(id: &str, key: &[u8; 32]) -> CacheKeys {
    CacheKeys::parse(&format!("{id}:{}", STANDARD.encode(key))).unwrap()
}

proptest! {
    #[test]
    fn sealed_entries_open_only_untouched_under_their_aad(
        id in "[A-Za-z0-9_-]{1,32}",
        key in any::<[u8; 32]>(),
        aad in proptest::collection::vec(any::<u8>(), 0..128),
        plaintext in proptest::collection::vec(any::<u8>(), 0..512),
        at in any::<proptest::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let keys = ring(&id, &key);
        let sealed = keys.seal(&aad, &plaintext);
        prop_assert_eq!(CacheKeys::key_id_of(&sealed), Some(id.as_str()));
        prop_assert_eq!(keys.open(&aad, &sealed).unwrap(), plaintext.clone());
        // Any byte changed (key id, nonce, ciphertext or tag): refused.
        let mut tampered = sealed.clone();
        let i = at.index(tampered.len());
        tampered[i] ^= flip;
        prop_assert!(keys.open(&aad, &tampered).is_err());
        // Truncated: refused.
        prop_assert!(keys.open(&aad, &sealed[..i]).is_err());
        // Other associated data: refused.
        let mut other = aad.clone();
        other.push(0);
        prop_assert!(keys.open(&other, &sealed).is_err());
        // Another key under the same id: refused.
        let mut key2 = key;
        key2[0] ^= 1;
        prop_assert!(ring(&id, &key2).open(&aad, &sealed).is_err());
    }
}

/// One token response of a partition.
#[derive(Debug, Clone)]
struct Response {
    client_id: String,
    scopes: Vec<String>,
    access_token: String,
    refresh_token: Option<String>,
    family_id: Option<String>,
    with_id_token: bool,
    now: i64,
    expires_in: Option<i64>,
    ext_expires_in: Option<i64>,
    refresh_in: Option<i64>,
}

fn response() -> impl Strategy<Value = Response> {
    (
        "[A-Za-z0-9-]{1,24}",
        proptest::collection::vec("[A-Za-z0-9._:/-]{1,16}", 1..5),
        "[ -~]{1,64}",
        proptest::option::of("[ -~]{1,64}"),
        proptest::option::of("[0-9]{1,2}"),
        any::<bool>(),
        0i64..4_000_000_000,
        (
            proptest::option::of(0i64..100_000),
            proptest::option::of(0i64..100_000),
            proptest::option::of(0i64..100_000),
        ),
    )
        .prop_map(
            |(client_id, scopes, access_token, refresh_token, family_id, with_id_token, now, t)| {
                Response {
                    client_id,
                    scopes,
                    access_token,
                    refresh_token,
                    family_id,
                    with_id_token,
                    now,
                    expires_in: t.0,
                    ext_expires_in: t.1,
                    refresh_in: t.2,
                }
            },
        )
}

/// A partition: one user's tokens from several responses.
fn partition() -> impl Strategy<Value = (String, String, Vec<Response>)> {
    (
        "[A-Za-z0-9-]{1,24}",
        "[ -~]{0,24}",
        proptest::collection::vec(response(), 1..4),
    )
}

fn entries(sub: &str, name: &str, responses: &[Response]) -> Vec<CacheEntry> {
    let claims = serde_json::json!({
        "iss": "https://idp.example/realms/r", "sub": sub, "name": name,
        "preferred_username": format!("{sub}@example"),
    });
    let id_token = format!(
        "eyJhbGciOiJSUzI1NiJ9.{}.c2ln",
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let identity = account_identity(
        "https://idp.example/realms/r",
        "https://idp.example/realms/r/protocol/openid-connect/token",
        claims.as_object().unwrap(),
        None,
    );
    let mut out = Vec::new();
    for r in responses {
        let scope = r.scopes.join(" ");
        let parts = TokenResponseParts::new(&r.client_id, &scope, &r.access_token, r.now)
            .with_token_type(Some("Bearer"))
            .with_expires_at(r.expires_in.map(|s| r.now + s))
            .with_ext_expires_at(r.ext_expires_in.map(|s| r.now + s))
            .with_refresh_on(r.refresh_in.map(|s| r.now + s))
            .with_refresh_token(r.refresh_token.as_deref())
            .with_family_id(r.family_id.as_deref())
            .with_id_token(r.with_id_token.then_some(id_token.as_str()))
            .with_grant_type(Some("authorization_code"));
        out.extend(entries_from_token_response(&identity, &parts));
    }
    out
}

/// What a cache holding `entries` holds: one entry per kind and cache key,
/// the last one written.
fn as_cache(entries: Vec<CacheEntry>) -> Vec<CacheEntry> {
    let mut by_key = BTreeMap::new();
    for e in entries {
        by_key.insert((e.kind(), e.cache_key()), e);
    }
    by_key.into_values().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn partitions_export_to_msal_and_import_back_unchanged(
        partitions in proptest::collection::vec(partition(), 1..4),
    ) {
        for (sub, name, responses) in &partitions {
            let cache = as_cache(entries(sub, name, responses));
            let doc = export_msal_json(&cache);
            let text = serde_json::to_string(&doc).unwrap();
            let back: serde_json::Value = serde_json::from_str(&text).unwrap();
            let imported = as_cache(import_msal_json(&back).unwrap());
            prop_assert_eq!(&imported, &cache);
            // And exporting what was imported gives the same document.
            prop_assert_eq!(export_msal_json(&imported), doc);
        }
    }
}
