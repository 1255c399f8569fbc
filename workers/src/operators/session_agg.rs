//! Session window aggregation: per key, rows closer in event time than the gap form one
//! session `[first, last + gap)` (sessions that touch merge, as Flink's do), aggregated and emitted once the watermark passes its end.
//!
//! Rows are kept until their session closes, because a late-arriving row can bridge two
//! sessions into one (Flink merges the windows; keeping the rows makes merging free). A row is
//! late, and dropped, when its own window has passed and it joins no open session.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, TimestampMillisecondArray};
use arrow::compute::{cast, concat};
use arrow::datatypes::{DataType, SchemaRef};
use arrow_row::{RowConverter, SortField};
use weir_dataflow::event::{ChangeBatch, MIN_WATERMARK, Timestamp};
use weir_dataflow::plan::{AggregateCall, SessionOutput};

use super::aggregate::Aggregates;
use super::keys::{GroupKeys, timestamp_millis};
use super::{Operator, OperatorMetrics, Output};
use crate::error::TaskResult;

pub struct SessionAggregate {
    keys: Vec<usize>,
    time_col: usize,
    gap: i64,
    output: Vec<SessionOutput>,
    groups: GroupKeys,
    /// Per key: rows by timestamp (row-encoded, all input columns).
    rows: Vec<BTreeMap<Timestamp, Vec<Box<[u8]>>>>,
    codec: RowConverter,
    aggs: Aggregates,
    /// (earliest end of a session a row may close, key): keys to look at on a watermark.
    timers: BTreeSet<(Timestamp, usize)>,
    input: SchemaRef,
    schema: SchemaRef,
    watermark: Timestamp,
    late: u64,
}

impl SessionAggregate {
    pub fn try_new(
        input: SchemaRef,
        keys: Vec<usize>,
        time_col: usize,
        gap: i64,
        calls: Vec<AggregateCall>,
        output: Vec<SessionOutput>,
        schema: SchemaRef,
    ) -> TaskResult<Self> {
        let codec = RowConverter::new(input.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect())?;
        let mut aggs = Aggregates::new(calls, false)?;
        aggs.ensure(1);
        Ok(SessionAggregate {
            groups: GroupKeys::try_new(&input, &keys)?,
            keys,
            time_col,
            gap,
            output,
            rows: Vec::new(),
            codec,
            aggs,
            timers: BTreeSet::new(),
            input,
            schema,
            watermark: MIN_WATERMARK,
            late: 0,
        })
    }

    /// Whether a row at `ts` of key `g` falls into a session that is still open.
    fn joins_open_session(&self, g: usize, ts: Timestamp) -> bool {
        let Some(rows) = self.rows.get(g) else { return false };
        rows.range(ts - self.gap..=ts + self.gap).next().is_some()
    }
}

/// One fired session: the key, its bounds and its aggregate values.
struct Fired {
    key: usize,
    start: Timestamp,
    end: Timestamp,
    values: Vec<ArrayRef>,
}

impl Operator for SessionAggregate {
    fn checkpointable(&self) -> Result<(), String> {
        Err("session window state cannot be checkpointed yet".into())
    }

    fn process(&mut self, _input: usize, batch: ChangeBatch, _out: &mut Output) -> TaskResult<()> {
        let times = timestamp_millis(batch.data.column(self.time_col))?;
        let key_columns: Vec<ArrayRef> = self.keys.iter().map(|k| batch.data.column(*k).clone()).collect();
        let ids = self.groups.assign(&key_columns, batch.num_rows())?;
        let encoded = self.codec.convert_columns(batch.data.columns())?;
        for (r, (g, _)) in ids.into_iter().enumerate() {
            if !arrow::array::Array::is_valid(&times, r) {
                continue;
            }
            let ts = times.value(r);
            if g >= self.rows.len() {
                self.rows.resize_with(g + 1, BTreeMap::new);
            }
            if ts + self.gap - 1 <= self.watermark && !self.joins_open_session(g, ts) {
                self.late += 1;
                continue;
            }
            self.rows[g].entry(ts).or_default().push(encoded.row(r).data().into());
            self.timers.insert((ts + self.gap, g));
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Output) -> TaskResult<()> {
        self.watermark = self.watermark.max(watermark);
        let mut keys = BTreeSet::new();
        while let Some(&(end, g)) = self.timers.first() {
            if end - 1 > watermark {
                break;
            }
            self.timers.pop_first();
            keys.insert(g);
        }
        let mut fired: Vec<Fired> = Vec::new();
        for g in keys {
            // Split the key's rows into sessions; fire those that have closed.
            let mut sessions: Vec<(Timestamp, Timestamp)> = Vec::new();
            for &ts in self.rows[g].keys() {
                match sessions.last_mut() {
                    // Flink merges windows that touch: [a, b) and [b, c) become one session.
                    Some((_, end)) if ts <= *end => *end = (*end).max(ts + self.gap),
                    _ => sessions.push((ts, ts + self.gap)),
                }
            }
            for (start, end) in sessions {
                if end - 1 > watermark {
                    continue;
                }
                let timestamps: Vec<Timestamp> = self.rows[g].range(start..end).map(|(t, _)| *t).collect();
                let mut encoded = Vec::new();
                for t in timestamps {
                    encoded.extend(self.rows[g].remove(&t).unwrap_or_default());
                }
                let parser = self.codec.parser();
                let columns = self.codec.convert_rows(encoded.iter().map(|r| parser.parse(r)))?;
                let batch = RecordBatch::try_new(self.input.clone(), columns)?;
                self.aggs.update(&ChangeBatch::inserts(batch), &vec![0; encoded.len()])?;
                let values = self.aggs.evaluate(&[0])?;
                self.aggs.reset(0);
                fired.push(Fired { key: g, start, end, values });
            }
        }
        if !fired.is_empty() {
            let key_groups: Vec<usize> = fired.iter().map(|f| f.key).collect();
            let key_columns = self.groups.key_columns(&key_groups)?;
            let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.output.len());
            for (i, o) in self.output.iter().enumerate() {
                let ty = self.schema.field(i).data_type();
                let column: ArrayRef = match o {
                    SessionOutput::Key(k) => key_columns[*k].clone(),
                    SessionOutput::WindowStart => times(fired.iter().map(|f| f.start), ty)?,
                    SessionOutput::WindowEnd => times(fired.iter().map(|f| f.end), ty)?,
                    SessionOutput::WindowTime => times(fired.iter().map(|f| f.end - 1), ty)?,
                    SessionOutput::Aggregate(a) => {
                        let parts: Vec<&dyn arrow::array::Array> =
                            fired.iter().map(|f| f.values[*a].as_ref()).collect();
                        concat(&parts)?
                    }
                };
                columns.push(column);
            }
            out.batch(ChangeBatch::inserts(RecordBatch::try_new(self.schema.clone(), columns)?));
        }
        // Forget keys without rows only now: their keys were needed for the output above.
        let done: BTreeSet<usize> = fired.iter().map(|f| f.key).filter(|g| self.rows[*g].is_empty()).collect();
        for g in done {
            self.groups.remove(g);
        }
        out.watermark(watermark);
        Ok(())
    }

    fn metrics(&self) -> OperatorMetrics {
        OperatorMetrics { late_records_dropped: self.late }
    }
}

fn times(values: impl Iterator<Item = Timestamp>, ty: &DataType) -> TaskResult<ArrayRef> {
    let array: ArrayRef = Arc::new(TimestampMillisecondArray::from_iter_values(values));
    Ok(if array.data_type() == ty { array } else { cast(&array, ty)? })
}
