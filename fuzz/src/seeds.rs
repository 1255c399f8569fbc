//! The committed seed corpora of the binary targets, made by Weir's own encoders so that they
//! are the bytes a real peer sends. Each target calls [`write_if_asked`] at start-up: with
//! `WEIR_FUZZ_WRITE_SEEDS=<dir>` set it writes its seeds to `<dir>/<target>/` and exits instead
//! of fuzzing (`scripts/fuzz.sh --write-seeds` does this for every target). The SQL and API
//! seeds are text, kept by hand.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use bytes::Bytes;
use serde::Serialize;
use weir_dataflow::event::{ChangeBatch, RowKind, StreamEvent};
use weir_dataflow::ids::{
    AttemptNumber, ChannelId, CheckpointId, JobAttempt, JobId, PartitionId, SubtaskIndex, VertexId, WorkerId,
};
use weir_dataflow::keygroup::KeyGroupRange;
use weir_dataflow::wire::{
    AttemptRef, AttemptReport, CheckpointDone, Deploy, DeployPart, ErrorCode, Failure, Heartbeat, HeartbeatReply,
    NotLeader, Problem, Restore, RunEnd, SavepointAsk, SavepointTaken, VertexMetrics,
};
use weir_shuffle_service::PartitionKind;
use weir_shuffle_service::remote::proto::{ClientMessage, Outbound, ServerMessage};
use weir_shuffle_service::wire;
use weir_state_store::backend::StateHandle;
use weir_state_store::checkpoint::{CompletedCheckpoint, SourcePosition, encode_metadata};

/// The environment variable that asks a target for its seeds instead of a fuzz run.
pub const WRITE_SEEDS_VAR: &str = "WEIR_FUZZ_WRITE_SEEDS";

/// Writes `target`'s seeds and exits if [`WRITE_SEEDS_VAR`] is set; does nothing otherwise.
pub fn write_if_asked(target: &str) {
    let Some(root) = std::env::var_os(WRITE_SEEDS_VAR) else { return };
    let dir = Path::new(&root).join(target);
    std::fs::create_dir_all(&dir).expect("the seed folder can be created");
    let seeds = match target {
        "shuffle_frame" => shuffle_frame_seeds(),
        "shuffle_message" => shuffle_message_seeds(),
        "worker_protocol" => worker_protocol_seeds(),
        "checkpoint_metadata" => checkpoint_metadata_seeds(),
        _ => Vec::new(),
    };
    for (name, bytes) in &seeds {
        std::fs::write(dir.join(name), bytes).expect("a seed can be written");
    }
    eprintln!("weir-fuzz: wrote {} seeds to {}", seeds.len(), dir.display());
    std::process::exit(0);
}

fn sample_batch() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("auction", DataType::Int64, false),
        Field::new("bidder", DataType::Utf8, true),
        Field::new("date_time", DataType::Timestamp(TimeUnit::Millisecond, None), false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![1000, 1001, 1000])),
            Arc::new(StringArray::from(vec![Some("alice"), None, Some("bob")])),
            Arc::new(TimestampMillisecondArray::from(vec![1_700_000_000_000, 1_700_000_000_500, 1_700_000_001_000])),
        ],
    )
    .expect("the sample batch matches its schema")
}

fn sample_events() -> Vec<(&'static str, StreamEvent)> {
    let changelog =
        ChangeBatch::with_kinds(sample_batch(), vec![RowKind::Insert, RowKind::UpdateBefore, RowKind::Delete]);
    vec![
        ("data", StreamEvent::Data(ChangeBatch::inserts(sample_batch()))),
        ("changelog", StreamEvent::Data(changelog)),
        ("watermark", StreamEvent::Watermark(1_700_000_000_000)),
        ("barrier", StreamEvent::Barrier(CheckpointId(7))),
        ("idle", StreamEvent::Idle),
        ("end-of-partition", StreamEvent::EndOfPartition),
    ]
}

fn frame(event: &StreamEvent) -> Vec<u8> {
    let mut out = Vec::new();
    wire::encode(event, &mut out).expect("the sample events encode");
    out
}

/// Each event twice: as a raw frame (mode byte 0) and as `[kind][payload]` whose checksum the
/// target fills in (mode byte 1).
fn shuffle_frame_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for (name, event) in sample_events() {
        let frame = frame(&event);
        let mut raw = vec![0];
        raw.extend_from_slice(&frame);
        seeds.push((format!("{name}-raw"), raw));
        let mut fixed = vec![1, frame[0]];
        fixed.extend_from_slice(&frame[5..]);
        seeds.push((format!("{name}-checksummed"), fixed));
    }
    seeds
}

fn bytes_of(outbound: Outbound) -> Vec<u8> {
    match outbound {
        Outbound::Message(bytes) => bytes,
        Outbound::Frame { header, frame } => [&header[..], &frame[..]].concat(),
    }
}

/// A producer's and a consumer's side of a connection, and a release request.
fn shuffle_message_seeds() -> Vec<(String, Vec<u8>)> {
    let partition = PartitionId { edge: 0, producer: SubtaskIndex(1) };
    let channel = ChannelId { partition, consumer: SubtaskIndex(0) };
    let hello = ClientMessage::Hello {
        version: wire::PROTOCOL_VERSION,
        namespace: "job-1/attempt-1".into(),
        token: "0f3a9c2b7d4e1f6a8b5c0d9e2f7a4b1c6d3e8f5a2b7c4d9e0f1a6b3c8d5e2f7a".into(),
    };
    let producer = [
        bytes_of(hello.encode()),
        bytes_of(
            ClientMessage::CreatePartition { partition, subpartitions: 2, kind: PartitionKind::Pipelined }.encode(),
        ),
        bytes_of(ClientMessage::Data { subpartition: 0, frame: Bytes::from(frame(&sample_events()[0].1)) }.encode()),
        bytes_of(
            ClientMessage::Data { subpartition: 1, frame: Bytes::from(frame(&StreamEvent::EndOfPartition)) }.encode(),
        ),
    ]
    .concat();
    let consumer = [
        bytes_of(hello.encode()),
        bytes_of(ClientMessage::RegisterGate { channels: vec![channel], credits: 8 }.encode()),
        bytes_of(ClientMessage::Credit { channel: 0, n: 4 }.encode()),
    ]
    .concat();
    let release = [
        bytes_of(hello.encode()),
        bytes_of(ClientMessage::Release { partitions: vec![partition] }.encode()),
        bytes_of(ClientMessage::ReleaseNamespace.encode()),
    ]
    .concat();
    let server = [
        bytes_of(ServerMessage::Ok.encode()),
        bytes_of(ServerMessage::Grant { subpartition: 0, n: 8 }.encode()),
        bytes_of(ServerMessage::Event { channel: 0, frame: Bytes::from(frame(&sample_events()[1].1)) }.encode()),
        bytes_of(ServerMessage::ChannelFailed { channel: 0, message: "the producer went away".into() }.encode()),
    ]
    .concat();
    let refusal = bytes_of(
        ServerMessage::Error { code: ErrorCode::UnknownChannel, detail: 0, message: "no channel e0#1->#0".into() }
            .encode(),
    );
    vec![
        ("producer".into(), producer),
        ("consumer".into(), consumer),
        ("release".into(), release),
        ("server".into(), server),
        ("refusal".into(), refusal),
    ]
}

fn json_seed<T: Serialize>(selector: u8, message: &T) -> Vec<u8> {
    let mut out = vec![selector];
    out.extend(serde_json::to_vec_pretty(message).expect("the sample messages serialize"));
    out
}

/// One body of each type, with the selector byte the target reads first (its order there).
fn worker_protocol_seeds() -> Vec<(String, Vec<u8>)> {
    let attempt = AttemptRef { job: JobId("job-1".into()), attempt: JobAttempt(2) };
    let deploy = Deploy {
        attempt: attempt.clone(),
        sql: "CREATE TABLE t (a BIGINT) WITH ('connector' = 'datagen');\nSELECT a FROM t;".into(),
        parallelism: 2,
        restore: Restore::Savepoint { location: "file:///var/lib/weir/savepoints/sp-1".into() },
        state_dir: Some("file:///var/lib/weir/state".into()),
        tenant: "acme".into(),
        part: Some(DeployPart {
            subtasks: vec![0, 1],
            shuffle: "127.0.0.1:7000".into(),
            lead: None,
            members: vec!["127.0.0.1:7101".into()],
            namespace: "job-1/attempt-2".into(),
            token: "3c8d5e2f7a0f3a9c2b7d4e1f6a8b5c0d9e2f7a4b1c6d3e8f5a2b7c4d9e0f1a6b".into(),
        }),
    };
    let heartbeat = Heartbeat {
        worker: WorkerId("worker-a".into()),
        address: "127.0.0.1:7100".into(),
        slots: 4,
        attempts: vec![AttemptReport {
            attempt: attempt.clone(),
            parallelism: 2,
            checkpoint: Some(CheckpointDone {
                id: CheckpointId(3),
                location: "file:///var/lib/weir/state/job-1/checkpoints/chk-3".into(),
                parallelism: 2,
                retain: 1,
                completed_at: 1_700_000_000_000,
            }),
            end: Some(RunEnd::Failed(Failure::new(ErrorCode::Internal, "task failed"))),
            metrics: vec![(
                VertexId(0),
                VertexMetrics {
                    records_in: Some(10),
                    records_out: Some(9),
                    backpressure: Some(0.25),
                    watermark: Some(1_700_000_000_000),
                    busy_ms: Some(1_200),
                },
            )],
        }],
    };
    vec![
        ("deploy".into(), json_seed(0, &deploy)),
        ("attempt-ref".into(), json_seed(1, &attempt)),
        ("savepoint-ask".into(), json_seed(2, &SavepointAsk { attempt: attempt.clone(), stop: true })),
        (
            "savepoint-taken".into(),
            json_seed(3, &SavepointTaken { location: "file:///tmp/sp".into(), checkpoint: CheckpointId(4) }),
        ),
        ("heartbeat".into(), json_seed(4, &heartbeat)),
        (
            "heartbeat-reply".into(),
            json_seed(5, &HeartbeatReply { cancel: vec![attempt.clone()], forget: vec![attempt] }),
        ),
        ("not-leader".into(), json_seed(6, &NotLeader { leader: Some("127.0.0.1:8080".into()) })),
        ("problem".into(), json_seed(7, &Problem::new(ErrorCode::NoFreeSlots, "2 slots are needed; 1 of 4 are free"))),
        ("failure".into(), json_seed(8, &Failure::new(ErrorCode::Internal, "the task panicked"))),
    ]
}

/// A checkpoint and a savepoint, each as a whole file (mode byte 0) and as a body whose header
/// the target writes (mode byte 1).
fn checkpoint_metadata_seeds() -> Vec<(String, Vec<u8>)> {
    let checkpoint = CompletedCheckpoint {
        id: CheckpointId(7),
        timestamp_millis: 1_700_000_000_000,
        is_savepoint: false,
        source_positions: vec![SourcePosition {
            vertex: VertexId(0),
            subtask: SubtaskIndex(1),
            position: serde_json::json!({ "file": "bids.json", "offset": 4096 }),
        }],
        state_handles: vec![StateHandle {
            job: JobId("job-1".into()),
            vertex: VertexId(2),
            subtask: SubtaskIndex(0),
            attempt: AttemptNumber(3),
            checkpoint: CheckpointId(7),
            db_path: "job-1/state/v2-s0-a3".into(),
            slatedb_checkpoint: uuid::Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0),
            key_groups: KeyGroupRange { start: 0, end: 63 },
            max_parallelism: 128,
            key_layout: weir_state_store::keys::KEY_LAYOUT,
        }],
    };
    let savepoint = CompletedCheckpoint { is_savepoint: true, source_positions: Vec::new(), ..checkpoint.clone() };
    let mut seeds = Vec::new();
    for (name, metadata) in [("checkpoint", &checkpoint), ("savepoint", &savepoint)] {
        let file = encode_metadata(metadata);
        seeds.push((format!("{name}-file"), [&[0u8][..], &file].concat()));
        let body_at = file.iter().position(|&b| b == b'\n').expect("metadata has a header line") + 1;
        seeds.push((format!("{name}-body"), [&[1u8][..], &file[body_at..]].concat()));
    }
    seeds
}
