//! Streaming operators: what a task runs, chained, over batches of changelog rows.
//!
//! Operators are synchronous and push-based: the task hands each one a batch or a watermark and
//! collects what it emits into an [`Output`], which feeds the next operator of the chain. All
//! CPU work happens on whole Arrow batches; keyed state lives in the operator's working set.

pub mod aggregate;
pub mod calc;
pub mod codec;
pub mod group_agg;
pub mod join;
pub mod keys;
pub mod over;
pub mod rank;
pub mod row_store;
pub mod session_agg;
#[cfg(test)]
mod snapshot_tests;
pub mod union;
pub mod watermark;
pub mod window_agg;
pub mod window_assign;

use std::sync::Arc;

use bytes::Bytes;
use weir_dataflow::clock::SystemClock;
use weir_dataflow::event::{ChangeBatch, Timestamp};
use weir_dataflow::plan::{OperatorSpec, PlanNode, StreamPlan};

use weir_dataflow::ids::CheckpointId;
use weir_state_store::{StoreKey, StoreWrite};

use crate::checkpoint::{RestoredState, SnapshotContext};
use crate::error::{TaskError, TaskResult};

/// One item an operator emits.
#[derive(Debug)]
pub enum Emitted {
    Batch(ChangeBatch),
    Watermark(Timestamp),
}

/// What an operator emitted while handling one input.
#[derive(Debug, Default)]
pub struct Output {
    pub items: Vec<Emitted>,
}

impl Output {
    pub fn batch(&mut self, batch: ChangeBatch) {
        if batch.num_rows() > 0 {
            self.items.push(Emitted::Batch(batch));
        }
    }

    pub fn watermark(&mut self, watermark: Timestamp) {
        self.items.push(Emitted::Watermark(watermark));
    }
}

/// Counters every operator keeps; the task sums them into job metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct OperatorMetrics {
    pub late_records_dropped: u64,
}

pub trait Operator: Send {
    /// Handles a batch arriving on `input` (0 unless the operator has several inputs).
    fn process(&mut self, input: usize, batch: ChangeBatch, out: &mut Output) -> TaskResult<()>;

    /// Event time has reached `watermark` on all inputs. Fire what is due, then forward it.
    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Output) -> TaskResult<()> {
        out.watermark(watermark);
        Ok(())
    }

    /// Input `input` has ended on every channel (others may still be running).
    fn end_input(&mut self, _input: usize) {}

    /// Every input has ended (after the final watermark).
    fn finish(&mut self, _out: &mut Output) -> TaskResult<()> {
        Ok(())
    }

    fn metrics(&self) -> OperatorMetrics {
        OperatorMetrics::default()
    }

    /// Whether this operator can take part in checkpoints; `Err` names what it cannot snapshot
    /// yet, so a job that asks for checkpoints fails at start instead of losing state.
    fn checkpointable(&self) -> Result<(), String>;

    /// Checkpoints are on: keep track of what changes between them (operators whose tracking
    /// costs something do it only then).
    fn track_changes(&mut self) {}

    /// Whether the operator writes keyed state at checkpoints (its task then has a database).
    fn keeps_keyed_state(&self) -> bool {
        false
    }

    /// Writes the operator's state as of now (the task has the barrier from all inputs).
    fn snapshot(&mut self, _ctx: &mut SnapshotContext<'_>) -> TaskResult<()> {
        Ok(())
    }

    /// Takes back the state of a restored checkpoint, before any input.
    fn restore(&mut self, _state: RestoredState) -> TaskResult<()> {
        Ok(())
    }

    /// Checkpoint `id` is complete: what it covers may be published (two-phase commit sinks).
    fn checkpoint_complete(&mut self, _id: CheckpointId) -> TaskResult<()> {
        Ok(())
    }

    /// Keep the keyed state's working set under `bytes`, moving colder keys to the task's
    /// database ([`Spill`]). Answers whether this operator does (the others ignore budgets).
    fn set_memory_budget(&mut self, _bytes: usize) -> bool {
        false
    }

    /// The operator's side of keeping keyed state beyond memory, once it has a budget.
    fn spill(&mut self) -> Option<&mut dyn Spill> {
        None
    }
}

/// Keyed state kept partly in the task's database: the working set in memory stays under the
/// operator's budget, colder keys are written out and read back when a row needs them. The task
/// does the reading and writing (it is async; operators are not) around each batch:
/// [`Spill::wanted`] and [`Spill::loaded`] before `process`, [`Spill::evict`] after it.
pub trait Spill: Send {
    /// The stored keys `batch` on `input` may need: not in memory, and perhaps in the database.
    /// Each key once.
    fn wanted(&mut self, input: usize, batch: &ChangeBatch) -> TaskResult<Vec<StoreKey>>;

    /// What the database held of the keys [`Spill::wanted`] named (keys it did not hold are
    /// left out): into memory, unchanged since stored.
    fn loaded(&mut self, found: Vec<(StoreKey, Bytes)>) -> TaskResult<()>;

    /// Over budget: moves the coldest keys out of memory, answering what to write so the
    /// database has their state (in order: a later change of a key wins). Empty when under.
    fn evict(&mut self) -> TaskResult<Vec<StoreWrite>>;

    /// The task's database holds this operator's state from the checkpoint being restored:
    /// keys are read from there when rows need them, instead of all at once by
    /// [`Operator::restore`] (lazy restore).
    fn restore_lazily(&mut self);
}

/// Whether the operator of `spec` keeps keyed state under a memory budget (the task divides its
/// managed memory among these).
pub fn keeps_budgeted_state(spec: &OperatorSpec) -> bool {
    // A global aggregation (no keys) holds one group: no budget to give it.
    matches!(spec, OperatorSpec::GroupAggregate { final_only: false, keys, .. } if !keys.is_empty())
}

/// For stateless operators' [`Operator::checkpointable`].
pub fn stateless() -> Result<(), String> {
    Ok(())
}

/// Builds the operator for a non-source, non-sink plan node.
pub fn create_operator(plan: &StreamPlan, node: &PlanNode) -> TaskResult<Box<dyn Operator>> {
    let input_schema = |i: usize| plan.nodes[node.inputs[i].node].schema.clone();
    let key_groups =
        |i: usize| keys::RowKeyGroups::new(&input_schema(i), &node.inputs[i].partitioning, plan.max_parallelism);
    Ok(match &node.op {
        OperatorSpec::Calc { filter, exprs } => {
            Box::new(calc::Calc::new(filter.clone(), exprs.clone(), node.schema.clone()))
        }
        OperatorSpec::WatermarkAssigner { expr, rowtime } => {
            Box::new(watermark::WatermarkAssigner::new(expr.clone(), *rowtime))
        }
        OperatorSpec::WindowAssign { window, time_col } => {
            Box::new(window_assign::WindowAssign::new(*window, *time_col, node.schema.clone()))
        }
        OperatorSpec::WindowAggregate { keys, window_end, aggs } => Box::new(window_agg::WindowAggregate::try_new(
            input_schema(0),
            keys.clone(),
            *window_end,
            aggs.clone(),
            node.schema.clone(),
            key_groups(0)?,
        )?),
        OperatorSpec::GroupAggregate { keys, aggs, final_only, state_ttl } => {
            let mut op = group_agg::GroupAggregate::try_new(
                input_schema(0),
                keys.clone(),
                aggs.clone(),
                node.schema.clone(),
                plan.nodes[node.inputs[0].node].changelog == weir_dataflow::plan::ChangelogMode::Retract,
                key_groups(0)?,
            )?;
            op.final_only = *final_only;
            Box::new(op.with_state_ttl(*state_ttl, Arc::new(SystemClock)))
        }
        OperatorSpec::Join { kind, left_keys, right_keys, widths, filter, window_end, interval, state_ttl } => {
            Box::new(
                join::Join::try_new(
                    *kind,
                    input_schema(0),
                    input_schema(1),
                    left_keys.clone(),
                    right_keys.clone(),
                    *widths,
                    filter.clone(),
                    *window_end,
                    *interval,
                    node.schema.clone(),
                )?
                .with_max_parallelism(plan.max_parallelism)
                .with_state_ttl(*state_ttl, Arc::new(SystemClock)),
            )
        }
        OperatorSpec::Rank(spec) => Box::new(rank::Rank::try_new(
            spec.clone(),
            &input_schema(0),
            node.schema.clone(),
            plan.nodes[node.inputs[0].node].changelog == weir_dataflow::plan::ChangelogMode::Append,
            key_groups(0)?,
        )?),
        OperatorSpec::WindowRank { rank, window_end } => Box::new(rank::WindowRank::try_new(
            rank.clone(),
            *window_end,
            &input_schema(0),
            node.schema.clone(),
            key_groups(0)?,
        )?),
        OperatorSpec::OverAggregate { partition, time_col, frame, width, aggs } => {
            Box::new(over::OverAggregate::try_new(
                input_schema(0),
                partition.clone(),
                *time_col,
                *frame,
                *width,
                aggs.clone(),
                node.schema.clone(),
                key_groups(0)?,
            )?)
        }
        OperatorSpec::SessionAggregate { keys, time_col, gap, aggs, output } => {
            Box::new(session_agg::SessionAggregate::try_new(
                input_schema(0),
                keys.clone(),
                *time_col,
                *gap,
                aggs.clone(),
                output.clone(),
                node.schema.clone(),
                key_groups(0)?,
            )?)
        }
        OperatorSpec::Union => Box::new(union::Union),
        OperatorSpec::Source(_) | OperatorSpec::Sink(_) => {
            return Err(TaskError::Unsupported(format!("{} is not a chained operator", node.name())));
        }
    })
}
