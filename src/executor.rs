//! Jobs run in this process with the local runtime (`weir_workers::runtime::run_local`), as
//! `weir run` runs them: [`start_local_run`] is what `weir standalone`'s [`InProcessExecutor`]
//! and `weir worker` share.
//!
//! A run plans the job's script with its parallelism pinned; `state.checkpoints.dir` defaults to
//! the given state folder (the script may set its own), and the job's folder there is its id, so
//! two jobs never share checkpoints whatever their `pipeline.name`. Every checkpoint the run's
//! coordinator commits is reported, then the run's end. A restart after a crash restores the
//! newest checkpoint in the state store, which is never older than the one Raft recorded: the
//! coordinator commits to the store first, and the filesystem sink publishes only after that
//! commit, so the store's newest is the one the published output agrees with.
//!
//! Figures, per vertex, live: records into the head of its chain and out of its tail, its
//! lowest subtask watermark, and backpressure (the highest share of a subtask's time spent
//! blocked sending); a job's single sink vertex shows the rows its sink wrote as its output.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, anyhow};
use tokio::sync::mpsc;
use weir_control_plane::api::runtime::VertexMetrics;
use weir_control_plane::dispatcher::{
    ExecutionRequest, ExecutorError, JobExecutor, Restore, RunEnd, RunReporter, RunningJob, TakenSavepoint,
};
use weir_control_plane::handle::BoxFuture;
use weir_control_plane::metadata::records::CompletedCheckpoint as CheckpointRecord;
use weir_dataflow::config::JobConfig;
use weir_dataflow::graph::JobGraph;
use weir_dataflow::ids::{JobId, VertexId};
use weir_dataflow::sql::plan_script;
use weir_dataflow::wire::CheckpointDone;
use weir_shuffle_service::remote::RemoteShuffle;
use weir_shuffle_service::{LocalShuffle, ShuffleService};
use weir_state_store::{CheckpointStore, CompletedCheckpoint, StateLocation};
use weir_workers::checkpoint::coordinator::SavepointRequest;
use weir_workers::runtime::{JobCounters, JobPart, LocalJob, PartLink, run_local};

use crate::run;

/// What a local run reports, in order: checkpoints, then its end.
#[derive(Debug)]
pub enum RunEvent {
    Checkpoint(CheckpointDone),
    Ended(RunEnd),
}

/// A run of a job in this process.
pub struct LocalRunRequest {
    pub job: JobId,
    pub sql: String,
    pub parallelism: u32,
    pub restore: Restore,
    /// The default `state.checkpoints.dir`.
    pub state_dir: String,
    /// When the run's subtasks are spread over several processes: this one's part.
    pub part: Option<RunPart>,
}

/// This process's part of a run spread over several (see `weir_workers::runtime::JobPart`).
pub struct RunPart {
    pub subtasks: std::collections::BTreeSet<u32>,
    pub link: PartLink,
    /// The shuffle server every part exchanges through, and the attempt's namespace there.
    pub shuffle: String,
    pub namespace: String,
}

/// Runs jobs as tasks of this process's tokio runtime.
pub struct InProcessExecutor {
    /// The default `state.checkpoints.dir` of managed jobs.
    state_dir: String,
}

impl InProcessExecutor {
    pub fn new(state_dir: &Path) -> InProcessExecutor {
        InProcessExecutor { state_dir: state_dir.display().to_string() }
    }

    async fn start_run(&self, request: ExecutionRequest, reporter: RunReporter) -> Result<Arc<dyn RunningJob>> {
        let ExecutionRequest { job, parallelism, restore } = request;
        let state_dir = self.state_dir.clone();
        let local = LocalRunRequest { job: job.id, sql: job.sql, parallelism, restore, state_dir, part: None };
        let (run, mut events) = start_local_run(local).await?;
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                match event {
                    RunEvent::Checkpoint(done) => {
                        reporter.checkpoint_completed(CheckpointRecord::from_wire(&done), done.retain)
                    }
                    RunEvent::Ended(end) => reporter.ended(end),
                }
            }
        });
        Ok(run)
    }
}

/// Plans and starts a run in this process; its checkpoints and end arrive on the receiver.
pub async fn start_local_run(request: LocalRunRequest) -> Result<(Arc<LocalRun>, mpsc::UnboundedReceiver<RunEvent>)> {
    let LocalRunRequest { job, sql, parallelism, restore, state_dir, part } = request;
    let mut config = run::base_config(Some(parallelism))?;
    // Defaults, not pinned: a script's own `SET`s win. Savepoints go in a folder per job, so
    // two jobs' savepoints taken in the same millisecond never meet.
    let savepoints = format!("{}/savepoints/{}", state_dir.trim_end_matches('/'), job);
    for (key, value) in [("state.checkpoints.dir", &state_dir), ("state.savepoints.dir", &savepoints)] {
        config.set(key, value).map_err(|e| anyhow!("{key}: {e}"))?;
    }
    if let Restore::Savepoint { location } = &restore {
        config.set("execution.savepoint.path", location).map_err(|e| anyhow!("execution.savepoint.path: {e}"))?;
        config.pin("execution.savepoint.path");
    }
    // Planning takes milliseconds of CPU: off the async threads.
    let planned = tokio::task::spawn_blocking(move || plan_script(&sql, config))
        .await
        .context("the SQL planner failed")?
        .map_err(|e| anyhow!("{e}"))?;
    let plan = planned.plan.context("the script has no INSERT INTO")?;
    let mut job_config = planned.config;
    // A script that starts from a savepoint (`SET 'execution.savepoint.path'`) does so once:
    // once the job has checkpoints of its own, a restart resumes from them.
    if restore == Restore::LatestCheckpoint
        && job_config.savepoint_path().is_some()
        && has_checkpoints(&job_config, &job).await?
    {
        job_config.values.remove("execution.savepoint.path");
    }
    let graph = run::job_graph(&plan, &job_config);
    // Without checkpoints there is nothing to resume from: the job starts over.
    let resume = restore == Restore::LatestCheckpoint && job_config.checkpointing().is_some() && !plan.batch;
    let checkpointing = run::checkpointing(&plan, &job_config, &job, resume).await?;
    let savepoints_dir = checkpointing.as_ref().map(|setup| run::savepoints_dir(&job_config, &setup.config));
    let (checkpoint_root, retain) = match &checkpointing {
        Some(setup) => (
            format!("{}/{}/checkpoints", setup.config.dir.trim_end_matches('/'), job),
            u32::try_from(setup.config.num_retained).unwrap_or(u32::MAX),
        ),
        None => (String::new(), 1),
    };
    let (savepoint_sender, savepoint_receiver) = match savepoints_dir {
        Some(_) => {
            let (sender, receiver) = mpsc::unbounded_channel();
            (Some(sender), Some(receiver))
        }
        None => (None, None),
    };
    let (checkpoint_sender, mut checkpoints) = mpsc::unbounded_channel();
    let counters = Arc::new(JobCounters::default());
    let graph = Arc::new(graph);
    let (shuffle, part): (Arc<dyn ShuffleService>, _) = match part {
        None => (Arc::new(LocalShuffle::new()), None),
        Some(RunPart { subtasks, link, shuffle, namespace }) => {
            (Arc::new(RemoteShuffle::new(shuffle, namespace)), Some(JobPart { subtasks, link: Some(link) }))
        }
    };
    let local = LocalJob {
        plan: Arc::new(plan),
        graph: graph.clone(),
        shuffle,
        part,
        collect: None,
        counters: counters.clone(),
        checkpointing,
        restart: None,
        savepoints: savepoint_receiver,
        checkpoint_listener: Some(checkpoint_sender),
    };
    let mut task = tokio::spawn(run_local(local));
    let stopped = Arc::new(AtomicBool::new(false));
    let handle = Arc::new(LocalRun {
        abort: task.abort_handle(),
        stopped: stopped.clone(),
        savepoints: savepoint_sender.zip(savepoints_dir),
        counters,
        graph,
    });
    let (events, receiver) = mpsc::unbounded_channel();
    // One task reports checkpoints and then the end, in that order: a bounded job's last
    // checkpoint must be recorded before the job is FINISHED.
    tokio::spawn(async move {
        let done = |checkpoint: CompletedCheckpoint| {
            RunEvent::Checkpoint(CheckpointDone {
                id: checkpoint.id,
                location: format!("{checkpoint_root}/chk-{}", checkpoint.id.0),
                parallelism,
                retain,
                completed_at: unix_millis(),
            })
        };
        let result = loop {
            tokio::select! {
                Some(checkpoint) = checkpoints.recv() => { let _ = events.send(done(checkpoint)); }
                result = &mut task => break result,
            }
        };
        while let Ok(checkpoint) = checkpoints.try_recv() {
            let _ = events.send(done(checkpoint));
        }
        let end = match result {
            Ok(Ok(())) => RunEnd::Finished,
            Ok(Err(error)) => RunEnd::Failed(error.to_string()),
            Err(error) if error.is_cancelled() && stopped.load(Ordering::SeqCst) => RunEnd::Stopped,
            Err(error) if error.is_cancelled() => RunEnd::Cancelled,
            Err(_) => RunEnd::Failed("a task of the job panicked; please report it".into()),
        };
        let _ = events.send(RunEvent::Ended(end));
    });
    Ok((handle, receiver))
}

impl JobExecutor for InProcessExecutor {
    fn start(
        &self,
        request: ExecutionRequest,
        reporter: RunReporter,
    ) -> BoxFuture<'_, Result<Arc<dyn RunningJob>, ExecutorError>> {
        Box::pin(async move { self.start_run(request, reporter).await.map_err(|e| ExecutorError(format!("{e:#}"))) })
    }
}

/// One run: its task, and what the API and the dispatcher ask of it.
pub struct LocalRun {
    abort: tokio::task::AbortHandle,
    /// Set before a stopping savepoint aborts the task, so its end reads as stopped.
    stopped: Arc<AtomicBool>,
    /// The coordinator's savepoint requests and where savepoints go (checkpointed jobs only).
    savepoints: Option<(mpsc::UnboundedSender<SavepointRequest>, String)>,
    counters: Arc<JobCounters>,
    graph: Arc<JobGraph>,
}

impl RunningJob for LocalRun {
    fn cancel(&self) {
        // Aborting `run_local` drops its tasks; the filesystem sink's next run deletes what an
        // aborted attempt left in progress.
        self.abort.abort();
    }

    fn savepoint(&self, stop: bool) -> BoxFuture<'static, Result<TakenSavepoint, ExecutorError>> {
        let asked = self.ask_savepoint();
        let (abort, stopped) = (self.abort.clone(), self.stopped.clone());
        Box::pin(async move {
            let (path, replied) = asked?;
            let failed = |why: String| ExecutorError(format!("savepoint {path}: {why}"));
            let checkpoint = match replied.await {
                Ok(Ok(checkpoint)) => checkpoint,
                Ok(Err(error)) => return Err(failed(error.to_string())),
                Err(_) => return Err(failed("the job ended before the savepoint was taken".into())),
            };
            if stop {
                stopped.store(true, Ordering::SeqCst);
                abort.abort();
            }
            Ok(TakenSavepoint { location: path, checkpoint: checkpoint.id })
        })
    }

    fn vertex_metrics(&self) -> BTreeMap<VertexId, VertexMetrics> {
        let mut metrics: BTreeMap<VertexId, VertexMetrics> = self
            .counters
            .vertex_figures(&self.graph)
            .into_iter()
            .map(|(vertex, figures)| {
                let shown = VertexMetrics {
                    records_in: Some(figures.records_in),
                    records_out: Some(figures.records_out),
                    backpressure: figures.backpressure,
                    watermark: figures.watermark,
                };
                (vertex, shown)
            })
            .collect();
        // A sink vertex sends nothing on; what it wrote is its output, when it is the only one.
        let graph = &self.graph;
        let mut sinks = graph.vertices.iter().filter(|v| v.outputs.is_empty());
        if let (Some(sink), None) = (sinks.next(), sinks.next()) {
            metrics.entry(sink.id).or_default().records_out = Some(self.counters.output_rows.load(Ordering::Relaxed));
        }
        metrics
    }
}

type SavepointReply = tokio::sync::oneshot::Receiver<weir_workers::error::TaskResult<CompletedCheckpoint>>;

impl LocalRun {
    /// Hands the coordinator a savepoint request: the savepoint's path and its answer.
    fn ask_savepoint(&self) -> Result<(String, SavepointReply), ExecutorError> {
        let Some((requests, dir)) = &self.savepoints else {
            return Err(ExecutorError("a savepoint needs checkpoints: set 'execution.checkpointing.interval'".into()));
        };
        let (path, target) = run::savepoint_target(dir).map_err(|e| ExecutorError(format!("{e:#}")))?;
        let (reply, replied) = tokio::sync::oneshot::channel();
        requests
            .send(SavepointRequest { target, reply })
            .map_err(|_| ExecutorError("the job has ended: no savepoint".into()))?;
        Ok((path, replied))
    }
}

/// Whether the job already committed a checkpoint under its `state.checkpoints.dir`.
async fn has_checkpoints(config: &JobConfig, job: &JobId) -> Result<bool> {
    let Some(checkpoints) = config.checkpointing() else { return Ok(false) };
    let location = StateLocation::parse(&checkpoints.dir).map_err(|e| anyhow!("state.checkpoints.dir: {e}"))?;
    let store = CheckpointStore::new(location, job.clone(), checkpoints.num_retained);
    Ok(!store.list_ids().await.map_err(|e| anyhow!("cannot list the job's checkpoints: {e}"))?.is_empty())
}

fn unix_millis() -> u64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}
