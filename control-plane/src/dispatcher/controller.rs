//! The job controller's decisions, pure: given a job's record (the desired state), what the
//! leader knows of its run ([`JobControl`]), what it observed this instant ([`Observed`]) and
//! the time, which [`Action`]s move the job on. No I/O, no clock, no randomness: the
//! dispatcher's shell ([`super::Dispatcher`]) reads the metadata and the executor, calls these
//! functions, and carries the actions out in order.
//!
//! One place per state: [`JobControl::decide`] matches on the job's status once for a job with
//! no run here and once for a job with one. Run events go through [`JobControl::on_ended`],
//! [`JobControl::on_savepoint`] and [`JobControl::on_start_failed`]. Fatal and retryable
//! failures part in [`JobControl::failed`]: a fatal one (a script that no longer plans) ends the
//! job FAILED at once; a retryable one waits out the job's restart strategy.

use std::collections::BTreeSet;

use weir_dataflow::restart::RestartBackoff;
use weir_dataflow::wire::{ErrorCode, Failure, Restore, RunEnd, SavepointTaken};

use crate::metadata::ids::SavepointId;
use crate::metadata::records::{JobRecord, JobStatus};

use super::Capacity;

/// Why a savepoint is asked of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// A user's request (`stop`: stop-with-savepoint).
    User { id: SavepointId, stop: bool },
    /// To restart at this parallelism.
    Rescale { parallelism: u32 },
    /// To suspend the job (scale to zero): its sources have had no input since `idle_since`.
    Suspend { idle_since: i64 },
}

/// Something the shell does for a job, in the order given. A [`Action::Start`] that fails drops
/// the actions after it; its failure comes back through [`JobControl::on_start_failed`].
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Ask the executor for the run an earlier leader deployed, then decide again with the
    /// answer in [`Observed::adoption`] (or with the run kept, through [`JobControl::adopted`]).
    Adopt,
    /// Start a run; once started the shell tells [`JobControl::started`].
    Start { restore: Restore, parallelism: u32 },
    /// Propose a non-terminal status (a rejection is final: the job moved on meanwhile).
    Propose(JobStatus),
    /// Propose a terminal status, again every tick until it is committed
    /// ([`JobControl::end_committed`]).
    End(JobStatus),
    /// Cancel the run; its end comes back as [`RunEnd::Cancelled`].
    Cancel,
    /// Forget the run's handle (it ended, or it is replaced).
    DropRun,
    /// Ask the run for a savepoint; the answer comes back through [`JobControl::on_savepoint`].
    AskSavepoint { purpose: Purpose, stop: bool },
    /// Record an exception in the job's history.
    Record { code: Option<ErrorCode>, message: String },
    /// A user's savepoint was taken: record it under the request's id.
    AddSavepoint { id: SavepointId, taken: SavepointTaken },
    /// A user's savepoint failed: withdraw the request.
    WithdrawSavepoint(SavepointId),
    /// The run stopped with a savepoint to suspend the job: propose SUSPENDED, again every
    /// tick until it is committed ([`JobControl::suspend_committed`]).
    Suspend { savepoint: String, idle_since: i64 },
}

/// What the shell observed for one job this instant, besides its record.
#[derive(Clone, Debug)]
pub struct Observed {
    /// Whether a run at the desired parallelism could start now (only asked for a job without a
    /// run).
    pub capacity: Capacity,
    /// The executor's answer to [`Action::Adopt`] this tick; `None`: not asked yet.
    pub adoption: Option<Adoptable>,
    /// A uniform draw in [0, 1) for a restart delay's jitter.
    pub random: f64,
}

/// The executor's answer to [`Action::Adopt`] when it had no run to hand over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Adoptable {
    /// Not known yet: ask again next tick.
    Wait,
    /// No run to adopt: start one.
    Nothing,
}

/// The leader's own knowledge of one job, beside its record: its run here, its restart backoff,
/// and what it has already said. A new leader starts from [`JobControl::default`], as Flink's
/// restart strategies start counting again after a JobManager failover.
#[derive(Clone, Debug, Default)]
pub struct JobControl {
    run: Option<RunState>,
    backoff: Option<RestartBackoff>,
    /// Not started again before this instant (Unix milliseconds): a restart delay.
    restart_at: Option<i64>,
    /// The job waits for resources, and its exceptions say so (once).
    waiting: bool,
    /// A terminal status decided and not yet committed (no quorum): proposed each tick, so a
    /// finished job is never mistaken for one whose run went missing.
    ending: Option<JobStatus>,
    /// A suspension decided and not yet committed: its savepoint and since when the job idled.
    suspending: Option<(String, i64)>,
}

/// The leader's record of a run.
#[derive(Clone, Debug)]
struct RunState {
    id: u64,
    parallelism: u32,
    /// Savepoint requests asked of this run (answered or not).
    savepoints_asked: BTreeSet<SavepointId>,
    /// A stopping savepoint (a user's stop or a rescale) is under way: ask nothing else.
    stopping: bool,
    cancel_sent: bool,
    /// A rescale to this parallelism failed; not tried again until the target changes.
    rescale_failed_for: Option<u32>,
    /// The autoscaler wants the job suspended: its sources idle since then.
    suspend_wanted: Option<i64>,
}

impl JobControl {
    /// The run the leader has of the job, by the shell's run number.
    pub fn run(&self) -> Option<u64> {
        self.run.as_ref().map(|run| run.id)
    }

    /// The parallelism of the run the leader has of the job.
    pub fn run_parallelism(&self) -> Option<u32> {
        self.run.as_ref().map(|run| run.parallelism)
    }

    /// Whether the shell may forget this job: no run, nothing left to propose.
    pub fn is_idle(&self) -> bool {
        self.run.is_none() && self.ending.is_none() && self.suspending.is_none()
    }

    /// The autoscaler wants the job suspended (its sources idle since `idle_since`): the run
    /// is stopped with a savepoint at the next decision, unless something else is under way.
    pub fn request_suspend(&mut self, idle_since: i64) {
        if let Some(run) = self.run.as_mut() {
            run.suspend_wanted = Some(idle_since);
        }
    }

    /// The suspension of an [`Action::Suspend`] is committed (or refused for good).
    pub fn suspend_committed(&mut self) {
        self.suspending = None;
    }

    /// A run started (after [`Action::Start`]).
    pub fn started(&mut self, run: u64, parallelism: u32) {
        self.run = Some(RunState::new(run, parallelism));
    }

    /// A run an earlier leader deployed is now this leader's (after [`Action::Adopt`]).
    pub fn adopted(&mut self, run: u64, parallelism: u32) {
        self.started(run, parallelism);
    }

    /// The terminal status of an [`Action::End`] is committed (or refused for good).
    pub fn end_committed(&mut self) {
        self.ending = None;
    }

    /// This replica stopped leading: its runs are left or cancelled, and a new leadership
    /// starts afresh.
    pub fn step_down(&mut self) {
        *self = JobControl { backoff: self.backoff.take(), restart_at: self.restart_at, ..JobControl::default() };
    }

    /// What moves `job` on now.
    pub fn decide(&mut self, job: &JobRecord, seen: &Observed, now: i64) -> Vec<Action> {
        use JobStatus::*;
        if let Some(status) = self.ending {
            return vec![Action::End(status)];
        }
        if let Some((savepoint, idle_since)) = &self.suspending {
            return vec![Action::Suspend { savepoint: savepoint.clone(), idle_since: *idle_since }];
        }
        let Some(run) = self.run.as_mut() else {
            return self.decide_without_run(job, seen, now);
        };
        match job.status {
            // Started, but RUNNING was not committed (no quorum then): say it again.
            Created | Restarting => vec![Action::Propose(Running)],
            Cancelling | Failing | Suspended | Cancelled | Finished | Failed => {
                let mut actions = Vec::new();
                if !run.cancel_sent {
                    run.cancel_sent = true;
                    actions.push(Action::Cancel);
                }
                if job.status.is_terminal() {
                    // Nothing to report any more (cancelled before it started running).
                    self.run = None;
                    actions.push(Action::DropRun);
                }
                actions
            }
            Running => {
                if run.stopping || run.cancel_sent {
                    return Vec::new();
                }
                if let Some(request) = job.savepoint_requests.iter().find(|r| !run.savepoints_asked.contains(&r.id)) {
                    run.savepoints_asked.insert(request.id.clone());
                    run.stopping = request.stop;
                    let purpose = Purpose::User { id: request.id.clone(), stop: request.stop };
                    return vec![Action::AskSavepoint { purpose, stop: request.stop }];
                }
                if let Some(idle_since) = run.suspend_wanted.take() {
                    tracing::info!(job_id = %job.id, "suspending: no input");
                    run.stopping = true;
                    return vec![Action::AskSavepoint { purpose: Purpose::Suspend { idle_since }, stop: true }];
                }
                let target = job.desired_parallelism;
                if run.parallelism != target && run.rescale_failed_for != Some(target) {
                    tracing::info!(job_id = %job.id, from = run.parallelism, to = target, "rescaling");
                    run.stopping = true;
                    return vec![Action::AskSavepoint {
                        purpose: Purpose::Rescale { parallelism: target },
                        stop: true,
                    }];
                }
                Vec::new()
            }
        }
    }

    fn decide_without_run(&mut self, job: &JobRecord, seen: &Observed, now: i64) -> Vec<Action> {
        use JobStatus::*;
        let live = matches!(job.status, Created | Running | Restarting);
        if live && job.deployment.is_some() {
            // An earlier leader deployed it: its run may still be going.
            match seen.adoption {
                None => return vec![Action::Adopt],
                Some(Adoptable::Wait) => return Vec::new(),
                Some(Adoptable::Nothing) => {}
            }
        }
        match job.status {
            Created => {
                if let Err(waiting) = self.ready(&seen.capacity) {
                    return waiting;
                }
                // A deployed attempt may have checkpointed before it was lost.
                let restore = if job.deployment.is_some() { Restore::LatestCheckpoint } else { Restore::Nothing };
                vec![Action::Start { restore, parallelism: job.desired_parallelism }, Action::Propose(Running)]
            }
            Running | Restarting => {
                if self.restart_at.is_some_and(|at| now < at) {
                    return Vec::new();
                }
                if let Err(waiting) = self.ready(&seen.capacity) {
                    return waiting;
                }
                self.restart_at = None;
                // A resumed job starts from its suspension's savepoint until it checkpoints.
                let restore = match &job.suspension {
                    Some(suspension) => Restore::Savepoint { location: suspension.savepoint.clone() },
                    None => Restore::LatestCheckpoint,
                };
                tracing::info!(job_id = %job.id, ?restore, "the job has no run here: restarting it");
                vec![
                    Action::Propose(Restarting),
                    Action::Start { restore, parallelism: job.desired_parallelism },
                    Action::Propose(Running),
                ]
            }
            Failing => self.end(Failed),
            Cancelling => self.end(Cancelled),
            // Woken by the autoscaler's shell when input comes (`ResumeJob`).
            Suspended => Vec::new(),
            Cancelled | Finished | Failed => Vec::new(),
        }
    }

    /// Whether a run can start with `capacity`; if not, what to say while waiting: nothing
    /// when the answer is not known yet, the reason (once) when resources are short.
    fn ready(&mut self, capacity: &Capacity) -> Result<(), Vec<Action>> {
        match capacity {
            Capacity::Available => {
                self.waiting = false;
                Ok(())
            }
            Capacity::Unknown => Err(Vec::new()),
            Capacity::Short(why) if !self.waiting => {
                self.waiting = true;
                Err(vec![Action::Record { code: None, message: format!("the job waits for resources: {why}") }])
            }
            Capacity::Short(_) => Err(Vec::new()),
        }
    }

    /// Run `run` ended. `job` is its record now (`None`: gone).
    pub fn on_ended(&mut self, job: Option<&JobRecord>, run: u64, end: RunEnd, random: f64, now: i64) -> Vec<Action> {
        // A stopped run's savepoint answer decides what follows (finish or rescale).
        if self.run() != Some(run) || end == RunEnd::Stopped {
            return Vec::new();
        }
        self.run = None;
        let mut actions = vec![Action::DropRun];
        let cancelling = job.is_some_and(|job| job.status == JobStatus::Cancelling);
        let status = match end {
            _ if cancelling => JobStatus::Cancelled,
            RunEnd::Finished => JobStatus::Finished,
            RunEnd::Cancelled => JobStatus::Cancelled,
            RunEnd::Failed(failure) => {
                actions.extend(self.failed(job, failure, random, now));
                return actions;
            }
            RunEnd::Stopped => return actions,
        };
        if let Some(job) = job {
            tracing::info!(job_id = %job.id, %status, "run ended");
        }
        actions.extend(self.end(status));
        actions
    }

    /// A run could not start.
    pub fn on_start_failed(&mut self, job: Option<&JobRecord>, failure: Failure, random: f64, now: i64) -> Vec<Action> {
        let message = format!("the job could not start: {}", failure.message);
        self.failed(job, Failure { message, ..failure }, random, now)
    }

    /// Run `run` answered a savepoint asked for `purpose`. `job` is its record now.
    pub fn on_savepoint(
        &mut self,
        job: Option<&JobRecord>,
        run: u64,
        purpose: Purpose,
        result: Result<SavepointTaken, Failure>,
    ) -> Vec<Action> {
        let current = self.run() == Some(run);
        let taken = match result {
            Ok(taken) => taken,
            Err(failure) => {
                let message = match &purpose {
                    Purpose::User { id, .. } => format!("savepoint {id} failed: {failure}"),
                    Purpose::Rescale { parallelism } => format!("rescale to {parallelism} failed: {failure}"),
                    Purpose::Suspend { .. } => format!("suspending (no input) failed: {failure}"),
                };
                let mut actions = vec![Action::Record { code: Some(failure.code), message }];
                if let Purpose::User { id, .. } = &purpose {
                    actions.push(Action::WithdrawSavepoint(id.clone()));
                }
                if let Some(run) = self.run.as_mut().filter(|_| current) {
                    run.stopping = false;
                    if let Purpose::Rescale { parallelism } = purpose {
                        run.rescale_failed_for = Some(parallelism);
                    }
                }
                return actions;
            }
        };
        match purpose {
            Purpose::User { id, stop } => {
                let mut actions = vec![Action::AddSavepoint { id, taken }];
                if stop && current {
                    self.run = None;
                    actions.push(Action::DropRun);
                    actions.extend(self.end(JobStatus::Finished));
                }
                actions
            }
            Purpose::Rescale { parallelism } if current => {
                self.run = None;
                let mut actions = vec![Action::DropRun];
                if job.is_some_and(|job| job.status == JobStatus::Running) {
                    let restore = Restore::Savepoint { location: taken.location };
                    actions.push(Action::Start { restore, parallelism });
                }
                actions
            }
            Purpose::Suspend { idle_since } if current => {
                self.run = None;
                self.suspending = Some((taken.location.clone(), idle_since));
                vec![Action::DropRun, Action::Suspend { savepoint: taken.location, idle_since }]
            }
            Purpose::Rescale { .. } | Purpose::Suspend { .. } => Vec::new(),
        }
    }

    /// A run failed, or could not start: the failure is recorded, then the job restarts after
    /// its restart strategy's delay, or ends FAILED when the strategy gives up — or at once when
    /// the failure is one a restart cannot mend.
    fn failed(&mut self, job: Option<&JobRecord>, failure: Failure, random: f64, now: i64) -> Vec<Action> {
        if !failure.retryable {
            let message =
                format!("{} (not restarted: {} does not go away by running again)", failure.message, failure.code);
            let mut actions = vec![Action::Record { code: Some(failure.code), message }];
            actions.extend(self.end(JobStatus::Failed));
            return actions;
        }
        let mut actions = vec![Action::Record { code: Some(failure.code), message: failure.message }];
        let delay = job.and_then(|job| {
            let backoff = self.backoff.get_or_insert_with(|| RestartBackoff::new(job.job_config().restart_strategy()));
            backoff.on_failure(u64::try_from(now).unwrap_or(0), random)
        });
        match delay {
            Some(delay) => {
                tracing::warn!(?delay, "the run failed; restarting from the latest checkpoint");
                self.restart_at = Some(now.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)));
                // Without a quorum the job stays RUNNING with no run: a later tick restarts it
                // once the delay is over, all the same.
                actions.push(Action::Propose(JobStatus::Restarting));
            }
            None => actions.extend(self.end(JobStatus::Failed)),
        }
        actions
    }

    /// Ends the job with a terminal `status`.
    fn end(&mut self, status: JobStatus) -> Vec<Action> {
        self.backoff = None;
        self.restart_at = None;
        self.ending = Some(status);
        vec![Action::End(status)]
    }

    /// How long the job still waits out a restart delay.
    #[cfg(test)]
    fn restart_delay_left(&self, now: i64) -> Option<std::time::Duration> {
        self.restart_at.filter(|at| *at > now).map(|at| std::time::Duration::from_millis((at - now) as u64))
    }
}

impl RunState {
    fn new(id: u64, parallelism: u32) -> RunState {
        RunState {
            id,
            parallelism,
            savepoints_asked: BTreeSet::new(),
            stopping: false,
            cancel_sent: false,
            rescale_failed_for: None,
            suspend_wanted: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use weir_dataflow::ids::{CheckpointId, JobAttempt, JobId, WorkerId};
    use weir_dataflow::secrets::Script;

    use super::*;
    use crate::metadata::ids::UnixMillis;
    use crate::metadata::records::{JobDeployment, SavepointRequest};
    use JobStatus::*;

    fn job(status: JobStatus, config: &[(&str, &str)]) -> JobRecord {
        JobRecord {
            id: JobId("job-1".into()),
            tenant: "acme".into(),
            name: "job-1".into(),
            sql: Script::default(),
            config: config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>().into(),
            desired_parallelism: 2,
            status,
            submitted_at: UnixMillis(0),
            status_changed_at: UnixMillis(0),
            checkpoints: Vec::new(),
            savepoint_requests: Vec::new(),
            deployment: None,
            suspension: None,
            scalings: Vec::new(),
        }
    }

    fn seen(capacity: Capacity) -> Observed {
        Observed { capacity, adoption: None, random: 0.5 }
    }

    fn available() -> Observed {
        seen(Capacity::Available)
    }

    fn failure(code: ErrorCode) -> Failure {
        Failure::new(code, "boom")
    }

    const FIXED: [(&str, &str); 3] = [
        ("restart-strategy.type", "fixed-delay"),
        ("restart-strategy.fixed-delay.attempts", "2"),
        ("restart-strategy.fixed-delay.delay", "5 s"),
    ];

    #[test]
    fn a_created_job_starts_fresh_once_there_is_room_and_says_once_that_it_waits() {
        let mut control = JobControl::default();
        let created = job(Created, &[]);
        assert_eq!(control.decide(&created, &seen(Capacity::Unknown), 0), []);
        let short = seen(Capacity::Short("2 free slots, 4 wanted".into()));
        let said = control.decide(&created, &short, 0);
        assert!(matches!(&said[..], [Action::Record { message, .. }] if message.contains("2 free slots")), "{said:?}");
        assert_eq!(control.decide(&created, &short, 100), [], "said once");
        let start = Action::Start { restore: Restore::Nothing, parallelism: 2 };
        assert_eq!(control.decide(&created, &available(), 200), [start, Action::Propose(Running)]);
    }

    #[test]
    fn a_deployed_job_without_a_run_is_adopted_or_restarted_from_its_latest_checkpoint() {
        let mut control = JobControl::default();
        let mut running = job(Running, &[]);
        running.deployment =
            Some(JobDeployment { attempt: JobAttempt(3), worker: WorkerId("w1".into()), members: Vec::new() });
        assert_eq!(control.decide(&running, &available(), 0), [Action::Adopt]);
        let wait = Observed { adoption: Some(Adoptable::Wait), ..available() };
        assert_eq!(control.decide(&running, &wait, 0), []);
        let nothing = Observed { adoption: Some(Adoptable::Nothing), ..available() };
        let restart = control.decide(&running, &nothing, 0);
        assert_eq!(
            restart,
            [
                Action::Propose(Restarting),
                Action::Start { restore: Restore::LatestCheckpoint, parallelism: 2 },
                Action::Propose(Running),
            ]
        );
        // Adopted instead: the job is merely told RUNNING again if it was not.
        let mut adopting = JobControl::default();
        adopting.adopted(7, 2);
        running.status = Restarting;
        assert_eq!(adopting.decide(&running, &available(), 0), [Action::Propose(Running)]);
    }

    #[test]
    fn a_suspension_stops_the_run_with_a_savepoint_and_the_resumed_job_starts_from_it() {
        let mut control = JobControl::default();
        let running = job(Running, &[]);
        control.started(1, 2);
        control.request_suspend(5_000);
        let ask = Action::AskSavepoint { purpose: Purpose::Suspend { idle_since: 5_000 }, stop: true };
        assert_eq!(control.decide(&running, &available(), 70_000), [ask]);
        assert_eq!(control.decide(&running, &available(), 70_100), [], "asked once");
        // The stopped run's end is not the job's: the savepoint's answer decides.
        assert_eq!(control.on_ended(Some(&running), 1, RunEnd::Stopped, 0.5, 70_200), []);
        let taken = SavepointTaken { location: "file:///sp/1".into(), checkpoint: CheckpointId(9) };
        let suspend = Action::Suspend { savepoint: "file:///sp/1".into(), idle_since: 5_000 };
        let answered = control.on_savepoint(Some(&running), 1, Purpose::Suspend { idle_since: 5_000 }, Ok(taken));
        assert_eq!(answered, [Action::DropRun, suspend.clone()]);
        // Proposed again every tick until committed, never restarted meanwhile.
        assert_eq!(control.decide(&running, &available(), 70_300), [suspend]);
        control.suspend_committed();
        let mut suspended = job(Suspended, &[]);
        suspended.suspension = Some(crate::metadata::records::Suspension {
            savepoint: "file:///sp/1".into(),
            idle_since: UnixMillis(5_000),
            at: UnixMillis(70_300),
        });
        assert_eq!(control.decide(&suspended, &available(), 70_400), [], "a suspended job waits for input");
        assert!(control.is_idle());

        // Resumed (RESTARTING): from the suspension's savepoint.
        let mut resumed = suspended.clone();
        resumed.status = Restarting;
        let start = Action::Start { restore: Restore::Savepoint { location: "file:///sp/1".into() }, parallelism: 2 };
        assert_eq!(
            control.decide(&resumed, &available(), 90_000),
            [Action::Propose(Restarting), start, Action::Propose(Running)]
        );

        // A failed suspension leaves the run running.
        let mut other = JobControl::default();
        other.started(4, 2);
        other.request_suspend(1);
        assert_eq!(other.decide(&running, &available(), 0).len(), 1);
        let failed = other.on_savepoint(
            Some(&running),
            4,
            Purpose::Suspend { idle_since: 1 },
            Err(failure(ErrorCode::TaskFailed)),
        );
        assert!(
            matches!(&failed[..], [Action::Record { message, .. }] if message.contains("suspending")),
            "{failed:?}"
        );
        assert_eq!(other.run(), Some(4));
        assert_eq!(other.decide(&running, &available(), 1), [], "not asked again until the autoscaler asks");
    }

    #[test]
    fn a_retryable_failure_waits_out_the_strategy_then_the_job_fails_once_it_gives_up() {
        let mut control = JobControl::default();
        let running = job(Running, &FIXED);
        control.started(1, 2);
        let ended = control.on_ended(Some(&running), 1, RunEnd::Failed(failure(ErrorCode::TaskFailed)), 0.5, 1_000);
        assert_eq!(ended[0], Action::DropRun);
        assert!(matches!(ended[1], Action::Record { code: Some(ErrorCode::TaskFailed), .. }));
        assert_eq!(ended[2], Action::Propose(Restarting));
        assert_eq!(control.restart_delay_left(1_000), Some(Duration::from_secs(5)));
        let restarting = job(Restarting, &FIXED);
        assert_eq!(control.decide(&restarting, &available(), 5_999), [], "not before the delay");
        assert!(matches!(control.decide(&restarting, &available(), 6_000)[1], Action::Start { .. }));
        control.started(2, 2);
        let again = control.on_ended(Some(&running), 2, RunEnd::Failed(failure(ErrorCode::TaskFailed)), 0.5, 7_000);
        assert_eq!(again.last(), Some(&Action::Propose(Restarting)), "second of two restarts");
        control.started(3, 2);
        let gives_up = control.on_ended(Some(&running), 3, RunEnd::Failed(failure(ErrorCode::TaskFailed)), 0.5, 20_000);
        assert_eq!(gives_up.last(), Some(&Action::End(Failed)));
        // Until FAILED is committed it is proposed every tick.
        assert_eq!(control.decide(&running, &available(), 20_100), [Action::End(Failed)]);
        control.end_committed();
        assert!(control.is_idle());
    }

    #[test]
    fn a_fatal_failure_ends_the_job_at_once_and_says_why() {
        let mut control = JobControl::default();
        let created = job(Created, &FIXED);
        let actions = control.on_start_failed(Some(&created), failure(ErrorCode::InvalidSql), 0.5, 0);
        let [Action::Record { code, message }, Action::End(Failed)] = &actions[..] else { panic!("{actions:?}") };
        assert_eq!(*code, Some(ErrorCode::InvalidSql));
        assert!(message.starts_with("the job could not start: boom") && message.contains("not restarted"), "{message}");
    }

    #[test]
    fn reports_of_a_replaced_run_and_a_stopped_runs_end_change_nothing() {
        let mut control = JobControl::default();
        let running = job(Running, &[]);
        control.started(2, 2);
        assert_eq!(control.on_ended(Some(&running), 1, RunEnd::Finished, 0.5, 0), []);
        assert_eq!(control.on_ended(Some(&running), 2, RunEnd::Stopped, 0.5, 0), []);
        assert_eq!(control.run(), Some(2));
        assert_eq!(
            control.on_ended(Some(&running), 2, RunEnd::Finished, 0.5, 0),
            [Action::DropRun, Action::End(Finished)]
        );
        let mut cancelling = JobControl::default();
        cancelling.started(4, 2);
        let asked = cancelling.decide(&job(Cancelling, &[]), &available(), 0);
        assert_eq!(asked, [Action::Cancel]);
        assert_eq!(cancelling.decide(&job(Cancelling, &[]), &available(), 1), [], "cancelled once");
        let ended =
            cancelling.on_ended(Some(&job(Cancelling, &[])), 4, RunEnd::Failed(failure(ErrorCode::TaskFailed)), 0.5, 2);
        assert_eq!(ended, [Action::DropRun, Action::End(Cancelled)], "anything while cancelling ends CANCELED");
    }

    #[test]
    fn savepoints_are_asked_once_and_a_stopping_one_finishes_the_job() {
        let mut control = JobControl::default();
        control.started(1, 2);
        let mut running = job(Running, &[]);
        let id = SavepointId::from("sp-1");
        running.savepoint_requests.push(SavepointRequest { id: id.clone(), stop: true, requested_at: UnixMillis(1) });
        let purpose = Purpose::User { id: id.clone(), stop: true };
        assert_eq!(
            control.decide(&running, &available(), 0),
            [Action::AskSavepoint { purpose: purpose.clone(), stop: true }]
        );
        assert_eq!(control.decide(&running, &available(), 1), [], "asked once");
        let taken = SavepointTaken { location: "sp".into(), checkpoint: CheckpointId(7) };
        let actions = control.on_savepoint(Some(&running), 1, purpose, Ok(taken.clone()));
        assert_eq!(actions, [Action::AddSavepoint { id, taken }, Action::DropRun, Action::End(Finished)]);
    }

    #[test]
    fn a_rescale_goes_through_a_stopping_savepoint_and_a_failed_one_is_not_tried_again() {
        let mut control = JobControl::default();
        control.started(1, 2);
        let mut running = job(Running, &[]);
        running.desired_parallelism = 4;
        let rescale = Purpose::Rescale { parallelism: 4 };
        assert_eq!(
            control.decide(&running, &available(), 0),
            [Action::AskSavepoint { purpose: rescale.clone(), stop: true }]
        );
        let refused =
            control.on_savepoint(Some(&running), 1, rescale.clone(), Err(failure(ErrorCode::StateUnavailable)));
        assert!(matches!(&refused[..], [Action::Record { message, .. }] if message.contains("rescale to 4 failed")));
        assert_eq!(control.decide(&running, &available(), 1), [], "not tried again at 4");
        running.desired_parallelism = 3;
        assert!(matches!(&control.decide(&running, &available(), 2)[..], [Action::AskSavepoint { stop: true, .. }]));
        let taken = SavepointTaken { location: "sp-3".into(), checkpoint: CheckpointId(9) };
        let restart = control.on_savepoint(Some(&running), 1, Purpose::Rescale { parallelism: 3 }, Ok(taken));
        let start = Action::Start { restore: Restore::Savepoint { location: "sp-3".into() }, parallelism: 3 };
        assert_eq!(restart, [Action::DropRun, start]);
    }

    #[test]
    fn a_new_leadership_starts_afresh_but_keeps_the_restart_delay() {
        let mut control = JobControl::default();
        control.started(1, 2);
        let running = job(Running, &FIXED);
        control.on_ended(Some(&running), 1, RunEnd::Failed(failure(ErrorCode::WorkerLost)), 0.5, 0);
        control.step_down();
        assert_eq!(control.run(), None);
        assert_eq!(control.restart_delay_left(0), Some(Duration::from_secs(5)));
    }
}
