//! Shodan REST API, `GET /shodan/host/{ip}?key=…`.
//! Answer: `{"ip_str", "ports": [..], "hostnames": [..], "org", "isp", "asn", "os",
//! "vulns": [..], "last_update", "data": [{"port", "transport", "product", …}, …]}`;
//! 404 `{"error": "No information available for that IP."}`; about 1 request a second.

use serde::{Deserialize, Serialize};

use super::{check_status, clean_text, decode, ok, Answer, Outcome, ProviderKind, Reply, Service};

/// Most services kept per address.
const MAX_SERVICES: usize = 256;

/// What Shodan says of an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShodanAnswer {
    /// Open ports, ascending.
    pub ports: Vec<u16>,
    pub services: Vec<Service>,
    pub hostnames: Vec<String>,
    pub org: Option<String>,
    pub os: Option<String>,
    /// Known vulnerabilities (CVE ids).
    pub vulns: Vec<String>,
    pub last_update: Option<String>,
}

#[derive(Deserialize)]
struct Banner {
    port: u16,
    #[serde(default)]
    transport: Option<String>,
    #[serde(default)]
    product: Option<String>,
}

#[derive(Deserialize)]
struct Body {
    #[serde(default)]
    ports: Vec<u16>,
    #[serde(default)]
    hostnames: Vec<String>,
    #[serde(default)]
    org: Option<String>,
    #[serde(default)]
    os: Option<String>,
    #[serde(default)]
    vulns: Vec<String>,
    #[serde(default)]
    last_update: Option<String>,
    #[serde(default)]
    data: Vec<Banner>,
}

pub(crate) fn parse(r: &Reply) -> Outcome {
    let kind = ProviderKind::Shodan;
    if let Err(o) = check_status(kind, r, |v| v["error"].as_str().map(str::to_string)) {
        return *o;
    }
    let b: Body = match decode(kind, r) {
        Ok(b) => b,
        Err(o) => return *o,
    };
    let mut ports = b.ports;
    ports.sort_unstable();
    ports.dedup();
    ports.truncate(MAX_SERVICES);
    let services = b
        .data
        .iter()
        .take(MAX_SERVICES)
        .map(|d| Service {
            port: d.port,
            transport: clean_text(d.transport.as_deref().unwrap_or("tcp")),
            name: clean_text(d.product.as_deref().unwrap_or("")),
        })
        .collect();
    ok(
        kind,
        Answer::Shodan(ShodanAnswer {
            ports,
            services,
            hostnames: b.hostnames.iter().take(64).map(|h| clean_text(h)).collect(),
            org: b.org.as_deref().map(clean_text),
            os: b.os.as_deref().map(clean_text),
            vulns: b.vulns.iter().take(256).map(|h| clean_text(h)).collect(),
            last_update: b.last_update.as_deref().map(clean_text),
        }),
    )
}
