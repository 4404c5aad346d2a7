//! The lab's MaxMind database: a GeoIP2-City `.mmdb` written for the demo's targets.
use std::net::IpAddr;
use std::path::Path;

use anyhow::Context;

use crate::geo::City;

/// Writes a GeoIP2-City `.mmdb` with one /32 (and /128) per target.
pub fn write_mmdb(path: &Path, entries: &[(IpAddr, &City)]) -> anyhow::Result<()> {
    let mut w = mmdb_writer::Writer::new("GeoIP2-City");
    for (ip, city) in entries {
        // Typed values: the GeoIP2 schema wants accuracy_radius as uint16, a serde
        // integer would be written as a wider type readers reject.
        use mmdb_writer::Value as V;
        let record = V::map([
            (
                "city",
                V::map([("names", V::map([("en", V::from(city.name.as_str()))]))]),
            ),
            (
                "country",
                V::map([("iso_code", V::from(city.country.as_str()))]),
            ),
            (
                "location",
                V::map([
                    ("latitude", V::Double(city.pos.lat)),
                    ("longitude", V::Double(city.pos.lon)),
                    ("accuracy_radius", V::U16(20)),
                    ("time_zone", V::from(city.tz.as_str())),
                ]),
            ),
        ]);
        w.insert_value(*ip, record)
            .with_context(|| format!("mmdb entry for {ip}"))?;
    }
    std::fs::write(path, w.to_bytes()?).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo;
    use serde_json::Value;

    #[test]
    fn mmdb_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lab.mmdb");
        let pool = geo::builtin_cities();
        write_mmdb(
            &p,
            &[
                ("10.77.1.5".parse().unwrap(), &pool[0]),
                ("fd77:0:0:1::5".parse().unwrap(), &pool[1]),
            ],
        )
        .unwrap();
        let r = maxminddb::Reader::open_readfile(&p).unwrap();
        let v: Value = r
            .lookup("10.77.1.5".parse().unwrap())
            .unwrap()
            .decode()
            .unwrap()
            .unwrap();
        assert_eq!(v["city"]["names"]["en"], pool[0].name.as_str());
        let v6: Value = r
            .lookup("fd77:0:0:1::5".parse().unwrap())
            .unwrap()
            .decode()
            .unwrap()
            .unwrap();
        assert_eq!(v6["location"]["latitude"].as_f64(), Some(pool[1].pos.lat));
        assert!(r
            .lookup("10.77.1.6".parse().unwrap())
            .unwrap()
            .decode::<Value>()
            .unwrap()
            .is_none());
        // The typed GeoIP2 City schema, as the coordinator reads it.
        let city: maxminddb::geoip2::City = r
            .lookup("10.77.1.5".parse().unwrap())
            .unwrap()
            .decode()
            .unwrap()
            .unwrap();
        assert_eq!(city.location.latitude, Some(pool[0].pos.lat));
        assert_eq!(city.location.accuracy_radius, Some(20));
        assert_eq!(city.country.iso_code, Some(pool[0].country.as_str()));
    }
}
