//! The bodies of idweb's fuzz targets, one function per target of
//! `fuzz/fuzz_targets/`, each calling the parsing code idweb runs on outside
//! input or persisted data. The fuzzers (`cargo fuzz run TARGET`, nightly)
//! and the stable test `tests/corpus.rs`, which replays every file of
//! `fuzz/corpus/TARGET/`, run exactly these functions.
//!
//! ```
//! // A target never panics on junk; it panics on a broken invariant.
//! idweb_fuzzing::run("redis_values", b"\x03\x00junk").unwrap();
//! ```
#![forbid(unsafe_code)]

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// Every target, by the name of its file in `fuzz/fuzz_targets/` and of its
/// corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("logout_token", idweb::fuzzing::logout_token),
    ("id_token", idweb::fuzzing::id_token),
    ("sealed_cookie", idweb_axum::fuzzing::cookie_header),
    (
        "front_channel_query",
        idweb_axum::fuzzing::front_channel_query,
    ),
    ("claims_challenge", idweb::fuzzing::claims_challenge),
    ("msal_import", idweb::fuzzing::msal_import),
    ("settings", idweb::fuzzing::settings),
    ("sealed_entry", idweb::fuzzing::sealed_entry),
    ("redis_values", idweb_store_redis::fuzzing::redis_values),
    (
        "sqlite_session_row",
        idweb_store_sqlite::fuzzing::session_row,
    ),
];

/// Runs target `name` on `data`; `None` when there is no such target.
pub fn run(name: &str, data: &[u8]) -> Option<()> {
    let (_, target) = TARGETS.iter().find(|(n, _)| *n == name)?;
    target(data);
    Some(())
}
