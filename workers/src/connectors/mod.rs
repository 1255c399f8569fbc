//! Connectors: where a job's rows come from and where they go.
//!
//! Sources: `filesystem` (a file or a directory of files; json, csv or raw lines), `nexmark`
//! and `datagen` (built-in generators). Sinks: `filesystem`, `print`, `blackhole`, and the
//! collect sink of a bare `SELECT`, which hands rows to the client.

pub mod datagen;
pub mod filesystem;
pub mod format;
pub mod nexmark;
pub mod sinks;
pub mod split;
pub mod util;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use weir_dataflow::event::ChangeBatch;
use weir_dataflow::plan::{PlanNode, SinkSpec, SourceSpec};

use crate::error::{TaskError, TaskResult};
use crate::operators::Operator;
use crate::runtime::JobCounters;

/// Rows per batch a source aims for.
pub const BATCH_ROWS: usize = 8192;

/// One parallel instance of a source: produces batches until its share of the input is done.
pub trait Source: Send {
    /// The next batch, or `None` when this instance has no more input.
    fn next_batch(&mut self) -> TaskResult<Option<RecordBatch>>;

    /// For a source that paces itself (a generator with a rate): how long after the source
    /// started its next batch is due. `None`: as fast as it can.
    fn next_due(&self) -> Option<Duration> {
        None
    }

    /// Records waiting to be read by this instance (an estimate for files: unread bytes over
    /// the bytes per record read so far); `None` when it cannot say (a generator).
    fn backlog(&self) -> Option<u64> {
        None
    }

    /// Where this instance is: restoring it with [`seek`](Self::seek) resumes right after the
    /// last batch [`next_batch`](Self::next_batch) returned.
    fn position(&self) -> serde_json::Value;

    /// Resumes at a position taken by [`position`](Self::position) of the same subtask.
    fn seek(&mut self, position: &serde_json::Value) -> TaskResult<()>;
}

/// Joins the positions of all old subtasks of a source (in subtask order), for a restore at
/// another parallelism: every new subtask seeks the result. Each file is read by one subtask,
/// so file positions join by union; generator positions give a new split layout
/// ([`split::rescale_positions`]).
pub fn merge_positions<'a>(
    positions: impl Iterator<Item = &'a serde_json::Value>,
) -> TaskResult<Option<serde_json::Value>> {
    let positions: Vec<&serde_json::Value> = positions.collect();
    if positions.is_empty() {
        return Ok(None);
    }
    if positions.iter().all(|p| p.get("rows").is_some()) {
        let old = positions.iter().map(|p| split::GeneratorPosition::parse(p)).collect::<TaskResult<Vec<_>>>()?;
        return Ok(Some(split::rescale_positions(&old)?.to_json()));
    }
    let mut merged = filesystem::FilePosition::default();
    for position in positions {
        let file: filesystem::FilePosition = serde_json::from_value(position.clone())
            .map_err(|e| TaskError::Config(format!("not a file source position ({e}): {position}")))?;
        merged.done.extend(file.done);
        merged.partial.extend(file.partial);
    }
    Ok(Some(serde_json::to_value(merged).expect("a file position serializes")))
}

/// Creates subtask `subtask` of `parallelism` of a table source producing `schema`.
pub fn create_source(
    spec: &SourceSpec,
    schema: SchemaRef,
    subtask: u32,
    parallelism: u32,
    counters: Arc<JobCounters>,
) -> TaskResult<Box<dyn Source>> {
    match spec.connector.as_str() {
        "filesystem" => Ok(Box::new(filesystem::FileSource::try_new(spec, schema, subtask, parallelism, counters)?)),
        "nexmark" => {
            let config = nexmark::NexmarkConfig::from_options(&spec.options)
                .map_err(|e| TaskError::Config(format!("table '{}': {e}", spec.table)))?;
            let paths: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
            let projection = nexmark::NexmarkProjection::from_paths(&paths)
                .map_err(|e| TaskError::Config(format!("table '{}': {e}", spec.table)))?;
            let paced = config.rate_limited;
            let base = config.base_time_ms;
            let generator = nexmark::NexmarkGenerator::new(config, subtask as u64, parallelism as u64);
            Ok(Box::new(NexmarkSource { generator, projection, schema, paced, base }))
        }
        "datagen" => {
            let config = datagen::DatagenConfig::from_options(&spec.physical_schema, &spec.options)
                .map_err(|e| TaskError::Config(format!("table '{}': {e}", spec.table)))?;
            let generator = datagen::DatagenGenerator::new(config, subtask as u64, parallelism as u64);
            Ok(Box::new(DatagenSource { generator, projection: spec.projection.clone(), schema }))
        }
        other => Err(TaskError::Config(format!("connector '{other}' cannot be read (table '{}')", spec.table))),
    }
}

struct NexmarkSource {
    generator: nexmark::NexmarkGenerator,
    projection: nexmark::NexmarkProjection,
    schema: SchemaRef,
    /// `rate.limited`: emit events no faster than their event time advances.
    paced: bool,
    base: i64,
}

impl Source for NexmarkSource {
    fn next_due(&self) -> Option<Duration> {
        let ts = self.generator.next_event_timestamp().filter(|_| self.paced)?;
        Some(Duration::from_millis((ts - self.base).max(0) as u64))
    }

    fn next_batch(&mut self) -> TaskResult<Option<RecordBatch>> {
        // A paced source hands out about 10 ms of events at a time.
        let rows = if self.paced {
            (self.generator.config().rate / 100).clamp(1, BATCH_ROWS as u64) as usize
        } else {
            BATCH_ROWS
        };
        let Some(batch) = self.generator.next_batch(rows, &self.projection) else {
            return Ok(None);
        };
        // The generator's schema equals the planned one field for field; adopt the planner's
        // so downstream schema checks see exactly what they expect.
        Ok(Some(RecordBatch::try_new(self.schema.clone(), batch.columns().to_vec())?))
    }

    fn position(&self) -> serde_json::Value {
        split::position_of(&self.generator)
    }

    fn seek(&mut self, position: &serde_json::Value) -> TaskResult<()> {
        split::seek(&mut self.generator, position)
    }
}

/// Flink's `datagen`: always paced at `rows-per-second`.
struct DatagenSource {
    generator: datagen::DatagenGenerator,
    projection: Vec<usize>,
    schema: SchemaRef,
}

impl Source for DatagenSource {
    fn next_due(&self) -> Option<Duration> {
        self.generator.next_row_due_ms().map(Duration::from_millis)
    }

    fn next_batch(&mut self) -> TaskResult<Option<RecordBatch>> {
        let rows = (self.generator.rows_per_second() / 10).clamp(1, BATCH_ROWS as u64) as usize;
        let Some(batch) = self.generator.next_batch(rows) else { return Ok(None) };
        let columns = self.projection.iter().map(|c| batch.column(*c).clone()).collect();
        let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        Ok(Some(RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?))
    }

    fn position(&self) -> serde_json::Value {
        split::position_of(&self.generator)
    }

    fn seek(&mut self, position: &serde_json::Value) -> TaskResult<()> {
        split::seek(&mut self.generator, position)
    }
}

/// Creates the sink operator at the end of a chain.
pub fn create_sink(
    spec: &SinkSpec,
    node: &PlanNode,
    subtask: u32,
    collect: Option<UnboundedSender<ChangeBatch>>,
    exactly_once_attempt: Option<u32>,
    print: &sinks::PrintTo,
    counters: Arc<JobCounters>,
) -> TaskResult<Box<dyn Operator>> {
    match spec {
        SinkSpec::Collect => {
            let sender = collect.ok_or_else(|| TaskError::Config("this job has no client to collect rows".into()))?;
            Ok(Box::new(sinks::CollectSink::new(sender, counters)))
        }
        SinkSpec::Table { table, connector, options } => match connector.as_str() {
            "blackhole" => Ok(Box::new(sinks::BlackholeSink::new(counters))),
            "print" => Ok(Box::new(sinks::PrintSink::new(options, subtask, node.parallelism, print.clone(), counters))),
            "filesystem" => {
                Ok(Box::new(sinks::FileSink::try_new(table, options, node, subtask, exactly_once_attempt, counters)?))
            }
            other => Err(TaskError::Config(format!("connector '{other}' cannot be written (table '{table}')"))),
        },
    }
}
