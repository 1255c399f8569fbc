//! The one table of Weir's error codes, and the shapes in which errors cross a process.
//!
//! Every error the HTTP API, the workers' task endpoint and the shuffle protocol answer carries
//! an [`ErrorCode`]: a stable kebab-case string that clients branch on, the HTTP status it is
//! answered with, and whether retrying the same request may succeed. Codes are chosen here, once,
//! never at a call site. Over HTTP an error is an RFC 9457 problem ([`Problem`]); a failure
//! reported from one process to another (a run that failed, an attempt that could not start) is
//! a [`Failure`], which keeps the code and whether a retry may help — so a dispatcher does not
//! restart a job whose script no longer plans as if it had met a transient fault.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = ($code:literal, $status:literal, $retryable:literal),)+) => {
        /// A stable error code: its string, HTTP status and whether a retry may succeed.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)+
        }

        impl ErrorCode {
            /// Every code, in table order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)+];

            /// The stable string clients see (`code` of a problem).
            pub const fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)+ }
            }

            /// The HTTP status the code is answered with.
            pub const fn http_status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status,)+ }
            }

            /// Whether the same request (or run) may succeed later without anything changed.
            pub const fn retryable(self) -> bool {
                match self { $(ErrorCode::$variant => $retryable,)+ }
            }

            /// The code whose string is `code`.
            pub fn parse(code: &str) -> Option<ErrorCode> {
                match code { $($code => Some(ErrorCode::$variant),)+ _ => None }
            }
        }
    };
}

error_codes! {
    // The request itself is wrong: fix it, do not retry it.
    /// A body, path or query parameter that cannot be read: malformed JSON, a missing, unknown
    /// or mistyped field.
    InvalidRequest = ("invalid-request", 400, false),
    /// The job's SQL does not plan; the problem carries `line` and `column`.
    InvalidSql = ("invalid-sql", 400, false),
    /// A job's script writes nowhere (a bare `SELECT`).
    NoSink = ("no-sink", 400, false),
    /// A name (job, tenant) that is empty, too long or holds characters a name may not.
    InvalidName = ("invalid-name", 400, false),
    /// A tenant id that is not 1 to 63 lowercase letters, digits or inner dashes.
    InvalidTenantId = ("invalid-tenant-id", 400, false),
    /// A parallelism out of range, or above the job's max parallelism.
    InvalidParallelism = ("invalid-parallelism", 400, false),
    /// An option of a table's `WITH` clause or of a `SET` that is invalid or missing.
    InvalidOption = ("invalid-option", 400, false),
    /// A worker that offers no task slots.
    InvalidSlots = ("invalid-slots", 400, false),
    /// A request body larger than the route accepts.
    BodyTooLarge = ("body-too-large", 413, false),
    /// A body that is not sent as `application/json`.
    UnsupportedMediaType = ("unsupported-media-type", 415, false),

    // Who is asking.
    /// No credential, or one that is unknown or revoked.
    Unauthorized = ("unauthorized", 401, false),
    /// A read-only token asked for a change.
    ReadOnlyToken = ("read-only-token", 403, false),
    /// The root token asked for a tenant's job route.
    TenantTokenRequired = ("tenant-token-required", 403, false),
    /// A tenant's token asked for what only the operator may do.
    RootTokenRequired = ("root-token-required", 403, false),
    /// A job names a storage location outside its tenant's storage roots.
    ForbiddenLocation = ("forbidden-location", 403, false),
    /// The tenant's jobs would hold more than its quota allows (running jobs, task slots). Not
    /// a 429: waiting does not help by itself, only a job ending or a higher quota does (as
    /// Kubernetes answers a `ResourceQuota` exceeded with 403).
    QuotaExceeded = ("quota-exceeded", 403, false),
    /// The tenant submits faster than its rate allows; `Retry-After` says when to try again.
    RateLimited = ("rate-limited", 429, true),

    // What the request names does not exist (for a caller who may see it).
    /// No route has this path.
    NotFound = ("not-found", 404, false),
    /// The route does not serve this method.
    MethodNotAllowed = ("method-not-allowed", 405, false),
    UnknownJob = ("unknown-job", 404, false),
    UnknownTenant = ("unknown-tenant", 404, false),
    UnknownToken = ("unknown-token", 404, false),
    UnknownWorker = ("unknown-worker", 404, false),
    UnknownSavepoint = ("unknown-savepoint", 404, false),
    /// A worker does not run this attempt (or this part of it).
    UnknownAttempt = ("unknown-attempt", 404, false),

    // The request conflicts with the current state.
    TenantExists = ("tenant-exists", 409, false),
    TokenExists = ("token-exists", 409, false),
    JobExists = ("job-exists", 409, false),
    SavepointExists = ("savepoint-exists", 409, false),
    /// A job status change the job's life does not allow.
    IllegalTransition = ("illegal-transition", 409, false),
    /// The job has ended; nothing more can be asked of it.
    JobTerminated = ("job-terminated", 409, false),
    /// The request needs a running job.
    JobNotRunning = ("job-not-running", 409, false),
    /// A checkpoint older than one already committed.
    StaleCheckpoint = ("stale-checkpoint", 409, false),
    /// A report or deployment of an attempt that a newer one replaced.
    StaleAttempt = ("stale-attempt", 409, false),
    /// A worker has fewer free slots than the attempt needs (another worker, or later, may).
    NoFreeSlots = ("no-free-slots", 409, true),
    /// A savepoint could not be taken (the job has no checkpoints, or a checkpoint failed).
    SavepointFailed = ("savepoint-failed", 409, false),

    // The service cannot answer now: retry, here or on another replica.
    /// The control plane has no leader with a quorum.
    NoQuorum = ("no-quorum", 503, true),
    /// This replica knows no leader (the health probe): an election is under way.
    NoLeader = ("no-leader", 503, true),
    /// The replica is shutting down.
    ShuttingDown = ("shutting-down", 503, true),
    /// The leader is still starting its services.
    NotReady = ("not-ready", 503, true),
    /// Object storage (checkpoints, savepoints, state) cannot be reached or answered an error.
    StateUnavailable = ("state-unavailable", 503, true),
    /// A worker or another part of an attempt cannot be reached.
    Unreachable = ("unreachable", 503, true),
    /// A worker running the attempt stopped heartbeating: its attempts are gone.
    WorkerLost = ("worker-lost", 503, true),

    // How a run of a job failed (reported by workers; answered by the API in exceptions).
    /// A task failed at run time (a source, a sink, an exchange): the run restarts from its
    /// latest checkpoint under the job's restart strategy.
    TaskFailed = ("task-failed", 500, true),
    /// A record the job cannot read, and no policy skips it: running again reads it again.
    MalformedRecord = ("malformed-record", 422, false),
    /// Another writer took over the job's state (a newer attempt, or another job restored from
    /// this job's checkpoint): this attempt can no longer checkpoint.
    StateFenced = ("state-fenced", 409, false),
    /// Checkpoint or savepoint data that cannot be read (corrupt, or of another format).
    StateCorrupt = ("state-corrupt", 500, false),
    /// The worker reached no control-plane leader for its lease and stopped the attempt.
    LeaseExpired = ("lease-expired", 503, true),

    // The remote shuffle protocol (`weir shuffle`).
    /// Client and server speak different protocol versions.
    ProtocolVersion = ("protocol-version", 400, false),
    /// A message the protocol does not allow here.
    ProtocolViolation = ("protocol-violation", 400, false),
    /// A channel no producer or consumer registered.
    UnknownChannel = ("unknown-channel", 404, true),
    /// A channel registered twice.
    DuplicateChannel = ("duplicate-channel", 409, false),
    /// A partition created twice.
    DuplicatePartition = ("duplicate-partition", 409, false),
    /// The shuffle server cannot keep retained data (its disk or object store failed).
    ShuffleStorage = ("shuffle-storage", 503, true),

    // A fault of Weir's own: report it.
    /// The operating system's random source failed.
    NoRandomness = ("no-randomness", 500, true),
    /// The SQL planner failed on a script (a bug; the script may be fine).
    PlannerFailed = ("planner-failed", 500, false),
    /// Anything else that should not happen.
    Internal = ("internal", 500, false),
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        // A code a newer peer knows and this one does not reads as internal, never as an error
        // that loses the message it came with.
        Ok(ErrorCode::parse(&code).unwrap_or(ErrorCode::Internal))
    }
}

/// A failure reported from one process to another: what happened (`code`), for people
/// (`message`), and whether running again may succeed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub code: ErrorCode,
    pub message: String,
    /// Usually the code's own retryability; a failure may know better (a task that failed on
    /// a malformed record is not helped by a restart, whatever task error carried it).
    pub retryable: bool,
}

impl Failure {
    /// A failure with its code's retryability.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Failure {
        Failure { code, message: message.into(), retryable: code.retryable() }
    }

    /// A fault of Weir's own.
    pub fn internal(message: impl Into<String>) -> Failure {
        Failure::new(ErrorCode::Internal, message)
    }
}

/// The media type of a [`Problem`].
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// An error over HTTP: RFC 9457 problem details, with Weir's `code` and any extensions (a SQL
/// error's `line` and `column`). Clients read it with [`Problem::code`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The code's string; kept as sent, so a client can show a code it does not know.
    pub code: String,
    #[serde(flatten)]
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

impl Problem {
    /// The problem for `code` with a detail for people.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Problem {
        Problem {
            kind: format!("urn:weir:problem:{code}"),
            title: reason_phrase(code.http_status()).to_string(),
            status: code.http_status(),
            detail: detail.into(),
            code: code.as_str().to_string(),
            extensions: serde_json::Map::new(),
        }
    }

    /// Adds an extension member; the standard members are never overwritten.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Problem {
        if !matches!(key, "type" | "title" | "status" | "detail" | "code") {
            self.extensions.insert(key.to_owned(), value.into());
        }
        self
    }

    /// The code, if this side knows it.
    pub fn error_code(&self) -> Option<ErrorCode> {
        ErrorCode::parse(&self.code)
    }

    /// The failure this problem reports, as one process tells another.
    pub fn failure(&self) -> Failure {
        match self.error_code() {
            Some(code) => Failure::new(code, self.detail.clone()),
            None => Failure { code: ErrorCode::Internal, message: self.detail.clone(), retryable: self.status >= 500 },
        }
    }
}

impl From<Failure> for Problem {
    fn from(failure: Failure) -> Problem {
        Problem::new(failure.code, failure.message)
    }
}

/// The reason phrase of the statuses the table uses.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn codes_are_unique_kebab_case_and_parse_back() {
        let mut seen = BTreeSet::new();
        for &code in ErrorCode::ALL {
            let text = code.as_str();
            assert!(seen.insert(text), "{text} twice");
            assert!(text.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'), "{text}");
            assert_eq!(ErrorCode::parse(text), Some(code));
            assert_ne!(reason_phrase(code.http_status()), "Error", "{text} has an unnamed status");
            let json = serde_json::to_string(&code).expect("a code serialises");
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).expect("and reads back"), code);
        }
        assert_eq!(serde_json::from_str::<ErrorCode>("\"from-the-future\"").expect("reads"), ErrorCode::Internal);
    }

    #[test]
    fn retryable_codes_are_the_unavailable_ones_and_run_faults() {
        for &code in ErrorCode::ALL {
            if code.http_status() == 503 {
                assert!(code.retryable(), "{code} is a 503 and must be retryable");
            }
            if code.http_status() == 429 {
                assert!(code.retryable(), "{code} is a 429: the same request succeeds later");
            }
            if matches!(code.http_status(), 401 | 403 | 405 | 413 | 415) {
                assert!(!code.retryable(), "{code}");
            }
        }
    }

    #[test]
    fn problems_keep_their_standard_members_and_read_back_as_failures() {
        let problem = Problem::new(ErrorCode::InvalidSql, "bad").with("code", "other").with("line", 3);
        let json = serde_json::to_value(&problem).expect("serialises");
        assert_eq!(json["code"], "invalid-sql");
        assert_eq!(json["type"], "urn:weir:problem:invalid-sql");
        assert_eq!((json["status"].as_u64(), json["line"].as_u64()), (Some(400), Some(3)));
        let back: Problem = serde_json::from_value(json).expect("reads back");
        assert_eq!(back.failure(), Failure { code: ErrorCode::InvalidSql, message: "bad".into(), retryable: false });
    }
}
