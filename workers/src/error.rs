//! Errors a task can fail with. Messages say what went wrong and where (file and line for bad
//! input records), so the user can act on them.

use thiserror::Error;

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
}

impl TaskError {
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
