//! Cron schedules with crontab(5) meaning, in IANA time zones.
//!
//! croner speaks crontab: 0 and 7 are Sunday, a restricted day-of-month and day-of-week match
//! when either matches, and an optional sixth field in front holds seconds. The `cron` crate
//! numbers weekdays from 1 and requires seconds, which would silently shift every weekly
//! schedule by a day, so it is not used here.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// Parses a 5-field (or 6-field, seconds first) crontab expression.
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    let fields = expr.split_whitespace().count();
    if !(fields == 5 || fields == 6) {
        return Err(format!(
            "must have 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds \
             in front; `{expr}` has {fields}"
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| format!("is not a valid cron expression: {e}"))
}

/// Parses an IANA time zone name such as `Europe/Amsterdam`.
pub fn parse_timezone(name: &str) -> Result<Tz, String> {
    Tz::from_str(name).map_err(|_| {
        format!("`{name}` is not an IANA time zone name (e.g. `UTC`, `Europe/Amsterdam`)")
    })
}

/// The next `n` fire times strictly after `after`, in UTC.
pub fn next_fire_times(cron: &Cron, tz: Tz, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
    cron.iter_after(after.with_timezone(&tz))
        .take(n)
        .map(|t| t.with_timezone(&Utc))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone, Timelike, Weekday};

    fn next(expr: &str, tz: &str, after: DateTime<Utc>) -> DateTime<Utc> {
        next_fire_times(
            &parse_cron(expr).unwrap(),
            parse_timezone(tz).unwrap(),
            after,
            1,
        )[0]
    }

    fn utc(y: i32, m: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, mi, 0).unwrap()
    }

    #[test]
    fn zero_and_seven_are_both_sunday() {
        let from = utc(2026, 11, 18, 12, 0); // a Wednesday
        for expr in ["0 3 * * 0", "0 3 * * 7", "0 3 * * SUN"] {
            let t = next(expr, "UTC", from);
            assert_eq!(t.weekday(), Weekday::Sun, "{expr}");
            assert_eq!(t, utc(2026, 11, 22, 3, 0), "{expr}");
        }
        assert_eq!(next("0 3 * * 1", "UTC", from).weekday(), Weekday::Mon);
    }

    #[test]
    fn day_of_month_or_day_of_week_as_in_crontab() {
        // "At 00:00 on the 1st, and on every Monday": the first match after Wed 18 Nov is Mon 23.
        let t = next("0 0 1 * 1", "UTC", utc(2026, 11, 18, 12, 0));
        assert_eq!(t, utc(2026, 11, 23, 0, 0));
    }

    #[test]
    fn six_fields_put_seconds_first() {
        let t = next("30 0 12 * * *", "UTC", utc(2026, 11, 18, 11, 0));
        assert_eq!((t.hour(), t.minute(), t.second()), (12, 0, 30));
    }

    #[test]
    fn time_zones_follow_daylight_saving() {
        // 06:00 in Amsterdam is 05:00 UTC in winter and 04:00 UTC in summer.
        let winter = next("0 6 * * *", "Europe/Amsterdam", utc(2026, 1, 10, 0, 0));
        assert_eq!(winter, utc(2026, 1, 10, 5, 0));
        let summer = next("0 6 * * *", "Europe/Amsterdam", utc(2026, 7, 10, 0, 0));
        assert_eq!(summer, utc(2026, 7, 10, 4, 0));
        // Across the spring change (29 March 2026) the next firing keeps local 06:00.
        let change = next("0 6 * * *", "Europe/Amsterdam", utc(2026, 3, 28, 6, 0));
        assert_eq!(change, utc(2026, 3, 29, 4, 0));
    }

    #[test]
    fn bad_expressions_and_zones_say_why() {
        assert!(parse_cron("* * * *").unwrap_err().contains("5 fields"));
        assert!(parse_cron("0 0 * * * * 2027").unwrap_err().contains("7"));
        assert!(parse_cron("61 * * * *").is_err());
        assert!(parse_timezone("Mars/Olympus").unwrap_err().contains("IANA"));
    }
}
