//! `weir bench recovery`: how long a job with a large keyed state takes to come back after
//! `kill -9`, from the restarted process's start to its first new output.
//!
//! The job groups a paced `datagen` stream by a unique key (so its keyed state grows by one
//! entry per row, about `--value-bytes` each: the filter on the value keeps the planner from
//! pruning it) and counts the groups; the count is the job's
//! only output, updated after every batch. The bench lets the job take checkpoints until its
//! keyed state (keys counted from that output, times the bytes each holds) reaches
//! `--state-mib`, kills it with `kill -9` right after a checkpoint, then
//! starts `weir run --resume` and times how long the first output row takes: opening the
//! checkpoint, and the reads of the keys the first rows touch (restore is lazy), are on that
//! path. With `--resume-parallelism` other than `--parallelism` the restart is a rescale: each
//! new subtask's database is a clone of its key groups' parts of the old ones.
//!
//! With `--stop-with-savepoint` the job is not killed but stopped as a Flink user rescales it:
//! `weir savepoint PID` (self-contained; with `--native`, by reference as the control plane's
//! rescale takes it), then a new `weir run` from that savepoint
//! (`execution.savepoint.path`). The figure is then the output's pause: from the stop request
//! (the old run's output goes on until its savepoint barrier passes, so this is an upper bound)
//! to the new run's first output, savepoint included.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

#[derive(Args)]
pub struct RecoveryArgs {
    /// Kill the job after the first checkpoint that holds this much keyed state (MiB of keys
    /// and values, counted from the job's output; the files on disk are larger).
    #[arg(long, default_value_t = 1024)]
    state_mib: u64,
    /// Bytes of the string each key keeps.
    #[arg(long, default_value_t = 100)]
    value_bytes: u32,
    /// Rows (new keys) per second the generator offers.
    #[arg(long, default_value_t = 400_000)]
    rows_per_second: u64,
    /// Checkpoint interval.
    #[arg(long, default_value = "5 s")]
    checkpoint_interval: String,
    /// `taskmanager.memory.managed.size` of the job (Flink's syntax, `2 gb`); by default 40% of
    /// the machine's memory. State beyond the operators' share of it lives only in SlateDB.
    #[arg(long)]
    managed_memory: Option<String>,
    /// Parallelism of the first run (`weir run --parallelism`; its default when absent).
    #[arg(long)]
    parallelism: Option<u32>,
    /// Parallelism of the restarted run; a rescale when it differs from `--parallelism`.
    #[arg(long)]
    resume_parallelism: Option<u32>,
    /// Stop the job with a savepoint instead of `kill -9`, and restart from the savepoint.
    #[arg(long)]
    stop_with_savepoint: bool,
    /// With `--stop-with-savepoint`: take it by reference (`weir savepoint --native`).
    #[arg(long)]
    native: bool,
}

pub fn run(args: RecoveryArgs) -> Result<()> {
    let work = tempfile::tempdir()?;
    let state = work.path().join("state");
    let script = work.path().join("recovery.sql");
    std::fs::write(
        &script,
        format!(
            "SET 'execution.checkpointing.interval' = '{interval}';
SET 'state.checkpoints.dir' = '{state}';{memory}
CREATE TABLE g (k BIGINT, s STRING) WITH (
  'connector' = 'datagen', 'rows-per-second' = '{rate}', 'number-of-rows' = '1000000000',
  'fields.k.kind' = 'sequence', 'fields.k.start' = '1', 'fields.k.end' = '1000000000',
  'fields.s.length' = '{bytes}');
SELECT COUNT(*) AS keys FROM (SELECT k, MAX(s) AS s FROM g GROUP BY k) WHERE CHAR_LENGTH(s) > 0;",
            interval = args.checkpoint_interval,
            memory = match &args.managed_memory {
                Some(size) => format!("\nSET 'taskmanager.memory.managed.size' = '{size}';"),
                None => String::new(),
            },
            state = state.display(),
            rate = args.rows_per_second,
            bytes = args.value_bytes,
        ),
    )?;
    let weir = std::env::current_exe()?;
    let started = Instant::now();
    let parallelism = |p: Option<u32>| p.map(|p| vec!["--parallelism".to_string(), p.to_string()]).unwrap_or_default();
    let mut job = Command::new(&weir)
        .arg("run")
        .arg(&script)
        .args(parallelism(args.parallelism))
        .args(["--quiet", "--output"])
        .arg(work.path().join("first.jsonl"))
        .env("WEIR_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start weir run")?;
    // Watch the job's log for completed checkpoints; kill it after the first one past the size.
    let mut log = BufReader::new(job.stderr.take().context("stderr")?).lines();
    let mut checkpoints = 0;
    let (mut size, mut keys) = (0, 0);
    // A key's state: the 8-byte key, the string, and the count the operator keeps with them.
    let per_key = 8 + u64::from(args.value_bytes) + 8;
    for line in log.by_ref() {
        let line = line?;
        if !line.contains("checkpoint completed") {
            continue;
        }
        checkpoints += 1;
        size = dir_bytes(&state);
        keys = last_count(&work.path().join("first.jsonl"));
        eprintln!(
            "checkpoint {checkpoints}: {keys} keys (~{:.0} MiB of state), {:.0} MiB on disk, after {:.0?}",
            mib(keys * per_key),
            mib(size),
            started.elapsed()
        );
        if keys * per_key >= args.state_mib << 20 {
            break;
        }
    }
    if checkpoints == 0 || keys * per_key < args.state_mib << 20 {
        let _ = job.kill();
        let _ = job.wait();
        bail!("the job ended before it held {} MiB of state", args.state_mib);
    }
    let out = work.path().join("resumed.jsonl");
    std::fs::write(&out, "")?;
    let (restarted, script, resume) = if args.stop_with_savepoint {
        let asked = Instant::now();
        let mut savepoint = Command::new(&weir);
        savepoint.arg("savepoint").arg(job.id().to_string());
        if args.native {
            savepoint.arg("--native");
        }
        let signalled = savepoint.stderr(Stdio::null()).status()?;
        if !signalled.success() {
            bail!("weir savepoint {} failed", job.id());
        }
        // The old run prints the savepoint's path as it stops.
        let mut savepoint = None;
        for line in log.by_ref() {
            let line = line?;
            if let Some(rest) = line.strip_prefix("stopped with savepoint ") {
                savepoint = rest.split(" (checkpoint").next().map(str::to_string);
                break;
            }
        }
        let _ = job.wait();
        let savepoint = savepoint.context("the job stopped without printing its savepoint")?;
        eprintln!("savepoint {savepoint} taken and the job stopped after {:.2?}", asked.elapsed());
        let from_savepoint = work.path().join("from-savepoint.sql");
        let body = std::fs::read_to_string(&script)?;
        std::fs::write(&from_savepoint, format!("SET 'execution.savepoint.path' = '{savepoint}';\n{body}"))?;
        (asked, from_savepoint, None)
    } else {
        let killed = Command::new("kill").arg("-9").arg(job.id().to_string()).status()?;
        let _ = job.wait();
        if !killed.success() {
            bail!("cannot kill the job");
        }
        (Instant::now(), script.clone(), Some("--resume"))
    };
    let mut resumed = Command::new(&weir)
        .arg("run")
        .arg(&script)
        .args(parallelism(args.resume_parallelism.or(args.parallelism)))
        .arg("--quiet")
        .args(resume)
        .arg("--output")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start the second weir run")?;
    let first_output = loop {
        if std::fs::metadata(&out)?.len() > 0 {
            break restarted.elapsed();
        }
        if let Some(status) = resumed.try_wait()? {
            bail!("the resumed job exited ({status}) before any output");
        }
        if restarted.elapsed() > Duration::from_secs(600) {
            let _ = resumed.kill();
            bail!("no output 10 minutes after the restart");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = resumed.kill();
    let _ = resumed.wait();
    let figure =
        if args.stop_with_savepoint { "stop request to first new output s" } else { "restart to first new output s" };
    println!("| keys | keyed state MiB | files on disk MiB | {figure} |");
    println!("| --- | --- | --- | --- |");
    println!("| {keys} | {:.0} | {:.0} | {:.2} |", mib(keys * per_key), mib(size), first_output.as_secs_f64());
    Ok(())
}

pub(crate) fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// The newest key count the job has output (about its state at the last checkpoint).
fn last_count(output: &Path) -> u64 {
    let text = std::fs::read_to_string(output).unwrap_or_default();
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["op"] == "+U" || v["op"] == "+I")
        .and_then(|v| v["row"][0].as_u64())
        .unwrap_or(0)
}

/// Bytes of every file under `dir`.
pub(crate) fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}
