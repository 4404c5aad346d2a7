//! VirusTotal API v3, `GET /api/v3/ip_addresses/{ip}` with header `x-apikey`.
//! Answer: `{"data": {"id", "type": "ip_address", "attributes": {"last_analysis_stats":
//! {"harmless", "malicious", "suspicious", "undetected", "timeout"}, "reputation", "as_owner",
//! "asn", "country", …}}}`; errors: `{"error": {"code", "message"}}` (`NotFoundError` 404,
//! `QuotaExceededError` 429; public API: 4 requests a minute, 500 a day).

use serde::{Deserialize, Serialize};

use super::{check_status, clean_text, decode, ok, Answer, Outcome, ProviderKind, Reply};

/// What VirusTotal says of an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirusTotalAnswer {
    /// Engines flagging it malicious in the last analysis.
    pub malicious: u32,
    pub suspicious: u32,
    pub harmless: u32,
    pub undetected: u32,
    /// Community reputation score (negative is bad).
    pub reputation: i64,
    pub as_owner: Option<String>,
}

#[derive(Deserialize, Default)]
struct Stats {
    #[serde(default)]
    harmless: u32,
    #[serde(default)]
    malicious: u32,
    #[serde(default)]
    suspicious: u32,
    #[serde(default)]
    undetected: u32,
}

#[derive(Deserialize)]
struct Attributes {
    last_analysis_stats: Stats,
    #[serde(default)]
    reputation: i64,
    #[serde(default)]
    as_owner: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    attributes: Attributes,
}

#[derive(Deserialize)]
struct Body {
    data: Data,
}

pub(crate) fn parse(r: &Reply) -> Outcome {
    let kind = ProviderKind::VirusTotal;
    if let Err(o) = check_status(kind, r, |v| {
        let e = &v["error"];
        Some(format!(
            "{} {}",
            e["code"].as_str()?,
            e["message"].as_str().unwrap_or("")
        ))
    }) {
        return *o;
    }
    let b: Body = match decode(kind, r) {
        Ok(b) => b,
        Err(o) => return *o,
    };
    let a = b.data.attributes;
    let s = a.last_analysis_stats;
    ok(
        kind,
        Answer::VirusTotal(VirusTotalAnswer {
            malicious: s.malicious,
            suspicious: s.suspicious,
            harmless: s.harmless,
            undetected: s.undetected,
            reputation: a.reputation,
            as_owner: a.as_owner.as_deref().map(clean_text),
        }),
    )
}
