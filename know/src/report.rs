//! Everything known about one address (`geoloc know IP`): location, local time, ownership,
//! reputation, open services and links. JSON schema in `know/README.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::asn::{AsnDb, AsnInfo};
use crate::cache::Cache;
use crate::providers::{Answer, Outcome, ProviderClient, ProviderKind, Service, Status};
use crate::rdap::{RdapClient, RdapNetwork};
use crate::rdns::Rdns;
use crate::timefeat::{local_time, LocalTime};

/// Version of the JSON document below; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// Where the address is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Location {
    /// `measured` (through a coordinator) or `geoip` (a MaxMind-format database).
    pub source: String,
    /// Degrees, WGS 84.
    pub lat: f64,
    pub lon: f64,
    /// Radius of the answer, km (GeoIP accuracy radius or the measured region's).
    pub radius_km: Option<f64>,
    pub city: Option<String>,
    /// ISO 3166-1 alpha-2.
    pub country: Option<String>,
}

/// Who holds the address.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Ownership {
    /// PTR names.
    pub rdns: Vec<String>,
    pub rdns_error: Option<String>,
    pub asn: Option<AsnInfo>,
    /// Why there is no `asn` (no database, or no range holds the address).
    pub asn_error: Option<String>,
    pub rdap: Option<RdapNetwork>,
    pub rdap_error: Option<String>,
}

/// A web page about the address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    pub source: String,
    pub url: String,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KnowReport {
    pub schema: u32,
    pub ip: String,
    /// `global unicast`, `private`, `documentation`, … (from `geoloc-policy`).
    pub address_class: String,
    pub location: Option<Location>,
    pub location_error: Option<String>,
    /// Time zone and local time at `at_utc`.
    pub local_time: Option<LocalTime>,
    /// The instant the local time is for, RFC 3339 UTC.
    pub at_utc: String,
    pub ownership: Ownership,
    /// One entry per provider, configured or not.
    pub reputation: Vec<Outcome>,
    /// Open services from Shodan and Censys, by port.
    pub services: Vec<Service>,
    pub links: Vec<Link>,
}

/// The sources a report or an enrichment draws on; each is optional.
#[derive(Default)]
pub struct Sources {
    pub geoip: Option<geoloc_geoip::GeoIpDb>,
    pub asn: Option<AsnDb>,
    pub rdns: Option<Rdns>,
    pub rdap: Option<RdapClient>,
    pub providers: Vec<ProviderClient>,
    pub cache: Option<Cache>,
}

/// IANA time zone at a point (`tzf-rs` boundaries through the engine).
pub fn tz_at(lat: f64, lon: f64) -> String {
    geoloc_engine::enrich::enricher()
        .tz_name(geoloc_engine::LatLon::new(lat, lon))
        .to_string()
}

impl Sources {
    /// GeoIP location of `ip`, or why not.
    pub fn geoip_location(&self, ip: IpAddr) -> Result<Location, String> {
        let Some(db) = &self.geoip else {
            return Err("no GeoIP database given".into());
        };
        match db.lookup(ip) {
            Ok(Some(r)) if r.lat.is_finite() && r.lon.is_finite() => Ok(Location {
                source: "geoip".into(),
                lat: r.lat,
                lon: r.lon,
                radius_km: r.accuracy_radius_km,
                city: r.city.map(|c| crate::printable(&c, 100)),
                country: r.country.map(|c| crate::printable(&c, 8)),
            }),
            Ok(_) => Err("not in the GeoIP database".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Origin AS of `ip`, or why not.
    pub fn asn(&self, ip: IpAddr) -> Result<AsnInfo, String> {
        match &self.asn {
            None => Err("no ASN database given".into()),
            Some(db) => db
                .lookup(ip)
                .ok_or_else(|| "no range of the ASN database holds it".into()),
        }
    }

    /// Every provider's outcome for `ip` ([`Sources::outcome`] of each, in
    /// [`ProviderKind::ALL`] order).
    pub async fn reputation(&self, ip: IpAddr, query: bool) -> Vec<Outcome> {
        let mut out = Vec::new();
        for kind in ProviderKind::ALL {
            out.push(self.outcome(kind, ip, query).await);
        }
        out
    }

    /// One provider's outcome for `ip`: asked (through limiter and cache) when `query`,
    /// else from the cache only (`not-cached` on a miss); `not-configured` without a key.
    pub async fn outcome(&self, kind: ProviderKind, ip: IpAddr, query: bool) -> Outcome {
        let Some(p) = self.providers.iter().find(|p| p.config.kind == kind) else {
            return Outcome::status(kind, Status::NotConfigured);
        };
        if query {
            return p.lookup(ip, self.cache.as_ref()).await;
        }
        let cached = self
            .cache
            .as_ref()
            .and_then(|c| c.get::<Outcome>(kind.name(), ip));
        match cached {
            Some((mut o, at)) => {
                o.cached = true;
                o.fetched_at_unix_s = Some(at);
                o
            }
            None => Outcome::status(kind, Status::NotCached),
        }
    }

    /// The full report, providers asked (through limiter and cache). `measured` replaces
    /// the GeoIP location when given.
    pub async fn know(
        &self,
        ip: IpAddr,
        measured: Option<Location>,
        at: DateTime<Utc>,
    ) -> KnowReport {
        self.know_with(ip, measured, at, true).await
    }

    /// [`Sources::know`]; without `query_providers` only cached provider answers are used
    /// (`not-cached` otherwise), so nothing spends quota or waits for a provider's rate.
    pub async fn know_with(
        &self,
        ip: IpAddr,
        measured: Option<Location>,
        at: DateTime<Utc>,
        query_providers: bool,
    ) -> KnowReport {
        let class = geoloc_policy::classify(ip);
        let mut report = KnowReport {
            schema: SCHEMA_VERSION,
            ip: geoloc_policy::canonical(ip),
            address_class: class.describe().to_string(),
            location: None,
            location_error: None,
            local_time: None,
            at_utc: at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ownership: Ownership::default(),
            reputation: Vec::new(),
            services: Vec::new(),
            links: Vec::new(),
        };
        if class.is_bogon() {
            // Nothing public is known of a bogon, and it is not sent to anyone.
            let why = format!("{} address: not looked up", class.describe());
            report.location_error = Some(why.clone());
            report.ownership.rdns_error = Some(why.clone());
            report.ownership.asn_error = Some(why.clone());
            report.ownership.rdap_error = Some(why.clone());
            report.reputation = ProviderKind::ALL
                .iter()
                .map(|&k| Outcome::error(k, why.clone()))
                .collect();
            return report;
        }
        match measured.map(Ok).unwrap_or_else(|| self.geoip_location(ip)) {
            Ok(l) => {
                report.local_time = local_time(&tz_at(l.lat, l.lon), at);
                report.location = Some(l);
            }
            Err(e) => report.location_error = Some(e),
        }
        match self.asn(ip) {
            Ok(a) => report.ownership.asn = Some(a),
            Err(e) => report.ownership.asn_error = Some(e),
        }
        let rdns = async {
            match &self.rdns {
                None => Err("no resolver".to_string()),
                Some(r) => r.lookup(ip).await,
            }
        };
        let rdap = self.rdap_cached(ip);
        let reputation = self.reputation(ip, query_providers);
        let (rdns, rdap, reputation) = tokio::join!(rdns, rdap, reputation);
        match rdns {
            Ok(n) => report.ownership.rdns = n,
            Err(e) => report.ownership.rdns_error = Some(e),
        }
        match rdap {
            Ok(Some(r)) => report.ownership.rdap = Some(r),
            Ok(None) => report.ownership.rdap_error = Some("no RDAP record".into()),
            Err(e) => report.ownership.rdap_error = Some(e),
        }
        report.services = merge_services(&reputation);
        report.reputation = reputation;
        if let Some(u) = report.ownership.rdap.as_ref().and_then(|r| r.url.clone()) {
            report.links.push(Link {
                source: "rdap".into(),
                url: u,
            });
        }
        if let Some(a) = &report.ownership.asn {
            report.links.push(Link {
                source: "bgp.tools".into(),
                url: format!("https://bgp.tools/as/{}", a.asn),
            });
        }
        for k in ProviderKind::ALL {
            report.links.push(Link {
                source: k.name().into(),
                url: k.link(ip),
            });
        }
        report
    }

    /// The registry's RDAP record of `ip` through the cache (source `rdap`): `Ok(None)`
    /// when the registry has none, `Err` with the reason when there is no RDAP server or
    /// the lookup failed (failures are not cached).
    pub async fn rdap_cached(&self, ip: IpAddr) -> Result<Option<RdapNetwork>, String> {
        let Some(client) = &self.rdap else {
            return Err("no RDAP server".into());
        };
        if let Some((r, _)) = self
            .cache
            .as_ref()
            .and_then(|c| c.get::<Option<RdapNetwork>>("rdap", ip))
        {
            return Ok(r);
        }
        let r = client.lookup(ip).await?;
        if let Some(c) = &self.cache {
            c.put("rdap", ip, &r);
        }
        Ok(r)
    }
}

/// Open services from the Shodan and Censys answers among `outcomes`, merged by (port,
/// transport), in port order; a name missing in one answer is taken from the other.
pub fn merge_services(outcomes: &[Outcome]) -> Vec<Service> {
    let mut services: BTreeMap<(u16, String), Service> = BTreeMap::new();
    for o in outcomes {
        let list = match &o.answer {
            Some(Answer::Shodan(s)) => &s.services,
            Some(Answer::Censys(c)) => &c.services,
            _ => continue,
        };
        for s in list {
            services
                .entry((s.port, s.transport.clone()))
                .and_modify(|e| {
                    if e.name.is_empty() {
                        e.name = s.name.clone();
                    }
                })
                .or_insert_with(|| s.clone());
        }
    }
    services.into_values().collect()
}

/// `22/tcp OpenSSH`, or `443/tcp` without a name.
pub fn service_label(x: &Service) -> String {
    if x.name.is_empty() {
        format!("{}/{}", x.port, x.transport)
    } else {
        format!("{}/{} {}", x.port, x.transport, x.name)
    }
}

fn opt(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("-")
}

/// One line per provider: what it said, or why not.
pub fn outcome_line(o: &Outcome) -> String {
    let cached = if o.cached { " (cached)" } else { "" };
    match (&o.answer, o.status) {
        (Some(Answer::AbuseIpDb(a)), _) => format!(
            "confidence of abuse {} %, {} reports by {} users, last {}{}{cached}",
            a.abuse_confidence_score,
            a.total_reports,
            a.distinct_reporters,
            opt(&a.last_reported_at),
            if a.is_tor { ", Tor exit" } else { "" }
        ),
        (Some(Answer::VirusTotal(v)), _) => format!(
            "{} malicious, {} suspicious, {} harmless, {} undetected; reputation {}{cached}",
            v.malicious, v.suspicious, v.harmless, v.undetected, v.reputation
        ),
        (Some(Answer::Shodan(s)), _) => format!(
            "ports {}; {} known vulnerabilities; org {}{cached}",
            join_ports(&s.ports),
            s.vulns.len(),
            opt(&s.org)
        ),
        (Some(Answer::Censys(c)), _) => format!(
            "{} services; AS {}{cached}",
            c.services.len(),
            c.asn.map_or("-".to_string(), |a| a.to_string())
        ),
        (None, _) => format!("{}{cached}", o.status_text()),
    }
}

/// `22;80;443`.
pub fn join_ports(p: &[u16]) -> String {
    p.iter().map(u16::to_string).collect::<Vec<_>>().join(";")
}

/// The readable form of a report: the address and its class, then [`lines`].
pub fn render_text(r: &KnowReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{}  ({})", r.ip, r.address_class);
    for (label, value) in lines(r) {
        let _ = writeln!(s, "  {label:<12} {value}");
    }
    s
}

/// The report as (label, text) lines: `location`, `local time` (when known), `reverse DNS`,
/// `AS`, `registry`, one per provider, `services` (when any), one `link` per link (text
/// `source url`). The text form and the web interface's answer panel show these.
pub fn lines(r: &KnowReport) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut push = |l: &str, v: String| out.push((l.to_string(), v));
    match (&r.location, &r.location_error) {
        (Some(l), _) => push(
            "location",
            format!(
                "{:.4}, {:.4} ±{} km  {}, {}  [{}]",
                l.lat,
                l.lon,
                l.radius_km.map_or("?".to_string(), |x| format!("{x:.0}")),
                opt(&l.city),
                opt(&l.country),
                l.source
            ),
        ),
        (None, e) => push("location", format!("unknown: {}", opt(e))),
    }
    if let Some(t) = &r.local_time {
        push(
            "local time",
            format!(
                "{} {} ({}, UTC{})",
                t.local_time,
                t.weekday,
                t.time_zone,
                geoloc_engine::enrich::format_offset(t.utc_offset_s)
            ),
        );
    }
    let o = &r.ownership;
    let rdns = if o.rdns.is_empty() {
        o.rdns_error
            .clone()
            .unwrap_or_else(|| "no PTR record".into())
    } else {
        o.rdns.join(", ")
    };
    push("reverse DNS", rdns);
    match &o.asn {
        Some(a) => push(
            "AS",
            format!("AS{} {}  ({})", a.asn, a.organisation, a.range),
        ),
        None => push("AS", opt(&o.asn_error).to_string()),
    }
    match &o.rdap {
        Some(n) => push(
            "registry",
            format!(
                "{} {} {} {}-{}; abuse {} <{}>",
                opt(&n.handle),
                opt(&n.name),
                opt(&n.country),
                opt(&n.start_address),
                opt(&n.end_address),
                opt(&n.abuse_name),
                opt(&n.abuse_email)
            ),
        ),
        None => push("registry", opt(&o.rdap_error).to_string()),
    }
    for x in &r.reputation {
        push(x.provider.name(), outcome_line(x));
    }
    if !r.services.is_empty() {
        let list: Vec<String> = r.services.iter().map(service_label).collect();
        push("services", list.join(", "));
    }
    for l in &r.links {
        push("link", format!("{:<10} {}", l.source, l.url));
    }
    out
}
