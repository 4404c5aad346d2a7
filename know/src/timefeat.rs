//! Local time features of an instant at a place: time zone, local time, local hour,
//! weekday. Offsets (DST included) come from `chrono-tz`'s copy of the IANA database.

use chrono::{DateTime, Datelike, NaiveDateTime, Offset, TimeZone, Timelike, Utc};
use serde::Serialize;

/// Local time of one instant in one zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalTime {
    /// IANA zone name, e.g. `Asia/Kolkata`.
    pub time_zone: String,
    /// Offset from UTC at that instant, seconds (e.g. 19800 for +05:30).
    pub utc_offset_s: i32,
    /// The local wall-clock time, RFC 3339 with its offset (`2026-03-29T03:30:00+02:00`).
    pub local_time: String,
    /// Hour of the local day, 0–23.
    pub local_hour: u32,
    /// Local day of the week, `Mon` … `Sun`.
    pub weekday: String,
}

/// Parses a log timestamp as an instant: RFC 3339 (`2026-03-29T01:30:00Z`, any offset),
/// `YYYY-MM-DD HH:MM:SS[.fff]` taken as UTC, or Unix seconds (integer or decimal, within
/// years 1970–2200). Anything else is an error saying what was expected.
pub fn parse_instant(text: &str) -> Result<DateTime<Utc>, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty timestamp".into());
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(n) = NaiveDateTime::parse_from_str(t, f) {
            return Ok(n.and_utc());
        }
    }
    if let Ok(x) = t.parse::<f64>() {
        // Up to year 2200; a value in milliseconds is refused, not misread.
        if x.is_finite() && (0.0..=7_258_118_400.0).contains(&x) {
            let s = x.floor() as i64;
            let ns = ((x - x.floor()) * 1e9) as u32;
            if let Some(d) = DateTime::from_timestamp(s, ns) {
                return Ok(d);
            }
        }
        return Err(format!(
            "timestamp {t:?} is a number outside Unix seconds 0..7258118400 (milliseconds?)"
        ));
    }
    Err(format!(
        "timestamp {:?} is neither RFC 3339, `YYYY-MM-DD HH:MM:SS` (UTC) nor Unix seconds",
        crate::printable(t, 40)
    ))
}

/// The local time of `at` in the IANA zone `zone`; `None` for an unknown zone name.
pub fn local_time(zone: &str, at: DateTime<Utc>) -> Option<LocalTime> {
    let tz: chrono_tz::Tz = zone.parse().ok()?;
    let local = at.with_timezone(&tz);
    let off = tz.offset_from_utc_datetime(&at.naive_utc()).fix();
    Some(LocalTime {
        time_zone: zone.to_string(),
        utc_offset_s: off.local_minus_utc(),
        local_time: local.fixed_offset().to_rfc3339(),
        local_hour: local.hour(),
        weekday: local.weekday().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_refusals() {
        let a = parse_instant("2026-03-29T01:30:00Z").unwrap();
        assert_eq!(parse_instant("2026-03-29 01:30:00").unwrap(), a);
        assert_eq!(parse_instant("2026-03-29T03:30:00+02:00").unwrap(), a);
        assert_eq!(parse_instant(&a.timestamp().to_string()).unwrap(), a);
        assert!(parse_instant("1774747800000")
            .unwrap_err()
            .contains("milliseconds"));
        assert!(parse_instant("yesterday").unwrap_err().contains("RFC 3339"));
        assert!(parse_instant("").is_err());
        assert!(parse_instant("NaN").is_err());
    }

    #[test]
    fn dst_change_and_half_hour_zone() {
        // Europe/Berlin springs forward at 01:00 UTC on 2026-03-29.
        let before = parse_instant("2026-03-29T00:59:00Z").unwrap();
        let after = parse_instant("2026-03-29T01:00:00Z").unwrap();
        let b = local_time("Europe/Berlin", before).unwrap();
        let a = local_time("Europe/Berlin", after).unwrap();
        assert_eq!((b.local_hour, b.utc_offset_s), (1, 3600));
        assert_eq!((a.local_hour, a.utc_offset_s), (3, 7200));
        assert_eq!(a.weekday, "Sun");
        let k = local_time("Asia/Kolkata", after).unwrap();
        assert_eq!((k.local_hour, k.utc_offset_s), (6, 19800));
        assert_eq!(k.local_time, "2026-03-29T06:30:00+05:30");
        assert!(local_time("Mars/Olympus", after).is_none());
    }
}
