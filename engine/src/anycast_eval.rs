//! Anycast evaluation on iGreedy's ground truth (the `anycast-igreedy` data set: root DNS
//! and CDN addresses measured from PlanetLab and RIPE Atlas vantage points, each
//! measurement labelled with the site that answered it).
//!
//! For each target the vantage points' RTTs are solved with [`Method::Cbg`] (sound discs);
//! the report says whether the address is called anycast, how many instances were
//! enumerated against the ground-truth sites the vantage points saw, and how many instances
//! are in the right city: within [`RIGHT_CITY_KM`] of the airport of the site that answered
//! the vantage point whose disc revealed the instance.
//!
//! The caller reads the files: `airports.csv` ([`parse_airports`]) and one
//! `measurements/<target>` file per target ([`parse_target`]).

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::solve::{solve, Kind, Measurement, Method, SolveOptions};
use crate::sphere::{distance_km, LatLon};

/// An instance placed within this distance of its site's airport is in the right city, km.
pub const RIGHT_CITY_KM: f64 = 100.0;

fn perr(source: &str, line: usize, reason: impl Into<String>) -> EngineError {
    EngineError::Parse {
        source_name: source.to_string(),
        line,
        reason: reason.into(),
    }
}

/// Non-comment, non-empty lines with their 1-based numbers, split on tabs, fields trimmed.
fn tab_lines(text: &str) -> impl Iterator<Item = (usize, Vec<&str>)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.starts_with('#') && !l.trim().is_empty())
        .map(|(i, l)| (i + 1, l.split('\t').map(str::trim).collect()))
}

fn number(source: &str, line: usize, what: &str, value: &str) -> Result<f64> {
    value
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| {
            perr(
                source,
                line,
                format!("{what} {value:?} is not a finite number"),
            )
        })
}

fn position(source: &str, line: usize, lat: &str, lon: &str) -> Result<LatLon> {
    let (lat, lon) = (
        number(source, line, "latitude", lat)?,
        number(source, line, "longitude", lon)?,
    );
    LatLon::checked(lat, lon).map_err(|e| perr(source, line, e))
}

/// Parses `airports.csv`: tab-separated `IATA size name "lat lon" ...`, `#` comments.
/// Codes are upper-cased; a code given twice keeps its last position.
pub fn parse_airports(text: &str, source: &str) -> Result<HashMap<String, LatLon>> {
    let mut out = HashMap::new();
    for (line, f) in tab_lines(text) {
        if f.len() < 4 {
            return Err(perr(
                source,
                line,
                format!(
                    "expected IATA, size, name, \"lat lon\": found {} field(s)",
                    f.len()
                ),
            ));
        }
        let ll: Vec<&str> = f[3].split_whitespace().collect();
        if ll.len() != 2 {
            return Err(perr(
                source,
                line,
                format!("position {:?} is not \"lat lon\"", f[3]),
            ));
        }
        out.insert(f[0].to_uppercase(), position(source, line, ll[0], ll[1])?);
    }
    if out.is_empty() {
        return Err(perr(source, 1, "no airports"));
    }
    Ok(out)
}

/// One target of the ground truth: its vantage points' RTTs and the site that answered each.
#[derive(Debug, Clone, PartialEq)]
pub struct AnycastTarget {
    pub name: String,
    /// One per vantage point (the first line of a vantage point given twice).
    pub measurements: Vec<Measurement>,
    /// Vantage point → IATA code (upper case) of the site that answered it.
    pub site: HashMap<String, String>,
}

/// Parses one `measurements/<target>` file: tab-separated
/// `hostname lat lon site min_rtt_ms`, `#` comments.
pub fn parse_target(name: &str, text: &str, source: &str) -> Result<AnycastTarget> {
    let mut measurements = Vec::new();
    let mut site = HashMap::new();
    for (line, f) in tab_lines(text) {
        if f.len() < 5 {
            return Err(perr(
                source,
                line,
                format!(
                    "expected hostname, lat, lon, site, min_rtt_ms: found {} field(s)",
                    f.len()
                ),
            ));
        }
        if f[0].is_empty() {
            return Err(perr(source, line, "empty hostname"));
        }
        if site.contains_key(f[0]) {
            continue;
        }
        let pos = position(source, line, f[1], f[2])?;
        let rtt_ms = number(source, line, "min_rtt_ms", f[4])?;
        if rtt_ms < 0.0 {
            return Err(perr(
                source,
                line,
                format!("min_rtt_ms {rtt_ms} is negative"),
            ));
        }
        site.insert(f[0].to_string(), f[3].to_uppercase());
        measurements.push(Measurement {
            landmark: f[0].to_string(),
            pos,
            rtt_ms,
            kind: Kind::Echo,
        });
    }
    if measurements.is_empty() {
        return Err(perr(source, 1, "no measurements"));
    }
    Ok(AnycastTarget {
        name: name.to_string(),
        measurements,
        site,
    })
}

/// One target's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnycastRow {
    pub target: String,
    /// Vantage points.
    pub vps: usize,
    /// Called anycast.
    pub anycast: bool,
    /// Instances enumerated.
    pub instances: usize,
    /// Distinct ground-truth sites (with a known airport) that answered the vantage points.
    pub gt_sites: usize,
    /// Instances whose revealing vantage point has a known site.
    pub judged: usize,
    /// Of those, instances within [`RIGHT_CITY_KM`] of that site's airport.
    pub right_city: usize,
    /// Mean distance from the judged instances to their site's airport, km.
    pub mean_error_km: Option<f64>,
}

/// The whole table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnycastSummary {
    pub rows: Vec<AnycastRow>,
    /// Targets called anycast.
    pub detected: usize,
    /// Instances in the right city, over all targets, and instances judged.
    pub right_city: usize,
    pub judged: usize,
}

impl AnycastSummary {
    /// Share of judged instances in the right city (0–1; 0 when none was judged).
    pub fn right_city_share(&self) -> f64 {
        if self.judged == 0 {
            0.0
        } else {
            self.right_city as f64 / self.judged as f64
        }
    }

    /// The table as Markdown (README's format), with the total line.
    pub fn markdown(&self) -> String {
        let mut s = String::from(
            "| target | VPs | anycast | instances | GT sites | right city | mean error km |\n\
             |---|---|---|---|---|---|---|\n",
        );
        for r in &self.rows {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {}/{} | {} |\n",
                r.target,
                r.vps,
                if r.anycast { "yes" } else { "no" },
                r.instances,
                r.gt_sites,
                r.right_city,
                r.judged,
                r.mean_error_km
                    .map_or("-".to_string(), |e| format!("{e:.0}")),
            ));
        }
        s.push_str(&format!(
            "\nall targets: {}/{} detected as anycast, {}/{} instances in the right city ({:.1}%)\n",
            self.detected,
            self.rows.len(),
            self.right_city,
            self.judged,
            100.0 * self.right_city_share(),
        ));
        s
    }
}

/// Solves one target with CBG and judges its instances against the ground truth.
pub fn evaluate_target(
    t: &AnycastTarget,
    airports: &HashMap<String, LatLon>,
) -> Result<AnycastRow> {
    let opts = SolveOptions {
        method: Method::Cbg,
        region_geometry: false,
        timezone_shares: false,
        at_unix_s: Some(0),
        ..SolveOptions::default()
    };
    let sol = solve(&t.measurements, &opts)?;
    let gt_sites = t
        .site
        .values()
        .filter(|s| airports.contains_key(*s))
        .collect::<BTreeSet<_>>()
        .len();
    let errors: Vec<f64> = sol
        .instances
        .iter()
        .filter_map(|i| {
            let airport = airports.get(t.site.get(&i.landmark)?)?;
            Some(distance_km(LatLon::new(i.lat, i.lon), *airport))
        })
        .collect();
    Ok(AnycastRow {
        target: t.name.clone(),
        vps: t.measurements.len(),
        anycast: sol.anycast,
        instances: sol.instances.len(),
        gt_sites,
        judged: errors.len(),
        right_city: errors.iter().filter(|&&e| e <= RIGHT_CITY_KM).count(),
        mean_error_km: (!errors.is_empty())
            .then(|| errors.iter().sum::<f64>() / errors.len() as f64),
    })
}

/// Evaluates every target (in the order given).
pub fn evaluate(
    targets: &[AnycastTarget],
    airports: &HashMap<String, LatLon>,
) -> Result<AnycastSummary> {
    let rows = targets
        .iter()
        .map(|t| evaluate_target(t, airports))
        .collect::<Result<Vec<_>>>()?;
    Ok(AnycastSummary {
        detected: rows.iter().filter(|r| r.anycast).count(),
        right_city: rows.iter().map(|r| r.right_city).sum(),
        judged: rows.iter().map(|r| r.judged).sum(),
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tests/data/anycast` (its README says what it holds).
    const AIRPORTS: &str = include_str!("../tests/data/anycast/airports.csv");

    fn target_text() -> String {
        include_str!("../tests/data/anycast/measurements/two-sites").to_string()
    }

    #[test]
    fn two_sites_two_instances_in_the_right_cities() {
        let airports = parse_airports(AIRPORTS, "airports.csv").unwrap();
        assert_eq!(airports.len(), 3);
        let t = parse_target("two", &target_text(), "two").unwrap();
        assert_eq!(t.measurements.len(), 16);
        assert_eq!(t.site["eu0"], "FRA");
        let s = evaluate(&[t], &airports).unwrap();
        let r = &s.rows[0];
        assert!(r.anycast, "{r:?}");
        assert_eq!((r.vps, r.instances, r.gt_sites), (16, 2, 2), "{r:?}");
        assert_eq!((r.right_city, r.judged), (2, 2), "{r:?}");
        assert!(r.mean_error_km.unwrap() < RIGHT_CITY_KM, "{r:?}");
        assert_eq!((s.detected, s.right_city, s.judged), (1, 2, 2));
        assert_eq!(s.right_city_share(), 1.0);
        let md = s.markdown();
        assert!(md.contains("| two | 16 | yes | 2 | 2 | 2/2 |"), "{md}");
        assert!(
            md.contains(
                "all targets: 1/1 detected as anycast, 2/2 instances in the right city (100.0%)"
            ),
            "{md}"
        );
    }

    #[test]
    fn an_instance_far_from_its_sites_airport_is_not_in_the_right_city() {
        // The Japanese vantage points are labelled as answered by Sydney.
        let airports = parse_airports(AIRPORTS, "airports.csv").unwrap();
        let text = target_text().replace("nrt", "syd");
        let t = parse_target("wrong", &text, "wrong").unwrap();
        let r = evaluate_target(&t, &airports).unwrap();
        assert_eq!((r.right_city, r.judged), (1, 2), "{r:?}");
        // An unknown site is not judged.
        let text = target_text().replace("nrt", "xyz");
        let t = parse_target("unknown", &text, "unknown").unwrap();
        let r = evaluate_target(&t, &airports).unwrap();
        assert_eq!((r.right_city, r.judged, r.gt_sites), (1, 1, 1), "{r:?}");
    }

    #[test]
    fn a_unicast_target_is_not_called_anycast() {
        let airports = parse_airports(AIRPORTS, "airports.csv").unwrap();
        let text: String = target_text()
            .lines()
            .filter(|l| !l.starts_with("jp"))
            .map(|l| format!("{l}\n"))
            .collect();
        let t = parse_target("one", &text, "one").unwrap();
        let r = evaluate_target(&t, &airports).unwrap();
        assert!(!r.anycast);
        assert_eq!(r.instances, 0);
    }

    #[test]
    fn bad_lines_name_the_file_and_line() {
        let e = |r: Result<AnycastTarget>| r.unwrap_err().to_string();
        assert_eq!(
            e(parse_target("x", "#h\na\t1\t2\tfra\n", "m")),
            "m line 2: expected hostname, lat, lon, site, min_rtt_ms: found 4 field(s)"
        );
        assert_eq!(
            e(parse_target("x", "a\t91\t2\tfra\t3\n", "m")),
            "m line 1: latitude 91 is outside [-90, 90]"
        );
        assert_eq!(
            e(parse_target("x", "a\t1\t2\tfra\tNaN\n", "m")),
            "m line 1: min_rtt_ms \"NaN\" is not a finite number"
        );
        assert_eq!(
            e(parse_target("x", "a\t1\t2\tfra\t-1\n", "m")),
            "m line 1: min_rtt_ms -1 is negative"
        );
        assert_eq!(
            e(parse_target("x", "#only\n", "m")),
            "m line 1: no measurements"
        );
        let e = parse_airports("FRA\tx\ty\t50.0\tDE\n", "a")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "a line 1: position \"50.0\" is not \"lat lon\"");
    }
}
