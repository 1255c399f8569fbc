//! `weir bench autoscale`: the elastic service end to end, on loopback. One `weir
//! control-plane` replica with the local provisioner (`--provisioner local`: it starts and
//! stops `weir worker` processes itself; no worker is started by hand) and a shuffle server; a
//! checkpointed job reads a watched directory (`source.monitor-interval`) into an exactly-once
//! filesystem sink, with the autoscaler on and scale to zero after `--idle-timeout`. The input
//! follows a schedule:
//!
//! 1. **zero**: nothing for `--quiet-seconds`;
//! 2. **burst**: `--burst-rows` rows written at once, a backlog; `scale-up-s` is the time from
//!    the burst to the job running at a higher parallelism on the workers that needs;
//! 3. **steady**: `--steady-rate` rows a second for `--steady-seconds`;
//! 4. **zero**: nothing; `to-zero-s` is the time from the last input to the job SUSPENDED and
//!    no worker process left (`workers-at-zero` counts those left when the wait gave up);
//! 5. **wake**: one more file; `wake-s` is the time until its rows are committed in the sink.
//!
//! Then every id written is looked up in the sink: `lost` are missing, `duplicated` appear more
//! than once. The cost is worker-seconds (worker processes alive, sampled every 250 ms) per
//! million rows, beside what a fixed cluster of the peak's workers would cost over the same
//! time. `rescales-per-hour` comes from the steady phase's per-second metrics, recorded from the
//! API, repeated to 24 hours and replayed through the autoscaler's decision function in
//! simulated time with the default `job.autoscaler.*` options; `oscillations` counts a rescale
//! in the opposite direction of the one before.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use reqwest::Method;
use serde_json::{Value, json};
use weir_control_plane::autoscaler::{Autoscaler, Decision, Sample, VertexCounters, VertexShape};
use weir_dataflow::autoscale::AutoscalerOptions;
use weir_dataflow::ids::VertexId;
use weir_testkit::{Logs, Weir, children_of};

const ROOT_TOKEN: &str = "weir-bench-root-token-0123456789abcdef";
/// How often the monitor samples workers, the job and its figures.
const TICK: Duration = Duration::from_millis(250);
/// Rows per input file of the burst.
const ROWS_PER_FILE: u64 = 100_000;

#[derive(Args)]
pub struct AutoscaleArgs {
    /// Seconds without input before the burst.
    #[arg(long, default_value_t = 10)]
    quiet_seconds: u64,
    /// Rows written at once: the backlog.
    #[arg(long, default_value_t = 3_000_000)]
    burst_rows: u64,
    /// Rows a second of the steady phase.
    #[arg(long, default_value_t = 20_000)]
    steady_rate: u64,
    /// Seconds of the steady phase.
    #[arg(long, default_value_t = 60)]
    steady_seconds: u64,
    /// `job.autoscaler.scale-to-zero.idle-timeout`, seconds.
    #[arg(long, default_value_t = 60)]
    idle_timeout: u64,
    /// Slots of each worker the provisioner starts.
    #[arg(long, default_value_t = 2)]
    worker_slots: u32,
    /// `job.autoscaler.vertex.max-parallelism`.
    #[arg(long, default_value_t = 4)]
    max_parallelism: u32,
    /// Regular-expression rewrites of each row's payload: the job's work per row.
    #[arg(long, default_value_t = 8)]
    regex_passes: u32,
    /// Write what the monitor saw (every 250 ms: workers, status, parallelism, the source's
    /// records in, busy time and backlog) to this CSV file.
    #[arg(long)]
    trace: Option<PathBuf>,
}

/// What the monitor saw at one instant.
#[derive(Clone, Debug)]
struct Tick {
    at: Duration,
    workers: usize,
    status: String,
    /// The parallelism the job runs at (its vertex's), and the one wanted.
    running: u64,
    desired: u64,
    records_in: u64,
    busy_ms: u64,
    backlog: Option<u64>,
}

pub fn run(args: AutoscaleArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: AutoscaleArgs) -> Result<()> {
    let slots = args.worker_slots.to_string();
    let cluster = Weir::current_exe()?
        .cluster()
        .replicas(1)
        .root_token(ROOT_TOKEN)
        .log_filter("warn,weir_control_plane=info")
        .logs(Logs::Files)
        .shuffle(true)
        .replica_args(["--provisioner", "local", "--worker-slots", &slots, "--worker-cool-down", "5 s"])
        .wait(Duration::from_secs(60))
        .start()?;
    let leader = cluster.leader().await?;
    let pid = cluster.replica_pid(leader).context("the replica runs")?;
    let token = cluster.tenant_admin("bench").await?;
    let (input, out) = (cluster.path("in"), cluster.path("out"));
    std::fs::create_dir(&input)?;
    let sql = job_sql(&input, &out, &args);
    let body = json!({"name": "autoscale", "sql": sql, "parallelism": 1});
    let job =
        cluster.write(leader, &token, "/api/v1/jobs", body).await?["id"].as_str().context("a job id")?.to_string();
    let started = Instant::now();
    println!("weir bench autoscale: job {job}; logs in {}", cluster.dir().display());

    // The monitor: workers, status, parallelism and figures every TICK.
    let ticks = Arc::new(Mutex::new(Vec::<Tick>::new()));
    let monitor = {
        let (ticks, client, url) = (ticks.clone(), cluster.client().clone(), cluster.url(leader, ""));
        let (token, job) = (token.clone(), job.clone());
        tokio::spawn(async move {
            loop {
                let detail = client
                    .get(format!("{url}/api/v1/jobs/{job}"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .ok()
                    .and_then(|r| r.error_for_status().ok());
                let detail: Option<Value> = match detail {
                    Some(response) => response.json().await.ok(),
                    None => None,
                };
                if let Some(detail) = detail {
                    let vertex = &detail["vertices"][0];
                    let tick = Tick {
                        at: started.elapsed(),
                        workers: children_of(pid, "worker").len(),
                        status: detail["status"].as_str().unwrap_or("?").to_string(),
                        running: vertex["parallelism"].as_u64().unwrap_or(0),
                        desired: detail["parallelism"].as_u64().unwrap_or(0),
                        records_in: vertex["records_in"].as_u64().unwrap_or(0),
                        busy_ms: vertex["busy_ms"].as_u64().unwrap_or(0),
                        backlog: vertex["backlog"].as_u64(),
                    };
                    ticks.lock().unwrap_or_else(|p| p.into_inner()).push(tick);
                }
                tokio::time::sleep(TICK).await;
            }
        })
    };
    let latest = || ticks.lock().unwrap_or_else(|p| p.into_inner()).last().cloned();
    let wait_until = |what: &'static str, within: Duration, done: Box<dyn Fn(&Tick) -> bool + Send>| {
        let ticks = ticks.clone();
        async move {
            let deadline = Instant::now() + within;
            loop {
                if let Some(tick) = ticks.lock().unwrap_or_else(|p| p.into_inner()).last().cloned()
                    && done(&tick)
                {
                    return Ok(tick);
                }
                if Instant::now() > deadline {
                    let last = ticks.lock().unwrap_or_else(|p| p.into_inner()).last().cloned();
                    bail!("{what}: not within {within:?}; last seen {last:?}");
                }
                tokio::time::sleep(TICK / 2).await;
            }
        }
    };
    let mut written = 0u64;
    let note = |line: String| println!("{:>7.1}s  {line}", started.elapsed().as_secs_f64());

    wait_until("the job runs", Duration::from_secs(60), Box::new(|t| t.status == "RUNNING" && t.workers > 0)).await?;
    note(format!("running at parallelism 1 on {} worker", latest().map_or(0, |t| t.workers)));
    tokio::time::sleep(Duration::from_secs(args.quiet_seconds)).await;

    // The burst: a backlog of files at once.
    let burst_at = Instant::now();
    let mut file = 0;
    while written < args.burst_rows {
        let rows = ROWS_PER_FILE.min(args.burst_rows - written);
        write_rows(&input, &format!("burst-{file:04}.json"), written + 1, rows)?;
        written += rows;
        file += 1;
    }
    note(format!("burst: {written} rows in {file} files"));
    let scaled = wait_until(
        "scale-up",
        Duration::from_secs(120),
        Box::new(move |t| {
            let needed = t.running.div_ceil(u64::from(args.worker_slots.max(1))) as usize;
            t.status == "RUNNING" && t.running > 1 && t.workers >= needed
        }),
    )
    .await;
    let scale_up_s = match &scaled {
        Ok(tick) => {
            let s = burst_at.elapsed().as_secs_f64();
            note(format!(
                "scaled up: parallelism {} (wanted {}) on {} workers",
                tick.running, tick.desired, tick.workers
            ));
            Some(s)
        }
        Err(error) => {
            note(format!("no scale-up: {error}"));
            None
        }
    };

    // Steady load.
    let steady_from = started.elapsed();
    for second in 0..args.steady_seconds {
        let tick_start = Instant::now();
        write_rows(&input, &format!("steady-{second:05}.json"), written + 1, args.steady_rate)?;
        written += args.steady_rate;
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(tick_start.elapsed())).await;
    }
    let steady_to = started.elapsed();
    note(format!(
        "steady: {} rows/s for {} s; parallelism {} on {} workers at its end",
        args.steady_rate,
        args.steady_seconds,
        latest().map_or(0, |t| t.running),
        latest().map_or(0, |t| t.workers)
    ));

    // No input: suspended, and no worker left.
    let stopped_at = Instant::now();
    let within = Duration::from_secs(args.idle_timeout + 240);
    let zero = wait_until("scale to zero", within, Box::new(|t| t.status == "SUSPENDED" && t.workers == 0)).await;
    let (to_zero_s, workers_at_zero) = match zero {
        Ok(_) => {
            note("suspended, no worker left".to_string());
            (Some(stopped_at.elapsed().as_secs_f64()), 0)
        }
        Err(error) => {
            note(format!("not at zero: {error}"));
            (None, latest().map_or(0, |t| t.workers))
        }
    };

    // Wake: one more file, timed until its rows are committed.
    let wake_at = Instant::now();
    let wake_rows = 1_000;
    write_rows(&input, "wake.json", written + 1, wake_rows)?;
    written += wake_rows;
    note(format!("wake: {wake_rows} rows"));
    let mut wake_s = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let counts = id_counts(&out, written)?;
        if (written - wake_rows + 1..=written).all(|id| counts[id as usize] > 0) {
            wake_s = Some(wake_at.elapsed().as_secs_f64());
            note("the wake file's rows are committed".to_string());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    monitor.abort();
    let elapsed = started.elapsed();

    let counts = id_counts(&out, written)?;
    let lost = (1..=written).filter(|id| counts[*id as usize] == 0).count();
    let duplicated: u64 = (1..=written).map(|id| u64::from(counts[id as usize].saturating_sub(1))).sum();

    let ticks = ticks.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some(path) = &args.trace {
        let mut csv = String::from("seconds,workers,status,parallelism,desired,records_in,busy_ms,backlog\n");
        for t in &ticks {
            let backlog = t.backlog.map_or_else(String::new, |b| b.to_string());
            csv.push_str(&format!(
                "{:.2},{},{},{},{},{},{},{backlog}\n",
                t.at.as_secs_f64(),
                t.workers,
                t.status,
                t.running,
                t.desired,
                t.records_in,
                t.busy_ms
            ));
        }
        std::fs::write(path, csv).with_context(|| format!("writing {}", path.display()))?;
    }
    let worker_seconds: f64 = ticks.windows(2).map(|w| w[0].workers as f64 * (w[1].at - w[0].at).as_secs_f64()).sum();
    let peak = ticks.iter().map(|t| t.workers).max().unwrap_or(0);
    let millions = written as f64 / 1e6;
    let fixed_seconds = peak as f64 * elapsed.as_secs_f64();

    let history = cluster.call(Method::GET, leader, &token, &format!("/api/v1/jobs/{job}/rescales"), None).await;
    println!();
    println!("the autoscaler's decisions (oldest first):");
    if let Some((200, body)) = history {
        for event in body["rescales"].as_array().into_iter().flatten().rev() {
            println!(
                "  {} {} -> {}: {}",
                event["kind"].as_str().unwrap_or("?"),
                event["from"],
                event["to"],
                event["reasons"]
            );
        }
    }
    let replay = replay_steady(&ticks, steady_from, steady_to);
    println!();
    println!("| phase | figure |");
    println!("|---|---|");
    println!("| rows written | {written} |");
    println!("| run | {:.0} s, peak {peak} workers |", elapsed.as_secs_f64());
    println!(
        "| cost, autoscaled | {:.1} worker-s per million rows ({worker_seconds:.0} worker-s) |",
        worker_seconds / millions
    );
    println!(
        "| cost, fixed at the peak | {:.1} worker-s per million rows ({fixed_seconds:.0} worker-s) |",
        fixed_seconds / millions
    );
    match &replay {
        Ok(r) => println!(
            "| 24 h replay of the steady phase ({} samples at parallelism {}) | {} rescales, {} oscillations |",
            r.samples, r.parallelism, r.rescales, r.oscillations
        ),
        Err(e) => println!("| 24 h replay | not done: {e} |"),
    }
    let figure = |v: Option<f64>| v.map_or_else(|| "none".to_string(), |s| format!("{s:.1}"));
    let per_hour = replay.as_ref().map_or_else(|_| "none".to_string(), |r| format!("{:.2}", r.rescales as f64 / 24.0));
    let oscillations = replay.as_ref().map_or_else(|_| "none".to_string(), |r| r.oscillations.to_string());
    println!(
        "autoscale: scale-up-s={} rescales-per-hour={per_hour} oscillations={oscillations} to-zero-s={} wake-s={} lost={lost} duplicated={duplicated} workers-at-zero={workers_at_zero}",
        figure(scale_up_s),
        figure(to_zero_s),
        figure(wake_s)
    );
    std::io::stdout().flush()?;
    drop(cluster);
    Ok(())
}

fn job_sql(input: &Path, out: &Path, args: &AutoscaleArgs) -> String {
    format!(
        "SET 'execution.checkpointing.interval' = '1 s';
SET 'job.autoscaler.enabled' = 'true';
SET 'job.autoscaler.metrics.window' = '5 s';
SET 'job.autoscaler.stabilization.interval' = '5 s';
SET 'job.autoscaler.scale-down.interval' = '20 s';
SET 'job.autoscaler.catch-up.duration' = '5 s';
SET 'job.autoscaler.vertex.max-parallelism' = '{max}';
SET 'job.autoscaler.scale-to-zero.idle-timeout' = '{idle} s';
CREATE TABLE events (id BIGINT, payload STRING) WITH ('connector' = 'filesystem', 'path' = '{input}',
  'format' = 'json', 'source.monitor-interval' = '200 ms');
CREATE TABLE out (id BIGINT, payload STRING) WITH ('connector' = 'filesystem', 'path' = '{out}', 'format' = 'json');
INSERT INTO out SELECT id, {cleaned} FROM events;
",
        max = args.max_parallelism,
        idle = args.idle_timeout,
        cleaned = cleaning(args.regex_passes),
        input = input.display(),
        out = out.display(),
    )
}

/// The work the job does per row: `passes` regular-expression rewrites of its payload (each
/// swaps its words around and back), the text cleaning a log pipeline does.
fn cleaning(passes: u32) -> String {
    let mut expression = "payload".to_string();
    for _ in 0..passes {
        expression = format!("REGEXP_REPLACE({expression}, '([a-z]+) ([a-z]+) ([0-9]+)', '$3 $2 $1')");
    }
    expression
}

/// Writes rows `first..first+rows` as a file of `dir`, complete when it appears (written under
/// a hidden name, then renamed).
fn write_rows(dir: &Path, name: &str, first: u64, rows: u64) -> Result<()> {
    let hidden = dir.join(format!(".{name}.tmp"));
    let mut text = String::with_capacity(rows as usize * 48);
    for id in first..first + rows {
        text.push_str(&format!("{{\"id\": {id}, \"payload\": \"row number {id} of the bench\"}}\n"));
    }
    std::fs::write(&hidden, text)?;
    std::fs::rename(&hidden, dir.join(name))?;
    Ok(())
}

/// How many times each id up to `last` is in the sink's committed part files (index = id).
fn id_counts(out: &Path, last: u64) -> Result<Vec<u8>> {
    let mut counts = vec![0u8; last as usize + 1];
    let Ok(entries) = std::fs::read_dir(out) else { return Ok(counts) };
    for entry in entries {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path: PathBuf = entry.path();
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        for line in text.lines() {
            let row: Value = serde_json::from_str(line).with_context(|| format!("a row of {}", path.display()))?;
            if let Some(id) = row["id"].as_u64().filter(|id| *id <= last) {
                counts[id as usize] = counts[id as usize].saturating_add(1);
            }
        }
    }
    Ok(counts)
}

/// What the 24-hour replay found.
struct Replay {
    samples: usize,
    parallelism: u32,
    rescales: u32,
    oscillations: u32,
}

/// The steady phase's per-second figures (its last stretch at one parallelism), repeated to 24
/// hours and fed to the autoscaler with the default options, in simulated time.
fn replay_steady(ticks: &[Tick], from: Duration, to: Duration) -> Result<Replay> {
    // One sample a second, at the parallelism of the phase's end.
    let steady: Vec<&Tick> = ticks.iter().filter(|t| t.at >= from && t.at <= to && t.status == "RUNNING").collect();
    let Some(last) = steady.last() else { bail!("no figures of the steady phase") };
    let parallelism = last.running.max(1) as u32;
    let same = steady.iter().rev().take_while(|t| t.running == last.running).count();
    let stretch = &steady[steady.len() - same..];
    let mut per_second: Vec<&Tick> = Vec::new();
    for tick in stretch.iter().copied() {
        if per_second.last().is_none_or(|p| tick.at >= p.at + Duration::from_secs(1)) {
            per_second.push(tick);
        }
    }
    if per_second.len() < 3 {
        bail!("only {} seconds of steady figures at one parallelism", per_second.len());
    }
    let deltas: Vec<(u64, u64, Option<u64>)> = per_second
        .windows(2)
        .map(|w| {
            (w[1].records_in.saturating_sub(w[0].records_in), w[1].busy_ms.saturating_sub(w[0].busy_ms), w[1].backlog)
        })
        .collect();
    let options = AutoscalerOptions { enabled: true, ..AutoscalerOptions::default() };
    let vertex = VertexId(0);
    let mut shape =
        vec![VertexShape { id: vertex, inputs: Vec::new(), parallelism, max_parallelism: 128, keyed: false }];
    let mut autoscaler = Autoscaler::new(options, 0);
    let (mut records, mut busy) = (0u64, 0u64);
    let (mut rescales, mut oscillations, mut last_direction) = (0, 0, 0i32);
    for second in 0..24 * 3600 {
        let (r, b, backlog) = deltas[second % deltas.len()];
        // The same work at another parallelism takes the same busy time, spread over more
        // subtasks: the busy share falls as the parallelism rises.
        records += r;
        busy += b;
        let now = second as i64 * 1000;
        let counters = VertexCounters { records_in: records, records_out: records, busy_ms: busy, backlog };
        autoscaler.observe(Sample { at_ms: now, vertices: [(vertex, counters)].into() });
        if let Decision::Rescale { parallelism: wanted, .. } = autoscaler.decide(now, &shape) {
            let Some(&to) = wanted.get(&vertex) else { continue };
            let direction = if to > shape[0].parallelism { 1 } else { -1 };
            if last_direction != 0 && direction != last_direction {
                oscillations += 1;
            }
            last_direction = direction;
            rescales += 1;
            shape[0].parallelism = to;
            autoscaler.rescaled(now);
        }
    }
    Ok(Replay { samples: per_second.len(), parallelism, rescales, oscillations })
}
