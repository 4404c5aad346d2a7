//! Offline IP → origin AS and organisation, from the CSV files of the npm package
//! `@ip-location-db/asn` (RouteViews + NRO delegations + DB-IP ASN Lite, CC BY 4.0;
//! `scripts/fetch-asn-db.sh` installs it).
//!
//! Format of `asn-ipv4.csv` / `asn-ipv6.csv`: `first,last,asn,organisation`, an inclusive
//! range per line, ranges sorted and not overlapping. Loaded into one sorted vector per
//! family and searched by bisection.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{KnowError, Result};

/// The origin AS of an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsnInfo {
    /// Autonomous system number.
    pub asn: u32,
    /// Organisation holding that AS, as the database names it.
    pub organisation: String,
    /// The database range holding the address, `first-last`.
    pub range: String,
}

struct Range {
    first: u128,
    last: u128,
    asn: u32,
    org: u32,
}

/// A loaded ASN database.
pub struct AsnDb {
    v4: Vec<Range>,
    v6: Vec<Range>,
    orgs: Vec<String>,
}

/// Longest organisation name kept (longer ones are cut): the file is input like any other.
const MAX_ORG_CHARS: usize = 200;

fn key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn format_key(v: u128, v6: bool) -> String {
    if v6 {
        std::net::Ipv6Addr::from(v).to_string()
    } else {
        std::net::Ipv4Addr::from(v as u32).to_string()
    }
}

impl AsnDb {
    /// Loads `asn-ipv4.csv` and `asn-ipv6.csv` (either may be missing, not both) from `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let mut db = AsnDb {
            v4: Vec::new(),
            v6: Vec::new(),
            orgs: Vec::new(),
        };
        let mut org_index = std::collections::HashMap::<String, u32>::new();
        let mut found = false;
        for (name, v6) in [("asn-ipv4.csv", false), ("asn-ipv6.csv", true)] {
            let path = dir.join(name);
            if !path.exists() {
                continue;
            }
            found = true;
            let file = std::fs::File::open(&path).map_err(|source| KnowError::Read {
                path: path.clone(),
                source,
            })?;
            let ranges = db.load(file, &path, v6, &mut org_index)?;
            if v6 {
                db.v6 = ranges;
            } else {
                db.v4 = ranges;
            }
        }
        if !found {
            return Err(KnowError::AsnDbEmpty(dir.to_path_buf()));
        }
        Ok(db)
    }

    fn load(
        &mut self,
        file: impl std::io::Read,
        path: &Path,
        v6: bool,
        org_index: &mut std::collections::HashMap<String, u32>,
    ) -> Result<Vec<Range>> {
        let bad = |line: u64, reason: String| KnowError::AsnDb {
            path: PathBuf::from(path),
            line,
            reason,
        };
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(file);
        let mut out = Vec::new();
        for (i, rec) in rdr.records().enumerate() {
            let line = i as u64 + 1;
            let rec = rec.map_err(|e| bad(line, e.to_string()))?;
            if rec.len() < 4 {
                return Err(bad(line, format!("{} fields, want 4", rec.len())));
            }
            let parse = |s: &str| -> std::result::Result<u128, String> {
                let ip: IpAddr = s.trim().parse().map_err(|_| format!("bad address {s:?}"))?;
                if ip.is_ipv6() != v6 {
                    return Err(format!("{s} is not of this file's family"));
                }
                Ok(key(ip))
            };
            let first = parse(&rec[0]).map_err(|r| bad(line, r))?;
            let last = parse(&rec[1]).map_err(|r| bad(line, r))?;
            if last < first {
                return Err(bad(line, "range ends before it starts".into()));
            }
            let asn: u32 = rec[2]
                .trim()
                .parse()
                .map_err(|_| bad(line, format!("bad AS number {:?}", &rec[2])))?;
            let org: String = rec[3].chars().take(MAX_ORG_CHARS).collect();
            let next = self.orgs.len() as u32;
            let org = *org_index.entry(org.clone()).or_insert_with(|| {
                self.orgs.push(org);
                next
            });
            out.push(Range {
                first,
                last,
                asn,
                org,
            });
        }
        out.sort_by_key(|r| r.first);
        for w in out.windows(2) {
            if w[1].first <= w[0].last {
                return Err(bad(
                    0,
                    format!("ranges overlap at {}", format_key(w[1].first, v6)),
                ));
            }
        }
        Ok(out)
    }

    /// Number of ranges (IPv4, IPv6).
    pub fn len(&self) -> (usize, usize) {
        (self.v4.len(), self.v6.len())
    }

    /// True when no range was loaded.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// The origin AS of `ip`, `None` when no range holds it.
    pub fn lookup(&self, ip: IpAddr) -> Option<AsnInfo> {
        let ip = match ip {
            IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let (table, v6) = match ip {
            IpAddr::V4(_) => (&self.v4, false),
            IpAddr::V6(_) => (&self.v6, true),
        };
        let k = key(ip);
        let i = table.partition_point(|r| r.first <= k);
        let r = table.get(i.checked_sub(1)?)?;
        (k <= r.last).then(|| AsnInfo {
            asn: r.asn,
            organisation: self.orgs[r.org as usize].clone(),
            range: format!("{}-{}", format_key(r.first, v6), format_key(r.last, v6)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/asn")
    }

    #[test]
    fn fixture_slice_answers_known_ranges() {
        let db = AsnDb::open(fixture()).unwrap();
        let (v4, v6) = db.len();
        assert!(v4 > 10 && v6 > 0, "{v4} {v6}");
        let cf = db.lookup("1.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(cf.asn, 13335);
        assert_eq!(cf.organisation, "Cloudflare, Inc.");
        assert_eq!(cf.range, "1.0.0.0-1.0.0.255");
        // Last address of a range, and the gap right after it.
        assert_eq!(db.lookup("1.0.0.255".parse().unwrap()).unwrap().asn, 13335);
        assert!(db.lookup("1.0.1.0".parse().unwrap()).is_none());
        let he = db.lookup("2001::1".parse().unwrap()).unwrap();
        assert_eq!(he.asn, 6939);
        // IPv4-mapped IPv6 is looked up as IPv4.
        assert_eq!(
            db.lookup("::ffff:1.0.0.1".parse().unwrap()).unwrap().asn,
            13335
        );
        assert!(db.lookup("0.0.0.1".parse().unwrap()).is_none());
    }

    #[test]
    fn hostile_files_are_errors_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("asn-ipv4.csv");
        std::fs::write(&p, "1.0.0.0,1.0.0.255,13335,x\n1.0.0.9,1.0.0.1,1,y\n").unwrap();
        let e = AsnDb::open(dir.path()).err().unwrap().to_string();
        assert!(e.contains("line 2") && e.contains("ends before"), "{e}");
        std::fs::write(&p, "1.0.0.0,1.0.0.255,notanumber,x\n").unwrap();
        let e = AsnDb::open(dir.path()).err().unwrap().to_string();
        assert!(e.contains("bad AS number"), "{e}");
        std::fs::write(&p, "1.0.0.0,::1,1,x\n").unwrap();
        let e = AsnDb::open(dir.path()).err().unwrap().to_string();
        assert!(e.contains("family"), "{e}");
        let e = AsnDb::open(dir.path().join("nope"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("fetch-asn-db.sh"), "{e}");
    }
}
