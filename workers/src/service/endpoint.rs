//! The task endpoint: what the control plane's leader asks of this worker (deploy, cancel,
//! savepoint), each request authenticated with the cluster's worker key, each error a problem+json
//! with a code from the one table (`weir_dataflow::wire::ErrorCode`).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use weir_dataflow::wire::{
    AttemptRef, Deploy, ErrorCode, Failure, PROBLEM_CONTENT_TYPE, Problem, RunEnd, SavepointAsk,
};

use super::{Attempt, LEASE, Worker, parts};
use crate::attempt::{self, AttemptEvent, AttemptRequest};
use crate::connectors::sinks::PrintTo;
use crate::runtime::ManagedMemory;

/// An error answered as problem+json.
pub(crate) struct EndpointError(Box<Problem>);

impl EndpointError {
    pub(crate) fn new(code: ErrorCode, detail: impl Into<String>) -> EndpointError {
        EndpointError(Box::new(Problem::new(code, detail)))
    }
}

impl From<Failure> for EndpointError {
    fn from(failure: Failure) -> EndpointError {
        EndpointError(Box::new(failure.into()))
    }
}

impl IntoResponse for EndpointError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let challenge = status == StatusCode::UNAUTHORIZED;
        let mut response = (status, Json(self.0)).into_response();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_CONTENT_TYPE));
        if challenge {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"weir\""));
        }
        response
    }
}

/// Checks the bearer token and reads a JSON body.
pub(crate) fn request<T: DeserializeOwned>(
    worker: &Worker,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, EndpointError> {
    let authorization = headers.get(AUTHORIZATION).and_then(|value| value.to_str().ok());
    if !worker.key.accepts_header(authorization) {
        return Err(EndpointError::new(ErrorCode::Unauthorized, "the task endpoint takes the cluster's worker key"));
    }
    serde_json::from_slice(body)
        .map_err(|e| EndpointError::new(ErrorCode::InvalidRequest, format!("invalid request body: {e}")))
}

pub(crate) async fn not_found() -> EndpointError {
    EndpointError::new(ErrorCode::NotFound, "no such route on a worker's task endpoint")
}

pub(super) async fn deploy(
    State(worker): State<Arc<Worker>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, EndpointError> {
    let deploy: Deploy = request(&worker, &headers, &body)?;
    let attempt = deploy.attempt.clone();
    let slots = deploy.part.as_ref().map_or(deploy.parallelism, |part| part.subtasks.len() as u32);
    {
        let attempts = worker.lock();
        if attempts.contains_key(&attempt) {
            return Ok(Json(&attempt).into_response());
        }
        let used: u32 = attempts.values().filter(|a| a.end.is_none()).map(|a| a.slots).sum();
        if used.saturating_add(slots) > worker.slots {
            let free = worker.slots.saturating_sub(used);
            let detail = format!("{slots} slots are needed; {free} of {} are free", worker.slots);
            return Err(EndpointError::new(ErrorCode::NoFreeSlots, detail));
        }
    }
    let (part, inbound) = match deploy.part {
        Some(part) => {
            let (run_part, inbound) = parts::link(&worker, &attempt, part);
            (Some(run_part), Some(inbound))
        }
        None => (None, None),
    };
    let base = deploy.state_dir.unwrap_or_else(|| worker.state_dir.clone());
    let state_dir = weir_dataflow::wire::tenant_state_dir(&base, &deploy.tenant).ok_or_else(|| {
        EndpointError::new(ErrorCode::InvalidRequest, format!("`{}` is not a tenant id", deploy.tenant))
    })?;
    let request = AttemptRequest {
        job: attempt.job.clone(),
        sql: deploy.sql,
        parallelism: deploy.parallelism,
        restore: deploy.restore,
        state_dir,
        part,
        // The worker's stdout is nobody's: print tables go to the job's log.
        print: PrintTo::JobLog(attempt.job.clone()),
        memory: Some(ManagedMemory { bytes: worker.managed_memory.bytes / u64::from(worker.slots.max(1)) }),
    };
    let (run, mut events) = attempt::start(request).await?;
    tracing::info!(job_id = %attempt.job, attempt = %attempt.attempt, parallelism = deploy.parallelism, "attempt started");
    let started = Attempt { run, link: inbound, slots, checkpoint: None, end: None, fenced: false };
    worker.lock().insert(attempt.clone(), started);
    let (events_worker, reported) = (worker.clone(), attempt.clone());
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            {
                let mut attempts = events_worker.lock();
                let Some(a) = attempts.get_mut(&reported) else { break };
                match event {
                    AttemptEvent::Checkpoint(done) => a.checkpoint = Some(done),
                    AttemptEvent::Ended(end) => {
                        let end = match end {
                            RunEnd::Cancelled if a.fenced => RunEnd::Failed(Failure::new(
                                ErrorCode::LeaseExpired,
                                format!(
                                    "the worker reached no control-plane leader for {LEASE:?} and cancelled the attempt"
                                ),
                            )),
                            end => end,
                        };
                        tracing::info!(job_id = %reported.job, attempt = %reported.attempt, ?end, "attempt ended");
                        a.end = Some(end);
                    }
                }
            }
            events_worker.nudge.notify_one();
        }
    });
    Ok(Json(&attempt).into_response())
}

pub(super) async fn cancel(
    State(worker): State<Arc<Worker>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, EndpointError> {
    let attempt: AttemptRef = request(&worker, &headers, &body)?;
    if let Some(a) = worker.lock().get(&attempt) {
        a.run.cancel();
    }
    worker.until_ended(&attempt).await;
    Ok(Json(&attempt).into_response())
}

pub(super) async fn savepoint(
    State(worker): State<Arc<Worker>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, EndpointError> {
    let ask: SavepointAsk = request(&worker, &headers, &body)?;
    let run = worker.lock().get(&ask.attempt).filter(|a| a.end.is_none()).map(|a| a.run.clone());
    let Some(run) = run else {
        let detail = format!("attempt {} of job {} is not running here", ask.attempt.attempt, ask.attempt.job);
        return Err(EndpointError::new(ErrorCode::UnknownAttempt, detail));
    };
    let taken = run.savepoint(ask.stop, ask.format).await?;
    if ask.stop {
        worker.until_ended(&ask.attempt).await;
    }
    Ok(Json(taken).into_response())
}
