//! In-process restarts: how a job run in this process recovers when its exchange is lost (a
//! shuffle server gone with the data it held: [`TaskError::is_lost_exchange`]) without leaving
//! the process. One [`RestartBackoff`], from the job's `restart-strategy.*`, decides every delay
//! and when to give up, whichever way the job recovers:
//!
//! - a batch job runs again the regions that had not finished and those upstream whose output
//!   they read (Flink's region failover), unless a sink has written what a re-run would write
//!   twice;
//! - a checkpointed streaming job restarts as a whole from its latest checkpoint, its
//!   checkpointing set up again as any run's is ([`checkpoint_setup`]).
//!
//! Each attempt after the first gets a fresh exchange. A part of a job spread over processes
//! never restarts here: the parts restart together, which is for the control plane's dispatcher
//! (the cross-process restarter) to decide.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use weir_dataflow::config::JobConfig;
use weir_dataflow::graph::RegionSchedule;
use weir_dataflow::restart::{RestartBackoff, RestartStrategy};
use weir_shuffle_service::ShuffleService;

use super::driver::LocalJob;
use crate::attempt::setup::{checkpoint_setup, start_from_savepoint_once};
use crate::error::{TaskError, TaskResult};

/// How a job run in this process restarts after a lost exchange.
pub struct InProcessRestarts {
    /// `restart-strategy.*` ([`JobConfig::restart_strategy`]): the delay before each restart,
    /// and when to give up.
    pub strategy: RestartStrategy,
    /// The exchange for attempt `n` (1, 2, …): a fresh namespace, so nothing of a failed
    /// attempt is mistaken for data.
    pub shuffle_for_attempt: Box<dyn Fn(u32) -> Arc<dyn ShuffleService> + Send + Sync>,
    /// Whether a batch job re-runs its regions: worth it where the exchange keeps its data
    /// apart from the tasks (a shuffle server), whose loss is what a re-run mends.
    pub region_failover: bool,
    /// The configuration the job was planned with: a restart from the latest checkpoint sets
    /// checkpointing up from it again.
    pub job_config: JobConfig,
}

/// How a failed attempt recovers.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Recovery {
    /// Run again the regions that need the lost data.
    RerunRegions,
    /// Restart every task from the job's latest checkpoint.
    FromLatestCheckpoint,
}

/// One job's restarts so far.
pub(super) struct Restarts {
    config: InProcessRestarts,
    backoff: RestartBackoff,
    /// The attempt that runs now: 0 until the first restart.
    attempt: u32,
}

impl Restarts {
    pub(super) fn new(config: InProcessRestarts) -> Self {
        Restarts { backoff: RestartBackoff::new(config.strategy.clone()), config, attempt: 0 }
    }

    /// Readies `job` and `schedule` for the next attempt after `failure`, waits the backoff's
    /// delay and gives the job a fresh exchange; or gives `failure` back when the job must fail.
    pub(super) async fn prepare(
        &mut self,
        job: &mut LocalJob,
        schedule: &mut RegionSchedule,
        failure: TaskError,
    ) -> TaskResult<()> {
        let Some(recovery) = self.recovery(job, &failure) else { return Err(failure) };
        let Some(delay) = self.backoff.on_failure_now() else { return Err(failure) };
        self.attempt += 1;
        let attempt = self.attempt;
        match recovery {
            Recovery::RerunRegions => {
                let regions = schedule.restart_after_data_loss();
                tracing::warn!(
                    error = %failure, attempt, regions, ?delay,
                    "exchange data lost; re-running the regions that need it"
                );
            }
            Recovery::FromLatestCheckpoint => {
                let setup = job.checkpointing.as_ref().expect("only a checkpointed job restarts from a checkpoint");
                let mut job_config = self.config.job_config.clone();
                start_from_savepoint_once(&mut job_config, &setup.job).await.map_err(TaskError::Failed)?;
                let checkpointing = checkpoint_setup(setup.config.clone(), &job_config, &setup.job, true)
                    .await
                    .map_err(TaskError::Failed)?;
                for skipped in &checkpointing.skipped {
                    tracing::warn!(job_id = %setup.job, "skipped checkpoint {skipped}");
                }
                tracing::warn!(
                    error = %failure, attempt, ?delay,
                    "exchange lost; restarting from the latest checkpoint: {}",
                    checkpointing.restored.describe(&setup.job)
                );
                job.checkpointing = Some(checkpointing.setup);
                *schedule = RegionSchedule::new(job.graph.pipelined_regions());
            }
        }
        tokio::time::sleep(delay).await;
        job.shuffle = (self.config.shuffle_for_attempt)(attempt);
        Ok(())
    }

    /// How the job may recover from `failure`, if running again can mend it.
    fn recovery(&self, job: &LocalJob, failure: &TaskError) -> Option<Recovery> {
        if !failure.is_lost_exchange() || job.part.is_some() {
            return None;
        }
        if job.checkpointing.is_some() {
            return Some(Recovery::FromLatestCheckpoint);
        }
        let written = job.counters.output_rows.load(Ordering::Relaxed) > 0;
        (self.config.region_failover && job.plan.batch && !written).then_some(Recovery::RerunRegions)
    }
}
