//! Group aggregation without a window: an updating result per key. After each input batch the
//! operator emits, for every key the batch touched, what changed: `+I` for a new key, `-U`/`+U`
//! for a changed result, `-D` when a changelog input retracted a key's last row. Emitting per
//! batch rather than per row gives the same final result as Flink with fewer updates.

use arrow::array::{ArrayRef, Int8Array, RecordBatch, UInt32Array};
use arrow::compute::{concat, take};
use arrow::datatypes::SchemaRef;
use arrow_row::{RowConverter, SortField};
use std::sync::Arc;
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
        })
    }
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
        let (counts, emitted, aggs) = (&self.counts, &self.emitted, &self.aggs);
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
            aggs.encode_group(g, value)
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
            r.finish()?;
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
        let key_columns: Vec<ArrayRef> = self.keys.iter().map(|k| batch.data.column(*k).clone()).collect();
        let assigned = self.groups.assign(&key_columns, batch.num_rows())?;
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
        for (i, g) in live.iter().enumerate() {
            let new: &[u8] = new_row(i);
            match &self.emitted[*g] {
                None => after.push((i, RowKind::Insert)),
                Some(prev) if prev.as_ref() == new => {}
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
            if let Some(dirty) = &mut self.dirty {
                dirty.remove(g, self.group_key_group[g], self.groups.key(g));
            }
            self.counts[g] = 0;
            self.emitted[g] = None;
            self.aggs.reset(g);
            self.groups.remove(g);
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
