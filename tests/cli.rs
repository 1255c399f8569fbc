//! End-to-end tests of `weir run` as a user meets it: real processes, real files, exit codes
//! and messages. Bad input must give a clear error and a non-zero exit, never a panic.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Runs `weir` and collects its output; a run that hangs is killed and fails the test.
fn weir(args: &[&str], dir: &Path) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weir starts");
    let pid = child.id();
    let (done, waited) = std::sync::mpsc::channel();
    let watchdog = std::thread::spawn(move || {
        if waited.recv_timeout(Duration::from_secs(120)).is_err() {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
    });
    let output = child.wait_with_output().expect("weir runs");
    let _ = done.send(());
    let _ = watchdog.join();
    output
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn assert_clean_failure(o: &Output) {
    assert!(!o.status.success(), "expected failure; stdout: {}", stdout(o));
    let err = stderr(o);
    assert!(!err.contains("panicked"), "a panic is not an error message: {err}");
    assert!(err.starts_with("error: "), "errors start with 'error: ': {err}");
}

const CLICKS: &str = "CREATE TABLE clicks (
    user_id BIGINT,
    url STRING,
    ts TIMESTAMP(3),
    WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH (
    'connector' = 'filesystem',
    'path' = 'clicks.json',
    'format' = 'json'
    EXTRA
);
";

fn clicks_table(extra: &str) -> String {
    CLICKS.replace("EXTRA", extra)
}

const GOOD_ROWS: &str = r#"{"user_id":1,"url":"a","ts":"2024-01-01 00:00:01.000"}
{"user_id":2,"url":"b","ts":"2024-01-01 00:00:02.000"}
{"user_id":1,"url":"c","ts":"2024-01-01 00:00:12.000"}
"#;

#[test]
fn malformed_sql_names_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("job.sql"), "SELECT user_id\nFROM clicks\nWHERE url = = 'x'").unwrap();
    let o = weir(&["run", "job.sql"], dir.path());
    assert_clean_failure(&o);
    assert!(stderr(&o).contains("job.sql:3:13:"), "{}", stderr(&o));
}

#[test]
fn unknown_column_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("clicks.json"), GOOD_ROWS).unwrap();
    let sql = format!("{}\nSELECT nope FROM clicks;", clicks_table(""));
    std::fs::write(dir.path().join("job.sql"), sql).unwrap();
    let o = weir(&["run", "job.sql"], dir.path());
    assert_clean_failure(&o);
    assert!(stderr(&o).contains("nope"), "{}", stderr(&o));
}

#[test]
fn unknown_connector_lists_the_valid_ones() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("job.sql"), "CREATE TABLE t (a INT) WITH ('connector' = 'kafkaa');").unwrap();
    let o = weir(&["run", "job.sql"], dir.path());
    assert_clean_failure(&o);
    let err = stderr(&o);
    assert!(
        err.contains("unknown connector 'kafkaa'") && err.contains("filesystem") && err.contains("nexmark"),
        "{err}"
    );
}

#[test]
fn unknown_option_lists_the_valid_ones() {
    let dir = tempfile::tempdir().unwrap();
    let sql = clicks_table(", 'json.ignore-parse-error' = 'true'");
    std::fs::write(dir.path().join("job.sql"), sql).unwrap();
    let o = weir(&["run", "job.sql"], dir.path());
    assert_clean_failure(&o);
    let err = stderr(&o);
    assert!(
        err.contains("unknown option 'json.ignore-parse-error'") && err.contains("json.ignore-parse-errors"),
        "{err}"
    );
}

#[test]
fn malformed_record_fails_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let rows = format!("{GOOD_ROWS}{{\"user_id\":3,\"url\":\"d\",\"ts\":\n");
    std::fs::write(dir.path().join("clicks.json"), rows).unwrap();
    let sql = format!("{}\nSELECT user_id, url FROM clicks;", clicks_table(""));
    std::fs::write(dir.path().join("job.sql"), sql).unwrap();
    let o = weir(&["run", "job.sql", "--output", "out.jsonl"], dir.path());
    assert_clean_failure(&o);
    let err = stderr(&o);
    assert!(err.contains("clicks.json:4"), "names the file and line: {err}");
}

#[test]
fn malformed_record_is_skipped_and_counted_when_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let rows = format!("{{not json\n{GOOD_ROWS}");
    std::fs::write(dir.path().join("clicks.json"), rows).unwrap();
    let sql = format!("{}\nSELECT user_id, url FROM clicks;", clicks_table(", 'json.ignore-parse-errors' = 'true'"));
    std::fs::write(dir.path().join("job.sql"), sql).unwrap();
    let o = weir(&["run", "job.sql", "--output", "out.jsonl", "--stats-json", "stats.json"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    assert_eq!(out.lines().count(), 3, "{out}");
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("stats.json")).unwrap()).unwrap();
    assert_eq!(stats["records_skipped"], 1);
    assert!(stderr(&o).contains("1 malformed records skipped"), "{}", stderr(&o));
}

#[test]
fn changelog_output_and_late_rows() {
    let dir = tempfile::tempdir().unwrap();
    // The third row is 11 s behind the watermark: late for its window, dropped and counted.
    let rows = r#"{"user_id":1,"url":"a","ts":"2024-01-01 00:00:01.000"}
{"user_id":1,"url":"b","ts":"2024-01-01 00:00:22.000"}
{"user_id":1,"url":"c","ts":"2024-01-01 00:00:05.000"}
"#;
    std::fs::write(dir.path().join("clicks.json"), rows).unwrap();
    let sql = format!(
        "{}\nSELECT user_id, window_start, COUNT(*) FROM TABLE(TUMBLE(TABLE clicks, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY user_id, window_start, window_end;",
        clicks_table("")
    );
    std::fs::write(dir.path().join("job.sql"), sql).unwrap();
    let o = weir(&["run", "job.sql", "--output", "out.jsonl", "--stats-json", "stats.json"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        vec![
            r#"{"op":"+I","row":[1,"2024-01-01 00:00:00.000",1]}"#,
            r#"{"op":"+I","row":[1,"2024-01-01 00:00:20.000",1]}"#,
        ]
    );
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("stats.json")).unwrap()).unwrap();
    assert_eq!(stats["late_records_dropped"], 1);
}

#[test]
fn group_aggregation_emits_updates() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("clicks.json"), GOOD_ROWS).unwrap();
    let sql = format!("{}\nSELECT user_id, COUNT(*) AS n FROM clicks GROUP BY user_id;", clicks_table(""));
    std::fs::write(dir.path().join("job.sql"), sql).unwrap();
    let o = weir(&["run", "job.sql", "--output", "out.jsonl"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    // All three rows arrive in one batch: one result per key.
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(lines, vec![r#"{"op":"+I","row":[1,2]}"#, r#"{"op":"+I","row":[2,1]}"#]);
}

#[test]
fn distinct_and_grouping_without_aggregates() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("clicks.json"), GOOD_ROWS).unwrap();
    for (query, expected) in [
        ("SELECT DISTINCT user_id FROM clicks;", vec![r#"{"op":"+I","row":[1]}"#, r#"{"op":"+I","row":[2]}"#]),
        // The inner COUNT is pruned: a GROUP BY with no aggregate left, under a global one.
        (
            "SELECT COUNT(*) AS n FROM (SELECT user_id, COUNT(*) FROM clicks GROUP BY user_id);",
            vec![r#"{"op":"+I","row":[2]}"#],
        ),
    ] {
        std::fs::write(dir.path().join("job.sql"), format!("{}\n{query}", clicks_table(""))).unwrap();
        let o = weir(&["run", "job.sql", "--output", "out.jsonl"], dir.path());
        assert!(o.status.success(), "{query}: {}", stderr(&o));
        let out = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
        let mut lines: Vec<&str> = out.lines().collect();
        lines.sort();
        assert_eq!(lines, expected, "{query}");
    }
}

#[test]
fn tableau_output_for_a_final_select() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("clicks.json"), GOOD_ROWS).unwrap();
    let sql = format!("{}\nSELECT user_id, url FROM clicks WHERE user_id = 1;", clicks_table(""));
    std::fs::write(dir.path().join("job.sql"), sql).unwrap();
    let o = weir(&["run", "job.sql"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("| op |") && out.contains("user_id") && out.contains("| +I |"), "{out}");
    assert!(out.contains("Received a total of 2 rows"), "{out}");
}

#[test]
fn explain_prints_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let sql = format!("{}\nEXPLAIN SELECT user_id, COUNT(*) FROM clicks GROUP BY user_id;", clicks_table(""));
    std::fs::write(dir.path().join("job.sql"), sql).unwrap();
    let o = weir(&["run", "job.sql"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("GroupAggregate") && out.contains("HASH") && out.contains("Source"), "{out}");
}

#[test]
fn insert_into_print_and_filesystem_sinks() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("clicks.json"), GOOD_ROWS).unwrap();
    let sql = format!(
        "{}
CREATE TABLE out_print (user_id BIGINT, url STRING) WITH ('connector' = 'print');
CREATE TABLE out_files (user_id BIGINT, url STRING) WITH ('connector' = 'filesystem', 'path' = 'out', 'format' = 'csv');
INSERT INTO out_print SELECT user_id, url FROM clicks WHERE user_id = 2;
INSERT INTO out_files SELECT user_id, url FROM clicks;",
        clicks_table("")
    );
    std::fs::write(dir.path().join("job.sql"), sql).unwrap();
    let o = weir(&["run", "job.sql"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "+I[2, b]");
    let mut written = String::new();
    for f in std::fs::read_dir(dir.path().join("out")).unwrap() {
        written.push_str(&std::fs::read_to_string(f.unwrap().path()).unwrap());
    }
    let mut lines: Vec<&str> = written.lines().collect();
    lines.sort();
    assert_eq!(lines, vec!["1,a", "1,c", "2,b"]);
}

#[test]
fn nexmark_generator_writes_conformance_layout() {
    let dir = tempfile::tempdir().unwrap();
    let o = weir(&["nexmark-gen", "--events", "500", "--out", "events.json"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(dir.path().join("events.json")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 500);
    let mut counts = [0usize; 3];
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let t = v["event_type"].as_u64().unwrap() as usize;
        counts[t] += 1;
        let key = ["person", "auction", "bid"][t];
        assert!(v[key]["dateTime"].as_str().unwrap().len() == 23, "{l}");
        assert!(l.starts_with(&format!("{{\"event_type\":{t},\"{key}\":{{")), "{l}");
    }
    assert_eq!(counts, [10, 30, 460], "1:3:46 persons, auctions, bids");
}

#[test]
fn datagen_source_with_sequences_and_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let sql = "CREATE TABLE g (id BIGINT, name STRING, v INT) WITH (
  'connector' = 'datagen', 'number-of-rows' = '50', 'rows-per-second' = '1000',
  'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '50',
  'fields.v.min' = '1', 'fields.v.max' = '10', 'fields.name.length' = '5');
SELECT COUNT(*), MIN(id), MAX(id), MIN(v) >= 1, MAX(v) <= 10, MIN(CHAR_LENGTH(name)) FROM g;";
    std::fs::write(dir.path().join("job.sql"), sql).unwrap();
    let o = weir(&["run", "job.sql", "--output", "out.jsonl", "--parallelism", "2"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    assert_eq!(out.lines().last().unwrap(), r#"{"op":"+U","row":[50,1,50,true,true,5]}"#, "{out}");
}

#[test]
fn a_bad_savepoint_path_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let job = "SET 'execution.savepoint.path' = 'no-such-savepoint';
CREATE TABLE g (id BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '5');
SELECT id FROM g;";
    std::fs::write(dir.path().join("job.sql"), job).unwrap();
    let o = weir(&["run", "job.sql"], dir.path());
    assert_clean_failure(&o);
    assert!(stderr(&o).contains("needs checkpoints"), "{}", stderr(&o));
    let checkpointed = format!("SET 'execution.checkpointing.interval' = '1 s';\n{job}");
    std::fs::write(dir.path().join("job.sql"), checkpointed).unwrap();
    let o = weir(&["run", "job.sql"], dir.path());
    assert_clean_failure(&o);
    assert!(stderr(&o).contains("cannot restore from execution.savepoint.path 'no-such-savepoint'"), "{}", stderr(&o));
}

/// `weir run q.sql | head -1`: the reader goes away after one line. Weir stops quietly and
/// exits 0, as a well-behaved filter does: no "Broken pipe" error, no panic.
#[test]
fn a_reader_that_goes_away_stops_the_run_quietly() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("temp dir");
    let script = "CREATE TABLE g (id BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '2000000');\n\
                  SELECT id FROM g;\n";
    std::fs::write(dir.path().join("rows.sql"), script).expect("script written");
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "rows.sql"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weir starts");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut first).expect("a first line");
    assert!(!first.is_empty(), "no output");
    // The reader is gone: its end of the pipe was dropped with the BufReader.
    let output = child.wait_with_output().expect("weir ends");
    let err = stderr(&output);
    assert!(output.status.success(), "exit {:?}: {err}", output.status);
    assert!(!err.contains("Broken pipe") && !err.contains("panicked"), "{err}");
}

const PAYMENTS_TABLE: &str = "CREATE TABLE payments (
    id BIGINT,
    m STRING,
    amount DECIMAL(10, 2),
    ts TIMESTAMP(3)
) WITH (
    'connector' = 'filesystem',
    'path' = 'payments.csv',
    'format' = 'csv'
    EXTRA
);
";

/// Runs `query` over `payments.csv` holding `rows` and returns the sorted canonical output.
fn run_over_payments(dir: &Path, rows: &str, extra: &str, query: &str) -> Result<Vec<String>, String> {
    std::fs::write(dir.join("payments.csv"), rows).unwrap();
    std::fs::write(dir.join("job.sql"), format!("{}\n{query}", PAYMENTS_TABLE.replace("EXTRA", extra))).unwrap();
    let o = weir(&["run", "job.sql", "--output", "out.jsonl"], dir);
    if !o.status.success() {
        assert_clean_failure(&o);
        return Err(stderr(&o));
    }
    let out = std::fs::read_to_string(dir.join("out.jsonl")).unwrap();
    let mut lines: Vec<String> = out.lines().map(str::to_owned).collect();
    lines.sort();
    Ok(lines)
}

#[test]
fn a_csv_source_read_with_some_of_its_columns_reads_those_columns() {
    let dir = tempfile::tempdir().unwrap();
    let rows = "1,card,12.30,2024-01-01 00:00:01.000\n2,cash,0.50,2024-01-01 00:00:02.000\n";
    let query = "SELECT id, amount, ts FROM payments;";
    for extra in ["", ", 'csv.ignore-parse-errors' = 'true'"] {
        let lines = run_over_payments(dir.path(), rows, extra, query).unwrap_or_else(|e| panic!("{extra}: {e}"));
        assert_eq!(
            lines,
            [
                r#"{"op":"+I","row":[1,"12.30","2024-01-01 00:00:01.000"]}"#,
                r#"{"op":"+I","row":[2,"0.50","2024-01-01 00:00:02.000"]}"#,
            ],
            "{extra}"
        );
    }
    let lines = run_over_payments(dir.path(), rows, "", "SELECT COUNT(*) FROM payments;").unwrap();
    assert_eq!(lines, [r#"{"op":"+I","row":[2]}"#]);
}

#[test]
fn a_quoted_csv_field_may_hold_line_breaks() {
    let dir = tempfile::tempdir().unwrap();
    let rows = "1,\"two\nlines, \"\"quoted\"\"\",12.30,2024-01-01 00:00:01\n2,cash,0.50,2024-01-01 00:00:02\n";
    let lines = run_over_payments(dir.path(), rows, "", "SELECT id, m FROM payments;").unwrap();
    assert_eq!(lines, [r#"{"op":"+I","row":[1,"two\nlines, \"quoted\""]}"#, r#"{"op":"+I","row":[2,"cash"]}"#]);

    let bad = format!("{rows}3,\"spans\nlines\",oops,2024-01-01 00:00:03\n");
    let error = run_over_payments(dir.path(), &bad, "", "SELECT id, amount FROM payments;").expect_err("bad DECIMAL");
    assert!(error.contains("payments.csv:4"), "names the line the record starts on: {error}");
    let unclosed = format!("{rows}3,\"never closed,1.00,2024-01-01 00:00:03\n4,x,1.00,2024-01-01 00:00:04\n");
    let lenient = ", 'csv.ignore-parse-errors' = 'true'";
    let lines = run_over_payments(dir.path(), &unclosed, lenient, "SELECT id FROM payments;").unwrap();
    assert_eq!(lines, [r#"{"op":"+I","row":[1]}"#, r#"{"op":"+I","row":[2]}"#]);
}

#[test]
fn the_json_sink_writes_decimals_as_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let rows = "1,card,12.30,2024-01-01 00:00:01.000\n2,cash,-0.50,2024-01-01 00:00:02.000\n";
    std::fs::write(dir.path().join("payments.csv"), rows).unwrap();
    let sql = format!(
        "{}
CREATE TABLE out_json (id BIGINT, amount DECIMAL(10, 2)) WITH ('connector' = 'filesystem', 'path' = 'out', 'format' = 'json');
INSERT INTO out_json SELECT id, amount FROM payments;",
        PAYMENTS_TABLE.replace("EXTRA", "")
    );
    std::fs::write(dir.path().join("job.sql"), sql).unwrap();
    let o = weir(&["run", "job.sql"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let mut written = String::new();
    for f in std::fs::read_dir(dir.path().join("out")).unwrap() {
        written.push_str(&std::fs::read_to_string(f.unwrap().path()).unwrap());
    }
    let mut lines: Vec<&str> = written.lines().collect();
    lines.sort();
    assert_eq!(lines, [r#"{"id":1,"amount":12.30}"#, r#"{"id":2,"amount":-0.50}"#]);
}

/// The final rows of a changelog written by `--output`: each row's JSON text, as often as the
/// changes leave it, sorted.
fn final_rows(changelog: &str) -> Vec<String> {
    let mut counts: std::collections::BTreeMap<String, i64> = Default::default();
    for line in changelog.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let delta = match v["op"].as_str().unwrap() {
            "+I" | "+U" => 1,
            _ => -1,
        };
        *counts.entry(v["row"].to_string()).or_default() += delta;
    }
    counts.into_iter().flat_map(|(row, n)| std::iter::repeat_n(row, n.max(0) as usize)).collect()
}

/// Joins without an equality key (Flink runs them on one subtask, every row against every row
/// of the other side). Expected rows by SQL semantics over `orders` (1: 10, 2: 25) and `limits`
/// (low: 15, high: 30).
#[test]
fn joins_without_an_equality_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("orders.json"), "{\"id\":1,\"amount\":10}\n{\"id\":2,\"amount\":25}\n").unwrap();
    std::fs::write(dir.path().join("limits.json"), "{\"name\":\"low\",\"lim\":15}\n{\"name\":\"high\",\"lim\":30}\n")
        .unwrap();
    let tables = "CREATE TABLE orders (id INT, amount INT) WITH ('connector' = 'filesystem', 'path' = 'orders.json', 'format' = 'json');
CREATE TABLE limits (name STRING, lim INT) WITH ('connector' = 'filesystem', 'path' = 'limits.json', 'format' = 'json');
";
    let all = vec!["[1,\"high\"]", "[1,\"low\"]", "[2,\"high\"]", "[2,\"low\"]"];
    for (query, expected) in [
        ("SELECT o.id, l.name FROM orders o CROSS JOIN limits l", all.clone()),
        ("SELECT o.id, l.name FROM orders o, limits l", all.clone()),
        ("SELECT o.id, l.name FROM orders o JOIN limits l ON TRUE", all.clone()),
        ("SELECT o.id, l.name FROM orders o, limits l WHERE o.amount > l.lim", vec!["[2,\"low\"]"]),
        ("SELECT o.id, l.name FROM orders o JOIN limits l ON o.amount > l.lim", vec!["[2,\"low\"]"]),
        (
            "SELECT o.id, l.name FROM orders o JOIN limits l ON o.amount = l.lim OR o.id = 2",
            vec!["[2,\"high\"]", "[2,\"low\"]"],
        ),
        ("SELECT o.id, l.name FROM orders o LEFT JOIN limits l ON o.amount > l.lim", vec!["[1,null]", "[2,\"low\"]"]),
        (
            "SELECT o.id, l.name FROM orders o RIGHT JOIN limits l ON o.amount > l.lim",
            vec!["[2,\"low\"]", "[null,\"high\"]"],
        ),
        (
            "SELECT o.id, l.name FROM orders o FULL JOIN limits l ON o.amount > l.lim",
            vec!["[1,null]", "[2,\"low\"]", "[null,\"high\"]"],
        ),
        // A changelog input: the count goes 1, 2 (or straight to 2); only 2 matches in the end.
        (
            "SELECT c.n, l.name FROM (SELECT COUNT(*) AS n FROM orders) c JOIN limits l ON c.n >= 2",
            vec!["[2,\"high\"]", "[2,\"low\"]"],
        ),
    ] {
        std::fs::write(dir.path().join("job.sql"), format!("{tables}{query};")).unwrap();
        for parallelism in ["1", "3"] {
            let o = weir(&["run", "job.sql", "--output", "out.jsonl", "--parallelism", parallelism], dir.path());
            assert!(o.status.success(), "{query}: {}", stderr(&o));
            let out = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
            assert_eq!(final_rows(&out), expected, "{query} at parallelism {parallelism}");
        }
    }
}

#[test]
fn a_run_time_error_says_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("clicks.json"), GOOD_ROWS).unwrap();
    let sql = format!("{}\nSELECT user_id / (user_id - user_id) FROM clicks;", clicks_table(""));
    std::fs::write(dir.path().join("job.sql"), sql).unwrap();
    let o = weir(&["run", "job.sql", "--output", "out.jsonl"], dir.path());
    assert_clean_failure(&o);
    let err = stderr(&o);
    assert_eq!(err.matches("Divide by zero error").count(), 1, "{err}");
}
