//! Enrichment: time zone (IANA name and UTC offset) and nearest place of a position.
//!
//! Time zone boundaries come from `tzf-rs` (bundled, simplified to about 100 m); offsets from
//! `chrono-tz`. Places are the 24,046 GeoNames cities with at least 15,000 inhabitants
//! (CC BY 4.0, `engine/data/cities15000.tsv`), indexed in an R-tree of unit vectors so the
//! nearest city is right across the antimeridian and near the poles.
//!
//! All data is compiled in: no file is read at run time.

use std::sync::OnceLock;

use chrono::{Offset, TimeZone};
use rstar::primitives::GeomWithData;
use rstar::RTree;
use serde::{Deserialize, Serialize};

use crate::sphere::{distance_km, LatLon, EARTH_RADIUS_KM};

const CITIES_TSV: &str = include_str!("../data/cities15000.tsv");

/// A GeoNames city.
#[derive(Debug, Clone, PartialEq)]
pub struct City {
    pub name: String,
    /// ISO 3166-1 alpha-2 country code.
    pub country: String,
    pub pos: LatLon,
    pub population: u64,
}

/// The time zone at a point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timezone {
    /// IANA name, e.g. `Asia/Kolkata`; open sea gives `Etc/GMT±N`.
    pub iana: String,
    /// Offset from UTC at the solve instant, `±HH:MM` (e.g. `+05:30`).
    pub utc_offset: String,
    /// The same offset in seconds.
    pub utc_offset_s: i32,
}

/// A time zone overlapping a region and the share of the region's area it covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TzShare {
    pub iana: String,
    /// Fraction of the region's area, 0–1.
    pub share: f64,
}

/// The place nearest a point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Place {
    /// Nearest city with ≥ 15,000 inhabitants.
    pub city: String,
    /// ISO 3166-1 alpha-2 code of that city's country.
    pub country: String,
    /// Distance from the point to that city, km.
    pub distance_km: f64,
}

type CityPoint = GeomWithData<[f64; 3], u32>;

/// Loaded enrichment data (load once with [`enricher`]: about 100 ms).
pub struct Enricher {
    tz: tzf_rs::DefaultFinder,
    cities: Vec<City>,
    index: RTree<CityPoint>,
}

/// The process-wide enricher, loaded on first use.
pub fn enricher() -> &'static Enricher {
    static E: OnceLock<Enricher> = OnceLock::new();
    E.get_or_init(Enricher::load)
}

impl Enricher {
    fn load() -> Self {
        let cities: Vec<City> = CITIES_TSV
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let mut f = l.split('\t');
                let name = f.next()?.to_string();
                let country = f.next()?.to_string();
                let lat = f.next()?.parse().ok()?;
                let lon = f.next()?.parse().ok()?;
                let population = f.next()?.parse().ok()?;
                Some(City {
                    name,
                    country,
                    pos: LatLon::new(lat, lon),
                    population,
                })
            })
            .collect();
        let index = RTree::bulk_load(
            cities
                .iter()
                .enumerate()
                .map(|(i, c)| GeomWithData::new(c.pos.to_vec().0, i as u32))
                .collect(),
        );
        Self {
            tz: tzf_rs::DefaultFinder::new(),
            cities,
            index,
        }
    }

    /// IANA time zone name at a point.
    pub fn tz_name(&self, p: LatLon) -> &str {
        self.tz.get_tz_name(p.lon, p.lat)
    }

    /// Time zone and its UTC offset at `unix_s` (seconds since 1970, UTC).
    pub fn timezone(&self, p: LatLon, unix_s: i64) -> Timezone {
        let iana = self.tz_name(p).to_string();
        let utc_offset_s = utc_offset_s(&iana, unix_s).unwrap_or(0);
        Timezone {
            utc_offset: format_offset(utc_offset_s),
            iana,
            utc_offset_s,
        }
    }

    /// Share of each time zone over weighted sample points (weights summing to 1), largest
    /// first; shares below 0.1% are left out.
    pub fn timezone_shares(&self, samples: &[(LatLon, f64)]) -> Vec<TzShare> {
        let mut acc: Vec<(String, f64)> = Vec::new();
        for &(p, w) in samples {
            let name = self.tz_name(p);
            match acc.iter_mut().find(|(n, _)| n == name) {
                Some(e) => e.1 += w,
                None => acc.push((name.to_string(), w)),
            }
        }
        acc.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        acc.into_iter()
            .filter(|(_, w)| *w >= 0.001)
            .map(|(iana, w)| TzShare {
                iana,
                share: (w * 1000.0).round() / 1000.0,
            })
            .collect()
    }

    /// The nearest city.
    pub fn nearest_city(&self, p: LatLon) -> &City {
        let i = self
            .index
            .nearest_neighbor(&p.to_vec().0)
            .map_or(0, |g| g.data as usize);
        &self.cities[i]
    }

    /// The nearest city as a [`Place`].
    pub fn place(&self, p: LatLon) -> Place {
        let c = self.nearest_city(p);
        Place {
            city: c.name.clone(),
            country: c.country.clone(),
            distance_km: round1(distance_km(p, c.pos)),
        }
    }

    /// Cities within `radius_km` of `p`.
    pub fn cities_within(&self, p: LatLon, radius_km: f64) -> impl Iterator<Item = &City> {
        let theta = (radius_km / EARTH_RADIUS_KM).min(std::f64::consts::PI);
        let chord = 2.0 * (theta / 2.0).sin();
        self.index
            .locate_within_distance(p.to_vec().0, chord * chord + 1e-12)
            .map(|g| &self.cities[g.data as usize])
    }
}

/// UTC offset of an IANA zone at `unix_s`, seconds; `None` for an unknown zone name.
pub fn utc_offset_s(iana: &str, unix_s: i64) -> Option<i32> {
    let tz: chrono_tz::Tz = iana.parse().ok()?;
    let t = chrono::DateTime::from_timestamp(unix_s, 0)?.naive_utc();
    Some(tz.offset_from_utc_datetime(&t).fix().local_minus_utc())
}

/// `±HH:MM` for an offset in seconds.
pub fn format_offset(s: i32) -> String {
    let sign = if s < 0 { '-' } else { '+' };
    let a = s.unsigned_abs();
    format!("{sign}{:02}:{:02}", a / 3600, (a % 3600) / 60)
}

pub(crate) fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const JAN_2026: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

    #[test]
    fn mumbai_is_kolkata_plus_0530() {
        let tz = enricher().timezone(LatLon::new(19.07, 72.88), JAN_2026);
        assert_eq!(tz.iana, "Asia/Kolkata");
        assert_eq!(tz.utc_offset, "+05:30");
    }

    #[test]
    fn suva_london_and_open_sea() {
        let e = enricher();
        assert_eq!(e.tz_name(LatLon::new(-18.14, 178.44)), "Pacific/Fiji");
        assert_eq!(
            e.timezone(LatLon::new(51.5, -0.12), JAN_2026).utc_offset,
            "+00:00"
        );
        assert!(e.tz_name(LatLon::new(0.0, -30.0)).starts_with("Etc/GMT"));
        assert_eq!(format_offset(-9000), "-02:30");
    }

    #[test]
    fn nearest_city_across_the_antimeridian() {
        let e = enricher();
        let p = e.place(LatLon::new(19.076, 72.8777));
        assert_eq!((p.city.as_str(), p.country.as_str()), ("Mumbai", "IN"));
        // Just west of the antimeridian, the nearest city is in Fiji, not in Samoa's longitudes.
        let c = e.nearest_city(LatLon::new(-18.1, 179.99));
        assert_eq!(c.country, "FJ");
        assert!(e
            .cities_within(LatLon::new(48.8566, 2.3522), 5.0)
            .any(|c| c.name == "Paris"));
    }
}
