//! Errors of the API as RFC 9457 problem details: `{type, title, status, detail, code}` with
//! `Content-Type: application/problem+json`. `code` is stable and machine-readable (clients
//! branch on it); `detail` is for people and says what to do.
//!
//! Every failure a handler can meet maps to one [`ApiError`] here, and every `ApiError` holds a
//! code of the one table (`weir_dataflow::wire::ErrorCode`), whose status it answers with:
//! metadata rejections by [`Rejection::error_code`], proposal failures as 503 with
//! `Retry-After`, bad bodies as 4xx.

use axum::Json;
use axum::http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
pub use weir_dataflow::wire::PROBLEM_CONTENT_TYPE;
use weir_dataflow::wire::{ErrorCode, Failure, Problem};

use super::runtime::ActionError;
use crate::handle::ProposeError;
use crate::metadata::Rejection;

/// Seconds a client should wait before retrying a write that found no quorum: about one Raft
/// election, after which a new leader usually answers.
const RETRY_AFTER_SECONDS: u32 = 2;

/// An error answered as problem+json. Its status is its code's, from the one table.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// Boxed: errors travel in `Result`s on every path, and should not make them wide.
    problem: Box<Problem>,
    /// `Retry-After`, when the error knows better than its code's default.
    retry_after_seconds: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        ApiError { problem: Box::new(Problem::new(code, detail)), retry_after_seconds: None }
    }

    /// Adds an extension member (e.g. `line` and `column` of a SQL error); the standard members
    /// are never overwritten.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.problem = Box::new((*self.problem).with(key, value));
        self
    }

    /// Answers with `Retry-After: seconds`.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_seconds = Some(seconds);
        self
    }

    pub fn code(&self) -> ErrorCode {
        self.problem.error_code().unwrap_or(ErrorCode::Internal)
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn detail(&self) -> &str {
        &self.problem.detail
    }

    /// The answer for a job that does not exist *and* for another tenant's job: the two must be
    /// indistinguishable, or job ids of other tenants could be probed.
    pub fn unknown_job(id: &str) -> Self {
        Self::new(ErrorCode::UnknownJob, format!("job {id} does not exist"))
    }

    #[cfg(test)]
    fn body(&self) -> serde_json::Value {
        serde_json::to_value(&self.problem).unwrap_or_default()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code();
        let mut response = (self.status(), Json(self.problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_CONTENT_TYPE));
        if let Some(seconds) = self.retry_after_seconds {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        } else if code.http_status() == 503 {
            // 503s may succeed after about one election.
            headers.insert(RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        // RFC 6750: a 401 names the scheme it wants.
        if code == ErrorCode::Unauthorized {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"weir\""));
        }
        response
    }
}

impl From<Failure> for ApiError {
    fn from(failure: Failure) -> Self {
        ApiError::new(failure.code, failure.message)
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> Self {
        let error = ApiError::new(rejection.error_code(), rejection.to_string());
        match rejection {
            // What a client needs to act on without parsing the detail.
            Rejection::QuotaExceeded { kind, used, requested, limit, .. } => {
                error.with("quota", kind.field()).with("used", used).with("requested", requested).with("limit", limit)
            }
            _ => error,
        }
    }
}

impl From<ProposeError> for ApiError {
    fn from(error: ProposeError) -> Self {
        match error {
            ProposeError::NoQuorum(why) | ProposeError::LeaderUnreachable(why) => ApiError::new(
                ErrorCode::NoQuorum,
                format!(
                    "the control plane cannot commit writes now ({why}); reads still answer; retry when a \
                     majority of replicas is reachable"
                ),
            ),
            ProposeError::ShuttingDown => {
                ApiError::new(ErrorCode::ShuttingDown, "this replica is shutting down; retry on another replica")
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
    ApiError::new(ErrorCode::NotFound, "no such route; see /api/v1/openapi.json")
}

/// Fallback for a known path with a method it does not serve.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, "this route does not accept that method; see /api/v1/openapi.json")
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
            assert_eq!((error.status().as_u16(), error.code().as_str()), (status, code));
        }
    }

    #[test]
    fn extensions_never_overwrite_the_standard_members() {
        let body = ApiError::new(ErrorCode::InvalidSql, "bad").with("code", "other").with("line", 3).body();
        assert_eq!(body["code"], "invalid-sql");
        assert_eq!(body["line"], 3);
        assert_eq!(body["status"], 400);
    }
}
