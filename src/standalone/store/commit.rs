//! Group commit for the SQLite store: one writer thread owns every write transaction and commits
//! all the writes that queued while the previous commit ran in one transaction (one fsync),
//! then answers each caller.
//!
//! Why: with `synchronous=FULL` each commit costs an fsync, and a synced task made 4–5 writes
//! (finalizer, status, connection history, Event), so one commit per write made the disk the
//! limit of bulk syncs and of the REST write path. Writes arriving together now share a commit
//! (and a reconcile's status, history and Event are one write: `unit`).
//!
//! Each write keeps its own semantics: it runs inside a SAVEPOINT of the shared transaction, so
//! one that fails (a stale resourceVersion, a missing object, a panic) is rolled back alone and
//! its error goes to its own caller only; the writes after it in the batch see the writes before
//! it. A caller is answered only after the COMMIT returned: acknowledged still means durable.
//!
//! The WAL is checkpointed by this thread after it answered a batch, not inside the COMMIT
//! (SQLite's auto-checkpoint), where every caller of that batch waited for it: perf of the REST
//! write path put 12.5% of the commit thread in checkpoints. Same trigger (1,000 WAL frames),
//! same PASSIVE mode.
//!
//! Owns: the writer thread, batching, savepoints, acknowledgements, checkpoints and the
//! post-commit notifications (cache, then change broadcast). Must not touch: what a write does
//! (`store`, `rows`, `semantics`) or reads (they take the connection lock, or their own
//! connection).

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use rusqlite::hooks::Wal;
use rusqlite::wal::CheckpointMode;
use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::{broadcast, oneshot};

use super::cache::{Cache, Written};
use crate::engine::{ObjectKey, StoreError};
use crate::standalone::rows::{self, db_err};

/// Writes at most in one transaction: bounds how long the connection lock is held (readers of
/// `sqlite::memory:` share it) and how much one failed COMMIT takes down with it.
const MAX_BATCH: usize = 256;

/// WAL frames after which the writer checkpoints (SQLite's auto-checkpoint default).
const CHECKPOINT_FRAMES: i32 = 1_000;

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
    counts: Arc<Counts>,
}

/// Writes and COMMITs so far (writes per commit is the batching achieved).
#[derive(Default)]
struct Counts {
    writes: AtomicU64,
    commits: AtomicU64,
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
        let counts = Arc::new(Counts::default());
        let counted = counts.clone();
        // Frames in the WAL after the last commit. The hook replaces SQLite's auto-checkpoint
        // on this connection (both are the WAL hook); in-memory databases never call it.
        let frames = Arc::new(AtomicI32::new(0));
        let seen = frames.clone();
        conn.lock()
            .unwrap_or_else(|e| e.into_inner())
            .wal_hook(Some(move |_: &mut Wal, pages: i32| {
                seen.store(pages, Ordering::Relaxed);
                Ok(())
            }))
            .map_err(db_err)?;
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
                    counted.writes.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    counted.commits.fetch_add(1, Ordering::Relaxed);
                    commit_batch(&conn, &origin, batch, &changes, &cache);
                    if frames.load(Ordering::Relaxed) >= CHECKPOINT_FRAMES {
                        frames.store(0, Ordering::Relaxed);
                        checkpoint(&conn);
                    }
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the store's writer thread: {e}")))?;
        Ok(Committer { jobs, counts })
    }

    /// (writes, transactions) handed to SQLite so far.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.counts.writes.load(Ordering::Relaxed), self.counts.commits.load(Ordering::Relaxed))
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

/// A PASSIVE checkpoint: copies what no reader still needs, never waits for readers. What it
/// leaves is copied by the next one; a failure is logged (the WAL only grows until then).
fn checkpoint(conn: &Mutex<Connection>) {
    let guard = conn.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = guard.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE) {
        tracing::warn!(error = %e, "SQLite WAL checkpoint failed; the next one retries");
    }
}

enum Step {
    /// The write ran (or failed and was rolled back alone); the batch goes on.
    Done(Result<(Output, Effects), StoreError>),
    /// The shared transaction cannot go on (it was rolled back, or a savepoint failed).
    Broken(Result<(Output, Effects), StoreError>, StoreError),
}

fn run_one(tx: &Transaction, origin: &str, work: Work) -> Step {
    if let Err(e) = rows::exec(tx, "SAVEPOINT w", []).map(|_| ()) {
        let err = db_err(e);
        return Step::Broken(Err(err.clone()), err);
    }
    let mut effects = Effects::default();
    let result = catch_unwind(AssertUnwindSafe(|| work(tx, origin, &mut effects)))
        .unwrap_or_else(|_| Err(StoreError::Unavailable("a store write failed unexpectedly (panic)".into())));
    match result {
        Ok(out) => match rows::exec(tx, "RELEASE w", []).map(|_| ()) {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::credentials::envelope::{Key, Keyring};
    use crate::engine::{ObjectKey, Objects, StoreError};
    use crate::resources::TaskSync;
    use crate::standalone::store::SqliteObjects;

    fn task(name: &str, rv: Option<&str>) -> TaskSync {
        let mut t: TaskSync = serde_json::from_value(serde_json::json!({
            "apiVersion": "calendar.getitdone.app/v1alpha1", "kind": "TaskSync",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"connectionRef": {"name": "c"}, "taskId": name, "title": "T", "start": "2026-03-05T14:00:00Z"}
        }))
        .unwrap();
        t.metadata.resource_version = rv.map(str::to_string);
        t
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writes_share_commits_and_a_failing_one_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("g.db").display());
        let key = Key::generate().0;
        let store = SqliteObjects::open(&url, Keyring::new(key.clone())).await.unwrap();
        let mut writers = Vec::new();
        for i in 0..200 {
            let store = store.clone();
            writers.push(tokio::spawn(async move {
                // Every fourth write is stale (a resourceVersion for an object that is not
                // there): NotFound for it, nothing for its neighbours.
                let stale = i % 4 == 3;
                let result = store.apply_task_sync(&task(&format!("t{i}"), stale.then_some("1"))).await;
                (stale, result)
            }));
        }
        let mut stored = 0;
        for w in writers {
            match w.await.unwrap() {
                (false, Ok(_)) => stored += 1,
                (true, Err(StoreError::NotFound(_))) => {}
                other => panic!("unexpected outcome {other:?}"),
            }
        }
        assert_eq!(stored, 150);
        let (writes, commits) = store.inner.committer.counts();
        assert_eq!(writes, 200);
        assert!(commits < writes, "200 concurrent writes took {commits} commits: none shared");

        // A conflict inside a batch leaves the rest of the batch and the object as it was.
        let t0 = store.get_task_sync("default", "t0").await.unwrap().unwrap();
        let stale_t0 = task("t0", Some("999999"));
        let ok = store.apply_task_sync(&t0);
        let stale = store.apply_task_sync(&stale_t0);
        let (ok, stale) = tokio::join!(ok, stale);
        assert!(ok.is_ok());
        assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");

        // Acknowledged means on disk: a fresh process (no cache) sees every acknowledged write.
        drop(store);
        let reopened = SqliteObjects::open(&url, Keyring::new(key)).await.unwrap();
        let all = reopened.list_task_syncs(None, &BTreeMap::new()).await.unwrap();
        assert_eq!(all.len(), 150);
        assert!(reopened.get_task_sync("default", "t3").await.unwrap().is_none());
        let key = ObjectKey::task_sync("default", "t0");
        reopened.add_finalizer(&key, "f").await.unwrap();
        let t0 = reopened.get_task_sync("default", "t0").await.unwrap().unwrap();
        assert_eq!(t0.metadata.finalizers, Some(vec!["f".to_string()]), "the cache serves the write just made");
    }
}
