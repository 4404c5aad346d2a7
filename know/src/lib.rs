//! Know your IP: everything quickly knowable about an address beside its measured location.
//!
//! - ownership without keys: reverse DNS ([`rdns`]), origin AS offline ([`asn`]), the
//!   registry's record over RDAP ([`rdap`]);
//! - reputation and exposure with the user's keys ([`providers`]: AbuseIPDB, VirusTotal,
//!   Shodan, Censys), each rate limited, cached ([`cache`]) and never fatal;
//! - one address: [`report::Sources::know`] → [`report::KnowReport`];
//! - the same fields as column groups of a table (`geoloc audit --know`): [`columns`];
//! - connection logs to features: [`enrich::enrich`] (CSV or Parquet).

pub mod asn;
pub mod cache;
pub mod columns;
pub mod config;
pub mod enrich;
pub mod error;
pub mod providers;
pub mod rdap;
pub mod rdns;
pub mod report;
pub mod timefeat;

pub use error::{KnowError, Result};

/// `s` cut to `max` characters with control characters replaced by `?`: text from files and
/// networks never reaches a terminal raw.
pub fn printable(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// An error and its sources, `a: b: c`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
