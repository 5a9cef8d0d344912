//! The reader connections of a database file.
//!
//! A read takes an idle connection (a permit of a semaphore, then a pop from
//! a short `std::sync::Mutex`), runs its statement where the caller is, and
//! puts the connection back. In WAL mode a reader never waits for the writer,
//! so a read is the statement's own cost: no thread hop. The few reads that
//! can take long (counts and listings over the whole table) and the rare
//! read that finds the file locked (another process recovering the log) run
//! on tokio's blocking threads instead; see [`SqliteStore`](crate::SqliteStore).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use idweb::StoreError;
use rusqlite::Connection;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::error::{Closed, db_error, is_busy, unavailable};

/// The reader connections of one store (and its clones).
pub(crate) struct Readers {
    idle: Mutex<Vec<Connection>>,
    /// One permit per connection: holding one guarantees an idle connection.
    permits: Arc<Semaphore>,
    size: u32,
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readers")
            .field("size", &self.size)
            .field("idle", &self.lock().len())
            .finish()
    }
}

/// A reader connection taken from the pool; it goes back on drop.
pub(crate) struct Reader {
    conn: Option<Connection>,
    readers: Arc<Readers>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Readers {
    /// A pool of these connections (each set up for reading, failing fast on
    /// a locked file: see [`read`](Self::read)).
    pub(crate) fn new(conns: Vec<Connection>) -> Arc<Self> {
        let size = u32::try_from(conns.len()).unwrap_or(u32::MAX);
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(conns.len())),
            idle: Mutex::new(conns),
            size,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Connection>> {
        // A panic while holding this lock cannot leave the list half-changed
        // (push and pop only).
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes an idle connection, waiting (without blocking the thread) while
    /// all are in use.
    async fn take(self: &Arc<Self>) -> Result<Reader, StoreError> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::NoPermits) => self
                .permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| unavailable(Closed))?,
            Err(TryAcquireError::Closed) => return Err(unavailable(Closed)),
        };
        let conn = self.lock().pop().ok_or_else(|| unavailable(Closed))?;
        Ok(Reader {
            conn: Some(conn),
            readers: self.clone(),
            permit: Some(permit),
        })
    }

    /// Runs `f` on a reader connection, on the calling thread. For one short
    /// indexed statement: the connection answers without waiting for any
    /// lock, and if the file is locked (SQLite's `SQLITE_BUSY`, which in WAL
    /// mode only happens while another connection recovers or resets the
    /// log), `f` runs again on a blocking thread that may wait up to
    /// `busy_timeout`.
    pub(crate) async fn read<T, F>(
        self: &Arc<Self>,
        busy_timeout: Duration,
        f: F,
    ) -> Result<T, StoreError>
    where
        F: Fn(&Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let reader = self.take().await?;
        let result = f(reader.conn()?);
        match result {
            Err(e) if is_busy(&e) => Self::run_blocking(reader, busy_timeout, f).await,
            other => other,
        }
    }

    /// Runs `f` on a reader connection on one of tokio's blocking threads,
    /// waiting up to `busy_timeout` for a locked file: for reads whose cost
    /// grows with the size of the store.
    pub(crate) async fn read_blocking<T, F>(
        self: &Arc<Self>,
        busy_timeout: Duration,
        f: F,
    ) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let reader = self.take().await?;
        Self::run_blocking(reader, busy_timeout, f).await
    }

    async fn run_blocking<T, F>(
        reader: Reader,
        busy_timeout: Duration,
        f: F,
    ) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        tokio::task::spawn_blocking(move || {
            let conn = reader.conn()?;
            conn.busy_timeout(busy_timeout).map_err(db_error)?;
            let result = f(conn);
            // Back to failing fast, for the next inline read. (SQLite's
            // `sqlite3_busy_timeout` cannot fail on an open connection; were
            // it to, the connection would only wait longer on a locked file.)
            if let Err(e) = conn.busy_timeout(Duration::ZERO) {
                tracing::warn!(error = %e, "a reader connection kept its busy timeout");
            }
            result
        })
        .await
        .map_err(unavailable)?
    }

    /// Waits for running reads to end, then closes every connection; later
    /// reads fail with [`StoreError::Unavailable`].
    pub(crate) async fn close(&self) {
        // Every permit: no read is running and none can start.
        let all = self.permits.acquire_many(self.size).await;
        self.permits.close();
        let conns = std::mem::take(&mut *self.lock());
        drop(all);
        for conn in conns {
            if let Err((_, e)) = conn.close() {
                tracing::warn!(error = %e, "closing a reader connection failed");
            }
        }
    }
}

impl Reader {
    fn conn(&self) -> Result<&Connection, StoreError> {
        self.conn.as_ref().ok_or_else(|| unavailable(Closed))
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        // Back before the permit is released, so that a permit always finds
        // a connection.
        if let Some(conn) = self.conn.take()
            && !self.readers.permits.is_closed()
        {
            self.readers.lock().push(conn);
        }
        drop(self.permit.take());
    }
}
