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
        DataType::UInt8 | DataType::UInt16 => "INT".into(),
        DataType::UInt32 | DataType::UInt64 => "BIGINT".into(),
        DataType::Float16 => "FLOAT".into(),
        DataType::Decimal256(p, s) => format!("DECIMAL({p}, {s})"),
        DataType::Date64 => "DATE".into(),
        DataType::BinaryView | DataType::FixedSizeBinary(_) => "BYTES".into(),
        DataType::Interval(arrow::datatypes::IntervalUnit::YearMonth) => "INTERVAL YEAR TO MONTH".into(),
        DataType::Interval(_) | DataType::Duration(_) => "INTERVAL DAY TO SECOND(3)".into(),
        DataType::LargeList(f) | DataType::FixedSizeList(f, _) => format!("ARRAY<{}>", flink_type_name(f.data_type())),
        other => other.to_string(),
    }
}

/// `text` (an error message of DataFusion or Arrow) with the Arrow types it names (`Int64`,
/// `Utf8`, `Decimal128(10, 2)`, `Timestamp(ms)`) written as Flink SQL types ([`flink_type_name`]:
/// `BIGINT`, `STRING`, `DECIMAL(10, 2)`, `TIMESTAMP(3)`).
pub fn with_sql_type_names(text: &str) -> String {
    const ARROW_TYPES: &[&str] = &[
        "Null",
        "Boolean",
        "Int8",
        "Int16",
        "Int32",
        "Int64",
        "UInt8",
        "UInt16",
        "UInt32",
        "UInt64",
        "Float16",
        "Float32",
        "Float64",
        "Utf8View",
        "LargeUtf8",
        "Utf8",
        "BinaryView",
        "LargeBinary",
        "Binary",
        "Date32",
        "Date64",
        "Time32",
        "Time64",
        "Timestamp",
        "Decimal128",
        "Decimal256",
        "Interval",
        "Duration",
        "LargeList",
        "List",
        "Struct",
        "Map",
        "FixedSizeBinary",
        "FixedSizeList",
    ];
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut at = 0;
    while at < text.len() {
        let starts_word = at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
        let name = ARROW_TYPES.iter().find(|name| {
            text[at..].starts_with(**name)
                && !text[at + name.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        });
        let (Some(name), true) = (name, starts_word) else {
            at += text[at..].chars().next().map_or(1, char::len_utf8);
            continue;
        };
        let mut end = at + name.len();
        if text[end..].starts_with('(') {
            let mut depth = 0;
            for (i, c) in text[end..].char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    end += i + 1;
                    break;
                }
            }
        }
        match text[at..end].parse::<DataType>() {
            Ok(ty) => {
                out.push_str(&text[copied..at]);
                out.push_str(&flink_type_name(&ty));
                copied = end;
                at = end;
            }
            Err(_) => at += name.len(),
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// `text` (an error message, an `EXPLAIN`) with DataFusion's interval values
/// (`IntervalMonthDayNano { months: 0, days: 0, nanoseconds: 5000000000 }`) written as SQL
/// literals (`INTERVAL '5' SECOND`).
pub fn with_sql_literals(text: &str) -> String {
    use std::sync::LazyLock;
    static MONTH_DAY_NANO: LazyLock<regex::Regex> = LazyLock::new(|| {
        regex::Regex::new(
            r#"(?:IntervalMonthDayNano\(")?IntervalMonthDayNano \{ months: (-?\d+), days: (-?\d+), nanoseconds: (-?\d+) \}(?:"\))?"#,
        )
        .expect("a valid pattern")
    });
    static DAY_TIME: LazyLock<regex::Regex> = LazyLock::new(|| {
        regex::Regex::new(
            r#"(?:IntervalDayTime\(")?IntervalDayTime \{ days: (-?\d+), milliseconds: (-?\d+) \}(?:"\))?"#,
        )
        .expect("a valid pattern")
    });
    static YEAR_MONTH: LazyLock<regex::Regex> =
        LazyLock::new(|| regex::Regex::new(r#"IntervalYearMonth\("(-?\d+)"\)"#).expect("a valid pattern"));
    let number = |c: &regex::Captures<'_>, i: usize| c[i].parse::<i64>().unwrap_or(0);
    let text = MONTH_DAY_NANO
        .replace_all(text, |c: &regex::Captures<'_>| interval_literal(number(c, 1), number(c, 2), number(c, 3)));
    let text = DAY_TIME.replace_all(&text, |c: &regex::Captures<'_>| {
        interval_literal(0, number(c, 1), number(c, 2).saturating_mul(1_000_000))
    });
    YEAR_MONTH.replace_all(&text, |c: &regex::Captures<'_>| interval_literal(number(c, 1), 0, 0)).into_owned()
}

/// An interval as Flink SQL writes it, in the largest unit it is a whole number of.
fn interval_literal(months: i64, days: i64, nanoseconds: i64) -> String {
    let months_part = match months {
        0 => None,
        m if m % 12 == 0 => Some(format!("INTERVAL '{}' YEAR", m / 12)),
        m => Some(format!("INTERVAL '{m}' MONTH")),
    };
    let nanos = (days as i128) * 86_400_000_000_000 + nanoseconds as i128;
    let time_part = if nanos == 0 && months_part.is_some() {
        None
    } else {
        let units: [(i128, &str); 4] = [
            (86_400_000_000_000, "DAY"),
            (3_600_000_000_000, "HOUR"),
            (60_000_000_000, "MINUTE"),
            (1_000_000_000, "SECOND"),
        ];
        Some(match units.iter().find(|(size, _)| nanos % size == 0) {
            Some((size, unit)) => format!("INTERVAL '{}' {unit}", nanos / size),
            None => {
                let seconds = format!("{:.9}", nanos as f64 / 1e9);
                format!("INTERVAL '{}' SECOND", seconds.trim_end_matches('0'))
            }
        })
    };
    match (months_part, time_part) {
        (Some(m), Some(t)) => format!("{m} + {t}"),
        (Some(m), None) => m,
        (None, Some(t)) => t,
        (None, None) => "INTERVAL '0' SECOND".into(),
    }
}

/// Whether Flink casts a value of type `from` to `to` implicitly, as it does for the columns
/// of `INSERT INTO` (`LogicalTypeCasts.supportsImplicitCast`): integers widen, every number
/// goes to `DOUBLE`, exact numbers to `DECIMAL`, timestamps to dates, times and the other
/// timestamp kind, `NULL` to anything; a string never becomes a number, nor a number a string.
pub fn supports_implicit_cast(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    let rank = |t: &DataType| match t {
        Int8 => Some(1),
        Int16 => Some(2),
        Int32 => Some(3),
        Int64 => Some(4),
        // Weir's internal unsigned results (ROW_NUMBER) are Flink's INT or BIGINT.
        UInt8 | UInt16 => Some(3),
        UInt32 | UInt64 => Some(4),
        _ => None,
    };
    let is_string = |t: &DataType| matches!(t, Utf8 | LargeUtf8 | Utf8View);
    let is_binary = |t: &DataType| matches!(t, Binary | LargeBinary | BinaryView | FixedSizeBinary(_));
    if from == to || *from == Null || flink_type_name(from) == flink_type_name(to) {
        return true;
    }
    match (from, to) {
        (f, t) if rank(f).is_some() && rank(t).is_some() => rank(f) <= rank(t),
        (f, Decimal128(_, _)) => rank(f).is_some() || matches!(f, Decimal128(_, _)),
        (f, Float32) => rank(f).is_some() || matches!(f, Decimal128(_, _)),
        (f, Float64) => rank(f).is_some() || matches!(f, Decimal128(_, _) | Float32),
        (f, t) if is_string(t) => is_string(f),
        (f, t) if is_binary(t) => is_binary(f),
        (Timestamp(_, _), Timestamp(_, _)) => true,
        (Timestamp(_, None), Date32 | Time32(_) | Time64(_)) => true,
        (Time32(_) | Time64(_), Time32(_) | Time64(_)) => true,
        (List(f), List(t)) => supports_implicit_cast(f.data_type(), t.data_type()),
        (Struct(f), Struct(t)) => {
            f.len() == t.len()
                && f.iter().zip(t.iter()).all(|(f, t)| supports_implicit_cast(f.data_type(), t.data_type()))
        }
        (Map(f, _), Map(t, _)) => supports_implicit_cast(f.data_type(), t.data_type()),
        _ => false,
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
    fn messages_name_sql_types() {
        assert_eq!(
            with_sql_type_names("Cannot coerce arithmetic expression Int64 + Utf8 to valid types"),
            "Cannot coerce arithmetic expression BIGINT + STRING to valid types"
        );
        let decimal = DataType::Decimal128(10, 2).to_string();
        let timestamp = TIMESTAMP_TYPE.to_string();
        assert_eq!(
            with_sql_type_names(&format!("{decimal} and {timestamp}, not Int32s or MyInt64")),
            "DECIMAL(10, 2) and TIMESTAMP(3), not Int32s or MyInt64"
        );
        let list = DataType::List(Arc::new(Field::new("item", DataType::Int32, true))).to_string();
        assert_eq!(with_sql_type_names(&format!("a {list}")), "a ARRAY<INT>");
    }

    #[test]
    fn intervals_read_as_sql() {
        assert_eq!(
            with_sql_literals(
                r#"ts - IntervalMonthDayNano("IntervalMonthDayNano { months: 0, days: 0, nanoseconds: 5000000000 }")"#
            ),
            "ts - INTERVAL '5' SECOND"
        );
        assert_eq!(
            with_sql_literals(
                "IntervalMonthDayNano { months: 0, days: 1, nanoseconds: 0 } and IntervalMonthDayNano { months: 0, days: 0, nanoseconds: 1500000000 }"
            ),
            "INTERVAL '1' DAY and INTERVAL '1.5' SECOND"
        );
        assert_eq!(
            with_sql_literals(r#"IntervalDayTime("IntervalDayTime { days: 0, milliseconds: 600000 }")"#),
            "INTERVAL '10' MINUTE"
        );
        assert_eq!(with_sql_literals(r#"IntervalYearMonth("24")"#), "INTERVAL '2' YEAR");
    }

    #[test]
    fn implicit_casts_are_flinks() {
        use DataType::*;
        for (from, to) in [
            (Int32, Int64),
            (Int8, Int32),
            (Int64, Decimal128(20, 0)),
            (Decimal128(10, 2), Decimal128(38, 2)),
            (Int64, Float64),
            (UInt64, Int64),
            (Decimal128(10, 2), Float64),
            (Float32, Float64),
            (Null, Utf8),
            (TIMESTAMP_TYPE, ltz_type()),
            (TIMESTAMP_TYPE, Date32),
        ] {
            assert!(supports_implicit_cast(&from, &to), "{from} -> {to}");
        }
        for (from, to) in [
            (Utf8, Int32),
            (Int64, Int32),
            (Int32, Utf8),
            (Float64, Int64),
            (Float64, Decimal128(10, 2)),
            (Float64, Float32),
            (Boolean, Int32),
            (Date32, TIMESTAMP_TYPE),
            (Utf8, TIMESTAMP_TYPE),
        ] {
            assert!(!supports_implicit_cast(&from, &to), "{from} -> {to}");
        }
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
