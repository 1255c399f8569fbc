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

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use std::sync::Arc;
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
            let generator = nexmark::NexmarkGenerator::new(config, subtask as u64, parallelism as u64);
            Ok(Box::new(NexmarkSource { generator, projection, schema }))
        }
        other => Err(TaskError::Config(format!("connector '{other}' cannot be read (table '{}')", spec.table))),
    }
}

struct NexmarkSource {
    generator: nexmark::NexmarkGenerator,
    projection: nexmark::NexmarkProjection,
    schema: SchemaRef,
}

impl Source for NexmarkSource {
    fn next_batch(&mut self) -> TaskResult<Option<RecordBatch>> {
        let Some(batch) = self.generator.next_batch(BATCH_ROWS, &self.projection) else {
            return Ok(None);
        };
        // The generator's schema equals the planned one field for field; adopt the planner's
        // so downstream schema checks see exactly what they expect.
        Ok(Some(RecordBatch::try_new(self.schema.clone(), batch.columns().to_vec())?))
    }
}

/// Creates the sink operator at the end of a chain.
pub fn create_sink(
    spec: &SinkSpec,
    node: &PlanNode,
    subtask: u32,
    collect: Option<UnboundedSender<ChangeBatch>>,
    counters: Arc<JobCounters>,
) -> TaskResult<Box<dyn Operator>> {
    match spec {
        SinkSpec::Collect => {
            let sender = collect.ok_or_else(|| TaskError::Config("this job has no client to collect rows".into()))?;
            Ok(Box::new(sinks::CollectSink::new(sender, counters)))
        }
        SinkSpec::Table { table, connector, options } => match connector.as_str() {
            "blackhole" => Ok(Box::new(sinks::BlackholeSink::new(counters))),
            "print" => Ok(Box::new(sinks::PrintSink::new(options, subtask, node.parallelism, counters))),
            "filesystem" => Ok(Box::new(sinks::FileSink::try_new(table, options, node, subtask, counters)?)),
            other => Err(TaskError::Config(format!("connector '{other}' cannot be written (table '{table}')"))),
        },
    }
}
