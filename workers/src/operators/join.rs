//! Regular (unwindowed) joins: inner, left, right and full outer, over append-only or changelog
//! inputs, with an optional non-equi condition.
//!
//! Each side keeps its rows by join key, each with a multiplicity and, for a side whose rows are
//! preserved (the left of a LEFT JOIN), the number of rows of the other side it matches. A
//! preserved row without matches is emitted padded with NULLs and retracted when its first
//! match arrives, as Flink's streaming join does. Row bytes beyond a memory budget spill to a
//! local file ([`super::row_store`]).
//!
//! Without a state TTL a regular join's state is unbounded, as in Flink. With one
//! (`table.exec.state.ttl`), each stored row is forgotten once it has not been written for the
//! TTL, by processing time (Flink's `OnCreateAndWrite`, `NeverReturnExpired`): expired rows are
//! dropped before each batch is joined, so they never match; a preserved row's TTL starts again
//! when its match count changes, as Flink's update of the association count does. Window and
//! interval joins drop rows by the watermark instead.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::SchemaRef;
use arrow_row::{RowConverter, SortField};
use weir_dataflow::clock::{Clock, SystemClock};
use weir_dataflow::event::{ChangeBatch, MIN_WATERMARK, RowKind, Timestamp};
use weir_dataflow::plan::{IntervalBounds, JoinKind, PhysExpr};

use weir_state_store::StateId;

use super::keys::timestamp_millis;
use super::row_store::{DEFAULT_MEMORY_BUDGET, NO_TIME, RowStore};
use super::{Operator, OperatorMetrics, Output};
use crate::checkpoint::{RestoredState, SnapshotContext};
use crate::error::{TaskError, TaskResult};

/// Rows of a side, in segments ([`super::row_store`]): states 0 and 1 hold the left and right
/// side's segments, states 2 and 3 their patches.
const SIDE_STATE: [StateId; 2] = [StateId(0), StateId(1)];
const PATCH_STATE: [StateId; 2] = [StateId(2), StateId(3)];

/// A side's encoded row, or `None` for NULL padding.
type SideRow<'a> = Option<&'a [u8]>;
/// A join key of one side (0: left, 1: right).
type SideKey = (usize, Box<[u8]>);
/// A stored row: its key, entry and log offset.
type StoredRow = (Box<[u8]>, u32, u64);
/// One output row as (left, right).
type Pair<'a> = (SideRow<'a>, SideRow<'a>);

struct Side {
    keys: Vec<usize>,
    /// Columns of this side that appear in the join's output.
    width: usize,
    rows: RowConverter,
    store: RowStore,
    preserved: bool,
}

/// Where an output row's side comes from: a row of the batch being processed, bytes copied
/// from the other side's state, or NULL padding.
#[derive(Clone, Copy)]
enum Source {
    Batch(usize),
    Copied(usize, usize),
    Null,
}

pub struct Join {
    sides: [Side; 2],
    key_rows: RowConverter,
    filter: Option<PhysExpr>,
    schema: SchemaRef,
    /// A window join: each side's window end column.
    window_end: Option<[usize; 2]>,
    /// Window join keys by window end, to drop when the watermark passes it.
    windows: BTreeMap<Timestamp, Vec<SideKey>>,
    /// An interval join's bounds.
    interval: Option<IntervalBounds>,
    /// Per side, its stored rows by when they expire: by event time in an interval join, by
    /// processing time with a state TTL (one record per row; a row whose TTL restarted since
    /// is put back at its new expiry when its record comes due).
    expiry: [BTreeMap<Timestamp, Vec<StoredRow>>; 2],
    /// A regular join's state TTL per side, in milliseconds, and the clock it reads.
    ttl: [Option<i64>; 2],
    clock: Arc<dyn Clock>,
    watermark: Timestamp,
    late: u64,
    /// Per side: its input has ended, so rows of the other side can never match anything new.
    ended: [bool; 2],
    max_parallelism: u32,
}

impl Join {
    #[allow(clippy::too_many_arguments)]
    pub fn try_new(
        kind: JoinKind,
        left_schema: SchemaRef,
        right_schema: SchemaRef,
        left_keys: Vec<usize>,
        right_keys: Vec<usize>,
        widths: [usize; 2],
        filter: Option<PhysExpr>,
        window_end: Option<[usize; 2]>,
        interval: Option<IntervalBounds>,
        schema: SchemaRef,
    ) -> TaskResult<Self> {
        let key_fields = left_keys.iter().map(|k| SortField::new(left_schema.field(*k).data_type().clone())).collect();
        let side = |schema: &SchemaRef, keys: Vec<usize>, width: usize, preserved: bool| -> TaskResult<Side> {
            let fields = schema.fields().iter().take(width).map(|f| SortField::new(f.data_type().clone())).collect();
            Ok(Side {
                keys,
                width,
                rows: RowConverter::new(fields)?,
                store: RowStore::new(DEFAULT_MEMORY_BUDGET),
                preserved,
            })
        };
        let (left_preserved, right_preserved) = match kind {
            JoinKind::Inner => (false, false),
            JoinKind::Left => (true, false),
            JoinKind::Right => (false, true),
            JoinKind::Full => (true, true),
        };
        Ok(Join {
            sides: [
                side(&left_schema, left_keys, widths[0], left_preserved)?,
                side(&right_schema, right_keys, widths[1], right_preserved)?,
            ],
            key_rows: RowConverter::new(key_fields)?,
            filter,
            schema,
            window_end,
            windows: BTreeMap::new(),
            interval,
            expiry: [BTreeMap::new(), BTreeMap::new()],
            ttl: [None, None],
            clock: Arc::new(SystemClock),
            watermark: MIN_WATERMARK,
            late: 0,
            ended: [false; 2],
            max_parallelism: weir_dataflow::keygroup::DEFAULT_MAX_PARALLELISM,
        })
    }

    /// The key group a join key was routed to: the exchange hashed the same key columns.
    pub fn with_max_parallelism(mut self, max_parallelism: u32) -> Self {
        self.max_parallelism = max_parallelism;
        self
    }

    /// Each side forgets a row once it has not been written for `state_ttl` by `clock`.
    pub fn with_state_ttl(mut self, state_ttl: [Option<Duration>; 2], clock: Arc<dyn Clock>) -> Self {
        self.ttl = state_ttl.map(|ttl| ttl.map(|ttl| i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)));
        self.clock = clock;
        self
    }

    fn has_ttl(&self) -> bool {
        self.ttl.iter().any(Option::is_some)
    }

    /// Forgets every stored row whose state TTL ran out by `now`.
    fn expire_idle_rows(&mut self, now: i64) {
        for side in 0..2 {
            if self.ttl[side].is_none() {
                continue;
            }
            while let Some(entry) = self.expiry[side].first_entry() {
                if *entry.key() > now {
                    break;
                }
                for (key, id, offset) in entry.remove() {
                    let stored = self.sides[side].store.entry(id);
                    if stored.offset() != offset {
                        continue; // gone already (retracted), its entry perhaps reused
                    }
                    if stored.expires <= now {
                        self.sides[side].store.remove_entry(&key, id, offset);
                    } else {
                        // Written again since: due at its new expiry. One record per row,
                        // however often its TTL restarts.
                        self.expiry[side].entry(stored.expires).or_default().push((key, id, offset));
                    }
                }
            }
        }
    }

    /// Decodes pairs of side rows into an output batch (`None` = NULLs).
    fn build(&self, rows: &[Pair<'_>]) -> TaskResult<RecordBatch> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for (s, side) in self.sides.iter().enumerate() {
            let present: Vec<&[u8]> = rows.iter().filter_map(|r| if s == 0 { r.0 } else { r.1 }).collect();
            let parser = side.rows.parser();
            let decoded = side.rows.convert_rows(present.iter().map(|b| parser.parse(b)))?;
            let mut next = 0u32;
            let indices: UInt32Array = rows
                .iter()
                .map(|r| {
                    let some = if s == 0 { r.0.is_some() } else { r.1.is_some() };
                    some.then(|| {
                        next += 1;
                        next - 1
                    })
                })
                .collect();
            for c in decoded {
                columns.push(take(c.as_ref(), &indices, None)?);
            }
        }
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

impl Operator for Join {
    fn checkpointable(&self) -> Result<(), String> {
        Ok(())
    }

    fn keeps_keyed_state(&self) -> bool {
        true
    }

    fn track_changes(&mut self) {
        for side in &mut self.sides {
            side.store.track_changes(self.max_parallelism);
        }
    }

    fn snapshot(&mut self, ctx: &mut SnapshotContext<'_>) -> TaskResult<()> {
        ctx.operator_state = Some(serde_json::json!({ "watermark": self.watermark }));
        if !ctx.writes_keyed_state() {
            return Ok(());
        }
        let checkpoint = ctx.checkpoint;
        for (side, (rows, patches)) in self.sides.iter_mut().zip(SIDE_STATE.into_iter().zip(PATCH_STATE)) {
            side.store.snapshot(checkpoint, rows, patches, ctx)?;
        }
        Ok(())
    }

    fn restore(&mut self, mut state: RestoredState) -> TaskResult<()> {
        let watermarks = state.operator_states.iter().filter_map(|s| s.get("watermark")?.as_i64());
        if let Some(w) = watermarks.min() {
            self.watermark = w;
        }
        // Rows expire by processing time under a state TTL, by the watermark otherwise.
        let passed = if self.has_ttl() { self.clock.now_millis() } else { self.watermark };
        for side in 0..2 {
            let rows = state.keyed.remove(&SIDE_STATE[side]).unwrap_or_default();
            let patches = state.keyed.remove(&PATCH_STATE[side]).unwrap_or_default();
            let (windows, expiry) = (&mut self.windows, &mut self.expiry[side]);
            self.sides[side].store.restore(rows, patches, passed, |_, row| {
                if row.pushed.new_key && row.window_end != NO_TIME {
                    windows.entry(row.window_end).or_default().push((side, row.key.into()));
                }
                if row.expires != NO_TIME {
                    expiry.entry(row.expires).or_default().push((row.key.into(), row.pushed.entry, row.pushed.offset));
                }
            })?;
        }
        Ok(())
    }

    fn process(&mut self, input: usize, batch: ChangeBatch, out: &mut Output) -> TaskResult<()> {
        if input > 1 {
            return Err(TaskError::Unsupported("a join has two inputs".into()));
        }
        let (s, o) = (input, 1 - input);
        // Expired rows go before the batch is joined: they never match.
        let now = self.has_ttl().then(|| self.clock.now_millis());
        if let Some(now) = now {
            self.expire_idle_rows(now);
        }
        let key_columns: Vec<ArrayRef> = self.sides[s].keys.iter().map(|k| batch.data.column(*k).clone()).collect();
        // A join without an equality key (a cross join, or a condition without `=` between
        // the sides) matches every row against every row of the other side: all rows share the
        // empty key. Both inputs reach its single subtask through a global exchange.
        let keys = if key_columns.is_empty() { None } else { Some(self.key_rows.convert_columns(&key_columns)?) };
        let key_of = |r: usize| -> &[u8] { keys.as_ref().map_or(&[], |k| k.row(r).data()) };
        // Rows without a key never match; in a window join, neither do rows of a closed window.
        let ends = match self.window_end {
            Some(cols) => Some(timestamp_millis(batch.data.column(cols[s]))?),
            None => None,
        };
        let mut has_null_key: Vec<bool> =
            (0..batch.num_rows()).map(|r| key_columns.iter().any(|c| c.is_null(r))).collect();
        let times = match self.interval {
            Some(b) => Some(timestamp_millis(batch.data.column(if s == 0 { b.left_time } else { b.right_time }))?),
            None => None,
        };
        let (interval_lower, interval_upper) = self.interval.map_or((0, 0), |b| (b.lower, b.upper));
        if let Some(times) = &times {
            // Rows without event time never satisfy the time bounds.
            for (r, skip) in has_null_key.iter_mut().enumerate() {
                *skip |= times.is_null(r);
            }
        }
        if let Some(ends) = &ends {
            for (r, skip) in has_null_key.iter_mut().enumerate() {
                if !*skip && ends.value(r) - 1 <= self.watermark {
                    *skip = true;
                    self.late += 1;
                }
            }
        }
        let data_columns: Vec<ArrayRef> = batch.data.columns()[..self.sides[s].width].to_vec();
        let rows = self.sides[s].rows.convert_columns(&data_columns)?;

        // The other side's rows under each row's key, read once: (entry, where its bytes are).
        let mut candidate_bytes: Vec<u8> = Vec::new();
        let mut candidates: Vec<Vec<(u32, usize, usize)>> = Vec::with_capacity(batch.num_rows());
        for (r, null_key) in has_null_key.iter().enumerate() {
            let mut found = Vec::new();
            if !*null_key {
                for id in self.sides[o].store.entries_of(key_of(r)) {
                    let (start, len) = self.sides[o].store.read(id, &mut candidate_bytes)?;
                    found.push((id, start, len));
                }
            }
            candidates.push(found);
        }
        // Which candidate pairs satisfy the non-equi condition, evaluated for the whole batch.
        let mut pair_ok: Vec<Vec<bool>> = Vec::new();
        if let Some(filter) = &self.filter {
            let mut pairs: Vec<Pair<'_>> = Vec::new();
            for (r, found) in candidates.iter().enumerate() {
                for (_, start, len) in found {
                    let mine = Some(rows.row(r).data());
                    let other = Some(&candidate_bytes[*start..start + len]);
                    pairs.push(if s == 0 { (mine, other) } else { (other, mine) });
                }
            }
            let mask = if pairs.is_empty() {
                BooleanArray::from(Vec::<bool>::new())
            } else {
                let joined = self.build(&pairs)?;
                let m = filter.evaluate(&joined)?.into_array(joined.num_rows())?;
                m.as_any()
                    .downcast_ref::<BooleanArray>()
                    .cloned()
                    .ok_or_else(|| TaskError::Unsupported("a join condition must evaluate to BOOLEAN".into()))?
            };
            let mut next = 0;
            for found in &candidates {
                pair_ok.push((next..next + found.len()).map(|i| mask.is_valid(i) && mask.value(i)).collect());
                next += found.len();
            }
        }

        // Output rows: kind, this side's row and the other side's.
        let mut pending: Vec<(RowKind, Source, Source)> = Vec::new();
        for (r, null_key) in has_null_key.iter().enumerate() {
            let accumulate = batch.kind(r).is_accumulate();
            let kind = if accumulate { RowKind::Insert } else { RowKind::Delete };
            if *null_key {
                if self.sides[s].preserved {
                    pending.push((kind, Source::Batch(r), Source::Null));
                }
                continue;
            }
            let row: &[u8] = rows.row(r).data();
            let key: &[u8] = key_of(r);
            let [a, b] = &mut self.sides;
            let (mine_side, other_side) = if s == 0 { (a, b) } else { (b, a) };
            let mut matched = 0i64;
            for (i, (id, start, len)) in candidates[r].iter().enumerate() {
                if let Some(ok) = pair_ok.get(r)
                    && !ok[i]
                {
                    continue;
                }
                let other = Source::Copied(*start, *len);
                let e = other_side.store.entry(*id);
                let count = e.count.max(0) as usize;
                matched += count as i64;
                if other_side.preserved {
                    // The other row's NULL-padded result goes away with its first match and
                    // comes back with its last.
                    let before = e.matches;
                    let after = before + if accumulate { 1 } else { -1 };
                    other_side.store.set_matches(*id, after);
                    // Flink writes the new count of associations: the row's TTL starts again.
                    // (Its expiry record is moved when it comes due.)
                    if let (Some(ttl), Some(now)) = (self.ttl[o], now) {
                        other_side.store.refresh_expires(*id, now.saturating_add(ttl));
                    }
                    if before == 0 && after > 0 {
                        pending.extend(std::iter::repeat_n((RowKind::Delete, Source::Null, other), count));
                    }
                    if !accumulate {
                        pending.extend(std::iter::repeat_n((kind, Source::Batch(r), other), count));
                        if before > 0 && after == 0 {
                            pending.extend(std::iter::repeat_n((RowKind::Insert, Source::Null, other), count));
                        }
                        continue;
                    }
                }
                pending.extend(std::iter::repeat_n((kind, Source::Batch(r), other), count));
            }
            if matched == 0 && mine_side.preserved {
                pending.push((kind, Source::Batch(r), Source::Null));
            }
            if self.ended[1 - s] && !mine_side.preserved {
                // Nothing will come to match this row (or a stored one it retracts): keep
                // nothing. A batch job reading its build side first joins this way.
                continue;
            }
            if accumulate {
                // An interval join keeps a row only while rows of the other side can still
                // arrive in time to match it.
                let expires = times.as_ref().map(|t| match s {
                    0 => t.value(r).saturating_sub(interval_lower),
                    _ => t.value(r).saturating_add(interval_upper),
                });
                if expires.is_some_and(|at| at <= self.watermark) {
                    continue;
                }
                // A regular join with a state TTL keeps the row until the TTL has passed.
                let expires = expires.or(now.zip(self.ttl[s]).map(|(now, ttl)| now.saturating_add(ttl)));
                let pushed = mine_side.store.push(key, row, matched)?;
                if pushed.new_key
                    && let Some(ends) = &ends
                {
                    self.windows.entry(ends.value(r)).or_default().push((s, key.into()));
                    mine_side.store.set_tag(pushed.key, ends.value(r));
                }
                if let Some(at) = expires {
                    self.expiry[s].entry(at).or_default().push((key.into(), pushed.entry, pushed.offset));
                    mine_side.store.set_expires(pushed.entry, at);
                }
            } else {
                mine_side.store.retract(key, row)?;
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        let resolve = |src: Source| -> SideRow<'_> {
            match src {
                Source::Batch(r) => Some(rows.row(r).data()),
                Source::Copied(start, len) => Some(&candidate_bytes[start..start + len]),
                Source::Null => None,
            }
        };
        let refs: Vec<Pair<'_>> = pending
            .iter()
            .map(
                |(_, mine, other)| {
                    if s == 0 { (resolve(*mine), resolve(*other)) } else { (resolve(*other), resolve(*mine)) }
                },
            )
            .collect();
        let data = self.build(&refs)?;
        let kinds = pending.iter().map(|(k, _, _)| *k).collect::<Vec<_>>();
        out.batch(ChangeBatch::with_kinds(data, kinds));
        Ok(())
    }

    fn end_input(&mut self, input: usize) {
        self.ended[input] = true;
    }

    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Output) -> TaskResult<()> {
        self.watermark = self.watermark.max(watermark);
        while let Some(entry) = self.windows.first_entry() {
            if *entry.key() - 1 > watermark {
                break;
            }
            for (side, key) in entry.remove() {
                self.sides[side].store.remove_key(&key);
            }
        }
        // An interval join's rows expire by the watermark (a state TTL's by processing time).
        for side in (0..2).filter(|_| self.interval.is_some()) {
            while let Some(entry) = self.expiry[side].first_entry() {
                if *entry.key() > watermark {
                    break;
                }
                for (key, id, offset) in entry.remove() {
                    self.sides[side].store.remove_entry(&key, id, offset);
                }
            }
        }
        out.watermark(watermark);
        Ok(())
    }

    fn metrics(&self) -> OperatorMetrics {
        OperatorMetrics { late_records_dropped: self.late }
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, TimestampMillisecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    use super::*;
    use crate::operators::Emitted;

    fn side_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]))
    }

    fn batch(id: i64, ts: i64) -> ChangeBatch {
        ChangeBatch::inserts(
            RecordBatch::try_new(
                side_schema(),
                vec![Arc::new(Int64Array::from(vec![id])), Arc::new(TimestampMillisecondArray::from(vec![ts]))],
            )
            .unwrap(),
        )
    }

    /// `right.ts BETWEEN left.ts AND left.ts + 10 s` on equal ids.
    fn interval_join() -> Join {
        let output = Arc::new(Schema::new([side_schema().fields().to_vec(), side_schema().fields().to_vec()].concat()));
        let bounds = IntervalBounds { left_time: 1, right_time: 1, lower: -10_000, upper: 0 };
        Join::try_new(
            JoinKind::Inner,
            side_schema(),
            side_schema(),
            vec![0],
            vec![0],
            [2, 2],
            None,
            None,
            Some(bounds),
            output,
        )
        .unwrap()
    }

    /// A join without equality keys (`CROSS JOIN`, `ON TRUE`, `ON a.x > b.y`) of `kind`.
    fn keyless_join(kind: JoinKind, filter: Option<PhysExpr>) -> Join {
        let output = Arc::new(Schema::new([side_schema().fields().to_vec(), side_schema().fields().to_vec()].concat()));
        Join::try_new(kind, side_schema(), side_schema(), vec![], vec![], [2, 2], filter, None, None, output).unwrap()
    }

    /// The emitted rows as (kind, left id, right id), NULL ids as `None`.
    fn changes(out: &Output) -> Vec<(RowKind, Option<i64>, Option<i64>)> {
        let mut changes = Vec::new();
        for item in &out.items {
            let Emitted::Batch(b) = item else { continue };
            let ids = |c: usize| b.data.column(c).as_any().downcast_ref::<Int64Array>().unwrap().clone();
            let (left, right) = (ids(0), ids(2));
            for r in 0..b.num_rows() {
                let id = |a: &Int64Array| a.is_valid(r).then(|| a.value(r));
                changes.push((b.kind(r), id(&left), id(&right)));
            }
        }
        changes
    }

    #[test]
    fn join_without_keys_matches_every_pair() {
        let mut join = keyless_join(JoinKind::Inner, None);
        let mut out = Output::default();
        join.process(0, batch(1, 0), &mut out).unwrap();
        join.process(0, batch(2, 0), &mut out).unwrap();
        join.process(1, batch(10, 0), &mut out).unwrap();
        join.process(1, batch(20, 0), &mut out).unwrap();
        let mut pairs: Vec<_> = changes(&out).into_iter().map(|(_, l, r)| (l.unwrap(), r.unwrap())).collect();
        pairs.sort();
        assert_eq!(pairs, vec![(1, 10), (1, 20), (2, 10), (2, 20)]);
    }

    #[test]
    fn outer_join_without_keys_pads_and_retracts() {
        use datafusion_physical_expr::expressions::{BinaryExpr, Column};
        // LEFT JOIN … ON l.id > r.id
        let greater: PhysExpr = Arc::new(BinaryExpr::new(
            Arc::new(Column::new("id", 0)),
            datafusion_expr::Operator::Gt,
            Arc::new(Column::new("id", 2)),
        ));
        let mut join = keyless_join(JoinKind::Left, Some(greater));
        let mut out = Output::default();
        join.process(0, batch(5, 0), &mut out).unwrap();
        join.process(1, batch(7, 0), &mut out).unwrap();
        join.process(1, batch(3, 0), &mut out).unwrap();
        assert_eq!(
            changes(&out),
            vec![
                (RowKind::Insert, Some(5), None),
                (RowKind::Delete, Some(5), None),
                (RowKind::Insert, Some(5), Some(3)),
            ]
        );
    }

    fn rows(out: &Output) -> usize {
        out.items.iter().map(|e| if let Emitted::Batch(b) = e { b.num_rows() } else { 0 }).sum()
    }

    #[test]
    fn interval_join_matches_within_bounds() {
        let mut join = interval_join();
        let mut out = Output::default();
        join.process(0, batch(1, 0), &mut out).unwrap();
        join.on_watermark(4_000, &mut out).unwrap();
        join.process(1, batch(1, 5_000), &mut out).unwrap();
        assert_eq!(rows(&out), 1);
    }

    #[test]
    fn interval_join_forgets_rows_the_watermark_has_passed() {
        let mut join = interval_join();
        let mut out = Output::default();
        join.process(0, batch(1, 0), &mut out).unwrap();
        // No right row at or after 10 s can arrive in time any more: the left row is dropped.
        join.on_watermark(29_000, &mut out).unwrap();
        assert!(join.expiry[0].is_empty(), "the left row's expiry has run");
        join.process(1, batch(1, 5_000), &mut out).unwrap();
        assert_eq!(rows(&out), 0);
        // And a late right row is not kept either.
        assert_eq!(join.expiry[1].len(), 0);
    }

    /// A regular join of `kind` on equal ids whose left side keeps a row 4 s after its last
    /// write and right side 1 s, as Flink's `StreamingJoinOperatorTest` with different state
    /// retention times; processing time starts at 1 ms.
    fn join_with_ttl(kind: JoinKind) -> (Join, Arc<weir_dataflow::clock::ManualClock>) {
        let output = Arc::new(Schema::new([side_schema().fields().to_vec(), side_schema().fields().to_vec()].concat()));
        let clock = weir_dataflow::clock::ManualClock::new(1);
        let join =
            Join::try_new(kind, side_schema(), side_schema(), vec![0], vec![0], [2, 2], None, None, None, output)
                .unwrap()
                .with_state_ttl(
                    [Some(Duration::from_millis(4_000)), Some(Duration::from_millis(1_000))],
                    clock.clone(),
                );
        (join, clock)
    }

    /// A row (id, payload) on `side`, inserted or deleted; what the join emits for it, as
    /// (kind, left (id, payload), right (id, payload)).
    fn step(join: &mut Join, side: usize, kind: RowKind, id: i64, payload: i64) -> Vec<String> {
        let mut out = Output::default();
        let row = batch(id, payload);
        join.process(side, ChangeBatch::with_kinds(row.data, vec![kind]), &mut out).unwrap();
        let mut emitted = Vec::new();
        for item in &out.items {
            let Emitted::Batch(b) = item else { continue };
            let column = |c: usize| b.data.column(c).clone();
            let (ids, payloads) = ([column(0), column(2)], [column(1), column(3)]);
            for r in 0..b.num_rows() {
                let side_text = |s: usize| -> String {
                    if ids[s].is_null(r) {
                        return "null".into();
                    }
                    let id = ids[s].as_any().downcast_ref::<Int64Array>().unwrap().value(r);
                    let payload = payloads[s].as_any().downcast_ref::<TimestampMillisecondArray>().unwrap().value(r);
                    format!("{id}/{payload}")
                };
                emitted.push(format!("{} {} {}", b.kind(r).short_string(), side_text(0), side_text(1)));
            }
        }
        // Retractions before insertions, as emitted; rows of one kind in any order.
        emitted.sort_by_key(|line| (!line.starts_with('-'), line.clone()));
        emitted
    }

    #[test]
    fn inner_join_forgets_rows_by_their_sides_state_ttl_as_flink_does() {
        let (mut join, clock) = join_with_ttl(JoinKind::Inner);
        let (i, d) = (RowKind::Insert, RowKind::Delete);
        assert!(step(&mut join, 0, i, 1, 100).is_empty());
        assert!(step(&mut join, 0, i, 2, 100).is_empty());
        assert_eq!(step(&mut join, 1, i, 2, 900), ["+I 2/100 2/900"]);
        clock.set(3_000);
        // The right row expired at 1001.
        assert!(step(&mut join, 0, i, 2, 200).is_empty());
        assert_eq!(step(&mut join, 1, i, 2, 901), ["+I 2/100 2/901", "+I 2/200 2/901"]);
        clock.set(4_001);
        // Left rows written at 1 ms expired at 4001; the retracted right row expired at 4000,
        // and its retraction still joins the live left row.
        assert!(step(&mut join, 1, i, 1, 902).is_empty());
        assert_eq!(step(&mut join, 1, d, 2, 901), ["-D 2/200 2/901"]);
        clock.set(7_000);
        assert!(step(&mut join, 1, i, 2, 903).is_empty());
        // Nothing is kept for keys nobody wrote for longer than the TTL.
        clock.set(8_000);
        assert!(step(&mut join, 0, i, 9, 0).is_empty());
        let key = join.key_rows.convert_columns(&[Arc::new(Int64Array::from(vec![2])) as ArrayRef]).unwrap();
        assert!(join.sides[0].store.entries_of(key.row(0).data()).is_empty());
        assert!(join.sides[1].store.entries_of(key.row(0).data()).is_empty());
    }

    #[test]
    fn left_join_keeps_a_matched_row_alive_as_flink_does() {
        let (mut join, clock) = join_with_ttl(JoinKind::Left);
        let (i, d) = (RowKind::Insert, RowKind::Delete);
        assert_eq!(step(&mut join, 0, i, 1, 100), ["+I 1/100 null"]);
        assert_eq!(step(&mut join, 0, i, 2, 100), ["+I 2/100 null"]);
        assert_eq!(step(&mut join, 1, i, 2, 900), ["-D 2/100 null", "+I 2/100 2/900"]);
        clock.set(3_000);
        // A new match writes the left row's match count: its TTL starts again (until 7000).
        assert_eq!(step(&mut join, 1, i, 2, 901), ["+I 2/100 2/901"]);
        clock.set(4_001);
        assert!(step(&mut join, 1, i, 1, 902).is_empty());
        // The retraction writes the match count too: the left row now lives until 8001.
        assert_eq!(step(&mut join, 1, d, 2, 901), ["-D 2/100 2/901"]);
        clock.set(8_000);
        assert_eq!(step(&mut join, 1, i, 2, 903), ["+I 2/100 2/903"]);
        clock.set(12_001);
        assert!(step(&mut join, 1, i, 2, 904).is_empty());
    }

    #[test]
    fn a_row_matched_again_and_again_keeps_one_expiry_record() {
        let (mut join, clock) = join_with_ttl(JoinKind::Left);
        step(&mut join, 0, RowKind::Insert, 2, 100);
        for t in 0..100 {
            clock.set(10 + t * 100);
            assert_eq!(step(&mut join, 1, RowKind::Insert, 2, 900 + t).len(), if t == 0 { 2 } else { 1 });
        }
        let records: usize = join.expiry[0].values().map(Vec::len).sum();
        assert_eq!(records, 1, "one expiry record for the one left row");
        // Each match restarted its TTL: alive until 4 s after the last one.
        clock.set(9_910 + 3_999);
        assert_eq!(step(&mut join, 1, RowKind::Insert, 2, 5_000), ["+I 2/100 2/5000"]);
    }
}
