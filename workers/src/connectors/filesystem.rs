//! The `filesystem` source: newline-delimited records from a file, or from every file of a
//! directory (hidden files, starting with `.` or `_`, are skipped as Flink skips them). Files
//! are shared among the source's subtasks; each file is read front to back.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::sync::atomic::Ordering;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use weir_dataflow::plan::SourceSpec;

use super::format::{FormatOptions, LineDecoder, TimestampFormat, decoder_for};
use super::{BATCH_ROWS, Source};
use crate::error::{TaskError, TaskResult};
use crate::runtime::JobCounters;

const READ_CHUNK: usize = 4 << 20;

pub struct FileSource {
    files: Vec<PathBuf>,
    next_file: usize,
    current: Option<OpenFile>,
    decoder: Box<dyn LineDecoder>,
    ignore_parse_errors: bool,
    /// Counts lines skipped as malformed under `*.ignore-parse-errors`.
    counters: Arc<JobCounters>,
    /// Files read to their end, for the position.
    done: Vec<PathBuf>,
    /// Restored offsets (and line numbers) of files not yet opened.
    resume_at: HashMap<PathBuf, (u64, u64)>,
}

struct OpenFile {
    path: PathBuf,
    file: File,
    /// The file offset of `buffer[0]`.
    base: u64,
    buffer: Vec<u8>,
    /// Start of unread data in `buffer`.
    start: usize,
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
        let files: Vec<PathBuf> = list_files(Path::new(path))?
            .into_iter()
            .enumerate()
            .filter(|(i, _)| *i as u32 % parallelism == subtask)
            .map(|(_, f)| f)
            .collect();
        let options = format_options(spec)?;
        let format = spec.options.get("format").map(String::as_str).unwrap_or("json");
        let decoder = decoder_for(format, &spec.physical_schema, &spec.projection, schema, &options)
            .map_err(|e| TaskError::Config(format!("table '{}': {e}", spec.table)))?;
        Ok(FileSource {
            files,
            next_file: 0,
            current: None,
            decoder,
            ignore_parse_errors: options.ignore_parse_errors,
            counters,
            done: Vec::new(),
            resume_at: HashMap::new(),
        })
    }

    fn open_next(&mut self) -> TaskResult<bool> {
        let Some(path) = self.files.get(self.next_file).cloned() else {
            return Ok(false);
        };
        self.next_file += 1;
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
                return Ok((!self.decoder.is_empty()).then(|| self.decoder.flush()));
            }
            let f = self.current.as_mut().expect("opened above");
            // Decode every complete line in the buffer.
            while self.decoder.len() < BATCH_ROWS {
                let rest = &f.buffer[f.start..];
                let Some(end) = memchr::memchr(b'\n', rest) else { break };
                let line = &rest[..end];
                f.line += 1;
                f.start += end + 1;
                if line.iter().all(|b| b.is_ascii_whitespace()) {
                    continue;
                }
                if let Err(e) = self.decoder.push_line(line) {
                    if self.ignore_parse_errors {
                        self.counters.records_skipped.fetch_add(1, Ordering::Relaxed);
                    } else {
                        return Err(TaskError::BadRecord {
                            path: f.path.display().to_string(),
                            line: f.line,
                            message: e.to_string(),
                        });
                    }
                }
            }
            if self.decoder.len() >= BATCH_ROWS {
                return Ok(Some(self.decoder.flush()));
            }
            if f.eof {
                // A last line without a newline.
                let rest = f.buffer[f.start..].to_vec();
                f.start = f.buffer.len();
                if !rest.iter().all(|b| b.is_ascii_whitespace()) {
                    f.line += 1;
                    if let Err(e) = self.decoder.push_line(&rest) {
                        if self.ignore_parse_errors {
                            self.counters.records_skipped.fetch_add(1, Ordering::Relaxed);
                        } else {
                            return Err(TaskError::BadRecord {
                                path: f.path.display().to_string(),
                                line: f.line,
                                message: e.to_string(),
                            });
                        }
                    }
                }
                if let Some(f) = self.current.take() {
                    self.done.push(f.path);
                }
                continue;
            }
            // Refill: keep the partial line, read the next chunk after it.
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
            if n == 0 {
                f.eof = true;
            }
        }
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

    use arrow::array::AsArray;
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
}
