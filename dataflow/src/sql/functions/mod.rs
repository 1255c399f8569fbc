//! Flink's scalar functions where DataFusion has no equivalent or a different one, as
//! DataFusion `ScalarUDF`s, so that Weir's results equal Apache Flink's row for row. The
//! registry is [`flink_scalar_functions`]; the names are lowercase and are meant to shadow
//! DataFusion's built-ins of the same name. The SQL syntax DataFusion plans without a name
//! lookup (EXTRACT, SUBSTRING ... FROM, POSITION ... IN) reaches them through the expression
//! planner in `sql::context`.
//!
//! Flink's result types depend on how literals are typed, which is the planner's job: Flink
//! types `3` as INT and `1.1` as DECIMAL(2, 1), while DataFusion defaults to BIGINT and DOUBLE
//! (set `sql_parser.parse_float_as_decimal` and plan integer literals that fit as Int32, or
//! DECIMAL arithmetic gets wider types than Flink's). Time units (TIMESTAMPADD(DAY, ...),
//! FLOOR(ts TO HOUR)) are passed to these functions as Utf8 literals.

mod calendar;
mod cast;
mod common;
mod datetime;
mod decimal;
mod java_datetime;
mod numeric;
mod regex;
mod strings;

use std::sync::Arc;

use datafusion_expr::ScalarUDF;

/// Every Flink function Weir implements itself. Register them after DataFusion's built-ins so
/// that these win where the names collide.
///
/// | name | arguments | result |
/// |---|---|---|
/// | `date_format` | TIMESTAMP/DATE or STRING, fmt [, to_fmt] | STRING |
/// | `year` `quarter` `month` `week` `dayofyear` `dayofmonth` `dayofweek` `hour` `minute` `second` | TIMESTAMP or DATE | BIGINT |
/// | `date_part` | unit, TIMESTAMP or DATE | BIGINT |
/// | `weir_floor_time` `weir_ceil_time` | TIMESTAMP or DATE, unit | same as input |
/// | `timestampadd` | unit, INT, TIMESTAMP or DATE | input type; TIMESTAMP(6) for DATE + sub-day unit |
/// | `timestampdiff` | unit, t1, t2 | INT |
/// | `unix_timestamp` | () / STRING [, fmt] / TIMESTAMP | BIGINT |
/// | `to_timestamp` | STRING [, fmt] / BIGINT | TIMESTAMP(3) |
/// | `from_unixtime` | BIGINT [, fmt] | STRING |
/// | `mod` | exact or approximate numerics | type of the second operand (DECIMAL per Flink) |
/// | `round` `truncate` | numeric [, INT] | input type; DECIMAL with the rounded scale |
/// | `split_index` | STRING, STRING or INT, INT | STRING |
/// | `regexp` | STRING, regex | BOOLEAN |
/// | `regexp_extract` | STRING, regex [, INT] | STRING |
/// | `regexp_replace` | STRING, regex, STRING | STRING |
/// | `regexp_count` `regexp_instr` | STRING, regex | INT |
/// | `regexp_substr` | STRING, regex | STRING |
/// | `initcap` | STRING | STRING |
/// | `concat` | STRING... | STRING |
/// | `concat_ws` | sep, STRING... | STRING |
/// | `lpad` `rpad` | STRING, INT, STRING | STRING |
/// | `char_length` (`character_length`) | STRING | INT |
/// | `weir_position` | needle, haystack | INT |
/// | `locate` | needle, haystack [, INT] | INT |
/// | `substring` (`substr`) | STRING, INT [, INT] | STRING |
/// | `weir_cast_to_string` | any | STRING |
/// | `weir_decimal_add` `_sub` `_mul` `_div` | exact numerics (or DOUBLE) | DECIMAL per Flink (DOUBLE if either is) |
pub fn flink_scalar_functions() -> Vec<Arc<ScalarUDF>> {
    let mut all = Vec::new();
    all.extend(datetime::functions());
    all.extend(strings::functions());
    all.extend(regex::functions());
    all.extend(numeric::functions());
    all.extend(decimal::functions());
    all.extend(cast::functions());
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_lowercase() {
        let functions = flink_scalar_functions();
        let mut seen = HashSet::new();
        for f in &functions {
            for name in std::iter::once(f.name()).chain(f.aliases().iter().map(String::as_str)) {
                assert_eq!(name, name.to_lowercase());
                assert!(seen.insert(name.to_string()), "duplicate function name {name}");
            }
        }
        assert!(functions.len() >= 40);
    }

    /// Every function over hostile inputs (extreme values, NULLs, multi-byte text, broken
    /// patterns) in every type combination it accepts: errors are fine, panics are not.
    #[test]
    fn no_input_panics() {
        use arrow::array::{
            ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int32Array, Int64Array, StringArray,
            TimestampMillisecondArray, TimestampNanosecondArray, TimestampSecondArray,
        };
        use datafusion_expr::ColumnarValue;
        let strings = |v: [Option<&str>; 6]| -> ArrayRef { Arc::new(StringArray::from(v.to_vec())) };
        let pool: Vec<ArrayRef> = vec![
            strings([Some(""), Some("DAY"), Some("MONTH"), Some("😀€ä"), Some("[("), None]),
            strings([Some("YEAR"), Some("QUARTER"), Some("yyyy-MM-dd HH:mm:ss"), Some("x*"), Some("\\"), Some("WEEK")]),
            strings([
                Some("2024-03-10 10:00:00"),
                Some("€'"),
                Some("SECOND"),
                Some("EEEE D w Y u"),
                Some("(?<n>a)b"),
                Some("9999999999-99-99 99:99:99"),
            ]),
            Arc::new(Int64Array::from(vec![Some(i64::MIN), Some(-1), Some(0), Some(1), Some(i64::MAX), None])),
            Arc::new(Int32Array::from(vec![Some(i32::MIN), Some(-1), Some(0), Some(5), Some(i32::MAX), None])),
            Arc::new(TimestampMillisecondArray::from(vec![
                Some(i64::MIN),
                Some(-1),
                Some(0),
                Some(1),
                Some(i64::MAX),
                None,
            ])),
            Arc::new(TimestampNanosecondArray::from(vec![
                Some(i64::MIN),
                Some(-1),
                Some(0),
                Some(1),
                Some(i64::MAX),
                None,
            ])),
            Arc::new(TimestampSecondArray::from(vec![
                Some(i64::MIN),
                Some(-1),
                Some(0),
                Some(1),
                Some(i64::MAX),
                None,
            ])),
            Arc::new(Date32Array::from(vec![Some(i32::MIN), Some(-1), Some(0), Some(1), Some(i32::MAX), None])),
            Arc::new(
                Decimal128Array::from(vec![
                    Some(10_i128.pow(38) - 1),
                    Some(1 - 10_i128.pow(38)),
                    Some(0),
                    Some(1),
                    Some(-1),
                    None,
                ])
                .with_precision_and_scale(38, 10)
                .expect("valid decimal type"),
            ),
            Arc::new(Float64Array::from(vec![
                Some(f64::NAN),
                Some(f64::INFINITY),
                Some(f64::NEG_INFINITY),
                Some(0.0),
                Some(1e308),
                None,
            ])),
            Arc::new(BooleanArray::from(vec![Some(true), Some(false), None, Some(true), Some(false), None])),
        ];
        let mut calls = 0;
        for f in flink_scalar_functions() {
            for arity in 0..=3usize {
                let combos = pool.len().pow(arity as u32);
                for combo in 0..combos {
                    let mut args = Vec::with_capacity(arity);
                    let mut c = combo;
                    for _ in 0..arity {
                        args.push(ColumnarValue::Array(Arc::clone(&pool[c % pool.len()])));
                        c /= pool.len();
                    }
                    // Errors (rejected types, bad patterns, division by zero) are expected.
                    if common::test_util::call(&f, args.clone(), 6).is_ok() {
                        calls += 1;
                    }
                    // The same rows as literals exercise the compile-once and literal-typed paths.
                    for row in [0, 4] {
                        let scalars = args
                            .iter()
                            .map(|a| match a {
                                ColumnarValue::Array(array) => {
                                    datafusion_common::ScalarValue::try_from_array(array, row)
                                        .map(ColumnarValue::Scalar)
                                }
                                ColumnarValue::Scalar(s) => Ok(ColumnarValue::Scalar(s.clone())),
                            })
                            .collect::<datafusion_common::Result<Vec<_>>>()
                            .expect("pool rows convert to scalars");
                        let _ = common::test_util::call(&f, scalars, 1);
                    }
                }
            }
        }
        assert!(calls > 1000, "only {calls} calls succeeded");
    }
}
