//! The built-in `datagen` generator connector: Flink's `datagen` table source (random or
//! sequence values per column, `rows-per-second`, `number-of-rows`, per-field `min`/`max`,
//! `length`/`var-len`, `start`/`end`, `max-past` and `null-rate` options) producing Arrow
//! batches. Every value is a pure function of (seed, column, global row index), so a source
//! split into parallel subtasks (subtask `i` of `p` takes rows `i, i + p, …`, as Flink's
//! sequence generator splits its range) or restored from a position reproduces the same rows.
//! Flink reads the wall clock for DATE and TIMESTAMP columns; here the clock is virtual: row
//! `r` happens at `base_time + r / rows-per-second`, which is where a rate-limited source
//! emits it, so the values look the same as Flink's and stay reproducible.

use super::split::{SplitGenerator, SplitLayout};
use std::collections::BTreeMap;
use std::sync::Arc;

use super::util::{BadOption, mix64, parse_base_time, parse_bool, parse_duration_ms, parse_positive, parse_u64};
use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array, Int8Array, Int16Array,
    Int32Array, Int64Array, StringArray, TimestampMillisecondArray,
};
use arrow::buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};

const DEFAULT_ROWS_PER_SECOND: u64 = 10_000;
const DEFAULT_STRING_LENGTH: u32 = 100;
/// Keeps one batch's string column addressable by i32 offsets.
const MAX_STRING_LENGTH: u32 = 64 << 20;
const DEFAULT_SEED: u64 = 42;
const DEFAULT_BASE_TIME_MS: i64 = 1_704_067_200_000; // 2024-01-01 00:00:00 UTC
const MS_PER_DAY: i64 = 86_400_000;

const TABLE_OPTIONS: [&str; 6] =
    ["connector", "rows-per-second", "number-of-rows", "scan.parallelism", "seed", "base-time"];
const FIELD_OPTIONS: [&str; 9] = ["kind", "min", "max", "max-past", "length", "var-len", "start", "end", "null-rate"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatagenError {
    #[error("unknown datagen option '{name}'; valid options are: {valid}")]
    UnknownOption { name: String, valid: String },
    #[error(
        "datagen option '{option}' names column '{column}', which the table does not have; its columns are: {columns}"
    )]
    UnknownColumn { option: String, column: String, columns: String },
    #[error("datagen option '{option}' does not apply to column '{column}' ({detail}); it accepts: {valid}")]
    InapplicableOption { option: String, column: String, detail: String, valid: String },
    #[error("invalid value '{value}' for datagen option '{option}': {reason}")]
    InvalidOption { option: String, value: String, reason: String },
    #[error("datagen column '{column}': {reason}")]
    InvalidColumn { column: String, reason: String },
}

/// How one column's values are made.
#[derive(Clone, Debug, PartialEq)]
pub enum ValueGenerator {
    /// Uniform over `[min, max]`; integer columns of any width.
    RandomInteger {
        min: i64,
        max: i64,
    },
    /// Uniform over `[min, max]`; float columns.
    RandomFloat {
        min: f64,
        max: f64,
    },
    /// Uniform over `[min, max]`, rounded to the column's scale; decimal columns.
    RandomDecimal {
        min: f64,
        max: f64,
    },
    RandomBoolean,
    /// Lowercase hex text of `length` characters, or of 1..=`length` with `var_len`.
    RandomString {
        length: u32,
        var_len: bool,
    },
    /// The date (UTC) of the row's virtual time.
    CurrentDate,
    /// The row's virtual time minus a uniform `[0, max_past_ms)`.
    PastTimestamp {
        max_past_ms: u64,
    },
    /// `start + row` for rows `0..=end - start`; the table ends with its shortest sequence.
    /// Text columns get the number's decimal text.
    Sequence {
        start: i64,
        end: i64,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct FieldSpec {
    pub generator: ValueGenerator,
    /// Probability that a value is null.
    pub null_rate: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DatagenConfig {
    // Private so that the specs always fit the schema's types: only `from_options` builds them.
    schema: SchemaRef,
    fields: Vec<FieldSpec>,
    /// Rows per second over the whole source (all splits).
    pub rows_per_second: u64,
    /// Rows in the whole source; `None` is unbounded. Sequences cap it further, see
    /// [`total_rows`](Self::total_rows).
    pub number_of_rows: Option<u64>,
    /// Flink's `scan.parallelism`, for the planner.
    pub parallelism: Option<u32>,
    pub seed: u64,
    /// Virtual time of row 0 in ms since the epoch (UTC). Flink uses the wall clock; whoever
    /// plans the job should fix this once (e.g. to the job's creation time) and keep it.
    pub base_time_ms: i64,
}

impl DatagenConfig {
    /// Reads the table's `WITH` options for the table's physical `schema`.
    pub fn from_options(schema: &Schema, opts: &BTreeMap<String, String>) -> Result<Self, DatagenError> {
        let mut config = DatagenConfig {
            schema: Arc::new(schema.clone()),
            fields: Vec::with_capacity(schema.fields().len()),
            rows_per_second: DEFAULT_ROWS_PER_SECOND,
            number_of_rows: None,
            parallelism: None,
            seed: DEFAULT_SEED,
            base_time_ms: DEFAULT_BASE_TIME_MS,
        };
        // column name -> option name -> (full key, value)
        let mut field_options: BTreeMap<&str, BTreeMap<&str, (&str, &str)>> = BTreeMap::new();
        for (key, value) in opts {
            let v = value.trim();
            match key.as_str() {
                "connector" => {}
                "rows-per-second" => config.rows_per_second = parse_positive(key, v)?,
                "number-of-rows" => config.number_of_rows = Some(parse_u64(key, v)?),
                "scan.parallelism" => {
                    let p = parse_positive(key, v)?;
                    config.parallelism = Some(u32::try_from(p).map_err(|_| invalid(key, v, "too large"))?);
                }
                "seed" => config.seed = parse_u64(key, v)?,
                "base-time" => config.base_time_ms = parse_base_time(key, v)?,
                _ => {
                    let unknown = || DatagenError::UnknownOption { name: key.clone(), valid: valid_options(schema) };
                    let rest = key.strip_prefix("fields.").ok_or_else(unknown)?;
                    // Column names may contain dots; the option name is the last segment.
                    let (column, option) = rest.rsplit_once('.').ok_or_else(unknown)?;
                    if !FIELD_OPTIONS.contains(&option) {
                        return Err(unknown());
                    }
                    if schema.field_with_name(column).is_err() {
                        return Err(DatagenError::UnknownColumn {
                            option: key.clone(),
                            column: column.to_string(),
                            columns: schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", "),
                        });
                    }
                    field_options.entry(column).or_default().insert(option, (key.as_str(), v));
                }
            }
        }
        let empty = BTreeMap::new();
        for field in schema.fields() {
            let options = field_options.get(field.name().as_str()).unwrap_or(&empty);
            let spec = field_spec(field.name(), field.data_type(), options)?;
            if spec.null_rate > 0.0 && !field.is_nullable() {
                return Err(DatagenError::InvalidColumn {
                    column: field.name().clone(),
                    reason: "'null-rate' needs a nullable column".to_string(),
                });
            }
            config.fields.push(spec);
        }
        Ok(config)
    }

    /// Rows in the whole source: `number-of-rows` capped by the shortest sequence, `None`
    /// when unbounded.
    pub fn total_rows(&self) -> Option<u64> {
        let shortest_sequence = self
            .fields
            .iter()
            .filter_map(|f| match f.generator {
                ValueGenerator::Sequence { start, end } => {
                    Some((i128::from(end) - i128::from(start) + 1).clamp(0, u64::MAX as i128) as u64)
                }
                _ => None,
            })
            .min();
        match (self.number_of_rows, shortest_sequence) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn rows_per_second(&self) -> u64 {
        self.rows_per_second
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// One spec per schema column, in schema order.
    pub fn fields(&self) -> &[FieldSpec] {
        &self.fields
    }
}

fn valid_options(schema: &Schema) -> String {
    let mut valid: Vec<String> = TABLE_OPTIONS.iter().map(|s| s.to_string()).collect();
    for field in schema.fields() {
        valid.push(format!("fields.{}.{{{}}}", field.name(), FIELD_OPTIONS.join(",")));
    }
    valid.join(", ")
}

fn invalid(option: &str, value: &str, reason: &str) -> DatagenError {
    DatagenError::InvalidOption { option: option.to_string(), value: value.to_string(), reason: reason.to_string() }
}

/// Builds one column's spec from its `fields.<column>.*` options, rejecting options that do
/// not apply to the column's type and kind (as Flink's factory rejects unconsumed options).
fn field_spec(
    column: &str,
    data_type: &DataType,
    options: &BTreeMap<&str, (&str, &str)>,
) -> Result<FieldSpec, DatagenError> {
    let get = |name: &str| options.get(name).copied();
    let kind = match get("kind") {
        None => "random",
        Some((_, v)) if v.eq_ignore_ascii_case("random") => "random",
        Some((_, v)) if v.eq_ignore_ascii_case("sequence") => "sequence",
        Some((key, v)) => return Err(invalid(key, v, "expected 'random' or 'sequence'")),
    };
    let unsupported =
        |reason: &str| DatagenError::InvalidColumn { column: column.to_string(), reason: reason.to_string() };
    let integer_bounds = match data_type {
        DataType::Int8 => Some((i64::from(i8::MIN), i64::from(i8::MAX))),
        DataType::Int16 => Some((i64::from(i16::MIN), i64::from(i16::MAX))),
        DataType::Int32 => Some((i64::from(i32::MIN), i64::from(i32::MAX))),
        DataType::Int64 => Some((i64::MIN, i64::MAX)),
        _ => None,
    };
    if let DataType::Decimal128(precision, scale) = data_type
        && (*precision == 0 || *precision > 38 || *scale < 0 || *scale as u8 > *precision)
    {
        return Err(unsupported(&format!(
            "type {data_type} is not a valid DECIMAL (precision 1 to 38, scale 0 to precision)"
        )));
    }
    let sequence_supported = integer_bounds.is_some()
        || matches!(data_type, DataType::Float32 | DataType::Float64 | DataType::Decimal128(..) | DataType::Utf8);
    // Flink's sequence visitor falls back to random values for BOOLEAN.
    let sequence = kind == "sequence" && !matches!(data_type, DataType::Boolean);
    let (generator, accepted): (ValueGenerator, &[&str]) = if sequence {
        if !sequence_supported {
            return Err(unsupported(&format!("kind 'sequence' is not supported for type {data_type}")));
        }
        let required = |name: &str| {
            get(name).ok_or_else(|| {
                unsupported(&format!("kind 'sequence' needs 'fields.{column}.start' and 'fields.{column}.end'"))
            })
        };
        let (start_key, start_text) = required("start")?;
        let (end_key, end_text) = required("end")?;
        let bounds = integer_bounds.unwrap_or((i64::MIN, i64::MAX));
        let start = parse_integer(start_key, start_text, bounds)?;
        let end = parse_integer(end_key, end_text, bounds)?;
        if start > end {
            return Err(unsupported("sequence 'start' must not exceed 'end'"));
        }
        if let DataType::Decimal128(precision, scale) = data_type {
            for (key, text, value) in [(start_key, start_text, start), (end_key, end_text, end)] {
                if !decimal_fits(value as f64, *precision, *scale) {
                    return Err(invalid(key, text, "does not fit the column's precision"));
                }
            }
        }
        (ValueGenerator::Sequence { start, end }, &["kind", "start", "end", "null-rate"])
    } else {
        match data_type {
            DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
                let bounds = integer_bounds.unwrap_or((i64::MIN, i64::MAX));
                let min = match get("min") {
                    Some((key, v)) => parse_integer(key, v, bounds)?,
                    None => bounds.0,
                };
                let max = match get("max") {
                    Some((key, v)) => parse_integer(key, v, bounds)?,
                    None => bounds.1,
                };
                if min > max {
                    return Err(unsupported("'min' must not exceed 'max'"));
                }
                (ValueGenerator::RandomInteger { min, max }, &["kind", "min", "max", "null-rate"])
            }
            DataType::Float32 | DataType::Float64 | DataType::Decimal128(..) => {
                // Flink's defaults: the type's smallest positive value to its largest.
                let (mut default_min, mut default_max) = match data_type {
                    DataType::Float32 => (f64::from(f32::from_bits(1)), f64::from(f32::MAX)),
                    _ => (f64::from_bits(1), f64::MAX),
                };
                if let DataType::Decimal128(precision, scale) = data_type {
                    let largest = decimal_largest(*precision, *scale);
                    default_min = default_min.max(-largest);
                    default_max = default_max.min(largest);
                }
                let bound = |name: &str, default: f64| -> Result<f64, DatagenError> {
                    let Some((key, v)) = get(name) else {
                        return Ok(default);
                    };
                    let x: f64 = v
                        .parse()
                        .ok()
                        .filter(|x: &f64| x.is_finite())
                        .ok_or_else(|| invalid(key, v, "expected a finite number"))?;
                    match data_type {
                        DataType::Float32 if x.abs() > f64::from(f32::MAX) => {
                            Err(invalid(key, v, "out of range for FLOAT"))
                        }
                        DataType::Decimal128(p, s) => {
                            let largest = decimal_largest(*p, *s);
                            Ok(x.clamp(-largest, largest))
                        }
                        _ => Ok(x),
                    }
                };
                let min = bound("min", default_min)?;
                let max = bound("max", default_max)?;
                if min > max {
                    return Err(unsupported("'min' must not exceed 'max'"));
                }
                let generator = if matches!(data_type, DataType::Decimal128(..)) {
                    ValueGenerator::RandomDecimal { min, max }
                } else {
                    ValueGenerator::RandomFloat { min, max }
                };
                (generator, &["kind", "min", "max", "null-rate"])
            }
            DataType::Boolean => (ValueGenerator::RandomBoolean, &["kind", "null-rate"]),
            DataType::Utf8 => {
                let length = match get("length") {
                    Some((key, v)) => v
                        .parse::<u32>()
                        .ok()
                        .filter(|l| *l <= MAX_STRING_LENGTH)
                        .ok_or_else(|| invalid(key, v, "expected a length of at most 67108864"))?,
                    None => DEFAULT_STRING_LENGTH,
                };
                let var_len = match get("var-len") {
                    Some((key, v)) => parse_bool(key, v)?,
                    None => false,
                };
                (ValueGenerator::RandomString { length, var_len }, &["kind", "length", "var-len", "null-rate"])
            }
            DataType::Date32 => (ValueGenerator::CurrentDate, &["kind", "null-rate"]),
            DataType::Timestamp(TimeUnit::Millisecond, _) => {
                let max_past_ms = match get("max-past") {
                    Some((key, v)) => parse_duration_ms(key, v)?,
                    None => 0,
                };
                (ValueGenerator::PastTimestamp { max_past_ms }, &["kind", "max-past", "null-rate"])
            }
            other => {
                return Err(unsupported(&format!(
                    "type {other} is not supported by datagen (supported: Boolean, Int8-64, \
                     Float32/64, Decimal128, Utf8, Date32, Timestamp(ms))"
                )));
            }
        }
    };
    let accepted: &[&str] = if sequence || kind == "random" { accepted } else { &["kind", "null-rate"] };
    for (option, (key, _)) in options {
        // Flink ignores 'start'/'end' on a BOOLEAN sequence, which it generates randomly.
        let boolean_sequence_bound =
            kind == "sequence" && matches!(data_type, DataType::Boolean) && matches!(*option, "start" | "end");
        if !accepted.contains(option) && !boolean_sequence_bound {
            return Err(DatagenError::InapplicableOption {
                option: key.to_string(),
                column: column.to_string(),
                detail: format!("type {data_type}, kind '{kind}'"),
                valid: accepted.join(", "),
            });
        }
    }
    let null_rate = match get("null-rate") {
        Some((key, v)) => v
            .parse::<f64>()
            .ok()
            .filter(|r| (0.0..=1.0).contains(r))
            .ok_or_else(|| invalid(key, v, "expected a number between 0 and 1"))?,
        None => 0.0,
    };
    Ok(FieldSpec { generator, null_rate })
}

fn parse_integer(key: &str, v: &str, (lo, hi): (i64, i64)) -> Result<i64, DatagenError> {
    v.parse::<i64>()
        .ok()
        .filter(|x| (lo..=hi).contains(x))
        .ok_or_else(|| invalid(key, v, &format!("expected an integer in [{lo}, {hi}]")))
}

fn decimal_largest(precision: u8, scale: i8) -> f64 {
    10f64.powi(i32::from(precision) - i32::from(scale)) - 10f64.powi(-i32::from(scale))
}

fn decimal_fits(value: f64, precision: u8, scale: i8) -> bool {
    value.abs() <= decimal_largest(precision, scale)
}

// ---------------------------------------------------------------------------------------------
// Randomness
// ---------------------------------------------------------------------------------------------

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// The SplitMix64 sequence of one cell (column, row).
struct Stream(u64);

impl Stream {
    #[inline]
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN_GAMMA);
        mix64(self.0)
    }

    #[inline]
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }

    #[inline]
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

// ---------------------------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------------------------

/// Which global rows a batch holds: `first`, `first + stride`, ….
#[derive(Clone, Copy)]
struct BatchRows {
    first: u64,
    stride: u64,
}

impl BatchRows {
    #[inline]
    fn global_row(self, k: usize) -> u64 {
        self.first.wrapping_add((k as u64).wrapping_mul(self.stride))
    }
}

/// Generates one split of a `datagen` table.
pub struct DatagenGenerator {
    config: DatagenConfig,
    column_keys: Vec<u64>,
    split_index: u64,
    num_splits: u64,
    split_rows: Option<u64>,
    position: u64,
    row_cap: usize,
    /// Where the split's slots start, and rows an earlier run emitted already.
    layout: SplitLayout,
}

impl SplitGenerator for DatagenGenerator {
    fn position(&self) -> u64 {
        self.position
    }

    fn layout(&self) -> &SplitLayout {
        &self.layout
    }

    /// Restores a position under a (possibly rescaled) layout; see [`super::split`].
    fn seek_with_layout(&mut self, position: u64, layout: SplitLayout) {
        self.split_rows = layout.slots(self.split_index, self.num_splits, self.config.total_rows());
        self.layout = layout;
        self.position = position;
    }
}

impl DatagenGenerator {
    /// Split `split_index` of `num_splits` takes the rows `split_index + k * num_splits`.
    /// A `num_splits` of 0 is taken as 1; a split index beyond the last split yields no rows.
    pub fn new(config: DatagenConfig, split_index: u64, num_splits: u64) -> Self {
        let num_splits = num_splits.max(1);
        let split_rows = if split_index >= num_splits {
            Some(0)
        } else {
            config
                .total_rows()
                .map(|total| if split_index >= total { 0 } else { (total - 1 - split_index) / num_splits + 1 })
        };
        let seed_key = mix64(config.seed ^ 0x6461_7461_6765_6E00);
        let column_keys = (0..config.fields.len() as u64)
            .map(|c| mix64(seed_key.wrapping_add((c + 1).wrapping_mul(GOLDEN_GAMMA << 32))))
            .collect();
        let longest_string = config
            .fields
            .iter()
            .map(|f| match f.generator {
                ValueGenerator::RandomString { length, .. } => length as usize,
                ValueGenerator::Sequence { .. } => 20,
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        let row_cap = (i32::MAX as usize / longest_string.max(1)).max(1);
        DatagenGenerator {
            config,
            column_keys,
            split_index,
            num_splits,
            split_rows,
            position: 0,
            row_cap,
            layout: SplitLayout::default(),
        }
    }

    pub fn config(&self) -> &DatagenConfig {
        &self.config
    }

    pub fn schema(&self) -> SchemaRef {
        self.config.schema.clone()
    }

    /// Rows this split has emitted; what a checkpoint stores.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Restores a position taken from [`position`](Self::position).
    pub fn seek(&mut self, position: u64) {
        self.position = position;
    }

    /// Rows this split holds in total; `None` when unbounded.
    pub fn split_rows(&self) -> Option<u64> {
        self.split_rows
    }

    pub fn is_exhausted(&self) -> bool {
        self.split_rows.is_some_and(|n| self.position >= n)
    }

    /// This split's share of `rows-per-second` (Flink divides the rate among subtasks); the
    /// first `rows-per-second % num_splits` splits take one row more.
    pub fn rows_per_second(&self) -> u64 {
        let total = self.config.rows_per_second;
        if self.split_index >= self.num_splits {
            return 0;
        }
        total / self.num_splits + u64::from(self.split_index < total % self.num_splits)
    }

    /// Milliseconds after the source's start at which this split's next row is due when the
    /// source paces itself; `None` when exhausted. Pacing by this keeps all splits together
    /// and matches the rows' virtual time.
    pub fn next_row_due_ms(&self) -> Option<u64> {
        (!self.is_exhausted()).then(|| {
            let row = self.global_row(self.position);
            (u128::from(row) * 1000 / u128::from(self.config.rows_per_second.max(1))) as u64
        })
    }

    #[inline]
    fn global_row(&self, local: u64) -> u64 {
        self.layout.global(self.split_index, self.num_splits, local)
    }

    /// The next up to `max_rows` rows of this split, or `None` once a bounded split is
    /// exhausted.
    pub fn next_batch(&mut self, max_rows: usize) -> Option<RecordBatch> {
        let remaining = match self.split_rows {
            Some(total) if self.position >= total => return None,
            Some(total) => total - self.position,
            None => u64::MAX,
        };
        let rows = (max_rows.min(self.row_cap) as u64).min(remaining) as usize;
        let first = self.global_row(self.position);
        let stride = self.num_splits;
        let batch_rows = BatchRows { first, stride };
        let columns: Vec<ArrayRef> = self
            .config
            .fields
            .iter()
            .zip(self.config.schema.fields())
            .zip(&self.column_keys)
            .map(|((spec, field), &key)| self.column(spec, field.data_type(), key, rows, batch_rows))
            .collect();
        self.position = self.position.saturating_add(rows as u64);
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        let batch = RecordBatch::try_new_with_options(self.config.schema.clone(), columns, &options)
            .expect("generated columns match the configured schema");
        match self.layout.keep_mask(first, stride, rows) {
            None => Some(batch),
            Some(keep) => {
                Some(arrow::compute::filter_record_batch(&batch, &keep).expect("a mask as long as the batch"))
            }
        }
    }

    /// Virtual time of a global row.
    #[inline]
    fn row_time_ms(&self, row: u64) -> i64 {
        let offset = u128::from(row) * 1000 / u128::from(self.config.rows_per_second.max(1));
        self.config.base_time_ms.wrapping_add(offset as i64)
    }

    fn column(
        &self,
        spec: &FieldSpec,
        data_type: &DataType,
        column_key: u64,
        rows: usize,
        batch_rows: BatchRows,
    ) -> ArrayRef {
        let row_at = |k: usize| batch_rows.global_row(k);
        // Each cell has its own stream; nulls are drawn from a separate mix of the same key so
        // that a column's values do not depend on its null rate.
        let cell = |k: usize| Stream(mix64(column_key.wrapping_add(row_at(k).wrapping_mul(GOLDEN_GAMMA))));
        let nulls = (spec.null_rate > 0.0).then(|| {
            NullBuffer::new(BooleanBuffer::collect_bool(rows, |k| {
                let u = (mix64(cell(k).0 ^ 0x6E75_6C6C) >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
                u >= spec.null_rate
            }))
        });
        match (&spec.generator, data_type) {
            (ValueGenerator::Sequence { start, .. }, _) => {
                let value = |k: usize| start.wrapping_add(row_at(k) as i64);
                match data_type {
                    DataType::Utf8 => {
                        let mut text = StringBuilder::new(rows, 20);
                        for k in 0..rows {
                            push_i64(&mut text.values, value(k));
                            text.close();
                        }
                        text.finish(nulls)
                    }
                    DataType::Float32 => {
                        Arc::new(Float32Array::new((0..rows).map(|k| value(k) as f32).collect(), nulls))
                    }
                    DataType::Float64 => {
                        Arc::new(Float64Array::new((0..rows).map(|k| value(k) as f64).collect(), nulls))
                    }
                    DataType::Decimal128(_, scale) => {
                        // Scale is 0..=38 and the sequence's ends fit the precision, so the
                        // product fits too (checked in `field_spec`).
                        let factor = 10i128.pow(u32::from(scale.unsigned_abs()));
                        let unscaled = (0..rows).map(|k| i128::from(value(k)) * factor).collect();
                        decimal_column(unscaled, data_type, nulls)
                    }
                    _ => integer_column((0..rows).map(value).collect(), data_type, nulls),
                }
            }
            (ValueGenerator::RandomInteger { min, max }, _) => {
                let span = (i128::from(*max) - i128::from(*min) + 1) as u128;
                let values = (0..rows)
                    .map(|k| {
                        let r = cell(k).next();
                        let offset =
                            if span > u128::from(u64::MAX) { r } else { ((u128::from(r) * span) >> 64) as u64 };
                        min.wrapping_add(offset as i64)
                    })
                    .collect();
                integer_column(values, data_type, nulls)
            }
            (ValueGenerator::RandomFloat { min, max }, _) => {
                // Interpolating instead of `min + u * (max - min)` cannot overflow when the
                // range spans most of the type.
                let value = |k: usize| {
                    let u = cell(k).unit();
                    (u * max + (1.0 - u) * min).clamp(*min, *max)
                };
                if matches!(data_type, DataType::Float32) {
                    let (lo, hi) = (*min as f32, *max as f32);
                    let values = (0..rows).map(|k| (value(k) as f32).clamp(lo, hi)).collect();
                    Arc::new(Float32Array::new(values, nulls))
                } else {
                    Arc::new(Float64Array::new((0..rows).map(value).collect(), nulls))
                }
            }
            (ValueGenerator::RandomDecimal { min, max }, DataType::Decimal128(precision, scale)) => {
                let factor = 10f64.powi(i32::from(*scale));
                let limit = 10i128.pow(u32::from(*precision)) - 1;
                let unscaled = (0..rows)
                    .map(|k| {
                        let u = cell(k).unit();
                        let x = (u * max + (1.0 - u) * min) * factor;
                        // Half away from zero, as BigDecimal's HALF_UP.
                        let rounded = (x + 0.5f64.copysign(x)) as i128;
                        rounded.clamp(-limit, limit)
                    })
                    .collect();
                decimal_column(unscaled, data_type, nulls)
            }
            (ValueGenerator::RandomBoolean, _) => {
                Arc::new(BooleanArray::new(BooleanBuffer::collect_bool(rows, |k| cell(k).next() >> 63 == 1), nulls))
            }
            (ValueGenerator::RandomString { length, var_len }, _) => {
                let length = u64::from(*length);
                let mut text = StringBuilder::new(rows, length as usize);
                for k in 0..rows {
                    let mut s = cell(k);
                    let len = if *var_len && length > 0 { 1 + s.below(length) } else { length };
                    push_hex(&mut s, len, &mut text.values);
                    text.close();
                }
                text.finish(nulls)
            }
            (ValueGenerator::CurrentDate, _) => {
                let values = (0..rows).map(|k| self.row_time_ms(row_at(k)).div_euclid(MS_PER_DAY) as i32).collect();
                Arc::new(Date32Array::new(values, nulls))
            }
            (ValueGenerator::PastTimestamp { max_past_ms }, _) => {
                let values = (0..rows)
                    .map(|k| {
                        let now = self.row_time_ms(row_at(k));
                        let past = if *max_past_ms > 0 { cell(k).below(*max_past_ms) as i64 } else { 0 };
                        now.wrapping_sub(past)
                    })
                    .collect();
                Arc::new(TimestampMillisecondArray::new(values, nulls).with_data_type(data_type.clone()))
            }
            (ValueGenerator::RandomDecimal { .. }, _) => {
                unreachable!("decimal generators are only built for decimal columns")
            }
        }
    }
}

fn integer_column(values: Vec<i64>, data_type: &DataType, nulls: Option<NullBuffer>) -> ArrayRef {
    // Values were drawn within the column type's bounds, so the narrowing casts are exact.
    match data_type {
        DataType::Int8 => Arc::new(Int8Array::new(values.into_iter().map(|v| v as i8).collect(), nulls)),
        DataType::Int16 => Arc::new(Int16Array::new(values.into_iter().map(|v| v as i16).collect(), nulls)),
        DataType::Int32 => Arc::new(Int32Array::new(values.into_iter().map(|v| v as i32).collect(), nulls)),
        _ => Arc::new(Int64Array::new(ScalarBuffer::from(values), nulls)),
    }
}

fn decimal_column(unscaled: Vec<i128>, data_type: &DataType, nulls: Option<NullBuffer>) -> ArrayRef {
    Arc::new(Decimal128Array::new(ScalarBuffer::from(unscaled), nulls).with_data_type(data_type.clone()))
}

struct StringBuilder {
    offsets: Vec<i32>,
    values: Vec<u8>,
}

impl StringBuilder {
    fn new(rows: usize, bytes_per_row: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        StringBuilder { offsets, values: Vec::with_capacity(rows.saturating_mul(bytes_per_row)) }
    }

    #[inline]
    fn close(&mut self) {
        // The batch row cap keeps the column below i32::MAX bytes.
        self.offsets.push(self.values.len() as i32);
    }

    fn finish(self, nulls: Option<NullBuffer>) -> ArrayRef {
        Arc::new(StringArray::new(
            OffsetBuffer::new(ScalarBuffer::from(self.offsets)),
            Buffer::from_vec(self.values),
            nulls,
        ))
    }
}

/// Lowercase hex text, as Flink's `nextHexString`: sixteen characters per draw.
fn push_hex(s: &mut Stream, len: u64, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut remaining = len;
    while remaining > 0 {
        let mut r = s.next();
        for _ in 0..remaining.min(16) {
            out.push(HEX[(r & 15) as usize]);
            r >>= 4;
        }
        remaining -= remaining.min(16);
    }
}

fn push_i64(out: &mut Vec<u8>, v: i64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = v.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[i..]);
}

impl From<BadOption> for DatagenError {
    fn from(e: BadOption) -> Self {
        DatagenError::InvalidOption { option: e.option, value: e.value, reason: e.reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{
        Date32Type, Decimal128Type, Field, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
        TimestampMillisecondType,
    };

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("small", DataType::Int8, true),
            Field::new("medium", DataType::Int16, true),
            Field::new("qty", DataType::Int32, true),
            Field::new("ratio", DataType::Float32, true),
            Field::new("score", DataType::Float64, true),
            Field::new("amount", DataType::Decimal128(10, 2), true),
            Field::new("flag", DataType::Boolean, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("day", DataType::Date32, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ])
    }

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn rich_options() -> BTreeMap<String, String> {
        opts(&[
            ("connector", "datagen"),
            ("rows-per-second", "1000"),
            ("number-of-rows", "5000"),
            ("fields.small.min", "-5"),
            ("fields.small.max", "5"),
            ("fields.qty.min", "10"),
            ("fields.qty.max", "20"),
            ("fields.qty.null-rate", "0.25"),
            ("fields.ratio.min", "0.5"),
            ("fields.ratio.max", "0.75"),
            ("fields.score.min", "-1e300"),
            ("fields.score.max", "1e300"),
            ("fields.amount.min", "1"),
            ("fields.amount.max", "100"),
            ("fields.name.length", "12"),
            ("fields.ts.max-past", "5s"),
        ])
    }

    fn collect(generator: &mut DatagenGenerator, batch_rows: usize) -> RecordBatch {
        let batches: Vec<RecordBatch> = std::iter::from_fn(|| generator.next_batch(batch_rows)).collect();
        arrow::compute::concat_batches(&generator.schema(), &batches).expect("same schema")
    }

    #[test]
    fn same_config_same_rows_and_splits_union_to_the_whole() {
        let config = DatagenConfig::from_options(&schema(), &rich_options()).unwrap();
        let whole = collect(&mut DatagenGenerator::new(config.clone(), 0, 1), 1000);
        assert_eq!(whole.num_rows(), 5000);
        assert_eq!(whole, collect(&mut DatagenGenerator::new(config.clone(), 0, 1), 333));
        for split in 0..3u64 {
            let part = collect(&mut DatagenGenerator::new(config.clone(), split, 3), 400);
            assert_eq!(part.num_rows() as u64, (5000 - split).div_ceil(3));
            for k in (0..part.num_rows()).step_by(7) {
                let global = split as usize + 3 * k;
                assert_eq!(part.slice(k, 1), whole.slice(global, 1));
            }
        }
        let reseeded = DatagenConfig { seed: 1, ..config };
        assert_ne!(whole, collect(&mut DatagenGenerator::new(reseeded, 0, 1), 1000));
    }

    #[test]
    fn seek_restores_the_rows() {
        let config = DatagenConfig::from_options(&schema(), &rich_options()).unwrap();
        let mut first = DatagenGenerator::new(config.clone(), 2, 4);
        first.next_batch(100);
        let expected = first.next_batch(100);
        let mut restored = DatagenGenerator::new(config, 2, 4);
        restored.seek(100);
        assert_eq!(restored.next_batch(100), expected);
    }

    #[test]
    fn random_values_stay_in_bounds() {
        let config = DatagenConfig::from_options(&schema(), &rich_options()).unwrap();
        let batch = collect(&mut DatagenGenerator::new(config.clone(), 0, 1), 2048);
        let small = batch.column(1).as_primitive::<Int8Type>();
        assert!(small.values().iter().all(|v| (-5..=5).contains(v)));
        assert!(small.values().contains(&-5) && small.values().contains(&5));
        let medium = batch.column(2).as_primitive::<Int16Type>();
        assert!(medium.values().iter().any(|v| *v < -10_000) && medium.values().iter().any(|v| *v > 10_000));
        let qty = batch.column(3).as_primitive::<Int32Type>();
        assert!(qty.iter().flatten().all(|v| (10..=20).contains(&v)));
        let ratio = batch.column(4).as_primitive::<Float32Type>();
        assert!(ratio.values().iter().all(|v| (0.5..=0.75).contains(v)));
        let score = batch.column(5).as_primitive::<Float64Type>();
        assert!(score.values().iter().all(|v| v.is_finite() && v.abs() <= 1e300));
        assert!(score.values().iter().any(|v| *v < 0.0));
        let amount = batch.column(6).as_primitive::<Decimal128Type>();
        assert_eq!(amount.data_type(), &DataType::Decimal128(10, 2));
        assert!(amount.values().iter().all(|v| (100..=10_000).contains(v)));
        assert!(amount.values().iter().any(|v| v % 100 != 0));
        let flags = batch.column(7).as_boolean();
        let trues = flags.true_count();
        assert!((2300..2700).contains(&trues), "{trues} true of 5000");
        let names = batch.column(8).as_string::<i32>();
        assert!(
            names
                .iter()
                .flatten()
                .all(|s| { s.len() == 12 && s.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()) })
        );
        // Rows advance virtual time at 1000 rows/s from 2024-01-01.
        let day = batch.column(9).as_primitive::<Date32Type>();
        assert!(day.values().iter().all(|d| *d == 19_723));
        let ts = batch.column(10).as_primitive::<TimestampMillisecondType>();
        for (row, t) in ts.values().iter().enumerate() {
            let now = DEFAULT_BASE_TIME_MS + row as i64;
            assert!((now - 5000 < *t) && (*t <= now), "row {row}: {t}");
        }
    }

    #[test]
    fn null_rate_is_respected() {
        let config = DatagenConfig::from_options(&schema(), &rich_options()).unwrap();
        let batch = collect(&mut DatagenGenerator::new(config.clone(), 0, 1), 5000);
        let nulls = batch.column(3).null_count();
        assert!((1100..1400).contains(&nulls), "{nulls} nulls of 5000 at rate 0.25");
        assert_eq!(batch.column(0).null_count(), 0);

        // The values that are not null do not depend on the null rate.
        let mut none = rich_options();
        none.remove("fields.qty.null-rate");
        let config = DatagenConfig::from_options(&schema(), &none).unwrap();
        let plain = collect(&mut DatagenGenerator::new(config, 0, 1), 5000);
        let (a, b) = (batch.column(3).as_primitive::<Int32Type>(), plain.column(3).as_primitive::<Int32Type>());
        assert!((0..5000).filter(|&r| a.is_valid(r)).all(|r| a.value(r) == b.value(r)));

        let always = opts(&[("fields.name.null-rate", "1"), ("number-of-rows", "50")]);
        let config = DatagenConfig::from_options(&schema(), &always).unwrap();
        let batch = collect(&mut DatagenGenerator::new(config, 0, 1), 64);
        assert_eq!(batch.column(8).null_count(), 50);
    }

    #[test]
    fn sequences_count_up_and_bound_the_table() {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int32, false),
            Field::new("code", DataType::Utf8, true),
            Field::new("price", DataType::Decimal128(6, 2), true),
            Field::new("x", DataType::Float64, true),
            Field::new("flag", DataType::Boolean, true),
        ]);
        let options = opts(&[
            ("fields.id.kind", "sequence"),
            ("fields.id.start", "1"),
            ("fields.id.end", "100"),
            ("fields.code.kind", "sequence"),
            ("fields.code.start", "-5"),
            ("fields.code.end", "1000"),
            ("fields.price.kind", "sequence"),
            ("fields.price.start", "7"),
            ("fields.price.end", "9000"),
            ("fields.x.kind", "sequence"),
            ("fields.x.start", "0"),
            ("fields.x.end", "500"),
            ("fields.flag.kind", "sequence"),
            ("fields.flag.start", "0"),
            ("fields.flag.end", "1"),
        ]);
        let config = DatagenConfig::from_options(&schema, &options).unwrap();
        assert_eq!(config.total_rows(), Some(100));
        let batch = collect(&mut DatagenGenerator::new(config.clone(), 0, 1), 30);
        assert_eq!(batch.num_rows(), 100);
        let ids: Vec<i32> = batch.column(0).as_primitive::<Int32Type>().values().to_vec();
        assert_eq!(ids, (1..=100).collect::<Vec<_>>());
        let codes = batch.column(1).as_string::<i32>();
        assert_eq!((codes.value(0), codes.value(5), codes.value(99)), ("-5", "0", "94"));
        let prices = batch.column(2).as_primitive::<Decimal128Type>();
        assert_eq!((prices.value(0), prices.value(99)), (700, 10_600));
        assert_eq!(batch.column(3).as_primitive::<Float64Type>().value(10), 10.0);

        let mut ids_by_split: Vec<i32> = (0..4)
            .flat_map(|split| {
                let part = collect(&mut DatagenGenerator::new(config.clone(), split, 4), 7);
                part.column(0).as_primitive::<Int32Type>().values().to_vec()
            })
            .collect();
        ids_by_split.sort_unstable();
        assert_eq!(ids_by_split, (1..=100).collect::<Vec<_>>());

        let capped = DatagenConfig { number_of_rows: Some(10), ..config };
        assert_eq!(capped.total_rows(), Some(10));
    }

    #[test]
    fn var_len_strings_and_defaults() {
        let schema = Schema::new(vec![
            Field::new("s", DataType::Utf8, true),
            Field::new("v", DataType::Utf8, true),
            Field::new("i", DataType::Int64, true),
            Field::new("d", DataType::Decimal128(5, 2), true),
        ]);
        let options = opts(&[("fields.v.var-len", "true"), ("fields.v.length", "8"), ("number-of-rows", "2000")]);
        let config = DatagenConfig::from_options(&schema, &options).unwrap();
        assert_eq!(config.rows_per_second(), 10_000);
        let batch = collect(&mut DatagenGenerator::new(config, 0, 1), 2000);
        let s = batch.column(0).as_string::<i32>();
        assert!(s.iter().flatten().all(|v| v.len() == 100));
        let v = batch.column(1).as_string::<i32>();
        let lengths: Vec<usize> = v.iter().flatten().map(str::len).collect();
        assert!(lengths.iter().all(|l| (1..=8).contains(l)));
        assert!(lengths.contains(&1) && lengths.contains(&8));
        let i = batch.column(2).as_primitive::<Int64Type>();
        assert!(i.values().iter().any(|v| *v < 0) && i.values().iter().any(|v| *v > 0));
        // Flink's decimal default range is [smallest positive double, largest value].
        let d = batch.column(3).as_primitive::<Decimal128Type>();
        assert!(d.values().iter().all(|v| (0..=99_999).contains(v)));
    }

    #[test]
    fn rate_is_shared_between_splits() {
        let config = DatagenConfig::from_options(&schema(), &opts(&[("rows-per-second", "10")])).unwrap();
        let shares: Vec<u64> = (0..3).map(|i| DatagenGenerator::new(config.clone(), i, 3).rows_per_second()).collect();
        assert_eq!(shares, [4, 3, 3]);
        let mut generator = DatagenGenerator::new(config, 1, 3);
        assert_eq!(generator.next_row_due_ms(), Some(100));
        generator.next_batch(2);
        assert_eq!(generator.next_row_due_ms(), Some(700));
        assert_eq!(generator.split_rows(), None);
    }

    #[test]
    fn option_errors() {
        let check = |pairs: &[(&str, &str)], needle: &str| {
            let err = DatagenConfig::from_options(&schema(), &opts(pairs)).unwrap_err().to_string();
            assert!(err.contains(needle), "{pairs:?}: {err}");
        };
        check(&[("rows-per-secnd", "5")], "valid options are: connector, rows-per-second");
        check(&[("rows-per-secnd", "5")], "fields.qty.{kind,min,max");
        check(&[("fields.nope.min", "1")], "names column 'nope'");
        check(&[("fields.qty.minimum", "1")], "unknown datagen option");
        check(&[("fields.qty.length", "5")], "does not apply to column 'qty'");
        check(&[("fields.name.min", "5")], "it accepts: kind, length, var-len, null-rate");
        check(&[("fields.qty.kind", "sequence")], "needs 'fields.qty.start'");
        check(
            &[("fields.qty.kind", "sequence"), ("fields.qty.start", "5"), ("fields.qty.end", "1")],
            "must not exceed",
        );
        check(
            &[
                ("fields.qty.kind", "sequence"),
                ("fields.qty.start", "1"),
                ("fields.qty.end", "1"),
                ("fields.qty.max", "3"),
            ],
            "does not apply",
        );
        check(&[("fields.ts.kind", "sequence")], "not supported for type");
        check(&[("fields.qty.kind", "shuffle")], "expected 'random' or 'sequence'");
        check(&[("fields.small.max", "300")], "expected an integer in [-128, 127]");
        check(&[("fields.qty.min", "9"), ("fields.qty.max", "3")], "must not exceed 'max'");
        check(&[("fields.ratio.max", "nan")], "finite number");
        check(&[("fields.qty.null-rate", "1.5")], "between 0 and 1");
        check(&[("fields.id.null-rate", "0.5")], "nullable column");
        check(&[("fields.ts.max-past", "5 fortnights")], "duration");
        check(&[("rows-per-second", "0")], "at least 1");
        check(&[("number-of-rows", "-1")], "non-negative");
        check(
            &[("fields.amount.kind", "sequence"), ("fields.amount.start", "0"), ("fields.amount.end", "1e9")],
            "expected an integer",
        );
        check(
            &[("fields.amount.kind", "sequence"), ("fields.amount.start", "0"), ("fields.amount.end", "100000000")],
            "precision",
        );

        let unsupported = Schema::new(vec![Field::new("b", DataType::Binary, true)]);
        let err = DatagenConfig::from_options(&unsupported, &BTreeMap::new()).unwrap_err();
        assert!(err.to_string().contains("not supported by datagen"), "{err}");

        let dotted = Schema::new(vec![Field::new("a.b", DataType::Int32, true)]);
        let config =
            DatagenConfig::from_options(&dotted, &opts(&[("fields.a.b.max", "3"), ("fields.a.b.min", "3")])).unwrap();
        assert_eq!(config.fields[0].generator, ValueGenerator::RandomInteger { min: 3, max: 3 });
        let parsed = DatagenConfig::from_options(
            &schema(),
            &opts(&[("base-time", "2024-01-02 00:00:00"), ("seed", "5"), ("scan.parallelism", "3")]),
        )
        .unwrap();
        assert_eq!(
            (parsed.base_time_ms, parsed.seed, parsed.parallelism),
            (DEFAULT_BASE_TIME_MS + MS_PER_DAY, 5, Some(3))
        );
    }

    #[test]
    fn timestamp_time_zone_is_kept() {
        let schema =
            Schema::new(vec![Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), true)]);
        let config = DatagenConfig::from_options(&schema, &opts(&[("number-of-rows", "3")])).unwrap();
        let batch = DatagenGenerator::new(config, 0, 1).next_batch(10).unwrap();
        assert_eq!(batch.schema().as_ref(), &schema);
    }

    /// `cargo test --release -- --ignored --nocapture datagen`
    #[test]
    #[ignore]
    fn bench_generation() {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("qty", DataType::Int32, true),
            Field::new("price", DataType::Decimal128(10, 2), true),
            Field::new("name", DataType::Utf8, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]);
        let options = opts(&[
            ("fields.id.kind", "sequence"),
            ("fields.id.start", "1"),
            ("fields.id.end", "10000000"),
            ("fields.name.length", "16"),
        ]);
        let config = DatagenConfig::from_options(&schema, &options).unwrap();
        let mut generator = DatagenGenerator::new(config, 0, 1);
        let cpu_seconds = || -> Option<f64> {
            let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
            Some(stat.split_whitespace().next()?.parse::<f64>().ok()? / 1e9)
        };
        let (start, cpu_start) = (std::time::Instant::now(), cpu_seconds());
        let mut rows = 0;
        while let Some(batch) = generator.next_batch(8192) {
            rows += batch.num_rows();
        }
        let wall = start.elapsed().as_secs_f64();
        let cpu = cpu_start.zip(cpu_seconds()).map(|(a, b)| b - a);
        println!(
            "datagen, 5 columns (sequence, int, decimal, 16-char string, timestamp): {:.1} M rows/s wall{}",
            rows as f64 / wall / 1e6,
            cpu.map_or(String::new(), |cpu| format!(", {:.1} M rows/s of cpu time", rows as f64 / cpu / 1e6))
        );
    }
}
