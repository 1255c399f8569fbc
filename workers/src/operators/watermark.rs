//! The watermark assigner of a table with `WATERMARK FOR rowtime AS expr`.
//!
//! Flink (with `pipeline.auto-watermark-interval = 0`) emits the watermark after every record
//! that advances it. Weir emits it after each batch, which is the same for every record that is
//! ahead of the watermark. A record at or behind the watermark in the middle of a batch would be
//! judged against an older watermark than Flink's, so the batch is cut before it and the
//! watermark emitted there: late records are late exactly as in Flink.

use arrow::array::{Array, UInt32Array};
use weir_dataflow::event::{ChangeBatch, MIN_WATERMARK, Timestamp};
use weir_dataflow::plan::PhysExpr;

use super::keys::timestamp_millis;
use super::{Operator, Output};
use crate::checkpoint::{RestoredState, SnapshotContext};
use crate::error::TaskResult;

pub struct WatermarkAssigner {
    expr: PhysExpr,
    rowtime: usize,
    current: Timestamp,
    emitted: Timestamp,
}

impl WatermarkAssigner {
    pub fn new(expr: PhysExpr, rowtime: usize) -> Self {
        WatermarkAssigner { expr, rowtime, current: MIN_WATERMARK, emitted: MIN_WATERMARK }
    }

    fn emit(&mut self, out: &mut Output) {
        if self.current > self.emitted {
            self.emitted = self.current;
            out.watermark(self.current);
        }
    }
}

impl Operator for WatermarkAssigner {
    fn checkpointable(&self) -> Result<(), String> {
        Ok(())
    }

    /// The watermark is part of the state: after a restore, rows behind it are late exactly as
    /// they would have been without the failure.
    fn snapshot(&mut self, ctx: &mut SnapshotContext<'_>) -> TaskResult<()> {
        ctx.operator_state = Some(serde_json::json!({ "current": self.current, "emitted": self.emitted }));
        Ok(())
    }

    fn restore(&mut self, state: RestoredState) -> TaskResult<()> {
        // After a rescale several old watermarks meet here: the lowest is the one all agree on.
        let field = |v: &serde_json::Value, k: &str| v.get(k).and_then(serde_json::Value::as_i64);
        let restored: Vec<(i64, i64)> =
            state.operator_states.iter().filter_map(|v| Some((field(v, "current")?, field(v, "emitted")?))).collect();
        if let Some(current) = restored.iter().map(|r| r.0).min() {
            self.current = current;
            self.emitted = restored.iter().map(|r| r.1).min().unwrap_or(MIN_WATERMARK);
        }
        Ok(())
    }

    fn process(&mut self, _input: usize, batch: ChangeBatch, out: &mut Output) -> TaskResult<()> {
        let rows = batch.num_rows();
        let marks = timestamp_millis(&self.expr.evaluate(&batch.data)?.into_array(rows)?)?;
        let times = timestamp_millis(batch.data.column(self.rowtime))?;
        let mut cut_start = 0;
        for row in 0..rows {
            if times.is_valid(row) && times.value(row) <= self.current && self.current > self.emitted && row > cut_start
            {
                // Emit what came before, then the watermark, so this row meets it.
                let indices = UInt32Array::from_iter_values(cut_start as u32..row as u32);
                out.batch(batch.take(&indices)?);
                self.emit(out);
                cut_start = row;
            }
            if marks.is_valid(row) {
                self.current = self.current.max(marks.value(row));
            }
        }
        if cut_start == 0 {
            out.batch(batch);
        } else {
            let indices = UInt32Array::from_iter_values(cut_start as u32..rows as u32);
            out.batch(batch.take(&indices)?);
        }
        self.emit(out);
        Ok(())
    }

    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Output) -> TaskResult<()> {
        // Only the end of input reaches here (the maximal watermark): pass it on.
        if watermark > self.emitted {
            self.emitted = watermark;
            self.current = self.current.max(watermark);
            out.watermark(watermark);
        }
        Ok(())
    }
}
