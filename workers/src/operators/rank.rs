//! Top-N (`ROW_NUMBER() OVER (PARTITION BY … ORDER BY …) <= n`) and its special case,
//! deduplication (`= 1` ordered by event time).
//!
//! [`Rank`] keeps, per partition, the rows in order (only the best `n` when the input is
//! append-only, all of them when rows can be retracted) and after each batch emits the
//! difference between the partition's top-n before and after. [`WindowRank`] ranks each window
//! once, when the watermark passes its end.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch};
use arrow::compute::SortOptions;
use arrow::datatypes::SchemaRef;
use arrow_row::{RowConverter, SortField};
use hashbrown::HashMap;
use weir_dataflow::event::{ChangeBatch, MIN_WATERMARK, RowKind, Timestamp};
use weir_dataflow::plan::RankSpec;

use super::keys::timestamp_millis;
use super::{Operator, OperatorMetrics, Output};
use crate::error::TaskResult;

/// A row's place in its partition: its sort key, then arrival (or reverse arrival) order.
type Position = (Box<[u8]>, u64);

/// Rows of one partition in rank order.
#[derive(Default)]
struct Partition {
    rows: BTreeMap<Position, Box<[u8]>>,
}

impl Partition {
    fn top(&self, limit: usize) -> Vec<&[u8]> {
        self.rows.values().take(limit).map(|r| r.as_ref()).collect()
    }
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
}

impl Rank {
    pub fn try_new(spec: RankSpec, input: &SchemaRef, schema: SchemaRef, append_only: bool) -> TaskResult<Self> {
        Ok(Rank { codec: Codec::try_new(spec, input, schema)?, partitions: HashMap::new(), append_only, sequence: 0 })
    }

    fn position(&mut self, order: &[u8]) -> Position {
        self.sequence += 1;
        let tie = if self.codec.spec.newest_first_on_ties { u64::MAX - self.sequence } else { self.sequence };
        (order.into(), tie)
    }
}

impl Operator for Rank {
    fn checkpointable(&self) -> Result<(), String> {
        Err("Top-N state cannot be checkpointed yet".into())
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
                let partition = self.partitions.entry_ref(pkey).or_default();
                partition.rows.insert(position, row.into());
                if self.append_only && partition.rows.len() > limit {
                    partition.rows.pop_last();
                }
            } else if let Some(partition) = self.partitions.get_mut(pkey) {
                let found = partition
                    .rows
                    .range((Box::<[u8]>::from(order), 0)..=(Box::<[u8]>::from(order), u64::MAX))
                    .find(|(_, v)| v.as_ref() == row)
                    .map(|(k, _)| k.clone());
                if let Some(k) = found {
                    partition.rows.remove(&k);
                }
                if partition.rows.is_empty() {
                    self.partitions.remove(pkey);
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
}

impl WindowRank {
    pub fn try_new(spec: RankSpec, window_end: usize, input: &SchemaRef, schema: SchemaRef) -> TaskResult<Self> {
        Ok(WindowRank {
            codec: Codec::try_new(spec, input, schema)?,
            window_end,
            partitions: HashMap::new(),
            pending: BTreeMap::new(),
            watermark: MIN_WATERMARK,
            sequence: 0,
            late: 0,
        })
    }
}

impl Operator for WindowRank {
    fn checkpointable(&self) -> Result<(), String> {
        Err("window Top-N state cannot be checkpointed yet".into())
    }

    fn process(&mut self, _input: usize, batch: ChangeBatch, _out: &mut Output) -> TaskResult<()> {
        let limit = self.codec.spec.limit;
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
            }
            self.sequence += 1;
            let tie = if self.codec.spec.newest_first_on_ties { u64::MAX - self.sequence } else { self.sequence };
            let partition = self.partitions.entry_ref(pkey).or_default();
            partition.rows.insert((okeys.row(r).data().into(), tie), rows.row(r).data().into());
            if partition.rows.len() > limit {
                partition.rows.pop_last();
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
