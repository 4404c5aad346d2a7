//! GeoIP lookups for the MaxMind comparison: a MaxMind-format City `.mmdb` read with
//! `maxminddb` (the GeoIP2/GeoLite2 City schema).
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use maxminddb::{geoip2, Reader};

use crate::error::{CoordinatorError, Result};
use crate::solve::GeoIpJson;

/// An open GeoIP City database.
pub struct GeoIp {
    path: PathBuf,
    reader: Reader<Vec<u8>>,
}

impl GeoIp {
    pub fn open(path: &Path) -> Result<GeoIp> {
        let reader = Reader::open_readfile(path)
            .map_err(|e| CoordinatorError::GeoIp { path: path.to_path_buf(), message: e.to_string() })?;
        Ok(GeoIp { path: path.to_path_buf(), reader })
    }

    /// The record for `ip`, if the database has a position for it. Lookup errors are
    /// logged and treated as "no record".
    pub fn lookup(&self, ip: IpAddr) -> Option<GeoIpJson> {
        let found = self.reader.lookup(ip).and_then(|r| r.decode::<geoip2::City>());
        match found {
            Ok(Some(c)) => {
                let (lat, lon) = (c.location.latitude?, c.location.longitude?);
                Some(GeoIpJson {
                    lat,
                    lon,
                    city: c.city.names.english.map(str::to_string),
                    country: c.country.iso_code.map(str::to_string),
                    accuracy_radius_km: c.location.accuracy_radius.map(f64::from),
                })
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), %ip, error = %e, "GeoIP lookup failed");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maxmind_test_database_london() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/GeoIP2-City-Test.mmdb");
        let db = GeoIp::open(&p).unwrap();
        let r = db.lookup("81.2.69.142".parse().unwrap()).unwrap();
        assert_eq!(r.city.as_deref(), Some("London"));
        assert_eq!(r.country.as_deref(), Some("GB"));
        assert_eq!(r.accuracy_radius_km, Some(10.0));
        assert!(db.lookup("127.0.0.1".parse().unwrap()).is_none());
        let e = GeoIp::open(Path::new("/nonexistent.mmdb")).err().unwrap().to_string();
        assert!(e.contains("/nonexistent.mmdb"), "{e}");
    }
}
