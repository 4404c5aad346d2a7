//! GeoIP lookups for the MaxMind comparison: a MaxMind-format City `.mmdb` read through
//! `geoloc-geoip`.
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::core::solve::GeoIpJson;
use crate::error::{CoordinatorError, Result};

/// An open GeoIP City database.
pub struct GeoIp {
    path: PathBuf,
    db: geoloc_geoip::GeoIpDb,
}

impl GeoIp {
    pub fn open(path: &Path) -> Result<GeoIp> {
        let db = geoloc_geoip::GeoIpDb::open(path).map_err(|e| CoordinatorError::GeoIp {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(GeoIp {
            path: path.to_path_buf(),
            db,
        })
    }

    /// The record for `ip`, if the database has a position for it. Lookup errors are
    /// logged and treated as "no record".
    pub fn lookup(&self, ip: IpAddr) -> Option<GeoIpJson> {
        match self.db.lookup(ip) {
            Ok(r) => r.as_ref().map(GeoIpJson::from),
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
        let e = GeoIp::open(Path::new("/nonexistent.mmdb"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("/nonexistent.mmdb"), "{e}");
    }
}
