//! The `Store`: a redb database owned by one writer thread that group-commits closures.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase};

use crate::codec::KeyCodec;
use crate::error::StoreError;
use crate::schema;
use crate::table::{ReadTx, Told, WriteTx};
use crate::watch::{Watch, Watcher, Watchers};

/// How many queued writes one commit may take at most; bounds the latency a large batch adds.
const MAX_BATCH: usize = 2048;

/// Called once the commit that holds a successful write is durable (or has failed).
type Deliver = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;
/// One queued write: runs inside the batch's transaction (`Err` when the batch failed before it could run, so
/// it answers its caller with the cause); `Some` if its writes are to be kept.
type Job = Box<dyn for<'a, 'b> FnOnce(Result<&'a mut WriteTx<'b>, &StoreError>) -> Option<Deliver> + Send>;

/// A job with the latest time its commit may start: a write that can wait lets the writer gather more
/// writes into one commit (one fsync) instead of committing at once.
struct Queued {
    job: Job,
    commit_by: Instant,
}

/// Counters the benchmarks and the console read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// Durable commits made.
    pub commits: u64,
    /// Writes that were kept (summed over all commits).
    pub writes: u64,
    /// Writes whose closure failed and were undone.
    pub rolled_back: u64,
}

/// Told the number of writes of every durable commit (the metrics' writes-per-commit histogram).
type CommitObserver = Box<dyn Fn(usize) + Send + Sync>;

struct Counters {
    commits: AtomicU64,
    writes: AtomicU64,
    rolled_back: AtomicU64,
    observer: OnceLock<CommitObserver>,
}

struct Inner {
    path: PathBuf,
    db: Arc<Database>,
    jobs: Mutex<Option<mpsc::Sender<Queued>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    counters: Arc<Counters>,
}

/// A handle on the store; cheap to clone, shared by every actor of the process.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.inner.path).finish()
    }
}

impl Store {
    /// Opens (or creates) the database at `path`, creating its directory, every table, and checking the schema
    /// version: a file written by a newer nimbus is refused.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|source| StoreError::DataDir { path: dir.display().to_string(), source })?;
        }
        let db = match Database::create(&path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::AlreadyOpen { path: path.display().to_string() });
            }
            Err(e) => return Err(StoreError::redb(e)),
        };
        schema::prepare(&db, &path)?;
        let db = Arc::new(db);
        let counters = Arc::new(Counters {
            commits: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            rolled_back: AtomicU64::new(0),
            observer: OnceLock::new(),
        });
        let watchers = Arc::new(Watchers::default());
        let (tx, rx) = mpsc::channel::<Queued>();
        let writer = {
            let (db, counters, watchers) = (db.clone(), counters.clone(), watchers.clone());
            std::thread::Builder::new()
                .name("nimbus-store".into())
                .spawn(move || writer_loop(&db, &rx, &counters, &watchers))
                .expect("spawning the store writer thread")
        };
        let (jobs, writer) = (Mutex::new(Some(tx)), Mutex::new(Some(writer)));
        Ok(Store { inner: Arc::new(Inner { path, db, jobs, writer, counters }) })
    }

    /// Runs `f` atomically and durably. `f` runs on the writer thread, maybe in one transaction with other
    /// callers' closures; if it returns `Err`, its own writes are undone and the error is returned. The
    /// returned future resolves only after the commit holding the writes is on disk.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut WriteTx<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        self.write_within(Duration::ZERO, f).await
    }

    /// As [`Store::write`], for a write whose caller can wait: its commit may start up to `wait` later, so
    /// that writes arriving meanwhile share it. A write that cannot wait, or a full batch, commits them all
    /// at once. Background refreshes (host liveness) use it, so that thousands of them cost a few fsyncs a
    /// second instead of one each.
    pub async fn write_within<T, E, F>(&self, wait: Duration, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut WriteTx<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel::<Result<T, E>>();
        let job: Job = Box::new(move |tx| {
            let tx = match tx {
                Ok(tx) => tx,
                // The batch failed before this write ran.
                Err(e) => {
                    let _ = reply.send(Err(E::from(StoreError::CommitFailed(e.to_string()))));
                    return None;
                }
            };
            match f(tx) {
                Ok(value) => Some(Box::new(move |committed: Result<(), &StoreError>| {
                    let outcome = match committed {
                        Ok(()) => Ok(value),
                        Err(e) => Err(E::from(StoreError::CommitFailed(e.to_string()))),
                    };
                    let _ = reply.send(outcome);
                }) as Deliver),
                Err(e) => {
                    let _ = reply.send(Err(e));
                    None
                }
            }
        });
        {
            let jobs = self.inner.jobs.lock().expect("store job sender lock");
            let sender = jobs.as_ref().ok_or(StoreError::WriterGone)?;
            let queued = Queued { job, commit_by: Instant::now() + wait };
            sender.send(queued).map_err(|_| StoreError::WriterGone)?;
        }
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Starts a watch of the named tables (all keyed by `K`): it is told the keys of every later commit's
    /// writes to them (puts and deletes; not index changes). It starts inside a commit and returns once that
    /// commit is durable, so a snapshot read after it, together with what the watch tells, misses no write.
    pub async fn watch<K: KeyCodec>(&self, tables: &[&'static str]) -> Result<Watch<K>, StoreError> {
        let (watcher, watch) = Watcher::new(tables.to_vec());
        self.write(move |tx| {
            tx.start_watch(watcher);
            Ok::<_, StoreError>(())
        })
        .await?;
        Ok(watch)
    }

    /// Reads from a consistent snapshot. Runs on the caller's thread: redb readers never wait for the writer.
    pub fn read<T, E>(&self, f: impl FnOnce(&ReadTx) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let txn = self.inner.db.begin_read().map_err(StoreError::from)?;
        f(&ReadTx { txn })
    }

    /// Has `observe` told the number of writes of every durable commit from now on. A store has one
    /// observer: `false` if it had one already (the new one is dropped).
    pub fn on_commit(&self, observe: impl Fn(usize) + Send + Sync + 'static) -> bool {
        self.inner.counters.observer.set(Box::new(observe)).is_ok()
    }

    pub fn stats(&self) -> StoreStats {
        let c = &self.inner.counters;
        StoreStats {
            commits: c.commits.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            rolled_back: c.rolled_back.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting writes, lets the writer finish what is queued, and waits for it. Later writes fail with
    /// [`StoreError::WriterGone`]; reads keep working.
    pub fn close(&self) {
        self.inner.jobs.lock().expect("store job sender lock").take();
        if let Some(writer) = self.inner.writer.lock().expect("store writer lock").take() {
            let _ = writer.join();
        }
    }

    /// Closes the store and waits, at most `patience`, until this is its last handle, then lets the file go:
    /// the same process may open it again at once (a task that still held a handle, a write refused by the
    /// closing, has ended). `false` if handles were still held when the patience ran out.
    pub async fn close_and_release(self, patience: Duration) -> bool {
        self.close();
        let deadline = Instant::now() + patience;
        while Arc::strong_count(&self.inner) > 1 {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.jobs.get_mut().map(Option::take).ok();
        if let Ok(Some(writer)) = self.writer.get_mut().map(Option::take) {
            let _ = writer.join();
        }
    }
}

fn writer_loop(db: &Database, jobs: &mpsc::Receiver<Queued>, counters: &Counters, watchers: &Watchers) {
    while let Ok(first) = jobs.recv() {
        let batch = gather(first, jobs);
        let (delivered, rolled_back, result) = commit_batch(db, batch, watchers.tables());
        counters.rolled_back.fetch_add(rolled_back, Ordering::Relaxed);
        // The watches hear before the writers, so a cache kept by a watch shows a write once it is answered.
        let result = result.map(|told| watchers.committed(told.joined, &told.written));
        // Counted before the writers hear, so a write that has returned is in the stats.
        if result.is_ok() {
            counters.commits.fetch_add(1, Ordering::Relaxed);
            counters.writes.fetch_add(delivered.len() as u64, Ordering::Relaxed);
            if let Some(observe) = counters.observer.get() {
                observe(delivered.len());
            }
        } else if let Err(e) = &result {
            tracing::error!(cause = %e, writes = delivered.len(), "store commit failed");
        }
        for deliver in delivered {
            deliver(result.as_ref().map(|_| ()));
        }
    }
}

/// The jobs of the next commit: `first`, what is queued behind it, and while every job so far can wait, what
/// arrives before the earliest of their `commit_by` (up to [`MAX_BATCH`]).
fn gather(first: Queued, jobs: &mpsc::Receiver<Queued>) -> Vec<Job> {
    let mut commit_by = first.commit_by;
    let mut batch = vec![first.job];
    while batch.len() < MAX_BATCH {
        let next = match jobs.try_recv() {
            Ok(queued) => queued,
            Err(_) => match commit_by.checked_duration_since(Instant::now()) {
                Some(wait) if !wait.is_zero() => match jobs.recv_timeout(wait) {
                    Ok(queued) => queued,
                    Err(_) => break,
                },
                _ => break,
            },
        };
        commit_by = commit_by.min(next.commit_by);
        batch.push(next.job);
    }
    batch
}

/// Runs a batch in one transaction and commits it. Returns the callbacks of the kept writes, how many were
/// undone, and the commit's outcome.
fn commit_batch(
    db: &Database,
    batch: Vec<Job>,
    watched: Vec<&'static str>,
) -> (Vec<Deliver>, u64, Result<Told, StoreError>) {
    // Jobs that cannot run are told why, rather than finding their reply channel closed.
    let refuse = |jobs: std::vec::IntoIter<Job>, e: &StoreError| jobs.for_each(|job| drop(job(Err(e))));
    let mut txn = match db.begin_write() {
        Ok(txn) => txn,
        Err(e) => {
            let e = StoreError::from(e);
            refuse(batch.into_iter(), &e);
            return (Vec::new(), 0, Err(e));
        }
    };
    if let Err(e) = txn.set_durability(Durability::Immediate) {
        let e = StoreError::from(e);
        refuse(batch.into_iter(), &e);
        return (Vec::new(), 0, Err(e));
    }
    let mut delivered = Vec::with_capacity(batch.len());
    let mut rolled_back = 0;
    let mut jobs = batch.into_iter();
    // One `WriteTx` for the whole batch, so each table is opened once; each job is a part of it.
    let mut part = WriteTx::new(&txn, watched);
    while let Some(job) = jobs.next() {
        part.next_part();
        let kept = std::panic::catch_unwind(AssertUnwindSafe(|| job(Ok(&mut part))));
        match kept {
            Ok(Some(deliver)) => delivered.push(deliver),
            // A failed or panicking closure: undo its writes; its caller already has its error (or, after a
            // panic, sees the reply channel closed).
            Ok(None) | Err(_) => {
                rolled_back += 1;
                if let Err(e) = part.rollback() {
                    // Cannot separate this part from the others: give up on the whole batch.
                    drop(part);
                    drop(txn);
                    refuse(jobs, &e);
                    return (delivered, rolled_back, Err(e));
                }
            }
        }
    }
    // Every table is closed (its root written back) before the commit.
    let told = part.into_told();
    let result = txn.commit().map(|()| told).map_err(StoreError::from);
    (delivered, rolled_back, result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Pair;
    use crate::records::Project;
    use crate::schema::{INSTANCES_BY_HOST, PROJECT_NAMES, PROJECTS};
    use crate::table::{Reads, Table};
    use nimbus_protocol::ids::{HostId, InstanceId, ProjectId};

    fn project(name: &str) -> Project {
        Project {
            id: ProjectId::generate(),
            name: name.into(),
            description: String::new(),
            enabled: true,
            network_mode: crate::records::NetworkMode::Flat,
            created_at: 0,
        }
    }

    #[tokio::test]
    async fn concurrent_writers_share_commits_and_all_are_durable() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.redb")).unwrap();
        let writes: Vec<_> = (0..200)
            .map(|n| {
                let store = store.clone();
                tokio::spawn(async move {
                    let p = project(&format!("p{n}"));
                    store.write(move |tx| tx.put(&PROJECTS, &p.id, &p)).await
                })
            })
            .collect();
        for w in writes {
            w.await.unwrap().unwrap();
        }
        let stats = store.stats();
        assert_eq!(stats.writes, 200);
        assert!(stats.commits < 200, "group commit batches writes: {stats:?}");
        store.close();
        drop(store);
        let reopened = Store::open(dir.path().join("s.redb")).unwrap();
        assert_eq!(reopened.read(|r| r.scan(&PROJECTS)).unwrap().len(), 200);
    }

    /// Writes `n` projects that can wait `wait` each, started 10 ms apart; returns their tasks.
    fn waiting_writes(store: &Store, n: usize, wait: Duration) -> Vec<tokio::task::JoinHandle<Result<(), StoreError>>> {
        (0..n)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(10 * i as u64)).await;
                    let p = project(&format!("w{i}"));
                    store.write_within(wait, move |tx| tx.put(&PROJECTS, &p.id, &p)).await
                })
            })
            .collect()
    }

    #[tokio::test]
    async fn writes_that_can_wait_share_one_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.redb")).unwrap();
        for w in waiting_writes(&store, 5, Duration::from_secs(2)) {
            w.await.unwrap().unwrap();
        }
        assert_eq!(store.stats(), StoreStats { commits: 1, writes: 5, rolled_back: 0 });
    }

    #[tokio::test]
    async fn a_write_that_cannot_wait_takes_the_waiting_ones_into_its_commit_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.redb")).unwrap();
        let waiting = waiting_writes(&store, 3, Duration::from_secs(600));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let p = project("urgent");
        store.write(move |tx| tx.put(&PROJECTS, &p.id, &p)).await.unwrap();
        for w in waiting {
            tokio::time::timeout(Duration::from_secs(30), w)
                .await
                .expect("committed with the urgent write")
                .unwrap()
                .unwrap();
        }
        assert_eq!(store.stats(), StoreStats { commits: 1, writes: 4, rolled_back: 0 });
    }

    #[derive(Debug, thiserror::Error)]
    enum TestError {
        #[error("refused")]
        Refused,
        #[error(transparent)]
        Store(#[from] StoreError),
    }

    #[tokio::test]
    async fn a_failed_write_is_undone_without_touching_its_neighbours() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.redb")).unwrap();
        let kept = project("kept");
        let (k1, k2) = (kept.clone(), kept.clone());
        let (owner, held, added) = (HostId("h".into()), InstanceId::generate(), InstanceId::generate());
        let (first_owner, undone_owner) = (owner.clone(), owner.clone());
        store
            .write(move |tx| {
                let owner = first_owner;
                tx.put(&PROJECTS, &k1.id, &k1)?;
                tx.put(&PROJECT_NAMES, &k1.name, &k1.id)?;
                tx.index_add(&INSTANCES_BY_HOST, &owner, &held)
            })
            .await
            .unwrap();
        let doomed = project("doomed");
        let (fail, ok) = tokio::join!(
            store.write(move |tx| {
                let owner = undone_owner;
                // Overwrites, inserts, a delete and index changes, then fails: all of it must be undone.
                let mut changed = k2.clone();
                changed.name = "changed".into();
                tx.put(&PROJECTS, &changed.id, &changed)?;
                tx.put(&PROJECTS, &doomed.id, &doomed)?;
                tx.put(&PROJECT_NAMES, &doomed.name, &doomed.id)?;
                assert!(tx.delete(&PROJECT_NAMES, &k2.name)?.is_some());
                tx.index_remove(&INSTANCES_BY_HOST, &owner, &held)?;
                tx.index_add(&INSTANCES_BY_HOST, &owner, &added)?;
                Err::<(), _>(TestError::Refused)
            }),
            store.write(|tx| tx.put(&PROJECT_NAMES, &"neighbour".to_string(), &ProjectId::generate())),
        );
        assert!(matches!(fail, Err(TestError::Refused)));
        ok.unwrap();
        let (projects, names, instances) = store
            .read(|r| {
                Ok::<_, StoreError>((
                    r.scan(&PROJECTS)?,
                    r.scan(&PROJECT_NAMES)?,
                    r.index_get(&INSTANCES_BY_HOST, &owner)?,
                ))
            })
            .unwrap();
        assert_eq!(projects.len(), 1);
        assert_eq!(projects[0].1, kept);
        assert_eq!(names.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), vec!["kept", "neighbour"]);
        assert_eq!(instances, vec![held], "the index changes are undone");
        assert_eq!(store.stats().rolled_back, 1);
    }

    /// A job of a batch that writes `name` as the project's name, then fails or panics when asked to.
    fn naming(id: ProjectId, name: &'static str, ends: Result<(), bool>) -> Job {
        Box::new(move |tx| {
            let tx = tx.expect("the batch runs");
            tx.put(&PROJECT_NAMES, &"shared".to_string(), &id).unwrap();
            let mut p = project(name);
            p.id = id;
            tx.put(&PROJECTS, &id, &p).unwrap();
            match ends {
                Ok(()) => Some(Box::new(|_: Result<(), &StoreError>| {}) as Deliver),
                Err(false) => None,
                Err(true) => panic!("a closure that panics"),
            }
        })
    }

    #[test]
    fn in_one_batch_a_failed_or_panicking_part_undoes_only_its_own_writes_over_the_open_tables() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.redb")).unwrap();
        let ids: Vec<ProjectId> = (0..4).map(|_| ProjectId::generate()).collect();
        // Each part overwrites the key the one before it wrote, in tables the batch keeps open.
        let batch = vec![
            naming(ids[0], "first", Ok(())),
            naming(ids[1], "fails", Err(false)),
            naming(ids[2], "panics", Err(true)),
            naming(ids[3], "last", Ok(())),
        ];
        let (delivered, rolled_back, result) = commit_batch(&store.inner.db, batch, Vec::new());
        result.unwrap();
        assert_eq!((delivered.len(), rolled_back), (2, 2));
        let (shared, projects) = store
            .read(|r| Ok::<_, StoreError>((r.get(&PROJECT_NAMES, &"shared".to_string())?, r.scan(&PROJECTS)?)))
            .unwrap();
        assert_eq!(shared, Some(ids[3]), "the last kept part's write stands");
        let mut names: Vec<&str> = projects.iter().map(|(_, p)| p.name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["first", "last"], "the failed and the panicking parts left nothing");
    }

    #[tokio::test]
    async fn a_watch_is_told_the_keys_kept_commits_wrote_to_its_tables_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.redb")).unwrap();
        let before = project("before");
        let b = before.clone();
        store.write(move |tx| tx.put(&PROJECTS, &b.id, &b)).await.unwrap();
        let watch = store.watch::<ProjectId>(&[PROJECTS.name()]).await.unwrap();
        assert!(watch.written().is_empty(), "writes before the watch are not told");
        let (kept, undone) = (project("kept"), project("undone"));
        let (k, u, gone) = (kept.clone(), undone.clone(), before.id);
        let (ok, failed, other) = tokio::join!(
            store.write(move |tx| {
                tx.put(&PROJECTS, &k.id, &k)?;
                tx.delete(&PROJECTS, &gone).map(drop)
            }),
            store.write(move |tx| {
                tx.put(&PROJECTS, &u.id, &u)?;
                Err::<(), _>(TestError::Refused)
            }),
            store.write(|tx| tx.put(&PROJECT_NAMES, &"elsewhere".to_string(), &ProjectId::generate())),
        );
        ok.unwrap();
        other.unwrap();
        assert!(matches!(failed, Err(TestError::Refused)));
        let mut told = watch.written();
        told.sort();
        let mut expected = vec![kept.id, before.id];
        expected.sort();
        assert_eq!(told, expected, "a put and a delete, not the undone write nor another table's");
        assert!(watch.written().is_empty(), "each key is told once");
        // Writes to its tables go on once the watch is dropped (the writer forgets it: see watch.rs).
        drop(watch);
        let again = project("again");
        store.write(move |tx| tx.put(&PROJECTS, &again.id, &again)).await.unwrap();
    }

    #[tokio::test]
    async fn a_second_open_of_the_same_file_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let _store = Store::open(&path).unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::AlreadyOpen { .. }), "{err}");
    }

    #[test]
    fn pair_prefix_scans_one_first_part() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.redb")).unwrap();
        let table: Table<Pair<String, u32>, Project> = Table::new("projects_by_pair");
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            store
                .write(move |tx| {
                    for (a, b) in [("a", 2), ("ab", 1), ("a", 1), ("b", 1)] {
                        tx.put(&table, &Pair(a.to_string(), b), &project(a))?;
                    }
                    Ok::<_, StoreError>(())
                })
                .await
                .unwrap();
        });
        let table: Table<Pair<String, u32>, Project> = Table::new("projects_by_pair");
        let got = store.read(|r| r.scan_prefix(&table, &Pair::<String, u32>::prefix(&"a".to_string()))).unwrap();
        assert_eq!(got.iter().map(|(Pair(a, b), _)| (a.as_str(), *b)).collect::<Vec<_>>(), vec![("a", 1), ("a", 2)]);
    }
}
