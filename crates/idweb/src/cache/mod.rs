//! The token cache: entries in MSAL's unified schema (module `msal`).

mod msal;

pub use msal::{
    AccessTokenEntry, AccountEntry, AppMetadataEntry, CacheEntry, EntryKind, IdTokenEntry,
    MsalFormatError, RefreshTokenEntry, UnknownEntryKind, export_msal_json, import_msal_json,
};
pub(crate) use msal::{
    TokenResponseParts, account_identity, entries_from_token_response, msal_environment,
    msal_realm, msal_target,
};
