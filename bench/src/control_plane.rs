//! `weir bench api` and `weir bench failover`: the control plane's bars, measured against real
//! `weir control-plane` and `weir worker` processes on loopback.
//!
//! - **api**: `GET /api/v1/jobs/{id}` of a running job at a fixed request rate (open loop:
//!   requests start on a schedule, not when the previous one answers, so a slow answer cannot
//!   hide the ones behind it), on the leader and on a follower; latency percentiles per replica.
//! - **failover**: a checkpointed job with an exactly-once sink runs on the workers while the
//!   leader is killed (`kill -9`) again and again; each time, the time until an API write (a
//!   tenant created through a surviving replica) succeeds. The killed replica is restarted and
//!   caught up before the next kill. At the end: the job still runs in its first attempt (no
//!   kill restarted it), its checkpoints went on, and once it finishes its output holds every
//!   row exactly once.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};

/// The operator's root token the benchmark gives its replicas.
const ROOT_TOKEN: &str = "weir-bench-root-token-0123456789abcdef";
/// A job the API accepts: unbounded datagen into a blackhole.
const JOB_SQL: &str = "CREATE TABLE src (id BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '10');\n\
                       CREATE TABLE out (id BIGINT) WITH ('connector' = 'blackhole');\n\
                       INSERT INTO out SELECT id FROM src;\n";
const WAIT: Duration = Duration::from_secs(30);

#[derive(Args)]
pub struct ApiArgs {
    /// Replicas in the cluster.
    #[arg(long, default_value_t = 3)]
    replicas: u64,
    /// Workers (2 slots each) that run the job being read.
    #[arg(long, default_value_t = 1)]
    workers: u32,
    /// Requests per second, per replica measured.
    #[arg(long, default_value_t = 200)]
    rps: u32,
    /// Seconds of load per replica.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
}

#[derive(Args)]
pub struct FailoverArgs {
    /// How many times the leader is killed.
    #[arg(long, default_value_t = 10)]
    kills: u32,
    /// Workers (2 slots each) that run the job; 0: no job, API writes only.
    #[arg(long, default_value_t = 2)]
    workers: u32,
}

/// One replica process; its data directory outlives it, so it restarts with its log.
struct Replica {
    id: u64,
    address: String,
    data: PathBuf,
    /// Where jobs checkpoint (`--state-dir`), shared by the workers.
    state: PathBuf,
    child: Option<Child>,
}

impl Replica {
    fn start(&mut self, peers: &str) -> Result<()> {
        let exe = std::env::current_exe().context("the weir binary's path")?;
        let mut child = Command::new(exe)
            .args(["control-plane", "--id", &self.id.to_string(), "--listen", &self.address, "--peers", peers])
            .arg("--data")
            .arg(&self.data)
            .arg("--state-dir")
            .arg(&self.state)
            .env("WEIR_ROOT_TOKEN", ROOT_TOKEN)
            .env("WEIR_LOG", "error")
            .stdout(Stdio::piped())
            .spawn()
            .context("weir control-plane does not start")?;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
        if !line.contains("listening on") {
            let _ = child.kill();
            let _ = child.wait();
            bail!("replica {} did not start (its port may be taken): {line:?}", self.id);
        }
        self.child = Some(child);
        Ok(())
    }

    fn kill_9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            // SIGKILL: the process gets no chance to step down or flush anything.
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.kill_9();
    }
}

struct Cluster {
    replicas: BTreeMap<u64, Replica>,
    workers: Vec<Child>,
    peers: String,
    client: reqwest::Client,
    dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            let _ = worker.kill();
            let _ = worker.wait();
        }
    }
}

impl Cluster {
    fn start(n: u64) -> Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let mut replicas = BTreeMap::new();
        for id in 1..=n {
            // A free port, released for the replica to bind (a race is possible; start fails then).
            let address = TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string();
            let (data, state) = (dir.path().join(format!("cp{id}")), dir.path().join("state"));
            replicas.insert(id, Replica { id, address, data, state, child: None });
        }
        let peers = replicas.values().map(|r| format!("{}={}", r.id, r.address)).collect::<Vec<_>>().join(",");
        for replica in replicas.values_mut() {
            replica.start(&peers)?;
        }
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
        Ok(Cluster { replicas, workers: Vec::new(), peers, client, dir })
    }

    /// Starts `n` workers of 2 slots each and waits until the leader lists them.
    async fn start_workers(&mut self, n: u32) -> Result<()> {
        let exe = std::env::current_exe().context("the weir binary's path")?;
        let urls = self.replicas.values().map(|r| r.url("")).collect::<Vec<_>>().join(",");
        for _ in 0..n {
            let mut child = Command::new(&exe)
                .args(["worker", "--control-plane", &urls, "--slots", "2"])
                .env("WEIR_ROOT_TOKEN", ROOT_TOKEN)
                .env("WEIR_LOG", "error")
                .stdout(Stdio::piped())
                .spawn()
                .context("weir worker does not start")?;
            let mut line = String::new();
            std::io::BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
            self.workers.push(child);
            if !line.contains("listening on") {
                bail!("a worker did not start: {line:?}");
            }
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let leader = self.leader().await?;
            let url = self.replicas[&leader].url("/api/v1/workers");
            let listed = match self.client.get(url).bearer_auth(ROOT_TOKEN).send().await {
                Ok(response) => response.json::<Value>().await.ok(),
                Err(_) => None,
            };
            let count = listed.as_ref().and_then(|v| v["workers"].as_array()).map_or(0, Vec::len);
            if count >= n as usize {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{count} of {n} workers registered within {WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET path` on `replica` with `token`, as JSON.
    async fn get(&self, replica: u64, token: &str, path: &str) -> Result<Value> {
        let response = self.client.get(self.replicas[&replica].url(path)).bearer_auth(token).send().await?;
        if !response.status().is_success() {
            bail!("GET {path}: {}", response.status());
        }
        Ok(response.json().await?)
    }

    /// The leader as the live replicas agree on it.
    async fn leader(&self) -> Result<u64> {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            for replica in self.replicas.values().filter(|r| r.child.is_some()) {
                if let Ok(response) = self.client.get(replica.url("/raft/cluster")).send().await
                    && let Ok(view) = response.json::<Value>().await
                    && let Some(leader) = view["leader"].as_u64()
                    && self.replicas.get(&leader).is_some_and(|r| r.child.is_some())
                {
                    return Ok(leader);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("no leader within {WAIT:?}")
    }

    /// Creates a tenant and an admin token through `replica`; answers the token's secret.
    async fn tenant_token(&self, replica: u64) -> Result<String> {
        let post = |path: &'static str, body: Value| {
            let request = self.client.post(self.replicas[&replica].url(path)).bearer_auth(ROOT_TOKEN).json(&body);
            async move {
                let response = request.send().await?;
                if !response.status().is_success() {
                    bail!("POST {path}: {} {}", response.status(), response.text().await?);
                }
                Ok::<_, anyhow::Error>(response)
            }
        };
        post("/api/v1/tenants", json!({"id": "bench"})).await?;
        let response = post("/api/v1/tenants/bench/tokens", json!({"role": "admin"})).await?;
        let body: Value = response.json().await?;
        body["secret"].as_str().map(str::to_string).context("the token's secret")
    }

    /// Submits `sql` through `replica`; `Ok(None)` when the write is refused for now (no quorum).
    async fn submit(&self, replica: u64, token: &str, sql: &str) -> Result<Option<String>> {
        self.post(replica, token, "/api/v1/jobs", json!({"name": "bench", "sql": sql, "parallelism": 2})).await
    }

    /// `POST path` through `replica`: the answer's `id`, or `Ok(None)` when the write is refused
    /// for now (no quorum, an election, the replica is down).
    async fn post(&self, replica: u64, token: &str, path: &str, body: Value) -> Result<Option<String>> {
        let response = self.client.post(self.replicas[&replica].url(path)).bearer_auth(token).json(&body).send().await;
        match response {
            Ok(r) if r.status().is_success() => {
                let body: Value = r.json().await?;
                Ok(body["id"].as_str().map(str::to_string))
            }
            Ok(r) if r.status().is_server_error() => Ok(None),
            Ok(r) => bail!("POST {path}: {} {}", r.status(), r.text().await?),
            Err(_) => Ok(None),
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

pub fn api(args: ApiArgs) -> Result<()> {
    if args.rps == 0 || args.seconds == 0 {
        bail!("--rps and --seconds must be positive");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut cluster = Cluster::start(args.replicas)?;
        cluster.start_workers(args.workers).await?;
        let leader = cluster.leader().await?;
        let token = cluster.tenant_token(leader).await?;
        let job = cluster.submit(leader, &token, JOB_SQL).await?.context("the job submission was refused")?;
        let follower = cluster.replicas.keys().copied().find(|id| *id != leader);
        println!("GET /api/v1/jobs/{{id}} at {} requests/s for {} s, open loop", args.rps, args.seconds);
        println!("| replica | requests | errors | p50 ms | p90 ms | p99 ms | max ms |");
        println!("| --- | --- | --- | --- | --- | --- | --- |");
        for (role, id) in [("leader", Some(leader)), ("follower", follower)] {
            let Some(id) = id else { continue };
            // A follower must have applied the job before it can answer for it.
            let url = cluster.replicas[&id].url(&format!("/api/v1/jobs/{job}"));
            let deadline = Instant::now() + WAIT;
            while !cluster.client.get(&url).bearer_auth(&token).send().await.is_ok_and(|r| r.status().is_success()) {
                if Instant::now() > deadline {
                    bail!("replica {id} does not know job {job}");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let (latencies, errors) = load(&cluster.client, &url, &token, args.rps, args.seconds).await;
            let mut sorted = latencies;
            sorted.sort();
            println!(
                "| {role} ({id}) | {} | {errors} | {} | {} | {} | {} |",
                sorted.len(),
                ms(percentile(&sorted, 50.0)),
                ms(percentile(&sorted, 90.0)),
                ms(percentile(&sorted, 99.0)),
                ms(sorted.last().copied().unwrap_or_default()),
            );
        }
        Ok(())
    })
}

/// Sends GETs on a fixed schedule for `seconds`; answers the latencies of the successful ones
/// and the count of failed ones.
async fn load(client: &reqwest::Client, url: &str, token: &str, rps: u32, seconds: u64) -> (Vec<Duration>, u64) {
    let interval = Duration::from_secs_f64(1.0 / rps as f64);
    let start = tokio::time::Instant::now();
    let total = rps as u64 * seconds;
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..total {
        tokio::time::sleep_until(start + interval * i as u32).await;
        let (client, url, token) = (client.clone(), url.to_string(), token.to_string());
        requests.spawn(async move {
            let sent = Instant::now();
            let ok = client.get(&url).bearer_auth(&token).send().await.is_ok_and(|r| r.status().is_success());
            (ok, sent.elapsed())
        });
    }
    let (mut latencies, mut errors) = (Vec::with_capacity(total as usize), 0);
    while let Some(result) = requests.join_next().await {
        match result {
            Ok((true, latency)) => latencies.push(latency),
            _ => errors += 1,
        }
    }
    (latencies, errors)
}

pub fn failover(args: FailoverArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut cluster = Cluster::start(3)?;
        cluster.start_workers(args.workers).await?;
        let leader = cluster.leader().await?;
        let token = cluster.tenant_token(leader).await?;
        // Long enough to outlast the kills (each takes a few seconds), then it finishes.
        let rows = u64::from(args.kills) * 8 * ROWS_PER_SECOND + 20 * ROWS_PER_SECOND;
        let out = cluster.dir.path().join("out");
        let job = match args.workers {
            0 => None,
            _ => {
                let sql = exactly_once_job(rows, &out);
                let id = cluster.submit(leader, &token, &sql).await?.context("the job submission was refused")?;
                let running = wait_for(&cluster, &token, &id, |job| last_checkpoint(job).is_some()).await?;
                let deployment = running["deployment"].clone();
                println!("job {id}: {rows} rows at {ROWS_PER_SECOND}/s, deployed {deployment}");
                Some((id, deployment))
            }
        };
        let mut times = Vec::new();
        println!("| kill | old leader | new leader | kill → first API write ms | job attempt | checkpoint before → 2 s after |");
        println!("| --- | --- | --- | --- | --- | --- |");
        for kill in 1..=args.kills {
            let old = cluster.leader().await?;
            let before = match &job {
                Some((id, _)) => last_checkpoint(&cluster.get(old, &token, &format!("/api/v1/jobs/{id}")).await?),
                None => None,
            };
            // Writes go to a survivor, which forwards them to whichever replica leads.
            let survivor = *cluster.replicas.keys().find(|id| **id != old).expect("three replicas");
            cluster.replicas.get_mut(&old).expect("leader").kill_9()?;
            let killed = Instant::now();
            let tenant = json!({"id": format!("kill-{kill}")});
            while cluster.post(survivor, ROOT_TOKEN, "/api/v1/tenants", tenant.clone()).await?.is_none() {
                if killed.elapsed() > WAIT {
                    bail!("no write succeeded within {WAIT:?} of killing replica {old}");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let took = killed.elapsed();
            times.push(took);
            let new = cluster.leader().await?;
            let peers = cluster.peers.clone();
            cluster.replicas.get_mut(&old).expect("replica").start(&peers)?;
            caught_up(&cluster, old, new).await?;
            // Checkpoints go on under the new leader, in the same attempt.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let (attempt, after) = match &job {
                Some((id, _)) => {
                    let detail = cluster.get(new, &token, &format!("/api/v1/jobs/{id}")).await?;
                    (detail["deployment"]["attempt"].to_string(), last_checkpoint(&detail))
                }
                None => ("-".into(), None),
            };
            let checkpoints = format!("{} → {}", show(before), show(after));
            println!("| {kill} | {old} | {new} | {} | {attempt} | {checkpoints} |", ms(took));
        }
        times.sort();
        println!(
            "\nkill -9 of the leader → first successful API write, {} kills: median {} ms, max {} ms",
            times.len(),
            ms(percentile(&times, 50.0)),
            ms(times.last().copied().unwrap_or_default())
        );
        if let Some((id, deployment)) = job {
            let finished = wait_for(&cluster, &token, &id, |job| job["status"] != "RUNNING").await?;
            let survived = finished["deployment"] == deployment && finished["status"] == "FINISHED";
            let (once, total) = exactly_once(&out, rows)?;
            println!(
                "job: {} in its first deployment ({}), {} checkpoints; output: {once} of {rows} rows exactly once ({total} rows published)",
                finished["status"],
                if survived { "no restart" } else { "RESTARTED" },
                show(last_checkpoint(&finished)),
            );
            if !survived || once != rows || total != rows {
                bail!("the job did not survive every kill with exactly-once output");
            }
        }
        Ok(())
    })
}

/// The exactly-once job's pace: rows per second.
const ROWS_PER_SECOND: u64 = 2_000;

/// A paced datagen of ids 1..=`rows` into a JSON filesystem sink at `out`, checkpointed every
/// second (the sink publishes what each checkpoint covers).
fn exactly_once_job(rows: u64, out: &std::path::Path) -> String {
    format!(
        "SET 'execution.checkpointing.interval' = '1 s';
CREATE TABLE g (id BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '{rows}',
  'rows-per-second' = '{ROWS_PER_SECOND}', 'fields.id.kind' = 'sequence', 'fields.id.start' = '1',
  'fields.id.end' = '{rows}');
CREATE TABLE out (id BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');
INSERT INTO out SELECT id FROM g;
",
        out.display()
    )
}

/// Of ids 1..=`rows`, how many the sink at `out` published exactly once; and how many rows it
/// published in all.
fn exactly_once(out: &std::path::Path, rows: u64) -> Result<(u64, u64)> {
    let mut counts: BTreeMap<u64, u32> = BTreeMap::new();
    let mut total = 0;
    for entry in std::fs::read_dir(out).with_context(|| format!("cannot read {}", out.display()))? {
        let entry = entry?;
        // Hidden files are in progress or pending: not published.
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        for line in std::fs::read_to_string(entry.path())?.lines() {
            let row: Value = serde_json::from_str(line)?;
            *counts.entry(row["id"].as_u64().context("an id")?).or_default() += 1;
            total += 1;
        }
    }
    let once = (1..=rows).filter(|id| counts.get(id) == Some(&1)).count() as u64;
    Ok((once, total))
}

fn last_checkpoint(job: &Value) -> Option<u64> {
    job["last_checkpoint"]["id"].as_u64()
}

fn show(checkpoint: Option<u64>) -> String {
    checkpoint.map_or("-".into(), |id| id.to_string())
}

/// Polls the job through the leader until `done` holds of it (for at most 10 minutes).
async fn wait_for(cluster: &Cluster, token: &str, job: &str, done: impl Fn(&Value) -> bool) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let leader = cluster.leader().await?;
        if let Ok(detail) = cluster.get(leader, token, &format!("/api/v1/jobs/{job}")).await
            && done(&detail)
        {
            return Ok(detail);
        }
        if Instant::now() > deadline {
            bail!("job {job} did not get where it should within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the restarted replica `id` has applied what the leader has.
async fn caught_up(cluster: &Cluster, id: u64, leader: u64) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    let applied = |view: &Value| view["last_applied"].as_u64();
    let target = applied(&cluster.get(leader, ROOT_TOKEN, "/api/v1/cluster").await?);
    loop {
        if let Ok(view) = cluster.get(id, ROOT_TOKEN, "/api/v1/cluster").await
            && applied(&view) >= target
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("replica {id} did not catch up after its restart");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
