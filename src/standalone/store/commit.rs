//! Group commit for the SQLite store: one writer thread owns every write transaction and commits
//! all the writes that queued while the previous commit ran in one transaction (one fsync),
//! then answers each caller.
//!
//! Why: with `synchronous=FULL` each commit costs an fsync, and a synced task makes 4–5 writes
//! (finalizer, status, connection history, Event), so one commit per write made the disk the
//! limit of bulk syncs and of the REST write path. Writes arriving together now share a commit.
//!
//! Each write keeps its own semantics: it runs inside a SAVEPOINT of the shared transaction, so
//! one that fails (a stale resourceVersion, a missing object, a panic) is rolled back alone and
//! its error goes to its own caller only; the writes after it in the batch see the writes before
//! it. A caller is answered only after the COMMIT returned: acknowledged still means durable.
//!
//! Owns: the writer thread, batching, savepoints, acknowledgements and the post-commit
//! notifications (cache, then change broadcast). Must not touch: what a write does (`store`,
//! `rows`, `semantics`) or reads (they take the connection lock, or their own connection).

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::{broadcast, oneshot};

use super::cache::{Cache, Written};
use crate::engine::{ObjectKey, StoreError};
use crate::standalone::rows::db_err;

/// Writes at most in one transaction: bounds how long the connection lock is held (readers of
/// `sqlite::memory:` share it) and how much one failed COMMIT takes down with it.
const MAX_BATCH: usize = 256;

/// What a write returns to its caller, type-erased for the queue (`store::tx` downcasts it).
pub(crate) type Output = Box<dyn Any + Send>;

/// What a write reports for after its commit: keys to broadcast, objects for the cache.
#[derive(Default)]
pub(crate) struct Effects {
    pub keys: Vec<ObjectKey>,
    pub written: Vec<Written>,
}

/// One write: runs inside the shared transaction.
pub(crate) type Work = Box<dyn FnOnce(&Transaction, &str, &mut Effects) -> Result<Output, StoreError> + Send>;

struct Job {
    work: Work,
    reply: oneshot::Sender<Result<Output, StoreError>>,
}

/// The sending side of the writer thread's queue; dropping it stops the thread.
pub(crate) struct Committer {
    jobs: mpsc::Sender<Job>,
}

impl Committer {
    /// Start the writer thread on `conn` (shared with readers through its lock).
    pub(crate) fn start(
        conn: Arc<Mutex<Connection>>,
        origin: String,
        changes: broadcast::Sender<ObjectKey>,
        cache: Arc<Cache>,
    ) -> Result<Self, StoreError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("calsync-store-commit".into())
            .spawn(move || {
                // Ends when the store (the only sender) is dropped.
                while let Ok(first) = queue.recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match queue.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    commit_batch(&conn, &origin, batch, &changes, &cache);
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the store's writer thread: {e}")))?;
        Ok(Committer { jobs })
    }

    /// Queue `work` and wait until it is committed (or failed).
    pub(crate) async fn submit(&self, work: Work) -> Result<Output, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { work, reply })
            .map_err(|_| StoreError::Unavailable("the store's writer thread has stopped".into()))?;
        answer.await.map_err(|_| StoreError::Unavailable("the store's writer thread has stopped".into()))?
    }
}

/// A write run in the batch, waiting for the COMMIT.
struct Ran {
    reply: oneshot::Sender<Result<Output, StoreError>>,
    result: Result<(Output, Effects), StoreError>,
}

fn commit_batch(
    conn: &Mutex<Connection>,
    origin: &str,
    batch: Vec<Job>,
    changes: &broadcast::Sender<ObjectKey>,
    cache: &Cache,
) {
    // A panic while holding the lock cannot leave a half transaction (SQLite rolls it back on
    // drop), so a poisoned lock is still safe to use.
    let mut guard = conn.lock().unwrap_or_else(|e| e.into_inner());
    let tx = match guard.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let err = db_err(e);
            for job in batch {
                let _ = job.reply.send(Err(err.clone()));
            }
            return;
        }
    };
    let mut ran: Vec<Ran> = Vec::with_capacity(batch.len());
    let mut broken: Option<StoreError> = None;
    let mut jobs = batch.into_iter();
    for job in jobs.by_ref() {
        match run_one(&tx, origin, job.work) {
            Step::Done(result) => ran.push(Ran { reply: job.reply, result }),
            Step::Broken(result, err) => {
                ran.push(Ran { reply: job.reply, result });
                broken = Some(err);
                break;
            }
        }
    }
    let committed = match broken {
        Some(err) => {
            drop(tx);
            Err(err)
        }
        None => tx.commit().map_err(db_err),
    };
    match committed {
        Ok(()) => {
            // Cache before broadcast: whoever reacts to a notification reads what was committed.
            for r in &ran {
                if let Ok((_, effects)) = &r.result {
                    cache.committed(&effects.written);
                }
            }
            for r in ran {
                let result = r.result.map(|(out, effects)| {
                    for key in effects.keys {
                        // No subscribers is fine.
                        let _ = changes.send(key);
                    }
                    out
                });
                let _ = r.reply.send(result);
            }
        }
        Err(err) => {
            // Nothing of the batch is stored: writes that had succeeded get the commit's error,
            // failed ones keep their own.
            for r in ran {
                let _ = r.reply.send(r.result.map(|_| ()).and(Err(err.clone())));
            }
        }
    }
    for job in jobs {
        let _ = job.reply.send(Err(StoreError::Unavailable("the store's transaction failed; retry".into())));
    }
}

enum Step {
    /// The write ran (or failed and was rolled back alone); the batch goes on.
    Done(Result<(Output, Effects), StoreError>),
    /// The shared transaction cannot go on (it was rolled back, or a savepoint failed).
    Broken(Result<(Output, Effects), StoreError>, StoreError),
}

fn run_one(tx: &Transaction, origin: &str, work: Work) -> Step {
    if let Err(e) = tx.execute_batch("SAVEPOINT w") {
        let err = db_err(e);
        return Step::Broken(Err(err.clone()), err);
    }
    let mut effects = Effects::default();
    let result = catch_unwind(AssertUnwindSafe(|| work(tx, origin, &mut effects)))
        .unwrap_or_else(|_| Err(StoreError::Unavailable("a store write failed unexpectedly (panic)".into())));
    match result {
        Ok(out) => match tx.execute_batch("RELEASE w") {
            Ok(()) => Step::Done(Ok((out, effects))),
            Err(e) => {
                let err = db_err(e);
                Step::Broken(Err(err.clone()), err)
            }
        },
        Err(err) => {
            // Some errors (disk full, I/O) make SQLite roll back the whole transaction: the
            // writes before this one are gone too.
            if tx.is_autocommit() {
                return Step::Broken(Err(err.clone()), err);
            }
            match tx.execute_batch("ROLLBACK TO w; RELEASE w") {
                Ok(()) => Step::Done(Err(err)),
                Err(e) => Step::Broken(Err(err), db_err(e)),
            }
        }
    }
}
