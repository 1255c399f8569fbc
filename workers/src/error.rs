//! Errors a task can fail with. Messages say what went wrong and where (file and line for bad
//! input records), so the user can act on them.

use thiserror::Error;
use weir_dataflow::wire::{ErrorCode, Failure};

#[derive(Debug, Error)]
pub enum TaskError {
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    #[error(transparent)]
    DataFusion(#[from] datafusion_common::DataFusionError),
    #[error(transparent)]
    Shuffle(#[from] weir_shuffle_service::ShuffleError),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("malformed record at {path}:{line}: {message}")]
    BadRecord { path: String, line: u64, message: String },
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("the job was cancelled")]
    Cancelled,
    #[error("checkpoint failed: {0}")]
    Checkpoint(String),
    #[error(transparent)]
    State(#[from] weir_state_store::StateError),
    /// A failure already coded (a checkpoint protocol's decision).
    #[error("{0}")]
    Failed(Failure),
}

impl TaskError {
    /// The failure a run reports for this error: its code in the one table, and whether running
    /// again may help. A malformed record or an invalid option fails the same way every time;
    /// storage and exchanges may come back; another writer on the state means this run is a
    /// zombie.
    pub fn failure(&self) -> Failure {
        use weir_state_store::StateError;
        let code = match self {
            TaskError::Failed(failure) => return failure.clone(),
            TaskError::BadRecord { .. } => ErrorCode::MalformedRecord,
            TaskError::Config(_) | TaskError::Unsupported(_) => ErrorCode::InvalidOption,
            TaskError::State(StateError::Fenced { .. }) => ErrorCode::StateFenced,
            TaskError::State(StateError::Db { .. } | StateError::ObjectStore { .. }) => ErrorCode::StateUnavailable,
            TaskError::State(StateError::InvalidLocation { .. }) => ErrorCode::InvalidOption,
            TaskError::State(_) => ErrorCode::StateCorrupt,
            TaskError::Arrow(_)
            | TaskError::DataFusion(_)
            | TaskError::Shuffle(_)
            | TaskError::Io { .. }
            | TaskError::Cancelled
            | TaskError::Checkpoint(_) => ErrorCode::TaskFailed,
        };
        Failure::new(code, self.to_string())
    }

    /// The exchange broke under the task (a shuffle server or a producer went away): running
    /// again, with the data re-created, can succeed.
    pub fn is_lost_exchange(&self) -> bool {
        use weir_shuffle_service::ShuffleError;
        matches!(
            self,
            TaskError::Shuffle(
                ShuffleError::Remote { .. } | ShuffleError::ChannelFailed { .. } | ShuffleError::ConsumerGone(_)
            )
        )
    }
}

pub type TaskResult<T> = Result<T, TaskError>;
