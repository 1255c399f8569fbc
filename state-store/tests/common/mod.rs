//! Fixtures: every test runs against a local folder and a real S3 endpoint (moto).

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use weir_dataflow::ids::{AttemptNumber, JobId, SubtaskIndex, VertexId};
use weir_state_store::testing::s3_location;
use weir_state_store::{
    KeyGroupRange, KeyedStateBackend, ManualClock, StateLocation, StateOptions, SubtaskStateId, TtlConfig,
    key_group_for_hash, stable_hash,
};

pub const MAX_PARALLELISM: u32 = 128;

/// A location and what keeps it alive.
pub struct Place {
    pub name: &'static str,
    pub location: StateLocation,
    _dir: Option<tempfile::TempDir>,
}

/// A fresh local folder and a fresh S3 bucket.
pub fn places(test: &str) -> Vec<Place> {
    let dir = tempfile::tempdir().expect("temp dir");
    let local = StateLocation::parse(dir.path().to_str().expect("utf-8 temp dir")).expect("local location");
    vec![
        Place { name: "local", location: local, _dir: Some(dir) },
        Place { name: "s3", location: s3_location(test), _dir: None },
    ]
}

pub fn subtask(subtask: u32, attempt: u32) -> SubtaskStateId {
    SubtaskStateId {
        job: JobId("job-1".into()),
        vertex: VertexId(7),
        subtask: SubtaskIndex(subtask),
        attempt: AttemptNumber(attempt),
    }
}

pub fn options(clock: &Arc<ManualClock>, ttl: Option<Duration>) -> StateOptions {
    StateOptions {
        max_parallelism: MAX_PARALLELISM,
        ttl: ttl.map(TtlConfig::new),
        clock: clock.clone(),
        ..StateOptions::default()
    }
}

pub fn all_key_groups() -> KeyGroupRange {
    KeyGroupRange { start: 0, end: MAX_PARALLELISM - 1 }
}

pub fn key_group(key: &[u8]) -> u32 {
    key_group_for_hash(stable_hash(key), MAX_PARALLELISM)
}

pub async fn open(
    place: &Place,
    subtask_index: u32,
    attempt: u32,
    range: KeyGroupRange,
    opts: StateOptions,
) -> KeyedStateBackend {
    KeyedStateBackend::open(&place.location, subtask(subtask_index, attempt), range, opts)
        .await
        .unwrap_or_else(|e| panic!("[{}] open: {e}", place.name))
}
