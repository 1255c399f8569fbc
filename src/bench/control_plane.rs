//! `weir bench api` and `weir bench failover`: the control plane's bars, measured against real
//! `weir control-plane` processes on loopback.
//!
//! - **api**: `GET /api/v1/jobs/{id}` at a fixed request rate (open loop: requests start on a
//!   schedule, not when the previous one answers, so a slow answer cannot hide the ones behind
//!   it), on the leader and on a follower; latency percentiles per replica.
//! - **failover**: `kill -9` of the leader, then the time until an API write (a job submission
//!   through a surviving replica) succeeds; the killed replica is restarted and caught up before
//!   the next kill.

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
}

/// One replica process; its data directory outlives it, so it restarts with its log.
struct Replica {
    id: u64,
    address: String,
    data: PathBuf,
    child: Option<Child>,
}

impl Replica {
    fn start(&mut self, peers: &str) -> Result<()> {
        let exe = std::env::current_exe().context("the weir binary's path")?;
        let mut child = Command::new(exe)
            .args(["control-plane", "--id", &self.id.to_string(), "--listen", &self.address, "--peers", peers])
            .arg("--data")
            .arg(&self.data)
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
    peers: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start(n: u64) -> Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let mut replicas = BTreeMap::new();
        for id in 1..=n {
            // A free port, released for the replica to bind (a race is possible; start fails then).
            let address = TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string();
            replicas.insert(id, Replica { id, address, data: dir.path().join(format!("cp{id}")), child: None });
        }
        let peers = replicas.values().map(|r| format!("{}={}", r.id, r.address)).collect::<Vec<_>>().join(",");
        for replica in replicas.values_mut() {
            replica.start(&peers)?;
        }
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
        Ok(Cluster { replicas, peers, client, _dir: dir })
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

    /// Submits a job through `replica`; `Ok(None)` when the write is refused for now (no quorum).
    async fn submit(&self, replica: u64, token: &str) -> Result<Option<String>> {
        let response = self
            .client
            .post(self.replicas[&replica].url("/api/v1/jobs"))
            .bearer_auth(token)
            .json(&json!({"name": "bench", "sql": JOB_SQL}))
            .send()
            .await;
        match response {
            Ok(r) if r.status().is_success() => {
                let body: Value = r.json().await?;
                Ok(body["id"].as_str().map(str::to_string))
            }
            Ok(r) if r.status().is_server_error() => Ok(None),
            Ok(r) => bail!("submitting a job: {} {}", r.status(), r.text().await?),
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
        let cluster = Cluster::start(args.replicas)?;
        let leader = cluster.leader().await?;
        let token = cluster.tenant_token(leader).await?;
        let job = cluster.submit(leader, &token).await?.context("the job submission was refused")?;
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
        let leader = cluster.leader().await?;
        let token = cluster.tenant_token(leader).await?;
        let mut times = Vec::new();
        println!("| kill | old leader | new leader | kill → first API write ms |");
        println!("| --- | --- | --- | --- |");
        for kill in 1..=args.kills {
            let old = cluster.leader().await?;
            // Writes go to a survivor, which forwards them to whichever replica leads.
            let survivor = *cluster.replicas.keys().find(|id| **id != old).expect("three replicas");
            cluster.replicas.get_mut(&old).expect("leader").kill_9()?;
            let killed = Instant::now();
            loop {
                if cluster.submit(survivor, &token).await?.is_some() {
                    break;
                }
                if killed.elapsed() > WAIT {
                    bail!("no write succeeded within {WAIT:?} of killing replica {old}");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let took = killed.elapsed();
            times.push(took);
            let new = cluster.leader().await?;
            println!("| {kill} | {old} | {new} | {} |", ms(took));
            let peers = cluster.peers.clone();
            cluster.replicas.get_mut(&old).expect("replica").start(&peers)?;
            // Caught up: the restarted replica answers for the newest job.
            let id = cluster.submit(survivor, &token).await?.context("a write after the restart")?;
            let url = cluster.replicas[&old].url(&format!("/api/v1/jobs/{id}"));
            let deadline = Instant::now() + WAIT;
            while !cluster.client.get(&url).bearer_auth(&token).send().await.is_ok_and(|r| r.status().is_success()) {
                if Instant::now() > deadline {
                    bail!("replica {old} did not catch up after its restart");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        times.sort();
        println!(
            "\nkill -9 of the leader → first successful API write, {} kills: median {} ms, max {} ms",
            times.len(),
            ms(percentile(&times, 50.0)),
            ms(times.last().copied().unwrap_or_default())
        );
        Ok(())
    })
}
