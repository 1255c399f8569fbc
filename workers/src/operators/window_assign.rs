//! Window table functions (`TUMBLE`, `HOP`, `CUMULATE`): each row is copied once per window it
//! belongs to, with `window_start`, `window_end` and `window_time` appended. Windows that have
//! already fired (their end is at or behind the watermark) are dropped as late, as Flink does.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, TimestampMillisecondArray, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::SchemaRef;
use weir_dataflow::event::{ChangeBatch, MIN_WATERMARK, Timestamp};
use weir_dataflow::plan::WindowKind;

use super::keys::timestamp_millis;
use super::{Operator, OperatorMetrics, Output};
use crate::error::TaskResult;

pub struct WindowAssign {
    window: WindowKind,
    time_col: usize,
    schema: SchemaRef,
    watermark: Timestamp,
    late: u64,
}

impl WindowAssign {
    pub fn new(window: WindowKind, time_col: usize, schema: SchemaRef) -> Self {
        WindowAssign { window, time_col, schema, watermark: MIN_WATERMARK, late: 0 }
    }
}

impl Operator for WindowAssign {
    fn checkpointable(&self) -> Result<(), String> {
        super::stateless()
    }

    fn process(&mut self, _input: usize, batch: ChangeBatch, out: &mut Output) -> TaskResult<()> {
        let times = timestamp_millis(batch.data.column(self.time_col))?;
        let mut indices = Vec::with_capacity(batch.num_rows());
        let mut starts = Vec::with_capacity(batch.num_rows());
        let mut ends = Vec::with_capacity(batch.num_rows());
        let watermark = self.watermark;
        let mut late = 0;
        for (row, ts) in times.iter().enumerate() {
            // Flink drops rows without event time from window functions.
            let Some(ts) = ts else { continue };
            self.window.assign(ts, |start, end| {
                if end - 1 <= watermark {
                    late += 1;
                } else {
                    indices.push(row as u32);
                    starts.push(start);
                    ends.push(end);
                }
            });
        }
        self.late += late;
        if indices.is_empty() {
            return Ok(());
        }
        let indices = UInt32Array::from(indices);
        let mut columns: Vec<ArrayRef> =
            batch.data.columns().iter().map(|c| take(c, &indices, None)).collect::<Result<_, _>>()?;
        let times: Vec<i64> = ends.iter().map(|e| e - 1).collect();
        columns.push(Arc::new(TimestampMillisecondArray::from(starts)));
        columns.push(Arc::new(TimestampMillisecondArray::from(ends)));
        columns.push(Arc::new(TimestampMillisecondArray::from(times)));
        let kinds = batch.kinds.as_ref().map(|k| take(k.as_ref(), &indices, None)).transpose()?;
        let data = RecordBatch::try_new(self.schema.clone(), columns)?;
        out.batch(ChangeBatch {
            data,
            kinds: kinds
                .map(|k| Arc::new(k.as_any().downcast_ref::<arrow::array::Int8Array>().expect("kinds").clone())),
        });
        Ok(())
    }

    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Output) -> TaskResult<()> {
        self.watermark = watermark;
        out.watermark(watermark);
        Ok(())
    }

    fn metrics(&self) -> OperatorMetrics {
        OperatorMetrics { late_records_dropped: self.late }
    }
}
