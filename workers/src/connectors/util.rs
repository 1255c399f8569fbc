//! Helpers the built-in generators share: Flink's option notations (integers, booleans,
//! durations, memory sizes, timestamps) and a 64-bit mixer.

use weir_dataflow::calendar::{days_from_civil, days_in_month};

/// An option value that cannot be read; each connector turns it into its own error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadOption {
    pub option: String,
    pub value: String,
    pub reason: String,
}

pub fn invalid(option: &str, value: &str, reason: &str) -> BadOption {
    BadOption { option: option.to_string(), value: value.to_string(), reason: reason.to_string() }
}

pub fn parse_u64(key: &str, v: &str) -> Result<u64, BadOption> {
    v.parse().map_err(|_| invalid(key, v, "expected a non-negative integer"))
}

pub fn parse_positive(key: &str, v: &str) -> Result<u64, BadOption> {
    match parse_u64(key, v)? {
        0 => Err(invalid(key, v, "must be at least 1")),
        n => Ok(n),
    }
}

pub fn parse_u32(key: &str, v: &str) -> Result<u32, BadOption> {
    v.parse().map_err(|_| invalid(key, v, "expected a non-negative 32-bit integer"))
}

pub fn parse_bool(key: &str, v: &str) -> Result<bool, BadOption> {
    if v.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if v.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(invalid(key, v, "expected 'true' or 'false'"))
    }
}

/// Splits Flink's `<number><optional spaces><unit>` notation.
pub fn split_number_unit(v: &str) -> Option<(u64, String)> {
    let digits = v.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let number = v[..digits].parse().ok()?;
    Some((number, v[digits..].trim().to_ascii_lowercase()))
}

/// Flink's `MemorySize` syntax: bytes by default, 1024-based units.
pub fn parse_memory_size(key: &str, v: &str) -> Result<u32, BadOption> {
    let err = || invalid(key, v, "expected a size such as '200b', '1kb' or '2 mb'");
    let (number, unit) = split_number_unit(v).ok_or_else(err)?;
    let multiplier: u64 = match unit.as_str() {
        "" | "b" | "bytes" => 1,
        "k" | "kb" | "kibibytes" => 1 << 10,
        "m" | "mb" | "mebibytes" => 1 << 20,
        "g" | "gb" | "gibibytes" => 1 << 30,
        "t" | "tb" | "tebibytes" => 1 << 40,
        _ => return Err(err()),
    };
    number.checked_mul(multiplier).and_then(|b| u32::try_from(b).ok()).ok_or_else(err)
}

/// Flink's `Duration` syntax (`TimeUtils.parseDuration`): milliseconds by default.
pub fn parse_duration_ms(key: &str, v: &str) -> Result<u64, BadOption> {
    let err = || invalid(key, v, "expected a duration such as '600 s', '10min' or '500ms'");
    let (number, unit) = split_number_unit(v).ok_or_else(err)?;
    let (multiplier, divisor): (u64, u64) = match unit.as_str() {
        "ns" | "nano" | "nanos" | "nanosecond" | "nanoseconds" => (1, 1_000_000),
        "µs" | "us" | "micro" | "micros" | "microsecond" | "microseconds" => (1, 1000),
        "" | "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => (1, 1),
        "s" | "sec" | "secs" | "second" | "seconds" => (1000, 1),
        "m" | "min" | "minute" | "minutes" => (60_000, 1),
        "h" | "hour" | "hours" => (3_600_000, 1),
        "d" | "day" | "days" => (86_400_000, 1),
        _ => return Err(err()),
    };
    number.checked_mul(multiplier).map(|n| n / divisor).ok_or_else(err)
}

/// Milliseconds since the epoch, or a UTC timestamp `yyyy-MM-dd HH:mm:ss[.SSS]` (a `T` may
/// separate date and time).
pub fn parse_base_time(key: &str, v: &str) -> Result<i64, BadOption> {
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(ms);
    }
    parse_utc_timestamp(v)
        .ok_or_else(|| invalid(key, v, "expected epoch milliseconds or 'yyyy-MM-dd HH:mm:ss[.SSS]' (UTC)"))
}

pub fn parse_utc_timestamp(v: &str) -> Option<i64> {
    let b = v.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || (b[10] != b' ' && b[10] != b'T') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = v.get(r)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let millis = match b.len() {
        19 => 0,
        23 if b[19] == b'.' => num(20..23)?,
        _ => return None,
    };
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millis)
}

#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notations() {
        assert_eq!(parse_utc_timestamp("2024-01-01 23:59:00"), Some(1_704_153_540_000));
        assert_eq!(parse_utc_timestamp("2000-02-29T23:59:59.999"), Some(951_868_799_999));
        assert_eq!(parse_utc_timestamp("2001-02-29 00:00:00"), None);
        assert_eq!(parse_duration_ms("k", "10 min"), Ok(600_000));
        assert_eq!(parse_duration_ms("k", "500"), Ok(500));
        assert!(parse_duration_ms("k", "soon").is_err());
        assert_eq!(parse_memory_size("k", "2 kb"), Ok(2048));
        assert_eq!(parse_bool("k", "TRUE"), Ok(true));
        assert_eq!(parse_positive("k", "0").unwrap_err().reason, "must be at least 1");
    }
}
