//! Comparing a GeoIP database's answer with the measured region.
//!
//! The verdict uses only sound bounds (2/3 c), so each landmark's disc is a fact about the
//! target *if* the landmark is where it says and the address is unicast. A single landmark
//! is not enough for a proof: the WonderNetwork mesh holds a server labelled in the wrong
//! city, and a dishonest probe can declare any position. So:
//!
//! - `provably-wrong`: at least [`PROOF_RULINGS`] (2) kept landmarks **each alone** rule
//!   the point out (the point is beyond its sound disc). The proof holds unless the address
//!   is anycast or *every* one of these landmarks has a wrong declared position; one
//!   mislabelled or lying landmark cannot make it false. The verdict names every ruling
//!   landmark with its distance to the point and its bound, and states the assumption.
//! - `likely-wrong`: only one landmark rules the point out (named), or the address is
//!   anycast (an instance no probe reached could sit at the point), or the point lies in
//!   the disc of a small group of landmarks that may be colluding or may reveal an anycast
//!   instance. Evidence, not a proof.
//! - `consistent`: no kept landmark rules the point out (or it is inside an anycast
//!   instance's disc).
//!
//! Why two and not "one vetted landmark consistent with all others": the engine does not
//! know which landmarks were vetted, and a mislabelled server passes the consistency
//! check whenever its disc is large enough to meet the others' region (the Rome case of
//! issue 8). Two independent rulings need two bad landmarks that both exclude the truth.

use serde::{Deserialize, Serialize};

use crate::anycast::Instance;
use crate::enrich::round1;
use crate::region::Constraint;
use crate::sphere::{distance_km, LatLon};

/// Landmarks that must each rule a point out for `provably-wrong`.
pub const PROOF_RULINGS: usize = 2;

/// Rulings listed in a verdict (the largest excesses first).
pub const MAX_RULINGS: usize = 8;

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
    /// At least [`PROOF_RULINGS`] landmarks each rule the point out on their own: wrong
    /// unless the address is anycast or all of them have wrong declared positions.
    ProvablyWrong,
    /// The database has no position for this address.
    NoData,
    /// One landmark rules the point out, or the address is (or may be) anycast: evidence
    /// that the point is wrong, not a proof.
    LikelyWrong,
}

impl Verdict {
    /// The name used in JSON, CSV and text.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Consistent => "consistent",
            Verdict::ProvablyWrong => "provably-wrong",
            Verdict::NoData => "no-data",
            Verdict::LikelyWrong => "likely-wrong",
        }
    }
}

/// One landmark whose sound disc leaves the database's point out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ruling {
    pub landmark: String,
    /// From the landmark's declared position to the database's point, km.
    pub distance_km: f64,
    /// The landmark's sound bound: the target is within this many km of it, km.
    pub bound_km: f64,
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
    /// For `provably-wrong` and `likely-wrong`: the landmark whose RTT rules the point out
    /// by the most...
    pub ruled_out_by: Option<String>,
    /// ...and by how many km the point lies beyond that landmark's sound bound.
    pub excess_km: Option<f64>,
    /// Every kept landmark that rules the point out on its own (at most [`MAX_RULINGS`],
    /// largest excess first); empty for `consistent` and `no-data`.
    #[serde(default)]
    pub rulings: Vec<Ruling>,
    /// Landmarks that rule the point out in all (`rulings` may list fewer).
    #[serde(default)]
    pub rulings_total: usize,
    /// What the verdict assumes, in words (for `provably-wrong` and `likely-wrong`).
    #[serde(default)]
    pub assumption: Option<String>,
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
            rulings: vec![],
            rulings_total: 0,
            assumption: None,
        }
    }
}

/// How sure we are the address answers from one place.
#[derive(Debug, Clone, Copy)]
pub enum Cast<'a> {
    /// No anycast split was seen.
    Unicast,
    /// Anycast was shown (a split that no small group explains): these instances.
    Anycast(&'a [Instance]),
    /// A split that rests on a small group of landmarks (anycast or colluding probes):
    /// their sound discs.
    Suspect(&'a [Constraint]),
}

/// Judges `rec` against the kept landmarks' sound discs (`names[i]` names `sound[i]`).
pub fn compare(
    rec: &GeoIpRecord,
    estimate: LatLon,
    sound: &[Constraint],
    names: &[&str],
    cast: Cast<'_>,
) -> MaxmindComparison {
    let p = LatLon::new(rec.lat, rec.lon);
    let mut rulings: Vec<(f64, Ruling)> = sound
        .iter()
        .zip(names)
        .filter_map(|(c, name)| {
            let d = distance_km(c.center, p);
            (d - c.max_km > 0.0).then(|| {
                (
                    d - c.max_km,
                    Ruling {
                        landmark: name.to_string(),
                        distance_km: round1(d),
                        bound_km: round1(c.max_km),
                    },
                )
            })
        })
        .collect();
    rulings.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.landmark.cmp(&b.1.landmark)));
    let total = rulings.len();
    let in_instance = match cast {
        Cast::Anycast(instances) => instances
            .iter()
            .any(|x| distance_km(LatLon::new(x.lat, x.lon), p) <= x.radius_km),
        _ => false,
    };
    let in_suspect = match cast {
        Cast::Suspect(discs) => discs.iter().any(|c| c.contains(p)),
        _ => false,
    };
    let verdict = if total == 0 || in_instance {
        Verdict::Consistent
    } else if total >= PROOF_RULINGS
        && match cast {
            Cast::Unicast => true,
            Cast::Suspect(_) => !in_suspect,
            Cast::Anycast(_) => false,
        }
    {
        Verdict::ProvablyWrong
    } else {
        Verdict::LikelyWrong
    };
    let assumption = (verdict != Verdict::Consistent).then(|| {
        let who = if total == 1 {
            format!("{} alone rules the point out", rulings[0].1.landmark)
        } else {
            format!("each of {total} landmarks alone rules the point out")
        };
        match (verdict, cast) {
            (Verdict::ProvablyWrong, Cast::Unicast) => format!(
                "{who}; wrong unless the address is anycast (no anycast was shown) or every \
                 one of these landmarks has a wrong declared position"
            ),
            (Verdict::ProvablyWrong, _) => format!(
                "{who}; wrong unless the address is anycast (a small group of landmarks \
                 suggests it, but the point is in none of their discs) or every one of \
                 these landmarks has a wrong declared position"
            ),
            (_, Cast::Anycast(_)) => format!(
                "{who}, and it is in no anycast instance's disc; but the address is anycast \
                 and an instance that no landmark reached could be there"
            ),
            (_, Cast::Suspect(_)) if in_suspect => format!(
                "{who}, but it lies in the disc of landmarks that are either colluding or \
                 reveal an anycast instance"
            ),
            _ => format!(
                "only {who}: a landmark with a wrong declared position could do that alone; \
                 assumes the address is unicast"
            ),
        }
    });
    let (ruled_out_by, excess_km) = match rulings.first() {
        Some((excess, r)) if verdict != Verdict::Consistent => {
            (Some(r.landmark.clone()), Some(round1(*excess)))
        }
        _ => (None, None),
    };
    let rulings = if verdict == Verdict::Consistent {
        vec![]
    } else {
        rulings.into_iter().take(MAX_RULINGS).map(|r| r.1).collect()
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
        rulings_total: if verdict == Verdict::Consistent {
            0
        } else {
            total
        },
        rulings,
        assumption,
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
    const ROME: LatLon = LatLon::new(41.9028, 12.4964);
    const MADRID: LatLon = LatLon::new(40.4168, -3.7038);

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

    fn names(c: &MaxmindComparison) -> Vec<&str> {
        c.rulings.iter().map(|r| r.landmark.as_str()).collect()
    }

    #[test]
    fn inside_every_disc_is_consistent_and_the_record_is_copied() {
        let sound = [
            Constraint::disc(LONDON, 500.0),
            Constraint::disc(BERLIN, 1000.0),
        ];
        let c = compare(
            &record(PARIS),
            PARIS,
            &sound,
            &["lon", "ber"],
            Cast::Unicast,
        );
        assert_eq!(c.verdict, Verdict::Consistent);
        assert_eq!((c.ruled_out_by, c.excess_km), (None, None));
        assert!(c.rulings.is_empty() && c.rulings_total == 0 && c.assumption.is_none());
        assert_eq!((c.lat, c.lon), (Some(PARIS.lat), Some(PARIS.lon)));
        assert_eq!(c.city.as_deref(), Some("Somewhere"));
        assert_eq!(c.country.as_deref(), Some("XX"));
        assert_eq!(c.accuracy_radius_km, Some(20.0));
        assert_eq!(c.distance_km, Some(0.0));
        // The distance is to our estimate, rounded to 0.1 km.
        let c = compare(
            &record(PARIS),
            LONDON,
            &sound,
            &["lon", "ber"],
            Cast::Unicast,
        );
        assert_eq!(c.distance_km, Some(round1(distance_km(PARIS, LONDON))));
        assert!((c.distance_km.unwrap() - 343.6).abs() < 1.0, "{c:?}");
    }

    #[test]
    fn two_rulings_are_a_proof_naming_every_ruling_landmark() {
        let (d_lon, d_ber) = (distance_km(LONDON, TOKYO), distance_km(BERLIN, TOKYO));
        // Tokyo misses London's disc by 100 km and Berlin's by 2000 km.
        let sound = [
            Constraint::disc(LONDON, d_lon - 100.0),
            Constraint::disc(BERLIN, d_ber - 2000.0),
            Constraint::disc(PARIS, 20_000.0),
        ];
        let c = compare(
            &record(TOKYO),
            PARIS,
            &sound,
            &["lon", "ber", "par"],
            Cast::Unicast,
        );
        assert_eq!(c.verdict, Verdict::ProvablyWrong);
        assert_eq!(c.ruled_out_by.as_deref(), Some("ber"));
        assert_eq!(c.excess_km, Some(2000.0));
        assert_eq!(names(&c), ["ber", "lon"]);
        assert_eq!(c.rulings_total, 2);
        let ber = &c.rulings[0];
        assert_eq!(ber.distance_km, round1(d_ber));
        assert_eq!(ber.bound_km, round1(d_ber - 2000.0));
        let a = c.assumption.as_deref().unwrap();
        assert!(a.contains("each of 2 landmarks alone"), "{a}");
        assert!(a.contains("unless the address is anycast"), "{a}");
        // Order does not matter: the largest excess wins wherever it is.
        let rev = [sound[2], sound[1], sound[0]];
        let c = compare(
            &record(TOKYO),
            PARIS,
            &rev,
            &["par", "ber", "lon"],
            Cast::Unicast,
        );
        assert_eq!(c.ruled_out_by.as_deref(), Some("ber"));
        assert_eq!(c.excess_km, Some(2000.0));
        assert_eq!(names(&c), ["ber", "lon"]);
        // The record is still reported next to the verdict.
        assert_eq!(c.city.as_deref(), Some("Somewhere"));
        assert_eq!(c.distance_km, Some(round1(distance_km(TOKYO, PARIS))));
    }

    #[test]
    fn one_ruling_is_likely_wrong_with_that_landmark_named() {
        let d_ber = distance_km(BERLIN, TOKYO);
        let sound = [
            Constraint::disc(BERLIN, d_ber - 2000.0),
            Constraint::disc(PARIS, 20_000.0),
        ];
        let c = compare(
            &record(TOKYO),
            PARIS,
            &sound,
            &["ber", "par"],
            Cast::Unicast,
        );
        assert_eq!(c.verdict, Verdict::LikelyWrong, "{c:?}");
        assert_eq!(c.ruled_out_by.as_deref(), Some("ber"));
        assert_eq!(c.excess_km, Some(2000.0));
        assert_eq!(names(&c), ["ber"]);
        let a = c.assumption.as_deref().unwrap();
        assert!(a.contains("only ber alone rules the point out"), "{a}");
        assert!(a.contains("wrong declared position"), "{a}");
    }

    #[test]
    fn on_the_boundary_is_consistent_just_beyond_it_is_not() {
        let p = destination(PARIS, 40.0, 750.0);
        let d = distance_km(PARIS, p);
        let q = destination(PARIS, 220.0, 750.0);
        let dq = distance_km(q, p);
        let on = [Constraint::disc(PARIS, d), Constraint::disc(q, dq)];
        let c = compare(&record(p), PARIS, &on, &["par", "q"], Cast::Unicast);
        assert_eq!(c.verdict, Verdict::Consistent, "{c:?}");
        let beyond = [
            Constraint::disc(PARIS, d - 0.3),
            Constraint::disc(q, dq - 0.5),
        ];
        let c = compare(&record(p), PARIS, &beyond, &["par", "q"], Cast::Unicast);
        assert_eq!(c.verdict, Verdict::ProvablyWrong, "{c:?}");
        assert_eq!(c.ruled_out_by.as_deref(), Some("q"));
        assert_eq!(c.excess_km, Some(0.5));
        // No disc at all proves nothing.
        let c = compare(&record(p), PARIS, &[], &[], Cast::Unicast);
        assert_eq!(c.verdict, Verdict::Consistent);
    }

    #[test]
    fn anycast_is_never_a_proof() {
        // The kept discs are European; the address also answers from Tokyo.
        let sound = [
            Constraint::disc(LONDON, 600.0),
            Constraint::disc(BERLIN, 900.0),
        ];
        let names_ = ["lon", "ber"];
        let instances = [instance(PARIS, "lon", 600.0), instance(TOKYO, "tyo", 300.0)];
        let near_tokyo = destination(TOKYO, 90.0, 299.0);
        let any = Cast::Anycast(&instances);
        let c = compare(&record(near_tokyo), PARIS, &sound, &names_, any);
        assert_eq!(c.verdict, Verdict::Consistent, "{c:?}");
        assert_eq!((c.ruled_out_by, c.excess_km), (None, None));
        // Beyond every instance's disc: an instance no landmark reached could be there.
        let beyond = destination(TOKYO, 90.0, 301.0);
        let c = compare(&record(beyond), PARIS, &sound, &names_, any);
        assert_eq!(c.verdict, Verdict::LikelyWrong, "{c:?}");
        assert_eq!(c.ruled_out_by.as_deref(), Some("lon"));
        let want = round1(distance_km(LONDON, beyond) - 600.0);
        assert_eq!(c.excess_km, Some(want));
        assert!(c.assumption.unwrap().contains("anycast"));
        // Without instances (unicast), the Tokyo point is proved wrong.
        let c = compare(&record(near_tokyo), PARIS, &sound, &names_, Cast::Unicast);
        assert_eq!(c.verdict, Verdict::ProvablyWrong);
    }

    #[test]
    fn a_point_in_a_suspect_groups_disc_is_not_proved_wrong() {
        let sound = [
            Constraint::disc(LONDON, 600.0),
            Constraint::disc(BERLIN, 900.0),
        ];
        let suspect = [Constraint::disc(TOKYO, 300.0)];
        let c = compare(
            &record(TOKYO),
            PARIS,
            &sound,
            &["lon", "ber"],
            Cast::Suspect(&suspect),
        );
        assert_eq!(c.verdict, Verdict::LikelyWrong, "{c:?}");
        assert!(c.assumption.unwrap().contains("colluding"));
        // Elsewhere the two rulings still prove it.
        let sydney = LatLon::new(-33.87, 151.21);
        let c = compare(
            &record(sydney),
            PARIS,
            &sound,
            &["lon", "ber"],
            Cast::Suspect(&suspect),
        );
        assert_eq!(c.verdict, Verdict::ProvablyWrong, "{c:?}");
    }

    #[test]
    fn no_data_and_the_json_names() {
        let c = MaxmindComparison::no_data();
        assert_eq!(c.verdict, Verdict::NoData);
        assert!(c.lat.is_none() && c.distance_km.is_none() && c.ruled_out_by.is_none());
        for (v, name) in [
            (Verdict::Consistent, "consistent"),
            (Verdict::ProvablyWrong, "provably-wrong"),
            (Verdict::LikelyWrong, "likely-wrong"),
            (Verdict::NoData, "no-data"),
        ] {
            assert_eq!(serde_json::to_value(v).unwrap(), name);
            assert_eq!(v.name(), name);
        }
        // Answers stored before the rulings existed still read.
        let old = serde_json::json!({"lat": 1.0, "lon": 2.0, "city": null, "country": null,
            "accuracy_radius_km": null, "distance_km": 3.0, "verdict": "provably-wrong",
            "ruled_out_by": "x", "excess_km": 4.0});
        let c: MaxmindComparison = serde_json::from_value(old).unwrap();
        assert!(c.rulings.is_empty() && c.assumption.is_none());
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
        assert_eq!(m.rulings_total, 4, "{:?}", m.rulings);
        // A database without a record for the address.
        let s = solve_with(&ms, None);
        assert_eq!(s.maxmind.unwrap().verdict, Verdict::NoData);
    }

    /// Issue 8's Rome case: a landmark labelled in Madrid but really near Rome answers in
    /// 4 ms. Its 400 km disc around Madrid still meets the loose discs of the honest
    /// landmarks, so it is kept, and it alone leaves MaxMind's right answer out.
    #[test]
    fn one_mislabelled_landmark_cannot_prove_the_truth_wrong() {
        let mut ms = Vec::new();
        for (k, (bearing, dist)) in [
            (0.0, 900.0),
            (90.0, 1100.0),
            (180.0, 800.0),
            (270.0, 1000.0),
        ]
        .into_iter()
        .enumerate()
        {
            let pos = destination(ROME, bearing, dist);
            // Honest: a bound a little above the distance (2/3 c is 100 km per ms of RTT).
            ms.push(crate::solve::Measurement {
                landmark: format!("honest{k}"),
                pos,
                rtt_ms: (distance_km(ROME, pos) + 1200.0) / 100.0,
                kind: crate::solve::Kind::Echo,
            });
        }
        ms.push(crate::solve::Measurement {
            landmark: "madrid-mislabelled".into(),
            pos: MADRID,
            rtt_ms: 4.0,
            kind: crate::solve::Kind::Echo,
        });
        let s = solve_with(&ms, Some(record(ROME)));
        assert!(s.dropped.is_empty(), "kept: {:?}", s.dropped);
        let m = s.maxmind.unwrap();
        assert_eq!(m.verdict, Verdict::LikelyWrong, "{m:?}");
        assert_eq!(m.ruled_out_by.as_deref(), Some("madrid-mislabelled"));
        assert_eq!(names(&m), ["madrid-mislabelled"]);
        // A point the honest landmarks also rule out is still proved wrong.
        let s = solve_with(&ms, Some(record(TOKYO)));
        let m = s.maxmind.unwrap();
        assert_eq!(m.verdict, Verdict::ProvablyWrong, "{m:?}");
        assert_eq!(m.rulings_total, 5);
    }

    #[test]
    fn solve_accepts_any_instance_of_an_anycast_target() {
        // Eight landmarks at each site: leaving two out cannot remove the split.
        let mut ms = around(PARIS, "par", 1.5);
        ms.extend(around(destination(PARIS, 45.0, 10.0), "pbr", 1.5));
        ms.extend(around(TOKYO, "tyo", 1.5));
        ms.extend(around(destination(TOKYO, 45.0, 10.0), "tyb", 1.5));
        let s = solve_with(&ms, Some(record(TOKYO)));
        assert!(s.anycast, "{:?}", s.dropped);
        assert!(s.collusion.is_none(), "{:?}", s.collusion);
        assert_eq!(s.instances.len(), 2, "{:?}", s.instances);
        let m = s.maxmind.unwrap();
        assert_eq!(m.verdict, Verdict::Consistent, "{m:?}");
        let s = solve_with(&ms, Some(record(PARIS)));
        assert_eq!(s.maxmind.unwrap().verdict, Verdict::Consistent);
        // Sydney is in no instance's disc, but an unseen instance could be there.
        let s = solve_with(&ms, Some(record(LatLon::new(-33.87, 151.21))));
        let m = s.maxmind.unwrap();
        assert_eq!(m.verdict, Verdict::LikelyWrong, "{m:?}");
        assert!(m.excess_km.unwrap() > 5000.0, "{m:?}");
    }

    #[test]
    fn three_colluding_probes_are_named_not_called_anycast() {
        // Eight landmarks around Paris (4 ms); three probes in Tokyo claim 1.5 ms.
        let mut ms = around(PARIS, "par", 4.0);
        ms.extend(around(destination(PARIS, 45.0, 10.0), "pbr", 4.0));
        ms.extend(around(TOKYO, "tyo", 1.5).into_iter().take(3));
        let s = solve_with(&ms, Some(record(TOKYO)));
        assert!(!s.anycast, "{:?}", s.instances);
        assert!(s.instances.is_empty());
        let c = s.collusion.expect("collusion reported");
        assert_eq!(c.landmarks, ["tyo0", "tyo1", "tyo2"]);
        assert!(
            c.reason
                .starts_with("anycast or colluding probes: tyo0, tyo1, tyo2"),
            "{}",
            c.reason
        );
        let dropped: Vec<&str> = s.dropped.iter().map(|d| d.landmark.as_str()).collect();
        assert_eq!(dropped, ["tyo0", "tyo1", "tyo2"]);
        assert_eq!(s.used, 8);
        // Tokyo sits in the suspects' discs: not a proof either way.
        assert_eq!(s.maxmind.unwrap().verdict, Verdict::LikelyWrong);
        // With eight probes in Tokyo it is anycast.
        let mut ms = around(PARIS, "par", 4.0);
        ms.extend(around(destination(PARIS, 45.0, 10.0), "pbr", 4.0));
        ms.extend(around(TOKYO, "tyo", 1.5));
        ms.extend(around(destination(TOKYO, 45.0, 10.0), "tyb", 1.5));
        let s = solve_with(&ms, Some(record(TOKYO)));
        assert!(s.anycast && s.collusion.is_none(), "{:?}", s.collusion);
    }

    #[test]
    fn two_contradicting_landmarks_blame_neither_and_prove_nothing() {
        // Paris and Madrid each within ~300 km of the target: impossible together, and no
        // third landmark breaks the tie.
        let ms = vec![
            crate::solve::Measurement {
                landmark: "par".into(),
                pos: PARIS,
                rtt_ms: 3.0,
                kind: crate::solve::Kind::Echo,
            },
            crate::solve::Measurement {
                landmark: "mad".into(),
                pos: MADRID,
                rtt_ms: 3.0,
                kind: crate::solve::Kind::Echo,
            },
        ];
        let s = solve_with(&ms, Some(record(ROME)));
        assert_eq!(s.dropped.len(), 1, "{:?}", s.dropped);
        let why = &s.dropped[0].reason;
        assert!(why.contains("no other landmark breaks the tie"), "{why}");
        assert!(
            why.contains("anycast") && why.contains("not known to be wrong"),
            "{why}"
        );
        // Rome is beyond both discs, but only the kept one can rule: no proof.
        let m = s.maxmind.unwrap();
        assert_eq!(m.verdict, Verdict::LikelyWrong, "{m:?}");
        assert_eq!(m.rulings_total, 1);
    }
}
