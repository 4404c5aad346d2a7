//! Reading a GeoIP2 / GeoLite2 City database (`.mmdb`, MaxMind's native schema) into the
//! engine's [`GeoIpRecord`].
//!
//! ```no_run
//! let db = geoloc_geoip::GeoIpDb::open("GeoLite2-City.mmdb")?;
//! let rec = db.lookup("81.2.69.142".parse().unwrap())?;
//! # Ok::<(), geoloc_geoip::GeoIpError>(())
//! ```

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use geoloc_engine::GeoIpRecord;
use maxminddb::{geoip2, Reader};

/// Errors reading a GeoIP database.
#[derive(Debug, thiserror::Error)]
pub enum GeoIpError {
    #[error("cannot open GeoIP database {path}: {source}")]
    Open {
        path: PathBuf,
        source: maxminddb::MaxMindDbError,
    },
    #[error("GeoIP database {path} is not a City database (type {kind:?})")]
    NotCity { path: PathBuf, kind: String },
    #[error("GeoIP database {path}: cannot read the record of {ip}: {source}")]
    Lookup {
        path: PathBuf,
        ip: IpAddr,
        source: maxminddb::MaxMindDbError,
    },
}

/// An open City database.
pub struct GeoIpDb {
    reader: Reader<Vec<u8>>,
    path: PathBuf,
}

impl GeoIpDb {
    /// Opens and checks a City database.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GeoIpError> {
        let path = path.as_ref().to_path_buf();
        let reader = Reader::open_readfile(&path).map_err(|source| GeoIpError::Open {
            path: path.clone(),
            source,
        })?;
        let kind = reader.metadata().database_type.clone();
        if !kind.contains("City") {
            return Err(GeoIpError::NotCity { path, kind });
        }
        Ok(Self { reader, path })
    }

    /// The database's type and build time (seconds since 1970).
    pub fn describe(&self) -> (String, u64) {
        (
            self.reader.metadata().database_type.clone(),
            self.reader.metadata().build_epoch,
        )
    }

    /// The record of `ip`; `None` when the database has no position for it.
    pub fn lookup(&self, ip: IpAddr) -> Result<Option<GeoIpRecord>, GeoIpError> {
        let err = |source| GeoIpError::Lookup {
            path: self.path.clone(),
            ip,
            source,
        };
        let found = self.reader.lookup(ip).map_err(err)?;
        let Some(city) = found.decode::<geoip2::City>().map_err(err)? else {
            return Ok(None);
        };
        let (Some(lat), Some(lon)) = (city.location.latitude, city.location.longitude) else {
            return Ok(None);
        };
        Ok(Some(GeoIpRecord {
            lat,
            lon,
            city: city.city.names.english.map(str::to_string),
            country: city.country.iso_code.map(str::to_string),
            accuracy_radius_km: city.location.accuracy_radius.map(f64::from),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name)
    }

    #[test]
    fn london_in_the_test_database() {
        let db = GeoIpDb::open(data("GeoIP2-City-Test.mmdb")).unwrap();
        let r = db.lookup("81.2.69.142".parse().unwrap()).unwrap().unwrap();
        assert_eq!(r.city.as_deref(), Some("London"));
        assert_eq!(r.country.as_deref(), Some("GB"));
        assert_eq!(r.accuracy_radius_km, Some(10.0));
        assert!((r.lat - 51.5142).abs() < 0.01 && (r.lon + 0.0931).abs() < 0.01);
        assert!(db.lookup("127.0.0.1".parse().unwrap()).unwrap().is_none());
    }

    #[test]
    fn broken_and_missing_databases_are_clear_errors() {
        let e = GeoIpDb::open(data("nope.mmdb")).err().unwrap().to_string();
        assert!(
            e.starts_with("cannot open GeoIP database") && e.contains("nope.mmdb"),
            "{e}"
        );
        // The defect is in a record (a double of the wrong size): the database opens, and
        // reading that record is an error naming the file and the address, not a panic.
        let db = GeoIpDb::open(data("GeoIP2-City-Test-Broken-Double-Format.mmdb")).unwrap();
        let e = db
            .lookup("2001:220::1".parse().unwrap())
            .expect_err("a broken record is an error")
            .to_string();
        assert!(
            e.contains("GeoIP2-City-Test-Broken-Double-Format.mmdb")
                && e.contains("cannot read the record of 2001:220::1"),
            "{e}"
        );
    }
}
