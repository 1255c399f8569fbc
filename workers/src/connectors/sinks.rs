//! Sinks. A sink is the last operator of its chain: it consumes batches and emits nothing.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc::UnboundedSender;
use weir_dataflow::event::ChangeBatch;
use weir_dataflow::ids::{CheckpointId, JobId};
use weir_dataflow::plan::{ChangelogMode, OperatorSpec, PlanNode, SinkSpec, StreamPlan};
use weir_state_store::CompletedCheckpoint;

use crate::checkpoint::{RestoredState, SnapshotContext};
use crate::error::{TaskError, TaskResult};
use crate::operators::{Operator, Output};
use crate::output::{write_json_format_object, write_plain, write_print_row};
use crate::runtime::JobCounters;

/// Hands a bare `SELECT`'s rows to the client.
pub struct CollectSink {
    sender: UnboundedSender<ChangeBatch>,
    counters: Arc<JobCounters>,
}

impl CollectSink {
    pub fn new(sender: UnboundedSender<ChangeBatch>, counters: Arc<JobCounters>) -> Self {
        CollectSink { sender, counters }
    }
}

impl Operator for CollectSink {
    fn checkpointable(&self) -> Result<(), String> {
        crate::operators::stateless()
    }

    fn process(&mut self, _input: usize, batch: ChangeBatch, _out: &mut Output) -> TaskResult<()> {
        self.counters.output_rows.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        self.sender.send(batch).map_err(|_| TaskError::Cancelled)
    }

    fn on_watermark(&mut self, _watermark: i64, _out: &mut Output) -> TaskResult<()> {
        Ok(())
    }
}

/// Discards everything (Flink's `blackhole`), counting rows.
pub struct BlackholeSink {
    counters: Arc<JobCounters>,
}

impl BlackholeSink {
    pub fn new(counters: Arc<JobCounters>) -> Self {
        BlackholeSink { counters }
    }
}

impl Operator for BlackholeSink {
    fn checkpointable(&self) -> Result<(), String> {
        crate::operators::stateless()
    }

    fn process(&mut self, _input: usize, batch: ChangeBatch, _out: &mut Output) -> TaskResult<()> {
        self.counters.output_rows.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn on_watermark(&mut self, _watermark: i64, _out: &mut Output) -> TaskResult<()> {
        Ok(())
    }
}

/// Where the `print` connector's rows go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PrintTo {
    /// This process's stdout (stderr with `'standard-error' = 'true'`): `weir run` and `weir
    /// standalone`, whose terminal is the user's.
    #[default]
    Terminal,
    /// The job's log: log events of target `weir::job_output` with the job's id, at info level.
    /// A cluster's worker is shared by tenants; its stdout is nobody's.
    JobLog(JobId),
}

/// Flink's `print` connector: `[identifier:][subtask>] +I[…]` lines on stdout (or stderr), or
/// in the job's log on a cluster ([`PrintTo`]).
pub struct PrintSink {
    prefix: String,
    to_stderr: bool,
    to: PrintTo,
    counters: Arc<JobCounters>,
}

impl PrintSink {
    pub fn new(
        options: &BTreeMap<String, String>,
        subtask: u32,
        parallelism: u32,
        to: PrintTo,
        counters: Arc<JobCounters>,
    ) -> Self {
        let mut prefix = String::new();
        if let Some(id) = options.get("print-identifier") {
            prefix.push_str(id);
            prefix.push(':');
        }
        if parallelism > 1 {
            prefix.push_str(&format!("{}> ", subtask + 1));
        } else if !prefix.is_empty() {
            prefix.push(' ');
        }
        let to_stderr = options.get("standard-error").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        PrintSink { prefix, to_stderr, to, counters }
    }
}

impl Operator for PrintSink {
    fn checkpointable(&self) -> Result<(), String> {
        crate::operators::stateless()
    }

    fn process(&mut self, _input: usize, batch: ChangeBatch, _out: &mut Output) -> TaskResult<()> {
        self.counters.output_rows.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        let mut text = String::new();
        for row in 0..batch.num_rows() {
            text.push_str(&self.prefix);
            write_print_row(&mut text, &batch, row);
            text.push('\n');
        }
        let written = match &self.to {
            PrintTo::JobLog(job) => {
                for line in text.lines() {
                    tracing::info!(target: "weir::job_output", job_id = %job, "{line}");
                }
                Ok(())
            }
            PrintTo::Terminal if self.to_stderr => std::io::stderr().lock().write_all(text.as_bytes()),
            PrintTo::Terminal => std::io::stdout().lock().write_all(text.as_bytes()),
        };
        written.map_err(|e| TaskError::Io { path: "stdout".into(), source: e })
    }

    fn on_watermark(&mut self, _watermark: i64, _out: &mut Output) -> TaskResult<()> {
        Ok(())
    }
}

/// The `filesystem` sink: part files under the table's path, json, csv or debezium-json.
///
/// Rows are written as Flink's formats write them (a DECIMAL a JSON number in `json`).
/// `debezium-json` is the one format that carries updates, as in Flink: each row is an object
/// `{"before":…,"after":…,"op":…}`, with `op` `"c"` and the row in `after` for an insert or an
/// update's new row, `"d"` and the row in `before` for a delete or an update's old row.
///
/// Without checkpoints it writes one part file per subtask. With checkpoints it is exactly-once,
/// as Flink's FileSink: rows go to a hidden in-progress file; at a checkpoint that file is closed
/// and becomes pending (hidden too, so readers of the folder never see it); when the checkpoint
/// completes, its pending files are renamed to their final names. After a failure, the restored
/// checkpoint's pending files are published and every other hidden file of the failed attempt is
/// deleted, so each row of the output is there exactly once.
pub struct FileSink {
    dir: PathBuf,
    extension: &'static str,
    subtask: u32,
    parallelism: u32,
    format: FileFormat,
    counters: Arc<JobCounters>,
    names: Vec<String>,
    current: Option<(PathBuf, BufWriter<File>)>,
    /// `Some(attempt)` with checkpoints: part files are named by attempt and committed in two phases.
    attempt: Option<u32>,
    next_part: u64,
    /// Closed files waiting for the checkpoint that covers them: (checkpoint, pending file).
    pending: Vec<(u64, PathBuf)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FileFormat {
    Json,
    Csv,
    DebeziumJson,
}

/// A sink's part of a checkpoint: its pending files, by the checkpoint that closed them.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSinkState {
    pending: Vec<(u64, String)>,
}

/// The final name of a pending part file: the same name, visible.
fn published_name(pending: &Path) -> Option<PathBuf> {
    let name = pending.file_name()?.to_str()?;
    let visible = name.strip_prefix('.')?.strip_suffix(".pending")?;
    Some(pending.with_file_name(visible))
}

/// Publishes a pending part file; publishing one already published does nothing.
fn publish(pending: &Path) -> TaskResult<()> {
    let io = |e| TaskError::Io { path: pending.display().to_string(), source: e };
    let Some(target) = published_name(pending) else {
        return Err(TaskError::Config(format!("not a pending part file: {}", pending.display())));
    };
    match std::fs::rename(pending, &target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && target.exists() => Ok(()),
        Err(e) => Err(io(e)),
    }
}

/// Publishes what finished file sinks hold in the job's last checkpoint: the job is done.
pub fn commit_finished(plan: &StreamPlan, last: &CompletedCheckpoint) -> TaskResult<()> {
    for record in &last.source_positions {
        let Some(operators) = record.position.get("operators").and_then(|o| o.as_object()) else { continue };
        for (node, state) in operators {
            let is_file_sink = node.parse::<usize>().ok().and_then(|n| plan.nodes.get(n)).is_some_and(
                |n| matches!(&n.op, OperatorSpec::Sink(SinkSpec::Table { connector, .. }) if connector == "filesystem"),
            );
            if !is_file_sink {
                continue;
            }
            let state: FileSinkState = serde_json::from_value(state.clone())
                .map_err(|e| TaskError::Config(format!("a file sink's checkpointed state is malformed: {e}")))?;
            for (_, path) in state.pending {
                publish(Path::new(&path))?;
            }
        }
    }
    Ok(())
}

impl FileSink {
    pub fn try_new(
        table: &str,
        options: &BTreeMap<String, String>,
        node: &PlanNode,
        subtask: u32,
        attempt: Option<u32>,
        counters: Arc<JobCounters>,
    ) -> TaskResult<Self> {
        let format = options.get("format").map(String::as_str).unwrap_or("json");
        let (format, extension) = match format {
            "json" => (FileFormat::Json, "json"),
            "csv" => (FileFormat::Csv, "csv"),
            "debezium-json" => (FileFormat::DebeziumJson, "json"),
            other => return Err(TaskError::Config(format!("table '{table}': cannot write format '{other}'"))),
        };
        if node.changelog == ChangelogMode::Retract && format != FileFormat::DebeziumJson {
            return Err(TaskError::Unsupported(format!(
                "table '{table}': the filesystem sink only accepts inserts in this format, but the query produces \
                 updates; use 'format' = 'debezium-json'"
            )));
        }
        let dir = options.get("path").ok_or_else(|| TaskError::Config(format!("table '{table}' has no 'path'")))?;
        let dir = PathBuf::from(dir.strip_prefix("file://").unwrap_or(dir));
        std::fs::create_dir_all(&dir).map_err(|e| TaskError::Io { path: dir.display().to_string(), source: e })?;
        let names = node.schema.fields().iter().map(|f| f.name().clone()).collect();
        let mut sink = FileSink {
            dir,
            extension,
            subtask,
            parallelism: node.parallelism,
            format,
            counters,
            names,
            current: None,
            attempt,
            next_part: 0,
            pending: Vec::new(),
        };
        if attempt.is_none() {
            // One file per subtask, created even when no row arrives, as before checkpoints.
            sink.open()?;
        }
        Ok(sink)
    }

    fn open(&mut self) -> TaskResult<()> {
        let path = match self.attempt {
            None => self.dir.join(format!("part-{}-0.{}", self.subtask, self.extension)),
            Some(attempt) => self
                .dir
                .join(format!(".part-{}-{attempt}-{}.{}.inprogress", self.subtask, self.next_part, self.extension)),
        };
        let file = File::create(&path).map_err(|e| TaskError::Io { path: path.display().to_string(), source: e })?;
        self.current = Some((path, BufWriter::new(file)));
        Ok(())
    }

    /// Closes the in-progress file; with checkpoints it becomes pending for checkpoint `id`.
    fn close(&mut self, id: u64) -> TaskResult<()> {
        let Some((path, mut writer)) = self.current.take() else { return Ok(()) };
        let io = |e| TaskError::Io { path: path.display().to_string(), source: e };
        writer.flush().map_err(io)?;
        let file = writer.into_inner().map_err(|e| io(e.into_error()))?;
        if self.attempt.is_some() {
            file.sync_all().map_err(io)?;
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let pending = path.with_file_name(format!("{}.pending", name.trim_end_matches(".inprogress")));
            std::fs::rename(&path, &pending).map_err(io)?;
            self.pending.push((id, pending));
            self.next_part += 1;
        }
        Ok(())
    }

    fn state(&self) -> serde_json::Value {
        let pending = self.pending.iter().map(|(id, p)| (*id, p.display().to_string())).collect();
        serde_json::to_value(FileSinkState { pending }).expect("a sink state serializes")
    }

    /// Deletes hidden part files of subtasks this one stands in for after a restore: what a
    /// failed attempt left in progress or pending for a checkpoint that never completed.
    fn delete_leftovers(&self) -> TaskResult<()> {
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| TaskError::Io { path: self.dir.display().to_string(), source: e })?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(".part-")) else { continue };
            let Some(owner) = rest.split('-').next().and_then(|s| s.parse::<u32>().ok()) else { continue };
            if owner % self.parallelism == self.subtask && (rest.ends_with(".inprogress") || rest.ends_with(".pending"))
            {
                let path = entry.path();
                std::fs::remove_file(&path)
                    .map_err(|e| TaskError::Io { path: path.display().to_string(), source: e })?;
            }
        }
        Ok(())
    }
}

impl Operator for FileSink {
    fn checkpointable(&self) -> Result<(), String> {
        Ok(())
    }

    fn snapshot(&mut self, ctx: &mut SnapshotContext<'_>) -> TaskResult<()> {
        self.close(ctx.checkpoint.0)?;
        ctx.operator_state = Some(self.state());
        Ok(())
    }

    fn checkpoint_complete(&mut self, id: CheckpointId) -> TaskResult<()> {
        let (done, waiting): (Vec<_>, Vec<_>) = self.pending.drain(..).partition(|(c, _)| *c <= id.0);
        self.pending = waiting;
        for (_, path) in done {
            publish(&path)?;
        }
        Ok(())
    }

    fn restore(&mut self, state: RestoredState) -> TaskResult<()> {
        // The restored checkpoint completed, so what was pending in it is published now.
        for state in state.operator_states {
            let state: FileSinkState = serde_json::from_value(state)
                .map_err(|e| TaskError::Config(format!("a file sink's checkpointed state is malformed: {e}")))?;
            for (_, path) in state.pending {
                publish(Path::new(&path))?;
            }
        }
        self.delete_leftovers()
    }

    fn process(&mut self, _input: usize, batch: ChangeBatch, _out: &mut Output) -> TaskResult<()> {
        self.counters.output_rows.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        if self.current.is_none() {
            self.open()?;
        }
        let (path, writer) = self.current.as_mut().expect("opened above");
        let mut text = String::new();
        let json_object = |text: &mut String, row: usize| {
            write_json_format_object(text, self.names.iter().map(String::as_str), batch.data.columns(), row)
        };
        for row in 0..batch.num_rows() {
            match self.format {
                FileFormat::Csv => {
                    for (i, c) in batch.data.columns().iter().enumerate() {
                        if i > 0 {
                            text.push(',');
                        }
                        if !c.is_null(row) {
                            write_plain(&mut text, c, row);
                        }
                    }
                }
                FileFormat::Json => json_object(&mut text, row),
                FileFormat::DebeziumJson if batch.kind(row).is_accumulate() => {
                    text.push_str("{\"before\":null,\"after\":");
                    json_object(&mut text, row);
                    text.push_str(",\"op\":\"c\"}");
                }
                FileFormat::DebeziumJson => {
                    text.push_str("{\"before\":");
                    json_object(&mut text, row);
                    text.push_str(",\"after\":null,\"op\":\"d\"}");
                }
            }
            text.push('\n');
        }
        writer.write_all(text.as_bytes()).map_err(|e| TaskError::Io { path: path.display().to_string(), source: e })
    }

    fn on_watermark(&mut self, _watermark: i64, _out: &mut Output) -> TaskResult<()> {
        Ok(())
    }

    fn finish(&mut self, _out: &mut Output) -> TaskResult<()> {
        // With checkpoints, the last file waits for the job's last checkpoint to be published.
        self.close(u64::MAX)
    }
}
