//! What the API needs of running jobs: live figures per vertex, the job's exceptions, and the
//! actions (cancel, stop with a savepoint, trigger a savepoint, rescale).
//!
//! [`MetadataOnlyRuntime`] records each action as the desired change in the replicated metadata
//! — a status, a savepoint request, a desired parallelism — which is what the leader's
//! dispatcher acts on (and what a new leader's reads when it starts); it knows no live figures:
//! every metric is `None` (JSON `null`) and no exception is reported. It is what a replica
//! without a root token serves (no worker can join it). A replica that dispatches (`weir
//! standalone`, and `weir control-plane` with a root token) serves
//! [`crate::dispatcher::DispatcherRuntime`] instead, which records actions the same way and adds
//! the runs' live figures and exceptions — the leader's own, which a follower asks the leader
//! for.
//!
//! The API checks the caller's access to the job before calling any method here.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use weir_dataflow::ids::{JobId, VertexId};
use weir_dataflow::wire::ErrorCode;

use super::ids::{fresh_id, now};
use crate::handle::{BoxFuture, ProposeError, ReplicaHandle};
use crate::metadata::ids::{SavepointId, UnixMillis};
use crate::metadata::records::{JobStatus, Quota};
use crate::metadata::{Command, Rejection};

pub use weir_dataflow::wire::VertexMetrics;

/// One failure of a job, as Flink's exception history shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct JobException {
    pub at: UnixMillis,
    pub vertex: Option<VertexId>,
    pub subtask: Option<u32>,
    /// The failure's code in the one table (`weir_dataflow::wire::ErrorCode`), when it is one.
    #[serde(default)]
    pub code: Option<ErrorCode>,
    pub message: String,
}

/// Why a job action did not happen.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// The change could not be committed (no quorum, leader unreachable, shutting down).
    #[error(transparent)]
    Unavailable(#[from] ProposeError),
    /// The metadata rules refused the change (unknown job, illegal transition, …).
    #[error(transparent)]
    Rejected(#[from] Rejection),
}

/// Live job information and job actions, as the API uses them.
pub trait JobRuntime: Send + Sync + 'static {
    /// Live figures per vertex of the job; a vertex missing from the map is all unknown.
    fn vertex_metrics(&self, job: JobId) -> BoxFuture<'_, BTreeMap<VertexId, VertexMetrics>>;

    /// The job's recent failures, newest first.
    fn exceptions(&self, job: JobId) -> BoxFuture<'_, Vec<JobException>>;

    /// Cancels the job; answers the status it is in now (cancelling, or cancelled if it never ran).
    fn cancel(&self, job: JobId) -> BoxFuture<'_, Result<JobStatus, ActionError>>;

    /// Takes a savepoint and stops the job once it is taken; answers the savepoint's id.
    fn stop_with_savepoint(&self, job: JobId) -> BoxFuture<'_, Result<SavepointId, ActionError>>;

    /// Takes a savepoint of the running job; answers the savepoint's id.
    fn trigger_savepoint(&self, job: JobId) -> BoxFuture<'_, Result<SavepointId, ActionError>>;

    /// Asks for the job to run at `parallelism` (the job master restarts it from a savepoint or
    /// checkpoint at the new parallelism); refused if that raises its tenant's task slots past
    /// the tenant's quota (`quota` is the operator's default, which the tenant's own overrides).
    fn rescale(&self, job: JobId, parallelism: u32, quota: Quota) -> BoxFuture<'_, Result<(), ActionError>>;
}

/// The [`JobRuntime`] until job masters exist: actions record the desired change in the
/// metadata through Raft; no live figures, no exceptions. (Module docs say why that is useful.)
pub struct MetadataOnlyRuntime {
    replica: Arc<dyn ReplicaHandle>,
}

impl MetadataOnlyRuntime {
    pub fn new(replica: Arc<dyn ReplicaHandle>) -> Self {
        Self { replica }
    }

    async fn propose(&self, command: Command) -> Result<(), ActionError> {
        self.replica.propose(command).await?.into_result()?;
        Ok(())
    }

    async fn request_savepoint(&self, job: JobId, stop: bool) -> Result<SavepointId, ActionError> {
        // An id that cannot be drawn is as good as unavailable: the caller retries.
        let savepoint =
            SavepointId(fresh_id("sp").map_err(|error| ProposeError::NoQuorum(error.detail().to_string()))?);
        self.propose(Command::RequestSavepoint { job, savepoint: savepoint.clone(), stop, at: now() }).await?;
        Ok(savepoint)
    }
}

impl JobRuntime for MetadataOnlyRuntime {
    fn vertex_metrics(&self, _job: JobId) -> BoxFuture<'_, BTreeMap<VertexId, VertexMetrics>> {
        Box::pin(async { BTreeMap::new() })
    }

    fn exceptions(&self, _job: JobId) -> BoxFuture<'_, Vec<JobException>> {
        Box::pin(async { Vec::new() })
    }

    fn cancel(&self, job: JobId) -> BoxFuture<'_, Result<JobStatus, ActionError>> {
        Box::pin(async move {
            let status = self.replica.reader().read(|metadata| metadata.job(&job).map(|record| record.status));
            let Some(status) = status else {
                return Err(Rejection::UnknownJob { job }.into());
            };
            // A job that never ran has nothing to tear down; any other goes through CANCELLING,
            // which its job master completes once the tasks are gone.
            let next = if matches!(status, JobStatus::Created | JobStatus::Suspended) {
                JobStatus::Cancelled
            } else {
                JobStatus::Cancelling
            };
            self.propose(Command::SetJobStatus { job, status: next, at: now() }).await?;
            Ok(next)
        })
    }

    fn stop_with_savepoint(&self, job: JobId) -> BoxFuture<'_, Result<SavepointId, ActionError>> {
        Box::pin(self.request_savepoint(job, true))
    }

    fn trigger_savepoint(&self, job: JobId) -> BoxFuture<'_, Result<SavepointId, ActionError>> {
        Box::pin(self.request_savepoint(job, false))
    }

    fn rescale(&self, job: JobId, parallelism: u32, quota: Quota) -> BoxFuture<'_, Result<(), ActionError>> {
        Box::pin(self.propose(Command::SetDesiredParallelism { job, parallelism, quota: Some(quota) }))
    }
}
