//! RDAP (RFC 9083): the registry's record of the network holding an address — its name,
//! handle, country, range and abuse contact — from `GET {base}/ip/{ip}` (by default the
//! `rdap.org` bootstrap redirector, which sends each query to the right RIR).

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{KnowError, Result};

/// The registry's record of the network holding an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RdapNetwork {
    pub handle: Option<String>,
    /// Network name, e.g. `GOOGLE`.
    pub name: Option<String>,
    /// ISO 3166-1 alpha-2.
    pub country: Option<String>,
    pub start_address: Option<String>,
    pub end_address: Option<String>,
    /// Full name of the abuse contact.
    pub abuse_name: Option<String>,
    pub abuse_email: Option<String>,
    /// The record's own URL (`links[rel=self]`), for people to open.
    pub url: Option<String>,
}

/// An RDAP client.
pub struct RdapClient {
    http: reqwest::Client,
    base: String,
}

/// Largest RDAP answer read, bytes.
const MAX_BODY: usize = 1 << 20;

impl RdapClient {
    /// Queries `base` (e.g. `https://rdap.org`).
    pub fn new(base: impl Into<String>, timeout: Duration) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("geoloc-know/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| KnowError::Http(e.to_string()))?;
        Ok(Self {
            http,
            base: base.into().trim_end_matches('/').to_string(),
        })
    }

    /// The record of `ip`; `Ok(None)` on 404; `Err(reason)` otherwise.
    pub async fn lookup(&self, ip: IpAddr) -> std::result::Result<Option<RdapNetwork>, String> {
        let url = format!("{}/ip/{}", self.base, geoloc_policy::canonical(ip));
        let mut resp = self
            .http
            .get(&url)
            .header("Accept", "application/rdap+json, application/json")
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    "timeout".to_string()
                } else {
                    format!("request failed: {}", crate::error_chain(&e))
                }
            })?;
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        while let Some(c) = resp.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + c.len() > MAX_BODY {
                return Err(format!("answer larger than {MAX_BODY} bytes"));
            }
            body.extend_from_slice(&c);
        }
        if status == 404 {
            return Ok(None);
        }
        if !(200..300).contains(&status) {
            return Err(format!("HTTP {status}"));
        }
        parse(&body).map(Some)
    }
}

/// Parses an RFC 9083 `ip network` object.
pub fn parse(body: &[u8]) -> std::result::Result<RdapNetwork, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        format!(
            "malformed answer: {}",
            crate::printable(&e.to_string(), 200)
        )
    })?;
    if v["objectClassName"].as_str() != Some("ip network") {
        return Err(format!(
            "malformed answer: objectClassName is {}, want \"ip network\"",
            crate::printable(&v["objectClassName"].to_string(), 40)
        ));
    }
    let s = |x: &serde_json::Value| x.as_str().map(|t| crate::printable(t, 200));
    let (abuse_name, abuse_email) = find_abuse(&v["entities"], 0).unwrap_or((None, None));
    let url = v["links"].as_array().and_then(|ls| {
        ls.iter()
            .find(|l| l["rel"].as_str() == Some("self"))
            .and_then(|l| s(&l["href"]))
    });
    Ok(RdapNetwork {
        handle: s(&v["handle"]),
        name: s(&v["name"]),
        country: s(&v["country"]),
        start_address: s(&v["startAddress"]),
        end_address: s(&v["endAddress"]),
        abuse_name,
        abuse_email,
        url,
    })
}

type Contact = (Option<String>, Option<String>);

/// The first entity with role `abuse`, searched depth-first (registries nest the abuse
/// contact inside the registrant entity), at most 4 levels deep.
fn find_abuse(entities: &serde_json::Value, depth: u32) -> Option<Contact> {
    if depth > 4 {
        return None;
    }
    for e in entities.as_array()?.iter().take(64) {
        let is_abuse = e["roles"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x.as_str() == Some("abuse")));
        if is_abuse {
            return Some(vcard(&e["vcardArray"]));
        }
        if let Some(c) = find_abuse(&e["entities"], depth + 1) {
            return Some(c);
        }
    }
    None
}

/// `fn` and `email` of a jCard (RFC 7095): `["vcard", [[name, params, type, value], …]]`.
fn vcard(v: &serde_json::Value) -> Contact {
    let mut name = None;
    let mut email = None;
    if let Some(props) = v[1].as_array() {
        for p in props.iter().take(64) {
            let val = p[3].as_str().map(|t| crate::printable(t, 200));
            match p[0].as_str() {
                Some("fn") if name.is_none() => name = val,
                Some("email") if email.is_none() => email = val,
                _ => {}
            }
        }
    }
    (name, email)
}
