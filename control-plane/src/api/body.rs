//! What a request carries, read so that every failure is problem+json like every other error
//! (axum's own extractors answer in plain text):
//! - [`ApiJson`], a JSON object: a wrong content type is 415, a body over
//!   [`super::MAX_BODY_BYTES`] 413, malformed JSON, another JSON value than an object, or a
//!   missing, unknown or mistyped field 400;
//! - [`ApiPath`], the path's parameters: one that cannot be decoded (percent-encoded bytes that
//!   are not UTF-8) names nothing, so it is 404 like any id that does not exist;
//! - [`JsonU32`], a whole number as JSON Schema reads one: `7` and `7.0` alike.
//!
//! [`check_request_body`] reads a body and applies its route's checks without a server, for the
//! fuzz targets: the same functions the handlers call, so the two cannot drift apart.

use std::fmt;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::{DeserializeOwned, Deserializer, Unexpected, Visitor};
use serde::{Deserialize, Serialize};
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
        let value = match axum::Json::<serde_json::Value>::from_request(request, state).await {
            Ok(axum::Json(value)) => value,
            Err(rejection) => return Err(body_error(&rejection)),
        };
        // serde reads a struct from an array of its fields too (`["q", "INSERT …"]`); every body
        // of this API is an object with named fields, and the document says so.
        if !value.is_object() {
            return Err(ApiError::new(ErrorCode::InvalidRequest, "the body must be a JSON object"));
        }
        serde_json::from_value(value).map(ApiJson).map_err(|error| {
            ApiError::new(ErrorCode::InvalidRequest, format!("the body does not fit this route: {error}"))
        })
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

/// The path's parameters, as axum's `Path` reads them.
pub(crate) struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(ApiError::new(
                ErrorCode::NotFound,
                format!("the path names nothing this API knows ({})", rejection.body_text()),
            )),
        }
    }
}

/// A `u32` in a JSON body. JSON Schema's `integer` is any number without a fractional part, so
/// `7.0` is as much an integer as `7` to a client that validates against the OpenAPI document;
/// the server reads both (serde's `u32` would refuse the first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub(crate) struct JsonU32(pub u32);

impl<'de> Deserialize<'de> for JsonU32 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WholeNumber;

        impl Visitor<'_> for WholeNumber {
            type Value = JsonU32;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a whole number from 0 to {}", u32::MAX)
            }

            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<JsonU32, E> {
                u32::try_from(value).map(JsonU32).map_err(|_| E::invalid_value(Unexpected::Unsigned(value), &self))
            }

            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<JsonU32, E> {
                u32::try_from(value).map(JsonU32).map_err(|_| E::invalid_value(Unexpected::Signed(value), &self))
            }

            fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<JsonU32, E> {
                if value.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&value) {
                    // Whole and in range, so the cast is exact.
                    Ok(JsonU32(value as u32))
                } else {
                    Err(E::invalid_value(Unexpected::Float(value), &self))
                }
            }
        }

        deserializer.deserialize_any(WholeNumber)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_are_read_as_json_schema_reads_them() {
        let read = |json: &str| serde_json::from_str::<JsonU32>(json).map(|n| n.0).map_err(|e| e.to_string());
        assert_eq!(read("7"), Ok(7));
        assert_eq!(read("7.0"), Ok(7));
        assert_eq!(read("1e3"), Ok(1000));
        assert_eq!(read("4294967295"), Ok(u32::MAX));
        for refused in ["7.5", "-1", "-1.0", "4294967296", "4294967296.0", "\"7\"", "null", "true", "1e400"] {
            assert!(read(refused).is_err(), "{refused} was read");
        }
    }

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
