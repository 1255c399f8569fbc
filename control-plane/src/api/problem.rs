//! Errors of the API as RFC 9457 problem details: `{type, title, status, detail, code}` with
//! `Content-Type: application/problem+json`. `code` is stable and machine-readable (clients
//! branch on it); `detail` is for people and says what to do.
//!
//! Every failure a handler can meet maps to one [`ApiError`] here: metadata rejections by their
//! [`Rejection::code`], proposal failures to 503 with `Retry-After`, and bad bodies to 4xx.

use axum::Json;
use axum::http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::runtime::ActionError;
use crate::handle::ProposeError;
use crate::metadata::Rejection;

pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// Seconds a client should wait before retrying a write that found no quorum: about one Raft
/// election, after which a new leader usually answers.
const RETRY_AFTER_SECONDS: u32 = 2;

/// An error answered as problem+json.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    /// Extra members of the problem body (e.g. `line` and `column` of a SQL error).
    pub extensions: Map<String, Value>,
    retry_after: Option<u32>,
    bearer_challenge: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self { status, code, detail: detail.into(), extensions: Map::new(), retry_after: None, bearer_challenge: false }
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extensions.insert(key.to_owned(), value.into());
        self
    }

    /// 401 with `WWW-Authenticate: Bearer`, as RFC 6750 asks.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        let mut error = Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail);
        error.bearer_challenge = true;
        error
    }

    pub fn forbidden(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, detail)
    }

    /// The answer for a job that does not exist *and* for another tenant's job: the two must be
    /// indistinguishable, or job ids of other tenants could be probed.
    pub fn unknown_job(id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "unknown-job", format!("job {id} does not exist"))
    }

    /// 503 with `Retry-After`: the write was not committed (and may or may not be later).
    pub fn unavailable(code: &'static str, detail: impl Into<String>) -> Self {
        let mut error = Self::new(StatusCode::SERVICE_UNAVAILABLE, code, detail);
        error.retry_after = Some(RETRY_AFTER_SECONDS);
        error
    }

    pub fn internal(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, code, detail)
    }

    fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("type".into(), json!(format!("urn:weir:problem:{}", self.code)));
        body.insert("title".into(), json!(self.status.canonical_reason().unwrap_or("Error")));
        body.insert("status".into(), json!(self.status.as_u16()));
        body.insert("detail".into(), json!(self.detail));
        body.insert("code".into(), json!(self.code));
        for (key, value) in &self.extensions {
            body.entry(key.clone()).or_insert_with(|| value.clone());
        }
        Value::Object(body)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_CONTENT_TYPE));
        if let Some(seconds) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.bearer_challenge {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"weir\""));
        }
        response
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> Self {
        let status = match &rejection {
            Rejection::UnknownTenant { .. }
            | Rejection::UnknownToken { .. }
            | Rejection::UnknownWorker { .. }
            | Rejection::UnknownJob { .. }
            | Rejection::UnknownSavepoint { .. } => StatusCode::NOT_FOUND,
            Rejection::TenantExists { .. }
            | Rejection::TokenExists { .. }
            | Rejection::JobExists { .. }
            | Rejection::IllegalTransition { .. }
            | Rejection::JobTerminated { .. }
            | Rejection::JobNotRunning { .. }
            | Rejection::StaleCheckpoint { .. }
            | Rejection::StaleAttempt { .. }
            | Rejection::SavepointExists { .. } => StatusCode::CONFLICT,
            Rejection::NoSlots | Rejection::InvalidParallelism => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, rejection.code(), rejection.to_string())
    }
}

impl From<ProposeError> for ApiError {
    fn from(error: ProposeError) -> Self {
        match error {
            ProposeError::NoQuorum(why) | ProposeError::LeaderUnreachable(why) => ApiError::unavailable(
                "no-quorum",
                format!(
                    "the control plane cannot commit writes now ({why}); reads still answer; retry when a \
                     majority of replicas is reachable"
                ),
            ),
            ProposeError::ShuttingDown => {
                ApiError::unavailable("shutting-down", "this replica is shutting down; retry on another replica")
            }
        }
    }
}

impl From<ActionError> for ApiError {
    fn from(error: ActionError) -> Self {
        match error {
            ActionError::Unavailable(error) => error.into(),
            ActionError::Rejected(rejection) => rejection.into(),
        }
    }
}

/// Fallback for paths no route matches.
pub(crate) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not-found", "no such route; see /api/v1/openapi.json")
}

/// Fallback for a known path with a method it does not serve.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "this route does not accept that method; see /api/v1/openapi.json",
    )
}

#[cfg(test)]
mod tests {
    use weir_dataflow::ids::JobId;

    use super::*;
    use crate::metadata::records::JobStatus;

    #[test]
    fn rejections_keep_their_code_and_get_a_status_by_kind() {
        let job = JobId("j".into());
        let cases = [
            (Rejection::UnknownJob { job: job.clone() }, 404),
            (Rejection::JobExists { job: job.clone() }, 409),
            (Rejection::IllegalTransition { job: job.clone(), from: JobStatus::Created, to: JobStatus::Finished }, 409),
            (Rejection::JobTerminated { job: job.clone(), status: JobStatus::Cancelled }, 409),
            (Rejection::JobNotRunning { job, status: JobStatus::Created }, 409),
            (Rejection::InvalidParallelism, 400),
        ];
        for (rejection, status) in cases {
            let code = rejection.code();
            let error = ApiError::from(rejection);
            assert_eq!((error.status.as_u16(), error.code), (status, code));
        }
    }

    #[test]
    fn extensions_never_overwrite_the_standard_members() {
        let body = ApiError::bad_request("invalid-sql", "bad").with("code", "other").with("line", 3).body();
        assert_eq!(body["code"], "invalid-sql");
        assert_eq!(body["line"], 3);
        assert_eq!(body["status"], 400);
    }
}
