//! Dates, times and timestamps in the text layouts of Flink's formats: `yyyy-MM-dd`,
//! `HH:mm:ss[.fffffffff]`, and timestamps in the SQL (`yyyy-MM-dd HH:mm:ss[.f…]`) or ISO-8601
//! (`yyyy-MM-ddTHH:mm[:ss[.f…]]`) standard, read byte by byte with Java's resolver rules.
//! Calendar arithmetic is [`weir_dataflow::calendar`]'s.

use arrow::datatypes::TimeUnit;
use weir_dataflow::calendar::{days_from_civil, days_in_month};

use super::TimestampFormat;

#[inline]
fn two_digits(text: &[u8], at: usize) -> Option<u32> {
    let tens = text.get(at)?.wrapping_sub(b'0');
    let ones = text.get(at + 1)?.wrapping_sub(b'0');
    (tens <= 9 && ones <= 9).then(|| u32::from(tens) * 10 + u32::from(ones))
}

/// `yyyy-MM-dd` at the start of `text`, as days since the epoch. Java's SMART resolver
/// (Flink's SQL timestamp format) moves a day past the month's end back to its last day;
/// the STRICT one (ISO formats, DATE) rejects it.
#[inline]
fn parse_date_prefix(text: &[u8], clamp_day: bool) -> Option<i32> {
    if text.len() < 10 || text[4] != b'-' || text[7] != b'-' {
        return None;
    }
    let year = i64::from(two_digits(text, 0)? * 100 + two_digits(text, 2)?);
    let month = i64::from(two_digits(text, 5)?);
    let mut day = i64::from(two_digits(text, 8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let last_day = days_in_month(year, month);
    if day > last_day {
        if !clamp_day {
            return None;
        }
        day = last_day;
    }
    // Four-digit years keep the result within about ±3 million days.
    Some(days_from_civil(year, month, day) as i32)
}

const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// `HH:mm[:ss[.f{1,9}]]` at the start of `text`: nanoseconds of the day and bytes read.
#[inline]
fn parse_time_prefix(text: &[u8], seconds_required: bool) -> Option<(i64, usize)> {
    if text.get(2) != Some(&b':') {
        return None;
    }
    let hour = two_digits(text, 0)?;
    let minute = two_digits(text, 3)?;
    if hour > 23 || minute > 59 {
        return None;
    }
    let mut second = 0;
    let mut nanos: i64 = 0;
    let mut read = 5;
    if text.get(5) == Some(&b':') {
        second = two_digits(text, 6)?;
        if second > 59 {
            return None;
        }
        read = 8;
        if text.get(8) == Some(&b'.') {
            let fraction = &text[9..];
            let digits = fraction.iter().take(9).take_while(|b| b.is_ascii_digit()).count();
            if digits == 0 {
                return None;
            }
            for &digit in &fraction[..digits] {
                nanos = nanos * 10 + i64::from(digit - b'0');
            }
            nanos *= 10i64.pow(9 - digits as u32);
            read = 9 + digits;
        }
    } else if seconds_required {
        return None;
    }
    let seconds_of_day = i64::from(hour * 3600 + minute * 60 + second);
    Some((seconds_of_day * NANOS_PER_SECOND + nanos, read))
}

/// A timestamp in Flink's SQL (`yyyy-MM-dd HH:mm:ss[.fffffffff]`) or ISO-8601
/// (`yyyy-MM-ddTHH:mm[:ss[.fffffffff]]`) layout, optionally ending in `Z`, as a count of
/// `unit` since the epoch; digits beyond the unit are truncated.
#[inline]
pub(super) fn parse_timestamp(text: &[u8], format: TimestampFormat, unit: TimeUnit) -> Option<i64> {
    let (separator, sql) = match format {
        TimestampFormat::Sql => (b' ', true),
        TimestampFormat::Iso8601 => (b'T', false),
    };
    let days = parse_date_prefix(text, sql)?;
    if text.get(10) != Some(&separator) {
        return None;
    }
    let (nanos_of_day, read) = parse_time_prefix(&text[11..], sql)?;
    match &text[11 + read..] {
        [] | [b'Z'] => {}
        _ => return None,
    }
    let seconds = i64::from(days) * 86_400 + nanos_of_day / NANOS_PER_SECOND;
    let nanos = nanos_of_day % NANOS_PER_SECOND;
    match unit {
        TimeUnit::Second => Some(seconds),
        TimeUnit::Millisecond => Some(seconds * 1_000 + nanos / 1_000_000),
        TimeUnit::Microsecond => Some(seconds * 1_000_000 + nanos / 1_000),
        TimeUnit::Nanosecond => seconds.checked_mul(NANOS_PER_SECOND)?.checked_add(nanos),
    }
}

/// `yyyy-MM-dd` (Java's ISO_LOCAL_DATE, strict) as days since the epoch.
pub(super) fn parse_date(text: &[u8]) -> Option<i32> {
    if text.len() != 10 {
        return None;
    }
    parse_date_prefix(text, false)
}

/// `HH:mm:ss[.f{1,9}]` as milliseconds of the day, extra digits truncated.
pub(super) fn parse_time_millis(text: &[u8]) -> Option<i32> {
    let (nanos, read) = parse_time_prefix(text, true)?;
    (read == text.len()).then_some((nanos / 1_000_000) as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_truncate_to_the_unit_and_reject_bad_layouts() {
        let sql = |text: &str, unit| parse_timestamp(text.as_bytes(), TimestampFormat::Sql, unit);
        assert_eq!(sql("1970-01-01 00:00:00.123456789", TimeUnit::Millisecond), Some(123));
        assert_eq!(sql("1970-01-01 00:00:00.123456789", TimeUnit::Microsecond), Some(123_456));
        assert_eq!(sql("1970-01-01 00:00:00.123456789", TimeUnit::Nanosecond), Some(123_456_789));
        assert_eq!(sql("1970-01-01 00:00:01.5", TimeUnit::Second), Some(1));
        assert_eq!(sql("1969-12-31 23:59:59.5", TimeUnit::Millisecond), Some(-500));
        assert_eq!(sql("9999-12-31 23:59:59", TimeUnit::Nanosecond), None, "overflows i64 nanoseconds");
        assert_eq!(sql("0001-01-01 00:00:00", TimeUnit::Millisecond), Some(-62_135_596_800_000));
        for bad in [
            "",
            "2024-01-01",
            "2024-01-01 1:00:00",
            "2024-1-01 00:00:00",
            "2024-01-01 00:00:00.",
            "2024-01-01 00:00:60",
            "+024-01-01 00:00:00",
            "2024-01-01 00:00:00 ",
        ] {
            assert_eq!(sql(bad, TimeUnit::Millisecond), None, "{bad:?}");
        }
        assert_eq!(parse_date(b"2024-02-30"), None);
        assert_eq!(parse_time_millis(b"12:34:56.7"), Some(45_296_700));
    }
}
