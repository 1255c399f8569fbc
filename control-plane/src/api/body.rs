//! JSON request bodies whose failures are problem+json like every other error: a wrong content
//! type is 415, a body over [`super::MAX_BODY_BYTES`] 413, malformed JSON or a missing, unknown
//! or mistyped field 400. (axum's own `Json` answers these in plain text.)
//!
//! [`check_request_body`] reads a body and applies its route's checks without a server, for the
//! fuzz targets: the same functions the handlers call, so the two cannot drift apart.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use weir_dataflow::wire::ErrorCode;

use super::problem::ApiError;

/// A JSON body of type `T`.
pub(crate) struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        // A body declared over the limit is refused before any of it is read, so the client
        // hears why instead of a connection reset while it is still sending.
        let declared = request.headers().get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok());
        if declared.and_then(|v| v.parse::<u64>().ok()).is_some_and(|n| n > super::MAX_BODY_BYTES as u64) {
            return Err(too_large());
        }
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(body_error(&rejection)),
        }
    }
}

/// The JSON request bodies of the API, by route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestBody {
    /// `POST /api/v1/jobs`
    SubmitJob,
    /// `POST /api/v1/jobs/{id}/rescale`
    Rescale,
    /// `POST /api/v1/tenants`
    CreateTenant,
    /// `POST /api/v1/tenants/{tenant}/tokens`
    CreateToken,
}

impl RequestBody {
    pub const ALL: [RequestBody; 4] =
        [RequestBody::SubmitJob, RequestBody::Rescale, RequestBody::CreateTenant, RequestBody::CreateToken];
}

/// Reads `body` as the route of `kind` reads a JSON request (sent with the JSON content type),
/// and applies the checks its handler makes before it reads or writes the metadata: a job's name,
/// parallelism and script (which is planned), a tenant id. `Ok` where the server would go on to
/// the metadata; otherwise the error it answers.
pub fn check_request_body(kind: RequestBody, body: &[u8]) -> Result<(), ApiError> {
    match kind {
        RequestBody::SubmitJob => super::jobs::check_submission_blocking(&decode(body)?),
        RequestBody::Rescale => super::jobs::check_rescale(&decode(body)?),
        RequestBody::CreateTenant => super::tenants::check_create_tenant(&decode(body)?),
        RequestBody::CreateToken => decode::<super::tenants::CreateToken>(body).map(|_| ()),
    }
}

/// A body already read, as [`ApiJson`] reads one.
fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.len() > super::MAX_BODY_BYTES {
        return Err(too_large());
    }
    axum::Json::<T>::from_bytes(body).map(|axum::Json(value)| value).map_err(|rejection| body_error(&rejection))
}

fn body_error(rejection: &JsonRejection) -> ApiError {
    let detail = rejection.body_text();
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "the body must be JSON, sent with `Content-Type: application/json`",
        ),
        JsonRejection::JsonSyntaxError(_) => ApiError::new(ErrorCode::InvalidRequest, detail),
        JsonRejection::JsonDataError(_) => ApiError::new(ErrorCode::InvalidRequest, detail),
        _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => too_large(),
        _ => ApiError::new(ErrorCode::InvalidRequest, detail),
    }
}

fn too_large() -> ApiError {
    ApiError::new(ErrorCode::BodyTooLarge, format!("request bodies are limited to {} bytes", super::MAX_BODY_BYTES))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(kind: RequestBody, body: &str) -> Option<ErrorCode> {
        check_request_body(kind, body.as_bytes()).err().map(|error| error.code())
    }

    #[test]
    fn bodies_are_checked_as_the_handlers_check_them() {
        let submit = concat!(
            r#"{"name":"j","sql":"CREATE TABLE t (a BIGINT) WITH ('connector' = 'datagen');\n"#,
            r#"CREATE TABLE s (a BIGINT) WITH ('connector' = 'blackhole'); INSERT INTO s SELECT a FROM t;"}"#
        );
        assert_eq!(code_of(RequestBody::SubmitJob, submit), None);
        let bare_select =
            r#"{"name":"j","sql":"CREATE TABLE t (a BIGINT) WITH ('connector' = 'datagen'); SELECT a FROM t"}"#;
        assert_eq!(code_of(RequestBody::SubmitJob, bare_select), Some(ErrorCode::NoSink));
        assert_eq!(code_of(RequestBody::SubmitJob, r#"{"name":"j","sql":"SELEC"}"#), Some(ErrorCode::InvalidSql));
        assert_eq!(code_of(RequestBody::SubmitJob, r#"{"name":"\u0007","sql":"x"}"#), Some(ErrorCode::InvalidName));
        assert_eq!(code_of(RequestBody::SubmitJob, r#"{"name":"j","sql":"x","x":1}"#), Some(ErrorCode::InvalidRequest));
        assert_eq!(code_of(RequestBody::Rescale, r#"{"parallelism":0}"#), Some(ErrorCode::InvalidParallelism));
        assert_eq!(code_of(RequestBody::Rescale, r#"{"parallelism":4}"#), None);
        assert_eq!(code_of(RequestBody::CreateTenant, r#"{"id":"-a"}"#), Some(ErrorCode::InvalidTenantId));
        assert_eq!(code_of(RequestBody::CreateTenant, r#"{"id":"acme"}"#), None);
        assert_eq!(code_of(RequestBody::CreateToken, r#"{"role":"root"}"#), Some(ErrorCode::InvalidRequest));
        assert_eq!(code_of(RequestBody::CreateToken, "{"), Some(ErrorCode::InvalidRequest));
        let huge = format!(r#"{{"role":"admin","pad":"{}"}}"#, " ".repeat(super::super::MAX_BODY_BYTES));
        assert_eq!(code_of(RequestBody::CreateToken, &huge), Some(ErrorCode::BodyTooLarge));
    }
}
