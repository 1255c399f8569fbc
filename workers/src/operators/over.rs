//! `OVER` aggregation ordered by event time: for every row, aggregates over the rows of its
//! partition in a frame that ends at the row (`ROWS BETWEEN n PRECEDING AND CURRENT ROW`,
//! `RANGE BETWEEN INTERVAL … PRECEDING AND CURRENT ROW`, or unbounded).
//!
//! Rows wait until the watermark passes their timestamp and are then processed in time order,
//! as Flink's row-time OVER functions do. A row at or before the last timestamp already
//! processed for its partition is late and dropped.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::compute::{concat, concat_batches};
use arrow::datatypes::SchemaRef;
use arrow_row::{RowConverter, SortField};
use weir_dataflow::event::{ChangeBatch, RowKind, Timestamp};
use weir_dataflow::plan::{AggregateCall, OverFrame};

use super::aggregate::Aggregates;
use super::keys::{GroupKeys, timestamp_millis};
use super::{Operator, OperatorMetrics, Output};
use crate::error::TaskResult;

#[derive(Default)]
struct PartitionState {
    /// Rows waiting for the watermark, by timestamp.
    pending: BTreeMap<Timestamp, Vec<Box<[u8]>>>,
    /// Rows inside the current frame, oldest first, as one-row batches.
    frame: VecDeque<(Timestamp, RecordBatch)>,
    last_processed: Option<Timestamp>,
}

pub struct OverAggregate {
    partition: GroupKeys,
    partition_cols: Vec<usize>,
    time_col: usize,
    frame: OverFrame,
    width: usize,
    aggs: Aggregates,
    rows: RowConverter,
    input: SchemaRef,
    schema: SchemaRef,
    states: Vec<PartitionState>,
    timers: BTreeSet<(Timestamp, usize)>,
    late: u64,
}

impl OverAggregate {
    pub fn try_new(
        input: SchemaRef,
        partition_cols: Vec<usize>,
        time_col: usize,
        frame: OverFrame,
        width: usize,
        calls: Vec<AggregateCall>,
        schema: SchemaRef,
    ) -> TaskResult<Self> {
        let rows = RowConverter::new(input.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect())?;
        Ok(OverAggregate {
            partition: GroupKeys::try_new(&input, &partition_cols)?,
            partition_cols,
            time_col,
            frame,
            width,
            aggs: Aggregates::new(calls, true)?,
            rows,
            input,
            schema,
            states: Vec::new(),
            timers: BTreeSet::new(),
            late: 0,
        })
    }

    fn decode(&self, rows: &[Box<[u8]>]) -> TaskResult<RecordBatch> {
        let parser = self.rows.parser();
        let columns = self.rows.convert_rows(rows.iter().map(|r| parser.parse(r)))?;
        Ok(RecordBatch::try_new(self.input.clone(), columns)?)
    }

    /// Processes partition `g`'s rows at `ts`; returns the rows and their aggregate values.
    fn fire(&mut self, g: usize, ts: Timestamp) -> TaskResult<Option<(RecordBatch, Vec<ArrayRef>)>> {
        let Some(rows) = self.states[g].pending.remove(&ts) else { return Ok(None) };
        self.states[g].last_processed = Some(ts);
        let batch = self.decode(&rows)?;
        let mut values: Vec<Vec<ArrayRef>> = Vec::new();
        match self.frame {
            OverFrame::Rows { preceding } => {
                for i in 0..batch.num_rows() {
                    let row = batch.slice(i, 1);
                    self.aggs.update(&ChangeBatch::inserts(row.clone()), &[g])?;
                    self.states[g].frame.push_back((ts, row));
                    if let Some(n) = preceding {
                        while self.states[g].frame.len() as u64 > n + 1 {
                            let (_, old) = self.states[g].frame.pop_front().expect("frame is not empty");
                            self.aggs.update(&ChangeBatch::with_kinds(old, vec![RowKind::Delete]), &[g])?;
                        }
                    }
                    values.push(self.aggs.evaluate(&[g])?);
                }
            }
            OverFrame::Range { preceding } => {
                self.aggs.update(&ChangeBatch::inserts(batch.clone()), &vec![g; batch.num_rows()])?;
                for i in 0..batch.num_rows() {
                    self.states[g].frame.push_back((ts, batch.slice(i, 1)));
                }
                if let Some(ms) = preceding {
                    while let Some((t, _)) = self.states[g].frame.front() {
                        if *t >= ts - ms {
                            break;
                        }
                        let (_, old) = self.states[g].frame.pop_front().expect("frame is not empty");
                        self.aggs.update(&ChangeBatch::with_kinds(old, vec![RowKind::Delete]), &[g])?;
                    }
                }
                let v = self.aggs.evaluate(&[g])?;
                for _ in 0..batch.num_rows() {
                    values.push(v.clone());
                }
            }
        }
        if preceding_unbounded(self.frame) {
            // Nothing ever leaves an unbounded frame; keep no rows for it.
            self.states[g].frame.clear();
        }
        let columns = (0..values.first().map_or(0, |v| v.len()))
            .map(|c| {
                let parts: Vec<&dyn arrow::array::Array> = values.iter().map(|v| v[c].as_ref()).collect();
                concat(&parts)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some((batch, columns)))
    }
}

fn preceding_unbounded(frame: OverFrame) -> bool {
    matches!(frame, OverFrame::Rows { preceding: None } | OverFrame::Range { preceding: None })
}

impl Operator for OverAggregate {
    fn checkpointable(&self) -> Result<(), String> {
        Err("OVER aggregation state cannot be checkpointed yet".into())
    }

    fn process(&mut self, _input: usize, batch: ChangeBatch, _out: &mut Output) -> TaskResult<()> {
        let times = timestamp_millis(batch.data.column(self.time_col))?;
        let keys: Vec<ArrayRef> = self.partition_cols.iter().map(|c| batch.data.column(*c).clone()).collect();
        let pkeys = self.partition.rows(&keys)?;
        let rows = self.rows.convert_columns(batch.data.columns())?;
        for r in 0..batch.num_rows() {
            if !times.is_valid(r) {
                continue;
            }
            let ts = times.value(r);
            let (g, _) = self.partition.intern(pkeys.row(r));
            if g >= self.states.len() {
                self.states.resize_with(g + 1, PartitionState::default);
                self.aggs.ensure(g + 1);
            }
            let state = &mut self.states[g];
            if state.last_processed.is_some_and(|last| ts <= last) {
                self.late += 1;
                continue;
            }
            state.pending.entry(ts).or_default().push(rows.row(r).data().into());
            self.timers.insert((ts, g));
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Output) -> TaskResult<()> {
        let mut batches = Vec::new();
        let mut value_columns: Vec<Vec<ArrayRef>> = Vec::new();
        while let Some(&(ts, g)) = self.timers.first() {
            if ts > watermark {
                break;
            }
            self.timers.pop_first();
            if let Some((rows, values)) = self.fire(g, ts)? {
                batches.push(rows);
                value_columns.push(values);
            }
        }
        if !batches.is_empty() {
            let rows = concat_batches(&self.input, &batches)?;
            let mut columns: Vec<ArrayRef> = rows.columns()[..self.width].to_vec();
            for c in 0..value_columns[0].len() {
                let parts: Vec<&dyn arrow::array::Array> = value_columns.iter().map(|v| v[c].as_ref()).collect();
                columns.push(concat(&parts)?);
            }
            let data = RecordBatch::try_new(self.schema.clone(), columns)?;
            out.batch(ChangeBatch::inserts(data));
        }
        out.watermark(watermark);
        Ok(())
    }

    fn metrics(&self) -> OperatorMetrics {
        OperatorMetrics { late_records_dropped: self.late }
    }
}
