//! `weir standalone` with real processes and real HTTP: jobs submitted with `weir job` run to
//! their end, commit checkpoints through Raft, cancel, refuse invalid SQL with its position, and
//! survive a `kill -9` of the whole process with exactly-once output.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{ids, published};

/// A `weir standalone` process on a free loopback port over `data` (the harness's), killed when
/// dropped, and what the tests ask of it.
struct Standalone {
    process: weir_testkit::Standalone,
    client: reqwest::Client,
}

impl Standalone {
    /// Starts it; its stderr goes to `log` (appended, so a restart's follows the first's).
    fn start(data: &Path, log: &Path) -> Standalone {
        Self::start_with(data, log, &[])
    }

    /// Starts it with more arguments (`--submit FILE`).
    fn start_with(data: &Path, log: &Path, extra: &[&str]) -> Standalone {
        let process = common::weir().standalone(data, log, extra).unwrap_or_else(|e| panic!("{e}"));
        Standalone { process, client: reqwest::Client::new() }
    }

    /// Runs `weir job ARGS` against this process.
    fn job(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["job", "--url", &self.process.url])
            .args(args)
            .env("WEIR_TOKEN", &self.process.token)
            .output()
            .expect("weir job runs")
    }

    /// `weir job submit FILE`, which must succeed; answers the job's id.
    fn submit(&self, file: &Path) -> String {
        let output = self.job(&["submit", &file.display().to_string()]);
        assert!(output.status.success(), "submit failed: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    async fn get(&self, path: &str) -> Value {
        let response = self
            .client
            .get(format!("{}/api/v1/{path}", self.process.url))
            .bearer_auth(&self.process.token)
            .send()
            .await
            .expect("the API answers");
        assert!(response.status().is_success(), "GET {path}: {}", response.status());
        response.json().await.expect("a JSON body")
    }

    async fn status(&self, job: &str) -> String {
        self.get(&format!("jobs/{job}")).await["status"].as_str().expect("a status").to_string()
    }

    /// Waits until the job's status is `wanted`; fails on another terminal status or after 60 s.
    async fn wait_for(&self, job: &str, wanted: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = self.status(job).await;
            if status == wanted {
                return;
            }
            let terminal = matches!(status.as_str(), "FINISHED" | "FAILED" | "CANCELED");
            if terminal || Instant::now() > deadline {
                let exceptions = self.get(&format!("jobs/{job}/exceptions")).await;
                panic!(
                    "job {job} is {status}, not {wanted}; exceptions {exceptions}; log {}",
                    self.process.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The ids of the job's committed checkpoints, newest first.
    async fn checkpoints(&self, job: &str) -> Vec<u64> {
        let answer = self.get(&format!("jobs/{job}/checkpoints")).await;
        answer["checkpoints"].as_array().expect("a list").iter().map(|c| c["id"].as_u64().expect("an id")).collect()
    }

    fn kill_9(&mut self) {
        self.process.kill_9();
    }
}

/// A datagen source of `rows` rows (`per_second` paced, 0: as fast as it goes; `rows` 0:
/// unbounded) into a JSON filesystem sink at `out`, checkpointed every `interval_ms` (0: none).
fn datagen_job(rows: u64, per_second: u64, interval_ms: u64, out: &Path) -> String {
    let mut script = String::new();
    if interval_ms > 0 {
        script.push_str(&format!("SET 'execution.checkpointing.interval' = '{interval_ms} ms';\n"));
    }
    let bound = if rows > 0 { format!("'number-of-rows' = '{rows}', ") } else { String::new() };
    let end = if rows > 0 { rows } else { 1_000_000_000 };
    let pace = if per_second > 0 { format!("'rows-per-second' = '{per_second}', ") } else { String::new() };
    script.push_str(&format!(
        "CREATE TABLE g (id BIGINT, k INT) WITH ('connector' = 'datagen', {bound}{pace}
  'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '{end}',
  'fields.k.min' = '1', 'fields.k.max' = '20');
CREATE TABLE out (id BIGINT, k INT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');
INSERT INTO out SELECT id, k FROM g;
",
        out.display()
    ));
    script
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_job_finishes_and_its_sink_has_every_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let weir = Standalone::start(&dir.path().join("data"), &dir.path().join("standalone.log"));
    let out = dir.path().join("out");
    let script = dir.path().join("bounded.sql");
    std::fs::write(&script, datagen_job(2_000, 0, 0, &out)).expect("script");

    let job = weir.submit(&script);
    weir.wait_for(&job, "FINISHED").await;
    let rows = ids(&published(&out));
    assert_eq!(rows.len(), 2_000);
    assert!(rows.iter().all(|(id, count)| (1..=2_000).contains(id) && *count == 1));

    let listed = weir.job(&["list"]);
    assert!(listed.status.success());
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&job));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbounded_job_commits_checkpoints_takes_a_savepoint_rescales_and_cancels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let weir = Standalone::start(&dir.path().join("data"), &dir.path().join("standalone.log"));
    let script = dir.path().join("unbounded.sql");
    std::fs::write(&script, datagen_job(0, 500, 1_000, &dir.path().join("out"))).expect("script");

    let job = weir.submit(&script);
    assert_eq!(weir.status(&job).await, "RUNNING");
    // Checkpoints keep being committed through Raft while the job runs.
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        if let Some(newest) = weir.checkpoints(&job).await.first() {
            break *newest;
        }
        assert!(Instant::now() < deadline, "no checkpoint was committed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    loop {
        let newest = weir.checkpoints(&job).await.first().copied().expect("checkpoints stay listed");
        if newest > first {
            break;
        }
        assert!(Instant::now() < deadline, "no checkpoint after {first} was committed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Live figures: the job's one vertex (source and sink chained) read rows and wrote them.
    let detail = weir.get(&format!("jobs/{job}")).await;
    let vertex = &detail["vertices"][0];
    let live = vertex["records_in"].as_u64() > Some(0) && vertex["records_out"].as_u64() > Some(0);
    assert!(live, "no live figures: {vertex}");

    // A savepoint's path is printed once it is taken; a rescale restarts from a stopping one.
    let saved = weir.job(&["savepoint", &job]);
    assert!(saved.status.success(), "savepoint failed: {}", String::from_utf8_lossy(&saved.stderr));
    let path = String::from_utf8_lossy(&saved.stdout).trim().to_string();
    assert!(Path::new(&path).join("_metadata").is_file(), "no savepoint at {path:?}");
    let rescaled = weir.job(&["rescale", &job, "2"]);
    assert!(rescaled.status.success(), "rescale failed: {}", String::from_utf8_lossy(&rescaled.stderr));
    // The detail shows the desired parallelism at once; the run restarts from a savepoint.
    let restored = format!("restoring job '{job}' from savepoint");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&weir.process.log).expect("log").contains(&restored) {
        assert!(Instant::now() < deadline, "not restarted from a savepoint; log {}", weir.process.log.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    weir.wait_for(&job, "RUNNING").await;
    let detail = weir.get(&format!("jobs/{job}")).await;
    assert_eq!(detail["vertices"][0]["parallelism"], 2);
    let recorded = weir.get(&format!("jobs/{job}/savepoints")).await;
    assert_eq!(recorded["savepoints"][0]["location"], path.as_str(), "only the user's savepoint is listed");
    let exceptions = weir.get(&format!("jobs/{job}/exceptions")).await;
    assert_eq!(exceptions["exceptions"], serde_json::json!([]));

    let cancelled = weir.job(&["cancel", &job]);
    assert!(cancelled.status.success(), "cancel failed: {}", String::from_utf8_lossy(&cancelled.stderr));
    assert_eq!(String::from_utf8_lossy(&cancelled.stdout).trim(), "CANCELED");
    assert_eq!(weir.status(&job).await, "CANCELED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_with_local_workers_runs_a_job_on_a_worker_it_starts_and_stops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let extra = ["--provisioner", "local", "--worker-slots", "2", "--worker-cool-down", "1 s"];
    let weir = Standalone::start_with(&dir.path().join("data"), &dir.path().join("standalone.log"), &extra);
    assert_eq!(weir.get("workers").await["workers"], serde_json::json!([]), "no worker before a job");
    let out = dir.path().join("out");
    let script = dir.path().join("paced.sql");
    std::fs::write(&script, datagen_job(3_000, 1_000, 500, &out)).expect("script");
    let job = weir.submit(&script);
    weir.wait_for(&job, "RUNNING").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while weir.get("workers").await["workers"].as_array().is_none_or(Vec::is_empty) {
        assert!(Instant::now() < deadline, "no worker registered; log {}", weir.process.log.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let detail = weir.get(&format!("jobs/{job}")).await;
    assert!(detail["deployment"]["worker"].is_string(), "deployed on a worker: {}", detail["deployment"]);
    weir.wait_for(&job, "FINISHED").await;
    let rows = ids(&published(&out));
    assert_eq!(rows.len(), 3_000);
    assert!(rows.values().all(|count| *count == 1));
    // Idle: the worker is let go after the cool-down (and the heartbeat timeout).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !weir.get("workers").await["workers"].as_array().is_some_and(Vec::is_empty) {
        assert!(Instant::now() < deadline, "the idle worker stays; log {}", weir.process.log.display());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Writes `ids` as JSON rows into a new file of `dir`, as a producer should: under a hidden
/// name, renamed once complete.
fn drop_file(dir: &Path, name: &str, ids: std::ops::RangeInclusive<u64>) {
    let text: String = ids.map(|id| format!("{{\"id\": {id}}}\n")).collect();
    let hidden = dir.join(format!(".{name}.tmp"));
    std::fs::write(&hidden, text).expect("input written");
    std::fs::rename(&hidden, dir.join(name)).expect("input renamed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_without_input_is_suspended_and_wakes_when_files_come_with_exactly_once_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let weir = Standalone::start(&dir.path().join("data"), &dir.path().join("standalone.log"));
    let (input, out) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::create_dir(&input).expect("input folder");
    drop_file(&input, "1.json", 1..=100);
    let script = dir.path().join("watch.sql");
    std::fs::write(
        &script,
        format!(
            "SET 'execution.checkpointing.interval' = '300 ms';
SET 'job.autoscaler.scale-to-zero.idle-timeout' = '2 s';
SET 'job.autoscaler.stabilization.interval' = '1 s';
CREATE TABLE events (id BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json',
  'source.monitor-interval' = '200 ms');
CREATE TABLE out (id BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');
INSERT INTO out SELECT id FROM events;
",
            input.display(),
            out.display()
        ),
    )
    .expect("script");

    let job = weir.submit(&script);
    weir.wait_for(&job, "SUSPENDED").await;
    let rows = ids(&published(&out));
    assert_eq!(rows.len(), 100, "everything read was committed before the suspension");
    let history = weir.get(&format!("jobs/{job}/rescales")).await;
    let newest = &history["rescales"][0];
    assert_eq!(newest["kind"], "SUSPEND", "{history}");
    assert!(newest["reasons"][0].as_str().is_some_and(|r| r.contains("no input")), "{history}");

    // New input wakes it; it reads only what is new.
    drop_file(&input, "2.json", 101..=250);
    weir.wait_for(&job, "RUNNING").await;
    let history = weir.get(&format!("jobs/{job}/rescales")).await;
    assert_eq!(history["rescales"][0]["kind"], "RESUME", "{history}");
    assert!(history["rescales"][0]["reasons"][0].as_str().is_some_and(|r| r.contains("1 new file")), "{history}");
    // And with no more input it is suspended again, every row committed exactly once.
    weir.wait_for(&job, "SUSPENDED").await;
    let rows = ids(&published(&out));
    assert_eq!(rows.len(), 250);
    assert!(rows.iter().all(|(id, count)| (1..=250).contains(id) && *count == 1), "exactly once: {rows:?}");
    let exceptions = weir.get(&format!("jobs/{job}/exceptions")).await;
    assert_eq!(exceptions["exceptions"], serde_json::json!([]));

    // A suspended job cancels at once.
    let cancelled = weir.job(&["cancel", &job]);
    assert_eq!(String::from_utf8_lossy(&cancelled.stdout).trim(), "CANCELED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_sql_is_refused_with_its_file_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let weir = Standalone::start(&dir.path().join("data"), &dir.path().join("standalone.log"));
    let script = dir.path().join("bad.sql");
    std::fs::write(&script, "SET 'parallelism.default' = '1';\nINSERT INTO x SELEC * FROM y;\n").expect("script");

    let output = weir.job(&["submit", &script.display().to_string()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("{}:2:15: ", script.display())), "{stderr}");
    assert!(weir.get("jobs").await["jobs"].as_array().expect("a list").is_empty());
}

/// `weir job` names an API error's code from the one table, after its detail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_error_is_shown_with_its_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let weir = Standalone::start(&dir.path().join("data"), &dir.path().join("standalone.log"));
    let output = weir.job(&["status", "no-such-job"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("error: job no-such-job does not exist"), "{stderr}");
    assert!(stderr.contains("(unknown-job, HTTP 404)"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_resumes_from_its_last_checkpoint_after_kill_9_with_exactly_once_output() {
    const ROWS: u64 = 6_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, log) = (dir.path().join("data"), dir.path().join("standalone.log"));
    let out = dir.path().join("out");
    let script = dir.path().join("paced.sql");
    // About 3 s of input, checkpointed every 200 ms.
    std::fs::write(&script, datagen_job(ROWS, 2_000, 200, &out)).expect("script");

    let mut weir = Standalone::start(&data, &log);
    let job = weir.submit(&script);
    let deadline = Instant::now() + Duration::from_secs(30);
    // A second checkpoint, so the restart resumes from the middle of the input.
    while weir.checkpoints(&job).await.first().is_none_or(|newest| *newest < 2) {
        assert!(Instant::now() < deadline, "no checkpoint was committed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(weir.status(&job).await, "RUNNING");
    weir.kill_9();

    let weir = Standalone::start(&data, &log);
    // The restarted leader finds the job RUNNING without a run and restarts it.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = weir.status(&job).await;
        if seen.last() != Some(&status) {
            seen.push(status.clone());
        }
        if status == "FINISHED" {
            break;
        }
        assert!(!matches!(status.as_str(), "FAILED" | "CANCELED"), "job ended {status}; log {}", log.display());
        assert!(Instant::now() < deadline, "the job did not finish; statuses {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen.iter().any(|status| status == "RUNNING"), "never RUNNING again: {seen:?}");
    let logged = std::fs::read_to_string(&log).expect("log");
    assert!(logged.contains(&format!("resuming job '{job}' from checkpoint")), "did not resume: {logged}");

    // Exactly once: what a failure-free `weir run` of the same script publishes.
    let resumed = published(&out);
    let reference_out = dir.path().join("reference");
    let reference_script = dir.path().join("reference.sql");
    let reference_sql = std::fs::read_to_string(&script)
        .expect("script")
        .replace(&out.display().to_string(), &reference_out.display().to_string());
    let reference_sql =
        format!("SET 'state.checkpoints.dir' = '{}';\n{reference_sql}", dir.path().join("ref-state").display());
    std::fs::write(&reference_script, reference_sql).expect("script");
    let reference = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "--quiet"])
        .arg(&reference_script)
        .output()
        .expect("weir run");
    assert!(reference.status.success(), "{}", String::from_utf8_lossy(&reference.stderr));
    assert_eq!(resumed, published(&reference_out));
    let rows = ids(&resumed);
    assert_eq!(rows.len() as u64, ROWS);
    assert!(rows.values().all(|count| *count == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_submit_runs_the_job_and_a_restart_resumes_it_without_a_second_copy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, log, out) = (dir.path().join("data"), dir.path().join("standalone.log"), dir.path().join("out"));
    let script = dir.path().join("paced.sql");
    std::fs::write(&script, datagen_job(0, 500, 300, &out)).expect("script");
    let submit = ["--submit", script.to_str().expect("a UTF-8 path")];

    let mut weir = Standalone::start_with(&data, &log, &submit);
    let job = wait_for_jobs(&weir, 1).await.remove(0);
    weir.wait_for(&job, "RUNNING").await;
    while weir.checkpoints(&job).await.is_empty() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    weir.kill_9();
    drop(weir);

    // The same command again: the job resumes, and no second copy of it is submitted.
    let weir = Standalone::start_with(&data, &log, &submit);
    weir.wait_for(&job, "RUNNING").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(wait_for_jobs(&weir, 1).await, vec![job]);
}

/// With a certificate, `weir standalone` serves its API over TLS only: its own `--submit`
/// reaches it, `weir job --ca-cert` lists the job (and without the CA does not trust the
/// server), plain HTTP gets no answer. Without a certificate it refuses to serve plain text on
/// an address other than loopback, and says how to allow it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_serves_tls_with_a_certificate_and_plain_text_only_on_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("tls");
    let made = Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("dev-certs")
        .arg(&certs)
        .args(["--host", "127.0.0.1"])
        .output()
        .expect("weir dev-certs runs");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let path = |name: &str| certs.join(name).to_str().expect("a UTF-8 path").to_string();
    let (certificate, key, ca) = (path("cert.pem"), path("key.pem"), path("ca.pem"));
    let (data, log, out) = (dir.path().join("data"), dir.path().join("standalone.log"), dir.path().join("out"));
    let script = dir.path().join("over-tls.sql");
    std::fs::write(&script, datagen_job(0, 500, 300, &out)).expect("script");
    let flags = ["--tls-cert", &certificate, "--tls-key", &key, "--submit", script.to_str().expect("a UTF-8 path")];
    let weir = common::weir().standalone(&data, &log, &flags).unwrap_or_else(|e| panic!("{e}"));
    assert!(weir.url.starts_with("https://"), "{}", weir.url);

    let job = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["job", "--url", &weir.url])
            .args(extra)
            .arg("list")
            .env("WEIR_TOKEN", &weir.token)
            .env_remove("WEIR_CA_CERT")
            .output()
            .expect("weir job runs")
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed = job(&["--ca-cert", &ca]);
        assert!(listed.status.success(), "weir job list failed: {}", String::from_utf8_lossy(&listed.stderr));
        if String::from_utf8_lossy(&listed.stdout).contains("over-tls") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the submitted job is not listed: {}",
            String::from_utf8_lossy(&listed.stdout)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let untrusting = job(&[]);
    assert!(!untrusting.status.success(), "a client without the CA trusted the server");
    let plain = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("an HTTP client");
    let url = format!("{}/api/v1/jobs", weir.url.replacen("https://", "http://", 1));
    let answer = plain.get(&url).bearer_auth(&weir.token).send().await;
    assert!(answer.is_err(), "plain HTTP got an answer: {answer:?}");

    let refused = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["standalone", "--listen", "0.0.0.0:0", "--data"])
        .arg(dir.path().join("other-data"))
        .current_dir(dir.path())
        .output()
        .expect("weir standalone runs");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "plain text on every address was served");
    assert!(stderr.contains("--tls-cert") && stderr.contains("--insecure-plaintext"), "{stderr}");
}

/// Waits until the tenant has `n` jobs; answers their ids.
async fn wait_for_jobs(weir: &Standalone, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let jobs = weir.get("jobs").await;
        let ids: Vec<String> = jobs["jobs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|j| j["id"].as_str().map(str::to_string))
            .collect();
        if ids.len() >= n || Instant::now() > deadline {
            return ids;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A second `weir standalone` on a data directory in use says so and exits; the first serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_the_same_data_directory_is_refused_clearly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let first = Standalone::start(&data, &dir.path().join("first.log"));
    let second = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["standalone", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .output()
        .expect("weir standalone runs");
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "the second process must not start: {err}");
    assert!(err.contains("is in use by another weir process"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(first.get("jobs").await["jobs"].is_array(), "the first one still serves");
}

/// Where scripts/test.sh installs the pinned schemathesis (`pip install --target`):
/// `WEIR_SCHEMATHESIS_DIR`, else `${XDG_CACHE_HOME:-$HOME/.cache}/weir/schemathesis`.
fn schemathesis_dir() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("WEIR_SCHEMATHESIS_DIR") {
        return dir.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))
        .expect("HOME or XDG_CACHE_HOME is set");
    cache.join("weir").join("schemathesis")
}

/// Schemathesis, with every check, fuzzes a real `weir standalone` from its own OpenAPI document:
/// at most 50 cases an operation in each phase (examples, coverage, fuzzing, then stateful
/// sequences along the links it infers), job routes with the tenant `default`'s admin token and
/// tenant routes with the root token (`tests/schemathesis/schemathesis.toml`). Valid scripts come
/// from `tests/schemathesis/hooks.py`, so the jobs it submits run. Any failure fails the test
/// with schemathesis's report, whose seed replays it (`WEIR_SCHEMATHESIS_SEED=…`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_wrong_with_the_api() {
    const ROOT_SECRET: &str = "root-secret-of-the-schemathesis-run-0123456789";
    const LIMIT: Duration = Duration::from_secs(300);
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis");
    let installed = schemathesis_dir();
    let import = Command::new("python3")
        .args(["-c", "import schemathesis"])
        .env("PYTHONPATH", &installed)
        .output()
        .expect("python3 runs");
    assert!(
        import.status.success(),
        "schemathesis is not installed in {}: scripts/test.sh installs it (pip install --target); {}",
        installed.display(),
        String::from_utf8_lossy(&import.stderr)
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let root_file = dir.path().join("root-token");
    std::fs::write(&root_file, ROOT_SECRET).expect("root token written");
    // Thousands of submissions in a minute: the rate limit is raised for the run (its default is
    // tested in control-plane/tests/api.rs); the quotas stay low, so they are met.
    let flags = [
        "--root-token-file",
        root_file.to_str().expect("a UTF-8 path"),
        "--submissions-per-minute",
        "1000000",
        "--max-running-jobs",
        "8",
        "--max-slots",
        "32",
    ];
    let weir = Standalone::start_with(&dir.path().join("data"), &dir.path().join("standalone.log"), &flags);

    let report = dir.path().join("schemathesis.txt");
    let output = std::fs::File::create(&report).expect("report file");
    let mut command = Command::new("python3");
    command
        .args(["-m", "schemathesis.cli", "--config-file"])
        .arg(suite.join("schemathesis.toml"))
        .args(["run", &format!("{}/api/v1/openapi.json", weir.process.url)])
        .args(["--checks", "all", "--workers", "2", "--no-color", "--request-timeout", "30"])
        .current_dir(dir.path())
        .env("PYTHONPATH", &installed)
        .env("SCHEMATHESIS_HOOKS", suite.join("hooks.py"))
        .env("WEIR_ADMIN_TOKEN", &weir.process.token)
        .env("WEIR_ROOT_TOKEN", ROOT_SECRET)
        .stdout(output.try_clone().expect("report file"))
        .stderr(output);
    if let Ok(seed) = std::env::var("WEIR_SCHEMATHESIS_SEED") {
        command.args(["--seed", &seed]);
    }
    let started = Instant::now();
    let mut child = command.spawn().expect("schemathesis starts");
    let status = loop {
        if let Some(status) = child.try_wait().expect("schemathesis runs") {
            break Some(status);
        }
        if started.elapsed() > LIMIT {
            weir_testkit::kill_9(&mut child);
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    match status {
        Some(status) if status.success() => eprintln!("schemathesis passed in {:?}", started.elapsed()),
        Some(status) => panic!("schemathesis found failures ({status}); log {}:\n{text}", weir.process.log.display()),
        None => panic!("schemathesis did not finish within {LIMIT:?}:\n{text}"),
    }
}
