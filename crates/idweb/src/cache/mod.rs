//! The token cache: entries in MSAL's unified schema (module `msal`).

mod msal;
pub(crate) mod plain;

pub(crate) use msal::msal_target;
pub use msal::{
    AccessTokenEntry, AccountEntry, AccountIdentity, AppMetadataEntry, CacheEntry, EntryKind,
    IdTokenEntry, MsalFormatError, RefreshTokenEntry, TokenResponseParts, UnknownEntryKind,
    account_identity, entries_from_token_response, export_msal_json, import_msal_json,
    msal_environment, msal_realm, remove_account_entries,
};
