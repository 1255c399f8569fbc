//! `OVER` aggregation ordered by event time: for every row, aggregates over the rows of its
//! partition in a frame that ends at the row (`ROWS BETWEEN n PRECEDING AND CURRENT ROW`,
//! `RANGE BETWEEN INTERVAL … PRECEDING AND CURRENT ROW`, or unbounded).
//!
//! Rows wait until the watermark passes their timestamp and are then processed in time order,
//! as Flink's row-time OVER functions do. A row at or before the last timestamp already
//! processed for its partition is late and dropped.
//!
//! Checkpoints hold, per partition changed since the last one, everything the partition keeps:
//! the rows waiting for the watermark, the rows of the current frame, the last timestamp
//! processed and the aggregates' state. The timers are the pending rows' timestamps, so a
//! restore sets them again from those rows.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::compute::{concat, concat_batches};
use arrow::datatypes::SchemaRef;
use arrow_row::{RowConverter, SortField};
use weir_dataflow::event::{ChangeBatch, RowKind, Timestamp};
use weir_dataflow::plan::{AggregateCall, OverFrame};

use weir_state_store::StateId;

use super::aggregate::Aggregates;
use super::codec;
use super::keys::{DirtyGroups, GroupKeys, RowKeyGroups, timestamp_millis};
use super::{Operator, OperatorMetrics, Output};
use crate::checkpoint::{RestoredState, SnapshotContext};
use crate::error::TaskResult;

/// Per partition: the last timestamp processed (`i64::MIN`: none), the pending rows (count,
/// then timestamp, row count and rows each), the frame's rows (count, then timestamp and row
/// each), then the aggregates' state.
const PARTITIONS: StateId = StateId(0);
const NONE_TIME: Timestamp = i64::MIN;

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
    key_groups: RowKeyGroups,
    /// Per partition: the key group the exchange routed it by (set only with checkpoints).
    partition_key_group: Vec<u16>,
    /// With checkpoints: which partitions changed since the last one (tracked only then).
    dirty: Option<DirtyGroups>,
}

impl OverAggregate {
    #[allow(clippy::too_many_arguments)]
    pub fn try_new(
        input: SchemaRef,
        partition_cols: Vec<usize>,
        time_col: usize,
        frame: OverFrame,
        width: usize,
        calls: Vec<AggregateCall>,
        schema: SchemaRef,
        key_groups: RowKeyGroups,
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
            key_groups,
            partition_key_group: Vec::new(),
            dirty: None,
        })
    }

    fn ensure(&mut self, partitions: usize) {
        if self.states.len() < partitions {
            self.states.resize_with(partitions, PartitionState::default);
            self.partition_key_group.resize(partitions, 0);
            self.aggs.ensure(partitions);
        }
    }

    /// Partition `g`'s state as the checkpoint stores it.
    fn encode_partition(&self, g: usize, out: &mut Vec<u8>) -> TaskResult<()> {
        let state = &self.states[g];
        codec::put_i64(out, state.last_processed.unwrap_or(NONE_TIME));
        codec::put_i64(out, state.pending.len() as i64);
        for (ts, rows) in &state.pending {
            codec::put_i64(out, *ts);
            codec::put_i64(out, rows.len() as i64);
            for row in rows {
                codec::put_bytes(out, row);
            }
        }
        codec::put_i64(out, state.frame.len() as i64);
        for (ts, row) in &state.frame {
            codec::put_i64(out, *ts);
            let encoded = self.rows.convert_columns(row.columns())?;
            codec::put_bytes(out, encoded.row(0).data());
        }
        self.aggs.encode_group(g, out)
    }

    fn decode_partition(&mut self, g: usize, value: &[u8]) -> TaskResult<()> {
        let mut r = codec::Reader::new(value);
        let last = r.i64()?;
        let mut state = PartitionState { last_processed: (last != NONE_TIME).then_some(last), ..Default::default() };
        for _ in 0..r.i64()? {
            let ts = r.i64()?;
            let rows = state.pending.entry(ts).or_default();
            for _ in 0..r.i64()? {
                rows.push(r.bytes()?.into());
            }
            self.timers.insert((ts, g));
        }
        let mut frame = Vec::new();
        for _ in 0..r.i64()? {
            let ts = r.i64()?;
            frame.push((ts, Box::<[u8]>::from(r.bytes()?)));
        }
        if !frame.is_empty() {
            let rows: Vec<Box<[u8]>> = frame.iter().map(|(_, row)| row.clone()).collect();
            let batch = self.decode(&rows)?;
            state.frame = frame.iter().enumerate().map(|(i, (ts, _))| (*ts, batch.slice(i, 1))).collect();
        }
        self.aggs.decode_group(g, &mut r)?;
        r.finish()?;
        self.states[g] = state;
        Ok(())
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
        let Some(mut dirty) = self.dirty.take() else { return Ok(()) };
        let written = dirty.write_changes(ctx, PARTITIONS, &self.partition_key_group, &self.partition, |g, value| {
            self.encode_partition(g, value)
        });
        self.dirty = Some(dirty);
        written
    }

    fn restore(&mut self, mut state: RestoredState) -> TaskResult<()> {
        for (key_group, key, value) in state.keyed.remove(&PARTITIONS).unwrap_or_default() {
            let (g, _) = self.partition.intern_bytes(&key);
            self.ensure(g + 1);
            self.decode_partition(g, &value)?;
            self.partition_key_group[g] = key_group as u16;
            if let Some(dirty) = &mut self.dirty {
                dirty.restored(g);
            }
        }
        Ok(())
    }

    fn process(&mut self, _input: usize, batch: ChangeBatch, _out: &mut Output) -> TaskResult<()> {
        let times = timestamp_millis(batch.data.column(self.time_col))?;
        let keys: Vec<ArrayRef> = self.partition_cols.iter().map(|c| batch.data.column(*c).clone()).collect();
        let pkeys = self.partition.rows(&keys)?;
        let rows = self.rows.convert_columns(batch.data.columns())?;
        // Key groups are hashed only for a batch that brings a new partition.
        let mut key_groups: Option<Vec<u16>> = None;
        for r in 0..batch.num_rows() {
            if !times.is_valid(r) {
                continue;
            }
            let ts = times.value(r);
            let (g, new) = self.partition.intern(pkeys.row(r));
            self.ensure(g + 1);
            if new && self.dirty.is_some() {
                let of = match &key_groups {
                    Some(of) => of,
                    None => key_groups.insert(self.key_groups.of(&batch.data)?),
                };
                self.partition_key_group[g] = of[r];
            }
            let state = &mut self.states[g];
            if state.last_processed.is_some_and(|last| ts <= last) {
                self.late += 1;
                continue;
            }
            state.pending.entry(ts).or_default().push(rows.row(r).data().into());
            self.timers.insert((ts, g));
            if let Some(dirty) = &mut self.dirty {
                dirty.touch(g);
            }
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
            if let Some(dirty) = &mut self.dirty {
                dirty.touch(g);
            }
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
