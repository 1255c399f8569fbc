//! Text forms of result rows: the canonical JSON encoding of `weir run --output` (one object per
//! row, `{"op":"+I","row":[…]}`, values as the conformance suite encodes them) and Flink's
//! `print` connector form (`+I[1, foo]`).

use std::fmt::Write;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    TimeUnit, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
    UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use weir_dataflow::calendar::civil_from_days;
use weir_dataflow::event::ChangeBatch;

/// Appends the canonical JSON of `array[row]` to `out`.
pub fn write_json_value(out: &mut String, array: &ArrayRef, row: usize) {
    if array.is_null(row) {
        out.push_str("null");
        return;
    }
    match array.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let s = match array.data_type() {
                DataType::Utf8 => array.as_string::<i32>().value(row),
                DataType::LargeUtf8 => array.as_string::<i64>().value(row),
                _ => array.as_string_view().value(row),
            };
            write_json_string(out, s);
        }
        DataType::Float64 => write_float(out, array.as_primitive::<Float64Type>().value(row)),
        DataType::Float32 => write_float(out, array.as_primitive::<Float32Type>().value(row) as f64),
        DataType::Struct(_) => {
            let s = array.as_struct();
            out.push('[');
            for (i, c) in s.columns().iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_value(out, c, row);
            }
            out.push(']');
        }
        DataType::List(_) => {
            let list = array.as_list::<i32>().value(row);
            out.push('[');
            for i in 0..list.len() {
                if i > 0 {
                    out.push(',');
                }
                write_json_value(out, &list, i);
            }
            out.push(']');
        }
        DataType::Boolean | DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
            write_plain(out, array, row)
        }
        DataType::Decimal128(_, _) | DataType::Timestamp(_, _) | DataType::Date32 | DataType::Time32(_) => {
            let mut text = String::new();
            write_plain(&mut text, array, row);
            write_json_string(out, &text);
        }
        _ => write_plain(out, array, row),
    }
}

/// The value as Flink prints it: decimals with their scale, timestamps `yyyy-MM-dd HH:mm:ss.SSS`.
pub fn write_plain(out: &mut String, array: &ArrayRef, row: usize) {
    if array.is_null(row) {
        out.push_str("NULL");
        return;
    }
    let _ = match array.data_type() {
        DataType::Boolean => write!(out, "{}", array.as_boolean().value(row)),
        DataType::Int8 => write!(out, "{}", array.as_primitive::<Int8Type>().value(row)),
        DataType::Int16 => write!(out, "{}", array.as_primitive::<Int16Type>().value(row)),
        DataType::Int32 => write!(out, "{}", array.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => write!(out, "{}", array.as_primitive::<Int64Type>().value(row)),
        DataType::UInt8 => write!(out, "{}", array.as_primitive::<UInt8Type>().value(row)),
        DataType::UInt16 => write!(out, "{}", array.as_primitive::<UInt16Type>().value(row)),
        DataType::UInt32 => write!(out, "{}", array.as_primitive::<UInt32Type>().value(row)),
        DataType::UInt64 => write!(out, "{}", array.as_primitive::<UInt64Type>().value(row)),
        DataType::Float64 => {
            write_float(out, array.as_primitive::<Float64Type>().value(row));
            Ok(())
        }
        DataType::Float32 => {
            write_float(out, array.as_primitive::<Float32Type>().value(row) as f64);
            Ok(())
        }
        DataType::Decimal128(_, scale) => {
            write_decimal(out, array.as_primitive::<Decimal128Type>().value(row), *scale);
            Ok(())
        }
        DataType::Timestamp(unit, _) => {
            let ms = match unit {
                TimeUnit::Second => array.as_primitive::<TimestampSecondType>().value(row) * 1000,
                TimeUnit::Millisecond => array.as_primitive::<TimestampMillisecondType>().value(row),
                TimeUnit::Microsecond => array.as_primitive::<TimestampMicrosecondType>().value(row).div_euclid(1000),
                TimeUnit::Nanosecond => {
                    array.as_primitive::<TimestampNanosecondType>().value(row).div_euclid(1_000_000)
                }
            };
            write_timestamp_millis(out, ms);
            Ok(())
        }
        DataType::Date32 => {
            let days = array.as_primitive::<Date32Type>().value(row);
            let (y, m, d) = civil_from_days(i64::from(days));
            write!(out, "{y:04}-{m:02}-{d:02}")
        }
        DataType::Time32(TimeUnit::Millisecond) => {
            let ms = array.as_primitive::<arrow::datatypes::Time32MillisecondType>().value(row);
            let s = ms / 1000;
            write!(out, "{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
        }
        _ => match arrow::util::display::array_value_to_string(array, row) {
            Ok(s) => {
                out.push_str(&s);
                Ok(())
            }
            Err(_) => write!(out, "?"),
        },
    };
}

fn write_float(out: &mut String, v: f64) {
    if v.is_finite() {
        // Debug is the shortest text that round-trips and always has a fraction or exponent.
        let _ = write!(out, "{v:?}");
    } else if v.is_nan() {
        out.push_str("\"NaN\"");
    } else if v > 0.0 {
        out.push_str("\"Infinity\"");
    } else {
        out.push_str("\"-Infinity\"");
    }
}

pub fn write_decimal(out: &mut String, v: i128, scale: i8) {
    if scale <= 0 {
        let _ = write!(out, "{}", v * 10i128.pow((-scale) as u32));
        return;
    }
    let scale = scale as u32;
    let p = 10i128.pow(scale);
    let sign = if v < 0 { "-" } else { "" };
    let a = v.unsigned_abs();
    let _ = write!(out, "{sign}{}.{:0width$}", a / p as u128, a % p as u128, width = scale as usize);
}

pub fn write_timestamp_millis(out: &mut String, ms: i64) {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let secs = rem / 1000;
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60,
        rem % 1000
    );
}

pub fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `{"op":"+I","row":[…]}` for every row of the batch, one line each.
pub fn write_changelog_json(out: &mut String, batch: &ChangeBatch) {
    for row in 0..batch.num_rows() {
        out.push_str("{\"op\":\"");
        out.push_str(batch.kind(row).short_string());
        out.push_str("\",\"row\":[");
        for (i, c) in batch.data.columns().iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_json_value(out, c, row);
        }
        out.push_str("]}\n");
    }
}

/// Flink's print form of a row: `+I[1, foo, 2024-01-01 00:00:00.000]`.
pub fn write_print_row(out: &mut String, batch: &ChangeBatch, row: usize) {
    out.push_str(batch.kind(row).short_string());
    out.push('[');
    for (i, c) in batch.data.columns().iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        if c.is_null(row) {
            out.push_str("NULL");
        } else {
            match c.data_type() {
                DataType::Utf8 => out.push_str(c.as_string::<i32>().value(row)),
                _ => write_plain(out, c, row),
            }
        }
    }
    out.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_and_times() {
        let mut s = String::new();
        write_decimal(&mut s, -50, 2);
        assert_eq!(s, "-0.50");
        s.clear();
        write_decimal(&mut s, 908000, 3);
        assert_eq!(s, "908.000");
        s.clear();
        write_timestamp_millis(&mut s, 1_704_153_540_001);
        assert_eq!(s, "2024-01-01 23:59:00.001");
        s.clear();
        write_float(&mut s, 1e-7);
        assert_eq!(s, "1e-7");
        s.clear();
        write_float(&mut s, 3.0);
        assert_eq!(s, "3.0");
    }
}
