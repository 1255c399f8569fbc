//! Sinks. A sink is the last operator of its chain: it consumes batches and emits nothing.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc::UnboundedSender;
use weir_dataflow::event::ChangeBatch;
use weir_dataflow::plan::{ChangelogMode, PlanNode};

use crate::error::{TaskError, TaskResult};
use crate::operators::{Operator, Output};
use crate::output::{write_json_string, write_json_value, write_plain, write_print_row};
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
    fn process(&mut self, _input: usize, batch: ChangeBatch, _out: &mut Output) -> TaskResult<()> {
        self.counters.output_rows.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn on_watermark(&mut self, _watermark: i64, _out: &mut Output) -> TaskResult<()> {
        Ok(())
    }
}

/// Flink's `print` connector: `[identifier:][subtask>] +I[…]` lines on stdout (or stderr).
pub struct PrintSink {
    prefix: String,
    to_stderr: bool,
    counters: Arc<JobCounters>,
}

impl PrintSink {
    pub fn new(options: &BTreeMap<String, String>, subtask: u32, parallelism: u32, counters: Arc<JobCounters>) -> Self {
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
        PrintSink { prefix, to_stderr, counters }
    }
}

impl Operator for PrintSink {
    fn process(&mut self, _input: usize, batch: ChangeBatch, _out: &mut Output) -> TaskResult<()> {
        self.counters.output_rows.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        let mut text = String::new();
        for row in 0..batch.num_rows() {
            text.push_str(&self.prefix);
            write_print_row(&mut text, &batch, row);
            text.push('\n');
        }
        let written = if self.to_stderr {
            std::io::stderr().lock().write_all(text.as_bytes())
        } else {
            std::io::stdout().lock().write_all(text.as_bytes())
        };
        written.map_err(|e| TaskError::Io { path: "stdout".into(), source: e })
    }

    fn on_watermark(&mut self, _watermark: i64, _out: &mut Output) -> TaskResult<()> {
        Ok(())
    }
}

/// The `filesystem` sink: one part file per subtask under the table's path, json or csv.
pub struct FileSink {
    path: PathBuf,
    writer: BufWriter<File>,
    csv: bool,
    counters: Arc<JobCounters>,
    names: Vec<String>,
}

impl FileSink {
    pub fn try_new(
        table: &str,
        options: &BTreeMap<String, String>,
        node: &PlanNode,
        subtask: u32,
        counters: Arc<JobCounters>,
    ) -> TaskResult<Self> {
        if node.changelog == ChangelogMode::Retract {
            return Err(TaskError::Unsupported(format!(
                "table '{table}': the filesystem sink only accepts inserts, but the query produces updates"
            )));
        }
        let dir = options.get("path").ok_or_else(|| TaskError::Config(format!("table '{table}' has no 'path'")))?;
        let dir = PathBuf::from(dir.strip_prefix("file://").unwrap_or(dir));
        std::fs::create_dir_all(&dir).map_err(|e| TaskError::Io { path: dir.display().to_string(), source: e })?;
        let format = options.get("format").map(String::as_str).unwrap_or("json");
        let csv = match format {
            "json" => false,
            "csv" => true,
            other => return Err(TaskError::Config(format!("table '{table}': cannot write format '{other}'"))),
        };
        let path = dir.join(format!("part-{subtask}-0.{format}"));
        let file = File::create(&path).map_err(|e| TaskError::Io { path: path.display().to_string(), source: e })?;
        let names = node.schema.fields().iter().map(|f| f.name().clone()).collect();
        Ok(FileSink { path, writer: BufWriter::new(file), csv, counters, names })
    }
}

impl Operator for FileSink {
    fn process(&mut self, _input: usize, batch: ChangeBatch, _out: &mut Output) -> TaskResult<()> {
        self.counters.output_rows.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        let mut text = String::new();
        for row in 0..batch.num_rows() {
            for (i, c) in batch.data.columns().iter().enumerate() {
                if self.csv {
                    if i > 0 {
                        text.push(',');
                    }
                    if !c.is_null(row) {
                        write_plain(&mut text, c, row);
                    }
                } else {
                    text.push(if i == 0 { '{' } else { ',' });
                    write_json_string(&mut text, &self.names[i]);
                    text.push(':');
                    write_json_value(&mut text, c, row);
                }
            }
            if !self.csv {
                text.push('}');
            }
            text.push('\n');
        }
        self.writer
            .write_all(text.as_bytes())
            .map_err(|e| TaskError::Io { path: self.path.display().to_string(), source: e })
    }

    fn on_watermark(&mut self, _watermark: i64, _out: &mut Output) -> TaskResult<()> {
        Ok(())
    }

    fn finish(&mut self, _out: &mut Output) -> TaskResult<()> {
        self.writer.flush().map_err(|e| TaskError::Io { path: self.path.display().to_string(), source: e })
    }
}
