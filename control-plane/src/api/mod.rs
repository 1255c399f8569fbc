//! The control plane's HTTP API under `/api/v1`: JSON in and out, errors as
//! `application/problem+json` with a stable `code`, bearer tokens per tenant.
//!
//! Every replica serves it. Reads answer from this replica's applied metadata
//! ([`ReplicaHandle::reader`]), so they keep working (possibly a little behind the leader) when
//! the cluster has lost its quorum; writes are proposed through [`ReplicaHandle::propose`] and
//! answer 503 `no-quorum` when nothing can be committed. Live job information and job actions go
//! through a [`JobRuntime`]: the dispatcher's where this replica runs jobs
//! (`crate::dispatcher::DispatcherRuntime`), else [`MetadataOnlyRuntime`], which records the
//! desired change in the metadata and reports no live metrics.
//!
//! - [`routes`]: the route table, one place that both the router and the OpenAPI test read.
//! - `auth`: bearer tokens → a caller (the operator's root token, or a tenant's token and role).
//! - `problem`: the error body and how every failure maps to a status and code.
//! - `jobs`, `cluster`, `tenants`: the handlers.
//! - `rate_limit`: how fast each tenant may submit (per replica); the quotas of running jobs and
//!   task slots are the replicated metadata's (`crate::metadata::records::Quota`).
//! - [`runtime`]: the [`JobRuntime`] trait and its metadata-only implementation.
//! - `metrics`: the Prometheus exposition and the request counters.
//! - `openapi`: the OpenAPI 3.1 document, written by hand.

mod auth;
mod body;
mod cluster;
pub mod ids;
mod jobs;
mod metrics;
mod openapi;
mod problem;
mod rate_limit;
pub mod runtime;
mod sandbox;
mod tenants;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Method;
use axum::routing::{MethodRouter, delete, get, post, put};

pub use auth::{RootToken, RootTokenError, digest_secret};
pub use body::{RequestBody, check_request_body};
pub use problem::{ApiError, PROBLEM_CONTENT_TYPE};
pub use runtime::{JobRuntime, MetadataOnlyRuntime};
pub use sandbox::Sandbox;

use crate::handle::{ProposeError, ReplicaHandle};
use crate::metadata::Command;
use crate::metadata::ids::TenantId;
use crate::metadata::records::Quota;

/// The prefix of every route.
pub const API_PREFIX: &str = "/api/v1";

/// Request bodies larger than this are refused (413) before they are read whole: a job's SQL is
/// a few kilobytes, and an unbounded body is an easy way to exhaust a replica's memory.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The largest parallelism a user may ask for. A mistyped `100000` should be a 400, not a job
/// master trying to schedule that many subtasks.
pub const MAX_PARALLELISM: u32 = 1024;

/// What the handlers share: the replica, the job runtime, and the operator's root token.
#[derive(Clone)]
pub struct ApiState {
    /// This replica: metadata reads, proposals, cluster view.
    pub replica: Arc<dyn ReplicaHandle>,
    /// Live job information and job actions.
    pub runtime: Arc<dyn JobRuntime>,
    /// The operator's token, which alone may create tenants and their tokens. `None`: this
    /// replica cannot bootstrap tenants (every other route works as usual). The replica process
    /// reads it from `--root-token-file` or `WEIR_ROOT_TOKEN`.
    pub root_token: Option<RootToken>,
    /// How long a write waits for its proposal before answering 503 (the write may still be
    /// committed later; the client retries with the same intent).
    pub propose_timeout: Duration,
    /// Where each tenant's jobs may read and write; a job naming anything else is refused.
    pub sandbox: Arc<Sandbox>,
    /// The operator's quota for tenants without their own (`--max-running-jobs`, `--max-slots`,
    /// `--submissions-per-minute`); the root token sets a tenant's own with
    /// `PUT /tenants/{tenant}/quota`.
    pub quota: Quota,
    submissions: Arc<rate_limit::SubmissionLimiter>,
    metrics: Arc<metrics::ApiMetrics>,
}

impl ApiState {
    /// A state with `runtime` for job information and actions, no root token, a 10 s proposal
    /// timeout, and a sandbox without roots (a job may name no storage of its own).
    pub fn new(replica: Arc<dyn ReplicaHandle>, runtime: Arc<dyn JobRuntime>) -> Self {
        Self {
            replica,
            runtime,
            root_token: None,
            propose_timeout: Duration::from_secs(10),
            sandbox: Arc::new(Sandbox::default()),
            quota: Quota::default(),
            submissions: Arc::new(rate_limit::SubmissionLimiter::default()),
            metrics: Arc::new(metrics::ApiMetrics::default()),
        }
    }

    /// A state whose job runtime is [`MetadataOnlyRuntime`] over the same replica: what a replica
    /// serves until job masters exist.
    pub fn metadata_only(replica: Arc<dyn ReplicaHandle>) -> Self {
        let runtime = Arc::new(MetadataOnlyRuntime::new(replica.clone()));
        Self::new(replica, runtime)
    }

    pub fn with_root_token(mut self, root_token: RootToken) -> Self {
        self.root_token = Some(root_token);
        self
    }

    pub fn with_propose_timeout(mut self, timeout: Duration) -> Self {
        self.propose_timeout = timeout;
        self
    }

    pub fn with_sandbox(mut self, sandbox: Sandbox) -> Self {
        self.sandbox = Arc::new(sandbox);
        self
    }
    /// The operator's default quota (instead of [`Quota::default`]).
    pub fn with_quota(mut self, quota: Quota) -> Self {
        self.quota = quota;
        self
    }

    /// The limits in force for `tenant`, as this replica has applied the metadata.
    pub(crate) fn quota_of(&self, tenant: &TenantId) -> Quota {
        self.replica.reader().read(|metadata| metadata.quota_of(tenant, self.quota))
    }
}

/// Runs a write (a proposal, or a job action that proposes) for at most the state's
/// `propose_timeout`; past it the answer is 503, as for a lost quorum.
pub(crate) async fn bounded_write<T, E>(
    state: &ApiState,
    write: impl Future<Output = Result<T, E>>,
) -> Result<T, ApiError>
where
    ApiError: From<E>,
{
    match tokio::time::timeout(state.propose_timeout, write).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(_) => Err(no_answer_within(state.propose_timeout)),
    }
}

fn no_answer_within(timeout: Duration) -> ApiError {
    ProposeError::NoQuorum(format!("no answer within {timeout:?}")).into()
}

/// Proposes `command` and turns a rejection into its API error.
pub(crate) async fn propose(state: &ApiState, command: Command) -> Result<(), ApiError> {
    bounded_write(state, state.replica.propose(command)).await?.into_result()?;
    Ok(())
}

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a token.
    Public,
    /// Any valid token: a tenant's (either role) or the root token.
    AnyToken,
    /// A tenant's token of either role; a job route answers only for the tenant's own jobs.
    TenantRead,
    /// A tenant's admin token.
    TenantWrite,
    /// The operator's root token.
    Root,
}

/// One route of the API.
pub struct Route {
    pub method: Method,
    /// The full path, with axum 0.8 `{param}` captures (which are also OpenAPI's templates).
    pub path: &'static str,
    pub access: Access,
    handler: fn() -> MethodRouter<ApiState>,
}

/// Every route of the API. The router is built from this table, so a route cannot exist without
/// appearing here; the OpenAPI document is written separately and tested against it.
pub fn routes() -> Vec<Route> {
    use Access::*;
    let route = |method, path, access, handler| Route { method, path, access, handler };
    vec![
        route(Method::POST, "/api/v1/jobs", TenantWrite, || post(jobs::submit)),
        route(Method::GET, "/api/v1/jobs", TenantRead, || get(jobs::list)),
        route(Method::GET, "/api/v1/jobs/{id}", TenantRead, || get(jobs::detail)),
        route(Method::POST, "/api/v1/jobs/{id}/cancel", TenantWrite, || post(jobs::cancel)),
        route(Method::POST, "/api/v1/jobs/{id}/stop", TenantWrite, || post(jobs::stop)),
        route(Method::POST, "/api/v1/jobs/{id}/savepoints", TenantWrite, || post(jobs::trigger_savepoint)),
        route(Method::GET, "/api/v1/jobs/{id}/savepoints", TenantRead, || get(jobs::savepoints)),
        route(Method::GET, "/api/v1/jobs/{id}/checkpoints", TenantRead, || get(jobs::checkpoints)),
        route(Method::POST, "/api/v1/jobs/{id}/rescale", TenantWrite, || post(jobs::rescale)),
        route(Method::GET, "/api/v1/jobs/{id}/exceptions", TenantRead, || get(jobs::exceptions)),
        route(Method::GET, "/api/v1/jobs/{id}/rescales", TenantRead, || get(jobs::rescales)),
        route(Method::GET, "/api/v1/workers", AnyToken, || get(cluster::workers)),
        route(Method::GET, "/api/v1/cluster", AnyToken, || get(cluster::cluster)),
        route(Method::POST, "/api/v1/tenants", Root, || post(tenants::create_tenant)),
        route(Method::POST, "/api/v1/tenants/{tenant}/tokens", Root, || post(tenants::create_token)),
        route(Method::DELETE, "/api/v1/tenants/{tenant}/tokens/{token}", Root, || delete(tenants::revoke_token)),
        route(Method::GET, "/api/v1/tenants/{tenant}/quota", Root, || get(tenants::quota)),
        route(Method::PUT, "/api/v1/tenants/{tenant}/quota", Root, || put(tenants::set_quota)),
        route(Method::GET, "/api/v1/healthz", Public, || get(cluster::healthz)),
        route(Method::GET, "/api/v1/metrics", Public, || get(metrics::exposition)),
        route(Method::GET, "/api/v1/openapi.json", Public, || get(openapi::document)),
    ]
}

/// The API as an axum router over `state`. Serve it with `axum::serve`.
pub fn router(state: ApiState) -> Router {
    let mut router = Router::new();
    for route in routes() {
        // axum merges method routers registered on the same path.
        router = router.route(route.path, (route.handler)());
    }
    router
        .fallback(problem::not_found)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::count_request))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
