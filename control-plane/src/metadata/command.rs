//! The commands replicated through the Raft log and what applying one answers.
//!
//! A command is a fact the leader decided (with its timestamp in it); applying it is pure and
//! deterministic. A command that breaks a rule is not an error of the log: it is applied as a
//! no-op and answered with a [`Rejection`] that the proposer turns into an API error.

use std::fmt;

use serde::{Deserialize, Serialize};
use weir_dataflow::ids::{CheckpointId, JobAttempt, JobId, WorkerId};
use weir_dataflow::secrets::{Options, Script};
use weir_dataflow::wire::ErrorCode;

use super::ids::{SavepointId, TenantId, TokenDigest, TokenId, UnixMillis};
use super::records::{
    CompletedCheckpoint, JobDeployment, JobStatus, Quota, QuotaKind, QuotaOverride, SavepointRecord, ScalingEvent,
    Suspension, TokenRole,
};

/// One change to the replicated metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Command {
    CreateTenant {
        tenant: TenantId,
        display_name: String,
        at: UnixMillis,
    },
    CreateToken {
        token: TokenId,
        tenant: TenantId,
        digest: TokenDigest,
        role: TokenRole,
        at: UnixMillis,
    },
    RevokeToken {
        token: TokenId,
    },
    /// Replaces the tenant's own limits (an unset one is the operator's default again).
    SetTenantQuota {
        tenant: TenantId,
        quota: QuotaOverride,
    },
    /// Registers a worker, or updates it when it registers again (after a restart or a leader
    /// change).
    RegisterWorker {
        worker: WorkerId,
        address: String,
        slots: u32,
        at: UnixMillis,
    },
    DeregisterWorker {
        worker: WorkerId,
    },
    SubmitJob {
        job: JobId,
        tenant: TenantId,
        name: String,
        /// `Debug` hides secret option values, as does the `Debug` of the options.
        sql: Script,
        config: Options,
        parallelism: u32,
        at: UnixMillis,
        /// The operator's default quota on the proposing replica, which the tenant's own limits
        /// override; the job is refused if it would take the tenant over them. Checked where the
        /// jobs are counted, so concurrent submissions cannot together pass the limit. `None`:
        /// no quota (commands written before quotas existed).
        #[serde(default)]
        quota: Option<Quota>,
    },
    SetJobStatus {
        job: JobId,
        status: JobStatus,
        at: UnixMillis,
    },
    SetDesiredParallelism {
        job: JobId,
        parallelism: u32,
        /// As for [`Command::SubmitJob`]: a raise past the tenant's slot quota is refused (a
        /// lowering never is). `None`: no quota.
        #[serde(default)]
        quota: Option<Quota>,
    },
    /// Records where the job's new attempt runs, before it is deployed: a new leader reads it to
    /// adopt the attempt's tasks instead of restarting them. Attempt numbers only grow.
    SetJobDeployment {
        job: JobId,
        deployment: JobDeployment,
    },
    /// Commits a completed checkpoint and keeps the newest `retain` of the job's checkpoints.
    CommitCheckpoint {
        job: JobId,
        checkpoint: CompletedCheckpoint,
        retain: u32,
    },
    /// Asks the job master for a savepoint of a running job (and to stop the job after it, when
    /// `stop`). The savepoint itself arrives later as [`Command::AddSavepoint`] with this id.
    RequestSavepoint {
        job: JobId,
        savepoint: SavepointId,
        stop: bool,
        at: UnixMillis,
    },
    /// Records a savepoint taken; completes the job's request of the same id, if any.
    AddSavepoint {
        savepoint: SavepointRecord,
    },
    RemoveSavepoint {
        savepoint: SavepointId,
    },
    /// A requested savepoint failed: the request is dropped (the job's exceptions say why), so
    /// it is neither listed as pending nor tried again by a later leader.
    WithdrawSavepoint {
        job: JobId,
        savepoint: SavepointId,
    },
    /// Adds an autoscaler decision to the job's history.
    RecordScaling {
        job: JobId,
        event: ScalingEvent,
    },
    /// A running job was stopped with a savepoint for want of input: SUSPENDED.
    SuspendJob {
        job: JobId,
        suspension: Suspension,
    },
    /// Input came for a suspended job: RESTARTING, from its suspension's savepoint.
    ResumeJob {
        job: JobId,
        at: UnixMillis,
    },
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::CreateTenant { tenant, .. } => write!(f, "create-tenant {tenant}"),
            Command::CreateToken { token, tenant, .. } => {
                write!(f, "create-token {token} of {tenant}")
            }
            Command::RevokeToken { token } => write!(f, "revoke-token {token}"),
            Command::SetTenantQuota { tenant, .. } => write!(f, "set-tenant-quota {tenant}"),
            Command::RegisterWorker { worker, slots, .. } => {
                write!(f, "register-worker {worker} slots={slots}")
            }
            Command::DeregisterWorker { worker } => write!(f, "deregister-worker {worker}"),
            Command::SubmitJob { job, tenant, .. } => write!(f, "submit-job {job} of {tenant}"),
            Command::SetJobStatus { job, status, .. } => write!(f, "set-job-status {job} {status}"),
            Command::SetDesiredParallelism { job, parallelism, .. } => {
                write!(f, "set-desired-parallelism {job} {parallelism}")
            }
            Command::SetJobDeployment { job, deployment } => {
                write!(f, "set-job-deployment {job} {} worker={}", deployment.attempt, deployment.worker)
            }
            Command::CommitCheckpoint { job, checkpoint, .. } => {
                write!(f, "commit-checkpoint {job} {}", checkpoint.id)
            }
            Command::RequestSavepoint { job, savepoint, stop, .. } => {
                write!(f, "request-savepoint {savepoint} of {job} stop={stop}")
            }
            Command::AddSavepoint { savepoint } => {
                write!(f, "add-savepoint {} of {}", savepoint.id, savepoint.job)
            }
            Command::RemoveSavepoint { savepoint } => write!(f, "remove-savepoint {savepoint}"),
            Command::WithdrawSavepoint { job, savepoint } => write!(f, "withdraw-savepoint {savepoint} of {job}"),
            Command::RecordScaling { job, event } => {
                write!(f, "record-scaling {job} {:?} {} -> {}", event.kind, event.from, event.to)
            }
            Command::SuspendJob { job, .. } => write!(f, "suspend-job {job}"),
            Command::ResumeJob { job, .. } => write!(f, "resume-job {job}"),
        }
    }
}

/// What applying a command answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Response {
    /// The command took effect (or was already in effect).
    Done,
    /// The checkpoint is committed; these older ones fell out of retention and their stored
    /// state may be deleted by whoever proposed the commit.
    CheckpointCommitted { discarded: Vec<CompletedCheckpoint> },
    /// The command broke a rule and changed nothing.
    Rejected(Rejection),
}

impl Response {
    /// The response as a `Result`: a rejection is the error, anything else took effect.
    pub fn into_result(self) -> Result<Response, Rejection> {
        match self {
            Response::Rejected(rejection) => Err(rejection),
            other => Ok(other),
        }
    }
}

/// Why a command changed nothing. Each variant has a stable [`Rejection::code`] for the API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "code", rename_all = "kebab-case")]
pub enum Rejection {
    #[error("tenant {tenant} already exists")]
    TenantExists { tenant: TenantId },
    #[error("tenant {tenant} does not exist")]
    UnknownTenant { tenant: TenantId },
    #[error("token {token} already exists")]
    TokenExists { token: TokenId },
    #[error("token {token} does not exist")]
    UnknownToken { token: TokenId },
    #[error("worker {worker} is not registered")]
    UnknownWorker { worker: WorkerId },
    #[error("a worker needs at least one slot")]
    NoSlots,
    #[error("job {job} already exists")]
    JobExists { job: JobId },
    #[error("job {job} does not exist")]
    UnknownJob { job: JobId },
    #[error("parallelism must be at least 1")]
    InvalidParallelism,
    #[error("job {job} cannot go from {from} to {to}")]
    IllegalTransition { job: JobId, from: JobStatus, to: JobStatus },
    #[error("job {job} is {status} and can no longer change")]
    JobTerminated { job: JobId, status: JobStatus },
    #[error("job {job} is {status}, not running")]
    JobNotRunning { job: JobId, status: JobStatus },
    #[error("checkpoint {offered} of job {job} is not newer than the committed {latest}")]
    StaleCheckpoint { job: JobId, latest: CheckpointId, offered: CheckpointId },
    #[error("{offered} of job {job} is not newer than its {latest}")]
    StaleAttempt { job: JobId, latest: JobAttempt, offered: JobAttempt },
    #[error("savepoint {savepoint} already exists")]
    SavepointExists { savepoint: SavepointId },
    #[error("savepoint {savepoint} does not exist")]
    UnknownSavepoint { savepoint: SavepointId },
    #[error(
        "tenant {tenant} is over its quota of {kind}: {used} in use and {requested} more asked for, {limit} \
         allowed; end or shrink a job, or ask the operator for a higher quota"
    )]
    QuotaExceeded { tenant: TenantId, kind: QuotaKind, used: u64, requested: u32, limit: u32 },
}

impl Rejection {
    /// The rejection's code in the one table (the API answers it in problem+json bodies).
    pub fn error_code(&self) -> ErrorCode {
        match self {
            Rejection::TenantExists { .. } => ErrorCode::TenantExists,
            Rejection::UnknownTenant { .. } => ErrorCode::UnknownTenant,
            Rejection::TokenExists { .. } => ErrorCode::TokenExists,
            Rejection::UnknownToken { .. } => ErrorCode::UnknownToken,
            Rejection::UnknownWorker { .. } => ErrorCode::UnknownWorker,
            Rejection::NoSlots => ErrorCode::InvalidSlots,
            Rejection::JobExists { .. } => ErrorCode::JobExists,
            Rejection::UnknownJob { .. } => ErrorCode::UnknownJob,
            Rejection::InvalidParallelism => ErrorCode::InvalidParallelism,
            Rejection::IllegalTransition { .. } => ErrorCode::IllegalTransition,
            Rejection::JobTerminated { .. } => ErrorCode::JobTerminated,
            Rejection::JobNotRunning { .. } => ErrorCode::JobNotRunning,
            Rejection::StaleCheckpoint { .. } => ErrorCode::StaleCheckpoint,
            Rejection::StaleAttempt { .. } => ErrorCode::StaleAttempt,
            Rejection::SavepointExists { .. } => ErrorCode::SavepointExists,
            Rejection::UnknownSavepoint { .. } => ErrorCode::UnknownSavepoint,
            Rejection::QuotaExceeded { .. } => ErrorCode::QuotaExceeded,
        }
    }

    /// The code's stable string.
    pub fn code(&self) -> &'static str {
        self.error_code().as_str()
    }
}
