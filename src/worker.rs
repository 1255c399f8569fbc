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
use weir_control_plane::api::ids::fresh_id;
use weir_control_plane::api::{ApiError, RootToken};
use weir_control_plane::dispatcher::{RunEnd, RunningJob};
use weir_control_plane::workers::authorized;
use weir_dataflow::ids::WorkerId;
use weir_dataflow::wire::{
    self, AttemptRef, AttemptReport, CheckpointDone, Deploy, Heartbeat, HeartbeatReply, NotLeader, SavepointAsk,
    SavepointTaken,
};

use crate::executor::{LocalRun, LocalRunRequest, RunEvent, start_local_run};

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
}

struct Attempt {
    run: Arc<LocalRun>,
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
        });
        let router = Router::new()
            .route(wire::DEPLOY_PATH, post(deploy))
            .route(wire::CANCEL_PATH, post(cancel))
            .route(wire::SAVEPOINT_PATH, post(savepoint))
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
    {
        let attempts = worker.lock();
        if attempts.contains_key(&attempt) {
            return Ok(Json(&attempt).into_response());
        }
        let used: u32 = attempts.values().filter(|a| a.end.is_none()).map(|a| a.parallelism).sum();
        if used + deploy.parallelism > worker.slots {
            let detail = format!(
                "{} slots are needed; {} of {} are free",
                deploy.parallelism,
                worker.slots - used,
                worker.slots
            );
            return Err(ApiError::new(StatusCode::CONFLICT, "no-slots", detail));
        }
    }
    let local = LocalRunRequest {
        job: attempt.job.clone(),
        sql: deploy.sql,
        parallelism: deploy.parallelism,
        restore: deploy.restore,
        state_dir: deploy.state_dir.unwrap_or_else(|| worker.state_dir.clone()),
    };
    let (run, mut events) = start_local_run(local)
        .await
        .map_err(|error| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "cannot-start", format!("{error:#}")))?;
    tracing::info!(job_id = %attempt.job, attempt = attempt.attempt, parallelism = deploy.parallelism, "attempt started");
    let started = Attempt { run, parallelism: deploy.parallelism, checkpoint: None, end: None, fenced: false };
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
        // Answered once the attempt has ended, so its slots are free for what follows (a
        // rescale deploys the next attempt at once).
        let deadline = Instant::now() + Duration::from_secs(10);
        while worker.lock().get(&ask.attempt).is_some_and(|a| a.end.is_none()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok(Json(SavepointTaken { location: taken.location, checkpoint: taken.checkpoint }).into_response())
}
