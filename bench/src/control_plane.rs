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

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use reqwest::Method;
use serde_json::{Value, json};
use weir_testkit::{Cluster, Logs, Weir};

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

/// `replicas` control-plane replicas (the harness's, from this `weir` binary, logging errors to
/// this process's stderr) and `workers` workers of 2 slots each, registered with the leader.
async fn start_cluster(replicas: u64, workers: u32) -> Result<Cluster> {
    let mut cluster = Weir::current_exe()?
        .cluster()
        .replicas(replicas)
        .root_token(ROOT_TOKEN)
        .log_filter("error")
        .logs(Logs::Inherit)
        .wait(WAIT)
        .start()?;
    cluster.start_workers(workers as usize, 2).await?;
    Ok(cluster)
}

/// `GET path` on `replica` with `token`, as JSON.
async fn get(cluster: &Cluster, replica: u64, token: &str, path: &str) -> Result<Value> {
    match cluster.call(Method::GET, replica, token, path, None).await {
        Some((200..=299, body)) => Ok(body),
        Some((status, body)) => bail!("GET {path}: {status} {body}"),
        None => bail!("GET {path}: replica {replica} did not answer"),
    }
}

/// Submits `sql` through `replica`; `Ok(None)` when the write is refused for now (no quorum).
async fn submit(cluster: &Cluster, replica: u64, token: &str, sql: &str) -> Result<Option<String>> {
    post(cluster, replica, token, "/api/v1/jobs", json!({"name": "bench", "sql": sql, "parallelism": 2})).await
}

/// `POST path` through `replica`: the answer's `id`, or `Ok(None)` when the write is refused
/// for now (no quorum, an election, the replica is down).
async fn post(cluster: &Cluster, replica: u64, token: &str, path: &str, body: Value) -> Result<Option<String>> {
    match cluster.call(Method::POST, replica, token, path, Some(body)).await {
        Some((200..=299, body)) => Ok(body["id"].as_str().map(str::to_string)),
        Some((500.., _)) | None => Ok(None),
        Some((status, body)) => bail!("POST {path}: {status} {body}"),
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
        let cluster = start_cluster(args.replicas, args.workers).await?;
        let leader = cluster.leader().await?;
        let token = cluster.tenant_admin("bench").await?;
        let job = submit(&cluster, leader, &token, JOB_SQL).await?.context("the job submission was refused")?;
        let follower = cluster.replica_ids().into_iter().find(|id| *id != leader);
        // A request slower than this counts as an error.
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
        println!("GET /api/v1/jobs/{{id}} at {} requests/s for {} s, open loop", args.rps, args.seconds);
        println!("| replica | requests | errors | p50 ms | p90 ms | p99 ms | max ms |");
        println!("| --- | --- | --- | --- | --- | --- | --- |");
        for (role, id) in [("leader", Some(leader)), ("follower", follower)] {
            let Some(id) = id else { continue };
            // A follower must have applied the job before it can answer for it.
            let url = cluster.url(id, &format!("/api/v1/jobs/{job}"));
            let deadline = Instant::now() + WAIT;
            while !client.get(&url).bearer_auth(&token).send().await.is_ok_and(|r| r.status().is_success()) {
                if Instant::now() > deadline {
                    bail!("replica {id} does not know job {job}");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let (latencies, errors) = load(&client, &url, &token, args.rps, args.seconds).await;
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
        let mut cluster = start_cluster(3, args.workers).await?;
        let leader = cluster.leader().await?;
        let token = cluster.tenant_admin("bench").await?;
        // Long enough to outlast the kills (each takes a few seconds), then it finishes.
        let rows = u64::from(args.kills) * 8 * ROWS_PER_SECOND + 20 * ROWS_PER_SECOND;
        let out = cluster.path("out");
        let job = match args.workers {
            0 => None,
            _ => {
                let sql = exactly_once_job(rows, &out);
                let id = submit(&cluster, leader, &token, &sql).await?.context("the job submission was refused")?;
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
                Some((id, _)) => last_checkpoint(&get(&cluster, old, &token, &format!("/api/v1/jobs/{id}")).await?),
                None => None,
            };
            // Writes go to a survivor, which forwards them to whichever replica leads.
            let survivor = cluster.replica_ids().into_iter().find(|id| *id != old).expect("three replicas");
            cluster.kill_9_replica(old);
            let killed = Instant::now();
            let tenant = json!({"id": format!("kill-{kill}")});
            while post(&cluster, survivor, ROOT_TOKEN, "/api/v1/tenants", tenant.clone()).await?.is_none() {
                if killed.elapsed() > WAIT {
                    bail!("no write succeeded within {WAIT:?} of killing replica {old}");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let took = killed.elapsed();
            times.push(took);
            let new = cluster.leader().await?;
            cluster.restart_replica(old)?;
            cluster.caught_up(old, new).await?;
            // Checkpoints go on under the new leader, in the same attempt.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let (attempt, after) = match &job {
                Some((id, _)) => {
                    let detail = get(&cluster, new, &token, &format!("/api/v1/jobs/{id}")).await?;
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
    let counts = weir_testkit::ids(&weir_testkit::published(out)?)?;
    let total = counts.values().map(|count| u64::from(*count)).sum();
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
        if let Ok(detail) = get(cluster, leader, token, &format!("/api/v1/jobs/{job}")).await
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
