//! The task runtime: deploys a job graph's subtasks as async tasks of one process, wires their
//! inputs and outputs through a [`ShuffleService`], and runs each task's loop — read an event,
//! push it through the chain, route what comes out to the output partitions.
//!
//! A task's watermark is the minimum over its input channels; an idle channel does not hold it
//! back and an ended channel counts as the maximal watermark, so a bounded source that is done
//! never stalls event time downstream.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arrow::array::{ArrayRef, UInt32Array};
use arrow_row::{RowConverter, SortField};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::sync::watch;
use weir_dataflow::event::{ChangeBatch, MAX_WATERMARK, MIN_WATERMARK, StreamEvent, Timestamp};
use weir_dataflow::graph::{ExchangeMode, JobEdge, JobGraph, JobVertex, PipelinedRegion, RegionSchedule};
use weir_dataflow::ids::{ChannelId, CheckpointId, JobId, PartitionId, SubtaskIndex, VertexId};
use weir_dataflow::keygroup::{
    key_group_for_hash, key_group_range_for_subtask, operator_index_for_key_group, stable_hash,
};
use weir_dataflow::plan::{OperatorSpec, Partitioning, StreamPlan};
use weir_dataflow::wire::{ErrorCode, Failure};
use weir_shuffle_service::{GateId, InputGate, PartitionKind, PartitionWriter, ShuffleService};

use weir_state_store::{
    CheckpointStore, CompletedCheckpoint, KeyedStateBackend, OperatorId, StateLocation, StateOptions, SubtaskStateId,
};

use crate::checkpoint::align::{AlignStep, BarrierAligner};
use crate::checkpoint::coordinator::{Coordinator, SavepointRequest};
use crate::checkpoint::{CheckpointSetup, RestoredState, SnapshotContext, TaskReport};
use crate::connectors::{self, Source};
use crate::error::{TaskError, TaskResult};
use crate::operators::{Emitted, Operator, Output, create_operator};

/// Counters shared by all tasks of a job, read by the client for progress and metrics.
#[derive(Debug, Default)]
pub struct JobCounters {
    pub source_rows: AtomicU64,
    pub late_records_dropped: AtomicU64,
    pub output_rows: AtomicU64,
    /// Malformed records skipped under `*.ignore-parse-errors`.
    pub records_skipped: AtomicU64,
    /// The most tasks running at once (a batch job run stage by stage needs fewer).
    pub peak_running_tasks: AtomicU64,
    /// Every task's live figures, in the order the tasks were built.
    tasks: std::sync::Mutex<Vec<Arc<TaskFigures>>>,
}

/// One subtask's live figures: its task updates them (relaxed atomics, no lock), and whoever
/// reports the job's figures reads them.
#[derive(Debug)]
pub struct TaskFigures {
    vertex: VertexId,
    /// Rows into the head of the chain (a source's: rows its connector read).
    records_in: AtomicU64,
    /// Rows out of the tail of the chain, to the vertex's outputs.
    records_out: AtomicU64,
    /// The newest watermark the task received or emitted; `MIN_WATERMARK` while it has none.
    watermark: std::sync::atomic::AtomicI64,
    /// Nanoseconds spent in sends to the outputs: waiting for downstream credit, mostly.
    blocked_nanos: AtomicU64,
    started: std::time::Instant,
}

/// A vertex's live figures, over its subtasks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VertexFigures {
    pub records_in: u64,
    pub records_out: u64,
    /// The lowest watermark of its subtasks; `None` while one has none.
    pub watermark: Option<Timestamp>,
    /// The highest share of wall time a subtask spent blocked sending (0.0 – 1.0), since it
    /// started; `None` for a vertex without outputs.
    pub backpressure: Option<f64>,
}

impl JobCounters {
    fn task_figures(&self, vertex: VertexId) -> Arc<TaskFigures> {
        let figures = Arc::new(TaskFigures {
            vertex,
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            watermark: std::sync::atomic::AtomicI64::new(MIN_WATERMARK),
            blocked_nanos: AtomicU64::new(0),
            started: std::time::Instant::now(),
        });
        self.tasks.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(figures.clone());
        figures
    }

    /// Live figures per vertex, over its subtasks running or finished (the latest deployment of
    /// each: a region run again replaces its tasks' figures).
    pub fn vertex_figures(&self, graph: &JobGraph) -> std::collections::BTreeMap<VertexId, VertexFigures> {
        let tasks = self.tasks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut by_vertex: std::collections::BTreeMap<VertexId, Vec<&TaskFigures>> = Default::default();
        for task in tasks.iter() {
            by_vertex.entry(task.vertex).or_default().push(task);
        }
        let mut figures = std::collections::BTreeMap::new();
        for vertex in &graph.vertices {
            let Some(all) = by_vertex.get(&vertex.id) else { continue };
            // The newest task of each subtask index: the last `parallelism` built.
            let latest = &all[all.len().saturating_sub(vertex.parallelism as usize)..];
            let watermarks: Vec<Timestamp> = latest.iter().map(|t| t.watermark.load(Ordering::Relaxed)).collect();
            let has_outputs = !vertex.outputs.is_empty();
            figures.insert(
                vertex.id,
                VertexFigures {
                    records_in: latest.iter().map(|t| t.records_in.load(Ordering::Relaxed)).sum(),
                    records_out: latest.iter().map(|t| t.records_out.load(Ordering::Relaxed)).sum(),
                    watermark: watermarks.iter().min().copied().filter(|w| *w > MIN_WATERMARK),
                    backpressure: has_outputs.then(|| {
                        latest
                            .iter()
                            .map(|t| {
                                let blocked = Duration::from_nanos(t.blocked_nanos.load(Ordering::Relaxed));
                                (blocked.as_secs_f64() / t.started.elapsed().as_secs_f64().max(1e-9)).min(1.0)
                            })
                            .fold(0.0, f64::max)
                    }),
                },
            );
        }
        figures
    }
}

/// A subtask's input gate and, per channel, which input of the head operator it feeds.
type GateInput = (Box<dyn InputGate>, Vec<usize>);

/// Everything a local job needs besides its plan.
pub struct LocalJob {
    pub plan: Arc<StreamPlan>,
    pub graph: Arc<JobGraph>,
    pub shuffle: Arc<dyn ShuffleService>,
    /// Where the rows of a `Collect` sink go.
    pub collect: Option<UnboundedSender<ChangeBatch>>,
    pub counters: Arc<JobCounters>,
    /// Checkpointing, when `execution.checkpointing.interval` is set.
    pub checkpointing: Option<CheckpointSetup>,
    /// How a batch job recovers when its exchanges' data is lost; `None`: it fails.
    pub restart: Option<RestartStrategy>,
    /// Savepoint requests for the checkpoint coordinator, while the job runs.
    pub savepoints: Option<UnboundedReceiver<SavepointRequest>>,
    /// Told of every checkpoint the coordinator commits (the control plane records them).
    pub checkpoint_listener: Option<UnboundedSender<CompletedCheckpoint>>,
    /// When the job's subtasks run in several processes: this process's part. `None`: every
    /// subtask runs here.
    pub part: Option<JobPart>,
}

/// One process's part of a job whose subtasks run in several processes (over a shuffle service
/// they share): the subtask indices it runs, and how its checkpoint traffic crosses to the
/// others. Slot sharing: a process runs subtask `i` of every vertex for each `i` it holds.
pub struct JobPart {
    pub subtasks: std::collections::BTreeSet<u32>,
    /// Taken by [`run_local`] when it starts.
    pub link: Option<PartLink>,
}

/// How a part's checkpoints cross processes; the caller carries the channels' ends over the
/// wire.
pub enum PartLink {
    /// The part that runs the checkpoint coordinator, for every subtask of the job.
    Lead {
        /// Reports of the other parts' tasks.
        reports: UnboundedReceiver<TaskReport>,
        /// Checkpoints to trigger at the other parts' sources.
        triggers: UnboundedSender<CheckpointId>,
        /// Checkpoints completed, for the other parts' tasks.
        completed: UnboundedSender<CheckpointId>,
    },
    /// Another part: its tasks report to the lead, which triggers and completes checkpoints.
    Member {
        reports: UnboundedSender<TaskReport>,
        triggers: UnboundedReceiver<CheckpointId>,
        completed: UnboundedReceiver<CheckpointId>,
    },
}

impl JobPart {
    fn runs(&self, subtask: u32) -> bool {
        self.subtasks.contains(&subtask)
    }
}

/// Region failover for batch jobs: when a shuffle server is lost, with the data it held, the
/// regions that had not finished run again, with those upstream whose output they need
/// (Flink's region failover with a fixed-delay restart strategy).
pub struct RestartStrategy {
    /// Restarts allowed before the job fails.
    pub attempts: u32,
    pub delay: std::time::Duration,
    /// The exchange for attempt `n` (1, 2, …): a fresh namespace, so nothing of a failed
    /// attempt is mistaken for data.
    pub shuffle_for_attempt: Box<dyn Fn(u32) -> Arc<dyn ShuffleService> + Send + Sync>,
}

/// The checkpoint side of a task.
struct TaskCheckpointing {
    reports: UnboundedSender<TaskReport>,
    /// Completed checkpoints; `None` once the coordinator has gone.
    completed: Option<watch::Receiver<Option<CheckpointId>>>,
    /// A source task's checkpoint triggers.
    triggers: Option<UnboundedReceiver<CheckpointId>>,
    /// Keyed state, when an operator of the chain keeps some.
    backend: Option<KeyedStateBackend>,
    /// The newest checkpoint whose barrier this task has emitted.
    last_barrier: Option<CheckpointId>,
    /// `execution.checkpointing.unaligned`.
    unaligned: bool,
    /// Where in-flight data of unaligned checkpoints goes: the job's folder.
    location: StateLocation,
    job: String,
    /// An unaligned snapshot taken, waiting for its in-flight data to be recorded.
    unaligned_part: Option<SnapshotPart>,
}

/// A task's part of a checkpoint, taken and waiting to be acknowledged.
struct SnapshotPart {
    id: CheckpointId,
    position: serde_json::Value,
    /// The keyed state's upload, when the task has keyed state.
    pending: Option<weir_state_store::PendingSnapshot>,
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

/// Runs every subtask of the job to completion, region by region (see
/// [`JobGraph::pipelined_regions`]): a streaming job's regions all start at once; a batch job
/// with blocking exchanges runs stage by stage, each stage once its inputs are written, and
/// frees what a stage read when it finishes. The first failure cancels the rest.
pub async fn run_local(mut job: LocalJob) -> TaskResult<()> {
    adopt_restored_max_parallelism(&mut job)?;
    let savepoints = job.savepoints.take();
    let checkpoint_listener = job.checkpoint_listener.take();
    let link = job.part.as_mut().and_then(|part| part.link.take());
    let mut schedule = RegionSchedule::new(job.graph.pipelined_regions());
    let (reports, report_queue) = mpsc::unbounded_channel();
    let (completed, completed_watch) = watch::channel(None);
    let mut deployment = Deployment {
        job: &job,
        shuffle: job.shuffle.clone(),
        reports: Some(reports),
        completed: completed_watch,
        triggers: Vec::new(),
        task_keys: Vec::new(),
        tasks: tokio::task::JoinSet::new(),
        running: vec![0; job.graph.vertices.len()],
    };
    let mut first_error = deployment.start_ready(&mut schedule).await.err();
    let mut coordinator = None;
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
                        if let Some(requests) = savepoints {
                            c = c.with_savepoints(requests);
                        }
                        if let Some(listener) = checkpoint_listener {
                            c = c.with_listener(listener);
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
    let mut restarts = 0;
    while let Some(result) = deployment.tasks.join_next().await {
        let failure = match result {
            Ok((region, Ok(()))) => {
                deployment.running[region] -= 1;
                if deployment.running[region] > 0 || first_error.is_some() {
                    continue;
                }
                schedule.finish(region);
                release_consumed(&job, deployment.shuffle.as_ref(), schedule.region(region)).await;
                match deployment.start_ready(&mut schedule).await {
                    Ok(()) => continue,
                    Err(e) => e,
                }
            }
            Ok((_, Err(e))) => e,
            Err(join) => TaskError::Unsupported(format!("a task panicked: {join}")),
        };
        if first_error.is_some() {
            continue;
        }
        deployment.tasks.abort_all();
        match job.restart.as_ref().filter(|r| restarts < r.attempts && may_restart(&job, &failure)) {
            Some(restart) => {
                restarts += 1;
                tracing::warn!(error = %failure, attempt = restarts, "exchange data lost; re-running the regions that need it");
                while deployment.tasks.join_next().await.is_some() {}
                let _ = deployment.shuffle.release_all().await;
                deployment.running.iter_mut().for_each(|n| *n = 0);
                let again = schedule.restart_after_data_loss();
                tracing::info!(regions = again, "restarting");
                tokio::time::sleep(restart.delay).await;
                deployment.shuffle = (restart.shuffle_for_attempt)(restarts);
                if let Err(e) = deployment.start_ready(&mut schedule).await {
                    first_error = Some(e);
                    deployment.tasks.abort_all();
                }
            }
            None => first_error = Some(failure),
        }
    }
    // A part leaves the attempt's exchange alone: other parts may still be reading from it
    // (pipelined data is freed as it is read; the attempt's namespace is never reused).
    if job.part.is_none() {
        let _ = deployment.shuffle.release_all().await;
    }
    if let Some(e) = first_error {
        if let Some(c) = coordinator {
            c.abort();
        }
        return Err(e);
    }
    debug_assert!(schedule.is_done(), "every region ran");
    if let Some(coordinator) = coordinator {
        let last = coordinator
            .await
            .map_err(|e| TaskError::Unsupported(format!("the checkpoint coordinator panicked: {e}")))??;
        // The job is done and its last checkpoint records every task's final state: publish what
        // the exactly-once sinks hold.
        if let Some(last) = last {
            connectors::sinks::commit_finished(&job.plan, &last)?;
        }
    }
    Ok(())
}

/// A member part's checkpoint traffic: its tasks' reports go to the lead; the lead's triggers
/// reach its sources and its completions its tasks.
fn forward_member(
    mut reports: UnboundedReceiver<TaskReport>,
    to_lead: UnboundedSender<TaskReport>,
    sources: Vec<UnboundedSender<CheckpointId>>,
    mut triggers: UnboundedReceiver<CheckpointId>,
    completed: watch::Sender<Option<CheckpointId>>,
    mut completed_at_lead: UnboundedReceiver<CheckpointId>,
) {
    tokio::spawn(async move {
        while let Some(report) = reports.recv().await {
            if to_lead.send(report).is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        while let Some(id) = triggers.recv().await {
            for source in &sources {
                let _ = source.send(id);
            }
        }
    });
    tokio::spawn(async move {
        while let Some(id) = completed_at_lead.recv().await {
            completed.send_if_modified(|newest| {
                let newer = newest.is_none_or(|n| n < id);
                if newer {
                    *newest = Some(id);
                }
                newer
            });
        }
    });
}

/// The lead part's side of the other parts' checkpoint traffic: their reports join its
/// coordinator's queue, and every completion goes out to them.
fn forward_lead(
    mut from_members: UnboundedReceiver<TaskReport>,
    queue: UnboundedSender<TaskReport>,
    mut completed: watch::Receiver<Option<CheckpointId>>,
    to_members: UnboundedSender<CheckpointId>,
) {
    tokio::spawn(async move {
        while let Some(report) = from_members.recv().await {
            if queue.send(report).is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        while completed.changed().await.is_ok() {
            let newest = *completed.borrow_and_update();
            if let Some(id) = newest
                && to_members.send(id).is_err()
            {
                break;
            }
        }
    });
}

/// Whether a failed batch job may run its regions again: its exchange's data was lost (a
/// shuffle server went away), and no sink has written anything a re-run would write twice.
fn may_restart(job: &LocalJob, failure: &TaskError) -> bool {
    failure.is_lost_exchange()
        && job.plan.batch
        && job.checkpointing.is_none()
        && job.counters.output_rows.load(Ordering::Relaxed) == 0
}

/// How long a part of a spread job waits for the other parts to open the gates its
/// partitions feed.
const PART_GATES_TIMEOUT: Duration = Duration::from_secs(30);

/// Deploys regions of a local job: gates, partitions and tasks.
struct Deployment<'a> {
    job: &'a LocalJob,
    /// The exchange of the current attempt.
    shuffle: Arc<dyn ShuffleService>,
    /// Checkpoint reports, while tasks may still be deployed.
    reports: Option<UnboundedSender<TaskReport>>,
    completed: watch::Receiver<Option<CheckpointId>>,
    triggers: Vec<UnboundedSender<CheckpointId>>,
    task_keys: Vec<(VertexId, SubtaskIndex)>,
    /// Running tasks, each with the region it belongs to.
    tasks: tokio::task::JoinSet<(usize, TaskResult<()>)>,
    /// Tasks still running per region.
    running: Vec<usize>,
}

impl Deployment<'_> {
    /// Whether subtask index `s` runs in this process.
    fn runs_here(&self, s: u32) -> bool {
        self.job.part.as_ref().is_none_or(|part| part.runs(s))
    }

    /// Creates a producer's partition. A part of a job spread over processes may come before
    /// the parts that consume from it have opened their gates: it waits for them (up to
    /// [`PART_GATES_TIMEOUT`]).
    async fn create_partition(
        &self,
        partition: PartitionId,
        consumers: u32,
        kind: PartitionKind,
    ) -> TaskResult<Box<dyn PartitionWriter>> {
        let deadline = tokio::time::Instant::now() + PART_GATES_TIMEOUT;
        loop {
            match self.shuffle.create_partition(partition, consumers, kind).await {
                Err(weir_shuffle_service::ShuffleError::UnknownChannel(_))
                    if self.job.part.is_some() && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                result => return Ok(result?),
            }
        }
    }

    /// Starts every region that may start now.
    async fn start_ready(&mut self, schedule: &mut RegionSchedule) -> TaskResult<()> {
        for region in schedule.start_ready() {
            self.start_region(schedule.region(region), region).await?;
        }
        self.job.counters.peak_running_tasks.fetch_max(self.tasks.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    async fn start_region(&mut self, region: &PipelinedRegion, index: usize) -> TaskResult<()> {
        let job = self.job;
        // Gates first: pipelined partitions look their consumers' channels up.
        let mut gates: Vec<Vec<Option<GateInput>>> = Vec::new();
        for &v in &region.vertices {
            let vertex = job.graph.vertex(v);
            let mut per_subtask = Vec::new();
            for s in 0..vertex.parallelism {
                if vertex.inputs.is_empty() || !self.runs_here(s) {
                    per_subtask.push(None);
                    continue;
                }
                let mut channels = Vec::new();
                let mut input_of_channel = Vec::new();
                for &e in &vertex.inputs {
                    let edge = &job.graph.edges[e];
                    let producers = job.graph.vertex(edge.source).parallelism;
                    for p in 0..producers {
                        channels.push(ChannelId {
                            partition: PartitionId { edge: e as u32, producer: SubtaskIndex(p) },
                            consumer: SubtaskIndex(s),
                        });
                        input_of_channel.push(edge.target_input);
                    }
                }
                let gate =
                    self.shuffle.open_gate(GateId { vertex: vertex.id, subtask: SubtaskIndex(s) }, channels).await?;
                per_subtask.push(Some((gate, input_of_channel)));
            }
            gates.push(per_subtask);
        }
        for (&v, mut gates) in region.vertices.iter().zip(gates) {
            let vertex = job.graph.vertex(v);
            let here: Vec<u32> = (0..vertex.parallelism).filter(|s| self.runs_here(*s)).collect();
            for s in here {
                self.task_keys.push((vertex.id, SubtaskIndex(s)));
                let mut outputs = Vec::with_capacity(vertex.outputs.len());
                for &e in &vertex.outputs {
                    let edge = &job.graph.edges[e];
                    let consumers = job.graph.vertex(edge.target).parallelism;
                    let partition = PartitionId { edge: e as u32, producer: SubtaskIndex(s) };
                    let writer = self.create_partition(partition, consumers, partition_kind(edge.mode)).await?;
                    outputs.push(OutputEdge::new(edge, writer, s, &job.plan, vertex)?);
                }
                let mut task = Task::build(job, vertex, s, outputs)?;
                if let Some(setup) = &job.checkpointing {
                    let trigger = if vertex.inputs.is_empty() {
                        let (send, receive) = mpsc::unbounded_channel();
                        self.triggers.push(send);
                        Some(receive)
                    } else {
                        None
                    };
                    let reports = self.reports.clone().expect("checkpointed jobs deploy every task at once");
                    task.enable_checkpoints(job, setup, vertex, trigger, reports, self.completed.clone()).await?;
                }
                let input = gates[s as usize].take();
                self.tasks.spawn(async move { (index, task.run(input).await) });
                self.running[index] += 1;
            }
        }
        Ok(())
    }
}

fn partition_kind(mode: ExchangeMode) -> PartitionKind {
    match mode {
        ExchangeMode::Pipelined => PartitionKind::Pipelined,
        ExchangeMode::Blocking => PartitionKind::Blocking,
        ExchangeMode::HybridFull => PartitionKind::HybridFull,
        ExchangeMode::HybridSelective => PartitionKind::HybridSelective,
    }
}

/// A finished region has read its retained inputs for good: free them (memory, spill files).
async fn release_consumed(job: &LocalJob, shuffle: &dyn ShuffleService, region: &PipelinedRegion) {
    let mut partitions = Vec::new();
    for &v in &region.vertices {
        for &e in &job.graph.vertex(v).inputs {
            let edge = &job.graph.edges[e];
            if edge.mode.is_retained() {
                let producers = job.graph.vertex(edge.source).parallelism;
                partitions.extend((0..producers).map(|p| PartitionId { edge: e as u32, producer: SubtaskIndex(p) }));
            }
        }
    }
    if !partitions.is_empty()
        && let Err(e) = shuffle.release_partitions(partitions).await
    {
        // Only space is at stake; the job's end releases everything again.
        tracing::warn!(error = %e, "could not release consumed partitions");
    }
}

struct Task {
    vertex: VertexId,
    subtask: u32,
    source: Option<Box<dyn Source>>,
    chain: Vec<Box<dyn Operator>>,
    /// The plan node of each operator of `chain`: its id in checkpoints.
    chain_nodes: Vec<usize>,
    checkpointing: Option<TaskCheckpointing>,
    outputs: Vec<OutputEdge>,
    counters: Arc<JobCounters>,
    figures: Arc<TaskFigures>,
    watermark: Timestamp,
    /// This task has told its consumers it is idle (and has sent nothing since).
    idle: bool,
    idle_timeout: Option<std::time::Duration>,
    /// Read input 0 to its end before the others (a join's build side first). Only where every
    /// input is retained, so that nothing upstream waits for this task to read.
    first_input_first: bool,
    /// Rows an unaligned checkpoint recorded in flight, to process before any input.
    replay: Vec<(usize, ChangeBatch)>,
}

impl Task {
    fn build(job: &LocalJob, vertex: &JobVertex, subtask: u32, outputs: Vec<OutputEdge>) -> TaskResult<Task> {
        let mut source = None;
        let mut chain: Vec<Box<dyn Operator>> = Vec::new();
        let mut chain_nodes = Vec::new();
        for (i, &node_id) in vertex.chain.iter().enumerate() {
            let node = &job.plan.nodes[node_id];
            if !matches!(node.op, OperatorSpec::Source(_)) {
                chain_nodes.push(node_id);
            }
            match &node.op {
                OperatorSpec::Source(spec) => {
                    debug_assert_eq!(i, 0, "a source heads its chain");
                    source = Some(connectors::create_source(
                        spec,
                        node.schema.clone(),
                        subtask,
                        vertex.parallelism,
                        job.counters.clone(),
                    )?);
                }
                OperatorSpec::Sink(spec) => {
                    chain.push(connectors::create_sink(
                        spec,
                        node,
                        subtask,
                        job.collect.clone(),
                        job.checkpointing.as_ref().map(|c| c.attempt.0),
                        job.counters.clone(),
                    )?);
                }
                _ => chain.push(create_operator(&job.plan, node)?),
            }
        }
        let idle_timeout = vertex.chain.first().and_then(|n| match &job.plan.nodes[*n].op {
            OperatorSpec::Source(spec) => spec.idle_timeout,
            _ => None,
        });
        let retained_inputs = vertex.inputs.iter().all(|e| job.graph.edges[*e].mode.is_retained());
        let several_inputs = vertex.inputs.iter().any(|e| job.graph.edges[*e].target_input > 0);
        Ok(Task {
            first_input_first: job.plan.batch && retained_inputs && several_inputs,
            replay: Vec::new(),
            vertex: vertex.id,
            subtask,
            source,
            chain,
            chain_nodes,
            checkpointing: None,
            outputs,
            counters: job.counters.clone(),
            figures: job.counters.task_figures(vertex.id),
            watermark: MIN_WATERMARK,
            idle: false,
            idle_timeout,
        })
    }

    async fn run(mut self, input: Option<GateInput>) -> TaskResult<()> {
        if let Some(mut source) = self.source.take() {
            // Pacing counts from the first row this task emits: a restored source goes on at
            // its rate from where it was, not as if it had been running since the job began.
            let (started, origin) = (tokio::time::Instant::now(), source.next_due().unwrap_or_default());
            loop {
                if let Some(due) = source.next_due() {
                    let wake = started + due.saturating_sub(origin);
                    // With nothing to emit for longer than the idle timeout, say so, so that
                    // downstream watermarks do not wait for this subtask.
                    if let Some(timeout) = self.idle_timeout
                        && wake > tokio::time::Instant::now() + timeout
                    {
                        tokio::time::sleep(timeout).await;
                        self.send_idle().await?;
                    }
                    tokio::time::sleep_until(wake).await;
                }
                let Some(batch) = source.next_batch()? else { break };
                self.counters.source_rows.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                self.push(Item::Batch(0, ChangeBatch::inserts(batch))).await?;
                // Between batches: checkpoints the coordinator asked for, and completed ones.
                let (triggered, completed) = match self.checkpointing.as_mut() {
                    Some(c) => {
                        let mut triggered = Vec::new();
                        if let Some(t) = c.triggers.as_mut() {
                            while let Ok(id) = t.try_recv() {
                                triggered.push(id);
                            }
                        }
                        let completed = match c.completed.as_mut() {
                            Some(w) if w.has_changed().unwrap_or(false) => *w.borrow_and_update(),
                            _ => None,
                        };
                        (triggered, completed)
                    }
                    None => (Vec::new(), None),
                };
                for id in triggered {
                    self.checkpoint(id, Some(source.position())).await?;
                }
                if let Some(id) = completed {
                    self.checkpoint_complete(id)?;
                }
                tokio::task::yield_now().await;
            }
            self.source = Some(source);
        } else if let Some((mut gate, input_of_channel)) = input {
            let channels = input_of_channel.len();
            let mut marks = vec![MIN_WATERMARK; channels];
            let mut idle = vec![false; channels];
            let mut aligner = BarrierAligner::new(channels);
            if self.checkpointing.as_ref().is_some_and(|c| c.unaligned) {
                aligner = aligner.unaligned();
            }
            // Unaligned: rows in flight across the snapshot being taken, by input.
            let mut in_flight: Vec<(usize, ChangeBatch)> = Vec::new();
            // Rows recorded with the restored checkpoint go first.
            for (input, batch) in std::mem::take(&mut self.replay) {
                self.push(Item::Batch(input, batch)).await?;
            }
            // Events of channels held back by an alignment, and released ones to handle first.
            let mut held: Vec<std::collections::VecDeque<StreamEvent>> = vec![Default::default(); channels];
            let mut released: std::collections::VecDeque<(usize, StreamEvent)> = Default::default();
            let inputs = input_of_channel.iter().max().map_or(0, |m| m + 1);
            let mut open_of_input = vec![0usize; inputs];
            for i in &input_of_channel {
                open_of_input[*i] += 1;
            }
            // Channels of the other inputs wait until input 0 has ended.
            let mut deferred: Vec<bool> = input_of_channel.iter().map(|i| self.first_input_first && *i > 0).collect();
            for (c, _) in deferred.iter().enumerate().filter(|(_, d)| **d) {
                gate.pause(c);
            }
            loop {
                let (channel, event) = match released.pop_front() {
                    Some(next) => next,
                    None => match self.next_input(gate.as_mut()).await? {
                        Input::Event(channel, event) => (channel, event),
                        Input::Completed(id) => {
                            self.checkpoint_complete(id)?;
                            continue;
                        }
                        Input::End => break,
                    },
                };
                if aligner.is_blocked(channel) || deferred[channel] {
                    held[channel].push_back(event);
                    continue;
                }
                let mut steps = Vec::new();
                if aligner.is_recording(channel)
                    && let StreamEvent::Data(batch) = &event
                {
                    in_flight.push((input_of_channel[channel], batch.clone()));
                }
                match event {
                    StreamEvent::Data(batch) => {
                        // Rows make an idle channel active again.
                        idle[channel] = false;
                        self.push(Item::Batch(input_of_channel[channel], batch)).await?
                    }
                    StreamEvent::Watermark(w) => {
                        marks[channel] = marks[channel].max(w);
                        idle[channel] = false;
                        self.advance(&marks, &idle).await?;
                    }
                    StreamEvent::Idle => {
                        idle[channel] = true;
                        self.advance(&marks, &idle).await?;
                    }
                    StreamEvent::EndOfPartition => {
                        marks[channel] = MAX_WATERMARK;
                        idle[channel] = false;
                        self.advance(&marks, &idle).await?;
                        steps.extend(aligner.on_end(channel));
                        let input = input_of_channel[channel];
                        open_of_input[input] -= 1;
                        if open_of_input[input] == 0 {
                            if let Some(head) = self.chain.first_mut() {
                                head.end_input(input);
                            }
                            if input == 0 {
                                for c in 0..channels {
                                    if !std::mem::take(&mut deferred[c]) {
                                        continue;
                                    }
                                    gate.resume(c);
                                    released.extend(held[c].drain(..).map(|e| (c, e)));
                                }
                            }
                        }
                    }
                    StreamEvent::Barrier(id) => steps = aligner.on_barrier(channel, id),
                }
                let aligning = !steps.is_empty() || aligner.is_blocked(channel);
                for step in steps {
                    match step {
                        AlignStep::Complete(id) => self.checkpoint(id, None).await?,
                        AlignStep::SnapshotNow(id) => {
                            in_flight.clear();
                            let part = self.snapshot_part(id, None).await?;
                            self.checkpointing.as_mut().expect("checkpointing").unaligned_part = part;
                        }
                        AlignStep::InFlightRecorded(id) => {
                            let recorded = std::mem::take(&mut in_flight);
                            let c = self.checkpointing.as_mut().expect("checkpointing");
                            if let Some(part) = c.unaligned_part.take().filter(|p| p.id == id) {
                                let bytes = encode_in_flight(&recorded)?;
                                self.acknowledge(part, Some(bytes));
                            }
                        }
                        AlignStep::Abandoned(id) => {
                            in_flight.clear();
                            if let Some(c) = &mut self.checkpointing {
                                c.unaligned_part = None;
                                let failure =
                                    Failure::new(ErrorCode::TaskFailed, "a newer checkpoint's barrier overtook it");
                                let _ = c.reports.send(TaskReport::Decline { checkpoint: id, failure });
                            }
                        }
                    }
                    for (c, events) in held.iter_mut().enumerate().filter(|(c, _)| !deferred[*c]) {
                        released.extend(events.drain(..).map(|e| (c, e)));
                    }
                }
                if aligning {
                    // A channel that has delivered the barrier being aligned stops getting credit,
                    // so what its producer sends meanwhile waits there, not in this task's memory.
                    for (c, deferred) in deferred.iter().enumerate() {
                        if aligner.is_blocked(c) || *deferred {
                            gate.pause(c);
                        } else {
                            gate.resume(c);
                        }
                    }
                }
            }
        }
        if self.watermark < MAX_WATERMARK {
            self.watermark = MAX_WATERMARK;
            self.push(Item::Watermark(MAX_WATERMARK)).await?;
        }
        self.finish().await
    }

    async fn advance(&mut self, marks: &[Timestamp], idle: &[bool]) -> TaskResult<()> {
        // Every open channel idle: this task is idle too, and says so downstream.
        let open_idle = marks.iter().zip(idle).filter(|(m, _)| **m < MAX_WATERMARK).all(|(_, i)| *i);
        if open_idle && idle.iter().any(|i| *i) && !self.idle {
            self.send_idle().await?;
        }
        let min = marks.iter().zip(idle).filter(|(_, i)| !**i).map(|(m, _)| *m).min();
        if let Some(min) = min
            && min > self.watermark
        {
            self.watermark = min;
            self.push(Item::Watermark(min)).await?;
        }
        Ok(())
    }

    async fn send_idle(&mut self) -> TaskResult<()> {
        self.idle = true;
        for output in &mut self.outputs {
            output.idle().await?;
        }
        Ok(())
    }

    /// Runs an item through the whole chain and sends what comes out of its tail.
    async fn push(&mut self, item: Item) -> TaskResult<()> {
        self.idle = false;
        match &item {
            Item::Batch(_, batch) => {
                self.figures.records_in.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
            }
            Item::Watermark(w) => {
                self.figures.watermark.fetch_max(*w, Ordering::Relaxed);
            }
        }
        let mut emitted = Vec::new();
        drive(&mut self.chain, item, &mut emitted)?;
        self.send(&emitted).await
    }

    /// Sends what the tail of the chain emitted to every output, counting it.
    async fn send(&mut self, emitted: &[Emitted]) -> TaskResult<()> {
        if emitted.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        for e in emitted {
            match e {
                Emitted::Batch(batch) if !self.outputs.is_empty() => {
                    self.figures.records_out.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                }
                Emitted::Watermark(w) => {
                    self.figures.watermark.fetch_max(*w, Ordering::Relaxed);
                }
                Emitted::Batch(_) => {}
            }
            for output in &mut self.outputs {
                output.send(e).await?;
            }
        }
        if !self.outputs.is_empty() {
            let blocked = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.figures.blocked_nanos.fetch_add(blocked, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn finish(mut self) -> TaskResult<()> {
        let mut emitted = Vec::new();
        finish_chain(&mut self.chain, &mut emitted)?;
        self.send(&emitted).await?;
        let late: u64 = self.chain.iter().map(|op| op.metrics().late_records_dropped).sum();
        self.counters.late_records_dropped.fetch_add(late, Ordering::Relaxed);
        for output in &mut self.outputs {
            output.end().await?;
        }
        if self.checkpointing.is_some() {
            // The final record: a finished task's part of every later checkpoint. Its keyed state
            // is not kept: it will never see input again.
            let source = self.source.take().map(|s| s.position());
            let position = self.record(CheckpointId(u64::MAX), source, false)?;
            let c = self.checkpointing.as_mut().expect("checked above");
            if let Some(backend) = c.backend.take() {
                let _ = backend.close().await;
            }
            let finished = TaskReport::Finished {
                vertex: self.vertex,
                subtask: SubtaskIndex(self.subtask),
                position,
                last_barrier: c.last_barrier,
            };
            let _ = c.reports.send(finished);
        }
        Ok(())
    }

    /// Opens the task's keyed state (restoring it when the job starts from a checkpoint), checks
    /// every operator can be checkpointed, and restores operator state and the source position.
    async fn enable_checkpoints(
        &mut self,
        job: &LocalJob,
        setup: &CheckpointSetup,
        vertex: &JobVertex,
        triggers: Option<UnboundedReceiver<CheckpointId>>,
        reports: UnboundedSender<TaskReport>,
        completed: watch::Receiver<Option<CheckpointId>>,
    ) -> TaskResult<()> {
        for (op, node) in self.chain.iter_mut().zip(&self.chain_nodes) {
            op.track_changes();
            op.checkpointable().map_err(|why| {
                TaskError::Unsupported(format!(
                    "checkpointing is on (execution.checkpointing.interval) but {why} (operator {node}: {})",
                    job.plan.nodes[*node].op.name()
                ))
            })?;
        }
        let key_groups = key_group_range_for_subtask(job.plan.max_parallelism, vertex.parallelism, self.subtask);
        let restore = setup.restore.as_ref();
        let backend = if self.chain.iter().any(|op| op.keeps_keyed_state()) {
            let id = SubtaskStateId {
                job: setup.job.clone(),
                vertex: self.vertex,
                subtask: SubtaskIndex(self.subtask),
                attempt: setup.attempt,
            };
            let options = StateOptions {
                max_parallelism: job.plan.max_parallelism,
                // Operators keep their working set themselves: write-back is all this is for.
                working_set_capacity: 0,
                ..StateOptions::default()
            };
            let handles = restore.map(|r| r.handles_of(self.vertex)).unwrap_or_default();
            Some(KeyedStateBackend::restore(&setup.location, id, key_groups, options, &handles).await?)
        } else {
            None
        };
        if let Some(restore) = restore {
            let mut records: Vec<_> = restore.source_positions.iter().filter(|p| p.vertex == self.vertex).collect();
            records.sort_by_key(|r| r.subtask);
            // Old subtask k's operator state goes to new subtask k mod parallelism: one owner each.
            let mine: Vec<&serde_json::Value> = records
                .iter()
                .filter(|r| r.subtask.0 % vertex.parallelism == self.subtask)
                .map(|r| &r.position)
                .collect();
            let same = records.len() as u32 == vertex.parallelism;
            let in_flight: Vec<&str> =
                mine.iter().filter_map(|r| r.get("in_flight").and_then(serde_json::Value::as_str)).collect();
            if !in_flight.is_empty() && !same {
                return Err(TaskError::Unsupported(format!(
                    "the checkpoint is unaligned and holds rows in flight at parallelism {}; restore it at that \
                     parallelism (or take an aligned checkpoint or a savepoint to rescale)",
                    records.len()
                )));
            }
            for path in in_flight {
                self.replay.extend(decode_in_flight(&setup.location.read(path).await?, path)?);
            }
            if let Some(source) = self.source.as_mut() {
                let position = if same {
                    mine.first().and_then(|p| p.get("source")).cloned()
                } else {
                    connectors::merge_positions(records.iter().filter_map(|r| r.position.get("source")))?
                };
                if let Some(position) = position {
                    source.seek(&position)?;
                }
            }
            for (op, node) in self.chain.iter_mut().zip(&self.chain_nodes) {
                let mut state = RestoredState::default();
                for record in &mine {
                    if let Some(s) = record.get("operators").and_then(|o| o.get(node.to_string())) {
                        state.operator_states.push(s.clone());
                    }
                }
                if let Some(backend) = &backend {
                    for (state_id, kg, key, value) in
                        weir_state_store::scan::operator_values(backend, OperatorId(*node as u32)).await?
                    {
                        state.keyed.entry(state_id).or_default().push((kg, key, value));
                    }
                }
                op.restore(state)?;
            }
        }
        self.checkpointing = Some(TaskCheckpointing {
            reports,
            completed: Some(completed),
            triggers,
            backend,
            last_barrier: None,
            unaligned: setup.config.unaligned,
            location: setup.location.clone(),
            job: setup.job.0.clone(),
            unaligned_part: None,
        });
        Ok(())
    }

    /// What the task records besides keyed state: its source's position and its operators'
    /// per-subtask state. With `keyed`, operators also write their keyed state to the backend.
    fn record(
        &mut self,
        id: CheckpointId,
        source: Option<serde_json::Value>,
        keyed: bool,
    ) -> TaskResult<serde_json::Value> {
        let mut operators = serde_json::Map::new();
        let mut backend = self.checkpointing.as_mut().and_then(|c| c.backend.as_mut()).filter(|_| keyed);
        for (op, node) in self.chain.iter_mut().zip(&self.chain_nodes) {
            let mut ctx = SnapshotContext {
                checkpoint: id,
                backend: backend.as_deref_mut(),
                operator: OperatorId(*node as u32),
                operator_state: None,
                memory: None,
            };
            op.snapshot(&mut ctx)?;
            if let Some(state) = ctx.operator_state {
                operators.insert(node.to_string(), state);
            }
        }
        let mut record = serde_json::Map::new();
        if let Some(source) = source {
            record.insert("source".into(), source);
        }
        record.insert("operators".into(), serde_json::Value::Object(operators));
        Ok(serde_json::Value::Object(record))
    }

    /// Takes this task's part of checkpoint `id` and passes the barrier on. The keyed state's
    /// upload finishes in the background; the acknowledgement goes when it is stored.
    async fn checkpoint(&mut self, id: CheckpointId, source: Option<serde_json::Value>) -> TaskResult<()> {
        if let Some(part) = self.snapshot_part(id, source).await? {
            self.acknowledge(part, None);
        }
        Ok(())
    }

    /// Snapshots the chain for checkpoint `id` and passes the barrier on; `None` when the
    /// snapshot could not start (the checkpoint is declined).
    async fn snapshot_part(
        &mut self,
        id: CheckpointId,
        source: Option<serde_json::Value>,
    ) -> TaskResult<Option<SnapshotPart>> {
        tracing::debug!(vertex = %self.vertex, subtask = self.subtask, checkpoint = %id, "snapshot");
        let position = self.record(id, source, true)?;
        let c = self.checkpointing.as_mut().expect("checkpoints are only taken when enabled");
        let pending = match c.backend.as_mut() {
            Some(backend) => match backend.snapshot(id).await {
                Ok(pending) => Some(pending),
                Err(e) => {
                    let failure = TaskError::from(e).failure();
                    let _ = c.reports.send(TaskReport::Decline { checkpoint: id, failure });
                    None
                }
            },
            None => None,
        };
        c.last_barrier = Some(id);
        let declined = c.backend.is_some() && pending.is_none();
        for output in &mut self.outputs {
            output.barrier(id).await?;
        }
        Ok((!declined).then_some(SnapshotPart { id, position, pending }))
    }

    /// Acknowledges a checkpoint part once its keyed state (and the in-flight rows of an
    /// unaligned checkpoint, stored beside the checkpoints) is stored.
    fn acknowledge(&self, part: SnapshotPart, in_flight: Option<Vec<u8>>) {
        let c = self.checkpointing.as_ref().expect("checkpoints are only taken when enabled");
        let (vertex, subtask) = (self.vertex, SubtaskIndex(self.subtask));
        let reports = c.reports.clone();
        let SnapshotPart { id, mut position, pending } = part;
        let target = in_flight.filter(|b| !b.is_empty()).map(|bytes| {
            let store = CheckpointStore::new(c.location.clone(), JobId(c.job.clone()), 1);
            let path = store.in_flight_path(id, &format!("{vertex}-{}", subtask.0));
            (c.location.clone(), path, bytes)
        });
        tokio::spawn(async move {
            let mut failure = None;
            if let Some((location, path, bytes)) = target {
                match location.write(&path, bytes).await {
                    Ok(()) => {
                        if let Some(record) = position.as_object_mut() {
                            record.insert("in_flight".into(), serde_json::Value::String(path.to_string()));
                        }
                    }
                    Err(e) => {
                        let message = format!("its in-flight rows could not be stored at {path}: {e}");
                        failure = Some(Failure { message, ..TaskError::from(e).failure() })
                    }
                }
            }
            let report = match (failure, pending) {
                (Some(failure), _) => TaskReport::Decline { checkpoint: id, failure },
                (None, None) => TaskReport::Ack { checkpoint: id, vertex, subtask, handle: None, position },
                (None, Some(pending)) => match pending.wait().await {
                    Ok(handle) => TaskReport::Ack { checkpoint: id, vertex, subtask, handle: Some(handle), position },
                    Err(e) => TaskReport::Decline { checkpoint: id, failure: TaskError::from(e).failure() },
                },
            };
            let _ = reports.send(report);
        });
    }

    fn checkpoint_complete(&mut self, id: CheckpointId) -> TaskResult<()> {
        for op in &mut self.chain {
            op.checkpoint_complete(id)?;
        }
        Ok(())
    }

    /// The next input event, or a completed checkpoint to announce to the chain.
    async fn next_input(&mut self, gate: &mut dyn InputGate) -> TaskResult<Input> {
        let as_input = |next: Option<(usize, StreamEvent)>| match next {
            Some((channel, event)) => Input::Event(channel, event),
            None => Input::End,
        };
        loop {
            let Some(completed) = self.checkpointing.as_mut().and_then(|c| c.completed.as_mut()) else {
                return Ok(as_input(gate.next().await?));
            };
            let woke = tokio::select! {
                biased;
                changed = completed.changed() => Woke::Completed(changed.is_ok()),
                next = gate.next() => Woke::Input(next),
            };
            match woke {
                Woke::Input(next) => return Ok(as_input(next?)),
                Woke::Completed(true) => {
                    if let Some(id) = *completed.borrow_and_update() {
                        return Ok(Input::Completed(id));
                    }
                }
                // The coordinator is gone: only input is left to wait for.
                Woke::Completed(false) => self.checkpointing.as_mut().expect("enabled").completed = None,
            }
        }
    }
}

enum Woke {
    Completed(bool),
    Input(Result<Option<(usize, StreamEvent)>, weir_shuffle_service::ShuffleError>),
}

enum Input {
    Event(usize, StreamEvent),
    Completed(CheckpointId),
    End,
}

enum Item {
    Batch(usize, ChangeBatch),
    Watermark(Timestamp),
}

fn drive(chain: &mut [Box<dyn Operator>], item: Item, sink: &mut Vec<Emitted>) -> TaskResult<()> {
    let Some((head, rest)) = chain.split_first_mut() else {
        sink.push(match item {
            Item::Batch(_, b) => Emitted::Batch(b),
            Item::Watermark(w) => Emitted::Watermark(w),
        });
        return Ok(());
    };
    let mut out = Output::default();
    match item {
        Item::Batch(input, batch) => head.process(input, batch, &mut out)?,
        Item::Watermark(w) => head.on_watermark(w, &mut out)?,
    }
    for e in out.items {
        let next = match e {
            Emitted::Batch(b) => Item::Batch(0, b),
            Emitted::Watermark(w) => Item::Watermark(w),
        };
        drive(rest, next, sink)?;
    }
    Ok(())
}

fn finish_chain(chain: &mut [Box<dyn Operator>], sink: &mut Vec<Emitted>) -> TaskResult<()> {
    for i in 0..chain.len() {
        let mut out = Output::default();
        chain[i].finish(&mut out)?;
        for e in out.items {
            let next = match e {
                Emitted::Batch(b) => Item::Batch(0, b),
                Emitted::Watermark(w) => Item::Watermark(w),
            };
            drive(&mut chain[i + 1..], next, sink)?;
        }
    }
    Ok(())
}

/// One outgoing edge of a task: its partitioner and its partition writer.
struct OutputEdge {
    writer: Box<dyn PartitionWriter>,
    partitioning: Partitioning,
    subtask: u32,
    next_round_robin: u32,
    max_parallelism: u32,
    hasher: Option<RowConverter>,
}

impl OutputEdge {
    fn new(
        edge: &JobEdge,
        writer: Box<dyn PartitionWriter>,
        subtask: u32,
        plan: &StreamPlan,
        vertex: &JobVertex,
    ) -> TaskResult<Self> {
        let tail = &plan.nodes[*vertex.chain.last().expect("a vertex has nodes")];
        let hasher = match &edge.partitioning {
            Partitioning::Hash(cols) => Some(RowConverter::new(
                cols.iter().map(|c| SortField::new(tail.schema.field(*c).data_type().clone())).collect(),
            )?),
            _ => None,
        };
        Ok(OutputEdge {
            writer,
            partitioning: edge.partitioning.clone(),
            subtask,
            next_round_robin: subtask,
            max_parallelism: plan.max_parallelism,
            hasher,
        })
    }

    async fn send(&mut self, item: &Emitted) -> TaskResult<()> {
        let n = self.writer.num_subpartitions();
        match item {
            Emitted::Watermark(w) => {
                for s in 0..n {
                    self.writer.send(s, StreamEvent::Watermark(*w)).await?;
                }
            }
            Emitted::Batch(batch) => match &self.partitioning {
                Partitioning::Forward => self.writer.send(self.subtask % n, StreamEvent::Data(batch.clone())).await?,
                Partitioning::Global => self.writer.send(0, StreamEvent::Data(batch.clone())).await?,
                Partitioning::Rebalance => {
                    let target = self.next_round_robin % n;
                    self.next_round_robin = self.next_round_robin.wrapping_add(1);
                    self.writer.send(target, StreamEvent::Data(batch.clone())).await?;
                }
                Partitioning::Broadcast => {
                    for s in 0..n {
                        self.writer.send(s, StreamEvent::Data(batch.clone())).await?;
                    }
                }
                Partitioning::Hash(cols) => {
                    if n == 1 {
                        return Ok(self.writer.send(0, StreamEvent::Data(batch.clone())).await?);
                    }
                    let columns: Vec<ArrayRef> = cols.iter().map(|c| batch.data.column(*c).clone()).collect();
                    let rows =
                        self.hasher.as_ref().expect("hash edges have a row converter").convert_columns(&columns)?;
                    let mut targets: Vec<Vec<u32>> = vec![Vec::new(); n as usize];
                    for (r, row) in rows.iter().enumerate() {
                        let group = key_group_for_hash(stable_hash(row.as_ref()), self.max_parallelism);
                        targets[operator_index_for_key_group(group, self.max_parallelism, n) as usize].push(r as u32);
                    }
                    for (s, rows) in targets.into_iter().enumerate() {
                        if rows.is_empty() {
                            continue;
                        }
                        let part = if rows.len() == batch.num_rows() {
                            batch.clone()
                        } else {
                            batch.take(&UInt32Array::from(rows))?
                        };
                        self.writer.send(s as u32, StreamEvent::Data(part)).await?;
                    }
                }
            },
        }
        Ok(())
    }

    async fn barrier(&mut self, id: CheckpointId) -> TaskResult<()> {
        for s in 0..self.writer.num_subpartitions() {
            self.writer.send(s, StreamEvent::Barrier(id)).await?;
        }
        Ok(())
    }

    async fn idle(&mut self) -> TaskResult<()> {
        for s in 0..self.writer.num_subpartitions() {
            self.writer.send(s, StreamEvent::Idle).await?;
        }
        Ok(())
    }

    async fn end(&mut self) -> TaskResult<()> {
        for s in 0..self.writer.num_subpartitions() {
            self.writer.send(s, StreamEvent::EndOfPartition).await?;
        }
        Ok(())
    }
}

/// The rows of an unaligned checkpoint in flight: `[input u32][length u32][frame]`, little
/// endian, each frame the shuffle wire format (checksummed).
fn encode_in_flight(rows: &[(usize, ChangeBatch)]) -> TaskResult<Vec<u8>> {
    let mut out = Vec::new();
    let mut frame = Vec::new();
    for (input, batch) in rows {
        frame.clear();
        weir_shuffle_service::wire::encode(&StreamEvent::Data(batch.clone()), &mut frame)
            .map_err(|e| TaskError::Checkpoint(format!("cannot encode in-flight rows: {e}")))?;
        out.extend_from_slice(&(*input as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    Ok(out)
}

fn decode_in_flight(bytes: &[u8], path: &str) -> TaskResult<Vec<(usize, ChangeBatch)>> {
    let corrupt = |why: &str| TaskError::Checkpoint(format!("in-flight rows at {path} are corrupt: {why}"));
    let mut rows = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (head, tail) = rest.split_at_checked(8).ok_or_else(|| corrupt("truncated header"))?;
        let input = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let len = u32::from_le_bytes(head[4..].try_into().expect("4 bytes")) as usize;
        let (frame, tail) = tail.split_at_checked(len).ok_or_else(|| corrupt("truncated frame"))?;
        match weir_shuffle_service::wire::decode(frame).map_err(|e| corrupt(&e.to_string()))? {
            StreamEvent::Data(batch) => rows.push((input, batch)),
            _ => return Err(corrupt("a frame that is not rows")),
        }
        rest = tail;
    }
    Ok(rows)
}
