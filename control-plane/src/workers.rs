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
//! - **Scheduler** ([`RemoteExecutor`]): one slot per subtask index (Flink's slot sharing: a
//!   slot holds one subtask of every vertex). An attempt runs whole on the live worker with the
//!   most free slots when one has enough; else, with a shuffle server
//!   ([`WorkerOptions::shuffle`]), it is spread into parts over the workers with the most free
//!   slots, the first part leading (it runs the attempt's checkpoint coordinator); else the job
//!   waits. The attempt's number and workers are committed (`SetJobDeployment`) before it is
//!   deployed.
//! - **Adoption**: a new leader knows every deployment from the metadata; for one heartbeat
//!   timeout it lets workers report in, and adopts each attempt whose parts all report it as
//!   their job's current one — the tasks never stop. A job whose attempt nobody reports
//!   restarts from its latest checkpoint.
//! - **Reports**: the lead part's newest completed checkpoint and its end ride every heartbeat
//!   until the leader has taken note, and reach the dispatcher through the attempt's
//!   [`RunReporter`], which commits checkpoints through Raft; a member part's failure fails the
//!   attempt. Reports of an attempt that is not its job's current one are never committed; the
//!   worker is told to cancel it.
//!
//! Not built yet: region failover (any part's failure restarts the whole attempt).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;
use serde::de::DeserializeOwned;
use weir_dataflow::auth::ClusterKey;
use weir_dataflow::clock::{Clock, SystemClock};
use weir_dataflow::ids::{CheckpointId, JobAttempt, JobId, VertexId, WorkerId};
use weir_dataflow::wire::{
    self, AttemptRef, AttemptReport, Deploy, DeployPart, ErrorCode, Failure, Heartbeat, HeartbeatReply, NotLeader,
    Problem, RunEnd, SavepointAsk, SavepointFormat, SavepointTaken, VertexMetrics,
};
use weir_net::Transport;

use crate::api::ApiError;
use crate::api::ids::now;
use crate::dispatcher::{Adoption, Capacity, ExecutionRequest, JobExecutor, RunReporter, RunningJob};
use crate::handle::{BoxFuture, ReplicaHandle};
use crate::metadata::Command;
use crate::metadata::records::{CompletedCheckpoint, JobDeployment, JobRecord, JobStatus};
use crate::provisioner::{Provisioner, WorkerDemand};

/// How the registry and the executor behave.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// A worker silent for this long is lost; a new leader waits this long for workers to
    /// report before it restarts jobs nobody reports.
    pub heartbeat_timeout: Duration,
    /// The default `state.checkpoints.dir` of jobs on workers (shared storage: `s3://…`).
    pub state_dir: Option<String>,
    /// The shuffle server (`host:port`) through which attempts spread over several workers
    /// exchange; `None`: an attempt runs on one worker.
    pub shuffle: Option<String>,
    /// The shuffle server's key, which signs each attempt's namespace token; `None`: the
    /// server takes any client (`weir shuffle --insecure-no-auth`).
    pub shuffle_key: Option<ClusterKey>,
    /// How the leader reaches the workers' task endpoints (TLS trusting the cluster's CA, or
    /// plain).
    pub transport: Transport,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            heartbeat_timeout: Duration::from_secs(3),
            state_dir: None,
            shuffle: None,
            shuffle_key: None,
            transport: Transport::Plain,
        }
    }
}

/// How the leader has workers started and stopped (`--provisioner`), and what one holds.
pub struct Provisioning {
    pub provisioner: Arc<dyn Provisioner>,
    /// The slots of each worker it starts.
    pub slots_per_worker: u32,
    /// How long fewer workers must have been enough before some are let go.
    pub cool_down: Duration,
}

/// The leader's view of its workers and of the attempts they run.
pub struct Workers {
    replica: Arc<dyn ReplicaHandle>,
    client: reqwest::Client,
    /// The worker key: workers present it to the heartbeat route, and the leader to theirs
    /// (every request of `client` carries it).
    key: ClusterKey,
    options: WorkerOptions,
    inner: Mutex<Inner>,
    provisioning: Option<Provisioned>,
}

/// A provisioner, and what the leader last asked of it.
struct Provisioned {
    provisioning: Provisioning,
    demand: Mutex<WorkerDemand>,
    /// The last count asked for and answered (or the error), said once in the log.
    last: Mutex<Option<Result<(u32, u32), String>>>,
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
    /// The lead part's worker (the only part of an attempt that is not spread): its reports
    /// carry the attempt's checkpoints and end.
    worker: WorkerId,
    /// Slots held, per worker of the attempt (the lead's included).
    slots: BTreeMap<WorkerId, u32>,
    reporter: RunReporter,
    /// The newest checkpoint passed on.
    reported: Option<CheckpointId>,
}

impl Workers {
    /// The registry of a replica whose workers present `key` (the worker key).
    pub fn new(replica: Arc<dyn ReplicaHandle>, key: ClusterKey, options: WorkerOptions) -> Result<Arc<Self>, String> {
        Self::with_provisioning(replica, key, options, None)
    }

    /// The registry of a leader that has workers started and stopped as its jobs need them.
    pub fn with_provisioning(
        replica: Arc<dyn ReplicaHandle>,
        key: ClusterKey,
        options: WorkerOptions,
        provisioning: Option<Provisioning>,
    ) -> Result<Arc<Self>, String> {
        let client = crate::internal::client(&key, &options.transport, Duration::from_secs(2))?;
        let provisioning = provisioning.map(|provisioning| Provisioned {
            demand: Mutex::new(WorkerDemand::new(provisioning.cool_down)),
            provisioning,
            last: Mutex::new(None),
        });
        Ok(Arc::new(Workers { replica, client, key, options, inner: Mutex::default(), provisioning }))
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
                .filter(|(_, a)| a.slots.keys().any(|w| lost.contains(w) || (settled && !inner.live.contains_key(w))))
                .map(|(attempt, _)| attempt.clone())
                .collect();
            for attempt in orphans {
                inner.ended.insert(attempt.clone());
                if let Some(attached) = inner.attached.remove(&attempt) {
                    let gone: Vec<String> =
                        attached.slots.keys().filter(|w| !inner.live.contains_key(*w)).map(|w| w.to_string()).collect();
                    attached.reporter.ended(RunEnd::Failed(Failure::new(
                        ErrorCode::WorkerLost,
                        format!(
                            "worker {} was lost (no heartbeat for {timeout:?}); attempt {} of the job is gone",
                            gone.join(", "),
                            attempt.attempt
                        ),
                    )));
                }
            }
        }
        for worker in lost {
            if let Err(error) = self.replica.propose(Command::DeregisterWorker { worker: worker.clone() }).await {
                tracing::debug!(worker = %worker, %error, "deregistration not committed; will retry");
            }
        }
        if settled {
            self.provision().await;
        }
    }

    /// Asks the provisioner for the workers the jobs need: every job not ended holds its
    /// desired parallelism's slots (or the slots its attempt holds, if more).
    async fn provision(&self) {
        let Some(provisioned) = &self.provisioning else { return };
        let jobs: BTreeMap<JobId, u32> = self.replica.reader().read(|m| {
            m.jobs()
                .filter(|job| job.status.holds_slots())
                .map(|job| (job.id.clone(), job.desired_parallelism))
                .collect()
        });
        let (parallelisms, busy) = {
            let inner = self.lock();
            let mut held: BTreeMap<&JobId, u32> = BTreeMap::new();
            let mut busy = BTreeSet::new();
            for (attempt, attached) in &inner.attached {
                *held.entry(&attempt.job).or_default() += attached.slots.values().sum::<u32>();
                busy.extend(attached.slots.keys().cloned());
            }
            let parallelisms: Vec<u32> =
                jobs.iter().map(|(job, desired)| (*desired).max(held.get(job).copied().unwrap_or(0))).collect();
            (parallelisms, busy)
        };
        let setup = &provisioned.provisioning;
        let needed =
            crate::provisioner::workers_needed(&parallelisms, setup.slots_per_worker, self.options.shuffle.is_some());
        let wanted =
            provisioned.demand.lock().unwrap_or_else(|p| p.into_inner()).wanted(SystemClock.now_millis(), needed);
        let answer = setup.provisioner.scale_to(wanted, &busy).await.map(|running| (wanted, running));
        let answer = answer.map_err(|e| e.to_string());
        let mut last = provisioned.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.as_ref() != Some(&answer) {
            match &answer {
                Ok((wanted, running)) => {
                    tracing::info!(
                        provisioner = setup.provisioner.name(),
                        wanted,
                        running,
                        needed,
                        "workers provisioned"
                    )
                }
                Err(error) => {
                    tracing::warn!(provisioner = setup.provisioner.name(), wanted, %error, "workers not provisioned")
                }
            }
            *last = Some(answer);
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
            Err(_) => return Err(ApiError::new(ErrorCode::NoQuorum, "no quorum within 2 s").into_response()),
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
            return Err(ApiError::new(ErrorCode::NotReady, "the leader is starting its services"));
        }
        for report in &beat.attempts {
            let attempt = &report.attempt;
            let (status, deployment) = match jobs.get(&attempt.job) {
                Some((status, deployment)) => (Some(*status), deployment.as_ref()),
                None => (None, None),
            };
            if let Some(attached) = inner.attached.get_mut(attempt) {
                let ended = if attached.worker == beat.worker {
                    pass_on(attached, report)
                } else {
                    member_news(attached, &beat.worker, report)
                };
                if ended {
                    inner.attached.remove(attempt);
                    inner.ended.insert(attempt.clone());
                    reply.forget.push(attempt.clone());
                } else if status.is_none_or(|s| s.is_terminal() || s == JobStatus::Cancelling) {
                    reply.cancel.push(attempt.clone());
                }
                continue;
            }
            let current = deployment.is_some_and(|d| d.attempt == attempt.attempt && d.runs_on(&beat.worker))
                && status.is_some_and(|s| !s.is_terminal());
            if current && !inner.ended.contains(attempt) {
                // An earlier leader's deployment: the dispatcher adopts it (and its end, if any).
                continue;
            }
            if report.end.is_some() {
                reply.forget.push(attempt.clone());
            } else {
                tracing::info!(job_id = %attempt.job, attempt = %attempt.attempt, worker = %beat.worker, "cancelling an attempt that is not its job's current one");
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
                for (attempt, attached) in inner.attached.iter().filter(|(a, _)| a.job != *job) {
                    if let Some(slots) = attached.slots.get(id) {
                        held.insert(attempt, *slots);
                    }
                }
                let used: u32 = held.values().sum();
                (id.clone(), worker.address.clone(), worker.slots.saturating_sub(used))
            })
            .collect()
    }

    /// Where an attempt of `job` at `parallelism` would go now: one worker when one has the
    /// slots (the worker with the most free), else — with a shuffle server to exchange
    /// through — spread over the workers with the most free slots, the first leading.
    fn placement(&self, inner: &Inner, job: &JobId, parallelism: u32) -> Result<Vec<Placed>, String> {
        let Some(since) = inner.leading_since else { return Err("this replica does not lead".into()) };
        if since.elapsed() < self.options.heartbeat_timeout {
            return Err("workers are reporting to the new leader".into());
        }
        let mut free = Self::free_slots(inner, job);
        free.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
        let total: u32 = free.iter().map(|(_, _, n)| *n).sum();
        let most = free.first().map_or(0, |(_, _, n)| *n);
        if most >= parallelism {
            let (worker, address, _) = free.swap_remove(0);
            return Ok(vec![Placed { worker, address, subtasks: (0..parallelism).collect() }]);
        }
        if free.is_empty() {
            return Err(format!("no worker is registered; {parallelism} slots are needed"));
        }
        if self.options.shuffle.is_none() || total < parallelism {
            let spread =
                if self.options.shuffle.is_some() { format!(", {total} on all workers") } else { String::new() };
            return Err(format!("{parallelism} slots are needed; the most free on one worker is {most}{spread}"));
        }
        let mut placed = Vec::new();
        let mut next = 0;
        for (worker, address, n) in free {
            if next == parallelism {
                break;
            }
            let take = n.min(parallelism - next);
            if take > 0 {
                placed.push(Placed { worker, address, subtasks: (next..next + take).collect() });
                next += take;
            }
        }
        Ok(placed)
    }

    async fn start(
        self: Arc<Self>,
        request: ExecutionRequest,
        reporter: RunReporter,
    ) -> Result<Arc<dyn RunningJob>, Failure> {
        let ExecutionRequest { job, parallelism, restore } = request;
        let placed = {
            let inner = self.lock();
            self.placement(&inner, &job.id, parallelism).map_err(|why| Failure::new(ErrorCode::NoFreeSlots, why))?
        };
        let attempt = AttemptRef {
            job: job.id.clone(),
            attempt: job.deployment.as_ref().map_or(JobAttempt(1), |d| d.attempt.next()),
        };
        let lead = placed[0].clone();
        let deployment = JobDeployment {
            attempt: attempt.attempt,
            worker: lead.worker.clone(),
            members: placed[1..].iter().map(|p| p.worker.clone()).collect(),
        };
        self.replica
            .propose(Command::SetJobDeployment { job: job.id.clone(), deployment })
            .await
            .map_err(|e| Failure::new(ErrorCode::NoQuorum, format!("the deployment was not committed: {e}")))?
            .into_result()
            .map_err(|e| Failure::new(e.error_code(), format!("the deployment was refused: {e}")))?;
        let slots = placed.iter().map(|p| (p.worker.clone(), p.subtasks.len() as u32)).collect();
        let attached = Attached { worker: lead.worker.clone(), slots, reporter, reported: None };
        self.lock().attached.insert(attempt.clone(), attached);
        let run = RemoteRun {
            workers: self.clone(),
            attempt: attempt.clone(),
            lead: lead.address.clone(),
            members: placed[1..].iter().map(|p| p.address.clone()).collect(),
        };
        // Members first: the lead's coordinator talks to them as soon as it starts.
        let spread = placed.len() > 1;
        // The attempt's channels on the shuffle server, opened to its parts only.
        let namespace = format!("{}-attempt-{}", attempt.job, attempt.attempt);
        let token = self.options.shuffle_key.as_ref().map(|key| key.sign(&namespace)).unwrap_or_default();
        for (index, part) in placed.iter().enumerate().rev() {
            let part_of = |lead_address: Option<String>, members: Vec<String>| DeployPart {
                subtasks: part.subtasks.clone(),
                shuffle: self.options.shuffle.clone().unwrap_or_default(),
                namespace: namespace.clone(),
                token: token.clone(),
                lead: lead_address,
                members,
            };
            let deploy = Deploy {
                attempt: attempt.clone(),
                tenant: job.tenant.0.clone(),
                sql: job.sql.as_str().to_owned(),
                parallelism,
                restore: restore.clone(),
                state_dir: self.options.state_dir.clone(),
                part: match (spread, index) {
                    (false, _) => None,
                    (true, 0) => Some(part_of(None, run.members.clone())),
                    (true, _) => Some(part_of(Some(lead.address.clone()), Vec::new())),
                },
            };
            let deployed = self
                .try_call::<_, serde_json::Value>(&part.address, wire::DEPLOY_PATH, &deploy, Duration::from_secs(60))
                .await;
            if let Err(error) = deployed {
                let mut inner = self.lock();
                inner.attached.remove(&attempt);
                if let CallError::Unreachable(_) = error {
                    // Likely dead: not offered to the next attempt until it heartbeats again.
                    inner.live.remove(&part.worker);
                }
                drop(inner);
                // Parts already deployed stop: their heartbeats are told so as well.
                run.cancel();
                let failure = error.failure();
                let message = format!(
                    "deploying attempt {} on worker {} at {}: {}",
                    attempt.attempt, part.worker, part.address, failure.message
                );
                return Err(Failure { message, ..failure });
            }
        }
        let workers: Vec<String> = placed.iter().map(|p| format!("{} {:?}", p.worker, p.subtasks)).collect();
        tracing::info!(job_id = %job.id, attempt = %attempt.attempt, parallelism, ?workers, "attempt deployed");
        Ok(Arc::new(run))
    }

    fn adopt(self: &Arc<Self>, job: &JobRecord, reporter: RunReporter) -> Adoption {
        let Some(deployment) = &job.deployment else { return Adoption::Nothing };
        let attempt = AttemptRef { job: job.id.clone(), attempt: deployment.attempt };
        let mut inner = self.lock();
        let Some(since) = inner.leading_since else { return Adoption::Wait };
        if inner.ended.contains(&attempt) {
            return Adoption::Nothing;
        }
        // Every part must still be there: the lead first, then the members.
        let parts: Option<Vec<(WorkerId, String, AttemptReport)>> = std::iter::once(&deployment.worker)
            .chain(&deployment.members)
            .map(|worker| {
                let live = inner.live.get(worker)?;
                Some((worker.clone(), live.address.clone(), live.reports.get(&attempt)?.clone()))
            })
            .collect();
        let Some(parts) = parts else {
            return if since.elapsed() < self.options.heartbeat_timeout { Adoption::Wait } else { Adoption::Nothing };
        };
        let parallelism = parts.iter().map(|(_, _, report)| report.parallelism).sum();
        let mut attached = Attached {
            worker: deployment.worker.clone(),
            slots: parts.iter().map(|(worker, _, report)| (worker.clone(), report.parallelism)).collect(),
            reporter,
            reported: job.latest_checkpoint().map(|c| c.id),
        };
        // Reports of the time without a leader: the newest checkpoint, and the end if it came.
        let ended = pass_on(&mut attached, &parts[0].2)
            || parts[1..].iter().any(|(worker, _, report)| member_news(&attached, worker, report));
        if ended {
            inner.ended.insert(attempt.clone());
        } else {
            inner.attached.insert(attempt.clone(), attached);
        }
        let run = RemoteRun {
            workers: self.clone(),
            attempt,
            lead: parts[0].1.clone(),
            members: parts[1..].iter().map(|(_, address, _)| address.clone()).collect(),
        };
        Adoption::Adopted { run: Arc::new(run), parallelism }
    }

    /// Calls a worker's task endpoint.
    async fn call<B: Serialize, R: DeserializeOwned>(
        &self,
        address: &str,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<R, Failure> {
        self.try_call(address, path, body, timeout).await.map_err(|e| e.failure())
    }

    /// Calls a worker's task endpoint, telling an unreachable worker from one that answered.
    async fn try_call<B: Serialize, R: DeserializeOwned>(
        &self,
        address: &str,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<R, CallError> {
        let response = self
            .client
            .post(format!("{}{path}", self.options.transport.url(address)))
            .timeout(timeout)
            .json(body)
            .send()
            .await
            .map_err(|e| CallError::Unreachable(e.to_string()))?;
        let status = response.status();
        let text =
            response.text().await.map_err(|e| CallError::Unreachable(format!("the worker's answer broke off: {e}")))?;
        if !status.is_success() {
            let failure = match serde_json::from_str::<Problem>(&text) {
                Ok(problem) => problem.failure(),
                Err(_) => Failure::internal(format!("the worker answered {status}: {text}")),
            };
            return Err(CallError::Answered(failure));
        }
        serde_json::from_str(&text)
            .map_err(|e| CallError::Answered(Failure::internal(format!("the worker's answer is not understood: {e}"))))
    }

    /// The attempt's live figures, over its parts: counts and busy time summed, the lowest
    /// watermark, the highest backpressure.
    fn metrics_of(&self, attempt: &AttemptRef) -> BTreeMap<VertexId, VertexMetrics> {
        let inner = self.lock();
        let Some(attached) = inner.attached.get(attempt) else { return BTreeMap::new() };
        let mut merged: BTreeMap<VertexId, VertexMetrics> = BTreeMap::new();
        let reports = attached.slots.keys().filter_map(|w| inner.live.get(w)?.reports.get(attempt));
        for (vertex, part) in reports.flat_map(|r| r.metrics.iter()) {
            let into = merged.entry(*vertex).or_default();
            let add = |a: Option<u64>, b: Option<u64>| match (a, b) {
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            };
            into.records_in = add(into.records_in, part.records_in);
            into.records_out = add(into.records_out, part.records_out);
            into.busy_ms = add(into.busy_ms, part.busy_ms);
            into.backlog = add(into.backlog, part.backlog);
            into.watermark = match (into.watermark, part.watermark) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            into.backpressure = match (into.backpressure, part.backpressure) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
        merged
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

/// A member part's news: only its failure ends the attempt (its end otherwise is the lead's to
/// say). Answers whether the attempt has ended.
fn member_news(attached: &Attached, worker: &WorkerId, report: &AttemptReport) -> bool {
    match &report.end {
        Some(RunEnd::Failed(failure)) => {
            let message = format!("the part on worker {worker} failed: {}", failure.message);
            attached.reporter.ended(RunEnd::Failed(Failure { message, ..failure.clone() }));
            true
        }
        _ => false,
    }
}

/// Why a call to a worker failed.
#[derive(Debug, thiserror::Error)]
enum CallError {
    /// No answer: the worker is down, or the network between.
    #[error("the worker is unreachable: {0}")]
    Unreachable(String),
    /// It answered, with an error (or an answer not understood).
    #[error("{0}")]
    Answered(Failure),
}

impl CallError {
    fn failure(self) -> Failure {
        match self {
            CallError::Unreachable(why) => {
                Failure::new(ErrorCode::Unreachable, format!("the worker is unreachable: {why}"))
            }
            CallError::Answered(failure) => failure,
        }
    }
}

/// Where one part of an attempt goes.
#[derive(Clone, Debug)]
struct Placed {
    worker: WorkerId,
    address: String,
    subtasks: Vec<u32>,
}

/// Runs jobs on workers: the [`JobExecutor`] of `weir control-plane`.
#[derive(Clone)]
pub struct RemoteExecutor(pub Arc<Workers>);

impl JobExecutor for RemoteExecutor {
    fn start(
        &self,
        request: ExecutionRequest,
        reporter: RunReporter,
    ) -> BoxFuture<'_, Result<Arc<dyn RunningJob>, Failure>> {
        let workers = self.0.clone();
        Box::pin(async move { workers.start(request, reporter).await })
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

/// An attempt on workers, as the dispatcher controls it.
#[derive(Clone)]
struct RemoteRun {
    workers: Arc<Workers>,
    attempt: AttemptRef,
    /// The lead part's task endpoint.
    lead: String,
    /// The other parts' (of a spread attempt).
    members: Vec<String>,
}

impl RemoteRun {
    /// Cancels the parts at `addresses`; returns once they have ended (a worker answers a
    /// cancel then). If a cancel is lost, the worker's next heartbeat is told to cancel.
    async fn cancel_parts(&self, addresses: &[String]) {
        for address in addresses {
            let cancelled = self
                .workers
                .call::<_, serde_json::Value>(address, wire::CANCEL_PATH, &self.attempt, Duration::from_secs(15))
                .await;
            if let Err(error) = cancelled {
                tracing::warn!(job_id = %self.attempt.job, attempt = %self.attempt.attempt, %error, "cancel not delivered");
            }
        }
    }
}

impl RunningJob for RemoteRun {
    fn cancel(&self) {
        let run = self.clone();
        tokio::spawn(async move {
            let all: Vec<String> = std::iter::once(run.lead.clone()).chain(run.members.iter().cloned()).collect();
            run.cancel_parts(&all).await;
        });
    }

    fn savepoint(&self, stop: bool, format: SavepointFormat) -> BoxFuture<'static, Result<SavepointTaken, Failure>> {
        let run = self.clone();
        let ask = SavepointAsk { attempt: self.attempt.clone(), stop, format };
        Box::pin(async move {
            let taken = run
                .workers
                .call::<_, SavepointTaken>(&run.lead, wire::SAVEPOINT_PATH, &ask, Duration::from_secs(600))
                .await?;
            if stop {
                // The lead stopped after the savepoint; the other parts stop with it.
                run.cancel_parts(&run.members).await;
            }
            Ok(taken)
        })
    }

    fn vertex_metrics(&self) -> BTreeMap<VertexId, VertexMetrics> {
        self.workers.metrics_of(&self.attempt)
    }
}

/// The routes workers call, on every replica's internal listener; they take the worker key.
pub fn internal_router(workers: Arc<Workers>) -> Router {
    let key = workers.key.clone();
    crate::internal::require_key(
        Router::new().route(wire::HEARTBEAT_PATH, post(heartbeat)).with_state(workers),
        key,
        "workers",
    )
}

async fn heartbeat(State(workers): State<Arc<Workers>>, body: axum::body::Bytes) -> Response {
    let beat: Heartbeat = match serde_json::from_slice(&body) {
        Ok(beat) => beat,
        Err(e) => return ApiError::new(ErrorCode::InvalidRequest, format!("invalid heartbeat: {e}")).into_response(),
    };
    match workers.heartbeat(beat).await {
        Ok(reply) => Json(reply).into_response(),
        Err(response) => response,
    }
}
