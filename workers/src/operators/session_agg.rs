//! Session window aggregation: per key, rows closer in event time than the gap form one
//! session `[first, last + gap)` (sessions that touch merge, as Flink's do), aggregated and emitted once the watermark passes its end.
//!
//! Rows are kept until their session closes, because a late-arriving row can bridge two
//! sessions into one (Flink merges the windows; keeping the rows makes merging free). A row is
//! late, and dropped, when its own window has passed and it joins no open session.
//!
//! Checkpoints hold, per key changed since the last one, the key's open rows (deleted once its
//! last session fired), and the watermark. The timers are not stored: each row's timer is its
//! timestamp plus the gap, so a restore sets them again from the rows.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, TimestampMillisecondArray};
use arrow::compute::{cast, concat};
use arrow::datatypes::{DataType, SchemaRef};
use arrow_row::{RowConverter, SortField};
use weir_dataflow::event::{ChangeBatch, MIN_WATERMARK, Timestamp};
use weir_dataflow::plan::{AggregateCall, SessionOutput};

use weir_state_store::StateId;

use super::aggregate::Aggregates;
use super::codec;
use super::keys::{DirtyGroups, GroupKeys, RowKeyGroups, timestamp_millis};
use super::{Operator, OperatorMetrics, Output};
use crate::checkpoint::{RestoredState, SnapshotContext};
use crate::error::TaskResult;

/// Per key: the number of distinct timestamps, then each timestamp with its row count and rows.
const ROWS: StateId = StateId(0);

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
    key_groups: RowKeyGroups,
    /// Per key: the key group the exchange routed it by (set only with checkpoints).
    group_key_group: Vec<u16>,
    /// With checkpoints: which keys changed since the last one (tracked only then).
    dirty: Option<DirtyGroups>,
}

impl SessionAggregate {
    #[allow(clippy::too_many_arguments)]
    pub fn try_new(
        input: SchemaRef,
        keys: Vec<usize>,
        time_col: usize,
        gap: i64,
        calls: Vec<AggregateCall>,
        output: Vec<SessionOutput>,
        schema: SchemaRef,
        key_groups: RowKeyGroups,
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
            key_groups,
            group_key_group: Vec::new(),
            dirty: None,
        })
    }

    fn ensure(&mut self, groups: usize) {
        if self.rows.len() < groups {
            self.rows.resize_with(groups, BTreeMap::new);
            self.group_key_group.resize(groups, 0);
        }
    }

    /// Key `g`'s open rows, as the checkpoint stores them.
    fn encode_rows(rows: &BTreeMap<Timestamp, Vec<Box<[u8]>>>, out: &mut Vec<u8>) {
        codec::put_i64(out, rows.len() as i64);
        for (ts, at) in rows {
            codec::put_i64(out, *ts);
            codec::put_i64(out, at.len() as i64);
            for row in at {
                codec::put_bytes(out, row);
            }
        }
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
        Ok(())
    }

    fn keeps_keyed_state(&self) -> bool {
        true
    }

    fn track_changes(&mut self) {
        self.dirty = Some(DirtyGroups::default());
    }

    fn snapshot(&mut self, ctx: &mut SnapshotContext<'_>) -> TaskResult<()> {
        // Rows behind the watermark that join no open session are late after a restore too.
        ctx.operator_state = Some(serde_json::json!({ "watermark": self.watermark }));
        if !ctx.writes_keyed_state() {
            return Ok(());
        }
        let rows = &self.rows;
        let Some(dirty) = self.dirty.as_mut() else { return Ok(()) };
        dirty.write_changes(ctx, ROWS, &self.group_key_group, &self.groups, |g, value| {
            Self::encode_rows(&rows[g], value);
            Ok(())
        })
    }

    fn restore(&mut self, mut state: RestoredState) -> TaskResult<()> {
        let watermarks = state.operator_states.iter().filter_map(|s| s.get("watermark")?.as_i64());
        if let Some(w) = watermarks.min() {
            self.watermark = w;
        }
        for (key_group, key, value) in state.keyed.remove(&ROWS).unwrap_or_default() {
            let (g, _) = self.groups.intern_bytes(&key);
            self.ensure(g + 1);
            let mut r = codec::Reader::new(&value);
            for _ in 0..r.i64()? {
                let ts = r.i64()?;
                let at = self.rows[g].entry(ts).or_default();
                for _ in 0..r.i64()? {
                    at.push(r.bytes()?.into());
                }
                self.timers.insert((ts + self.gap, g));
            }
            r.finish()?;
            self.group_key_group[g] = key_group as u16;
            if let Some(dirty) = &mut self.dirty {
                dirty.restored(g);
            }
        }
        Ok(())
    }

    fn process(&mut self, _input: usize, batch: ChangeBatch, _out: &mut Output) -> TaskResult<()> {
        let times = timestamp_millis(batch.data.column(self.time_col))?;
        let key_columns: Vec<ArrayRef> = self.keys.iter().map(|k| batch.data.column(*k).clone()).collect();
        let ids = self.groups.assign(&key_columns, batch.num_rows())?;
        let key_groups = if self.dirty.is_some() && ids.iter().any(|(_, new)| *new) {
            self.key_groups.of(&batch.data)?
        } else {
            vec![]
        };
        self.ensure(self.groups.capacity());
        let encoded = self.codec.convert_columns(batch.data.columns())?;
        for (r, (g, new)) in ids.into_iter().enumerate() {
            if new && !key_groups.is_empty() {
                self.group_key_group[g] = key_groups[r];
            }
            if !arrow::array::Array::is_valid(&times, r) {
                continue;
            }
            let ts = times.value(r);
            if ts + self.gap - 1 <= self.watermark && !self.joins_open_session(g, ts) {
                self.late += 1;
                continue;
            }
            self.rows[g].entry(ts).or_default().push(encoded.row(r).data().into());
            self.timers.insert((ts + self.gap, g));
            if let Some(dirty) = &mut self.dirty {
                dirty.touch(g);
            }
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
            if let Some(dirty) = self.dirty.as_mut().filter(|_| fired.last().is_some_and(|f| f.key == g)) {
                // Keys left without rows are deleted below, when they are forgotten.
                dirty.touch(g);
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
            if let Some(dirty) = &mut self.dirty {
                dirty.remove(g, self.group_key_group[g], self.groups.key(g));
            }
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
