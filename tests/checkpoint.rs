//! Exactly-once through failures, with real processes: a `weir run` with checkpoints is killed
//! with `kill -9` at seeded random moments and resumed with `--resume` each time; the output its
//! filesystem sink has published must hold every input row exactly once.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROWS: u64 = 12_000;

fn job(dir: &Path, parallelism: u32) -> String {
    format!(
        "SET 'execution.checkpointing.interval' = '200 ms';
SET 'state.checkpoints.dir' = '{state}';
SET 'parallelism.default' = '{parallelism}';
CREATE TABLE g (id BIGINT, v INT) WITH (
  'connector' = 'datagen', 'number-of-rows' = '{ROWS}', 'rows-per-second' = '4000',
  'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '{ROWS}',
  'fields.v.min' = '1', 'fields.v.max' = '10');
CREATE TABLE out (id BIGINT, v INT) WITH ('connector' = 'filesystem', 'path' = '{out}', 'format' = 'json');
INSERT INTO out SELECT id, v FROM g WHERE v > 0;",
        state = dir.join("state").display(),
        out = dir.join("out").display(),
    )
}

/// A small deterministic generator: the seed is printed, so a failure replays.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// Published rows by id: every committed (visible) part file, every line.
fn published(out: &Path) -> BTreeMap<u64, u32> {
    let mut ids = BTreeMap::new();
    for entry in std::fs::read_dir(out).expect("output folder") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        for line in std::fs::read_to_string(entry.path()).expect("part file").lines() {
            let row: serde_json::Value = serde_json::from_str(line).expect("a json row");
            *ids.entry(row["id"].as_u64().expect("an id")).or_insert(0) += 1;
        }
    }
    ids
}

fn exactly_once_through_kills(parallelism: u32, seed: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("job.sql");
    std::fs::write(&script, job(dir.path(), parallelism)).expect("script");
    let mut rng = seed;
    let mut kills = 0;
    let mut resumed = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "seed {seed}: the job did not finish in time");
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .arg("run")
            .arg(&script)
            .arg("--resume")
            .arg("--quiet")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("weir starts");
        let kill_after = Duration::from_millis(300 + next(&mut rng) % 900);
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break Some(status);
            }
            if kills < 5 && started.elapsed() >= kill_after {
                let _ = Command::new("kill").arg("-9").arg(child.id().to_string()).status();
                let _ = child.wait();
                kills += 1;
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("stderr");
        if stderr.contains("resuming job") {
            resumed += 1;
        }
        if let Some(status) = status {
            assert!(status.success(), "seed {seed}: the job failed: {stderr}");
            break;
        }
    }
    assert!(kills >= 3, "seed {seed}: only {kills} kills landed before the job finished");
    // Runs that started from nothing would pass trivially: most must have resumed.
    assert!(resumed >= 3, "seed {seed}: only {resumed} runs resumed from a checkpoint");
    let ids = published(&dir.path().join("out"));
    let missing: Vec<u64> = (1..=ROWS).filter(|id| !ids.contains_key(id)).take(10).collect();
    let doubled: Vec<(u64, u32)> = ids.iter().filter(|(_, n)| **n != 1).map(|(id, n)| (*id, *n)).take(10).collect();
    assert!(missing.is_empty() && doubled.is_empty(), "seed {seed}: missing {missing:?}, not once {doubled:?}");
    assert_eq!(ids.len() as u64, ROWS, "seed {seed}");
}

#[test]
fn a_killed_job_resumes_with_exactly_once_output() {
    exactly_once_through_kills(1, 0x5eed_0001);
}

#[test]
fn a_killed_parallel_job_resumes_with_exactly_once_output() {
    exactly_once_through_kills(2, 0x5eed_0002);
}
