//! The wire protocol between the control plane's leader and workers: HTTP with JSON bodies.
//! Both sides speak these types; they live here so that the control plane never imports the
//! workers (DESIGN §2).
//!
//! Control plane → worker, on the worker's task endpoint (bearer: the worker key, `auth::ClusterKey`):
//! - `POST` [`DEPLOY_PATH`] [`Deploy`]: run an attempt of a job;
//! - `POST` [`CANCEL_PATH`] [`AttemptRef`]: cancel it;
//! - `POST` [`SAVEPOINT_PATH`] [`SavepointAsk`] → [`SavepointTaken`]: take a savepoint (and stop).
//!
//! Between the parts of an attempt spread over several workers, workers speak a protocol of
//! their own (`weir_workers::service::parts`).
//!
//! Worker → control plane, on any replica (a follower answers 421 with the leader's address):
//! - `POST` [`HEARTBEAT_PATH`] [`Heartbeat`] → [`HeartbeatReply`]: the worker is alive, and this
//!   is where each of its attempts stands: its newest completed checkpoint, its figures, how it
//!   ended. The reply names attempts to cancel and ended attempts the leader has taken note of.
//!
//! Every report rides the heartbeat and is repeated until the leader has taken note of it, so
//! nothing is lost when a heartbeat is, or when the leader changes between two of them.
//!
//! Errors on every route, and failures reported between processes, come from one table
//! ([`error`]).

pub mod error;

use serde::{Deserialize, Serialize};

pub use error::{ErrorCode, Failure, PROBLEM_CONTENT_TYPE, Problem};

use crate::ids::{CheckpointId, JobAttempt, JobId, VertexId, WorkerId};

pub const DEPLOY_PATH: &str = "/tasks";
pub const CANCEL_PATH: &str = "/tasks/cancel";
pub const SAVEPOINT_PATH: &str = "/tasks/savepoint";
pub const HEARTBEAT_PATH: &str = "/internal/v1/heartbeat";

/// Where a run starts from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Restore {
    /// From the beginning (a new job).
    Nothing,
    /// From the job's latest completed checkpoint, or the beginning if it has none (a job that
    /// was running when its run went away).
    LatestCheckpoint,
    /// From the savepoint at this location (a rescale).
    Savepoint { location: String },
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "failure", rename_all = "kebab-case")]
pub enum RunEnd {
    /// Every task finished (a bounded job).
    Finished,
    /// The run failed: why, and whether running again may help.
    Failed(Failure),
    /// The run was cancelled.
    Cancelled,
    /// The run stopped after a stopping savepoint (the savepoint's answer carries what follows).
    Stopped,
}

/// One attempt of one job: what the leader deploys, cancels and hears about. A job's attempts
/// are numbered from 1 by the leader, and a new one is always higher than any before it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AttemptRef {
    pub job: JobId,
    pub attempt: JobAttempt,
}

/// Run an attempt of a job: the worker plans `sql` itself (the planner is deterministic), at
/// `parallelism`, with all its subtasks in this worker's slots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deploy {
    pub attempt: AttemptRef,
    /// The job's tenant: its state goes to the tenant's own folder of the default state dir
    /// ([`tenant_state_dir`]).
    pub tenant: String,
    pub sql: String,
    pub parallelism: u32,
    pub restore: Restore,
    /// The default `state.checkpoints.dir` (a script's own `SET` wins); `None`: the worker's.
    pub state_dir: Option<String>,
    /// When the attempt is spread over several workers: this worker's part. `None`: it runs
    /// every subtask.
    #[serde(default)]
    pub part: Option<DeployPart>,
}

/// The default state folder of `tenant`'s jobs under the server's state dir `base`: one folder
/// per tenant, so a job naming another tenant's job (`pipeline.name` names its folder) can never
/// reach that job's checkpoints. `None` for a tenant id that is not `[a-z0-9-]+` (it could climb
/// out of `base`).
pub fn tenant_state_dir(base: &str, tenant: &str) -> Option<String> {
    let plain = !tenant.is_empty() && tenant.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    plain.then(|| format!("{}/tenants/{tenant}", base.trim_end_matches('/')))
}

/// A worker's part of an attempt spread over several: slot sharing, so it runs subtask `i` of
/// every vertex for each `i` in `subtasks`; every exchange goes through the shuffle server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployPart {
    pub subtasks: Vec<u32>,
    /// The shuffle server's address (`host:port`).
    pub shuffle: String,
    /// The attempt's namespace on the shuffle server, and the token that opens it there (the
    /// shuffle key's signature of it; empty when the server has no key).
    pub namespace: String,
    pub token: String,
    /// The lead part's task endpoint (`host:port`); `None`: this part leads (it runs the
    /// attempt's checkpoint coordinator).
    pub lead: Option<String>,
    /// The lead's list of the other parts' task endpoints.
    #[serde(default)]
    pub members: Vec<String>,
}

/// Take a savepoint of a running attempt; with `stop`, the attempt ends after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavepointAsk {
    pub attempt: AttemptRef,
    pub stop: bool,
    #[serde(default)]
    pub format: SavepointFormat,
}

/// How a savepoint holds its state (Flink's `formatType`, with its names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SavepointFormat {
    /// Self-contained: its folder holds all of its state, written once in full (its cost grows
    /// with the state). It outlives its job's state folder. Flink's default.
    #[default]
    Canonical,
    /// By reference: its databases read the job's files, pinned so neither retention nor the
    /// job's compactions remove them; taken in about the time of a checkpoint, valid while the
    /// job's state folder is kept. What a rescale uses.
    Native,
}

/// A savepoint taken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavepointTaken {
    pub location: String,
    pub checkpoint: CheckpointId,
}

/// A checkpoint an attempt completed: durable in the state store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointDone {
    pub id: CheckpointId,
    pub location: String,
    pub parallelism: u32,
    /// How many of the job's checkpoints to keep.
    pub retain: u32,
    /// Milliseconds since the Unix epoch.
    pub completed_at: u64,
}

/// Live figures of one vertex, over all its subtasks. `None` is "not known": the job is not
/// running, or no job master reported yet. The API shows it as `null`, never as zero, so a
/// dashboard cannot mistake "unknown" for "idle".
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VertexMetrics {
    /// Records the vertex's head read, summed over subtasks.
    pub records_in: Option<u64>,
    /// Records the vertex's tail emitted, summed over subtasks.
    pub records_out: Option<u64>,
    /// Share of wall time the busiest subtask spent waiting for downstream credit, 0.0 – 1.0
    /// (Flink's `backPressuredTimeMsPerSecond` / 1000).
    pub backpressure: Option<f64>,
    /// The vertex's event-time watermark (minimum over subtasks), ms since the Unix epoch.
    pub watermark: Option<i64>,
    /// Milliseconds its subtasks spent busy since they started, summed: neither waiting for
    /// input nor for downstream credit (Flink's `busyTimeMsPerSecond`, accumulated). The
    /// autoscaler's true processing rate is records in over the busy share.
    #[serde(default)]
    pub busy_ms: Option<u64>,
    /// A source vertex's records waiting to be read (unread files, a queue's depth, a
    /// consumer's lag), summed over subtasks; `None` when its connector cannot say.
    #[serde(default)]
    pub backlog: Option<u64>,
}

/// Where one attempt on a worker stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptReport {
    pub attempt: AttemptRef,
    /// The slots it holds on this worker (its subtask indices).
    pub parallelism: u32,
    /// The newest checkpoint the attempt completed.
    pub checkpoint: Option<CheckpointDone>,
    /// How it ended; `None` while it runs.
    pub end: Option<RunEnd>,
    #[serde(default)]
    pub metrics: Vec<(VertexId, VertexMetrics)>,
}

/// A worker's heartbeat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub worker: WorkerId,
    /// Where its task endpoint listens (`host:port`).
    pub address: String,
    pub slots: u32,
    pub attempts: Vec<AttemptReport>,
}

/// The leader's answer to a heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// Attempts the leader does not want running (replaced, or their job is over).
    pub cancel: Vec<AttemptRef>,
    /// Ended attempts the leader has taken note of: the worker may forget them.
    pub forget: Vec<AttemptRef>,
}

/// A follower's answer (421) to a worker: where the leader's endpoint is, when it knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotLeader {
    pub leader: Option<String>,
}
