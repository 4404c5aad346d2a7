//! The know fields as optional column groups of a table (`geoloc audit --know GROUPS`):
//! ownership, reputation, services. One lookup per distinct address; every cell is text (a
//! CSV cell, empty when there is no value); a source that fails or is not configured fills
//! its `*_status` column with the reason and never stops the run. Bogons are never sent to
//! any resolver, registry or provider. Column list in [`Group::columns`] and
//! `client/README.md` ("Know columns").

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

use futures::StreamExt;

use crate::error::{KnowError, Result};
use crate::providers::{Answer, Outcome, ProviderKind, Status};
use crate::report::{join_ports, merge_services, service_label, Sources};

/// A group of columns, chosen by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// Reverse DNS, origin AS (offline), the registry's RDAP record. No key needed.
    Ownership,
    /// AbuseIPDB and VirusTotal (with the user's keys).
    Reputation,
    /// Open services from Shodan and Censys (with the user's keys).
    Services,
}

impl Group {
    pub const ALL: [Group; 3] = [Group::Ownership, Group::Reputation, Group::Services];

    pub fn name(self) -> &'static str {
        match self {
            Group::Ownership => "ownership",
            Group::Reputation => "reputation",
            Group::Services => "services",
        }
    }

    /// The group's columns, in output order.
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            Group::Ownership => &[
                "rdns",
                "rdns_status",
                "asn",
                "as_org",
                "asn_status",
                "rdap_handle",
                "rdap_name",
                "rdap_country",
                "abuse_email",
                "rdap_status",
            ],
            Group::Reputation => &[
                "abuseipdb_score",
                "abuseipdb_reports",
                "abuseipdb_status",
                "virustotal_malicious",
                "virustotal_suspicious",
                "virustotal_status",
            ],
            Group::Services => &["services", "shodan_ports", "shodan_status", "censys_status"],
        }
    }

    /// The providers whose answers fill the group (only these are asked).
    pub fn providers(self) -> &'static [ProviderKind] {
        match self {
            Group::Ownership => &[],
            Group::Reputation => &[ProviderKind::AbuseIpDb, ProviderKind::VirusTotal],
            Group::Services => &[ProviderKind::Shodan, ProviderKind::Censys],
        }
    }
}

/// Every column name any group adds (to recognise them in an existing file).
pub fn all_columns() -> impl Iterator<Item = &'static str> {
    Group::ALL.iter().flat_map(|g| g.columns().iter().copied())
}

/// Parses a comma-separated list of group names (`ownership,reputation`, `all`), in the
/// order given, without duplicates.
pub fn parse_groups(list: &str) -> std::result::Result<Vec<Group>, String> {
    let known = || {
        Group::ALL
            .iter()
            .map(|g| g.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out: Vec<Group> = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let add: Vec<Group> = if name.eq_ignore_ascii_case("all") {
            Group::ALL.to_vec()
        } else {
            match Group::ALL
                .iter()
                .find(|g| g.name().eq_ignore_ascii_case(name))
            {
                Some(g) => vec![*g],
                None => {
                    return Err(format!(
                        "unknown know group {:?}; known: {}, all",
                        crate::printable(name, 40),
                        known()
                    ))
                }
            }
        };
        for g in add {
            if !out.contains(&g) {
                out.push(g);
            }
        }
    }
    if out.is_empty() {
        return Err(format!("no know group given; known: {}, all", known()));
    }
    Ok(out)
}

/// The header of `groups`, in order.
pub fn header(groups: &[Group]) -> Vec<&'static str> {
    groups
        .iter()
        .flat_map(|g| g.columns().iter().copied())
        .collect()
}

/// Parses an address cell as the audit writes it: trimmed, `[v6]` brackets allowed.
fn parse_ip(s: &str) -> Option<IpAddr> {
    s.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// The cells of `groups` for the address written `ip_text`, in [`header`] order.
/// `query_providers`: ask providers for addresses not in the cache (spends quota); else
/// cached answers only (`not-cached`).
pub async fn address_cells(
    sources: &Sources,
    ip_text: &str,
    groups: &[Group],
    query_providers: bool,
) -> Vec<String> {
    let Some(ip) = parse_ip(ip_text) else {
        return failed_cells(groups, "error: not an IP address");
    };
    let class = geoloc_policy::classify(ip);
    if class.is_bogon() {
        let why = format!("error: {} address: not looked up", class.describe());
        return failed_cells(groups, &why);
    }
    let mut out = Vec::new();
    for g in groups {
        match g {
            Group::Ownership => out.extend(ownership_cells(sources, ip).await),
            Group::Reputation | Group::Services => {
                let mut outcomes = Vec::new();
                for &k in g.providers() {
                    outcomes.push(sources.outcome(k, ip, query_providers).await);
                }
                out.extend(provider_cells(*g, &outcomes));
            }
        }
    }
    out
}

/// Every value cell empty, every status cell `why`.
fn failed_cells(groups: &[Group], why: &str) -> Vec<String> {
    header(groups)
        .iter()
        .map(|c| {
            if c.ends_with("_status") {
                why.to_string()
            } else {
                String::new()
            }
        })
        .collect()
}

async fn ownership_cells(sources: &Sources, ip: IpAddr) -> Vec<String> {
    let rdns = async {
        match &sources.rdns {
            None => Err(None),
            Some(r) => r.lookup(ip).await.map_err(Some),
        }
    };
    let (rdns, rdap) = tokio::join!(rdns, sources.rdap_cached(ip));
    let (names, rdns_status) = match rdns {
        Ok(n) if n.is_empty() => (String::new(), "not-found".to_string()),
        Ok(n) => (n.join(";"), "ok".to_string()),
        Err(None) => (String::new(), "not-configured".to_string()),
        Err(Some(e)) => (String::new(), format!("error: {e}")),
    };
    let (asn, org, asn_status) = match &sources.asn {
        None => (String::new(), String::new(), "not-configured".to_string()),
        Some(db) => match db.lookup(ip) {
            Some(a) => (a.asn.to_string(), a.organisation, "ok".to_string()),
            None => (String::new(), String::new(), "not-found".to_string()),
        },
    };
    let (mut handle, mut name, mut country, mut abuse) =
        (String::new(), String::new(), String::new(), String::new());
    let rdap_status = match rdap {
        Err(_) if sources.rdap.is_none() => "not-configured".to_string(),
        Ok(Some(n)) => {
            handle = n.handle.unwrap_or_default();
            name = n.name.unwrap_or_default();
            country = n.country.unwrap_or_default();
            abuse = n.abuse_email.unwrap_or_default();
            "ok".to_string()
        }
        Ok(None) => "not-found".to_string(),
        Err(e) => format!("error: {e}"),
    };
    vec![
        names,
        rdns_status,
        asn,
        org,
        asn_status,
        handle,
        name,
        country,
        abuse,
        rdap_status,
    ]
}

fn provider_cells(group: Group, outcomes: &[Outcome]) -> Vec<String> {
    let status = |k: ProviderKind| {
        outcomes.iter().find(|o| o.provider == k).map_or_else(
            || Status::NotConfigured.as_str().to_string(),
            |o| o.status_text(),
        )
    };
    let answer = |k: ProviderKind| {
        outcomes
            .iter()
            .find(|o| o.provider == k)
            .and_then(|o| o.answer.as_ref())
    };
    match group {
        Group::Ownership => Vec::new(),
        Group::Reputation => {
            let (mut score, mut reports, mut mal, mut susp) =
                (String::new(), String::new(), String::new(), String::new());
            if let Some(Answer::AbuseIpDb(a)) = answer(ProviderKind::AbuseIpDb) {
                score = a.abuse_confidence_score.to_string();
                reports = a.total_reports.to_string();
            }
            if let Some(Answer::VirusTotal(v)) = answer(ProviderKind::VirusTotal) {
                mal = v.malicious.to_string();
                susp = v.suspicious.to_string();
            }
            vec![
                score,
                reports,
                status(ProviderKind::AbuseIpDb),
                mal,
                susp,
                status(ProviderKind::VirusTotal),
            ]
        }
        Group::Services => {
            let services: Vec<String> =
                merge_services(outcomes).iter().map(service_label).collect();
            let ports = match answer(ProviderKind::Shodan) {
                Some(Answer::Shodan(s)) => join_ports(&s.ports),
                _ => String::new(),
            };
            vec![
                services.join(";"),
                ports,
                status(ProviderKind::Shodan),
                status(ProviderKind::Censys),
            ]
        }
    }
}

/// What [`lookup_all`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LookupStats {
    pub distinct_addresses: u64,
    /// Provider requests sent (cache misses that were asked).
    pub provider_requests: u64,
}

/// The cells of `groups` for each distinct address text in `ips` (one lookup each, 16 at a
/// time; the providers' limiters pace their own requests), keyed by the text as given.
pub async fn lookup_all(
    sources: &Sources,
    ips: &[String],
    groups: &[Group],
    query_providers: bool,
    progress: bool,
) -> (HashMap<String, Vec<String>>, LookupStats) {
    let mut distinct: Vec<&str> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for ip in ips {
        if seen.insert(ip.as_str()) {
            distinct.push(ip);
        }
    }
    let bar = if progress {
        let b = indicatif::ProgressBar::new(distinct.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} addresses (know) eta {eta}",
            )
            .expect("static template"),
        );
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let before: u64 = sources.providers.iter().map(|p| p.requests_sent()).sum();
    let cells: HashMap<String, Vec<String>> = futures::stream::iter(distinct.iter())
        .map(|&ip| async move {
            let c = address_cells(sources, ip, groups, query_providers).await;
            (ip.to_string(), c)
        })
        .buffer_unordered(16)
        .inspect(|_| bar.inc(1))
        .collect()
        .await;
    bar.finish_and_clear();
    let after: u64 = sources.providers.iter().map(|p| p.requests_sent()).sum();
    let stats = LookupStats {
        distinct_addresses: distinct.len() as u64,
        provider_requests: after - before,
    };
    (cells, stats)
}

/// Appends the columns of `groups` to the CSV table at `path` (rewritten through a
/// temporary file and a rename): the address is in its `ip` column; a row whose address is
/// not an IP address, or a bogon, gets the reason in the status columns. The table must not
/// already have any of the added columns.
pub async fn append_to_csv(
    path: &Path,
    groups: &[Group],
    sources: &Sources,
    query_providers: bool,
    progress: bool,
) -> Result<LookupStats> {
    let input_err = |reason: String| KnowError::Input {
        path: path.to_path_buf(),
        reason,
    };
    let mut rd = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .map_err(|e| input_err(e.to_string()))?;
    let header: Vec<String> = rd
        .headers()
        .map_err(|e| input_err(e.to_string()))?
        .iter()
        .map(String::from)
        .collect();
    let ip_col = header
        .iter()
        .position(|h| h == "ip")
        .ok_or_else(|| input_err(format!("no ip column in the header ({})", header.join(","))))?;
    let added = self::header(groups);
    if let Some(c) = header.iter().find(|h| added.contains(&h.as_str())) {
        return Err(input_err(format!("it already has a column {c:?}")));
    }
    let rows = rd
        .records()
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| input_err(e.to_string()))?;
    let ips: Vec<String> = rows
        .iter()
        .map(|r| r.get(ip_col).unwrap_or("").to_string())
        .collect();
    let (cells, stats) = lookup_all(sources, &ips, groups, query_providers, progress).await;
    let tmp = path.with_extension("know.partial");
    let csv_err = |source: csv::Error| KnowError::Csv {
        path: tmp.clone(),
        source,
    };
    let mut w = csv::WriterBuilder::new()
        .flexible(true)
        .from_path(&tmp)
        .map_err(csv_err)?;
    w.write_record(
        header
            .iter()
            .map(String::as_str)
            .chain(added.iter().copied()),
    )
    .map_err(csv_err)?;
    let empty = vec![String::new(); added.len()];
    for (r, ip) in rows.iter().zip(&ips) {
        let c = cells.get(ip).unwrap_or(&empty);
        w.write_record(r.iter().chain(c.iter().map(String::as_str)))
            .map_err(csv_err)?;
    }
    w.flush().map_err(|e| csv_err(e.into()))?;
    drop(w);
    std::fs::rename(&tmp, path).map_err(|source| KnowError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_parse_in_order_without_duplicates() {
        assert_eq!(
            parse_groups("reputation, ownership,reputation").unwrap(),
            vec![Group::Reputation, Group::Ownership]
        );
        assert_eq!(parse_groups("all").unwrap(), Group::ALL.to_vec());
        assert!(parse_groups("owner")
            .unwrap_err()
            .contains("unknown know group"));
        assert!(parse_groups(" , ").unwrap_err().contains("no know group"));
    }

    #[test]
    fn header_follows_the_groups() {
        let h = header(&[Group::Services, Group::Ownership]);
        assert_eq!(h[0], "services");
        assert_eq!(h[4], "rdns");
        assert_eq!(h.len(), 14);
        // No name twice across the groups.
        let all: Vec<_> = all_columns().collect();
        let mut dedup = all.clone();
        dedup.sort_unstable();
        dedup.dedup();
        assert_eq!(all.len(), dedup.len());
    }

    #[tokio::test]
    async fn without_sources_every_status_says_why() {
        let s = Sources::default();
        let g = Group::ALL;
        let h = header(&g);
        let c = address_cells(&s, "8.8.8.8", &g, true).await;
        let get = |n: &str| c[h.iter().position(|x| *x == n).unwrap()].as_str();
        assert_eq!(get("rdns_status"), "not-configured");
        assert_eq!(get("asn_status"), "not-configured");
        assert_eq!(get("rdap_status"), "not-configured");
        assert_eq!(get("abuseipdb_status"), "not-configured");
        assert_eq!(get("censys_status"), "not-configured");
        let b = address_cells(&s, "10.1.2.3", &g, true).await;
        assert_eq!(b.len(), h.len());
        assert_eq!(
            b[h.iter().position(|x| *x == "rdap_status").unwrap()],
            "error: private address: not looked up"
        );
        let bad = address_cells(&s, "999.1.1.1", &[Group::Reputation], true).await;
        assert_eq!(bad[2], "error: not an IP address");
        assert_eq!(bad[0], "");
    }
}
