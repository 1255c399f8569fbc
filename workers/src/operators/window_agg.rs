//! Window aggregation: one result row per key and window, emitted once, when the watermark
//! passes the window's end. Rows for a window that has already fired are late and dropped, as
//! Flink drops them.

use arrow::array::{Array, ArrayRef, RecordBatch, UInt32Array};
use arrow::datatypes::SchemaRef;
use std::collections::BTreeMap;
use weir_dataflow::event::{ChangeBatch, MIN_WATERMARK, Timestamp};
use weir_dataflow::plan::AggregateCall;

use weir_state_store::StateId;

use super::aggregate::Aggregates;
use super::codec;
use super::keys::{DirtyGroups, GroupKeys, RowKeyGroups, timestamp_millis};
use super::{Operator, OperatorMetrics, Output};
use crate::checkpoint::{RestoredState, SnapshotContext};
use crate::error::TaskResult;

/// Per (key, window): the window's end, then the aggregates' state.
const GROUPS: StateId = StateId(0);

pub struct WindowAggregate {
    keys: Vec<usize>,
    window_end: usize,
    groups: GroupKeys,
    aggs: Aggregates,
    /// Groups by the end of their window, for firing in event-time order.
    pending: BTreeMap<Timestamp, Vec<usize>>,
    schema: SchemaRef,
    watermark: Timestamp,
    late: u64,
    key_groups: RowKeyGroups,
    /// Per group: its key group and its window's end.
    group_key_group: Vec<u16>,
    group_end: Vec<Timestamp>,
    /// With checkpoints: what changed since the last one (tracked only then).
    dirty: Option<DirtyGroups>,
}

impl WindowAggregate {
    pub fn try_new(
        input: SchemaRef,
        keys: Vec<usize>,
        window_end: usize,
        calls: Vec<AggregateCall>,
        schema: SchemaRef,
        key_groups: RowKeyGroups,
    ) -> TaskResult<Self> {
        Ok(WindowAggregate {
            key_groups,
            group_key_group: Vec::new(),
            group_end: Vec::new(),
            dirty: None,
            groups: GroupKeys::try_new(&input, &keys)?,
            keys,
            window_end,
            aggs: Aggregates::new(calls, false)?,
            pending: BTreeMap::new(),
            schema,
            watermark: MIN_WATERMARK,
            late: 0,
        })
    }

    fn fire(&mut self, up_to: Timestamp, out: &mut Output) -> TaskResult<()> {
        let mut due = Vec::new();
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() - 1 > up_to {
                break;
            }
            due.extend(entry.remove());
        }
        if due.is_empty() {
            return Ok(());
        }
        let mut columns: Vec<ArrayRef> = self.groups.key_columns(&due)?;
        columns.extend(self.aggs.evaluate(&due)?);
        let data = RecordBatch::try_new(self.schema.clone(), columns)?;
        for g in due {
            if let Some(dirty) = &mut self.dirty {
                dirty.remove(g, self.group_key_group[g], self.groups.key(g));
            }
            self.aggs.reset(g);
            self.groups.remove(g);
        }
        out.batch(ChangeBatch::inserts(data));
        Ok(())
    }
}

impl Operator for WindowAggregate {
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
        // Windows that fired are gone: the watermark says which rows would now be late.
        ctx.operator_state = Some(serde_json::json!({ "watermark": self.watermark }));
        if !ctx.writes_keyed_state() {
            return Ok(());
        }
        let (ends, aggs) = (&self.group_end, &self.aggs);
        let Some(dirty) = self.dirty.as_mut() else { return Ok(()) };
        dirty.write_changes(ctx, GROUPS, &self.group_key_group, &self.groups, |g, value| {
            codec::put_i64(value, ends[g]);
            aggs.encode_group(g, value)
        })
    }

    fn restore(&mut self, mut state: RestoredState) -> TaskResult<()> {
        let watermarks = state.operator_states.iter().filter_map(|s| s.get("watermark")?.as_i64());
        if let Some(w) = watermarks.min() {
            self.watermark = w;
        }
        for (key_group, key, value) in state.keyed.remove(&GROUPS).unwrap_or_default() {
            let (id, _) = self.groups.intern_bytes(&key);
            let mut r = codec::Reader::new(&value);
            let end = r.i64()?;
            self.aggs.decode_group(id, &mut r)?;
            r.finish()?;
            if self.group_end.len() <= id {
                self.group_end.resize(id + 1, 0);
                self.group_key_group.resize(id + 1, 0);
            }
            self.group_end[id] = end;
            self.group_key_group[id] = key_group as u16;
            self.pending.entry(end).or_default().push(id);
            if let Some(dirty) = &mut self.dirty {
                dirty.restored(id);
            }
        }
        Ok(())
    }

    fn process(&mut self, _input: usize, batch: ChangeBatch, _out: &mut Output) -> TaskResult<()> {
        let ends = timestamp_millis(batch.data.column(self.window_end))?;
        let watermark = self.watermark;
        let on_time: Vec<u32> = (0..batch.num_rows())
            .filter(|&r| ends.is_valid(r) && ends.value(r) - 1 > watermark)
            .map(|r| r as u32)
            .collect();
        self.late += (batch.num_rows() - on_time.len()) as u64;
        if on_time.is_empty() {
            return Ok(());
        }
        let (batch, ends) = if on_time.len() == batch.num_rows() {
            (batch, ends)
        } else {
            let b = batch.take(&UInt32Array::from(on_time))?;
            let e = timestamp_millis(b.data.column(self.window_end))?;
            (b, e)
        };
        let key_columns: Vec<ArrayRef> = self.keys.iter().map(|k| batch.data.column(*k).clone()).collect();
        let assigned = self.groups.assign(&key_columns, batch.num_rows())?;
        let key_groups = if self.dirty.is_some() && assigned.iter().any(|(_, new)| *new) {
            self.key_groups.of(&batch.data)?
        } else {
            vec![]
        };
        if self.group_end.len() < self.groups.capacity() {
            self.group_end.resize(self.groups.capacity(), 0);
            self.group_key_group.resize(self.groups.capacity(), 0);
        }
        let mut ids = Vec::with_capacity(batch.num_rows());
        for (r, (id, new)) in assigned.into_iter().enumerate() {
            if new {
                self.pending.entry(ends.value(r)).or_default().push(id);
                self.group_end[id] = ends.value(r);
            }
            if let Some(dirty) = &mut self.dirty {
                if new {
                    self.group_key_group[id] = key_groups[r];
                }
                dirty.touch(id);
            }
            ids.push(id);
        }
        self.aggs.ensure(self.groups.capacity());
        self.aggs.update(&batch, &ids)
    }

    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Output) -> TaskResult<()> {
        self.watermark = self.watermark.max(watermark);
        self.fire(watermark, out)?;
        out.watermark(watermark);
        Ok(())
    }

    fn metrics(&self) -> OperatorMetrics {
        OperatorMetrics { late_records_dropped: self.late }
    }
}
