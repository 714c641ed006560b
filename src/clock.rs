//! Times as people are shown them, all in UTC, because the server's
//! timestamps are UTC: `HH:MM` for what happens today, and the date as well
//! for older history. Shared by the text protocol's history blocks and the
//! client.
//!
//! Written here rather than taken from a date crate: the formatters at hand
//! (humantime's RFC 3339 one among them) fail on times past the year 9999,
//! and a hostile server or a damaged store can send any timestamp.
//!
//! Owns only the formatting; no time zone data and no clock reading (the
//! caller passes "now", so tests can fix it).

const MINUTE_MS: u64 = 60_000;
const DAY_MS: u64 = 24 * 60 * MINUTE_MS;

/// `HH:MM` of a time in milliseconds since the Unix epoch.
pub fn hhmm(ts_ms: u64) -> String {
    let minutes = ts_ms / MINUTE_MS;
    format!("{:02}:{:02}", (minutes / 60) % 24, minutes % 60)
}

/// `YYYY-MM-DD` of a time in milliseconds since the Unix epoch.
pub fn date(ts_ms: u64) -> String {
    let (y, m, d) = civil_from_days(ts_ms / DAY_MS);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Whether two times fall on the same UTC day.
pub fn same_day(a_ms: u64, b_ms: u64) -> bool {
    a_ms / DAY_MS == b_ms / DAY_MS
}

/// `YYYY-MM-DD HH:MM`, whatever day it is.
pub fn date_time(ts_ms: u64) -> String {
    format!("{} {}", date(ts_ms), hhmm(ts_ms))
}

/// `HH:MM` if `ts_ms` is on the same day as `now_ms`, else
/// `YYYY-MM-DD HH:MM`: a message from yesterday must not pass for today's.
pub fn stamp(ts_ms: u64, now_ms: u64) -> String {
    if same_day(ts_ms, now_ms) {
        hhmm(ts_ms)
    } else {
        format!("{} {}", date(ts_ms), hhmm(ts_ms))
    }
}

/// Year, month (1-12) and day (1-31) of a day count since 1970-01-01, in the
/// proleptic Gregorian calendar (Howard Hinnant's `civil_from_days`, for
/// non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times_in_utc() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(hhmm(0), "00:00");
        // 2026-11-24 11:02:13.5 UTC
        let t = 1_795_518_133_500;
        assert_eq!(date(t), "2026-11-24");
        assert_eq!(hhmm(t), "11:02");
        // Leap days, and the last millisecond of a year.
        assert_eq!(date(951_782_400_000), "2000-02-29");
        assert_eq!(date(1_704_067_199_999), "2023-12-31");
        assert_eq!(date(1_704_067_200_000), "2024-01-01");
        // Absurd times from a hostile server still format.
        assert!(!date(u64::MAX).is_empty());
    }

    #[test]
    fn stamp_shows_the_date_only_for_other_days() {
        let t = 1_795_518_133_500;
        assert_eq!(stamp(t, t + 3_600_000), "11:02");
        assert_eq!(stamp(t, t + DAY_MS), "2026-11-24 11:02");
        assert_eq!(stamp(t + DAY_MS, t), "2026-11-25 11:02");
        assert!(same_day(t, t - 11 * 3_600_000));
        assert!(!same_day(t, t - 12 * 3_600_000));
    }
}
