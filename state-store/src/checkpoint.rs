//! Completed-checkpoint metadata: `<root>/<job>/checkpoints/chk-<id>/_metadata`.
//!
//! A checkpoint is complete when its metadata is stored: the source positions and every
//! subtask's [`StateHandle`]. The file is JSON behind a header line with its CRC-32, written
//! create-only (`PutMode::Create`), so an id commits at most once and a zombie coordinator can
//! never overwrite a newer commit; ids must also increase. Reading falls back from a corrupt or
//! missing checkpoint to the previous retained one and says so, and never to empty state while
//! checkpoints exist. Retention (`state.checkpoints.num-retained`) deletes older metadata and
//! discards their SlateDB checkpoints.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use slatedb::object_store::path::Path;
use slatedb::object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tracing::{info, warn};
use weir_dataflow::ids::{CheckpointId, JobId, SubtaskIndex, VertexId};

use crate::backend::{StateHandle, discard};
use crate::error::{Result, StateError};
use crate::location::StateLocation;
use crate::retry::with_backoff;

/// Flink's `state.checkpoints.num-retained` default.
pub const DEFAULT_NUM_RETAINED: usize = 1;
pub(crate) const METADATA_FILE: &str = "_metadata";
const HEADER_PREFIX: &str = "weir-checkpoint-v1 crc32=";

/// Where a source subtask was at the checkpoint; opaque to the state store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcePosition {
    pub vertex: VertexId,
    pub subtask: SubtaskIndex,
    pub position: serde_json::Value,
}

/// Everything needed to restore a job at one checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompletedCheckpoint {
    pub id: CheckpointId,
    /// When the checkpoint was triggered, in milliseconds since the epoch (the coordinator's).
    pub timestamp_millis: i64,
    pub is_savepoint: bool,
    pub source_positions: Vec<SourcePosition>,
    pub state_handles: Vec<StateHandle>,
}

impl CompletedCheckpoint {
    /// The state handles of one vertex, to pass to [`crate::KeyedStateBackend::restore`].
    pub fn handles_of(&self, vertex: VertexId) -> Vec<StateHandle> {
        self.state_handles.iter().filter(|h| h.vertex == vertex).cloned().collect()
    }
}

/// A checkpoint that could not be used, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetadataWarning {
    pub path: String,
    pub reason: String,
}

/// The newest usable checkpoint, and the newer ones skipped on the way.
#[derive(Clone, Debug, Default)]
pub struct LatestCheckpoint {
    pub checkpoint: Option<CompletedCheckpoint>,
    pub warnings: Vec<MetadataWarning>,
}

/// Serializes metadata: a header line with the CRC-32 of the JSON that follows it.
pub fn encode_metadata(checkpoint: &CompletedCheckpoint) -> Vec<u8> {
    let body = serde_json::to_vec_pretty(checkpoint).expect("checkpoint metadata always serializes");
    let mut out = format!("{HEADER_PREFIX}{:08x}\n", crc32fast::hash(&body)).into_bytes();
    out.extend_from_slice(&body);
    out
}

/// Parses metadata, checking its checksum; `path` names the file in errors.
pub fn decode_metadata(bytes: &[u8], path: &str) -> Result<CompletedCheckpoint> {
    let corrupt = |reason: String| StateError::CorruptMetadata { path: path.to_string(), reason };
    let newline = bytes.iter().position(|&b| b == b'\n').ok_or_else(|| corrupt("no header line".into()))?;
    let header = std::str::from_utf8(&bytes[..newline]).map_err(|_| corrupt("header is not utf-8".into()))?;
    let expected = header
        .strip_prefix(HEADER_PREFIX)
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .ok_or_else(|| corrupt(format!("unknown header `{}`", header.escape_debug())))?;
    let body = &bytes[newline + 1..];
    let actual = crc32fast::hash(body);
    if actual != expected {
        return Err(corrupt(format!("checksum mismatch: header says {expected:08x}, content has {actual:08x}")));
    }
    serde_json::from_slice(body).map_err(|e| corrupt(format!("invalid json: {e}")))
}

/// The completed checkpoints of one job.
#[derive(Clone, Debug)]
pub struct CheckpointStore {
    location: StateLocation,
    job: JobId,
    num_retained: usize,
}

impl CheckpointStore {
    /// `num_retained` is `state.checkpoints.num-retained` (at least 1).
    pub fn new(location: StateLocation, job: JobId, num_retained: usize) -> CheckpointStore {
        CheckpointStore { location, job, num_retained: num_retained.max(1) }
    }

    fn checkpoints_dir(&self) -> Path {
        self.location.child(&[&self.job.0, "checkpoints"])
    }

    /// Where a task's rows in flight across unaligned checkpoint `id` are stored; `task` names
    /// the task (vertex and subtask). Retention deletes them with the checkpoint.
    pub fn in_flight_path(&self, id: CheckpointId, task: &str) -> Path {
        self.in_flight_dir(id).join(task)
    }

    fn in_flight_dir(&self, id: CheckpointId) -> Path {
        self.location.child(&[&self.job.0, "in-flight", &id.to_string()])
    }

    pub fn metadata_path(&self, id: CheckpointId) -> Path {
        self.checkpoints_dir().join(id.to_string()).join(METADATA_FILE)
    }

    /// The ids that have a metadata file, oldest first.
    pub async fn list_ids(&self) -> Result<Vec<CheckpointId>> {
        use futures::TryStreamExt;
        let dir = self.checkpoints_dir();
        let store = self.location.store();
        // Objects, not "directories": a local folder keeps an empty `chk-N/` after its
        // metadata is deleted, and it must not count as a checkpoint.
        let (listing, _) = with_backoff("list checkpoints", || store.list(Some(&dir)).try_collect::<Vec<_>>()).await;
        let listing = listing.map_err(|e| StateError::store(&dir, e))?;
        let mut ids: Vec<CheckpointId> = listing
            .iter()
            .filter(|meta| meta.location.filename() == Some(METADATA_FILE))
            .filter_map(|meta| {
                let parts: Vec<_> = meta.location.parts().collect();
                let chk = parts.get(parts.len().checked_sub(2)?)?;
                chk.as_ref().strip_prefix("chk-")?.parse().ok().map(CheckpointId)
            })
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// Reads and verifies one checkpoint's metadata.
    pub async fn read(&self, id: CheckpointId) -> Result<CompletedCheckpoint> {
        read_metadata(&self.location, &self.metadata_path(id)).await
    }

    /// Commits a completed checkpoint, then applies retention. Fails if the id is not newer
    /// than every committed one, or if it was committed already. Returns the ids retired.
    pub async fn commit(&self, checkpoint: &CompletedCheckpoint) -> Result<Vec<CheckpointId>> {
        if checkpoint.is_savepoint {
            return Err(StateError::InvalidRestore(
                "savepoints are written by `savepoint::write`, not committed as checkpoints".into(),
            ));
        }
        if let Some(&latest) = self.list_ids().await?.last()
            && latest >= checkpoint.id
        {
            return Err(if latest == checkpoint.id {
                StateError::CheckpointExists { id: checkpoint.id }
            } else {
                StateError::CheckpointNotMonotonic { id: checkpoint.id, latest }
            });
        }
        let path = self.metadata_path(checkpoint.id);
        put_create_only(&self.location, &path, encode_metadata(checkpoint)).await.map_err(|e| match e {
            StateError::ObjectStore { source: slatedb::object_store::Error::AlreadyExists { .. }, .. } => {
                StateError::CheckpointExists { id: checkpoint.id }
            }
            other => other,
        })?;
        info!(job = %self.job, checkpoint = %checkpoint.id, "checkpoint committed");
        self.apply_retention(checkpoint.id).await
    }

    /// Keeps the newest `num_retained` checkpoints up to `newest`; deletes the metadata of older
    /// ones first (so no metadata ever names a discarded SlateDB checkpoint), then discards
    /// their state.
    async fn apply_retention(&self, newest: CheckpointId) -> Result<Vec<CheckpointId>> {
        let ids: Vec<CheckpointId> = self.list_ids().await?.into_iter().filter(|id| *id <= newest).collect();
        let retire = ids.len().saturating_sub(self.num_retained);
        let mut retired = Vec::with_capacity(retire);
        for &id in &ids[..retire] {
            let path = self.metadata_path(id);
            let handles = match self.read(id).await {
                Ok(checkpoint) => checkpoint.state_handles,
                Err(e) => {
                    warn!(path = %path, error = %e, "retiring an unreadable checkpoint; its state cannot be discarded");
                    Vec::new()
                }
            };
            let store = self.location.store();
            let (deleted, _) = with_backoff("delete checkpoint metadata", || store.delete(&path)).await;
            match deleted {
                Ok(()) | Err(slatedb::object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(StateError::store(&path, e)),
            }
            self.delete_in_flight(id).await;
            for handle in &handles {
                if let Err(e) = discard(&self.location, handle).await {
                    // The metadata is gone, so nothing will restore this state; a failure only
                    // leaks storage until the database's own cleanup.
                    warn!(db = %handle.db_path, checkpoint = %id, error = %e, "discarding a retired checkpoint's state failed");
                }
            }
            retired.push(id);
        }
        Ok(retired)
    }

    /// Deletes the in-flight rows of a retired unaligned checkpoint; a failure only leaks space.
    async fn delete_in_flight(&self, id: CheckpointId) {
        use futures::TryStreamExt;
        let dir = self.in_flight_dir(id);
        let store = self.location.store();
        let (listing, _) = with_backoff("list in-flight rows", || store.list(Some(&dir)).try_collect::<Vec<_>>()).await;
        for meta in listing.unwrap_or_default() {
            if let Err(e) = store.delete(&meta.location).await {
                warn!(path = %meta.location, error = %e, "could not delete a retired checkpoint's in-flight rows");
            }
        }
    }

    /// The newest checkpoint whose metadata is stored and intact; newer ones that are corrupt
    /// are skipped and reported. `Ok(None)` only when no checkpoint was ever committed (or all
    /// were retired); if checkpoints exist but none is usable, an error.
    pub async fn latest_completed(&self) -> Result<LatestCheckpoint> {
        let ids = self.list_ids().await?;
        self.latest_completed_of(&ids).await
    }

    /// As [`CheckpointStore::latest_completed`], over the ids the caller knows were committed
    /// (from its own durable log): one whose metadata is missing is reported too.
    pub async fn latest_completed_of(&self, ids: &[CheckpointId]) -> Result<LatestCheckpoint> {
        let mut ids = ids.to_vec();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.dedup();
        let mut warnings = Vec::new();
        for id in ids {
            let path = self.metadata_path(id);
            match self.read(id).await {
                Ok(checkpoint) => {
                    if checkpoint.id != id {
                        let reason = format!("names checkpoint {} instead", checkpoint.id);
                        warn!(path = %path, reason, "checkpoint metadata skipped");
                        warnings.push(MetadataWarning { path: path.to_string(), reason });
                        continue;
                    }
                    return Ok(LatestCheckpoint { checkpoint: Some(checkpoint), warnings });
                }
                Err(e @ (StateError::CorruptMetadata { .. } | StateError::ObjectStore { .. })) => {
                    let reason = match &e {
                        StateError::ObjectStore { source: slatedb::object_store::Error::NotFound { .. }, .. } => {
                            "missing".to_string()
                        }
                        other => other.to_string(),
                    };
                    if e.is_retryable() {
                        // Unavailable storage says nothing about the checkpoint: do not skip it.
                        return Err(e);
                    }
                    warn!(path = %path, reason, "checkpoint metadata unusable; falling back to the previous checkpoint");
                    warnings.push(MetadataWarning { path: path.to_string(), reason });
                }
                Err(e) => return Err(e),
            }
        }
        if warnings.is_empty() {
            Ok(LatestCheckpoint::default())
        } else {
            Err(StateError::NoUsableCheckpoint { paths: warnings.into_iter().map(|w| w.path).collect() })
        }
    }
}

/// Reads and verifies metadata at `path`. It may only name databases under `location`'s root:
/// metadata is a file a user can write (a savepoint path is any file they point at), and a
/// database elsewhere may be another job's or another tenant's.
pub(crate) async fn read_metadata(location: &StateLocation, path: &Path) -> Result<CompletedCheckpoint> {
    let store = location.store();
    let (result, _) =
        with_backoff("read checkpoint metadata", || async move { store.get(path).await?.bytes().await }).await;
    let bytes = result.map_err(|e| StateError::store(path, e))?;
    let checkpoint = decode_metadata(&bytes, path.as_ref())?;
    for handle in &checkpoint.state_handles {
        let inside = Path::parse(&handle.db_path).is_ok_and(|db| db.prefix_matches(location.root()));
        if !inside {
            return Err(StateError::CorruptMetadata {
                path: path.to_string(),
                reason: format!("it names the database `{}`, outside `{}`", handle.db_path, location.root()),
            });
        }
    }
    Ok(checkpoint)
}

/// A create-only put with retries. If a retried put finds the object already there, it may be
/// our own earlier attempt that landed without its answer: identical content counts as success.
pub(crate) async fn put_create_only(location: &StateLocation, path: &Path, bytes: Vec<u8>) -> Result<()> {
    let store = location.store();
    let bytes = Bytes::from(bytes);
    let (result, retried) = with_backoff("put checkpoint metadata", || {
        let payload = PutPayload::from(bytes.clone());
        async move { store.put_opts(path, payload, PutOptions::from(PutMode::Create)).await }
    })
    .await;
    match result {
        Ok(_) => Ok(()),
        Err(slatedb::object_store::Error::AlreadyExists { .. }) if retried => {
            let (existing, _) =
                with_backoff("read back checkpoint metadata", || async move { store.get(path).await?.bytes().await })
                    .await;
            match existing {
                Ok(existing) if existing == bytes => Ok(()),
                _ => Err(StateError::store(
                    path,
                    slatedb::object_store::Error::AlreadyExists {
                        path: path.to_string(),
                        source: "another writer committed this path".into(),
                    },
                )),
            }
        }
        Err(e) => Err(StateError::store(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use weir_dataflow::keygroup::KeyGroupRange;

    use super::*;
    use crate::ids::AttemptNumber;

    fn sample(id: u64) -> CompletedCheckpoint {
        CompletedCheckpoint {
            id: CheckpointId(id),
            timestamp_millis: 1_700_000_000_000,
            is_savepoint: false,
            source_positions: vec![SourcePosition {
                vertex: VertexId(0),
                subtask: SubtaskIndex(1),
                position: serde_json::json!({"offset": 42}),
            }],
            state_handles: vec![StateHandle {
                job: JobId("j".into()),
                vertex: VertexId(2),
                subtask: SubtaskIndex(0),
                attempt: AttemptNumber(3),
                checkpoint: CheckpointId(id),
                db_path: "j/state/v2-s0-a3".into(),
                slatedb_checkpoint: uuid::Uuid::nil(),
                key_groups: KeyGroupRange { start: 0, end: 63 },
                max_parallelism: 128,
                key_layout: crate::keys::KEY_LAYOUT,
            }],
        }
    }

    #[test]
    fn metadata_round_trips_and_every_flipped_byte_is_detected() {
        let encoded = encode_metadata(&sample(7));
        assert_eq!(decode_metadata(&encoded, "p").unwrap(), sample(7));
        for i in 0..encoded.len() {
            let mut damaged = encoded.clone();
            damaged[i] ^= 0x20;
            if let Ok(decoded) = decode_metadata(&damaged, "p") {
                // A flip inside the hex digits can only change their case, which parses the same.
                assert_eq!(decoded, sample(7), "byte {i} flipped unnoticed");
            }
        }
        assert!(decode_metadata(b"", "p").is_err());
        assert!(decode_metadata(&encoded[..encoded.len() - 1], "p").is_err());
    }

    #[tokio::test]
    async fn ids_commit_once_and_in_order() {
        let location = StateLocation::parse("memory://root").unwrap();
        let store = CheckpointStore::new(location, JobId("j".into()), 3);
        let mut checkpoint = sample(5);
        checkpoint.state_handles.clear();
        store.commit(&checkpoint).await.unwrap();
        assert!(matches!(store.commit(&checkpoint).await, Err(StateError::CheckpointExists { .. })));
        checkpoint.id = CheckpointId(4);
        assert!(matches!(store.commit(&checkpoint).await, Err(StateError::CheckpointNotMonotonic { .. })));
        assert_eq!(store.list_ids().await.unwrap(), vec![CheckpointId(5)]);
        assert_eq!(store.metadata_path(CheckpointId(5)).as_ref(), "root/j/checkpoints/chk-5/_metadata");
    }
}
