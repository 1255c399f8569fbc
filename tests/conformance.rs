//! Conformance: every Flink SQL job of `../shared/conformance/` runs through `weir run` and
//! must produce the rows Apache Flink produced, compared by the suite's rule (final multiset
//! of the changelog; floating-point values within a relative 1e-9).
//!
//! The suite is found at `$WEIR_CONFORMANCE_DIR` or `../shared/conformance` beside the
//! repository. A case Weir cannot run fails; none is skipped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

mod common;
use common::shuffle_server;

fn suite_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("WEIR_CONFORMANCE_DIR") {
        return PathBuf::from(dir);
    }
    let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance");
    if beside.exists() {
        return beside;
    }
    // The workplace's shared folder, when the checkout is not beside it.
    PathBuf::from("/work/shared/conformance")
}

/// Runs one case and returns a description of the difference, if any.
fn run_case(name: &str) -> Result<(), String> {
    run_case_with(name, None, None)
}

fn run_case_with(name: &str, parallelism: Option<u32>, shuffle_server: Option<&str>) -> Result<(), String> {
    let suite = suite_dir().canonicalize().map_err(|e| format!("conformance suite not found: {e}"))?;
    let case = suite.join("cases").join(name);
    let sql = std::fs::read_to_string(case.join("job.sql")).map_err(|e| format!("{name}: {e}"))?;
    let sql = sql.replace("${DATA_DIR}", &suite.join("data").display().to_string());
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let script = work.path().join("job.sql");
    let output = work.path().join("out.jsonl");
    std::fs::write(&script, sql).map_err(|e| e.to_string())?;
    let mut command = Command::new(env!("CARGO_BIN_EXE_weir"));
    command.arg("run").arg(&script).arg("--output").arg(&output);
    if let Some(p) = parallelism {
        command.arg("--parallelism").arg(p.to_string());
    }
    if let Some(addr) = shuffle_server {
        command.arg("--shuffle-server").arg(addr);
    }
    let mut child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            return Err(format!("{name}: timed out"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = {
        use std::io::Read;
        let mut s = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    };
    if !status.success() {
        return Err(format!("{name}: weir failed: {}", stderr.trim()));
    }
    let actual = final_rows(&std::fs::read_to_string(&output).map_err(|e| e.to_string())?)?;
    let expected: Vec<Value> = std::fs::read_to_string(case.join("expected.jsonl"))
        .map_err(|e| e.to_string())?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("bad expected row {l}: {e}")))
        .collect::<Result<_, _>>()?;
    compare(name, actual, expected)
}

/// Applies a changelog (`{"op":…,"row":[…]}` lines) to a multiset.
fn final_rows(changelog: &str) -> Result<Vec<Value>, String> {
    let mut counts: HashMap<String, (Value, i64)> = HashMap::new();
    for line in changelog.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).map_err(|e| format!("bad output line {line}: {e}"))?;
        let op = v["op"].as_str().ok_or("output line without op")?.to_string();
        let row = v["row"].clone();
        let key = row.to_string();
        let entry = counts.entry(key).or_insert((row, 0));
        match op.as_str() {
            "+I" | "+U" => entry.1 += 1,
            "-U" | "-D" => entry.1 -= 1,
            other => return Err(format!("unknown op {other}")),
        }
    }
    let mut rows = Vec::new();
    for (_, (row, n)) in counts {
        if n < 0 {
            return Err(format!("row retracted more often than inserted: {row}"));
        }
        for _ in 0..n {
            rows.push(row.clone());
        }
    }
    Ok(rows)
}

fn is_float(v: &Value) -> bool {
    matches!(v, Value::Number(n) if !n.is_i64() && !n.is_u64())
}

fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if is_float(a) || is_float(b) => {
            let (x, y) = (x.as_f64().unwrap_or(f64::NAN), y.as_f64().unwrap_or(f64::NAN));
            (x - y).abs() <= 1e-9 * x.abs().max(y.abs())
        }
        _ => a == b,
    }
}

fn rows_equal(a: &Value, b: &Value) -> bool {
    match (a.as_array(), b.as_array()) {
        (Some(x), Some(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| values_equal(p, q)),
        _ => false,
    }
}

/// The row with floating-point values blanked out: rows can only match within such a bucket.
fn exact_part(row: &Value) -> String {
    match row.as_array() {
        Some(values) => values
            .iter()
            .map(|v| if is_float(v) { "~".to_string() } else { v.to_string() })
            .collect::<Vec<_>>()
            .join("\u{1}"),
        None => row.to_string(),
    }
}

fn compare(name: &str, actual: Vec<Value>, expected: Vec<Value>) -> Result<(), String> {
    let mut buckets: HashMap<String, Vec<Value>> = HashMap::new();
    for row in actual.iter() {
        buckets.entry(exact_part(row)).or_default().push(row.clone());
    }
    let mut missing = Vec::new();
    for row in &expected {
        let bucket = buckets.entry(exact_part(row)).or_default();
        match bucket.iter().position(|a| rows_equal(a, row)) {
            Some(i) => {
                bucket.swap_remove(i);
            }
            None => missing.push(row.to_string()),
        }
    }
    let mut extra: Vec<String> = buckets.into_values().flatten().map(|r| r.to_string()).collect();
    if missing.is_empty() && extra.is_empty() {
        return Ok(());
    }
    missing.sort();
    extra.sort();
    Err(format!(
        "{name}: {} expected rows, {} actual; {} missing, {} unexpected\n  missing (first 5): {:?}\n  unexpected (first 5): {:?}",
        expected.len(),
        actual.len(),
        missing.len(),
        extra.len(),
        &missing[..missing.len().min(5)],
        &extra[..extra.len().min(5)]
    ))
}

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        const CASES: &[&str] = &[$(stringify!($name)),*];
        $(
            #[test]
            fn $name() {
                if let Err(e) = run_case(stringify!($name)) {
                    panic!("{e}");
                }
            }
        )*
    };
}

cases!(
    feat_cast_time,
    feat_cumulate_agg,
    feat_dedup_keep_first,
    feat_dedup_keep_last,
    feat_groupby_count_distinct,
    feat_groupby_decimal,
    feat_hop_agg,
    feat_inner_join,
    feat_interval_join,
    feat_left_join,
    feat_null_handling,
    feat_over_range,
    feat_over_rows,
    feat_session_agg,
    feat_string_regexp,
    feat_topn,
    feat_tumble_agg,
    feat_window_dedup,
    feat_window_topn,
    nexmark_q0,
    nexmark_q1,
    nexmark_q10,
    nexmark_q11,
    nexmark_q14,
    nexmark_q15,
    nexmark_q16,
    nexmark_q17,
    nexmark_q18,
    nexmark_q19,
    nexmark_q2,
    nexmark_q20,
    nexmark_q21,
    nexmark_q22,
    nexmark_q3,
    nexmark_q4,
    nexmark_q5,
    nexmark_q7,
    nexmark_q8,
    nexmark_q9,
);

/// A case added to the suite must be added to the list above, so it cannot go unrun.
#[test]
fn every_case_is_listed() {
    let dir = suite_dir().join("cases");
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("conformance suite not found at {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("job.sql").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut listed: Vec<String> = CASES.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(found, listed, "cases in {} differ from the list in tests/conformance.rs", dir.display());
}

/// Every case again with three parallel subtasks per operator: exchanges by key group, the
/// watermark as the minimum over channels, and sources with nothing to read must not change
/// any result. Cases over `clicks.jsonl` are left out: it holds late records, and whether a
/// late record is dropped depends on when the idle source subtasks' ends reach an operator
/// relative to the reading subtask's rows — nondeterministic in Flink too, so Flink's output
/// at parallelism 1 is not the reference there.
#[test]
fn every_case_without_late_data_at_parallelism_3() {
    let failures: Vec<String> =
        cases_without_late_data().filter_map(|case| run_case_with(case, Some(3), None).err()).collect();
    assert!(failures.is_empty(), "{} cases differ at parallelism 3:\n{}", failures.len(), failures.join("\n"));
}

fn cases_without_late_data() -> impl Iterator<Item = &'static &'static str> {
    let suite = suite_dir();
    CASES.iter().filter(move |case| {
        let job = std::fs::read_to_string(suite.join("cases").join(case).join("job.sql")).unwrap_or_default();
        !job.contains("clicks.jsonl")
    })
}

/// The same cases with every exchange going through a remote shuffle server process: batches,
/// changelogs, watermarks and ends of partitions cross real sockets, and results must not change.
#[test]
fn every_case_without_late_data_through_a_remote_shuffle_server() {
    let server = shuffle_server();
    let failures: Vec<String> =
        cases_without_late_data().filter_map(|case| run_case_with(case, Some(2), Some(&server.addr)).err()).collect();
    assert!(
        failures.is_empty(),
        "{} cases differ through the remote shuffle:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
