//! MSAL's unified token-cache schema, exactly as MSAL Python (1.39) reads and
//! writes it, so that a partition exports to MSAL and imports back.
//!
//! # The document
//!
//! MSAL Python's `SerializableTokenCache.serialize()` writes one JSON object
//! whose members are sections named after the entry kind (`"AccessToken"`,
//! `"RefreshToken"`, `"IdToken"`, `"Account"`, `"AppMetadata"`); each section
//! maps a cache key to an entry object. All timestamps are strings of Unix
//! seconds. Unknown sections are ignored on import; unknown fields of an entry
//! are kept and written back.
//!
//! # Keys (`TokenCache.key_makers`)
//!
//! | kind | key |
//! |---|---|
//! | AccessToken | `home_account_id-environment-accesstoken-client_id-realm-target`, lower-cased; with an `ext_cache_key` the kind part is `atext` and `-ext_cache_key` is appended |
//! | RefreshToken | `home_account_id-environment-refreshtoken-client_id--target`, lower-cased (the realm part is always empty; `target` is empty when the entry has none, and the key then ends in `--`) |
//! | IdToken | `home_account_id-environment-idtoken-client_id-realm-`, lower-cased |
//! | Account | `home_account_id-environment-realm`, lower-cased |
//! | AppMetadata | `appmetadata-environment-client_id`, **not** lower-cased |
//!
//! A missing or null part is an empty string. The keys of an imported document
//! are not trusted: [`export_msal_json`] recomputes every key from the entry.
//!
//! # What MSAL stores for a token response (`TokenCache.__add`)
//!
//! - `environment`: the host of the configured authority, lower-case, without
//!   the port.
//! - `realm`: the first path segment of the token endpoint, case kept (for
//!   Entra the tenant; for a generic provider whatever comes first, e.g.
//!   `realms` for Keycloak); path-less `*.ciamlogin.com` endpoints use
//!   `{subdomain}.onmicrosoft.com`.
//! - `home_account_id`: `uid.utid` from Entra's `client_info`; otherwise MSAL
//!   uses the ID token's `sub` alone, and `null` when there is neither (app
//!   tokens, or a refresh answered without an ID token). idweb uses
//!   [`account_id_for`](crate::account_id_for)`(iss, sub)` instead for
//!   providers without `client_info`: see [`account_identity`].
//! - `target`: the granted scopes (the response's `scope`, else the requested
//!   ones) split on whitespace, sorted by code point and joined with one space;
//!   case is kept in the field and lower-cased only in keys.
//! - AccessToken: `cached_at`, `expires_on` (`now + expires_in`, 600 s when the
//!   provider did not say), `extended_expires_on` (`now + ext_expires_in`, else
//!   `expires_on`), `token_type` (default `Bearer`), optionally `refresh_on`,
//!   `key_id`, `ext_cache_key`.
//! - RefreshToken: MSAL Python writes `target` and `last_modification_time`,
//!   and `family_id` when the response had `foci`.
//! - Account (written when the response had a usable `client_info` or an ID
//!   token, except on silent refreshes): `local_account_id` (`oid`, else
//!   `sub`), `username` (`preferred_username`, else `upn`, else `""`),
//!   `authority_type` (`ADFS` when the realm is `adfs`, else `MSSTS`),
//!   `account_source` (the grant type when it establishes an account).
//! - AppMetadata: `client_id`, `environment`, `family_id` when `foci` was sent.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::{Map, Value};

use crate::secret::Secret;
use crate::session::account_id_for;

#[cfg(test)]
mod tests;

/// The kind of a token-cache entry; also the name of its section in MSAL's
/// document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntryKind {
    /// An access token (`"AccessToken"`).
    AccessToken,
    /// A refresh token (`"RefreshToken"`).
    RefreshToken,
    /// An ID token (`"IdToken"`).
    IdToken,
    /// A signed-in account (`"Account"`).
    Account,
    /// Per-client metadata (`"AppMetadata"`).
    AppMetadata,
}

impl EntryKind {
    /// Every kind, in the order [`import_msal_json`] reads the sections.
    pub const ALL: [EntryKind; 5] = [
        EntryKind::AccessToken,
        EntryKind::RefreshToken,
        EntryKind::IdToken,
        EntryKind::Account,
        EntryKind::AppMetadata,
    ];

    /// MSAL's section name (and, for credentials, `credential_type`).
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::AccessToken => "AccessToken",
            EntryKind::RefreshToken => "RefreshToken",
            EntryKind::IdToken => "IdToken",
            EntryKind::Account => "Account",
            EntryKind::AppMetadata => "AppMetadata",
        }
    }
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EntryKind {
    type Err = UnknownEntryKind;

    /// Parses MSAL's section name exactly (case-sensitive, as MSAL's are).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EntryKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| UnknownEntryKind(s.to_owned()))
    }
}

/// A name that is not one of MSAL's section names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a token cache section (AccessToken, RefreshToken, IdToken, Account, AppMetadata)"
)]
pub struct UnknownEntryKind(String);

impl UnknownEntryKind {
    /// The name that was not recognised.
    pub fn name(&self) -> &str {
        &self.0
    }
}

/// What is wrong with an MSAL token-cache document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MsalFormatError {
    /// The document is not a JSON object.
    #[error("an MSAL token cache must be a JSON object of sections")]
    NotAnObject,
    /// A known section is not a JSON object.
    #[error("the `{section}` section of the token cache must be a JSON object")]
    SectionNotAnObject {
        /// The section.
        section: EntryKind,
    },
    /// An entry of a known section is not a JSON object.
    #[error("token cache entry `{key}` in `{section}` must be a JSON object")]
    EntryNotAnObject {
        /// The section.
        section: EntryKind,
        /// The entry's key in the document.
        key: String,
    },
    /// An entry lacks a field MSAL needs.
    #[error("token cache entry `{key}` in `{section}` has no `{field}`")]
    MissingField {
        /// The section.
        section: EntryKind,
        /// The entry's key in the document.
        key: String,
        /// The missing field.
        field: &'static str,
    },
    /// A field of an entry has the wrong type or value.
    #[error("token cache entry `{key}` in `{section}`: `{field}` must be {expected}")]
    InvalidField {
        /// The section.
        section: EntryKind,
        /// The entry's key in the document.
        key: String,
        /// The offending field.
        field: &'static str,
        /// What the field must be.
        expected: &'static str,
    },
}

/// An access token entry (`"AccessToken"` section).
#[derive(Clone, PartialEq)]
pub struct AccessTokenEntry {
    /// The account (`null` for app tokens).
    pub home_account_id: Option<String>,
    /// The authority's host.
    pub environment: String,
    /// The client the token was issued to.
    pub client_id: String,
    /// The tenant / realm (see the module docs).
    pub realm: String,
    /// The granted scopes, sorted and space-separated.
    pub target: String,
    /// The access token.
    pub secret: Secret,
    /// `token_type` (MSAL reads a missing one as `Bearer`).
    pub token_type: Option<String>,
    /// `cached_at`, Unix seconds.
    pub cached_at: Option<i64>,
    /// `expires_on`, Unix seconds.
    pub expires_on: i64,
    /// `extended_expires_on`, Unix seconds.
    pub extended_expires_on: Option<i64>,
    /// `refresh_on`, Unix seconds: when MSAL refreshes proactively.
    pub refresh_on: Option<i64>,
    /// `key_id` of a key-bound (PoP, SSH certificate) token.
    pub key_id: Option<String>,
    /// `ext_cache_key`: hash of extra request parameters isolating the token.
    pub ext_cache_key: Option<String>,
    /// Fields idweb does not interpret, kept as they were.
    pub extra: Map<String, Value>,
}

/// A refresh token entry (`"RefreshToken"` section).
#[derive(Clone, PartialEq)]
pub struct RefreshTokenEntry {
    /// The account (`null` when MSAL knew none).
    pub home_account_id: Option<String>,
    /// The authority's host.
    pub environment: String,
    /// The client the token was issued to.
    pub client_id: String,
    /// The refresh token.
    pub secret: Secret,
    /// The scopes granted with it; MSAL Python writes it, other SDKs may not.
    pub target: Option<String>,
    /// `last_modification_time`, Unix seconds (MSAL tries newer ones first).
    pub last_modification_time: Option<i64>,
    /// `family_id` (Microsoft's family of client ids, from `foci`).
    pub family_id: Option<String>,
    /// Fields idweb does not interpret, kept as they were.
    pub extra: Map<String, Value>,
}

/// An ID token entry (`"IdToken"` section).
#[derive(Clone, PartialEq)]
pub struct IdTokenEntry {
    /// The account.
    pub home_account_id: Option<String>,
    /// The authority's host.
    pub environment: String,
    /// The tenant / realm.
    pub realm: String,
    /// The client the token was issued to.
    pub client_id: String,
    /// The ID token (compact JWS).
    pub secret: Secret,
    /// Fields idweb does not interpret, kept as they were.
    pub extra: Map<String, Value>,
}

/// A signed-in account (`"Account"` section).
#[derive(Clone, PartialEq)]
pub struct AccountEntry {
    /// The account.
    pub home_account_id: String,
    /// The authority's host.
    pub environment: String,
    /// The tenant / realm.
    pub realm: String,
    /// `oid`, else `sub` of the ID token (`null` when there was neither).
    pub local_account_id: Option<String>,
    /// `preferred_username`, else `upn`, else empty.
    pub username: String,
    /// `MSSTS` or `ADFS`; MSAL lists only accounts of these types.
    pub authority_type: String,
    /// The grant that established the account (e.g. `authorization_code`).
    pub account_source: Option<String>,
    /// Fields idweb does not interpret, kept as they were.
    pub extra: Map<String, Value>,
}

/// Per-client metadata (`"AppMetadata"` section).
#[derive(Clone, PartialEq)]
pub struct AppMetadataEntry {
    /// The client.
    pub client_id: String,
    /// The authority's host.
    pub environment: String,
    /// `family_id` (from `foci`).
    pub family_id: Option<String>,
    /// Fields idweb does not interpret, kept as they were.
    pub extra: Map<String, Value>,
}

/// One entry of a token cache, in MSAL's unified schema.
#[derive(Debug, Clone, PartialEq)]
pub enum CacheEntry {
    /// An access token.
    AccessToken(AccessTokenEntry),
    /// A refresh token.
    RefreshToken(RefreshTokenEntry),
    /// An ID token.
    IdToken(IdTokenEntry),
    /// An account.
    Account(AccountEntry),
    /// Per-client metadata.
    AppMetadata(AppMetadataEntry),
}

/// Joins key parts with `-` and lower-cases, as MSAL's key makers do.
fn joined_key(parts: &[&str]) -> String {
    parts.join("-").to_lowercase()
}

impl AccessTokenEntry {
    /// MSAL's key for this entry.
    pub fn cache_key(&self) -> String {
        let ext = self.ext_cache_key.as_deref().filter(|e| !e.is_empty());
        let mut parts = vec![
            self.home_account_id.as_deref().unwrap_or(""),
            &self.environment,
            if ext.is_some() {
                "atext"
            } else {
                "AccessToken"
            },
            &self.client_id,
            &self.realm,
            &self.target,
        ];
        parts.extend(ext);
        joined_key(&parts)
    }
}

impl RefreshTokenEntry {
    /// MSAL's key for this entry (refresh tokens are cross-tenant: the realm
    /// part is always empty).
    pub fn cache_key(&self) -> String {
        joined_key(&[
            self.home_account_id.as_deref().unwrap_or(""),
            &self.environment,
            "RefreshToken",
            &self.client_id,
            "",
            self.target.as_deref().unwrap_or(""),
        ])
    }
}

impl IdTokenEntry {
    /// MSAL's key for this entry (the last part, a scope, is always empty).
    pub fn cache_key(&self) -> String {
        joined_key(&[
            self.home_account_id.as_deref().unwrap_or(""),
            &self.environment,
            "IdToken",
            &self.client_id,
            &self.realm,
            "",
        ])
    }
}

impl AccountEntry {
    /// MSAL's key for this entry.
    pub fn cache_key(&self) -> String {
        joined_key(&[&self.home_account_id, &self.environment, &self.realm])
    }
}

impl AppMetadataEntry {
    /// MSAL's key for this entry; MSAL does not lower-case this one.
    pub fn cache_key(&self) -> String {
        format!("appmetadata-{}-{}", self.environment, self.client_id)
    }
}

impl CacheEntry {
    /// The entry's kind (its section).
    pub fn kind(&self) -> EntryKind {
        match self {
            CacheEntry::AccessToken(_) => EntryKind::AccessToken,
            CacheEntry::RefreshToken(_) => EntryKind::RefreshToken,
            CacheEntry::IdToken(_) => EntryKind::IdToken,
            CacheEntry::Account(_) => EntryKind::Account,
            CacheEntry::AppMetadata(_) => EntryKind::AppMetadata,
        }
    }

    /// MSAL's key for the entry within its section.
    pub fn cache_key(&self) -> String {
        match self {
            CacheEntry::AccessToken(e) => e.cache_key(),
            CacheEntry::RefreshToken(e) => e.cache_key(),
            CacheEntry::IdToken(e) => e.cache_key(),
            CacheEntry::Account(e) => e.cache_key(),
            CacheEntry::AppMetadata(e) => e.cache_key(),
        }
    }

    /// The token, for credentials. Never log it.
    pub fn secret(&self) -> Option<&str> {
        match self {
            CacheEntry::AccessToken(e) => Some(e.secret.secret()),
            CacheEntry::RefreshToken(e) => Some(e.secret.secret()),
            CacheEntry::IdToken(e) => Some(e.secret.secret()),
            CacheEntry::Account(_) | CacheEntry::AppMetadata(_) => None,
        }
    }

    /// When an access token expires (Unix seconds).
    pub fn expires_on(&self) -> Option<i64> {
        match self {
            CacheEntry::AccessToken(e) => Some(e.expires_on),
            _ => None,
        }
    }

    /// The scopes of an access or refresh token.
    pub fn target(&self) -> Option<&str> {
        match self {
            CacheEntry::AccessToken(e) => Some(&e.target),
            CacheEntry::RefreshToken(e) => e.target.as_deref(),
            _ => None,
        }
    }

    /// The account the entry belongs to (`None` for app tokens and metadata).
    pub fn home_account_id(&self) -> Option<&str> {
        match self {
            CacheEntry::AccessToken(e) => e.home_account_id.as_deref(),
            CacheEntry::RefreshToken(e) => e.home_account_id.as_deref(),
            CacheEntry::IdToken(e) => e.home_account_id.as_deref(),
            CacheEntry::Account(e) => Some(&e.home_account_id),
            CacheEntry::AppMetadata(_) => None,
        }
    }

    /// The authority's host.
    pub fn environment(&self) -> &str {
        match self {
            CacheEntry::AccessToken(e) => &e.environment,
            CacheEntry::RefreshToken(e) => &e.environment,
            CacheEntry::IdToken(e) => &e.environment,
            CacheEntry::Account(e) => &e.environment,
            CacheEntry::AppMetadata(e) => &e.environment,
        }
    }

    /// The client (accounts have none).
    pub fn client_id(&self) -> Option<&str> {
        match self {
            CacheEntry::AccessToken(e) => Some(&e.client_id),
            CacheEntry::RefreshToken(e) => Some(&e.client_id),
            CacheEntry::IdToken(e) => Some(&e.client_id),
            CacheEntry::Account(_) => None,
            CacheEntry::AppMetadata(e) => Some(&e.client_id),
        }
    }

    /// The entry as MSAL writes it (one value of its section).
    pub fn to_msal_json(&self) -> Value {
        let mut out = Map::new();
        match self {
            CacheEntry::AccessToken(e) => {
                put(&mut out, "credential_type", "AccessToken");
                put(&mut out, "secret", e.secret.secret());
                put_nullable(&mut out, "home_account_id", e.home_account_id.as_deref());
                put(&mut out, "environment", &e.environment);
                put(&mut out, "client_id", &e.client_id);
                put(&mut out, "target", &e.target);
                put(&mut out, "realm", &e.realm);
                put_opt(&mut out, "token_type", e.token_type.as_deref());
                put_time(&mut out, "cached_at", e.cached_at);
                put_time(&mut out, "expires_on", Some(e.expires_on));
                put_time(&mut out, "extended_expires_on", e.extended_expires_on);
                put_opt(&mut out, "key_id", e.key_id.as_deref());
                put_opt(&mut out, "ext_cache_key", e.ext_cache_key.as_deref());
                put_time(&mut out, "refresh_on", e.refresh_on);
                put_extra(&mut out, &e.extra);
            }
            CacheEntry::RefreshToken(e) => {
                put(&mut out, "credential_type", "RefreshToken");
                put(&mut out, "secret", e.secret.secret());
                put_nullable(&mut out, "home_account_id", e.home_account_id.as_deref());
                put(&mut out, "environment", &e.environment);
                put(&mut out, "client_id", &e.client_id);
                put_opt(&mut out, "target", e.target.as_deref());
                put_time(&mut out, "last_modification_time", e.last_modification_time);
                put_opt(&mut out, "family_id", e.family_id.as_deref());
                put_extra(&mut out, &e.extra);
            }
            CacheEntry::IdToken(e) => {
                put(&mut out, "credential_type", "IdToken");
                put(&mut out, "secret", e.secret.secret());
                put_nullable(&mut out, "home_account_id", e.home_account_id.as_deref());
                put(&mut out, "environment", &e.environment);
                put(&mut out, "realm", &e.realm);
                put(&mut out, "client_id", &e.client_id);
                put_extra(&mut out, &e.extra);
            }
            CacheEntry::Account(e) => {
                put(&mut out, "home_account_id", &e.home_account_id);
                put(&mut out, "environment", &e.environment);
                put(&mut out, "realm", &e.realm);
                put_nullable(&mut out, "local_account_id", e.local_account_id.as_deref());
                put(&mut out, "username", &e.username);
                put(&mut out, "authority_type", &e.authority_type);
                put_opt(&mut out, "account_source", e.account_source.as_deref());
                put_extra(&mut out, &e.extra);
            }
            CacheEntry::AppMetadata(e) => {
                put(&mut out, "client_id", &e.client_id);
                put(&mut out, "environment", &e.environment);
                put_opt(&mut out, "family_id", e.family_id.as_deref());
                put_extra(&mut out, &e.extra);
            }
        }
        Value::Object(out)
    }

    /// Reads one entry of section `kind`; `key` (its key in the document) only
    /// names the entry in errors.
    ///
    /// Required: `credential_type` (equal to the section name) and `secret`
    /// for credentials; `environment`; `client_id` except for accounts;
    /// `realm` for access and ID tokens and accounts; `target` and `expires_on`
    /// for access tokens; `home_account_id`, `username` and `authority_type`
    /// for accounts. Text fields must be strings, timestamps strings of Unix
    /// seconds; `null` counts as absent (and `home_account_id` of a credential
    /// may be `null`). Every other field is kept in `extra`.
    pub fn from_msal_json(
        kind: EntryKind,
        key: &str,
        value: &Value,
    ) -> Result<CacheEntry, MsalFormatError> {
        let Value::Object(map) = value else {
            return Err(MsalFormatError::EntryNotAnObject {
                section: kind,
                key: key.to_owned(),
            });
        };
        let mut f = Fields {
            section: kind,
            key,
            map: map.clone(),
        };
        Ok(match kind {
            EntryKind::AccessToken => {
                f.credential_type()?;
                CacheEntry::AccessToken(AccessTokenEntry {
                    secret: Secret::new(f.required("secret")?),
                    home_account_id: f.optional("home_account_id")?,
                    environment: f.required("environment")?,
                    client_id: f.required("client_id")?,
                    target: f.required("target")?,
                    realm: f.required("realm")?,
                    token_type: f.optional("token_type")?,
                    cached_at: f.optional_time("cached_at")?,
                    expires_on: f.required_time("expires_on")?,
                    extended_expires_on: f.optional_time("extended_expires_on")?,
                    refresh_on: f.optional_time("refresh_on")?,
                    key_id: f.optional("key_id")?,
                    ext_cache_key: f.optional("ext_cache_key")?,
                    extra: f.map,
                })
            }
            EntryKind::RefreshToken => {
                f.credential_type()?;
                CacheEntry::RefreshToken(RefreshTokenEntry {
                    secret: Secret::new(f.required("secret")?),
                    home_account_id: f.optional("home_account_id")?,
                    environment: f.required("environment")?,
                    client_id: f.required("client_id")?,
                    target: f.optional("target")?,
                    last_modification_time: f.optional_time("last_modification_time")?,
                    family_id: f.optional("family_id")?,
                    extra: f.map,
                })
            }
            EntryKind::IdToken => {
                f.credential_type()?;
                CacheEntry::IdToken(IdTokenEntry {
                    secret: Secret::new(f.required("secret")?),
                    home_account_id: f.optional("home_account_id")?,
                    environment: f.required("environment")?,
                    realm: f.required("realm")?,
                    client_id: f.required("client_id")?,
                    extra: f.map,
                })
            }
            EntryKind::Account => CacheEntry::Account(AccountEntry {
                home_account_id: f.required("home_account_id")?,
                environment: f.required("environment")?,
                realm: f.required("realm")?,
                local_account_id: f.optional("local_account_id")?,
                username: f.required("username")?,
                authority_type: f.required("authority_type")?,
                account_source: f.optional("account_source")?,
                extra: f.map,
            }),
            EntryKind::AppMetadata => CacheEntry::AppMetadata(AppMetadataEntry {
                client_id: f.required("client_id")?,
                environment: f.required("environment")?,
                family_id: f.optional("family_id")?,
                extra: f.map,
            }),
        })
    }
}

impl From<AccessTokenEntry> for CacheEntry {
    fn from(e: AccessTokenEntry) -> Self {
        CacheEntry::AccessToken(e)
    }
}

impl From<RefreshTokenEntry> for CacheEntry {
    fn from(e: RefreshTokenEntry) -> Self {
        CacheEntry::RefreshToken(e)
    }
}

impl From<IdTokenEntry> for CacheEntry {
    fn from(e: IdTokenEntry) -> Self {
        CacheEntry::IdToken(e)
    }
}

impl From<AccountEntry> for CacheEntry {
    fn from(e: AccountEntry) -> Self {
        CacheEntry::Account(e)
    }
}

impl From<AppMetadataEntry> for CacheEntry {
    fn from(e: AppMetadataEntry) -> Self {
        CacheEntry::AppMetadata(e)
    }
}

fn put(out: &mut Map<String, Value>, field: &str, value: &str) {
    out.insert(field.to_owned(), Value::String(value.to_owned()));
}

fn put_opt(out: &mut Map<String, Value>, field: &str, value: Option<&str>) {
    if let Some(value) = value {
        put(out, field, value);
    }
}

/// Writes `null` for `None`, as MSAL does for `home_account_id` of app tokens
/// (its lookups compare `None` with the field, so the field must be present).
fn put_nullable(out: &mut Map<String, Value>, field: &str, value: Option<&str>) {
    let value = value.map_or(Value::Null, |v| Value::String(v.to_owned()));
    out.insert(field.to_owned(), value);
}

/// Timestamps are strings in MSAL's schema.
fn put_time(out: &mut Map<String, Value>, field: &str, value: Option<i64>) {
    if let Some(value) = value {
        put(out, field, &value.to_string());
    }
}

fn put_extra(out: &mut Map<String, Value>, extra: &Map<String, Value>) {
    for (name, value) in extra {
        if !out.contains_key(name) {
            out.insert(name.clone(), value.clone());
        }
    }
}

/// The fields of one entry being read; what is left becomes `extra`.
struct Fields<'a> {
    section: EntryKind,
    key: &'a str,
    map: Map<String, Value>,
}

impl Fields<'_> {
    fn invalid(&self, field: &'static str, expected: &'static str) -> MsalFormatError {
        MsalFormatError::InvalidField {
            section: self.section,
            key: self.key.to_owned(),
            field,
            expected,
        }
    }

    fn missing(&self, field: &'static str) -> MsalFormatError {
        MsalFormatError::MissingField {
            section: self.section,
            key: self.key.to_owned(),
            field,
        }
    }

    /// A string field; absent and `null` are `None`.
    fn optional(&mut self, field: &'static str) -> Result<Option<String>, MsalFormatError> {
        match self.map.remove(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.invalid(field, "a string")),
        }
    }

    fn required(&mut self, field: &'static str) -> Result<String, MsalFormatError> {
        self.optional(field)?.ok_or_else(|| self.missing(field))
    }

    /// A timestamp: a string of Unix seconds, as MSAL writes (and `int()`s) it.
    fn optional_time(&mut self, field: &'static str) -> Result<Option<i64>, MsalFormatError> {
        const EXPECTED: &str = "a string of Unix seconds";
        match self.optional(field) {
            Ok(None) => Ok(None),
            Ok(Some(s)) => s
                .trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|_| self.invalid(field, EXPECTED)),
            Err(_) => Err(self.invalid(field, EXPECTED)),
        }
    }

    fn required_time(&mut self, field: &'static str) -> Result<i64, MsalFormatError> {
        self.optional_time(field)?
            .ok_or_else(|| self.missing(field))
    }

    /// Checks `credential_type` against the section (it is not kept in `extra`:
    /// it is written from the kind).
    fn credential_type(&mut self) -> Result<(), MsalFormatError> {
        let expected = match self.section {
            EntryKind::AccessToken => "\"AccessToken\"",
            EntryKind::RefreshToken => "\"RefreshToken\"",
            EntryKind::IdToken => "\"IdToken\"",
            EntryKind::Account | EntryKind::AppMetadata => return Ok(()),
        };
        match self.optional("credential_type") {
            Ok(Some(found)) if found == self.section.as_str() => Ok(()),
            Ok(None) => Err(self.missing("credential_type")),
            _ => Err(self.invalid("credential_type", expected)),
        }
    }
}

/// Shows the names of the extra fields, never their values.
struct ExtraNames<'a>(&'a Map<String, Value>);

impl fmt::Debug for ExtraNames<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

const REDACTED: &str = "[redacted]";

impl fmt::Debug for AccessTokenEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessTokenEntry")
            .field("home_account_id", &self.home_account_id)
            .field("environment", &self.environment)
            .field("client_id", &self.client_id)
            .field("realm", &self.realm)
            .field("target", &self.target)
            .field("secret", &REDACTED)
            .field("token_type", &self.token_type)
            .field("cached_at", &self.cached_at)
            .field("expires_on", &self.expires_on)
            .field("extended_expires_on", &self.extended_expires_on)
            .field("refresh_on", &self.refresh_on)
            .field("key_id", &self.key_id)
            .field("ext_cache_key", &self.ext_cache_key)
            .field("extra", &ExtraNames(&self.extra))
            .finish()
    }
}

impl fmt::Debug for RefreshTokenEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshTokenEntry")
            .field("home_account_id", &self.home_account_id)
            .field("environment", &self.environment)
            .field("client_id", &self.client_id)
            .field("secret", &REDACTED)
            .field("target", &self.target)
            .field("last_modification_time", &self.last_modification_time)
            .field("family_id", &self.family_id)
            .field("extra", &ExtraNames(&self.extra))
            .finish()
    }
}

impl fmt::Debug for IdTokenEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdTokenEntry")
            .field("home_account_id", &self.home_account_id)
            .field("environment", &self.environment)
            .field("realm", &self.realm)
            .field("client_id", &self.client_id)
            .field("secret", &REDACTED)
            .field("extra", &ExtraNames(&self.extra))
            .finish()
    }
}

impl fmt::Debug for AccountEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountEntry")
            .field("home_account_id", &self.home_account_id)
            .field("environment", &self.environment)
            .field("realm", &self.realm)
            .field("local_account_id", &self.local_account_id)
            .field("username", &self.username)
            .field("authority_type", &self.authority_type)
            .field("account_source", &self.account_source)
            .field("extra", &ExtraNames(&self.extra))
            .finish()
    }
}

impl fmt::Debug for AppMetadataEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppMetadataEntry")
            .field("client_id", &self.client_id)
            .field("environment", &self.environment)
            .field("family_id", &self.family_id)
            .field("extra", &ExtraNames(&self.extra))
            .finish()
    }
}

/// Who a token response belongs to, in MSAL's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountIdentity {
    /// `uid.utid` from Entra's `client_info`, else
    /// [`account_id_for`](crate::account_id_for)`(iss, sub)`.
    pub home_account_id: String,
    /// The authority's host, lower-case, without port.
    pub environment: String,
    /// The first path segment of the token endpoint (the tenant for Entra).
    pub realm: String,
    /// `oid`, else `sub`.
    pub local_account_id: String,
    /// `preferred_username`, else `upn`, else empty.
    pub username: String,
    /// `ADFS` when the realm is `adfs`, else `MSSTS`.
    pub authority_type: String,
}

/// MSAL's `environment` for an authority URL: its host, lower-case, without
/// the port (and an IPv6 address without brackets). Empty when `authority` is
/// not a URL with a host.
pub fn msal_environment(authority: &str) -> String {
    match url::Url::parse(authority)
        .ok()
        .and_then(|u| u.host().map(|h| h.to_owned()))
    {
        Some(url::Host::Domain(domain)) => domain.to_lowercase(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => String::new(),
    }
}

/// MSAL's `realm` (its authority's `tenant`) for a token endpoint: the first
/// path segment, case kept; for a path-less `*.ciamlogin.com` endpoint,
/// `{subdomain}.onmicrosoft.com`. Empty when there is none (MSAL itself
/// refuses such an authority, and any that is not `https`).
pub fn msal_realm(token_endpoint: &str) -> String {
    const CIAM_SUFFIX: &str = ".ciamlogin.com";
    let Ok(url) = url::Url::parse(token_endpoint) else {
        return String::new();
    };
    let first = url.path().split('/').nth(1).unwrap_or("");
    if !first.is_empty() {
        return first.to_owned();
    }
    let host = msal_environment(token_endpoint);
    match host.rsplit_once(CIAM_SUFFIX) {
        Some((tenant, "")) => format!("{tenant}.onmicrosoft.com"),
        _ => String::new(),
    }
}

/// Lenient like Python's `urlsafe_b64decode` after MSAL re-pads the input.
const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);

/// Decodes Entra's `client_info` (base64url JSON) into `(uid, utid)`.
fn client_info_ids(client_info: &str) -> Option<(String, String)> {
    let raw = client_info.trim();
    let bytes = URL_SAFE_LENIENT
        .decode(raw)
        .or_else(|_| STANDARD_LENIENT.decode(raw))
        .ok()?;
    let Ok(Value::Object(info)) = serde_json::from_slice::<Value>(&bytes) else {
        return None;
    };
    let text = |name: &str| match info.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    Some((text("uid")?, text("utid")?))
}

/// The claims of a compact JWS, decoded without any check (as MSAL does);
/// empty when they cannot be read.
fn unverified_claims(jwt: &str) -> Map<String, Value> {
    let payload = jwt.split('.').nth(1).unwrap_or("");
    match URL_SAFE_LENIENT
        .decode(payload)
        .map(|b| serde_json::from_slice::<Value>(&b))
    {
        Ok(Ok(Value::Object(claims))) => claims,
        _ => Map::new(),
    }
}

fn claim_text(claims: &Map<String, Value>, name: &str) -> Option<String> {
    match claims.get(name) {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    }
}

/// The account a sign-in belongs to, as MSAL would record it — except for
/// `home_account_id` with providers that send no `client_info`.
///
/// - `issuer`: the authority the app is configured with (for a generic
///   provider, its issuer); its host is `environment` ([`msal_environment`]).
/// - `token_endpoint`: the provider's token endpoint; `realm` is its first path
///   segment ([`msal_realm`]), which MSAL uses both when it stores and when it
///   looks up access tokens.
/// - `id_token_claims`: the validated ID token's claims.
/// - `client_info`: Entra's `client_info` from the token response.
///
/// With a `client_info` holding `uid` and `utid`, `home_account_id` is
/// `uid.utid`, as in MSAL. Otherwise MSAL would use `sub` alone, which is unique
/// only per issuer and collides, once keys are lower-cased, for subjects that
/// differ only in case; idweb uses [`account_id_for`](crate::account_id_for)`(iss, sub)`
/// (lower-case hexadecimal `uid.utid`). MSAL never recomputes
/// `home_account_id` on lookup: `get_accounts()` returns it from the Account
/// entry and `acquire_token_silent()` matches AccessToken and RefreshToken
/// entries by it (exactly, with `environment`, `client_id` and, for access
/// tokens, `realm` and scopes), so an exported partition is served offline.
/// Tokens that MSAL itself later obtains with such a refresh token are stored
/// under `sub` (or `null` when the refresh answer has no ID token), not under
/// this id, so MSAL then refreshes each time instead of using its cached
/// access token; the rotated refresh token stays under this id.
pub fn account_identity(
    issuer: &str,
    token_endpoint: &str,
    id_token_claims: &Map<String, Value>,
    client_info: Option<&str>,
) -> AccountIdentity {
    let home_account_id = match client_info.and_then(client_info_ids) {
        Some((uid, utid)) => format!("{uid}.{utid}"),
        None => account_id_for(
            issuer,
            &claim_text(id_token_claims, "sub").unwrap_or_default(),
        ),
    };
    // `claims.get("oid", claims.get("sub"))`: a present `oid` wins.
    let local_account_id = if id_token_claims.contains_key("oid") {
        claim_text(id_token_claims, "oid")
    } else {
        claim_text(id_token_claims, "sub")
    };
    // `claims.get("preferred_username", claims.get("upn")) or ""`.
    let username = if id_token_claims.contains_key("preferred_username") {
        claim_text(id_token_claims, "preferred_username")
    } else {
        claim_text(id_token_claims, "upn")
    };
    let realm = msal_realm(token_endpoint);
    let authority_type = if realm == "adfs" { "ADFS" } else { "MSSTS" };
    AccountIdentity {
        home_account_id,
        environment: msal_environment(issuer),
        realm,
        local_account_id: local_account_id.unwrap_or_default(),
        username: username.unwrap_or_default(),
        authority_type: authority_type.to_owned(),
    }
}

/// MSAL's `target`: the scopes split on whitespace (Python's definition),
/// sorted by code point, joined with one space. Case and duplicates are kept.
pub fn msal_target(scopes: &str) -> String {
    let mut parts: Vec<&str> = scopes
        .split(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
        .filter(|s| !s.is_empty())
        .collect();
    parts.sort_unstable();
    parts.join(" ")
}

/// Grant types after which MSAL records `account_source` on the Account.
const GRANTS_ESTABLISHING_AN_ACCOUNT: [&str; 5] = [
    "broker",
    "authorization_code",
    "password",
    "urn:ietf:params:oauth:grant-type:device_code",
    "user_fic",
];

/// A successful token response, as [`entries_from_token_response`] needs it.
///
/// Built with [`TokenResponseParts::new`] and `with_*` methods; each documents
/// what MSAL does when the provider did not send the value.
#[derive(Clone)]
pub struct TokenResponseParts<'a> {
    client_id: &'a str,
    scope: &'a str,
    access_token: &'a str,
    now: i64,
    token_type: Option<&'a str>,
    expires_at: Option<i64>,
    ext_expires_at: Option<i64>,
    refresh_on: Option<i64>,
    refresh_token: Option<&'a str>,
    id_token: Option<&'a str>,
    client_info: Option<&'a str>,
    family_id: Option<&'a str>,
    grant_type: Option<&'a str>,
    skip_account_creation: bool,
}

impl<'a> TokenResponseParts<'a> {
    /// A response for `client_id` granting `scope` (the response's `scope`,
    /// else the scopes sent in the request, space-separated) with
    /// `access_token`, received at `now` (Unix seconds). An empty access token
    /// is not stored, as in MSAL.
    pub fn new(client_id: &'a str, scope: &'a str, access_token: &'a str, now: i64) -> Self {
        Self {
            client_id,
            scope,
            access_token,
            now,
            token_type: None,
            expires_at: None,
            ext_expires_at: None,
            refresh_on: None,
            refresh_token: None,
            id_token: None,
            client_info: None,
            family_id: None,
            grant_type: None,
            skip_account_creation: false,
        }
    }

    /// `token_type`. Default: `Bearer`.
    pub fn with_token_type(mut self, token_type: Option<&'a str>) -> Self {
        self.token_type = token_type;
        self
    }

    /// When the access token expires (`now + expires_in`). Default: `now + 600`.
    pub fn with_expires_at(mut self, expires_at: Option<i64>) -> Self {
        self.expires_at = expires_at;
        self
    }

    /// `now + ext_expires_in` (Entra). Default: the expiry.
    pub fn with_ext_expires_at(mut self, ext_expires_at: Option<i64>) -> Self {
        self.ext_expires_at = ext_expires_at;
        self
    }

    /// `now + refresh_in` (Entra's hint to refresh early). Default: none.
    pub fn with_refresh_on(mut self, refresh_on: Option<i64>) -> Self {
        self.refresh_on = refresh_on;
        self
    }

    /// The refresh token. Default: none (no RefreshToken entry).
    pub fn with_refresh_token(mut self, refresh_token: Option<&'a str>) -> Self {
        self.refresh_token = refresh_token;
        self
    }

    /// The ID token. Default: none (no IdToken entry, and no Account entry
    /// unless `client_info` is usable).
    pub fn with_id_token(mut self, id_token: Option<&'a str>) -> Self {
        self.id_token = id_token;
        self
    }

    /// Entra's `client_info`. Default: none.
    pub fn with_client_info(mut self, client_info: Option<&'a str>) -> Self {
        self.client_info = client_info;
        self
    }

    /// Entra's `foci` (family id). Default: none.
    pub fn with_family_id(mut self, family_id: Option<&'a str>) -> Self {
        self.family_id = family_id;
        self
    }

    /// The grant (`authorization_code`, `refresh_token`, ...), recorded as the
    /// Account's `account_source` when it establishes an account. Default:
    /// none.
    pub fn with_grant_type(mut self, grant_type: Option<&'a str>) -> Self {
        self.grant_type = grant_type;
        self
    }

    /// Writes no Account entry, as MSAL does for the refreshes of
    /// `acquire_token_silent` (so that a concurrent `remove_account` sticks).
    /// Default: an Account entry is written.
    pub fn without_account(mut self) -> Self {
        self.skip_account_creation = true;
        self
    }
}

impl fmt::Debug for TokenResponseParts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponseParts")
            .field("client_id", &self.client_id)
            .field("scope", &self.scope)
            .field("access_token", &REDACTED)
            .field("now", &self.now)
            .field("token_type", &self.token_type)
            .field("expires_at", &self.expires_at)
            .field("ext_expires_at", &self.ext_expires_at)
            .field("refresh_on", &self.refresh_on)
            .field("refresh_token", &self.refresh_token.map(|_| REDACTED))
            .field("id_token", &self.id_token.map(|_| REDACTED))
            .field("client_info", &self.client_info.is_some())
            .field("family_id", &self.family_id)
            .field("grant_type", &self.grant_type)
            .field("skip_account_creation", &self.skip_account_creation)
            .finish()
    }
}

/// The entries MSAL's `TokenCache.add()` stores for a token response, in its
/// order: AccessToken, Account, IdToken, RefreshToken, AppMetadata.
///
/// All use `identity` (see [`account_identity`]) for `home_account_id`,
/// `environment` and `realm`. The Account entry is written when the response
/// had a usable `client_info` or an ID token with claims, unless
/// [`TokenResponseParts::without_account`].
pub fn entries_from_token_response(
    identity: &AccountIdentity,
    response: &TokenResponseParts<'_>,
) -> Vec<CacheEntry> {
    let r = response;
    let mut out = Vec::with_capacity(5);
    let target = msal_target(r.scope);
    let home = Some(identity.home_account_id.clone());
    if !r.access_token.is_empty() {
        let expires_on = r.expires_at.unwrap_or(r.now.saturating_add(600));
        out.push(CacheEntry::AccessToken(AccessTokenEntry {
            home_account_id: home.clone(),
            environment: identity.environment.clone(),
            client_id: r.client_id.to_owned(),
            realm: identity.realm.clone(),
            target: target.clone(),
            secret: Secret::new(r.access_token),
            token_type: Some(r.token_type.unwrap_or("Bearer").to_owned()),
            cached_at: Some(r.now),
            expires_on,
            extended_expires_on: Some(r.ext_expires_at.unwrap_or(expires_on)),
            refresh_on: r.refresh_on,
            key_id: None,
            ext_cache_key: None,
            extra: Map::new(),
        }));
    }
    let id_token = r.id_token.filter(|t| !t.is_empty());
    let knows_account = r.client_info.and_then(client_info_ids).is_some()
        || id_token.is_some_and(|t| !unverified_claims(t).is_empty());
    if knows_account && !r.skip_account_creation {
        out.push(CacheEntry::Account(AccountEntry {
            home_account_id: identity.home_account_id.clone(),
            environment: identity.environment.clone(),
            realm: identity.realm.clone(),
            local_account_id: Some(identity.local_account_id.clone()),
            username: identity.username.clone(),
            authority_type: identity.authority_type.clone(),
            account_source: r
                .grant_type
                .filter(|g| GRANTS_ESTABLISHING_AN_ACCOUNT.contains(g))
                .map(str::to_owned),
            extra: Map::new(),
        }));
    }
    if let Some(id_token) = id_token {
        out.push(CacheEntry::IdToken(IdTokenEntry {
            home_account_id: home.clone(),
            environment: identity.environment.clone(),
            realm: identity.realm.clone(),
            client_id: r.client_id.to_owned(),
            secret: Secret::new(id_token),
            extra: Map::new(),
        }));
    }
    if let Some(refresh_token) = r.refresh_token.filter(|t| !t.is_empty()) {
        out.push(CacheEntry::RefreshToken(RefreshTokenEntry {
            home_account_id: home,
            environment: identity.environment.clone(),
            client_id: r.client_id.to_owned(),
            secret: Secret::new(refresh_token),
            target: Some(target),
            last_modification_time: Some(r.now),
            family_id: r.family_id.map(str::to_owned),
            extra: Map::new(),
        }));
    }
    out.push(CacheEntry::AppMetadata(AppMetadataEntry {
        client_id: r.client_id.to_owned(),
        environment: identity.environment.clone(),
        family_id: r.family_id.map(str::to_owned),
        extra: Map::new(),
    }));
    out
}

/// The entries MSAL Python's `ClientApplication.remove_account(account)`
/// removes from a cache holding `entries`, when the application `client_id`
/// calls it for the account `(environment, home_account_id)` (the fields of an
/// account that `get_accounts()` returns).
///
/// As MSAL 1.39 does (`_sign_out`, then `_forget_me`), in every realm:
/// - RefreshToken entries of the account issued to `client_id`, or whose
///   `family_id` is the app's (the `family_id` of the AppMetadata entry
///   `appmetadata-{environment}-{client_id}`, when it has a non-empty one);
///   other apps' refresh tokens stay;
/// - AccessToken entries of the account, whatever their client, except those
///   with an `ext_cache_key` (MSAL's search without one skips them);
/// - IdToken and Account entries of the account, whatever their client.
///
/// "Of the account" means `home_account_id` equal to `home_account_id`
/// (exactly) and `environment` equal to `environment` lower-cased, as MSAL's
/// search compares them. AppMetadata entries always stay.
///
/// One difference: MSAL's search also drops every *expired* access token it
/// walks past, whoever it belongs to; this function selects only the
/// account's entries.
pub fn remove_account_entries<'a>(
    entries: &'a [CacheEntry],
    client_id: &str,
    environment: &str,
    home_account_id: &str,
) -> Vec<&'a CacheEntry> {
    let environment_lower = environment.to_lowercase();
    let app_metadata_key = format!("appmetadata-{environment}-{client_id}");
    let app_family = entries.iter().find_map(|e| match e {
        CacheEntry::AppMetadata(m) if m.cache_key() == app_metadata_key => {
            m.family_id.as_deref().filter(|f| !f.is_empty())
        }
        _ => None,
    });
    entries
        .iter()
        .filter(|e| {
            e.environment() == environment_lower && e.home_account_id() == Some(home_account_id)
        })
        .filter(|e| match e {
            CacheEntry::RefreshToken(rt) => {
                rt.client_id == client_id
                    || app_family.is_some_and(|f| rt.family_id.as_deref() == Some(f))
            }
            CacheEntry::AccessToken(at) => at.ext_cache_key.is_none(),
            CacheEntry::IdToken(_) | CacheEntry::Account(_) => true,
            CacheEntry::AppMetadata(_) => false,
        })
        .collect()
}

/// The document MSAL Python's `SerializableTokenCache.serialize()` writes for
/// `entries`: an object of sections (only those with entries), each mapping
/// the recomputed cache key to the entry. A later entry with the same key
/// replaces an earlier one, as in MSAL.
pub fn export_msal_json(entries: &[CacheEntry]) -> Value {
    let mut doc = Map::new();
    for entry in entries {
        let section = doc
            .entry(entry.kind().as_str())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(section) = section {
            section.insert(entry.cache_key(), entry.to_msal_json());
        }
    }
    Value::Object(doc)
}

/// Reads a document written by MSAL (or by [`export_msal_json`]).
///
/// Unknown sections are ignored and unknown fields kept (see
/// [`CacheEntry::from_msal_json`] for what an entry needs). The document's keys
/// are not checked; [`CacheEntry::cache_key`] recomputes them. Entries come
/// section by section in [`EntryKind::ALL`] order. Nothing is limited here:
/// callers bound the document's size.
pub fn import_msal_json(doc: &Value) -> Result<Vec<CacheEntry>, MsalFormatError> {
    let Value::Object(sections) = doc else {
        return Err(MsalFormatError::NotAnObject);
    };
    let mut out = Vec::new();
    for kind in EntryKind::ALL {
        let Some(section) = sections.get(kind.as_str()) else {
            continue;
        };
        let Value::Object(entries) = section else {
            return Err(MsalFormatError::SectionNotAnObject { section: kind });
        };
        for (key, value) in entries {
            out.push(CacheEntry::from_msal_json(kind, key, value)?);
        }
    }
    Ok(out)
}
