//! The remote shuffle with real processes: a `weir shuffle` server killed with `kill -9` in the
//! middle of a stream must fail both ends of its channels promptly — never hang them, never let
//! a consumer mistake the silence for the end of its input.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use weir_dataflow::event::StreamEvent;
use weir_dataflow::ids::{ChannelId, PartitionId, SubtaskIndex, VertexId};
use weir_shuffle_service::remote::RemoteShuffle;
use weir_shuffle_service::{GateId, PartitionKind, ShuffleError, ShuffleService};

mod common;
use common::{published, shuffle_server, weir};

const LIMIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_server_mid_stream_fails_producer_and_consumer() {
    let mut server = shuffle_server();
    let shuffle: Arc<dyn ShuffleService> = Arc::new(RemoteShuffle::new(server.addr.clone(), "kill-test"));
    let channel =
        ChannelId { partition: PartitionId { edge: 0, producer: SubtaskIndex(0) }, consumer: SubtaskIndex(0) };
    let mut gate =
        shuffle.open_gate(GateId { vertex: VertexId(1), subtask: SubtaskIndex(0) }, vec![channel]).await.expect("gate");
    let mut writer = shuffle.create_partition(channel.partition, 1, PartitionKind::Pipelined).await.expect("partition");
    let producer = tokio::spawn(async move {
        let mut i = 0i64;
        loop {
            if let Err(e) = writer.send(0, StreamEvent::Watermark(i)).await {
                return e;
            }
            i += 1;
        }
    });
    for expected in 0..1000 {
        let got = tokio::time::timeout(LIMIT, gate.next()).await.expect("streaming").expect("a healthy channel");
        assert!(matches!(got, Some((0, StreamEvent::Watermark(w))) if w == expected), "got {got:?}");
    }
    server.kill_9();
    let end = loop {
        match tokio::time::timeout(LIMIT, gate.next()).await.expect("the consumer notices in time") {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    let err = end.expect_err("a lost server is an error, not the end of the input");
    assert!(matches!(err, ShuffleError::Remote { .. }), "unexpected {err}");
    let err = tokio::time::timeout(LIMIT, producer).await.expect("the producer notices in time").expect("task");
    assert!(matches!(err, ShuffleError::Remote { .. }), "unexpected {err}");
}

#[test]
fn a_job_whose_shuffle_server_dies_fails_with_a_clear_error() {
    let mut server = shuffle_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("job.sql");
    // Slow enough to be mid-stream when the server dies; keyed, so rows cross the exchange.
    std::fs::write(
        &script,
        "CREATE TABLE s (k INT, v BIGINT) WITH (
           'connector' = 'datagen', 'rows-per-second' = '2000', 'number-of-rows' = '1000000',
           'fields.k.min' = '1', 'fields.k.max' = '100');
         SELECT k, COUNT(*) AS n FROM s GROUP BY k;",
    )
    .expect("script");
    let mut job = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "--parallelism", "2", "--quiet", "--shuffle-server", &server.addr])
        .arg(&script)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weir run starts");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(job.try_wait().expect("wait").is_none(), "the job ended before the server was killed");
    server.kill_9();
    let deadline = std::time::Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = job.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = job.kill();
            panic!("the job hung after its shuffle server died");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut job.stderr.take().expect("stderr"), &mut stderr).expect("stderr");
    assert!(!status.success(), "the job must fail, not finish: {stderr}");
    assert!(stderr.starts_with("error: ") && stderr.contains("shuffle server"), "unclear error: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A keyed shuffle server (`weir shuffle` with its key) opens a run's namespace only to the
/// token signed with that key: `weir run` without WEIR_SHUFFLE_KEY (or with another cluster's
/// key) fails at once naming the refusal; with it, the job runs through the server.
#[test]
fn a_keyed_shuffle_server_takes_only_runs_that_sign_with_its_key() {
    let weir = weir();
    let key = weir.key("shuffle", "shuffle-e2e-root-token-0123456789abcdef").expect("weir key shuffle");
    let other = weir.key("shuffle", "another-root-token-0123456789abcdef0").expect("weir key shuffle");
    let server = weir.keyed_shuffle_server(&key, &[]).expect("the keyed shuffle server starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("job.sql");
    std::fs::write(
        &script,
        "CREATE TABLE s (k INT) WITH ('connector' = 'datagen', 'number-of-rows' = '1000',
           'fields.k.min' = '1', 'fields.k.max' = '10');
         SELECT k, COUNT(*) AS n FROM s GROUP BY k;",
    )
    .expect("script");
    let run = |key: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_weir"));
        command.args(["run", "--parallelism", "2", "--shuffle-server", &server.addr]).arg(&script);
        command.env_remove("WEIR_SHUFFLE_KEY");
        if let Some(key) = key {
            command.env("WEIR_SHUFFLE_KEY", key);
        }
        command.output().expect("weir run runs")
    };
    for refused in [None, Some(other.as_str())] {
        let output = run(refused);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(stderr.contains("the token does not open namespace `run-"), "{stderr}");
    }
    let output = run(Some(&key));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("| +I |") || stdout.contains("+I"), "{stdout}");
}

fn data(values: usize) -> StreamEvent {
    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
    let column = Arc::new(Int64Array::from_iter_values(0..values as i64));
    StreamEvent::Data(weir_dataflow::event::ChangeBatch::inserts(
        RecordBatch::try_new(schema, vec![column]).expect("a valid batch"),
    ))
}

/// Reads until the gate fails; a clean end is a failure of the test.
async fn read_until_error(gate: &mut Box<dyn weir_shuffle_service::InputGate>) -> ShuffleError {
    loop {
        match tokio::time::timeout(LIMIT, gate.next()).await.expect("the consumer notices in time") {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("a lost server must not look like the end of the input"),
            Err(e) => return e,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_server_during_a_blocking_write_fails_producer_and_waiting_consumer() {
    let mut server = shuffle_server();
    let shuffle: Arc<dyn ShuffleService> = Arc::new(RemoteShuffle::new(server.addr.clone(), "blocking-write"));
    let partition = PartitionId { edge: 0, producer: SubtaskIndex(0) };
    let mut writer = shuffle.create_partition(partition, 1, PartitionKind::Blocking).await.expect("partition");
    let channel = ChannelId { partition, consumer: SubtaskIndex(0) };
    // The consumer waits for the partition to be complete.
    let mut gate =
        shuffle.open_gate(GateId { vertex: VertexId(1), subtask: SubtaskIndex(0) }, vec![channel]).await.expect("gate");
    let (sent_tx, sent_rx) = tokio::sync::oneshot::channel();
    let producer = tokio::spawn(async move {
        let mut sent_tx = Some(sent_tx);
        for i in 0.. {
            if let Err(e) = writer.send(0, data(1024)).await {
                return e;
            }
            if i == 1000 {
                let _ = sent_tx.take().map(|tx| tx.send(()));
            }
        }
        unreachable!("the loop ends with an error")
    });
    tokio::time::timeout(LIMIT, sent_rx).await.expect("the producer writes").expect("signal");
    server.kill_9();
    let err = tokio::time::timeout(LIMIT, producer).await.expect("the producer notices in time").expect("task");
    assert!(matches!(err, ShuffleError::Remote { .. }), "unexpected {err}");
    let err = read_until_error(&mut gate).await;
    assert!(matches!(err, ShuffleError::Remote { .. }), "unexpected {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_server_during_a_blocking_read_fails_the_consumer() {
    let mut server = shuffle_server();
    let shuffle: Arc<dyn ShuffleService> = Arc::new(RemoteShuffle::new(server.addr.clone(), "blocking-read"));
    let partition = PartitionId { edge: 0, producer: SubtaskIndex(0) };
    let mut writer = shuffle.create_partition(partition, 1, PartitionKind::Blocking).await.expect("partition");
    for _ in 0..2000 {
        writer.send(0, data(1024)).await.expect("send");
    }
    writer.send(0, StreamEvent::EndOfPartition).await.expect("send");
    writer.finish().await.expect("stored");
    let channel = ChannelId { partition, consumer: SubtaskIndex(0) };
    let mut gate =
        shuffle.open_gate(GateId { vertex: VertexId(1), subtask: SubtaskIndex(0) }, vec![channel]).await.expect("gate");
    for _ in 0..100 {
        let got = tokio::time::timeout(LIMIT, gate.next()).await.expect("reading").expect("a healthy channel");
        assert!(matches!(got, Some((0, StreamEvent::Data(_)))), "got {got:?}");
    }
    server.kill_9();
    let err = read_until_error(&mut gate).await;
    assert!(matches!(err, ShuffleError::Remote { .. }), "unexpected {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_spills_to_its_data_directory_and_deletes_the_files_when_it_exits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flags = ["--memory-budget".as_ref(), "64KiB".as_ref(), "--data".as_ref(), dir.path().as_os_str()];
    let mut server = weir().shuffle_server(&flags).expect("the shuffle server starts");
    let shuffle: Arc<dyn ShuffleService> = Arc::new(RemoteShuffle::new(server.addr.clone(), "spill"));
    let partition = PartitionId { edge: 0, producer: SubtaskIndex(0) };
    let mut writer = shuffle.create_partition(partition, 2, PartitionKind::Blocking).await.expect("partition");
    for i in 0..400 {
        writer.send(i % 2, data(1024)).await.expect("send");
    }
    for s in 0..2 {
        writer.send(s, StreamEvent::EndOfPartition).await.expect("send");
    }
    writer.finish().await.expect("stored");
    let spilled: u64 = walk(dir.path()).iter().map(|f| f.metadata().map_or(0, |m| m.len())).sum();
    assert!(spilled > 2_000_000, "3.2 MB against a 64 KiB budget must spill, found {spilled} bytes on disk");
    let channel = ChannelId { partition, consumer: SubtaskIndex(1) };
    let mut gate =
        shuffle.open_gate(GateId { vertex: VertexId(1), subtask: SubtaskIndex(0) }, vec![channel]).await.expect("gate");
    let mut batches = 0;
    while let Some((_, event)) = tokio::time::timeout(LIMIT, gate.next()).await.expect("in time").expect("healthy") {
        batches += matches!(event, StreamEvent::Data(_)) as usize;
    }
    assert_eq!(batches, 200);
    let status = server.terminate().unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "a terminated server exits cleanly");
    let left = walk(dir.path());
    assert!(left.is_empty(), "spill files left after a clean exit: {left:?}");
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0, "its folder is removed too");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

const NEXMARK_DDL: &str = include_str!("../bench/nexmark/ddl_nexmark_fs.sql");
const NEXMARK_VIEWS: &str = include_str!("../bench/nexmark/ddl_views.sql");

/// Nexmark q4 (a join, then two group aggregations) over a bounded generator, with `header`
/// (`SET`s) first; its result is a bare `SELECT`, written by `--output`.
fn bounded_q4(header: &str) -> String {
    bounded_q4_with(header, "'events.num' = '40000'")
}

fn bounded_q4_with(header: &str, generator_options: &str) -> String {
    let with = NEXMARK_DDL.rfind(") WITH (").expect("the bundled DDL has a WITH clause");
    let source = format!("{}) WITH ('connector' = 'nexmark', {generator_options});\n", &NEXMARK_DDL[..with]);
    let query = include_str!("../bench/nexmark/q4.sql");
    let select = &query[query.find("SELECT").expect("q4 has a SELECT")..];
    format!("{header}{source}{NEXMARK_VIEWS}\n{select}")
}

/// Runs a script with `weir run` and returns its output rows: the changelog lines as written,
/// and the stats file's figures.
fn run_to_rows(script: &str, extra: &[&str]) -> (Vec<(String, String)>, serde_json::Value) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("job.sql"), script).expect("script");
    let output = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "job.sql", "--quiet", "--output", "out.jsonl", "--stats-json", "stats.json"])
        .args(extra)
        .current_dir(dir.path())
        .output()
        .expect("weir run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "weir run {extra:?} failed: {stderr}");
    written(dir.path())
}

/// The changelog a run wrote to `out.jsonl` in `dir`, as (op, row), and its `stats.json`.
fn written(dir: &std::path::Path) -> (Vec<(String, String)>, serde_json::Value) {
    let out = std::fs::read_to_string(dir.join("out.jsonl")).expect("output");
    let rows = out
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            (v["op"].as_str().expect("op").to_string(), v["row"].to_string())
        })
        .collect();
    let stats =
        serde_json::from_str(&std::fs::read_to_string(dir.join("stats.json")).expect("stats")).expect("stats JSON");
    (rows, stats)
}

/// What a changelog amounts to: the rows left after its updates and deletes.
fn final_rows(changelog: &[(String, String)]) -> Vec<String> {
    let mut rows: std::collections::BTreeMap<&str, i64> = Default::default();
    for (op, row) in changelog {
        *rows.entry(row).or_default() += if op == "+I" || op == "+U" { 1 } else { -1 };
    }
    assert!(rows.values().all(|n| *n >= 0), "a row retracted more often than inserted");
    rows.into_iter().flat_map(|(row, n)| std::iter::repeat_n(row.to_string(), n as usize)).collect()
}

#[test]
fn a_batch_job_gives_the_streaming_result_in_every_shuffle_mode() {
    let (streaming, _) = run_to_rows(&bounded_q4(""), &["--parallelism", "2"]);
    let expected = final_rows(&streaming);
    assert!(expected.len() > 3, "q4 has a row per category: {expected:?}");
    assert!(streaming.iter().any(|(op, _)| op != "+I"), "the streaming run updates its result");
    let server = shuffle_server();
    let mut peaks = Vec::new();
    for mode in [
        "ALL_EXCHANGES_BLOCKING",
        "ALL_EXCHANGES_PIPELINED",
        "ALL_EXCHANGES_HYBRID_FULL",
        "ALL_EXCHANGES_HYBRID_SELECTIVE",
    ] {
        let header =
            format!("SET 'execution.runtime-mode' = 'batch';\nSET 'execution.batch-shuffle-mode' = '{mode}';\n");
        for remote in [false, true] {
            let mut extra = vec!["--parallelism", "2"];
            if remote {
                extra.extend(["--shuffle-server", server.addr.as_str()]);
            }
            let (batch, stats) = run_to_rows(&bounded_q4(&header), &extra);
            assert!(batch.iter().all(|(op, _)| op == "+I"), "{mode}: a batch job emits final rows only");
            let mut rows: Vec<String> = batch.into_iter().map(|(_, row)| row).collect();
            rows.sort();
            assert_eq!(rows, expected, "{mode} (remote: {remote})");
            peaks.push((mode, stats["peak_running_tasks"].as_u64().expect("peak tasks")));
            let backpressure = stats["backpressure"].as_object().expect("backpressure per vertex");
            assert!(!backpressure.is_empty(), "every vertex with outputs reports its backpressure");
            assert!(backpressure.values().all(|b| (0.0..=1.0).contains(&b.as_f64().expect("a share"))), "{stats}");
        }
    }
    // Blocking exchanges run the job stage by stage: never all of its tasks at once.
    let peak = |m: &str| peaks.iter().filter(|(mode, _)| *mode == m).map(|(_, p)| *p).max().expect("ran");
    assert!(
        peak("ALL_EXCHANGES_BLOCKING") < peak("ALL_EXCHANGES_PIPELINED"),
        "stage by stage needs fewer tasks at once: {peaks:?}"
    );
}

#[test]
fn a_batch_job_refuses_an_unbounded_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("job.sql"),
        "SET 'execution.runtime-mode' = 'batch';
         CREATE TABLE s (k INT) WITH ('connector' = 'datagen', 'rows-per-second' = '10');
         SELECT k, COUNT(*) FROM s GROUP BY k;",
    )
    .expect("script");
    let output = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "job.sql", "--quiet"])
        .current_dir(dir.path())
        .output()
        .expect("weir run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.starts_with("error: ") && stderr.contains("table 's' is unbounded"), "{stderr}");
    assert!(stderr.contains(":3:"), "the error names the statement's line: {stderr}");
}

#[test]
fn a_batch_job_whose_shuffle_server_dies_re_runs_its_stages_and_finishes() {
    let header = "SET 'execution.runtime-mode' = 'batch';\nSET 'restart-strategy.fixed-delay.delay' = '500 ms';\n";
    // 3 s of paced input, so the first stage is still writing when the server dies.
    let options = "'events.num' = '60000', 'first-event.rate' = '20000', 'next-event.rate' = '20000', \
                   'rate.limited' = 'true'";
    let (expected, _) = run_to_rows(&bounded_q4_with(header, options), &["--parallelism", "2"]);
    assert!(expected.len() > 3, "{expected:?}");

    let mut server = shuffle_server();
    let addr = server.addr.clone();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("job.sql"), bounded_q4_with(header, options)).expect("script");
    let job = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "job.sql", "--quiet", "--parallelism", "2", "--shuffle-server", &addr])
        .args(["--output", "out.jsonl", "--stats-json", "stats.json"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weir run starts");
    std::thread::sleep(Duration::from_millis(1200));
    server.kill_9();
    // A new server on the same address: the job's restarted stages find it there.
    let _standby = weir().shuffle_server_on(&addr, &[]).expect("a shuffle server on the same address");
    let output = job.wait_with_output().expect("the job ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the job must recover: {stderr}");
    assert!(stderr.contains("re-running"), "the restart is reported: {stderr}");
    let (mut rows, stats) = written(dir.path());
    rows.sort();
    let mut expected = expected;
    expected.sort();
    assert_eq!(rows, expected, "nothing lost, nothing twice");
    assert!(stats["source_rows"].as_u64().expect("rows") > 60_000, "the source stage ran again: {stats}");
}

#[test]
fn a_streaming_job_whose_shuffle_server_dies_restarts_from_its_checkpoint_exactly_once() {
    // About 3 s of paced input through a keyed window aggregation, checkpointed every 300 ms,
    // into the exactly-once filesystem sink.
    let job = |dir: &std::path::Path| {
        format!(
            "SET 'execution.checkpointing.interval' = '300 ms';
SET 'state.checkpoints.dir' = '{state}';
SET 'restart-strategy.fixed-delay.delay' = '200 ms';
CREATE TABLE g (id BIGINT, k INT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH (
  'connector' = 'datagen', 'number-of-rows' = '12000', 'rows-per-second' = '4000',
  'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '12000',
  'fields.k.min' = '1', 'fields.k.max' = '20');
CREATE TABLE out (k INT, ws TIMESTAMP(3), n BIGINT, s BIGINT)
  WITH ('connector' = 'filesystem', 'path' = '{out}', 'format' = 'json');
INSERT INTO out SELECT k, window_start, COUNT(*), SUM(id)
FROM TABLE(TUMBLE(TABLE g, DESCRIPTOR(ts), INTERVAL '500' MILLISECOND)) GROUP BY k, window_start, window_end;",
            state = dir.join("state").display(),
            out = dir.join("out").display()
        )
    };
    let reference = tempfile::tempdir().expect("tempdir");
    std::fs::write(reference.path().join("job.sql"), job(reference.path())).expect("script");
    let status = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "job.sql", "--quiet", "--parallelism", "2"])
        .current_dir(reference.path())
        .status()
        .expect("weir run");
    assert!(status.success());
    let expected = published(&reference.path().join("out"));
    assert!(expected.len() > 20, "{expected:?}");

    let mut server = shuffle_server();
    let addr = server.addr.clone();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("job.sql"), job(dir.path())).expect("script");
    let run = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "job.sql", "--quiet", "--parallelism", "2", "--shuffle-server", &addr])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weir run starts");
    std::thread::sleep(Duration::from_millis(1500));
    server.kill_9();
    let _standby = weir().shuffle_server_on(&addr, &[]).expect("a shuffle server on the same address");
    let output = run.wait_with_output().expect("the job ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the job must recover: {stderr}");
    assert!(stderr.contains("restarting from the latest checkpoint"), "{stderr}");
    assert!(stderr.contains("resuming job"), "the restart starts from a checkpoint, not from scratch: {stderr}");
    assert_eq!(published(&dir.path().join("out")), expected, "every window exactly once");
}
