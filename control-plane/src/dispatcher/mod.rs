//! The dispatcher: the leader's service that makes jobs run as the replicated metadata says, and
//! the seam ([`JobExecutor`], [`RunningJob`]) through which it runs them.
//!
//! The metadata is the desired state (a job's status, its savepoint requests, its desired
//! parallelism). The job controller ([`controller`], pure: `decide(job, observed, now) ->
//! actions`) compares it with what the leader knows of the job's run; this module is its shell:
//! every [`Dispatcher::TICK`], and on every report of a run, it reads the metadata and the
//! executor, asks the controller, and carries out the actions (Raft proposals, starting,
//! cancelling and asking runs for savepoints). Transitions:
//!
//! - CREATED, no run → start a fresh run → propose RUNNING;
//! - RUNNING or RESTARTING, no run (a new leader, or this process restarted) → propose
//!   RESTARTING, start from the latest checkpoint → propose RUNNING;
//! - a run ended: finished → FINISHED; failed → the exception is recorded, and the job's restart
//!   strategy (`restart-strategy.*`, Flink's names: `fixed-delay`, `exponential-delay`, `none`)
//!   decides: RESTARTING, then after its delay a run from the latest checkpoint → RUNNING, or
//!   FAILED once it gives up; a failure no restart mends (not retryable in the error table) →
//!   FAILED at once; cancelled or anything while CANCELLING → CANCELED;
//! - CANCELLING with a run → cancel it (its end then proposes CANCELED); with none → CANCELED;
//! - FAILING with no run → FAILED (nothing is left to fail over);
//! - a savepoint request → ask the run for a savepoint, then `AddSavepoint` with the request's
//!   id; a stopping request ends the job FINISHED, as Flink's stop-with-savepoint does; a failed
//!   request is withdrawn (`WithdrawSavepoint`), its failure kept in the job's exceptions;
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

mod controller;
mod live;
mod scaling;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use weir_dataflow::clock::{Clock, SystemClock};
use weir_dataflow::ids::{JobId, VertexId};
pub use weir_dataflow::wire::{ErrorCode, Failure, Restore, RunEnd, SavepointFormat, SavepointTaken};

pub use self::controller::{Action, Adoptable, JobControl, Observed, Purpose};
pub use self::live::DispatcherRuntime;
use crate::api::ids::now;
use crate::api::runtime::{JobException, VertexMetrics};
use crate::handle::{BoxFuture, ReplicaHandle};
use crate::metadata::ids::UnixMillis;
use crate::metadata::records::{
    CompletedCheckpoint, JobRecord, JobStatus, Quota, SavepointRecord, ScalingKind, Suspension,
};
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
#[derive(Clone, Debug, PartialEq, Eq)]
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
    fn savepoint(&self, stop: bool, format: SavepointFormat) -> BoxFuture<'static, Result<SavepointTaken, Failure>>;

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
    fn record(&self, job: &JobId, code: Option<ErrorCode>, message: String) {
        tracing::warn!(job_id = %job, code = ?code, %message, "job exception");
        let mut exceptions = self.exceptions.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let list = exceptions.entry(job.clone()).or_default();
        list.push(JobException { at: now(), vertex: None, subtask: None, code, message });
        if list.len() > MAX_EXCEPTIONS {
            list.remove(0);
        }
    }

    fn run(&self, job: &JobId) -> Option<Arc<dyn RunningJob>> {
        self.runs.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(job).cloned()
    }

    fn set_run(&self, job: &JobId, run: Option<Arc<dyn RunningJob>>) {
        let mut runs = self.runs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match run {
            Some(run) => runs.insert(job.clone(), run),
            None => runs.remove(job),
        };
    }
}

/// The leader's dispatcher: the shell around the job controller ([`controller`]). It reads the
/// metadata and the executor, asks the controller what to do, and does it. Build it with
/// [`Dispatcher::new`], serve its [`DispatcherRuntime`] in the API, and spawn
/// [`Dispatcher::run`].
pub struct Dispatcher {
    replica: Arc<dyn ReplicaHandle>,
    executor: Arc<dyn JobExecutor>,
    clock: Arc<dyn Clock>,
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<Event>,
    receiver: mpsc::UnboundedReceiver<Event>,
    /// The controller's memory of each job this leader dispatches.
    controls: BTreeMap<JobId, JobControl>,
    next_run: u64,
    /// The autoscaler's shell ([`scaling`]).
    scaling: scaling::Scaling,
    /// The operator's default quota of a tenant: the autoscaler never raises a job past its
    /// tenant's slots. `None`: no quota.
    quota: Option<Quota>,
}

impl Dispatcher {
    /// How often the metadata is compared with the runs. Actions are proposed through Raft and
    /// applied within milliseconds; 100 ms keeps reactions prompt at a negligible cost.
    pub const TICK: Duration = Duration::from_millis(100);

    pub fn new(replica: Arc<dyn ReplicaHandle>, executor: Arc<dyn JobExecutor>) -> Dispatcher {
        Dispatcher::with_clock(replica, executor, Arc::new(SystemClock))
    }

    /// A dispatcher whose restart delays run by `clock`.
    pub fn with_clock(replica: Arc<dyn ReplicaHandle>, executor: Arc<dyn JobExecutor>, clock: Arc<dyn Clock>) -> Self {
        let (events, receiver) = mpsc::unbounded_channel();
        Dispatcher {
            replica,
            executor,
            clock,
            shared: Arc::default(),
            events,
            receiver,
            controls: BTreeMap::new(),
            next_run: 1,
            scaling: scaling::Scaling::default(),
            quota: None,
        }
    }

    /// The operator's default quota of a tenant, which the autoscaler keeps to.
    pub fn with_quota(mut self, quota: Quota) -> Dispatcher {
        self.quota = Some(quota);
        self
    }

    /// The [`JobRuntime`] the API serves: actions record the desired change in the metadata
    /// (which this dispatcher then carries out); metrics and exceptions come from the runs, on
    /// the leader, and a follower asks the leader for them.
    pub fn runtime(&self) -> DispatcherRuntime {
        DispatcherRuntime::new(self.replica.clone(), self.shared.clone())
    }

    /// The route through which followers read the leader's live figures and exceptions of a
    /// job, for the internal listener: it takes the peer key, and the API authorizes the
    /// caller on the follower before the follower asks.
    pub fn live_router(&self, peer_key: weir_dataflow::auth::ClusterKey) -> axum::Router {
        live::router(self.shared.clone(), peer_key)
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
            for (job, control) in &mut self.controls {
                if control.run().is_some() {
                    if outlive {
                        tracing::info!(job_id = %job, "no longer the leader: leaving the run to the next one");
                    } else if let Some(run) = self.shared.run(job) {
                        tracing::info!(job_id = %job, "no longer the leader: cancelling the run");
                        run.cancel();
                    }
                    self.shared.set_run(job, None);
                }
                control.step_down();
            }
            return;
        }
        let jobs: Vec<JobRecord> = self.replica.reader().read(|metadata| {
            let busy = |id: &JobId| self.controls.get(id).is_some_and(|control| !control.is_idle());
            metadata.jobs().filter(|job| !job.status.is_terminal() || busy(&job.id)).cloned().collect()
        });
        let seen: BTreeSet<JobId> = jobs.iter().map(|job| job.id.clone()).collect();
        for job in jobs {
            self.reconcile_job(job).await;
        }
        self.controls.retain(|job, control| seen.contains(job) || !control.is_idle());
        self.autoscale().await;
    }

    /// The autoscaler's round: samples running jobs and carries out its decisions; wakes
    /// suspended jobs whose sources have input.
    async fn autoscale(&mut self) {
        if self.scaling.sample_due() {
            let now_ms = self.clock.now_millis();
            let running: Vec<JobRecord> = self
                .replica
                .reader()
                .read(|metadata| metadata.jobs().filter(|job| job.status == JobStatus::Running).cloned().collect());
            for job in &running {
                let Some(control) = self.controls.get(&job.id) else { continue };
                let (Some(run), Some(parallelism)) = (control.run(), control.run_parallelism()) else { continue };
                let Some(handle) = self.shared.run(&job.id) else { continue };
                let sample = scaling::Running { job, run, parallelism, metrics: handle.vertex_metrics() };
                match self.scaling.step(sample, now_ms).await {
                    None => {}
                    Some(scaling::Step::Rescale { to, reasons }) => self.rescale(job, parallelism, to, reasons).await,
                    Some(scaling::Step::Suspend { idle_since, reason }) => {
                        tracing::info!(job_id = %job.id, %reason, "the autoscaler suspends the job");
                        let entry = scaling::record(&job.id, ScalingKind::Suspend, parallelism, 0, vec![reason]);
                        self.propose_quietly(&job.id, entry).await;
                        if let Some(control) = self.controls.get_mut(&job.id) {
                            control.request_suspend(idle_since);
                        }
                    }
                }
            }
            self.scaling.retain(|id| running.iter().any(|job| &job.id == id));
        }
        if self.scaling.probe_due() {
            let suspended: Vec<JobRecord> = self
                .replica
                .reader()
                .read(|metadata| metadata.jobs().filter(|job| job.status == JobStatus::Suspended).cloned().collect());
            self.scaling.retain_suspended(|id| suspended.iter().any(|job| &job.id == id));
            for job in suspended {
                let Some(why) = self.scaling.input_arrived(&job).await else { continue };
                tracing::info!(job_id = %job.id, %why, "input came: resuming the suspended job");
                let to = job.desired_parallelism;
                self.propose_quietly(&job.id, scaling::record(&job.id, ScalingKind::Resume, 0, to, vec![why])).await;
                self.propose_quietly(&job.id, Command::ResumeJob { job: job.id.clone(), at: now() }).await;
            }
        }
    }

    /// Sets the parallelism the autoscaler chose (within the tenant's quota), recording why.
    async fn rescale(&self, job: &JobRecord, from: u32, to: u32, mut reasons: Vec<String>) {
        tracing::info!(job_id = %job.id, from, to, ?reasons, "the autoscaler rescales the job");
        let set = Command::SetDesiredParallelism { job: job.id.clone(), parallelism: to, quota: self.quota };
        match self.replica.propose(set).await {
            Ok(Response::Rejected(rejection)) => {
                let message = format!("the autoscaler wanted parallelism {to}, refused: {rejection}");
                self.shared.record(&job.id, None, message.clone());
                reasons.push(message);
                let entry = scaling::record(&job.id, ScalingKind::Rescale, from, from, reasons);
                self.propose_quietly(&job.id, entry).await;
            }
            Ok(_) => {
                self.propose_quietly(&job.id, scaling::record(&job.id, ScalingKind::Rescale, from, to, reasons)).await
            }
            Err(error) => tracing::warn!(job_id = %job.id, %error, "the autoscaler's rescale was not committed"),
        }
    }

    /// Proposes `command`, saying in the log if it was not committed (nothing retries it).
    async fn propose_quietly(&self, job: &JobId, command: Command) {
        let what = command.to_string();
        match self.replica.propose(command).await {
            Ok(Response::Rejected(rejection)) => tracing::debug!(job_id = %job, %what, %rejection, "refused"),
            Ok(_) => {}
            Err(error) => tracing::warn!(job_id = %job, %what, %error, "not committed"),
        }
    }

    /// Asks the controller what moves `job` on, and does it.
    async fn reconcile_job(&mut self, job: JobRecord) {
        let mut control = self.controls.remove(&job.id).unwrap_or_default();
        let capacity = match job.status {
            JobStatus::Created | JobStatus::Running | JobStatus::Restarting if control.run().is_none() => {
                self.executor.capacity_for(&job.id, job.desired_parallelism)
            }
            _ => Capacity::Unknown,
        };
        let mut seen = Observed { capacity, adoption: None, random: random() };
        // Deciding again after an adoption is answered; the controller asks once per tick.
        for _ in 0..3 {
            let actions = control.decide(&job, &seen, self.clock.now_millis());
            if actions != [Action::Adopt] {
                self.carry_out(&job, &mut control, actions).await;
                break;
            }
            let reporter = self.reporter(&job.id);
            let run = reporter.run;
            seen.adoption = match self.executor.adopt(&job, reporter) {
                Adoption::Adopted { run: handle, parallelism } => {
                    tracing::info!(job_id = %job.id, parallelism, "adopted the running attempt");
                    self.shared.set_run(&job.id, Some(handle));
                    control.adopted(run, parallelism);
                    None
                }
                Adoption::Wait => Some(Adoptable::Wait),
                Adoption::Nothing => Some(Adoptable::Nothing),
            };
        }
        self.controls.insert(job.id.clone(), control);
    }

    /// Carries out `actions` for `job` in order. A start that fails drops the rest, and the
    /// controller's answer to the failure is carried out instead.
    async fn carry_out(&mut self, job: &JobRecord, control: &mut JobControl, actions: Vec<Action>) {
        let id = &job.id;
        let mut queue = VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Adopt => tracing::debug!(job_id = %id, "adoption is asked for by reconcile_job only"),
                Action::Start { restore, parallelism } => {
                    let reporter = self.reporter(id);
                    let run = reporter.run;
                    let request = ExecutionRequest { job: job.clone(), parallelism, restore };
                    match self.executor.start(request, reporter).await {
                        Ok(handle) => {
                            tracing::info!(job_id = %id, parallelism, "run started");
                            self.shared.set_run(id, Some(handle));
                            control.started(run, parallelism);
                        }
                        Err(failure) => {
                            let now = self.clock.now_millis();
                            queue = control.on_start_failed(Some(job), failure, random(), now).into();
                        }
                    }
                }
                Action::Propose(status) => {
                    self.propose_status(id, status).await;
                }
                Action::End(status) => {
                    if self.propose_status(id, status).await {
                        control.end_committed();
                    }
                }
                Action::Cancel => {
                    if let Some(run) = self.shared.run(id) {
                        run.cancel();
                    }
                }
                Action::DropRun => self.shared.set_run(id, None),
                Action::AskSavepoint { purpose, stop } => self.ask_savepoint(id, control, purpose, stop),
                Action::Record { code, message } => self.shared.record(id, code, message),
                Action::AddSavepoint { id: savepoint, taken } => {
                    let record = SavepointRecord {
                        id: savepoint.clone(),
                        job: id.clone(),
                        tenant: job.tenant.clone(),
                        location: taken.location,
                        checkpoint: taken.checkpoint,
                        created_at: now(),
                    };
                    if let Err(error) = self.replica.propose(Command::AddSavepoint { savepoint: record }).await {
                        tracing::warn!(job_id = %id, %savepoint, %error, "savepoint taken but not recorded");
                    }
                }
                Action::Suspend { savepoint, idle_since } => {
                    let suspension = Suspension {
                        savepoint,
                        idle_since: UnixMillis(u64::try_from(idle_since).unwrap_or(0)),
                        at: now(),
                    };
                    match self.replica.propose(Command::SuspendJob { job: id.clone(), suspension }).await {
                        Ok(Response::Rejected(rejection)) => {
                            // The job moved on meanwhile (a user cancelled it): nothing runs.
                            tracing::info!(job_id = %id, %rejection, "suspension refused");
                            control.suspend_committed();
                        }
                        Ok(_) => {
                            tracing::info!(job_id = %id, "suspended");
                            control.suspend_committed();
                        }
                        Err(error) => tracing::warn!(job_id = %id, %error, "suspension not committed; will retry"),
                    }
                }
                Action::WithdrawSavepoint(savepoint) => {
                    let withdraw = Command::WithdrawSavepoint { job: id.clone(), savepoint: savepoint.clone() };
                    if let Err(error) = self.replica.propose(withdraw).await {
                        // A later leader asks for it again; that is all that is lost.
                        tracing::warn!(job_id = %id, %savepoint, %error, "failed savepoint request not withdrawn");
                    }
                }
            }
        }
    }

    /// Asks the job's run for a savepoint; the answer comes back as an event.
    fn ask_savepoint(&self, job: &JobId, control: &JobControl, purpose: Purpose, stop: bool) {
        let (Some(handle), Some(run)) = (self.shared.run(job), control.run()) else { return };
        // A rescale's savepoint is read at once by the next run of the same job: by reference.
        let format = match purpose {
            Purpose::Rescale { .. } | Purpose::Suspend { .. } => SavepointFormat::Native,
            _ => SavepointFormat::Canonical,
        };
        let answer = handle.savepoint(stop, format);
        let (events, job) = (self.events.clone(), job.clone());
        tokio::spawn(async move {
            let result = answer.await;
            let _ = events.send(Event::Savepoint { job, run, purpose, result });
        });
    }

    /// A reporter for a new run of `job`.
    fn reporter(&mut self, job: &JobId) -> RunReporter {
        let run = self.next_run;
        self.next_run += 1;
        RunReporter { job: job.clone(), run, events: self.events.clone() }
    }

    async fn handle(&mut self, event: Event) {
        let (job, run) = match &event {
            Event::Checkpoint { job, run, .. } | Event::Ended { job, run, .. } | Event::Savepoint { job, run, .. } => {
                (job.clone(), *run)
            }
        };
        // Reports of runs this leader does not hold (replaced, or another leadership's) are
        // ignored.
        if self.controls.get(&job).and_then(JobControl::run) != Some(run) {
            return;
        }
        let mut control = self.controls.remove(&job).unwrap_or_default();
        let record = self.replica.reader().read(|metadata| metadata.job(&job).cloned());
        let now = self.clock.now_millis();
        let actions = match event {
            Event::Checkpoint { checkpoint, retain, .. } => {
                self.commit_checkpoint(&job, checkpoint, retain).await;
                Vec::new()
            }
            Event::Ended { end, .. } => control.on_ended(record.as_ref(), run, end, random(), now),
            Event::Savepoint { purpose, result, .. } => control.on_savepoint(record.as_ref(), run, purpose, result),
        };
        match &record {
            Some(record) => self.carry_out(record, &mut control, actions).await,
            None if !actions.is_empty() => tracing::debug!(job_id = %job, ?actions, "the job is gone"),
            None => {}
        }
        self.controls.insert(job, control);
    }

    async fn commit_checkpoint(&self, job: &JobId, checkpoint: CompletedCheckpoint, retain: u32) {
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

/// A uniform draw in [0, 1) for a restart delay's jitter: the wall clock's nanoseconds are
/// random enough to spread restarts.
fn random() -> f64 {
    f64::from(weir_dataflow::clock::since_epoch().subsec_nanos()) / 1e9
}
