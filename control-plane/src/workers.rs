//! The leader's resource manager and the executor that runs jobs on workers.
//!
//! - **Registry** ([`Workers`]): workers heartbeat every second ([`wire::Heartbeat`], on
//!   [`internal_router`]); a worker first seen is registered through Raft (`RegisterWorker`),
//!   and one silent for [`WorkerOptions::heartbeat_timeout`] is lost: its attempts are reported
//!   failed to the dispatcher (which restarts their jobs elsewhere under their restart strategy)
//!   and it is deregistered. Liveness is the leader's soft state; only the worker list is
//!   replicated. A heartbeat is answered only after a linearizable read point
//!   ([`ReplicaHandle::sync_reads`]), so a deposed leader that lost its quorum cannot keep a
//!   worker's lease alive.
//! - **Scheduler** ([`RemoteExecutor`]): an attempt runs whole on one worker, one slot per
//!   subtask index (Flink's slot sharing: a slot holds one subtask of every vertex), on the live
//!   worker with the most free slots. A job that fits on no worker waits. The attempt's number
//!   and worker are committed (`SetJobDeployment`) before it is deployed.
//! - **Adoption**: a new leader knows every deployment from the metadata; for one heartbeat
//!   timeout it lets workers report in, and adopts each attempt a worker reports as its job's
//!   current one — the tasks never stop. A job whose attempt nobody reports restarts from its
//!   latest checkpoint.
//! - **Reports**: an attempt's newest completed checkpoint and its end ride every heartbeat until
//!   the leader has taken note, and reach the dispatcher through the attempt's [`RunReporter`],
//!   which commits checkpoints through Raft. Reports of an attempt that is not its job's current
//!   one are never committed; the worker is told to cancel it.
//!
//! Not built yet: an attempt spread over several workers (exchanges through the remote shuffle
//! service, and a checkpoint coordinator on the leader), and region failover across workers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;
use serde::de::DeserializeOwned;
use weir_dataflow::ids::{CheckpointId, JobId, VertexId, WorkerId};
use weir_dataflow::wire::{
    self, AttemptRef, AttemptReport, Deploy, Heartbeat, HeartbeatReply, NotLeader, RunEnd, SavepointAsk,
    SavepointTaken, VertexMetrics,
};

use crate::api::ids::now;
use crate::api::{ApiError, RootToken};
use crate::dispatcher::{
    Adoption, Capacity, ExecutionRequest, ExecutorError, JobExecutor, RunReporter, RunningJob, TakenSavepoint,
};
use crate::handle::{BoxFuture, ReplicaHandle};
use crate::metadata::Command;
use crate::metadata::records::{CompletedCheckpoint, JobDeployment, JobRecord, JobStatus};

/// How the registry and the executor behave.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// A worker silent for this long is lost; a new leader waits this long for workers to
    /// report before it restarts jobs nobody reports.
    pub heartbeat_timeout: Duration,
    /// The default `state.checkpoints.dir` of jobs on workers (shared storage: `s3://…`).
    pub state_dir: Option<String>,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions { heartbeat_timeout: Duration::from_secs(3), state_dir: None }
    }
}

/// The leader's view of its workers and of the attempts they run.
pub struct Workers {
    replica: Arc<dyn ReplicaHandle>,
    client: reqwest::Client,
    /// The cluster secret: workers present it to the internal routes, and the leader to theirs.
    secret: String,
    root: RootToken,
    options: WorkerOptions,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// When this replica became the leader; `None` while it does not lead.
    leading_since: Option<Instant>,
    live: BTreeMap<WorkerId, Live>,
    /// Attempts whose reports go to the dispatcher.
    attached: BTreeMap<AttemptRef, Attached>,
    /// Attempts whose end has gone to the dispatcher: never adopted again.
    ended: BTreeSet<AttemptRef>,
}

struct Live {
    address: String,
    slots: u32,
    last_seen: Instant,
    /// Its attempts, as its last heartbeat reported them.
    reports: BTreeMap<AttemptRef, AttemptReport>,
}

struct Attached {
    worker: WorkerId,
    parallelism: u32,
    reporter: RunReporter,
    /// The newest checkpoint passed on.
    reported: Option<CheckpointId>,
}

impl Workers {
    pub fn new(replica: Arc<dyn ReplicaHandle>, secret: &str, options: WorkerOptions) -> Result<Arc<Self>, String> {
        let root = RootToken::from_secret(secret).map_err(|e| e.to_string())?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Arc::new(Workers {
            replica,
            client,
            secret: secret.trim().to_string(),
            root,
            options,
            inner: Mutex::default(),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Watches leadership and worker liveness until the process ends.
    pub async fn watch(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(self.options.heartbeat_timeout / 6);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.check().await;
        }
    }

    async fn check(&self) {
        let timeout = self.options.heartbeat_timeout;
        if !self.replica.is_leader() {
            // The next leader adopts the attempts; reporters here are the old dispatcher's.
            *self.lock() = Inner::default();
            return;
        }
        // A leader cut off from its quorum hears no heartbeats (they need a read point), and
        // must not take that for dead workers: liveness is judged only while a quorum confirms
        // the leadership, and afresh, after a grace, once it does again.
        let confirmed = matches!(tokio::time::timeout(timeout / 3, self.replica.sync_reads()).await, Ok(Ok(())));
        let mut lost = Vec::new();
        let settled;
        {
            let mut inner = self.lock();
            if !confirmed {
                if inner.leading_since.take().is_some() {
                    tracing::warn!("no quorum confirms this leader: worker liveness is not judged until one does");
                }
                inner.live.clear();
                return;
            }
            let since = *inner.leading_since.get_or_insert_with(Instant::now);
            settled = since.elapsed() >= timeout;
            let now = Instant::now();
            let silent: Vec<WorkerId> =
                inner.live.iter().filter(|(_, w)| now - w.last_seen > timeout).map(|(id, _)| id.clone()).collect();
            for worker in &silent {
                if let Some(gone) = inner.live.remove(worker) {
                    tracing::warn!(%worker, address = %gone.address, "worker lost: no heartbeat for {timeout:?}");
                }
            }
            lost.extend(silent);
            if settled {
                // Registered by an earlier leader, or before the quorum was lost, and silent since.
                let registered: Vec<WorkerId> =
                    self.replica.reader().read(|m| m.workers().map(|w| w.id.clone()).collect());
                let silent: Vec<WorkerId> =
                    registered.into_iter().filter(|id| !inner.live.contains_key(id) && !lost.contains(id)).collect();
                lost.extend(silent);
            }
            // Attempts whose worker is gone, or has not reported since this leader's grace ended.
            let orphans: Vec<AttemptRef> = inner
                .attached
                .iter()
                .filter(|(_, a)| lost.contains(&a.worker) || (settled && !inner.live.contains_key(&a.worker)))
                .map(|(attempt, _)| attempt.clone())
                .collect();
            for attempt in orphans {
                inner.ended.insert(attempt.clone());
                if let Some(attached) = inner.attached.remove(&attempt) {
                    attached.reporter.ended(RunEnd::Failed(format!(
                        "worker {} was lost (no heartbeat for {timeout:?}); attempt {} of the job is gone",
                        attached.worker, attempt.attempt
                    )));
                }
            }
        }
        for worker in lost {
            if let Err(error) = self.replica.propose(Command::DeregisterWorker { worker: worker.clone() }).await {
                tracing::debug!(worker = %worker, %error, "deregistration not committed; will retry");
            }
        }
    }

    /// Takes a worker's heartbeat and answers what it should cancel and may forget.
    async fn heartbeat(&self, beat: Heartbeat) -> Result<HeartbeatReply, Response> {
        if !self.replica.is_leader() {
            return Err(self.not_leader());
        }
        // Still the leader of a quorum: only then does the heartbeat extend the worker's lease.
        let synced = tokio::time::timeout(Duration::from_secs(2), self.replica.sync_reads()).await;
        match synced {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(ApiError::from(error).into_response()),
            Err(_) => return Err(ApiError::unavailable("no-quorum", "no quorum within 2 s").into_response()),
        }
        let jobs: BTreeMap<_, _> = self.replica.reader().read(|m| {
            beat.attempts
                .iter()
                .filter_map(|r| m.job(&r.attempt.job).map(|job| (job.id.clone(), (job.status, job.deployment.clone()))))
                .collect()
        });
        let (address, slots, worker) = (beat.address.clone(), beat.slots, beat.worker.clone());
        let reply = self.take_reports(beat, &jobs).map_err(IntoResponse::into_response)?;
        // Registered once it is live, so that the liveness check never sees it registered and
        // silent in between.
        let known = self
            .replica
            .reader()
            .read(|m| m.workers().any(|w| w.id == worker && w.address == address && w.slots == slots));
        if !known {
            let register =
                Command::RegisterWorker { worker: worker.clone(), address: address.clone(), slots, at: now() };
            match self.replica.propose(register).await {
                Ok(_) => {
                    tracing::info!(%worker, %address, slots, "worker registered")
                }
                Err(error) => tracing::warn!(%worker, %error, "worker not registered; its next heartbeat tries again"),
            }
        }
        Ok(reply)
    }

    /// Records a worker's heartbeat as live, passes its attempts' news on, and answers it.
    fn take_reports(
        &self,
        beat: Heartbeat,
        jobs: &BTreeMap<JobId, (JobStatus, Option<JobDeployment>)>,
    ) -> Result<HeartbeatReply, ApiError> {
        let mut reply = HeartbeatReply::default();
        let mut inner = self.lock();
        if inner.leading_since.is_none() {
            return Err(ApiError::unavailable("not-ready", "the leader is starting its services"));
        }
        for report in &beat.attempts {
            let attempt = &report.attempt;
            let (status, deployment) = match jobs.get(&attempt.job) {
                Some((status, deployment)) => (Some(*status), deployment.as_ref()),
                None => (None, None),
            };
            if let Some(attached) = inner.attached.get_mut(attempt) {
                if pass_on(attached, report) {
                    inner.attached.remove(attempt);
                    inner.ended.insert(attempt.clone());
                    reply.forget.push(attempt.clone());
                } else if status.is_none_or(|s| s.is_terminal() || s == JobStatus::Cancelling) {
                    reply.cancel.push(attempt.clone());
                }
                continue;
            }
            let current = deployment.is_some_and(|d| d.attempt == attempt.attempt && d.worker == beat.worker)
                && status.is_some_and(|s| !s.is_terminal());
            if current && !inner.ended.contains(attempt) {
                // An earlier leader's deployment: the dispatcher adopts it (and its end, if any).
                continue;
            }
            if report.end.is_some() {
                reply.forget.push(attempt.clone());
            } else {
                tracing::info!(job_id = %attempt.job, attempt = attempt.attempt, worker = %beat.worker, "cancelling an attempt that is not its job's current one");
                reply.cancel.push(attempt.clone());
            }
        }
        let reports = beat.attempts.into_iter().map(|r| (r.attempt.clone(), r)).collect();
        let live = Live { address: beat.address, slots: beat.slots, last_seen: Instant::now(), reports };
        inner.live.insert(beat.worker, live);
        Ok(reply)
    }

    fn not_leader(&self) -> Response {
        let view = self.replica.cluster();
        let leader = view.leader.and_then(|id| view.members.iter().find(|m| m.id == id)).map(|m| m.address.clone());
        (StatusCode::MISDIRECTED_REQUEST, Json(NotLeader { leader })).into_response()
    }

    /// Free slots per live worker: its slots less those its running attempts hold, `job`'s own
    /// excepted (they are being replaced: a worker answers a stopping savepoint once the
    /// attempt has ended).
    fn free_slots(inner: &Inner, job: &JobId) -> Vec<(WorkerId, String, u32)> {
        inner
            .live
            .iter()
            .map(|(id, worker)| {
                let mut held: BTreeMap<&AttemptRef, u32> = worker
                    .reports
                    .values()
                    .filter(|r| r.end.is_none() && r.attempt.job != *job)
                    .map(|r| (&r.attempt, r.parallelism))
                    .collect();
                for (attempt, attached) in inner.attached.iter().filter(|(a, x)| x.worker == *id && a.job != *job) {
                    held.insert(attempt, attached.parallelism);
                }
                let used: u32 = held.values().sum();
                (id.clone(), worker.address.clone(), worker.slots.saturating_sub(used))
            })
            .collect()
    }

    /// Where an attempt of `job` at `parallelism` would go now.
    fn placement(&self, inner: &Inner, job: &JobId, parallelism: u32) -> Result<(WorkerId, String), String> {
        let Some(since) = inner.leading_since else { return Err("this replica does not lead".into()) };
        if since.elapsed() < self.options.heartbeat_timeout {
            return Err("workers are reporting to the new leader".into());
        }
        let free = Self::free_slots(inner, job);
        let most = free.iter().map(|(_, _, n)| *n).max();
        free.into_iter()
            .filter(|(_, _, n)| *n >= parallelism)
            .max_by_key(|(_, _, n)| *n)
            .map(|(id, address, _)| (id, address))
            .ok_or_else(|| match most {
                None => format!("no worker is registered; {parallelism} slots are needed"),
                Some(most) => format!("{parallelism} slots are needed on one worker; the most free is {most}"),
            })
    }

    async fn start(
        self: Arc<Self>,
        request: ExecutionRequest,
        reporter: RunReporter,
    ) -> Result<Arc<dyn RunningJob>, String> {
        let ExecutionRequest { job, parallelism, restore } = request;
        let (worker, address) = {
            let inner = self.lock();
            self.placement(&inner, &job.id, parallelism)?
        };
        let attempt = AttemptRef { job: job.id.clone(), attempt: job.deployment.as_ref().map_or(1, |d| d.attempt + 1) };
        let deployment = JobDeployment { attempt: attempt.attempt, worker: worker.clone() };
        self.replica
            .propose(Command::SetJobDeployment { job: job.id.clone(), deployment })
            .await
            .map_err(|e| format!("the deployment was not committed: {e}"))?
            .into_result()
            .map_err(|e| format!("the deployment was refused: {e}"))?;
        let attached = Attached { worker: worker.clone(), parallelism, reporter, reported: None };
        self.lock().attached.insert(attempt.clone(), attached);
        let deploy = Deploy {
            attempt: attempt.clone(),
            sql: job.sql.clone(),
            parallelism,
            restore,
            state_dir: self.options.state_dir.clone(),
            part: None,
        };
        if let Err(error) =
            self.call::<_, serde_json::Value>(&address, wire::DEPLOY_PATH, &deploy, Duration::from_secs(60)).await
        {
            self.lock().attached.remove(&attempt);
            return Err(format!("deploying attempt {} on worker {worker} at {address}: {error}", attempt.attempt));
        }
        tracing::info!(job_id = %job.id, attempt = attempt.attempt, worker = %worker, %address, parallelism, "attempt deployed");
        Ok(Arc::new(RemoteRun { workers: self.clone(), attempt, address }))
    }

    fn adopt(self: &Arc<Self>, job: &JobRecord, reporter: RunReporter) -> Adoption {
        let Some(deployment) = &job.deployment else { return Adoption::Nothing };
        let attempt = AttemptRef { job: job.id.clone(), attempt: deployment.attempt };
        let mut inner = self.lock();
        let Some(since) = inner.leading_since else { return Adoption::Wait };
        if inner.ended.contains(&attempt) {
            return Adoption::Nothing;
        }
        let report = inner
            .live
            .get(&deployment.worker)
            .and_then(|w| Some((w.address.clone(), w.reports.get(&attempt)?.clone())));
        let Some((address, report)) = report else {
            return if since.elapsed() < self.options.heartbeat_timeout { Adoption::Wait } else { Adoption::Nothing };
        };
        let mut attached = Attached {
            worker: deployment.worker.clone(),
            parallelism: report.parallelism,
            reporter,
            reported: job.latest_checkpoint().map(|c| c.id),
        };
        // Reports of the time without a leader: the newest checkpoint, and the end if it came.
        if pass_on(&mut attached, &report) {
            inner.ended.insert(attempt.clone());
        } else {
            inner.attached.insert(attempt.clone(), attached);
        }
        let parallelism = report.parallelism;
        Adoption::Adopted { run: Arc::new(RemoteRun { workers: self.clone(), attempt, address }), parallelism }
    }

    /// Calls a worker's task endpoint.
    async fn call<B: Serialize, R: DeserializeOwned>(
        &self,
        address: &str,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<R, String> {
        let response = self
            .client
            .post(format!("http://{address}{path}"))
            .bearer_auth(&self.secret)
            .timeout(timeout)
            .json(body)
            .send()
            .await
            .map_err(|e| format!("the worker is unreachable: {e}"))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| format!("the worker's answer broke off: {e}"))?;
        if !status.is_success() {
            let detail = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_string))
                .unwrap_or(text);
            return Err(format!("the worker answered {status}: {detail}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("the worker's answer is not understood: {e}"))
    }

    fn metrics_of(&self, attempt: &AttemptRef) -> BTreeMap<VertexId, VertexMetrics> {
        let inner = self.lock();
        let Some(attached) = inner.attached.get(attempt) else { return BTreeMap::new() };
        let report = inner.live.get(&attached.worker).and_then(|w| w.reports.get(attempt));
        report.map(|r| r.metrics.iter().cloned().collect()).unwrap_or_default()
    }
}

/// Passes an attempt's new reports to the dispatcher; answers whether the attempt has ended.
fn pass_on(attached: &mut Attached, report: &AttemptReport) -> bool {
    if let Some(done) = &report.checkpoint
        && attached.reported.is_none_or(|id| id < done.id)
    {
        attached.reported = Some(done.id);
        attached.reporter.checkpoint_completed(CompletedCheckpoint::from_wire(done), done.retain);
    }
    match &report.end {
        Some(end) => {
            attached.reporter.ended(end.clone());
            true
        }
        None => false,
    }
}

/// Runs jobs on workers: the [`JobExecutor`] of `weir control-plane`.
#[derive(Clone)]
pub struct RemoteExecutor(pub Arc<Workers>);

impl JobExecutor for RemoteExecutor {
    fn start(
        &self,
        request: ExecutionRequest,
        reporter: RunReporter,
    ) -> BoxFuture<'_, Result<Arc<dyn RunningJob>, ExecutorError>> {
        let workers = self.0.clone();
        Box::pin(async move { workers.start(request, reporter).await.map_err(ExecutorError) })
    }

    fn capacity_for(&self, job: &JobId, parallelism: u32) -> Capacity {
        let inner = self.0.lock();
        if inner.leading_since.is_none_or(|since| since.elapsed() < self.0.options.heartbeat_timeout) {
            return Capacity::Unknown;
        }
        match self.0.placement(&inner, job, parallelism) {
            Ok(_) => Capacity::Available,
            Err(why) => Capacity::Short(why),
        }
    }

    fn runs_outlive_leadership(&self) -> bool {
        true
    }

    fn adopt(&self, job: &JobRecord, reporter: RunReporter) -> Adoption {
        self.0.adopt(job, reporter)
    }
}

/// An attempt on a worker, as the dispatcher controls it.
struct RemoteRun {
    workers: Arc<Workers>,
    attempt: AttemptRef,
    address: String,
}

impl RunningJob for RemoteRun {
    fn cancel(&self) {
        let (workers, attempt, address) = (self.workers.clone(), self.attempt.clone(), self.address.clone());
        tokio::spawn(async move {
            // If this is lost, the worker's next heartbeat is told to cancel (the job is over).
            let cancelled = workers
                .call::<_, serde_json::Value>(&address, wire::CANCEL_PATH, &attempt, Duration::from_secs(10))
                .await;
            if let Err(error) = cancelled {
                tracing::warn!(job_id = %attempt.job, attempt = attempt.attempt, %error, "cancel not delivered");
            }
        });
    }

    fn savepoint(&self, stop: bool) -> BoxFuture<'static, Result<TakenSavepoint, ExecutorError>> {
        let (workers, address) = (self.workers.clone(), self.address.clone());
        let ask = SavepointAsk { attempt: self.attempt.clone(), stop };
        Box::pin(async move {
            let taken: SavepointTaken = workers
                .call(&address, wire::SAVEPOINT_PATH, &ask, Duration::from_secs(600))
                .await
                .map_err(ExecutorError)?;
            Ok(TakenSavepoint { location: taken.location, checkpoint: taken.checkpoint })
        })
    }

    fn vertex_metrics(&self) -> BTreeMap<VertexId, VertexMetrics> {
        self.workers.metrics_of(&self.attempt)
    }
}

/// The routes workers call, served beside the API on every replica.
pub fn internal_router(workers: Arc<Workers>) -> Router {
    Router::new().route(wire::HEARTBEAT_PATH, post(heartbeat)).with_state(workers)
}

async fn heartbeat(State(workers): State<Arc<Workers>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if !authorized(&headers, &workers.root) {
        return ApiError::unauthorized("workers authenticate with the cluster's root token").into_response();
    }
    let beat: Heartbeat = match serde_json::from_slice(&body) {
        Ok(beat) => beat,
        Err(e) => return ApiError::bad_request("invalid-heartbeat", format!("invalid heartbeat: {e}")).into_response(),
    };
    match workers.heartbeat(beat).await {
        Ok(reply) => Json(reply).into_response(),
        Err(response) => response,
    }
}

/// Whether the request carries the cluster's secret as its bearer token.
pub fn authorized(headers: &HeaderMap, root: &RootToken) -> bool {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|secret| root.accepts(secret))
}
