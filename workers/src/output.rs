//! Text forms of result rows: the canonical JSON encoding of `weir run --output` (one object per
//! row, `{"op":"+I","row":[…]}`, values as the conformance suite encodes them), the objects
//! Flink's `json` format writes (what the filesystem sink writes in `json` and
//! `debezium-json`), and Flink's `print` connector form (`+I[1, foo]`).

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
        DataType::List(_) => write_json_list(out, array, row, write_json_value),
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

/// Appends the list `array[row]` as a JSON array of its elements, each written by
/// `write_element`.
fn write_json_list(out: &mut String, array: &ArrayRef, row: usize, write_element: fn(&mut String, &ArrayRef, usize)) {
    let list = array.as_list::<i32>().value(row);
    out.push('[');
    for i in 0..list.len() {
        if i > 0 {
            out.push(',');
        }
        write_element(out, &list, i);
    }
    out.push(']');
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

/// Appends `array[row]` as Flink's `json` format writes it: as the canonical encoding, except
/// that a DECIMAL is a JSON number (Jackson writes a `BigDecimal` with its scale, in Java's
/// `BigDecimal.toString` form) and a ROW is an object of its named fields.
pub fn write_json_format_value(out: &mut String, array: &ArrayRef, row: usize) {
    if array.is_null(row) {
        out.push_str("null");
        return;
    }
    match array.data_type() {
        DataType::Decimal128(_, scale) => {
            write_java_big_decimal(out, array.as_primitive::<Decimal128Type>().value(row), *scale)
        }
        DataType::Struct(fields) => {
            let names = fields.iter().map(|field| field.name().as_str());
            write_json_format_object(out, names, array.as_struct().columns(), row);
        }
        DataType::List(_) => write_json_list(out, array, row, write_json_format_value),
        _ => write_json_value(out, array, row),
    }
}

/// Appends row `row` of `columns` as the JSON object Flink's `json` format writes, with
/// fields named by `names`.
pub fn write_json_format_object<'a>(
    out: &mut String,
    names: impl IntoIterator<Item = &'a str>,
    columns: &[ArrayRef],
    row: usize,
) {
    out.push('{');
    for (i, (name, column)) in names.into_iter().zip(columns).enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_string(out, name);
        out.push(':');
        write_json_format_value(out, column, row);
    }
    out.push('}');
}

/// Java's `BigDecimal.toString()` of `unscaled × 10^-scale`: plain digits with `scale`
/// fraction digits, or scientific notation (`1.5E-7`, `1E+3`) when the scale is negative or
/// the exponent is below -6.
pub fn write_java_big_decimal(out: &mut String, unscaled: i128, scale: i8) {
    let digits = unscaled.unsigned_abs().to_string();
    let exponent = i64::from(-scale) + digits.len() as i64 - 1;
    if unscaled < 0 {
        out.push('-');
    }
    if scale >= 0 && exponent >= -6 {
        let scale = scale as usize;
        if scale == 0 {
            out.push_str(&digits);
        } else if digits.len() > scale {
            let (whole, fraction) = digits.split_at(digits.len() - scale);
            let _ = write!(out, "{whole}.{fraction}");
        } else {
            let _ = write!(out, "0.{:0>scale$}", digits);
        }
    } else {
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        if exponent != 0 {
            let _ = write!(out, "E{}{exponent}", if exponent > 0 { "+" } else { "" });
        }
    }
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

    #[test]
    fn decimals_print_as_java_big_decimal_does() {
        let text = |unscaled: i128, scale: i8| {
            let mut s = String::new();
            write_java_big_decimal(&mut s, unscaled, scale);
            s
        };
        assert_eq!(text(1230, 2), "12.30");
        assert_eq!(text(-50, 2), "-0.50");
        assert_eq!(text(0, 2), "0.00");
        assert_eq!(text(7, 0), "7");
        assert_eq!(text(1, 6), "0.000001");
        assert_eq!(text(1, 7), "1E-7");
        assert_eq!(text(0, 18), "0E-18");
        assert_eq!(text(-123_456, 12), "-1.23456E-7");
        assert_eq!(text(12, -2), "1.2E+3");
        assert_eq!(text(1, -3), "1E+3");
        assert_eq!(text(i128::MIN, 0), i128::MIN.to_string());
    }

    #[test]
    fn json_format_writes_decimals_as_numbers_and_rows_as_objects() {
        use std::sync::Arc;

        use arrow::array::{Decimal128Array, Int64Array, ListArray, StructArray};
        use arrow::datatypes::{Field, Fields};

        let amount: ArrayRef =
            Arc::new(Decimal128Array::from(vec![Some(1230), None]).with_precision_and_scale(10, 2).unwrap());
        let id: ArrayRef = Arc::new(Int64Array::from(vec![1, 2]));
        let fields = Fields::from(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("amount", DataType::Decimal128(10, 2), true),
        ]);
        let nested: ArrayRef = Arc::new(StructArray::new(fields, vec![id.clone(), amount.clone()], None));
        let amounts: ArrayRef = Arc::new(ListArray::new(
            Arc::new(Field::new("item", DataType::Decimal128(10, 2), true)),
            arrow::buffer::OffsetBuffer::from_lengths([2, 0]),
            amount.clone(),
            None,
        ));
        let columns = [amount, nested, amounts];
        let mut s = String::new();
        for row in 0..2 {
            write_json_format_object(&mut s, ["amount", "r", "all"], &columns, row);
            s.push('\n');
        }
        assert_eq!(
            s,
            "{\"amount\":12.30,\"r\":{\"id\":1,\"amount\":12.30},\"all\":[12.30,null]}\n\
             {\"amount\":null,\"r\":{\"id\":2,\"amount\":null},\"all\":[]}\n"
        );
        let mut canonical = String::new();
        write_json_value(&mut canonical, &columns[0], 0);
        assert_eq!(canonical, "\"12.30\"", "the canonical encoding keeps DECIMAL a string");
    }
}
