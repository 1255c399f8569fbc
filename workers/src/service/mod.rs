//! `weir worker`: a stateless worker. It heartbeats every [`HEARTBEAT_INTERVAL`] to the control
//! plane's leader (following a follower's 421 to it), runs the attempts the leader deploys on its
//! task endpoint ([`endpoint`]) — each in this process with [`crate::attempt`] — and reports
//! through its heartbeats where each attempt stands: its newest checkpoint, live figures, how it
//! ended. The parts of an attempt spread over several workers talk to each other through
//! [`parts`]. Messages to and from the control plane are `weir_dataflow::wire`'s.
//!
//! It keeps nothing durable: state goes to the job's `state.checkpoints.dir` (shared object
//! storage), so a killed worker's attempts restart elsewhere from their last checkpoint. A worker
//! that has not reached a leader with a quorum for [`LEASE`] cancels its attempts itself, so a
//! partitioned worker does not keep writing beside the attempt that replaces its own.

mod endpoint;
#[cfg(test)]
mod endpoint_tests;
pub mod parts;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use tokio::sync::Notify;
use weir_dataflow::auth::{ClusterKey, NoRandomness, fresh_id};
use weir_dataflow::ids::WorkerId;
use weir_dataflow::wire::{
    self, AttemptRef, AttemptReport, CheckpointDone, Heartbeat, HeartbeatReply, NotLeader, RunEnd,
};
use weir_net::{Listener, NetError, Plaintext, ServerTls, Transport};

use crate::attempt::RunningAttempt;
use crate::runtime::ManagedMemory;

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

/// What a worker is started with.
pub struct WorkerConfig {
    /// The control plane's replicas' internal listeners, as `host:port` (or whole base URLs).
    pub control_planes: Vec<String>,
    pub slots: u32,
    /// Where the task endpoint listens (`host:port`; port 0 picks one).
    pub listen: String,
    /// The certificate the task endpoint presents; `None`: plain HTTP.
    pub tls: Option<ServerTls>,
    /// Where the task endpoint may serve plain HTTP.
    pub plaintext: Plaintext,
    /// How the worker reaches the control plane, other workers and the shuffle server.
    pub transport: Transport,
    /// The default `state.checkpoints.dir` when the control plane names none.
    pub state_dir: String,
    /// The worker key (`weir key worker`): presented to the control plane and other workers, and
    /// taken by the task endpoint. A worker never holds the root token.
    pub key: ClusterKey,
    /// The memory its slots give keyed state, shared evenly (`--managed-memory`).
    pub managed_memory: ManagedMemory,
}

/// Why a worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("a worker needs at least one control-plane URL")]
    NoControlPlane,
    #[error(transparent)]
    NoRandomness(#[from] NoRandomness),
    #[error(transparent)]
    Listen(#[from] NetError),
    #[error("cannot build an HTTP client: {0}")]
    Client(String),
}

/// A worker whose task endpoint is bound; [`BoundWorker::serve`] runs it.
pub struct BoundWorker {
    worker: Arc<Worker>,
    listener: Listener,
    control_planes: Vec<String>,
}

impl BoundWorker {
    /// Binds the task endpoint and draws the worker's id.
    pub async fn bind(config: WorkerConfig) -> Result<BoundWorker, WorkerError> {
        if config.control_planes.is_empty() {
            return Err(WorkerError::NoControlPlane);
        }
        let flags = "--tls-cert, --tls-key";
        let listener = Listener::bind(&config.listen, config.tls.as_ref(), config.plaintext, flags).await?;
        let address = listener.address().to_string();
        let client = config
            .transport
            .http_client()
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| WorkerError::Client(e.to_string()))?;
        let worker = Arc::new(Worker {
            id: WorkerId(fresh_id("worker")?),
            address,
            slots: config.slots,
            managed_memory: config.managed_memory,
            key: config.key,
            state_dir: config.state_dir,
            attempts: Mutex::default(),
            nudge: Notify::new(),
            client,
            transport: config.transport,
        });
        let control_planes = config.control_planes.iter().map(|address| worker.transport.url(address)).collect();
        Ok(BoundWorker { worker, listener, control_planes })
    }

    pub fn id(&self) -> &WorkerId {
        &self.worker.id
    }

    /// Where the task endpoint listens (`host:port`).
    pub fn address(&self) -> &str {
        &self.worker.address
    }

    /// Serves the task endpoint and heartbeats until `shutdown` completes, then cancels every
    /// attempt.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let BoundWorker { worker, listener, control_planes } = self;
        let router = Router::new()
            .route(wire::DEPLOY_PATH, post(endpoint::deploy))
            .route(wire::CANCEL_PATH, post(endpoint::cancel))
            .route(wire::SAVEPOINT_PATH, post(endpoint::savepoint))
            .merge(parts::routes())
            .fallback(endpoint::not_found)
            .with_state(worker.clone());
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::error!(%error, "the task endpoint stopped");
            }
        });
        let beats = tokio::spawn(heartbeats(worker.clone(), control_planes));
        shutdown.await;
        beats.abort();
        tracing::info!("stopping: cancelling every attempt");
        for attempt in worker.lock().values() {
            attempt.run.cancel();
        }
    }
}

pub(crate) struct Worker {
    id: WorkerId,
    address: String,
    slots: u32,
    managed_memory: ManagedMemory,
    key: ClusterKey,
    state_dir: String,
    attempts: Mutex<BTreeMap<AttemptRef, Attempt>>,
    /// Wakes the heartbeat loop early (an attempt checkpointed or ended).
    nudge: Notify,
    /// For heartbeats, and for the parts of spread attempts to talk to each other.
    client: reqwest::Client,
    /// How `client` and the shuffle client reach other processes of the cluster.
    transport: Transport,
}

/// An attempt (or a part of one) this worker runs.
struct Attempt {
    run: Arc<RunningAttempt>,
    /// How checkpoint traffic of a spread attempt reaches this part's runtime.
    link: Option<parts::Inbound>,
    /// The slots it holds here.
    slots: u32,
    checkpoint: Option<CheckpointDone>,
    end: Option<RunEnd>,
    /// Cancelled because the lease ran out: its end is a failure (the job restarts), not a
    /// cancellation the user asked for.
    fenced: bool,
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
                parallelism: a.slots,
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
                tracing::info!(job_id = %attempt.job, attempt = %attempt.attempt, "the leader cancels this attempt");
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
            tracing::warn!(job_id = %attempt.job, attempt = %attempt.attempt, "no leader for {LEASE:?}: cancelling");
            a.fenced = true;
            a.run.cancel();
        }
    }

    /// Waits (up to 10 s) until `attempt` has ended, so that a stop or cancel is answered once
    /// its slots are free for what follows (a rescale deploys the next attempt at once).
    async fn until_ended(&self, attempt: &AttemptRef) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.lock().get(attempt).is_some_and(|a| a.end.is_none()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Heartbeats until aborted, following the leader from replica to replica.
async fn heartbeats(worker: Arc<Worker>, control_planes: Vec<String>) {
    let client = worker.client.clone();
    let mut next = 0;
    let mut leader: Option<String> = None;
    let mut answered_at = Instant::now();
    let mut lease_lost = false;
    loop {
        let url = leader.clone().unwrap_or_else(|| control_planes[next % control_planes.len()].clone());
        let sent = client
            .post(format!("{}{}", url.trim_end_matches('/'), wire::HEARTBEAT_PATH))
            .bearer_auth(worker.key.reveal())
            .timeout(Duration::from_secs(3))
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
                    Some(address) if Some(worker.transport.url(&address)) != leader => {
                        leader = Some(worker.transport.url(&address));
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
