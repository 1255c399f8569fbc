//! The crate's one error type: what went wrong with state, coarse enough for callers to act on
//! (stop on fencing, retry on unavailability, fail the restore on corruption).

use slatedb::object_store;
use weir_dataflow::ids::CheckpointId;

pub type Result<T, E = StateError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("invalid state location `{location}`: {reason}")]
    InvalidLocation { location: String, reason: String },

    /// A newer attempt opened this subtask's database: this attempt is a zombie and must stop.
    /// Nothing it writes from now on can become part of a checkpoint.
    #[error("state database `{path}` is fenced by a newer writer; this attempt must stop")]
    Fenced { path: String },

    #[error("state database `{path}`: {source}")]
    Db {
        path: String,
        #[source]
        source: slatedb::Error,
    },

    #[error("object store at `{path}`: {source}")]
    ObjectStore {
        path: String,
        #[source]
        source: object_store::Error,
    },

    #[error("corrupt state data: {0}")]
    Corrupt(String),

    #[error("checkpoint metadata `{path}` is corrupt: {reason}")]
    CorruptMetadata { path: String, reason: String },

    #[error("checkpoint {id} is already committed")]
    CheckpointExists { id: CheckpointId },

    #[error("checkpoint {id} is not newer than the latest committed checkpoint {latest}")]
    CheckpointNotMonotonic { id: CheckpointId, latest: CheckpointId },

    /// Checkpoints exist but none of them could be read: restoring from empty state would lose
    /// data, so the caller must decide (e.g. restore from a savepoint).
    #[error("no usable completed checkpoint; unreadable: {}", paths.join(", "))]
    NoUsableCheckpoint { paths: Vec<String> },

    #[error("key group {key_group} is outside this subtask's key groups {start}..={end}")]
    KeyGroupOutOfRange { key_group: u32, start: u32, end: u32 },

    #[error("state id {0} is reserved for timers; use ids below {max}", max = crate::keys::MAX_USER_STATE_ID)]
    ReservedStateId(u16),

    #[error("invalid restore: {0}")]
    InvalidRestore(String),

    #[error("compaction: {0}")]
    Compaction(String),
}

impl StateError {
    pub(crate) fn db(path: &str, source: slatedb::Error) -> StateError {
        match source.kind() {
            slatedb::ErrorKind::Closed(slatedb::CloseReason::Fenced) => StateError::Fenced { path: path.to_string() },
            _ => StateError::Db { path: path.to_string(), source },
        }
    }

    pub(crate) fn store(path: impl ToString, source: object_store::Error) -> StateError {
        StateError::ObjectStore { path: path.to_string(), source }
    }

    /// True when the same call may succeed if tried again later (object storage unavailable).
    pub fn is_retryable(&self) -> bool {
        match self {
            StateError::Db { source, .. } => matches!(source.kind(), slatedb::ErrorKind::Unavailable),
            StateError::ObjectStore { source, .. } => crate::retry::is_transient(source),
            _ => false,
        }
    }
}
