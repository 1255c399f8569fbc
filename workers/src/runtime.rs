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
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::sync::watch;
use weir_dataflow::event::{ChangeBatch, MAX_WATERMARK, MIN_WATERMARK, StreamEvent, Timestamp};
use weir_dataflow::graph::{JobEdge, JobGraph, JobVertex};
use weir_dataflow::ids::{ChannelId, CheckpointId, PartitionId, SubtaskIndex, VertexId};
use weir_dataflow::keygroup::{
    key_group_for_hash, key_group_range_for_subtask, operator_index_for_key_group, stable_hash,
};
use weir_dataflow::plan::{OperatorSpec, Partitioning, StreamPlan};
use weir_shuffle_service::{GateId, InputGate, PartitionWriter, ShuffleService};

use weir_state_store::{KeyedStateBackend, OperatorId, StateOptions, SubtaskStateId};

use crate::checkpoint::align::{AlignStep, BarrierAligner};
use crate::checkpoint::coordinator::Coordinator;
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
    let (reports, report_queue) = mpsc::unbounded_channel();
    let (completed, completed_watch) = watch::channel(None);
    let mut triggers = Vec::new();
    let mut task_keys = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for (v, vertex) in job.graph.vertices.iter().enumerate() {
        for s in 0..vertex.parallelism {
            task_keys.push((vertex.id, SubtaskIndex(s)));
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
            let mut task = Task::build(&job, vertex, s, outputs)?;
            if let Some(setup) = &job.checkpointing {
                let trigger = if vertex.inputs.is_empty() {
                    let (send, receive) = mpsc::unbounded_channel();
                    triggers.push(send);
                    Some(receive)
                } else {
                    None
                };
                task.enable_checkpoints(&job, setup, vertex, trigger, reports.clone(), completed_watch.clone()).await?;
            }
            let input = gates[v][s as usize].take();
            tasks.spawn(task.run(input));
        }
    }
    drop(reports);
    let coordinator = match job.checkpointing.clone() {
        Some(setup) => {
            let coordinator = Coordinator::new(setup, task_keys, triggers, report_queue, completed).await?;
            Some(tokio::spawn(coordinator.run()))
        }
        None => None,
    };
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
    if let Some(e) = first_error {
        if let Some(c) = coordinator {
            c.abort();
        }
        return Err(e);
    }
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
    watermark: Timestamp,
    /// This task has told its consumers it is idle (and has sent nothing since).
    idle: bool,
    idle_timeout: Option<std::time::Duration>,
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
        Ok(Task {
            vertex: vertex.id,
            subtask,
            source,
            chain,
            chain_nodes,
            checkpointing: None,
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
            // Events of channels held back by an alignment, and released ones to handle first.
            let mut held: Vec<std::collections::VecDeque<StreamEvent>> = vec![Default::default(); channels];
            let mut released: std::collections::VecDeque<(usize, StreamEvent)> = Default::default();
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
                if aligner.is_blocked(channel) {
                    held[channel].push_back(event);
                    continue;
                }
                let mut steps = Vec::new();
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
                    }
                    StreamEvent::Barrier(id) => steps = aligner.on_barrier(channel, id),
                }
                let aligning = !steps.is_empty() || aligner.is_blocked(channel);
                for step in steps {
                    match step {
                        AlignStep::Complete(id) => self.checkpoint(id, None).await?,
                        AlignStep::Abandoned(id) => {
                            if let Some(c) = &self.checkpointing {
                                let reason = "a newer checkpoint's barrier overtook it".to_string();
                                let _ = c.reports.send(TaskReport::Decline { checkpoint: id, reason });
                            }
                        }
                    }
                    for (c, events) in held.iter_mut().enumerate() {
                        released.extend(events.drain(..).map(|e| (c, e)));
                    }
                }
                if aligning {
                    // A channel that has delivered the barrier being aligned stops getting credit,
                    // so what its producer sends meanwhile waits there, not in this task's memory.
                    for c in 0..channels {
                        if aligner.is_blocked(c) {
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
            let records: Vec<_> = restore.source_positions.iter().filter(|p| p.vertex == self.vertex).collect();
            // Old subtask k's operator state goes to new subtask k mod parallelism: one owner each.
            let mine: Vec<&serde_json::Value> = records
                .iter()
                .filter(|r| r.subtask.0 % vertex.parallelism == self.subtask)
                .map(|r| &r.position)
                .collect();
            if let Some(source) = self.source.as_mut() {
                let same = records.len() as u32 == vertex.parallelism;
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
        self.checkpointing =
            Some(TaskCheckpointing { reports, completed: Some(completed), triggers, backend, last_barrier: None });
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
        tracing::debug!(vertex = %self.vertex, subtask = self.subtask, checkpoint = %id, "snapshot");
        let position = self.record(id, source, true)?;
        let c = self.checkpointing.as_mut().expect("checkpoints are only taken when enabled");
        let pending = match c.backend.as_mut() {
            Some(backend) => match backend.snapshot(id).await {
                Ok(pending) => Some(pending),
                Err(e) => {
                    let _ = c.reports.send(TaskReport::Decline { checkpoint: id, reason: e.to_string() });
                    None
                }
            },
            None => None,
        };
        c.last_barrier = Some(id);
        let (reports, has_state) = (c.reports.clone(), c.backend.is_some());
        for output in &mut self.outputs {
            output.barrier(id).await?;
        }
        let (vertex, subtask) = (self.vertex, SubtaskIndex(self.subtask));
        if has_state && pending.is_none() {
            return Ok(());
        }
        tokio::spawn(async move {
            let report = match pending {
                None => TaskReport::Ack { checkpoint: id, vertex, subtask, handle: None, position },
                Some(pending) => match pending.wait().await {
                    Ok(handle) => TaskReport::Ack { checkpoint: id, vertex, subtask, handle: Some(handle), position },
                    Err(e) => TaskReport::Decline { checkpoint: id, reason: e.to_string() },
                },
            };
            let _ = reports.send(report);
        });
        Ok(())
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
