//! Censys Platform API v3, `GET /v3/global/asset/host/{ip}` with a Personal Access Token
//! (`Authorization: Bearer …`; free accounts may use host lookups).
//! Answer: `{"result": {"resource": {"ip", "services": [{"port", "protocol",
//! "transport_protocol", …}], "autonomous_system": {"asn", "name"}, …}}}`; errors carry
//! `{"error": {"message", …}}` or `{"title", "detail"}`; 429 with `Retry-After`.

use serde::{Deserialize, Serialize};

use super::{check_status, clean_text, decode, ok, Answer, Outcome, ProviderKind, Reply, Service};

const MAX_SERVICES: usize = 256;

/// What Censys says of an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CensysAnswer {
    pub services: Vec<Service>,
    pub asn: Option<u32>,
    pub as_name: Option<String>,
}

#[derive(Deserialize)]
struct Svc {
    port: u16,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    transport_protocol: Option<String>,
}

#[derive(Deserialize)]
struct As {
    #[serde(default)]
    asn: Option<u32>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct Resource {
    #[serde(default)]
    services: Vec<Svc>,
    #[serde(default)]
    autonomous_system: Option<As>,
}

#[derive(Deserialize)]
struct Result_ {
    resource: Resource,
}

#[derive(Deserialize)]
struct Body {
    result: Result_,
}

pub(crate) fn parse(r: &Reply) -> Outcome {
    let kind = ProviderKind::Censys;
    if let Err(o) = check_status(kind, r, |v| {
        v["error"]["message"]
            .as_str()
            .or(v["detail"].as_str())
            .or(v["title"].as_str())
            .map(str::to_string)
    }) {
        return *o;
    }
    let b: Body = match decode(kind, r) {
        Ok(b) => b,
        Err(o) => return *o,
    };
    let res = b.result.resource;
    let services = res
        .services
        .iter()
        .take(MAX_SERVICES)
        .map(|s| Service {
            port: s.port,
            transport: clean_text(
                &s.transport_protocol
                    .as_deref()
                    .unwrap_or("tcp")
                    .to_lowercase(),
            ),
            name: clean_text(s.protocol.as_deref().unwrap_or("")),
        })
        .collect();
    let (asn, as_name) = match res.autonomous_system {
        Some(a) => (a.asn, a.name.as_deref().map(clean_text)),
        None => (None, None),
    };
    ok(
        kind,
        Answer::Censys(CensysAnswer {
            services,
            asn,
            as_name,
        }),
    )
}
