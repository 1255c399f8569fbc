//! Record formats: turning records of Flink's `json`, `csv` and `raw` formats into Arrow
//! record batches with Flink's semantics. This module owns the entry point
//! ([`decoder_for`]), the options and errors every format shares and the [`LineDecoder`]
//! contract; its rooms hold the rest, by concern:
//!
//! - `columns`: the Arrow column builders records are decoded into (plain vectors that can
//!   be truncated, so a record that fails half-way leaves nothing behind);
//! - `text`: text-to-value conversions (integers, exact decimals, floats, base64) that the
//!   JSON and CSV decoders both use;
//! - `temporal`: dates, times and timestamps in Flink's text layouts;
//! - `json`, `csv`, `raw`: one decoder per format;
//! - `framing`: where a record ends in a file's bytes (a line, or for CSV a line with the
//!   line breaks inside quoted fields).
//!
//! Reading files into records, counting skipped records and choosing batch sizes belong to
//! the caller.

mod columns;
mod csv;
mod framing;
mod json;
mod raw;
mod temporal;
mod text;

use std::fmt;

use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

pub use self::csv::CsvDecoder;
pub use self::framing::{RecordEnd, RecordFraming};
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
    /// A CSV record with a different number of fields than the table.
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
                write!(f, "expected {expected} fields but the record has {found}")
            }
            Self::BatchFull { field } => {
                write!(f, "field '{field}': more than 2 GiB of text in one batch, flush batches sooner")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes records into Arrow columns, one row per record.
pub trait LineDecoder: Send {
    /// Decodes one record and appends at most one row. A record is one line without its
    /// `\n` (a trailing `\r` is tolerated), except that a CSV record runs on over the line
    /// breaks inside quoted fields (see [`RecordFraming`]). On error nothing of the record
    /// stays in the batch. A CSV comment line appends nothing and returns `Ok`.
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

/// Builds the decoder for a Flink format name (`json`, `csv` or `raw`). `physical` is every
/// field a record holds (the table's physical columns, in order); `projection` the positions
/// in it of the fields to produce, in the order of `schema`, the output schema (for JSON
/// nested structs possibly pruned too). An empty projection produces rows without columns,
/// as `COUNT(*)` reads them.
pub fn decoder_for(
    format: &str,
    physical: &Schema,
    projection: &[usize],
    schema: SchemaRef,
    options: &FormatOptions,
) -> Result<Box<dyn LineDecoder>, FormatError> {
    match format {
        // JSON matches fields by name, so the projected schema is all it needs.
        "json" => Ok(Box::new(JsonDecoder::try_new(schema, options)?)),
        "csv" => Ok(Box::new(CsvDecoder::try_projected(physical, projection, schema, options)?)),
        "raw" => Ok(Box::new(RawDecoder::try_projected(physical, schema)?)),
        other => Err(FormatError::UnsupportedFormat { format: other.to_owned() }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{AsArray, RecordBatch};
    use arrow::datatypes::{DataType, Decimal128Type, Field, Int64Type, Schema, TimeUnit, TimestampMillisecondType};

    use super::*;

    /// The decoder of a table read whole.
    fn read_all(format: &str, schema: SchemaRef) -> Result<Box<dyn LineDecoder>, FormatError> {
        let every_field: Vec<usize> = (0..schema.fields().len()).collect();
        decoder_for(format, &schema.clone(), &every_field, schema, &FormatOptions::default())
    }

    /// The decoder of `projection` of `physical`, and its batch of `records`.
    fn read_projected(
        format: &str,
        physical: &Schema,
        projection: &[usize],
        options: &FormatOptions,
        records: &[&str],
    ) -> Result<RecordBatch, DecodeError> {
        let schema = Arc::new(physical.project(projection).expect("projection within the schema"));
        let mut decoder = decoder_for(format, physical, projection, schema.clone(), options).expect("supported");
        for record in records {
            decoder.push_line(record.as_bytes())?;
        }
        let batch = decoder.flush();
        assert_eq!(batch.schema(), schema);
        Ok(batch)
    }

    fn payments() -> Schema {
        Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("m", DataType::Utf8, true),
            Field::new("amount", DataType::Decimal128(10, 2), true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ])
    }

    #[test]
    fn decoder_for_names_what_it_cannot_do() {
        let schema = Arc::new(Schema::new(vec![Field::new("f", DataType::Float16, true)]));
        let error = read_all("json", schema).err().expect("unsupported");
        assert_eq!(error.to_string(), "the json format cannot read field 'f' of type Float16");
        let error = read_all("avro", Arc::new(Schema::empty())).err().expect("unknown format");
        assert_eq!(error.to_string(), "unsupported format 'avro': expected 'json', 'csv' or 'raw'");
        let nested = Arc::new(Schema::new(vec![Field::new(
            "r",
            DataType::Struct(vec![Field::new("d", DataType::Decimal256(40, 2), true)].into()),
            true,
        )]));
        let error = read_all("json", nested).err().expect("nested");
        assert_eq!(error.to_string(), "the json format cannot read field 'r.d' of type Decimal256(40, 2)");
        for format in ["json", "csv", "raw"] {
            let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, true)]));
            let mut decoder = read_all(format, schema.clone()).expect("supported");
            assert_eq!(decoder.schema(), schema);
            assert!(decoder.is_empty());
            assert_eq!(decoder.flush().num_rows(), 0);
        }
    }

    #[test]
    fn csv_projections_pick_fields_by_their_position_in_the_record() {
        let records = ["1,card,12.30,2024-01-01 00:00:01.000", "2,cash,0.50,2024-01-01 00:00:02.000"];
        let batch = read_projected("csv", &payments(), &[0, 2, 3], &FormatOptions::default(), &records)
            .expect("the projected fields are valid");
        assert_eq!(batch.column(0).as_primitive::<Int64Type>().values().as_ref(), &[1, 2]);
        assert_eq!(batch.column(1).as_primitive::<Decimal128Type>().values().as_ref(), &[1230, 50]);
        assert_eq!(batch.column(2).as_primitive::<TimestampMillisecondType>().value(1), 1_704_067_202_000);

        let batch = read_projected("csv", &payments(), &[3, 1], &FormatOptions::default(), &records)
            .expect("any order of fields");
        assert_eq!(batch.column(1).as_string::<i32>().value(0), "card");
        assert_eq!(batch.column(0).as_primitive::<TimestampMillisecondType>().value(0), 1_704_067_201_000);

        let lenient = FormatOptions { ignore_parse_errors: true, ..FormatOptions::default() };
        let batch = read_projected("csv", &payments(), &[0, 2], &lenient, &records[..1]).expect("lenient");
        assert_eq!(batch.column(1).as_primitive::<Decimal128Type>().value(0), 1230, "not another field's value");
        let batch = read_projected("csv", &payments(), &[0, 3], &lenient, &["7,card"]).expect("short record");
        assert!(batch.column(1).is_null(0), "a field a short record lacks is NULL");
    }

    #[test]
    fn csv_projections_still_check_the_record_but_convert_only_what_they_read() {
        let error = read_projected("csv", &payments(), &[0, 2], &FormatOptions::default(), &["1,card,12.30"])
            .expect_err("a record with fewer fields than the table");
        assert_eq!(error, DecodeError::FieldCount { expected: 4, found: 3 });
        let batch = read_projected("csv", &payments(), &[0], &FormatOptions::default(), &["1,card,oops,later"])
            .expect("fields not read are not converted");
        assert_eq!(batch.column(0).as_primitive::<Int64Type>().value(0), 1);
        let error = read_projected("csv", &payments(), &[2], &FormatOptions::default(), &["1,card,oops,later"])
            .expect_err("a field read is converted");
        assert_eq!(error.to_string(), "field 'amount': cannot read 'oops' as a DECIMAL");
    }

    #[test]
    fn every_format_counts_records_for_an_empty_projection() {
        let raw = Schema::new(vec![Field::new("line", DataType::Utf8, true)]);
        let cases: [(&str, Schema, &[&str]); 3] = [
            ("csv", payments(), &["1,card,12.30,2024-01-01 00:00:01", "2,\"a,b\",1,2024-01-01 00:00:02"]),
            ("json", payments(), &["{\"id\":1}", "{\"m\":\"x\"}"]),
            ("raw", raw, &["first", "second"]),
        ];
        for (format, physical, records) in cases {
            let batch = read_projected(format, &physical, &[], &FormatOptions::default(), records)
                .unwrap_or_else(|error| panic!("{format}: {error}"));
            assert_eq!((batch.num_rows(), batch.num_columns()), (2, 0), "{format}");
        }
        let error = read_projected("csv", &payments(), &[], &FormatOptions::default(), &["1,card"])
            .expect_err("a COUNT(*) still reads whole records");
        assert_eq!(error, DecodeError::FieldCount { expected: 4, found: 2 });
    }

    #[test]
    fn json_and_raw_projections_read_the_fields_named() {
        let batch = read_projected(
            "json",
            &payments(),
            &[2, 0],
            &FormatOptions::default(),
            &["{\"id\":1,\"m\":\"card\",\"amount\":12.30,\"ts\":\"2024-01-01 00:00:01\"}"],
        )
        .expect("valid json");
        assert_eq!(batch.column(0).as_primitive::<Decimal128Type>().value(0), 1230);
        assert_eq!(batch.column(1).as_primitive::<Int64Type>().value(0), 1);
        let raw = Schema::new(vec![Field::new("line", DataType::Utf8, true)]);
        let batch = read_projected("raw", &raw, &[0], &FormatOptions::default(), &["a,b"]).expect("raw");
        assert_eq!(batch.column(0).as_string::<i32>().value(0), "a,b");
    }

    #[test]
    fn projections_outside_the_record_are_refused() {
        let schema = Arc::new(payments().project(&[0]).expect("in range"));
        for projection in [&[7][..], &[0, 0], &[1]] {
            let error = decoder_for("csv", &payments(), projection, schema.clone(), &FormatOptions::default())
                .err()
                .expect("not a projection of the record");
            assert!(matches!(error, FormatError::InvalidSchema { format: "csv", .. }), "{projection:?}: {error}");
        }
    }
}
