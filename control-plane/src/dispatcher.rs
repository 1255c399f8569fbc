//! The dispatcher: the leader's service that makes jobs run as the replicated metadata says, and
//! the seam ([`JobExecutor`], [`RunningJob`]) through which it runs them.
//!
//! The metadata is the desired state (a job's status, its savepoint requests, its desired
//! parallelism); the dispatcher reconciles the runs it owns with it every
//! [`Dispatcher::TICK`] and reacts to what the runs report. Transitions it drives:
//!
//! - CREATED, no run → start a fresh run → propose RUNNING;
//! - RUNNING or RESTARTING, no run (a new leader, or this process restarted) → propose
//!   RESTARTING, start from the latest checkpoint → propose RUNNING;
//! - a run ended: finished → FINISHED; failed → the exception is recorded, and the job's restart
//!   strategy (`restart-strategy.*`, Flink's names: `fixed-delay`, `exponential-delay`, `none`)
//!   decides: RESTARTING, then after its delay a run from the latest checkpoint → RUNNING, or
//!   FAILED once it gives up; cancelled or anything while CANCELLING → CANCELED;
//! - CANCELLING with a run → cancel it (its end then proposes CANCELED); with none → CANCELED;
//! - FAILING with no run → FAILED (nothing is left to fail over);
//! - a savepoint request → ask the run for a savepoint, then `AddSavepoint` with the request's
//!   id; a stopping request ends the job FINISHED, as Flink's stop-with-savepoint does;
//! - desired parallelism ≠ the run's → stop the run with a savepoint and start again from it at
//!   the new parallelism (a rescale; a job without checkpoints cannot, and says so in its
//!   exceptions);
//! - a completed checkpoint a run reports → `CommitCheckpoint`.
//!
//! Only the leader dispatches; a replica that stops leading cancels its runs (the executor of
//! `weir standalone` lives in the leader's process, so its runs would otherwise be orphans).
//! The dispatcher knows nothing of how a job runs: the root binary provides the executor, so
//! this crate never imports `weir-workers` (DESIGN §2).
//!
//! A job's restart backoff (failures so far, the last one's time) is the leader's own: a new
//! leader starts counting again, as Flink's restart strategies do after a JobManager failover.
//!
//! A failed savepoint request is withdrawn (`WithdrawSavepoint`), its failure kept in the
//! job's exceptions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use weir_dataflow::config::JobConfig;
use weir_dataflow::ids::{JobId, VertexId};
use weir_dataflow::restart::RestartBackoff;
pub use weir_dataflow::wire::{ErrorCode, Failure, Restore, RunEnd, SavepointTaken};

use crate::api::ids::now;
use crate::api::runtime::{ActionError, JobException, JobRuntime, MetadataOnlyRuntime, VertexMetrics};
use crate::handle::{BoxFuture, ReplicaHandle};
use crate::metadata::ids::SavepointId;
use crate::metadata::records::{CompletedCheckpoint, JobRecord, JobStatus, SavepointRecord};
use crate::metadata::{Command, Response};

/// What the dispatcher asks an executor to run.
#[derive(Clone, Debug)]
pub struct ExecutionRequest {
    pub job: JobRecord,
    /// The parallelism to run at (the job's desired parallelism when the run starts).
    pub parallelism: u32,
    pub restore: Restore,
}

/// Runs jobs. `weir standalone` runs them in its own process; `weir control-plane` deploys them
/// on workers (`crate::workers::RemoteExecutor`).
pub trait JobExecutor: Send + Sync + 'static {
    /// Starts a run of `request.job`. The run reports through `reporter` until it ends.
    fn start(
        &self,
        request: ExecutionRequest,
        reporter: RunReporter,
    ) -> BoxFuture<'_, Result<Arc<dyn RunningJob>, Failure>>;

    /// Whether a run of `job` at `parallelism` could start now. A job that cannot start waits,
    /// as Flink's slot requests do.
    fn capacity_for(&self, job: &JobId, parallelism: u32) -> Capacity {
        let _ = (job, parallelism);
        Capacity::Available
    }

    /// Whether runs outlive this replica's leadership. Runs on workers do (the next leader adopts
    /// them); runs in the leader's own process do not, and are cancelled when it stops leading.
    fn runs_outlive_leadership(&self) -> bool {
        false
    }

    /// The run an earlier leader deployed for `job`, if it is still running: the dispatcher
    /// adopts it instead of starting another, and `reporter` receives its reports from now on.
    fn adopt(&self, job: &JobRecord, reporter: RunReporter) -> Adoption {
        let _ = (job, reporter);
        Adoption::Nothing
    }
}

/// What [`JobExecutor::capacity_for`] found.
pub enum Capacity {
    /// A run can start now.
    Available,
    /// Not known yet (a new leader is hearing from its workers): wait.
    Unknown,
    /// Not enough: wait; the reason goes once into the job's exceptions.
    Short(String),
}

/// What [`JobExecutor::adopt`] found.
pub enum Adoption {
    /// The job's run, still running at `parallelism`.
    Adopted { run: Arc<dyn RunningJob>, parallelism: u32 },
    /// Not known yet (this replica has led for less than a heartbeat timeout): ask again.
    Wait,
    /// No run to adopt: start one.
    Nothing,
}

/// One run of a job, as the dispatcher controls it.
pub trait RunningJob: Send + Sync + 'static {
    /// Stops the run's tasks; the run then reports [`RunEnd::Cancelled`].
    fn cancel(&self);

    /// Takes a savepoint; with `stop`, the run ends after it ([`RunEnd::Stopped`]).
    fn savepoint(&self, stop: bool) -> BoxFuture<'static, Result<SavepointTaken, Failure>>;

    /// Live figures per vertex (a vertex missing is all unknown).
    fn vertex_metrics(&self) -> BTreeMap<VertexId, VertexMetrics>;
}

/// Where a run reports. Reports of a run the dispatcher has replaced are ignored.
#[derive(Clone)]
pub struct RunReporter {
    job: JobId,
    run: u64,
    events: mpsc::UnboundedSender<Event>,
}

impl RunReporter {
    pub fn job(&self) -> &JobId {
        &self.job
    }

    /// A checkpoint is complete and durable; keep the newest `retain` of the job's.
    pub fn checkpoint_completed(&self, checkpoint: CompletedCheckpoint, retain: u32) {
        let _ = self.events.send(Event::Checkpoint { job: self.job.clone(), run: self.run, checkpoint, retain });
    }

    /// The run is over; nothing is reported after this.
    pub fn ended(&self, end: RunEnd) {
        let _ = self.events.send(Event::Ended { job: self.job.clone(), run: self.run, end });
    }
}

/// Why a savepoint was taken.
#[derive(Clone, Debug)]
enum Purpose {
    /// A user's request (`stop`: stop-with-savepoint).
    User { id: SavepointId, stop: bool },
    /// To restart at this parallelism.
    Rescale { parallelism: u32 },
}

enum Event {
    Checkpoint { job: JobId, run: u64, checkpoint: CompletedCheckpoint, retain: u32 },
    Ended { job: JobId, run: u64, end: RunEnd },
    Savepoint { job: JobId, run: u64, purpose: Purpose, result: Result<SavepointTaken, Failure> },
}

/// The most exceptions kept per job (newest win).
const MAX_EXCEPTIONS: usize = 100;

/// What the dispatcher shares with the API: live runs (for metrics) and exceptions.
#[derive(Default)]
struct Shared {
    runs: Mutex<BTreeMap<JobId, Arc<dyn RunningJob>>>,
    exceptions: Mutex<BTreeMap<JobId, Vec<JobException>>>,
}

impl Shared {
    fn record_exception(&self, job: &JobId, message: String) {
        self.record(job, None, message);
    }

    fn record_failure(&self, job: &JobId, failure: &Failure, message: String) {
        self.record(job, Some(failure.code), message);
    }

    fn record(&self, job: &JobId, code: Option<ErrorCode>, message: String) {
        tracing::warn!(job_id = %job, code = ?code, %message, "job exception");
        let mut exceptions = self.exceptions.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let list = exceptions.entry(job.clone()).or_default();
        list.push(JobException { at: now(), vertex: None, subtask: None, code, message });
        if list.len() > MAX_EXCEPTIONS {
            list.remove(0);
        }
    }

    fn set_run(&self, job: &JobId, run: Option<Arc<dyn RunningJob>>) {
        let mut runs = self.runs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match run {
            Some(run) => runs.insert(job.clone(), run),
            None => runs.remove(job),
        };
    }
}

/// The dispatcher's own record of a run.
struct Run {
    id: u64,
    parallelism: u32,
    handle: Arc<dyn RunningJob>,
    /// Savepoint requests asked of this run (answered or not).
    savepoints_asked: BTreeSet<SavepointId>,
    /// A stopping savepoint (a user's stop or a rescale) is under way: ask nothing else.
    stopping: bool,
    cancel_sent: bool,
    /// A rescale to this parallelism failed; not tried again until the target changes.
    rescale_failed_for: Option<u32>,
}

/// The leader's dispatcher. Build it with [`Dispatcher::new`], serve its [`DispatcherRuntime`]
/// in the API, and spawn [`Dispatcher::run`].
pub struct Dispatcher {
    replica: Arc<dyn ReplicaHandle>,
    executor: Arc<dyn JobExecutor>,
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<Event>,
    receiver: mpsc::UnboundedReceiver<Event>,
    runs: BTreeMap<JobId, Run>,
    next_run: u64,
    /// Terminal statuses decided but not yet committed (a proposal failed): retried each tick,
    /// so a finished job is never mistaken for one whose run went missing.
    ending: BTreeMap<JobId, JobStatus>,
    /// Per job whose runs failed: its restart strategy's state.
    backoffs: BTreeMap<JobId, RestartBackoff>,
    /// Jobs waiting out a restart delay: not started again before this instant.
    restart_at: BTreeMap<JobId, tokio::time::Instant>,
    /// Jobs waiting for resources (their exceptions say so once).
    waiting: BTreeSet<JobId>,
}

impl Dispatcher {
    /// How often the metadata is compared with the runs. Actions are proposed through Raft and
    /// applied within milliseconds; 100 ms keeps reactions prompt at a negligible cost.
    pub const TICK: Duration = Duration::from_millis(100);

    pub fn new(replica: Arc<dyn ReplicaHandle>, executor: Arc<dyn JobExecutor>) -> Dispatcher {
        let (events, receiver) = mpsc::unbounded_channel();
        Dispatcher {
            replica,
            executor,
            shared: Arc::default(),
            events,
            receiver,
            runs: BTreeMap::new(),
            next_run: 1,
            ending: BTreeMap::new(),
            backoffs: BTreeMap::new(),
            restart_at: BTreeMap::new(),
            waiting: BTreeSet::new(),
        }
    }

    /// The [`JobRuntime`] the API serves: actions record the desired change in the metadata
    /// (which this dispatcher then carries out); metrics and exceptions come from the runs, on
    /// the leader, and a follower asks the leader for them.
    pub fn runtime(&self) -> DispatcherRuntime {
        DispatcherRuntime {
            metadata: MetadataOnlyRuntime::new(self.replica.clone()),
            replica: self.replica.clone(),
            shared: self.shared.clone(),
            client: reqwest::Client::builder().timeout(LIVE_TIMEOUT).build().unwrap_or_default(),
        }
    }

    /// The route through which followers read the leader's live figures and exceptions of a
    /// job. Cluster-private and unauthenticated, like the Raft routes beside it: the API
    /// authorizes the caller on the follower before it asks.
    pub fn live_router(&self) -> axum::Router {
        axum::Router::new().route(LIVE_PATH, axum::routing::get(live)).with_state(self.shared.clone())
    }

    /// Dispatches until the process ends.
    pub async fn run(mut self) {
        let mut ticker = tokio::time::interval(Self::TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => self.reconcile().await,
                Some(event) = self.receiver.recv() => self.handle(event).await,
            }
        }
    }

    async fn reconcile(&mut self) {
        if !self.replica.is_leader() {
            // A follower does not run jobs: the new leader runs them, or adopts the runs that
            // outlive this leadership.
            let outlive = self.executor.runs_outlive_leadership();
            for (job, run) in std::mem::take(&mut self.runs) {
                if outlive {
                    tracing::info!(job_id = %job, "no longer the leader: leaving the run to the next one");
                } else {
                    tracing::info!(job_id = %job, "no longer the leader: cancelling the run");
                    run.handle.cancel();
                }
                self.shared.set_run(&job, None);
            }
            self.ending.clear();
            self.waiting.clear();
            return;
        }
        for (job, status) in std::mem::take(&mut self.ending) {
            self.propose_status(&job, status).await;
        }
        let jobs: Vec<JobRecord> = self.replica.reader().read(|metadata| {
            metadata
                .jobs()
                .filter(|job| !job.status.is_terminal() || self.runs.contains_key(&job.id))
                .cloned()
                .collect()
        });
        for job in jobs {
            if self.ending.contains_key(&job.id) {
                continue;
            }
            self.reconcile_job(job).await;
        }
    }

    async fn reconcile_job(&mut self, job: JobRecord) {
        use JobStatus::*;
        let id = job.id.clone();
        let Some(run) = self.runs.get_mut(&id) else {
            if matches!(job.status, Created | Running | Restarting) && job.deployment.is_some() {
                // An earlier leader deployed it: its run may still be going.
                match self.adopt(&job) {
                    Adoption::Adopted { .. } => {
                        self.propose_status(&id, Running).await;
                        return;
                    }
                    Adoption::Wait => return,
                    Adoption::Nothing => {}
                }
            }
            match job.status {
                Created => {
                    if !self.has_capacity(&job) {
                        return;
                    }
                    let restore = match job.deployment {
                        // A deployed attempt may have checkpointed before it was lost.
                        Some(_) => Restore::LatestCheckpoint,
                        None => Restore::Nothing,
                    };
                    if self.start(&job, restore, job.desired_parallelism).await {
                        self.propose_status(&id, Running).await;
                    }
                }
                Running | Restarting => {
                    if self.restart_at.get(&id).is_some_and(|at| tokio::time::Instant::now() < *at) {
                        return;
                    }
                    if !self.has_capacity(&job) {
                        return;
                    }
                    self.restart_at.remove(&id);
                    tracing::info!(job_id = %id, "the job has no run here: restarting it from its latest checkpoint");
                    self.propose_status(&id, Restarting).await;
                    if self.start(&job, Restore::LatestCheckpoint, job.desired_parallelism).await {
                        self.propose_status(&id, Running).await;
                    }
                }
                Failing => self.end(&id, Failed).await,
                Cancelling => self.end(&id, Cancelled).await,
                Cancelled | Finished | Failed => {}
            }
            return;
        };
        match job.status {
            // Started, but RUNNING was not committed (no quorum then): say it again.
            Created | Restarting => {
                self.propose_status(&id, Running).await;
            }
            Cancelling | Failing | Cancelled | Finished | Failed => {
                if !run.cancel_sent {
                    run.handle.cancel();
                    run.cancel_sent = true;
                }
                if job.status.is_terminal() {
                    // Nothing to report any more (cancelled before it started running).
                    self.runs.remove(&id);
                    self.shared.set_run(&id, None);
                }
            }
            Running => {
                if run.stopping || run.cancel_sent {
                    return;
                }
                if let Some(request) = job.savepoint_requests.iter().find(|r| !run.savepoints_asked.contains(&r.id)) {
                    run.savepoints_asked.insert(request.id.clone());
                    run.stopping = request.stop;
                    let purpose = Purpose::User { id: request.id.clone(), stop: request.stop };
                    self.ask_savepoint(&id, purpose, request.stop);
                } else if run.parallelism != job.desired_parallelism
                    && run.rescale_failed_for != Some(job.desired_parallelism)
                {
                    tracing::info!(job_id = %id, from = run.parallelism, to = job.desired_parallelism, "rescaling");
                    run.stopping = true;
                    self.ask_savepoint(&id, Purpose::Rescale { parallelism: job.desired_parallelism }, true);
                }
            }
        }
    }

    /// Asks the job's run for a savepoint; the answer comes back as an event.
    fn ask_savepoint(&self, job: &JobId, purpose: Purpose, stop: bool) {
        let Some(run) = self.runs.get(job) else { return };
        let answer = run.handle.savepoint(stop);
        let (events, job, run) = (self.events.clone(), job.clone(), run.id);
        tokio::spawn(async move {
            let result = answer.await;
            let _ = events.send(Event::Savepoint { job, run, purpose, result });
        });
    }

    /// Whether the executor could start `job` now; if not, says so once in its exceptions.
    fn has_capacity(&mut self, job: &JobRecord) -> bool {
        match self.executor.capacity_for(&job.id, job.desired_parallelism) {
            Capacity::Available => {
                self.waiting.remove(&job.id);
                true
            }
            Capacity::Unknown => false,
            Capacity::Short(why) => {
                if self.waiting.insert(job.id.clone()) {
                    self.shared.record_exception(&job.id, format!("the job waits for resources: {why}"));
                }
                false
            }
        }
    }

    /// Asks the executor for the run an earlier leader deployed; keeps it when there is one.
    fn adopt(&mut self, job: &JobRecord) -> Adoption {
        let reporter = self.reporter(&job.id);
        let run = reporter.run;
        let adoption = self.executor.adopt(job, reporter);
        if let Adoption::Adopted { run: handle, parallelism } = &adoption {
            tracing::info!(job_id = %job.id, parallelism, "adopted the running attempt");
            self.keep_run(&job.id, run, *parallelism, handle.clone());
        }
        adoption
    }

    /// A reporter for a new run of `job`.
    fn reporter(&mut self, job: &JobId) -> RunReporter {
        let run = self.next_run;
        self.next_run += 1;
        RunReporter { job: job.clone(), run, events: self.events.clone() }
    }

    fn keep_run(&mut self, job: &JobId, run: u64, parallelism: u32, handle: Arc<dyn RunningJob>) {
        self.shared.set_run(job, Some(handle.clone()));
        let kept = Run {
            id: run,
            parallelism,
            handle,
            savepoints_asked: BTreeSet::new(),
            stopping: false,
            cancel_sent: false,
            rescale_failed_for: None,
        };
        self.runs.insert(job.clone(), kept);
    }

    /// Starts a run; on failure records why and lets the job's restart strategy decide (as for
    /// a run that failed). Answers whether it started.
    async fn start(&mut self, job: &JobRecord, restore: Restore, parallelism: u32) -> bool {
        let reporter = self.reporter(&job.id);
        let run = reporter.run;
        let request = ExecutionRequest { job: job.clone(), parallelism, restore };
        match self.executor.start(request, reporter).await {
            Ok(handle) => {
                tracing::info!(job_id = %job.id, parallelism, "run started");
                self.keep_run(&job.id, run, parallelism, handle);
                true
            }
            Err(failure) => {
                let message = format!("the job could not start: {}", failure.message);
                self.failed(&job.id, Failure { message, ..failure }).await;
                false
            }
        }
    }

    /// A run failed, or could not start: records why, then restarts the job after its restart
    /// strategy's delay, or ends it FAILED when the strategy gives up — or at once when the
    /// failure is one a restart cannot mend (a script that no longer plans, a malformed record).
    async fn failed(&mut self, job: &JobId, failure: Failure) {
        if !failure.retryable {
            let message =
                format!("{} (not restarted: {} does not go away by running again)", failure.message, failure.code);
            self.shared.record_failure(job, &failure, message);
            return self.end(job, JobStatus::Failed).await;
        }
        self.shared.record_failure(job, &failure, failure.message.clone());
        match self.restart_delay(job) {
            Some(delay) => {
                tracing::warn!(job_id = %job, ?delay, "the run failed; restarting from the latest checkpoint");
                self.restart_at.insert(job.clone(), tokio::time::Instant::now() + delay);
                if !self.propose_status(job, JobStatus::Restarting).await {
                    // Without a quorum the job stays RUNNING with no run: the next tick restarts
                    // it once the delay is over, all the same.
                    tracing::warn!(job_id = %job, "RESTARTING not committed");
                }
            }
            None => self.end(job, JobStatus::Failed).await,
        }
    }

    /// Whether `run` is the job's current run (reports of replaced runs are ignored).
    fn is_current(&self, job: &JobId, run: u64) -> bool {
        self.runs.get(job).is_some_and(|current| current.id == run)
    }

    async fn handle(&mut self, event: Event) {
        match event {
            Event::Checkpoint { job, run, checkpoint, retain } => {
                if !self.is_current(&job, run) {
                    return;
                }
                let id = checkpoint.id;
                match self.replica.propose(Command::CommitCheckpoint { job: job.clone(), checkpoint, retain }).await {
                    // Older checkpoints' state is deleted by the run's own retention.
                    Ok(Response::Rejected(rejection)) => {
                        tracing::debug!(job_id = %job, checkpoint = %id, %rejection, "checkpoint not recorded")
                    }
                    Ok(_) => tracing::debug!(job_id = %job, checkpoint = %id, "checkpoint recorded"),
                    Err(error) => tracing::warn!(job_id = %job, checkpoint = %id, %error, "checkpoint not recorded"),
                }
            }
            Event::Ended { job, run, end } => {
                // A stopped run's savepoint answer decides what follows (finish or rescale).
                if !self.is_current(&job, run) || end == RunEnd::Stopped {
                    return;
                }
                self.runs.remove(&job);
                self.shared.set_run(&job, None);
                let cancelling = self.status_of(&job) == Some(JobStatus::Cancelling);
                let status = match end {
                    _ if cancelling => JobStatus::Cancelled,
                    RunEnd::Finished => JobStatus::Finished,
                    RunEnd::Cancelled => JobStatus::Cancelled,
                    RunEnd::Failed(failure) => return self.failed(&job, failure).await,
                    RunEnd::Stopped => return,
                };
                tracing::info!(job_id = %job, %status, "run ended");
                self.end(&job, status).await;
            }
            Event::Savepoint { job, run, purpose, result } => self.savepoint_answered(job, run, purpose, result).await,
        }
    }

    async fn savepoint_answered(
        &mut self,
        job: JobId,
        run: u64,
        purpose: Purpose,
        result: Result<SavepointTaken, Failure>,
    ) {
        let current = self.is_current(&job, run);
        let taken = match result {
            Ok(taken) => taken,
            Err(error) => {
                let what = match &purpose {
                    Purpose::User { id, .. } => format!("savepoint {id} failed: {error}"),
                    Purpose::Rescale { parallelism } => format!("rescale to {parallelism} failed: {error}"),
                };
                self.shared.record_failure(&job, &error, what);
                if let Purpose::User { id, .. } = &purpose {
                    let withdraw = Command::WithdrawSavepoint { job: job.clone(), savepoint: id.clone() };
                    if let Err(error) = self.replica.propose(withdraw).await {
                        // A later leader asks for it again; that is all that is lost.
                        tracing::warn!(job_id = %job, savepoint = %id, %error, "failed savepoint request not withdrawn");
                    }
                }
                if let Some(run) = self.runs.get_mut(&job).filter(|_| current) {
                    run.stopping = false;
                    if let Purpose::Rescale { parallelism } = purpose {
                        run.rescale_failed_for = Some(parallelism);
                    }
                }
                return;
            }
        };
        match purpose {
            Purpose::User { id, stop } => {
                let tenant = self.replica.reader().read(|m| m.job(&job).map(|record| record.tenant.clone()));
                let Some(tenant) = tenant else { return };
                let record = SavepointRecord {
                    id: id.clone(),
                    job: job.clone(),
                    tenant,
                    location: taken.location,
                    checkpoint: taken.checkpoint,
                    created_at: now(),
                };
                if let Err(error) = self.replica.propose(Command::AddSavepoint { savepoint: record }).await {
                    tracing::warn!(job_id = %job, savepoint = %id, %error, "savepoint taken but not recorded");
                }
                if stop && current {
                    self.runs.remove(&job);
                    self.shared.set_run(&job, None);
                    self.end(&job, JobStatus::Finished).await;
                }
            }
            Purpose::Rescale { parallelism } => {
                if !current {
                    return;
                }
                self.runs.remove(&job);
                self.shared.set_run(&job, None);
                let record = self.replica.reader().read(|m| m.job(&job).cloned());
                let Some(record) = record.filter(|record| record.status == JobStatus::Running) else { return };
                tracing::info!(job_id = %job, parallelism, location = %taken.location, "restarting from the savepoint");
                self.start(&record, Restore::Savepoint { location: taken.location }, parallelism).await;
            }
        }
    }

    /// A failure of `job`'s run: the delay before its next run, or `None` when its restart
    /// strategy gives up (or the job is gone).
    fn restart_delay(&mut self, job: &JobId) -> Option<Duration> {
        let record = self.replica.reader().read(|metadata| metadata.job(job).cloned())?;
        let backoff = self.backoffs.entry(job.clone()).or_insert_with(|| {
            let mut config = JobConfig::default();
            for (key, value) in &record.config {
                // Validated when the job was submitted; a value refused now is left at its default.
                let _ = config.set(key, value);
            }
            RestartBackoff::new(config.restart_policy())
        });
        backoff.on_failure_now()
    }

    fn status_of(&self, job: &JobId) -> Option<JobStatus> {
        self.replica.reader().read(|metadata| metadata.job(job).map(|record| record.status))
    }

    /// Proposes a terminal `status`; kept for the next tick if it cannot be committed now.
    async fn end(&mut self, job: &JobId, status: JobStatus) {
        self.backoffs.remove(job);
        self.restart_at.remove(job);
        if !self.propose_status(job, status).await {
            self.ending.insert(job.clone(), status);
        }
    }

    /// Proposes `status` for `job`; answers false only when it should be tried again (no
    /// quorum). A rejection (the job moved on meanwhile, e.g. a user cancelled it) is final.
    async fn propose_status(&self, job: &JobId, status: JobStatus) -> bool {
        match self.replica.propose(Command::SetJobStatus { job: job.clone(), status, at: now() }).await {
            Ok(Response::Rejected(rejection)) => {
                tracing::debug!(job_id = %job, %status, %rejection, "status not changed");
                true
            }
            Ok(_) => true,
            Err(error) => {
                tracing::warn!(job_id = %job, %status, %error, "status not committed; will retry");
                false
            }
        }
    }
}

/// Where a follower asks the leader for a job's live figures and exceptions.
const LIVE_PATH: &str = "/raft/jobs/{id}/live";

/// How long a follower waits for the leader's live figures before showing them as unknown.
const LIVE_TIMEOUT: Duration = Duration::from_secs(1);

/// A job's live figures and exceptions (newest first), as the leader has them.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct LiveJob {
    metrics: Vec<(VertexId, VertexMetrics)>,
    exceptions: Vec<JobException>,
}

impl Shared {
    fn live(&self, job: &JobId) -> LiveJob {
        let run = self.runs.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(job).cloned();
        let exceptions = self.exceptions.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        LiveJob {
            metrics: run.map(|run| run.vertex_metrics().into_iter().collect()).unwrap_or_default(),
            exceptions: exceptions.get(job).map(|list| list.iter().rev().cloned().collect()).unwrap_or_default(),
        }
    }
}

async fn live(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> axum::Json<LiveJob> {
    axum::Json(shared.live(&JobId(id)))
}

/// The [`JobRuntime`] of a replica that dispatches: actions are recorded as desired state, as
/// [`MetadataOnlyRuntime`] does (the dispatcher acts on them, and so would a new leader's);
/// live figures and exceptions come from the leader's dispatcher.
pub struct DispatcherRuntime {
    metadata: MetadataOnlyRuntime,
    replica: Arc<dyn ReplicaHandle>,
    shared: Arc<Shared>,
    client: reqwest::Client,
}

impl DispatcherRuntime {
    /// The job's live figures and exceptions: this replica's if it leads, else the leader's
    /// (unknown, i.e. empty, when the leader does not answer within [`LIVE_TIMEOUT`]).
    async fn live(&self, job: &JobId) -> LiveJob {
        let view = self.replica.cluster();
        if view.leader == Some(view.id) {
            return self.shared.live(job);
        }
        let Some(leader) = view.leader.and_then(|id| view.members.into_iter().find(|m| m.id == id)) else {
            return LiveJob::default();
        };
        let url = format!("http://{}{}", leader.address, LIVE_PATH.replace("{id}", &job.0));
        match self.client.get(url).send().await {
            Ok(response) if response.status().is_success() => response.json().await.unwrap_or_default(),
            _ => LiveJob::default(),
        }
    }
}

impl JobRuntime for DispatcherRuntime {
    fn vertex_metrics(&self, job: JobId) -> BoxFuture<'_, BTreeMap<VertexId, VertexMetrics>> {
        Box::pin(async move { self.live(&job).await.metrics.into_iter().collect() })
    }

    fn exceptions(&self, job: JobId) -> BoxFuture<'_, Vec<JobException>> {
        Box::pin(async move { self.live(&job).await.exceptions })
    }

    fn cancel(&self, job: JobId) -> BoxFuture<'_, Result<JobStatus, ActionError>> {
        self.metadata.cancel(job)
    }

    fn stop_with_savepoint(&self, job: JobId) -> BoxFuture<'_, Result<SavepointId, ActionError>> {
        self.metadata.stop_with_savepoint(job)
    }

    fn trigger_savepoint(&self, job: JobId) -> BoxFuture<'_, Result<SavepointId, ActionError>> {
        self.metadata.trigger_savepoint(job)
    }

    fn rescale(&self, job: JobId, parallelism: u32) -> BoxFuture<'_, Result<(), ActionError>> {
        self.metadata.rescale(job, parallelism)
    }
}
