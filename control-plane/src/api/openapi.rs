//! `GET /api/v1/openapi.json`: the API described as an OpenAPI 3.1 document, written by hand
//! with `serde_json` (no code generation: the document is small, and a test checks that it lists
//! every route of [`super::routes`] with the right security).

use axum::Json;
use serde_json::{Value, json};

/// A reference to a schema of `components.schemas`.
fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn json_body(name: &str) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": schema(name) } } })
}

fn json_response(description: &str, name: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema(name) } } })
}

/// One operation. `public`: no token (`security: []`); otherwise a bearer token.
/// `errors` are the problem statuses it may answer besides 401, 500 and 503.
fn operation(summary: &str, public: bool, ok: (&str, Value), errors: &[&str]) -> Value {
    let mut responses = serde_json::Map::new();
    responses.insert(ok.0.to_owned(), ok.1);
    let mut statuses: Vec<&str> = errors.to_vec();
    if !public {
        statuses.push("401");
    }
    statuses.extend(["500", "503"]);
    for status in statuses {
        responses.insert(status.to_owned(), json!({ "$ref": "#/components/responses/Problem" }));
    }
    let security = if public { json!([]) } else { json!([{ "bearer": [] }]) };
    json!({ "summary": summary, "security": security, "responses": responses })
}

fn with_body(mut operation: Value, body: &str) -> Value {
    operation["requestBody"] = json_body(body);
    operation
}

fn job_id_parameter() -> Value {
    json!([{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }])
}

/// The document. Paths are relative to the server URL `/api/v1`.
pub(crate) fn openapi() -> Value {
    let job_read = |summary: &str, ok: &str| {
        let mut op = operation(summary, false, ("200", json_response("OK", ok)), &["403", "404"]);
        op["parameters"] = job_id_parameter();
        op
    };
    let job_action = |summary: &str, ok: &str| {
        let mut op = operation(summary, false, ("202", json_response("Accepted", ok)), &["403", "404", "409"]);
        op["parameters"] = job_id_parameter();
        op
    };
    let tenant_parameter = json!({ "name": "tenant", "in": "path", "required": true, "schema": { "type": "string" } });
    let token_parameter = json!({ "name": "token", "in": "path", "required": true, "schema": { "type": "string" } });
    let mut create_token = with_body(
        operation(
            "Create a token of a tenant (root token only); the secret is shown once",
            false,
            ("201", json_response("Created", "CreatedToken")),
            &["400", "403", "404", "413", "415"],
        ),
        "CreateToken",
    );
    create_token["parameters"] = json!([tenant_parameter.clone()]);
    let mut revoke_token = operation(
        "Revoke a token (root token only)",
        false,
        ("204", json!({ "description": "Revoked" })),
        &["403", "404"],
    );
    revoke_token["parameters"] = json!([tenant_parameter.clone(), token_parameter]);
    let mut quota = operation(
        "A tenant's quota: the limits in force, its own among them, and what its jobs hold (root token only)",
        false,
        ("200", json_response("OK", "TenantQuota")),
        &["403", "404"],
    );
    quota["parameters"] = json!([tenant_parameter.clone()]);
    let mut set_quota = with_body(
        operation(
            "Set a tenant's own quota; an absent limit is the operator's default (root token only)",
            false,
            ("200", json_response("OK", "TenantQuota")),
            &["400", "403", "404", "413", "415"],
        ),
        "SetQuota",
    );
    set_quota["parameters"] = json!([tenant_parameter]);
    let mut rescale = job_action("Ask for the job to run at another parallelism", "RescaleAccepted");
    rescale["requestBody"] = json_body("Rescale");
    if let Some(responses) = rescale["responses"].as_object_mut() {
        for status in ["400", "413", "415"] {
            responses.insert(status.to_owned(), json!({ "$ref": "#/components/responses/Problem" }));
        }
    }

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Weir control plane",
            "version": "1",
            "description": "Flink SQL jobs on Weir. Errors are application/problem+json with a stable `code`. \
                A tenant's token sees only that tenant's jobs; another tenant's job answers 404.",
        },
        "servers": [{ "url": "/api/v1" }],
        "paths": {
            "/jobs": {
                "post": with_body(
                    operation("Submit a SQL job (admin token)", false, ("201", json_response("Created", "JobCreated")),
                        &["400", "403", "409", "413", "415", "429"]),
                    "SubmitJob",
                ),
                "get": operation("The caller's tenant's jobs", false, ("200", json_response("OK", "JobList")), &["403"]),
            },
            "/jobs/{id}": { "get": job_read("A job: status, vertices with live metrics, last checkpoint", "JobDetail") },
            "/jobs/{id}/cancel": { "post": job_action("Cancel the job", "CancelAccepted") },
            "/jobs/{id}/stop": { "post": job_action("Stop the job with a savepoint", "SavepointAccepted") },
            "/jobs/{id}/savepoints": {
                "post": job_action("Trigger a savepoint of the running job", "SavepointAccepted"),
                "get": job_read("The job's savepoints, taken and pending", "SavepointList"),
            },
            "/jobs/{id}/checkpoints": { "get": job_read("The job's retained checkpoints, newest first", "CheckpointList") },
            "/jobs/{id}/rescale": { "post": rescale },
            "/jobs/{id}/exceptions": { "get": job_read("The job's recent failures", "ExceptionList") },
            "/workers": { "get": operation("Registered workers (any token)", false, ("200", json_response("OK", "WorkerList")), &[]) },
            "/cluster": { "get": operation("Raft members, leader and term (any token)", false, ("200", json_response("OK", "Cluster")), &[]) },
            "/tenants": {
                "post": with_body(
                    operation("Create a tenant (root token only)", false, ("201", json_response("Created", "TenantCreated")),
                        &["400", "403", "409", "413", "415"]),
                    "CreateTenant",
                ),
            },
            "/tenants/{tenant}/tokens": { "post": create_token },
            "/tenants/{tenant}/tokens/{token}": { "delete": revoke_token },
            "/tenants/{tenant}/quota": { "get": quota, "put": set_quota },
            "/healthz": { "get": operation("200 when this replica knows a leader, 503 otherwise", true, ("200", json_response("OK", "Health")), &[]) },
            "/metrics": {
                "get": operation("Prometheus text exposition", true,
                    ("200", json!({ "description": "OK", "content": { "text/plain": { "schema": { "type": "string" } } } })), &[]),
            },
            "/openapi.json": {
                "get": operation("This document", true, ("200", json!({ "description": "OK", "content": { "application/json": {} } })), &[]),
            },
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "responses": {
                "Problem": {
                    "description": "An error",
                    "content": { "application/problem+json": { "schema": schema("Problem") } },
                },
            },
            "schemas": schemas(),
        },
    })
}

fn schemas() -> Value {
    let string = json!({ "type": "string" });
    let integer = json!({ "type": "integer", "minimum": 0 });
    let nullable_integer = json!({ "type": ["integer", "null"] });
    let parallelism = json!({ "type": "integer", "minimum": 1, "maximum": super::MAX_PARALLELISM });
    // A tenant's own limit, or null for the operator's default; a rate of zero would never refill.
    let limit = json!({ "type": ["integer", "null"], "minimum": 0, "maximum": u32::MAX });
    let rate = json!({ "type": ["integer", "null"], "minimum": 1, "maximum": u32::MAX });
    // As the server checks them: a name of printable text, not all blank; a script not blank.
    let printable = r"[^\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]";
    let job_name = json!({
        "type": "string", "minLength": 1, "maxLength": super::jobs::MAX_NAME_CHARS,
        "pattern": format!(r"^{printable}*[^\s\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]{printable}*$"),
    });
    let script = json!({ "type": "string", "pattern": r"\S" });
    let status = json!({ "type": "string", "enum": ["CREATED", "RUNNING", "FAILING", "RESTARTING", "CANCELLING", "CANCELED", "FINISHED", "FAILED"] });
    let object = |required: &[&str], properties: Value| json!({ "type": "object", "required": required, "properties": properties });
    let list = |key: &str, item: Value| object(&[key], json!({ key: { "type": "array", "items": item } }));
    let checkpoint = object(
        &["id", "location", "parallelism", "state_size_bytes", "completed_at"],
        json!({ "id": integer, "location": string, "parallelism": integer, "state_size_bytes": integer, "completed_at": integer }),
    );
    let savepoint_request = object(
        &["id", "stop", "requested_at"],
        json!({ "id": string, "stop": { "type": "boolean" }, "requested_at": integer }),
    );
    json!({
        "Problem": object(&["type", "title", "status", "detail", "code"], json!({
            "type": string, "title": string, "status": integer, "detail": string,
            "code": { "type": "string", "description": "Stable, machine-readable error code" },
            "line": { "type": "integer", "description": "invalid-sql only: line of the error (1-based)" },
            "column": { "type": "integer", "description": "invalid-sql only: column of the error (1-based)" },
        })),
        "SubmitJob": {
            "type": "object", "required": ["name", "sql"], "additionalProperties": false,
            "properties": { "name": job_name, "sql": script, "parallelism": parallelism },
        },
        "JobCreated": object(&["id"], json!({ "id": string })),
        "JobSummary": object(&["id", "name", "status", "parallelism", "submitted_at"], json!({
            "id": string, "name": string, "status": status, "parallelism": integer, "submitted_at": integer,
        })),
        "JobList": list("jobs", schema("JobSummary")),
        "Vertex": object(&["id", "name", "parallelism"], json!({
            "id": integer, "name": string, "parallelism": integer,
            "records_in": nullable_integer, "records_out": nullable_integer,
            "backpressure": { "type": ["number", "null"], "minimum": 0, "maximum": 1 },
            "watermark": nullable_integer,
        })),
        "JobDetail": object(&["id", "name", "status", "parallelism", "sql", "config", "vertices", "last_checkpoint"], json!({
            "id": string, "name": string, "status": status, "parallelism": integer, "sql": string,
            "config": { "type": "object", "additionalProperties": string },
            "submitted_at": integer, "status_changed_at": integer,
            "vertices": { "type": ["array", "null"], "items": schema("Vertex") },
            "graph_error": { "type": ["string", "null"] },
            "last_checkpoint": { "oneOf": [schema("Checkpoint"), { "type": "null" }] },
            "pending_savepoints": { "type": "array", "items": schema("SavepointRequest") },
            "deployment": {
                "description": "The job's newest attempt and the worker it was deployed on; null until deployed.",
                "oneOf": [
                    object(&["attempt", "worker"], json!({
                        "attempt": integer,
                        "worker": string,
                        "members": { "type": "array", "items": string, "description": "Workers of the other parts of a spread attempt." },
                    })),
                    { "type": "null" },
                ],
            },
        })),
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
        "Rescale": { "type": "object", "required": ["parallelism"], "additionalProperties": false, "properties": { "parallelism": parallelism } },
        "RescaleAccepted": object(&["id", "parallelism"], json!({ "id": string, "parallelism": integer })),
        "ExceptionList": list("exceptions", object(&["at", "message"], json!({
            "at": integer, "vertex": nullable_integer, "subtask": nullable_integer, "message": string,
        }))),
        "WorkerList": list("workers", object(&["id", "address", "slots", "registered_at"], json!({
            "id": string, "address": string, "slots": integer, "registered_at": integer,
        }))),
        "Cluster": object(&["id", "leader", "term", "members"], json!({
            "id": integer, "leader": nullable_integer, "term": integer, "last_applied": nullable_integer,
            "members": { "type": "array", "items": object(&["id", "address", "voter"], json!({
                "id": integer, "address": string, "voter": { "type": "boolean" },
            })) },
        })),
        "CreateTenant": {
            "type": "object", "required": ["id"], "additionalProperties": false,
            "properties": { "id": { "type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$" }, "display_name": string },
        },
        "TenantCreated": object(&["id"], json!({ "id": string })),
        "SetQuota": {
            "type": "object", "additionalProperties": false,
            "properties": { "max_running_jobs": limit, "max_slots": limit, "submissions_per_minute": rate },
        },
        "TenantQuota": object(
            &["tenant", "max_running_jobs", "max_slots", "submissions_per_minute", "submission_burst", "own", "running_jobs", "slots"],
            json!({
                "tenant": string, "max_running_jobs": integer, "max_slots": integer,
                "submissions_per_minute": integer, "submission_burst": integer,
                "own": { "type": "object", "additionalProperties": false, "description": "The tenant's own limits; the others are the operator's default",
                    "properties": { "max_running_jobs": integer, "max_slots": integer, "submissions_per_minute": integer } },
                "running_jobs": integer, "slots": integer,
            }),
        ),
        "CreateToken": {
            "type": "object", "required": ["role"], "additionalProperties": false,
            "properties": { "role": { "type": "string", "enum": ["admin", "read-only"] } },
        },
        "CreatedToken": object(&["id", "tenant", "role", "secret"], json!({
            "id": string, "tenant": string, "role": string,
            "secret": { "type": "string", "description": "Shown once; only its SHA-256 digest is stored" },
        })),
        "Health": object(&["status", "replica", "leader", "term"], json!({ "status": string, "replica": integer, "leader": integer, "term": integer })),
    })
}

pub(crate) async fn document() -> Json<Value> {
    Json(openapi())
}
