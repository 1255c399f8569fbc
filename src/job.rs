//! `weir job …`: the command-line client of the HTTP API (submit, list, status, cancel,
//! savepoint, rescale).
//!
//! It talks to `--url` (default `http://127.0.0.1:8080`, where `weir standalone` listens) with
//! the token from `--token`, `WEIR_TOKEN`, or `./weir-data/admin-token` (what `weir standalone`
//! writes on first start). An API error (`application/problem+json`, a [`Problem`]) is printed
//! as its detail with its code from the one table (`weir_dataflow::wire::ErrorCode`) and its
//! HTTP status, a SQL error as `FILE:LINE:COLUMN: message`, and the command exits non-zero.
//! Long actions wait and show progress on stderr: `submit` until the job runs, `cancel` until
//! it is cancelled, `savepoint` until the savepoint's path is known.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};
use weir_dataflow::wire::{ErrorCode, Problem};

use crate::standalone::{ADMIN_TOKEN_FILE, DEFAULT_DATA_DIR};

#[derive(Args)]
pub struct Connection {
    /// The control plane's address.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// A tenant's API token (default: WEIR_TOKEN, else ./weir-data/admin-token).
    #[arg(long, global = true)]
    token: Option<String>,
    /// PEM certificate(s) of the CA to trust for an https:// URL instead of the system's
    /// roots (a cluster whose certificates a private CA signed).
    #[arg(long, global = true, value_name = "PEM", env = "WEIR_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// The URL is this process's own listener (`weir standalone --submit`): its certificate is
    /// not checked, as nothing but this process holds that socket.
    #[arg(skip)]
    own_listener: bool,
}

#[derive(Subcommand)]
pub enum JobCommand {
    /// Submit a SQL script (it must INSERT INTO a sink table) and wait until it runs.
    Submit {
        file: PathBuf,
        /// The job's name (default: the file's name without extension).
        #[arg(long)]
        name: Option<String>,
        /// Default parallelism (overrides the script's SET 'parallelism.default').
        #[arg(long, short = 'p')]
        parallelism: Option<u32>,
    },
    /// List the tenant's jobs.
    List,
    /// Show a job: status, parallelism, last checkpoint, vertices with live figures.
    Status { id: String },
    /// Cancel a job and wait until it is cancelled.
    Cancel { id: String },
    /// Take a savepoint of a running checkpointed job and print its path.
    Savepoint {
        id: String,
        /// Stop the job once the savepoint is taken (Flink's stop-with-savepoint).
        #[arg(long)]
        stop: bool,
    },
    /// Run the job at another parallelism (it restarts from a savepoint).
    Rescale { id: String, parallelism: u32 },
}

/// How long a command waits for a job to reach the state it waits for.
const WAIT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(200);

pub fn run(command: JobCommand, connection: Connection) -> Result<()> {
    let client = Client::new(connection)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        match command {
            JobCommand::Submit { file, name, parallelism } => submit(&client, &file, name, parallelism).await,
            JobCommand::List => list(&client).await,
            JobCommand::Status { id } => status(&client, &id).await,
            JobCommand::Cancel { id } => cancel(&client, &id).await,
            JobCommand::Savepoint { id, stop } => savepoint(&client, &id, stop).await,
            JobCommand::Rescale { id, parallelism } => {
                client
                    .call(Method::POST, &format!("jobs/{id}/rescale"), Some(json!({ "parallelism": parallelism })))
                    .await?;
                eprintln!("job {id}: rescaling to parallelism {parallelism} (it restarts from a savepoint)");
                Ok(())
            }
        }
    })
}

/// Submits `file` to the API at `url` with `token` and waits until it runs (what
/// `weir standalone --submit` does once it listens), unless a job of the same name is still
/// live: a restarted `weir standalone --submit` resumes its job rather than starting another.
/// Submits `file` to this process's own API at `url` (`weir standalone --submit`).
pub async fn submit_file(url: &str, token: &str, file: &Path) -> Result<()> {
    let connection =
        Connection { url: url.to_string(), token: Some(token.to_string()), ca_cert: None, own_listener: true };
    let client = Client::new(connection)?;
    let name = job_name(file);
    let answer = client.call(Method::GET, "jobs", None).await?;
    let live = answer["jobs"].as_array().into_iter().flatten().find(|job| {
        job["name"].as_str() == Some(name.as_str())
            && !matches!(job["status"].as_str(), Some("FINISHED" | "CANCELED" | "FAILED"))
    });
    if let Some(job) = live {
        eprintln!("job {} ({name}) is {}: not submitted again", job["id"], job["status"]);
        return Ok(());
    }
    submit(&client, file, None, None).await
}

/// A job's default name: the script's file name without extension.
fn job_name(file: &Path) -> String {
    file.file_stem().map_or("job".into(), |s| s.to_string_lossy().into_owned())
}

/// An error status from the API.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    /// Weir's API refused: its problem+json body, whose code is from the one table (shown as
    /// sent, so a code of a newer server shows too).
    #[error("{} ({}, HTTP {})", .0.detail, .0.code, .0.status)]
    Problem(Box<Problem>),
    /// Something that is not Weir's API answered (a proxy, another server): no code to show.
    #[error("HTTP {status} from {url}: {body}")]
    NotWeir { url: String, status: u16, body: String },
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    fn new(connection: Connection) -> Result<Client> {
        let token = match connection.token.or_else(|| std::env::var("WEIR_TOKEN").ok()) {
            Some(token) => token,
            None => {
                let file = Path::new(DEFAULT_DATA_DIR).join(ADMIN_TOKEN_FILE);
                std::fs::read_to_string(&file).with_context(|| {
                    format!("no token: pass --token, set WEIR_TOKEN, or run where {} exists", file.display())
                })?
            }
        };
        // A private CA replaces the system's roots; without one, a public certificate is trusted.
        let builder = match &connection.ca_cert {
            Some(ca) => weir_net::Transport::from_ca_file(Some(ca))?.http_client(),
            None if connection.own_listener => reqwest::Client::builder().tls_danger_accept_invalid_certs(true),
            None => reqwest::Client::builder(),
        };
        let http = builder.timeout(Duration::from_secs(30)).build()?;
        let base = format!("{}/api/v1", connection.url.trim_end_matches('/'));
        Ok(Client { http, base, token: token.trim().to_string() })
    }

    /// Calls `METHOD /api/v1/PATH`; an error status is an [`ApiError`] (inside the `anyhow`).
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let url = format!("{}/{path}", self.base);
        let mut request = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response =
            request.send().await.map_err(|e| anyhow!("cannot reach {url}: {e} (is `weir standalone` running?)"))?;
        let status = response.status();
        let text = response.text().await.with_context(|| format!("{url}: the answer broke off"))?;
        if status.is_success() {
            return Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)));
        }
        Err(api_error(&url, status, text).into())
    }

    async fn job(&self, id: &str) -> Result<Value> {
        self.call(Method::GET, &format!("jobs/{id}"), None).await
    }

    async fn latest_exception(&self, id: &str) -> Option<String> {
        let answer = self.call(Method::GET, &format!("jobs/{id}/exceptions"), None).await.ok()?;
        answer["exceptions"].get(0)?["message"].as_str().map(str::to_string)
    }
}

async fn submit(client: &Client, file: &Path, name: Option<String>, parallelism: Option<u32>) -> Result<()> {
    let sql = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let name = name.unwrap_or_else(|| job_name(file));
    let mut body = json!({ "name": name, "sql": sql });
    if let Some(parallelism) = parallelism {
        body["parallelism"] = json!(parallelism);
    }
    let answer = client.call(Method::POST, "jobs", Some(body)).await.map_err(|e| sql_error(e, file))?;
    let id = answer["id"].as_str().context("the answer has no job id")?.to_string();
    println!("{id}");
    let status = wait_for(client, &id, "submitted", |status| status == "RUNNING" || status == "FINISHED").await?;
    if status != "RUNNING" && status != "FINISHED" {
        let why = client.latest_exception(&id).await.unwrap_or_default();
        bail!("job {id} is {status}: {why}");
    }
    Ok(())
}

/// The error of an answer with an error `status` and body `text`: the problem it holds, or,
/// when it holds none, what it says.
fn api_error(url: &str, status: reqwest::StatusCode, text: String) -> ApiError {
    match serde_json::from_str::<Problem>(&text) {
        Ok(problem) => ApiError::Problem(Box::new(problem)),
        Err(_) => {
            let body =
                if text.trim().is_empty() { status.canonical_reason().unwrap_or("error").to_string() } else { text };
            ApiError::NotWeir { url: url.to_string(), status: status.as_u16(), body }
        }
    }
}

/// A SQL error as `FILE:LINE:COLUMN: message`; any other error as it is.
fn sql_error(error: anyhow::Error, file: &Path) -> anyhow::Error {
    let Some(ApiError::Problem(problem)) = error.downcast_ref::<ApiError>() else { return error };
    let (Some(line), Some(column)) = (problem.extensions.get("line"), problem.extensions.get("column")) else {
        return error;
    };
    if problem.error_code() != Some(ErrorCode::InvalidSql) || !line.is_u64() {
        return error;
    }
    // The detail starts with the position; say it once, with the file in front.
    let prefix = format!("{line}:{column}: ");
    let message = problem.detail.strip_prefix(&prefix).unwrap_or(&problem.detail);
    anyhow!("{}:{line}:{column}: {message}", file.display())
}

/// Polls the job until `done(status)` or a terminal status; shows progress; answers the status.
async fn wait_for(client: &Client, id: &str, action: &str, done: impl Fn(&str) -> bool) -> Result<String> {
    let started = Instant::now();
    let show = std::io::stderr().is_terminal();
    let mut last = String::new();
    loop {
        let job = client.job(id).await?;
        let status = job["status"].as_str().unwrap_or("UNKNOWN").to_string();
        if status != last {
            if show {
                eprint!("\r\x1b[2Kjob {id} ({action}): {status}");
            } else {
                eprintln!("job {id}: {status}");
            }
            last = status.clone();
        }
        if done(&status) || matches!(status.as_str(), "FINISHED" | "FAILED" | "CANCELED") {
            if show {
                eprintln!();
            }
            return Ok(status);
        }
        if started.elapsed() > WAIT {
            bail!("job {id} is still {status} after {}s", WAIT.as_secs());
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn list(client: &Client) -> Result<()> {
    let answer = client.call(Method::GET, "jobs", None).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:<22} {:<11} {:>4}  NAME", "ID", "STATUS", "P")?;
    for job in answer["jobs"].as_array().into_iter().flatten() {
        let text = |key: &str| job[key].as_str().unwrap_or("").to_string();
        writeln!(out, "{:<22} {:<11} {:>4}  {}", text("id"), text("status"), job["parallelism"], text("name"))?;
    }
    Ok(())
}

async fn status(client: &Client, id: &str) -> Result<()> {
    let job = client.job(id).await?;
    let mut out = std::io::stdout().lock();
    let text = |value: &Value| value.as_str().map_or_else(|| value.to_string(), str::to_string);
    writeln!(out, "job {}  {}", text(&job["id"]), text(&job["name"]))?;
    writeln!(out, "status: {}", text(&job["status"]))?;
    writeln!(out, "parallelism: {}", job["parallelism"])?;
    match job["last_checkpoint"].as_object() {
        Some(checkpoint) => {
            writeln!(out, "last checkpoint: {} at {}", checkpoint["id"], text(&checkpoint["location"]))?
        }
        None => writeln!(out, "last checkpoint: none")?,
    }
    for vertex in job["vertices"].as_array().into_iter().flatten() {
        let figure = |key: &str| if vertex[key].is_null() { "-".to_string() } else { vertex[key].to_string() };
        writeln!(
            out,
            "  vertex {} x{}: {}  (in {}, out {}, backpressure {})",
            vertex["id"],
            vertex["parallelism"],
            text(&vertex["name"]),
            figure("records_in"),
            figure("records_out"),
            figure("backpressure")
        )?;
    }
    Ok(())
}

async fn cancel(client: &Client, id: &str) -> Result<()> {
    client.call(Method::POST, &format!("jobs/{id}/cancel"), None).await?;
    let status = wait_for(client, id, "cancelling", |status| status == "CANCELED").await?;
    println!("{status}");
    Ok(())
}

async fn savepoint(client: &Client, id: &str, stop: bool) -> Result<()> {
    let path = if stop { format!("jobs/{id}/stop") } else { format!("jobs/{id}/savepoints") };
    let answer = client.call(Method::POST, &path, None).await?;
    let savepoint = answer["savepoint"].as_str().context("the answer has no savepoint id")?.to_string();
    eprintln!("taking savepoint {savepoint} of job {id} …");
    let started = Instant::now();
    loop {
        let answer = client.call(Method::GET, &format!("jobs/{id}/savepoints"), None).await?;
        let taken = answer["savepoints"].as_array().into_iter().flatten().find(|sp| sp["id"] == savepoint.as_str());
        if let Some(taken) = taken {
            println!("{}", taken["location"].as_str().unwrap_or_default());
            return Ok(());
        }
        if let Some(why) = client.latest_exception(id).await.filter(|message| message.contains(&savepoint)) {
            bail!("{why}");
        }
        if started.elapsed() > WAIT {
            bail!("savepoint {savepoint} was not taken within {}s", WAIT.as_secs());
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use reqwest::StatusCode;

    use super::*;

    #[test]
    fn an_api_error_shows_its_detail_with_the_tables_code_and_status() {
        let body = serde_json::to_string(&Problem::new(ErrorCode::UnknownJob, "job j-1 does not exist")).unwrap();
        let error = api_error("http://x/api/v1/jobs/j-1", StatusCode::NOT_FOUND, body);
        assert_eq!(error.to_string(), "job j-1 does not exist (unknown-job, HTTP 404)");
        // A code this client does not know (a newer server's) is shown as sent.
        let body = r#"{"type":"urn:weir:problem:new","title":"Conflict","status":409,"detail":"no","code":"new"}"#;
        let error = api_error("http://x", StatusCode::CONFLICT, body.to_string());
        assert_eq!(error.to_string(), "no (new, HTTP 409)");
    }

    #[test]
    fn an_answer_that_is_not_a_problem_says_what_answered() {
        let error = api_error("http://x/api/v1/jobs", StatusCode::BAD_GATEWAY, String::new());
        assert_eq!(error.to_string(), "HTTP 502 from http://x/api/v1/jobs: Bad Gateway");
        let error = api_error("http://x/api/v1/jobs", StatusCode::NOT_FOUND, "nothing here".to_string());
        assert_eq!(error.to_string(), "HTTP 404 from http://x/api/v1/jobs: nothing here");
    }

    #[test]
    fn an_invalid_sql_problem_reads_as_file_line_column() {
        let problem = Problem::new(ErrorCode::InvalidSql, "2:15: expected SELECT").with("line", 2).with("column", 15);
        let error = api_error("http://x", StatusCode::BAD_REQUEST, serde_json::to_string(&problem).unwrap());
        let shown = sql_error(error.into(), Path::new("bad.sql")).to_string();
        assert_eq!(shown, "bad.sql:2:15: expected SELECT");
        // Any other problem stays as it is.
        let other = api_error(
            "http://x",
            StatusCode::NOT_FOUND,
            serde_json::to_string(&Problem::new(ErrorCode::UnknownJob, "gone")).unwrap(),
        );
        assert_eq!(sql_error(other.into(), Path::new("bad.sql")).to_string(), "gone (unknown-job, HTTP 404)");
    }
}
