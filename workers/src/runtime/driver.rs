//! The job driver: [`run_local`] runs a [`LocalJob`] to its end. Each attempt deploys the
//! job's regions as they become ready (see [`JobGraph::pipelined_regions`]), runs the checkpoint
//! coordinator beside the tasks of a checkpointed job, and waits for every task; the first
//! failure stops the attempt. A job given [`InProcessRestarts`] then runs again as they decide
//! (see `restart.rs`); any other failure is the job's.

use std::sync::Arc;

use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weir_dataflow::event::ChangeBatch;
use weir_dataflow::graph::{JobGraph, RegionSchedule};
use weir_dataflow::ids::SubtaskIndex;
use weir_dataflow::plan::StreamPlan;
use weir_shuffle_service::ShuffleService;
use weir_state_store::CompletedCheckpoint;

use super::deployment::{Deployment, release_consumed};
use super::figures::JobCounters;
use super::parts::{JobPart, PartLink, forward_lead, forward_member};
use super::restart::{InProcessRestarts, Restarts};
use crate::checkpoint::CheckpointSetup;
use crate::checkpoint::coordinator::{Coordinator, SavepointRequest};
use crate::connectors;
use crate::connectors::sinks::PrintTo;
use crate::error::{TaskError, TaskResult};

/// Everything a local job needs besides its plan.
pub struct LocalJob {
    pub plan: Arc<StreamPlan>,
    pub graph: Arc<JobGraph>,
    /// The exchange of the first attempt; a restart takes a fresh one
    /// ([`InProcessRestarts::shuffle_for_attempt`]).
    pub shuffle: Arc<dyn ShuffleService>,
    /// Where the rows of a `Collect` sink go.
    pub collect: Option<UnboundedSender<ChangeBatch>>,
    /// Where the rows of a `print` table go.
    pub print: PrintTo,
    pub counters: Arc<JobCounters>,
    /// Checkpointing, when `execution.checkpointing.interval` is set.
    pub checkpointing: Option<CheckpointSetup>,
    /// How the job restarts in this process when its exchange is lost; `None`: it fails.
    pub restart: Option<InProcessRestarts>,
    /// Savepoint requests for the checkpoint coordinator, while the job runs (its attempts in
    /// turn).
    pub savepoints: Option<UnboundedReceiver<SavepointRequest>>,
    /// Told of every checkpoint the coordinator commits (the control plane records them).
    pub checkpoint_listener: Option<UnboundedSender<CompletedCheckpoint>>,
    /// When the job's subtasks run in several processes: this process's part. `None`: every
    /// subtask runs here.
    pub part: Option<JobPart>,
    /// The memory each task may use for keyed state; `None`: unbounded.
    pub memory: Option<super::task::TaskMemory>,
}

/// Runs every subtask of the job to completion, region by region (see
/// [`JobGraph::pipelined_regions`]): a streaming job's regions all start at once; a batch job
/// with blocking exchanges runs stage by stage, each stage once its inputs are written, and
/// frees what a stage read when it finishes. The first failure cancels the rest; the job then
/// restarts as its [`LocalJob::restart`] says, or fails.
pub async fn run_local(mut job: LocalJob) -> TaskResult<()> {
    let mut savepoints = job.savepoints.take();
    let mut link = job.part.as_mut().and_then(|part| part.link.take());
    let mut restarts = job.restart.take().map(Restarts::new);
    let mut schedule = RegionSchedule::new(job.graph.pipelined_regions());
    loop {
        adopt_restored_max_parallelism(&mut job)?;
        let failure = match run_attempt(&job, &mut schedule, link.take(), &mut savepoints).await {
            Ok(()) => return Ok(()),
            Err(failure) => failure,
        };
        match restarts.as_mut() {
            Some(restarts) => restarts.prepare(&mut job, &mut schedule, failure).await?,
            None => return Err(failure),
        }
    }
}

/// As Flink does: a max parallelism derived from the parallelism (`pipeline.max-parallelism`
/// not set) becomes that of the checkpoint the job restores, so that a job rescaled from a
/// checkpoint keeps its key groups even where the derived value would differ (a parallelism of
/// 80 derives 128, one of 100 derives 256).
fn adopt_restored_max_parallelism(job: &mut LocalJob) -> TaskResult<()> {
    let restored = job.checkpointing.as_ref().and_then(|c| c.restore.as_ref());
    let Some(max_parallelism) = restored.and_then(|r| r.state_handles.first()).map(|h| h.max_parallelism) else {
        return Ok(());
    };
    if job.plan.max_parallelism_configured || max_parallelism == job.plan.max_parallelism {
        return Ok(());
    }
    if let Some(vertex) = job.graph.vertices.iter().find(|v| v.parallelism > max_parallelism) {
        return Err(TaskError::Config(format!(
            "the checkpoint to restore has {max_parallelism} key groups (its max parallelism), fewer than the \
             parallelism {} of vertex {}; run at a parallelism of at most {max_parallelism}",
            vertex.parallelism, vertex.id
        )));
    }
    Arc::make_mut(&mut job.plan).max_parallelism = max_parallelism;
    Arc::make_mut(&mut job.graph).max_parallelism = max_parallelism;
    Ok(())
}

/// One attempt: runs the regions `schedule` has not finished, through the job's current
/// exchange, until all have finished or one task fails. A failure aborts the other tasks and the
/// coordinator, and waits for them to stop, so that a restart finds nothing of this attempt
/// still writing.
async fn run_attempt(
    job: &LocalJob,
    schedule: &mut RegionSchedule,
    link: Option<PartLink>,
    savepoints: &mut Option<UnboundedReceiver<SavepointRequest>>,
) -> TaskResult<()> {
    let (reports, report_queue) = mpsc::unbounded_channel();
    let (completed, completed_watch) = watch::channel(None);
    let mut deployment = Deployment::new(job, reports, completed_watch);
    let mut first_error = deployment.start_ready(schedule).await.err();
    let mut coordinator = None;
    let mut relay = None;
    if let (None, Some(setup)) = (&first_error, &job.checkpointing) {
        if !schedule.all_started() {
            return Err(TaskError::Unsupported("checkpoints need every task of the job running at once".into()));
        }
        // Every task has its report sender: the coordinator sees the queue close when they end.
        let local_reports = deployment.reports.take();
        let (mut keys, mut triggers) =
            (std::mem::take(&mut deployment.task_keys), std::mem::take(&mut deployment.triggers));
        match link {
            Some(PartLink::Member { reports: to_lead, triggers: from_lead, completed: completed_at_lead }) => {
                // The lead's coordinator checkpoints this part's tasks too.
                forward_member(report_queue, to_lead, triggers, from_lead, completed, completed_at_lead);
            }
            lead => {
                if let Some(PartLink::Lead { reports: from_members, triggers: to_members, completed: done }) = lead {
                    // The coordinator waits for every subtask of the job, wherever it runs.
                    keys = job
                        .graph
                        .vertices
                        .iter()
                        .flat_map(|v| (0..v.parallelism).map(move |s| (v.id, SubtaskIndex(s))))
                        .collect();
                    triggers.push(to_members);
                    let into_queue = local_reports.clone().expect("set until the coordinator starts");
                    forward_lead(from_members, into_queue, deployment.completed.clone(), done);
                }
                drop(local_reports);
                match Coordinator::new(setup.clone(), keys, triggers, report_queue, completed).await {
                    Ok(mut c) => {
                        if let Some(requests) = savepoints.take() {
                            let (to_coordinator, from_relay) = mpsc::unbounded_channel();
                            relay = Some(relay_savepoints(requests, to_coordinator));
                            c = c.with_savepoints(from_relay);
                        }
                        if let Some(listener) = &job.checkpoint_listener {
                            c = c.with_listener(listener.clone());
                        }
                        coordinator = Some(tokio::spawn(c.run()));
                    }
                    Err(e) => first_error = Some(e),
                }
            }
        }
    }
    if first_error.is_some() {
        deployment.tasks.abort_all();
    }
    while let Some(result) = deployment.tasks.join_next().await {
        let failure = match result {
            Ok((region, Ok(()))) => {
                if !deployment.task_finished(region) || first_error.is_some() {
                    continue;
                }
                schedule.finish(region);
                release_consumed(job, schedule.region(region)).await;
                match deployment.start_ready(schedule).await {
                    Ok(()) => continue,
                    Err(e) => e,
                }
            }
            Ok((_, Err(e))) => e,
            Err(join) => TaskError::Unsupported(format!("a task panicked: {join}")),
        };
        if first_error.is_none() {
            first_error = Some(failure);
            deployment.tasks.abort_all();
        }
    }
    // A part leaves the attempt's exchange alone: other parts may still be reading from it
    // (pipelined data is freed as it is read; the attempt's namespace is never reused).
    if job.part.is_none() {
        let _ = job.shuffle.release_all().await;
    }
    let outcome = match first_error {
        Some(e) => {
            if let Some(c) = coordinator {
                c.abort();
                let _ = c.await;
            }
            Err(e)
        }
        None => {
            debug_assert!(schedule.is_done(), "every region ran");
            finish_checkpoints(job, coordinator).await
        }
    };
    if let Some(relay) = relay {
        // The coordinator is gone, so the relay has ended: its requests go to the next attempt.
        *savepoints = relay.await.ok();
    }
    outcome
}

/// Waits for the coordinator of a job whose tasks have all finished: its last checkpoint
/// records every task's final state, so what the exactly-once sinks hold is published.
async fn finish_checkpoints(
    job: &LocalJob,
    coordinator: Option<JoinHandle<TaskResult<Option<CompletedCheckpoint>>>>,
) -> TaskResult<()> {
    let Some(coordinator) = coordinator else { return Ok(()) };
    let last = coordinator
        .await
        .map_err(|e| TaskError::Unsupported(format!("the checkpoint coordinator panicked: {e}")))??;
    if let Some(last) = last {
        connectors::sinks::commit_finished(&job.plan, &last)?;
    }
    Ok(())
}

/// Passes savepoint requests on to one attempt's coordinator until it is gone, then hands them
/// back for the next attempt's. A request the coordinator did not answer is dropped with its
/// reply: the requester hears that the job ended before the savepoint was taken.
fn relay_savepoints(
    mut requests: UnboundedReceiver<SavepointRequest>,
    coordinator: UnboundedSender<SavepointRequest>,
) -> JoinHandle<UnboundedReceiver<SavepointRequest>> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = coordinator.closed() => break,
                request = requests.recv() => match request {
                    Some(request) => {
                        let _ = coordinator.send(request);
                    }
                    None => break,
                },
            }
        }
        requests
    })
}
