//! The standalone adapter: `weir standalone`'s [`InProcessExecutor`] runs the dispatcher's jobs
//! as attempts in this process (`weir_workers::attempt`). It is the one place that touches both
//! roles: the control plane's executor seam on one side, the workers' attempts on the other.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use weir_control_plane::dispatcher::{ExecutionRequest, Failure, JobExecutor, RunReporter, RunningJob};
use weir_control_plane::handle::BoxFuture;
use weir_control_plane::metadata::records::CompletedCheckpoint;
use weir_dataflow::ids::VertexId;
use weir_dataflow::wire::{ErrorCode, SavepointFormat, SavepointTaken, VertexMetrics};
use weir_workers::attempt::{self, AttemptEvent, AttemptRequest, RunningAttempt};
use weir_workers::connectors::sinks::PrintTo;
use weir_workers::runtime::ManagedMemory;

/// Runs jobs as tasks of this process's tokio runtime.
pub struct InProcessExecutor {
    /// The default `state.checkpoints.dir` of managed jobs.
    state_dir: String,
}

impl InProcessExecutor {
    pub fn new(state_dir: &Path) -> InProcessExecutor {
        InProcessExecutor { state_dir: state_dir.display().to_string() }
    }

    async fn start_run(
        &self,
        request: ExecutionRequest,
        reporter: RunReporter,
    ) -> Result<Arc<dyn RunningJob>, Failure> {
        let ExecutionRequest { job, parallelism, restore } = request;
        let state_dir = weir_dataflow::wire::tenant_state_dir(&self.state_dir, &job.tenant.0)
            .ok_or_else(|| Failure::new(ErrorCode::InvalidRequest, format!("`{}` is not a tenant id", job.tenant)))?;
        let request = AttemptRequest {
            job: job.id,
            sql: job.sql.as_str().to_owned(),
            parallelism,
            restore,
            state_dir,
            part: None,
            // `weir standalone`'s terminal is its user's, as for `weir run`.
            print: PrintTo::Terminal,
            // Tasks share the process's managed memory as a worker's slots would.
            memory: Some(ManagedMemory {
                bytes: ManagedMemory::machine_default().bytes / u64::from(weir_workers::service::default_slots()),
            }),
        };
        let (run, mut events) = attempt::start(request).await?;
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                match event {
                    AttemptEvent::Checkpoint(done) => {
                        reporter.checkpoint_completed(CompletedCheckpoint::from_wire(&done), done.retain)
                    }
                    AttemptEvent::Ended(end) => reporter.ended(end),
                }
            }
        });
        Ok(Arc::new(InProcessRun(run)))
    }
}

impl JobExecutor for InProcessExecutor {
    fn start(
        &self,
        request: ExecutionRequest,
        reporter: RunReporter,
    ) -> BoxFuture<'_, Result<Arc<dyn RunningJob>, Failure>> {
        Box::pin(self.start_run(request, reporter))
    }
}

/// An attempt in this process, as the dispatcher controls it.
struct InProcessRun(Arc<RunningAttempt>);

impl RunningJob for InProcessRun {
    fn cancel(&self) {
        self.0.cancel();
    }

    fn savepoint(&self, stop: bool, format: SavepointFormat) -> BoxFuture<'static, Result<SavepointTaken, Failure>> {
        Box::pin(self.0.savepoint(stop, format))
    }

    fn vertex_metrics(&self) -> BTreeMap<VertexId, VertexMetrics> {
        self.0.vertex_metrics()
    }
}
