//! Weir's benchmarks, kept out of the roles: `weir bench nexmark`, `weir bench shuffle`
//! ([`shuffle`]), `weir bench recovery` ([`recovery`]), `weir bench api` and `weir bench failover`
//! ([`control_plane`]), `weir bench plan` ([`plan`]), `weir bench state` ([`state`]), `weir bench ttl` ([`ttl`]),
//! `weir bench autoscale` ([`autoscale`]), and
//! `weir nexmark-gen`. The `weir` binary links this crate behind its
//! default feature `bench`; a production build leaves it out (`--no-default-features`).
//!
//! Each query runs in its own `weir run` process, which reports its own CPU time and peak RSS
//! (getrusage of itself), so figures are per query and include everything the process did:
//! reading, parsing, planning and running.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

mod autoscale;
mod control_plane;
mod plan;
mod recovery;
mod shuffle;
mod state;
mod ttl;

const DDL_FS: &str = include_str!("../nexmark/ddl_nexmark_fs.sql");
const VIEWS: &str = include_str!("../nexmark/ddl_views.sql");
const QUERIES: &[(&str, &str)] = &[
    ("q0", include_str!("../nexmark/q0.sql")),
    ("q1", include_str!("../nexmark/q1.sql")),
    ("q2", include_str!("../nexmark/q2.sql")),
    ("q3", include_str!("../nexmark/q3.sql")),
    ("q4", include_str!("../nexmark/q4.sql")),
    ("q5", include_str!("../nexmark/q5.sql")),
    ("q7", include_str!("../nexmark/q7.sql")),
    ("q8", include_str!("../nexmark/q8.sql")),
    ("floor_parse", include_str!("../nexmark/floor_parse.sql")),
    ("floor_raw", include_str!("../nexmark/floor_raw.sql")),
];

/// Apache Flink 2.3 on this kind of machine, same 10M-event JSON file, parallelism 1: events
/// per CPU-second (../shared/nexmark/README.md).
const FLINK_EVENTS_PER_CPU_SECOND: &[(&str, f64)] = &[
    ("q0", 189e3),
    ("q1", 159e3),
    ("q2", 176e3),
    ("q3", 128e3),
    ("q4", 54e3),
    ("q5", 86e3),
    ("q7", 47e3),
    ("q8", 122e3),
];

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Run the Nexmark queries and report events/s, events per CPU-second and peak RSS.
    Nexmark(NexmarkArgs),
    /// Throughput and batch latency through a remote shuffle server.
    Shuffle(shuffle::ShuffleArgs),
    /// Time from restart to first output of a job with a large keyed state killed with kill -9.
    Recovery(recovery::RecoveryArgs),
    /// `GET /api/v1/jobs/{id}` latency at a fixed request rate on a 3-replica control plane.
    Api(control_plane::ApiArgs),
    /// Time from `kill -9` of the control plane's leader to the first successful API write.
    Failover(control_plane::FailoverArgs),
    /// Planning time of deep and long scripts (chained views, long OR, UNION ALL, ||).
    Plan(plan::PlanArgs),
    /// A GROUP BY whose keyed state is several times its memory budget: time, CPU, peak RSS.
    State(state::StateArgs),
    /// A regular join's memory and checkpoint size over time, with and without state TTL.
    Ttl(ttl::TtlArgs),
    /// The elastic service: a job's input goes from nothing to a burst to steady to nothing
    /// and back; scale-up, scale to zero, wake-up, exactly-once and worker cost.
    Autoscale(autoscale::AutoscaleArgs),
}

#[derive(Args)]
pub struct NexmarkArgs {
    /// Queries to run (comma separated); default: q0,q1,q2,q3,q4,q5,q7,q8.
    #[arg(long, value_delimiter = ',')]
    queries: Vec<String>,
    /// Number of events.
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// `file` (newline-delimited JSON), `generator` (built-in), or `both`.
    #[arg(long, default_value = "both")]
    source: String,
    /// The JSON file; written with the built-in generator if it does not exist.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Parallelism of every operator.
    #[arg(long, default_value_t = 1)]
    parallelism: u32,
    /// Take checkpoints this often (e.g. `1 s`), into a temporary folder; default: none.
    #[arg(long)]
    checkpoint_interval: Option<String>,
    /// With `--checkpoint-interval`: unaligned checkpoints (`execution.checkpointing.unaligned`).
    #[arg(long)]
    unaligned: bool,
    /// Run in batch mode (`execution.runtime-mode`) with this `execution.batch-shuffle-mode`,
    /// e.g. ALL_EXCHANGES_BLOCKING or ALL_EXCHANGES_PIPELINED; default: streaming.
    #[arg(long)]
    batch_shuffle_mode: Option<String>,
}

pub fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Nexmark(args) => nexmark(args),
        BenchCommand::Shuffle(args) => shuffle::run(args),
        BenchCommand::Recovery(args) => recovery::run(args),
        BenchCommand::Api(args) => control_plane::api(args),
        BenchCommand::Failover(args) => control_plane::failover(args),
        BenchCommand::Plan(args) => plan::run(args),
        BenchCommand::State(args) => state::run(args),
        BenchCommand::Ttl(args) => ttl::run(args),
        BenchCommand::Autoscale(args) => autoscale::run(args),
    }
}

/// A process's peak resident set (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[derive(serde::Deserialize)]
struct Stats {
    source_rows: u64,
    cpu_seconds: f64,
    max_rss_bytes: u64,
    peak_running_tasks: u64,
}

/// Runs `weir run SCRIPT --quiet` with `extra` arguments in its own process: its figures (from
/// `--stats-json STATS`) and wall seconds, or how it exited when it failed.
fn measured_run(
    script: &Path,
    stats: &Path,
    extra: &[&str],
) -> Result<std::result::Result<(Stats, f64), std::process::ExitStatus>> {
    let started = Instant::now();
    let status = Command::new(std::env::current_exe()?)
        .arg("run")
        .arg(script)
        .arg("--quiet")
        .args(extra)
        .arg("--stats-json")
        .arg(stats)
        .status()
        .context("cannot start weir run")?;
    let wall = started.elapsed().as_secs_f64();
    if !status.success() {
        return Ok(Err(status));
    }
    Ok(Ok((serde_json::from_str(&std::fs::read_to_string(stats)?)?, wall)))
}

fn nexmark(args: NexmarkArgs) -> Result<()> {
    let queries: Vec<String> = if args.queries.is_empty() {
        ["q0", "q1", "q2", "q3", "q4", "q5", "q7", "q8"].iter().map(|s| s.to_string()).collect()
    } else {
        args.queries.clone()
    };
    let sources: Vec<&str> = match args.source.as_str() {
        "both" => vec!["file", "generator"],
        "file" => vec!["file"],
        "generator" => vec!["generator"],
        other => bail!("--source must be file, generator or both, not {other}"),
    };
    let work = tempfile::tempdir()?;
    let file = match &args.file {
        Some(f) => f.clone(),
        None => PathBuf::from(format!("target/nexmark-{}.json", args.events)),
    };
    if sources.contains(&"file") && !file.exists() {
        eprintln!("writing {} events to {} …", args.events, file.display());
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        generate_json(args.events, 42, &file)?;
    }
    let flink: BTreeMap<&str, f64> = FLINK_EVENTS_PER_CPU_SECOND.iter().copied().collect();
    println!(
        "| query | source | events | wall s | events/s | CPU s | events/CPU-s | vs Flink | peak RSS MiB | peak tasks |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for q in &queries {
        let Some((_, body)) = QUERIES.iter().find(|(name, _)| name == q) else {
            bail!("unknown query {q}; known: {}", QUERIES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "));
        };
        for source in &sources {
            if q.starts_with("floor_raw") && *source == "generator" {
                continue;
            }
            let data_path = match *source {
                "file" => file.canonicalize()?.display().to_string(),
                _ => String::new(),
            };
            let ddl = match *source {
                "file" => DDL_FS.replace("${DATA_PATH}", &data_path),
                _ => generator_ddl(args.events)?,
            };
            let raw_sql = body.replace("${DATA_PATH}", &data_path);
            let checkpoints = match &args.checkpoint_interval {
                Some(interval) => format!(
                    "SET 'execution.checkpointing.interval' = '{interval}';\nSET 'state.checkpoints.dir' = '{}';\n\
                     SET 'execution.checkpointing.unaligned' = '{}';\n",
                    work.path().join(format!("state-{q}-{source}")).display(),
                    args.unaligned
                ),
                None => String::new(),
            };
            let batch = match &args.batch_shuffle_mode {
                Some(mode) => {
                    format!("SET 'execution.runtime-mode' = 'batch';\nSET 'execution.batch-shuffle-mode' = '{mode}';\n")
                }
                None => String::new(),
            };
            let sql = format!("{checkpoints}{batch}{ddl}\n{VIEWS}\n{raw_sql}");
            let script = work.path().join(format!("{q}-{source}.sql"));
            let stats_path = work.path().join(format!("{q}-{source}.json"));
            std::fs::write(&script, sql)?;
            let parallelism = args.parallelism.to_string();
            let Ok((stats, wall)) = measured_run(&script, &stats_path, &["--parallelism", &parallelism])? else {
                println!("| {q} | {source} | failed | | | | | | | |");
                continue;
            };
            let events = if q == "floor_raw" { stats.source_rows } else { args.events };
            let per_cpu = events as f64 / stats.cpu_seconds;
            let ratio = match flink.get(q.as_str()) {
                Some(f) if *source == "file" => format!("{:.1}×", per_cpu / f),
                _ => "".into(),
            };
            println!(
                "| {q} | {source} | {events} | {wall:.2} | {:.0}k | {:.2} | {:.0}k | {ratio} | {:.0} | {} |",
                events as f64 / wall / 1e3,
                stats.cpu_seconds,
                per_cpu / 1e3,
                stats.max_rss_bytes as f64 / (1 << 20) as f64,
                stats.peak_running_tasks
            );
        }
    }
    Ok(())
}

/// The same `nexmark` table on the built-in generator: the file DDL with its `WITH` clause
/// replaced.
fn generator_ddl(events: u64) -> Result<String> {
    let Some(with) = DDL_FS.rfind(") WITH (") else { bail!("the bundled Nexmark DDL has no WITH clause") };
    Ok(format!("{}) WITH ('connector' = 'nexmark', 'events.num' = '{events}');\n", &DDL_FS[..with]))
}

pub fn generate_json(events: u64, seed: u64, out: &Path) -> Result<u64> {
    let mut options = std::collections::BTreeMap::new();
    options.insert("events.num".to_string(), events.to_string());
    options.insert("seed".to_string(), seed.to_string());
    let config =
        weir_workers::connectors::nexmark::NexmarkConfig::from_options(&options).map_err(|e| anyhow::anyhow!("{e}"))?;
    let file = std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut writer = std::io::BufWriter::with_capacity(1 << 20, file);
    let n = weir_workers::connectors::nexmark::write_json_lines(&config, &mut writer)
        .with_context(|| format!("cannot write {}", out.display()))?;
    std::io::Write::flush(&mut writer)?;
    Ok(n)
}
