//! Compaction off the tasks (DESIGN §5). A task's database never compacts itself: when a
//! checkpoint or a full memtable leaves [`L0_TO_COMPACT`] or more L0 SSTs, the task puts a work
//! item on a [`CompactionQueue`], and a compactor runs SlateDB's compactor on that database
//! until it settles (no compaction running or scheduled), then lets it go.
//!
//! Two queues:
//! - [`LocalCompactor`]: a thread of the process with its own runtime (so compaction never runs
//!   on the tasks' runtime), used by `weir run` and `weir standalone`, and by workers for
//!   databases in local folders;
//! - SQS ([`crate::sqs`]): work items for databases on S3, taken by `weir compactor` processes
//!   (the design's serverless compaction).
//!
//! A compactor may die at any moment without losing or corrupting state. SlateDB commits a
//! compaction by a conditional write of the manifest; the output SSTs of a compaction that never
//! committed are unreferenced and collected later. A newer compactor of the same database fences
//! an older one (the compactor epoch in the manifest), so two never both commit. A work item is
//! acknowledged only after its compaction settled; an unacknowledged one comes back (SQS's
//! visibility timeout) and is simply run again, and the task asks again while L0 SSTs pile up.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use slatedb::config::{CompactionWorkerOptions, CompactorOptions};
use slatedb::object_store::path::Path;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::error::{Result, StateError};
use crate::location::{StateLocation, StoreKind};

/// L0 SSTs a database may have before its task asks for a compaction: SlateDB's size-tiered
/// scheduler merges L0 SSTs four at a time, and writers stop at `l0_max_ssts` (8).
pub const L0_TO_COMPACT: usize = 4;

/// How often a task looks at its database's L0 SSTs at most; a watcher also looks this often
/// while the database is open, so a writer stopped at `l0_max_ssts` is never left waiting.
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// Where a task's requests for compaction go. `request` never blocks; a request for a database
/// already waiting is dropped.
pub trait CompactionQueue: Send + Sync + fmt::Debug {
    fn request(&self, location: &StateLocation, db: &Path);

    /// How soon a database whose L0 SSTs stay many is asked for again: at least as long as a
    /// compactor takes to pick a request up, or requests pile up.
    fn ask_again_after(&self) -> Duration;
}

/// How a compactor runs SlateDB's compactor on one database.
#[derive(Clone, Debug)]
pub struct CompactorSettings {
    /// How often the compactor looks for new L0 SSTs and finished compactions.
    pub poll_interval: Duration,
    /// A database counts as settled after this long with no compaction running.
    pub quiet_for: Duration,
    /// The longest a compactor stays on one database; a database still busy is asked for again.
    pub max_run: Duration,
    /// Largest output SST: a compaction holds one in memory until it is uploaded.
    pub max_sst_size: usize,
}

impl Default for CompactorSettings {
    fn default() -> Self {
        CompactorSettings {
            poll_interval: Duration::from_millis(100),
            quiet_for: Duration::from_millis(600),
            max_run: Duration::from_secs(60),
            max_sst_size: 64 << 20,
        }
    }
}

impl CompactorSettings {
    pub(crate) fn compactor_options(&self) -> CompactorOptions {
        let worker = CompactionWorkerOptions {
            // One compaction at a time, unsplit: its memory is about one output SST and the
            // blocks being merged.
            max_concurrent_compactions: 1,
            max_subcompactions: 1,
            compactions_poll_interval: self.poll_interval,
            max_sst_size: self.max_sst_size,
            max_fetch_tasks: 2,
            ..CompactionWorkerOptions::default()
        };
        CompactorOptions {
            poll_interval: self.poll_interval,
            max_concurrent_compactions: 1,
            worker: Some(worker),
            ..CompactorOptions::default()
        }
    }
}

/// What one run of a compactor on a database did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compacted {
    /// No compaction running or scheduled any more.
    Settled { l0_before: usize, l0_after: usize },
    /// Still busy after [`CompactorSettings::max_run`]; the task asks again if it needs to.
    TimedOut { l0_before: usize, l0_after: usize },
    /// The database is gone (its job ended and its state was deleted).
    Gone,
    /// Another compactor took the database over (fenced this one).
    Fenced,
}

/// Runs SlateDB's compactor on the database at `db` until no compaction is running or due, or
/// for at most `settings.max_run`.
pub async fn compact(location: &StateLocation, db: &Path, settings: &CompactorSettings) -> Result<Compacted> {
    let admin = location.admin(db);
    let failed = |e: slatedb::Error| StateError::db(db.as_ref(), e);
    let Some(manifest) = admin.read_manifest(None).await.map_err(failed)? else {
        return Ok(Compacted::Gone);
    };
    let l0_before = manifest.l0().len();
    let started = Instant::now();
    let stop = CancellationToken::new();
    let run = admin.run_compactor_with_options(stop.clone(), settings.compactor_options());
    tokio::pin!(run);
    let mut quiet_since = Instant::now();
    let mut l0_after = l0_before;
    let timed_out = loop {
        tokio::select! {
            ended = &mut run => return match ended {
                // The compactor stops by itself only when something else ended it.
                Ok(()) => Ok(Compacted::Settled { l0_before, l0_after }),
                Err(e) if matches!(e.kind(), slatedb::ErrorKind::Closed(slatedb::CloseReason::Fenced)) => {
                    Ok(Compacted::Fenced)
                }
                Err(e) => Err(failed(e)),
            },
            _ = tokio::time::sleep(settings.poll_interval * 2) => {}
        }
        let view = admin.read_compactor_state_view().await.map_err(failed)?;
        l0_after = view.manifest().l0().len();
        let busy = view.compactions().is_some_and(|c| c.recent_compactions().any(|c| c.active()));
        if busy || l0_after >= L0_TO_COMPACT {
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= settings.quiet_for {
            break false;
        }
        if started.elapsed() >= settings.max_run {
            break true;
        }
    };
    stop.cancel();
    match run.await {
        Ok(()) => {}
        Err(e) if matches!(e.kind(), slatedb::ErrorKind::Closed(slatedb::CloseReason::Fenced)) => {
            return Ok(Compacted::Fenced);
        }
        Err(e) => return Err(failed(e)),
    }
    Ok(if timed_out { Compacted::TimedOut { l0_before, l0_after } } else { Compacted::Settled { l0_before, l0_after } })
}

/// The shape of a database's LSM tree and its compactions, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeStatus {
    pub l0: usize,
    pub sorted_runs: usize,
    /// Compactions started and not yet committed.
    pub active_compactions: usize,
    /// Raised by each compactor that takes the database over.
    pub compactor_epoch: u64,
}

/// The stored shape of the database at `db` (`None`: there is none).
pub async fn status(location: &StateLocation, db: &Path) -> Result<Option<TreeStatus>> {
    let admin = location.admin(db);
    let failed = |e: slatedb::Error| StateError::db(db.as_ref(), e);
    if admin.read_manifest(None).await.map_err(failed)?.is_none() {
        return Ok(None);
    }
    let view = admin.read_compactor_state_view().await.map_err(failed)?;
    Ok(Some(TreeStatus {
        l0: view.manifest().l0().len(),
        sorted_runs: view.manifest().compacted().len(),
        active_compactions: view.compactions().map_or(0, |c| c.recent_compactions().filter(|c| c.active()).count()),
        compactor_epoch: view.manifest().compactor_epoch(),
    }))
}

/// Asks for compactions of one database as its L0 SSTs pile up: after each checkpoint and each
/// write that may have flushed a memtable.
pub(crate) struct CompactionTrigger {
    queue: Arc<dyn CompactionQueue>,
    location: StateLocation,
    path: Path,
    /// When the database was last asked for, and last looked at.
    times: Mutex<(Option<Instant>, Option<Instant>)>,
}

impl CompactionTrigger {
    /// A trigger for the database `db` at `path`, with a watcher task that checks it every
    /// [`LOOK_EVERY`] until the trigger is dropped: checks after writes alone would stop when a
    /// writer waits for L0 room, and nothing would ask for the compaction that gives it room.
    pub(crate) fn start(
        queue: Arc<dyn CompactionQueue>,
        location: &StateLocation,
        path: &Path,
        db: &slatedb::Db,
    ) -> Arc<CompactionTrigger> {
        let trigger = Arc::new(CompactionTrigger {
            queue,
            location: location.clone(),
            path: path.clone(),
            times: Mutex::new((None, None)),
        });
        let (weak, db) = (Arc::downgrade(&trigger), db.clone());
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(LOOK_EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(trigger) = weak.upgrade() else { return };
                trigger.check(&db);
            }
        });
        trigger
    }

    /// Asks for a compaction if the database has enough L0 SSTs and was not asked for lately.
    pub(crate) fn check(&self, db: &slatedb::Db) {
        let mut times = self.times.lock().expect("compaction trigger lock");
        let (asked, looked) = &mut *times;
        // Looking copies the manifest: at most ten times a second.
        if asked.is_some_and(|at| at.elapsed() < self.queue.ask_again_after())
            || looked.is_some_and(|at| at.elapsed() < LOOK_EVERY / 2)
        {
            return;
        }
        *looked = Some(Instant::now());
        let l0 = db.manifest().l0().len();
        if l0 >= L0_TO_COMPACT {
            debug!(db = %self.path, l0, "asking for a compaction");
            self.queue.request(&self.location, &self.path);
            *asked = Some(Instant::now());
        }
    }
}

/// A compactor inside the process: one thread with its own runtime, taking requests in order,
/// each database at most once in the queue or being compacted.
pub struct LocalCompactor {
    inner: Arc<LocalQueue>,
}

#[derive(Default)]
struct LocalQueue {
    state: Mutex<LocalState>,
    wake: tokio::sync::Notify,
}

#[derive(Default)]
struct LocalState {
    waiting: VecDeque<(StateLocation, Path)>,
    /// Databases waiting or being compacted, and whether one being compacted was asked for again.
    known: HashMap<String, bool>,
}

impl fmt::Debug for LocalCompactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalCompactor").finish_non_exhaustive()
    }
}

fn db_key(location: &StateLocation, db: &Path) -> String {
    format!("{}|{db}", location.url())
}

impl LocalCompactor {
    /// Starts the compactor's thread.
    pub fn start(settings: CompactorSettings) -> std::io::Result<Arc<LocalCompactor>> {
        let inner = Arc::new(LocalQueue::default());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let queue = inner.clone();
        std::thread::Builder::new().name("weir-compactor".into()).spawn(move || {
            runtime.block_on(async move {
                loop {
                    let next = queue.state.lock().expect("compactor queue lock").waiting.pop_front();
                    let Some((location, db)) = next else {
                        queue.wake.notified().await;
                        continue;
                    };
                    // Each database in its own task: one busy database never holds up another's
                    // writer waiting for L0 room. They share this one thread.
                    let (queue, settings) = (queue.clone(), settings.clone());
                    tokio::spawn(async move {
                        match compact(&location, &db, &settings).await {
                            Ok(done) => debug!(db = %db, ?done, "compaction run ended"),
                            Err(e) => warn!(db = %db, error = %e, "compaction failed; the task will ask again"),
                        }
                        let mut state = queue.state.lock().expect("compactor queue lock");
                        let key = db_key(&location, &db);
                        if state.known.remove(&key) == Some(true) {
                            // Asked for again while being compacted: once more.
                            state.known.insert(key, false);
                            state.waiting.push_back((location, db));
                            queue.wake.notify_one();
                        }
                    });
                }
            })
        })?;
        Ok(Arc::new(LocalCompactor { inner }))
    }
}

impl CompactionQueue for LocalCompactor {
    fn request(&self, location: &StateLocation, db: &Path) {
        let mut state = self.inner.state.lock().expect("compactor queue lock");
        match state.known.get_mut(&db_key(location, db)) {
            Some(again) => *again = true,
            None => {
                state.known.insert(db_key(location, db), false);
                state.waiting.push_back((location.clone(), db.clone()));
                self.inner.wake.notify_one();
            }
        }
    }

    fn ask_again_after(&self) -> Duration {
        // Requests for a database already waiting or being compacted only mark it for another
        // run: asking often costs nothing.
        Duration::from_millis(500)
    }
}

/// The process's queues: databases on S3 go to the remote queue when there is one (set once by
/// `weir worker --compaction-queue-url`), everything else to the process's own compactor,
/// started on first use.
pub fn queue_for(location: &StateLocation) -> Result<Arc<dyn CompactionQueue>> {
    if location.kind() == StoreKind::S3
        && let Some(remote) = REMOTE.get()
    {
        return Ok(remote.clone());
    }
    static LOCAL: OnceLock<std::result::Result<Arc<LocalCompactor>, String>> = OnceLock::new();
    let local = LOCAL.get_or_init(|| {
        info!("starting the process's compactor");
        LocalCompactor::start(CompactorSettings::default()).map_err(|e| e.to_string())
    });
    match local {
        Ok(local) => Ok(local.clone()),
        Err(e) => Err(StateError::Compaction(format!("cannot start the process's compactor thread: {e}"))),
    }
}

static REMOTE: OnceLock<Arc<dyn CompactionQueue>> = OnceLock::new();

/// Sends the compaction requests of databases on S3 to `queue` (remote compactors) from now on.
/// Takes effect once; later calls are ignored.
pub fn set_remote_queue(queue: Arc<dyn CompactionQueue>) {
    let _ = REMOTE.set(queue);
}
