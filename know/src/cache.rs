//! The cache of provider answers: one small JSON file per (source, address) under a cache
//! folder, each with the time it was fetched, served while younger than its time to live.
//!
//! Why files and not a database: the `geoloc` binary links no sqlx and must not link a
//! second SQLite (rusqlite's `libsqlite3-sys` would clash with sqlx's in this workspace);
//! a file per key needs no dependency, survives a crash (written to a temporary name then
//! renamed, so a reader never sees half a file), can be shared by concurrent runs, and is
//! easy to inspect or clear (`rm -r`). A few thousand files per audit is well within what a
//! file system does fast.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Largest cache file read back, bytes (a bigger one is treated as missing).
const MAX_ENTRY_BYTES: u64 = 1 << 20;

/// A cache folder with a time to live.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
    ttl: Duration,
}

#[derive(Serialize, Deserialize)]
struct Entry<T> {
    fetched_at_unix_s: i64,
    value: T,
}

fn now_s() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Cache {
    /// A cache in `dir` (created on first write) whose entries live `ttl`.
    pub fn new(dir: impl Into<PathBuf>, ttl: Duration) -> Self {
        Self {
            dir: dir.into(),
            ttl,
        }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, source: &str, ip: IpAddr) -> PathBuf {
        // Canonical text of the address; ':' is replaced so the name is valid everywhere.
        let name = geoloc_policy::canonical(ip).replace(':', "_");
        self.dir.join(source).join(format!("{name}.json"))
    }

    /// The cached value and when it was fetched (Unix s), if present, readable and younger
    /// than the time to live.
    pub fn get<T: DeserializeOwned>(&self, source: &str, ip: IpAddr) -> Option<(T, i64)> {
        let p = self.path(source, ip);
        let meta = std::fs::metadata(&p).ok()?;
        if meta.len() > MAX_ENTRY_BYTES {
            return None;
        }
        let bytes = std::fs::read(&p).ok()?;
        let e: Entry<T> = serde_json::from_slice(&bytes).ok()?;
        let age = now_s().saturating_sub(e.fetched_at_unix_s);
        (age >= 0 && (age as u64) < self.ttl.as_secs()).then_some((e.value, e.fetched_at_unix_s))
    }

    /// Stores a value fetched now. A failure to write is logged, not fatal: the answer is
    /// still used for this run.
    pub fn put<T: Serialize>(&self, source: &str, ip: IpAddr, value: &T) {
        let p = self.path(source, ip);
        let write = || -> std::io::Result<()> {
            let dir = p.parent().expect("cache path has a parent");
            std::fs::create_dir_all(dir)?;
            let e = Entry {
                fetched_at_unix_s: now_s(),
                value,
            };
            let tmp = dir.join(format!(
                ".{}.{}.tmp",
                p.file_name().and_then(|n| n.to_str()).unwrap_or("x"),
                std::process::id()
            ));
            std::fs::write(&tmp, serde_json::to_vec(&e)?)?;
            std::fs::rename(&tmp, &p)
        };
        if let Err(e) = write() {
            tracing::warn!("cannot write cache entry {}: {e}", p.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_expiry_and_garbage() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::new(d.path(), Duration::from_secs(3600));
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(c.get::<String>("x", ip).is_none());
        c.put("x", ip, &"hello".to_string());
        assert_eq!(c.get::<String>("x", ip).unwrap().0, "hello");
        // Expired: a zero time to live serves nothing.
        let c0 = Cache::new(d.path(), Duration::ZERO);
        assert!(c0.get::<String>("x", ip).is_none());
        // A damaged file is a miss, not an error.
        std::fs::write(c.path("x", ip), b"{not json").unwrap();
        assert!(c.get::<String>("x", ip).is_none());
    }
}
