//! A task: one subtask of a vertex, run as an async task. Its loop reads an event — from its
//! source, or from its input gate's channels — pushes it through the operator chain, and sends
//! what comes out of the chain's tail through its output edges. Its checkpoint side (barriers,
//! snapshots, restore) is in [`checkpoints`].
//!
//! A task's watermark is the minimum over its input channels; an idle channel does not hold it
//! back and an ended channel counts as the maximal watermark, so a bounded source that is done
//! never stalls event time downstream. A source with nothing to emit for its idle timeout says
//! so downstream; a task whose open inputs are all idle is idle too.

mod checkpoints;
mod stores;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use weir_dataflow::event::{ChangeBatch, MAX_WATERMARK, MIN_WATERMARK, StreamEvent, Timestamp};
use weir_dataflow::graph::JobVertex;
use weir_dataflow::ids::{CheckpointId, SubtaskIndex, VertexId};
use weir_dataflow::plan::OperatorSpec;
use weir_dataflow::wire::{ErrorCode, Failure};
use weir_shuffle_service::{InputGate, ShuffleError};

use futures::future::BoxFuture;

use self::checkpoints::{TaskCheckpointing, encode_in_flight};
use self::stores::ChainStores;
pub use self::stores::{ManagedMemory, TaskMemory, budgeted_tasks};
use super::driver::LocalJob;
use super::edges::OutputEdge;
use super::figures::{JobCounters, TaskFigures};
use crate::checkpoint::TaskReport;
use crate::checkpoint::align::{AlignStep, BarrierAligner};
use crate::connectors::{self, Source};
use crate::error::TaskResult;
use crate::operators::{Emitted, Operator, Output, create_operator, keeps_budgeted_state};

/// A subtask's input gate and, per channel, which input of the head operator it feeds.
pub(super) type GateInput = (Box<dyn InputGate>, Vec<usize>);

pub(super) struct Task {
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
    idle_timeout: Option<Duration>,
    /// Read input 0 to its end before the others (a join's build side first). Only where every
    /// input is retained, so that nothing upstream waits for this task to read.
    first_input_first: bool,
    /// Rows an unaligned checkpoint recorded in flight, to process before any input.
    replay: Vec<(usize, ChangeBatch)>,
    /// Where operators keep keyed state beyond their memory budgets.
    stores: ChainStores,
}

impl Task {
    pub(super) fn build(
        job: &LocalJob,
        vertex: &JobVertex,
        subtask: u32,
        outputs: Vec<OutputEdge>,
    ) -> TaskResult<Task> {
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
                        &job.print,
                        job.counters.clone(),
                    )?);
                }
                _ => chain.push(create_operator(&job.plan, node)?),
            }
        }
        // The task's managed memory is shared evenly by its budgeted operators.
        if let Some(memory) = job.memory {
            let budgeted: Vec<usize> =
                (0..chain.len()).filter(|i| keeps_budgeted_state(&job.plan.nodes[chain_nodes[*i]].op)).collect();
            let share = memory.operators / (budgeted.len().max(1) as u64);
            for i in budgeted {
                chain[i].set_memory_budget(usize::try_from(share).unwrap_or(usize::MAX));
            }
        }
        let stores = ChainStores::new(
            chain_nodes.clone(),
            vertex.id,
            subtask,
            job.plan.max_parallelism,
            job.memory.map(|m| m.memtable),
        );
        let idle_timeout = vertex.chain.first().and_then(|n| match &job.plan.nodes[*n].op {
            OperatorSpec::Source(spec) => spec.idle_timeout,
            _ => None,
        });
        let retained_inputs = vertex.inputs.iter().all(|e| job.graph.edges[*e].mode.is_retained());
        let several_inputs = vertex.inputs.iter().any(|e| job.graph.edges[*e].target_input > 0);
        Ok(Task {
            first_input_first: job.plan.batch && retained_inputs && several_inputs,
            replay: Vec::new(),
            stores,
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

    /// A source task waits until `wake` for its next batch to be due; meanwhile it takes the
    /// checkpoints the coordinator triggers (at the source's position: everything it handed
    /// out has been pushed) and hears of completed ones, so a source with nothing to read
    /// neither stalls checkpoints nor holds back its chain's commits.
    async fn wait_for_source(&mut self, wake: tokio::time::Instant, source: &mut dyn Source) -> TaskResult<()> {
        enum Woken {
            Due,
            Triggered(CheckpointId),
            Completed(CheckpointId),
        }
        loop {
            let checkpointing = self.checkpointing.as_mut();
            let (triggers, completed) = match checkpointing {
                Some(c) => (c.triggers.as_mut(), c.completed.as_mut()),
                None => (None, None),
            };
            let woken = tokio::select! {
                _ = tokio::time::sleep_until(wake) => Woken::Due,
                Some(id) = async { match triggers { Some(t) => t.recv().await, None => None } } => Woken::Triggered(id),
                Some(id) = async {
                    match completed {
                        Some(w) => match w.changed().await {
                            Ok(()) => *w.borrow_and_update(),
                            Err(_) => std::future::pending().await,
                        },
                        None => std::future::pending().await,
                    }
                } => Woken::Completed(id),
            };
            match woken {
                Woken::Due => return Ok(()),
                Woken::Triggered(id) => self.checkpoint(id, Some(source.position())).await?,
                Woken::Completed(id) => self.checkpoint_complete(id)?,
            }
        }
    }

    pub(super) async fn run(mut self, input: Option<GateInput>) -> TaskResult<()> {
        if let Some(mut source) = self.source.take() {
            // Pacing counts from the first row this task emits: a restored source goes on at
            // its rate from where it was, not as if it had been running since the job began.
            let (started, origin) = (tokio::time::Instant::now(), source.next_due().unwrap_or_default());
            loop {
                if let Some(due) = source.next_due() {
                    let wake = started + due.saturating_sub(origin);
                    // With nothing to emit for longer than the idle timeout, say so, so that
                    // downstream watermarks do not wait for this subtask.
                    let waiting = std::time::Instant::now();
                    if let Some(timeout) = self.idle_timeout
                        && wake > tokio::time::Instant::now() + timeout
                    {
                        self.wait_for_source(tokio::time::Instant::now() + timeout, &mut *source).await?;
                        self.send_idle().await?;
                    }
                    self.wait_for_source(wake, &mut *source).await?;
                    self.figures.add_idle(waiting.elapsed());
                }
                let Some(batch) = source.next_batch()? else { break };
                self.figures.set_backlog(source.backlog());
                // A source with nothing to read yet (a directory watched for new files) hands
                // out an empty batch, and says with `next_due` when it looks again.
                if batch.num_rows() > 0 {
                    self.counters.source_rows.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                    self.push(Item::Batch(0, ChangeBatch::inserts(batch))).await?;
                }
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
            let mut held: Vec<VecDeque<StreamEvent>> = vec![Default::default(); channels];
            let mut released: VecDeque<(usize, StreamEvent)> = Default::default();
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
                    None => match self.timed_next_input(gate.as_mut()).await? {
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
        drive(&mut self.chain, &mut self.stores, 0, item, &mut emitted).await?;
        self.send(&emitted).await
    }

    /// Sends what the tail of the chain emitted to every output, counting it.
    async fn send(&mut self, emitted: &[Emitted]) -> TaskResult<()> {
        if emitted.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
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
        finish_chain(&mut self.chain, &mut self.stores, &mut emitted).await?;
        self.stores.close().await;
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

    /// [`Self::next_input`], its wait counted as idle time.
    async fn timed_next_input(&mut self, gate: &mut dyn InputGate) -> TaskResult<Input> {
        let waiting = std::time::Instant::now();
        let next = self.next_input(gate).await;
        self.figures.add_idle(waiting.elapsed());
        next
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
    Input(Result<Option<(usize, StreamEvent)>, ShuffleError>),
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

/// Runs `item` through `chain` (operators `at..` of the task's chain). An operator keeping
/// keyed state beyond memory first gets the stored keys the batch needs, and after the batch
/// writes out what leaves its working set.
fn drive<'a>(
    chain: &'a mut [Box<dyn Operator>],
    stores: &'a mut ChainStores,
    at: usize,
    item: Item,
    sink: &'a mut Vec<Emitted>,
) -> BoxFuture<'a, TaskResult<()>> {
    Box::pin(async move {
        let Some((head, rest)) = chain.split_first_mut() else {
            sink.push(match item {
                Item::Batch(_, b) => Emitted::Batch(b),
                Item::Watermark(w) => Emitted::Watermark(w),
            });
            return Ok(());
        };
        let mut out = Output::default();
        match item {
            Item::Batch(input, batch) => {
                if let Some(spill) = head.spill() {
                    let wanted = spill.wanted(input, &batch)?;
                    if !wanted.is_empty() {
                        let values = stores.store(at).await?.get_many(&wanted).await?;
                        let mut found = Vec::with_capacity(values.len());
                        for (key, value) in wanted.into_iter().zip(values) {
                            if let Some(value) = value {
                                found.push((key, value));
                            }
                        }
                        spill.loaded(found)?;
                    }
                }
                head.process(input, batch, &mut out)?;
                if let Some(spill) = head.spill() {
                    let writes = spill.evict()?;
                    if !writes.is_empty() {
                        stores.store(at).await?.write(writes).await?;
                    }
                }
            }
            Item::Watermark(w) => head.on_watermark(w, &mut out)?,
        }
        for e in out.items {
            let next = match e {
                Emitted::Batch(b) => Item::Batch(0, b),
                Emitted::Watermark(w) => Item::Watermark(w),
            };
            drive(rest, stores, at + 1, next, sink).await?;
        }
        Ok(())
    })
}

async fn finish_chain(
    chain: &mut [Box<dyn Operator>],
    stores: &mut ChainStores,
    sink: &mut Vec<Emitted>,
) -> TaskResult<()> {
    for i in 0..chain.len() {
        let mut out = Output::default();
        chain[i].finish(&mut out)?;
        for e in out.items {
            let next = match e {
                Emitted::Batch(b) => Item::Batch(0, b),
                Emitted::Watermark(w) => Item::Watermark(w),
            };
            drive(&mut chain[i + 1..], stores, i + 1, next, sink).await?;
        }
    }
    Ok(())
}
