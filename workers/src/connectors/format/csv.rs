//! Flink's `csv` format: one record per line, no header, fields in the order of the table's
//! physical columns, an optional quote character (a doubled quote inside quotes stands for
//! itself; a quoted field may hold delimiters and line breaks, so that a record may span
//! lines, as RFC 4180 has it). This module owns the field splitter and the per-field rules:
//! an empty field is NULL except for STRING columns (where it is the empty string), a field
//! equal to `csv.null-literal` is NULL, ARRAY fields hold elements separated by `;` (Flink's
//! default `csv.array-element-delimiter`), and values convert with the same text rules as
//! JSON. Only the fields a projection reads are converted. Where a record ends in a file is
//! [`super::RecordFraming`]'s concern.

use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use memchr::memchr;

use super::columns::{Column, ColumnData, RecordColumns, check_utf8, end_nested_value};
use super::text::append_text;
use super::{DecodeError, Decoded, FormatError, FormatOptions, LineDecoder, TimestampFormat};

const ARRAY_ELEMENT_DELIMITER: u8 = b';';

/// Decodes records of Flink's `csv` format.
pub struct CsvDecoder {
    columns: RecordColumns,
    /// For each field of a record, in order, the column it is decoded into; `None` for a
    /// field the projection does not read, which is split off but never converted.
    targets: Box<[Option<usize>]>,
    settings: CsvSettings,
    /// The text of a quoted field that contained doubled quotes.
    scratch: Vec<u8>,
}

struct CsvSettings {
    delimiter: u8,
    quote: Option<u8>,
    null_literal: Option<Box<[u8]>>,
    allow_comments: bool,
    ignore_parse_errors: bool,
    timestamp_format: TimestampFormat,
}

impl CsvDecoder {
    /// A decoder producing every field of records shaped as `schema`.
    pub fn try_new(schema: SchemaRef, options: &FormatOptions) -> Result<Self, FormatError> {
        let every_field: Vec<usize> = (0..schema.fields().len()).collect();
        Self::try_projected(&schema.clone(), &every_field, schema, options)
    }

    /// A decoder of records holding the fields of `physical`, producing those at the
    /// positions `projection` as the columns of `schema`. A record's fields are known only
    /// by their position, so every record is split whole (and must have every field).
    pub fn try_projected(
        physical: &Schema,
        projection: &[usize],
        schema: SchemaRef,
        options: &FormatOptions,
    ) -> Result<Self, FormatError> {
        let delimiter = options.csv_field_delimiter;
        // Splitting at ASCII bytes keeps every field valid UTF-8 when the line is.
        if !delimiter.is_ascii() || delimiter == b'\n' || delimiter == b'\r' {
            return Err(FormatError::InvalidOptions {
                reason: "'csv.field-delimiter' must be one ASCII character other than a line break",
            });
        }
        if let Some(quote) = options.csv_quote_character
            && (!quote.is_ascii() || quote == delimiter || quote == b'\n' || quote == b'\r')
        {
            return Err(FormatError::InvalidOptions {
                reason: "'csv.quote-character' must be one ASCII character other than the delimiter or a line break",
            });
        }
        for field in physical.fields() {
            let supported = match field.data_type() {
                DataType::Struct(_) | DataType::Map(..) => false,
                DataType::List(element) => !element.data_type().is_nested(),
                _ => true,
            };
            if !supported {
                return Err(FormatError::UnsupportedType {
                    format: "csv",
                    field: field.name().clone(),
                    data_type: field.data_type().to_string(),
                });
            }
        }
        let targets = field_targets(physical, projection, &schema)?;
        Ok(Self {
            columns: RecordColumns::try_new(schema, "csv")?,
            targets,
            settings: CsvSettings {
                delimiter,
                quote: options.csv_quote_character,
                null_literal: options.csv_null_literal.as_ref().map(|text| text.as_bytes().into()),
                allow_comments: options.csv_allow_comments,
                ignore_parse_errors: options.ignore_parse_errors,
                timestamp_format: options.timestamp_format,
            },
            scratch: Vec::new(),
        })
    }
}

/// For each field of `physical`, the column of `schema` that `projection` puts it in.
fn field_targets(
    physical: &Schema,
    projection: &[usize],
    schema: &Schema,
) -> Result<Box<[Option<usize>]>, FormatError> {
    let invalid = |reason: String| FormatError::InvalidSchema { format: "csv", reason };
    if projection.len() != schema.fields().len() {
        return Err(invalid(format!(
            "cannot produce {} columns from a projection of {} fields",
            schema.fields().len(),
            projection.len()
        )));
    }
    let mut targets = vec![None; physical.fields().len()];
    for (column, (&position, field)) in projection.iter().zip(schema.fields()).enumerate() {
        let Some(target) = targets.get_mut(position) else {
            return Err(invalid(format!("has no field {position}: records have {}", physical.fields().len())));
        };
        if target.replace(column).is_some() {
            return Err(invalid(format!("cannot read field {position} twice")));
        }
        let declared = physical.field(position).data_type();
        if field.data_type() != declared {
            return Err(invalid(format!(
                "cannot read field {position} ({declared}) as column '{}' of type {}",
                field.name(),
                field.data_type()
            )));
        }
    }
    Ok(targets.into_boxed_slice())
}

impl LineDecoder for CsvDecoder {
    fn push_line(&mut self, line: &[u8]) -> Result<(), DecodeError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return Err(DecodeError::BlankLine);
        }
        if self.settings.allow_comments && line[0] == b'#' {
            return Ok(());
        }
        check_utf8(line)?;
        let Self { columns, targets, settings, scratch } = self;
        columns.push_row(|root, _row| {
            let expected = targets.len();
            let mut splitter =
                FieldSplitter { line, next: Some(0), delimiter: settings.delimiter, quote: settings.quote };
            for (index, target) in targets.iter().enumerate() {
                let Some(text) = splitter.next_field(scratch)? else {
                    if settings.ignore_parse_errors {
                        // Flink fills the fields a short record lacks with NULL.
                        for &column in targets[index..].iter().flatten() {
                            root.children[column]
                                .append_null()
                                .map_err(|error| error.within(root.fields[column].name()))?;
                        }
                        return Ok(());
                    }
                    return Err(DecodeError::FieldCount { expected, found: index }.into());
                };
                let Some(column) = *target else { continue };
                let text = match text {
                    FieldText::Line(start, end) => &line[start..end],
                    FieldText::Scratch => &scratch[..],
                };
                decode_field(&mut root.children[column], text, settings)
                    .map_err(|error| error.within(root.fields[column].name()))?;
            }
            if splitter.next.is_some() && !settings.ignore_parse_errors {
                let mut found = expected;
                while splitter.next_field(scratch)?.is_some() {
                    found += 1;
                }
                return Err(DecodeError::FieldCount { expected, found }.into());
            }
            Ok(())
        })
    }

    fn len(&self) -> usize {
        self.columns.rows
    }

    fn flush(&mut self) -> RecordBatch {
        self.columns.finish()
    }

    fn schema(&self) -> SchemaRef {
        self.columns.schema.clone()
    }
}

/// Where a field's text is: a range of the line, or the scratch buffer when unquoting
/// had to drop doubled quotes.
enum FieldText {
    Line(usize, usize),
    Scratch,
}

struct FieldSplitter<'a> {
    line: &'a [u8],
    /// Start of the next field; `None` once the last field was read.
    next: Option<usize>,
    delimiter: u8,
    quote: Option<u8>,
}

impl FieldSplitter<'_> {
    fn next_field(&mut self, scratch: &mut Vec<u8>) -> Decoded<Option<FieldText>> {
        let Some(start) = self.next else {
            return Ok(None);
        };
        let line = self.line;
        match self.quote {
            Some(quote) if line.get(start) == Some(&quote) => {
                let mut pos = start + 1;
                let mut unquoted_into_scratch = false;
                loop {
                    let Some(length) = memchr(quote, &line[pos..]) else {
                        return Err(DecodeError::Syntax {
                            offset: line.len(),
                            expected: "a closing quote",
                            field: String::new(),
                        }
                        .into());
                    };
                    let at = pos + length;
                    if line.get(at + 1) == Some(&quote) {
                        if !unquoted_into_scratch {
                            scratch.clear();
                            unquoted_into_scratch = true;
                        }
                        scratch.extend_from_slice(&line[pos..=at]);
                        pos = at + 2;
                        continue;
                    }
                    let text = if unquoted_into_scratch {
                        scratch.extend_from_slice(&line[pos..at]);
                        FieldText::Scratch
                    } else {
                        FieldText::Line(start + 1, at)
                    };
                    self.next = match line.get(at + 1) {
                        None => None,
                        Some(&byte) if byte == self.delimiter => Some(at + 2),
                        Some(_) => {
                            return Err(DecodeError::Syntax {
                                offset: at + 1,
                                expected: "a delimiter after the closing quote",
                                field: String::new(),
                            }
                            .into());
                        }
                    };
                    return Ok(Some(text));
                }
            }
            _ => match memchr(self.delimiter, &line[start..]) {
                Some(length) => {
                    self.next = Some(start + length + 1);
                    Ok(Some(FieldText::Line(start, start + length)))
                }
                None => {
                    self.next = None;
                    Ok(Some(FieldText::Line(start, line.len())))
                }
            },
        }
    }
}

/// Appends one field; with `ignore_parse_errors` a value that does not convert is NULL.
fn decode_field(column: &mut Column, text: &[u8], settings: &CsvSettings) -> Decoded {
    match decode_value(column, text, settings) {
        Err(error) if settings.ignore_parse_errors && matches!(*error, DecodeError::InvalidValue { .. }) => {
            column.append_null()
        }
        result => result,
    }
}

fn is_null(column: &Column, text: &[u8], settings: &CsvSettings) -> bool {
    settings.null_literal.as_deref() == Some(text) || (text.is_empty() && !matches!(column.data, ColumnData::Utf8(_)))
}

fn decode_value(column: &mut Column, text: &[u8], settings: &CsvSettings) -> Decoded {
    if is_null(column, text, settings) {
        return column.append_null();
    }
    let ColumnData::List { offsets, element, .. } = &mut column.data else {
        return append_text(column, text, settings.timestamp_format);
    };
    let first_element = element.len();
    for item in text.split(|&byte| byte == ARRAY_ELEMENT_DELIMITER) {
        let appended = if is_null(element, item, settings) {
            element.append_null()
        } else {
            append_text(element, item, settings.timestamp_format)
        };
        if let Err(error) = appended {
            // The list as a whole fails (and may become NULL): drop its earlier elements.
            element.truncate(first_element);
            return Err(error);
        }
    }
    end_nested_value(offsets, element.len())?;
    column.validity.append_non_null();
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{
        DataType, Decimal128Type, Field, Float64Type, Int32Type, Int64Type, Schema, TimeUnit, TimestampMillisecondType,
    };

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("price", DataType::Decimal128(10, 2), true),
            Field::new("at", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]))
    }

    fn decoder(options: FormatOptions) -> CsvDecoder {
        CsvDecoder::try_new(schema(), &options).expect("schema is supported")
    }

    fn flush_valid(decoder: &mut CsvDecoder) -> RecordBatch {
        let batch = decoder.flush();
        for column in batch.columns() {
            column.to_data().validate_full().expect("decoded arrays are valid Arrow");
        }
        batch
    }

    #[test]
    fn splits_quoted_fields_with_doubled_quotes_and_delimiters() {
        let mut decoder = decoder(FormatOptions::default());
        let lines: [&[u8]; 5] = [
            b"1,plain,1576.00,2024-01-01 23:59:00.003",
            b"2,\"with, comma\",\"1.005\",\"2024-01-01 00:00:00\"",
            b"3,\"say \"\"hi\"\"\",2,2024-01-01 00:00:00\r",
            "4,日本 \"not quoted\",-3.5,2024-01-01 00:00:00".as_bytes(),
            b"5,\"\",0,2024-01-01 00:00:00",
        ];
        for line in lines {
            decoder.push_line(line).expect("valid csv");
        }
        let batch = flush_valid(&mut decoder);
        let names = batch.column(1).as_string::<i32>();
        assert_eq!(
            (0..5).map(|i| names.value(i)).collect::<Vec<_>>(),
            ["plain", "with, comma", "say \"hi\"", "日本 \"not quoted\"", ""]
        );
        let prices = batch.column(2).as_primitive::<Decimal128Type>();
        assert_eq!(prices.values().as_ref(), &[157600, 101, 200, -350, 0]);
        let at = batch.column(3).as_primitive::<TimestampMillisecondType>();
        assert_eq!(at.value(0), 1_704_153_540_003);
    }

    #[test]
    fn empty_fields_are_null_except_for_strings_and_null_literal_is_null() {
        let mut decoder = decoder(FormatOptions::default());
        decoder.push_line(b",,,").expect("all empty");
        let batch = flush_valid(&mut decoder);
        assert!(batch.column(0).is_null(0) && batch.column(2).is_null(0) && batch.column(3).is_null(0));
        assert_eq!(batch.column(1).as_string::<i32>().value(0), "");
        assert!(batch.column(1).is_valid(0));

        let options = FormatOptions { csv_null_literal: Some("n/a".into()), ..FormatOptions::default() };
        let mut decoder = self::decoder(options);
        decoder.push_line(b"n/a,n/a,,").expect("null literals");
        decoder.push_line(b"7,\"n/a\",1,").expect("quoted null literal is null too");
        let batch = flush_valid(&mut decoder);
        assert!(batch.column(0).is_null(0) && batch.column(1).is_null(0) && batch.column(1).is_null(1));
        assert_eq!(batch.column(0).as_primitive::<Int64Type>().value(1), 7);
    }

    #[test]
    fn wrong_field_counts_and_bad_values_fail_the_line_only() {
        let mut decoder = decoder(FormatOptions::default());
        assert_eq!(decoder.push_line(b"1,a,2"), Err(DecodeError::FieldCount { expected: 4, found: 3 }));
        assert_eq!(
            decoder.push_line(b"1,a,2,2024-01-01 00:00:00,x,y"),
            Err(DecodeError::FieldCount { expected: 4, found: 6 })
        );
        let error = decoder.push_line(b"x1,a,2,2024-01-01 00:00:00").expect_err("not a BIGINT");
        assert_eq!(error.to_string(), "field 'id': cannot read 'x1' as a BIGINT");
        assert!(decoder.push_line(b"1,\"unterminated,2,2024-01-01 00:00:00").is_err());
        assert!(decoder.push_line(b"1,\"a\"b,2,2024-01-01 00:00:00").is_err());
        assert!(decoder.push_line(b"1,a,2,2024-01-01T00:00:00").is_err());
        assert_eq!(decoder.push_line(b""), Err(DecodeError::BlankLine));
        assert!(decoder.push_line(b"1,\xff,2,2024-01-01 00:00:00").is_err());
        decoder.push_line(b" 8 ,kept,2,2024-01-01 00:00:00").expect("numbers are trimmed, like Java's parse");
        let batch = flush_valid(&mut decoder);
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(batch.column(0).as_primitive::<Int64Type>().value(0), 8);
        assert_eq!(batch.column(1).as_string::<i32>().value(0), "kept");
    }

    #[test]
    fn ignore_parse_errors_nulls_bad_values_and_missing_fields() {
        let options = FormatOptions { ignore_parse_errors: true, ..FormatOptions::default() };
        let mut decoder = decoder(options);
        decoder.push_line(b"x,a,oops,2024").expect("bad values become null");
        decoder.push_line(b"1,b").expect("missing fields become null");
        assert!(decoder.push_line(b"1,\"open").is_err(), "malformed csv still fails");
        let batch = flush_valid(&mut decoder);
        assert_eq!(batch.num_rows(), 2);
        assert!(batch.column(0).is_null(0) && batch.column(2).is_null(0) && batch.column(3).is_null(0));
        assert_eq!(batch.column(1).as_string::<i32>().value(1), "b");
        assert!(batch.column(2).is_null(1));
    }

    #[test]
    fn custom_delimiter_no_quotes_comments_and_arrays() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int32, true),
            Field::new("b", DataType::Utf8, true),
            Field::new("c", DataType::List(Arc::new(Field::new("item", DataType::Float64, true))), true),
        ]));
        let options = FormatOptions {
            csv_field_delimiter: b'|',
            csv_quote_character: None,
            csv_allow_comments: true,
            ..FormatOptions::default()
        };
        let mut decoder = CsvDecoder::try_new(schema, &options).expect("supported");
        decoder.push_line(b"# a comment").expect("comments are skipped");
        decoder.push_line(b"1|\"quoted\"|1.5;;2").expect("valid");
        decoder.push_line(b"2|x|").expect("valid");
        assert!(decoder.push_line(b"3|x|1;z").is_err());
        assert_eq!(decoder.len(), 2);
        let batch = decoder.flush();
        assert_eq!(batch.column(0).as_primitive::<Int32Type>().values().as_ref(), &[1, 2]);
        assert_eq!(batch.column(1).as_string::<i32>().value(0), "\"quoted\"");
        let c = batch.column(2).as_list::<i32>();
        assert!(c.is_null(1));
        let values = c.value(0);
        let values = values.as_primitive::<Float64Type>();
        assert_eq!((values.value(0), values.is_null(1), values.value(2)), (1.5, true, 2.0));
    }

    #[test]
    fn rejects_nested_rows_and_bad_options() {
        let nested = Arc::new(Schema::new(vec![Field::new(
            "r",
            DataType::Struct(vec![Field::new("x", DataType::Int32, true)].into()),
            true,
        )]));
        assert!(matches!(
            CsvDecoder::try_new(nested, &FormatOptions::default()),
            Err(FormatError::UnsupportedType { .. })
        ));
        let options = FormatOptions { csv_field_delimiter: b'"', ..FormatOptions::default() };
        assert!(CsvDecoder::try_new(schema(), &options).is_err());
    }
}
