//! The leader's live view of its runs for the API: per-vertex figures and exceptions, served to
//! followers over [`LIVE_PATH`] so any replica answers `GET /jobs/{id}` with them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use weir_dataflow::auth::ClusterKey;
use weir_dataflow::ids::{JobId, VertexId};

use super::Shared;
use crate::api::runtime::{ActionError, JobException, JobRuntime, MetadataOnlyRuntime, VertexMetrics};
use crate::handle::{BoxFuture, ReplicaHandle};
use crate::metadata::ids::SavepointId;
use crate::metadata::records::{JobStatus, Quota};

/// Where a follower asks the leader for a job's live figures and exceptions.
const LIVE_PATH: &str = "/raft/jobs/{id}/live";

/// How long a follower waits for the leader's live figures before showing them as unknown.
const LIVE_TIMEOUT: Duration = Duration::from_secs(1);

/// A job's live figures and exceptions (newest first), as the leader has them.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct LiveJob {
    metrics: Vec<(VertexId, VertexMetrics)>,
    exceptions: Vec<JobException>,
}

impl Shared {
    fn live(&self, job: &JobId) -> LiveJob {
        let run = self.runs.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(job).cloned();
        let exceptions = self.exceptions.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        LiveJob {
            metrics: run.map(|run| run.vertex_metrics().into_iter().collect()).unwrap_or_default(),
            exceptions: exceptions.get(job).map(|list| list.iter().rev().cloned().collect()).unwrap_or_default(),
        }
    }
}

/// The route [`LIVE_PATH`] over `shared`, for replicas presenting the peer key.
pub(super) fn router(shared: Arc<Shared>, peer_key: ClusterKey) -> axum::Router {
    let route = axum::Router::new().route(LIVE_PATH, axum::routing::get(live)).with_state(shared);
    crate::internal::require_key(route, peer_key, "replicas")
}

async fn live(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> axum::Json<LiveJob> {
    axum::Json(shared.live(&JobId(id)))
}

/// The [`JobRuntime`] of a replica that dispatches: actions are recorded as desired state, as
/// [`MetadataOnlyRuntime`] does (the dispatcher acts on them, and so would a new leader's);
/// live figures and exceptions come from the leader's dispatcher.
pub struct DispatcherRuntime {
    metadata: MetadataOnlyRuntime,
    replica: Arc<dyn ReplicaHandle>,
    shared: Arc<Shared>,
}

impl DispatcherRuntime {
    pub(super) fn new(replica: Arc<dyn ReplicaHandle>, shared: Arc<Shared>) -> DispatcherRuntime {
        DispatcherRuntime { metadata: MetadataOnlyRuntime::new(replica.clone()), replica, shared }
    }

    /// The job's live figures and exceptions: this replica's if it leads, else the leader's
    /// (unknown, i.e. empty, when the leader does not answer within [`LIVE_TIMEOUT`]).
    async fn live(&self, job: &JobId) -> LiveJob {
        if self.replica.is_leader() {
            return self.shared.live(job);
        }
        let answer = self.replica.ask_leader(LIVE_PATH.replace("{id}", &job.0), LIVE_TIMEOUT).await;
        answer.and_then(|body| serde_json::from_slice(&body).ok()).unwrap_or_default()
    }
}

impl JobRuntime for DispatcherRuntime {
    fn vertex_metrics(&self, job: JobId) -> BoxFuture<'_, BTreeMap<VertexId, VertexMetrics>> {
        Box::pin(async move { self.live(&job).await.metrics.into_iter().collect() })
    }

    fn exceptions(&self, job: JobId) -> BoxFuture<'_, Vec<JobException>> {
        Box::pin(async move { self.live(&job).await.exceptions })
    }

    fn cancel(&self, job: JobId) -> BoxFuture<'_, Result<JobStatus, ActionError>> {
        self.metadata.cancel(job)
    }

    fn stop_with_savepoint(&self, job: JobId) -> BoxFuture<'_, Result<SavepointId, ActionError>> {
        self.metadata.stop_with_savepoint(job)
    }

    fn trigger_savepoint(&self, job: JobId) -> BoxFuture<'_, Result<SavepointId, ActionError>> {
        self.metadata.trigger_savepoint(job)
    }

    fn rescale(&self, job: JobId, parallelism: u32, quota: Quota) -> BoxFuture<'_, Result<(), ActionError>> {
        self.metadata.rescale(job, parallelism, quota)
    }
}
