//! Exactly-once through failures, with real processes: a `weir run` with checkpoints is killed
//! with `kill -9` at seeded random moments and resumed with `--resume` each time; the output its
//! filesystem sink has published must hold every input row exactly once.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::published;

const ROWS: u64 = 12_000;

/// How a test job runs: its checkpoint interval and when the kills come (after start).
#[derive(Clone, Copy)]
struct Timing {
    interval_ms: u64,
    kill_from_ms: u64,
    kill_spread_ms: u64,
}

const FAST: Timing = Timing { interval_ms: 200, kill_from_ms: 300, kill_spread_ms: 900 };

/// A job over a paced generator (about 3 s of input) writing to an exactly-once file sink.
fn datagen_job(query: &str) -> String {
    format!(
        "CREATE TABLE g (id BIGINT, k INT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH (
  'connector' = 'datagen', 'number-of-rows' = '{ROWS}', 'rows-per-second' = '4000',
  'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '{ROWS}',
  'fields.k.min' = '1', 'fields.k.max' = '20');
{query}"
    )
}

fn header(dir: &Path, parallelism: u32, timing: Timing) -> String {
    format!(
        "SET 'execution.checkpointing.interval' = '{} ms';
SET 'state.checkpoints.dir' = '{}';
SET 'parallelism.default' = '{parallelism}';
",
        timing.interval_ms,
        dir.join("state").display()
    )
}

const PASS_THROUGH: &str =
    "CREATE TABLE out (id BIGINT, k INT) WITH ('connector' = 'filesystem', 'path' = 'OUT', 'format' = 'json');
INSERT INTO out SELECT id, k FROM g WHERE k > 0;";

const WINDOWED: &str = "CREATE TABLE out (k INT, ws TIMESTAMP(3), n BIGINT, s BIGINT, lo BIGINT)
  WITH ('connector' = 'filesystem', 'path' = 'OUT', 'format' = 'json');
INSERT INTO out SELECT k, window_start, COUNT(*), SUM(id), MIN(id)
FROM TABLE(TUMBLE(TABLE g, DESCRIPTOR(ts), INTERVAL '500' MILLISECOND)) GROUP BY k, window_start, window_end;";

/// Starts `weir run SCRIPT --resume --quiet` with `extra` flags; its errors are on stderr.
fn resume(script: &Path, extra: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("run")
        .arg(script)
        .args(["--resume", "--quiet"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weir starts")
}

/// A small deterministic generator: the seed is printed, so a failure replays.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// Runs the job to the end, killing it with `kill -9` up to `kills` times at seeded moments
/// and resuming it each time; returns what it published.
fn run(script_body: &str, parallelism: u32, timing: Timing, seed: u64, kills_wanted: u32) -> BTreeMap<String, u32> {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let script = dir.path().join("job.sql");
    let body = script_body.replace("OUT", &out.display().to_string());
    std::fs::write(&script, header(dir.path(), parallelism, timing) + &body).expect("script");
    let mut rng = seed;
    let (mut kills, mut resumed) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "seed {seed}: the job did not finish in time");
        let mut child = resume(&script, &[]);
        let kill_after = Duration::from_millis(timing.kill_from_ms + next(&mut rng) % timing.kill_spread_ms);
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

fn exactly_once(script_body: &str, parallelism: u32, timing: Timing, seed: u64) {
    let expected = run(script_body, parallelism, timing, seed, 0);
    assert!(!expected.is_empty(), "the failure-free run published nothing");
    let got = run(script_body, parallelism, timing, seed, 5);
    let missing: Vec<_> = expected.iter().filter(|(l, n)| got.get(*l) != Some(n)).take(5).collect();
    let extra: Vec<_> = got.iter().filter(|(l, n)| expected.get(*l) != Some(n)).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "seed {seed}: expected but not once {missing:?}; unexpected {extra:?}"
    );
}

/// The final result of a `debezium-json` changelog: every row an insert added (`after`) minus
/// every row a delete took away (`before`), by the row's canonical JSON. A row taken away more
/// often than it was added fails the test: the output retracted what it never published.
fn materialized(published: &BTreeMap<String, u32>) -> BTreeMap<String, i64> {
    let mut rows: BTreeMap<String, i64> = BTreeMap::new();
    for (line, n) in published {
        let change: serde_json::Value = serde_json::from_str(line).expect("a debezium-json line");
        let (row, sign) = match change["op"].as_str() {
            Some("c") => (&change["after"], 1),
            Some("d") => (&change["before"], -1),
            other => panic!("unexpected op {other:?} in {line}"),
        };
        *rows.entry(row.to_string()).or_insert(0) += sign * i64::from(*n);
    }
    let negative: Vec<_> = rows.iter().filter(|(_, n)| **n < 0).take(5).collect();
    assert!(negative.is_empty(), "rows deleted more often than inserted: {negative:?}");
    rows.retain(|_, n| *n > 0);
    rows
}

/// For an updating query: the changes themselves depend on how input was batched, which a
/// restart changes, but the result they add up to must be the failure-free run's.
fn changelog_exactly_once(script_body: &str, parallelism: u32, timing: Timing, seed: u64) {
    let expected = materialized(&run(script_body, parallelism, timing, seed, 0));
    assert!(!expected.is_empty(), "the failure-free run published nothing");
    let got = materialized(&run(script_body, parallelism, timing, seed, 5));
    let missing: Vec<_> = expected.iter().filter(|(l, n)| got.get(*l) != Some(n)).take(5).collect();
    let extra: Vec<_> = got.iter().filter(|(l, n)| expected.get(*l) != Some(n)).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "seed {seed}: expected but not once {missing:?}; unexpected {extra:?}"
    );
}

#[test]
fn a_killed_job_resumes_with_exactly_once_output() {
    let rows = run(&datagen_job(PASS_THROUGH), 1, FAST, 0x5eed_0001, 5);
    assert_eq!(rows.len() as u64, ROWS, "every input row once");
    assert!(rows.values().all(|n| *n == 1));
    exactly_once(&datagen_job(PASS_THROUGH), 2, FAST, 0x5eed_0002);
}

#[test]
fn a_killed_window_aggregation_resumes_with_exactly_once_output() {
    exactly_once(&datagen_job(WINDOWED), 1, FAST, 0x5eed_0003);
    exactly_once(&datagen_job(WINDOWED), 2, FAST, 0x5eed_0004);
}

/// A job over a paced generator with two more random columns: `v` (wide, for ordering) and `c`
/// (1 to 5, for grouping). Event times are up to 30 ms out of order, well inside the watermark's
/// 1 s delay: no row is late, so results do not depend on how subtasks interleave.
fn ranked_job(query: &str) -> String {
    format!(
        "CREATE TABLE g (id BIGINT, k INT, v INT, c INT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
  WITH ('connector' = 'datagen', 'number-of-rows' = '{ROWS}', 'rows-per-second' = '4000',
  'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '{ROWS}',
  'fields.k.min' = '1', 'fields.k.max' = '20', 'fields.v.min' = '1', 'fields.v.max' = '1000000',
  'fields.c.min' = '1', 'fields.c.max' = '5', 'fields.ts.max-past' = '30 ms');
{query}"
    )
}

/// Top-N over an append-only input: an updating result, written as a changelog. Ties in `v`
/// are broken by `id`, so the final top 3 is the same in every run.
const TOP_N: &str = "CREATE TABLE out (k INT, v INT, id BIGINT, rn BIGINT)
  WITH ('connector' = 'filesystem', 'path' = 'OUT', 'format' = 'debezium-json');
INSERT INTO out SELECT k, v, id, rn FROM (
  SELECT k, v, id, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC, id ASC) AS rn FROM g)
WHERE rn <= 3;";

/// Top-N over an updating input (counts per (k, c)): the operator keeps every row of a
/// partition and follows retractions.
const TOP_N_OF_COUNTS: &str = "CREATE TABLE out (k INT, c INT, n BIGINT, rn BIGINT)
  WITH ('connector' = 'filesystem', 'path' = 'OUT', 'format' = 'debezium-json');
INSERT INTO out SELECT k, c, n, rn FROM (
  SELECT k, c, n, ROW_NUMBER() OVER (PARTITION BY k ORDER BY n DESC, c ASC) AS rn
  FROM (SELECT k, c, COUNT(*) AS n FROM g GROUP BY k, c))
WHERE rn <= 2;";

/// Window Top-N straight over the window TVF: each window's rows wait in the operator until
/// the watermark (1 s behind) passes the window's end, so checkpoints hold them.
const WINDOW_TOP_N: &str = "CREATE TABLE out (ws TIMESTAMP(3), k INT, id BIGINT, v INT, rn BIGINT)
  WITH ('connector' = 'filesystem', 'path' = 'OUT', 'format' = 'json');
INSERT INTO out SELECT window_start, k, id, v, rn FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end, k ORDER BY v DESC, id ASC) AS rn
  FROM TABLE(TUMBLE(TABLE g, DESCRIPTOR(ts), INTERVAL '200' MILLISECOND)))
WHERE rn <= 2;";

/// OVER with a ROWS frame. Rows of a key with equal times are framed in arrival order, which
/// only one source subtask keeps the same from run to run: run it at parallelism 1.
const OVER_ROWS: &str = "CREATE TABLE out (id BIGINT, k INT, n BIGINT, s BIGINT, hi INT)
  WITH ('connector' = 'filesystem', 'path' = 'OUT', 'format' = 'json');
INSERT INTO out SELECT id, k, COUNT(*) OVER w, SUM(id) OVER w, MAX(v) OVER w FROM g
WINDOW w AS (PARTITION BY k ORDER BY ts ROWS BETWEEN 5 PRECEDING AND CURRENT ROW);";

/// OVER with a RANGE frame: rows with equal times share one result, whatever their order.
const OVER_RANGE: &str = "CREATE TABLE out (id BIGINT, k INT, n BIGINT, s BIGINT, lo INT)
  WITH ('connector' = 'filesystem', 'path' = 'OUT', 'format' = 'json');
INSERT INTO out SELECT id, k, COUNT(*) OVER w, SUM(id) OVER w, MIN(v) OVER w FROM g
WINDOW w AS (PARTITION BY k ORDER BY ts RANGE BETWEEN INTERVAL '50' MILLISECOND PRECEDING AND CURRENT ROW);";

/// Session windows with a 10 ms gap: a key has a row every 5 ms on average, so sessions both
/// run long and break often, and every open one waits 1 s for the watermark.
const SESSIONS: &str = "CREATE TABLE out (k INT, ws TIMESTAMP(3), we TIMESTAMP(3), n BIGINT, s BIGINT, hi INT)
  WITH ('connector' = 'filesystem', 'path' = 'OUT', 'format' = 'json');
INSERT INTO out SELECT k, window_start, window_end, COUNT(*), SUM(id), MAX(v)
FROM TABLE(SESSION(TABLE g PARTITION BY k, DESCRIPTOR(ts), INTERVAL '10' MILLISECOND))
GROUP BY k, window_start, window_end;";

#[test]
fn a_killed_top_n_resumes_with_the_same_final_result() {
    changelog_exactly_once(&ranked_job(TOP_N), 1, FAST, 0x5eed_0101);
    changelog_exactly_once(&ranked_job(TOP_N), 2, FAST, 0x5eed_0102);
    changelog_exactly_once(&ranked_job(TOP_N_OF_COUNTS), 2, FAST, 0x5eed_0103);
}

#[test]
fn a_killed_window_top_n_resumes_with_exactly_once_output() {
    exactly_once(&ranked_job(WINDOW_TOP_N), 1, FAST, 0x5eed_0111);
    exactly_once(&ranked_job(WINDOW_TOP_N), 2, FAST, 0x5eed_0112);
}

#[test]
fn a_killed_over_aggregation_resumes_with_exactly_once_output() {
    exactly_once(&ranked_job(OVER_ROWS), 1, FAST, 0x5eed_0121);
    exactly_once(&ranked_job(OVER_RANGE), 2, FAST, 0x5eed_0122);
}

#[test]
fn a_killed_session_window_aggregation_resumes_with_exactly_once_output() {
    exactly_once(&ranked_job(SESSIONS), 1, FAST, 0x5eed_0131);
    exactly_once(&ranked_job(SESSIONS), 2, FAST, 0x5eed_0132);
}

const NEXMARK_DDL: &str = include_str!("../bench/nexmark/ddl_nexmark_fs.sql");
const NEXMARK_VIEWS: &str = include_str!("../bench/nexmark/ddl_views.sql");

/// A Nexmark query over the built-in generator, paced at 5000 events/s for 6 s of input, with
/// its sink turned into the exactly-once filesystem sink.
fn nexmark_job(query: &str) -> String {
    let with = NEXMARK_DDL.rfind(") WITH (").expect("the bundled DDL has a WITH clause");
    let source = format!(
        "{}) WITH ('connector' = 'nexmark', 'events.num' = '30000', 'first-event.rate' = '5000', \
         'next-event.rate' = '5000', 'rate.limited' = 'true');\n",
        &NEXMARK_DDL[..with]
    );
    let query =
        query.replace("'connector' = 'blackhole'", "'connector' = 'filesystem', 'path' = 'OUT', 'format' = 'json'");
    format!("{source}{NEXMARK_VIEWS}\n{query}")
}

/// The bar: q5, q7 and q8 with 1 s checkpoints, killed at 5 seeded moments.
const NEXMARK_TIMING: Timing = Timing { interval_ms: 1000, kill_from_ms: 1300, kill_spread_ms: 1500 };

#[test]
fn nexmark_q5_q7_q8_resume_with_exactly_once_output() {
    for (name, query, seed) in [
        ("q5", include_str!("../bench/nexmark/q5.sql"), 0x5eed_0005),
        ("q7", include_str!("../bench/nexmark/q7.sql"), 0x5eed_0007),
        ("q8", include_str!("../bench/nexmark/q8.sql"), 0x5eed_0008),
    ] {
        eprintln!("{name}: seed {seed:#x}");
        exactly_once(&nexmark_job(query), 1, NEXMARK_TIMING, seed);
    }
}

/// A corrupt checkpoint is reported with its path and never taken for empty state: with no
/// other checkpoint to fall back to, `--resume` refuses to start.
#[test]
fn a_corrupt_checkpoint_is_reported_not_taken_for_empty_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let script = dir.path().join("job.sql");
    let body = datagen_job(PASS_THROUGH).replace("OUT", &out.display().to_string()).replace("4000", "40000");
    std::fs::write(&script, header(dir.path(), 1, FAST) + &body).expect("script");
    let run = || resume(&script, &[]).wait_with_output().expect("weir runs");
    assert!(run().status.success());
    let checkpoints = dir.path().join("state/job/checkpoints");
    let metadata: Vec<_> = std::fs::read_dir(&checkpoints)
        .expect("checkpoints folder")
        .map(|e| e.expect("entry").path().join("_metadata"))
        .filter(|p| p.exists())
        .collect();
    assert_eq!(metadata.len(), 1, "one checkpoint retained: {metadata:?}");
    let mut bytes = std::fs::read(&metadata[0]).expect("metadata");
    let last = bytes.len() - 2;
    bytes[last] ^= 0x20;
    std::fs::write(&metadata[0], bytes).expect("corrupt it");
    let o = run();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "resuming from nothing usable must fail: {stderr}");
    let error = stderr.lines().find(|l| l.starts_with("error: ")).unwrap_or_default();
    assert!(error.contains("chk-") && error.contains("_metadata"), "the error names the file: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A job checkpointed at parallelism 2, killed, and resumed at 3 and then finished at 1: its
/// keyed state moves by key group and its file source's positions by file, and the published
/// rows equal a failure-free run's.
#[test]
fn a_job_resumed_at_other_parallelisms_publishes_the_same_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.json");
    let generated = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["nexmark-gen", "--events", "1000000", "--out"])
        .arg(&events)
        .status()
        .expect("nexmark-gen runs");
    assert!(generated.success());
    let script = |name: &str| {
        let out = dir.path().join(format!("out-{name}"));
        let body = NEXMARK_DDL.replace("${DATA_PATH}", &events.display().to_string())
            + "\n"
            + NEXMARK_VIEWS
            + "\n"
            + &include_str!("../bench/nexmark/q5.sql")
                .replace("'connector' = 'blackhole'", "'connector' = 'filesystem', 'path' = 'OUT', 'format' = 'json'")
                .replace("OUT", &out.display().to_string());
        let header = format!(
            "SET 'execution.checkpointing.interval' = '200 ms';\nSET 'state.checkpoints.dir' = '{}';\n",
            dir.path().join(format!("state-{name}")).display()
        );
        let path = dir.path().join(format!("{name}.sql"));
        std::fs::write(&path, header + &body).expect("script");
        (path, out)
    };
    let weir = |script: &Path, parallelism: &str| resume(script, &["--parallelism", parallelism]);
    let (reference, reference_out) = script("reference");
    assert!(weir(&reference, "2").wait_with_output().expect("runs").status.success());
    let (rescaled, rescaled_out) = script("rescaled");
    let checkpoints = dir.path().join("state-rescaled/rescaled/checkpoints");
    // Run at 2 until a checkpoint exists, then kill; resume at 3 and kill again; finish at 1.
    for (parallelism, finish) in [("2", false), ("3", false), ("1", true)] {
        let mut child = weir(&rescaled, parallelism);
        if finish {
            let output = child.wait_with_output().expect("runs");
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
            break;
        }
        let started = Instant::now();
        let before = newest_checkpoint(&checkpoints);
        loop {
            assert!(child.try_wait().expect("wait").is_none(), "the run at {parallelism} ended before a checkpoint");
            if newest_checkpoint(&checkpoints) > before {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "no checkpoint at parallelism {parallelism}");
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = Command::new("kill").arg("-9").arg(child.id().to_string()).status();
        let _ = child.wait();
    }
    let expected = published(&reference_out);
    assert!(!expected.is_empty());
    assert_eq!(published(&rescaled_out), expected, "rescaled runs published other rows");
}

/// The newest committed checkpoint's id under a job's checkpoints folder (0: none).
fn newest_checkpoint(checkpoints: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(checkpoints) else { return 0 };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("_metadata").exists())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("chk-")?.parse().ok())
        .max()
        .unwrap_or(0)
}

/// Starts `weir run SCRIPT -p N --quiet` with `header` put before the script's text.
fn start_at(script: &Path, header: &str, parallelism: u32) -> std::process::Child {
    let text = std::fs::read_to_string(script).expect("script");
    let run = script.with_extension(format!("p{parallelism}.sql"));
    std::fs::write(&run, format!("{header}{text}")).expect("script");
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("run")
        .arg(&run)
        .args(["--quiet", "--parallelism", &parallelism.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weir starts")
}

/// Lets a job run for `after`, stops it with `weir savepoint PID` and returns the savepoint's
/// path, as the job prints it.
fn stop_with_savepoint(mut child: std::process::Child, after: Duration) -> String {
    std::thread::sleep(after);
    assert!(child.try_wait().expect("wait").is_none(), "the job ended before its savepoint");
    let asked = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["savepoint", &child.id().to_string()])
        .output()
        .expect("weir savepoint");
    assert!(asked.status.success(), "{}", String::from_utf8_lossy(&asked.stderr));
    let output = child.wait_with_output().expect("the job stops");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "stop-with-savepoint exits cleanly: {stderr}");
    let line = stderr.lines().find(|l| l.starts_with("stopped with savepoint ")).unwrap_or_else(|| panic!("{stderr}"));
    line["stopped with savepoint ".len()..].split(' ').next().expect("a path").to_string()
}

#[test]
fn a_savepoint_taken_at_parallelism_2_restores_at_1_then_3_exactly_once() {
    // q5 over the paced generator (6 s of input): its sources move between parallelisms too.
    let body = nexmark_job(include_str!("../bench/nexmark/q5.sql"));
    let timing = Timing { interval_ms: 1000, kill_from_ms: 0, kill_spread_ms: 1 };
    let expected = run(&body, 2, timing, 0, 0);
    assert!(!expected.is_empty());

    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let script = dir.path().join("job.sql");
    std::fs::write(&script, header(dir.path(), 2, timing) + &body.replace("OUT", &out.display().to_string()))
        .expect("script");
    let first = stop_with_savepoint(start_at(&script, "", 2), Duration::from_millis(2000));
    let restore = |path: &str| format!("SET 'execution.savepoint.path' = '{path}';\n");
    let second = stop_with_savepoint(start_at(&script, &restore(&first), 1), Duration::from_millis(2000));
    assert_ne!(first, second);
    let last = start_at(&script, &restore(&second), 3).wait_with_output().expect("the job ends");
    let stderr = String::from_utf8_lossy(&last.stderr);
    assert!(last.status.success(), "{stderr}");
    assert!(stderr.contains("restoring job"), "{stderr}");
    let got = published(&out);
    let missing: Vec<_> = expected.iter().filter(|(l, n)| got.get(*l) != Some(n)).take(5).collect();
    let extra: Vec<_> = got.iter().filter(|(l, n)| expected.get(*l) != Some(n)).take(5).collect();
    assert!(missing.is_empty() && extra.is_empty(), "expected but not once {missing:?}; unexpected {extra:?}");
}

#[test]
fn unaligned_checkpoints_resume_with_exactly_once_output() {
    // Two channels into every windowed subtask (parallelism 2) and a two-input window join
    // (q8): rows in flight across each snapshot are recorded with it and replayed on resume.
    let unaligned = "SET 'execution.checkpointing.unaligned' = 'true';\n";
    exactly_once(&format!("{unaligned}{}", datagen_job(WINDOWED)), 2, FAST, 0x5eed_00a1);
    exactly_once(
        &format!("{unaligned}{}", nexmark_job(include_str!("../bench/nexmark/q8.sql"))),
        2,
        NEXMARK_TIMING,
        0x5eed_00a8,
    );
}
