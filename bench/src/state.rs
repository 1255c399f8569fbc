//! `weir bench state`: a job whose keyed state is several times its memory budget. It counts
//! `--keys` distinct random strings of `--key-bytes` with `GROUP BY`, then counts the groups
//! and sums their counts, with `taskmanager.memory.managed.size` set to `--managed-memory`; the
//! job runs in its own `weir run` process, which reports its CPU time and peak RSS. The bench
//! checks the job's last row: both figures must equal the number of keys.

use std::io::BufRead;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::measured_run;

#[derive(Args)]
pub struct StateArgs {
    /// Distinct keys (rows) the job counts.
    #[arg(long, default_value_t = 50_000_000)]
    keys: u64,
    /// Bytes of each key.
    #[arg(long, default_value_t = 60)]
    key_bytes: u32,
    /// `taskmanager.memory.managed.size` of the job.
    #[arg(long, default_value = "512 mb")]
    managed_memory: String,
}

pub fn run(args: StateArgs) -> Result<()> {
    let work = tempfile::tempdir()?;
    let script = work.path().join("state.sql");
    let output = work.path().join("result.jsonl");
    let stats_path = work.path().join("stats.json");
    std::fs::write(
        &script,
        format!(
            "SET 'taskmanager.memory.managed.size' = '{memory}';
CREATE TABLE g (k STRING) WITH (
  'connector' = 'datagen', 'number-of-rows' = '{keys}', 'rows-per-second' = '1000000000000',
  'fields.k.length' = '{bytes}');
SELECT COUNT(*) AS groups, SUM(c) AS total FROM (SELECT k, COUNT(*) AS c FROM g GROUP BY k);",
            memory = args.managed_memory,
            keys = args.keys,
            bytes = args.key_bytes,
        ),
    )?;
    let output_arg = output.to_string_lossy();
    let (stats, wall) = match measured_run(&script, &stats_path, &["--output", &output_arg])? {
        Ok(measured) => measured,
        Err(status) => bail!("the job failed ({status})"),
    };
    let last =
        std::io::BufReader::new(std::fs::File::open(&output)?).lines().last().context("the job wrote no row")??;
    let row: serde_json::Value = serde_json::from_str(&last)?;
    let figures = row.get("row").and_then(|r| r.as_array()).context("a changelog row")?;
    let (groups, total) = (figures[0].as_u64(), figures[1].as_u64());
    let right = groups == Some(args.keys) && total == Some(args.keys);
    println!("| keys | key bytes | managed memory | wall s | keys/s | CPU s | peak RSS MiB | last row | right |");
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {wall:.1} | {:.0}k | {:.1} | {:.0} | {} | {} |",
        args.keys,
        args.key_bytes,
        args.managed_memory,
        args.keys as f64 / wall / 1e3,
        stats.cpu_seconds,
        stats.max_rss_bytes as f64 / (1 << 20) as f64,
        last.trim(),
        if right { "yes" } else { "NO" },
    );
    if !right {
        bail!("the job's last row is {last}, expected {} groups counting {} rows", args.keys, args.keys);
    }
    Ok(())
}
