//! CronJob schedules: five-field cron expressions and `@hourly`-style
//! macros (Vixie cron's, as Kubernetes' parser takes them: day of month and
//! day of week ORed when both are set), evaluated in a `timeZone` from the
//! system's zoneinfo, through the `croner` and `jiff` crates.

use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use jiff::tz::TimeZone;

/// At most this many missed start times are looked at (Kubernetes gives up past 100).
pub const MAX_MISSED: usize = 100;

/// Parses a schedule, refusing seconds, years and a `TZ=` prefix.
pub fn parse(schedule: &str) -> Result<Cron, String> {
    let s = schedule.trim();
    if s.starts_with("TZ=") || s.starts_with("CRON_TZ=") {
        return Err("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into());
    }
    if s.starts_with('@') {
        let known = [
            "@yearly",
            "@annually",
            "@monthly",
            "@weekly",
            "@daily",
            "@midnight",
            "@hourly",
        ];
        if !known.contains(&s.to_ascii_lowercase().as_str()) {
            return Err(format!("unrecognized descriptor: {s}"));
        }
    } else if s.split_whitespace().count() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: {s}",
            s.split_whitespace().count()
        ));
    }
    let macro_ = match s.to_ascii_lowercase().as_str() {
        "@midnight" => "@daily".to_string(),
        other => other.to_string(),
    };
    let pattern = if s.starts_with('@') { macro_ } else { s.to_string() };
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(&pattern)
        .map_err(|e| e.to_string())
}

/// The zone of a `timeZone` (the node's local zone when none is given, as Kubernetes uses its own).
pub fn zone(name: Option<&str>) -> Result<TimeZone, String> {
    match name {
        None | Some("") => Ok(TimeZone::try_system().unwrap_or(TimeZone::UTC)),
        Some(n) => TimeZone::get(n).map_err(|_| format!("unknown time zone {n}")),
    }
}

fn to_zoned(t: chrono::DateTime<chrono::Utc>, tz: &TimeZone) -> Option<jiff::Zoned> {
    let ts = jiff::Timestamp::from_second(t.timestamp()).ok()?;
    Some(ts.to_zoned(tz.clone()))
}

fn to_utc(z: &jiff::Zoned) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(z.timestamp().as_second(), 0)
}

/// The first start time after `t`.
pub fn next_after(
    cron: &Cron,
    tz: &TimeZone,
    t: chrono::DateTime<chrono::Utc>,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let z = to_zoned(t, tz)?;
    to_utc(&cron.find_next_occurrence(&z, false).ok()?)
}

/// The latest start time in `(since, now]` and how many there were (at
/// most [`MAX_MISSED`] + 1 counted), as Kubernetes' `mostRecentScheduleTime`.
pub fn most_recent(
    cron: &Cron,
    tz: &TimeZone,
    since: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
) -> (Option<chrono::DateTime<chrono::Utc>>, usize) {
    let mut last = None;
    let mut count = 0;
    let mut t = since;
    while let Some(next) = next_after(cron, tz, t) {
        if next > now {
            break;
        }
        last = Some(next);
        count += 1;
        t = next;
        if count > MAX_MISSED {
            // Jump to the latest one without counting further.
            let mut back = now;
            if let Some(z) = to_zoned(now, tz) {
                if let Ok(prev) = cron.find_previous_occurrence(&z, true) {
                    back = to_utc(&prev).unwrap_or(now);
                }
            }
            last = Some(back);
            break;
        }
    }
    (last, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> chrono::DateTime<chrono::Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn schedules_parse_like_kubernetes() {
        assert!(parse("*/5 * * * *").is_ok());
        assert!(parse("0 3 * * MON-FRI").is_ok());
        assert!(parse("@hourly").is_ok());
        assert!(parse("@midnight").is_ok());
        assert!(parse("0 * * * * *").unwrap_err().contains("expected exactly 5 fields"));
        assert!(parse("TZ=UTC 0 * * * *").unwrap_err().contains("use timeZone field"));
        assert!(parse("@every 5m").is_err());
        assert!(parse("61 * * * *").is_err());
        assert!(zone(Some("Europe/Berlin")).is_ok());
        assert_eq!(
            zone(Some("Mars/Olympus")).unwrap_err(),
            "unknown time zone Mars/Olympus"
        );
    }

    #[test]
    fn next_and_missed_times_follow_the_zone() {
        let utc = zone(Some("UTC")).unwrap();
        let hourly = parse("@hourly").unwrap();
        assert_eq!(
            next_after(&hourly, &utc, at("2026-01-01T10:20:00Z")),
            Some(at("2026-01-01T11:00:00Z"))
        );
        // 09:00 in Berlin is 08:00 UTC in winter.
        let berlin = zone(Some("Europe/Berlin")).unwrap();
        let nine = parse("0 9 * * *").unwrap();
        assert_eq!(
            next_after(&nine, &berlin, at("2026-01-01T00:00:00Z")),
            Some(at("2026-01-01T08:00:00Z"))
        );
        // Three hourly starts were missed; the latest is the one to run.
        let (last, n) = most_recent(&hourly, &utc, at("2026-01-01T10:00:00Z"), at("2026-01-01T13:30:00Z"));
        assert_eq!((last, n), (Some(at("2026-01-01T13:00:00Z")), 3));
        let (last, n) = most_recent(&hourly, &utc, at("2026-01-01T10:00:00Z"), at("2026-01-01T10:59:59Z"));
        assert_eq!((last, n), (None, 0));
        // Over a hundred missed: counted past the limit, the latest still found.
        let minutely = parse("* * * * *").unwrap();
        let (last, n) = most_recent(&minutely, &utc, at("2026-01-01T00:00:00Z"), at("2026-01-01T05:00:30Z"));
        assert_eq!(last, Some(at("2026-01-01T05:00:00Z")));
        assert!(n > MAX_MISSED);
        // Day of month and day of week are ORed when both are set (Vixie cron).
        let either = parse("0 0 13 * FRI").unwrap();
        assert_eq!(
            next_after(&either, &utc, at("2026-02-01T00:00:00Z")),
            Some(at("2026-02-06T00:00:00Z"))
        );
    }
}
