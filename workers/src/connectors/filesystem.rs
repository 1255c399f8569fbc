//! The `filesystem` source: records from a file, or from every file of a directory (hidden
//! files, starting with `.` or `_`, are skipped as Flink skips them). Files are shared among
//! the source's subtasks whole, never split: each file is read front to back by one subtask,
//! so a record that spans lines (a CSV field in quotes holding line breaks) is always read by
//! one reader, and a position is always a record boundary.
//!
//! Bounded by default (the files there when the job starts, shared by their order). With
//! `source.monitor-interval` the directory is watched as Flink's continuous file source does:
//! it is listed again every interval, each new file is read once, by the subtask its path
//! hashes to, and the files read are in the position. A file must be complete when it appears
//! (write it under a hidden name, then rename it). The source reports its backlog: the bytes
//! of its files not yet read, in records at the bytes per record read so far.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use weir_dataflow::plan::SourceSpec;

use super::format::{FormatOptions, LineDecoder, RecordFraming, TimestampFormat, decoder_for};
use super::{BATCH_ROWS, Source};
use crate::error::{TaskError, TaskResult};
use crate::runtime::JobCounters;

const READ_CHUNK: usize = 4 << 20;
/// The bytes per record a backlog is counted in before any record has been read.
const ASSUMED_RECORD_BYTES: u64 = 100;

pub struct FileSource {
    files: Vec<PathBuf>,
    /// Sizes of the files to read, as listed, and the sum of those not opened yet (the
    /// backlog, kept as files are queued and opened: it is read after every batch).
    sizes: HashMap<PathBuf, u64>,
    queued_bytes: u64,
    next_file: usize,
    current: Option<OpenFile>,
    decoder: Box<dyn LineDecoder>,
    framing: RecordFraming,
    ignore_parse_errors: bool,
    /// Counts lines skipped as malformed under `*.ignore-parse-errors`.
    counters: Arc<JobCounters>,
    /// Files read to their end, for the position.
    done: Vec<PathBuf>,
    /// Restored offsets (and line numbers) of files not yet opened.
    resume_at: HashMap<PathBuf, (u64, u64)>,
    /// A watched directory (`source.monitor-interval`); `None`: bounded.
    monitor: Option<Monitor>,
    schema: SchemaRef,
    /// Bytes read from files and records decoded, for the backlog's bytes per record.
    bytes_read: u64,
    records_read: u64,
}

/// A directory watched for new files.
struct Monitor {
    root: PathBuf,
    interval: Duration,
    subtask: u32,
    parallelism: u32,
    /// What `next_due` counts from.
    epoch: Instant,
    /// When the directory is listed next, since `epoch`.
    next_scan: Duration,
    /// This subtask's files seen so far (read, being read or queued).
    known: HashSet<PathBuf>,
}

impl Monitor {
    /// Whether `path` is this subtask's: by a hash of its name, the same on every worker.
    fn owns(&self, path: &Path) -> bool {
        // FNV-1a: stable across processes and versions, unlike the std hasher.
        let hash = path
            .as_os_str()
            .as_encoded_bytes()
            .iter()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
        hash % u64::from(self.parallelism.max(1)) == u64::from(self.subtask)
    }
}

struct OpenFile {
    path: PathBuf,
    file: File,
    /// The file offset of `buffer[0]`.
    base: u64,
    buffer: Vec<u8>,
    /// Start of unread data in `buffer`, always a record boundary.
    start: usize,
    /// Lines read so far (the number of the last line of the last record read).
    line: u64,
    eof: bool,
}

/// The format options of a table from Flink's option names.
pub fn format_options(spec: &SourceSpec) -> TaskResult<FormatOptions> {
    let o = &spec.options;
    let format = o.get("format").map(String::as_str).unwrap_or("json");
    let flag = |key: &str| -> TaskResult<bool> {
        match o.get(key).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(false),
            Some(v) if v == "true" => Ok(true),
            Some(v) if v == "false" => Ok(false),
            Some(v) => Err(TaskError::Config(format!("option '{key}' must be 'true' or 'false', not '{v}'"))),
        }
    };
    let mut options = FormatOptions {
        ignore_parse_errors: flag(&format!("{format}.ignore-parse-errors"))?,
        fail_on_missing_field: flag("json.fail-on-missing-field")?,
        ..FormatOptions::default()
    };
    if let Some(standard) = o.get("json.timestamp-format.standard") {
        options.timestamp_format = match standard.to_ascii_uppercase().as_str() {
            "SQL" => TimestampFormat::Sql,
            "ISO-8601" => TimestampFormat::Iso8601,
            other => {
                return Err(TaskError::Config(format!(
                    "json.timestamp-format.standard must be SQL or ISO-8601, not '{other}'"
                )));
            }
        };
    }
    if let Some(d) = o.get("csv.field-delimiter") {
        let d = if d == "\\t" { "\t" } else { d.as_str() };
        if d.len() != 1 {
            return Err(TaskError::Config(format!("csv.field-delimiter must be one character, not '{d}'")));
        }
        options.csv_field_delimiter = d.as_bytes()[0];
    }
    if flag("csv.disable-quote-character")? {
        options.csv_quote_character = None;
    } else if let Some(q) = o.get("csv.quote-character") {
        if q.len() != 1 {
            return Err(TaskError::Config(format!("csv.quote-character must be one character, not '{q}'")));
        }
        options.csv_quote_character = Some(q.as_bytes()[0]);
    }
    options.csv_null_literal = o.get("csv.null-literal").cloned();
    options.csv_allow_comments = flag("csv.allow-comments")?;
    Ok(options)
}

/// The files behind a path: the file itself, or a directory's visible files in name order.
pub fn list_files(path: &Path) -> TaskResult<Vec<PathBuf>> {
    let meta = std::fs::metadata(path).map_err(|e| TaskError::Io { path: path.display().to_string(), source: e })?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    let mut dirs = vec![path.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries =
            std::fs::read_dir(&dir).map_err(|e| TaskError::Io { path: dir.display().to_string(), source: e })?;
        for entry in entries {
            let entry = entry.map_err(|e| TaskError::Io { path: dir.display().to_string(), source: e })?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name.starts_with('_') {
                continue;
            }
            let p = entry.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    Ok(files)
}

impl FileSource {
    pub fn try_new(
        spec: &SourceSpec,
        schema: SchemaRef,
        subtask: u32,
        parallelism: u32,
        counters: Arc<JobCounters>,
    ) -> TaskResult<Self> {
        let path = spec
            .options
            .get("path")
            .ok_or_else(|| TaskError::Config(format!("table '{}' has no 'path'", spec.table)))?;
        let path = path.strip_prefix("file://").unwrap_or(path);
        let monitor = match spec.options.get("source.monitor-interval").map(|v| v.trim()) {
            None | Some("" | "0") => None,
            Some(text) => {
                let interval = weir_dataflow::config::parse_duration(text)
                    .map_err(|e| TaskError::Config(format!("table '{}': source.monitor-interval: {e}", spec.table)))?;
                Some(Monitor {
                    root: PathBuf::from(path),
                    interval: interval.max(Duration::from_millis(10)),
                    subtask,
                    parallelism,
                    epoch: Instant::now(),
                    // Due at once: the task counts its pacing from the first `next_due`, which
                    // must therefore be "now", not an interval on.
                    next_scan: Duration::ZERO,
                    known: HashSet::new(),
                })
            }
        };
        let listed = list_files(Path::new(path))?.into_iter();
        let files: Vec<PathBuf> = match &monitor {
            Some(monitor) => listed.filter(|f| monitor.owns(f)).collect(),
            None => listed.enumerate().filter(|(i, _)| *i as u32 % parallelism == subtask).map(|(_, f)| f).collect(),
        };
        let options = format_options(spec)?;
        let format = spec.options.get("format").map(String::as_str).unwrap_or("json");
        let decoder = decoder_for(format, &spec.physical_schema, &spec.projection, schema.clone(), &options)
            .map_err(|e| TaskError::Config(format!("table '{}': {e}", spec.table)))?;
        let mut source = FileSource {
            files: Vec::new(),
            sizes: HashMap::new(),
            queued_bytes: 0,
            next_file: 0,
            current: None,
            decoder,
            framing: RecordFraming::for_format(format, &options),
            ignore_parse_errors: options.ignore_parse_errors,
            counters,
            done: Vec::new(),
            resume_at: HashMap::new(),
            monitor,
            schema,
            bytes_read: 0,
            records_read: 0,
        };
        source.enqueue(files);
        Ok(source)
    }

    /// Queues files to read, noting their sizes.
    fn enqueue(&mut self, files: Vec<PathBuf>) {
        for file in files {
            let size = std::fs::metadata(&file).map_or(0, |m| m.len());
            self.sizes.insert(file.clone(), size);
            self.queued_bytes += size;
            if let Some(monitor) = &mut self.monitor {
                monitor.known.insert(file.clone());
            }
            self.files.push(file);
        }
    }

    /// Lists a watched directory again when it is due: answers whether new files came.
    fn rescan(&mut self) -> TaskResult<bool> {
        let Some(monitor) = &mut self.monitor else { return Ok(false) };
        let now = monitor.epoch.elapsed();
        if now < monitor.next_scan {
            return Ok(false);
        }
        monitor.next_scan = now + monitor.interval;
        let new: Vec<PathBuf> =
            list_files(&monitor.root)?.into_iter().filter(|f| monitor.owns(f) && !monitor.known.contains(f)).collect();
        let found = !new.is_empty();
        self.enqueue(new);
        Ok(found)
    }

    /// Whether every file known has been read.
    fn caught_up(&self) -> bool {
        self.current.is_none() && self.next_file >= self.files.len()
    }

    /// The decoded rows as a batch, counted.
    fn flush(&mut self) -> RecordBatch {
        let batch = self.decoder.flush();
        self.records_read += batch.num_rows() as u64;
        batch
    }

    fn open_next(&mut self) -> TaskResult<bool> {
        let Some(path) = self.files.get(self.next_file).cloned() else {
            return Ok(false);
        };
        self.next_file += 1;
        self.queued_bytes = self.queued_bytes.saturating_sub(self.sizes.get(&path).copied().unwrap_or(0));
        let (offset, line) = self.resume_at.remove(&path).unwrap_or((0, 0));
        let mut file = File::open(&path).map_err(|e| TaskError::Io { path: path.display().to_string(), source: e })?;
        if offset > 0 {
            file.seek(SeekFrom::Start(offset))
                .map_err(|e| TaskError::Io { path: path.display().to_string(), source: e })?;
        }
        self.current = Some(OpenFile {
            path,
            file,
            base: offset,
            buffer: Vec::with_capacity(READ_CHUNK),
            start: 0,
            line,
            eof: false,
        });
        Ok(true)
    }
}

/// Decodes one record, unless it is blank. A malformed record is skipped and counted under
/// `*.ignore-parse-errors`, or fails the job naming the file and the line the record starts on.
fn decode_record(
    decoder: &mut dyn LineDecoder,
    ignore_parse_errors: bool,
    counters: &JobCounters,
    record: &[u8],
    path: &Path,
    first_line: u64,
) -> TaskResult<()> {
    if record.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(());
    }
    match decoder.push_line(record) {
        Ok(()) => Ok(()),
        Err(_) if ignore_parse_errors => {
            counters.records_skipped.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => {
            Err(TaskError::BadRecord { path: path.display().to_string(), line: first_line, message: e.to_string() })
        }
    }
}

/// Where a file source is: the files it has finished and how far it is into the others. The
/// same shape serves one subtask and the union of several (a restore at another parallelism),
/// since each file is read by exactly one subtask.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePosition {
    pub done: Vec<String>,
    pub partial: Vec<PartialFile>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialFile {
    pub path: String,
    pub offset: u64,
    pub line: u64,
}

impl Source for FileSource {
    fn next_batch(&mut self) -> TaskResult<Option<RecordBatch>> {
        loop {
            if self.current.is_none() && !self.open_next()? {
                if !self.decoder.is_empty() {
                    return Ok(Some(self.flush()));
                }
                if self.monitor.is_none() {
                    return Ok(None);
                }
                if self.rescan()? {
                    continue;
                }
                // Nothing new: `next_due` says when to look again.
                return Ok(Some(RecordBatch::new_empty(self.schema.clone())));
            }
            let f = self.current.as_mut().expect("opened above");
            // Decode every complete record in the buffer.
            while self.decoder.len() < BATCH_ROWS {
                let rest = &f.buffer[f.start..];
                let Some(end) = self.framing.next_record(rest) else { break };
                let record = &rest[..end.len];
                let first_line = f.line + 1;
                f.line += 1 + end.inner_line_breaks;
                f.start += end.len + 1;
                decode_record(
                    &mut *self.decoder,
                    self.ignore_parse_errors,
                    &self.counters,
                    record,
                    &f.path,
                    first_line,
                )?;
            }
            if self.decoder.len() >= BATCH_ROWS {
                return Ok(Some(self.flush()));
            }
            if f.eof {
                // A last record without a newline (for CSV, possibly an unclosed quote).
                let rest_start = f.start;
                f.start = f.buffer.len();
                let rest = &f.buffer[rest_start..];
                if !rest.is_empty() {
                    let first_line = f.line + 1;
                    let inner_line_breaks =
                        memchr::memchr_iter(b'\n', rest.strip_suffix(b"\n").unwrap_or(rest)).count();
                    f.line += 1 + inner_line_breaks as u64;
                    decode_record(
                        &mut *self.decoder,
                        self.ignore_parse_errors,
                        &self.counters,
                        rest,
                        &f.path,
                        first_line,
                    )?;
                }
                if let Some(f) = self.current.take() {
                    self.done.push(f.path);
                }
                continue;
            }
            // Refill: keep the partial record, read the next chunk after it.
            f.base += f.start as u64;
            f.buffer.drain(..f.start);
            f.start = 0;
            let len = f.buffer.len();
            f.buffer.resize(len + READ_CHUNK, 0);
            let n = f
                .file
                .read(&mut f.buffer[len..])
                .map_err(|e| TaskError::Io { path: f.path.display().to_string(), source: e })?;
            f.buffer.truncate(len + n);
            self.bytes_read += n as u64;
            if n == 0 {
                f.eof = true;
            }
        }
    }

    fn next_due(&self) -> Option<Duration> {
        let monitor = self.monitor.as_ref()?;
        if self.caught_up() && self.decoder.is_empty() {
            Some(monitor.next_scan)
        } else {
            Some(monitor.epoch.elapsed())
        }
    }

    fn backlog(&self) -> Option<u64> {
        let current = self.current.as_ref().map_or(0, |f| {
            let size = self.sizes.get(&f.path).copied().unwrap_or(0);
            size.saturating_sub(f.base + f.start as u64)
        });
        let unread = self.queued_bytes + current;
        let records = if self.records_read > 0 && self.bytes_read > 0 {
            (u128::from(unread) * u128::from(self.records_read) / u128::from(self.bytes_read)) as u64
        } else {
            unread.div_ceil(ASSUMED_RECORD_BYTES)
        };
        Some(records)
    }

    fn position(&self) -> serde_json::Value {
        let name = |p: &Path| p.display().to_string();
        let mut position = FilePosition { done: self.done.iter().map(|p| name(p)).collect(), partial: Vec::new() };
        if let Some(f) = &self.current {
            position.partial.push(PartialFile { path: name(&f.path), offset: f.base + f.start as u64, line: f.line });
        }
        // Files restored but not reopened yet keep their restored place.
        for (path, (offset, line)) in &self.resume_at {
            position.partial.push(PartialFile { path: name(path), offset: *offset, line: *line });
        }
        serde_json::to_value(position).expect("a file position serializes")
    }

    fn seek(&mut self, position: &serde_json::Value) -> TaskResult<()> {
        let position: FilePosition = serde_json::from_value(position.clone())
            .map_err(|e| TaskError::Config(format!("not a file source position ({e}): {position}")))?;
        let done: std::collections::HashSet<PathBuf> = position.done.iter().map(PathBuf::from).collect();
        self.done = self.files.iter().filter(|f| done.contains(*f)).cloned().collect();
        self.files.retain(|f| !done.contains(f));
        self.next_file = 0;
        self.current = None;
        self.queued_bytes = self.files.iter().map(|f| self.sizes.get(f).copied().unwrap_or(0)).sum();
        let mine: std::collections::HashSet<&PathBuf> = self.files.iter().collect();
        self.resume_at = position
            .partial
            .into_iter()
            .map(|p| (PathBuf::from(p.path), (p.offset, p.line)))
            .filter(|(path, _)| mine.contains(path))
            .collect();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, Decimal128Type, Field, Int64Type, Schema, TimeUnit, TimestampMillisecondType};

    use super::*;

    fn payments() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("m", DataType::Utf8, true),
            Field::new("amount", DataType::Decimal128(10, 2), true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]))
    }

    /// A source reading `projection` of `physical` from `path` with the given options.
    fn file_source(
        path: &Path,
        physical: SchemaRef,
        projection: &[usize],
        options: &[(&str, &str)],
    ) -> (FileSource, Arc<JobCounters>) {
        let mut all: BTreeMap<String, String> =
            options.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect();
        all.insert("path".into(), path.display().to_string());
        let spec = SourceSpec {
            table: "t".into(),
            connector: "filesystem".into(),
            options: all,
            physical_schema: physical.clone(),
            projection: projection.to_vec(),
            idle_timeout: None,
        };
        let schema = Arc::new(physical.project(projection).expect("projection within the schema"));
        let counters = Arc::new(JobCounters::default());
        let source = FileSource::try_new(&spec, schema, 0, 1, counters.clone()).expect("source builds");
        (source, counters)
    }

    fn read_all(source: &mut FileSource) -> TaskResult<Vec<RecordBatch>> {
        let mut batches = Vec::new();
        while let Some(batch) = source.next_batch()? {
            batches.push(batch);
        }
        Ok(batches)
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("test file written");
        path
    }

    const PAYMENTS: &str = "1,card,12.30,2024-01-01 00:00:01.000\n2,cash,0.50,2024-01-01 00:00:02.000\n";

    #[test]
    fn a_csv_projection_reads_the_fields_it_names() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = write(dir.path(), "p.csv", PAYMENTS);
        let (mut source, _) = file_source(&path, payments(), &[0, 2, 3], &[("format", "csv")]);
        let batches = read_all(&mut source).expect("valid records");
        let batch = &batches[0];
        assert_eq!(batch.column(0).as_primitive::<Int64Type>().values().as_ref(), &[1, 2]);
        assert_eq!(batch.column(1).as_primitive::<Decimal128Type>().values().as_ref(), &[1230, 50]);
        assert_eq!(batch.column(2).as_primitive::<TimestampMillisecondType>().value(0), 1_704_067_201_000);

        let (mut lenient, _) =
            file_source(&path, payments(), &[2], &[("format", "csv"), ("csv.ignore-parse-errors", "true")]);
        let batches = read_all(&mut lenient).expect("valid records");
        assert_eq!(batches[0].column(0).as_primitive::<Decimal128Type>().value(0), 1230);
    }

    #[test]
    fn count_star_reads_rows_without_columns_in_every_format() {
        let dir = tempfile::tempdir().expect("temp dir");
        let raw = Arc::new(Schema::new(vec![Field::new("line", DataType::Utf8, true)]));
        let json = "{\"id\":1}\n{\"id\":2}\n";
        for (format, physical, text) in [("csv", payments(), PAYMENTS), ("json", payments(), json), ("raw", raw, json)]
        {
            let path = write(dir.path(), &format!("t.{format}"), text);
            let (mut source, _) = file_source(&path, physical, &[], &[("format", format)]);
            let batches = read_all(&mut source).unwrap_or_else(|e| panic!("{format}: {e}"));
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            assert_eq!(rows, 2, "{format}");
        }
    }

    #[test]
    fn quoted_csv_fields_may_hold_line_breaks() {
        let dir = tempfile::tempdir().expect("temp dir");
        let text = "1,\"two\nlines, and \"\"quotes\"\"\",1.00,2024-01-01 00:00:01\n2,plain,2.00,2024-01-01 00:00:02\n\
                    3,\"last\r\nrecord\",3.00,2024-01-01 00:00:03";
        let path = write(dir.path(), "multi.csv", text);
        let (mut source, _) = file_source(&path, payments(), &[0, 1], &[("format", "csv")]);
        let batches = read_all(&mut source).expect("quoted line breaks are data");
        let names = batches[0].column(1).as_string::<i32>();
        assert_eq!(batches[0].num_rows(), 3);
        assert_eq!(names.value(0), "two\nlines, and \"quotes\"");
        assert_eq!(names.value(1), "plain");
        assert_eq!(names.value(2), "last\r\nrecord");

        let (mut quoted, _) = file_source(&path, payments(), &[1], &[("format", "csv"), ("csv.quote-character", "'")]);
        let error = read_all(&mut quoted).expect_err("with another quote character the line break ends the record");
        assert!(error.to_string().contains("multi.csv:1"), "{error}");
    }

    #[test]
    fn a_malformed_multi_line_record_names_its_first_line_or_is_skipped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let text = "1,a,1.00,2024-01-01 00:00:01\n2,\"spans\nthree\nlines\",oops,2024-01-01 00:00:02\n\
                    3,c,3.00,2024-01-01 00:00:03\n4,\"never closed,4.00,2024-01-01 00:00:04\n5,e,5.00,x\n";
        let path = write(dir.path(), "bad.csv", text);
        let (mut strict, _) = file_source(&path, payments(), &[0, 2], &[("format", "csv")]);
        let error = read_all(&mut strict).expect_err("a bad DECIMAL");
        assert!(error.to_string().contains("bad.csv:2"), "names the line the record starts on: {error}");

        let (mut strict, _) = file_source(&path, payments(), &[0], &[("format", "csv")]);
        let error = read_all(&mut strict).expect_err("an unclosed quote");
        assert!(error.to_string().contains("bad.csv:6"), "the unclosed record starts on line 6: {error}");

        let options = [("format", "csv"), ("csv.ignore-parse-errors", "true")];
        let (mut lenient, counters) = file_source(&path, payments(), &[0, 2], &options);
        let batches = read_all(&mut lenient).expect("bad records are skipped");
        let ids = batches[0].column(0).as_primitive::<Int64Type>();
        assert_eq!(ids.values().as_ref(), &[1, 2, 3], "the bad DECIMAL is NULL, the unclosed quote eats the rest");
        assert!(batches[0].column(1).is_null(1));
        assert_eq!(counters.records_skipped.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_position_after_a_multi_line_record_resumes_at_the_next_record() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut text = String::from("0,\"a\nb\",0.00,2024-01-01 00:00:00\n");
        for id in 1..=BATCH_ROWS + 1 {
            text.push_str(&format!("{id},x,1.00,2024-01-01 00:00:00\n"));
        }
        text.push_str("9,\"last\nrecord\",9.00,2024-01-01 00:00:00");
        let path = write(dir.path(), "long.csv", &text);
        let (mut first, _) = file_source(&path, payments(), &[0], &[("format", "csv")]);
        let batch = first.next_batch().expect("valid").expect("a full batch");
        assert_eq!(batch.num_rows(), BATCH_ROWS);
        let position = first.position();
        let read_lines = BATCH_ROWS as u64 + 1;
        assert_eq!(position["partial"][0]["line"], read_lines, "the first record spans two lines: {position}");
        let (mut resumed, _) = file_source(&path, payments(), &[0], &[("format", "csv")]);
        resumed.seek(&position).expect("own position");
        let batch = resumed.next_batch().expect("valid").expect("the rest");
        let ids = batch.column(0).as_primitive::<Int64Type>();
        assert_eq!(ids.values().as_ref(), &[BATCH_ROWS as i64, BATCH_ROWS as i64 + 1, 9]);
        assert!(resumed.next_batch().expect("done").is_none());
    }

    #[test]
    fn a_watched_directory_reads_each_new_file_once_and_reports_its_backlog() {
        let dir = tempfile::tempdir().expect("temp dir");
        write(dir.path(), "1.csv", PAYMENTS);
        let options = [("format", "csv"), ("source.monitor-interval", "50 ms")];
        let (mut source, _) = file_source(dir.path(), payments(), &[0], &options);
        assert_eq!(source.backlog(), Some(1), "78 bytes at an assumed 100 a record");
        let rows = |batch: Option<RecordBatch>| -> Vec<i64> {
            let batch = batch.expect("a watched directory never ends");
            batch.column(0).as_primitive::<Int64Type>().values().to_vec()
        };
        assert_eq!(rows(source.next_batch().unwrap()), [1, 2]);
        assert_eq!(source.backlog(), Some(0));
        // Nothing new: an empty batch, and the next look is due an interval on.
        assert_eq!(rows(source.next_batch().unwrap()), Vec::<i64>::new());
        let due = source.next_due().expect("a watched directory is paced");
        assert!(due >= Duration::from_millis(50), "{due:?}");

        // A file written under a hidden name and renamed is read at the next look, once.
        write(dir.path(), ".2.csv.tmp", "3,card,1.00,2024-01-01 00:00:03\n4,cash,2.00,2024-01-01 00:00:04\n");
        std::fs::rename(dir.path().join(".2.csv.tmp"), dir.path().join("2.csv")).unwrap();
        std::thread::sleep(due.saturating_sub(source.monitor.as_ref().unwrap().epoch.elapsed()));
        assert_eq!(rows(source.next_batch().unwrap()), [3, 4]);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(rows(source.next_batch().unwrap()), Vec::<i64>::new(), "read once");

        // A restored source skips what its position says was read, and reads what came since.
        let position = source.position();
        assert_eq!(position["done"].as_array().map(Vec::len), Some(2), "{position}");
        write(dir.path(), "3.csv", "5,card,1.00,2024-01-01 00:00:05\n");
        let (mut restored, _) = file_source(dir.path(), payments(), &[0], &options);
        restored.seek(&position).expect("own position");
        assert_eq!(rows(restored.next_batch().unwrap()), [5]);
    }
}
