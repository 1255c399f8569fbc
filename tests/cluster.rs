//! Remote workers under faults, with real processes on loopback: three `weir control-plane`
//! replicas and two `weir worker`s, the jobs' checkpoints in S3 (moto, or the endpoint
//! `WEIR_TEST_S3_ENDPOINT` names). A `kill -9` of the leader neither restarts a running job nor
//! stops its checkpoints; a `kill -9` of the worker running a job moves the job to the other
//! worker, which resumes it from its latest checkpoint with exactly-once output. Without a
//! quorum, writes are refused with 503 and reads answer; when the quorum returns within a
//! worker's lease, the job has run on undisturbed.
//!
//! Every process logs to its own file; when a test fails, the sandbox keeps its directory and
//! prints where the logs are and how each ends.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use weir_testkit::{Cluster, children_of};

mod common;
use common::{ids, published};

/// The operator's root token of every replica; workers authenticate to the replicas with it.
const ROOT_TOKEN: &str = "weir-cluster-test-root-token-0123456789abcdef";
/// The tenant the tests' jobs belong to.
const TENANT: &str = "acme";
/// How long a step that takes a few seconds when all is well may take before the test fails.
const WAIT: Duration = Duration::from_secs(30);
/// How often a test polls what it waits for.
const POLL: Duration = Duration::from_millis(100);

/// The tests take turns. Each starts five processes, and a worker is declared dead after ~3 s
/// without a heartbeat: on a machine with two cores, two sandboxes at once could starve a worker
/// long enough to lose it, and a test would fail for a fault nobody injected.
static ONE_SANDBOX_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Three replicas and the workers (the harness's [`Cluster`], its directory and logs kept when a
/// test fails), and the tenant whose token the tests' jobs use. What the harness answers as an
/// error fails the test here.
struct Sandbox {
    cluster: Cluster,
    /// The tenant's admin token.
    token: String,
    /// When this sandbox's turn came: what the tests' timings count from.
    started: Instant,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

/// What a sandbox has besides replicas and workers.
#[derive(Clone, Copy, Default)]
struct Extras {
    /// A shuffle server, for jobs spread over several workers.
    shuffle: bool,
    /// TLS on every listener (`weir dev-certs`), every process trusting its CA.
    tls: bool,
    /// Workers of this many slots started by the leader (`--provisioner local`), let go 2 s
    /// after they are no longer needed.
    local_workers: Option<u32>,
}

impl Sandbox {
    /// Three replicas, a tenant with an admin token, and `workers` workers of `slots` slots
    /// each, registered with the leader. `name` names the test's S3 bucket.
    async fn start(name: &str, workers: usize, slots: u32) -> Sandbox {
        Self::start_with(name, workers, slots, Extras::default(), &[]).await
    }

    /// As [`Sandbox::start`], with `extras`, and `env` set for every process (after the S3
    /// variables: it may override them).
    async fn start_with(name: &str, workers: usize, slots: u32, extras: Extras, env: &[(&str, &str)]) -> Sandbox {
        let turn = ONE_SANDBOX_AT_A_TIME.lock().await;
        let started = Instant::now();
        // Jobs checkpoint to a fresh S3 location; every process gets its endpoint (an `s3://`
        // location reads it from the usual AWS variables).
        let state_dir = weir_state_store::testing::s3_location(name).url().to_string();
        let s3 = weir_state_store::testing::s3_options();
        let known = |value: Option<String>| value.expect("s3_options sets every field it is asked for here");
        let mut builder = common::weir()
            .cluster()
            .root_token(ROOT_TOKEN)
            .log_filter("info,openraft=warn")
            .state_dir(state_dir)
            .env("AWS_ENDPOINT_URL_S3", known(s3.endpoint))
            .env("AWS_REGION", known(s3.region))
            .env("AWS_ACCESS_KEY_ID", known(s3.access_key_id))
            .env("AWS_SECRET_ACCESS_KEY", known(s3.secret_access_key))
            // Credentials of the test endpoint only: a session token of the caller's would not fit.
            .env_remove("AWS_SESSION_TOKEN")
            .shuffle(extras.shuffle)
            .tls(extras.tls)
            .wait(WAIT);
        if let Some(slots) = extras.local_workers {
            let slots = slots.to_string();
            builder =
                builder.replica_args(["--provisioner", "local", "--worker-slots", &slots, "--worker-cool-down", "2 s"]);
        }
        for (name, value) in env {
            builder = builder.env(*name, *value);
        }
        let cluster = builder.start().unwrap_or_else(|e| panic!("{e}"));
        eprintln!("sandbox {}; checkpoints in {}", cluster.dir().display(), cluster.state_dir());
        let mut sandbox = Sandbox { cluster, token: String::new(), started, _turn: turn };
        sandbox.token = sandbox.cluster.tenant_admin(TENANT).await.unwrap_or_else(|e| panic!("{e}"));
        for index in 1..=workers {
            let id = sandbox.cluster.start_worker(slots).unwrap_or_else(|e| panic!("{e}"));
            eprintln!("worker {index} is {id}");
        }
        sandbox.cluster.wait_for_workers().await.unwrap_or_else(|e| panic!("{e}"));
        sandbox
    }

    /// A path in the sandbox's directory.
    fn path(&self, name: &str) -> PathBuf {
        self.cluster.path(name)
    }

    fn kill_9_replica(&mut self, id: u64) {
        self.cluster.kill_9_replica(id);
    }

    /// Starts a killed replica again, on its address and data.
    fn restart_replica(&mut self, id: u64) {
        self.cluster.restart_replica(id).unwrap_or_else(|e| panic!("{e}"));
    }

    fn kill_9_worker(&mut self, id: &str) {
        self.cluster.kill_9_worker(id);
    }

    /// `method path` on `replica` with `token`: the status and the JSON body (null if it has
    /// none), or `None` when the replica did not answer.
    async fn call(
        &self,
        method: Method,
        replica: u64,
        token: &str,
        path: &str,
        body: Option<Value>,
    ) -> Option<(u16, Value)> {
        self.cluster.call(method, replica, token, path, body).await
    }

    /// Waits until every running replica names the same running leader.
    async fn leader(&self) -> u64 {
        self.cluster.leader().await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// POSTs `body` to `path` through `replica` until it is accepted (2xx); a refusal for now
    /// (503, or no answer: an election is under way) is retried, anything else fails the test.
    async fn write(&self, replica: u64, token: &str, path: &str, body: Value) -> Value {
        self.cluster.write(replica, token, path, body).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Submits `sql` at `parallelism` through the leader; answers the job's id.
    async fn submit(&self, name: &str, sql: &str, parallelism: u32) -> String {
        let leader = self.leader().await;
        let body = json!({"name": name, "sql": sql, "parallelism": parallelism});
        let answer = self.write(leader, &self.token, "/api/v1/jobs", body).await;
        answer["id"].as_str().expect("the job's id").to_string()
    }

    /// The job's detail, as the leader has it.
    async fn job(&self, job: &str) -> Value {
        let leader = self.leader().await;
        match self.call(Method::GET, leader, &self.token, &format!("/api/v1/jobs/{job}"), None).await {
            Some((200, detail)) => detail,
            answer => panic!("GET job {job} from the leader {leader}: {answer:?}"),
        }
    }

    /// Polls the job's detail until `wanted` holds of it; fails after `within`, or at once if the
    /// job ended FAILED or CANCELED and `wanted` did not hold.
    async fn wait_for_job(&self, job: &str, what: &str, within: Duration, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let detail = self.job(job).await;
            if wanted(&detail) {
                return detail;
            }
            let failed = matches!(detail["status"].as_str(), Some("FAILED" | "CANCELED"));
            if failed || Instant::now() > deadline {
                panic!("job {job} is not {what} within {within:?}: {}", self.describe(job, &detail).await);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// What a failure message shows of a job: its state at a glance (not its SQL) and its
    /// exceptions.
    async fn describe(&self, job: &str, detail: &Value) -> String {
        let glance = json!({
            "status": detail["status"],
            "deployment": detail["deployment"],
            "last_checkpoint": detail["last_checkpoint"],
        });
        let leader = self.leader().await;
        let exceptions =
            match self.call(Method::GET, leader, &self.token, &format!("/api/v1/jobs/{job}/exceptions"), None).await {
                Some((200, answer)) => answer["exceptions"].clone(),
                answer => json!(format!("not known: {answer:?}")),
            };
        format!("{glance}; exceptions {exceptions}")
    }
}

/// A job's `deployment`: its attempt and worker; `None` when it has none.
fn deployment(deployment: &Value) -> Option<(u64, String)> {
    Some((deployment["attempt"].as_u64()?, deployment["worker"].as_str()?.to_string()))
}

fn last_checkpoint(detail: &Value) -> Option<u64> {
    detail["last_checkpoint"]["id"].as_u64()
}

fn is_running_with_a_checkpoint(detail: &Value) -> bool {
    detail["status"] == "RUNNING" && deployment(&detail["deployment"]).is_some() && last_checkpoint(detail).is_some()
}

/// An unbounded Nexmark source paced at 1,000 events/s, its bids counted per auction and
/// 2-second window (keyed state on both subtasks) into a JSON filesystem sink at `out`;
/// a checkpoint every second.
fn nexmark_job(out: &Path) -> String {
    format!(
        "SET 'execution.checkpointing.interval' = '1 s';
CREATE TABLE nexmark (
    event_type INT,
    person ROW<id BIGINT, name VARCHAR, emailAddress VARCHAR, creditCard VARCHAR, city VARCHAR,
               state VARCHAR, `dateTime` TIMESTAMP(3), extra VARCHAR>,
    auction ROW<id BIGINT, itemName VARCHAR, description VARCHAR, initialBid BIGINT, reserve BIGINT,
                `dateTime` TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT, category BIGINT, extra VARCHAR>,
    bid ROW<auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
            `dateTime` TIMESTAMP(3), extra VARCHAR>,
    `dateTime` AS
        CASE
            WHEN event_type = 0 THEN person.`dateTime`
            WHEN event_type = 1 THEN auction.`dateTime`
            ELSE bid.`dateTime`
        END,
    WATERMARK FOR `dateTime` AS `dateTime` - INTERVAL '1' SECOND
) WITH ('connector' = 'nexmark', 'first-event.rate' = '1000', 'rate.limited' = 'true');
CREATE VIEW bid AS SELECT bid.auction, bid.price, `dateTime` FROM nexmark WHERE event_type = 2;
CREATE TABLE bids_per_auction (
    window_start TIMESTAMP(3), window_end TIMESTAMP(3), auction BIGINT, bids BIGINT, max_price BIGINT
) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');
INSERT INTO bids_per_auction
SELECT window_start, window_end, auction, COUNT(*), MAX(price)
FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '2' SECOND))
GROUP BY window_start, window_end, auction;
",
        out.display()
    )
}

/// A datagen source of ids 1..=`rows` paced at `per_second` into a JSON filesystem sink at
/// `out`, checkpointed every `interval_ms`.
fn datagen_job(rows: u64, per_second: u64, interval_ms: u64, out: &Path) -> String {
    format!(
        "SET 'execution.checkpointing.interval' = '{interval_ms} ms';
CREATE TABLE g (id BIGINT, k INT) WITH ('connector' = 'datagen', 'number-of-rows' = '{rows}',
  'rows-per-second' = '{per_second}', 'fields.id.kind' = 'sequence', 'fields.id.start' = '1',
  'fields.id.end' = '{rows}', 'fields.k.min' = '1', 'fields.k.max' = '20');
CREATE TABLE out (id BIGINT, k INT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');
INSERT INTO out SELECT id, k FROM g;
",
        out.display()
    )
}

/// The sink at `out` published every id of 1..=`rows` exactly once, and nothing else.
fn assert_every_id_once(out: &Path, rows: u64) {
    let published = ids(&published(out));
    let missing: Vec<u64> = (1..=rows).filter(|id| !published.contains_key(id)).collect();
    let repeated: Vec<(&u64, &u32)> = published.iter().filter(|(_, count)| **count > 1).collect();
    let foreign: Vec<&u64> = published.keys().filter(|id| !(1..=rows).contains(*id)).collect();
    assert!(
        missing.is_empty() && repeated.is_empty() && foreign.is_empty(),
        "not every id once: {} missing (first {:?}), {} repeated (first {:?}), {} unexpected (first {:?})",
        missing.len(),
        &missing[..missing.len().min(10)],
        repeated.len(),
        &repeated[..repeated.len().min(10)],
        foreign.len(),
        &foreign[..foreign.len().min(10)],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_kill_9_neither_restarts_the_job_nor_stops_its_checkpoints() {
    let mut sandbox = Sandbox::start("leader-kill-9", 2, 2).await;
    let out = sandbox.path("out");
    let job = sandbox.submit("nexmark bids per auction", &nexmark_job(&out), 2).await;
    let running = sandbox
        .wait_for_job(&job, "RUNNING with a deployment and a checkpoint", WAIT, is_running_with_a_checkpoint)
        .await;
    let (attempt, worker) = deployment(&running["deployment"]).expect("waited for a deployment");
    let checkpoint = last_checkpoint(&running).expect("a checkpoint");
    eprintln!(
        "{:?}: job {job} runs on {worker} (attempt {attempt}), checkpoint {checkpoint}",
        sandbox.started.elapsed()
    );

    let old_leader = sandbox.leader().await;
    // Any replica answers with the live figures, which the leader holds: a follower asks it.
    let follower = (1..=3).find(|id| *id != old_leader).expect("three replicas");
    let path = format!("/api/v1/jobs/{job}");
    let seen = sandbox.call(Method::GET, follower, &sandbox.token, &path, None).await;
    let Some((200, detail)) = seen else { panic!("GET the job from follower {follower}: {seen:?}") };
    // Both vertices (the source's chain, and the window aggregation behind a hash exchange)
    // have taken rows in, and the first has sent them on, under a watermark.
    let vertices = detail["vertices"].as_array().cloned().unwrap_or_default();
    let counted = vertices.len() == 2 && vertices.iter().all(|v| v["records_in"].as_u64() > Some(0));
    let sent = vertices.first().is_some_and(|v| v["records_out"].as_u64() > Some(0) && v["watermark"].is_i64());
    assert!(counted && sent, "follower {follower} shows no live figures: {}", detail["vertices"]);
    sandbox.kill_9_replica(old_leader);
    let killed_at = Instant::now();
    let new_leader = sandbox.leader().await;
    assert_ne!(new_leader, old_leader, "replica {old_leader} was killed, yet is named leader");
    sandbox.write(new_leader, ROOT_TOKEN, "/api/v1/tenants", json!({"id": "after-failover"})).await;
    eprintln!("kill -9 of leader {old_leader} to a write accepted by leader {new_leader}: {:?}", killed_at.elapsed());

    // Three checkpoints newer than the one before the kill: more than one in flight at the kill
    // could account for. Throughout, the job runs where it ran, in the same attempt.
    let wanted = checkpoint + 3;
    let deadline = Instant::now() + WAIT;
    loop {
        let detail = sandbox.job(&job).await;
        let undisturbed =
            detail["status"] == "RUNNING" && deployment(&detail["deployment"]) == Some((attempt, worker.clone()));
        if !undisturbed {
            let now = sandbox.describe(&job, &detail).await;
            panic!("the leader change disturbed the job (RUNNING, attempt {attempt} on {worker} before): {now}");
        }
        if last_checkpoint(&detail) >= Some(wanted) {
            break;
        }
        if Instant::now() > deadline {
            let now = sandbox.describe(&job, &detail).await;
            panic!("no checkpoint {wanted} within {WAIT:?} of the new leader: {now}");
        }
        tokio::time::sleep(POLL).await;
    }
    eprintln!("kill -9 of the leader to checkpoint {wanted}: {:?}", killed_at.elapsed());
    // The windows the checkpoints committed are in the sink, each auction's once per window:
    // the new leader committed no checkpoint's output twice.
    let deadline = Instant::now() + WAIT;
    while published(&out).is_empty() {
        assert!(Instant::now() < deadline, "no window published in {} within {WAIT:?}", out.display());
        tokio::time::sleep(POLL).await;
    }
    let mut windows = BTreeMap::new();
    for (line, count) in published(&out) {
        let row: Value = serde_json::from_str(&line).expect("a JSON row");
        *windows.entry((row["window_start"].to_string(), row["auction"].to_string())).or_insert(0) += count;
    }
    let repeated: Vec<_> = windows.iter().filter(|(_, count)| **count > 1).collect();
    assert!(repeated.is_empty(), "windows published more than once, of {}: {repeated:?}", windows.len());

    sandbox.write(new_leader, &sandbox.token, &format!("/api/v1/jobs/{job}/cancel"), json!({})).await;
    sandbox.wait_for_job(&job, "CANCELED", WAIT, |detail| detail["status"] == "CANCELED").await;
    eprintln!("the test took {:?} once its turn came", sandbox.started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_kill_9_moves_its_job_to_the_other_worker_with_exactly_once_output() {
    // About 10 s of input at parallelism 2, a checkpoint every 500 ms.
    const ROWS: u64 = 30_000;
    let mut sandbox = Sandbox::start("worker-kill-9", 2, 2).await;
    let out = sandbox.path("out");
    let job = sandbox.submit("datagen ids", &datagen_job(ROWS, 3_000, 500, &out), 2).await;
    let running = sandbox
        .wait_for_job(&job, "RUNNING with a deployment and a checkpoint", WAIT, is_running_with_a_checkpoint)
        .await;
    let (attempt, victim) = deployment(&running["deployment"]).expect("waited for a deployment");
    eprintln!(
        "{:?}: job {job} runs on {victim} (attempt {attempt}), checkpoint {:?}",
        sandbox.started.elapsed(),
        last_checkpoint(&running)
    );
    sandbox.kill_9_worker(&victim);
    let killed_at = Instant::now();
    let survivor = sandbox.cluster.worker_ids().into_iter().find(|id| *id != victim).expect("another worker");

    // Every status and deployment the job goes through until it finishes.
    let mut statuses = vec!["RUNNING".to_string()];
    let mut deployments = vec![(attempt, victim.clone())];
    let deadline = killed_at + Duration::from_secs(90);
    loop {
        let detail = sandbox.job(&job).await;
        let status = detail["status"].as_str().expect("a job has a status");
        if statuses.last().is_none_or(|last| last != status) {
            eprintln!("{:?} after the kill: {status}", killed_at.elapsed());
            statuses.push(status.to_string());
        }
        if let Some(now) = deployment(&detail["deployment"])
            && deployments.last() != Some(&now)
        {
            eprintln!("{:?} after the kill: deployed on {} (attempt {})", killed_at.elapsed(), now.1, now.0);
            deployments.push(now);
        }
        if status == "FINISHED" {
            break;
        }
        let ended = matches!(status, "FAILED" | "CANCELED");
        if ended || Instant::now() > deadline {
            let now = sandbox.describe(&job, &detail).await;
            panic!("the job did not finish after its worker was killed; statuses {statuses:?}; {now}");
        }
        tokio::time::sleep(POLL).await;
    }
    eprintln!("kill -9 of the worker to FINISHED: {:?}; statuses {statuses:?}", killed_at.elapsed());

    let (last_attempt, last_worker) = deployments.last().expect("the first deployment at least");
    assert_eq!(*last_worker, survivor, "the job did not move to the surviving worker: deployments {deployments:?}");
    assert!(*last_attempt > attempt, "the move did not raise the attempt: deployments {deployments:?}");

    assert_every_id_once(&out, ROWS);
    eprintln!("the test took {:?} once its turn came", sandbox.started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_quorum_writes_get_503_reads_answer_and_the_job_runs_on_when_it_returns() {
    // About 15 s of input at parallelism 2, a checkpoint every 500 ms.
    const ROWS: u64 = 30_000;
    let mut sandbox = Sandbox::start("quorum-loss", 2, 2).await;
    let out = sandbox.path("out");
    let job = sandbox.submit("datagen ids", &datagen_job(ROWS, 2_000, 500, &out), 2).await;
    let running = sandbox
        .wait_for_job(&job, "RUNNING with a deployment and a checkpoint", WAIT, is_running_with_a_checkpoint)
        .await;
    let before = deployment(&running["deployment"]).expect("waited for a deployment");
    let checkpoint = last_checkpoint(&running).expect("a checkpoint");

    // Two of three replicas go: the leader stays, alone, without a quorum.
    let survivor = sandbox.leader().await;
    let gone: Vec<u64> = (1..=3).filter(|id| *id != survivor).collect();
    for id in &gone {
        sandbox.kill_9_replica(*id);
    }
    let lost_at = Instant::now();
    let savepoint = format!("/api/v1/jobs/{job}/savepoints");
    let answer = sandbox.call(Method::POST, survivor, &sandbox.token, &savepoint, Some(json!({}))).await;
    let Some((status, problem)) = answer else { panic!("replica {survivor} did not answer a write") };
    assert_eq!(status, 503, "a write without a quorum: {problem}");
    assert_eq!(problem["code"], "no-quorum", "a write without a quorum: {problem}");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("quorum") && detail.contains("retry"),
        "the 503 says what is wrong and what to do: {detail}"
    );
    // Committed state still reads, without linearizability.
    let path = format!("/api/v1/jobs/{job}");
    let read = sandbox.call(Method::GET, survivor, &sandbox.token, &path, None).await;
    let Some((200, detail)) = read else { panic!("a read without a quorum: {read:?}") };
    assert_eq!(detail["status"], "RUNNING", "the job as the survivor has it: {detail}");
    eprintln!("{:?} without a quorum: writes refused, reads answered", lost_at.elapsed());

    for id in gone {
        sandbox.restart_replica(id);
    }
    let leader = sandbox.leader().await;
    sandbox.write(leader, ROOT_TOKEN, "/api/v1/tenants", json!({"id": "after-the-outage"})).await;
    eprintln!("{:?} after the quorum was lost, a write is accepted again", lost_at.elapsed());

    // The outage was shorter than a worker's lease: the job ran on, in the same attempt, and
    // its checkpoints resumed.
    let finished = sandbox.wait_for_job(&job, "FINISHED", Duration::from_secs(90), |d| d["status"] == "FINISHED").await;
    assert_eq!(deployment(&finished["deployment"]), Some(before.clone()), "the job was redeployed");
    assert!(last_checkpoint(&finished) > Some(checkpoint + 3), "checkpoints did not go on: {finished}");
    assert_every_id_once(&out, ROWS);
    eprintln!("the test took {:?} once its turn came", sandbox.started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_on_a_worker_takes_a_savepoint_and_rescales_with_exactly_once_output() {
    // About 10 s of input, a checkpoint every 500 ms.
    const ROWS: u64 = 20_000;
    let sandbox = Sandbox::start("savepoint-rescale", 2, 2).await;
    let out = sandbox.path("out");
    let job = sandbox.submit("datagen ids", &datagen_job(ROWS, 2_000, 500, &out), 2).await;
    let running = sandbox
        .wait_for_job(&job, "RUNNING with a deployment and a checkpoint", WAIT, is_running_with_a_checkpoint)
        .await;
    let (attempt, _) = deployment(&running["deployment"]).expect("waited for a deployment");
    let leader = sandbox.leader().await;

    // A savepoint is taken on the worker and recorded; the job goes on in the same attempt.
    let asked = sandbox.write(leader, &sandbox.token, &format!("/api/v1/jobs/{job}/savepoints"), json!({})).await;
    let savepoint = asked["savepoint"].as_str().expect("a savepoint id").to_string();
    let deadline = Instant::now() + WAIT;
    loop {
        let path = format!("/api/v1/jobs/{job}/savepoints");
        let listed = sandbox.call(Method::GET, leader, &sandbox.token, &path, None).await;
        let taken = listed.as_ref().and_then(|(_, body)| body["savepoints"].as_array().cloned()).unwrap_or_default();
        if taken.iter().any(|sp| sp["id"] == savepoint.as_str()) {
            break;
        }
        assert!(Instant::now() < deadline, "savepoint {savepoint} not recorded within {WAIT:?}: {listed:?}");
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(
        deployment(&sandbox.job(&job).await["deployment"]).map(|d| d.0),
        Some(attempt),
        "a savepoint redeployed"
    );

    // A rescale stops the attempt with a savepoint and deploys the next at parallelism 1.
    sandbox.write(leader, &sandbox.token, &format!("/api/v1/jobs/{job}/rescale"), json!({"parallelism": 1})).await;
    let rescaled = sandbox
        .wait_for_job(&job, "RUNNING in a new attempt", WAIT, |detail| {
            detail["status"] == "RUNNING" && deployment(&detail["deployment"]).is_some_and(|d| d.0 > attempt)
        })
        .await;
    assert_eq!(rescaled["vertices"][0]["parallelism"], 1, "{}", rescaled["vertices"]);

    sandbox.wait_for_job(&job, "FINISHED", Duration::from_secs(90), |d| d["status"] == "FINISHED").await;
    let path = format!("/api/v1/jobs/{job}/exceptions");
    let exceptions = sandbox.call(Method::GET, leader, &sandbox.token, &path, None).await;
    assert_eq!(exceptions.map(|(_, body)| body["exceptions"].clone()), Some(json!([])), "nothing failed");
    assert_every_id_once(&out, ROWS);
    eprintln!("the test took {:?} once its turn came", sandbox.started.elapsed());
}

/// A bounded Nexmark source (60,000 events paced at 6,000/s), its bids counted per auction
/// and 2-second window into a JSON filesystem sink at `out` (a hash exchange between the
/// source's chain and the window aggregation); a checkpoint every 500 ms.
fn bounded_nexmark_job(out: &Path) -> String {
    nexmark_job(out)
        .replace("'execution.checkpointing.interval' = '1 s'", "'execution.checkpointing.interval' = '500 ms'")
        .replace("'first-event.rate' = '1000'", "'events.num' = '60000', 'first-event.rate' = '6000'")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_larger_than_a_worker_runs_spread_over_workers_and_survives_the_kill_of_one() {
    // Over TLS everywhere: the API, Raft and forwarding between replicas, heartbeats, the
    // leader's deploys, the parts' checkpoint notes to each other and the shuffle.
    let mut sandbox =
        Sandbox::start_with("spread", 3, 2, Extras { shuffle: true, tls: true, ..Extras::default() }, &[]).await;
    let out = sandbox.path("out");
    let script = bounded_nexmark_job(&out);
    assert!(script.contains("'events.num' = '60000'"), "the script is bounded: {script}");
    // Parallelism 3 on workers of 2 slots: the attempt is spread over two of them.
    let job = sandbox.submit("nexmark bids per auction", &script, 3).await;
    let running = sandbox
        .wait_for_job(&job, "RUNNING with a deployment and a checkpoint", WAIT, is_running_with_a_checkpoint)
        .await;
    let members = running["deployment"]["members"].as_array().cloned().unwrap_or_default();
    assert_eq!(members.len(), 1, "spread over two workers: {}", running["deployment"]);
    let (attempt, lead) = deployment(&running["deployment"]).expect("waited for a deployment");
    // Neither listener of a replica answers plain HTTP.
    let plain = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("an HTTP client");
    let leader = sandbox.leader().await;
    for url in [sandbox.cluster.url(leader, "/api/v1/jobs"), sandbox.cluster.internal_url(leader, "/raft/cluster")] {
        let url = url.replacen("https://", "http://", 1);
        let answer = plain.get(&url).bearer_auth(&sandbox.token).send().await;
        assert!(answer.is_err(), "{url} answered plain HTTP: {answer:?}");
    }

    // The lead part holds the coordinator: its loss fails the attempt, which starts again,
    // spread over the two workers left, from the latest checkpoint.
    sandbox.kill_9_worker(&lead);
    let moved = sandbox
        .wait_for_job(&job, "RUNNING in a new attempt", Duration::from_secs(60), |detail| {
            detail["status"] == "RUNNING" && deployment(&detail["deployment"]).is_some_and(|d| d.0 > attempt)
        })
        .await;
    assert!(!moved["deployment"].to_string().contains(&lead), "the dead worker got a part: {}", moved["deployment"]);
    sandbox.wait_for_job(&job, "FINISHED", Duration::from_secs(90), |d| d["status"] == "FINISHED").await;

    // The failure-free run of the same script, in one process, is the reference.
    let reference_out = sandbox.path("reference");
    let reference_script = sandbox.path("reference.sql");
    std::fs::write(&reference_script, bounded_nexmark_job(&reference_out)).expect("the reference script");
    let reference = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "--quiet", "-p", "3"])
        .arg(&reference_script)
        // Its checkpoints (`./weir-checkpoints` by default) stay in the sandbox.
        .current_dir(sandbox.path(""))
        .output()
        .expect("weir run starts");
    assert!(reference.status.success(), "the reference run failed: {}", String::from_utf8_lossy(&reference.stderr));
    let (got, want) = (published(&out), published(&reference_out));
    assert!(!want.is_empty(), "the reference run published nothing");
    assert!(
        got == want,
        "{} rows published, {} in the failure-free run",
        got.values().sum::<u32>(),
        want.values().sum::<u32>()
    );
    eprintln!("the test took {:?} once its turn came", sandbox.started.elapsed());
}

/// A secret an operator put in the environment of every process (the S3 secret key, which moto
/// takes whatever it is).
const PLANTED_IN_ENV: &str = "planted-env-secret-7f3a9c";
/// A secret a user put in a job's options.
const PLANTED_IN_JOB: &str = "planted-job-secret-b81e44";

/// A secret planted in a job's options and in every process's environment shows up in no API
/// answer (the job's detail shows it as `******`) and in no log line of any process, at debug
/// level for Weir's own crates and openraft; the job runs with it all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_a_jobs_options_and_the_environment_show_up_in_no_answer_and_no_log() {
    let env = [
        ("AWS_SECRET_ACCESS_KEY", PLANTED_IN_ENV),
        ("WEIR_LOG", "info,weir=debug,weir_control_plane=debug,weir_workers=debug,openraft=debug"),
    ];
    let sandbox = Sandbox::start_with("planted-secrets", 1, 2, Extras::default(), &env).await;
    let out = sandbox.path("out");
    let sql = format!("SET 's3.secret-key' = '{PLANTED_IN_JOB}';\n{}", datagen_job(300, 300, 200, &out));
    let job = sandbox.submit("planted", &sql, 1).await;
    let detail = sandbox.wait_for_job(&job, "finished", WAIT, |detail| detail["status"] == "FINISHED").await;
    assert_every_id_once(&out, 300);
    let shown = detail["sql"].as_str().expect("the job's script");
    assert!(shown.contains("'s3.secret-key' = '******'"), "{shown}");
    assert_eq!(detail["config"]["s3.secret-key"], "******", "{detail}");

    let leader = sandbox.leader().await;
    let mut answers = vec![detail.to_string()];
    let reads = ["/api/v1/jobs", "/api/v1/cluster", "/api/v1/workers", "/api/v1/metrics", "/api/v1/healthz"];
    let job_reads = ["exceptions", "checkpoints", "savepoints"].map(|what| format!("/api/v1/jobs/{job}/{what}"));
    for path in reads.iter().map(|p| p.to_string()).chain(job_reads) {
        for replica in sandbox.cluster.replica_ids() {
            let answer = sandbox.call(Method::GET, replica, &sandbox.token, &path, None).await;
            answers.push(format!("{path} on {replica} (leader {leader}): {answer:?}"));
        }
    }
    for answer in &answers {
        for planted in [PLANTED_IN_ENV, PLANTED_IN_JOB] {
            assert!(!answer.contains(planted), "{planted} in {answer}");
        }
    }
    let logs = sandbox.path("logs");
    let mut lines = 0;
    for entry in std::fs::read_dir(&logs).expect("the logs") {
        let path = entry.expect("a log").path();
        let text = std::fs::read_to_string(&path).expect("a log reads");
        lines += text.lines().count();
        for planted in [PLANTED_IN_ENV, PLANTED_IN_JOB] {
            let line = text.lines().find(|line| line.contains(planted));
            assert!(line.is_none(), "{planted} in {}: {line:?}", path.display());
        }
    }
    assert!(lines > 100, "the processes logged at debug level ({lines} lines)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_provisioner_starts_the_workers_a_job_needs_replaces_a_killed_one_and_stops_them_after() {
    // About 8 s of input, a checkpoint every 500 ms.
    const ROWS: u64 = 16_000;
    let extras = Extras { local_workers: Some(2), ..Extras::default() };
    let sandbox = Sandbox::start_with("local-provisioner", 0, 0, extras, &[]).await;
    let leader = sandbox.leader().await;
    let leader_pid = sandbox.cluster.replica_pid(leader).expect("the leader runs");
    let workers = || async {
        let listed = sandbox.call(Method::GET, leader, ROOT_TOKEN, "/api/v1/workers", None).await;
        listed.map_or(usize::MAX, |(_, body)| body["workers"].as_array().map_or(usize::MAX, Vec::len))
    };
    assert_eq!(workers().await, 0, "no worker before a job needs one");
    assert!(children_of(leader_pid, "worker").is_empty());

    let out = sandbox.path("out");
    let job = sandbox.submit("datagen ids", &datagen_job(ROWS, 2_000, 500, &out), 2).await;
    sandbox.wait_for_job(&job, "RUNNING with a deployment and a checkpoint", WAIT, is_running_with_a_checkpoint).await;
    let started = children_of(leader_pid, "worker");
    assert_eq!(started.len(), 1, "one worker of 2 slots for a job at parallelism 2: {started:?}");
    assert_eq!(workers().await, 1);

    // The worker is killed: the leader starts another, and the job resumes on it.
    let killed = Command::new("kill").args(["-9", &started[0].to_string()]).status().expect("kill runs");
    assert!(killed.success());
    let deadline = Instant::now() + WAIT;
    loop {
        let now = children_of(leader_pid, "worker");
        if now.len() == 1 && now[0] != started[0] {
            break;
        }
        assert!(Instant::now() < deadline, "no worker replaced the killed one within {WAIT:?}: {now:?}");
        tokio::time::sleep(POLL).await;
    }
    sandbox.wait_for_job(&job, "FINISHED", Duration::from_secs(90), |d| d["status"] == "FINISHED").await;
    assert_every_id_once(&out, ROWS);

    // Nothing needs a worker: after the cool-down, none is left.
    let deadline = Instant::now() + WAIT;
    while !children_of(leader_pid, "worker").is_empty() || workers().await != 0 {
        assert!(Instant::now() < deadline, "workers still run {WAIT:?} after the job ended");
        tokio::time::sleep(POLL).await;
    }

    // A leader killed with `kill -9` leaves no worker of its own behind.
    let out = sandbox.path("out-2");
    let job = sandbox.submit("datagen ids", &datagen_job(ROWS, 2_000, 500, &out), 2).await;
    sandbox.wait_for_job(&job, "RUNNING with a deployment and a checkpoint", WAIT, is_running_with_a_checkpoint).await;
    let orphans = children_of(leader_pid, "worker");
    assert_eq!(orphans.len(), 1, "{orphans:?}");
    let mut sandbox = sandbox;
    sandbox.kill_9_replica(leader);
    let deadline = Instant::now() + Duration::from_secs(10);
    // Gone, or a zombie nobody reaped yet (PID 1 of a container may not).
    let alive = |pid: &u32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.rsplit_once(')').is_some_and(|(_, rest)| rest.split_whitespace().next() != Some("Z"))
    };
    while orphans.iter().any(alive) {
        assert!(Instant::now() < deadline, "the killed leader's workers {orphans:?} still run");
        tokio::time::sleep(POLL).await;
    }
    // The next leader starts workers of its own, and the job finishes exactly once.
    sandbox.wait_for_job(&job, "FINISHED", Duration::from_secs(90), |d| d["status"] == "FINISHED").await;
    assert_every_id_once(&out, ROWS);
    eprintln!("the test took {:?} once its turn came", sandbox.started.elapsed());
}
