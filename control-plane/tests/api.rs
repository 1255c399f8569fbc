//! The HTTP API over real HTTP: an axum server on 127.0.0.1:0 over a one-replica Raft cluster
//! (in-process network, `redb` storage in a temporary folder), driven with reqwest.
//!
//! Covers submission (valid and invalid SQL), listing and detail, every route against every kind
//! of caller, malformed requests, the OpenAPI document against the route table, the Prometheus
//! exposition, and a replica without quorum (writes 503, reads still answer).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::Method;
use serde_json::{Value, json};
use weir_control_plane::api::{self, Access, ApiState, PROBLEM_CONTENT_TYPE, RootToken};
use weir_control_plane::handle::{BoxFuture, ClusterView, ProposeError, ReplicaHandle};
use weir_control_plane::metadata::ids::UnixMillis;
use weir_control_plane::metadata::records::{CompletedCheckpoint, JobStatus, Quota};
use weir_control_plane::metadata::{Command, Response};
use weir_control_plane::raft::MetadataReader;
use weir_dataflow::ids::{CheckpointId, JobId};
use weir_dataflow::wire::ErrorCode;

mod common;
use common::{SingleReplica, WAIT};

const ROOT_SECRET: &str = "root-secret-for-tests-0123456789";

/// A script that plans: a generator into a blackhole, with a checkpoint interval set.
const VALID_SQL: &str = "SET 'execution.checkpointing.interval' = '10 s';
CREATE TABLE g (id BIGINT, k INT) WITH ('connector' = 'datagen', 'number-of-rows' = '10');
CREATE TABLE out (id BIGINT, k INT) WITH ('connector' = 'blackhole');
INSERT INTO out SELECT id, k FROM g WHERE k > 0;";

/// The same replica cut off from its (imagined) peers: it reads its applied metadata, but knows
/// no leader and can commit nothing.
struct WithoutQuorum(Arc<SingleReplica>);

impl ReplicaHandle for WithoutQuorum {
    fn reader(&self) -> MetadataReader {
        self.0.reader()
    }

    fn propose(&self, _command: Command) -> BoxFuture<'_, Result<Response, ProposeError>> {
        Box::pin(async { Err(ProposeError::NoQuorum("1 of 3 voters reachable".into())) })
    }

    fn sync_reads(&self) -> BoxFuture<'_, Result<(), ProposeError>> {
        Box::pin(async { Err(ProposeError::NoQuorum("1 of 3 voters reachable".into())) })
    }

    fn cluster(&self) -> ClusterView {
        ClusterView { leader: None, ..self.0.cluster() }
    }
}

/// An answer: status, content type, `Retry-After`/`WWW-Authenticate`, and the body (JSON when it
/// parses, else a string).
struct Answer {
    status: u16,
    content_type: String,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    /// Asserts a problem+json answer with `status` and `code`.
    fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!((self.status, self.code()), (status, code), "body: {}", self.body);
        self.assert_from_the_table();
    }

    /// Asserts a problem+json answer whose code is in the one table, answered with the table's
    /// status for it.
    fn assert_from_the_table(&self) {
        assert_eq!(self.content_type, PROBLEM_CONTENT_TYPE, "body: {}", self.body);
        for member in ["type", "title", "status", "detail", "code"] {
            assert!(!self.body[member].is_null(), "problem member {member} missing: {}", self.body);
        }
        let code = ErrorCode::parse(self.code()).unwrap_or_else(|| panic!("{} is not in the table", self.body));
        assert_eq!(self.status, code.http_status(), "{code} is answered with another status: {}", self.body);
        assert_eq!(self.body["status"], self.status);
    }
}

/// An API server over a replica, and an HTTP client.
struct Server {
    base: String,
    client: reqwest::Client,
}

/// A quota no test but the quota tests meets: they submit dozens of jobs within a second.
const ROOMY: Quota = Quota { max_running_jobs: 1000, max_slots: 100_000, submissions_per_minute: 100_000 };

impl Server {
    async fn start(replica: Arc<dyn ReplicaHandle>) -> Server {
        Self::start_with(replica, ROOMY).await
    }

    /// A server whose operator's default quota is `quota`.
    async fn start_with(replica: Arc<dyn ReplicaHandle>, quota: Quota) -> Server {
        let state = ApiState::metadata_only(replica)
            .with_root_token(RootToken::from_secret(ROOT_SECRET).expect("long enough"))
            .with_propose_timeout(WAIT)
            .with_quota(quota);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let address = listener.local_addr().expect("bound address");
        tokio::spawn(async move { axum::serve(listener, api::router(state)).await });
        Server { base: format!("http://{address}"), client: reqwest::Client::new() }
    }

    /// A POST that declares a JSON body of `length` bytes and sends none of it: a body over the
    /// limit is refused from the headers alone. (A client that streams megabytes the server
    /// will not read may see the connection reset before the answer, so this speaks HTTP/1.1
    /// over a raw socket.)
    async fn declaring_a_body(&self, path: &str, token: &str, length: usize) -> Answer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let address = self.base.trim_start_matches("http://");
        let mut socket = tokio::net::TcpStream::connect(address).await.expect("connects");
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        );
        socket.write_all(head.as_bytes()).await.expect("headers sent");
        let mut received = Vec::new();
        let mut buffer = [0u8; 4096];
        let (status, headers, body) = loop {
            let n =
                tokio::time::timeout(WAIT, socket.read(&mut buffer)).await.expect("an answer in time").expect("reads");
            assert!(n > 0, "the connection closed before a whole answer: {}", String::from_utf8_lossy(&received));
            received.extend_from_slice(&buffer[..n]);
            let text = String::from_utf8_lossy(&received).into_owned();
            let Some((head, body)) = text.split_once("\r\n\r\n") else { continue };
            let mut lines = head.lines();
            let status: u16 =
                lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).expect("a status line");
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect();
            let length =
                headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
            if body.len() >= length {
                break (status, headers, body[..length].to_owned());
            }
        };
        let mut header_map = reqwest::header::HeaderMap::new();
        for (name, value) in &headers {
            if let (Ok(name), Ok(value)) = (name.parse::<reqwest::header::HeaderName>(), value.parse()) {
                header_map.insert(name, value);
            }
        }
        let content_type =
            headers.iter().find(|(k, _)| k == "content-type").map(|(_, v)| v.clone()).unwrap_or_default();
        let body = serde_json::from_str(&body).unwrap_or(Value::String(body));
        Answer { status, content_type, headers: header_map, body }
    }

    async fn send(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Answer {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        answer(request).await
    }

    async fn get(&self, path: &str, token: &str) -> Answer {
        self.send(Method::GET, path, Some(token), None).await
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> Answer {
        self.send(Method::POST, path, Some(token), Some(body)).await
    }
}

async fn answer(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let content_type =
        headers.get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let text = response.text().await.expect("a body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer { status, content_type, headers, body }
}

/// The statuses the OpenAPI document lists for `method` on the route `path` (axum's template).
async fn documented_statuses(server: &Server) -> impl Fn(&Method, &str) -> BTreeSet<u16> {
    let document = server.send(Method::GET, "/api/v1/openapi.json", None, None).await.body;
    move |method: &Method, path: &str| {
        let path = path.strip_prefix(api::API_PREFIX).expect("under the prefix");
        let operation = &document["paths"][path][method.as_str().to_lowercase()];
        let responses = operation["responses"].as_object().unwrap_or_else(|| panic!("{method} {path} undocumented"));
        responses.keys().map(|status| status.parse().expect("a status")).collect()
    }
}

/// A running replica with its API, two tenants and their tokens.
struct Fixture {
    replica: Arc<SingleReplica>,
    server: Server,
    acme_admin: String,
    acme_reader: String,
    globex_admin: String,
    next_tenant: AtomicU64,
}

impl Fixture {
    async fn start() -> Fixture {
        Self::start_with(ROOMY).await
    }

    /// With `quota` as the operator's default quota.
    async fn start_with(quota: Quota) -> Fixture {
        let replica = SingleReplica::start().await;
        let server = Server::start_with(replica.clone(), quota).await;
        let mut tokens = Vec::new();
        for (tenant, role) in [("acme", "admin"), ("acme", "read-only"), ("globex", "admin")] {
            let created = server.post("/api/v1/tenants", ROOT_SECRET, json!({ "id": tenant })).await;
            assert!(created.status == 201 || created.code() == "tenant-exists", "{}", created.body);
            let token =
                server.post(&format!("/api/v1/tenants/{tenant}/tokens"), ROOT_SECRET, json!({ "role": role })).await;
            assert_eq!(token.status, 201, "{}", token.body);
            tokens.push(token.body["secret"].as_str().expect("a secret").to_owned());
        }
        let [acme_admin, acme_reader, globex_admin] = tokens.try_into().expect("three tokens");
        Fixture { replica, server, acme_admin, acme_reader, globex_admin, next_tenant: AtomicU64::new(0) }
    }

    async fn submit(&self, token: &str, body: Value) -> Answer {
        self.server.post("/api/v1/jobs", token, body).await
    }

    /// Submits a valid job for acme and returns its id.
    async fn acme_job(&self) -> String {
        let created = self.submit(&self.acme_admin, json!({ "name": "q", "sql": VALID_SQL, "parallelism": 2 })).await;
        assert_eq!(created.status, 201, "{}", created.body);
        created.body["id"].as_str().expect("an id").to_owned()
    }

    /// Does what a job master would: moves the job to `status`.
    async fn set_status(&self, job: &str, status: JobStatus) {
        let command = Command::SetJobStatus { job: JobId(job.into()), status, at: UnixMillis(1) };
        assert_eq!(self.replica.propose(command).await, Ok(Response::Done));
    }

    fn job_status(&self, job: &str) -> Option<(JobStatus, u32)> {
        self.replica.reader().read(|m| m.job(&JobId(job.into())).map(|j| (j.status, j.desired_parallelism)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitted_jobs_are_listed_and_detailed_with_their_graph() {
    let fixture = Fixture::start().await;
    let server = &fixture.server;
    let id = fixture.acme_job().await;
    assert!(id.starts_with("job-"), "{id}");

    let list = server.get("/api/v1/jobs", &fixture.acme_reader).await;
    assert_eq!(list.status, 200);
    assert_eq!(
        list.body["jobs"],
        json!([{
            "id": id, "name": "q", "status": "CREATED", "parallelism": 2,
            "submitted_at": list.body["jobs"][0]["submitted_at"],
        }])
    );
    let other = server.get("/api/v1/jobs", &fixture.globex_admin).await;
    assert_eq!(other.body["jobs"], json!([]), "a tenant sees only its own jobs");

    let detail = server.get(&format!("/api/v1/jobs/{id}"), &fixture.acme_reader).await;
    assert_eq!(detail.status, 200, "{}", detail.body);
    assert_eq!((detail.body["status"].as_str(), detail.body["parallelism"].as_u64()), (Some("CREATED"), Some(2)));
    assert_eq!(detail.body["sql"], VALID_SQL);
    // The script's SET is kept; parallelism lives in `parallelism` only.
    assert_eq!(detail.body["config"], json!({ "execution.checkpointing.interval": "10 s" }));
    let vertices = detail.body["vertices"].as_array().expect("the graph plans");
    assert!(!vertices.is_empty());
    for vertex in vertices {
        assert_eq!(vertex["parallelism"], 2, "{vertex}");
        assert!(vertex["name"].as_str().is_some_and(|name| !name.is_empty()));
        for metric in ["records_in", "records_out", "backpressure", "watermark"] {
            assert_eq!(vertex[metric], Value::Null, "no live metrics yet: {vertex}");
        }
    }
    assert!(vertices.iter().any(|v| v["name"].as_str().is_some_and(|n| n.starts_with("Source"))));
    assert_eq!(detail.body["last_checkpoint"], Value::Null);

    // A checkpoint committed by the (future) coordinator shows up as the last one.
    fixture.set_status(&id, JobStatus::Running).await;
    for checkpoint in [1, 2] {
        let command = Command::CommitCheckpoint {
            job: JobId(id.clone()),
            checkpoint: CompletedCheckpoint {
                id: CheckpointId(checkpoint),
                location: format!("file:///chk-{checkpoint}"),
                parallelism: 2,
                state_size_bytes: 10,
                completed_at: UnixMillis(checkpoint),
            },
            retain: 3,
        };
        assert!(matches!(fixture.replica.propose(command).await, Ok(Response::CheckpointCommitted { .. })));
    }
    let detail = server.get(&format!("/api/v1/jobs/{id}"), &fixture.acme_admin).await;
    assert_eq!(detail.body["last_checkpoint"]["id"], 2);
    let checkpoints = server.get(&format!("/api/v1/jobs/{id}/checkpoints"), &fixture.acme_reader).await;
    let ids: Vec<&Value> =
        checkpoints.body["checkpoints"].as_array().expect("a list").iter().map(|c| &c["id"]).collect();
    assert_eq!(ids, [&json!(2), &json!(1)], "newest first");

    // Without a parallelism, the script's SET decides; the request's pins it otherwise.
    let set_sql = format!("SET 'parallelism.default' = '3';\n{VALID_SQL}");
    let by_script = fixture.submit(&fixture.acme_admin, json!({ "name": "s", "sql": set_sql })).await;
    let by_script_id = by_script.body["id"].as_str().expect("created").to_owned();
    assert_eq!(fixture.job_status(&by_script_id), Some((JobStatus::Created, 3)));
    let pinned = fixture.submit(&fixture.acme_admin, json!({ "name": "p", "sql": set_sql, "parallelism": 5 })).await;
    let pinned_id = pinned.body["id"].as_str().expect("created").to_owned();
    assert_eq!(fixture.job_status(&pinned_id), Some((JobStatus::Created, 5)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_sql_is_refused_with_its_line_and_column() {
    let fixture = Fixture::start().await;
    let broken = "CREATE TABLE g (id BIGINT) WITH ('connector' = 'datagen');\nINSERT INTO nowhere SELECT id FROM g;";
    let refused = fixture.submit(&fixture.acme_admin, json!({ "name": "bad", "sql": broken })).await;
    refused.assert_problem(400, "invalid-sql");
    assert_eq!(refused.body["line"], 2, "{}", refused.body);
    assert!(refused.body["column"].as_u64().is_some_and(|c| c >= 1), "{}", refused.body);
    assert!(refused.body["detail"].as_str().is_some_and(|d| d.starts_with("2:")), "{}", refused.body);

    let syntax = fixture.submit(&fixture.acme_admin, json!({ "name": "bad", "sql": "SELEC 1" })).await;
    syntax.assert_problem(400, "invalid-sql");
    assert_eq!(syntax.body["line"], 1);

    let bare_select = "CREATE TABLE g (id BIGINT) WITH ('connector' = 'datagen');\nSELECT id FROM g;";
    fixture
        .submit(&fixture.acme_admin, json!({ "name": "q", "sql": bare_select }))
        .await
        .assert_problem(400, "no-sink");
    let only_ddl = "CREATE TABLE g (id BIGINT) WITH ('connector' = 'datagen');";
    fixture.submit(&fixture.acme_admin, json!({ "name": "q", "sql": only_ddl })).await.assert_problem(400, "no-sink");
    let too_parallel = format!("SET 'parallelism.default' = '5000';\n{VALID_SQL}");
    let refused = fixture.submit(&fixture.acme_admin, json!({ "name": "q", "sql": too_parallel })).await;
    refused.assert_problem(400, "invalid-parallelism");
    assert_eq!(fixture.replica.reader().read(|m| m.jobs().count()), 0, "nothing refused was proposed");
}

/// What a caller gets from a route, by the route's access class.
fn expected(access: Access, job_route: bool, caller: &str) -> &'static str {
    match (access, caller) {
        (Access::Public, _) => "2xx",
        (_, "none") => "401",
        (Access::AnyToken, _) => "2xx",
        (Access::TenantRead | Access::TenantWrite, "root") => "403",
        (Access::TenantRead | Access::TenantWrite, "other-admin") if job_route => "404",
        (Access::TenantRead | Access::TenantWrite, "other-admin") => "2xx",
        (Access::TenantRead, "read-only" | "admin") => "2xx",
        (Access::TenantWrite, "read-only") => "403",
        (Access::TenantWrite, "admin") => "2xx",
        (Access::Root, "root") => "2xx",
        (Access::Root, _) => "403",
        (access, caller) => panic!("no expectation for {access:?} and {caller}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_caller_by_its_access() {
    let fixture = Fixture::start().await;
    let server = &fixture.server;
    let documented = documented_statuses(server).await;
    let mut checked = 0;
    for route in api::routes() {
        // A fresh running job (and tenant, and token) per route: the admin's call may change it.
        let job = fixture.acme_job().await;
        fixture.set_status(&job, JobStatus::Running).await;
        let tenant = format!("t{}", fixture.next_tenant.fetch_add(1, Ordering::SeqCst));
        let token = server.post("/api/v1/tenants/acme/tokens", ROOT_SECRET, json!({ "role": "read-only" })).await;
        let token_id = token.body["id"].as_str().expect("a token").to_owned();
        let path = route.path.replace("{id}", &job).replace("{tenant}", "acme").replace("{token}", &token_id);
        let body = match (route.method.as_str(), route.path) {
            ("POST", "/api/v1/jobs") => Some(json!({ "name": "m", "sql": VALID_SQL })),
            ("POST", "/api/v1/jobs/{id}/rescale") => Some(json!({ "parallelism": 3 })),
            ("POST", "/api/v1/tenants") => Some(json!({ "id": tenant })),
            ("POST", "/api/v1/tenants/{tenant}/tokens") => Some(json!({ "role": "admin" })),
            ("PUT", "/api/v1/tenants/{tenant}/quota") => {
                Some(json!({ "max_running_jobs": 1000, "max_slots": 100_000 }))
            }
            _ => None,
        };
        let callers = [
            ("none", None),
            ("other-admin", Some(fixture.globex_admin.as_str())),
            ("read-only", Some(fixture.acme_reader.as_str())),
            ("root", Some(ROOT_SECRET)),
            ("admin", Some(fixture.acme_admin.as_str())),
        ];
        for (caller, token) in callers {
            let answer = server.send(route.method.clone(), &path, token, body.clone()).await;
            let statuses = documented(&route.method, route.path);
            assert!(
                statuses.contains(&answer.status),
                "{} {} answered {}, undocumented",
                route.method,
                route.path,
                answer.status
            );
            let want = expected(route.access, route.path.contains("{id}"), caller);
            let got = if (200..300).contains(&answer.status) { "2xx".to_owned() } else { answer.status.to_string() };
            assert_eq!(got, want, "{} {} as {caller}: {}", route.method, route.path, answer.body);
            if answer.status >= 400 {
                answer.assert_from_the_table();
            }
            if answer.status == 401 {
                let challenge = answer.headers.get(reqwest::header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok());
                assert!(challenge.is_some_and(|c| c.starts_with("Bearer")), "{challenge:?}");
            }
            if answer.status == 404 {
                // Another tenant's job answers exactly as a job that does not exist.
                let missing_path = route.path.replace("{id}", "job-does-not-exist");
                let missing = server.send(route.method.clone(), &missing_path, token, body.clone()).await;
                assert_eq!(missing.status, 404);
                let strip = |body: &Value| body.to_string().replace(&job, "ID").replace("job-does-not-exist", "ID");
                assert_eq!(strip(&answer.body), strip(&missing.body));
            }
            checked += 1;
        }
    }
    assert_eq!(checked, api::routes().len() * 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_actions_record_the_desired_change() {
    let fixture = Fixture::start().await;
    let server = &fixture.server;
    let admin = fixture.acme_admin.as_str();

    // A job that never ran is cancelled at once; a terminal job refuses further changes.
    let created = fixture.acme_job().await;
    let savepoint = server.post(&format!("/api/v1/jobs/{created}/savepoints"), admin, json!({})).await;
    savepoint.assert_problem(409, "job-not-running");
    let cancelled = server.post(&format!("/api/v1/jobs/{created}/cancel"), admin, json!({})).await;
    assert_eq!((cancelled.status, cancelled.body["status"].as_str()), (202, Some("CANCELED")));
    server
        .post(&format!("/api/v1/jobs/{created}/cancel"), admin, json!({}))
        .await
        .assert_problem(409, "job-terminated");

    // A running job: rescale, savepoint, stop with savepoint, cancel.
    let running = fixture.acme_job().await;
    fixture.set_status(&running, JobStatus::Running).await;
    let rescaled = server.post(&format!("/api/v1/jobs/{running}/rescale"), admin, json!({ "parallelism": 7 })).await;
    assert_eq!(rescaled.status, 202, "{}", rescaled.body);
    assert_eq!(fixture.job_status(&running), Some((JobStatus::Running, 7)));
    let detail = server.get(&format!("/api/v1/jobs/{running}"), admin).await;
    assert!(detail.body["vertices"].as_array().expect("vertices").iter().all(|v| v["parallelism"] == 7));

    let triggered = server.post(&format!("/api/v1/jobs/{running}/savepoints"), admin, json!({})).await;
    assert_eq!(triggered.status, 202);
    let stopped = server.post(&format!("/api/v1/jobs/{running}/stop"), admin, json!({})).await;
    assert_eq!(stopped.status, 202);
    let savepoints = server.get(&format!("/api/v1/jobs/{running}/savepoints"), &fixture.acme_reader).await;
    let pending: Vec<(Value, Value)> = savepoints.body["pending"]
        .as_array()
        .expect("pending requests")
        .iter()
        .map(|r| (r["id"].clone(), r["stop"].clone()))
        .collect();
    assert_eq!(
        pending,
        [(triggered.body["savepoint"].clone(), json!(false)), (stopped.body["savepoint"].clone(), json!(true))]
    );
    assert_eq!(savepoints.body["savepoints"], json!([]));

    let cancelling = server.post(&format!("/api/v1/jobs/{running}/cancel"), admin, json!({})).await;
    assert_eq!(cancelling.body["status"], "CANCELLING");
    let exceptions = server.get(&format!("/api/v1/jobs/{running}/exceptions"), admin).await;
    assert_eq!(exceptions.body["exceptions"], json!([]));

    // Revoked tokens stop working.
    let token = server.post("/api/v1/tenants/acme/tokens", ROOT_SECRET, json!({ "role": "admin" })).await;
    let (token_id, secret) = (token.body["id"].as_str().expect("id"), token.body["secret"].as_str().expect("secret"));
    assert_eq!(server.get("/api/v1/jobs", secret).await.status, 200);
    let revoked =
        server.send(Method::DELETE, &format!("/api/v1/tenants/acme/tokens/{token_id}"), Some(ROOT_SECRET), None).await;
    assert_eq!(revoked.status, 204);
    server.get("/api/v1/jobs", secret).await.assert_problem(401, "unauthorized");
    let again =
        server.send(Method::DELETE, &format!("/api/v1/tenants/acme/tokens/{token_id}"), Some(ROOT_SECRET), None).await;
    again.assert_problem(404, "unknown-token");
    let unknown_tenant = server.post("/api/v1/tenants/nobody/tokens", ROOT_SECRET, json!({ "role": "admin" })).await;
    unknown_tenant.assert_problem(404, "unknown-tenant");
    server.post("/api/v1/tenants", ROOT_SECRET, json!({ "id": "acme" })).await.assert_problem(409, "tenant-exists");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_problems_not_panics() {
    let fixture = Fixture::start().await;
    let server = &fixture.server;
    let admin = fixture.acme_admin.as_str();
    let job = fixture.acme_job().await;
    fixture.set_status(&job, JobStatus::Running).await;
    let url = |path: &str| format!("{}{path}", server.base);
    let raw = |path: &str, content_type: &str, body: &str| {
        server.client.post(url(path)).bearer_auth(admin).header("content-type", content_type).body(body.to_owned())
    };

    answer(raw("/api/v1/jobs", "application/json", "{\"name\": ")).await.assert_problem(400, "invalid-request");
    answer(raw("/api/v1/jobs", "text/plain", "{}")).await.assert_problem(415, "unsupported-media-type");
    answer(server.client.post(url("/api/v1/jobs")).bearer_auth(admin))
        .await
        .assert_problem(415, "unsupported-media-type");
    for body in [
        json!({ "name": "q" }),
        json!({ "sql": VALID_SQL }),
        json!({ "name": "q", "sql": VALID_SQL, "paralelism": 2 }),
        json!({ "name": 5, "sql": VALID_SQL }),
        json!({ "name": "q", "sql": VALID_SQL, "parallelism": -1 }),
        json!({ "name": "q", "sql": VALID_SQL, "parallelism": 1.5 }),
        json!({ "name": "q", "sql": VALID_SQL, "parallelism": 99_999_999_999u64 }),
        json!([1, 2]),
        // serde would read a struct from an array of its fields; the API reads objects only.
        json!(["q", VALID_SQL]),
        json!(["q", VALID_SQL, 2]),
    ] {
        fixture.submit(admin, body).await.assert_problem(400, "invalid-request");
    }
    // JSON Schema's integers include 2.0; the document says integer, so the server reads it.
    let whole = fixture.submit(admin, json!({ "name": "q", "sql": VALID_SQL, "parallelism": 2.0 })).await;
    assert_eq!(whole.status, 201, "{}", whole.body);
    // A path that does not decode names nothing.
    server.get("/api/v1/jobs/%FF", admin).await.assert_problem(404, "not-found");
    for parallelism in [0, 1025] {
        let body = json!({ "name": "q", "sql": VALID_SQL, "parallelism": parallelism });
        fixture.submit(admin, body).await.assert_problem(400, "invalid-parallelism");
        let rescale =
            server.post(&format!("/api/v1/jobs/{job}/rescale"), admin, json!({ "parallelism": parallelism })).await;
        rescale.assert_problem(400, "invalid-parallelism");
    }
    fixture.submit(admin, json!({ "name": " ", "sql": VALID_SQL })).await.assert_problem(400, "invalid-name");
    // Names are printable: `weir job list` must not print a terminal's escapes, line breaks or
    // text reversed by a bidirectional override.
    for name in ["red\u{1b}[31mjob", "two\nlines", "tab\there", "evil\u{202e}txt.exe", "bell\u{7}", &"n".repeat(201)] {
        let refused = fixture.submit(admin, json!({ "name": name, "sql": VALID_SQL })).await;
        refused.assert_problem(400, "invalid-name");
    }
    fixture.submit(admin, json!({ "name": "q", "sql": "" })).await.assert_problem(400, "invalid-sql");
    server.post(&format!("/api/v1/jobs/{job}/rescale"), admin, json!({})).await.assert_problem(400, "invalid-request");

    let declared = server.declaring_a_body("/api/v1/jobs", admin, 2 * api::MAX_BODY_BYTES).await;
    declared.assert_problem(413, "body-too-large");

    for header in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "token-without-scheme", "Bearer wrong-secret"] {
        let request = server.client.get(url("/api/v1/jobs")).header("authorization", header);
        answer(request).await.assert_problem(401, "unauthorized");
    }
    let tenant = server.post("/api/v1/tenants", ROOT_SECRET, json!({ "id": "Not Valid" })).await;
    tenant.assert_problem(400, "invalid-tenant-id");
    let role = server.post("/api/v1/tenants/acme/tokens", ROOT_SECRET, json!({ "role": "owner" })).await;
    role.assert_problem(400, "invalid-request");
    for quota in [
        json!({ "submissions_per_minute": 0 }),
        json!({ "max_slots": -1 }),
        json!({ "max_slots": 4_294_967_296u64 }),
        json!({ "max_running_jobs": "5" }),
        json!({ "max_jobs": 5 }),
    ] {
        let refused = server.send(Method::PUT, "/api/v1/tenants/acme/quota", Some(ROOT_SECRET), Some(quota)).await;
        refused.assert_problem(400, "invalid-request");
    }

    server.get("/api/v1/nothing-here", admin).await.assert_problem(404, "not-found");
    server.send(Method::PUT, "/api/v1/jobs", Some(admin), None).await.assert_problem(405, "method-not-allowed");
    // The replica is still serving after all of that.
    assert_eq!(server.get("/api/v1/jobs", admin).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_every_route_with_its_security() {
    let fixture = Fixture::start().await;
    let document = fixture.server.send(Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(document.status, 200);
    assert_eq!(document.body["openapi"], "3.1.0");
    assert_eq!(document.body["servers"][0]["url"], api::API_PREFIX);
    let paths = document.body["paths"].as_object().expect("paths");

    let mut routed = BTreeSet::new();
    for route in api::routes() {
        let path = route.path.strip_prefix(api::API_PREFIX).expect("every route is under the prefix");
        let method = route.method.as_str().to_lowercase();
        let operation = &paths.get(path).unwrap_or_else(|| panic!("{path} is not documented"))[&method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        let public = operation["security"] == json!([]);
        assert_eq!(public, route.access == Access::Public, "security of {method} {path}");
        for (status, response) in operation["responses"].as_object().expect("responses") {
            if let Some(reference) = response["$ref"].as_str() {
                let name = reference.rsplit('/').next().expect("a name");
                assert!(document.body["components"]["responses"][name].is_object(), "{status} of {path}: {reference}");
            }
        }
        routed.insert((method, path.to_owned()));
    }
    // And nothing documented that the router does not serve.
    let documented: BTreeSet<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| item.as_object().expect("a path item").keys().map(|m| (m.clone(), path.clone())))
        .filter(|(method, _)| method != "parameters")
        .collect();
    assert_eq!(documented, routed);

    // Every schema reference resolves.
    let text = document.body.to_string();
    for reference in text.split("\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().expect("a name");
        assert!(document.body["components"]["schemas"][name].is_object(), "dangling schema {name}");
    }
    assert_openapi_is_as_strict_as_the_server(&document.body);
}

/// The rules every operation of the document keeps (see `openapi.rs`).
fn assert_openapi_is_as_strict_as_the_server(document: &Value) {
    let components = &document["components"];
    assert_eq!(components["securitySchemes"]["bearer"]["scheme"], "bearer");
    let resolve = |value: &Value, kind: &str| -> Value {
        match value["$ref"].as_str() {
            Some(reference) => {
                let name = reference.strip_prefix(&format!("#/components/{kind}/")).expect("a local reference");
                components[kind][name].clone()
            }
            None => value.clone(),
        }
    };
    // Objects are closed, request and response alike.
    for (name, schema) in components["schemas"].as_object().expect("schemas") {
        if schema["type"] == "object" {
            assert_eq!(schema["additionalProperties"], false, "schema {name} is open");
        }
    }
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
    assert_eq!(components["schemas"]["Problem"]["properties"]["code"]["enum"], json!(codes));

    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            let name = format!("{method} {path}");
            let responses = operation["responses"].as_object().expect("responses");
            let bearer = operation["security"] != json!([]);
            let mut must: Vec<&str> = vec!["500", "503"];
            if bearer {
                must.push("401");
            }
            if operation["requestBody"].is_object() {
                must.extend(["400", "413", "415"]);
                let body = resolve(&operation["requestBody"]["content"]["application/json"]["schema"], "schemas");
                assert_eq!(body["additionalProperties"], false, "{name}: the server refuses unknown fields");
            }
            for status in must {
                assert!(responses.contains_key(status), "{name} does not document {status}");
            }
            for (status, response) in responses {
                let response = resolve(response, "responses");
                if status.as_str() >= "400" {
                    let schema = &response["content"][PROBLEM_CONTENT_TYPE]["schema"]["$ref"];
                    assert_eq!(schema, "#/components/schemas/Problem", "{name} {status}");
                } else {
                    assert!(response["content"].is_object() || status == "204", "{name} {status} has no schema");
                }
                let header = |header: &str| response["headers"][header]["required"] == true;
                match status.as_str() {
                    "401" => assert!(header("WWW-Authenticate"), "{name} 401"),
                    "429" | "503" => assert!(header("Retry-After"), "{name} {status}"),
                    _ => {}
                }
            }
            // Path parameters are exactly the path's captures.
            let captures: BTreeSet<&str> = path.split('{').skip(1).filter_map(|p| p.split('}').next()).collect();
            let parameters: BTreeSet<&str> = operation["parameters"]
                .as_array()
                .map(|list| list.iter().filter_map(|p| p["name"].as_str()).collect())
                .unwrap_or_default();
            assert_eq!(parameters, captures, "{name}");
        }
    }
    // Links name operations that exist, with exactly those operations' parameters.
    let mut parameters_of = BTreeMap::new();
    for item in document["paths"].as_object().expect("paths").values() {
        for operation in item.as_object().expect("a path item").values() {
            let id = operation["operationId"].as_str().expect("every operation has an id");
            let names: BTreeSet<String> = operation["parameters"]
                .as_array()
                .map(|list| list.iter().filter_map(|p| p["name"].as_str().map(str::to_owned)).collect())
                .unwrap_or_default();
            assert!(parameters_of.insert(id.to_owned(), names).is_none(), "operation id {id} twice");
        }
    }
    let mut links = 0;
    for item in document["paths"].as_object().expect("paths").values() {
        for operation in item.as_object().expect("a path item").values() {
            for response in operation["responses"].as_object().expect("responses").values() {
                for (name, link) in response["links"].as_object().into_iter().flatten() {
                    let target = link["operationId"].as_str().expect("a link names its operation");
                    let given: BTreeSet<String> =
                        link["parameters"].as_object().expect("parameters").keys().cloned().collect();
                    assert_eq!(parameters_of.get(target), Some(&given), "link {name}");
                    links += 1;
                }
            }
        }
    }
    assert!(links >= 12, "{links} links");
    let submit = &document["paths"]["/jobs"]["post"]["responses"];
    for status in ["201", "403", "429"] {
        assert!(submit[status].is_object(), "POST /jobs does not document {status}");
    }
}

/// Parses the Prometheus text format (0.0.4): every sample belongs to a family declared with
/// `# TYPE` before it, labels are `name="value"` pairs, values are numbers. Answers each sample
/// line's series (name and labels as written) with its value.
fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    let is_name = |name: &str| {
        !name.is_empty()
            && name
                .chars()
                .enumerate()
                .all(|(i, c)| c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit()))
    };
    let mut types = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in text.lines().filter(|line| !line.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(is_name(name) && ["gauge", "counter"].contains(&kind), "{line}");
            assert!(types.insert(name.to_owned(), kind.to_owned()).is_none(), "family declared twice: {line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            assert!(rest.split_once(' ').is_some_and(|(name, help)| is_name(name) && !help.is_empty()), "{line}");
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment: {line}");
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line}"));
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line}"));
                let mut rest = labels;
                while !rest.is_empty() {
                    let (label, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("bad label: {line}"));
                    assert!(is_name(label), "{line}");
                    // The value ends at the first quote not escaped by a backslash.
                    let mut end = None;
                    let mut escaped = false;
                    for (i, c) in after.char_indices() {
                        match (c, escaped) {
                            ('\\', false) => escaped = true,
                            ('"', false) => {
                                end = Some(i);
                                break;
                            }
                            _ => escaped = false,
                        }
                    }
                    let end = end.unwrap_or_else(|| panic!("unterminated label value: {line}"));
                    rest = after[end + 1..].strip_prefix(',').unwrap_or(&after[end + 1..]);
                }
                name
            }
            None => series,
        };
        assert!(is_name(name), "{line}");
        assert!(types.contains_key(name), "sample before its TYPE: {line}");
        assert!(samples.insert(series.to_owned(), value).is_none(), "series twice: {line}");
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_exposition_parses_and_counts() {
    let fixture = Fixture::start().await;
    let server = &fixture.server;
    let job = fixture.acme_job().await;
    fixture.set_status(&job, JobStatus::Running).await;
    fixture.acme_job().await;
    server.get("/api/v1/jobs", &fixture.acme_reader).await;
    server.send(Method::GET, "/api/v1/jobs", None, None).await;
    let register = Command::RegisterWorker {
        worker: weir_dataflow::ids::WorkerId("w1".into()),
        address: "127.0.0.1:1".into(),
        slots: 4,
        at: UnixMillis(1),
    };
    assert_eq!(fixture.replica.propose(register).await, Ok(Response::Done));

    let metrics = server.send(Method::GET, "/api/v1/metrics", None, None).await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.content_type.starts_with("text/plain; version=0.0.4"), "{}", metrics.content_type);
    let text = metrics.body.as_str().expect("text");
    let samples = parse_exposition(text);
    let value = |series: &str| samples.get(series).copied().unwrap_or_else(|| panic!("{series} missing:\n{text}"));
    assert_eq!(value(r#"weir_jobs{status="RUNNING"}"#), 1.0);
    assert_eq!(value(r#"weir_jobs{status="CREATED"}"#), 1.0);
    assert_eq!(value(r#"weir_jobs{status="FAILED"}"#), 0.0);
    assert_eq!(value("weir_workers"), 1.0);
    assert_eq!(value("weir_worker_slots"), 4.0);
    assert_eq!(value("weir_raft_is_leader"), 1.0);
    assert!(value("weir_raft_term") >= 1.0);
    assert!(value("weir_raft_last_applied_index") >= 1.0);
    assert_eq!(value(r#"weir_api_requests_total{route="/api/v1/jobs",method="GET",status_class="2xx"}"#), 1.0);
    assert_eq!(value(r#"weir_api_requests_total{route="/api/v1/jobs",method="GET",status_class="4xx"}"#), 1.0);
    assert_eq!(value(r#"weir_api_requests_total{route="/api/v1/jobs",method="POST",status_class="2xx"}"#), 2.0);

    let health = server.send(Method::GET, "/api/v1/healthz", None, None).await;
    assert_eq!((health.status, health.body["leader"].as_u64()), (200, Some(1)));
    let cluster = server.get("/api/v1/cluster", &fixture.acme_reader).await;
    assert_eq!(cluster.body["leader"], 1);
    assert_eq!(cluster.body["members"], json!([{ "id": 1, "address": "127.0.0.1:0", "voter": true }]));
    let workers = server.get("/api/v1/workers", ROOT_SECRET).await;
    assert_eq!(workers.body["workers"][0]["slots"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_quorum_writes_answer_503_and_reads_still_work() {
    let fixture = Fixture::start().await;
    let job = fixture.acme_job().await;
    fixture.set_status(&job, JobStatus::Running).await;
    let cut_off = Server::start(Arc::new(WithoutQuorum(fixture.replica.clone()))).await;
    let admin = fixture.acme_admin.as_str();

    let writes = [
        cut_off.post("/api/v1/jobs", admin, json!({ "name": "q", "sql": VALID_SQL })).await,
        cut_off.post(&format!("/api/v1/jobs/{job}/cancel"), admin, json!({})).await,
        cut_off.post(&format!("/api/v1/jobs/{job}/stop"), admin, json!({})).await,
        cut_off.post(&format!("/api/v1/jobs/{job}/savepoints"), admin, json!({})).await,
        cut_off.post(&format!("/api/v1/jobs/{job}/rescale"), admin, json!({ "parallelism": 3 })).await,
        cut_off.post("/api/v1/tenants", ROOT_SECRET, json!({ "id": "initech" })).await,
    ];
    for write in writes {
        write.assert_problem(503, "no-quorum");
        assert!(write.headers.get(reqwest::header::RETRY_AFTER).is_some(), "{}", write.body);
        assert!(write.body["detail"].as_str().is_some_and(|d| d.contains("1 of 3 voters reachable")));
    }
    // Access checks still come first: no quorum does not turn a 403 or 404 into a 503.
    cut_off
        .post(&format!("/api/v1/jobs/{job}/cancel"), &fixture.acme_reader, json!({}))
        .await
        .assert_problem(403, "read-only-token");
    cut_off
        .post(&format!("/api/v1/jobs/{job}/cancel"), &fixture.globex_admin, json!({}))
        .await
        .assert_problem(404, "unknown-job");

    let list = cut_off.get("/api/v1/jobs", &fixture.acme_reader).await;
    assert_eq!((list.status, list.body["jobs"].as_array().map(Vec::len)), (200, Some(1)));
    let detail = cut_off.get(&format!("/api/v1/jobs/{job}"), &fixture.acme_reader).await;
    assert_eq!((detail.status, detail.body["status"].as_str()), (200, Some("RUNNING")));
    assert_eq!(cut_off.get(&format!("/api/v1/jobs/{job}/checkpoints"), admin).await.status, 200);
    assert_eq!(cut_off.get("/api/v1/cluster", admin).await.body["leader"], Value::Null);
    let health = cut_off.send(Method::GET, "/api/v1/healthz", None, None).await;
    health.assert_problem(503, "no-leader");
    assert_eq!(fixture.job_status(&job), Some((JobStatus::Running, 2)), "nothing changed");
}

/// Every route, asked wrongly in every way a client can (no or a bad credential, the wrong
/// method, a malformed or mistyped body, an unknown id), answers a problem from the one table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_of_every_route_comes_from_the_error_table() {
    let fixture = Fixture::start().await;
    let server = &fixture.server;
    let documented = documented_statuses(server).await;
    let admin = fixture.acme_admin.as_str();
    let url = |path: &str| format!("{}{path}", server.base);
    let mut seen = BTreeSet::new();
    for route in api::routes() {
        let path = route.path.replace("{id}", "job-unknown").replace("{tenant}", "nobody").replace("{token}", "tok-x");
        let mut answers = Vec::new();
        for token in [None, Some("not-a-token"), Some(admin), Some(ROOT_SECRET)] {
            let mut request = server.client.request(route.method.clone(), url(&path));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            answers.push(answer(request).await);
            for body in ["{", "[1]", "{\"parallelism\": \"x\"}"] {
                let mut request = server
                    .client
                    .request(route.method.clone(), url(&path))
                    .header("content-type", "application/json")
                    .body(body);
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                answers.push(answer(request).await);
            }
        }
        // What the route's own method answered is in the document.
        let statuses = documented(&route.method, route.path);
        for got in &answers {
            assert!(
                statuses.contains(&got.status),
                "{} {}: {} undocumented: {}",
                route.method,
                path,
                got.status,
                got.body
            );
        }
        for wrong in [Method::PUT, Method::PATCH, Method::DELETE, Method::POST, Method::GET] {
            if wrong != route.method && !api::routes().iter().any(|r| r.path == route.path && r.method == wrong) {
                answers.push(server.send(wrong, &path, Some(admin), None).await);
            }
        }
        for got in answers.iter().filter(|a| a.status >= 400) {
            got.assert_from_the_table();
            seen.insert(got.code().to_owned());
        }
    }
    // The sweep met the kinds of error a client can provoke this way.
    for code in ["unauthorized", "invalid-request", "unknown-job", "method-not-allowed", "tenant-token-required"] {
        assert!(seen.contains(code), "{code} not met; met {seen:?}");
    }
}

/// The answer's `Retry-After` in seconds.
fn retry_after(answer: &Answer) -> u64 {
    let header = answer.headers.get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok());
    header.and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("Retry-After {header:?}: {}", answer.body))
}

/// Asserts a 403 `quota-exceeded` naming the quota, its use, the request and the limit.
fn assert_over_quota(answer: &Answer, quota: &str, used: u64, requested: u64, limit: u64) {
    answer.assert_problem(403, "quota-exceeded");
    let body = &answer.body;
    assert_eq!((body["quota"].as_str(), body["used"].as_u64()), (Some(quota), Some(used)), "{body}");
    assert_eq!((body["requested"].as_u64(), body["limit"].as_u64()), (Some(requested), Some(limit)), "{body}");
    assert!(answer.headers.get(reqwest::header::RETRY_AFTER).is_none(), "waiting alone does not help: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_running_jobs_quota_is_refused_until_a_job_ends() {
    let fixture = Fixture::start_with(Quota { max_running_jobs: 2, ..ROOMY }).await;
    let admin = fixture.acme_admin.as_str();
    let (first, _second) = (fixture.acme_job().await, fixture.acme_job().await);
    let refused = fixture.submit(admin, json!({ "name": "third", "sql": VALID_SQL })).await;
    assert_over_quota(&refused, "max_running_jobs", 2, 1, 2);
    let detail = refused.body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("tenant acme") && detail.contains("running jobs"), "{detail}");
    // The quota is the tenant's: another tenant still submits.
    let other = fixture.submit(&fixture.globex_admin, json!({ "name": "g", "sql": VALID_SQL })).await;
    assert_eq!(other.status, 201, "{}", other.body);

    // A job that ended frees its place, whatever ended it.
    let cancelled = fixture.server.post(&format!("/api/v1/jobs/{first}/cancel"), admin, json!({})).await;
    assert_eq!(cancelled.body["status"], "CANCELED");
    let third = fixture.submit(admin, json!({ "name": "third", "sql": VALID_SQL })).await;
    assert_eq!(third.status, 201, "{}", third.body);
    let live = fixture.replica.reader().read(|m| m.jobs().filter(|j| !j.status.is_terminal()).count());
    assert_eq!(live, 3, "two of acme's and one of globex's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_slot_quota_is_refused_and_cannot_rescale_past_it() {
    let fixture = Fixture::start_with(Quota { max_slots: 5, ..ROOMY }).await;
    let (server, admin) = (&fixture.server, fixture.acme_admin.as_str());
    let job = fixture.acme_job().await; // parallelism 2
    // The script's own SET counts as much as the request's parallelism.
    let by_script = format!("SET 'parallelism.default' = '4';\n{VALID_SQL}");
    let refused = fixture.submit(admin, json!({ "name": "wide", "sql": by_script })).await;
    assert_over_quota(&refused, "max_slots", 2, 4, 5);
    let three = fixture.submit(admin, json!({ "name": "three", "sql": VALID_SQL, "parallelism": 3 })).await;
    assert_eq!(three.status, 201, "{}", three.body);
    let refused = fixture.submit(admin, json!({ "name": "one", "sql": VALID_SQL, "parallelism": 1 })).await;
    assert_over_quota(&refused, "max_slots", 5, 1, 5);

    // A rescale may not raise the tenant past its slots; a lowering always passes.
    fixture.set_status(&job, JobStatus::Running).await;
    let path = format!("/api/v1/jobs/{job}/rescale");
    let rescale = |parallelism: u32| server.post(&path, admin, json!({ "parallelism": parallelism }));
    assert_over_quota(&rescale(3).await, "max_slots", 5, 1, 5);
    assert_eq!(fixture.job_status(&job), Some((JobStatus::Running, 2)), "nothing changed");
    assert_eq!(rescale(1).await.status, 202);
    assert_eq!(fixture.job_status(&job), Some((JobStatus::Running, 1)));
    let one = fixture.submit(admin, json!({ "name": "one", "sql": VALID_SQL, "parallelism": 1 })).await;
    assert_eq!(one.status, 201, "the slot the rescale gave back: {}", one.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submissions_past_the_rate_are_refused_with_when_to_retry() {
    // 60 a minute: a burst of 10, then one a second.
    let fixture = Fixture::start_with(Quota { submissions_per_minute: 60, ..ROOMY }).await;
    let admin = fixture.acme_admin.as_str();
    // A refused submission counts as much as an accepted one: planning it was the cost.
    for n in 0..10 {
        let sql = if n % 2 == 0 { VALID_SQL } else { "SELEC 1" };
        let answer = fixture.submit(admin, json!({ "name": format!("j{n}"), "sql": sql })).await;
        assert!([201, 400].contains(&answer.status), "submission {n}: {}", answer.body);
    }
    let limited = fixture.submit(admin, json!({ "name": "late", "sql": VALID_SQL })).await;
    limited.assert_problem(429, "rate-limited");
    let wait = retry_after(&limited);
    assert_eq!(wait, 1, "one token a second: {}", limited.body);
    assert!(limited.body["detail"].as_str().is_some_and(|d| d.contains("60 jobs a minute")), "{}", limited.body);
    // Reads and other tenants are not limited.
    assert_eq!(fixture.server.get("/api/v1/jobs", admin).await.status, 200);
    let other = fixture.submit(&fixture.globex_admin, json!({ "name": "g", "sql": VALID_SQL })).await;
    assert_eq!(other.status, 201, "{}", other.body);
    // Retrying when told succeeds.
    tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    let retried = fixture.submit(admin, json!({ "name": "late", "sql": VALID_SQL })).await;
    assert_eq!(retried.status, 201, "{}", retried.body);
    assert_eq!(fixture.replica.reader().read(|m| m.jobs().count()), 7, "5 of acme's before, 1 after, 1 of globex's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_token_sets_a_tenants_own_quota_over_the_default() {
    let fixture = Fixture::start_with(Quota { max_running_jobs: 1, max_slots: 64, submissions_per_minute: 6 }).await;
    let (server, admin) = (&fixture.server, fixture.acme_admin.as_str());
    let set = |body: Value| server.send(Method::PUT, "/api/v1/tenants/acme/quota", Some(ROOT_SECRET), Some(body));
    let get = || server.send(Method::GET, "/api/v1/tenants/acme/quota", Some(ROOT_SECRET), None);
    let shown = get().await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert_eq!(
        (&shown.body["max_running_jobs"], &shown.body["submissions_per_minute"], &shown.body["own"]),
        (&json!(1), &json!(6), &json!({})),
        "the default: {}",
        shown.body
    );

    // A faster rate of its own: the default's burst is one submission.
    assert_eq!(set(json!({ "submissions_per_minute": 600 })).await.body["submission_burst"], 100);
    fixture.acme_job().await;
    assert_over_quota(
        &fixture.submit(admin, json!({ "name": "q", "sql": VALID_SQL })).await,
        "max_running_jobs",
        1,
        1,
        1,
    );
    // And three running jobs.
    let own = json!({ "max_running_jobs": 3, "submissions_per_minute": 600 });
    let answer = set(own.clone()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["own"], own);
    assert_eq!((&answer.body["max_running_jobs"], &answer.body["max_slots"]), (&json!(3), &json!(64)));
    assert_eq!((&answer.body["running_jobs"], &answer.body["slots"]), (&json!(1), &json!(2)));
    for name in ["second", "third"] {
        let created = fixture.submit(admin, json!({ "name": name, "sql": VALID_SQL })).await;
        assert_eq!(created.status, 201, "{name}: {}", created.body);
    }
    assert_over_quota(
        &fixture.submit(admin, json!({ "name": "q", "sql": VALID_SQL })).await,
        "max_running_jobs",
        3,
        1,
        3,
    );
    // Other tenants keep the default.
    let globex = |name: &str| fixture.submit(&fixture.globex_admin, json!({ "name": name, "sql": VALID_SQL }));
    assert_eq!(globex("g1").await.status, 201);
    let limited = globex("g2").await;
    limited.assert_problem(429, "rate-limited");
    assert_eq!(retry_after(&limited), 10, "6 a minute: {}", limited.body);

    // An empty body gives the tenant the default again; tenants' tokens cannot set quotas, and
    // an unknown tenant has none.
    assert_eq!(set(json!({})).await.body["own"], json!({}));
    assert_eq!(get().await.body["max_running_jobs"], 1);
    let by_tenant = server.send(Method::PUT, "/api/v1/tenants/acme/quota", Some(admin), Some(own.clone())).await;
    by_tenant.assert_problem(403, "root-token-required");
    let nobody = server.send(Method::PUT, "/api/v1/tenants/nobody/quota", Some(ROOT_SECRET), Some(own)).await;
    nobody.assert_problem(404, "unknown-tenant");
    server
        .send(Method::GET, "/api/v1/tenants/nobody/quota", Some(ROOT_SECRET), None)
        .await
        .assert_problem(404, "unknown-tenant");
}
