//! Top-N (`ROW_NUMBER() OVER (PARTITION BY … ORDER BY …) <= n`) and its special case,
//! deduplication (`= 1` ordered by event time).
//!
//! [`Rank`] keeps, per partition, the rows in order (only the best `n` when the input is
//! append-only, all of them when rows can be retracted) and after each batch emits the
//! difference between the partition's top-n before and after. [`WindowRank`] ranks each window
//! once, when the watermark passes its end.
//!
//! Checkpoints hold, per partition changed since the last one, its rows with their places
//! (sort key and arrival order), and a window Top-N's watermark; a window's end is stored with
//! its partition, so a restore sets the window's timer again. The arrival counter is not stored:
//! a restore continues after the largest one among the restored rows, which keeps ties in
//! arrival order within every partition.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch};
use arrow::compute::SortOptions;
use arrow::datatypes::SchemaRef;
use arrow_row::{RowConverter, SortField};
use hashbrown::{HashMap, HashSet};
use weir_dataflow::event::{ChangeBatch, MIN_WATERMARK, RowKind, Timestamp};
use weir_dataflow::plan::RankSpec;
use weir_state_store::StateId;

use super::codec;
use super::keys::{RemovedKey, RowKeyGroups, timestamp_millis};
use super::{Operator, OperatorMetrics, Output};
use crate::checkpoint::{RestoredState, SnapshotContext};
use crate::error::TaskResult;

/// Per partition key: (a window Top-N only: the window's end,) the number of rows, then each
/// row's sort key, arrival order and bytes.
const PARTITIONS: StateId = StateId(0);

/// A row's place in its partition: its sort key, then arrival (or reverse arrival) order.
type Position = (Box<[u8]>, u64);

/// Rows of one partition in rank order.
#[derive(Default)]
struct Partition {
    rows: BTreeMap<Position, Box<[u8]>>,
    /// The key group the exchange routed the partition by (set only with checkpoints).
    key_group: u16,
    /// Written at a checkpoint, so its removal must be written too.
    persisted: bool,
    /// A window Top-N's partition: its window's end.
    window_end: Timestamp,
}

impl Partition {
    fn top(&self, limit: usize) -> Vec<&[u8]> {
        self.rows.values().take(limit).map(|r| r.as_ref()).collect()
    }

    fn encode(&self, out: &mut Vec<u8>) {
        codec::put_i64(out, self.rows.len() as i64);
        for ((order, tie), row) in &self.rows {
            codec::put_bytes(out, order);
            // The arrival order's bits; a u64 round-trips through the i64 unchanged.
            codec::put_i64(out, *tie as i64);
            codec::put_bytes(out, row);
        }
    }

    /// Reads what [`encode`](Self::encode) wrote; the partition counts as persisted.
    fn decode(r: &mut codec::Reader<'_>, key_group: u16) -> TaskResult<Self> {
        let mut rows = BTreeMap::new();
        for _ in 0..r.i64()? {
            let order: Box<[u8]> = r.bytes()?.into();
            let tie = r.i64()? as u64;
            rows.insert((order, tie), r.bytes()?.into());
        }
        Ok(Partition { rows, key_group, persisted: true, window_end: 0 })
    }

    /// The largest arrival number among the rows (ties store it reversed when newest first).
    fn last_sequence(&self, newest_first: bool) -> u64 {
        let sequence = |tie: u64| if newest_first { u64::MAX - tie } else { tie };
        self.rows.keys().map(|(_, tie)| sequence(*tie)).max().unwrap_or(0)
    }
}

/// Which partitions (by encoded key) changed since the last checkpoint and which persisted ones
/// went away; tracked only with checkpoints.
#[derive(Default)]
struct ChangedPartitions {
    changed: HashSet<Box<[u8]>>,
    removed: Vec<RemovedKey>,
}

impl ChangedPartitions {
    fn touch(&mut self, key: &[u8]) {
        if !self.changed.contains(key) {
            self.changed.insert(key.into());
        }
    }

    /// Partition `key` is gone.
    fn remove(&mut self, key: &[u8], partition: &Partition) {
        self.changed.remove(key);
        if partition.persisted {
            self.removed.push((partition.key_group, key.into()));
        }
    }

    /// Writes the removals, then each changed partition's value (a partition removed and
    /// created again since the last checkpoint is deleted, then written anew).
    fn write(
        &mut self,
        ctx: &mut SnapshotContext<'_>,
        partitions: &mut HashMap<Box<[u8]>, Partition>,
        mut encode: impl FnMut(&Partition, &mut Vec<u8>),
    ) -> TaskResult<()> {
        for (key_group, key) in self.removed.drain(..) {
            ctx.delete(PARTITIONS, key_group as u32, &key)?;
        }
        let mut value = Vec::new();
        for key in self.changed.drain() {
            let Some(partition) = partitions.get_mut(&key) else { continue };
            value.clear();
            encode(partition, &mut value);
            ctx.put(PARTITIONS, partition.key_group as u32, &key, &value)?;
            partition.persisted = true;
        }
        Ok(())
    }
}

/// The key group of row `r` of `batch`, hashing the batch's key groups on first use.
fn key_group_of(
    key_groups: &RowKeyGroups,
    hashed: &mut Option<Vec<u16>>,
    batch: &RecordBatch,
    r: usize,
) -> TaskResult<u16> {
    let of = match hashed {
        Some(of) => of,
        None => hashed.insert(key_groups.of(batch)?),
    };
    Ok(of[r])
}

/// Encodes partition keys, sort keys and whole rows.
struct Codec {
    partition: RowConverter,
    order: RowConverter,
    rows: RowConverter,
    spec: RankSpec,
    schema: SchemaRef,
}

impl Codec {
    fn try_new(spec: RankSpec, input: &SchemaRef, schema: SchemaRef) -> TaskResult<Self> {
        let field = |c: usize| input.field(c).data_type().clone();
        let partition = RowConverter::new(spec.partition.iter().map(|c| SortField::new(field(*c))).collect())?;
        let order = RowConverter::new(
            spec.order
                .iter()
                .map(|k| {
                    SortField::new_with_options(
                        field(k.column),
                        SortOptions { descending: k.descending, nulls_first: k.nulls_first },
                    )
                })
                .collect(),
        )?;
        let rows = RowConverter::new(input.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect())?;
        Ok(Codec { partition, order, rows, spec, schema })
    }

    fn columns(batch: &RecordBatch, cols: &[usize]) -> Vec<ArrayRef> {
        cols.iter().map(|c| batch.column(*c).clone()).collect()
    }

    /// An output batch of rows with their ranks.
    fn output(&self, rows: &[(&[u8], usize)], kinds: Vec<RowKind>) -> TaskResult<ChangeBatch> {
        let parser = self.rows.parser();
        let mut columns = self.rows.convert_rows(rows.iter().map(|(r, _)| parser.parse(r)))?;
        if self.spec.rank_column {
            let ranks: ArrayRef = Arc::new(Int64Array::from_iter_values(rows.iter().map(|(_, rank)| *rank as i64)));
            let ty = self.schema.field(self.schema.fields().len() - 1).data_type();
            columns.push(arrow::compute::cast(&ranks, ty)?);
        }
        let data = RecordBatch::try_new(self.schema.clone(), columns)?;
        Ok(ChangeBatch::with_kinds(data, kinds))
    }
}

pub struct Rank {
    codec: Codec,
    partitions: HashMap<Box<[u8]>, Partition>,
    /// Keep only the top n rows per partition: nothing can be retracted.
    append_only: bool,
    sequence: u64,
    key_groups: RowKeyGroups,
    /// With checkpoints: what changed since the last one.
    changes: Option<ChangedPartitions>,
}

impl Rank {
    pub fn try_new(
        spec: RankSpec,
        input: &SchemaRef,
        schema: SchemaRef,
        append_only: bool,
        key_groups: RowKeyGroups,
    ) -> TaskResult<Self> {
        Ok(Rank {
            codec: Codec::try_new(spec, input, schema)?,
            partitions: HashMap::new(),
            append_only,
            sequence: 0,
            key_groups,
            changes: None,
        })
    }

    fn position(&mut self, order: &[u8]) -> Position {
        self.sequence += 1;
        let tie = if self.codec.spec.newest_first_on_ties { u64::MAX - self.sequence } else { self.sequence };
        (order.into(), tie)
    }
}

impl Operator for Rank {
    fn checkpointable(&self) -> Result<(), String> {
        Ok(())
    }

    fn keeps_keyed_state(&self) -> bool {
        true
    }

    fn track_changes(&mut self) {
        self.changes = Some(ChangedPartitions::default());
    }

    fn snapshot(&mut self, ctx: &mut SnapshotContext<'_>) -> TaskResult<()> {
        if !ctx.writes_keyed_state() {
            return Ok(());
        }
        let Some(changes) = self.changes.as_mut() else { return Ok(()) };
        changes.write(ctx, &mut self.partitions, |p, value| p.encode(value))
    }

    fn restore(&mut self, mut state: RestoredState) -> TaskResult<()> {
        let newest_first = self.codec.spec.newest_first_on_ties;
        for (key_group, key, value) in state.keyed.remove(&PARTITIONS).unwrap_or_default() {
            let mut r = codec::Reader::new(&value);
            let partition = Partition::decode(&mut r, key_group as u16)?;
            r.finish()?;
            self.sequence = self.sequence.max(partition.last_sequence(newest_first));
            self.partitions.insert(key.to_vec().into(), partition);
        }
        Ok(())
    }

    fn process(&mut self, _input: usize, batch: ChangeBatch, out: &mut Output) -> TaskResult<()> {
        let limit = self.codec.spec.limit;
        let pkeys = self.codec.partition.convert_columns(&Codec::columns(&batch.data, &self.codec.spec.partition))?;
        let order_cols: Vec<usize> = self.codec.spec.order.iter().map(|k| k.column).collect();
        let okeys = self.codec.order.convert_columns(&Codec::columns(&batch.data, &order_cols))?;
        let rows = self.codec.rows.convert_columns(batch.data.columns())?;
        // The top-n of every touched partition before this batch.
        let mut before: HashMap<Box<[u8]>, Vec<Box<[u8]>>> = HashMap::new();
        let mut touched: Vec<Box<[u8]>> = Vec::new();
        let mut key_groups = None;
        for r in 0..batch.num_rows() {
            let pkey: &[u8] = pkeys.row(r).data();
            if !before.contains_key(pkey) {
                let snapshot = self
                    .partitions
                    .get(pkey)
                    .map(|p| p.top(limit).into_iter().map(Box::from).collect())
                    .unwrap_or_default();
                before.insert(pkey.into(), snapshot);
                touched.push(pkey.into());
            }
            let row: &[u8] = rows.row(r).data();
            let order: &[u8] = okeys.row(r).data();
            if batch.kind(r).is_accumulate() {
                let position = self.position(order);
                if !self.partitions.contains_key(pkey) {
                    let key_group = match self.changes {
                        Some(_) => key_group_of(&self.key_groups, &mut key_groups, &batch.data, r)?,
                        None => 0,
                    };
                    self.partitions.insert(pkey.into(), Partition { key_group, ..Partition::default() });
                }
                let partition = self.partitions.get_mut(pkey).expect("inserted above");
                partition.rows.insert(position.clone(), row.into());
                let mut changed = true;
                if self.append_only && partition.rows.len() > limit {
                    // A row that does not make the top n leaves the state as it was.
                    changed = partition.rows.pop_last().is_none_or(|(p, _)| p != position);
                }
                if let Some(changes) = self.changes.as_mut().filter(|_| changed) {
                    changes.touch(pkey);
                }
            } else if let Some(partition) = self.partitions.get_mut(pkey) {
                let found = partition
                    .rows
                    .range((Box::<[u8]>::from(order), 0)..=(Box::<[u8]>::from(order), u64::MAX))
                    .find(|(_, v)| v.as_ref() == row)
                    .map(|(k, _)| k.clone());
                if let Some(k) = found {
                    partition.rows.remove(&k);
                    if let Some(changes) = &mut self.changes {
                        changes.touch(pkey);
                    }
                }
                if partition.rows.is_empty()
                    && let Some(gone) = self.partitions.remove(pkey)
                    && let Some(changes) = &mut self.changes
                {
                    changes.remove(pkey, &gone);
                }
            }
        }
        let mut emitted: Vec<(Box<[u8]>, usize)> = Vec::new();
        let mut kinds = Vec::new();
        let rank_column = self.codec.spec.rank_column;
        for pkey in touched {
            let old = before.remove(&pkey).unwrap_or_default();
            let new: Vec<&[u8]> = self.partitions.get(&pkey).map(|p| p.top(limit)).unwrap_or_default();
            let same = |a: &[u8], i: usize, list: &[&[u8]]| -> bool {
                if rank_column { list.get(i).is_some_and(|b| *b == a) } else { list.contains(&a) }
            };
            let old_refs: Vec<&[u8]> = old.iter().map(|b| b.as_ref()).collect();
            for (i, row) in old_refs.iter().enumerate() {
                if !same(row, i, &new) {
                    emitted.push(((*row).into(), i + 1));
                    kinds.push(RowKind::UpdateBefore);
                }
            }
            for (i, row) in new.iter().enumerate() {
                if !same(row, i, &old_refs) {
                    emitted.push(((*row).into(), i + 1));
                    kinds.push(RowKind::UpdateAfter);
                }
            }
        }
        if emitted.is_empty() {
            return Ok(());
        }
        let refs: Vec<(&[u8], usize)> = emitted.iter().map(|(r, k)| (r.as_ref(), *k)).collect();
        out.batch(self.codec.output(&refs, kinds)?);
        Ok(())
    }
}

pub struct WindowRank {
    codec: Codec,
    window_end: usize,
    partitions: HashMap<Box<[u8]>, Partition>,
    pending: BTreeMap<Timestamp, Vec<Box<[u8]>>>,
    watermark: Timestamp,
    sequence: u64,
    late: u64,
    key_groups: RowKeyGroups,
    /// With checkpoints: what changed since the last one.
    changes: Option<ChangedPartitions>,
}

impl WindowRank {
    pub fn try_new(
        spec: RankSpec,
        window_end: usize,
        input: &SchemaRef,
        schema: SchemaRef,
        key_groups: RowKeyGroups,
    ) -> TaskResult<Self> {
        Ok(WindowRank {
            codec: Codec::try_new(spec, input, schema)?,
            window_end,
            partitions: HashMap::new(),
            pending: BTreeMap::new(),
            watermark: MIN_WATERMARK,
            sequence: 0,
            late: 0,
            key_groups,
            changes: None,
        })
    }
}

impl Operator for WindowRank {
    fn checkpointable(&self) -> Result<(), String> {
        Ok(())
    }

    fn keeps_keyed_state(&self) -> bool {
        true
    }

    fn track_changes(&mut self) {
        self.changes = Some(ChangedPartitions::default());
    }

    fn snapshot(&mut self, ctx: &mut SnapshotContext<'_>) -> TaskResult<()> {
        // Windows that fired are gone: the watermark says which rows would now be late.
        ctx.operator_state = Some(serde_json::json!({ "watermark": self.watermark }));
        if !ctx.writes_keyed_state() {
            return Ok(());
        }
        let Some(changes) = self.changes.as_mut() else { return Ok(()) };
        changes.write(ctx, &mut self.partitions, |p, value| {
            codec::put_i64(value, p.window_end);
            p.encode(value)
        })
    }

    fn restore(&mut self, mut state: RestoredState) -> TaskResult<()> {
        let watermarks = state.operator_states.iter().filter_map(|s| s.get("watermark")?.as_i64());
        if let Some(w) = watermarks.min() {
            self.watermark = w;
        }
        let newest_first = self.codec.spec.newest_first_on_ties;
        for (key_group, key, value) in state.keyed.remove(&PARTITIONS).unwrap_or_default() {
            let mut r = codec::Reader::new(&value);
            let end = r.i64()?;
            let mut partition = Partition::decode(&mut r, key_group as u16)?;
            r.finish()?;
            partition.window_end = end;
            self.sequence = self.sequence.max(partition.last_sequence(newest_first));
            let key: Box<[u8]> = key.to_vec().into();
            self.pending.entry(end).or_default().push(key.clone());
            self.partitions.insert(key, partition);
        }
        Ok(())
    }

    fn process(&mut self, _input: usize, batch: ChangeBatch, _out: &mut Output) -> TaskResult<()> {
        let limit = self.codec.spec.limit;
        let mut key_groups = None;
        let ends = timestamp_millis(batch.data.column(self.window_end))?;
        let pkeys = self.codec.partition.convert_columns(&Codec::columns(&batch.data, &self.codec.spec.partition))?;
        let order_cols: Vec<usize> = self.codec.spec.order.iter().map(|k| k.column).collect();
        let okeys = self.codec.order.convert_columns(&Codec::columns(&batch.data, &order_cols))?;
        let rows = self.codec.rows.convert_columns(batch.data.columns())?;
        for r in 0..batch.num_rows() {
            let end = ends.value(r);
            if end - 1 <= self.watermark {
                self.late += 1;
                continue;
            }
            let pkey: &[u8] = pkeys.row(r).data();
            if !self.partitions.contains_key(pkey) {
                self.pending.entry(end).or_default().push(pkey.into());
                let key_group = match self.changes {
                    Some(_) => key_group_of(&self.key_groups, &mut key_groups, &batch.data, r)?,
                    None => 0,
                };
                self.partitions.insert(pkey.into(), Partition { key_group, window_end: end, ..Partition::default() });
            }
            self.sequence += 1;
            let tie = if self.codec.spec.newest_first_on_ties { u64::MAX - self.sequence } else { self.sequence };
            let partition = self.partitions.get_mut(pkey).expect("inserted above");
            let position: Position = (okeys.row(r).data().into(), tie);
            partition.rows.insert(position.clone(), rows.row(r).data().into());
            let mut changed = true;
            if partition.rows.len() > limit {
                // A row that does not make the top n leaves the state as it was.
                changed = partition.rows.pop_last().is_none_or(|(p, _)| p != position);
            }
            if let Some(changes) = self.changes.as_mut().filter(|_| changed) {
                changes.touch(pkey);
            }
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Output) -> TaskResult<()> {
        self.watermark = self.watermark.max(watermark);
        let mut fired: Vec<Partition> = Vec::new();
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() - 1 > watermark {
                break;
            }
            for pkey in entry.remove() {
                if let Some(p) = self.partitions.remove(&pkey) {
                    if let Some(changes) = &mut self.changes {
                        changes.remove(&pkey, &p);
                    }
                    fired.push(p);
                }
            }
        }
        if !fired.is_empty() {
            let limit = self.codec.spec.limit;
            let rows: Vec<(&[u8], usize)> =
                fired.iter().flat_map(|p| p.top(limit).into_iter().enumerate().map(|(i, r)| (r, i + 1))).collect();
            let kinds = vec![RowKind::Insert; rows.len()];
            out.batch(self.codec.output(&rows, kinds)?);
        }
        out.watermark(watermark);
        Ok(())
    }

    fn metrics(&self) -> OperatorMetrics {
        OperatorMetrics { late_records_dropped: self.late }
    }
}
