//! `weir bench ttl`: whether a regular join's state stops growing under
//! `table.exec.state.ttl`.
//!
//! Two paced `datagen` streams with the same key sequence are joined on the key and the matches
//! counted; a regular join keeps every row of both sides, so without TTL its state grows by two
//! rows per key for as long as the job runs. The bench runs the job twice in its own
//! `weir run` process, for `--seconds`, once with `table.exec.state.ttl` = `--ttl` and once
//! without, with checkpoints on and `taskmanager.memory.managed.size` = `--managed-memory`, and
//! samples every `--every` each process's resident memory, the bytes of the join's spill files
//! (its unlinked temporary files) and the size of its checkpoint folder. With TTL they should
//! level off once rows start to expire (the folder only after SlateDB's garbage collector, which
//! keeps unreferenced SSTs for 5 minutes, catches up); without, they grow with the rows taken in.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

#[derive(Args)]
pub struct TtlArgs {
    /// `table.exec.state.ttl` of the run with TTL.
    #[arg(long, default_value = "10 s")]
    ttl: String,
    /// Rows per second each side's generator offers.
    #[arg(long, default_value_t = 50_000)]
    rows_per_second: u64,
    /// Bytes of the string each row carries.
    #[arg(long, default_value_t = 100)]
    value_bytes: u32,
    /// How long each run lasts, in seconds.
    #[arg(long, default_value_t = 90)]
    seconds: u64,
    /// Seconds between two samples.
    #[arg(long, default_value_t = 10)]
    every: u64,
    /// Checkpoint interval.
    #[arg(long, default_value = "5 s")]
    checkpoint_interval: String,
    /// `taskmanager.memory.managed.size` of the job (its block cache is a quarter of it).
    #[arg(long, default_value = "1 gb")]
    managed_memory: String,
}

/// One sample of a run: seconds since its start, resident MiB, spilled MiB, checkpoint folder MiB.
type Sample = (u64, f64, f64, f64);

pub fn run(args: TtlArgs) -> Result<()> {
    if args.every == 0 || args.seconds < args.every {
        bail!("--every must be at least 1 and at most --seconds");
    }
    let with_ttl = sampled_run(&args, Some(&args.ttl))?;
    let without = sampled_run(&args, None)?;
    println!(
        "| s | TTL {0}: RSS MiB | spilled MiB | checkpoints MiB | no TTL: RSS MiB | spilled MiB | checkpoints MiB |",
        args.ttl
    );
    println!("|---|---|---|---|---|---|---|");
    for ((t, rss, spill, disk), (_, rss_no, spill_no, disk_no)) in with_ttl.iter().zip(&without) {
        println!("| {t} | {rss:.0} | {spill:.0} | {disk:.0} | {rss_no:.0} | {spill_no:.0} | {disk_no:.0} |");
    }
    Ok(())
}

fn sampled_run(args: &TtlArgs, ttl: Option<&str>) -> Result<Vec<Sample>> {
    let work = tempfile::tempdir()?;
    let state = work.path().join("state");
    let script = work.path().join("ttl.sql");
    let table = |name: &str| {
        format!(
            "CREATE TABLE {name} (k BIGINT, s STRING) WITH (
  'connector' = 'datagen', 'rows-per-second' = '{rate}', 'number-of-rows' = '1000000000000',
  'fields.k.kind' = 'sequence', 'fields.k.start' = '1', 'fields.k.end' = '1000000000000',
  'fields.s.length' = '{bytes}');\n",
            rate = args.rows_per_second,
            bytes = args.value_bytes,
        )
    };
    let ttl = ttl.map(|t| format!("SET 'table.exec.state.ttl' = '{t}';\n")).unwrap_or_default();
    std::fs::write(
        &script,
        format!(
            "SET 'execution.checkpointing.interval' = '{interval}';
SET 'state.checkpoints.dir' = '{dir}';
SET 'taskmanager.memory.managed.size' = '{memory}';
{ttl}{a}{b}SELECT COUNT(*) AS matches FROM a JOIN b ON a.k = b.k WHERE CHAR_LENGTH(a.s) + CHAR_LENGTH(b.s) > 0;",
            interval = args.checkpoint_interval,
            dir = state.display(),
            memory = args.managed_memory,
            a = table("a"),
            b = table("b"),
        ),
    )?;
    let mut job = Command::new(std::env::current_exe()?)
        .arg("run")
        .arg(&script)
        .args(["--quiet", "--output"])
        .arg(work.path().join("out.jsonl"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start weir run")?;
    let started = Instant::now();
    let mut samples = Vec::new();
    for i in 1..=args.seconds / args.every {
        let at = Duration::from_secs(i * args.every);
        std::thread::sleep(at.saturating_sub(started.elapsed()));
        if let Some(status) = job.try_wait()? {
            bail!("the job exited ({status}) after {:.0?}", started.elapsed());
        }
        let rss = resident_mib(job.id()).context("the job's resident memory")?;
        let spilled = crate::recovery::mib(unlinked_file_bytes(job.id()));
        let disk = crate::recovery::mib(crate::recovery::dir_bytes(&state));
        samples.push((at.as_secs(), rss, spilled, disk));
        eprintln!(
            "{} TTL, {:>4} s: {rss:.0} MiB resident, {spilled:.0} MiB spilled, {disk:.0} MiB of checkpoints",
            if ttl.is_empty() { "no" } else { "with" },
            at.as_secs()
        );
    }
    let _ = job.kill();
    let _ = job.wait();
    Ok(samples)
}

/// Disk bytes of the files a process holds open that are no longer linked (its temporary
/// files): allocated blocks, so the holes a spill file punched do not count.
fn unlinked_file_bytes(pid: u32) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let fds = Path::new("/proc").join(pid.to_string()).join("fd");
    let Ok(entries) = std::fs::read_dir(fds) else { return 0 };
    entries
        .flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().ends_with(" (deleted)")))
        .filter_map(|e| std::fs::metadata(e.path()).ok())
        .filter(|m| m.is_file())
        .map(|m| m.blocks() * 512)
        .sum()
}

/// `VmRSS` of a process, in MiB (Linux).
fn resident_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    let kib: f64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib / 1024.0)
}
