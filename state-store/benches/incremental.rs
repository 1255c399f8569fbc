//! Incremental checkpoints: a job-like loop over 1M keys where about 1% change per interval.
//! Per checkpoint it reports what reached object storage (requests, bytes put) and how long the
//! write-back (the part the task waits for) and the upload took. The claim it checks: bytes per
//! checkpoint track the change, not the state.
//!
//! ```sh
//! CARGO_TARGET_DIR=/work/target-state cargo bench -p weir-state-store --bench incremental
//! ```
//!
//! `WEIR_BENCH_KEYS` (1000000), `WEIR_BENCH_CHECKPOINTS` (10), `WEIR_BENCH_CHANGE_PERCENT` (1),
//! `WEIR_BENCH_INTERVAL_MS` (1000, the pause between checkpoints);
//! the S3 run uses moto (started like the tests' fixture) or `WEIR_TEST_S3_ENDPOINT`, and is
//! skipped with a note if neither is available.

use std::time::Instant;

use weir_dataflow::ids::{AttemptNumber, CheckpointId, JobId, SubtaskIndex, VertexId};
use weir_state_store::counting::CountingObjectStore;
use weir_state_store::testing::{s3_location, try_s3_endpoint};
use weir_state_store::{
    KeyGroupRange, KeyedStateBackend, OperatorId, StateId, StateLocation, StateOptions, SubtaskStateId, ValueState,
    key_group_for_hash, stable_hash,
};

const MAX_PARALLELISM: u32 = 128;
const VALUE_BYTES: usize = 32;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A small deterministic generator, so every run changes the same keys.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn value(seed: u64) -> [u8; VALUE_BYTES] {
    let mut out = [0u8; VALUE_BYTES];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&(seed.wrapping_mul(i as u64 + 1)).to_le_bytes());
    }
    out
}

struct Row {
    checkpoint: u64,
    changed: u64,
    written_back: u64,
    bytes_put: u64,
    puts: u64,
    gets: u64,
    lists: u64,
    deletes: u64,
    write_back_ms: f64,
    upload_ms: f64,
}

async fn run(name: &str, location: StateLocation, keys: u64, checkpoints: u64, change_percent: u64, interval_ms: u64) {
    let (store, counts) = CountingObjectStore::new(location.store().clone());
    let location = location.map_store(|_| store);
    let id = SubtaskStateId {
        job: JobId("bench".into()),
        vertex: VertexId(1),
        subtask: SubtaskIndex(0),
        attempt: AttemptNumber(1),
    };
    let options = StateOptions {
        max_parallelism: MAX_PARALLELISM,
        working_set_capacity: keys as usize * 2,
        ..StateOptions::default()
    };
    let all = KeyGroupRange { start: 0, end: MAX_PARALLELISM - 1 };
    let mut backend = KeyedStateBackend::open(&location, id, all, options).await.expect("open the state");
    let state = ValueState::new(OperatorId(1), StateId(0)).expect("state id");
    let key_groups: Vec<u32> =
        (0..keys).map(|k| key_group_for_hash(stable_hash(&k.to_be_bytes()), MAX_PARALLELISM)).collect();

    let mut rng = SplitMix(42);
    let mut rows = Vec::new();
    println!(
        "\n{name}: {keys} keys of 8 bytes, {VALUE_BYTES}-byte values, {change_percent}% changed per {interval_ms} ms interval"
    );
    println!(
        "| chk | keys changed | entries written | bytes put | PUT | GET | LIST | DELETE | write-back ms | upload ms |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let run_start = counts.snapshot();
    for checkpoint in 1..=checkpoints {
        // The checkpoint interval: SlateDB's compactor (polling every 5 s) works in it, as in a
        // job, instead of inside the next checkpoint.
        if checkpoint > 1 {
            tokio::time::sleep(std::time::Duration::from_millis(interval_ms)).await;
        }
        let changed = if checkpoint == 1 {
            for k in 0..keys {
                state.put(&mut backend, key_groups[k as usize], &k.to_be_bytes(), &value(k)).expect("put");
            }
            keys
        } else {
            let n = keys * change_percent / 100;
            for _ in 0..n {
                let k = rng.next() % keys;
                let kg = key_groups[k as usize];
                // A job reads before it writes (e.g. an aggregate): reads hit the working set.
                let old = state.get(&mut backend, kg, &k.to_be_bytes()).await.expect("get");
                debug_assert!(old.is_some());
                state.put(&mut backend, kg, &k.to_be_bytes(), &value(rng.next())).expect("put");
            }
            n
        };
        let before = counts.snapshot();
        let started = Instant::now();
        let pending = backend.snapshot(CheckpointId(checkpoint)).await.expect("snapshot");
        let write_back = started.elapsed();
        let written_back = pending.stats().puts;
        pending.wait().await.expect("upload");
        let total = started.elapsed();
        let delta = counts.snapshot().since(&before);
        let row = Row {
            checkpoint,
            changed,
            written_back,
            bytes_put: delta.bytes_put,
            puts: delta.puts,
            gets: delta.gets,
            lists: delta.lists,
            deletes: delta.deletes,
            write_back_ms: write_back.as_secs_f64() * 1e3,
            upload_ms: (total - write_back).as_secs_f64() * 1e3,
        };
        let r = &row;
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.1} |",
            r.checkpoint,
            r.changed,
            r.written_back,
            r.bytes_put,
            r.puts,
            r.gets,
            r.lists,
            r.deletes,
            r.write_back_ms,
            r.upload_ms
        );
        rows.push(row);
    }
    let run_total = counts.snapshot().since(&run_start);
    backend.close().await.expect("close");
    let in_checkpoints: u64 = rows.iter().map(|r| r.bytes_put).sum();
    println!(
        "whole run: {} bytes put in {} PUTs ({} of them inside checkpoints; the rest is SlateDB's compaction)",
        run_total.bytes_put, run_total.puts, in_checkpoints
    );
    let first = rows.first().map(|r| r.bytes_put).unwrap_or(0).max(1);
    let mut rest: Vec<u64> = rows.iter().skip(1).map(|r| r.bytes_put).collect();
    rest.sort_unstable();
    if let Some(&median) = rest.get(rest.len() / 2) {
        let mean = rest.iter().sum::<u64>() / rest.len() as u64;
        println!(
            "incremental checkpoints: median {median} bytes put = {:.2}% of the first (full) checkpoint's {first}; mean {mean} = {:.2}%",
            median as f64 * 100.0 / first as f64,
            mean as f64 * 100.0 / first as f64
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a test run of benches (`cargo test --all-targets`) does
    // not, and then a tiny run checks that the benchmark works.
    let benching = std::env::args().any(|a| a == "--bench");
    let keys = env_number("WEIR_BENCH_KEYS", if benching { 1_000_000 } else { 2_000 });
    let checkpoints = env_number("WEIR_BENCH_CHECKPOINTS", if benching { 10 } else { 3 });
    let change_percent = env_number("WEIR_BENCH_CHANGE_PERCENT", 1);
    let interval_ms = env_number("WEIR_BENCH_INTERVAL_MS", if benching { 1_000 } else { 0 });
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let local = StateLocation::parse(dir.path().to_str().expect("utf-8")).expect("local location");
        run("local folder", local, keys, checkpoints, change_percent, interval_ms).await;
        match try_s3_endpoint() {
            Ok(endpoint) => {
                let location = s3_location("bench-incremental");
                run(&format!("S3 (moto at {endpoint})"), location, keys, checkpoints, change_percent, interval_ms)
                    .await;
            }
            Err(e) => println!("\nS3 run skipped: {e}"),
        }
    });
}
