//! Jobs of the caller's tenant: submit, list, detail, actions, checkpoints, savepoints and
//! exceptions.
//!
//! A job is its SQL script: the API plans it on submission (the planner is pure) to refuse a
//! script that would not run, and plans it again for the detail view's vertices — the graph is
//! derived from the SQL deterministically, so it is not stored. `desired_parallelism` is the one
//! truth for parallelism: it is pinned when planning, as `weir run --parallelism` does, so a
//! rescale shows at once. The stored `config` records the script's other `SET` options as they
//! resolved at submission, for listings and for services that want an option without planning;
//! planning again applies the script's `SET`s anyway.
//!
//! Reads answer from this replica's applied metadata without a linearizable read: they keep
//! working without a quorum, and a follower may be a moment behind the leader.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use weir_dataflow::config::{JobConfig, NamedLocation};
use weir_dataflow::graph::JobGraph;
use weir_dataflow::ids::{JobId, VertexId};
use weir_dataflow::plan::{OperatorSpec, SinkSpec, StreamPlan};
use weir_dataflow::secrets::Script;
use weir_dataflow::sql::plan_script;
use weir_dataflow::wire::ErrorCode;

use super::auth::{TenantCaller, TenantReader, TenantWriter};
use super::body::{ApiJson, ApiPath, JsonU32};
use super::ids::{fresh_id, now};
use super::problem::ApiError;
use super::runtime::VertexMetrics;
use super::{ApiState, MAX_PARALLELISM, bounded_write, propose};
use crate::metadata::Command;
use crate::metadata::records::{JobRecord, ScalingEvent};

/// The longest job name accepted; names are labels, not documents.
pub(super) const MAX_NAME_CHARS: usize = 200;

/// Where a parallelism is pinned when planning, so that the script's own `SET` cannot change it.
const PARALLELISM_KEY: &str = "parallelism.default";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubmitJob {
    name: String,
    sql: String,
    /// Default parallelism of the job's operators; absent or null: the script's `SET
    /// 'parallelism.default'`, or 1.
    #[serde(default)]
    parallelism: Option<JsonU32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Rescale {
    parallelism: JsonU32,
}

/// A name as listings show it (a job's, a tenant's display name): 1 to [`MAX_NAME_CHARS`]
/// characters, not all blank, and printable: no control characters (a terminal would act on ANSI
/// escapes and newlines in `weir job list`) and no bidirectional overrides or isolates (which make
/// text read other than it is). Answers the name without its surrounding blanks. The OpenAPI
/// document's `Name` pattern says the same, and a test holds them to it.
pub(super) fn check_name(name: &str) -> Result<&str, ApiError> {
    let refuse = |detail: String| Err(ApiError::new(ErrorCode::InvalidName, detail));
    if name.trim().is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return refuse(format!("a name has 1 to {MAX_NAME_CHARS} characters, not all blank"));
    }
    if let Some((at, c)) = name.chars().enumerate().find(|(_, c)| unprintable(*c)) {
        return refuse(format!(
            "a name is printable text; character {} is U+{:04X}, a control character or bidirectional override",
            at + 1,
            u32::from(c)
        ));
    }
    Ok(name.trim())
}

/// What a name may not hold anywhere: controls (C0, DEL, C1) and bidirectional overrides and
/// isolates.
pub(super) fn unprintable(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn check_parallelism(parallelism: u32) -> Result<u32, ApiError> {
    if (1..=MAX_PARALLELISM).contains(&parallelism) {
        Ok(parallelism)
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidParallelism,
            format!("parallelism must be between 1 and {MAX_PARALLELISM}, not {parallelism}"),
        ))
    }
}

/// What the API keeps of a planned script.
struct Planned {
    parallelism: u32,
    config: BTreeMap<String, String>,
    vertices: Vec<VertexView>,
    /// Every storage location the job names, for the tenant sandbox.
    locations: Vec<NamedLocation>,
}

/// One vertex of the job graph, with its live figures once known.
#[derive(Serialize)]
struct VertexView {
    id: VertexId,
    /// The chained operators, head first (`Source -> Calc`).
    name: String,
    parallelism: u32,
    #[serde(flatten)]
    metrics: VertexMetrics,
}

/// Plans `sql` with `parallelism` pinned (if given) off the async threads: planning a large
/// script takes milliseconds of CPU, and a planner panic must cost this request, not the replica.
async fn plan(sql: String, parallelism: Option<u32>) -> Result<Planned, ApiError> {
    let planned = tokio::task::spawn_blocking(move || plan_blocking(&sql, parallelism)).await;
    match planned {
        Ok(result) => result,
        Err(error) => {
            tracing::error!(%error, "the SQL planner failed");
            Err(ApiError::new(ErrorCode::PlannerFailed, "the SQL planner failed on this script; please report it"))
        }
    }
}

fn plan_blocking(sql: &str, parallelism: Option<u32>) -> Result<Planned, ApiError> {
    let mut config = JobConfig::default();
    if let Some(parallelism) = parallelism {
        config
            .set(PARALLELISM_KEY, &parallelism.to_string())
            .map_err(|error| ApiError::new(ErrorCode::InvalidParallelism, error.to_string()))?;
        config.pin(PARALLELISM_KEY);
    }
    let planned = plan_script(sql, config).map_err(|error| {
        ApiError::new(ErrorCode::InvalidSql, format!("{error}")).with("line", error.line).with("column", error.column)
    })?;
    let Some(plan) = planned.plan.filter(|plan| !has_collect_sink(plan)) else {
        return Err(ApiError::new(
            ErrorCode::NoSink,
            "a job writes its results to tables: end the script with INSERT INTO a sink table, not a bare SELECT",
        ));
    };
    let parallelism = check_parallelism(planned.config.parallelism)?;
    let mut locations = plan.table_locations();
    locations.extend(planned.config.locations());
    let mut options = planned.config.values;
    options.remove(PARALLELISM_KEY);
    Ok(Planned { parallelism, config: options, vertices: vertices(&plan), locations })
}

/// A bare `SELECT` becomes a collect sink, which hands rows to a terminal: a managed job has none.
fn has_collect_sink(plan: &StreamPlan) -> bool {
    plan.nodes.iter().any(|node| matches!(node.op, OperatorSpec::Sink(SinkSpec::Collect)))
}

fn vertices(plan: &StreamPlan) -> Vec<VertexView> {
    let graph = JobGraph::from_plan(plan);
    graph
        .vertices
        .iter()
        .map(|vertex| VertexView {
            id: vertex.id,
            name: vertex.chain.iter().map(|node| plan.nodes[*node].name()).collect::<Vec<_>>().join(" -> "),
            parallelism: vertex.parallelism,
            metrics: VertexMetrics::default(),
        })
        .collect()
}

/// The caller's job `id`, or 404 — the same 404 whether it does not exist or is another tenant's.
fn owned_job(state: &ApiState, caller: &TenantCaller, id: &str) -> Result<JobRecord, ApiError> {
    let job = JobId(id.to_owned());
    state
        .replica
        .reader()
        .read(|metadata| metadata.job(&job).filter(|record| record.tenant == caller.tenant).cloned())
        .ok_or_else(|| ApiError::unknown_job(id))
}

/// The checks of a submission that come before planning: answers the name without its blanks
/// and the parallelism asked for.
fn check_submission(request: &SubmitJob) -> Result<(&str, Option<u32>), ApiError> {
    let name = check_name(&request.name)?;
    if request.sql.trim().is_empty() {
        return Err(ApiError::new(ErrorCode::InvalidSql, "the script is empty"));
    }
    let requested = request.parallelism.map(|JsonU32(parallelism)| check_parallelism(parallelism)).transpose()?;
    Ok((name, requested))
}

/// Every check of a submission before it is proposed, planning on the caller's thread.
pub(super) fn check_submission_blocking(request: &SubmitJob) -> Result<(), ApiError> {
    let (_, requested) = check_submission(request)?;
    plan_blocking(&request.sql, requested).map(|_| ())
}

/// The checks of a rescale before the job is looked up.
pub(super) fn check_rescale(request: &Rescale) -> Result<(), ApiError> {
    check_parallelism(request.parallelism.0).map(|_| ())
}

pub(crate) async fn submit(
    State(state): State<ApiState>,
    TenantWriter(caller): TenantWriter,
    ApiJson(request): ApiJson<SubmitJob>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    admit_submission(&state, &caller)?;
    let (name, requested) = check_submission(&request)?;
    let planned = plan(request.sql.clone(), requested).await?;
    state.sandbox.check(&caller.tenant, &planned.locations)?;
    let job = JobId(fresh_id("job")?);
    let command = Command::SubmitJob {
        job: job.clone(),
        tenant: caller.tenant.clone(),
        name: name.to_owned(),
        sql: Script::new(request.sql),
        config: planned.config.into(),
        parallelism: planned.parallelism,
        at: now(),
        quota: Some(state.quota),
    };
    propose(&state, command).await?;
    tracing::info!(job_id = %job, tenant = %caller.tenant, token = %caller.token, "job submitted");
    Ok((StatusCode::CREATED, Json(json!({ "id": job }))))
}

/// Takes one of the tenant's submissions on this replica, or answers 429 with when to retry.
fn admit_submission(state: &ApiState, caller: &TenantCaller) -> Result<(), ApiError> {
    let quota = state.quota_of(&caller.tenant);
    state.submissions.admit(&caller.tenant, quota, Instant::now()).map_err(|wait| {
        // Whole seconds, rounded up: retrying at the announced time must succeed.
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        ApiError::new(
            ErrorCode::RateLimited,
            format!(
                "tenant {} may submit {} jobs a minute (up to {} at once); retry in {seconds} s",
                caller.tenant,
                quota.submissions_per_minute,
                quota.submission_burst()
            ),
        )
        .retry_after(seconds)
    })
}

pub(crate) async fn list(State(state): State<ApiState>, TenantReader(caller): TenantReader) -> Json<Value> {
    let jobs: Vec<Value> = state.replica.reader().read(|metadata| {
        metadata
            .jobs_of(&caller.tenant)
            .map(|job| {
                json!({
                    "id": job.id,
                    "name": job.name,
                    "status": job.status,
                    "parallelism": job.desired_parallelism,
                    "submitted_at": job.submitted_at,
                })
            })
            .collect()
    });
    Json(json!({ "jobs": jobs }))
}

pub(crate) async fn detail(
    State(state): State<ApiState>,
    TenantReader(caller): TenantReader,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let job = owned_job(&state, &caller, &id)?;
    // The script planned when it was submitted; if a newer planner refuses it, the job's record
    // is still worth showing, with the reason instead of the graph.
    let (vertices, graph_error) = match plan(job.sql.as_str().to_owned(), Some(job.desired_parallelism)).await {
        Ok(planned) => (Some(planned.vertices), None),
        Err(error) => {
            tracing::warn!(job_id = %job.id, detail = %error.detail(), "a stored job no longer plans");
            (None, Some(error.detail().to_string()))
        }
    };
    let vertices = match vertices {
        Some(mut vertices) => {
            let mut live = state.runtime.vertex_metrics(job.id.clone()).await;
            for vertex in &mut vertices {
                vertex.metrics = live.remove(&vertex.id).unwrap_or_default();
            }
            Some(vertices)
        }
        None => None,
    };
    Ok(Json(json!({
        "id": job.id,
        "name": job.name,
        "status": job.status,
        "parallelism": job.desired_parallelism,
        // Shown with secret option values hidden; the job runs with the real ones.
        "sql": job.sql.redacted(),
        "config": job.config.redacted(),
        "submitted_at": job.submitted_at,
        "status_changed_at": job.status_changed_at,
        "vertices": vertices,
        "graph_error": graph_error,
        "last_checkpoint": job.latest_checkpoint(),
        "pending_savepoints": job.savepoint_requests,
        "deployment": job.deployment,
    })))
}

pub(crate) async fn cancel(
    State(state): State<ApiState>,
    TenantWriter(caller): TenantWriter,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let job = owned_job(&state, &caller, &id)?;
    let status = bounded_write(&state, state.runtime.cancel(job.id.clone())).await?;
    tracing::info!(job_id = %job.id, token = %caller.token, %status, "job cancel requested");
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": job.id, "status": status }))))
}

pub(crate) async fn stop(
    State(state): State<ApiState>,
    TenantWriter(caller): TenantWriter,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    request_savepoint(&state, &caller, &id, true).await
}

pub(crate) async fn trigger_savepoint(
    State(state): State<ApiState>,
    TenantWriter(caller): TenantWriter,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    request_savepoint(&state, &caller, &id, false).await
}

/// A savepoint of the caller's job `id`, stopping the job after it when `stop`.
async fn request_savepoint(
    state: &ApiState,
    caller: &TenantCaller,
    id: &str,
    stop: bool,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let job = owned_job(state, caller, id)?;
    let runtime = &state.runtime;
    let savepoint = if stop {
        bounded_write(state, runtime.stop_with_savepoint(job.id.clone())).await?
    } else {
        bounded_write(state, runtime.trigger_savepoint(job.id.clone())).await?
    };
    tracing::info!(job_id = %job.id, token = %caller.token, %savepoint, stop, "savepoint requested");
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": job.id, "savepoint": savepoint }))))
}

pub(crate) async fn rescale(
    State(state): State<ApiState>,
    TenantWriter(caller): TenantWriter,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<Rescale>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let parallelism = check_parallelism(request.parallelism.0)?;
    let job = owned_job(&state, &caller, &id)?;
    bounded_write(&state, state.runtime.rescale(job.id.clone(), parallelism, state.quota)).await?;
    tracing::info!(job_id = %job.id, token = %caller.token, parallelism, "rescale requested");
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": job.id, "parallelism": parallelism }))))
}

pub(crate) async fn checkpoints(
    State(state): State<ApiState>,
    TenantReader(caller): TenantReader,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let job = owned_job(&state, &caller, &id)?;
    // Newest first, as Flink's checkpoint history lists them.
    let checkpoints: Vec<_> = job.checkpoints.iter().rev().collect();
    Ok(Json(json!({ "id": job.id, "checkpoints": checkpoints })))
}

pub(crate) async fn savepoints(
    State(state): State<ApiState>,
    TenantReader(caller): TenantReader,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let job = owned_job(&state, &caller, &id)?;
    let taken: Vec<Value> =
        state.replica.reader().read(|metadata| metadata.savepoints_of(&job.id).map(|sp| json!(sp)).collect());
    Ok(Json(json!({ "id": job.id, "savepoints": taken, "pending": job.savepoint_requests })))
}

/// The autoscaler's decisions for the job, newest first, each with its reasons.
pub(crate) async fn rescales(
    State(state): State<ApiState>,
    TenantReader(caller): TenantReader,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let job = owned_job(&state, &caller, &id)?;
    let rescales: Vec<&ScalingEvent> = job.scalings.iter().rev().collect();
    Ok(Json(json!({ "id": job.id, "rescales": rescales })))
}

pub(crate) async fn exceptions(
    State(state): State<ApiState>,
    TenantReader(caller): TenantReader,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let job = owned_job(&state, &caller, &id)?;
    let exceptions = state.runtime.exceptions(job.id.clone()).await;
    Ok(Json(json!({ "id": job.id, "exceptions": exceptions })))
}
