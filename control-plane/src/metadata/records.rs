//! The records the replicated metadata holds: tenants, tokens, workers, jobs, checkpoints and
//! savepoints. Plain serde data; the rules that change them live in `state`.

use std::fmt;

use serde::{Deserialize, Serialize};
use weir_dataflow::ids::{CheckpointId, JobAttempt, JobId, WorkerId};
use weir_dataflow::secrets::{Options, Script};
use weir_dataflow::wire::CheckpointDone;

use super::ids::{SavepointId, TenantId, TokenDigest, TokenId, UnixMillis};

/// A tenant: owns jobs and tokens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    pub id: TenantId,
    pub display_name: String,
    pub created_at: UnixMillis,
    /// The operator's own limits for this tenant; what it leaves unset is the replica's default.
    #[serde(default)]
    pub quota: QuotaOverride,
}

/// What a tenant may hold at once and how fast it may submit: the limits in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// Jobs not in a terminal status (created, running, restarting, cancelling, …).
    pub max_running_jobs: u32,
    /// The sum of the desired parallelism of those jobs: a job at parallelism N takes N task
    /// slots.
    pub max_slots: u32,
    /// Job submissions a minute, per replica; up to [`Quota::submission_burst`] at once.
    pub submissions_per_minute: u32,
}

/// The operator's defaults unless `weir control-plane` or `weir standalone` is told others
/// (`--max-running-jobs`, `--max-slots`, `--submissions-per-minute`).
impl Default for Quota {
    fn default() -> Self {
        Quota { max_running_jobs: 20, max_slots: 64, submissions_per_minute: 60 }
    }
}

impl Quota {
    /// How many submissions may come at once after a quiet spell: ten seconds' worth of the
    /// rate, at least one.
    pub fn submission_burst(&self) -> u32 {
        self.submissions_per_minute.div_ceil(6).max(1)
    }
}

/// A tenant's own limits, each replacing the operator's default when set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_running_jobs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_slots: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submissions_per_minute: Option<u32>,
}

impl QuotaOverride {
    /// The limits in force: these where set, `default` elsewhere.
    pub fn over(&self, default: Quota) -> Quota {
        Quota {
            max_running_jobs: self.max_running_jobs.unwrap_or(default.max_running_jobs),
            max_slots: self.max_slots.unwrap_or(default.max_slots),
            submissions_per_minute: self.submissions_per_minute.unwrap_or(default.submissions_per_minute),
        }
    }
}

/// Which limit of a [`Quota`] a request would exceed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QuotaKind {
    RunningJobs,
    Slots,
}

impl QuotaKind {
    /// As the quota's field is named in the API.
    pub fn field(self) -> &'static str {
        match self {
            QuotaKind::RunningJobs => "max_running_jobs",
            QuotaKind::Slots => "max_slots",
        }
    }
}

impl fmt::Display for QuotaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QuotaKind::RunningJobs => "running jobs",
            QuotaKind::Slots => "task slots",
        })
    }
}

/// What an API token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenRole {
    /// Read and write the tenant's jobs.
    Admin,
    /// Read the tenant's jobs only.
    ReadOnly,
}

/// An API token of a tenant. Only the digest of its secret is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: TokenId,
    pub tenant: TenantId,
    pub digest: TokenDigest,
    pub role: TokenRole,
    pub created_at: UnixMillis,
}

/// A worker registered with the control plane. Liveness (heartbeats) is leader-local soft state
/// and not replicated: writing every heartbeat through Raft would be pure churn, and a new leader
/// simply waits one heartbeat timeout for workers to re-register.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRecord {
    pub id: WorkerId,
    /// Where the worker's task endpoint listens (`host:port`).
    pub address: String,
    pub slots: u32,
    pub registered_at: UnixMillis,
}

/// The life of a job, with Flink's state names (Flink spells the end of a cancel `CANCELED`, and
/// so does every Weir surface; `CANCELLED`, which early versions wrote, is still read).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    Created,
    Running,
    Failing,
    Restarting,
    Cancelling,
    /// Stopped with a savepoint because its sources had no input (scale to zero); resumed from
    /// it when a source's backlog appears. Holds no slots.
    Suspended,
    #[serde(rename = "CANCELED", alias = "CANCELLED")]
    Cancelled,
    Finished,
    Failed,
}

impl JobStatus {
    /// A terminal job never changes again; its savepoints outlive it.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Cancelled | JobStatus::Finished | JobStatus::Failed)
    }

    /// Whether a job in this status needs task slots (has or wants a run).
    pub fn holds_slots(self) -> bool {
        !self.is_terminal() && self != JobStatus::Suspended
    }

    /// Whether a job master may move a job from `self` to `next`.
    pub fn can_become(self, next: JobStatus) -> bool {
        use JobStatus::*;
        if self == next {
            // Idempotent: a job master that retries after a leader change re-proposes.
            return !self.is_terminal();
        }
        match self {
            Created => matches!(next, Running | Failing | Cancelling | Cancelled | Failed),
            Running => matches!(next, Failing | Restarting | Cancelling | Suspended | Cancelled | Finished | Failed),
            Suspended => matches!(next, Restarting | Cancelling | Cancelled | Failed),
            Failing => matches!(next, Restarting | Cancelling | Cancelled | Failed),
            Restarting => matches!(next, Running | Failing | Cancelling | Cancelled | Failed),
            Cancelling => matches!(next, Cancelled | Failed),
            Cancelled | Finished | Failed => false,
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            JobStatus::Created => "CREATED",
            JobStatus::Running => "RUNNING",
            JobStatus::Failing => "FAILING",
            JobStatus::Restarting => "RESTARTING",
            JobStatus::Cancelling => "CANCELLING",
            JobStatus::Suspended => "SUSPENDED",
            JobStatus::Cancelled => "CANCELED",
            JobStatus::Finished => "FINISHED",
            JobStatus::Failed => "FAILED",
        };
        f.write_str(name)
    }
}

/// A checkpoint the coordinator declared complete: every task acknowledged it and its state is
/// durable in object storage. The control plane stores the reference, not the state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletedCheckpoint {
    pub id: CheckpointId,
    /// Where the checkpoint's metadata lives in object storage.
    pub location: String,
    /// The parallelism per vertex the checkpoint was taken at is in its metadata; this is the
    /// job's parallelism then, kept for listings.
    pub parallelism: u32,
    pub state_size_bytes: u64,
    pub completed_at: UnixMillis,
}

impl CompletedCheckpoint {
    /// The record of a checkpoint a run reported.
    pub fn from_wire(done: &CheckpointDone) -> Self {
        CompletedCheckpoint {
            id: done.id,
            location: done.location.clone(),
            parallelism: done.parallelism,
            // The state store does not size checkpoints yet.
            state_size_bytes: 0,
            completed_at: UnixMillis(done.completed_at),
        }
    }
}

/// A job: the SQL script and its configuration (the job graph is derived from them
/// deterministically, so it is not stored), what the user asked for and where the job is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: JobId,
    pub tenant: TenantId,
    pub name: String,
    /// Kept as submitted; `Debug` and the API show it with secret option values hidden.
    pub sql: Script,
    pub config: Options,
    /// The parallelism the user or the autoscaler wants; the job master converges to it.
    pub desired_parallelism: u32,
    pub status: JobStatus,
    pub submitted_at: UnixMillis,
    pub status_changed_at: UnixMillis,
    /// Retained completed checkpoints, oldest first.
    pub checkpoints: Vec<CompletedCheckpoint>,
    /// Savepoints asked for and not taken yet, oldest first. The job master takes them and
    /// answers each with an `AddSavepoint` of the same id, which removes it from here.
    #[serde(default)]
    pub savepoint_requests: Vec<SavepointRequest>,
    /// The job's newest attempt and the worker it was deployed on (`None`: never deployed on a
    /// worker).
    #[serde(default)]
    pub deployment: Option<JobDeployment>,
    /// While SUSPENDED, and after, until the resumed job's first checkpoint: the savepoint it
    /// resumes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspension: Option<Suspension>,
    /// The autoscaler's decisions, oldest first (the newest [`MAX_SCALING_EVENTS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scalings: Vec<ScalingEvent>,
}

/// The most scaling decisions a job's history keeps.
pub const MAX_SCALING_EVENTS: usize = 100;

/// A job stopped for want of input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspension {
    /// The savepoint the job resumes from.
    pub savepoint: String,
    /// Since when its sources had had no input: anything arriving later wakes it.
    pub idle_since: UnixMillis,
    pub at: UnixMillis,
}

/// What the autoscaler did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ScalingKind {
    /// Parallelism changed.
    Rescale,
    /// Stopped with a savepoint: no input.
    Suspend,
    /// Started again from its suspension's savepoint: input came.
    Resume,
}

/// One decision of the autoscaler, with its reasons, as `GET /jobs/{id}/rescales` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScalingEvent {
    pub at: UnixMillis,
    pub kind: ScalingKind,
    /// The job's parallelism before and after (0 while suspended).
    pub from: u32,
    pub to: u32,
    /// Why, one line each (per vertex for a rescale).
    pub reasons: Vec<String>,
}

/// Where a job's attempt runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobDeployment {
    /// Numbered from 1; every new attempt of the job has a higher number.
    pub attempt: JobAttempt,
    /// The worker of the attempt's lead part (all of it, unless it is spread).
    pub worker: WorkerId,
    /// The workers of its other parts, when it is spread over several.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<WorkerId>,
}

impl JobDeployment {
    /// Whether a part of the attempt runs on `worker`.
    pub fn runs_on(&self, worker: &WorkerId) -> bool {
        &self.worker == worker || self.members.contains(worker)
    }
}

impl JobRecord {
    pub fn latest_checkpoint(&self) -> Option<&CompletedCheckpoint> {
        self.checkpoints.last()
    }

    /// The options it was submitted with, as a job configuration (its restart strategy, its
    /// autoscaler). They were checked at submission; one refused now keeps its default.
    pub fn job_config(&self) -> weir_dataflow::config::JobConfig {
        let mut config = weir_dataflow::config::JobConfig::default();
        for (key, value) in self.config.iter() {
            let _ = config.set(key, value);
        }
        config
    }
}

/// A savepoint the user asked for, recorded so that the leader's job master takes it even if the
/// leader changes between the request and the savepoint (the request is the desired state).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavepointRequest {
    /// The id the savepoint will have once taken.
    pub id: SavepointId,
    /// Stop the job once the savepoint is taken (Flink's stop-with-savepoint).
    pub stop: bool,
    pub requested_at: UnixMillis,
}

/// A savepoint: a checkpoint the user owns. It outlives its job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavepointRecord {
    pub id: SavepointId,
    pub job: JobId,
    pub tenant: TenantId,
    pub location: String,
    pub checkpoint: CheckpointId,
    pub created_at: UnixMillis,
}

#[cfg(test)]
mod tests {
    use super::JobStatus::{self, *};

    #[test]
    fn a_status_reads_the_same_everywhere_and_older_spellings_still_parse() {
        for status in [Created, Running, Failing, Restarting, Cancelling, Cancelled, Finished, Failed] {
            let json = serde_json::to_string(&status).expect("serialises");
            assert_eq!(json, format!("\"{status}\""), "the API and the CLI must spell {status:?} alike");
            assert_eq!(serde_json::from_str::<JobStatus>(&json).expect("parses"), status);
        }
        assert_eq!(Cancelled.to_string(), "CANCELED", "Flink's spelling");
        assert_eq!(serde_json::from_str::<JobStatus>("\"CANCELLED\"").expect("an older log parses"), Cancelled);
    }
}
