//! Compaction off the workers, with real processes, real SQS and real S3 (moto): a task's
//! database asks for compactions on an SQS queue, `weir compactor` processes take them, and a
//! compactor killed with `kill -9` in the middle of a compaction loses nothing: another one
//! finishes the work, the task's writes and checkpoints go on, and every value reads back, from
//! the live database and from a restore of its last checkpoint.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_dataflow::ids::{AttemptNumber, JobId, SubtaskIndex, VertexId};
use weir_state_store::compaction::{self, L0_TO_COMPACT, TreeStatus};
use weir_state_store::sqs::SqsQueue;
use weir_state_store::{
    Compaction, KeyGroupRange, KeyedStateBackend, ObjectPath, OperatorId, StateHandle, StateId, StateLocation,
    StateOptions, StoreKey, SubtaskStateId, testing,
};
use weir_testkit::Process;

const MAX_PARALLELISM: u32 = 128;
const OPERATOR: OperatorId = OperatorId(1);
const STATE: StateId = StateId(0);
/// Each checkpoint writes this many keys, half of them the previous checkpoint's (so compaction
/// has versions to merge), of `VALUE_BYTES` each: enough that a compaction takes a while on moto.
const KEYS_PER_CHECKPOINT: u64 = 3000;
const VALUE_BYTES: usize = 1024;
/// Fewer than SlateDB's `l0_max_ssts` (8): without a compactor, writes would stop there.
const CHECKPOINTS: u64 = 6;

fn subtask(attempt: u32) -> SubtaskStateId {
    SubtaskStateId {
        job: JobId("compacted".into()),
        vertex: VertexId(1),
        subtask: SubtaskIndex(0),
        attempt: AttemptNumber(attempt),
    }
}

fn all_key_groups() -> KeyGroupRange {
    KeyGroupRange { start: 0, end: MAX_PARALLELISM - 1 }
}

fn store_key(k: u64) -> StoreKey {
    StoreKey { state: STATE, key_group: (k % u64::from(MAX_PARALLELISM)) as u16, key: k.to_be_bytes().into() }
}

fn value(checkpoint: u64, k: u64) -> Vec<u8> {
    format!("{checkpoint}:{k}:").bytes().cycle().take(VALUE_BYTES).collect()
}

/// The keys checkpoint `c` (from 1) writes.
fn keys_of(c: u64) -> std::ops::Range<u64> {
    let start = (c - 1) * KEYS_PER_CHECKPOINT / 2;
    start..start + KEYS_PER_CHECKPOINT
}

/// The value of key `k` after `checkpoints` checkpoints.
fn expected(k: u64, checkpoints: u64) -> Option<Vec<u8>> {
    (1..=checkpoints).rev().find(|c| keys_of(*c).contains(&k)).map(|c| value(c, k))
}

async fn checkpoint(backend: &mut KeyedStateBackend, c: u64) -> StateHandle {
    for k in keys_of(c) {
        let key = store_key(k);
        backend.stage(OPERATOR, STATE, u32::from(key.key_group), &key.key, Some(&value(c, k))).expect("stage");
    }
    let pending = backend.snapshot(weir_dataflow::ids::CheckpointId(c)).await.expect("snapshot");
    pending.wait().await.expect("checkpoint stored")
}

/// Reads back every `step`-th key (moto answers a ranged read by copying the whole object, so
/// reading every key of a fresh database on it takes minutes).
async fn check_values(backend: &KeyedStateBackend, checkpoints: u64, step: usize, what: &str) {
    let keys: Vec<u64> = (0..keys_of(checkpoints).end).step_by(step).collect();
    let wanted: Vec<StoreKey> = keys.iter().map(|k| store_key(*k)).collect();
    let found = backend.state_store(OPERATOR).get_many(&wanted).await.expect("read back");
    for (k, found) in keys.iter().zip(found) {
        assert_eq!(found.as_deref(), expected(*k, checkpoints).as_deref(), "key {k} read from {what}");
    }
}

fn compactor(queue_url: &str, location: &StateLocation, log: &Path) -> Process {
    let endpoint = testing::s3_endpoint();
    let mut command = Command::new(env!("CARGO_BIN_EXE_weir"));
    command
        .args(["compactor", "--queue-url", queue_url, "--state-dir", location.url()])
        .args(["--visibility-timeout", "3 s"])
        // moto copies a whole object to answer a ranged read: small SSTs keep reads quick.
        .args(["--max-sst-size", "1 mb"])
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("WEIR_LOG", "weir_state_store=debug,info")
        .stderr(Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file")));
    Process::spawn(&mut command, "weir compactor")
        .expect("weir compactor starts")
        .expect("weir compactor prints its first line")
}

/// Polls the database's stored shape until `done` holds; panics with the compactors' log after
/// `within`.
async fn wait_for(
    location: &StateLocation,
    db: &ObjectPath,
    within: Duration,
    log: &Path,
    what: &str,
    done: impl Fn(&TreeStatus) -> bool,
) -> TreeStatus {
    let deadline = Instant::now() + within;
    loop {
        let status = compaction::status(location, db).await.expect("status").expect("the database exists");
        if done(&status) {
            return status;
        }
        if Instant::now() > deadline {
            panic!(
                "{what}: still {status:?} after {within:?}; compactors' log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compactor_killed_mid_compaction_loses_nothing_and_another_finishes_its_work() {
    let started = Instant::now();
    let location = testing::s3_location("compactor-kill");
    let (client, queue_url) = testing::sqs_queue("compactor-kill").await;
    let work = tempfile::tempdir().expect("temp dir");
    let log = work.path().join("compactors.log");
    let options = StateOptions {
        max_parallelism: MAX_PARALLELISM,
        compaction: Compaction::QueuedOn(Arc::new(SqsQueue::new(client, &queue_url))),
        ..StateOptions::default()
    };
    let mut backend =
        KeyedStateBackend::open(&location, subtask(1), all_key_groups(), options.clone()).await.expect("open");
    let db = weir_state_store::backend::db_path(&location, &subtask(1));
    for c in 1..=CHECKPOINTS {
        checkpoint(&mut backend, c).await;
    }
    let before = compaction::status(&location, &db).await.expect("status").expect("the database exists");
    eprintln!("{:?}: {CHECKPOINTS} checkpoints: {before:?}", started.elapsed());
    assert!(before.l0 >= L0_TO_COMPACT, "the checkpoints left only {before:?}");

    // The first compactor takes the work item; it dies while its compaction runs.
    let mut first = compactor(&queue_url, &location, &log);
    let taken = wait_for(&location, &db, Duration::from_secs(60), &log, "the first compactor's compaction", |s| {
        s.active_compactions > 0
    })
    .await;
    first.kill_9();
    eprintln!("{:?}: killed the first compactor at {taken:?}", started.elapsed());
    let after_kill = compaction::status(&location, &db).await.expect("status").expect("the database exists");
    assert!(after_kill.l0 >= L0_TO_COMPACT, "the compaction finished before the kill: {after_kill:?}");
    check_values(&backend, CHECKPOINTS, 1, "the database after a compactor died").await;
    eprintln!("{:?}: read back", started.elapsed());

    // The task goes on writing and checkpointing meanwhile.
    checkpoint(&mut backend, CHECKPOINTS + 1).await;

    // The work item comes back after its visibility timeout, to a second compactor.
    let _second = compactor(&queue_url, &location, &log);
    let settled = wait_for(&location, &db, Duration::from_secs(120), &log, "the second compactor's compaction", |s| {
        s.l0 < L0_TO_COMPACT && s.active_compactions == 0 && s.sorted_runs > 0
    })
    .await;
    eprintln!("{:?}: settled: {settled:?}", started.elapsed());
    assert!(settled.compactor_epoch > taken.compactor_epoch, "a new compactor took over: {taken:?} then {settled:?}");

    check_values(&backend, CHECKPOINTS + 1, 1, "the live database after compaction").await;
    eprintln!("{:?}: read back after compaction", started.elapsed());
    let handle = checkpoint(&mut backend, CHECKPOINTS + 2).await;
    eprintln!("{:?}: checkpoint {}", started.elapsed(), CHECKPOINTS + 2);
    check_values(&backend, CHECKPOINTS + 2, 7, "the live database after another checkpoint").await;
    eprintln!("{:?}: read back again", started.elapsed());
    let restored = KeyedStateBackend::restore(&location, subtask(2), all_key_groups(), options, &[handle])
        .await
        .expect("restore the last checkpoint");
    eprintln!("{:?}: restored", started.elapsed());
    check_values(&restored, CHECKPOINTS + 2, 7, "a restore of the last checkpoint").await;
    eprintln!("{:?}: read back from the restore", started.elapsed());
}
