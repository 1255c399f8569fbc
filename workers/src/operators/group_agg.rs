//! Group aggregation without a window: an updating result per key. After each input batch the
//! operator emits, for every key the batch touched, what changed: `+I` for a new key, `-U`/`+U`
//! for a changed result, `-D` when a changelog input retracted a key's last row. Emitting per
//! batch rather than per row gives the same final result as Flink with fewer updates.
//!
//! With a state TTL (`table.exec.state.ttl`), a key whose state has not been written for the
//! TTL, by processing time, is forgotten without a word, as in Flink: its next row starts it
//! afresh (`+I`), a retraction for a key without state is ignored, and an unchanged result is
//! sent again (`-U`/`+U`) so that state downstream stays alive.
//!
//! With a memory budget ([`Operator::set_memory_budget`]) the groups in memory are a working
//! set: when their bytes pass the budget, the groups not used since the clock hand last passed
//! are written to the task's database (if they changed since it last had them) and leave memory;
//! a later row of such a group reads it back before its batch is processed. The database is the
//! one checkpoints go to, so a restore reads nothing up front: groups come back as rows ask.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, BooleanArray, Int8Array, RecordBatch, UInt32Array};
use arrow::compute::{concat, filter, filter_record_batch, take};
use arrow::datatypes::SchemaRef;
use arrow_row::{RowConverter, SortField};
use bytes::Bytes;
use weir_dataflow::clock::Clock;
use weir_dataflow::event::{ChangeBatch, RowKind};
use weir_dataflow::keygroup::stable_hash;
use weir_dataflow::plan::AggregateCall;

use weir_state_store::{StateId, StoreKey, StoreWrite};

use super::aggregate::Aggregates;
use super::codec;
use super::keys::{DirtyGroups, GroupKeys, KeyFilter, RowKeyGroups};
use super::{Operator, Output, Spill};
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
    /// Bytes of the results in `emitted`.
    emitted_bytes: usize,
    /// With a memory budget: which groups are in memory.
    spill: Option<WorkingSet>,
}

/// The groups in memory under a budget, and the clock that picks which leave.
struct WorkingSet {
    budget: usize,
    /// Per group: used since the clock hand last passed it.
    referenced: Vec<bool>,
    hand: usize,
    /// Groups may be in the database (some were written out, or a checkpoint was restored).
    may_be_stored: bool,
    /// The keys written out, so that a new key is known to be new without reading the database.
    written: KeyFilter,
    /// The database holds groups `written` does not know (a restored checkpoint's): every key
    /// not in memory must be looked for.
    unfiltered: bool,
}

/// Memory a group takes besides its key, its result and its aggregates' state: its count,
/// result pointer and allocation, key group, change flags, reference bit, and its key table
/// entry (pointer, allocation, hash, table slot).
const GROUP_BYTES: usize = 104;
/// And with a state TTL: its write time, flag and queue entry.
const GROUP_TTL_BYTES: usize = 25;
/// Eviction stops at this share of the budget, so that it runs in rounds, not every batch.
const EVICT_TO: f64 = 0.95;

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
            emitted_bytes: 0,
            spill: None,
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
        self.drop_from_memory(g);
    }

    /// Frees group `g`'s memory and id (what the database holds of it stays).
    fn drop_from_memory(&mut self, g: usize) {
        if let Some(ttl) = &mut self.ttl {
            ttl.forget(g);
        }
        self.counts[g] = 0;
        self.set_emitted(g, None);
        self.aggs.reset(g);
        self.groups.remove(g);
    }

    fn set_emitted(&mut self, g: usize, result: Option<Box<[u8]>>) {
        self.emitted_bytes += result.as_ref().map_or(0, |r| r.len());
        let old = std::mem::replace(&mut self.emitted[g], result);
        self.emitted_bytes -= old.as_ref().map_or(0, |r| r.len());
    }

    fn ensure_group(&mut self, id: usize) {
        if id >= self.counts.len() {
            self.counts.resize(id + 1, 0);
            self.emitted.resize(id + 1, None);
            self.group_key_group.resize(id + 1, 0);
        }
        if let Some(spill) = &mut self.spill
            && id >= spill.referenced.len()
        {
            spill.referenced.resize(id + 1, false);
        }
    }

    /// About how much memory the groups in memory take.
    fn resident_bytes(&self) -> usize {
        let per_group =
            GROUP_BYTES + self.aggs.bytes_per_group() + if self.ttl.is_some() { GROUP_TTL_BYTES } else { 0 };
        let filter = self.spill.as_ref().map_or(0, |s| s.written.bytes());
        self.groups.len() * per_group + self.groups.key_bytes() + self.emitted_bytes + self.aggs.heap_bytes() + filter
    }

    /// Takes a stored group (from a checkpoint or the database) into memory, unchanged since
    /// stored; answers its id. A group whose TTL ran out is forgotten at once (and its stored
    /// value deleted), as if it had expired in memory.
    fn load_group(&mut self, key_group: u16, key: &[u8], value: &[u8]) -> TaskResult<usize> {
        let (id, _) = self.groups.intern_bytes(key);
        self.ensure_group(id);
        let mut r = codec::Reader::new(value);
        self.counts[id] = r.i64()?;
        let emitted = if r.u8()? == 0 { None } else { Some(r.bytes()?.into()) };
        self.set_emitted(id, emitted);
        self.aggs.ensure(self.groups.capacity());
        self.aggs.decode_group(id, &mut r)?;
        let written = if r.is_empty() { None } else { Some(r.i64()?) };
        r.finish()?;
        self.group_key_group[id] = key_group;
        if let Some(dirty) = &mut self.dirty {
            dirty.restored(id);
        }
        if let Some(spill) = &mut self.spill {
            spill.referenced[id] = true;
        }
        // A group stored without a time (by a job without a TTL) is as if written now.
        if let Some(ttl) = &mut self.ttl {
            let now = ttl.clock.now_millis();
            let written = written.filter(|t| *t != NEVER_WRITTEN).unwrap_or(now);
            if written.saturating_add(ttl.millis) <= now {
                self.forget(id);
            } else {
                ttl.written(id, written);
            }
        }
        Ok(id)
    }
}

/// A group's stored value: its row count, the result last emitted, its aggregates' state, and
/// with a state TTL when it was last written (a job without one ignores it).
fn encode_group(
    counts: &[i64],
    emitted: &[Option<Box<[u8]>>],
    aggs: &Aggregates,
    ttl: &Option<GroupTtl>,
    g: usize,
    value: &mut Vec<u8>,
) -> TaskResult<()> {
    codec::put_i64(value, counts[g]);
    match &emitted[g] {
        None => codec::put_u8(value, 0),
        Some(row) => {
            codec::put_u8(value, 1);
            codec::put_bytes(value, row);
        }
    }
    aggs.encode_group(g, value)?;
    if let Some(ttl) = ttl {
        codec::put_i64(value, ttl.written.get(g).copied().unwrap_or(NEVER_WRITTEN));
    }
    Ok(())
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
        self.dirty.get_or_insert_with(DirtyGroups::default);
    }

    fn set_memory_budget(&mut self, bytes: usize) -> bool {
        if self.final_only {
            // Its result is every group at the end of input: all of them stay in memory.
            return false;
        }
        self.dirty.get_or_insert_with(DirtyGroups::default);
        let referenced = vec![false; self.counts.len()];
        self.spill = Some(WorkingSet {
            budget: bytes,
            referenced,
            hand: 0,
            may_be_stored: false,
            written: KeyFilter::default(),
            unfiltered: false,
        });
        true
    }

    fn spill(&mut self) -> Option<&mut dyn Spill> {
        if self.spill.is_some() { Some(self) } else { None }
    }

    fn snapshot(&mut self, ctx: &mut SnapshotContext<'_>) -> TaskResult<()> {
        if !ctx.writes_keyed_state() {
            return Ok(());
        }
        let (counts, emitted, aggs, ttl) = (&self.counts, &self.emitted, &self.aggs, &self.ttl);
        let Some(dirty) = self.dirty.as_mut() else { return Ok(()) };
        dirty.write_changes(ctx, GROUPS, &self.group_key_group, &self.groups, |g, value| {
            encode_group(counts, emitted, aggs, ttl, g, value)
        })
    }

    fn restore(&mut self, mut state: RestoredState) -> TaskResult<()> {
        for (key_group, key, value) in state.keyed.remove(&GROUPS).unwrap_or_default() {
            self.load_group(key_group as u16, &key, &value)?;
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
            self.ensure_group(id);
            if let Some(spill) = &mut self.spill {
                spill.referenced[id] = true;
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
        let emptied: Vec<usize> = touched.iter().copied().filter(|g| self.counts[*g] <= 0).collect();
        for &g in &emptied {
            if let Some(prev) = self.emitted[g].clone() {
                self.set_emitted(g, None);
                before.push((g, RowKind::Delete));
                before_bytes.push(prev);
            }
        }
        // Remember what is now emitted, and forget emptied groups.
        for &(i, _) in &after {
            self.set_emitted(live[i], Some(new_row(i).into()));
        }
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

impl Spill for GroupAggregate {
    fn wanted(&mut self, _input: usize, batch: &ChangeBatch) -> TaskResult<Vec<StoreKey>> {
        let Some(spill) = self.spill.as_ref().filter(|s| s.may_be_stored) else { return Ok(vec![]) };
        let key_columns: Vec<ArrayRef> = self.keys.iter().map(|k| batch.data.column(*k).clone()).collect();
        let rows = if key_columns.is_empty() { None } else { Some(self.groups.rows(&key_columns)?) };
        let key = |r: usize| -> &[u8] { rows.as_ref().map_or(&[], |rows| rows.row(r).data()) };
        let mut key_groups = None;
        let mut seen = hashbrown::HashSet::new();
        let mut wanted = Vec::new();
        for r in 0..batch.num_rows() {
            let key = key(r);
            if self.groups.get(key).is_some() {
                continue;
            }
            if !spill.unfiltered && !spill.written.may_contain(stable_hash(key)) {
                continue;
            }
            if !seen.insert(key) {
                continue;
            }
            let key_groups = match &key_groups {
                Some(k) => k,
                None => key_groups.insert(self.key_groups.of(&batch.data)?),
            };
            wanted.push(StoreKey { state: GROUPS, key_group: key_groups[r], key: key.into() });
        }
        Ok(wanted)
    }

    fn loaded(&mut self, found: Vec<(StoreKey, Bytes)>) -> TaskResult<()> {
        for (key, value) in found {
            self.load_group(key.key_group, &key.key, &value)?;
        }
        Ok(())
    }

    fn evict(&mut self) -> TaskResult<Vec<StoreWrite>> {
        let Some((budget, may_be_stored)) = self.spill.as_ref().map(|s| (s.budget, s.may_be_stored)) else {
            return Ok(vec![]);
        };
        let over = self.resident_bytes() > budget;
        let dirty = self.dirty.as_mut().expect("a budget tracks changes");
        // Groups deleted since they were stored: once groups are read back from the database,
        // their deletions go there at once, or a later row would read back what was deleted.
        // Deletions first: a key deleted and then made again must end with its new value.
        let mut writes: Vec<StoreWrite> = if may_be_stored || over {
            dirty
                .take_removed()
                .into_iter()
                .map(|(key_group, key)| StoreWrite::Delete(StoreKey { state: GROUPS, key_group, key }))
                .collect()
        } else {
            vec![]
        };
        if !over {
            return Ok(writes);
        }
        let target = (budget as f64 * EVICT_TO) as usize;
        let now = self.ttl.as_ref().map(|ttl| ttl.clock.now_millis());
        let capacity = self.counts.len();
        let mut value = Vec::new();
        // Two sweeps at most: the first clears every reference bit it passes.
        let mut steps = 2 * capacity;
        while self.resident_bytes() > target && steps > 0 {
            steps -= 1;
            let spill = self.spill.as_mut().expect("checked above");
            let g = spill.hand;
            spill.hand = (spill.hand + 1) % capacity.max(1);
            if g >= capacity || !self.groups.is_live(g) || std::mem::take(&mut spill.referenced[g]) {
                continue;
            }
            spill.may_be_stored = true;
            let dirty = self.dirty.as_mut().expect("a budget tracks changes");
            if dirty.evict(g) {
                value.clear();
                encode_group(&self.counts, &self.emitted, &self.aggs, &self.ttl, g, &mut value)?;
                let expires_in = match (&self.ttl, now) {
                    (Some(ttl), Some(now)) => {
                        let written = ttl.written.get(g).copied().unwrap_or(now);
                        let left = written.saturating_add(ttl.millis).saturating_sub(now).max(1);
                        Some(Duration::from_millis(u64::try_from(left).unwrap_or(u64::MAX)))
                    }
                    _ => None,
                };
                let key =
                    StoreKey { state: GROUPS, key_group: self.group_key_group[g], key: self.groups.key(g).into() };
                writes.push(StoreWrite::Put { key, value: value.clone(), expires_in });
                let spill = self.spill.as_mut().expect("checked above");
                spill.written.insert(self.groups.hash(g));
            }
            self.drop_from_memory(g);
        }
        if let Some(dirty) = &mut self.dirty {
            dirty.compact();
        }
        tracing::trace!(
            groups = self.groups.len(),
            key_bytes = self.groups.key_bytes(),
            resident = self.resident_bytes(),
            writes = writes.len(),
            "groups left memory"
        );
        Ok(writes)
    }

    fn restore_lazily(&mut self) {
        if let Some(spill) = &mut self.spill {
            spill.may_be_stored = true;
            spill.unfiltered = true;
        }
    }
}
