//! Exactly-once through failures, with real processes: a `weir run` with checkpoints is killed
//! with `kill -9` at seeded random moments and resumed with `--resume` each time; the output its
//! filesystem sink has published must hold every input row exactly once.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROWS: u64 = 12_000;

/// A job over a paced generator (about 3 s of input) writing to an exactly-once file sink.
fn job(dir: &Path, parallelism: u32, query: &str) -> String {
    format!(
        "SET 'execution.checkpointing.interval' = '200 ms';
SET 'state.checkpoints.dir' = '{state}';
SET 'parallelism.default' = '{parallelism}';
CREATE TABLE g (id BIGINT, k INT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH (
  'connector' = 'datagen', 'number-of-rows' = '{ROWS}', 'rows-per-second' = '4000',
  'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '{ROWS}',
  'fields.k.min' = '1', 'fields.k.max' = '20');
{query}",
        state = dir.join("state").display(),
    )
}

const PASS_THROUGH: &str =
    "CREATE TABLE out (id BIGINT, k INT) WITH ('connector' = 'filesystem', 'path' = 'OUT', 'format' = 'json');
INSERT INTO out SELECT id, k FROM g WHERE k > 0;";

const WINDOWED: &str = "CREATE TABLE out (k INT, ws TIMESTAMP(3), n BIGINT, s BIGINT, lo BIGINT)
  WITH ('connector' = 'filesystem', 'path' = 'OUT', 'format' = 'json');
INSERT INTO out SELECT k, window_start, COUNT(*), SUM(id), MIN(id)
FROM TABLE(TUMBLE(TABLE g, DESCRIPTOR(ts), INTERVAL '500' MILLISECOND)) GROUP BY k, window_start, window_end;";

/// A small deterministic generator: the seed is printed, so a failure replays.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// Every published (visible) line of the output, counted.
fn published(out: &Path) -> BTreeMap<String, u32> {
    let mut lines = BTreeMap::new();
    for entry in std::fs::read_dir(out).expect("output folder") {
        let entry = entry.expect("entry");
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        for line in std::fs::read_to_string(entry.path()).expect("part file").lines() {
            *lines.entry(line.to_string()).or_insert(0) += 1;
        }
    }
    lines
}

/// Runs the job to the end, killing it with `kill -9` up to `kills` times at seeded moments
/// and resuming it each time; returns what it published.
fn run(query: &str, parallelism: u32, seed: u64, kills_wanted: u32) -> BTreeMap<String, u32> {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let script = dir.path().join("job.sql");
    let query = query.replace("OUT", &out.display().to_string());
    std::fs::write(&script, job(dir.path(), parallelism, &query)).expect("script");
    let mut rng = seed;
    let (mut kills, mut resumed) = (0, 0);
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
            if kills < kills_wanted && started.elapsed() >= kill_after {
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
    if kills_wanted > 0 {
        assert!(kills >= 3, "seed {seed}: only {kills} kills landed before the job finished");
        // Runs that started from nothing would pass trivially: most must have resumed.
        assert!(resumed >= 3, "seed {seed}: only {resumed} runs resumed from a checkpoint");
    }
    published(&out)
}

fn exactly_once(query: &str, parallelism: u32, seed: u64) {
    let expected = run(query, parallelism, seed, 0);
    assert!(!expected.is_empty(), "the failure-free run published nothing");
    let got = run(query, parallelism, seed, 5);
    let missing: Vec<_> = expected.iter().filter(|(l, n)| got.get(*l) != Some(n)).take(5).collect();
    let extra: Vec<_> = got.iter().filter(|(l, n)| expected.get(*l) != Some(n)).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "seed {seed}: expected but not once {missing:?}; unexpected {extra:?}"
    );
}

#[test]
fn a_killed_job_resumes_with_exactly_once_output() {
    let rows = run(PASS_THROUGH, 1, 0x5eed_0001, 5);
    assert_eq!(rows.len() as u64, ROWS, "every input row once");
    assert!(rows.values().all(|n| *n == 1));
    exactly_once(PASS_THROUGH, 2, 0x5eed_0002);
}

#[test]
fn a_killed_window_aggregation_resumes_with_exactly_once_output() {
    exactly_once(WINDOWED, 1, 0x5eed_0003);
    exactly_once(WINDOWED, 2, 0x5eed_0004);
}
