//! `GET /api/v1/openapi.json`: the API described as an OpenAPI 3.1 document, written by hand
//! with `serde_json` (no code generation: the document is small).
//!
//! The document is as strict as the server, so that a client (or a fuzzer) that follows it is
//! never refused for a reason it could not see, and one that breaks it always is:
//! - request bodies list exactly the fields the server reads (`additionalProperties: false`:
//!   the server refuses unknown fields), with their types, bounds and patterns as the handlers
//!   check them (`Name` is `jobs::check_name`, and a test holds the two to the same characters);
//! - every status an operation can answer is listed, errors as `application/problem+json` with
//!   the codes of the one table, 401 with `WWW-Authenticate`, 429 and 503 with `Retry-After`;
//! - response bodies list exactly the fields the server writes.
//!
//! One thing no schema can say is whether a script plans: `sql` has the format `flink-sql`, and
//! a script that does not plan is a 400 `invalid-sql` (the schemathesis run in
//! `tests/standalone.rs` generates it from real scripts).
//!
//! `control-plane/tests/api.rs` checks that the document lists every route of
//! [`super::routes`] with the right security, and these rules for every operation.

use axum::Json;
use serde_json::{Map, Value, json};
use weir_dataflow::wire::ErrorCode;

/// A reference to a schema of `components.schemas`.
fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn json_response(description: &str, name: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema(name) } } })
}

/// The problem response an error status is answered with.
fn problem_response(status: &str) -> Value {
    let name = match status {
        "401" => "Unauthorized",
        "429" => "RateLimited",
        "503" => "Unavailable",
        _ => "Problem",
    };
    json!({ "$ref": format!("#/components/responses/{name}") })
}

/// Who may call an operation.
#[derive(Clone, Copy, PartialEq)]
enum Security {
    Public,
    Bearer,
}

/// One operation: `ok` is its success (status and response); `errors` the problem statuses it
/// may answer besides 500 and 503 (and 401, added for a bearer operation); `body` the schema of
/// its JSON request body, which adds 400, 413 and 415; `parameters` its path parameters.
struct Operation<'a> {
    id: &'a str,
    summary: &'a str,
    security: Security,
    ok: (&'a str, Value),
    errors: &'a [&'a str],
    body: Option<&'a str>,
    parameters: &'a [&'a str],
}

impl Operation<'_> {
    fn document(&self) -> Value {
        let mut responses = Map::new();
        responses.insert(self.ok.0.to_owned(), self.ok.1.clone());
        let mut statuses: Vec<&str> = self.errors.to_vec();
        if self.security == Security::Bearer {
            statuses.push("401");
        }
        if self.body.is_some() {
            statuses.extend(["400", "413", "415"]);
        }
        statuses.extend(["500", "503"]);
        statuses.sort_unstable();
        statuses.dedup();
        for status in statuses {
            responses.insert(status.to_owned(), problem_response(status));
        }
        let security = match self.security {
            Security::Public => json!([]),
            Security::Bearer => json!([{ "bearer": [] }]),
        };
        let mut operation = json!({
            "operationId": self.id, "summary": self.summary, "security": security, "responses": responses,
        });
        if let Some(body) = self.body {
            operation["requestBody"] =
                json!({ "required": true, "content": { "application/json": { "schema": schema(body) } } });
        }
        if !self.parameters.is_empty() {
            operation["parameters"] = self
                .parameters
                .iter()
                .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
                .collect();
        }
        operation
    }
}

/// The document. Paths are relative to the server URL `/api/v1`.
pub(crate) fn openapi() -> Value {
    use Security::*;
    let op = |id, summary, security, ok, errors, body, parameters| {
        Operation { id, summary, security, ok, errors, body, parameters }.document()
    };
    let ok = |name: &str| ("200", json_response("OK", name));
    let accepted = |name: &str| ("202", json_response("Accepted", name));
    let created = |name: &str| ("201", json_response("Created", name));
    let job: &[&str] = &["id"];
    let tenant: &[&str] = &["tenant"];
    let job_read = |id, summary, name: &str| op(id, summary, Bearer, ok(name), &["403", "404"], None, job);
    let job_action =
        |id, summary, name: &str| op(id, summary, Bearer, accepted(name), &["403", "404", "409"], None, job);

    let mut document = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Weir control plane",
            "version": "1",
            "description": "Flink SQL jobs on Weir. Errors are application/problem+json with a stable `code`. \
                A tenant's token sees only that tenant's jobs; another tenant's job answers 404. A tenant's \
                unended jobs and their task slots are limited by its quota (403 `quota-exceeded`), and its \
                submissions by a rate per replica (429 `rate-limited` with `Retry-After`).",
        },
        "servers": [{ "url": "/api/v1" }],
        "paths": {
            "/jobs": {
                "post": op("submitJob", "Submit a SQL job (admin token)", Bearer, created("JobCreated"),
                    &["403", "409", "429"], Some("SubmitJob"), &[]),
                "get": op("listJobs", "The caller's tenant's jobs", Bearer, ok("JobList"), &["403"], None, &[]),
            },
            "/jobs/{id}": { "get": job_read("getJob", "A job: status, vertices with live metrics, last checkpoint", "JobDetail") },
            "/jobs/{id}/cancel": { "post": job_action("cancelJob", "Cancel the job", "CancelAccepted") },
            "/jobs/{id}/stop": { "post": job_action("stopJob", "Stop the job with a savepoint", "SavepointAccepted") },
            "/jobs/{id}/savepoints": {
                "post": job_action("triggerSavepoint", "Trigger a savepoint of the running job", "SavepointAccepted"),
                "get": job_read("listSavepoints", "The job's savepoints, taken and pending", "SavepointList"),
            },
            "/jobs/{id}/checkpoints": {
                "get": job_read("listCheckpoints", "The job's retained checkpoints, newest first", "CheckpointList"),
            },
            "/jobs/{id}/rescale": {
                "post": op("rescaleJob", "Ask for the job to run at another parallelism (403 past the tenant's slots)",
                    Bearer, accepted("RescaleAccepted"), &["403", "404", "409"], Some("Rescale"), job),
            },
            "/jobs/{id}/exceptions": { "get": job_read("listExceptions", "The job's recent failures", "ExceptionList") },
            "/jobs/{id}/rescales": {
                "get": job_read("listRescales", "The autoscaler's decisions, newest first, with their reasons", "RescaleList"),
            },
            "/workers": { "get": op("listWorkers", "Registered workers (any token)", Bearer, ok("WorkerList"), &[], None, &[]) },
            "/cluster": { "get": op("getCluster", "Raft members, leader and term (any token)", Bearer, ok("Cluster"), &[], None, &[]) },
            "/tenants": {
                "post": op("createTenant", "Create a tenant (root token only)", Bearer, created("TenantCreated"),
                    &["403", "409"], Some("CreateTenant"), &[]),
            },
            "/tenants/{tenant}/tokens": {
                "post": op("createToken", "Create a token of a tenant (root token only); the secret is shown once",
                    Bearer, created("CreatedToken"), &["403", "404", "409"], Some("CreateToken"), tenant),
            },
            "/tenants/{tenant}/tokens/{token}": {
                "delete": op("revokeToken", "Revoke a token (root token only)", Bearer,
                    ("204", json!({ "description": "Revoked" })), &["403", "404"], None, &["tenant", "token"]),
            },
            "/tenants/{tenant}/quota": {
                "get": op("getQuota",
                    "A tenant's quota: the limits in force, its own among them, and what its jobs hold (root token only)",
                    Bearer, ok("TenantQuota"), &["403", "404"], None, tenant),
                "put": op("setQuota",
                    "Set a tenant's own quota; a limit left out is the operator's default (root token only)",
                    Bearer, ok("TenantQuota"), &["403", "404"], Some("SetQuota"), tenant),
            },
            "/healthz": {
                "get": op("health", "200 when this replica knows a leader, 503 otherwise", Public, ok("Health"), &[], None, &[]),
            },
            "/metrics": {
                "get": op("metrics", "Prometheus text exposition", Public,
                    ("200", json!({ "description": "OK", "content": { "text/plain": { "schema": { "type": "string" } } } })),
                    &[], None, &[]),
            },
            "/openapi.json": {
                "get": op("openapi", "This document", Public,
                    ("200", json!({ "description": "OK", "content": { "application/json": { "schema": { "type": "object" } } } })),
                    &[], None, &[]),
            },
        },
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http", "scheme": "bearer",
                    "description": "A tenant's token (admin or read-only), or the operator's root token for tenant routes",
                },
            },
            "responses": responses(),
            "schemas": schemas(),
        },
    });
    add_links(&mut document);
    document
}

/// OpenAPI links: what a created resource's id may be used for next (clients, and the stateful
/// phase of a fuzzer, follow them).
fn add_links(document: &mut Value) {
    let link = |operation: &str, parameters: Value| json!({ "operationId": operation, "parameters": parameters });
    let job = json!({ "id": "$response.body#/id" });
    let job_links: Map<String, Value> = [
        "getJob",
        "cancelJob",
        "stopJob",
        "triggerSavepoint",
        "listSavepoints",
        "listCheckpoints",
        "rescaleJob",
        "listExceptions",
    ]
    .into_iter()
    .map(|operation| (operation.to_owned(), link(operation, job.clone())))
    .collect();
    document["paths"]["/jobs"]["post"]["responses"]["201"]["links"] = Value::Object(job_links);
    let tenant = json!({ "tenant": "$response.body#/id" });
    document["paths"]["/tenants"]["post"]["responses"]["201"]["links"] = json!({
        "createToken": link("createToken", tenant.clone()),
        "getQuota": link("getQuota", tenant.clone()),
        "setQuota": link("setQuota", tenant),
    });
    document["paths"]["/tenants/{tenant}/tokens"]["post"]["responses"]["201"]["links"] = json!({
        "revokeToken": link("revokeToken", json!({ "tenant": "$request.path.tenant", "token": "$response.body#/id" })),
    });
}

fn responses() -> Value {
    let problem = |description: &str, headers: Value| {
        json!({
            "description": description,
            "headers": headers,
            "content": { "application/problem+json": { "schema": schema("Problem") } },
        })
    };
    let retry_after = json!({
        "Retry-After": {
            "required": true, "description": "Seconds to wait before retrying",
            "schema": { "type": "integer", "minimum": 1 },
        },
    });
    json!({
        "Problem": problem("An error", json!({})),
        "Unauthorized": problem("No token, or one that is unknown or revoked", json!({
            "WWW-Authenticate": { "required": true, "schema": { "type": "string", "pattern": "^Bearer" } },
        })),
        "RateLimited": problem("Submitted faster than the tenant's rate", retry_after.clone()),
        "Unavailable": problem("No quorum, no leader, or shutting down", retry_after),
    })
}

fn schemas() -> Value {
    let string = json!({ "type": "string" });
    let integer = json!({ "type": "integer", "minimum": 0 });
    let nullable_integer = json!({ "type": ["integer", "null"], "minimum": 0 });
    let parallelism = json!({ "type": "integer", "minimum": 1, "maximum": super::MAX_PARALLELISM });
    // A tenant's own limit, or null for the operator's default; a rate of zero would never refill.
    let limit = json!({ "type": ["integer", "null"], "minimum": 0, "maximum": u32::MAX });
    let rate = json!({ "type": ["integer", "null"], "minimum": 1, "maximum": u32::MAX });
    let status = json!({ "type": "string", "enum": ["CREATED", "RUNNING", "FAILING", "RESTARTING", "CANCELLING", "SUSPENDED", "CANCELED", "FINISHED", "FAILED"] });
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
    // Objects are closed: what is not listed is never sent, and never accepted.
    let object = |required: &[&str], properties: Value| json!({ "type": "object", "required": required, "properties": properties, "additionalProperties": false });
    let checkpoint = object(
        &["id", "location", "parallelism", "state_size_bytes", "completed_at"],
        json!({ "id": integer, "location": string, "parallelism": integer, "state_size_bytes": integer, "completed_at": integer }),
    );
    let savepoint_request = object(
        &["id", "stop", "requested_at"],
        json!({ "id": string, "stop": { "type": "boolean" }, "requested_at": integer }),
    );
    let quota_limits = json!({ "max_running_jobs": limit, "max_slots": limit, "submissions_per_minute": rate });
    let mut all = json!({
        "Problem": {
            "type": "object", "required": ["type", "title", "status", "detail", "code"],
            "properties": {
                "type": { "type": "string", "pattern": "^urn:weir:problem:" },
                "title": string,
                "status": { "type": "integer", "minimum": 400, "maximum": 599 },
                "detail": string,
                "code": { "type": "string", "enum": codes, "description": "Stable, machine-readable error code" },
                "line": { "type": "integer", "minimum": 0, "description": "invalid-sql: line of the error (1-based; 0 if unknown)" },
                "column": { "type": "integer", "minimum": 0, "description": "invalid-sql: column of the error (1-based; 0 if unknown)" },
                "quota": { "type": "string", "enum": ["max_running_jobs", "max_slots"], "description": "quota-exceeded: which limit" },
                "used": { "type": "integer", "minimum": 0, "description": "quota-exceeded: what the tenant's jobs hold" },
                "requested": { "type": "integer", "minimum": 1, "description": "quota-exceeded: what the request would add" },
                "limit": { "type": "integer", "minimum": 0, "description": "quota-exceeded: the limit" },
            },
            "additionalProperties": false,
        },
        // As `jobs::check_name`: 1 to 200 characters, printable (no controls, no bidirectional
        // overrides or isolates), not all blank (Rust's `char::is_whitespace`).
        "Name": {
            "type": "string", "minLength": 1, "maxLength": super::jobs::MAX_NAME_CHARS,
            "pattern": NAME_PATTERN,
        },
        "SubmitJob": object(&["name", "sql"], json!({
            "name": schema("Name"),
            "sql": {
                // No pattern or length beside the format: whether a script plans is all there is
                // to say, and a blank one does not.
                "type": "string", "format": "flink-sql",
                "description": "A Flink SQL script ending in INSERT INTO a sink table; one that does not plan is a 400 invalid-sql",
            },
            "parallelism": {
                "type": ["integer", "null"], "minimum": 1, "maximum": super::MAX_PARALLELISM,
                "description": "Pinned over the script's SET 'parallelism.default'; absent or null: the script's, or 1",
            },
        })),
        "JobCreated": object(&["id"], json!({ "id": string })),
        "JobSummary": object(&["id", "name", "status", "parallelism", "submitted_at"], json!({
            "id": string, "name": string, "status": status, "parallelism": integer, "submitted_at": integer,
        })),
        "JobList": object(&["jobs"], json!({ "jobs": { "type": "array", "items": schema("JobSummary") } })),
        "Vertex": object(&["id", "name", "parallelism", "records_in", "records_out", "backpressure", "watermark", "busy_ms", "backlog"], json!({
            "id": integer, "name": string, "parallelism": integer,
            "records_in": nullable_integer, "records_out": nullable_integer,
            "busy_ms": nullable_integer,
            "backlog": nullable_integer,
            "backpressure": { "type": ["number", "null"], "minimum": 0, "maximum": 1 },
            "watermark": { "type": ["integer", "null"] },
        })),
        "JobDetail": object(
            &["id", "name", "status", "parallelism", "sql", "config", "submitted_at", "status_changed_at", "vertices",
              "graph_error", "last_checkpoint", "pending_savepoints", "deployment"],
            json!({
                "id": string, "name": string, "status": status, "parallelism": integer, "sql": string,
                "config": { "type": "object", "additionalProperties": string },
                "submitted_at": integer, "status_changed_at": integer,
                "vertices": { "type": ["array", "null"], "items": schema("Vertex") },
                "graph_error": { "type": ["string", "null"] },
                "last_checkpoint": { "oneOf": [schema("Checkpoint"), { "type": "null" }] },
                "pending_savepoints": { "type": "array", "items": schema("SavepointRequest") },
                "deployment": {
                    "description": "The job's newest attempt and the worker it was deployed on; null until deployed on a worker.",
                    "oneOf": [
                        object(&["attempt", "worker"], json!({
                            "attempt": integer,
                            "worker": string,
                            "members": { "type": "array", "items": string, "description": "Workers of the other parts of a spread attempt." },
                        })),
                        { "type": "null" },
                    ],
                },
            }),
        ),
    });
    // Two halves: one `json!` of all of them passes the macro's recursion limit.
    let more = json!({
        "Checkpoint": checkpoint,
        "CheckpointList": object(&["id", "checkpoints"], json!({ "id": string, "checkpoints": { "type": "array", "items": schema("Checkpoint") } })),
        "SavepointRequest": savepoint_request,
        "Savepoint": object(&["id", "job", "tenant", "location", "checkpoint", "created_at"], json!({
            "id": string, "job": string, "tenant": string, "location": string, "checkpoint": integer, "created_at": integer,
        })),
        "SavepointList": object(&["id", "savepoints", "pending"], json!({
            "id": string,
            "savepoints": { "type": "array", "items": schema("Savepoint") },
            "pending": { "type": "array", "items": schema("SavepointRequest") },
        })),
        "CancelAccepted": object(&["id", "status"], json!({ "id": string, "status": status })),
        "SavepointAccepted": object(&["id", "savepoint"], json!({ "id": string, "savepoint": string })),
        "Rescale": object(&["parallelism"], json!({ "parallelism": parallelism })),
        "RescaleAccepted": object(&["id", "parallelism"], json!({ "id": string, "parallelism": parallelism })),
        "RescaleList": object(&["id", "rescales"], json!({
            "id": string,
            "rescales": { "type": "array", "items": object(&["at", "kind", "from", "to", "reasons"], json!({
                "at": integer,
                "kind": { "type": "string", "enum": ["RESCALE", "SUSPEND", "RESUME"] },
                "from": integer, "to": integer,
                "reasons": { "type": "array", "items": string },
            })) },
        })),
        "ExceptionList": object(&["id", "exceptions"], json!({
            "id": string,
            "exceptions": { "type": "array", "items": object(&["at", "vertex", "subtask", "code", "message"], json!({
                "at": integer, "vertex": nullable_integer, "subtask": nullable_integer,
                "code": { "type": ["string", "null"], "enum": codes.iter().map(|c| json!(c)).chain([Value::Null]).collect::<Vec<_>>() },
                "message": string,
            })) },
        })),
        "WorkerList": object(&["workers"], json!({ "workers": { "type": "array", "items": object(&["id", "address", "slots", "registered_at"], json!({
            "id": string, "address": string, "slots": integer, "registered_at": integer,
        })) } })),
        "Cluster": object(&["id", "leader", "term", "members", "last_applied"], json!({
            "id": integer, "leader": nullable_integer, "term": integer, "last_applied": nullable_integer,
            "members": { "type": "array", "items": object(&["id", "address", "voter"], json!({
                "id": integer, "address": string, "voter": { "type": "boolean" },
            })) },
        })),
        "CreateTenant": object(&["id"], json!({
            "id": { "type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$" },
            "display_name": { "oneOf": [schema("Name"), { "type": "null" }], "description": "Absent or null: the id" },
        })),
        "TenantCreated": object(&["id"], json!({ "id": string })),
        "CreateToken": object(&["role"], json!({ "role": { "type": "string", "enum": ["admin", "read-only"] } })),
        "CreatedToken": object(&["id", "tenant", "role", "secret"], json!({
            "id": string, "tenant": string, "role": { "type": "string", "enum": ["admin", "read-only"] },
            "secret": { "type": "string", "description": "Shown once; only its SHA-256 digest is stored" },
        })),
        "SetQuota": object(&[], quota_limits),
        "TenantQuota": object(
            &["tenant", "max_running_jobs", "max_slots", "submissions_per_minute", "submission_burst", "own", "running_jobs", "slots"],
            json!({
                "tenant": string, "max_running_jobs": integer, "max_slots": integer,
                "submissions_per_minute": { "type": "integer", "minimum": 1 },
                "submission_burst": { "type": "integer", "minimum": 1 },
                "own": {
                    "type": "object", "additionalProperties": false,
                    "description": "The tenant's own limits; the others are the operator's default",
                    "properties": { "max_running_jobs": integer, "max_slots": integer, "submissions_per_minute": { "type": "integer", "minimum": 1 } },
                },
                "running_jobs": integer, "slots": integer,
            }),
        ),
        "Health": object(&["status", "replica", "leader", "term"], json!({
            "status": { "type": "string", "enum": ["ok"] }, "replica": integer, "leader": integer, "term": integer,
        })),
    });
    if let (Some(all), Value::Object(more)) = (all.as_object_mut(), more) {
        all.extend(more);
    }
    all
}

/// `jobs::check_name` as a pattern (ECMA-262, which Rust's `regex` and Python's `re` read
/// alike): printable characters around at least one that is not blank either. Printable: not a
/// control (U+0000–U+001F, U+007F–U+009F), not a bidirectional override (U+202A–U+202E) or
/// isolate (U+2066–U+2069). Blank: the rest of Rust's `char::is_whitespace` (space, U+00A0,
/// U+1680, U+2000–U+200A, U+2028, U+2029, U+202F, U+205F, U+3000).
const NAME_PATTERN: &str = concat!(
    r"^[^\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]*",
    r"[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028-\u202f\u205f\u2066-\u2069\u3000]",
    r"[^\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]*$",
);

pub(crate) async fn document() -> Json<Value> {
    Json(openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every character, alone and inside a name, is accepted by the pattern exactly when the
    /// server accepts it.
    #[test]
    fn the_name_pattern_is_the_servers_rule() {
        let pattern = regex::Regex::new(NAME_PATTERN).expect("the pattern compiles");
        let accepted = |name: &str| super::super::jobs::check_name(name).is_ok();
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            for name in [c.to_string(), format!("a{c}b"), format!("{c} ")] {
                assert_eq!(pattern.is_match(&name), accepted(&name), "{name:?} (U+{:04X})", u32::from(c));
            }
        }
        for (name, valid) in [("q", true), (" q ", true), ("  ", false), ("", false), ("a\u{3000}", true)] {
            assert_eq!((pattern.is_match(name), accepted(name)), (valid, valid), "{name:?}");
        }
    }
}
