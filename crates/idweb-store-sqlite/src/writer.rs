//! The writer: one connection on its own thread, committing writes in groups.
//!
//! Every write of a store (and its clones) is sent to this thread. The thread
//! takes the first waiting write, opens a `BEGIN IMMEDIATE` transaction,
//! applies that write and every other one already waiting (up to
//! [`MAX_BATCH`]), each inside its own savepoint, and commits once. Writes
//! that arrive while a transaction is being committed wait for the next one.
//! Each caller is answered after the commit holding its write returned:
//!
//! - an operation refused for a logical reason (a version conflict, a
//!   tombstone, a replayed jti, a held lock) or failing on its own is rolled
//!   back to its savepoint; the other operations of the transaction go on;
//! - if the commit fails (I/O error, full disk), or SQLite rolls the whole
//!   transaction back after an operation's error, every caller of the
//!   transaction gets [`StoreError::Unavailable`], refusals included (they
//!   may have been decided on writes that did not happen): no one is told
//!   of a write that is not durable;
//! - if the write lock cannot be taken (another process holds it past the
//!   busy timeout), the writes waiting for it fail with
//!   [`StoreError::Unavailable`] without being attempted.
//!
//! A store in memory has only this connection: its reads are run here too,
//! between transactions.

use std::sync::Arc;

use idweb::StoreError;
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Closed, NotCommitted, NotStarted, db_error, unavailable};
use crate::sql;

/// Operations per transaction at most: bounds the time a transaction holds
/// the write lock and the work lost to a failed commit.
pub(crate) const MAX_BATCH: usize = 128;

/// Writes waiting for the writer at most; more callers wait (asynchronously)
/// for room in the queue.
const QUEUE: usize = 1024;

/// What became of the transaction holding an operation.
#[derive(Debug, Clone)]
enum Fate {
    Committed,
    /// COMMIT failed; SQLite's error.
    NotCommitted(Arc<rusqlite::Error>),
    /// SQLite rolled the transaction back when another operation failed.
    RolledBack,
    /// BEGIN IMMEDIATE failed; SQLite's error.
    NotStarted(Arc<rusqlite::Error>),
}

/// An operation waiting in the queue: applied inside the transaction, then
/// answered once the transaction's fate is known.
trait Operation: Send {
    /// Runs the operation's statements; `true` when its changes are to be
    /// kept (released into the transaction), `false` when they are to be
    /// rolled back (a refusal or an error).
    fn apply(&mut self, conn: &Connection) -> bool;

    /// Answers the caller.
    fn answer(self: Box<Self>, fate: &Fate);

    /// Answers the caller that the store is closed (nothing was attempted).
    fn close(self: Box<Self>);
}

struct Op<T, F> {
    run: Option<F>,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Operation for Op<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
{
    fn apply(&mut self, conn: &Connection) -> bool {
        let Some(run) = self.run.take() else {
            return false;
        };
        let result = run(conn);
        let keep = result.is_ok();
        self.result = Some(result);
        keep
    }

    fn answer(self: Box<Self>, fate: &Fate) {
        let result = match (fate, self.result) {
            // An operation that failed on its own keeps its own error.
            (_, Some(Err(e @ (StoreError::Unavailable(_) | StoreError::Corrupt(_))))) => Err(e),
            (Fate::Committed, Some(result)) => result,
            (Fate::Committed, None) => Err(unavailable(Closed)),
            (Fate::NotCommitted(e), _) => Err(unavailable(NotCommitted { source: e.clone() })),
            (Fate::RolledBack, _) => Err(unavailable(RolledBack)),
            (Fate::NotStarted(e), _) => Err(unavailable(NotStarted { source: e.clone() })),
        };
        // The caller may have gone away; the write's fate is the same.
        let _ = self.reply.send(result);
    }

    fn close(self: Box<Self>) {
        let _ = self.reply.send(Err(unavailable(Closed)));
    }
}

/// SQLite rolled a transaction back because one of its operations failed.
#[derive(Debug, thiserror::Error)]
#[error(
    "another write of the same transaction failed and the transaction was rolled back; this write did not happen"
)]
struct RolledBack;

type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

enum Job {
    Write(Box<dyn Operation>),
    /// A read of a store in memory.
    Read(ReadJob),
    /// Stop after the writes already queued; answered once the connection is closed.
    Close(oneshot::Sender<()>),
}

/// The sending end of the writer's queue. When every clone is dropped, the
/// writer finishes the queue, closes its connection and stops.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer thread on `conn`.
    pub(crate) fn spawn(conn: Connection) -> Result<Self, StoreError> {
        let (jobs, queue) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("idweb-sqlite-writer".into())
            .spawn(move || Batcher::new(conn, queue).run())
            .map_err(unavailable)?;
        Ok(Self { jobs })
    }

    /// Runs `f` in the next transaction; answers once that transaction is
    /// committed (or failed).
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let op = Op {
            run: Some(f),
            result: None,
            reply,
        };
        self.jobs
            .send(Job::Write(Box::new(op)))
            .await
            .map_err(|_| unavailable(Closed))?;
        answer.await.map_err(|_| unavailable(Closed))?
    }

    /// Runs `f` on the writer's connection between transactions (for a store
    /// in memory, which has no other connection).
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            let _ = reply.send(f(conn));
        });
        self.jobs
            .send(Job::Read(job))
            .await
            .map_err(|_| unavailable(Closed))?;
        answer.await.map_err(|_| unavailable(Closed))?
    }

    /// Lets the queued writes finish, then closes the connection. Later
    /// writes fail with [`StoreError::Unavailable`].
    pub(crate) async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.jobs.send(Job::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
    }
}

/// The writer thread's state.
struct Batcher {
    conn: Connection,
    queue: mpsc::Receiver<Job>,
    /// Reads met while filling a transaction, run after it.
    reads: Vec<ReadJob>,
    /// Callers of [`Writer::close`] met while filling a transaction.
    closing: Vec<oneshot::Sender<()>>,
}

impl Batcher {
    fn new(conn: Connection, queue: mpsc::Receiver<Job>) -> Self {
        Self {
            conn,
            queue,
            reads: Vec::new(),
            closing: Vec::new(),
        }
    }

    fn run(mut self) {
        while self.closing.is_empty() {
            let Some(job) = self.queue.blocking_recv() else {
                break;
            };
            match job {
                Job::Read(read) => read(&self.conn),
                Job::Close(done) => self.closing.push(done),
                Job::Write(first) => self.transaction(first),
            }
            for read in std::mem::take(&mut self.reads) {
                read(&self.conn);
            }
        }
        self.shut_down();
    }

    /// The next write already waiting, if any (reads and close requests met
    /// on the way are kept for after the transaction).
    fn next_waiting(&mut self) -> Option<Box<dyn Operation>> {
        while self.closing.is_empty() {
            match self.queue.try_recv() {
                Ok(Job::Write(op)) => return Some(op),
                Ok(Job::Read(read)) => self.reads.push(read),
                Ok(Job::Close(done)) => self.closing.push(done),
                Err(_) => return None,
            }
        }
        None
    }

    /// One transaction: `first` and the writes waiting behind it.
    fn transaction(&mut self, first: Box<dyn Operation>) {
        if let Err(e) = self.exec(sql::BEGIN) {
            tracing::warn!(error = %e, "could not start a write transaction");
            // The writes already waiting would wait for the same lock.
            let fate = Fate::NotStarted(Arc::new(e));
            first.answer(&fate);
            while let Some(op) = self.next_waiting() {
                op.answer(&fate);
            }
            return;
        }
        let mut batch: Vec<Box<dyn Operation>> = Vec::new();
        let mut next = Some(first);
        let mut rolled_back = false;
        while let Some(mut op) = next.take() {
            let applied = self.apply(op.as_mut());
            batch.push(op);
            if applied.is_err() {
                rolled_back = true;
                break;
            }
            if batch.len() < MAX_BATCH {
                next = self.next_waiting();
            }
        }
        let fate = if rolled_back {
            Fate::RolledBack
        } else {
            match self.exec(sql::COMMIT) {
                Ok(()) => Fate::Committed,
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        writes = batch.len(),
                        "a write transaction failed to commit; its writes are refused"
                    );
                    Fate::NotCommitted(Arc::new(e))
                }
            }
        };
        if !matches!(fate, Fate::Committed)
            && !self.conn.is_autocommit()
            && let Err(e) = self.exec(sql::ROLLBACK)
        {
            tracing::warn!(error = %e, "rolling back a failed transaction failed");
        }
        for op in batch {
            op.answer(&fate);
        }
    }

    /// Applies one operation inside its savepoint. `Err` when the
    /// transaction is gone (SQLite rolled it back, or a savepoint statement
    /// failed): nothing of the transaction can be committed.
    fn apply(&self, op: &mut dyn Operation) -> Result<(), ()> {
        if let Err(e) = self.exec(sql::SAVEPOINT) {
            tracing::warn!(error = %e, "could not open a savepoint");
            return Err(());
        }
        let keep = op.apply(&self.conn);
        if self.conn.is_autocommit() {
            // SQLite ended the transaction itself (some I/O errors, a full
            // disk): the earlier operations' changes are gone too.
            return Err(());
        }
        let end = if keep {
            self.exec(sql::SAVEPOINT_RELEASE)
        } else {
            self.exec(sql::SAVEPOINT_ROLLBACK)
                .and_then(|()| self.exec(sql::SAVEPOINT_RELEASE))
        };
        end.map_err(|e| {
            tracing::warn!(error = %e, "could not close a savepoint");
        })
    }

    fn exec(&self, statement: &str) -> Result<(), rusqlite::Error> {
        self.conn.prepare_cached(statement)?.execute([]).map(drop)
    }

    /// Refuses what is still queued, closes the connection (the last
    /// connection to a file checkpoints its log), then answers the callers
    /// of [`Writer::close`].
    fn shut_down(mut self) {
        self.queue.close();
        while let Ok(job) = self.queue.try_recv() {
            match job {
                Job::Write(op) => op.close(),
                // Dropping a read answers it: the store is closed.
                Job::Read(_) => {}
                Job::Close(done) => self.closing.push(done),
            }
        }
        if let Err((_, e)) = self.conn.close() {
            tracing::warn!(error = %db_error(e), "closing the writer connection failed");
        }
        for done in self.closing {
            let _ = done.send(());
        }
    }
}
