//! Text to typed values, Flink's `asText()`-then-parse rules that the JSON and CSV decoders
//! share: integers as Java's `Long.parseLong`, floats as `Double.parseDouble`, exact decimals
//! as `new BigDecimal(text)` rescaled HALF_UP, booleans as `Boolean.parseBoolean`, BYTES as
//! base64, and dates, times and timestamps through [`super::temporal`].

use super::columns::{Column, ColumnData};
use super::temporal::{parse_date, parse_time_millis, parse_timestamp};
use super::{DecodeError, Decoded, TimestampFormat};

/// Appends one row converted from text with Flink's rules for the column's type; on
/// error appends nothing.
pub(super) fn append_text(column: &mut Column, text: &[u8], timestamp_format: TimestampFormat) -> Decoded {
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
pub(super) fn parse_i64(text: &[u8]) -> Option<i64> {
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
    use super::*;

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
}
