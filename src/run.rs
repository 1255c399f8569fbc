//! `weir run`: plan a script, run it in this process, show or write its result. It sets a run
//! up as any attempt is (`weir_workers::attempt::setup`), hands restarting to the runtime
//! (`weir_workers::runtime::InProcessRestarts`: stages re-run, or a restart from the latest
//! checkpoint, when an exchange is lost), and adds what a terminal needs: the result table,
//! progress and `weir savepoint PID`.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use arrow::datatypes::SchemaRef;
use tokio::sync::mpsc::UnboundedSender;
use weir_dataflow::auth::ClusterKey;
use weir_dataflow::clock::unix_nanos;
use weir_dataflow::event::ChangeBatch;
use weir_dataflow::ids::JobId;
use weir_dataflow::sql::plan_script;
use weir_dataflow::wire::SavepointFormat;
use weir_net::Transport;
use weir_shuffle_service::remote::RemoteShuffle;
use weir_shuffle_service::{LocalShuffle, ShuffleService};
use weir_state_store::CompletedCheckpoint;
use weir_workers::attempt::setup::{self, Checkpointing, base_config, job_graph, savepoint_target, savepoints_dir};
use weir_workers::checkpoint::coordinator::SavepointRequest;
use weir_workers::connectors::sinks::PrintTo;
use weir_workers::error::TaskError;
use weir_workers::output::{write_changelog_json, write_plain};
use weir_workers::runtime::{InProcessRestarts, JobCounters, LocalJob, ManagedMemory, budgeted_tasks, run_local};

/// Outcome of a local run, for reporting.
pub struct RunStats {
    pub source_rows: u64,
    pub output_rows: u64,
    pub late_dropped: u64,
    pub records_skipped: u64,
    /// The most tasks that ran at once.
    pub peak_running_tasks: u64,
    /// Per vertex: the share of time its subtasks waited for credit.
    pub backpressure: Vec<(u32, f64)>,
    pub elapsed: Duration,
}

pub fn run_file(
    file: &Path,
    parallelism: Option<u32>,
    shuffle_server: Option<(&str, Transport)>,
    resume: bool,
    output: Option<&Path>,
    quiet: bool,
    stats_json: Option<&Path>,
) -> Result<()> {
    let sql = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut sink: Box<dyn ResultSink> = match output {
        Some(path) => Box::new(JsonLinesSink::create(path)?),
        None if quiet => Box::new(DiscardSink),
        None => Box::new(TableauSink::default()),
    };
    let options = RunOptions {
        name: file.display().to_string(),
        job_name: file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "job".into()),
        parallelism,
        shuffle_transport: shuffle_server.as_ref().map(|(_, transport)| transport.clone()).unwrap_or_default(),
        shuffle_server: shuffle_server.map(|(address, _)| address.to_string()),
        resume,
        progress: !quiet,
    };
    let stats = run_sql(&sql, &options, sink.as_mut())?;
    sink.finish()?;
    if let Some(path) = stats_json {
        let usage = resource_usage();
        let json = serde_json::json!({
            "source_rows": stats.source_rows,
            "output_rows": stats.output_rows,
            "late_records_dropped": stats.late_dropped,
            "records_skipped": stats.records_skipped,
            "peak_running_tasks": stats.peak_running_tasks,
            // Per vertex id (as in EXPLAIN's job graph) with outputs: the highest share of a
            // subtask's time spent blocked sending (waiting for credit, mostly).
            "backpressure": stats.backpressure.iter().map(|(v, share)| (v.to_string(), serde_json::json!(share))).collect::<serde_json::Map<_, _>>(),
            "elapsed_seconds": stats.elapsed.as_secs_f64(),
            "cpu_seconds": usage.0,
            "max_rss_bytes": usage.1,
        });
        std::fs::write(path, json.to_string()).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if stats.records_skipped > 0 {
        eprintln!("warning: {} malformed records skipped (ignore-parse-errors)", stats.records_skipped);
    }
    if !quiet && std::io::stderr().is_terminal() {
        eprintln!(
            "done: {} rows read, {} rows written, {} late rows dropped, {:.2}s",
            stats.source_rows,
            stats.output_rows,
            stats.late_dropped,
            stats.elapsed.as_secs_f64()
        );
    }
    Ok(())
}

/// Where a final `SELECT`'s rows go.
pub trait ResultSink {
    /// The script has a final `SELECT` with these columns.
    fn start(&mut self, _schema: &SchemaRef) -> Result<()> {
        Ok(())
    }
    fn write(&mut self, batch: &ChangeBatch) -> Result<()>;
    /// No more rows are waiting: make what was written visible (a reader polling the output
    /// sees rows as the job makes them, not when a buffer fills).
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
    fn finish(&mut self) -> Result<()>;
}

pub struct DiscardSink;

impl ResultSink for DiscardSink {
    fn write(&mut self, _batch: &ChangeBatch) -> Result<()> {
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

struct JsonLinesSink {
    path: String,
    out: BufWriter<File>,
}

impl JsonLinesSink {
    fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(JsonLinesSink { path: path.display().to_string(), out: BufWriter::new(file) })
    }
}

impl ResultSink for JsonLinesSink {
    fn write(&mut self, batch: &ChangeBatch) -> Result<()> {
        let mut text = String::new();
        write_changelog_json(&mut text, batch);
        self.out.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", self.path))
    }

    fn flush(&mut self) -> Result<()> {
        self.out.flush().with_context(|| format!("cannot write {}", self.path))
    }

    fn finish(&mut self) -> Result<()> {
        self.flush()
    }
}

/// Rows as a table on stdout, printed as they arrive, like Flink's SQL client in tableau mode.
#[derive(Default)]
struct TableauSink {
    schema: Option<SchemaRef>,
    widths: Vec<usize>,
    rows: u64,
}

const MAX_WIDTH: usize = 40;

impl TableauSink {
    fn rule(&self) -> String {
        let mut s = String::from("+----+");
        for w in &self.widths {
            s.push_str(&"-".repeat(w + 2));
            s.push('+');
        }
        s
    }
}

impl ResultSink for TableauSink {
    fn start(&mut self, schema: &SchemaRef) -> Result<()> {
        self.schema = Some(schema.clone());
        Ok(())
    }

    fn write(&mut self, batch: &ChangeBatch) -> Result<()> {
        let mut out = String::new();
        if self.widths.is_empty() {
            let schema = batch.data.schema();
            self.widths = schema.fields().iter().map(|f| f.name().chars().count().clamp(6, MAX_WIDTH)).collect();
            for (i, c) in batch.data.columns().iter().enumerate() {
                for row in 0..batch.num_rows().min(100) {
                    let mut s = String::new();
                    write_plain(&mut s, c, row);
                    self.widths[i] = self.widths[i].max(s.chars().count().min(MAX_WIDTH));
                }
            }
            out.push_str(&self.rule());
            out.push_str("\n| op |");
            for (f, w) in schema.fields().iter().zip(&self.widths) {
                out.push_str(&format!(" {:>w$} |", clip(f.name(), *w)));
            }
            out.push('\n');
            out.push_str(&self.rule());
            out.push('\n');
        }
        for row in 0..batch.num_rows() {
            out.push_str(&format!("| {} |", batch.kind(row).short_string()));
            for (c, w) in batch.data.columns().iter().zip(&self.widths) {
                let mut s = String::new();
                write_plain(&mut s, c, row);
                out.push_str(&format!(" {:>w$} |", clip(&s, *w)));
            }
            out.push('\n');
        }
        self.rows += batch.num_rows() as u64;
        std::io::stdout().lock().write_all(out.as_bytes())?;
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        if self.schema.is_none() {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        if !self.widths.is_empty() {
            writeln!(out, "{}", self.rule())?;
        }
        writeln!(out, "Received a total of {} row{}", self.rows, if self.rows == 1 { "" } else { "s" })?;
        Ok(())
    }
}

fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut t: String = s.chars().take(width.saturating_sub(3)).collect();
    t.push_str("...");
    t
}

/// How `weir run` runs a script.
#[derive(Clone)]
pub struct RunOptions {
    /// The script's name in error messages.
    pub name: String,
    /// The job's name under `state.checkpoints.dir` unless `pipeline.name` is set.
    pub job_name: String,
    pub parallelism: Option<u32>,
    pub shuffle_server: Option<String>,
    /// How to reach the shuffle server: TLS trusting `--internal-ca`, or plain.
    pub shuffle_transport: Transport,
    /// Start from the latest completed checkpoint of this job, if there is one.
    pub resume: bool,
    pub progress: bool,
}

/// Plans and runs a script; rows of its final `SELECT` go to `sink`.
pub fn run_sql(sql: &str, options: &RunOptions, sink: &mut dyn ResultSink) -> Result<RunStats> {
    let (name, progress) = (options.name.as_str(), options.progress);
    let shuffle_server = options.shuffle_server.as_deref();
    let planned = plan_script(sql, base_config(options.parallelism)?).map_err(|e| anyhow!("{name}:{e}"))?;
    for key in planned.config.unknown_keys() {
        tracing::warn!(key, "option is not used by Weir");
    }
    for explain in &planned.explains {
        writeln!(std::io::stdout().lock(), "{explain}")?;
    }
    if let Some(schema) = &planned.result_schema {
        sink.start(schema)?;
    }
    let Some(plan) = planned.plan else {
        return Ok(RunStats {
            source_rows: 0,
            output_rows: 0,
            late_dropped: 0,
            records_skipped: 0,
            peak_running_tasks: 0,
            backpressure: Vec::new(),
            elapsed: Duration::ZERO,
        });
    };
    let graph = job_graph(&plan, &planned.config);
    // Managed memory (`taskmanager.memory.managed.size`) is shared by every task that keeps
    // keyed state; all of them run in this process.
    let managed =
        planned.config.managed_memory().map_or_else(ManagedMemory::machine_default, |bytes| ManagedMemory { bytes });
    weir_state_store::backend::set_block_cache_bytes(managed.block_cache_bytes());
    let memory = managed.per_task(budgeted_tasks(&plan, &graph, false));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let job_id = JobId(planned.config.pipeline_name().unwrap_or(&options.job_name).to_string());
    let checkpointing = runtime
        .block_on(setup::checkpointing(&plan, &planned.config, &job_id, options.resume))?
        .map(|c| report(c, &job_id));
    let counters = Arc::new(JobCounters::default());
    // One namespace per run (and per attempt), so runs sharing a server never meet each
    // other's channels.
    let namespace = format!("run-{}-{}", std::process::id(), unix_nanos());
    // A server with a key opens a namespace to its token: sign ours with the shuffle key, when
    // this process was given it (WEIR_SHUFFLE_KEY).
    let key = match (shuffle_server, std::env::var("WEIR_SHUFFLE_KEY")) {
        (Some(_), Ok(text)) => {
            Some(ClusterKey::from_text(&text).map_err(|e| anyhow::anyhow!("WEIR_SHUFFLE_KEY: {e}"))?)
        }
        _ => None,
    };
    let server = shuffle_server.map(str::to_string);
    let transport = options.shuffle_transport.clone();
    let shuffle_for_attempt = move |attempt: u32| -> Arc<dyn ShuffleService> {
        match &server {
            None => Arc::new(LocalShuffle::new()),
            Some(addr) => remote_shuffle(addr, &transport, &namespace, attempt, key.as_ref()),
        }
    };
    // `weir savepoint PID` (SIGUSR1) stops a checkpointed job with a savepoint.
    let (savepoint_requests, savepoints) = match &checkpointing {
        Some(setup) => {
            let (send, receive) = tokio::sync::mpsc::unbounded_channel();
            (Some((send, savepoints_dir(&planned.config, &setup.config))), Some(receive))
        }
        None => (None, None),
    };
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let graph = Arc::new(graph);
    let job = LocalJob {
        print: PrintTo::Terminal,
        plan: Arc::new(plan),
        graph: graph.clone(),
        shuffle: shuffle_for_attempt(0),
        collect: Some(sender),
        counters: counters.clone(),
        checkpointing,
        restart: Some(InProcessRestarts {
            strategy: planned.config.restart_strategy(),
            shuffle_for_attempt: Box::new(shuffle_for_attempt),
            // Only a remote exchange loses data a batch job can re-create by re-running stages.
            region_failover: shuffle_server.is_some(),
            job_config: planned.config.clone(),
        }),
        savepoints,
        checkpoint_listener: None,
        part: None,
        memory: Some(memory),
    };
    let started = Instant::now();
    let show_progress = progress && std::io::stderr().is_terminal();
    let result = runtime
        .block_on(drive(job, receiver, sink, &counters, started, show_progress, savepoint_requests))
        .and_then(|outcome| outcome.map_err(anyhow::Error::from));
    if show_progress {
        eprint!("\r\x1b[2K");
    }
    result?;
    Ok(RunStats {
        source_rows: counters.source_rows.load(Ordering::Relaxed),
        output_rows: counters.output_rows.load(Ordering::Relaxed),
        late_dropped: counters.late_records_dropped.load(Ordering::Relaxed),
        records_skipped: counters.records_skipped.load(Ordering::Relaxed),
        peak_running_tasks: counters.peak_running_tasks.load(Ordering::Relaxed),
        backpressure: counters
            .vertex_figures(&graph)
            .into_iter()
            .filter_map(|(v, figures)| Some((v.0, figures.backpressure?)))
            .collect(),
        elapsed: started.elapsed(),
    })
}

/// The exchange of one attempt of a run through a shuffle server: a namespace of its own, so
/// nothing of a failed attempt (or another run on the server) is mistaken for its data, opened
/// with its token when there is a `key`.
fn remote_shuffle(
    addr: &str,
    transport: &Transport,
    run: &str,
    attempt: u32,
    key: Option<&ClusterKey>,
) -> Arc<dyn ShuffleService> {
    let namespace = format!("{run}-{attempt}");
    let token = key.map(|key| key.sign(&namespace)).unwrap_or_default();
    Arc::new(RemoteShuffle::new(addr, namespace).with_token(token).with_transport(transport.clone()))
}

/// Runs a job to its end, handing its result rows to `sink` as they come. The outer error is
/// the client's (a sink that cannot write); the inner one the job's.
async fn drive(
    job: LocalJob,
    mut receiver: tokio::sync::mpsc::UnboundedReceiver<ChangeBatch>,
    sink: &mut dyn ResultSink,
    counters: &JobCounters,
    started: Instant,
    show_progress: bool,
    savepoints: Option<(UnboundedSender<SavepointRequest>, String)>,
) -> Result<Result<(), TaskError>> {
    let mut job = tokio::spawn(run_local(job));
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let mut usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;
    let mut usr2 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined2())?;
    // The savepoint being taken: where, and its reply.
    let mut savepoint: Option<(String, tokio::sync::oneshot::Receiver<Result<CompletedCheckpoint, TaskError>>)> = None;
    loop {
        tokio::select! {
            biased;
            format = async {
                tokio::select! {
                    _ = usr1.recv() => SavepointFormat::Canonical,
                    _ = usr2.recv() => SavepointFormat::Native,
                }
            }, if savepoint.is_none() => match &savepoints {
                None => eprintln!("warning: a savepoint needs checkpoints: set 'execution.checkpointing.interval'"),
                Some((requests, dir)) => {
                    let (path, target) = savepoint_target(dir)?;
                    let (reply, replied) = tokio::sync::oneshot::channel();
                    if requests.send(SavepointRequest { target, stop: true, format, reply }).is_ok() {
                        eprintln!("taking a savepoint to stop the job …");
                        savepoint = Some((path, replied));
                    }
                }
            },
            written = async { (&mut savepoint.as_mut().expect("guarded").1).await }, if savepoint.is_some() => {
                let (path, _) = savepoint.take().expect("guarded");
                match written {
                    Ok(Ok(sp)) => {
                        job.abort();
                        eprintln!("stopped with savepoint {path} (checkpoint {})", sp.id);
                        return Ok(Ok(()));
                    }
                    Ok(Err(e)) => eprintln!("warning: the savepoint failed, the job goes on: {e}"),
                    Err(_) => eprintln!("warning: the savepoint was not taken: the job is ending"),
                }
            }
            batch = receiver.recv() => match batch {
                Some(b) => {
                    sink.write(&b)?;
                    if receiver.is_empty() {
                        sink.flush()?;
                    }
                }
                None => return Ok((&mut job).await?),
            },
            _ = ticker.tick() => {
                if show_progress {
                    eprint!(
                        "\r{} rows read, {} rows out, {:.0}s",
                        counters.source_rows.load(Ordering::Relaxed),
                        counters.output_rows.load(Ordering::Relaxed),
                        started.elapsed().as_secs_f64()
                    );
                }
            }
            finished = &mut job => {
                let finished = finished?;
                while let Ok(b) = receiver.try_recv() {
                    sink.write(&b)?;
                }
                return Ok(finished);
            }
        }
    }
}

/// CPU seconds (user + system) and peak resident memory of this process so far.
fn resource_usage() -> (f64, u64) {
    // SAFETY: getrusage only writes into the zeroed struct we pass.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (seconds(usage.ru_utime) + seconds(usage.ru_stime), usage.ru_maxrss as u64 * 1024)
}

/// Tells the terminal where the run starts from, and which checkpoints it passed over.
fn report(checkpointing: Checkpointing, job: &JobId) -> weir_workers::checkpoint::CheckpointSetup {
    for skipped in &checkpointing.skipped {
        eprintln!("warning: skipped checkpoint {skipped}");
    }
    if checkpointing.restored != setup::Restored::Nothing {
        eprintln!("{}", checkpointing.restored.describe(job));
    }
    checkpointing.setup
}
