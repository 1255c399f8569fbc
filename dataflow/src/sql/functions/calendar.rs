//! Calendar arithmetic on epoch days and epoch milliseconds, ported from Flink's
//! `DateTimeUtils` and Calcite/Avatica's `DateTimeUtils` so that EXTRACT, FLOOR/CEIL,
//! TIMESTAMPADD and TIMESTAMPDIFF reproduce Flink's results, including its Java integer
//! semantics (division truncating toward zero) where Flink relies on them.

use crate::calendar::{civil_from_days, days_from_civil, days_in_month};

use super::common::MILLIS_PER_DAY;

pub(crate) const EPOCH_JULIAN: i64 = 2_440_588;
pub(crate) const MILLIS_PER_SECOND: i64 = 1000;
pub(crate) const MILLIS_PER_MINUTE: i64 = 60_000;
pub(crate) const MILLIS_PER_HOUR: i64 = 3_600_000;

/// The time units Flink's EXTRACT, FLOOR, CEIL, TIMESTAMPADD and TIMESTAMPDIFF accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeUnitRange {
    Millennium,
    Century,
    Decade,
    Year,
    IsoYear,
    Quarter,
    Month,
    Week,
    Day,
    Hour,
    Minute,
    Second,
    Millisecond,
    Microsecond,
    Nanosecond,
    Dow,
    IsoDow,
    Doy,
    Epoch,
}

impl TimeUnitRange {
    /// Parses a unit name as SQL front ends spell it: any case, optional plural, the
    /// `SQL_TSI_` prefix of JDBC escapes, and sqlparser's DAYOFWEEK/DAYOFYEAR spellings.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        let upper = name.trim().to_ascii_uppercase();
        let upper = upper.strip_prefix("SQL_TSI_").unwrap_or(&upper);
        // sqlparser renders `WEEK(MONDAY)` with its argument; Flink has no such form.
        let unit = match upper {
            "MILLENNIUM" | "MILLENNIUMS" | "MILLENIUM" => TimeUnitRange::Millennium,
            "CENTURY" | "CENTURIES" => TimeUnitRange::Century,
            "DECADE" | "DECADES" => TimeUnitRange::Decade,
            "YEAR" | "YEARS" => TimeUnitRange::Year,
            "ISOYEAR" => TimeUnitRange::IsoYear,
            "QUARTER" | "QUARTERS" => TimeUnitRange::Quarter,
            "MONTH" | "MONTHS" => TimeUnitRange::Month,
            "WEEK" | "WEEKS" => TimeUnitRange::Week,
            "DAY" | "DAYS" | "DAYOFMONTH" => TimeUnitRange::Day,
            "HOUR" | "HOURS" => TimeUnitRange::Hour,
            "MINUTE" | "MINUTES" => TimeUnitRange::Minute,
            "SECOND" | "SECONDS" => TimeUnitRange::Second,
            "MILLISECOND" | "MILLISECONDS" => TimeUnitRange::Millisecond,
            "MICROSECOND" | "MICROSECONDS" => TimeUnitRange::Microsecond,
            "NANOSECOND" | "NANOSECONDS" => TimeUnitRange::Nanosecond,
            "DOW" | "DAYOFWEEK" => TimeUnitRange::Dow,
            "ISODOW" => TimeUnitRange::IsoDow,
            "DOY" | "DAYOFYEAR" => TimeUnitRange::Doy,
            "EPOCH" => TimeUnitRange::Epoch,
            _ => return None,
        };
        Some(unit)
    }

    /// Length of the unit in milliseconds for the units Flink treats arithmetically.
    pub(crate) fn fixed_millis(self) -> Option<i64> {
        match self {
            TimeUnitRange::Week => Some(7 * MILLIS_PER_DAY),
            TimeUnitRange::Day => Some(MILLIS_PER_DAY),
            TimeUnitRange::Hour => Some(MILLIS_PER_HOUR),
            TimeUnitRange::Minute => Some(MILLIS_PER_MINUTE),
            TimeUnitRange::Second => Some(MILLIS_PER_SECOND),
            TimeUnitRange::Millisecond => Some(1),
            _ => None,
        }
    }

    /// Length of the unit in months for the year-month units.
    pub(crate) fn months(self) -> Option<i64> {
        match self {
            TimeUnitRange::Year => Some(12),
            TimeUnitRange::Quarter => Some(3),
            TimeUnitRange::Month => Some(1),
            _ => None,
        }
    }
}

/// Epoch day of `year`-`month`-`day` where `month` may lie outside 1..=12.
pub(crate) fn days_from_civil_lenient(year: i64, month: i64, day: i64) -> i64 {
    let year = year + (month - 1).div_euclid(12);
    let month = (month - 1).rem_euclid(12) + 1;
    days_from_civil(year, month, day)
}

fn ymd_to_julian(year: i64, month: i64, day: i64) -> i64 {
    let a = (14 - month) / 12;
    let y = year + 4800 - a;
    let m = month + 12 * a - 3;
    day + (153 * m + 2) / 5 + 365 * y + y / 4 - y / 100 + y / 400 - 32045
}

/// Day of week with Sunday = 1 ... Saturday = 7 (Flink's DOW).
pub(crate) fn day_of_week_sunday1(days: i64) -> i64 {
    (days + EPOCH_JULIAN + 1).rem_euclid(7) + 1
}

/// Day of week with Monday = 1 ... Sunday = 7 (ISO).
pub(crate) fn day_of_week_monday1(days: i64) -> i64 {
    (days + EPOCH_JULIAN).rem_euclid(7) + 1
}

fn first_monday_of_first_week(year: i64) -> i64 {
    let jan_first = ymd_to_julian(year, 1, 1);
    let jan_first_dow = (jan_first + 1).rem_euclid(7);
    jan_first + (11 - jan_first_dow) % 7 - 3
}

/// ISO-8601 week number, ported line for line from Flink's `getIso8601WeekNumber`.
pub(crate) fn iso_week_number(days: i64) -> i64 {
    let julian = days + EPOCH_JULIAN;
    let (year, month, day) = civil_from_days(days);
    let fmofw = first_monday_of_first_week(year);
    let dow = julian.rem_euclid(7) + 1;
    if month == 12 && day > 28 {
        if 31 - day + 4 > 7 - dow && 31 - day + dow >= 4 { (julian - fmofw) / 7 + 1 } else { 1 }
    } else if month == 1 && day < 5 {
        if 4 - day <= 7 - dow && day - dow >= -3 { 1 } else { (julian - first_monday_of_first_week(year - 1)) / 7 + 1 }
    } else {
        (julian - fmofw) / 7 + 1
    }
}

/// Flink's `extractFromDate` for the date-valued units; `None` for units a DATE lacks.
pub(crate) fn extract_from_date(unit: TimeUnitRange, days: i64) -> Option<i64> {
    let (year, month, day) = civil_from_days(days);
    Some(match unit {
        TimeUnitRange::Epoch => days * 86_400,
        TimeUnitRange::Year => year,
        TimeUnitRange::Month => month,
        TimeUnitRange::Day => day,
        TimeUnitRange::Quarter => (month + 2) / 3,
        TimeUnitRange::Dow => day_of_week_sunday1(days),
        TimeUnitRange::IsoDow => day_of_week_monday1(days),
        TimeUnitRange::Week => iso_week_number(days),
        TimeUnitRange::Doy => days - days_from_civil(year, 1, 1) + 1,
        TimeUnitRange::IsoYear => {
            let week = iso_week_number(days);
            if week == 1 && month == 12 {
                year + 1
            } else if month == 1 && week > 50 {
                year - 1
            } else {
                year
            }
        }
        TimeUnitRange::Decade => year / 10,
        TimeUnitRange::Century => {
            if year > 0 {
                (year + 99) / 100
            } else {
                (year - 99) / 100
            }
        }
        TimeUnitRange::Millennium => {
            if year > 0 {
                (year + 999) / 1000
            } else {
                (year - 999) / 1000
            }
        }
        _ => return None,
    })
}

/// Flink's EXTRACT on TIMESTAMP(p). Flink derives the day with a truncating division, so for
/// instants before 1970 that are not at midnight the date parts come from the following day
/// and HOUR/MINUTE/SECOND are negative; this reproduces that rather than correcting it.
pub(crate) fn extract_from_timestamp(unit: TimeUnitRange, millis: i64, nanos_of_milli: i64) -> Option<i64> {
    match unit {
        TimeUnitRange::Epoch => Some(millis / 1000),
        TimeUnitRange::Hour => Some((millis % MILLIS_PER_DAY) / MILLIS_PER_HOUR),
        TimeUnitRange::Minute => Some((millis % MILLIS_PER_HOUR) / MILLIS_PER_MINUTE),
        TimeUnitRange::Second => Some((millis % MILLIS_PER_MINUTE) / MILLIS_PER_SECOND),
        TimeUnitRange::Millisecond => Some(millis % 1000),
        TimeUnitRange::Microsecond => Some((millis % 1000) * 1000 + nanos_of_milli / 1000),
        TimeUnitRange::Nanosecond => Some((millis % 1000) * 1_000_000 + nanos_of_milli),
        _ => extract_from_date(unit, millis / MILLIS_PER_DAY),
    }
}

/// Avatica's `julianDateFloor` (which Flink's FLOOR/CEIL on TIMESTAMP calls) on epoch days.
fn date_floor_ceil_avatica(unit: TimeUnitRange, days: i64, floor: bool) -> Option<i64> {
    let (mut year, mut month, day) = civil_from_days(days);
    Some(match unit {
        TimeUnitRange::Millennium => {
            if floor {
                days_from_civil(1000 * ((year + 999) / 1000) - 999, 1, 1)
            } else {
                days_from_civil(1000 * ((year + 999) / 1000) + 1, 1, 1)
            }
        }
        TimeUnitRange::Century => {
            if floor {
                days_from_civil(100 * ((year + 99) / 100) - 99, 1, 1)
            } else {
                days_from_civil(100 * ((year + 99) / 100) + 1, 1, 1)
            }
        }
        TimeUnitRange::Decade => {
            if floor {
                days_from_civil(10 * (year / 10), 1, 1)
            } else {
                days_from_civil(10 * (1 + year / 10), 1, 1)
            }
        }
        TimeUnitRange::Year => {
            if !floor && (month > 1 || day > 1) {
                year += 1;
            }
            days_from_civil(year, 1, 1)
        }
        TimeUnitRange::Quarter => {
            let q = (month - 1) / 3;
            if !floor {
                if month - 1 > q * 3 || day > 1 {
                    if q == 3 {
                        year += 1;
                        month = 1;
                    } else {
                        month = q * 3 + 4;
                    }
                }
            } else {
                month = q * 3 + 1;
            }
            days_from_civil(year, month, 1)
        }
        TimeUnitRange::Month => {
            if !floor && day > 1 {
                month += 1;
            }
            days_from_civil_lenient(year, month, 1)
        }
        TimeUnitRange::Week => {
            let dow = (days + EPOCH_JULIAN + 1).rem_euclid(7);
            let mut offset = dow;
            if !floor && offset > 0 {
                offset -= 7;
            }
            days - offset
        }
        TimeUnitRange::Day => days,
        _ => return None,
    })
}

/// FLOOR/CEIL of a DATE. Flink routes CEIL of a DATE through its own copy of the algorithm,
/// whose QUARTER branch moves any date after January 1st to the next quarter start; that is
/// reproduced. DAY and finer units leave a DATE unchanged.
pub(crate) fn date_floor_ceil(unit: TimeUnitRange, days: i64, floor: bool) -> Option<i64> {
    match unit {
        TimeUnitRange::Day
        | TimeUnitRange::Hour
        | TimeUnitRange::Minute
        | TimeUnitRange::Second
        | TimeUnitRange::Millisecond => Some(days),
        TimeUnitRange::Quarter if !floor => {
            let (mut year, month, day) = civil_from_days(days);
            let mut quarter = (month + 2) / 3;
            if month > 1 || day > 1 {
                quarter += 1;
            }
            if quarter > 4 {
                year += 1;
                quarter -= 4;
            }
            Some(days_from_civil(year, quarter * 3 - 2, 1))
        }
        _ => date_floor_ceil_avatica(unit, days, floor),
    }
}

/// FLOOR/CEIL of a TIMESTAMP in epoch milliseconds. Units of a day or less are exact
/// arithmetic; coarser units go through the date of the instant, found by truncating
/// division, and ignore the time of day (so CEIL of '2024-03-01 10:00' TO MONTH is
/// '2024-03-01 00:00', as in Flink).
pub(crate) fn timestamp_floor_ceil(unit: TimeUnitRange, millis: i64, floor: bool) -> Option<i64> {
    if let Some(step) = unit.fixed_millis().filter(|_| unit != TimeUnitRange::Week) {
        return if floor {
            Some(millis - millis.rem_euclid(step))
        } else {
            let shifted = millis.checked_add(step - 1)?;
            Some(shifted - shifted.rem_euclid(step))
        };
    }
    let days = millis / MILLIS_PER_DAY;
    date_floor_ceil_avatica(unit, days, floor)?.checked_mul(MILLIS_PER_DAY)
}

/// Month offsets beyond this put the date past any calendar Java or Arrow can hold.
const MAX_MONTH_OFFSET: i64 = 12_000_000_000;

/// Flink's `addMonths(int date, int m)`: clamps the day to the end of the target month.
/// `None` when the offset is absurdly large.
pub(crate) fn add_months_to_date(days: i64, months: i64) -> Option<i64> {
    if months.abs() > MAX_MONTH_OFFSET {
        return None;
    }
    let (y0, m0, d0) = civil_from_days(days);
    let m = m0 + months;
    let mut year = y0 + m.div_euclid(12);
    let mut month = m.rem_euclid(12);
    if month == 0 {
        year -= 1;
        month += 12;
    }
    let day = d0.min(days_in_month(year, month));
    Some(days_from_civil(year, month, day))
}

/// Flink's `addMonths(long timestamp, int m)`, keeping the time of day.
pub(crate) fn add_months_to_millis(millis: i64, months: i64) -> Option<i64> {
    let time = millis.rem_euclid(MILLIS_PER_DAY);
    let days = millis.div_euclid(MILLIS_PER_DAY);
    add_months_to_date(days, months)?.checked_mul(MILLIS_PER_DAY)?.checked_add(time)
}

/// Flink's `subtractMonths(int date0, int date1)`: the largest m with
/// `addMonths(date1, m) <= date0` (for date0 >= date1). Flink finds it by stepping up from a
/// lower bound; since addMonths is monotonic, starting from the calendar month difference and
/// correcting by a step or two gives the same answer in constant time.
pub(crate) fn subtract_months_dates(date0: i64, date1: i64) -> i64 {
    if date0 < date1 {
        return -subtract_months_dates(date1, date0);
    }
    let (y0, m0, _) = civil_from_days(date0);
    let (y1, m1, _) = civil_from_days(date1);
    let mut m = (y0 - y1) * 12 + (m0 - m1);
    let add = |m: i64| add_months_to_date(date1, m).unwrap_or(i64::MAX);
    while m > 0 && add(m) > date0 {
        m -= 1;
    }
    while add(m + 1) <= date0 {
        m += 1;
    }
    m
}

/// Flink's `subtractMonths(long t0, long t1)` on epoch milliseconds.
pub(crate) fn subtract_months_millis(t0: i64, t1: i64) -> i64 {
    let (millis0, d0) = (t0.rem_euclid(MILLIS_PER_DAY), t0.div_euclid(MILLIS_PER_DAY));
    let (millis1, d1) = (t1.rem_euclid(MILLIS_PER_DAY), t1.div_euclid(MILLIS_PER_DAY));
    let mut x = subtract_months_dates(d0, d1);
    if add_months_to_date(d1, x) == Some(d0) && millis0 < millis1 {
        x -= 1;
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_months_roll_over_into_years() {
        assert_eq!(days_from_civil_lenient(2023, 14, 1), days_from_civil(2024, 2, 1));
        assert_eq!(days_from_civil_lenient(2023, 0, 1), days_from_civil(2022, 12, 1));
    }

    #[test]
    fn extract_matches_flink_docs() {
        // DATE '1994-09-27': Flink's docs give WEEK 39, DOY 270, DAYOFWEEK 3, QUARTER 3.
        let d = days_from_civil(1994, 9, 27);
        assert_eq!(extract_from_date(TimeUnitRange::Week, d), Some(39));
        assert_eq!(extract_from_date(TimeUnitRange::Doy, d), Some(270));
        assert_eq!(extract_from_date(TimeUnitRange::Dow, d), Some(3));
        assert_eq!(extract_from_date(TimeUnitRange::Quarter, d), Some(3));
        // 1996-11-10 (Sunday): Flink's tests give WEEK 45, DOY 315, DOW 1, ISODOW 7.
        let d = days_from_civil(1996, 11, 10);
        assert_eq!(extract_from_date(TimeUnitRange::Week, d), Some(45));
        assert_eq!(extract_from_date(TimeUnitRange::Doy, d), Some(315));
        assert_eq!(extract_from_date(TimeUnitRange::Dow, d), Some(1));
        assert_eq!(extract_from_date(TimeUnitRange::IsoDow, d), Some(7));
        assert_eq!(extract_from_date(TimeUnitRange::Decade, d), Some(199));
        assert_eq!(extract_from_date(TimeUnitRange::Century, d), Some(20));
        assert_eq!(extract_from_date(TimeUnitRange::Millennium, d), Some(2));
    }

    #[test]
    fn extract_reproduces_flink_truncation_before_1970() {
        // 1969-12-31 23:00:00 is -3_600_000 ms: Flink yields HOUR -1 and YEAR 1970.
        assert_eq!(extract_from_timestamp(TimeUnitRange::Hour, -3_600_000, 0), Some(-1));
        assert_eq!(extract_from_timestamp(TimeUnitRange::Year, -3_600_000, 0), Some(1970));
    }

    #[test]
    fn months_arithmetic() {
        let d = days_from_civil(2016, 5, 31);
        assert_eq!(add_months_to_date(d, 1), Some(days_from_civil(2016, 6, 30)));
        assert_eq!(add_months_to_date(days_from_civil(2016, 3, 31), -1), Some(days_from_civil(2016, 2, 29)));
        assert_eq!(add_months_to_date(0, i64::MAX), None);
        assert_eq!(subtract_months_dates(days_from_civil(2018, 3, 18), days_from_civil(2016, 6, 15)), 21);
        // Month-end clamping counts Jan 31 -> Feb 28 as one month, as Flink's loop does.
        assert_eq!(subtract_months_dates(days_from_civil(2023, 2, 28), days_from_civil(2023, 1, 31)), 1);
        assert_eq!(subtract_months_dates(days_from_civil(2023, 3, 30), days_from_civil(2023, 1, 31)), 1);
        assert_eq!(subtract_months_dates(days_from_civil(2023, 1, 30), days_from_civil(2023, 1, 31)), 0);
        assert_eq!(subtract_months_dates(days_from_civil(2023, 1, 1), days_from_civil(2023, 3, 31)), -2);
        // Far-apart dates answer immediately instead of stepping month by month.
        assert!(subtract_months_dates(2_000_000_000, -2_000_000_000) > 0);
    }

    #[test]
    fn floor_ceil_units() {
        let d = days_from_civil(1996, 11, 10);
        assert_eq!(date_floor_ceil(TimeUnitRange::Year, d, false), Some(days_from_civil(1997, 1, 1)));
        assert_eq!(date_floor_ceil(TimeUnitRange::Month, d, false), Some(days_from_civil(1996, 12, 1)));
        let dec = days_from_civil(2024, 12, 15);
        assert_eq!(date_floor_ceil(TimeUnitRange::Month, dec, false), Some(days_from_civil(2025, 1, 1)));
        let ts = days_from_civil(2024, 3, 1) * MILLIS_PER_DAY + 10 * MILLIS_PER_HOUR;
        assert_eq!(
            timestamp_floor_ceil(TimeUnitRange::Month, ts, false),
            Some(days_from_civil(2024, 3, 1) * MILLIS_PER_DAY)
        );
        assert_eq!(timestamp_floor_ceil(TimeUnitRange::Hour, -1, true), Some(-MILLIS_PER_HOUR));
        assert_eq!(timestamp_floor_ceil(TimeUnitRange::Hour, -1, false), Some(0));
    }
}
