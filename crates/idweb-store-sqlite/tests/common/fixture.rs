//! What `tests/fixtures/sqlx-0.1.db` holds: the database the first version
//! of this store (on sqlx, schema version 2) wrote. The file was written once
//! with that version through the `Store` trait (see `tests/fixtures/README.md`);
//! these definitions are what it was given, and what a later version must
//! still serve from it.

use std::time::Duration;

use idweb::{PartitionKey, Secret, Session, SessionId, SessionLookup, StoredEntry};

/// The clock when the file was written.
pub const WRITTEN_AT: i64 = 1_800_000_000;

/// A time when every live record of the file is live and the short-lived
/// ones have expired.
pub const READ_AT: i64 = WRITTEN_AT + 500;

/// The issuers.
pub const ISS_A: &str = "https://login.example.com/tenant-a/v2.0";
pub const ISS_B: &str = "https://idp.example.org";

/// Lifetime of the long-lived records.
pub const LONG: i64 = 10 * 365 * 24 * 3600;

fn session(id: &str, iss: &str, sub: &str, sid: Option<&str>, lifetime: i64) -> Session {
    let mut s = Session::new(
        iss,
        sub,
        sid.map(str::to_string),
        Secret::new(format!("eyJhbGciOiJSUzI1NiJ9.id-token-of-{id}.sig")),
        WRITTEN_AT,
        WRITTEN_AT + lifetime,
    );
    s.id = SessionId::from_string(id.to_string());
    s.name = Some(format!("User {sub}"));
    s
}

/// Alice, signed in twice at issuer A (two provider sessions).
pub fn alice_1() -> Session {
    session(
        "fixture-session-alice-1",
        ISS_A,
        "alice",
        Some("sid-a1"),
        LONG,
    )
}

/// Alice's second session.
pub fn alice_2() -> Session {
    session(
        "fixture-session-alice-2",
        ISS_A,
        "alice",
        Some("sid-a2"),
        LONG,
    )
}

/// Bob at issuer B, which sends no `sid`.
pub fn bob() -> Session {
    session("fixture-session-bob", ISS_B, "bob", None, LONG)
}

/// A session that had ended by [`READ_AT`] (its row and partition are in
/// the file; no store may serve them).
pub fn ended() -> Session {
    session("fixture-session-ended", ISS_A, "erin", Some("sid-e"), 100)
}

/// A sealed entry with recognisable bytes.
pub fn entry(cache_key: &str, kind: &str, expires_at: Option<i64>) -> StoredEntry {
    let sealed: Vec<u8> = format!("\u{1}k1\u{0}sealed:{cache_key}")
        .into_bytes()
        .into_iter()
        .chain((0..64u8).map(|i| i.wrapping_mul(37)))
        .collect();
    StoredEntry::new(cache_key, kind, expires_at, sealed)
}

/// Alice's first partition as it was first written (version 1).
pub fn alice_1_first_write() -> Vec<StoredEntry> {
    vec![
        entry("at-old", "AccessToken", Some(WRITTEN_AT + 3600)),
        entry("rt", "RefreshToken", None),
        entry("idt", "IdToken", None),
    ]
}

/// The second write of that partition: `at-old` removed, `at` added (version 2).
pub fn alice_1_second_write() -> (Vec<StoredEntry>, Vec<String>) {
    (
        vec![entry("at", "AccessToken", Some(WRITTEN_AT + 3600))],
        vec!["at-old".to_string()],
    )
}

/// Alice's first partition as it must read back: version 2, these entries.
pub fn alice_1_partition() -> (u64, Vec<StoredEntry>) {
    (
        2,
        vec![
            entry("at", "AccessToken", Some(WRITTEN_AT + 3600)),
            entry("idt", "IdToken", None),
            entry("rt", "RefreshToken", None),
        ],
    )
}

/// The app partition (client credentials).
pub fn app_key() -> PartitionKey {
    PartitionKey::App {
        client_id: "fixture-client".into(),
        tenant: "tenant-a".into(),
        audience: "api://todo".into(),
    }
}

/// Its entries (version 1).
pub fn app_entries() -> Vec<StoredEntry> {
    vec![entry("app-at", "AccessToken", Some(WRITTEN_AT + 3600))]
}

/// The ended session's partition (never served).
pub fn ended_entries() -> Vec<StoredEntry> {
    vec![entry("ended-rt", "RefreshToken", None)]
}

/// A live tombstone of a provider session, and its times.
pub fn sid_tombstone() -> (SessionLookup, i64, i64) {
    (
        SessionLookup::ByProviderSession {
            iss: ISS_A.into(),
            sid: "sid-gone".into(),
        },
        WRITTEN_AT - 10,
        WRITTEN_AT + LONG,
    )
}

/// A live tombstone of every session of a subject.
pub fn sub_tombstone() -> (SessionLookup, i64, i64) {
    (
        SessionLookup::BySubject {
            iss: ISS_B.into(),
            sub: "carol".into(),
        },
        WRITTEN_AT - 5,
        WRITTEN_AT + LONG,
    )
}

/// A tombstone that had expired by [`READ_AT`].
pub fn expired_tombstone() -> (SessionLookup, i64, i64) {
    (
        SessionLookup::BySubject {
            iss: ISS_A.into(),
            sub: "dave".into(),
        },
        WRITTEN_AT - 20,
        WRITTEN_AT + 100,
    )
}

/// A logout-token id recorded until long after [`READ_AT`]: `(iss, jti, expires_at)`.
pub fn live_jti() -> (&'static str, &'static str, i64) {
    (ISS_A, "jti-live", WRITTEN_AT + LONG)
}

/// One that had expired by [`READ_AT`].
pub fn expired_jti() -> (&'static str, &'static str, i64) {
    (ISS_A, "jti-expired", WRITTEN_AT + 100)
}

/// A lock held until `WRITTEN_AT + 1000` (after [`READ_AT`]).
pub fn held_lock() -> (&'static str, Duration) {
    ("refresh:fixture-session-alice-1", Duration::from_secs(1000))
}

/// A lock that had expired by [`READ_AT`].
pub fn expired_lock() -> (&'static str, Duration) {
    ("refresh:fixture-session-bob", Duration::from_secs(100))
}
