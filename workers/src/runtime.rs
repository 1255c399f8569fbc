//! The task runtime: deploys a job graph's subtasks as async tasks of one process, wires their
//! inputs and outputs through a [`ShuffleService`], and runs each task's loop — read an event,
//! push it through the chain, route what comes out to the output partitions.
//!
//! A task's watermark is the minimum over its input channels; an idle channel does not hold it
//! back and an ended channel counts as the maximal watermark, so a bounded source that is done
//! never stalls event time downstream.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{ArrayRef, UInt32Array};
use arrow_row::{RowConverter, SortField};
use tokio::sync::mpsc::UnboundedSender;
use weir_dataflow::event::{ChangeBatch, MAX_WATERMARK, MIN_WATERMARK, StreamEvent, Timestamp};
use weir_dataflow::graph::{JobEdge, JobGraph, JobVertex};
use weir_dataflow::ids::{ChannelId, PartitionId, SubtaskIndex};
use weir_dataflow::keygroup::{key_group_for_hash, operator_index_for_key_group, stable_hash};
use weir_dataflow::plan::{OperatorSpec, Partitioning, StreamPlan};
use weir_shuffle_service::{GateId, InputGate, PartitionWriter, ShuffleService};

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
}

/// Runs every subtask of the job to completion; the first failure cancels the rest.
pub async fn run_local(job: LocalJob) -> TaskResult<()> {
    let mut gates: Vec<Vec<Option<GateInput>>> = Vec::new();
    // Gates first: the partitions that feed them look their channels up.
    for vertex in &job.graph.vertices {
        let mut per_subtask = Vec::new();
        for s in 0..vertex.parallelism {
            if vertex.inputs.is_empty() {
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
            let gate = job.shuffle.open_gate(GateId { vertex: vertex.id, subtask: SubtaskIndex(s) }, channels).await?;
            per_subtask.push(Some((gate, input_of_channel)));
        }
        gates.push(per_subtask);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (v, vertex) in job.graph.vertices.iter().enumerate() {
        for s in 0..vertex.parallelism {
            let mut outputs = Vec::with_capacity(vertex.outputs.len());
            for &e in &vertex.outputs {
                let edge = &job.graph.edges[e];
                let consumers = job.graph.vertex(edge.target).parallelism;
                let writer = job
                    .shuffle
                    .create_partition(
                        PartitionId { edge: e as u32, producer: SubtaskIndex(s) },
                        consumers,
                        weir_shuffle_service::PartitionKind::Pipelined,
                    )
                    .await?;
                outputs.push(OutputEdge::new(edge, writer, s, &job.plan, vertex)?);
            }
            let task = Task::build(&job, vertex, s, outputs)?;
            let input = gates[v][s as usize].take();
            tasks.spawn(task.run(input));
        }
    }
    let mut first_error = None;
    while let Some(result) = tasks.join_next().await {
        let outcome = match result {
            Ok(r) => r,
            Err(join) => Err(TaskError::Unsupported(format!("a task panicked: {join}"))),
        };
        if let Err(e) = outcome
            && first_error.is_none()
        {
            first_error = Some(e);
            tasks.abort_all();
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

struct Task {
    source: Option<Box<dyn Source>>,
    chain: Vec<Box<dyn Operator>>,
    outputs: Vec<OutputEdge>,
    counters: Arc<JobCounters>,
    watermark: Timestamp,
    /// This task has told its consumers it is idle (and has sent nothing since).
    idle: bool,
    idle_timeout: Option<std::time::Duration>,
}

impl Task {
    fn build(job: &LocalJob, vertex: &JobVertex, subtask: u32, outputs: Vec<OutputEdge>) -> TaskResult<Task> {
        let mut source = None;
        let mut chain: Vec<Box<dyn Operator>> = Vec::new();
        for (i, &node_id) in vertex.chain.iter().enumerate() {
            let node = &job.plan.nodes[node_id];
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
        Ok(Task {
            source,
            chain,
            outputs,
            counters: job.counters.clone(),
            watermark: MIN_WATERMARK,
            idle: false,
            idle_timeout,
        })
    }

    async fn run(mut self, input: Option<GateInput>) -> TaskResult<()> {
        if let Some(mut source) = self.source.take() {
            let started = tokio::time::Instant::now();
            loop {
                if let Some(due) = source.next_due() {
                    let wake = started + due;
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
                tokio::task::yield_now().await;
            }
        } else if let Some((mut gate, input_of_channel)) = input {
            let channels = input_of_channel.len();
            let mut marks = vec![MIN_WATERMARK; channels];
            let mut idle = vec![false; channels];
            while let Some((channel, event)) = gate.next().await? {
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
                    }
                    StreamEvent::Barrier(_) => {}
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
        let mut emitted = Vec::new();
        drive(&mut self.chain, item, &mut emitted)?;
        for e in emitted {
            for output in &mut self.outputs {
                output.send(&e).await?;
            }
        }
        Ok(())
    }

    async fn finish(mut self) -> TaskResult<()> {
        let mut emitted = Vec::new();
        finish_chain(&mut self.chain, &mut emitted)?;
        for e in &emitted {
            for output in &mut self.outputs {
                output.send(e).await?;
            }
        }
        let late: u64 = self.chain.iter().map(|op| op.metrics().late_records_dropped).sum();
        self.counters.late_records_dropped.fetch_add(late, Ordering::Relaxed);
        for output in &mut self.outputs {
            output.end().await?;
        }
        Ok(())
    }
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
