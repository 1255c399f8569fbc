//! Errors a task can fail with. Messages say what went wrong and where (file and line for bad
//! input records), so the user can act on them.

use thiserror::Error;
use weir_dataflow::wire::{ErrorCode, Failure};

#[derive(Debug, Error)]
pub enum TaskError {
    /// Arrow and DataFusion errors are shown by their root cause's message alone: their own
    /// display repeats the cause they also return as the source ("Arrow error: Divide by zero
    /// error" caused by "Divide by zero error"), so a message with its causes said it twice.
    #[error("{}", arrow_message(.0))]
    Arrow(arrow::error::ArrowError),
    #[error("{}", datafusion_message(.0))]
    DataFusion(datafusion_common::DataFusionError),
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

impl From<arrow::error::ArrowError> for TaskError {
    fn from(error: arrow::error::ArrowError) -> Self {
        TaskError::Arrow(error)
    }
}

impl From<datafusion_common::DataFusionError> for TaskError {
    fn from(error: datafusion_common::DataFusionError) -> Self {
        TaskError::DataFusion(error)
    }
}

fn arrow_message(error: &arrow::error::ArrowError) -> String {
    use arrow::error::ArrowError;
    let text = match error {
        ArrowError::ExternalError(cause) => cause.to_string(),
        other => other.to_string(),
    };
    weir_dataflow::sql::types::with_sql_type_names(&text)
}

fn datafusion_message(error: &datafusion_common::DataFusionError) -> String {
    use datafusion_common::DataFusionError;
    match error.find_root() {
        DataFusionError::ArrowError(cause, _) => arrow_message(cause),
        DataFusionError::Execution(text) | DataFusionError::Plan(text) | DataFusionError::NotImplemented(text) => {
            weir_dataflow::sql::types::with_sql_type_names(text)
        }
        root => weir_dataflow::sql::types::with_sql_type_names(&root.to_string()),
    }
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
        match self {
            // A refusal that running again cannot mend (a namespace token the server does not
            // take, a protocol version it does not speak) is not a lost exchange.
            TaskError::Shuffle(ShuffleError::Remote { failure, .. }) => failure.retryable,
            TaskError::Shuffle(ShuffleError::ChannelFailed { .. } | ShuffleError::ConsumerGone(_)) => true,
            _ => false,
        }
    }
}

pub type TaskResult<T> = Result<T, TaskError>;
