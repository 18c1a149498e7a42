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

/// The fields of a 5-field expression and what each allows.
const FIELDS: [(&str, &str); 5] = [
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day of month", "1-31"),
    ("month", "1-12 or JAN-DEC"),
    ("day of week", "0-7 (0 and 7 are Sunday) or SUN-SAT"),
];

/// Parses a 5-field (or 6-field, seconds first) crontab expression, or one of the macros
/// `@yearly`, `@monthly`, `@weekly`, `@daily`, `@hourly`. A bad expression's error names
/// the field at fault and what it allows.
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    let parser = CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build();
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if !(fields.len() == 5 || fields.len() == 6 || expr.trim_start().starts_with('@')) {
        return Err(format!(
            "must have 5 fields (minute hour day-of-month month day-of-week), 6 with seconds \
             in front, or be a macro such as `@daily` or `@hourly`; `{expr}` has {}",
            fields.len()
        ));
    }
    parser.parse(expr).map_err(|e| {
        blame_field(&parser, &fields)
            .unwrap_or_else(|| format!("is not a valid cron expression: {e}"))
    })
}

/// Which field of a rejected expression is at fault: the first that fails on its own, with
/// every other field `*`.
fn blame_field(parser: &CronParser, fields: &[&str]) -> Option<String> {
    let named: Vec<(&str, &str)> = match fields.len() {
        6 => std::iter::once(("second", "0-59")).chain(FIELDS).collect(),
        5 => FIELDS.to_vec(),
        _ => return None,
    };
    (0..fields.len()).find_map(|i| {
        let alone: Vec<&str> = (0..fields.len())
            .map(|j| if j == i { fields[j] } else { "*" })
            .collect();
        parser.parse(&alone.join(" ")).err().map(|_| {
            let (name, allowed) = named[i];
            format!(
                "field {} ({name}) `{}` is not valid: it allows {allowed}, as `*`, a list \
                 `1,2`, a range `1-5` or a step `*/15`",
                i + 1,
                fields[i]
            )
        })
    })
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
    fn macros_are_understood() {
        let from = utc(2026, 11, 18, 12, 30);
        assert_eq!(next("@daily", "UTC", from), utc(2026, 11, 19, 0, 0));
        assert_eq!(next("@hourly", "UTC", from), utc(2026, 11, 18, 13, 0));
        assert_eq!(next("@weekly", "UTC", from).weekday(), Weekday::Sun);
        assert_eq!(next("@monthly", "UTC", from), utc(2026, 12, 1, 0, 0));
    }

    #[test]
    fn a_bad_field_is_named_with_what_it_allows() {
        let err = parse_cron("61 * * * *").unwrap_err();
        assert!(
            err.starts_with("field 1 (minute) `61` is not valid: it allows 0-59"),
            "{err}"
        );
        let err = parse_cron("0 6 * 13 *").unwrap_err();
        assert!(err.starts_with("field 4 (month) `13`"), "{err}");
        let err = parse_cron("0 0 6 * * MON-XYZ").unwrap_err();
        assert!(err.starts_with("field 6 (day of week)"), "{err}");
        let err = parse_cron("0 6 * *").unwrap_err();
        assert!(err.contains("has 4"), "{err}");
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
