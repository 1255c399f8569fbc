//! The state store against real object storage: every test runs on a local folder and on an S3
//! endpoint (moto, started by the fixture, or `WEIR_TEST_S3_ENDPOINT`).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use slatedb::object_store::{ObjectStoreExt, PutPayload};
use weir_dataflow::ids::{CheckpointId, JobId, SubtaskIndex, VertexId};
use weir_dataflow::keygroup::key_group_range_for_subtask;
use weir_state_store::counting::CountingObjectStore;
use weir_state_store::savepoint;
use weir_state_store::{
    AggregatingState, CheckpointStore, CompletedCheckpoint, KeyGroupRange, KeyedStateBackend, ListState, ManualClock,
    MapState, OperatorId, ReducingState, SourcePosition, StateError, StateHandle, StateId, StateLocation, StoreKind,
    SubtaskStateId, TimeDomain, TimerService, ValueState,
};

const OP: OperatorId = OperatorId(3);

fn value_state() -> ValueState {
    ValueState::new(OP, StateId(0)).unwrap()
}
fn list_state() -> ListState {
    ListState::new(OP, StateId(1)).unwrap()
}
fn map_state() -> MapState {
    MapState::new(OP, StateId(2)).unwrap()
}
fn sum_state() -> ReducingState {
    ReducingState::new(
        OP,
        StateId(3),
        Arc::new(|a: &[u8], b: &[u8]| Bytes::from((le_u64(a) + le_u64(b)).to_le_bytes().to_vec())),
    )
    .unwrap()
}
/// Accumulator (count, sum) of u64 inputs.
fn avg_state() -> AggregatingState {
    AggregatingState::new(
        OP,
        StateId(4),
        Arc::new(|acc: Option<&[u8]>, input: &[u8]| {
            let (count, sum) = acc.map(|a| (le_u64(&a[..8]), le_u64(&a[8..]))).unwrap_or((0, 0));
            let mut out = (count + 1).to_le_bytes().to_vec();
            out.extend_from_slice(&(sum + le_u64(input)).to_le_bytes());
            Bytes::from(out)
        }),
    )
    .unwrap()
}
fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
}
fn event_timers() -> TimerService {
    TimerService::new(OP, TimeDomain::EventTime)
}
fn processing_timers() -> TimerService {
    TimerService::new(OP, TimeDomain::ProcessingTime)
}

async fn checkpoint(backend: &mut KeyedStateBackend, id: u64) -> StateHandle {
    backend.snapshot(CheckpointId(id)).await.expect("snapshot").wait().await.expect("checkpoint upload")
}

fn completed(id: u64, handles: Vec<StateHandle>) -> CompletedCheckpoint {
    CompletedCheckpoint {
        id: CheckpointId(id),
        timestamp_millis: 1_000 * id as i64,
        is_savepoint: false,
        source_positions: vec![SourcePosition {
            vertex: VertexId(0),
            subtask: SubtaskIndex(0),
            position: serde_json::json!({ "offset": id * 10 }),
        }],
        state_handles: handles,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_primitive_round_trips_through_snapshot_and_restore() {
    for place in places("primitives") {
        let clock = ManualClock::new(1_000);
        let mut a = open(&place, 0, 1, all_key_groups(), options(&clock, None)).await;
        let (k1, k2) = (b"alice".as_slice(), b"bob".as_slice());
        let (g1, g2) = (key_group(k1), key_group(k2));

        value_state().put(&mut a, g1, k1, b"v1").unwrap();
        value_state().put(&mut a, g2, k2, b"v2").unwrap();
        value_state().clear(&mut a, g2, k2).unwrap();
        list_state().add(&mut a, g1, k1, b"x").await.unwrap();
        list_state().add(&mut a, g1, k1, b"y").await.unwrap();
        list_state().update(&mut a, g2, k2, &[b"only"]).unwrap();
        for (m, v) in [(b"m1", b"1"), (b"m2", b"2"), (b"m3", b"3")] {
            map_state().put(&mut a, g1, k1, m, v).unwrap();
        }
        map_state().remove(&mut a, g1, k1, b"m2").unwrap();
        map_state().put(&mut a, g2, k2, b"z", b"26").unwrap();
        for n in [5u64, 7, 30] {
            sum_state().add(&mut a, g1, k1, &n.to_le_bytes()).await.unwrap();
            avg_state().add(&mut a, g1, k1, &n.to_le_bytes()).await.unwrap();
        }
        assert!(event_timers().register(&mut a, 20, g1, k1).await.unwrap());
        assert!(!event_timers().register(&mut a, 20, g1, k1).await.unwrap(), "a timer registers once");
        event_timers().register(&mut a, 10, g2, k2).await.unwrap();
        event_timers().register(&mut a, 30, g1, k1).await.unwrap();
        event_timers().register(&mut a, 40, g1, k1).await.unwrap();
        assert!(event_timers().delete(&mut a, 40, g1, k1).await.unwrap());
        processing_timers().register(&mut a, 500, g2, k2).await.unwrap();

        let handle = checkpoint(&mut a, 1).await;
        assert_eq!(handle.key_groups, all_key_groups());
        // Changes after the snapshot are not part of it.
        value_state().put(&mut a, g1, k1, b"after").unwrap();
        event_timers().register(&mut a, 5, g1, k1).await.unwrap();
        a.snapshot(CheckpointId(2)).await.unwrap().wait().await.unwrap();

        let mut b = KeyedStateBackend::restore(
            &place.location,
            subtask(0, 2),
            all_key_groups(),
            options(&clock, None),
            std::slice::from_ref(&handle),
        )
        .await
        .unwrap_or_else(|e| panic!("[{}] restore: {e}", place.name));
        let name = place.name;
        assert_eq!(value_state().get(&mut b, g1, k1).await.unwrap().as_deref(), Some(&b"v1"[..]), "[{name}]");
        assert_eq!(value_state().get(&mut b, g2, k2).await.unwrap(), None, "[{name}]");
        assert_eq!(list_state().get(&mut b, g1, k1).await.unwrap(), vec![Bytes::from("x"), Bytes::from("y")]);
        assert_eq!(list_state().get(&mut b, g2, k2).await.unwrap(), vec![Bytes::from("only")]);
        assert_eq!(
            map_state().entries(&mut b, g1, k1).await.unwrap(),
            vec![(Bytes::from("m1"), Bytes::from("1")), (Bytes::from("m3"), Bytes::from("3"))]
        );
        assert_eq!(map_state().get(&mut b, g2, k2, b"z").await.unwrap().as_deref(), Some(&b"26"[..]));
        assert!(!map_state().contains(&mut b, g1, k1, b"m2").await.unwrap());
        assert_eq!(le_u64(&sum_state().get(&mut b, g1, k1).await.unwrap().unwrap()), 42);
        let acc = avg_state().get(&mut b, g1, k1).await.unwrap().unwrap();
        assert_eq!((le_u64(&acc[..8]), le_u64(&acc[8..])), (3, 42));

        // Timers come back ordered, deduplicated, without the deleted or later ones.
        assert_eq!(event_timers().next_timestamp(&mut b).await.unwrap(), Some(10));
        let due = event_timers().advance_to(&mut b, 25).await.unwrap();
        let due: Vec<(i64, &[u8])> = due.iter().map(|t| (t.timestamp, &t.key[..])).collect();
        assert_eq!(due, vec![(10, k2), (20, k1)], "[{name}]");
        assert_eq!(event_timers().len(&mut b).await.unwrap(), 1);
        assert_eq!(processing_timers().advance_to(&mut b, 499).await.unwrap(), vec![]);
        assert_eq!(processing_timers().advance_to(&mut b, 500).await.unwrap().len(), 1);

        // Fired timers stay fired across the next checkpoint.
        map_state().clear(&mut b, g1, k1).await.unwrap();
        let handle = checkpoint(&mut b, 3).await;
        let mut c = KeyedStateBackend::restore(
            &place.location,
            subtask(0, 3),
            all_key_groups(),
            options(&clock, None),
            &[handle],
        )
        .await
        .unwrap();
        assert_eq!(event_timers().advance_to(&mut c, i64::MAX).await.unwrap().len(), 1, "[{name}]");
        assert!(map_state().is_empty(&mut c, g1, k1).await.unwrap());
        c.close().await.unwrap();
        b.close().await.unwrap();
        // `a` was fenced by the restore: closing it reports that, which is fine here.
        let _ = a.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_back_writes_only_dirty_entries() {
    for place in places("dirty-only") {
        let (store, counts) = CountingObjectStore::new(place.location.store().clone());
        let location = place.location.map_store(|_| store);
        let clock = ManualClock::new(0);
        let mut backend =
            KeyedStateBackend::open(&location, subtask(0, 1), all_key_groups(), options(&clock, None)).await.unwrap();
        let keys: Vec<Vec<u8>> = (0..2_000u32).map(|i| i.to_be_bytes().to_vec()).collect();
        for key in &keys {
            value_state().put(&mut backend, key_group(key), key, &[7u8; 64]).unwrap();
        }
        let before = counts.snapshot();
        let first = backend.snapshot(CheckpointId(1)).await.unwrap();
        assert_eq!((first.stats().puts, first.stats().deletes), (2_000, 0));
        first.wait().await.unwrap();
        let first_bytes = counts.snapshot().since(&before).bytes_put;

        // Read many, change few: only the changes are written back.
        for key in &keys[..500] {
            assert!(value_state().get(&mut backend, key_group(key), key).await.unwrap().is_some());
        }
        for key in &keys[..10] {
            value_state().put(&mut backend, key_group(key), key, &[8u8; 64]).unwrap();
        }
        for key in &keys[10..15] {
            value_state().clear(&mut backend, key_group(key), key).unwrap();
        }
        assert_eq!(backend.dirty_len(), 15);
        let before = counts.snapshot();
        let second = backend.snapshot(CheckpointId(2)).await.unwrap();
        assert_eq!((second.stats().puts, second.stats().deletes), (10, 5), "[{}]", place.name);
        second.wait().await.unwrap();
        let second_bytes = counts.snapshot().since(&before).bytes_put;
        assert!(
            second_bytes * 10 < first_bytes,
            "[{}] the second checkpoint uploaded {second_bytes} bytes, the first {first_bytes}",
            place.name
        );
        let third = backend.snapshot(CheckpointId(3)).await.unwrap();
        assert_eq!(third.stats().puts + third.stats().deletes, 0, "nothing changed");
        third.wait().await.unwrap();
        backend.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processing_continues_while_the_checkpoint_uploads() {
    for place in places("async-upload") {
        let clock = ManualClock::new(0);
        let mut backend = open(&place, 0, 1, all_key_groups(), options(&clock, None)).await;
        let key = b"k".as_slice();
        let kg = key_group(key);
        value_state().put(&mut backend, kg, key, b"before").unwrap();
        let pending = backend.snapshot(CheckpointId(1)).await.unwrap();
        // The task goes on while the upload runs; its changes belong to the next checkpoint.
        value_state().put(&mut backend, kg, key, b"after").unwrap();
        assert_eq!(value_state().get(&mut backend, kg, key).await.unwrap().as_deref(), Some(&b"after"[..]));
        let next = backend.snapshot(CheckpointId(2)).await.unwrap();
        let handle = pending.wait().await.unwrap();
        let next_handle = next.wait().await.unwrap();
        for (handle, attempt, expected) in [(handle, 2, &b"before"[..]), (next_handle, 3, &b"after"[..])] {
            let mut restored = KeyedStateBackend::restore(
                &place.location,
                subtask(0, attempt),
                all_key_groups(),
                options(&clock, None),
                &[handle],
            )
            .await
            .unwrap();
            assert_eq!(value_state().get(&mut restored, kg, key).await.unwrap().as_deref(), Some(expected));
            restored.close().await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_state_is_never_returned_and_is_cleaned_up() {
    for place in places("ttl") {
        let clock = ManualClock::new(1_000_000);
        let ttl = Some(Duration::from_secs(10));
        let mut backend = open(&place, 0, 1, all_key_groups(), options(&clock, ttl)).await;
        let (k1, k2, k3) = (b"one".as_slice(), b"two".as_slice(), b"three".as_slice());
        value_state().put(&mut backend, key_group(k1), k1, b"old").unwrap();
        list_state().add(&mut backend, key_group(k2), k2, b"early").await.unwrap();
        map_state().put(&mut backend, key_group(k3), k3, b"a", b"early").unwrap();
        clock.advance(Duration::from_secs(6));
        value_state().put(&mut backend, key_group(k2), k2, b"fresh").unwrap();
        list_state().add(&mut backend, key_group(k2), k2, b"late").await.unwrap();
        map_state().put(&mut backend, key_group(k3), k3, b"b", b"late").unwrap();
        let handle = checkpoint(&mut backend, 1).await;

        clock.advance(Duration::from_secs(5)); // 11 s after the first writes, 5 s after the later ones
        assert_eq!(value_state().get(&mut backend, key_group(k1), k1).await.unwrap(), None, "[{}]", place.name);
        assert!(value_state().get(&mut backend, key_group(k2), k2).await.unwrap().is_some());
        assert_eq!(list_state().get(&mut backend, key_group(k2), k2).await.unwrap(), vec![Bytes::from("late")]);
        assert_eq!(map_state().entries(&mut backend, key_group(k3), k3).await.unwrap().len(), 1);

        // A restored subtask applies TTL to what it reads from the checkpoint too.
        let mut restored = KeyedStateBackend::restore(
            &place.location,
            subtask(0, 2),
            all_key_groups(),
            options(&clock, ttl),
            &[handle],
        )
        .await
        .unwrap();
        assert_eq!(value_state().get(&mut restored, key_group(k1), k1).await.unwrap(), None);
        assert_eq!(map_state().get(&mut restored, key_group(k3), k3, b"a").await.unwrap(), None);
        assert_eq!(
            map_state().get(&mut restored, key_group(k3), k3, b"b").await.unwrap().as_deref(),
            Some(&b"late"[..])
        );

        // Write-back deletes what expired, read or not: after it, SlateDB no longer has it.
        clock.advance(Duration::from_secs(10));
        let pending = restored.snapshot(CheckpointId(2)).await.unwrap();
        assert!(pending.stats().deletes >= 3, "[{}] {:?}", place.name, pending.stats());
        pending.wait().await.unwrap();
        let remaining: u64 = restored.stored_key_groups().await.unwrap().values().sum();
        let cached_only = remaining; // value k2, list k2, map k3/b were not read after expiry
        assert!(cached_only <= 3, "[{}] {remaining} keys left", place.name);
        restored.close().await.unwrap();
        let _ = backend.close().await;
    }
}

/// Writes `n` keys (value + map entry, and a timer for every 10th) through subtasks of
/// `parallelism`, checkpoints them, and returns the handles.
async fn write_through_subtasks(place: &Place, parallelism: u32, n: u32) -> (Vec<StateHandle>, Vec<Vec<u8>>) {
    let clock = ManualClock::new(0);
    let keys: Vec<Vec<u8>> = (0..n).map(|i| format!("key-{i}").into_bytes()).collect();
    let mut handles = Vec::new();
    for index in 0..parallelism {
        let range = key_group_range_for_subtask(MAX_PARALLELISM, parallelism, index);
        let mut backend = open(place, index, 1, range, options(&clock, None)).await;
        for key in keys.iter().filter(|k| range.contains(key_group(k))) {
            let kg = key_group(key);
            value_state().put(&mut backend, kg, key, key).unwrap();
            map_state().put(&mut backend, kg, key, b"m", key).unwrap();
            if key.ends_with(b"0") {
                event_timers().register(&mut backend, 100, kg, key).await.unwrap();
            }
        }
        handles.push(checkpoint(&mut backend, 1).await);
        backend.close().await.unwrap();
    }
    (handles, keys)
}

async fn check_rescaled(place: &Place, handles: &[StateHandle], keys: &[Vec<u8>], parallelism: u32) {
    let clock = ManualClock::new(0);
    let mut seen = BTreeSet::new();
    let mut timers_seen = 0;
    for index in 0..parallelism {
        let range = key_group_range_for_subtask(MAX_PARALLELISM, parallelism, index);
        let mut backend =
            KeyedStateBackend::restore(&place.location, subtask(index, 2), range, options(&clock, None), handles)
                .await
                .unwrap_or_else(|e| panic!("[{}] restore {index}/{parallelism}: {e}", place.name));
        // Only owned key groups are visible.
        let stored = backend.stored_key_groups().await.unwrap();
        assert!(stored.keys().all(|kg| range.contains(*kg)), "[{}] {stored:?} outside {range:?}", place.name);
        let owned: Vec<&Vec<u8>> = keys.iter().filter(|k| range.contains(key_group(k))).collect();
        let expected_entries = owned.len() as u64 * 2 + owned.iter().filter(|k| k.ends_with(b"0")).count() as u64;
        assert_eq!(stored.values().sum::<u64>(), expected_entries, "[{}] subtask {index}/{parallelism}", place.name);
        for key in owned {
            let kg = key_group(key);
            assert_eq!(value_state().get(&mut backend, kg, key).await.unwrap().as_deref(), Some(&key[..]));
            assert_eq!(map_state().get(&mut backend, kg, key, b"m").await.unwrap().as_deref(), Some(&key[..]));
            assert!(seen.insert(key.clone()), "key restored twice");
        }
        timers_seen += event_timers().advance_to(&mut backend, 100).await.unwrap().len();
        backend.close().await.unwrap();
    }
    assert_eq!(seen.len(), keys.len(), "[{}] every key restored exactly once", place.name);
    assert_eq!(timers_seen, keys.iter().filter(|k| k.ends_with(b"0")).count());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescale_from_two_subtasks_to_one() {
    for place in places("rescale-2-1") {
        let (handles, keys) = write_through_subtasks(&place, 2, 600).await;
        check_rescaled(&place, &handles, &keys, 1).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescale_from_two_subtasks_to_three() {
    for place in places("rescale-2-3") {
        let (handles, keys) = write_through_subtasks(&place, 2, 600).await;
        check_rescaled(&place, &handles, &keys, 3).await;
    }
}

/// The SST files with data under a database's path (a clone refers to its sources' SSTs
/// instead; a writer's open leaves an empty WAL SST as its fence).
async fn own_ssts(location: &StateLocation, id: &SubtaskStateId) -> usize {
    use futures::TryStreamExt;
    let path = weir_state_store::backend::db_path(location, id);
    let listed: Vec<_> = location.store().list(Some(&path)).try_collect().await.unwrap();
    listed.iter().filter(|o| o.location.as_ref().ends_with(".sst") && o.size > 0).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescales_hand_key_groups_over_by_reference_and_chain() {
    for place in places("rescale-by-reference") {
        let (handles, keys) = write_through_subtasks(&place, 2, 600).await;
        let clock = ManualClock::new(0);
        // 2 -> 4: each new database is a clone of its part of an old one; no SST is written.
        let mut second = Vec::new();
        for index in 0..4 {
            let range = key_group_range_for_subtask(MAX_PARALLELISM, 4, index);
            let id = subtask(index, 2);
            let mut backend =
                KeyedStateBackend::restore(&place.location, id.clone(), range, options(&clock, None), &handles)
                    .await
                    .unwrap_or_else(|e| panic!("[{}] restore {index}/4: {e}", place.name));
            assert_eq!(own_ssts(&place.location, &id).await, 0, "[{}] subtask {index}/4 copied state", place.name);
            let stored = backend.stored_key_groups().await.unwrap();
            assert!(stored.keys().all(|kg| range.contains(*kg)), "[{}] {stored:?} outside {range:?}", place.name);
            // Change every owned value, so the next rescale reads the clones' own writes too.
            for key in keys.iter().filter(|k| range.contains(key_group(k))) {
                let kg = key_group(key);
                assert_eq!(value_state().get(&mut backend, kg, key).await.unwrap().as_deref(), Some(&key[..]));
                value_state().put(&mut backend, kg, key, &[&key[..], b"-2"].concat()).unwrap();
            }
            second.push(checkpoint(&mut backend, 2).await);
            backend.close().await.unwrap();
        }
        // 4 -> 3: unions of parts of clones (key group ranges that straddle old subtasks).
        let mut seen = 0;
        for index in 0..3 {
            let range = key_group_range_for_subtask(MAX_PARALLELISM, 3, index);
            let mut backend =
                KeyedStateBackend::restore(&place.location, subtask(index, 3), range, options(&clock, None), &second)
                    .await
                    .unwrap_or_else(|e| panic!("[{}] restore {index}/3: {e}", place.name));
            let owned: Vec<&Vec<u8>> = keys.iter().filter(|k| range.contains(key_group(k))).collect();
            let stored = backend.stored_key_groups().await.unwrap();
            let timers = owned.iter().filter(|k| k.ends_with(b"0")).count() as u64;
            assert_eq!(stored.values().sum::<u64>(), owned.len() as u64 * 2 + timers, "[{}] {index}/3", place.name);
            for key in owned {
                let kg = key_group(key);
                let value = value_state().get(&mut backend, kg, key).await.unwrap();
                assert_eq!(value.as_deref(), Some(&[&key[..], b"-2"].concat()[..]), "[{}]", place.name);
                assert_eq!(map_state().get(&mut backend, kg, key, b"m").await.unwrap().as_deref(), Some(&key[..]));
                seen += 1;
            }
            backend.close().await.unwrap();
        }
        assert_eq!(seen, keys.len(), "[{}] every key restored exactly once", place.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_rejects_handles_that_do_not_cover_the_key_groups() {
    for place in places("bad-restore") {
        let (handles, _) = write_through_subtasks(&place, 2, 10).await;
        let clock = ManualClock::new(0);
        let err = KeyedStateBackend::restore(
            &place.location,
            subtask(0, 5),
            all_key_groups(),
            options(&clock, None),
            &handles[..1],
        )
        .await
        .err()
        .expect("half the key groups are missing");
        assert!(matches!(err, StateError::InvalidRestore(_)), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_in_an_earlier_key_layout_is_refused_with_a_clear_error() {
    let place = &places("old-layout")[0];
    let (handles, _) = write_through_subtasks(place, 1, 10).await;
    // Metadata of an earlier Weir has no layout: it reads as layout 1 (operator first).
    let mut json = serde_json::to_value(&handles[0]).unwrap();
    json.as_object_mut().unwrap().remove("key_layout");
    let old: StateHandle = serde_json::from_value(json).unwrap();
    assert_eq!(old.key_layout, 1);
    let clock = ManualClock::new(0);
    let err =
        KeyedStateBackend::restore(&place.location, subtask(0, 2), all_key_groups(), options(&clock, None), &[old])
            .await
            .err()
            .expect("layout 1 cannot be read");
    assert!(matches!(&err, StateError::InvalidRestore(m) if m.contains("layout 1")), "{err}");
}

async fn flip_a_byte(location: &StateLocation, path: &slatedb::object_store::path::Path) {
    let store = location.store();
    let mut bytes = store.get(path).await.unwrap().bytes().await.unwrap().to_vec();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    store.put(path, PutPayload::from(bytes)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_or_missing_metadata_falls_back_to_the_previous_checkpoint() {
    for place in places("corrupt-metadata") {
        let clock = ManualClock::new(0);
        let mut backend = open(&place, 0, 1, all_key_groups(), options(&clock, None)).await;
        let store = CheckpointStore::new(place.location.clone(), JobId("job-1".into()), 3);
        let key = b"k".as_slice();
        for id in 1..=3u64 {
            value_state().put(&mut backend, key_group(key), key, format!("v{id}").as_bytes()).unwrap();
            let handle = checkpoint(&mut backend, id).await;
            store.commit(&completed(id, vec![handle])).await.unwrap();
        }
        assert_eq!(store.latest_completed().await.unwrap().checkpoint.unwrap().id, CheckpointId(3));

        let third = store.metadata_path(CheckpointId(3));
        flip_a_byte(&place.location, &third).await;
        let latest = store.latest_completed().await.unwrap();
        let checkpoint = latest.checkpoint.expect("falls back");
        assert_eq!(checkpoint.id, CheckpointId(2), "[{}]", place.name);
        assert_eq!(latest.warnings.len(), 1);
        assert_eq!(latest.warnings[0].path, third.to_string(), "the warning names the file");
        assert!(latest.warnings[0].reason.contains("checksum"), "{}", latest.warnings[0].reason);

        // The fallback checkpoint restores its own state.
        let mut restored = KeyedStateBackend::restore(
            &place.location,
            subtask(0, 2),
            all_key_groups(),
            options(&clock, None),
            &checkpoint.handles_of(VertexId(7)),
        )
        .await
        .unwrap();
        assert_eq!(value_state().get(&mut restored, key_group(key), key).await.unwrap().as_deref(), Some(&b"v2"[..]));
        restored.close().await.unwrap();

        // A missing file is reported too when the caller knows the id was committed.
        let second = store.metadata_path(CheckpointId(2));
        place.location.store().delete(&second).await.unwrap();
        let latest = store.latest_completed_of(&[CheckpointId(1), CheckpointId(2), CheckpointId(3)]).await.unwrap();
        assert_eq!(latest.checkpoint.unwrap().id, CheckpointId(1));
        let reported: Vec<(&str, &str)> =
            latest.warnings.iter().map(|w| (w.path.as_str(), w.reason.as_str())).collect();
        assert_eq!(reported.len(), 2);
        assert_eq!(reported[1], (second.as_ref(), "missing"));

        // Never silently empty: with every checkpoint unusable, an error names them.
        flip_a_byte(&place.location, &store.metadata_path(CheckpointId(1))).await;
        match store.latest_completed().await {
            Err(StateError::NoUsableCheckpoint { paths }) => assert_eq!(paths.len(), 2),
            other => panic!("[{}] expected no usable checkpoint, got {other:?}", place.name),
        }
        let _ = backend.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_metadata_and_their_slatedb_checkpoints() {
    for place in places("retention") {
        let clock = ManualClock::new(0);
        let mut backend = open(&place, 0, 1, all_key_groups(), options(&clock, None)).await;
        let store = CheckpointStore::new(place.location.clone(), JobId("job-1".into()), 2);
        let mut uuids = Vec::new();
        for id in 1..=4u64 {
            value_state().put(&mut backend, 0, b"k", &id.to_le_bytes()).unwrap();
            let handle = checkpoint(&mut backend, id).await;
            uuids.push(handle.slatedb_checkpoint);
            let retired = store.commit(&completed(id, vec![handle])).await.unwrap();
            if id >= 3 {
                assert_eq!(retired, vec![CheckpointId(id - 2)], "[{}]", place.name);
            }
        }
        assert_eq!(store.list_ids().await.unwrap(), vec![CheckpointId(3), CheckpointId(4)]);
        let live: BTreeSet<_> =
            weir_state_store::backend::list_slatedb_checkpoints(&place.location, backend.db_path().as_ref())
                .await
                .unwrap()
                .into_iter()
                .collect();
        assert!(!live.contains(&uuids[0]) && !live.contains(&uuids[1]), "[{}] retired ones discarded", place.name);
        assert!(live.contains(&uuids[2]) && live.contains(&uuids[3]), "[{}] retained ones kept", place.name);
        backend.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_attempt_cannot_commit_over_a_newer_one() {
    for place in places("fencing") {
        let clock = ManualClock::new(0);
        let store = CheckpointStore::new(place.location.clone(), JobId("job-1".into()), 1);
        let mut zombie = open(&place, 0, 1, all_key_groups(), options(&clock, None)).await;
        value_state().put(&mut zombie, 1, b"k", b"from attempt 1").unwrap();
        let handle = checkpoint(&mut zombie, 1).await;
        store.commit(&completed(1, vec![handle.clone()])).await.unwrap();

        // The task restarts as attempt 2; attempt 1 keeps running, unaware.
        let mut current = KeyedStateBackend::restore(
            &place.location,
            subtask(0, 2),
            all_key_groups(),
            options(&clock, None),
            &[handle],
        )
        .await
        .unwrap();
        value_state().put(&mut current, 1, b"k", b"from attempt 2").unwrap();
        let newer = checkpoint(&mut current, 2).await;
        store.commit(&completed(2, vec![newer])).await.unwrap();

        // The zombie's database was fenced by the restore: its checkpoint fails as fenced.
        value_state().put(&mut zombie, 1, b"k", b"zombie write").unwrap();
        let outcome = match zombie.snapshot(CheckpointId(2)).await {
            Ok(pending) => pending.wait().await.map(|_| ()),
            Err(e) => Err(e),
        };
        assert!(matches!(outcome, Err(StateError::Fenced { .. })), "[{}] got {outcome:?}", place.name);
        // And its metadata cannot replace or precede the newer commit.
        assert!(matches!(store.commit(&completed(2, vec![])).await, Err(StateError::CheckpointExists { .. })));
        assert!(matches!(store.commit(&completed(1, vec![])).await, Err(StateError::CheckpointNotMonotonic { .. })));
        let latest = store.latest_completed().await.unwrap().checkpoint.unwrap();
        assert_eq!(latest.id, CheckpointId(2));
        let mut check = KeyedStateBackend::restore(
            &place.location,
            subtask(0, 3),
            all_key_groups(),
            options(&clock, None),
            &latest.state_handles,
        )
        .await
        .unwrap();
        assert_eq!(value_state().get(&mut check, 1, b"k").await.unwrap().as_deref(), Some(&b"from attempt 2"[..]));
        check.close().await.unwrap();
        let _ = current.close().await;
        let _ = zombie.close().await;
    }
}

/// Starting job B from job A's live checkpoint (`execution.savepoint.path` pointing at it) reads
/// A's state and leaves A's writer alone: A goes on checkpointing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_jobs_checkpoint_is_read_without_fencing_its_writer() {
    for place in places("foreign-restore") {
        let clock = ManualClock::new(0);
        let mut a = open(&place, 0, 1, all_key_groups(), options(&clock, None)).await;
        value_state().put(&mut a, 1, b"k", b"from job a").unwrap();
        let handle = checkpoint(&mut a, 1).await;

        for (range, handles) in
            [(all_key_groups(), vec![handle.clone()]), (KeyGroupRange { start: 0, end: 63 }, vec![handle.clone()])]
        {
            let other = SubtaskStateId { job: JobId("job-b".into()), ..subtask(0, 1 + range.end) };
            let mut b = KeyedStateBackend::restore(&place.location, other, range, options(&clock, None), &handles)
                .await
                .unwrap_or_else(|e| panic!("[{}] job b restores job a's checkpoint: {e}", place.name));
            if range.contains(key_group(b"k")) {
                assert_eq!(value_state().get(&mut b, 1, b"k").await.unwrap().as_deref(), Some(&b"from job a"[..]));
            }
            value_state().put(&mut b, 1, b"k", b"from job b").unwrap();
            checkpoint(&mut b, 2).await;
            b.close().await.unwrap();
        }

        // Job A was not fenced: it checkpoints on, and its state is its own.
        value_state().put(&mut a, 1, b"k", b"job a goes on").unwrap();
        let outcome = match a.snapshot(CheckpointId(2)).await {
            Ok(pending) => pending.wait().await.map(|_| ()),
            Err(e) => Err(e),
        };
        assert!(outcome.is_ok(), "[{}] job a was fenced by job b's restore: {outcome:?}", place.name);
        assert_eq!(value_state().get(&mut a, 1, b"k").await.unwrap().as_deref(), Some(&b"job a goes on"[..]));
        a.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn savepoints_are_self_contained_and_restore_after_their_job_is_deleted() {
    use futures::TryStreamExt;
    for place in places("savepoint") {
        let clock = ManualClock::new(0);
        // Two subtasks, several checkpoints each.
        let halves = [KeyGroupRange { start: 0, end: 63 }, KeyGroupRange { start: 64, end: MAX_PARALLELISM - 1 }];
        let keys: Vec<Vec<u8>> = (0..200u32).map(|i| format!("key-{i}").into_bytes()).collect();
        let mut handles = Vec::new();
        for (index, range) in halves.iter().enumerate() {
            let mut backend = open(&place, index as u32, 1, *range, options(&clock, None)).await;
            for (round, chunk) in keys.chunks(50).enumerate() {
                for key in chunk.iter().filter(|k| range.contains(key_group(k))) {
                    value_state().put(&mut backend, key_group(key), key, format!("v{round}").as_bytes()).unwrap();
                }
                checkpoint(&mut backend, 1 + round as u64).await;
            }
            handles.push((backend, *range));
        }
        let mut first = Vec::new();
        for (backend, _) in &mut handles {
            first.push(checkpoint(backend, 10).await);
        }
        let store = CheckpointStore::new(place.location.clone(), JobId("job-1".into()), 1);
        let cp = completed(10, first);
        store.commit(&cp).await.unwrap();

        // Locally the savepoint goes to another folder altogether; on S3 under another prefix.
        let elsewhere = tempfile::tempdir().expect("temp dir");
        let target = match place.location.kind() {
            StoreKind::Local => {
                StateLocation::parse(elsewhere.path().join("sp-1").to_str().expect("utf-8")).expect("local target")
            }
            _ => StateLocation::from_store(
                place.location.store().clone(),
                place.location.child(&["savepoints", "sp-1"]),
                place.location.kind(),
            ),
        };
        let written = savepoint::write(&place.location, &target, &cp)
            .await
            .unwrap_or_else(|e| panic!("[{}] savepoint: {e}", place.name));

        // The job goes on (checkpoint 11 retires checkpoint 10), ends, and is deleted entirely.
        let mut second = Vec::new();
        for (backend, _) in &mut handles {
            for key in &keys {
                if backend.key_groups().contains(key_group(key)) {
                    value_state().put(backend, key_group(key), key, b"later").unwrap();
                }
            }
            second.push(checkpoint(backend, 11).await);
        }
        store.commit(&completed(11, second)).await.unwrap();
        for (backend, _) in handles {
            backend.close().await.unwrap();
        }
        let job_folder = place.location.child(&["job-1"]);
        let files: Vec<_> =
            place.location.store().list(Some(&job_folder)).map_ok(|meta| meta.location).try_collect().await.unwrap();
        assert!(!files.is_empty());
        for file in files {
            place.location.store().delete(&file).await.unwrap();
        }

        let savepoint = savepoint::read(&target).await.unwrap();
        assert!(savepoint.is_savepoint);
        assert_eq!(savepoint, written);
        let mut restored = KeyedStateBackend::restore(
            &place.location,
            SubtaskStateId { job: JobId("job-2".into()), ..subtask(0, 2) },
            all_key_groups(),
            options(&clock, None),
            &savepoint.state_handles,
        )
        .await
        .unwrap_or_else(|e| panic!("[{}] restore from savepoint: {e}", place.name));
        for (i, key) in keys.iter().enumerate() {
            let expected = format!("v{}", i / 50);
            let value = value_state().get(&mut restored, key_group(key), key).await.unwrap();
            assert_eq!(
                value.as_deref(),
                Some(expected.as_bytes()),
                "[{}] {}",
                place.name,
                String::from_utf8_lossy(key)
            );
        }
        restored.close().await.unwrap();

        // Metadata is a file a user can write: one that names databases outside its own folder
        // (here: the real savepoint's) is refused, so no job reads another's state through it.
        let forged =
            StateLocation::from_store(target.store().clone(), place.location.child(&["forged"]), place.location.kind());
        forged
            .write(&forged.child(&["_metadata"]), weir_state_store::checkpoint::encode_metadata(&savepoint))
            .await
            .unwrap();
        let refused = savepoint::read(&forged).await.expect_err("a forged savepoint is refused");
        assert!(
            matches!(&refused, StateError::CorruptMetadata { reason, .. } if reason.contains("outside")),
            "[{}] {refused}",
            place.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_savepoints_restore_after_their_checkpoint_is_retired() {
    for place in places("native-savepoint") {
        let clock = ManualClock::new(0);
        let mut backend = open(&place, 0, 1, all_key_groups(), options(&clock, None)).await;
        let store = CheckpointStore::new(place.location.clone(), JobId("job-1".into()), 1);
        value_state().put(&mut backend, 9, b"k", b"saved").unwrap();
        let cp = completed(1, vec![checkpoint(&mut backend, 1).await]);
        store.commit(&cp).await.unwrap();
        let target = StateLocation::from_store(
            place.location.store().clone(),
            place.location.child(&["sp-1"]),
            place.location.kind(),
        );
        let pinned = savepoint::begin(&place.location, &target, &cp).await.unwrap();
        let written = pinned.by_reference().await.unwrap();
        assert!(written.state_handles.iter().all(|h| h.db_path.starts_with(target.root().as_ref())));

        // The job overwrites the key checkpoint after checkpoint (its compactor merges the SSTs),
        // and retention retires checkpoint 1 and its SlateDB checkpoint.
        for id in 2..=12 {
            value_state().put(&mut backend, 9, b"k", format!("later {id}").as_bytes()).unwrap();
            store.commit(&completed(id, vec![checkpoint(&mut backend, id).await])).await.unwrap();
        }
        backend.close().await.unwrap();

        let savepoint = savepoint::read(&target).await.unwrap();
        let mut restored = KeyedStateBackend::restore(
            &place.location,
            subtask(0, 2),
            all_key_groups(),
            options(&clock, None),
            &savepoint.state_handles,
        )
        .await
        .unwrap_or_else(|e| panic!("[{}] restore from a native savepoint: {e}", place.name));
        assert_eq!(value_state().get(&mut restored, 9, b"k").await.unwrap().as_deref(), Some(&b"saved"[..]));
        restored.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_groups_outside_the_subtask_are_refused() {
    let clock = ManualClock::new(0);
    let location = StateLocation::parse("memory://t").unwrap();
    let range = KeyGroupRange { start: 0, end: 63 };
    let mut backend = KeyedStateBackend::open(&location, subtask(0, 1), range, options(&clock, None)).await.unwrap();
    assert!(matches!(value_state().put(&mut backend, 64, b"k", b"v"), Err(StateError::KeyGroupOutOfRange { .. })));
    assert!(matches!(ValueState::new(OP, StateId(0xFFFF)), Err(StateError::ReservedStateId(_))));
    backend.close().await.unwrap();
}
