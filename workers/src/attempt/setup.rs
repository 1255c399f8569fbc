//! How any run of a job in this process is set up, whether `weir run` starts it or a worker's
//! attempt: the configuration a script is planned with, the job graph, where checkpoints and
//! savepoints go, and which checkpoint the run starts from.

use weir_dataflow::clock::unix_nanos;
use weir_dataflow::config::{CheckpointConfig, JobConfig};
use weir_dataflow::graph::JobGraph;
use weir_dataflow::ids::{AttemptNumber, JobId};
use weir_dataflow::plan::StreamPlan;
use weir_dataflow::wire::{ErrorCode, Failure};
use weir_state_store::{CheckpointStore, StateError, StateLocation};

use crate::checkpoint::CheckpointSetup;

/// The configuration a script is planned with before its own `SET`s: `parallelism` pinned, so
/// the script cannot change it (`weir run --parallelism`, a managed job's parallelism).
pub fn base_config(parallelism: Option<u32>) -> Result<JobConfig, Failure> {
    let mut config = JobConfig::default();
    if let Some(p) = parallelism {
        config
            .set("parallelism.default", &p.to_string())
            .map_err(|e| Failure::new(ErrorCode::InvalidParallelism, format!("parallelism: {e}")))?;
        config.pin("parallelism.default");
    }
    Ok(config)
}

/// The job graph a plan runs as: a batch job's exchanges take `execution.batch-shuffle-mode`.
pub fn job_graph(plan: &StreamPlan, config: &JobConfig) -> JobGraph {
    let graph = JobGraph::from_plan(plan);
    if plan.batch { graph.with_exchange_mode(config.batch_shuffle_mode()) } else { graph }
}

/// What a run was told to start from, and what it found.
#[derive(Clone, Debug, PartialEq)]
pub enum Restored {
    /// From the beginning: nothing to restore.
    Nothing,
    /// From the savepoint at `path` (`execution.savepoint.path`).
    Savepoint { path: String, checkpoint: weir_dataflow::ids::CheckpointId },
    /// From the job's latest completed checkpoint in `dir`.
    Checkpoint { dir: String, checkpoint: weir_dataflow::ids::CheckpointId },
    /// Asked to resume, but the job has no completed checkpoint in `dir`.
    NoCheckpoint { dir: String },
}

impl Restored {
    /// A line for people: where job `job` starts from.
    pub fn describe(&self, job: &JobId) -> String {
        match self {
            Restored::Nothing => format!("starting job '{job}'"),
            Restored::Savepoint { path, checkpoint } => {
                format!("restoring job '{job}' from savepoint {path} (checkpoint {checkpoint})")
            }
            Restored::Checkpoint { dir, checkpoint } => {
                format!("resuming job '{job}' from checkpoint {checkpoint} in {dir}")
            }
            Restored::NoCheckpoint { dir } => {
                format!("job '{job}' has no completed checkpoint in {dir}: starting from the beginning")
            }
        }
    }
}

/// A run's checkpointing, and where it starts from.
pub struct Checkpointing {
    pub setup: CheckpointSetup,
    pub restored: Restored,
    /// Checkpoints that could not be read and were passed over (a corrupt or missing file).
    pub skipped: Vec<String>,
}

/// The job's checkpointing, if it has any: where checkpoints go and which one it starts from
/// (`execution.savepoint.path`, else with `resume` the latest under the job's folder `job`).
pub async fn checkpointing(
    plan: &StreamPlan,
    config: &JobConfig,
    job: &JobId,
    resume: bool,
) -> Result<Option<Checkpointing>, Failure> {
    let invalid = |message: &str| Err(Failure::new(ErrorCode::InvalidOption, message));
    match config.checkpointing() {
        // As in Flink: a batch job recovers by re-running stages, not from checkpoints.
        Some(_) if plan.batch => {
            if resume {
                return invalid("--resume needs a streaming job; this one runs in batch mode (execution.runtime-mode)");
            }
            tracing::warn!("checkpointing is not used in batch mode (execution.runtime-mode)");
            Ok(None)
        }
        Some(checkpoints) => Ok(Some(checkpoint_setup(checkpoints, config, job, resume).await?)),
        None if resume => invalid("--resume needs checkpoints: set 'execution.checkpointing.interval'"),
        None if config.savepoint_path().is_some() => invalid(
            "execution.savepoint.path needs checkpoints to restore into: set 'execution.checkpointing.interval'",
        ),
        None => Ok(None),
    }
}

/// Where this run's checkpoints go (the folder `job` under `state.checkpoints.dir`) and which
/// one it starts from.
pub async fn checkpoint_setup(
    config: CheckpointConfig,
    job_config: &JobConfig,
    job: &JobId,
    resume: bool,
) -> Result<Checkpointing, Failure> {
    let location = parse_location("state.checkpoints.dir", &config.dir)?;
    let mut skipped = Vec::new();
    let (restore, restored) = if let Some(path) = job_config.savepoint_path() {
        let target = parse_location("execution.savepoint.path", path)?;
        let cannot =
            |e: &StateError| state_failure(e, format!("cannot restore from execution.savepoint.path '{path}': {e}"));
        let savepoint = weir_state_store::savepoint::read(&target).await.map_err(|e| cannot(&e))?;
        weir_state_store::savepoint::check_visible(&location, &target).map_err(|e| cannot(&e))?;
        let restored = Restored::Savepoint { path: path.to_string(), checkpoint: savepoint.id };
        (Some(savepoint), restored)
    } else if resume {
        let store = CheckpointStore::new(location.clone(), job.clone(), config.num_retained);
        let latest =
            store.latest_completed().await.map_err(|e| state_failure(&e, format!("cannot resume job '{job}': {e}")))?;
        skipped = latest.warnings.iter().map(|w| format!("{}: {}", w.path, w.reason)).collect();
        match latest.checkpoint {
            Some(checkpoint) => {
                let restored = Restored::Checkpoint { dir: config.dir.clone(), checkpoint: checkpoint.id };
                (Some(checkpoint), restored)
            }
            None => (None, Restored::NoCheckpoint { dir: config.dir.clone() }),
        }
    } else {
        (None, Restored::Nothing)
    };
    // Every run is a new attempt with databases of its own; the clock tells attempts apart.
    let attempt = AttemptNumber((unix_nanos() / 1_000_000) as u32);
    let setup = CheckpointSetup { config, location, job: job.clone(), attempt, restore };
    Ok(Checkpointing { setup, restored, skipped })
}

/// A script that starts from a savepoint (`SET 'execution.savepoint.path'`) does so once: once
/// the job has checkpoints of its own, a restart resumes from them, so the path is dropped.
pub async fn start_from_savepoint_once(config: &mut JobConfig, job: &JobId) -> Result<(), Failure> {
    if config.savepoint_path().is_some() && has_checkpoints(config, job).await? {
        config.values.remove("execution.savepoint.path");
    }
    Ok(())
}

/// Whether the job already committed a checkpoint under its `state.checkpoints.dir`.
pub async fn has_checkpoints(config: &JobConfig, job: &JobId) -> Result<bool, Failure> {
    let Some(checkpoints) = config.checkpointing() else { return Ok(false) };
    let location = parse_location("state.checkpoints.dir", &checkpoints.dir)?;
    let store = CheckpointStore::new(location, job.clone(), checkpoints.num_retained);
    let ids =
        store.list_ids().await.map_err(|e| state_failure(&e, format!("cannot list the job's checkpoints: {e}")))?;
    Ok(!ids.is_empty())
}

/// Where savepoints go: `state.savepoints.dir`, or `savepoints` beside the job's checkpoints.
pub fn savepoints_dir(job: &JobConfig, checkpoints: &CheckpointConfig) -> String {
    match job.get("state.savepoints.dir").map(str::trim).filter(|d| !d.is_empty()) {
        Some(dir) => dir.to_string(),
        None => format!("{}/savepoints", checkpoints.dir.trim_end_matches('/')),
    }
}

/// A fresh savepoint's path under `dir` (named by the time it was asked for) and its location.
pub fn savepoint_target(dir: &str) -> Result<(String, StateLocation), Failure> {
    let path = format!("{}/savepoint-{}", dir.trim_end_matches('/'), unix_nanos() / 1_000_000);
    let target = parse_location("state.savepoints.dir", &path)?;
    Ok((path, target))
}

fn parse_location(option: &str, value: &str) -> Result<StateLocation, Failure> {
    StateLocation::parse(value).map_err(|e| Failure::new(ErrorCode::InvalidOption, format!("{option}: {e}")))
}

/// A state-store error as a failure: unreachable storage may come back, anything else will not.
pub(crate) fn state_failure(error: &StateError, message: String) -> Failure {
    match error {
        StateError::Db { .. } | StateError::ObjectStore { .. } => Failure::new(ErrorCode::StateUnavailable, message),
        StateError::Fenced { .. } => Failure::new(ErrorCode::StateFenced, message),
        StateError::InvalidLocation { .. } => Failure::new(ErrorCode::InvalidOption, message),
        _ => Failure::new(ErrorCode::StateCorrupt, message),
    }
}
