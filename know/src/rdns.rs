//! Reverse DNS (PTR) with `hickory-resolver`: the system's resolvers, or a given name
//! server (tests use a stand-in on loopback).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RData};
use hickory_resolver::TokioResolver;

use crate::error::{KnowError, Result};

/// Most names kept for one address.
const MAX_NAMES: usize = 16;

/// A reverse-DNS resolver.
pub struct Rdns {
    resolver: TokioResolver,
}

impl Rdns {
    /// Asks `server` (UDP then TCP) when given, else the system's configuration
    /// (`/etc/resolv.conf`).
    pub fn new(server: Option<SocketAddr>, timeout: Duration) -> Result<Self> {
        let mut opts = ResolverOpts::default();
        opts.timeout = timeout;
        opts.attempts = 1;
        let builder = match server {
            Some(addr) => {
                let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                for c in &mut ns.connections {
                    c.port = addr.port();
                }
                TokioResolver::builder_with_config(
                    ResolverConfig::from_parts(None, vec![], vec![ns]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => {
                TokioResolver::builder_tokio().map_err(|e| KnowError::Resolver(e.to_string()))?
            }
        };
        let resolver = builder
            .with_options(opts)
            .build()
            .map_err(|e| KnowError::Resolver(e.to_string()))?;
        Ok(Self { resolver })
    }

    /// The PTR names of `ip` (without the final dot); empty when there is none
    /// (NXDOMAIN or no answer); `Err` with the reason when the lookup failed.
    pub async fn lookup(&self, ip: IpAddr) -> std::result::Result<Vec<String>, String> {
        match self.resolver.reverse_lookup(Name::from(ip)).await {
            Ok(l) => Ok(l
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::PTR(p) => Some(crate::printable(&p.0.to_utf8(), 255)),
                    _ => None,
                })
                .map(|n| n.trim_end_matches('.').to_string())
                .take(MAX_NAMES)
                .collect()),
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(vec![]),
            Err(e) => Err(crate::printable(&e.to_string(), 200)),
        }
    }
}
