//! UTC calendar arithmetic without a time-zone database: the civil date of a Unix time, and the
//! day, ISO week and month a snapshot falls in (for retention policies and display).

/// Seconds per day.
const DAY: u64 = 86_400;

/// The proleptic Gregorian `(year, month 1-12, day 1-31)` of a count of days since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The UTC day of `unix` seconds, as days since 1970-01-01.
pub fn day_of(unix: u64) -> i64 {
    (unix / DAY) as i64
}

/// The week (Monday to Sunday, UTC) of `unix` seconds, as a number that grows by one each
/// week. 1970-01-01 was a Thursday, so day 0 is in the week that started on day -3.
pub fn week_of(unix: u64) -> i64 {
    (day_of(unix) + 3).div_euclid(7)
}

/// The UTC month of `unix` seconds, as `year * 12 + (month - 1)`.
pub fn month_of(unix: u64) -> i64 {
    let (year, month, _) = civil_from_days(day_of(unix));
    year * 12 + i64::from(month) - 1
}

/// `2026-11-25T21:16:03Z` for `unix` seconds since the Unix epoch.
pub fn utc(unix: u64) -> String {
    let (year, month, day) = civil_from_days(day_of(unix));
    let secs = unix % DAY;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_known_instants() {
        assert_eq!(super::utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::utc(1_795_641_363), "2026-11-25T21:16:03Z");
    }

    use super::*;

    #[test]
    fn civil_dates_of_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_782), (2026, 11, 25));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn weeks_start_on_monday() {
        // 2026-11-29 is a Sunday, 2026-11-30 a Monday.
        let sunday = 20_786 * DAY;
        let monday = 20_787 * DAY;
        assert_eq!(civil_from_days(day_of(monday)), (2026, 11, 30));
        assert_eq!(week_of(sunday) + 1, week_of(monday));
        assert_eq!(week_of(monday), week_of(monday + 6 * DAY + DAY - 1));
        assert_eq!(
            week_of(0),
            week_of(3 * DAY),
            "1970-01-01 (Thu) to 01-04 (Sun)"
        );
        assert_eq!(week_of(0) + 1, week_of(4 * DAY));
    }

    #[test]
    fn months_roll_over_years() {
        let dec31 = 20_818 * DAY; // 2026-12-31
        assert_eq!(civil_from_days(20_818), (2026, 12, 31));
        assert_eq!(month_of(dec31) + 1, month_of(dec31 + DAY));
    }
}
