//! The local time at a located target: every candidate time zone of the region with its
//! share of the area, at a given UTC instant (`geoloc locate --at`, `geoloc audit
//! --at-column`, the web interface). Time zone rules from `chrono-tz` (the IANA database
//! compiled in), so daylight-saving changes and half-hour zones are exact.
use anyhow::{anyhow, bail};
use chrono::{DateTime, Offset, TimeZone, Utc};
use geoloc_engine::Solution;
use serde::Serialize;

/// The local time in one candidate zone.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZoneTime {
    /// IANA name, e.g. `Europe/Paris` (`Etc/GMT-3` at sea).
    pub iana: String,
    /// Share of the region's area in this zone, 0..=1.
    pub share: f64,
    /// The local time, RFC 3339 with the zone's offset, e.g. `2026-03-14T03:30:00+01:00`.
    pub local_time: String,
    /// The zone's offset from UTC at that instant, e.g. `+05:30`.
    pub utc_offset: String,
    /// The zone's abbreviation at that instant (`CET`, `CEST`, `IST`...).
    pub abbreviation: String,
}

/// Parses a UTC instant: RFC 3339 with `Z` or an explicit offset
/// (`2026-03-14T02:30:00Z`, `2026-03-14T03:30:00+01:00`). A time without a zone is an error:
/// it would be ambiguous.
pub fn parse_instant(s: &str) -> anyhow::Result<DateTime<Utc>> {
    let t = s.trim();
    if t.len() > 64 {
        bail!(
            "time {:?}... is too long to be an RFC 3339 instant",
            &t[..20]
        );
    }
    DateTime::parse_from_rfc3339(t)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| {
            anyhow!(
                "{t:?} is not an RFC 3339 instant with a zone ({e}); expected e.g. 2026-03-14T02:30:00Z"
            )
        })
}

/// The local time in zone `iana` at `at`.
pub fn local_time_in(iana: &str, share: f64, at: DateTime<Utc>) -> anyhow::Result<ZoneTime> {
    let tz: chrono_tz::Tz = iana
        .parse()
        .map_err(|_| anyhow!("unknown time zone {iana:?}"))?;
    let local = tz.from_utc_datetime(&at.naive_utc());
    let off = local.offset().fix().local_minus_utc();
    let sign = if off < 0 { '-' } else { '+' };
    let a = off.unsigned_abs();
    Ok(ZoneTime {
        iana: iana.to_string(),
        share,
        local_time: local.to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        utc_offset: format!("{sign}{:02}:{:02}", a / 3600, (a % 3600) / 60),
        abbreviation: local.format("%Z").to_string(),
    })
}

/// The local time at `at` in every candidate zone of `s` (largest share first); the
/// solution's main zone alone (share 1) when it lists no shares. Zones chrono-tz does not
/// know are skipped.
pub fn local_times(s: &Solution, at: DateTime<Utc>) -> Vec<ZoneTime> {
    let mut zones: Vec<(String, f64)> = s
        .timezones
        .iter()
        .filter(|z| z.share.is_finite() && z.share > 0.0)
        .map(|z| (z.iana.clone(), z.share.min(1.0)))
        .collect();
    if zones.is_empty() {
        zones.push((s.timezone.iana.clone(), 1.0));
    }
    zones.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    zones
        .iter()
        .filter_map(|(z, sh)| local_time_in(z, *sh, at).ok())
        .collect()
}

/// One line per zone: `2026-03-14T03:30:00+01:00 CET Europe/Paris (72%)`.
pub fn describe(zs: &[ZoneTime]) -> Vec<String> {
    zs.iter()
        .map(|z| {
            format!(
                "{} {} {} ({:.0}%)",
                z.local_time,
                z.abbreviation,
                z.iana,
                z.share * 100.0
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        parse_instant(s).unwrap()
    }

    #[test]
    fn a_dst_change_is_exact() {
        // New York moves to summer time on 2026-03-08 at 02:00 local (07:00 UTC).
        let before = local_time_in("America/New_York", 1.0, at("2026-03-08T06:59:00Z")).unwrap();
        let after = local_time_in("America/New_York", 1.0, at("2026-03-08T07:00:00Z")).unwrap();
        assert_eq!(before.local_time, "2026-03-08T01:59:00-05:00");
        assert_eq!(before.abbreviation, "EST");
        assert_eq!(after.local_time, "2026-03-08T03:00:00-04:00");
        assert_eq!(after.abbreviation, "EDT");
        // Europe changes on the last Sunday of March (2026-03-29, 01:00 UTC).
        let paris = local_time_in("Europe/Paris", 1.0, at("2026-03-29T01:30:00Z")).unwrap();
        assert_eq!(paris.local_time, "2026-03-29T03:30:00+02:00");
    }

    #[test]
    fn half_hour_and_quarter_hour_zones() {
        let t = at("2026-03-14T02:30:00Z");
        let kolkata = local_time_in("Asia/Kolkata", 1.0, t).unwrap();
        assert_eq!(kolkata.local_time, "2026-03-14T08:00:00+05:30");
        assert_eq!(kolkata.utc_offset, "+05:30");
        let kathmandu = local_time_in("Asia/Kathmandu", 1.0, t).unwrap();
        assert_eq!(kathmandu.utc_offset, "+05:45");
        let stjohns = local_time_in("America/St_Johns", 1.0, t).unwrap();
        // Newfoundland is on summer time (NDT) since 2026-03-08.
        assert_eq!(stjohns.local_time, "2026-03-14T00:00:00-02:30");
        assert_eq!(stjohns.abbreviation, "NDT");
    }

    #[test]
    fn bad_instants_and_zones_are_clear_errors() {
        let e = parse_instant("2026-03-14 02:30").unwrap_err().to_string();
        assert!(e.contains("not an RFC 3339 instant"), "{e}");
        assert!(parse_instant("2026-03-14T02:30:00").is_err());
        assert!(parse_instant(&"9".repeat(1000)).is_err());
        let e = local_time_in("Mars/Olympus", 1.0, at("2026-01-01T00:00:00Z"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown time zone"), "{e}");
    }

    #[test]
    fn every_candidate_zone_with_its_share() {
        let (mut l, _) = crate::result::tests::located();
        l.solution.timezones = vec![
            geoloc_engine::TzShare {
                iana: "Europe/Paris".into(),
                share: 0.25,
            },
            geoloc_engine::TzShare {
                iana: "Europe/London".into(),
                share: 0.75,
            },
        ];
        let zs = local_times(&l.solution, at("2026-03-14T02:30:00Z"));
        assert_eq!(
            describe(&zs),
            [
                "2026-03-14T02:30:00+00:00 GMT Europe/London (75%)",
                "2026-03-14T03:30:00+01:00 CET Europe/Paris (25%)"
            ]
        );
        l.solution.timezones.clear();
        let zs = local_times(&l.solution, at("2026-03-14T02:30:00Z"));
        assert_eq!(zs.len(), 1);
        assert_eq!(zs[0].iana, l.solution.timezone.iana);
    }
}
