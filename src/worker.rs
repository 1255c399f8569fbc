//! `weir worker`: a stateless worker. It heartbeats to the control plane's leader every second,
//! runs the job attempts the leader deploys on its task endpoint (each whole, in this process,
//! with the local runtime: see [`crate::executor::start_local_run`]), and reports through its
//! heartbeats where each attempt stands (the wire protocol is `weir_dataflow::wire`).
//!
//! It keeps nothing durable: state goes to the job's `state.checkpoints.dir` (shared object
//! storage), so a killed worker's attempts restart elsewhere from their last checkpoint. A worker
//! that has not reached a leader with a quorum for [`LEASE`] cancels its attempts itself, so a
//! partitioned worker does not keep writing beside the attempt that replaces its own.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::sync::mpsc::{self, UnboundedSender};
use weir_control_plane::api::ids::fresh_id;
use weir_control_plane::api::{ApiError, RootToken};
use weir_control_plane::dispatcher::{RunEnd, RunningJob};
use weir_control_plane::workers::authorized;
use weir_dataflow::ids::CheckpointId;
use weir_dataflow::ids::WorkerId;
use weir_dataflow::wire::{
    self, AttemptRef, AttemptReport, CheckpointDone, CheckpointNote, Deploy, DeployPart, Heartbeat, HeartbeatReply,
    NotLeader, PartReport, SavepointAsk, SavepointTaken,
};
use weir_workers::checkpoint::TaskReport;
use weir_workers::runtime::PartLink;

use crate::executor::{LocalRun, LocalRunRequest, RunEvent, RunPart, start_local_run};

/// How often the worker heartbeats (and sooner when an attempt checkpoints or ends).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// Without a heartbeat answered by a leader for this long, the worker cancels its attempts.
/// Well above the leader's heartbeat timeout (3 s) plus an election (under 1 s), so a leader
/// change never costs running attempts.
pub const LEASE: Duration = Duration::from_secs(10);

/// A slot per core, as `weir standalone` has.
pub fn default_slots() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX))
}

/// What `weir worker` was started with.
pub struct WorkerArgs {
    /// The control plane's replicas, as `http://host:port`.
    pub control_planes: Vec<String>,
    pub slots: u32,
    pub listen: String,
    /// The default `state.checkpoints.dir` when the control plane names none.
    pub state_dir: String,
    /// The cluster's secret (the root token).
    pub secret: String,
}

struct Worker {
    id: WorkerId,
    address: String,
    slots: u32,
    secret: String,
    root: RootToken,
    state_dir: String,
    attempts: Mutex<BTreeMap<AttemptRef, Attempt>>,
    /// Wakes the heartbeat loop early (an attempt checkpointed or ended).
    nudge: Notify,
    /// For the parts of spread attempts to talk to each other.
    client: reqwest::Client,
}

/// Where a spread attempt's checkpoint messages from the other parts go in this process.
enum Inbound {
    /// The lead part: members' task reports, for its coordinator.
    Lead { reports: UnboundedSender<TaskReport> },
    /// A member part: the lead's triggers and completions.
    Member { triggers: UnboundedSender<CheckpointId>, completed: UnboundedSender<CheckpointId> },
}

struct Attempt {
    run: Arc<LocalRun>,
    /// How checkpoint traffic of a spread attempt reaches this part's runtime.
    link: Option<Inbound>,
    parallelism: u32,
    checkpoint: Option<CheckpointDone>,
    end: Option<RunEnd>,
    /// Cancelled because the lease ran out: its end is a failure (the job restarts), not a
    /// cancellation the user asked for.
    fenced: bool,
}

pub fn serve(args: WorkerArgs) -> Result<()> {
    if args.control_planes.is_empty() {
        return Err(anyhow!("--control-plane needs at least one URL"));
    }
    let root = RootToken::from_secret(&args.secret).map_err(|e| anyhow!("the cluster's root token: {e}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let address = listener.local_addr()?.to_string();
        let id = fresh_id("worker").map_err(|e| anyhow!("{}", e.detail))?;
        let worker = Arc::new(Worker {
            id: WorkerId(id),
            address: address.clone(),
            slots: args.slots,
            secret: args.secret.trim().to_string(),
            root,
            state_dir: args.state_dir,
            attempts: Mutex::default(),
            nudge: Notify::new(),
            client: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(1))
                .timeout(Duration::from_secs(5))
                .build()
                .context("an HTTP client")?,
        });
        let router = Router::new()
            .route(wire::DEPLOY_PATH, post(deploy))
            .route(wire::CANCEL_PATH, post(cancel))
            .route(wire::SAVEPOINT_PATH, post(savepoint))
            .route(wire::REPORT_PATH, post(part_report))
            .route(wire::TRIGGER_PATH, post(part_trigger))
            .route(wire::COMPLETE_PATH, post(part_complete))
            .with_state(worker.clone());
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::error!(%error, "the task endpoint stopped");
            }
        });
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "weir worker {} listening on {address}", worker.id)?;
            out.flush()?;
        }
        tokio::spawn(heartbeats(worker.clone(), args.control_planes));
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("stopping: cancelling every attempt");
        for attempt in worker.lock().values() {
            attempt.run.cancel();
        }
        Ok(())
    })
}

impl Worker {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<AttemptRef, Attempt>> {
        self.attempts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn heartbeat(&self) -> Heartbeat {
        let attempts = self
            .lock()
            .iter()
            .map(|(attempt, a)| AttemptReport {
                attempt: attempt.clone(),
                parallelism: a.parallelism,
                checkpoint: a.checkpoint.clone(),
                end: a.end.clone(),
                metrics: if a.end.is_none() { a.run.vertex_metrics().into_iter().collect() } else { Vec::new() },
            })
            .collect();
        Heartbeat { worker: self.id.clone(), address: self.address.clone(), slots: self.slots, attempts }
    }

    /// Acts on the leader's answer.
    fn answered(&self, reply: HeartbeatReply) {
        let mut attempts = self.lock();
        for attempt in reply.cancel {
            if let Some(a) = attempts.get(&attempt).filter(|a| a.end.is_none()) {
                tracing::info!(job_id = %attempt.job, attempt = attempt.attempt, "the leader cancels this attempt");
                a.run.cancel();
            }
        }
        for attempt in reply.forget {
            if attempts.get(&attempt).is_some_and(|a| a.end.is_some()) {
                attempts.remove(&attempt);
            }
        }
    }

    /// The lease ran out: stop writing, a replacement may be running.
    fn cancel_all(&self) {
        for (attempt, a) in self.lock().iter_mut().filter(|(_, a)| a.end.is_none()) {
            tracing::warn!(job_id = %attempt.job, attempt = attempt.attempt, "no leader for {LEASE:?}: cancelling");
            a.fenced = true;
            a.run.cancel();
        }
    }
}

/// Heartbeats until the process ends, following the leader from replica to replica.
async fn heartbeats(worker: Arc<Worker>, control_planes: Vec<String>) {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(3))
        .build()
        .expect("a plain HTTP client builds");
    let mut next = 0;
    let mut leader: Option<String> = None;
    let mut answered_at = Instant::now();
    let mut lease_lost = false;
    loop {
        let url = leader.clone().unwrap_or_else(|| control_planes[next % control_planes.len()].clone());
        let sent = client
            .post(format!("{}{}", url.trim_end_matches('/'), wire::HEARTBEAT_PATH))
            .bearer_auth(&worker.secret)
            .json(&worker.heartbeat())
            .send()
            .await;
        let mut retry_now = false;
        match sent {
            Ok(response) if response.status().is_success() => match response.json::<HeartbeatReply>().await {
                Ok(reply) => {
                    answered_at = Instant::now();
                    lease_lost = false;
                    worker.answered(reply);
                }
                Err(error) => tracing::warn!(%url, %error, "a heartbeat answer was not understood"),
            },
            Ok(response) if response.status() == StatusCode::MISDIRECTED_REQUEST => {
                let hint = response.json::<NotLeader>().await.ok().and_then(|n| n.leader);
                match hint {
                    Some(address) if Some(format!("http://{address}")) != leader => {
                        leader = Some(format!("http://{address}"));
                        retry_now = true;
                    }
                    _ => {
                        leader = None;
                        next += 1;
                    }
                }
            }
            Ok(response) => {
                tracing::debug!(%url, status = %response.status(), "heartbeat refused");
                leader = None;
                next += 1;
            }
            Err(error) => {
                tracing::debug!(%url, %error, "heartbeat not delivered");
                leader = None;
                next += 1;
            }
        }
        if answered_at.elapsed() > LEASE && !lease_lost {
            lease_lost = true;
            worker.cancel_all();
        }
        if !retry_now {
            tokio::select! {
                _ = tokio::time::sleep(HEARTBEAT_INTERVAL) => {}
                _ = worker.nudge.notified() => {}
            }
        }
    }
}

/// Checks the bearer token and reads a JSON body.
fn request<T: DeserializeOwned>(worker: &Worker, headers: &HeaderMap, body: &[u8]) -> Result<T, ApiError> {
    if !authorized(headers, &worker.root) {
        return Err(ApiError::unauthorized("the task endpoint takes the cluster's root token"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request("invalid-request", format!("invalid request: {e}")))
}

async fn deploy(
    State(worker): State<Arc<Worker>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let deploy: Deploy = request(&worker, &headers, &body)?;
    let attempt = deploy.attempt.clone();
    let slots = deploy.part.as_ref().map_or(deploy.parallelism, |part| part.subtasks.len() as u32);
    {
        let attempts = worker.lock();
        if attempts.contains_key(&attempt) {
            return Ok(Json(&attempt).into_response());
        }
        let used: u32 = attempts.values().filter(|a| a.end.is_none()).map(|a| a.parallelism).sum();
        if used + slots > worker.slots {
            let detail = format!("{slots} slots are needed; {} of {} are free", worker.slots - used, worker.slots);
            return Err(ApiError::new(StatusCode::CONFLICT, "no-slots", detail));
        }
    }
    let (part, inbound) = match deploy.part {
        Some(part) => {
            let (run_part, inbound) = link_part(&worker, &attempt, part);
            (Some(run_part), Some(inbound))
        }
        None => (None, None),
    };
    let local = LocalRunRequest {
        job: attempt.job.clone(),
        sql: deploy.sql,
        parallelism: deploy.parallelism,
        restore: deploy.restore,
        state_dir: deploy.state_dir.unwrap_or_else(|| worker.state_dir.clone()),
        part,
    };
    let (run, mut events) = start_local_run(local)
        .await
        .map_err(|error| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "cannot-start", format!("{error:#}")))?;
    tracing::info!(job_id = %attempt.job, attempt = attempt.attempt, parallelism = deploy.parallelism, "attempt started");
    let started = Attempt { run, link: inbound, parallelism: slots, checkpoint: None, end: None, fenced: false };
    worker.lock().insert(attempt.clone(), started);
    let (events_worker, reported) = (worker.clone(), attempt.clone());
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            {
                let mut attempts = events_worker.lock();
                let Some(a) = attempts.get_mut(&reported) else { break };
                match event {
                    RunEvent::Checkpoint(done) => a.checkpoint = Some(done),
                    RunEvent::Ended(end) => {
                        let end = match end {
                            RunEnd::Cancelled if a.fenced => RunEnd::Failed(format!(
                                "the worker reached no control-plane leader for {LEASE:?} and cancelled the attempt"
                            )),
                            end => end,
                        };
                        tracing::info!(job_id = %reported.job, attempt = reported.attempt, ?end, "attempt ended");
                        a.end = Some(end);
                    }
                }
            }
            events_worker.nudge.notify_one();
        }
    });
    Ok(Json(&attempt).into_response())
}

async fn cancel(
    State(worker): State<Arc<Worker>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let attempt: AttemptRef = request(&worker, &headers, &body)?;
    if let Some(a) = worker.lock().get(&attempt) {
        a.run.cancel();
    }
    worker.until_ended(&attempt).await;
    Ok(Json(&attempt).into_response())
}

async fn savepoint(
    State(worker): State<Arc<Worker>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let ask: SavepointAsk = request(&worker, &headers, &body)?;
    let run = worker.lock().get(&ask.attempt).filter(|a| a.end.is_none()).map(|a| a.run.clone());
    let Some(run) = run else {
        let detail = format!("attempt {} of job {} is not running here", ask.attempt.attempt, ask.attempt.job);
        return Err(ApiError::new(StatusCode::NOT_FOUND, "unknown-attempt", detail));
    };
    let taken = run
        .savepoint(ask.stop)
        .await
        .map_err(|error| ApiError::new(StatusCode::CONFLICT, "savepoint-failed", error.0))?;
    if ask.stop {
        worker.until_ended(&ask.attempt).await;
    }
    Ok(Json(SavepointTaken { location: taken.location, checkpoint: taken.checkpoint }).into_response())
}

/// Wires this worker's part of a spread attempt: channels for its runtime, and tasks that carry
/// what goes out to the other parts over HTTP.
fn link_part(worker: &Arc<Worker>, attempt: &AttemptRef, part: DeployPart) -> (RunPart, Inbound) {
    let namespace = format!("{}-attempt-{}", attempt.job, attempt.attempt);
    let subtasks = part.subtasks.iter().copied().collect();
    let (link, inbound) = match part.lead {
        None => {
            let (reports, from_members) = mpsc::unbounded_channel();
            let (to_trigger, triggers) = mpsc::unbounded_channel();
            let (to_complete, completions) = mpsc::unbounded_channel();
            for (mut notes, path) in [(triggers, wire::TRIGGER_PATH), (completions, wire::COMPLETE_PATH)] {
                let (worker, attempt, members) = (worker.clone(), attempt.clone(), part.members.clone());
                tokio::spawn(async move {
                    while let Some(checkpoint) = notes.recv().await {
                        let note = CheckpointNote { attempt: attempt.clone(), checkpoint };
                        for member in &members {
                            worker.send_to_part(member, path, &note).await;
                        }
                    }
                });
            }
            let link = PartLink::Lead { reports: from_members, triggers: to_trigger, completed: to_complete };
            (link, Inbound::Lead { reports })
        }
        Some(lead) => {
            let (to_lead, mut reports) = mpsc::unbounded_channel::<TaskReport>();
            let (triggers, from_lead) = mpsc::unbounded_channel();
            let (completed, completions) = mpsc::unbounded_channel();
            let (worker, attempt) = (worker.clone(), attempt.clone());
            tokio::spawn(async move {
                while let Some(report) = reports.recv().await {
                    let report = serde_json::to_value(&report).unwrap_or_default();
                    let message = PartReport { attempt: attempt.clone(), report };
                    worker.send_to_part(&lead, wire::REPORT_PATH, &message).await;
                }
            });
            let link = PartLink::Member { reports: to_lead, triggers: from_lead, completed: completions };
            (link, Inbound::Member { triggers, completed })
        }
    };
    (RunPart { subtasks, link, shuffle: part.shuffle, namespace }, inbound)
}

impl Worker {
    /// POSTs `body` to another part's task endpoint, trying again for a few seconds (the lead
    /// is deployed after its members, and may not know the attempt for a moment).
    async fn send_to_part<B: serde::Serialize>(&self, address: &str, path: &str, body: &B) {
        let url = format!("http://{address}{path}");
        for _ in 0..50 {
            let sent = self.client.post(&url).bearer_auth(&self.secret).json(body).send().await;
            match sent {
                Ok(response) if response.status().is_success() => return,
                Ok(response) => tracing::debug!(%url, status = %response.status(), "a part refused a message"),
                Err(error) => tracing::debug!(%url, %error, "a part is unreachable"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::warn!(%url, "a message to another part of the attempt was lost; the attempt will fail");
    }

    /// Waits (up to 10 s) until `attempt` has ended, so that a stop or cancel is answered once
    /// its slots are free for what follows (a rescale deploys the next attempt at once).
    async fn until_ended(&self, attempt: &AttemptRef) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.lock().get(attempt).is_some_and(|a| a.end.is_none()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// What `pick` takes of `attempt`'s inbound channels, when it is a part here.
    fn inbound<T>(&self, attempt: &AttemptRef, pick: impl FnOnce(&Inbound) -> Option<T>) -> Result<T, ApiError> {
        let attempts = self.lock();
        attempts.get(attempt).and_then(|a| a.link.as_ref()).and_then(pick).ok_or_else(|| {
            let detail = format!("attempt {} of job {} has no such part here", attempt.attempt, attempt.job);
            ApiError::new(StatusCode::NOT_FOUND, "unknown-attempt", detail)
        })
    }
}

async fn part_report(
    State(worker): State<Arc<Worker>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let message: PartReport = request(&worker, &headers, &body)?;
    let report: TaskReport = serde_json::from_value(message.report)
        .map_err(|e| ApiError::bad_request("invalid-report", format!("invalid task report: {e}")))?;
    let reports = worker.inbound(&message.attempt, |link| match link {
        Inbound::Lead { reports } => Some(reports.clone()),
        Inbound::Member { .. } => None,
    })?;
    let _ = reports.send(report);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn part_trigger(
    State(worker): State<Arc<Worker>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    to_member(&worker, &headers, &body, Note::Trigger)
}

async fn part_complete(
    State(worker): State<Arc<Worker>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    to_member(&worker, &headers, &body, Note::Complete)
}

/// What a lead's checkpoint note to a member says.
enum Note {
    Trigger,
    Complete,
}

/// Hands a lead's checkpoint note to this member part's runtime.
fn to_member(worker: &Worker, headers: &HeaderMap, body: &[u8], kind: Note) -> Result<Response, ApiError> {
    let note: CheckpointNote = request(worker, headers, body)?;
    let channel = worker.inbound(&note.attempt, |link| match (link, kind) {
        (Inbound::Member { triggers, .. }, Note::Trigger) => Some(triggers.clone()),
        (Inbound::Member { completed, .. }, Note::Complete) => Some(completed.clone()),
        (Inbound::Lead { .. }, _) => None,
    })?;
    let _ = channel.send(note.checkpoint);
    Ok(StatusCode::NO_CONTENT.into_response())
}
