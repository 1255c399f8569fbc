//! Group aggregation without a window: an updating result per key. After each input batch the
//! operator emits, for every key the batch touched, what changed: `+I` for a new key, `-U`/`+U`
//! for a changed result, `-D` when a changelog input retracted a key's last row. Emitting per
//! batch rather than per row gives the same final result as Flink with fewer updates.
//!
//! With a state TTL (`table.exec.state.ttl`), a key whose state has not been written for the
//! TTL, by processing time, is forgotten without a word, as in Flink: its next row starts it
//! afresh (`+I`), a retraction for a key without state is ignored, and an unchanged result is
//! sent again (`-U`/`+U`) so that state downstream stays alive.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, BooleanArray, Int8Array, RecordBatch, UInt32Array};
use arrow::compute::{concat, filter, filter_record_batch, take};
use arrow::datatypes::SchemaRef;
use arrow_row::{RowConverter, SortField};
use weir_dataflow::clock::Clock;
use weir_dataflow::event::{ChangeBatch, RowKind};
use weir_dataflow::plan::AggregateCall;

use weir_state_store::StateId;

use super::aggregate::Aggregates;
use super::codec;
use super::keys::{DirtyGroups, GroupKeys, RowKeyGroups};
use super::{Operator, Output};
use crate::checkpoint::{RestoredState, SnapshotContext};
use crate::error::TaskResult;

/// Per key: the row count, the result last emitted, then the aggregates' state.
const GROUPS: StateId = StateId(0);

pub struct GroupAggregate {
    keys: Vec<usize>,
    groups: GroupKeys,
    aggs: Aggregates,
    /// Rows accumulated minus rows retracted, per group.
    counts: Vec<i64>,
    /// The aggregate values last emitted per group, row-encoded.
    emitted: Vec<Option<Box<[u8]>>>,
    values: RowConverter,
    schema: SchemaRef,
    key_groups: RowKeyGroups,
    group_key_group: Vec<u16>,
    /// With checkpoints: what changed since the last one (tracked only then).
    dirty: Option<DirtyGroups>,
    /// Batch mode: emit each group's final row at the end of input, nothing before.
    pub final_only: bool,
    ttl: Option<GroupTtl>,
}

/// A state TTL's bookkeeping: when each group was last written, and the groups by when they
/// may expire — one entry per group, looked at again when due (a group written since is put
/// back for its new time), so the queue holds as many entries as there are groups.
struct GroupTtl {
    millis: i64,
    clock: Arc<dyn Clock>,
    written: Vec<i64>,
    scheduled: Vec<bool>,
    due: BinaryHeap<Reverse<(i64, usize)>>,
}

/// `GroupTtl::written` of a group that does not exist.
const NEVER_WRITTEN: i64 = i64::MIN;

impl GroupTtl {
    /// Group `g` was written at `now`.
    fn written(&mut self, g: usize, now: i64) {
        if g >= self.written.len() {
            self.written.resize(g + 1, NEVER_WRITTEN);
            self.scheduled.resize(g + 1, false);
        }
        self.written[g] = now;
        if !self.scheduled[g] {
            self.scheduled[g] = true;
            self.due.push(Reverse((now.saturating_add(self.millis), g)));
        }
    }

    fn forget(&mut self, g: usize) {
        if let Some(written) = self.written.get_mut(g) {
            *written = NEVER_WRITTEN;
        }
    }

    /// The groups whose TTL ran out by `now`.
    fn expired(&mut self, now: i64) -> Vec<usize> {
        let mut expired = Vec::new();
        while let Some(&Reverse((at, g))) = self.due.peek() {
            if at > now {
                break;
            }
            self.due.pop();
            self.scheduled[g] = false;
            let written = self.written[g];
            if written == NEVER_WRITTEN {
                continue;
            }
            let expires = written.saturating_add(self.millis);
            if expires > now {
                self.scheduled[g] = true;
                self.due.push(Reverse((expires, g)));
            } else {
                self.written[g] = NEVER_WRITTEN;
                expired.push(g);
            }
        }
        expired
    }
}

/// Rows per batch when a final-only aggregation emits its result.
const FINAL_BATCH_ROWS: usize = 8192;

impl GroupAggregate {
    pub fn try_new(
        input: SchemaRef,
        keys: Vec<usize>,
        calls: Vec<AggregateCall>,
        schema: SchemaRef,
        retract: bool,
        key_groups: RowKeyGroups,
    ) -> TaskResult<Self> {
        let key_count = keys.len();
        let value_fields =
            schema.fields().iter().skip(key_count).map(|f| SortField::new(f.data_type().clone())).collect();
        Ok(GroupAggregate {
            groups: GroupKeys::try_new(&input, &keys)?,
            keys,
            aggs: Aggregates::new(calls, retract)?,
            counts: Vec::new(),
            emitted: Vec::new(),
            values: RowConverter::new(value_fields)?,
            schema,
            key_groups,
            group_key_group: Vec::new(),
            dirty: None,
            final_only: false,
            ttl: None,
        })
    }

    /// Forgets a group once it has not been written for `state_ttl` by `clock`.
    pub fn with_state_ttl(mut self, state_ttl: Option<Duration>, clock: Arc<dyn Clock>) -> Self {
        self.ttl = state_ttl.map(|ttl| GroupTtl {
            millis: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
            clock,
            written: Vec::new(),
            scheduled: Vec::new(),
            due: BinaryHeap::new(),
        });
        self
    }

    /// Forgets group `g` and its state (a checkpoint deletes it).
    fn forget(&mut self, g: usize) {
        if let Some(dirty) = &mut self.dirty {
            dirty.remove(g, self.group_key_group[g], self.groups.key(g));
        }
        if let Some(ttl) = &mut self.ttl {
            ttl.forget(g);
        }
        self.counts[g] = 0;
        self.emitted[g] = None;
        self.aggs.reset(g);
        self.groups.remove(g);
    }
}

/// What [`without_stateless_retractions`] kept: the batch, its rows' groups (the first kept row
/// of a group this batch made is marked new), and the groups made for dropped rows only.
type Kept = (ChangeBatch, Vec<(usize, bool)>, Vec<usize>);

/// `batch` without the retractions of groups that have no state (`fresh`: created by this
/// batch, until their first accumulating row): Flink ignores a retraction for a key it holds
/// nothing for (one whose state expired). Answers `None` when every row stays.
fn without_stateless_retractions(batch: &ChangeBatch, assigned: &[(usize, bool)]) -> TaskResult<Option<Kept>> {
    // Only a group this batch made can be without state: most batches have none.
    if batch.kinds.is_none() || !assigned.iter().any(|(_, new)| *new) {
        return Ok(None);
    }
    let mut fresh = hashbrown::HashSet::new();
    let keep: Vec<bool> = assigned
        .iter()
        .enumerate()
        .map(|(r, (id, new))| {
            if *new {
                fresh.insert(*id);
            }
            if !fresh.contains(id) {
                return true;
            }
            let accumulate = batch.kind(r).is_accumulate();
            if accumulate {
                fresh.remove(id);
            }
            accumulate
        })
        .collect();
    if keep.iter().all(|k| *k) {
        return Ok(None);
    }
    let mask = BooleanArray::from(keep.clone());
    let data = filter_record_batch(&batch.data, &mask)?;
    let kinds = match &batch.kinds {
        Some(kinds) => {
            let kept = filter(kinds.as_ref(), &mask)?;
            kept.as_any().downcast_ref::<Int8Array>().cloned().map(Arc::new)
        }
        None => None,
    };
    // A group this batch made is new at its first kept row; one with no kept row is unmade.
    let mut made: hashbrown::HashSet<usize> = assigned.iter().filter(|(_, new)| *new).map(|(id, _)| *id).collect();
    let kept = assigned.iter().zip(&keep).filter(|(_, k)| **k).map(|((id, _), _)| (*id, made.remove(id))).collect();
    Ok(Some((ChangeBatch { data, kinds }, kept, made.into_iter().collect())))
}

impl Operator for GroupAggregate {
    fn checkpointable(&self) -> Result<(), String> {
        Ok(())
    }

    fn keeps_keyed_state(&self) -> bool {
        true
    }

    fn track_changes(&mut self) {
        self.dirty = Some(DirtyGroups::default());
    }

    fn snapshot(&mut self, ctx: &mut SnapshotContext<'_>) -> TaskResult<()> {
        if !ctx.writes_keyed_state() {
            return Ok(());
        }
        let (counts, emitted, aggs, ttl) = (&self.counts, &self.emitted, &self.aggs, &self.ttl);
        let Some(dirty) = self.dirty.as_mut() else { return Ok(()) };
        dirty.write_changes(ctx, GROUPS, &self.group_key_group, &self.groups, |g, value| {
            codec::put_i64(value, counts[g]);
            match &emitted[g] {
                None => codec::put_u8(value, 0),
                Some(row) => {
                    codec::put_u8(value, 1);
                    codec::put_bytes(value, row);
                }
            }
            aggs.encode_group(g, value)?;
            // With a state TTL, when the group was last written (a job without one ignores it).
            if let Some(ttl) = ttl {
                codec::put_i64(value, ttl.written.get(g).copied().unwrap_or(NEVER_WRITTEN));
            }
            Ok(())
        })
    }

    fn restore(&mut self, mut state: RestoredState) -> TaskResult<()> {
        for (key_group, key, value) in state.keyed.remove(&GROUPS).unwrap_or_default() {
            let (id, _) = self.groups.intern_bytes(&key);
            if id >= self.counts.len() {
                self.counts.resize(id + 1, 0);
                self.emitted.resize(id + 1, None);
                self.group_key_group.resize(id + 1, 0);
            }
            let mut r = codec::Reader::new(&value);
            self.counts[id] = r.i64()?;
            self.emitted[id] = if r.u8()? == 0 { None } else { Some(r.bytes()?.into()) };
            self.aggs.decode_group(id, &mut r)?;
            let written = if r.is_empty() { None } else { Some(r.i64()?) };
            r.finish()?;
            // A group stored without a time (by a job without a TTL) is as if written now.
            if let Some(ttl) = &mut self.ttl {
                let now = ttl.clock.now_millis();
                ttl.written(id, written.filter(|t| *t != NEVER_WRITTEN).unwrap_or(now));
            }
            self.group_key_group[id] = key_group as u16;
            if let Some(dirty) = &mut self.dirty {
                dirty.restored(id);
            }
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Output) -> TaskResult<()> {
        if !self.final_only {
            return Ok(());
        }
        let live: Vec<usize> = (0..self.counts.len()).filter(|g| self.counts[*g] > 0).collect();
        for groups in live.chunks(FINAL_BATCH_ROWS) {
            let mut columns = self.groups.key_columns(groups)?;
            columns.extend(self.aggs.evaluate(groups)?);
            out.batch(ChangeBatch::inserts(RecordBatch::try_new(self.schema.clone(), columns)?));
        }
        Ok(())
    }

    fn process(&mut self, _input: usize, batch: ChangeBatch, out: &mut Output) -> TaskResult<()> {
        // Groups whose TTL ran out are gone before the batch: its rows start them afresh.
        let now = self.ttl.as_ref().map(|ttl| ttl.clock.now_millis());
        if let (Some(ttl), Some(now)) = (&mut self.ttl, now) {
            for g in ttl.expired(now) {
                self.forget(g);
            }
        }
        let key_columns: Vec<ArrayRef> = self.keys.iter().map(|k| batch.data.column(*k).clone()).collect();
        let assigned = self.groups.assign(&key_columns, batch.num_rows())?;
        let (batch, assigned, key_columns) = match without_stateless_retractions(&batch, &assigned)? {
            None => (batch, assigned, key_columns),
            Some((kept, assigned, unmade)) => {
                for g in unmade {
                    self.groups.remove(g);
                }
                let key_columns = self.keys.iter().map(|k| kept.data.column(*k).clone()).collect();
                (kept, assigned, key_columns)
            }
        };
        let key_groups = if self.dirty.is_some() && assigned.iter().any(|(_, new)| *new) {
            self.key_groups.of(&batch.data)?
        } else {
            vec![]
        };
        let mut ids = Vec::with_capacity(batch.num_rows());
        let mut touched = Vec::new();
        let mut seen = hashbrown::HashSet::new();
        for (r, (id, new)) in assigned.into_iter().enumerate() {
            if id >= self.counts.len() {
                self.counts.resize(id + 1, 0);
                self.emitted.resize(id + 1, None);
                self.group_key_group.resize(id + 1, 0);
            }
            if let Some(dirty) = &mut self.dirty {
                if new {
                    self.group_key_group[id] = key_groups[r];
                }
                dirty.touch(id);
            }
            if seen.insert(id) {
                touched.push(id);
            }
            self.counts[id] += if batch.kind(r).is_accumulate() { 1 } else { -1 };
            ids.push(id);
            if let (Some(ttl), Some(now)) = (&mut self.ttl, now) {
                ttl.written(id, now);
            }
        }
        self.aggs.ensure(self.groups.capacity());
        self.aggs.update(&batch, &ids)?;

        if self.final_only {
            for g in touched {
                if self.counts[g] > 0 {
                    continue;
                }
                self.counts[g] = 0;
                self.aggs.reset(g);
                self.groups.remove(g);
            }
            return Ok(());
        }

        // What to emit: retractions of old results first, then the new results.
        let live: Vec<usize> = touched.iter().copied().filter(|g| self.counts[*g] > 0).collect();
        let new_values = self.aggs.evaluate(&live)?;
        let new_rows = self.values.convert_columns(&new_values)?;
        // Without aggregates (`SELECT DISTINCT`, `GROUP BY` alone) there are no value columns,
        // and converting none gives no rows at all: every group's value is then empty.
        let new_row = |i: usize| -> &[u8] { if new_values.is_empty() { &[] } else { new_rows.row(i).data() } };
        let mut before: Vec<(usize, RowKind)> = Vec::new();
        let mut after: Vec<(usize, RowKind)> = Vec::new();
        let mut before_bytes: Vec<Box<[u8]>> = Vec::new();
        // With a state TTL an unchanged result is sent again, as Flink does, so that state
        // downstream stays alive too.
        let resend_unchanged = self.ttl.is_some();
        for (i, g) in live.iter().enumerate() {
            let new: &[u8] = new_row(i);
            match &self.emitted[*g] {
                None => after.push((i, RowKind::Insert)),
                Some(prev) if prev.as_ref() == new && !resend_unchanged => {}
                Some(prev) => {
                    before.push((*g, RowKind::UpdateBefore));
                    before_bytes.push(prev.clone());
                    after.push((i, RowKind::UpdateAfter));
                }
            }
        }
        for g in touched.iter().filter(|g| self.counts[**g] <= 0) {
            if let Some(prev) = self.emitted[*g].take() {
                before.push((*g, RowKind::Delete));
                before_bytes.push(prev);
            }
        }
        // Remember what is now emitted, and forget emptied groups.
        for &(i, _) in &after {
            self.emitted[live[i]] = Some(new_row(i).into());
        }
        let emptied: Vec<usize> = touched.iter().copied().filter(|g| self.counts[*g] <= 0).collect();
        for g in emptied {
            self.forget(g);
        }
        if before.is_empty() && after.is_empty() {
            return Ok(());
        }

        let parser = self.values.parser();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        // Every touched group has a row in this batch: take its key from there (deleted groups
        // are already gone from the key table).
        let last_row: hashbrown::HashMap<usize, u32> = ids.iter().enumerate().map(|(r, g)| (*g, r as u32)).collect();
        let key_rows = UInt32Array::from_iter_values(
            before.iter().map(|(g, _)| last_row[g]).chain(after.iter().map(|(i, _)| last_row[&live[*i]])),
        );
        for k in &key_columns {
            columns.push(take(k.as_ref(), &key_rows, None)?);
        }
        let before_values = self.values.convert_rows(before_bytes.iter().map(|b| parser.parse(b)))?;
        let after_idx = UInt32Array::from_iter_values(after.iter().map(|(i, _)| *i as u32));
        for (v, new) in new_values.iter().enumerate() {
            let taken = take(new.as_ref(), &after_idx, None)?;
            columns.push(concat(&[before_values[v].as_ref(), taken.as_ref()])?);
        }
        let kinds = Int8Array::from_iter_values(before.iter().chain(after.iter()).map(|(_, k)| *k as i8));
        let data = RecordBatch::try_new(self.schema.clone(), columns)?;
        out.batch(ChangeBatch { data, kinds: Some(Arc::new(kinds)) });
        Ok(())
    }
}
