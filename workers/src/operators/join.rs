//! Regular (unwindowed) joins: inner, left, right and full outer, over append-only or changelog
//! inputs, with an optional non-equi condition.
//!
//! Each side keeps its rows by join key, each with a multiplicity and, for a side whose rows are
//! preserved (the left of a LEFT JOIN), the number of rows of the other side it matches. A
//! preserved row without matches is emitted padded with NULLs and retracted when its first
//! match arrives, as Flink's streaming join does. State is unbounded, as in Flink without TTL.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Int8Array, RecordBatch, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::SchemaRef;
use arrow_row::{RowConverter, SortField};
use hashbrown::HashMap;
use weir_dataflow::event::{ChangeBatch, RowKind};
use weir_dataflow::plan::{JoinKind, PhysExpr};

use super::{Operator, Output};
use crate::error::{TaskError, TaskResult};

/// A side's encoded row, or `None` for NULL padding.
type SideRow<'a> = Option<&'a [u8]>;
/// One output row as (left, right).
type Pair<'a> = (SideRow<'a>, SideRow<'a>);
type OwnedPair = (Option<Box<[u8]>>, Option<Box<[u8]>>);

struct Stored {
    row: Box<[u8]>,
    count: i64,
    /// Matching rows of the other side (only kept for a preserved side).
    matches: i64,
}

struct Side {
    keys: Vec<usize>,
    /// Columns of this side that appear in the join's output.
    width: usize,
    rows: RowConverter,
    state: HashMap<Box<[u8]>, Vec<Stored>>,
    preserved: bool,
}

pub struct Join {
    sides: [Side; 2],
    key_rows: RowConverter,
    filter: Option<PhysExpr>,
    schema: SchemaRef,
}

impl Join {
    #[allow(clippy::too_many_arguments)]
    pub fn try_new(
        kind: JoinKind,
        left_schema: SchemaRef,
        right_schema: SchemaRef,
        left_keys: Vec<usize>,
        right_keys: Vec<usize>,
        widths: [usize; 2],
        filter: Option<PhysExpr>,
        schema: SchemaRef,
    ) -> TaskResult<Self> {
        let key_fields = left_keys.iter().map(|k| SortField::new(left_schema.field(*k).data_type().clone())).collect();
        let side = |schema: &SchemaRef, keys: Vec<usize>, width: usize, preserved: bool| -> TaskResult<Side> {
            let fields = schema.fields().iter().take(width).map(|f| SortField::new(f.data_type().clone())).collect();
            Ok(Side { keys, width, rows: RowConverter::new(fields)?, state: HashMap::new(), preserved })
        };
        let (left_preserved, right_preserved) = match kind {
            JoinKind::Inner => (false, false),
            JoinKind::Left => (true, false),
            JoinKind::Right => (false, true),
            JoinKind::Full => (true, true),
        };
        Ok(Join {
            sides: [
                side(&left_schema, left_keys, widths[0], left_preserved)?,
                side(&right_schema, right_keys, widths[1], right_preserved)?,
            ],
            key_rows: RowConverter::new(key_fields)?,
            filter,
            schema,
        })
    }

    /// Decodes pairs of side rows into an output batch (`None` = NULLs).
    fn build(&self, rows: &[Pair<'_>]) -> TaskResult<RecordBatch> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for (s, side) in self.sides.iter().enumerate() {
            let present: Vec<&[u8]> = rows.iter().filter_map(|r| if s == 0 { r.0 } else { r.1 }).collect();
            let parser = side.rows.parser();
            let decoded = side.rows.convert_rows(present.iter().map(|b| parser.parse(b)))?;
            let mut next = 0u32;
            let indices: UInt32Array = rows
                .iter()
                .map(|r| {
                    let some = if s == 0 { r.0.is_some() } else { r.1.is_some() };
                    some.then(|| {
                        next += 1;
                        next - 1
                    })
                })
                .collect();
            for c in decoded {
                columns.push(take(c.as_ref(), &indices, None)?);
            }
        }
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

impl Operator for Join {
    fn process(&mut self, input: usize, batch: ChangeBatch, out: &mut Output) -> TaskResult<()> {
        if input > 1 {
            return Err(TaskError::Unsupported("a join has two inputs".into()));
        }
        let (s, o) = (input, 1 - input);
        let key_columns: Vec<ArrayRef> = self.sides[s].keys.iter().map(|k| batch.data.column(*k).clone()).collect();
        let keys = self.key_rows.convert_columns(&key_columns)?;
        let has_null_key: Vec<bool> = (0..batch.num_rows()).map(|r| key_columns.iter().any(|c| c.is_null(r))).collect();
        let data_columns: Vec<ArrayRef> = batch.data.columns()[..self.sides[s].width].to_vec();
        let rows = self.sides[s].rows.convert_columns(&data_columns)?;

        // Which candidate pairs satisfy the non-equi condition, evaluated for the whole batch.
        let mut pair_ok: Vec<Vec<bool>> = Vec::with_capacity(batch.num_rows());
        if let Some(filter) = &self.filter {
            let mut pairs: Vec<Pair<'_>> = Vec::new();
            for (r, null_key) in has_null_key.iter().enumerate() {
                if *null_key {
                    continue;
                }
                if let Some(candidates) = self.sides[o].state.get(keys.row(r).data()) {
                    for c in candidates {
                        let mine = Some(rows.row(r).data());
                        let other = Some(c.row.as_ref());
                        pairs.push(if s == 0 { (mine, other) } else { (other, mine) });
                    }
                }
            }
            let mask = if pairs.is_empty() {
                BooleanArray::from(Vec::<bool>::new())
            } else {
                let joined = self.build(&pairs)?;
                let m = filter.evaluate(&joined)?.into_array(joined.num_rows())?;
                m.as_any()
                    .downcast_ref::<BooleanArray>()
                    .cloned()
                    .ok_or_else(|| TaskError::Unsupported("a join condition must evaluate to BOOLEAN".into()))?
            };
            let mut next = 0;
            for (r, null_key) in has_null_key.iter().enumerate() {
                let n = if *null_key { 0 } else { self.sides[o].state.get(keys.row(r).data()).map_or(0, |c| c.len()) };
                pair_ok.push((next..next + n).map(|i| mask.is_valid(i) && mask.value(i)).collect());
                next += n;
            }
        }

        let mut pending: Vec<(RowKind, OwnedPair)> = Vec::new();
        let pair = |mine: &[u8], other: SideRow<'_>| -> OwnedPair {
            let mine = Some(mine.into());
            let other = other.map(Into::into);
            if s == 0 { (mine, other) } else { (other, mine) }
        };
        for (r, null_key) in has_null_key.iter().enumerate() {
            let accumulate = batch.kind(r).is_accumulate();
            let row: &[u8] = rows.row(r).data();
            if *null_key {
                if self.sides[s].preserved {
                    let (l, rr) = pair(row, None);
                    pending.push((if accumulate { RowKind::Insert } else { RowKind::Delete }, (l, rr)));
                }
                continue;
            }
            let key: &[u8] = keys.row(r).data();
            let [a, b] = &mut self.sides;
            let (mine_side, other_side) = if s == 0 { (a, b) } else { (b, a) };
            let mut matched = 0i64;
            if let Some(candidates) = other_side.state.get_mut(key) {
                for (i, c) in candidates.iter_mut().enumerate() {
                    if let Some(ok) = pair_ok.get(r)
                        && !ok[i]
                    {
                        continue;
                    }
                    matched += c.count;
                    if accumulate {
                        if other_side.preserved {
                            if c.matches == 0 {
                                for _ in 0..c.count {
                                    let (l, rr) = pair_other_padded(s, &c.row);
                                    pending.push((RowKind::Delete, (l, rr)));
                                }
                            }
                            c.matches += 1;
                        }
                        for _ in 0..c.count {
                            let (l, rr) = pair(row, Some(&c.row));
                            pending.push((RowKind::Insert, (l, rr)));
                        }
                    } else {
                        for _ in 0..c.count {
                            let (l, rr) = pair(row, Some(&c.row));
                            pending.push((RowKind::Delete, (l, rr)));
                        }
                        if other_side.preserved {
                            c.matches -= 1;
                            if c.matches == 0 {
                                for _ in 0..c.count {
                                    let (l, rr) = pair_other_padded(s, &c.row);
                                    pending.push((RowKind::Insert, (l, rr)));
                                }
                            }
                        }
                    }
                }
            }
            if matched == 0 && mine_side.preserved {
                let (l, rr) = pair(row, None);
                pending.push((if accumulate { RowKind::Insert } else { RowKind::Delete }, (l, rr)));
            }
            let bucket = mine_side.state.entry_ref(key).or_default();
            match bucket.iter().position(|x| x.row.as_ref() == row) {
                Some(i) => {
                    bucket[i].count += if accumulate { 1 } else { -1 };
                    if bucket[i].count <= 0 {
                        bucket.swap_remove(i);
                    }
                }
                None if accumulate => bucket.push(Stored { row: row.into(), count: 1, matches: matched }),
                None => {}
            }
            if bucket.is_empty() {
                mine_side.state.remove(key);
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        let refs: Vec<Pair<'_>> = pending.iter().map(|(_, (l, r))| (l.as_deref(), r.as_deref())).collect();
        let data = self.build(&refs)?;
        let kinds = pending.iter().map(|(k, _)| *k).collect::<Vec<_>>();
        let all_inserts = kinds.iter().all(|k| *k == RowKind::Insert);
        out.batch(if all_inserts {
            ChangeBatch::inserts(data)
        } else {
            ChangeBatch { data, kinds: Some(Arc::new(Int8Array::from_iter_values(kinds.iter().map(|k| *k as i8)))) }
        });
        Ok(())
    }
}

/// The other side's row padded with NULLs for the side `s` being processed.
fn pair_other_padded(s: usize, other: &[u8]) -> OwnedPair {
    if s == 0 { (None, Some(other.into())) } else { (Some(other.into()), None) }
}
