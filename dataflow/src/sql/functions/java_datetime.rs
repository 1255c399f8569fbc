//! Java date/time patterns as Flink uses them: `java.time.DateTimeFormatter` patterns (which
//! DATE_FORMAT on a TIMESTAMP and TO_TIMESTAMP with a format use) and
//! `java.text.SimpleDateFormat` patterns (which FROM_UNIXTIME, UNIX_TIMESTAMP and DATE_FORMAT on
//! a string use). A pattern is compiled once into tokens; formatting and parsing then walk the
//! tokens per row. Texts are the English (en-US) names a default JVM prints.

use crate::calendar::{civil_from_days, days_from_civil, days_in_month, is_leap_year};

use super::calendar::{day_of_week_monday1, days_from_civil_lenient};
use super::common::MILLIS_PER_DAY;

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const MONTHS_SHORT: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
// Indexed by day of week with Sunday = 0.
const DAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
const DAYS_SHORT: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

/// Which Java class's pattern rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// `java.time.format.DateTimeFormatter.ofPattern`.
    DateTimeFormatter,
    /// `java.text.SimpleDateFormat`.
    SimpleDateFormat,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Token {
    Field(char, usize),
    Literal(String),
}

/// A compiled pattern. Construction fails exactly where the Java constructor throws
/// `IllegalArgumentException`, which Flink lets fail the query.
#[derive(Debug, Clone)]
pub(crate) struct JavaPattern {
    flavor: Flavor,
    tokens: Vec<Token>,
}

/// The broken-down fields of a TIMESTAMP, the way `LocalDateTime` exposes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DateTimeFields {
    pub(crate) days: i64,
    pub(crate) year: i64,
    pub(crate) month: i64,
    pub(crate) day: i64,
    pub(crate) hour: i64,
    pub(crate) minute: i64,
    pub(crate) second: i64,
    pub(crate) nano: i64,
}

impl DateTimeFields {
    pub(crate) fn from_millis(millis: i64, nanos_of_milli: i64) -> Self {
        let days = millis.div_euclid(MILLIS_PER_DAY);
        let time = millis.rem_euclid(MILLIS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        DateTimeFields {
            days,
            year,
            month,
            day,
            hour: time / 3_600_000,
            minute: time / 60_000 % 60,
            second: time / 1000 % 60,
            nano: time % 1000 * 1_000_000 + nanos_of_milli,
        }
    }

    fn day_of_year(&self) -> i64 {
        self.days - days_from_civil(self.year, 1, 1) + 1
    }

    /// Day of week with Sunday = 0.
    fn dow0(&self) -> usize {
        day_of_week_monday1(self.days) as usize % 7
    }

    /// Week-based year and week as `WeekFields.of(Locale.US)` count them: weeks start on
    /// Sunday and week 1 is the week that contains January 1st.
    fn us_week(&self) -> (i64, i64) {
        let week_start = |year: i64| {
            let jan1 = days_from_civil(year, 1, 1);
            jan1 - (day_of_week_monday1(jan1) % 7)
        };
        let next = week_start(self.year + 1);
        if self.days >= next { (self.year + 1, 1) } else { (self.year, (self.days - week_start(self.year)) / 7 + 1) }
    }

    fn us_week_of_month(&self) -> i64 {
        let first = self.days - (self.day - 1);
        let first_dow0 = day_of_week_monday1(first) % 7;
        (self.day - 1 + first_dow0) / 7 + 1
    }
}

impl JavaPattern {
    pub(crate) fn compile(pattern: &str, flavor: Flavor) -> Result<Self, String> {
        let tokens = tokenize(pattern, flavor)?;
        for token in &tokens {
            if let Token::Field(letter, count) = token {
                validate_field(*letter, *count, flavor)?;
            }
        }
        Ok(JavaPattern { flavor, tokens })
    }

    /// Formats a local date-time. Errors mirror the `DateTimeException` Java raises for fields a
    /// `LocalDateTime` does not have (time zones).
    pub(crate) fn format(&self, f: &DateTimeFields) -> Result<String, String> {
        let mut out = String::with_capacity(32);
        for token in &self.tokens {
            match token {
                Token::Literal(s) => out.push_str(s),
                Token::Field(letter, count) => match self.flavor {
                    Flavor::DateTimeFormatter => format_dtf_field(&mut out, *letter, *count, f)?,
                    Flavor::SimpleDateFormat => format_sdf_field(&mut out, *letter, *count, f),
                },
            }
        }
        Ok(out)
    }

    /// `SimpleDateFormat.parse` in its default lenient mode, in UTC: reads from the start of
    /// `text`, ignores anything after the pattern, and lets out-of-range fields roll over.
    /// Returns epoch milliseconds.
    pub(crate) fn parse_lenient(&self, text: &str) -> Option<i64> {
        debug_assert_eq!(self.flavor, Flavor::SimpleDateFormat);
        sdf_parse(&self.tokens, text)
    }

    /// `DateTimeFormatter.parse` with the SMART resolver, completed the way Flink's
    /// `fromTemporalAccessor` does (missing fields default to 1970-01-01 00:00:00). Returns
    /// epoch milliseconds plus nanoseconds of the millisecond.
    pub(crate) fn parse_strict(&self, text: &str) -> Option<(i64, i64)> {
        debug_assert_eq!(self.flavor, Flavor::DateTimeFormatter);
        dtf_parse(&self.tokens, text)
    }
}

fn tokenize(pattern: &str, flavor: Flavor) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::new();
    let mut literal = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            if chars.get(i + 1) == Some(&'\'') {
                literal.push('\'');
                i += 2;
                continue;
            }
            i += 1;
            let mut closed = false;
            while i < chars.len() {
                if chars[i] == '\'' {
                    if chars.get(i + 1) == Some(&'\'') {
                        literal.push('\'');
                        i += 2;
                        continue;
                    }
                    closed = true;
                    i += 1;
                    break;
                }
                literal.push(chars[i]);
                i += 1;
            }
            if !closed {
                return Err(format!("unterminated quote in date pattern '{pattern}'"));
            }
            continue;
        }
        if c.is_ascii_alphabetic() {
            let mut count = 1;
            while chars.get(i + count) == Some(&c) {
                count += 1;
            }
            if !literal.is_empty() {
                tokens.push(Token::Literal(std::mem::take(&mut literal)));
            }
            tokens.push(Token::Field(c, count));
            i += count;
            continue;
        }
        if flavor == Flavor::DateTimeFormatter {
            match c {
                // Optional sections always print when formatting a LocalDateTime.
                '[' | ']' => {
                    i += 1;
                    continue;
                }
                '{' | '}' | '#' => {
                    return Err(format!("pattern includes reserved character '{c}': '{pattern}'"));
                }
                _ => {}
            }
        }
        literal.push(c);
        i += 1;
    }
    if !literal.is_empty() {
        tokens.push(Token::Literal(literal));
    }
    Ok(tokens)
}

fn validate_field(letter: char, count: usize, flavor: Flavor) -> Result<(), String> {
    let max = match flavor {
        Flavor::SimpleDateFormat => match letter {
            'G' | 'y' | 'Y' | 'M' | 'L' | 'w' | 'W' | 'D' | 'd' | 'F' | 'E' | 'u' | 'a' | 'H' | 'k' | 'K' | 'h'
            | 'm' | 's' | 'S' | 'z' | 'Z' => usize::MAX,
            'X' => 3,
            _ => return Err(format!("illegal pattern character '{letter}'")),
        },
        Flavor::DateTimeFormatter => match letter {
            'G' | 'M' | 'L' | 'Q' | 'q' | 'E' | 'e' | 'c' => 5,
            'u' | 'y' | 'Y' | 'A' | 'n' | 'N' => 19,
            'D' => 3,
            'd' | 'w' | 'h' | 'K' | 'k' | 'H' | 'm' | 's' => 2,
            'W' | 'F' | 'a' => 1,
            'S' => 9,
            'V' | 'v' | 'z' | 'O' | 'X' | 'x' | 'Z' => 5,
            _ => return Err(format!("unknown pattern letter: {letter}")),
        },
    };
    if count > max || (flavor == Flavor::DateTimeFormatter && letter == 'c' && count == 2) {
        return Err(format!("too many pattern letters: {letter}"));
    }
    Ok(())
}

fn push_padded(out: &mut String, value: i64, width: usize) {
    if value < 0 {
        out.push('-');
    }
    let digits = value.unsigned_abs().to_string();
    for _ in digits.len()..width {
        out.push('0');
    }
    out.push_str(&digits);
}

fn ordinal_quarter(q: i64) -> &'static str {
    match q {
        1 => "1st quarter",
        2 => "2nd quarter",
        3 => "3rd quarter",
        _ => "4th quarter",
    }
}

fn first_char(s: &str) -> &str {
    &s[..1]
}

fn format_dtf_field(out: &mut String, letter: char, count: usize, f: &DateTimeFields) -> Result<(), String> {
    let month_index = (f.month - 1) as usize;
    let dow0 = f.dow0();
    let quarter = (f.month + 2) / 3;
    match letter {
        'G' => out.push_str(match (count, f.year > 0) {
            (4, true) => "Anno Domini",
            (4, false) => "Before Christ",
            (5, true) => "A",
            (5, false) => "B",
            (_, true) => "AD",
            (_, false) => "BC",
        }),
        'u' | 'y' | 'Y' => {
            let value = match letter {
                'u' => f.year,
                'y' => {
                    if f.year > 0 {
                        f.year
                    } else {
                        1 - f.year
                    }
                }
                _ => f.us_week().0,
            };
            if count == 2 {
                push_padded(out, value.rem_euclid(100), 2);
            } else {
                // EXCEEDS_PAD: a sign appears once the value outgrows the pad width.
                if count >= 4 && value >= 0 && value.to_string().len() > count {
                    out.push('+');
                }
                push_padded(out, value, count);
            }
        }
        'D' => push_padded(out, f.day_of_year(), count),
        'M' | 'L' => match count {
            1 | 2 => push_padded(out, f.month, count),
            3 => out.push_str(MONTHS_SHORT[month_index]),
            4 => out.push_str(MONTHS[month_index]),
            _ => out.push_str(first_char(MONTHS[month_index])),
        },
        'd' => push_padded(out, f.day, count),
        'Q' | 'q' => match count {
            1 | 2 => push_padded(out, quarter, count),
            3 => {
                out.push('Q');
                out.push_str(&quarter.to_string());
            }
            4 => out.push_str(ordinal_quarter(quarter)),
            _ => out.push_str(&quarter.to_string()),
        },
        'w' => push_padded(out, f.us_week().1, count),
        'W' => push_padded(out, f.us_week_of_month(), count),
        // JDK 8-21 maps 'F' to ALIGNED_DAY_OF_WEEK_IN_MONTH.
        'F' => push_padded(out, (f.day - 1) % 7 + 1, count),
        'E' => match count {
            1..=3 => out.push_str(DAYS_SHORT[dow0]),
            4 => out.push_str(DAYS[dow0]),
            _ => out.push_str(first_char(DAYS[dow0])),
        },
        'e' | 'c' => match count {
            1 | 2 => push_padded(out, dow0 as i64 + 1, count),
            3 => out.push_str(DAYS_SHORT[dow0]),
            4 => out.push_str(DAYS[dow0]),
            _ => out.push_str(first_char(DAYS[dow0])),
        },
        'a' => out.push_str(if f.hour < 12 { "AM" } else { "PM" }),
        'h' => push_padded(out, if f.hour % 12 == 0 { 12 } else { f.hour % 12 }, count),
        'K' => push_padded(out, f.hour % 12, count),
        'k' => push_padded(out, if f.hour == 0 { 24 } else { f.hour }, count),
        'H' => push_padded(out, f.hour, count),
        'm' => push_padded(out, f.minute, count),
        's' => push_padded(out, f.second, count),
        'S' => {
            let nanos = format!("{:09}", f.nano);
            out.push_str(&nanos[..count]);
        }
        'A' => push_padded(out, (f.hour * 3600 + f.minute * 60 + f.second) * 1000 + f.nano / 1_000_000, count),
        'n' => push_padded(out, f.nano, count),
        'N' => push_padded(out, (f.hour * 3600 + f.minute * 60 + f.second) * 1_000_000_000 + f.nano, count),
        _ => {
            return Err(format!("unable to format pattern letter '{letter}': a TIMESTAMP has no time zone"));
        }
    }
    Ok(())
}

fn format_sdf_field(out: &mut String, letter: char, count: usize, f: &DateTimeFields) {
    let month_index = (f.month - 1) as usize;
    let dow0 = f.dow0();
    let year_of_era = if f.year > 0 { f.year } else { 1 - f.year };
    match letter {
        'G' => out.push_str(if f.year > 0 { "AD" } else { "BC" }),
        'y' | 'Y' => {
            let value = if letter == 'y' { year_of_era } else { f.us_week().0 };
            if count == 2 {
                push_padded(out, value % 100, 2);
            } else {
                push_padded(out, value, count);
            }
        }
        'M' | 'L' => match count {
            1 | 2 => push_padded(out, f.month, count),
            3 => out.push_str(MONTHS_SHORT[month_index]),
            _ => out.push_str(MONTHS[month_index]),
        },
        'w' => push_padded(out, f.us_week().1, count),
        'W' => push_padded(out, f.us_week_of_month(), count),
        'D' => push_padded(out, f.day_of_year(), count),
        'd' => push_padded(out, f.day, count),
        'F' => push_padded(out, (f.day - 1) / 7 + 1, count),
        'E' => out.push_str(if count >= 4 { DAYS[dow0] } else { DAYS_SHORT[dow0] }),
        'u' => push_padded(out, if dow0 == 0 { 7 } else { dow0 as i64 }, count),
        'a' => out.push_str(if f.hour < 12 { "AM" } else { "PM" }),
        'H' => push_padded(out, f.hour, count),
        'k' => push_padded(out, if f.hour == 0 { 24 } else { f.hour }, count),
        'K' => push_padded(out, f.hour % 12, count),
        'h' => push_padded(out, if f.hour % 12 == 0 { 12 } else { f.hour % 12 }, count),
        'm' => push_padded(out, f.minute, count),
        's' => push_padded(out, f.second, count),
        'S' => push_padded(out, f.nano / 1_000_000, count),
        'z' => out.push_str(if count >= 4 { "Coordinated Universal Time" } else { "UTC" }),
        'Z' => out.push_str("+0000"),
        'X' => out.push('Z'),
        // validate_field admits no other letter for this flavor.
        _ => {}
    }
}

// ------------------------------------------------------------------------------------------
// SimpleDateFormat parsing
// ------------------------------------------------------------------------------------------

fn sdf_is_numeric(letter: char, count: usize) -> bool {
    match letter {
        'y' | 'Y' | 'd' | 'k' | 'H' | 'm' | 's' | 'S' | 'D' | 'F' | 'w' | 'W' | 'h' | 'K' | 'u' => true,
        'M' | 'L' => count <= 2,
        _ => false,
    }
}

/// Matches the longest of `names` at the start of `text`, ignoring case.
fn match_name(text: &str, names: &[&str]) -> Option<(usize, usize)> {
    let mut best: Option<(usize, usize)> = None;
    for (index, name) in names.iter().enumerate() {
        let n = name.len();
        if text.len() >= n
            && text.is_char_boundary(n)
            && text[..n].eq_ignore_ascii_case(name)
            && best.is_none_or(|(_, len)| n > len)
        {
            best = Some((index, n));
        }
    }
    best
}

/// Parses `+hh`, `+hhmm`, `+hh:mm`, `Z`, `UTC`/`GMT`/`UT` (optionally followed by an offset).
/// Returns (offset minutes, bytes consumed).
fn parse_zone(text: &str) -> Option<(i64, usize)> {
    let bytes = text.as_bytes();
    if bytes.first() == Some(&b'Z') {
        return Some((0, 1));
    }
    for prefix in ["UTC", "GMT", "UT"] {
        if text.get(..prefix.len()).is_some_and(|head| head.eq_ignore_ascii_case(prefix)) {
            return match parse_offset(&text[prefix.len()..]) {
                Some((minutes, used)) => Some((minutes, prefix.len() + used)),
                None => Some((0, prefix.len())),
            };
        }
    }
    parse_offset(text)
}

fn parse_offset(text: &str) -> Option<(i64, usize)> {
    let bytes = text.as_bytes();
    let sign = match bytes.first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digit = |i: usize| bytes.get(i).filter(|b| b.is_ascii_digit()).map(|b| i64::from(b - b'0'));
    let h1 = digit(1)?;
    let (hours, mut pos) = match digit(2) {
        Some(h2) => (h1 * 10 + h2, 3),
        None => (h1, 2),
    };
    let mut minutes = 0;
    if bytes.get(pos) == Some(&b':') {
        if let (Some(m1), Some(m2)) = (digit(pos + 1), digit(pos + 2)) {
            minutes = m1 * 10 + m2;
            pos += 3;
        }
    } else if let (Some(m1), Some(m2)) = (digit(pos), digit(pos + 1)) {
        minutes = m1 * 10 + m2;
        pos += 2;
    }
    Some((sign * (hours * 60 + minutes), pos))
}

#[derive(Default)]
struct SdfFields {
    era_bc: bool,
    year: Option<i64>,
    month: Option<i64>,
    day: Option<i64>,
    day_of_year: Option<i64>,
    hour_of_day: Option<i64>,
    hour12: Option<i64>,
    pm: Option<bool>,
    minute: i64,
    second: i64,
    millis: i64,
    offset_minutes: i64,
}

fn sdf_parse(tokens: &[Token], text: &str) -> Option<i64> {
    let mut pos = 0usize;
    let mut fields = SdfFields::default();
    for (index, token) in tokens.iter().enumerate() {
        match token {
            Token::Literal(lit) => {
                if !text[pos..].starts_with(lit.as_str()) {
                    return None;
                }
                pos += lit.len();
            }
            Token::Field(letter, count) => {
                // SimpleDateFormat skips blanks before every field.
                while text[pos..].starts_with([' ', '\t']) {
                    pos += 1;
                }
                let rest = &text[pos..];
                if rest.is_empty() {
                    return None;
                }
                if sdf_is_numeric(*letter, *count) {
                    let abutting = matches!(
                        tokens.get(index + 1),
                        Some(Token::Field(l, c)) if sdf_is_numeric(*l, *c)
                    );
                    let (value, used) = parse_sdf_number(rest, abutting.then_some(*count))?;
                    pos += used;
                    apply_sdf_number(&mut fields, *letter, *count, value, used);
                } else {
                    let used = apply_sdf_text(&mut fields, *letter, rest)?;
                    pos += used;
                }
            }
        }
    }
    resolve_sdf(&fields)
}

fn parse_sdf_number(text: &str, width: Option<usize>) -> Option<(i64, usize)> {
    let bytes = text.as_bytes();
    let limit = width.unwrap_or(usize::MAX).min(bytes.len());
    let mut i = 0;
    let negative = bytes.first() == Some(&b'-');
    if negative {
        i = 1;
    }
    let start = i;
    let mut value: i64 = 0;
    while i < limit && bytes[i].is_ascii_digit() {
        value = value.checked_mul(10)?.checked_add(i64::from(bytes[i] - b'0'))?;
        i += 1;
    }
    if i == start {
        return None;
    }
    Some((if negative { -value } else { value }, i))
}

fn apply_sdf_number(f: &mut SdfFields, letter: char, count: usize, value: i64, used: usize) {
    match letter {
        'y' => {
            let mut year = value;
            // Two-digit years land within 80 years before and 20 after now, as in Java.
            if count <= 2 && used == 2 {
                let start = current_year() - 80;
                let ambiguous = start.rem_euclid(100);
                year += (start / 100) * 100 + if value < ambiguous { 100 } else { 0 };
            }
            f.year = Some(year);
        }
        'M' | 'L' => f.month = Some(value),
        'd' => f.day = Some(value),
        'D' => f.day_of_year = Some(value),
        'H' => f.hour_of_day = Some(value),
        'k' => f.hour_of_day = Some(if value == 24 { 0 } else { value }),
        'h' => f.hour12 = Some(if value == 12 { 0 } else { value }),
        'K' => f.hour12 = Some(value),
        'm' => f.minute = value,
        's' => f.second = value,
        'S' => f.millis = value,
        // Week and day-of-week numbers do not move a date that has year, month and day.
        _ => {}
    }
}

fn apply_sdf_text(f: &mut SdfFields, letter: char, text: &str) -> Option<usize> {
    match letter {
        'M' | 'L' => {
            let (index, used) = match_name(text, &MONTHS).or_else(|| match_name(text, &MONTHS_SHORT))?;
            f.month = Some(index as i64 + 1);
            Some(used)
        }
        'E' => match_name(text, &DAYS).or_else(|| match_name(text, &DAYS_SHORT)).map(|(_, used)| used),
        'a' => {
            let (index, used) = match_name(text, &["AM", "PM"])?;
            f.pm = Some(index == 1);
            Some(used)
        }
        'G' => {
            let (index, used) = match_name(text, &["BC", "AD"])?;
            f.era_bc = index == 0;
            Some(used)
        }
        'z' | 'Z' | 'X' => {
            let (minutes, used) = parse_zone(text)?;
            f.offset_minutes = minutes;
            Some(used)
        }
        _ => None,
    }
}

/// Bound on every parsed field: Java's own limits are far smaller for real dates, and it
/// keeps the calendar arithmetic below from overflowing on absurd input.
const MAX_FIELD: i64 = 1_000_000_000;

fn resolve_sdf(f: &SdfFields) -> Option<i64> {
    let fields = [f.year, f.month, f.day, f.day_of_year, f.hour_of_day, f.hour12];
    if fields.iter().flatten().chain([&f.minute, &f.second, &f.millis]).any(|v| v.abs() > MAX_FIELD) {
        return None;
    }
    let mut year = f.year.unwrap_or(1970);
    if f.era_bc {
        year = 1 - year;
    }
    let days = match (f.month, f.day, f.day_of_year) {
        (None, None, Some(doy)) => days_from_civil(year, 1, 1) + doy - 1,
        (month, day, _) => days_from_civil_lenient(year, month.unwrap_or(1), 1) + day.unwrap_or(1) - 1,
    };
    let hour = match (f.hour_of_day, f.hour12) {
        (Some(h), _) => h,
        (None, Some(h)) => h + if f.pm == Some(true) { 12 } else { 0 },
        (None, None) => 0,
    };
    let millis = i128::from(days) * i128::from(MILLIS_PER_DAY)
        + i128::from(hour) * 3_600_000
        + i128::from(f.minute) * 60_000
        + i128::from(f.second) * 1000
        + i128::from(f.millis)
        - i128::from(f.offset_minutes) * 60_000;
    i64::try_from(millis).ok()
}

fn current_year() -> i64 {
    use chrono::Datelike;
    i64::from(chrono::Utc::now().year())
}

// ------------------------------------------------------------------------------------------
// DateTimeFormatter parsing
// ------------------------------------------------------------------------------------------

/// Width rule of a numeric DateTimeFormatter field, `None` for text fields.
fn dtf_width(letter: char, count: usize) -> Option<(usize, usize)> {
    match letter {
        'y' | 'u' | 'Y' => Some(if count == 2 { (2, 2) } else { (count, 19) }),
        'M' | 'L' | 'Q' | 'q' if count >= 3 => None,
        'M' | 'L' | 'Q' | 'q' | 'd' | 'H' | 'h' | 'K' | 'k' | 'm' | 's' | 'w' => {
            Some(if count == 1 { (1, 19) } else { (2, 2) })
        }
        'D' => Some(match count {
            1 => (1, 19),
            2 => (2, 3),
            _ => (3, 3),
        }),
        'S' => Some((count, count)),
        'n' | 'A' | 'N' => Some((count, 19)),
        'W' | 'F' => Some((1, 19)),
        'e' if count <= 2 => Some(if count == 1 { (1, 19) } else { (2, 2) }),
        'c' if count == 1 => Some((1, 19)),
        _ => None,
    }
}

#[derive(Default)]
struct DtfFields {
    year: Option<i64>,
    year_of_era: Option<i64>,
    month: Option<i64>,
    day: Option<i64>,
    day_of_year: Option<i64>,
    hour_of_day: Option<i64>,
    hour_of_ampm: Option<i64>,
    pm: Option<bool>,
    minute: Option<i64>,
    second: Option<i64>,
    nano: Option<i64>,
}

fn set_once(slot: &mut Option<i64>, value: i64) -> Option<()> {
    match slot {
        Some(existing) if *existing != value => None,
        _ => {
            *slot = Some(value);
            Some(())
        }
    }
}

fn dtf_parse(tokens: &[Token], text: &str) -> Option<(i64, i64)> {
    let mut pos = 0usize;
    let mut f = DtfFields::default();
    for (index, token) in tokens.iter().enumerate() {
        match token {
            Token::Literal(lit) => {
                if !text[pos..].starts_with(lit.as_str()) {
                    return None;
                }
                pos += lit.len();
            }
            Token::Field(letter, count) => {
                let rest = &text[pos..];
                match dtf_width(*letter, *count) {
                    Some((min, max)) => {
                        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
                        // Adjacent value parsing: a variable-width field leaves room for the
                        // fixed-width numeric fields that directly follow it.
                        let mut reserved = 0;
                        if min != max {
                            for next in &tokens[index + 1..] {
                                match next {
                                    Token::Field(l, c) => match dtf_width(*l, *c) {
                                        Some((a, b)) if a == b => reserved += a,
                                        _ => break,
                                    },
                                    Token::Literal(_) => break,
                                }
                            }
                        }
                        let width = digits.saturating_sub(reserved).min(max);
                        if width < min || width == 0 {
                            return None;
                        }
                        let value_text = &rest[..width];
                        pos += width;
                        apply_dtf_number(&mut f, *letter, *count, value_text)?;
                    }
                    None => {
                        let used = apply_dtf_text(&mut f, *letter, *count, rest)?;
                        pos += used;
                    }
                }
            }
        }
    }
    if pos != text.len() {
        return None;
    }
    resolve_dtf(&f)
}

fn apply_dtf_number(f: &mut DtfFields, letter: char, count: usize, digits: &str) -> Option<()> {
    if letter == 'S' {
        let mut nanos: i64 = digits.parse().ok()?;
        for _ in digits.len()..9 {
            nanos *= 10;
        }
        return set_once(&mut f.nano, nanos);
    }
    let value: i64 = digits.parse().ok()?;
    match letter {
        // Two-letter years are reduced values based on 2000.
        'y' if count == 2 => set_once(&mut f.year_of_era, 2000 + value),
        'u' if count == 2 => set_once(&mut f.year, 2000 + value),
        'y' => set_once(&mut f.year_of_era, value),
        'u' => set_once(&mut f.year, value),
        'M' | 'L' => set_once(&mut f.month, value),
        'd' => set_once(&mut f.day, value),
        'D' => set_once(&mut f.day_of_year, value),
        'H' => set_once(&mut f.hour_of_day, value),
        'k' => {
            if !(1..=24).contains(&value) {
                return None;
            }
            set_once(&mut f.hour_of_day, value % 24)
        }
        'h' => {
            if !(1..=12).contains(&value) {
                return None;
            }
            set_once(&mut f.hour_of_ampm, value % 12)
        }
        'K' => {
            if !(0..=11).contains(&value) {
                return None;
            }
            set_once(&mut f.hour_of_ampm, value)
        }
        'm' => set_once(&mut f.minute, value),
        's' => set_once(&mut f.second, value),
        'n' => set_once(&mut f.nano, value),
        // Week-based, quarter and day-of-week fields are parsed but, as in Flink's
        // completion of missing fields, do not contribute to the result.
        _ => Some(()),
    }
}

fn apply_dtf_text(f: &mut DtfFields, letter: char, count: usize, text: &str) -> Option<usize> {
    // DateTimeFormatter.ofPattern parses text case-sensitively.
    let exact = |names: &[&str]| -> Option<(usize, usize)> {
        names
            .iter()
            .enumerate()
            .filter(|(_, n)| text.starts_with(**n))
            .max_by_key(|(_, n)| n.len())
            .map(|(i, n)| (i, n.len()))
    };
    match letter {
        'M' | 'L' => {
            let names: &[&str] = if count == 3 { &MONTHS_SHORT } else { &MONTHS };
            let (index, used) = exact(names)?;
            set_once(&mut f.month, index as i64 + 1)?;
            Some(used)
        }
        'E' | 'e' | 'c' => {
            let names: &[&str] = if count == 4 { &DAYS } else { &DAYS_SHORT };
            exact(names).map(|(_, used)| used)
        }
        'a' => {
            let (index, used) = exact(&["AM", "PM"])?;
            f.pm = Some(index == 1);
            Some(used)
        }
        'G' => exact(&["AD"]).map(|(_, used)| used),
        _ => None,
    }
}

fn resolve_dtf(f: &DtfFields) -> Option<(i64, i64)> {
    let year = match (f.year, f.year_of_era) {
        (Some(y), Some(e)) if y != e => return None,
        (Some(y), _) | (None, Some(y)) => Some(y),
        (None, None) => None,
    };
    // java.time's Year range.
    if year.is_some_and(|y| y.abs() > 999_999_999) {
        return None;
    }
    for (value, range) in [
        (f.month, 1..=12),
        (f.day, 1..=31),
        (f.hour_of_day, 0..=23),
        (f.minute, 0..=59),
        (f.second, 0..=59),
        (f.day_of_year, 1..=366),
    ] {
        if value.is_some_and(|v| !range.contains(&v)) {
            return None;
        }
    }
    let (year, month, day) = match (year, f.month, f.day, f.day_of_year) {
        // A full date resolves SMART-ly: days 29-31 clamp to the end of the month.
        (Some(y), Some(m), Some(d), _) => (y, m, d.min(days_in_month(y, m))),
        (Some(y), None, None, Some(doy)) => {
            if doy == 366 && !is_leap_year(y) {
                return None;
            }
            let (yy, mm, dd) = civil_from_days(days_from_civil(y, 1, 1) + doy - 1);
            (yy, mm, dd)
        }
        (y, m, d, _) => {
            let (y, m, d) = (y.unwrap_or(1970), m.unwrap_or(1), d.unwrap_or(1));
            // LocalDateTime.of rejects a day the month does not have.
            if d > days_in_month(y, m) {
                return None;
            }
            (y, m, d)
        }
    };
    let hour = match (f.hour_of_day, f.hour_of_ampm, f.pm) {
        (Some(h), Some(h12), Some(pm)) if h != h12 + if pm { 12 } else { 0 } => return None,
        (Some(h), _, _) => h,
        (None, Some(h12), Some(pm)) => h12 + if pm { 12 } else { 0 },
        // An hour-of-am-pm without AM/PM stays unresolved, so Flink defaults the hour to 0.
        _ => 0,
    };
    let days = days_from_civil(year, month, day);
    let nano = f.nano.unwrap_or(0);
    let millis = i128::from(days) * i128::from(MILLIS_PER_DAY)
        + i128::from(hour) * 3_600_000
        + i128::from(f.minute.unwrap_or(0)) * 60_000
        + i128::from(f.second.unwrap_or(0)) * 1000
        + i128::from(nano / 1_000_000);
    Some((i64::try_from(millis).ok()?, nano % 1_000_000))
}

// ------------------------------------------------------------------------------------------
// java.sql.Timestamp.valueOf / java.sql.Date.valueOf, Flink's TO_TIMESTAMP fallback
// ------------------------------------------------------------------------------------------

fn java_parse_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('+').unwrap_or(s);
    if digits.is_empty() || digits.starts_with('+') {
        return None;
    }
    let v: i64 = digits.parse().ok()?;
    i32::try_from(v).ok().map(i64::from)
}

/// `java.sql.Timestamp.valueOf` (lenient in the time fields, like the deprecated constructor
/// it calls). Returns epoch milliseconds plus nanoseconds of the millisecond.
pub(crate) fn sql_timestamp_value_of(s: &str) -> Option<(i64, i64)> {
    let s = s.trim();
    let space = s.find(' ').filter(|&i| i > 0)?;
    let (date_s, time_s) = (&s[..space], &s[space + 1..]);
    let (year, month, day) = parse_sql_date_parts(date_s, false)?;
    let first_colon = time_s.find(':').filter(|&i| i > 0)?;
    let second_colon = time_s[first_colon + 1..].find(':').map(|i| i + first_colon + 1)?;
    if second_colon >= time_s.len() - 1 {
        return None;
    }
    let hour = java_parse_int(&time_s[..first_colon])?;
    let minute = java_parse_int(&time_s[first_colon + 1..second_colon])?;
    let after = &time_s[second_colon + 1..];
    let (second, nanos) = match after.find('.') {
        Some(p) if p > 0 && p < after.len() - 1 => {
            let frac = &after[p + 1..];
            if frac.len() > 9 || !frac.as_bytes()[0].is_ascii_digit() {
                return None;
            }
            let mut nanos = java_parse_int(frac)?;
            for _ in frac.len()..9 {
                nanos *= 10;
            }
            (java_parse_int(&after[..p])?, nanos)
        }
        Some(_) => return None,
        None => (java_parse_int(after)?, 0),
    };
    let days = days_from_civil_lenient(year, month, day);
    let millis = i128::from(days) * i128::from(MILLIS_PER_DAY)
        + i128::from(hour) * 3_600_000
        + i128::from(minute) * 60_000
        + i128::from(second) * 1000
        + i128::from(nanos / 1_000_000);
    Some((i64::try_from(millis).ok()?, nanos % 1_000_000))
}

/// `java.sql.Date.valueOf` ("yyyy-[m]m-[d]d", the day rolling over leniently).
pub(crate) fn sql_date_value_of(s: &str) -> Option<i64> {
    let (year, month, day) = parse_sql_date_parts(s, true)?;
    Some(days_from_civil_lenient(year, month, day))
}

fn parse_sql_date_parts(s: &str, exact_year_position: bool) -> Option<(i64, i64, i64)> {
    let first = s.find('-').filter(|&i| i > 0)?;
    let second = s[first + 1..].find('-').map(|i| i + first + 1)?;
    if second >= s.len() - 1 {
        return None;
    }
    let (yyyy, mm, dd) = (&s[..first], &s[first + 1..second], &s[second + 1..]);
    let year_ok = if exact_year_position { first == 4 } else { yyyy.chars().count() == 4 };
    if !year_ok || mm.is_empty() || mm.len() > 2 || dd.is_empty() || dd.len() > 2 {
        return None;
    }
    let (year, month, day) = (java_parse_int(yyyy)?, java_parse_int(mm)?, java_parse_int(dd)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    Some((year, month, day))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64, ms: i64) -> DateTimeFields {
        let days = days_from_civil(y, mo, d);
        DateTimeFields::from_millis(days * MILLIS_PER_DAY + ((h * 60 + mi) * 60 + s) * 1000 + ms, 0)
    }

    fn dtf(p: &str, f: &DateTimeFields) -> String {
        JavaPattern::compile(p, Flavor::DateTimeFormatter).unwrap().format(f).unwrap()
    }

    fn sdf(p: &str, f: &DateTimeFields) -> String {
        JavaPattern::compile(p, Flavor::SimpleDateFormat).unwrap().format(f).unwrap()
    }

    #[test]
    fn formats_like_date_time_formatter() {
        let f = fields(2024, 3, 10, 10, 0, 5, 7);
        assert_eq!(dtf("yyyy/MM/dd HH:mm", &f), "2024/03/10 10:00");
        assert_eq!(dtf("yy-M-d H:m:s.SSS", &f), "24-3-10 10:0:5.007");
        assert_eq!(dtf("EEE, MMM d ''yy 'at' hh a", &f), "Sun, Mar 10 '24 at 10 AM");
        assert_eq!(dtf("EEEE MMMM D QQQ", &f), "Sunday March 70 Q1");
        assert_eq!(dtf("DDD", &f), "070");
        assert_eq!(dtf("S", &f), "0");
        let pm = fields(2023, 12, 31, 0, 30, 0, 0);
        assert_eq!(dtf("hh:mm a k", &pm), "12:30 AM 24");
        // 2023-12-31 is a Sunday in the week containing 2024-01-01: US week 1 of 2024.
        assert_eq!(dtf("YYYY-ww", &pm), "2024-01");
    }

    #[test]
    fn rejects_what_java_rejects() {
        assert!(JavaPattern::compile("yyyy-bb", Flavor::DateTimeFormatter).is_err());
        assert!(JavaPattern::compile("ddd", Flavor::DateTimeFormatter).is_err());
        assert!(JavaPattern::compile("aa", Flavor::DateTimeFormatter).is_err());
        assert!(JavaPattern::compile("'open", Flavor::SimpleDateFormat).is_err());
        assert!(JavaPattern::compile("yyyy-qq", Flavor::SimpleDateFormat).is_err());
        let zone = JavaPattern::compile("HH z", Flavor::DateTimeFormatter).unwrap();
        assert!(zone.format(&fields(2024, 1, 1, 0, 0, 0, 0)).is_err());
    }

    #[test]
    fn formats_like_simple_date_format() {
        let f = fields(2018, 3, 14, 1, 2, 3, 45);
        assert_eq!(sdf("yyyy/MM/dd HH:mm:ss", &f), "2018/03/14 01:02:03");
        assert_eq!(sdf("SSS EEEE MMMMM u z", &f), "045 Wednesday March 3 UTC");
    }

    #[test]
    fn parses_like_simple_date_format() {
        let p = JavaPattern::compile("yyyy-MM-dd HH:mm:ss", Flavor::SimpleDateFormat).unwrap();
        assert_eq!(p.parse_lenient("1970-01-01 00:00:44"), Some(44_000));
        // Trailing text is ignored, fields roll over, single digits are fine.
        assert_eq!(p.parse_lenient("1970-01-01 00:00:44.999 junk"), Some(44_000));
        assert_eq!(p.parse_lenient("1970-1-2 0:0:0"), Some(MILLIS_PER_DAY));
        assert_eq!(p.parse_lenient("1970-13-01 00:00:00"), Some(days_from_civil(1971, 1, 1) * MILLIS_PER_DAY));
        assert_eq!(p.parse_lenient("1970-01-01"), None);
        let z = JavaPattern::compile("yyyy-MM-dd HH:mm:ss.SSS X", Flavor::SimpleDateFormat).unwrap();
        assert_eq!(z.parse_lenient("1970-01-01 08:00:01.001 +0800"), Some(1001));
        let compact = JavaPattern::compile("yyyyMMddHHmmss", Flavor::SimpleDateFormat).unwrap();
        assert_eq!(compact.parse_lenient("19700101000001"), Some(1000));
    }

    #[test]
    fn parses_like_date_time_formatter() {
        let p = JavaPattern::compile("yyyyMMddHHmmss", Flavor::DateTimeFormatter).unwrap();
        let expected = days_from_civil(2017, 9, 15) * MILLIS_PER_DAY;
        assert_eq!(p.parse_strict("20170915000000"), Some((expected, 0)));
        let p = JavaPattern::compile("yyyyMMddHH", Flavor::DateTimeFormatter).unwrap();
        assert_eq!(p.parse_strict("2000020210"), Some((days_from_civil(2000, 2, 2) * MILLIS_PER_DAY + 36_000_000, 0)));
        let p = JavaPattern::compile("yyyy-MM-dd", Flavor::DateTimeFormatter).unwrap();
        assert_eq!(p.parse_strict("2017-09-15 00:00:00"), None);
        assert_eq!(p.parse_strict("2023-02-30"), Some((days_from_civil(2023, 2, 28) * MILLIS_PER_DAY, 0)));
        assert_eq!(p.parse_strict("2023-13-01"), None);
        let p = JavaPattern::compile("yyyy-MM-dd HH:mm:ss.SSSSSS", Flavor::DateTimeFormatter).unwrap();
        assert_eq!(p.parse_strict("1970-01-01 00:00:00.123456"), Some((123, 456_000)));
    }

    #[test]
    fn java_sql_value_of() {
        assert_eq!(
            sql_timestamp_value_of("1999-9-10 05:20:10"),
            Some((days_from_civil(1999, 9, 10) * MILLIS_PER_DAY + 19_210_000, 0))
        );
        assert_eq!(sql_timestamp_value_of("1999-09-10"), None);
        assert_eq!(sql_date_value_of("1999-9-10"), Some(days_from_civil(1999, 9, 10)));
        assert_eq!(sql_date_value_of("2023-02-30"), Some(days_from_civil(2023, 3, 2)));
        assert_eq!(sql_date_value_of("abc"), None);
    }
}
