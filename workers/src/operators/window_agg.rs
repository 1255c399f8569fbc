//! Window aggregation: one result row per key and window, emitted once, when the watermark
//! passes the window's end. Rows for a window that has already fired are late and dropped, as
//! Flink drops them.

use arrow::array::{Array, ArrayRef, RecordBatch, UInt32Array};
use arrow::datatypes::SchemaRef;
use std::collections::BTreeMap;
use weir_dataflow::event::{ChangeBatch, MIN_WATERMARK, Timestamp};
use weir_dataflow::plan::AggregateCall;

use super::aggregate::Aggregates;
use super::keys::{GroupKeys, timestamp_millis};
use super::{Operator, OperatorMetrics, Output};
use crate::error::TaskResult;

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
}

impl WindowAggregate {
    pub fn try_new(
        input: SchemaRef,
        keys: Vec<usize>,
        window_end: usize,
        calls: Vec<AggregateCall>,
        schema: SchemaRef,
    ) -> TaskResult<Self> {
        Ok(WindowAggregate {
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
            self.aggs.reset(g);
            self.groups.remove(g);
        }
        out.batch(ChangeBatch::inserts(data));
        Ok(())
    }
}

impl Operator for WindowAggregate {
    fn checkpointable(&self) -> Result<(), String> {
        Err("window aggregation state cannot be checkpointed yet".into())
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
        let mut ids = Vec::with_capacity(batch.num_rows());
        for (r, (id, new)) in assigned.into_iter().enumerate() {
            if new {
                self.pending.entry(ends.value(r)).or_default().push(id);
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
