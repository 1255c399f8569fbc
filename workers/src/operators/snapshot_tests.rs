//! Snapshot → restore round trips for keyed operators, without a database: an operator that is
//! checkpointed at some point, dropped and restored into a fresh instance must emit, in all,
//! exactly what one uninterrupted instance emits.
//!
//! Every checkpoint of a run is written into the same [`MemoryState`], so a restore from a later
//! checkpoint reads what incremental writes (changed keys, deletes of gone ones) left there.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use std::time::Duration;

use weir_dataflow::clock::ManualClock;
use weir_dataflow::event::{ChangeBatch, RowKind, Timestamp};
use weir_dataflow::ids::CheckpointId;
use weir_dataflow::plan::{AggKind, AggregateCall, OverFrame, Partitioning, RankSpec, SessionOutput, SortKey};

use super::keys::RowKeyGroups;
use super::{Emitted, Operator, Output};
use crate::checkpoint::{MemoryState, SnapshotContext};

const MAX_PARALLELISM: u32 = 128;

/// One input of a test run.
#[derive(Clone)]
enum Step {
    Batch(ChangeBatch),
    /// A batch on another input than the first (a join's right side).
    Input(usize, ChangeBatch),
    Watermark(Timestamp),
    Checkpoint,
    /// Processing time moves to this millisecond (what a state TTL reads).
    At(Arc<ManualClock>, i64),
}

/// The rows an operator emitted, as `{"op":…,"row":[…]}` lines.
fn lines(out: Output, into: &mut Vec<String>) {
    for item in out.items {
        if let Emitted::Batch(batch) = item {
            let mut text = String::new();
            crate::output::write_changelog_json(&mut text, &batch);
            into.extend(text.lines().map(str::to_string));
        }
    }
}

fn feed(op: &mut dyn Operator, step: &Step, emitted: &mut Vec<String>) {
    let mut out = Output::default();
    match step {
        Step::Batch(batch) => op.process(0, batch.clone(), &mut out).expect("process"),
        Step::Input(input, batch) => op.process(*input, batch.clone(), &mut out).expect("process"),
        Step::Watermark(w) => op.on_watermark(*w, &mut out).expect("watermark"),
        Step::Checkpoint => return,
        Step::At(clock, millis) => {
            clock.set(*millis);
            return;
        }
    }
    lines(out, emitted);
}

fn finish(op: &mut dyn Operator, emitted: &mut Vec<String>) {
    let mut out = Output::default();
    op.on_watermark(i64::MAX, &mut out).expect("final watermark");
    op.finish(&mut out).expect("finish");
    lines(out, emitted);
}

/// Runs `steps` uninterrupted, then once per checkpoint step restored there (from incremental
/// checkpoints taken at every checkpoint step before it), and checks all runs emit the same.
fn assert_round_trips(make: impl Fn() -> Box<dyn Operator>, steps: &[Step]) {
    let mut expected = Vec::new();
    let mut reference = make();
    for step in steps {
        feed(reference.as_mut(), step, &mut expected);
    }
    finish(reference.as_mut(), &mut expected);
    expected.sort();
    assert!(!expected.is_empty(), "the test input must produce output");

    let checkpoints: Vec<usize> =
        steps.iter().enumerate().filter(|(_, s)| matches!(s, Step::Checkpoint)).map(|(i, _)| i).collect();
    assert!(!checkpoints.is_empty());
    for (n, &at) in checkpoints.iter().enumerate() {
        let mut memory = MemoryState::default();
        let mut operator_state = None;
        let mut emitted = Vec::new();
        let mut before = make();
        before.track_changes();
        for (i, step) in steps[..=at].iter().enumerate() {
            feed(before.as_mut(), step, &mut emitted);
            if matches!(step, Step::Checkpoint) {
                let mut ctx = SnapshotContext::in_memory(CheckpointId(i as u64 + 1), &mut memory);
                before.snapshot(&mut ctx).expect("snapshot");
                operator_state = ctx.operator_state.take();
            }
        }
        // Whatever `before` would emit after the checkpoint is lost with it, as in a crash.
        drop(before);
        let mut after = make();
        after.track_changes();
        after.restore(memory.restored(operator_state.into_iter().collect())).expect("restore");
        for step in &steps[at + 1..] {
            feed(after.as_mut(), step, &mut emitted);
        }
        finish(after.as_mut(), &mut emitted);
        emitted.sort();
        assert_eq!(emitted, expected, "restored from checkpoint {} of {}", n + 1, checkpoints.len());
    }
}

/// (k, v, ts) rows.
fn input_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Int64, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), false),
    ]))
}

fn batch(rows: &[(i64, i64, i64)], kinds: Option<Vec<RowKind>>) -> ChangeBatch {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
        Arc::new(TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.2))),
    ];
    let data = RecordBatch::try_new(input_schema(), columns).expect("batch");
    match kinds {
        Some(kinds) => ChangeBatch::with_kinds(data, kinds),
        None => ChangeBatch::inserts(data),
    }
}

/// A seeded xorshift generator: test input that is random but the same on every run.
fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// Seeded rows over 5 keys with event times that mostly grow, and a watermark after each batch
/// trailing the largest time by `delay`; a checkpoint every third batch.
fn steps(seed: u64, batches: usize, delay: i64) -> Vec<Step> {
    let mut next = xorshift(seed);
    let (mut steps, mut time, mut max_time) = (Vec::new(), 1_000, 0);
    for b in 0..batches {
        let rows: Vec<(i64, i64, i64)> = (0..8)
            .map(|_| {
                time += (next() % 7) as i64;
                let ts = time - (next() % 12) as i64;
                max_time = max_time.max(ts);
                ((next() % 5) as i64, (next() % 100) as i64, ts)
            })
            .collect();
        steps.push(Step::Batch(batch(&rows, None)));
        steps.push(Step::Watermark(max_time - delay));
        if b % 3 == 2 {
            steps.push(Step::Checkpoint);
        }
    }
    steps
}

fn call(kind: AggKind, arg: Option<usize>) -> AggregateCall {
    AggregateCall { kind, arg, distinct: false, filter: None, arg_type: DataType::Int64, output_type: DataType::Int64 }
}

fn hashed_by_k() -> RowKeyGroups {
    RowKeyGroups::new(&input_schema(), &Partitioning::Hash(vec![0]), MAX_PARALLELISM).expect("key groups")
}

#[test]
fn session_windows_round_trip() {
    let output = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("ws", DataType::Timestamp(TimeUnit::Millisecond, None), false),
        Field::new("we", DataType::Timestamp(TimeUnit::Millisecond, None), false),
        Field::new("n", DataType::Int64, false),
        Field::new("s", DataType::Int64, true),
    ]));
    let make = || -> Box<dyn Operator> {
        Box::new(
            super::session_agg::SessionAggregate::try_new(
                input_schema(),
                vec![0],
                2,
                9,
                vec![call(AggKind::CountStar, None), call(AggKind::Sum, Some(1))],
                vec![
                    SessionOutput::Key(0),
                    SessionOutput::WindowStart,
                    SessionOutput::WindowEnd,
                    SessionOutput::Aggregate(0),
                    SessionOutput::Aggregate(1),
                ],
                output.clone(),
                hashed_by_k(),
            )
            .expect("operator"),
        )
    };
    // A short delay: some rows are late, and are dropped the same after a restore.
    assert_round_trips(make, &steps(7, 30, 3));
}

fn over_output() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Int64, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), false),
        Field::new("n", DataType::Int64, false),
        Field::new("s", DataType::Int64, true),
        Field::new("hi", DataType::Int64, true),
    ]))
}

fn over(frame: OverFrame) -> Box<dyn Operator> {
    Box::new(
        super::over::OverAggregate::try_new(
            input_schema(),
            vec![0],
            2,
            frame,
            3,
            vec![call(AggKind::CountStar, None), call(AggKind::Sum, Some(1)), call(AggKind::Max, Some(1))],
            over_output(),
            hashed_by_k(),
        )
        .expect("operator"),
    )
}

#[test]
fn over_aggregation_round_trips() {
    for frame in [
        OverFrame::Rows { preceding: Some(2) },
        OverFrame::Range { preceding: Some(15) },
        OverFrame::Rows { preceding: None },
    ] {
        assert_round_trips(|| over(frame), &steps(11, 30, 5));
    }
}

fn rank_spec(limit: usize) -> RankSpec {
    RankSpec {
        partition: vec![0],
        order: vec![SortKey { column: 1, descending: true, nulls_first: false }],
        limit,
        rank_column: true,
        newest_first_on_ties: false,
    }
}

fn rank_output() -> SchemaRef {
    let mut fields: Vec<Field> = input_schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("rn", DataType::Int64, false));
    Arc::new(Schema::new(fields))
}

#[test]
fn top_n_round_trips() {
    let make = || -> Box<dyn Operator> {
        Box::new(
            super::rank::Rank::try_new(rank_spec(3), &input_schema(), rank_output(), true, hashed_by_k())
                .expect("operator"),
        )
    };
    // Equal values (v < 100) rank by arrival: a restore must keep that order.
    assert_round_trips(make, &steps(13, 30, 5));
}

#[test]
fn top_n_over_retractions_round_trips() {
    // Every row is inserted, and every other one retracted two batches later: the operator keeps
    // all rows of a partition, and partitions empty out and come back.
    let mut state = 17u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut steps = Vec::new();
    let mut earlier: Vec<Vec<(i64, i64, i64)>> = Vec::new();
    for b in 0..30 {
        let rows: Vec<(i64, i64, i64)> =
            (0..6).map(|i| ((next() % 4) as i64, (next() % 50) as i64, (b * 10 + i) as i64)).collect();
        let mut all = rows.clone();
        let mut kinds = vec![RowKind::Insert; rows.len()];
        if b >= 2 {
            let gone: Vec<_> = earlier[b - 2].iter().step_by(2).copied().collect();
            kinds.extend(gone.iter().map(|_| RowKind::Delete));
            all.extend(gone);
        }
        earlier.push(rows);
        steps.push(Step::Batch(batch(&all, Some(kinds))));
        if b % 4 == 3 {
            steps.push(Step::Checkpoint);
        }
    }
    let make = || -> Box<dyn Operator> {
        Box::new(
            super::rank::Rank::try_new(rank_spec(2), &input_schema(), rank_output(), false, hashed_by_k())
                .expect("operator"),
        )
    };
    assert_round_trips(make, &steps);
}

#[test]
fn window_top_n_round_trips() {
    // Windows of 20 ms: the window's end is the third column, partitions are (k, end).
    let mut state = 19u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut steps = Vec::new();
    for b in 0..30i64 {
        let rows: Vec<(i64, i64, i64)> = (0..8)
            .map(|_| {
                let ts = b * 5 + (next() % 5) as i64;
                ((next() % 3) as i64, (next() % 40) as i64, (ts / 20 + 1) * 20)
            })
            .collect();
        steps.push(Step::Batch(batch(&rows, None)));
        steps.push(Step::Watermark(b * 5 - 10));
        if b % 3 == 1 {
            steps.push(Step::Checkpoint);
        }
    }
    let spec = RankSpec { partition: vec![0, 2], ..rank_spec(2) };
    let make = || -> Box<dyn Operator> {
        let key_groups =
            RowKeyGroups::new(&input_schema(), &Partitioning::Hash(vec![0, 2]), MAX_PARALLELISM).expect("key groups");
        Box::new(
            super::rank::WindowRank::try_new(spec.clone(), 2, &input_schema(), rank_output(), key_groups)
                .expect("operator"),
        )
    };
    assert_round_trips(make, &steps);
}

fn join(
    kind: weir_dataflow::plan::JoinKind,
    interval: Option<weir_dataflow::plan::IntervalBounds>,
) -> Box<dyn Operator> {
    Box::new(join_operator(kind, interval))
}

fn join_operator(
    kind: weir_dataflow::plan::JoinKind,
    interval: Option<weir_dataflow::plan::IntervalBounds>,
) -> super::join::Join {
    // An outer join pads with NULLs: every output column is nullable.
    let side = input_schema().fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect::<Vec<_>>();
    let output = Arc::new(Schema::new([side.clone(), side].concat()));
    super::join::Join::try_new(
        kind,
        input_schema(),
        input_schema(),
        vec![0],
        vec![0],
        [3, 3],
        None,
        None,
        interval,
        output,
    )
    .expect("join")
    .with_max_parallelism(MAX_PARALLELISM)
}

/// Seeded changelog rows for both sides of a join over 5 keys: inserts, duplicates, and
/// retractions of rows inserted before; a checkpoint every third batch.
fn join_steps(seed: u64, batches: usize) -> Vec<Step> {
    let mut next = xorshift(seed);
    let mut live: [Vec<(i64, i64, i64)>; 2] = [Vec::new(), Vec::new()];
    let mut steps = Vec::new();
    for b in 0..batches {
        let side = (next() % 2) as usize;
        let (mut rows, mut kinds) = (Vec::new(), Vec::new());
        for _ in 0..6 {
            if !live[side].is_empty() && next().is_multiple_of(3) {
                let i = (next() as usize) % live[side].len();
                rows.push(live[side].swap_remove(i));
                kinds.push(RowKind::Delete);
            } else {
                // Few values, so equal rows (several copies) happen.
                let row = ((next() % 5) as i64, (next() % 3) as i64, 1_000);
                live[side].push(row);
                rows.push(row);
                kinds.push(RowKind::Insert);
            }
        }
        steps.push(Step::Input(side, batch(&rows, Some(kinds))));
        if b % 3 == 2 {
            steps.push(Step::Checkpoint);
        }
    }
    steps
}

#[test]
fn full_outer_join_over_changelogs_round_trips() {
    // Match counts and copies of stored rows change after they were checkpointed (patches),
    // and rows are retracted away (removal patches, dead segments).
    for seed in [3, 11, 29] {
        assert_round_trips(|| join(weir_dataflow::plan::JoinKind::Full, None), &join_steps(seed, 40));
    }
}

#[test]
fn inner_join_round_trips() {
    assert_round_trips(|| join(weir_dataflow::plan::JoinKind::Inner, None), &join_steps(5, 40));
}

#[test]
fn interval_join_round_trips_as_rows_expire() {
    // `right.ts BETWEEN left.ts - 20 ms AND left.ts`: rows expire as the watermark passes them,
    // so segments die and a restore drops what the watermark had passed.
    let bounds = weir_dataflow::plan::IntervalBounds { left_time: 2, right_time: 2, lower: -20, upper: 0 };
    let mut steps = Vec::new();
    for (i, step) in self::steps(13, 45, 4).into_iter().enumerate() {
        steps.push(match step {
            Step::Batch(b) if i % 4 == 0 => Step::Input(1, b),
            other => other,
        });
    }
    assert_round_trips(|| join(weir_dataflow::plan::JoinKind::Inner, Some(bounds)), &steps);
}

#[test]
fn join_state_is_compacted_when_most_stored_rows_are_gone() {
    // 40k rows stored, then 30k of them retracted: the mostly-dead segments are rewritten, and
    // the state left holds about the live rows.
    let rows: Vec<(i64, i64, i64)> = (0..40_000).map(|i| (i % 1000, i, 1_000)).collect();
    let gone: Vec<(i64, i64, i64)> = rows.iter().copied().filter(|r| r.1 % 4 != 0).collect();
    let steps = vec![
        Step::Input(0, batch(&rows, None)),
        Step::Checkpoint,
        Step::Input(0, batch(&gone, Some(vec![RowKind::Delete; gone.len()]))),
        Step::Checkpoint,
        Step::Input(1, batch(&[(7, 1, 1_000), (8, 2, 1_000)], None)),
        Step::Checkpoint,
    ];
    assert_round_trips(|| join(weir_dataflow::plan::JoinKind::Inner, None), &steps);

    let mut memory = MemoryState::default();
    let mut op = join(weir_dataflow::plan::JoinKind::Inner, None);
    op.track_changes();
    let mut stored_rows = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        feed(op.as_mut(), step, &mut Vec::new());
        if matches!(step, Step::Checkpoint) {
            let mut ctx = SnapshotContext::in_memory(CheckpointId(i as u64 + 1), &mut memory);
            op.snapshot(&mut ctx).expect("snapshot");
            let bytes: usize = memory.keyed.values().map(Vec::len).sum();
            stored_rows.push(bytes);
        }
    }
    // After the retractions, the patches cover 30k rows; compaction then leaves about 10k rows.
    assert!(stored_rows[2] < stored_rows[0] / 2, "state after compaction: {stored_rows:?}");
}

/// `SUM(v) … GROUP BY k`, its keys forgotten `ttl` after their last write by `clock`.
fn sum_by_k(clock: &Arc<ManualClock>, ttl: Option<Duration>, retract: bool) -> Box<dyn Operator> {
    let output =
        Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false), Field::new("s", DataType::Int64, true)]));
    Box::new(
        super::group_agg::GroupAggregate::try_new(
            input_schema(),
            vec![0],
            vec![call(AggKind::Sum, Some(1))],
            output,
            retract,
            hashed_by_k(),
        )
        .expect("aggregate")
        .with_state_ttl(ttl, clock.clone()),
    )
}

/// Runs `steps` through `op`; the emitted rows, one `{"op":…,"row":[…]}` line each, per step.
fn run(op: &mut dyn Operator, steps: &[Step]) -> Vec<Vec<String>> {
    steps
        .iter()
        .map(|step| {
            let mut emitted = Vec::new();
            feed(op, step, &mut emitted);
            emitted
        })
        .collect()
}

/// Flink's `GroupAggregateHarnessTest.testAggregateWithRetraction` with a 2 s state TTL: a key
/// whose state expired starts afresh with `+I` (nothing retracts its old result), a retraction
/// for it is ignored, and an unchanged result is sent again.
#[test]
fn group_aggregation_forgets_idle_keys_as_flink_does() {
    let clock = ManualClock::new(1);
    let mut op = sum_by_k(&clock, Some(Duration::from_secs(2)), true);
    let row = |k, v, kind| Step::Batch(batch(&[(k, v, 0)], Some(vec![kind])));
    let (i, d, ub) = (RowKind::Insert, RowKind::Delete, RowKind::UpdateBefore);
    let steps = [
        row(1, 1, i),
        row(2, 1, i),
        row(1, 2, i),
        row(1, 2, d),
        row(3, 3, i),
        Step::At(clock.clone(), 3_002),
        row(3, 3, ub),
        row(1, 4, i),
        row(2, 2, i),
        row(2, 0, i),
    ];
    let emitted: Vec<String> = run(op.as_mut(), &steps).into_iter().map(|lines| lines.join(" ")).collect();
    assert_eq!(
        emitted,
        [
            r#"{"op":"+I","row":[1,1]}"#,
            r#"{"op":"+I","row":[2,1]}"#,
            r#"{"op":"-U","row":[1,1]} {"op":"+U","row":[1,3]}"#,
            r#"{"op":"-U","row":[1,3]} {"op":"+U","row":[1,1]}"#,
            r#"{"op":"+I","row":[3,3]}"#,
            "",
            "",
            r#"{"op":"+I","row":[1,4]}"#,
            r#"{"op":"+I","row":[2,2]}"#,
            r#"{"op":"-U","row":[2,2]} {"op":"+U","row":[2,2]}"#,
        ]
    );
}

/// Time steps of `step_millis` between the batches of `steps`, from 10 s on.
fn timed(clock: &Arc<ManualClock>, steps: Vec<Step>, step_millis: impl Fn(usize) -> i64) -> Vec<Step> {
    let mut now = 10_000;
    let mut timed = Vec::new();
    for (i, step) in steps.into_iter().enumerate() {
        if matches!(step, Step::Batch(_) | Step::Input(..)) {
            now += step_millis(i);
            timed.push(Step::At(clock.clone(), now));
        }
        timed.push(step);
    }
    timed
}

#[test]
fn group_aggregation_with_a_state_ttl_round_trips() {
    // Keys expire between checkpoints and after the last one: a restored operator must know
    // when each key was last written, or it would keep (or drop) keys the original dropped
    // (or kept).
    let clock = ManualClock::new(0);
    for seed in [2, 17] {
        let mut next = xorshift(seed);
        let pauses: Vec<i64> = (0..200).map(|_| (next() % 700) as i64).collect();
        let steps = timed(&clock, steps(seed, 45, 4), |i| pauses[i % pauses.len()]);
        assert_round_trips(|| sum_by_k(&clock, Some(Duration::from_secs(1)), false), &steps);
    }
}

#[test]
fn join_with_a_state_ttl_round_trips() {
    // Rows expire by processing time, match counts change (which starts a preserved row's TTL
    // again), and restores drop what expired.
    let clock = ManualClock::new(0);
    let make = || {
        let ttl = [Some(Duration::from_millis(900)), Some(Duration::from_millis(400))];
        let join = join_operator(weir_dataflow::plan::JoinKind::Full, None).with_state_ttl(ttl, clock.clone());
        Box::new(join) as Box<dyn Operator>
    };
    for seed in [3, 11] {
        let mut next = xorshift(seed);
        let pauses: Vec<i64> = (0..200).map(|_| (next() % 300) as i64).collect();
        let steps = timed(&clock, join_steps(seed, 40), |i| pauses[i % pauses.len()]);
        assert_round_trips(make, &steps);
    }
}

/// Feeds `step` to an operator keeping its state under a budget, doing what the task does
/// around each batch: the stored keys it wants are read from `store` first, and what it evicts
/// after is written there (a later change of a key wins).
fn feed_spilling(op: &mut dyn Operator, step: &Step, store: &mut MemoryState, emitted: &mut Vec<String>) {
    let (Step::Batch(batch) | Step::Input(_, batch)) = step else {
        feed(op, step, emitted);
        return;
    };
    let input = if let Step::Input(input, _) = step { *input } else { 0 };
    let spill = op.spill().expect("a budget was set");
    let wanted = spill.wanted(input, batch).expect("wanted");
    let found = wanted
        .into_iter()
        .filter_map(|k| {
            let value = store.keyed.get(&(k.state, u32::from(k.key_group), k.key.to_vec()))?;
            Some((k, bytes::Bytes::copy_from_slice(value)))
        })
        .collect();
    spill.loaded(found).expect("loaded");
    feed(op, step, emitted);
    for write in op.spill().expect("a budget was set").evict().expect("evict") {
        match write {
            weir_state_store::StoreWrite::Put { key, value, .. } => {
                store.keyed.insert((key.state, u32::from(key.key_group), key.key.to_vec()), value);
            }
            weir_state_store::StoreWrite::Delete(key) => {
                store.keyed.remove(&(key.state, u32::from(key.key_group), key.key.to_vec()));
            }
        }
    }
}

/// Changelog rows (inserts, and retractions of earlier inserts) over `keys` keys.
fn many_keys(seed: u64, batches: usize, keys: u64) -> Vec<Step> {
    let mut next = xorshift(seed);
    let mut inserted: Vec<(i64, i64)> = Vec::new();
    let mut steps = Vec::new();
    for b in 0..batches {
        let mut rows = Vec::new();
        let mut kinds = Vec::new();
        for _ in 0..16 {
            if !inserted.is_empty() && next().is_multiple_of(4) {
                let (k, v) = inserted.swap_remove((next() as usize) % inserted.len());
                rows.push((k, v, 0));
                kinds.push(RowKind::Delete);
            } else {
                let (k, v) = ((next() % keys) as i64, (next() % 100) as i64);
                inserted.push((k, v));
                rows.push((k, v, 0));
                kinds.push(RowKind::Insert);
            }
        }
        steps.push(Step::Batch(batch(&rows, Some(kinds))));
        if b % 5 == 4 {
            steps.push(Step::Checkpoint);
        }
    }
    steps
}

#[test]
fn group_aggregation_under_a_small_budget_emits_what_an_unbounded_one_does() {
    // Groups leave memory after almost every batch and come back when rows need them; some
    // are emptied (deleted) while out, some made again after. Every batch's output must be
    // what an aggregation holding everything in memory emits.
    let clock = ManualClock::new(0);
    for (seed, ttl) in [(5, None), (8, None), (13, Some(Duration::from_millis(1_500)))] {
        let mut next = xorshift(seed);
        let pauses: Vec<i64> = (0..200).map(|_| (next() % 100) as i64).collect();
        let steps = timed(&clock, many_keys(seed, 300, 60), |i| pauses[i % pauses.len()]);
        let mut unbounded = sum_by_k(&clock, ttl, true);
        let expected = run(unbounded.as_mut(), &steps);
        let mut bounded = sum_by_k(&clock, ttl, true);
        assert!(bounded.set_memory_budget(2_500), "a group aggregation keeps state under a budget");
        let mut store = MemoryState::default();
        let emitted: Vec<Vec<String>> = steps
            .iter()
            .map(|step| {
                let mut lines = Vec::new();
                feed_spilling(bounded.as_mut(), step, &mut store, &mut lines);
                lines
            })
            .collect();
        assert!(store.keyed.len() > 20, "groups were written out ({} stored)", store.keyed.len());
        assert_eq!(emitted, expected, "seed {seed}, ttl {ttl:?}");
    }
}

#[test]
fn group_aggregation_under_a_budget_restores_lazily_from_a_checkpoint() {
    // The database holds what was written out and what checkpoints wrote; a restore reads
    // nothing up front and finds each group there when a row needs it. What was written out
    // after a checkpoint is not part of it (a SlateDB checkpoint pins the database as it was).
    let clock = ManualClock::new(0);
    let steps = many_keys(21, 200, 90);
    let mut unbounded = sum_by_k(&clock, None, true);
    let mut expected: Vec<String> = run(unbounded.as_mut(), &steps).concat();
    expected.sort();
    let checkpoints: Vec<usize> =
        steps.iter().enumerate().filter(|(_, s)| matches!(s, Step::Checkpoint)).map(|(i, _)| i).collect();
    for &at in checkpoints.iter().step_by(7) {
        let mut live = MemoryState::default();
        let mut pinned = MemoryState::default();
        let mut emitted = Vec::new();
        let mut before = sum_by_k(&clock, None, true);
        before.set_memory_budget(3_000);
        before.track_changes();
        for (i, step) in steps[..=at].iter().enumerate() {
            feed_spilling(before.as_mut(), step, &mut live, &mut emitted);
            if matches!(step, Step::Checkpoint) {
                let mut ctx = SnapshotContext::in_memory(CheckpointId(i as u64 + 1), &mut live);
                before.snapshot(&mut ctx).expect("snapshot");
                pinned = live.clone();
            }
        }
        drop(before);
        let mut after = sum_by_k(&clock, None, true);
        after.set_memory_budget(3_000);
        after.track_changes();
        after.restore(MemoryState::default().restored(vec![])).expect("restore");
        after.spill().expect("a budget").restore_lazily();
        for step in &steps[at + 1..] {
            feed_spilling(after.as_mut(), step, &mut pinned, &mut emitted);
        }
        emitted.sort();
        assert_eq!(emitted, expected, "restored from the checkpoint after step {at}");
    }
}
