//! Group aggregation without a window: an updating result per key. After each input batch the
//! operator emits, for every key the batch touched, what changed: `+I` for a new key, `-U`/`+U`
//! for a changed result, `-D` when a changelog input retracted a key's last row. Emitting per
//! batch rather than per row gives the same final result as Flink with fewer updates.

use arrow::array::{ArrayRef, Int8Array, RecordBatch, UInt32Array};
use arrow::compute::{concat, take};
use arrow::datatypes::SchemaRef;
use arrow_row::{RowConverter, SortField};
use std::sync::Arc;
use weir_dataflow::event::{ChangeBatch, RowKind};
use weir_dataflow::plan::AggregateCall;

use super::aggregate::Aggregates;
use super::keys::GroupKeys;
use super::{Operator, Output};
use crate::error::TaskResult;

pub struct GroupAggregate {
    keys: Vec<usize>,
    groups: GroupKeys,
    aggs: Aggregates,
    /// Rows accumulated minus rows retracted, per group.
    counts: Vec<i64>,
    /// The aggregate values last emitted per group, row-encoded.
    emitted: Vec<Option<Box<[u8]>>>,
    values: RowConverter,
    schema: SchemaRef,
}

impl GroupAggregate {
    pub fn try_new(
        input: SchemaRef,
        keys: Vec<usize>,
        calls: Vec<AggregateCall>,
        schema: SchemaRef,
        retract: bool,
    ) -> TaskResult<Self> {
        let key_count = keys.len();
        let value_fields =
            schema.fields().iter().skip(key_count).map(|f| SortField::new(f.data_type().clone())).collect();
        Ok(GroupAggregate {
            groups: GroupKeys::try_new(&input, &keys)?,
            keys,
            aggs: Aggregates::new(calls, retract)?,
            counts: Vec::new(),
            emitted: Vec::new(),
            values: RowConverter::new(value_fields)?,
            schema,
        })
    }
}

impl Operator for GroupAggregate {
    fn checkpointable(&self) -> Result<(), String> {
        Err("group aggregation state cannot be checkpointed yet".into())
    }

    fn process(&mut self, _input: usize, batch: ChangeBatch, out: &mut Output) -> TaskResult<()> {
        let key_columns: Vec<ArrayRef> = self.keys.iter().map(|k| batch.data.column(*k).clone()).collect();
        let assigned = self.groups.assign(&key_columns, batch.num_rows())?;
        let mut ids = Vec::with_capacity(batch.num_rows());
        let mut touched = Vec::new();
        let mut seen = hashbrown::HashSet::new();
        for (r, (id, _)) in assigned.into_iter().enumerate() {
            if id >= self.counts.len() {
                self.counts.resize(id + 1, 0);
                self.emitted.resize(id + 1, None);
            }
            if seen.insert(id) {
                touched.push(id);
            }
            self.counts[id] += if batch.kind(r).is_accumulate() { 1 } else { -1 };
            ids.push(id);
        }
        self.aggs.ensure(self.groups.capacity());
        self.aggs.update(&batch, &ids)?;

        // What to emit: retractions of old results first, then the new results.
        let live: Vec<usize> = touched.iter().copied().filter(|g| self.counts[*g] > 0).collect();
        let new_values = self.aggs.evaluate(&live)?;
        let new_rows = self.values.convert_columns(&new_values)?;
        let mut before: Vec<(usize, RowKind)> = Vec::new();
        let mut after: Vec<(usize, RowKind)> = Vec::new();
        let mut before_bytes: Vec<Box<[u8]>> = Vec::new();
        for (i, g) in live.iter().enumerate() {
            let new: &[u8] = new_rows.row(i).data();
            match &self.emitted[*g] {
                None => after.push((i, RowKind::Insert)),
                Some(prev) if prev.as_ref() == new => {}
                Some(prev) => {
                    before.push((*g, RowKind::UpdateBefore));
                    before_bytes.push(prev.clone());
                    after.push((i, RowKind::UpdateAfter));
                }
            }
        }
        for g in touched.iter().filter(|g| self.counts[**g] <= 0) {
            if let Some(prev) = self.emitted[*g].take() {
                before.push((*g, RowKind::Delete));
                before_bytes.push(prev);
            }
        }
        // Remember what is now emitted, and forget emptied groups.
        for &(i, _) in &after {
            self.emitted[live[i]] = Some(new_rows.row(i).data().into());
        }
        let emptied: Vec<usize> = touched.iter().copied().filter(|g| self.counts[*g] <= 0).collect();
        for g in emptied {
            self.counts[g] = 0;
            self.emitted[g] = None;
            self.aggs.reset(g);
            self.groups.remove(g);
        }
        if before.is_empty() && after.is_empty() {
            return Ok(());
        }

        let parser = self.values.parser();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        // Every touched group has a row in this batch: take its key from there (deleted groups
        // are already gone from the key table).
        let last_row: hashbrown::HashMap<usize, u32> = ids.iter().enumerate().map(|(r, g)| (*g, r as u32)).collect();
        let key_rows = UInt32Array::from_iter_values(
            before.iter().map(|(g, _)| last_row[g]).chain(after.iter().map(|(i, _)| last_row[&live[*i]])),
        );
        for k in &key_columns {
            columns.push(take(k.as_ref(), &key_rows, None)?);
        }
        let before_values = self.values.convert_rows(before_bytes.iter().map(|b| parser.parse(b)))?;
        let after_idx = UInt32Array::from_iter_values(after.iter().map(|(i, _)| *i as u32));
        for (v, new) in new_values.iter().enumerate() {
            let taken = take(new.as_ref(), &after_idx, None)?;
            columns.push(concat(&[before_values[v].as_ref(), taken.as_ref()])?);
        }
        let kinds = Int8Array::from_iter_values(before.iter().chain(after.iter()).map(|(_, k)| *k as i8));
        let data = RecordBatch::try_new(self.schema.clone(), columns)?;
        out.batch(ChangeBatch { data, kinds: Some(Arc::new(kinds)) });
        Ok(())
    }
}
