//! The storage tier of retained (blocking and hybrid) result partitions, shared by the
//! in-process shuffle and the shuffle server.
//!
//! A partition is one log per sub-partition of [`crate::wire`] frames. Appends go to memory;
//! a spill writes the partition holding the most unspilled bytes out: every sub-partition's
//! in-memory tail in one sequential append to that partition's spill file
//! (`[len: u32 LE][frame]` records), or, once the disk budget would be exceeded, as one object
//! to the configured object store. Past half the memory budget a background task spills so
//! appends go on while the disk writes; past the whole budget an appender spills (or waits for
//! the spill in flight) itself. So a producer runs at the speed of the disk, never at a
//! consumer's, and memory never grows past the budget by more than the frames appended while
//! a spill is written.
//!
//! Readers stream a sub-partition back in order, from memory, file or object as each part
//! lies. Frames read back from a file or an object have their checksum verified: a truncated or
//! corrupted spill is an error naming the file, never a panic or silently wrong data.
//! A hybrid-selective partition drops what its reader has consumed, so it is read once.
//! Files and objects are deleted when their partition is released and when the store is closed;
//! the store's directory is removed when the store is dropped.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parking_lot::Mutex;
use thiserror::Error;
use tokio::sync::Notify;
use weir_dataflow::ids::PartitionId;

use crate::PartitionKind;
use crate::wire::END_OF_PARTITION;

/// Frames in memory across all partitions before the store spills, by default.
pub const DEFAULT_MEMORY_BUDGET: u64 = 256 << 20;

/// How much a reader fetches from a file or object at once: large sequential reads.
const READ_CHUNK: u64 = 1 << 20;
/// Frames a reader takes from memory per lock.
const MEMORY_BATCH: usize = 64;
/// Bytes of the spill writer's buffer: large writes keep syscalls per byte low.
const WRITE_BUFFER: usize = 4 << 20;
/// The per-record header on disk: the frame's length.
const RECORD_HEADER: u64 = 4;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("spill file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("spill file {path} is truncated: expected {expected} bytes at offset {offset}, found {found}")]
    Truncated { path: String, offset: u64, expected: u64, found: u64 },
    #[error("spill file {path} is corrupt at offset {offset}: {what}")]
    Corrupt { path: String, offset: u64, what: &'static str },
    #[error("spill object {key}: {source}")]
    Object { key: String, source: object_store::Error },
    #[error("the disk budget of {budget} bytes is used up and no spill object store is configured")]
    DiskFull { budget: u64 },
    #[error("partition {0} is already registered")]
    DuplicatePartition(PartitionId),
    #[error("partition {0} has been released")]
    Released(PartitionId),
    #[error(
        "partition {partition} sub-partition {subpartition} is hybrid-selective and has been consumed: it cannot be read again"
    )]
    NotReReadable { partition: PartitionId, subpartition: u32 },
    #[error("partition {partition} sub-partition {subpartition}: {what}")]
    Misuse { partition: PartitionId, subpartition: u32, what: &'static str },
    #[error("partition {partition} failed: {message}")]
    Failed { partition: PartitionId, message: String },
    #[error("a spill failed earlier, the store refuses writes: {0}")]
    Broken(String),
    #[error("spill url {url}: {message}")]
    BadUrl { url: String, message: String },
}

/// Where spills go once the disk budget is used up.
#[derive(Clone)]
pub struct SpillTarget {
    pub store: Arc<dyn ObjectStore>,
    /// Objects are written under this prefix.
    pub prefix: ObjectPath,
    /// For messages: the url it came from.
    pub description: String,
}

impl std::fmt::Debug for SpillTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SpillTarget({})", self.description)
    }
}

impl SpillTarget {
    /// `file:///abs/dir` (a local folder, created if missing) or `s3://bucket/prefix` (the usual
    /// `AWS_*` variables give credentials, region and `AWS_ENDPOINT` for an emulator).
    pub fn from_url(url: &str) -> Result<SpillTarget, StoreError> {
        Self::from_url_with_options(url, std::iter::empty::<(&str, &str)>())
    }

    /// As [`SpillTarget::from_url`], with S3 settings by object_store's names (`aws_endpoint`,
    /// `aws_allow_http`, `aws_access_key_id`, …) over those of the environment.
    pub fn from_url_with_options<'a>(
        url: &str,
        options: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<SpillTarget, StoreError> {
        let bad = |message: &str| StoreError::BadUrl { url: url.to_string(), message: message.to_string() };
        if let Some(dir) = url.strip_prefix("file://") {
            std::fs::create_dir_all(dir).map_err(|e| bad(&e.to_string()))?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(|e| bad(&e.to_string()))?;
            Ok(SpillTarget {
                store: Arc::new(store),
                prefix: ObjectPath::from("weir-shuffle"),
                description: url.into(),
            })
        } else if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("no bucket"));
            }
            let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
            for (key, value) in options {
                let key: object_store::aws::AmazonS3ConfigKey = key.parse().map_err(|e| bad(&format!("{e}")))?;
                builder = builder.with_config(key, value);
            }
            let store = builder.build().map_err(|e| bad(&e.to_string()))?;
            let prefix = if prefix.is_empty() { "weir-shuffle" } else { prefix.trim_end_matches('/') };
            Ok(SpillTarget { store: Arc::new(store), prefix: ObjectPath::from(prefix), description: url.into() })
        } else {
            Err(bad("expected file:///DIR or s3://BUCKET/PREFIX"))
        }
    }
}

/// The budgets and places of a store; defaults in one place ([`Default`]).
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Bytes of frames held in memory before the store spills.
    pub memory_budget: u64,
    /// Bytes of spill files before further spills go to `spill` (or fail without one).
    pub disk_budget: u64,
    /// Where spill files go; a fresh directory is made under it. `None`: the system's
    /// temporary directory.
    pub data_dir: Option<PathBuf>,
    pub spill: Option<SpillTarget>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { memory_budget: DEFAULT_MEMORY_BUDGET, disk_budget: u64::MAX, data_dir: None, spill: None }
    }
}

/// What a store holds where: for tests, benchmarks and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreUsage {
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    pub object_bytes: u64,
}

/// A partition's key: the namespace (job attempt) and its id.
pub type PartitionKey = (Arc<str>, PartitionId);

/// The storage of retained partitions. Cheap to clone: clones share the store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    config: StoreConfig,
    memory_used: AtomicU64,
    disk_used: AtomicU64,
    object_used: AtomicU64,
    partitions: Mutex<HashMap<PartitionKey, Arc<Partition>>>,
    /// Signalled when a spill finishes, for appenders waiting for memory.
    memory_freed: Notify,
    /// The directory spill files go to, made on the first spill.
    dir: Mutex<Option<SpillDir>>,
    next_id: AtomicU64,
    /// Set when a spill failed: memory it held can no longer be freed, so writes stop.
    broken: Mutex<Option<String>>,
    /// A background spill is running.
    background_spill: AtomicBool,
    /// Distinguishes this store's objects from other stores' under the same prefix.
    instance: String,
}

enum SpillDir {
    Temp(tempfile::TempDir),
    Owned(PathBuf),
}

impl SpillDir {
    fn path(&self) -> &FsPath {
        match self {
            SpillDir::Temp(t) => t.path(),
            SpillDir::Owned(p) => p,
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // A temporary directory removes itself; an owned one is ours alone, made by this store.
        if let Some(SpillDir::Owned(path)) = self.dir.get_mut().take() {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

impl Default for Store {
    fn default() -> Self {
        Store::new(StoreConfig::default())
    }
}

impl Store {
    /// A store with `config`. Directories are made on the first spill, so this cannot fail.
    pub fn new(config: StoreConfig) -> Store {
        let instance = format!("{}-{}", std::process::id(), weir_dataflow::clock::unix_nanos());
        Store {
            inner: Arc::new(Inner {
                config,
                memory_used: AtomicU64::new(0),
                disk_used: AtomicU64::new(0),
                object_used: AtomicU64::new(0),
                partitions: Mutex::new(HashMap::new()),
                memory_freed: Notify::new(),
                dir: Mutex::new(None),
                next_id: AtomicU64::new(0),
                broken: Mutex::new(None),
                background_spill: AtomicBool::new(false),
                instance,
            }),
        }
    }

    pub fn usage(&self) -> StoreUsage {
        StoreUsage {
            memory_bytes: self.inner.memory_used.load(Ordering::Relaxed),
            disk_bytes: self.inner.disk_used.load(Ordering::Relaxed),
            object_bytes: self.inner.object_used.load(Ordering::Relaxed),
        }
    }

    /// The directory spill files go to, if one has been made.
    pub fn spill_dir(&self) -> Option<PathBuf> {
        self.inner.dir.lock().as_ref().map(|d| d.path().to_path_buf())
    }

    /// Registers a retained partition. `kind` must not be pipelined.
    pub fn create(
        &self,
        namespace: &Arc<str>,
        partition: PartitionId,
        subpartitions: u32,
        kind: PartitionKind,
    ) -> Result<Arc<Partition>, StoreError> {
        debug_assert!(kind != PartitionKind::Pipelined, "pipelined partitions are not stored");
        let mut map = self.inner.partitions.lock();
        let key = (namespace.clone(), partition);
        if map.contains_key(&key) {
            return Err(StoreError::DuplicatePartition(partition));
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let p = Arc::new(Partition {
            id: partition,
            kind,
            serial: id,
            subpartitions,
            state: Mutex::new(PartitionState {
                subs: (0..subpartitions).map(|_| SubLog::default()).collect(),
                ended: 0,
                released: false,
                failed: None,
                file: None,
                file_len: 0,
                objects: Vec::new(),
                object_len: 0,
            }),
            unspilled: AtomicU64::new(0),
            changed: Notify::new(),
            spilling: tokio::sync::Mutex::new(()),
        });
        map.insert(key, p.clone());
        Ok(p)
    }

    pub fn get(&self, namespace: &Arc<str>, partition: PartitionId) -> Option<Arc<Partition>> {
        self.inner.partitions.lock().get(&(namespace.clone(), partition)).cloned()
    }

    /// Appends one frame to a sub-partition; spills when memory is over budget.
    pub async fn append(&self, partition: &Arc<Partition>, subpartition: u32, frame: Bytes) -> Result<(), StoreError> {
        if let Some(reason) = self.inner.broken.lock().clone() {
            return Err(StoreError::Broken(reason));
        }
        let record = RECORD_HEADER + frame.len() as u64;
        let end = frame.first() == Some(&END_OF_PARTITION);
        let (notify, used) = {
            let mut state = partition.state.lock();
            if state.released {
                return Err(StoreError::Released(partition.id));
            }
            let sub = state.sub_mut(partition.id, subpartition)?;
            if sub.ended {
                return Err(StoreError::Misuse {
                    partition: partition.id,
                    subpartition,
                    what: "an event after the end of the sub-partition",
                });
            }
            sub.tail.push_back(frame);
            sub.tail_bytes += record;
            if end {
                sub.ended = true;
                state.ended += 1;
            }
            // Counted under the lock: a spill or a selective read that takes the frame out (and
            // subtracts it) cannot come first, so the counters never wrap below zero.
            partition.unspilled.fetch_add(record, Ordering::Relaxed);
            let used = self.inner.memory_used.fetch_add(record, Ordering::Relaxed) + record;
            // Blocking readers wait only for the whole partition; hybrid ones for every frame.
            (partition.kind != PartitionKind::Blocking || (end && state.ended == partition.subpartitions), used)
        };
        if notify {
            partition.changed.notify_waiters();
        }
        let budget = self.inner.config.memory_budget;
        // Past half the budget a background task starts spilling, so producers keep appending
        // while the disk writes; only past the whole budget does an appender wait for a spill.
        if used > budget / 2 && !self.inner.background_spill.swap(true, Ordering::AcqRel) {
            let store = self.clone();
            tokio::spawn(async move { store.spill_in_background().await });
        }
        if used > budget {
            self.relieve().await?;
        }
        Ok(())
    }

    async fn spill_in_background(&self) {
        let low = self.inner.config.memory_budget / 2;
        while self.inner.memory_used.load(Ordering::Relaxed) > low && self.inner.broken.lock().is_none() {
            let victim = {
                let map = self.inner.partitions.lock();
                map.values().max_by_key(|p| p.unspilled.load(Ordering::Relaxed)).cloned()
            };
            let Some(p) = victim.filter(|p| p.unspilled.load(Ordering::Relaxed) > 0) else { break };
            if let Err(e) = self.spill(&p).await {
                self.spill_failed(&p, &e);
                break;
            }
        }
        self.inner.background_spill.store(false, Ordering::Release);
    }

    /// Spills until memory is within budget.
    async fn relieve(&self) -> Result<(), StoreError> {
        let budget = self.inner.config.memory_budget;
        while self.inner.memory_used.load(Ordering::Relaxed) > budget {
            let freed = self.inner.memory_freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(reason) = self.inner.broken.lock().clone() {
                return Err(StoreError::Broken(reason));
            }
            let victim = {
                let map = self.inner.partitions.lock();
                map.values().max_by_key(|p| p.unspilled.load(Ordering::Relaxed)).cloned()
            };
            match victim {
                Some(p) if p.unspilled.load(Ordering::Relaxed) > 0 => {
                    if let Err(e) = self.spill(&p).await {
                        self.spill_failed(&p, &e);
                        return Err(e);
                    }
                }
                // What is over budget is being written by another spill: wait for it.
                _ => {
                    let _ = tokio::time::timeout(std::time::Duration::from_millis(100), freed).await;
                }
            }
        }
        Ok(())
    }

    /// A full disk refuses a spill before anything is sealed, so nothing is lost and releasing
    /// partitions makes room again; any other failure leaves sealed frames that can no longer
    /// be freed, so the store stops taking writes.
    fn spill_failed(&self, partition: &Partition, error: &StoreError) {
        tracing::error!(partition = %partition.id, %error, "shuffle spill failed");
        if !matches!(error, StoreError::DiskFull { .. }) {
            *self.inner.broken.lock() = Some(error.to_string());
        }
        self.inner.memory_freed.notify_waiters();
    }

    fn spill_dir_path(&self) -> Result<PathBuf, StoreError> {
        let mut dir = self.inner.dir.lock();
        if let Some(d) = dir.as_ref() {
            return Ok(d.path().to_path_buf());
        }
        let made = match &self.inner.config.data_dir {
            None => SpillDir::Temp(
                tempfile::Builder::new()
                    .prefix("weir-shuffle-")
                    .tempdir()
                    .map_err(|source| StoreError::Io { path: std::env::temp_dir(), source })?,
            ),
            Some(parent) => {
                let path = parent.join(format!("weir-shuffle-{}", self.inner.instance));
                std::fs::create_dir_all(&path).map_err(|source| StoreError::Io { path: path.clone(), source })?;
                SpillDir::Owned(path)
            }
        };
        let path = made.path().to_path_buf();
        *dir = Some(made);
        Ok(path)
    }

    /// Writes every sub-partition's in-memory tail of `partition` out in one sequential append.
    async fn spill(&self, partition: &Arc<Partition>) -> Result<(), StoreError> {
        // One spill per partition at a time keeps its file's appends in order.
        let _writing = partition.spilling.lock().await;
        let pending = partition.unspilled.load(Ordering::Relaxed);
        let disk_used = self.inner.disk_used.load(Ordering::Relaxed);
        if self.inner.config.spill.is_none() && disk_used.saturating_add(pending) > self.inner.config.disk_budget {
            return Err(StoreError::DiskFull { budget: self.inner.config.disk_budget });
        }
        let (sealed, file, file_len) = {
            let mut state = partition.state.lock();
            if state.released {
                return Ok(());
            }
            let mut sealed = Vec::new();
            for (s, sub) in state.subs.iter_mut().enumerate() {
                if sub.tail.is_empty() {
                    continue;
                }
                let frames: Arc<[Bytes]> = sub.tail.drain(..).collect();
                let segment = Segment {
                    first: sub.tail_first,
                    frames: frames.len() as u64,
                    bytes: sub.tail_bytes,
                    location: Location::Memory(frames.clone()),
                };
                sub.tail_first += frames.len() as u64;
                sub.tail_bytes = 0;
                sealed.push((s, segment.first, segment.bytes, frames));
                sub.segments.push_back(segment);
            }
            partition.unspilled.store(0, Ordering::Relaxed);
            (sealed, state.file.clone(), state.file_len)
        };
        if sealed.is_empty() {
            return Ok(());
        }
        let total: u64 = sealed.iter().map(|(_, _, bytes, _)| bytes).sum();
        let disk_used = self.inner.disk_used.load(Ordering::Relaxed);
        let to_disk = disk_used.saturating_add(total) <= self.inner.config.disk_budget;
        let mut offsets = Vec::with_capacity(sealed.len());
        let mut offset = 0u64;
        for (_, _, bytes, _) in &sealed {
            offsets.push(offset);
            offset += bytes;
        }
        let location: Box<dyn Fn(u64) -> Location + Send> = if to_disk {
            let path = match file {
                Some(path) => path,
                None => {
                    let path = Arc::new(self.spill_dir_path()?.join(format!("p{}.spill", partition.serial)));
                    partition.state.lock().file = Some(path.clone());
                    path
                }
            };
            let frames: Vec<Arc<[Bytes]>> = sealed.iter().map(|(_, _, _, f)| f.clone()).collect();
            let write_path = path.clone();
            tokio::task::spawn_blocking(move || write_records(&write_path, file_len, &frames))
                .await
                .map_err(|e| StoreError::Io { path: path.to_path_buf(), source: std::io::Error::other(e) })??;
            self.inner.disk_used.fetch_add(total, Ordering::Relaxed);
            partition.state.lock().file_len = file_len + total;
            Box::new(move |at| Location::File { path: path.clone(), offset: file_len + at })
        } else {
            let Some(target) = self.inner.config.spill.clone() else {
                return Err(StoreError::DiskFull { budget: self.inner.config.disk_budget });
            };
            let key = {
                let mut state = partition.state.lock();
                let key = target.prefix.clone().join(self.inner.instance.as_str()).join(format!(
                    "p{}-{}",
                    partition.serial,
                    state.objects.len()
                ));
                state.objects.push(key.clone());
                key
            };
            let mut payload = Vec::with_capacity(sealed.iter().map(|(_, _, _, f)| f.len() * 2).sum());
            for (_, _, _, frames) in &sealed {
                for f in frames.iter() {
                    payload.push(Bytes::copy_from_slice(&(f.len() as u32).to_le_bytes()));
                    payload.push(f.clone());
                }
            }
            target
                .store
                .put(&key, PutPayload::from_iter(payload))
                .await
                .map_err(|source| StoreError::Object { key: key.to_string(), source })?;
            self.inner.object_used.fetch_add(total, Ordering::Relaxed);
            partition.state.lock().object_len += total;
            let target = Arc::new(target);
            Box::new(move |at| Location::Object { target: target.clone(), key: key.clone(), offset: at })
        };
        let mut freed = 0;
        {
            let mut state = partition.state.lock();
            for ((s, first, bytes, _), at) in sealed.iter().zip(offsets) {
                // A hybrid-selective reader may have consumed (and dropped) the segment already.
                if let Some(seg) = state.subs[*s].segments.iter_mut().find(|seg| seg.first == *first)
                    && matches!(seg.location, Location::Memory(_))
                {
                    seg.location = location(at);
                    freed += bytes;
                }
            }
        }
        self.inner.memory_used.fetch_sub(freed, Ordering::Relaxed);
        self.inner.memory_freed.notify_waiters();
        Ok(())
    }

    /// A reader of one sub-partition from its beginning.
    pub fn reader(&self, partition: &Arc<Partition>, subpartition: u32) -> Result<SubpartitionReader, StoreError> {
        let mut state = partition.state.lock();
        if state.released {
            return Err(StoreError::Released(partition.id));
        }
        let sub = state.sub_mut(partition.id, subpartition)?;
        if partition.kind == PartitionKind::HybridSelective {
            if sub.first > 0 || sub.reading {
                return Err(StoreError::NotReReadable { partition: partition.id, subpartition });
            }
            sub.reading = true;
        }
        drop(state);
        Ok(SubpartitionReader {
            store: self.clone(),
            partition: partition.clone(),
            subpartition,
            cursor: 0,
            buffered: VecDeque::new(),
            resume: None,
            done: false,
        })
    }

    /// Releases partitions: their memory, files and objects are freed and their readers fail.
    pub async fn release(&self, namespace: &Arc<str>, partitions: &[PartitionId]) {
        let removed: Vec<_> = {
            let mut map = self.inner.partitions.lock();
            partitions.iter().filter_map(|p| map.remove(&(namespace.clone(), *p))).collect()
        };
        self.free(removed).await;
    }

    /// Releases every partition of a namespace.
    pub async fn release_namespace(&self, namespace: &str) {
        let removed: Vec<_> = {
            let mut map = self.inner.partitions.lock();
            let keys: Vec<_> = map.keys().filter(|(ns, _)| &**ns == namespace).cloned().collect();
            keys.iter().filter_map(|k| map.remove(k)).collect()
        };
        self.free(removed).await;
    }

    /// Releases everything and deletes the spill directory: for a clean shutdown.
    pub async fn close(&self) {
        let removed: Vec<_> = self.inner.partitions.lock().drain().map(|(_, p)| p).collect();
        self.free(removed).await;
        if let Some(dir) = self.inner.dir.lock().take() {
            match dir {
                SpillDir::Temp(t) => drop(t),
                SpillDir::Owned(path) => {
                    let _ = std::fs::remove_dir_all(path);
                }
            }
        }
    }

    async fn free(&self, partitions: Vec<Arc<Partition>>) {
        for p in partitions {
            // A spill in flight finishes first, so the file it writes is deleted here.
            let _writing = p.spilling.lock().await;
            let (memory, file, file_len, objects, object_len) = {
                let mut state = p.state.lock();
                state.released = true;
                let mut memory = 0;
                for sub in &mut state.subs {
                    memory += sub.tail_bytes;
                    sub.tail.clear();
                    sub.tail_bytes = 0;
                    for seg in sub.segments.drain(..) {
                        if matches!(seg.location, Location::Memory(_)) {
                            memory += seg.bytes;
                        }
                    }
                }
                let object_len = std::mem::take(&mut state.object_len);
                (memory, state.file.take(), state.file_len, std::mem::take(&mut state.objects), object_len)
            };
            self.inner.object_used.fetch_sub(object_len, Ordering::Relaxed);
            p.changed.notify_waiters();
            self.inner.memory_used.fetch_sub(memory, Ordering::Relaxed);
            p.unspilled.store(0, Ordering::Relaxed);
            if let Some(path) = file {
                if let Err(e) = std::fs::remove_file(path.as_path())
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(path = %path.display(), error = %e, "cannot delete a shuffle spill file");
                }
                self.inner.disk_used.fetch_sub(file_len, Ordering::Relaxed);
            }
            if let Some(target) = &self.inner.config.spill {
                for key in objects {
                    if let Err(e) = target.store.delete(&key).await {
                        tracing::warn!(%key, error = %e, "cannot delete a shuffle spill object");
                    }
                }
            }
        }
        self.inner.memory_freed.notify_waiters();
    }
}

/// One retained partition.
pub struct Partition {
    pub id: PartitionId,
    pub kind: PartitionKind,
    /// Unique within the store: names its files.
    serial: u64,
    subpartitions: u32,
    state: Mutex<PartitionState>,
    /// Bytes of frames not yet sealed for a spill: what spilling this partition would free.
    unspilled: AtomicU64,
    /// Signalled on appends a reader may wait for, on failure and on release.
    changed: Notify,
    spilling: tokio::sync::Mutex<()>,
}

impl Partition {
    pub fn num_subpartitions(&self) -> u32 {
        self.subpartitions
    }

    /// Whether every sub-partition has ended (its end-of-partition frame was appended).
    pub fn is_finished(&self) -> bool {
        self.state.lock().ended == self.subpartitions
    }

    /// Marks an unfinished partition failed (its producer went away): readers get an error.
    /// A finished one is left alone: its data is complete.
    pub fn fail_unless_finished(&self, message: &str) {
        let mut state = self.state.lock();
        if state.ended < self.subpartitions && state.failed.is_none() {
            state.failed = Some(message.to_string());
            drop(state);
            self.changed.notify_waiters();
        }
    }
}

struct PartitionState {
    subs: Vec<SubLog>,
    ended: u32,
    released: bool,
    failed: Option<String>,
    file: Option<Arc<PathBuf>>,
    file_len: u64,
    objects: Vec<ObjectPath>,
    /// Record bytes written to `objects`.
    object_len: u64,
}

impl PartitionState {
    fn sub_mut(&mut self, partition: PartitionId, subpartition: u32) -> Result<&mut SubLog, StoreError> {
        self.subs.get_mut(subpartition as usize).ok_or(StoreError::Misuse {
            partition,
            subpartition,
            what: "no such sub-partition",
        })
    }
}

#[derive(Default)]
struct SubLog {
    /// Index of the first frame still held (above 0 only when hybrid-selective reads dropped some).
    first: u64,
    /// Sealed parts, in order, each in memory (being spilled), a file or an object.
    segments: VecDeque<Segment>,
    /// Frames appended since the last spill.
    tail: VecDeque<Bytes>,
    tail_first: u64,
    tail_bytes: u64,
    ended: bool,
    /// A hybrid-selective sub-partition has had a reader: it is read once.
    reading: bool,
}

struct Segment {
    first: u64,
    frames: u64,
    /// Record bytes: frames plus their length headers, as written.
    bytes: u64,
    location: Location,
}

#[derive(Clone)]
enum Location {
    Memory(Arc<[Bytes]>),
    File { path: Arc<PathBuf>, offset: u64 },
    Object { target: Arc<SpillTarget>, key: ObjectPath, offset: u64 },
}

fn write_records(path: &FsPath, at: u64, parts: &[Arc<[Bytes]>]) -> Result<(), StoreError> {
    let io = |source| StoreError::Io { path: path.to_path_buf(), source };
    let file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len != at {
        // Someone else touched our file: offsets we hand out would be wrong.
        return Err(StoreError::Truncated { path: path.display().to_string(), offset: 0, expected: at, found: len });
    }
    let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
    for frames in parts {
        for f in frames.iter() {
            out.write_all(&(f.len() as u32).to_le_bytes()).map_err(io)?;
            out.write_all(f).map_err(io)?;
        }
    }
    out.flush().map_err(io)?;
    Ok(())
}

/// Where a reader left off inside a spilled segment.
struct Resume {
    segment_first: u64,
    frame: u64,
    byte: u64,
}

/// Streams one sub-partition's frames in order.
pub struct SubpartitionReader {
    store: Store,
    partition: Arc<Partition>,
    subpartition: u32,
    /// Index of the next frame to hand out.
    cursor: u64,
    buffered: VecDeque<Bytes>,
    resume: Option<Resume>,
    done: bool,
}

/// What a reader found under the lock: frames, or a spilled range to fetch outside it.
enum Fetch {
    Frames,
    Spilled { location: Location, segment_first: u64, frames: u64, bytes: u64 },
    Wait,
}

impl SubpartitionReader {
    /// The next frame; `None` after the end-of-partition frame.
    pub async fn next(&mut self) -> Result<Option<Bytes>, StoreError> {
        loop {
            if let Some(frame) = self.buffered.pop_front() {
                self.cursor += 1;
                if frame.first() == Some(&END_OF_PARTITION) {
                    self.done = true;
                }
                return Ok(Some(frame));
            }
            if self.done {
                return Ok(None);
            }
            let partition = self.partition.clone();
            let changed = partition.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.fetch_from_memory()? {
                Fetch::Frames => {}
                Fetch::Wait => changed.await,
                Fetch::Spilled { location, segment_first, frames, bytes } => {
                    self.read_spilled(location, segment_first, frames, bytes).await?
                }
            }
        }
    }

    fn fetch_from_memory(&mut self) -> Result<Fetch, StoreError> {
        let p = &self.partition;
        let mut state = p.state.lock();
        if state.released {
            return Err(StoreError::Released(p.id));
        }
        if let Some(message) = &state.failed {
            return Err(StoreError::Failed { partition: p.id, message: message.clone() });
        }
        if p.kind == PartitionKind::Blocking && state.ended < p.subpartitions {
            return Ok(Fetch::Wait);
        }
        let selective = p.kind == PartitionKind::HybridSelective;
        let sub = &mut state.subs[self.subpartition as usize];
        if selective {
            let freed = discard_before(sub, self.cursor);
            self.store.inner.memory_used.fetch_sub(freed, Ordering::Relaxed);
        }
        let cursor = self.cursor;
        if cursor >= sub.tail_first {
            let skip = (cursor - sub.tail_first) as usize;
            if skip >= sub.tail.len() {
                return Ok(Fetch::Wait);
            }
            self.buffered.extend(sub.tail.iter().skip(skip).take(MEMORY_BATCH).cloned());
            return Ok(Fetch::Frames);
        }
        let Some(seg) = sub.segments.iter().find(|s| s.first <= cursor && cursor < s.first + s.frames) else {
            // Frames before `first` were dropped by a hybrid-selective read.
            return Err(StoreError::NotReReadable { partition: p.id, subpartition: self.subpartition });
        };
        match &seg.location {
            Location::Memory(frames) => {
                let skip = (cursor - seg.first) as usize;
                self.buffered.extend(frames.iter().skip(skip).take(MEMORY_BATCH).cloned());
                Ok(Fetch::Frames)
            }
            location => Ok(Fetch::Spilled {
                location: location.clone(),
                segment_first: seg.first,
                frames: seg.frames,
                bytes: seg.bytes,
            }),
        }
    }

    /// Reads the next chunk of a spilled segment into the buffer, checking every frame.
    async fn read_spilled(
        &mut self,
        location: Location,
        segment_first: u64,
        frames: u64,
        bytes: u64,
    ) -> Result<(), StoreError> {
        let (mut frame, mut byte) = match &self.resume {
            Some(r) if r.segment_first == segment_first && r.frame == self.cursor => (r.frame, r.byte),
            _ => (segment_first, 0),
        };
        // Reads a little more than a chunk, so a chunk holds at least one whole record.
        let mut want = (bytes - byte).min(READ_CHUNK);
        loop {
            let (base, name) = match &location {
                Location::File { path, offset } => (*offset, path.display().to_string()),
                Location::Object { key, offset, .. } => (*offset, key.to_string()),
                Location::Memory(_) => unreachable!("memory segments are read under the lock"),
            };
            let data = match &location {
                Location::File { path, .. } => {
                    let path = path.clone();
                    let at = base + byte;
                    tokio::task::spawn_blocking(move || read_file_range(&path, at, want)).await.map_err(|e| {
                        StoreError::Io { path: PathBuf::from(&name), source: std::io::Error::other(e) }
                    })??
                }
                Location::Object { target, key, .. } => {
                    let range = base + byte..base + byte + want;
                    target
                        .store
                        .get_range(key, range)
                        .await
                        .map_err(|source| StoreError::Object { key: key.to_string(), source })?
                }
                Location::Memory(_) => unreachable!("memory segments are read under the lock"),
            };
            if (data.len() as u64) < want {
                return Err(StoreError::Truncated {
                    path: name,
                    offset: base + byte,
                    expected: want,
                    found: data.len() as u64,
                });
            }
            let mut at = 0usize;
            let mut taken = 0;
            while (at as u64) + RECORD_HEADER <= want {
                let len = u32::from_le_bytes(data[at..at + 4].try_into().expect("four bytes are in range")) as u64;
                if byte + at as u64 + RECORD_HEADER + len > bytes {
                    return Err(StoreError::Corrupt {
                        path: name,
                        offset: base + byte + at as u64,
                        what: "a record runs past its segment",
                    });
                }
                if at as u64 + RECORD_HEADER + len > want {
                    break;
                }
                let body = data.slice(at + 4..at + 4 + len as usize);
                check_frame(&body).map_err(|what| StoreError::Corrupt {
                    path: name.clone(),
                    offset: base + byte + at as u64,
                    what,
                })?;
                if frame >= self.cursor {
                    self.buffered.push_back(body);
                }
                frame += 1;
                taken += 1;
                at += (RECORD_HEADER + len) as usize;
            }
            if taken == 0 {
                if data.len() < RECORD_HEADER as usize {
                    return Err(StoreError::Corrupt {
                        path: name,
                        offset: base + byte,
                        what: "a segment ends inside a record header",
                    });
                }
                // One record larger than the chunk: read exactly it.
                let len = u32::from_le_bytes(data[..4].try_into().expect("four bytes are in range")) as u64;
                want = RECORD_HEADER + len;
                continue;
            }
            byte += at as u64;
            if frame > segment_first + frames {
                return Err(StoreError::Corrupt {
                    path: name,
                    offset: base + byte,
                    what: "more records than the segment holds",
                });
            }
            self.resume = Some(Resume { segment_first, frame, byte });
            if self.buffered.is_empty() && frame < segment_first + frames {
                // Still skipping up to the cursor.
                want = (bytes - byte).min(READ_CHUNK);
                continue;
            }
            return Ok(());
        }
    }
}

impl Drop for SubpartitionReader {
    fn drop(&mut self) {
        if self.partition.kind == PartitionKind::HybridSelective {
            let mut state = self.partition.state.lock();
            if let Some(sub) = state.subs.get_mut(self.subpartition as usize) {
                // What was handed out is consumed; the rest stays, but no one else reads it.
                let freed = discard_before(sub, self.cursor);
                self.store.inner.memory_used.fetch_sub(freed, Ordering::Relaxed);
            }
        }
    }
}

/// Drops a sub-partition's frames before `cursor`; returns the memory freed.
fn discard_before(sub: &mut SubLog, cursor: u64) -> u64 {
    let mut freed = 0;
    while let Some(seg) = sub.segments.front() {
        if seg.first + seg.frames > cursor {
            break;
        }
        if matches!(seg.location, Location::Memory(_)) {
            freed += seg.bytes;
        }
        sub.segments.pop_front();
    }
    while sub.tail_first < cursor {
        let Some(frame) = sub.tail.pop_front() else { break };
        let record = RECORD_HEADER + frame.len() as u64;
        sub.tail_bytes -= record;
        sub.tail_first += 1;
        freed += record;
    }
    sub.first = sub.first.max(cursor);
    freed
}

fn read_file_range(path: &FsPath, offset: u64, len: u64) -> Result<Bytes, StoreError> {
    let file = File::open(path).map_err(|source| StoreError::Io { path: path.to_path_buf(), source })?;
    let mut buf = BytesMut::zeroed(len as usize);
    let mut filled = 0usize;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => return Err(StoreError::Io { path: path.to_path_buf(), source }),
        }
    }
    buf.truncate(filled);
    Ok(buf.freeze())
}

/// Checks a frame's checksum (the layout of [`crate::wire`]) without decoding it.
fn check_frame(frame: &[u8]) -> Result<(), &'static str> {
    if frame.len() < 5 {
        return Err("a frame shorter than its header");
    }
    let crc = u32::from_le_bytes(frame[1..5].try_into().expect("four bytes are in range"));
    if crc32fast::hash(&frame[5..]) != crc {
        return Err("a frame fails its checksum");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use weir_dataflow::event::StreamEvent;
    use weir_dataflow::ids::SubtaskIndex;

    use super::*;
    use crate::wire;

    fn frame(event: StreamEvent) -> Bytes {
        let mut out = Vec::new();
        wire::encode(&event, &mut out).expect("encodes");
        Bytes::from(out)
    }

    fn ns() -> Arc<str> {
        Arc::from("test")
    }

    fn id(edge: u32) -> PartitionId {
        PartitionId { edge, producer: SubtaskIndex(0) }
    }

    /// Writes `n` watermarks and an end to each of `subs` sub-partitions.
    async fn fill(store: &Store, partition: &Arc<Partition>, subs: u32, n: i64) {
        for i in 0..n {
            for s in 0..subs {
                store.append(partition, s, frame(StreamEvent::Watermark(i * 10 + s as i64))).await.expect("append");
            }
        }
        for s in 0..subs {
            store.append(partition, s, frame(StreamEvent::EndOfPartition)).await.expect("append");
        }
    }

    async fn read_all(store: &Store, partition: &Arc<Partition>, sub: u32) -> Result<Vec<i64>, StoreError> {
        let mut reader = store.reader(partition, sub)?;
        let mut out = Vec::new();
        while let Some(f) = reader.next().await? {
            match wire::decode(&f).expect("a valid frame") {
                StreamEvent::Watermark(w) => out.push(w),
                StreamEvent::EndOfPartition => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        Ok(out)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spills_to_disk_within_the_memory_budget_and_reads_back_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(StoreConfig {
            memory_budget: 4096,
            data_dir: Some(dir.path().to_path_buf()),
            ..StoreConfig::default()
        });
        let p = store.create(&ns(), id(0), 3, PartitionKind::Blocking).expect("create");
        fill(&store, &p, 3, 2000).await;
        let usage = store.usage();
        assert!(usage.memory_bytes <= 4096, "memory over budget: {usage:?}");
        assert!(usage.disk_bytes > 50_000, "nothing was spilled: {usage:?}");
        for s in 0..3 {
            let expected: Vec<i64> = (0..2000).map(|i| i * 10 + s as i64).collect();
            assert_eq!(read_all(&store, &p, s).await.expect("read"), expected);
            assert_eq!(read_all(&store, &p, s).await.expect("re-read"), expected);
        }
        let spill_dir = store.spill_dir().expect("a spill directory");
        assert!(spill_dir.starts_with(dir.path()));
        store.release(&ns(), &[id(0)]).await;
        assert_eq!(store.usage(), StoreUsage::default(), "release frees everything");
        assert_eq!(std::fs::read_dir(&spill_dir).expect("dir").count(), 0, "spill files are deleted");
        store.close().await;
        assert!(!spill_dir.exists(), "closing removes the directory");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn past_the_disk_budget_spills_go_to_the_object_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let objects = dir.path().join("objects");
        let target = SpillTarget::from_url(&format!("file://{}", objects.display())).expect("target");
        let store = Store::new(StoreConfig {
            memory_budget: 4096,
            disk_budget: 20_000,
            data_dir: Some(dir.path().to_path_buf()),
            spill: Some(target),
        });
        let p = store.create(&ns(), id(0), 2, PartitionKind::HybridFull).expect("create");
        fill(&store, &p, 2, 3000).await;
        let usage = store.usage();
        assert!(usage.disk_bytes <= 20_000 && usage.object_bytes > 0, "{usage:?}");
        for s in 0..2 {
            let expected: Vec<i64> = (0..3000).map(|i| i * 10 + s as i64).collect();
            assert_eq!(read_all(&store, &p, s).await.expect("read"), expected);
        }
        store.close().await;
        assert_eq!(store.usage(), StoreUsage::default(), "closing frees everything");
        let left = walk(&objects);
        assert!(left.is_empty(), "objects left after close: {left:?}");
    }

    /// A moto S3 server on a free port, stopped when dropped.
    struct Moto(std::process::Child, String);

    impl Drop for Moto {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn moto() -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("addr").port();
        let child = std::process::Command::new("python3")
            .args(["-m", "moto.server", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 runs; install moto with `python3 -m pip install 'moto[server]>=5.2.1'`");
        let moto = Moto(child, format!("127.0.0.1:{port}"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(&moto.1).is_err() {
            assert!(std::time::Instant::now() < deadline, "moto did not start: is `moto[server]` installed?");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        moto
    }

    /// Creates a bucket with an unsigned request, which moto accepts.
    fn create_bucket(host: &str, bucket: &str) {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(host).expect("connect to moto");
        let request =
            format!("PUT /{bucket} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("answer");
        assert!(response.starts_with("HTTP/1.1 200"), "bucket creation: {response}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn past_the_disk_budget_spills_go_to_s3() {
        let moto = moto();
        create_bucket(&moto.1, "weir-shuffle-spills");
        let endpoint = format!("http://{}", moto.1);
        let target = SpillTarget::from_url_with_options(
            "s3://weir-shuffle-spills/test",
            [
                ("aws_endpoint", endpoint.as_str()),
                ("aws_allow_http", "true"),
                ("aws_region", "us-east-1"),
                ("aws_access_key_id", "test"),
                ("aws_secret_access_key", "test"),
            ],
        )
        .expect("target");
        let objects = target.store.clone();
        let store =
            Store::new(StoreConfig { memory_budget: 4096, disk_budget: 0, data_dir: None, spill: Some(target) });
        let p = store.create(&ns(), id(0), 2, PartitionKind::Blocking).expect("create");
        fill(&store, &p, 2, 2000).await;
        let usage = store.usage();
        assert!(usage.disk_bytes == 0 && usage.object_bytes > 50_000, "{usage:?}");
        for s in 0..2 {
            let expected: Vec<i64> = (0..2000).map(|i| i * 10 + s as i64).collect();
            assert_eq!(read_all(&store, &p, s).await.expect("read"), expected);
        }
        store.close().await;
        use futures::StreamExt;
        let left: Vec<_> = objects.list(None).collect().await;
        assert!(left.is_empty(), "objects left after close: {left:?}");
    }

    fn walk(dir: &FsPath) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                files.extend(walk(&path));
            } else {
                files.push(path);
            }
        }
        files
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_an_object_store_a_full_disk_is_an_error() {
        let store = Store::new(StoreConfig { memory_budget: 1024, disk_budget: 2048, ..StoreConfig::default() });
        let p = store.create(&ns(), id(0), 1, PartitionKind::Blocking).expect("create");
        let mut failed = None;
        for i in 0..1000 {
            if let Err(e) = store.append(&p, 0, frame(StreamEvent::Watermark(i))).await {
                failed = Some(e);
                break;
            }
        }
        let err = failed.expect("the disk budget is enforced");
        assert!(matches!(err, StoreError::DiskFull { budget: 2048 }), "{err}");
        // Nothing was lost or broken: releasing makes room and the store takes writes again.
        store.release(&ns(), &[id(0)]).await;
        let p = store.create(&ns(), id(1), 1, PartitionKind::Blocking).expect("create");
        fill(&store, &p, 1, 10).await;
        assert_eq!(read_all(&store, &p, 0).await.expect("read"), (0..10).map(|i| i * 10).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_truncated_or_corrupt_spill_file_is_an_error_naming_it() {
        for damage in ["truncate", "flip"] {
            let store = Store::new(StoreConfig { memory_budget: 1024, ..StoreConfig::default() });
            let p = store.create(&ns(), id(0), 1, PartitionKind::Blocking).expect("create");
            fill(&store, &p, 1, 500).await;
            let path = store.spill_dir().expect("spilled").join(format!("p{}.spill", p.serial));
            let bytes = std::fs::read(&path).expect("spill file");
            match damage {
                "truncate" => std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("truncate"),
                _ => {
                    let mut bytes = bytes;
                    let i = bytes.len() / 3;
                    bytes[i] ^= 0x5a;
                    std::fs::write(&path, &bytes).expect("corrupt");
                }
            }
            let err = read_all(&store, &p, 0).await.expect_err("damage is detected");
            assert!(err.to_string().contains(&path.display().to_string()), "{damage}: {err}");
            assert!(matches!(err, StoreError::Truncated { .. } | StoreError::Corrupt { .. }), "{damage}: {err}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hybrid_selective_frees_what_was_read() {
        let store = Store::new(StoreConfig::default());
        let p = store.create(&ns(), id(0), 1, PartitionKind::HybridSelective).expect("create");
        let mut reader = store.reader(&p, 0).expect("reader");
        for i in 0..1000 {
            store.append(&p, 0, frame(StreamEvent::Watermark(i))).await.expect("append");
        }
        let held = store.usage().memory_bytes;
        for _ in 0..900 {
            reader.next().await.expect("read").expect("a frame");
        }
        // Consumed frames are dropped when the reader next fetches.
        drop(reader);
        assert!(store.usage().memory_bytes < held / 5, "{:?} of {held}", store.usage());
        assert!(matches!(store.reader(&p, 0), Err(StoreError::NotReReadable { .. })));
    }
}
