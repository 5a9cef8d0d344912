//! [`CachingStore`]: an in-process cache (L1) in front of an [`L1Backend`],
//! kept coherent across instances by the backend's invalidation bus, and
//! bypassed whenever it cannot be known to be coherent.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use idweb::{
    Clock, LockToken, PartitionKey, PartitionWrite, Session, SessionId, SessionLookup,
    SignOutOutcome, SignOutRequest, Store, StoreError, StoreStats, StoredPartition, Tombstone,
};
use tokio::sync::{Notify, mpsc};

use crate::names::{
    partition_word, selector_tag, session_partition_word, session_selectors, session_tag,
    session_word, tombstone_word,
};
use crate::{BusConnection, DROP_ALL, L1Backend};

/// How long one publication on the bus may take.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

/// How long establishing a listening connection may take.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(4);

/// Heartbeats per lease: each instance publishes a heartbeat this many
/// times per lease period, and renews its lease when it hears its own
/// heartbeat back (see "Leases and acknowledged sign-outs" in
/// [`CachingStore`]).
const HEARTBEATS_PER_LEASE: u32 = 5;

/// Heartbeats sent and not yet heard back, kept at most.
const MAX_PENDING_HEARTBEATS: usize = 64;

/// Waits between subscription attempts.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Invalidations waiting to be published (their write succeeded but the
/// publish did not) beyond which they are replaced by "drop everything".
const MAX_OUTBOX: usize = 1_000;

/// The first character of the word naming the instance that sent a message.
const ORIGIN: char = '@';

/// The first character of a heartbeat's word (followed by its number).
const HEARTBEAT: char = '~';

/// The first character of the word asking every instance to acknowledge an
/// invalidation (followed by its number).
const ACK_REQUEST: char = '#';

/// Limits of the in-process cache.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct CacheOptions {
    /// Entries kept at most (sessions and partitions together); when full,
    /// an arbitrary entry makes room. Default 10 000.
    pub max_entries: usize,
    /// Age after which an entry is read from the store again, whatever the
    /// invalidations said: a safety net, not the coherence mechanism.
    /// Default 60 s.
    pub max_age: Duration,
    /// How long an instance answers from L1 after it last heard its own
    /// heartbeat back over the invalidation channel (counted from when
    /// that heartbeat was sent), and so the longest a sign-out waits for an
    /// instance that does not acknowledge it. Must exceed a round trip to
    /// the store, or L1 never answers. Default 250 ms.
    pub lease: Duration,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            max_age: Duration::from_secs(60),
            lease: Duration::from_millis(250),
        }
    }
}

impl CacheOptions {
    /// With at most `n` entries.
    pub fn max_entries(mut self, n: usize) -> Self {
        self.max_entries = n;
        self
    }

    /// With entries kept at most `age`.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = age;
        self
    }

    /// With a lease of `lease` (see [`lease`](Self::lease)).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long past its announcement a sign-out waits at most: the lease
    /// and a tenth more, for clocks that run at slightly different rates.
    fn ack_deadline(&self) -> Duration {
        self.lease + self.lease / 10
    }
}

/// An [`idweb::Store`] that answers `get_session`, `get_partition` and
/// `partition_version` from process memory when it can, and from the store
/// `B` otherwise. See the [crate documentation](crate) for the
/// invalidation protocol, the fail-closed rule, leases and acknowledged
/// sign-outs.
///
/// Every write goes to the store with its announcement, and drops this
/// instance's own entries; a background task (one listening connection per
/// `CachingStore`) drops the entries that other instances announce, and
/// publishes this instance's heartbeats and acknowledgements. Dropping the
/// `CachingStore` stops that task.
///
/// Sign-out writes (`remove_session`, `remove_partition`, `put_tombstone`,
/// `sign_out`) return only once no instance can still answer from what
/// they removed: every instance heard heartbeating during the last lease
/// has acknowledged the invalidation, or one lease (and a tenth) has passed
/// since it was published.
pub struct CachingStore<B: L1Backend> {
    inner: B,
    shared: Arc<Shared>,
    subscriber: tokio::task::JoinHandle<()>,
}

impl<B: L1Backend> fmt::Debug for CachingStore<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachingStore")
            .field("store", &self.inner)
            .field("options", &self.shared.options)
            .field("l1_active", &self.l1_active())
            .field("l1_len", &self.l1_len())
            .finish()
    }
}

impl<B: L1Backend> Drop for CachingStore<B> {
    fn drop(&mut self) {
        self.subscriber.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where a listening connection delivers what it hears: the messages of the
/// invalidation channel, the acknowledgements addressed to this instance,
/// and the loss of the connection. Given to [`L1Backend::listen`]; holds
/// the cache weakly (a connection outliving its cache feeds nothing).
#[derive(Clone)]
pub struct BusSink {
    shared: Weak<Shared>,
    generation: u64,
}

impl fmt::Debug for BusSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusSink")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl BusSink {
    /// A message of the invalidation channel (an invalidation or a
    /// heartbeat), in the order the bus delivered it.
    pub fn message(&self, text: &str) {
        if let Some(shared) = self.shared.upgrade()
            && shared.generation.load(Ordering::SeqCst) == self.generation
        {
            shared.on_message(text);
        }
    }

    /// A message of this instance's acknowledgement channel.
    pub fn acknowledgement(&self, text: &str) {
        if let Some(shared) = self.shared.upgrade() {
            shared.on_ack(text);
        }
    }

    /// The connection is lost (closed, failed, or no longer listening):
    /// L1 stops answering and is emptied until a new connection listens.
    pub fn lost(&self) {
        if let Some(shared) = self.shared.upgrade() {
            shared.connection_lost(self.generation);
            // A connection given up already must not end its successor.
            if shared.generation.load(Ordering::SeqCst) == self.generation {
                shared.request_resubscribe();
            }
        }
    }
}

/// State shared by the store and its subscriber task.
/// The L1 names of one session id.
#[derive(Clone)]
struct SessionNames {
    session: Arc<str>,
    partition: Arc<str>,
}

struct Shared {
    /// This instance's word in the messages it sends (`@` and a random
    /// token): its own echoes are skipped, its writes having dropped its
    /// entries already.
    origin: String,
    l1: Mutex<L1>,
    /// Whether the subscription is known to be live and L1 was cleared
    /// since it became so. L1 is neither read nor filled otherwise.
    active: AtomicBool,
    /// The subscription connection's number; a connection's late events
    /// do not touch its successor.
    generation: AtomicU64,
    /// The number of the last connection known to have failed.
    failed_generation: AtomicU64,
    /// Requests to subscribe afresh (counted, so that a subscription ends
    /// only for requests made after it went live), and their wake-up.
    resubscribe_requests: AtomicU64,
    wake: Notify,
    outbox: Mutex<Vec<String>>,
    hits: AtomicU64,
    misses: AtomicU64,
    metrics: L1Metrics,
    options: CacheOptions,
    clock: Arc<dyn Clock>,
    /// The origin of the times below.
    base: Instant,
    /// Until when (nanoseconds since `base`) L1 may answer; 0 for never.
    lease_until: AtomicU64,
    /// Since when (nanoseconds since `base`, plus one) the subscription has
    /// been live; 0 while it is not.
    live_since: AtomicU64,
    /// Heartbeats sent and not yet heard back: number and time sent.
    heartbeats: Mutex<VecDeque<(u64, Instant)>>,
    /// The L1 names of a session id's session and partition, memoised:
    /// each is derived from a SHA-256 of the id (the bus never carries raw ids),
    /// which would otherwise be computed again on every request.
    /// foldhash, as `L1`'s maps.
    names: Mutex<hashbrown::HashMap<SessionId, SessionNames>>,
    next_heartbeat: AtomicU64,
    /// Other instances, by origin word: when their last heartbeat arrived.
    members: Mutex<HashMap<String, Instant>>,
    /// Invalidations of this instance awaiting acknowledgement, by number.
    acks: Mutex<HashMap<u64, AckState>>,
    next_ack: AtomicU64,
    ack_arrived: Notify,
    /// Acknowledgements to publish: (the requester's origin, its number).
    ack_out: mpsc::UnboundedSender<(String, String)>,
    ack_in: Mutex<Option<mpsc::UnboundedReceiver<(String, String)>>>,
}

/// The L1's metrics (names in docs/OBSERVABILITY.md), registered once.
struct L1Metrics {
    hits: metrics::Counter,
    misses: metrics::Counter,
    invalidations: metrics::Counter,
    subscribed: metrics::Gauge,
}

impl L1Metrics {
    fn new() -> Self {
        Self {
            hits: metrics::counter!("idweb_l1_hits_total"),
            misses: metrics::counter!("idweb_l1_misses_total"),
            invalidations: metrics::counter!("idweb_l1_invalidations_total"),
            subscribed: metrics::gauge!("idweb_l1_subscribed"),
        }
    }
}

/// What is known of one invalidation awaiting acknowledgement.
#[derive(Default)]
struct AckState {
    /// Set when this instance heard its own invalidation back: the
    /// instances that must acknowledge it, or `None` when that cannot be
    /// known (the subscription was not live for a whole lease before), in
    /// which case only the lease bounds the wait.
    needed: Option<Option<HashSet<String>>>,
    /// Instances that acknowledged it.
    acked: HashSet<String>,
}

impl AckState {
    fn complete(&self) -> bool {
        matches!(&self.needed, Some(Some(needed)) if needed.is_subset(&self.acked))
    }
}

/// A pending acknowledgement: its number, and the word asking for it.
struct AckRequest {
    id: u64,
    word: String,
}

struct L1 {
    /// Changes with every invalidation and clear: a value read from the store
    /// is kept only if no invalidation happened while it was being read.
    epoch: u64,
    /// foldhash: the keys are derived from random session ids, or name
    /// the app's own partitions.
    entries: hashbrown::HashMap<String, Slot>,
    /// The keys of the cached sessions of each selector tag, so that a
    /// tombstone drops its sessions without a walk over every entry.
    by_selector: hashbrown::HashMap<String, HashSet<String>>,
}

impl L1 {
    fn new() -> Self {
        Self {
            epoch: 0,
            entries: hashbrown::HashMap::new(),
            by_selector: hashbrown::HashMap::new(),
        }
    }

    fn insert(&mut self, key: String, slot: Slot) {
        if let Cached::Session { selectors, .. } = &slot.value {
            for s in selectors {
                self.by_selector
                    .entry(s.clone())
                    .or_default()
                    .insert(key.clone());
            }
        }
        if let Some(old) = self.entries.insert(key.clone(), slot) {
            self.unindex(&key, &old);
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.entries.remove(key) {
            self.unindex(key, &old);
        }
    }

    /// Takes `key` out of the selector index where `old` (no longer its
    /// value) put it and its current value does not.
    fn unindex(&mut self, key: &str, old: &Slot) {
        let Cached::Session { selectors, .. } = &old.value else {
            return;
        };
        for s in selectors {
            let kept = matches!(self.entries.get(key),
                Some(Slot { value: Cached::Session { selectors: now, .. }, .. }) if now.contains(s));
            if kept {
                continue;
            }
            if let Some(keys) = self.by_selector.get_mut(s) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_selector.remove(s);
                }
            }
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.by_selector.clear();
    }

    /// Drops the sessions a tombstone of `selector` names, and their
    /// partitions.
    fn drop_selector(&mut self, selector: &str) {
        let Some(doomed) = self.by_selector.remove(selector) else {
            return;
        };
        for k in doomed {
            self.remove(&format!("p:{k}"));
            self.remove(&k);
        }
    }
}

/// The version of the partition `c` holds, if its session (if any) is live
/// at `now`.
fn live_version(c: &Cached, now: i64) -> Option<u64> {
    match c {
        Cached::Partition {
            partition,
            session_expires_at,
        } if session_expires_at.is_none_or(|e| e > now) => Some(partition.version),
        _ => None,
    }
}

/// The session `c` holds if it is session `id` and live at `now`.
fn live_session<'a>(c: &'a Cached, id: &SessionId, now: i64) -> Option<&'a Session> {
    match c {
        Cached::Session { session, .. } if session.id.matches(id) && !session.is_expired(now) => {
            Some(session)
        }
        _ => None,
    }
}

struct Slot {
    value: Cached,
    stored: Instant,
}

impl Slot {
    /// Whether the entry may still answer at `at`.
    fn fresh_at(&self, at: Instant, max_age: Duration) -> bool {
        at.saturating_duration_since(self.stored) < max_age
    }
}

#[derive(Clone)]
enum Cached {
    Session {
        session: Session,
        /// The session's selector tags (to honour tombstone messages).
        selectors: Vec<String>,
    },
    Partition {
        partition: StoredPartition,
        /// The session's expiry, for a session partition.
        session_expires_at: Option<i64>,
    },
}

impl Shared {
    fn new(options: CacheOptions, clock: Arc<dyn Clock>) -> Self {
        let (ack_out, ack_in) = mpsc::unbounded_channel();
        Self {
            origin: format!("{ORIGIN}{}", LockToken::generate().as_str()),
            l1: Mutex::new(L1::new()),
            active: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            failed_generation: AtomicU64::new(0),
            resubscribe_requests: AtomicU64::new(0),
            wake: Notify::new(),
            outbox: Mutex::new(Vec::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            metrics: L1Metrics::new(),
            options,
            clock,
            base: Instant::now(),
            lease_until: AtomicU64::new(0),
            live_since: AtomicU64::new(0),
            heartbeats: Mutex::new(VecDeque::new()),
            names: Mutex::new(hashbrown::HashMap::new()),
            next_heartbeat: AtomicU64::new(0),
            members: Mutex::new(HashMap::new()),
            acks: Mutex::new(HashMap::new()),
            next_ack: AtomicU64::new(0),
            ack_arrived: Notify::new(),
            ack_out,
            ack_in: Mutex::new(Some(ack_in)),
        }
    }

    /// Nanoseconds from `base` to `t` (at least 1, so that 0 means "never").
    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.base).as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Whether L1 may answer now: the subscription is live and the lease
    /// is held.
    fn serving(&self) -> bool {
        self.serving_at(Instant::now())
    }

    /// [`serving`](Self::serving) at instant `t`.
    fn serving_at(&self, t: Instant) -> bool {
        self.active() && self.nanos(t) < self.lease_until.load(Ordering::SeqCst)
    }

    /// Records a heartbeat about to be published; returns its word.
    fn heartbeat_sent(&self) -> String {
        let n = self.next_heartbeat.fetch_add(1, Ordering::SeqCst);
        let mut sent = lock(&self.heartbeats);
        if sent.len() >= MAX_PENDING_HEARTBEATS {
            sent.pop_front();
        }
        sent.push_back((n, Instant::now()));
        format!("{HEARTBEAT}{n}")
    }

    /// This instance heard its heartbeat `n` back: every message published
    /// before it has been applied, so the lease runs until one lease after
    /// the heartbeat was sent.
    fn heartbeat_heard(&self, n: u64) {
        let sent_at = {
            let mut sent = lock(&self.heartbeats);
            let mut found = None;
            while let Some(&(m, at)) = sent.front() {
                if m > n {
                    break;
                }
                sent.pop_front();
                if m == n {
                    found = Some(at);
                }
            }
            found
        };
        if let Some(at) = sent_at
            && self.active()
        {
            self.lease_until
                .fetch_max(self.nanos(at + self.options.lease), Ordering::SeqCst);
        }
    }

    /// Another instance's heartbeat arrived.
    fn member_heard(&self, origin: &str) {
        let now = Instant::now();
        let mut members = lock(&self.members);
        if members.len() > 1_000 {
            let keep = self.options.lease * 10;
            members.retain(|_, at| now.duration_since(*at) < keep);
        }
        members.insert(origin.to_string(), now);
    }

    /// Starts awaiting acknowledgements of an invalidation.
    fn expect_acks(&self) -> AckRequest {
        let id = self.next_ack.fetch_add(1, Ordering::SeqCst);
        lock(&self.acks).insert(id, AckState::default());
        AckRequest {
            id,
            word: format!("{ACK_REQUEST}{id}"),
        }
    }

    /// This instance heard its own invalidation `id` back: every heartbeat
    /// published before it has arrived, so the instances that may hold a
    /// lease from before it are those heard within the last lease — known
    /// only if the subscription has been live for a whole lease.
    fn own_invalidation_heard(&self, id: u64) {
        let now = Instant::now();
        let lease = self.options.lease;
        let live_since = self.live_since.load(Ordering::SeqCst);
        let known = self.active() && live_since != 0 && {
            let since = self.base + Duration::from_nanos(live_since);
            now.saturating_duration_since(since) >= lease
        };
        let needed = known.then(|| {
            lock(&self.members)
                .iter()
                .filter(|(_, at)| now.saturating_duration_since(**at) < lease)
                .map(|(origin, _)| origin.clone())
                .collect()
        });
        if let Some(state) = lock(&self.acks).get_mut(&id) {
            state.needed = Some(needed);
        }
        self.ack_arrived.notify_waiters();
    }

    /// Instance `from` acknowledged invalidation `id`.
    fn ack_heard(&self, id: u64, from: &str) {
        if let Some(state) = lock(&self.acks).get_mut(&id) {
            state.acked.insert(from.to_string());
        }
        self.ack_arrived.notify_waiters();
    }

    /// Waits until every instance that may answer from its L1 has
    /// acknowledged `request`, or until `deadline`.
    async fn await_acks(&self, request: &AckRequest, deadline: Instant) {
        loop {
            let arrived = self.ack_arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let complete = lock(&self.acks)
                .get(&request.id)
                .is_none_or(AckState::complete);
            if complete {
                break;
            }
            let sleep = tokio::time::sleep_until(deadline.into());
            tokio::select! {
                () = arrived => {}
                () = sleep => break,
            }
        }
        lock(&self.acks).remove(&request.id);
    }

    /// Handles one message of the invalidation channel.
    fn on_message(&self, text: &str) {
        let words: Vec<&str> = text.split('\n').filter(|w| !w.is_empty()).collect();
        let origin = words.first().copied().filter(|w| w.starts_with(ORIGIN));
        let mine = origin == Some(self.origin.as_str());
        if let [_, beat] = words.as_slice()
            && let Some(n) = beat.strip_prefix(HEARTBEAT)
        {
            match (mine, origin) {
                (true, _) => {
                    if let Ok(n) = n.parse() {
                        self.heartbeat_heard(n);
                    }
                }
                (false, Some(origin)) => self.member_heard(origin),
                (false, None) => {}
            }
            return;
        }
        let request = words.iter().find_map(|w| w.strip_prefix(ACK_REQUEST));
        if mine {
            if let Some(id) = request.and_then(|id| id.parse().ok()) {
                self.own_invalidation_heard(id);
            }
            return;
        }
        self.invalidate(&words);
        if let (Some(origin), Some(id)) = (origin, request) {
            // Dropped already (above): now say so.
            let _ = self.ack_out.send((origin.to_string(), id.to_string()));
        }
    }

    /// Handles an acknowledgement addressed to this instance: `ID` and the
    /// acknowledging instance's origin word.
    fn on_ack(&self, text: &str) {
        if let Some((id, from)) = text.split_once('\n')
            && let Ok(id) = id.parse()
        {
            self.ack_heard(id, from);
        }
    }

    fn l1(&self) -> MutexGuard<'_, L1> {
        lock(&self.l1)
    }

    fn active(&self) -> bool {
        self.active.load(Ordering::SeqCst)
    }

    /// Stops using L1 (and empties it) until the next activation.
    fn deactivate(&self) {
        self.active.store(false, Ordering::SeqCst);
        self.metrics.subscribed.set(0.0);
        self.lease_until.store(0, Ordering::SeqCst);
        self.live_since.store(0, Ordering::SeqCst);
        let mut l1 = self.l1();
        l1.epoch += 1;
        l1.clear();
    }

    /// Starts using L1, empty, unless connection `generation` failed already.
    fn activate(&self, generation: u64) -> bool {
        let mut l1 = self.l1();
        if self.failed_generation.load(Ordering::SeqCst) == generation
            || self.generation.load(Ordering::SeqCst) != generation
        {
            return false;
        }
        l1.epoch += 1;
        l1.clear();
        self.live_since
            .store(self.nanos(Instant::now()), Ordering::SeqCst);
        self.active.store(true, Ordering::SeqCst);
        self.metrics.subscribed.set(1.0);
        true
    }

    /// Connection `generation` is lost (or given up).
    fn connection_lost(&self, generation: u64) {
        self.failed_generation.store(generation, Ordering::SeqCst);
        if self.generation.load(Ordering::SeqCst) == generation {
            self.deactivate();
        }
    }

    /// Asks the subscriber task to subscribe afresh.
    fn request_resubscribe(&self) {
        self.resubscribe_requests.fetch_add(1, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// The store failed under an operation: the subscription may have
    /// missed messages too, so L1 is dropped until it has subscribed again.
    fn store_failed(&self) {
        self.deactivate();
        self.request_resubscribe();
    }

    /// The epoch to quote when filling L1 after a read, if L1 is in use.
    fn ticket(&self) -> Option<u64> {
        let l1 = self.l1();
        self.active().then_some(l1.epoch)
    }

    /// The L1 names of session `id` (memoised; at most `max_entries` kept).
    fn names_of(&self, id: &SessionId) -> SessionNames {
        if let Some(n) = lock(&self.names).get(id) {
            return n.clone();
        }
        let tag = session_tag(id);
        let names = SessionNames {
            session: session_word(&tag).into(),
            partition: session_partition_word(&tag).into(),
        };
        let mut memo = lock(&self.names);
        if memo.len() >= self.options.max_entries.max(1) {
            memo.clear();
        }
        memo.insert(id.clone(), names.clone());
        names
    }

    fn lookup(&self, key: &str) -> Option<Cached> {
        self.peek(key, Cached::clone)
    }

    /// `read` of the cached value of `key`, without copying the value out,
    /// when L1 may answer.
    fn peek<R>(&self, key: &str, read: impl FnOnce(&Cached) -> R) -> Option<R> {
        let at = Instant::now();
        if !self.serving_at(at) {
            return None;
        }
        let mut l1 = self.l1();
        let slot = l1.entries.get(key)?;
        if !slot.fresh_at(at, self.options.max_age) {
            l1.remove(key);
            return None;
        }
        Some(read(&slot.value))
    }

    /// Session `id` (named `names`) and its partition's version, as of one
    /// instant of L1: `None` unless L1 may answer and holds the session
    /// (live at `now`); the version `None` unless it holds the partition.
    fn session_and_version(
        &self,
        names: &SessionNames,
        id: &SessionId,
        now: i64,
    ) -> Option<(Session, Option<u64>)> {
        let at = Instant::now();
        if !self.serving_at(at) {
            return None;
        }
        let l1 = self.l1();
        let fresh = |key: &str| {
            l1.entries
                .get(key)
                .filter(|slot| slot.fresh_at(at, self.options.max_age))
                .map(|slot| &slot.value)
        };
        let session = live_session(fresh(&names.session)?, id, now)?.clone();
        let version = fresh(&names.partition).and_then(|c| live_version(c, now));
        Some((session, version))
    }

    fn fill(&self, ticket: Option<u64>, key: String, value: Cached) {
        let Some(ticket) = ticket else { return };
        if self.options.max_entries == 0 {
            return;
        }
        let mut l1 = self.l1();
        if !self.active() || l1.epoch != ticket {
            return;
        }
        if l1.entries.len() >= self.options.max_entries
            && !l1.entries.contains_key(&key)
            && let Some(victim) = l1.entries.keys().next().cloned()
        {
            l1.remove(&victim);
        }
        l1.insert(
            key,
            Slot {
                value,
                stored: Instant::now(),
            },
        );
    }

    /// Drops the entries named by the words of an invalidation message.
    fn invalidate<S: AsRef<str>>(&self, words: &[S]) {
        self.metrics.invalidations.increment(1);
        let mut l1 = self.l1();
        l1.epoch += 1;
        for word in words {
            let word = word.as_ref();
            if word.starts_with([ORIGIN, ACK_REQUEST, HEARTBEAT]) {
                continue;
            }
            if word == DROP_ALL {
                l1.clear();
            } else if let Some(selector) = word.strip_prefix("t:") {
                // A tombstone: drop the sessions it names, and their partitions.
                l1.drop_selector(selector);
            } else {
                l1.remove(word);
            }
        }
    }

    fn queue(&self, payload: String) {
        let mut outbox = lock(&self.outbox);
        if outbox.len() >= MAX_OUTBOX {
            outbox.clear();
            outbox.push(DROP_ALL.to_string());
        } else {
            outbox.push(payload);
        }
    }
}

/// Publishes what waits in the outbox; `false` when the bus refused.
async fn flush_outbox(shared: &Shared, conn: &dyn BusConnection) -> bool {
    let pending: Vec<String> = { std::mem::take(&mut *lock(&shared.outbox)) };
    if pending.is_empty() {
        return true;
    }
    // Each queued message starts with the origin word: sent one by one.
    let mut failed = Vec::new();
    for p in pending {
        if !failed.is_empty() {
            failed.push(p);
            continue;
        }
        let sent = tokio::time::timeout(PUBLISH_TIMEOUT, conn.publish(&p)).await;
        if !matches!(sent, Ok(Ok(()))) {
            failed.push(p);
        }
    }
    let ok = failed.is_empty();
    for p in failed {
        shared.queue(p);
    }
    ok
}

/// Watches a live subscription until it must end: a heartbeat cannot be
/// published, or a resubscription is requested after `requests` were
/// counted. Meanwhile publishes this instance's heartbeats and its
/// acknowledgements of other instances' invalidations.
async fn watch(
    shared: &Shared,
    conn: &Arc<dyn BusConnection>,
    requests: u64,
    acks: &mut mpsc::UnboundedReceiver<(String, String)>,
) {
    let every = (shared.options.lease / HEARTBEATS_PER_LEASE).max(Duration::from_millis(1));
    let mut heartbeats = tokio::task::JoinSet::new();
    let mut beat = tokio::time::interval(every);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shared.wake.notified() => {
                if shared.resubscribe_requests.load(Ordering::SeqCst) != requests {
                    return;
                }
            }
            Some((to, id)) = acks.recv() => {
                let c = conn.clone();
                let payload = format!("{id}\n{}", shared.origin);
                // Not awaited here: heartbeats go on meanwhile. A lost
                // acknowledgement only makes the sign-out wait its lease.
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(PUBLISH_TIMEOUT, c.acknowledge(&to, &payload)).await;
                });
            }
            _ = beat.tick() => {
                // Published without waiting here, so that acknowledgements
                // never queue behind a heartbeat's reply.
                let c = conn.clone();
                let message = format!("{}\n{}", shared.origin, shared.heartbeat_sent());
                heartbeats.spawn(async move {
                    let sent = tokio::time::timeout(PUBLISH_TIMEOUT, c.publish(&message)).await;
                    matches!(sent, Ok(Ok(())))
                });
                flush_outbox(shared, conn.as_ref()).await;
            }
            Some(sent) = heartbeats.join_next() => {
                if !matches!(sent, Ok(true)) {
                    return;
                }
            }
        }
    }
}

/// The subscriber task: listen, clear and enable L1, watch the
/// connection; on any doubt disable L1 and start again.
async fn run_subscriber<B: L1Backend>(shared: Arc<Shared>, store: B) {
    let Some(mut acks) = lock(&shared.ack_in).take() else {
        return;
    };
    let mut backoff = MIN_BACKOFF;
    loop {
        shared.deactivate();
        let generation = shared.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let sink = BusSink {
            shared: Arc::downgrade(&shared),
            generation,
        };
        let attempt =
            tokio::time::timeout(LISTEN_TIMEOUT, store.listen(&shared.origin, sink)).await;
        match attempt {
            Ok(Ok(conn)) => {
                let requests = shared.resubscribe_requests.load(Ordering::SeqCst);
                // Refused when the connection was lost since it listened.
                if shared.activate(generation) {
                    tracing::debug!("invalidation listener live; L1 enabled");
                    backoff = MIN_BACKOFF;
                    flush_outbox(&shared, conn.as_ref()).await;
                    watch(&shared, &conn, requests, &mut acks).await;
                    tracing::warn!("invalidation listener lost; L1 disabled");
                }
                shared.connection_lost(generation);
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot listen for invalidations"),
            Err(_) => tracing::debug!("listening for invalidations timed out"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

impl<B: L1Backend> CachingStore<B> {
    /// An L1 cache with the default [`CacheOptions`] in front of `store`.
    /// Reads go to the store until the listening connection is live.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when called outside a Tokio runtime (the
    /// subscriber task needs one).
    pub fn new(store: B) -> Result<Self, StoreError> {
        Self::with_options(store, CacheOptions::default())
    }

    /// Like [`new`](Self::new), with `options`.
    ///
    /// # Errors
    /// As for [`new`](Self::new).
    pub fn with_options(store: B, options: CacheOptions) -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            StoreError::Unavailable("the in-process cache needs a Tokio runtime".into())
        })?;
        let shared = Arc::new(Shared::new(options, store.clock()));
        let subscriber = runtime.spawn(run_subscriber(shared.clone(), store.clone()));
        Ok(Self {
            inner: store,
            shared,
            subscriber,
        })
    }

    /// The store behind the cache.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// Whether reads may be answered from L1: the listening connection is
    /// live, L1 was emptied after it became so, and the lease is held.
    pub fn l1_active(&self) -> bool {
        self.shared.serving()
    }

    /// Waits until [`l1_active`](Self::l1_active) or `timeout`; returns
    /// whether L1 is active.
    pub async fn wait_until_active(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.l1_active() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.l1_active()
    }

    /// Reads answered from L1.
    pub fn l1_hits(&self) -> u64 {
        self.shared.hits.load(Ordering::Relaxed)
    }

    /// Cacheable reads (`get_session`, `get_partition`, `partition_version`)
    /// that went to the store.
    pub fn l1_misses(&self) -> u64 {
        self.shared.misses.load(Ordering::Relaxed)
    }

    /// Entries in L1 now.
    pub fn l1_len(&self) -> usize {
        self.shared.l1().entries.len()
    }

    /// The message announcing `words`.
    fn message<S: AsRef<str>>(&self, words: &[S]) -> String {
        crate::names::message(&self.shared.origin, words)
    }

    /// Like [`written`](Self::written) for a write that signs out: the
    /// announcement asks every instance to acknowledge it, and the call
    /// returns once [`acknowledged`](Self::acknowledged) says that no
    /// instance can still answer from what it removed.
    async fn written_acknowledged<T, F>(
        &self,
        mut words: Vec<String>,
        write: impl FnOnce(String) -> F,
    ) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, StoreError>>,
    {
        let request = self.shared.expect_acks();
        words.insert(0, request.word.clone());
        let r = self.written(words, write).await;
        if r.is_ok() {
            self.acknowledged(request, Instant::now()).await;
        } else {
            lock(&self.shared.acks).remove(&request.id);
        }
        r
    }

    /// The step a sign-out takes after its write and the announcement
    /// carrying `request`'s word were published (at `published_at`):
    /// waits until every instance heard heartbeating within the last
    /// lease has acknowledged it, or until one lease and a tenth after
    /// `published_at`, whichever comes first. Either way, when it returns
    /// no instance can answer from L1 what the announcement named: it has
    /// dropped it, or its lease has lapsed and any renewal comes from a
    /// heartbeat published after the announcement, hence heard after it.
    async fn acknowledged(&self, request: AckRequest, published_at: Instant) {
        let deadline = published_at + self.shared.options.ack_deadline();
        self.shared.await_acks(&request, deadline).await;
    }

    /// The L1 name of partition `key` (memoised for session partitions).
    /// Reads partition `key` (L1 name `name`) from the store and caches it
    /// under `ticket` (unless an invalidation overlapped the read).
    async fn read_and_fill(
        &self,
        key: &PartitionKey,
        name: &str,
        ticket: Option<u64>,
    ) -> Result<Option<StoredPartition>, StoreError> {
        let r = self.seen(self.inner.read_partition(key).await)?;
        Ok(r.map(|(partition, session_expires_at)| {
            self.shared.fill(
                ticket,
                name.to_string(),
                Cached::Partition {
                    partition: partition.clone(),
                    session_expires_at,
                },
            );
            partition
        }))
    }

    fn partition_name(&self, key: &PartitionKey) -> Result<Arc<str>, StoreError> {
        match key {
            PartitionKey::Session(id) => Ok(self.shared.names_of(id).partition),
            _ => partition_word(key)
                .map(Into::into)
                .ok_or_else(|| unsupported("partition key")),
        }
    }

    /// Passes a result through, disabling L1 when the store failed.
    fn seen<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if matches!(r, Err(StoreError::Unavailable(_))) {
            self.shared.store_failed();
        }
        r
    }

    /// A write with its announcement of `words`: runs `write` (given the
    /// message), then drops this instance's entries. A write the store
    /// refused wrote nothing; one that may or may not have happened (or
    /// whose announcement may not have been published) is announced again
    /// when the store answers — unless the store announces in the write's
    /// own transaction.
    async fn written<T, F>(
        &self,
        words: Vec<String>,
        write: impl FnOnce(String) -> F,
    ) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, StoreError>>,
    {
        let message = self.message(&words);
        let r = write(message.clone()).await;
        self.shared.invalidate(&words);
        match r {
            Err(e @ StoreError::Unavailable(_)) => {
                if !self.inner.announces_in_transaction() {
                    self.shared.queue(message);
                }
                self.shared.store_failed();
                Err(e)
            }
            r => r,
        }
    }
}

fn unsupported(what: &str) -> StoreError {
    StoreError::Unavailable(format!("the in-process cache does not know this {what}").into())
}

#[async_trait]
impl<B: L1Backend> Store for CachingStore<B> {
    async fn put_session(&self, session: &Session) -> Result<(), StoreError> {
        let tag = session_tag(&session.id);
        let words = vec![session_word(&tag), session_partition_word(&tag)];
        self.written(words, |m| async move {
            self.inner.put_session_announced(session, &m).await
        })
        .await
    }

    async fn get_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        let key = self.shared.names_of(id).session;
        let now = self.shared.clock.unix_now();
        if let Some(Some(session)) = self
            .shared
            .peek(&key, |c| live_session(c, id, now).cloned())
        {
            self.shared.hits.fetch_add(1, Ordering::Relaxed);
            self.shared.metrics.hits.increment(1);
            return Ok(Some(session));
        }
        self.shared.misses.fetch_add(1, Ordering::Relaxed);
        self.shared.metrics.misses.increment(1);
        let ticket = self.shared.ticket();
        let r = self.seen(self.inner.get_session(id).await);
        if let Ok(Some(s)) = &r {
            let selectors = session_selectors(s);
            self.shared.fill(
                ticket,
                key.to_string(),
                Cached::Session {
                    session: s.clone(),
                    selectors,
                },
            );
        }
        r
    }

    /// From L1, under one lock, when it holds the session: the session and
    /// its partition's version if L1 holds that too (what
    /// [`partition_version`](Store::partition_version) would answer from
    /// it); otherwise [`get_session`](Store::get_session) alone.
    async fn get_session_and_partition_version(
        &self,
        id: &SessionId,
    ) -> Result<Option<(Session, Option<Option<u64>>)>, StoreError> {
        let names = self.shared.names_of(id);
        let now = self.shared.clock.unix_now();
        if let Some((session, version)) = self.shared.session_and_version(&names, id, now) {
            let hits = if version.is_some() { 2 } else { 1 };
            self.shared.hits.fetch_add(hits, Ordering::Relaxed);
            self.shared.metrics.hits.increment(hits);
            return Ok(Some((session, version.map(Some))));
        }
        Ok(self.get_session(id).await?.map(|s| (s, None)))
    }

    async fn remove_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        let tag = session_tag(id);
        let words = vec![session_word(&tag), session_partition_word(&tag)];
        self.written_acknowledged(words, |m| async move {
            self.inner.remove_session_announced(id, &m).await
        })
        .await
    }

    async fn find_sessions(&self, lookup: &SessionLookup) -> Result<Vec<SessionId>, StoreError> {
        self.seen(self.inner.find_sessions(lookup).await)
    }

    async fn session_count(&self) -> Result<u64, StoreError> {
        self.seen(self.inner.session_count().await)
    }

    async fn list_sessions(
        &self,
        after: Option<&SessionId>,
        limit: usize,
    ) -> Result<Vec<Session>, StoreError> {
        self.seen(self.inner.list_sessions(after, limit).await)
    }

    async fn get_partition(
        &self,
        key: &PartitionKey,
    ) -> Result<Option<StoredPartition>, StoreError> {
        let name = self.partition_name(key)?;
        if let Some(Cached::Partition {
            partition,
            session_expires_at,
        }) = self.shared.lookup(&name)
            && session_expires_at.is_none_or(|e| e > self.shared.clock.unix_now())
        {
            self.shared.hits.fetch_add(1, Ordering::Relaxed);
            self.shared.metrics.hits.increment(1);
            return Ok(Some(partition));
        }
        self.shared.misses.fetch_add(1, Ordering::Relaxed);
        self.shared.metrics.misses.increment(1);
        let ticket = self.shared.ticket();
        self.read_and_fill(key, &name, ticket).await
    }

    /// From L1 while it may answer (no round trip, nothing copied but the
    /// number): the version of the cached partition, exactly as coherent as
    /// a cached `get_partition`. On a miss while L1 serves, the partition is
    /// read whole and cached (one round trip, as for the version alone): the
    /// request path asks only for the version while its decoded view is
    /// current, so a miss that did not fill L1 would send every later
    /// request to the store once the entry had aged out. While L1 does not
    /// serve, the version alone, from the store.
    async fn partition_version(&self, key: &PartitionKey) -> Result<Option<u64>, StoreError> {
        let name = self.partition_name(key)?;
        let now = self.shared.clock.unix_now();
        let cached = self.shared.peek(&name, |c| live_version(c, now));
        if let Some(Some(version)) = cached {
            self.shared.hits.fetch_add(1, Ordering::Relaxed);
            self.shared.metrics.hits.increment(1);
            return Ok(Some(version));
        }
        self.shared.misses.fetch_add(1, Ordering::Relaxed);
        self.shared.metrics.misses.increment(1);
        match self.shared.ticket() {
            Some(ticket) => Ok(self
                .read_and_fill(key, &name, Some(ticket))
                .await?
                .map(|p| p.version)),
            None => self.seen(self.inner.partition_version(key).await),
        }
    }

    async fn write_partition(
        &self,
        key: &PartitionKey,
        write: PartitionWrite,
    ) -> Result<u64, StoreError> {
        let name = self.partition_name(key)?;
        self.written(vec![name.to_string()], |m| async move {
            self.inner.write_partition_announced(key, write, &m).await
        })
        .await
    }

    async fn remove_partition(&self, key: &PartitionKey) -> Result<bool, StoreError> {
        let name = self.partition_name(key)?;
        self.written_acknowledged(vec![name.to_string()], |m| async move {
            self.inner.remove_partition_announced(key, &m).await
        })
        .await
    }

    async fn put_tombstone(&self, tombstone: &Tombstone) -> Result<(), StoreError> {
        let tag = selector_tag(&tombstone.selector).ok_or_else(|| unsupported("selector"))?;
        self.written_acknowledged(vec![tombstone_word(&tag)], |m| async move {
            self.inner.put_tombstone_announced(tombstone, &m).await
        })
        .await
    }

    async fn get_tombstone(
        &self,
        selector: &SessionLookup,
    ) -> Result<Option<Tombstone>, StoreError> {
        self.seen(self.inner.get_tombstone(selector).await)
    }

    async fn record_jti(&self, iss: &str, jti: &str, expires_at: i64) -> Result<bool, StoreError> {
        self.seen(self.inner.record_jti(iss, jti, expires_at).await)
    }

    async fn is_jti_recorded(&self, iss: &str, jti: &str) -> Result<bool, StoreError> {
        self.seen(self.inner.is_jti_recorded(iss, jti).await)
    }

    /// The store's one-step sign-out, which announces the invalidation
    /// itself; then this instance's own entries are dropped before
    /// returning. When the store failed, the announcement (if known) is
    /// queued for later and L1 is off until it listens again, as for every
    /// write. The announcement asks every instance to acknowledge it, and a
    /// stored sign-out returns only once no instance can still answer from
    /// what it removed (within the bound of its acknowledgement wait).
    /// A store without a one-step sign-out: the steps in order, each
    /// announced (and acknowledged) as it is stored.
    async fn sign_out(&self, request: &SignOutRequest) -> Result<SignOutOutcome, StoreError> {
        let ack = self.shared.expect_acks();
        let mut words = Vec::new();
        let Some(r) = self
            .inner
            .sign_out_announced(request, &self.shared.origin, &ack.word, &mut words)
            .await
        else {
            lock(&self.shared.acks).remove(&ack.id);
            return idweb::sign_out_in_order(self, request).await;
        };
        self.shared.invalidate(&words);
        // Nothing was published for a replay, or for an only-if-found
        // request that found nothing: no acknowledgement will come.
        let published = match &r {
            Ok(SignOutOutcome::SignedOut { removed, .. }) => {
                !(request.only_if_found && removed.is_empty())
            }
            _ => false,
        };
        if published {
            self.acknowledged(ack, Instant::now()).await;
        } else {
            lock(&self.shared.acks).remove(&ack.id);
        }
        if matches!(r, Err(StoreError::Unavailable(_))) {
            if !words.is_empty() && !self.inner.announces_in_transaction() {
                self.shared.queue(self.message(&words));
            }
            self.shared.store_failed();
        }
        r
    }

    async fn forget_jti(&self, iss: &str, jti: &str) -> Result<(), StoreError> {
        self.seen(self.inner.forget_jti(iss, jti).await)
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.seen(self.inner.stats().await)
    }

    async fn try_lock(&self, name: &str, ttl: Duration) -> Result<Option<LockToken>, StoreError> {
        self.seen(self.inner.try_lock(name, ttl).await)
    }

    async fn unlock(&self, name: &str, token: &LockToken) -> Result<(), StoreError> {
        self.seen(self.inner.unlock(name, token).await)
    }

    /// Also fails while the invalidation subscription is down (L1 is off
    /// then, and sign-outs of other instances are not heard).
    async fn check_ready(&self) -> Result<(), StoreError> {
        if !self.shared.active() {
            return Err(StoreError::Unavailable(
                "the invalidation subscription is down".into(),
            ));
        }
        self.seen(self.inner.check_ready().await)
    }

    async fn purge_expired(&self) -> Result<u64, StoreError> {
        self.seen(self.inner.purge_expired().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use idweb::{ManualClock, Secret};

    fn shared(options: CacheOptions) -> Shared {
        let mut s = Shared::new(options, Arc::new(ManualClock::at_unix(1_800_000_000)));
        // As if the instance had started a while ago.
        if let Some(base) = s.base.checked_sub(Duration::from_secs(1)) {
            s.base = base;
        }
        let generation = s.generation.fetch_add(1, Ordering::SeqCst) + 1;
        assert!(s.activate(generation));
        beat(&s);
        s
    }

    #[test]
    fn memoised_l1_names_are_the_derived_ones_and_stay_bounded() {
        let s = shared(CacheOptions::default().max_entries(3));
        let ids: Vec<SessionId> = (0..5).map(|_| SessionId::generate()).collect();
        for id in &ids {
            let names = s.names_of(id);
            let tag = session_tag(id);
            assert_eq!(&*names.session, session_word(&tag));
            assert_eq!(&*names.partition, session_partition_word(&tag));
            // Asked again: the same names.
            assert_eq!(&*s.names_of(id).session, &*names.session);
            assert!(lock(&s.names).len() <= 3);
        }
    }

    /// A heartbeat of `s` sent and heard back.
    fn beat(s: &Shared) {
        let word = s.heartbeat_sent();
        s.on_message(&format!("{}\n{word}", s.origin));
    }

    #[test]
    fn l1_answers_only_under_a_lease_renewed_by_its_own_heartbeats() {
        let s = Shared::new(CacheOptions::default(), Arc::new(ManualClock::at_unix(0)));
        let generation = s.generation.fetch_add(1, Ordering::SeqCst) + 1;
        assert!(s.activate(generation));
        s.fill(s.ticket(), "p:a.1".into(), partition());
        assert!(!s.serving() && s.lookup("p:a.1").is_none(), "no lease yet");
        // Another instance's heartbeat renews nothing: it only says who is there.
        s.on_message("@other\n~0");
        assert!(!s.serving());
        assert!(lock(&s.members).contains_key("@other"));
        assert_eq!(s.l1().entries.len(), 1, "a heartbeat invalidates nothing");
        beat(&s);
        assert!(s.serving() && s.lookup("p:a.1").is_some());
        s.deactivate();
        assert!(!s.serving());
        assert_eq!(s.lease_until.load(Ordering::SeqCst), 0);

        // A lease runs from when the heartbeat was sent, not heard.
        let s = Shared::new(
            CacheOptions::default().lease(Duration::from_millis(20)),
            Arc::new(ManualClock::at_unix(0)),
        );
        let generation = s.generation.fetch_add(1, Ordering::SeqCst) + 1;
        assert!(s.activate(generation));
        let word = s.heartbeat_sent();
        std::thread::sleep(Duration::from_millis(30));
        s.on_message(&format!("{}\n{word}", s.origin));
        assert!(
            !s.serving(),
            "a heartbeat heard a lease late renews nothing"
        );
    }

    #[test]
    fn invalidations_asking_for_acknowledgement_are_acknowledged_after_dropping() {
        let s = shared(CacheOptions::default());
        let mut out = lock(&s.ack_in).take().expect("receiver");
        s.fill(s.ticket(), "s:abc".into(), partition());
        s.on_message("@other\n#7\ns:abc");
        assert!(s.lookup("s:abc").is_none(), "dropped");
        assert_eq!(out.try_recv().ok(), Some(("@other".into(), "7".into())));
        // Its own messages are neither applied again nor acknowledged.
        s.on_message(&format!("{}\n#8\ns:abc", s.origin));
        assert!(out.try_recv().is_err());
    }

    #[test]
    fn a_sign_out_waits_for_the_instances_heard_within_the_lease() {
        let s = shared(CacheOptions::default());
        // Live for a whole lease, having heard two other instances.
        s.live_since.store(1, Ordering::SeqCst);
        assert!(s.base.elapsed() >= s.options.lease);
        s.on_message("@b\n~1");
        s.on_message("@c\n~1");
        let request = s.expect_acks();
        let state = |s: &Shared| lock(&s.acks).get(&request.id).map(AckState::complete);
        assert_eq!(state(&s), Some(false), "not heard back yet");
        s.on_ack(&format!("{}\n@b", request.id));
        s.on_message(&format!("{}\n{}\ns:x", s.origin, request.word));
        assert_eq!(state(&s), Some(false), "c has not acknowledged");
        s.on_ack(&format!("{}\n@c", request.id));
        assert_eq!(state(&s), Some(true));

        // Subscribed for less than a lease: who else is there is unknown,
        // so only the lease ends the wait.
        let s = shared(CacheOptions::default());
        let request = s.expect_acks();
        s.on_message(&format!("{}\n{}\ns:x", s.origin, request.word));
        assert_eq!(
            lock(&s.acks).get(&request.id).map(|a| a.needed.clone()),
            Some(Some(None))
        );
        assert!(
            !lock(&s.acks)
                .get(&request.id)
                .is_some_and(AckState::complete)
        );
    }

    #[tokio::test]
    async fn the_wait_ends_with_the_acknowledgements_or_at_the_deadline() {
        let s = Arc::new(shared(CacheOptions::default()));
        s.live_since.store(1, Ordering::SeqCst);
        s.on_message("@b\n~1");
        let request = s.expect_acks();
        let far = Instant::now() + Duration::from_secs(60);
        let waiter = {
            let (s, id, word) = (s.clone(), request.id, request.word.clone());
            tokio::spawn(async move {
                s.await_acks(&AckRequest { id, word }, far).await;
            })
        };
        s.on_message(&format!("{}\n{}\ns:x", s.origin, request.word));
        s.on_ack(&format!("{}\n@b", request.id));
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("ended by the acknowledgement")
            .expect("task");
        assert!(lock(&s.acks).is_empty());

        // Nobody answers: the deadline ends it.
        let request = s.expect_acks();
        s.await_acks(&request, Instant::now() + Duration::from_millis(20))
            .await;
        assert!(lock(&s.acks).is_empty());
    }

    fn cached_session(iss: &str, sub: &str, sid: Option<&str>) -> (String, Cached) {
        let session = Session::new(
            iss,
            sub,
            sid.map(str::to_string),
            Secret::new("t"),
            1_800_000_000,
            1_800_003_600,
        );
        let key = session_word(&session_tag(&session.id));
        let selectors = session_selectors(&session);
        (key, Cached::Session { session, selectors })
    }

    fn partition() -> Cached {
        Cached::Partition {
            partition: StoredPartition::default(),
            session_expires_at: None,
        }
    }

    #[test]
    fn a_read_that_overlapped_an_invalidation_is_not_cached() {
        let s = shared(CacheOptions::default());
        let ticket = s.ticket();
        s.invalidate(&["p:a.x"]);
        s.fill(ticket, "p:s:1".into(), partition());
        assert!(s.lookup("p:s:1").is_none(), "the old value was planted");
        s.fill(s.ticket(), "p:s:1".into(), partition());
        assert!(s.lookup("p:s:1").is_some());
    }

    #[test]
    fn while_inactive_nothing_is_read_or_filled_and_activation_empties() {
        let s = shared(CacheOptions::default());
        s.fill(s.ticket(), "p:s:1".into(), partition());
        let ticket = s.ticket();
        s.deactivate();
        assert!(s.lookup("p:s:1").is_none());
        assert_eq!(s.ticket(), None);
        s.fill(ticket, "p:s:2".into(), partition());
        let generation = s.generation.fetch_add(1, Ordering::SeqCst) + 1;
        assert!(s.activate(generation));
        assert!(s.lookup("p:s:2").is_none(), "filled while inactive");
        assert_eq!(s.l1().entries.len(), 0);
    }

    #[test]
    fn a_connection_lost_before_activation_is_not_activated() {
        let s = Shared::new(CacheOptions::default(), Arc::new(ManualClock::at_unix(0)));
        let generation = s.generation.fetch_add(1, Ordering::SeqCst) + 1;
        s.connection_lost(generation);
        assert!(!s.activate(generation));
        assert!(!s.active());
        // A late event of an old connection leaves its successor alone.
        let next = s.generation.fetch_add(1, Ordering::SeqCst) + 1;
        assert!(s.activate(next));
        s.connection_lost(generation);
        assert!(s.active());
        s.connection_lost(next);
        assert!(!s.active());
    }

    #[test]
    fn a_tombstone_drops_the_sessions_it_names_and_their_partitions() {
        let s = shared(CacheOptions::default());
        let (k1, v1) = cached_session("iss", "alice", Some("sid-1"));
        let (k2, v2) = cached_session("iss", "alice", Some("sid-2"));
        let (k3, v3) = cached_session("iss", "bob", Some("sid-3"));
        for (k, v) in [(&k1, v1), (&k2, v2), (&k3, v3)] {
            s.fill(s.ticket(), k.clone(), v);
            s.fill(s.ticket(), format!("p:{k}"), partition());
        }
        let by_sid = selector_tag(&SessionLookup::ByProviderSession {
            iss: "iss".into(),
            sid: "sid-1".into(),
        })
        .expect("tag");
        s.invalidate(&[tombstone_word(&by_sid)]);
        let left: Vec<bool> = [&k1, &k2, &k3]
            .iter()
            .map(|k| s.lookup(k).is_some() && s.lookup(&format!("p:{k}")).is_some())
            .collect();
        assert_eq!(left, [false, true, true]);
        let by_sub = selector_tag(&SessionLookup::BySubject {
            iss: "iss".into(),
            sub: "alice".into(),
        })
        .expect("tag");
        s.invalidate(&[tombstone_word(&by_sub)]);
        assert!(s.lookup(&k2).is_none() && s.lookup(&format!("p:{k2}")).is_none());
        assert!(s.lookup(&k3).is_some());
        s.invalidate(&[DROP_ALL]);
        assert_eq!(s.l1().entries.len(), 0);
    }

    /// The session and its partition's version come from one look at L1:
    /// both while it holds both, the session alone once the partition is
    /// dropped, nothing once the session is (or while L1 may not answer).
    #[test]
    fn a_session_and_its_version_are_read_together() {
        let s = shared(CacheOptions::default());
        let (key, value) = cached_session("iss", "alice", Some("sid-1"));
        let Cached::Session { session, .. } = &value else {
            unreachable!()
        };
        let session = session.clone();
        let names = s.names_of(&session.id);
        assert_eq!(*names.session, key);
        let now = 1_800_000_001;
        assert!(s.session_and_version(&names, &session.id, now).is_none());
        s.fill(s.ticket(), key.clone(), value);
        let mut p = StoredPartition::default();
        p.version = 7;
        s.fill(
            s.ticket(),
            names.partition.to_string(),
            Cached::Partition {
                partition: p,
                session_expires_at: Some(session.expires_at),
            },
        );
        assert_eq!(
            s.session_and_version(&names, &session.id, now),
            Some((session.clone(), Some(7)))
        );
        assert!(
            s.session_and_version(&names, &session.id, session.expires_at)
                .is_none(),
            "an ended session is not answered"
        );
        s.invalidate(&[&*names.partition]);
        assert_eq!(
            s.session_and_version(&names, &session.id, now),
            Some((session.clone(), None))
        );
        s.invalidate(&[&*names.session]);
        assert!(s.session_and_version(&names, &session.id, now).is_none());
    }

    /// The selector index follows every way a session leaves L1 or is
    /// replaced: nothing stale stays in it, and a tombstone finds exactly
    /// the sessions cached under its selector now.
    #[test]
    fn the_selector_index_follows_the_cached_sessions() {
        let s = shared(CacheOptions::default().max_entries(4));
        let (k1, v1) = cached_session("iss", "alice", Some("sid-1"));
        let (_, moved) = cached_session("iss", "bob", Some("sid-9"));
        let tag = |sid: &str| {
            tombstone_word(
                &selector_tag(&SessionLookup::ByProviderSession {
                    iss: "iss".into(),
                    sid: sid.into(),
                })
                .expect("tag"),
            )
        };
        s.fill(s.ticket(), k1.clone(), v1);
        // The same key now holds a session of other selectors: the old
        // selector's tombstone no longer names it.
        s.fill(s.ticket(), k1.clone(), moved);
        s.invalidate(&[tag("sid-1")]);
        assert!(s.lookup(&k1).is_some());
        s.invalidate(&[tag("sid-9")]);
        assert!(s.lookup(&k1).is_none());
        // Removed by its word, evicted for room, or cleared: unindexed.
        let (k2, v2) = cached_session("iss", "carol", Some("sid-2"));
        s.fill(s.ticket(), k2.clone(), v2);
        s.invalidate(&[k2.as_str()]);
        for i in 0..10 {
            let (k, v) = cached_session("iss", &format!("u{i}"), Some(&format!("sid-u{i}")));
            s.fill(s.ticket(), k, v);
        }
        {
            let l1 = s.l1();
            assert_eq!(l1.entries.len(), 4);
            let indexed: HashSet<&String> = l1.by_selector.values().flatten().collect();
            let cached: HashSet<&String> = l1.entries.keys().collect();
            assert_eq!(indexed, cached, "exactly the cached sessions are indexed");
            assert_eq!(l1.by_selector.len(), 8, "a sid and a sub selector each");
        }
        s.invalidate(&[DROP_ALL]);
        assert!(s.l1().by_selector.is_empty());
    }

    #[test]
    fn the_cache_is_bounded_in_size_and_age() {
        let s = shared(CacheOptions::default().max_entries(3));
        for i in 0..10 {
            s.fill(s.ticket(), format!("p:a.{i}"), partition());
        }
        assert_eq!(s.l1().entries.len(), 3);
        assert!(s.lookup("p:a.9").is_some(), "the newest entry is kept");

        let s = shared(CacheOptions::default().max_age(Duration::ZERO));
        s.fill(s.ticket(), "p:a.1".into(), partition());
        assert!(s.lookup("p:a.1").is_none(), "past its age");

        let s = shared(CacheOptions::default().max_entries(0));
        s.fill(s.ticket(), "p:a.1".into(), partition());
        assert_eq!(s.l1().entries.len(), 0, "max_entries 0 disables the cache");
    }

    #[test]
    fn a_full_outbox_becomes_drop_everything() {
        let s = shared(CacheOptions::default());
        for i in 0..=MAX_OUTBOX {
            s.queue(format!("p:a.{i}"));
        }
        let outbox = s.outbox.lock().expect("outbox");
        assert_eq!(outbox.as_slice(), [DROP_ALL.to_string()]);
    }
}
