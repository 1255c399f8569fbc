//! `weir_cast_to_string`: Flink's CAST(x AS STRING) for every type Weir carries. Booleans
//! print TRUE/FALSE, doubles print like Java's `Double.toString`, decimals in plain notation
//! with their declared scale, and temporal values exactly as Flink's cast rules format them
//! (a TIMESTAMP(p) always with p fraction digits).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use arrow::datatypes::{
    DataType, Decimal128Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    Time32MillisecondType, Time32SecondType, Time64MicrosecondType, Time64NanosecondType, TimeUnit, UInt8Type,
    UInt16Type, UInt32Type, UInt64Type,
};
use datafusion_common::{Result, ScalarValue};
use datafusion_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, Volatility};

use crate::calendar::civil_from_days;

use super::common::{Strings, Temporal, eval_arrays, expect_arg_count, flink_udf, precision_of};
use super::java_datetime::DateTimeFields;

pub(crate) fn functions() -> Vec<Arc<ScalarUDF>> {
    vec![flink_udf("weir_cast_to_string", &[], Volatility::Immutable, coerce_any, return_utf8, invoke_cast_to_string)]
}

fn coerce_any(name: &str, types: &[DataType]) -> Result<Vec<DataType>> {
    expect_arg_count(name, types, 1, 1)?;
    Ok(vec![match &types[0] {
        DataType::Date64 => DataType::Timestamp(TimeUnit::Millisecond, None),
        DataType::Float16 => DataType::Float32,
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) => DataType::Decimal128(*p, *s),
        t => t.clone(),
    }])
}

fn return_utf8(_: &[DataType], _: &[Option<&ScalarValue>]) -> Result<DataType> {
    Ok(DataType::Utf8)
}

/// Java's `Double.toString`/`Float.toString` from the shortest round-tripping digits:
/// plain notation for magnitudes in [1e-3, 1e7), computerized scientific notation otherwise.
pub(crate) fn java_float_string(digits_and_exponent: &str, is_nan: bool, infinite: Option<bool>) -> String {
    if is_nan {
        return "NaN".to_string();
    }
    if let Some(negative) = infinite {
        return if negative { "-Infinity" } else { "Infinity" }.to_string();
    }
    // `digits_and_exponent` is Rust's `{:e}` rendering, e.g. "-1.2345e-7" or "1e10".
    let (mantissa, exponent) = digits_and_exponent.split_once('e').unwrap_or((digits_and_exponent, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    if digits == "0" {
        return format!("{sign}0.0");
    }
    let mut out = String::from(sign);
    if (-3..7).contains(&exponent) {
        if exponent >= 0 {
            let int_len = exponent as usize + 1;
            if digits.len() <= int_len {
                out.push_str(digits);
                out.extend(std::iter::repeat_n('0', int_len - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        } else {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exponent - 1) as usize));
            out.push_str(digits);
        }
    } else {
        out.push_str(&digits[..1]);
        out.push('.');
        out.push_str(if digits.len() > 1 { &digits[1..] } else { "0" });
        out.push('E');
        out.push_str(&exponent.to_string());
    }
    out
}

pub(crate) fn java_double_string(x: f64) -> String {
    java_float_string(&format!("{x:e}"), x.is_nan(), x.is_infinite().then_some(x < 0.0))
}

pub(crate) fn java_float32_string(x: f32) -> String {
    java_float_string(&format!("{x:e}"), x.is_nan(), x.is_infinite().then_some(x < 0.0))
}

/// `BigDecimal.toPlainString` of an unscaled value at a non-negative scale.
pub(crate) fn decimal_plain_string(unscaled: i128, scale: i8) -> String {
    let negative = unscaled < 0;
    let digits = unscaled.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + 3);
    if negative {
        out.push('-');
    }
    if scale <= 0 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', scale.unsigned_abs() as usize));
        return out;
    }
    let scale = scale as usize;
    if digits.len() > scale {
        out.push_str(&digits[..digits.len() - scale]);
        out.push('.');
        out.push_str(&digits[digits.len() - scale..]);
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', scale - digits.len()));
        out.push_str(&digits);
    }
    out
}

/// Flink's `int4`: four characters computed with Java's truncating arithmetic, so years
/// outside 0..=9999 print as Flink prints them (the last four digits).
fn push_int4(out: &mut String, v: i64) {
    for k in [1000, 100, 10, 1] {
        out.push(char::from((i64::from(b'0') + (v / k) % 10) as u8));
    }
}

fn push_int2(out: &mut String, v: i64) {
    out.push(char::from((i64::from(b'0') + (v / 10) % 10) as u8));
    out.push(char::from((i64::from(b'0') + v % 10) as u8));
}

pub(crate) fn format_date(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    let mut out = String::with_capacity(10);
    push_int4(&mut out, y);
    out.push('-');
    push_int2(&mut out, m);
    out.push('-');
    push_int2(&mut out, d);
    out
}

/// `DateTimeUtils.formatTimestamp(ts, precision)`: trailing zeros of the nine-digit fraction
/// are dropped only down to the declared precision.
pub(crate) fn format_timestamp(f: &DateTimeFields, precision: usize) -> String {
    let mut out = format_date(f.days);
    out.push(' ');
    push_int2(&mut out, f.hour);
    out.push(':');
    push_int2(&mut out, f.minute);
    out.push(':');
    push_int2(&mut out, f.second);
    let nanos = format!("{:09}", f.nano);
    let mut fraction = nanos.as_str();
    while fraction.len() > precision && fraction.ends_with('0') {
        fraction = &fraction[..fraction.len() - 1];
    }
    if !fraction.is_empty() {
        out.push('.');
        out.push_str(fraction);
    }
    out
}

/// `DateTimeUtils.formatTimestampMillis(int time, int precision)` for TIME values: the
/// fraction stops at the first zero remainder, as `java.sql.Timestamp.toString` does.
pub(crate) fn format_time(millis_of_day: i64, precision: usize) -> String {
    let time = millis_of_day.rem_euclid(86_400_000);
    let mut out = String::with_capacity(12);
    push_int2(&mut out, time / 3_600_000);
    out.push(':');
    push_int2(&mut out, time / 60_000 % 60);
    out.push(':');
    push_int2(&mut out, time / 1000 % 60);
    if precision > 0 {
        out.push('.');
        let mut ms = time % 1000;
        let mut remaining = precision;
        while remaining > 0 {
            out.push(char::from(b'0' + (ms / 100) as u8));
            ms = ms % 100 * 10;
            if ms == 0 {
                break;
            }
            remaining -= 1;
        }
    }
    out
}

macro_rules! push_display {
    ($array:expr, $ty:ty, $out:expr, $len:expr) => {{
        let a = $array.as_primitive::<$ty>();
        for i in 0..$len {
            $out.append_option(a.is_valid(i).then(|| a.value(i).to_string()));
        }
    }};
}

fn invoke_cast_to_string(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    eval_arrays(args, |arrays, len| {
        let array = &arrays[0];
        let mut out = StringBuilder::with_capacity(len, len * 12);
        match array.data_type() {
            DataType::Null => (0..len).for_each(|_| out.append_null()),
            DataType::Boolean => {
                let a = array.as_boolean();
                for i in 0..len {
                    out.append_option(a.is_valid(i).then(|| if a.value(i) { "TRUE" } else { "FALSE" }));
                }
            }
            DataType::Int8 => push_display!(array, Int8Type, out, len),
            DataType::Int16 => push_display!(array, Int16Type, out, len),
            DataType::Int32 => push_display!(array, Int32Type, out, len),
            DataType::Int64 => push_display!(array, Int64Type, out, len),
            DataType::UInt8 => push_display!(array, UInt8Type, out, len),
            DataType::UInt16 => push_display!(array, UInt16Type, out, len),
            DataType::UInt32 => push_display!(array, UInt32Type, out, len),
            DataType::UInt64 => push_display!(array, UInt64Type, out, len),
            DataType::Float64 => {
                let a = array.as_primitive::<Float64Type>();
                for i in 0..len {
                    out.append_option(a.is_valid(i).then(|| java_double_string(a.value(i))));
                }
            }
            DataType::Float32 => {
                let a = array.as_primitive::<Float32Type>();
                for i in 0..len {
                    out.append_option(a.is_valid(i).then(|| java_float32_string(a.value(i))));
                }
            }
            DataType::Decimal128(_, scale) => {
                let a = array.as_primitive::<Decimal128Type>();
                for i in 0..len {
                    out.append_option(a.is_valid(i).then(|| decimal_plain_string(a.value(i), *scale)));
                }
            }
            DataType::Timestamp(unit, _) => {
                let t = Temporal::new(array)?;
                let precision = precision_of(*unit);
                for i in 0..t.len() {
                    out.append_option(t.millis(i).map(|m| {
                        format_timestamp(&DateTimeFields::from_millis(m.millis, m.nanos_of_milli), precision)
                    }));
                }
            }
            DataType::Date32 => {
                let t = Temporal::new(array)?;
                for i in 0..t.len() {
                    out.append_option(t.raw(i).map(format_date));
                }
            }
            DataType::Time32(TimeUnit::Second) => {
                let a = array.as_primitive::<Time32SecondType>();
                for i in 0..len {
                    out.append_option(a.is_valid(i).then(|| format_time(i64::from(a.value(i)) * 1000, 0)));
                }
            }
            DataType::Time32(_) => {
                let a = array.as_primitive::<Time32MillisecondType>();
                for i in 0..len {
                    out.append_option(a.is_valid(i).then(|| format_time(i64::from(a.value(i)), 3)));
                }
            }
            DataType::Time64(TimeUnit::Microsecond) => {
                let a = array.as_primitive::<Time64MicrosecondType>();
                for i in 0..len {
                    out.append_option(a.is_valid(i).then(|| format_time(a.value(i).div_euclid(1000), 6)));
                }
            }
            DataType::Time64(_) => {
                let a = array.as_primitive::<Time64NanosecondType>();
                for i in 0..len {
                    out.append_option(a.is_valid(i).then(|| format_time(a.value(i).div_euclid(1_000_000), 9)));
                }
            }
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                let s = Strings::new(array)?;
                for i in 0..len {
                    out.append_option(s.get(i));
                }
            }
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
                let cast = arrow::compute::cast(array, &DataType::LargeBinary)?;
                let b = cast.as_binary::<i64>();
                for i in 0..len {
                    out.append_option(b.is_valid(i).then(|| String::from_utf8_lossy(b.value(i)).into_owned()));
                }
            }
            _ => {
                // Types Flink formats in ways Weir does not model yet fall back to Arrow's text.
                let cast = arrow::compute::cast(array, &DataType::Utf8)?;
                let s = cast.as_string::<i32>();
                for i in 0..len {
                    out.append_option(s.is_valid(i).then(|| s.value(i)));
                }
            }
        }
        Ok(Arc::new(out.finish()) as ArrayRef)
    })
}

#[cfg(test)]
mod tests {
    use super::super::common::test_util::{date, scalar, string_of, ts_ms};
    use super::*;

    fn cast(v: ScalarValue) -> Option<String> {
        let f = functions().remove(0);
        string_of(&scalar(&f, vec![v]).unwrap())
    }

    #[test]
    fn doubles_print_like_java() {
        assert_eq!(java_double_string(1e-7), "1.0E-7");
        assert_eq!(java_double_string(2.5), "2.5");
        assert_eq!(java_double_string(1e10), "1.0E10");
        assert_eq!(java_double_string(100.0), "100.0");
        assert_eq!(java_double_string(1234567.0), "1234567.0");
        assert_eq!(java_double_string(12345678.0), "1.2345678E7");
        assert_eq!(java_double_string(0.001), "0.001");
        assert_eq!(java_double_string(0.0001), "1.0E-4");
        assert_eq!(java_double_string(-0.0), "-0.0");
        assert_eq!(java_double_string(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(java_double_string(f64::NAN), "NaN");
        assert_eq!(java_double_string(f64::NEG_INFINITY), "-Infinity");
        assert_eq!(java_float32_string(0.1), "0.1");
        assert_eq!(java_float32_string(1.0e10), "1.0E10");
    }

    #[test]
    fn casts_every_type() {
        assert_eq!(cast(ScalarValue::Boolean(Some(true))).as_deref(), Some("TRUE"));
        assert_eq!(cast(ScalarValue::Boolean(Some(false))).as_deref(), Some("FALSE"));
        assert_eq!(cast(ScalarValue::Int64(Some(-42))).as_deref(), Some("-42"));
        assert_eq!(cast(ScalarValue::Float64(Some(2.5))).as_deref(), Some("2.5"));
        assert_eq!(cast(ScalarValue::Decimal128(Some(57_911), 10, 2)).as_deref(), Some("579.11"));
        assert_eq!(cast(ScalarValue::Decimal128(Some(189_000), 10, 2)).as_deref(), Some("1890.00"));
        assert_eq!(cast(ScalarValue::Decimal128(Some(-5), 10, 3)).as_deref(), Some("-0.005"));
        assert_eq!(cast(ts_ms("2024-03-10 10:00:00")).as_deref(), Some("2024-03-10 10:00:00.000"));
        assert_eq!(cast(ts_ms("2024-03-10 10:00:00.12")).as_deref(), Some("2024-03-10 10:00:00.120"));
        assert_eq!(cast(ScalarValue::TimestampSecond(Some(0), None)).as_deref(), Some("1970-01-01 00:00:00"));
        assert_eq!(
            cast(ScalarValue::TimestampMicrosecond(Some(-1), None)).as_deref(),
            Some("1969-12-31 23:59:59.999999")
        );
        assert_eq!(cast(date("2024-03-10")).as_deref(), Some("2024-03-10"));
        assert_eq!(cast(ScalarValue::Time32Second(Some(3_723))).as_deref(), Some("01:02:03"));
        assert_eq!(cast(ScalarValue::Utf8(Some("x".into()))).as_deref(), Some("x"));
        assert_eq!(cast(ScalarValue::Int32(None)), None);
        assert_eq!(cast(ScalarValue::Null), None);
    }
}
