//! Comparing a GeoIP database's answer with the measured region.
//!
//! The verdict uses only sound bounds (2/3 c), so `provably-wrong` is a proof: some
//! landmark's RTT is too short for the target to be at the database's point.

use serde::{Deserialize, Serialize};

use crate::anycast::Instance;
use crate::enrich::round1;
use crate::region::Constraint;
use crate::sphere::{distance_km, LatLon};

/// What a GeoIP City database says about an address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeoIpRecord {
    pub lat: f64,
    pub lon: f64,
    pub city: Option<String>,
    /// ISO 3166-1 alpha-2 code.
    pub country: Option<String>,
    pub accuracy_radius_km: Option<f64>,
}

/// The verdict on a GeoIP record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The database's point is inside the feasible region.
    Consistent,
    /// The database's point is outside a sound-bound disc: it cannot be right.
    ProvablyWrong,
    /// The database has no position for this address.
    NoData,
}

/// The database's answer next to ours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaxmindComparison {
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub city: Option<String>,
    pub country: Option<String>,
    pub accuracy_radius_km: Option<f64>,
    /// Distance from the database's point to our estimate, km.
    pub distance_km: Option<f64>,
    pub verdict: Verdict,
    /// For `provably-wrong`: the landmark whose RTT rules the point out...
    pub ruled_out_by: Option<String>,
    /// ...and by how many km the point lies beyond that landmark's sound bound.
    pub excess_km: Option<f64>,
}

impl MaxmindComparison {
    /// The database had nothing for the address.
    pub fn no_data() -> Self {
        Self {
            lat: None,
            lon: None,
            city: None,
            country: None,
            accuracy_radius_km: None,
            distance_km: None,
            verdict: Verdict::NoData,
            ruled_out_by: None,
            excess_km: None,
        }
    }
}

/// Judges `rec` against the sound discs (`names[i]` names `sound[i]`). For an anycast
/// target, a point within any instance's disc is consistent.
pub fn compare(
    rec: &GeoIpRecord,
    estimate: LatLon,
    sound: &[Constraint],
    names: &[&str],
    instances: &[Instance],
) -> MaxmindComparison {
    let p = LatLon::new(rec.lat, rec.lon);
    let worst = sound
        .iter()
        .enumerate()
        .map(|(i, c)| (i, distance_km(c.center, p) - c.max_km))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let in_instance = instances
        .iter()
        .any(|x| distance_km(LatLon::new(x.lat, x.lon), p) <= x.radius_km);
    let (verdict, ruled_out_by, excess_km) = match worst {
        Some((i, excess)) if excess > 0.0 && !in_instance => (
            Verdict::ProvablyWrong,
            Some(names[i].to_string()),
            Some(round1(excess)),
        ),
        _ => (Verdict::Consistent, None, None),
    };
    MaxmindComparison {
        lat: Some(rec.lat),
        lon: Some(rec.lon),
        city: rec.city.clone(),
        country: rec.country.clone(),
        accuracy_radius_km: rec.accuracy_radius_km,
        distance_km: Some(round1(distance_km(p, estimate))),
        verdict,
        ruled_out_by,
        excess_km,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sphere::destination;

    const PARIS: LatLon = LatLon::new(48.8566, 2.3522);
    const LONDON: LatLon = LatLon::new(51.5074, -0.1278);
    const BERLIN: LatLon = LatLon::new(52.52, 13.405);
    const TOKYO: LatLon = LatLon::new(35.6762, 139.6503);

    fn record(p: LatLon) -> GeoIpRecord {
        GeoIpRecord {
            lat: p.lat,
            lon: p.lon,
            city: Some("Somewhere".into()),
            country: Some("XX".into()),
            accuracy_radius_km: Some(20.0),
        }
    }

    fn instance(at: LatLon, landmark: &str, radius_km: f64) -> Instance {
        Instance {
            lat: at.lat,
            lon: at.lon,
            city: "X".into(),
            country: "XX".into(),
            landmark: landmark.into(),
            radius_km,
        }
    }

    #[test]
    fn inside_every_disc_is_consistent_and_the_record_is_copied() {
        let sound = [
            Constraint::disc(LONDON, 500.0),
            Constraint::disc(BERLIN, 1000.0),
        ];
        let c = compare(&record(PARIS), PARIS, &sound, &["lon", "ber"], &[]);
        assert_eq!(c.verdict, Verdict::Consistent);
        assert_eq!((c.ruled_out_by, c.excess_km), (None, None));
        assert_eq!((c.lat, c.lon), (Some(PARIS.lat), Some(PARIS.lon)));
        assert_eq!(c.city.as_deref(), Some("Somewhere"));
        assert_eq!(c.country.as_deref(), Some("XX"));
        assert_eq!(c.accuracy_radius_km, Some(20.0));
        assert_eq!(c.distance_km, Some(0.0));
        // The distance is to our estimate, rounded to 0.1 km.
        let c = compare(&record(PARIS), LONDON, &sound, &["lon", "ber"], &[]);
        assert_eq!(c.distance_km, Some(round1(distance_km(PARIS, LONDON))));
        assert!((c.distance_km.unwrap() - 343.6).abs() < 1.0, "{c:?}");
    }

    #[test]
    fn outside_a_disc_is_provably_wrong_naming_the_worst_landmark() {
        let (d_lon, d_ber) = (distance_km(LONDON, TOKYO), distance_km(BERLIN, TOKYO));
        // Tokyo misses London's disc by 100 km and Berlin's by 2000 km.
        let sound = [
            Constraint::disc(LONDON, d_lon - 100.0),
            Constraint::disc(BERLIN, d_ber - 2000.0),
            Constraint::disc(PARIS, 20_000.0),
        ];
        let c = compare(&record(TOKYO), PARIS, &sound, &["lon", "ber", "par"], &[]);
        assert_eq!(c.verdict, Verdict::ProvablyWrong);
        assert_eq!(c.ruled_out_by.as_deref(), Some("ber"));
        assert_eq!(c.excess_km, Some(2000.0));
        // Order does not matter: the largest excess wins wherever it is.
        let rev = [sound[2], sound[1], sound[0]];
        let c = compare(&record(TOKYO), PARIS, &rev, &["par", "ber", "lon"], &[]);
        assert_eq!(c.ruled_out_by.as_deref(), Some("ber"));
        assert_eq!(c.excess_km, Some(2000.0));
        // The record is still reported next to the verdict.
        assert_eq!(c.city.as_deref(), Some("Somewhere"));
        assert_eq!(c.distance_km, Some(round1(distance_km(TOKYO, PARIS))));
    }

    #[test]
    fn on_the_boundary_is_consistent_just_beyond_it_is_not() {
        let p = destination(PARIS, 40.0, 750.0);
        let d = distance_km(PARIS, p);
        let on = [Constraint::disc(PARIS, d)];
        let c = compare(&record(p), PARIS, &on, &["par"], &[]);
        assert_eq!(c.verdict, Verdict::Consistent, "{c:?}");
        let beyond = [Constraint::disc(PARIS, d - 0.3)];
        let c = compare(&record(p), PARIS, &beyond, &["par"], &[]);
        assert_eq!(c.verdict, Verdict::ProvablyWrong, "{c:?}");
        assert_eq!(c.ruled_out_by.as_deref(), Some("par"));
        assert_eq!(c.excess_km, Some(0.3));
        // No disc at all proves nothing.
        let c = compare(&record(p), PARIS, &[], &[], &[]);
        assert_eq!(c.verdict, Verdict::Consistent);
    }

    #[test]
    fn anycast_a_point_in_any_instance_disc_is_consistent() {
        // The kept discs are European; the address also answers from Tokyo.
        let sound = [
            Constraint::disc(LONDON, 600.0),
            Constraint::disc(BERLIN, 900.0),
        ];
        let names = ["lon", "ber"];
        let instances = [instance(PARIS, "lon", 600.0), instance(TOKYO, "tyo", 300.0)];
        let near_tokyo = destination(TOKYO, 90.0, 299.0);
        let c = compare(&record(near_tokyo), PARIS, &sound, &names, &instances);
        assert_eq!(c.verdict, Verdict::Consistent, "{c:?}");
        assert_eq!((c.ruled_out_by, c.excess_km), (None, None));
        // Beyond every instance's disc the sound discs still prove it wrong.
        let beyond = destination(TOKYO, 90.0, 301.0);
        let c = compare(&record(beyond), PARIS, &sound, &names, &instances);
        assert_eq!(c.verdict, Verdict::ProvablyWrong, "{c:?}");
        assert_eq!(c.ruled_out_by.as_deref(), Some("lon"));
        let want = round1(distance_km(LONDON, beyond) - 600.0);
        assert_eq!(c.excess_km, Some(want));
        // Without instances (unicast), the Tokyo point is wrong too.
        let c = compare(&record(near_tokyo), PARIS, &sound, &names, &[]);
        assert_eq!(c.verdict, Verdict::ProvablyWrong);
    }

    #[test]
    fn no_data_and_the_json_names() {
        let c = MaxmindComparison::no_data();
        assert_eq!(c.verdict, Verdict::NoData);
        assert!(c.lat.is_none() && c.distance_km.is_none() && c.ruled_out_by.is_none());
        for (v, name) in [
            (Verdict::Consistent, "consistent"),
            (Verdict::ProvablyWrong, "provably-wrong"),
            (Verdict::NoData, "no-data"),
        ] {
            assert_eq!(serde_json::to_value(v).unwrap(), name);
        }
    }

    fn around(center: LatLon, name: &str, rtt_ms: f64) -> Vec<crate::solve::Measurement> {
        (0..4)
            .map(|k| crate::solve::Measurement {
                landmark: format!("{name}{k}"),
                pos: destination(center, 90.0 * k as f64, 50.0),
                rtt_ms,
                kind: crate::solve::Kind::Echo,
            })
            .collect()
    }

    fn solve_with(
        ms: &[crate::solve::Measurement],
        rec: Option<GeoIpRecord>,
    ) -> crate::solve::Solution {
        crate::solve::solve(
            ms,
            &crate::solve::SolveOptions {
                method: crate::solve::Method::Cbg,
                geoip: rec,
                geoip_checked: true,
                region_geometry: false,
                timezone_shares: false,
                at_unix_s: Some(0),
                ..Default::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn solve_judges_with_the_kept_landmarks_only() {
        // Four landmarks around Paris agree; "liar" claims Tokyo but answers in 1 ms (its
        // disc is 100 km around Tokyo): it is left out and cannot rule Paris out.
        let mut ms = around(PARIS, "par", 4.0);
        ms.push(crate::solve::Measurement {
            landmark: "liar".into(),
            pos: TOKYO,
            rtt_ms: 1.0,
            kind: crate::solve::Kind::Echo,
        });
        let s = solve_with(&ms, Some(record(PARIS)));
        assert!(!s.anycast);
        assert_eq!(s.dropped.len(), 1);
        assert_eq!(s.maxmind.unwrap().verdict, Verdict::Consistent);
        // Berlin is beyond the Paris landmarks' 4 ms (~400 km) discs.
        let s = solve_with(&ms, Some(record(BERLIN)));
        let m = s.maxmind.unwrap();
        assert_eq!(m.verdict, Verdict::ProvablyWrong);
        assert!(m.ruled_out_by.unwrap().starts_with("par"));
        assert!(m.excess_km.unwrap() > 300.0, "{:?}", m.excess_km);
        // A database without a record for the address.
        let s = solve_with(&ms, None);
        assert_eq!(s.maxmind.unwrap().verdict, Verdict::NoData);
    }

    #[test]
    fn solve_accepts_any_instance_of_an_anycast_target() {
        let mut ms = around(PARIS, "par", 1.5);
        ms.extend(around(TOKYO, "tyo", 1.5));
        let s = solve_with(&ms, Some(record(TOKYO)));
        assert!(s.anycast, "{:?}", s.dropped);
        assert_eq!(s.instances.len(), 2, "{:?}", s.instances);
        let m = s.maxmind.unwrap();
        assert_eq!(m.verdict, Verdict::Consistent, "{m:?}");
        let s = solve_with(&ms, Some(record(PARIS)));
        assert_eq!(s.maxmind.unwrap().verdict, Verdict::Consistent);
        // Sydney is in no instance's disc.
        let s = solve_with(&ms, Some(record(LatLon::new(-33.87, 151.21))));
        let m = s.maxmind.unwrap();
        assert_eq!(m.verdict, Verdict::ProvablyWrong, "{m:?}");
        assert!(m.excess_km.unwrap() > 5000.0, "{m:?}");
    }
}
