//! Record formats: turning lines of newline-delimited JSON, CSV or raw text into Arrow
//! record batches with the semantics of Flink's `json`, `csv` and `raw` formats. This
//! module owns the entry point ([`decoder_for`]), the options and errors every format
//! shares, the column builders (plain vectors that can be truncated, so a line that fails
//! half-way leaves nothing behind) and the text-to-value conversions (integers, exact
//! decimals, dates and timestamps, base64) that the JSON and CSV decoders both use.
//! Splitting files into lines, counting skipped lines and choosing batch sizes belong to
//! the caller.

mod csv;
mod json;
mod raw;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::builder::BooleanBufferBuilder;
use arrow::array::types::{
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};
use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array, Int8Array,
    Int16Array, Int32Array, Int64Array, ListArray, MapArray, PrimitiveArray, StringArray, StructArray,
    Time32MillisecondArray,
};
use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, Field, FieldRef, Fields, SchemaRef, TimeUnit};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};

pub use self::csv::CsvDecoder;
pub use self::json::JsonDecoder;
pub use self::raw::RawDecoder;

/// How timestamps are written in the text, Flink's `json.timestamp-format.standard`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampFormat {
    /// `yyyy-MM-dd HH:mm:ss[.fffffffff]`, Flink's default.
    #[default]
    Sql,
    /// `yyyy-MM-ddTHH:mm[:ss[.fffffffff]]`.
    Iso8601,
}

/// The format options of a table's `WITH (...)` clause that decoding depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatOptions {
    /// `json.ignore-parse-errors` / `csv.ignore-parse-errors`: a value that cannot be
    /// converted becomes NULL. A line that is not well-formed still fails `push_line`; the
    /// caller skips and counts it.
    pub ignore_parse_errors: bool,
    /// `json.fail-on-missing-field`: an absent field fails the line instead of reading NULL.
    pub fail_on_missing_field: bool,
    pub timestamp_format: TimestampFormat,
    /// `csv.field-delimiter`, an ASCII byte.
    pub csv_field_delimiter: u8,
    /// `csv.quote-character`; `None` is `csv.disable-quote-character`.
    pub csv_quote_character: Option<u8>,
    /// `csv.null-literal`: a field with exactly this text is NULL.
    pub csv_null_literal: Option<String>,
    /// `csv.allow-comments`: lines starting with `#` hold no record.
    pub csv_allow_comments: bool,
}

impl Default for FormatOptions {
    fn default() -> Self {
        Self {
            ignore_parse_errors: false,
            fail_on_missing_field: false,
            timestamp_format: TimestampFormat::Sql,
            csv_field_delimiter: b',',
            csv_quote_character: Some(b'"'),
            csv_null_literal: None,
            csv_allow_comments: false,
        }
    }
}

/// Why a decoder cannot be built for a format, schema and options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    UnsupportedFormat { format: String },
    UnsupportedType { format: &'static str, field: String, data_type: String },
    InvalidSchema { format: &'static str, reason: String },
    InvalidOptions { reason: &'static str },
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnsupportedFormat { format } => {
                write!(f, "unsupported format '{format}': expected 'json', 'csv' or 'raw'")
            }
            Self::UnsupportedType { format, field, data_type } => {
                write!(f, "the {format} format cannot read field '{field}' of type {data_type}")
            }
            Self::InvalidSchema { format, reason } => write!(f, "the {format} format {reason}"),
            Self::InvalidOptions { reason } => write!(f, "invalid format options: {reason}"),
        }
    }
}

impl std::error::Error for FormatError {}

/// Why one line could not be decoded. Field paths are dotted (`bid.price`); offsets are
/// byte offsets into the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The line holds no record: it is empty (or, for JSON, only whitespace). Flink drops
    /// such lines; callers should skip them, and may match on this variant to do so.
    BlankLine,
    InvalidUtf8 {
        offset: usize,
    },
    /// The line is not well-formed JSON or CSV.
    Syntax {
        offset: usize,
        expected: &'static str,
        field: String,
    },
    /// A well-formed value that cannot be converted to its column's type.
    InvalidValue {
        field: String,
        value: String,
        expected: &'static str,
    },
    /// An absent field while `json.fail-on-missing-field` is set.
    MissingField {
        field: String,
    },
    /// A NULL (explicit, absent or unconvertible) for a column declared NOT NULL.
    NullForNotNull {
        field: String,
    },
    /// A CSV line with a different number of fields than the schema.
    FieldCount {
        expected: usize,
        found: usize,
    },
    /// The current batch reached Arrow's 2 GiB limit for one string column.
    BatchFull {
        field: String,
    },
}

/// The internal result: boxing the rare error keeps the common `Ok` a register value
/// rather than a large struct written through memory at every call.
type Decoded<T = ()> = Result<T, Box<DecodeError>>;

impl DecodeError {
    /// Prefixes the field path with `name`, as the error travels out of a nested value.
    fn within(mut self: Box<Self>, name: &str) -> Box<Self> {
        match &mut *self {
            Self::Syntax { field, .. }
            | Self::InvalidValue { field, .. }
            | Self::MissingField { field }
            | Self::NullForNotNull { field }
            | Self::BatchFull { field } => {
                if field.is_empty() {
                    name.clone_into(field);
                } else {
                    field.insert(0, '.');
                    field.insert_str(0, name);
                }
            }
            Self::BlankLine | Self::InvalidUtf8 { .. } | Self::FieldCount { .. } => {}
        }
        self
    }

    fn invalid_value(text: &[u8], expected: &'static str) -> Self {
        const SHOWN: usize = 64;
        let mut value = String::from_utf8_lossy(&text[..text.len().min(SHOWN)]).into_owned();
        if text.len() > SHOWN {
            value.push('…');
        }
        Self::InvalidValue { field: String::new(), value, expected }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BlankLine => write!(f, "blank line holds no record"),
            Self::InvalidUtf8 { offset } => write!(f, "invalid UTF-8 at byte {offset}"),
            Self::Syntax { offset, expected, field } => {
                write!(f, "malformed record at byte {offset}: expected {expected}")?;
                if !field.is_empty() {
                    write!(f, " in field '{field}'")?;
                }
                Ok(())
            }
            Self::InvalidValue { field, value, expected } => {
                write!(f, "field '{field}': cannot read '{value}' as {expected}")
            }
            Self::MissingField { field } => {
                write!(f, "field '{field}' is missing and 'json.fail-on-missing-field' is set")
            }
            Self::NullForNotNull { field } => {
                write!(f, "field '{field}' is NOT NULL but the record gives it no value")
            }
            Self::FieldCount { expected, found } => {
                write!(f, "expected {expected} fields but the line has {found}")
            }
            Self::BatchFull { field } => {
                write!(f, "field '{field}': more than 2 GiB of text in one batch, flush batches sooner")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes one record per line into Arrow columns.
pub trait LineDecoder: Send {
    /// Decodes one line (without its `\n`; a trailing `\r` is tolerated) and appends at
    /// most one row. On error nothing of the line stays in the batch. A CSV comment line
    /// appends nothing and returns `Ok`.
    fn push_line(&mut self, line: &[u8]) -> Result<(), DecodeError>;
    /// Rows appended since the last flush.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Returns the rows appended since the last flush and starts a new batch.
    fn flush(&mut self) -> RecordBatch;
    fn schema(&self) -> SchemaRef;
}

/// Builds the decoder for a Flink format name (`json`, `csv` or `raw`) and the Arrow schema
/// of the columns to produce (for JSON, a projection of the record's fields, nested structs
/// possibly pruned too).
pub fn decoder_for(
    format: &str,
    schema: SchemaRef,
    options: &FormatOptions,
) -> Result<Box<dyn LineDecoder>, FormatError> {
    match format {
        "json" => Ok(Box::new(JsonDecoder::try_new(schema, options)?)),
        "csv" => Ok(Box::new(CsvDecoder::try_new(schema, options)?)),
        "raw" => Ok(Box::new(RawDecoder::try_new(schema)?)),
        other => Err(FormatError::UnsupportedFormat { format: other.to_owned() }),
    }
}

// ---------------------------------------------------------------------------------------
// Column builders
// ---------------------------------------------------------------------------------------

/// One column under construction. Every kind keeps its values in vectors that can be cut
/// back to a row count, which is how a failed line is rolled back.
struct Column {
    nullable: bool,
    validity: Validity,
    data: ColumnData,
}

enum ColumnData {
    Boolean(BooleanBufferBuilder),
    Int8(Vec<i8>),
    Int16(Vec<i16>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Float32(Vec<f32>),
    Float64(Vec<f64>),
    Decimal128 { values: Vec<i128>, precision: u8, scale: i8 },
    Date32(Vec<i32>),
    Time32Millisecond(Vec<i32>),
    Timestamp { values: Vec<i64>, unit: TimeUnit, timezone: Option<Arc<str>> },
    Utf8(ByteColumn),
    Binary(ByteColumn),
    Struct(StructColumn),
    List { field: FieldRef, offsets: Vec<i32>, element: Box<Column> },
    Map { entries: FieldRef, sorted: bool, offsets: Vec<i32>, keys: Box<Column>, values: Box<Column> },
}

/// Variable-length values: Arrow's offsets + bytes layout, appended to directly.
struct ByteColumn {
    offsets: Vec<i32>,
    bytes: Vec<u8>,
}

impl ByteColumn {
    fn new() -> Self {
        Self { offsets: vec![0], bytes: Vec::new() }
    }

    /// Ends the value written into `bytes` since the last call.
    #[inline]
    fn end_value(&mut self) -> Decoded {
        match i32::try_from(self.bytes.len()) {
            Ok(end) => {
                self.offsets.push(end);
                Ok(())
            }
            Err(_) => {
                self.bytes.truncate(self.value_start());
                Err(DecodeError::BatchFull { field: String::new() }.into())
            }
        }
    }

    #[inline]
    fn value_start(&self) -> usize {
        self.offsets.last().map_or(0, |&offset| offset as usize)
    }

    fn truncate(&mut self, len: usize) {
        self.offsets.truncate(len + 1);
        let end = self.value_start();
        self.bytes.truncate(end);
    }

    fn take(&mut self) -> (OffsetBuffer<i32>, Buffer) {
        let mut offsets = Vec::with_capacity(self.offsets.len());
        offsets.push(0);
        let offsets = std::mem::replace(&mut self.offsets, offsets);
        let bytes = take_vec(&mut self.bytes);
        (OffsetBuffer::new(ScalarBuffer::from(offsets)), Buffer::from_vec(bytes))
    }
}

/// The fields of a struct (or of the whole record) with a by-name lookup for JSON.
struct StructColumn {
    fields: Fields,
    children: Vec<Column>,
    lookup: FieldLookup,
    /// NULL rows of this struct not yet written to its children. Most nested records in a
    /// stream are absent on most lines (a Nexmark line holds one of person, auction and
    /// bid): padding their children once per run of NULLs instead of once per row keeps
    /// wide absent structs nearly free.
    pending_nulls: usize,
}

impl StructColumn {
    fn try_new(fields: &Fields, format: &'static str, path: &str) -> Result<Self, FormatError> {
        let children = fields
            .iter()
            .map(|field| Column::try_new(field, format, &join_path(path, field.name())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { fields: fields.clone(), children, lookup: FieldLookup::new(fields), pending_nulls: 0 })
    }

    /// Writes the pending NULL rows into the children, which then hold every row.
    #[inline]
    fn fill_pending_nulls(&mut self) {
        if self.pending_nulls > 0 {
            for child in &mut self.children {
                child.push_nulls(self.pending_nulls);
            }
            self.pending_nulls = 0;
        }
    }

    /// Cuts the struct back to `len` rows, given that it holds `old_len` (pending included).
    fn truncate(&mut self, old_len: usize, len: usize) {
        let children_len = old_len - self.pending_nulls;
        if self.pending_nulls > 0 && len >= children_len {
            self.pending_nulls = len - children_len;
        } else {
            // Without pending rows a child may also hold half a row beyond `old_len`.
            self.pending_nulls = 0;
            for child in &mut self.children {
                child.truncate(len);
            }
        }
    }

    fn finish_children(&mut self) -> Vec<ArrayRef> {
        self.fill_pending_nulls();
        self.children.iter_mut().map(Column::finish).collect()
    }
}

/// Finds a schema field by its name as raw bytes, without allocating. Records usually
/// list their fields in the same order every line, so the caller passes the index after
/// the previous match as a hint that is tried first. Names are compared by their first
/// eight bytes as one word (and their length) before the rest.
struct FieldLookup {
    names: Vec<FieldName>,
    /// Only for wide structs, where a linear scan would cost more than hashing.
    index: Option<HashMap<Box<[u8]>, usize>>,
}

struct FieldName {
    prefix: u64,
    bytes: Box<[u8]>,
}

/// The first eight bytes (fewer for a shorter name, zero-padded) of the `len`-byte name
/// starting at `text[start]`, as a little-endian word.
#[inline]
fn name_prefix(text: &[u8], start: usize, len: usize) -> u64 {
    let word = match text.get(start..start + 8) {
        Some(word) => u64::from_le_bytes(word.try_into().expect("a range of eight bytes")),
        None => {
            let mut word = [0u8; 8];
            let available = text.get(start..).unwrap_or_default();
            let copied = available.len().min(8);
            word[..copied].copy_from_slice(&available[..copied]);
            u64::from_le_bytes(word)
        }
    };
    if len >= 8 { word } else { word & ((1u64 << (len * 8)) - 1) }
}

impl FieldLookup {
    const LINEAR_SCAN_MAX_FIELDS: usize = 24;

    fn new(fields: &Fields) -> Self {
        let names: Vec<FieldName> = fields
            .iter()
            .map(|field| {
                let bytes: Box<[u8]> = field.name().as_bytes().into();
                FieldName { prefix: name_prefix(&bytes, 0, bytes.len()), bytes }
            })
            .collect();
        let index = (names.len() > Self::LINEAR_SCAN_MAX_FIELDS).then(|| {
            let mut index = HashMap::with_capacity(names.len());
            for (position, name) in names.iter().enumerate() {
                // A duplicated name resolves to its first field, like the linear scan.
                index.entry(name.bytes.clone()).or_insert(position);
            }
            index
        });
        Self { names, index }
    }

    /// `prefix` is `name_prefix` of `key`.
    #[inline(always)]
    fn find(&self, key: &[u8], prefix: u64, hint: usize) -> Option<usize> {
        let matches = |name: &FieldName| {
            name.prefix == prefix && name.bytes.len() == key.len() && (key.len() <= 8 || name.bytes[8..] == key[8..])
        };
        if let Some(name) = self.names.get(hint)
            && matches(name)
        {
            return Some(hint);
        }
        match &self.index {
            Some(index) => index.get(key).copied(),
            None => self.names.iter().position(matches),
        }
    }
}

fn join_path(parent: &str, name: &str) -> String {
    if parent.is_empty() { name.to_owned() } else { format!("{parent}.{name}") }
}

fn take_vec<T>(values: &mut Vec<T>) -> Vec<T> {
    // The next batch likely has the size of this one: reserve it now rather than regrow.
    let capacity = values.len();
    std::mem::replace(values, Vec::with_capacity(capacity))
}

fn unsupported(format: &'static str, path: &str, data_type: &DataType) -> FormatError {
    FormatError::UnsupportedType { format, field: path.to_owned(), data_type: data_type.to_string() }
}

impl Column {
    fn try_new(field: &Field, format: &'static str, path: &str) -> Result<Self, FormatError> {
        let data = match field.data_type() {
            DataType::Boolean => ColumnData::Boolean(BooleanBufferBuilder::new(0)),
            DataType::Int8 => ColumnData::Int8(Vec::new()),
            DataType::Int16 => ColumnData::Int16(Vec::new()),
            DataType::Int32 => ColumnData::Int32(Vec::new()),
            DataType::Int64 => ColumnData::Int64(Vec::new()),
            DataType::Float32 => ColumnData::Float32(Vec::new()),
            DataType::Float64 => ColumnData::Float64(Vec::new()),
            DataType::Decimal128(precision, scale)
                if (1..=38).contains(precision) && i16::from(*scale) <= i16::from(*precision) =>
            {
                ColumnData::Decimal128 { values: Vec::new(), precision: *precision, scale: *scale }
            }
            DataType::Date32 => ColumnData::Date32(Vec::new()),
            DataType::Time32(TimeUnit::Millisecond) => ColumnData::Time32Millisecond(Vec::new()),
            DataType::Timestamp(unit, timezone) => {
                ColumnData::Timestamp { values: Vec::new(), unit: *unit, timezone: timezone.clone() }
            }
            DataType::Utf8 => ColumnData::Utf8(ByteColumn::new()),
            DataType::Binary => ColumnData::Binary(ByteColumn::new()),
            DataType::Struct(fields) => ColumnData::Struct(StructColumn::try_new(fields, format, path)?),
            DataType::List(element) => ColumnData::List {
                field: element.clone(),
                offsets: vec![0],
                element: Box::new(Column::try_new(element, format, &format!("{path}[]"))?),
            },
            DataType::Map(entries, sorted) => {
                let DataType::Struct(entry_fields) = entries.data_type() else {
                    return Err(unsupported(format, path, field.data_type()));
                };
                // Arrow rejects map arrays whose entries or keys are declared nullable.
                if entry_fields.len() != 2 || entries.is_nullable() || entry_fields[0].is_nullable() {
                    return Err(unsupported(format, path, field.data_type()));
                }
                let keys = Column::try_new(&entry_fields[0], format, &format!("{path}.key"))?;
                if !keys.is_scalar() {
                    return Err(unsupported(format, path, field.data_type()));
                }
                ColumnData::Map {
                    entries: entries.clone(),
                    sorted: *sorted,
                    offsets: vec![0],
                    keys: Box::new(keys),
                    values: Box::new(Column::try_new(&entry_fields[1], format, &format!("{path}.value"))?),
                }
            }
            other => return Err(unsupported(format, path, other)),
        };
        Ok(Self { nullable: field.is_nullable(), validity: Validity::default(), data })
    }

    #[inline]
    fn len(&self) -> usize {
        self.validity.len()
    }

    /// How the column's type is named in error messages.
    fn expected(&self) -> &'static str {
        match &self.data {
            ColumnData::Boolean(_) => "a BOOLEAN",
            ColumnData::Int8(_) => "a TINYINT",
            ColumnData::Int16(_) => "a SMALLINT",
            ColumnData::Int32(_) => "an INT",
            ColumnData::Int64(_) => "a BIGINT",
            ColumnData::Float32(_) => "a FLOAT",
            ColumnData::Float64(_) => "a DOUBLE",
            ColumnData::Decimal128 { .. } => "a DECIMAL",
            ColumnData::Date32(_) => "a DATE",
            ColumnData::Time32Millisecond(_) => "a TIME",
            ColumnData::Timestamp { .. } => "a TIMESTAMP",
            ColumnData::Utf8(_) => "a STRING",
            ColumnData::Binary(_) => "base64 BYTES",
            ColumnData::Struct(_) => "a ROW (JSON object)",
            ColumnData::List { .. } => "an ARRAY (JSON array)",
            ColumnData::Map { .. } => "a MAP (JSON object)",
        }
    }

    fn is_scalar(&self) -> bool {
        !matches!(self.data, ColumnData::Struct(_) | ColumnData::List { .. } | ColumnData::Map { .. })
    }

    /// Appends an explicit NULL, refused for a NOT NULL column.
    #[inline]
    fn append_null(&mut self) -> Decoded {
        if !self.nullable {
            return Err(DecodeError::NullForNotNull { field: String::new() }.into());
        }
        self.push_null();
        Ok(())
    }

    #[inline]
    fn push_null(&mut self) {
        self.push_nulls(1);
    }

    /// Appends NULL slots without the NOT NULL check: also used under a NULL struct,
    /// where Arrow accepts nulls in NOT NULL children because the parent masks them.
    fn push_nulls(&mut self, count: usize) {
        fn pad<T: Copy>(values: &mut Vec<T>, value: T, count: usize) {
            values.resize(values.len() + count, value);
        }
        match &mut self.data {
            ColumnData::Boolean(values) => values.append_n(count, false),
            ColumnData::Int8(values) => pad(values, 0, count),
            ColumnData::Int16(values) => pad(values, 0, count),
            ColumnData::Int32(values) | ColumnData::Date32(values) | ColumnData::Time32Millisecond(values) => {
                pad(values, 0, count)
            }
            ColumnData::Int64(values) | ColumnData::Timestamp { values, .. } => pad(values, 0, count),
            ColumnData::Float32(values) => pad(values, 0.0, count),
            ColumnData::Float64(values) => pad(values, 0.0, count),
            ColumnData::Decimal128 { values, .. } => pad(values, 0, count),
            ColumnData::Utf8(column) | ColumnData::Binary(column) => {
                let end = *column.offsets.last().unwrap_or(&0);
                pad(&mut column.offsets, end, count);
            }
            ColumnData::Struct(st) => st.pending_nulls += count,
            ColumnData::List { offsets, .. } | ColumnData::Map { offsets, .. } => {
                let end = *offsets.last().unwrap_or(&0);
                pad(offsets, end, count);
            }
        }
        self.validity.append_nulls(count);
    }

    /// Drops every row from `len` on, and any half-written value after them (so it must
    /// run even when the row count is already `len`).
    fn truncate(&mut self, len: usize) {
        let old_len = self.validity.len();
        self.validity.truncate(len);
        match &mut self.data {
            ColumnData::Boolean(values) => values.truncate(len),
            ColumnData::Int8(values) => values.truncate(len),
            ColumnData::Int16(values) => values.truncate(len),
            ColumnData::Int32(values) | ColumnData::Date32(values) | ColumnData::Time32Millisecond(values) => {
                values.truncate(len)
            }
            ColumnData::Int64(values) | ColumnData::Timestamp { values, .. } => values.truncate(len),
            ColumnData::Float32(values) => values.truncate(len),
            ColumnData::Float64(values) => values.truncate(len),
            ColumnData::Decimal128 { values, .. } => values.truncate(len),
            ColumnData::Utf8(column) | ColumnData::Binary(column) => column.truncate(len),
            ColumnData::Struct(st) => st.truncate(old_len, len),
            ColumnData::List { offsets, element, .. } => {
                offsets.truncate(len + 1);
                element.truncate(offsets.last().map_or(0, |&end| end as usize));
            }
            ColumnData::Map { offsets, keys, values, .. } => {
                offsets.truncate(len + 1);
                let end = offsets.last().map_or(0, |&end| end as usize);
                keys.truncate(end);
                values.truncate(end);
            }
        }
    }

    /// Takes the rows built so far as an array and starts over.
    fn finish(&mut self) -> ArrayRef {
        let len = self.len();
        let nulls = self.validity.finish();
        match &mut self.data {
            ColumnData::Boolean(values) => Arc::new(BooleanArray::new(values.finish(), nulls)),
            ColumnData::Int8(values) => Arc::new(Int8Array::new(take_vec(values).into(), nulls)),
            ColumnData::Int16(values) => Arc::new(Int16Array::new(take_vec(values).into(), nulls)),
            ColumnData::Int32(values) => Arc::new(Int32Array::new(take_vec(values).into(), nulls)),
            ColumnData::Int64(values) => Arc::new(Int64Array::new(take_vec(values).into(), nulls)),
            ColumnData::Float32(values) => Arc::new(Float32Array::new(take_vec(values).into(), nulls)),
            ColumnData::Float64(values) => Arc::new(Float64Array::new(take_vec(values).into(), nulls)),
            ColumnData::Decimal128 { values, precision, scale } => Arc::new(
                Decimal128Array::new(take_vec(values).into(), nulls)
                    .with_precision_and_scale(*precision, *scale)
                    .expect("decimal precision and scale were validated when the column was built"),
            ),
            ColumnData::Date32(values) => Arc::new(Date32Array::new(take_vec(values).into(), nulls)),
            ColumnData::Time32Millisecond(values) => {
                Arc::new(Time32MillisecondArray::new(take_vec(values).into(), nulls))
            }
            ColumnData::Timestamp { values, unit, timezone } => {
                let values: ScalarBuffer<i64> = take_vec(values).into();
                let timezone = timezone.clone();
                match unit {
                    TimeUnit::Second => {
                        Arc::new(PrimitiveArray::<TimestampSecondType>::new(values, nulls).with_timezone_opt(timezone))
                    }
                    TimeUnit::Millisecond => Arc::new(
                        PrimitiveArray::<TimestampMillisecondType>::new(values, nulls).with_timezone_opt(timezone),
                    ),
                    TimeUnit::Microsecond => Arc::new(
                        PrimitiveArray::<TimestampMicrosecondType>::new(values, nulls).with_timezone_opt(timezone),
                    ),
                    TimeUnit::Nanosecond => Arc::new(
                        PrimitiveArray::<TimestampNanosecondType>::new(values, nulls).with_timezone_opt(timezone),
                    ),
                }
            }
            ColumnData::Utf8(column) => {
                let (offsets, bytes) = column.take();
                debug_assert!(std::str::from_utf8(bytes.as_slice()).is_ok());
                // SAFETY: every value appended to a Utf8 column is valid UTF-8 (the decoders
                // validate input lines, split them only at ASCII bytes, and escape decoding
                // writes whole characters), and the offsets are ascending within `bytes`.
                Arc::new(unsafe { StringArray::new_unchecked(offsets, bytes, nulls) })
            }
            ColumnData::Binary(column) => {
                let (offsets, bytes) = column.take();
                Arc::new(BinaryArray::new(offsets, bytes, nulls))
            }
            ColumnData::Struct(st) => {
                let children = st.finish_children();
                Arc::new(
                    StructArray::try_new_with_length(st.fields.clone(), children, nulls, len)
                        .expect("struct children are kept at the struct's length"),
                )
            }
            ColumnData::List { field, offsets, element } => {
                let offsets = take_offsets(offsets);
                Arc::new(
                    ListArray::try_new(field.clone(), offsets, element.finish(), nulls)
                        .expect("list offsets index into the element column"),
                )
            }
            ColumnData::Map { entries, sorted, offsets, keys, values } => {
                let offsets = take_offsets(offsets);
                let DataType::Struct(entry_fields) = entries.data_type() else {
                    unreachable!("map columns are only built over struct entries");
                };
                let entry_count = keys.len();
                let entry_columns = vec![keys.finish(), values.finish()];
                let entry_array =
                    StructArray::try_new_with_length(entry_fields.clone(), entry_columns, None, entry_count)
                        .expect("map keys and values are kept at the same length");
                Arc::new(
                    MapArray::try_new(entries.clone(), offsets, entry_array, nulls, *sorted)
                        .expect("map offsets index into the entries"),
                )
            }
        }
    }
}

/// Row validity. Like Arrow's `NullBufferBuilder` it has no bitmap until the first NULL,
/// but its length is read inline: the JSON decoder asks for it once per field.
#[derive(Default)]
struct Validity {
    len: usize,
    bitmap: Option<BooleanBufferBuilder>,
}

impl Validity {
    #[inline]
    fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn append_non_null(&mut self) {
        if let Some(bitmap) = &mut self.bitmap {
            bitmap.append(true);
        }
        self.len += 1;
    }

    fn append_nulls(&mut self, count: usize) {
        let len = self.len;
        let bitmap = self.bitmap.get_or_insert_with(|| {
            let mut bitmap = BooleanBufferBuilder::new(len.max(1024));
            bitmap.append_n(len, true);
            bitmap
        });
        bitmap.append_n(count, false);
        self.len += count;
    }

    fn truncate(&mut self, len: usize) {
        if len < self.len {
            if let Some(bitmap) = &mut self.bitmap {
                bitmap.truncate(len);
            }
            self.len = len;
        }
    }

    fn finish(&mut self) -> Option<NullBuffer> {
        self.len = 0;
        self.bitmap.take().map(|mut bitmap| NullBuffer::new(bitmap.finish()))
    }
}

/// Rejects invalid UTF-8, with a fast path for the common all-ASCII line: 32 bytes per
/// step, OR-ed as words, which compilers turn into vector instructions.
fn check_utf8(line: &[u8]) -> Result<(), DecodeError> {
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
    let mut chunks = line.chunks_exact(32);
    let ascii = chunks.by_ref().all(|chunk| {
        let mut any = 0u64;
        for word in chunk.chunks_exact(8) {
            any |= u64::from_le_bytes(word.try_into().expect("chunks of eight bytes"));
        }
        any & HIGH_BITS == 0
    }) && chunks.remainder().is_ascii();
    if ascii {
        return Ok(());
    }
    std::str::from_utf8(line).map(drop).map_err(|error| DecodeError::InvalidUtf8 { offset: error.valid_up_to() })
}

fn take_offsets(offsets: &mut Vec<i32>) -> OffsetBuffer<i32> {
    let mut fresh = Vec::with_capacity(offsets.len());
    fresh.push(0);
    OffsetBuffer::new(ScalarBuffer::from(std::mem::replace(offsets, fresh)))
}

/// Ends a list or map value whose elements were appended up to `element_count`.
#[inline]
fn end_nested_value(offsets: &mut Vec<i32>, element_count: usize) -> Decoded {
    let end = i32::try_from(element_count).map_err(|_| Box::new(DecodeError::BatchFull { field: String::new() }))?;
    offsets.push(end);
    Ok(())
}

/// The top-level columns of a decoder and the rows they hold.
struct RecordColumns {
    schema: SchemaRef,
    root: StructColumn,
    rows: usize,
}

impl RecordColumns {
    fn try_new(schema: SchemaRef, format: &'static str) -> Result<Self, FormatError> {
        let root = StructColumn::try_new(schema.fields(), format, "")?;
        Ok(Self { schema, root, rows: 0 })
    }

    /// Keeps the row appended by `decode` if it succeeds and removes every trace of it if
    /// it fails.
    #[inline]
    fn push_row(&mut self, decode: impl FnOnce(&mut StructColumn, usize) -> Decoded) -> Result<(), DecodeError> {
        let rows = self.rows;
        debug_assert_eq!(self.root.pending_nulls, 0, "the record itself is never NULL");
        match decode(&mut self.root, rows) {
            Ok(()) => {
                debug_assert!(self.root.children.iter().all(|child| child.len() == rows + 1));
                self.rows += 1;
                Ok(())
            }
            Err(error) => {
                self.root.truncate(rows, rows);
                Err(*error)
            }
        }
    }

    fn finish(&mut self) -> RecordBatch {
        let arrays = self.root.finish_children();
        let options = RecordBatchOptions::new().with_row_count(Some(self.rows));
        self.rows = 0;
        RecordBatch::try_new_with_options(self.schema.clone(), arrays, &options)
            .expect("decoded columns match the schema they were built from")
    }
}

// ---------------------------------------------------------------------------------------
// Text conversions (Flink's `asText()` then parse, shared by JSON and CSV)
// ---------------------------------------------------------------------------------------

/// Appends one row converted from text with Flink's rules for the column's type; on
/// error appends nothing.
fn append_text(column: &mut Column, text: &[u8], timestamp_format: TimestampFormat) -> Decoded {
    enum Outcome {
        Value,
        Null,
        Invalid(&'static str),
        Full,
    }
    fn push<T>(values: &mut Vec<T>, value: Option<T>, expected: &'static str) -> Outcome {
        match value {
            Some(value) => {
                values.push(value);
                Outcome::Value
            }
            None => Outcome::Invalid(expected),
        }
    }
    let outcome = match &mut column.data {
        // Java's Boolean.parseBoolean: anything but "true" (any case) is false.
        ColumnData::Boolean(values) => {
            values.append(java_trim(text).eq_ignore_ascii_case(b"true"));
            Outcome::Value
        }
        ColumnData::Int8(values) => {
            push(values, parse_i64(java_trim(text)).and_then(|v| i8::try_from(v).ok()), "a TINYINT")
        }
        ColumnData::Int16(values) => {
            push(values, parse_i64(java_trim(text)).and_then(|v| i16::try_from(v).ok()), "a SMALLINT")
        }
        ColumnData::Int32(values) => {
            push(values, parse_i64(java_trim(text)).and_then(|v| i32::try_from(v).ok()), "an INT")
        }
        ColumnData::Int64(values) => push(values, parse_i64(java_trim(text)), "a BIGINT"),
        ColumnData::Float32(values) => push(values, parse_java_float(text), "a FLOAT"),
        ColumnData::Float64(values) => push(values, parse_java_float(text), "a DOUBLE"),
        ColumnData::Decimal128 { values, precision, scale } => {
            match parse_decimal(text, *precision, *scale) {
                Ok(Some(value)) => {
                    values.push(value);
                    Outcome::Value
                }
                // Flink's DecimalData.fromBigDecimal: too many digits for the precision.
                Ok(None) => Outcome::Null,
                Err(()) => Outcome::Invalid("a DECIMAL"),
            }
        }
        ColumnData::Date32(values) => push(values, parse_date(text), "a DATE 'yyyy-MM-dd'"),
        ColumnData::Time32Millisecond(values) => push(values, parse_time_millis(text), "a TIME 'HH:mm:ss[.fff]'"),
        ColumnData::Timestamp { values, unit, .. } => push(
            values,
            parse_timestamp(text, timestamp_format, *unit),
            match timestamp_format {
                TimestampFormat::Sql => "a TIMESTAMP 'yyyy-MM-dd HH:mm:ss[.fff]'",
                TimestampFormat::Iso8601 => "a TIMESTAMP 'yyyy-MM-ddTHH:mm:ss[.fff]'",
            },
        ),
        ColumnData::Utf8(column) => {
            column.bytes.extend_from_slice(text);
            match column.end_value() {
                Ok(()) => Outcome::Value,
                Err(_) => Outcome::Full,
            }
        }
        ColumnData::Binary(column) => {
            if decode_base64(text, &mut column.bytes) {
                match column.end_value() {
                    Ok(()) => Outcome::Value,
                    Err(_) => Outcome::Full,
                }
            } else {
                let start = column.value_start();
                column.bytes.truncate(start);
                Outcome::Invalid("base64 BYTES")
            }
        }
        ColumnData::Struct(_) | ColumnData::List { .. } | ColumnData::Map { .. } => Outcome::Invalid("a nested value"),
    };
    match outcome {
        Outcome::Value => {
            column.validity.append_non_null();
            Ok(())
        }
        Outcome::Null => column.append_null(),
        Outcome::Invalid(expected) => Err(DecodeError::invalid_value(text, expected).into()),
        Outcome::Full => Err(DecodeError::BatchFull { field: String::new() }.into()),
    }
}

/// Java's `String.trim()`: strips bytes up to and including space at both ends.
fn java_trim(text: &[u8]) -> &[u8] {
    let start = text.iter().position(|&b| b > b' ').unwrap_or(text.len());
    let end = text.iter().rposition(|&b| b > b' ').map_or(start, |last| last + 1);
    &text[start..end]
}

/// `[+-]?[0-9]+` as an i64 (Java's `Long.parseLong`); `None` on any other text or overflow.
#[inline]
fn parse_i64(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    if digits.is_empty() {
        return None;
    }
    let mut magnitude: u64 = 0;
    // Eighteen decimal digits cannot overflow a u64: skip the checks on the common path.
    if digits.len() <= 18 {
        for &byte in digits {
            let digit = byte.wrapping_sub(b'0');
            if digit > 9 {
                return None;
            }
            magnitude = magnitude * 10 + u64::from(digit);
        }
    } else {
        for &byte in digits {
            let digit = byte.wrapping_sub(b'0');
            if digit > 9 {
                return None;
            }
            magnitude = magnitude.checked_mul(10)?.checked_add(u64::from(digit))?;
        }
    }
    if negative { 0i64.checked_sub_unsigned(magnitude) } else { i64::try_from(magnitude).ok() }
}

/// Java's `Double.parseDouble` / `Float.parseFloat` after `trim()`, including the optional
/// `f`/`d` type suffix.
fn parse_java_float<T: std::str::FromStr>(text: &[u8]) -> Option<T> {
    let mut text = java_trim(text);
    if let [body @ .., last_but_one, suffix] = text
        && matches!(suffix, b'f' | b'F' | b'd' | b'D')
        && (last_but_one.is_ascii_digit() || *last_but_one == b'.')
    {
        text = &text[..body.len() + 1];
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

const POWERS_OF_TEN: [i128; 39] = {
    let mut powers = [1i128; 39];
    let mut i = 1;
    while i < 39 {
        powers[i] = powers[i - 1] * 10;
        i += 1;
    }
    powers
};

/// Reads a decimal exactly from its text (Java's `new BigDecimal(text)` grammar), rescales
/// it with HALF_UP rounding and returns the unscaled value: `Ok(None)` when it has more
/// digits than `precision` (Flink then reads NULL), `Err` when the text is not a number.
fn parse_decimal(text: &[u8], precision: u8, scale: i8) -> Result<Option<i128>, ()> {
    let (negative, body) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    let (mantissa, exponent) = match body.iter().position(|&b| b == b'e' || b == b'E') {
        Some(at) => {
            let exponent_text = &body[at + 1..];
            let (exponent_negative, exponent_digits) = match exponent_text.split_first() {
                Some((b'-', rest)) => (true, rest),
                Some((b'+', rest)) => (false, rest),
                _ => (false, exponent_text),
            };
            if exponent_digits.is_empty() || !exponent_digits.iter().all(u8::is_ascii_digit) {
                return Err(());
            }
            // Saturate: an exponent beyond a few hundred already decides the result.
            let magnitude =
                exponent_digits.iter().fold(0i64, |acc, &d| (acc * 10 + i64::from(d - b'0')).min(1_000_000));
            (&body[..at], if exponent_negative { -magnitude } else { magnitude })
        }
        None => (body, 0),
    };
    let mut digit_count: i64 = 0;
    let mut fraction_digits: i64 = 0;
    let mut seen_point = false;
    for &byte in mantissa {
        match byte {
            b'0'..=b'9' => {
                digit_count += 1;
                fraction_digits += i64::from(seen_point);
            }
            b'.' if !seen_point => seen_point = true,
            _ => return Err(()),
        }
    }
    if digit_count == 0 {
        return Err(());
    }
    // value = digits * 10^(exponent - fraction_digits); we want it * 10^scale, rounded.
    let shift = exponent - fraction_digits + i64::from(scale);
    let digits = mantissa.iter().filter(|b| b.is_ascii_digit()).map(|&b| i128::from(b - b'0'));
    let mut unscaled: i128 = 0;
    if shift >= 0 {
        for digit in digits {
            let Some(next) = unscaled.checked_mul(10).and_then(|v| v.checked_add(digit)) else {
                return Ok(None);
            };
            unscaled = next;
        }
        if unscaled != 0 {
            let Some(&factor) = POWERS_OF_TEN.get(shift as usize) else {
                return Ok(None);
            };
            let Some(scaled) = unscaled.checked_mul(factor) else {
                return Ok(None);
            };
            unscaled = scaled;
        }
    } else {
        // Keep the leading digits; the first dropped digit decides HALF_UP rounding.
        let kept = digit_count + shift;
        let mut round_up = false;
        for (index, digit) in digits.enumerate() {
            let index = index as i64;
            if index < kept {
                let Some(next) = unscaled.checked_mul(10).and_then(|v| v.checked_add(digit)) else {
                    return Ok(None);
                };
                unscaled = next;
            } else {
                round_up = index == kept && digit >= 5;
                break;
            }
        }
        unscaled += i128::from(round_up);
    }
    if unscaled >= POWERS_OF_TEN[usize::from(precision.min(38))] {
        return Ok(None);
    }
    Ok(Some(if negative { -unscaled } else { unscaled }))
}

#[inline]
fn two_digits(text: &[u8], at: usize) -> Option<u32> {
    let tens = text.get(at)?.wrapping_sub(b'0');
    let ones = text.get(at + 1)?.wrapping_sub(b'0');
    (tens <= 9 && ones <= 9).then(|| u32::from(tens) * 10 + u32::from(ones))
}

fn is_leap_year(year: i32) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`), branch-light so that timestamps need no calendar library.
#[inline]
fn days_from_civil(year: i32, month: u32, day: u32) -> i32 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400) as u32;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era as i32 - 719_468
}

/// `yyyy-MM-dd` at the start of `text`, as days since the epoch. Java's SMART resolver
/// (Flink's SQL timestamp format) moves a day past the month's end back to its last day;
/// the STRICT one (ISO formats, DATE) rejects it.
#[inline]
fn parse_date_prefix(text: &[u8], clamp_day: bool) -> Option<i32> {
    if text.len() < 10 || text[4] != b'-' || text[7] != b'-' {
        return None;
    }
    let year = (two_digits(text, 0)? * 100 + two_digits(text, 2)?) as i32;
    let month = two_digits(text, 5)?;
    let mut day = two_digits(text, 8)?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let last_day = days_in_month(year, month);
    if day > last_day {
        if !clamp_day {
            return None;
        }
        day = last_day;
    }
    Some(days_from_civil(year, month, day))
}

const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// `HH:mm[:ss[.f{1,9}]]` at the start of `text`: nanoseconds of the day and bytes read.
#[inline]
fn parse_time_prefix(text: &[u8], seconds_required: bool) -> Option<(i64, usize)> {
    if text.get(2) != Some(&b':') {
        return None;
    }
    let hour = two_digits(text, 0)?;
    let minute = two_digits(text, 3)?;
    if hour > 23 || minute > 59 {
        return None;
    }
    let mut second = 0;
    let mut nanos: i64 = 0;
    let mut read = 5;
    if text.get(5) == Some(&b':') {
        second = two_digits(text, 6)?;
        if second > 59 {
            return None;
        }
        read = 8;
        if text.get(8) == Some(&b'.') {
            let fraction = &text[9..];
            let digits = fraction.iter().take(9).take_while(|b| b.is_ascii_digit()).count();
            if digits == 0 {
                return None;
            }
            for &digit in &fraction[..digits] {
                nanos = nanos * 10 + i64::from(digit - b'0');
            }
            nanos *= 10i64.pow(9 - digits as u32);
            read = 9 + digits;
        }
    } else if seconds_required {
        return None;
    }
    let seconds_of_day = i64::from(hour * 3600 + minute * 60 + second);
    Some((seconds_of_day * NANOS_PER_SECOND + nanos, read))
}

/// A timestamp in Flink's SQL (`yyyy-MM-dd HH:mm:ss[.fffffffff]`) or ISO-8601
/// (`yyyy-MM-ddTHH:mm[:ss[.fffffffff]]`) layout, optionally ending in `Z`, as a count of
/// `unit` since the epoch; digits beyond the unit are truncated.
#[inline]
fn parse_timestamp(text: &[u8], format: TimestampFormat, unit: TimeUnit) -> Option<i64> {
    let (separator, sql) = match format {
        TimestampFormat::Sql => (b' ', true),
        TimestampFormat::Iso8601 => (b'T', false),
    };
    let days = parse_date_prefix(text, sql)?;
    if text.get(10) != Some(&separator) {
        return None;
    }
    let (nanos_of_day, read) = parse_time_prefix(&text[11..], sql)?;
    match &text[11 + read..] {
        [] | [b'Z'] => {}
        _ => return None,
    }
    let seconds = i64::from(days) * 86_400 + nanos_of_day / NANOS_PER_SECOND;
    let nanos = nanos_of_day % NANOS_PER_SECOND;
    match unit {
        TimeUnit::Second => Some(seconds),
        TimeUnit::Millisecond => Some(seconds * 1_000 + nanos / 1_000_000),
        TimeUnit::Microsecond => Some(seconds * 1_000_000 + nanos / 1_000),
        TimeUnit::Nanosecond => seconds.checked_mul(NANOS_PER_SECOND)?.checked_add(nanos),
    }
}

/// `yyyy-MM-dd` (Java's ISO_LOCAL_DATE, strict) as days since the epoch.
fn parse_date(text: &[u8]) -> Option<i32> {
    if text.len() != 10 {
        return None;
    }
    parse_date_prefix(text, false)
}

/// `HH:mm:ss[.f{1,9}]` as milliseconds of the day, extra digits truncated.
fn parse_time_millis(text: &[u8]) -> Option<i32> {
    let (nanos, read) = parse_time_prefix(text, true)?;
    (read == text.len()).then_some((nanos / 1_000_000) as i32)
}

const BASE64_INVALID: u8 = 0xff;
const BASE64_DECODE: [u8; 256] = {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut table = [BASE64_INVALID; 256];
    let mut i = 0;
    while i < alphabet.len() {
        table[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// Standard base64 (Jackson's default variant), padding optional; appends the bytes to
/// `out` and returns false on malformed input, leaving `out` to be cut back by the caller.
fn decode_base64(text: &[u8], out: &mut Vec<u8>) -> bool {
    let body = match text {
        [body @ .., b'=', b'='] | [body @ .., b'='] if text.len().is_multiple_of(4) => body,
        _ => text,
    };
    if body.len() % 4 == 1 {
        return false;
    }
    out.reserve(body.len() / 4 * 3 + 2);
    let mut accumulator: u32 = 0;
    let mut bits = 0;
    for &byte in body {
        let value = BASE64_DECODE[usize::from(byte)];
        if value == BASE64_INVALID {
            return false;
        }
        accumulator = (accumulator << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((accumulator >> bits) as u8);
            accumulator &= (1 << bits) - 1;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::Schema;

    use super::*;

    #[test]
    fn days_from_civil_matches_counting_days() {
        let mut days = days_from_civil(1600, 1, 1);
        for year in 1600..2500 {
            for month in 1..=12 {
                for day in 1..=days_in_month(year, month) {
                    assert_eq!(days_from_civil(year, month, day), days, "{year}-{month}-{day}");
                    days += 1;
                }
            }
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn timestamps_truncate_to_the_unit_and_reject_bad_layouts() {
        let sql = |text: &str, unit| parse_timestamp(text.as_bytes(), TimestampFormat::Sql, unit);
        assert_eq!(sql("1970-01-01 00:00:00.123456789", TimeUnit::Millisecond), Some(123));
        assert_eq!(sql("1970-01-01 00:00:00.123456789", TimeUnit::Microsecond), Some(123_456));
        assert_eq!(sql("1970-01-01 00:00:00.123456789", TimeUnit::Nanosecond), Some(123_456_789));
        assert_eq!(sql("1970-01-01 00:00:01.5", TimeUnit::Second), Some(1));
        assert_eq!(sql("1969-12-31 23:59:59.5", TimeUnit::Millisecond), Some(-500));
        assert_eq!(sql("9999-12-31 23:59:59", TimeUnit::Nanosecond), None, "overflows i64 nanoseconds");
        assert_eq!(sql("0001-01-01 00:00:00", TimeUnit::Millisecond), Some(-62_135_596_800_000));
        for bad in [
            "",
            "2024-01-01",
            "2024-01-01 1:00:00",
            "2024-1-01 00:00:00",
            "2024-01-01 00:00:00.",
            "2024-01-01 00:00:60",
            "+024-01-01 00:00:00",
            "2024-01-01 00:00:00 ",
        ] {
            assert_eq!(sql(bad, TimeUnit::Millisecond), None, "{bad:?}");
        }
        assert_eq!(parse_date(b"2024-02-30"), None);
        assert_eq!(parse_time_millis(b"12:34:56.7"), Some(45_296_700));
    }

    #[test]
    fn decimals_parse_like_big_decimal() {
        assert_eq!(parse_decimal(b"1576.00", 10, 2), Ok(Some(157_600)));
        assert_eq!(parse_decimal(b"-0.005", 10, 2), Ok(Some(-1)));
        assert_eq!(parse_decimal(b".5", 10, 0), Ok(Some(1)));
        assert_eq!(parse_decimal(b"5.", 10, 0), Ok(Some(5)));
        assert_eq!(parse_decimal(b"1E+2", 3, 0), Ok(Some(100)));
        assert_eq!(parse_decimal(b"1E+3", 3, 0), Ok(None));
        assert_eq!(parse_decimal(b"99999999999999999999999999999999999999", 38, 0), Ok(Some(POWERS_OF_TEN[38] - 1)));
        assert_eq!(parse_decimal(b"999999999999999999999999999999999999999", 38, 0), Ok(None));
        assert_eq!(parse_decimal(b"0.00000000000000000000000000000000000000000000001", 38, 10), Ok(Some(0)));
        assert_eq!(parse_decimal(b"1e99999999999999999999", 10, 2), Ok(None));
        assert_eq!(parse_decimal(b"0e99999999999999999999", 10, 2), Ok(Some(0)));
        for bad in [&b""[..], b"-", b".", b"1e", b"1.2.3", b"abc", b" 1", b"1_000", b"--1"] {
            assert_eq!(parse_decimal(bad, 10, 2), Err(()), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn integers_and_floats_parse_like_java() {
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_i64(b"+007"), Some(7));
        assert_eq!(parse_i64(b"1.0"), None);
        assert_eq!(parse_java_float::<f64>(b" 1.5f "), Some(1.5));
        assert_eq!(parse_java_float::<f64>(b"-Infinity"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_java_float::<f32>(b"0.1"), Some(0.1f32));
        assert_eq!(parse_java_float::<f64>(b"1,5"), None);
        assert_eq!(java_trim(b" \t x y \n"), b"x y");
    }

    #[test]
    fn base64_decodes_padded_and_unpadded() {
        let decode = |text: &[u8]| {
            let mut out = Vec::new();
            decode_base64(text, &mut out).then_some(out)
        };
        assert_eq!(decode(b"aGVsbG8gd29ybGQ="), Some(b"hello world".to_vec()));
        assert_eq!(decode(b"aGVsbG8gd29ybGQ"), Some(b"hello world".to_vec()));
        assert_eq!(decode(b""), Some(Vec::new()));
        assert_eq!(decode(b"+/+/"), Some(vec![0xfb, 0xff, 0xbf]));
        assert_eq!(decode(b"a"), None);
        assert_eq!(decode(b"a=bc"), None);
        assert_eq!(decode(b"aGk*"), None);
    }

    #[test]
    fn decoder_for_names_what_it_cannot_do() {
        let schema = Arc::new(Schema::new(vec![Field::new("f", DataType::Float16, true)]));
        let error = decoder_for("json", schema, &FormatOptions::default()).err().expect("unsupported");
        assert_eq!(error.to_string(), "the json format cannot read field 'f' of type Float16");
        let error =
            decoder_for("avro", Arc::new(Schema::empty()), &FormatOptions::default()).err().expect("unknown format");
        assert_eq!(error.to_string(), "unsupported format 'avro': expected 'json', 'csv' or 'raw'");
        let nested = Arc::new(Schema::new(vec![Field::new(
            "r",
            DataType::Struct(vec![Field::new("d", DataType::Decimal256(40, 2), true)].into()),
            true,
        )]));
        let error = decoder_for("json", nested, &FormatOptions::default()).err().expect("nested");
        assert_eq!(error.to_string(), "the json format cannot read field 'r.d' of type Decimal256(40, 2)");
        for format in ["json", "csv", "raw"] {
            let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, true)]));
            let mut decoder = decoder_for(format, schema.clone(), &FormatOptions::default()).expect("supported");
            assert_eq!(decoder.schema(), schema);
            assert!(decoder.is_empty());
            assert_eq!(decoder.flush().num_rows(), 0);
        }
    }
}
