//! Flink's temporal functions: DATE_FORMAT, EXTRACT and its shorthands (HOUR, YEAR, ...),
//! FLOOR/CEIL to a time unit, TIMESTAMPADD, TIMESTAMPDIFF, UNIX_TIMESTAMP, TO_TIMESTAMP and
//! FROM_UNIXTIME. Session time zone is UTC, so TIMESTAMP values are read as UTC wall clock.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int32Array, Int64Array, StringBuilder};
use arrow::datatypes::{DataType, TimeUnit};
use datafusion_common::{Result, ScalarValue, exec_err, plan_err};
use datafusion_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, Volatility};

use crate::calendar::{days_from_civil, days_in_month};

use super::calendar::{
    TimeUnitRange, add_months_to_date, add_months_to_millis, date_floor_ceil, extract_from_date,
    extract_from_timestamp, subtract_months_dates, subtract_months_millis, timestamp_floor_ceil,
};
use super::common::{
    CompiledArg, MILLIS_PER_DAY, Millis, Strings, Temporal, TemporalKind, coerce_integer, coerce_string,
    coerce_temporal, date_array, eval_arrays, expect_arg_count, flink_udf, from_millis, int64_values, is_integer,
    is_string, literal_string, timestamp_array,
};
use super::java_datetime::{DateTimeFields, Flavor, JavaPattern, sql_date_value_of, sql_timestamp_value_of};

const DEFAULT_TIMESTAMP_PATTERN: &str = "yyyy-MM-dd HH:mm:ss";

pub(crate) fn functions() -> Vec<Arc<ScalarUDF>> {
    let immutable = Volatility::Immutable;
    vec![
        flink_udf("date_format", &[], immutable, coerce_date_format, return_utf8, invoke_date_format),
        flink_udf("year", &[], immutable, coerce_one_temporal, return_int64, invoke_year),
        flink_udf("quarter", &[], immutable, coerce_one_temporal, return_int64, invoke_quarter),
        flink_udf("month", &[], immutable, coerce_one_temporal, return_int64, invoke_month),
        flink_udf("week", &[], immutable, coerce_one_temporal, return_int64, invoke_week),
        flink_udf("dayofyear", &[], immutable, coerce_one_temporal, return_int64, invoke_dayofyear),
        flink_udf("dayofmonth", &[], immutable, coerce_one_temporal, return_int64, invoke_dayofmonth),
        flink_udf("dayofweek", &[], immutable, coerce_one_temporal, return_int64, invoke_dayofweek),
        flink_udf("hour", &[], immutable, coerce_one_temporal, return_int64, invoke_hour),
        flink_udf("minute", &[], immutable, coerce_one_temporal, return_int64, invoke_minute),
        flink_udf("second", &[], immutable, coerce_one_temporal, return_int64, invoke_second),
        flink_udf("date_part", &["datepart"], immutable, coerce_date_part, return_date_part, invoke_date_part),
        flink_udf("weir_floor_time", &[], immutable, coerce_floor_ceil, return_floor_ceil, invoke_floor_time),
        flink_udf("weir_ceil_time", &[], immutable, coerce_floor_ceil, return_floor_ceil, invoke_ceil_time),
        flink_udf("timestampadd", &[], immutable, coerce_timestampadd, return_timestampadd, invoke_timestampadd),
        flink_udf("timestampdiff", &[], immutable, coerce_timestampdiff, return_timestampdiff, invoke_timestampdiff),
        // Volatile because UNIX_TIMESTAMP() reads the clock and two-digit years depend on it.
        flink_udf(
            "unix_timestamp",
            &[],
            Volatility::Volatile,
            coerce_unix_timestamp,
            return_int64,
            invoke_unix_timestamp,
        ),
        flink_udf("to_timestamp", &[], immutable, coerce_to_timestamp, return_timestamp_ms, invoke_to_timestamp),
        flink_udf("from_unixtime", &[], immutable, coerce_from_unixtime, return_utf8, invoke_from_unixtime),
    ]
}

fn return_utf8(_: &[DataType], _: &[Option<&ScalarValue>]) -> Result<DataType> {
    Ok(DataType::Utf8)
}

fn return_int64(_: &[DataType], _: &[Option<&ScalarValue>]) -> Result<DataType> {
    Ok(DataType::Int64)
}

fn return_timestamp_ms(_: &[DataType], _: &[Option<&ScalarValue>]) -> Result<DataType> {
    Ok(DataType::Timestamp(TimeUnit::Millisecond, None))
}

fn compile_dtf(p: &str) -> Result<JavaPattern, String> {
    JavaPattern::compile(p, Flavor::DateTimeFormatter)
}

fn compile_sdf(p: &str) -> Result<JavaPattern, String> {
    JavaPattern::compile(p, Flavor::SimpleDateFormat)
}

fn default_sdf() -> Result<JavaPattern> {
    compile_sdf(DEFAULT_TIMESTAMP_PATTERN).or_else(|e| exec_err!("{e}"))
}

fn pattern_or_error(p: Result<Arc<JavaPattern>, String>) -> Result<Arc<JavaPattern>> {
    p.or_else(|e| exec_err!("{e}"))
}

// ------------------------------------------------------------------------------------------
// DATE_FORMAT
// ------------------------------------------------------------------------------------------

fn coerce_date_format(name: &str, types: &[DataType]) -> Result<Vec<DataType>> {
    expect_arg_count(name, types, 2, 3)?;
    let first = match &types[0] {
        t if is_string(t) => t.clone(),
        DataType::Null => DataType::Utf8,
        t if types.len() == 2 => coerce_temporal(name, t)?,
        t => return plan_err!("{name} with three arguments expects a string, got {t}"),
    };
    let mut out = vec![first];
    out.extend(types[1..].iter().map(coerce_string));
    Ok(out)
}

fn invoke_date_format(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    eval_arrays(args, |arrays, len| {
        let mut out = StringBuilder::with_capacity(len, len * 20);
        if is_string(arrays[0].data_type()) || arrays.len() == 3 {
            // The string form parses with SimpleDateFormat and formats with it too.
            let input = Strings::new(&arrays[0])?;
            let compile = compile_sdf;
            let (mut from, to_index) =
                if arrays.len() == 3 { (Some(CompiledArg::new(args, 1, &arrays[1], &compile)?), 2) } else { (None, 1) };
            let default_from = Arc::new(default_sdf()?);
            let mut to = CompiledArg::new(args, to_index, &arrays[to_index], &compile)?;
            for i in 0..len {
                let from_pattern = match &mut from {
                    Some(f) => f.get(i).map(pattern_or_error).transpose()?,
                    None => Some(default_from.clone()),
                };
                let to_pattern = to.get(i).map(pattern_or_error).transpose()?;
                let value = match (input.get(i), from_pattern, to_pattern) {
                    (Some(s), Some(from), Some(to)) => match from.parse_lenient(s) {
                        Some(ms) => Some(to.format(&DateTimeFields::from_millis(ms, 0)).or_else(|e| exec_err!("{e}"))?),
                        None => None,
                    },
                    _ => None,
                };
                out.append_option(value);
            }
        } else {
            let input = Temporal::new(&arrays[0])?;
            let compile = compile_dtf;
            let mut fmt = CompiledArg::new(args, 1, &arrays[1], &compile)?;
            for i in 0..len {
                let pattern = fmt.get(i).map(pattern_or_error).transpose()?;
                let value = match (input.millis(i), pattern) {
                    (Some(m), Some(p)) => Some(
                        p.format(&DateTimeFields::from_millis(m.millis, m.nanos_of_milli))
                            .or_else(|e| exec_err!("{e}"))?,
                    ),
                    _ => None,
                };
                out.append_option(value);
            }
        }
        Ok(Arc::new(out.finish()) as ArrayRef)
    })
}

// ------------------------------------------------------------------------------------------
// EXTRACT and its shorthands
// ------------------------------------------------------------------------------------------

fn coerce_one_temporal(name: &str, types: &[DataType]) -> Result<Vec<DataType>> {
    expect_arg_count(name, types, 1, 1)?;
    Ok(vec![coerce_temporal(name, &types[0])?])
}

fn extract_value(t: &Temporal, i: usize, unit: TimeUnitRange) -> Option<i64> {
    match t.kind {
        TemporalKind::Date => {
            let days = t.raw(i)?;
            match unit {
                // Flink applies the millisecond arithmetic to the day number itself here.
                TimeUnitRange::Hour
                | TimeUnitRange::Minute
                | TimeUnitRange::Second
                | TimeUnitRange::Millisecond
                | TimeUnitRange::Microsecond
                | TimeUnitRange::Nanosecond => extract_from_timestamp(unit, days, 0),
                _ => extract_from_date(unit, days),
            }
        }
        TemporalKind::Timestamp(..) => {
            let m = t.millis(i)?;
            extract_from_timestamp(unit, m.millis, m.nanos_of_milli)
        }
    }
}

fn extract_fixed(args: &ScalarFunctionArgs, unit: TimeUnitRange) -> Result<ColumnarValue> {
    eval_arrays(args, |arrays, len| {
        let t = Temporal::new(&arrays[0])?;
        let out: Int64Array = (0..len).map(|i| extract_value(&t, i, unit)).collect();
        Ok(Arc::new(out) as ArrayRef)
    })
}

macro_rules! extract_shorthand {
    ($($name:ident => $unit:ident),* $(,)?) => {
        $(fn $name(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
            extract_fixed(args, TimeUnitRange::$unit)
        })*
    };
}

extract_shorthand! {
    invoke_year => Year,
    invoke_quarter => Quarter,
    invoke_month => Month,
    invoke_week => Week,
    invoke_dayofyear => Doy,
    invoke_dayofmonth => Day,
    invoke_dayofweek => Dow,
    invoke_hour => Hour,
    invoke_minute => Minute,
    invoke_second => Second,
}

fn coerce_date_part(name: &str, types: &[DataType]) -> Result<Vec<DataType>> {
    expect_arg_count(name, types, 2, 2)?;
    Ok(vec![coerce_string(&types[0]), coerce_temporal(name, &types[1])?])
}

fn parse_unit(name: &str, unit: &str) -> Result<TimeUnitRange> {
    match TimeUnitRange::parse(unit) {
        Some(u) => Ok(u),
        None => exec_err!("{name}: unsupported time unit '{unit}'"),
    }
}

fn return_date_part(_: &[DataType], literals: &[Option<&ScalarValue>]) -> Result<DataType> {
    if let Some(unit) = literal_string(literals.first().copied().flatten())
        && TimeUnitRange::parse(&unit).is_none()
    {
        return plan_err!("date_part: unsupported time unit '{unit}'");
    }
    Ok(DataType::Int64)
}

fn invoke_date_part(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    eval_arrays(args, |arrays, len| {
        let units = Strings::new(&arrays[0])?;
        let t = Temporal::new(&arrays[1])?;
        let mut out = Vec::with_capacity(len);
        for i in 0..len {
            out.push(match units.get(i) {
                Some(u) => extract_value(&t, i, parse_unit("date_part", u)?),
                None => None,
            });
        }
        Ok(Arc::new(Int64Array::from(out)) as ArrayRef)
    })
}

// ------------------------------------------------------------------------------------------
// FLOOR / CEIL (timepoint TO unit)
// ------------------------------------------------------------------------------------------

fn coerce_floor_ceil(name: &str, types: &[DataType]) -> Result<Vec<DataType>> {
    expect_arg_count(name, types, 2, 2)?;
    Ok(vec![coerce_temporal(name, &types[0])?, coerce_string(&types[1])])
}

fn return_floor_ceil(types: &[DataType], literals: &[Option<&ScalarValue>]) -> Result<DataType> {
    if let Some(unit) = literal_string(literals.get(1).copied().flatten())
        && floor_unit(&unit).is_err()
    {
        return plan_err!("FLOOR/CEIL: unsupported time unit '{unit}'");
    }
    Ok(types[0].clone())
}

fn floor_unit(unit: &str) -> Result<TimeUnitRange> {
    let parsed = parse_unit("FLOOR/CEIL", unit)?;
    match parsed {
        TimeUnitRange::Millennium
        | TimeUnitRange::Century
        | TimeUnitRange::Decade
        | TimeUnitRange::Year
        | TimeUnitRange::Quarter
        | TimeUnitRange::Month
        | TimeUnitRange::Week
        | TimeUnitRange::Day
        | TimeUnitRange::Hour
        | TimeUnitRange::Minute
        | TimeUnitRange::Second
        | TimeUnitRange::Millisecond => Ok(parsed),
        _ => exec_err!("FLOOR/CEIL: unsupported time unit '{unit}'"),
    }
}

fn floor_ceil(args: &ScalarFunctionArgs, floor: bool) -> Result<ColumnarValue> {
    eval_arrays(args, |arrays, len| {
        let t = Temporal::new(&arrays[0])?;
        let units = Strings::new(&arrays[1])?;
        let mut out = Vec::with_capacity(len);
        for i in 0..len {
            let Some(unit) = units.get(i) else {
                out.push(None);
                continue;
            };
            let unit = floor_unit(unit)?;
            out.push(match &t.kind {
                TemporalKind::Date => t.raw(i).and_then(|d| date_floor_ceil(unit, d, floor)),
                TemporalKind::Timestamp(ts_unit, _) => t.millis(i).and_then(|m| {
                    let rounded = timestamp_floor_ceil(unit, m.millis, floor)?;
                    from_millis(Millis { millis: rounded, nanos_of_milli: 0 }, *ts_unit)
                }),
            });
        }
        match t.kind {
            TemporalKind::Date => Ok(date_array(out.into_iter())),
            TemporalKind::Timestamp(..) => timestamp_array(Int64Array::from(out), arrays[0].data_type()),
        }
    })
}

fn invoke_floor_time(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    floor_ceil(args, true)
}

fn invoke_ceil_time(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    floor_ceil(args, false)
}

// ------------------------------------------------------------------------------------------
// TIMESTAMPADD / TIMESTAMPDIFF
// ------------------------------------------------------------------------------------------

fn coerce_timestampadd(name: &str, types: &[DataType]) -> Result<Vec<DataType>> {
    expect_arg_count(name, types, 3, 3)?;
    Ok(vec![coerce_string(&types[0]), coerce_integer(name, &types[1])?, coerce_temporal(name, &types[2])?])
}

fn add_unit(unit: &str) -> Result<TimeUnitRange> {
    let parsed = parse_unit("TIMESTAMPADD", unit)?;
    if parsed.fixed_millis().is_some() || parsed.months().is_some() {
        Ok(parsed)
    } else {
        exec_err!("TIMESTAMPADD: unsupported time unit '{unit}'")
    }
}

fn is_sub_day(unit: TimeUnitRange) -> bool {
    matches!(unit, TimeUnitRange::Hour | TimeUnitRange::Minute | TimeUnitRange::Second | TimeUnitRange::Millisecond)
}

/// A DATE plus a sub-day unit becomes a TIMESTAMP; Flink types it TIMESTAMP(6), which Arrow
/// spells with microseconds so it prints with six fraction digits.
fn return_timestampadd(types: &[DataType], literals: &[Option<&ScalarValue>]) -> Result<DataType> {
    let unit = literal_string(literals.first().copied().flatten());
    if let Some(u) = &unit
        && add_unit(u).is_err()
    {
        return plan_err!("TIMESTAMPADD: unsupported time unit '{u}'");
    }
    match (&types[2], unit) {
        (DataType::Date32, Some(u)) => Ok(if add_unit(&u).is_ok_and(is_sub_day) {
            DataType::Timestamp(TimeUnit::Microsecond, None)
        } else {
            DataType::Date32
        }),
        (DataType::Date32, None) => plan_err!("TIMESTAMPADD on a DATE needs a literal time unit"),
        (t, _) => Ok(t.clone()),
    }
}

fn invoke_timestampadd(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    let return_type = args.return_type().clone();
    eval_arrays(args, |arrays, len| {
        let units = Strings::new(&arrays[0])?;
        let counts = int64_values(&arrays[1])?;
        let t = Temporal::new(&arrays[2])?;
        let mut out = Vec::with_capacity(len);
        for i in 0..len {
            let (Some(unit), true) = (units.get(i), counts.is_valid(i)) else {
                out.push(None);
                continue;
            };
            let unit = add_unit(unit)?;
            let n = counts.value(i);
            out.push(match (&t.kind, &return_type) {
                (TemporalKind::Date, DataType::Date32) => t.raw(i).and_then(|days| add_to_date(days, unit, n)),
                (TemporalKind::Date, _) => t.raw(i).and_then(|days| {
                    let millis = days.checked_mul(MILLIS_PER_DAY)?.checked_add(n.checked_mul(unit.fixed_millis()?)?)?;
                    millis.checked_mul(1000)
                }),
                (TemporalKind::Timestamp(ts_unit, _), _) => t.millis(i).and_then(|m| {
                    let millis = match (unit.fixed_millis(), unit.months()) {
                        (Some(step), _) => m.millis.checked_add(n.checked_mul(step)?)?,
                        (None, Some(months)) => add_months_to_millis(m.millis, n.checked_mul(months)?)?,
                        (None, None) => return None,
                    };
                    from_millis(Millis { millis, nanos_of_milli: m.nanos_of_milli }, *ts_unit)
                }),
            });
        }
        match return_type {
            DataType::Date32 => Ok(date_array(out.into_iter())),
            ref t => timestamp_array(Int64Array::from(out), t),
        }
    })
}

fn add_to_date(days: i64, unit: TimeUnitRange, n: i64) -> Option<i64> {
    match unit {
        TimeUnitRange::Day => days.checked_add(n),
        TimeUnitRange::Week => days.checked_add(n.checked_mul(7)?),
        _ => add_months_to_date(days, n.checked_mul(unit.months()?)?),
    }
}

fn coerce_timestampdiff(name: &str, types: &[DataType]) -> Result<Vec<DataType>> {
    expect_arg_count(name, types, 3, 3)?;
    Ok(vec![coerce_string(&types[0]), coerce_temporal(name, &types[1])?, coerce_temporal(name, &types[2])?])
}

fn diff_unit(unit: &str) -> Result<TimeUnitRange> {
    let parsed = parse_unit("TIMESTAMPDIFF", unit)?;
    match parsed {
        TimeUnitRange::Year
        | TimeUnitRange::Quarter
        | TimeUnitRange::Month
        | TimeUnitRange::Week
        | TimeUnitRange::Day
        | TimeUnitRange::Hour
        | TimeUnitRange::Minute
        | TimeUnitRange::Second => Ok(parsed),
        _ => exec_err!("TIMESTAMPDIFF: unit '{unit}' can not be applied to the timestamp difference function"),
    }
}

fn return_timestampdiff(_: &[DataType], literals: &[Option<&ScalarValue>]) -> Result<DataType> {
    if let Some(u) = literal_string(literals.first().copied().flatten())
        && diff_unit(&u).is_err()
    {
        return plan_err!("TIMESTAMPDIFF: unsupported time unit '{u}'");
    }
    Ok(DataType::Int32)
}

fn invoke_timestampdiff(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    eval_arrays(args, |arrays, len| {
        let units = Strings::new(&arrays[0])?;
        let t1 = Temporal::new(&arrays[1])?;
        let t2 = Temporal::new(&arrays[2])?;
        let both_dates = t1.kind == TemporalKind::Date && t2.kind == TemporalKind::Date;
        let mut out = Vec::with_capacity(len);
        for i in 0..len {
            let Some(unit) = units.get(i) else {
                out.push(None);
                continue;
            };
            let unit = diff_unit(unit)?;
            let (Some(a), Some(b)) = (t1.millis(i), t2.millis(i)) else {
                out.push(None);
                continue;
            };
            // Java narrows the long result to int, wrapping on overflow.
            out.push(Some(match (unit.months(), unit.fixed_millis()) {
                (Some(months), _) if both_dates => {
                    let (d1, d2) = (t1.raw(i).unwrap_or(0), t2.raw(i).unwrap_or(0));
                    (subtract_months_dates(d2, d1) / months) as i32
                }
                (Some(months), _) => (subtract_months_millis(b.millis, a.millis) / months) as i32,
                (None, Some(step)) => (b.millis.wrapping_sub(a.millis) / step) as i32,
                (None, None) => return exec_err!("TIMESTAMPDIFF: unsupported time unit"),
            }));
        }
        Ok(Arc::new(Int32Array::from(out)) as ArrayRef)
    })
}

// ------------------------------------------------------------------------------------------
// UNIX_TIMESTAMP / TO_TIMESTAMP / FROM_UNIXTIME
// ------------------------------------------------------------------------------------------

fn coerce_unix_timestamp(name: &str, types: &[DataType]) -> Result<Vec<DataType>> {
    expect_arg_count(name, types, 0, 2)?;
    match types {
        [] => Ok(vec![]),
        [t] if matches!(t, DataType::Timestamp(..) | DataType::Date32) => Ok(vec![t.clone()]),
        _ => Ok(types.iter().map(coerce_string).collect()),
    }
}

/// What Flink returns when UNIX_TIMESTAMP cannot parse its input.
pub(crate) const UNPARSABLE_UNIX_TIMESTAMP: i64 = i64::MIN;

fn invoke_unix_timestamp(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    if args.args.is_empty() {
        let now = chrono::Utc::now().timestamp_millis() / 1000;
        return Ok(ColumnarValue::Scalar(ScalarValue::Int64(Some(now))));
    }
    eval_arrays(args, |arrays, len| {
        if !is_string(arrays[0].data_type()) && arrays[0].data_type() != &DataType::Null {
            let t = Temporal::new(&arrays[0])?;
            let out: Int64Array = (0..len).map(|i| t.millis(i).map(|m| m.millis / 1000)).collect();
            return Ok(Arc::new(out) as ArrayRef);
        }
        let input = Strings::new(&arrays[0])?;
        let compile = compile_sdf;
        let default_pattern = Arc::new(default_sdf()?);
        let mut formats = match arrays.get(1) {
            Some(a) => Some(CompiledArg::new(args, 1, a, &compile)?),
            None => None,
        };
        let mut out = Vec::with_capacity(len);
        for i in 0..len {
            let pattern = match &mut formats {
                Some(f) => f.get(i).map(pattern_or_error).transpose()?,
                None => Some(default_pattern.clone()),
            };
            out.push(match (input.get(i), pattern) {
                (Some(s), Some(p)) => Some(match p.parse_lenient(s) {
                    Some(ms) => ms / 1000,
                    None => UNPARSABLE_UNIX_TIMESTAMP,
                }),
                _ => None,
            });
        }
        Ok(Arc::new(Int64Array::from(out)) as ArrayRef)
    })
}

fn coerce_to_timestamp(name: &str, types: &[DataType]) -> Result<Vec<DataType>> {
    expect_arg_count(name, types, 1, 2)?;
    match types {
        [t] if is_integer(t) => Ok(vec![DataType::Int64]),
        _ => Ok(types.iter().map(coerce_string).collect()),
    }
}

/// Flink's `DEFAULT_TIMESTAMP_FORMATTER`: `yyyy-[MM][M]-[dd][d]` optionally followed by
/// ` [HH][H]:[mm][m]:[ss][s]` and a fraction of up to nine digits; the whole text must match.
pub(crate) fn parse_default_timestamp(s: &str) -> Option<(i64, i64)> {
    let b = s.as_bytes();
    let mut pos = 0;
    let number = |pos: &mut usize, min: usize, max: usize| -> Option<i64> {
        let start = *pos;
        while *pos < b.len() && *pos - start < max && b[*pos].is_ascii_digit() {
            *pos += 1;
        }
        if *pos - start < min {
            return None;
        }
        s[start..*pos].parse().ok()
    };
    let expect = |pos: &mut usize, c: u8| -> Option<()> { (b.get(*pos) == Some(&c)).then(|| *pos += 1) };
    let year = number(&mut pos, 4, 4)?;
    expect(&mut pos, b'-')?;
    let month = number(&mut pos, 1, 2)?;
    expect(&mut pos, b'-')?;
    let day = number(&mut pos, 1, 2)?;
    let (mut hour, mut minute, mut second, mut nanos) = (0, 0, 0, 0);
    if pos < b.len() {
        expect(&mut pos, b' ')?;
        hour = number(&mut pos, 1, 2)?;
        expect(&mut pos, b':')?;
        minute = number(&mut pos, 1, 2)?;
        expect(&mut pos, b':')?;
        second = number(&mut pos, 1, 2)?;
        if pos < b.len() {
            expect(&mut pos, b'.')?;
            let start = pos;
            let fraction = number(&mut pos, 0, 9).unwrap_or(0);
            let digits = pos - start;
            nanos = fraction * 10_i64.pow(9 - digits as u32);
        }
    }
    if pos != b.len()
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let day = day.min(days_in_month(year, month));
    let millis =
        (days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second) * 1000 + nanos / 1_000_000;
    Some((millis, nanos % 1_000_000))
}

fn invoke_to_timestamp(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    eval_arrays(args, |arrays, len| {
        let ts_type = DataType::Timestamp(TimeUnit::Millisecond, None);
        if arrays[0].data_type() == &DataType::Int64 {
            // TO_TIMESTAMP(BIGINT) reads epoch milliseconds.
            return timestamp_array(int64_values(&arrays[0])?, &ts_type);
        }
        let input = Strings::new(&arrays[0])?;
        let compile = compile_dtf;
        let mut formats = match arrays.get(1) {
            Some(a) => Some(CompiledArg::new(args, 1, a, &compile)?),
            None => None,
        };
        let mut out = Vec::with_capacity(len);
        for i in 0..len {
            let Some(s) = input.get(i) else {
                out.push(None);
                continue;
            };
            // TO_TIMESTAMP returns TIMESTAMP(3): sub-millisecond digits are dropped.
            let parsed = match &mut formats {
                None => parse_default_timestamp(s).map(|(ms, _)| ms),
                Some(f) => match f.get(i).map(pattern_or_error).transpose()? {
                    None => None,
                    Some(p) => p.parse_strict(s).map(|(ms, _)| ms).or_else(|| fallback_timestamp(s)),
                },
            };
            out.push(parsed);
        }
        timestamp_array(Int64Array::from(out), &ts_type)
    })
}

/// What Flink tries when a formatted parse fails: `Timestamp.valueOf` when the text has a
/// space, `Date.valueOf` otherwise, both ignoring the format.
fn fallback_timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.contains(' ') {
        sql_timestamp_value_of(s).map(|(ms, _)| ms)
    } else {
        sql_date_value_of(s).and_then(|days| days.checked_mul(MILLIS_PER_DAY))
    }
}

fn coerce_from_unixtime(name: &str, types: &[DataType]) -> Result<Vec<DataType>> {
    expect_arg_count(name, types, 1, 2)?;
    let mut out = vec![coerce_integer(name, &types[0])?];
    out.extend(types[1..].iter().map(coerce_string));
    Ok(out)
}

fn invoke_from_unixtime(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    eval_arrays(args, |arrays, len| {
        let seconds = int64_values(&arrays[0])?;
        let compile = compile_sdf;
        let default_pattern = Arc::new(default_sdf()?);
        let mut formats = match arrays.get(1) {
            Some(a) => Some(CompiledArg::new(args, 1, a, &compile)?),
            None => None,
        };
        let mut out = StringBuilder::with_capacity(len, len * 19);
        for i in 0..len {
            let pattern = match &mut formats {
                Some(f) => f.get(i).map(pattern_or_error).transpose()?,
                None => Some(default_pattern.clone()),
            };
            let value = match (seconds.is_valid(i), pattern) {
                (true, Some(p)) => {
                    // Java multiplies by 1000 in long arithmetic, wrapping on overflow.
                    let millis = seconds.value(i).wrapping_mul(1000);
                    Some(p.format(&DateTimeFields::from_millis(millis, 0)).or_else(|e| exec_err!("{e}"))?)
                }
                _ => None,
            };
            out.append_option(value);
        }
        Ok(Arc::new(out.finish()) as ArrayRef)
    })
}

#[cfg(test)]
mod tests {
    use super::super::common::test_util::{date, scalar, string_of, ts_ms, utf8};
    use super::*;

    fn udf(name: &str) -> Arc<ScalarUDF> {
        functions().into_iter().find(|f| f.name() == name).expect("function is registered")
    }

    fn ts_value(v: &ScalarValue) -> Option<i64> {
        match v {
            ScalarValue::TimestampMillisecond(v, _) | ScalarValue::TimestampMicrosecond(v, _) => *v,
            _ => panic!("expected a timestamp, got {v:?}"),
        }
    }

    #[test]
    fn date_format_timestamp_and_string() {
        let f = udf("date_format");
        let out = scalar(&f, vec![ts_ms("2024-03-10 10:00:00"), utf8("yyyy/MM/dd HH:mm")]).unwrap();
        assert_eq!(string_of(&out).as_deref(), Some("2024/03/10 10:00"));
        let out = scalar(&f, vec![utf8("2018-03-14 01:02:03"), utf8("yyyy/MM/dd HH:mm:ss")]).unwrap();
        assert_eq!(string_of(&out).as_deref(), Some("2018/03/14 01:02:03"));
        let out =
            scalar(&f, vec![utf8("2018-03-14 01:02:03"), utf8("yyyy-MM-dd HH:mm:ss"), utf8("yyyy/MM/dd HH:mm:ss")])
                .unwrap();
        assert_eq!(string_of(&out).as_deref(), Some("2018/03/14 01:02:03"));
        let out = scalar(&f, vec![utf8("invalid value"), utf8("yyyy/MM/dd HH:mm:ss")]).unwrap();
        assert_eq!(string_of(&out), None);
        let out = scalar(&f, vec![ScalarValue::Utf8(None), utf8("yyyy")]).unwrap();
        assert_eq!(string_of(&out), None);
        // An unknown pattern letter fails the query, as DateTimeFormatter.ofPattern does.
        assert!(scalar(&f, vec![ts_ms("2024-03-10 10:00:00"), utf8("yyyy-bb")]).is_err());
    }

    #[test]
    fn date_format_on_arrays_with_varying_patterns() {
        let f = udf("date_format");
        let ts: ArrayRef =
            Arc::new(arrow::array::TimestampMillisecondArray::from(vec![Some(0), None, Some(86_400_000)]));
        let fmts: ArrayRef = Arc::new(arrow::array::StringArray::from(vec![Some("yyyy"), Some("MM"), Some("dd")]));
        let out =
            super::super::common::test_util::call(&f, vec![ColumnarValue::Array(ts), ColumnarValue::Array(fmts)], 3)
                .unwrap();
        let ColumnarValue::Array(a) = out else { panic!("expected an array") };
        let a = a.as_any().downcast_ref::<arrow::array::StringArray>().unwrap();
        assert_eq!(a.value(0), "1970");
        assert!(a.is_null(1));
        assert_eq!(a.value(2), "02");
    }

    #[test]
    fn extract_shorthands_match_flink_docs() {
        let d = date("1994-09-27");
        let check = |name: &str, v: ScalarValue, expected: i64| {
            assert_eq!(scalar(&udf(name), vec![v]).unwrap(), ScalarValue::Int64(Some(expected)), "{name}");
        };
        check("year", d.clone(), 1994);
        check("quarter", d.clone(), 3);
        check("month", d.clone(), 9);
        check("week", d.clone(), 39);
        check("dayofyear", d.clone(), 270);
        check("dayofmonth", d.clone(), 27);
        check("dayofweek", d.clone(), 3);
        let t = ts_ms("1994-09-27 13:14:15");
        check("hour", t.clone(), 13);
        check("minute", t.clone(), 14);
        check("second", t, 15);
        assert_eq!(
            scalar(&udf("hour"), vec![ScalarValue::TimestampMillisecond(None, None)]).unwrap(),
            ScalarValue::Int64(None)
        );
    }

    #[test]
    fn date_part_units() {
        let f = udf("date_part");
        let t = ts_ms("1996-11-10 06:55:44.333");
        let check = |unit: &str, expected: i64| {
            assert_eq!(scalar(&f, vec![utf8(unit), t.clone()]).unwrap(), ScalarValue::Int64(Some(expected)), "{unit}");
        };
        check("SECOND", 44);
        check("second", 44);
        check("MILLISECOND", 333);
        check("MICROSECOND", 333_000);
        check("DOW", 1);
        check("DOY", 315);
        check("WEEK", 45);
        check("QUARTER", 4);
        check("EPOCH", 847_608_944);
        assert!(scalar(&f, vec![utf8("FORTNIGHT"), t]).is_err());
    }

    #[test]
    fn floor_and_ceil() {
        let floor = udf("weir_floor_time");
        let ceil = udf("weir_ceil_time");
        let t = ts_ms("1996-11-10 06:55:44.333");
        let expect = |f: &Arc<ScalarUDF>, unit: &str, expected: &str| {
            let out = scalar(f, vec![t.clone(), utf8(unit)]).unwrap();
            assert_eq!(ts_value(&out), ts_value(&ts_ms(expected)), "{} {unit}", f.name());
        };
        expect(&floor, "YEAR", "1996-01-01 00:00:00");
        expect(&floor, "MONTH", "1996-11-01 00:00:00");
        expect(&floor, "DAY", "1996-11-10 00:00:00");
        expect(&floor, "HOUR", "1996-11-10 06:00:00");
        expect(&floor, "MINUTE", "1996-11-10 06:55:00");
        expect(&floor, "SECOND", "1996-11-10 06:55:44");
        expect(&ceil, "YEAR", "1997-01-01 00:00:00");
        expect(&ceil, "MONTH", "1996-12-01 00:00:00");
        expect(&ceil, "DAY", "1996-11-11 00:00:00");
        expect(&ceil, "HOUR", "1996-11-10 07:00:00");
        expect(&ceil, "MINUTE", "1996-11-10 06:56:00");
        expect(&ceil, "SECOND", "1996-11-10 06:55:45");
        expect(&ceil, "WEEK", "1996-11-10 00:00:00");
        expect(&floor, "QUARTER", "1996-10-01 00:00:00");
        // Already aligned values stay put.
        let aligned = ts_ms("1996-11-10 07:00:00");
        assert_eq!(scalar(&ceil, vec![aligned.clone(), utf8("HOUR")]).unwrap(), aligned);
        let d = scalar(&ceil, vec![date("1996-11-10"), utf8("MONTH")]).unwrap();
        assert_eq!(d, date("1996-12-01"));
        assert!(scalar(&floor, vec![t, utf8("DOW")]).is_err());
    }

    #[test]
    fn timestampadd_follows_flink_tests() {
        let f = udf("timestampadd");
        let base = ts_ms("2017-11-29 22:58:58.998");
        let expect = |unit: &str, n: i32, expected: &str| {
            let out = scalar(&f, vec![utf8(unit), ScalarValue::Int32(Some(n)), base.clone()]).unwrap();
            assert_eq!(ts_value(&out), ts_value(&ts_ms(expected)), "{unit} {n}");
        };
        expect("YEAR", 1, "2018-11-29 22:58:58.998");
        expect("QUARTER", 3, "2018-08-29 22:58:58.998");
        expect("MONTH", -1000, "1934-07-29 22:58:58.998");
        expect("WEEK", -61, "2016-09-28 22:58:58.998");
        expect("DAY", 3, "2017-12-02 22:58:58.998");
        expect("HOUR", -1000, "2017-10-19 06:58:58.998");
        expect("SQL_TSI_MINUTE", -61, "2017-11-29 21:57:58.998");
        expect("SECOND", -1000, "2017-11-29 22:42:18.998");
        let d = scalar(&f, vec![utf8("MONTH"), ScalarValue::Int32(Some(1)), date("2016-05-31")]).unwrap();
        assert_eq!(d, date("2016-06-30"));
        let d = scalar(&f, vec![utf8("WEEK"), ScalarValue::Int32(Some(-1)), date("2016-03-31")]).unwrap();
        assert_eq!(d, date("2016-03-24"));
        let t = scalar(&f, vec![utf8("HOUR"), ScalarValue::Int32(Some(-1)), date("2016-06-15")]).unwrap();
        assert_eq!(
            t,
            ScalarValue::TimestampMicrosecond(Some(ts_value(&ts_ms("2016-06-14 23:00:00")).unwrap() * 1000), None)
        );
        let n = scalar(&f, vec![utf8("HOUR"), ScalarValue::Int32(None), base]).unwrap();
        assert_eq!(ts_value(&n), None);
    }

    #[test]
    fn timestampdiff_follows_flink_tests() {
        let f = udf("timestampdiff");
        let cases = [
            ("DAY", ts_ms("2018-07-03 11:11:11"), ts_ms("2018-07-05 11:11:11"), 2),
            ("DAY", date("2016-06-15"), ts_ms("2016-06-16 11:11:11"), 1),
            ("HOUR", ts_ms("2016-06-15 11:00:00"), date("2016-06-19"), 85),
            ("HOUR", date("2016-06-15"), date("2016-06-12"), -72),
            ("MINUTE", date("2016-06-15"), ts_ms("2016-06-16 11:11:11"), 2111),
            ("SECOND", ts_ms("2018-07-03 11:11:11"), ts_ms("2018-07-03 11:12:12"), 61),
            ("WEEK", date("2016-08-15"), date("2016-06-18"), -8),
            ("MONTH", ts_ms("2018-07-03 11:11:11"), ts_ms("2018-09-05 11:11:11"), 2),
            ("MONTH", ts_ms("2016-06-15 11:00:00"), date("2018-05-19"), 23),
            ("MONTH", date("2016-06-15"), date("2018-03-18"), 21),
            ("QUARTER", ts_ms("2018-01-03 11:11:11"), ts_ms("2018-09-05 11:11:11"), 2),
            ("QUARTER", date("2016-06-15"), ts_ms("2018-06-16 11:11:11"), 8),
            ("YEAR", date("2016-06-15"), date("2018-06-14"), 1),
        ];
        for (unit, a, b, expected) in cases {
            assert_eq!(scalar(&f, vec![utf8(unit), a, b]).unwrap(), ScalarValue::Int32(Some(expected)), "{unit}");
        }
        let null =
            scalar(&f, vec![utf8("DAY"), ScalarValue::TimestampMillisecond(None, None), ts_ms("2016-02-24 12:42:25")]);
        assert_eq!(null.unwrap(), ScalarValue::Int32(None));
        assert!(scalar(&f, vec![utf8("MILLENNIUM"), date("2016-06-15"), date("2016-06-15")]).is_err());
    }

    #[test]
    fn unix_timestamp_and_back() {
        let f = udf("unix_timestamp");
        assert_eq!(scalar(&f, vec![utf8("1970-01-01 00:00:44")]).unwrap(), ScalarValue::Int64(Some(44)));
        assert_eq!(
            scalar(&f, vec![utf8("2018/03/14 11:00:00"), utf8("yyyy/MM/dd HH:mm:ss")]).unwrap(),
            ScalarValue::Int64(Some(1_521_025_200))
        );
        assert_eq!(
            scalar(&f, vec![utf8("1970-01-01 08:00:01.001 +0800"), utf8("yyyy-MM-dd HH:mm:ss.SSS X")]).unwrap(),
            ScalarValue::Int64(Some(1))
        );
        assert_eq!(
            scalar(&f, vec![utf8("1970-01-01 08:00:01.001"), utf8("yyyy-MM-dd HH:mm:ss.SSS X")]).unwrap(),
            ScalarValue::Int64(Some(UNPARSABLE_UNIX_TIMESTAMP))
        );
        assert_eq!(scalar(&f, vec![ScalarValue::Utf8(None)]).unwrap(), ScalarValue::Int64(None));
        let ScalarValue::Int64(Some(now)) = scalar(&f, vec![]).unwrap() else { panic!("expected now") };
        assert!(now > 1_700_000_000);
        let from = udf("from_unixtime");
        assert_eq!(
            string_of(&scalar(&from, vec![ScalarValue::Int64(Some(44))]).unwrap()).as_deref(),
            Some("1970-01-01 00:00:44")
        );
        assert_eq!(
            string_of(
                &scalar(&from, vec![ScalarValue::Int64(Some(1_521_025_200)), utf8("yyyy-MM-dd HH:mm:ss")]).unwrap()
            )
            .as_deref(),
            Some("2018-03-14 11:00:00")
        );
        assert!(scalar(&from, vec![ScalarValue::Int64(Some(1)), utf8("qq")]).is_err());
    }

    #[test]
    fn to_timestamp_follows_flink_tests() {
        let f = udf("to_timestamp");
        let expect = |args: Vec<ScalarValue>, expected: Option<&str>| {
            let out = scalar(&f, args).unwrap();
            assert_eq!(ts_value(&out), expected.and_then(|e| ts_value(&ts_ms(e))));
        };
        expect(vec![utf8("abc")], None);
        expect(vec![utf8("2017-09-15 00:00:00")], Some("2017-09-15 00:00:00"));
        expect(vec![utf8("2018-03-14 19:00:00.010")], Some("2018-03-14 19:00:00.010"));
        expect(vec![utf8("2017-09-15")], Some("2017-09-15 00:00:00"));
        expect(vec![utf8("20170915000000"), utf8("yyyyMMddHHmmss")], Some("2017-09-15 00:00:00"));
        expect(vec![utf8("2017-09-15"), utf8("yyyy-MM-dd")], Some("2017-09-15 00:00:00"));
        expect(vec![utf8("2000020210"), utf8("yyyyMMddHH")], Some("2000-02-02 10:00:00"));
        expect(vec![utf8("2018-03-14 19:00:00.0"), utf8("yyyy-MM-dd HH:mm:ss")], Some("2018-03-14 19:00:00"));
        expect(vec![utf8("invalid value"), utf8("yyyy-MM-dd")], None);
        expect(vec![ScalarValue::Utf8(None)], None);
        let ms = scalar(&f, vec![ScalarValue::Int64(Some(1_513_135_677_000))]).unwrap();
        assert_eq!(ts_value(&ms), ts_value(&ts_ms("2017-12-13 03:27:57")));
    }
}
