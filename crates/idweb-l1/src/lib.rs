//! # idweb-l1
//!
//! An in-process cache (L1) in front of a shared [`idweb::Store`] —
//! [`CachingStore`] — kept coherent across the app's instances by the
//! store's own invalidation bus, and bypassed whenever its coherence is in
//! doubt. It works over any store that implements [`L1Backend`]: Redis
//! (pub/sub) and PostgreSQL (`LISTEN/NOTIFY`) do.
//!
//! ```no_run
//! use std::sync::Arc;
//! use idweb_l1::{CacheOptions, CachingStore, L1Backend};
//!
//! // A backend crate's store (Redis, PostgreSQL) implements `L1Backend`;
//! // the cache in front of it is itself an `idweb::Store`.
//! fn shared<B: L1Backend>(store: B) -> Result<Arc<dyn idweb::Store>, idweb::StoreError> {
//!     let cached = CachingStore::with_options(store, CacheOptions::default().max_entries(10_000))?;
//!     Ok(Arc::new(cached))
//! }
//! ```
//!
//! ## What it caches
//!
//! `get_session`, `get_partition` and `partition_version` are answered from
//! process memory when L1 may answer (bounded in number and age, see
//! [`CacheOptions`]); every other call goes to the store.
//!
//! ## The invalidation protocol
//!
//! Every write goes to the store together with its *announcement*: the
//! names of the L1 entries it makes stale ([`names`]), prefixed by the
//! writing instance's origin word. How the store publishes it is the
//! backend's: Redis publishes right after the write succeeded (and the
//! sign-out script publishes from inside itself); PostgreSQL sends a
//! `NOTIFY` in the same transaction as the write, so a write that rolled
//! back announces nothing and one that committed is heard by every
//! connected listener. The writing instance drops its own entries before
//! returning; every instance listens on a connection of its own
//! ([`L1Backend::listen`]) and drops the entries others announce. A value
//! read from the store is cached only if no invalidation arrived while it
//! was read. An announcement that could not be published is queued and
//! published when the store answers again (the write returns
//! [`StoreError::Unavailable`] meanwhile).
//!
//! ## Fail-closed
//!
//! L1 answers only while the listening connection is known to be live: not
//! before listening is confirmed, nor after the connection closes, fails to
//! publish a heartbeat, or any store call meets a store failure — and after
//! each of those, not until it listens again and has emptied L1 (it may
//! have missed messages). Meanwhile every read goes to the store, and so
//! fails while the store does: a cached session is never served in place of
//! an error.
//!
//! ## Leases and acknowledged sign-outs
//!
//! An instance answers from L1 only under a lease ([`CacheOptions::lease`],
//! 250 ms by default): it publishes a heartbeat on the bus five times per
//! lease, and hearing its own heartbeat back proves that every message
//! published before it has been applied (both buses deliver a listener's
//! messages in publication — commit — order), so it may answer until one
//! lease after it *sent* that heartbeat. A sign-out write
//! (`remove_session`, `remove_partition`, `put_tombstone`, `sign_out`) asks
//! every instance to acknowledge its invalidation and returns once every
//! instance heard heartbeating within the last lease has acknowledged, or
//! one lease and a tenth after it was published: by then no instance can
//! answer from what it removed. See the project's decisions 0016 and 0025.
//!
//! ## Message format
//!
//! An invalidation is text, one word per line: the origin (`@` and a random
//! token), optionally an acknowledgement request (`#N`), then the names.
//! `*` drops everything. A heartbeat is `ORIGIN\n~N`. An acknowledgement,
//! sent on the requester's own channel, is `N\nORIGIN`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod bus;
mod caching;
pub mod names;

use std::sync::Arc;

use async_trait::async_trait;
use idweb::{
    Clock, PartitionKey, PartitionWrite, Session, SessionId, SignOutOutcome, SignOutRequest, Store,
    StoreError, StoredPartition, Tombstone,
};

pub use caching::{BusSink, CacheOptions, CachingStore};

/// The word of an invalidation that drops every cached entry.
pub const DROP_ALL: &str = "*";

/// A shared store the in-process cache can sit in front of: its writes
/// carry an announcement, and an instance can listen to the announcements
/// of all instances.
///
/// Each `*_announced` write does what the [`Store`] method of the same name
/// does and publishes `message` on the store's invalidation channel:
/// atomically with the write where the store can (the same transaction), or
/// right after it succeeded. A write refused by the contract
/// (`SignedOut`, `Conflict`) may or may not publish it (an announcement is
/// only ever a request to drop entries). [`StoreError::Unavailable`] means
/// the write or its announcement may not have happened: the cache then
/// queues the announcement and publishes it later, unless
/// [`announces_in_transaction`](Self::announces_in_transaction).
#[async_trait]
pub trait L1Backend: Store + Clone {
    /// The clock that decides expiry (the store's).
    fn clock(&self) -> Arc<dyn Clock>;

    /// Whether each announcement is published in the same transaction as
    /// its write (committed together or not at all). Then a failed write
    /// is never announced again later: either it committed, and every
    /// listening connection heard it, or nothing happened. Default `false`
    /// (announcements published after the write, queued when that failed).
    fn announces_in_transaction(&self) -> bool {
        false
    }

    /// Like `get_partition`, with the expiry of the partition's session for
    /// a session partition (so that L1 never answers past it), read in one
    /// consistent step.
    async fn read_partition(
        &self,
        key: &PartitionKey,
    ) -> Result<Option<(StoredPartition, Option<i64>)>, StoreError>;

    /// `put_session`, announced.
    async fn put_session_announced(
        &self,
        session: &Session,
        message: &str,
    ) -> Result<(), StoreError>;

    /// `remove_session`, announced.
    async fn remove_session_announced(
        &self,
        id: &SessionId,
        message: &str,
    ) -> Result<Option<Session>, StoreError>;

    /// `write_partition`, announced.
    async fn write_partition_announced(
        &self,
        key: &PartitionKey,
        write: PartitionWrite,
        message: &str,
    ) -> Result<u64, StoreError>;

    /// `remove_partition`, announced.
    async fn remove_partition_announced(
        &self,
        key: &PartitionKey,
        message: &str,
    ) -> Result<bool, StoreError>;

    /// `put_tombstone`, announced.
    async fn put_tombstone_announced(
        &self,
        tombstone: &Tombstone,
        message: &str,
    ) -> Result<(), StoreError>;

    /// The atomic `Store::sign_out`, announcing (in the same step, unless
    /// nothing was written: a replay, or `only_if_found` with no session)
    /// `ORIGIN\nFIRST_WORD\nWORDS`, where the words name the tombstone's
    /// selector ([`names::tombstone_word`]) and each removed session and
    /// its partition (or are `*` when they would not fit the bus's
    /// message). `words` receives the words announced (or, on failure,
    /// those that would have been, when known), `first_word` first.
    ///
    /// `None` when this store cannot sign out in one step (a Redis
    /// Cluster): the cache then signs out step by step through itself
    /// (`idweb::sign_out_in_order`), each step announced.
    async fn sign_out_announced(
        &self,
        request: &SignOutRequest,
        origin: &str,
        first_word: &str,
        words: &mut Vec<String>,
    ) -> Option<Result<SignOutOutcome, StoreError>>;

    /// Publishes `message` on the invalidation channel, outside of any
    /// write.
    async fn publish(&self, message: &str) -> Result<(), StoreError>;

    /// Opens a connection of its own that listens to the invalidation
    /// channel and to the acknowledgement channel of `origin`, feeding what
    /// it hears (and its loss) to `sink`. Returns once listening is
    /// confirmed, so that every message published from then on is heard.
    /// Dropping the returned connection stops listening.
    async fn listen(
        &self,
        origin: &str,
        sink: BusSink,
    ) -> Result<Arc<dyn BusConnection>, StoreError>;
}

/// A live listening connection of an [`L1Backend`], through which the cache
/// also publishes its heartbeats and acknowledgements (so that a connection
/// that can no longer publish is found out by the next heartbeat).
#[async_trait]
pub trait BusConnection: Send + Sync + 'static {
    /// Publishes `message` on the invalidation channel.
    async fn publish(&self, message: &str) -> Result<(), StoreError>;

    /// Publishes `message` on the acknowledgement channel of instance `to`
    /// (its origin word).
    async fn acknowledge(&self, to: &str, message: &str) -> Result<(), StoreError>;
}
