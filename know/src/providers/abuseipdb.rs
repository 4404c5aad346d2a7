//! AbuseIPDB API v2, `GET /api/v2/check?ipAddress=…&maxAgeInDays=90` with header `Key`.
//! Answer: `{"data": {"ipAddress", "abuseConfidenceScore" (0–100), "totalReports",
//! "numDistinctUsers", "countryCode", "usageType", "isp", "domain", "isTor",
//! "lastReportedAt", …}}`; errors: `{"errors": [{"detail", "status"}]}`; 429 with
//! `Retry-After` when the daily quota is spent.

use serde::{Deserialize, Serialize};

use super::{check_status, clean_text, decode, ok, Answer, Outcome, ProviderKind, Reply};

/// What AbuseIPDB says of an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbuseIpDbAnswer {
    /// Confidence that the address is abusive, 0–100 %.
    pub abuse_confidence_score: u8,
    /// Reports in the last 90 days.
    pub total_reports: u64,
    pub distinct_reporters: u64,
    pub usage_type: Option<String>,
    pub isp: Option<String>,
    pub is_tor: bool,
    /// RFC 3339.
    pub last_reported_at: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    abuse_confidence_score: i64,
    #[serde(default)]
    total_reports: Option<i64>,
    #[serde(default)]
    num_distinct_users: Option<i64>,
    #[serde(default)]
    usage_type: Option<String>,
    #[serde(default)]
    isp: Option<String>,
    #[serde(default)]
    is_tor: Option<bool>,
    #[serde(default)]
    last_reported_at: Option<String>,
}

#[derive(Deserialize)]
struct Body {
    data: Data,
}

pub(crate) fn parse(r: &Reply) -> Outcome {
    let kind = ProviderKind::AbuseIpDb;
    if let Err(o) = check_status(kind, r, |v| {
        v["errors"][0]["detail"].as_str().map(str::to_string)
    }) {
        return *o;
    }
    let b: Body = match decode(kind, r) {
        Ok(b) => b,
        Err(o) => return *o,
    };
    let d = b.data;
    if !(0..=100).contains(&d.abuse_confidence_score) {
        return Outcome::error(
            kind,
            format!(
                "malformed answer: abuseConfidenceScore {} outside 0–100",
                d.abuse_confidence_score
            ),
        );
    }
    let count = |x: Option<i64>| x.unwrap_or(0).max(0) as u64;
    ok(
        kind,
        Answer::AbuseIpDb(AbuseIpDbAnswer {
            abuse_confidence_score: d.abuse_confidence_score as u8,
            total_reports: count(d.total_reports),
            distinct_reporters: count(d.num_distinct_users),
            usage_type: d.usage_type.as_deref().map(clean_text),
            isp: d.isp.as_deref().map(clean_text),
            is_tor: d.is_tor.unwrap_or(false),
            last_reported_at: d.last_reported_at.as_deref().map(clean_text),
        }),
    )
}
