//! The metadata state and the pure rules that apply a [`Command`] to it.
//!
//! No I/O, no clock, no randomness: every replica applies the same log to the same state. The
//! whole state serializes as one value, which is what a Raft snapshot holds.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use weir_dataflow::ids::{JobId, WorkerId};

use super::command::{Command, Rejection, Response};
use super::ids::{SavepointId, TenantId, TokenDigest, TokenId};
use super::records::{
    JobRecord, JobStatus, MAX_SCALING_EVENTS, Quota, QuotaKind, SavepointRecord, SavepointRequest, TenantRecord,
    TokenRecord, WorkerRecord,
};

/// Everything the control plane replicates.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataState {
    tenants: BTreeMap<TenantId, TenantRecord>,
    tokens: BTreeMap<TokenId, TokenRecord>,
    workers: BTreeMap<WorkerId, WorkerRecord>,
    jobs: BTreeMap<JobId, JobRecord>,
    savepoints: BTreeMap<SavepointId, SavepointRecord>,
}

impl MetadataState {
    pub fn tenant(&self, id: &TenantId) -> Option<&TenantRecord> {
        self.tenants.get(id)
    }

    pub fn tenants(&self) -> impl Iterator<Item = &TenantRecord> {
        self.tenants.values()
    }

    pub fn token(&self, id: &TokenId) -> Option<&TokenRecord> {
        self.tokens.get(id)
    }

    /// The token whose secret hashes to `digest` (how the API authenticates a bearer token).
    pub fn token_by_digest(&self, digest: &TokenDigest) -> Option<&TokenRecord> {
        self.tokens.values().find(|token| &token.digest == digest)
    }

    pub fn worker(&self, id: &WorkerId) -> Option<&WorkerRecord> {
        self.workers.get(id)
    }

    pub fn workers(&self) -> impl Iterator<Item = &WorkerRecord> {
        self.workers.values()
    }

    pub fn job(&self, id: &JobId) -> Option<&JobRecord> {
        self.jobs.get(id)
    }

    pub fn jobs(&self) -> impl Iterator<Item = &JobRecord> {
        self.jobs.values()
    }

    pub fn jobs_of<'a>(&'a self, tenant: &'a TenantId) -> impl Iterator<Item = &'a JobRecord> {
        self.jobs.values().filter(move |job| &job.tenant == tenant)
    }

    pub fn savepoint(&self, id: &SavepointId) -> Option<&SavepointRecord> {
        self.savepoints.get(id)
    }

    pub fn savepoints_of<'a>(&'a self, job: &'a JobId) -> impl Iterator<Item = &'a SavepointRecord> {
        self.savepoints.values().filter(move |sp| &sp.job == job)
    }

    /// Applies one command. A command that breaks a rule leaves the state untouched and is
    /// answered with [`Response::Rejected`].
    pub fn apply(&mut self, command: &Command) -> Response {
        match self.try_apply(command) {
            Ok(response) => response,
            Err(rejection) => Response::Rejected(rejection),
        }
    }

    // Every branch checks all its rules before it mutates anything, so a rejection is a no-op.
    fn try_apply(&mut self, command: &Command) -> Result<Response, Rejection> {
        match command {
            Command::CreateTenant { tenant, display_name, at } => {
                if self.tenants.contains_key(tenant) {
                    return Err(Rejection::TenantExists { tenant: tenant.clone() });
                }
                self.tenants.insert(
                    tenant.clone(),
                    TenantRecord {
                        id: tenant.clone(),
                        display_name: display_name.clone(),
                        created_at: *at,
                        quota: Default::default(),
                    },
                );
                Ok(Response::Done)
            }
            Command::SetTenantQuota { tenant, quota } => {
                let record =
                    self.tenants.get_mut(tenant).ok_or_else(|| Rejection::UnknownTenant { tenant: tenant.clone() })?;
                record.quota = *quota;
                Ok(Response::Done)
            }
            Command::CreateToken { token, tenant, digest, role, at } => {
                self.require_tenant(tenant)?;
                if self.tokens.contains_key(token) {
                    return Err(Rejection::TokenExists { token: token.clone() });
                }
                self.tokens.insert(
                    token.clone(),
                    TokenRecord {
                        id: token.clone(),
                        tenant: tenant.clone(),
                        digest: digest.clone(),
                        role: *role,
                        created_at: *at,
                    },
                );
                Ok(Response::Done)
            }
            Command::RevokeToken { token } => match self.tokens.remove(token) {
                Some(_) => Ok(Response::Done),
                None => Err(Rejection::UnknownToken { token: token.clone() }),
            },
            Command::RegisterWorker { worker, address, slots, at } => {
                if *slots == 0 {
                    return Err(Rejection::NoSlots);
                }
                self.workers.insert(
                    worker.clone(),
                    WorkerRecord { id: worker.clone(), address: address.clone(), slots: *slots, registered_at: *at },
                );
                Ok(Response::Done)
            }
            Command::DeregisterWorker { worker } => match self.workers.remove(worker) {
                Some(_) => Ok(Response::Done),
                None => Err(Rejection::UnknownWorker { worker: worker.clone() }),
            },
            Command::SubmitJob { job, tenant, name, sql, config, parallelism, at, quota } => {
                self.require_tenant(tenant)?;
                if self.jobs.contains_key(job) {
                    return Err(Rejection::JobExists { job: job.clone() });
                }
                if *parallelism == 0 {
                    return Err(Rejection::InvalidParallelism);
                }
                if let Some(default) = quota {
                    self.within_quota(tenant, *default, 1, *parallelism)?;
                }
                self.jobs.insert(
                    job.clone(),
                    JobRecord {
                        id: job.clone(),
                        tenant: tenant.clone(),
                        name: name.clone(),
                        sql: sql.clone(),
                        config: config.clone(),
                        desired_parallelism: *parallelism,
                        status: JobStatus::Created,
                        submitted_at: *at,
                        status_changed_at: *at,
                        checkpoints: Vec::new(),
                        savepoint_requests: Vec::new(),
                        deployment: None,
                        suspension: None,
                        scalings: Vec::new(),
                    },
                );
                Ok(Response::Done)
            }
            Command::SetJobStatus { job, status, at } => {
                let record = self.live_job_mut(job)?;
                if !record.status.can_become(*status) {
                    return Err(Rejection::IllegalTransition { job: job.clone(), from: record.status, to: *status });
                }
                if record.status != *status {
                    record.status = *status;
                    record.status_changed_at = *at;
                }
                Ok(Response::Done)
            }
            Command::SetDesiredParallelism { job, parallelism, quota } => {
                if *parallelism == 0 {
                    return Err(Rejection::InvalidParallelism);
                }
                let record = self.live_job_mut(job)?;
                let (tenant, raise) = (record.tenant.clone(), parallelism.saturating_sub(record.desired_parallelism));
                if let Some(default) = quota
                    && raise > 0
                {
                    self.within_quota(&tenant, *default, 0, raise)?;
                }
                self.live_job_mut(job)?.desired_parallelism = *parallelism;
                Ok(Response::Done)
            }
            Command::SetJobDeployment { job, deployment } => {
                let record = self.live_job_mut(job)?;
                if let Some(latest) = &record.deployment
                    && latest.attempt >= deployment.attempt
                {
                    return Err(Rejection::StaleAttempt {
                        job: job.clone(),
                        latest: latest.attempt,
                        offered: deployment.attempt,
                    });
                }
                record.deployment = Some(deployment.clone());
                Ok(Response::Done)
            }
            Command::CommitCheckpoint { job, checkpoint, retain } => {
                let record = self.live_job_mut(job)?;
                if let Some(latest) = record.latest_checkpoint()
                    && latest.id >= checkpoint.id
                {
                    // A coordinator of an older leader may still be finishing a checkpoint; ids
                    // only grow, so an old or repeated id is fenced off here.
                    return Err(Rejection::StaleCheckpoint {
                        job: job.clone(),
                        latest: latest.id,
                        offered: checkpoint.id,
                    });
                }
                record.checkpoints.push(checkpoint.clone());
                // A checkpoint of the resumed run supersedes the suspension's savepoint (one
                // of the run stopped for the suspension does not).
                if record.status != JobStatus::Suspended {
                    record.suspension = None;
                }
                // Retaining zero would lose the checkpoint just committed: keep at least one.
                let keep = (*retain).max(1) as usize;
                let excess = record.checkpoints.len().saturating_sub(keep);
                let discarded = record.checkpoints.drain(..excess).collect();
                Ok(Response::CheckpointCommitted { discarded })
            }
            Command::RequestSavepoint { job, savepoint, stop, at } => {
                if self.savepoint_id_taken(savepoint) {
                    return Err(Rejection::SavepointExists { savepoint: savepoint.clone() });
                }
                let record = self.live_job_mut(job)?;
                // Only a running job has tasks to snapshot (as in Flink).
                if record.status != JobStatus::Running {
                    return Err(Rejection::JobNotRunning { job: job.clone(), status: record.status });
                }
                record.savepoint_requests.push(SavepointRequest {
                    id: savepoint.clone(),
                    stop: *stop,
                    requested_at: *at,
                });
                Ok(Response::Done)
            }
            Command::AddSavepoint { savepoint } => {
                if self.savepoints.contains_key(&savepoint.id) {
                    return Err(Rejection::SavepointExists { savepoint: savepoint.id.clone() });
                }
                let job = self
                    .jobs
                    .get_mut(&savepoint.job)
                    .ok_or_else(|| Rejection::UnknownJob { job: savepoint.job.clone() })?;
                job.savepoint_requests.retain(|request| request.id != savepoint.id);
                // The savepoint belongs to the job's tenant, whatever the proposer wrote.
                let mut record = savepoint.clone();
                record.tenant = job.tenant.clone();
                self.savepoints.insert(record.id.clone(), record);
                Ok(Response::Done)
            }
            Command::RecordScaling { job, event } => {
                let record = self.live_job_mut(job)?;
                record.scalings.push(event.clone());
                let excess = record.scalings.len().saturating_sub(MAX_SCALING_EVENTS);
                record.scalings.drain(..excess);
                Ok(Response::Done)
            }
            Command::SuspendJob { job, suspension } => {
                let record = self.live_job_mut(job)?;
                if !record.status.can_become(JobStatus::Suspended) {
                    let (from, to) = (record.status, JobStatus::Suspended);
                    return Err(Rejection::IllegalTransition { job: job.clone(), from, to });
                }
                record.status = JobStatus::Suspended;
                record.status_changed_at = suspension.at;
                record.suspension = Some(suspension.clone());
                Ok(Response::Done)
            }
            Command::ResumeJob { job, at } => {
                let record = self.live_job_mut(job)?;
                if record.status != JobStatus::Suspended {
                    let (from, to) = (record.status, JobStatus::Restarting);
                    return Err(Rejection::IllegalTransition { job: job.clone(), from, to });
                }
                record.status = JobStatus::Restarting;
                record.status_changed_at = *at;
                Ok(Response::Done)
            }
            Command::RemoveSavepoint { savepoint } => match self.savepoints.remove(savepoint) {
                Some(_) => Ok(Response::Done),
                None => Err(Rejection::UnknownSavepoint { savepoint: savepoint.clone() }),
            },
            Command::WithdrawSavepoint { job, savepoint } => {
                let record = self.jobs.get_mut(job).ok_or_else(|| Rejection::UnknownJob { job: job.clone() })?;
                let before = record.savepoint_requests.len();
                record.savepoint_requests.retain(|request| &request.id != savepoint);
                if record.savepoint_requests.len() == before {
                    return Err(Rejection::UnknownSavepoint { savepoint: savepoint.clone() });
                }
                Ok(Response::Done)
            }
        }
    }

    /// Whether `id` names a savepoint taken or requested (of any job): ids are unique across both.
    fn savepoint_id_taken(&self, id: &SavepointId) -> bool {
        self.savepoints.contains_key(id)
            || self.jobs.values().any(|job| job.savepoint_requests.iter().any(|request| &request.id == id))
    }

    /// The limits in force for `tenant`: its own where the operator set them, else `default`.
    pub fn quota_of(&self, tenant: &TenantId, default: Quota) -> Quota {
        self.tenants.get(tenant).map_or(default, |record| record.quota.over(default))
    }

    /// What `tenant`'s jobs hold now: how many are not terminal, and the sum of their
    /// parallelism (their task slots).
    pub fn usage_of(&self, tenant: &TenantId) -> (u64, u64) {
        self.jobs_of(tenant)
            .filter(|job| !job.status.is_terminal())
            .fold((0, 0), |(jobs, slots), job| (jobs + 1, slots + u64::from(job.desired_parallelism)))
    }

    /// Whether `tenant` may take `more_jobs` more running jobs and `more_slots` more slots.
    fn within_quota(
        &self,
        tenant: &TenantId,
        default: Quota,
        more_jobs: u32,
        more_slots: u32,
    ) -> Result<(), Rejection> {
        let quota = self.quota_of(tenant, default);
        let (jobs, slots) = self.usage_of(tenant);
        let checks = [
            (QuotaKind::RunningJobs, jobs, more_jobs, quota.max_running_jobs),
            (QuotaKind::Slots, slots, more_slots, quota.max_slots),
        ];
        for (kind, used, requested, limit) in checks {
            if requested > 0 && used + u64::from(requested) > u64::from(limit) {
                return Err(Rejection::QuotaExceeded { tenant: tenant.clone(), kind, used, requested, limit });
            }
        }
        Ok(())
    }

    fn require_tenant(&self, tenant: &TenantId) -> Result<(), Rejection> {
        if self.tenants.contains_key(tenant) {
            Ok(())
        } else {
            Err(Rejection::UnknownTenant { tenant: tenant.clone() })
        }
    }

    /// The job, if it exists and has not reached a terminal status.
    fn live_job_mut(&mut self, job: &JobId) -> Result<&mut JobRecord, Rejection> {
        let record = self.jobs.get_mut(job).ok_or_else(|| Rejection::UnknownJob { job: job.clone() })?;
        if record.status.is_terminal() {
            return Err(Rejection::JobTerminated { job: job.clone(), status: record.status });
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use weir_dataflow::ids::{CheckpointId, JobAttempt};
    use weir_dataflow::secrets::Script;

    use super::*;
    use crate::metadata::ids::UnixMillis;
    use crate::metadata::records::{CompletedCheckpoint, JobDeployment, QuotaOverride, TokenRole};

    fn tenant(name: &str) -> Command {
        Command::CreateTenant { tenant: TenantId::from(name), display_name: name.to_uppercase(), at: UnixMillis(1) }
    }

    fn submit(job: &str, tenant: &str) -> Command {
        Command::SubmitJob {
            job: JobId(job.into()),
            tenant: TenantId::from(tenant),
            name: format!("{job} name"),
            sql: Script::new("INSERT INTO sink SELECT * FROM source"),
            config: BTreeMap::from([("parallelism.default".to_string(), "2".to_string())]).into(),
            parallelism: 2,
            at: UnixMillis(2),
            quota: None,
        }
    }

    fn checkpoint(id: u64) -> CompletedCheckpoint {
        CompletedCheckpoint {
            id: CheckpointId(id),
            location: format!("s3://bucket/chk-{id}"),
            parallelism: 2,
            state_size_bytes: 100 * id,
            completed_at: UnixMillis(10 + id),
        }
    }

    fn commit(job: &str, id: u64, retain: u32) -> Command {
        Command::CommitCheckpoint { job: JobId(job.into()), checkpoint: checkpoint(id), retain }
    }

    fn set_status(job: &str, status: JobStatus) -> Command {
        Command::SetJobStatus { job: JobId(job.into()), status, at: UnixMillis(5) }
    }

    fn savepoint_of(id: &str, job: &str, tenant: &str) -> SavepointRecord {
        SavepointRecord {
            id: SavepointId::from(id),
            job: JobId(job.into()),
            tenant: TenantId::from(tenant),
            location: format!("s3://bucket/{id}"),
            checkpoint: CheckpointId(4),
            created_at: UnixMillis(9),
        }
    }

    fn rejected(response: Response) -> &'static str {
        match response {
            Response::Rejected(rejection) => rejection.code(),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn a_job_needs_an_existing_tenant_and_a_fresh_id() {
        let mut state = MetadataState::default();
        assert_eq!(rejected(state.apply(&submit("j1", "acme"))), "unknown-tenant");
        assert_eq!(state.apply(&tenant("acme")), Response::Done);
        assert_eq!(rejected(state.apply(&tenant("acme"))), "tenant-exists");
        assert_eq!(state.apply(&submit("j1", "acme")), Response::Done);
        assert_eq!(rejected(state.apply(&submit("j1", "acme"))), "job-exists");

        let job = state.job(&JobId("j1".into())).expect("submitted");
        assert_eq!(job.status, JobStatus::Created);
        assert_eq!(job.desired_parallelism, 2);
        assert_eq!(state.jobs_of(&TenantId::from("acme")).count(), 1);
        assert_eq!(state.jobs_of(&TenantId::from("other")).count(), 0);
    }

    #[test]
    fn job_status_follows_the_lifecycle_and_terminal_is_final() {
        let mut state = MetadataState::default();
        state.apply(&tenant("acme"));
        state.apply(&submit("j1", "acme"));
        assert_eq!(rejected(state.apply(&set_status("j1", JobStatus::Finished))), "illegal-transition");
        for status in [JobStatus::Running, JobStatus::Running, JobStatus::Restarting, JobStatus::Running] {
            assert_eq!(state.apply(&set_status("j1", status)), Response::Done);
        }
        assert_eq!(state.apply(&set_status("j1", JobStatus::Cancelling)), Response::Done);
        assert_eq!(state.apply(&set_status("j1", JobStatus::Cancelled)), Response::Done);
        let before = state.clone();
        assert_eq!(rejected(state.apply(&set_status("j1", JobStatus::Running))), "job-terminated");
        let parallelism = Command::SetDesiredParallelism { job: JobId("j1".into()), parallelism: 4, quota: None };
        assert_eq!(rejected(state.apply(&parallelism)), "job-terminated");
        assert_eq!(state, before, "a rejected command changes nothing");
    }

    #[test]
    fn deployments_only_move_to_newer_attempts() {
        let mut state = MetadataState::default();
        state.apply(&tenant("acme"));
        state.apply(&submit("j1", "acme"));
        let deploy = |attempt, worker: &str| Command::SetJobDeployment {
            job: JobId("j1".into()),
            deployment: JobDeployment {
                attempt: JobAttempt(attempt),
                worker: WorkerId(worker.into()),
                members: Vec::new(),
            },
        };
        assert_eq!(state.apply(&deploy(1, "w1")), Response::Done);
        assert_eq!(state.apply(&deploy(2, "w2")), Response::Done);
        assert_eq!(rejected(state.apply(&deploy(2, "w1"))), "stale-attempt");
        assert_eq!(rejected(state.apply(&deploy(1, "w1"))), "stale-attempt");
        let job = state.job(&JobId("j1".into())).expect("submitted");
        assert_eq!(
            job.deployment,
            Some(JobDeployment { attempt: JobAttempt(2), worker: WorkerId("w2".into()), members: Vec::new() })
        );
    }

    #[test]
    fn desired_parallelism_must_be_positive() {
        let mut state = MetadataState::default();
        state.apply(&tenant("acme"));
        state.apply(&submit("j1", "acme"));
        let set = |parallelism| Command::SetDesiredParallelism { job: JobId("j1".into()), parallelism, quota: None };
        assert_eq!(rejected(state.apply(&set(0))), "invalid-parallelism");
        assert_eq!(state.apply(&set(5)), Response::Done);
        assert_eq!(state.job(&JobId("j1".into())).map(|j| j.desired_parallelism), Some(5));
    }

    #[test]
    fn checkpoints_are_monotonic_and_retention_discards_the_oldest() {
        let mut state = MetadataState::default();
        state.apply(&tenant("acme"));
        state.apply(&submit("j1", "acme"));
        assert_eq!(state.apply(&commit("j1", 1, 2)), Response::CheckpointCommitted { discarded: vec![] });
        assert_eq!(state.apply(&commit("j1", 2, 2)), Response::CheckpointCommitted { discarded: vec![] });
        assert_eq!(state.apply(&commit("j1", 3, 2)), Response::CheckpointCommitted { discarded: vec![checkpoint(1)] });
        assert_eq!(rejected(state.apply(&commit("j1", 3, 2))), "stale-checkpoint");
        assert_eq!(rejected(state.apply(&commit("j1", 2, 2))), "stale-checkpoint");
        // retain 0 still keeps the newest checkpoint
        assert_eq!(
            state.apply(&commit("j1", 7, 0)),
            Response::CheckpointCommitted { discarded: vec![checkpoint(2), checkpoint(3)] }
        );
        let job = state.job(&JobId("j1".into())).expect("submitted");
        assert_eq!(job.latest_checkpoint(), Some(&checkpoint(7)));
        assert_eq!(rejected(state.apply(&commit("nope", 8, 1))), "unknown-job");
    }

    #[test]
    fn savepoints_outlive_their_job_and_take_its_tenant() {
        let mut state = MetadataState::default();
        state.apply(&tenant("acme"));
        state.apply(&submit("j1", "acme"));
        let savepoint = savepoint_of("sp-1", "j1", "somebody-else");
        let add = Command::AddSavepoint { savepoint: savepoint.clone() };
        assert_eq!(state.apply(&add), Response::Done);
        assert_eq!(rejected(state.apply(&add)), "savepoint-exists");
        state.apply(&set_status("j1", JobStatus::Cancelled));
        let stored = state.savepoint(&savepoint.id).expect("kept after cancel");
        assert_eq!(stored.tenant, TenantId::from("acme"));
        assert_eq!(state.savepoints_of(&JobId("j1".into())).count(), 1);
        let remove = Command::RemoveSavepoint { savepoint: savepoint.id.clone() };
        assert_eq!(state.apply(&remove), Response::Done);
        assert_eq!(rejected(state.apply(&remove)), "unknown-savepoint");
    }

    #[test]
    fn a_failed_savepoint_request_is_withdrawn() {
        let mut state = MetadataState::default();
        state.apply(&tenant("acme"));
        state.apply(&submit("j1", "acme"));
        state.apply(&set_status("j1", JobStatus::Running));
        let (job, savepoint) = (JobId("j1".into()), SavepointId("sp-1".into()));
        let request = Command::RequestSavepoint {
            job: job.clone(),
            savepoint: savepoint.clone(),
            stop: false,
            at: UnixMillis(1),
        };
        assert_eq!(state.apply(&request), Response::Done);
        let withdraw = Command::WithdrawSavepoint { job: job.clone(), savepoint };
        assert_eq!(state.apply(&withdraw), Response::Done);
        assert!(state.job(&job).expect("submitted").savepoint_requests.is_empty());
        assert_eq!(rejected(state.apply(&withdraw)), "unknown-savepoint");
    }

    #[test]
    fn savepoint_requests_need_a_running_job_and_complete_with_their_savepoint() {
        let mut state = MetadataState::default();
        state.apply(&tenant("acme"));
        state.apply(&submit("j1", "acme"));
        let request = |id: &str, stop| Command::RequestSavepoint {
            job: JobId("j1".into()),
            savepoint: SavepointId::from(id),
            stop,
            at: UnixMillis(6),
        };
        assert_eq!(rejected(state.apply(&request("sp-1", false))), "job-not-running");
        state.apply(&set_status("j1", JobStatus::Running));
        assert_eq!(state.apply(&request("sp-1", false)), Response::Done);
        assert_eq!(rejected(state.apply(&request("sp-1", true))), "savepoint-exists");
        assert_eq!(state.apply(&request("sp-2", true)), Response::Done);
        let pending: Vec<(String, bool)> = state
            .job(&JobId("j1".into()))
            .expect("submitted")
            .savepoint_requests
            .iter()
            .map(|r| (r.id.0.clone(), r.stop))
            .collect();
        assert_eq!(pending, vec![("sp-1".into(), false), ("sp-2".into(), true)]);

        let taken = savepoint_of("sp-1", "j1", "acme");
        assert_eq!(state.apply(&Command::AddSavepoint { savepoint: taken }), Response::Done);
        let job = state.job(&JobId("j1".into())).expect("submitted");
        assert_eq!(job.savepoint_requests.iter().map(|r| r.id.0.as_str()).collect::<Vec<_>>(), vec!["sp-2"]);
        // A taken savepoint's id cannot be requested again either.
        assert_eq!(rejected(state.apply(&request("sp-1", false))), "savepoint-exists");
        state.apply(&set_status("j1", JobStatus::Cancelled));
        assert_eq!(rejected(state.apply(&request("sp-3", false))), "job-terminated");
    }

    #[test]
    fn quotas_count_live_jobs_and_their_slots_and_tenants_may_have_their_own() {
        let mut state = MetadataState::default();
        state.apply(&tenant("acme"));
        state.apply(&tenant("globex"));
        let default = Quota { max_running_jobs: 2, max_slots: 5, submissions_per_minute: 60 };
        let submit_within = |job: &str, tenant: &str, parallelism| match submit(job, tenant) {
            Command::SubmitJob { job, tenant, name, sql, config, at, .. } => {
                Command::SubmitJob { job, tenant, name, sql, config, parallelism, at, quota: Some(default) }
            }
            other => other,
        };
        let quota_error = |response| match response {
            Response::Rejected(Rejection::QuotaExceeded { kind, used, requested, limit, .. }) => {
                (kind, used, requested, limit)
            }
            other => panic!("expected a quota rejection, got {other:?}"),
        };
        assert_eq!(state.apply(&submit_within("j1", "acme", 2)), Response::Done);
        assert_eq!(
            quota_error(state.apply(&submit_within("j2", "acme", 4))),
            (QuotaKind::Slots, 2, 4, 5),
            "2 + 4 slots is over 5"
        );
        assert_eq!(state.apply(&submit_within("j2", "acme", 3)), Response::Done);
        assert_eq!(quota_error(state.apply(&submit_within("j3", "acme", 1))), (QuotaKind::RunningJobs, 2, 1, 2));
        assert_eq!(state.apply(&submit_within("g1", "globex", 5)), Response::Done, "quotas are per tenant");

        // A raise past the slots is refused, a lowering never; a terminal job frees its share.
        let rescale = |job: &str, parallelism| Command::SetDesiredParallelism {
            job: JobId(job.into()),
            parallelism,
            quota: Some(default),
        };
        assert_eq!(quota_error(state.apply(&rescale("j1", 3))), (QuotaKind::Slots, 5, 1, 5));
        assert_eq!(state.apply(&rescale("j1", 1)), Response::Done);
        assert_eq!(state.apply(&rescale("j1", 2)), Response::Done);
        state.apply(&set_status("j1", JobStatus::Cancelled));
        assert_eq!(state.usage_of(&TenantId::from("acme")), (1, 3));
        assert_eq!(state.apply(&submit_within("j3", "acme", 2)), Response::Done);

        // The tenant's own limits replace the default where set; unknown tenants have none.
        let own = QuotaOverride { max_running_jobs: Some(3), ..Default::default() };
        let set_own = |tenant: &str| Command::SetTenantQuota { tenant: TenantId::from(tenant), quota: own };
        assert_eq!(rejected(state.apply(&set_own("nobody"))), "unknown-tenant");
        assert_eq!(state.apply(&set_own("acme")), Response::Done);
        assert_eq!(
            state.quota_of(&TenantId::from("acme"), default),
            Quota { max_running_jobs: 3, max_slots: 5, submissions_per_minute: 60 }
        );
        assert_eq!(quota_error(state.apply(&submit_within("j4", "acme", 1))), (QuotaKind::Slots, 5, 1, 5));
        let own = QuotaOverride { max_running_jobs: Some(3), max_slots: Some(6), submissions_per_minute: None };
        state.apply(&Command::SetTenantQuota { tenant: TenantId::from("acme"), quota: own });
        assert_eq!(state.apply(&submit_within("j4", "acme", 1)), Response::Done);
        // Without a quota in the command (older log entries), nothing is counted.
        assert_eq!(state.apply(&submit("j5", "acme")), Response::Done);
    }

    #[test]
    fn workers_register_again_and_deregister() {
        let mut state = MetadataState::default();
        let register = |slots, address: &str| Command::RegisterWorker {
            worker: WorkerId("w1".into()),
            address: address.into(),
            slots,
            at: UnixMillis(3),
        };
        assert_eq!(rejected(state.apply(&register(0, "a:1"))), "invalid-slots");
        assert_eq!(state.apply(&register(4, "a:1")), Response::Done);
        assert_eq!(state.apply(&register(8, "b:2")), Response::Done);
        let worker = state.worker(&WorkerId("w1".into())).expect("registered");
        assert_eq!((worker.slots, worker.address.as_str()), (8, "b:2"));
        let deregister = Command::DeregisterWorker { worker: WorkerId("w1".into()) };
        assert_eq!(state.apply(&deregister), Response::Done);
        assert_eq!(rejected(state.apply(&deregister)), "unknown-worker");
        assert_eq!(state.workers().count(), 0);
    }

    #[test]
    fn tokens_belong_to_tenants_and_are_found_by_digest() {
        let mut state = MetadataState::default();
        let create = Command::CreateToken {
            token: TokenId::from("t1"),
            tenant: TenantId::from("acme"),
            digest: TokenDigest("d1".into()),
            role: TokenRole::ReadOnly,
            at: UnixMillis(4),
        };
        assert_eq!(rejected(state.apply(&create)), "unknown-tenant");
        state.apply(&tenant("acme"));
        assert_eq!(state.apply(&create), Response::Done);
        assert_eq!(rejected(state.apply(&create)), "token-exists");
        let found = state.token_by_digest(&TokenDigest("d1".into())).expect("created");
        assert_eq!((found.id.clone(), found.role), (TokenId::from("t1"), TokenRole::ReadOnly));
        assert!(!format!("{found:?}").contains("d1"), "digests are redacted in Debug");
        let revoke = Command::RevokeToken { token: TokenId::from("t1") };
        assert_eq!(state.apply(&revoke), Response::Done);
        assert_eq!(rejected(state.apply(&revoke)), "unknown-token");
        assert!(state.token_by_digest(&TokenDigest("d1".into())).is_none());
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut state = MetadataState::default();
        state.apply(&tenant("acme"));
        state.apply(&submit("j1", "acme"));
        state.apply(&commit("j1", 1, 1));
        let bytes = serde_json::to_vec(&state).expect("serializable");
        let back: MetadataState = serde_json::from_slice(&bytes).expect("deserializable");
        assert_eq!(back, state);
    }

    #[test]
    fn a_running_job_is_suspended_resumed_and_its_suspension_ends_with_a_new_checkpoint() {
        use crate::metadata::records::{ScalingEvent, ScalingKind, Suspension};
        let mut state = MetadataState::default();
        state.apply(&tenant("acme"));
        state.apply(&submit("job-1", "acme"));
        let job = JobId("job-1".into());
        let suspension = Suspension { savepoint: "file:///sp".into(), idle_since: UnixMillis(10), at: UnixMillis(20) };
        let suspend = Command::SuspendJob { job: job.clone(), suspension: suspension.clone() };
        assert_eq!(rejected(state.apply(&suspend)), "illegal-transition", "only a running job is suspended");
        state.apply(&set_status("job-1", JobStatus::Running));
        state.apply(&commit("job-1", 1, 3));
        assert_eq!(state.apply(&suspend), Response::Done);
        let record = state.job(&job).unwrap();
        assert_eq!((record.status, record.suspension.as_ref()), (JobStatus::Suspended, Some(&suspension)));
        assert!(!record.status.holds_slots());
        // A checkpoint of the stopped run, reported late, keeps the suspension.
        state.apply(&commit("job-1", 2, 3));
        assert!(state.job(&job).unwrap().suspension.is_some());
        assert_eq!(rejected(state.apply(&set_status("job-1", JobStatus::Running))), "illegal-transition");

        let event = ScalingEvent { at: UnixMillis(30), kind: ScalingKind::Resume, from: 0, to: 2, reasons: vec![] };
        for _ in 0..MAX_SCALING_EVENTS + 5 {
            state.apply(&Command::RecordScaling { job: job.clone(), event: event.clone() });
        }
        assert_eq!(state.job(&job).unwrap().scalings.len(), MAX_SCALING_EVENTS, "the newest are kept");
        assert_eq!(state.apply(&Command::ResumeJob { job: job.clone(), at: UnixMillis(30) }), Response::Done);
        assert_eq!(state.job(&job).unwrap().status, JobStatus::Restarting);
        let again = Command::ResumeJob { job: job.clone(), at: UnixMillis(31) };
        assert_eq!(rejected(state.apply(&again)), "illegal-transition", "only a suspended job resumes");
        state.apply(&set_status("job-1", JobStatus::Running));
        assert!(state.job(&job).unwrap().suspension.is_some(), "until the resumed run checkpoints");
        state.apply(&commit("job-1", 3, 3));
        assert_eq!(state.job(&job).unwrap().suspension, None);
    }
}
