//! Deployment: how the regions of a job's graph come to run. The driver asks for every region
//! that may start ([`RegionSchedule::start_ready`]); a region's input gates open first (pipelined
//! partitions look their consumers' channels up), then each subtask's output partitions are
//! created and its task spawned. When a region finishes, the retained partitions it read are
//! released.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc::{self, UnboundedSender};
use tokio::sync::watch;
use tokio::task::JoinSet;
use weir_dataflow::graph::{ExchangeMode, PipelinedRegion, RegionSchedule};
use weir_dataflow::ids::{ChannelId, CheckpointId, PartitionId, SubtaskIndex, VertexId};
use weir_shuffle_service::{GateId, PartitionKind, PartitionWriter, ShuffleError};

use super::driver::LocalJob;
use super::edges::OutputEdge;
use super::task::{GateInput, Task};
use crate::checkpoint::TaskReport;
use crate::error::TaskResult;

/// How long a part of a spread job waits for the other parts to open the gates its
/// partitions feed.
const PART_GATES_TIMEOUT: Duration = Duration::from_secs(30);

/// Deploys the regions of one attempt of a local job: gates, partitions and tasks.
pub(super) struct Deployment<'a> {
    /// The job, whose `shuffle` is the attempt's exchange.
    job: &'a LocalJob,
    /// Checkpoint reports, while tasks may still be deployed: the driver takes it when the
    /// coordinator starts, so the coordinator sees the queue close when every task has ended.
    pub(super) reports: Option<UnboundedSender<TaskReport>>,
    /// Checkpoints completed, as the coordinator announces them.
    pub(super) completed: watch::Receiver<Option<CheckpointId>>,
    /// Where each source subtask's checkpoints are triggered.
    pub(super) triggers: Vec<UnboundedSender<CheckpointId>>,
    /// Every subtask deployed, for the coordinator to wait for.
    pub(super) task_keys: Vec<(VertexId, SubtaskIndex)>,
    /// Running tasks, each with the region it belongs to.
    pub(super) tasks: JoinSet<(usize, TaskResult<()>)>,
    /// Tasks still running per region.
    running: Vec<usize>,
}

impl<'a> Deployment<'a> {
    pub(super) fn new(
        job: &'a LocalJob,
        reports: UnboundedSender<TaskReport>,
        completed: watch::Receiver<Option<CheckpointId>>,
    ) -> Self {
        Deployment {
            job,
            reports: Some(reports),
            completed,
            triggers: Vec::new(),
            task_keys: Vec::new(),
            tasks: JoinSet::new(),
            running: vec![0; job.graph.vertices.len()],
        }
    }

    /// A task of `region` has finished: whether it was the region's last.
    pub(super) fn task_finished(&mut self, region: usize) -> bool {
        self.running[region] -= 1;
        self.running[region] == 0
    }

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
            match self.job.shuffle.create_partition(partition, consumers, kind).await {
                Err(ShuffleError::UnknownChannel(_))
                    if self.job.part.is_some() && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                result => return Ok(result?),
            }
        }
    }

    /// Starts every region that may start now.
    pub(super) async fn start_ready(&mut self, schedule: &mut RegionSchedule) -> TaskResult<()> {
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
                    job.shuffle.open_gate(GateId { vertex: vertex.id, subtask: SubtaskIndex(s) }, channels).await?;
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
pub(super) async fn release_consumed(job: &LocalJob, region: &PipelinedRegion) {
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
        && let Err(e) = job.shuffle.release_partitions(partitions).await
    {
        // Only space is at stake; the job's end releases everything again.
        tracing::warn!(error = %e, "could not release consumed partitions");
    }
}
