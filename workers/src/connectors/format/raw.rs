//! Flink's `raw` format: each line is one value of the table's single STRING or BYTES
//! column (or, read with an empty projection, one row without columns). This module owns
//! that decoder. Like Flink, which decodes with Java's UTF-8
//! charset, invalid UTF-8 in a STRING line becomes U+FFFD rather than an error.

use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

use super::columns::{ColumnData, RecordColumns};
use super::{DecodeError, FormatError, LineDecoder};

/// Decodes lines of Flink's `raw` format.
pub struct RawDecoder {
    columns: RecordColumns,
}

impl RawDecoder {
    /// A decoder producing the one column of `schema`.
    pub fn try_new(schema: SchemaRef) -> Result<Self, FormatError> {
        Self::try_projected(&schema.clone(), schema)
    }

    /// A decoder for a table whose one column is `physical`'s, producing it as `schema`'s
    /// column, or no column at all when the projection is empty (a `COUNT(*)`).
    pub fn try_projected(physical: &Schema, schema: SchemaRef) -> Result<Self, FormatError> {
        let [field] = physical.fields().as_ref() else {
            return Err(FormatError::InvalidSchema {
                format: "raw",
                reason: format!("needs exactly one column, the table has {}", physical.fields().len()),
            });
        };
        if !matches!(field.data_type(), DataType::Utf8 | DataType::Binary) {
            return Err(FormatError::UnsupportedType {
                format: "raw",
                field: field.name().clone(),
                data_type: field.data_type().to_string(),
            });
        }
        match schema.fields().as_ref() {
            [] => {}
            [column] if column.data_type() == field.data_type() => {}
            _ => {
                return Err(FormatError::InvalidSchema {
                    format: "raw",
                    reason: format!("produces its one column '{}' as it is declared, or no column", field.name()),
                });
            }
        }
        Ok(Self { columns: RecordColumns::try_new(schema, "raw")? })
    }
}

impl LineDecoder for RawDecoder {
    fn push_line(&mut self, line: &[u8]) -> Result<(), DecodeError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        self.columns.push_row(|root, _row| {
            let (Some(column), Some(field)) = (root.children.first_mut(), root.fields.first()) else {
                // An empty projection: the row is all there is to count.
                return Ok(());
            };
            let values = match &mut column.data {
                ColumnData::Utf8(values) => {
                    match std::str::from_utf8(line) {
                        Ok(_) => values.bytes.extend_from_slice(line),
                        Err(_) => values.bytes.extend_from_slice(String::from_utf8_lossy(line).as_bytes()),
                    }
                    values
                }
                ColumnData::Binary(values) => {
                    values.bytes.extend_from_slice(line);
                    values
                }
                _ => unreachable!("the raw column was checked to be STRING or BYTES"),
            };
            values.end_value().map_err(|error| error.within(field.name()))?;
            column.validity.append_non_null();
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::AsArray;
    use arrow::datatypes::{Field, Schema};

    use super::*;

    fn single(data_type: DataType) -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("line", data_type, true)]))
    }

    #[test]
    fn each_line_is_one_value_without_its_carriage_return() {
        let mut decoder = RawDecoder::try_new(single(DataType::Utf8)).expect("supported");
        for line in [&b"first line\r"[..], b"", b"{\"not\": \"parsed\"}", b"bad \xff byte"] {
            decoder.push_line(line).expect("raw lines always decode");
        }
        let batch = decoder.flush();
        let lines = batch.column(0).as_string::<i32>();
        assert_eq!(
            (0..4).map(|i| lines.value(i)).collect::<Vec<_>>(),
            ["first line", "", "{\"not\": \"parsed\"}", "bad \u{FFFD} byte"]
        );
    }

    #[test]
    fn bytes_keep_the_line_as_is() {
        let mut decoder = RawDecoder::try_new(single(DataType::Binary)).expect("supported");
        decoder.push_line(b"\x00\xff\r").expect("any bytes");
        let batch = decoder.flush();
        assert_eq!(batch.column(0).as_binary::<i32>().value(0), b"\x00\xff");
    }

    #[test]
    fn needs_exactly_one_string_or_bytes_column() {
        assert!(RawDecoder::try_new(single(DataType::Int32)).is_err());
        let two =
            Arc::new(Schema::new(vec![Field::new("a", DataType::Utf8, true), Field::new("b", DataType::Utf8, true)]));
        let error = RawDecoder::try_new(two).err().expect("two columns");
        assert_eq!(error.to_string(), "the raw format needs exactly one column, the table has 2");
    }
}
