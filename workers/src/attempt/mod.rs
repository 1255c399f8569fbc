//! One attempt of a job in this process: planned from its SQL at the attempt's parallelism, run
//! with the local runtime ([`crate::runtime::run_local`]), and watched. A worker runs the
//! attempts its control plane deploys this way, and `weir standalone` its jobs.
//!
//! `state.checkpoints.dir` defaults to the given state folder (the script may set its own), and
//! the job's folder there is its id, so two jobs never share checkpoints whatever their
//! `pipeline.name`. Every checkpoint the attempt's coordinator commits is reported, then the
//! attempt's end ([`AttemptEvent`]). A restart after a crash restores the newest checkpoint in
//! the state store, which is never older than the one the control plane recorded: the
//! coordinator commits to the store first, and the filesystem sink publishes only after that
//! commit, so the store's newest is the one the published output agrees with.
//!
//! Figures, per vertex, live: records into the head of its chain and out of its tail, its
//! lowest subtask watermark, and backpressure (the highest share of a subtask's time spent
//! blocked sending); a job's single sink vertex shows the rows its sink wrote as its output.

pub mod setup;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, oneshot};
use weir_dataflow::clock::unix_millis;
use weir_dataflow::graph::JobGraph;
use weir_dataflow::ids::{JobId, VertexId};
use weir_dataflow::sql::plan_script;
use weir_dataflow::wire::{
    CheckpointDone, ErrorCode, Failure, Restore, RunEnd, SavepointFormat, SavepointTaken, VertexMetrics,
};
use weir_net::Transport;
use weir_shuffle_service::remote::RemoteShuffle;
use weir_shuffle_service::{LocalShuffle, ShuffleService};
use weir_state_store::CompletedCheckpoint;

use crate::checkpoint::coordinator::SavepointRequest;
use crate::connectors::sinks::PrintTo;
use crate::error::TaskResult;
use crate::runtime::{JobCounters, JobPart, LocalJob, ManagedMemory, PartLink, budgeted_tasks, run_local};

/// What an attempt reports, in order: checkpoints, then its end.
#[derive(Debug)]
pub enum AttemptEvent {
    Checkpoint(CheckpointDone),
    Ended(RunEnd),
}

/// An attempt to run in this process.
pub struct AttemptRequest {
    pub job: JobId,
    pub sql: String,
    pub parallelism: u32,
    pub restore: Restore,
    /// The default `state.checkpoints.dir`.
    pub state_dir: String,
    /// When the attempt's subtasks are spread over several processes: this one's part.
    pub part: Option<AttemptPart>,
    /// Where `print` tables write: the job's log on a cluster's worker.
    pub print: PrintTo,
    /// A slot's managed memory, shared by the tasks of the slot that keep keyed state.
    pub memory: Option<ManagedMemory>,
}

/// This process's part of an attempt spread over several (see [`crate::runtime::JobPart`]).
pub struct AttemptPart {
    pub subtasks: BTreeSet<u32>,
    pub link: PartLink,
    /// The shuffle server every part exchanges through, the attempt's namespace there, and the
    /// token that opens it.
    pub shuffle: String,
    /// How to reach the shuffle server (the worker's `--internal-ca`).
    pub transport: Transport,
    pub namespace: String,
    pub token: String,
}

/// Plans and starts an attempt in this process; its checkpoints and end arrive on the receiver.
/// A script that no longer plans is an `invalid-sql` failure (not worth a retry); storage that
/// cannot be reached is `state-unavailable` (worth one).
pub async fn start(
    request: AttemptRequest,
) -> Result<(Arc<RunningAttempt>, mpsc::UnboundedReceiver<AttemptEvent>), Failure> {
    let AttemptRequest { job, sql, parallelism, restore, state_dir, part, print, memory } = request;
    let mut config = setup::base_config(Some(parallelism))?;
    // Defaults, not pinned: a script's own `SET`s win. Savepoints go in a folder per job, so
    // two jobs' savepoints taken in the same millisecond never meet.
    let savepoints = format!("{}/savepoints/{}", state_dir.trim_end_matches('/'), job);
    for (key, value) in [("state.checkpoints.dir", &state_dir), ("state.savepoints.dir", &savepoints)] {
        config.set(key, value).map_err(|e| Failure::new(ErrorCode::InvalidOption, format!("{key}: {e}")))?;
    }
    if let Restore::Savepoint { location } = &restore {
        config
            .set("execution.savepoint.path", location)
            .map_err(|e| Failure::new(ErrorCode::InvalidOption, format!("execution.savepoint.path: {e}")))?;
        config.pin("execution.savepoint.path");
    }
    // Planning takes milliseconds of CPU: off the async threads.
    let planned = tokio::task::spawn_blocking(move || plan_script(&sql, config))
        .await
        .map_err(|_| Failure::new(ErrorCode::PlannerFailed, "the SQL planner failed on this script; please report it"))?
        .map_err(|e| Failure::new(ErrorCode::InvalidSql, format!("the job's script does not plan: {e}")))?;
    let plan = planned.plan.ok_or_else(|| {
        Failure::new(ErrorCode::NoSink, "the script has no INSERT INTO: a job writes to a sink table")
    })?;
    let mut job_config = planned.config;
    if restore == Restore::LatestCheckpoint {
        setup::start_from_savepoint_once(&mut job_config, &job).await?;
    }
    let graph = setup::job_graph(&plan, &job_config);
    // Without checkpoints there is nothing to resume from: the job starts over.
    let resume = restore == Restore::LatestCheckpoint && job_config.checkpointing().is_some() && !plan.batch;
    let checkpointing = setup::checkpointing(&plan, &job_config, &job, resume).await?;
    if let Some(checkpointing) = &checkpointing {
        for skipped in &checkpointing.skipped {
            tracing::warn!(job_id = %job, "skipped checkpoint {skipped}");
        }
        tracing::info!(job_id = %job, "{}", checkpointing.restored.describe(&job));
    }
    let checkpointing = checkpointing.map(|c| c.setup);
    let savepoints_dir = checkpointing.as_ref().map(|setup| setup::savepoints_dir(&job_config, &setup.config));
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
        Some(AttemptPart { subtasks, link, shuffle, transport, namespace, token }) => {
            let shuffle = RemoteShuffle::new(shuffle, namespace).with_token(token).with_transport(transport);
            (Arc::new(shuffle), Some(JobPart { subtasks, link: Some(link) }))
        }
    };
    let memory = memory.map(|slot| slot.per_task(budgeted_tasks(&plan, &graph, true)));
    let local = LocalJob {
        plan: Arc::new(plan),
        graph: graph.clone(),
        shuffle,
        part,
        collect: None,
        print,
        counters: counters.clone(),
        checkpointing,
        restart: None,
        savepoints: savepoint_receiver,
        checkpoint_listener: Some(checkpoint_sender),
        memory,
    };
    let mut task = tokio::spawn(run_local(local));
    let stopped = Arc::new(AtomicBool::new(false));
    let handle = Arc::new(RunningAttempt {
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
            AttemptEvent::Checkpoint(CheckpointDone {
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
            Ok(Err(error)) => RunEnd::Failed(error.failure()),
            Err(error) if error.is_cancelled() && stopped.load(Ordering::SeqCst) => RunEnd::Stopped,
            Err(error) if error.is_cancelled() => RunEnd::Cancelled,
            Err(_) => RunEnd::Failed(Failure::internal("a task of the job panicked; please report it")),
        };
        let _ = events.send(AttemptEvent::Ended(end));
    });
    Ok((handle, receiver))
}

/// A running attempt: its task, and what a worker or a dispatcher asks of it.
pub struct RunningAttempt {
    abort: tokio::task::AbortHandle,
    /// Set before a stopping savepoint aborts the task, so its end reads as stopped.
    stopped: Arc<AtomicBool>,
    /// The coordinator's savepoint requests and where savepoints go (checkpointed jobs only).
    savepoints: Option<(mpsc::UnboundedSender<SavepointRequest>, String)>,
    counters: Arc<JobCounters>,
    graph: Arc<JobGraph>,
}

type SavepointReply = oneshot::Receiver<TaskResult<CompletedCheckpoint>>;

impl RunningAttempt {
    /// Stops the attempt's tasks; it then reports [`RunEnd::Cancelled`]. The filesystem sink's
    /// next attempt deletes what an aborted one left in progress.
    pub fn cancel(&self) {
        self.abort.abort();
    }

    /// Takes a savepoint; with `stop`, the attempt ends after it ([`RunEnd::Stopped`]).
    pub fn savepoint(
        &self,
        stop: bool,
        format: SavepointFormat,
    ) -> impl Future<Output = Result<SavepointTaken, Failure>> + Send + 'static {
        let asked = self.ask_savepoint(stop, format);
        let (abort, stopped) = (self.abort.clone(), self.stopped.clone());
        async move {
            let (path, replied) = asked?;
            let failed = |why: String| Failure::new(ErrorCode::SavepointFailed, format!("savepoint {path}: {why}"));
            let checkpoint = match replied.await {
                Ok(Ok(checkpoint)) => checkpoint,
                Ok(Err(error)) => return Err(failed(error.to_string())),
                Err(_) => return Err(failed("the job ended before the savepoint was taken".into())),
            };
            if stop {
                stopped.store(true, Ordering::SeqCst);
                abort.abort();
            }
            Ok(SavepointTaken { location: path, checkpoint: checkpoint.id })
        }
    }

    /// Live figures per vertex.
    pub fn vertex_metrics(&self) -> BTreeMap<VertexId, VertexMetrics> {
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
                    busy_ms: Some(figures.busy_ms),
                    backlog: figures.backlog,
                };
                (vertex, shown)
            })
            .collect();
        // A sink vertex sends nothing on; what it wrote is its output, when it is the only one.
        let mut sinks = self.graph.vertices.iter().filter(|v| v.outputs.is_empty());
        if let (Some(sink), None) = (sinks.next(), sinks.next()) {
            metrics.entry(sink.id).or_default().records_out = Some(self.counters.output_rows.load(Ordering::Relaxed));
        }
        metrics
    }

    /// Hands the coordinator a savepoint request: the savepoint's path and its answer.
    fn ask_savepoint(&self, stop: bool, format: SavepointFormat) -> Result<(String, SavepointReply), Failure> {
        let Some((requests, dir)) = &self.savepoints else {
            return Err(Failure::new(
                ErrorCode::SavepointFailed,
                "a savepoint needs checkpoints: set 'execution.checkpointing.interval'",
            ));
        };
        let (path, target) = setup::savepoint_target(dir)?;
        let (reply, replied) = oneshot::channel();
        requests
            .send(SavepointRequest { target, stop, format, reply })
            .map_err(|_| Failure::new(ErrorCode::JobNotRunning, "the job has ended: no savepoint"))?;
        Ok((path, replied))
    }
}
