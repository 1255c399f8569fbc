//! The dispatcher's state machine over a one-replica Raft cluster, with a scripted executor:
//! start → RUNNING, checkpoints committed, a savepoint, a rescale through a stopping savepoint,
//! cancel → CANCELED, a failure → a restart after the strategy's delay, then FAILED with its
//! exceptions once the strategy gives up, and a new dispatcher (a new
//! leader) restarting a RUNNING job from its latest checkpoint.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weir_control_plane::api::JobRuntime;
use weir_control_plane::dispatcher::{
    Dispatcher, ErrorCode, ExecutionRequest, Failure, JobExecutor, Restore, RunEnd, RunReporter, RunningJob,
    SavepointFormat, SavepointTaken,
};
use weir_control_plane::handle::{BoxFuture, ReplicaHandle};
use weir_control_plane::metadata::Command;
use weir_control_plane::metadata::ids::{SavepointId, TenantId, UnixMillis};
use weir_control_plane::metadata::records::{CompletedCheckpoint, JobRecord, JobStatus};
use weir_dataflow::ids::{CheckpointId, JobId, VertexId};

mod common;
use common::{SingleReplica, WAIT};

/// One scripted run: the dispatcher's requests, and its reporter for the test to report with.
struct FakeRun {
    request: ExecutionRequest,
    reporter: RunReporter,
    cancelled: AtomicBool,
}

impl RunningJob for FakeRun {
    fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.reporter.ended(RunEnd::Cancelled);
    }

    fn savepoint(&self, stop: bool, _format: SavepointFormat) -> BoxFuture<'static, Result<SavepointTaken, Failure>> {
        let (reporter, location) = (self.reporter.clone(), format!("sp-of-p{}", self.request.parallelism));
        let fails = self.request.job.sql.contains("savepoint fails");
        Box::pin(async move {
            if fails {
                return Err(Failure::new(ErrorCode::StateUnavailable, "the state store refused the savepoint"));
            }
            if stop {
                reporter.ended(RunEnd::Stopped);
            }
            Ok(SavepointTaken { location, checkpoint: CheckpointId(7) })
        })
    }

    fn vertex_metrics(&self) -> BTreeMap<VertexId, weir_control_plane::api::runtime::VertexMetrics> {
        BTreeMap::new()
    }
}

#[derive(Default)]
struct FakeExecutor {
    runs: Mutex<Vec<Arc<FakeRun>>>,
}

impl JobExecutor for FakeExecutor {
    fn start(
        &self,
        request: ExecutionRequest,
        reporter: RunReporter,
    ) -> BoxFuture<'_, Result<Arc<dyn RunningJob>, Failure>> {
        Box::pin(async move {
            if request.job.sql.contains("cannot start") {
                return Err(Failure::new(ErrorCode::InvalidSql, "the script does not plan"));
            }
            if request.job.sql.contains("storage down") {
                return Err(Failure::new(ErrorCode::StateUnavailable, "the state store is unreachable"));
            }
            let run = Arc::new(FakeRun { request, reporter, cancelled: AtomicBool::new(false) });
            self.runs.lock().expect("not poisoned").push(run.clone());
            Ok(run as Arc<dyn RunningJob>)
        })
    }
}

impl FakeExecutor {
    fn runs_of(&self, job: &JobId) -> Vec<Arc<FakeRun>> {
        self.runs.lock().expect("not poisoned").iter().filter(|run| &run.request.job.id == job).cloned().collect()
    }
}

async fn propose(replica: &SingleReplica, command: Command) {
    replica.propose(command).await.expect("committed").into_result().expect("accepted");
}

async fn submit(replica: &SingleReplica, job: &str, sql: &str) -> JobId {
    submit_with(replica, job, sql, &[]).await
}

/// Submits a job whose script `SET`s `config`.
async fn submit_with(replica: &SingleReplica, job: &str, sql: &str, config: &[(&str, &str)]) -> JobId {
    let id = JobId(job.into());
    let command = Command::SubmitJob {
        job: id.clone(),
        tenant: TenantId::from("acme"),
        name: job.into(),
        sql: sql.into(),
        config: config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        parallelism: 2,
        at: UnixMillis(1),
        quota: None,
    };
    propose(replica, command).await;
    id
}

/// Waits until `check` holds of the job's record.
async fn until(replica: &SingleReplica, job: &JobId, what: &str, check: impl Fn(&JobRecord) -> bool) -> JobRecord {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let record = replica.reader().read(|m| m.job(job).cloned()).expect("the job exists");
        if check(&record) {
            return record;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: the job is {record:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn until_status(replica: &SingleReplica, job: &JobId, status: JobStatus) {
    until(replica, job, &format!("waiting for {status}"), |record| record.status == status).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dispatcher_drives_jobs_through_their_lives() {
    let replica = SingleReplica::start().await;
    propose(&replica, Command::CreateTenant { tenant: "acme".into(), display_name: "Acme".into(), at: UnixMillis(1) })
        .await;
    let executor = Arc::new(FakeExecutor::default());
    let dispatcher = Dispatcher::new(replica.clone(), executor.clone());
    let runtime = dispatcher.runtime();
    let dispatching = tokio::spawn(dispatcher.run());

    // CREATED → started fresh at the desired parallelism → RUNNING.
    let job = submit(&replica, "job-1", "INSERT INTO out SELECT * FROM g").await;
    until_status(&replica, &job, JobStatus::Running).await;
    let first = executor.runs_of(&job).pop().expect("a run");
    assert_eq!((first.request.parallelism, &first.request.restore), (2, &Restore::Nothing));

    // A completed checkpoint is committed through Raft.
    let checkpoint = CompletedCheckpoint {
        id: CheckpointId(1),
        location: "chk-1".into(),
        parallelism: 2,
        state_size_bytes: 0,
        completed_at: UnixMillis(2),
    };
    first.reporter.checkpoint_completed(checkpoint, 1);
    until(&replica, &job, "checkpoint 1", |record| record.checkpoints.len() == 1).await;

    // A savepoint request is taken and recorded; the job goes on.
    let savepoint = SavepointId::from("sp-1");
    let request =
        Command::RequestSavepoint { job: job.clone(), savepoint: savepoint.clone(), stop: false, at: UnixMillis(3) };
    propose(&replica, request).await;
    until(&replica, &job, "savepoint taken", |record| record.savepoint_requests.is_empty()).await;
    let taken = replica.reader().read(|m| m.savepoint(&savepoint).cloned()).expect("recorded");
    assert_eq!(taken.location, "sp-of-p2");
    assert_eq!(executor.runs_of(&job).len(), 1);

    // A new desired parallelism: stop with a savepoint, start from it at 3.
    propose(&replica, Command::SetDesiredParallelism { job: job.clone(), parallelism: 3, quota: None }).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while executor.runs_of(&job).len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no restart at the new parallelism");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = executor.runs_of(&job).pop().expect("a second run");
    assert_eq!(
        (second.request.parallelism, &second.request.restore),
        (3, &Restore::Savepoint { location: "sp-of-p2".into() })
    );
    until_status(&replica, &job, JobStatus::Running).await;

    // Cancel: the run is cancelled, then the job is CANCELED.
    let status = runtime.cancel(job.clone()).await.expect("accepted");
    assert_eq!(status, JobStatus::Cancelling);
    until_status(&replica, &job, JobStatus::Cancelled).await;
    assert!(second.cancelled.load(Ordering::SeqCst));

    // A failed run restarts from the latest checkpoint as the job's restart strategy says, and
    // fails the job, with its exception, once the strategy gives up.
    let restart = [
        ("restart-strategy.type", "fixed-delay"),
        ("restart-strategy.fixed-delay.attempts", "1"),
        ("restart-strategy.fixed-delay.delay", "1 s"),
    ];
    let failing = submit_with(&replica, "job-2", "INSERT INTO out SELECT * FROM g", &restart).await;
    until_status(&replica, &failing, JobStatus::Running).await;
    executor.runs_of(&failing)[0].reporter.ended(RunEnd::Failed(Failure::new(ErrorCode::TaskFailed, "boom")));
    until_status(&replica, &failing, JobStatus::Restarting).await;
    // Not before the strategy's delay.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(executor.runs_of(&failing).len(), 1, "restarted before the delay");
    until_status(&replica, &failing, JobStatus::Running).await;
    let again = executor.runs_of(&failing).pop().expect("a second run");
    assert_eq!(again.request.restore, Restore::LatestCheckpoint);
    again.reporter.ended(RunEnd::Failed(Failure::new(ErrorCode::TaskFailed, "boom again")));
    until_status(&replica, &failing, JobStatus::Failed).await;
    assert_eq!(runtime.exceptions(failing.clone()).await.len(), 2);
    let no_restarts = [("restart-strategy.type", "none")];
    let fragile = submit_with(&replica, "job-2b", "INSERT INTO out SELECT * FROM g", &no_restarts).await;
    until_status(&replica, &fragile, JobStatus::Running).await;
    executor.runs_of(&fragile)[0].reporter.ended(RunEnd::Failed(Failure::new(ErrorCode::TaskFailed, "boom")));
    until_status(&replica, &fragile, JobStatus::Failed).await;
    assert_eq!(runtime.exceptions(fragile).await[0].message, "boom");
    // A failure a restart cannot mend (the script no longer plans) fails the job at once, whatever
    // its strategy allows, and says why; one that may pass (storage down) is retried.
    let broken = submit_with(&replica, "job-3", "cannot start", &restart).await;
    until_status(&replica, &broken, JobStatus::Failed).await;
    let exceptions = runtime.exceptions(broken.clone()).await;
    assert_eq!(exceptions.len(), 1, "{exceptions:?}");
    assert_eq!(exceptions[0].code, Some(ErrorCode::InvalidSql));
    assert!(exceptions[0].message.contains("does not plan"), "{exceptions:?}");
    assert!(exceptions[0].message.contains("not restarted"), "{exceptions:?}");
    assert!(executor.runs_of(&broken).is_empty());
    let unlucky = submit_with(&replica, "job-3b", "storage down", &restart).await;
    until_status(&replica, &unlucky, JobStatus::Failed).await;
    let exceptions = runtime.exceptions(unlucky).await;
    assert_eq!(exceptions.len(), 2, "retried once as the strategy allows: {exceptions:?}");
    assert!(exceptions.iter().all(|e| e.code == Some(ErrorCode::StateUnavailable)), "{exceptions:?}");

    // A bounded job that finishes is FINISHED.
    let bounded = submit(&replica, "job-4", "INSERT INTO out SELECT * FROM g").await;
    until_status(&replica, &bounded, JobStatus::Running).await;
    let survivor = submit(&replica, "job-5", "INSERT INTO out SELECT * FROM g").await;
    until_status(&replica, &survivor, JobStatus::Running).await;
    executor.runs_of(&bounded)[0].reporter.ended(RunEnd::Finished);
    until_status(&replica, &bounded, JobStatus::Finished).await;

    // A new leader's dispatcher (this one gone with its runs) restarts the RUNNING job from its
    // latest checkpoint.
    dispatching.abort();
    let _ = dispatching.await;
    let restarted = Arc::new(FakeExecutor::default());
    let dispatching = tokio::spawn(Dispatcher::new(replica.clone(), restarted.clone()).run());
    let deadline = tokio::time::Instant::now() + WAIT;
    while restarted.runs_of(&survivor).is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the running job was not restarted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(restarted.runs_of(&survivor)[0].request.restore, Restore::LatestCheckpoint);
    until_status(&replica, &survivor, JobStatus::Running).await;
    assert!(restarted.runs_of(&job).is_empty() && restarted.runs_of(&bounded).is_empty(), "ended jobs stay ended");
    dispatching.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_savepoint_is_withdrawn_and_told_in_the_exceptions() {
    let replica = SingleReplica::start().await;
    propose(&replica, Command::CreateTenant { tenant: "acme".into(), display_name: "Acme".into(), at: UnixMillis(1) })
        .await;
    let dispatcher = Dispatcher::new(replica.clone(), Arc::new(FakeExecutor::default()));
    let runtime = dispatcher.runtime();
    let dispatching = tokio::spawn(dispatcher.run());
    let job = submit(&replica, "job-1", "INSERT INTO out SELECT * FROM g -- savepoint fails").await;
    until_status(&replica, &job, JobStatus::Running).await;

    let savepoint = SavepointId::from("sp-1");
    let request =
        Command::RequestSavepoint { job: job.clone(), savepoint: savepoint.clone(), stop: true, at: UnixMillis(3) };
    propose(&replica, request).await;
    until(&replica, &job, "the request withdrawn", |record| record.savepoint_requests.is_empty()).await;
    assert!(replica.reader().read(|m| m.savepoint(&savepoint).is_none()), "no savepoint is recorded");
    let exceptions = runtime.exceptions(job.clone()).await;
    assert!(
        exceptions.iter().any(|e| e.message.contains("sp-1") && e.message.contains("refused")),
        "the failure is in the exceptions: {exceptions:?}"
    );
    // A failed stop-with-savepoint leaves the job running.
    assert_eq!(replica.reader().read(|m| m.job(&job).map(|j| j.status)), Some(JobStatus::Running));
    dispatching.abort();
}
