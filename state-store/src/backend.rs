//! One subtask's keyed state: a SlateDB database per subtask attempt, and the in-memory working
//! set in front of it.
//!
//! Writes go to the working set and mark entries dirty; reads hit the working set and fall back
//! to SlateDB. At a checkpoint barrier, [`KeyedStateBackend::snapshot`] writes only the dirty
//! entries (puts and deletes) as one `WriteBatch` and starts a SlateDB checkpoint; the upload
//! finishes in [`PendingSnapshot::wait`] while processing goes on. Restore, at the same or at
//! another parallelism, opens a shallow clone of the old databases' checkpoints, each projected
//! onto the key groups the subtask now owns. The state primitives themselves are in
//! [`crate::primitives`], timers in [`crate::timers`].

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use slatedb::admin::CloneSourceSpec;
use slatedb::config::{CheckpointOptions, CheckpointScope, Settings};
use slatedb::db_cache::DbCache;
use slatedb::db_cache::moka::{MokaCache, MokaCacheOptions};
use slatedb::object_store::ObjectStore;
use slatedb::object_store::path::Path;
use slatedb::{Db, WriteBatch};
use tracing::{debug, info};
use uuid::Uuid;
use weir_dataflow::clock::{Clock, SystemClock};
use weir_dataflow::keygroup::{DEFAULT_MAX_PARALLELISM, KeyGroupRange, stable_hash};

use crate::compaction::{self, CompactionQueue, CompactionTrigger};
use crate::error::{Result, StateError};
use crate::ids::{AttemptNumber, CheckpointId, JobId, SubtaskIndex, SubtaskStateId, VertexId};
use crate::keys;
use crate::location::StateLocation;
use crate::spill::{StateStore, WriteGate};
use crate::timers::TimerQueue;
use crate::ttl::{self, TtlConfig, TtlUpdate};

/// Flink allows at most 2^15 key groups; key groups are stored as u16.
pub const MAX_MAX_PARALLELISM: u32 = 1 << 15;

/// How a subtask's state behaves.
#[derive(Clone, Debug)]
pub struct StateOptions {
    /// The job's `max_parallelism`: the number of key groups.
    pub max_parallelism: u32,
    /// `table.exec.state.ttl`; `None` keeps state forever.
    pub ttl: Option<TtlConfig>,
    /// The processing-time clock TTL reads.
    pub clock: Arc<dyn Clock>,
    /// Clean (already written back) entries kept in memory after a write-back.
    pub working_set_capacity: usize,
    /// Retries of one object-store call inside SlateDB before the call fails (with a backoff of
    /// 100 ms doubling to 1 s, so 20 retries ride out about 15 s of unavailability).
    pub object_store_max_retries: u32,
    /// Who compacts the database. Every checkpoint adds an L0 SST, and without compaction
    /// SlateDB stops flushing at `l0_max_ssts` (8), so the ninth checkpoint would wait forever.
    pub compaction: Compaction,
    /// Memory for the database's memtables: the active one and those being written to L0 take
    /// about this much (SlateDB's `l0_sst_size_bytes` is a quarter of it, as memtables take about
    /// four times their encoded size), and compaction runs one at a time with small SSTs.
    /// `None`: SlateDB's defaults (64 MiB L0 SSTs, 1 GiB unflushed, four compactions at once).
    pub memtable_bytes: Option<usize>,
}

impl Default for StateOptions {
    fn default() -> Self {
        StateOptions {
            max_parallelism: DEFAULT_MAX_PARALLELISM,
            ttl: None,
            clock: Arc::new(SystemClock),
            working_set_capacity: 1 << 20,
            object_store_max_retries: 20,
            compaction: Compaction::Queued,
            memtable_bytes: None,
        }
    }
}

/// Who compacts a subtask's database.
#[derive(Clone, Debug, Default)]
pub enum Compaction {
    /// A compactor off the task, asked through the process's queue for the database's location
    /// ([`compaction::queue_for`]).
    #[default]
    Queued,
    /// A compactor off the task, asked through this queue.
    QueuedOn(Arc<dyn CompactionQueue>),
    /// SlateDB's compactor inside the task (on its runtime and cores).
    Embedded,
}

/// What a subtask's state at one checkpoint is and where to find it. Serializable: it goes into
/// the completed checkpoint's metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateHandle {
    pub job: JobId,
    pub vertex: VertexId,
    pub subtask: SubtaskIndex,
    pub attempt: AttemptNumber,
    pub checkpoint: CheckpointId,
    /// The database's path inside the state location.
    pub db_path: String,
    /// The SlateDB checkpoint pinning the database as of this checkpoint.
    pub slatedb_checkpoint: Uuid,
    pub key_groups: KeyGroupRange,
    pub max_parallelism: u32,
    /// How the database's keys are laid out ([`keys::KEY_LAYOUT`] when written by this
    /// version); metadata without it was written with layout 1 (operator first).
    #[serde(default = "first_key_layout")]
    pub key_layout: u16,
}

fn first_key_layout() -> u16 {
    1
}

/// What one write-back wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteBackStats {
    pub puts: u64,
    pub deletes: u64,
    /// Key and value bytes of the puts.
    pub bytes: u64,
}

/// A snapshot whose write-back is done and whose upload may still be running.
pub struct PendingSnapshot {
    upload: tokio::task::JoinHandle<std::result::Result<Uuid, slatedb::Error>>,
    template: StateHandle,
    stats: WriteBackStats,
}

impl PendingSnapshot {
    pub fn stats(&self) -> WriteBackStats {
        self.stats
    }

    /// Waits until the checkpoint's files and manifest are stored, and returns its handle.
    pub async fn wait(self) -> Result<StateHandle> {
        let id = self
            .upload
            .await
            .map_err(|e| StateError::Corrupt(format!("the write-back of `{}` stopped: {e}", self.template.db_path)))?
            .map_err(|e| StateError::db(&self.template.db_path, e))?;
        Ok(StateHandle { slatedb_checkpoint: id, ..self.template })
    }
}

/// The kind of a cached value decides how TTL is checked at write-back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ValueKind {
    /// One value with an expiry header (value, reducing, aggregating state, map entries).
    Single,
    /// A list of elements, each with its own expiry header.
    List,
}

#[derive(Clone, Debug)]
pub(crate) enum Slot {
    Present { stored: Bytes, kind: ValueKind, dirty: bool, touched: bool },
    Absent { dirty: bool, touched: bool },
}

impl Slot {
    fn is_dirty(&self) -> bool {
        matches!(self, Slot::Present { dirty: true, .. } | Slot::Absent { dirty: true, .. })
    }
}

/// The keyed state of one subtask attempt. Not shared between tasks: one task owns it and calls
/// it from its own loop.
pub struct KeyedStateBackend {
    id: SubtaskStateId,
    location: StateLocation,
    path: Path,
    db: Db,
    key_groups: KeyGroupRange,
    options: StateOptions,
    pub(crate) working: BTreeMap<Vec<u8>, Slot>,
    pub(crate) timers: HashMap<(crate::ids::OperatorId, keys::TimeDomain), TimerQueue>,
    /// Values staged for the next snapshot outside the working set (see [`Self::stage`]).
    staged: WriteBatch,
    staged_stats: WriteBackStats,
    /// Done when the previous snapshot's checkpoint is stored (or failed): the next snapshot's
    /// writes wait for it, so each checkpoint holds exactly its own writes, and closing waits too.
    previous: Option<tokio::sync::oneshot::Receiver<()>>,
    /// Orders operators' writes between checkpoints after the checkpoints begun before them.
    gate: Arc<WriteGate>,
    /// Asks for compactions as L0 SSTs pile up (`None`: SlateDB compacts inside the task).
    compaction: Option<Arc<CompactionTrigger>>,
}

/// `<root>/<job>/state/v<vertex>-s<subtask>-a<attempt>`.
pub fn db_path(location: &StateLocation, id: &SubtaskStateId) -> Path {
    let name = format!("v{}-s{}-a{}", id.vertex.0, id.subtask.0, id.attempt.0);
    location.child(&[&id.job.0, "state", &name])
}

/// Bytes of the block cache all databases of the process share, unless
/// [`set_block_cache_bytes`] said otherwise before the first database opened.
pub const DEFAULT_BLOCK_CACHE_BYTES: u64 = 256 * 1024 * 1024;

static BLOCK_CACHE_BYTES: AtomicU64 = AtomicU64::new(DEFAULT_BLOCK_CACHE_BYTES);

/// Sizes the block cache the process's databases share (part of its managed memory). Takes
/// effect only before the first database opens.
pub fn set_block_cache_bytes(bytes: u64) {
    BLOCK_CACHE_BYTES.store(bytes, Ordering::Relaxed);
}

fn shared_block_cache() -> Arc<dyn DbCache> {
    // One cache for every subtask database of the process, so memory does not grow with the
    // number of subtasks (SlateDB's default is a 640 MiB cache per database).
    static CACHE: OnceLock<Arc<dyn DbCache>> = OnceLock::new();
    CACHE
        .get_or_init(|| {
            Arc::new(MokaCache::new_with_opts(MokaCacheOptions {
                max_capacity: BLOCK_CACHE_BYTES.load(Ordering::Relaxed),
                time_to_live: None,
                time_to_idle: None,
            }))
        })
        .clone()
}

fn db_settings(location: &StateLocation, options: &StateOptions) -> Settings {
    let mut settings = Settings {
        // State reaches SlateDB only at checkpoints, as one batch, and the checkpoint flushes the
        // memtable to an L0 SST: a WAL would upload the same bytes twice, and periodic flushes
        // would only add requests.
        flush_interval: None,
        wal_enabled: false,
        object_store_max_retries: Some(options.object_store_max_retries),
        ..Settings::default()
    };
    if !matches!(options.compaction, Compaction::Embedded) {
        settings.compactor_options = None;
    }
    if let Some(bytes) = options.memtable_bytes {
        // SlateDB sizes memtables by their encoded size; in memory, a skiplist of small entries
        // takes about four times that.
        let bytes = (bytes / 4).max(1 << 20);
        settings.l0_sst_size_bytes = bytes;
        settings.max_unflushed_bytes = bytes.saturating_mul(2).max(bytes + 1);
        // A compaction holds each output SST in memory until it is uploaded, and by default
        // runs four at once, each split four ways, with SSTs of 256 MiB: gigabytes. Under a
        // memory budget, one at a time, unsplit, with SSTs a few memtables large.
        if let Some(worker) = settings.compactor_options.as_mut().and_then(|c| c.worker.as_mut()) {
            worker.max_concurrent_compactions = 1;
            worker.max_subcompactions = 1;
            worker.max_sst_size = bytes.saturating_mul(4).max(8 << 20);
            worker.max_fetch_tasks = 1;
            worker.bytes_to_fetch = (1 << 20).min(bytes);
        }
        if let Some(compactor) = settings.compactor_options.as_mut() {
            compactor.max_concurrent_compactions = 1;
        }
    }
    if let Some(gc) = settings.garbage_collector_options.as_mut() {
        // LocalFileSystem has no If-Match; with boundary files on, manifest GC stops after its
        // first pass with only a log line (slatedb#2089).
        gc.boundary_files_enabled = location.supports_conditional_update();
    }
    settings
}

async fn open_db(location: &StateLocation, path: &Path, options: &StateOptions) -> Result<Db> {
    Db::builder(path.clone(), location.store().clone())
        .with_settings(db_settings(location, options))
        .with_db_cache(shared_block_cache(), stable_hash(path.as_ref().as_bytes()))
        .build()
        .await
        .map_err(|e| StateError::db(path.as_ref(), e))
}

/// Makes the database at `path` refuse its current writer: opening a writer bumps the writer
/// epoch in the manifest, and the old writer's next manifest update fails as fenced.
async fn fence(location: &StateLocation, path: &Path, options: &StateOptions) -> Result<()> {
    let settings =
        Settings { compactor_options: None, garbage_collector_options: None, ..db_settings(location, options) };
    let db = Db::builder(path.clone(), location.store().clone())
        .with_settings(settings)
        .with_db_cache_disabled()
        .build()
        .await;
    match db {
        Ok(db) => db.close().await.map_err(|e| StateError::db(path.as_ref(), e)),
        // Someone newer already fenced it: that is what we wanted.
        Err(e) if matches!(e.kind(), slatedb::ErrorKind::Closed(slatedb::CloseReason::Fenced)) => Ok(()),
        Err(e) => Err(StateError::db(path.as_ref(), e)),
    }
}

async fn path_is_empty(store: &Arc<dyn ObjectStore>, path: &Path) -> Result<bool> {
    use futures::StreamExt;
    let mut listing = store.list(Some(path));
    match listing.next().await {
        None => Ok(true),
        Some(Ok(_)) => Ok(false),
        Some(Err(e)) => Err(StateError::store(path, e)),
    }
}

fn validate(key_groups: KeyGroupRange, options: &StateOptions) -> Result<()> {
    if options.max_parallelism == 0 || options.max_parallelism > MAX_MAX_PARALLELISM {
        return Err(StateError::InvalidRestore(format!(
            "max parallelism {} is outside 1..={MAX_MAX_PARALLELISM}",
            options.max_parallelism
        )));
    }
    if key_groups.is_empty() || key_groups.end >= options.max_parallelism {
        return Err(StateError::InvalidRestore(format!(
            "key groups {}..={} do not fit max parallelism {}",
            key_groups.start, key_groups.end, options.max_parallelism
        )));
    }
    Ok(())
}

fn intersect(a: KeyGroupRange, b: KeyGroupRange) -> KeyGroupRange {
    KeyGroupRange { start: a.start.max(b.start), end: a.end.min(b.end) }
}

impl KeyedStateBackend {
    /// Opens a new, empty state for a subtask attempt that restores nothing.
    pub async fn open(
        location: &StateLocation,
        id: SubtaskStateId,
        key_groups: KeyGroupRange,
        options: StateOptions,
    ) -> Result<KeyedStateBackend> {
        Self::restore(location, id, key_groups, options, &[]).await
    }

    /// Opens the state of a subtask attempt owning `key_groups`, restored from the handles of
    /// the checkpoint being restored (all subtasks of this vertex; the ones not overlapping
    /// `key_groups` are ignored).
    ///
    /// The new database is a shallow clone of those checkpoints, each seen only in the key
    /// groups this subtask now owns (no data copied, at any parallelism). The old databases of
    /// this job are fenced first, so a zombie of an old attempt can no longer change them. Another job's
    /// databases (a job started from another job's checkpoint or savepoint) are only read, at
    /// their pinned checkpoint, never fenced: that job may still be running and checkpointing.
    pub async fn restore(
        location: &StateLocation,
        id: SubtaskStateId,
        key_groups: KeyGroupRange,
        options: StateOptions,
        handles: &[StateHandle],
    ) -> Result<KeyedStateBackend> {
        validate(key_groups, &options)?;
        let path = db_path(location, &id);
        let relevant: Vec<&StateHandle> =
            handles.iter().filter(|h| !intersect(h.key_groups, key_groups).is_empty()).collect();
        for handle in &relevant {
            if handle.key_layout != keys::KEY_LAYOUT {
                return Err(StateError::InvalidRestore(format!(
                    "checkpoint {} of `{}` stores its keys in layout {}, written by an earlier Weir; this one reads \
                     layout {}: restore it with the Weir that wrote it",
                    handle.checkpoint,
                    handle.db_path,
                    handle.key_layout,
                    keys::KEY_LAYOUT
                )));
            }
            if handle.max_parallelism != options.max_parallelism {
                return Err(StateError::InvalidRestore(format!(
                    "checkpoint {} of `{}` has max parallelism {}, the job now has {}; key groups cannot be remapped",
                    handle.checkpoint, handle.db_path, handle.max_parallelism, options.max_parallelism
                )));
            }
            if handle.vertex != id.vertex {
                return Err(StateError::InvalidRestore(format!(
                    "state of vertex {} offered to vertex {}",
                    handle.vertex, id.vertex
                )));
            }
        }
        if !relevant.is_empty() {
            // Every owned key group must come from exactly one old subtask.
            for kg in key_groups.start..=key_groups.end {
                let owners = relevant.iter().filter(|h| h.key_groups.contains(kg)).count();
                if owners != 1 {
                    return Err(StateError::InvalidRestore(format!(
                        "key group {kg} is in {owners} state handles, expected exactly one"
                    )));
                }
            }
            if !path_is_empty(location.store(), &path).await? {
                return Err(StateError::InvalidRestore(format!(
                    "`{path}` already holds a database; each restore needs a new attempt number"
                )));
            }
        }

        let own_databases = format!("{}/", location.child(&[&id.job.0, "state"]));
        let fence_if_own = |parent: Path| {
            let own = parent.as_ref().starts_with(&own_databases);
            let options = &options;
            async move { if own { fence(location, &parent, options).await } else { Ok(()) } }
        };
        let db = match relevant.as_slice() {
            [] => open_db(location, &path, &options).await?,
            sources => {
                for handle in sources {
                    fence_if_own(Path::from(handle.db_path.as_str())).await?;
                }
                clone_key_groups(location, &path, sources, key_groups).await?;
                open_db(location, &path, &options).await?
            }
        };
        let queue = match &options.compaction {
            Compaction::Queued => Some(compaction::queue_for(location)?),
            Compaction::QueuedOn(queue) => Some(queue.clone()),
            Compaction::Embedded => None,
        };
        // The watcher checks at once: a restored database may come with L0 SSTs its old
        // compactor never got to.
        let compaction = queue.map(|queue| CompactionTrigger::start(queue, location, &path, &db));
        Ok(KeyedStateBackend {
            id,
            location: location.clone(),
            path,
            db,
            compaction,
            key_groups,
            options,
            working: BTreeMap::new(),
            timers: HashMap::new(),
            staged: WriteBatch::new(),
            staged_stats: WriteBackStats::default(),
            previous: None,
            gate: WriteGate::new(),
        })
    }

    /// Stages one value (or, with `None`, a deletion) of `operator`'s state `state` for the
    /// next snapshot, without keeping it in the working set: for operators that keep their own
    /// in-memory state and write back only what changed. Staged writes reach SlateDB in the
    /// background after [`snapshot`](Self::snapshot) returns, so reads of them go through the
    /// operator's own state, not this backend.
    pub fn stage(
        &mut self,
        operator: crate::ids::OperatorId,
        state: crate::ids::StateId,
        key_group: u32,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<()> {
        let stored_key = keys::state_key(operator, self.check_key_group(key_group)?, state, key);
        match value {
            Some(v) => {
                let stored = ttl::wrap(v, self.expire_at());
                self.staged_stats.puts += 1;
                self.staged_stats.bytes += (stored_key.len() + stored.len()) as u64;
                // Owned bytes: a large value (a join's segment) is not copied again.
                self.staged.put_bytes(Bytes::from(stored_key), stored);
            }
            None => {
                self.staged_stats.deletes += 1;
                self.staged.delete(stored_key);
            }
        }
        Ok(())
    }

    pub fn id(&self) -> &SubtaskStateId {
        &self.id
    }

    /// `operator`'s handle on this database, for the keyed state it keeps out of memory.
    pub fn state_store(&self, operator: crate::ids::OperatorId) -> StateStore {
        StateStore::new(
            self.db.clone(),
            Arc::from(self.path.as_ref()),
            operator,
            self.gate.clone(),
            self.compaction.clone(),
        )
    }

    pub fn key_groups(&self) -> KeyGroupRange {
        self.key_groups
    }

    pub fn max_parallelism(&self) -> u32 {
        self.options.max_parallelism
    }

    /// The database's path inside the location.
    pub fn db_path(&self) -> &Path {
        &self.path
    }

    /// Entries held in memory (dirty or clean).
    pub fn working_set_len(&self) -> usize {
        self.working.len()
    }

    /// Entries changed since the last write-back.
    pub fn dirty_len(&self) -> usize {
        self.working.values().filter(|s| s.is_dirty()).count()
            + self.timers.values().map(|q| q.changes.len()).sum::<usize>()
    }

    pub(crate) fn now(&self) -> i64 {
        self.options.clock.now_millis()
    }

    pub(crate) fn ttl(&self) -> Option<TtlConfig> {
        self.options.ttl
    }

    pub(crate) fn expire_at(&self) -> Option<i64> {
        self.options.ttl.map(|ttl| ttl.expire_at(self.now()))
    }

    pub(crate) fn refresh_on_read(&self) -> bool {
        self.options.ttl.is_some_and(|t| t.update == TtlUpdate::OnReadAndWrite)
    }

    /// The key group as stored, after checking that this subtask owns it.
    pub(crate) fn check_key_group(&self, key_group: u32) -> Result<u16> {
        if !self.key_groups.contains(key_group) {
            return Err(StateError::KeyGroupOutOfRange {
                key_group,
                start: self.key_groups.start,
                end: self.key_groups.end,
            });
        }
        // validate() keeps every owned key group below MAX_MAX_PARALLELISM.
        Ok(key_group as u16)
    }

    fn db_error(&self) -> impl Fn(slatedb::Error) -> StateError + '_ {
        move |e| StateError::db(self.path.as_ref(), e)
    }

    /// The stored bytes of `key`: from the working set, else from SlateDB (then cached clean).
    pub(crate) async fn load(&mut self, key: &[u8], kind: ValueKind) -> Result<Option<Bytes>> {
        if let Some(slot) = self.working.get_mut(key) {
            return Ok(match slot {
                Slot::Present { stored, touched, .. } => {
                    *touched = true;
                    Some(stored.clone())
                }
                Slot::Absent { touched, .. } => {
                    *touched = true;
                    None
                }
            });
        }
        let found = self.db.get(key).await.map_err(self.db_error())?;
        let slot = match &found {
            Some(stored) => Slot::Present { stored: stored.clone(), kind, dirty: false, touched: true },
            None => Slot::Absent { dirty: false, touched: true },
        };
        self.working.insert(key.to_vec(), slot);
        Ok(found)
    }

    pub(crate) fn store(&mut self, key: Vec<u8>, stored: Bytes, kind: ValueKind) {
        self.working.insert(key, Slot::Present { stored, kind, dirty: true, touched: true });
    }

    pub(crate) fn remove(&mut self, key: Vec<u8>) {
        self.working.insert(key, Slot::Absent { dirty: true, touched: true });
    }

    /// Every live (key, stored bytes) in `[start, end)`: SlateDB's entries overlaid with the
    /// working set's. Not cached, so a large scan does not flood the working set.
    pub(crate) async fn scan_range(&self, start: &[u8], end: Option<&[u8]>) -> Result<BTreeMap<Vec<u8>, Bytes>> {
        let mut found = BTreeMap::new();
        let mut iter = match end {
            Some(end) => self.db.scan(start.to_vec()..end.to_vec()).await,
            None => self.db.scan(start.to_vec()..).await,
        }
        .map_err(self.db_error())?;
        while let Some(kv) = iter.next().await.map_err(self.db_error())? {
            found.insert(kv.key.to_vec(), kv.value);
        }
        let cached = match end {
            Some(end) => {
                self.working.range::<[u8], _>((std::ops::Bound::Included(start), std::ops::Bound::Excluded(end)))
            }
            None => self.working.range::<[u8], _>((std::ops::Bound::Included(start), std::ops::Bound::Unbounded)),
        };
        for (key, slot) in cached {
            match slot {
                Slot::Present { stored, .. } => {
                    found.insert(key.clone(), stored.clone());
                }
                Slot::Absent { .. } => {
                    found.remove(key);
                }
            }
        }
        Ok(found)
    }

    /// Scans one prefix of SlateDB only (timers are loaded once, then kept in memory).
    pub(crate) async fn scan_db_prefix(&self, prefix: &[u8]) -> Result<Vec<(Bytes, Bytes)>> {
        let mut iter = self.db.scan_prefix(prefix, ..).await.map_err(self.db_error())?;
        let mut out = Vec::new();
        while let Some(kv) = iter.next().await.map_err(self.db_error())? {
            out.push((kv.key, kv.value));
        }
        Ok(out)
    }

    /// Writes back what changed since the last snapshot and starts a SlateDB checkpoint.
    ///
    /// Returns once the changes are in SlateDB's memtable and the checkpoint is ordered: the
    /// task can go on processing (and change state) while [`PendingSnapshot::wait`] uploads.
    /// Later writes are not part of this checkpoint.
    pub async fn snapshot(&mut self, checkpoint: CheckpointId) -> Result<PendingSnapshot> {
        let now = self.now();
        let ttl_on = self.options.ttl.is_some();
        let mut batch = WriteBatch::new();
        let mut stats = WriteBackStats::default();
        let mut expired_clean = Vec::new();
        let mut rewritten: Vec<(Vec<u8>, Option<Bytes>)> = Vec::new();
        for (key, slot) in &self.working {
            match slot {
                Slot::Present { stored, kind, dirty, .. } => {
                    // TTL cleanup at write-back: expired values are deleted, lists lose their
                    // expired elements, whether or not the entry changed.
                    let live = if ttl_on { live_part(stored, *kind, now)? } else { Live::All };
                    match live {
                        Live::All if *dirty => {
                            stats.puts += 1;
                            stats.bytes += (key.len() + stored.len()) as u64;
                            batch.put(key, stored);
                        }
                        Live::All => {}
                        Live::None => {
                            stats.deletes += 1;
                            batch.delete(key);
                            if *dirty {
                                rewritten.push((key.clone(), None));
                            } else {
                                expired_clean.push(key.clone());
                            }
                        }
                        Live::Some(kept) => {
                            stats.puts += 1;
                            stats.bytes += (key.len() + kept.len()) as u64;
                            batch.put(key, &kept);
                            rewritten.push((key.clone(), Some(kept)));
                        }
                    }
                }
                Slot::Absent { dirty: true, .. } => {
                    stats.deletes += 1;
                    batch.delete(key);
                }
                Slot::Absent { dirty: false, .. } => {}
            }
        }
        for ((operator, domain), queue) in &self.timers {
            for ((timestamp, key_group, key), present) in &queue.changes {
                let stored_key = keys::timer_key(*operator, *key_group, *domain, *timestamp, key);
                if *present {
                    stats.puts += 1;
                    stats.bytes += stored_key.len() as u64 + 1;
                    batch.put(stored_key, [0u8]);
                } else {
                    stats.deletes += 1;
                    batch.delete(stored_key);
                }
            }
        }
        if stats.puts + stats.deletes > 0 {
            // The working set's writes go in order after the previous snapshot's staged ones.
            if let Some(previous) = self.previous.take() {
                let _ = previous.await;
            }
            // Not awaited for durability: the checkpoint below flushes it.
            self.db.write(batch).await.map_err(self.db_error())?;
        }
        // Only now that SlateDB has the changes may they stop being dirty.
        for key in expired_clean {
            self.working.remove(&key);
        }
        for (key, kept) in rewritten {
            match kept {
                Some(stored) => {
                    self.working
                        .insert(key, Slot::Present { stored, kind: ValueKind::List, dirty: false, touched: true });
                }
                None => {
                    self.working.insert(key, Slot::Absent { dirty: false, touched: true });
                }
            }
        }
        for slot in self.working.values_mut() {
            match slot {
                Slot::Present { dirty, .. } | Slot::Absent { dirty, .. } => *dirty = false,
            }
        }
        for queue in self.timers.values_mut() {
            queue.changes.clear();
        }
        self.evict();

        let staged = std::mem::replace(&mut self.staged, WriteBatch::new());
        let staged_stats = std::mem::take(&mut self.staged_stats);
        stats.puts += staged_stats.puts;
        stats.deletes += staged_stats.deletes;
        stats.bytes += staged_stats.bytes;
        // The staged writes and the checkpoint happen in the background, in snapshot order: the
        // task goes on processing meanwhile.
        let options = CheckpointOptions { name: Some(format!("weir-{checkpoint}")), ..CheckpointOptions::default() };
        let (db, previous) = (self.db.clone(), self.previous.take());
        let (done, next) = tokio::sync::oneshot::channel();
        self.previous = Some(next);
        let has_staged = staged_stats.puts + staged_stats.deletes > 0;
        let (gate, ticket) = (self.gate.clone(), self.gate.begin());
        let compaction = self.compaction.clone();
        let upload = tokio::spawn(async move {
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            let stored = async {
                if has_staged {
                    db.write(staged).await?;
                }
                let begun = db.begin_checkpoint(CheckpointScope::All, &options).await;
                // The checkpoint's content is fixed: later writes may go ahead while it uploads.
                gate.finish(ticket);
                let id = begun?.wait().await?.id;
                if let Some(trigger) = compaction {
                    trigger.check(&db);
                }
                Ok(id)
            }
            .await;
            gate.finish(ticket);
            let _ = done.send(());
            stored
        });
        debug!(db = %self.path, %checkpoint, puts = stats.puts, deletes = stats.deletes, bytes = stats.bytes,
            "state handed over for write-back");
        let template = StateHandle {
            job: self.id.job.clone(),
            vertex: self.id.vertex,
            subtask: self.id.subtask,
            attempt: self.id.attempt,
            checkpoint,
            db_path: self.path.to_string(),
            slatedb_checkpoint: Uuid::nil(),
            key_groups: self.key_groups,
            max_parallelism: self.options.max_parallelism,
            key_layout: keys::KEY_LAYOUT,
        };
        Ok(PendingSnapshot { upload, template, stats })
    }

    /// Second-chance eviction of clean entries when the working set is over capacity: entries
    /// not touched since the last write-back go first; every entry's mark is then cleared.
    fn evict(&mut self) {
        let capacity = self.options.working_set_capacity;
        if self.working.len() > capacity {
            self.working.retain(|_, slot| match slot {
                Slot::Present { touched, .. } | Slot::Absent { touched, .. } => *touched,
            });
        }
        if self.working.len() > capacity {
            let excess = self.working.len() - capacity;
            let victims: Vec<Vec<u8>> = self.working.keys().take(excess).cloned().collect();
            for key in victims {
                self.working.remove(&key);
            }
        }
        for slot in self.working.values_mut() {
            match slot {
                Slot::Present { touched, .. } | Slot::Absent { touched, .. } => *touched = false,
            }
        }
    }

    /// How many keys SlateDB holds per key group (the working set's unwritten changes not
    /// included): for operational checks and tests of restore and rescale.
    pub async fn stored_key_groups(&self) -> Result<BTreeMap<u32, u64>> {
        let mut counts = BTreeMap::new();
        let mut iter = self.db.scan::<std::ops::RangeFull>(..).await.map_err(self.db_error())?;
        while let Some(kv) = iter.next().await.map_err(self.db_error())? {
            *counts.entry(u32::from(keys::decode_header(&kv.key)?.key_group)).or_insert(0) += 1;
        }
        Ok(counts)
    }

    /// Closes the database. Changes since the last snapshot are dropped: state is only
    /// committed by checkpoints.
    pub async fn close(mut self) -> Result<()> {
        if let Some(previous) = self.previous.take() {
            let _ = previous.await;
        }
        self.db.close().await.map_err(|e| StateError::db(self.path.as_ref(), e))
    }

    pub fn location(&self) -> &StateLocation {
        &self.location
    }
}

enum Live {
    All,
    None,
    Some(Bytes),
}

fn live_part(stored: &Bytes, kind: ValueKind, now: i64) -> Result<Live> {
    match kind {
        ValueKind::Single => Ok(if ttl::unwrap(stored)?.is_expired(now) { Live::None } else { Live::All }),
        ValueKind::List => {
            let elements = ttl::decode_list(stored)?;
            let total = elements.len();
            let mut kept = Vec::with_capacity(total);
            for element in elements {
                if !ttl::unwrap(&element)?.is_expired(now) {
                    kept.push(element);
                }
            }
            Ok(match kept.len() {
                0 => Live::None,
                n if n == total => Live::All,
                _ => Live::Some(ttl::encode_list(&kept)),
            })
        }
    }
}

/// Creates the database at `path` as a shallow clone of the checkpoints of `sources` (SlateDB's
/// clone from a union of sources), each seen only in the part of `key_groups` it owns.
///
/// Key groups come first in every key, so that part is one key range: the clone's manifest
/// refers to the sources' SSTs with that range as their visible range, and no key is read or
/// written. A source with exactly `key_groups` (a restore at the same parallelism) is cloned
/// whole. The clone pins each source's checkpoint until its own compactions have rewritten what
/// it uses.
async fn clone_key_groups(
    location: &StateLocation,
    path: &Path,
    sources: &[&StateHandle],
    key_groups: KeyGroupRange,
) -> Result<()> {
    let spec = |handle: &StateHandle| {
        let spec = CloneSourceSpec::with_checkpoint(Path::from(handle.db_path.as_str()), handle.slatedb_checkpoint);
        let part = intersect(handle.key_groups, key_groups);
        if part == handle.key_groups {
            return spec;
        }
        // `validate` keeps key groups below 2^15.
        let (start, end) = keys::key_group_bounds(part.start as u16, part.end as u16);
        spec.with_projection_range((Bound::Included(Bytes::from(start)), Bound::Excluded(Bytes::from(end))))
    };
    let (first, rest) = sources.split_first().ok_or_else(|| StateError::InvalidRestore("nothing to clone".into()))?;
    let mut builder = location.admin(path).create_clone_builder_from_source(spec(first));
    for handle in rest {
        builder = builder.with_source(spec(handle));
    }
    builder.build().await.map_err(|e| StateError::db(path.as_ref(), e))?;
    for handle in sources {
        let part = intersect(handle.key_groups, key_groups);
        info!(from = %handle.db_path, to = %path, checkpoint = %handle.checkpoint, start = part.start, end = part.end,
            "restored key groups as a clone");
    }
    Ok(())
}

/// Deletes the SlateDB checkpoint of `handle`, so the database's GC may reclaim what only it
/// pinned. Deleting a checkpoint that is already gone is not an error.
pub async fn discard(location: &StateLocation, handle: &StateHandle) -> Result<()> {
    let path = Path::from(handle.db_path.as_str());
    location
        .admin(&path)
        .delete_checkpoint(handle.slatedb_checkpoint)
        .await
        .map_err(|e| StateError::db(path.as_ref(), e))
}

/// The SlateDB checkpoints currently recorded in a database (for checks and tests).
pub async fn list_slatedb_checkpoints(location: &StateLocation, db_path: &str) -> Result<Vec<Uuid>> {
    let admin = location.admin(&Path::from(db_path));
    let checkpoints = admin.list_checkpoints(None).await.map_err(|e| StateError::db(db_path, e))?;
    Ok(checkpoints.into_iter().map(|c| c.id).collect())
}
