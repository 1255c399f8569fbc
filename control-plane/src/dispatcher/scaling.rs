//! The autoscaler's shell on the leader (DESIGN §8): every [`SAMPLE_EVERY`] it samples the
//! live figures of each running job that asks for autoscaling (`job.autoscaler.enabled`, or a
//! `job.autoscaler.scale-to-zero.idle-timeout`), asks the job's [`Autoscaler`] (pure) what to
//! do, records the decision with its reasons in the job's history (`RecordScaling`, listed by
//! `GET /jobs/{id}/rescales`) and carries it out:
//! - a rescale sets the job's desired parallelism, which the job controller converges to;
//! - a suspension asks the job controller to stop the run with a savepoint; the job is then
//!   SUSPENDED and holds no slots (the provisioner lets its workers go);
//! - a suspended job's sources are probed every [`PROBE_EVERY`] for input that came since they
//!   went idle ([`backlog::arrived_since`]); when some has, the job is resumed from its
//!   savepoint (`ResumeJob`).
//!
//! Parallelism is one per job for now (a slot holds one subtask of every vertex): a rescale
//! takes the highest parallelism the autoscaler wants of any vertex.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use weir_dataflow::autoscale::AutoscalerOptions;
use weir_dataflow::config::JobConfig;
use weir_dataflow::graph::JobGraph;
use weir_dataflow::ids::JobId;
use weir_dataflow::plan::{OperatorSpec, Partitioning, SourceSpec};
use weir_dataflow::sql::plan_script;

use crate::api::ids::now;
use crate::autoscaler::{Autoscaler, Decision, Sample, VertexCounters, VertexShape};
use crate::backlog;
use crate::metadata::Command;
use crate::metadata::records::{JobRecord, JobStatus, ScalingEvent, ScalingKind};

/// How often running jobs' figures are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// How often a suspended job's sources are probed for new input.
pub const PROBE_EVERY: Duration = Duration::from_secs(2);

/// The leader's autoscalers, one per job that asks for one.
#[derive(Default)]
pub(super) struct Scaling {
    jobs: BTreeMap<JobId, JobScaler>,
    /// Suspended jobs' source tables, planned once each.
    sources: BTreeMap<JobId, Vec<SourceSpec>>,
    last_sample: Option<Instant>,
    last_probe: Option<Instant>,
}

/// A job's autoscaler, for one run of it.
struct JobScaler {
    run: u64,
    parallelism: u32,
    autoscaler: Autoscaler,
    shape: Vec<VertexShape>,
}

/// What the shell decided for a job this round.
pub(super) enum Step {
    Rescale { to: u32, reasons: Vec<String> },
    Suspend { idle_since: i64, reason: String },
}

/// A job as the shell sees it: its record, and its run here (number, parallelism, figures).
pub(super) struct Running<'a> {
    pub job: &'a JobRecord,
    pub run: u64,
    pub parallelism: u32,
    pub metrics: BTreeMap<weir_dataflow::ids::VertexId, weir_dataflow::wire::VertexMetrics>,
}

impl Scaling {
    /// Whether a sample is due now; if so, the next is due a [`SAMPLE_EVERY`] on.
    pub(super) fn sample_due(&mut self) -> bool {
        due(&mut self.last_sample, SAMPLE_EVERY)
    }

    /// Whether a probe of suspended jobs is due now.
    pub(super) fn probe_due(&mut self) -> bool {
        due(&mut self.last_probe, PROBE_EVERY)
    }

    /// Forgets the jobs not in `keep` (ended, or no longer running here).
    pub(super) fn retain(&mut self, keep: impl Fn(&JobId) -> bool) {
        self.jobs.retain(|job, _| keep(job));
    }

    /// Whether input has come to a suspended job since its sources went idle; answers why.
    pub(super) async fn input_arrived(&mut self, job: &JobRecord) -> Option<String> {
        let suspension = job.suspension.as_ref().filter(|_| job.status == JobStatus::Suspended)?;
        let sources = match self.sources.get(&job.id) {
            Some(sources) => sources.clone(),
            None => {
                let sources = sources_of(job).await.unwrap_or_else(|error| {
                    tracing::warn!(job_id = %job.id, %error, "a suspended job's sources cannot be probed");
                    Vec::new()
                });
                self.sources.insert(job.id.clone(), sources.clone());
                sources
            }
        };
        let since = suspension.idle_since;
        let probed = tokio::task::spawn_blocking(move || backlog::arrived_since(&sources, since)).await;
        match probed {
            Ok(Ok(found)) => found,
            Ok(Err(error)) => {
                tracing::debug!(job_id = %job.id, %error, "probing a suspended job's sources");
                None
            }
            Err(_) => None,
        }
    }

    /// Forgets the sources of jobs no longer suspended.
    pub(super) fn retain_suspended(&mut self, suspended: impl Fn(&JobId) -> bool) {
        self.sources.retain(|job, _| suspended(job));
    }

    /// Takes a sample of `running` and decides; `now_ms` is the wall clock.
    pub(super) async fn step(&mut self, running: Running<'_>, now_ms: i64) -> Option<Step> {
        let Running { job, run, parallelism, metrics } = running;
        let options = options_of(job);
        if !options.enabled && options.scale_to_zero_idle_timeout.is_none() {
            self.jobs.remove(&job.id);
            return None;
        }
        let fresh = self.jobs.get(&job.id).is_none_or(|s| s.run != run || s.parallelism != parallelism);
        if fresh {
            let shape = match shape_of(job, parallelism).await {
                Ok(shape) => shape,
                Err(error) => {
                    // Said once a run: with no shape, nothing is ever decided for it.
                    tracing::warn!(job_id = %job.id, %error, "no autoscaling: the job's graph is not known");
                    Vec::new()
                }
            };
            let autoscaler = Autoscaler::new(options, now_ms);
            self.jobs.insert(job.id.clone(), JobScaler { run, parallelism, autoscaler, shape });
        }
        let scaler = self.jobs.get_mut(&job.id)?;
        if metrics.is_empty() {
            return None;
        }
        let vertices = metrics
            .iter()
            .map(|(vertex, m)| {
                let counters = VertexCounters {
                    records_in: m.records_in.unwrap_or(0),
                    records_out: m.records_out.unwrap_or(0),
                    busy_ms: m.busy_ms.unwrap_or(0),
                    backlog: m.backlog,
                };
                (*vertex, counters)
            })
            .collect();
        scaler.autoscaler.observe(Sample { at_ms: now_ms, vertices });
        match scaler.autoscaler.decide(now_ms, &scaler.shape) {
            Decision::Keep => None,
            Decision::Rescale { parallelism: wanted, reasons } => {
                // One parallelism per job: the most any vertex needs, the others keeping theirs
                // (so it goes down only when no vertex needs what it has).
                let to = scaler.shape.iter().map(|v| wanted.get(&v.id).copied().unwrap_or(v.parallelism)).max()?;
                if to == parallelism {
                    return None;
                }
                scaler.autoscaler.rescaled(now_ms);
                Some(Step::Rescale { to, reasons })
            }
            Decision::Suspend { reason, idle_since_ms } => {
                scaler.autoscaler.rescaled(now_ms);
                Some(Step::Suspend { idle_since: idle_since_ms, reason })
            }
        }
    }
}

/// Whether `every` has passed since `last` (then `last` is now).
fn due(last: &mut Option<Instant>, every: Duration) -> bool {
    if last.is_some_and(|at| at.elapsed() < every) {
        return false;
    }
    *last = Some(Instant::now());
    true
}

/// The job's `job.autoscaler.*` options.
fn options_of(job: &JobRecord) -> AutoscalerOptions {
    AutoscalerOptions::of(&job.job_config())
}

/// The job's plan at `parallelism`, off the async threads.
async fn plan_of(job: &JobRecord, parallelism: u32) -> Result<weir_dataflow::plan::StreamPlan, String> {
    let sql = job.sql.as_str().to_owned();
    let planned = tokio::task::spawn_blocking(move || {
        let mut config = JobConfig::default();
        config.set("parallelism.default", &parallelism.to_string()).map_err(|e| e.to_string())?;
        config.pin("parallelism.default");
        plan_script(&sql, config).map_err(|e| e.to_string())
    })
    .await
    .map_err(|_| "the SQL planner failed".to_string())??;
    planned.plan.ok_or_else(|| "the script has no INSERT INTO".to_string())
}

/// The job's vertices as the autoscaler sees them.
async fn shape_of(job: &JobRecord, parallelism: u32) -> Result<Vec<VertexShape>, String> {
    let plan = plan_of(job, parallelism).await?;
    let graph = JobGraph::from_plan(&plan);
    let shape = graph
        .vertices
        .iter()
        .map(|vertex| VertexShape {
            id: vertex.id,
            inputs: vertex.inputs.iter().map(|e| graph.edges[*e].source).collect(),
            parallelism: vertex.parallelism,
            max_parallelism: graph.max_parallelism,
            keyed: vertex.inputs.iter().any(|e| matches!(graph.edges[*e].partitioning, Partitioning::Hash(_))),
        })
        .collect();
    Ok(shape)
}

/// The job's source tables.
async fn sources_of(job: &JobRecord) -> Result<Vec<SourceSpec>, String> {
    let plan = plan_of(job, job.desired_parallelism.max(1)).await?;
    Ok(plan
        .nodes
        .iter()
        .filter_map(|node| match &node.op {
            OperatorSpec::Source(spec) => Some(spec.clone()),
            _ => None,
        })
        .collect())
}

/// The history entry of a decision.
pub(super) fn record(job: &JobId, kind: ScalingKind, from: u32, to: u32, reasons: Vec<String>) -> Command {
    Command::RecordScaling { job: job.clone(), event: ScalingEvent { at: now(), kind, from, to, reasons } }
}
