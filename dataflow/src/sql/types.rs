//! Flink SQL data types in DDL (`BIGINT`, `DECIMAL(10, 2)`, `ROW<a INT, b STRING>`, …) and the
//! Arrow types Weir represents them with.
//!
//! | Flink | Arrow |
//! | --- | --- |
//! | `BOOLEAN` | Boolean |
//! | `TINYINT` `SMALLINT` `INT` `BIGINT` | Int8 Int16 Int32 Int64 |
//! | `FLOAT` `DOUBLE` | Float32 Float64 |
//! | `DECIMAL(p, s)` | Decimal128(p, s) |
//! | `CHAR` `VARCHAR` `STRING` | Utf8 |
//! | `BINARY` `VARBINARY` `BYTES` | Binary |
//! | `DATE` `TIME` | Date32, Time32(ms) |
//! | `TIMESTAMP(p)` | Timestamp(ms) |
//! | `TIMESTAMP_LTZ(p)` | Timestamp(ms, "UTC") |
//! | `ROW<…>` `ARRAY<T>` `MAP<K, V>` | Struct, List, Map |

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, TimeUnit};
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::Token;

/// The Arrow type of Flink's `TIMESTAMP(3)`: event time and window bounds.
pub const TIMESTAMP_TYPE: DataType = DataType::Timestamp(TimeUnit::Millisecond, None);

/// Parses a Flink type from the parser's tokens, `NOT NULL` included.
pub fn parse_type(parser: &mut Parser) -> Result<(DataType, bool), ParserError> {
    let mut angles = AngleState::default();
    let ty = parse_type_inner(parser, &mut angles)?;
    if angles.pending_close > 0 {
        return parser.expected_ref("end of type", parser.peek_token_ref());
    }
    let nullable = !parse_not_null(parser);
    Ok((ty, nullable))
}

fn parse_not_null(parser: &mut Parser) -> bool {
    if parser.parse_keywords(&[Keyword::NOT, Keyword::NULL]) {
        return true;
    }
    let _ = parser.parse_keyword(Keyword::NULL);
    false
}

/// sqlparser tokenises `>>` as one shift operator; nested `ROW<a ROW<b INT>>` needs it as two
/// closing angles. This counts closes consumed ahead of time.
#[derive(Default)]
struct AngleState {
    pending_close: u32,
}

impl AngleState {
    fn expect_close(&mut self, parser: &mut Parser) -> Result<(), ParserError> {
        if self.pending_close > 0 {
            self.pending_close -= 1;
            return Ok(());
        }
        match parser.next_token().token {
            Token::Gt => Ok(()),
            Token::ShiftRight => {
                self.pending_close += 1;
                Ok(())
            }
            _ => {
                parser.prev_token();
                parser.expected_ref("'>'", parser.peek_token_ref())
            }
        }
    }

    fn at_close(&self, parser: &Parser) -> bool {
        self.pending_close > 0 || matches!(parser.peek_token_ref().token, Token::Gt | Token::ShiftRight)
    }
}

fn parse_type_inner(parser: &mut Parser, angles: &mut AngleState) -> Result<DataType, ParserError> {
    let token = parser.next_token();
    let word = match &token.token {
        Token::Word(w) => w.value.to_ascii_uppercase(),
        _ => return parser.expected_ref("a data type", &token),
    };
    let ty = match word.as_str() {
        "BOOLEAN" | "BOOL" => DataType::Boolean,
        "TINYINT" => DataType::Int8,
        "SMALLINT" => DataType::Int16,
        "INT" | "INTEGER" => DataType::Int32,
        "BIGINT" => DataType::Int64,
        "FLOAT" | "REAL" => DataType::Float32,
        "DOUBLE" => {
            let _ = parser.parse_keyword(Keyword::PRECISION);
            DataType::Float64
        }
        "DECIMAL" | "DEC" | "NUMERIC" => {
            let (p, s) = match optional_numbers(parser)?.as_slice() {
                [] => (10, 0),
                [p] => (*p, 0),
                [p, s] => (*p, *s),
                _ => return parser.expected_ref("DECIMAL(precision, scale)", parser.peek_token_ref()),
            };
            if !(1..=38).contains(&p) || s > p {
                return Err(ParserError::ParserError(format!(
                    "DECIMAL precision must be between 1 and 38 and scale between 0 and the precision, got DECIMAL({p}, {s}){}",
                    token.span.start
                )));
            }
            DataType::Decimal128(p as u8, s as i8)
        }
        "CHAR" | "VARCHAR" | "STRING" | "TEXT" => {
            optional_numbers(parser)?;
            DataType::Utf8
        }
        "BINARY" | "VARBINARY" | "BYTES" => {
            optional_numbers(parser)?;
            DataType::Binary
        }
        "DATE" => DataType::Date32,
        "TIME" => {
            optional_numbers(parser)?;
            parse_time_zone_suffix(parser)?;
            DataType::Time32(TimeUnit::Millisecond)
        }
        "TIMESTAMP" => {
            optional_numbers(parser)?;
            if parse_time_zone_suffix(parser)? { ltz_type() } else { TIMESTAMP_TYPE }
        }
        "TIMESTAMP_LTZ" => {
            optional_numbers(parser)?;
            ltz_type()
        }
        "ROW" => parse_row(parser, angles)?,
        "ARRAY" => {
            expect_open(parser)?;
            let element = parse_type_inner(parser, angles)?;
            let nullable = !parse_not_null(parser);
            angles.expect_close(parser)?;
            DataType::List(Arc::new(Field::new("element", element, nullable)))
        }
        "MAP" => {
            expect_open(parser)?;
            let key = parse_type_inner(parser, angles)?;
            parse_not_null(parser);
            parser.expect_token(&Token::Comma)?;
            let value = parse_type_inner(parser, angles)?;
            let value_nullable = !parse_not_null(parser);
            angles.expect_close(parser)?;
            let entries = Field::new(
                "entries",
                DataType::Struct(Fields::from(vec![
                    Field::new("key", key, false),
                    Field::new("value", value, value_nullable),
                ])),
                false,
            );
            DataType::Map(Arc::new(entries), false)
        }
        _ => {
            return Err(ParserError::ParserError(format!(
                "unknown data type {}; expected one of BOOLEAN, TINYINT, SMALLINT, INT, BIGINT, FLOAT, DOUBLE, DECIMAL, CHAR, VARCHAR, STRING, BINARY, VARBINARY, BYTES, DATE, TIME, TIMESTAMP, TIMESTAMP_LTZ, ROW, ARRAY, MAP{}",
                token.token, token.span.start
            )));
        }
    };
    Ok(ty)
}

fn ltz_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// `WITHOUT TIME ZONE` (plain) or `WITH LOCAL TIME ZONE` (LTZ); true for LTZ.
fn parse_time_zone_suffix(parser: &mut Parser) -> Result<bool, ParserError> {
    if parser.parse_keywords(&[Keyword::WITHOUT, Keyword::TIME, Keyword::ZONE]) {
        return Ok(false);
    }
    if parser.parse_keywords(&[Keyword::WITH, Keyword::LOCAL, Keyword::TIME, Keyword::ZONE]) {
        return Ok(true);
    }
    Ok(false)
}

fn expect_open(parser: &mut Parser) -> Result<(), ParserError> {
    parser.expect_token(&Token::Lt).map(|_| ())
}

/// `ROW<name type, …>` or `ROW(name type, …)`; field names may be backtick-quoted and may be
/// followed by a string comment.
fn parse_row(parser: &mut Parser, angles: &mut AngleState) -> Result<DataType, ParserError> {
    let paren = if parser.consume_token(&Token::LParen) {
        true
    } else {
        expect_open(parser)?;
        false
    };
    let mut fields = Vec::new();
    loop {
        if paren && parser.consume_token(&Token::RParen) {
            break;
        }
        if !paren && angles.at_close(parser) {
            angles.expect_close(parser)?;
            break;
        }
        let name = parser.parse_identifier()?;
        let ty = parse_type_inner(parser, angles)?;
        let nullable = !parse_not_null(parser);
        if let Token::SingleQuotedString(_) = parser.peek_token_ref().token {
            parser.next_token();
        }
        fields.push(Field::new(name.value, ty, nullable));
        if !parser.consume_token(&Token::Comma) {
            if paren {
                parser.expect_token(&Token::RParen)?;
            } else {
                angles.expect_close(parser)?;
            }
            break;
        }
    }
    Ok(DataType::Struct(Fields::from(fields)))
}

fn optional_numbers(parser: &mut Parser) -> Result<Vec<u64>, ParserError> {
    if !parser.consume_token(&Token::LParen) {
        return Ok(vec![]);
    }
    let mut numbers = vec![];
    loop {
        let token = parser.next_token();
        match &token.token {
            Token::Number(n, _) => match n.parse::<u64>() {
                Ok(v) => numbers.push(v),
                Err(_) => return parser.expected_ref("an integer", &token),
            },
            _ => return parser.expected_ref("an integer", &token),
        }
        if !parser.consume_token(&Token::Comma) {
            parser.expect_token(&Token::RParen)?;
            return Ok(numbers);
        }
    }
}

/// Flink's name for an Arrow type, for messages and `EXPLAIN`.
pub fn flink_type_name(ty: &DataType) -> String {
    match ty {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INT".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Decimal128(p, s) => format!("DECIMAL({p}, {s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "STRING".into(),
        DataType::Binary | DataType::LargeBinary => "BYTES".into(),
        DataType::Date32 => "DATE".into(),
        DataType::Time32(_) | DataType::Time64(_) => "TIME(0)".into(),
        DataType::Timestamp(_, None) => "TIMESTAMP(3)".into(),
        DataType::Timestamp(_, Some(_)) => "TIMESTAMP_LTZ(3)".into(),
        DataType::Struct(fields) => {
            let inner: Vec<String> =
                fields.iter().map(|f| format!("`{}` {}", f.name(), flink_type_name(f.data_type()))).collect();
            format!("ROW<{}>", inner.join(", "))
        }
        DataType::List(f) => format!("ARRAY<{}>", flink_type_name(f.data_type())),
        DataType::Map(f, _) => match f.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => {
                format!("MAP<{}, {}>", flink_type_name(kv[0].data_type()), flink_type_name(kv[1].data_type()))
            }
            other => format!("MAP<{other}>"),
        },
        DataType::Null => "NULL".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::dialect::FlinkDialect;

    fn parse(s: &str) -> Result<DataType, ParserError> {
        let mut p = Parser::new(&FlinkDialect).try_with_sql(s)?;
        parse_type(&mut p).map(|(t, _)| t)
    }

    #[test]
    fn nested_rows_with_shift_token() {
        let t = parse("ROW<a INT, b ROW<c BIGINT, `d` TIMESTAMP(3)>>").unwrap();
        assert_eq!(flink_type_name(&t), "ROW<`a` INT, `b` ROW<`c` BIGINT, `d` TIMESTAMP(3)>>");
        let t = parse("ARRAY<ARRAY<INT>>").unwrap();
        assert_eq!(flink_type_name(&t), "ARRAY<ARRAY<INT>>");
    }

    #[test]
    fn scalars() {
        assert_eq!(parse("DECIMAL(10, 2)").unwrap(), DataType::Decimal128(10, 2));
        assert_eq!(parse("decimal").unwrap(), DataType::Decimal128(10, 0));
        assert_eq!(parse("VARCHAR(20)").unwrap(), DataType::Utf8);
        assert_eq!(parse("TIMESTAMP(3) WITH LOCAL TIME ZONE").unwrap(), ltz_type());
        assert!(parse("DECIMAL(50, 2)").is_err());
        assert!(parse("FOO").unwrap_err().to_string().contains("unknown data type"));
    }
}
