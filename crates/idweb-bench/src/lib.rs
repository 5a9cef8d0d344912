//! Fixtures for idweb's benchmarks (`benches/sessions.rs`,
//! `benches/redis.rs`, `benches/http.rs` and `benches/msal.rs`, described in
//! `docs/PERFORMANCE.md`): a development identity provider, a
//! [`RelyingParty`] over a store holding a chosen number of sessions, a
//! scratch directory for database files, and (in [`redis_fixture`]) the
//! same over Redis, with a counter of Redis round trips; for the HTTP
//! benchmark an idweb-axum app and a sign-in driven over HTTP ([`web`]), a
//! load generator ([`load`]) and per-thread CPU figures ([`cpu`]); for the
//! side-by-side with MSAL Python, a timed loop sampled like the Python
//! script's ([`timing`]).
//!
//! Not part of idweb's API (`publish = false`).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use idweb::{
    BoxError, MemoryStore, PartitionKey, PartitionWrite, RelyingParty, Secret, Session, SessionId,
    SessionLookup, Settings, Store, StoredEntry,
    msal::{AccessTokenEntry, CacheEntry, IdTokenEntry, RefreshTokenEntry},
};
use idweb_devidp::{DevClient, DevIdp, DevIdpConfig};
use idweb_store_sqlite::SqliteStore;

pub mod cpu;
pub mod load;
pub mod redis_fixture;
pub mod timing;
pub mod web;

/// The scope the cache-hit benchmark asks for.
pub const HIT_SCOPE: &str = "api://todo/todos.read";

/// The scopes of every cached access token.
pub const TOKEN_TARGET: &str = "api://todo/todos.read api://todo/todos.write";

/// Lifetime of the benchmark sessions (the default session lifetime).
const SESSION_LIFETIME: i64 = 12 * 3600;

/// Lifetime of the cached access tokens.
const ACCESS_TOKEN_LIFETIME: i64 = 3600;

/// Placeholder token sizes, close to those of real signed tokens, so that
/// rows and sealed entries have realistic sizes.
const ID_TOKEN_LEN: usize = 900;
const ACCESS_TOKEN_LEN: usize = 1200;
const REFRESH_TOKEN_LEN: usize = 400;

/// The realm written into cache entries (not looked at by a cache hit).
const REALM: &str = "bench";

/// The public URL of the benchmark relying party (never served).
const PUBLIC_URL: &str = "http://127.0.0.1:5000";

/// Which [`Store`] implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// [`idweb::MemoryStore`].
    Memory,
    /// [`idweb_store_sqlite::SqliteStore`] on a file.
    Sqlite,
}

impl Backend {
    /// Every backend, in benchmark order.
    pub const ALL: [Backend; 2] = [Backend::Memory, Backend::Sqlite];

    /// Its name in benchmark ids.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// A scratch directory for database files, deleted (with its content) on
/// drop. It is in RAM (`/dev/shm`) when the machine has one, so that the
/// SQLite figures measure the store's CPU work and query plans rather than
/// the disk.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
    in_ram: bool,
}

impl ScratchDir {
    /// Creates a fresh, uniquely named directory.
    ///
    /// # Errors
    /// The directory cannot be created.
    pub fn new() -> std::io::Result<Self> {
        let shm = Path::new("/dev/shm");
        let in_ram = shm.is_dir();
        let base = if in_ram {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let path = base.join(format!(
            "idweb-bench-{}-{}",
            std::process::id(),
            SessionId::generate().fingerprint()
        ));
        std::fs::create_dir(&path)?;
        Ok(Self { path, in_ram })
    }

    /// Creates a fresh, uniquely named directory inside `base` (which must
    /// exist); [`in_ram`](Self::in_ram) tells whether `base` is on a
    /// RAM-backed file system (`tmpfs`, `ramfs`).
    ///
    /// # Errors
    /// The directory cannot be created.
    pub fn in_dir(base: &Path) -> std::io::Result<Self> {
        let path = base.join(format!(
            "idweb-bench-{}-{}",
            std::process::id(),
            SessionId::generate().fingerprint()
        ));
        std::fs::create_dir(&path)?;
        let in_ram = web::file_system_of(&path).is_some_and(|fs| fs == "tmpfs" || fs == "ramfs");
        Ok(Self { path, in_ram })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether it is RAM-backed.
    pub fn in_ram(&self) -> bool {
        self.in_ram
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Starts a development identity provider on `127.0.0.1`, on a free port.
///
/// # Errors
/// The listener cannot be bound or the signing key cannot be made.
pub async fn start_idp() -> std::io::Result<DevIdp> {
    DevIdp::start(([127, 0, 0, 1], 0).into(), DevIdpConfig::default()).await
}

/// Registers a new client at `idp` and returns the settings of a relying
/// party using it. Relying parties built from clones of these settings share
/// the client and the token-cache keys, so they read each other's entries.
///
/// # Errors
/// The settings do not validate.
pub fn register_client(idp: &DevIdp) -> Result<Settings, BoxError> {
    let client_id = format!("bench-{}", SessionId::generate().fingerprint());
    let secret = format!("secret-{}", SessionId::generate().fingerprint());
    idp.register_client(DevClient::new(
        client_id.as_str(),
        secret.as_str(),
        format!("{PUBLIC_URL}/signin-oidc"),
    ));
    let env = [
        ("IDWEB_AUTHORITY", idp.issuer().to_string()),
        ("IDWEB_CLIENT_ID", client_id),
        ("IDWEB_CLIENT_SECRET", secret),
        ("IDWEB_PUBLIC_URL", PUBLIC_URL.to_string()),
    ]
    .map(|(k, v)| (k.to_string(), v));
    Ok(Settings::from_sources(None, env)?)
}

/// A relying party with `settings`, over `store`. Building it fetches the
/// provider's discovery document and keys, nothing else.
///
/// # Errors
/// The provider cannot be reached.
pub async fn relying_party_with(
    settings: Settings,
    store: Arc<dyn Store>,
) -> Result<RelyingParty, BoxError> {
    Ok(RelyingParty::builder(settings)
        .with_store(store)
        .build()
        .await?)
}

/// A relying party registered at `idp` (a new client), over `store`.
async fn relying_party(idp: &DevIdp, store: Arc<dyn Store>) -> Result<RelyingParty, BoxError> {
    relying_party_with(register_client(idp)?, store).await
}

/// A relying party over a store holding `sessions` live sessions.
///
/// - [`hit`](Self::hit): a session whose partition holds one access token
///   for [`TOKEN_TARGET`], valid for an hour, for this relying party's
///   client: `token_for_user(&hit, &[HIT_SCOPE])` is a cache hit.
/// - Every other session has a partition of three entries (access, refresh
///   and ID token), each user (`sub`) has one session, and each session has
///   a provider session id (`sid`).
#[derive(Debug)]
pub struct Fixture {
    /// The store implementation.
    pub backend: Backend,
    /// Live sessions in the store.
    pub sessions: usize,
    /// The relying party (its token cache is over [`store`](Self::store)).
    pub rp: RelyingParty,
    /// The store.
    pub store: Arc<dyn Store>,
    /// The session of the cache hit.
    pub hit: Session,
    /// A session in the middle of the population, with three entries, for reads.
    pub probe: Session,
    /// `BySubject` of [`probe`](Self::probe) (one match).
    pub probe_lookup: SessionLookup,
    /// The partition the write benchmark upserts into (a populated session's).
    pub writer: PartitionKey,
    /// A sealed access token entry replacing the one in [`writer`](Self::writer).
    pub upsert: StoredEntry,
    /// How long filling the store took.
    pub populated_in: Duration,
    /// The SQLite database file, if any.
    pub db_path: Option<PathBuf>,
    sqlite: Option<SqliteStore>,
}

impl Fixture {
    /// Builds the store (for SQLite, a new file in `dir`), a relying party
    /// over it registered at `idp`, and fills the store through the
    /// [`Store`] trait and the token cache, one session at a time.
    ///
    /// # Errors
    /// The store cannot be opened or written, or the relying party cannot
    /// start.
    ///
    /// # Panics
    /// When `sessions` is below 4.
    pub async fn build(
        idp: &DevIdp,
        backend: Backend,
        sessions: usize,
        dir: &ScratchDir,
    ) -> Result<Self, BoxError> {
        assert!(sessions >= 4, "a fixture needs at least 4 sessions");
        let mut db_path = None;
        let (store, sqlite): (Arc<dyn Store>, Option<SqliteStore>) = match backend {
            Backend::Memory => (Arc::new(MemoryStore::new()), None),
            Backend::Sqlite => {
                let path = dir.path().join(format!(
                    "sessions-{sessions}-{}.db",
                    SessionId::generate().fingerprint()
                ));
                let s = SqliteStore::open(&path).await?;
                db_path = Some(path);
                (Arc::new(s.clone()), Some(s))
            }
        };
        let rp = relying_party(idp, store.clone()).await?;
        let started = Instant::now();
        let now = rp.clock().unix_now();
        let iss = idp.issuer().to_string();

        let hit = new_session(&iss, "hit-user", now);
        store.put_session(&hit).await?;
        rp.token_cache()
            .write(
                &PartitionKey::Session(hit.id.clone()),
                &[access_token(&rp, &hit, now)],
                &[],
                None,
            )
            .await?;

        let (mut probe, mut writer) = (None, None);
        for i in 1..sessions {
            let s = new_session(&iss, &format!("user-{i:06}"), now);
            store.put_session(&s).await?;
            rp.token_cache()
                .write(
                    &PartitionKey::Session(s.id.clone()),
                    &user_entries(&rp, &s, now),
                    &[],
                    None,
                )
                .await?;
            if i == sessions / 2 {
                probe = Some(s);
            } else if i == sessions - 1 {
                writer = Some(s);
            }
        }
        let populated_in = started.elapsed();
        let (Some(probe), Some(writer)) = (probe, writer) else {
            unreachable!("sessions >= 4 sets both");
        };
        let count = store.session_count().await?;
        if count != sessions as u64 {
            return Err(format!("the store holds {count} sessions, not {sessions}").into());
        }
        let probe_lookup = SessionLookup::BySubject {
            iss: probe.iss.clone(),
            sub: probe.sub.clone(),
        };
        let writer_key = PartitionKey::Session(writer.id.clone());
        let upsert = rp
            .token_cache()
            .seal(&writer_key, &access_token(&rp, &writer, now));
        Ok(Self {
            backend,
            sessions,
            rp,
            store,
            hit,
            probe,
            probe_lookup,
            writer: writer_key,
            upsert,
            populated_in,
            db_path,
            sqlite,
        })
    }

    /// A new session (not stored) for a user of this fixture's provider.
    pub fn fresh_session(&self) -> Session {
        let now = self.rp.clock().unix_now();
        new_session(&self.probe.iss, "fresh-user", now)
    }

    /// The write of the write benchmark: one upsert replacing the access
    /// token of [`writer`](Self::writer).
    pub fn one_upsert(&self) -> PartitionWrite {
        PartitionWrite::upsert(vec![self.upsert.clone()])
    }

    /// Bytes of the SQLite database file and its write-ahead log (0 for memory).
    pub fn db_bytes(&self) -> u64 {
        let Some(path) = &self.db_path else {
            return 0;
        };
        ["", "-wal"]
            .iter()
            .map(|suffix| {
                let mut p = path.as_os_str().to_owned();
                p.push(suffix);
                std::fs::metadata(PathBuf::from(p)).map_or(0, |m| m.len())
            })
            .sum()
    }

    /// Closes the store (for SQLite, waits for its connections to close).
    pub async fn close(self) {
        if let Some(s) = self.sqlite {
            s.close().await;
        }
    }
}

/// A new session (not stored) of user `sub` at `iss`, created at `now`: a
/// random provider session id (`sid`), a 12-hour lifetime and a placeholder
/// ID token of realistic size.
pub fn new_session(iss: &str, sub: &str, now: i64) -> Session {
    Session::new(
        iss,
        sub,
        Some(format!("sid-{}", SessionId::generate().fingerprint())),
        Secret::new("i".repeat(ID_TOKEN_LEN)),
        now,
        now + SESSION_LIFETIME,
    )
}

fn environment(rp: &RelyingParty) -> String {
    rp.settings()
        .authority
        .host_str()
        .unwrap_or("localhost")
        .to_string()
}

/// An access token for [`TOKEN_TARGET`], valid for an hour from `now`, for
/// `rp`'s client and session `s`: what the cache-hit benchmarks find.
pub fn access_token(rp: &RelyingParty, s: &Session, now: i64) -> CacheEntry {
    CacheEntry::AccessToken(AccessTokenEntry {
        home_account_id: Some(s.account_id.clone()),
        environment: environment(rp),
        client_id: rp.settings().client_id.clone(),
        realm: REALM.to_string(),
        target: TOKEN_TARGET.to_string(),
        secret: Secret::new("a".repeat(ACCESS_TOKEN_LEN)),
        token_type: Some("Bearer".to_string()),
        cached_at: Some(now),
        expires_on: now + ACCESS_TOKEN_LIFETIME,
        extended_expires_on: Some(now + ACCESS_TOKEN_LIFETIME),
        refresh_on: None,
        key_id: None,
        ext_cache_key: None,
        extra: Default::default(),
    })
}

/// What a session's partition holds after a sign-in: access, refresh and ID token.
pub fn user_entries(rp: &RelyingParty, s: &Session, now: i64) -> [CacheEntry; 3] {
    let client_id = rp.settings().client_id.clone();
    [
        access_token(rp, s, now),
        CacheEntry::RefreshToken(RefreshTokenEntry {
            home_account_id: Some(s.account_id.clone()),
            environment: environment(rp),
            client_id: client_id.clone(),
            secret: Secret::new("r".repeat(REFRESH_TOKEN_LEN)),
            target: Some(format!("{TOKEN_TARGET} offline_access openid profile")),
            last_modification_time: Some(now),
            family_id: None,
            extra: Default::default(),
        }),
        CacheEntry::IdToken(IdTokenEntry {
            home_account_id: Some(s.account_id.clone()),
            environment: environment(rp),
            realm: REALM.to_string(),
            client_id,
            secret: Secret::new("i".repeat(ID_TOKEN_LEN)),
            extra: Default::default(),
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hit is a hit (no token request reaches the provider), and every
    /// operation the benchmarks run succeeds, on both stores.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fixtures_serve_the_benchmarked_operations() {
        let idp = start_idp().await.expect("idp");
        let dir = ScratchDir::new().expect("scratch dir");
        for backend in Backend::ALL {
            let f = Fixture::build(&idp, backend, 20, &dir)
                .await
                .expect("fixture");
            let token =
                f.rp.token_for_user(&f.hit, &[HIT_SCOPE])
                    .await
                    .expect("cache hit");
            assert_eq!(token.secret.secret().len(), ACCESS_TOKEN_LEN);
            let stored = f.store.get_session(&f.probe.id).await.expect("get");
            assert_eq!(stored.as_ref().map(|s| &s.sub), Some(&f.probe.sub));
            let partition = f
                .store
                .get_partition(&PartitionKey::Session(f.probe.id.clone()))
                .await
                .expect("partition")
                .expect("some partition");
            assert_eq!(partition.entries.len(), 3);
            let found = f.store.find_sessions(&f.probe_lookup).await.expect("find");
            assert_eq!(found, vec![f.probe.id.clone()]);
            let v1 = f
                .store
                .write_partition(&f.writer, f.one_upsert())
                .await
                .expect("write");
            let v2 = f
                .store
                .write_partition(&f.writer, f.one_upsert())
                .await
                .expect("write");
            assert_eq!(v2, v1 + 1);
            let fresh = f.fresh_session();
            f.store.put_session(&fresh).await.expect("put");
            assert!(
                f.store
                    .remove_session(&fresh.id)
                    .await
                    .expect("remove")
                    .is_some()
            );
            assert_eq!(f.store.session_count().await.expect("count"), 20);
            f.close().await;
        }
        let stats = idp.stats();
        assert_eq!(stats.refresh_token + stats.token_errors, 0, "{stats:?}");
        idp.shutdown().await;
    }
}
