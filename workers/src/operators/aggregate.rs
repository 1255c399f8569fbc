//! Aggregate functions over groups, with Flink's semantics: `COUNT`, `SUM`, `AVG`, `MIN`, `MAX`,
//! `FIRST_VALUE`, `LAST_VALUE`, each optionally `DISTINCT` and with `FILTER (WHERE …)`, and all
//! retractable (a `-U`/`-D` row takes its value back out) where the input is a changelog.
//!
//! State is kept per call in dense vectors indexed by group id, so updating a batch is one pass
//! over its rows per call with no per-row allocation on the numeric paths.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, Float64Array, Int64Array, RecordBatch, StringArray,
    new_null_array,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion_common::ScalarValue;
use hashbrown::HashMap;
use weir_dataflow::event::ChangeBatch;
use weir_dataflow::plan::{AggKind, AggregateCall};

use super::codec;
use crate::error::{TaskError, TaskResult};

/// One value of an aggregate's argument, ordered as SQL orders it.
#[derive(Clone, Debug)]
pub enum Val {
    Int(i64),
    Float(f64),
    Decimal(i128),
    Str(Box<str>),
    Bool(bool),
    Other(ScalarValue),
}

impl PartialEq for Val {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Val {}

impl PartialOrd for Val {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Val {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Val::Int(a), Val::Int(b)) => a.cmp(b),
            (Val::Float(a), Val::Float(b)) => a.total_cmp(b),
            (Val::Decimal(a), Val::Decimal(b)) => a.cmp(b),
            (Val::Str(a), Val::Str(b)) => a.cmp(b),
            (Val::Bool(a), Val::Bool(b)) => a.cmp(b),
            (Val::Other(a), Val::Other(b)) => a.partial_cmp(b).unwrap_or(Ordering::Equal),
            _ => Ordering::Equal,
        }
    }
}

impl std::hash::Hash for Val {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            Val::Int(v) => v.hash(state),
            Val::Float(v) => v.to_bits().hash(state),
            Val::Decimal(v) => v.hash(state),
            Val::Str(v) => v.hash(state),
            Val::Bool(v) => v.hash(state),
            Val::Other(v) => v.hash(state),
        }
    }
}

/// An argument column, converted once per batch to the representation its values use.
enum ArgColumn {
    Int(Int64Array),
    Float(Float64Array),
    Decimal(Decimal128Array),
    Str(StringArray),
    Bool(BooleanArray),
    Other(ArrayRef),
}

impl ArgColumn {
    fn is_valid(&self, row: usize) -> bool {
        match self {
            ArgColumn::Int(a) => a.is_valid(row),
            ArgColumn::Float(a) => a.is_valid(row),
            ArgColumn::Decimal(a) => a.is_valid(row),
            ArgColumn::Str(a) => a.is_valid(row),
            ArgColumn::Bool(a) => a.is_valid(row),
            ArgColumn::Other(a) => a.is_valid(row),
        }
    }

    fn new(array: &ArrayRef) -> TaskResult<Self> {
        Ok(match array.data_type() {
            t if is_int_like(t) => {
                let as_int = match array.data_type() {
                    DataType::Date32 => cast(&cast(array, &DataType::Int32)?, &DataType::Int64)?,
                    DataType::Time32(_) => cast(&cast(array, &DataType::Int32)?, &DataType::Int64)?,
                    _ => cast(array, &DataType::Int64)?,
                };
                ArgColumn::Int(as_int.as_primitive::<Int64Type>().clone())
            }
            DataType::Float16 | DataType::Float32 | DataType::Float64 => {
                ArgColumn::Float(cast(array, &DataType::Float64)?.as_primitive::<Float64Type>().clone())
            }
            DataType::Decimal128(_, _) => ArgColumn::Decimal(array.as_primitive().clone()),
            DataType::Utf8 => ArgColumn::Str(array.as_string::<i32>().clone()),
            DataType::LargeUtf8 | DataType::Utf8View => {
                ArgColumn::Str(cast(array, &DataType::Utf8)?.as_string::<i32>().clone())
            }
            DataType::Boolean => ArgColumn::Bool(array.as_boolean().clone()),
            _ => ArgColumn::Other(array.clone()),
        })
    }

    fn get(&self, row: usize) -> TaskResult<Option<Val>> {
        Ok(match self {
            ArgColumn::Int(a) => a.is_valid(row).then(|| Val::Int(a.value(row))),
            ArgColumn::Float(a) => a.is_valid(row).then(|| Val::Float(a.value(row))),
            ArgColumn::Decimal(a) => a.is_valid(row).then(|| Val::Decimal(a.value(row))),
            ArgColumn::Str(a) => a.is_valid(row).then(|| Val::Str(a.value(row).into())),
            ArgColumn::Bool(a) => a.is_valid(row).then(|| Val::Bool(a.value(row))),
            ArgColumn::Other(a) => {
                if a.is_valid(row) {
                    Some(Val::Other(ScalarValue::try_from_array(a, row)?))
                } else {
                    None
                }
            }
        })
    }
}

/// Running state of one call for one group.
#[derive(Clone, Debug, Default)]
enum State {
    #[default]
    Empty,
    Count(i64),
    /// Sum (as i128 for exactness of integers and decimals) and number of non-null values.
    SumInt {
        sum: i128,
        count: i64,
    },
    SumFloat {
        sum: f64,
        count: i64,
    },
    /// Min or max of an append-only input.
    Extreme(Option<Val>),
    /// Min or max of a changelog input: every value with its multiplicity.
    Multiset(BTreeMap<Val, i64>),
    /// First or last value seen.
    Single(Option<Val>),
}

/// Per-group state of one call, in dense vectors indexed by group id. The common aggregates
/// get typed vectors (a few bytes per group); the rest fall back to [`State`].
enum Store {
    Count(Vec<i64>),
    /// Integer and decimal SUM/AVG: the exact sum and the number of values.
    SumInt {
        sums: Vec<i128>,
        counts: Vec<i64>,
    },
    SumFloat {
        sums: Vec<f64>,
        counts: Vec<i64>,
    },
    /// MIN/MAX of an append-only integer-like column (integers, dates, times, timestamps).
    ExtremeInt(Vec<Option<i64>>),
    /// Any other call: its state per group, and the heap bytes those states hold beyond the
    /// vector (strings, multisets), kept up to date as they change.
    Generic {
        states: Vec<State>,
        heap: usize,
    },
}

impl Store {
    fn for_call(call: &AggregateCall, retract: bool) -> Store {
        let int_like = is_int_like(&call.arg_type);
        match call.kind {
            AggKind::CountStar | AggKind::Count => Store::Count(vec![]),
            AggKind::Sum | AggKind::Avg if int_like || matches!(call.arg_type, DataType::Decimal128(_, _)) => {
                Store::SumInt { sums: vec![], counts: vec![] }
            }
            AggKind::Sum | AggKind::Avg if call.arg_type.is_floating() => {
                Store::SumFloat { sums: vec![], counts: vec![] }
            }
            AggKind::Min | AggKind::Max if int_like && !retract => Store::ExtremeInt(vec![]),
            _ => Store::Generic { states: vec![], heap: 0 },
        }
    }

    fn len(&self) -> usize {
        match self {
            Store::Count(v) => v.len(),
            Store::SumInt { counts, .. } | Store::SumFloat { counts, .. } => counts.len(),
            Store::ExtremeInt(v) => v.len(),
            Store::Generic { states, .. } => states.len(),
        }
    }

    fn resize(&mut self, n: usize) {
        match self {
            Store::Count(v) => v.resize(n, 0),
            Store::SumInt { sums, counts } => {
                sums.resize(n, 0);
                counts.resize(n, 0);
            }
            Store::SumFloat { sums, counts } => {
                sums.resize(n, 0.0);
                counts.resize(n, 0);
            }
            Store::ExtremeInt(v) => v.resize(n, None),
            Store::Generic { states, heap } => {
                for dropped in states.iter().skip(n) {
                    *heap -= dropped.heap_bytes();
                }
                states.resize(n, State::Empty)
            }
        }
    }

    fn reset(&mut self, g: usize) {
        match self {
            Store::Count(v) => v[g] = 0,
            Store::SumInt { sums, counts } => {
                sums[g] = 0;
                counts[g] = 0;
            }
            Store::SumFloat { sums, counts } => {
                sums[g] = 0.0;
                counts[g] = 0;
            }
            Store::ExtremeInt(v) => v[g] = None,
            Store::Generic { states, heap } => {
                *heap -= states[g].heap_bytes();
                states[g] = State::Empty;
            }
        }
    }

    /// Folds one value (`None` for `COUNT(*)`) into group `g`.
    fn apply(&mut self, g: usize, kind: AggKind, retract: bool, value: Option<Val>, add: bool) -> TaskResult<()> {
        let sign: i64 = if add { 1 } else { -1 };
        match (self, value) {
            (Store::Count(v), _) => v[g] += sign,
            (Store::SumInt { sums, counts }, Some(Val::Int(i))) => {
                sums[g] += i as i128 * sign as i128;
                counts[g] += sign;
            }
            (Store::SumInt { sums, counts }, Some(Val::Decimal(d))) => {
                sums[g] += d * sign as i128;
                counts[g] += sign;
            }
            (Store::SumFloat { sums, counts }, Some(Val::Float(f))) => {
                sums[g] += f * sign as f64;
                counts[g] += sign;
            }
            (Store::ExtremeInt(v), Some(Val::Int(i))) => {
                let better = match v[g] {
                    None => true,
                    Some(c) => {
                        if kind == AggKind::Min {
                            i < c
                        } else {
                            i > c
                        }
                    }
                };
                if better {
                    v[g] = Some(i);
                }
            }
            (Store::Generic { states, heap }, value) => {
                let grown = apply(&mut states[g], kind, retract, value, add)?;
                *heap = heap.checked_add_signed(grown).expect("heap bytes of live aggregate state");
            }
            (_, Some(other)) => return Err(TaskError::Unsupported(format!("{kind:?} of {other:?}"))),
            (_, None) => {}
        }
        Ok(())
    }
}

fn is_int_like(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::Date32
            | DataType::Date64
            | DataType::Timestamp(_, _)
            | DataType::Time32(_)
            | DataType::Time64(_)
    )
}

struct CallState {
    call: AggregateCall,
    retract: bool,
    store: Store,
    /// `DISTINCT`: per group, each value with how many rows hold it.
    distinct: Vec<HashMap<Val, i64>>,
    /// Heap bytes of `distinct`'s entries.
    distinct_heap: usize,
}

/// The aggregate calls of one operator.
pub struct Aggregates {
    calls: Vec<CallState>,
}

impl Aggregates {
    pub fn new(calls: Vec<AggregateCall>, retract: bool) -> TaskResult<Self> {
        for c in &calls {
            if retract && matches!(c.kind, AggKind::FirstValue | AggKind::LastValue) {
                return Err(TaskError::Unsupported(
                    "FIRST_VALUE/LAST_VALUE over a changelog (updating) input is not supported".into(),
                ));
            }
        }
        Ok(Aggregates {
            calls: calls
                .into_iter()
                .map(|call| CallState {
                    store: Store::for_call(&call, retract),
                    call,
                    retract,
                    distinct: vec![],
                    distinct_heap: 0,
                })
                .collect(),
        })
    }

    /// Makes room for group ids below `groups`.
    pub fn ensure(&mut self, groups: usize) {
        for c in &mut self.calls {
            if c.store.len() < groups {
                c.store.resize(groups);
                if c.call.distinct {
                    c.distinct.resize_with(groups, HashMap::new);
                }
            }
        }
    }

    /// About how many bytes of memory a group's state takes (typed state exactly; generic
    /// state by its fixed part, a DISTINCT call's values at a guess).
    pub fn bytes_per_group(&self) -> usize {
        self.calls
            .iter()
            .map(|c| {
                let fixed = match &c.store {
                    Store::Count(_) => 8,
                    Store::SumInt { .. } => 24,
                    Store::SumFloat { .. } => 16,
                    Store::ExtremeInt(_) => 16,
                    Store::Generic { .. } => std::mem::size_of::<State>(),
                };
                fixed + if c.call.distinct { std::mem::size_of::<HashMap<Val, i64>>() } else { 0 }
            })
            .sum()
    }

    /// Bytes the groups' state holds on the heap beyond [`bytes_per_group`](Self::bytes_per_group)
    /// each: strings, multisets of a retracting MIN/MAX, DISTINCT values. Kept exactly as they
    /// change.
    pub fn heap_bytes(&self) -> usize {
        self.calls
            .iter()
            .map(|c| c.distinct_heap + if let Store::Generic { heap, .. } = &c.store { *heap } else { 0 })
            .sum()
    }

    /// Clears a group's state so its id can be reused.
    pub fn reset(&mut self, group: usize) {
        for c in &mut self.calls {
            c.store.reset(group);
            if c.call.distinct {
                c.distinct_heap -= distinct_heap_bytes(&c.distinct[group]);
                c.distinct[group] = HashMap::new();
            }
        }
    }

    /// Folds the rows of `batch` into their groups: `groups[row]` is the row's group id.
    pub fn update(&mut self, batch: &ChangeBatch, groups: &[usize]) -> TaskResult<()> {
        for c in &mut self.calls {
            c.update(&batch.data, batch, groups)?;
        }
        Ok(())
    }

    /// The current value of every call for `groups`, as output columns.
    pub fn evaluate(&self, groups: &[usize]) -> TaskResult<Vec<ArrayRef>> {
        self.calls.iter().map(|c| c.evaluate(groups)).collect()
    }

    /// Appends the state of every call for `group`, for a checkpoint.
    pub fn encode_group(&self, group: usize, out: &mut Vec<u8>) -> TaskResult<()> {
        for c in &self.calls {
            c.store.encode(group, out)?;
            if c.call.distinct {
                let seen = &c.distinct[group];
                codec::put_i64(out, seen.len() as i64);
                for (v, n) in seen {
                    encode_val(v, out)?;
                    codec::put_i64(out, *n);
                }
            }
        }
        Ok(())
    }

    /// Restores `group`'s state from what [`encode_group`](Self::encode_group) wrote.
    pub fn decode_group(&mut self, group: usize, r: &mut codec::Reader<'_>) -> TaskResult<()> {
        self.ensure(group + 1);
        for c in &mut self.calls {
            c.store.decode(group, r)?;
            if c.call.distinct {
                let n = r.i64()?;
                c.distinct_heap -= distinct_heap_bytes(&c.distinct[group]);
                let seen = &mut c.distinct[group];
                seen.clear();
                for _ in 0..n {
                    let v = decode_val(r)?;
                    seen.insert(v, r.i64()?);
                }
                c.distinct_heap += distinct_heap_bytes(seen);
            }
        }
        Ok(())
    }
}

fn encode_val(v: &Val, out: &mut Vec<u8>) -> TaskResult<()> {
    match v {
        Val::Int(i) => {
            codec::put_u8(out, 0);
            codec::put_i64(out, *i);
        }
        Val::Float(f) => {
            codec::put_u8(out, 1);
            codec::put_f64(out, *f);
        }
        Val::Decimal(d) => {
            codec::put_u8(out, 2);
            codec::put_i128(out, *d);
        }
        Val::Str(s) => {
            codec::put_u8(out, 3);
            codec::put_bytes(out, s.as_bytes());
        }
        Val::Bool(b) => {
            codec::put_u8(out, 4);
            codec::put_u8(out, *b as u8);
        }
        Val::Other(v) => {
            return Err(TaskError::Unsupported(format!(
                "checkpointing an aggregate over {} values is not supported yet",
                v.data_type()
            )));
        }
    }
    Ok(())
}

fn decode_val(r: &mut codec::Reader<'_>) -> TaskResult<Val> {
    Ok(match r.u8()? {
        0 => Val::Int(r.i64()?),
        1 => Val::Float(r.f64()?),
        2 => Val::Decimal(r.i128()?),
        3 => Val::Str(r.str()?.into()),
        4 => Val::Bool(r.u8()? != 0),
        _ => return Err(codec::Reader::error("unknown value tag")),
    })
}

fn encode_opt_val(v: &Option<Val>, out: &mut Vec<u8>) -> TaskResult<()> {
    match v {
        None => codec::put_u8(out, 0),
        Some(v) => {
            codec::put_u8(out, 1);
            encode_val(v, out)?;
        }
    }
    Ok(())
}

fn decode_opt_val(r: &mut codec::Reader<'_>) -> TaskResult<Option<Val>> {
    Ok(if r.u8()? == 0 { None } else { Some(decode_val(r)?) })
}

/// A multiset entry's bytes besides its value's heap: the value, its count, and a B-tree
/// node's share (nodes hold up to 11 entries and are about two-thirds full).
const MULTISET_ENTRY_BYTES: usize = (std::mem::size_of::<Val>() + 8) * 3 / 2;
/// A `DISTINCT` entry's bytes besides its value's heap: the value, its count, and a hash
/// table's spare capacity and control byte.
const DISTINCT_ENTRY_BYTES: usize = (std::mem::size_of::<Val>() + 8) * 8 / 7 + 1;

impl Val {
    /// Bytes this value holds on the heap.
    fn heap_bytes(&self) -> usize {
        match self {
            Val::Str(s) => s.len(),
            Val::Other(v) => v.size().saturating_sub(std::mem::size_of::<ScalarValue>()),
            Val::Int(_) | Val::Float(_) | Val::Decimal(_) | Val::Bool(_) => 0,
        }
    }
}

fn distinct_heap_bytes(seen: &HashMap<Val, i64>) -> usize {
    seen.keys().map(|v| DISTINCT_ENTRY_BYTES + v.heap_bytes()).sum()
}

impl State {
    /// Bytes this state holds on the heap.
    fn heap_bytes(&self) -> usize {
        match self {
            State::Extreme(Some(v)) | State::Single(Some(v)) => v.heap_bytes(),
            State::Multiset(m) => m.keys().map(|v| MULTISET_ENTRY_BYTES + v.heap_bytes()).sum(),
            _ => 0,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) -> TaskResult<()> {
        match self {
            State::Empty => codec::put_u8(out, 0),
            State::Count(n) => {
                codec::put_u8(out, 1);
                codec::put_i64(out, *n);
            }
            State::SumInt { sum, count } => {
                codec::put_u8(out, 2);
                codec::put_i128(out, *sum);
                codec::put_i64(out, *count);
            }
            State::SumFloat { sum, count } => {
                codec::put_u8(out, 3);
                codec::put_f64(out, *sum);
                codec::put_i64(out, *count);
            }
            State::Extreme(v) => {
                codec::put_u8(out, 4);
                encode_opt_val(v, out)?;
            }
            State::Multiset(m) => {
                codec::put_u8(out, 5);
                codec::put_i64(out, m.len() as i64);
                for (v, n) in m {
                    encode_val(v, out)?;
                    codec::put_i64(out, *n);
                }
            }
            State::Single(v) => {
                codec::put_u8(out, 6);
                encode_opt_val(v, out)?;
            }
        }
        Ok(())
    }

    fn decode(r: &mut codec::Reader<'_>) -> TaskResult<State> {
        Ok(match r.u8()? {
            0 => State::Empty,
            1 => State::Count(r.i64()?),
            2 => State::SumInt { sum: r.i128()?, count: r.i64()? },
            3 => State::SumFloat { sum: r.f64()?, count: r.i64()? },
            4 => State::Extreme(decode_opt_val(r)?),
            5 => {
                let n = r.i64()?;
                let mut m = BTreeMap::new();
                for _ in 0..n {
                    let v = decode_val(r)?;
                    m.insert(v, r.i64()?);
                }
                State::Multiset(m)
            }
            6 => State::Single(decode_opt_val(r)?),
            _ => return Err(codec::Reader::error("unknown aggregate state tag")),
        })
    }
}

impl Store {
    fn encode(&self, g: usize, out: &mut Vec<u8>) -> TaskResult<()> {
        match self {
            Store::Count(v) => codec::put_i64(out, v[g]),
            Store::SumInt { sums, counts } => {
                codec::put_i128(out, sums[g]);
                codec::put_i64(out, counts[g]);
            }
            Store::SumFloat { sums, counts } => {
                codec::put_f64(out, sums[g]);
                codec::put_i64(out, counts[g]);
            }
            Store::ExtremeInt(v) => match v[g] {
                None => codec::put_u8(out, 0),
                Some(x) => {
                    codec::put_u8(out, 1);
                    codec::put_i64(out, x);
                }
            },
            Store::Generic { states, .. } => states[g].encode(out)?,
        }
        Ok(())
    }

    fn decode(&mut self, g: usize, r: &mut codec::Reader<'_>) -> TaskResult<()> {
        match self {
            Store::Count(v) => v[g] = r.i64()?,
            Store::SumInt { sums, counts } => {
                sums[g] = r.i128()?;
                counts[g] = r.i64()?;
            }
            Store::SumFloat { sums, counts } => {
                sums[g] = r.f64()?;
                counts[g] = r.i64()?;
            }
            Store::ExtremeInt(v) => v[g] = if r.u8()? == 0 { None } else { Some(r.i64()?) },
            Store::Generic { states, heap } => {
                let state = State::decode(r)?;
                *heap = *heap - states[g].heap_bytes() + state.heap_bytes();
                states[g] = state;
            }
        }
        Ok(())
    }
}

impl CallState {
    fn update(&mut self, data: &RecordBatch, batch: &ChangeBatch, groups: &[usize]) -> TaskResult<()> {
        let arg = self.call.arg.map(|i| ArgColumn::new(data.column(i))).transpose()?;
        let filter = self.call.filter.map(|i| data.column(i).as_boolean().clone());
        let passes = |row: usize| filter.as_ref().is_none_or(|f| f.is_valid(row) && f.value(row));
        let sign = |row: usize| -> i64 { if batch.kind(row).is_accumulate() { 1 } else { -1 } };
        // Fast paths: typed state, no DISTINCT.
        if !self.call.distinct {
            match (&mut self.store, &arg) {
                (Store::Count(counts), None) => {
                    for (row, &g) in groups.iter().enumerate() {
                        if passes(row) {
                            counts[g] += sign(row);
                        }
                    }
                    return Ok(());
                }
                (Store::Count(counts), Some(a)) => {
                    for (row, &g) in groups.iter().enumerate() {
                        if passes(row) && a.is_valid(row) {
                            counts[g] += sign(row);
                        }
                    }
                    return Ok(());
                }
                (Store::SumInt { sums, counts }, Some(ArgColumn::Int(a))) => {
                    for (row, &g) in groups.iter().enumerate() {
                        if passes(row) && a.is_valid(row) {
                            let s = sign(row);
                            sums[g] += a.value(row) as i128 * s as i128;
                            counts[g] += s;
                        }
                    }
                    return Ok(());
                }
                (Store::SumInt { sums, counts }, Some(ArgColumn::Decimal(a))) => {
                    for (row, &g) in groups.iter().enumerate() {
                        if passes(row) && a.is_valid(row) {
                            let s = sign(row);
                            sums[g] += a.value(row) * s as i128;
                            counts[g] += s;
                        }
                    }
                    return Ok(());
                }
                (Store::ExtremeInt(v), Some(ArgColumn::Int(a))) => {
                    let min = self.call.kind == AggKind::Min;
                    for (row, &g) in groups.iter().enumerate() {
                        if passes(row) && a.is_valid(row) {
                            let x = a.value(row);
                            v[g] = Some(match v[g] {
                                None => x,
                                Some(c) => {
                                    if min {
                                        c.min(x)
                                    } else {
                                        c.max(x)
                                    }
                                }
                            });
                        }
                    }
                    return Ok(());
                }
                _ => {}
            }
        }
        for (row, &group) in groups.iter().enumerate() {
            if !passes(row) {
                continue;
            }
            let add = batch.kind(row).is_accumulate();
            let value = match &arg {
                Some(a) => match a.get(row)? {
                    Some(v) => Some(v),
                    // Aggregates skip NULL arguments.
                    None => continue,
                },
                None => None,
            };
            if self.call.distinct {
                let Some(v) = &value else { continue };
                let seen = &mut self.distinct[group];
                let n = seen.entry(v.clone()).or_insert(0);
                let before = *n;
                *n += if add { 1 } else { -1 };
                let after = *n;
                if before == 0 {
                    self.distinct_heap += DISTINCT_ENTRY_BYTES + v.heap_bytes();
                }
                if after == 0 {
                    seen.remove(v);
                    self.distinct_heap -= DISTINCT_ENTRY_BYTES + v.heap_bytes();
                }
                // Only the first copy in and the last copy out change a distinct aggregate.
                if !((before == 0 && after == 1) || (before == 1 && after == 0)) {
                    continue;
                }
            }
            self.store.apply(group, self.call.kind, self.retract, value, add)?;
        }
        Ok(())
    }

    fn evaluate(&self, groups: &[usize]) -> TaskResult<ArrayRef> {
        let out = &self.call.output_type;
        let avg = self.call.kind == AggKind::Avg;
        match &self.store {
            Store::Count(v) => Ok(Arc::new(groups.iter().map(|g| Some(v[*g])).collect::<Int64Array>())),
            Store::SumInt { sums, counts } => {
                let states =
                    groups.iter().map(|g| State::SumInt { sum: sums[*g], count: counts[*g] }).collect::<Vec<_>>();
                sum_or_avg(states.iter(), out, avg, &self.call.arg_type)
            }
            Store::SumFloat { sums, counts } => {
                let states =
                    groups.iter().map(|g| State::SumFloat { sum: sums[*g], count: counts[*g] }).collect::<Vec<_>>();
                sum_or_avg(states.iter(), out, avg, &self.call.arg_type)
            }
            Store::ExtremeInt(v) => {
                let a: Int64Array = groups.iter().map(|g| v[*g]).collect();
                Ok(int_to(Arc::new(a), out)?)
            }
            Store::Generic { states, .. } => {
                let states = groups.iter().map(|g| &states[*g]);
                match self.call.kind {
                    AggKind::CountStar | AggKind::Count => {
                        let v: Int64Array =
                            states.map(|s| Some(if let State::Count(n) = s { *n } else { 0 })).collect();
                        Ok(Arc::new(v))
                    }
                    AggKind::Sum => sum_or_avg(states, out, false, &self.call.arg_type),
                    AggKind::Avg => sum_or_avg(states, out, true, &self.call.arg_type),
                    AggKind::Min | AggKind::Max | AggKind::FirstValue | AggKind::LastValue => {
                        let kind = self.call.kind;
                        let values: Vec<Option<&Val>> = states
                            .map(|s| match s {
                                State::Extreme(v) | State::Single(v) => v.as_ref(),
                                State::Multiset(m) => {
                                    if kind == AggKind::Min {
                                        m.keys().next()
                                    } else {
                                        m.keys().next_back()
                                    }
                                }
                                _ => None,
                            })
                            .collect();
                        vals_to_array(&values, out)
                    }
                }
            }
        }
    }
}

/// Folds `value` into `state`; answers by how many bytes the state's heap grew (or shrank).
fn apply(state: &mut State, kind: AggKind, retract: bool, value: Option<Val>, add: bool) -> TaskResult<isize> {
    let sign: i64 = if add { 1 } else { -1 };
    let mut grown = 0;
    match kind {
        AggKind::CountStar | AggKind::Count => {
            let n = if let State::Count(n) = state { *n } else { 0 };
            *state = State::Count(n + sign);
        }
        AggKind::Sum | AggKind::Avg => match value {
            Some(Val::Float(f)) => {
                let (s, c) = if let State::SumFloat { sum, count } = state { (*sum, *count) } else { (0.0, 0) };
                *state = State::SumFloat { sum: s + f * sign as f64, count: c + sign };
            }
            Some(Val::Int(i)) => add_int(state, i as i128, sign),
            Some(Val::Decimal(d)) => add_int(state, d, sign),
            Some(other) => return Err(TaskError::Unsupported(format!("SUM/AVG of {other:?}"))),
            None => {}
        },
        AggKind::Min | AggKind::Max => {
            let Some(v) = value else { return Ok(0) };
            if retract {
                if !matches!(state, State::Multiset(_)) {
                    *state = State::Multiset(BTreeMap::new());
                }
                let State::Multiset(m) = state else { unreachable!("just set") };
                let entry = (MULTISET_ENTRY_BYTES + v.heap_bytes()) as isize;
                let n = m.entry(v.clone()).or_insert(0);
                if *n == 0 {
                    grown += entry;
                }
                *n += sign;
                if *n <= 0 {
                    m.remove(&v);
                    grown -= entry;
                }
            } else {
                let current = if let State::Extreme(Some(c)) = state { Some(c) } else { None };
                let better = match current {
                    None => true,
                    Some(c) => {
                        if kind == AggKind::Min {
                            v < *c
                        } else {
                            v > *c
                        }
                    }
                };
                if better {
                    let new = State::Extreme(Some(v));
                    grown = new.heap_bytes() as isize - state.heap_bytes() as isize;
                    *state = new;
                }
            }
        }
        AggKind::FirstValue => {
            if !matches!(state, State::Single(Some(_))) {
                let new = State::Single(value);
                grown = new.heap_bytes() as isize - state.heap_bytes() as isize;
                *state = new;
            }
        }
        AggKind::LastValue => {
            if value.is_some() {
                let new = State::Single(value);
                grown = new.heap_bytes() as isize - state.heap_bytes() as isize;
                *state = new;
            }
        }
    }
    Ok(grown)
}

fn add_int(state: &mut State, v: i128, sign: i64) {
    let (s, c) = if let State::SumInt { sum, count } = state { (*sum, *count) } else { (0, 0) };
    *state = State::SumInt { sum: s + v * sign as i128, count: c + sign };
}

fn sum_or_avg<'a>(
    states: impl Iterator<Item = &'a State>,
    out: &DataType,
    avg: bool,
    arg_type: &DataType,
) -> TaskResult<ArrayRef> {
    match out {
        DataType::Decimal128(p, s) => {
            let arg_scale = if let DataType::Decimal128(_, s) = arg_type { *s } else { 0 };
            let v: Decimal128Array = states
                .map(|st| match st {
                    State::SumInt { sum, count } if *count > 0 => {
                        let scaled = rescale(*sum, arg_scale, *s);
                        Some(if avg { div_half_up(scaled, *count as i128) } else { scaled })
                    }
                    _ => None,
                })
                .collect();
            Ok(Arc::new(v.with_precision_and_scale(*p, *s)?))
        }
        DataType::Float32 | DataType::Float64 => {
            let v: Float64Array = states
                .map(|st| match st {
                    State::SumFloat { sum, count } if *count > 0 => Some(if avg { sum / *count as f64 } else { *sum }),
                    State::SumInt { sum, count } if *count > 0 => {
                        Some(if avg { *sum as f64 / *count as f64 } else { *sum as f64 })
                    }
                    _ => None,
                })
                .collect();
            Ok(cast(&(Arc::new(v) as ArrayRef), out)?)
        }
        _ => {
            // Integers: Java long arithmetic, AVG truncating toward zero.
            let v: Int64Array = states
                .map(|st| match st {
                    State::SumInt { sum, count } if *count > 0 => {
                        Some(if avg { (*sum / *count as i128) as i64 } else { *sum as i64 })
                    }
                    _ => None,
                })
                .collect();
            Ok(cast(&(Arc::new(v) as ArrayRef), out)?)
        }
    }
}

fn rescale(v: i128, from: i8, to: i8) -> i128 {
    match to.cmp(&from) {
        Ordering::Equal => v,
        Ordering::Greater => v * 10i128.pow((to - from) as u32),
        Ordering::Less => div_half_up(v, 10i128.pow((from - to) as u32)),
    }
}

/// Division rounding half away from zero, as Java's `RoundingMode.HALF_UP`.
pub fn div_half_up(a: i128, b: i128) -> i128 {
    let q = a / b;
    let r = a % b;
    if (r.abs() * 2) >= b.abs() { q + a.signum() * b.signum() } else { q }
}

fn vals_to_array(values: &[Option<&Val>], out: &DataType) -> TaskResult<ArrayRef> {
    let first = values.iter().flatten().next();
    let array: ArrayRef = match first {
        None => return Ok(new_null_array(out, values.len())),
        Some(Val::Int(_)) => {
            let a: Int64Array =
                values.iter().map(|v| v.and_then(|v| if let Val::Int(i) = v { Some(*i) } else { None })).collect();
            return Ok(int_to(Arc::new(a), out)?);
        }
        Some(Val::Float(_)) => Arc::new(
            values
                .iter()
                .map(|v| v.and_then(|v| if let Val::Float(f) = v { Some(*f) } else { None }))
                .collect::<Float64Array>(),
        ),
        Some(Val::Decimal(_)) => {
            let a: Decimal128Array =
                values.iter().map(|v| v.and_then(|v| if let Val::Decimal(d) = v { Some(*d) } else { None })).collect();
            match out {
                DataType::Decimal128(p, s) => Arc::new(a.with_precision_and_scale(*p, *s)?),
                _ => Arc::new(a),
            }
        }
        Some(Val::Str(_)) => Arc::new(
            values
                .iter()
                .map(|v| v.and_then(|v| if let Val::Str(s) = v { Some(s.as_ref()) } else { None }))
                .collect::<StringArray>(),
        ),
        Some(Val::Bool(_)) => Arc::new(
            values
                .iter()
                .map(|v| v.and_then(|v| if let Val::Bool(b) = v { Some(*b) } else { None }))
                .collect::<BooleanArray>(),
        ),
        Some(Val::Other(_)) => {
            let scalars = values.iter().map(|v| match v {
                Some(Val::Other(s)) => s.clone(),
                _ => ScalarValue::try_from(out).unwrap_or(ScalarValue::Null),
            });
            ScalarValue::iter_to_array(scalars)?
        }
    };
    if array.data_type() == out { Ok(array) } else { Ok(cast(&array, out)?) }
}

/// Int64 values back to their original integer-like type (dates and times via Int32).
fn int_to(array: ArrayRef, out: &DataType) -> Result<ArrayRef, arrow::error::ArrowError> {
    match out {
        DataType::Date32 | DataType::Time32(_) => cast(&cast(&array, &DataType::Int32)?, out),
        DataType::Int64 => Ok(array),
        _ => cast(&array, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_dataflow::event::RowKind;

    #[test]
    fn half_up() {
        assert_eq!(div_half_up(5, 2), 3);
        assert_eq!(div_half_up(-5, 2), -3);
        assert_eq!(div_half_up(4, 3), 1);
        assert_eq!(div_half_up(-4, 3), -1);
        assert_eq!(rescale(12345, 2, 6), 123450000);
        assert_eq!(rescale(12345, 2, 1), 1235);
    }

    /// What `heap_bytes` should be, counted from scratch.
    fn recount(aggs: &Aggregates) -> usize {
        aggs.calls
            .iter()
            .map(|c| {
                let states = match &c.store {
                    Store::Generic { states, .. } => states.iter().map(State::heap_bytes).sum(),
                    _ => 0,
                };
                states + c.distinct.iter().map(distinct_heap_bytes).sum::<usize>()
            })
            .sum()
    }

    #[test]
    fn heap_bytes_follow_strings_multisets_and_distinct_values_as_they_change() {
        use arrow::array::{Int64Array, StringArray};
        use arrow::datatypes::{Field, Schema};
        let call = |kind, distinct| AggregateCall {
            kind,
            arg: Some(0),
            distinct,
            filter: None,
            arg_type: DataType::Utf8,
            output_type: if kind == AggKind::Count { DataType::Int64 } else { DataType::Utf8 },
        };
        let schema =
            Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, true), Field::new("n", DataType::Int64, true)]));
        for retract in [false, true] {
            let calls = vec![call(AggKind::Max, false), call(AggKind::Min, false), call(AggKind::Count, true)];
            let mut aggs = Aggregates::new(calls, retract).unwrap();
            aggs.ensure(4);
            let mut live: Vec<(String, usize)> = vec![];
            for step in 0..200usize {
                // Add a value to a group; on a changelog, retract an earlier one every third step.
                let retracting = retract && step % 3 == 2 && !live.is_empty();
                let (value, group) = if retracting {
                    live.remove(step % live.len())
                } else {
                    let v = "x".repeat(step % 37) + &step.to_string();
                    live.push((v.clone(), step % 4));
                    (v, step % 4)
                };
                let data = RecordBatch::try_new(
                    schema.clone(),
                    vec![Arc::new(StringArray::from(vec![value])), Arc::new(Int64Array::from(vec![1]))],
                )
                .unwrap();
                let kind = if retracting { RowKind::Delete } else { RowKind::Insert };
                aggs.update(&ChangeBatch::with_kinds(data, vec![kind]), &[group]).unwrap();
                assert_eq!(aggs.heap_bytes(), recount(&aggs), "step {step}, retract {retract}");
                if step % 50 == 49 {
                    // Out of memory and back (a spill and a load), then a group dropped.
                    let mut out = vec![];
                    aggs.encode_group(1, &mut out).unwrap();
                    aggs.decode_group(1, &mut codec::Reader::new(&out)).unwrap();
                    assert_eq!(aggs.heap_bytes(), recount(&aggs));
                    aggs.reset(2);
                    live.retain(|(_, g)| *g != 2);
                    assert_eq!(aggs.heap_bytes(), recount(&aggs));
                }
            }
            assert!(aggs.heap_bytes() > 0);
            for g in 0..4 {
                aggs.reset(g);
            }
            assert_eq!(aggs.heap_bytes(), 0);
        }
    }
}
