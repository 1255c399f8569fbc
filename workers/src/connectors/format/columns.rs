//! Column builders: the Arrow columns a decoder appends to, one row at a time. Values go
//! into plain vectors that can be cut back to a row count, so a record that fails half-way
//! leaves nothing behind; a batch is taken as Arrow arrays without copying. Also the
//! by-name field lookup the JSON decoder uses and the UTF-8 check every text format shares.

use std::collections::HashMap;
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

use super::{DecodeError, Decoded, FormatError};

/// One column under construction. Every kind keeps its values in vectors that can be cut
/// back to a row count, which is how a failed line is rolled back.
pub(super) struct Column {
    pub(super) nullable: bool,
    pub(super) validity: Validity,
    pub(super) data: ColumnData,
}

pub(super) enum ColumnData {
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
pub(super) struct ByteColumn {
    pub(super) offsets: Vec<i32>,
    pub(super) bytes: Vec<u8>,
}

impl ByteColumn {
    pub(super) fn new() -> Self {
        Self { offsets: vec![0], bytes: Vec::new() }
    }

    /// Ends the value written into `bytes` since the last call.
    #[inline]
    pub(super) fn end_value(&mut self) -> Decoded {
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
    pub(super) fn value_start(&self) -> usize {
        self.offsets.last().map_or(0, |&offset| offset as usize)
    }

    pub(super) fn truncate(&mut self, len: usize) {
        self.offsets.truncate(len + 1);
        let end = self.value_start();
        self.bytes.truncate(end);
    }

    pub(super) fn take(&mut self) -> (OffsetBuffer<i32>, Buffer) {
        let mut offsets = Vec::with_capacity(self.offsets.len());
        offsets.push(0);
        let offsets = std::mem::replace(&mut self.offsets, offsets);
        let bytes = take_vec(&mut self.bytes);
        (OffsetBuffer::new(ScalarBuffer::from(offsets)), Buffer::from_vec(bytes))
    }
}

/// The fields of a struct (or of the whole record) with a by-name lookup for JSON.
pub(super) struct StructColumn {
    pub(super) fields: Fields,
    pub(super) children: Vec<Column>,
    pub(super) lookup: FieldLookup,
    /// NULL rows of this struct not yet written to its children. Most nested records in a
    /// stream are absent on most lines (a Nexmark line holds one of person, auction and
    /// bid): padding their children once per run of NULLs instead of once per row keeps
    /// wide absent structs nearly free.
    pub(super) pending_nulls: usize,
}

impl StructColumn {
    pub(super) fn try_new(fields: &Fields, format: &'static str, path: &str) -> Result<Self, FormatError> {
        let children = fields
            .iter()
            .map(|field| Column::try_new(field, format, &join_path(path, field.name())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { fields: fields.clone(), children, lookup: FieldLookup::new(fields), pending_nulls: 0 })
    }

    /// Writes the pending NULL rows into the children, which then hold every row.
    #[inline]
    pub(super) fn fill_pending_nulls(&mut self) {
        if self.pending_nulls > 0 {
            for child in &mut self.children {
                child.push_nulls(self.pending_nulls);
            }
            self.pending_nulls = 0;
        }
    }

    /// Cuts the struct back to `len` rows, given that it holds `old_len` (pending included).
    pub(super) fn truncate(&mut self, old_len: usize, len: usize) {
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

    pub(super) fn finish_children(&mut self) -> Vec<ArrayRef> {
        self.fill_pending_nulls();
        self.children.iter_mut().map(Column::finish).collect()
    }
}

/// Finds a schema field by its name as raw bytes, without allocating. Records usually
/// list their fields in the same order every line, so the caller passes the index after
/// the previous match as a hint that is tried first. Names are compared by their first
/// eight bytes as one word (and their length) before the rest.
pub(super) struct FieldLookup {
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
pub(super) fn name_prefix(text: &[u8], start: usize, len: usize) -> u64 {
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

    pub(super) fn new(fields: &Fields) -> Self {
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
    pub(super) fn find(&self, key: &[u8], prefix: u64, hint: usize) -> Option<usize> {
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
    pub(super) fn try_new(field: &Field, format: &'static str, path: &str) -> Result<Self, FormatError> {
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
    pub(super) fn len(&self) -> usize {
        self.validity.len()
    }

    /// How the column's type is named in error messages.
    pub(super) fn expected(&self) -> &'static str {
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

    pub(super) fn is_scalar(&self) -> bool {
        !matches!(self.data, ColumnData::Struct(_) | ColumnData::List { .. } | ColumnData::Map { .. })
    }

    /// Appends an explicit NULL, refused for a NOT NULL column.
    #[inline]
    pub(super) fn append_null(&mut self) -> Decoded {
        if !self.nullable {
            return Err(DecodeError::NullForNotNull { field: String::new() }.into());
        }
        self.push_null();
        Ok(())
    }

    #[inline]
    pub(super) fn push_null(&mut self) {
        self.push_nulls(1);
    }

    /// Appends NULL slots without the NOT NULL check: also used under a NULL struct,
    /// where Arrow accepts nulls in NOT NULL children because the parent masks them.
    pub(super) fn push_nulls(&mut self, count: usize) {
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
    pub(super) fn truncate(&mut self, len: usize) {
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
    pub(super) fn finish(&mut self) -> ArrayRef {
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
pub(super) struct Validity {
    pub(super) len: usize,
    pub(super) bitmap: Option<BooleanBufferBuilder>,
}

impl Validity {
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub(super) fn append_non_null(&mut self) {
        if let Some(bitmap) = &mut self.bitmap {
            bitmap.append(true);
        }
        self.len += 1;
    }

    pub(super) fn append_nulls(&mut self, count: usize) {
        let len = self.len;
        let bitmap = self.bitmap.get_or_insert_with(|| {
            let mut bitmap = BooleanBufferBuilder::new(len.max(1024));
            bitmap.append_n(len, true);
            bitmap
        });
        bitmap.append_n(count, false);
        self.len += count;
    }

    pub(super) fn truncate(&mut self, len: usize) {
        if len < self.len {
            if let Some(bitmap) = &mut self.bitmap {
                bitmap.truncate(len);
            }
            self.len = len;
        }
    }

    pub(super) fn finish(&mut self) -> Option<NullBuffer> {
        self.len = 0;
        self.bitmap.take().map(|mut bitmap| NullBuffer::new(bitmap.finish()))
    }
}

/// Rejects invalid UTF-8, with a fast path for the common all-ASCII line: 32 bytes per
/// step, OR-ed as words, which compilers turn into vector instructions.
pub(super) fn check_utf8(line: &[u8]) -> Result<(), DecodeError> {
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
pub(super) fn end_nested_value(offsets: &mut Vec<i32>, element_count: usize) -> Decoded {
    let end = i32::try_from(element_count).map_err(|_| Box::new(DecodeError::BatchFull { field: String::new() }))?;
    offsets.push(end);
    Ok(())
}

/// The top-level columns of a decoder and the rows they hold.
pub(super) struct RecordColumns {
    pub(super) schema: SchemaRef,
    pub(super) root: StructColumn,
    pub(super) rows: usize,
}

impl RecordColumns {
    pub(super) fn try_new(schema: SchemaRef, format: &'static str) -> Result<Self, FormatError> {
        let root = StructColumn::try_new(schema.fields(), format, "")?;
        Ok(Self { schema, root, rows: 0 })
    }

    /// Keeps the row appended by `decode` if it succeeds and removes every trace of it if
    /// it fails.
    #[inline]
    pub(super) fn push_row(
        &mut self,
        decode: impl FnOnce(&mut StructColumn, usize) -> Decoded,
    ) -> Result<(), DecodeError> {
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

    pub(super) fn finish(&mut self) -> RecordBatch {
        let arrays = self.root.finish_children();
        let options = RecordBatchOptions::new().with_row_count(Some(self.rows));
        self.rows = 0;
        RecordBatch::try_new_with_options(self.schema.clone(), arrays, &options)
            .expect("decoded columns match the schema they were built from")
    }
}
