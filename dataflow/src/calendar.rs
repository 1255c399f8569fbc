//! The proleptic Gregorian calendar on epoch days (days since 1970-01-01): the one home of
//! civil-date arithmetic in the workspace. SQL's temporal functions, the record formats'
//! date and timestamp parsing, the generators and the text forms of result rows all convert
//! between epoch days and `(year, month, day)` here. Howard Hinnant's `days_from_civil` and
//! `civil_from_days` algorithms: exact, branch-light, and with no calendar library.

/// Days in 400 Gregorian years, the calendar's full cycle.
const DAYS_PER_ERA: i64 = 146_097;
/// Epoch day of 0000-03-01, where an era of the algorithms begins.
const ERA_START_FROM_EPOCH: i64 = -719_468;

pub fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

/// The number of days of `month` (1..=12) in `year`.
pub fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Epoch day of a civil date. `month` must be 1..=12; `day` may lie outside the month (it
/// then rolls over, like a lenient Java calendar).
#[inline]
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    debug_assert!((1..=12).contains(&month), "month {month} is not 1..=12");
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * DAYS_PER_ERA + day_of_era + ERA_START_FROM_EPOCH
}

/// The civil date `(year, month, day)` of an epoch day; the inverse of [`days_from_civil`].
#[inline]
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let since_era_start = days - ERA_START_FROM_EPOCH;
    let era = since_era_start.div_euclid(DAYS_PER_ERA);
    let day_of_era = since_era_start.rem_euclid(DAYS_PER_ERA);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_from_civil_matches_counting_days() {
        let mut days = days_from_civil(1600, 1, 1);
        for year in 1600..2500 {
            for month in 1..=12 {
                for day in 1..=days_in_month(year, month) {
                    assert_eq!(days_from_civil(year, month, day), days, "{year}-{month}-{day}");
                    assert_eq!(civil_from_days(days), (year, month, day));
                    days += 1;
                }
            }
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2023, 1, 32), days_from_civil(2023, 2, 1), "a day past the month rolls over");
    }

    #[test]
    fn round_trips_far_from_the_epoch() {
        for days in [-800_000, -719_469, -719_468, -1, 0, 1, 59, 10_000, 19_792, 2_932_896] {
            let (year, month, day) = civil_from_days(days);
            assert_eq!(days_from_civil(year, month, day), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-719_468), (0, 3, 1));
        assert_eq!(civil_from_days(days_from_civil(-1, 12, 31) + 1), (0, 1, 1));
    }

    #[test]
    fn leap_years_follow_the_gregorian_rule() {
        assert!(is_leap_year(2000) && is_leap_year(2024) && is_leap_year(0) && is_leap_year(-4));
        assert!(!is_leap_year(1900) && !is_leap_year(2023) && !is_leap_year(-1));
        assert_eq!((days_in_month(2024, 2), days_in_month(2023, 2), days_in_month(2023, 4)), (29, 28, 30));
    }
}
