//! # idweb-store-redis
//!
//! An [`idweb::Store`] on Redis, for apps that run on several servers:
//! [`RedisStore`] keeps sessions, token-cache partitions, sign-out
//! tombstones, logout-token replay records and locks in one Redis (a
//! standalone server, or a Redis Cluster); [`CachingStore`] puts an
//! in-process cache in front of it, kept coherent across servers by
//! pub/sub and bypassed whenever its coherence is in doubt.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use idweb_store_redis::{CacheOptions, CachingStore, RedisStore};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let redis = RedisStore::open("redis://cache.internal:6379/0").await?;
//! // Either Redis alone...
//! let plain: Arc<dyn idweb::Store> = Arc::new(redis.clone());
//! // ...or with the in-process cache in front (spawns its subscriber task).
//! let cached = CachingStore::with_options(
//!     redis,
//!     CacheOptions::default().max_entries(10_000).max_age(Duration::from_secs(60)),
//! )?;
//! let shared: Arc<dyn idweb::Store> = Arc::new(cached);
//! // ... RelyingParty::builder(settings).with_store(shared) ...
//! # let _ = (plain, shared);
//! # Ok(())
//! # }
//! ```
//!
//! URLs: `redis://[USER:PASSWORD@]HOST[:PORT][/DB]`, `rediss://...` (TLS,
//! server checked against the system's root certificates),
//! `redis+unix:///PATH`, and for a Redis Cluster
//! `redis+cluster://[USER:PASSWORD@]HOST:PORT,HOST:PORT,...` (seed nodes;
//! `rediss+cluster://` with TLS). Every connection and every reply is
//! bounded by 2 s, every store operation by 5 s (60 s for `list_sessions`
//! and `stats`): while Redis is down, each call fails promptly with
//! [`StoreError::Unavailable`](idweb::StoreError::Unavailable), whose source
//! is the Redis error, and the same store works again once Redis is back,
//! with no new `open`.
//!
//! ## Key layout
//!
//! `P` is the prefix (`idweb` unless given to
//! [`RedisStore::open_with_prefix`]); `{...}` is a Redis Cluster hash tag:
//! keys with the same tag live in the same slot, so one Lua script may use
//! them together.
//!
//! | key | type | holds | lives until |
//! |---|---|---|---|
//! | `P:{s:H}:session` | hash | `data` (the session record, see below), `exp`, `idx` (its index keys) | the session's `expires_at` |
//! | `P:{s:H}:part` | hash | cache key → entry (`EXPIRY:KINDLEN:KIND` + sealed bytes), and the partition's version in the field `\xff` | with its session |
//! | `P:{a:STORAGE_KEY}:part` | hash | an app partition, likewise | its latest entry's expiry (no expiry if an entry has none) |
//! | `P:{s:H}:ver`, `P:{a:STORAGE_KEY}:ver` | string | the version of a partition written by an earlier version; read, folded into the hash on its next write, deleted with the partition | with its partition |
//! | `P:{x:SEL}:index` | sorted set | session ids, scored by their `expires_at` | its latest session |
//! | `P:{x:SEL}:tombstone` | string | `LOGGED_OUT_AT:EXPIRES_AT` | the tombstone's `expires_at` |
//! | `P:jti:ISS.JTI` | string | the record's `expires_at` | that time |
//! | `P:lock:NAME` | string | `HELD_UNTIL_MS:TOKEN` | the lock's time to live |
//! | `P:{P.meta}:sessions` / `:ids` | sorted sets | session ids by expiry / in id order (counting, listing) | the latest session |
//! | `P:{P.meta}:tombstones` | sorted set | tombstone selectors by expiry (counting) | the latest tombstone |
//! | `P:{P.meta}:apps` | set | app partitions' storage keys (statistics) | — |
//! | `P:invalidate` | pub/sub channel | [`CachingStore`] invalidations and heartbeats | — |
//! | `P:invalidate:ack:ORIGIN` | pub/sub channel | acknowledgements to one instance | — |
//! | `P:signout` | pub/sub channel | [`RedisSignOutBus`]: sign-out events for the apps' listeners | — |
//!
//! `H` is the base64url SHA-256 of the session id: key names and
//! invalidation messages never carry a session id (a bearer credential).
//! `SEL` is `sid:B64(ISS).B64(SID)` or `sub:B64(ISS).B64(SUB)`; an index and
//! the tombstone of the same selector share a slot. Index entries stay in
//! a sorted set scored by the session's expiry, so that entries of sessions
//! that ended are pruned by score, within the index's own slot, without
//! ever asking whether a session exists.
//!
//! ## How it keeps the contract
//!
//! Every operation on one session's keys is one Lua script, atomic on the
//! node that holds them:
//!
//! - **Session-bound partition writes.** `write_partition` on a session
//!   partition reads the session's `exp`, refuses with
//!   [`SignedOut`](idweb::StoreError::SignedOut) unless the session exists
//!   and is live, compares the version when `expected_version` is set,
//!   applies removals and upserts, increments the version and gives the
//!   partition its session's lifetime — all in one script. `remove_session`
//!   deletes the session, its partition and its version in one script. A
//!   refresh that finishes after a sign-out is therefore refused, whatever
//!   the interleaving: nothing comes back.
//! - **Tombstones.** On a standalone server, `put_session` is one script:
//!   it reads the tombstones of the session's `(iss, sid)` and `(iss, sub)`
//!   and refuses while a live one covers the session, otherwise writes the
//!   session, its index entries and its count entries. `remove_session` is
//!   one script too (session, partition, version, index and count entries).
//!   The session's current index keys are read first and checked again
//!   inside the script (compare-and-set on the `idx` field), so that the
//!   script touches only keys it was given.
//! - **Replay records and locks.** `record_jti` and `try_lock` are
//!   test-and-set scripts; `unlock` compares the token and deletes in one
//!   script; `forget_jti` is a `DEL`.
//! - **Sign-out** (`Store::sign_out`), on a standalone server: one script
//!   that checks the candidates and stores everything together — the
//!   replay check and record, the tombstone, each session with its
//!   partition, version, index and count entries — and, for
//!   [`CachingStore`], publishes the invalidation (decision 0015). A sign-out
//!   by lookup first names no session: when the index holds none (a
//!   provider session this app does not know) that is the whole sign-out,
//!   one round trip; otherwise the script writes nothing and answers the
//!   indexed ids, and a second call names them. A sign-out of one session
//!   reads its `idx` first. Two round trips at most whatever the number of
//!   sessions, more only when a concurrent write changed the candidates.
//! - **Tombstones on reads.** `get_session` reads the session and the
//!   tombstones of its selectors in one script and refuses a session a live
//!   tombstone covers, even while its keys are still stored.
//! - **Lookups** read the index's live entries (by score) and keep the
//!   sessions that exist, are live and are still indexed under that
//!   lookup: the cost follows the user's sessions, not the store's size.
//!   Counting reads a sorted set; listing walks the id-ordered set with a
//!   cursor; statistics read both and the partitions' sizes. Nothing uses
//!   `KEYS` or `SCAN`.
//!
//! ## Expiry
//!
//! Whether something has expired is decided by the [`idweb::Clock`] given at
//! open, as the contract says, and checked on every read. Redis's own
//! expiry only reclaims memory: each key is given a time to live computed
//! from the clock, `expires_at − now` (with `EXPIRE`, `SET ... EX` and
//! `PX`), which equals `EXPIREAT expires_at` when the clock is the system's
//! and does not depend on the Redis host's clock being right. Replay records
//! and locks store their own expiry too, so that a record or lock past its
//! time by the store's clock counts as absent even while Redis still holds
//! the key.
//!
//! ## Redis Cluster
//!
//! A session's keys share the hash tag `{s:H}`, so every single-session
//! script works unchanged. `put_session` and `remove_session` also touch
//! index, tombstone and count keys in other slots; on a cluster they are
//! split into steps whose order keeps the sign-out rules:
//!
//! - `put_session` writes the session (its slot), then for each selector
//!   adds the index entry **and then** reads the tombstone (one script, the
//!   selector's slot), then updates the count sets. A covering tombstone
//!   makes it remove the session again and answer `SignedOut`.
//! - Sign-out (the order-based `idweb::sign_out_in_order`) checks the
//!   replay record, writes the tombstone, then looks the sessions up, then
//!   removes each, and records the logout token's `jti` last, so that a
//!   crash leaves a state the provider's retry completes. Either the
//!   sign-in read the tombstone after it was written (and refused), or the
//!   sign-in's session and index entry were stored before the tombstone,
//!   hence before the lookup, which finds and removes it. No interleaving
//!   lets a sign-in survive the sign-out.
//! - `remove_session` deletes the session, partition and version in one
//!   script (the part that matters), then removes index and count entries.
//!   Entries left behind by a failure there point at a missing session:
//!   lookups skip them and the index prunes them by score.
//!
//! `get_session` reads the session, then its selectors' tombstones (in
//! their slots): one more round trip than on a standalone server.
//!
//! Counts are then updated in a separate step, so `session_count` and
//! `stats` may be off for a moment (the contract allows approximate counts
//! on distributed stores).
//!
//! ## The in-process cache
//!
//! [`CachingStore`] is the layer of the `idweb-l1` crate over this store
//! (the same layer runs over PostgreSQL's `LISTEN/NOTIFY`); Redis's
//! invalidation bus is pub/sub. It caches `get_session` and `get_partition` results
//! (bounded in number and age) and sends every other call to Redis.
//!
//! **Invalidation protocol.** Every write (`put_session`, `remove_session`,
//! `write_partition`, `remove_partition`, `put_tombstone`) goes to Redis;
//! then the writing instance drops its own entries for what it wrote; then
//! it publishes the names of those entries on `P:invalidate` (hashed
//! session ids and partition names; for a tombstone its selector, which
//! drops the sessions it covers). Every instance subscribes with its own
//! RESP3 connection and drops the entries named. A value read from Redis is
//! put in the cache only if no invalidation arrived while it was read, so a
//! read that raced a write cannot plant the old value. A write whose
//! announcement could not be published returns
//! [`Unavailable`](idweb::StoreError::Unavailable) (it was stored; the
//! announcement is published later, when Redis answers again).
//!
//! **Fail-closed.** The cache answers only while its subscription is known
//! to be live: not before the first `SUBSCRIBE` is confirmed, nor after the
//! subscription's connection closes, fails a ping (every second) or any
//! store call meets a Redis failure — and after each of those, not until it
//! has subscribed again and emptied the cache (it may have missed
//! messages). Meanwhile every read goes to Redis, and so fails while Redis
//! does: a cached session is never served in place of an error.
//! [`CachingStore::l1_active`] tells which state it is in.
//!
//! **Leases and acknowledged sign-outs.** An instance answers from L1 only
//! under a lease (default 250 ms, [`CacheOptions::lease`]): it publishes a
//! heartbeat on `P:invalidate` five times per lease, and hearing its own
//! heartbeat back proves that every message published before it has been
//! applied, so it may answer until one lease after it sent that heartbeat.
//! A sign-out write (`remove_session`, `remove_partition`, `put_tombstone`)
//! asks every instance to acknowledge its invalidation (on
//! `P:invalidate:ack:ORIGIN`) and returns once every instance heard
//! heartbeating within the last lease has acknowledged, or one lease and a
//! tenth after it was published: by then no instance can answer from what
//! it removed. Healthy instances make that a few round trips; an instance
//! that is slow or gone makes every sign-out wait the whole bound. Instances
//! of earlier versions (no heartbeats) are not covered. See decision 0016.
//!
//! ## Sign-out events
//!
//! [`RedisSignOutBus`] is the [`idweb::SignOutBus`] of a Redis store: each
//! instance publishes the [`idweb::SignOutEvent`] of its evictions on
//! `P:signout` (as `ORIGIN\nJSON`; the JSON names sessions by the SHA-256
//! of their id, never by the id) and hears the others' on its own RESP3
//! subscription, skipping its own. Delivery is at most once: an instance
//! whose subscription is down misses the events published meanwhile — the
//! sign-out itself is in Redis and binds it anyway; only what the app keeps
//! on its side stays until it expires (see the sign-out events decision).
//!
//! ## Data at rest
//!
//! A session is stored as a compact binary record (iss, sub, sid, name,
//! times and the ID token of the sign-in, each length-prefixed; no field
//! names, and neither the session id, which every reader already holds, nor
//! an account id derivable from iss and sub; an ID token sealed by idweb is
//! kept as its sealed bytes, not base64 text). Sessions written by earlier
//! versions (JSON, or the first compact record) are still read, and take
//! the current form when next written. Cache entries are stored as sealed (already
//! encrypted) by the token cache. Redis must be private to the app (ACL
//! user and password, TLS across hosts). A sign-out is as durable as
//! Redis's persistence and replication: a server restored from an older
//! snapshot, or a replica promoted before it received the latest writes, can
//! bring back sessions and tokens that were signed out, and lose
//! tombstones; run Redis without persistence (a restart signs everyone out)
//! or with an append-only file synced on every write.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod codec;
mod config;
mod conn;
mod error;
mod keys;
mod l1;
mod scripts;
mod signout_bus;
mod store;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub use config::{RedisConfig, RedisUrlError};
pub use idweb_l1::CacheOptions;
pub use l1::CachingStore;
pub use signout_bus::RedisSignOutBus;
pub use store::RedisStore;
