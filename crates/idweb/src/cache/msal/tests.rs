//! Tests of MSAL's unified cache schema.
//!
//! Key and field expectations follow MSAL Python 1.39.0, `msal/token_cache.py`:
//! the key makers are the lambdas in `TokenCache.__init__` (`key_makers`), the
//! fields those written by `TokenCache.__add`, the document that of
//! `SerializableTokenCache.serialize` (`json.dumps(self._cache, indent=4)`).
//!
//! The three fixtures below were written by MSAL Python 1.39.0 itself, not by
//! hand: a `ConfidentialClientApplication` (client id `Client-ID-1`) ran a real
//! `initiate_auth_code_flow` / `acquire_token_by_auth_code_flow` against an
//! in-process fake HTTP client that answered the discovery document and the
//! token request, with MSAL's clock fixed at `NOW` and its nonce fixed so that
//! the unsigned ID tokens are reproducible; the cache was then `serialize()`d.
//! - `ENTRA`: authority `https://Login.MicrosoftOnline.com/72F988BF-...`, token
//!   endpoint `.../72F988BF-.../oauth2/v2.0/token`, a response with
//!   `client_info`, `scope` "User.Read profile openid email Mail.Send",
//!   `expires_in` 3599, `ext_expires_in` 7199, access, refresh and ID tokens.
//! - `GENERIC`: `oidc_authority` `https://idp.example.com:8443/realms/Demo`
//!   (Keycloak-like; token endpoint `.../protocol/openid-connect/token`), a
//!   response without `client_info`, `scope` "openid profile email
//!   offline_access api.read", `expires_in` 300.
//! - `APP`: two `SerializableTokenCache.add()` calls with events shaped as
//!   MSAL's client builds them: a client-credentials token with `data`
//!   `{"fmi_path": ..., "key_id": "kid1"}` and `refresh_in` 1800 (so
//!   `atext`, `ext_cache_key`, `key_id`, `refresh_on`), and a response with
//!   `foci` "1" and no account (so `family_id` and `home_account_id: null`).

use serde_json::{Map, Value, json};

use super::*;

const NOW: i64 = 1_700_000_000;

const ENTRA: &str = r#"{
    "AccessToken": {
        "00000000-0000-0000-66f3-3332eca7ea81.72f988bf-86f1-41af-91ab-2d7cd011db47-login.microsoftonline.com-accesstoken-client-id-1-72f988bf-86f1-41af-91ab-2d7cd011db47-mail.send user.read email openid profile": {
            "credential_type": "AccessToken",
            "secret": "entra-access-token",
            "home_account_id": "00000000-0000-0000-66F3-3332ECA7EA81.72F988BF-86F1-41AF-91AB-2D7CD011DB47",
            "environment": "login.microsoftonline.com",
            "client_id": "Client-ID-1",
            "target": "Mail.Send User.Read email openid profile",
            "realm": "72F988BF-86F1-41AF-91AB-2D7CD011DB47",
            "token_type": "Bearer",
            "cached_at": "1700000000",
            "expires_on": "1700003599",
            "extended_expires_on": "1700007199"
        }
    },
    "Account": {
        "00000000-0000-0000-66f3-3332eca7ea81.72f988bf-86f1-41af-91ab-2d7cd011db47-login.microsoftonline.com-72f988bf-86f1-41af-91ab-2d7cd011db47": {
            "home_account_id": "00000000-0000-0000-66F3-3332ECA7EA81.72F988BF-86F1-41AF-91AB-2D7CD011DB47",
            "environment": "login.microsoftonline.com",
            "realm": "72F988BF-86F1-41AF-91AB-2D7CD011DB47",
            "local_account_id": "6A8C0E2B-0000-4000-8000-ABCDEF012345",
            "username": "Alice@Contoso.com",
            "authority_type": "MSSTS",
            "account_source": "authorization_code"
        }
    },
    "IdToken": {
        "00000000-0000-0000-66f3-3332eca7ea81.72f988bf-86f1-41af-91ab-2d7cd011db47-login.microsoftonline.com-idtoken-client-id-1-72f988bf-86f1-41af-91ab-2d7cd011db47-": {
            "credential_type": "IdToken",
            "secret": "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.eyJhdWQiOiJDbGllbnQtSUQtMSIsImlzcyI6Imh0dHBzOi8vbG9naW4ubWljcm9zb2Z0b25saW5lLmNvbS83MmY5ODhiZi04NmYxLTQxYWYtOTFhYi0yZDdjZDAxMWRiNDcvdjIuMCIsImlhdCI6MTcwMDAwMDAwMCwibmJmIjoxNzAwMDAwMDAwLCJleHAiOjE3MDAwMDM2MDAsIm5hbWUiOiJBbGljZSIsIm9pZCI6IjZBOEMwRTJCLTAwMDAtNDAwMC04MDAwLUFCQ0RFRjAxMjM0NSIsInByZWZlcnJlZF91c2VybmFtZSI6IkFsaWNlQENvbnRvc28uY29tIiwic3ViIjoiQUFBQUFBQUFBQUFBQUFBQUFBQUFBSWt6cUZWclNhU2FGSHk3ODJiYnRhUSIsInRpZCI6IjcyRjk4OEJGLTg2RjEtNDFBRi05MUFCLTJEN0NEMDExREI0NyIsIm5vbmNlIjoiYTE5ZjkyY2Q0ZjAzYTcwN2U3MzUyZTJkNzE4YTBhMzQ1Nzk0ODk1NDI1NTEwOGE1MWNmZTlhMDdjNTdiODg2YiIsInZlciI6IjIuMCJ9.c2ln",
            "home_account_id": "00000000-0000-0000-66F3-3332ECA7EA81.72F988BF-86F1-41AF-91AB-2D7CD011DB47",
            "environment": "login.microsoftonline.com",
            "realm": "72F988BF-86F1-41AF-91AB-2D7CD011DB47",
            "client_id": "Client-ID-1"
        }
    },
    "RefreshToken": {
        "00000000-0000-0000-66f3-3332eca7ea81.72f988bf-86f1-41af-91ab-2d7cd011db47-login.microsoftonline.com-refreshtoken-client-id-1--mail.send user.read email openid profile": {
            "credential_type": "RefreshToken",
            "secret": "entra-refresh-token",
            "home_account_id": "00000000-0000-0000-66F3-3332ECA7EA81.72F988BF-86F1-41AF-91AB-2D7CD011DB47",
            "environment": "login.microsoftonline.com",
            "client_id": "Client-ID-1",
            "target": "Mail.Send User.Read email openid profile",
            "last_modification_time": "1700000000"
        }
    },
    "AppMetadata": {
        "appmetadata-login.microsoftonline.com-Client-ID-1": {
            "client_id": "Client-ID-1",
            "environment": "login.microsoftonline.com"
        }
    }
}"#;

const GENERIC: &str = r#"{
    "AccessToken": {
        "f3a1c2d4-alice-idp.example.com-accesstoken-client-id-1-realms-api.read email offline_access openid profile": {
            "credential_type": "AccessToken",
            "secret": "generic-access-token",
            "home_account_id": "F3A1C2D4-Alice",
            "environment": "idp.example.com",
            "client_id": "Client-ID-1",
            "target": "api.read email offline_access openid profile",
            "realm": "realms",
            "token_type": "Bearer",
            "cached_at": "1700000000",
            "expires_on": "1700000300",
            "extended_expires_on": "1700000300"
        }
    },
    "Account": {
        "f3a1c2d4-alice-idp.example.com-realms": {
            "home_account_id": "F3A1C2D4-Alice",
            "environment": "idp.example.com",
            "realm": "realms",
            "local_account_id": "F3A1C2D4-Alice",
            "username": "alice",
            "authority_type": "MSSTS",
            "account_source": "authorization_code"
        }
    },
    "IdToken": {
        "f3a1c2d4-alice-idp.example.com-idtoken-client-id-1-realms-": {
            "credential_type": "IdToken",
            "secret": "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.eyJhdWQiOiJDbGllbnQtSUQtMSIsImlzcyI6Imh0dHBzOi8vaWRwLmV4YW1wbGUuY29tOjg0NDMvcmVhbG1zL0RlbW8iLCJpYXQiOjE3MDAwMDAwMDAsImV4cCI6MTcwMDAwMDMwMCwic3ViIjoiRjNBMUMyRDQtQWxpY2UiLCJwcmVmZXJyZWRfdXNlcm5hbWUiOiJhbGljZSIsImVtYWlsIjoiYWxpY2VAZXhhbXBsZS5jb20iLCJub25jZSI6ImExOWY5MmNkNGYwM2E3MDdlNzM1MmUyZDcxOGEwYTM0NTc5NDg5NTQyNTUxMDhhNTFjZmU5YTA3YzU3Yjg4NmIiLCJzaWQiOiJzZXNzLTEifQ.c2ln",
            "home_account_id": "F3A1C2D4-Alice",
            "environment": "idp.example.com",
            "realm": "realms",
            "client_id": "Client-ID-1"
        }
    },
    "RefreshToken": {
        "f3a1c2d4-alice-idp.example.com-refreshtoken-client-id-1--api.read email offline_access openid profile": {
            "credential_type": "RefreshToken",
            "secret": "generic-refresh-token",
            "home_account_id": "F3A1C2D4-Alice",
            "environment": "idp.example.com",
            "client_id": "Client-ID-1",
            "target": "api.read email offline_access openid profile",
            "last_modification_time": "1700000000"
        }
    },
    "AppMetadata": {
        "appmetadata-idp.example.com-Client-ID-1": {
            "client_id": "Client-ID-1",
            "environment": "idp.example.com"
        }
    }
}"#;

const APP: &str = r#"{
    "AccessToken": {
        "-login.microsoftonline.com-atext-app-contoso.onmicrosoft.com-https://graph.microsoft.com/.default-ukjupxl10xsn1bfxupvmodxl2xmt3bgrog_g04vrfbi": {
            "credential_type": "AccessToken",
            "secret": "app-at",
            "home_account_id": null,
            "environment": "login.microsoftonline.com",
            "client_id": "App",
            "target": "https://graph.microsoft.com/.default",
            "realm": "Contoso.onmicrosoft.com",
            "token_type": "Bearer",
            "cached_at": "1700000000",
            "expires_on": "1700003600",
            "extended_expires_on": "1700003600",
            "key_id": "kid1",
            "ext_cache_key": "ukjupxl10xsn1bfxupvmodxl2xmt3bgrog_g04vrfbi",
            "refresh_on": "1700001800"
        },
        "-login.microsoftonline.com-accesstoken-app-common-a": {
            "credential_type": "AccessToken",
            "secret": "x",
            "home_account_id": null,
            "environment": "login.microsoftonline.com",
            "client_id": "App",
            "target": "a",
            "realm": "common",
            "token_type": "Bearer",
            "cached_at": "1700000000",
            "expires_on": "1700000600",
            "extended_expires_on": "1700000600"
        }
    },
    "AppMetadata": {
        "appmetadata-login.microsoftonline.com-App": {
            "client_id": "App",
            "environment": "login.microsoftonline.com",
            "family_id": "1"
        }
    },
    "RefreshToken": {
        "-login.microsoftonline.com-refreshtoken-app--a": {
            "credential_type": "RefreshToken",
            "secret": "r",
            "home_account_id": null,
            "environment": "login.microsoftonline.com",
            "client_id": "App",
            "target": "a",
            "last_modification_time": "1700000000",
            "family_id": "1"
        }
    }
}"#;

/// `client_info` of the `ENTRA` response: base64url of
/// `{"uid":"00000000-0000-0000-66F3-3332ECA7EA81","utid":"72F988BF-86F1-41AF-91AB-2D7CD011DB47"}`.
const ENTRA_CLIENT_INFO: &str = "eyJ1aWQiOiIwMDAwMDAwMC0wMDAwLTAwMDAtNjZGMy0zMzMyRUNBN0VBODEiLCJ1dGlkIjoiNzJGOTg4QkYtODZGMS00MUFGLTkxQUItMkQ3Q0QwMTFEQjQ3In0";
const ENTRA_ISSUER: &str =
    "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0";
const ENTRA_TOKEN_ENDPOINT: &str =
    "https://login.microsoftonline.com/72F988BF-86F1-41AF-91AB-2D7CD011DB47/oauth2/v2.0/token";
const GENERIC_ISSUER: &str = "https://idp.example.com:8443/realms/Demo";
const GENERIC_TOKEN_ENDPOINT: &str =
    "https://idp.example.com:8443/realms/Demo/protocol/openid-connect/token";

fn parse(doc: &str) -> Value {
    serde_json::from_str(doc).unwrap()
}

/// The secret of the only entry of `section` in an MSAL document.
fn only_secret(doc: &Value, section: &str) -> String {
    let entries = doc[section].as_object().unwrap();
    assert_eq!(entries.len(), 1);
    let entry = entries.values().next().unwrap();
    entry["secret"].as_str().unwrap().to_owned()
}

fn claims_of(id_token: &str) -> Map<String, Value> {
    let claims = unverified_claims(id_token);
    assert!(!claims.is_empty(), "undecodable test ID token");
    claims
}

fn sorted(mut entries: Vec<CacheEntry>) -> Vec<CacheEntry> {
    entries.sort_by_key(|e| (e.kind(), e.cache_key()));
    entries
}

fn entra_entries() -> Vec<CacheEntry> {
    let doc = parse(ENTRA);
    let id_token = only_secret(&doc, "IdToken");
    let identity = account_identity(
        ENTRA_ISSUER,
        ENTRA_TOKEN_ENDPOINT,
        &claims_of(&id_token),
        Some(ENTRA_CLIENT_INFO),
    );
    let parts = TokenResponseParts::new(
        "Client-ID-1",
        "User.Read profile openid email Mail.Send",
        "entra-access-token",
        NOW,
    )
    .with_token_type(Some("Bearer"))
    .with_expires_at(Some(NOW + 3599))
    .with_ext_expires_at(Some(NOW + 7199))
    .with_refresh_token(Some("entra-refresh-token"))
    .with_id_token(Some(&id_token))
    .with_client_info(Some(ENTRA_CLIENT_INFO))
    .with_grant_type(Some("authorization_code"));
    entries_from_token_response(&identity, &parts)
}

fn generic_identity_and_entries() -> (AccountIdentity, Vec<CacheEntry>) {
    let doc = parse(GENERIC);
    let id_token = only_secret(&doc, "IdToken");
    let identity = account_identity(
        GENERIC_ISSUER,
        GENERIC_TOKEN_ENDPOINT,
        &claims_of(&id_token),
        None,
    );
    let parts = TokenResponseParts::new(
        "Client-ID-1",
        "openid profile email offline_access api.read",
        "generic-access-token",
        NOW,
    )
    .with_token_type(Some("Bearer"))
    .with_expires_at(Some(NOW + 300))
    .with_refresh_token(Some("generic-refresh-token"))
    .with_id_token(Some(&id_token))
    .with_grant_type(Some("authorization_code"));
    let entries = entries_from_token_response(&identity, &parts);
    (identity, entries)
}

// ---- what MSAL itself wrote ----------------------------------------------

#[test]
fn entra_response_gives_exactly_what_msal_wrote() {
    let ours = export_msal_json(&entra_entries());
    assert_eq!(ours, parse(ENTRA));
}

#[test]
fn entra_identity_follows_client_info() {
    let doc = parse(ENTRA);
    let identity = account_identity(
        ENTRA_ISSUER,
        ENTRA_TOKEN_ENDPOINT,
        &claims_of(&only_secret(&doc, "IdToken")),
        Some(ENTRA_CLIENT_INFO),
    );
    assert_eq!(
        identity,
        AccountIdentity {
            // `"{uid}.{utid}".format(**client_info)`: case kept in the field.
            home_account_id:
                "00000000-0000-0000-66F3-3332ECA7EA81.72F988BF-86F1-41AF-91AB-2D7CD011DB47".into(),
            environment: "login.microsoftonline.com".into(),
            realm: "72F988BF-86F1-41AF-91AB-2D7CD011DB47".into(),
            local_account_id: "6A8C0E2B-0000-4000-8000-ABCDEF012345".into(),
            username: "Alice@Contoso.com".into(),
            authority_type: "MSSTS".into(),
        }
    );
}

#[test]
fn generic_response_matches_msal_except_the_home_account_id() {
    let (identity, ours) = generic_identity_and_entries();
    // idweb's rule for providers without client_info ...
    let sub = "F3A1C2D4-Alice";
    assert_eq!(
        identity.home_account_id,
        account_id_for(GENERIC_ISSUER, sub)
    );
    assert_eq!(identity.environment, "idp.example.com", "no port, as MSAL");
    assert_eq!(
        identity.realm, "realms",
        "first segment of the token endpoint"
    );
    assert_eq!(identity.local_account_id, sub);
    assert_eq!(identity.username, "alice");
    // ... and MSAL's (`sub` alone): with it, everything else is identical.
    let as_msal: Vec<CacheEntry> = ours
        .iter()
        .cloned()
        .map(|mut e| {
            match &mut e {
                CacheEntry::AccessToken(e) => e.home_account_id = Some(sub.into()),
                CacheEntry::RefreshToken(e) => e.home_account_id = Some(sub.into()),
                CacheEntry::IdToken(e) => e.home_account_id = Some(sub.into()),
                CacheEntry::Account(e) => e.home_account_id = sub.into(),
                CacheEntry::AppMetadata(_) => {}
            }
            e
        })
        .collect();
    assert_eq!(export_msal_json(&as_msal), parse(GENERIC));
    // The keys differ only in their first part.
    let theirs = export_msal_json(&import_msal_json(&parse(GENERIC)).unwrap());
    let ours = export_msal_json(&ours);
    let prefix = identity.home_account_id.to_lowercase();
    for section in ["AccessToken", "RefreshToken", "IdToken", "Account"] {
        let our_keys: Vec<&String> = ours[section].as_object().unwrap().keys().collect();
        let their_keys: Vec<&String> = theirs[section].as_object().unwrap().keys().collect();
        assert_eq!(our_keys.len(), 1);
        assert_eq!(
            our_keys[0].strip_prefix(&prefix),
            their_keys[0].strip_prefix(&sub.to_lowercase()),
            "{section}"
        );
    }
}

#[test]
fn msal_documents_import_with_their_own_keys() {
    for doc in [ENTRA, GENERIC, APP] {
        let doc = parse(doc);
        let entries = import_msal_json(&doc).unwrap();
        for entry in &entries {
            let section = doc[entry.kind().as_str()].as_object().unwrap();
            assert!(
                section.contains_key(&entry.cache_key()),
                "{} not among {:?}",
                entry.cache_key(),
                section.keys()
            );
        }
        // Importing then exporting gives back MSAL's document, byte for byte
        // once parsed: every field, every key.
        assert_eq!(export_msal_json(&entries), doc);
    }
}

#[test]
fn msal_documents_import_to_what_idweb_builds() {
    assert_eq!(
        sorted(import_msal_json(&parse(ENTRA)).unwrap()),
        sorted(entra_entries())
    );
}

#[test]
fn app_fixture_fields_are_read() {
    let entries = import_msal_json(&parse(APP)).unwrap();
    let atext = entries
        .iter()
        .find_map(|e| match e {
            CacheEntry::AccessToken(at) if at.ext_cache_key.is_some() => Some(at),
            _ => None,
        })
        .unwrap();
    assert_eq!(atext.home_account_id, None);
    assert_eq!(atext.key_id.as_deref(), Some("kid1"));
    assert_eq!(atext.refresh_on, Some(NOW + 1800));
    assert_eq!(atext.realm, "Contoso.onmicrosoft.com");
    assert_eq!(
        atext.cache_key(),
        "-login.microsoftonline.com-atext-app-contoso.onmicrosoft.com-\
         https://graph.microsoft.com/.default-ukjupxl10xsn1bfxupvmodxl2xmt3bgrog_g04vrfbi"
    );
    let rt = entries
        .iter()
        .find_map(|e| match e {
            CacheEntry::RefreshToken(rt) => Some(rt),
            _ => None,
        })
        .unwrap();
    assert_eq!(rt.family_id.as_deref(), Some("1"));
    assert_eq!(rt.home_account_id, None);
    // `home_account_id: null` is written back as null (MSAL's lookups for app
    // tokens compare it with None, so it must be present).
    let exported = export_msal_json(&entries);
    let at = &exported["AccessToken"][atext.cache_key()];
    assert_eq!(at["home_account_id"], Value::Null);
}

// ---- key makers ----------------------------------------------------------

fn at() -> AccessTokenEntry {
    AccessTokenEntry {
        home_account_id: Some("Uid.Utid".into()),
        environment: "login.microsoftonline.com".into(),
        client_id: "Client-ID".into(),
        realm: "Contoso".into(),
        target: "Mail.Send User.Read".into(),
        secret: Secret::new("at-secret"),
        token_type: Some("Bearer".into()),
        cached_at: Some(NOW),
        expires_on: NOW + 3600,
        extended_expires_on: Some(NOW + 3600),
        refresh_on: None,
        key_id: None,
        ext_cache_key: None,
        extra: Map::new(),
    }
}

fn rt() -> RefreshTokenEntry {
    RefreshTokenEntry {
        home_account_id: Some("Uid.Utid".into()),
        environment: "login.microsoftonline.com".into(),
        client_id: "Client-ID".into(),
        secret: Secret::new("rt-secret"),
        target: Some("Mail.Send User.Read".into()),
        last_modification_time: Some(NOW),
        family_id: None,
        extra: Map::new(),
    }
}

fn idt() -> IdTokenEntry {
    IdTokenEntry {
        home_account_id: Some("Uid.Utid".into()),
        environment: "login.microsoftonline.com".into(),
        realm: "Contoso".into(),
        client_id: "Client-ID".into(),
        secret: Secret::new("idt-secret"),
        extra: Map::new(),
    }
}

fn account() -> AccountEntry {
    AccountEntry {
        home_account_id: "Uid.Utid".into(),
        environment: "login.microsoftonline.com".into(),
        realm: "Contoso".into(),
        local_account_id: Some("Oid".into()),
        username: "Alice@Contoso.com".into(),
        authority_type: "MSSTS".into(),
        account_source: Some("authorization_code".into()),
        extra: Map::new(),
    }
}

fn app_metadata() -> AppMetadataEntry {
    AppMetadataEntry {
        client_id: "Client-ID".into(),
        environment: "login.microsoftonline.com".into(),
        family_id: None,
        extra: Map::new(),
    }
}

#[test]
fn access_token_key() {
    // key_makers[ACCESS_TOKEN]: "-".join([home_account_id, environment,
    // "AccessToken", client_id, realm, target]).lower()
    assert_eq!(
        at().cache_key(),
        "uid.utid-login.microsoftonline.com-accesstoken-client-id-contoso-mail.send user.read"
    );
    // ... "atext" instead of "AccessToken" and ext_cache_key appended when
    // ext_cache_key is truthy; an empty one counts as absent.
    let mut e = at();
    e.ext_cache_key = Some("AbC".into());
    assert_eq!(
        e.cache_key(),
        "uid.utid-login.microsoftonline.com-atext-client-id-contoso-mail.send user.read-abc"
    );
    e.ext_cache_key = Some(String::new());
    assert_eq!(e.cache_key(), at().cache_key());
    // `home_account_id or ""`: app tokens start with "-".
    e.home_account_id = None;
    assert_eq!(
        e.cache_key(),
        "-login.microsoftonline.com-accesstoken-client-id-contoso-mail.send user.read"
    );
}

#[test]
fn refresh_token_key() {
    // key_makers[REFRESH_TOKEN]: "-".join([home_account_id, environment,
    // "RefreshToken", client_id, "", target or ""]).lower() -- "RT is
    // cross-tenant in AAD"; MSAL Python keeps the target, other SDKs' entries
    // may have none.
    assert_eq!(
        rt().cache_key(),
        "uid.utid-login.microsoftonline.com-refreshtoken-client-id--mail.send user.read"
    );
    let mut e = rt();
    e.target = None;
    assert_eq!(
        e.cache_key(),
        "uid.utid-login.microsoftonline.com-refreshtoken-client-id--"
    );
    assert!(e.cache_key().ends_with("--"));
}

#[test]
fn id_token_key() {
    // key_makers[ID_TOKEN]: "-".join([home_account_id, environment, "IdToken",
    // client_id, realm, ""]).lower()
    assert_eq!(
        idt().cache_key(),
        "uid.utid-login.microsoftonline.com-idtoken-client-id-contoso-"
    );
}

#[test]
fn account_key() {
    // key_makers[ACCOUNT]: "-".join([home_account_id, environment, realm]).lower()
    assert_eq!(
        account().cache_key(),
        "uid.utid-login.microsoftonline.com-contoso"
    );
}

#[test]
fn app_metadata_key_is_not_lower_cased() {
    // key_makers[APP_METADATA]: "appmetadata-{}-{}".format(environment,
    // client_id) -- the only key without .lower().
    assert_eq!(
        app_metadata().cache_key(),
        "appmetadata-login.microsoftonline.com-Client-ID"
    );
}

#[test]
fn keys_are_lower_cased_like_msal() {
    // MSAL's `str.lower()` turns "İSTANBUL ΑΣ" into "i̇stanbul ας" (dotted i,
    // final sigma).
    let mut e = account();
    e.home_account_id = "İSTANBUL ΑΣ".into();
    assert!(
        e.cache_key().starts_with("i\u{307}stanbul ας-"),
        "{}",
        e.cache_key()
    );
}

#[test]
fn cache_entry_accessors() {
    let all: Vec<CacheEntry> = vec![
        at().into(),
        rt().into(),
        idt().into(),
        account().into(),
        app_metadata().into(),
    ];
    let kinds: Vec<EntryKind> = all.iter().map(CacheEntry::kind).collect();
    assert_eq!(kinds, EntryKind::ALL);
    let secrets: Vec<Option<&str>> = all.iter().map(CacheEntry::secret).collect();
    assert_eq!(
        secrets,
        [
            Some("at-secret"),
            Some("rt-secret"),
            Some("idt-secret"),
            None,
            None
        ]
    );
    assert_eq!(all[0].expires_on(), Some(NOW + 3600));
    assert!(all[1..].iter().all(|e| e.expires_on().is_none()));
    assert_eq!(all[0].target(), Some("Mail.Send User.Read"));
    assert_eq!(all[1].target(), Some("Mail.Send User.Read"));
    assert!(all[2..].iter().all(|e| e.target().is_none()));
    assert!(
        all[..4]
            .iter()
            .all(|e| e.home_account_id() == Some("Uid.Utid"))
    );
    assert_eq!(all[4].home_account_id(), None);
    assert!(
        all.iter()
            .all(|e| e.environment() == "login.microsoftonline.com")
    );
    assert_eq!(all[3].client_id(), None);
    assert_eq!(all[4].client_id(), Some("Client-ID"));
}

#[test]
fn entry_kind_names() {
    for kind in EntryKind::ALL {
        assert_eq!(kind.as_str().parse::<EntryKind>(), Ok(kind));
        assert_eq!(kind.to_string(), kind.as_str());
    }
    assert_eq!(
        [
            "AccessToken",
            "RefreshToken",
            "IdToken",
            "Account",
            "AppMetadata"
        ],
        EntryKind::ALL.map(EntryKind::as_str)
    );
    let err = "accesstoken".parse::<EntryKind>().unwrap_err();
    assert_eq!(err.name(), "accesstoken");
    assert!(err.to_string().contains("accesstoken"));
}

// ---- identity, target, response -----------------------------------------

fn claims(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => unreachable!(),
    }
}

#[test]
fn identity_without_client_info_uses_idweb_account_id() {
    let c = claims(json!({"sub": "Alice", "upn": "alice@corp"}));
    let id = account_identity(
        "https://IdP.Example.com/tenant",
        "https://idp.example.com/tenant/token",
        &c,
        None,
    );
    assert_eq!(
        id.home_account_id,
        account_id_for("https://IdP.Example.com/tenant", "Alice")
    );
    assert_eq!(id.home_account_id, id.home_account_id.to_lowercase());
    assert_eq!(id.environment, "idp.example.com");
    assert_eq!(id.realm, "tenant");
    assert_eq!(id.local_account_id, "Alice", "no oid: sub");
    assert_eq!(id.username, "alice@corp", "no preferred_username: upn");
    // Unusable client_info (MSAL would fall back too, or fail): idweb's id.
    for bad in ["", "!!!", "bm90IGpzb24", "eyJ1aWQiOiJ1In0"] {
        let other = account_identity(
            "https://IdP.Example.com/tenant",
            "https://idp.example.com/tenant/token",
            &c,
            Some(bad),
        );
        assert_eq!(other.home_account_id, id.home_account_id, "{bad}");
    }
}

#[test]
fn identity_claim_rules_follow_msal() {
    // `claims.get("preferred_username", claims.get("upn")) or ""`: a present
    // but empty preferred_username does not fall back to upn.
    let c = claims(json!({"sub": "s", "oid": "o", "preferred_username": "", "upn": "u"}));
    let id = account_identity("https://h/t", "https://h/t/token", &c, None);
    assert_eq!(id.username, "");
    assert_eq!(id.local_account_id, "o");
    let id = account_identity("https://h/t", "https://h/t/token", &Map::new(), None);
    assert_eq!(id.username, "");
    assert_eq!(id.local_account_id, "");
    // Padded, standard-alphabet client_info is read too.
    let padded = "eyJ1aWQiOiAidSIsICJ1dGlkIjogInQifQ==";
    let id = account_identity("https://h/t", "https://h/t/token", &c, Some(padded));
    assert_eq!(id.home_account_id, "u.t");
}

#[test]
fn environment_and_realm() {
    assert_eq!(
        msal_environment("https://Login.MicrosoftOnline.com:443/x"),
        "login.microsoftonline.com"
    );
    assert_eq!(
        msal_environment("https://idp.example.com:8443/realms/Demo"),
        "idp.example.com"
    );
    assert_eq!(msal_environment("http://127.0.0.1:5100"), "127.0.0.1");
    assert_eq!(msal_environment("https://[::1]:8443/t"), "::1");
    assert_eq!(msal_environment("not a url"), "");
    assert_eq!(
        msal_realm("https://login.microsoftonline.com/common/oauth2/v2.0/token"),
        "common"
    );
    assert_eq!(
        msal_realm("https://adfs.contoso.com/adfs/oauth2/token"),
        "adfs"
    );
    assert_eq!(
        msal_realm("https://contoso.ciamlogin.com/"),
        "contoso.onmicrosoft.com"
    );
    assert_eq!(
        msal_realm("https://contoso.ciamlogin.com/TenantX/oauth2/v2.0/token"),
        "TenantX"
    );
    assert_eq!(msal_realm("https://idp.example.com/"), "");
    assert_eq!(msal_realm(""), "");
    let adfs = account_identity(
        "https://adfs.contoso.com/adfs",
        "https://adfs.contoso.com/adfs/oauth2/token",
        &claims(json!({"sub": "s"})),
        None,
    );
    assert_eq!(adfs.authority_type, "ADFS");
}

#[test]
fn target_is_sorted_by_code_point_and_space_joined() {
    // `' '.join(sorted(scope))`, scope = response["scope"].split()
    assert_eq!(
        msal_target("User.Read profile openid email Mail.Send"),
        "Mail.Send User.Read email openid profile"
    );
    assert_eq!(msal_target("  b\ta\n\u{1f}c b "), "a b b c");
    assert_eq!(msal_target(""), "");
}

fn identity() -> AccountIdentity {
    AccountIdentity {
        home_account_id: "uid.utid".into(),
        environment: "idp.example.com".into(),
        realm: "realms".into(),
        local_account_id: "sub".into(),
        username: "alice".into(),
        authority_type: "MSSTS".into(),
    }
}

#[test]
fn response_defaults_follow_msal() {
    let parts = TokenResponseParts::new("c", "b a", "at", NOW);
    let entries = entries_from_token_response(&identity(), &parts);
    // No refresh token, no ID token, no client_info: AccessToken and
    // AppMetadata only.
    let kinds: Vec<EntryKind> = entries.iter().map(CacheEntry::kind).collect();
    assert_eq!(kinds, [EntryKind::AccessToken, EntryKind::AppMetadata]);
    let CacheEntry::AccessToken(at) = &entries[0] else {
        unreachable!()
    };
    assert_eq!(at.expires_on, NOW + 600, "default expires_in is 600");
    assert_eq!(at.extended_expires_on, Some(NOW + 600));
    assert_eq!(at.cached_at, Some(NOW));
    assert_eq!(at.token_type.as_deref(), Some("Bearer"));
    assert_eq!(at.target, "a b");
    // An empty access token is not stored (`if access_token:`).
    let parts = TokenResponseParts::new("c", "a", "", NOW);
    let entries = entries_from_token_response(&identity(), &parts);
    assert_eq!(entries.len(), 1);
}

#[test]
fn account_is_written_only_when_msal_would() {
    let id_token = only_secret(&parse(GENERIC), "IdToken");
    let with_id = TokenResponseParts::new("c", "a", "at", NOW).with_id_token(Some(&id_token));
    let has_account = |p: &TokenResponseParts<'_>| {
        entries_from_token_response(&identity(), p)
            .iter()
            .any(|e| e.kind() == EntryKind::Account)
    };
    assert!(has_account(&with_id));
    assert!(!has_account(&with_id.clone().without_account()));
    let with_ci =
        TokenResponseParts::new("c", "a", "at", NOW).with_client_info(Some(ENTRA_CLIENT_INFO));
    assert!(has_account(&with_ci));
    // account_source only for grants that establish an account.
    let source = |grant: &str| {
        entries_from_token_response(&identity(), &with_id.clone().with_grant_type(Some(grant)))
            .into_iter()
            .find_map(|e| match e {
                CacheEntry::Account(a) => Some(a.account_source),
                _ => None,
            })
            .unwrap()
    };
    assert_eq!(
        source("authorization_code").as_deref(),
        Some("authorization_code")
    );
    assert_eq!(source("refresh_token"), None);
}

#[test]
fn family_id_goes_to_refresh_token_and_app_metadata() {
    let parts = TokenResponseParts::new("c", "a", "at", NOW)
        .with_refresh_token(Some("rt"))
        .with_family_id(Some("1"))
        .with_refresh_on(Some(NOW + 5));
    let doc = export_msal_json(&entries_from_token_response(&identity(), &parts));
    let rt = doc["RefreshToken"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap();
    assert_eq!(rt["family_id"], "1");
    assert_eq!(rt["target"], "a");
    assert_eq!(
        doc["AppMetadata"]["appmetadata-idp.example.com-c"]["family_id"],
        "1"
    );
    let at = doc["AccessToken"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap();
    assert_eq!(at["refresh_on"], (NOW + 5).to_string());
}

// ---- round trips, tolerance, errors --------------------------------------

#[test]
fn export_import_round_trip() {
    let mut entries: Vec<CacheEntry> = entra_entries();
    entries.extend(generic_identity_and_entries().1);
    let mut with_extra = at();
    with_extra
        .extra
        .insert("x_future".into(), json!({"nested": [1, null, "s"]}));
    with_extra.ext_cache_key = Some("ext".into());
    with_extra.key_id = Some("kid".into());
    with_extra.refresh_on = Some(NOW + 1);
    with_extra.home_account_id = None;
    entries.push(with_extra.into());
    let mut rt = rt();
    rt.target = None;
    rt.last_modification_time = None;
    entries.push(rt.into());
    let doc = export_msal_json(&entries);
    let back = import_msal_json(&doc).unwrap();
    assert_eq!(sorted(back.clone()), sorted(entries));
    assert_eq!(export_msal_json(&back), doc);
}

#[test]
fn unknown_sections_are_ignored_and_unknown_fields_kept() {
    let mut doc = parse(ENTRA);
    doc["SomethingNew"] = json!([1, 2, 3]);
    doc["AppMetadata"] = json!({"ignored-key": {
        "client_id": "Client-ID-1",
        "environment": "login.microsoftonline.com",
        "credential_type": "AppMetadata",
        "x_other_sdk": 7
    }});
    let entries = import_msal_json(&doc).unwrap();
    let meta = entries
        .iter()
        .find_map(|e| match e {
            CacheEntry::AppMetadata(m) => Some(m),
            _ => None,
        })
        .unwrap();
    assert_eq!(meta.extra.get("x_other_sdk"), Some(&json!(7)));
    let out = export_msal_json(&entries);
    assert!(out.get("SomethingNew").is_none());
    let meta = &out["AppMetadata"]["appmetadata-login.microsoftonline.com-Client-ID-1"];
    assert_eq!(meta["x_other_sdk"], 7);
    assert_eq!(meta["credential_type"], "AppMetadata");
    // An empty document, and empty sections, are fine.
    assert_eq!(import_msal_json(&json!({})).unwrap(), []);
    assert_eq!(import_msal_json(&json!({"AccessToken": {}})).unwrap(), []);
    assert_eq!(export_msal_json(&[]), json!({}));
}

#[test]
fn debug_output_never_shows_secrets() {
    let mut all: Vec<CacheEntry> = entra_entries();
    let mut at = at();
    at.extra
        .insert("x_secretish".into(), json!("extra-field-value"));
    all.push(at.into());
    all.push(rt().into());
    all.push(idt().into());
    let shown = format!("{all:?} {all:#?}");
    for secret in all.iter().filter_map(CacheEntry::secret) {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(!shown.contains("extra-field-value"));
    assert!(shown.contains("x_secretish"));
    let parts = TokenResponseParts::new("c", "a", "the-access-token", NOW)
        .with_refresh_token(Some("the-refresh-token"))
        .with_id_token(Some("the-id-token"))
        .with_client_info(Some(ENTRA_CLIENT_INFO));
    let shown = format!("{parts:?}");
    for secret in [
        "the-access-token",
        "the-refresh-token",
        "the-id-token",
        ENTRA_CLIENT_INFO,
    ] {
        assert!(!shown.contains(secret), "{shown}");
    }
}

fn entra_with(section: &str, edit: impl FnOnce(&mut Map<String, Value>)) -> Value {
    let mut doc = parse(ENTRA);
    let entries = doc[section].as_object_mut().unwrap();
    let entry = entries
        .values_mut()
        .next()
        .unwrap()
        .as_object_mut()
        .unwrap();
    edit(entry);
    doc
}

#[test]
fn malformed_documents_are_errors_naming_the_entry() {
    assert_eq!(
        import_msal_json(&json!([])),
        Err(MsalFormatError::NotAnObject)
    );
    assert_eq!(
        import_msal_json(&Value::Null),
        Err(MsalFormatError::NotAnObject)
    );
    assert_eq!(
        import_msal_json(&json!({"RefreshToken": []})),
        Err(MsalFormatError::SectionNotAnObject {
            section: EntryKind::RefreshToken
        })
    );
    assert_eq!(
        import_msal_json(&json!({"Account": {"k1": "not an object"}})),
        Err(MsalFormatError::EntryNotAnObject {
            section: EntryKind::Account,
            key: "k1".into()
        })
    );

    let at_key = parse(ENTRA)["AccessToken"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let missing = |field| MsalFormatError::MissingField {
        section: EntryKind::AccessToken,
        key: at_key.clone(),
        field,
    };
    let invalid = |field, expected| MsalFormatError::InvalidField {
        section: EntryKind::AccessToken,
        key: at_key.clone(),
        field,
        expected,
    };
    let cases: Vec<(Value, MsalFormatError)> = vec![
        (
            entra_with("AccessToken", |e| {
                e.remove("credential_type");
            }),
            missing("credential_type"),
        ),
        (
            entra_with("AccessToken", |e| {
                e.insert("credential_type".into(), json!("RefreshToken"));
            }),
            invalid("credential_type", "\"AccessToken\""),
        ),
        (
            entra_with("AccessToken", |e| {
                e.insert("secret".into(), json!(42));
            }),
            invalid("secret", "a string"),
        ),
        (
            entra_with("AccessToken", |e| {
                e.insert("expires_on".into(), json!(1_700_003_599));
            }),
            invalid("expires_on", "a string of Unix seconds"),
        ),
        (
            entra_with("AccessToken", |e| {
                e.insert("cached_at".into(), json!("soon"));
            }),
            invalid("cached_at", "a string of Unix seconds"),
        ),
        (
            entra_with("AccessToken", |e| {
                e.remove("expires_on");
            }),
            missing("expires_on"),
        ),
        (
            entra_with("AccessToken", |e| {
                e.insert("environment".into(), Value::Null);
            }),
            missing("environment"),
        ),
    ];
    for (doc, expected) in cases {
        let err = import_msal_json(&doc).unwrap_err();
        assert!(err.to_string().contains(&at_key), "{err}");
        assert_eq!(err, expected);
    }

    let err = import_msal_json(&entra_with("Account", |e| {
        e.remove("authority_type");
    }))
    .unwrap_err();
    assert!(
        matches!(
            &err,
            MsalFormatError::MissingField {
                section: EntryKind::Account,
                field: "authority_type",
                ..
            }
        ),
        "{err:?}"
    );
    let err = import_msal_json(&entra_with("RefreshToken", |e| {
        e.insert("last_modification_time".into(), json!(["x"]));
    }))
    .unwrap_err();
    assert!(err.to_string().contains("last_modification_time"), "{err}");
}

#[test]
fn no_input_makes_import_panic() {
    let odd = [
        Value::Null,
        json!(true),
        json!(0),
        json!(-1.5),
        json!(""),
        json!("99999999999999999999999"),
        json!(" 12 "),
        json!([]),
        json!({}),
        json!({"nested": {"a": [null]}}),
    ];
    for source in [ENTRA, GENERIC, APP] {
        let doc = parse(source);
        for (section, entries) in doc.as_object().unwrap() {
            for (key, entry) in entries.as_object().unwrap() {
                for field in entry.as_object().unwrap().keys() {
                    for value in &odd {
                        let mut changed = doc.clone();
                        changed[section][key][field] = value.clone();
                        if let Ok(entries) = import_msal_json(&changed) {
                            let _ = export_msal_json(&entries);
                        }
                    }
                }
            }
            for value in &odd {
                let mut changed = doc.clone();
                changed[section] = value.clone();
                let _ = import_msal_json(&changed);
                let mut changed = doc.clone();
                let first = changed[section].as_object().unwrap().keys().next().cloned();
                if let Some(first) = first {
                    changed[section][first] = value.clone();
                    let _ = import_msal_json(&changed);
                }
            }
        }
    }
    // Bad ID tokens and client_info never panic either.
    for token in ["", ".", "a.b.c", "a.!!!.c", "a.bnVsbA.c", "....."] {
        let parts = TokenResponseParts::new("c", "a", "at", NOW)
            .with_id_token(Some(token))
            .with_client_info(Some(token));
        let _ = entries_from_token_response(&identity(), &parts);
    }
    let _ = TokenResponseParts::new("c", "a", "at", i64::MAX);
    let parts = TokenResponseParts::new("c", "a", "at", i64::MAX);
    assert_eq!(
        entries_from_token_response(&identity(), &parts)[0].expires_on(),
        Some(i64::MAX)
    );
}

// ---- remove_account ------------------------------------------------------

/// Keys of the entries `remove_account_entries` selects, sorted.
fn removed_keys(entries: &[CacheEntry], client_id: &str, env: &str, home: &str) -> Vec<String> {
    let mut keys: Vec<String> = remove_account_entries(entries, client_id, env, home)
        .into_iter()
        .map(CacheEntry::cache_key)
        .collect();
    keys.sort();
    keys
}

#[test]
fn remove_account_takes_the_accounts_tokens_and_keeps_app_metadata() {
    // MSAL's `_sign_out` + `_forget_me`: RT, AT, IdToken, Account of the
    // account (any realm); AppMetadata stays.
    let mut other_realm_at = at();
    other_realm_at.realm = "Fabrikam".into();
    let mut other_realm_account = account();
    other_realm_account.realm = "Fabrikam".into();
    let entries: Vec<CacheEntry> = vec![
        at().into(),
        other_realm_at.clone().into(),
        rt().into(),
        idt().into(),
        account().into(),
        other_realm_account.clone().into(),
        app_metadata().into(),
    ];
    let mut expected = vec![
        at().cache_key(),
        other_realm_at.cache_key(),
        rt().cache_key(),
        idt().cache_key(),
        account().cache_key(),
        other_realm_account.cache_key(),
    ];
    expected.sort();
    // The query's environment is lower-cased (entries' are, as MSAL stores them).
    assert_eq!(
        removed_keys(
            &entries,
            "Client-ID",
            "Login.MicrosoftOnline.com",
            "Uid.Utid"
        ),
        expected
    );
    // home_account_id is compared exactly, as MSAL's search does.
    assert!(
        removed_keys(
            &entries,
            "Client-ID",
            "login.microsoftonline.com",
            "uid.utid"
        )
        .is_empty()
    );
    assert!(removed_keys(&entries, "Client-ID", "login.windows.net", "Uid.Utid").is_empty());
}

#[test]
fn remove_account_spares_other_accounts_other_apps_refresh_tokens_and_ext_cache_keys() {
    let mut bob_at = at();
    bob_at.home_account_id = Some("Bob.Utid".into());
    let mut bob_rt = rt();
    bob_rt.home_account_id = Some("Bob.Utid".into());
    let mut app_at = at();
    app_at.home_account_id = None;
    // Another app's access token goes (MSAL skips the ownership check for
    // ATs), its refresh token stays (unless of the app's family).
    let mut stranger_at = at();
    stranger_at.client_id = "Stranger".into();
    let mut stranger_rt = rt();
    stranger_rt.client_id = "Stranger".into();
    let mut stranger_idt = idt();
    stranger_idt.client_id = "Stranger".into();
    // An access token isolated by ext_cache_key is not found by MSAL's search.
    let mut ext_at = at();
    ext_at.ext_cache_key = Some("abc".into());
    let entries: Vec<CacheEntry> = vec![
        bob_at.into(),
        bob_rt.into(),
        app_at.into(),
        stranger_at.clone().into(),
        stranger_rt.into(),
        stranger_idt.clone().into(),
        ext_at.into(),
        app_metadata().into(),
    ];
    let mut expected = vec![stranger_at.cache_key(), stranger_idt.cache_key()];
    expected.sort();
    assert_eq!(
        removed_keys(
            &entries,
            "Client-ID",
            "login.microsoftonline.com",
            "Uid.Utid"
        ),
        expected
    );
}

#[test]
fn remove_account_takes_family_refresh_tokens_when_the_app_is_in_the_family() {
    let mut sibling_rt = rt();
    sibling_rt.client_id = "Sibling".into();
    sibling_rt.family_id = Some("1".into());
    let mut stranger_rt = rt();
    stranger_rt.client_id = "Stranger".into();
    stranger_rt.family_id = Some("2".into());
    let mut family_meta = app_metadata();
    family_meta.family_id = Some("1".into());
    let without_family: Vec<CacheEntry> = vec![
        sibling_rt.clone().into(),
        stranger_rt.clone().into(),
        app_metadata().into(),
    ];
    assert!(
        removed_keys(
            &without_family,
            "Client-ID",
            "login.microsoftonline.com",
            "Uid.Utid"
        )
        .is_empty()
    );
    let with_family: Vec<CacheEntry> = vec![
        sibling_rt.clone().into(),
        stranger_rt.into(),
        family_meta.clone().into(),
    ];
    assert_eq!(
        removed_keys(
            &with_family,
            "Client-ID",
            "login.microsoftonline.com",
            "Uid.Utid"
        ),
        [sibling_rt.cache_key()]
    );
    // The AppMetadata is looked up by its key, made of the query's
    // environment as given (not lower-cased), as MSAL's `_get_app_metadata`.
    assert!(
        removed_keys(
            &with_family,
            "Client-ID",
            "Login.MicrosoftOnline.com",
            "Uid.Utid"
        )
        .is_empty()
    );
    // An empty family_id is no family.
    family_meta.family_id = Some(String::new());
    let mut empty_family_rt = sibling_rt;
    empty_family_rt.family_id = Some(String::new());
    let entries: Vec<CacheEntry> = vec![empty_family_rt.into(), family_meta.into()];
    assert!(
        removed_keys(
            &entries,
            "Client-ID",
            "login.microsoftonline.com",
            "Uid.Utid"
        )
        .is_empty()
    );
}
